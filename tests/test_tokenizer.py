"""com.microsoft Tokenizer (as skl2onnx emits it for CountVectorizer / TfidfVectorizer) against
onnxruntime: token expressions, separators, character tokenization, mark / pad_value / mincharnum,
[C] and [N, C] inputs, and whole skl2onnx text pipelines."""
import numpy as np
import pytest
from onnx import TensorProto, helper

from util import run_kiln, run_ort

MS = "com.microsoft"

TEXTS = np.array([
    "This is the first document.", "And this, the second_one: 42 items!", "", "a b  c",
    "naïve café über-cool 3.14", "x", "  leading and trailing  ", "tabs\tand\nnewlines here",
], dtype=object)


def tok_model(shape, **attrs):
    node = helper.make_node("Tokenizer", ["X"], ["Y"], domain=MS, **attrs)
    g = helper.make_graph([node], "tok", [helper.make_tensor_value_info("X", TensorProto.STRING, list(shape))],
                          [helper.make_tensor_value_info("Y", TensorProto.STRING, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)])
    m.ir_version = 10
    return m


def check_tok(x, **attrs):
    m = tok_model(x.shape, **attrs)
    want = run_ort(m, {"X": x})[0]
    got = run_kiln(m, {"X": x})[0]
    assert got.shape == want.shape, (got.shape, want.shape, attrs)
    assert got.tolist() == want.tolist(), attrs
    return got


ATTR_SETS = [
    dict(mark=0, pad_value="#", mincharnum=1, tokenexp="[a-zA-Z0-9_]+"),
    dict(mark=1, pad_value="#", mincharnum=1, tokenexp="[a-zA-Z0-9_]+"),
    dict(mark=0, pad_value="<pad>", mincharnum=2, tokenexp=r"\b\w+\b"),
    dict(mark=1, pad_value="", mincharnum=3, tokenexp=r"\w+"),
    dict(mark=0, pad_value="#", mincharnum=1, tokenexp=r"[^ \t\n,.:!]+"),
    dict(mark=0, pad_value="#", mincharnum=1, tokenexp=r"\d+(\.\d+)?|[a-z]+"),
    dict(mark=0, pad_value="#", mincharnum=1, tokenexp=r"\S+"),
    dict(mark=1, pad_value="_", mincharnum=1, tokenexp="."),
    dict(mark=0, pad_value="#", mincharnum=1, separators=[" "]),
    dict(mark=1, pad_value="#", mincharnum=1, separators=[" ", ","]),
    dict(mark=0, pad_value="#", mincharnum=2, separators=[r"\s+", "[.:!]"]),
    dict(mark=0, pad_value="@", mincharnum=1, separators=["e"]),
    dict(mark=1, pad_value="#", mincharnum=1, separators=[""]),
    dict(mark=0, pad_value="#", mincharnum=1, tokenexp="e*"),  # empty matches move on by a character
    dict(mark=0, pad_value="#", mincharnum=2, tokenexp=r"^\w+|\w+$"),
]


@pytest.mark.parametrize("attrs", ATTR_SETS, ids=[str(i) for i in range(len(ATTR_SETS))])
def test_tokenizer_attribute_sets(attrs):
    check_tok(TEXTS, **attrs)
    check_tok(TEXTS.reshape(2, 4), **attrs)
    check_tok(TEXTS[:1].reshape(1, 1), **attrs)


@pytest.mark.parametrize("mark", [0, 1])
def test_tokenizer_no_tokens_and_empty(mark):
    """Rows without any token give a last axis of 0, with or without marks; empty input too."""
    x = np.array(["...", "", "!!"], dtype=object)
    got = check_tok(x, mark=mark, pad_value="#", mincharnum=1, tokenexp=r"\w+")
    assert got.shape == (3, 0)
    check_tok(np.array([["", ""]], dtype=object), mark=mark, pad_value="#", mincharnum=1, separators=[" "])
    check_tok(np.zeros((0,), dtype=object), mark=mark, pad_value="#", mincharnum=1, tokenexp=r"\w+")
    check_tok(np.zeros((2, 0), dtype=object), mark=mark, pad_value="#", mincharnum=1, tokenexp=r"\w+")


