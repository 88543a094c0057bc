"""Shape relabelling and data movement ops against onnxruntime: Reshape, Flatten, Squeeze,
Unsqueeze, Identity, Transpose, Concat, Split, Slice, Expand, Tile, DepthToSpace, SpaceToDepth,
plus Shape-driven graphs that exercise static inference."""
import itertools

import numpy as np
import pytest
from onnx import TensorProto, helper

from tensor_testlib import DTYPES, check_op, data, expect_error, kiln, oracle, run_levels, assert_same

I64 = np.int64


def rng_for(*key):
    return np.random.default_rng(abs(hash(key)) % (2 ** 32))


# ---------------------------------------------------------------- Reshape / Flatten

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,target", [((2, 3, 4), (4, 6)), ((2, 3, 4), (0, -1)), ((2, 3, 4), (-1,)),
                                          ((2, 3, 4), (2, 0, 2, 2)), ((6,), (1, 2, 1, 3)), ((1,), ())])
def test_reshape(dt, shape, target):
    rng = rng_for("reshape", shape, target)
    x = data(rng, shape, dt)
    t = np.array(target, I64)
    check_op("Reshape", [("x", x), ("s", t)], inits=("s",), opset=14)  # shape known at load
    check_op("Reshape", [("x", x), ("s", t)], opset=19)                 # shape fed at run time


def test_reshape_allowzero_and_old_opsets():
    rng = rng_for("reshape0")
    x = data(rng, (0, 3, 4))
    check_op("Reshape", [("x", x), ("s", np.array([3, 0, 4], I64))], {"allowzero": 1}, opset=14)
    x = data(rng, (2, 3, 4))
    check_op("Reshape", [("x", x), ("s", np.array([0, 4, -1], I64))], opset=5)
    check_op("Reshape", [("x", x), ("s", np.array([0, 4, -1], I64))], opset=13)
    check_op("Reshape", [("x", x)], {"shape": [4, -1]}, opset=1, want=[x.reshape(4, 6)])


def test_reshape_strings():
    rng = rng_for("reshape_s")
    x = data(rng, (2, 6), object)
    check_op("Reshape", [("x", x), ("s", np.array([3, -1], I64))], inits=("x", "s"))


def test_reshape_errors():
    x = np.ones((2, 3), np.float32)
    expect_error("Reshape", [("x", x), ("s", np.array([4, 2], I64))], match="reshape")
    expect_error("Reshape", [("x", x), ("s", np.array([-1, -1], I64))], match="-1")
    expect_error("Reshape", [("x", x), ("s", np.array([0, 0, 0], I64))], match="rank")
    expect_error("Reshape", [("x", x), ("s", np.array([-2, 3], I64))], match="invalid")


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
@pytest.mark.parametrize("dt", [np.float32, np.int8, np.bool_])
def test_flatten(axis, dt):
    x = data(rng_for("flatten", axis), (2, 3, 4), dt)
    check_op("Flatten", [("x", x)], {"axis": axis}, opset=13)
    if axis >= 0:
        check_op("Flatten", [("x", x)], {"axis": axis}, opset=9)


def test_flatten_bad_axis():
    expect_error("Flatten", [("x", np.ones((2, 3), np.float32))], {"axis": 3}, match="axis")


# ---------------------------------------------------------------- Squeeze / Unsqueeze

@pytest.mark.parametrize("dt", DTYPES)
def test_squeeze_unsqueeze(dt):
    rng = rng_for("squeeze", dt)
    x = data(rng, (1, 3, 1, 4, 1), dt)
    check_op("Squeeze", [("x", x), ("a", np.array([0, -1], I64))], opset=13)
    check_op("Squeeze", [("x", x), ("a", np.array([2], I64))], inits=("a",), opset=21)
    check_op("Squeeze", [("x", x)], opset=13)
    check_op("Squeeze", [("x", x)], {"axes": [0, 2]}, opset=11)
    y = data(rng, (3, 4), dt)
    check_op("Unsqueeze", [("x", y), ("a", np.array([0, -1], I64))], opset=13)
    check_op("Unsqueeze", [("x", y), ("a", np.array([3, 1], I64))], inits=("a",), opset=21)
    check_op("Unsqueeze", [("x", y)], {"axes": [-1, 0]}, opset=11)
    check_op("Unsqueeze", [("x", y)], {"axes": [1]}, opset=1)


