#!/usr/bin/env python3
"""Peak RSS (VmHWM) of one process that opens a model and runs it RUNS times, in kiln or in
onnxruntime, on random float32 feeds of the given batch: after opening, after the first run (on
the heap, recording kiln's memory plan) and after the last (on the plan's arena). One process per
call, so nothing else's memory counts.

  python3 bench/peak_rss.py /tmp/cpu_models/densenet121.onnx --batch 8 --threads 1
  python3 bench/peak_rss.py /tmp/cpu_models/densenet121.onnx --batch 8 --threads 1 --engine ort
"""
import argparse
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def vm():
    d = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM:", "VmRSS:")):
                d[line[:5]] = int(line.split()[1]) // 1024
    return d


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--engine", choices=["kiln", "ort"], default="kiln")
    a = ap.parse_args()
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import node_profile as npf
    feeds = npf.feeds_for(a.model, a.batch)
    if a.engine == "kiln":
        import kiln
        s = kiln.InferenceSession(a.model, threads=a.threads)
    else:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = a.threads
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    opened = vm()
    s.run(None, feeds)
    first = vm()
    for _ in range(a.runs - 1):
        s.run(None, feeds)
    last = vm()
    print("%s %s b%d t%d: peak MB after open %d, first run %d, run %d %d (RSS now %d)" % (
        a.engine, os.path.basename(a.model), a.batch, a.threads, opened["VmHWM"], first["VmHWM"], a.runs,
        last["VmHWM"], last["VmRSS"]))


if __name__ == "__main__":
    main()
