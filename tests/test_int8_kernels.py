"""The 8-bit integer kernels (src/cpu/kernels/qgemm*.c: AMX-INT8 tiles and AVX-512 VNNI where the
CPU has them, AVX2, a portable loop elsewhere) behind MatMulInteger, QLinearMatMul, ConvInteger and
QLinearConv, against exact numpy references (int8_oracle: int64 sums, float32 requantisation rounded half to even) and,
where its integer products are exact, onnxruntime: outputs must be bit-exact. onnxruntime's u8 x s8
kernels on x86 without VNNI saturate pairs of products at int16 (vpmaddubsw), so there it is not an
oracle for u8 x s8; int8_oracle.ORT_U8S8_EXACT only decides whether onnxruntime is checked as well,
never what kiln is checked against. Shapes cover K not a multiple of 4 or 64, M = 1, N past
several 64-column blocks, batches, and constant weights (packed once at session creation) next to
weights fed at run time. The portable kernel is checked in a child process with KILN_NO_VNNI=1."""
import os
import subprocess
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import node_model, run_kiln, run_ort  # noqa: E402
from int8_oracle import exact_run, ort_exact_for  # noqa: E402

RNG = np.random.default_rng(20261205)
U8, S8 = np.uint8, np.int8


def qrand(dt, shape):
    lo, hi = (0, 255) if dt == U8 else (-128, 127)
    return RNG.integers(lo, hi + 1, size=shape).astype(dt)


def zp(dt, n=None):
    lo, hi = (0, 255) if dt == U8 else (-128, 127)
    v = RNG.integers(lo, hi + 1, size=n if n else ())
    return np.asarray(v).astype(dt)


def f32(v):
    return np.array(v, np.float32)


def _same(got, want, who):
    assert len(got) == len(want), (len(got), len(want))
    for g, w in zip(got, want):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, (who, g.dtype, w.dtype, g.shape, w.shape)
        bad = np.argwhere(g != w)
        assert bad.size == 0, \
            f"vs {who}: {len(bad)} of {g.size} differ, first at {bad[0]}: {g[tuple(bad[0])]} != {w[tuple(bad[0])]}"


def compare(model, feeds):
    """kiln against the exact numpy oracle, and against onnxruntime too where onnxruntime's integer
    products are exact (all but u8 x s8 on x86 without VNNI: see int8_oracle)."""
    got = run_kiln(model, feeds)
    want, products = exact_run(model, feeds)
    assert products, "no integer product was checked"
    _same(got, want, "numpy")
    if ort_exact_for(products):
        _same(got, run_ort(model, feeds), "onnxruntime")
    return got


def model(op, inputs, const=(), attrs=None, opset=13):
    """inputs: ordered (name, array); names in const become initializers."""
    inits = {k: v for k, v in inputs if k in const}
    return node_model(op, inputs, ["y"], attrs=attrs, opset=opset, initializers=inits), \
        {k: v for k, v in inputs if k and k not in const}


MM_SHAPES = [  # (a shape, b shape)
    ((1, 7), (7, 5)), ((1, 64), (64, 1000)), ((3, 1), (1, 17)), ((5, 13), (13, 33)),
    ((13, 65), (65, 70)), ((50, 130), (130, 129)), ((2, 9, 31), (31, 48)),
    ((2, 3, 4, 20), (20, 16)), ((7, 768), (768, 96)),
    # the AMX-INT8 blocks' edges: 32 + 16 + 1 rows, K a multiple of 64 and not, one and two panels
    ((96, 64), (64, 80)), ((33, 300), (300, 48)), ((130, 257), (257, 100)),
]


# ---- MatMulInteger ----

@pytest.mark.parametrize("adt,bdt", [(U8, S8), (U8, U8), (S8, S8), (S8, U8)])
@pytest.mark.parametrize("shapes", MM_SHAPES)
@pytest.mark.parametrize("const_b", [False, True])
def test_matmul_integer(adt, bdt, shapes, const_b):
    a_shape, b_shape = shapes
    inputs = [("a", qrand(adt, a_shape)), ("b", qrand(bdt, b_shape)), ("za", zp(adt)), ("zb", zp(bdt))]
    m, feeds = model("MatMulInteger", inputs, const=("b", "zb") if const_b else (), opset=10)
    compare(m, feeds)


@pytest.mark.parametrize("const_b", [False, True])
def test_matmul_integer_per_column_zero_points(const_b):
    a, b = qrand(U8, (6, 21)), qrand(S8, (21, 40))
    inputs = [("a", a), ("b", b), ("za", zp(U8)), ("zb", zp(S8, 40))]
    m, feeds = model("MatMulInteger", inputs, const=("b", "zb") if const_b else (), opset=10)
    compare(m, feeds)


