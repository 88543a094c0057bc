"""The Python API in depth, on both of its paths: the C extension kiln._native and the ctypes
fallback (forced with KILN_PYTHON_CTYPES=1). Every dtype in and out, 0-d and empty tensors,
sequences, empty optionals, errors (the same message on both paths), a session shared by threads,
output lifetime (numeric outputs are handed to numpy without a copy) and memory over many runs.
Results are compared with onnxruntime."""
import gc
import glob
import importlib.machinery
import os
import pathlib
import subprocess
import sys
import threading
import types

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from util import ROOT, assert_same, kiln, np_to_onnx_dtype, rand, run_ort

PATHS = ["native", "ctypes"]
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")


def use_path(monkeypatch, path):
    if path == "ctypes":
        monkeypatch.setenv("KILN_PYTHON_CTYPES", "1")
    else:
        monkeypatch.delenv("KILN_PYTHON_CTYPES", raising=False)
        if kiln._session._native_module() is None:
            pytest.skip("kiln._native is not built (the ctypes path is tested on its own)")


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    use_path(monkeypatch, request.param)
    return request.param


def open_session(model, path, **kw):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    kw.setdefault("threads", 1)
    s = kiln.InferenceSession(data, **kw)
    assert (s._native is not None) == (path == "native"), "the session did not take the requested path"
    return s


def graph_model(nodes, inputs, outputs, inits=(), opset=18, ir=8):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = ir
    return m


def vi(name, dtype, shape):
    return helper.make_tensor_value_info(name, dtype, shape)


def identity_model(dtype, shape):
    t = np_to_onnx_dtype(dtype) if not isinstance(dtype, int) else dtype
    return graph_model([helper.make_node("Identity", ["x"], ["y"])], [vi("x", t, shape)], [vi("y", t, shape)])


def add_model(n=4):
    return graph_model([helper.make_node("Add", ["a", "b"], ["c"])],
                       [vi("a", TensorProto.FLOAT, [n]), vi("b", TensorProto.FLOAT, [n])],
                       [vi("c", TensorProto.FLOAT, [n])])


def kiln_error(fn):
    with pytest.raises(kiln.KilnError) as e:
        fn()
    return str(e.value)


# ---------------------------------------------------------------- the native path is there when built

def test_native_loads_when_built(monkeypatch):
    """A build of the extension beside the libkiln in use (or in the package) must load: a silent fall
    back to ctypes would hide a broken extension."""
    monkeypatch.delenv("KILN_PYTHON_CTYPES", raising=False)
    kiln._session._L()
    lib_dir = os.path.dirname(kiln._lib.loaded_path)
    dirs = [lib_dir, os.path.dirname(kiln.__file__)]
    built = [p for d in dirs for suf in importlib.machinery.EXTENSION_SUFFIXES
             for p in glob.glob(os.path.join(d, "_native" + suf))]
    if not built:
        pytest.skip("no _native build next to %s" % lib_dir)
    mod = kiln._session._native_module()
    assert mod is not None and mod.kiln_version == kiln.__version__


def test_forced_ctypes_in_a_fresh_interpreter():
    code = ("import kiln, numpy as np, sys; s = kiln.InferenceSession(sys.argv[1]); "
            "print(s._native is None, s.run(None, {'x': np.ones((2, 4), np.float32)})[0].shape)")
    example = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
    env = dict(os.environ, KILN_PYTHON_CTYPES="1", PYTHONPATH=os.path.join(ROOT, "python"))
    r = subprocess.run([sys.executable, "-c", code, example], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "(2,", "3)"]


