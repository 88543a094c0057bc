"""Strings carry their length: NUL bytes survive initializers, inputs, outputs, the ONNX writer, the
C API, both Python paths and the CLI's .npy files, and every string kernel reads whole strings
(checked against onnxruntime on random strings full of NULs). Bytes that are not UTF-8 are refused
where onnxruntime refuses them (a str output), with a kiln error that says where."""
import ctypes
import os
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from util import ROOT, kiln, run_ort

BUILD = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
KILN = os.path.join(BUILD, "kiln")
PATHS = ["native", "ctypes"]
KilnError = kiln._session.KilnError

# characters the random strings are made of: NUL among them, and UTF-8 of more than one byte
ALPHABET = ["\x00", "a", "b", "A", "z", " ", "\t", ",", "\u00e9", "\u00c9", "\u03a9", "7"]


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "ctypes":
        monkeypatch.setenv("KILN_PYTHON_CTYPES", "1")
    else:
        monkeypatch.delenv("KILN_PYTHON_CTYPES", raising=False)
        if kiln._session._native_module() is None:
            pytest.skip("kiln._native is not built (the ctypes path is tested on its own)")
    return request.param


@pytest.fixture
def rng():
    seed = int.from_bytes(os.urandom(4), "little")
    print("seed", seed)
    return np.random.default_rng(seed)


def rand_strings(rng, shape, max_len=6, alphabet=ALPHABET):
    """Random str elements, most holding a NUL (one in three starts or ends with one)."""
    n = int(np.prod(shape)) if shape else 1
    out = []
    for _ in range(n):
        s = "".join(rng.choice(alphabet, size=int(rng.integers(0, max_len + 1))))
        r = rng.integers(0, 3)
        s = "\x00" + s if r == 0 else s + "\x00" if r == 1 else s
        out.append(s)
    return np.array(out, dtype=object).reshape(shape)


def model(nodes, inputs, outputs, inits=(), opset=20, extra=None):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (extra or {}).items()]
    m = helper.make_model(g, opset_imports=ops)
    m.ir_version = 10
    return m.SerializeToString()


def svi(name, shape=None):
    return helper.make_tensor_value_info(name, TensorProto.STRING, shape)


def str_init(name, values, shape=None):
    """A string initializer written field by field (onnx.helper would pass the values through a numpy
    'S' array, which drops trailing NULs)."""
    t = TensorProto()
    t.name, t.data_type = name, TensorProto.STRING
    t.dims.extend(shape if shape is not None else [len(values)])
    t.string_data.extend(v.encode() if isinstance(v, str) else v for v in values)
    return t


def kiln_run(m, feeds):
    return kiln.InferenceSession(m).run(None, feeds)


