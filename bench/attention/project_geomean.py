#!/usr/bin/env python3
"""Projected per-format geomeans (kiln, FA2, cuDNN over the 31 table rows) from two calls: the
rows of a full default run (BASE, e.g. bench/results/attention) with the rows re-measured in a
later sweep (NEW, e.g. bench/attention/results_bm192) replaced by that sweep's numbers. For a head
size in SWITCH (H=variant-name substring), kiln's number is that variant's from the sweep.

  python3 bench/attention/project_geomean.py BASE NEW [H=substr ...]
"""
import json, math, os, sys


def gm(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


base, new = sys.argv[1], sys.argv[2]
switch = dict(a.split("=", 1) for a in sys.argv[3:])
switch = {int(k[1:] if k.startswith("H") else k): v for k, v in switch.items()}
print(f"{'pass':22s} {'kiln':>7s} {'FA2':>7s} {'cuDNN':>7s} {'k/FA2':>6s} {'k/cuDNN':>7s}  (rows; re-measured)")
for name in ("fp16_qkv_sep", "fp16_kv_packed", "fp16_qkv_packed", "fp16_qkv_sep_causal", "bf16_qkv_sep"):
    rows = {}
    kb = json.load(open(os.path.join(base, f"kiln_{name}.json")))["rows"]
    pb = {(r["B"], r["S"], r["N"], r["H"]): r for r in json.load(open(os.path.join(base, f"peers_{name}.json")))["rows"]}
    for r in kb:
        k = (r["B"], r["S"], r["N"], r["H"])
        rows[k] = [r["kiln"], pb.get(k, {}).get("flash"), pb.get(k, {}).get("cudnn")]
    nre = 0
    kf, pf = os.path.join(new, f"kiln_{name}.json"), os.path.join(new, f"peers_{name}.json")
    if os.path.exists(kf) and os.path.exists(pf):
        pn = {(r["B"], r["S"], r["N"], r["H"]): r for r in json.load(open(pf))["rows"]}
        for r in json.load(open(kf))["rows"]:
            k = (r["B"], r["S"], r["N"], r["H"])
            kv = r["kiln"]
            if r["H"] in switch:
                kv = next(v for n, v in r.get("variants", {}).items() if switch[r["H"]] in n)
            rows[k] = [kv, pn.get(k, {}).get("flash"), pn.get(k, {}).get("cudnn")]
            nre += 1
    g = [gm([v[i] for v in rows.values()]) for i in range(3)]
    print(f"{name:22s} {g[0]:7.1f} {g[1]:7.1f} {g[2]:7.1f} {g[0] / g[1]:6.2f} {g[0] / g[2]:7.3f}  ({len(rows)}; {nre})")
