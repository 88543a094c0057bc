#!/usr/bin/env python3
"""The broad CPU benchmark: kiln next to onnxruntime on every model family the issue names, at
batch 1 and 8 and the thread counts given, each (engine, model, batch, threads) in its own process
(bench/cpu_scaling.py's worker: median and p99 latency, peak RSS, time to first result = load plus
first run). Writes OUT.md, OUT.json and OUT.png (kiln/ORT per row).

  python3 bench/cpu_models/run.py --threads 1 2 --out bench/results/cpu_models/local
  python3 bench/cpu_models/run.py --threads 1 4 16 --gpu-models /tmp/gpu_models --out ...

Models:
  - ../shared/models (their reference inputs);
  - OUT of bench/cpu_models/export.py (--cpu-models): SqueezeNet, MobileNetV3, DenseNet-121, a
    bidirectional LSTM, a 1-D conv audio front end;
  - int8 (--int8-models, built by bench/int8_bench.py's build_models with onnxruntime.quantization):
    a small BERT quantised dynamically, MobileNetV3 static QDQ and static QOperator;
  - with --gpu-models (bench/gpu_models/export.py's folder): BERT-base, GPT-2 prefill, ViT-B/16,
    ResNet-50 (their inputs are made with torch, which the parent process then holds; the workers
    do not import it).
Batch 8 of a model whose first input dimension is fixed is left out (said so in the table's notes).
"""
import argparse
import json
import math
import os
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SHARED = os.environ.get("KILN_MODELS") or os.path.join(os.path.dirname(ROOT), "shared", "models")
sys.path.insert(0, os.path.join(ROOT, "bench"))


def batch_dim_symbolic(path, name):
    import onnx
    m = onnx.load(path, load_external_data=False)
    for i in m.graph.input:
        if i.name == name:
            d = i.type.tensor_type.shape.dim
            return len(d) > 0 and not d[0].HasField("dim_value")
    return False


def tiled(path, feeds, batch):
    """Batch-1 feeds repeated to `batch` along the first axis, or None when a graph input fixes it."""
    if batch == 1:
        return feeds
    if not all(batch_dim_symbolic(path, k) for k in feeds):
        return None
    return {k: np.ascontiguousarray(np.repeat(v[:1], batch, axis=0)) for k, v in feeds.items()}


def sources(a):
    """(family, name, path, batch-1 feeds or a function of the batch)"""
    rng = np.random.default_rng(7)
    for f in sorted(os.listdir(SHARED)) if os.path.isdir(SHARED) else []:
        if f.endswith(".onnx") and os.path.exists(os.path.join(SHARED, f[:-5] + ".ref.npz")):
            with np.load(os.path.join(SHARED, f[:-5] + ".ref.npz")) as z:
                feeds = {k[3:]: z[k] for k in z.files if k.startswith("in.")}
            yield "shared", f[:-5], os.path.join(SHARED, f), feeds
    if a.cpu_models and os.path.exists(os.path.join(a.cpu_models, "manifest.json")):
        man = json.load(open(os.path.join(a.cpu_models, "manifest.json")))
        for name, m in man["models"].items():
            x = rng.standard_normal((1, *m["shape"])).astype(np.float32)
            yield "float", name, os.path.join(a.cpu_models, m["file"]), {m["input"]: x}
    if a.int8_models:
        import int8_bench
        try:
            paths = int8_bench.build_models(a.int8_models, a.torch_python)
        except Exception as e:  # noqa: BLE001 - e.g. no torch to export the small BERT
            print("int8 models: not built (%s)" % str(e).splitlines()[0])
            paths = {}
        for name, path in paths.items():
            yield "int8", name, path, int8_bench.feeds_of(name)
    if a.gpu_models:
        import cpu_scaling
        with open(os.path.join(a.gpu_models, "manifest.json")) as f:
            exported = json.load(f)["graphs"]
        for graph in ("bert", "gpt2_prefill", "vit", "resnet50"):
            if graph not in exported:  # a folder exported with --models for some of them
                print("%s: not in %s, left out" % (graph, a.gpu_models))
                continue
            spec = cpu_scaling.ROWS[graph]
            yield "large", graph, None, (lambda b, g=graph, s=spec: cpu_scaling.feeds_for(a.gpu_models, g, b, s.get("seq")))