def test_squeeze_errors():
    x = np.ones((1, 3), np.float32)
    expect_error("Squeeze", [("x", x), ("a", np.array([1], I64))], opset=13, match="squeeze axis 1")
    expect_error("Squeeze", [("x", x), ("a", np.array([2], I64))], opset=13, match="axes")
    expect_error("Unsqueeze", [("x", x), ("a", np.array([1, 1], I64))], opset=13, match="twice")


# ---------------------------------------------------------------- Identity

@pytest.mark.parametrize("dt", DTYPES)
def test_identity(dt):
    x = data(rng_for("identity", dt), (3, 5), dt)
    check_op("Identity", [("x", x)], opset=13)
    check_op("Identity", [("x", x)], opset=21)


def test_identity_string_and_sequence():
    x = data(rng_for("identity_s"), (4,), object)
    check_op("Identity", [("x", x)], inits=("x",))
    # a sequence flowing through Identity (opset 14+)
    a, b = data(rng_for("seq", 1), (2, 3)), data(rng_for("seq", 2), (4, 3))
    F = TensorProto.FLOAT
    nodes = [helper.make_node("SequenceConstruct", ["a", "b"], ["s"]),
             helper.make_node("Identity", ["s"], ["t"]),
             helper.make_node("ConcatFromSequence", ["t"], ["y"], axis=0)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", F, a.shape),
                                       helper.make_tensor_value_info("b", F, b.shape)],
                          [helper.make_tensor_value_info("y", F, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    feeds = {"a": a, "b": b}
    for got in run_levels(m, feeds):
        assert_same(got[0], np.concatenate([a, b]))


# ---------------------------------------------------------------- Transpose

@pytest.mark.parametrize("perm", list(itertools.permutations(range(4))))
def test_transpose_all_4d(perm):
    x = data(rng_for("tr", perm), (2, 3, 4, 5))
    check_op("Transpose", [("x", x)], {"perm": list(perm)}, opset=13)


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,perm", [((33, 70), (1, 0)), ((3, 40, 17), (0, 2, 1)), ((2, 9, 16, 24), (0, 2, 1, 3)),
                                        ((2, 16, 9, 12), (0, 2, 3, 1)), ((2, 12, 9, 16), (0, 3, 1, 2)),
                                        ((5, 6, 7), None), ((7,), None), ((), None)])
def test_transpose_dtypes(dt, shape, perm):
    x = data(rng_for("trd", shape, dt), shape, dt)
    check_op("Transpose", [("x", x)], {"perm": list(perm)} if perm else {}, opset=21)


@pytest.mark.parametrize("perm", [(1, 0), (0, 2, 1), (2, 1, 0), (1, 2, 0)])
def test_transpose_large_threaded(perm):
    shape = (96, 130, 70)[: len(perm)] if len(perm) == 3 else (700, 515)
    x = data(rng_for("trl", perm), shape)
    check_op("Transpose", [("x", x)], {"perm": list(perm)}, threads=4)


def test_transpose_strings_and_errors():
    x = data(rng_for("trs"), (3, 4, 2), object)
    check_op("Transpose", [("x", x)], {"perm": [2, 0, 1]}, inits=("x",))
    expect_error("Transpose", [("x", np.ones((2, 3), np.float32))], {"perm": [0, 0]}, match="permutation")
    expect_error("Transpose", [("x", np.ones((2, 3), np.float32))], {"perm": [1, 0, 2]}, match="rank")


# ---------------------------------------------------------------- Concat / Split

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, 2, -1, -3])
def test_concat(dt, axis):
    rng = rng_for("concat", dt, axis)
    base = [2, 3, 4]
    ins = []
    for i, n in enumerate((1, 3, 2)):
        s = list(base)
        s[axis] = n
        ins.append(("x%d" % i, data(rng, s, dt)))
    check_op("Concat", ins, {"axis": axis}, opset=13)


@pytest.mark.parametrize("threads", [1, 3, 16])
@pytest.mark.parametrize("dt", [np.float32, np.float16, np.int64, np.uint8, np.bool_])
def test_concat_one_job(dt, threads):
    """Concats large enough to be shared out as one job over the output (CNN channel joins:
    SqueezeNet's two parts, DenseNet's many), units cutting across parts and rows: batches of
    several rows, a part of zero channels, 40 thin parts, parts of odd byte lengths."""
    rng = rng_for("concat_one_job", dt, threads)
    cases = [([(2, 64, 27, 27), (2, 64, 27, 27)], 1),
             ([(3, 5, 33, 31), (3, 0, 33, 31), (3, 7, 33, 31), (3, 1, 33, 31)], 1),
             ([(2, 3 + i % 4, 17, 19) for i in range(40)], 1),
             ([(4, 1000, 3), (4, 777, 3)], 1),
             ([(5, 300, 77), (2, 300, 77)], 0)]
    for shapes, axis in cases:
        ins = [("x%d" % i, data(rng, sh, dt)) for i, sh in enumerate(shapes)]
        want = np.concatenate([a for _, a in ins], axis=axis)
        check_op("Concat", ins, {"axis": axis}, threads=threads, want=[want], rtol=0, atol=0)


