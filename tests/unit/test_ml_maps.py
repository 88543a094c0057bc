"""ai.onnx.ml ops on maps and categories against onnxruntime, on hand-built models: ZipMap (a
sequence of maps out), DictVectorizer and CastMap (a map in), CategoryMapper, FeatureVectorizer;
through both Python paths (kiln._native and ctypes over the C API), and the errors of feeding a
map where a tensor belongs and the other way round."""
import ctypes
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto as T, helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, kiln, rand, run_kiln, run_ort  # noqa: E402

RNG = np.random.default_rng(29)
ML = "ai.onnx.ml"
NP_OF = {T.FLOAT: np.float32, T.DOUBLE: np.float64, T.INT64: np.int64}


@pytest.fixture(params=["native", "ctypes"])
def path(request, monkeypatch):
    """Runs the test through kiln._native and through the ctypes binding (the C API)."""
    if request.param == "ctypes":
        monkeypatch.setenv("KILN_PYTHON_CTYPES", "1")
    else:
        monkeypatch.delenv("KILN_PYTHON_CTYPES", raising=False)
        from kiln import _session
        if _session._native_module() is None:
            pytest.skip("kiln._native is not built")
    return request.param


def model(node, inputs, outputs):
    """inputs / outputs: (name, TypeProto)."""
    g = helper.make_graph([node], "g", [helper.make_value_info(n, t) for n, t in inputs],
                          [helper.make_value_info(n, t) for n, t in outputs])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ML, 1)])
    m.ir_version = 10
    return m


def tensor_type(dt, shape=None):
    return helper.make_tensor_type_proto(dt, shape)


def map_type(key, val):
    return helper.make_map_type_proto(key, tensor_type(val))


