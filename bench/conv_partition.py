#!/usr/bin/env python3
"""How kiln cuts each convolution of a model into parallel work items for a given thread count.

Runs the model once per batch size with KILN_DEBUG_PARTITION=1 (each convolution prints its cut:
items, item sizes, and the share of the threads' time the pool's schedule keeps busy, replayed
from the item sizes) and writes a markdown table. No timing: the thread count may exceed the
cores (the 16-thread cut is what a 16-core machine runs).

  python3 bench/conv_partition.py --model /tmp/gpu_models/resnet50.fp32.onnx --threads 16 \\
      --batches 1 8 --out bench/results/conv_partition.md
"""
import argparse
import collections
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def child(model, batch, threads):
    import numpy as np
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import kiln
    s = kiln.InferenceSession(model, threads=threads)
    inp = s.get_inputs()[0]
    shape = [batch if not isinstance(d, int) or d <= 0 else d for d in inp.shape]
    shape[0] = batch
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    sys.stderr.write("kiln-partition-run-begin\n")
    sys.stderr.flush()
    s.run(None, {inp.name: x})


def collect(model, batch, threads):
    env = dict(os.environ, KILN_DEBUG_PARTITION="1")
    r = subprocess.run([sys.executable, __file__, "--child", model, str(batch), str(threads)],
                       env=env, capture_output=True, text=True)
    if r.returncode:
        sys.exit(r.stderr)
    err = r.stderr.split("kiln-partition-run-begin", 1)[-1]
    rows = []
    for line in err.splitlines():
        if line.startswith("kiln-partition "):
            rows.append(dict(kv.split("=", 1) for kv in line.split()[1:]))
    return rows


def table(rows, batch):
    groups = collections.OrderedDict()
    for r in rows:
        key = (r["path"], r["C"], r["in"], r["M"], r["out"], r["k"], r["group"])
        groups.setdefault(key, []).append(r)
    out = [f"\n### batch {batch}\n",
           "| conv (C in -> M out, kernel s stride) | count | path | items | per thread | item MMAC min-max | balance | inputs packed (x) |",
           "|---|---|---|---|---|---|---|---|"]
    work = busy = 0.0
    for (path, C, sin, M, sout, k, grp), rs in groups.items():
        r = rs[0]
        g = "" if grp == "1" else f" g{grp}"
        out.append(f"| {C}x{sin} -> {M}x{sout}, {k}{g} | {len(rs)} | {path} | {r['items']} | "
                   f"{r['per_thread']} | {float(r['item_mmac_min']):.2f}-{float(r['item_mmac_max']):.2f} | "
                   f"{float(r['balance']):.2f} | {r.get('repack', '?')} |")
        # the convolution's multiply-adds, from its shape
        kk = 1
        for t in re.findall(r"(\d+)s\d+", k):
            kk *= int(t)
        o = 1
        for t in sout.split("x"):
            o *= int(t)
        macs = float(r["N"]) * int(M) * int(C) // int(grp) * kk * o * len(rs)
        work += macs
        busy += macs / max(float(r["balance"]), 1e-9)
    out.append(f"\nWork-weighted balance over all convolutions: **{work / busy:.3f}** "
               f"(1.0: every thread busy until the last item ends).\n")
    return out


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--out", default=None)
    ap.add_argument("--title", default=None)
    a = ap.parse_args()
    lines = [f"## {a.title or os.path.basename(a.model)}: {a.threads} threads\n",
             "balance: the threads' mean busy time over the busiest thread's, replaying the pool's "
             "schedule (chunks in index order to the first free thread) with each item's "
             "multiply-adds as the kernels run them (rows in 4s, columns in 32s). inputs packed: "
             "how many times over the items pack (im2col or copy) the inputs; 1 = once.\n"]
    for b in a.batches:
        lines += table(collect(a.model, b, a.threads), b)
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "a") as f:
            f.write(text)
    print(text)


if __name__ == "__main__":
    main()
