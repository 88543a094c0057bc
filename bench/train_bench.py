"""Training with kiln against PyTorch: an MLP classifier, a small CNN and a 2-layer BERT-style encoder
for sequence classification, each exported from PyTorch (torch.onnx.export, eval mode: BatchNorm uses
its running statistics, dropout is off), turned into training artifacts by kiln, and trained for the
same steps from the same weights on the same batches with AdamW and with SGD (momentum 0.9) in both.

Checks (the script exits nonzero when one fails): the loss of every step within 1e-4 relative, the
final parameters within tolerance, and the model kiln exports for inference (run by kiln and by
onnxruntime) giving the trained PyTorch model's outputs. Times the train step (forward, backward,
optimizer) of each, median ms, and writes bench/results/training.md and the loss curves
(bench/results/training_loss.png, or a CSV when matplotlib is missing).

    /tmp/benchvenv/bin/python bench/train_bench.py [--steps 100] [--threads 2] [--device cpu|cuda]

Needs torch, onnx, onnxruntime, numpy; kiln from PYTHONPATH=python (KILN_LIBRARY for another build)."""
import argparse
import csv
import io
import os
import platform
import sys
import tempfile
import time

import numpy as np
import onnx
import onnxruntime as ort
import torch
import torch.nn as nn

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(HERE), "python"))
import kiln  # noqa: E402
from kiln import training  # noqa: E402

LOSS_RTOL = 1e-4


# ---- the models ----

class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2, self.fc3 = nn.Linear(64, 128), nn.Linear(128, 128), nn.Linear(128, 10)

    def forward(self, x):
        return self.fc3(torch.relu(self.fc2(torch.relu(self.fc1(x)))))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(32, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.mean(x, dim=(2, 3))
        return self.fc(x)


class EncoderLayer(nn.Module):
    def __init__(self, d, heads, ff):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.q, self.k, self.v, self.o = (nn.Linear(d, d) for _ in range(4))
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ff), nn.Linear(ff, d)

    def forward(self, x):
        b, s, d = x.shape

        def heads(t):
            return t.reshape(b, s, self.h, self.dk).transpose(1, 2)

        q, k, v = heads(self.q(x)), heads(self.k(x)), heads(self.v(x))
        att = torch.softmax(torch.matmul(q, k.transpose(2, 3)) / float(np.sqrt(self.dk)), dim=-1)
        ctx = torch.matmul(att, v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.o(ctx))
        return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))


class Bert(nn.Module):
    def __init__(self, vocab=200, seq=32, d=64, heads=4, ff=128, layers=2, classes=3):
        super().__init__()
        self.emb = nn.Embedding(vocab, d)
        self.pos = nn.Parameter(torch.randn(seq, d) * 0.02)
        self.ln = nn.LayerNorm(d)
        self.layers = nn.ModuleList(EncoderLayer(d, heads, ff) for _ in range(layers))
        self.cls = nn.Linear(d, classes)

    def forward(self, ids):
        x = self.ln(self.emb(ids) + self.pos)
        for layer in self.layers:
            x = layer(x)
        return self.cls(x[:, 0])


def perturb_norms(model, g):
    """Norm layers start at weight 1, bias 0 and BatchNorm's statistics at 0 / 1: torch.onnx.export
    merges initializers with equal values (one becomes an Identity of another), which would tie
    parameters together. Perturbed starting values keep each its own initializer."""
    with torch.no_grad():
        for mod in model.modules():
            if isinstance(mod, (nn.LayerNorm, nn.BatchNorm2d)):
                mod.weight.copy_(1 + 0.1 * torch.randn(mod.weight.shape, generator=g))
                mod.bias.copy_(0.1 * torch.randn(mod.bias.shape, generator=g))
            if isinstance(mod, nn.BatchNorm2d):
                mod.running_mean.copy_(0.1 * torch.randn(mod.running_mean.shape, generator=g))
                mod.running_var.copy_(1 + 0.2 * torch.rand(mod.running_var.shape, generator=g))


def make_batches(name, steps, seed):
    """Batches whose labels a fixed rule derives from the inputs, so that the loss falls."""
    g = torch.Generator().manual_seed(seed)
    teacher = torch.randn(64, 10, generator=g)
    out = []
    for _ in range(steps):
        if name == "mlp":
            x = torch.randn(32, 64, generator=g)
            y = torch.argmax(x @ teacher, 1)
        elif name == "cnn":
            x = torch.randn(16, 3, 16, 16, generator=g)
            y = torch.argmax(x.mean((2, 3)) @ teacher[:3], 1)
        else:
            x = torch.randint(0, 200, (8, 32), generator=g)
            y = x[:, 1] % 3
        out.append((x, y))
    return out