def same(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if isinstance(w, (list, dict)):
            assert g == w
            continue
        g, w = np.asarray(g), np.asarray(w)
        assert g.shape == w.shape and g.dtype == w.dtype, (g.shape, w.shape, g.dtype, w.dtype)
        assert g.tolist() == w.tolist()


def identity_model(init_values):
    """y = Identity(x) and z = Identity(initializer c)."""
    return model([helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Identity", ["c"], ["z"])],
                 [svi("x")], [svi("y"), svi("z")], [str_init("c", init_values)])


# ---------------------------------------------------------------- round trips


def test_nul_round_trip_initializer_input_output(path, rng):
    init = ["a\x00b", "\x00", "", "x\x00\x00", "\u00e9\x00\u03a9"]
    m = identity_model(init)
    x = rand_strings(rng, (3, 4))
    got, want = kiln_run(m, {"x": x}), run_ort(m, {"x": x})
    same(got, want)
    assert got[1].tolist() == init  # not truncated at the NULs
    assert got[0].tolist() == x.tolist()


@pytest.mark.parametrize("kind", ["object_str", "object_bytes", "S", "U"])
def test_numpy_string_kinds_keep_nuls(path, kind):
    values = ["a\x00b", "\x00c", "", "d\x00\u00e9"]
    if kind == "object_str":
        x = np.array(values, dtype=object)
    elif kind == "object_bytes":
        x = np.array([v.encode() for v in values], dtype=object)
    elif kind == "S":
        x = np.array([v.encode() for v in values])
    else:
        x = np.array(values)
    # numpy itself drops the NULs that pad 'S'/'U' items (trailing ones); those inside stay
    expect = [v.decode() if isinstance(v, bytes) else v for v in x.tolist()]
    got = kiln_run(identity_model(["c"]), {"x": x})[0]
    assert got.dtype == object and got.tolist() == expect
    assert got.tolist()[0] == "a\x00b"


def test_bytes_input_is_not_decoded(path):
    """bytes go in as they are: invalid UTF-8 reaches the kernels (Equal here) unchanged."""
    m = model([helper.make_node("Equal", ["x", "c"], ["y"])], [svi("x", [3])],
              [helper.make_tensor_value_info("y", TensorProto.BOOL, [3])], [str_init("c", [b"\xff\x00", b"a", b"\xfe"])])
    got = kiln_run(m, {"x": np.array([b"\xff\x00", b"a\x00", b"\xfe"], dtype=object)})[0]
    assert got.tolist() == [True, False, True]


def test_constant_value_strings_keep_nuls(path):
    node = helper.make_node("Constant", [], ["y"], value_strings=[b"a\x00b", b"\x00"])
    node2 = helper.make_node("Constant", [], ["z"], value_string=b"q\x00r")
    m = model([node, node2], [], [svi("y"), svi("z")])
    got, want = kiln_run(m, {}), run_ort(m, {})
    same(got, want)
    assert got[0].tolist() == ["a\x00b", "\x00"] and got[1].tolist() == "q\x00r"


def test_writer_keeps_nuls(tmp_path):
    """kiln convert writes string initializers and string-list attributes with their NUL bytes."""
    nodes = [helper.make_node("Identity", ["c"], ["z"]),
             helper.make_node("StringNormalizer", ["x"], ["y"], stopwords=[b"s\x00t"], case_change_action="NONE",
                              locale="C.UTF-8")]
    src = tmp_path / "m.onnx"
    src.write_bytes(model(nodes, [svi("x", [3])], [svi("y"), svi("z")], [str_init("c", [b"a\x00b", b"\x00"])],
                          opset=17))
    out = tmp_path / "rt.onnx"
    r = subprocess.run([KILN, "convert", str(src), str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    rt = onnx.load(str(out))
    assert list(rt.graph.initializer[0].string_data) == [b"a\x00b", b"\x00"]
    sn = [n for n in rt.graph.node if n.op_type == "StringNormalizer"][0]
    assert list(sn.attribute[[a.name for a in sn.attribute].index("stopwords")].strings) == [b"s\x00t"]
    x = np.array(["s\x00t", "s", "t"], dtype=object)
    same(kiln_run(out.read_bytes(), {"x": x}), run_ort(out.read_bytes(), {"x": x}))


def test_session_initializer_option_keeps_nuls(path):
    """A string initializer given in the session options (kiln_options.initializers) as sized strings."""
    lib = kiln._lib.load()
    views, keep = kiln._lib.string_views([b"p\x00q", b"\x00"], "test")
    dims = (ctypes.c_int64 * 1)(2)
    desc = kiln._lib.TensorDesc(kiln._lib.SIZED_STRING, 1, dims, ctypes.cast(views, ctypes.c_void_p), 0)
    opt = kiln._lib.Options()
    lib.kiln_options_init(ctypes.byref(opt))
    names = (ctypes.c_char_p * 1)(b"c")
    descs = (kiln._lib.TensorDesc * 1)(desc)
    opt.n_initializers, opt.initializer_names, opt.initializers = 1, names, descs
    data = identity_model(["u", "v"])
    h = ctypes.c_void_p()
    assert lib.kiln_session_open_bytes(data, len(data), ctypes.byref(opt), ctypes.byref(h)) == 0, \
        lib.kiln_last_error()
    try:
        xs = (ctypes.c_char_p * 1)(b"k")
        xdesc = kiln._lib.TensorDesc(8, 1, (ctypes.c_int64 * 1)(1), ctypes.cast(xs, ctypes.c_void_p), 0)
        outs = (ctypes.c_void_p * 2)()
        assert lib.kiln_run(h, 1, (ctypes.c_char_p * 1)(b"x"), ctypes.byref(xdesc), 0, None, outs) == 0
        z = kiln._lib.decode_strings(lib, lib.kiln_value_data(outs[1]), 2, "z")
        assert z == ["p\x00q", "\x00"]
        for o in outs:
            lib.kiln_value_free(o)
    finally:
        lib.kiln_session_close(h)


def test_maps_keep_nuls(path, rng):
    """ZipMap's string labels and a DictVectorizer's string keys, NULs included."""
    labels = [b"a\x00", b"a", b"\x00b", b"b"]
    zm = model([helper.make_node("ZipMap", ["x"], ["y"], domain="ai.onnx.ml", classlabels_strings=labels)],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 4])],
               [helper.make_value_info("y", helper.make_sequence_type_proto(helper.make_map_type_proto(
                   TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))],
               opset=17, extra={"ai.onnx.ml": 1})
    x = rng.random((2, 4), dtype=np.float32) + 0.5
    got, want = kiln_run(zm, {"x": x}), run_ort(zm, {"x": x})
    assert [sorted(d) for d in got[0]] == [sorted(d) for d in want[0]]
    assert [{k: pytest.approx(v) for k, v in d.items()} for d in got[0]] == want[0]
    assert "a\x00" in got[0][0] and "\x00b" in got[0][0]

    vocab = ["k\x00", "k", "\x00k"]
    dv = model([helper.make_node("DictVectorizer", ["m"], ["y"], domain="ai.onnx.ml", string_vocabulary=vocab)],
               [helper.make_tensor_value_info("m", onnx.TypeProto.MAP, None)] if False else
               [helper.make_value_info("m", helper.make_map_type_proto(
                   TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, [])))],
               [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], opset=17, extra={"ai.onnx.ml": 1})
    feed = {"k\x00": 1.5, "\x00k": 2.5, "k": 3.5}
    got, want = kiln_run(dv, {"m": feed}), run_ort(dv, {"m": feed})
    np.testing.assert_array_equal(got[0], want[0])
    assert got[0].tolist() == [[1.5, 3.5, 2.5]]
    feed_bytes = {b"k\x00": 1.5, b"\x00k": 2.5}
    assert kiln_run(dv, {"m": feed_bytes})[0].tolist() == [[1.5, 0.0, 2.5]]


# ---------------------------------------------------------------- string kernels vs onnxruntime


def one(op, n_in, attrs=None, domain="", opset=20, out_type=TensorProto.STRING, extra=None, in_shapes=None):
    ins = [svi(f"x{i}", in_shapes[i] if in_shapes else None) for i in range(n_in)]
    node = helper.make_node(op, [f"x{i}" for i in range(n_in)], ["y"], domain=domain or None, **(attrs or {}))
    return model([node], ins, [helper.make_tensor_value_info("y", out_type, None)], opset=opset, extra=extra)


def check(m, feeds):
    same(kiln_run(m, feeds), run_ort(m, feeds))


def test_equal_on_nuls(path, rng):
    m = model([helper.make_node("Equal", ["a", "b"], ["y"])], [svi("a"), svi("b")],
              [helper.make_tensor_value_info("y", TensorProto.BOOL, None)], opset=19)
    for shape_a, shape_b in [((6,), (6,)), ((2, 3), (3,)), ((4, 1), (1, 5))]:
        a = rand_strings(rng, shape_a, max_len=2, alphabet=["\x00", "a"])
        b = rand_strings(rng, shape_b, max_len=2, alphabet=["\x00", "a"])
        check(m, {"a": a, "b": b})
    got = kiln_run(m, {"a": np.array(["a\x00b", "a\x00b", ""], dtype=object),
                       "b": np.array(["a\x00c", "a\x00b", "\x00"], dtype=object)})[0]
    assert got.tolist() == [False, True, False]


def test_where_on_nuls(path, rng):
    m = model([helper.make_node("Where", ["c", "a", "b"], ["y"])],
              [helper.make_tensor_value_info("c", TensorProto.BOOL, None), svi("a"), svi("b")], [svi("y")])
    for shape in [(5,), (2, 3)]:
        c = rng.random(shape) < 0.5
        check(m, {"c": c, "a": rand_strings(rng, shape), "b": rand_strings(rng, shape[-1:])})


@pytest.mark.parametrize("op", ["Gather", "Concat", "Reshape", "Transpose", "Slice", "Expand", "Tile",
                                "Identity", "Squeeze", "Flatten", "Split", "GatherElements", "ScatterElements",
                                "Pad", "Compress", "ReverseSequence"])
def test_copies_keep_nuls(path, rng, op):
    x = rand_strings(rng, (3, 4))
    a = {}
    if op == "Gather":
        ins, feeds = ["x", "i"], {"i": rng.integers(-3, 3, size=(2, 2)).astype(np.int64)}
        a = {"axis": 0}
    elif op == "Concat":
        ins, feeds, a = ["x", "x2"], {"x2": rand_strings(rng, (2, 4))}, {"axis": 0}
    elif op == "Reshape":
        ins, feeds = ["x", "s"], {"s": np.array([2, -1], np.int64)}
    elif op == "Transpose":
        ins, feeds = ["x"], {}
    elif op == "Slice":
        ins, feeds = ["x", "st", "en"], {"st": np.array([1, 0], np.int64), "en": np.array([3, 3], np.int64)}
    elif op == "Expand":
        x = rand_strings(rng, (3, 1))
        ins, feeds = ["x", "s"], {"s": np.array([2, 3, 4], np.int64)}
    elif op == "Tile":
        ins, feeds = ["x", "r"], {"r": np.array([2, 1], np.int64)}
    elif op == "Squeeze":
        x = rand_strings(rng, (3, 1))
        ins, feeds = ["x"], {}
    elif op == "Split":
        ins, feeds, a = ["x"], {}, {"axis": 1, "num_outputs": 2}
    elif op == "GatherElements":
        ins, feeds = ["x", "i"], {"i": rng.integers(0, 3, size=(2, 4)).astype(np.int64)}
    elif op == "ScatterElements":
        ins = ["x", "i", "u"]
        feeds = {"i": np.array([[0, 1, 2, 0], [2, 0, 1, 1]], np.int64), "u": rand_strings(rng, (2, 4))}
    elif op == "Pad":
        ins, feeds = ["x", "p"], {"p": np.array([1, 0, 0, 2], np.int64)}
    elif op == "Compress":
        ins, feeds, a = ["x", "c"], {"c": np.array([True, False, True])}, {"axis": 0}
    elif op == "ReverseSequence":
        ins, feeds = ["x", "l"], {"l": np.array([2, 3, 1, 3], np.int64)}
        a = {"batch_axis": 1, "time_axis": 0}
    else:
        ins, feeds = ["x"], {}
    feeds["x"] = x
    outs = ["y", "y2"] if op == "Split" else ["y"]
    vis = []
    for n in ins:
        v = feeds[n]
        vis.append(svi(n) if v.dtype == object else
                   helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(v.dtype), v.shape))
    m = model([helper.make_node(op, ins, outs, **a)], vis, [svi(o) for o in outs], opset=18)
    if op == "Gather":  # onnxruntime 1.32 copies only the first string of each gathered row
        assert kiln_run(m, feeds)[0].tolist() == np.take(x, feeds["i"], axis=0).tolist()
    elif op == "Pad":  # onnxruntime has no string Pad
        assert kiln_run(m, feeds)[0].tolist() == np.pad(x, ((1, 0), (0, 2)), constant_values="").tolist()
    else:
        check(m, feeds)


