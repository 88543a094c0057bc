#!/usr/bin/env python3
"""Table of the decode trial (2026-12-06): per shape, the CUDA-core kernel and each tensor-core
tile configuration (µs) next to cuDNN, then per configuration the geomean against cuDNN, the rows
below 0.9x and the checks that failed; the rule column takes the CUDA-core kernel below 3 query
rows per KV head, as the dispatch does. The runs came from bench/attention/decode_cfg.sh at commit
112e436; the trial's knobs went with it once measured (docs/design.md, "Attention").

  python3 bench/attention/decode_cfg_table.py bench/results/attention/decode_cfg_2026-12-06
"""
import glob
import json
import math
import os
import sys


def load(path):
    rows = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if "id" in r:
                rows[r["id"]] = r
    return rows


def cudnn(path):
    out = {}
    with open(path) as f:
        for line in f:
            r = json.loads(line)
            if r.get("backend") == "cudnn" and r.get("ms"):
                out[r["id"]] = r["ms"]
    return out


def shapes(path):
    out = {}
    with open(path) as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    head = lines[0].strip().split(",")
    for ln in lines[1:]:
        v = dict(zip(head, ln.strip().split(",")))
        out[int(v["id"])] = v
    return out


def main():
    d = sys.argv[1]
    for s in ("sweep", "extra"):
        if not os.path.exists(os.path.join(d, s + "_peers.jsonl")):
            continue
        sh = shapes(os.path.join(d, s + ".csv"))
        ref = cudnn(os.path.join(d, s + "_peers.jsonl"))
        simt = load(os.path.join(d, s + "_simt.jsonl"))
        cfgs = sorted(os.path.basename(p)[len(s) + 1:-6] for p in glob.glob(os.path.join(d, s + "_*.jsonl"))
                      if not p.endswith(("_peers.jsonl", "_simt.jsonl")))
        runs = {c: load(os.path.join(d, "%s_%s.jsonl" % (s, c))) for c in cfgs}
        print("## %s (fp16, µs; x = cuDNN / kiln)" % s)
        print("%-3s %-26s %8s %8s " % ("id", "B,Sq,Skv,Nq/Nkv,H", "cuDNN", "simt") +
              " ".join("%10s" % c for c in cfgs))
        summary = {c: [[], 0, 0] for c in cfgs + ["simt"]}
        for i in sorted(sh):
            v = sh[i]
            label = "%s,%s,%s,%s/%s,%s" % (v["B"], v["Sq"], v["Skv"], v["Nq"], v["Nkv"], v["H"])
            r = int(v["Nq"]) // int(v["Nkv"]) * int(v["Sq"])
            line = "%-3d %-26s %8.1f " % (i, label, ref.get(i, float("nan")) * 1e3)
            for c, rr in [("simt", simt)] + [(c, runs[c]) for c in cfgs]:
                base = runs.get("simtK", simt) if c.endswith("K") else simt
                x = rr.get(i)
                ok = x is not None and x.get("ok")
                # the rule: multi-head rows keep the CUDA-core kernel
                use = x if c.startswith("simt") or r >= 3 else base.get(i)
                if use is not None and use.get("ok") and i in ref:
                    summary[c][0].append(math.log(ref[i] / use["ms"]))
                    summary[c][1] += ref[i] / use["ms"] < 0.9
                if x is not None and not ok:
                    summary[c][2] += 1
                line += ("%8.1f%s " % (x["ms"] * 1e3, "" if ok else "!")) if x else "%8s " % "-"
            print(line)
        print("by rule (multi-head rows on the CUDA-core kernel): geomean x cuDNN, rows < 0.9x, failed checks")
        for c, (logs, below, bad) in summary.items():
            g = math.exp(sum(logs) / len(logs)) if logs else float("nan")
            print("  %-14s %.3f  %2d below  %d failed" % (c, g, below, bad))
        # the same, every row on the tensor-core configuration
        print("every row on the configuration:")
        for c in cfgs:
            logs = [math.log(ref[i] / runs[c][i]["ms"]) for i in sh if i in ref and runs[c].get(i, {}).get("ok")]
            below = sum(1 for i in sh if i in ref and runs[c].get(i, {}).get("ok") and ref[i] / runs[c][i]["ms"] < 0.9)
            print("  %-14s %.3f  %2d below" % (c, math.exp(sum(logs) / max(len(logs), 1)), below))
        print()


if __name__ == "__main__":
    main()
