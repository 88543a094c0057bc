"""Equivalents of the ONNX Runtime test models that its Python API tests load (testdata/*.onnx),
built with onnx.helper; tests/test_ort_compat.py writes them into a testdata/ folder."""
import json
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

F, I64, B, S = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL, TensorProto.STRING


def _model(nodes, name, inputs, outputs, inits=(), opset=17, **kw):
    g = helper.make_graph(nodes, name, inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], **kw)
    m.ir_version = 8
    return m


def mul_1():  # Y = X * W, W = [[1, 2], [3, 4], [5, 6]]
    w = numpy_helper.from_array(np.arange(1, 7, dtype=np.float32).reshape(3, 2), "W")
    return _model([helper.make_node("Mul", ["X", "W"], ["Y"])], "mul_1",
                  [helper.make_tensor_value_info("X", F, [3, 2])], [helper.make_tensor_value_info("Y", F, [3, 2])],
                  [w])


def matmul(symbolic):
    w = numpy_helper.from_array(np.array([[1], [2]], np.float32), "W")
    rows = "None" if symbolic else 3
    return _model([helper.make_node("MatMul", ["X", "W"], ["Y"])], "matmul",
                  [helper.make_tensor_value_info("X", F, [rows, 2])],
                  [helper.make_tensor_value_info("Y", F, [rows, 1])], [w])


def logicaland():
    return _model([helper.make_node("And", ["input1:0", "input:0"], ["output:0"])], "logicaland",
                  [helper.make_tensor_value_info("input1:0", B, [2, 2]), helper.make_tensor_value_info("input:0", B, [2, 2])],
                  [helper.make_tensor_value_info("output:0", B, [2, 2])])


def identity_string():
    return _model([helper.make_node("Identity", ["input:0"], ["output:0"])], "identity_string",
                  [helper.make_tensor_value_info("input:0", S, [2, 2])], [helper.make_tensor_value_info("output:0", S, [2, 2])])


def _seq(name, elem):
    return helper.make_value_info(name, helper.make_sequence_type_proto(helper.make_tensor_type_proto(elem, None)))


def sequence_length():
    return _model([helper.make_node("SequenceLength", ["X"], ["Y"])], "sequence_length", [_seq("X", F)],
                  [helper.make_tensor_value_info("Y", I64, [])])


def sequence_construct():
    return _model([helper.make_node("SequenceConstruct", ["tensor1", "tensor2"], ["output_sequence"])], "seq_construct",
                  [helper.make_tensor_value_info("tensor1", I64, [2, 3]), helper.make_tensor_value_info("tensor2", I64, [2, 3])],
                  [_seq("output_sequence", I64)])


def sequence_insert():
    return _model([helper.make_node("SequenceInsert", ["input_seq", "tensor"], ["output_sequence"])], "seq_insert",
                  [_seq("input_seq", I64), helper.make_tensor_value_info("tensor", I64, [2, 3])],
                  [_seq("output_sequence", I64)])


def abs_free_dimensions():
    x = helper.make_tensor_value_info("x", F, ["Dim1", "Dim2", 5])
    dims = x.type.tensor_type.shape.dim
    dims[0].denotation, dims[1].denotation = "DATA_BATCH", "DATA_CHANNEL"
    return _model([helper.make_node("Abs", ["x"], ["y"])], "abs_free_dimensions", [x],
                  [helper.make_tensor_value_info("y", F, ["Dim1", "Dim2", 5])])


def external_initializer_from_user():
    """Pad whose pads initializer lives in a file that is not on disk: the user supplies it."""
    pads = TensorProto()
    pads.name, pads.data_type = "Pads_not_on_disk", I64
    pads.dims.append(4)
    pads.data_location = TensorProto.EXTERNAL
    for k, v in (("location", "Pads_not_on_disk.bin"), ("offset", "0"), ("length", "32")):
        e = pads.external_data.add()
        e.key, e.value = k, v
    return _model([helper.make_node("Pad", ["X", "Pads_not_on_disk"], ["Y"])], "pad_user",
                  [helper.make_tensor_value_info("X", F, [2, 2])], [helper.make_tensor_value_info("Y", F, [3, 3])], [pads])


def mnist_like(seed=0):
    """Conv, Relu, MaxPool, Reshape, MatMul, Add: Input3 [1, 1, 8, 8] -> Plus214_Output_0 [1, 10]."""
    r = np.random.default_rng(seed)
    inits = [numpy_helper.from_array(r.standard_normal((4, 1, 3, 3)).astype(np.float32), "conv_w"),
             numpy_helper.from_array(r.standard_normal(4).astype(np.float32), "conv_b"),
             numpy_helper.from_array(np.array([1, 64], np.int64), "shape"),
             numpy_helper.from_array(r.standard_normal((64, 10)).astype(np.float32), "fc_w"),
             numpy_helper.from_array(r.standard_normal((1, 10)).astype(np.float32), "fc_b")]
    nodes = [helper.make_node("Conv", ["Input3", "conv_w", "conv_b"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Reshape", ["p", "shape"], ["f"]),
             helper.make_node("MatMul", ["f", "fc_w"], ["m"]),
             helper.make_node("Add", ["m", "fc_b"], ["Plus214_Output_0"])]
    return _model(nodes, "mnist", [helper.make_tensor_value_info("Input3", F, [1, 1, 8, 8])],
                  [helper.make_tensor_value_info("Plus214_Output_0", F, [1, 10])], inits)


def squeezenet_meta():
    m = _model([helper.make_node("Relu", ["data_0"], ["softmaxout_1"])], "squeezenet_old",
               [helper.make_tensor_value_info("data_0", F, [1, 3])], [helper.make_tensor_value_info("softmaxout_1", F, [1, 3])],
               producer_name="onnx-caffe2")
    return m


def ort_config_model():
    m = mul_1()
    cfg = {"session_options": {"inter_op_num_threads": 5, "intra_op_num_threads": 2, "graph_optimization_level": 3,
                               "enable_profiling": 1}}
    helper.set_model_props(m, {"ort_config": json.dumps(cfg)})
    return m


def write_testdata(folder):
    os.makedirs(folder, exist_ok=True)
    simple = {"mul_1.onnx": mul_1(), "matmul_1.onnx": matmul(False), "matmul_2.onnx": matmul(True),
              "logicaland.onnx": logicaland(), "identity_string.onnx": identity_string(),
              "sequence_length.onnx": sequence_length(), "sequence_construct.onnx": sequence_construct(),
              "sequence_insert.onnx": sequence_insert(), "abs_free_dimensions.onnx": abs_free_dimensions(),
              "model_with_external_initializer_come_from_user.onnx": external_initializer_from_user(),
              "mnist.onnx": mnist_like(), "squeezenet_meta.onnx": squeezenet_meta(),
              "model_with_valid_ort_config_json.onnx": ort_config_model()}
    for name, m in simple.items():
        with open(os.path.join(folder, name), "wb") as f:
            f.write(m.SerializeToString())
    # initializers in an external data file beside the model
    m = mnist_like(1)
    onnx.save(m, os.path.join(folder, "model_with_orig_ext_data.onnx"), save_as_external_data=True,
              all_tensors_to_one_file=True, location="model_with_orig_ext_data.onnx.data", size_threshold=0)
