"""Indexing ops against onnxruntime: Gather, GatherElements, GatherND, OneHot, Scatter,
ScatterElements, ScatterND (all reductions) and TensorScatter; indices are checked at run time."""
import numpy as np
import pytest

from tensor_testlib import DTYPES, check_op, data, expect_error

I64, I32 = np.int64, np.int32


def rng_for(*key):
    return np.random.default_rng(abs(hash(key)) % (2 ** 32))


def idx(rng, shape, dim, dtype=I64):
    """indices in [-dim, dim), negatives included"""
    return rng.integers(-dim, dim, size=shape).astype(dtype)


# ---------------------------------------------------------------- Gather

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather(dt, axis):
    rng = rng_for("gather", dt, axis)
    x = data(rng, (4, 5, 3), dt)
    d = x.shape[axis]
    check_op("Gather", [("x", x), ("i", idx(rng, (2, 3), d))], {"axis": axis}, opset=13)
    check_op("Gather", [("x", x), ("i", idx(rng, (6,), d, I32))], {"axis": axis}, opset=11)
    check_op("Gather", [("x", x), ("i", np.array(-1, I64))], {"axis": axis}, opset=1)


def test_gather_misc():
    rng = rng_for("gather_misc")
    emb = data(rng, (1000, 64))
    check_op("Gather", [("x", emb), ("i", idx(rng, (8, 200), 1000))], threads=4)
    check_op("Gather", [("x", data(rng, (3, 0))), ("i", idx(rng, (2,), 3))])
    check_op("Gather", [("x", data(rng, (3, 4))), ("i", np.zeros((0,), I64))], {"axis": 1})
    check_op("Gather", [("x", data(rng, (5,), object)), ("i", np.array([4, -5, 2], I64))], inits=("x",))
    x = data(rng, (3, 4))
    expect_error("Gather", [("x", x), ("i", np.array([0, 3], I64))], match="out of range")
    expect_error("Gather", [("x", x), ("i", np.array([-4], I64))], match="out of range")
    expect_error("Gather", [("x", x), ("i", np.array([1], I64))], {"axis": 2}, match="axis")
    expect_error("Gather", [("x", x), ("i", np.array([1.0], np.float32))], match="indices")


# ---------------------------------------------------------------- GatherElements

@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements(dt, axis):
    rng = rng_for("gel", dt, axis)
    x = data(rng, (4, 5, 3), dt)
    shape = [3, 4, 2]
    shape[axis] = 6  # along the axis the index tensor may be longer
    check_op("GatherElements", [("x", x), ("i", idx(rng, shape, x.shape[axis]))], {"axis": axis}, opset=13)
    check_op("GatherElements", [("x", x), ("i", idx(rng, shape, x.shape[axis], I32))], {"axis": axis}, opset=11)


def test_gather_elements_errors():
    x = np.ones((3, 4), np.float32)
    expect_error("GatherElements", [("x", x), ("i", np.array([[0, 4]], I64))], {"axis": 1}, match="out of range")
    expect_error("GatherElements", [("x", x), ("i", np.zeros((2,), I64))], match="rank")


# ---------------------------------------------------------------- GatherND

@pytest.mark.parametrize("dt", DTYPES)
def test_gather_nd(dt):
    rng = rng_for("gnd", dt)
    x = data(rng, (3, 4, 5), dt)
    for k in (1, 2, 3):
        i = np.stack([idx(rng, (2, 3), x.shape[j]) for j in range(k)], axis=-1)
        check_op("GatherND", [("x", x), ("i", i)], opset=13)
    # batch_dims: first b dims of indices and data match
    for b, k in ((1, 1), (1, 2), (2, 1)):
        lead = list(x.shape[:b])
        i = np.stack([idx(rng, lead + [2], x.shape[b + j]) for j in range(k)], axis=-1)
        check_op("GatherND", [("x", x), ("i", i)], {"batch_dims": b}, opset=12)