@pytest.mark.parametrize("a_shape", [(6, 21), (3, 6, 21)])
def test_matmul_integer_per_row_zero_points(a_shape):
    """Per-row a_zero_point (allowed by ONNX, refused by onnxruntime): against exact numpy sums."""
    a, b, za, zb = qrand(U8, a_shape), qrand(S8, (21, 40)), zp(U8, 6), zp(S8, 40)
    m, feeds = model("MatMulInteger", [("a", a), ("b", b), ("za", za), ("zb", zb)], const=("b", "zb"), opset=10)
    got = run_kiln(m, feeds)[0]
    want = (a.astype(np.int64) - za.astype(np.int64)[:, None]) @ (b.astype(np.int64) - zb.astype(np.int64))
    np.testing.assert_array_equal(got, want.astype(np.int32))


def test_matmul_integer_no_zero_points_and_batched_b():
    for a_shape, b_shape in [((4, 5, 9), (4, 9, 3)), ((2, 1, 3, 8), (5, 8, 6)), ((9,), (9, 4)),
                             ((3, 9), (9,))]:
        m, feeds = model("MatMulInteger", [("a", qrand(U8, a_shape)), ("b", qrand(S8, b_shape))], opset=10)
        compare(m, feeds)


def test_matmul_integer_extreme_values():
    """All-255 times all -128 over a long K: the VNNI sums of four products must not saturate."""
    a = np.full((3, 1027), 255, U8)
    b = np.full((1027, 20), -128, S8)
    m, feeds = model("MatMulInteger", [("a", a), ("b", b)], const=("b",), opset=10)
    got = compare(m, feeds)
    assert got[0][0, 0] == 255 * -128 * 1027


# ---- QLinearMatMul ----

def qmm_inputs(adt, bdt, a_shape, b_shape, per_col=False):
    n = b_shape[-1]
    a, b, az = qrand(adt, a_shape), qrand(bdt, b_shape), zp(adt)
    bz = zp(bdt, n) if per_col else zp(bdt)
    a_s = RNG.uniform(0.01, 0.05)
    b_s = RNG.uniform(0.005, 0.03, size=n) if per_col else RNG.uniform(0.005, 0.03)
    # y_scale from the actual sums, so that outputs spread over the codes instead of saturating
    acc = (a.astype(np.int64) - az) @ (b.astype(np.int64) - bz)
    ys = a_s * np.mean(b_s) * (np.abs(acc).max() + 1) / 100
    yz = np.array(RNG.integers(-20, 21) + (128 if adt == U8 else 0), adt)
    return [("a", a), ("as", f32(a_s)), ("az", az), ("b", b), ("bs", np.asarray(b_s, np.float32)),
            ("bz", bz), ("ys", f32(ys)), ("yz", yz)]


@pytest.mark.parametrize("adt,bdt", [(U8, S8), (U8, U8), (S8, S8)])
@pytest.mark.parametrize("shapes", MM_SHAPES)
@pytest.mark.parametrize("const_b", [False, True])
def test_qlinear_matmul(adt, bdt, shapes, const_b):
    inputs = qmm_inputs(adt, bdt, *shapes)
    m, feeds = model("QLinearMatMul", inputs, const=("b", "bs", "bz") if const_b else (), opset=10)
    out = compare(m, feeds)[0]
    lo, hi = np.iinfo(adt).min, np.iinfo(adt).max
    assert np.any((out != lo) & (out != hi)), "scales saturate everything: the test would prove little"


@pytest.mark.parametrize("adt,bdt", [(U8, S8), (S8, S8)])
@pytest.mark.parametrize("const_b", [False, True])
def test_qlinear_matmul_per_column(adt, bdt, const_b):
    inputs = qmm_inputs(adt, bdt, (2, 17, 67), (67, 150), per_col=True)
    m, feeds = model("QLinearMatMul", inputs, const=("b", "bs", "bz") if const_b else (), opset=10)
    compare(m, feeds)


def test_qlinear_matmul_batched_b():
    inputs = qmm_inputs(U8, S8, (3, 5, 20), (3, 20, 9))
    m, feeds = model("QLinearMatMul", inputs, opset=10)
    compare(m, feeds)


def test_qlinear_matmul_rounding_ties():
    """Products landing exactly halfway between two codes: round half to even, as onnxruntime."""
    a = np.array([[1, 3, 5, 7, 9, 11, 13, 15]], U8).T  # 8 x 1
    b = np.array([[1]], U8)
    inputs = [("a", a), ("as", f32(0.5)), ("az", np.array(0, U8)), ("b", b), ("bs", f32(1.0)),
              ("bz", np.array(0, U8)), ("ys", f32(1.0)), ("yz", np.array(10, U8))]
    m, feeds = model("QLinearMatMul", inputs, const=("b",), opset=10)
    got = compare(m, feeds)[0]
    np.testing.assert_array_equal(got.ravel(), [10, 12, 12, 14, 14, 16, 16, 18])


