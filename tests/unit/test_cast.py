"""Cast, CastLike and BitCast between all element types, against onnxruntime; types the Python
binding cannot carry (bfloat16 inputs, float8, int4, string inputs) travel inside the model
through chains of Casts or as initializers."""
import os
import sys

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto as TP
from onnx import helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, node_model, rand, run_kiln, run_ort  # noqa: E402

F32, F64, F16 = np.float32, np.float64, np.float16
NP_TYPES = [F32, F64, F16, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32,
            np.uint64, np.bool_]


def code(dt):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dt))


def in_range_values(rng, src, dst, shape):
    """Random values of src that dst can hold (float to int is undefined out of range)."""
    s, d = np.dtype(src), np.dtype(dst)
    n = int(np.prod(shape))
    if s == np.bool_:
        return rand(rng, shape, np.bool_)
    if s.kind == "f":
        if d.kind in "iu":
            lo = 0 if d.kind == "u" else max(np.iinfo(d).min, -60000)
            hi = min(np.iinfo(d).max, 60000)
            v = rng.uniform(lo, hi, size=n)
            v[::3] = rng.uniform(-3 if d.kind == "i" else 0, 3, size=v[::3].shape)  # fractions near 0
        else:
            hi = 60000 if s == F16 or d == F16 else 1e6
            v = rng.uniform(-hi, hi, size=n)
            v[::2] = rng.uniform(-3, 3, size=v[::2].shape)
        v = v.astype(s)
    else:
        info = np.iinfo(s)
        v = rng.integers(info.min, info.max, size=n, dtype=s, endpoint=True)
    if n > 1:
        v[0] = 0
    return v.reshape(shape)


PAIRS = [(a, b) for a in NP_TYPES for b in NP_TYPES if a != b]


@pytest.mark.parametrize("src,dst", PAIRS, ids=[f"{np.dtype(a).name}-{np.dtype(b).name}" for a, b in PAIRS])
def test_cast_pairs_vs_ort(src, dst):
    rng = np.random.default_rng(abs(hash((str(src), str(dst)))) % 2**32)
    for shape in [(7,), (3, 5, 4), (0,), ()]:
        x = in_range_values(rng, src, dst, shape)
        for opset in (13, 19, 21):
            m = node_model("Cast", [("x", x)], [("y", dst)], attrs={"to": code(dst)}, opset=opset)
            check(m, {"x": x}, rtol=1e-3 if F16 in (src, dst) else 1e-6, atol=1e-6)
    x = in_range_values(rng, src, dst, (4, 3))
    m = node_model("Cast", [("x", x)], [("y", dst)], attrs={"to": code(dst)}, opset=6)
    check(m, {"x": x}, rtol=1e-3, atol=1e-6)


def test_cast_same_type_and_large():
    rng = np.random.default_rng(1)
    for dt in NP_TYPES:
        x = rand(rng, (3, 4), dt)
        assert_same(run_kiln(node_model("Cast", [("x", x)], ["y"], attrs={"to": code(dt)}, opset=19), {"x": x})[0], x)
    x = rand(rng, (300, 1001), F32, -70000, 70000)
    for dst in (F16, F64, np.int32, np.int64, np.bool_):
        xx = x if np.dtype(dst).kind != "i" else np.round(x)
        check(node_model("Cast", [("x", xx)], [("y", dst)], attrs={"to": code(dst)}, opset=19), {"x": xx},
              rtol=1e-3, atol=0)
    h = rand(rng, (300, 1001), F16)
    check(node_model("Cast", [("x", h)], [("y", F32)], attrs={"to": TP.FLOAT}, opset=19), {"x": h})


