"""MaxPool, AveragePool, LpPool, the global pools, MaxUnpool and MaxRoiPool against onnxruntime
(onnx's reference evaluator where onnxruntime lacks the type)."""
import os
import sys

import numpy as np
import pytest
from onnx.reference import ReferenceEvaluator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, node_model, rand, run_kiln, run_ort  # noqa: E402

F32, F64, F16 = np.float32, np.float64, np.float16


def tol(dt):
    return dict(rtol=1e-2, atol=1e-2) if dt == F16 else dict(rtol=1e-5, atol=1e-5)


def pool_check(op, x, attrs, opset, outputs=("y",), oracle="ort", threads=2):
    m = node_model(op, [("x", x)], list(outputs), attrs, opset=opset)
    if oracle == "ort":
        return check(m, {"x": x}, threads=threads, **tol(x.dtype))
    got = run_kiln(m, {"x": x}, threads=threads)
    want = ReferenceEvaluator(m).run(None, {"x": x})
    for g, w in zip(got, want):
        assert_same(g, np.asarray(w).astype(g.dtype), **tol(x.dtype))
    return got


WINDOWS = [
    ((1, 3, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 2, 9, 7), {"kernel_shape": [3, 3]}),
    ((1, 2, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 10, 11), {"kernel_shape": [3, 2], "strides": [2, 3], "pads": [1, 0, 2, 1]}),
    ((1, 2, 9, 9), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 2, 10, 10), {"kernel_shape": [3, 3], "strides": [3, 3], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ((1, 2, 9, 9), {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]}),
    ((1, 2, 9, 8), {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER", "strides": [2, 2]}),
    ((1, 2, 9, 9), {"kernel_shape": [3, 3], "auto_pad": "VALID", "strides": [2, 2]}),
    ((1, 3, 20), {"kernel_shape": [4], "strides": [3], "pads": [1, 2]}),
    ((1, 2, 5, 6, 7), {"kernel_shape": [2, 3, 2], "strides": [2, 1, 2], "pads": [0, 1, 1, 1, 0, 1]}),
    ((2, 16, 28, 28), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
]
DILATED = [
    ((1, 2, 10, 10), {"kernel_shape": [3, 3], "dilations": [2, 2]}),
    ((1, 2, 11, 9), {"kernel_shape": [2, 3], "dilations": [3, 2], "strides": [2, 1], "pads": [1, 2, 1, 1]}),
    ((1, 2, 11, 11), {"kernel_shape": [3, 3], "dilations": [2, 2], "strides": [2, 2], "ceil_mode": 1}),
]


@pytest.mark.parametrize("shape,attrs", WINDOWS + DILATED)
@pytest.mark.parametrize("dt", [F32, F64, F16, np.int8, np.uint8])
def test_maxpool(shape, attrs, dt):
    rng = np.random.default_rng(1)
    x = rand(rng, shape, dt, low=-6, high=6)
    pool_check("MaxPool", x, attrs, 12)


@pytest.mark.parametrize("shape,attrs", WINDOWS + DILATED)
@pytest.mark.parametrize("order", [0, 1])
def test_maxpool_indices(shape, attrs, order):
    rng = np.random.default_rng(2)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(F32)  # distinct values: one argmax
    pool_check("MaxPool", x, dict(attrs, storage_order=order), 12, outputs=("y", "i"))


@pytest.mark.parametrize("opset", [1, 8, 10, 11, 12, 22])
def test_maxpool_opsets(opset):
    rng = np.random.default_rng(3)
    x = rand(rng, (1, 3, 9, 9))
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    if opset >= 8:
        x = rng.permutation(243).reshape(1, 3, 9, 9).astype(F32)
        pool_check("MaxPool", x, attrs, opset, outputs=("y", "i"), oracle="ort" if opset < 22 else "ref")
    else:
        pool_check("MaxPool", x, attrs, opset)


def test_maxpool_only_indices():
    x = np.random.default_rng(4).permutation(64).reshape(1, 1, 8, 8).astype(F32)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2]}
    got = run_kiln(node_model("MaxPool", [("x", x)], ["", "i"], attrs, opset=12), {"x": x})
    want = run_ort(node_model("MaxPool", [("x", x)], ["y", "i"], attrs, opset=12), {"x": x})
    assert_same(got[-1], want[-1])


@pytest.mark.parametrize("shape,attrs", WINDOWS)
@pytest.mark.parametrize("cip", [0, 1])
@pytest.mark.parametrize("dt", [F32, F16])
def test_averagepool(shape, attrs, cip, dt):
    rng = np.random.default_rng(5)
    pool_check("AveragePool", rand(rng, shape, dt), dict(attrs, count_include_pad=cip), 19)


@pytest.mark.parametrize("shape,attrs", DILATED)
@pytest.mark.parametrize("cip", [0, 1])
def test_averagepool_dilations(shape, attrs, cip):
    rng = np.random.default_rng(6)
    pool_check("AveragePool", rand(rng, shape), dict(attrs, count_include_pad=cip), 19)


@pytest.mark.parametrize("shape,attrs", WINDOWS[:4] + WINDOWS[9:11])
def test_averagepool_f64(shape, attrs):
    rng = np.random.default_rng(7)
    pool_check("AveragePool", rand(rng, shape, F64), dict(attrs, count_include_pad=1), 19, oracle="ref")


@pytest.mark.parametrize("opset", [1, 7, 10, 11, 19, 22])
def test_averagepool_opsets(opset):
    rng = np.random.default_rng(8)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    if opset >= 7:
        attrs["count_include_pad"] = 1
    x = rand(rng, (1, 2, 8, 8))
    if opset == 1:  # onnxruntime has no AveragePool-1: version 7 without count_include_pad means the same
        got = run_kiln(node_model("AveragePool", [("x", x)], ["y"], attrs, opset=1), {"x": x})[0]
        assert_same(got, run_ort(node_model("AveragePool", [("x", x)], ["y"], attrs, opset=7), {"x": x})[0])
        return
    pool_check("AveragePool", x, attrs, opset, oracle="ort" if opset < 22 else "ref")


@pytest.mark.parametrize("shape,attrs", WINDOWS[:4] + WINDOWS[9:11] + DILATED[:2])
@pytest.mark.parametrize("p", [1, 2, 3])
def test_lppool(shape, attrs, p):
    rng = np.random.default_rng(9)
    pool_check("LpPool", rand(rng, shape), dict(attrs, p=p), 18)


@pytest.mark.parametrize("opset", [2, 11, 18])
def test_lppool_opsets(opset):
    rng = np.random.default_rng(10)
    pool_check("LpPool", rand(rng, (1, 2, 7, 7)), {"kernel_shape": [2, 2], "p": 3}, opset)


def test_lppool_f16_f64():
    rng = np.random.default_rng(11)
    attrs = {"kernel_shape": [2, 2], "strides": [2, 2], "p": 2}
    pool_check("LpPool", rand(rng, (1, 2, 6, 6), F16), attrs, 18)
    pool_check("LpPool", rand(rng, (1, 2, 6, 6), F64), attrs, 18, oracle="ref")


@pytest.mark.parametrize("threads", [1, 3])
def test_pool_threads(threads):
    rng = np.random.default_rng(12)
    x = rand(rng, (2, 5, 17, 19))
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}
    pool_check("MaxPool", x, attrs, 12, threads=threads)
    pool_check("AveragePool", x, attrs, 19, threads=threads)