MODELS = {"mlp": ("MLP classifier (64-128-128-10, batch 32)", MLP),
          "cnn": ("small CNN (2 conv + BN + maxpool, 3x16x16, batch 16)", CNN),
          "bert": ("2-layer BERT-style encoder (d 64, 4 heads, seq 32, batch 8)", Bert)}
OPTIMIZERS = {"adamw": dict(lr=1e-3, weight_decay=0.01), "sgd": dict(lr=0.05, momentum=0.9)}


# ---- one run ----

def export(model, example, path):
    model.eval()
    torch.onnx.export(model, (example,), path, dynamo=False, opset_version=17, input_names=["x"],
                      output_names=["logits"], do_constant_folding=False,
                      dynamic_axes={"x": {0: "N"}, "logits": {0: "N"}})


def torch_opt(name, params):
    hp = OPTIMIZERS[name]
    if name == "adamw":
        return torch.optim.AdamW(params, lr=hp["lr"], weight_decay=hp["weight_decay"])
    return torch.optim.SGD(params, lr=hp["lr"], momentum=hp["momentum"])


def run_one(mname, oname, steps, threads, device, work, time_steps=60):
    tdev = torch.device("cuda" if device == "cuda" and torch.cuda.is_available() else "cpu")
    torch.manual_seed(0)
    model = MODELS[mname][1]()
    perturb_norms(model, torch.Generator().manual_seed(2))
    model.eval()  # BN running stats, no dropout: what the exported graph computes
    batches = make_batches(mname, steps, seed=1)
    onnx_path = os.path.join(work, "%s.onnx" % mname)
    export(model, batches[0][0], onnx_path)
    inits = {i.name for i in onnx.load(onnx_path).graph.initializer}
    names = [n for n, _ in model.named_parameters()]
    missing = [n for n in names if n not in inits]
    if missing:
        raise SystemExit("%s: parameters not exported as initializers: %s" % (mname, missing))

    art = os.path.join(work, "%s_%s" % (mname, oname))
    training.generate_artifacts(onnx_path, requires_grad=names, loss=training.LossType.CrossEntropyLoss,
                                optimizer=oname, artifact_directory=art)
    state = training.CheckpointState.load_checkpoint(os.path.join(art, "checkpoint.kckpt"))
    for k, v in OPTIMIZERS[oname].items():
        state.set_hyperparameter(k, v)
    module = training.Module(os.path.join(art, "training_model.onnx"), state, os.path.join(art, "eval_model.onnx"),
                             device=device, threads=threads)
    opt = training.Optimizer(oname, module)
    module.train()
    kiln_providers = module.get_providers()
    params_on = module.parameters_memory()  # "device" on CUDA: parameters, grads, optimizer state stay there

    model.to(tdev)  # after the export: the batches and weights above were made on the CPU
    topt = torch_opt(oname, model.parameters())
    lossf = nn.CrossEntropyLoss()
    t_losses, k_losses = [], []
    for x, y in batches:
        topt.zero_grad()
        loss = lossf(model(x.to(tdev)), y.to(tdev))
        loss.backward()
        topt.step()
        t_losses.append(loss.item())
        kl = module(x.numpy(), y.numpy().astype(np.int64))
        opt.step()
        module.lazy_reset_grad()
        k_losses.append(float(kl))
    t_losses, k_losses = np.array(t_losses), np.array(k_losses)
    rel = np.abs(k_losses - t_losses) / np.maximum(np.abs(t_losses), 1e-12)
    # final parameters
    worst_param, worst_name, exempt = 0.0, "", {}
    for n, p in model.named_parameters():
        a, b = state.parameters[n].data, p.detach().cpu().numpy()
        err = float(np.max(np.abs(a - b)) / (np.max(np.abs(b)) + 1e-12))
        if n.endswith(".k.bias"):
            exempt[n] = err  # its exact gradient is 0 (softmax ignores a shift of every key); AdamW scales rounding noise
            continue
        if err > worst_param:
            worst_param, worst_name = err, n
    # export for inference: kiln and onnxruntime against the trained PyTorch model
    exported = os.path.join(art, "trained.onnx")
    module.export_model_for_inferencing(exported, ["logits"])
    x = batches[-1][0]
    with torch.no_grad():
        want = model(x.to(tdev)).cpu().numpy()
    got_k = kiln.InferenceSession(exported, threads=threads).run(None, {"x": x.numpy()})[0]
    got_o = ort.InferenceSession(exported, providers=["CPUExecutionProvider"]).run(None, {"x": x.numpy()})[0]
    exp_err = max(float(np.max(np.abs(got_k - want))), float(np.max(np.abs(got_o - want))))
    # alternating blocks of steps, each framework alone in its block (interleaving single steps
    # lets one's idle threads steal the other's cores), so a burst of load hits both alike
    t_times, k_times = [], []
    xfer0 = module.transfer_bytes()
    feeds = [(x.numpy(), y.numpy().astype(np.int64)) for x, y in batches]
    on_dev = [(x.to(tdev), y.to(tdev)) for x, y in batches]
    for block in range(6):
        for i in range(block * time_steps // 6, (block + 1) * time_steps // 6):
            x, y = on_dev[i % len(on_dev)]
            t0 = time.perf_counter()
            topt.zero_grad()
            lossf(model(x), y).backward()
            topt.step()
            if tdev.type == "cuda":
                torch.cuda.synchronize()
            t_times.append(time.perf_counter() - t0)
        for i in range(block * time_steps // 6, (block + 1) * time_steps // 6):
            x, y = feeds[i % len(feeds)]
            t0 = time.perf_counter()
            module(x, y)
            opt.step()
            module.lazy_reset_grad()
            k_times.append(time.perf_counter() - t0)
    return dict(model=mname, opt=oname, t_losses=t_losses, k_losses=k_losses, max_rel=float(rel.max()),
                worst_step=int(rel.argmax()) + 1, param_err=worst_param, param_name=worst_name, export_err=exp_err,
                exempt=exempt, torch_device=str(tdev), kiln_providers=kiln_providers, params_on=params_on,
                xfer_per_step=(module.transfer_bytes() - xfer0) / max(len(k_times), 1),
                t_ms=1e3 * float(np.median(t_times[1:])), k_ms=1e3 * float(np.median(k_times[1:])),
                time_steps=len(t_times),
                n_params=sum(p.numel() for p in model.parameters()))


# ---- report ----

def plot(results, path_png, path_csv):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        plt = None
    with open(path_csv, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["model", "optimizer", "step", "pytorch_loss", "kiln_loss"])
        for r in results:
            for i, (a, b) in enumerate(zip(r["t_losses"], r["k_losses"])):
                w.writerow([r["model"], r["opt"], i + 1, "%.8g" % a, "%.8g" % b])
    if plt is None:
        return False
    fig, axes = plt.subplots(2, 3, figsize=(14, 7), squeeze=False)
    for r in results:
        ax = axes[list(OPTIMIZERS).index(r["opt"])][list(MODELS).index(r["model"])]
        steps = np.arange(1, len(r["t_losses"]) + 1)
        ax.plot(steps, r["t_losses"], label="PyTorch", lw=2.5, alpha=0.6)
        ax.plot(steps, r["k_losses"], label="kiln", lw=1, ls="--", color="k")
        ax.set_title("%s, %s (max rel diff %.1e)" % (r["model"], r["opt"], r["max_rel"]), fontsize=10)
        ax.set_xlabel("step")
        ax.set_ylabel("loss")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path_png, dpi=72)
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    ap.add_argument("--models", default="mlp,cnn,bert")
    ap.add_argument("--out", default=os.path.join(HERE, "results"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    notes = []
    if args.device == "cuda":
        have = "CUDAExecutionProvider" in kiln.get_available_providers()
        msg = ("--device cuda: kiln's module runs the training model on the CUDA provider (CPU fallback for the ops "
               "it lacks) and keeps parameters, gradients and optimizer state in device memory, the optimizer "
               "stepping there. CUDA provider %s in this build."
               % ("available" if have else "NOT available (the session falls back to the CPU)"))
        if torch.cuda.is_available():
            torch.backends.cuda.matmul.allow_tf32 = False  # float32 products, as kiln computes them
            torch.backends.cudnn.allow_tf32 = False
            msg += " PyTorch runs on CUDA (TF32 off)."
        else:
            msg += " PyTorch has no CUDA device here and runs on the CPU."
        print(msg)
        notes.append(msg)
    results, failures = [], []
    with tempfile.TemporaryDirectory() as work:
        for m in args.models.split(","):
            for o in OPTIMIZERS:
                r = run_one(m, o, args.steps, args.threads, args.device, work)
                results.append(r)
                ok = r["max_rel"] <= LOSS_RTOL and r["param_err"] <= 1e-3 and r["export_err"] <= 1e-4
                print("%-5s %-6s loss max rel diff %.2e (step %d)  params max rel err %.2e (%s)  export err %.1e  "
                      "step ms: pytorch %.2f kiln %.2f  %s" % (m, o, r["max_rel"], r["worst_step"], r["param_err"],
                                                               r["param_name"], r["export_err"], r["t_ms"], r["k_ms"],
                                                               "ok" if ok else "FAIL"), flush=True)
                if not ok:
                    failures.append("%s/%s" % (m, o))
    os.makedirs(args.out, exist_ok=True)
    png, csvp = os.path.join(args.out, "training_loss.png"), os.path.join(args.out, "training_loss.csv")
    plotted = plot(results, png, csvp)
    buf = io.StringIO()
    buf.write("# Training: kiln against PyTorch (%s)\n\n" % args.device.upper())
    buf.write("`%s` on %s, %s, %d thread(s) for both (torch.set_num_threads), PyTorch %s, device %s, %d steps.\n"
              "The machine has %d CPU cores (load average %.1f at the end).\n\n"
              % (" ".join(["bench/train_bench.py"] + sys.argv[1:]), platform.processor() or platform.machine(),
                 platform.python_version(), args.threads, torch.__version__, args.device, args.steps,
                 os.cpu_count() or 0, os.getloadavg()[0]))
    buf.write("Same initial weights (PyTorch's, exported with torch.onnx.export in eval mode), same batches, "
              "cross-entropy loss; AdamW lr 1e-3 weight_decay 0.01, SGD lr 0.05 momentum 0.9. "
              "Train step = forward + backward + optimizer step, timed after the checks: %d more steps each, "
              "in 6 alternating blocks (each framework alone in its block), median.\n\n" % results[0]["time_steps"])
    buf.write("| model | params | optimizer | loss max rel diff (step) | final params max rel err | exported model max abs err | PyTorch step ms | kiln step ms |\n")
    buf.write("|---|---:|---|---:|---:|---:|---:|---:|\n")
    for r in results:
        buf.write("| %s | %d | %s | %.1e (%d) | %.1e | %.1e | %.2f | %.2f |\n" % (
            MODELS[r["model"]][0], r["n_params"], r["opt"], r["max_rel"], r["worst_step"], r["param_err"],
            r["export_err"], r["t_ms"], r["k_ms"]))
    buf.write("\nChecks: loss per step within %.0e relative, final parameters within 1e-3 (max abs difference over "
              "the parameter's max abs), exported model (kiln and onnxruntime) within 1e-4 of PyTorch: %s.\n\n"
              % (LOSS_RTOL, "all pass" if not failures else "FAILED for " + ", ".join(failures)))
    buf.write("Loss curves: %s (per-step values in training_loss.csv).\n" % (
        "![loss curves](training_loss.png)" if plotted else "matplotlib is not installed, so no plot: see training_loss.csv"))
    buf.write("\nProviders kiln's training session used: %s; PyTorch device: %s.\n" % (
        ", ".join(results[0]["kiln_providers"]), results[0]["torch_device"]))
    buf.write("kiln's parameters lived in %s memory; the module copied %s host<->device bytes per timed step "
              "(the loss, and any gradient a CPU node computed).\n" % (
                  results[0]["params_on"], ", ".join("%s/%s %.0f" % (r["model"], r["opt"], r["xfer_per_step"])
                                                    for r in results)))
    ex = ["%s/%s %s %.1e" % (r["model"], r["opt"], n, e) for r in results for n, e in r["exempt"].items()]
    if ex:
        buf.write("\nLeft out of the parameter check: the attention key biases, whose exact gradient is 0 (softmax "
                  "is unchanged when every key moves by the same vector), so both frameworks update them from "
                  "rounding noise, which AdamW scales up to the learning rate. Their differences: %s.\n" % "; ".join(ex))
    for n in notes:
        buf.write("\n%s\n" % n)
    with open(os.path.join(args.out, "training.md"), "w") as f:
        f.write(buf.getvalue())
    print("wrote %s" % os.path.join(args.out, "training.md"))
    if failures:
        print("FAILED: %s" % ", ".join(failures))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