def assert_values(got, want, rtol=1e-6, atol=1e-7, what="output"):
    """Lists of dicts, dicts and arrays as onnxruntime returns them: same structure, same key
    types and keys, values close (floats) or equal."""
    if isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{what}: {type(got)} of {len(got)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_values(g, w, rtol, atol, f"{what}[{i}]")
    elif isinstance(want, dict):
        assert isinstance(got, dict), f"{what}: {type(got)} is not a dict"
        assert sorted(got) == sorted(want), f"{what}: keys {sorted(got)} != {sorted(want)}"
        for k, w in want.items():
            assert type(next(x for x in got if x == k)) is type(k), f"{what}: key type of {k!r}"
            assert type(got[k]) is type(w), f"{what}[{k!r}]: {type(got[k])} != {type(w)}"
            if isinstance(w, float):
                assert np.isclose(got[k], w, rtol=rtol, atol=atol), f"{what}[{k!r}]: {got[k]} != {w}"
            else:
                assert got[k] == w, f"{what}[{k!r}]: {got[k]!r} != {w!r}"
    else:
        assert_same(got, want, rtol, atol, what)


def check_maps(m, feeds):
    want = run_ort(m, feeds)
    got = run_kiln(m, feeds)
    assert len(got) == len(want)
    assert_values(got, want)
    return got


def words(n, prefix="w"):
    return ["%s%d" % (prefix, i) for i in range(n)]


# ---------------------------------------------------------------- ZipMap

@pytest.mark.parametrize("labels", ["int64", "string", "unicode"])
@pytest.mark.parametrize("shape", [(1, 3), (4, 3), (300, 3), (3,), (7, 1), (0, 2)])
def test_zipmap(path, labels, shape):
    c = shape[-1]
    if labels == "int64":
        attrs = {"classlabels_int64s": [int(v) for v in RNG.choice(np.arange(-50, 50), c, replace=False)]}
        key = T.INT64
    else:
        pool = ["zebra", "apple", "Mango", "b", "é-ü", "日本"] if labels == "unicode" else words(40, "class_")
        attrs = {"classlabels_strings": list(RNG.choice(pool, c, replace=False))}
        key = T.STRING
    x = rand(RNG, shape, np.float32, 0, 1)
    node = helper.make_node("ZipMap", ["x"], ["z"], domain=ML, **attrs)
    m = model(node, [("x", tensor_type(T.FLOAT, list(shape)))],
              [("z", helper.make_sequence_type_proto(map_type(key, T.FLOAT)))])
    got = check_maps(m, {"x": x})
    assert len(got[0]) == (shape[0] if len(shape) == 2 else 1)


def test_zipmap_repeated_label_last_column_wins(path):
    """A label given twice: the later column's score is the one onnxruntime keeps."""
    x = rand(RNG, (5, 4), np.float32, 0, 1)
    node = helper.make_node("ZipMap", ["x"], ["z"], domain=ML, classlabels_int64s=[3, 1, 3, 0])
    m = model(node, [("x", tensor_type(T.FLOAT, [5, 4]))],
              [("z", helper.make_sequence_type_proto(map_type(T.INT64, T.FLOAT)))])
    got = check_maps(m, {"x": x})
    assert got[0][0][3] == pytest.approx(float(x[0, 2]))


def test_zipmap_beside_tensor_outputs(path):
    """The shape skl2onnx gives classifiers: a label tensor and the probabilities' sequence of
    maps, from one graph (the probabilities also feed an ArgMax)."""
    x = rand(RNG, (6, 3), np.float32, 0, 1)
    nodes = [helper.make_node("ArgMax", ["x"], ["label"], axis=1, keepdims=0),
             helper.make_node("ZipMap", ["x"], ["z"], domain=ML, classlabels_strings=["a", "b", "c"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", T.FLOAT, [None, 3])],
                          [helper.make_tensor_value_info("label", T.INT64, [None]),
                           helper.make_value_info("z", helper.make_sequence_type_proto(map_type(T.STRING, T.FLOAT)))])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(ML, 1)])
    m.ir_version = 10
    check_maps(m, {"x": x})
    s = kiln.InferenceSession(m.SerializeToString())
    assert [(o.name, o.type, o.shape) for o in s.get_outputs()] == \
        [("label", "tensor(int64)", [None]), ("z", "seq(map(string,tensor(float)))", [])]
    # asking for the map output alone, twice in a row (the plan made by the first run is reused)
    for _ in range(2):
        assert_values(s.run(["z"], {"x": x}), run_ort(m, {"x": x}, ["z"]))
    # an output asked for twice: the first is a copy, the second the value itself
    want = run_ort(m, {"x": x}, ["z"])[0]
    assert_values(s.run(["z", "label", "z"], {"x": x})[::2], [want, want])


def test_zipmap_errors():
    x = rand(RNG, (2, 3), np.float32)
    seq = helper.make_sequence_type_proto(map_type(T.INT64, T.FLOAT))
    node = helper.make_node("ZipMap", ["x"], ["z"], domain=ML, classlabels_int64s=[1, 2])
    m = model(node, [("x", tensor_type(T.FLOAT, None))], [("z", seq)])
    with pytest.raises(kiln.KilnError, match="3 columns but there are 2 class labels"):
        run_kiln(m, {"x": x})
    with pytest.raises(Exception):
        run_ort(m, {"x": x})
    with pytest.raises(kiln.KilnError, match="rank 3"):
        run_kiln(m, {"x": rand(RNG, (2, 1, 2), np.float32)})
    with pytest.raises(kiln.KilnError, match="element type"):
        run_kiln(m, {"x": rand(RNG, (2, 2), np.float64)})
    both = helper.make_node("ZipMap", ["x"], ["z"], domain=ML, classlabels_int64s=[1, 2], classlabels_strings=["a", "b"])
    with pytest.raises(kiln.KilnError, match="not both"):
        run_kiln(model(both, [("x", tensor_type(T.FLOAT, None))], [("z", seq)]), {"x": x})
    neither = helper.make_node("ZipMap", ["x"], ["z"], domain=ML)
    with pytest.raises(kiln.KilnError, match="not neither"):
        run_kiln(model(neither, [("x", tensor_type(T.FLOAT, None))], [("z", seq)]), {"x": x})


# ---------------------------------------------------------------- DictVectorizer
# onnxruntime's Python binding feeds maps of float values only (an int is made a float, a str
# refused): maps of other value types are checked against onnxruntime run on the same map with
# float values that stand for them exactly (integers below 2^24, eighths, "v<n>" for n >= 1).

DV_TYPES = [(T.STRING, T.INT64), (T.STRING, T.FLOAT), (T.STRING, T.DOUBLE),
            (T.INT64, T.STRING), (T.INT64, T.FLOAT), (T.INT64, T.DOUBLE)]


def float_stand_ins(key, n, pool_size=30):
    """A map of n random keys to floats exact in every value type (nonzero integers or eighths)."""
    keys = RNG.choice(pool_size, n, replace=False)
    keys = ["k%d" % k for k in keys] if key == T.STRING else [int(k) - 10 for k in keys]
    return dict(zip(keys, [float(v) for v in RNG.integers(1, 2**20, n)]))


def as_type(feed, val):
    if val == T.STRING:
        return {k: "v%d" % int(v) for k, v in feed.items()}
    if val == T.INT64:
        return {k: int(v) for k, v in feed.items()}
    return {k: v / 8 for k, v in feed.items()}


def expect_from_float(out, val):
    """onnxruntime's float output of the stand-in map, as the value type (0 = absent)."""
    if val == T.STRING:
        return np.array([["v%d" % int(v) if v else "" for v in out[0]]], dtype=object)
    if val == T.INT64:
        return out.astype(np.int64)
    return (out / 8).astype(NP_OF[val])


def vectorizer(key, val, vocab):
    attrs = {"string_vocabulary": vocab} if key == T.STRING else {"int64_vocabulary": vocab}
    node = helper.make_node("DictVectorizer", ["X"], ["Y"], domain=ML, **attrs)
    return model(node, [("X", map_type(key, val))], [("Y", tensor_type(val))])


@pytest.mark.parametrize("key,val", DV_TYPES)
@pytest.mark.parametrize("n", [1, 7, 25])
def test_dict_vectorizer(path, key, val, n):
    pool = ["k%d" % k for k in range(34)] if key == T.STRING else list(range(-12, 22))
    vocab = [pool[i] for i in RNG.choice(len(pool), 12, replace=False)] + [pool[3]]  # one word twice
    stand_in = float_stand_ins(key, n)
    want = run_ort(vectorizer(key, T.FLOAT, vocab), {"X": stand_in})[0]
    got = run_kiln(vectorizer(key, val, vocab), {"X": as_type(stand_in, val)})
    assert_values(got, [expect_from_float(want, val)])
    if val == T.FLOAT:  # the map fed to onnxruntime as it is
        check_maps(vectorizer(key, val, vocab), {"X": {k: v / 3 for k, v in stand_in.items()}})
    # onnxruntime refuses an empty dict: an empty map must read as one of words outside the vocabulary
    outside = {("zz" if key == T.STRING else 1000): 1.0}
    assert_values(run_kiln(vectorizer(key, val, vocab), {"X": {}}),
                  [expect_from_float(run_ort(vectorizer(key, T.FLOAT, vocab), {"X": outside})[0], val)])


def test_dict_vectorizer_errors(path):
    m = vectorizer(T.STRING, T.FLOAT, ["a", "b"])
    with pytest.raises(kiln.KilnError, match=r"input 'X' must be a map\(string,tensor\(float\)\), got a tensor"):
        run_kiln(m, {"X": np.ones((1, 2), np.float32)})
    with pytest.raises(TypeError, match="input .X."):  # a value that is no number does not convert...
        run_kiln(m, {"X": {"a": "not a number"}})
    # ... int keys are written as their text, as str() makes them
    assert_values(run_kiln(m, {"X": {"a": 2.5, 7: 1.0}}), [np.array([[2.5, 0.0]], np.float32)])
    ints = helper.make_node("DictVectorizer", ["X"], ["Y"], domain=ML, string_vocabulary=["a"])
    m2 = model(ints, [("X", map_type(T.INT64, T.FLOAT))], [("Y", tensor_type(T.FLOAT))])
    with pytest.raises(kiln.KilnError, match="int64_vocabulary"):
        run_kiln(m2, {"X": {1: 2.0}})
    with pytest.raises(kiln.KilnError, match="DictVectorizer takes"):  # a pair onnxruntime has no kernel for
        run_kiln(vectorizer(T.STRING, T.STRING, ["a"]), {"X": {"a": "b"}})


# ---------------------------------------------------------------- CastMap

def cast_map_model(val, cast_to="TO_FLOAT", form="DENSE", max_map=1):
    node = helper.make_node("CastMap", ["X"], ["Y"], domain=ML, cast_to=cast_to, map_form=form, max_map=max_map)
    out = {"TO_FLOAT": T.FLOAT, "TO_INT64": T.INT64, "TO_STRING": T.STRING}[cast_to]
    return model(node, [("X", map_type(T.INT64, val))], [("Y", tensor_type(out))])


FORMS = [("DENSE", 1), ("SPARSE", 1), ("SPARSE", 6), ("SPARSE", 20)]


@pytest.mark.parametrize("cast_to", ["TO_FLOAT", "TO_INT64", "TO_STRING"])
@pytest.mark.parametrize("form,max_map", FORMS)
def test_cast_map_float(path, cast_to, form, max_map):
    keys = [int(k) for k in RNG.choice(14, 8, replace=False)]
    feed = dict(zip(keys, [float(v) for v in RNG.normal(0, 50, len(keys)).astype(np.float32)]))
    got = check_maps(cast_map_model(T.FLOAT, cast_to, form, max_map), {"X": feed})
    assert got[0].shape == (1, len(keys) if form == "DENSE" else max_map)


def stof_prefix(text):
    """std::stof / std::stoll as onnxruntime's CastMap reads text: the longest number at the start."""
    import re
    m = re.match(r"\s*[+-]?(\d+\.?\d*(e[+-]?\d+)?|\.\d+(e[+-]?\d+)?)", text, re.I)
    return m.group(0)


@pytest.mark.parametrize("cast_to", ["TO_FLOAT", "TO_INT64", "TO_STRING"])
@pytest.mark.parametrize("form,max_map", FORMS)
def test_cast_map_string(path, cast_to, form, max_map):
    """map(int64, string): onnxruntime's Python binding cannot feed one, so the expected tensor is
    onnxruntime's CastMap run on the map of each text's number (for TO_STRING, of the texts'
    positions, then mapped back: CastMap copies text as it is, and pads with "0.f")."""
    keys = [int(k) for k in RNG.choice(14, 8, replace=False)]
    texts = ["42", "-7", "  3", "3.75", "1e3", "-0.5", "12abc", "+8", "0.125"]
    feed = {k: texts[int(i)] for k, i in zip(keys, RNG.integers(0, len(texts), len(keys)))}
    got = run_kiln(cast_map_model(T.STRING, cast_to, form, max_map), {"X": feed})[0]
    if cast_to == "TO_STRING":
        pos = {k: float(i + 1) for i, k in enumerate(feed)}
        idx = run_ort(cast_map_model(T.FLOAT, "TO_FLOAT", form, max_map), {"X": pos})[0]
        texts_by_pos = list(feed.values())
        want = np.array([[texts_by_pos[int(p) - 1] if p else "0.f" for p in idx[0]]], dtype=object)
    else:
        numbers = {k: float(stof_prefix(t)) if cast_to == "TO_FLOAT" else float(int(float(stof_prefix(t).split(".")[0].lower().split("e")[0])))
                   for k, t in feed.items()}
        want = run_ort(cast_map_model(T.FLOAT, cast_to, form, max_map), {"X": numbers})[0]
    assert_values([got], [want])


def test_cast_map_defaults_and_empty(path):
    node = helper.make_node("CastMap", ["X"], ["Y"], domain=ML)
    m = model(node, [("X", map_type(T.INT64, T.FLOAT))], [("Y", tensor_type(T.FLOAT))])
    check_maps(m, {"X": {5: 1.5, -3: 2.0, 1: -4.0}})
    assert run_kiln(m, {"X": {}})[0].shape == (1, 0)  # onnxruntime refuses an empty dict
    # an empty map, SPARSE: as one whose keys are all past max_map
    m = cast_map_model(T.FLOAT, "TO_STRING", "SPARSE", 3)
    assert_values(run_kiln(m, {"X": {}}), run_ort(m, {"X": {7: 1.0}}))


def test_cast_map_errors(path):
    m = cast_map_model(T.FLOAT, "TO_FLOAT", "SPARSE", 4)
    with pytest.raises(kiln.KilnError, match="map key -2 is negative"):
        run_kiln(m, {"X": {-2: 1.0, 1: 2.0}})
    with pytest.raises(Exception):
        run_ort(m, {"X": {-2: 1.0, 1: 2.0}})
    with pytest.raises(kiln.KilnError, match="'pear' is not a float"):
        run_kiln(cast_map_model(T.STRING), {"X": {1: "2.5", 2: "pear"}})
    with pytest.raises(kiln.KilnError, match="'x9' is not an int64"):
        run_kiln(cast_map_model(T.STRING, "TO_INT64"), {"X": {1: "x9"}})
    bad = helper.make_node("CastMap", ["X"], ["Y"], domain=ML, cast_to="TO_DOUBLE")
    with pytest.raises(kiln.KilnError, match="cast_to is 'TO_DOUBLE'"):
        run_kiln(model(bad, [("X", map_type(T.INT64, T.FLOAT))], [("Y", tensor_type(T.FLOAT))]), {"X": {1: 1.0}})
    with pytest.raises(kiln.KilnError, match="CastMap takes"):
        run_kiln(cast_map_model(T.DOUBLE), {"X": {1: 1.0}})


# ---------------------------------------------------------------- CategoryMapper

@pytest.mark.parametrize("shape", [(5,), (3, 4), (2, 3, 2), (0, 3)])
@pytest.mark.parametrize("direction", ["to_int", "to_string"])
@pytest.mark.parametrize("defaults", [False, True])
def test_category_mapper(shape, direction, defaults):
    cats = words(10, "cat")
    ints = [int(v) for v in RNG.choice(1000, 10, replace=False)]
    cats[7] = cats[2]      # a category twice: the later pairing wins in onnxruntime
    ints[8] = ints[4]
    attrs = {"cats_strings": cats, "cats_int64s": ints}
    if defaults:
        attrs.update(default_string="none", default_int64=-99)
    n = int(np.prod(shape))
    if direction == "to_int":
        x = np.array(RNG.choice(cats + ["other", "x"], n), dtype=object).reshape(shape)
        m = model(helper.make_node("CategoryMapper", ["x"], ["y"], domain=ML, **attrs),
                  [("x", tensor_type(T.STRING, list(shape)))], [("y", tensor_type(T.INT64))])
    else:
        x = np.array(RNG.choice(ints + [1000, -5], n), dtype=np.int64).reshape(shape)
        m = model(helper.make_node("CategoryMapper", ["x"], ["y"], domain=ML, **attrs),
                  [("x", tensor_type(T.INT64, list(shape)))], [("y", tensor_type(T.STRING))])
    check(m, {"x": x})


def test_category_mapper_large_and_errors():
    cats = words(300, "c")
    attrs = {"cats_strings": cats, "cats_int64s": list(range(300))}
    m = model(helper.make_node("CategoryMapper", ["x"], ["y"], domain=ML, **attrs),
              [("x", tensor_type(T.INT64, None))], [("y", tensor_type(T.STRING))])
    check(m, {"x": RNG.integers(-20, 320, (64, 300)).astype(np.int64)})  # threads share the work
    with pytest.raises(kiln.KilnError, match="element type"):
        run_kiln(m, {"x": np.ones(3, np.float32)})
    bad = {"cats_strings": ["a", "b"], "cats_int64s": [1]}
    with pytest.raises(kiln.KilnError, match="cats_strings has 2 entries and cats_int64s 1"):
        run_kiln(model(helper.make_node("CategoryMapper", ["x"], ["y"], domain=ML, **bad),
                       [("x", tensor_type(T.INT64, None))], [("y", tensor_type(T.STRING))]),
                 {"x": np.ones(2, np.int64)})


# ---------------------------------------------------------------- FeatureVectorizer

FV_CASES = {
    "three": ([(6, 3), (6, 2), (6, 4)], [3, 2, 4]),
    "truncate_and_pad": ([(4, 5), (4, 2)], [3, 4]),
    "vectors": ([(3,), (2,)], [3, 2]),
    "rank3": ([(2, 2, 3), (2, 1)], [6, 1]),
    "one": ([(1, 4)], [4]),
    "zero_width": ([(3, 2), (3, 3)], [0, 3]),
}


def feature_vectorizer(specs, dims, dtypes):
    ins = [("x%d" % i, tensor_type(helper.np_dtype_to_tensor_dtype(np.dtype(dt)), None if shape is None else list(shape)))
           for i, (shape, dt) in enumerate(zip(specs, dtypes))]
    node = helper.make_node("FeatureVectorizer", [n for n, _ in ins], ["y"], domain=ML, inputdimensions=dims)
    return model(node, ins, [("y", tensor_type(T.FLOAT))])


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.int64, np.int32])
@pytest.mark.parametrize("case", sorted(FV_CASES))
def test_feature_vectorizer(case, dt):
    specs, dims = FV_CASES[case]
    feeds = {"x%d" % i: rand(RNG, shape, dt, -20, 20) for i, shape in enumerate(specs)}
    check(feature_vectorizer(specs, dims, [dt] * len(specs)), feeds)


