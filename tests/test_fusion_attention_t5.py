"""T5's self-attention as torch's exporter writes it (issue 7): no score scaling, a relative position
bias gathered from a learned table by buckets computed at run time (Range, Sub, Abs, Min with a
ConstantOfShape), added with the padding mask through Where, computed in the first layer (which
reads its query and key lengths off the head-split tensors) and reused by the next, and P.V reshaped
to [B, -1, S, H] before the head merge. Both layers must fuse to Attention with the dims symbolic,
and match onnxruntime as batch and sequence change between runs."""
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from util import assert_same, kiln, rand, run_ort

N, H, BUCKETS = 4, 8, 6
D = N * H
LOWEST = np.finfo(np.float32).min


def const(name, v):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(v), name))


def layer(i, x, rng, inits, bias=None):
    """One attention layer on x; the first (bias None) also builds the position bias. Returns the
    nodes, the layer's output and the bias."""
    p = f"l{i}_"
    nodes = [helper.make_node("Shape", [x], [p + "shp"]),
             helper.make_node("Gather", [p + "shp", "i0"], [p + "b"], axis=0),
             helper.make_node("Gather", [p + "shp", "i1"], [p + "s"], axis=0),
             helper.make_node("Unsqueeze", [p + "b", "ax0"], [p + "b1"]),
             helper.make_node("Unsqueeze", [p + "s", "ax0"], [p + "s1"]),
             helper.make_node("Concat", [p + "b1", p + "s1", "m1", "hs"], [p + "split"], axis=0)]
    for t in "qkvo":
        inits[p + "w" + t] = rng.uniform(-0.5, 0.5, (D, D)).astype(np.float32)
    for t in "qkv":
        nodes += [helper.make_node("MatMul", [x, p + "w" + t], [p + t + "3"]),
                  helper.make_node("Reshape", [p + t + "3", p + "split"], [p + t + "r"])]
    nodes += [helper.make_node("Transpose", [p + "qr"], [p + "q4"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", [p + "kr"], [p + "kt"], perm=[0, 2, 3, 1]),
              helper.make_node("Transpose", [p + "vr"], [p + "v4"], perm=[0, 2, 1, 3])]
    if bias is None:
        # the query and key lengths, read off the head-split tensors (a second transpose of the
        # keys exists only for its shape)
        nodes += [helper.make_node("Transpose", [p + "kr"], [p + "k4"], perm=[0, 2, 1, 3]),
                  helper.make_node("Shape", [p + "q4"], [p + "qshp"]),
                  helper.make_node("Gather", [p + "qshp", "i2"], [p + "qlen"], axis=0),
                  helper.make_node("Shape", [p + "k4"], [p + "kshp"]),
                  helper.make_node("Gather", [p + "kshp", "i2"], [p + "klen"], axis=0),
                  helper.make_node("Range", ["i0", p + "qlen", "i1"], [p + "ctx"]),
                  helper.make_node("Range", ["i0", p + "klen", "i1"], [p + "mem"]),
                  helper.make_node("Unsqueeze", [p + "ctx", "ax1"], [p + "ctx2"]),
                  helper.make_node("Unsqueeze", [p + "mem", "ax0"], [p + "mem2"]),
                  helper.make_node("Sub", [p + "mem2", p + "ctx2"], [p + "rel"]),
                  helper.make_node("Abs", [p + "rel"], [p + "dist"]),
                  helper.make_node("Shape", [p + "dist"], [p + "dshp"]),
                  helper.make_node("ConstantOfShape", [p + "dshp"], [p + "last"],
                                   value=numpy_helper.from_array(np.array([BUCKETS - 1], np.int64))),
                  helper.make_node("Min", [p + "dist", p + "last"], [p + "bucket"]),
                  helper.make_node("Gather", ["table", p + "bucket"], [p + "pb"], axis=0),
                  helper.make_node("Transpose", [p + "pb"], [p + "pbt"], perm=[2, 0, 1]),
                  helper.make_node("Unsqueeze", [p + "pbt", "ax0"], [p + "pb4"]),
                  # padding: keep (B, 1, 1, L) expanded to (B, 1, S, L), then Where(keep, bias, lowest)
                  helper.make_node("Unsqueeze", ["mask", "ax12"], [p + "mu"]),
                  helper.make_node("Cast", [p + "mu"], [p + "keep"], to=TensorProto.BOOL),
                  helper.make_node("Unsqueeze", [p + "qlen", "ax0"], [p + "qlen1"]),
                  helper.make_node("Unsqueeze", [p + "klen", "ax0"], [p + "klen1"]),
                  helper.make_node("Concat", [p + "b1", "one", p + "qlen1", p + "klen1"], [p + "mshape"], axis=0),
                  helper.make_node("Expand", [p + "keep", p + "mshape"], [p + "keep4"]),
                  helper.make_node("Where", [p + "keep4", p + "pb4", "lowest"], [p + "bias"])]
        bias = p + "bias"
    nodes += [helper.make_node("Mul", [p + "q4", "unit"], [p + "qs"]),
              helper.make_node("Mul", [p + "kt", "unit"], [p + "ks"]),
              helper.make_node("MatMul", [p + "qs", p + "ks"], [p + "sc"]),
              helper.make_node("Add", [p + "sc", bias], [p + "scb"]),
              helper.make_node("Softmax", [p + "scb"], [p + "pr"], axis=-1),
              helper.make_node("MatMul", [p + "pr", p + "v4"], [p + "o4"]),
              # [B, -1, S, H] from o4's own shape: the same shape again
              helper.make_node("Shape", [p + "o4"], [p + "oshp"]),
              helper.make_node("Gather", [p + "oshp", "i0"], [p + "ob"], axis=0),
              helper.make_node("Gather", [p + "oshp", "i2"], [p + "os"], axis=0),
              helper.make_node("Unsqueeze", [p + "ob", "ax0"], [p + "ob1"]),
              helper.make_node("Unsqueeze", [p + "os", "ax0"], [p + "os1"]),
              helper.make_node("Concat", [p + "ob1", "m1", p + "os1", "hs"], [p + "same"], axis=0),
              helper.make_node("Reshape", [p + "o4", p + "same"], [p + "o4r"]),
              helper.make_node("Transpose", [p + "o4r"], [p + "o3"], perm=[0, 2, 1, 3]),
              helper.make_node("Concat", [p + "b1", "m1", "dd"], [p + "merge"], axis=0),
              helper.make_node("Reshape", [p + "o3", p + "merge"], [p + "y3"]),
              helper.make_node("MatMul", [p + "y3", p + "wo"], [p + "y"])]
    return nodes, p + "y", bias


def model():
    rng = np.random.default_rng(11)
    inits = {"table": rng.uniform(-2, 2, (BUCKETS, N)).astype(np.float32)}
    nodes = [const("i0", np.array(0, np.int64)), const("i1", np.array(1, np.int64)),
             const("i2", np.array(2, np.int64)), const("ax0", np.array([0], np.int64)),
             const("ax1", np.array([1], np.int64)), const("ax12", np.array([1, 2], np.int64)),
             const("m1", np.array([-1], np.int64)), const("hs", np.array([H], np.int64)),
             const("dd", np.array([D], np.int64)), const("one", np.array([1], np.int64)),
             const("unit", np.array(1.0, np.float32)), const("lowest", np.array(LOWEST, np.float32))]
    n0, y0, bias = layer(0, "x", rng, inits)
    n1, y1, _ = layer(1, y0, rng, inits, bias)
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D]),
              helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"])]
    g = helper.make_graph(nodes + n0 + n1, "t5", inputs, [helper.make_empty_tensor_value_info(y1)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_t5_layers_fuse_and_follow_the_dims():
    m = model()
    data = m.SerializeToString()
    fused = kiln.InferenceSession(data, threads=2)
    ops = [n["op_type"] for n in fused.nodes()]
    assert ops.count("Attention") == 2 and "Softmax" not in ops, ops
    for i, (B, S) in enumerate([(1, 5), (3, 9), (2, 1), (2, 16), (3, 9)]):
        rng = np.random.default_rng(200 + i)
        mask = np.ones((B, S), np.int64)
        mask[0, (S + 1) // 2:] = 0
        feeds = {"x": rand(rng, (B, S, D)), "mask": mask}
        got, want = fused.run(None, feeds)[0], run_ort(m, feeds)[0]
        assert got.shape == want.shape
        # two layers without normalisation: outputs reach tens, so the bound scales with them.
        # 1e-5 of the largest: on a CPU without AVX-512 the products run in OpenBLAS or kiln's
        # AVX2 kernels, whose sums in another order land up to 5e-6 of it from onnxruntime's
        assert_same(got, want, 1e-5, 1e-5 * np.abs(want).max(), what=f"T5 output at B={B} S={S}")


def test_shape_reads_move_to_the_input(capfd):
    """The first layer's Gather(Shape(q4), 2) reads the sequence length, which is x's dim 1: the
    verbose log says that Shape now reads x."""
    capfd.readouterr()
    kiln.InferenceSession(model().SerializeToString(), threads=2, verbose=True)
    log = capfd.readouterr().err
    assert "reads graph input 'x'" in log, log
    assert "keeps its input's shape: dropped" in log, log


def test_shape_read_as_a_whole_keeps_the_layer_unfused():
    """A Shape of q4 that is a graph output (not only Gathers of input dims) cannot move: q4 stays
    read outside the attention, so the first layer is left unfused, the second still fuses, and
    both outputs match onnxruntime."""
    m = model()
    m.graph.output.append(helper.make_empty_tensor_value_info("l0_qshp"))
    data = m.SerializeToString()
    s = kiln.InferenceSession(data, threads=2)
    assert [n["op_type"] for n in s.nodes()].count("Attention") == 1
    rng = np.random.default_rng(5)
    feeds = {"x": rand(rng, (2, 7, D)), "mask": np.ones((2, 7), np.int64)}
    feeds["mask"][1, 4:] = 0
    for got, want in zip(s.run(None, feeds), run_ort(m, feeds)):
        assert_same(got, want, 1e-5, 1e-5 * np.abs(want).max())  # as above


def test_shape_read_moves_only_to_the_input_it_comes_from():
    """Two inputs declare the same dimension name but are fed different sizes (neither kiln nor
    onnxruntime requires them to agree): a length read off a tensor computed from the second input
    must stay that input's, not the first's."""
    nodes = [const("i0", np.array(0, np.int64)), const("i1", np.array(1, np.int64)),
             helper.make_node("Relu", ["b"], ["rb"]),
             helper.make_node("Shape", ["rb"], ["shp"]),
             helper.make_node("Gather", ["shp", "i0"], ["len"], axis=0),
             helper.make_node("Range", ["i0", "len", "i1"], ["y"]),
             helper.make_node("Identity", ["a"], ["ya"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, ["n"]),
                                       helper.make_tensor_value_info("b", TensorProto.FLOAT, ["n"])],
                          [helper.make_empty_tensor_value_info("y"), helper.make_empty_tensor_value_info("ya")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    s = kiln.InferenceSession(m.SerializeToString(), threads=2)
    feeds = {"a": np.ones(3, np.float32), "b": np.ones(5, np.float32)}
    got, want = s.run(None, feeds), run_ort(m, feeds)
    np.testing.assert_array_equal(got[0], want[0])
    assert got[0].shape == (5,)