def test_concat_misc():
    rng = rng_for("concat_misc")
    a, b = data(rng, (2, 0, 3)), data(rng, (2, 5, 3))
    check_op("Concat", [("a", a), ("b", b)], {"axis": 1}, opset=4)
    big = [("x%d" % i, data(rng, (64, 50 + i, 40))) for i in range(3)]
    check_op("Concat", big, {"axis": 1}, threads=4)
    check_op("Concat", [("x", data(rng, (300, 400))), ("y", data(rng, (200, 400)))], {"axis": 0}, threads=4)
    s = [("s%d" % i, data(rng, (2, i + 1), object)) for i in range(2)]
    check_op("Concat", s, {"axis": -1}, inits=("s0", "s1"))
    expect_error("Concat", [("a", data(rng, (2, 3))), ("b", data(rng, (3, 3)))], {"axis": 1}, match="dim 0")
    expect_error("Concat", [("a", data(rng, (2, 3))), ("b", data(rng, (2, 3)))], {"axis": 2}, match="axis")


@pytest.mark.parametrize("dt", DTYPES)
def test_split(dt):
    rng = rng_for("split", dt)
    x = data(rng, (4, 7, 3), dt)
    check_op("Split", [("x", x), ("s", np.array([2, 0, 5], I64))], {"axis": 1}, opset=13, outputs=3)
    check_op("Split", [("x", x), ("s", np.array([1, 3], I64))], {"axis": -3}, inits=("s",), opset=18, outputs=2)
    check_op("Split", [("x", x)], {"axis": 0}, opset=13, outputs=2)
    check_op("Split", [("x", x)], {"axis": 1, "split": [3, 4]}, opset=11, outputs=2)
    check_op("Split", [("x", x)], {"axis": 1, "num_outputs": 3}, opset=18, outputs=3)  # 3,3,1
    check_op("Split", [("x", x)], {"axis": 2, "num_outputs": 2}, opset=18, outputs=2)  # 2,1


def test_split_misc():
    rng = rng_for("split_misc")
    x = data(rng, (6, 5))
    # an unwanted middle output (onnxruntime crashes on this model, so numpy is the oracle)
    check_op("Split", [("x", x)], {"axis": 0}, opset=13, outputs=["a", "", "c"], want=[x[:2], x[4:]])
    check_op("Split", [("x", x)], {"axis": 0, "split": [1, 5]}, opset=2, outputs=2)
    s = data(rng, (4, 3), object)
    check_op("Split", [("x", s), ("s", np.array([1, 3], I64))], inits=("x", "s"), opset=13, outputs=2)
    expect_error("Split", [("x", x), ("s", np.array([2, 2], I64))], opset=13, outputs=2, match="add up")
    expect_error("Split", [("x", x)], {"axis": 1}, opset=13, outputs=2, match="evenly")


# ---------------------------------------------------------------- Slice

SLICES = [  # starts, ends, axes, steps
    ([0, 1], [2, 3], None, None),
    ([1], [-1], [1], None),
    ([-1], [-1000], [2], [-1]),
    ([10, -100], [-10, 100], [0, 2], [-2, 3]),
    ([0], [2 ** 63 - 1], [-1], [2]),
    ([2 ** 63 - 1], [-(2 ** 63)], [1], [-3]),
    ([-(2 ** 63)], [2 ** 63 - 1], [0], None),
    ([3, 0], [1, 5], [-1, 1], [-1, 2]),
    ([1], [1], [0], None),
]


@pytest.mark.parametrize("case", range(len(SLICES)))
@pytest.mark.parametrize("dt", [np.float32, np.float16, np.int64, np.int8, np.bool_, np.float64])
def test_slice(case, dt):
    starts, ends, axes, steps = SLICES[case]
    x = data(rng_for("slice", case, dt), (4, 5, 6), dt)
    ins = [("x", x), ("s", np.array(starts, I64)), ("e", np.array(ends, I64))]
    if axes is not None or steps is not None:
        ins.append(("a", np.array(axes if axes is not None else range(len(starts)), I64)))
    if steps is not None:
        ins.append(("t", np.array(steps, I64)))
    check_op("Slice", ins, opset=13)
    check_op("Slice", ins, inits=tuple(n for n, _ in ins[1:]), opset=13)


