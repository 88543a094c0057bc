"""com.microsoft quantised CPU ops (QLinearAdd/Mul/Sigmoid/LeakyRelu/Softmax/Concat/
GlobalAveragePool/AveragePool, QGemm, DynamicQuantizeMatMul, MatMulIntegerToFloat, QAttention and
the com.microsoft QuantizeLinear/DequantizeLinear) against onnxruntime on fresh random inputs, plus
models quantised end to end by onnxruntime.quantization.

The oracle for every integer product (QGemm, MatMulIntegerToFloat, DynamicQuantizeMatMul,
QAttention's projection, the QLinearConv / QLinearMatMul / MatMulInteger of quantised models) is
exact numpy (int8_oracle: int64 sums, float32 requantisation rounded half to even); the other
nodes are computed by onnxruntime. onnxruntime's own u8 x s8 products saturate pairs at int16 on
x86 without VNNI (vpmaddubsw), so it is a second oracle for them only where they are exact
(int8_oracle.ORT_U8S8_EXACT, which decides that and nothing else). Ops without integer products
are checked against onnxruntime alone, which is exact for them.

Integer outputs must equal the oracle's exactly, and so must the outputs of QOperator models
(integers up to the final DequantizeLinear). Float outputs (QGemm without y_scale,
MatMulIntegerToFloat, DynamicQuantizeMatMul, QAttention, dynamically quantised models) must agree
within FLOAT_RTOL relative plus FLOAT_ATOL times the largest reference magnitude. Models that keep
float ops between quantised ones (QDQ form, BERT's LayerNormalization) are compared in output
quantisation steps or within 1e-3 of the largest magnitude: see those tests."""
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from int8_oracle import EXACT_OPS, exact_run, ort_exact_for
from util import kiln, node_model, run_kiln, run_ort

MS = "com.microsoft"
FLOAT_RTOL = 1e-5
FLOAT_ATOL = 1e-5
Q8 = [np.uint8, np.int8]


def qrand(rng, dt, shape):
    lo, hi = (0, 255) if np.dtype(dt) == np.uint8 else (-128, 127)
    return rng.integers(lo, hi + 1, shape).astype(dt)


def f32(v):
    return np.array(v, np.float32)


def has_integer_product(model):
    return any(((n.domain if n.domain != "ai.onnx" else ""), n.op_type) in EXACT_OPS for n in model.graph.node)


def oracles(model, feeds):
    """[(name, outputs)]: exact numpy (int8_oracle.exact_run) for models with integer products,
    plus onnxruntime where its products are exact; onnxruntime alone for the other ops."""
    if not has_integer_product(model):
        return [("onnxruntime", run_ort(model, feeds))]
    want, products = exact_run(model, feeds)
    assert products, "no integer product was checked"
    res = [("numpy", want)]
    if ort_exact_for(products):
        res.append(("onnxruntime", run_ort(model, feeds)))
    return res


def same_outputs(got, want, who):
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        g, w = np.asarray(g), np.asarray(w)
        assert g.dtype == w.dtype and g.shape == w.shape, f"output {i}: {g.dtype}{g.shape} vs {w.dtype}{w.shape}"
        if w.dtype.kind in "iu":
            bad = int((g != w).sum())
            assert bad == 0, f"output {i} vs {who}: {bad} of {w.size} integers differ"
        else:
            scale = float(np.abs(w).max()) if w.size else 0.0
            np.testing.assert_allclose(g, w, rtol=FLOAT_RTOL, atol=FLOAT_ATOL * max(scale, 1.0),
                                       err_msg=f"output {i} vs {who}")


def compare(model, feeds):
    got = run_kiln(model, feeds)
    for who, want in oracles(model, feeds):
        same_outputs(got, want, who)
    return got


def ms_model(op, inputs, outputs=("Y",), attrs=None, const=()):
    """All inputs are graph inputs except the names in `const`, which become initializers (so both
    the run-time and the constant-folded paths get exercised)."""
    inits = {k: v for k, v in inputs if k in const}
    return node_model(op, inputs, list(outputs), attrs=attrs, domain=MS, initializers=inits)


def feeds_of(inputs, const=()):
    return {k: v for k, v in inputs if k and k not in const}


def run_case(op, inputs, outputs=("Y",), attrs=None, const=()):
    return compare(ms_model(op, inputs, outputs, attrs, const), feeds_of(inputs, const))


# ---- QLinearAdd / QLinearMul ----

BIN_SHAPES = [((4, 37), (4, 37)), ((3, 257), (257,)), ((5, 40), (5, 1)), ((5, 1), (5, 40)),
              ((1,), (3, 65)), ((3, 5, 1), (1, 1, 7)), ((2, 3, 4, 5), (3, 1, 5)), ((6,), (1,))]


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("dt", Q8)
@pytest.mark.parametrize("sa,sb", BIN_SHAPES)
def test_qlinear_binary(op, dt, sa, sb):
    rng = np.random.default_rng(abs(hash((op, str(dt), sa, sb))) % 2**32)
    for trial in range(6):
        s = rng.uniform(0.005, 0.3, 3).astype(np.float32)
        z = qrand(rng, dt, 3)
        inputs = [("A", qrand(rng, dt, sa)), ("as", f32(s[0])), ("az", np.array(z[0], dt)),
                  ("B", qrand(rng, dt, sb)), ("bs", f32(s[1])), ("bz", np.array(z[1], dt)),
                  ("cs", f32(s[2])), ("cz", np.array(z[2], dt))]
        const = ("as", "az", "bs", "bz", "cs", "cz") if trial % 2 else ()
        run_case(op, inputs, const=const)


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
def test_qlinear_binary_absent_zero_point(op):
    # (onnxruntime's type inference rejects absent A or B zero points, so only C's is left out)
    rng = np.random.default_rng(7)
    for dt in Q8:
        inputs = [("A", qrand(rng, dt, (3, 20))), ("as", f32(0.05)), ("az", qrand(rng, dt, ())),
                  ("B", qrand(rng, dt, (20,))), ("bs", f32(0.1)), ("bz", qrand(rng, dt, ())), ("cs", f32(0.2))]
        run_case(op, inputs)