@pytest.mark.parametrize("op,attrs,msg", [
    ("MaxPool", {}, "kernel_shape"),
    ("MaxPool", {"kernel_shape": [2]}, "kernel_shape has 1"),
    ("MaxPool", {"kernel_shape": [2, 2], "pads": [1, 1]}, "pads"),
    ("AveragePool", {"kernel_shape": [9, 9]}, "larger than the padded input"),
    ("MaxPool", {"kernel_shape": [2, 2], "strides": [0, 1]}, "strides"),
    ("MaxPool", {"kernel_shape": [2, 2], "auto_pad": "BOGUS"}, "auto_pad"),
    ("MaxPool", {"kernel_shape": [2, 2], "storage_order": 3}, "storage_order"),
])
def test_pool_errors(op, attrs, msg):
    x = np.ones((1, 2, 5, 5), F32)
    m = node_model(op, [("x", x)], ["y"], attrs, opset=12 if op == "MaxPool" else 19)
    m.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(Exception, match=msg):
        run_kiln(m, {"x": x})


def test_pool_rank_error():
    x = np.ones((2, 5), F32)
    m = node_model("GlobalAveragePool", [("x", x)], ["y"])
    m.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(Exception, match="rank"):
        run_kiln(m, {"x": x})


# ---------------- global pools ----------------

@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("shape", [(1, 3, 7, 7), (2, 5, 9), (1, 4, 3, 5, 6), (2, 64, 14, 14), (1, 2, 1, 1)])
def test_global_pools(op, shape):
    rng = np.random.default_rng(13)
    x = rand(rng, shape)
    pool_check(op, x, {}, 18)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
