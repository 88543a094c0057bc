#!/usr/bin/env python3
"""Bar chart of run.py's results: one panel per model (and sequence length), batch sizes along x,
one bar per engine (kiln GPU, kiln graph, eager, eager+copy, torch.compile), latency in ms (decode: per token).

  python3 bench/gpu_models/plot.py RESULTS/results.json              # writes RESULTS/results.png
  python3 bench/gpu_models/plot.py RESULTS/results.json --out x.png

Needs matplotlib; without it, says so and exits 0 (the table in results.md has the same numbers).
"""
import argparse
import json
import math
import os
import sys

SERIES = [("kiln_gpu_ms", "kiln GPU", "#d62728"), ("kiln_graph_ms", "kiln graph (fixed dims, device I/O)", "#ff9896"),
          ("eager_ms", "torch eager", "#1f77b4"),
          ("eager_copy_ms", "eager + copies", "#aec7e8"), ("compile_ms", "torch.compile", "#2ca02c")]
LABEL = {"bert": "BERT-base", "gpt2_prefill": "GPT-2 prefill", "gpt2_decode": "GPT-2 decode (per token)",
         "vit": "ViT-B/16", "resnet50": "ResNet-50"}


def panels(rows):
    """[(title, [rows by batch])] in the order the rows came."""
    out = {}
    for r in rows:
        title = LABEL.get(r["graph"], r["graph"])
        if r["graph"] == "gpt2_decode":
            title += ", past %d" % r["past"]
        elif r.get("seq"):
            title += ", S=%d" % r["seq"]
        out.setdefault(title, []).append(r)
    return list(out.items())


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("results", help="results.json from run.py")
    ap.add_argument("--out", help="PNG path (default: beside the JSON, results.png)")
    a = ap.parse_args()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("plot.py: matplotlib is not installed; no chart (results.md has the numbers)")
        return 0
    with open(a.results) as f:
        res = json.load(f)
    groups = panels(res["rows"])
    if not groups:
        print("plot.py: no rows in %s" % a.results)
        return 0
    cols = min(3, len(groups))
    nrows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(5.2 * cols, 3.8 * nrows), squeeze=False)
    width = 0.8 / len(SERIES)
    for ax, (title, rows) in zip(axes.flat, groups):
        for k, (key, name, color) in enumerate(SERIES):
            xs = [i + (k - (len(SERIES) - 1) / 2) * width for i in range(len(rows))]
            ys = [r.get(key) or 0.0 for r in rows]
            bars = ax.bar(xs, ys, width, label=name, color=color)
            for b, r in zip(bars, rows):
                if r.get(key) is None:  # not measured: mark it instead of drawing a zero-height bar
                    ax.text(b.get_x() + b.get_width() / 2, 0, "n/a", ha="center", va="bottom",
                            fontsize=6, rotation=90)
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(["batch %d" % r["batch"] for r in rows])
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("ms")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=8)
    env = res.get("env", {})
    fig.suptitle("kiln CUDA provider vs PyTorch, float16 (%s, torch %s)" % (env.get("device"), env.get("torch")),
                 fontsize=11)
    fig.tight_layout()
    out = a.out or os.path.join(os.path.dirname(os.path.abspath(a.results)), "results.png")
    fig.savefig(out, dpi=120)
    print("wrote " + out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
