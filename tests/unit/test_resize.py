"""Resize and Upsample against onnxruntime (modes, coordinate transforms, nearest modes, antialias,
axes, keep_aspect_ratio_policy, exclude_outside, extrapolation; scales and sizes; opsets 10-19)
and a numpy float64 reference for the element types onnxruntime lacks."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import check, node_model, rand, run_kiln, run_ort  # noqa: E402

RNG = np.random.default_rng(77)


def resize_model(x, scales=None, sizes=None, roi=None, opset=19, **attrs):
    ins = [("x", x), ("roi", roi) if roi is not None else ("", None),
           ("scales", scales) if scales is not None else ("", None)]
    if sizes is not None:
        ins.append(("sizes", sizes))
    feeds = {k: v for k, v in ins if k}
    return node_model("Resize", ins, ["y"], attrs=attrs, opset=opset), feeds


SCALES = [[1, 1, 2, 2], [1, 1, 0.5, 0.5], [1, 1, 1.5, 0.75], [1, 1, 3, 1], [1, 1, 0.6, 1.7]]
SIZES = [[2, 3, 9, 7], [2, 3, 3, 4], [2, 3, 5, 5], [2, 3, 1, 1]]
CTMS = ["half_pixel", "pytorch_half_pixel", "asymmetric", "tf_half_pixel_for_nn",
        "half_pixel_symmetric"]


# tf_half_pixel_for_nn is a nearest-only transform
MODE_CTM = [(m, c) for m in ["nearest", "linear", "cubic"] for c in CTMS
            if c != "tf_half_pixel_for_nn" or m == "nearest"]


@pytest.mark.parametrize("mode,ctm", MODE_CTM)
@pytest.mark.parametrize("scales", SCALES)
def test_scales_float(mode, ctm, scales):
    x = rand(RNG, (2, 3, 6, 5))
    m, feeds = resize_model(x, scales=np.array(scales, np.float32), mode=mode,
                            coordinate_transformation_mode=ctm, opset=19 if ctm == "half_pixel_symmetric" else 13)
    check(m, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "asymmetric", "pytorch_half_pixel"])
@pytest.mark.parametrize("sizes", SIZES)
def test_sizes_float(mode, ctm, sizes):
    x = rand(RNG, (2, 3, 6, 5))
    m, feeds = resize_model(x, sizes=np.array(sizes, np.int64), mode=mode,
                            coordinate_transformation_mode=ctm, opset=13)
    check(m, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners", "asymmetric"])
def test_nearest_modes(nearest_mode, ctm):
    x = rand(RNG, (1, 2, 4, 4))
    for sizes in ([1, 2, 8, 8], [1, 2, 7, 3], [1, 2, 2, 6]):
        m, feeds = resize_model(x, sizes=np.array(sizes, np.int64), mode="nearest",
                                nearest_mode=nearest_mode, coordinate_transformation_mode=ctm)
        check(m, feeds)


@pytest.mark.parametrize("dt", [np.uint8, np.int8, np.int32, np.float16])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_other_dtypes(dt, mode):
    x = rand(RNG, (1, 3, 5, 7), dt, -10, 10) if dt != np.uint8 else \
        RNG.integers(0, 256, size=(1, 3, 5, 7)).astype(np.uint8)
    for scales in ([1, 1, 2, 2], [1, 1, 0.5, 1.5]):
        m, feeds = resize_model(x, scales=np.array(scales, np.float32), mode=mode)
        if dt == np.float16 or mode == "nearest":
            check(m, feeds, rtol=1e-2, atol=1e-2)
            continue
        # integers: onnxruntime truncates its float result; summation order can move a value
        # that lands within float error of an integer by one
        got, want = run_kiln(m, feeds)[0], run_ort(m, feeds)[0]
        assert got.dtype == want.dtype and got.shape == want.shape
        diff = np.abs(got.astype(np.int64) - want.astype(np.int64))
        assert diff.max() <= 1 and (diff == 0).mean() > 0.9


def test_float16_cubic():
    x = rand(RNG, (1, 2, 6, 6), np.float16)
    m, feeds = resize_model(x, scales=np.array([1, 1, 1.5, 2], np.float32), mode="cubic")
    check(m, feeds, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("scales", [[1, 1, 0.5, 0.5], [1, 1, 0.3, 0.7], [1, 1, 0.25, 2.0], [1, 1, 2, 2]])
def test_antialias_scales(mode, scales):
    x = rand(RNG, (1, 2, 12, 10))
    m, feeds = resize_model(x, scales=np.array(scales, np.float32), mode=mode, antialias=1, opset=18)
    check(m, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
def test_antialias_sizes_uint8(mode):
    x = RNG.integers(0, 256, size=(1, 3, 16, 16)).astype(np.uint8)
    m, feeds = resize_model(x.astype(np.float32), sizes=np.array([1, 3, 5, 7], np.int64), mode=mode,
                            antialias=1, opset=18)
    check(m, feeds, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("a", [-0.5, -0.75])
@pytest.mark.parametrize("scales", [[1, 1, 2, 2], [1, 1, 0.8, 0.8], [1, 1, 0.5, 3]])
def test_cubic_exclude_outside(a, scales):
    x = rand(RNG, (1, 1, 7, 6))
    m, feeds = resize_model(x, scales=np.array(scales, np.float32), mode="cubic", cubic_coeff_a=a,
                            exclude_outside=1)
    check(m, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("extrap", [0.0, 10.0])
def test_tf_crop_and_resize(mode, extrap):
    x = rand(RNG, (1, 2, 6, 6))
    roi = np.array([0, 0, 0.4, -0.2, 1, 1, 1.3, 0.8], np.float32)
    m, feeds = resize_model(x, sizes=np.array([1, 2, 5, 4], np.int64), roi=roi, mode=mode,
                            coordinate_transformation_mode="tf_crop_and_resize",
                            extrapolation_value=extrap)
    check(m, feeds, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("axes", [[2, 3], [3, 2], [-1], [1]])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_axes(axes, mode):
    x = rand(RNG, (2, 3, 4, 5))
    scales = np.array([2.0, 0.5][:len(axes)], np.float32)
    m, feeds = resize_model(x, scales=scales, mode=mode, axes=axes, opset=18)
    check(m, feeds)
    sizes = np.array([7, 3][:len(axes)], np.int64)
    m, feeds = resize_model(x, sizes=sizes, mode=mode, axes=axes, opset=18)
    check(m, feeds)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
@pytest.mark.parametrize("sizes", [[7, 8], [3, 3], [5, 12]])
def test_keep_aspect_ratio(policy, sizes):
    x = rand(RNG, (1, 2, 4, 6))
    m, feeds = resize_model(x, sizes=np.array(sizes, np.int64), mode="nearest", axes=[2, 3],
                            keep_aspect_ratio_policy=policy, opset=18)
    check(m, feeds)


def test_opset11_empty_scales_with_sizes():
    x = rand(RNG, (1, 1, 3, 4))
    roi = np.array([], np.float32)
    scales = np.array([], np.float32)
    sizes = np.array([1, 1, 6, 5], np.int64)
    m = node_model("Resize", [("x", x), ("roi", roi), ("scales", scales), ("sizes", sizes)], ["y"],
                   attrs={"mode": "linear"}, opset=11)
    check(m, {"x": x, "roi": roi, "scales": scales, "sizes": sizes})


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("scales", [[1, 1, 2, 3], [1, 1, 0.5, 0.5], [1, 1, 1.7, 0.6]])
def test_opset10(mode, scales):
    x = rand(RNG, (1, 2, 4, 6))
    sc = np.array(scales, np.float32)
    m = node_model("Resize", [("x", x), ("s", sc)], ["y"], attrs={"mode": mode}, opset=10)
    check(m, {"x": x, "s": sc})


@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_upsample_9(mode):
    x = rand(RNG, (1, 2, 3, 4))
    sc = np.array([1, 1, 2, 2.5], np.float32)
    m = node_model("Upsample", [("x", x), ("s", sc)], ["y"], attrs={"mode": mode}, opset=9)
    check(m, {"x": x, "s": sc})


def test_upsample_7_attr_scales():
    x = rand(RNG, (2, 3, 4))
    m = node_model("Upsample", [("x", x)], ["y"], attrs={"mode": "nearest", "scales": [1.0, 2.0, 3.0]},
                   opset=7)
    check(m, {"x": x})


def test_large_nchw_threaded():
    x = rand(RNG, (2, 8, 67, 45))
    for mode in ("nearest", "linear", "cubic"):
        m, feeds = resize_model(x, sizes=np.array([2, 8, 130, 91], np.int64), mode=mode)
        check(m, feeds, rtol=1e-4, atol=5e-5, threads=2)


def test_3d_and_5d():
    x = rand(RNG, (3, 5, 4))
    m, feeds = resize_model(x, scales=np.array([1, 2, 1.5], np.float32), mode="linear")
    check(m, feeds, rtol=1e-5, atol=1e-6)
    x = rand(RNG, (1, 2, 3, 4, 5))
    m, feeds = resize_model(x, scales=np.array([1, 1, 2, 0.5, 1.4], np.float32), mode="linear")
    check(m, feeds, rtol=1e-5, atol=1e-6)


# ---- numpy float64 reference for what onnxruntime lacks ----

def ref_linear_1d(x, axis, out, ctm="half_pixel"):
    n = x.shape[axis]
    s = out / n
    res = []
    for o in range(out):
        if ctm == "align_corners":
            xo = 0.0 if out == 1 else o * (n - 1) / (out - 1)
        else:
            xo = (o + 0.5) / s - 0.5
        xo = min(max(xo, 0.0), n - 1)
        i0 = int(np.floor(xo))
        i1 = min(i0 + 1, n - 1)
        f = xo - i0
        res.append(np.take(x, i0, axis=axis) * (1 - f) + np.take(x, i1, axis=axis) * f)
    return np.stack(res, axis=axis)


@pytest.mark.parametrize("ctm", ["half_pixel", "align_corners"])
def test_double_linear_vs_numpy(ctm):
    x = rand(RNG, (2, 5, 6), np.float64)
    m, feeds = resize_model(x, sizes=np.array([2, 8, 4], np.int64), mode="linear",
                            coordinate_transformation_mode=ctm)
    got = run_kiln(m, feeds)[0]
    want = ref_linear_1d(ref_linear_1d(x, 1, 8, ctm), 2, 4, ctm)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_int64_and_bool_nearest_vs_numpy():
    for x in (rand(RNG, (2, 3), np.int64, -100, 100), RNG.integers(0, 2, (2, 3)).astype(bool)):
        m, feeds = resize_model(x, scales=np.array([2, 2], np.float32), mode="nearest",
                                coordinate_transformation_mode="asymmetric")
        got = run_kiln(m, feeds)[0]
        want = np.repeat(np.repeat(x, 2, axis=0), 2, axis=1)
        assert got.dtype == x.dtype
        np.testing.assert_array_equal(got, want)


def test_align_corners_fractional_scale_vs_numpy():
    # the ONNX definition uses the fractional output width scale * in_size here
    x = rand(RNG, (1, 1, 2, 4), np.float32)
    m, feeds = resize_model(x, scales=np.array([1, 1, 0.6, 0.6], np.float32), mode="linear",
                            coordinate_transformation_mode="align_corners")
    got = run_kiln(m, feeds)[0]
    assert got.shape == (1, 1, 1, 2)
    w = 4 * np.float64(np.float32(0.6))
    xo = 1 * 3 / (w - 1)
    i0 = int(np.floor(xo))
    want1 = x[0, 0, 0, i0] * (1 - (xo - i0)) + x[0, 0, 0, i0 + 1] * (xo - i0)
    np.testing.assert_allclose(got[0, 0, 0], [x[0, 0, 0, 0], want1], rtol=1e-5)


def test_errors():
    x = rand(RNG, (1, 1, 3, 4))
    m, feeds = resize_model(x, scales=np.array([1, 1, 2], np.float32), mode="linear")
    with pytest.raises(Exception):
        run_kiln(m, feeds)
    m, feeds = resize_model(x, scales=np.array([1, 1, -2, 1], np.float32), mode="linear")
    with pytest.raises(Exception):
        run_kiln(m, feeds)
    m, feeds = resize_model(x, scales=np.array([1, 1, 2, 2], np.float32), mode="bogus")
    with pytest.raises(Exception):
        run_kiln(m, feeds)
