"""Sequence and optional ops against onnxruntime: SequenceEmpty / Construct / Insert / Erase / At /
Length, SplitToSequence, ConcatFromSequence, Optional, OptionalHasElement, OptionalGetElement."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, np_to_onnx_dtype, rand, run_kiln, run_ort  # noqa: E402

F = TensorProto.FLOAT


def tensor_vi(name, arr):
    return helper.make_tensor_value_info(name, np_to_onnx_dtype(arr.dtype), arr.shape)


def seq_vi(name, elem):
    return helper.make_tensor_sequence_value_info(name, elem, None)


SCALAR = "_as_1d"  # scalar feeds travel as [1] and are reshaped to [] in the graph


def model(nodes, feeds, outputs, opset=18):
    """outputs: list of ValueInfoProto. Scalar feeds enter as shape [1] and are reshaped to []
    inside the graph, so the model sees true scalars whatever the binding does with 0-d arrays."""
    ins, pre = [], []
    for k, v in feeds.items():
        if np.ndim(v) == 0:
            ins.append(tensor_vi(k + SCALAR, np.reshape(v, (1,))))
            pre.append(helper.make_node("Reshape", [k + SCALAR, "scalar_shape"], [k]))
        else:
            ins.append(tensor_vi(k, v))
    inits = [helper.make_tensor("scalar_shape", TensorProto.INT64, [0], [])] if pre else []
    g = helper.make_graph(pre + list(nodes), "g", ins, outputs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def feed(feeds):
    return {(k + SCALAR if np.ndim(v) == 0 else k): np.reshape(v, (1,)) if np.ndim(v) == 0 else v
            for k, v in feeds.items()}


def same_value(got, want, what):
    if want is None:
        assert got is None, f"{what}: expected an empty optional, got {type(got)}"
    elif isinstance(want, list):
        assert isinstance(got, list), f"{what}: expected a sequence, got {type(got)}"
        assert len(got) == len(want), f"{what}: {len(got)} items, expected {len(want)}"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, what=f"{what}[{i}]")
    else:
        assert_same(got, want, what=what)


def compare(m, feeds):
    want = run_ort(m, feed(feeds))
    got = run_kiln(m, feed(feeds))
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        same_value(g, w, f"output {i}")
    return got


def three(rng, dtype=np.float32):
    return {"a": rand(rng, (2, 3), dtype), "b": rand(rng, (4, 3), dtype), "c": rand(rng, (1, 3), dtype)}


CONSTRUCT = helper.make_node("SequenceConstruct", ["a", "b", "c"], ["s"])


@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.int8, np.float64, np.bool_])
def test_construct(dtype):
    rng = np.random.default_rng(1)
    feeds = three(rng, dtype)
    m = model([CONSTRUCT], feeds, [seq_vi("s", np_to_onnx_dtype(dtype))])
    got = compare(m, feeds)
    assert len(got[0]) == 3


@pytest.mark.parametrize("pos,pdt", [(0, np.int64), (1, np.int32), (2, np.int64), (-1, np.int64), (-3, np.int32)])
def test_at(pos, pdt):
    rng = np.random.default_rng(2)
    feeds = three(rng)
    feeds["p"] = np.array(pos, pdt)
    m = model([CONSTRUCT, helper.make_node("SequenceAt", ["s", "p"], ["y"])], feeds,
              [helper.make_tensor_value_info("y", F, None)])
    compare(m, feeds)


@pytest.mark.parametrize("pos", [None, 0, 1, 3, -1, -3])
def test_insert(pos):
    rng = np.random.default_rng(3)
    feeds = three(rng)
    feeds["t"] = rand(rng, (5, 3))
    ins = ["s", "t"]
    if pos is not None:
        feeds["p"] = np.array(pos, np.int64)
        ins.append("p")
    m = model([CONSTRUCT, helper.make_node("SequenceInsert", ins, ["s2"]),
               helper.make_node("SequenceLength", ["s2"], ["n"])], feeds,
              [seq_vi("s2", F), helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    got = compare(m, feeds)
    assert got[1] == 4


@pytest.mark.parametrize("pos", [None, 0, 1, -1, -3])
def test_erase(pos):
    rng = np.random.default_rng(4)
    feeds = three(rng)
    ins = ["s"]
    if pos is not None:
        feeds["p"] = np.array(pos, np.int32)
        ins.append("p")
    m = model([CONSTRUCT, helper.make_node("SequenceErase", ins, ["s2"])], feeds, [seq_vi("s2", F)])
    got = compare(m, feeds)
    assert len(got[0]) == 2


def test_empty_then_insert():
    rng = np.random.default_rng(5)
    feeds = {"x": rand(rng, (3,), np.int64), "y": rand(rng, (2,), np.int64)}
    nodes = [helper.make_node("SequenceEmpty", [], ["e"], dtype=TensorProto.INT64),
             helper.make_node("SequenceLength", ["e"], ["n0"]),
             helper.make_node("SequenceInsert", ["e", "x"], ["s1"]),
             helper.make_node("SequenceInsert", ["s1", "y"], ["s2"]),
             helper.make_node("SequenceLength", ["s2"], ["n2"])]
    m = model(nodes, feeds, [seq_vi("e", TensorProto.INT64),
                             helper.make_tensor_value_info("n0", TensorProto.INT64, []),
                             seq_vi("s2", TensorProto.INT64),
                             helper.make_tensor_value_info("n2", TensorProto.INT64, [])])
    got = compare(m, feeds)
    assert got[0] == [] and got[1] == 0 and got[3] == 2


SPLITS = [
    # (input shape, split (None / scalar / list), attrs)
    ((6, 4), None, {}),
    ((6, 4), None, {"keepdims": 0}),
    ((3, 5, 2), None, {"axis": 1, "keepdims": 0}),
    ((7, 3), 3, {}),
    ((4, 7), 2, {"axis": -1}),
    ((4, 7), [1, 4, 2], {"axis": 1}),
    ((6, 2, 3), [6], {}),
    ((5, 4), [2, 0, 3], {"keepdims": 0}),  # keepdims is ignored when split is given
]


@pytest.mark.parametrize("shape,split,attrs", SPLITS)
@pytest.mark.parametrize("sdt", [np.int64, np.int32])
def test_split_to_sequence(shape, split, attrs, sdt):
    rng = np.random.default_rng(6)
    feeds = {"x": rand(rng, shape)}
    ins = ["x"]
    if split is not None:
        feeds["split"] = np.array(split, sdt)
        ins.append("split")
    m = model([helper.make_node("SplitToSequence", ins, ["s"], **attrs)], feeds, [seq_vi("s", F)])
    compare(m, feeds)


@pytest.mark.parametrize("axis,new_axis", [(0, 0), (1, 0), (-1, 0), (0, 1), (1, 1), (2, 1), (-1, 1), (-3, 1)])
def test_concat_from_sequence(axis, new_axis):
    rng = np.random.default_rng(7)
    if new_axis:
        feeds = {k: rand(rng, (2, 3)) for k in "abc"}
    elif axis == 0:
        feeds = three(rng)
    else:
        feeds = {"a": rand(rng, (3, 2)), "b": rand(rng, (3, 4)), "c": rand(rng, (3, 1))}
    m = model([CONSTRUCT, helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=axis, new_axis=new_axis)],
              feeds, [helper.make_tensor_value_info("y", F, None)])
    compare(m, feeds)


def test_split_then_concat_roundtrip_int():
    rng = np.random.default_rng(8)
    feeds = {"x": rand(rng, (3, 8, 2), np.int32), "split": np.array([3, 1, 4], np.int64)}
    m = model([helper.make_node("SplitToSequence", ["x", "split"], ["s"], axis=1),
                helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=1)],
               feeds, [helper.make_tensor_value_info("y", TensorProto.INT32, None)])
    got = compare(m, feeds)
    np.testing.assert_array_equal(got[0], feeds["x"])


def test_constant_inputs_fold():
    """All-constant sequence chains are computed once at session creation."""
    rng = np.random.default_rng(13)
    w = rand(rng, (6, 2))
    feeds = {"x": rand(rng, (1, 2))}
    pos = helper.make_tensor("pos", TensorProto.INT64, [], [-2])
    nodes = [helper.make_node("SplitToSequence", ["w"], ["s"], axis=0, keepdims=1),
             helper.make_node("SequenceErase", ["s", "pos"], ["s2"]),
             helper.make_node("SequenceInsert", ["s2", "x"], ["s3"]),
             helper.make_node("ConcatFromSequence", ["s3"], ["y"], axis=0),
             helper.make_node("SequenceAt", ["s2", "pos"], ["z"])]
    g = helper.make_graph(nodes, "g", [tensor_vi("x", feeds["x"])],
                          [helper.make_tensor_value_info("y", F, None), helper.make_tensor_value_info("z", F, None)],
                          initializer=[helper.make_tensor("w", F, w.shape, w.flatten().tolist()), pos])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    got = compare(m, feeds)
    np.testing.assert_array_equal(got[1], w[3:4])


def test_strings():
    feeds = {"x": np.array([["ab", "c"], ["", "def"], ["g", "hij"]], dtype=object)}
    S = TensorProto.STRING
    nodes = [helper.make_node("SplitToSequence", ["x"], ["s"], axis=0, keepdims=0),
             helper.make_node("SequenceAt", ["s", "one"], ["row"]),
             helper.make_node("SequenceErase", ["s", "zero"], ["s2"]),
             helper.make_node("SequenceInsert", ["s2", "row", "zero"], ["s3"]),
             helper.make_node("ConcatFromSequence", ["s3"], ["y"], axis=0, new_axis=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", S, [3, 2])],
                          [seq_vi("s", S), helper.make_tensor_value_info("row", S, None),
                           helper.make_tensor_value_info("y", S, None)],
                          initializer=[helper.make_tensor("one", TensorProto.INT64, [], [1]),
                                       helper.make_tensor("zero", TensorProto.INT64, [], [0])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    want = run_ort(m, feeds)
    got = run_kiln(m, feeds)
    assert [list(a) for a in got[0]] == [list(a) for a in want[0]]
    assert list(got[1]) == list(want[1]) == ["", "def"]
    assert got[2].tolist() == want[2].tolist()


# ---- optionals ----

def test_optional_tensor():
    rng = np.random.default_rng(9)
    feeds = {"x": rand(rng, (2, 5))}
    nodes = [helper.make_node("Optional", ["x"], ["o"]),
             helper.make_node("OptionalHasElement", ["o"], ["has"]),
             helper.make_node("OptionalGetElement", ["o"], ["y"])]
    m = model(nodes, feeds, [helper.make_tensor_value_info("has", TensorProto.BOOL, []),
                             helper.make_tensor_value_info("y", F, None)])
    got = compare(m, feeds)
    assert got[0]


def test_optional_empty():
    rng = np.random.default_rng(10)
    feeds = {"x": rand(rng, (3,))}
    tp = helper.make_tensor_type_proto(F, None)
    nodes = [helper.make_node("Optional", [], ["o"], type=tp),
             helper.make_node("OptionalHasElement", ["o"], ["has"]),
             helper.make_node("Identity", ["x"], ["y"])]
    m = model(nodes, feeds, [helper.make_tensor_value_info("has", TensorProto.BOOL, []),
                             helper.make_tensor_value_info("y", F, None)])
    got = compare(m, feeds)
    assert not got[0]


def test_optional_sequence():
    rng = np.random.default_rng(11)
    feeds = three(rng)
    nodes = [CONSTRUCT, helper.make_node("Optional", ["s"], ["o"]),
             helper.make_node("OptionalHasElement", ["o"], ["has"]),
             helper.make_node("OptionalGetElement", ["o"], ["s2"]),
             helper.make_node("SequenceLength", ["s2"], ["n"])]
    m = model(nodes, feeds, [helper.make_tensor_value_info("has", TensorProto.BOOL, []),
                             seq_vi("s2", F), helper.make_tensor_value_info("n", TensorProto.INT64, [])])
    got = compare(m, feeds)
    assert got[0] and got[2] == 3


def test_optional_has_element_without_input():
    # opset 18: the input may be left out, which means "no element"
    feeds = {"x": np.array([1.5, -2.0], np.float32)}
    nodes = [helper.make_node("OptionalHasElement", [""], ["has"]),
             helper.make_node("OptionalHasElement", ["x"], ["has_x"]),
             helper.make_node("OptionalGetElement", ["x"], ["y"])]
    m = model(nodes, feeds, [helper.make_tensor_value_info("has", TensorProto.BOOL, []),
                             helper.make_tensor_value_info("has_x", TensorProto.BOOL, []),
                             helper.make_tensor_value_info("y", F, None)])
    got = compare(m, feeds)
    assert not got[0] and got[1]


# ---- errors: a clear message, no crash ----

def expect_error(m, feeds, pattern):
    with pytest.raises(Exception, match=pattern):
        run_kiln(m, feed(feeds))


def test_errors():
    rng = np.random.default_rng(12)
    feeds = three(rng)
    feeds["p"] = np.array(3, np.int64)
    m = model([CONSTRUCT, helper.make_node("SequenceAt", ["s", "p"], ["y"])], feeds,
              [helper.make_tensor_value_info("y", F, None)])
    expect_error(m, feeds, "position 3")

    feeds2 = dict(feeds)
    feeds2["p"] = np.array(-4, np.int64)
    m = model([CONSTRUCT, helper.make_node("SequenceErase", ["s", "p"], ["s2"])], feeds2, [seq_vi("s2", F)])
    expect_error(m, feeds2, "position -4")

    feeds3 = {k: feeds[k] for k in "abc"}
    m = model([CONSTRUCT, helper.make_node("ConcatFromSequence", ["s"], ["y"], axis=1)], feeds3,
              [helper.make_tensor_value_info("y", F, None)])
    expect_error(m, feeds3, "differ")

    feeds4 = {"x": rand(rng, (5, 2)), "split": np.array([2, 2], np.int64)}
    m = model([helper.make_node("SplitToSequence", ["x", "split"], ["s"])], feeds4, [seq_vi("s", F)])
    expect_error(m, feeds4, "add up to 4")

    feeds5 = {"a": rand(rng, (2,)), "b": rand(rng, (2,), np.int64)}
    m = model([helper.make_node("SequenceConstruct", ["a", "b"], ["s"])], feeds5, [seq_vi("s", F)])
    expect_error(m, feeds5, "element type")

    feeds6 = {"x": rand(rng, (2,))}
    tp = helper.make_tensor_type_proto(F, None)
    m = model([helper.make_node("Optional", [], ["o"], type=tp),
               helper.make_node("OptionalGetElement", ["o"], ["y"])], feeds6,
              [helper.make_tensor_value_info("y", F, None)])
    expect_error(m, feeds6, "empty")
