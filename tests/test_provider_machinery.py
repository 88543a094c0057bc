"""The provider machinery without a GPU: tests/providers/fake_device.c is a provider library whose
"device" memory is host blocks it checks on every call, loaded in place of libkiln_cuda.so. With it
CI exercises placement, copy nodes, constants uploaded once, host inputs, one arena per memory
space, device inputs and outputs, bound outputs, staging of device inputs read on the host,
profiling rows per provider, and leak-free teardown (the fake device aborts on a leaked block)."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from util import ROOT

# the folder of the libkiln the tests load (the GPU machine's staged build has no build folder)
BUILD = os.environ.get("KILN_BUILD_DIR") or (os.path.dirname(os.environ["KILN_LIBRARY"]) if os.environ.get("KILN_LIBRARY")
                                             else os.path.join(ROOT, "build"))

FAKE_SRC = os.path.join(ROOT, "tests", "providers", "fake_device.c")


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fake_provider")
    lib = d / "libkiln_cuda.so"
    cmd = ["gcc", "-std=c11", "-O1", "-g", "-shared", "-fPIC", "-fvisibility=hidden", "-D_GNU_SOURCE",
           "-I" + os.path.join(ROOT, "src"), "-I" + os.path.join(ROOT, "include"), FAKE_SRC, "-o", str(lib),
           "-L" + BUILD, "-lkiln", "-Wl,-rpath," + BUILD]
    subprocess.run(cmd, check=True)
    return str(d)


def run_script(fake_dir, body):
    env = dict(os.environ, KILN_PROVIDER_PATH=fake_dir, KILN_FAKE_STRICT="1", KILN_FAKE_STATS="1",
               PYTHONPATH=os.path.join(ROOT, "python"), KILN_PYTHON_CTYPES="1")
    code = textwrap.dedent("""
        import json, warnings, numpy as np, onnx
        from onnx import helper, numpy_helper, TensorProto as TP
        import kiln
        warnings.simplefilter("error")
        def model(nodes, inputs, outputs, inits=()):
            g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
            m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
            return m.SerializeToString()
        def vi(name, shape, t=TP.FLOAT):
            return helper.make_tensor_value_info(name, t, shape)
        """) + textwrap.dedent(body)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "leaked" not in out.stderr or ", 0 leaked" in out.stderr, out.stderr
    return out.stdout


MLP = """
bias = numpy_helper.from_array(np.full((2, 3), 0.5, np.float32), "bias")
shape = numpy_helper.from_array(np.array([3, 2], np.int64), "shape")
nodes = [helper.make_node("Relu", ["x"], ["r"], name="relu"),
         helper.make_node("Add", ["r", "bias"], ["a"], name="add"),
         helper.make_node("Sigmoid", ["a"], ["s"], name="sigmoid"),
         helper.make_node("Reshape", ["s", "shape"], ["y"], name="reshape"),
         helper.make_node("Shape", ["a"], ["shp"], name="shape_of")]
m = model(nodes, [vi("x", [2, 3])], [vi("y", [3, 2]), vi("shp", [2], TP.INT64)], [bias, shape])
x = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
want = (1 / (1 + np.exp(-(np.maximum(x, 0) + 0.5)))).reshape(3, 2)
"""


def test_placement_and_copies(fake_dir):
    out = run_script(fake_dir, MLP + """
s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
print(json.dumps({"providers": s.get_providers(), "nodes": s.nodes()}))
for _ in range(3):  # heap run, then planned runs with one arena per memory space
    y, shp = s.run(None, {"x": x})
    np.testing.assert_allclose(y, want, rtol=1e-6)
    np.testing.assert_array_equal(shp, [2, 3])
st = s.plan_stats()
assert st["arena_bytes"] > 0, st
print("OK")
""")
    info = json.loads(out.splitlines()[0])
    assert info["providers"] == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    where = {n["name"]: n for n in info["nodes"]}
    assert where["relu"]["provider"] == "CUDAExecutionProvider"
    assert where["add"]["provider"] == "CUDAExecutionProvider"
    assert where["sigmoid"]["provider"] == "CPUExecutionProvider"
    assert "no fake-device kernel for Sigmoid" in where["sigmoid"]["reason"]
    # Reshape reads a host value and a shape on the host: it runs on the device after a copy in
    assert where["reshape"]["provider"] == "CUDAExecutionProvider"
    # Shape reads dims only: no copy of 'a' to the host just for it
    copies = [n for n in info["nodes"] if n["domain"] == "kiln"]
    kinds = sorted(n["op_type"] for n in copies)
    assert kinds == ["MemcpyFromHost", "MemcpyFromHost", "MemcpyToHost"], kinds
    assert out.strip().endswith("OK")


def test_device_inputs_outputs_and_bindings(fake_dir):
    run_script(fake_dir, MLP + """
