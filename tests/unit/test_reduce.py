"""Reductions, ArgMax/ArgMin, Softmax/LogSoftmax/Hardmax, CumSum/CumProd, TopK and the loss ops,
checked against onnxruntime (numpy where onnxruntime lacks the case)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, kiln, node_model, rand, run_kiln, run_ort  # noqa: E402

F32, F64, F16 = np.float32, np.float64, np.float16
I8, U8, I32, I64 = np.int8, np.uint8, np.int32, np.int64

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


def tol(dt):
    return dict(rtol=1e-2, atol=1e-2) if dt == F16 else dict(rtol=1e-5, atol=1e-5)


def reduce_data(rng, op, shape, dt):
    """Data that keeps every op well defined: positive for logs and roots, small for products."""
    if op == "ReduceProd":
        return rand(rng, shape, dt, low=0.5, high=1.5) if np.dtype(dt).kind == "f" else \
            rand(rng, shape, dt, low=-0.2, high=0.2)
    if op in ("ReduceLogSum", "ReduceL2"):
        return rand(rng, shape, dt, low=0.1, high=2.0)
    if op == "ReduceLogSumExp" and np.dtype(dt).kind in "iu":
        return rand(rng, shape, dt, low=-0.5, high=0.5)
    return rand(rng, shape, dt)


def reduce_model(op, x, axes, opset, keepdims=1, noop=None):
    """axes as attribute before the version that made it an input, as input after."""
    input_since = 13 if op == "ReduceSum" else 18
    attrs = {"keepdims": keepdims}
    if noop is not None:
        attrs["noop_with_empty_axes"] = noop
    inputs, feeds = [("x", x)], {"x": x}
    if opset < input_since:
        if axes is not None:
            attrs["axes"] = list(axes)
    elif axes is not None:
        a = np.array(axes, np.int64)
        inputs.append(("axes", a))
        feeds["axes"] = a
    return node_model(op, inputs, ["y"], attrs, opset=opset), feeds


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("opset", [11, 13, 18])
def test_reduce_float_axes(op, opset):
    rng = np.random.default_rng(1)
    cases = [((3, 4, 5), [1]), ((3, 4, 5), [-1]), ((3, 4, 5), [0]), ((2, 3, 4, 5), [0, 2]),
             ((2, 3, 4, 5), [1, 3]), ((2, 3, 4, 5), [1, 2]), ((3, 4, 5), None), ((6,), [0]),
             ((2, 1, 3), [1]), ((2, 3, 4, 5), [3, 0, 1])]
    for shape, axes in cases:
        for keep in (1, 0):
            x = reduce_data(rng, op, shape, F32)
            m, feeds = reduce_model(op, x, axes, opset, keep)
            check(m, feeds, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_dtypes(op):
    rng = np.random.default_rng(2)
    dts = [F32, F64, F16, I32, I64]
    if op in ("ReduceMax", "ReduceMin"):
        dts += [I8, U8]
    for dt in dts:
        for shape, axes in [((4, 6, 5), [1]), ((4, 6, 5), [2]), ((4, 6, 5), [0, 2]), ((7,), None)]:
            x = reduce_data(rng, op, shape, dt)
            m, feeds = reduce_model(op, x, axes, 18)
            check(m, feeds, **tol(dt))


def test_reduce_bool_max_min():
    rng = np.random.default_rng(3)
    for op in ("ReduceMax", "ReduceMin"):
        for axes in ([1], [0, 2], None):
            x = rand(rng, (3, 4, 5), np.bool_)
            m, feeds = reduce_model(op, x, axes, 20)
            check(m, feeds)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_large_threaded(op):
    """Rows long enough for the vector paths and several threads; the middle axis path too."""
    rng = np.random.default_rng(4)
    # the last two: few long rows, which are cut into chunks reduced in parallel
    for shape, axes in [((64, 1037), [1]), ((3, 300, 130), [1]), ((5000, 7), [0]),
                        ((2, 70001), [1]), ((150000,), None)]:
        x = reduce_data(rng, op, shape, F32)
        if op == "ReduceProd":
            x = rand(rng, shape, F32, low=0.999, high=1.001)
        m, feeds = reduce_model(op, x, axes, 18)
        check(m, feeds, rtol=1e-3 if op == "ReduceProd" else 1e-4, atol=1e-4)
    for dt in (I32, I64, F64):
        x = reduce_data(rng, op, (3, 70000), dt)
        if op == "ReduceProd":
            x = rng.integers(-1, 2, (3, 70000)).astype(dt)
        m, feeds = reduce_model(op, x, [1], 18)
        check(m, feeds, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_noop_and_empty_axes(op):
    rng = np.random.default_rng(5)
    x = reduce_data(rng, op, (3, 4), F32)
    # empty axes input, noop=1: elementwise (onnxruntime applies the per-element part)
    m, feeds = reduce_model(op, x, [], 18, noop=1)
    check(m, feeds)
    # empty axes, noop=0: everything
    m, feeds = reduce_model(op, x, [], 18, noop=0)
    check(m, feeds)
    # axes input left out entirely
    m = node_model(op, [("x", x)], ["y"], {"keepdims": 0}, opset=18)
    check(m, {"x": x})


def test_reduce_empty_set():
    x = np.zeros((2, 0, 3), F32)
    want = {"ReduceSum": 0.0, "ReduceMean": np.nan, "ReduceMax": -np.inf, "ReduceMin": np.inf,
            "ReduceProd": 1.0, "ReduceL1": 0.0, "ReduceL2": 0.0, "ReduceLogSum": -np.inf,
            "ReduceLogSumExp": -np.inf, "ReduceSumSquare": 0.0}
    for op, v in want.items():
        m, feeds = reduce_model(op, x, [1], 18)
        (y,) = run_kiln(m, feeds)
        assert y.shape == (2, 1, 3)
        np.testing.assert_array_equal(y, np.full((2, 1, 3), v, F32))
    xi = np.zeros((0, 3), I32)
    for op, v in [("ReduceMax", np.iinfo(I32).min), ("ReduceMin", np.iinfo(I32).max),
                  ("ReduceSum", 0), ("ReduceProd", 1)]:
        m, feeds = reduce_model(op, xi, [0], 18, keepdims=0)
        (y,) = run_kiln(m, feeds)
        np.testing.assert_array_equal(y, np.full((3,), v, I32))


def test_reduce_int_semantics():
    """Integer mean truncates, like onnxruntime; sums wrap."""
    rng = np.random.default_rng(6)
    x = rng.integers(-1000, 1000, (5, 7)).astype(I32)
    for op in ("ReduceMean", "ReduceSum", "ReduceL1", "ReduceSumSquare"):
        m, feeds = reduce_model(op, x, [1], 18)
        check(m, feeds)
    big = np.array([[2**62, 2**62, 5]], I64)
    m, feeds = reduce_model("ReduceMax", big, [1], 18)
    check(m, feeds)


def test_reduce_nan_propagates():
    x = np.array([[1.0, np.nan, 3.0], [4.0, 5.0, 6.0]], F32)
    for op in ("ReduceMax", "ReduceMin", "ReduceSum"):
        m, feeds = reduce_model(op, x, [1], 18)
        (y,) = run_kiln(m, feeds)
        assert np.isnan(y[0, 0]) and not np.isnan(y[1, 0])


def test_reduce_errors():
    x = np.ones((2, 3), F32)
    for axes in ([2], [-3], [0, 0]):
        m, feeds = reduce_model("ReduceSum", x, axes, 13)
        with pytest.raises(kiln.KilnError):
            run_kiln(m, feeds)
    m = node_model("ReduceMean", [("x", x)], ["y"], {"axes": [5]}, opset=13)
    with pytest.raises(kiln.KilnError):
        run_kiln(m, {"x": x})


# ---- ArgMax / ArgMin ----

@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg(op):
    rng = np.random.default_rng(7)
    for dt in (F32, F64, F16, I32, I64, I8, U8):
        for shape, axis in [((4, 5, 6), 0), ((4, 5, 6), 1), ((4, 5, 6), -1), ((9,), 0),
                            ((3, 300, 130), 1)]:
            for keep in (1, 0):
                for last in (0, 1):
                    # few distinct values -> many ties, so select_last_index matters
                    x = rng.integers(-3, 4, shape).astype(dt)
                    m = node_model(op, [("x", x)], ["y"],
                                   {"axis": axis, "keepdims": keep, "select_last_index": last},
                                   opset=13)
                    check(m, {"x": x})
    x = rand(rng, (3, 4), F32)
    check(node_model(op, [("x", x)], ["y"], {}, opset=11), {"x": x})
    with pytest.raises(kiln.KilnError):
        run_kiln(node_model(op, [("x", x)], ["y"], {"axis": 2}, opset=13), {"x": x})


# ---- Softmax family ----

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
def test_softmax_family(op):
    rng = np.random.default_rng(8)
    dts = [F32, F16] + ([F64] if op != "Hardmax" else [])
    for dt in dts:
        for opset, axes in [(11, [None, 0, 1, 2, -1]), (13, [None, 0, 1, 2, -1, -3])]:
            for axis in axes:
                for shape in [(3, 4, 5), (2, 7, 33)]:
                    x = rand(rng, shape, dt, low=-5, high=5)
                    attrs = {} if axis is None else {"axis": axis}
                    m = node_model(op, [("x", x)], ["y"], attrs, opset=opset)
                    check(m, {"x": x}, **tol(dt))


def test_hardmax_double_numpy():
    rng = np.random.default_rng(9)
    x = rand(rng, (4, 6, 5), F64)
    m = node_model("Hardmax", [("x", x)], ["y"], {"axis": 1}, opset=13)
    (y,) = run_kiln(m, {"x": x})
    want = np.zeros_like(x)
    idx = np.argmax(x, axis=1)
    np.put_along_axis(want, idx[:, None, :], 1.0, axis=1)
    assert_same(y, want)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_long_rows_and_masks(op):
    """Transformer-like rows: long, threaded, vector tails, -inf masks, large magnitudes."""
    rng = np.random.default_rng(10)
    for shape in [(2, 4, 128, 128), (3, 1001), (5, 9)]:
        x = rand(rng, shape, F32, low=-30, high=30)
        x.reshape(-1, shape[-1])[:, ::3] = -np.inf
        m = node_model(op, [("x", x)], ["y"], {"axis": -1}, opset=13)
        check(m, {"x": x}, rtol=1e-5, atol=1e-6)
    x = rand(rng, (64, 200), F32, low=-100, high=100)
    check(node_model(op, [("x", x)], ["y"], {}, opset=13), {"x": x}, rtol=1e-5, atol=1e-6)


# ---- CumSum / CumProd ----

@pytest.mark.parametrize("op,opset", [("CumSum", 11), ("CumSum", 14), ("CumProd", 26)])
def test_cumulative(op, opset):
    rng = np.random.default_rng(11)
    dts = [F32, F64, I32, I64] + ([F16] if opset >= 14 else [])
    for dt in dts:
        for shape, axis in [((5,), 0), ((3, 4, 5), 0), ((3, 4, 5), 1), ((3, 4, 5), -1),
                            ((2, 1500), 1)]:
            for excl in (0, 1):
                for rev in (0, 1):
                    if op == "CumProd":
                        x = rand(rng, shape, dt, low=0.9, high=1.1) if np.dtype(dt).kind == "f" \
                            else rand(rng, shape, dt, low=-0.2, high=0.2)
                    else:
                        x = rand(rng, shape, dt)
                    for adt in (I32, I64):
                        # the axis as a constant (a 0-d tensor)
                        a = np.array(axis, adt)
                        m = node_model(op, [("x", x), ("axis", a)], ["y"],
                                       {"exclusive": excl, "reverse": rev}, opset=opset,
                                       initializers={"axis": a})
                        t = tol(dt) if dt != F32 else dict(rtol=1e-4, atol=1e-4)
                        check(m, {"x": x}, **t)


def test_cumsum_errors():
    x = np.ones((2, 3), F32)
    for a in (np.array(2, I64), np.array([0, 1], I64)):
        m = node_model("CumSum", [("x", x), ("axis", a)], ["y"], opset=14,
                       initializers={"axis": a})
        with pytest.raises(kiln.KilnError):
            run_kiln(m, {"x": x})
    # axis fed at run time: 0-d (checked against onnxruntime) and a 1-element 1-D tensor
    a = np.array(-1, I32)
    m = node_model("CumSum", [("x", x), ("axis", a)], ["y"], {"reverse": 1}, opset=14)
    check(m, {"x": x, "axis": a})
    a = np.array([1], I64)
    m = node_model("CumSum", [("x", x), ("axis", a)], ["y"], opset=14)
    assert_same(run_kiln(m, {"x": x, "axis": a})[0], np.cumsum(x, axis=1))


# ---- TopK ----

def topk_model(x, k, opset, **attrs):
    if opset < 10:
        return node_model("TopK", [("x", x)], ["v", "i"], dict(attrs, k=k), opset=opset), {"x": x}
    kt = np.array([k], I64)
    return (node_model("TopK", [("x", x), ("k", kt)], ["v", "i"], attrs, opset=opset),
            {"x": x, "k": kt})


def test_topk():
    rng = np.random.default_rng(12)
    for dt in (F32, F64, F16, I32, I64, I8, U8):
        for shape, axis in [((4, 9), -1), ((4, 9), 0), ((3, 7, 5), 1), ((2, 1000), 1)]:
            n = shape[axis]
            for k in sorted({0, 1, 3, n}):
                for largest in (1, 0):
                    # narrow value range: plenty of ties, which must go to the lower index
                    x = rng.integers(-4, 5, shape).astype(dt) if dt != U8 else \
                        rng.integers(0, 9, shape).astype(dt)
                    m, feeds = topk_model(x, k, 11, axis=axis, largest=largest, sorted=1)
                    check(m, feeds)
    x = rand(rng, (3, 8), F32)
    for opset in (1, 10, 24):
        m, feeds = topk_model(x, 4, opset)
        check(m, feeds)


def test_topk_unsorted_is_a_set():
    rng = np.random.default_rng(13)
    x = rand(rng, (5, 40), F32)
    m, feeds = topk_model(x, 6, 11, sorted=0)
    v, i = run_kiln(m, feeds)
    wv, wi = run_ort(m, feeds)
    assert_same(np.sort(v, axis=1), np.sort(wv, axis=1))
    assert_same(np.sort(i, axis=1), np.sort(wi, axis=1))


def test_topk_errors():
    x = np.ones((2, 3), F32)
    for k in (4, -1):
        m, feeds = topk_model(x, k, 11)
        with pytest.raises(kiln.KilnError):
            run_kiln(m, feeds)


# ---- losses ----

def loss_case(rng, dt, shape, with_w, ii, tdt=I64):
    x = rand(rng, shape, dt)
    c = shape[1]
    t = rng.integers(0, c, (shape[0],) + shape[2:]).astype(tdt)
    if ii is not None:
        t.flat[::3] = ii
    w = rand(rng, (c,), dt, low=0.2, high=1.5) if with_w else None
    return x, t, w


@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
def test_losses(op):
    rng = np.random.default_rng(14)
    for dt in (F32, F64, F16):
        for shape in [(4, 5), (3, 5, 6), (2, 4, 3, 2)]:
            for red in ("none", "sum", "mean"):
                for with_w in (False, True):
                    for ii in (None, 1, -1):
                        x, t, w = loss_case(rng, dt, shape, with_w, ii)
                        inputs = [("x", x), ("t", t)] + ([("w", w)] if with_w else [])
                        feeds = {"x": x, "t": t}
                        if with_w:
                            feeds["w"] = w
                        attrs = {"reduction": red}
                        if ii is not None:
                            attrs["ignore_index"] = ii
                        outs = ["y", "lp"] if op == "SoftmaxCrossEntropyLoss" else ["y"]
                        m = node_model(op, inputs, outs, attrs, opset=13)
                        check(m, feeds, **(tol(dt) if dt == F16 else dict(rtol=1e-5, atol=1e-5)))


def test_loss_int32_target_and_errors():
    rng = np.random.default_rng(15)
    x, t, _ = loss_case(rng, F32, (4, 5), False, None, I32)
    m = node_model("SoftmaxCrossEntropyLoss", [("x", x), ("t", t)], ["y"], opset=13)
    check(m, {"x": x, "t": t})
    t[0] = 7  # out of range, not ignored
    m = node_model("NegativeLogLikelihoodLoss", [("x", x), ("t", t)], ["y"], opset=13)
    with pytest.raises(kiln.KilnError):
        run_kiln(m, {"x": x, "t": t})
    bad = np.zeros((4, 2), I64)
    m = node_model("NegativeLogLikelihoodLoss", [("x", x), ("t", bad)], ["y"], opset=13)
    with pytest.raises(kiln.KilnError):
        run_kiln(m, {"x": x, "t": bad})


# ---- bfloat16 (numpy has no bfloat16: cast in and out inside the model) ----

def to_bf16_values(x):
    """float32 values rounded to bfloat16 (nearest even), as float64."""
    u = np.asarray(x, F32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return u.view(F32).astype(F64)


def bf16_model(op, x, attrs, opset, extra_inputs=(), domain=""):
    """x (float32) -> Cast(bfloat16) -> op -> Cast(float32); extra_inputs are constant
    initializers given to op as they are."""
    from onnx import TensorProto, helper, numpy_helper
    nodes = [helper.make_node("Cast", ["x"], ["xb"], to=TensorProto.BFLOAT16),
             helper.make_node(op, ["xb"] + [n for n, _ in extra_inputs], ["yb"], domain=domain or None,
                              **attrs),
             helper.make_node("Cast", ["yb"], ["y"], to=TensorProto.FLOAT)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(v, n) for n, v in extra_inputs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def test_bfloat16_via_cast():
    rng = np.random.default_rng(16)
    x = rand(rng, (3, 5, 8), F32)
    xb = to_bf16_values(x)
    cases = [
        ("ReduceSum", {"keepdims": 0}, 18, [("axes", np.array([1], I64))], xb.sum(axis=1)),
        ("ReduceMax", {"keepdims": 1}, 18, [("axes", np.array([2], I64))], xb.max(axis=2, keepdims=True)),
        ("Softmax", {"axis": 1}, 13, [], np.exp(xb) / np.exp(xb).sum(axis=1, keepdims=True)),
        ("CumSum", {}, 14, [("axis", np.array(2, I64))], np.cumsum(xb, axis=2)),
    ]
    for op, attrs, opset, extra, want in cases:
        (y,) = run_kiln(bf16_model(op, x, attrs, opset, extra), {"x": x})
        np.testing.assert_allclose(y, want, rtol=2e-2, atol=2e-2, err_msg=op)
