"""Writes the bundled example model examples/models/tiny_mlp.onnx: y = softmax(relu(x W1 + b1) W2 + b2),
x: float32[N, 4] (N symbolic), y: float32[N, 3]. Fixed seed, so the file is reproducible."""
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

rng = np.random.default_rng(7)
w1 = rng.standard_normal((4, 8)).astype(np.float32)
b1 = rng.standard_normal(8).astype(np.float32)
w2 = rng.standard_normal((8, 3)).astype(np.float32)
b2 = rng.standard_normal(3).astype(np.float32)
nodes = [
    helper.make_node("MatMul", ["x", "w1"], ["h0"], name="fc1"),
    helper.make_node("Add", ["h0", "b1"], ["h1"], name="fc1_bias"),
    helper.make_node("Relu", ["h1"], ["h2"], name="relu"),
    helper.make_node("Gemm", ["h2", "w2", "b2"], ["logits"], name="fc2"),
    helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=-1),
]
graph = helper.make_graph(
    nodes, "tiny_mlp",
    [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
    [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])],
    initializer=[numpy_helper.from_array(a, n) for a, n in ((w1, "w1"), (b1, "b1"), (w2, "w2"), (b2, "b2"))])
model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-examples")
model.ir_version = 8
onnx.checker.check_model(model)
out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "tiny_mlp.onnx")
onnx.save(model, out)
print("wrote", out)
