#!/usr/bin/env python3
"""The FP8 wgmma variants side by side, from bench_fp8's JSON lines (bench/attention/fp8.sh):
per row (head size, causal, S) the fastest variant and each variant's TFLOP/s relative to it,
then per head size the geometric mean of each variant over the rows. Short enough to print in a
device call's output.

  python3 bench/attention/fp8_best.py OUT/bench_fp8.jsonl
"""
import collections
import json
import math
import sys


def main():
    rows = [json.loads(x) for x in open(sys.argv[1]) if x.strip()]
    rows = [r for r in rows if r.get("fp8_wgmma_each")]
    per_hd = collections.defaultdict(lambda: collections.defaultdict(list))
    for r in rows:
        each = dict(kv.split("=") for kv in r["fp8_wgmma_each"].split("|") if "=" in kv)
        each = {k: float(v) for k, v in each.items()}
        best = max(each, key=each.get)
        print(f"H={r['H']:<3} causal={r['causal']} S={r['S']:<5} best {best} {each[best]:.0f}")
        for k, v in each.items():
            per_hd[r["H"]][k].append(math.log(v))
    for hd, vs in sorted(per_hd.items()):
        g = {k: math.exp(sum(x) / len(x)) for k, x in vs.items()}
        print(f"H={hd} geomean TFLOP/s: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(g.items(), key=lambda kv: -kv[1])))


if __name__ == "__main__":
    main()