def test_feature_vectorizer_mixed_types():
    """Inputs of different types (onnxruntime binds them all to one): against onnxruntime on the
    same values as float32 (exact: small integers, float64 values made from float32 ones)."""
    specs, dims = [(5, 3), (5, 2), (5, 4), (5, 1)], [3, 2, 4, 1]
    dts = [np.float32, np.int64, np.float64, np.int32]
    feeds = {"x%d" % i: rand(RNG, shape, np.float32 if dt == np.float64 else dt, -20, 20).astype(dt)
             for i, (shape, dt) in enumerate(zip(specs, dts))}
    got = run_kiln(feature_vectorizer(specs, dims, dts), feeds)
    want = run_ort(feature_vectorizer(specs, dims, [np.float32] * 4), {k: v.astype(np.float32) for k, v in feeds.items()})
    assert_same(got[0], want[0])


def test_feature_vectorizer_errors():
    m = feature_vectorizer([None, None], [2, 2], [np.float32, np.float32])
    with pytest.raises(kiln.KilnError, match="input 1 has 5 rows, input 0 has 2"):
        run_kiln(m, {"x0": rand(RNG, (2, 2)), "x1": rand(RNG, (5, 2))})
    with pytest.raises(Exception):
        run_ort(m, {"x0": rand(RNG, (2, 2)), "x1": rand(RNG, (5, 2))})
    with pytest.raises(kiln.KilnError, match="scalar"):
        run_kiln(m, {"x0": rand(RNG, (2, 2)), "x1": np.float32(1.0)})
    with pytest.raises(kiln.KilnError, match="2 inputs but inputdimensions has 1"):
        run_kiln(feature_vectorizer([None, None], [2], [np.float32, np.float32]),
                 {"x0": rand(RNG, (2, 2)), "x1": rand(RNG, (2, 2))})
    with pytest.raises(kiln.KilnError, match="element type"):
        run_kiln(feature_vectorizer([None], [2], [np.float16]), {"x0": rand(RNG, (2, 2), np.float16)})