def test_unique_on_nuls(path, rng):
    m = model([helper.make_node("Unique", ["x"], ["y", "i", "inv", "c"], sorted=1)], [svi("x")],
              [svi("y")] + [helper.make_tensor_value_info(n, TensorProto.INT64, None) for n in ("i", "inv", "c")])
    x = rand_strings(rng, (12,), max_len=2, alphabet=["\x00", "a", "b"])
    check(m, {"x": x})
    got = kiln_run(m, {"x": np.array(["a", "a\x00", "a", "\x00"], dtype=object)})[0]
    assert got.tolist() == ["\x00", "a", "a\x00"]  # byte order: a prefix first, NUL lowest


def test_cast_to_and_from_string(path, rng):
    to_s = model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.STRING)],
                 [helper.make_tensor_value_info("x", TensorProto.INT64, None)], [svi("y")])
    x = rng.integers(-1000, 1000, size=(2, 3)).astype(np.int64)
    check(to_s, {"x": x})
    s_to_s = model([helper.make_node("Cast", ["x"], ["y"], to=TensorProto.STRING)], [svi("x")], [svi("y")])
    check(s_to_s, {"x": rand_strings(rng, (4,))})
    for to in (TensorProto.FLOAT, TensorProto.INT64):
        from_s = model([helper.make_node("Cast", ["x"], ["y"], to=to)], [svi("x")],
                       [helper.make_tensor_value_info("y", to, None)])
        # onnxruntime reads a number up to the first NUL (std::stod / std::stoll on its C string)
        check(from_s, {"x": np.array(["12\x0034", "7", "-3\x00", "5.0"], dtype=object)})


