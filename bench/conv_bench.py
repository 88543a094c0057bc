#!/usr/bin/env python3
"""kiln vs ONNX Runtime on single Conv nodes and on two whole CNNs, CPU, float32.

Each case is one process (per thread count) that holds a kiln session and an ORT session on the same
model and inputs and runs them interleaved in short blocks, so that load from other users of the
machine hits both alike; the figure is the median over all runs. ORT runs with its graph
optimisations on (its normal use), kiln with its own.

  python3 bench/conv_bench.py                        # every case, 1 and 2 threads
  python3 bench/conv_bench.py --cases r50_3x3_s2 --threads 1 --rounds 30
  python3 bench/conv_bench.py --models-only

Whole models (ResNet-50, SqueezeNet 1.1, random weights) are exported with torchvision by the
Python named in --torch-python (default /tmp/benchvenv/bin/python) into --model-dir once.
"""
import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# name: (N, C, spatial in, M, kernel, stride, pad, group, dilation)
def _cases():
    c = {}
    def add(name, C, hw, M, k, s=1, p=0, g=1, d=1, batches=(1, 8)):
        for n in batches:
            c[f"{name}_b{n}"] = dict(N=n, C=C, hw=hw, M=M, k=k, s=s, p=p, g=g, d=d)
    add("r50_stem7x7s2", 3, (224, 224), 64, (7, 7), 2, 3)
    add("r50_1x1_56_64to256", 64, (56, 56), 256, (1, 1))
    add("r50_1x1_56_256to64", 256, (56, 56), 64, (1, 1))
    add("r50_1x1_28_512to128", 512, (28, 28), 128, (1, 1))
    add("r50_1x1_14_1024to256", 1024, (14, 14), 256, (1, 1))
    add("r50_1x1_7_512to2048", 512, (7, 7), 2048, (1, 1))
    add("r50_1x1_14_256to1024", 256, (14, 14), 1024, (1, 1))
    add("r50_1x1_7_2048to512", 2048, (7, 7), 512, (1, 1))
    # 1x1 on small maps from MobileNetV3 and SqueezeNet (the channel-lane kernel's territory)
    add("pw_1x1_7_160to960", 160, (7, 7), 960, (1, 1))
    add("pw_1x1_7_960to160", 960, (7, 7), 160, (1, 1))
    add("pw_1x1_14_672to112", 672, (14, 14), 112, (1, 1))
    add("pw_1x1_14_240to80", 240, (14, 14), 80, (1, 1))
    add("pw_1x1_13_512to64", 512, (13, 13), 64, (1, 1))
    add("pw_1x1_13_64to256", 64, (13, 13), 256, (1, 1))
    add("dn_1x1_56_96to128", 96, (56, 56), 128, (1, 1))
    add("dn_1x1_28_320to128", 320, (28, 28), 128, (1, 1))
    add("dn_1x1_14_640to128", 640, (14, 14), 128, (1, 1))
    add("r50_3x3_56_64", 64, (56, 56), 64, (3, 3), 1, 1)
    add("r50_3x3_28_128", 128, (28, 28), 128, (3, 3), 1, 1)
    add("r50_3x3_14_256", 256, (14, 14), 256, (3, 3), 1, 1)
    add("r50_3x3_7_512", 512, (7, 7), 512, (3, 3), 1, 1)
    add("r50_3x3s2_56_128", 128, (56, 56), 128, (3, 3), 2, 1)
    add("r50_3x3s2_28_256", 256, (28, 28), 256, (3, 3), 2, 1)
    add("r50_3x3s2_14_512", 512, (14, 14), 512, (3, 3), 2, 1)
    add("r50_down1x1s2_56_256to512", 256, (56, 56), 512, (1, 1), 2, 0)
    add("mb_dw3x3_112_32", 32, (112, 112), 32, (3, 3), 1, 1, g=32)
    add("mb_dw3x3s2_112_96", 96, (112, 112), 96, (3, 3), 2, 1, g=96)
    add("mb_dw5x5_28_240", 240, (28, 28), 240, (5, 5), 1, 2, g=240)
    add("mb_dw5x5s2_28_144", 144, (28, 28), 144, (5, 5), 2, 2, g=144)
    add("mb3_dw3x3s2_112_64", 64, (112, 112), 64, (3, 3), 2, 1, g=64)
    add("mb3_dw5x5s2_56_72", 72, (56, 56), 72, (5, 5), 2, 2, g=72)
    add("mb3_dw3x3s2_28_240", 240, (28, 28), 240, (3, 3), 2, 1, g=240)
    add("mb3_dw3x3_14_672", 672, (14, 14), 672, (3, 3), 1, 1, g=672)
    add("mb3_dw5x5s2_14_672", 672, (14, 14), 672, (5, 5), 2, 2, g=672)
    add("mb3_dw5x5_7_960", 960, (7, 7), 960, (5, 5), 1, 2, g=960)
    add("mb2_dw3x3_7_960", 960, (7, 7), 960, (3, 3), 1, 1, g=960)
    add("mb3_1x1_112_16to16", 16, (112, 112), 16, (1, 1))
    add("mb3_1x1_112_16to64", 16, (112, 112), 64, (1, 1))
    add("mb3_se_1x1_960to240", 960, (1, 1), 240, (1, 1))
    add("mb3_se_1x1_240to960", 240, (1, 1), 960, (1, 1))
    add("sq_stem3x3s2_224", 3, (224, 224), 64, (3, 3), 2, 0)
    add("sq_fire_squeeze_55_128to16", 128, (55, 55), 16, (1, 1))
    add("sq_fire_expand1x1_55_16to64", 16, (55, 55), 64, (1, 1))
    add("sq_fire_expand3x3_55_16to64", 16, (55, 55), 64, (3, 3), 1, 1)
    add("sq_fire_expand3x3_13_64to256", 64, (13, 13), 256, (3, 3), 1, 1)
    add("sq_fire_expand3x3_27_32to128", 32, (27, 27), 128, (3, 3), 1, 1)
    add("sq_fire_squeeze_13_512to64", 512, (13, 13), 64, (1, 1))
    add("sq_classifier_13_512to1000", 512, (13, 13), 1000, (1, 1))
    add("audio1d_k512s160", 1, (16000,), 256, (512,), 160, 0)
    add("audio1d_k3_256", 256, (98,), 256, (3,), 1, 1)
    add("grouped3x3_28_g32", 256, (28, 28), 256, (3, 3), 1, 1, g=32)
    # DenseNet-121's growth convolutions: 128 -> 32 channels at every map size
    add("dn_3x3_56_128to32", 128, (56, 56), 32, (3, 3), 1, 1)
    add("dn_3x3_28_128to32", 128, (28, 28), 32, (3, 3), 1, 1)
    add("dn_3x3_14_128to32", 128, (14, 14), 32, (3, 3), 1, 1)
    add("dn_3x3_7_128to32", 128, (7, 7), 32, (3, 3), 1, 1)
    # 3x3 stride-1 shapes off the models above, for the Winograd rule: tile counts (4x4 outputs
    # per tile) from 9 to 784 per image, channel counts 24 to 384
    add("wg_3x3_14_128", 128, (14, 14), 128, (3, 3), 1, 1)
    add("wg_3x3_14_64", 64, (14, 14), 64, (3, 3), 1, 1)
    add("wg_3x3_16_256to128", 256, (16, 16), 128, (3, 3), 1, 1)
    add("wg_3x3_20_96to160", 96, (20, 20), 160, (3, 3), 1, 1)
    add("wg_3x3_10_384", 384, (10, 10), 384, (3, 3), 1, 1)
    add("wg_3x3_32_48", 48, (32, 32), 48, (3, 3), 1, 1)
    add("wg_3x3_112_24to64", 24, (112, 112), 64, (3, 3), 1, 1)
    add("wg_3x3_9_192to224", 192, (9, 9), 224, (3, 3), 1, 0)
    return c


