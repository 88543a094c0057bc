#!/usr/bin/env python3
"""Per-head-size geomeans of every timed tile variant next to the default and the peers, per pass,
from a directory of kiln_<pass>.json (bench_attention --variants) and peers_<pass>.json.

  python3 bench/attention/variant_table.py OUT_DIR
"""
import glob, json, math, os, sys


def gm(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


d = sys.argv[1]
for kf in sorted(glob.glob(os.path.join(d, "kiln_*.json"))):
    name = os.path.basename(kf)[5:-5]
    try:
        kiln = json.load(open(kf))["rows"]
    except Exception:
        # A pass cut short leaves a partial file: one row per line, take the complete ones.
        kiln = []
        for ln in open(kf).read().splitlines()[1:]:
            try:
                kiln.append(json.loads(ln.strip().rstrip(",")))
            except Exception:
                pass
        print(f"# {name}: cut short, {len(kiln)} complete rows")
    peers = {}
    pf = os.path.join(d, f"peers_{name}.json")
    if os.path.exists(pf):
        try:
            for r in json.load(open(pf))["rows"]:
                peers[(r["B"], r["S"], r["N"], r["H"])] = r
        except Exception:
            pass
    for H in sorted({r["H"] for r in kiln}):
        rows = [r for r in kiln if r["H"] == H]
        keys = [(r["B"], r["S"], r["N"], r["H"]) for r in rows]
        print(f"## {name} H={H} ({len(rows)} rows), geomean TFLOP/s")
        print(f"  default {rows[0]['kernel']}: {gm([r['kiln'] for r in rows]):.1f}")
        names = []
        for r in rows:
            for v in r.get("variants", {}):
                if v not in names:
                    names.append(v)
        for v in names:
            print(f"  {v:32s} {gm([r.get('variants', {}).get(v) for r in rows]):7.1f}   per row: "
                  + " ".join(f"{r.get('variants', {}).get(v, 0):.0f}" for r in rows))
        for b in ("flash", "cudnn"):
            print(f"  peer {b:27s} {gm([peers.get(k, {}).get(b) for k in keys]):7.1f}")