@pytest.mark.parametrize("action", ["NONE", "LOWER", "UPPER"])
@pytest.mark.parametrize("sensitive", [0, 1])
def test_string_normalizer_on_nuls(path, rng, action, sensitive):
    stop = [b"a\x00", b"\x00", "\u00e9\x00".encode()]
    # C.UTF-8: the one UTF-8 locale installed here (onnxruntime fails on a missing en_US.UTF-8)
    m = one("StringNormalizer", 1, {"case_change_action": action, "is_case_sensitive": sensitive,
                                    "stopwords": stop, "locale": "C.UTF-8"}, opset=17)
    for shape in [(8,), (1, 6)]:
        x = rand_strings(rng, shape, max_len=2, alphabet=["\x00", "a", "A", "\u00e9", "\u00c9"])
        check(m, {"x0": x})


@pytest.mark.parametrize("delim", [None, ",", "\x00"])
def test_string_split_on_nuls(path, rng, delim):
    attrs = {} if delim is None else {"delimiter": delim}
    m = model([helper.make_node("StringSplit", ["x"], ["y", "n"], **attrs)], [svi("x")],
              [svi("y"), helper.make_tensor_value_info("n", TensorProto.INT64, None)])
    alphabet = ["\x00", "a", ","] if delim is not None else ["\x00", "a", "b", " "]
    x = rand_strings(rng, (2, 3), max_len=6, alphabet=alphabet)
    y, n = kiln_run(m, {"x": x})
    # kiln follows the ONNX reference (Python's str.split), which differs from onnxruntime on an
    # empty string (one part, not none); onnxruntime is compared where it agrees
    want = [s.split(delim) for s in x.flatten().tolist()]
    width = max(len(p) for p in want)
    assert y.shape == (2, 3, width) and n.tolist() == np.array([len(p) for p in want]).reshape(2, 3).tolist()
    assert y.reshape(6, width).tolist() == [p + [""] * (width - len(p)) for p in want]
    nonempty = np.array([s if s else "a" for s in x.flatten().tolist()], dtype=object).reshape(2, 3)
    same(kiln_run(m, {"x": nonempty}), run_ort(m, {"x": nonempty}))


