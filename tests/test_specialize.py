"""Shape specialisation (kiln_options.specialize, src/core/specialize.c): a session with symbolic
input dims opens, on the second run of a shape, a child with those dims fixed and runs the shape
there. Tested on the CPU with specialize on: outputs equal the generic session's (and ONNX
Runtime's), the child count, eviction at 8, conflicting and unnamed dims, a child that cannot
open, the parent's view (io info, profiling), concurrent runs, and, through the fake device
provider (tests/providers/fake_device.c), the device-constant cache children share."""
import json
import os
import re
import subprocess
import sys
import textwrap
import threading

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP, helper, numpy_helper

from spec_models import bert_feeds, bert_like
from util import MODELS, ROOT, kiln

BUILD = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
TOL = dict(rtol=1e-5, atol=1e-5)  # a child fuses what the generic plan cannot (Attention): not bitwise


def sess(model, specialize=True, verbose=False, **kw):
    return kiln.InferenceSession(model, threads=2, specialize=specialize, verbose=verbose, **kw)


def small_model(in_dims=("batch", "seq", 4)):
    """y = Reshape(x, [Shape(x)[0], -1]) * w + 1: shape arithmetic on symbolic dims."""
    rng = np.random.default_rng(3)
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]),
             helper.make_node("Concat", ["b1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Mul", ["r", "w"], ["m"]),
             helper.make_node("Add", ["m", "one"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(rng.uniform(0.5, 2, ()).astype(np.float32), "w"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, list(in_dims))],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def rand(rng, *shape):
    return rng.uniform(-2, 2, shape).astype(np.float32)


def test_bert_like_alternating_shapes_match_generic_and_ort():
    m = bert_like().SerializeToString()
    on, off = sess(m), sess(m, specialize=False)
    oracle = ort.InferenceSession(m, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(10)
    seen = {}
    for b, s in [(1, 8), (2, 8), (1, 8), (3, 5), (2, 8), (1, 8), (3, 5), (2, 16), (3, 5)]:
        feeds = bert_feeds(rng, b, s)
        before = on.kiln_specializations()
        y = on.run(None, feeds)[0]
        seen[(b, s)] = seen.get((b, s), 0) + 1
        # a shape gets its child on its 2nd run; a one-off shape never does
        assert on.kiln_specializations() == sum(1 for v in seen.values() if v >= 2), (b, s, seen)
        if seen[(b, s)] == 2:
            assert on.kiln_specializations() == before + 1
        np.testing.assert_allclose(y, off.run(None, feeds)[0], **TOL)
        np.testing.assert_allclose(y, oracle.run(None, feeds)[0], rtol=1e-4, atol=1e-4)
    assert off.kiln_specializations() == 0
    # the caller's view is the generic session's: symbolic dims, its node count
    assert on.get_inputs()[0].shape == ["batch", "seq"]
    assert on.get_outputs()[0].shape == off.get_outputs()[0].shape
    assert on.plan_stats()["nodes"] == off.plan_stats()["nodes"]


def test_child_is_smaller_and_logged(capfd):
    m = bert_like().SerializeToString()
    s = sess(m, verbose=True)
    feeds = bert_feeds(np.random.default_rng(1), 2, 8)
    s.run(None, feeds)
    s.run(None, feeds)
    err = capfd.readouterr().err
    hit = re.search(r"kiln: specialised for batch=2,seq=8: (\d+) nodes \(was (\d+)\), graph capture off, "
                    r"0 constants shared \(opened in [\d.]+ ms\)", err)
    assert hit, err
    assert int(hit.group(1)) < int(hit.group(2))  # the shape arithmetic folded away


def test_shared_model_mobilenet_batches():
    path = os.path.join(MODELS, "mobilenet_v3_small.onnx")
    on, off = sess(path), sess(path, specialize=False)
    rng = np.random.default_rng(4)
    imgs = {b: rng.standard_normal((b, 3, 224, 224)).astype(np.float32) for b in (1, 2)}
    for b in (1, 2, 1, 2, 1):
        np.testing.assert_allclose(on.run(None, {"image": imgs[b]})[0], off.run(None, {"image": imgs[b]})[0], **TOL)
    assert on.kiln_specializations() == 2


def test_small_model_bitwise_and_eviction_at_8(capfd):
    m = small_model()
    s, off = sess(m, verbose=True), sess(m, specialize=False)
    rng = np.random.default_rng(5)
    xs = {b: rand(rng, b, 3, 4) for b in range(1, 11)}

    def run(b):
        np.testing.assert_array_equal(s.run(None, {"x": xs[b]})[0], off.run(None, {"x": xs[b]})[0])

    for b in range(1, 10):  # nine shapes, each run twice: 8 children at most
        for _ in range(2):
            run(b)
        assert s.kiln_specializations() == min(b, 8)
    err = capfd.readouterr().err
    # the ninth shape took the least recently used child's slot at its second run
    assert "closing the specialisation for batch=1,seq=3 (least recently used)" in err, err
    # from then on a shape needs twice as many runs to take a full table's slot: 4 for the tenth
    for k in range(4):
        run(10)
        assert s.kiln_specializations() == 8
        assert ("closing the specialisation for batch=2,seq=3" in capfd.readouterr().err) == (k == 3)
    for b in (1, 1, 1, 1):  # an evicted shape is new again, and now needs 8 runs: generic here
        run(b)
    assert s.kiln_specializations() == 8


def test_cycling_shapes_do_not_thrash(capfd):
    """A decoder's cache length grows by one per step and the sequence repeats per request: twenty
    shapes cycled five times must not close and open a child on every run."""
    m = small_model()
    s, off = sess(m, verbose=True), sess(m, specialize=False)
    rng = np.random.default_rng(6)
    xs = {b: rand(rng, b, 3, 4) for b in range(1, 21)}
    for _ in range(5):
        for b in range(1, 21):
            np.testing.assert_array_equal(s.run(None, {"x": xs[b]})[0], off.run(None, {"x": xs[b]})[0])
    err = capfd.readouterr().err
    opened = err.count("kiln: specialised for")
    closed = err.count("closing the specialisation")
    # 8 slots filled, then each eviction doubles the runs a shape needs: a handful of swaps, not 80
    assert opened <= 8 + 4 and closed <= 4, (opened, closed)


def test_dimension_with_many_sizes_leaves_the_key(capfd):
    """A decoder's cache length takes a new size every step: once a dimension has taken more sizes
    than the table has slots, the children keyed on it are closed and later runs specialise on the
    other dimensions only (here batch), the growing one left symbolic in the child."""
    m = small_model(("batch", "past", 4))
    s, off = sess(m, verbose=True), sess(m, specialize=False)
    rng = np.random.default_rng(8)
    for past in range(1, 20):
        x = rand(rng, 2, past, 4)
        for _ in range(2):  # the second run of a size opens a child while 'past' is in the key
            np.testing.assert_array_equal(s.run(None, {"x": x})[0], off.run(None, {"x": x})[0])
        if past == 8:
            assert s.kiln_specializations() == 8
    err = capfd.readouterr().err
    assert "dimension 'past' has taken more than 16 sizes" in err
    assert "specialised for batch=2:" in err, err[-2000:]
    assert s.kiln_specializations() == 1  # those keyed on past closed, one for batch=2
    y = rand(rng, 3, 20, 4)
    for _ in range(2):
        np.testing.assert_array_equal(s.run(None, {"x": y})[0], off.run(None, {"x": y})[0])
    assert s.kiln_specializations() == 2
    assert "specialised for batch=3:" in capfd.readouterr().err


def test_every_dimension_out_of_the_key_runs_generic(capfd):
    m = small_model(("n", 3, 4))
    s, off = sess(m, verbose=True), sess(m, specialize=False)
    rng = np.random.default_rng(9)
    for n in list(range(1, 20)) * 2:
        x = rand(rng, n, 3, 4)
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], off.run(None, {"x": x})[0])
    assert s.kiln_specializations() == 0
    err = capfd.readouterr().err
    assert "dimension 'n' has taken more than 16 sizes" in err and "specialised for" not in err


def test_conflicting_dims_run_generic(capfd):
    nodes = [helper.make_node("Concat", ["a", "b"], ["y"], axis=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TP.FLOAT, ["n", 2]),
                                       helper.make_tensor_value_info("b", TP.FLOAT, ["n", 2])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    s = sess(m.SerializeToString(), verbose=True)
    rng = np.random.default_rng(6)
    a, b = rand(rng, 3, 2), rand(rng, 5, 2)  # 'n' is 3 in one input, 5 in the other
    for _ in range(3):
        np.testing.assert_array_equal(s.run(None, {"a": a, "b": b})[0], np.concatenate([a, b]))
    assert s.kiln_specializations() == 0
    assert "give one dimension name two sizes" in capfd.readouterr().err
    for _ in range(2):  # consistent sizes do specialise
        np.testing.assert_array_equal(s.run(None, {"a": a, "b": a})[0], np.concatenate([a, a]))
    assert s.kiln_specializations() == 1


def test_unnamed_dim_is_not_specialised(capfd):
    s = sess(small_model(("batch", None, 4)), verbose=True)
    x = rand(np.random.default_rng(7), 2, 3, 4)
    for _ in range(3):
        s.run(None, {"x": x})
    assert s.kiln_specializations() == 0
    assert "shape specialisation off: input 'x' has a dimension without a name (axis 1)" in capfd.readouterr().err


def test_child_that_cannot_open_leaves_the_run_generic(tmp_path, capfd):
    path = tmp_path / "m.onnx"
    path.write_bytes(small_model())
    s, off = sess(str(path), verbose=True), sess(small_model(), specialize=False)
    x = rand(np.random.default_rng(8), 2, 3, 4)
    want = off.run(None, {"x": x})[0]
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], want)
    path.write_bytes(b"not a model")  # the child loads the file again: it fails
    for _ in range(3):
        np.testing.assert_array_equal(s.run(None, {"x": x})[0], want)
    assert s.kiln_specializations() == 0
    err = capfd.readouterr().err
    assert err.count("kiln: not specialising for batch=2,seq=3:") == 1, err  # remembered: tried once


