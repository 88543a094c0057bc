#!/usr/bin/env python3
"""kiln vs ONNX Runtime on the CPU at several intra-op thread counts, on the float32 models that
bench/gpu_models/export.py writes (BERT-base, GPT-2 small prefill, ViT-B/16, ResNet-50; random
weights). Each (engine, model, threads) runs in its own process, so peak RSS and the time to the
first result (session open + first run) are that engine's alone. Reports median and p99 latency,
kiln/ORT, peak RSS and time to first result; writes OUT.md and OUT.json.

  python3 bench/gpu_models/export.py --out /tmp/gpu_models --precisions fp32 --no-check
  python3 bench/cpu_scaling.py --models /tmp/gpu_models --threads 1 4 16 --batches 1 8 --out bench/results/cpu_scaling
"""
import argparse
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ROWS = {"bert": dict(batch=1, seq=128), "gpt2_prefill": dict(batch=1, seq=128), "vit": dict(batch=1),
        "resnet50": dict(batch=1)}


def feeds_for(models, graph, batch, seq):
    import numpy as np
    import torch
    sys.path.insert(0, os.path.join(ROOT, "bench", "gpu_models"))
    import models as M
    man = json.load(open(os.path.join(models, "manifest.json")))
    entry = man["graphs"][graph]
    mod = M.build_graphs(entry["model"], tiny=man["tiny"], attn="eager")[graph]
    xs = M.make_inputs(graph, mod, batch, seq, None, torch.float32, seed=1)
    names = [i["name"] for i in entry["inputs"]["fp32"]]
    return os.path.join(models, entry["files"]["fp32"]), {n: np.ascontiguousarray(x.numpy()) for n, x in zip(names, xs)}


def worker(a):
    import numpy as np  # the feeds were made by the parent: torch stays out of this process's RSS
    path = a.path
    with np.load(a.feeds) as z:
        feeds = {k: z[k] for k in z.files}
    t0 = time.perf_counter()
    if a.engine == "kiln":
        sys.path.insert(0, os.path.join(ROOT, "python"))
        import kiln
        s = kiln.InferenceSession(path, threads=a.threads)
    else:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    s.run(None, feeds)
    first = time.perf_counter() - t0
    times, t_start = [], time.perf_counter()
    while len(times) < a.min_runs or (time.perf_counter() - t_start < a.target_s and len(times) < 500):
        t = time.perf_counter()
        s.run(None, feeds)
        times.append(time.perf_counter() - t)
    times.sort()
    p99 = times[min(len(times) - 1, math.ceil(0.99 * len(times)) - 1)]
    print(json.dumps({"median_ms": statistics.median(times) * 1e3, "p99_ms": p99 * 1e3, "runs": len(times),
                      "first_s": first, "rss_mb": peak_rss_mb()}))


def peak_rss_mb():
    """This process's peak RSS (VmHWM: reset by exec, unlike ru_maxrss, which a child of a large
    parent inherits)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="the folder bench/gpu_models/export.py wrote")
    ap.add_argument("--only", nargs="*", default=list(ROWS))
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 4, 16])
    ap.add_argument("--batches", nargs="*", type=int, default=[1], help="batch sizes (each model's row per batch)")
    ap.add_argument("--target-s", type=float, default=1.5)
    ap.add_argument("--min-runs", type=int, default=5)
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "cpu_scaling"))
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--engine", help=argparse.SUPPRESS)
    ap.add_argument("--graph", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--seq", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--feeds", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        a.threads = a.threads[0]
        return worker(a)
    import numpy as np
    import tempfile
    tmp = tempfile.mkdtemp()
    rows = []
    for graph, batch in [(g, b) for g in a.only for b in a.batches]:
        spec = dict(ROWS[graph], batch=batch)
        try:
            path, feeds = feeds_for(a.models, graph, spec["batch"], spec.get("seq"))
        except Exception as e:  # noqa: BLE001 - a model the export did not write
            print("%s: skipped (%s)" % (graph, e))
            continue
        npz = os.path.join(tmp, "%s_b%d.npz" % (graph, batch))
        np.savez(npz, **feeds)
        for threads in a.threads:
            row = dict(model=graph, threads=threads, **spec)
            for engine in ("kiln", "ort"):
                cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--models", a.models, "--engine", engine,
                       "--path", path, "--feeds", npz, "--threads", str(threads),
                       "--target-s", str(a.target_s), "--min-runs", str(a.min_runs)]
                p = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
                if p.returncode:
                    row[engine] = {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
                else:
                    row[engine] = json.loads(p.stdout.strip().splitlines()[-1])
            k, o = row["kiln"], row["ort"]
            if "median_ms" in k and "median_ms" in o:
                row["ratio"] = k["median_ms"] / o["median_ms"]
            print("%-13s b%-2d %2d threads  kiln %s  ort %s  kiln/ORT %s" % (
                graph, batch, threads, k.get("median_ms", k.get("error")), o.get("median_ms", o.get("error")),
                "%.2f" % row["ratio"] if "ratio" in row else "-"), flush=True)
            rows.append(row)
            write(a, rows, quiet=True)  # after every row, so a run cut short still leaves its table
    write(a, rows)


def write(a, rows, quiet=False):
    os.makedirs(os.path.dirname(os.path.abspath(a.out)) or ".", exist_ok=True)
    env = {"machine": platform.machine(), "cpus": os.cpu_count(), "python": platform.python_version()}
    try:
        import onnxruntime
        env["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    with open(a.out + ".json", "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    lines = ["| model | batch | threads | kiln ms (p99) | ORT ms (p99) | kiln/ORT | kiln RSS MB | ORT RSS MB | kiln first s | ORT first s |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        k, o = r["kiln"], r["ort"]
        cell = lambda d, key, fmt: fmt % d[key] if key in d else d.get("error", "-")  # noqa: E731
        lines.append("| %s | %d | %d | %s (%s) | %s (%s) | %s | %s | %s | %s | %s |" % (
            r["model"], r["batch"], r["threads"], cell(k, "median_ms", "%.2f"), cell(k, "p99_ms", "%.2f"),
            cell(o, "median_ms", "%.2f"), cell(o, "p99_ms", "%.2f"), "%.2f" % r["ratio"] if "ratio" in r else "-",
            cell(k, "rss_mb", "%.0f"), cell(o, "rss_mb", "%.0f"), cell(k, "first_s", "%.2f"), cell(o, "first_s", "%.2f")))
    per_t = {}
    for r in rows:
        if "ratio" in r:
            per_t.setdefault(r["threads"], []).append(r["ratio"])
    lines.append("")
    for t, rs in sorted(per_t.items()):
        lines.append("Geometric mean kiln/ORT at %d threads: %.2f (%d models)" % (
            t, math.exp(sum(math.log(x) for x in rs) / len(rs)), len(rs)))
    lines.append("")
    lines.append("Environment: %s" % json.dumps(env))
    with open(a.out + ".md", "w") as f:
        f.write("\n".join(lines) + "\n")
    if not quiet:
        print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
