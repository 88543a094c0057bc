"""Training graphs (src/train/): reverse-mode differentiation over ONNX graphs.

Every gradient rule is checked by central finite differences in float64 on fresh random inputs
(the eval model's loss, perturbed one parameter element at a time, is the oracle), and in float32
against those float64 numerical gradients. Whole models (an MLP, a small CNN, a 2-layer BERT-style
encoder) are checked the same way, and the MLP's float32 gradients against numpy. The eval model
holds only standard ONNX ops, so onnxruntime checks its loss. No torch needed."""
import ctypes
import os
import tempfile

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import MODELS as SHARED_MODELS, run_ort

import kiln
from kiln import _lib

LIB = _lib.load()
LIB.kiln_train_build_graphs.argtypes = [ctypes.c_char_p, ctypes.c_void_p, ctypes.c_char_p]
LIB.kiln_train_build_graphs.restype = ctypes.c_int
LIB.kiln_last_error.restype = ctypes.c_char_p


class _Opts(ctypes.Structure):
    _fields_ = [("requires_grad", ctypes.POINTER(ctypes.c_char_p)), ("n_requires_grad", ctypes.c_int),
                ("frozen", ctypes.POINTER(ctypes.c_char_p)), ("n_frozen", ctypes.c_int),
                ("loss", ctypes.c_char_p), ("output", ctypes.c_char_p)]


def build_artifacts(model, params, loss="mse", output=None, frozen=()):
    """Writes model and its training artifacts into a fresh folder; returns the folder."""
    d = tempfile.mkdtemp(prefix="kiln_train_")
    path = os.path.join(d, "model.onnx")
    onnx.save(model, path)
    req = (ctypes.c_char_p * max(1, len(params)))(*[p.encode() for p in params])
    frz = (ctypes.c_char_p * max(1, len(frozen)))(*[p.encode() for p in frozen])
    o = _Opts(req, len(params), frz, len(frozen), loss.encode() if loss else None,
              output.encode() if output else None)
    rc = LIB.kiln_train_build_graphs(path.encode(), ctypes.byref(o), d.encode())
    if rc:
        raise RuntimeError(LIB.kiln_last_error().decode())
    return d


NP_TO_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
              np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
              np.dtype(np.bool_): TensorProto.BOOL}


def graph_model(nodes, inputs, params, outputs, opset=17, consts=None, domains=None):
    """inputs: name -> array (graph inputs); params / consts: name -> array (initializers);
    outputs: name -> numpy dtype (declared without shape) or (dtype, shape)."""
    consts = consts or {}
    vis = [helper.make_tensor_value_info(k, NP_TO_ONNX[v.dtype], v.shape) for k, v in inputs.items()]
    outs = [helper.make_tensor_value_info(k, NP_TO_ONNX[np.dtype(t[0] if isinstance(t, tuple) else t)],
                                          t[1] if isinstance(t, tuple) else None) for k, t in outputs.items()]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in {**params, **consts}.items()]
    g = helper.make_graph(nodes, "g", vis, outs, initializer=inits)
    ops = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in (domains or {}).items()]
    m = helper.make_model(g, opset_imports=ops)
    m.ir_version = 8
    return m


class Trainer:
    """The artifacts of one model: training and eval sessions fed by name."""

    def __init__(self, model, params, loss="mse", output=None, frozen=()):
        self.dir = build_artifacts(model, params, loss, output, frozen)
        self.params = list(params)
        self.train = kiln.InferenceSession(os.path.join(self.dir, "training_model.onnx"), threads=2)
        # opt_level 1: the finite differences need the float64 forward exactly; at level 2 the
        # attention fusion computes a float64 model's attention to about 1e-8 (reported)
        self.eval = kiln.InferenceSession(os.path.join(self.dir, "eval_model.onnx"), threads=2, opt_level=1)

    def grads(self, feeds, values):
        out = self.train.run(None, {**feeds, **values})
        return out[0], dict(zip(self.params, out[1:]))

    def loss(self, feeds, values):
        return float(self.eval.run(None, {**feeds, **values})[0])


def numeric_grads(tr, feeds, values, rng, eps, per_param=10):
    """Central differences of the eval loss at up to per_param random elements of each param."""
    num = {}
    for name in tr.params:
        p = values[name]
        flat = np.arange(p.size)
        idx = flat if p.size <= per_param else rng.choice(flat, per_param, replace=False)
        got = []
        for i in idx:
            vals = dict(values)
            for sgn in (1, -1):
                q = p.copy().reshape(-1)
                q[i] += sgn * eps
                vals[name] = q.reshape(p.shape)
                got.append(tr.loss(feeds, vals))
        num[name] = (idx, np.array(got[0::2]) - np.array(got[1::2]))
        num[name] = (idx, num[name][1] / (2 * eps))
    return num


def assert_grads_close(ana, num, rtol, what):
    for name, (idx, n) in num.items():
        a = ana[name].reshape(-1)[idx].astype(np.float64)
        scale = max(np.max(np.abs(n)), 1e-2)
        err = np.max(np.abs(a - n)) / scale
        assert err <= rtol, f"{what}: gradient of '{name}' off by {err:.3g} (relative)\nkiln {a}\nnumeric {n}"


def labels_for(model, feeds, values, loss, rng, output=None):
    """Random labels shaped as the loss output (int64 classes for cross_entropy)."""
    d = tempfile.mkdtemp(prefix="kiln_train_fwd_")
    p = os.path.join(d, "m.onnx")
    onnx.save(model, p)
    s = kiln.InferenceSession(p, threads=2)
    names = [o.name for o in model.graph.output]
    y = s.run(None, feeds)[names.index(output) if output else 0]
    if loss == "cross_entropy":
        shape = (y.shape[0],) + y.shape[2:]
        return rng.integers(0, y.shape[1], size=shape).astype(np.int64)
    if loss == "bce_with_logits":
        return rng.uniform(0, 1, size=y.shape).astype(y.dtype)
    return rng.standard_normal(y.shape).astype(y.dtype)


def check_rule(make, inputs, params, loss="mse", consts=None, rng=None, rtol64=1e-6, rtol32=2e-3,
               f32=True, output=None, per_param=10):
    """make(dtype) -> ModelProto given param / input dicts converted to dtype. Checks float64
    gradients by central differences, then float32 ones against those numbers."""
    rng = rng or np.random.default_rng(1234)
    results = {}
    for dt, eps, rtol in ((np.float64, 1e-6, rtol64), (np.float32, None, rtol32)):
        if dt == np.float32 and not f32:
            continue
        cv = lambda a: a.astype(dt) if a.dtype.kind == "f" else a  # noqa: E731
        ins = {k: cv(v) for k, v in inputs.items()}
        ps = {k: cv(v) for k, v in params.items()}
        cs = {k: cv(v) for k, v in (consts or {}).items()}
        model = make(dt, ins, ps, cs)
        if dt == np.float64:
            labels = labels_for(model, ins, ps, loss, rng, output)
            lab64 = labels
        else:
            labels = lab64.astype(np.float32) if lab64.dtype.kind == "f" else lab64
        feeds = {**ins, "labels": labels}
        tr = Trainer(model, list(params), loss, output=output)
        lossv, ana = tr.grads(feeds, ps)
        for k, v in ps.items():
            assert ana[k].dtype == v.dtype and ana[k].shape == v.shape, f"gradient of {k}: {ana[k].dtype}{ana[k].shape}"
        # the loss the training model reports is the eval model's, and onnxruntime's
        assert np.isclose(lossv, tr.loss(feeds, ps), rtol=1e-6)
        if dt == np.float32:  # onnxruntime lacks float64 kernels of several ops
            ort_loss = run_ort(open(os.path.join(tr.dir, "eval_model.onnx"), "rb").read(), {**feeds, **ps})[0]
            assert np.isclose(float(lossv), float(ort_loss), rtol=1e-4), (lossv, ort_loss)
        if dt == np.float64:
            num = numeric_grads(tr, feeds, ps, rng, eps, per_param)
            assert_grads_close(ana, num, rtol, "float64")
            results["num"] = num
        else:
            assert_grads_close(ana, results["num"], rtol, "float32")
        results[np.dtype(dt).name] = ana
    return results


def rnd(rng, *shape, low=-2.0, high=2.0):
    return rng.uniform(low, high, size=shape)


