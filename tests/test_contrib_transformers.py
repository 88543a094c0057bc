"""com.microsoft ops of onnxruntime's transformers optimizer and LLM tools (EmbedLayerNormalization,
GroupQueryAttention, MatMulNBits, GatherBlockQuantized, BiasSplitGelu, GemmFastGelu, and the
existing BiasAdd / QuickGelu / SkipSimplifiedLayerNormalization) against onnxruntime on random
inputs. Ops onnxruntime runs only on GPU (BiasSplitGelu, GemmFastGelu, BiasAdd) are checked against
the same computation built from standard ONNX ops and run by onnxruntime."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import assert_same, kiln, node_model, rand, run_kiln, run_ort

MS = "com.microsoft"


def ms_model(op, inputs, outputs, attrs=None, initializers=None):
    return node_model(op, inputs, outputs, attrs=attrs, domain=MS, initializers=initializers)


def feeds_of(inputs, initializers=None):
    initializers = initializers or {}
    return {n: a for n, a in inputs if n and n not in initializers}


def compare(model, feeds, rtol=1e-4, atol=1e-5, outputs=None):
    want = run_ort(model, feeds)
    got = run_kiln(model, feeds)
    for i, (g, w) in enumerate(zip(got, want)):
        if outputs is not None and i not in outputs:
            continue
        assert_same(g, w, rtol, atol, what=f"output {i}")
    return got, want


def expect_error(model, feeds, *words):
    with pytest.raises(Exception) as ei:
        run_kiln(model, feeds)
    msg = str(ei.value)
    for w in words:
        assert w in msg, msg


# ---------------------------------------------------------------- MatMulNBits

def quantize_nbits(rng, N, K, block, bits=4, zp_mode="packed"):
    """Random W (N, K) quantized blockwise the way MatMulNBits stores it."""
    kb = (K + block - 1) // block
    q = rng.integers(0, 2 ** bits, size=(N, kb * block)).astype(np.uint8)
    scales = rng.uniform(0.01, 0.2, size=(N, kb)).astype(np.float32)
    per = 8 // bits
    packed = np.zeros((N, kb * block // per), np.uint8)
    for i in range(per):
        packed |= (q[:, i::per] << (bits * i)).astype(np.uint8)
    B = packed.reshape(N, kb, block * bits // 8)
    zp = None
    if zp_mode == "packed":
        z = rng.integers(0, 2 ** bits, size=(N, kb)).astype(np.uint8)
        zrow = (kb * bits + 7) // 8
        zpad = np.zeros((N, zrow * per), np.uint8)
        zpad[:, :kb] = z
        zp = np.zeros((N, zrow), np.uint8)
        for i in range(per):
            zp |= (zpad[:, i::per] << (bits * i)).astype(np.uint8)
        zp = zp.reshape(-1)
    elif zp_mode == "float":
        zp = rng.uniform(0, 2 ** bits - 1, size=(N * kb,)).astype(np.float32)
    return B, scales.reshape(-1), zp


# onnxruntime takes float zero points only with bits=4
@pytest.mark.parametrize("bits,zp_mode", [(4, "none"), (4, "packed"), (4, "float"), (8, "none"),
                                          (8, "packed"), (2, "none"), (2, "packed")])
@pytest.mark.parametrize("block", [16, 32, 64, 128, 256])
def test_matmul_nbits(bits, block, zp_mode):
    rng = np.random.default_rng(block * 7 + bits)
    for (lead, K, N) in [((3,), 96, 40), ((2, 5), 300, 33), ((1,), 512, 64)]:
        B, scales, zp = quantize_nbits(rng, N, K, block, bits, zp_mode)
        A = rand(rng, lead + (K,))
        bias = rand(rng, (N,))
        inits = {"B": B, "scales": scales}
        names = ["A", "B", "scales"]
        if zp is not None:
            inits["zp"] = zp
            names.append("zp")
        else:
            names.append("")
        for with_bias in (False, True):
            ins = [(n, A if n == "A" else inits.get(n)) for n in names]
            ini = dict(inits)
            if with_bias:
                ins += [("", None), ("bias", bias)]
                ini["bias"] = bias
            m = ms_model("MatMulNBits", ins, ["Y"],
                         attrs=dict(K=K, N=N, bits=bits, block_size=block),
                         initializers=ini)
            compare(m, {"A": A}, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("isa", ["portable", "native"])
@pytest.mark.parametrize("M", [1, 3, 8, 9, 40])
def test_matmul_nbits_paths(isa, M, monkeypatch):
    """The fused few-row product (M <= 8) and the tiled sgemm one, vectorised and portable, with
    a K that is not a multiple of the block size."""
    if isa == "portable":
        monkeypatch.setenv("KILN_NBITS_ISA", "portable")
    rng = np.random.default_rng(M)
    for K, N, block, zp_mode in [(200, 37, 32, "packed"), (256, 16, 16, "none"), (130, 70, 128, "float")]:
        B, scales, zp = quantize_nbits(rng, N, K, block, 4, zp_mode)
        A, bias = rand(rng, (M, K)), rand(rng, (N,))
        ins = [("A", A), ("B", B), ("s", scales), ("z" if zp is not None else "", zp), ("", None), ("bias", bias)]
        inits = {"B": B, "s": scales, "bias": bias}
        if zp is not None:
            inits["z"] = zp
        m = ms_model("MatMulNBits", ins, ["Y"], attrs=dict(K=K, N=N, bits=4, block_size=block), initializers=inits)
        compare(m, {"A": A}, rtol=2e-4, atol=2e-4)


def test_matmul_nbits_accuracy_level():
    """accuracy_level 4 lets onnxruntime quantize A to int8; kiln accepts it and computes in
    float32, so the two agree to within that quantization error."""
    rng = np.random.default_rng(9)
    K, N, block = 256, 32, 32
    B, scales, zp = quantize_nbits(rng, N, K, block, 4, "packed")
    A = rand(rng, (3, K))
    m = ms_model("MatMulNBits", [("A", A), ("B", B), ("scales", scales), ("zp", zp)], ["Y"],
                 attrs=dict(K=K, N=N, bits=4, block_size=block, accuracy_level=4),
                 initializers={"B": B, "scales": scales, "zp": zp})
    want = run_ort(m, {"A": A})[0]
    got = run_kiln(m, {"A": A})[0]
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()


def test_matmul_nbits_runtime_weights_and_fp16():
    """Weights as graph inputs (not constants) and float16 activations."""
    rng = np.random.default_rng(3)
    K, N, block = 128, 24, 32
    B, scales, zp = quantize_nbits(rng, N, K, block, 4, "packed")
    A = rand(rng, (4, K))
    m = ms_model("MatMulNBits", [("A", A), ("B", B), ("scales", scales), ("zp", zp)], ["Y"],
                 attrs=dict(K=K, N=N, bits=4, block_size=block))
    compare(m, {"A": A, "B": B, "scales": scales, "zp": zp}, rtol=2e-4, atol=2e-4)
    A16, s16 = A.astype(np.float16), scales.astype(np.float16)
    m = ms_model("MatMulNBits", [("A", A16), ("B", B), ("scales", s16)], ["Y"],
                 attrs=dict(K=K, N=N, bits=4, block_size=block), initializers={"B": B, "scales": s16})
    want = run_ort(m, {"A": A16})[0]
    got = run_kiln(m, {"A": A16})[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want.astype(np.float32), rtol=2e-2, atol=5e-2)


def test_matmul_nbits_ort_quantizer():
    """A MatMul quantized by onnxruntime's own MatMulNBitsQuantizer (4-bit, symmetric and not)."""
    qmod = pytest.importorskip("onnxruntime.quantization.matmul_nbits_quantizer")
    import onnx
    rng = np.random.default_rng(11)
    K, N = 256, 48
    W = rand(rng, (K, N))
    A = rand(rng, (5, K))
    for sym in (True, False):
        for block in (32, 128):
            m = node_model("MatMul", [("A", A), ("W", W)], ["Y"], initializers={"W": W})
            q = qmod.MatMulNBitsQuantizer(m, block_size=block, is_symmetric=sym)
            q.process()
            qm = q.model.model
            assert any(n.op_type == "MatMulNBits" for n in qm.graph.node)
            compare(qm, {"A": A}, rtol=2e-4, atol=2e-4)


