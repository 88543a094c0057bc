"""The attention family on kiln's CUDA provider (src/cuda/ops/attention.c, attention_rotary.c):
com.microsoft MultiHeadAttention, PackedMultiHeadAttention, Attention and RotaryEmbedding, and ONNX
RotaryEmbedding, each run on CUDA and on the CPU provider (cuda_diff.check) with fresh random
inputs. The forms the GPU kernels have no form for must be placed on the CPU (expect_cuda=False).

Values are kept O(1) (projection weights ~ 1/sqrt(D_in)) so that the score rounding of float16 /
bfloat16 stays within cuda_diff's tolerances. Skips where the CUDA provider does not run."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_diff import BF16, F16, F32, check, rand  # noqa: E402

MS = "com.microsoft"
HALF = [F16, BF16]


def i32(x):
    return np.asarray(x, np.int32)


def i64(x):
    return np.asarray(x, np.int64)


def mha(inputs, n_outputs=1, **attrs):
    """MultiHeadAttention inputs in order: q, k, v, bias, mask, rpb, past_k, past_v."""
    names = ["q", "k", "v", "bias", "mask", "rpb", "past_k", "past_v"]
    ins = [(n, x) for n, x in zip(names, inputs)]
    while ins and ins[-1][1] is None:
        ins.pop()
    return ins, dict(num_heads=attrs.pop("N"), **attrs), n_outputs


def run_mha(inputs, n_outputs=1, expect_cuda=True, **attrs):
    ins, a, n = mha(inputs, n_outputs, **attrs)
    return check("MultiHeadAttention", ins, attrs=a, domain=MS, n_outputs=n, expect_cuda=expect_cuda)


# ---------------------------------------------------------------- MultiHeadAttention

def mha_inputs(fmt, dt, B, S, L, N, H, Hv=None):
    Hv = Hv or H
    D, Dv = N * H, N * Hv
    if fmt == "q_k_v":
        return [rand((B, S, D), dt), rand((B, L, D), dt), rand((B, L, Dv), dt)]
    if fmt == "q_kv":
        return [rand((B, S, D), dt), rand((B, L, N, 2, H), dt), None]
    if fmt == "qkv":
        return [rand((B, S, N, 3, H), dt), None, None]
    return [rand((B, S, D), dt), rand((B, N, L, H), dt), rand((B, N, L, Hv), dt)]  # cached BNSH


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("fmt", ["q_k_v", "q_kv", "qkv", "cached"])
@pytest.mark.parametrize("B,S,L,N,H", [(2, 64, 64, 4, 64), (1, 33, 47, 3, 32), (2, 5, 130, 2, 128),
                                       (3, 17, 17, 2, 40)])
def test_mha_formats(dt, fmt, B, S, L, N, H):
    if fmt == "qkv":
        L = S
    run_mha(mha_inputs(fmt, dt, B, S, L, N, H), N=N)


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("fmt", ["q_k_v", "qkv", "cached"])
def test_mha_bias_and_present(dt, fmt):
    B, S, L, N, H = 2, 24, 24 if fmt == "qkv" else 40, 4, 64
    ins = mha_inputs(fmt, dt, B, S, L, N, H) + [rand((3 * N * H,), dt)]
    run_mha(ins, n_outputs=3, N=N)


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("mask", ["B", "3B+2"])
@pytest.mark.parametrize("fmt", ["q_k_v", "q_kv"])
def test_mha_key_lengths(dt, mask, fmt):
    B, S, L, N, H = 3, 20, 50, 2, 64
    lens = [50, 17, 0]  # 0: an additive mask over every key masks nothing
    m = i32(lens) if mask == "B" else i32(lens + [0] * (2 * B + 2))
    run_mha(mha_inputs(fmt, dt, B, S, L, N, H) + [None, m], N=N)


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("S", [1, 7])
@pytest.mark.parametrize("uni", [0, 1])
def test_mha_past_present(dt, S, uni):
    B, P, N, H = 2, 37, 4, 64
    ins = mha_inputs("q_k_v", dt, B, S, S, N, H) + [rand((3 * N * H,), dt), i32([P + S, P - 5]), None,
                                                    rand((B, N, P, H), dt), rand((B, N, P, H), dt)]
    run_mha(ins, n_outputs=3, N=N, unidirectional=uni)


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("H,P", [(64, 1023), (128, 8191), (256, 4000), (128, 32767)])
def test_mha_decode_long_cache(dt, H, P):
    """One new token against a long KV cache with per-batch key lengths (the key padding mask):
    the split-KV decode kernel, whose partial results sit in the workspace in front of this
    node's biased Q/K/V scratch."""
    B, S, N = 3, 1, 4
    T = P + S
    lens = i32([T, T // 3, 0])  # 0: an additive mask over every key masks nothing
    ins = mha_inputs("q_k_v", dt, B, S, S, N, H) + [rand((3 * N * H,), dt), lens, None,
                                                    rand((B, N, P, H), dt), rand((B, N, P, H), dt)]
    run_mha(ins, n_outputs=3, N=N)


def test_mha_past_without_present_outputs():
    B, S, P, N, H = 2, 3, 9, 2, 32
    ins = mha_inputs("q_k_v", F16, B, S, S, N, H) + [None, None, None, rand((B, N, P, H), F16),
                                                     rand((B, N, P, H), F16)]
    run_mha(ins, n_outputs=1, N=N)


@pytest.mark.parametrize("dt", HALF)
def test_mha_unidirectional_self(dt):
    run_mha(mha_inputs("qkv", dt, 2, 77, 77, 4, 64), N=4, unidirectional=1)
    run_mha(mha_inputs("q_k_v", dt, 2, 64, 64, 2, 128), N=2, unidirectional=1, scale=0.05)


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("b0", [1, 2])
def test_mha_relative_position_bias(dt, b0):  # flash with an additive bias
    B, S, L, N, H = 2, 48, 56, 4, 64
    run_mha(mha_inputs("q_k_v", dt, B, S, L, N, H) + [None, None, rand((b0, N, S, L), dt)], N=N)


@pytest.mark.parametrize("dt", HALF)
def test_mha_bias_rpb_past(dt):  # additive bias behind this node's own scratch (biased Q/K/V)
    B, S, P, N, H = 2, 16, 20, 2, 64
    ins = mha_inputs("q_k_v", dt, B, S, S, N, H) + [rand((3 * N * H,), dt), i32([P + S, 9]),
                                                    rand((1, N, S, P + S), dt), rand((B, N, P, H), dt),
                                                    rand((B, N, P, H), dt)]
    run_mha(ins, n_outputs=3, N=N)


@pytest.mark.parametrize("dt", HALF)
def test_mha_unfused_head_sizes(dt):
    run_mha(mha_inputs("q_k_v", dt, 2, 19, 23, 3, 12), N=3)           # H not a multiple of 8
    run_mha(mha_inputs("q_k_v", dt, 2, 19, 23, 2, 32, Hv=24), N=2)    # H_v != H
    run_mha(mha_inputs("cached", dt, 1, 9, 300, 2, 264), N=2)        # H > 256


def test_mha_large():
    B, S, N, H = 4, 1024, 8, 64  # 2M elements per tensor
    run_mha(mha_inputs("q_k_v", F16, B, S, S, N, H) + [rand((3 * N * H,), F16)], N=N)


def test_mha_empty_batch():
    run_mha(mha_inputs("q_k_v", F16, 0, 5, 5, 2, 16), N=2)


def test_mha_rejects():
    B, S, L, N, H = 2, 8, 12, 2, 32
    run_mha(mha_inputs("q_k_v", F32, B, S, L, N, H), N=N, expect_cuda=False)
    ins = mha_inputs("q_k_v", F16, B, S, L, N, H)
    run_mha(ins + [None, i32(np.arange(B * L).reshape(B, L) % 3 > 0)], N=N, expect_cuda=False)  # (B, L)
    run_mha(ins + [None, i32(np.arange(B * S * L).reshape(B, S, L) % 4 > 0)], N=N, expect_cuda=False)
    run_mha(ins, N=N, unidirectional=1, expect_cuda=False)  # causal cross-attention, L != S


# ---------------------------------------------------------------- PackedMultiHeadAttention

def packing(lens, S):
    B = len(lens)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    real = [b * S + s for b in range(B) for s in range(lens[b])]
    pad = [b * S + s for b in range(B) for s in range(lens[b], S)]
    return i32(real + pad).reshape(B, S), cu


def run_packed(fmt, dt, lens, S, N, H, bias=False, rpb=False, expect_cuda=True):
    tok, D = sum(lens), N * H
    offs, cu = packing(lens, S)
    if fmt == "qkv":
        ins = [("q", rand((tok, N, 3, H), dt)), ("k", None), ("v", None)]
    else:
        ins = [("q", rand((tok, D), dt)), ("k", rand((tok, D), dt)), ("v", rand((tok, D), dt))]
    ins += [("bias", rand((3 * D,), dt) if bias else None), ("offs", offs), ("cu", cu)]
    if rpb:
        ins.append(("rpb", rand((1, N, S, S), dt)))
    return check("PackedMultiHeadAttention", ins, attrs={"num_heads": N}, domain=MS, expect_cuda=expect_cuda)


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("fmt", ["q_k_v", "qkv"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("lens,S,N,H", [([5, 17, 32], 32, 4, 64), ([1, 130, 0, 64], 130, 2, 128),
                                        ([7, 3], 8, 3, 16)])
def test_packed_mha(dt, fmt, bias, lens, S, N, H):
    run_packed(fmt, dt, lens, S, N, H, bias=bias)


def test_packed_mha_large():
    run_packed("q_k_v", F16, [1024, 700, 1024, 333], 1024, 8, 64, bias=True)


def test_packed_mha_rejects():
    run_packed("q_k_v", F32, [3, 5], 5, 2, 32, expect_cuda=False)
    run_packed("q_k_v", F16, [3, 5], 5, 2, 32, rpb=True, expect_cuda=False)  # unfused + varlen
    run_packed("q_k_v", F16, [3, 5], 5, 2, 12, expect_cuda=False)            # H % 8 != 0


# ---------------------------------------------------------------- Attention

def attention(dt, B, S, Di, N, H, Dv=None, mask=None, past=0, present=False, rpb=False, bias=True,
              const_w=True, expect_cuda=True, **attrs):
    D = N * H
    Dv = Dv or D
    lim = 1.0 / np.sqrt(Di)
    ins = [("x", rand((B, S, Di), dt)), ("w", rand((Di, 2 * D + Dv), dt, -lim, lim)),
           ("bias", rand((2 * D + Dv,), dt) if bias else None), ("mask", mask),
           ("past", rand((2, B, N, past, H), dt) if past else None),
           ("rpb", rand((B, N, S, past + S), dt) if rpb else None)]
    while ins[-1][1] is None:
        ins.pop()
    a = dict(num_heads=N, **attrs)
    if Dv != D:
        a["qkv_hidden_sizes"] = [D, D, Dv]
    return check("Attention", ins, attrs=a, domain=MS, n_outputs=2 if (past or present) else 1,
                 const_inputs=("w", "bias") if const_w else (), expect_cuda=expect_cuda)


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("B,S,Di,N,H", [(2, 64, 256, 4, 64), (1, 1, 64, 2, 32), (3, 45, 96, 3, 32),
                                        (2, 130, 128, 1, 128)])
def test_attention_plain(dt, B, S, Di, N, H):
    attention(dt, B, S, Di, N, H)


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("mask", ["B", "3B+2", "B1", "11"])
def test_attention_masks(dt, mask):
    B, S = 3, 40
    m = {"B": i32([40, 11, 0]), "3B+2": i32([40, 11, 1] + [0] * 8), "B1": i32([[1], [1], [1]]),
         "11": i32([[1]])}[mask]
    attention(dt, B, S, 128, 2, 64, mask=m)


@pytest.mark.parametrize("dt", HALF)
@pytest.mark.parametrize("S,P", [(1, 40), (6, 40), (33, 0)])
def test_attention_past_present_unidirectional(dt, S, P):
    attention(dt, 2, S, 128, 4, 32, mask=i32([P + S, P + 1]), past=P, present=True, unidirectional=1)


@pytest.mark.parametrize("dt", HALF)
def test_attention_variants(dt):
    attention(dt, 2, 32, 64, 2, 32, rpb=True)                  # additive bias (a flash kernel)
    attention(dt, 2, 32, 64, 2, 32, Dv=48)                     # unfused: H_v != H
    attention(dt, 2, 32, 64, 2, 32, bias=False, const_w=False, scale=0.3)
    attention(dt, 2, 20, 64, 2, 32, present=True)              # present without past


def test_attention_large():
    attention(F16, 4, 512, 512, 8, 64, mask=i32([512, 100, 1, 512]), unidirectional=1)  # x: 1M elements


def test_attention_rejects():
    attention(F32, 2, 8, 64, 2, 32, expect_cuda=False)
    attention(F16, 2, 8, 64, 2, 32, mask=i32([8, 5, 0, 2]), expect_cuda=False)                # (2B)
    attention(F16, 2, 8, 64, 2, 32, mask=i32(np.ones((2, 8))), expect_cuda=False)             # (B, T)
    attention(F16, 2, 8, 64, 2, 32, mask=i32(np.ones((2, 8, 8))), expect_cuda=False)          # (B, S, T)
    attention(F16, 2, 8, 64, 2, 32, mask=i32(np.tril(np.ones((2, 1, 8, 8)))), expect_cuda=False)  # 4-D


def test_attention_rejects_shared_buffer():
    B, S, N, H, M = 2, 3, 2, 32, 16
    ins = [("x", rand((B, S, 64), F16)), ("w", rand((64, 3 * N * H), F16, -0.125, 0.125)),
           ("bias", rand((3 * N * H,), F16)), ("mask", None), ("past", rand((2, B, N, M, H), F16)),
           ("rpb", None), ("past_len", i32([5]))]
    check("Attention", ins, attrs=dict(num_heads=N, past_present_share_buffer=1), domain=MS, n_outputs=2,
          expect_cuda=False)


# ---------------------------------------------------------------- RotaryEmbedding

def ms_rotary(dt, x_shape, pos, max_pos, half, expect_cuda=True, **attrs):
    ins = [("x", rand(x_shape, dt)), ("pos", pos), ("cos", rand((max_pos, half), dt)),
           ("sin", rand((max_pos, half), dt))]
    return check("RotaryEmbedding", ins, attrs=attrs, domain=MS, expect_cuda=expect_cuda)


@pytest.mark.parametrize("dt", [F32, F16, BF16])
@pytest.mark.parametrize("layout", ["bsd", "bnsh"])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("pos_kind", ["base", "bs"])
def test_ms_rotary(dt, layout, interleaved, pos_kind):
    B, N, S, H, M = 2, 3, 7, 64, 32
    shape = (B, S, N * H) if layout == "bsd" else (B, N, S, H)
    pos = i64([5]) if pos_kind == "base" else np.random.default_rng(1).integers(0, M, (B, S)).astype(np.int64)
    ms_rotary(dt, shape, pos, M, H // 2, interleaved=interleaved, num_heads=N)


@pytest.mark.parametrize("dt", HALF)
def test_ms_rotary_variants(dt):
    rng = np.random.default_rng(2)
    ms_rotary(dt, (2, 5, 4 * 24), i64([0]), 8, 12)                                   # no num_heads: H = 2·half
    ms_rotary(dt, (2, 5, 3 * 40), rng.integers(0, 9, (2, 5)).astype(np.int64), 9, 8,
              num_heads=3, rotary_embedding_dim=16, interleaved=1)                   # partial rotation
    ms_rotary(dt, (1, 2, 3, 6), i64([2]), 8, 3)                                      # odd pair count


def test_ms_rotary_large_and_empty():
    ms_rotary(F16, (2, 1024, 32 * 128), i64([7]), 2048, 64, num_heads=32)  # 8M elements
    ms_rotary(F16, (2, 0, 4 * 16), i64([0]), 8, 8, num_heads=4)


@pytest.mark.parametrize("dt", [F32, F16, BF16])
@pytest.mark.parametrize("with_pos", [False, True])
@pytest.mark.parametrize("interleaved", [0, 1])
def test_onnx_rotary(dt, with_pos, interleaved):
    B, N, S, H, M = 2, 4, 6, 32, 16
    if with_pos:
        caches = [("cos", rand((M, H // 2), dt)), ("sin", rand((M, H // 2), dt)),
                  ("pos", np.random.default_rng(3).integers(0, M, (B, S)).astype(np.int64))]
    else:
        caches = [("cos", rand((B, S, H // 2), dt)), ("sin", rand((B, S, H // 2), dt))]
    check("RotaryEmbedding", [("x", rand((B, N, S, H), dt))] + caches, attrs=dict(interleaved=interleaved),
          opset=23)


@pytest.mark.parametrize("dt", HALF)
def test_onnx_rotary_3d_partial(dt):
    B, N, S, H, rd = 2, 4, 6, 32, 16
    caches = [("cos", rand((B, S, rd // 2), dt)), ("sin", rand((B, S, rd // 2), dt))]
    check("RotaryEmbedding", [("x", rand((B, S, N * H), dt))] + caches,
          attrs=dict(num_heads=N, rotary_embedding_dim=rd), opset=23)
