#!/usr/bin/env python3
"""Plots kiln/ORT of bench/cpu_scaling.py's JSON files side by side (one panel per file), one bar per
(model, batch) at each thread count; the line at 1.0 is parity.

  python3 bench/plot_cpu_scaling.py OUT.png before.json after.json [--labels before after]
"""
import argparse
import json

import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("files", nargs="+")
    ap.add_argument("--labels", nargs="*")
    a = ap.parse_args()
    labels = a.labels or a.files
    fig, axes = plt.subplots(1, len(a.files), figsize=(7 * len(a.files), 4), sharey=True, squeeze=False)
    for ax, path, label in zip(axes[0], a.files, labels):
        rows = [r for r in json.load(open(path))["rows"] if "ratio" in r]
        keys = sorted({(r["model"], r.get("batch", 1)) for r in rows}, key=lambda k: (k[0], k[1]))
        threads = sorted({r["threads"] for r in rows})
        w = 0.8 / len(threads)
        for i, t in enumerate(threads):
            ys = [next((r["ratio"] for r in rows if (r["model"], r.get("batch", 1)) == k and r["threads"] == t), 0)
                  for k in keys]
            ax.bar([x + i * w for x in range(len(keys))], ys, w, label="%d threads" % t)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_xticks([x + 0.4 - w / 2 for x in range(len(keys))])
        ax.set_xticklabels(["%s b%d" % k for k in keys], rotation=30, ha="right")
        ax.set_title(label)
        ax.set_ylabel("kiln / onnxruntime median latency")
        ax.legend()
    fig.tight_layout()
    fig.savefig(a.out, dpi=110)


if __name__ == "__main__":
    main()
