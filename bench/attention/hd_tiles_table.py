#!/usr/bin/env python3
"""The table of bench/attention/hd_tiles.sh: per shape, TFLOP/s of kiln's default tile, of every
tile timed with bench_sweep --variants, of cuDNN and FlashAttention-2 (sweep_peers.py), and the
winner; then per head size, each tile against the default (geomean, worst row, rows won) over all
rows and by mask and length, and the tile a rule would take.

  python3 bench/attention/hd_tiles_table.py OUTDIR [--shapes bench/attention/hd_tiles_shapes.csv]

Reads OUTDIR/kiln_<dtype>.jsonl and OUTDIR/peers_<dtype>.jsonl. Work is counted from the shape
(sweep_report.work), so every ratio is a ratio of times. A tile whose check failed counts as
missing, never as a win.
"""
import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from sweep_report import geomean, load_jsonl, read_shapes, work  # noqa: E402

FLIP_GEOMEAN = 1.03  # a tile replaces the default when it is this much faster overall...
FLIP_WORST = 0.97    # ...and no row is slower than this


def short(v):
    return v.replace("tma_", "").replace("_persist", "_P").replace("_occ1", "")


def groups(r):
    yield "all"
    yield "causal" if r["causal"] else "non-causal"
    yield "Sq<=512" if r["Sq"] <= 512 else "Sq>512"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--shapes", default=os.path.join(HERE, "hd_tiles_shapes.csv"))
    a = ap.parse_args()
    shapes = read_shapes(a.shapes)
    summary = {}  # (H, variant) -> {group: [ratios]} over both dtypes
    for dt in ("fp16", "bf16"):
        kl = load_jsonl(os.path.join(a.outdir, f"kiln_{dt}.jsonl"))
        if not kl:
            print(f"## {dt}: no kiln results")
            continue
        head = kl[0] if "device" in kl[0] else {}
        default = {x["id"]: x for x in kl if "id" in x and "variant" not in x}
        var = {}
        for x in kl:
            if "variant" in x:
                var.setdefault(x["id"], {})[x["variant"]] = x
        peers = {}
        for x in load_jsonl(os.path.join(a.outdir, f"peers_{dt}.jsonl")):
            peers.setdefault(x["id"], {})[x["backend"]] = x
        print(f"## {dt}: {head.get('device', '?')}, {head.get('sm_count', '?')} SMs; TFLOP/s "
              "(def = the tile kiln takes today; * = fastest kiln tile; FAIL = check failed)")
        for H in sorted({shapes[i]["H"] for i in default if i in shapes}):
            ids = [i for i in sorted(default) if i in shapes and shapes[i]["H"] == H]
            names = []
            for i in ids:
                for v in var.get(i, {}):
                    if v not in names:
                        names.append(v)
            kdef = default[ids[0]]["kernel"] if ids else ""
            tag = {v: chr(ord("a") + j) for j, v in enumerate(names)}
            print(f"### {dt} H={H}  def: {kdef}" + "".join(f"  {tag[v]}: {short(v)}" for v in names))
            print(f"{'id':>3} {'B,Sq,Skv,Nq,Nkv,c,pad':24} {'def':>6}" + "".join(f" {tag[v]:>6}" for v in names)
                  + f" {'cuDNN':>6} {'FA2':>6} win")
            for i in ids:
                r = shapes[i]
                fl, _ = work(r)
                tf = lambda x: fl / (x["ms"] * 1e-3) / 1e12 if x and x.get("ms") and x["ms"] > 0 else None
                d = default[i]
                cells = {"default": tf(d) if d.get("ok") else None}
                for v in names:
                    x = var.get(i, {}).get(v)
                    cells[v] = tf(x) if x and x.get("ok") else None
                kiln_best = max((k for k in cells if cells[k]), key=lambda k: cells[k], default=None)
                pc = {b: tf(peers.get(i, {}).get(b)) for b in ("cudnn", "flash")}
                allc = dict(cells, **{"cuDNN": pc["cudnn"], "FA2": pc["flash"]})
                win = max((k for k in allc if allc[k]), key=lambda k: allc[k], default="-")
                win = "def" if win == "default" else tag.get(win, win)

                def fmt(k):
                    x = var.get(i, {}).get(k) if k != "default" else d
                    if x and not x.get("ok"):
                        return "  FAIL"
                    if cells.get(k) is None:
                        return "     -"
                    return f"{cells[k]:5.0f}" + ("*" if k == kiln_best else " ")

                shp = f"{r['B']},{r['Sq']},{r['Skv']},{r['Nq']},{r['Nkv']},{r['causal']},{int(bool(r['lens']))}"
                print(f"{i:>3} {shp:24} {fmt('default')}" + "".join(f" {fmt(v)}" for v in names)
                      + "".join(f" {pc[b]:6.0f}" if pc[b] else "      -" for b in ("cudnn", "flash")) + f" {win}")
                for v in names:
                    if cells.get(v) and cells["default"]:
                        for g in groups(r):
                            summary.setdefault((H, v), {}).setdefault(g, []).append(cells[v] / cells["default"])
                    for b, pn in (("cudnn", "cuDNN"), ("flash", "FA2")):
                        if cells.get(v) and pc[b]:
                            summary.setdefault((H, v), {}).setdefault("vs " + pn, []).append(cells[v] / pc[b])
                if cells["default"] and pc["cudnn"]:
                    summary.setdefault((H, "default"), {}).setdefault("vs cuDNN", []).append(cells["default"] / pc["cudnn"])
            print()
    print("## per head size, both dtypes: each tile / the default (geomean, worst row, rows faster)")
    for H in sorted({h for h, _ in summary}):
        d = summary.get((H, "default"), {}).get("vs cuDNN")
        print(f"### H={H}" + (f"  (default / cuDNN geomean {geomean(d):.2f})" if d else ""))
        best = None
        for (h, v), gs in summary.items():
            if h != H or v == "default":
                continue
            parts = []
            for g in ("all", "non-causal", "causal", "Sq<=512", "Sq>512"):
                xs = gs.get(g)
                if xs:
                    parts.append(f"{g} {geomean(xs):.2f} (min {min(xs):.2f}, {sum(x > 1 for x in xs)}/{len(xs)})")
            peer = " ".join(f"{k} {geomean(gs[k]):.2f}" for k in ("vs cuDNN", "vs FA2") if gs.get(k))
            print(f"  {v:28} " + "; ".join(parts) + f"; {peer}")
            xs = gs.get("all", [])
            if xs and geomean(xs) >= FLIP_GEOMEAN and min(xs) >= FLIP_WORST and (best is None or geomean(xs) > best[1]):
                best = (v, geomean(xs))
        print(f"  rule: " + (f"take {best[0]} (geomean {best[1]:.2f}, no row below {FLIP_WORST})" if best
                              else f"keep the default (no tile >= {FLIP_GEOMEAN} geomean with every row >= {FLIP_WORST})"))


if __name__ == "__main__":
    main()
