#!/usr/bin/env python3
"""Draws the attention sweep's shapes (issue 13) with a fixed seed and writes them as CSV.

  python3 bench/attention/sweep_shapes.py [--seed 13] [--out bench/attention/sweep_shapes.csv]

Axes: query and key lengths separately (cross-attention Sq != Skv), query and KV head counts
(GQA / MQA ratios 1, 4, 8), head sizes 64/80/96/128/192/256, causal, padding (per-batch key
lengths), and decoding (Sq = 1 against a KV cache of 1k..128k, batch 1..64) plus short
speculative-decoding queries (Sq = 2..4). Columns:

  id,kind,B,Sq,Skv,Nq,Nkv,H,causal,kv_layout,lens

kind: decode | spec | prefill | cross. kv_layout: bnsh (a KV cache, (B, Nkv, Skv, H), as
MultiHeadAttention's present and the 4-D Attention inputs hold it) or bsnh ((B, Skv, Nkv, H), the
3-D projection output). Q and the output are always (B, Sq, Nq, H). lens: per-batch key lengths
joined by ':' (empty: no padding). Causal is aligned bottom-right (query s sees keys
j <= s + Skv - Sq), which is what the kernels and the KV-cache operators do.

The file is committed; the kiln harness and the peer script both read it, so they time the same
problems. Regenerate only to change the sweep (same seed, same file).
"""
import argparse
import random

HEADS = [64, 80, 96, 128, 192, 256]
KV_CAP = 4 << 30  # bytes of K+V per shape, so every shape fits next to the peers' copies


def kv_bytes(B, Skv, Nkv, H):
    return B * Skv * Nkv * H * 2 * 2


def lens_for(rng, B, Skv):
    return [rng.randint(max(1, Skv // 4), Skv) for _ in range(B)]


def draw(seed):
    rng = random.Random(seed)
    rows = []

    def add(kind, B, Sq, Skv, Nq, Nkv, H, causal, pad):
        layout = "bnsh" if kind in ("decode", "spec") else "bsnh"
        lens = lens_for(rng, B, Skv) if pad else []
        rows.append(dict(kind=kind, B=B, Sq=Sq, Skv=Skv, Nq=Nq, Nkv=Nkv, H=H, causal=int(causal),
                         kv_layout=layout, lens=":".join(map(str, lens))))

    # Decode: one query token per sequence against a long cache.
    skvs = [1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072]
    batches = [1, 2, 4, 8, 16, 32, 64]
    for i in range(26):
        H = HEADS[i % len(HEADS)] if i < 12 else rng.choice([64, 128, 128, 128, 256])
        ratio = [1, 4, 8][i % 3]
        Nq = rng.choice([8, 16, 32, 32, 64]) if H <= 128 else rng.choice([8, 16, 32])
        Nq = max(Nq, ratio)
        Skv = skvs[i % len(skvs)] if i < 16 else rng.choice(skvs)
        B = rng.choice(batches)
        while kv_bytes(B, Skv, Nq // ratio, H) > KV_CAP:
            if B > 1:
                B //= 2
            else:
                Skv //= 2
        add("decode", B, 1, Skv, Nq, Nq // ratio, H, False, i % 4 == 1)
    # Speculative decoding: a few query tokens, causal within them.
    for i in range(5):
        ratio = [1, 4, 8, 4, 8][i]
        Skv = rng.choice([2048, 8192, 32768])
        H = rng.choice([64, 128, 128, 256])
        Nq = 32
        B = rng.choice([1, 4, 16])
        add("spec", B, [2, 3, 4, 4, 2][i], Skv, Nq, Nq // ratio, H, True, i == 3)
    # Prefill / self-attention: Sq = Skv, causal mostly, GQA.
    for i in range(14):
        S = rng.choice([512, 1024, 2048, 4096, 8192])
        B = max(1, 16384 // S // rng.choice([1, 2, 4]))
        H = HEADS[i % len(HEADS)]
        ratio = [1, 4, 8, 1][i % 4]
        Nq = max(ratio, 2048 // H // 8 * 8 or 8) if H != 80 else 32
        Nq = Nq // ratio * ratio
        add("prefill", B, S, S, Nq, Nq // ratio, H, i % 3 != 2, i % 5 == 4)
    # Cross-attention: query and key lengths differ (text encoders, speech, retrieval).
    pairs = [(1024, 77), (4096, 77), (256, 1500), (448, 1500), (2048, 4096), (4096, 1024),
             (128, 8192), (512, 16384), (1500, 1500 * 2), (64, 4096)]
    for i, (Sq, Skv) in enumerate(pairs):
        H = HEADS[(i + 2) % len(HEADS)]
        ratio = [1, 1, 4, 8][i % 4]
        Nq = 16 if H <= 128 else 8
        Nq = max(Nq // ratio * ratio, ratio)
        B = max(1, 8192 // Sq)
        add("cross", B, Sq, Skv, Nq, Nq // ratio, H, False, i % 3 == 1)
    for i, r in enumerate(rows):
        r["id"] = i
    return rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, default=13)
    ap.add_argument("--out", default="bench/attention/sweep_shapes.csv")
    a = ap.parse_args()
    rows = draw(a.seed)
    cols = ["id", "kind", "B", "Sq", "Skv", "Nq", "Nkv", "H", "causal", "kv_layout", "lens"]
    with open(a.out, "w") as f:
        f.write(f"# seed {a.seed}; see sweep_shapes.py\n")
        f.write(",".join(cols) + "\n")
        for r in rows:
            f.write(",".join(str(r[c]) for c in cols) + "\n")
    kinds = {}
    for r in rows:
        kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
    print(f"{len(rows)} shapes -> {a.out}: {kinds}")


if __name__ == "__main__":
    main()
