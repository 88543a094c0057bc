"""StringConcat, StringSplit, StringNormalizer, RegexFullMatch and TfIdfVectorizer against
onnxruntime. String tensors enter as initializers (the Python binding takes numeric feeds only)."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import check, rand, run_kiln, run_ort  # noqa: E402

RNG = np.random.default_rng(21)
WORDS = ["alpha", "Beta", "GAMMA", "delta", "épée", "Straße", "ΑΒΓ", "привет", "x", "", "a.b.c",
         "o-n--x-", "  two  words ", "tab\tsep", "中文", "Monday", "monday", "MONDAY"]


def rand_strings(shape):
    return np.array(RNG.choice(WORDS, size=shape), dtype=object)


def string_model(op, consts, outputs, attrs=None, opset=20, extra_inputs=None):
    """One node whose string inputs are initializers; outputs: list of (name, TensorProto type)."""
    inits = [helper.make_tensor(k, TensorProto.STRING, v.shape, [s.encode() for s in v.flat])
             for k, v in consts.items()]
    ins = [helper.make_tensor_value_info(k, t, s) for k, t, s in (extra_inputs or [])]
    names = list(consts) + [k for k, _, _ in (extra_inputs or [])]
    node = helper.make_node(op, names, [o for o, _ in outputs], **(attrs or {}))
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info(o, t, None) for o, t in outputs],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("sa,sb", [((4,), (4,)), ((3, 1), (1, 5)), ((2, 3), ()), ((), ()), ((0, 2), (2,))])
def test_string_concat(sa, sb):
    a, b = rand_strings(sa), rand_strings(sb)
    m = string_model("StringConcat", {"a": a, "b": b}, [("y", TensorProto.STRING)])
    check(m, {})


@pytest.mark.parametrize("attrs", [{}, {"delimiter": "."}, {"delimiter": "-"}, {"delimiter": ""},
                                   {"maxsplit": 1}, {"delimiter": "-", "maxsplit": 2},
                                   {"delimiter": "ab"}, {"maxsplit": 0}])
@pytest.mark.parametrize("shape", [(6,), (2, 3), (0,)])
def test_string_split(attrs, shape):
    # onnxruntime splits on spaces only, trims the remainder after maxsplit and gives "" no parts
    # with a delimiter; the ONNX definition (Python's str.split) is checked below on such strings
    x = np.array(RNG.choice([w for w in WORDS if "\t" not in w and not w.endswith(" ") and w], size=shape),
                 dtype=object)
    m = string_model("StringSplit", {"x": x}, [("y", TensorProto.STRING), ("z", TensorProto.INT64)],
                     attrs=attrs)
    check(m, {})


@pytest.mark.parametrize("sep,maxsplit", [(None, None), (None, 1), (None, 0), ("-", 1), ("--", None)])
def test_string_split_python_semantics(sep, maxsplit):
    words = ["  two  words ", "tab\tsep\nline", " \t ", "", "a--b----c", "x"]
    x = np.array(words, dtype=object)
    attrs = {} if sep is None else {"delimiter": sep}
    if maxsplit is not None:
        attrs["maxsplit"] = maxsplit
    m = string_model("StringSplit", {"x": x}, [("y", TensorProto.STRING), ("z", TensorProto.INT64)],
                     attrs=attrs)
    y, z = run_kiln(m, {})
    want = [w.split(sep, -1 if maxsplit is None else maxsplit) for w in words]
    width = max(len(p) for p in want)
    assert y.shape == (len(words), width)
    np.testing.assert_array_equal(z, [len(p) for p in want])
    for row, parts in zip(y.tolist(), want):
        assert row == parts + [""] * (width - len(parts))


@pytest.mark.parametrize("action", ["NONE", "LOWER", "UPPER"])
@pytest.mark.parametrize("sensitive", [0, 1])
@pytest.mark.parametrize("shape", [(8,), (1, 8)])
def test_string_normalizer(action, sensitive, shape):
    x = rand_strings(shape)
    m = string_model("StringNormalizer", {"x": x}, [("y", TensorProto.STRING)], opset=10,
                     attrs={"case_change_action": action, "is_case_sensitive": sensitive, "locale": "C.UTF-8",
                            "stopwords": ["monday", "Beta", "x"]})
    check(m, {})


def test_string_normalizer_all_removed():
    for shape in ((3,), (1, 3)):
        x = np.array(["monday", "Monday", "MONDAY"], dtype=object).reshape(shape)
        m = string_model("StringNormalizer", {"x": x}, [("y", TensorProto.STRING)], opset=10,
                         attrs={"stopwords": ["monday"], "locale": "C.UTF-8"})
        got = check(m, {})[0]
        assert got.shape == ((1,) if len(shape) == 1 else (1, 1)) and got.flat[0] == ""


@pytest.mark.parametrize("pattern", [r"www\.[\w.-]+\.\bcom\b", r"(\W|^)[\w.\-]{0,25}@(yahoo|gmail)\.com(\W|$)",
                                     r"\d+", r"[a-z]+\d*", r"(?:ab)+c?", r"a.*?b", r"[^\s]+", r"\w+\s\w+",
                                     r"[A-Z][a-z]{2,}", r".{3}", r"(?P<x>\d)-\d", r"x|y|z"])
def test_regex_full_match(pattern):
    x = np.array(["www.google.com", "www.bbc.co.uk", "a@gmail.com", "x@yahoo.com!", "12345", "abc123",
                  "ababc", "axxb", "no space", "two words", "Monday", "中文字", "ΑΒΓ", "7-8", "z", "",
                  "abc", "Hello", "a b"], dtype=object).reshape(19)
    m = string_model("RegexFullMatch", {"x": x}, [("y", TensorProto.BOOL)], attrs={"pattern": pattern})
    check(m, {})


def test_regex_unsupported_pattern_fails_cleanly():
    x = np.array(["a"], dtype=object)
    m = string_model("RegexFullMatch", {"x": x}, [("y", TensorProto.BOOL)], attrs={"pattern": r"(?i)a"})
    with pytest.raises(Exception):
        run_kiln(m, {})


def tfidf_attrs(mode, min_n, max_n, skip, strings=False, weights=False):
    pool = [2, 3, 5, 4, 5, 6, 7, 8, 6, 7, 2, 2, 2]  # 4 unigrams, 3 bigrams, 1 trigram
    attrs = {"mode": mode, "min_gram_length": min_n, "max_gram_length": max_n, "max_skip_count": skip,
             "ngram_counts": [0, 4, 10], "ngram_indexes": list(range(8))}
    if strings:
        attrs["pool_strings"] = ["w%d" % v for v in pool]
    else:
        attrs["pool_int64s"] = pool
    if weights:
        attrs["weights"] = [float(v) for v in RNG.uniform(0.5, 2, size=8)]
    return attrs


@pytest.mark.parametrize("mode", ["TF", "IDF", "TFIDF"])
@pytest.mark.parametrize("min_n,max_n,skip", [(1, 1, 0), (2, 2, 0), (1, 2, 3), (1, 3, 2), (3, 3, 5)])
@pytest.mark.parametrize("shape", [(20,), (3, 15)])
@pytest.mark.parametrize("dt", [np.int64, np.int32])
def test_tfidf_ints(mode, min_n, max_n, skip, shape, dt):
    x = RNG.integers(2, 9, size=shape).astype(dt)
    attrs = tfidf_attrs(mode, min_n, max_n, skip, weights=mode != "TF")
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 10
    check(m, {"x": x})


@pytest.mark.parametrize("mode", ["TF", "TFIDF"])
def test_tfidf_strings(mode):
    x = np.array(["w%d" % v for v in RNG.integers(2, 9, size=24)], dtype=object).reshape(2, 12)
    m = string_model("TfIdfVectorizer", {"x": x}, [("y", TensorProto.FLOAT)], opset=9,
                     attrs=tfidf_attrs(mode, 1, 3, 2, strings=True, weights=mode != "TF"))
    check(m, {})


def test_tfidf_bad_pool():
    x = rand(RNG, (5,), np.int64)
    attrs = tfidf_attrs("TF", 1, 2, 0)
    attrs["ngram_indexes"] = [0, 1]
    node = helper.make_node("TfIdfVectorizer", ["x"], ["y"], **attrs)
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.INT64, [5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 9)])
    m.ir_version = 10
    with pytest.raises(Exception):
        run_kiln(m, {"x": x})
    _ = run_ort  # onnxruntime rejects it too, at load time
