#!/usr/bin/env python3
"""Joins the attention sweep's results (bench_sweep's kiln_<dtype>.jsonl, sweep_peers.py's
peers_<dtype>.jsonl) with its shapes and prints a table and the issue-13 targets; writes a plot.

  python3 sweep_report.py OUTDIR [--shapes bench/attention/sweep_shapes.csv] [--plot OUTDIR/sweep.png]

Work counted for every party from the shape alone, so ratios are ratios of times:
  FLOPs = 4 · Nq · H · (visible (query, key) pairs), summed over batches and query rows
          (key lengths, bottom-right causal diagonal).
  Bytes (decode and spec shapes, reported in GB/s) = K and V rows each batch can see, once per KV
          head, + Q + O.
Targets (issue 13), per dtype: geomean of kiln / cuDNN speed >= 1.05 over the shapes cuDNN runs,
no shape below 0.9x; decode shapes at >= 80 % of the device's measured copy bandwidth.
"""
import argparse
import json
import math
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))


def read_shapes(path):
    rows, cols = {}, None
    for line in open(path):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if cols is None:
            cols = line.split(",")
            continue
        v = dict(zip(cols, line.split(",")))
        r = {k: int(v[k]) for k in ("id", "B", "Sq", "Skv", "Nq", "Nkv", "H", "causal")}
        r["kind"], r["kv_layout"] = v["kind"], v["kv_layout"]
        r["lens"] = [int(x) for x in v.get("lens", "").split(":") if x]
        rows[r["id"]] = r
    return rows


def visible(r, b):
    """Keys each query row of batch b sees, summed over the rows, and the keys it reads at all."""
    T, S = r["Skv"], r["Sq"]
    kl = r["lens"][b] if r["lens"] else 0
    lim = kl if 0 < kl < T else T
    if not r["causal"]:
        return lim * S, lim
    tot = 0
    for s in range(S):
        tot += max(0, min(lim, s + T - S + 1))
    return tot, max(0, min(lim, T))


def work(r):
    pairs = keys = 0
    for b in range(r["B"]):
        p, k = visible(r, b)
        pairs += p
        keys += k
    flops = 4.0 * r["Nq"] * r["H"] * pairs
    nbytes = 2.0 * (2 * keys * r["Nkv"] * r["H"] + 2 * r["B"] * r["Sq"] * r["Nq"] * r["H"])
    return flops, nbytes