def test_gather_nd_errors():
    x = np.ones((3, 4), np.float32)
    expect_error("GatherND", [("x", x), ("i", np.array([[0, 4]], I64))], match="out of range")
    expect_error("GatherND", [("x", x), ("i", np.zeros((2, 3), I64))], match="last dim")
    expect_error("GatherND", [("x", x), ("i", np.zeros((2, 1), I64))], {"batch_dims": 2}, opset=12,
                 match="batch_dims")


# ---------------------------------------------------------------- OneHot

def onehot_ref(i, depth, values, axis):
    """the spec: indices in [-depth, depth) select a class, anything else is all "off" (the onnx
    reference wraps them modulo depth instead, so it cannot be the oracle here)"""
    i = np.trunc(i.astype(np.float64)).astype(np.int64)
    i = np.where(i < 0, i + depth, i)
    hot = (i[..., None] == np.arange(depth)) & (i[..., None] >= 0)
    out = np.where(hot, values[1], values[0]).astype(values.dtype)
    return np.moveaxis(out, -1, axis if axis >= 0 else axis + i.ndim + 1)


@pytest.mark.parametrize("idt,ddt,vdt", [(I64, I64, np.float32), (I32, np.float32, I64), (np.float32, I32, np.int8),
                                         (I64, np.float64, np.float16), (np.int8, I64, np.float64)])
@pytest.mark.parametrize("axis", [-1, 0, 1, -2])
def test_onehot(idt, ddt, vdt, axis):
    rng = rng_for("onehot", idt, ddt, vdt, axis)
    depth = 5
    i = rng.integers(-depth - 1, depth + 2, size=(3, 4)).astype(idt)  # some out of range: all "off"
    v = data(rng, (2,), vdt)
    want = [onehot_ref(i, depth, v, axis)]
    check_op("OneHot", [("i", i), ("d", np.array(depth, ddt)), ("v", v)], {"axis": axis}, opset=11, want=want)
    check_op("OneHot", [("i", i), ("d", np.array([depth], ddt)), ("v", v)], {"axis": axis}, inits=("d",), opset=9,
             want=want)
    if (idt, ddt, vdt) == (I64, I64, np.float32):  # a combination onnxruntime has a kernel for
        check_op("OneHot", [("i", i), ("d", np.array([depth], ddt)), ("v", v)], {"axis": axis}, opset=11)


def test_onehot_errors():
    i = np.array([0, 1], I64)
    expect_error("OneHot", [("i", i), ("d", np.array([3], I64)), ("v", np.array([0, 1, 2], np.float32))],
                 opset=11, match="values")
    expect_error("OneHot", [("i", i), ("d", np.array([3], I64)), ("v", np.array([0, 1], np.float32))],
                 {"axis": 3}, opset=11, match="axis")


# ---------------------------------------------------------------- Scatter / ScatterElements

def unique_rows_idx(rng, shape, dim, axis):
    """indices with no duplicate target along the axis (so "none" has a single answer)"""
    out = np.empty(shape, I64)
    moved = np.moveaxis(out, axis, -1)
    for pos in np.ndindex(moved.shape[:-1]):
        moved[pos] = rng.permutation(dim)[: moved.shape[-1]] - (dim if rng.integers(0, 2) else 0)
    return out


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_scatter_elements(dt, axis):
    rng = rng_for("sel", dt, axis)
    x = data(rng, (4, 5, 3), dt)
    shape = [3, 4, 2]
    shape[axis] = min(shape[axis], x.shape[axis])
    i = unique_rows_idx(rng, shape, x.shape[axis], axis)
    u = data(rng, shape, dt)
    check_op("ScatterElements", [("x", x), ("i", i), ("u", u)], {"axis": axis}, opset=13)
    check_op("ScatterElements", [("x", x), ("i", i.astype(I32)), ("u", u)], {"axis": axis}, opset=11)
    check_op("Scatter", [("x", x), ("i", i), ("u", u)], {"axis": axis}, opset=10)