def one_node(op, in_names, attrs=None, n_out=1, opset=17, domain=None, extra_nodes=(), domains=None):
    """make() for a model with one node under test whose output 'y' takes the loss."""
    def make(dt, ins, ps, cs):
        outs = ["y"] + [f"y{k}" for k in range(1, n_out)]
        node = helper.make_node(op, in_names, outs, domain=domain, **(attrs or {}))
        return graph_model([node, *extra_nodes], ins, ps, {"y": dt}, opset=opset, consts=cs, domains=domains)
    return make



# ---------------------------------------------------------------- element-wise


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
@pytest.mark.parametrize("sa,sb", [((3, 4), (3, 4)), ((2, 3, 4), (4,)), ((3, 1), (2, 1, 5)), ((), (2, 3))])
def test_binary(op, sa, sb):
    rng = np.random.default_rng(hash((op, sa, sb)) % 2**32)
    a = rnd(rng, *sa)
    b = rnd(rng, *sb, low=0.5, high=2.0) * np.where(rng.random(sb) < 0.5, -1, 1) if op == "Div" else rnd(rng, *sb)
    check_rule(one_node(op, ["a", "b"]), {}, {"a": np.asarray(a), "b": np.asarray(b)}, rng=rng)


def test_binary_one_side_input():
    rng = np.random.default_rng(3)
    check_rule(one_node("Mul", ["x", "w"]), {"x": rnd(rng, 4, 3)}, {"w": rnd(rng, 3)}, rng=rng)


UNARY = [("Neg", {}, -2, 2), ("Relu", {}, -2, 2), ("LeakyRelu", {"alpha": 0.2}, -2, 2), ("Sigmoid", {}, -3, 3),
         ("Tanh", {}, -2, 2), ("Exp", {}, -2, 2), ("Log", {}, 0.3, 3), ("Sqrt", {}, 0.3, 3), ("Erf", {}, -2, 2),
         ("Abs", {}, -2, 2), ("Softplus", {}, -3, 3), ("Reciprocal", {}, 0.5, 2), ("Identity", {}, -2, 2)]


@pytest.mark.parametrize("op,attrs,lo,hi", UNARY, ids=[u[0] for u in UNARY])
def test_unary(op, attrs, lo, hi):
    rng = np.random.default_rng(abs(hash(op)) % 2**32)
    x = rnd(rng, 3, 5, low=lo, high=hi)
    if op in ("Relu", "LeakyRelu", "Abs"):
        x = np.where(np.abs(x) < 0.05, 0.3, x)  # away from the kink, where differences are one-sided
    check_rule(one_node(op, ["x"], attrs), {}, {"x": x}, rng=rng)


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20(approximate):
    rng = np.random.default_rng(5)
    check_rule(one_node("Gelu", ["x"], {"approximate": approximate}, opset=20), {}, {"x": rnd(rng, 4, 6)}, rng=rng)


def test_gelu_com_microsoft():
    rng = np.random.default_rng(6)
    check_rule(one_node("Gelu", ["x"], domain="com.microsoft", domains={"com.microsoft": 1}), {},
               {"x": rnd(rng, 4, 6)}, rng=rng)


@pytest.mark.parametrize("p", [2.0, 3.0, 0.5, -1.5])
def test_pow_const_exponent(p):
    rng = np.random.default_rng(int(p * 10) % 97)
    x = rnd(rng, 3, 4, low=0.5, high=2.0)
    check_rule(one_node("Pow", ["x", "p"]), {}, {"x": x}, consts={"p": np.array(p)}, rng=rng)


def test_cast_float_to_float():
    """float32 parameter cast to double: the gradient comes back as float32."""
    rng = np.random.default_rng(8)
    w = rnd(rng, 3, 4).astype(np.float32)
    m = graph_model([helper.make_node("Cast", ["w"], ["y"], to=TensorProto.DOUBLE)], {}, {"w": w}, {"y": np.float64})
    lab = rng.standard_normal((3, 4))
    tr = Trainer(m, ["w"])
    loss, g = tr.grads({"labels": lab}, {"w": w})
    assert g["w"].dtype == np.float32
    want = 2 * (w.astype(np.float64) - lab) / w.size
    np.testing.assert_allclose(g["w"], want.astype(np.float32), rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(loss, np.mean((w.astype(np.float64) - lab) ** 2), rtol=1e-12)


def test_dropout_inference_is_identity():
    rng = np.random.default_rng(9)
    check_rule(one_node("Dropout", ["x"], opset=13), {}, {"x": rnd(rng, 3, 4)}, rng=rng)


def test_where():
    rng = np.random.default_rng(10)
    cond = rng.random((3, 4)) < 0.5
    check_rule(one_node("Where", ["c", "a", "b"]), {"c": cond}, {"a": rnd(rng, 3, 4), "b": rnd(rng, 4)}, rng=rng)

# ---------------------------------------------------------------- products


@pytest.mark.parametrize("sa,sb", [((2, 3, 4, 5), (5, 6)), ((3, 4), (2, 4, 5)), ((4,), (4, 5)), ((3, 4), (4,)),
                                   ((2, 1, 3, 4), (3, 4, 2)), ((2, 3, 4), (2, 4, 5)), ((4,), (2, 4, 3))])
def test_matmul(sa, sb):
    rng = np.random.default_rng(len(sa) * 10 + len(sb))
    check_rule(one_node("MatMul", ["a", "b"]), {}, {"a": rnd(rng, *sa), "b": rnd(rng, *sb)}, rng=rng)


def test_matmul_input_times_weight():
    rng = np.random.default_rng(11)
    check_rule(one_node("MatMul", ["x", "w"]), {"x": rnd(rng, 2, 3, 4)}, {"w": rnd(rng, 4, 5)}, rng=rng)


@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("cshape", [None, (5,), (3, 5), (3, 1)])
def test_gemm(ta, tb, cshape):
    rng = np.random.default_rng(ta * 2 + tb + (len(cshape) if cshape else 7))
    a = rnd(rng, *((4, 3) if ta else (3, 4)))
    b = rnd(rng, *((5, 4) if tb else (4, 5)))
    ps = {"a": a, "b": b}
    names = ["a", "b"]
    if cshape:
        ps["c"] = rnd(rng, *cshape)
        names.append("c")
    check_rule(one_node("Gemm", names, {"transA": ta, "transB": tb, "alpha": 0.7, "beta": 1.3}), {}, ps, rng=rng)

# ---------------------------------------------------------------- shapes


def test_reshape_flatten_squeeze_unsqueeze():
    rng = np.random.default_rng(12)
    shape = np.array([4, 6], dtype=np.int64)
    ax = np.array([0], dtype=np.int64)
    check_rule(one_node("Reshape", ["x", "s"]), {}, {"x": rnd(rng, 2, 3, 4)}, consts={"s": shape}, rng=rng)
    check_rule(one_node("Flatten", ["x"], {"axis": 2}), {}, {"x": rnd(rng, 2, 3, 4)}, rng=rng)
    check_rule(one_node("Squeeze", ["x", "a"], opset=13), {}, {"x": rnd(rng, 1, 3, 4)}, consts={"a": ax}, rng=rng)
    check_rule(one_node("Unsqueeze", ["x", "a"], opset=13), {}, {"x": rnd(rng, 3, 4)}, consts={"a": ax}, rng=rng)


@pytest.mark.parametrize("perm", [None, [1, 2, 0], [0, 2, 1]])
def test_transpose(perm):
    rng = np.random.default_rng(13)
    check_rule(one_node("Transpose", ["x"], {"perm": perm} if perm else {}), {}, {"x": rnd(rng, 2, 3, 4)}, rng=rng)


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    rng = np.random.default_rng(14 + axis)
    shapes = [[2, 3, 4], [2, 3, 4], [2, 3, 4]]
    for k, s in enumerate(shapes):
        s[axis] = k + 1
    # the middle input is a graph input: no gradient is asked for it
    check_rule(one_node("Concat", ["a", "x", "b"], {"axis": axis}), {"x": rnd(rng, *shapes[1])},
               {"a": rnd(rng, *shapes[0]), "b": rnd(rng, *shapes[2])}, rng=rng)


@pytest.mark.parametrize("starts,ends,axes,steps", [([1], [3], [1], [1]), ([0, 1], [2, 10], [0, 2], [1, 2]),
                                                    ([-1], [-5], [1], [-1]), ([3, 0], [0, 3], [2, 1], [-2, 1]),
                                                    # a negative step from a start below -dim: Slice
                                                    # clamps it to 0 and keeps one element
                                                    ([-9], [-10], [2], [-1])])
def test_slice(starts, ends, axes, steps):
    rng = np.random.default_rng(15)
    i64 = lambda v: np.array(v, dtype=np.int64)  # noqa: E731
    check_rule(one_node("Slice", ["x", "s", "e", "a", "t"], opset=13), {}, {"x": rnd(rng, 3, 4, 5)},
               consts={"s": i64(starts), "e": i64(ends), "a": i64(axes), "t": i64(steps)}, rng=rng)


@pytest.mark.parametrize("axis", [0, 1])
def test_gather(axis):
    rng = np.random.default_rng(16 + axis)
    idx = np.array([[0, 2, 2], [-1, 1, 0]], dtype=np.int64)  # repeats and a negative index
    check_rule(one_node("Gather", ["w", "i"], {"axis": axis}), {"i": idx}, {"w": rnd(rng, 5, 4)}, rng=rng)


def test_expand_and_sum():
    rng = np.random.default_rng(17)
    check_rule(one_node("Expand", ["x", "s"]), {}, {"x": rnd(rng, 3, 1)},
               consts={"s": np.array([2, 3, 4], dtype=np.int64)}, rng=rng)
    check_rule(one_node("Sum", ["a", "b", "c"]), {}, {"a": rnd(rng, 3, 4), "b": rnd(rng, 4), "c": rnd(rng, 1, 4)},
               rng=rng)

# ---------------------------------------------------------------- reductions, normalisation


@pytest.mark.parametrize("op", ["ReduceMean", "ReduceSum"])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([0, 2], 0), (None, 0), ([-1], 0)])
def test_reduce(op, axes, keepdims):
    rng = np.random.default_rng(18)
    x = {"x": rnd(rng, 2, 3, 4)}
    # ReduceMean takes axes as an attribute at opset 17, ReduceSum as an input
    if op == "ReduceMean" or axes is None:
        attrs = {"keepdims": keepdims, **({"axes": axes} if axes else {})}
        check_rule(one_node(op, ["x"], attrs), {}, x, rng=rng)
    else:
        check_rule(one_node(op, ["x", "a"], {"keepdims": keepdims}), {}, x,
                   consts={"a": np.array(axes, dtype=np.int64)}, rng=rng)


