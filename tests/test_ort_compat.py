"""`import kiln.onnxruntime as onnxruntime`: ONNX Runtime's own Python API tests for the CPU provider
(onnxruntime/test/python/onnxruntime_test_python.py, 1.16), rewritten to run through kiln's
switch, on equivalents of ONNX Runtime's test models (ort_compat_models.py). Each test keeps the
name of the one it rewrites. The ones that still fail are listed, with the reason, in
ort_compat_known_failures.txt: they run as strict expected failures, so one that starts to pass
fails the suite until it leaves the list (which may only shrink)."""
import gc
import os
import pathlib
import subprocess
import sys
import threading
import time
import warnings

import numpy as np
import pytest

from util import ROOT  # noqa: F401  (puts python/ on sys.path)
import kiln.onnxruntime as onnxrt  # noqa: E402
from kiln.onnxruntime.capi import _pybind_state as C  # noqa: E402
from kiln.onnxruntime.capi.onnxruntime_pybind11_state import Fail, OrtValueVector, RunOptions  # noqa: E402
import ort_compat_models  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
KNOWN_FILE = os.path.join(HERE, "ort_compat_known_failures.txt")

X = np.array([[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]], dtype=np.float32)
X_SQUARED = X * X


@pytest.fixture(autouse=True)
def workdir(tmp_path_factory, monkeypatch):
    """ONNX Runtime's tests run in a folder holding testdata/; each test here gets a fresh one."""
    d = tmp_path_factory.mktemp("ort")
    ort_compat_models.write_testdata(str(d / "testdata"))
    monkeypatch.chdir(d)
    yield d


def get_name(name):
    return os.path.join("testdata", name)


# ---------------------------------------------------------------- module functions

def test_get_version_string():
    assert onnxrt.get_version_string() is not None


def test_get_build_info():
    assert "Build Info" in onnxrt.get_build_info()


def test_get_providers():
    assert "CPUExecutionProvider" in onnxrt.get_available_providers()
    assert onnxrt.get_all_providers()[-1] == "CPUExecutionProvider"
    s = onnxrt.InferenceSession(get_name("mul_1.onnx"), providers=onnxrt.get_available_providers())
    assert "CPUExecutionProvider" in s.get_providers()


def test_enabling_and_disabling_telemetry():
    onnxrt.disable_telemetry_events()
    onnxrt.enable_telemetry_events()


def test_run_device():
    assert onnxrt.get_device() in ("CPU", "GPU")


# ---------------------------------------------------------------- optimised model written

