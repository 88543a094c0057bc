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

from util import run_ort

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
              np.dtype(np.int64): TensorProto.INT64, np.dtype(np.bool_): TensorProto.BOOL}


def graph_model(nodes, inputs, params, outputs, opset=17, consts=None, domains=None):
    """inputs: name -> array (graph inputs); params / consts: name -> array (initializers);
    outputs: name -> numpy dtype (declared without shape)."""
    consts = consts or {}
    vis = [helper.make_tensor_value_info(k, NP_TO_ONNX[v.dtype], v.shape) for k, v in inputs.items()]
    outs = [helper.make_tensor_value_info(k, NP_TO_ONNX[np.dtype(t)], None) for k, t in outputs.items()]
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
        self.eval = kiln.InferenceSession(os.path.join(self.dir, "eval_model.onnx"), threads=2)

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
        scale = max(np.max(np.abs(n)), 1e-3)
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


R = np.random.default_rng(7)

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
                                                    ([-1], [-5], [1], [-1]), ([3, 0], [0, 3], [2, 1], [-2, 1])])
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
