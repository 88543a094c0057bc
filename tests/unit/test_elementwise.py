"""One-input element-wise kernels (unary math, activations, com.microsoft Gelu family, BiasAdd)
checked against onnxruntime, and against numpy in float64 where onnxruntime has no kernel."""
import os
import sys

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, node_model, rand, run_kiln  # noqa: E402

F32, F64, F16 = np.float32, np.float64, np.float16
INTS = [np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64]
SINTS = [np.int8, np.int16, np.int32, np.int64]
SHAPES = [(), (1,), (7,), (3, 5), (2, 3, 4)]


def tol(dt):
    dt = np.dtype(dt)
    if dt == F16:
        return dict(rtol=3e-3, atol=3e-3)
    if dt == F32:
        return dict(rtol=2e-5, atol=2e-6)
    return dict(rtol=1e-12, atol=1e-12)


def ortcheck(op, inputs, attrs=None, opset=18, domain="", rtol=None, atol=None):
    dt = np.asarray(inputs[0][1]).dtype
    t = tol(dt)
    m = node_model(op, inputs, ["y"], attrs=attrs, opset=opset, domain=domain)
    feeds = {n: v for n, v in inputs if n}
    return check(m, feeds, rtol=rtol or t["rtol"], atol=atol or t["atol"])


def bf16(x):
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def bf16_chain_model(op, n_in, attrs=None, opset=18, domain=""):
    """float32 inputs -> Cast(bfloat16) -> op -> Cast(float32): runs the op's bfloat16 kernel."""
    nodes, names = [], []
    for i in range(n_in):
        nodes.append(helper.make_node("Cast", [f"x{i}"], [f"b{i}"], to=TensorProto.BFLOAT16))
        names.append(f"b{i}")
    nodes.append(helper.make_node(op, names, ["r"], domain=domain or None, **(attrs or {})))
    nodes.append(helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT))
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, None) for i in range(n_in)]
    g = helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    opsets = [helper.make_opsetid("", opset)]
    if domain:
        opsets.append(helper.make_opsetid(domain, 1))
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = 10
    return m


def bf16_check(op, ref, xs, attrs=None, opset=18, domain="", rtol=1e-2, atol=1e-2):
    m = bf16_chain_model(op, len(xs), attrs, opset, domain)
    got = run_kiln(m, {f"x{i}": x for i, x in enumerate(xs)})[0]
    want = bf16(ref(*[bf16(x).astype(np.float64) for x in xs]))
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)


# ---------------------------------------------------------------- unary math

# op: (numpy reference, low, high, dtypes onnxruntime has, first opset, latest opset)
FLOATS3 = [F32, F64, F16]
UNARY = {
    "Abs": (np.abs, -3, 3, [F32, F64, F16] + INTS, 6, 13),
    "Neg": (np.negative, -3, 3, [F32, F64, F16, np.int8, np.int16, np.int32, np.int64], 6, 13),
    "Reciprocal": (np.reciprocal, 0.3, 3, FLOATS3, 6, 13),
    "Floor": (np.floor, -3, 3, FLOATS3, 6, 13),
    "Ceil": (np.ceil, -3, 3, FLOATS3, 6, 13),
    "Round": (np.round, -4, 4, FLOATS3, 11, 22),
    "Sign": (np.sign, -3, 3, [F32, F64, F16] + INTS, 9, 13),
    "Sqrt": (np.sqrt, 0.01, 4, FLOATS3, 6, 13),
    "Exp": (np.exp, -4, 4, FLOATS3, 6, 13),
    "Log": (np.log, 0.01, 4, FLOATS3, 6, 13),
    "Sin": (np.sin, -4, 4, FLOATS3, 7, 22),
    "Cos": (np.cos, -4, 4, FLOATS3, 7, 22),
    "Tan": (np.tan, -1.2, 1.2, [F32, F16], 7, 22),
    "Asin": (np.arcsin, -0.99, 0.99, [F32, F16], 7, 22),
    "Acos": (np.arccos, -0.99, 0.99, [F32, F16], 7, 22),
    "Atan": (np.arctan, -4, 4, [F32, F16], 7, 22),
    "Sinh": (np.sinh, -3, 3, [F32, F16], 9, 22),
    "Cosh": (np.cosh, -3, 3, [F32, F16], 9, 22),
    "Asinh": (np.arcsinh, -3, 3, [F32, F16], 9, 22),
    "Acosh": (np.arccosh, 1.01, 4, [F32, F16], 9, 22),
    "Atanh": (np.arctanh, -0.95, 0.95, [F32, F16], 9, 22),
    "Erf": (None, -3, 3, [F32, F16], 9, 13),
}


