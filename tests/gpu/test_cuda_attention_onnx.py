"""ai.onnx Attention (opset 23), the op kiln's attention fusion writes, on the CUDA provider
against the CPU provider: 3-D and 4-D inputs, grouped K/V heads, additive masks broadcast over
batch/heads/rows, is_causal, scale; and what stays on the CPU."""

import numpy as np
import pytest

from cuda_diff import BF16, F16, F32, check, rand

CASES = [  # B, S, T, Nq, Nkv, H
    (1, 16, 16, 2, 2, 64), (2, 128, 128, 12, 12, 64), (3, 37, 53, 4, 2, 32), (1, 200, 200, 8, 1, 128),
    (2, 7, 300, 4, 4, 80),
]


@pytest.mark.parametrize("dt", [F16, BF16], ids=["f16", "bf16"])
@pytest.mark.parametrize("B,S,T,Nq,Nkv,H", CASES)
def test_attention_3d(dt, B, S, T, Nq, Nkv, H):
    q, k, v = rand((B, S, Nq * H), dt), rand((B, T, Nkv * H), dt), rand((B, T, Nkv * H), dt)
    check("Attention", [("q", q), ("k", k), ("v", v)], {"q_num_heads": Nq, "kv_num_heads": Nkv}, opset=23)


@pytest.mark.parametrize("dt", [F16, BF16], ids=["f16", "bf16"])
@pytest.mark.parametrize("ratio", [1, 4, 8])
@pytest.mark.parametrize("H,T", [(64, 1000), (128, 5000), (256, 2049), (128, 32768)])
def test_attention_decode_gqa(dt, ratio, H, T):
    """Decoding with grouped K/V heads: one query row per head against a long cache, 4-D inputs
    (the split-KV decode kernel; the query heads sharing a KV head read it once)."""
    B, Nkv = 2, 2
    Nq = Nkv * ratio
    q, k, v = rand((B, Nq, 1, H), dt), rand((B, Nkv, T, H), dt), rand((B, Nkv, T, H), dt)
    check("Attention", [("q", q), ("k", k), ("v", v)], {}, opset=23)


@pytest.mark.parametrize("mask_shape", ["b11t", "11st", "bnst", "st"])
def test_attention_additive_mask(mask_shape):
    B, S, T, N, H = 2, 24, 40, 4, 32
    q, k, v = rand((B, N, S, H), F16), rand((B, N, T, H), F16), rand((B, N, T, H), F16)
    shape = {"b11t": (B, 1, 1, T), "11st": (1, 1, S, T), "bnst": (B, N, S, T), "st": (S, T)}[mask_shape]
    m = rand(shape, F16, -4.0, 1.0)
    check("Attention", [("q", q), ("k", k), ("v", v), ("m", m)], {}, opset=23)


@pytest.mark.parametrize("dt", [F16, BF16], ids=["f16", "bf16"])
@pytest.mark.parametrize("B,S,H,pad", [(2, 128, 64, -10000.0), (3, 77, 64, "min"), (2, 200, 128, -10000.0),
                                       (1, 33, 32, "min")])
def test_attention_padding_mask(dt, B, S, H, pad):
    """BERT's padding mask, (B, 1, 1, T) with 0 for kept keys and a large negative value for padded
    ones (-10000 or the type's lowest, as exporters write it), on 3-D inputs: the flash kernel adds
    it to the scores. Each batch row keeps a different number of keys, at least one."""
    N = 4
    q, k, v = rand((B, S, N * H), dt), rand((B, S, N * H), dt), rand((B, S, N * H), dt)
    low = float(np.finfo(np.float16).min) if pad == "min" else pad
    keep = np.random.default_rng(B * S).integers(1, S + 1, B)
    m = np.where(np.arange(S)[None, :] < keep[:, None], 0.0, low).reshape(B, 1, 1, S)
    check("Attention", [("q", q), ("k", k), ("v", v), ("m", m.astype(q.dtype) if dt == F16 else type(q)(m))],
          {"q_num_heads": N, "kv_num_heads": N}, opset=23)


@pytest.mark.parametrize("S", [1, 64, 129])
def test_attention_causal_and_scale(S):
    q, k, v = rand((2, S, 4 * 64), F16), rand((2, S, 4 * 64), F16), rand((2, S, 4 * 64), F16)
    check("Attention", [("q", q), ("k", k), ("v", v)],
          {"q_num_heads": 4, "kv_num_heads": 4, "is_causal": 1, "scale": 0.3}, opset=23)


def test_attention_float32_stays_on_cpu():
    q = rand((1, 8, 64), F32)
    check("Attention", [("q", q), ("k", q), ("v", q)], {"q_num_heads": 2, "kv_num_heads": 2}, opset=23,
          expect_cuda=False)


def test_attention_bool_mask_stays_on_cpu():
    q = rand((1, 2, 8, 32), F16)
    m = rand((1, 1, 8, 8), 9)  # bool
    check("Attention", [("q", q), ("k", q), ("v", q), ("m", m)], {}, opset=23, expect_cuda=False)