def test_string_split_nul_delimiter(path):
    m = model([helper.make_node("StringSplit", ["x"], ["y", "n"], delimiter="\x00")], [svi("x")],
              [svi("y"), helper.make_tensor_value_info("n", TensorProto.INT64, None)])
    x = np.array(["a\x00b\x00", "c"], dtype=object)
    got = kiln_run(m, {"x": x})
    same(got, run_ort(m, {"x": x}))
    assert got[0].tolist() == [["a", "b", ""], ["c", "", ""]]


def test_string_concat_on_nuls(path, rng):
    m = one("StringConcat", 2)
    for sa, sb in [((5,), (5,)), ((2, 3), (3,)), ((2, 1), (1, 4))]:
        check(m, {"x0": rand_strings(rng, sa), "x1": rand_strings(rng, sb)})
    got = kiln_run(m, {"x0": np.array(["a\x00"], dtype=object), "x1": np.array(["\x00b"], dtype=object)})[0]
    assert got.tolist() == ["a\x00\x00b"]


def test_regex_full_match_on_nuls(path, rng):
    for pattern in ["a*", "[ab]+", "a.b", "\\w*", "[^b]*"]:
        m = one("RegexFullMatch", 1, {"pattern": pattern}, out_type=TensorProto.BOOL)
        x = rand_strings(rng, (10,), max_len=3, alphabet=["\x00", "a", "b"])
        x[0], x[1], x[2] = "ab", "a\x00", "aab"
        check(m, {"x0": x})


@pytest.mark.parametrize("pattern", ["a\\x00b", "[\\x00]", "a\x00b"])
def test_regex_nul_in_pattern_is_refused(pattern):
    """The C library's regex takes NUL-terminated patterns: a NUL in one fails clearly, never as a
    shorter pattern."""
    m = one("RegexFullMatch", 1, {"pattern": pattern}, out_type=TensorProto.BOOL)
    with pytest.raises(KilnError, match=r"NUL byte\) is not supported in patterns"):
        kiln.InferenceSession(m)