@pytest.mark.parametrize("op", ["QLinearAdd", "QLinearMul"])
@pytest.mark.parametrize("dt", Q8)
def test_qlinear_binary_rounding(op, dt):
    """Millions of elements with random scales: values that fall within float rounding error of a
    half step separate onnxruntime's exact sequence of fused multiply-adds from near variants (one
    unfused product moves about one element in 400k)."""
    rng = np.random.default_rng(5 if op == "QLinearAdd" else 6)
    for sa, sb in [((512, 1024), (512, 1024)), ((512, 1024), (512, 1)), ((512, 1), (512, 1024))]:
        for _ in range(3):
            s = rng.uniform(0.001, 0.3, 3).astype(np.float32)
            z = qrand(rng, dt, 3)
            inputs = [("A", qrand(rng, dt, sa)), ("as", f32(s[0])), ("az", np.array(z[0], dt)),
                      ("B", qrand(rng, dt, sb)), ("bs", f32(s[1])), ("bz", np.array(z[1], dt)),
                      ("cs", f32(s[2])), ("cz", np.array(z[2], dt))]
            run_case(op, inputs)


# ---- lookup-table ops ----

@pytest.mark.parametrize("dt", Q8)
@pytest.mark.parametrize("op,attrs", [("QLinearSigmoid", {}), ("QLinearLeakyRelu", {}),
                                      ("QLinearLeakyRelu", {"alpha": 0.3}),
                                      ("QLinearLeakyRelu", {"alpha": -1.5})])
def test_qlinear_lut(dt, op, attrs):
    rng = np.random.default_rng(11)
    for shape in [(7,), (3, 50), (2, 3, 4, 5)]:
        for const in [(), ("xs", "xz", "ys", "yz")]:
            xs = f32(rng.uniform(0.01, 0.2))
            ys = f32(1 / 256 if op == "QLinearSigmoid" else rng.uniform(0.01, 0.2))
            inputs = [("X", qrand(rng, dt, shape)), ("xs", xs), ("xz", qrand(rng, dt, ())), ("ys", ys),
                      ("yz", qrand(rng, dt, ()))]
            run_case(op, inputs, attrs=attrs, const=const)
    # absent X zero point (onnxruntime aborts when Y's is left off the end)
    run_case(op, [("X", qrand(rng, dt, (4, 9))), ("xs", f32(0.05)), ("", None), ("ys", f32(0.02)),
                  ("yz", qrand(rng, dt, ()))], attrs=attrs)


# ---- QLinearSoftmax ----

@pytest.mark.parametrize("dt", Q8)
@pytest.mark.parametrize("shape,opset,axis", [((3, 7, 50), 13, -1), ((3, 7, 50), 13, 1), ((3, 7, 50), 13, 0),
                                              ((3, 7, 50), 12, 1), ((3, 7, 50), 12, 2), ((4, 300), 13, -1),
                                              ((2, 3, 4, 5), 11, 2), ((10,), 13, 0)])
def test_qlinear_softmax(dt, shape, opset, axis):
    rng = np.random.default_rng(13)
    yz = np.array(0 if dt == np.uint8 else -128, dt)
    for xs in [0.02, 0.1, 0.5]:
        inputs = [("X", qrand(rng, dt, shape)), ("xs", f32(xs)), ("xz", qrand(rng, dt, ())),
                  ("ys", f32(1 / 256)), ("yz", yz)]
        run_case("QLinearSoftmax", inputs, attrs={"opset": opset, "axis": axis},
                 const=("xs", "xz", "ys", "yz"))


def test_qlinear_softmax_default_axis():
    rng = np.random.default_rng(14)
    for opset in (12, 13):
        for dt in Q8:
            inputs = [("X", qrand(rng, dt, (2, 6, 9))), ("xs", f32(0.1)), ("xz", qrand(rng, dt, ())),
                      ("ys", f32(1 / 256)), ("yz", np.array(0 if dt == np.uint8 else -128, dt))]
            run_case("QLinearSoftmax", inputs, attrs={"opset": opset}, const=("xs", "xz", "ys", "yz"))


# ---- pooling ----

POOL_CONST = ("xs", "xz", "ys", "yz")


def pool_inputs(rng, dt, shape, ys=0.02):
    return [("X", qrand(rng, dt, shape)), ("xs", f32(rng.uniform(0.02, 0.1))), ("xz", qrand(rng, dt, ())),
            ("ys", f32(ys)), ("yz", qrand(rng, dt, ()))]


@pytest.mark.parametrize("dt", Q8)
@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("shape", [(2, 5, 6, 7), (1, 3, 40), (2, 4, 3, 5, 6), (3, 1, 9, 9), (1, 20, 32, 32),
                                   (2, 19, 7, 7), (1, 8, 14, 14), (1, 2, 131), (1, 3, 15)])
def test_qlinear_global_average_pool(dt, channels_last, shape):
    rng = np.random.default_rng(17)
    for ys in [0.01, 0.05]:
        run_case("QLinearGlobalAveragePool", pool_inputs(rng, dt, shape, ys),
                 attrs={"channels_last": channels_last}, const=POOL_CONST)


AVG_ATTRS = [dict(kernel_shape=[3, 3]), dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1]),
             dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1),
             dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1),
             dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1, count_include_pad=1),
             dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER"), dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
             dict(kernel_shape=[6, 7])]


