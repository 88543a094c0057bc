#!/usr/bin/env python3
"""Writes the shapes bench/attention/hd_tiles.sh times the head size 96/192/256 tiles on (issue 13),
in sweep_shapes.csv's columns (bench_sweep and sweep_peers.py read both):

  python3 bench/attention/hd_tiles_shapes.py [--out bench/attention/hd_tiles_shapes.csv]

A grid, not a draw, so the table can be read along one axis at a time. Per head size 96, 192 and
256: self-attention S = T in {512, 2k, 8k, 16k}, causal and not; at 512 and 2k the (batch, head)
pairs both below the 132 SMs of an H100 and above (at 8k and 16k even B = 1 gives more tiles
than SMs); cross-attention (Sq < Skv, and causal bottom-right, the chunked-prefill case); grouped
K/V heads; per-batch key lengths (padding). Head size 112 runs the 128 tiles (kiln_cuda_pad_head):
a few of the same rows show what that costs next to the peers. Work per row is kept to a few
TFLOP so each tile's timing takes well under a second.
"""
import argparse
import random

COLS = "id,kind,B,Sq,Skv,Nq,Nkv,H,causal,kv_layout,lens"


def grid():
    rows = []  # (kind, B, Sq, Skv, Nq, Nkv, H, causal, lens)
    rng = random.Random(13)
    for H in (96, 192, 256):
        for S, small, large in ((512, (4, 16), (32, 16)), (2048, (2, 16), (16, 16))):
            for B, N in (small, large):
                for causal in (0, 1):
                    rows.append(("prefill", B, S, S, N, N, H, causal, []))
        for S, B, N in ((8192, 1, 16), (16384, 1, 8)):
            for causal in (0, 1):
                rows.append(("prefill", B, S, S, N, N, H, causal, []))
        rows.append(("cross", 4, 1024, 8192, 16, 16, H, 0, []))
        rows.append(("cross", 2, 2048, 8192, 16, 16, H, 1, []))
        rows.append(("prefill", 2, 4096, 4096, 32, 8, H, 1, []))
        rows.append(("prefill", 8, 2048, 2048, 16, 16, H, 0, [rng.randint(512, 2048) for _ in range(8)]))
    for B, S, N, causal in ((32, 512, 16, 0), (16, 2048, 16, 1), (1, 8192, 16, 0), (1, 16384, 8, 1)):
        rows.append(("prefill", B, S, S, N, N, 112, causal, []))
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/attention/hd_tiles_shapes.csv")
    a = ap.parse_args()
    with open(a.out, "w") as f:
        f.write("# bench/attention/hd_tiles_shapes.py (head size 96/192/256 tiles, issue 13)\n" + COLS + "\n")
        for i, (kind, B, Sq, Skv, Nq, Nkv, H, causal, lens) in enumerate(grid()):
            f.write(f"{i},{kind},{B},{Sq},{Skv},{Nq},{Nkv},{H},{causal},bsnh,{':'.join(map(str, lens))}\n")


if __name__ == "__main__":
    main()