def test_tokenizer_random_texts():
    rng = np.random.default_rng(0)
    alphabet = list("abcxyz019 _.,-") + ["é", "ß", "  "]
    x = np.array(["".join(rng.choice(alphabet, size=rng.integers(0, 30))) for _ in range(24)],
                 dtype=object).reshape(4, 6)
    for attrs in ATTR_SETS:
        check_tok(x, **attrs)


def test_tokenizer_bad_attributes():
    x = np.array(["a b"], dtype=object)
    bad = [
        (dict(mark=0, pad_value="#", mincharnum=1, tokenexp=r"(?u)\b\w\w+\b"), "(?u)"),
        (dict(mark=0, pad_value="#", mincharnum=1, tokenexp=r"(a)\1"), "escape"),
        (dict(mark=0, pad_value="#", mincharnum=0, tokenexp=r"\w+"), "mincharnum"),
        (dict(mark=0, pad_value="#", mincharnum=2, tokenexp="."), "mincharnum"),
        (dict(mark=0, pad_value="#", mincharnum=1), "tokenexp"),
        (dict(pad_value="#", mincharnum=1, tokenexp=r"\w+"), "mark"),
    ]
    for attrs, word in bad:
        with pytest.raises(Exception) as ei:
            run_kiln(tok_model(x.shape, **attrs), {"X": x})
        assert word in str(ei.value), (attrs, str(ei.value))
    x3 = np.array([[["a"]]], dtype=object)
    with pytest.raises(Exception) as ei:
        run_kiln(tok_model(x3.shape, mark=0, pad_value="#", mincharnum=1, tokenexp=r"\w+"), {"X": x3})
    assert "rank 3" in str(ei.value)


# ---------------------------------------------------------------- skl2onnx pipelines

CORPUS = np.array([
    "This is the first document.", "This document is the second document.",
    "And this is the third one.", "Is this the first document?", "Numbers 42 and 3.14 are tokens_too",
    "Ünïcödé wörds stay as they are",
], dtype=object)


@pytest.mark.parametrize("kind,kwargs", [
    ("tfidf", {}), ("tfidf", {"ngram_range": (1, 2)}), ("tfidf", {"token_pattern": r"\b\w+\b"}),
    ("tfidf", {"lowercase": False, "norm": "l1"}), ("count", {}), ("tfidf", {"sublinear_tf": True}),
])
def test_skl2onnx_text_pipeline(kind, kwargs):
    skl = pytest.importorskip("sklearn.feature_extraction.text")
    skl2onnx = pytest.importorskip("skl2onnx")
    from skl2onnx.common.data_types import StringTensorType
    cls = skl.TfidfVectorizer if kind == "tfidf" else skl.CountVectorizer
    vec = cls(**kwargs).fit(CORPUS)
    onx = skl2onnx.to_onnx(vec, initial_types=[("input", StringTensorType([None, 1]))],
                           target_opset={"": 18, "ai.onnx.ml": 3})
    assert any(n.op_type == "Tokenizer" for n in onx.graph.node)
    # skl2onnx's StringNormalizer asks for en_US.UTF-8, which a bare machine may lack; onnxruntime
    # then fails to load, so both runtimes get the C.UTF-8 locale instead
    for n in onx.graph.node:
        if n.op_type == "StringNormalizer":
            keep = [a for a in n.attribute if a.name != "locale"]
            del n.attribute[:]
            n.attribute.extend(keep + [helper.make_attribute("locale", "C.UTF-8")])
    tests = np.array(["the first and the second document", "unseen words only", "",
                      "Is this 42?", "document document document"], dtype=object).reshape(-1, 1)
    x = np.concatenate([CORPUS.reshape(-1, 1), tests])
    want = run_ort(onx, {"input": x})
    got = run_kiln(onx, {"input": x})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


def test_tokenizer_absent_input_is_refused():
    node = helper.make_node("Tokenizer", [""], ["Y"], domain=MS, mark=0, pad_value="#", mincharnum=1,
                            tokenexp=r"\w+")
    g = helper.make_graph([node], "tok", [], [helper.make_tensor_value_info("Y", TensorProto.STRING, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid(MS, 1)])
    m.ir_version = 10
    with pytest.raises(Exception) as ei:
        run_kiln(m, {})
    assert "missing" in str(ei.value)
