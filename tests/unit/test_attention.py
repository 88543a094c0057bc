"""Attention operators: com.microsoft Attention / MultiHeadAttention / PackedAttention /
PackedMultiHeadAttention / RotaryEmbedding and ONNX Attention / RotaryEmbedding.

Every case runs kiln on fresh random inputs and compares with the float64 numpy reference
(attention_ref.py, written from the spec) and, where onnxruntime's CPU provider implements the
case, with onnxruntime as well. Shapes include ones that span several query blocks and key tiles
of the tiled kernel, and runs at 1 and 2 threads."""
import os
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))
sys.path.insert(0, HERE)
import attention_ref as R  # noqa: E402
from util import kiln, node_model, rand, run_kiln, run_ort  # noqa: E402

MS = "com.microsoft"
REF_RTOL, REF_ATOL = 2e-4, 2e-5
ORT_RTOL, ORT_ATOL = 1e-4, 1e-5


def model(op, ins, outs, attrs, domain="", opset=23):
    ins = list(ins)
    while ins and ins[-1][0] == "":
        ins.pop()
    feeds = {n: a for n, a in ins if n}
    m = node_model(op, [(n, a if n else None) for n, a in ins], outs, attrs=attrs, domain=domain,
                   opset=opset)
    return m, feeds


def compare(m, feeds, ref, ort=True, threads=2, ref_atol=REF_ATOL, ref_rtol=REF_RTOL,
            ort_atol=ORT_ATOL, ort_rtol=ORT_RTOL):
    """kiln vs the reference (every output given in ref; None skips one) and vs onnxruntime."""
    got = run_kiln(m, feeds, threads=threads)
    for i, r in enumerate(ref):
        if r is None:
            continue
        g = got[i]
        assert g.shape == np.shape(r), f"output {i}: shape {g.shape} != {np.shape(r)}"
        np.testing.assert_allclose(g.astype(np.float64), r, rtol=ref_rtol, atol=ref_atol,
                                   err_msg=f"output {i} vs reference")
    if ort:
        want = run_ort(m, feeds)
        for i, (g, w) in enumerate(zip(got, want)):
            assert g.dtype == w.dtype and g.shape == w.shape, f"output {i} vs onnxruntime"
            # onnxruntime writes float32 lowest() where the operator's reference has -inf
            w = np.where(w == np.finfo(np.float32).min, -np.inf, w) if w.dtype == np.float32 else w
            np.testing.assert_allclose(g, w, rtol=ort_rtol, atol=ort_atol,
                                       err_msg=f"output {i} vs onnxruntime")
    return got


def expect_error(m, feeds, *words):
    with pytest.raises(kiln.KilnError) as e:
        run_kiln(m, feeds)
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in error message {msg!r}"


def i32(x):
    return np.asarray(x, dtype=np.int32)


# =============================================================== com.microsoft Attention

def attention_case(rng, B=2, S=5, N=2, H=4, Di=None, Dv=None, mask=None, past_len=None, rpb=None,
                   attrs=None, share_m=None, bias=True):
    D = N * H
    Dv = Dv or D
    Di = Di or D
    x = rand(rng, (B, S, Di))
    # weights ~ 1/sqrt(Di) keep the projected values O(1) whatever the width
    w = rand(rng, (Di, 2 * D + Dv), low=-1.5, high=1.5) / np.float32(np.sqrt(Di))
    b = rand(rng, (2 * D + Dv,))
    attrs = dict(attrs or {})
    attrs["num_heads"] = N
    if Dv != D:
        attrs["qkv_hidden_sizes"] = [D, D, Dv]
    past = None
    ins = [("x", x), ("w", w), ("b", b) if bias else ("", None), ("m", mask) if mask is not None else ("", None)]
    outs = ["y"]
    kw = dict(unidirectional=attrs.get("unidirectional", 0), scale=attrs.get("scale", 0.0),
              mask_filter_value=attrs.get("mask_filter_value", -10000.0),
              qkv_hidden_sizes=attrs.get("qkv_hidden_sizes"))
    if share_m is not None:
        past = rand(rng, (2, B, N, share_m, H))
        ins += [("past", past), ("", None), ("pl", i32([past_len]))]
        outs.append("present")
        attrs["past_present_share_buffer"] = 1
        kw.update(share_buffer=True, past_sequence_length=past_len)
    elif past_len is not None:
        past = rand(rng, (2, B, N, past_len, H))
        ins.append(("past", past))
        outs.append("present")
    else:
        ins.append(("", None))
    if rpb is not None:
        ins.append(("rpb", rpb))
    m, feeds = model("Attention", ins, outs, attrs, MS)
    ref = R.contrib_attention(x, w, b if bias else None, N, mask=mask, past=past, rpb=rpb, **kw)
    return m, feeds, list(ref[:len(outs)])


@pytest.mark.parametrize("B,S,N,H", [(1, 1, 1, 8), (2, 5, 2, 4), (3, 17, 4, 16), (2, 130, 3, 64),
                                     (1, 300, 2, 32)])
@pytest.mark.parametrize("threads", [1, 2])
def test_attention_no_mask(B, S, N, H, threads):
    m, feeds, ref = attention_case(np.random.default_rng(B * 100 + S), B, S, N, H)
    compare(m, feeds, ref, threads=threads)


def test_attention_pruned_and_v_width():
    rng = np.random.default_rng(1)
    compare(*attention_case(rng, B=2, S=6, N=2, H=4, Di=11))
    compare(*attention_case(rng, B=2, S=6, N=2, H=4, Dv=12))


def test_attention_scale_and_filter():
    rng = np.random.default_rng(2)
    compare(*attention_case(rng, attrs=dict(scale=0.05)))
    compare(*attention_case(rng, mask=i32([2, 4]), attrs=dict(mask_filter_value=-30.0)))


def test_attention_absent_bias_is_zero():
    m, feeds, ref = attention_case(np.random.default_rng(3), bias=False)
    compare(m, feeds, ref, ort=False)


# A row whose keys are all masked attends to every key. onnxruntime gets there by adding -10000 in
# float32, which costs it ~3 digits; kiln skips the addition (exact), so those rows are compared
# with onnxruntime loosely and with the float64 reference tightly.
LOOSE_ORT = dict(ort_atol=2e-3, ort_rtol=2e-3)

MASKS_1D = {
    "key_len": lambda B, S, T: i32(np.arange(B) % T + 1),
    "key_len_zero": lambda B, S, T: i32([0] + [T] * (B - 1)),      # fully masked row: attends to all
    "end_start": lambda B, S, T: i32(list(np.minimum(np.arange(B) + T - 1, T)) + list(np.arange(B) % 3)),
    "end_start_empty": lambda B, S, T: i32([1] * B + [2] * B),      # start >= end: attends to all
}


@pytest.mark.parametrize("kind", sorted(MASKS_1D))
@pytest.mark.parametrize("S", [5, 70])
def test_attention_mask_1d(kind, S):
    B = 3
    mask = MASKS_1D[kind](B, S, S)
    compare(*attention_case(np.random.default_rng(4), B=B, S=S, mask=mask), **LOOSE_ORT)