@pytest.mark.parametrize("dt", Q8)
@pytest.mark.parametrize("channels_last", [0, 1])
@pytest.mark.parametrize("attrs", AVG_ATTRS)
def test_qlinear_average_pool_2d(dt, channels_last, attrs):
    rng = np.random.default_rng(19)
    shape = (2, 5, 6, 7) if not channels_last else (2, 6, 7, 5)
    run_case("QLinearAveragePool", pool_inputs(rng, dt, shape), attrs=dict(attrs, channels_last=channels_last),
             const=POOL_CONST)


@pytest.mark.parametrize("dt", Q8)
@pytest.mark.parametrize("channels_last", [0, 1])
def test_qlinear_average_pool_1d_3d(dt, channels_last):
    rng = np.random.default_rng(23)
    cases = [((2, 3, 11), dict(kernel_shape=[3], strides=[2], pads=[1, 1])),
             ((2, 3, 11), dict(kernel_shape=[4], count_include_pad=1, pads=[2, 1])),
             ((1, 2, 5, 6, 4), dict(kernel_shape=[2, 3, 2], strides=[1, 2, 1])),
             ((1, 2, 5, 6, 4), dict(kernel_shape=[3, 3, 3], pads=[1, 1, 1, 1, 1, 1], count_include_pad=1))]
    for shape, attrs in cases:
        if channels_last:
            shape = (shape[0],) + shape[2:] + (shape[1],)
        run_case("QLinearAveragePool", pool_inputs(rng, dt, shape), attrs=dict(attrs, channels_last=channels_last),
                 const=POOL_CONST)


# ---- QLinearConcat ----

@pytest.mark.parametrize("dt", Q8)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_qlinear_concat(dt, axis):
    rng = np.random.default_rng(29)
    base = [2, 3, 4]
    inputs = [("ys", f32(0.03)), ("yz", qrand(rng, dt, ()))]
    const = ["ys", "yz"]
    for i, extra in enumerate([1, 3, 2]):
        shape = list(base)
        shape[axis] = extra
        # input 1 shares the output's scale and zero point (onnxruntime copies it bytewise)
        s, z = (inputs[0][1], inputs[1][1]) if i == 1 else (f32(rng.uniform(0.01, 0.1)), qrand(rng, dt, ()))
        inputs += [(f"x{i}", qrand(rng, dt, shape)), (f"s{i}", s), (f"z{i}", z)]
        if i != 2:
            const += [f"s{i}", f"z{i}"]
    run_case("QLinearConcat", inputs, attrs={"axis": axis}, const=tuple(const))
    run_case("QLinearConcat", inputs, attrs={"axis": axis})


# ---- QGemm ----

QGEMM_TYPES = [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)]


