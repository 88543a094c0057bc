"""kiln.onnxruntime beyond ONNX Runtime's own tests: the same kind of error for the same mistake,
options kiln cannot honour refused, terminate, metadata, and an unchanged ONNX Runtime script
giving the same outputs with onnxruntime and with kiln.onnxruntime."""
import os
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pytest
from onnx import helper

from util import ROOT
import kiln.onnxruntime as ort  # noqa: E402
import ort_compat_models as models  # noqa: E402
from test_cancel import feeds as loop_feeds, loop_model  # noqa: E402

PATHS = ["native", "ctypes"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "ctypes":
        monkeypatch.setenv("KILN_PYTHON_CTYPES", "1")
    return request.param


@pytest.fixture
def mul(tmp_path):
    p = tmp_path / "mul_1.onnx"
    p.write_bytes(models.mul_1().SerializeToString())
    return str(p)


def test_errors_are_ort_classes(path, mul, tmp_path):
    s = ort.InferenceSession(mul)
    with pytest.raises(ort.InvalidArgument, match="INVALID_ARGUMENT.*element type"):
        s.run(None, {"X": np.ones((3, 2), np.float64)})  # wrong type
    with pytest.raises(ort.InvalidArgument, match="shape"):
        s.run(None, {"X": np.ones((2, 2), np.float32)})
    with pytest.raises(ort.InvalidArgument, match="Invalid input name: Z"):
        s.run(None, {"X": np.ones((3, 2), np.float32), "Z": np.ones(1, np.float32)})
    with pytest.raises(ValueError, match=r"Required inputs \(\['X'\]\) are missing"):
        s.run(None, {})
    with pytest.raises(ort.InvalidArgument, match="no output named"):
        s.run(["nope"], {"X": np.ones((3, 2), np.float32)})
    with pytest.raises(ort.NoSuchFile):
        ort.InferenceSession(str(tmp_path / "missing.onnx"))
    with pytest.raises((ort.InvalidProtobuf, ort.InvalidGraph)):
        ort.InferenceSession(b"\x08\x07garbage-bytes")
    # every class is a RuntimeError and a kiln.KilnError, as code for either expects
    import kiln
    assert issubclass(ort.NotImplemented, RuntimeError) and issubclass(ort.Fail, kiln.KilnError)


def test_python_values_convert_to_the_declared_type(path, mul):
    s = ort.InferenceSession(mul)
    x = [[1, 2], [3, 4], [5, 6]]  # Python ints for a float input
    np.testing.assert_array_equal(s.run(None, {"X": x})[0], np.array(x, np.float32) ** 2)
    with pytest.raises(ort.InvalidArgument, match="cannot be converted"):
        s.run(None, {"X": [["a", "b"]] * 3})


def test_options_kiln_cannot_honour_are_refused(mul):
    so = ort.SessionOptions()
    so.execution_mode = ort.ExecutionMode.ORT_PARALLEL
    with pytest.raises(ort.NotImplemented, match="ORT_PARALLEL"):
        ort.InferenceSession(mul, so)
    for field in ("enable_mem_pattern", "enable_cpu_mem_arena"):
        so = ort.SessionOptions()
        setattr(so, field, False)
        with pytest.raises(ort.NotImplemented, match=field):
            ort.InferenceSession(mul, so)
    so = ort.SessionOptions()
    so.add_session_config_entry("session.intra_op.allow_spinning", "0")
    with pytest.raises(ort.NotImplemented, match="allow_spinning"):
        ort.InferenceSession(mul, so)
    with pytest.raises(AttributeError):
        ort.SessionOptions().no_such_option = 1
    with pytest.raises(AttributeError):
        ort.RunOptions().no_such_option = 1
    ro = ort.RunOptions()
    ro.only_execute_path_to_fetches = True
    with pytest.raises(ort.NotImplemented):
        ort.InferenceSession(mul).run(None, {"X": np.ones((3, 2), np.float32)}, ro)
    so = ort.SessionOptions()
    so.add_initializer("nope", np.ones(2, np.float32))
    with pytest.raises(ort.InvalidArgument, match="'nope'.*not an initializer"):
        ort.InferenceSession(mul, so)
    so = ort.SessionOptions()
    so.add_initializer("W", np.ones((3, 2), np.int64))
    with pytest.raises(ort.InvalidArgument, match="element type"):
        ort.InferenceSession(mul, so)
    so = ort.SessionOptions()
    so.add_free_dimension_override_by_denotation("NO_SUCH", 2)
    with pytest.raises(ort.InvalidArgument, match="denotation 'NO_SUCH'"):
        ort.InferenceSession(mul, so)


def test_terminate_stops_a_run(path):
    s = ort.InferenceSession(loop_model())
    ro = ort.RunOptions()
    got = []

    def run():
        try:
            s.run(None, loop_feeds(2 ** 62), ro)
        except Exception as e:  # noqa: BLE001
            got.append(e)
    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.3)
    ro.terminate = True
    t.join(20)
    assert not t.is_alive() and got and isinstance(got[0], ort.Fail), got
    ro.terminate = False
    np.testing.assert_array_equal(s.run(None, loop_feeds(5), ro)[0], np.full(4, 5, np.float32))