def test_attention_mask_varlen_3b2_expands_to_key_lengths():
    # (3B+2): key lengths, then cumulative q and k starts. Expanded to a key mask (quirk Q5); ORT's
    # CPU kernel reads it as (2B) end/start instead, so only the reference judges.
    B, S = 2, 6
    mask = i32([4, 6, 0, 6, 12, 0, 4, 10])
    m, feeds, ref = attention_case(np.random.default_rng(5), B=B, S=S, mask=mask)
    compare(m, feeds, ref, ort=False)
    # same as a (B) key-length mask
    m2, feeds2, _ = attention_case(np.random.default_rng(5), B=B, S=S, mask=i32([4, 6]))
    np.testing.assert_allclose(run_kiln(m, feeds)[0], run_kiln(m2, feeds2)[0], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("shape", [(2, 1), (1, 1)])
def test_attention_mask_2d_dummy(shape):
    compare(*attention_case(np.random.default_rng(6), B=2, mask=i32(np.ones(shape))))


def test_attention_mask_2d_key_padding():
    rng = np.random.default_rng(7)
    B, S = 3, 9
    mask = rng.integers(0, 2, (B, S)).astype(np.int32)
    mask[:, 0] = 1
    compare(*attention_case(rng, B=B, S=S, mask=mask))


def test_attention_mask_2d_fully_masked_row_attends_to_all():
    rng = np.random.default_rng(8)
    mask = i32([[1, 0, 1, 1, 0], [0, 0, 0, 0, 0]])
    m, feeds, ref = attention_case(rng, B=2, S=5, mask=mask)
    # -10000 added in float32 costs ~3 digits of the scores: compare loosely with the float64
    # reference, tightly with onnxruntime (which adds the same way)
    compare(m, feeds, ref, ref_atol=2e-3, ref_rtol=2e-3)
    # the masked batch equals the unmasked computation
    m2, feeds2, _ = attention_case(np.random.default_rng(8), B=2, S=5, mask=None)
    np.testing.assert_allclose(run_kiln(m, feeds)[0][1], run_kiln(m2, feeds2)[0][1], atol=2e-3)


@pytest.mark.parametrize("S", [5, 67])
def test_attention_mask_3d(S):
    rng = np.random.default_rng(9)
    mask = rng.integers(0, 2, (2, S, S)).astype(np.int32)
    mask[:, :, 0] = 1
    compare(*attention_case(rng, B=2, S=S, mask=mask))


@pytest.mark.parametrize("M", [5, 9])
def test_attention_mask_4d_megatron(M):
    # onnxruntime's CPU kernel rejects 4-D masks: reference only
    rng = np.random.default_rng(10)
    B, S = 2, 5
    mask = np.tril(np.ones((M, M), np.int32))[None, None].repeat(B, 0)
    mask[1, 0, :, 1] = 0
    m, feeds, ref = attention_case(rng, B=B, S=S, mask=mask)
    compare(m, feeds, ref, ort=False)


def test_attention_mask_4d_with_past():
    rng = np.random.default_rng(11)
    B, S, P, M = 2, 3, 4, 8
    mask = rng.integers(0, 2, (B, 1, M, M)).astype(np.int32)
    mask[:, :, :, 0] = 1
    m, feeds, ref = attention_case(rng, B=B, S=S, past_len=P, mask=mask)
    compare(m, feeds, ref, ort=False)


@pytest.mark.parametrize("S,P", [(6, None), (1, 7), (4, 5), (150, None), (70, 140)])
def test_attention_unidirectional(S, P):
    rng = np.random.default_rng(12)
    compare(*attention_case(rng, B=2, S=S, N=2, H=8, past_len=P, attrs=dict(unidirectional=1)))


@pytest.mark.parametrize("mask_kind", ["key_len", "end_start", "2d", "3d"])
def test_attention_unidirectional_with_mask(mask_kind):
    rng = np.random.default_rng(13)
    B, S, P = 2, 6, 3
    T = S + P
    mask = {"key_len": i32([5, 9]), "end_start": i32([8, 9, 2, 0]),
            "2d": np.where(rng.random((B, T)) < 0.7, 1, 0).astype(np.int32),
            "3d": np.where(rng.random((B, S, T)) < 0.7, 1, 0).astype(np.int32)}[mask_kind]
    if mask.ndim > 1:
        mask[..., 0] = 1
    compare(*attention_case(rng, B=B, S=S, past_len=P, mask=mask, attrs=dict(unidirectional=1)))


def test_attention_causal_with_window_starting_after_the_diagonal():
    # end/start window [4, 6): rows 0..3 see no key in the window under causality, so (additive
    # mask) they attend to their causal keys only
    rng = np.random.default_rng(14)
    m, feeds, ref = attention_case(rng, B=1, S=6, mask=i32([6, 4]), attrs=dict(unidirectional=1))
    compare(m, feeds, ref, **LOOSE_ORT)


@pytest.mark.parametrize("P", [0, 3, 200])
def test_attention_past_present(P):
    rng = np.random.default_rng(15)
    compare(*attention_case(rng, B=2, S=4, N=3, H=8, past_len=P))


def test_attention_past_with_key_padding():
    rng = np.random.default_rng(16)
    mask = np.ones((2, 9), np.int32)
    mask[0, :2] = 0
    compare(*attention_case(rng, B=2, S=4, past_len=5, mask=mask))


@pytest.mark.parametrize("P,S,M", [(0, 3, 8), (4, 1, 8), (5, 3, 8), (10, 6, 300)])
def test_attention_share_buffer(P, S, M):
    # onnxruntime's CPU kernel does not take past_present_share_buffer: reference only
    rng = np.random.default_rng(17)
    m, feeds, ref = attention_case(rng, B=2, S=S, past_len=P, share_m=M, attrs=dict(unidirectional=1))
    compare(m, feeds, ref, ort=False)


@pytest.mark.parametrize("dim0", [2, 1])
def test_attention_relative_position_bias(dim0):
    rng = np.random.default_rng(18)
    B, S, N = 2, 7, 3
    rpb = rand(rng, (dim0, N, S, S))
    compare(*attention_case(rng, B=B, S=S, N=N, rpb=rpb))
    compare(*attention_case(rng, B=B, S=S, N=N, rpb=rpb, mask=i32([3, 7]), attrs=dict(unidirectional=1)))


def test_attention_errors():
    rng = np.random.default_rng(19)
    x = rand(rng, (2, 4, 8))
    w = rand(rng, (8, 24))
    b = rand(rng, (24,))

    def att(ins, outs=("y",), **attrs):
        attrs.setdefault("num_heads", 2)
        return model("Attention", ins, list(outs), attrs, MS)

    expect_error(*att([("x", rand(rng, (2, 8))), ("w", w), ("b", b)]), "3-D")
    expect_error(*att([("x", x), ("w", rand(rng, (7, 24))), ("b", b)]), "weights")
    expect_error(*att([("x", x), ("w", w), ("b", rand(rng, (23,)))]), "bias")
    expect_error(*att([("x", x), ("w", w), ("b", b)], num_heads=3), "divisible")
    expect_error(*att([("x", x), ("w", w), ("b", b)], qkv_hidden_sizes=[8, 8]), "3 values")
    expect_error(*att([("x", x), ("w", rand(rng, (8, 22))), ("b", rand(rng, (22,)))],
                      qkv_hidden_sizes=[8, 6, 8]), "equal")
    expect_error(*att([("x", x), ("w", rand(rng, (8, 23))), ("b", rand(rng, (23,)))],
                      qkv_hidden_sizes=[8, 8, 7]), "divisible")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("m", i32([1, 2, 3]))]), "mask_index")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("m", np.ones((2, 4), np.float32))]), "int32")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("m", i32(np.ones((2, 3))))]), "mask_index")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("m", i32(np.ones((2, 4, 5))))]), "mask_index")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("m", i32(np.ones((2, 1, 3, 3))))]), "mask_index")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("m", i32(np.ones((2, 1, 6, 6))))],
                      unidirectional=1), "unidirectional")
    past = rand(rng, (2, 2, 2, 3, 4))
    expect_error(*att([("x", x), ("w", w), ("b", b), ("", None), ("p", past)]), "present")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("", None), ("p", rand(rng, (2, 2, 3, 3, 4)))],
                      outs=("y", "present")), "past")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("", None), ("p", past), ("r", rand(rng, (2, 2, 4, 7)))],
                      outs=("y", "present")), "relative_position_bias")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("", None), ("", None), ("r", rand(rng, (2, 2, 4, 5)))]),
                 "relative_position_bias")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("", None), ("", None), ("r", rand(rng, (3, 2, 4, 4)))]),
                 "relative_position_bias")
    pm = rand(rng, (2, 2, 2, 6, 4))
    expect_error(*att([("x", x), ("w", w), ("b", b), ("", None), ("p", pm)], outs=("y", "present"),
                      past_present_share_buffer=1), "past_sequence_length")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("", None), ("p", pm), ("", None), ("l", i32([3]))],
                      outs=("y", "present"), past_present_share_buffer=1), "exceeds")
    expect_error(*att([("x", x), ("w", w), ("b", b), ("m", i32(np.ones((2, 1, 7, 7)))), ("p", pm), ("", None),
                       ("l", i32([1]))], outs=("y", "present"), past_present_share_buffer=1), "4-D mask_index")
    expect_error(*att([("x", x), ("w", w), ("b", b)], num_heads=0), "num_heads")


