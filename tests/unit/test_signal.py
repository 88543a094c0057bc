"""DFT, STFT, Hann/Hamming/Blackman windows and MelWeightMatrix against onnxruntime and numpy's
FFT (float64)."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import check, node_model, rand, run_kiln, run_ort  # noqa: E402

RNG = np.random.default_rng(9)


def as_complex(y):
    return y[..., 0] + 1j * y[..., 1]


def dft_model(x, opset, axis=None, length=None, **attrs):
    inits = {}
    ins = [("x", x), ("n", None) if length is not None else ("", None)]
    if length is not None:
        inits["n"] = np.array(length, np.int64)
    if opset >= 20 and axis is not None:
        ins.append(("a", None))
        inits["a"] = np.array(axis, np.int64)
    elif axis is not None:
        attrs["axis"] = axis
    return node_model("DFT", ins, ["y"], attrs=attrs, opset=opset, initializers=inits)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("n", [8, 10, 7, 1, 64, 100])
@pytest.mark.parametrize("cplx", [False, True])
def test_dft_forward_vs_numpy(opset, n, cplx):
    x = rand(RNG, (3, n, 2 if cplx else 1), np.float64)
    m = dft_model(x, opset, axis=1)
    got = run_kiln(m, {"x": x})[0]
    sig = as_complex(x) if cplx else x[..., 0]
    want = np.fft.fft(sig, axis=1)
    assert got.shape == (3, n, 2) and got.dtype == np.float64
    np.testing.assert_allclose(as_complex(got), want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("opset", [17, 20])
@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("inverse", [0, 1])
@pytest.mark.parametrize("shape,axis", [((2, 16, 1), 1), ((2, 12, 5, 2), 1), ((3, 4, 9, 2), 2),
                                        ((2, 6, 4, 1), -3)])
def test_dft_vs_ort(opset, onesided, inverse, shape, axis):
    if onesided and inverse:
        return test_irfft_vs_numpy(opset, shape, axis)
    if onesided and shape[-1] == 2:
        shape = shape[:-1] + (1,)  # one-sided forward transforms take real input
    x = rand(RNG, shape)
    m = dft_model(x, opset, axis=axis, onesided=onesided, inverse=inverse)
    check(m, {"x": x}, rtol=1e-4, atol=1e-4)


def test_irfft_vs_numpy(opset=20, shape=(2, 9, 3, 2), axis=1):
    shape = shape[:-1] + (2,)
    x = rand(RNG, shape, np.float64)
    n = 2 * (shape[axis] - 1)
    m = dft_model(x, opset, axis=axis, onesided=1, inverse=1)
    got = run_kiln(m, {"x": x})[0]
    want = np.fft.irfft(as_complex(x), n=n, axis=axis % (len(shape)))[..., None]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("length", [4, 9, 16, 20])
@pytest.mark.parametrize("opset", [17, 20])
def test_dft_length_pad_or_truncate(length, opset):
    x = rand(RNG, (2, 12, 2))
    m = dft_model(x, opset, axis=1, length=length)
    check(m, {"x": x}, rtol=1e-4, atol=1e-4)
    got = run_kiln(m, {"x": x})[0]
    want = np.fft.fft(as_complex(x.astype(np.float64)), n=length, axis=1)
    np.testing.assert_allclose(as_complex(got), want, rtol=1e-4, atol=1e-4)


def test_dft_inverse_roundtrip_large_prime():
    x = rand(RNG, (1, 1009, 2), np.float64)
    fwd = run_kiln(dft_model(x, 20, axis=1), {"x": x})[0]
    back = run_kiln(dft_model(fwd, 20, axis=1, inverse=1), {"x": fwd})[0]
    np.testing.assert_allclose(back, x, rtol=1e-9, atol=1e-9)


def test_dft_float16():
    x = rand(RNG, (2, 8, 1), np.float16)
    got = run_kiln(dft_model(x, 20, axis=1), {"x": x})[0]
    assert got.dtype == np.float16
    want = np.fft.fft(x[..., 0].astype(np.float64), axis=1)
    np.testing.assert_allclose(as_complex(got.astype(np.float64)), want, rtol=1e-2, atol=2e-2)


def test_dft_bad_axis():
    x = rand(RNG, (2, 8, 1))
    for m in (dft_model(x, 20, axis=2), dft_model(x, 17, axis=-1)):
        with pytest.raises(Exception):
            run_kiln(m, {"x": x})


@pytest.mark.parametrize("with_window,frame_length", [(False, 16), (True, None), (True, 16)])
@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("step", [8, 5])
def test_stft(with_window, frame_length, onesided, step):
    x = rand(RNG, (2, 100, 1))
    inits = {"s": np.array(step, np.int64)}
    ins = [("x", x), ("s", None)]
    if with_window:
        inits["w"] = np.hanning(16).astype(np.float32)
        ins.append(("w", None))
    else:
        ins.append(("", None))
    if frame_length:
        inits["l"] = np.array(frame_length, np.int64)
        ins.append(("l", None))
    m = node_model("STFT", ins, ["y"], attrs={"onesided": onesided}, opset=17, initializers=inits)
    check(m, {"x": x}, rtol=1e-4, atol=1e-4)


def test_stft_complex_vs_numpy():
    x = rand(RNG, (1, 40, 2), np.float64)
    m = node_model("STFT", [("x", x), ("s", None), ("", None), ("l", None)], ["y"],
                   attrs={"onesided": 0}, opset=17,
                   initializers={"s": np.array(6, np.int64), "l": np.array(10, np.int64)})
    got = run_kiln(m, {"x": x})[0]
    sig = as_complex(x)[0]
    frames = [np.fft.fft(sig[f * 6:f * 6 + 10]) for f in range(1 + (40 - 10) // 6)]
    np.testing.assert_allclose(as_complex(got)[0], np.array(frames), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
@pytest.mark.parametrize("size", [1, 2, 10, 33])
@pytest.mark.parametrize("dt", [TensorProto.FLOAT, TensorProto.DOUBLE])
def test_windows(op, periodic, size, dt):
    if size == 1 and not periodic:
        return  # 0/0 in the definition
    sz = np.array(size, np.int64)
    m = node_model(op, [("n", sz)], ["y"], attrs={"periodic": periodic, "output_datatype": dt},
                   opset=17)
    check(m, {"n": sz}, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
def test_window_numpy_symmetric_and_int32_size(op):
    sz = np.array(12, np.int32)
    m = node_model(op, [("n", sz)], ["y"], attrs={"periodic": 0}, opset=17)
    got = run_kiln(m, {"n": sz})[0]
    a = 25 / 46  # ONNX's Hamming alpha (numpy uses 0.54)
    hamming = lambda n: a - (1 - a) * np.cos(2 * np.pi * np.arange(n) / (n - 1))  # noqa: E731
    want = {"HannWindow": np.hanning, "HammingWindow": hamming, "BlackmanWindow": np.blackman}[op](12)
    np.testing.assert_allclose(got, want, atol=1e-6)


def test_window_int_output():
    sz = np.array(8, np.int64)
    m = node_model("HannWindow", [("n", sz)], ["y"], attrs={"output_datatype": TensorProto.INT32},
                   opset=17)
    got = run_kiln(m, {"n": sz})[0]
    assert got.dtype == np.int32 and got.shape == (8,)


@pytest.mark.parametrize("args", [(8, 16, 8192, 0.0, 4096.0), (20, 512, 16000, 20.0, 8000.0),
                                  (5, 64, 22050, 300.0, 3000.0)])
@pytest.mark.parametrize("dt", [TensorProto.FLOAT, TensorProto.DOUBLE])
def test_mel_weight_matrix(args, dt):
    bins, n, rate, lo, hi = args
    feeds = {"b": np.array(bins, np.int64), "n": np.array(n, np.int64), "r": np.array(rate, np.int64),
             "lo": np.array(lo, np.float32), "hi": np.array(hi, np.float32)}
    m = node_model("MelWeightMatrix", [(k, v) for k, v in feeds.items()], ["y"],
                   attrs={"output_datatype": dt}, opset=17)
    check(m, feeds, rtol=1e-5, atol=1e-6)
