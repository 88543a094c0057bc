"""Matrix and data-dependent tensor ops against onnxruntime (or the onnx reference where
onnxruntime has no kernel): Trilu, EyeLike, ReverseSequence, NonZero, Unique, Compress, Col2Im."""
import numpy as np
import pytest

from tensor_testlib import DTYPES, check_op, data, expect_error

I64 = np.int64


def rng_for(*key):
    return np.random.default_rng(abs(hash(key)) % (2 ** 32))


# ---------------------------------------------------------------- Trilu / EyeLike

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("upper", [0, 1])
def test_trilu(dt, upper):
    rng = rng_for("trilu", dt, upper)
    for shape in ((4, 6), (2, 5, 3), (1, 1)):
        x = data(rng, shape, dt)
        check_op("Trilu", [("x", x)], {"upper": upper}, opset=14)
        for k in (-7, -1, 0, 2, 9):
            check_op("Trilu", [("x", x), ("k", np.array(k, I64))], {"upper": upper}, opset=14)


def test_trilu_misc():
    rng = rng_for("trilu_misc")
    x = data(rng, (300, 260))
    check_op("Trilu", [("x", x), ("k", np.array(-3, I64))], {"upper": 0}, threads=4)
    # strings: the cleared triangle holds "" (the onnx reference puts the integer 0 there)
    s = data(rng, (3, 4), object)
    want = np.where(np.triu(np.ones((3, 4), bool)), s, "").astype(object)
    check_op("Trilu", [("x", s)], inits=("x",), opset=14, want=[want])
    expect_error("Trilu", [("x", data(rng, (4,)))], opset=14, match="rank")


@pytest.mark.parametrize("dt", DTYPES)
def test_eyelike(dt):
    rng = rng_for("eyelike", dt)
    for shape in ((4, 4), (3, 5), (5, 2)):
        x = data(rng, shape, dt)
        for k in (0, 1, -2, 7):
            check_op("EyeLike", [("x", x)], {"k": k}, opset=9)
        check_op("EyeLike", [("x", x)], {"dtype": 1}, opset=22)
        check_op("EyeLike", [("x", x)], {"dtype": 9, "k": -1}, opset=22)


def test_eyelike_errors():
    expect_error("EyeLike", [("x", np.ones((2, 3, 4), np.float32))], match="rank 2")


# ---------------------------------------------------------------- ReverseSequence

@pytest.mark.parametrize("dt", DTYPES)
def test_reverse_sequence(dt):
    rng = rng_for("revseq", dt)
    x = data(rng, (5, 4, 3), dt)  # time-major
    check_op("ReverseSequence", [("x", x), ("l", np.array([5, 0, 2, 1], I64))], {"time_axis": 0, "batch_axis": 1},
             opset=10)
    y = data(rng, (3, 6), dt)  # batch-major
    check_op("ReverseSequence", [("x", y), ("l", np.array([6, 3, 1], I64))], {"time_axis": 1, "batch_axis": 0},
             opset=10)


def test_reverse_sequence_errors():
    x = np.ones((4, 2), np.float32)
    expect_error("ReverseSequence", [("x", x), ("l", np.array([5, 1], I64))], opset=10, match="outside")
    expect_error("ReverseSequence", [("x", x), ("l", np.array([1, 1], I64))], {"time_axis": 1, "batch_axis": 1},
                 opset=10, match="batch_axis")


# ---------------------------------------------------------------- NonZero / Compress

@pytest.mark.parametrize("dt", DTYPES)
def test_nonzero(dt):
    rng = rng_for("nonzero", dt)
    for shape in ((7,), (3, 4), (2, 3, 4), (0, 3)):
        x = data(rng, shape, dt)
        if x.size:
            x[tuple(rng.integers(0, s) for s in shape)] = 0  # at least one zero
        check_op("NonZero", [("x", x)], opset=13)
    check_op("NonZero", [("x", np.zeros((3, 2), dt))], opset=9)


def test_nonzero_scalar_and_signed_zero():
    check_op("NonZero", [("x", np.array(2.5, np.float32))], opset=13)
    check_op("NonZero", [("x", np.array([0.0, -0.0, 1.0, np.nan], np.float32))], opset=13)


@pytest.mark.parametrize("dt", DTYPES)
def test_compress(dt):
    rng = rng_for("compress", dt)
    x = data(rng, (4, 5, 3), dt)
    for axis in (0, 1, -1, None):
        n = x.size if axis is None else x.shape[axis]
        for length in (n, max(n - 2, 1)):
            c = rng.integers(0, 2, size=length).astype(bool)
            check_op("Compress", [("x", x), ("c", c)], {} if axis is None else {"axis": axis}, opset=11)
    check_op("Compress", [("x", x), ("c", np.zeros(4, bool))], {"axis": 0}, opset=9)