@pytest.mark.parametrize("dt", [F16, F64])
def test_global_pools_dtypes(op, dt):
    rng = np.random.default_rng(14)
    x = rand(rng, (2, 3, 5, 6), dt)
    if op == "GlobalLpPool":  # neither onnxruntime nor the reference evaluator has these types
        got = run_kiln(node_model(op, [("x", x)], ["y"], {}, opset=22), {"x": x})[0]
        want = np.sqrt((x.astype(F64) ** 2).sum(axis=(2, 3), keepdims=True)).astype(dt)
        assert_same(got, want, **tol(dt))
        return
    pool_check(op, x, {}, 22, oracle="ort" if dt == F16 else "ref")


@pytest.mark.parametrize("p", [1, 3])
def test_global_lppool_p(p):
    rng = np.random.default_rng(15)
    pool_check("GlobalLpPool", rand(rng, (1, 3, 4, 5)), {"p": p}, 2)


# ---------------- MaxUnpool ----------------

@pytest.mark.parametrize("shape,attrs", [
    ((1, 2, 8, 8), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((2, 3, 9, 7), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 12), {"kernel_shape": [3], "strides": [3]}),
])
def test_maxunpool(shape, attrs):
    rng = np.random.default_rng(16)
    x = rng.permutation(np.prod(shape)).reshape(shape).astype(F32)
    y, i = run_ort(node_model("MaxPool", [("x", x)], ["y", "i"], attrs, opset=12), {"x": x})
    m = node_model("MaxUnpool", [("y", y), ("i", i)], ["z"], attrs, opset=11)
    check(m, {"y": y, "i": i})
    # with an explicit output shape (the pooled input's)
    os_ = np.array(shape, np.int64)
    m = node_model("MaxUnpool", [("y", y), ("i", i), ("s", os_)], ["z"], attrs, opset=11)
    check(m, {"y": y, "i": i, "s": os_})


def test_maxunpool_larger_output_shape():
    """The unpooled block sits at the start of a larger output_shape (onnx's reference; onnxruntime
    instead reuses the flat indices in the larger shape and fails this conformance case)."""
    x = np.array([[[[5, 6], [7, 8]]]], F32)
    i = np.array([[[[5, 7], [13, 15]]]], np.int64)
    s = np.array([1, 1, 5, 6], np.int64)
    m = node_model("MaxUnpool", [("x", x), ("i", i), ("s", s)], ["z"],
                   {"kernel_shape": [2, 2], "strides": [2, 2]}, opset=11)
    got = run_kiln(m, {"x": x, "i": i, "s": s})[0]
    assert_same(got, ReferenceEvaluator(m).run(None, {"x": x, "i": i, "s": s})[0])
    with pytest.raises(Exception, match="smaller than"):
        s = np.array([1, 1, 3, 3], np.int64)
        run_kiln(m, {"x": x, "i": i, "s": s})


def test_maxunpool_bad_index():
    x = np.ones((1, 1, 2, 2), F32)
    i = np.array([0, 1, 2, 99], np.int64).reshape(1, 1, 2, 2)
    m = node_model("MaxUnpool", [("x", x), ("i", i)], ["z"], {"kernel_shape": [2, 2], "strides": [2, 2]}, opset=11)
    with pytest.raises(Exception, match="outside the output"):
        run_kiln(m, {"x": x, "i": i})


# ---------------- MaxRoiPool ----------------

@pytest.mark.parametrize("pooled,scale", [([2, 2], 1.0), ([3, 2], 0.5), ([1, 1], 0.25)])
def test_maxroipool(pooled, scale):
    rng = np.random.default_rng(17)
    x = rand(rng, (2, 3, 12, 10))
    rois = np.array([[0, 1, 1, 6, 7], [1, 0, 0, 9, 11], [0, 3.4, 2.6, 3.6, 2.5], [1, -4, -4, 30, 30],
                     [1, 2, 5, 8, 6]], F32)
    m = node_model("MaxRoiPool", [("x", x), ("r", rois)], ["y"],
                   {"pooled_shape": pooled, "spatial_scale": scale}, opset=1)
    check(m, {"x": x, "r": rois})


def test_maxroipool_bad_batch():
    x = np.ones((1, 1, 4, 4), F32)
    rois = np.array([[3, 0, 0, 2, 2]], F32)
    m = node_model("MaxRoiPool", [("x", x), ("r", rois)], ["y"], {"pooled_shape": [2, 2]}, opset=1)
    with pytest.raises(Exception, match="batch index"):
        run_kiln(m, {"x": x, "r": rois})
