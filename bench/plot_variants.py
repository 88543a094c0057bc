"""Plots bench/variants_ab.py --json results (one JSON line per target) as grouped bars: each
target's best median per variant, relative to a reference variant, so rows of very different
sizes share one axis.

  python3 bench/plot_variants.py RESULTS.jsonl --ref ort --out plot.png [--title TEXT]
"""
import argparse
import json
import os
import re


def label(target):
    """A model's file name without folders and suffixes, or a conv_bench case without its batch."""
    name = os.path.basename(target).replace(".onnx", "").replace(".fp32", "")
    return re.sub(r"_b\d+$", "", name)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("jsonl")
    ap.add_argument("--ref", default="ort", help="variant the others are divided by")
    ap.add_argument("--out", required=True)
    ap.add_argument("--title", default="")
    a = ap.parse_args()
    rows = [json.loads(ln) for ln in open(a.jsonl) if ln.strip()]
    rows = [r for r in rows if a.ref in r["best_ms"]]
    if not rows:
        raise SystemExit(f"no rows with variant {a.ref!r} in {a.jsonl}")
    variants = list(dict.fromkeys(v for r in rows for v in r["best_ms"]))
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(rows)), 4.5))
    width = 0.8 / len(variants)
    for i, v in enumerate(variants):
        xs = [k + (i - (len(variants) - 1) / 2) * width for k in range(len(rows))]
        ys = [r["best_ms"].get(v, float("nan")) / r["best_ms"][a.ref] for r in rows]
        ax.bar(xs, ys, width, label=v)
    ax.axhline(1.0, color="k", lw=0.8)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels([f"{label(r['target'])}\nb{r['batch']} t{r['threads']}" for r in rows], fontsize=7)
    ax.set_ylabel(f"time / {a.ref}'s time (lower is faster)")
    ax.set_title(a.title or a.jsonl, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(a.out, dpi=120)
    print(a.out)


if __name__ == "__main__":
    main()
