"""The CUDA data-movement family (src/cuda/ops/data*.c, src/cuda/kernels/data*.cu) against kiln's
CPU provider through the differential harness: views, Transpose, DepthToSpace / SpaceToDepth,
Concat, Split, Slice, Pad, Expand, Tile, Trilu, Gather, GatherElements, GatherND, ScatterND and
Resize, over element sizes 1 / 2 / 4 / 8, odd shapes, a case above 2^20 elements and empty
tensors; plus one fallback case for each form the CUDA kernels reject. Skips where the CUDA
provider is unavailable."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_diff import BF16, BOOL, F16, F32, F64, I32, I64, check, rand, rng  # noqa: E402

FLOATS = [F32, F16, BF16]
# one type of each element size the kernels move: 1 (bool), 2, 4, 8 bytes
MOVED = [F32, F16, BF16, I64, BOOL]


def ints(shape, low, high, dtype=np.int64):
    return rng.integers(low, high, size=shape).astype(dtype)


def u8(shape):
    return rng.integers(0, 256, size=shape).astype(np.uint8)


def i8(shape):
    return rng.integers(-128, 128, size=shape).astype(np.int8)


def arr(values, dtype=np.int64):
    return np.array(values, dtype)


# ---- views: Reshape, Flatten, Squeeze, Unsqueeze, Identity (the copy when the output is a graph output) ----

@pytest.mark.parametrize("dt", MOVED)
def test_reshape(dt):
    check("Reshape", [("x", rand((2, 3, 4), dt)), ("s", arr([4, -1, 3]))], const_inputs=["s"])


def test_reshape_uint8_large():
    check("Reshape", [("x", u8((1 << 11, 1 << 10))), ("s", arr([0, 32, -1]))], const_inputs=["s"])


def test_reshape_empty():
    check("Reshape", [("x", rand((0, 4), F32)), ("s", arr([2, 0, 2]))], attrs={"allowzero": 1}, const_inputs=["s"])


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_flatten(axis):
    check("Flatten", [("x", rand((2, 3, 5), F16))], attrs={"axis": axis})


@pytest.mark.parametrize("dt", [F32, I32, BOOL])
def test_squeeze_unsqueeze(dt):
    check("Squeeze", [("x", rand((2, 1, 3, 1), dt)), ("a", arr([1, -1]))], const_inputs=["a"])
    check("Squeeze", [("x", rand((1, 3, 1), dt))], opset=11, attrs={"axes": [0]})
    check("Unsqueeze", [("x", rand((2, 3), dt)), ("a", arr([0, 3]))], const_inputs=["a"])


@pytest.mark.parametrize("dt", MOVED)
def test_identity(dt):
    check("Identity", [("x", rand((3, 7), dt))])


# ---- Transpose, DepthToSpace, SpaceToDepth ----

TRANSPOSES = [((7, 5), None), ((64, 48), [1, 0]), ((3, 33, 65), [0, 2, 1]), ((2, 17, 12, 64), [0, 2, 1, 3]),
              ((2, 3, 31, 29), [0, 2, 3, 1]), ((2, 8, 9, 16), [0, 3, 1, 2]), ((4, 5, 6, 7, 2), [4, 2, 0, 3, 1]),
              ((1, 1, 5), [2, 1, 0]), ((2, 3, 2, 3, 2, 3, 2, 3), [7, 6, 5, 4, 3, 2, 1, 0])]


@pytest.mark.parametrize("shape,perm", TRANSPOSES)
@pytest.mark.parametrize("dt", MOVED)
def test_transpose(shape, perm, dt):
    check("Transpose", [("x", rand(shape, dt))], attrs={"perm": perm} if perm else None)


def test_transpose_uint8_and_large():
    check("Transpose", [("x", u8((3, 40, 50)))], attrs={"perm": [2, 0, 1]})
    check("Transpose", [("x", rand((1024, 1100), F32))], attrs={"perm": [1, 0]})  # > 2^20, tiled
    check("Transpose", [("x", rand((4, 512, 8, 64), F16))], attrs={"perm": [0, 2, 1, 3]})


def test_transpose_empty_and_scalar():
    check("Transpose", [("x", rand((0, 3), F32))], attrs={"perm": [1, 0]})
    check("Transpose", [("x", np.array(2.5, np.float32))])


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
@pytest.mark.parametrize("dt", [F32, F16, I64])
def test_depth_to_space(mode, dt):
    check("DepthToSpace", [("x", rand((2, 12, 3, 5), dt))], attrs={"blocksize": 2, "mode": mode})


@pytest.mark.parametrize("dt", [F32, BF16, BOOL])
def test_space_to_depth(dt):
    check("SpaceToDepth", [("x", rand((2, 3, 6, 9), dt))], attrs={"blocksize": 3})


# ---- Concat, Split ----

@pytest.mark.parametrize("axis", [0, 1, 2, -1])
@pytest.mark.parametrize("dt", MOVED)
def test_concat(axis, dt):
    shapes = [(2, 3, 5), (2, 3, 5), (2, 3, 5)]
    parts = []
    for i, s in enumerate(shapes):
        s = list(s)
        s[axis] = [1, 4, 2][i]
        parts.append(("x%d" % i, rand(tuple(s), dt)))
    check("Concat", parts, attrs={"axis": axis})


def test_concat_empty_part_many_inputs_large():
    check("Concat", [("a", rand((3, 0, 4), F32)), ("b", rand((3, 5, 4), F32))], attrs={"axis": 1})
    check("Concat", [("x%d" % i, rand((2, int(n), 3), F16)) for i, n in enumerate(ints(40, 0, 4))], attrs={"axis": 1})
    check("Concat", [("a", rand((512, 1024), F32)), ("b", rand((512, 1030), F32))], attrs={"axis": 1})
    check("Concat", [("a", u8((5, 3))), ("b", u8((2, 3)))], attrs={"axis": 0})


@pytest.mark.parametrize("dt", MOVED)
def test_split_input_sizes(dt):
    check("Split", [("x", rand((4, 10, 3), dt)), ("s", arr([2, 7, 1]))], attrs={"axis": 1}, n_outputs=3,
          const_inputs=["s"])


def test_split_variants():
    x = rand((6, 9), F32)
    check("Split", [("x", x)], attrs={"axis": 0}, n_outputs=3)  # equal parts
    check("Split", [("x", x)], attrs={"axis": 1, "num_outputs": 4}, n_outputs=4, opset=18)  # 3, 3, 3, 0
    check("Split", [("x", x)], attrs={"axis": -1, "split": [4, 5]}, n_outputs=2, opset=11)
    check("Split", [("x", rand((3, 0, 4), F16)), ("s", arr([0, 0]))], attrs={"axis": 1}, n_outputs=2,
          const_inputs=["s"])
    check("Split", [("x", rand((2048, 1024), F16))], attrs={"axis": 0}, n_outputs=2)


# ---- Slice ----

SLICES = [  # shape, starts, ends, axes, steps
    ((10, 12), [1, -1], [9, -13], [0, 1], [2, -1]),
    ((5, 6, 7), [4, 2], [0, 6], [0, 2], [-2, 1]),
    ((9, 64), [2, 8], [7, 40], None, None),
    ((4, 30), [-1, 29], [-100, -1000], [0, 1], [-1, -3]),
    ((3, 4, 5), [1], [2 ** 62], [-1], [1]),
    ((6, 6), [7], [9], [0], [1]),  # empty
]


@pytest.mark.parametrize("shape,starts,ends,axes,steps", SLICES)
@pytest.mark.parametrize("dt", MOVED)
def test_slice(shape, starts, ends, axes, steps, dt):
    ins = [("x", rand(shape, dt)), ("st", arr(starts)), ("en", arr(ends)),
           ("ax", arr(axes) if axes else None), ("sp", arr(steps) if steps else None)]
    check("Slice", ins, const_inputs=["st", "en", "ax", "sp"])


def test_slice_runtime_bounds_int32_and_attrs():
    # bounds fed at run time (host inputs still), int32 bounds, and the opset-9 attribute form
    check("Slice", [("x", rand((8, 16), F16)), ("st", arr([1, 3])), ("en", arr([7, 15]))])
    check("Slice", [("x", rand((8, 16), F32)), ("st", arr([0, 2], np.int32)), ("en", arr([8, 14], np.int32)),
                    ("ax", arr([0, 1], np.int32)), ("sp", arr([3, 4], np.int32))], const_inputs=["st", "en", "ax", "sp"])
    check("Slice", [("x", rand((8, 16), I64))], attrs={"starts": [1], "ends": [5], "axes": [1]}, opset=9)
    check("Slice", [("x", rand((1200, 1024), F32)), ("st", arr([100])), ("en", arr([1199])), ("ax", arr([0]))],
          const_inputs=["st", "en", "ax"])


# ---- Pad ----

PADS = [((3, 4), [1, 2, 2, 1]), ((2, 3, 5), [0, -1, 3, 1, 2, -2]), ((4,), [5, 6]), ((2, 3, 4, 5), [0, 0, 3, 3, 0, 0, 3, 3])]


@pytest.mark.parametrize("shape,pads", PADS)
@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes(shape, pads, mode):
    check("Pad", [("x", rand(shape, F32)), ("p", arr(pads))], attrs={"mode": mode}, const_inputs=["p"])


@pytest.mark.parametrize("dt", MOVED)
def test_pad_constant_value(dt):
    v = rand((), dt)
    check("Pad", [("x", rand((3, 5), dt)), ("p", arr([1, 0, 2, 3])), ("v", v)], const_inputs=["p", "v"])


def test_pad_axes_attrs_large_empty():
    check("Pad", [("x", rand((2, 3, 4), F16)), ("p", arr([1, 2, 3, 0])), ("v", None), ("a", arr([-1, 0]))],
          attrs={"mode": "edge"}, opset=18, const_inputs=["p", "a"])
    check("Pad", [("x", rand((3, 4), F32))], attrs={"pads": [1, 1, 0, 2], "value": 1.5}, opset=2)
    check("Pad", [("x", u8((3, 4))), ("p", arr([0, 1, 0, 1]))], attrs={"mode": "reflect"}, const_inputs=["p"])
    check("Pad", [("x", rand((1, 3, 512, 700), F32)), ("p", arr([0, 0, 2, 2, 0, 0, 2, 2]))], attrs={"mode": "reflect"},
          const_inputs=["p"])
    check("Pad", [("x", rand((0, 3), F32)), ("p", arr([1, 0, 1, 0]))], const_inputs=["p"])


# ---- Expand, Tile ----

EXPANDS = [((3, 1), [3, 70]), ((1, 64), [5, 64]), ((1,), [2, 3, 4]), ((2, 1, 8), [2, 6, 8]), ((4, 5), [1, 4, 5]),
           ((2, 1), [0, 2, 3])]


@pytest.mark.parametrize("shape,target", EXPANDS)
@pytest.mark.parametrize("dt", MOVED)
def test_expand(shape, target, dt):
    check("Expand", [("x", rand(shape, dt)), ("s", arr(target))], const_inputs=["s"])


def test_expand_large():
    check("Expand", [("x", rand((1, 1, 1024), F16)), ("s", arr([4, 300, 1024]))], const_inputs=["s"])


@pytest.mark.parametrize("shape,reps", [((2, 3), [2, 3]), ((3, 1, 4), [1, 5, 1]), ((5,), [7]), ((2, 3), [0, 2]),
                                        ((2, 1, 2, 1, 2), [2, 2, 2, 2, 2])])
@pytest.mark.parametrize("dt", MOVED)
def test_tile(shape, reps, dt):
    # an integer vector from the host is shape arithmetic: placement keeps it on the CPU
    check("Tile", [("x", rand(shape, dt)), ("r", arr(reps))], const_inputs=["r"],
          expect_cuda=not (dt in (I64, BOOL) and len(shape) == 1))


def test_tile_large():
    check("Tile", [("x", rand((64, 100), F32)), ("r", arr([20, 10]))], const_inputs=["r"])


# ---- Trilu ----

@pytest.mark.parametrize("shape", [(5, 7), (3, 6, 4), (2, 1, 9, 9)])
@pytest.mark.parametrize("k", [None, -20, -2, 0, 3, 20])
@pytest.mark.parametrize("upper", [0, 1])
def test_trilu(shape, k, upper):
    ins = [("x", rand(shape, F32))] + ([("k", np.array(k, np.int64))] if k is not None else [])
    check("Trilu", ins, attrs={"upper": upper}, const_inputs=["k"])


@pytest.mark.parametrize("dt", MOVED)
def test_trilu_types_large(dt):
    check("Trilu", [("x", rand((4, 300, 1000), dt)), ("k", np.array(1, np.int64))], attrs={"upper": 0},
          const_inputs=["k"])


# ---- Gather family ----

GATHERS = [((10, 6), 0, (4,)), ((3, 7, 5), 1, (2, 3)), ((4, 9), 1, ()), ((50, 64), 0, (3, 5)), ((6, 4), -1, (0,))]


@pytest.mark.parametrize("shape,axis,ishape", GATHERS)
@pytest.mark.parametrize("it", [np.int32, np.int64])
@pytest.mark.parametrize("dt", MOVED)
def test_gather(shape, axis, ishape, it, dt):
    d = shape[axis]
    check("Gather", [("x", rand(shape, dt)), ("i", ints(ishape, -d, d, it))], attrs={"axis": axis})


def test_gather_const_indices_and_embedding():
    check("Gather", [("x", rand((7, 5), F16)), ("i", arr([[0, -1], [6, 3]]))], const_inputs=["i"])
    check("Gather", [("x", rand((32000, 256), F16)), ("i", ints((4, 1024), 0, 32000))])  # 2^20 outputs
    check("Gather", [("x", u8((9, 3))), ("i", arr([8, 0, -9], np.int32))], attrs={"axis": 0})


@pytest.mark.parametrize("shape,axis,ishape", [((4, 5), 0, (3, 5)), ((4, 5), 1, (4, 2)), ((3, 4, 5), 2, (2, 4, 7)),
                                                ((6,), 0, (9,)), ((3, 4), 1, (3, 0))])
@pytest.mark.parametrize("it", [np.int32, np.int64])
@pytest.mark.parametrize("dt", MOVED)
def test_gather_elements(shape, axis, ishape, it, dt):
    if len(shape) == 1 and dt in (I64, BOOL):
        # integer vectors are shape arithmetic, which placement keeps on the host: one row instead
        shape, axis, ishape = (1,) + shape, 1, (1,) + ishape
    d = shape[axis]
    check("GatherElements", [("x", rand(shape, dt)), ("i", ints(ishape, -d, d, it))], attrs={"axis": axis})


def nd_indices(dims, lead):
    return np.stack([ints(lead, -d, d) for d in dims], -1)


@pytest.mark.parametrize("shape,b,ishape", [((4, 5, 6), 0, (3, 2)), ((4, 5, 6), 1, (4, 3, 1)),
                                            ((2, 3, 4, 8), 2, (2, 3, 5, 1)), ((5, 6), 0, (7, 2)), ((5, 6), 0, (0, 1))])
@pytest.mark.parametrize("dt", MOVED)
def test_gather_nd(shape, b, ishape, dt):
    k = ishape[-1]
    ind = nd_indices(shape[b:b + k], ishape[:-1])
    check("GatherND", [("x", rand(shape, dt)), ("i", ind)], attrs={"batch_dims": b})


@pytest.mark.parametrize("shape,k,n", [((4, 5, 6), 1, 3), ((4, 5, 6), 2, 7), ((5, 6), 2, 10), ((8,), 1, 0)])
@pytest.mark.parametrize("dt", MOVED)
def test_scatter_nd(shape, k, n, dt):
    # distinct tuples: with repeats the winner is unspecified
    space = np.array(np.unravel_index(rng.permutation(int(np.prod(shape[:k])))[:n], shape[:k])).T.reshape(n, k)
    upd = rand((n,) + shape[k:], dt)
    check("ScatterND", [("x", rand(shape, dt)), ("i", space.astype(np.int64)), ("u", upd)])


# ---- Resize ----

RESIZES = [((1, 2, 5, 7), (1, 2, 10, 14)), ((1, 1, 8, 9), (1, 1, 3, 4)), ((2, 3, 4, 4), (2, 3, 7, 5)), ((3, 10), (3, 25)),
           ((2, 4, 6, 3, 5), (2, 4, 9, 6, 2))]
COORDS = ["half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
          "tf_half_pixel_for_nn"]


@pytest.mark.parametrize("shape,out", RESIZES)
@pytest.mark.parametrize("ct", COORDS)
@pytest.mark.parametrize("nm", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
def test_resize_nearest(shape, out, ct, nm):
    check("Resize", [("x", rand(shape, F32)), ("roi", None), ("sc", None), ("sz", arr(out))],
          attrs={"mode": "nearest", "coordinate_transformation_mode": ct, "nearest_mode": nm}, const_inputs=["sz"])


@pytest.mark.parametrize("shape,out", RESIZES)
@pytest.mark.parametrize("ct", COORDS[:5])
@pytest.mark.parametrize("dt", FLOATS)
def test_resize_linear(shape, out, ct, dt):
    check("Resize", [("x", rand(shape, dt)), ("roi", None), ("sc", None), ("sz", arr(out))],
          attrs={"mode": "linear", "coordinate_transformation_mode": ct}, const_inputs=["sz"])


@pytest.mark.parametrize("dt", [np.uint8, np.int8])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_int8_types(dt, mode):
    x = u8((1, 3, 7, 9)) if dt == np.uint8 else i8((1, 3, 7, 9))
    check("Resize", [("x", x), ("roi", None), ("sc", np.array([1, 1, 1.5, 0.6], np.float32))], attrs={"mode": mode},
          const_inputs=["sc"])


def test_resize_scales_policies_axes_opset10():
    x = rand((1, 3, 7, 9), F16)
    check("Resize", [("x", x), ("roi", None), ("sc", np.array([1, 1, 2.0, 0.5], np.float32))],
          attrs={"mode": "linear"}, const_inputs=["sc"])
    check("Resize", [("x", x), ("roi", None), ("sc", np.array([1, 1, 1.3, 2.7], np.float32))],
          attrs={"mode": "nearest"}, const_inputs=["sc"])
    for policy in ["not_larger", "not_smaller"]:
        check("Resize", [("x", x), ("roi", None), ("sc", None), ("sz", arr([10, 10]))],
              attrs={"mode": "linear", "keep_aspect_ratio_policy": policy, "axes": [2, 3]}, opset=18,
              const_inputs=["sz"])
    check("Resize", [("x", x), ("sc", np.array([1, 1, 2.0, 3.0], np.float32))], attrs={"mode": "nearest"}, opset=10,
          const_inputs=["sc"])
    check("Resize", [("x", x), ("sc", np.array([1, 1, 0.6, 0.5], np.float32))], attrs={"mode": "linear"}, opset=10,
          const_inputs=["sc"])
    check("Resize", [("x", rand((2, 3, 4, 5), F32)), ("roi", None), ("sc", np.array([1.5, 2, 1.75, 0.4], np.float32))],
          attrs={"mode": "linear", "exclude_outside": 1}, const_inputs=["sc"])  # every axis resized
    check("Resize", [("x", x), ("roi", None), ("sc", np.ones(4, np.float32))], attrs={"mode": "linear"},
          const_inputs=["sc"])  # same shape: a copy


@pytest.mark.parametrize("mode", ["nearest", "linear"])
@pytest.mark.parametrize("ct", COORDS)
def test_resize_long_rows(mode, ct):
    # rows of >= 128 outputs take the row path: last axis resized, and last axis kept
    for shape, sizes in [((1, 3, 4, 130), [1, 3, 7, 260]), ((2, 5, 300), [2, 9, 300]), ((3, 129), [3, 200])]:
        check("Resize", [("x", rand(shape, F16)), ("roi", None), ("sc", None), ("sz", arr(sizes))],
              attrs={"mode": mode, "coordinate_transformation_mode": ct, "nearest_mode": "ceil"}, const_inputs=["sz"])


def test_resize_large():
    check("Resize", [("x", rand((1, 16, 128, 160), F16)), ("roi", None), ("sc", np.array([1, 1, 2, 2], np.float32))],
          attrs={"mode": "linear"}, const_inputs=["sc"])
    check("Resize", [("x", rand((1, 16, 128, 160), F32)), ("roi", None), ("sc", np.array([1, 1, 2, 2], np.float32))],
          attrs={"mode": "nearest"}, const_inputs=["sc"])


# ---- what stays on the CPU ----

def test_fallbacks():
    x = rand((1, 2, 4, 4), F32)
    sc = ("sc", np.array([1, 1, 2, 2], np.float32))
    check("Resize", [("x", x), ("roi", None), sc], attrs={"mode": "cubic"}, const_inputs=["sc"], expect_cuda=False)
    check("Resize", [("x", x), ("roi", None), ("sc", np.array([1, 1, 0.5, 0.5], np.float32))],
          attrs={"mode": "linear", "antialias": 1}, opset=18, const_inputs=["sc"], expect_cuda=False)
    check("Resize", [("x", x), ("roi", np.array([0, 0, 0.1, 0.1, 1, 1, 0.9, 0.9], np.float32)), sc],
          attrs={"mode": "linear", "coordinate_transformation_mode": "tf_crop_and_resize"},
          const_inputs=["roi", "sc"], expect_cuda=False)
    check("Resize", [("x", ints((1, 2, 4, 4), 0, 9, np.int32)), ("roi", None), sc], attrs={"mode": "linear"},
          const_inputs=["sc"], expect_cuda=False)
    check("Resize", [("x", rand((1, 1, 1, 1, 1, 1, 1, 2, 2), F32)), ("roi", None), ("sc", np.ones(9, np.float32))],
          attrs={"mode": "nearest"}, const_inputs=["sc"], expect_cuda=False)  # rank 9
    check("ScatterND", [("x", rand((4, 3), F32)), ("i", arr([[1], [2]])), ("u", rand((2, 3), F32))],
          attrs={"reduction": "add"}, opset=18, expect_cuda=False)
    check("Transpose", [("x", np.array([["a", "bc"], ["d", ""]], dtype=object))], expect_cuda=False)
    check("Tile", [("x", rand((1,) * 9, F32)), ("r", arr([1] * 9))], const_inputs=["r"], expect_cuda=False)


def test_gather_const_out_of_range_stays_on_cpu():
    """Constant indices out of range for a known dim: the CPU takes the node and reports it."""
    import cuda_diff
    why = cuda_diff.cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    m = cuda_diff._model("Gather", [("x", rand((5, 3), F32)), ("i", arr([0, 5]))], {}, "", None, 1, ("i",))
    s = cuda_diff.kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert dict(s.node_placement())["node"] == "CPUExecutionProvider"
    with pytest.raises(Exception):
        s.run(None, {"x": rand((5, 3), F32)})