def test_model_serialization():
    so = onnxrt.SessionOptions()
    so.log_severity_level = 1
    so.logid = "TestModelSerialization"
    so.optimized_model_filepath = "./PythonApiTestOptimizedModel.onnx"
    onnxrt.InferenceSession(get_name("mul_1.onnx"), sess_options=so)
    assert os.path.isfile(so.optimized_model_filepath)
    # the written model runs, here and in ONNX Runtime
    s = onnxrt.InferenceSession(so.optimized_model_filepath)
    np.testing.assert_allclose(s.run(None, {"X": X})[0], X_SQUARED)
    import onnxruntime as real
    r = real.InferenceSession(so.optimized_model_filepath, providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(r.run(None, {"X": X})[0], X_SQUARED)


def _serialize_external(model, out, ext, min_size, folder="."):
    so = onnxrt.SessionOptions()
    so.log_severity_level = 1
    so.optimized_model_filepath = os.path.join(folder, out)
    so.add_session_config_entry("session.optimized_model_external_initializers_file_name", ext)
    so.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", str(min_size))
    onnxrt.InferenceSession(get_name(model), sess_options=so)
    assert os.path.isfile(so.optimized_model_filepath)
    assert os.path.isfile(os.path.join(folder, ext))
    return so.optimized_model_filepath


def _same_outputs(a, b):
    """The written model b gives a's outputs, in kiln and in ONNX Runtime (which reads its external
    data file too)."""
    import onnxruntime as real
    x = np.random.default_rng(3).standard_normal((1, 1, 8, 8)).astype(np.float32)
    ra = onnxrt.InferenceSession(a).run(None, {"Input3": x})[0]
    rb = onnxrt.InferenceSession(b).run(None, {"Input3": x})[0]
    np.testing.assert_allclose(ra, rb, rtol=1e-5, atol=1e-6)
    rr = real.InferenceSession(b, providers=["CPUExecutionProvider"]).run(None, {"Input3": x})[0]
    np.testing.assert_allclose(rr, ra, rtol=1e-5, atol=1e-5)


def test_model_serialization_with_external_initializers():
    path = _serialize_external("mnist.onnx", "model_with_external_initializers.onnx", "external_initializers.bin", 100)
    assert os.path.getsize("external_initializers.bin") >= 64 * 10 * 4  # the 64x10 weight went out
    _same_outputs(get_name("mnist.onnx"), path)


def test_model_serialization_with_external_initializers_to_directory():
    path = _serialize_external("mnist.onnx", "model_with_external_initializers_in_dir.onnx",
                               "external_initializers_in_dir.bin", 100, folder="./testdata/")
    _same_outputs(get_name("mnist.onnx"), path)


def test_model_serialization_with_original_external_initializers_to_directory():
    path = _serialize_external("model_with_orig_ext_data.onnx", "model_opt_with_ext_data.onnx",
                               "model_opt_with_ext_data.bin", 100, folder="./testdata/")
    _same_outputs(get_name("model_with_orig_ext_data.onnx"), path)


def test_model_serialization_with_original_external_initializers_to_current_directory():
    p1 = _serialize_external("model_with_orig_ext_data.onnx", "model_opt_with_ext_data_1.onnx",
                             "model_opt_with_ext_data_1.bin", 10)
    so2 = onnxrt.SessionOptions()
    so2.optimized_model_filepath = "model_opt_with_ext_data_2.onnx"
    so2.add_session_config_entry("session.optimized_model_external_initializers_file_name", "model_opt_with_ext_data_2.bin")
    so2.add_session_config_entry("session.optimized_model_external_initializers_min_size_in_bytes", "10")
    s2 = onnxrt.InferenceSession(p1, sess_options=so2)
    del s2
    assert os.path.isfile("model_opt_with_ext_data_2.onnx") and os.path.isfile("model_opt_with_ext_data_2.bin")
    os.remove(p1)
    os.remove("model_opt_with_ext_data_1.bin")  # model 2 must stand on its own
    _same_outputs(get_name("model_with_orig_ext_data.onnx"), "model_opt_with_ext_data_2.onnx")


# ---------------------------------------------------------------- sessions and runs

def test_deserialization_from_path_object():
    onnxrt.InferenceSession(pathlib.Path(get_name("mul_1.onnx")), providers=onnxrt.get_available_providers())


def test_invalid_set_providers():
    s = onnxrt.InferenceSession(get_name("mul_1.onnx"), providers=["CPUExecutionProvider"])
    with pytest.raises(RuntimeError, match="Unknown Provider Type: InvalidProvider"):
        s.set_providers(["InvalidProvider"])
    s.set_providers(["CPUExecutionProvider"])  # a valid call makes the session again
    np.testing.assert_allclose(s.run(None, {"X": X})[0], X_SQUARED)


def _check_io(s, in_shape, out_shape, in_name="X", out_name="Y"):
    assert [i.name for i in s.get_inputs()] == [in_name] and s.get_inputs()[0].shape == in_shape
    assert [o.name for o in s.get_outputs()] == [out_name] and s.get_outputs()[0].shape == out_shape


def test_run_model():
    s = onnxrt.InferenceSession(get_name("mul_1.onnx"), providers=onnxrt.get_available_providers())
    _check_io(s, [3, 2], [3, 2])
    np.testing.assert_allclose(s.run(["Y"], {"X": X})[0], X_SQUARED, rtol=1e-5)


def test_run_async():
    done, seen = threading.Event(), []

    def callback(res, data, err):
        seen.append((res, data, err))
        done.set()

    so = onnxrt.SessionOptions()
    so.intra_op_num_threads = 2
    s = onnxrt.InferenceSession(get_name("mul_1.onnx"), so, providers=onnxrt.get_available_providers())
    s.run_async(["Y"], {"X": X}, callback, {"id": 123456})
    assert done.wait(10)
    res, data, err = seen[0]
    assert err == "" and len(res) == 1 and data == {"id": 123456}
    np.testing.assert_allclose(res[0], X_SQUARED)


def test_run_model_from_bytes():
    with open(get_name("mul_1.onnx"), "rb") as f:
        s = onnxrt.InferenceSession(f.read(), providers=onnxrt.get_available_providers())
    _check_io(s, [3, 2], [3, 2])
    np.testing.assert_allclose(s.run(["Y"], {"X": X})[0], X_SQUARED)


def test_run_model2():
    s = onnxrt.InferenceSession(get_name("matmul_1.onnx"), providers=onnxrt.get_available_providers())
    _check_io(s, [3, 2], [3, 1])
    np.testing.assert_allclose(s.run(["Y"], {"X": X})[0], [[5.0], [11.0], [17.0]])


def test_run_model2_contiguous():
    s = onnxrt.InferenceSession(get_name("matmul_1.onnx"), providers=onnxrt.get_available_providers())
    x = np.array([[2.0, 1.0], [4.0, 3.0], [6.0, 5.0]], dtype=np.float32)[:, ::-1]  # a strided view
    assert not x.flags.c_contiguous
    np.testing.assert_allclose(s.run(["Y"], {"X": x})[0], [[5.0], [11.0], [17.0]])
    np.testing.assert_allclose(s.run(["Y"], {"X": np.ascontiguousarray(x)})[0], [[5.0], [11.0], [17.0]])


def test_run_model_multiple_threads():
    so = onnxrt.SessionOptions()
    so.log_verbosity_level = 1
    so.logid = "MultiThreadsTest"
    s = onnxrt.InferenceSession(get_name("mul_1.onnx"), sess_options=so, providers=onnxrt.get_available_providers())
    errors = []

    def work(tag):
        ro = onnxrt.RunOptions()
        ro.logid = tag
        try:
            for _ in range(20):
                np.testing.assert_allclose(s.run([], {"X": X}, run_options=ro)[0], X_SQUARED)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=work, args=("thread%d" % i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_list_as_input():
    s = onnxrt.InferenceSession(get_name("mul_1.onnx"), providers=onnxrt.get_available_providers())
    np.testing.assert_allclose(s.run([], {"X": X.tolist()})[0], X_SQUARED)


def test_string_list_as_input():
    s = onnxrt.InferenceSession(get_name("identity_string.onnx"))
    x = np.array(["this", "is", "identity", "test"], dtype=str).reshape((2, 2))
    np.testing.assert_equal(s.run([], {"input:0": x.tolist()})[0], x)


def test_run_model_symbolic_input():
    s = onnxrt.InferenceSession(get_name("matmul_2.onnx"))
    _check_io(s, ["None", 2], ["None", 1])
    np.testing.assert_allclose(s.run(["Y"], {"X": X})[0], [[5.0], [11.0], [17.0]])


def test_boolean_inputs():
    s = onnxrt.InferenceSession(get_name("logicaland.onnx"))
    ins = s.get_inputs()
    assert [i.name for i in ins] == ["input1:0", "input:0"]  # the model's order
    assert [i.shape for i in ins] == [[2, 2], [2, 2]] and {i.type for i in ins} == {"tensor(bool)"}
    out = s.get_outputs()[0]
    assert (out.name, out.shape, out.type) == ("output:0", [2, 2], "tensor(bool)")
    a = np.array([[True, True], [False, False]])
    b = np.array([[True, False], [True, False]])
    np.testing.assert_equal(s.run(["output:0"], {"input1:0": a, "input:0": b})[0], a & b)


def _string_identity(x, expected=None):
    s = onnxrt.InferenceSession(get_name("identity_string.onnx"))
    i, o = s.get_inputs()[0], s.get_outputs()[0]
    assert (i.name, i.shape, i.type) == ("input:0", [2, 2], "tensor(string)")
    assert (o.name, o.shape, o.type) == ("output:0", [2, 2], "tensor(string)")
    res = s.run(["output:0"], {"input:0": x})[0]
    np.testing.assert_equal(res, x if expected is None else expected)
    return res


def test_string_input1():
    _string_identity(np.array(["this", "is", "identity", "test"], dtype=str).reshape((2, 2)))


def test_string_input2():
    _string_identity(np.array(["Olá", "你好", "여보세요", "hello"], dtype=str).reshape((2, 2)))


def test_input_bytes():
    x = np.array([b"this", b"is", b"identity", b"test"]).reshape((2, 2))
    s = onnxrt.InferenceSession(get_name("identity_string.onnx"))
    res = s.run(["output:0"], {"input:0": x})[0]
    np.testing.assert_equal(res.astype("|S8"), x)


def test_input_object():
    _string_identity(np.array(["this", "is", "identity", "test"], object).reshape((2, 2)))


def test_input_void():
    x = np.array([b"must", b"have", b"same", b"size"], dtype=np.void).reshape((2, 2))
    _string_identity(x, np.array([["must", "have"], ["same", "size"]], dtype=object))


def test_raise_wrong_num_inputs():
    s = onnxrt.InferenceSession(get_name("logicaland.onnx"), providers=onnxrt.get_available_providers())
    with pytest.raises(ValueError) as e:
        s.run([], {"input:0": np.array([[True, True], [False, False]])})
    assert "Required inputs (['input1:0']) are missing from input feed (['input:0'])" in str(e.value)


def test_model_meta():
    s = onnxrt.InferenceSession(get_name("squeezenet_meta.onnx"), providers=onnxrt.get_available_providers())
    meta = s.get_modelmeta()
    assert meta.producer_name == "onnx-caffe2" and meta.graph_name == "squeezenet_old"
    assert meta.domain == "" and meta.description == "" and meta.graph_description == ""


def _profile_lines(path):
    with open(path) as f:
        return f.readlines()


def test_profiler_with_session_options():
    so = onnxrt.SessionOptions()
    so.enable_profiling = True
    s = onnxrt.InferenceSession(get_name("mul_1.onnx"), sess_options=so, providers=onnxrt.get_available_providers())
    s.run([], {"X": X})
    path = s.end_profiling()
    assert os.path.basename(path).startswith("onnxruntime_profile_")
    lines = _profile_lines(path)
    assert "[" in lines[0] and "]" in lines[-1] and len(lines) > 2
    for line in lines[1:-1]:
        for tag in ("pid", "dur", "ts", "ph", "X", "name", "args"):
            assert tag in line
    os.remove(path)


def test_profiler_get_start_time_ns():
    def start_time():
        so = onnxrt.SessionOptions()
        so.enable_profiling = True
        s = onnxrt.InferenceSession(get_name("mul_1.onnx"), sess_options=so)
        t = s.get_profiling_start_time_ns()
        os.remove(s.end_profiling())
        return t
    before = time.time_ns()
    t1, t2, t3 = start_time(), start_time(), start_time()
    assert before <= t1 <= t2 <= t3 <= time.time_ns()


def test_graph_optimization_level():
    opt = onnxrt.SessionOptions()
    assert opt.graph_optimization_level == onnxrt.GraphOptimizationLevel.ORT_ENABLE_ALL
    opt.graph_optimization_level = onnxrt.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    assert opt.graph_optimization_level == onnxrt.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    s = onnxrt.InferenceSession(get_name("logicaland.onnx"), sess_options=opt)
    a = np.array([[True, True], [False, False]])
    b = np.array([[True, False], [True, False]])
    np.testing.assert_equal(s.run([], {"input1:0": a, "input:0": b})[0], a & b)


def test_sequence_length():
    s = onnxrt.InferenceSession(get_name("sequence_length.onnx"))
    assert (s.get_inputs()[0].name, s.get_inputs()[0].type) == ("X", "seq(tensor(float))")
    assert (s.get_outputs()[0].name, s.get_outputs()[0].type) == ("Y", "tensor(int64)")
    x = [np.array([1.0, 0.0, 3.0, 44.0, 23.0, 11.0], dtype=np.float32).reshape((2, 3))] * 2
    assert s.run(["Y"], {"X": x})[0] == np.array(2, dtype=np.int64)


def test_sequence_construct():
    s = onnxrt.InferenceSession(get_name("sequence_construct.onnx"))
    assert [i.type for i in s.get_inputs()] == ["tensor(int64)", "tensor(int64)"]
    assert [i.name for i in s.get_inputs()] == ["tensor1", "tensor2"]
    assert (s.get_outputs()[0].name, s.get_outputs()[0].type) == ("output_sequence", "seq(tensor(int64))")
    t1 = np.array([1, 0, 3, 44, 23, 11], dtype=np.int64).reshape((2, 3))
    t2 = np.array([1, 2, 3, 4, 5, 6], dtype=np.int64).reshape((2, 3))
    np.testing.assert_array_equal(s.run(["output_sequence"], {"tensor1": t1, "tensor2": t2})[0], [t1, t2])


def test_sequence_insert():
    opt = onnxrt.SessionOptions()
    opt.execution_mode = onnxrt.ExecutionMode.ORT_SEQUENTIAL
    s = onnxrt.InferenceSession(get_name("sequence_insert.onnx"), sess_options=opt)
    assert [i.type for i in s.get_inputs()] == ["seq(tensor(int64))", "tensor(int64)"]
    assert [i.name for i in s.get_inputs()] == ["input_seq", "tensor"]
    assert s.get_outputs()[0].type == "seq(tensor(int64))"
    t = np.array([1, 0, 3, 44, 23, 11], dtype=np.int64).reshape((2, 3))
    np.testing.assert_array_equal(s.run(["output_sequence"], {"tensor": t, "input_seq": []})[0], [t])


def test_ort_execution_mode():
    opt = onnxrt.SessionOptions()
    assert opt.execution_mode == onnxrt.ExecutionMode.ORT_SEQUENTIAL
    opt.execution_mode = onnxrt.ExecutionMode.ORT_PARALLEL
    assert opt.execution_mode == onnxrt.ExecutionMode.ORT_PARALLEL


def test_loading_session_options_from_model(monkeypatch):
    monkeypatch.setenv("ORT_LOAD_CONFIG_FROM_MODEL", "1")
    s = onnxrt.InferenceSession(get_name("model_with_valid_ort_config_json.onnx"))
    so = s.get_session_options()
    assert so.inter_op_num_threads == 5 and so.intra_op_num_threads == 2
    assert so.execution_mode == onnxrt.ExecutionMode.ORT_SEQUENTIAL
    assert so.graph_optimization_level == onnxrt.GraphOptimizationLevel.ORT_ENABLE_ALL
    assert so.enable_profiling is True
    os.remove(s.end_profiling())


def test_session_options_add_free_dimension_override_by_denotation():
    so = onnxrt.SessionOptions()
    so.add_free_dimension_override_by_denotation("DATA_BATCH", 3)
    so.add_free_dimension_override_by_denotation("DATA_CHANNEL", 5)
    s = onnxrt.InferenceSession(get_name("abs_free_dimensions.onnx"), sess_options=so)
    assert s.get_inputs()[0].name == "x" and s.get_inputs()[0].shape == [3, 5, 5]


def test_session_options_add_free_dimension_override_by_name():
    so = onnxrt.SessionOptions()
    so.add_free_dimension_override_by_name("Dim1", 4)
    so.add_free_dimension_override_by_name("Dim2", 6)
    s = onnxrt.InferenceSession(get_name("abs_free_dimensions.onnx"), sess_options=so)
    assert s.get_inputs()[0].name == "x" and s.get_inputs()[0].shape == [4, 6, 5]


def test_session_options_add_config_entry():
    so = onnxrt.SessionOptions()
    so.add_session_config_entry("CONFIG_KEY", "CONFIG_VAL")
    assert so.get_session_config_entry("CONFIG_KEY") == "CONFIG_VAL"


def test_invalid_session_options_config_entry():
    so = onnxrt.SessionOptions()
    with pytest.raises(RuntimeError) as e:
        so.get_session_config_entry("INVALID_KEY")
    assert "SessionOptions does not have configuration with key: INVALID_KEY" in str(e.value)


def test_session_options_add_initializer():
    so = onnxrt.SessionOptions()
    w = onnxrt.OrtValue.ortvalue_from_numpy(np.array([[2.0, 1.0], [4.0, 3.0], [6.0, 5.0]], dtype=np.float32))
    so.add_initializer("W", w)
    s = onnxrt.InferenceSession(get_name("mul_1.onnx"), sess_options=so, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(s.run(["Y"], {"X": X})[0], [[2.0, 2.0], [12.0, 12.0], [30.0, 30.0]])


def test_session_options_add_external_initializers():
    v = onnxrt.OrtValue.ortvalue_from_numpy(np.array([0, 0, 1, 1]).astype(np.int64))
    so = onnxrt.SessionOptions()
    so.add_external_initializers(["Pads_not_on_disk"], [v])
    s = onnxrt.InferenceSession(get_name("model_with_external_initializer_come_from_user.onnx"), sess_options=so,
                                providers=["CPUExecutionProvider"])
    x = np.arange(4, dtype=np.float32).reshape(2, 2) + 1
    np.testing.assert_array_equal(s.run(None, {"X": x})[0], np.pad(x, ((0, 1), (0, 1))))


def test_register_custom_ops_library():
    so = onnxrt.SessionOptions()
    so.register_custom_ops_library(os.path.abspath("libcustom_op_library.so"))


def test_ort_value():
    out_expected = X_SQUARED

    def through_session(v):
        s = onnxrt.InferenceSession(get_name("mul_1.onnx"), providers=onnxrt.get_available_providers())
        assert np.array_equal(s.run(["Y"], {"X": v})[0], out_expected)
        vect = s._sess.run_with_ort_values({"X": v._get_c_value()}, ["Y"], RunOptions())
        assert isinstance(vect, OrtValueVector) and np.array_equal(vect[0].numpy(), out_expected)

    v = onnxrt.OrtValue.ortvalue_from_numpy(X)
    assert v.device_name() == "cpu" and v.shape() == [3, 2] and v.data_type() == "tensor(float)"
    assert v.is_tensor() and np.array_equal(v.numpy(), X)
    through_session(v)
    assert np.array_equal(v.numpy(), X)  # still valid after the session used it


def test_sparse_tensor_coo_format():
    cpu = onnxrt.OrtDevice.make("cpu", 0)
    shape = [9, 9]
    values = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    indices = np.array([3, 5, 15], dtype=np.int64)
    st = onnxrt.SparseTensor.sparse_coo_from_numpy(shape, values, indices, cpu)
    assert st.format() == onnxrt.OrtSparseFormat.ORT_SPARSE_COO and st.dense_shape() == shape
    assert st.data_type() == "sparse_tensor(float)" and st.device_name() == "cpu"
    vals, idx = st.values(), st.as_coo_view().indices()
    assert not vals.flags.writeable and not idx.flags.writeable
    gc.collect()
    assert np.array_equal(values, vals) and np.array_equal(indices, idx)
    ov = onnxrt.OrtValue.ort_value_from_sparse_tensor(st)
    st = ov.as_sparse_tensor()
    assert not st.values().flags.writeable and not st.as_coo_view().indices().flags.writeable
    strs = np.array(["xyz", "yxz", "zyx"], dtype=str)
    sst = onnxrt.SparseTensor.sparse_coo_from_numpy(shape, strs, indices, cpu)
    assert sst.format() == onnxrt.OrtSparseFormat.ORT_SPARSE_COO and sst.dense_shape() == shape
    assert sst.data_type() == "sparse_tensor(string)" and sst.device_name() == "cpu"
    assert np.array_equal(strs, sst.values())
    assert not sst.as_coo_view().indices().flags.writeable and np.array_equal(indices, sst.as_coo_view().indices())
    with pytest.raises(RuntimeError):
        st.to_cuda(onnxrt.OrtDevice.make("cuda", 0))


def test_sparse_tensor_csr_format():
    cpu = onnxrt.OrtDevice.make("cpu", 0)
    shape = [9, 9]
    values = np.array([1.0, 2.0, 3.0], dtype=np.float32)
    inner = np.array([1, 1, 1], dtype=np.int64)
    outer = np.array([0, 1, 2, 3, 3, 3, 3, 3, 3, 3], dtype=np.int64)
    st = onnxrt.SparseTensor.sparse_csr_from_numpy(shape, values, inner, outer, cpu)
    assert st.format() == onnxrt.OrtSparseFormat.ORT_SPARSE_CSRC and st.dense_shape() == shape
    assert st.data_type() == "sparse_tensor(float)" and st.device_name() == "cpu"
    i, o = st.as_csrc_view().inner(), st.as_csrc_view().outer()
    assert not i.flags.writeable and not o.flags.writeable
    gc.collect()
    assert np.array_equal(inner, i) and np.array_equal(outer, o)
    sst = onnxrt.SparseTensor.sparse_csr_from_numpy(shape, np.array(["xyz", "yxz", "zyx"]), inner, outer, cpu)
    assert sst.format() == onnxrt.OrtSparseFormat.ORT_SPARSE_CSRC and sst.data_type() == "sparse_tensor(string)"
    assert sst.dense_shape() == shape and sst.device_name() == "cpu"


def test_shared_allocator_using_create_and_register_allocator():
    info = onnxrt.OrtMemoryInfo("Cpu", onnxrt.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, onnxrt.OrtMemType.DEFAULT)
    onnxrt.create_and_register_allocator(info, None)
    so = onnxrt.SessionOptions()
    so.add_session_config_entry("session.use_env_allocators", "1")
    onnxrt.InferenceSession(get_name("mul_1.onnx"), sess_options=so)


def test_memory_arena_shrinkage():
    s = onnxrt.InferenceSession(get_name("mul_1.onnx"), providers=["CPUExecutionProvider"])
    ro = onnxrt.RunOptions()
    ro.add_run_config_entry("memory.enable_memory_arena_shrinkage", "cpu:0")
    assert ro.get_run_config_entry("memory.enable_memory_arena_shrinkage") == "cpu:0"
    np.testing.assert_allclose(s.run([], {"X": X}, ro)[0], X_SQUARED)
    np.testing.assert_allclose(s.run([], {"X": X})[0], X_SQUARED)  # plans again after the release


def test_check_and_normalize_provider_args():
    from kiln.onnxruntime.capi.onnxruntime_inference_collection import check_and_normalize_provider_args
    valid = ["a", "b", "c"]

    def ok(p, o, ep, eo):
        assert check_and_normalize_provider_args(p, o, valid) == (ep, eo)

    ok(None, None, [], [])
    ok(["a"], None, ["a"], [{}])
    ok(["a", "b"], None, ["a", "b"], [{}, {}])
    ok([("a", {1: 2}), "b"], None, ["a", "b"], [{"1": "2"}, {}])
    ok(["a", "b"], [{1: 2}, {}], ["a", "b"], [{"1": "2"}, {}])
    with pytest.warns(UserWarning):
        ok(["a", "b", "a"], [{"x": 1}, {}, {"y": 2}], ["a", "b"], [{"x": "1"}, {}])
    for p, o in ((3, None), ([3], None), (["a"], 3), (["a"], ["not dict"]), (["a", "b"], [{1: 2}]),
                 ([("a", {1: 2})], [{3: 4}])):
        with pytest.raises(ValueError):
            check_and_normalize_provider_args(p, o, valid)


def test_register_custom_e_ps_library():
    session_options = C.get_default_session_options()
    sess = C.InferenceSession(session_options, get_name("mul_1.onnx"), True, True)
    sess.initialize_session(["my_ep"], [{"shared_lib_path": "./libtest_execution_provider.so"}], set())


def test_create_allocator():
    def check(cfg, expected):
        for k, v in expected.items():
            assert getattr(cfg, k) == v
    check(onnxrt.OrtArenaCfg(8, 0, 4, 2), {"max_mem": 8, "arena_extend_strategy": 0, "initial_chunk_size_bytes": 4,
                                          "max_dead_bytes_per_chunk": 2})
    for d in ({"max_mem": 16, "arena_extend_strategy": 1, "initial_chunk_size_bytes": 8, "max_dead_bytes_per_chunk": 4,
               "initial_growth_chunk_size_bytes": 2},
              {"max_mem": 32, "arena_extend_strategy": 11, "initial_chunk_size_bytes": 18,
               "max_dead_bytes_per_chunk": 14, "initial_growth_chunk_size_bytes": 12,
               "max_power_of_two_extend_bytes": 17}):
        check(onnxrt.OrtArenaCfg(d), d)


# ---------------------------------------------------------------- the list and the known failures

# onnxruntime_test_python.py (1.16) tests that run on the CPU provider (the 8 others only act with
# CUDA, TensorRT, ROCm or TVM present and pass vacuously without them).
ORT_CPU_TESTS = """get_version_string get_build_info model_serialization
model_serialization_with_external_initializers model_serialization_with_external_initializers_to_directory
model_serialization_with_original_external_initializers_to_directory
model_serialization_with_original_external_initializers_to_current_directory get_providers
enabling_and_disabling_telemetry deserialization_from_path_object invalid_set_providers run_model run_async
run_model_from_bytes run_model2 run_model2_contiguous run_model_multiple_threads list_as_input
string_list_as_input run_device run_model_symbolic_input boolean_inputs string_input1 string_input2 input_bytes
input_object input_void raise_wrong_num_inputs model_meta profiler_with_session_options
profiler_get_start_time_ns graph_optimization_level sequence_length sequence_construct sequence_insert
ort_execution_mode loading_session_options_from_model session_options_add_free_dimension_override_by_denotation
session_options_add_free_dimension_override_by_name session_options_add_config_entry
invalid_session_options_config_entry session_options_add_initializer session_options_add_external_initializers
register_custom_ops_library ort_value sparse_tensor_coo_format sparse_tensor_csr_format
shared_allocator_using_create_and_register_allocator memory_arena_shrinkage check_and_normalize_provider_args
register_custom_e_ps_library create_allocator""".split()


def _known_failures():
    known = {}
    with open(KNOWN_FILE) as f:
        for line in f:
            line = line.split("#", 1)[0].strip()
            if line:
                name, _, reason = line.partition(":")
                known[name.strip()] = reason.strip()
    return known


KNOWN = _known_failures()
for _name, _reason in KNOWN.items():
    globals()["test_" + _name] = pytest.mark.xfail(strict=True, reason=_reason)(globals()["test_" + _name])


def test_the_list_is_complete_and_the_known_failures_few():
    assert len(ORT_CPU_TESTS) == 52 and len(set(ORT_CPU_TESTS)) == 52
    for name in ORT_CPU_TESTS:
        assert callable(globals().get("test_" + name)), name
    assert set(KNOWN) <= set(ORT_CPU_TESTS), set(KNOWN) - set(ORT_CPU_TESTS)
    assert all(KNOWN.values()), "every known failure needs its reason"
    passing = len(ORT_CPU_TESTS) - len(KNOWN)
    assert passing / len(ORT_CPU_TESTS) >= 0.9, (passing, len(ORT_CPU_TESTS))