CASES = _cases()
MODELS = ["resnet50", "squeezenet1_1"]


def conv_model(cs):
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    nd = len(cs["hw"])
    rng = np.random.default_rng(0)
    Cg = cs["C"] // cs["g"]
    w = rng.standard_normal((cs["M"], Cg) + tuple(cs["k"])).astype(np.float32) * 0.1
    b = rng.standard_normal(cs["M"]).astype(np.float32)
    x = rng.standard_normal((cs["N"], cs["C"]) + tuple(cs["hw"])).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=list(cs["k"]),
                            strides=[cs["s"]] * nd, pads=[cs["p"]] * (2 * nd), group=cs["g"],
                            dilations=[cs["d"]] * nd)
    g = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString(), {"x": x}


def export_models(model_dir, torch_python):
    missing = [m for m in MODELS if not os.path.exists(os.path.join(model_dir, m + ".onnx"))]
    if not missing:
        return True
    if not os.path.exists(torch_python):
        print(f"no {torch_python}: whole-model cases skipped", file=sys.stderr)
        return False
    os.makedirs(model_dir, exist_ok=True)
    code = ("import sys, torch, torchvision\n"
            "torch.manual_seed(0)\n"
            "for name in sys.argv[2:]:\n"
            "    m = getattr(torchvision.models, name)(weights=None).eval()\n"
            "    torch.onnx.export(m, torch.randn(1, 3, 224, 224), f'{sys.argv[1]}/{name}.onnx', opset_version=17,\n"
            "                      dynamo=False, input_names=['x'], output_names=['y'])\n")
    r = subprocess.run([torch_python, "-c", code, model_dir] + missing, capture_output=True, text=True)
    if r.returncode:
        print("export failed:", r.stderr[-500:], file=sys.stderr)
        return False
    return True


