"""Two-input and variadic element-wise kernels with numpy broadcasting (arithmetic, Pow with mixed
types, Mod, Max/Min/Sum/Mean, bitwise ops, logic, comparisons, Where) against onnxruntime, and
numpy where onnxruntime has no kernel (bfloat16, legacy opset-6 broadcasting, strings)."""
import os
import sys

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, node_model, rand, run_kiln  # noqa: E402

F32, F64, F16 = np.float32, np.float64, np.float16
SINTS = [np.int8, np.int16, np.int32, np.int64]
UINTS = [np.uint8, np.uint16, np.uint32, np.uint64]
INTS = SINTS + UINTS
NUMERIC = [F32, F64, F16] + INTS

BCAST = [((3, 4), (3, 4)), ((3, 4), ()), ((), (3, 4)), ((3, 4), (4,)), ((3, 4), (3, 1)),
         ((2, 3, 4), (1, 3, 1)), ((2, 1, 4), (3, 1)), ((5,), (1,)), ((1,), (5,)),
         ((2, 3, 4, 5), (3, 1, 5)), ((4, 1), (1, 5)), ((0, 3), (3,)), ((1, 1), (2, 3, 1))]


def tol(dt):
    dt = np.dtype(dt)
    if dt == F16:
        return dict(rtol=2e-3, atol=2e-3)
    if dt == F32:
        return dict(rtol=1e-5, atol=1e-6)
    return dict(rtol=1e-12, atol=1e-12)


def ortcheck(op, inputs, attrs=None, opset=18, **kw):
    dt = np.asarray(inputs[0][1]).dtype
    t = dict(tol(dt), **kw)
    inputs = [(n, np.asarray(v)) for n, v in inputs]
    m = node_model(op, inputs, ["out"], attrs=attrs, opset=opset)
    return check(m, {n: v for n, v in inputs if n}, rtol=t["rtol"], atol=t["atol"])


def nonzero(x):
    x = x.copy()
    x[x == 0] = 1
    return x


def bf16(x):
    return np.asarray(x, np.float32).astype(ml_dtypes.bfloat16).astype(np.float32)


def bf16_model(op, n_in, attrs=None, opset=18, out_bool=False):
    nodes, names = [], []
    for i in range(n_in):
        nodes.append(helper.make_node("Cast", [f"x{i}"], [f"b{i}"], to=TensorProto.BFLOAT16))
        names.append(f"b{i}")
    if out_bool:
        nodes.append(helper.make_node(op, names, ["y"], **(attrs or {})))
    else:
        nodes.append(helper.make_node(op, names, ["r"], **(attrs or {})))
        nodes.append(helper.make_node("Cast", ["r"], ["y"], to=TensorProto.FLOAT))
    ins = [helper.make_tensor_value_info(f"x{i}", TensorProto.FLOAT, None) for i in range(n_in)]
    out = helper.make_tensor_value_info("y", TensorProto.BOOL if out_bool else TensorProto.FLOAT, None)
    m = helper.make_model(helper.make_graph(nodes, "g", ins, [out]), opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


# ---------------------------------------------------------------- Add Sub Mul Div

ARITH = {"Add": np.add, "Sub": np.subtract, "Mul": np.multiply, "Div": None}


@pytest.mark.parametrize("op", list(ARITH))
@pytest.mark.parametrize("dt", NUMERIC)
def test_arith_vs_ort(op, dt):
    rng = np.random.default_rng(hash((op, str(dt))) % 2**32)
    for sa, sb in BCAST:
        a, b = rand(rng, sa, dt), rand(rng, sb, dt)
        if op == "Div":
            b = nonzero(b) if np.dtype(dt).kind in "iu" else b + np.where(b >= 0, 0.5, -0.5).astype(dt)
        ortcheck(op, [("a", a), ("b", b)], opset=14)
    if dt in (F32, F64):  # the older versions with numpy broadcasting
        a, b = rand(rng, (2, 3), dt), rand(rng, (3,), dt) + dt(3)
        for opset in (7, 13):
            ortcheck(op, [("a", a), ("b", b)], opset=opset)


@pytest.mark.parametrize("dt", SINTS + UINTS)
def test_int_arith_wraps(dt):
    """Overflow wraps like two's complement (numpy does the same)."""
    info = np.iinfo(dt)
    a = np.array([info.max, info.min, info.max, info.min, 7, -5 if info.min else 5], dt)
    b = np.array([1, 1, 2, 3, 3, 2], dt)
    with np.errstate(over="ignore"):
        for op, fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply)):
            got = run_kiln(node_model(op, [("a", a), ("b", b)], ["y"], opset=14), {"a": a, "b": b})[0]
            assert_same(got, fn(a, b))
    if info.min < 0:  # truncating division, INT_MIN / -1 wraps instead of trapping
        a = np.array([7, -7, 7, -7, info.min, info.min], dt)
        b = np.array([2, 2, -2, -2, -1, 1], dt)
        got = run_kiln(node_model("Div", [("a", a), ("b", b)], ["y"], opset=14), {"a": a, "b": b})[0]
        assert_same(got, np.array([3, -3, -3, 3, info.min, info.min], dt))