def test_options_auto_config_entry_and_cli(tmp_path):
    m = small_model()
    x = rand(np.random.default_rng(9), 2, 3, 4)
    auto = kiln.InferenceSession(m)  # auto: off on the CPU
    for _ in range(3):
        auto.run(None, {"x": x})
    assert auto.kiln_specializations() == 0
    opts = kiln.SessionOptions()
    opts.add_session_config_entry("kiln.specialize_shapes", "1")
    on = kiln.InferenceSession(m, sess_options=opts)
    for _ in range(2):
        on.run(None, {"x": x})
    assert on.kiln_specializations() == 1
    from kiln import onnxruntime as kort
    o = kort.SessionOptions()
    o.add_session_config_entry("kiln.specialize_shapes", "1")
    ks = kort.InferenceSession(m, sess_options=o, providers=["CPUExecutionProvider"])
    for _ in range(2):
        ks.run(None, {"x": x})
    assert ks.kiln_specializations() == 1
    bad = kiln.SessionOptions()
    bad.add_session_config_entry("kiln.specialize_shapes", "maybe")
    with pytest.raises(kiln.KilnError, match="kiln.specialize_shapes must be 1, 0 or auto"):
        kiln.InferenceSession(m, sess_options=bad)
    path = tmp_path / "m.onnx"
    path.write_bytes(m)
    for flag in ("--specialize", "--no-specialize"):  # the CLI's session option (bench runs one shape)
        out = subprocess.run([os.path.join(BUILD, "kiln"), "bench", str(path), "--dim", "batch=2", "--dim", "seq=3",
                              "--runs", "3", flag], capture_output=True, text=True)
        assert out.returncode == 0, out.stderr