def _erf(x):
    from math import erf
    return np.vectorize(erf)(x)


def _ref(op):
    return _erf if op == "Erf" else UNARY[op][0]


def _unary_cases():
    for op, (_, lo, hi, dts, first, last) in UNARY.items():
        for dt in dts:
            yield op, dt


@pytest.mark.parametrize("op,dt", list(_unary_cases()))
def test_unary_vs_ort(op, dt):
    _, lo, hi, _, first, last = UNARY[op]
    rng = np.random.default_rng(hash((op, str(dt))) % 2**32)
    for shape in SHAPES:
        x = rand(rng, shape, dt, lo, hi)
        ortcheck(op, [("x", x)], opset=last)
    # the first opset that had the op (and one in between when it exists)
    if np.dtype(dt) in (np.dtype(F32), np.dtype(F64)):
        x = rand(rng, (4, 6), dt, lo, hi)
        ortcheck(op, [("x", x)], opset=max(first, 7))


@pytest.mark.parametrize("op", [o for o in UNARY if o not in ("Abs", "Neg", "Sign")])
def test_unary_float64_numpy(op):
    """float64 for every float op, including those onnxruntime lacks in double."""
    _, lo, hi, _, _, last = UNARY[op]
    rng = np.random.default_rng(11)
    x = rand(rng, (5, 7), F64, lo, hi)
    got = run_kiln(node_model(op, [("x", x)], ["y"], opset=last), {"x": x})[0]
    want = _ref(op)(x)
    if op == "Round":
        want = np.round(x)  # numpy rounds half to even as ONNX does
    assert_same(got, want.astype(F64), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("op", list(UNARY))
def test_unary_bfloat16(op):
    _, lo, hi, _, _, last = UNARY[op]
    rng = np.random.default_rng(5)
    x = rand(rng, (3, 17), F32, lo, hi)
    bf16_check(op, _ref(op), [x], opset=max(last, 13))


@pytest.mark.parametrize("dt", SINTS + [np.uint8, np.uint16, np.uint32, np.uint64])
def test_int_unary_numpy(dt):
    """Abs/Neg/Sign on every integer type, with the extremes (Abs/Neg of INT_MIN wrap)."""
    info = np.iinfo(dt)
    rng = np.random.default_rng(3)
    x = np.concatenate([rand(rng, (20,), dt), np.array([info.min, info.max, 1], dt)])
    got = run_kiln(node_model("Abs", [("x", x)], ["y"], opset=13), {"x": x})[0]
    with np.errstate(over="ignore"):
        assert_same(got, np.abs(x))
        got = run_kiln(node_model("Sign", [("x", x)], ["y"], opset=13), {"x": x})[0]
        assert_same(got, np.sign(x).astype(dt))
        if info.min < 0:
            got = run_kiln(node_model("Neg", [("x", x)], ["y"], opset=13), {"x": x})[0]
            assert_same(got, np.negative(x))


def test_round_half_to_even():
    x = np.array([-2.5, -1.5, -0.5, 0.5, 1.5, 2.5, 3.5, 0.49999997, -0.0], F32)
    ortcheck("Round", [("x", x)], opset=11)
    assert_same(run_kiln(node_model("Round", [("x", x)], ["y"], opset=22), {"x": x})[0],
                np.round(x))


def test_unary_large_threaded():
    rng = np.random.default_rng(9)
    x = rand(rng, (3, 70001), F32, -3, 3)
    for op in ("Exp", "Abs", "Sqrt", "Erf"):
        xx = np.abs(x) if op == "Sqrt" else x
        ortcheck(op, [("x", xx)], opset=13)
    x16 = rand(rng, (2, 40000), F16, -3, 3)
    ortcheck("Neg", [("x", x16)], opset=13)
    ortcheck("Erf", [("x", x16)], opset=13)


# ---------------------------------------------------------------- IsNaN / IsInf / Not / BitwiseNot

SPECIALS = [np.nan, np.inf, -np.inf, 0.0, -0.0, 1.5, -2.0, 65504.0, 1e-8]


@pytest.mark.parametrize("dt", [F32, F64, F16])
def test_isnan_isinf(dt):
    x = np.array(SPECIALS * 3, dtype=dt).reshape(3, 9)
    for opset in (9, 13, 20):
        ortcheck("IsNaN", [("x", x)], opset=opset)
    for opset in ((10, 20) if dt != F16 else (20,)):
        ortcheck("IsInf", [("x", x)], opset=opset)
        for neg in (0, 1):
            for pos in (0, 1):
                ortcheck("IsInf", [("x", x)], attrs=dict(detect_negative=neg, detect_positive=pos),
                         opset=opset)


def _cast_chain(to, op, attrs=None, opset=20):
    nodes = [helper.make_node("Cast", ["x"], ["c"], to=to, saturate=0),
             helper.make_node(op, ["c"], ["y"], **(attrs or {}))]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TensorProto.BOOL, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


NARROW = {TensorProto.BFLOAT16: ml_dtypes.bfloat16, TensorProto.FLOAT8E4M3FN: ml_dtypes.float8_e4m3fn,
          TensorProto.FLOAT8E4M3FNUZ: ml_dtypes.float8_e4m3fnuz, TensorProto.FLOAT8E5M2: ml_dtypes.float8_e5m2,
          TensorProto.FLOAT8E5M2FNUZ: ml_dtypes.float8_e5m2fnuz}


@pytest.mark.parametrize("to", list(NARROW))
def test_isnan_isinf_narrow_floats(to):
    """bfloat16 and float8 inputs, made by a non-saturating Cast (inf becomes NaN where the format
    has no infinity; out-of-range values overflow)."""
    x = np.array(SPECIALS + [1e6, -1e6, 3.0], F32)
    v = x.astype(NARROW[to]).astype(F32)
    got = run_kiln(_cast_chain(to, "IsNaN"), {"x": x})[0]
    assert_same(got, np.isnan(v))
    for neg, pos in ((1, 1), (0, 1), (1, 0)):
        got = run_kiln(_cast_chain(to, "IsInf", dict(detect_negative=neg, detect_positive=pos)), {"x": x})[0]
        assert_same(got, (np.isposinf(v) & bool(pos)) | (np.isneginf(v) & bool(neg)))


def test_not_and_bitwise_not():
    rng = np.random.default_rng(4)
    for shape in SHAPES:
        ortcheck("Not", [("x", rand(rng, shape, np.bool_))], opset=1)
    for dt in INTS:
        for shape in [(9,), (2, 3, 4)]:
            ortcheck("BitwiseNot", [("x", rand(rng, shape, dt))], opset=18)


# ---------------------------------------------------------------- activations

ACT = {
    # op: (attribute variants, opsets, onnxruntime dtypes, low, high)
    "Sigmoid": ([{}], (6, 13), FLOATS3, -8, 8),
    "Tanh": ([{}], (6, 13), FLOATS3, -4, 4),
    "Relu": ([{}], (6, 13, 14), [F32, F64, F16, np.int8, np.int32], -3, 3),
    "LeakyRelu": ([{}, {"alpha": 0.3}], (6, 16), FLOATS3, -3, 3),
    "Elu": ([{}, {"alpha": 0.5}], (6, 22), [F32, F16], -3, 3),
    "Selu": ([{}, {"alpha": 1.5, "gamma": 2.0}], (6, 22), [F32, F16], -3, 3),
    "Celu": ([{}, {"alpha": 2.0}], (12,), [F32], -3, 3),
    "ThresholdedRelu": ([{}, {"alpha": 0.5}], (10, 22), [F32, F16], -3, 3),
    "HardSigmoid": ([{}, {"alpha": 0.3, "beta": 0.4}], (6, 22), [F32, F16], -5, 5),
    "HardSwish": ([{}], (14, 22), [F32, F16], -5, 5),
    "Softplus": ([{}], (1, 22), [F32, F16], -20, 20),
    "Softsign": ([{}], (1, 22), [F32, F16], -5, 5),
    "Mish": ([{}], (18, 22), [F32, F16], -5, 5),
    "Gelu": ([{}, {"approximate": "tanh"}, {"approximate": "none"}], (20,), [F32, F16], -4, 4),
    "Shrink": ([{}, {"bias": 1.5, "lambd": 1.0}], (9,), [F32, F64, F16] + INTS, -4, 4),
}


def _act_cases():
    for op, (attrs, opsets, dts, lo, hi) in ACT.items():
        for dt in dts:
            yield op, dt


@pytest.mark.parametrize("op,dt", list(_act_cases()))
def test_activation_vs_ort(op, dt):
    attrs, opsets, _, lo, hi = ACT[op]
    rng = np.random.default_rng(hash((op, str(dt))) % 2**32)
    for opset in opsets:
        if np.dtype(dt).kind in "iu" and op == "Relu" and opset < 14:
            continue
        if np.dtype(dt) in (np.dtype(F64), np.dtype(F16)) and opset != opsets[-1]:
            continue  # onnxruntime has these types only in the latest version
        if op == "Shrink" and np.dtype(dt) == np.dtype(F64):
            continue  # onnxruntime computes double Shrink in float; float64 is checked with numpy
        for a in attrs:
            for shape in [(), (7,), (3, 5), (2, 3, 4)]:
                ortcheck(op, [("x", rand(rng, shape, dt, lo, hi))], attrs=a, opset=opset)


@pytest.mark.parametrize("dt", [np.int32, np.int64, np.uint8])
def test_shrink_integer_infinite_bias_saturates(dt):
    """An infinite bias shifts integers past every value the type holds; the result saturates
    through int64 rather than being undefined (fuzz_graph found the conversion), and values within
    lambd stay 0."""
    x = np.array([-9, -1, 0, 1, 9] if np.dtype(dt).kind == "i" else [200, 1, 0, 2, 9], dt)
    m = node_model("Shrink", [("x", x)], ["y"], {"lambd": 2.0, "bias": float("inf")}, opset=9)
    y = run_kiln(m, {"x": x})[0]
    assert y.dtype == x.dtype and (y[1:4] == 0).all()
    assert y[4] == np.array(np.iinfo(np.int64).min).astype(dt)


def _np_act(op, a):
    al = a.get("alpha")
    if op == "Sigmoid":
        return lambda x: 1 / (1 + np.exp(-x))
    if op == "Tanh":
        return np.tanh
    if op == "Relu":
        return lambda x: np.maximum(x, 0)
    if op == "LeakyRelu":
        return lambda x: np.where(x >= 0, x, float(np.float32(al or 0.01)) * x)
    if op == "Elu":
        return lambda x: np.where(x >= 0, x, (al or 1.0) * np.expm1(x))
    if op == "Selu":
        g, a = float(np.float32(1.05070102214813232421875)), float(np.float32(1.67326319217681884765625))
        return lambda x: np.where(x > 0, g * x, g * a * np.expm1(x))
    if op == "ThresholdedRelu":
        return lambda x: np.where(x > (al or 1.0), x, 0)
    if op == "HardSigmoid":
        return lambda x: np.clip(float(np.float32(0.2)) * x + 0.5, 0, 1)
    if op == "HardSwish":
        return lambda x: x * np.clip(x / 6 + 0.5, 0, 1)
    if op == "Softplus":
        return lambda x: np.logaddexp(0, x)
    if op == "Softsign":
        return lambda x: x / (1 + np.abs(x))
    if op == "Mish":
        return lambda x: x * np.tanh(np.logaddexp(0, x))
    if op == "Gelu":
        return lambda x: 0.5 * x * (1 + _erf(x / np.sqrt(2)))
    if op == "Celu":
        return lambda x: np.maximum(0, x) + np.minimum(0, np.expm1(x))
    if op == "Shrink":
        return lambda x: np.where(x < -0.5, x, np.where(x > 0.5, x, 0))
    raise KeyError(op)


@pytest.mark.parametrize("op", list(ACT))
def test_activation_float64_and_bfloat16(op):
    _, opsets, _, lo, hi = ACT[op]
    rng = np.random.default_rng(21)
    x = rand(rng, (4, 9), F64, lo, hi)
    m = node_model(op, [("x", x)], ["y"], opset=opsets[-1])
    assert_same(run_kiln(m, {"x": x})[0], _np_act(op, {})(x), rtol=1e-12, atol=1e-12)
    bf16_check(op, _np_act(op, {}), [x.astype(F32)], opset=opsets[-1], rtol=2e-2, atol=2e-2)


def test_relu_int16_int64_numpy():
    rng = np.random.default_rng(2)
    for dt in (np.int16, np.int64):
        x = rand(rng, (5, 6), dt)
        assert_same(run_kiln(node_model("Relu", [("x", x)], ["y"], opset=14), {"x": x})[0], np.maximum(x, 0))


def test_swish():
    rng = np.random.default_rng(8)
    for dt in (F32, F64, F16):
        for a in ({}, {"alpha": 0.7}):
            x = rand(rng, (3, 11), dt, -6, 6)
            ortcheck("Swish", [("x", x)], attrs=a, opset=24)


def test_activation_large_threaded():
    rng = np.random.default_rng(10)
    x = rand(rng, (4, 50000), F32, -5, 5)
    for op in ("Sigmoid", "Tanh", "Relu", "Gelu", "HardSwish"):
        ortcheck(op, [("x", x)], opset=20)


# ---------------------------------------------------------------- PRelu

@pytest.mark.parametrize("dt", [F32, F64, F16, np.int32, np.int64])
def test_prelu(dt):
    rng = np.random.default_rng(12)
    cases = [((2, 3, 4, 5), (3, 1, 1)), ((2, 3, 4, 5), (5,)), ((2, 3, 4, 5), (2, 3, 4, 5)),
             ((3, 4), ()), ((3, 4), (1, 4)), ((6,), (6,)), ((2, 3, 4), (4,))]
    for xs, ss in cases:
        x, s = rand(rng, xs, dt), rand(rng, ss, dt, 0.1, 1.0) if np.dtype(dt).kind == "f" else rand(rng, ss, dt)
        for opset in (9, 16):
            if np.dtype(dt) != np.dtype(F32) and opset < 16:
                continue
            ortcheck("PRelu", [("x", x), ("slope", s)], opset=opset)


def test_prelu_unsigned_and_bf16():
    rng = np.random.default_rng(13)
    x, s = rand(rng, (3, 4), np.uint32), rand(rng, (4,), np.uint32)
    ortcheck("PRelu", [("x", x), ("slope", s)], opset=16)
    x, s = rand(rng, (3, 4), F32), rand(rng, (4,), F32)
    bf16_check("PRelu", lambda a, b: np.where(a < 0, a * b, a), [x, s], opset=16)


def test_prelu_bad_slope():
    x, s = np.ones((3, 4), F32), np.ones((5,), F32)
    with pytest.raises(Exception, match="slope|broadcast"):
        run_kiln(node_model("PRelu", [("x", x), ("s", s)], ["y"], opset=16), {"x": x, "s": s})
    # slope may not grow the output
    x, s = np.ones((4,), F32), np.ones((3, 4), F32)
    with pytest.raises(Exception):
        run_kiln(node_model("PRelu", [("x", x), ("s", s)], ["y"], opset=16), {"x": x, "s": s})


# ---------------------------------------------------------------- Clip

CLIP_TYPES = [F32, F64, F16] + [np.int8, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64, np.int16]


@pytest.mark.parametrize("dt", CLIP_TYPES)
def test_clip_inputs_form(dt):
    rng = np.random.default_rng(14)
    x = rand(rng, (3, 5, 2), dt, -5, 5)
    isf = np.dtype(dt).kind == "f"
    lo = np.array(-1.5 if isf else (2 if np.dtype(dt).kind == "u" else -3), dt)
    hi = np.array(2.25 if isf else 30, dt)
    # onnxruntime: float Clip-11, all its types from 12 (int16/uint16 only from 13)
    opsets = [11, 12, 13] if np.dtype(dt) == np.dtype(F32) else [13]
    if np.dtype(dt) in (np.dtype(np.int16), np.dtype(np.uint16)):
        opsets = []  # onnxruntime has no 16-bit Clip kernel; checked with numpy below
    for o in opsets:
        ortcheck("Clip", [("x", x), ("lo", lo), ("hi", hi)], opset=o)
        ortcheck("Clip", [("x", x), ("lo", lo)], opset=o)
        ortcheck("Clip", [("x", x), ("", None), ("hi", hi)], opset=o)
        ortcheck("Clip", [("x", x)], opset=o)
        ortcheck("Clip", [("x", x), ("lo", hi), ("hi", lo)], opset=o)  # min > max: all become max
    # every version from 11 on accepts it (types widened at 12)
    for o in (11, 12, 13):
        if isf or o >= 12:
            got = run_kiln(node_model("Clip", [("x", x), ("lo", lo), ("hi", hi)], ["y"], opset=o),
                           {"x": x, "lo": lo, "hi": hi})[0]
            assert_same(got, np.clip(x, lo, hi))
            got = run_kiln(node_model("Clip", [("x", x), ("", None), ("hi", hi)], ["y"], opset=o),
                           {"x": x, "hi": hi})[0]
            assert_same(got, np.minimum(x, hi))


def test_clip_attr_form_and_bf16():
    rng = np.random.default_rng(15)
    x = rand(rng, (4, 6), F32, -5, 5)
    ortcheck("Clip", [("x", x)], attrs=dict(min=-1.0, max=2.0), opset=6)
    ortcheck("Clip", [("x", x)], attrs=dict(max=0.5), opset=6)
    ortcheck("Clip", [("x", x)], opset=6)
    for dt in (F64, F16):  # onnxruntime's Clip-6 is float only
        x = rand(rng, (4, 6), dt, -5, 5)
        got = run_kiln(node_model("Clip", [("x", x)], ["y"], attrs=dict(min=-1.0, max=0.5), opset=6), {"x": x})[0]
        assert_same(got, np.clip(x, -1, 0.5))
    x = rand(rng, (4, 6), F32, -5, 5)
    m = bf16_chain_model("Clip", 1, opset=6, attrs=dict(min=-1.0, max=2.0))
    assert_same(run_kiln(m, {"x0": x})[0], np.clip(bf16(x), -1, 2))


def test_clip_bounds_as_initializers_and_nan():
    x = np.array([np.nan, -3, 0.5, 7], F32)
    m = node_model("Clip", [("x", x), ("lo", None), ("hi", None)], ["y"], opset=13,
                   initializers={"lo": np.array(-1, F32), "hi": np.array(1, F32)})
    got = run_kiln(m, {"x": x})[0]
    assert_same(got, np.array([np.nan, -1, 0.5, 1], F32))


def test_clip_bad_bounds():
    x, lo = np.ones((3,), F32), np.ones((2,), F32)
    with pytest.raises(Exception, match="scalar|min"):
        run_kiln(node_model("Clip", [("x", x), ("lo", lo)], ["y"], opset=13), {"x": x, "lo": lo})
    lo64 = np.ones((), F64)
    with pytest.raises(Exception):
        run_kiln(node_model("Clip", [("x", x), ("lo", lo64)], ["y"], opset=13), {"x": x, "lo": lo64})


# ---------------------------------------------------------------- com.microsoft

MS = "com.microsoft"


@pytest.mark.parametrize("dt", [F32, F16])
def test_contrib_gelu_family(dt):
    rng = np.random.default_rng(16)
    for shape in [(5,), (2, 3, 8), (2, 16, 64)]:
        x = rand(rng, shape, dt, -4, 4)
        b = rand(rng, shape[-1:], dt, -1, 1)
        ortcheck("Gelu", [("x", x)], domain=MS)
        ortcheck("BiasGelu", [("x", x), ("b", b)], domain=MS)
        ortcheck("FastGelu", [("x", x)], domain=MS)
        ortcheck("FastGelu", [("x", x), ("b", b)], domain=MS)
        ortcheck("QuickGelu", [("x", x)], domain=MS)
        ortcheck("QuickGelu", [("x", x)], attrs={"alpha": 1.3}, domain=MS)


def test_contrib_float64():
    rng = np.random.default_rng(17)
    x = rand(rng, (2, 3, 8), F64, -4, 4)
    b = rand(rng, (8,), F64)
    ortcheck("QuickGelu", [("x", x)], domain=MS)
    # onnxruntime evaluates double FastGelu with float constants: compare with numpy instead
    gelu = lambda v: 0.5 * v * (1 + _erf(v / np.sqrt(2)))  # noqa: E731
    fast = lambda v: 0.5 * v * (1 + np.tanh(np.sqrt(2 / np.pi) * (v + 0.044715 * v ** 3)))  # noqa: E731
    got = run_kiln(node_model("BiasGelu", [("x", x), ("b", b)], ["y"], domain=MS), {"x": x, "b": b})[0]
    assert_same(got, gelu(x + b), rtol=1e-12, atol=1e-12)
    got = run_kiln(node_model("FastGelu", [("x", x), ("b", b)], ["y"], domain=MS), {"x": x, "b": b})[0]
    assert_same(got, fast(x + b), rtol=1e-12, atol=1e-12)
    got = run_kiln(node_model("FastGelu", [("x", x)], ["y"], domain=MS), {"x": x})[0]
    assert_same(got, fast(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dt", [F32, F16])
def test_bias_add(dt):
    """onnxruntime has BiasAdd on CUDA only: numpy reference."""
    rng = np.random.default_rng(18)
    for shape in [(2, 4, 8), (1, 3, 320), (2, 64, 1024)]:
        x, s = rand(rng, shape, dt), rand(rng, shape, dt)
        b = rand(rng, shape[-1:], dt)
        m = node_model("BiasAdd", [("x", x), ("b", b), ("s", s)], ["y"], domain=MS)
        got = run_kiln(m, {"x": x, "b": b, "s": s})[0]
        want = (x.astype(F32) + b.astype(F32) + s.astype(F32)).astype(dt)
        assert_same(got, want, **tol(dt))


def test_contrib_bad_bias():
    x, b = np.ones((2, 3, 8), F32), np.ones((7,), F32)
    with pytest.raises(Exception):
        run_kiln(node_model("BiasGelu", [("x", x), ("b", b)], ["y"], domain=MS), {"x": x, "b": b})
    with pytest.raises(Exception):
        s = np.ones((2, 3, 8), F32)
        run_kiln(node_model("BiasAdd", [("x", x), ("b", b), ("s", s)], ["y"], domain=MS), {"x": x, "b": b, "s": s})


# ---------------------------------------------------------------- errors

def test_unary_errors():
    xi = np.ones((3,), np.int32)
    for op in ("Sqrt", "Exp", "Sigmoid", "Erf"):
        with pytest.raises(Exception, match="type|int32"):
            run_kiln(node_model(op, [("x", xi)], ["y"], opset=13), {"x": xi})
    xf = np.ones((3,), F32)
    with pytest.raises(Exception, match="approximate"):
        run_kiln(node_model("Gelu", [("x", xf)], ["y"], attrs={"approximate": "fast"}, opset=20), {"x": xf})
    xu = np.ones((3,), np.uint8)
    with pytest.raises(Exception):
        run_kiln(node_model("Neg", [("x", xu)], ["y"], opset=13), {"x": xu})
    with pytest.raises(Exception):
        run_kiln(node_model("Not", [("x", xf)], ["y"], opset=1), {"x": xf})