# =============================================================== com.microsoft MultiHeadAttention

def mha_case(rng, fmt="q_k_v", B=2, S=5, L=None, N=2, H=4, Hv=None, bias=False, mask=None,
             rpb=None, past_len=None, present=False, attrs=None):
    L = S if L is None else L
    D = N * H
    Hv = Hv or H
    Dv = N * Hv
    attrs = dict(attrs or {})
    attrs["num_heads"] = N
    bias_arr = rand(rng, (2 * D + Dv,)) if bias else None
    q = rand(rng, (B, S, D))
    if fmt == "q_k_v":
        ins = [("q", q), ("k", rand(rng, (B, L, D))), ("v", rand(rng, (B, L, Dv)))]
    elif fmt == "q_kv":
        ins = [("q", q), ("k", rand(rng, (B, L, N, 2, H))), ("", None)]
    elif fmt == "qkv":
        ins = [("q", rand(rng, (B, S, N, 3, H))), ("", None), ("", None)]
    else:  # cached 4-D key/value
        ins = [("q", q), ("k", rand(rng, (B, N, L, H))), ("v", rand(rng, (B, N, L, Hv)))]
    ins += [("bias", bias_arr) if bias else ("", None), ("mask", mask) if mask is not None else ("", None),
            ("rpb", rpb) if rpb is not None else ("", None)]
    pk = pv = None
    if past_len is not None:
        pk, pv = rand(rng, (B, N, past_len, H)), rand(rng, (B, N, past_len, Hv))
        ins += [("pk", pk), ("pv", pv)]
    outs = ["y", "present_k", "present_v"] if (present or past_len is not None) else ["y"]
    m, feeds = model("MultiHeadAttention", ins, outs, attrs, MS)
    a = dict(ins)
    ref = R.mha(a["q"], a.get("k"), a.get("v"), bias_arr, N, key_padding_mask=mask, rpb=rpb,
                past_key=pk, past_value=pv, scale=attrs.get("scale", 0.0),
                mask_filter_value=attrs.get("mask_filter_value", -10000.0),
                unidirectional=attrs.get("unidirectional", 0))
    return m, feeds, list(ref[:len(outs)])


# onnxruntime's CPU MHA implements neither packed KV nor packed QKV
ORT_FORMATS = {"q_k_v": True, "q_kv": False, "qkv": False, "cached": True}


@pytest.mark.parametrize("fmt", sorted(ORT_FORMATS))
@pytest.mark.parametrize("B,S,L,N,H", [(1, 1, None, 1, 8), (2, 5, None, 2, 4), (2, 5, 9, 2, 4),
                                       (2, 130, 260, 2, 64), (1, 64, 64, 12, 64)])
@pytest.mark.parametrize("threads", [1, 2])
def test_mha_formats(fmt, B, S, L, N, H, threads):
    if fmt == "qkv" and L is not None and L != S:
        pytest.skip("packed QKV is self-attention")
    rng = np.random.default_rng(S + (L or 0))
    m, feeds, ref = mha_case(rng, fmt, B, S, L, N, H)
    compare(m, feeds, ref, ort=ORT_FORMATS[fmt], threads=threads)


@pytest.mark.parametrize("fmt", ["q_k_v", "qkv", "cached"])
def test_mha_bias(fmt):
    rng = np.random.default_rng(20)
    m, feeds, ref = mha_case(rng, fmt, B=2, S=6, L=6 if fmt == "qkv" else 8, bias=True)
    compare(m, feeds, ref, ort=ORT_FORMATS[fmt])


def test_mha_v_head_size_differs():
    rng = np.random.default_rng(21)
    compare(*mha_case(rng, "q_k_v", S=4, L=7, H=8, Hv=6, bias=True))
    # onnxruntime requires 4-D key and value of one shape
    compare(*mha_case(rng, "cached", S=4, L=7, H=8, Hv=6), ort=False)


MHA_MASKS = {
    "key_len": lambda B, S, L, T: i32(np.arange(B) % T + 1),
    "varlen_3b2": lambda B, S, L, T: i32(list(np.arange(B) % T + 1) + [0] * (B + 1) + [0] * (B + 1)),
    "2d_L": lambda B, S, L, T: i32(np.where(np.arange(L)[None] % 3 == 1, 0, 1).repeat(B, 0)),
    "2d_T": lambda B, S, L, T: i32(np.where(np.arange(T)[None] % 4 == 2, 0, 1).repeat(B, 0)),
    "3d": lambda B, S, L, T: i32(np.where((np.arange(S)[:, None] + np.arange(T)[None]) % 3 == 1, 0, 1)[None].repeat(B, 0)),
}


@pytest.mark.parametrize("kind", sorted(MHA_MASKS))
@pytest.mark.parametrize("fmt", ["q_k_v", "q_kv", "cached"])
def test_mha_key_padding_mask(kind, fmt):
    rng = np.random.default_rng(22)
    B, S, L = 3, 5, 7
    mask = MHA_MASKS[kind](B, S, L, L)
    # the (3B+2) form is read as (2B) end/start by onnxruntime's CPU kernel (quirk Q5)
    ort = ORT_FORMATS[fmt] and kind != "varlen_3b2"
    compare(*mha_case(rng, fmt, B=B, S=S, L=L, mask=mask, bias=fmt != "q_kv"), ort=ort)


@pytest.mark.parametrize("kind", ["key_len", "2d_T", "3d"])
def test_mha_mask_with_past(kind):
    rng = np.random.default_rng(23)
    B, S, L, P = 2, 3, 3, 4
    mask = MHA_MASKS[kind](B, S, L, L + P)
    compare(*mha_case(rng, "q_k_v", B=B, S=S, L=L, mask=mask, past_len=P, bias=True))


def test_mha_mask_BL_with_past_covers_new_keys():
    # (B, L) with past keys in front: onnxruntime rejects it; kiln reads it as the new keys' mask
    rng = np.random.default_rng(24)
    mask = i32([[1, 0, 1], [0, 1, 1]])
    m, feeds, ref = mha_case(rng, "q_k_v", B=2, S=3, L=3, mask=mask, past_len=4, bias=True)
    compare(m, feeds, ref, ort=False)