def test_compress_strings_and_errors():
    rng = rng_for("compress_s")
    check_op("Compress", [("x", data(rng, (3, 2), object)), ("c", np.array([1, 0, 1], bool))], {"axis": 0},
             inits=("x",))
    expect_error("Compress", [("x", data(rng, (3, 2))), ("c", np.array([1, 0, 1], np.int64))], {"axis": 0},
                 match="bool")


# ---------------------------------------------------------------- Unique

@pytest.mark.parametrize("dt", [np.float32, np.float64, np.int64, np.int8])
@pytest.mark.parametrize("sorted_", [0, 1])
def test_unique(dt, sorted_):
    rng = rng_for("unique", dt, sorted_)
    x = rng.integers(-3, 4, size=(6, 4)).astype(dt)
    check_op("Unique", [("x", x)], {"sorted": sorted_}, opset=11, outputs=4)
    check_op("Unique", [("x", x.reshape(-1))], {"sorted": sorted_}, opset=11, outputs=["u", "", "inv", ""])
    rows = rng.integers(0, 2, size=(7, 3)).astype(dt)
    rows[3] = rows[0]
    for axis in (0, 1, -1):
        check_op("Unique", [("x", rows)], {"sorted": sorted_, "axis": axis}, opset=11, outputs=4)
    cube = rng.integers(0, 2, size=(2, 5, 2)).astype(dt)
    check_op("Unique", [("x", cube)], {"sorted": sorted_, "axis": 1}, opset=11, outputs=4)


@pytest.mark.parametrize("dt", [np.float16, np.int32, np.uint8, np.bool_])
def test_unique_other_types(dt):
    x = data(rng_for("unique_o", dt), (9,), dt)
    x[4] = x[1]
    check_op("Unique", [("x", x)], {"sorted": 1}, opset=11, outputs=4)


def test_unique_strings():
    x = data(rng_for("unique_s"), (10,), object)
    check_op("Unique", [("x", x)], {"sorted": 0}, inits=("x",), opset=11, outputs=4)
    check_op("Unique", [("x", x)], {"sorted": 1}, inits=("x",), opset=11, outputs=4)


# ---------------------------------------------------------------- Col2Im

COL2IM = [  # image, block, attrs
    ([5, 5], [2, 2], {}),
    ([6, 7], [3, 2], {"strides": [2, 1]}),
    ([5, 6], [2, 3], {"pads": [1, 0, 1, 2]}),
    ([7, 7], [2, 2], {"dilations": [2, 3]}),
    ([6, 5], [3, 3], {"strides": [2, 2], "pads": [1, 1, 1, 1], "dilations": [1, 2]}),
]


@pytest.mark.parametrize("case", range(len(COL2IM)))
def test_col2im(case):
    image, block, attrs = COL2IM[case]
    rng = rng_for("col2im", case)
    st = attrs.get("strides", [1, 1])
    dl = attrs.get("dilations", [1, 1])
    pd = attrs.get("pads", [0, 0, 0, 0])
    L = 1
    for i in range(2):
        L *= (image[i] + pd[i] + pd[i + 2] - dl[i] * (block[i] - 1) - 1) // st[i] + 1
    x = data(rng, (2, 3 * block[0] * block[1], L))
    check_op("Col2Im", [("x", x), ("i", np.array(image, I64)), ("b", np.array(block, I64))], attrs,
             inits=("i", "b"), opset=18)
    check_op("Col2Im", [("x", x), ("i", np.array(image, I64)), ("b", np.array(block, I64))], attrs, opset=18)


def test_col2im_3d_double_and_errors():
    rng = rng_for("col2im3")
    x = data(rng, (1, 2 * 8, 3 * 3 * 2), np.float64)
    check_op("Col2Im", [("x", x), ("i", np.array([4, 4, 3], I64)), ("b", np.array([2, 2, 2], I64))],
             inits=("i", "b"), opset=18)
    bad = data(rng, (1, 4, 5))
    expect_error("Col2Im", [("x", bad), ("i", np.array([3, 3], I64)), ("b", np.array([2, 2], I64))],
                 inits=("i", "b"), opset=18, match="block positions")


def test_string_movement():
    rng = rng_for("strings")
    s = data(rng, (1, 4, 2, 3), object)
    check_op("DepthToSpace", [("x", s)], {"blocksize": 2, "mode": "CRD"}, inits=("x",), opset=13)
    check_op("SpaceToDepth", [("x", data(rng, (1, 1, 4, 2), object))], {"blocksize": 2}, inits=("x",), opset=13)
    check_op("ReverseSequence", [("x", data(rng, (3, 2), object)), ("l", np.array([2, 3], I64))],
             {"time_axis": 0, "batch_axis": 1}, inits=("x",), opset=10)
    x = data(rng, (3, 5), object)
    want = np.full((4, 3), "", dtype=object)
    want[0:3, 0:3] = x[:, 1:4]
    check_op("CenterCropPad", [("x", x), ("s", np.array([4, 3], I64))], inits=("x",), opset=18, want=[want])