# ---------------------------------------------------------------- maps where tensors belong, and back

def test_map_fed_where_tensor_expected_names_the_input(path):
    node = helper.make_node("CategoryMapper", ["labels"], ["y"], domain=ML, cats_strings=["a"], cats_int64s=[1])
    m = model(node, [("labels", tensor_type(T.STRING, [None]))], [("y", tensor_type(T.INT64))])
    with pytest.raises(kiln.KilnError, match=r"input 'labels' must be a tensor, got a map\(string,tensor\(float\)\)"):
        run_kiln(m, {"labels": {"a": 1.0}})


def test_map_value_c_api():
    """kiln_value_map_new sorts keys and refuses one given twice; the accessors read a map back."""
    lib = kiln._session._L()
    keys = (ctypes.c_int64 * 4)(9, -3, 4, 0)
    vals = (ctypes.c_double * 4)(0.5, 1.5, 2.5, 3.5)
    v = ctypes.c_void_p()
    assert lib.kiln_value_map_new(T.INT64, T.DOUBLE, 4, keys, vals, ctypes.byref(v)) == 0
    try:
        assert lib.kiln_value_kind(v) == 3 and lib.kiln_value_map_size(v) == 4
        assert lib.kiln_value_map_key_dtype(v) == T.INT64 and lib.kiln_value_dtype(v) == T.DOUBLE
        k = ctypes.cast(lib.kiln_value_map_keys(v), ctypes.POINTER(ctypes.c_int64))
        x = ctypes.cast(lib.kiln_value_map_values(v), ctypes.POINTER(ctypes.c_double))
        assert [k[i] for i in range(4)] == [-3, 0, 4, 9] and [x[i] for i in range(4)] == [1.5, 3.5, 2.5, 0.5]
        assert lib.kiln_value_data(v) is None and lib.kiln_value_sequence_length(v) == 0
    finally:
        lib.kiln_value_free(v)
    strs = (ctypes.c_char_p * 3)(b"b", b"a", b"b")
    assert lib.kiln_value_map_new(T.STRING, T.DOUBLE, 3, strs, vals, ctypes.byref(v)) == 1
    assert b"map key 'b' is given twice" in lib.kiln_last_error()
    assert lib.kiln_value_map_new(T.FLOAT, T.DOUBLE, 1, vals, vals, ctypes.byref(v)) == 1
    assert b"map keys must be int64 or string" in lib.kiln_last_error()
