#!/usr/bin/env python3
"""Two kiln builds on one model, A/B: processes alternate (A, B, A, B ...) so that load from other
users of a shared machine hits both alike; each process runs the model for about a second and
reports its median latency. Prints the lowest median of each build, B/A, and every median (the
spread). Random float32 feeds as bench/node_profile.py makes them. `--a ort` times onnxruntime
(default graph optimizations, the same intra-op threads, sequential) as A instead: kiln/ORT on a
machine whose speed drifts from minute to minute.

  python3 bench/kiln_ab.py MODEL.onnx --a /tmp/base/libkiln.so --b build-cpu/libkiln.so \\
      --batch 8 --threads 1 --rounds 5
  python3 bench/kiln_ab.py MODEL.onnx --a ort --b build-cpu/libkiln.so --batch 8
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

WORKER = r'''
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[4]); sys.path.insert(0, sys.argv[5])
import kiln, node_profile
feeds = node_profile.feeds_for(sys.argv[1], int(sys.argv[2]))
if sys.argv[6] == "ort":
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = int(sys.argv[3])
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    s = ort.InferenceSession(sys.argv[1], so, providers=["CPUExecutionProvider"])
else:
    s = kiln.InferenceSession(sys.argv[1], threads=int(sys.argv[3]))
for _ in range(3):
    s.run(None, feeds)
ts, end = [], time.perf_counter() + 1.0
while time.perf_counter() < end or len(ts) < 10:
    t0 = time.perf_counter()
    s.run(None, feeds)
    ts.append(time.perf_counter() - t0)
print(np.median(ts) * 1e3)
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--a", required=True, help="libkiln.so of build A (the baseline), or ort")
    ap.add_argument("--b", required=True, help="libkiln.so of build B")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    a = ap.parse_args()
    res = {"A": [], "B": []}
    for _ in range(a.rounds):
        for k, lib in (("A", a.a), ("B", a.b)):
            p = subprocess.run([sys.executable, "-c", WORKER, a.model, str(a.batch), str(a.threads),
                                os.path.join(ROOT, "python"), os.path.join(ROOT, "bench"),
                                "ort" if lib == "ort" else "kiln"],
                               env=dict(os.environ, KILN_LIBRARY=os.path.abspath(a.b if lib == "ort" else lib)),
                               capture_output=True, text=True, check=True)
            res[k].append(float(p.stdout.strip().splitlines()[-1]))
    ma, mb = min(res["A"]), min(res["B"])
    print("%s b%d t%d: A %.3f ms, B %.3f ms, B/A %.3f (A %s; B %s)" % (
        os.path.basename(a.model), a.batch, a.threads, ma, mb, mb / ma,
        " ".join("%.2f" % v for v in res["A"]), " ".join("%.2f" % v for v in res["B"])))


if __name__ == "__main__":
    main()
