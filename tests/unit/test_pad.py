"""Pad (constant / reflect / edge / wrap, negative pads, axes, constant_value; opsets 2, 11, 18, 19)
and CenterCropPad against onnxruntime."""
import numpy as np
import pytest

from tensor_testlib import DTYPES, check_op, data, expect_error

I64 = np.int64


def rng_for(*key):
    return np.random.default_rng(abs(hash(key)) % (2 ** 32))


PADS = [[1, 2, 0, 3, 0, 1], [0, 0, 2, 0, 0, 0], [2, 1, 1, 2, 3, 1], [-1, 0, 1, 0, 2, -2], [0, -2, 0, 1, 0, 0]]


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes(dt, mode):
    rng = rng_for("pad", dt, mode)
    x = data(rng, (3, 4, 5), dt)
    for pads in PADS:
        if mode == "reflect":  # onnxruntime refuses reflections longer than dim - 1
            pads = [min(p, d - 1) for p, d in zip(pads, x.shape * 2)]
        ins = [("x", x), ("p", np.array(pads, I64))]
        if mode == "constant":
            ins.append(("v", data(rng, (), dt)))
        check_op("Pad", ins, {"mode": mode}, opset=19)
        check_op("Pad", ins, {"mode": mode}, inits=("p",), opset=19)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge"])
def test_pad_old_opsets(mode):
    rng = rng_for("pad_old", mode)
    x = data(rng, (3, 5))
    check_op("Pad", [("x", x)], {"mode": mode, "pads": [1, 2, 2, 1], "value": 1.5}, opset=2)
    check_op("Pad", [("x", x), ("p", np.array([0, 2, 1, 3], I64))], {"mode": mode}, opset=11)
    check_op("Pad", [("x", x), ("p", np.array([0, 2, 1, 3], I64))], {"mode": mode}, opset=13)
    xd = data(rng, (2, 4), np.float64)
    check_op("Pad", [("x", xd)], {"mode": mode, "pads": [1, 1, 0, 2], "value": 3.0}, opset=2)


def test_pad_opset1():
    x = data(rng_for("pad1"), (2, 3))
    check_op("Pad", [("x", x)], {"paddings": [1, 0, 0, 2], "value": 2.0}, opset=1,
             want=[np.pad(x, ((1, 0), (0, 2)), constant_values=2.0)])
    check_op("Pad", [("x", x)], {"paddings": [0, 1, 1, 1], "mode": "edge"}, opset=1,
             want=[np.pad(x, ((0, 1), (1, 1)), mode="edge")])


def test_pad_axes_opset18():
    rng = rng_for("pad_axes")
    x = data(rng, (2, 3, 4, 5))
    for axes, pads in (([1, 3], [1, 0, 2, 1]), ([-1], [3, 2]), ([0, -2], [1, 1, 0, 2])):
        for mode in ("constant", "reflect", "edge"):
            ins = [("x", x), ("p", np.array(pads, I64)), ("", None), ("a", np.array(axes, I64))]
            if mode == "constant":
                ins[2] = ("v", np.array([2.5], np.float32)[0])
            check_op("Pad", ins, {"mode": mode}, opset=18)
    check_op("Pad", [("x", x), ("p", np.array([1, 1], I64)), ("", None), ("a", np.array([1], np.int32))], opset=18)


def test_pad_misc():
    rng = rng_for("pad_misc")
    big = data(rng, (8, 200, 300))
    check_op("Pad", [("x", big), ("p", np.array([0, 3, 1, 1, 2, 5], I64))], {"mode": "reflect"}, threads=4)
    check_op("Pad", [("x", data(rng, (0, 3))), ("p", np.array([1, 0, 1, 2], I64))], {"mode": "constant"})
    check_op("Pad", [("x", data(rng, (7,))), ("p", np.array([9, 10], I64))], {"mode": "wrap"}, opset=19)
    # reflections longer than the axis keep bouncing, as numpy's pad does (onnxruntime refuses)
    x = data(rng, (3, 2))
    check_op("Pad", [("x", x), ("p", np.array([5, 1, 4, 3], I64))], {"mode": "reflect"}, opset=19,
             want=[np.pad(x, ((5, 4), (1, 3)), mode="reflect")])
    s = data(rng, (2, 3), object)
    want = np.pad(s, ((1, 0), (0, 2)), constant_values="").astype(object)
    check_op("Pad", [("x", s), ("p", np.array([1, 0, 0, 2], I64))], inits=("x",), opset=19, want=[want])


def test_pad_errors():
    x = np.ones((2, 3), np.float32)
    expect_error("Pad", [("x", x), ("p", np.array([1, 1, 1], I64))], match="pads")
    expect_error("Pad", [("x", x), ("p", np.array([-3, 0, 0, 0], I64))], match="crop")
    expect_error("Pad", [("x", x), ("p", np.array([0, 0, 0, 0], I64))], {"mode": "mirror"}, match="mode")
    expect_error("Pad", [("x", np.ones((0, 3), np.float32)), ("p", np.array([1, 0, 0, 0], I64))],
                 {"mode": "edge"}, match="empty")
    expect_error("Pad", [("x", x), ("p", np.array([0, 0, 0, 0], I64)), ("v", np.array([1], np.int64)[0])],
                 match="constant_value")


# ---------------------------------------------------------------- CenterCropPad

@pytest.mark.parametrize("dt", DTYPES)
def test_center_crop_pad(dt):
    rng = rng_for("ccp", dt)
    x = data(rng, (5, 6, 3), dt)
    for shape, axes in (((3, 8, 3), None), ((4, 9), [0, 1]), ((7, 2), [-2, -3]), ((5,), [2]), ((5, 6, 3), None)):
        attrs = {"axes": axes} if axes is not None else {}
        want = check_op("CenterCropPad", [("x", x), ("s", np.array(shape, I64))], attrs, opset=18)
        # onnxruntime's function body of CenterCropPad does not type-check with int32 shapes
        check_op("CenterCropPad", [("x", x), ("s", np.array(shape, np.int32))], attrs, inits=("s",), opset=18,
                 want=want)


def test_center_crop_pad_errors():
    x = np.ones((4, 4), np.float32)
    expect_error("CenterCropPad", [("x", x), ("s", np.array([2], I64))], opset=18, match="shape")
    expect_error("CenterCropPad", [("x", x), ("s", np.array([2, 2], I64))], {"axes": [0, -2]}, opset=18,
                 match="twice")