def test_model_metadata_kept(tmp_path):
    m = models.mul_1()
    m.producer_name, m.producer_version, m.domain, m.model_version = "maker", "9.1", "ai.example", 7
    m.doc_string, m.graph.doc_string = "a model", "its graph"
    helper.set_model_props(m, {"author": "kiln", "licence": "MIT"})
    s = ort.InferenceSession(m.SerializeToString())
    md = s.get_modelmeta()
    assert (md.producer_name, md.domain, md.version, md.description, md.graph_name, md.graph_description) == \
        ("maker", "ai.example", 7, "a model", "mul_1", "its graph")
    assert md.custom_metadata_map == {"author": "kiln", "licence": "MIT"}
    # the optimised model written keeps them
    so = ort.SessionOptions()
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(m.SerializeToString(), so)
    md2 = ort.InferenceSession(so.optimized_model_filepath).get_modelmeta()
    assert md2.custom_metadata_map == md.custom_metadata_map and md2.description == "a model"


def test_sequence_input_errors(path, tmp_path):
    s = ort.InferenceSession(models.sequence_length().SerializeToString())
    with pytest.raises(ort.InvalidArgument, match="list of arrays"):
        s.run(None, {"X": np.ones(3, np.float32)})
    assert s.run(None, {"X": [[1, 2], [3]]})[0] == 2  # items converted to float


SCRIPT = """
import sys
import numpy as np
import onnxruntime as ort

model, out = sys.argv[1], sys.argv[2]
so = ort.SessionOptions()
so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
so.intra_op_num_threads = 2
sess = ort.InferenceSession(model, sess_options=so, providers=["CPUExecutionProvider"])
inp = sess.get_inputs()[0]
print(inp.name, inp.shape, inp.type, sess.get_outputs()[0].name)
x = np.random.default_rng(0).standard_normal((1, 1, 8, 8)).astype(np.float32)
y = sess.run(None, {inp.name: x})[0]
ov = ort.OrtValue.ortvalue_from_numpy(x)
y2 = sess.run_with_ort_values(None, {inp.name: ov})[0].numpy()
binding = sess.io_binding()
binding.bind_cpu_input(inp.name, x)
binding.bind_output(sess.get_outputs()[0].name)
sess.run_with_iobinding(binding)
y3 = binding.copy_outputs_to_cpu()[0]
try:
    sess.run(None, {inp.name: x.astype(np.float64)})
except ort.capi.onnxruntime_pybind11_state.InvalidArgument:
    print("InvalidArgument")
np.save(out, np.stack([y, y2, y3]))
print(sess.get_modelmeta().graph_name, sess.get_providers())
"""


def test_unchanged_ort_script_same_outputs(tmp_path):
    model = tmp_path / "mnist.onnx"
    model.write_bytes(models.mnist_like().SerializeToString())
    script = tmp_path / "user_script.py"
    script.write_text(textwrap.dedent(SCRIPT))
    # the switch, for a script that says `import onnxruntime`: kiln.onnxruntime under that name
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "sitecustomize.py").write_text(
        "import sys, kiln.onnxruntime, kiln.onnxruntime.capi\n"
        "sys.modules['onnxruntime'] = kiln.onnxruntime\n"
        "for k in list(sys.modules):\n"
        "    if k.startswith('kiln.onnxruntime.'):\n"
        "        sys.modules['onnxruntime.' + k[len('kiln.onnxruntime.'):]] = sys.modules[k]\n")
    outs = {}
    for which in ("onnxruntime", "kiln"):
        env = dict(os.environ)
        pp = [os.path.join(ROOT, "python")] + ([str(shim)] if which == "kiln" else [])
        env["PYTHONPATH"] = os.pathsep.join(pp + [env.get("PYTHONPATH", "")])
        r = subprocess.run([sys.executable, str(script), str(model), str(tmp_path / (which + ".npy"))],
                           capture_output=True, text=True, env=env, timeout=120)
        assert r.returncode == 0, r.stderr
        outs[which] = (r.stdout, np.load(tmp_path / (which + ".npy")))
    assert outs["kiln"][0] == outs["onnxruntime"][0]  # names, shapes, types, errors, metadata
    assert "InvalidArgument" in outs["kiln"][0]
    np.testing.assert_allclose(outs["kiln"][1], outs["onnxruntime"][1], rtol=1e-5, atol=1e-5)