def test_reduce_mean_opset18_axes_input():
    rng = np.random.default_rng(19)
    check_rule(one_node("ReduceMean", ["x", "a"], {"keepdims": 1}, opset=18), {}, {"x": rnd(rng, 2, 3, 4)},
               consts={"a": np.array([1, 2], dtype=np.int64)}, rng=rng)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis,opset", [(-1, 13), (1, 13), (1, 11)])
def test_softmax(op, axis, opset):
    rng = np.random.default_rng(20 + axis + opset)
    check_rule(one_node(op, ["x"], {"axis": axis}, opset=opset), {}, {"x": rnd(rng, 2, 3, 4)}, rng=rng)


@pytest.mark.parametrize("axis,bias", [(-1, True), (1, True), (-1, False)])
def test_layernorm(axis, bias):
    rng = np.random.default_rng(21)
    x = rnd(rng, 2, 3, 4)
    sshape = x.shape[axis:]
    ps = {"x": x, "s": rnd(rng, *sshape)}
    names = ["x", "s"]
    if bias:
        ps["b"] = rnd(rng, *sshape)
        names.append("b")
    check_rule(one_node("LayerNormalization", names, {"axis": axis, "epsilon": 1e-3}), {}, ps, rng=rng)


def test_batchnorm_inference():
    rng = np.random.default_rng(22)
    ps = {"x": rnd(rng, 2, 3, 4, 5), "s": rnd(rng, 3), "b": rnd(rng, 3)}
    cs = {"m": rnd(rng, 3), "v": rnd(rng, 3, low=0.5, high=2)}
    check_rule(one_node("BatchNormalization", ["x", "s", "b", "m", "v"], {"epsilon": 1e-3}), {}, ps, consts=cs, rng=rng)

# ---------------------------------------------------------------- convolution, pooling


CONVS = [((2, 4, 7, 6), (6, 2, 3, 3), {"group": 2, "strides": [2, 1], "pads": [1, 0, 1, 2], "dilations": [1, 2]}),
         ((1, 3, 9), (4, 3, 3), {"pads": [1, 1], "strides": [2]}),
         ((2, 2, 5, 5), (3, 2, 2, 2), {"auto_pad": "SAME_UPPER"}),
         ((1, 2, 4, 3, 3), (2, 2, 2, 2, 2), {}),
         ((2, 4, 5, 5), (4, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]})]


@pytest.mark.parametrize("xs,ws,attrs", CONVS, ids=["groups_strides_dil", "1d", "same_upper", "3d", "depthwise"])
@pytest.mark.parametrize("bias", [True, False])
def test_conv(xs, ws, attrs, bias):
    rng = np.random.default_rng(23)
    ps = {"x": rnd(rng, *xs), "w": rnd(rng, *ws)}
    names = ["x", "w"]
    if bias:
        ps["b"] = rnd(rng, ws[0])
        names.append("b")
    check_rule(one_node("Conv", names, attrs), {}, ps, rng=rng, per_param=8)


@pytest.mark.parametrize("attrs", [{"group": 2, "pads": [1, 1, 1, 1], "strides": [2, 1]}, {}])
def test_conv_many_images(attrs):
    """Batches of at least twice the threads run image blocks in parallel, each into its own dW."""
    rng = np.random.default_rng(58)
    ps = {"x": rnd(rng, 7, 4, 5, 6), "w": rnd(rng, 6, 4 // attrs.get("group", 1), 3, 3), "b": rnd(rng, 6)}
    check_rule(one_node("Conv", ["x", "w", "b"], attrs), {}, ps, rng=rng, per_param=8)


POOLS = [("MaxPool", {"kernel_shape": [2, 2]}), ("MaxPool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
         ("MaxPool", {"kernel_shape": [2, 3], "strides": [2, 2], "ceil_mode": 1, "dilations": [1, 2]}),
         ("AveragePool", {"kernel_shape": [2, 2]}),
         ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
         ("AveragePool", {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "count_include_pad": 1}),
         ("AveragePool", {"kernel_shape": [3], "strides": [2], "pads": [0, 1], "ceil_mode": 1})]


@pytest.mark.parametrize("op,attrs", POOLS, ids=[f"{p[0]}{i}" for i, p in enumerate(POOLS)])
def test_pool(op, attrs):
    rng = np.random.default_rng(24)
    shape = (2, 3, 7) if len(attrs["kernel_shape"]) == 1 else (2, 3, 7, 8)
    check_rule(one_node(op, ["x"], attrs, opset=19), {}, {"x": rnd(rng, *shape)}, rng=rng)


def test_global_average_pool():
    rng = np.random.default_rng(25)
    check_rule(one_node("GlobalAveragePool", ["x"]), {}, {"x": rnd(rng, 2, 3, 4, 5)}, rng=rng)

# ---------------------------------------------------------------- losses


@pytest.mark.parametrize("loss", ["mse", "l1", "bce_with_logits"])
def test_losses_elementwise(loss):
    rng = np.random.default_rng(26)
    check_rule(one_node("MatMul", ["x", "w"]), {"x": rnd(rng, 5, 4)}, {"w": rnd(rng, 4, 3)}, loss=loss, rng=rng)


@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)])
def test_cross_entropy(shape):
    rng = np.random.default_rng(27)
    check_rule(one_node("Identity", ["z"]), {}, {"z": rnd(rng, *shape)}, loss="cross_entropy", rng=rng)


def test_losses_match_numpy():
    rng = np.random.default_rng(28)
    z = rnd(rng, 6, 3)
    m = graph_model([helper.make_node("Identity", ["z"], ["y"])], {}, {"z": z}, {"y": np.float64})
    y = rng.uniform(0, 1, size=(6, 3))
    cls = rng.integers(0, 3, size=6)
    lsm = z - np.log(np.exp(z).sum(1, keepdims=True))
    want = {"mse": (np.mean((z - y) ** 2), 2 * (z - y) / z.size),
            "l1": (np.mean(np.abs(z - y)), np.sign(z - y) / z.size),
            "bce_with_logits": (np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z)))),
                                (1 / (1 + np.exp(-z)) - y) / z.size),
            "cross_entropy": (-np.mean(lsm[np.arange(6), cls]),
                              (np.exp(lsm) - np.eye(3)[cls]) / 6)}
    for loss, (lv, gv) in want.items():
        tr = Trainer(m, ["z"], loss)
        lab = cls.astype(np.int64) if loss == "cross_entropy" else y
        got, g = tr.grads({"labels": lab}, {"z": z})
        np.testing.assert_allclose(got, lv, rtol=1e-12, err_msg=loss)
        np.testing.assert_allclose(g["z"], gv, rtol=1e-10, atol=1e-14, err_msg=loss)