def test_slice_old_opset_int32_strings():
    rng = rng_for("slice_old")
    x = data(rng, (5, 6))
    check_op("Slice", [("x", x)], {"starts": [1, -4], "ends": [100, -1], "axes": [0, 1]}, opset=9)
    check_op("Slice", [("x", x), ("s", np.array([1], np.int32)), ("e", np.array([4], np.int32)),
                       ("a", np.array([-1], np.int32)), ("t", np.array([2], np.int32))], opset=13)
    s = data(rng, (4, 3), object)
    check_op("Slice", [("x", s), ("s", np.array([3], I64)), ("e", np.array([0], I64)),
                       ("a", np.array([0], I64)), ("t", np.array([-2], I64))], inits=("x", "s", "e", "a", "t"))
    big = data(rng, (64, 300, 20))
    check_op("Slice", [("x", big), ("s", np.array([1, 2], I64)), ("e", np.array([-1, 290], I64)),
                       ("a", np.array([0, 1], I64))], threads=4)
    expect_error("Slice", [("x", x), ("s", np.array([0], I64)), ("e", np.array([2], I64)),
                           ("a", np.array([0], I64)), ("t", np.array([0], I64))], match="steps")
    expect_error("Slice", [("x", x), ("s", np.array([0, 0], I64)), ("e", np.array([2, 2], I64)),
                           ("a", np.array([1, -1], I64))], match="twice")


# ---------------------------------------------------------------- Expand / Tile

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,target", [((3, 1), (2, 3, 4)), ((1, 4), (3, 1)), ((2, 1, 3), (2, 5, 3)),
                                          ((), (2, 2)), ((4,), (1,)), ((3, 1), (3, 0))])
def test_expand(dt, shape, target):
    x = data(rng_for("expand", shape, target, dt), shape, dt)
    check_op("Expand", [("x", x), ("s", np.array(target, I64))], opset=13)
    check_op("Expand", [("x", x), ("s", np.array(target, I64))], inits=("s",), opset=8)


def test_expand_large_and_errors():
    rng = rng_for("expand_l")
    check_op("Expand", [("x", data(rng, (1, 300, 1))), ("s", np.array([200, 300, 3], I64))], threads=4)
    s = data(rng, (2, 1), object)
    check_op("Expand", [("x", s), ("s", np.array([2, 3], I64))], inits=("x", "s"))
    expect_error("Expand", [("x", data(rng, (3, 2))), ("s", np.array([3, 4], I64))], match="broadcast")


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("shape,reps", [((2, 3), (2, 3)), ((2, 3, 4), (1, 2, 1)), ((5,), (3,)), ((2, 3), (0, 2)),
                                        ((3, 1, 2), (2, 4, 1))])
def test_tile(dt, shape, reps):
    x = data(rng_for("tile", shape, reps, dt), shape, dt)
    check_op("Tile", [("x", x), ("r", np.array(reps, I64))], opset=13)
    check_op("Tile", [("x", x), ("r", np.array(reps, I64))], inits=("r",), opset=6)


def test_tile_misc():
    rng = rng_for("tile_misc")
    check_op("Tile", [("x", data(rng, (100, 300))), ("r", np.array([3, 2], I64))], threads=4)
    s = data(rng, (2, 2), object)
    check_op("Tile", [("x", s), ("r", np.array([2, 1], I64))], inits=("x", "r"))
    expect_error("Tile", [("x", data(rng, (2, 3))), ("r", np.array([2], I64))], match="repeats")
    expect_error("Tile", [("x", data(rng, (2, 3))), ("r", np.array([2, -1], I64))], match="negative")


# ---------------------------------------------------------------- DepthToSpace / SpaceToDepth

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_space(dt, mode):
    rng = rng_for("d2s", dt, mode)
    x = data(rng, (2, 8, 3, 5), dt)
    check_op("DepthToSpace", [("x", x)], {"blocksize": 2, "mode": mode}, opset=13)
    y = data(rng, (2, 3, 6, 4), dt)
    check_op("SpaceToDepth", [("x", y)], {"blocksize": 2}, opset=13)


def test_depth_space_misc():
    rng = rng_for("d2s_misc")
    x = data(rng, (1, 18, 2, 3))
    check_op("DepthToSpace", [("x", x)], {"blocksize": 3}, opset=1)
    check_op("SpaceToDepth", [("x", data(rng, (2, 2, 9, 6)))], {"blocksize": 3}, opset=1)
    expect_error("DepthToSpace", [("x", data(rng, (1, 6, 2, 2)))], {"blocksize": 2}, match="divisible")
    expect_error("SpaceToDepth", [("x", data(rng, (1, 6, 3, 2)))], {"blocksize": 2}, match="divisible")