@pytest.mark.parametrize("adt,bdt", QGEMM_TYPES)
@pytest.mark.parametrize("mkn", [(5, 7, 3), (33, 300, 20), (1, 64, 16)])
@pytest.mark.parametrize("trans", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_qgemm(adt, bdt, mkn, trans):
    rng = np.random.default_rng(31)
    M, K, N = mkn
    ta, tb = trans
    for per_col in (0, 1):
        for cshape in (None, (N,), (1, N), (M, 1), (M, N), ()):
            for quant_out in (0, 1):
                inputs = [("A", qrand(rng, adt, (K, M) if ta else (M, K))), ("as", f32(0.02)),
                          ("az", qrand(rng, adt, ())), ("B", qrand(rng, bdt, (N, K) if tb else (K, N))),
                          ("bs", f32(rng.uniform(0.001, 0.01, N if per_col else ()))),
                          ("bz", qrand(rng, bdt, N if per_col else ()))]
                if cshape is not None:
                    inputs.append(("C", rng.integers(-5000, 5000, cshape).astype(np.int32)))
                elif quant_out:
                    inputs.append(("", None))
                if quant_out:
                    inputs += [("ys", f32(0.7)), ("yz", qrand(rng, adt, ()))]
                run_case("QGemm", inputs, attrs={"transA": ta, "transB": tb, "alpha": 0.9})


# ---- MatMulIntegerToFloat / DynamicQuantizeMatMul ----

MM_SHAPES = [((4, 30), (30, 8)), ((2, 3, 300), (300, 16)), ((2, 3, 10), (2, 10, 4)), ((1, 1), (1, 5))]


@pytest.mark.parametrize("adt,bdt", QGEMM_TYPES)
@pytest.mark.parametrize("ash,bsh", MM_SHAPES)
def test_matmul_integer_to_float(adt, bdt, ash, bsh):
    rng = np.random.default_rng(37)
    N = bsh[-1]
    for per_col in ((0, 1) if len(bsh) == 2 else (0,)):
        for with_bias in (0, 1):
            inputs = [("A", qrand(rng, adt, ash)), ("B", qrand(rng, bdt, bsh)), ("as", f32(0.03)),
                      ("bs", f32(rng.uniform(0.01, 0.02, N if per_col else ()))), ("az", qrand(rng, adt, ())),
                      ("bz", qrand(rng, bdt, N if per_col else ()))]
            if with_bias:
                inputs.append(("bias", f32(rng.uniform(-1, 1, N))))
            run_case("MatMulIntegerToFloat", inputs, const=("bs", "bz") if per_col else ())


@pytest.mark.parametrize("bdt", Q8)
@pytest.mark.parametrize("ash,bsh", MM_SHAPES)
def test_dynamic_quantize_matmul(bdt, ash, bsh):
    rng = np.random.default_rng(41)
    N = bsh[-1]
    for per_col in ((0, 1) if len(bsh) == 2 else (0,)):
        for lo, hi in ((-3, 2), (0.5, 4), (-4, -0.5)):
            inputs = [("A", f32(rng.uniform(lo, hi, ash))), ("B", qrand(rng, bdt, bsh)),
                      ("bs", f32(rng.uniform(0.01, 0.02, N if per_col else ()))),
                      ("bz", qrand(rng, bdt, N if per_col else ())), ("bias", f32(rng.uniform(-1, 1, N)))]
            run_case("DynamicQuantizeMatMul", inputs, const=("B", "bs", "bz"))
    run_case("DynamicQuantizeMatMul", [("A", f32(rng.uniform(-1, 1, ash))), ("B", qrand(rng, bdt, bsh)),
                                       ("bs", f32(0.01))])


# ---- QAttention ----

@pytest.mark.parametrize("wdt", Q8)
@pytest.mark.parametrize("mask", [None, "len", "end_start", "raw2d", "raw3d"])
@pytest.mark.parametrize("past", [0, 1])
def test_qattention(wdt, mask, past):
    rng = np.random.default_rng(43)
    B, S, Di, N, H = 2, 5, 16, 2, 4
    D = N * H
    P = 3 if past else 0
    for per_col in (0, 1):
        for uni in (0, 1):
            inputs = [("input", qrand(rng, np.uint8, (B, S, Di))), ("w", qrand(rng, wdt, (Di, 3 * D))),
                      ("bias", f32(rng.uniform(-1, 1, 3 * D))), ("is", f32(0.05)),
                      ("ws", f32(rng.uniform(0.0005, 0.001, 3 * D if per_col else ())))]
            if mask == "len":
                mk = np.array([S + P, 2 + P], np.int32)
            elif mask == "end_start":
                mk = np.array([S + P, 3 + P, 0, 1], np.int32)
            elif mask == "raw2d":
                mk = rng.integers(0, 2, (B, S + P)).astype(np.int32)
                mk[:, 0] = 1
            elif mask == "raw3d":
                mk = rng.integers(0, 2, (B, S, S + P)).astype(np.int32)
                mk[:, :, 0] = 1
            else:
                mk = None
            inputs.append(("mask", mk) if mk is not None else ("", None))
            inputs += [("iz", qrand(rng, np.uint8, ())), ("wz", qrand(rng, wdt, 3 * D if per_col else ()))]
            outs = ("Y",)
            if past:
                inputs.append(("past", f32(rng.uniform(-1, 1, (2, B, N, P, H)))))
                outs = ("Y", "present")
            run_case("QAttention", inputs, outputs=outs, attrs={"num_heads": N, "unidirectional": uni},
                     const=("w", "ws", "wz") if per_col else ())


# ---- com.microsoft QuantizeLinear / DequantizeLinear ----

@pytest.mark.parametrize("dt", [np.uint8, np.int8, np.uint16, np.int16])
@pytest.mark.parametrize("axis,sshape", [(1, ()), (1, (4,)), (0, (3,)), (-1, (5,))])
def test_ms_quantize_dequantize(dt, axis, sshape):
    rng = np.random.default_rng(47)
    info = np.iinfo(dt)
    for _ in range(3):
        x = f32(rng.uniform(-300, 300, (3, 4, 5)))
        s = f32(rng.uniform(0.1, 2.0, sshape))
        z = rng.integers(max(info.min, -100), min(info.max, 100) + 1, sshape).astype(dt)
        run_case("QuantizeLinear", [("x", x), ("s", s), ("z", z)], attrs={"axis": axis})
        xq = rng.integers(info.min, info.max + 1, (3, 4, 5)).astype(dt)
        run_case("DequantizeLinear", [("x", xq), ("s", s), ("z", z)], attrs={"axis": axis})


# ---- bad input ----

def kiln_error(model, feeds):
    with pytest.raises(kiln.KilnError) as e:
        run_kiln(model, feeds)
    return str(e.value)


def test_error_wrong_dtype_names_input():
    rng = np.random.default_rng(53)
    A = qrand(rng, np.uint8, (3, 4))
    # B's type differs from A's
    m = ms_model("QLinearAdd", [("A", A), ("as", f32(0.1)), ("az", np.array(0, np.uint8)),
                                ("B", qrand(rng, np.int8, (3, 4))), ("bs", f32(0.1)),
                                ("bz", np.array(0, np.uint8)), ("cs", f32(0.1)), ("cz", np.array(0, np.uint8))])
    msg = kiln_error(m, {"A": A, "B": qrand(rng, np.int8, (3, 4)), "as": f32(0.1), "az": np.array(0, np.uint8),
                         "bs": f32(0.1), "bz": np.array(0, np.uint8), "cs": f32(0.1), "cz": np.array(0, np.uint8)})
    assert "'B'" in msg and "int8" in msg, msg
    # an integer scale
    ins = [("X", A), ("xs", np.array(3, np.int32)), ("xz", np.array(0, np.uint8)), ("ys", f32(0.1)),
           ("yz", np.array(0, np.uint8))]
    msg = kiln_error(ms_model("QLinearSigmoid", ins), feeds_of(ins))
    assert "'X_scale'" in msg and "int32" in msg, msg
    # a float input where QGemm wants 8-bit integers
    ins = [("A", f32(rng.uniform(size=(2, 3)))), ("as", f32(0.1)), ("az", np.array(0, np.uint8)),
           ("B", qrand(rng, np.uint8, (3, 2))), ("bs", f32(0.1)), ("bz", np.array(0, np.uint8))]
    msg = kiln_error(ms_model("QGemm", ins), feeds_of(ins))
    assert "'A'" in msg and "float" in msg, msg
    # QAttention's mask must be int32
    ins = [("input", qrand(rng, np.uint8, (1, 2, 4))), ("w", qrand(rng, np.int8, (4, 12))),
           ("bias", f32(np.zeros(12))), ("is", f32(0.1)), ("ws", f32(0.1)), ("mask", np.array([2], np.int64))]
    msg = kiln_error(ms_model("QAttention", ins, attrs={"num_heads": 2}), feeds_of(ins))
    assert "'mask_index'" in msg and "int64" in msg, msg


def test_error_bad_shapes_and_attributes():
    rng = np.random.default_rng(59)
    ins = [("A", qrand(rng, np.uint8, (3, 4))), ("as", f32([0.1, 0.2])), ("az", np.array(0, np.uint8)),
           ("B", qrand(rng, np.uint8, (4,))), ("bs", f32(0.1)), ("bz", np.array(0, np.uint8)),
           ("cs", f32(0.1)), ("cz", np.array(0, np.uint8))]
    msg = kiln_error(ms_model("QLinearMul", ins), feeds_of(ins))
    assert "A_scale" in msg and "one value" in msg, msg
    ins = [("A", qrand(rng, np.uint8, (3, 4))), ("as", f32(0.1)), ("az", np.array(0, np.uint8)),
           ("B", qrand(rng, np.uint8, (5, 2))), ("bs", f32(0.1)), ("bz", np.array(0, np.uint8))]
    msg = kiln_error(ms_model("QGemm", ins), feeds_of(ins))
    assert "inner dimensions" in msg, msg
    ins = [("X", qrand(rng, np.uint8, (2, 5))), ("xs", f32(0.1)), ("xz", np.array(0, np.uint8)),
           ("ys", f32(1 / 256)), ("yz", np.array(0, np.uint8))]
    msg = kiln_error(ms_model("QLinearSoftmax", ins), feeds_of(ins))
    assert "'opset'" in msg, msg
    msg = kiln_error(ms_model("QLinearSoftmax", ins, attrs={"opset": 13, "axis": 4}), feeds_of(ins))
    assert "axis" in msg, msg
    ins = [("X", qrand(rng, np.uint8, (1, 2, 4, 4))), ("xs", f32(0.1)), ("xz", np.array(0, np.uint8)),
           ("ys", f32(0.1)), ("yz", np.array(0, np.uint8))]
    msg = kiln_error(ms_model("QLinearAveragePool", ins, attrs={"kernel_shape": [5, 5]}), feeds_of(ins))
    assert "window" in msg, msg
    msg = kiln_error(ms_model("QLinearAveragePool", ins), feeds_of(ins))
    assert "kernel_shape" in msg, msg
    ins = [("ys", f32(0.1)), ("yz", np.array(0, np.uint8)), ("x0", qrand(rng, np.uint8, (2, 3))),
           ("s0", f32(0.1)), ("z0", np.array(0, np.uint8)), ("x1", qrand(rng, np.uint8, (3, 3))),
           ("s1", f32(0.1)), ("z1", np.array(0, np.uint8))]
    msg = kiln_error(ms_model("QLinearConcat", ins, attrs={"axis": 1}), feeds_of(ins))
    assert "X1" in msg and "axis" in msg, msg
    msg = kiln_error(ms_model("QLinearConcat", ins[:5] + ins[6:]), feeds_of(ins[:5] + ins[6:]))
    assert "triples" in msg, msg


def test_symbolic_batch_dim():
    """Graph inputs whose first dim is symbolic ('N'): shape inference at session creation must not
    reject them, and the run must still match onnxruntime."""
    rng = np.random.default_rng(97)
    u8 = lambda shape: qrand(rng, np.uint8, shape)  # noqa: E731
    s8 = lambda shape: qrand(rng, np.int8, shape)  # noqa: E731
    pool = [("xs", f32(0.1)), ("xz", u8(())), ("ys", f32(0.1)), ("yz", u8(()))]
    cases = [
        ("QLinearAdd", [("A", u8((3, 4))), ("as", f32(0.1)), ("az", u8(())), ("B", u8((3, 4))), ("bs", f32(0.1)),
                        ("bz", u8(())), ("cs", f32(0.2)), ("cz", u8(()))], {}, ("as", "az", "bs", "bz", "cs", "cz")),
        ("QLinearSoftmax", [("X", s8((3, 4))), ("xs", f32(0.1)), ("xz", s8(())), ("ys", f32(1 / 256)),
                            ("yz", np.array(-128, np.int8))], {"opset": 13}, ("xs", "xz", "ys", "yz")),
        ("QLinearAveragePool", [("X", u8((2, 3, 5, 5)))] + pool, {"kernel_shape": [2, 2]}, ("xs", "xz", "ys", "yz")),
        ("QLinearGlobalAveragePool", [("X", u8((2, 3, 5, 5)))] + pool, {}, ("xs", "xz", "ys", "yz")),
        ("QLinearConcat", [("ys", f32(0.1)), ("yz", u8(())), ("x0", u8((2, 3))), ("s0", f32(0.1)), ("z0", u8(())),
                           ("x1", u8((2, 2))), ("s1", f32(0.2)), ("z1", u8(()))], {"axis": 1},
         ("ys", "yz", "s0", "z0", "s1", "z1")),
        ("DynamicQuantizeMatMul", [("A", f32(rng.uniform(-1, 1, (2, 3, 4)))), ("B", s8((4, 5))), ("bs", f32(0.1))],
         {}, ("B", "bs")),
        ("MatMulIntegerToFloat", [("A", u8((2, 3, 4))), ("B", s8((2, 4, 5))), ("as", f32(0.1)), ("bs", f32(0.1))],
         {}, ("as", "bs")),
        ("QGemm", [("A", u8((3, 4))), ("as", f32(0.1)), ("az", u8(())), ("B", s8((4, 5))), ("bs", f32(0.1)),
                   ("bz", np.array(0, np.int8))], {}, ("as", "az", "B", "bs", "bz")),
        ("QAttention", [("input", u8((2, 3, 8))), ("w", s8((8, 24))), ("bias", f32(np.zeros(24))), ("is", f32(0.1)),
                        ("ws", f32(0.01)), ("mask", np.array([3, 2], np.int32))], {"num_heads": 2},
         ("w", "bias", "is", "ws")),
    ]
    for op, ins, attrs, const in cases:
        m = ms_model(op, ins, attrs=attrs, const=const)
        for vi in m.graph.input:
            dims = vi.type.tensor_type.shape.dim
            if len(dims) >= 1:
                dims[0].ClearField("dim_value")
                dims[0].dim_param = "N"
        compare(m, feeds_of(ins, const))


# ---- end to end: models quantised by onnxruntime.quantization ----

quant = pytest.importorskip("onnxruntime.quantization")


def _init(rng, name, shape, sd):
    return numpy_helper.from_array(rng.normal(0, sd, shape).astype(np.float32), name)


def mlp_model(rng):
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Add", ["h1", "b1"], ["h2"]),
             helper.make_node("Relu", ["h2"], ["h3"]),
             helper.make_node("Gemm", ["h3", "w2", "b2"], ["h4"], transB=1),
             helper.make_node("Sigmoid", ["h4"], ["h5"]), helper.make_node("Softmax", ["h5"], ["y"], axis=-1)]
    inits = [_init(rng, "w1", (32, 64), 0.3), _init(rng, "b1", (64,), 0.1), _init(rng, "w2", (10, 64), 0.2),
             _init(rng, "b2", (10,), 0.1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])], inits)
    return g, {"x": (4, 32)}