# ---- ConvInteger / QLinearConv ----

CONV_CASES = [  # x shape, w shape, attrs
    ((1, 3, 17, 19), (8, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 16, 9, 9), (24, 16, 1, 1), {}),
    ((1, 16, 10, 10), (20, 16, 1, 1), {"strides": [2, 2]}),
    ((1, 5, 12, 11), (7, 5, 3, 2), {"strides": [2, 1], "pads": [0, 1, 2, 0], "dilations": [1, 2]}),
    ((1, 8, 14, 14), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),
    ((2, 12, 15, 13), (12, 1, 5, 5), {"group": 12, "strides": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 6, 7, 7), (6, 1, 3, 3), {"group": 6, "dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((2, 4, 13, 17), (4, 1, 3, 4), {"group": 4, "strides": [3, 3], "pads": [1, 2, 0, 1], "dilations": [2, 1]}),
    ((1, 5, 1, 9), (5, 1, 1, 3), {"group": 5, "strides": [1, 2]}),
    ((1, 8, 9, 9), (12, 2, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),
    ((1, 6, 40), (10, 6, 5), {"strides": [3], "pads": [2, 1]}),
    ((1, 3, 5, 6, 7), (4, 3, 2, 3, 2), {"pads": [1, 0, 1, 0, 1, 1]}),
    ((1, 70, 5, 5), (33, 70, 3, 3), {}),
    ((1, 64, 12, 12), (48, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("xdt,wdt", [(U8, S8), (U8, U8), (S8, S8)])
@pytest.mark.parametrize("case", CONV_CASES)
def test_conv_integer(xdt, wdt, case):
    x_shape, w_shape, attrs = case
    inputs = [("x", qrand(xdt, x_shape)), ("w", qrand(wdt, w_shape)), ("xz", zp(xdt)), ("wz", zp(wdt))]
    m, feeds = model("ConvInteger", inputs, const=("w", "wz"), attrs=attrs, opset=10)
    compare(m, feeds)


def qconv_inputs(xdt, wdt, x_shape, w_shape, per_channel, bias=True):
    M, K = w_shape[0], int(np.prod(w_shape[1:]))
    x, w, xz = qrand(xdt, x_shape), qrand(wdt, w_shape), zp(xdt)
    # onnxruntime takes per-channel zero points of 0 only (symmetric weights)
    wz = np.zeros(M, wdt) if per_channel else zp(wdt)
    xs = RNG.uniform(0.01, 0.05)
    ws = RNG.uniform(0.002, 0.02, size=M) if per_channel else RNG.uniform(0.002, 0.02)
    # y_scale from the expected size of the sums, so that outputs spread over the codes
    dx, dw = x.astype(np.float64) - xz, w.astype(np.float64) - np.mean(wz)
    size = K * abs(dx.mean() * dw.mean()) + 3 * np.sqrt(K) * dx.std() * dw.std()
    ys = xs * np.mean(ws) * size / 100
    yz = np.array(RNG.integers(-20, 21) + (128 if xdt == U8 else 0), xdt)
    inputs = [("x", x), ("xs", f32(xs)), ("xz", xz), ("w", w), ("ws", np.asarray(ws, np.float32)),
              ("wz", wz), ("ys", f32(ys)), ("yz", yz)]
    if bias:
        inputs.append(("b", RNG.integers(-int(size / 4), int(size / 4) + 1, size=M).astype(np.int32)))
    return inputs


@pytest.mark.parametrize("xdt,wdt", [(U8, S8), (U8, U8), (S8, S8)])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("case", CONV_CASES)
@pytest.mark.parametrize("const_w", [True, False])
def test_qlinear_conv(xdt, wdt, per_channel, case, const_w):
    x_shape, w_shape, attrs = case
    inputs = qconv_inputs(xdt, wdt, x_shape, w_shape, per_channel, bias=(len(case[0]) != 3))
    m, feeds = model("QLinearConv", inputs, const=("w", "ws", "wz", "b") if const_w else (), attrs=attrs,
                     opset=10)
    out = compare(m, feeds)[0]
    lo, hi = np.iinfo(xdt).min, np.iinfo(xdt).max
    assert np.mean((out != lo) & (out != hi)) > 0.2, "mostly saturated: the test would prove little"


# ---- the portable kernel ----

def test_portable_kernel_matches(tmp_path):
    """The same cases through the portable loops (KILN_NO_VNNI=1) in a child process."""
    code = (
        "import sys; sys.argv = ['x']\n"
        "import test_int8_kernels as t\n"
        "t.test_matmul_integer(t.U8, t.S8, ((13, 65), (65, 70)), True)\n"
        "t.test_matmul_integer(t.S8, t.U8, ((2, 9, 31), (31, 48)), False)\n"
        "t.test_qlinear_matmul(t.U8, t.S8, ((50, 130), (130, 129)), True)\n"
        "t.test_qlinear_matmul_per_column(t.S8, t.S8, True)\n"
        "t.test_matmul_integer_extreme_values()\n"
        "for c in t.CONV_CASES: t.test_qlinear_conv(t.U8, t.S8, True, c, True)\n"
        "for c in t.CONV_CASES[4:9]: t.test_qlinear_conv(t.S8, t.S8, False, c, False)\n"
        "t.test_matmul_integer_per_row_zero_points((3, 6, 21))\n"
        "print('portable ok')\n")
    env = dict(os.environ, KILN_NO_VNNI="1")
    r = subprocess.run([sys.executable, "-c", code], cwd=os.path.dirname(os.path.abspath(__file__)),
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0 and "portable ok" in r.stdout, r.stdout + r.stderr


# ---- bad input ----

def test_matmul_integer_bad_dtype_and_shape():
    m, feeds = model("MatMulInteger", [("a", qrand(U8, (3, 4))), ("b", RNG.random((4, 2)).astype(np.float32))],
                     opset=10)
    with pytest.raises(Exception, match="element type"):
        run_kiln(node_model("MatMulInteger", [("a", feeds["a"]), ("b", feeds["b"])], ["y"], opset=10), feeds)
    a, b = qrand(U8, (3, 4)), qrand(S8, (5, 2))
    with pytest.raises(Exception, match="(?i)inner|dimension|shape"):
        run_kiln(node_model("MatMulInteger", [("a", a), ("b", b)], ["y"], opset=10), {"a": a, "b": b})


def test_qlinear_matmul_bad_zero_point_count():
    inputs = qmm_inputs(U8, S8, (4, 8), (8, 6))
    inputs[5] = ("bz", zp(S8, 5))  # neither 1 nor N = 6
    m, feeds = model("QLinearMatMul", inputs, opset=10)
    with pytest.raises(Exception, match="b_zero_point"):
        run_kiln(m, feeds)


def test_qlinear_conv_bad_per_channel_scale():
    inputs = qconv_inputs(U8, S8, (1, 4, 6, 6), (6, 4, 3, 3), per_channel=True)
    inputs[4] = ("ws", np.ones(5, np.float32))
    m, feeds = model("QLinearConv", inputs, const=("w", "ws", "wz", "b"), opset=10)
    with pytest.raises(Exception, match="w_scale"):
        run_kiln(m, feeds)


# ---- fused QDQ and dynamic-quantisation models (src/opt/fuse_qdq.c) ----
#
# Float models quantised with onnxruntime.quantization, run by kiln (which fuses
# DequantizeLinear -> Conv / MatMul / Gemm -> QuantizeLinear into QLinearConv / QLinearMatMul /
# QGemm, and DynamicQuantizeLinear -> MatMulInteger -> Cast -> Mul [-> Add] into
# DynamicQuantizeMatMul) and by onnxruntime with its default graph optimisations, which fuse the
# same patterns: the outputs must be identical.

def float_model(nodes, inputs, outputs, inits, opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs,
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def cnn_model():
    w = lambda *s: (RNG.standard_normal(s) * (2.0 / np.prod(s[1:])) ** 0.5).astype(np.float32)  # noqa: E731
    inits = {"w1": w(8, 3, 3, 3), "b1": RNG.standard_normal(8).astype(np.float32) * 0.1,
             "w2": w(8, 1, 3, 3), "b2": RNG.standard_normal(8).astype(np.float32) * 0.1,
             "w3": w(16, 8, 1, 1), "b3": RNG.standard_normal(16).astype(np.float32) * 0.1,
             "w4": w(12, 16, 3, 3)}
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], strides=[2, 2], group=8),
             helper.make_node("Conv", ["c2", "w3", "b3"], ["c3"]),
             helper.make_node("Conv", ["c3", "w4"], ["y"], pads=[0, 1, 1, 0])]
    return float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 21, 19])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits), \
        {"x": (1, 3, 21, 19)}


def mlp_model():
    inits = {"w1": RNG.standard_normal((40, 72)).astype(np.float32) * 0.2,
             "w2": RNG.standard_normal((72, 24)).astype(np.float32) * 0.2,
             "g1": RNG.standard_normal((24, 24)).astype(np.float32) * 0.3,
             "gb": RNG.standard_normal(24).astype(np.float32) * 0.1}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]),
             helper.make_node("MatMul", ["m1", "w2"], ["m2"]),
             helper.make_node("Reshape", ["m2", "shape"], ["r"]),
             helper.make_node("Gemm", ["r", "g1", "gb"], ["y"], transB=1)]
    inits["shape"] = np.array([-1, 24], np.int64)
    return float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5, 40])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits), {"x": (3, 5, 40)}


