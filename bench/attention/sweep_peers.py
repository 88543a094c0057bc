#!/usr/bin/env python3
"""PyTorch SDPA peers (cuDNN, FlashAttention-2) on the attention sweep's shapes (issue 13).

  python3 sweep_peers.py --shapes sweep_shapes.csv --dtype fp16 --json peers_fp16.jsonl
         [--backends cudnn,flash] [--budget-s 150] [--ids 1,2]

Same problems as bench_sweep: Q (B, Sq, Nq, H), K/V (B, Nkv, Skv, H) for a KV cache (kv_layout
bnsh) or (B, Skv, Nkv, H), handed to scaled_dot_product_attention as (B, N, S, H) views (no copy
timed). Grouped K/V heads: enable_gqa=True first; when the backend refuses that, K/V expanded to
Nq heads before timing (repeat_interleave; the copy is not timed) and the row says gqa "expanded".
Masks: causal with Sq == Skv -> is_causal; causal with Sq != Skv -> causal_lower_right (the
bottom-right diagonal kiln uses); padding (per-batch key lengths) -> a boolean attn_mask
(B, 1, Sq, Skv), combined with the causal diagonal when both apply. A backend that refuses a
shape is recorded with ms null and the reason, never a crash.

Timing: median_seconds, the method of ../shared/bench/sdpa_peers.py and bench_timing.h. One JSON
object per line: {"id", "dtype", "backend", "ms", "gqa", "why"}.
"""
import argparse
import json
import sys
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
            "efficient": SDPBackend.EFFICIENT_ATTENTION}
EXPAND_CAP = 24 << 30  # bytes of expanded K+V we allow ourselves next to the originals


def read_shapes(path):
    rows, cols = [], None
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
        rows.append(r)
    return rows


def median_seconds(fn, blocks=15, block_ms=2.0, warmup=10):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    a.record()
    fn()
    b.record()
    torch.cuda.synchronize()
    k = max(1, int(block_ms / max(a.elapsed_time(b), 1e-3)))
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(blocks)]
    for s, e in ev:
        s.record()
        for _ in range(k):
            fn()
        e.record()
    torch.cuda.synchronize()
    t = sorted(s.elapsed_time(e) for s, e in ev)
    return t[len(t) // 2] / k / 1e3


def make_inputs(r, dtype):
    B, Sq, T, Nq, Nkv, H = r["B"], r["Sq"], r["Skv"], r["Nq"], r["Nkv"], r["H"]
    g = lambda *s: torch.randn(*s, device="cuda", dtype=dtype)
    q = g(B, Sq, Nq, H).transpose(1, 2)
    if r["kv_layout"] == "bnsh":
        k, v = g(B, Nkv, T, H), g(B, Nkv, T, H)
    else:
        k, v = g(B, T, Nkv, H).transpose(1, 2), g(B, T, Nkv, H).transpose(1, 2)
    return q, k, v


def make_mask(r):
    """(attn_mask, is_causal) for the shape, in kiln's semantics."""
    B, Sq, T = r["B"], r["Sq"], r["Skv"]
    if r["lens"]:
        lens = torch.tensor(r["lens"], device="cuda").view(B, 1, 1, 1)
        j = torch.arange(T, device="cuda").view(1, 1, 1, T)
        m = j < lens  # (B, 1, 1, T), broadcast over heads and query rows
        if r["causal"]:
            s = torch.arange(Sq, device="cuda").view(1, 1, Sq, 1)
            m = (m & (j <= s + (T - Sq))).contiguous()
        return m, False
    if r["causal"] and Sq != T:
        from torch.nn.attention.bias import causal_lower_right
        return causal_lower_right(Sq, T), False
    return None, bool(r["causal"])


def why_of(e):
    s = str(e).strip().splitlines()
    s = " ".join(x.strip() for x in s if x.strip())
    return (type(e).__name__ + ": " + s)[:300]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--shapes", required=True)
    ap.add_argument("--dtype", default="fp16", choices=["fp16", "bf16"])
    ap.add_argument("--backends", default="cudnn,flash")
    ap.add_argument("--json", required=True)
    ap.add_argument("--budget-s", type=float, default=1e9, help="skip what is left after this many seconds")
    ap.add_argument("--ids", default="")
    a = ap.parse_args()
    dtype = torch.float16 if a.dtype == "fp16" else torch.bfloat16
    ids = {int(x) for x in a.ids.split(",") if x}
    t0 = time.time()
    out = open(a.json, "w")
    print(f"# torch {torch.__version__}, {torch.cuda.get_device_name()}, cudnn {torch.backends.cudnn.version()}, "
          f"{a.dtype}", flush=True)
    for r in read_shapes(a.shapes):
        if ids and r["id"] not in ids:
            continue
        over = time.time() - t0 > a.budget_s
        try:
            q, k, v = (None, None, None) if over else make_inputs(r, dtype)
            mask, is_causal = (None, False) if over else make_mask(r)
        except Exception as e:  # out of memory and the like: the shape is n/a for every backend
            q = None
            setup_err = why_of(e)
        ratio = r["Nq"] // r["Nkv"]
        for name in a.backends.split(","):
            rec = {"id": r["id"], "dtype": a.dtype, "backend": name, "ms": None, "gqa": None, "why": ""}
            if over:
                rec["why"] = "budget"
            elif q is None:
                rec["why"] = "setup: " + setup_err
            else:
                tries = [("native" if ratio == 1 else "enable_gqa", k, v)]
                if ratio > 1:
                    tries.append(("expanded", None, None))
                errs = []
                for mode, kk, vv in tries:
                    try:
                        if mode == "expanded":
                            if 2 * k.numel() * ratio * k.element_size() > EXPAND_CAP:
                                raise RuntimeError("expanded K/V would take more than 24 GiB")
                            kk = k.repeat_interleave(ratio, dim=1)
                            vv = v.repeat_interleave(ratio, dim=1)
                        kw = {"attn_mask": mask, "is_causal": is_causal}
                        if mode == "enable_gqa":
                            kw["enable_gqa"] = True
                        fn = lambda: F.scaled_dot_product_attention(q, kk, vv, **kw)
                        with sdpa_kernel([BACKENDS[name]]):
                            o = fn()
                            if not torch.isfinite(o).all():
                                raise RuntimeError("non-finite output")
                            rec["ms"] = round(median_seconds(fn) * 1e3, 6)
                        rec["gqa"] = mode
                        break
                    except Exception as e:
                        errs.append(f"{mode}: {why_of(e)}")
                    finally:
                        if mode == "expanded":
                            kk = vv = None
                            torch.cuda.empty_cache()
                if rec["ms"] is None:
                    rec["why"] = " | ".join(errs)
            out.write(json.dumps(rec) + "\n")
            out.flush()
            print(f"{r['id']:>3} {r['kind']:<7} {name:<6} "
                  f"{('%.4f ms' % rec['ms']) if rec['ms'] is not None else 'n/a'} {rec['gqa'] or ''} "
                  f"{rec['why'][:150]}", flush=True)
        q = k = v = mask = None
        torch.cuda.empty_cache()
    out.close()


if __name__ == "__main__":
    sys.exit(main())
