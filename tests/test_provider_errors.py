"""Bad input at the entry points the provider work added: each answered with a clear error."""
import ctypes
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from util import ROOT, kiln
from kiln import _lib
from kiln._device import DeviceFeed

EXAMPLE = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
X = np.ones((2, 4), np.float32)


def test_unknown_memory_kind_is_refused():
    s = kiln.InferenceSession(EXAMPLE)
    lib, h = s._lib, s._handle()
    dims = (ctypes.c_int64 * 2)(2, 4)
    desc = (_lib.TensorDesc * 1)(_lib.TensorDesc(1, 2, dims, X.ctypes.data, 7))
    names = (ctypes.c_char_p * 1)(b"x")
    out = (ctypes.c_void_p * 1)()
    st = lib.kiln_run_with_options(h, None, 1, names, desc, 0, None, out)
    assert st == 1 and b"unknown memory kind 7" in lib.kiln_session_error(h)


def test_device_input_on_a_cpu_session_is_refused():
    s = kiln.InferenceSession(EXAMPLE)
    fake = kiln.OrtValue(feed=DeviceFeed(X.ctypes.data, 1, (2, 4), X))  # never read: refused first
    with pytest.raises(kiln.KilnError, match="in device memory but the session runs on the CPU only"):
        s.run_with_ort_values(None, {"x": fake})


def test_upload_without_a_device_is_refused():
    s = kiln.InferenceSession(EXAMPLE)
    with pytest.raises(kiln.KilnError, match="the session has no device provider"):
        kiln.OrtValue._upload(s, X)


def test_bound_output_of_the_wrong_shape_is_refused():
    s = kiln.InferenceSession(EXAMPLE)
    wrong = np.zeros((9, 9), np.float32)
    io = s.io_binding()
    io.bind_cpu_input("x", X)
    io.bind_output(s.get_outputs()[0].name, "cpu", 0, np.float32, [9, 9], wrong.ctypes.data)
    with pytest.raises(kiln.KilnError, match="the bound buffer has another type or shape"):
        s.run_with_iobinding(io)
    assert not wrong.any()  # nothing written


def test_empty_profile_path_is_refused():
    s = kiln.InferenceSession(EXAMPLE)
    with pytest.raises(kiln.KilnError, match="cannot start profiling"):
        s.start_profiling("")


def test_a_library_that_is_not_a_provider_is_refused(tmp_path):
    """KILN_PROVIDER_PATH pointing at some other shared library named like the CUDA provider."""
    libz = subprocess.run(["sh", "-c", "ldconfig -p | awk '/libz.so.1 /{print $NF; exit}'"],
                          capture_output=True, text=True).stdout.strip()
    if not libz:
        pytest.fail("no libz.so.1 on this machine (zlib is installed by scripts/setup.sh)")
    shutil.copy(libz, tmp_path / "libkiln_cuda.so")
    code = ("import sys; sys.path.insert(0, %r); import kiln\n"
            "try:\n    kiln.InferenceSession(%r, providers=['CUDAExecutionProvider'])\n"
            "except kiln.KilnError as e:\n    print(e)\n") % (os.path.join(ROOT, "python"), EXAMPLE)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=dict(os.environ, KILN_PROVIDER_PATH=str(tmp_path)))
    assert "is not a kiln provider library (no kiln_provider_abi)" in out.stdout, out.stdout + out.stderr
