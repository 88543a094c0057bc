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
                                          (8, "packed")])
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