# ---------------------------------------------------------------- whole models


def mlp_make(dt, ins, ps, cs):
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1)]
    return graph_model(nodes, ins, ps, {"y": dt}, consts=cs)


def mlp_params(rng):
    return {"W1": rnd(rng, 16, 8) * 0.5, "b1": rnd(rng, 16) * 0.1, "W2": rnd(rng, 4, 16) * 0.5, "b2": rnd(rng, 4) * 0.1}


def test_mlp_finite_differences():
    rng = np.random.default_rng(30)
    check_rule(mlp_make, {"x": rnd(rng, 6, 8)}, mlp_params(rng), loss="cross_entropy", rng=rng)


def test_mlp_float32_against_numpy():
    rng = np.random.default_rng(31)
    ps = {k: v.astype(np.float32) for k, v in mlp_params(rng).items()}
    x = rnd(rng, 6, 8).astype(np.float32)
    cls = rng.integers(0, 4, size=6).astype(np.int64)
    tr = Trainer(mlp_make(np.float32, {"x": x}, ps, {}), list(ps), "cross_entropy")
    loss, g = tr.grads({"x": x, "labels": cls}, ps)
    h = x @ ps["W1"].T + ps["b1"]
    r = np.maximum(h, 0)
    z = r @ ps["W2"].T + ps["b2"]
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    want_loss = -np.mean(np.log(p[np.arange(6), cls]))
    dz = (p - np.eye(4)[cls]) / 6
    dr = dz @ ps["W2"]
    dh = dr * (h > 0)
    want = {"W2": dz.T @ r, "b2": dz.sum(0), "W1": dh.T @ x, "b1": dh.sum(0)}
    np.testing.assert_allclose(loss, want_loss, rtol=1e-5)
    for k in want:
        np.testing.assert_allclose(g[k], want[k], rtol=1e-4, atol=1e-6, err_msg=k)