def dyn_model():
    inits = {"w1": RNG.standard_normal((64, 96)).astype(np.float32) * 0.2,
             "b1": RNG.standard_normal(96).astype(np.float32) * 0.1,
             "w2": RNG.standard_normal((96, 33)).astype(np.float32) * 0.2}
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["m1"]), helper.make_node("Add", ["m1", "b1"], ["a1"]),
             helper.make_node("Relu", ["a1"], ["r1"]), helper.make_node("MatMul", ["r1", "w2"], ["y"])]
    return float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 7, 64])],
                       [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits), {"x": (2, 7, 64)}


def quantise(model, shapes, tmp_path, mode, per_channel=False, act=None):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType, quantize_dynamic,
                                          quantize_static)
    src, dst = str(tmp_path / "f.onnx"), str(tmp_path / f"q_{mode}.onnx")
    with open(src, "wb") as f:
        f.write(model.SerializeToString())
    if mode == "dynamic":
        quantize_dynamic(src, dst)
        return dst

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.i = 0

        def get_next(self):
            self.i += 1
            if self.i > 6:
                return None
            return {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}

    quantize_static(src, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=per_channel,
                    activation_type=act or QuantType.QUInt8, weight_type=QuantType.QInt8)
    return dst


def kiln_ops_after_fusion(path, tmp_path):
    import onnx
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
    import kiln.onnxruntime as kort  # the onnxruntime-compatible API writes the optimised model
    so = kort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "kiln_opt.onnx")
    kort.InferenceSession(path, sess_options=so)
    return [n.op_type for n in onnx.load(so.optimized_model_filepath).graph.node]