@pytest.mark.parametrize("dim0", [2, 1])
@pytest.mark.parametrize("fmt", ["q_k_v", "qkv", "cached"])
def test_mha_relative_position_bias(dim0, fmt):
    rng = np.random.default_rng(25)
    B, S, N = 2, 6, 3
    L = S if fmt == "qkv" else 9
    compare(*mha_case(rng, fmt, B=B, S=S, L=L, N=N, rpb=rand(rng, (dim0, N, S, L))), ort=ORT_FORMATS[fmt])


@pytest.mark.parametrize("P", [0, 1, 6, 150])
def test_mha_past_present(P):
    rng = np.random.default_rng(26)
    m, feeds, ref = mha_case(rng, "q_k_v", B=2, S=3, L=3, N=2, H=8, bias=True, past_len=P,
                             rpb=None)
    compare(m, feeds, ref)


@pytest.mark.parametrize("fmt", ["q_k_v", "q_kv", "qkv", "cached"])
def test_mha_present_without_past(fmt):
    rng = np.random.default_rng(27)
    compare(*mha_case(rng, fmt, B=2, S=4, L=4 if fmt == "qkv" else 6, present=True), ort=ORT_FORMATS[fmt])


def test_mha_past_with_rpb_and_mask():
    rng = np.random.default_rng(28)
    B, S, L, P, N = 2, 3, 3, 5, 2
    compare(*mha_case(rng, "q_k_v", B=B, S=S, L=L, N=N, past_len=P, bias=True, mask=i32([6, 8]),
                      rpb=rand(rng, (B, N, S, L + P))))


@pytest.mark.parametrize("S,P", [(5, None), (1, 9), (4, 6), (100, None)])
def test_mha_unidirectional(S, P):
    rng = np.random.default_rng(29)
    compare(*mha_case(rng, "q_k_v", B=2, S=S, L=S, past_len=P, bias=True, attrs=dict(unidirectional=1)))


def test_mha_scale_and_filter():
    rng = np.random.default_rng(30)
    compare(*mha_case(rng, "q_k_v", S=4, L=6, attrs=dict(scale=0.2)))
    compare(*mha_case(rng, "q_k_v", S=4, L=6, mask=i32([0, 4]), attrs=dict(mask_filter_value=-40.0)),
            **LOOSE_ORT)


def test_mha_errors():
    rng = np.random.default_rng(31)
    B, S, L, N, H = 2, 4, 5, 2, 4
    D = N * H
    q, k, v = rand(rng, (B, S, D)), rand(rng, (B, L, D)), rand(rng, (B, L, D))

    def mh(ins, outs=("y",), **attrs):
        attrs.setdefault("num_heads", N)
        return model("MultiHeadAttention", ins, list(outs), attrs, MS)

    expect_error(*mh([("q", rand(rng, (B, S)))]), "query")
    expect_error(*mh([("q", q)]), "key")
    expect_error(*mh([("q", q), ("k", rand(rng, (B, L, D + 1))), ("v", v)]), "key hidden size")
    expect_error(*mh([("q", q), ("k", rand(rng, (B + 1, L, D))), ("v", v)]), "batch")
    expect_error(*mh([("q", q), ("k", k), ("v", rand(rng, (B, L + 1, D)))]), "value")
    expect_error(*mh([("q", q), ("k", k), ("v", v)], num_heads=3), "divisible")
    expect_error(*mh([("q", q), ("k", rand(rng, (B, L, N, 2, H))), ("", None), ("b", rand(rng, (3 * D,)))]),
                 "bias")
    expect_error(*mh([("q", q), ("k", rand(rng, (B, L, N, 3, H)))]), "packed KV")
    expect_error(*mh([("q", rand(rng, (B, S, N, 3, H))), ("k", k), ("v", v)]), "absent")
    expect_error(*mh([("q", rand(rng, (B, S, N + 1, 3, H)))]), "packed QKV")
    expect_error(*mh([("q", q), ("k", k), ("v", v), ("b", rand(rng, (3 * D - 1,)))]), "bias")
    expect_error(*mh([("q", q), ("k", k), ("v", v), ("", None), ("m", i32(np.ones((B, 7))))]),
                 "shall be 1D, 2D, or 3D")
    expect_error(*mh([("q", q), ("k", k), ("v", v), ("", None), ("m", i32(np.ones(2 * B)))]),
                 "shall be 1D, 2D, or 3D")
    expect_error(*mh([("q", q), ("k", k), ("v", v), ("", None), ("m", i32(np.ones((B, 1, S, L))))]),
                 "shall be 1D, 2D, or 3D")
    expect_error(*mh([("q", q), ("k", k), ("v", v), ("", None), ("", None), ("r", rand(rng, (B, N, S, L + 1)))]),
                 "relative_position_bias")
    expect_error(*mh([("q", q), ("k", k), ("v", v), ("", None), ("", None), ("", None),
                      ("pk", rand(rng, (B, N, 3, H)))], outs=("y", "pk_o", "pv_o")), "past_value")
    expect_error(*mh([("q", q), ("k", k), ("v", v), ("", None), ("", None), ("", None),
                      ("pk", rand(rng, (B, N, 3, H))), ("pv", rand(rng, (B, N, 2, H)))],
                     outs=("y", "pk_o", "pv_o")), "past_value")
    expect_error(*mh([("q", q), ("k", rand(rng, (B, N, L, H))), ("v", rand(rng, (B, N, L, H))), ("", None),
                      ("", None), ("", None), ("pk", rand(rng, (B, N, 3, H))), ("pv", rand(rng, (B, N, 3, H)))],
                     outs=("y", "pk_o", "pv_o")), "cached")


# =============================================================== packed ops

def lengths_case(rng, B, S):
    lens = rng.integers(1, S + 1, B)
    lens[0] = S
    return lens


@pytest.mark.parametrize("B,S,N,H", [(3, 4, 2, 4), (4, 70, 3, 16), (2, 1, 1, 8)])
@pytest.mark.parametrize("use_rpb", [None, "B", "1"])
@pytest.mark.parametrize("threads", [1, 2])
def test_packed_attention(B, S, N, H, use_rpb, threads):
    rng = np.random.default_rng(B * S + H)
    D = N * H
    Di = D + 3
    lens = lengths_case(rng, B, S)
    padded = rand(rng, (B, S, Di))
    x, offsets, cu = R.pack(padded, lens)
    w = rand(rng, (Di, 3 * D), low=-0.5, high=0.5)
    b = rand(rng, (3 * D,))
    rpb = None if use_rpb is None else rand(rng, (B if use_rpb == "B" else 1, N, S, S))
    ins = [("x", x), ("w", w), ("b", b), ("off", offsets), ("cu", cu)] + ([("rpb", rpb)] if rpb is not None else [])
    m, feeds = model("PackedAttention", ins, ["y"], {"num_heads": N}, MS)
    ref = R.packed_attention(x, w, b, offsets, cu, N, rpb=rpb)
    got = compare(m, feeds, [ref], ort=False, threads=threads)[0]

    # same numbers as com.microsoft Attention on the padded batch with a key-length mask
    ins2 = [("x", padded), ("w", w), ("b", b), ("m", i32(lens))] + ([("", None), ("rpb", rpb)] if rpb is not None else [])
    m2, feeds2 = model("Attention", ins2, ["y"], {"num_heads": N}, MS)
    padded_out = run_kiln(m2, feeds2)[0]
    want, _, _ = R.pack(padded_out, lens)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_packed_attention_v_width():
    rng = np.random.default_rng(40)
    B, S, N, D, Dv = 3, 5, 2, 8, 6
    lens = lengths_case(rng, B, S)
    x, offsets, cu = R.pack(rand(rng, (B, S, 7)), lens)
    w = rand(rng, (7, 2 * D + Dv), low=-0.5, high=0.5)
    b = rand(rng, (2 * D + Dv,))
    m, feeds = model("PackedAttention", [("x", x), ("w", w), ("b", b), ("off", offsets), ("cu", cu)], ["y"],
                     {"num_heads": N, "qkv_hidden_sizes": [D, D, Dv], "scale": 0.3}, MS)
    compare(m, feeds, [R.packed_attention(x, w, b, offsets, cu, N, qkv_hidden_sizes=(D, D, Dv), scale=0.3)],
            ort=False)