def test_cast_float16_rounding_and_specials():
    """Ties, subnormals, overflow to inf, NaN; double -> float16 rounds once (no double rounding)."""
    f16_ulp_ties = (np.arange(1, 200, dtype=F64) + 0.5) * 2.0 ** -10  # halfway between float16 values
    x = np.concatenate([f16_ulp_ties, f16_ulp_ties * 2.0 ** -14, [65504, 65519.99, 65520, 1e6, -1e6, np.inf,
                                                                  -np.inf, np.nan, 0.0, -0.0, 2.0 ** -25,
                                                                  2.0 ** -25 * 1.0000001, 5.96e-8]])
    # values just off a float16 tie by less than float32 precision: double rounding would get these wrong
    x = np.concatenate([x, [1 + 2.0 ** -11 + 2.0 ** -40, 1 + 2.0 ** -11 - 2.0 ** -40]])
    for src in (F32, F64):
        xs = x.astype(src)
        got = run_kiln(node_model("Cast", [("x", xs)], [("y", F16)], attrs={"to": TP.FLOAT16}, opset=19), {"x": xs})[0]
        assert_same(got.view(np.uint16), xs.astype(F16).view(np.uint16))


def test_cast_float_to_int_truncates():
    x = np.array([2.7, -2.7, 0.5, -0.5, 126.9, -127.9], F32)
    for dst in (np.int8, np.int16, np.int32, np.int64):
        check(node_model("Cast", [("x", x)], [("y", dst)], attrs={"to": code(dst)}, opset=19), {"x": x})
    check(node_model("Cast", [("x", np.abs(x))], [("y", np.uint64)], attrs={"to": TP.UINT64}, opset=19),
          {"x": np.abs(x)})
    big = np.array([2.0 ** 63, 1.5 * 2.0 ** 63, 2.0 ** 64 - 2048], F64)
    got = run_kiln(node_model("Cast", [("x", big)], [("y", np.uint64)], attrs={"to": TP.UINT64}, opset=19), {"x": big})[0]
    assert_same(got, big.astype(np.uint64))


# ---------------------------------------------------------------- chains through types numpy lacks