def run_both(path, shapes):
    """kiln's output and the exact reference: onnxruntime's fused graph (saved from its graph
    optimiser, which fuses the same patterns as kiln) run by int8_oracle.exact_run, i.e. its
    integer products in exact numpy and every other node by onnxruntime. Where onnxruntime's
    products are exact (see int8_oracle), its own fused run must give the same output too."""
    import onnxruntime as ort
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "python"))
    import kiln
    feeds = {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    opt = path + ".ort_opt.onnx"
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = opt
    ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    want, products = exact_run(opt, feeds)
    want = want[0]
    assert products, "onnxruntime's fused graph has no integer product"
    got = kiln.InferenceSession(path, threads=2).run(None, feeds)[0]
    if ort_exact_for(products):
        np.testing.assert_array_equal(
            got, ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feeds)[0],
            err_msg="vs onnxruntime")
    return got, want


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("act", ["u8", "s8"])
def test_qdq_cnn_fused_and_exact(tmp_path, per_channel, act):
    from onnxruntime.quantization import QuantType
    model, shapes = cnn_model()
    path = quantise(model, shapes, tmp_path, "qdq", per_channel, QuantType.QUInt8 if act == "u8" else QuantType.QInt8)
    ops = kiln_ops_after_fusion(path, tmp_path)
    assert ops.count("QLinearConv") == 4 and "Conv" not in ops, ops
    got, want = run_both(path, shapes)
    assert np.unique(want).size > 20, "the output should span many codes"
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("per_channel", [False, True])
def test_qdq_matmul_gemm_fused_and_exact(tmp_path, per_channel):
    model, shapes = mlp_model()
    path = quantise(model, shapes, tmp_path, "qdq", per_channel)
    ops = kiln_ops_after_fusion(path, tmp_path)
    assert ops.count("QLinearMatMul") == 2 and ops.count("QGemm") == 1, ops
    assert "MatMul" not in ops and "Gemm" not in ops, ops
    got, want = run_both(path, shapes)
    assert np.unique(want).size > 20
    np.testing.assert_array_equal(got, want)


def test_dynamic_quantisation_fused_and_exact(tmp_path):
    model, shapes = dyn_model()
    path = quantise(model, shapes, tmp_path, "dynamic")
    ops = kiln_ops_after_fusion(path, tmp_path)
    assert ops.count("DynamicQuantizeMatMul") == 2 and "MatMulInteger" not in ops, ops
    got, want = run_both(path, shapes)
    np.testing.assert_array_equal(got, want)


