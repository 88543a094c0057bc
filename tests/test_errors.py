"""Bad input gets a clear error naming what is wrong, never a crash."""
import os
import random

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import MODELS, kiln, node_model


def open_err(data_or_path):
    with pytest.raises(kiln.KilnError) as e:
        kiln.InferenceSession(data_or_path)
    return str(e.value)


def small_model():
    return node_model("Add", [("a", np.ones((2, 3), np.float32)), ("b", np.ones((2, 3), np.float32))], ["c"])


def test_truncated_file(tmp_path):
    data = open(os.path.join(MODELS, "bert_tiny.onnx"), "rb").read()
    for cut in (10, 1000, len(data) // 2, len(data) - 7):
        p = tmp_path / "t.onnx"
        p.write_bytes(data[:cut])
        msg = open_err(str(p))
        assert "truncated" in msg or "malformed" in msg or "not" in msg, msg


def test_random_bytes():
    rng = random.Random(3)
    for _ in range(50):
        data = bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 400)))
        msg = open_err(data)
        assert msg


def test_not_onnx_file(tmp_path):
    p = tmp_path / "readme.onnx"
    p.write_text("This is a text file, not a model.\n" * 20)
    msg = open_err(str(p))
    assert "ONNX" in msg or "protobuf" in msg or "malformed" in msg


def test_empty_and_missing_file(tmp_path):
    p = tmp_path / "empty.onnx"
    p.write_bytes(b"")
    assert "empty" in open_err(str(p))
    assert "cannot open" in open_err(str(tmp_path / "nope.onnx"))


def test_missing_external_data(tmp_path):
    w = numpy_helper.from_array(np.arange(1024, dtype=np.float32).reshape(32, 32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 32])], [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = str(tmp_path / "m.onnx")
    onnx.save_model(m, path, save_as_external_data=True, all_tensors_to_one_file=True, location="w.bin",
                    size_threshold=0)
    x = np.ones((1, 32), np.float32)
    y = kiln.InferenceSession(path).run(None, {"x": x})[0]
    np.testing.assert_allclose(y, x @ np.arange(1024, dtype=np.float32).reshape(32, 32))
    os.remove(tmp_path / "w.bin")
    msg = open_err(path)
    assert "w.bin" in msg and "'w'" in msg


def test_unsupported_ops_all_listed():
    nodes = [helper.make_node("FrobnicateA", ["x"], ["y"], name="first_bad", domain="example.custom"),
             helper.make_node("FrobnicateB", ["y"], ["z"], name="second_bad", domain="example.custom")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("example.custom", 1)])
    msg = open_err(m.SerializeToString())
    assert "first_bad" in msg and "second_bad" in msg and "FrobnicateA" in msg and "FrobnicateB" in msg


def test_dangling_input_named():
    g = helper.make_graph([helper.make_node("Relu", ["ghost"], ["y"], name="r")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    msg = open_err(m.SerializeToString())
    assert "'r'" in msg and "ghost" in msg


def run_err(sess, feeds):
    with pytest.raises(kiln.KilnError) as e:
        sess.run(None, feeds)
    return str(e.value)


def test_wrong_input_name_dtype_rank_shape_missing():
    s = kiln.InferenceSession(small_model().SerializeToString())
    a = np.ones((2, 3), np.float32)
    msg = run_err(s, {"a": a, "bee": a})
    assert "bee" in msg and "'a'" in msg and "'b'" in msg
    msg = run_err(s, {"a": a, "b": a.astype(np.float64)})
    assert "'b'" in msg and "float64" in msg and "float32" in msg
    msg = run_err(s, {"a": a, "b": np.ones((2, 3, 1), np.float32)})
    assert "'b'" in msg and "rank 3" in msg
    msg = run_err(s, {"a": a, "b": np.ones((2, 4), np.float32)})
    assert "'b'" in msg and "[2,4]" in msg
    msg = run_err(s, {"a": a})
    assert "'b'" in msg and "missing" in msg


def test_runtime_error_names_node():
    """An index out of range at run time is reported with the node's name, not a crash."""
    m = node_model("Gather", [("data", np.ones((3, 4), np.float32)), ("idx", np.array([0, 1], np.int64))],
                   ["out"], attrs={"axis": 0})
    m.graph.node[0].name = "my_gather"
    s = kiln.InferenceSession(m.SerializeToString())
    msg = run_err(s, {"data": np.ones((3, 4), np.float32), "idx": np.array([0, 7], np.int64)})
    assert "my_gather" in msg