def test_label_encoder_on_nuls(path, rng):
    keys = [b"k\x00", b"k", b"\x00"]
    m = one("LabelEncoder", 1, {"keys_strings": keys, "values_int64s": [1, 2, 3], "default_int64": -7},
            domain="ai.onnx.ml", opset=17, out_type=TensorProto.INT64, extra={"ai.onnx.ml": 2})
    x = np.array(["k\x00", "k", "\x00", "k\x00\x00", ""], dtype=object)
    check(m, {"x0": x})
    inv = model([helper.make_node("LabelEncoder", ["x"], ["y"], domain="ai.onnx.ml", keys_int64s=[1, 2],
                                  values_strings=[b"v\x00", b"\x00w"], default_string="d\x00")],
                [helper.make_tensor_value_info("x", TensorProto.INT64, None)], [svi("y")], opset=17,
                extra={"ai.onnx.ml": 2})
    xi = rng.integers(0, 4, size=(6,)).astype(np.int64)
    check(inv, {"x": xi})
    assert kiln_run(inv, {"x": np.array([1, 3], np.int64)})[0].tolist() == ["v\x00", "d\x00"]


def test_category_mapper_on_nuls(path):
    attrs = {"cats_strings": [b"c\x00", b"c", b"\x00"], "cats_int64s": [5, 6, 7], "default_string": "n\x00"}
    m = one("CategoryMapper", 1, attrs, domain="ai.onnx.ml", opset=17, out_type=TensorProto.INT64,
            extra={"ai.onnx.ml": 1})
    check(m, {"x0": np.array(["c\x00", "c", "\x00", "c\x00\x00"], dtype=object)})
    back = model([helper.make_node("CategoryMapper", ["x"], ["y"], domain="ai.onnx.ml", **attrs)],
                 [helper.make_tensor_value_info("x", TensorProto.INT64, None)], [svi("y")], opset=17,
                 extra={"ai.onnx.ml": 1})
    xi = np.array([5, 6, 7, 9], np.int64)
    check(back, {"x": xi})
    assert kiln_run(back, {"x": xi})[0].tolist() == ["c\x00", "c", "\x00", "n\x00"]


def test_tokenizer_on_nuls(path, rng):
    for attrs in [{"separators": [" "], "mincharnum": 1}, {"tokenexp": "[a-z]+", "mincharnum": 1},
                  {"separators": [""], "mincharnum": 1}]:
        m = one("Tokenizer", 1, dict(attrs, mark=0, pad_value="#"), domain="com.microsoft", opset=17,
                extra={"com.microsoft": 1})
        x = rand_strings(rng, (2, 2), max_len=6, alphabet=["\x00", "a", "b", " "])
        check(m, {"x0": x})


def test_tfidf_on_nuls(path, rng):
    pool = [b"a\x00", b"b", b"\x00"]
    m = one("TfIdfVectorizer", 1, {"mode": "TF", "min_gram_length": 1, "max_gram_length": 1, "max_skip_count": 0,
                                   "ngram_counts": [0], "ngram_indexes": [0, 1, 2], "pool_strings": pool},
            opset=17, out_type=TensorProto.FLOAT)
    x = rand_strings(rng, (2, 5), max_len=1, alphabet=["\x00", "a", "b"])
    x[0, 0], x[0, 1] = "a\x00", "\x00"
    check(m, {"x0": x})


# ---------------------------------------------------------------- bytes that are not UTF-8


def test_invalid_utf8_output_is_a_kiln_error(path):
    """onnxruntime raises UnicodeDecodeError on a str output that is not UTF-8; kiln refuses it too,
    with a KilnError that names the element and the byte."""
    m = identity_model([b"ok", b"\xff\x00z"])
    x = np.array(["fine"], dtype=object)
    with pytest.raises(UnicodeDecodeError):
        run_ort(m, {"x": x})
    with pytest.raises(KilnError, match=r"element 1 is not valid UTF-8 \(byte 0xff at offset 0 of 3\)"):
        kiln_run(m, {"x": x})
    with pytest.raises(KilnError, match="not valid UTF-8"):  # bytes fed in come out as str
        kiln_run(identity_model(["c"]), {"x": np.array([b"\xc3"], dtype=object)})


def test_invalid_utf8_map_key_is_a_kiln_error(path):
    zm = model([helper.make_node("ZipMap", ["x"], ["y"], domain="ai.onnx.ml", classlabels_strings=[b"\xfe", b"b"])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2])],
               [helper.make_value_info("y", helper.make_sequence_type_proto(helper.make_map_type_proto(
                   TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))],
               opset=17, extra={"ai.onnx.ml": 1})
    with pytest.raises(KilnError, match="map string element 1 is not valid UTF-8"):
        kiln_run(zm, {"x": np.ones((1, 2), np.float32)})


