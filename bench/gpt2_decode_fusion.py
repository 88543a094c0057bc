#!/usr/bin/env python3
"""GPT-2 decoding with a KV cache on the CPU, with and without the attention fusion (kiln opt_level
2 against 1, same process, alternating, minimum of ROUNDS rounds of RUNS steps), next to
onnxruntime; the fused outputs are checked against onnxruntime at several batch/past sizes first.

  python3 bench/gpu_models/export.py --out /tmp/gpu_models --precisions fp32 --models gpt2 --no-check
  KILN_LIBRARY=build-cpu/libkiln.so python3 bench/gpt2_decode_fusion.py /tmp/gpu_models/gpt2_decode.fp32.onnx
"""
import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "python"))
import kiln  # noqa: E402


def feeds(rng, B, S, P, layers=12, heads=12, hd=64):
    f = {"input_ids": rng.integers(0, 50000, (B, S)).astype(np.int64)}
    for i in range(layers):
        for k in ("key", "value"):
            f[f"past.{i}.{k}"] = (rng.standard_normal((B, heads, P, hd)) * 0.5).astype(np.float32)
    return f


def best_ms(run, rounds, runs):
    best = float("inf")
    for _ in range(rounds):
        run()
        t = time.perf_counter()
        for _ in range(runs):
            run()
        best = min(best, (time.perf_counter() - t) / runs * 1e3)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--past", type=int, nargs="*", default=[64, 512])
    ap.add_argument("--rounds", type=int, default=6)
    ap.add_argument("--runs", type=int, default=5)
    a = ap.parse_args()
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    ref = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    fused = kiln.InferenceSession(a.model, threads=a.threads, opt_level=2)
    plain = kiln.InferenceSession(a.model, threads=a.threads, opt_level=1)
    n_attn = [n["op_type"] for n in fused.nodes()].count("Attention")
    print(f"fused Attention nodes: {n_attn}")
    rng = np.random.default_rng(0)
    worst = 0.0
    for B, S, P in [(1, 1, 16), (2, 1, 37), (1, 3, 8), (3, 2, 0), (1, 1, 200)]:
        f = feeds(rng, B, S, P)
        got, want = fused.run(None, f), ref.run(None, f)
        err = max(float(np.max(np.abs(g - w))) for g, w in zip(got, want))
        worst = max(worst, err)
        print(f"check B={B} S={S} past={P}: max |kiln - onnxruntime| {err:.2e}")
    assert worst < 1e-4, worst
    print(f"\n| past | kiln unfused ms | kiln fused ms | onnxruntime ms | fused / unfused |")
    print("|---|---|---|---|---|")
    for P in a.past:
        f = feeds(rng, 1, 1, P)
        t = {}
        for _ in range(2):  # alternate the three, twice
            for name, s in (("plain", plain), ("fused", fused), ("ort", ref)):
                m = best_ms(lambda: s.run(None, f), a.rounds // 2, a.runs)
                t[name] = min(t.get(name, m), m)
        print(f"| {P} | {t['plain']:.2f} | {t['fused']:.2f} | {t['ort']:.2f} | {t['fused'] / t['plain']:.2f} |")


if __name__ == "__main__":
    main()