def test_arith_large_threaded():
    rng = np.random.default_rng(1)
    a = rand(rng, (256, 1024), F32)
    for b in (rand(rng, (256, 1024), F32), rand(rng, (1024,), F32), rand(rng, (256, 1), F32),
              np.array(1.5, F32), rand(rng, (2, 256, 1024), F32)):
        for op in ("Add", "Mul", "Sub", "Div"):
            ortcheck(op, [("a", a), ("b", b)], opset=14)
            ortcheck(op, [("b", b), ("a", a)], opset=14)
    a16, b16 = rand(rng, (128, 768), F16), rand(rng, (768,), F16)
    ortcheck("Add", [("a", a16), ("b", b16)], opset=14)
    ortcheck("Mul", [("a", a16), ("b", a16)], opset=14)
    ai, bi = rand(rng, (300, 700), np.int64), rand(rng, (700,), np.int64)
    ortcheck("Add", [("a", ai), ("b", bi)], opset=14)


def test_arith_bfloat16():
    rng = np.random.default_rng(2)
    for op, fn in (("Add", np.add), ("Sub", np.subtract), ("Mul", np.multiply), ("Div", np.divide),
                   ("Max", np.maximum), ("Min", np.minimum)):
        a, b = rand(rng, (3, 5), F32), rand(rng, (5,), F32, 0.5, 2)
        got = run_kiln(bf16_model(op, 2, opset=14), {"x0": a, "x1": b})[0]
        np.testing.assert_allclose(got, bf16(fn(bf16(a).astype(F64), bf16(b))), rtol=1e-2, atol=1e-2)


