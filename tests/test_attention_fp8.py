"""FP8 (float8e4m3fn) com.microsoft MultiHeadAttention on the CPU provider.

The models are the FP8 workflow itself: float32 activations -> QuantizeLinear(float8e4m3fn, per-
tensor scale) -> MultiHeadAttention(fp8 q, k, v, scales as inputs 10-12) -> float16/bfloat16.
The oracle quantises with its own numpy e4m3 rounding (nearest, ties to even, saturating like QuantizeLinear's
default), dequantises and runs scaled-dot-product attention in float64. The CPU path computes in
float32 on the dequantised values, so the only error left is the output's 16-bit rounding."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import kiln, rand, run_kiln  # noqa: E402

MS = "com.microsoft"
E4M3 = TensorProto.FLOAT8E4M3FN


def e4m3_round(y):
    """Nearest float8e4m3fn value (ties to even), saturating at +-448: 3 mantissa bits, normals from
    2^-6, subnormal spacing 2^-9."""
    y = np.clip(np.asarray(y, np.float64), -448.0, 448.0)
    a = np.abs(y)
    e = np.floor(np.log2(np.maximum(a, 2.0 ** -6)))
    quantum = 2.0 ** (e - 3)
    return np.sign(y) * np.round(a / quantum) * quantum  # np.round: half to even


def quant(x, s):
    """QuantizeLinear(saturate=1) then DequantizeLinear, as float64."""
    y = x.astype(np.float32) / np.float32(s)
    return e4m3_round(y) * np.float64(np.float32(s))


def sdpa_ref(q, k, v, N, scale, causal):
    B, S, D = q.shape
    L, Dv = k.shape[1], v.shape[2]
    H, Hv = D // N, Dv // N
    qh = q.reshape(B, S, N, H).transpose(0, 2, 1, 3)
    kh = k.reshape(B, L, N, H).transpose(0, 2, 1, 3)
    vh = v.reshape(B, L, N, Hv).transpose(0, 2, 1, 3)
    x = np.einsum("bnsh,bnth->bnst", qh, kh) * scale
    if causal:
        off = L - S
        mask = np.arange(L)[None, :] > (np.arange(S)[:, None] + off)
        x = np.where(mask, -np.inf, x)
    x = x - x.max(-1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("bnst,bnth->bnsh", p, vh)
    return o.transpose(0, 2, 1, 3).reshape(B, S, Dv)


def fp8_model(shapes, N, attrs=None, scale_types=None, qtypes=None, drop_scale=None, extra=None,
              mha_inputs=None, out_type=TensorProto.FLOAT16, n_out=1):
    """x{q,k,v} (float32) and s{q,k,v} (float32) -> QuantizeLinear -> MultiHeadAttention."""
    scale_types = scale_types or {}
    qtypes = qtypes or {}
    nodes, vis, inits = [], [], []
    for t in "qkv":
        vis.append(helper.make_tensor_value_info("x" + t, TensorProto.FLOAT, shapes[t]))
        st = scale_types.get(t, (TensorProto.FLOAT, []))
        vis.append(helper.make_tensor_value_info("s" + t, st[0], st[1]))
        qt = qtypes.get(t, E4M3)
        inits.append(helper.make_tensor("z" + t, qt, [], [0]))
        sname = "s" + t
        if st[0] != TensorProto.FLOAT:  # QuantizeLinear itself needs a float32 scale
            nodes.append(helper.make_node("Cast", ["s" + t], ["sf" + t], to=TensorProto.FLOAT))
            sname = "sf" + t
        nodes.append(helper.make_node("QuantizeLinear", ["x" + t, sname, "z" + t], ["q" + t]))
    ins = mha_inputs or (["qq", "qk", "qv"] + [""] * 7 + ["sq", "sk", "sv"])
    if drop_scale is not None:
        ins[10 + drop_scale] = ""
    for name, arr in (extra or {}).items():
        vis.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
    while ins and ins[-1] == "":
        ins.pop()
    outs = ["y"] + ["pk", "pv"][: n_out - 1]
    a = {"num_heads": N}
    a.update(attrs or {})
    nodes.append(helper.make_node("MultiHeadAttention", ins, outs, domain=MS, name="attn", **a))
    g = helper.make_graph(nodes, "g", vis, [helper.make_tensor_value_info(o, out_type if o == "y" else E4M3, None)
                                            for o in outs], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    m.ir_version = 10
    return m


def feeds_for(rng, B, S, L, N, H, Hv, outliers=False):
    x = {"q": rand(rng, (B, S, N * H)), "k": rand(rng, (B, L, N * H)), "v": rand(rng, (B, L, N * Hv))}
    if outliers:
        for t in "qk":
            flat = x[t].reshape(-1)
            idx = rng.choice(flat.size, size=max(1, flat.size // 100), replace=False)
            flat[idx] *= 20
    f = {}
    for t in "qkv":
        f["x" + t] = x[t]
        # the usual per-tensor calibration: the largest magnitude maps onto e4m3's 448
        f["s" + t] = np.float32(np.abs(x[t]).max() / 448.0)
    return f


def bsd(x):
    """(B, N, L, H) cached key/value -> (B, L, N·H); 3-D passes through."""
    return x if x.ndim == 3 else x.transpose(0, 2, 1, 3).reshape(x.shape[0], x.shape[2], -1)


def ref_for(f, N, scale, causal):
    q, k, v = (bsd(quant(f["x" + t], f["s" + t])) for t in "qkv")
    H = q.shape[2] // N
    return sdpa_ref(q, k, v, N, scale if scale else 1.0 / np.sqrt(H), causal)


CASES = [  # B, S, L, N, H, Hv, causal, scale
    (1, 1, 1, 1, 8, 8, 0, 0.0),
    (2, 5, 7, 2, 16, 16, 0, 0.0),
    (2, 9, 9, 3, 32, 24, 1, 0.0),
    (1, 70, 130, 2, 64, 64, 0, 0.2),
    (2, 33, 33, 1, 128, 128, 1, 0.0),
    (1, 17, 40, 2, 64, 64, 0, 0.0),
]


@pytest.mark.parametrize("B,S,L,N,H,Hv,causal,scale", CASES)
@pytest.mark.parametrize("out_type", [TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_mha_fp8_vs_numpy(B, S, L, N, H, Hv, causal, scale, out_type):
    rng = np.random.default_rng(hash((B, S, L, N, H, Hv, causal, out_type)) & 0xFFFF)
    attrs = {"unidirectional": causal}
    if scale:
        attrs["scale"] = scale
    if out_type == TensorProto.BFLOAT16:
        attrs["output_dtype"] = out_type
    shapes = {"q": [B, S, N * H], "k": [B, L, N * H], "v": [B, L, N * Hv]}
    m = fp8_model(shapes, N, attrs=attrs, out_type=out_type)
    f = feeds_for(rng, B, S, L, N, H, Hv)
    got = run_kiln(m, f)[0]
    want = ref_for(f, N, scale, causal)
    assert got.shape == want.shape
    if out_type == TensorProto.FLOAT16:
        assert got.dtype == np.float16
    else:  # the Python binding hands bfloat16 back widened to float32: the low 16 bits are zero
        assert not (np.asarray(got, np.float32).view(np.uint32) & 0xFFFF).any()
    # the inputs are exact fp8 values on both sides; what remains is float32 arithmetic and the
    # 16-bit output (half an ulp: 2^-11 relative for float16, 2^-8 for bfloat16)
    rel = 2.0 ** -10 if out_type == TensorProto.FLOAT16 else 2.0 ** -7
    np.testing.assert_allclose(got.astype(np.float64), want, rtol=rel, atol=rel * np.abs(want).max() + 1e-5)


def test_e4m3_round_matches_kiln_quantizer():
    """The oracle's rounding against kiln's QuantizeLinear -> DequantizeLinear (all codes' midpoints)."""
    x = np.concatenate([np.linspace(-500, 500, 20001), 2.0 ** -np.arange(0, 12, 0.25),
                        -(2.0 ** -np.arange(0, 12, 0.25))]).astype(np.float32)
    z = helper.make_tensor("z", E4M3, [], [0])
    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"]),
             helper.make_node("DequantizeLinear", ["q", "s", "z"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [x.size]),
                                       helper.make_tensor_value_info("s", TensorProto.FLOAT, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=[z])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    got = run_kiln(m, {"x": x, "s": np.float32(1.0)})[0]
    np.testing.assert_array_equal(got, e4m3_round(x).astype(np.float32))


def test_mha_fp8_cached_kv_4d():
    rng = np.random.default_rng(21)
    B, S, L, N, H = 2, 9, 23, 3, 32
    shapes = {"q": [B, S, N * H], "k": [B, N, L, H], "v": [B, N, L, H]}
    f = feeds_for(rng, B, S, L, N, H, H)
    for t in "kv":
        f["x" + t] = np.ascontiguousarray(f["x" + t].reshape(B, L, N, H).transpose(0, 2, 1, 3))
    got = run_kiln(fp8_model(shapes, N), f)[0].astype(np.float64)
    want = ref_for(f, N, 0.0, 0)
    np.testing.assert_allclose(got, want, rtol=2.0 ** -10, atol=2.0 ** -10 * np.abs(want).max())


def test_mha_fp8_outliers_and_tiny_scales():
    rng = np.random.default_rng(7)
    B, S, L, N, H = 2, 40, 64, 2, 64
    shapes = {"q": [B, S, N * H], "k": [B, L, N * H], "v": [B, L, N * H]}
    f = feeds_for(rng, B, S, L, N, H, H, outliers=True)
    for t in "qkv":  # tiny scales: the dequantised values are ~1e-3
        f["x" + t] = f["x" + t] * np.float32(1e-3)
        f["s" + t] = np.float32(f["s" + t] * 1e-3)
    got = run_kiln(fp8_model(shapes, N), f)[0].astype(np.float64)
    want = ref_for(f, N, 0.0, 0)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


def test_mha_fp8_quantisation_error_vs_float32():
    """Accuracy of the FP8 workflow against float32 attention of the unquantised inputs: per-tensor
    e4m3 keeps ~3 significant bits, so the output error is a few percent of its spread, not more."""
    rng = np.random.default_rng(11)
    B, S, L, N, H = 1, 64, 64, 2, 64
    shapes = {"q": [B, S, N * H], "k": [B, L, N * H], "v": [B, L, N * H]}
    f = {}
    for t, shp in shapes.items():
        f["x" + t] = rng.standard_normal(shp).astype(np.float32)
        f["s" + t] = np.float32(np.abs(f["x" + t]).max() / 448.0)
    got = run_kiln(fp8_model(shapes, N), f)[0].astype(np.float64)
    exact = sdpa_ref(f["xq"].astype(np.float64), f["xk"].astype(np.float64), f["xv"].astype(np.float64), N,
                     1.0 / np.sqrt(H), False)
    rmse = np.sqrt(np.mean((got - exact) ** 2)) / np.sqrt(np.mean(exact ** 2))
    assert rmse < 0.08, rmse


def base_shapes():
    return {"q": [1, 4, 16], "k": [1, 6, 16], "v": [1, 6, 16]}


def run_err(m, f, *words):
    with pytest.raises(kiln.KilnError) as e:
        run_kiln(m, f)
    msg = str(e.value)
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"


def small_feeds():
    return feeds_for(np.random.default_rng(3), 1, 4, 6, 2, 8, 8)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_mha_fp8_missing_scale(which):
    m = fp8_model(base_shapes(), 2, drop_scale=which)
    f = small_feeds()
    del f["s" + "qkv"[which]]
    m.graph.input.remove(next(i for i in m.graph.input if i.name == "s" + "qkv"[which]))
    # QuantizeLinear still needs the scale: give it a constant of its own
    m.graph.initializer.append(helper.make_tensor("s" + "qkv"[which], TensorProto.FLOAT, [], [0.01]))
    run_err(m, f, "MultiHeadAttention", "scale input", str(10 + which))


def test_mha_fp8_mixed_types():
    m = fp8_model(base_shapes(), 2, mha_inputs=["qq", "xk", "qv"] + [""] * 7 + ["sq", "sk", "sv"])
    run_err(m, small_feeds(), "MultiHeadAttention", "key is float", "float8e4m3fn")


def test_mha_fp8_scale_not_float32():
    m = fp8_model(base_shapes(), 2, scale_types={"k": (TensorProto.DOUBLE, [])})
    f = small_feeds()
    f["sk"] = np.float64(f["sk"])
    run_err(m, f, "k_scale", "float32")


def test_mha_fp8_scale_not_per_tensor():
    m = fp8_model(base_shapes(), 2, mha_inputs=["qq", "qk", "qv"] + [""] * 7 + ["sq", "sk2", "sv"],
                  extra={"sk2": np.zeros(2, np.float32)})
    f = small_feeds()
    f["sk2"] = np.array([0.01, 0.02], np.float32)
    run_err(m, f, "k_scale", "per-tensor")


@pytest.mark.parametrize("bad", [0.0, -1.0, np.inf])
def test_mha_fp8_scale_value(bad):
    m = fp8_model(base_shapes(), 2, mha_inputs=["qq", "qk", "qv"] + [""] * 7 + ["sq", "sk", "sv2"],
                  extra={"sv2": np.float32(1)})
    f = small_feeds()
    f["sv2"] = np.float32(bad)
    run_err(m, f, "value_scale", "finite positive")


@pytest.mark.parametrize("idx,name", [(4, "key_padding_mask"), (5, "attention_bias")])
def test_mha_fp8_rejects_masks(idx, name):
    arr = np.ones((1, 6), np.int32) if idx == 4 else rand(np.random.default_rng(1), (1, 2, 4, 6))
    ins = ["qq", "qk", "qv"] + [""] * 7 + ["sq", "sk", "sv"]
    ins[idx] = "extra"
    m = fp8_model(base_shapes(), 2, mha_inputs=ins, extra={"extra": arr})
    f = small_feeds()
    f["extra"] = arr
    run_err(m, f, "MultiHeadAttention", name, "not supported")


def test_mha_fp8_rejects_present_outputs():
    run_err(fp8_model(base_shapes(), 2, n_out=2), small_feeds(), "present", "not supported")


def test_mha_fp8_rejects_bad_output_dtype():
    run_err(fp8_model(base_shapes(), 2, attrs={"output_dtype": 1}, out_type=TensorProto.FLOAT), small_feeds(),
            "output_dtype", "float16")


def test_mha_fp8_rejects_causal_cross_lengths():
    m = fp8_model({"q": [1, 4, 16], "k": [1, 6, 16], "v": [1, 6, 16]}, 2, attrs={"unidirectional": 1})
    run_err(m, small_feeds(), "unidirectional", "key length 6 != query length 4")
