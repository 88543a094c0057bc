"""Planning and running: constant folding, dead nodes, view aliasing, plans per shape signature,
threads (results independent of the count, idle workers asleep), symbolic shapes."""
import resource
import time

import numpy as np
import pytest
import onnx
from onnx import TensorProto, helper, numpy_helper

from util import check, kiln, run_ort


def make(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def folding_model():
    rng = np.random.default_rng(0)
    a = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "a")
    b = numpy_helper.from_array(rng.standard_normal((4, 8)).astype(np.float32), "b")
    nodes = [helper.make_node("Add", ["a", "b"], ["ab"]),              # constant
             helper.make_node("Transpose", ["ab"], ["abt"], perm=[1, 0]),  # constant
             helper.make_node("Shape", ["x"], ["xs"]),                 # static shape -> constant
             helper.make_node("Reshape", ["x", "xs"], ["r"]),
             helper.make_node("MatMul", ["r", "abt"], ["h"]),
             helper.make_node("Relu", ["x"], ["unused"]),              # dead
             helper.make_node("Sigmoid", ["h"], ["y"])]
    return make(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 8])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])], [a, b])


def test_constant_folding_and_dead_nodes():
    m = folding_model()
    x = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    s = kiln.InferenceSession(m.SerializeToString())
    np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)
    st = s.plan_stats()
    assert st["folded_nodes"] == 4, st   # Add, Transpose, Shape folded; Relu dead
    assert st["nodes"] == 2, st          # MatMul, Sigmoid: Reshape(x, Shape(x)) is x itself
    s0 = kiln.InferenceSession(m.SerializeToString(), opt_level=0)
    np.testing.assert_allclose(s0.run(None, {"x": x})[0], want, rtol=1e-5, atol=1e-6)
    assert s0.plan_stats()["folded_nodes"] == 0


def chain_model():
    """A chain of element-wise ops with view ops between them: buffers can be reused and views
    must not copy."""
    nodes, prev = [], "x"
    for i in range(6):
        nodes.append(helper.make_node("Sigmoid" if i % 2 else "Tanh", [prev], [f"t{i}"]))
        nodes.append(helper.make_node("Reshape", [f"t{i}", "shape_a" if i % 2 else "shape_b"], [f"r{i}"]))
        prev = f"r{i}"
    nodes.append(helper.make_node("Identity", [prev], ["y"]))
    inits = [numpy_helper.from_array(np.array([64, 64], np.int64), "shape_a"),
             numpy_helper.from_array(np.array([16, 256], np.int64), "shape_b")]
    return make(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64, 64])],
                [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)


def test_arena_reuse_and_views():
    m = chain_model()
    x = np.random.default_rng(2).standard_normal((64, 64)).astype(np.float32)
    want = run_ort(m, {"x": x})[0]
    s = kiln.InferenceSession(m.SerializeToString())
    for _ in range(3):  # first run records, later runs use the arena
        np.testing.assert_allclose(s.run(None, {"x": x})[0], want, rtol=1e-6, atol=1e-6)
    st = s.plan_stats()
    one = 64 * 64 * 4
    # 6 op outputs of 16 KiB each; views add nothing; lifetimes let at most two be live at once
    assert st["naive_bytes"] == 6 * one, st
    assert st["arena_bytes"] <= 2 * one, st


def test_plan_per_shape_signature():
    x_in = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5])
    m = make([helper.make_node("Softmax", ["x"], ["s"], axis=1), helper.make_node("Neg", ["s"], ["y"])],
             [x_in], [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 5])])
    s = kiln.InferenceSession(m.SerializeToString())
    rng = np.random.default_rng(3)
    for n in (1, 7, 1, 300, 7, 300):
        x = rng.standard_normal((n, 5)).astype(np.float32)
        np.testing.assert_allclose(s.run(None, {"x": x})[0], run_ort(m, {"x": x})[0], rtol=1e-5, atol=1e-6)
    assert s.get_inputs()[0].shape == ["n", 5]
    assert s.get_outputs()[0].shape == ["n", 5]


def test_threads_give_same_results_and_idle_workers_sleep():
    m = make([helper.make_node("Mul", ["x", "x"], ["x2"]), helper.make_node("Tanh", ["x2"], ["y"])],
             [helper.make_tensor_value_info("x", TensorProto.FLOAT, [512, 1024])],
             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [512, 1024])])
    x = np.random.default_rng(4).standard_normal((512, 1024)).astype(np.float32)
    outs = []
    for th in (1, 2, 3):
        s = kiln.InferenceSession(m.SerializeToString(), threads=th)
        outs.append(s.run(None, {"x": x})[0])
    for o in outs[1:]:
        np.testing.assert_array_equal(o, outs[0])
    # s has 3 threads and just ran; while idle its workers must not spin
    before = resource.getrusage(resource.RUSAGE_SELF)
    time.sleep(0.5)
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    assert cpu < 0.1, f"{cpu:.3f} s of CPU used while idle"
    del s


def test_nodes_out_of_order_are_sorted():
    nodes = [helper.make_node("Relu", ["h"], ["y"]), helper.make_node("Neg", ["x"], ["h"])]
    m = make(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    x = np.array([1, -2, 3, -4], np.float32)
    np.testing.assert_array_equal(kiln.InferenceSession(m.SerializeToString()).run(None, {"x": x})[0],
                                  np.maximum(-x, 0))


def test_cycle_is_reported():
    nodes = [helper.make_node("Relu", ["h"], ["y"], name="a"), helper.make_node("Neg", ["y"], ["h"], name="b")]
    m = make(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])],
             [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    try:
        kiln.InferenceSession(m.SerializeToString())
        assert False, "expected an error"
    except kiln.KilnError as e:
        assert "cycle" in str(e)


def test_com_microsoft_node_without_its_opset_import():
    """ONNX Runtime takes com.microsoft nodes in a model that does not import the domain (its
    transformers optimizer writes such graphs at opt_level 0); kiln reads them as version 1. Other
    domains stay strict."""
    import onnxruntime as ort
    from onnx import TensorProto, helper
    x = np.random.default_rng(8).standard_normal((3, 5)).astype(np.float32)
    node = helper.make_node("FastGelu", ["x"], ["y"], domain="com.microsoft")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 5])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    data = m.SerializeToString()
    want = ort.InferenceSession(data, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = kiln.InferenceSession(data).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    node.domain = "ai.onnx.ml"
    node.op_type = "Normalizer"
    g2 = helper.make_graph([node], "g", list(g.input), list(g.output))
    m2 = helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17)])
    m2.ir_version = 8
    with pytest.raises(kiln.KilnError, match="domain 'ai.onnx.ml' is not imported"):
        kiln.InferenceSession(m2.SerializeToString())