def cnn_model(rng):
    nodes = [helper.make_node("Conv", ["x", "c1w", "c1b"], ["a1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a1"], ["a2"]),
             helper.make_node("Conv", ["a2", "c2w", "c2b"], ["a3"], pads=[1, 1, 1, 1], strides=[2, 2]),
             helper.make_node("LeakyRelu", ["a3"], ["a4"], alpha=0.1),
             helper.make_node("Conv", ["a2", "c3w"], ["b3"], strides=[2, 2]),
             helper.make_node("Add", ["a4", "b3"], ["a5"]), helper.make_node("Mul", ["a5", "a4"], ["a5m"]),
             helper.make_node("Sigmoid", ["a5m"], ["a5s"]),
             helper.make_node("AveragePool", ["a5s"], ["a6"], kernel_shape=[2, 2]),
             helper.make_node("Concat", ["a6", "a6"], ["a7"], axis=1),
             helper.make_node("GlobalAveragePool", ["a7"], ["a8"]), helper.make_node("Flatten", ["a8"], ["a9"]),
             helper.make_node("MatMul", ["a9", "fw"], ["y"])]
    inits = [_init(rng, "c1w", (8, 3, 3, 3), 0.3), _init(rng, "c1b", (8,), 0.1), _init(rng, "c2w", (8, 8, 3, 3), 0.2),
             _init(rng, "c2b", (8,), 0.1), _init(rng, "c3w", (8, 8, 1, 1), 0.2), _init(rng, "fw", (16, 5), 0.3)]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5])], inits)
    return g, {"x": (2, 3, 16, 16)}