@pytest.mark.parametrize("fmt", ["q_k_v", "qkv"])
@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("use_rpb", [False, True])
@pytest.mark.parametrize("B,S,N,H", [(3, 4, 2, 4), (3, 80, 2, 32)])
def test_packed_mha(fmt, bias, use_rpb, B, S, N, H):
    rng = np.random.default_rng(S + 7 * bias + 3 * use_rpb)
    D = N * H
    lens = lengths_case(rng, B, S)
    bias_arr = rand(rng, (3 * D,)) if bias else None
    rpb = rand(rng, (B, N, S, S)) if use_rpb else None
    if fmt == "qkv":
        qp = rand(rng, (B, S, N, 3, H))
        q, offsets, cu = R.pack(qp, lens)
        ins = [("q", q), ("", None), ("", None)]
        pad_ins = [("q", qp), ("", None), ("", None)]
    else:
        qp, kp, vp = rand(rng, (B, S, D)), rand(rng, (B, S, D)), rand(rng, (B, S, D))
        q, offsets, cu = R.pack(qp, lens)
        k, v = R.pack(kp, lens)[0], R.pack(vp, lens)[0]
        ins = [("q", q), ("k", k), ("v", v)]
        pad_ins = [("q", qp), ("k", kp), ("v", vp)]
    ins += [("bias", bias_arr) if bias else ("", None), ("off", offsets), ("cu", cu)]
    if use_rpb:
        ins.append(("rpb", rpb))
    m, feeds = model("PackedMultiHeadAttention", ins, ["y"], {"num_heads": N}, MS)
    a = dict(ins)
    ref = R.packed_mha(a["q"], a.get("k"), a.get("v"), bias_arr, offsets, cu, N, rpb=rpb)
    got = compare(m, feeds, [ref], ort=False)[0]

    # MultiHeadAttention on the padded batch with key lengths gives the same valid rows
    pad_ins += [("bias", bias_arr) if bias else ("", None), ("m", i32(lens)), ("rpb", rpb) if use_rpb else ("", None)]
    m2, feeds2 = model("MultiHeadAttention", pad_ins, ["y"], {"num_heads": N}, MS)
    want = R.pack(run_kiln(m2, feeds2)[0], lens)[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_packed_errors():
    rng = np.random.default_rng(41)
    N, H, D = 2, 4, 8
    q = rand(rng, (5, D))
    off = i32(np.arange(6).reshape(2, 3))
    cu = i32([0, 3, 5])

    def pm(ins):
        return model("PackedMultiHeadAttention", ins, ["y"], {"num_heads": N}, MS)

    expect_error(*pm([("q", q), ("k", q), ("v", q), ("", None), ("off", off), ("cu", i32([0, 3, 6]))]), "tokens")
    expect_error(*pm([("q", q), ("k", q), ("v", q), ("", None), ("off", off), ("cu", i32([0, 4, 5]))]), "length")
    expect_error(*pm([("q", q), ("k", q), ("v", q), ("", None), ("off", off), ("cu", i32([1, 3, 5]))]), "[0]")
    expect_error(*pm([("q", q), ("k", q), ("v", q), ("", None), ("off", off), ("cu", i32([0, 5]))]), "B + 1")
    expect_error(*pm([("q", q), ("k", rand(rng, (5, D + 2))), ("v", q), ("", None), ("off", off), ("cu", cu)]),
                 "key shape")
    expect_error(*pm([("q", q), ("", None), ("", None), ("", None), ("off", off), ("cu", cu)]), "required")
    expect_error(*pm([("q", rand(rng, (5, N, 3, H))), ("k", q), ("v", q), ("", None), ("off", off), ("cu", cu)]),
                 "absent")
    expect_error(*pm([("q", q), ("k", q), ("v", q), ("b", rand(rng, (3 * D + 1,))), ("off", off), ("cu", cu)]),
                 "bias")
    expect_error(*pm([("q", q), ("k", q), ("v", q), ("", None), ("off", off), ("cu", cu),
                      ("r", rand(rng, (2, N, 3, 4)))]), "relative_position_bias")
    x = rand(rng, (5, 6))
    m, feeds = model("PackedAttention", [("x", x), ("w", rand(rng, (6, 24))), ("", None), ("off", off), ("cu", cu)],
                     ["y"], {"num_heads": N}, MS)
    expect_error(m, feeds, "input 2")


# =============================================================== ONNX Attention (opset 23 / 24)

def onnx_case(rng, B=2, Nq=3, Nkv=3, S=4, L=6, H=8, Hv=None, rank=4, mask_shape=None, mask_dtype=np.float32,
              past=None, attrs=None, outs=("Y",), dtype=np.float32, nonpad=None, opset=23):
    Hv = Hv or H
    attrs = dict(attrs or {})
    if rank == 4:
        Q, K, V = rand(rng, (B, Nq, S, H), dtype), rand(rng, (B, Nkv, L, H), dtype), rand(rng, (B, Nkv, L, Hv), dtype)
    else:
        Q, K, V = rand(rng, (B, S, Nq * H), dtype), rand(rng, (B, L, Nkv * H), dtype), rand(rng, (B, L, Nkv * Hv), dtype)
        attrs.update(q_num_heads=Nq, kv_num_heads=Nkv)
    mask = None
    if mask_shape is not None:
        if mask_dtype == np.bool_:
            mask = rng.random(mask_shape) < 0.75
            mask[..., 0] = True
        else:
            mask = rand(rng, mask_shape, mask_dtype)
    pk = pv = None
    ins = [("Q", Q), ("K", K), ("V", V), ("attn_mask", mask) if mask is not None else ("", None)]
    if past is not None:
        pk, pv = rand(rng, (B, Nkv, past, H), dtype), rand(rng, (B, Nkv, past, Hv), dtype)
        ins += [("past_key", pk), ("past_value", pv)]
    if nonpad is not None:
        while len(ins) < 6:
            ins.append(("", None))
        ins.append(("nonpad", np.asarray(nonpad, np.int64)))
    m, feeds = model("Attention", ins, list(outs), attrs, "", opset)
    ref = R.onnx_attention(Q, K, V, mask, pk, pv, nonpad_kv_seqlen=nonpad, scale=attrs.get("scale"),
                           is_causal=attrs.get("is_causal", 0), q_num_heads=Nq, kv_num_heads=Nkv,
                           softcap=attrs.get("softcap", 0.0),
                           qk_matmul_output_mode=attrs.get("qk_matmul_output_mode", 0))
    names = ["Y", "present_key", "present_value", "qk"]
    want = [ref[names.index(o) if o in names else 3] if o else None for o in outs]
    return m, feeds, [w for w, o in zip(want, outs) if o]


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("Nq,Nkv", [(3, 3), (6, 3), (4, 1)])
@pytest.mark.parametrize("S,L,H,Hv", [(4, 6, 8, 8), (1, 9, 16, 12), (70, 200, 64, 64)])
def test_onnx_attention_heads(rank, Nq, Nkv, S, L, H, Hv):
    rng = np.random.default_rng(Nq * 10 + S)
    compare(*onnx_case(rng, Nq=Nq, Nkv=Nkv, S=S, L=L, H=H, Hv=Hv, rank=rank))


@pytest.mark.parametrize("mask_shape", [(4, 6), (1, 4, 6), (2, 1, 4, 6), (2, 3, 4, 6), (1, 1, 1, 6), (2, 1, 1, 6)])
@pytest.mark.parametrize("mask_dtype", [np.float32, np.bool_])
def test_onnx_attention_masks(mask_shape, mask_dtype):
    rng = np.random.default_rng(len(mask_shape))
    # onnxruntime insists on the mask's query dimension being S (no broadcast there)
    compare(*onnx_case(rng, mask_shape=mask_shape, mask_dtype=mask_dtype), ort=mask_shape[-2] != 1)


@pytest.mark.parametrize("rank", [3, 4])
@pytest.mark.parametrize("S,L,P", [(4, 6, None), (6, 4, None), (3, 3, 5), (1, 1, 9), (80, 80, 100)])
@pytest.mark.parametrize("with_mask", [False, True])
def test_onnx_attention_causal(rank, S, L, P, with_mask):
    rng = np.random.default_rng(S * L)
    T = L + (P or 0)
    outs = ("Y", "present_key", "present_value") if P else ("Y",)
    compare(*onnx_case(rng, S=S, L=L, rank=rank, past=P, attrs=dict(is_causal=1), outs=outs,
                       mask_shape=(S, T) if with_mask else None))


@pytest.mark.parametrize("Nq,Nkv", [(3, 3), (6, 2)])
@pytest.mark.parametrize("P", [1, 12, 300])
def test_onnx_attention_past_present(Nq, Nkv, P):
    rng = np.random.default_rng(P)
    compare(*onnx_case(rng, Nq=Nq, Nkv=Nkv, S=2, L=2, Hv=6, past=P, mask_shape=(2, P + 2),
                       outs=("Y", "present_key", "present_value")))


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
@pytest.mark.parametrize("softcap", [0.0, 2.0])
def test_onnx_attention_qk_output(mode, softcap):
    rng = np.random.default_rng(mode)
    attrs = dict(qk_matmul_output_mode=mode)
    if softcap:
        attrs["softcap"] = softcap
    # mode 0 is the raw scaled product even with softcap, as the operator text and onnxruntime
    # have it (onnx's Python reference evaluator returns the softcapped scores there)
    compare(*onnx_case(rng, S=5, L=7, mask_shape=(5, 7), attrs=attrs, outs=("Y", "", "", "qk")))
    compare(*onnx_case(rng, S=3, L=3, past=4, attrs=dict(attrs, is_causal=1),
                       outs=("Y", "present_key", "present_value", "qk")))


@pytest.mark.parametrize("softcap", [1.0, 5.0])
@pytest.mark.parametrize("scale", [None, 0.05])
def test_onnx_attention_softcap_scale(softcap, scale):
    rng = np.random.default_rng(50)
    attrs = dict(softcap=softcap)
    if scale is not None:
        attrs["scale"] = scale
    compare(*onnx_case(rng, S=5, L=9, Nq=4, Nkv=2, attrs=attrs, mask_shape=(5, 9)))


@pytest.mark.parametrize("mask_dtype", [np.float32, np.bool_])
def test_onnx_attention_fully_masked_rows(mask_dtype):
    # a row with every key masked has no defined softmax (0/0); like onnxruntime, kiln gives it
    # probabilities 0 and output 0 (onnx's reference evaluator gives NaN)
    rng = np.random.default_rng(51)
    keep = np.ones((4, 6), bool)
    keep[:, 4:] = False
    keep[2, :] = False
    mask = keep if mask_dtype == np.bool_ else np.where(keep, 0, -np.inf).astype(np.float32)
    Q, K, V = rand(rng, (1, 2, 4, 8)), rand(rng, (1, 2, 6, 8)), rand(rng, (1, 2, 6, 8))
    for mode in (2, 3):
        m, feeds = model("Attention", [("Q", Q), ("K", K), ("V", V), ("m", mask)], ["Y", "", "", "qk"],
                         {"qk_matmul_output_mode": mode})
        ref = R.onnx_attention(Q, K, V, mask, qk_matmul_output_mode=mode)
        y, _ = compare(m, feeds, [ref[0], ref[3]])
        assert (y[:, :, 2] == 0).all()
    # the same through the key-length input of opset 24
    m, feeds, ref = onnx_case(rng, S=4, L=6, nonpad=[0, 4], opset=24)
    y = compare(m, feeds, ref, ort=False)[0]
    assert (y[0] == 0).all()


@pytest.mark.parametrize("dtype", [np.float16])
def test_onnx_attention_fp16(dtype):
    rng = np.random.default_rng(52)
    m, feeds, ref = onnx_case(rng, Nq=4, Nkv=2, past=3, mask_shape=(4, 9), mask_dtype=np.float16, dtype=dtype,
                              outs=("Y", "present_key", "present_value"))
    got = run_kiln(m, feeds)
    for g, r in zip(got, ref):
        assert g.dtype == np.float16
        np.testing.assert_allclose(g.astype(np.float64), r, rtol=5e-3, atol=5e-3)


def test_onnx_attention_double():
    rng = np.random.default_rng(53)
    m, feeds, ref = onnx_case(rng, dtype=np.float64, mask_shape=(4, 6), mask_dtype=np.float64)
    got = run_kiln(m, feeds)[0]
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, ref[0], rtol=1e-4, atol=1e-5)