s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider"])
xv = kiln.OrtValue.ortvalue_from_numpy(x, "cuda")
assert xv.device_name() == "cuda"
np.testing.assert_array_equal(xv.numpy(), x)
vals = s.run_with_ort_values(None, {"x": xv})
assert vals[0].device_name() == "cuda", vals
assert vals[1].device_name() == "cpu"  # Shape runs on the CPU
np.testing.assert_allclose(vals[0].numpy(), want, rtol=1e-6)
io = s.io_binding()
io.bind_ortvalue_input("x", xv)
io.bind_output("y", "cuda")
io.bind_output("shp")
s.run_with_iobinding(io)
np.testing.assert_allclose(io.copy_outputs_to_cpu()[0], want, rtol=1e-6)
host_out = np.zeros((3, 2), np.float32)
io.bind_output("y", "cpu", 0, np.float32, [3, 2], host_out.ctypes.data)
s.run_with_iobinding(io)
np.testing.assert_allclose(host_out, want, rtol=1e-6)
del vals, io, xv
print("OK")
""")


def test_device_input_read_on_the_host_is_staged(fake_dir):
    run_script(fake_dir, """
nodes = [helper.make_node("Sigmoid", ["x"], ["y"], name="cpu_reader"),
         helper.make_node("Relu", ["x"], ["z"], name="dev_reader")]
m = model(nodes, [vi("x", [4])], [vi("y", [4]), vi("z", [4])])
s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider"])
x = np.array([-2, -1, 1, 2], np.float32)
xv = kiln.OrtValue.ortvalue_from_numpy(x, "cuda")
y, z = s.run_with_ort_values(None, {"x": xv})
np.testing.assert_allclose(y.numpy(), 1 / (1 + np.exp(-x)), rtol=1e-6)
np.testing.assert_array_equal(z.numpy(), np.maximum(x, 0))
del y, z, xv
print("OK")
""")


def test_shape_arithmetic_stays_on_the_host(fake_dir):
    out = run_script(fake_dir, """
nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
         helper.make_node("Add", ["s", "one"], ["t"], name="int_add")]
one = numpy_helper.from_array(np.array([1, 1], np.int64), "one")
m = model(nodes, [vi("x", ["a", "b"])], [vi("t", [2], TP.INT64)], [one])
s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
n = {d["name"]: d for d in s.nodes()}
print(n["int_add"]["provider"], "|", n["int_add"]["reason"])
np.testing.assert_array_equal(s.run(None, {"x": np.ones((3, 5), np.float32)})[0], [4, 6])
""")
    assert out.startswith("CPUExecutionProvider | integer shape arithmetic stays on the host"), out


def test_profile_rows_per_provider(fake_dir, tmp_path):
    trace = tmp_path / "t.json"
    run_script(fake_dir, MLP + """
s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
s.start_profiling(%r)
s.run(None, {"x": x})
print(s.end_profiling())
""" % str(trace))
    events = json.loads(trace.read_text())
    prov = {e["name"]: (e["args"].get("provider"), e["tid"]) for e in events if e["cat"] == "Node"}
    assert prov["relu"] == ("CUDAExecutionProvider", 1) and prov["sigmoid"] == ("CPUExecutionProvider", 0)


def test_cli_info_lists_placement(fake_dir, tmp_path):
    env = dict(os.environ, KILN_PROVIDER_PATH=fake_dir)
    path = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
    out = subprocess.run([os.path.join(BUILD, "kiln"), "info", path, "--providers", "cuda"],
                         capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr
    assert "providers: CUDAExecutionProvider, CPUExecutionProvider" in out.stdout
    assert "placement (node, op, provider" in out.stdout
    assert "MemcpyFromHost" in out.stdout


def test_graph_capture_needs_recording_hooks(fake_dir):
    out = run_script(fake_dir, MLP + """
try:
    kiln.InferenceSession(m, providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "1"})])
except kiln.KilnError as e:
    print("ERR", e)
""")
    assert "ERR graph capture needs a device provider that can record" in out, out