def test_pip_install_ships_the_extension(tmp_path):
    """`pip install ./python` builds kiln._native beside the bundled libkiln.so, and the installed
    package takes the native path."""
    target = tmp_path / "site"
    clean = {k: v for k, v in os.environ.items()
             if k not in ("KILN_BUILD_DIR", "KILN_LIBRARY", "LD_PRELOAD", "KILN_PYTHON_CTYPES")}
    r = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
                        "--target", str(target), os.path.join(ROOT, "python")], capture_output=True, text=True,
                       env=clean)
    assert r.returncode == 0, r.stdout + r.stderr
    assert glob.glob(str(target / "kiln" / "_native*.so")), r.stdout + r.stderr
    code = ("import kiln, sys, numpy as np; s = kiln.InferenceSession(sys.argv[1]); "
            "print(s._native is not None, sys.modules['kiln._native'].__file__.startswith(sys.argv[2]), "
            "kiln._lib.loaded_path.startswith(sys.argv[2]), s.run(None, {'x': np.ones((2, 4), np.float32)})[0].shape)")
    example = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
    r = subprocess.run([sys.executable, "-c", code, example, str(target)], capture_output=True, text=True,
                       env=dict(clean, PYTHONPATH=str(target)), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True", "True", "(2,", "3)"]


# ---------------------------------------------------------------- dtypes, in and out

NUMERIC = [np.float32, np.float16, np.float64, np.bool_, np.int8, np.uint8, np.int16, np.uint16, np.int32,
           np.int64, np.uint32, np.uint64]


@pytest.mark.parametrize("dtype", NUMERIC, ids=lambda d: np.dtype(d).name)
def test_identity_every_numeric_dtype(path, dtype):
    x = rand(np.random.default_rng(1), (3, 5), dtype)
    m = identity_model(dtype, [3, 5])
    got = open_session(m, path).run(None, {"x": x})
    want = run_ort(m, {"x": x})
    assert len(got) == 1
    assert_same(got[0], want[0])
    assert got[0].dtype == np.dtype(dtype) and got[0].flags.c_contiguous


@pytest.mark.parametrize("dtype", [np.complex64, np.complex128])
def test_complex_through_identity(path, dtype):
    x = (np.arange(6).reshape(2, 3) + 1j * np.arange(6, 12).reshape(2, 3)).astype(dtype)
    got = open_session(identity_model(dtype, [2, 3]), path).run(None, {"x": x})[0]
    assert got.dtype == np.dtype(dtype)
    np.testing.assert_array_equal(got, x)


def test_arithmetic_dtypes_against_ort(path):
    rng = np.random.default_rng(2)
    cases = [(np.float16, "Add"), (np.float64, "Mul"), (np.int8, "Add"), (np.uint64, "Add"),
             (np.int32, "Sub"), (np.float32, "Greater"), (np.int64, "Equal")]
    for dtype, op in cases:
        a, b = rand(rng, (4, 6), dtype), rand(rng, (4, 6), dtype)
        t = np_to_onnx_dtype(dtype)
        out_t = TensorProto.BOOL if op in ("Greater", "Equal") else t
        m = graph_model([helper.make_node(op, ["a", "b"], ["c"])], [vi("a", t, [4, 6]), vi("b", t, [4, 6])],
                        [vi("c", out_t, [4, 6])])
        assert_same(open_session(m, path).run(None, {"a": a, "b": b})[0], run_ort(m, {"a": a, "b": b})[0],
                    rtol=1e-3 if dtype == np.float16 else 1e-6, what=f"{op} {np.dtype(dtype).name}")


def test_strings_in_and_out(path):
    m = identity_model(TensorProto.STRING, [2, 2])
    s = open_session(m, path)
    for x in (np.array([["a", "bé"], ["", "日本"]]),                 # '<U' array
              np.array([[b"a", b"b\xc3\xa9"], [b"", b"x"]]),      # '|S' array: UTF-8 bytes
              np.array([["a", 7], [b"z", "q"]], dtype=object)):   # objects: str(), bytes decoded
        got = s.run(None, {"x": x})[0]
        want = np.array([[v.decode() if isinstance(v, bytes) else str(v) for v in row] for row in x.tolist()],
                        dtype=object)
        assert got.dtype == object and got.shape == (2, 2)
        assert got.tolist() == want.tolist()
        assert all(type(v) is str for v in got.reshape(-1))
    x = np.array([["p", "q"], ["r", "s"]])
    assert s.run(None, {"x": x})[0].tolist() == run_ort(m, {"x": x})[0].tolist()
    # a non-contiguous string array is read in logical order
    xt = np.array([["a", "b"], ["c", "d"]]).T
    assert s.run(None, {"x": xt})[0].tolist() == [["a", "c"], ["b", "d"]]


def test_string_op_against_ort(path):
    m = graph_model([helper.make_node("StringConcat", ["a", "b"], ["c"])],
                    [vi("a", TensorProto.STRING, [3]), vi("b", TensorProto.STRING, [3])],
                    [vi("c", TensorProto.STRING, [3])], opset=20, ir=9)
    feeds = {"a": np.array(["x", "é", ""], dtype=object), "b": np.array(["1", "2", "3"], dtype=object)}
    got = open_session(m, path).run(None, feeds)[0]
    assert got.tolist() == run_ort(m, feeds)[0].tolist() == ["x1", "é2", "3"]


def test_bfloat16_output_is_float32(path):
    x = np.array([1.5, -2.0, 0.25, 3.0, 1.0 + 2 ** -12, 1e30], np.float32)
    m = graph_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.BFLOAT16)],
                    [vi("x", TensorProto.FLOAT, [6])], [vi("y", TensorProto.BFLOAT16, [6])])
    got = open_session(m, path).run(None, {"x": x})[0]
    assert got.dtype == np.float32 and got.shape == (6,)
    np.testing.assert_array_equal(got[:4], x[:4])        # exactly representable in bfloat16
    assert got[4] == 1.0                                # rounds to the nearest bfloat16
    np.testing.assert_allclose(got[5], 1e30, rtol=2 ** -8)
    # the bits are a bfloat16's: the low 16 bits of each float32 are zero
    assert not np.any(got.view(np.uint32) & 0xFFFF)


