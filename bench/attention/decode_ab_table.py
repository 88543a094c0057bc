#!/usr/bin/env python3
"""Table and plot of bench/attention/decode_ab.sh's results: per shape, the CUDA-core (simt) and
tensor-core (mma) decode kernels, the rule's choice (mma from MIN_ROWS query rows per KV head) and
cuDNN, per dtype and shape set.

  python3 bench/attention/decode_ab_table.py DIR [--out DIR/decode_ab.md] [--plot DIR/decode_ab.png]

DIR holds <set>.csv and <set>/{simt,mma}/kiln_<dt>.jsonl, <set>/peers_<dt>.jsonl (decode_ab.tgz
unpacked).
"""
import argparse
import json
import math
import os

MIN_ROWS = 3  # MMA_MIN_ROWS in src/cuda/attention/gpu/attention_decode.cu


def jsonl(path):
    out = {}
    if not os.path.exists(path):
        return out
    for line in open(path):
        line = line.strip()
        if line:
            o = json.loads(line)
            if "id" in o:
                out.setdefault(o["id"], []).append(o)
    return out


def shapes(path):
    rows = {}
    for line in open(path):
        if line.startswith("#") or line.startswith("id,") or not line.strip():
            continue
        v = line.strip().split(",")
        B, Sq, Skv, Nq, Nkv, H = map(int, v[2:8])
        rows[int(v[0])] = dict(kind=v[1], B=B, Sq=Sq, Skv=Skv, Nq=Nq, Nkv=Nkv, H=H, R=Nq // Nkv * Sq)
    return rows


def geomean(xs):
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("dir")
    ap.add_argument("--out")
    ap.add_argument("--plot")
    a = ap.parse_args()
    lines, pts = [], []
    for st in ("sweep_decode", "extra"):
        sh = shapes(os.path.join(a.dir, st + ".csv"))
        for dt in ("fp16", "bf16"):
            simt = jsonl(os.path.join(a.dir, st, "simt", f"kiln_{dt}.jsonl"))
            mma = jsonl(os.path.join(a.dir, st, "mma", f"kiln_{dt}.jsonl"))
            peers = jsonl(os.path.join(a.dir, st, f"peers_{dt}.jsonl"))
            if not simt or not mma:
                continue
            lines += [f"\n### {st}, {dt}\n",
                      "| id | kind | B | Sq | Skv | Nq/Nkv | H | rows/KV head | simt µs | mma µs | mma/simt | rule µs | cuDNN µs | rule x cuDNN |",
                      "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
            ratios, vs = [], []
            for i in sorted(sh):
                if i not in simt or i not in mma:
                    continue
                r = sh[i]
                ts, tm = simt[i][0]["ms"] * 1e3, mma[i][0]["ms"] * 1e3
                ok = simt[i][0].get("ok") and mma[i][0].get("ok")
                rule = tm if r["R"] >= MIN_ROWS else ts
                cu = [p["ms"] * 1e3 for p in peers.get(i, []) if p.get("backend") == "cudnn" and p.get("ms")]
                x = cu[0] / rule if cu else float("nan")
                ratios.append(tm / ts)
                vs.append(x)
                pts.append((r["R"], tm / ts, dt))
                lines.append(f"| {i} | {r['kind']} | {r['B']} | {r['Sq']} | {r['Skv']} | {r['Nq']}/{r['Nkv']} | {r['H']} | "
                             f"{r['R']} | {ts:.1f} | {tm:.1f} | {tm / ts:.2f} | {rule:.1f} | "
                             f"{cu[0] if cu else float('nan'):.1f} | {x:.2f}{'' if ok else ' (check failed)'} |")
            lines.append(f"\n{st} {dt}: by the rule, geomean {geomean(vs):.3f}x cuDNN over {sum(1 for v in vs if v == v)} "
                         f"shapes, {sum(1 for v in vs if v < 0.9)} below 0.9x; mma/simt geomean {geomean(ratios):.3f}")
    text = "\n".join(lines) + "\n"
    print(text)
    if a.out:
        open(a.out, "w").write(text)
    if a.plot and pts:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        fig, ax = plt.subplots(figsize=(7, 4))
        for dt, mk in (("fp16", "o"), ("bf16", "x")):
            xs = [p[0] for p in pts if p[2] == dt]
            ys = [p[1] for p in pts if p[2] == dt]
            ax.scatter(xs, ys, marker=mk, label=dt, alpha=0.7)
        ax.axhline(1.0, color="grey", lw=0.8)
        ax.axvline(MIN_ROWS - 0.5, color="red", lw=0.8, ls="--", label=f"rule: mma from {MIN_ROWS} rows")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("query rows per KV head (G·Sq)")
        ax.set_ylabel("tensor-core / CUDA-core kernel time")
        ax.set_title("split-KV decode on H100: tensor-core vs CUDA-core kernel")
        ax.legend()
        fig.tight_layout()
        fig.savefig(a.plot, dpi=120)


if __name__ == "__main__":
    main()
