"""Control-flow bodies keep their frame and a memory plan per shape signature (runner.c): the
results must stay those of onnxruntime across repeated runs, changing shapes (of a body's inputs
and of the outer values it reads), alternating branches, growing loop-carried values, failures
inside a body, and under a memory limit."""
import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import ROOT, run_ort, assert_same
import kiln

sys.path.insert(0, os.path.join(ROOT, "bench"))
import small_graphs as sg  # noqa: E402


def session(model, threads=1, **opts):
    so = kiln.SessionOptions()
    for k, v in opts.items():
        setattr(so, k, v)
    return kiln.InferenceSession(model.SerializeToString(), sess_options=so, threads=threads)


def check_runs(model, feed_list, threads=1, rtol=1e-5, atol=1e-5, **opts):
    s = session(model, threads, **opts)
    for f in feed_list:
        want = run_ort(model, f)
        for _ in range(2):  # the second run uses the plans the first one made
            got = s.run(None, f)
            for g, w in zip(got, want):
                assert_same(g, w, rtol=rtol, atol=atol)


@pytest.mark.parametrize("threads", [1, 2])
def test_loop_1000(threads):
    rng = np.random.default_rng(1)
    check_runs(sg.loop_model(), [{"x": rng.standard_normal((1, sg.W)).astype(np.float32)} for _ in range(2)],
               threads=threads)


def test_nested_if_every_path():
    m = sg.nested_if_model()
    rng = np.random.default_rng(2)
    feeds = []
    for mask in range(8):
        f = {"x": rng.standard_normal((1, sg.W)).astype(np.float32)}
        for level in range(1, 4):
            f[f"c{level}"] = np.array(bool(mask >> (level - 1) & 1))
        feeds.append(f)
    check_runs(m, feeds + feeds[::-1])


def test_scan_changing_shapes():
    """A symbolic width and length: each run's body sees new shapes, then old ones again."""
    m = sg.scan_model()
    for vi in list(m.graph.input) + list(m.graph.output):
        for d in vi.type.tensor_type.shape.dim:
            d.dim_param = "d%d" % id(d)
    # the body's declared shapes must not pin the width either
    body = m.graph.node[0].attribute[0].g
    for vi in list(body.input) + list(body.output):
        vi.type.tensor_type.shape.dim[0].dim_param = "w"
    init = m.graph.initializer[0]
    m.graph.ClearField("initializer")
    m.graph.input.append(helper.make_tensor_value_info("g", TensorProto.FLOAT, None))
    rng = np.random.default_rng(3)
    feeds = []
    for steps, w in ((5, 8), (7, 32), (5, 8), (1, 3), (9, 100), (7, 32), (2, 8), (3, 17)):
        feeds.append({"s0": rng.standard_normal(w).astype(np.float32),
                      "xs": rng.standard_normal((steps, w)).astype(np.float32),
                      "g": rng.standard_normal(w).astype(np.float32)})
    del init
    check_runs(m, feeds)