def test_unsupported_output_dtype_error(path):
    m = graph_model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.FLOAT8E4M3FN)],
                    [vi("x", TensorProto.FLOAT, [2])], [vi("y", TensorProto.FLOAT8E4M3FN, [2])], opset=19, ir=9)
    s = open_session(m, path)
    msg = kiln_error(lambda: s.run(None, {"x": np.ones(2, np.float32)}))
    assert msg == "output of type code %d cannot be returned to numpy" % TensorProto.FLOAT8E4M3FN


# ---------------------------------------------------------------- shapes: 0-d, empty, layouts

@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float16, "str"])
def test_zero_d_stays_zero_d(path, dtype):
    if dtype == "str":
        x, m = np.array("héllo"), identity_model(TensorProto.STRING, [])
    else:
        x, m = np.array(3, dtype=dtype), identity_model(dtype, [])
    got = open_session(m, path).run(None, {"x": x})[0]
    assert got.ndim == 0 and got.shape == ()
    want = run_ort(m, {"x": x})[0]
    assert got.shape == want.shape and got.tolist() == want.tolist()


def test_zero_d_result_of_a_reduction(path):
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    m = graph_model([helper.make_node("ReduceSum", ["x"], ["y"], keepdims=0)],
                    [vi("x", TensorProto.FLOAT, [2, 3])], [vi("y", TensorProto.FLOAT, [])])
    got = open_session(m, path).run(None, {"x": x})[0]
    assert got.shape == () and got == 15.0


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float16, "str"])
def test_empty_tensors(path, dtype):
    if dtype == "str":
        x, m = np.zeros((0, 3), dtype="<U1"), identity_model(TensorProto.STRING, [None, 3])
    else:
        x, m = np.zeros((0, 3), dtype=dtype), identity_model(dtype, [None, 3])
    got = open_session(m, path).run(None, {"x": x})[0]
    want = run_ort(m, {"x": x})[0]
    assert got.shape == (0, 3) == want.shape and got.dtype == want.dtype


def test_non_contiguous_unaligned_and_converted_feeds(path):
    rng = np.random.default_rng(3)
    m = graph_model([helper.make_node("MatMul", ["a", "b"], ["c"])],
                    [vi("a", TensorProto.FLOAT, [None, 4]), vi("b", TensorProto.FLOAT, [4, None])],
                    [vi("c", TensorProto.FLOAT, None)])
    s = open_session(m, path)
    big = rand(rng, (8, 8))
    a = big[::2, 1:5]                                      # strided view
    b = big[:4, :3].T.copy().T                             # Fortran order
    raw = np.zeros(4 * 6 * 4 + 1, np.uint8)[1:]            # misaligned float32 buffer
    c = np.frombuffer(raw.data, dtype=np.float32).reshape(4, 6)
    c[...] = rand(rng, (4, 6))
    assert not c.flags.aligned
    for fa, fb in ((a, b), (a, c)):
        got = s.run(None, {"a": fa, "b": fb})[0]
        want = run_ort(m, {"a": np.ascontiguousarray(fa), "b": np.ascontiguousarray(fb)})[0]
        assert_same(got, want, rtol=1e-5, atol=1e-5)
    # nested lists go through np.asarray: float64, so a double model takes them
    md = identity_model(np.float64, [2, 2])
    assert_same(open_session(md, path).run(None, {"x": [[1, 2], [3.5, 4]]})[0], np.array([[1, 2], [3.5, 4]]))
    # a Python scalar becomes a 0-d int64
    mi = identity_model(np.int64, [])
    got = open_session(mi, path).run(None, {"x": 7})[0]
    assert got.shape == () and got.dtype == np.int64 and got == 7