def cnn_make(dt, ins, ps, cs):
    nodes = [helper.make_node("Conv", ["x", "w1", "cb1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c1", "bn_s", "bn_b", "bn_m", "bn_v"], ["n1"], epsilon=1e-3),
             helper.make_node("Relu", ["n1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2", "cb2"], ["c2"], strides=[1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["g"]),
             helper.make_node("Flatten", ["g"], ["f"]),
             helper.make_node("Gemm", ["f", "wf", "bf"], ["y"], transB=1)]
    return graph_model(nodes, ins, ps, {"y": dt}, consts=cs)


def test_cnn_finite_differences():
    rng = np.random.default_rng(32)
    ps = {"w1": rnd(rng, 4, 3, 3, 3) * 0.5, "cb1": rnd(rng, 4) * 0.1, "bn_s": rnd(rng, 4, low=0.5, high=1.5),
          "bn_b": rnd(rng, 4) * 0.1, "w2": rnd(rng, 6, 4, 3, 3) * 0.5, "cb2": rnd(rng, 6) * 0.1,
          "wf": rnd(rng, 5, 6) * 0.5, "bf": rnd(rng, 5) * 0.1}
    cs = {"bn_m": rnd(rng, 4) * 0.1, "bn_v": rnd(rng, 4, low=0.5, high=1.5)}
    check_rule(cnn_make, {"x": rnd(rng, 2, 3, 8, 8)}, ps, loss="cross_entropy", consts=cs, rng=rng, per_param=6)


H, NH, T, V = 8, 2, 5, 11


def bert_make(dt, ins, ps, cs):
    n = []

    def node(op, i, o, domain=None, **kw):
        n.append(helper.make_node(op, i, [o], domain=domain, **kw))
        return o

    h = node("Gather", ["tok_emb", "ids"], "e")
    h = node("Add", [h, "pos_emb"], "e2")
    h = node("LayerNormalization", [h, "ln0_g", "ln0_b"], "h0", axis=-1, epsilon=1e-5)
    for l in range(2):
        p = f"l{l}_"

        def lin(x, w, name):
            return node("Add", [node("MatMul", [x, p + w], p + name + "_mm"), p + "b" + w[1:]], p + name)

        def heads(x, name, perm):
            r = node("Reshape", [x, "split_shape"], p + name + "_r")
            return node("Transpose", [r], p + name + "_t", perm=perm)

        q = heads(lin(h, "Wq", "q"), "q", [0, 2, 1, 3])
        k = heads(lin(h, "Wk", "k"), "k", [0, 2, 3, 1])
        v = heads(lin(h, "Wv", "v"), "v", [0, 2, 1, 3])
        s = node("Div", [node("MatMul", [q, k], p + "s"), "sqrt_hd"], p + "ss")
        s = node("Add", [s, "mask"], p + "sm")
        a = node("Softmax", [s], p + "a", axis=-1)
        c = node("MatMul", [a, v], p + "c")
        c = node("Reshape", [node("Transpose", [c], p + "ct", perm=[0, 2, 1, 3]), "merge_shape"], p + "cm")
        o = lin(c, "Wo", "o")
        h = node("LayerNormalization", [node("Add", [h, o], p + "res1"), p + "ln1_g", p + "ln1_b"], p + "h1", epsilon=1e-5)
        f = lin(h, "W1", "f1")
        if l == 0:  # Gelu as exported by torch (erf form)
            e = node("Erf", [node("Div", [f, "sqrt2"], p + "fd")], p + "fe")
            f = node("Mul", [node("Mul", [f, node("Add", [e, "one"], p + "fe1")], p + "fm"), "half"], p + "gelu")
        else:
            f = node("Gelu", [f], p + "gelu", domain="com.microsoft")
        f = lin(f, "W2", "f2")
        h = node("LayerNormalization", [node("Add", [h, f], p + "res2"), p + "ln2_g", p + "ln2_b"], p + "h2", epsilon=1e-5)
    cls = node("Gather", [h, "zero"], "cls", axis=1)
    pooled = node("Tanh", [node("Gemm", [cls, "Wp", "bp"], "pool_mm")], "pooled")
    node("Gemm", [pooled, "Wc", "bc"], "y")
    return graph_model(n, ins, ps, {"y": dt}, consts=cs, domains={"com.microsoft": 1})


def bert_params(rng):
    ps = {"tok_emb": rnd(rng, V, H) * 0.5, "pos_emb": rnd(rng, T, H) * 0.5, "ln0_g": rnd(rng, H, low=0.5, high=1.5),
          "ln0_b": rnd(rng, H) * 0.1}
    for l in range(2):
        p = f"l{l}_"
        for w, shape in (("Wq", (H, H)), ("Wk", (H, H)), ("Wv", (H, H)), ("Wo", (H, H)), ("W1", (H, 2 * H)),
                         ("W2", (2 * H, H))):
            ps[p + w] = rnd(rng, *shape) * 0.4
            ps[p + "b" + w[1:]] = rnd(rng, shape[1]) * 0.1
        for ln in ("ln1", "ln2"):
            ps[p + ln + "_g"] = rnd(rng, H, low=0.5, high=1.5)
            ps[p + ln + "_b"] = rnd(rng, H) * 0.1
    ps.update({"Wp": rnd(rng, H, H) * 0.4, "bp": rnd(rng, H) * 0.1, "Wc": rnd(rng, H, 3) * 0.4, "bc": rnd(rng, 3) * 0.1})
    return ps


def bert_consts(rng, B):
    mask = np.zeros((B, 1, 1, T))
    mask[0, 0, 0, -1] = -1e4  # a padded position in the first sequence
    return {"split_shape": np.array([0, 0, NH, H // NH], dtype=np.int64),
            "merge_shape": np.array([0, 0, H], dtype=np.int64), "sqrt_hd": np.array(np.sqrt(H // NH)),
            "sqrt2": np.array(np.sqrt(2.0)), "one": np.array(1.0), "half": np.array(0.5),
            "zero": np.array(0, dtype=np.int64), "mask": mask}


def test_bert_encoder_finite_differences():
    rng = np.random.default_rng(33)
    B = 2
    ids = rng.integers(0, V, size=(B, T)).astype(np.int64)
    check_rule(bert_make, {"ids": ids}, bert_params(rng), loss="cross_entropy", consts=bert_consts(rng, B), rng=rng,
               per_param=4)


def test_bert_frozen_embeddings():
    """Frozen parameters stay initializers and get no gradient; the others still check out."""
    rng = np.random.default_rng(34)
    ps = bert_params(rng)
    cs = bert_consts(rng, 2)
    ids = rng.integers(0, V, size=(2, T)).astype(np.int64)
    frozen = ["tok_emb", "pos_emb"]
    model = bert_make(np.float64, {"ids": ids}, ps, cs)
    train = [k for k in ps if k not in frozen]
    tr = Trainer(model, train, "cross_entropy", frozen=frozen)
    m = onnx.load(os.path.join(tr.dir, "training_model.onnx"))
    inits = {i.name for i in m.graph.initializer}
    assert set(frozen) <= inits and not (set(train) & inits)
    feeds = {"ids": ids, "labels": rng.integers(0, 3, size=2).astype(np.int64)}
    vals = {k: ps[k] for k in train}
    _, ana = tr.grads(feeds, vals)
    assert_grads_close(ana, numeric_grads(tr, feeds, vals, rng, 1e-6, per_param=3), 1e-6, "frozen embeddings")

# ---------------------------------------------------------------- artifacts


def test_artifact_layout():
    rng = np.random.default_rng(35)
    ps = mlp_params(rng)
    x = rnd(rng, 6, 8)
    nodes = [helper.make_node("Gemm", ["x", "W1", "b1"], ["h"], transB=1), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "W2", "b2"], ["y"], transB=1), helper.make_node("Sigmoid", ["y"], ["prob"])]
    model = graph_model(nodes, {"x": x}, ps, {"prob": (np.float64, ["N", 4]), "y": (np.float64, ["N", 4])})
    onnx.checker.check_model(model)
    d = build_artifacts(model, ["W2", "W1"], "cross_entropy", output="y", frozen=["b1"])
    tm = onnx.load(os.path.join(d, "training_model.onnx"))
    em = onnx.load(os.path.join(d, "eval_model.onnx"))
    onnx.checker.check_model(em)
    onnx.checker.check_model(tm)  # kiln-domain gradient ops are not checked against a schema
    assert [i.name for i in tm.graph.input] == ["x", "labels", "W2", "W1"]
    assert [i.name for i in em.graph.input] == ["x", "labels", "W2", "W1"]
    assert [o.name for o in tm.graph.output] == ["loss", "W2_grad", "W1_grad"]
    assert [o.name for o in em.graph.output] == ["loss", "prob", "y"]
    lab = tm.graph.input[1].type.tensor_type
    assert lab.elem_type == TensorProto.INT64 and len(lab.shape.dim) == 1
    for o, p in zip(tm.graph.output[1:], ["W2", "W1"]):
        assert o.type.tensor_type.elem_type == TensorProto.DOUBLE
        assert [dd.dim_value for dd in o.type.tensor_type.shape.dim] == list(ps[p].shape)
    inits = {i.name for i in tm.graph.initializer}
    assert {"b1", "b2"} <= inits and not ({"W1", "W2"} & inits)
    props = {p.key: p.value for p in tm.metadata_props}
    assert props == {"kiln.train.params": "W2,W1", "kiln.train.loss": "cross_entropy", "kiln.train.output": "y"}
    with open(os.path.join(d, "inference_model.onnx"), "rb") as f, open(os.path.join(d, "model.onnx"), "rb") as g:
        assert f.read() == g.read()
    # the eval model gives the model's own outputs, and onnxruntime agrees on everything
    cls = rng.integers(0, 4, size=6).astype(np.int64)
    feeds = {"x": x, "labels": cls, "W2": ps["W2"], "W1": ps["W1"]}
    got = kiln.InferenceSession(os.path.join(d, "eval_model.onnx")).run(None, feeds)
    want = run_ort(em.SerializeToString(), feeds)
    for g_, w_ in zip(got, want):
        np.testing.assert_allclose(g_, w_, rtol=1e-10)
    y = np.maximum(x @ ps["W1"].T + ps["b1"], 0) @ ps["W2"].T + ps["b2"]
    np.testing.assert_allclose(got[2], y, rtol=1e-12)


def test_float32_loss_is_scalar():
    rng = np.random.default_rng(36)
    ps = {k: v.astype(np.float32) for k, v in mlp_params(rng).items()}
    x = rnd(rng, 6, 8).astype(np.float32)
    tr = Trainer(mlp_make(np.float32, {"x": x}, ps, {}), ["W1"], "mse")
    loss, g = tr.grads({"x": x, "labels": rng.standard_normal((6, 4)).astype(np.float32)}, {"W1": ps["W1"]})
    assert loss.dtype == np.float32 and loss.shape == ()


def test_param_not_reaching_loss_gets_zero_gradient():
    rng = np.random.default_rng(37)
    nodes = [helper.make_node("MatMul", ["x", "w"], ["y"]), helper.make_node("Add", ["x", "u"], ["z"])]
    m = graph_model(nodes, {"x": rnd(rng, 2, 3)}, {"w": rnd(rng, 3, 2), "u": rnd(rng, 3)}, {"y": np.float64, "z": np.float64})
    tr = Trainer(m, ["w", "u"])
    _, g = tr.grads({"x": rnd(rng, 2, 3), "labels": rnd(rng, 2, 2)}, {"w": rnd(rng, 3, 2), "u": rnd(rng, 3)})
    assert g["u"].shape == (3,) and not g["u"].any()

# ---------------------------------------------------------------- errors


def _mlp_model(rng):
    ps = mlp_params(rng)
    return mlp_make(np.float64, {"x": rnd(rng, 6, 8)}, ps, {"steps": np.array([3], dtype=np.int64)})


def test_error_unknown_param():
    with pytest.raises(RuntimeError, match="unknown parameter 'nope'"):
        build_artifacts(_mlp_model(np.random.default_rng(0)), ["W1", "nope"])


def test_error_param_not_float_initializer():
    with pytest.raises(RuntimeError, match="parameter 'steps' has element type int64"):
        build_artifacts(_mlp_model(np.random.default_rng(0)), ["steps"])
    with pytest.raises(RuntimeError, match="parameter 'x' is not an initializer"):
        build_artifacts(_mlp_model(np.random.default_rng(0)), ["x"])
    with pytest.raises(RuntimeError, match="parameter 'h' is not an initializer"):
        build_artifacts(_mlp_model(np.random.default_rng(0)), ["h"])


def test_error_bad_loss_and_output():
    m = _mlp_model(np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="unknown loss 'hinge'"):
        build_artifacts(m, ["W1"], loss="hinge")
    with pytest.raises(RuntimeError, match="no output named 'nope'"):
        build_artifacts(m, ["W1"], output="nope")


def test_error_param_frozen_and_trainable_or_twice():
    m = _mlp_model(np.random.default_rng(0))
    with pytest.raises(RuntimeError, match="'W1' is both trainable and frozen"):
        build_artifacts(m, ["W1"], frozen=["W1"])
    with pytest.raises(RuntimeError, match="'W1' is named twice"):
        build_artifacts(m, ["W1", "W1"])
    with pytest.raises(RuntimeError, match="frozen parameter 'zz' is not an initializer"):
        build_artifacts(m, ["W1"], frozen=["zz"])


def test_error_op_without_gradient():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Tan", ["w"], ["s"], name="the_tangent"), helper.make_node("Add", ["s", "x"], ["y"])]
    m = graph_model(nodes, {"x": rnd(rng, 3)}, {"w": rnd(rng, 3)}, {"y": np.float64})
    with pytest.raises(RuntimeError, match=r"node 'the_tangent' \(op Tan\): no gradient"):
        build_artifacts(m, ["w"])
    # the same op off the differentiated path is fine
    nodes = [helper.make_node("Tan", ["x"], ["s"]), helper.make_node("Add", ["s", "w"], ["y"])]
    build_artifacts(graph_model(nodes, {"x": rnd(rng, 3)}, {"w": rnd(rng, 3)}, {"y": np.float64}), ["w"])


def test_error_trainable_exponent_and_training_batchnorm():
    rng = np.random.default_rng(2)
    m = graph_model([helper.make_node("Pow", ["x", "p"], ["y"], name="pw")], {"x": rnd(rng, 3)}, {"p": np.array(2.0)},
                    {"y": np.float64})
    with pytest.raises(RuntimeError, match=r"node 'pw' \(op Pow\).*exponent"):
        build_artifacts(m, ["p"])
    ps = {"s": rnd(rng, 3), "b": rnd(rng, 3)}
    cs = {"m": rnd(rng, 3), "v": rnd(rng, 3, low=0.5)}
    m = graph_model([helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], training_mode=1)],
                    {"x": rnd(rng, 2, 3, 4)}, ps, {"y": np.float64}, opset=15, consts=cs)
    with pytest.raises(RuntimeError, match="training-mode BatchNormalization"):
        build_artifacts(m, ["s"])


def test_error_integer_output_and_name_clash():
    rng = np.random.default_rng(3)
    m = graph_model([helper.make_node("ArgMax", ["w"], ["y"])], {}, {"w": rnd(rng, 3, 4)}, {"y": np.int64})
    with pytest.raises(RuntimeError, match="output 'y' has element type int64"):
        build_artifacts(m, ["w"])
    m = graph_model([helper.make_node("Relu", ["w"], ["loss"])], {}, {"w": rnd(rng, 3)}, {"loss": np.float64})
    with pytest.raises(RuntimeError, match="already has a value named 'loss'"):
        build_artifacts(m, ["w"])


def test_error_training_dropout_and_subgraph_reads():
    rng = np.random.default_rng(4)
    t = {"tm": np.array(True)}
    m = graph_model([helper.make_node("Dropout", ["w", "", "tm"], ["y"], name="drop")], {}, {"w": rnd(rng, 3)},
                    {"y": np.float64}, opset=13, consts=t)
    with pytest.raises(RuntimeError, match=r"node 'drop' \(op Dropout\).*training mode"):
        build_artifacts(m, ["w"])
    m = graph_model([helper.make_node("Dropout", ["w", "", "tm"], ["y"])], {}, {"w": rnd(rng, 3)},
                    {"y": np.float64}, opset=13, consts={"tm": np.array(False)})
    build_artifacts(m, ["w"])
    # a parameter read inside a subgraph is never silently constant
    then_g = helper.make_graph([helper.make_node("Add", ["w", "x"], ["t"])], "then", [],
                               [helper.make_tensor_value_info("t", TensorProto.DOUBLE, [3])])
    else_g = helper.make_graph([helper.make_node("Identity", ["x"], ["e"])], "else", [],
                               [helper.make_tensor_value_info("e", TensorProto.DOUBLE, [3])])
    m = graph_model([helper.make_node("If", ["c"], ["y"], name="branch", then_branch=then_g, else_branch=else_g)],
                    {"c": np.array(True), "x": rnd(rng, 3)}, {"w": rnd(rng, 3)}, {"y": np.float64})
    with pytest.raises(RuntimeError, match=r"node 'branch' \(op If\): no gradient"):
        build_artifacts(m, ["w"])

# ---------------------------------------------------------------- com.microsoft Attention


def attention_by_hand(dt, ins, ps, cs, N, with_mask, scale):
    """What com.microsoft Attention computes, in standard ops (float64 runs anywhere)."""
    D = ps["w"].shape[0]
    H = D // N
    nodes = [helper.make_node("MatMul", ["x", "w"], ["qkv0"]), helper.make_node("Add", ["qkv0", "b"], ["qkv"]),
             helper.make_node("Reshape", ["qkv", "split"], ["r"]),
             helper.make_node("Transpose", ["r"], ["tq"], perm=[2, 0, 3, 1, 4]),
             helper.make_node("Transpose", ["r"], ["tk"], perm=[2, 0, 3, 4, 1]),
             helper.make_node("Gather", ["tq", "i0"], ["q"]), helper.make_node("Gather", ["tk", "i1"], ["kT"]),
             helper.make_node("Gather", ["tq", "i2"], ["v"]), helper.make_node("MatMul", ["q", "kT"], ["s0"]),
             helper.make_node("Mul", ["s0", "scale"], ["s1"])]
    last = "s1"
    consts = {"split": np.array([0, 0, 3, N, H], dtype=np.int64), "i0": np.array(0, dtype=np.int64),
              "i1": np.array(1, dtype=np.int64), "i2": np.array(2, dtype=np.int64),
              "scale": np.array(scale, dtype=dt), "merge": np.array([0, 0, -1], dtype=np.int64)}
    if with_mask:
        nodes += [helper.make_node("Cast", ["mask"], ["mf"], to=NP_TO_ONNX[np.dtype(dt)]),
                  helper.make_node("Sub", ["one", "mf"], ["inv"]), helper.make_node("Mul", ["inv", "filt"], ["madd"]),
                  helper.make_node("Reshape", ["madd", "mshape"], ["m4"]), helper.make_node("Add", ["s1", "m4"], ["s2"])]
        consts.update({"one": np.array(1.0, dtype=dt), "filt": np.array(-10000.0, dtype=dt),
                       "mshape": np.array([0, 1, 1, -1], dtype=np.int64)})
        last = "s2"
    nodes += [helper.make_node("Softmax", [last], ["p"], axis=-1), helper.make_node("MatMul", ["p", "v"], ["c"]),
              helper.make_node("Transpose", ["c"], ["ct"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["ct", "merge"], ["y"])]
    return graph_model(nodes, ins, ps, {"y": dt}, consts=consts)


@pytest.mark.parametrize("with_mask", [False, True])
def test_contrib_attention(with_mask):
    """com.microsoft Attention is rewritten into standard ops in the training model. kiln's fused
    kernel is float32 only, so: the float64 gradients of the same computation written by hand are
    checked by finite differences, the float32 gradients of the fused op's training model against
    those, and its loss against onnxruntime running the fused op (the eval model)."""
    rng = np.random.default_rng(40)
    B, S, D, N = 2, 4, 6, 2
    ins = {}
    if with_mask:
        m = np.ones((B, S), dtype=np.int32)
        m[1, -1] = 0
        ins["mask"] = m
    ps = {"x": rnd(rng, B, S, D), "w": rnd(rng, D, 3 * D) * 0.5, "b": rnd(rng, 3 * D) * 0.2}
    scale = float(np.float32(1 / np.sqrt(D // N)))
    ref = attention_by_hand(np.float64, ins, ps, {}, N, with_mask, scale)
    labels = labels_for(ref, ins, ps, "mse", rng)
    feeds = {**ins, "labels": labels}
    tr = Trainer(ref, list(ps))
    _, ana = tr.grads(feeds, ps)
    num = numeric_grads(tr, feeds, ps, rng, 1e-6)
    assert_grads_close(ana, num, 1e-6, "attention by hand, float64")
    make = one_node("Attention", ["x", "w", "b"] + (["mask"] if with_mask else []), {"num_heads": N},
                    domain="com.microsoft", domains={"com.microsoft": 1})
    p32 = {k: v.astype(np.float32) for k, v in ps.items()}
    tr32 = Trainer(make(np.float32, ins, p32, {}), list(ps))
    f32 = {**ins, "labels": labels.astype(np.float32)}
    loss32, ana32 = tr32.grads(f32, p32)
    assert_grads_close(ana32, num, 2e-3, "fused attention, float32")
    tm = onnx.load(os.path.join(tr32.dir, "training_model.onnx"))
    assert not any(n.op_type == "Attention" for n in tm.graph.node)
    ort_loss = run_ort(open(os.path.join(tr32.dir, "eval_model.onnx"), "rb").read(), {**f32, **p32})[0]
    np.testing.assert_allclose(loss32, ort_loss, rtol=1e-4)


def test_contrib_attention_unsupported_forms():
    rng = np.random.default_rng(41)
    make = one_node("Attention", ["x", "w"], {"num_heads": 2, "unidirectional": 1}, domain="com.microsoft",
                    domains={"com.microsoft": 1})
    m = make(np.float64, {"x": rnd(rng, 2, 4, 6)}, {"w": rnd(rng, 6, 18)}, {})
    with pytest.raises(RuntimeError, match=r"op com.microsoft:Attention\): no gradient for unidirectional"):
        build_artifacts(m, ["w"])


def test_output_declared_without_type():
    """The loss output's type then comes from static inference."""
    rng = np.random.default_rng(42)
    w = rnd(rng, 4, 3)
    x = rnd(rng, 5, 4)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.DOUBLE, [5, 4])],
                          [helper.make_empty_tensor_value_info("y")], initializer=[numpy_helper.from_array(w, "w")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    tr = Trainer(m, ["w"])
    tm = onnx.load(os.path.join(tr.dir, "training_model.onnx"))
    lab = tm.graph.input[1].type.tensor_type
    assert lab.elem_type == TensorProto.DOUBLE and [d.dim_value for d in lab.shape.dim] == [5, 3]
    y = rng.standard_normal((5, 3))
    _, gr = tr.grads({"x": x, "labels": y}, {"w": w})
    np.testing.assert_allclose(gr["w"], x.T @ (2 * (x @ w - y) / y.size), rtol=1e-12)

# ---------------------------------------------------------------- Split, hard activations, fused contrib ops


@pytest.mark.parametrize("opset,form", [(13, "input"), (18, "num_outputs"), (11, "attribute")])
def test_split(opset, form):
    rng = np.random.default_rng(43)
    if form == "input":
        make = one_node("Split", ["x", "s"], {"axis": 1}, n_out=3, opset=opset)
        consts = {"s": np.array([1, 3, 2], dtype=np.int64)}
    elif form == "num_outputs":
        make = one_node("Split", ["x"], {"axis": 1, "num_outputs": 3}, n_out=3, opset=opset)
        consts = {}
    else:
        make = one_node("Split", ["x"], {"axis": 1, "split": [1, 3, 2]}, n_out=3, opset=opset)
        consts = {}
    # only the first part takes the loss: the others get zero gradients
    check_rule(make, {}, {"x": rnd(rng, 2, 6, 3)}, consts=consts, rng=rng)


def test_split_two_parts_used():
    rng = np.random.default_rng(44)

    def make(dt, ins, ps, cs):
        nodes = [helper.make_node("Split", ["x", "s"], ["p0", "p1"], axis=0),
                 helper.make_node("Mul", ["p0", "p1"], ["y"])]
        return graph_model(nodes, ins, ps, {"y": dt}, opset=13, consts=cs)
    check_rule(make, {}, {"x": rnd(rng, 4, 3)}, consts={"s": np.array([2, 2], dtype=np.int64)}, rng=rng)


@pytest.mark.parametrize("op,attrs", [("HardSigmoid", {}), ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}),
                                      ("HardSwish", {})])
def test_hard_activations(op, attrs):
    rng = np.random.default_rng(45)
    x = rnd(rng, 4, 6, low=-5, high=5)
    check_rule(one_node(op, ["x"], attrs, opset=14), {}, {"x": x}, rng=rng)


def fused_vs_reference(fused, reference, ins, ps, rng, rtol32=2e-3):
    """kiln runs these contrib ops in float32 only: the float64 gradients of the same computation
    in standard ops are checked by finite differences, then the fused op's float32 gradients (and
    its eval loss, computed by the fused kernel) against them."""
    ref = reference(np.float64, ins, ps, {})
    labels = labels_for(ref, ins, ps, "mse", rng)
    tr = Trainer(ref, list(ps))
    feeds = {**ins, "labels": labels}
    loss64, ana = tr.grads(feeds, ps)
    num = numeric_grads(tr, feeds, ps, rng, 1e-6)
    assert_grads_close(ana, num, 1e-6, "reference, float64")
    p32 = {k: v.astype(np.float32) for k, v in ps.items()}
    i32 = {k: v.astype(np.float32) if v.dtype.kind == "f" else v for k, v in ins.items()}
    tr32 = Trainer(fused(np.float32, i32, p32, {}), list(ps))
    f32 = {**i32, "labels": labels.astype(np.float32)}
    loss32, ana32 = tr32.grads(f32, p32)
    np.testing.assert_allclose(loss32, loss64, rtol=1e-4)
    np.testing.assert_allclose(tr32.loss(f32, p32), loss64, rtol=1e-4)
    assert_grads_close(ana32, num, rtol32, "fused, float32")


MS = {"com.microsoft": 1}


@pytest.mark.parametrize("op", ["BiasGelu", "FastGelu"])
def test_bias_gelu_fast_gelu(op):
    rng = np.random.default_rng(46)
    fused = one_node(op, ["x", "b"], domain="com.microsoft", domains=MS)

    def reference(dt, ins, ps, cs):
        nodes = [helper.make_node("Add", ["x", "b"], ["z"]),
                 helper.make_node("Gelu", ["z"], ["y"], approximate="tanh" if op == "FastGelu" else "none")]
        return graph_model(nodes, ins, ps, {"y": dt}, opset=20, consts=cs)
    fused_vs_reference(fused, reference, {}, {"x": rnd(rng, 3, 8), "b": rnd(rng, 8)}, rng)


@pytest.mark.parametrize("with_bias", [False, True])
def test_skip_layernorm(with_bias):
    rng = np.random.default_rng(47)
    names = ["x", "skip", "g", "beta"] + (["bias"] if with_bias else [])
    ps = {"x": rnd(rng, 2, 3, 8), "skip": rnd(rng, 2, 3, 8), "g": rnd(rng, 8, low=0.5, high=1.5), "beta": rnd(rng, 8)}
    if with_bias:
        ps["bias"] = rnd(rng, 8)

    def fused(dt, ins, ps_, cs):
        # output 3 (input + skip + bias) is read too: its gradient joins the normalised one
        nodes = [helper.make_node("SkipLayerNormalization", names, ["ln", "", "", "sum"], domain="com.microsoft",
                                  epsilon=1e-5),
                 helper.make_node("Mul", ["ln", "sum"], ["y"])]
        return graph_model(nodes, ins, ps_, {"y": dt}, consts=cs, domains=MS)

    def reference(dt, ins, ps_, cs):
        nodes = [helper.make_node("Add", ["x", "skip"], ["s0"])]
        last = "s0"
        if with_bias:
            nodes.append(helper.make_node("Add", ["s0", "bias"], ["s1"]))
            last = "s1"
        nodes += [helper.make_node("LayerNormalization", [last, "g", "beta"], ["ln"], axis=-1, epsilon=1e-5),
                  helper.make_node("Mul", ["ln", last], ["y"])]
        return graph_model(nodes, ins, ps_, {"y": dt}, consts=cs)
    fused_vs_reference(fused, reference, {}, ps, rng)

# ---------------------------------------------------------------- real exported models


def to_float64(m):
    """The model with float32 replaced by float64 everywhere (initializers, declared types, Cast
    targets, tensor attributes): the finite differences need float64."""
    m = onnx.ModelProto.FromString(m.SerializeToString())
    F, D = TensorProto.FLOAT, TensorProto.DOUBLE

    def fix_tensor(t):
        if t.data_type == F:
            t.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(t).astype(np.float64), t.name))
    for t in m.graph.initializer:
        fix_tensor(t)
    for vi in list(m.graph.input) + list(m.graph.output) + list(m.graph.value_info):
        if vi.type.tensor_type.elem_type == F:
            vi.type.tensor_type.elem_type = D
    for n in m.graph.node:
        for a in n.attribute:
            if a.name == "to" and a.i == F:
                a.i = D
            if a.type == onnx.AttributeProto.TENSOR:
                fix_tensor(a.t)
    return m


