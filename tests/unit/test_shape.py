"""Value-making ops against onnxruntime: Shape (start/end), Size, ConstantOfShape, Constant (every
value attribute), Range (every numeric type), and the static folding of Shape/Size."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from tensor_testlib import DTYPES, assert_same, check_op, data, expect_error, kiln, oracle, run_levels

I64 = np.int64


def rng_for(*key):
    return np.random.default_rng(abs(hash(key)) % (2 ** 32))


# ---------------------------------------------------------------- Shape / Size

@pytest.mark.parametrize("dt", DTYPES)
def test_shape_size(dt):
    x = data(rng_for("shape", dt), (2, 3, 4, 5), dt)
    check_op("Shape", [("x", x)], opset=13)
    check_op("Size", [("x", x)], opset=13)
    for start, end in ((1, None), (-2, None), (0, -1), (1, 3), (-100, 100), (3, 1), (None, -3)):
        attrs = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        check_op("Shape", [("x", x)], attrs, opset=15)


def test_shape_size_empty_and_scalar():
    check_op("Shape", [("x", np.zeros((0, 3), np.float32))], opset=1)
    check_op("Size", [("x", np.zeros((0, 3), np.float32))], opset=1)
    check_op("Size", [("x", np.array(3.0, np.float32))], opset=19)
    check_op("Shape", [("x", data(rng_for("shs"), (2, 1), object))], inits=("x",), opset=19)


def test_shape_folds_with_symbolic_dims():
    """Shape of a partly symbolic input, sliced to its concrete part, must fold statically and
    drive a Reshape; the symbolic part flows at run time."""
    F = TensorProto.FLOAT
    nodes = [helper.make_node("Shape", ["x"], ["s"], start=1),
             helper.make_node("ReduceProd", ["s"], ["p"], keepdims=1),
             helper.make_node("Concat", ["m1", "p"], ["t"], axis=0),
             helper.make_node("Reshape", ["x", "t"], ["r"]),
             helper.make_node("Size", ["x"], ["n"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, ["B", 3, 4])],
                          [helper.make_tensor_value_info("r", F, None),
                           helper.make_tensor_value_info("n", TensorProto.INT64, None)],
                          initializer=[helper.make_tensor("m1", TensorProto.INT64, [1], [-1])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    for b in (1, 3):
        x = data(rng_for("fold", b), (b, 3, 4))
        want = oracle(m, {"x": x})
        for got in run_levels(m, {"x": x}):
            assert_same(got[0], want[0])
            assert_same(got[1], want[1])


# ---------------------------------------------------------------- ConstantOfShape

@pytest.mark.parametrize("dt", [np.float32, np.float16, np.float64, np.int64, np.int32, np.int8, np.uint8, np.bool_])
def test_constant_of_shape(dt):
    v = data(rng_for("cos", dt), (1,), dt)
    attrs = {"value": numpy_helper.from_array(v, "value")}
    for shape in ((2, 3), (4,), (), (3, 0)):
        check_op("ConstantOfShape", [("s", np.array(shape, I64))], attrs, opset=20)
        check_op("ConstantOfShape", [("s", np.array(shape, I64))], attrs, inits=("s",), opset=9)


def test_constant_of_shape_default_and_errors():
    check_op("ConstantOfShape", [("s", np.array([2, 2], I64))], opset=9)
    expect_error("ConstantOfShape", [("s", np.array([2, -1], I64))], opset=9, match="negative")
    expect_error("ConstantOfShape", [("s", np.array([2, 1], np.int32))], opset=9, match="int64")


# ---------------------------------------------------------------- Constant

def constant_cases(rng):
    t = data(rng, (2, 3))
    return [
        ({"value": numpy_helper.from_array(t, "v")}, 1),
        ({"value": numpy_helper.from_array(data(rng, (4,), np.int8), "v")}, 9),
        ({"value": numpy_helper.from_array(data(rng, (2, 2), np.float16), "v")}, 13),
        ({"value": numpy_helper.from_array(data(rng, (3,), np.bool_), "v")}, 13),
        ({"value_float": 2.5}, 12),
        ({"value_floats": [1.5, -2.0, 3.25]}, 12),
        ({"value_int": -7}, 12),
        ({"value_ints": [4, 5, -6]}, 19),
        ({"value_string": "kiln"}, 12),
        ({"value_strings": ["a", "", "ccc"]}, 21),
        ({"value": numpy_helper.from_array(np.array(["x", "yy"], dtype=object), "v")}, 13),
    ]


@pytest.mark.parametrize("case", range(11))
def test_constant(case):
    attrs, opset = constant_cases(rng_for("const"))[case]
    check_op("Constant", [], attrs, opset=opset)


def test_constant_sparse():
    sp = helper.make_sparse_tensor(helper.make_tensor("v", TensorProto.FLOAT, [3], [1.5, -2.0, 4.0]),
                                   helper.make_tensor("i", TensorProto.INT64, [3], [1, 4, 7]), [3, 3])
    dense = np.zeros(9, np.float32)
    dense[[1, 4, 7]] = [1.5, -2.0, 4.0]
    check_op("Constant", [], {"sparse_value": sp}, opset=13, want=[dense.reshape(3, 3)])


def test_constant_errors():
    with pytest.raises(kiln.KilnError):
        node = helper.make_node("Constant", [], ["y"], value_int=1, value_float=2.0)
        g = helper.make_graph([node], "g", [], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
        m.ir_version = 8
        kiln.InferenceSession(m.SerializeToString(), opt_level=0).run(None, {})


# ---------------------------------------------------------------- Range

@pytest.mark.parametrize("dt", [np.float32, np.float64, np.int16, np.int32, np.int64])
@pytest.mark.parametrize("start,limit,delta", [(0, 10, 3), (10, -4, -2), (5, 5, 1), (3, 1, 1), (-2.5, 4.1, 0.7),
                                               (1, 2, 5)])
def test_range(dt, start, limit, delta):
    if np.dtype(dt).kind == "i" and (start != int(start) or delta != int(delta)):
        start, limit, delta = int(start), int(limit), 1
    s, l, d = (np.array(v, dt) for v in (start, limit, delta))
    check_op("Range", [("s", s), ("l", l), ("d", d)], opset=11)


def test_range_runtime_inputs_and_errors():
    # scalars cannot be fed through the Python binding: feed 1-element tensors as the kernel
    # accepts them, and compare with the expected values
    s, l, d = np.array([1.0], np.float32), np.array([2.0], np.float32), np.array([0.25], np.float32)
    check_op("Range", [("s", s), ("l", l), ("d", d)], opset=11, want=[np.arange(1.0, 2.0, 0.25, dtype=np.float32)])
    expect_error("Range", [("s", np.array(1, I64)), ("l", np.array(5, I64)), ("d", np.array(0, I64))], opset=11,
                 inits=("s", "l", "d"), match="delta")
    expect_error("Range", [("s", np.array(1, I64)), ("l", np.array(5, np.int32)), ("d", np.array(1, I64))],
                 opset=11, inits=("s", "l", "d"), match="input 1")