# ---------------------------------------------------------------- sequences and optionals

def test_sequence_outputs(path):
    x = np.arange(12, dtype=np.float32).reshape(6, 2)
    split = np.array([1, 2, 3], np.int64)
    nodes = [helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=0),
             helper.make_node("SequenceEmpty", [], ["empty"], dtype=TensorProto.INT64),
             helper.make_node("Identity", ["x"], ["y"])]
    m = graph_model(nodes, [vi("x", TensorProto.FLOAT, [6, 2]), vi("split", TensorProto.INT64, [3])],
                    [helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None),
                     helper.make_tensor_sequence_value_info("empty", TensorProto.INT64, None),
                     vi("y", TensorProto.FLOAT, [6, 2])])
    s = open_session(m, path)
    got = s.run(None, {"x": x, "split": split})
    want = run_ort(m, {"x": x, "split": split})
    assert isinstance(got[0], list) and len(got[0]) == 3
    for g, w in zip(got[0], want[0]):
        assert_same(g, w)
    assert got[1] == [] == list(want[1])
    assert_same(got[2], want[2])
    outs = {o.name: o.type for o in s.get_outputs()}
    assert outs["seq"] == "seq(tensor(float))" and outs["y"] == "tensor(float)"
    assert outs["empty"].startswith("seq(")
    # items outlive the session and each other
    items = got[0]
    del got, s
    gc.collect()
    np.testing.assert_array_equal(items[2], x[3:])
    first = items[0].copy()
    del items[1:]
    gc.collect()
    np.testing.assert_array_equal(items[0], first)


def test_string_sequence_output(path):
    x = np.array(["a", "bb", "ccc", "dddd"], dtype=object)
    m = graph_model([helper.make_node("SplitToSequence", ["x"], ["seq"], axis=0, keepdims=0)],
                    [vi("x", TensorProto.STRING, [4])],
                    [helper.make_tensor_sequence_value_info("seq", TensorProto.STRING, None)])
    got = open_session(m, path).run(None, {"x": x})[0]
    assert [g.shape for g in got] == [()] * 4
    assert [g.item() for g in got] == ["a", "bb", "ccc", "dddd"]


def test_empty_optional_is_none(path):
    opt_t = helper.make_optional_type_proto(helper.make_tensor_type_proto(TensorProto.FLOAT, None))
    nodes = [helper.make_node("Optional", [], ["o"], type=helper.make_tensor_type_proto(TensorProto.FLOAT, None)),
             helper.make_node("Optional", ["x"], ["p"]),
             helper.make_node("Identity", ["x"], ["y"])]
    m = graph_model(nodes, [vi("x", TensorProto.FLOAT, [2])],
                    [helper.make_value_info("o", opt_t), helper.make_value_info("p", opt_t),
                     vi("y", TensorProto.FLOAT, [2])])
    x = np.array([1.0, 2.0], np.float32)
    got = open_session(m, path).run(None, {"x": x})
    want = run_ort(m, {"x": x})
    assert got[0] is None and want[0] is None
    assert_same(got[1], want[1])
    assert_same(got[2], x)


# ---------------------------------------------------------------- call forms, names, metadata