def test_errors_name_the_session_inputs():
    s = sess(small_model())
    x = rand(np.random.default_rng(11), 2, 3, 4)
    for _ in range(2):
        s.run(None, {"x": x})
    assert s.kiln_specializations() == 1
    with pytest.raises(kiln.KilnError, match="input 'x' has element type float64, the model expects float32"):
        s.run(None, {"x": x.astype(np.float64)})
    with pytest.raises(kiln.KilnError, match="input 'x' has rank 2"):
        s.run(None, {"x": x[0]})
    with pytest.raises(kiln.KilnError, match="input 'x' is missing"):
        s.run(None, {})


def test_profiling_of_child_runs_lands_in_the_parent_trace(tmp_path):
    s = sess(small_model())
    x = rand(np.random.default_rng(12), 2, 3, 4)
    s.start_profiling(str(tmp_path / "t.json"))
    for _ in range(3):  # generic, child (opened), child
        s.run(None, {"x": x})
    assert s.kiln_specializations() == 1
    events = json.loads(open(s.end_profiling()).read())
    assert [e["name"] for e in events if e["name"] == "model_run"] == ["model_run"] * 3
    nodes = [e["name"] for e in events if e.get("cat") == "Node"]
    generic = ["Shape_0", "Gather_1", "Unsqueeze_2", "Concat_3", "Reshape_4", "Mul_5", "Add_6"]
    child = ["Reshape_4", "Mul_5", "Add_6"]  # its shape arithmetic folded away
    assert nodes == generic + child + child, nodes