def test_onnx_attention_opset24_nonpad_and_short_mask():
    rng = np.random.default_rng(54)
    # last mask dimension shorter than T: the rest counts as -inf
    compare(*onnx_case(rng, S=4, L=6, mask_shape=(2, 3, 4, 4), nonpad=[3, 4], opset=24), ort=False)
    compare(*onnx_case(rng, S=4, L=300, nonpad=[299, 17], opset=24, attrs=dict(is_causal=0)), ort=False)
    compare(*onnx_case(rng, S=4, L=6, mask_shape=(4, 5), opset=24), ort=False)


def test_onnx_attention_errors():
    rng = np.random.default_rng(55)
    Q, K, V = rand(rng, (2, 3, 4, 8)), rand(rng, (2, 3, 6, 8)), rand(rng, (2, 3, 6, 8))

    def at(ins, outs=("Y",), opset=23, **attrs):
        return model("Attention", ins, list(outs), attrs, "", opset)

    expect_error(*at([("Q", Q), ("K", rand(rng, (2, 6, 24))), ("V", V)]), "3-D or all 4-D")
    expect_error(*at([("Q", rand(rng, (2, 4, 24))), ("K", rand(rng, (2, 6, 24))), ("V", rand(rng, (2, 6, 24)))]),
                 "q_num_heads")
    expect_error(*at([("Q", Q), ("K", rand(rng, (2, 3, 6, 7))), ("V", V)]), "head size")
    expect_error(*at([("Q", Q), ("K", rand(rng, (2, 2, 6, 8))), ("V", rand(rng, (2, 2, 6, 8)))]), "multiple")
    expect_error(*at([("Q", Q), ("K", K), ("V", rand(rng, (2, 3, 5, 8)))]), "sequence length")
    expect_error(*at([("Q", Q), ("K", K), ("V", V), ("m", rand(rng, (3, 6)))]), "broadcast")
    expect_error(*at([("Q", Q), ("K", K), ("V", V), ("m", rand(rng, (4, 7)))]), "longer")
    expect_error(*at([("Q", Q), ("K", K), ("V", V), ("m", i32(np.ones((4, 6))))]), "attn_mask")
    expect_error(*at([("Q", Q), ("K", K), ("V", V), ("", None), ("pk", rand(rng, (2, 3, 2, 8)))],
                     outs=("Y", "pk_o", "pv_o")), "past_value")
    expect_error(*at([("Q", Q), ("K", K), ("V", V), ("", None), ("pk", rand(rng, (2, 3, 2, 7))),
                      ("pv", rand(rng, (2, 3, 2, 8)))], outs=("Y", "pk_o", "pv_o")), "past_key")
    expect_error(*at([("Q", Q), ("K", K), ("V", V)], qk_matmul_output_mode=4), "qk_matmul_output_mode")
    expect_error(*at([("Q", Q), ("K", K), ("V", V), ("", None), ("", None), ("", None),
                      ("n", np.array([1, 2, 3], np.int64))], opset=24), "nonpad_kv_seqlen")