def test_output_selection_and_call_forms(path):
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("Add", ["a", "b"], ["sum"]), helper.make_node("Mul", ["a", "b"], ["prod"])]
    m = graph_model(nodes, [vi("a", TensorProto.FLOAT, ["N", 3]), vi("b", TensorProto.FLOAT, ["N", 3])],
                    [vi("sum", TensorProto.FLOAT, ["N", 3]), vi("prod", TensorProto.FLOAT, ["N", 3])])
    s = open_session(m, path)
    a, b = rand(rng, (2, 3)), rand(rng, (2, 3))
    feeds = {"a": a, "b": b}
    np.testing.assert_allclose(s.run(["prod"], feeds)[0], a * b, rtol=1e-6)
    p, q = s.run(("prod", "sum"), feeds)
    np.testing.assert_allclose(p, a * b, rtol=1e-6)
    np.testing.assert_allclose(q, a + b, rtol=1e-6)
    d1, d2 = s.run(["sum", "sum"], feeds)                 # the same output twice: two arrays
    np.testing.assert_array_equal(d1, d2)
    d1[...] = 0
    assert np.any(d2 != 0)
    assert len(s.run([], feeds)) == 2                     # empty list: every output
    r = s.run(output_names=None, input_feed=feeds, run_options=None)
    np.testing.assert_allclose(r[1], a * b, rtol=1e-6)
    r = kiln.InferenceSession.run(s, None, feeds)         # through the class, as a plain method
    np.testing.assert_allclose(r[0], a + b, rtol=1e-6)
    r = s.run(None, types.MappingProxyType(feeds))        # any mapping with items()
    np.testing.assert_allclose(r[0], a + b, rtol=1e-6)
    r = s.run(None, {np.str_("a"): a, "b": b})            # keys go through str()
    np.testing.assert_allclose(r[0], a + b, rtol=1e-6)
    with pytest.raises(TypeError):
        s.run(None)
    with pytest.raises(AttributeError):
        s.run(None, [("a", a), ("b", b)])                 # not a mapping: no items()
    assert [i.name for i in s.get_inputs()] == ["a", "b"]
    assert s.get_inputs()[0].shape == ["N", 3] and s.get_outputs()[1].type == "tensor(float)"
    assert s.get_providers() == ["CPUExecutionProvider"]


def test_many_inputs_and_outputs(path):
    """More inputs and outputs than the extension keeps on its stack."""
    n = 13
    nodes = [helper.make_node("Neg", ["x%d" % i], ["y%d" % i]) for i in range(n)]
    m = graph_model(nodes, [vi("x%d" % i, TensorProto.FLOAT, [i + 1]) for i in range(n)],
                    [vi("y%d" % i, TensorProto.FLOAT, [i + 1]) for i in range(n)])
    s = open_session(m, path)
    feeds = {"x%d" % i: np.arange(i + 1, dtype=np.float32) for i in range(n)}
    got = s.run(None, feeds)
    assert len(got) == n
    for i in range(n):
        np.testing.assert_array_equal(got[i], -feeds["x%d" % i])
    names = ["y%d" % i for i in reversed(range(n))]
    got = s.run(names, feeds)
    for k, i in enumerate(reversed(range(n))):
        np.testing.assert_array_equal(got[k], -feeds["x%d" % i])


def test_metadata_and_stats_agree_across_paths(monkeypatch):
    example = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")
    seen = {}
    for p in PATHS:
        use_path(monkeypatch, p)
        s = kiln.InferenceSession(pathlib.Path(example), threads=1)
        before = s.plan_stats()
        s.run(None, {"x": np.ones((3, 4), np.float32)})
        seen[p] = ([(a.name, a.type, a.shape) for a in s.get_inputs()],
                   [(a.name, a.type, a.shape) for a in s.get_outputs()], before, s.plan_stats())
        s.close()
        assert s.plan_stats()["arena_bytes"] == 0
    assert seen["native"] == seen["ctypes"]
    ins, outs, before, after = seen["native"]
    assert ins == [("x", "tensor(float)", ["N", 4])] and outs == [("y", "tensor(float)", ["N", 3])]
    assert list(after) == ["arena_bytes", "naive_bytes", "initializer_bytes", "copied_initializer_bytes",
                           "nodes", "folded_nodes"]
    assert after["nodes"] > 0 and after["initializer_bytes"] > 0