def real_model_check(m, params, feeds, rng, loss="mse", output=None, n_dirs=2, per_param=3, n_params=6):
    """float64 copy: gradients along random directions and at sampled elements of a few parameters
    against central differences; then the float32 model's gradients against the float64 ones."""
    m64 = to_float64(m)
    f64 = {k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}
    tr = Trainer(m64, params, loss, output=output)
    vals = {i.name: numpy_helper.to_array(i) for i in m64.graph.initializer if i.name in params}
    _, g = tr.grads(f64, vals)
    gmax = max(float(np.abs(v).max()) for v in g.values())
    assert gmax > 0 and all(np.isfinite(v).all() for v in g.values())
    for _ in range(n_dirs):
        d = {k: rng.standard_normal(v.shape) for k, v in vals.items()}
        eps = 1e-6
        plus = {k: v + eps * d[k] for k, v in vals.items()}
        minus = {k: v - eps * d[k] for k, v in vals.items()}
        num = (tr.loss(f64, plus) - tr.loss(f64, minus)) / (2 * eps)
        ana = sum(float(np.sum(g[k] * d[k])) for k in vals)
        assert abs(num - ana) <= 1e-5 * max(abs(num), abs(ana)), f"directional derivative {ana} vs {num}"
    # elements: the parameters with the largest gradients (the others are below what differences resolve)
    pick = sorted(params, key=lambda k: -float(np.abs(g[k]).max()))[:n_params]
    sub = Trainer.__new__(Trainer)
    sub.__dict__.update(tr.__dict__)
    sub.params = pick
    num = numeric_grads(sub, f64, vals, rng, 1e-6, per_param)
    for k, (idx, n) in num.items():
        err = np.max(np.abs(g[k].reshape(-1)[idx] - n))
        assert err <= 1e-6 * gmax + 1e-9 * max(1.0, abs(tr.loss(f64, vals))), f"gradient of {k}: {err} (max {gmax})"
    # float32: the model as exported, against the float64 gradients
    tr32 = Trainer(m, params, loss, output=output)
    v32 = {k: v.astype(np.float32) for k, v in vals.items()}
    _, g32 = tr32.grads(feeds, v32)
    for k in params:
        err = float(np.abs(g32[k].astype(np.float64) - g[k]).max())
        assert err <= 1e-3 * gmax, f"float32 gradient of {k} off by {err} (max {gmax})"


