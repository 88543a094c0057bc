"""The CUDA reduce family (src/cuda/ops/reduce.c, src/cuda/kernels/reduce.cu) against kiln's CPU
provider: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2,
ReduceLogSum, ReduceLogSumExp, ReduceSumSquare, ArgMax and ArgMin.

Covers float32 / float16 / bfloat16 for every op and int32 / int64 for Sum, Max, Min, Prod and
Arg*; axes as an attribute (old opsets) and as input 1 (a constant, and a graph input read on the
host); keepdims, noop_with_empty_axes, all axes, negative axes, contiguous runs (row and column
kernels, and long reductions split over blocks) and separated runs (the general kernel); empty
reductions (the identity), empty outputs, a case over 2^20 elements, select_last_index with ties
and NaN. The types the kernels reject must fall back to the CPU.

Skips where the CUDA provider is unavailable (see cuda_diff.py)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_diff import BF16, F16, F32, F64, I32, I64, check, rand  # noqa: E402

DTYPES = [pytest.param(F32, id="f32"), pytest.param(F16, id="f16"), pytest.param(BF16, id="bf16")]
INT_DTYPES = [pytest.param(I32, id="i32"), pytest.param(I64, id="i64")]
REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1",
              "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]
INT_OPS = ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"]


def sid(shape):
    return "x".join(str(d) for d in shape) or "scalar"


def values(op, shape, dtype):
    """Inputs that keep each op well inside the type's range."""
    if dtype in (I32, I64):
        return rand(shape, dtype, -3, 3) if op == "ReduceProd" else rand(shape, dtype, -1000, 1000)
    if op == "ReduceProd":
        return rand(shape, dtype, 0.9, 1.1)
    if op == "ReduceLogSum":
        return rand(shape, dtype, 0.1, 1.0)
    return rand(shape, dtype, -2, 2)


def reduce(op, x, axes, keepdims=1, opset=18, axes_const=True, rtol=None, expect_cuda=True, **attrs):
    """axes None: no axes at all. From opset 18 (13 for ReduceSum) axes are input 1, before an
    attribute."""
    attrs = dict(attrs, keepdims=keepdims)
    as_input = opset >= (13 if op == "ReduceSum" else 18)
    ins = [("x", x)]
    if axes is not None:
        if as_input:
            ins.append(("axes", np.array(axes, np.int64)))
        else:
            attrs["axes"] = list(axes)
    return check(op, ins, attrs=attrs, opset=opset, const_inputs=("axes",) if axes_const else (),
                 rtol=rtol, expect_cuda=expect_cuda)


# (shape, axes): rows, columns, both, separated runs, size-1 dims, a single element per output
AXES_CASES = [((7, 13), [1]), ((7, 13), [0]), ((7, 13), [0, 1]), ((5, 6, 8, 9), [1, 2]),
              ((5, 6, 8, 9), [0, 2]), ((5, 6, 8, 9), [1, 3]), ((5, 6, 8, 9), [0, 3]),
              ((5, 1, 8, 9), [1, 2]), ((2, 3, 4, 5, 6), [0, 2, 4]), ((4, 1, 3), [1]),
              ((64, 2048), [1]), ((2, 3000, 4), [1]), ((300, 200, 3), [0, 2]), ((9,), [0]),
              ((3, 4), [-1]), ((3, 4, 5), [-3, -1]), ((6, 32, 300), [0, 2]), ((4, 5, 6, 200), [0, 1, 3])]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("case", AXES_CASES, ids=lambda c: sid(c[0]) + "_ax" + "_".join(map(str, c[1])))
def test_reduce_float(dtype, op, case):
    shape, axes = case
    reduce(op, values(op, shape, dtype), axes)


@pytest.mark.parametrize("dtype", INT_DTYPES)
@pytest.mark.parametrize("op", INT_OPS)
@pytest.mark.parametrize("case", AXES_CASES, ids=lambda c: sid(c[0]) + "_ax" + "_".join(map(str, c[1])))
def test_reduce_int(dtype, op, case):
    shape, axes = case
    # an integer vector from the host is shape arithmetic: placement keeps it on the CPU
    reduce(op, values(op, shape, dtype), axes, expect_cuda=len(shape) > 1)


def test_reduce_sum_int64_wraps():
    x = rand((4, 64), I64, -1000, 1000)
    x[:, 0] = np.int64(9_000_000_000_000_000_000)
    x[:, 1] = np.int64(9_000_000_000_000_000_000)
    reduce("ReduceSum", x, [1])


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_keepdims(op, keepdims):
    reduce(op, values(op, (3, 4, 5), F32), [1], keepdims=keepdims)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_old_opset_attribute_axes(dtype, op):
    reduce(op, values(op, (4, 6, 10), dtype), [0, 2], opset=11)


@pytest.mark.parametrize("op", REDUCE_OPS)
def test_reduce_all_axes(op):
    reduce(op, values(op, (6, 7, 8), F32), None)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceSumSquare", "ReduceMax", "ReduceL2", "ReduceLogSumExp"])