@pytest.mark.parametrize("form", ["bytes", "bytearray", "memoryview", "path", "str"])
def test_model_sources(path, form, tmp_path):
    m = add_model()
    data = m.SerializeToString()
    f = tmp_path / "add.onnx"
    f.write_bytes(data)
    src = {"bytes": data, "bytearray": bytearray(data), "memoryview": memoryview(data), "path": f,
           "str": str(f)}[form]
    s = kiln.InferenceSession(src, threads=1, opt_level=0, sess_options=types.SimpleNamespace(intra_op_num_threads=2))
    if isinstance(src, bytearray):
        src[:] = b"\0" * len(src)                           # the session holds its own copy
    a = np.arange(4, dtype=np.float32)
    np.testing.assert_array_equal(s.run(None, {"a": a, "b": a})[0], 2 * a)


# ---------------------------------------------------------------- errors: same message on both paths

def error_messages(monkeypatch, tmp_path):
    """Each failing call's KilnError message, per path."""
    m = add_model()
    data = m.SerializeToString()
    good = {"a": np.ones(4, np.float32), "b": np.ones(4, np.float32)}
    res = {}
    for p in PATHS:
        use_path(monkeypatch, p)
        s = kiln.InferenceSession(data, threads=1)
        msgs = {
            "unknown input": kiln_error(lambda: s.run(None, dict(good, zz=np.ones(4, np.float32)))),
            "missing input": kiln_error(lambda: s.run(None, {"a": good["a"]})),
            "wrong dtype": kiln_error(lambda: s.run(None, {"a": np.ones(4), "b": good["b"]})),
            "wrong shape": kiln_error(lambda: s.run(None, {"a": np.ones(5, np.float32), "b": good["b"]})),
            "unknown output": kiln_error(lambda: s.run(["nope"], good)),
            "datetime": kiln_error(lambda: s.run(None, {"a": np.zeros(4, "datetime64[s]"), "b": good["b"]})),
            "big endian": kiln_error(lambda: s.run(None, {"a": np.ones(4, ">f4"), "b": good["b"]})),
            "structured": kiln_error(lambda: s.run(None, {"a": np.zeros(4, "i4,f4"), "b": good["b"]})),
            "bad bytes": kiln_error(lambda: kiln.InferenceSession(b"\x08\x07garbage", threads=1)),
            "no file": kiln_error(lambda: kiln.InferenceSession(str(tmp_path / "missing.onnx"))),
            "provider": kiln_error(lambda: kiln.InferenceSession(data, providers=["TPUExecutionProvider"])),
        }
        s.close()
        msgs["closed"] = kiln_error(lambda: s.run(None, good))
        s.close()                                           # twice is fine
        res[p] = msgs
    return res


def test_errors_same_on_both_paths(monkeypatch, tmp_path):
    res = error_messages(monkeypatch, tmp_path)
    if "native" in res:
        assert res["native"] == res["ctypes"]
    msgs = res["ctypes"]
    assert "zz" in msgs["unknown input"]
    assert "'b'" in msgs["missing input"] and "missing" in msgs["missing input"]
    assert "float" in msgs["wrong dtype"] and "double" in msgs["wrong dtype"] or "float64" in msgs["wrong dtype"]
    assert "nope" in msgs["unknown output"]
    assert msgs["datetime"] == "input 'a': unsupported numpy dtype datetime64[s]"
    assert msgs["big endian"] == "input 'a': unsupported numpy dtype >f4"
    assert msgs["closed"] == "session is closed"
    assert "missing.onnx" in msgs["no file"]
    assert "TPUExecutionProvider" in msgs["provider"]
    assert all(isinstance(v, str) and v for v in msgs.values())


def test_session_usable_after_errors(path):
    s = open_session(add_model(), path)
    a = np.arange(4, dtype=np.float32)
    for _ in range(3):
        kiln_error(lambda: s.run(None, {"a": a}))
        with pytest.raises(UnicodeEncodeError):           # a name that is not valid UTF-8
            s.run(None, {"a\udc80": a, "b": a})
        np.testing.assert_array_equal(s.run(None, {"a": a, "b": a})[0], 2 * a)


# ---------------------------------------------------------------- ownership of outputs

def test_outputs_own_their_memory(path):
    x = np.arange(1000, dtype=np.float32)
    s = open_session(identity_model(np.float32, [1000]), path)
    y = s.run(None, {"x": x})[0]
    # kiln's buffer, handed over without a copy on both paths (the ctypes path copied it once
    # more: 0.6 ms a run for a 3 MB output)
    assert y.flags.writeable and not y.flags.owndata
    if path == "native":
        assert type(y.base).__name__ == "PyCapsule"
    y[:] = -1                                              # writing it touches neither x nor later runs
    np.testing.assert_array_equal(x, np.arange(1000))
    np.testing.assert_array_equal(s.run(None, {"x": x})[0], x)
    view = y[10:20]
    del y, s
    gc.collect()
    np.testing.assert_array_equal(view, -1)               # a view keeps the buffer alive