def test_legacy_broadcast_opset6():
    """Before opset 7: broadcast=1 with axis lines B up with A's axes; broadcast=0 needs equal shapes."""
    rng = np.random.default_rng(3)
    a = rand(rng, (2, 3, 4, 5), F32)
    for bshape, axis, view in (((3, 4), 1, (1, 3, 4, 1)), ((5,), None, (5,)), ((4, 5), None, (4, 5)),
                               ((2,), 0, (2, 1, 1, 1)), ((), None, ())):
        b = rand(rng, bshape, F32)
        attrs = {"broadcast": 1} if axis is None else {"broadcast": 1, "axis": axis}
        for op, fn in (("Add", np.add), ("Mul", np.multiply), ("Sub", np.subtract), ("Div", np.divide)):
            got = run_kiln(node_model(op, [("a", a), ("b", b)], ["y"], attrs=attrs, opset=6), {"a": a, "b": b})[0]
            assert_same(got, fn(a, b.reshape(view)), rtol=1e-6)
    b = rand(rng, (2, 3, 4, 5), F32)
    got = run_kiln(node_model("Add", [("a", a), ("b", b)], ["y"], opset=6), {"a": a, "b": b})[0]
    assert_same(got, a + b)
    b = rand(rng, (5,), F32)
    with pytest.raises(Exception, match="broadcast"):
        run_kiln(node_model("Add", [("a", a), ("b", b)], ["y"], opset=6), {"a": a, "b": b})
    with pytest.raises(Exception):
        run_kiln(node_model("Add", [("a", a), ("b", b)], ["y"], attrs={"broadcast": 1, "axis": 2}, opset=6),
                 {"a": a, "b": b})
    # logic ops had the same rule (opset 1)
    x, y = rand(rng, (2, 3), np.bool_), rand(rng, (3,), np.bool_)
    got = run_kiln(node_model("And", [("x", x), ("y", y)], ["z"], attrs={"broadcast": 1}, opset=1), {"x": x, "y": y})[0]
    assert_same(got, x & y)


# ---------------------------------------------------------------- Pow

@pytest.mark.parametrize("base", [F32, F64, F16, np.int32, np.int64])
@pytest.mark.parametrize("exp", [F32, F64, F16, np.int32, np.int64])
def test_pow_mixed(base, exp):
    rng = np.random.default_rng(4)
    for sa, sb in [((3, 4), (3, 4)), ((3, 4), ()), ((2, 3, 4), (4,)), ((), (5,))]:
        if np.dtype(base).kind == "f":
            a = rand(rng, sa, base, 0.5, 2.0)
        else:
            a = rand(rng, sa, base, -0.4, 0.4)  # -4..4
        e = rand(rng, sb, exp, 0, 0.3) if np.dtype(exp).kind == "i" else rand(rng, sb, exp, -2, 3)
        if np.dtype(base).kind == "i" and np.dtype(exp).kind == "f":
            a = np.abs(a) + 1
        rt = 3e-3 if F16 in (base, exp) else 2e-6
        ortcheck("Pow", [("a", a), ("e", e)], opset=15, rtol=rt, atol=rt)
    if base == exp and base in (F32, F64):
        for opset in (7, 12, 13):
            ortcheck("Pow", [("a", rand(rng, (3, 4), base, 0.5, 2)), ("e", rand(rng, (4,), base))], opset=opset)


def test_pow_special_exponents():
    rng = np.random.default_rng(5)
    x = rand(rng, (64, 33), F32, -3, 3)
    for e in (2.0, 3.0, 1.0, 0.5, -1.0, 0.0):
        xx = np.abs(x) if e == 0.5 else x
        ortcheck("Pow", [("x", xx), ("e", np.array(e, F32))], opset=15, rtol=2e-6)
    # unsigned exponent (onnxruntime has no kernel): numpy
    a, e = rand(rng, (3, 4), F32, 0.5, 2), rand(rng, (4,), np.uint8, 0, 0.4)
    got = run_kiln(node_model("Pow", [("a", a), ("e", e)], ["y"], opset=15), {"a": a, "e": e})[0]
    assert_same(got, np.power(a.astype(F64), e).astype(F32), rtol=1e-6)
    got = run_kiln(bf16_model("Pow", 2, opset=15), {"x0": a, "x1": e.astype(F32)})[0]
    np.testing.assert_allclose(got, bf16(np.power(bf16(a).astype(F64), e)), rtol=1e-2)


# ---------------------------------------------------------------- Mod