@pytest.mark.parametrize("dt", [np.float32, np.float64, np.int32, np.int64, np.float16])
@pytest.mark.parametrize("red", ["add", "mul", "max", "min"])
def test_scatter_elements_reduction(dt, red):
    rng = rng_for("selr", dt, red)
    x = data(rng, (4, 5), dt)
    i = rng.integers(-4, 4, size=(6, 5)).astype(I64)  # duplicates accumulate
    u = data(rng, (6, 5), dt)
    check_op("ScatterElements", [("x", x), ("i", i), ("u", u)], {"axis": 0, "reduction": red}, opset=18,
             rtol=1e-3, atol=1e-3)
    if red in ("add", "mul"):  # opset 16 had only these two
        check_op("ScatterElements", [("x", x), ("i", i), ("u", u)], {"axis": 0, "reduction": red}, opset=16,
                 rtol=1e-3, atol=1e-3)


def test_scatter_elements_misc():
    rng = rng_for("sel_misc")
    s = data(rng, (3, 2), object)
    check_op("ScatterElements", [("x", s), ("i", np.array([[2, 0]], I64)), ("u", data(rng, (1, 2), object))],
             inits=("x", "u"), opset=13)
    x = data(rng, (3, 4))
    expect_error("ScatterElements", [("x", x), ("i", np.array([[3]], I64)), ("u", data(rng, (1, 1)))],
                 match="out of range")
    expect_error("ScatterElements", [("x", x), ("i", np.array([[0]], I64)), ("u", data(rng, (1, 1)))],
                 {"reduction": "max"}, opset=16, match="reduction")
    expect_error("ScatterElements", [("x", x), ("i", np.zeros((1, 2), I64)), ("u", data(rng, (1, 1)))],
                 match="updates")


# ---------------------------------------------------------------- ScatterND

@pytest.mark.parametrize("dt", DTYPES)
def test_scatter_nd(dt):
    rng = rng_for("snd", dt)
    x = data(rng, (4, 5, 3), dt)
    for k in (1, 2, 3):
        n = 3
        flat = rng.permutation(int(np.prod(x.shape[:k])))[:n]  # distinct targets
        i = np.stack(np.unravel_index(flat, x.shape[:k]), axis=-1).astype(I64)
        i[0] -= np.array(x.shape[:k])  # one tuple written with negative indices
        u = data(rng, (n,) + x.shape[k:], dt)
        check_op("ScatterND", [("x", x), ("i", i), ("u", u)], opset=13)


@pytest.mark.parametrize("red", ["add", "mul", "max", "min"])
@pytest.mark.parametrize("dt", [np.float32, np.int64, np.float64])
def test_scatter_nd_reduction(red, dt):
    rng = rng_for("sndr", red, dt)
    x = data(rng, (4, 3, 2), dt)
    i = rng.integers(0, 4, size=(5, 1)).astype(I64)
    u = data(rng, (5, 3, 2), dt)
    check_op("ScatterND", [("x", x), ("i", i), ("u", u)], {"reduction": red}, opset=18, rtol=1e-4)


def test_scatter_nd_misc():
    rng = rng_for("snd_misc")
    s = data(rng, (3, 2), object)
    check_op("ScatterND", [("x", s), ("i", np.array([[1], [0]], I64)), ("u", data(rng, (2, 2), object))],
             inits=("x", "u"), opset=11)
    x = data(rng, (3, 4))
    expect_error("ScatterND", [("x", x), ("i", np.array([[1, 4]], I64)), ("u", data(rng, (1,)))],
                 match="out of range")
    expect_error("ScatterND", [("x", x), ("i", np.array([[1]], I64)), ("u", data(rng, (1, 3)))], match="updates")


# ---------------------------------------------------------------- TensorScatter

