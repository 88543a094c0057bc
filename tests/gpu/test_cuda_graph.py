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


def reshape_by_input():
    """y = Relu(Reshape(x, shape)): the Reshape's target shape is a graph input, read on the host,
    so one input shape can give different results: a replay would repeat the recorded shape."""
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    g = helper.make_graph(nodes, "rs", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [4, 6]),
                                        helper.make_tensor_value_info("shape", onnx.TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_auto_capture_records_and_replays(capfd):
    """No option: a model whose every node runs on the GPU is recorded by default, replays match
    the CPU for fresh inputs, and a new, larger shape (a larger workspace) leaves the earlier
    recording valid."""
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    m = mlp(hidden=512)
    cpu = kiln.InferenceSession(m)
    rng = np.random.default_rng(12)
    # without shape specialisation the session records each shape itself; with it (the default on
    # a GPU) each shape seen twice gets a child session with its dims fixed, which records instead
    for spec, said in ((False, "kiln: captured"), (None, "graph capture on")):
        kw = {} if spec is None else {"specialize": spec}
        gpu = kiln.InferenceSession(m, providers=["CUDAExecutionProvider"], verbose=True, **kw)
        for batch in (2, 300, 2, 4096, 2):
            for run in range(4):
                x = rng.uniform(-1, 1, (batch, 32)).astype(np.float32)
                np.testing.assert_allclose(gpu.run(None, {"x": x})[0], cpu.run(None, {"x": x})[0], rtol=1e-4,
                                           atol=1e-6, err_msg="batch %d run %d" % (batch, run))
        assert said in capfd.readouterr().err


def test_auto_capture_skips_host_values_that_change():
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    m = reshape_by_input()
    gpu = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    x = np.random.default_rng(3).uniform(-1, 1, (4, 6)).astype(np.float32)
    for run in range(4):
        for shape in ([3, 8], [2, 12], [24, 1]):
            got = gpu.run(None, {"x": x, "shape": np.array(shape, np.int64)})[0]
            np.testing.assert_array_equal(got, np.maximum(x.reshape(shape), 0), err_msg="run %d" % run)
    with pytest.raises(kiln.KilnError, match="reads 'shape', which can change"):
        kiln.InferenceSession(m, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])


def test_capture_can_be_turned_off(capfd):
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    m = mlp()
    gpu = kiln.InferenceSession(m, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "0"})], verbose=True)
    x = np.random.default_rng(5).uniform(-1, 1, (3, 32)).astype(np.float32)
    ref = kiln.InferenceSession(m).run(None, {"x": x})[0]
    for _ in range(4):
        np.testing.assert_allclose(gpu.run(None, {"x": x})[0], ref, rtol=1e-4, atol=1e-6)
    assert "kiln: captured" not in capfd.readouterr().err