def test_matmul_nbits_bad_input():
    rng = np.random.default_rng(5)
    K, N, block = 64, 8, 32
    B, scales, _ = quantize_nbits(rng, N, K, block, 4, "none")
    A = rand(rng, (2, K))
    m = ms_model("MatMulNBits", [("A", A), ("B", B), ("scales", scales)], ["Y"],
                 attrs=dict(K=K + 32, N=N, bits=4, block_size=block))
    expect_error(m, {"A": A, "B": B, "scales": scales}, "K=96")
    m = ms_model("MatMulNBits", [("A", A), ("B", B), ("scales", scales)], ["Y"],
                 attrs=dict(K=K, N=N, bits=4, block_size=24))
    expect_error(m, {"A": A, "B": B, "scales": scales}, "block_size")
    gidx = np.arange(K, dtype=np.int32) // block
    m = ms_model("MatMulNBits", [("A", A), ("B", B), ("scales", scales), ("", None), ("g", gidx)],
                 ["Y"], attrs=dict(K=K, N=N, bits=4, block_size=block))
    expect_error(m, {"A": A, "B": B, "scales": scales, "g": gidx}, "g_idx")


# ---------------------------------------------------------------- GatherBlockQuantized

def gbq_model(data_t, idx, scales, zp_t, attrs):
    """data_t / zp_t: TensorProto initializers (int4/uint4/uint8); idx is a graph input."""
    names = ["data", "idx", "scales"] + (["zp"] if zp_t is not None else [])
    node = helper.make_node("GatherBlockQuantized", names, ["Y"], domain=MS, **attrs)
    inits = [data_t, numpy_helper.from_array(scales, "scales")]
    if zp_t is not None:
        inits.append(zp_t)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("idx", helper.np_dtype_to_tensor_dtype(idx.dtype), idx.shape)],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("qtype", ["int4", "uint4"])
@pytest.mark.parametrize("shape,gaxis,qaxis", [((6, 64), 0, 1), ((5, 32), 0, 1), ((4, 3, 32), 0, 2),
                                               ((64, 6), 1, 0), ((3, 5, 48), 1, 2)])
