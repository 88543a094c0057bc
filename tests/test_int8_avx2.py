"""The int8 loops reworked for CPUs with AVX2 but no AVX-512 (src/cpu/kernels/qgemm_avx2.c):
depthwise convolution (16-wide blocks over the padded runs, short rows and stride-2 phases widened
with overlapping vectors), requantisation rows of every length around the 8- and 32-wide blocks,
and the one-column product of 1x1 convolutions on 1x1 maps (squeeze-excite). Each is checked
bit for bit against the exact numpy oracle (int8_oracle: int64 sums, float32 requantisation) on
fresh random inputs, on the loops this CPU selects; the last test repeats everything in child
processes with KILN_NO_AVX512=1 (the AVX2 loops on an AVX-512 machine) and KILN_NO_AVX2=1 (the
portable loops where AVX-512 is missing), so the vector and scalar paths are held to one oracle."""
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import node_model, run_kiln  # noqa: E402
from int8_oracle import conv_int, requant  # noqa: E402

RNG = np.random.default_rng(int.from_bytes(os.urandom(4), "little"))
U8, S8 = np.uint8, np.int8


def qrand(dt, shape):
    lo, hi = (0, 255) if dt == U8 else (-128, 127)
    return RNG.integers(lo, hi + 1, size=shape).astype(dt)


def scalar(dt):
    """a zero point away from 0, so that the x - xz widening is exercised"""
    lo, hi = (1, 255) if dt == U8 else (-127, 127)
    v = 0
    while v == 0:
        v = int(RNG.integers(lo, hi + 1))
    return np.array(v, dt)


def same(got, want):
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape and got.dtype == want.dtype, (got.shape, want.shape, got.dtype, want.dtype)
    bad = np.argwhere(got != want)
    assert bad.size == 0, f"{len(bad)} of {got.size} differ, first at {bad[0]}: {got[tuple(bad[0])]} != {want[tuple(bad[0])]}"


def conv_integer(x, w, xz, wz, attrs):
    inits = {"w": w, "wz": wz}
    m = node_model("ConvInteger", [("x", x), ("w", w), ("xz", xz), ("wz", wz)], ["y"], attrs=attrs,
                   opset=10, initializers=inits)
    return run_kiln(m, {"x": x, "xz": xz})[0]


def qlinear_conv(x, w, xz, wz, attrs, per_channel):
    """QLinearConv with scales spread so that the outputs cover the codes; returns (kiln, oracle)"""
    M, K = w.shape[0], int(np.prod(w.shape[1:]))
    group = attrs.get("group", 1)
    xs = np.float32(RNG.uniform(0.01, 0.05))
    ws = (RNG.uniform(0.002, 0.02, size=M) if per_channel else np.array(RNG.uniform(0.002, 0.02))).astype(np.float32)
    acc = conv_int(x, w, xz, wz, attrs.get("strides"), attrs.get("pads"), attrs.get("dilations"), group).astype(np.int64)
    bias = RNG.integers(-2000, 2001, size=M).astype(np.int32)
    acc = acc + bias.reshape(1, -1, *([1] * (x.ndim - 2)))
    spread = max(float(np.std(acc)), 1.0)
    ys = np.float32(xs * np.mean(ws) * spread / 60)
    yz = scalar(x.dtype)
    inputs = [("x", x), ("xs", xs), ("xz", xz), ("w", w), ("ws", ws), ("wz", wz), ("ys", ys), ("yz", yz), ("b", bias)]
    inits = {k: v for k, v in inputs if k in ("w", "ws", "wz", "b")}
    m = node_model("QLinearConv", inputs, ["y"], attrs=attrs, opset=10, initializers=inits)
    got = run_kiln(m, {k: v for k, v in inputs if k not in inits})[0]
    mult = (xs * np.broadcast_to(ws, (M,)).astype(np.float32) / ys).astype(np.float32)
    want = requant(acc, mult.reshape(1, -1, *([1] * (x.ndim - 2))), yz, x.dtype)
    return got, want


# ---- depthwise ----

DW_CASES = [  # (H, W), kernel, stride, pad: widths around 4, 8, 16, 32 and the model's 7, 14, 112
    ((7, 7), 5, 1, 2), ((14, 14), 5, 1, 2), ((14, 14), 5, 2, 2), ((7, 7), 3, 1, 1), ((1, 1), 3, 1, 1),
    ((3, 2), 3, 1, 1), ((5, 4), 3, 2, 1), ((9, 9), 3, 2, 1), ((6, 15), 5, 2, 2), ((5, 16), 3, 1, 1),
    ((4, 17), 3, 2, 1), ((8, 31), 5, 1, 2), ((3, 33), 3, 2, 1), ((4, 34), 3, 2, 0), ((2, 65), 5, 2, 2),
    ((28, 28), 5, 2, 2), ((56, 56), 3, 2, 1), ((112, 112), 3, 2, 1), ((11, 13), 3, 1, 0), ((10, 12), 7, 2, 3),
]


@pytest.mark.parametrize("case", DW_CASES)
@pytest.mark.parametrize("xdt,wdt", [(U8, S8), (S8, S8), (U8, U8)])
def test_depthwise_conv_integer(case, xdt, wdt):
    (H, W), k, s, p = case
    C, N = int(RNG.integers(3, 12)), int(RNG.integers(1, 3))
    x, w = qrand(xdt, (N, C, H, W)), qrand(wdt, (C, 1, k, k))
    xz, wz = scalar(xdt), scalar(wdt)
    attrs = {"group": C, "strides": [s, s], "pads": [p] * 4}
    same(conv_integer(x, w, xz, wz, attrs), conv_int(x, w, xz, wz, [s, s], [p] * 4, None, C))