def tensor_scatter_ref(past, upd, wi, axis, circular):
    out = past.copy()
    axis %= past.ndim
    maxlen, n = past.shape[axis], upd.shape[axis]
    for pre in np.ndindex(past.shape[:axis]):
        w = 0 if wi is None else wi[pre[0]]
        for s in range(n):
            pos = (w + s) % maxlen if circular else w + s
            out[pre + (pos,)] = upd[pre + (s,)]
    return out


@pytest.mark.parametrize("dt", DTYPES)
@pytest.mark.parametrize("mode", ["linear", "circular"])
def test_tensor_scatter(dt, mode):
    rng = rng_for("tsc", dt, mode)
    past = data(rng, (2, 3, 6, 4), dt)
    upd = data(rng, (2, 3, 2, 4), dt)
    wi = np.array([1, 4], I64) if mode == "linear" else np.array([5, 3], I64)
    attrs = {"mode": mode}
    check_op("TensorScatter", [("p", past), ("u", upd), ("w", wi)], attrs, opset=24,
             want=[tensor_scatter_ref(past, upd, wi, -2, mode == "circular")])
    check_op("TensorScatter", [("p", past), ("u", upd)], attrs, opset=24,
             want=[tensor_scatter_ref(past, upd, None, -2, mode == "circular")])
    u3 = data(rng, (2, 2, 6, 4), dt)
    check_op("TensorScatter", [("p", past), ("u", u3), ("w", np.array([1, 0], I64))], {"mode": mode, "axis": 1},
             opset=24, want=[tensor_scatter_ref(past, u3, np.array([1, 0]), 1, mode == "circular")])


def test_tensor_scatter_vs_ort_and_errors():
    rng = rng_for("tsc_ort")
    past, upd = data(rng, (2, 5, 3)), data(rng, (2, 2, 3))
    check_op("TensorScatter", [("p", past), ("u", upd), ("w", np.array([0, 3], I64))], opset=24)
    expect_error("TensorScatter", [("p", past), ("u", upd), ("w", np.array([0, 4], I64))], opset=24,
                 match="write_indices")
    expect_error("TensorScatter", [("p", past), ("u", data(rng, (2, 2, 4)))], opset=24, match="dim 2")


def test_string_indexing():
    """string tensors through every indexing op (kept as initializers: the binding cannot feed them)"""
    rng = rng_for("strings")
    s = data(rng, (3, 4), object)
    check_op("GatherElements", [("x", s), ("i", np.array([[2, -1, 0, 1]], I64))], inits=("x",), opset=13)
    check_op("GatherND", [("x", s), ("i", np.array([[2, 1], [-3, 0]], I64))], inits=("x",), opset=13)
    v = np.array(["off", "on"], dtype=object)
    check_op("OneHot", [("i", np.array([0, 2, -1], I64)), ("d", np.array([3], I64)), ("v", v)], inits=("v",),
             opset=11, want=[np.array([["on", "off", "off"], ["off", "off", "on"], ["off", "off", "on"]], object)])
    p = data(rng, (2, 4, 2), object)
    u = data(rng, (2, 1, 2), object)
    check_op("TensorScatter", [("p", p), ("u", u), ("w", np.array([3, 0], I64))], inits=("p", "u"), opset=24,
             want=[tensor_scatter_ref(p, u, np.array([3, 0]), -2, False)])


def test_large_threaded():
    rng = rng_for("large")
    x = data(rng, (64, 300, 20))
    check_op("GatherElements", [("x", x), ("i", idx(rng, (64, 200, 20), 300))], {"axis": 1}, threads=4)
    check_op("GatherND", [("x", x), ("i", np.stack([idx(rng, (500,), 64), idx(rng, (500,), 300)], -1))], threads=4)
    check_op("GatherND", [("x", x), ("i", idx(rng, (64, 900, 1), 300))], {"batch_dims": 1}, threads=4)
    check_op("Gather", [("x", x), ("i", idx(rng, (4, 10), 20))], {"axis": 2}, threads=4)