def load_jsonl(path):
    if not os.path.exists(path):
        return []
    out = []
    for line in open(path):
        line = line.strip()
        if line:
            try:
                out.append(json.loads(line))
            except ValueError:
                pass
    return out


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("outdir")
    ap.add_argument("--shapes", default=os.path.join(HERE, "sweep_shapes.csv"))
    ap.add_argument("--plot", default=None)
    a = ap.parse_args()
    shapes = read_shapes(a.shapes)
    plot_data = {}
    for dt in ("fp16", "bf16"):
        kl = load_jsonl(os.path.join(a.outdir, f"kiln_{dt}.jsonl"))
        if not kl:
            print(f"## {dt}: no kiln results")
            continue
        head = kl[0] if "device" in kl[0] else {}
        copy_gbs = head.get("copy_gbs") or 0.0
        kiln = {x["id"]: x for x in kl if "id" in x and "variant" not in x}  # not bench_sweep --variants rows
        peers = {}
        for x in load_jsonl(os.path.join(a.outdir, f"peers_{dt}.jsonl")):
            peers.setdefault(x["id"], {})[x["backend"]] = x
        print(f"## {dt} on {head.get('device', '?')}: copy bandwidth {copy_gbs:.0f} GB/s")
        print(f"{'id':>3} {'kind':<7} {'B,Sq,Skv,Nq/Nkv,H,c,pad':<30} {'kernel':<36} {'ok':<4} {'kiln':>10} "
              f"{'unit':<6} {'x cuDNN':>8} {'x FA2':>7} {'split/flash':>11}  peers n/a")
        r_cudnn, r_fa2, dec_frac, fails, rows_plot = [], [], [], [], []
        for i in sorted(shapes):
            r = shapes[i]
            k = kiln.get(i)
            shp = f"{r['B']},{r['Sq']},{r['Skv']},{r['Nq']}/{r['Nkv']},{r['H']},{r['causal']},{int(bool(r['lens']))}"
            if not k:
                print(f"{i:>3} {r['kind']:<7} {shp:<30} (no kiln result)")
                fails.append(i)
                continue
            flops, nbytes = work(r)
            bw = r["kind"] in ("decode", "spec")
            ms = k["ms"] if k["ms"] and k["ms"] > 0 else None
            val = (nbytes / (ms / 1e3) / 1e9 if bw else flops / (ms / 1e3) / 1e12) if ms else float("nan")
            p = peers.get(i, {})
            ratio = {}
            na = []
            for bk in ("cudnn", "flash"):
                x = p.get(bk)
                if x and x.get("ms") and ms:
                    ratio[bk] = x["ms"] / ms
                else:
                    na.append(f"{bk}: {(x or {}).get('why', 'not run')[:60]}")
            if "cudnn" in ratio:
                r_cudnn.append(ratio["cudnn"])
            if "flash" in ratio:
                r_fa2.append(ratio["flash"])
            if r["kind"] == "decode" and copy_gbs and ms:
                dec_frac.append(val / copy_gbs)
            ok = k.get("ok") and k.get("flash_ok", True)
            if not ok:
                fails.append(i)
            sf = f"{k['flash_ms'] / ms:.2f}x" if ms and k.get("flash_ms", -1) > 0 else ""
            print(f"{i:>3} {r['kind']:<7} {shp:<30} {k['kernel'][:36]:<36} {'ok' if ok else 'FAIL':<4} "
                  f"{val:>10.1f} {'GB/s' if bw else 'TF/s':<6} "
                  f"{ratio.get('cudnn', float('nan')):>8.2f} {ratio.get('flash', float('nan')):>7.2f} {sf:>11}  "
                  f"{'; '.join(na)}")
            rows_plot.append((i, r["kind"], ratio.get("cudnn"), ratio.get("flash"), val if bw else None, r["Skv"]))
        g = geomean(r_cudnn)
        worst = min(r_cudnn) if r_cudnn else float("nan")
        print(f"# {dt}: kiln vs cuDNN geomean {g:.3f}x over {len(r_cudnn)} shapes (target >= 1.05), worst "
              f"{worst:.2f}x (target >= 0.9), {sum(1 for x in r_cudnn if x < 0.9)} below 0.9x; "
              f"vs FA2 geomean {geomean(r_fa2):.3f}x over {len(r_fa2)}")
        if dec_frac:
            print(f"# {dt}: decode at {100 * geomean(dec_frac):.0f}% of copy bandwidth (geomean), "
                  f"min {100 * min(dec_frac):.0f}%, {sum(1 for x in dec_frac if x >= 0.8)}/{len(dec_frac)} "
                  f"shapes >= 80%")
        print(f"# {dt}: {len(fails)} shape(s) failed or missing: {fails}")
        print()
        plot_data[dt] = (rows_plot, copy_gbs)
    if a.plot and plot_data:
        plot(plot_data, a.plot)


def plot(data, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("# matplotlib missing: no plot")
        return
    colors = {"decode": "tab:blue", "spec": "tab:cyan", "prefill": "tab:orange", "cross": "tab:green"}
    fig, axes = plt.subplots(len(data), 2, figsize=(15, 4.5 * len(data)), squeeze=False)
    for row, (dt, (rows, copy_gbs)) in enumerate(sorted(data.items())):
        ax = axes[row][0]
        for j, (i, kind, rc, rf, _, _) in enumerate(rows):
            if rc:
                ax.bar(j, rc, color=colors.get(kind, "gray"))
            if rf:
                ax.plot(j, rf, "k_", markersize=8)
        ax.axhline(1.05, color="green", lw=0.8, ls="--")
        ax.axhline(0.9, color="red", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels([str(r[0]) for r in rows], fontsize=6)
        ax.set_title(f"{dt}: kiln speed / cuDNN (bars, by kind), / FA2 (ticks)")
        ax.set_xlabel("shape id")
        handles = [plt.Rectangle((0, 0), 1, 1, color=c) for c in colors.values()]
        ax.legend(handles, list(colors), fontsize=7)
        ax = axes[row][1]
        dec = [(skv, v) for (_, kind, _, _, v, skv) in rows if kind == "decode" and v]
        if dec:
            ax.scatter([d[0] for d in dec], [d[1] for d in dec], color="tab:blue", label="kiln decode")
        if copy_gbs:
            ax.axhline(copy_gbs, color="black", lw=0.8, label=f"copy {copy_gbs:.0f} GB/s")
            ax.axhline(0.8 * copy_gbs, color="red", lw=0.8, ls="--", label="80%")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("KV length")
        ax.set_ylabel("GB/s")
        ax.set_title(f"{dt}: decode bandwidth")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"# plot: {path}")


if __name__ == "__main__":
    sys.exit(main())