@pytest.mark.parametrize("dt", INTS)
def test_mod_int(dt):
    rng = np.random.default_rng(6)
    for sa, sb in [((4, 6), (4, 6)), ((4, 6), (6,)), ((5,), ()), ((2, 3, 4), (3, 1))]:
        a, b = rand(rng, sa, dt, -6, 6), nonzero(rand(rng, sb, dt, -0.8, 0.8))
        ortcheck("Mod", [("a", a), ("b", b)], opset=13)
        ortcheck("Mod", [("a", a), ("b", b)], attrs={"fmod": 1}, opset=13)
    # sign rules against numpy: fmod=0 follows the divisor, fmod=1 the dividend
    if np.dtype(dt).kind == "i":
        a = np.array([7, -7, 7, -7, 6, -6], dt)
        b = np.array([3, 3, -3, -3, 3, -3], dt)
        for fm, fn in ((0, np.mod), (1, np.fmod)):
            got = run_kiln(node_model("Mod", [("a", a), ("b", b)], ["y"], attrs={"fmod": fm}, opset=10), {"a": a, "b": b})[0]
            assert_same(got, fn(a, b))


@pytest.mark.parametrize("dt", [F32, F64, F16])
def test_mod_float(dt):
    rng = np.random.default_rng(7)
    for sa, sb in [((4, 6), (4, 6)), ((4, 6), (6,)), ((5,), ())]:
        a = rand(rng, sa, dt, -10, 10)
        b = rand(rng, sb, dt, 1, 3) * np.where(rng.random(sb) < 0.5, -1, 1).astype(dt)
        ortcheck("Mod", [("a", a), ("b", b)], attrs={"fmod": 1}, opset=13)
    a, b = rand(rng, (3,), F32), np.ones((3,), F32)
    with pytest.raises(Exception, match="fmod"):
        run_kiln(node_model("Mod", [("a", a), ("b", b)], ["y"], opset=13), {"a": a, "b": b})


def test_integer_division_by_zero_is_an_error():
    a, b = np.array([1, 2, 3], np.int32), np.array([1, 0, 2], np.int32)
    for op in ("Div", "Mod"):
        with pytest.raises(Exception, match="division by zero"):
            run_kiln(node_model(op, [("a", a), ("b", b)], ["y"], opset=13), {"a": a, "b": b})


# ---------------------------------------------------------------- Max Min Sum Mean

VARIADIC = {"Max": NUMERIC, "Min": NUMERIC, "Sum": [F32, F64, F16], "Mean": [F32, F16]}


@pytest.mark.parametrize("op", list(VARIADIC))
def test_variadic(op):
    rng = np.random.default_rng(8)
    ort_types = {"Max": [F32, F64, F16, np.int8, np.int32, np.int64, np.uint8, np.uint32, np.uint64],
                 "Min": [F32, F64, F16, np.int8, np.int32, np.int64, np.uint8, np.uint32, np.uint64]}.get(op, VARIADIC[op])
    shape_sets = [[(3, 4)], [(3, 4), (3, 4)], [(3, 4), (4,)], [(2, 1, 4), (3, 1), (4,)],
                  [(5,), (), (1,), (5,)], [(1,), (2, 3)]]
    for dt in VARIADIC[op]:
        for shapes in shape_sets:
            xs = [(f"x{i}", rand(rng, s, dt)) for i, s in enumerate(shapes)]
            if dt in ort_types:
                ortcheck(op, xs, opset=13)
            else:
                got = run_kiln(node_model(op, xs, ["y"], opset=13), dict(xs))[0]
                fn = np.maximum if op == "Max" else np.minimum
                want = xs[0][1]
                for _, v in xs[1:]:
                    want = fn(want, v)
                assert_same(got, np.broadcast_to(want, got.shape) if len(xs) == 1 else want)
    # older versions: no broadcasting before opset 8
    xs = [(f"x{i}", rand(rng, (2, 3), F32)) for i in range(3)]
    for opset in (6, 8):
        ortcheck(op, xs, opset=opset)


def test_max_min_nan_propagates():
    a = np.array([1, np.nan, 3, np.nan], F32)
    b = np.array([np.nan, 2, 1, np.nan], F32)
    for op in ("Max", "Min"):
        ortcheck(op, [("a", a), ("b", b)], opset=13)