def test_qdq_fusion_left_alone_when_bias_scale_differs(tmp_path):
    """A bias whose scale is not x_scale * w_scale cannot become QLinearConv's int32 bias: the
    pattern stays as it is, and still computes the same as onnxruntime's unfused graph."""
    import onnx
    model, shapes = cnn_model()
    path = quantise(model, shapes, tmp_path, "qdq", False)
    m = onnx.load(path)
    for t in m.graph.initializer:
        if t.name.endswith("b1_quantized_scale"):
            arr = numpy_helper.to_array(t) * 1.5
            t.CopyFrom(numpy_helper.from_array(arr.astype(np.float32), t.name))
            break
    else:
        pytest.fail("no bias scale found: the quantiser's naming changed")
    onnx.save(m, path)
    ops = kiln_ops_after_fusion(path, tmp_path)
    assert ops.count("QLinearConv") == 3 and ops.count("Conv") == 1, ops
    feeds = {k: RNG.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    want = run_ort(m, feeds)[0]  # no graph optimisations: the reference computes the graph as written
    got = run_kiln(m, feeds)[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=float(np.abs(want).max()) * 0.02)


def test_qdq_add_mul_pool_fused_and_exact(tmp_path):
    """DQ -> Add / Mul / GlobalAveragePool -> Q become QLinearAdd / QLinearMul /
    QLinearGlobalAveragePool, as onnxruntime fuses them (MobileNetV3's residuals and SE blocks)."""
    w = lambda *s: (RNG.standard_normal(s) * 0.4).astype(np.float32)  # noqa: E731
    inits = {"w1": w(6, 4, 3, 3), "w2": w(6, 4, 1, 1), "w3": w(6, 6, 1, 1)}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["x", "w2"], ["b"]),
             helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("GlobalAveragePool", ["s"], ["g"]),
             helper.make_node("Conv", ["g", "w3"], ["e"]),
             helper.make_node("Mul", ["s", "e"], ["y"])]
    model = float_model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 9, 11])],
                        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    shapes = {"x": (1, 4, 9, 11)}
    path = quantise(model, shapes, tmp_path, "qdq", True)
    ops = kiln_ops_after_fusion(path, tmp_path)
    for op in ("QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool"):
        assert ops.count(op) == 1, ops
    assert ops.count("QLinearConv") == 3, ops
    got, want = run_both(path, shapes)
    assert np.unique(want).size > 20
    np.testing.assert_array_equal(got, want)


# ---- exact numpy oracles: onnxruntime's AVX2 u8 x s8 kernels sum pairs of products in saturating
# int16 (vpmaddubsw), so on CPUs without VNNI it is no oracle for those types. These tests check
# kiln against int64 numpy sums (and float32 numpy requantisation, the same operations in the same
# order as onnxruntime's MlasRequantizeOutput) on whatever kernel the CPU selects; the child-process
# test below repeats them on the AVX2 loops (KILN_NO_AVX512=1) and the portable ones (KILN_NO_VNNI=1).

def np_matmul_int(a, b, za=0, zb=0):
    """(a - za) @ (b - zb) in int64, wrapped to int32 as the ops' int32 accumulators"""
    za = np.asarray(za, np.int64)
    return ((a.astype(np.int64) - za) @ (b.astype(np.int64) - np.asarray(zb, np.int64))).astype(np.int32)