def measure(engine, path, npz, threads, a):
    cmd = [sys.executable, os.path.join(ROOT, "bench", "cpu_scaling.py"), "--worker", "--models", ".",
           "--engine", engine, "--path", path, "--feeds", npz, "--threads", str(threads),
           "--target-s", str(a.target_s), "--min-runs", str(a.min_runs)]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=a.row_timeout)
    except subprocess.TimeoutExpired:
        return {"error": "timed out after %d s" % a.row_timeout}
    if p.returncode:
        return {"error": ((p.stderr.strip().splitlines() or ["exit %d" % p.returncode])[-1])[:160]}
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--batches", nargs="*", type=int, default=[1, 8])
    ap.add_argument("--cpu-models", default="/tmp/cpu_models")
    ap.add_argument("--int8-models", default="/tmp/int8_models")
    ap.add_argument("--torch-python", default="/tmp/benchvenv/bin/python")
    ap.add_argument("--gpu-models", default=None)
    ap.add_argument("--only", nargs="*", default=None, help="model names to run")
    ap.add_argument("--target-s", type=float, default=0.5)
    ap.add_argument("--min-runs", type=int, default=5)
    ap.add_argument("--row-timeout", type=int, default=300)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "cpu_models", "local"))
    a = ap.parse_args()
    tmp = tempfile.mkdtemp()
    rows, notes = [], []
    for family, name, path, feeds in sources(a):
        if a.only and name not in a.only:
            continue
        for batch in a.batches:
            if callable(feeds):
                path, fb = feeds(batch)
            else:
                fb = tiled(path, feeds, batch)
            if fb is None:
                if batch > 1:
                    notes.append("%s: batch %d left out (its first input dimension is fixed)" % (name, batch))
                continue
            npz = os.path.join(tmp, "%s_b%d.npz" % (name, batch))
            np.savez(npz, **fb)
            for threads in a.threads:
                row = dict(family=family, model=name, batch=batch,
                           threads=threads, kiln=measure("kiln", path, npz, threads, a),
                           ort=measure("ort", path, npz, threads, a))
                k, o = row["kiln"], row["ort"]
                if "median_ms" in k and "median_ms" in o:
                    row["ratio"] = k["median_ms"] / o["median_ms"]
                print("%-22s b%-2d %2dt  kiln %-10s ORT %-10s kiln/ORT %s" % (
                    name, row["batch"], threads, "%.2f" % k["median_ms"] if "median_ms" in k else "error",
                    "%.2f" % o["median_ms"] if "median_ms" in o else "error",
                    "%.2f" % row["ratio"] if "ratio" in row else k.get("error", o.get("error", "-"))), flush=True)
                rows.append(row)
                write(a, rows, notes)
    write(a, rows, notes, plot=True)
    print(open(a.out + ".md").read())


def geomean(xs):
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def write(a, rows, notes, plot=False):
    import platform
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import onnxruntime
        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    with open(a.out + ".json", "w") as f:
        json.dump({"env": env, "rows": rows, "notes": notes}, f, indent=1)
    cell = lambda d, key, fmt: fmt % d[key] if key in d else "-"  # noqa: E731
    lines = ["| model | kind | batch | threads | kiln ms (p99) | ORT ms (p99) | kiln/ORT | RSS MB kiln / ORT | first s kiln / ORT |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k, o = r["kiln"], r["ort"]
        lines.append("| %s | %s | %d | %d | %s (%s) | %s (%s) | %s | %s / %s | %s / %s |" % (
            r["model"], r["family"], r["batch"], r["threads"], cell(k, "median_ms", "%.2f"), cell(k, "p99_ms", "%.2f"),
            cell(o, "median_ms", "%.2f"), cell(o, "p99_ms", "%.2f"),
            "%.2f" % r["ratio"] if "ratio" in r else "error: " + k.get("error", o.get("error", "?")),
            cell(k, "rss_mb", "%.0f"), cell(o, "rss_mb", "%.0f"), cell(k, "first_s", "%.2f"), cell(o, "first_s", "%.2f")))
    lines.append("")
    for t in sorted({r["threads"] for r in rows}):
        rs = [r for r in rows if r["threads"] == t and "ratio" in r]
        if not rs:
            continue
        worst = max(rs, key=lambda r: r["ratio"])
        rss = sum(1 for r in rs if r["kiln"].get("rss_mb", 0) <= r["ort"].get("rss_mb", 0))
        first = sum(1 for r in rs if r["kiln"].get("first_s", 0) <= r["ort"].get("first_s", 0))
        lines.append("%d threads: geometric mean kiln/ORT %.2f over %d rows; worst %.2f (%s b%d); above 1.1: %d; "
                     "peak RSS <= ORT's in %d/%d; first result <= ORT's in %d/%d" % (
                         t, geomean([r["ratio"] for r in rs]), len(rs), worst["ratio"], worst["model"], worst["batch"],
                         sum(1 for r in rs if r["ratio"] > 1.1), rss, len(rs), first, len(rs)))
    if notes:
        lines += ["", "Notes:"] + ["- " + n for n in notes]
    lines += ["", "Environment: %s. Command: `python3 bench/cpu_models/run.py %s`" % (
        json.dumps(env), " ".join(sys.argv[1:]))]
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    if plot:
        try:
            plot_rows(rows, a.out + ".png", env)
        except ImportError as e:
            print("no plot: %s" % e)


def plot_rows(rows, path, env):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    threads = sorted({r["threads"] for r in rows})
    labels = []
    for r in rows:
        lab = "%s b%d" % (r["model"], r["batch"])
        if lab not in labels:
            labels.append(lab)
    fig, ax = plt.subplots(figsize=(max(8, 0.45 * len(labels)), 4.5))
    w = 0.8 / len(threads)
    for i, t in enumerate(threads):
        val = {"%s b%d" % (r["model"], r["batch"]): r.get("ratio", float("nan")) for r in rows if r["threads"] == t}
        ax.bar([j + i * w for j in range(len(labels))], [val.get(l, float("nan")) for l in labels], w,
               label="%d thread%s" % (t, "s" if t > 1 else ""))
    ax.axhline(1.0, color="k", lw=0.8)
    ax.axhline(1.1, color="r", lw=0.6, ls="--")
    ax.set_xticks([j + 0.4 - w / 2 for j in range(len(labels))])
    ax.set_xticklabels(labels, rotation=60, ha="right", fontsize=8)
    ax.set_ylabel("kiln / ORT median latency (lower is better)")
    ax.set_title("kiln vs onnxruntime %s on %d CPUs" % (env.get("onnxruntime", "?"), env["cpus"]))
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


if __name__ == "__main__":
    sys.exit(main())