# =============================================================== RotaryEmbedding

@pytest.mark.parametrize("layout", ["4d", "3d"])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("rd", [0, 4])
@pytest.mark.parametrize("with_pos", [True, False])
def test_onnx_rotary(layout, interleaved, rd, with_pos):
    rng = np.random.default_rng(60 + rd + interleaved)
    B, N, S, H = 2, 3, 5, 8
    X = rand(rng, (B, N, S, H)) if layout == "4d" else rand(rng, (B, S, N * H))
    half = (rd or H) // 2
    attrs = dict(interleaved=interleaved)
    if rd:
        attrs["rotary_embedding_dim"] = rd
    if layout == "3d":
        attrs["num_heads"] = N
    if with_pos:
        cosc, sinc = rand(rng, (20, half)), rand(rng, (20, half))
        pos = rng.integers(0, 20, (B, S)).astype(np.int64)
        ins = [("X", X), ("c", cosc), ("s", sinc), ("p", pos)]
    else:
        cosc, sinc = rand(rng, (B, S, half)), rand(rng, (B, S, half))
        pos = None
        ins = [("X", X), ("c", cosc), ("s", sinc)]
    m, feeds = model("RotaryEmbedding", ins, ["Y"], attrs)
    ref = R.onnx_rotary(X, cosc, sinc, pos, interleaved, rd, N if layout == "3d" else 0)
    compare(m, feeds, [ref])


def test_onnx_rotary_errors():
    rng = np.random.default_rng(61)
    X = rand(rng, (2, 3, 5, 8))
    c = rand(rng, (10, 4))
    m, feeds = model("RotaryEmbedding", [("X", X), ("c", c), ("s", c), ("p", np.full((2, 5), 10, np.int64))], ["Y"], {})
    expect_error(m, feeds, "outside")
    m, feeds = model("RotaryEmbedding", [("X", X), ("c", rand(rng, (10, 3))), ("s", rand(rng, (10, 3))),
                                         ("p", np.zeros((2, 5), np.int64))], ["Y"], {})
    expect_error(m, feeds, "cos_cache")
    m, feeds = model("RotaryEmbedding", [("X", rand(rng, (2, 5, 24))), ("c", c), ("s", c),
                                         ("p", np.zeros((2, 5), np.int64))], ["Y"], {})
    expect_error(m, feeds, "num_heads")


@pytest.mark.parametrize("layout", ["3d", "4d"])
@pytest.mark.parametrize("interleaved", [0, 1])
@pytest.mark.parametrize("pos_kind", ["offset", "full"])
def test_ms_rotary(layout, interleaved, pos_kind):
    rng = np.random.default_rng(70 + interleaved)
    B, N, S, H = 2, 3, 5, 8
    X = rand(rng, (B, S, N * H)) if layout == "3d" else rand(rng, (B, N, S, H))
    cosc, sinc = rand(rng, (16, H // 2)), rand(rng, (16, H // 2))
    pos = np.array([3], np.int64) if pos_kind == "offset" else rng.integers(0, 16, (B, S)).astype(np.int64)
    m, feeds = model("RotaryEmbedding", [("X", X), ("p", pos), ("c", cosc), ("s", sinc)], ["Y"],
                     dict(interleaved=interleaved), MS)
    compare(m, feeds, [R.ms_rotary(X, pos, cosc, sinc, interleaved)])


def test_ms_rotary_partial_dim():
    rng = np.random.default_rng(72)
    B, N, S, H, rd = 2, 2, 4, 8, 4
    X = rand(rng, (B, S, N * H))
    cosc, sinc = rand(rng, (8, rd // 2)), rand(rng, (8, rd // 2))
    pos = rng.integers(0, 8, (B, S)).astype(np.int64)
    m, feeds = model("RotaryEmbedding", [("X", X), ("p", pos), ("c", cosc), ("s", sinc)], ["Y"],
                     dict(num_heads=N, rotary_embedding_dim=rd), MS)
    compare(m, feeds, [R.ms_rotary(X, pos, cosc, sinc, 0, rd, N)])


# =============================================================== float16 / bfloat16 (com.microsoft)
# The CPU kernels compute half types in float32 scratch: each output must be the float32 op's on
# the same (rounded) inputs, rounded once to the input's type. bfloat16 goes through Casts (numpy
# has none): float32 graph inputs rounded to bfloat16, outputs Cast back to float32.

from onnx import TensorProto, helper  # noqa: E402

HALF_TOL = {"float16": 1e-3, "bfloat16": 8e-3}  # of the output's largest magnitude


def round_to(a, kind):
    a = np.asarray(a, np.float32)
    if kind == "float16":
        return a.astype(np.float16).astype(np.float32)
    b = a.view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32).reshape(a.shape)


def half_model(op, ins, outs, attrs, kind, domain=MS):
    """The op with its float32 inputs given as `kind` (ins: [(name, array or None)])."""
    ins = list(ins)
    while ins and ins[-1][0] == "":
        ins.pop()
    nodes, g_in, g_out, node_in, feeds = [], [], [], [], {}
    for name, a in ins:
        node_in.append(name)
        if not name:
            continue
        a = np.asarray(a)
        if a.dtype != np.float32:
            g_in.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape))
            feeds[name] = a
        elif kind == "float16":
            g_in.append(helper.make_tensor_value_info(name, TensorProto.FLOAT16, a.shape))
            feeds[name] = a.astype(np.float16)
        else:
            g_in.append(helper.make_tensor_value_info(name + "_f", TensorProto.FLOAT, a.shape))
            feeds[name + "_f"] = round_to(a, kind)
            nodes.append(helper.make_node("Cast", [name + "_f"], [name], to=TensorProto.BFLOAT16))
    nodes.append(helper.make_node(op, node_in, list(outs), domain=domain, **attrs))
    for o in outs:
        if kind == "bfloat16":
            nodes.append(helper.make_node("Cast", [o], [o + "_f"], to=TensorProto.FLOAT))
            o += "_f"
        g_out.append(helper.make_empty_tensor_value_info(o))
    graph = helper.make_graph(nodes, "g", g_in, g_out)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(domain, 1)])
    m.ir_version = 10
    return m, feeds