def test_reduce_noop_with_empty_axes(op):
    x = values(op, (3, 5), F32)
    reduce(op, x, [], noop_with_empty_axes=1)
    reduce(op, x, None, noop_with_empty_axes=1)


def test_reduce_axes_graph_input():
    # axes is not a constant: it reaches the kernel as a host input
    reduce("ReduceMean", rand((4, 6, 8), F16), [0, 2], axes_const=False)
    reduce("ReduceSum", rand((4, 6, 8), F32), [1], opset=13, axes_const=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceL2", "ReduceLogSumExp"])
@pytest.mark.parametrize("case", [((3, 1 << 20), [1]), ((1 << 20, 3), [0]), ((1000, 1100), [0, 1]),
                                  ((16, 1024, 80), [0, 2])],
                         ids=lambda c: sid(c[0]) + "_ax" + "_".join(map(str, c[1])))
def test_reduce_large(dtype, op, case):
    shape, axes = case
    # values of one sign keep long float sums well conditioned for the comparison (and small
    # enough for the sums to fit float16)
    if op == "ReduceSum":
        x = rand(shape, dtype, 0.0, 0.01)
    elif op == "ReduceMean":
        x = rand(shape, dtype, 0.0, 1.0)
    else:
        x = values(op, shape, dtype)
    reduce(op, x, axes, rtol=1e-4 if dtype == F32 else None)


# (Mean gives NaN and Max / Min / LogSum / LogSumExp give infinities, which the harness's
# difference cannot compare; the identities of those are in the CPU's own tests.)
@pytest.mark.parametrize("op", ["ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceSumSquare"])
def test_reduce_empty_axis_gives_identity(op):
    reduce(op, np.zeros((4, 0, 3), np.float32), [1])


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceMin", "ReduceProd"])
def test_reduce_int_empty_axis_gives_identity(op):
    reduce(op, np.zeros((4, 0, 3), np.int32), [1])


def test_reduce_empty_output():
    reduce("ReduceSum", np.zeros((0, 3), np.float32), [1])


def test_reduce_nan_propagates():
    x = rand((4, 50), F32)
    x[1, 7] = np.nan
    x[2, 0] = np.nan
    for op in ("ReduceMax", "ReduceMin", "ReduceLogSumExp"):
        reduce(op, x, [1])


def test_reduce_mean_int_falls_back():
    reduce("ReduceMean", rand((3, 4), I32, -10, 10), [1], expect_cuda=False)


def test_reduce_float64_falls_back():
    reduce("ReduceSum", rand((3, 4), F64), [1], expect_cuda=False)


def test_reduce_uint8_falls_back():
    reduce("ReduceMax", np.arange(12, dtype=np.uint8).reshape(3, 4), [1], expect_cuda=False)


# ---- ArgMax / ArgMin ----

ARG_CASES = [((7, 13), 1), ((7, 13), 0), ((5, 6, 8), 1), ((3, 1 << 19), 1), ((1 << 18, 5), 0),
             ((1, 9), 0), ((64, 3000), -1), ((3, 700, 9), -2), ((32000,), 0)]


@pytest.mark.parametrize("dtype", DTYPES + INT_DTYPES)
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("case", ARG_CASES, ids=lambda c: sid(c[0]) + "_ax%d" % c[1])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_arg(dtype, op, case, keepdims):
    shape, axis = case
    if dtype in (I32, I64) and len(shape) == 1:
        shape, axis = (1,) + shape, 1  # an integer vector is shape arithmetic, which stays on the host
    x = rand(shape, dtype, -1000, 1000) if dtype in (I32, I64) else rand(shape, dtype, -3, 3)
    check(op, [("x", x)], attrs={"axis": axis, "keepdims": keepdims}, opset=13)


@pytest.mark.parametrize("dtype", DTYPES + INT_DTYPES)
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
@pytest.mark.parametrize("axis", [0, 1])
def test_arg_ties_select_last_index(dtype, op, last, axis):
    # few distinct values: many ties
    x = rand((40, 3000), dtype, -2, 2) if dtype in (I32, I64) else rand((40, 3000), dtype, -2, 2)
    if dtype not in (I32, I64):
        if dtype == BF16:
            x.f32[:] = np.round(x.f32)
        else:
            x[:] = np.round(x)
    check(op, [("x", x)], attrs={"axis": axis, "select_last_index": last}, opset=13)


def test_arg_nan():
    x = rand((5, 40), F32)
    x[0, 0] = np.nan   # a NaN first wins
    x[1, 5] = np.nan   # later NaNs are skipped
    x[2, :] = np.nan
    for op in ("ArgMax", "ArgMin"):
        for last in (0, 1):
            check(op, [("x", x)], attrs={"axis": 1, "select_last_index": last}, opset=13)


def test_arg_opset11_ignores_select_last():
    check("ArgMax", [("x", rand((4, 9), F32))], attrs={"axis": 1}, opset=11)


def test_arg_float64_falls_back():
    check("ArgMax", [("x", rand((4, 9), F64))], attrs={"axis": 1}, opset=13, expect_cuda=False)