def shared_model(name):
    path = os.path.join(SHARED_MODELS, name + ".onnx")
    if not os.path.exists(path):
        pytest.fail(f"shared model {path} is missing")
    m = onnx.load(path)
    ref = np.load(os.path.join(SHARED_MODELS, name + ".ref.npz"))
    feeds = {k[3:]: ref[k] for k in ref.files if k.startswith("in.")}
    # the weights: float tensors of ordinary magnitude (not a causal mask's -3.4e38)
    params = [i.name for i in m.graph.initializer if i.data_type == TensorProto.FLOAT and len(i.dims) >= 1
              and np.abs(numpy_helper.to_array(i)).max() < 1e4]
    return m, feeds, params


@pytest.mark.parametrize("name", ["bert_tiny", "gpt2_tiny"])
def test_real_transformers(name):
    rng = np.random.default_rng(48)
    m, feeds, params = shared_model(name)
    out = m.graph.output[-1].name
    y = kiln.InferenceSession(m.SerializeToString()).run([out], feeds)[0]
    feeds["labels"] = rng.standard_normal(y.shape).astype(np.float32)
    real_model_check(m, params, feeds, rng, output=out)


def test_real_bert_fused_float32():
    """bert_tiny after onnxruntime's optimizer (SkipLayerNormalization, BiasGelu: float32 kernels
    only) has the gradients of the unfused bert_tiny, whose float64 copy is checked above."""
    rng = np.random.default_rng(50)
    m, feeds, params = shared_model("bert_tiny")
    mf, _, params_f = shared_model("bert_tiny_fused")
    out = m.graph.output[-1].name
    y = kiln.InferenceSession(m.SerializeToString()).run([out], feeds)[0]
    feeds["labels"] = rng.standard_normal(y.shape).astype(np.float32)
    common = [p for p in params if p in params_f]
    assert len(common) >= 10
    g = Trainer(to_float64(m), common, output=out)
    vals = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in m.graph.initializer if i.name in common}
    _, g64 = g.grads({k: v.astype(np.float64) if v.dtype == np.float32 else v for k, v in feeds.items()}, vals)
    vf = {i.name: numpy_helper.to_array(i) for i in mf.graph.initializer if i.name in common}
    _, gf = Trainer(mf, common, output=out).grads(feeds, vf)
    gmax = max(float(np.abs(v).max()) for v in g64.values())
    for k in common:
        assert float(np.abs(gf[k] - g64[k]).max()) <= 1e-3 * gmax, k