def chain_model(src, steps, opset=21, sat=None):
    """x (src) -> Cast(steps[0]) -> Cast(steps[1]) ... ; `sat` sets saturate on float8 casts."""
    nodes, prev = [], "x"
    for i, to in enumerate(steps):
        name = "y" if i == len(steps) - 1 else f"t{i}"
        kw = {"to": to}
        if sat is not None and to in F8:
            kw["saturate"] = sat
        nodes.append(helper.make_node("Cast", [prev], [name], **kw))
        prev = name
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", code(src), None)],
                          [helper.make_tensor_value_info("y", steps[-1], None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


F8 = {TP.FLOAT8E4M3FN: ml_dtypes.float8_e4m3fn, TP.FLOAT8E4M3FNUZ: ml_dtypes.float8_e4m3fnuz,
      TP.FLOAT8E5M2: ml_dtypes.float8_e5m2, TP.FLOAT8E5M2FNUZ: ml_dtypes.float8_e5m2fnuz}


def _chain_check(src, steps, x, sat=None, opset=21):
    m = chain_model(src, steps, opset, sat)
    got, want = run_kiln(m, {"x": x})[0], run_ort(m, {"x": x})[0]
    assert_same(got, want, rtol=0, atol=0)
    return got


@pytest.mark.parametrize("f8", list(F8))
def test_float8_round_trips(f8):
    rng = np.random.default_rng(2)
    mx = float(ml_dtypes.finfo(F8[f8]).max)
    x = np.concatenate([rng.uniform(-1.2 * mx, 1.2 * mx, 300), rng.standard_normal(300), rng.standard_normal(100) * 1e-3,
                        [0.0, -0.0, np.inf, -np.inf, np.nan, mx, -mx, mx * 1.04, mx * 1.1, 1e-9]]).astype(F32)
    for sat in (1, 0):
        # without saturation onnxruntime departs from the ONNX table just above the largest
        # value (E4M3FN gives max instead of NaN, E5M2 NaN instead of inf): numpy reference there
        xo = x if sat else x[~((np.abs(x) > mx) & (np.abs(x) < 1.2 * mx))]
        _chain_check(F32, [f8, TP.FLOAT], xo, sat=sat)
        _chain_check(F16, [f8, TP.FLOAT16], xo.astype(F16), sat=sat)
        _chain_check(F64, [f8, TP.DOUBLE], xo.astype(F64), sat=sat)
        got = run_kiln(chain_model(F32, [f8, TP.FLOAT], sat=sat), {"x": x})[0]
        ref = (x.astype(F8[f8]) if not sat else numpy_helper.saturate_cast(x, F8[f8])).astype(F32)
        assert_same(got, ref, rtol=0, atol=0)
    # every code decodes as onnxruntime decodes it: from float16 both ways, and to the integers
    codes = np.arange(256).astype(np.uint8).view(F8[f8]).astype(F32)
    _chain_check(F32, [f8, TP.FLOAT], codes)
    _chain_check(F32, [f8, TP.FLOAT16, TP.FLOAT], codes)
    _chain_check(F32, [f8, TP.BFLOAT16, TP.FLOAT], codes)
    small = np.clip(np.nan_to_num(codes), -100, 100)
    _chain_check(F32, [f8, TP.INT32, TP.FLOAT], small)
    _chain_check(np.int32, [f8, TP.INT32], rng.integers(-100, 100, 50).astype(np.int32))


def test_float8_from_double_rounds_once():
    """A double just above a float8 tie must round up even though float32 would make it a tie."""
    x = np.array([1.0625 + 2.0 ** -40, 1.0625 - 2.0 ** -40, 1.0625, 1.1875], F64)  # e4m3fn ties at 1/16 spacing
    got = run_kiln(chain_model(F64, [TP.FLOAT8E4M3FN, TP.DOUBLE]), {"x": x})[0]
    assert_same(got, np.array([1.125, 1.0, 1.0, 1.25]))


def test_bfloat16_pairs():
    rng = np.random.default_rng(3)
    x = np.concatenate([rng.uniform(-300, 300, 200), [0.5, 1.00390625, 1.01171875, 65504, np.inf, -np.inf, np.nan]])
    for src in (F32, F64, F16):
        xs = x.astype(src)
        got = _chain_check(src, [TP.BFLOAT16, code(src)], xs)
        if src != F16:
            assert_same(got, xs.astype(ml_dtypes.bfloat16).astype(src), rtol=0, atol=0)
    xi = rng.integers(-1000, 1000, 100)
    for dt in (np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16, np.uint32, np.uint64):
        v = np.clip(xi, np.iinfo(dt).min, np.iinfo(dt).max).astype(dt)
        _chain_check(dt, [TP.BFLOAT16, TP.FLOAT], v)
        _chain_check(F32, [TP.BFLOAT16, code(dt)], np.abs(v).astype(F32))
    _chain_check(np.bool_, [TP.BFLOAT16, TP.FLOAT], rng.integers(0, 2, 9).astype(bool))
    _chain_check(F32, [TP.BFLOAT16, TP.BOOL], np.array([0, 1, -0.0, 2, np.nan], F32))


@pytest.mark.parametrize("to", [TP.INT4, TP.UINT4])
def test_int4(to):
    rng = np.random.default_rng(4)
    for n in (1, 2, 7, 1000, 1025):  # odd lengths leave a half-filled last byte
        xi = rng.integers(-20, 20, n).astype(np.int8)
        _chain_check(np.int8, [to, TP.INT8], xi)
        _chain_check(np.int64, [to, TP.INT64], xi.astype(np.int64))
        _chain_check(np.uint8, [to, TP.UINT8], np.abs(xi).astype(np.uint8))
        xf = rng.uniform(-9, 9, n).astype(F32)
        xf[::4] = np.round(xf[::4]) + 0.5  # ties round away from zero
        _chain_check(F32, [to, TP.FLOAT], xf)
        _chain_check(F16, [to, TP.FLOAT16], xf.astype(F16))
        _chain_check(F64, [to, TP.DOUBLE], xf.astype(F64))
        _chain_check(F32, [to, TP.INT4 if to == TP.UINT4 else TP.UINT4, TP.INT32], xf)
    x = np.arange(-8, 16, dtype=np.int32)
    got = run_kiln(chain_model(np.int32, [to, TP.INT32]), {"x": x})[0]
    want = ((x & 15) ^ 8) - 8 if to == TP.INT4 else x & 15
    assert_same(got, want.astype(np.int32))


# ---------------------------------------------------------------- strings

def test_numbers_to_string():
    rng = np.random.default_rng(5)
    cases = [np.array([0.1, 1.0, -2.5, 1e10, 1e-7, np.nan, np.inf, -np.inf, 3.14159265, 123456789.0], F32),
             np.array([0.1, -2.5, 1e300, np.nan, -np.inf, 3.14159265358979], F64),
             np.array([0.1, 1.0, -2.5, 65504, np.nan, -np.inf], F16),
             rand(rng, (3, 4), F32), np.array([True, False]),
             np.array([-5, 7, 2 ** 40, -2 ** 63], np.int64), np.array([0, 255], np.uint8),
             np.array([2 ** 64 - 1, 5], np.uint64), np.array([-128, 127], np.int8), np.array([-7, 9], np.int32)]
    for x in cases:
        m = node_model("Cast", [("x", x)], [("y", object)], attrs={"to": TP.STRING}, opset=19)
        got, want = run_kiln(m, {"x": x})[0], run_ort(m, {"x": x})[0]
        assert got.shape == want.shape and got.tolist() == want.tolist()


def string_model(op, strings, to, opset=19, like=None):
    init = [helper.make_tensor("s", TP.STRING, strings.shape, [s.encode() for s in strings.ravel()])]
    ins = []
    names = ["s"]
    if op == "CastLike":
        ins.append(helper.make_tensor_value_info("like", to, None))
        names.append("like")
        node = helper.make_node(op, names, ["y"])
    else:
        node = helper.make_node(op, names, ["y"], to=to)
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", to, None)], initializer=init)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def test_string_to_numbers():
    floats = np.array([["1.5", "-inf", "NaN", "+INF"], ["1e3", " 2", "-0.25", "inF"], ["3.4028235e38", "1E-5", "7", "-nan"]],
                      dtype=object)
    for to in (TP.FLOAT, TP.DOUBLE, TP.FLOAT16):
        m = string_model("Cast", floats, to)
        assert_same(run_kiln(m, {})[0], run_ort(m, {})[0], rtol=0, atol=0)
    ints = np.array(["15", "-3", " 8", "0", "127", "-128", "42"], dtype=object)
    for to in (TP.INT8, TP.INT16, TP.INT32, TP.INT64, TP.BOOL):
        m = string_model("Cast", ints, to)
        assert_same(run_kiln(m, {})[0], run_ort(m, {})[0])
    uints = np.array(["15", "255", "18446744073709551615", "0"], dtype=object)
    for to in (TP.UINT8, TP.UINT16, TP.UINT32, TP.UINT64):
        m = string_model("Cast", uints, to)
        assert_same(run_kiln(m, {})[0], run_ort(m, {})[0])
    # bfloat16 and string -> string through kiln only (onnxruntime: numpy reference)
    m = string_model("Cast", np.array(["1.5", "-3.203125", "x1"][:2], dtype=object), TP.BFLOAT16)
    assert_same(run_kiln(m, {})[0], np.array([1.5, -3.203125], F32))
    m = string_model("Cast", np.array(["a", "bc"], dtype=object), TP.STRING)
    assert run_kiln(m, {})[0].tolist() == ["a", "bc"]


def test_string_not_a_number_is_an_error():
    m = string_model("Cast", np.array(["1", "abc"], dtype=object), TP.FLOAT)
    with pytest.raises(Exception, match="abc"):
        run_kiln(m, {})


# ---------------------------------------------------------------- CastLike

def test_castlike():
    rng = np.random.default_rng(6)
    for src, dst in [(F32, F16), (F16, F32), (F32, np.int32), (np.int64, F64), (F64, np.uint8), (np.int32, np.bool_),
                     (np.bool_, F32), (F32, F64)]:
        x = in_range_values(rng, src, dst, (3, 4))
        like = rand(rng, (2,), dst)
        for opset in (15, 19, 21):
            check(node_model("CastLike", [("x", x), ("like", like)], ["y"], opset=opset), {"x": x, "like": like},
                  rtol=1e-3, atol=1e-6)
    # saturate=0 through CastLike into float8
    x = np.array([1e6, -1e6, 1.5, np.inf], F32)
    nodes = [helper.make_node("Cast", ["l"], ["lf8"], to=TP.FLOAT8E4M3FN),
             helper.make_node("CastLike", ["x", "lf8"], ["t"], saturate=0),
             helper.make_node("Cast", ["t"], ["y"], to=TP.FLOAT)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, None),
                                       helper.make_tensor_value_info("l", TP.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 10
    feeds = {"x": x, "l": np.ones(1, F32)}
    assert_same(run_kiln(m, feeds)[0], run_ort(m, feeds)[0])
    m = string_model("CastLike", np.array(["2.5", "-1"], dtype=object), TP.FLOAT)
    assert_same(run_kiln(m, {"like": np.zeros(1, F32)})[0], np.array([2.5, -1], F32))


# ---------------------------------------------------------------- old and new versions

def test_cast_opset1_string_to():
    x = np.array([1.7, -2.2, 3.0], F32)
    m = node_model("Cast", [("x", x)], ["y"], attrs={"to": "INT32"}, opset=1)
    assert_same(run_kiln(m, {"x": x})[0], np.array([1, -2, 3], np.int32))
    m = node_model("Cast", [("x", x)], ["y"], attrs={"to": "double"}, opset=5)
    assert_same(run_kiln(m, {"x": x})[0], x.astype(F64))


BITCAST = [(F32, np.int32), (F32, np.uint32), (np.int32, F32), (F64, np.int64), (np.int64, F64), (np.uint64, np.int64),
           (np.int8, np.uint8), (np.uint8, np.bool_), (np.bool_, np.int8), (F16, np.uint16), (np.int16, F16),
           (np.uint16, np.int16)]


@pytest.mark.parametrize("src,dst", BITCAST)
def test_bitcast(src, dst):
    rng = np.random.default_rng(7)
    for shape in [(), (5,), (2, 3, 4)]:
        if np.dtype(dst) == np.bool_:
            x = rng.integers(0, 2, size=shape).astype(src)
        else:
            x = rand(rng, shape, src)
        m = node_model("BitCast", [("x", x)], [("y", dst)], attrs={"to": code(dst)}, opset=26)
        got = run_kiln(m, {"x": np.asarray(x)})[0]
        assert_same(got, np.asarray(x).view(dst), rtol=0, atol=0)


def test_bitcast_bfloat16_and_errors():
    x = np.array([1.0, -2.5, 3.1], F32)
    nodes = [helper.make_node("Cast", ["x"], ["b"], to=TP.BFLOAT16),
             helper.make_node("BitCast", ["b"], ["y"], to=TP.UINT16)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, None)],
                          [helper.make_tensor_value_info("y", TP.UINT16, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 26)])
    m.ir_version = 11
    assert_same(run_kiln(m, {"x": x})[0], x.astype(ml_dtypes.bfloat16).view(np.uint16))
    for to in (TP.INT64, TP.INT16, TP.STRING):
        with pytest.raises(Exception, match="bitcast|width|bits|support"):
            run_kiln(node_model("BitCast", [("x", x)], ["y"], attrs={"to": to}, opset=26), {"x": x})


def test_cast_errors():
    x = np.ones((3,), F32)
    with pytest.raises(Exception, match="'to'"):
        run_kiln(node_model("Cast", [("x", x)], ["y"], opset=19), {"x": x})
    for to in (0, 99, TP.COMPLEX64):
        with pytest.raises(Exception, match="type|support"):
            run_kiln(node_model("Cast", [("x", x)], ["y"], attrs={"to": to}, opset=19), {"x": x})


# ---------------------------------------------------------------- float4e2m1, float8e8m0, int2/uint2

def _ref_chain(src, steps, x, opset=25, **attrs):
    """kiln against the ONNX reference implementation (numpy, ml_dtypes): onnxruntime has no
    float4 kernel and departs from the reference for negative float8e8m0."""
    from onnx.reference import ReferenceEvaluator
    m = chain_model(src, steps, opset)
    for k, v in attrs.items():
        m.graph.node[0].attribute.append(helper.make_attribute(k, v))
    m.ir_version = 11
    got = run_kiln(m, {"x": x})[0]
    want = ReferenceEvaluator(m).run(None, {"x": x})[0]
    assert_same(got, want, rtol=0, atol=0)
    return got


def test_float4e2m1():
    rng = np.random.default_rng(8)
    vals = np.array([0, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, 6, 7, 100, np.inf, -np.inf, np.nan, 1e-9, -0.0, 0.2, 0.3],
                    F32)
    for n in (1, 2, 7, 600, 1025):
        x = np.concatenate([vals, vals * -1, rng.uniform(-8, 8, n).astype(F32)])
        _ref_chain(F32, [TP.FLOAT4E2M1, TP.FLOAT], x)
        _ref_chain(F16, [TP.FLOAT4E2M1, TP.FLOAT16], x.astype(F16))
        _ref_chain(F64, [TP.FLOAT4E2M1, TP.DOUBLE], x.astype(F64))
    # every code decodes to its value
    codes = np.arange(16, dtype=np.uint8).view(ml_dtypes.float4_e2m1fn).astype(F32)
    assert_same(_ref_chain(F32, [TP.FLOAT4E2M1, TP.FLOAT], codes), codes)


@pytest.mark.parametrize("mode", ["up", "down", "nearest"])
@pytest.mark.parametrize("sat", [1, 0])
def test_float8e8m0(mode, sat):
    rng = np.random.default_rng(9)
    x = np.concatenate([2.0 ** rng.uniform(-130, 130, 300), [0.0, 1.0, 1.5, 0.75, 3.0, 2.0 ** 127 * 1.5, np.inf,
                                                                np.nan, 1e-40, 2.0 ** -127]]).astype(F32)
    _ref_chain(F32, [TP.FLOAT8E8M0, TP.FLOAT], x, round_mode=mode, saturate=sat)
    _ref_chain(F16, [TP.FLOAT8E8M0, TP.FLOAT16], np.clip(x, 0, 60000).astype(F16), round_mode=mode, saturate=sat)
    if mode == "up" and sat:  # onnxruntime agrees for non-negative input with the defaults
        pos = x[np.isfinite(x) & (x > 1e-37) & (x < 1e38)]
        _chain_check(F32, [TP.FLOAT8E8M0, TP.FLOAT], pos, opset=24)


@pytest.mark.parametrize("to", [TP.INT2, TP.UINT2])
def test_int2(to):
    rng = np.random.default_rng(10)
    for n in (1, 3, 4, 5, 513, 1030):  # partly filled last bytes
        xi = rng.integers(-6, 6, n).astype(np.int8)
        _chain_check(np.int8, [to, TP.INT8], xi, opset=25)
        _chain_check(np.int32, [to, TP.INT32], xi.astype(np.int32), opset=25)
        xf = rng.uniform(-4, 4, n).astype(F32)
        _chain_check(F32, [to, TP.FLOAT], np.round(xf * 2) / 2, opset=25)  # halves round away from zero
        _chain_check(F16, [to, TP.FLOAT16], xf.astype(F16), opset=25)
    x = np.arange(-4, 8, dtype=np.int32)
    got = run_kiln(chain_model(np.int32, [to, TP.INT32], 25), {"x": x})[0]
    want = ((x & 3) ^ 2) - 2 if to == TP.INT2 else x & 3
    assert_same(got, want.astype(np.int32))


def test_bitcast_subbyte():
    x = np.array([1, -2, 3, -4, 5], np.int8)
    nodes = [helper.make_node("Cast", ["x"], ["a"], to=TP.INT4), helper.make_node("BitCast", ["a"], ["b"], to=TP.UINT4),
             helper.make_node("Cast", ["b"], ["y"], to=TP.UINT8)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.INT8, None)],
                          [helper.make_tensor_value_info("y", TP.UINT8, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 26)])
    m.ir_version = 11
    assert_same(run_kiln(m, {"x": x})[0], (x & 15).astype(np.uint8))
    with pytest.raises(Exception, match="width|bits"):
        nodes[1] = helper.make_node("BitCast", ["a"], ["b"], to=TP.UINT2)
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.INT8, None)],
                              [helper.make_tensor_value_info("y", TP.UINT8, None)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 26)])
        m.ir_version = 11
        run_kiln(m, {"x": x})


def test_round_mode_attribute_checked():
    x = np.ones(3, F32)
    with pytest.raises(Exception, match="round_mode"):
        run_kiln(node_model("Cast", [("x", x)], ["y"], attrs={"to": TP.FLOAT8E8M0, "round_mode": "sideways"}, opset=24),
                 {"x": x})