def test_surrogate_input_is_a_kiln_error(path):
    m = identity_model(["c"])
    x = np.array(["ok", "\ud800"], dtype=object)
    with pytest.raises(UnicodeEncodeError):
        run_ort(m, {"x": x})
    with pytest.raises(KilnError, match=r"input 'x': string 1 cannot be encoded as UTF-8"):
        kiln_run(m, {"x": x})


def test_invalid_utf8_kept_for_non_string_outputs(path):
    """Kernels take any bytes: only a str output needs UTF-8."""
    m = one("RegexFullMatch", 1, {"pattern": "a+"}, out_type=TensorProto.BOOL)
    assert kiln_run(m, {"x0": np.array([b"\xff", b"aa"], dtype=object)})[0].tolist() == [False, True]


# ---------------------------------------------------------------- the C API


def test_c_api_example(tmp_path):
    exe = os.path.join(BUILD, "example_strings")
    src = tmp_path / "m.onnx"
    src.write_bytes(identity_model([b"a\x00b", b"\xff\xfe"]))
    r = subprocess.run([exe, str(src)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "sized y: 3:610062 0: 3:ff00fe",
        "sized z: 3:610062 2:fffe",
        "terminated y: 1:61 0: 1:ff",  # the NUL-terminated entry point: each string ends at its first NUL
        "terminated z: 3:610062 2:fffe",
        "tensor value: 3:610062 0: 3:ff00fe",
        "map keys (byte order): 1:6b=2 3:6b0061=3 3:6b007a=1",
    ]


def test_c_api_refuses_bad_strings():
    lib = kiln._lib.load()
    lib.kiln_value_strings.argtypes = [ctypes.c_void_p, ctypes.POINTER(kiln._lib.KilnString), ctypes.c_size_t]
    lib.kiln_value_strings.restype = ctypes.c_int
    bad = (kiln._lib.KilnString * 1)()
    bad[0].data, bad[0].len = None, 4
    dims = (ctypes.c_int64 * 1)(1)
    desc = kiln._lib.TensorDesc(kiln._lib.SIZED_STRING, 1, dims, ctypes.cast(bad, ctypes.c_void_p), 0)
    v = ctypes.c_void_p()
    assert lib.kiln_value_tensor_new(ctypes.byref(desc), ctypes.byref(v)) == 1
    assert b"string 0 has length 4 and no data" in lib.kiln_last_error()
    good = (kiln._lib.KilnString * 1)()
    good[0].data, good[0].len = ctypes.cast(ctypes.c_char_p(b"x\x00"), ctypes.c_void_p).value, 2
    desc.data = ctypes.cast(good, ctypes.c_void_p)
    assert lib.kiln_value_tensor_new(ctypes.byref(desc), ctypes.byref(v)) == 0
    out = (kiln._lib.KilnString * 2)()
    assert lib.kiln_value_strings(v, out, 2) == 1
    assert b"the tensor has 1 strings, n is 2" in lib.kiln_last_error()
    assert lib.kiln_value_strings(v, out, 1) == 0
    assert ctypes.string_at(out[0].data, out[0].len) == b"x\x00"
    lib.kiln_value_free(v)
    fdesc = kiln._lib.TensorDesc(1, 1, dims, ctypes.cast((ctypes.c_float * 1)(1.0), ctypes.c_void_p), 0)
    assert lib.kiln_value_tensor_new(ctypes.byref(fdesc), ctypes.byref(v)) == 0
    assert lib.kiln_value_strings(v, out, 1) == 1
    assert b"not a host string tensor" in lib.kiln_last_error()
    lib.kiln_value_free(v)


def test_sized_string_input_to_a_float_input_is_refused(path):
    m = model([helper.make_node("Identity", ["x"], ["y"])], [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    with pytest.raises(KilnError, match="input 'x'"):
        kiln_run(m, {"x": np.array(["a\x00"], dtype=object)})


# ---------------------------------------------------------------- the CLI's .npy files


@pytest.mark.parametrize("kind", ["S", "U"])
def test_cli_npy_round_trip(tmp_path, kind):
    m = tmp_path / "m.onnx"
    m.write_bytes(identity_model([b"a\x00b", b"\xff"]))
    if kind == "S":  # bytes stay bytes: no Latin-1 re-encoding of \xff or \xe9
        x = np.array([b"a\x00b", b"\xff\xe9", b"", b"\x00z"])
        want_y = x
    else:
        x = np.array(["a\x00b", "\u00e9\u03a9", "", "\x00z"])
        want_y = np.array([s.encode() for s in x.tolist()])
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "out"
    r = subprocess.run([KILN, "run", str(m), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(out)],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    y, z = np.load(out / "y.npy"), np.load(out / "z.npy")
    assert y.dtype.kind == "S" and y.tolist() == want_y.tolist()
    assert z.tolist() == [b"a\x00b", b"\xff"]
    assert "\\x00" in r.stdout  # the summary escapes NUL bytes rather than printing them


def test_cli_npy_refuses_surrogates(tmp_path):
    m = tmp_path / "m.onnx"
    m.write_bytes(identity_model(["c"]))
    x = np.array(["ok", "\ud800"])
    np.save(tmp_path / "x.npy", x)
    r = subprocess.run([KILN, "run", str(m), "--input", f"x={tmp_path / 'x.npy'}", "--output-dir", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "U+D800" in r.stderr and "UTF-8 cannot encode" in r.stderr


def test_c_api_sequence_of_sized_strings():
    """A seq(tensor(string)) input given as KILN_RANK_SEQUENCE with KILN_DTYPE_SIZED_STRING items."""
    lib = kiln._lib.load()
    seq_type = helper.make_sequence_type_proto(helper.make_tensor_type_proto(TensorProto.STRING, None))
    data = model([helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=0)], [helper.make_value_info("s", seq_type)],
                 [svi("y")], opset=18)
    items, keep = [], []
    for strs in ([b"a\x00", b"\x00b"], [b"c\x00\x00"]):
        views, owners = kiln._lib.string_views(strs, "item")
        dims = (ctypes.c_int64 * 1)(len(strs))
        keep += [views, owners, dims]
        items.append(kiln._lib.TensorDesc(kiln._lib.SIZED_STRING, 1, dims, ctypes.cast(views, ctypes.c_void_p), 0))
    arr = (kiln._lib.TensorDesc * 2)(*items)
    sdims = (ctypes.c_int64 * 1)(2)
    desc = kiln._lib.TensorDesc(kiln._lib.SIZED_STRING, kiln._lib.RANK_SEQUENCE, sdims, ctypes.cast(arr, ctypes.c_void_p), 0)
    h = ctypes.c_void_p()
    assert lib.kiln_session_open_bytes(data, len(data), None, ctypes.byref(h)) == 0, lib.kiln_last_error()
    try:
        outs = (ctypes.c_void_p * 1)()
        assert lib.kiln_run(h, 1, (ctypes.c_char_p * 1)(b"s"), ctypes.byref(desc), 0, None, outs) == 0, \
            lib.kiln_session_error(h)
        assert kiln._lib.decode_strings(lib, lib.kiln_value_data(outs[0]), 3, "y") == ["a\x00", "\x00b", "c\x00\x00"]
        lib.kiln_value_free(outs[0])
    finally:
        lib.kiln_session_close(h)


def test_cli_json_map_keys(tmp_path):
    """A map output written as JSON: NUL bytes escaped (\\u0000), bytes that are not UTF-8 as lone
    surrogates (\\udcXX, Python's surrogateescape), so json.load reads every key back."""
    import json
    zm = model([helper.make_node("ZipMap", ["x"], ["y"], domain="ai.onnx.ml",
                                 classlabels_strings=[b"a\x00b", b"\xff", "\u00e9".encode()])],
               [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])],
               [helper.make_value_info("y", helper.make_sequence_type_proto(helper.make_map_type_proto(
                   TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))))],
               opset=17, extra={"ai.onnx.ml": 1})
    (tmp_path / "m.onnx").write_bytes(zm)
    np.save(tmp_path / "x.npy", np.array([[0.25, 0.5, 0.75]], np.float32))
    r = subprocess.run([KILN, "run", str(tmp_path / "m.onnx"), "--input", f"x={tmp_path / 'x.npy'}",
                        "--output-dir", str(tmp_path / "out")], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = json.loads((tmp_path / "out" / "y.json").read_text())
    assert got == [{"a\x00b": 0.25, "\udcff": 0.5, "\u00e9": 0.75}]
