"""The small-CNN fast paths (issue 8, SqueezeNet at one thread) against onnxruntime on fresh random
data: float32 MaxPool with strides 1 and 2 reading its windows straight from the input (interior
outputs in 16-lane vectors, border outputs one by one), and the direct convolution's one-thread
order (each output row or 32-lane chunk across all channel panels), on both of its layouts
(flat maps and rows), with odd channel counts, batch > 1, pads, strides and fused epilogues."""
import functools
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import assert_same, check, node_model, rand, run_kiln, run_ort  # noqa: E402

# The direct kernels, held to direct sums' tolerances: SqueezeNet's 16 -> 64 expand on 55x55 would
# otherwise go to the Winograd path (test_conv_winograd.py).
check = functools.partial(check, winograd=False)
run_kiln = functools.partial(run_kiln, winograd=False)

MS = "com.microsoft"

# ---- MaxPool, strides 1 and 2 ----

POOL_CASES = [
    # SqueezeNet's three pools (ceil_mode, no pads), odd channels and batch > 1
    ((2, 7, 111, 111), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((3, 5, 55, 55), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 9, 27, 27), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    # ceil_mode whose last window runs past the row and the map
    ((2, 3, 28, 30), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    # pads: border outputs one by one, interior ones in vectors; row tails of 1, 15, 16, 17 lanes
    ((1, 3, 34, 34), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 3, 31, 33), {"kernel_shape": [2, 2], "strides": [2, 2]}),
    ((1, 2, 20, 65), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 2, 1, 0]}),
    ((1, 2, 9, 35), {"kernel_shape": [5, 4], "strides": [1, 2], "pads": [2, 1, 2, 2]}),
    # stride 1
    ((2, 3, 19, 37), {"kernel_shape": [3, 3], "strides": [1, 1], "pads": [1, 1, 1, 1]}),
    ((1, 4, 8, 17), {"kernel_shape": [2, 3], "strides": [2, 1]}),
    ((1, 2, 5, 16), {"kernel_shape": [1, 1]}),
    # 1-D and 3-D
    ((3, 2, 70), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),
    ((1, 3, 5, 9, 40), {"kernel_shape": [2, 3, 3], "strides": [1, 2, 2], "pads": [0, 1, 1, 1, 1, 1]}),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xs,attrs", POOL_CASES)
def test_maxpool_windows(xs, attrs, threads):
    x = rand(np.random.default_rng(801), xs)
    check(node_model("MaxPool", [("x", x)], ["y"], attrs), {"x": x}, rtol=0, atol=0,
          threads=threads)


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
def test_maxpool_windows_nan_same_as_general(xs, attrs):
    """NaN and signed zeros: the vector path keeps the general loop's rule (a window whose first
    tap is NaN gives NaN, else the largest number), which Indices being asked for selects."""
    rng = np.random.default_rng(802)
    x = rand(rng, xs)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 6), replace=False)] = np.nan
    flat[rng.choice(flat.size, size=max(1, flat.size // 8), replace=False)] = -0.0
    flat[rng.choice(flat.size, size=max(1, flat.size // 8), replace=False)] = 0.0
    fast = run_kiln(node_model("MaxPool", [("x", x)], ["y"], attrs), {"x": x})[0]
    general = run_kiln(node_model("MaxPool", [("x", x)], ["y", ("i", np.int64)], attrs), {"x": x})[0]
    assert np.isnan(fast).any() and not np.isnan(fast).all()
    assert np.array_equal(fast.view(np.uint32), general.view(np.uint32))


def test_maxpool_missing_kernel_shape_named():
    x = rand(np.random.default_rng(803), (1, 2, 8, 8))
    with pytest.raises(Exception, match="kernel_shape"):
        run_kiln(node_model("MaxPool", [("x", x)], ["y"], {"strides": [2, 2]}), {"x": x})


def test_maxpool_bad_rank_named():
    x = rand(np.random.default_rng(804), (4, 8))
    with pytest.raises(Exception, match="rank"):
        run_kiln(node_model("MaxPool", [("x", x)], ["y"], {"kernel_shape": [2]}), {"x": x})


# ---- direct convolution, one thread: rows or chunks across the channel panels ----

def tol(k):
    return dict(rtol=1e-4, atol=2e-6 * np.sqrt(k) + 1e-5)


CONV_CASES = [
    # flat layout (stride 1, and strided maps under 20 wide): SqueezeNet's expand 3x3 shapes
    ((1, 16, 55, 55), (64, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((2, 7, 13, 13), (20, 7, 3, 3), {"pads": [1, 1, 1, 1]}),
    ((3, 5, 9, 11), (13, 5, 3, 3), {"pads": [0, 1, 2, 1]}),
    ((2, 6, 15, 15), (30, 3, 3, 3), {"pads": [1, 1, 1, 1], "group": 2}),
    ((1, 5, 14, 14), (28, 5, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
    # rows layout (strided, output rows of 20 or more): SqueezeNet's first convolution
    ((1, 3, 64, 64), (64, 3, 3, 3), {"strides": [2, 2]}),
    ((2, 3, 47, 45), (13, 3, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 2]}),
    ((1, 4, 30, 90), (9, 4, 5, 5), {"strides": [1, 3], "pads": [2, 2, 2, 2]}),
]


def conv_feeds(rng, xs, ws):
    x = rand(rng, xs)
    w = rand(rng, ws, low=-1, high=1)
    b = rand(rng, (ws[0],))
    return x, w, b


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
def test_direct_one_thread(xs, ws, attrs):
    x, w, b = conv_feeds(np.random.default_rng(811), xs, ws)
    m = node_model("Conv", [("x", x), ("w", w), ("b", b)], ["y"], attrs,
                   initializers={"w": w, "b": b})
    check(m, {"x": x}, threads=1, **tol(int(np.prod(ws[1:]))))


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
def test_direct_one_thread_fused(xs, ws, attrs):
    """FusedConv with Relu and a residual Z: the epilogue runs per row or chunk of each panel."""
    rng = np.random.default_rng(812)
    x, w, b = conv_feeds(rng, xs, ws)
    plain = node_model("Conv", [("x", x), ("w", w), ("b", b)], ["y"], attrs,
                       initializers={"w": w, "b": b})
    y = run_ort(plain, {"x": x})[0]
    z = rand(rng, y.shape)
    m = node_model("FusedConv", [("x", x), ("w", w), ("b", b), ("z", z)], ["y"],
                   dict(attrs, activation="Relu"), domain=MS, initializers={"w": w, "b": b})
    got = run_kiln(m, {"x": x, "z": z}, threads=1)[0]
    assert_same(got, np.maximum(y + z, 0), **tol(int(np.prod(ws[1:]))))
    for t in (2, 3):
        other = run_kiln(m, {"x": x, "z": z}, threads=t)[0]
        assert np.array_equal(other.view(np.uint32), got.view(np.uint32)), f"threads={t}"