def bert_model(rng):
    B, S, D, N = 2, 8, 32, 4
    nodes = [helper.make_node("Attention", ["x", "aw", "ab", "mask"], ["a"], domain=MS, num_heads=N),
             helper.make_node("Add", ["a", "x"], ["r"]), helper.make_node("MatMul", ["r", "w1"], ["h"]),
             helper.make_node("Add", ["h", "b1"], ["h2"]), helper.make_node("Relu", ["h2"], ["h3"]),
             helper.make_node("MatMul", ["h3", "w2"], ["y"])]
    inits = [_init(rng, "aw", (D, 3 * D), 0.2), _init(rng, "ab", (3 * D,), 0.1), _init(rng, "w1", (D, 64), 0.2),
             _init(rng, "b1", (64,), 0.1), _init(rng, "w2", (64, D), 0.2)]
    g = helper.make_graph(nodes, "bert", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [B, S, D]),
                                          helper.make_tensor_value_info("mask", TensorProto.INT32, [B])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [B, S, D])], inits)
    return g, {"x": (B, S, D)}


def make_float_model(kind, rng):
    g, shapes = {"mlp": mlp_model, "cnn": cnn_model, "bert": bert_model}[kind](rng)
    opsets = [helper.make_opsetid("", 17)] + ([helper.make_opsetid(MS, 1)] if kind == "bert" else [])
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 9
    return m, shapes


def model_feeds(kind, shapes, rng):
    feeds = {k: rng.uniform(-1, 1, s).astype(np.float32) for k, s in shapes.items()}
    if kind == "bert":
        feeds["mask"] = np.array([8, 5], np.int32)
    return feeds


class RandomReader(quant.CalibrationDataReader if hasattr(quant, "CalibrationDataReader") else object):
    def __init__(self, kind, shapes, rng, n=8):
        self.items = iter([model_feeds(kind, shapes, rng) for _ in range(n)])

    def get_next(self):
        return next(self.items, None)


def ops_of(model):
    return {(n.domain or "ai.onnx") + ":" + n.op_type for n in model.graph.node}


def compare_model(qm, kind, shapes, rng, exact):
    """Against oracles(): the model's integer products in exact numpy, its other nodes by
    onnxruntime, and onnxruntime's whole run too where its products are exact."""
    for _ in range(2):
        feeds = model_feeds(kind, shapes, rng)
        got = run_kiln(qm, feeds)[0]
        for who, want in oracles(qm, feeds):
            want = want[0]
            assert got.shape == want.shape and got.dtype == want.dtype
            if exact:
                np.testing.assert_array_equal(got, want, err_msg=f"vs {who}")
            else:
                np.testing.assert_allclose(got, want, rtol=FLOAT_RTOL,
                                           atol=FLOAT_ATOL * max(1.0, float(np.abs(want).max())),
                                           err_msg=f"vs {who}")