def test_concurrent_runs_alternating_shapes():
    m = bert_like(layers=1).SerializeToString()
    shapes = [(1, 8), (2, 8), (3, 5), (2, 16)]
    rng = np.random.default_rng(13)
    feeds = {sh: bert_feeds(rng, *sh) for sh in shapes}
    ref = sess(m)
    for _ in range(2):
        want = {sh: ref.run(None, feeds[sh])[0] for sh in shapes}
    assert ref.kiln_specializations() == len(shapes)
    s = sess(m)
    errors = []

    def worker(k, bitwise):
        try:
            for i in range(12):
                sh = shapes[(k + i) % len(shapes)]
                y = s.run(None, feeds[sh])[0]
                if bitwise:
                    np.testing.assert_array_equal(y, want[sh])
                else:  # a shape's first runs go the generic way, then its child's
                    np.testing.assert_allclose(y, want[sh], **TOL)
        except Exception as e:  # noqa: BLE001
            errors.append(e)

    for bitwise in (False, True):  # children open while others run; then every run is a child's
        ts = [threading.Thread(target=worker, args=(k, bitwise)) for k in range(8)]
        for t in ts:
            t.start()
        for t in ts:
            t.join()
        assert not errors, errors[0]
        assert s.kiln_specializations() == len(shapes)


def test_release_memory_keeps_children_working():
    s = sess(small_model())
    x = rand(np.random.default_rng(14), 2, 3, 4)
    want = s.run(None, {"x": x})[0]
    s.run(None, {"x": x})
    s._lib.kiln_session_release_memory(s._handle())  # plans of the parent and of every child
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], want)
    assert s.kiln_specializations() == 1


# ---- the device-constant cache, through the fake device provider

FAKE_SRC = os.path.join(ROOT, "tests", "providers", "fake_device.c")


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("fake_provider")
    cmd = ["gcc", "-std=c11", "-O1", "-g", "-shared", "-fPIC", "-fvisibility=hidden", "-D_GNU_SOURCE",
           "-I" + os.path.join(ROOT, "src"), "-I" + os.path.join(ROOT, "include"), FAKE_SRC,
           "-o", str(d / "libkiln_cuda.so"), "-L" + BUILD, "-lkiln", "-Wl,-rpath," + BUILD]
    subprocess.run(cmd, check=True)
    return str(d)


