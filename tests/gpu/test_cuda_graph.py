"""Graph capture (enable_cuda_graph): a model whose nodes all run on the GPU is recorded on its
third run of a shape and replayed after; replays give the CPU's results for fresh inputs, a new
shape is planned and recorded on its own, and a model with a CPU node is refused at open."""
import numpy as np
import pytest

from cuda_diff import F16, F32, cuda_available, kiln, rand

onnx = pytest.importorskip("onnx")
from onnx import helper, numpy_helper  # noqa: E402


def mlp(dtype=np.float32, hidden=64):
    rng = np.random.default_rng(7)
    w1 = numpy_helper.from_array(rng.uniform(-0.2, 0.2, (32, hidden)).astype(dtype), "w1")
    b1 = numpy_helper.from_array(rng.uniform(-0.2, 0.2, (hidden,)).astype(dtype), "b1")
    w2 = numpy_helper.from_array(rng.uniform(-0.2, 0.2, (hidden, 16)).astype(dtype), "w2")
    et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Softmax", ["o"], ["y"], axis=-1)]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", et, ["B", 32])],
                          [helper.make_tensor_value_info("y", et, ["B", 16])], initializer=[w1, b1, w2])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_capture_and_replay_match_the_cpu():
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    m = mlp()
    cpu = kiln.InferenceSession(m)
    gpu = kiln.InferenceSession(m, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
    rng = np.random.default_rng(11)
    for batch in (1, 4, 1):
        for run in range(5):  # plan, learn outputs, record, replay, replay
            x = rng.uniform(-1, 1, (batch, 32)).astype(np.float32)
            got = gpu.run(None, {"x": x})[0]
            np.testing.assert_allclose(got, cpu.run(None, {"x": x})[0], rtol=1e-4, atol=1e-6,
                                       err_msg="batch %d run %d" % (batch, run))


def test_capture_refuses_a_cpu_node():
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    x = rand((3, 4), F32)
    from cuda_diff import _model
    m = _model("NonZero", [("x", x)], {}, "", None, 1, ())
    with pytest.raises(kiln.KilnError, match="graph capture needs every node"):
        kiln.InferenceSession(m, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