TYPES = [("QUInt8", "QUInt8"), ("QUInt8", "QInt8"), ("QInt8", "QInt8")]


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("act,wt", TYPES)
def test_quantize_static_qoperator(tmp_path, kind, per_channel, act, wt):
    """QOperator models run the com.microsoft ops; every value is integer until the final
    DequantizeLinear, so the outputs must be identical."""
    rng = np.random.default_rng(61)
    m, shapes = make_float_model(kind, rng)
    src, dst = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx")
    onnx.save(m, src)
    quant.quantize_static(src, dst, RandomReader(kind, shapes, rng), quant_format=quant.QuantFormat.QOperator,
                          per_channel=per_channel, activation_type=getattr(quant.QuantType, act),
                          weight_type=getattr(quant.QuantType, wt))
    qm = onnx.load(dst)
    ops = ops_of(qm)
    want_ops = {"mlp": {"QGemm", "QLinearAdd", "QLinearSigmoid", "QLinearSoftmax"},
                "cnn": {"QLinearAdd", "QLinearMul", "QLinearLeakyRelu", "QLinearSigmoid", "QLinearAveragePool",
                        "QLinearConcat", "QLinearGlobalAveragePool"}}[kind]
    assert {MS + ":" + o for o in want_ops} <= ops, ops
    compare_model(qm, kind, shapes, rng, exact=True)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("act,wt", TYPES)
def test_quantize_static_qdq(tmp_path, kind, per_channel, act, wt):
    """QDQ models are float ops between QuantizeLinear/DequantizeLinear pairs. A float result that
    lands within rounding error of a quantisation midpoint may round to the neighbouring step in
    one runtime and not the other (kiln's float Sigmoid, Conv and pooling round differently from
    MLAS's), and such a flip propagates. So outputs are compared in output quantisation steps (read
    from the model's last DequantizeLinear): each within 3 steps, and the mean difference at most
    half a step."""
    rng = np.random.default_rng(67)
    m, shapes = make_float_model(kind, rng)
    src, dst = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx")
    onnx.save(m, src)
    quant.quantize_static(src, dst, RandomReader(kind, shapes, rng), quant_format=quant.QuantFormat.QDQ,
                          per_channel=per_channel, activation_type=getattr(quant.QuantType, act),
                          weight_type=getattr(quant.QuantType, wt))
    qm = onnx.load(dst)
    assert "ai.onnx:QuantizeLinear" in ops_of(qm) and "ai.onnx:DequantizeLinear" in ops_of(qm)
    last_dq = [n for n in qm.graph.node if n.op_type == "DequantizeLinear" and n.output[0] == "y"]
    if last_dq:
        step = float(numpy_helper.to_array(next(i for i in qm.graph.initializer if i.name == last_dq[0].input[1])))
    else:  # the output is a float op's result: compare with the float tolerance
        step = None
    for _ in range(2):
        feeds = model_feeds(kind, shapes, rng)
        want = run_ort(qm, feeds)[0]
        got = run_kiln(qm, feeds)[0]
        assert got.shape == want.shape and got.dtype == want.dtype
        if step is None:
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))
            continue
        diff = np.abs(got.astype(np.float64) - want) / step
        assert diff.max() <= 3.001, diff.max()
        assert diff.mean() <= 0.5, diff.mean()


@pytest.mark.parametrize("kind", ["mlp", "cnn", "bert"])
@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("wt", ["QUInt8", "QInt8"])
def test_quantize_dynamic(tmp_path, kind, per_channel, wt):
    rng = np.random.default_rng(71)
    m, shapes = make_float_model(kind, rng)
    src, dst = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx")
    onnx.save(m, src)
    quant.quantize_dynamic(src, dst, per_channel=per_channel, weight_type=getattr(quant.QuantType, wt),
                           extra_options={"DefaultTensorType": TensorProto.FLOAT})
    qm = onnx.load(dst)
    if kind == "bert":
        assert MS + ":QAttention" in ops_of(qm), ops_of(qm)
    compare_model(qm, kind, shapes, rng, exact=False)


@pytest.mark.parametrize("wt", ["QUInt8", "QInt8"])
def test_ort_fused_dynamic_model(tmp_path, wt):
    """onnxruntime's own graph optimiser turns a dynamically quantised model into
    DynamicQuantizeMatMul / MatMulIntegerToFloat / QAttention nodes; kiln runs the saved result."""
    import onnxruntime as ort
    rng = np.random.default_rng(73)
    m, shapes = make_float_model("bert", rng)
    src, dst, opt = str(tmp_path / "f.onnx"), str(tmp_path / "q.onnx"), str(tmp_path / "o.onnx")
    onnx.save(m, src)
    quant.quantize_dynamic(src, dst, weight_type=getattr(quant.QuantType, wt),
                           extra_options={"DefaultTensorType": TensorProto.FLOAT})
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    so.optimized_model_filepath = opt
    ort.InferenceSession(dst, so, providers=["CPUExecutionProvider"])
    om = onnx.load(opt)
    ops = ops_of(om)
    assert MS + ":QAttention" in ops and (MS + ":DynamicQuantizeMatMul" in ops or
                                          MS + ":MatMulIntegerToFloat" in ops), ops
    compare_model(om, "bert", shapes, rng, exact=False)