def if_outer_model():
    """An If whose branches have no inputs of their own and read outer values of changing shape."""
    then_g = helper.make_graph(
        [helper.make_node("Mul", ["x", "x"], ["sq"]), helper.make_node("Tanh", ["sq"], ["t"]),
         helper.make_node("Add", ["t", "x"], ["o"])],
        "then", [], [helper.make_tensor_value_info("o", TensorProto.FLOAT, None)])
    else_g = helper.make_graph(
        [helper.make_node("Concat", ["x", "x"], ["cc"], axis=0), helper.make_node("Sigmoid", ["cc"], ["e"])],
        "else", [], [helper.make_tensor_value_info("e", TensorProto.FLOAT, None)])
    g = helper.make_graph(
        [helper.make_node("Relu", ["x0"], ["x"]),
         helper.make_node("If", ["c"], ["y"], then_branch=then_g, else_branch=else_g)],
        "g", [helper.make_tensor_value_info("x0", TensorProto.FLOAT, ["n", "m"]),
              helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_if_outer_shapes_change():
    rng = np.random.default_rng(4)
    feeds = []
    for n, k in ((2, 3), (40, 50), (2, 3), (1, 1), (40, 50), (7, 300)):
        for c in (True, False):
            feeds.append({"x0": rng.standard_normal((n, k)).astype(np.float32), "c": np.array(c)})
    check_runs(if_outer_model(), feeds)


def growing_loop_model():
    """A loop-carried value that grows every iteration (a decoder's token list): every body call
    has a new shape signature."""
    body = helper.make_graph(
        [helper.make_node("ReduceMean", ["acc_in"], ["m"], axes=[1], keepdims=1),
         helper.make_node("Tanh", ["m"], ["tm"]),
         helper.make_node("Concat", ["acc_in", "tm"], ["acc_out"], axis=1),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("acc_in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("acc_out", TensorProto.FLOAT, None)])
    g = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "x"], ["y"], body=body)], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 2]),
         helper.make_tensor_value_info("M", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


def test_loop_growing_carried_value():
    rng = np.random.default_rng(5)
    feeds = [{"x": rng.standard_normal((3, 2)).astype(np.float32), "M": np.array(m, np.int64)}
             for m in (60, 3, 60, 0, 1)]
    check_runs(growing_loop_model(), feeds)


def test_loop_under_memory_limit():
    rng = np.random.default_rng(6)
    check_runs(sg.loop_model(trips=50), [{"x": rng.standard_normal((1, sg.W)).astype(np.float32)}],
               memory_limit=1 << 24)


def failing_body_model():
    """Loop whose body reshapes to a shape given as input: a wrong one fails inside the body."""
    body = helper.make_graph(
        [helper.make_node("Reshape", ["v_in", "shape"], ["r"]),
         helper.make_node("Tanh", ["r"], ["t"]),
         helper.make_node("Reshape", ["t", "orig"], ["v_out"]),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body", [helper.make_tensor_value_info("i", TensorProto.INT64, []),
                 helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
                 helper.make_tensor_value_info("v_in", TensorProto.FLOAT, [4, 6])],
        [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
         helper.make_tensor_value_info("v_out", TensorProto.FLOAT, [4, 6])])
    g = helper.make_graph(
        [helper.make_node("Loop", ["M", "", "v"], ["y"], body=body)], "g",
        [helper.make_tensor_value_info("v", TensorProto.FLOAT, [4, 6]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 6])],
        initializer=[numpy_helper.from_array(np.array(5, np.int64), "M"),
                     numpy_helper.from_array(np.array([4, 6], np.int64), "orig")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_failure_inside_body_then_good_runs():
    m = failing_body_model()
    s = session(m)
    v = np.random.default_rng(7).standard_normal((4, 6)).astype(np.float32)
    good = {"v": v, "shape": np.array([8, 3], np.int64)}
    want = run_ort(m, good)[0]
    assert_same(s.run(None, good)[0], want)
    with pytest.raises(kiln.KilnError, match="Reshape"):
        s.run(None, {"v": v, "shape": np.array([5, 5], np.int64)})
    for _ in range(2):  # the body's frame is free again, its plan still right
        assert_same(s.run(None, good)[0], want)
    other = {"v": v, "shape": np.array([2, 12], np.int64)}
    assert_same(s.run(None, other)[0], run_ort(m, other)[0])


def test_release_memory_drops_body_plans():
    """kiln_session_release_memory frees the bodies' frames and plans too; runs after it re-plan."""
    m = sg.loop_model(trips=20)
    s = session(m)
    f = {"x": np.random.default_rng(8).standard_normal((1, sg.W)).astype(np.float32)}
    want = run_ort(m, f)
    for _ in range(2):
        for g, w in zip(s.run(None, f), want):
            assert_same(g, w, rtol=1e-5, atol=1e-5)
        s._lib.kiln_session_release_memory(s._handle())