def test_variadic_bfloat16_and_f64_mean():
    rng = np.random.default_rng(9)
    xs = [rand(rng, (3, 4), F32), rand(rng, (4,), F32), rand(rng, (3, 1), F32)]
    got = run_kiln(bf16_model("Mean", 3, opset=13), {f"x{i}": x for i, x in enumerate(xs)})[0]
    np.testing.assert_allclose(got, (bf16(xs[0]) + bf16(xs[1]) + bf16(xs[2])) / 3, rtol=2e-2, atol=2e-2)
    got = run_kiln(bf16_model("Sum", 3, opset=13), {f"x{i}": x for i, x in enumerate(xs)})[0]
    np.testing.assert_allclose(got, bf16(xs[0]) + bf16(xs[1]) + bf16(xs[2]), rtol=2e-2, atol=2e-2)
    d = [rand(rng, (2, 5), F64), rand(rng, (5,), F64)]
    got = run_kiln(node_model("Mean", [("a", d[0]), ("b", d[1])], ["y"], opset=13), {"a": d[0], "b": d[1]})[0]
    assert_same(got, (d[0] + d[1]) / 2)


# ---------------------------------------------------------------- bitwise

@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor"])
def test_bitwise(op):
    rng = np.random.default_rng(10)
    for dt in INTS:
        info = np.iinfo(dt)
        for sa, sb in [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((5,), ())]:
            a = rng.integers(info.min, info.max, size=sa, dtype=dt, endpoint=True)
            b = rng.integers(info.min, info.max, size=sb, dtype=dt, endpoint=True)
            ortcheck(op, [("a", a), ("b", b)], opset=18)


@pytest.mark.parametrize("dt", UINTS)
def test_bitshift(dt):
    rng = np.random.default_rng(11)
    bits = np.dtype(dt).itemsize * 8
    info = np.iinfo(dt)
    a = rng.integers(0, info.max, size=(4, 5), dtype=dt, endpoint=True)
    s = rng.integers(0, bits - 1, size=(4, 5), dtype=dt, endpoint=True)
    for d in ("LEFT", "RIGHT"):
        ortcheck("BitShift", [("a", a), ("s", s)], attrs={"direction": d}, opset=11)
        ortcheck("BitShift", [("a", a), ("s", s[0])], attrs={"direction": d}, opset=11)
        ortcheck("BitShift", [("a", a), ("s", np.array(3, dt))], attrs={"direction": d}, opset=11)
    with pytest.raises(Exception, match="direction"):
        run_kiln(node_model("BitShift", [("a", a), ("s", s)], ["y"], attrs={"direction": "UP"}, opset=11),
                 {"a": a, "s": s})


# ---------------------------------------------------------------- logic and comparisons

@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op):
    rng = np.random.default_rng(12)
    for sa, sb in BCAST:
        a, b = rand(rng, sa, np.bool_), rand(rng, sb, np.bool_)
        ortcheck(op, [("a", a), ("b", b)], opset=7)


CMP = ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"]


@pytest.mark.parametrize("op", CMP)
@pytest.mark.parametrize("dt", NUMERIC + [np.bool_])
def test_compare(op, dt):
    if dt == np.bool_ and op != "Equal":
        return
    rng = np.random.default_rng(13)
    opset = 19 if op == "Equal" else 16
    for sa, sb in BCAST:
        a, b = rand(rng, sa, dt, -1, 1), rand(rng, sb, dt, -1, 1)  # small ranges: many ties
        if np.dtype(dt).kind == "f":
            a, b = np.round(a * 2).astype(dt) / 2, np.round(b * 2).astype(dt) / 2
        ortcheck(op, [("a", a), ("b", b)], opset=opset)
    if dt == F32:
        a = np.array([np.nan, 1, np.inf, -np.inf, 0.0], F32)
        b = np.array([np.nan, np.nan, np.inf, 1, -0.0], F32)
        for o in ({"Equal": (11, 13, 19), "Less": (7, 9, 13), "Greater": (7, 9, 13)}.get(op, (12, 16))):
            ortcheck(op, [("a", a), ("b", b)], opset=o)


