"""Plots bench_fp8's throughput rows (bench/attention/fp8.sh writes bench_fp8.csv): TFLOP/s of the
FP8 wgmma tile, the best FP8 mma.sync tile and kiln's fp16 kernel against the sequence length, one
panel per head size and mask. From the JSON lines (bench_fp8.jsonl) it also draws the named wgmma
variants given after the output file (e.g. the TMA default and the cp.async tile it replaced).

  python3 bench/attention/fp8_plot.py bench/results/attention/fp8_2026-12-06/bench_fp8.csv OUT.png
  python3 bench/attention/fp8_plot.py bench_fp8.jsonl OUT.png wgmma_tma_bn128_st2_pp1 wgmma_wg2_bn128_occ1
"""
import csv
import json
import sys


def rows(path):
    if path.endswith(".jsonl"):
        for line in open(path):
            r = json.loads(line)
            if r.get("kind") == "perf":
                each = dict(kv.split("=") for kv in r.get("fp8_wgmma_each", "").split("|") if "=" in kv)
                yield {**{k: str(v) for k, v in r.items()}, **{"each:" + k: v for k, v in each.items()}}
        return
    with open(path) as f:
        lines = [ln for ln in f if not ln.startswith("#")]
    head = None
    for r in csv.reader(lines):
        if r and r[0] == "perf" and r[1] == "B":
            head = r
        elif r and r[0] == "perf" and head:
            yield dict(zip(head, r))


def main():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    src, out, named = sys.argv[1], sys.argv[2], sys.argv[3:]
    data = list(rows(src))
    panels = sorted({(int(r["H"]), int(r["causal"])) for r in data})
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3.4), sharey=True)
    for ax, (h, c) in zip(axes, panels):
        rs = sorted((r for r in data if int(r["H"]) == h and int(r["causal"]) == c), key=lambda r: int(r["S"]))
        s = [int(r["S"]) for r in rs]
        mma = [max(float(r["fp8_tflops"]), float(r["fp8_alt_tflops"]), float(r["fp8_f16mma_tflops"])) for r in rs]
        ax.plot(s, [float(r["fp8_wgmma_tflops"]) for r in rs], "o-", label="kiln FP8 wgmma (best tile)")
        for i, v in enumerate(named):
            ax.plot(s, [float(r.get("each:" + v, "nan")) for r in rs], "x:" if i else "d-", label=v, ms=4)
        ax.plot(s, mma, "s--", label="kiln FP8 mma.sync (best)")
        ax.plot(s, [float(r["fp16_tflops"]) for r in rs], "^-", label="kiln fp16")
        ax.set_xscale("log", base=2)
        ax.set_title("H=%d %s" % (h, "causal" if c else "non-causal"), fontsize=9)
        ax.set_xlabel("sequence length")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("TFLOP/s")
    axes[0].legend(fontsize=7)
    first = open(src).readline()
    # bench_fp8's JSON lines carry no device name: the results folder names the run instead
    title = src.rsplit("/", 2)[-2] if first.startswith("{") and "/" in src else first.strip("# \n")
    fig.suptitle("FP8 (e4m3) attention forward, %s" % title, fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)


if __name__ == "__main__":
    main()