# ---------------------------------------------------------------- graphs that need static inference

def test_shape_driven_reshape_graph():
    """Shape -> Slice -> Concat -> Reshape with a symbolic batch: static inference and folding."""
    F = TensorProto.FLOAT
    nodes = [helper.make_node("Shape", ["x"], ["sh"]),
             helper.make_node("Slice", ["sh", "st", "en"], ["b"]),
             helper.make_node("Concat", ["b", "tail"], ["tgt"], axis=0),
             helper.make_node("Reshape", ["x", "tgt"], ["r"]),
             helper.make_node("Transpose", ["r"], ["y"], perm=[0, 2, 1, 3])]
    inits = [helper.make_tensor("st", TensorProto.INT64, [1], [0]),
             helper.make_tensor("en", TensorProto.INT64, [1], [2]),
             helper.make_tensor("tail", TensorProto.INT64, [2], [4, -1])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", F, ["N", "S", 32])],
                          [helper.make_tensor_value_info("y", F, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 8
    for n, s in ((2, 5), (3, 1)):
        x = data(rng_for("graph", n), (n, s, 32))
        want = oracle(m, {"x": x})
        for got in run_levels(m, {"x": x}):
            assert_same(got[0], want[0])


def test_kiln_error_type():
    assert issubclass(kiln.KilnError, Exception)


def test_first_opsets():
    """opset-1 forms onnxruntime no longer loads: Concat's default axis, Split's split as an input
    or attribute, Tile's tiles/axis inputs"""
    x = data(rng_for("first"), (2, 3))
    check_op("Concat", [("a", x), ("b", x)], opset=1, want=[np.concatenate([x, x], 1)])
    check_op("Split", [("x", x), ("s", np.array([1, 2], I64))], {"axis": 1}, opset=1, outputs=2, inits=("s",),
             want=[x[:, :1], x[:, 1:]])
    check_op("Split", [("x", x)], {"axis": 1, "split": [2, 1]}, opset=1, outputs=2, want=[x[:, :2], x[:, 2:]])
    check_op("Tile", [("x", x), ("t", np.array([3], np.float32)), ("a", np.array([1], np.float32))], opset=1,
             inits=("t", "a"), want=[np.tile(x, (1, 3))])


# ---------------------------------------------------------------- randomized sweeps

@pytest.mark.parametrize("seed", range(12))
def test_random_movement(seed):
    """random ranks, shapes, permutations, slices, broadcasts and repeats: the copy engine's dim
    merging, tiling and threading decisions all get odd shapes"""
    rng = np.random.default_rng(1000 + seed)
    rank = int(rng.integers(1, 6))
    shape = tuple(int(v) for v in rng.integers(1, 7, size=rank))
    dt = [np.float32, np.float16, np.float64, np.int8, np.int64][seed % 5]
    x = data(rng, shape, dt)
    check_op("Transpose", [("x", x)], {"perm": [int(v) for v in rng.permutation(rank)]}, threads=3)
    starts = [int(v) for v in rng.integers(-8, 8, size=rank)]
    ends = [int(v) for v in rng.integers(-8, 8, size=rank)]
    steps = [int(v) for v in rng.choice([-3, -2, -1, 1, 2, 3], size=rank)]
    check_op("Slice", [("x", x), ("s", np.array(starts, I64)), ("e", np.array(ends, I64)),
                       ("a", np.array(rng.permutation(rank) - rank * rng.integers(0, 2), I64)),
                       ("t", np.array(steps, I64))])
    target = [int(d) if rng.integers(0, 2) else (int(rng.integers(2, 4)) if d == 1 else 1) for d in shape]
    check_op("Expand", [("x", x), ("s", np.array([2] + target, I64))])
    check_op("Tile", [("x", x), ("r", np.array(rng.integers(0, 3, size=rank), I64))])
    pads = [int(v) for v in rng.integers(-1, 3, size=2 * rank)]
    pads = [max(p, -(shape[i % rank] // 2)) for i, p in enumerate(pads)]
    for a in range(rank):  # keep every axis non-empty (border modes need something to copy)
        if shape[a] + min(pads[a], 0) + min(pads[a + rank], 0) < 1:
            pads[a + rank] = 0
    check_op("Pad", [("x", x), ("p", np.array(pads, I64))], {"mode": ["constant", "edge", "wrap"][seed % 3]},
             opset=19)