def test_compare_bfloat16():
    rng = np.random.default_rng(14)
    a, b = np.round(rand(rng, (4, 5), F32) * 4) / 4, np.round(rand(rng, (5,), F32) * 4) / 4
    for op, fn in (("Equal", np.equal), ("Less", np.less), ("LessOrEqual", np.less_equal),
                   ("Greater", np.greater), ("GreaterOrEqual", np.greater_equal)):
        got = run_kiln(bf16_model(op, 2, opset=19 if op == "Equal" else 16, out_bool=True), {"x0": a, "x1": b})[0]
        assert_same(got, fn(bf16(a), bf16(b)))


def _string_model(op, a, b, out_type, extra_inputs=()):
    """Strings cannot be fed through the Python binding: they come in as initializers."""
    inits = [helper.make_tensor("a", TensorProto.STRING, a.shape, [s.encode() for s in a.ravel()]),
             helper.make_tensor("b", TensorProto.STRING, b.shape, [s.encode() for s in b.ravel()])]
    ins, names = [], ["a", "b"]
    for name, arr in extra_inputs:
        ins.append(helper.make_tensor_value_info(name, helper.np_dtype_to_tensor_dtype(arr.dtype), arr.shape))
        names = [name] + names
    g = helper.make_graph([helper.make_node(op, names, ["y"])], "g", ins,
                          [helper.make_tensor_value_info("y", out_type, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    m.ir_version = 10
    return m


def test_equal_strings():
    a = np.array([["abc", "", "x"], ["hello", "abd", "Abc"]], dtype=object)
    for b in (np.array([["abc", "", "y"], ["hello", "abc", "abc"]], dtype=object), np.array(["abc", "", "x"], dtype=object),
              np.array("abc", dtype=object)):
        m = _string_model("Equal", a, b, TensorProto.BOOL)
        from util import run_ort
        want = run_ort(m, {})[0]
        got = run_kiln(m, {})[0]
        assert_same(got, want)
        assert_same(got, np.equal(a.astype(str), b.astype(str)))


# ---------------------------------------------------------------- Where

WHERE_CASES = [((3, 4), (3, 4), (3, 4)), ((3, 4), (), ()), ((4,), (3, 4), (3, 1)), ((2, 1, 4), (3, 4), (1,)),
               ((), (3, 4), (3, 4)), ((1, 1), (5,), (2, 5)), ((0, 3), (3,), ())]


@pytest.mark.parametrize("dt", NUMERIC + [np.bool_])
def test_where(dt):
    rng = np.random.default_rng(15)
    for sc, sx, sy in WHERE_CASES:
        c, x, y = rand(rng, sc, np.bool_), rand(rng, sx, dt), rand(rng, sy, dt)
        if dt in (np.int16, np.uint16, np.uint64, np.bool_):  # no onnxruntime kernel
            got = run_kiln(node_model("Where", [("c", c), ("x", x), ("y", y)], ["z"], opset=16),
                           {"c": c, "x": x, "y": y})[0]
            assert_same(got, np.where(c, x, y))
            continue
        ortcheck("Where", [("c", c), ("x", x), ("y", y)], opset=16)
        if dt == F32:
            ortcheck("Where", [("c", c), ("x", x), ("y", y)], opset=9)


def test_where_large_and_bf16():
    rng = np.random.default_rng(16)
    c, x, y = rand(rng, (64, 1, 512), np.bool_), rand(rng, (64, 128, 512), F32), np.array(-1e4, F32)
    ortcheck("Where", [("c", c), ("x", x), ("y", y)], opset=16)
    ortcheck("Where", [("c", c), ("y", y), ("x", x)], opset=16)
    # bfloat16 values selected bit-exactly
    x, y = rand(rng, (3, 4), F32), rand(rng, (4,), F32)
    c = rand(rng, (3, 4), np.bool_)
    nodes = [helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
             helper.make_node("Cast", ["y"], ["yb"], to=TensorProto.BFLOAT16),
             helper.make_node("Where", ["c", "xb", "yb"], ["r"]),
             helper.make_node("Cast", ["r"], ["z"], to=TensorProto.FLOAT)]
    ins = [helper.make_tensor_value_info("c", TensorProto.BOOL, None),
           helper.make_tensor_value_info("x", TensorProto.FLOAT, None),
           helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    m = helper.make_model(helper.make_graph(nodes, "g", ins, [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)]),
                          opset_imports=[helper.make_opsetid("", 16)])
    m.ir_version = 10
    assert_same(run_kiln(m, {"c": c, "x": x, "y": y})[0], np.where(c, bf16(x), bf16(y)))


def test_where_strings():
    from util import run_ort
    a = np.array([["a", "bb"], ["ccc", ""]], dtype=object)
    b = np.array(["x", "yy"], dtype=object)
    c = np.array([[True, False], [False, True]])
    m = _string_model("Where", a, b, TensorProto.STRING, extra_inputs=[("c", c)])
    got, want = run_kiln(m, {"c": c})[0], run_ort(m, {"c": c})[0]
    assert got.tolist() == want.tolist() == np.where(c, a, b).tolist()


# ---------------------------------------------------------------- errors

def test_binary_errors():
    a, b = np.ones((3, 4), F32), np.ones((5,), F32)
    for op in ("Add", "Mul", "Equal", "Max"):
        with pytest.raises(Exception, match="broadcast|dim|shape"):
            run_kiln(node_model(op, [("a", a), ("b", b)], ["y"], opset=14), {"a": a, "b": b})
    bi = np.ones((4,), np.int32)
    with pytest.raises(Exception, match="type"):
        run_kiln(node_model("Add", [("a", a), ("b", bi)], ["y"], opset=14), {"a": a, "b": bi})
    with pytest.raises(Exception, match="type"):
        run_kiln(node_model("And", [("a", a), ("b", a)], ["y"], opset=7), {"a": a, "b": a})
    with pytest.raises(Exception, match="type"):
        run_kiln(node_model("BitwiseAnd", [("a", a), ("b", a)], ["y"], opset=18), {"a": a, "b": a})
    c = np.ones((3, 4), F32)
    with pytest.raises(Exception, match="type"):
        run_kiln(node_model("Where", [("c", c), ("a", a), ("b", a)], ["y"], opset=16), {"c": c, "a": a, "b": a})
    bu = bi.astype(np.uint8)
    with pytest.raises(Exception, match="type"):
        run_kiln(node_model("Pow", [("a", bu), ("b", a)], ["y"], opset=15), {"a": bu, "b": a})


def test_symbolic_input_dims():
    """Declared shapes with named and unknown dimensions; the runtime binds them per run."""
    g = helper.make_graph(
        [helper.make_node("Add", ["a", "b"], ["s"]), helper.make_node("Where", ["c", "s", "a"], ["w"]),
         helper.make_node("Cast", ["w"], ["y"], to=TensorProto.FLOAT16)], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["N", None, 4]),
         helper.make_tensor_value_info("b", TensorProto.FLOAT, [4]),
         helper.make_tensor_value_info("c", TensorProto.BOOL, ["N", 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT16, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 10
    rng = np.random.default_rng(20)
    for n, k in ((2, 3), (5, 1)):
        feeds = {"a": rand(rng, (n, k, 4), F32), "b": rand(rng, (4,), F32), "c": rand(rng, (n, 1, 1), np.bool_)}
        check(m, feeds)