def run_fake(fake_dir, body):
    env = dict(os.environ, KILN_PROVIDER_PATH=fake_dir, KILN_FAKE_STRICT="1", KILN_FAKE_STATS="1",
               PYTHONPATH=os.path.join(ROOT, "python") + os.pathsep + os.path.join(ROOT, "tests"),
               KILN_PYTHON_CTYPES="1")
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(body)], capture_output=True, text=True, env=env,
                         timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    # every block freed, and only once (a second free of a shared constant is a foreign pointer)
    assert "fake device:" in out.stderr and ", 0 leaked" in out.stderr, out.stderr
    assert "does not own" not in out.stderr, out.stderr
    return out


FAKE_MODEL = """
import numpy as np, kiln
from onnx import TensorProto as TP, helper, numpy_helper
rng = np.random.default_rng(20)
# Add and Relu run on the fake device, with three constants uploaded; Shape arithmetic on the host
nodes = [helper.make_node("Add", ["x", "c1"], ["a"]), helper.make_node("Relu", ["a"], ["r"]),
         helper.make_node("Add", ["r", "c2"], ["b"]), helper.make_node("Add", ["b", "c3"], ["c"]),
         helper.make_node("Shape", ["x"], ["s"]), helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
         helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]), helper.make_node("Concat", ["n1", "m1"], ["shp"], axis=0),
         helper.make_node("Reshape", ["c", "shp"], ["y"])]
inits = [numpy_helper.from_array(rng.uniform(-1, 1, [1]).astype(np.float32), k) for k in ("c1", "c2", "c3")]
inits += [numpy_helper.from_array(np.array(0, np.int64), "zero"), numpy_helper.from_array(np.array([0], np.int64), "ax"),
          numpy_helper.from_array(np.array([-1], np.int64), "m1")]
g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TP.FLOAT, ["batch", 4])],
                      [helper.make_tensor_value_info("y", TP.FLOAT, None)], initializer=inits)
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
m = m.SerializeToString()
c = [numpy_helper.to_array(i) for i in inits[:3]]
def want(x):
    return (np.maximum(x + c[0], 0) + c[1] + c[2]).reshape(x.shape[0], -1)
"""


def test_fake_device_children_share_constants(fake_dir):
    out = run_fake(fake_dir, FAKE_MODEL + """
s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider"], verbose=True)  # auto: on with a device
xs = {b: rng.uniform(-2, 2, (b, 4)).astype(np.float32) for b in (1, 2, 3)}
for b in (1, 1, 2, 2, 3, 3, 1, 2, 3):
    np.testing.assert_allclose(s.run(None, {"x": xs[b]})[0], want(xs[b]), rtol=1e-6)
assert s.kiln_specializations() == 3
assert s.get_providers() == ["CUDAExecutionProvider", "CPUExecutionProvider"]
print("OK")
""")
    err = out.stderr
    assert "kiln: placement: 0 copies between memory spaces, 3 constants uploaded" in err or \
        "3 constants uploaded" in err, err
    lines = [ln for ln in err.splitlines() if "kiln: specialised for" in ln]
    assert len(lines) == 3, err
    for ln in lines:  # every constant of each child is the parent's device buffer
        assert "3 constants shared" in ln, ln


def test_fake_device_eviction_frees_only_unshared(fake_dir):
    run_fake(fake_dir, FAKE_MODEL + """
s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider"], specialize=True)
for b in range(1, 12):
    x = rng.uniform(-2, 2, (b, 4)).astype(np.float32)
    for _ in range(2):
        np.testing.assert_allclose(s.run(None, {"x": x})[0], want(x), rtol=1e-6)
assert s.kiln_specializations() == 8
x = rng.uniform(-2, 2, (1, 4)).astype(np.float32)  # evicted children's constants stayed the parent's
np.testing.assert_allclose(s.run(None, {"x": x})[0], want(x), rtol=1e-6)
del s
""")