def worker(case, threads, rounds, block, model_dir):
    import numpy as np
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import kiln
    import onnxruntime as ort
    if case in CASES:
        data, feeds = conv_model(CASES[case])
    else:
        with open(os.path.join(model_dir, case + ".onnx"), "rb") as f:
            data = f.read()
        feeds = {"x": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    ks = kiln.InferenceSession(data, threads=threads)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    os_ = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    yk = ks.run(None, feeds)[0]
    yo = os_.run(None, feeds)[0]
    err = float(np.max(np.abs(yk - yo)) / (np.max(np.abs(yo)) + 1e-30))
    # size the block so that one block takes ~50 ms on ORT
    t0 = time.perf_counter()
    for _ in range(3):
        os_.run(None, feeds)
    per = (time.perf_counter() - t0) / 3
    block = max(1, min(block, int(0.05 / max(per, 1e-6))))
    tk, to = [], []
    for r in range(rounds):
        order = ((ks, tk), (os_, to)) if r % 2 == 0 else ((os_, to), (ks, tk))
        for s, acc in order:
            s.run(None, feeds)  # warm after the other engine ran
            for _ in range(block):
                t0 = time.perf_counter()
                s.run(None, feeds)
                acc.append(time.perf_counter() - t0)
    tk.sort()
    to.sort()
    print(json.dumps({"kiln_ms": tk[len(tk) // 2] * 1e3, "ort_ms": to[len(to) // 2] * 1e3,
                      "runs": len(tk), "rel_err": err}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", nargs="*", default=None)
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--block", type=int, default=10)
    ap.add_argument("--models-only", action="store_true")
    ap.add_argument("--no-models", action="store_true")
    ap.add_argument("--model-dir", default="/tmp/kiln_conv_models")
    ap.add_argument("--torch-python", default="/tmp/benchvenv/bin/python")
    ap.add_argument("--worker", nargs=2, metavar=("CASE", "THREADS"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "conv_cpu.md"))
    ap.add_argument("--json", default=None, help="also write the raw rows here")
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker[0], int(a.worker[1]), a.rounds, a.block, a.model_dir)
    cases = a.cases if a.cases is not None else ([] if a.models_only else list(CASES))
    if a.cases is None and not a.no_models and export_models(a.model_dir, a.torch_python):
        cases += MODELS
    rows = []
    for c in cases:
        for th in a.threads:
            p = subprocess.run([sys.executable, __file__, "--worker", c, str(th), "--rounds", str(a.rounds),
                                "--block", str(a.block), "--model-dir", a.model_dir],
                               capture_output=True, text=True)
            if p.returncode:
                r = {"case": c, "threads": th, "error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
            else:
                r = dict(case=c, threads=th, **json.loads(p.stdout.strip().splitlines()[-1]))
                r["ratio"] = r["kiln_ms"] / r["ort_ms"]
            rows.append(r)
            if "ratio" in r:
                print(f"{c:36s} t={th}  kiln {r['kiln_ms']:9.3f} ms  ORT {r['ort_ms']:9.3f} ms  "
                      f"kiln/ORT {r['ratio']:5.2f}  err {r['rel_err']:.1e}", flush=True)
            else:
                print(c, th, r["error"], flush=True)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)
    if a.out and rows:
        import math
        import onnxruntime
        lines = ["# Convolution on the CPU: kiln vs ONNX Runtime", "",
                 f"onnxruntime {onnxruntime.__version__}, float32, {os.cpu_count()} cores shared with other "
                 f"users; medians of {a.rounds} interleaved rounds. kiln/ORT < 1: kiln faster.", "",
                 "| case | threads | kiln ms | ORT ms | kiln/ORT |", "|---|---|---|---|---|"]
        for r in rows:
            if "ratio" in r:
                lines.append(f"| {r['case']} | {r['threads']} | {r['kiln_ms']:.3f} | {r['ort_ms']:.3f} | {r['ratio']:.2f} |")
            else:
                lines.append(f"| {r['case']} | {r['threads']} | error: {r['error']} | | |")
        for th in a.threads:
            rs = [r["ratio"] for r in rows if r["threads"] == th and "ratio" in r]
            if rs:
                gm = math.exp(sum(math.log(x) for x in rs) / len(rs))
                lines.append(f"\nGeometric mean kiln/ORT at {th} thread(s): {gm:.2f} over {len(rs)} cases.")
        with open(a.out, "w") as f:
            f.write("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