def np_conv_int(x, w, xz, wz, strides=(1, 1), pads=(0, 0, 0, 0), dil=(1, 1), group=1):
    """int64 sums of (x - xz)(w - wz[m]) of a 2-D convolution (padding reads as xz)"""
    N, C, H, W = x.shape
    M, Cg, KH, KW = w.shape
    xp = np.pad(x.astype(np.int64) - int(xz), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    wd = w.astype(np.int64) - np.asarray(wz, np.int64).reshape(-1, 1, 1, 1)
    OH = (H + pads[0] + pads[2] - dil[0] * (KH - 1) - 1) // strides[0] + 1
    OW = (W + pads[1] + pads[3] - dil[1] * (KW - 1) - 1) // strides[1] + 1
    y = np.zeros((N, M, OH, OW), np.int64)
    Mg = M // group
    for g in range(group):
        xs = xp[:, g * Cg:(g + 1) * Cg]
        for kh in range(KH):
            for kw in range(KW):
                r0, c0 = kh * dil[0], kw * dil[1]
                patch = xs[:, :, r0:r0 + strides[0] * (OH - 1) + 1:strides[0], c0:c0 + strides[1] * (OW - 1) + 1:strides[1]]
                y[:, g * Mg:(g + 1) * Mg] += np.einsum("nchw,mc->nmhw", patch, wd[g * Mg:(g + 1) * Mg, :, kh, kw])
    return y


def np_requant(acc, mult, zp, dt):
    """float32(acc) * mult, clamped to the type's range less zp, rounded half to even, plus zp"""
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    r = acc.astype(np.int32).astype(np.float32) * mult.astype(np.float32)
    r = np.minimum(np.maximum(r, np.float32(lo - int(zp))), np.float32(hi - int(zp)))
    return (np.rint(r).astype(np.int32) + int(zp)).astype(dt)


EXACT_MM_SHAPES = [(1, 1, 1), (1, 3, 17), (5, 13, 33), (7, 33, 15), (13, 63, 70), (50, 130, 129),
                   (6, 256, 64), (2, 5, 1000)]  # (M, K, N): K, M and N tails around 2, 4, 6, 8, 16


def assert_equal_int(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{len(bad)} of {got.size} differ, first at {bad[0]}: {got[tuple(bad[0])]} != {want[tuple(bad[0])]}"


@pytest.mark.parametrize("adt,bdt", [(U8, S8), (U8, U8), (S8, S8), (S8, U8)])
@pytest.mark.parametrize("mkn", EXACT_MM_SHAPES)
@pytest.mark.parametrize("zps", ["none", "tensor", "column"])
@pytest.mark.parametrize("const_b", [False, True])
def test_matmul_integer_exact(adt, bdt, mkn, zps, const_b):
    M, K, N = mkn
    a, b = qrand(adt, (M, K)), qrand(bdt, (K, N))
    inputs = [("a", a), ("b", b)]
    za, zb = 0, 0
    if zps != "none":
        za, zb = zp(adt), zp(bdt, N) if zps == "column" else zp(bdt)
        inputs += [("za", za), ("zb", zb)]
    m, feeds = model("MatMulInteger", inputs, const=("b", "zb") if const_b else (), opset=10)
    want = np_matmul_int(a, b, za, zb)
    assert np.unique(want).size > min(want.size // 2, 10), "the sums should vary"
    assert_equal_int(run_kiln(m, feeds)[0], want)


def test_matmul_integer_extreme_values_exact():
    """The largest products (255 x -128, 255 x 127) over a long odd K: nothing may saturate."""
    a = np.full((7, 1027), 255, U8)
    b = np.where(RNG.random((1027, 21)) < 0.5, -128, 127).astype(S8)
    b[:, 0], b[:, 20] = -128, 127
    m, feeds = model("MatMulInteger", [("a", a), ("b", b)], const=("b",), opset=10)
    got = run_kiln(m, feeds)[0]
    assert_equal_int(got, np_matmul_int(a, b))
    assert got[0, 0] == 255 * -128 * 1027 and got[6, 20] == 255 * 127 * 1027


EXACT_CONV_CASES = [  # x shape, w shape, strides, pads, dilations, group
    ((1, 3, 17, 19), (8, 3, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1),
    ((2, 16, 9, 9), (24, 16, 1, 1), (1, 1), (0, 0, 0, 0), (1, 1), 1),
    ((1, 7, 10, 11), (13, 7, 1, 1), (2, 2), (0, 0, 0, 0), (1, 1), 1),
    ((1, 8, 14, 14), (8, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 8),
    ((1, 24, 37, 35), (24, 1, 3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 24),
    ((2, 12, 15, 13), (12, 1, 5, 5), (2, 2), (2, 2, 2, 2), (1, 1), 12),
    ((1, 6, 19, 21), (6, 1, 3, 3), (1, 1), (2, 2, 2, 2), (2, 2), 6),
    ((1, 9, 12, 12), (18, 3, 3, 3), (1, 1), (1, 0, 1, 2), (1, 1), 3),
    ((1, 70, 5, 5), (33, 70, 3, 3), (1, 1), (0, 0, 0, 0), (1, 1), 1),
]


@pytest.mark.parametrize("xdt,wdt", [(U8, S8), (U8, U8), (S8, S8)])
@pytest.mark.parametrize("case", EXACT_CONV_CASES)
def test_conv_integer_exact(xdt, wdt, case):
    x_shape, w_shape, strides, pads, dil, group = case
    x, w, xz, wz = qrand(xdt, x_shape), qrand(wdt, w_shape), zp(xdt), zp(wdt)
    attrs = {"strides": list(strides), "pads": list(pads), "dilations": list(dil), "group": group}
    m, feeds = model("ConvInteger", [("x", x), ("w", w), ("xz", xz), ("wz", wz)], const=("w", "wz"),
                     attrs=attrs, opset=10)
    assert_equal_int(run_kiln(m, feeds)[0], np_conv_int(x, w, xz, wz, strides, pads, dil, group).astype(np.int32))


@pytest.mark.parametrize("xdt,wdt", [(U8, S8), (S8, S8)])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("case", EXACT_CONV_CASES)
def test_qlinear_conv_exact(xdt, wdt, per_channel, case):
    x_shape, w_shape, strides, pads, dil, group = case
    inputs = qconv_inputs(xdt, wdt, x_shape, w_shape, per_channel)
    d = dict(inputs)
    attrs = {"strides": list(strides), "pads": list(pads), "dilations": list(dil), "group": group}
    m, feeds = model("QLinearConv", inputs, const=("w", "ws", "wz", "b"), attrs=attrs, opset=10)
    acc = np_conv_int(d["x"], d["w"], d["xz"], d["wz"] if per_channel else np.full(w_shape[0], d["wz"]),
                      strides, pads, dil, group) + d["b"].astype(np.int64).reshape(1, -1, 1, 1)
    ws = np.broadcast_to(d["ws"], (w_shape[0],)).astype(np.float32)
    mult = (np.float32(d["xs"]) * ws / np.float32(d["ys"])).astype(np.float32).reshape(1, -1, 1, 1)
    want = np_requant(acc, mult, d["yz"], xdt)
    assert np.mean((want != np.iinfo(xdt).min) & (want != np.iinfo(xdt).max)) > 0.2
    assert_equal_int(run_kiln(m, feeds)[0], want)


@pytest.mark.parametrize("adt,bdt", [(U8, S8), (U8, U8), (S8, S8)])
@pytest.mark.parametrize("mkn", EXACT_MM_SHAPES[1:])
@pytest.mark.parametrize("per_col", [False, True])
def test_qlinear_matmul_exact(adt, bdt, mkn, per_col):
    M, K, N = mkn
    inputs = qmm_inputs(adt, bdt, (M, K), (K, N), per_col=per_col)
    d = dict(inputs)
    m, feeds = model("QLinearMatMul", inputs, const=("b", "bs", "bz"), opset=10)
    acc = np_matmul_int(d["a"], d["b"], d["az"], d["bz"]).astype(np.int64)
    mult = (np.float32(d["as"]) * np.broadcast_to(d["bs"], (N,)).astype(np.float32) / np.float32(d["ys"]))
    want = np_requant(acc, mult.astype(np.float32).reshape(1, -1), d["yz"], adt)
    assert_equal_int(run_kiln(m, feeds)[0], want)


@pytest.mark.parametrize("dt", [U8, S8])
@pytest.mark.parametrize("n", [1, 7, 8, 9, 31, 1000, 70001])
def test_quantize_dequantize_exact(dt, n):
    """QuantizeLinear (float to 8 bits: x / scale, clamp, round half to even, + zp) and
    DequantizeLinear ((x - zp) * scale) against the same float32 steps in numpy."""
    x = (RNG.standard_normal(n) * 3).astype(np.float32)
    x[:: 7] = np.float32(0.5) * RNG.integers(-40, 40, size=x[:: 7].shape)  # exact halves: ties
    if n > 3:
        x[1], x[2], x[3] = np.nan, 1e9, -1e9
    scale, z = np.float32(0.5 if n % 2 else 0.037), zp(dt)
    m, feeds = model("QuantizeLinear", [("x", x), ("s", f32(scale)), ("z", z)], opset=13)
    lo, hi = np.iinfo(dt).min, np.iinfo(dt).max
    with np.errstate(invalid="ignore"):
        v = np.maximum(x / scale, np.float32(lo - int(z)))  # NaN takes the low end
    v = np.where(np.isnan(x), np.float32(lo - int(z)), np.minimum(v, np.float32(hi - int(z))))
    want = (np.rint(v).astype(np.int32) + int(z)).astype(dt)
    assert_equal_int(run_kiln(m, feeds)[0], want)
    q = qrand(dt, (n,))
    m, feeds = model("DequantizeLinear", [("q", q), ("s", f32(scale)), ("z", z)], opset=13)
    want = (q.astype(np.float32) - np.float32(int(z))) * scale
    assert_equal_int(run_kiln(m, feeds)[0], want.astype(np.float32))


@pytest.mark.parametrize("n", [5, 8, 17, 4099, 200003])
def test_dynamic_quantize_linear_exact(n):
    x = (RNG.standard_normal(n) * 2 + 0.3).astype(np.float32)
    m = node_model("DynamicQuantizeLinear", [("x", x)], ["y", "ys", "yz"], opset=11)
    y, ys, yz = run_kiln(m, {"x": x})
    lo, hi = min(np.float32(0), x.min()), max(np.float32(0), x.max())
    scale = np.float32((hi - lo) / np.float32(255))
    z = np.clip(np.rint(np.float32(0) - lo / scale), 0, 255)
    v = np.minimum(np.maximum(x / scale, np.float32(0 - z)), np.float32(255 - z))
    assert ys == scale and yz == z
    assert_equal_int(y, (np.rint(v) + z).astype(U8))


def test_exact_oracles_on_every_kernel(tmp_path):
    """The numpy-oracle tests above on the AVX2 loops (KILN_NO_AVX512=1: what a CPU without
    AVX-512 runs, forced on one with it) and on the portable loops (KILN_NO_VNNI=1)."""
    for env_var in ("KILN_NO_AVX512", "KILN_NO_VNNI"):
        env = dict(os.environ, **{env_var: "1"})
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                            os.path.abspath(__file__), "-k", "exact and not on_every_kernel and not fused"],
                           cwd=os.path.dirname(os.path.abspath(__file__)), env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0 and " passed" in r.stdout and "skipped" not in r.stdout, env_var + r.stdout[-3000:]