def test_c_example_program(tmp_path):
    """examples/session_features.c: metadata, initializers, the optimised model, run options with
    terminate, profiling and device values through the C API."""
    build = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
    model = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
    r = subprocess.run([os.path.join(build, "example_session_features"), model, str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "graph 'tiny_mlp'" in r.stdout and "with terminate set: cancelled" in r.stdout
    assert os.path.exists(tmp_path / "tiny_mlp.optimized.onnx") and os.path.exists(tmp_path / "tiny_mlp.trace.json")
    # the optimised model holds the replacement bias (zeros): ONNX Runtime agrees with kiln on it
    import onnxruntime
    x = np.array([[0.5, -1.0, 2.0, 0.25]], np.float32)
    got = onnxruntime.InferenceSession(str(tmp_path / "tiny_mlp.optimized.onnx"),
                                       providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    y0 = float(r.stdout.split("y[0] = ")[1].split(";")[0])
    assert abs(got[0, 0] - y0) < 1e-5
    so = ort.SessionOptions()
    so.add_initializer("b2", np.zeros(3, np.float32))
    np.testing.assert_allclose(ort.InferenceSession(model, so).run(None, {"x": x})[0], got, rtol=1e-5, atol=1e-6)


def test_same_error_class_as_onnxruntime(mul, tmp_path):
    """For each mistake, kiln.onnxruntime raises the class onnxruntime raises."""
    import onnxruntime as real
    x = np.ones((3, 2), np.float32)
    mistakes = {
        "wrong element type": lambda m: m.InferenceSession(mul, providers=["CPUExecutionProvider"]).run(
            None, {"X": x.astype(np.float64)}),
        "wrong shape": lambda m: m.InferenceSession(mul, providers=["CPUExecutionProvider"]).run(
            None, {"X": np.ones((2, 2), np.float32)}),
        "unknown input": lambda m: m.InferenceSession(mul, providers=["CPUExecutionProvider"]).run(
            None, {"X": x, "nope": x}),
        "missing input": lambda m: m.InferenceSession(mul, providers=["CPUExecutionProvider"]).run(None, {}),
        "missing file": lambda m: m.InferenceSession(str(tmp_path / "none.onnx"), providers=["CPUExecutionProvider"]),
        "garbage model": lambda m: m.InferenceSession(b"\x08\x07garbage-bytes", providers=["CPUExecutionProvider"]),
        "unknown config key": lambda m: m.SessionOptions().get_session_config_entry("nope"),
    }
    import builtins
    for what, mistake in mistakes.items():
        raised = []
        for mod in (real, ort):
            try:
                mistake(mod)
            except Exception as e:  # noqa: BLE001
                raised.append(e)
            else:
                raised.append(None)
        assert raised[0] is not None and raised[1] is not None, (what, raised)
        # the same class (kiln's copy of it), or a subclass of the builtin one onnxruntime raised
        name = type(raised[0]).__name__
        cls = getattr(ort, name, None) or getattr(builtins, name)
        assert isinstance(raised[1], cls), (what, name, type(raised[1]).__name__)


def test_unavailable_provider_left_out_with_a_warning(mul):
    if "CUDAExecutionProvider" in ort.get_available_providers():
        pytest.skip("CUDA is available here")
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"):
        s = ort.InferenceSession(mul, providers=["CUDAExecutionProvider"])
    assert s.get_providers() == ["CPUExecutionProvider"]


def test_profile_in_ort_event_format(mul, tmp_path):
    import json
    so = ort.SessionOptions()
    so.enable_profiling = True
    so.profile_file_prefix = str(tmp_path / "prof")
    s = ort.InferenceSession(mul, so)
    s.run(None, {"X": np.ones((3, 2), np.float32)})
    path = s.end_profiling()
    events = json.load(open(path))
    nodes = [e for e in events if e["cat"] == "Node"]
    assert nodes and all(e["name"].endswith("_kernel_time") and e["args"]["op_name"] == "Mul" for e in nodes)
    assert nodes[0]["args"]["output_type_shape"] == [{"float": [3, 2]}]
    assert nodes[0]["args"]["provider"] == "CPUExecutionProvider" and isinstance(nodes[0]["dur"], int)
    assert any(e["name"] == "model_run" and e["cat"] == "Session" for e in events)
    assert all(e["pid"] == os.getpid() for e in events)
    assert s.end_profiling() == ""