@pytest.mark.parametrize("with_zp", [False, True])
def test_gather_block_quantized_4bit(qtype, shape, gaxis, qaxis, with_zp):
    rng = np.random.default_rng(sum(shape) + gaxis + with_zp)
    block = 16
    lo, hi = (-8, 8) if qtype == "int4" else (0, 16)
    tt = TensorProto.INT4 if qtype == "int4" else TensorProto.UINT4
    q = rng.integers(lo, hi, size=shape)
    sshape = list(shape)
    sshape[qaxis] = (shape[qaxis] + block - 1) // block
    scales = rng.uniform(0.1, 1.0, size=sshape).astype(np.float32)
    data_t = helper.make_tensor("data", tt, shape, q.reshape(-1).tolist())
    zp_t = None
    if with_zp:
        z = rng.integers(lo, hi, size=sshape)
        zp_t = helper.make_tensor("zp", tt, sshape, z.reshape(-1).tolist())
    G = shape[gaxis]
    for idx in (np.array([0, G - 1, 1], np.int64), rng.integers(-G, G, size=(2, 3)).astype(np.int32)):
        m = gbq_model(data_t, idx, scales, zp_t, dict(gather_axis=gaxis, quantize_axis=qaxis, block_size=block))
        compare(m, {"idx": idx}, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("with_zp", [False, True])
def test_gather_block_quantized_uint8(bits, with_zp):
    rng = np.random.default_rng(bits * 3 + with_zp)
    V, D, block = 10, 64, 32
    per = 8 // bits
    q = rng.integers(0, 2 ** bits, size=(V, D)).astype(np.uint8)
    packed = np.zeros((V, D // per), np.uint8)
    for i in range(per):
        packed |= (q[:, i::per] << (bits * i)).astype(np.uint8)
    nb = D // block
    scales = rng.uniform(0.1, 1.0, size=(V, nb)).astype(np.float32)
    zp_t = None
    if with_zp:
        z = rng.integers(0, 2 ** bits, size=(V, nb)).astype(np.uint8)
        zr = (nb + per - 1) // per
        zpad = np.zeros((V, zr * per), np.uint8)
        zpad[:, :nb] = z
        zp = np.zeros((V, zr), np.uint8)
        for i in range(per):
            zp |= (zpad[:, i::per] << (bits * i)).astype(np.uint8)
        zp_t = numpy_helper.from_array(zp, "zp")
    idx = rng.integers(0, V, size=(3, 4)).astype(np.int64)
    m = gbq_model(numpy_helper.from_array(packed, "data"), idx, scales, zp_t,
                  dict(gather_axis=0, quantize_axis=1, block_size=block, bits=bits))
    compare(m, {"idx": idx}, rtol=1e-6, atol=1e-6)


def test_gather_block_quantized_bad_input():
    rng = np.random.default_rng(1)
    q = rng.integers(0, 16, size=(4, 32))
    data_t = helper.make_tensor("data", TensorProto.UINT4, (4, 32), q.reshape(-1).tolist())
    idx = np.array([1, 2], np.int64)
    m = gbq_model(data_t, idx, rng.uniform(0.1, 1, size=(4, 3)).astype(np.float32), None,
                  dict(gather_axis=0, quantize_axis=1, block_size=16))
    expect_error(m, {"idx": idx}, "scales")
    m = gbq_model(data_t, idx, rng.uniform(0.1, 1, size=(4, 2)).astype(np.float32), None,
                  dict(gather_axis=0, quantize_axis=1, block_size=12))
    expect_error(m, {"idx": idx}, "block_size")


# ---------------------------------------------------------------- EmbedLayerNormalization

@pytest.mark.parametrize("B,S,H", [(2, 5, 16), (3, 7, 32), (1, 1, 8)])
@pytest.mark.parametrize("segment", [False, True])
@pytest.mark.parametrize("mask", [False, True])
@pytest.mark.parametrize("posids", [None, "full", "bcast"])
def test_embed_layer_norm(B, S, H, segment, mask, posids):
    rng = np.random.default_rng(B * 100 + S * 10 + H + segment * 3 + mask)
    V, P, G = 50, 20, 3
    ids = rng.integers(0, V, size=(B, S)).astype(np.int32)
    ins = [("ids", ids)]
    ins.append(("seg", rng.integers(0, G, size=(B, S)).astype(np.int32)) if segment else ("", None))
    ins += [("word", rand(rng, (V, H))), ("pos", rand(rng, (P, H)))]
    ins.append(("segemb", rand(rng, (G, H))) if segment else ("", None))
    ins += [("gamma", rand(rng, (H,))), ("beta", rand(rng, (H,)))]
    if mask or posids:
        m = rng.integers(0, 2, size=(B, S)).astype(np.int32)
        m[:, 0] = 1
        ins.append(("mask", m) if mask else ("", None))
    if posids:
        shape = (B, S) if posids == "full" else (1, S)
        ins.append(("posids", rng.integers(0, P, size=shape).astype(np.int32)))
    for outs in (["Y", "mask_index"], ["Y", "mask_index", "sum"], ["Y", "", "sum"]):
        model = ms_model("EmbedLayerNormalization", ins, outs, attrs=dict(epsilon=1e-5))
        compare(model, feeds_of(ins), rtol=1e-4, atol=1e-4)


def test_embed_layer_norm_mask_values_and_fp16():
    """mask_index counts the mask's ones (other values do not count); float16 tables."""
    rng = np.random.default_rng(7)
    B, S, H = 3, 6, 8
    ids = rng.integers(0, 30, size=(B, S)).astype(np.int32)
    mask = rng.integers(0, 3, size=(B, S)).astype(np.int32)
    ins = [("ids", ids), ("", None), ("word", rand(rng, (30, H))), ("pos", rand(rng, (S, H))),
           ("", None), ("gamma", rand(rng, (H,))), ("beta", rand(rng, (H,))), ("mask", mask)]
    for mit in (0, 1):
        compare(ms_model("EmbedLayerNormalization", ins, ["Y", "mi"], attrs=dict(mask_index_type=mit)),
                feeds_of(ins), rtol=1e-4, atol=1e-4)
    ins16 = [(n, a.astype(np.float16) if a is not None and a.dtype == np.float32 else a) for n, a in ins]
    m = ms_model("EmbedLayerNormalization", ins16, ["Y", "mi"])
    want, got = run_ort(m, feeds_of(ins16)), run_kiln(m, feeds_of(ins16))
    assert got[0].dtype == np.float16
    np.testing.assert_allclose(got[0].astype(np.float32), want[0].astype(np.float32), atol=2e-2, rtol=2e-2)
    assert_same(got[1], want[1])


def test_embed_layer_norm_bad_input():
    rng = np.random.default_rng(2)
    ids = np.array([[1, 2, 40]], np.int32)
    ins = [("ids", ids), ("", None), ("word", rand(rng, (30, 8))), ("pos", rand(rng, (4, 8))),
           ("", None), ("gamma", rand(rng, (8,))), ("beta", rand(rng, (8,)))]
    expect_error(ms_model("EmbedLayerNormalization", ins, ["Y", "mi"]), feeds_of(ins), "input_ids", "40")
    ins[5] = ("gamma", rand(rng, (7,)))
    ins[0] = ("ids", np.array([[1, 2, 3]], np.int32))
    expect_error(ms_model("EmbedLayerNormalization", ins, ["Y", "mi"]), feeds_of(ins), "gamma")


# ---------------------------------------------------------------- BiasSplitGelu, GemmFastGelu, BiasAdd

def ort_reference(nodes, inputs, out, opset=20):
    """Runs a graph of standard ONNX ops on onnxruntime (the oracle for GPU-only contrib ops)."""
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
           for n, a in inputs]
    g = helper.make_graph(nodes, "ref", vis, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return run_ort(m, dict(inputs))[0]


@pytest.mark.parametrize("shape", [(2, 5, 16), (1, 7, 64), (3, 1, 2560)])
def test_bias_split_gelu(shape):
    rng = np.random.default_rng(shape[2])
    X, b = rand(rng, shape), rand(rng, (shape[2],))
    half = shape[2] // 2
    got = run_kiln(ms_model("BiasSplitGelu", [("X", X), ("b", b)], ["Y"]), {"X": X, "b": b})[0]
    want = ort_reference([helper.make_node("Add", ["X", "b"], ["z"]),
                          helper.make_node("Split", ["z"], ["l", "r"], axis=-1, num_outputs=2),
                          helper.make_node("Gelu", ["r"], ["g"]),
                          helper.make_node("Mul", ["l", "g"], ["Y"])], [("X", X), ("b", b)], "Y")
    assert got.shape == shape[:2] + (half,)
    assert_same(got, want, rtol=1e-5, atol=1e-5)
    expect_error(ms_model("BiasSplitGelu", [("X", X), ("b", b[:-1])], ["Y"]), {"X": X, "b": b[:-1]}, "bias")


@pytest.mark.parametrize("xshape,N", [((4, 16), 24), ((2, 3, 32), 8), ((1, 64), 100)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_gemm_fast_gelu(xshape, N, with_bias):
    rng = np.random.default_rng(N + with_bias)
    X, W, b = rand(rng, xshape), rand(rng, (xshape[-1], N), low=-0.5, high=0.5), rand(rng, (N,))
    ins = [("X", X), ("W", W)] + ([("b", b)] if with_bias else [])
    got = run_kiln(ms_model("GemmFastGelu", ins, ["Y"]), dict(ins))[0]
    fg = helper.make_node("FastGelu", ["m"] + (["b"] if with_bias else []), ["Y"], domain=MS)
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in ins]
    g = helper.make_graph([helper.make_node("MatMul", ["X", "W"], ["m"]), fg], "ref", vis,
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)])
    m.ir_version = 10
    want = run_ort(m, dict(ins))[0]
    assert_same(got, want, rtol=1e-4, atol=1e-5)


def test_gemm_fast_gelu_bad_input():
    rng = np.random.default_rng(0)
    X, W = rand(rng, (2, 8)), rand(rng, (7, 4))
    expect_error(ms_model("GemmFastGelu", [("X", X), ("W", W)], ["Y"]), {"X": X, "W": W}, "(K, N)")


def test_bias_add_matches_ort_definition():
    rng = np.random.default_rng(4)
    X, b, s = rand(rng, (2, 5, 12)), rand(rng, (12,)), rand(rng, (2, 5, 12))
    got = run_kiln(ms_model("BiasAdd", [("X", X), ("b", b), ("s", s)], ["Y"]), {"X": X, "b": b, "s": s})[0]
    want = ort_reference([helper.make_node("Add", ["X", "b"], ["t"]), helper.make_node("Add", ["t", "s"], ["Y"])],
                         [("X", X), ("b", b), ("s", s)], "Y")
    assert_same(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("alpha", [None, 1.0, 1.702, -0.5])
def test_quick_gelu(alpha):
    rng = np.random.default_rng(6)
    X = rand(rng, (3, 4, 33), low=-6, high=6)
    attrs = {} if alpha is None else {"alpha": alpha}
    compare(ms_model("QuickGelu", [("X", X)], ["Y"], attrs=attrs), {"X": X}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("shape", [(2, 3, 16), (4, 64), (1, 5, 7)])
@pytest.mark.parametrize("with_bias", [False, True])
def test_skip_simplified_layer_norm(shape, with_bias):
    rng = np.random.default_rng(shape[-1] + with_bias)
    H = shape[-1]
    ins = [("X", rand(rng, shape)), ("skip", rand(rng, shape)), ("gamma", rand(rng, (H,)))]
    if with_bias:
        ins.append(("bias", rand(rng, (H,))))
    for outs in (["Y"], ["Y", "mean", "inv", "sum"]):
        compare(ms_model("SkipSimplifiedLayerNormalization", ins, outs, attrs=dict(epsilon=1e-5)),
                dict(ins), rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- GroupQueryAttention

def gqa_model(B, S, N, Nkv, H, P, packed=False, rotary=None, with_pos=False, bias_shape=None,
              attrs=None, dtype=np.float32, sink=False):
    """A GroupQueryAttention node with every input a graph input; P = past buffer rows."""
    tt = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    vi = helper.make_tensor_value_info
    slots = [("q", [B, S, (N + 2 * Nkv) * H if packed else N * H], tt)]
    slots += [None, None] if packed else [("k", [B, S, Nkv * H], tt), ("v", [B, S, Nkv * H], tt)]
    slots += [("pk", [B, Nkv, P, H], tt), ("pv", [B, Nkv, P, H], tt),
              ("seqlens", [B], TensorProto.INT32), ("total", [], TensorProto.INT32)]
    slots += [("cos", list(rotary), tt), ("sin", list(rotary), tt)] if rotary else [None, None]
    slots.append(("pos", [B, S], TensorProto.INT64) if with_pos else None)
    slots.append(("bias", list(bias_shape), tt) if bias_shape else None)
    slots.append(("sink", [N], tt) if sink else None)
    while slots[-1] is None:
        slots.pop()
    names = [sl[0] if sl else "" for sl in slots]
    ins = [vi(n, t, shape) for sl in slots if sl for n, shape, t in [sl]]
    a = dict(num_heads=N, kv_num_heads=Nkv)
    if rotary:
        a["do_rotary"] = 1
    a.update(attrs or {})
    node = helper.make_node("GroupQueryAttention", names, ["out", "pres_k", "pres_v"], domain=MS, **a)
    outs = [vi("out", tt, None), vi("pres_k", tt, None), vi("pres_v", tt, None)]
    g = helper.make_graph([node], "gqa", ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21), helper.make_opsetid(MS, 1)])
    m.ir_version = 10
    return m


def gqa_compare(m, feeds, totals, rtol=1e-4, atol=1e-5):
    """Compares the output and the valid rows [0, total_b) of the present caches."""
    want = run_ort(m, feeds)
    got = run_kiln(m, feeds)
    assert_same(got[0], want[0], rtol, atol, what="output")
    for i in (1, 2):
        assert got[i].shape == want[i].shape, (got[i].shape, want[i].shape)
        for b, t in enumerate(totals):
            assert_same(got[i][b, :, :t], want[i][b, :, :t], rtol, atol, what=f"present {i} batch {b}")
    return got


def rope_cache(rng, rows, half):
    ang = rng.uniform(0, 6.28, size=(rows, half))
    return np.cos(ang).astype(np.float32), np.sin(ang).astype(np.float32)


@pytest.mark.parametrize("N,Nkv,H", [(4, 2, 16), (4, 4, 16), (6, 1, 32), (8, 2, 64)])
@pytest.mark.parametrize("packed", [False, True])
@pytest.mark.parametrize("rotary", [None, "half", "interleaved", "partial"])
@pytest.mark.parametrize("shared", [False, True])
def test_gqa_prompt_then_decode(N, Nkv, H, packed, rotary, shared):
    rng = np.random.default_rng(N * 31 + Nkv * 7 + H + packed + shared * 5)
    B, S, steps, maxlen = 2, 5, 3, 12
    rot = None
    cos = sin = None
    if rotary:
        half = H // 4 if rotary == "partial" and H >= 32 else H // 2  # onnxruntime: a multiple of 8
        cos, sin = rope_cache(rng, maxlen, half)
        rot = cos.shape
    attrs = {"rotary_interleaved": 1} if rotary == "interleaved" else {}

    def run_step(S_, past_k, past_v, total):
        m = gqa_model(B, S_, N, Nkv, H, past_k.shape[2], packed=packed, rotary=rot, attrs=attrs)
        feeds = {"q": rand(rng, (B, S_, (N + 2 * Nkv) * H if packed else N * H)),
                 "pk": past_k, "pv": past_v,
                 "seqlens": np.full((B,), total - 1, np.int32), "total": np.array(total, np.int32)}
        if not packed:
            feeds["k"] = rand(rng, (B, S_, Nkv * H))
            feeds["v"] = rand(rng, (B, S_, Nkv * H))
        if rotary:
            feeds["cos"], feeds["sin"] = cos, sin
        return gqa_compare(m, feeds, [total] * B)

    P0 = maxlen if shared else 0
    pk = rand(rng, (B, Nkv, P0, H))
    pv = rand(rng, (B, Nkv, P0, H))
    out = run_step(S, pk, pv, S)
    total = S
    for _ in range(steps):
        pk, pv = out[1], out[2]
        total += 1
        out = run_step(1, pk, pv, total)
        assert out[1].shape[2] == (maxlen if shared else total)


@pytest.mark.parametrize("attrs", [{"local_window_size": 2}, {"local_window_size": 4}, {"softcap": 2.0},
                                   {"scale": 0.3}, {"softcap": 1.5, "local_window_size": 3, "scale": 0.5},
                                   {"causal": 0}])
def test_gqa_attributes(attrs):
    rng = np.random.default_rng(len(str(attrs)))
    B, S, N, Nkv, H = 2, 7, 4, 2, 16
    feeds = {"q": rand(rng, (B, S, N * H)), "k": rand(rng, (B, S, Nkv * H)), "v": rand(rng, (B, S, Nkv * H)),
             "pk": rand(rng, (B, Nkv, 0, H)), "pv": rand(rng, (B, Nkv, 0, H)),
             "seqlens": np.full((B,), S - 1, np.int32), "total": np.array(S, np.int32)}
    gqa_compare(gqa_model(B, S, N, Nkv, H, 0, attrs=attrs), feeds, [S] * B)
    # decode steps with the window sliding over a longer cache
    past = 9
    feeds = {"q": rand(rng, (B, 1, N * H)), "k": rand(rng, (B, 1, Nkv * H)), "v": rand(rng, (B, 1, Nkv * H)),
             "pk": rand(rng, (B, Nkv, past, H)), "pv": rand(rng, (B, Nkv, past, H)),
             "seqlens": np.full((B,), past, np.int32), "total": np.array(past + 1, np.int32)}
    gqa_compare(gqa_model(B, 1, N, Nkv, H, past, attrs=attrs), feeds, [past + 1] * B)


@pytest.mark.parametrize("rotary", [False, True])
def test_gqa_ragged_batch_decode(rotary):
    """Decode with a different length per batch entry in one shared max-length buffer."""
    rng = np.random.default_rng(21 + rotary)
    B, N, Nkv, H, maxlen = 3, 4, 2, 16, 16
    seqlens = np.array([6, 3, 10], np.int32)
    rot = None
    feeds = {"q": rand(rng, (B, 1, N * H)), "k": rand(rng, (B, 1, Nkv * H)), "v": rand(rng, (B, 1, Nkv * H)),
             "pk": rand(rng, (B, Nkv, maxlen, H)), "pv": rand(rng, (B, Nkv, maxlen, H)),
             "seqlens": seqlens, "total": np.array(seqlens.max() + 1, np.int32)}
    if rotary:
        feeds["cos"], feeds["sin"] = rope_cache(rng, maxlen, H // 2)
        rot = feeds["cos"].shape
    m = gqa_model(B, 1, N, Nkv, H, maxlen, rotary=rot, attrs={"local_window_size": 5})
    gqa_compare(m, feeds, (seqlens + 1).tolist())


@pytest.mark.parametrize("sink,smooth", [(True, 0), (False, 1), (True, 1)])
def test_gqa_head_sink_and_smooth_softmax(sink, smooth):
    rng = np.random.default_rng(77 + sink + 2 * smooth)
    B, S, N, Nkv, H = 2, 5, 4, 2, 16
    attrs = {"smooth_softmax": smooth} if smooth else {}
    feeds = {"q": rand(rng, (B, S, N * H)), "k": rand(rng, (B, S, Nkv * H)), "v": rand(rng, (B, S, Nkv * H)),
             "pk": rand(rng, (B, Nkv, 0, H)), "pv": rand(rng, (B, Nkv, 0, H)),
             "seqlens": np.full((B,), S - 1, np.int32), "total": np.array(S, np.int32)}
    if sink:
        feeds["sink"] = rand(rng, (N,))
    gqa_compare(gqa_model(B, S, N, Nkv, H, 0, attrs=attrs, sink=sink), feeds, [S] * B)
    past = 7
    feeds.update(q=rand(rng, (B, 1, N * H)), k=rand(rng, (B, 1, Nkv * H)), v=rand(rng, (B, 1, Nkv * H)),
                 pk=rand(rng, (B, Nkv, past, H)), pv=rand(rng, (B, Nkv, past, H)),
                 seqlens=np.array([past, past - 3], np.int32), total=np.array(past + 1, np.int32))
    gqa_compare(gqa_model(B, 1, N, Nkv, H, past, attrs=dict(attrs, local_window_size=3), sink=sink),
                feeds, [past + 1, past - 2])


def test_gqa_right_padded_prompt():
    """First prompt where one batch entry is shorter (seqlens_k < S - 1)."""
    rng = np.random.default_rng(66)
    B, S, N, Nkv, H = 2, 6, 4, 2, 16
    feeds = {"q": rand(rng, (B, S, N * H)), "k": rand(rng, (B, S, Nkv * H)), "v": rand(rng, (B, S, Nkv * H)),
             "pk": rand(rng, (B, Nkv, 0, H)), "pv": rand(rng, (B, Nkv, 0, H)),
             "seqlens": np.array([S - 1, 2], np.int32), "total": np.array(S, np.int32)}
    gqa_compare(gqa_model(B, S, N, Nkv, H, 0), feeds, [S, 3])


def test_gqa_subsequent_prompt_position_ids_and_bias():
    """A second chunk of a prompt (B=1, S>1 with past), explicit position_ids, attention_bias."""
    rng = np.random.default_rng(33)
    B, S, N, Nkv, H, past = 1, 4, 4, 2, 16, 6
    total = past + S
    cos, sin = rope_cache(rng, 32, H // 2)
    feeds = {"q": rand(rng, (B, S, N * H)), "k": rand(rng, (B, S, Nkv * H)), "v": rand(rng, (B, S, Nkv * H)),
             "pk": rand(rng, (B, Nkv, past, H)), "pv": rand(rng, (B, Nkv, past, H)),
             "seqlens": np.array([total - 1], np.int32), "total": np.array(total, np.int32),
             "cos": cos, "sin": sin}
    gqa_compare(gqa_model(B, S, N, Nkv, H, past, rotary=cos.shape), feeds, [total])
    feeds["pos"] = rng.integers(0, 32, size=(B, S)).astype(np.int64)
    gqa_compare(gqa_model(B, S, N, Nkv, H, past, rotary=cos.shape, with_pos=True), feeds, [total])
    del feeds["pos"], feeds["cos"], feeds["sin"]
    for bshape in [(1, 1, S, total), (B, N, S, total)]:
        feeds["bias"] = rand(rng, bshape)
        gqa_compare(gqa_model(B, S, N, Nkv, H, past, bias_shape=bshape), feeds, [total])


def test_gqa_fp16():
    rng = np.random.default_rng(44)
    B, S, N, Nkv, H = 2, 3, 4, 2, 16
    f = lambda a: a.astype(np.float16)
    feeds = {"q": f(rand(rng, (B, S, N * H))), "k": f(rand(rng, (B, S, Nkv * H))), "v": f(rand(rng, (B, S, Nkv * H))),
             "pk": f(rand(rng, (B, Nkv, 0, H))), "pv": f(rand(rng, (B, Nkv, 0, H))),
             "seqlens": np.full((B,), S - 1, np.int32), "total": np.array(S, np.int32)}
    m = gqa_model(B, S, N, Nkv, H, 0, dtype=np.float16)
    want, got = run_ort(m, feeds), run_kiln(m, feeds)
    for g, w in zip(got, want):
        assert g.dtype == np.float16
        np.testing.assert_allclose(g.astype(np.float32), w.astype(np.float32), rtol=1e-2, atol=1e-2)


def test_gqa_bad_input():
    rng = np.random.default_rng(55)
    B, S, N, Nkv, H = 2, 3, 4, 3, 16
    feeds = {"q": rand(rng, (B, S, N * H)), "k": rand(rng, (B, S, Nkv * H)), "v": rand(rng, (B, S, Nkv * H)),
             "pk": rand(rng, (B, Nkv, 0, H)), "pv": rand(rng, (B, Nkv, 0, H)),
             "seqlens": np.full((B,), S - 1, np.int32), "total": np.array(S, np.int32)}
    expect_error(gqa_model(B, S, N, Nkv, H, 0), feeds, "kv_num_heads")
    Nkv = 2
    feeds.update(k=rand(rng, (B, S, Nkv * H)), v=rand(rng, (B, S, Nkv * H)),
                 pk=rand(rng, (B, Nkv, 0, H)), pv=rand(rng, (B, Nkv, 0, H)))
    bad = dict(feeds, seqlens=np.array([S - 1, S + 3], np.int32))
    expect_error(gqa_model(B, S, N, Nkv, H, 0), bad, "seqlens_k[1]")
    bad = dict(feeds, k=rand(rng, (B, S, Nkv * H + 1)))
    m = gqa_model(B, S, N, Nkv, H, 0)
    m.graph.input[1].type.tensor_type.shape.dim[2].dim_value = Nkv * H + 1
    expect_error(m, bad, "key")
    cos, sin = rope_cache(rng, 2, H // 2)
    expect_error(gqa_model(B, S, N, Nkv, H, 0, rotary=cos.shape), dict(feeds, cos=cos, sin=sin), "cos_cache")


# ---------------------------------------------------------------- hostile inputs

def run_or_error(model, feeds):
    """Runs the model; kiln may refuse it with a KilnError but must not crash (run under ASan)."""
    try:
        s = kiln.InferenceSession(model.SerializeToString(), threads=2)
        return s.run(None, feeds)
    except kiln.KilnError as e:
        assert str(e)
        return None


@pytest.mark.parametrize("op,n_in", [("MatMulNBits", 3), ("GatherBlockQuantized", 3),
                                     ("EmbedLayerNormalization", 6), ("BiasSplitGelu", 2),
                                     ("GemmFastGelu", 2), ("GroupQueryAttention", 7)])
def test_absent_required_inputs_are_refused(op, n_in):
    m = ms_model(op, [("", None)] * n_in, ["y"], attrs={})
    with pytest.raises(kiln.KilnError):
        kiln.InferenceSession(m.SerializeToString(), threads=1).run(None, {})


def test_hostile_shapes_and_values():
    rng = np.random.default_rng(99)
    f = lambda *s: rand(rng, s)
    cases = []
    # MatMulNBits: zero rows, wrong byte counts, scalar A, absurd attributes
    B, sc, zp = quantize_nbits(rng, 8, 64, 32, 4, "packed")
    for K, N, blk, A in [(64, 8, 32, f(0, 64)), (64, 8, 32, np.float32(1.0)), (64, 9, 32, f(2, 64)),
                         (2 ** 40, 8, 32, f(2, 64)), (64, 8, 2 ** 40, f(2, 64)), (64, 8, 32, f(2, 63))]:
        cases.append((ms_model("MatMulNBits", [("A", A), ("B", B), ("s", sc), ("z", zp)], ["Y"],
                               attrs=dict(K=K, N=N, bits=4, block_size=blk)),
                       {"A": A, "B": B, "s": sc, "z": zp}))
    cases.append((ms_model("MatMulNBits", [("A", f(2, 64)), ("B", B), ("s", sc), ("z", zp[:-1])], ["Y"],
                           attrs=dict(K=64, N=8, bits=4, block_size=32)),
                  {"A": f(2, 64), "B": B, "s": sc, "z": zp[:-1]}))
    # EmbedLayerNormalization: empty batch, negative ids, mask of the wrong shape
    for ids, mask in [(np.zeros((0, 3), np.int32), None), (np.array([[-1, 0]], np.int32), None),
                      (np.array([[1, 0]], np.int32), np.ones((1, 3), np.int32))]:
        ins = [("ids", ids), ("", None), ("w", f(5, 4)), ("p", f(3, 4)), ("", None), ("g", f(4)), ("b", f(4))]
        if mask is not None:
            ins.append(("m", mask))
        cases.append((ms_model("EmbedLayerNormalization", ins, ["Y", "mi"]), feeds_of(ins)))
    # BiasSplitGelu / GemmFastGelu: odd or empty channels, rank 1
    cases.append((ms_model("BiasSplitGelu", [("X", f(2, 3, 5)), ("b", f(5))], ["Y"]),
                  {"X": f(2, 3, 5), "b": f(5)}))
    cases.append((ms_model("BiasSplitGelu", [("X", f(2, 0, 4)), ("b", f(4))], ["Y"]),
                  {"X": f(2, 0, 4), "b": f(4)}))
    cases.append((ms_model("GemmFastGelu", [("X", f(0, 4)), ("W", f(4, 3))], ["Y"]), {"X": f(0, 4), "W": f(4, 3)}))
    cases.append((ms_model("GemmFastGelu", [("X", f(2, 0)), ("W", f(0, 3))], ["Y"]), {"X": f(2, 0), "W": f(0, 3)}))
    # GroupQueryAttention: negative / huge lengths, empty batch
    Bq, S, N, Nkv, H = 2, 3, 4, 2, 16
    base = {"q": f(Bq, S, N * H), "k": f(Bq, S, Nkv * H), "v": f(Bq, S, Nkv * H),
            "pk": f(Bq, Nkv, 0, H), "pv": f(Bq, Nkv, 0, H),
            "seqlens": np.full((Bq,), S - 1, np.int32), "total": np.array(S, np.int32)}
    for over in [dict(seqlens=np.array([-5, 2], np.int32)), dict(total=np.array(-1, np.int32)),
                 dict(total=np.array(2 ** 31 - 1, np.int32), seqlens=np.array([9, 9], np.int32)),
                 dict(seqlens=np.array([2 ** 31 - 1, 2], np.int32))]:
        cases.append((gqa_model(Bq, S, N, Nkv, H, 0), dict(base, **over)))
    e = {"q": f(0, S, N * H), "k": f(0, S, Nkv * H), "v": f(0, S, Nkv * H), "pk": f(0, Nkv, 0, H),
         "pv": f(0, Nkv, 0, H), "seqlens": np.zeros((0,), np.int32), "total": np.array(S, np.int32)}
    cases.append((gqa_model(0, S, N, Nkv, H, 0), e))
    ran = sum(run_or_error(m, feeds) is not None for m, feeds in cases)
    assert ran == 6  # exactly the six empty-size cases run; every other one is refused


def test_float16_variants():
    """float16 BiasSplitGelu / GemmFastGelu (against the float32 reference of the same float16
    values) and GatherBlockQuantized with float16 scales (against onnxruntime)."""
    rng = np.random.default_rng(123)
    X, b = rand(rng, (2, 3, 16)).astype(np.float16), rand(rng, (16,)).astype(np.float16)
    got = run_kiln(ms_model("BiasSplitGelu", [("X", X), ("b", b)], ["Y"]), {"X": X, "b": b})[0]
    X32, b32 = X.astype(np.float32), b.astype(np.float32)
    want = run_kiln(ms_model("BiasSplitGelu", [("X", X32), ("b", b32)], ["Y"]), {"X": X32, "b": b32})[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-2, atol=1e-2)
    Xg, W, bg = (rand(rng, s, low=-1, high=1).astype(np.float16) for s in [(3, 8), (8, 5), (5,)])
    got = run_kiln(ms_model("GemmFastGelu", [("X", Xg), ("W", W), ("b", bg)], ["Y"]), {"X": Xg, "W": W, "b": bg})[0]
    f32 = {k: v.astype(np.float32) for k, v in {"X": Xg, "W": W, "b": bg}.items()}
    want = run_kiln(ms_model("GemmFastGelu", [(k, v) for k, v in f32.items()], ["Y"]), f32)[0]
    assert got.dtype == np.float16
    np.testing.assert_allclose(got.astype(np.float32), want, rtol=1e-2, atol=1e-2)
    q = rng.integers(0, 16, size=(6, 32))
    data_t = helper.make_tensor("data", TensorProto.UINT4, (6, 32), q.reshape(-1).tolist())
    scales = rng.uniform(0.1, 1, size=(6, 2)).astype(np.float16)
    idx = np.array([[5, 0], [2, 2]], np.int64)
    m = gbq_model(data_t, idx, scales, None, dict(gather_axis=0, quantize_axis=1, block_size=16))
    m.graph.output[0].type.tensor_type.elem_type = TensorProto.FLOAT16
    compare(m, {"idx": idx}, rtol=1e-3, atol=1e-3)
