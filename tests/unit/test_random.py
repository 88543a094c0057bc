"""Random generators: shape and dtype against onnxruntime, distribution statistics, and seeded
streams against numpy's RandomState (which the ONNX reference implementation uses)."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import node_model, rand, run_kiln, run_ort  # noqa: E402

RNG = np.random.default_rng(3)
NP_OF = {TensorProto.FLOAT: np.float32, TensorProto.DOUBLE: np.float64, TensorProto.FLOAT16: np.float16}


def same_meta(m, feeds, dtype=None, shape=None):
    """kiln's output, checked for dtype and shape against onnxruntime (or, where onnxruntime has no
    kernel, e.g. float16 generators, against the given dtype and shape)."""
    got = run_kiln(m, feeds)[0]
    if dtype is None:
        want = run_ort(m, feeds)[0]
        dtype, shape = want.dtype, want.shape
    assert got.dtype == dtype and got.shape == tuple(shape)
    return got


@pytest.mark.parametrize("dt", [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16])
@pytest.mark.parametrize("seeded", [False, True])
def test_random_normal_stats(dt, seeded):
    attrs = {"shape": [200, 300], "mean": 1.5, "scale": 2.0, "dtype": dt}
    if seeded:
        attrs["seed"] = 7.0
    m = node_model("RandomNormal", [], ["y"], attrs=attrs, opset=15)
    ort_has = dt != TensorProto.FLOAT16
    y = same_meta(m, {}, *(() if ort_has else (NP_OF[dt], (200, 300)))).astype(np.float64)
    assert abs(y.mean() - 1.5) < 0.05 and abs(y.std() - 2.0) < 0.035  # ~6 standard errors each
    y2 = run_kiln(m, {})[0].astype(np.float64)
    assert (np.array_equal(y, y2)) == seeded  # a seed repeats the stream, no seed does not


@pytest.mark.parametrize("dt", [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16])
@pytest.mark.parametrize("seeded", [False, True])
def test_random_uniform_stats(dt, seeded):
    attrs = {"shape": [100, 500], "low": -3.0, "high": 5.0, "dtype": dt}
    if seeded:
        attrs["seed"] = 11.0
    m = node_model("RandomUniform", [], ["y"], attrs=attrs, opset=15)
    ort_has = dt != TensorProto.FLOAT16
    y = same_meta(m, {}, *(() if ort_has else (NP_OF[dt], (100, 500)))).astype(np.float64)
    assert y.min() >= -3.0 and y.max() <= 5.0
    assert abs(y.mean() - 1.0) < 0.05 and abs(y.var() - 64 / 12) < 0.1


@pytest.mark.parametrize("op", ["RandomNormalLike", "RandomUniformLike"])
@pytest.mark.parametrize("in_dt,attr_dt", [(np.float32, None), (np.float64, None), (np.int32, TensorProto.FLOAT),
                                           (np.float32, TensorProto.DOUBLE)])
def test_like(op, in_dt, attr_dt):
    x = rand(RNG, (40, 50, 3), in_dt)
    attrs = {} if attr_dt is None else {"dtype": attr_dt}
    m = node_model(op, [("x", x)], ["y"], attrs=attrs, opset=15)
    want_dt = np.dtype(in_dt) if attr_dt is None else np.dtype(NP_OF[attr_dt])
    ort_has = want_dt != np.float64 or op == "RandomUniformLike"
    y = same_meta(m, {"x": x}, *(() if ort_has else (want_dt, x.shape))).astype(np.float64)
    if op == "RandomNormalLike":
        assert abs(y.mean()) < 0.08 and abs(y.std() - 1) < 0.055  # ~6 standard errors each
    else:
        assert 0 <= y.min() and y.max() <= 1 and abs(y.mean() - 0.5) < 0.02


def test_like_int_input_without_dtype_fails():
    x = rand(RNG, (4,), np.int64)
    m = node_model("RandomUniformLike", [("x", x)], ["y"], opset=15)
    with pytest.raises(Exception):
        run_kiln(m, {"x": x})


@pytest.mark.parametrize("seed", [0, 5, 123])
def test_seeded_streams_match_numpy(seed):
    m = node_model("RandomUniform", [], ["y"], attrs={"shape": [7, 9], "seed": float(seed),
                                                     "dtype": TensorProto.DOUBLE, "low": -1.0, "high": 3.0})
    got = run_kiln(m, {})[0]
    np.testing.assert_allclose(got, np.random.RandomState(seed).rand(7, 9) * 4.0 - 1.0, rtol=1e-15)
    m = node_model("RandomNormal", [], ["y"], attrs={"shape": [5, 11], "seed": float(seed),
                                                    "dtype": TensorProto.DOUBLE, "mean": 2.0, "scale": 0.5})
    got = run_kiln(m, {})[0]
    np.testing.assert_allclose(got, np.random.RandomState(seed).randn(5, 11) * 0.5 + 2.0, rtol=1e-13)
    x = RNG.uniform(0, 1, size=(6, 8))
    x[0, :3] = [0.0, 1.0, 0.5]
    m = node_model("Bernoulli", [("x", x)], ["y"], attrs={"seed": float(seed)}, opset=15)
    got = run_kiln(m, {"x": x})[0]
    np.testing.assert_array_equal(got, np.random.RandomState(seed).binomial(1, x).astype(np.float64))


@pytest.mark.parametrize("in_dt", [np.float32, np.float64])
@pytest.mark.parametrize("out_dt", [None, TensorProto.FLOAT, TensorProto.INT32, TensorProto.BOOL,
                                    TensorProto.DOUBLE])
@pytest.mark.parametrize("seeded", [False, True])
def test_bernoulli(in_dt, out_dt, seeded):
    p = RNG.uniform(0.05, 0.95, size=(1, 64)).astype(in_dt)
    x = np.repeat(p, 500, axis=0)
    attrs = {} if out_dt is None else {"dtype": out_dt}
    if seeded:
        attrs["seed"] = 2.0
    m = node_model("Bernoulli", [("x", x)], ["y"], attrs=attrs, opset=15)
    y = same_meta(m, {"x": x})
    assert set(np.unique(y.astype(np.float64))) <= {0.0, 1.0}
    # six standard deviations of each column's mean: a real bias fails, chance essentially never does
    p64 = p[0].astype(np.float64)
    tol = 6 * np.sqrt(p64 * (1 - p64) / x.shape[0])
    assert np.all(np.abs(y.astype(np.float64).mean(axis=0) - p64) <= tol)


def test_bernoulli_bad_probability():
    x = np.array([0.2, 1.5], np.float32)
    m = node_model("Bernoulli", [("x", x)], ["y"], opset=15)
    with pytest.raises(Exception):
        run_kiln(m, {"x": x})


@pytest.mark.parametrize("out_dt", [TensorProto.INT32, TensorProto.INT64])
@pytest.mark.parametrize("seeded", [False, True])
@pytest.mark.parametrize("in_dt", [np.float32, np.float64])
def test_multinomial(out_dt, seeded, in_dt):
    logits = RNG.uniform(-2, 2, size=(3, 5)).astype(in_dt)
    attrs = {"sample_size": 20000, "dtype": out_dt}
    if seeded:
        attrs["seed"] = 4.0
    m = node_model("Multinomial", [("x", logits)], ["y"], attrs=attrs, opset=7)
    ort_has = in_dt == np.float32  # onnxruntime has float input only
    want_dt = np.int32 if out_dt == TensorProto.INT32 else np.int64
    y = same_meta(m, {"x": logits}, *(() if ort_has else (np.dtype(want_dt), (3, 20000))))
    probs = np.exp(logits.astype(np.float64))
    probs /= probs.sum(axis=1, keepdims=True)
    for b in range(3):
        freq = np.bincount(y[b], minlength=5) / y.shape[1]
        tol = 6 * np.sqrt(probs[b] * (1 - probs[b]) / y.shape[1])  # six standard errors
        assert np.all(np.abs(freq - probs[b]) <= tol), (freq, probs[b])
