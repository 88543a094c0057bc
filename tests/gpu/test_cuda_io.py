"""Values that stay on the device: torch and cupy tensors as feeds (read in place), OrtValues on
the device, IOBinding with device outputs and caller-owned output buffers, and the C path's
device outputs. Needs a GPU, kiln's CUDA provider and torch (the GPU machine has them)."""
import os

import numpy as np
import pytest

from cuda_diff import F16, F32, cuda_available, kiln, _model, rand

torch = pytest.importorskip("torch")


@pytest.fixture(scope="module")
def sessions():
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    if not torch.cuda.is_available():
        pytest.skip("torch sees no GPU")
    x = rand((4, 64), F32)
    w = rand((64, 32), F32)
    m = _model("MatMul", [("x", x), ("w", w)], {}, "", None, 1, ("w",))
    gpu = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    cpu = kiln.InferenceSession(m, providers=["CPUExecutionProvider"])
    return gpu, cpu


def test_torch_feed_in_place_and_outputs_on_device(sessions):
    gpu, cpu = sessions
    x = np.random.default_rng(1).uniform(-1, 1, (4, 64)).astype(np.float32)
    want = cpu.run(None, {"x": x})[0]
    xt = torch.from_numpy(x).cuda()
    got = gpu.run(None, {"x": xt})[0]  # numpy out, torch in
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)
    vals = gpu.run_with_ort_values(None, {"x": xt})
    assert vals[0].device_name() == "cuda" and vals[0].shape() == [4, 32]
    t = torch.as_tensor(vals[0], device="cuda")  # zero-copy through __cuda_array_interface__
    assert t.data_ptr() == vals[0].data_ptr()
    np.testing.assert_allclose(t.cpu().numpy(), want, rtol=1e-4, atol=1e-5)


def test_ortvalue_on_device_and_iobinding(sessions):
    gpu, cpu = sessions
    x = np.random.default_rng(2).uniform(-1, 1, (4, 64)).astype(np.float32)
    want = cpu.run(None, {"x": x})[0]
    xv = kiln.OrtValue.ortvalue_from_numpy(x, "cuda", 0)
    assert xv.device_name() == "cuda"
    np.testing.assert_array_equal(xv.numpy(), x)
    io = gpu.io_binding()
    io.bind_ortvalue_input("x", xv)
    io.bind_output("y0", "cuda")
    gpu.run_with_iobinding(io)
    out = io.get_outputs()[0]
    assert out.device_name() == "cuda"
    np.testing.assert_allclose(io.copy_outputs_to_cpu()[0], want, rtol=1e-4, atol=1e-5)
    # a caller-owned device buffer receives the output
    buf = torch.full((4, 32), float("nan"), device="cuda")
    io.bind_output("y0", "cuda", 0, np.float32, [4, 32], buf.data_ptr())
    gpu.run_with_iobinding(io)
    np.testing.assert_allclose(buf.cpu().numpy(), want, rtol=1e-4, atol=1e-5)
    # raw device pointer input
    xt = torch.from_numpy(x).cuda()
    io.bind_input("x", "cuda", 0, np.float32, [4, 64], xt.data_ptr())
    io.bind_output("y0", "cpu")
    gpu.run_with_iobinding(io)
    np.testing.assert_allclose(io.copy_outputs_to_cpu()[0], want, rtol=1e-4, atol=1e-5)


def test_half_feeds_from_torch(sessions):
    x = rand((3, 40), F16)
    m = _model("Relu", [("x", x)], {}, "", None, 1, ())
    gpu = kiln.InferenceSession(m, providers=["CUDAExecutionProvider"])
    xt = torch.from_numpy(x).cuda()
    y = gpu.run_with_ort_values(None, {"x": xt})[0]
    np.testing.assert_array_equal(y.numpy(), np.maximum(x, 0))


def test_device_input_read_on_the_host_is_staged(sessions):
    """A device feed that a CPU node reads (here Shape) is copied to the host for the run."""
    x = rand((5, 7), F32)
    m = _model("Shape", [("x", x)], {}, "", None, 1, ())
    gpu = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    got = gpu.run(None, {"x": torch.from_numpy(x).cuda()})[0]
    np.testing.assert_array_equal(got, [5, 7])


def test_device_feed_refused_on_a_cpu_session():
    if not torch.cuda.is_available():
        pytest.skip("torch sees no GPU")
    x = rand((2, 2), F32)
    m = _model("Relu", [("x", x)], {}, "", None, 1, ())
    cpu = kiln.InferenceSession(m, providers=["CPUExecutionProvider"])
    with pytest.raises(Exception):
        cpu.run_with_ort_values(None, {"x": torch.from_numpy(x).cuda()})
