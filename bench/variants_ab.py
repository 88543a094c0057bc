#!/usr/bin/env python3
"""Several kiln builds or settings and onnxruntime on one model or one Conv node, side by side:
each round runs every variant in a process of its own (the order rotates from round to round, so
that load from other users of a shared machine hits all alike); a process runs for about
--seconds and reports its median latency. Prints, per variant, the lowest median, its ratio to the
first variant, and every median (the spread).

A variant is NAME=ort, or NAME=LIB[,ENV=VALUE...] (LIB: a libkiln.so, or "-" for $KILN_LIBRARY;
the ENV pairs are set in that process only). The target is an .onnx file (random float32 feeds as
bench/node_profile.py makes them) or a case name of bench/conv_bench.py (its Conv node and feeds).

  python3 bench/variants_ab.py /tmp/gpu_models/resnet50.fp32.onnx --batch 8 --threads 16 \\
      --variant base=- --variant static=-,KILN_SOME_SETTING=1 --variant ort=ort
  python3 bench/variants_ab.py r50_3x3_7_512_b1 --threads 16 --variant base=- --variant ort=ort
"""
import argparse
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r'''
import json, os, sys, time
import numpy as np
target, batch, threads, engine, seconds = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], float(sys.argv[5])
clock = time.process_time if sys.argv[7] == "cpu" else time.perf_counter
sys.path.insert(0, os.path.join(sys.argv[6], "python")); sys.path.insert(0, os.path.join(sys.argv[6], "bench"))
if target.endswith(".onnx"):
    import node_profile
    model, feeds = target, node_profile.feeds_for(target, batch, int(sys.argv[8]))
else:
    import conv_bench
    model, feeds = conv_bench.conv_model(conv_bench.CASES[target])
if engine == "ort":
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
else:
    import kiln
    s = kiln.InferenceSession(model, threads=threads)
for _ in range(3):
    y = s.run(None, feeds)[0]
ts, end = [], time.perf_counter() + seconds
while time.perf_counter() < end or len(ts) < 5:
    t0 = clock()
    s.run(None, feeds)
    ts.append(clock() - t0)
y = np.asarray(y, dtype=np.float64)
print(json.dumps({"ms": float(np.median(ts) * 1e3), "runs": len(ts), "sum": float(np.sum(y)),
                  "absmax": float(np.max(np.abs(y)))}))
'''


def parse_variant(text):
    name, _, spec = text.partition("=")
    if not name or not spec:
        raise SystemExit(f"variant {text!r}: want NAME=ort or NAME=LIB[,ENV=VALUE...]")
    if spec == "ort":
        return name, "ort", None, {}
    lib, *pairs = spec.split(",")
    lib = os.environ.get("KILN_LIBRARY", "") if lib == "-" else os.path.abspath(lib)
    env = {}
    for p in pairs:
        k, _, v = p.partition("=")
        env[k] = v
    return name, "kiln", lib, env


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target")
    ap.add_argument("--variant", action="append", required=True)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seq", type=int, default=1, help="value of a model's symbolic dims after the first")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=0.6)
    ap.add_argument("--cpu", action="store_true",
                    help="time each run by the process's CPU time instead of the wall clock: on a "
                         "shared machine a one-thread run's CPU time leaves out the time it waited "
                         "for a core (meaningless with more threads than cores)")
    ap.add_argument("--json", help="append one line of results to this file")
    a = ap.parse_args()
    vs = [parse_variant(v) for v in a.variant]
    res = {v[0]: [] for v in vs}
    sums = {}
    for r in range(a.rounds):
        order = vs[r % len(vs):] + vs[:r % len(vs)]
        for name, engine, lib, extra in order:
            env = dict(os.environ, **extra)
            if lib:
                env["KILN_LIBRARY"] = lib
            p = subprocess.run([sys.executable, "-c", WORKER, a.target, str(a.batch), str(a.threads), engine,
                                str(a.seconds), ROOT, "cpu" if a.cpu else "wall", str(a.seq)], env=env, capture_output=True, text=True)
            if p.returncode:
                print(f"{name}: failed: {(p.stderr.strip().splitlines() or ['?'])[-1][:200]}", file=sys.stderr)
                continue
            out = json.loads(p.stdout.strip().splitlines()[-1])
            res[name].append(out["ms"])
            sums[name] = out
    base = vs[0][0]
    best = {k: min(v) for k, v in res.items() if v}
    label = (f"{os.path.basename(a.target)} b{a.batch}" if a.target.endswith(".onnx") else a.target) + f" t{a.threads}"
    ref = sums.get(base)
    for name, _, _, _ in vs:
        if name not in best:
            continue
        ratio = best[name] / best[base] if base in best else float("nan")
        # the outputs of every variant against the first one's (the same feeds): a changed
        # schedule must not change the result beyond float rounding
        dev = abs(sums[name]["sum"] - ref["sum"]) / (abs(ref["sum"]) + 1e-30) if ref else float("nan")
        print(f"{label:40s} {name:12s} {best[name]:9.3f} ms  x{ratio:5.3f}  sum-dev {dev:.1e}  "
              f"({' '.join('%.2f' % v for v in res[name])})", flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps({"target": a.target, "batch": a.batch, "threads": a.threads,
                                "best_ms": best, "all_ms": res}) + "\n")


if __name__ == "__main__":
    main()