@pytest.mark.parametrize("case", DW_CASES)
@pytest.mark.parametrize("xdt", [U8, S8])
@pytest.mark.parametrize("per_channel", [False, True])
def test_depthwise_qlinear_conv(case, xdt, per_channel):
    (H, W), k, s, p = case
    C = int(RNG.integers(3, 20))
    x, w = qrand(xdt, (1, C, H, W)), qrand(S8, (C, 1, k, k))
    wz = np.zeros(C, S8) if per_channel else scalar(S8)
    got, want = qlinear_conv(x, w, scalar(xdt), wz, {"group": C, "strides": [s, s], "pads": [p] * 4}, per_channel)
    same(got, want)


def test_depthwise_mixed_strides_and_dilation():
    """stride 2 by rows only, stride 2 by columns only, and dilation: the phase split and the
    padded runs under the other combinations"""
    for s, d in (((2, 1), (1, 1)), ((1, 2), (1, 1)), ((2, 2), (2, 2)), ((1, 1), (2, 1))):
        C = 5
        x, w = qrand(U8, (1, C, 13, 19)), qrand(S8, (C, 1, 3, 3))
        xz, wz = scalar(U8), scalar(S8)
        attrs = {"group": C, "strides": list(s), "pads": [2, 2, 2, 2], "dilations": list(d)}
        same(conv_integer(x, w, xz, wz, attrs), conv_int(x, w, xz, wz, list(s), [2] * 4, list(d), C))


# ---- requantisation rows of every length (the pointwise product's rows are its output maps) ----

@pytest.mark.parametrize("P", [1, 2, 5, 7, 8, 9, 15, 16, 17, 31, 32, 33, 40, 49, 63, 64, 65, 100, 196])
@pytest.mark.parametrize("xdt", [U8, S8])
def test_pointwise_requant_row_lengths(P, xdt):
    M, C = int(RNG.integers(5, 30)), int(RNG.integers(3, 40))
    x, w = qrand(xdt, (1, C, 1, P)), qrand(S8, (M, C, 1, 1))
    got, want = qlinear_conv(x, w, scalar(xdt), np.zeros(M, S8), {}, True)
    same(got, want)


# ---- 1x1 convolutions on 1x1 maps: one column per image ----

@pytest.mark.parametrize("M,C", [(1, 1), (3, 5), (8, 16), (9, 17), (16, 8), (24, 96), (72, 288),
                                 (144, 576), (577, 143), (13, 1000)])
@pytest.mark.parametrize("xdt,wdt", [(U8, S8), (S8, S8), (U8, U8)])
def test_squeeze_excite_conv_integer(M, C, xdt, wdt):
    N = int(RNG.integers(1, 4))
    x, w = qrand(xdt, (N, C, 1, 1)), qrand(wdt, (M, C, 1, 1))
    xz, wz = scalar(xdt), scalar(wdt)
    same(conv_integer(x, w, xz, wz, {}), conv_int(x, w, xz, wz))


@pytest.mark.parametrize("M,C", [(8, 16), (9, 17), (24, 96), (144, 576), (577, 143)])
@pytest.mark.parametrize("per_channel", [False, True])
def test_squeeze_excite_qlinear_conv(M, C, per_channel):
    x, w = qrand(U8, (2, C, 1, 1)), qrand(S8, (M, C, 1, 1))
    wz = np.zeros(M, S8) if per_channel else scalar(S8)
    got, want = qlinear_conv(x, w, scalar(U8), wz, {}, per_channel)
    same(got, want)


def test_squeeze_excite_grouped_and_extremes():
    """groups of a 1x1 convolution on a 1x1 map, and the largest products over a long odd K"""
    x, w = qrand(U8, (2, 12, 1, 1)), qrand(S8, (9, 4, 1, 1))
    xz, wz = scalar(U8), scalar(S8)
    same(conv_integer(x, w, xz, wz, {"group": 3}), conv_int(x, w, xz, wz, group=3))
    x = np.full((1, 1027, 1, 1), 255, U8)
    w = np.where(RNG.random((21, 1027, 1, 1)) < 0.5, -128, 127).astype(S8)
    w[0], w[20] = -128, 127
    got = conv_integer(x, w, np.array(0, U8), np.array(0, S8), {})
    same(got, conv_int(x, w))
    assert got[0, 0, 0, 0] == 255 * -128 * 1027 and got[0, 20, 0, 0] == 255 * 127 * 1027


# ---- the other loops ----

def test_every_kernel_variant():
    """The tests above again with the AVX2 loops forced (KILN_NO_AVX512=1) and with the portable
    ones (KILN_NO_AVX2=1, where AVX-512 is missing; KILN_NO_VNNI=1 as well, everywhere)."""
    for env_var in ("KILN_NO_AVX512", "KILN_NO_AVX2", "KILN_NO_VNNI"):
        env = dict(os.environ, **{env_var: "1"})
        r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x",
                            os.path.abspath(__file__), "-k", "not every_kernel_variant"],
                           cwd=os.path.dirname(os.path.abspath(__file__)), env=env, capture_output=True,
                           text=True, timeout=900)
        assert r.returncode == 0 and " passed" in r.stdout and "skipped" not in r.stdout, env_var + r.stdout[-3000:]