def test_hostile_scales_do_not_crash():
    """Zero, infinite and NaN scales and windows that lie wholly in the padding: onnxruntime's
    conversions saturate such values to the type's low end; kiln must give a result of the right
    shape (checked under the sanitizers) rather than reach an undefined conversion."""
    rng = np.random.default_rng(79)
    for bad in (0.0, np.inf, np.nan, 1e-38):
        for op in ("QLinearAdd", "QLinearMul"):
            ins = [("A", qrand(rng, np.uint8, (3, 9))), ("as", f32(1e30)), ("az", np.array(1, np.uint8)),
                   ("B", qrand(rng, np.uint8, (3, 1))), ("bs", f32(0.5)), ("bz", np.array(2, np.uint8)),
                   ("cs", f32(bad)), ("cz", np.array(3, np.uint8))]
            y = run_kiln(ms_model(op, ins), feeds_of(ins))[0]
            assert y.shape == (3, 9) and y.dtype == np.uint8
        ins = [("X", qrand(rng, np.int8, (2, 7))), ("xs", f32(0.1)), ("xz", np.array(0, np.int8)),
               ("ys", f32(bad)), ("yz", np.array(-128, np.int8))]
        y = run_kiln(ms_model("QLinearSoftmax", ins, attrs={"opset": 13}), feeds_of(ins))[0]
        assert y.shape == (2, 7) and y.dtype == np.int8
        ins = [("X", qrand(rng, np.uint8, (1, 2, 4, 4))), ("xs", f32(0.1)), ("xz", np.array(0, np.uint8)),
               ("ys", f32(bad)), ("yz", np.array(0, np.uint8))]
        y = run_kiln(ms_model("QLinearAveragePool", ins, attrs={"kernel_shape": [2, 2], "pads": [3, 3, 3, 3]}),
                     feeds_of(ins))[0]
        assert y.shape == (1, 2, 9, 9) and y.dtype == np.uint8
        ins = [("A", f32([[np.inf, -1.0], [bad, 2.0]])), ("B", qrand(rng, np.int8, (2, 3))), ("bs", f32(0.1))]
        y = run_kiln(ms_model("DynamicQuantizeMatMul", ins), feeds_of(ins))[0]
        assert y.shape == (2, 3) and y.dtype == np.float32


# ---- real models from ../shared/models ----

def _shared_feeds(name):
    from util import MODELS
    z = np.load(os.path.join(MODELS, name + ".ref.npz"))
    return os.path.join(MODELS, name + ".onnx"), {k[3:]: z[k] for k in z.files if k.startswith("in.")}


class _ListReader(quant.CalibrationDataReader if hasattr(quant, "CalibrationDataReader") else object):
    def __init__(self, items):
        self.items = iter(items)

    def get_next(self):
        return next(self.items, None)


def _jitter(base, rng):
    return {k: (v + rng.normal(0, 0.5, v.shape)).astype(v.dtype) if v.dtype == np.float32 else v
            for k, v in base.items()}


def test_mobilenet_v3_small_qoperator(tmp_path):
    """torchvision MobileNetV3-small quantised to QOperator form (QLinearConv, QLinearAdd,
    QLinearMul, QLinearGlobalAveragePool, QGemm, per-channel int8 weights): identical logits."""
    from onnxruntime.quantization.shape_inference import quant_pre_process
    rng = np.random.default_rng(83)
    src, base = _shared_feeds("mobilenet_v3_small")
    pre, dst = str(tmp_path / "pre.onnx"), str(tmp_path / "q.onnx")
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    quant.quantize_static(pre, dst, _ListReader([_jitter(base, rng) for _ in range(2)]),
                          quant_format=quant.QuantFormat.QOperator, per_channel=True,
                          activation_type=quant.QuantType.QUInt8, weight_type=quant.QuantType.QInt8)
    qm = onnx.load(dst)
    assert {MS + ":QLinearAdd", MS + ":QLinearMul", MS + ":QLinearGlobalAveragePool", MS + ":QGemm"} <= ops_of(qm)
    for feeds in (base, _jitter(base, rng)):
        got = run_kiln(qm, feeds)[0]
        for who, want in oracles(qm, feeds):
            np.testing.assert_array_equal(got, want[0], err_msg=f"vs {who}")


@pytest.mark.parametrize("kind", ["qoperator", "qdq", "dynamic"])
def test_bert_tiny_quantized(tmp_path, kind):
    """The 2-layer BERT quantised three ways. Float ops stay between the quantised ones
    (LayerNormalization, Erf, Softmax in QDQ form) and round differently from onnxruntime's, and
    a value that moves across a quantisation midpoint then moves by a whole step, so outputs are
    compared within 1e-3 of their largest magnitude."""
    rng = np.random.default_rng(89)
    src, base = _shared_feeds("bert_tiny")
    dst = str(tmp_path / "q.onnx")
    if kind == "dynamic":
        quant.quantize_dynamic(src, dst, weight_type=quant.QuantType.QInt8)
    else:
        fmt = quant.QuantFormat.QOperator if kind == "qoperator" else quant.QuantFormat.QDQ
        quant.quantize_static(src, dst, _ListReader([_jitter(base, rng) for _ in range(2)]), quant_format=fmt,
                              per_channel=True, activation_type=quant.QuantType.QUInt8,
                              weight_type=quant.QuantType.QInt8)
    qm = onnx.load(dst)
    if kind == "qoperator":
        assert {MS + ":QGemm", MS + ":QLinearAdd", MS + ":QLinearSoftmax"} <= ops_of(qm), ops_of(qm)
    got = run_kiln(qm, base)
    for who, want in oracles(qm, base):
        assert len(got) == len(want)
        for g, w in zip(got, want):
            np.testing.assert_allclose(g, w, rtol=0, atol=1e-3 * float(np.abs(w).max()), err_msg=f"vs {who}")