def half_vs_f32(op, ins, outs, attrs, kind, threads=2):
    """Runs op in `kind` and in float32 on the rounded values; compares every output."""
    rounded = [(n, round_to(a, kind) if n and np.asarray(a).dtype == np.float32 else a) for n, a in ins]
    m32, f32 = model(op, rounded, outs, attrs, MS)
    want = run_kiln(m32, f32, threads=threads)
    m, feeds = half_model(op, ins, outs, attrs, kind)
    got = run_kiln(m, feeds, threads=threads)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        if kind == "float16":
            assert g.dtype == np.float16, f"output {i} is {g.dtype}"
        assert g.shape == w.shape, f"output {i}: shape {g.shape} != {w.shape}"
        g64, w64 = g.astype(np.float64), w.astype(np.float64)
        scale = max(float(np.abs(w64).max()) if w64.size else 0.0, 1e-6)
        err = float(np.abs(g64 - w64).max()) if w64.size else 0.0
        assert err <= HALF_TOL[kind] * scale, f"output {i}: max error {err:.3g} (scale {scale:.3g})"
    return got


HALF_KINDS = ["float16", "bfloat16"]


@pytest.mark.parametrize("kind", HALF_KINDS)
@pytest.mark.parametrize("case", ["plain", "lens_uni", "past", "rpb", "mask2d", "v_width"])
def test_attention_half(kind, case):
    rng = np.random.default_rng(90)
    B, S, N, H, Di = 2, 6, 2, 8, 12
    D = Dv = N * H
    attrs = {"num_heads": N}
    if case == "v_width":
        Dv = N * 4
        attrs["qkv_hidden_sizes"] = [D, D, Dv]
    x = rand(rng, (B, S, Di))
    w = rand(rng, (Di, 2 * D + Dv), low=-1.0, high=1.0) / np.float32(np.sqrt(Di))
    ins = [("x", x), ("w", w), ("b", rand(rng, (2 * D + Dv,))), ("", None), ("", None), ("", None)]
    outs = ["y"]
    if case == "lens_uni":
        ins[3] = ("m", i32([6, 3]))
        attrs["unidirectional"] = 1
    elif case == "past":
        ins[3] = ("m", i32([9, 4]))
        ins[4] = ("past", rand(rng, (2, B, N, 3, H)))
        outs.append("present")
    elif case == "rpb":
        ins[5] = ("rpb", rand(rng, (1, N, S, S)))
    elif case == "mask2d":
        ins[3] = ("m", i32(np.where(np.arange(S)[None] % 3 == 1, 0, 1).repeat(B, 0)))
    half_vs_f32("Attention", ins, outs, attrs, kind)


@pytest.mark.parametrize("kind", HALF_KINDS)
@pytest.mark.parametrize("fmt", ["q_k_v", "q_kv", "qkv", "cached"])
def test_mha_half_formats(kind, fmt):
    rng = np.random.default_rng(91)
    B, S, L, N, H = 2, 5, 7, 2, 8
    D = N * H
    if fmt == "qkv":
        L = S
    ins = {"q_k_v": [("q", rand(rng, (B, S, D))), ("k", rand(rng, (B, L, D))), ("v", rand(rng, (B, L, D)))],
           "q_kv": [("q", rand(rng, (B, S, D))), ("k", rand(rng, (B, L, N, 2, H))), ("", None)],
           "qkv": [("q", rand(rng, (B, S, N, 3, H))), ("", None), ("", None)],
           "cached": [("q", rand(rng, (B, S, D))), ("k", rand(rng, (B, N, L, H))), ("v", rand(rng, (B, N, L, H)))]}[fmt]
    bias = ("bias", rand(rng, (3 * D,))) if fmt != "q_kv" else ("", None)
    ins += [bias, ("mask", i32([L, 3]))]
    half_vs_f32("MultiHeadAttention", ins, ["y", "pk", "pv"], {"num_heads": N}, kind)


@pytest.mark.parametrize("kind", HALF_KINDS)
@pytest.mark.parametrize("case", ["past_uni", "mask2d_rpb"])
def test_mha_half_cache_and_masks(kind, case):
    rng = np.random.default_rng(92)
    B, S, N, H, P = 2, 4, 2, 8, 3
    D = N * H
    ins = [("q", rand(rng, (B, S, D))), ("k", rand(rng, (B, S, D))), ("v", rand(rng, (B, S, D))),
           ("bias", rand(rng, (3 * D,)))]
    attrs = {"num_heads": N}
    if case == "past_uni":
        attrs["unidirectional"] = 1
        ins += [("", None), ("", None), ("pk", rand(rng, (B, N, P, H))), ("pv", rand(rng, (B, N, P, H)))]
    else:
        ins += [("mask", i32([[1, 0, 1, 1], [1, 1, 1, 0]])), ("rpb", rand(rng, (B, N, S, S)))]
    half_vs_f32("MultiHeadAttention", ins, ["y", "pk_out", "pv_out"], attrs, kind)


@pytest.mark.parametrize("kind", HALF_KINDS)
@pytest.mark.parametrize("fmt", ["q_k_v", "qkv"])
def test_packed_mha_half(kind, fmt):
    rng = np.random.default_rng(93)
    B, S, N, H = 3, 6, 2, 8
    D = N * H
    lens = [6, 2, 4]
    if fmt == "qkv":
        q, off, cu = R.pack(rand(rng, (B, S, N, 3, H)), lens)
        ins = [("q", q), ("", None), ("", None)]
    else:
        q, off, cu = R.pack(rand(rng, (B, S, D)), lens)
        ins = [("q", q), ("k", R.pack(rand(rng, (B, S, D)), lens)[0]), ("v", R.pack(rand(rng, (B, S, D)), lens)[0])]
    ins += [("bias", rand(rng, (3 * D,))), ("off", off), ("cu", cu), ("rpb", rand(rng, (1, N, S, S)))]
    half_vs_f32("PackedMultiHeadAttention", ins, ["y"], {"num_heads": N}, kind)


@pytest.mark.parametrize("kind", HALF_KINDS)
def test_packed_attention_half(kind):
    rng = np.random.default_rng(94)
    B, S, N, D, Di = 2, 5, 2, 8, 6
    x, off, cu = R.pack(rand(rng, (B, S, Di)), [5, 2])
    ins = [("x", x), ("w", rand(rng, (Di, 3 * D), low=-0.5, high=0.5)), ("b", rand(rng, (3 * D,))),
           ("off", off), ("cu", cu)]
    half_vs_f32("PackedAttention", ins, ["y"], {"num_heads": N}, kind)


@pytest.mark.parametrize("kind", HALF_KINDS)
@pytest.mark.parametrize("interleaved", [0, 1])
def test_ms_rotary_half(kind, interleaved):
    rng = np.random.default_rng(95)
    B, N, S, H = 2, 3, 5, 8
    ins = [("X", rand(rng, (B, S, N * H))), ("p", rng.integers(0, 16, (B, S)).astype(np.int64)),
           ("c", rand(rng, (16, H // 2))), ("s", rand(rng, (16, H // 2)))]
    half_vs_f32("RotaryEmbedding", ins, ["Y"], {"interleaved": interleaved}, kind)


def test_attention_half_type_mismatch():
    rng = np.random.default_rng(96)
    q = rand(rng, (1, 2, 8)).astype(np.float16)
    m, feeds = model("MultiHeadAttention", [("q", q), ("k", rand(rng, (1, 2, 8))), ("v", q)], ["y"],
                     {"num_heads": 2}, MS)
    expect_error(m, feeds, "must match")
    w = rand(rng, (8, 24))
    m, feeds = model("Attention", [("x", q), ("w", w)], ["y"], {"num_heads": 2}, MS)
    expect_error(m, feeds, "must match")