# ---------------------------------------------------------------- threads

def test_one_session_from_many_threads(path):
    m = graph_model([helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
                    [vi("x", TensorProto.FLOAT, ["N", 32])], [vi("y", TensorProto.FLOAT, ["N", 16])],
                    inits=[onnx.numpy_helper.from_array(rand(np.random.default_rng(5), (32, 16)), "w")])
    s = open_session(m, path, threads=2)
    w = onnx.numpy_helper.to_array(m.graph.initializer[0])
    errors = []

    def work(seed):
        rng = np.random.default_rng(seed)
        try:
            for i in range(60):
                x = rand(rng, (1 + (seed + i) % 5, 32))
                y = s.run(None, {"x": x})[0]
                np.testing.assert_allclose(y, np.maximum(x @ w, 0), rtol=1e-4, atol=1e-4)
        except Exception as e:  # noqa: BLE001 - reported from the main thread
            errors.append(e)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_close_while_other_threads_run(path):
    """close() while runs are in flight: they finish or report a closed session, nothing crashes
    (the session is released by the last run in flight)."""
    m = graph_model([helper.make_node("MatMul", ["x", "x"], ["y"])], [vi("x", TensorProto.FLOAT, [64, 64])],
                    [vi("y", TensorProto.FLOAT, [64, 64])])
    s = open_session(m, path)
    x = np.ones((64, 64), np.float32)
    outcome = []
    started = [threading.Event() for _ in range(3)]

    def work(k):
        for i in range(5000):
            try:
                y = s.run(None, {"x": x})[0]
                assert y[0, 0] == 64
            except kiln.KilnError as e:
                outcome.append(str(e))
                return
            started[k].set()
        outcome.append("done")

    threads = [threading.Thread(target=work, args=(k,)) for k in range(3)]
    for t in threads:
        t.start()
    for e in started:
        e.wait(10)
    s.close()
    for t in threads:
        t.join()
    assert len(outcome) == 3 and all(o in ("done", "session is closed") for o in outcome), outcome
    assert kiln_error(lambda: s.run(None, {"x": x})) == "session is closed"


# ---------------------------------------------------------------- memory

def rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(UNDER_ASAN, reason="ASan's quarantine keeps freed memory resident")
def test_no_leak_over_many_runs(path):
    """1000 runs with 256 KiB, string and sequence outputs: a leak of any output would add hundreds
    of MiB; the resident size may only wobble."""
    n = 1 << 16
    nodes = [helper.make_node("Neg", ["x"], ["y"]),
             helper.make_node("SplitToSequence", ["x", "split"], ["seq"], axis=0),
             helper.make_node("Identity", ["s"], ["t"])]
    m = graph_model(nodes, [vi("x", TensorProto.FLOAT, [n]), vi("split", TensorProto.INT64, [2]),
                            vi("s", TensorProto.STRING, [64])],
                    [vi("y", TensorProto.FLOAT, [n]),
                     helper.make_tensor_sequence_value_info("seq", TensorProto.FLOAT, None),
                     vi("t", TensorProto.STRING, [64])])
    s = open_session(m, path)
    feeds = {"x": np.ones(n, np.float32), "split": np.array([n // 2, n // 2], np.int64),
             "s": np.array(["string number %d" % i for i in range(64)], dtype=object)}
    bad = {"x": np.ones(n, np.float64), "split": feeds["split"], "s": feeds["s"]}

    def burst(k):
        for _ in range(k):
            y, seq, t = s.run(None, feeds)
            assert y[0] == -1 and len(seq) == 2 and t[63] == "string number 63"
            with pytest.raises(kiln.KilnError):
                s.run(None, bad)

    burst(100)
    gc.collect()
    before = rss_bytes()
    burst(1000)
    gc.collect()
    grown = rss_bytes() - before
    assert grown < 24 << 20, "resident memory grew by %.1f MiB over 1000 runs" % (grown / 2 ** 20)

