#!/usr/bin/env python3
"""kiln vs ONNX Runtime on the CPU, side by side: same models (../shared/models), same inputs (the
models' reference inputs), same intra-op thread count. Each (engine, model, threads) runs in its own
process so that peak RSS is that engine's alone. Prints a table and writes bench/results/cpu.{md,json}.

  python3 bench/cpu_bench.py                 # all models, 1 and 2 threads
  python3 bench/cpu_bench.py --models bert_tiny --threads 1 --runs 200
"""
import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.environ.get("KILN_MODELS") or os.path.join(os.path.dirname(ROOT), "shared", "models")
NAMES = ["bert_tiny", "bert_tiny_fused", "bert_tiny_fused_fp16", "gpt2_tiny", "mobilenet_v3_small"]


def worker(engine, model, threads, runs, warmup):
    import numpy as np
    ref = np.load(os.path.join(MODELS, model + ".ref.npz"))
    feeds = {k[3:]: ref[k] for k in ref.files if k.startswith("in.")}
    path = os.path.join(MODELS, model + ".onnx")
    if engine == "kiln":
        sys.path.insert(0, os.path.join(ROOT, "python"))
        import kiln
        s = kiln.InferenceSession(path, threads=threads)
        run = lambda: s.run(None, feeds)
    else:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        run = lambda: s.run(None, feeds)
    for _ in range(warmup):
        run()
    t = []
    for _ in range(runs):
        t0 = time.perf_counter()
        run()
        t.append(time.perf_counter() - t0)
    t.sort()
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"median_ms": t[len(t) // 2] * 1e3, "p90_ms": t[int(len(t) * 0.9)] * 1e3, "rss_mb": rss}))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", nargs="*", default=NAMES)
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 2])
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--warmup", type=int, default=10)
    ap.add_argument("--worker", nargs=3, metavar=("ENGINE", "MODEL", "THREADS"))
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker[0], a.worker[1], int(a.worker[2]), a.runs, a.warmup)
    import onnxruntime
    rows = []
    for m in a.models:
        for th in a.threads:
            r = {"model": m, "threads": th}
            for eng in ("kiln", "ort"):
                p = subprocess.run([sys.executable, __file__, "--worker", eng, m, str(th), "--runs", str(a.runs),
                                    "--warmup", str(a.warmup)], capture_output=True, text=True)
                if p.returncode:
                    r[eng] = {"error": (p.stderr.strip().splitlines() or ["?"])[-1][:200]}
                else:
                    r[eng] = json.loads(p.stdout.strip().splitlines()[-1])
            if "median_ms" in r["kiln"] and "median_ms" in r["ort"]:
                r["ratio"] = r["kiln"]["median_ms"] / r["ort"]["median_ms"]
            rows.append(r)
            print(m, th, json.dumps(r), flush=True)
    head = ("| model | threads | kiln median ms | ORT median ms | kiln/ORT | kiln peak RSS MiB | ORT peak RSS MiB |\n"
            "|---|---|---|---|---|---|---|\n")
    lines = []
    for r in rows:
        k, o = r["kiln"], r["ort"]
        f = lambda d, key: "%.3f" % d[key] if key in d else d.get("error", "?")
        lines.append("| %s | %d | %s | %s | %s | %s | %s |" % (
            r["model"], r["threads"], f(k, "median_ms"), f(o, "median_ms"),
            "%.2f" % r["ratio"] if "ratio" in r else "-", "%.0f" % k["rss_mb"] if "rss_mb" in k else "-",
            "%.0f" % o["rss_mb"] if "rss_mb" in o else "-"))
    meta = "onnxruntime %s, %s, %d CPUs, %d runs after %d warm-up, %s" % (
        onnxruntime.__version__, platform.processor() or platform.machine(), os.cpu_count(), a.runs, a.warmup,
        time.strftime("%Y-%m-%d"))
    md = "# kiln vs ONNX Runtime, CPU\n\n" + meta + "\n\nCommand: `python3 bench/cpu_bench.py`\n\n" + head + "\n".join(lines) + "\n"
    print(md)
    os.makedirs(a.out, exist_ok=True)
    open(os.path.join(a.out, "cpu.md"), "w").write(md)
    json.dump({"meta": meta, "rows": rows}, open(os.path.join(a.out, "cpu.json"), "w"), indent=1)


if __name__ == "__main__":
    main()