def test_real_mobilenet():
    # mse: with random weights the logits are nearly uniform and cross entropy is flat (ln 1000)
    rng = np.random.default_rng(49)
    m, feeds, params = shared_model("mobilenet_v3_small")
    feeds["labels"] = rng.standard_normal((1, 1000)).astype(np.float32)
    real_model_check(m, params, feeds, rng, n_dirs=1, per_param=2, n_params=4)


@pytest.mark.parametrize("op,attrs", [("Sin", {}), ("Cos", {}), ("Elu", {}), ("Elu", {"alpha": 0.5})])
def test_more_unary(op, attrs):
    rng = np.random.default_rng(51)
    check_rule(one_node(op, ["x"], attrs), {}, {"x": rnd(rng, 3, 5)}, rng=rng)


@pytest.mark.parametrize("opset", [10, 13])
def test_clip(opset):
    rng = np.random.default_rng(52)
    x = rnd(rng, 4, 6)
    x = np.where(np.abs(np.abs(x) - 1.0) < 0.05, 0.5, x)  # away from the bounds
    if opset < 11:
        check_rule(one_node("Clip", ["x"], {"min": -1.0, "max": 1.0}, opset=opset), {}, {"x": x}, rng=rng)
    else:
        check_rule(one_node("Clip", ["x", "lo", "hi"], opset=opset), {}, {"x": x},
                   consts={"lo": np.array(-1.0), "hi": np.array(1.0)}, rng=rng)


def test_mean():
    rng = np.random.default_rng(53)
    check_rule(one_node("Mean", ["a", "b", "c"]), {}, {"a": rnd(rng, 3, 4), "b": rnd(rng, 4), "c": rnd(rng, 3, 1)},
               rng=rng)


def test_cross_entropy_ignores_minus_100():
    """PyTorch's default ignore_index: those targets take no part in the loss or its mean."""
    rng = np.random.default_rng(54)
    z = rnd(rng, 6, 3)
    m = graph_model([helper.make_node("Identity", ["z"], ["y"])], {}, {"z": z}, {"y": np.float64})
    cls = np.array([0, 2, -100, 1, -100, 2], dtype=np.int64)
    keep = cls != -100
    lsm = z - np.log(np.exp(z).sum(1, keepdims=True))
    want = -np.mean(lsm[np.arange(6)[keep], cls[keep]])
    dz = np.exp(lsm) - np.eye(3)[np.where(keep, cls, 0)]
    dz[~keep] = 0
    tr = Trainer(m, ["z"], "cross_entropy")
    loss, g = tr.grads({"labels": cls}, {"z": z})
    np.testing.assert_allclose(loss, want, rtol=1e-12)
    np.testing.assert_allclose(g["z"], dz / keep.sum(), rtol=1e-10, atol=1e-14)
    em = os.path.join(tr.dir, "eval_model.onnx")
    np.testing.assert_allclose(run_ort(open(em, "rb").read(), {"labels": cls, "z": z})[0], want, rtol=1e-10)


@pytest.mark.parametrize("opset,pads,axes", [(13, [1, 0, 2, 0, 2, 1], None), (13, [0, -1, 1, 1, 2, -1], None),
                                             (18, [1, 2, 0, 1], [2, 0]), (10, [1, 0, 1, 0, 1, 2], None)])
def test_pad_constant(opset, pads, axes):
    rng = np.random.default_rng(55)
    x = {"x": rnd(rng, 2, 3, 4)}
    if opset < 11:
        check_rule(one_node("Pad", ["x"], {"pads": pads, "value": 0.5}, opset=opset), {}, x, rng=rng)
        return
    names = ["x", "p", "c"] + (["a"] if axes else [])
    cs = {"p": np.array(pads, dtype=np.int64), "c": np.array(0.5)}
    if axes:
        cs["a"] = np.array(axes, dtype=np.int64)
    check_rule(one_node("Pad", names, opset=opset), {}, x, consts=cs, rng=rng)


def test_pad_reflect_refused():
    rng = np.random.default_rng(56)
    m = graph_model([helper.make_node("Pad", ["w", "p"], ["y"], mode="reflect", name="pad")], {}, {"w": rnd(rng, 3, 4)},
                    {"y": np.float64}, opset=13, consts={"p": np.array([0, 1, 0, 1], dtype=np.int64)})
    with pytest.raises(RuntimeError, match=r"node 'pad' \(op Pad\).*mode 'reflect'"):
        build_artifacts(m, ["w"])


def test_tile():
    rng = np.random.default_rng(57)
    check_rule(one_node("Tile", ["x", "r"]), {}, {"x": rnd(rng, 2, 3)}, consts={"r": np.array([3, 2], dtype=np.int64)},
               rng=rng)


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize("axes,keepdims", [([1], 1), ([0, 2], 0), (None, 0)])
def test_reduce_max_min(op, axes, keepdims):
    rng = np.random.default_rng(59)
    attrs = {"keepdims": keepdims, **({"axes": axes} if axes else {})}
    check_rule(one_node(op, ["x"], attrs, opset=13), {}, {"x": rnd(rng, 2, 3, 4)}, rng=rng)


@pytest.mark.parametrize("op", ["Max", "Min"])
def test_min_max(op):
    rng = np.random.default_rng(60)
    check_rule(one_node(op, ["a", "b", "c"], opset=13), {}, {"a": rnd(rng, 3, 4), "b": rnd(rng, 4), "c": rnd(rng, 3, 1)},
               rng=rng)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 6)])
def test_instance_norm(shape):
    rng = np.random.default_rng(61)
    C = shape[1]
    ps = {"x": rnd(rng, *shape), "s": rnd(rng, C, low=0.5, high=1.5), "b": rnd(rng, C)}
    check_rule(one_node("InstanceNormalization", ["x", "s", "b"], {"epsilon": 1e-3}), {}, ps, rng=rng)
