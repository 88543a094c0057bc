"""Training on CUDA: every CUDA kernel of the kiln gradient ops against the CPU kernel (one-node
models through cuda_diff.check, which also asserts the node really ran on CUDA), then end to end:
20 steps of the MLP, CNN and encoder of tests/train_ref.py on a CUDA module against a CPU module
(losses within 1e-4 relative), with the parameters, gradients and optimizer state kept in device
memory (the module says where, and counts the bytes it copies between host and device).

Skips, with the reason, where kiln's CUDA provider does not run (no GPU or no libkiln_cuda.so)."""
import os
import sys

import numpy as np
import pytest

from cuda_diff import F32, I64, check, cuda_available, kiln, rand

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))  # tests/: train_ref
import train_ref  # noqa: E402
from kiln import training  # noqa: E402
from kiln.training import CheckpointState, Module, Optimizer  # noqa: E402

rng = np.random.default_rng(20261206)


def kiln_op(op, inputs, n_outputs=1, const_inputs=(), rtol=None, **attrs):
    return check(op, inputs, attrs=attrs, domain="kiln", opset=1, n_outputs=n_outputs, const_inputs=const_inputs,
                 rtol=rtol)


def softmax(x, axis, log=False):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    s = e / e.sum(axis=axis, keepdims=True)
    return np.log(s).astype(np.float32) if log else s.astype(np.float32)


# ---- MatMulGrad ----

@pytest.mark.parametrize("a_shape,b_shape", [
    ((5, 7), (7, 3)),            # plain
    ((2, 6, 7), (7, 4)),         # B shared: batches fold into rows
    ((2, 3, 5, 7), (2, 3, 7, 4)),  # equal batches: strided batched
    ((5, 7), (3, 7, 4)),         # A shared: dA sums the batches
    ((7,), (7, 4)),              # 1-D A
    ((3, 5, 7), (7,)),           # 1-D B
    ((64, 130), (130, 257)),     # sizes off any tile
])
def test_matmul_grad(a_shape, b_shape):
    a, b = rand(a_shape), rand(b_shape)
    g = rand(np.matmul(a, b).shape)
    kiln_op("MatMulGrad", [("g", g), ("a", a), ("b", b)], n_outputs=2)


def test_matmul_grad_partial_broadcast_stays_on_cpu():
    a, b = rand((2, 1, 5, 7)), rand((1, 3, 7, 4))
    g = rand(np.matmul(a, b).shape)
    check("MatMulGrad", [("g", g), ("a", a), ("b", b)], domain="kiln", opset=1, n_outputs=2, expect_cuda=False)


# ---- SoftmaxGrad, LayerNormGrad, BatchNormGrad, InstanceNormGrad ----

@pytest.mark.parametrize("shape,axis,log,legacy", [
    ((6, 10), -1, 0, 0), ((3, 4, 5), 1, 0, 0), ((3, 4, 5), -1, 1, 0), ((2, 3, 4), 1, 0, 1), ((4, 3000), -1, 0, 0),
])
def test_softmax_grad(shape, axis, log, legacy):
    x = rand(shape, low=-3, high=3)
    if legacy:
        flat = x.reshape(int(np.prod(shape[:axis])), -1)
        y = softmax(flat, 1).reshape(shape)
    else:
        y = softmax(x, axis, log=bool(log))
    kiln_op("SoftmaxGrad", [("g", rand(shape)), ("y", y)], axis=axis, log=log, legacy=legacy)


@pytest.mark.parametrize("shape,axis", [((6, 16), -1), ((2, 5, 8), -1), ((2, 5, 8), 1), ((3, 2000), 1)])
def test_layernorm_grad(shape, axis):
    x = rand(shape, low=-2, high=2)
    norm = shape[axis if axis >= 0 else len(shape) + axis:]
    kiln_op("LayerNormGrad", [("g", rand(shape)), ("x", x), ("s", rand(norm))], n_outputs=3, axis=axis,
            epsilon=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", [(4, 3, 5, 5), (8, 6)])
def test_batchnorm_grad(shape):
    c = shape[1]
    var = rng.uniform(0.5, 2.0, c).astype(np.float32)
    kiln_op("BatchNormGrad", [("g", rand(shape)), ("x", rand(shape)), ("s", rand(c)), ("m", rand(c)), ("v", var)],
            n_outputs=3, epsilon=1e-5, rtol=1e-4)


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (3, 2, 7)])
def test_instancenorm_grad(shape):
    kiln_op("InstanceNormGrad", [("g", rand(shape)), ("x", rand(shape)), ("s", rand(shape[1]))], n_outputs=3,
            epsilon=1e-5, rtol=1e-4)


# ---- ConvGrad (cuDNN) ----

def _conv_out(x, w, strides, pads, dil):
    nd = len(x.shape) - 2
    return tuple((x.shape[2 + i] + 2 * pads[i] - dil[i] * (w.shape[2 + i] - 1) - 1) // strides[i] + 1
                 for i in range(nd))


@pytest.mark.parametrize("x_shape,w_shape,group,strides,pads,dil", [
    ((2, 3, 8, 8), (4, 3, 3, 3), 1, (1, 1), (1, 1), (1, 1)),
    ((2, 4, 9, 7), (6, 2, 3, 2), 2, (2, 1), (1, 0), (1, 2)),
    ((3, 2, 11), (5, 2, 3), 1, (2,), (1,), (1,)),          # 1-D
    ((1, 2, 4, 5, 6), (3, 2, 2, 3, 2), 1, (1, 2, 1), (0, 1, 1), (1, 1, 1)),  # 3-D
])
def test_conv_grad(x_shape, w_shape, group, strides, pads, dil):
    x, w = rand(x_shape), rand(w_shape)
    y_shape = (x_shape[0], w_shape[0]) + _conv_out(x, w, strides, pads, dil)
    kiln_op("ConvGrad", [("g", rand(y_shape)), ("x", x), ("w", w)], n_outputs=3, group=group, strides=list(strides),
            pads=list(pads) * 2, dilations=list(dil), rtol=1e-4)


def test_conv_grad_asymmetric_pads_stay_on_cpu():
    x, w = rand((1, 2, 6, 6)), rand((3, 2, 3, 3))
    check("ConvGrad", [("g", rand((1, 3, 5, 6))), ("x", x), ("w", w)], attrs={"pads": [0, 1, 1, 1]}, domain="kiln",
          opset=1, n_outputs=3, expect_cuda=False)


# ---- MaxPoolGrad, AveragePoolGrad ----

@pytest.mark.parametrize("op", ["MaxPoolGrad", "AveragePoolGrad"])
@pytest.mark.parametrize("x_shape,k,s,pads,dil,ceil,include_pad", [
    ((2, 3, 8, 8), (2, 2), (2, 2), (0, 0, 0, 0), (1, 1), 0, 0),
    ((2, 3, 9, 7), (3, 3), (2, 2), (1, 1, 1, 1), (1, 1), 0, 1),
    ((1, 2, 10, 9), (3, 2), (2, 3), (1, 0, 0, 1), (1, 1), 1, 0),   # asymmetric pads, ceil_mode
    ((2, 2, 11), (3,), (1,), (1, 1), (2,), 0, 0),                  # 1-D, dilated (MaxPool)
    ((1, 2, 5, 6, 4), (2, 3, 2), (1, 2, 2), (0, 1, 0, 0, 1, 1), (1, 1, 1), 0, 1),  # 3-D
])
def test_pool_grad(op, x_shape, k, s, pads, dil, ceil, include_pad):
    from cuda_diff import _model
    x = rand(x_shape)
    attrs = dict(kernel_shape=list(k), strides=list(s), pads=list(pads), ceil_mode=ceil)
    if op == "MaxPoolGrad":
        x = x + np.arange(x.size, dtype=np.float32).reshape(x_shape) * 1e-3  # distinct maxima
        attrs["dilations"] = list(dil)
    else:
        attrs["count_include_pad"] = include_pad
    # the gradient has the forward's output shape, as kiln's CPU pooling gives it
    fwd = _model(op[:-4], [("x", x)], attrs, "", None, 1, ())
    y = kiln.InferenceSession(fwd, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    kiln_op(op, [("g", rand(y.shape)), ("x", x)], rtol=1e-5, **attrs)


# ---- element-wise ----

UNARY = [("relu", {}), ("leakyrelu", {"alpha": 0.1}), ("sigmoid", {}), ("tanh", {}), ("sqrt", {}), ("erf", {}),
         ("abs", {}), ("softplus", {}), ("gelu", {}), ("gelu_tanh", {}), ("reciprocal", {}),
         ("hardsigmoid", {"alpha": 0.2, "beta": 0.5}), ("hardswish", {}), ("sin", {}), ("cos", {}),
         ("clip", {"alpha": -0.5, "beta": 0.5}), ("elu", {"alpha": 1.3})]


@pytest.mark.parametrize("kind,attrs", UNARY, ids=[k for k, _ in UNARY])
def test_unary_grad(kind, attrs):
    shape = (5, 37)
    t = rand(shape, low=0.1, high=2.0) if kind == "sqrt" else rand(shape, low=-4, high=4)
    if kind in ("sigmoid",):
        t = (1 / (1 + np.exp(-t))).astype(np.float32)  # the op's output
    if kind == "tanh":
        t = np.tanh(t).astype(np.float32)
    kiln_op("UnaryGrad", [("g", rand(shape)), ("t", t)], kind=kind, rtol=1e-5, **attrs)


@pytest.mark.parametrize("p", [2.0, 1.0, 3.0, 0.5])
def test_pow_grad(p):
    x = rand((4, 9), low=0.2, high=2.0)
    kiln_op("PowGrad", [("g", rand((4, 9))), ("x", x), ("p", np.array(p, np.float32))], const_inputs=("p",))


# ---- reductions and broadcasts ----

@pytest.mark.parametrize("case", ["axes_attr", "axes_input", "mean", "from_axis", "all", "identity"])
def test_reduce_grad(case):
    x = rand((3, 4, 5))
    if case == "axes_attr":
        kiln_op("ReduceGrad", [("g", rand((3, 1, 5))), ("x", x)], axes=[1])
    elif case == "axes_input":
        kiln_op("ReduceGrad", [("g", rand((3,))), ("x", x), ("axes", np.array([-1, 1], np.int64))],
                const_inputs=("axes",))
    elif case == "mean":
        kiln_op("ReduceGrad", [("g", rand((4,))), ("x", x)], axes=[0, 2], mean=1)
    elif case == "from_axis":
        kiln_op("ReduceGrad", [("g", rand((3,))), ("x", x)], from_axis=1)
    elif case == "all":
        kiln_op("ReduceGrad", [("g", rand(())), ("x", x)], mean=1)
    else:
        kiln_op("ReduceGrad", [("g", rand((3, 4, 5))), ("x", x)], noop_with_empty_axes=1)


@pytest.mark.parametrize("g_shape,ref_shape,scale", [
    ((4, 3, 5), (3, 1), 1.0), ((4, 3, 5), (5,), 1.0), ((6, 8), (1, 8), 0.5), ((2, 3), (2, 3), 2.0),
    ((4, 3, 5), (1,), 1.0), ((4, 3), (3,), 0.0), ((512, 64), (64,), 1.0),
])
def test_sumto(g_shape, ref_shape, scale):
    kiln_op("SumTo", [("g", rand(g_shape)), ("ref", rand(ref_shape))], scale=scale, rtol=1e-5)


@pytest.mark.parametrize("x_shape,reps", [((2, 3), (2, 2)), ((3, 1, 4), (1, 5, 2))])
def test_tile_grad(x_shape, reps):
    g = rand(tuple(a * r for a, r in zip(x_shape, reps)))
    kiln_op("TileGrad", [("g", g), ("x", rand(x_shape))])


# ---- indexing ----

@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([1, 0], [3, 5], [0, 2], [1, 2]), ([-1], [-6], [1], [-2]), ([0], [100], [2], [1]), ([2], [2], [0], [1]),
])
def test_slice_grad(starts, ends, axes, steps):
    x = rand((4, 6, 5))
    want = x
    for s, e, a, st in zip(starts, ends, axes, steps):
        sl = [slice(None)] * 3
        sl[a] = slice(s, e, st)
        want = want[tuple(sl)]
    ins = [("g", rand(want.shape)), ("x", x), ("starts", np.array(starts, np.int64)), ("ends", np.array(ends, np.int64)),
           ("axes", np.array(axes, np.int64)), ("steps", np.array(steps, np.int64))]
    kiln_op("SliceGrad", ins, const_inputs=("starts", "ends", "axes", "steps"))


@pytest.mark.parametrize("pads", [[1, 0, 2, 0, 3, 1], [0, -1, 1, 2, 0, -2]])
def test_pad_grad(pads):
    x = rand((3, 5, 4))
    g_shape = tuple(d + pads[i] + pads[i + 3] for i, d in enumerate(x.shape))
    kiln_op("PadGrad", [("g", rand(g_shape)), ("x", x), ("pads", np.array(pads, np.int64))], const_inputs=("pads",))


@pytest.mark.parametrize("axis,ind_dtype", [(0, np.int64), (1, np.int32), (0, np.int32)])
def test_gather_grad(axis, ind_dtype):
    data = rand((6, 5, 3))
    ind = np.array([[0, 4, -1], [2, 2, 0]], ind_dtype)  # repeats: rows summed (float32 atomics)
    g_shape = data.shape[:axis] + ind.shape + data.shape[axis + 1:]
    kiln_op("GatherGrad", [("g", rand(g_shape)), ("ind", ind), ("data", data)], axis=axis, rtol=1e-5)


def test_concat_grad():
    xs = [rand((2, 3, 4)), rand((2, 1, 4)), rand((2, 5, 4))]
    g = rand((2, 9, 4))
    kiln_op("ConcatGrad", [("g", g)] + [("x%d" % i, x) for i, x in enumerate(xs)], n_outputs=3, axis=1)


@pytest.mark.parametrize("reduction,weighted,spatial,ignore", [
    ("mean", False, False, None), ("sum", True, False, None), ("none", False, False, None),
    ("mean", True, True, 1), ("none", True, True, None),
])
def test_nll_loss_grad(reduction, weighted, spatial, ignore):
    N, C, D = 6, 4, 3
    x_shape, t_shape = ((N, C, D), (N, D)) if spatial else ((N, C), (N,))
    target = rng.integers(0, C, t_shape).astype(np.int64)
    g = rand(t_shape) if reduction == "none" else rand(())
    ins = [("g", g), ("x", rand(x_shape)), ("t", target)]
    if weighted:
        ins.append(("w", rng.uniform(0.2, 2.0, C).astype(np.float32)))
    attrs = {"reduction": reduction}
    if ignore is not None:
        attrs["ignore_index"] = ignore
    kiln_op("NLLLossGrad", ins, **attrs)


@pytest.mark.parametrize("reduction,weighted,spatial,ignore", [
    ("mean", False, False, None), ("sum", True, False, 2), ("none", True, True, None), ("mean", True, True, 0),
])
def test_nll_loss_forward(reduction, weighted, spatial, ignore):
    N, C, D = 7, 5, 3
    x_shape, t_shape = ((N, C, D), (N, D)) if spatial else ((N, C), (N,))
    ins = [("x", rand(x_shape, low=-3, high=0)), ("t", rng.integers(0, C, t_shape).astype(np.int64))]
    if weighted:
        ins.append(("w", rng.uniform(0.2, 2.0, C).astype(np.float32)))
    attrs = {"reduction": reduction}
    if ignore is not None:
        attrs["ignore_index"] = ignore
    check("NegativeLogLikelihoodLoss", ins, attrs=attrs)


def test_float64_stays_on_cpu_with_reason():
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    from cuda_diff import _model
    g = rng.standard_normal((3, 4))
    m = _model("UnaryGrad", [("g", g), ("t", g)], {"kind": "relu"}, "kiln", 1, 1, ())
    s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert dict(s.node_placement())["node"] == "CPUExecutionProvider"
    assert "double" in s.placement_reason("node") or "float64" in s.placement_reason("node")


# ---- end to end: a CUDA module against a CPU module ----

E2E = {
    "mlp": (train_ref.mlp, train_ref.mlp_params, [], lambda r: r.standard_normal((8, 16)), (["N", 16], 5)),
    "cnn": (train_ref.cnn, train_ref.cnn_params, train_ref.CNN_FROZEN, lambda r: r.standard_normal((4, 3, 8, 8)),
            (["N", 3, 8, 8], 4)),
    "bert": (train_ref.bert, train_ref.bert_params, [],
             lambda r: r.integers(0, train_ref.V_, (train_ref.B_, train_ref.S_)), ([train_ref.B_, train_ref.S_], 3)),
}
# gradient ops without a CUDA kernel yet (they run on the CPU, with copies)
CPU_GRADS = set()


def _artifacts(tmp_path, name, opt):
    build, make_params, frozen, make_x, (x_shape, classes) = E2E[name]
    params = make_params(np.random.default_rng(5))
    x_dtype = 7 if name == "bert" else 1
    o = train_ref.Onnx({k: v.astype(np.float32) for k, v in params.items()})
    model = o.model(build(o, "x"), "x", x_dtype, x_shape, [x_shape[0], classes])
    trainable = [k for k in params if k not in frozen]
    art = str(tmp_path / ("art_" + opt))
    training.generate_artifacts(model, requires_grad=trainable, frozen_params=frozen,
                                loss=training.LossType.CrossEntropyLoss, optimizer=opt, artifact_directory=art)
    return art, trainable


def _module(art, device, opt, **hp):
    st = CheckpointState.load_checkpoint(os.path.join(art, "checkpoint.kckpt"))
    for k, v in hp.items():
        st.set_hyperparameter(k, v)
    mod = Module(os.path.join(art, "training_model.onnx"), st, os.path.join(art, "eval_model.onnx"), device=device)
    return st, mod, Optimizer(opt, mod)


@pytest.mark.parametrize("opt,hp", [("adamw", {"lr": 0.01}), ("sgd", {"lr": 0.05, "momentum": 0.9})])
@pytest.mark.parametrize("name", list(E2E))
def test_training_on_cuda_matches_cpu(tmp_path, name, opt, hp):
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    art, trainable = _artifacts(tmp_path, name, opt)
    # which gradient nodes the CUDA provider takes: all but those without a kernel
    s = kiln.InferenceSession(os.path.join(art, "training_model.onnx"),
                              providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    off = [(n["op_type"], n["reason"]) for n in s.nodes()
           if n["domain"] == "kiln" and n["provider"] != "CUDAExecutionProvider" and n["op_type"] not in CPU_GRADS]
    assert not off, "gradient nodes not on CUDA: %s" % off
    st_c, mod_c, opt_c = _module(art, "cpu", opt, **hp)
    st_g, mod_g, opt_g = _module(art, "cuda", opt, **hp)
    assert "CUDAExecutionProvider" in mod_g.get_providers()
    assert mod_g.parameters_memory() == "device" and mod_c.parameters_memory() == "host"
    make_x, classes = E2E[name][3], E2E[name][4][1]
    data = np.random.default_rng(7)
    before = None
    for step in range(1, 21):
        x = make_x(data)
        x = x.astype(np.int64) if name == "bert" else x.astype(np.float32)
        labels = data.integers(0, classes, len(x)).astype(np.int64)
        lc, lg = float(mod_c(x, labels)), float(mod_g(x, labels))
        assert abs(lg - lc) <= 1e-4 * abs(lc), (step, lg, lc)
        if step == 3:
            before = mod_g.transfer_bytes()
        for o_, m_ in ((opt_c, mod_c), (opt_g, mod_g)):
            o_.step()
            m_.lazy_reset_grad()
    per_step = (mod_g.transfer_bytes() - before) / 17
    if name == "mlp":
        assert per_step <= 4, per_step  # every gradient is computed on the device: a step copies only the loss
    else:  # at most the gradients of CPU nodes go up; never the parameters
        assert per_step < sum(st_g.parameters[k].data.nbytes for k in trainable), per_step
    # the trained values come back to the checkpoint when read
    for k in trainable:
        if k.endswith(".k.b"):
            continue  # exact gradient 0 (softmax ignores a shift of every key): AdamW moves it by rounding noise
        a, b = st_g.parameters[k].data, st_c.parameters[k].data
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=2e-4 * max(np.abs(b).max(), 1e-6), err_msg=k)
    assert st_g.step == st_c.step == 20
    # eval on the device parameters
    x = make_x(data)
    x = x.astype(np.int64) if name == "bert" else x.astype(np.float32)
    labels = data.integers(0, classes, len(x)).astype(np.int64)
    mod_c.eval()
    mod_g.eval()
    ec, eg = mod_c(x, labels), mod_g(x, labels)
    assert float(eg[0]) == pytest.approx(float(ec[0]), rel=1e-4)
    np.testing.assert_allclose(eg[1], ec[1], rtol=1e-3, atol=1e-4)
    # a saved checkpoint holds the device values, and export writes them
    p = str(tmp_path / "trained.kckpt")
    CheckpointState.save_checkpoint(st_g, p)
    back = CheckpointState.load_checkpoint(p)
    for k in trainable:
        assert back.parameters[k].data.tobytes() == st_g.parameters[k].data.tobytes()
    out = str(tmp_path / "trained.onnx")
    mod_g.export_model_for_inferencing(out, ["logits"])
    got = kiln.InferenceSession(out).run(None, {"x": x})[0]  # the device-trained values, on the CPU
    np.testing.assert_allclose(got, eg[1], rtol=1e-4, atol=1e-5 * max(np.abs(eg[1]).max(), 1e-6))


def test_device_gradients_accumulate_and_checkpoint_writes_reach_the_device(tmp_path):
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    art, trainable = _artifacts(tmp_path, "mlp", "adamw")
    st_c, mod_c, opt_c = _module(art, "cpu", "adamw", lr=0.01)
    st_g, mod_g, opt_g = _module(art, "cuda", "adamw", lr=0.01)
    data = np.random.default_rng(3)
    batches = [(data.standard_normal((8, 16)).astype(np.float32), data.integers(0, 5, 8).astype(np.int64))
               for _ in range(3)]
    for m_ in (mod_c, mod_g):  # three steps without a reset: the gradients add up
        for x, y in batches:
            m_(x, y)
    for k in trainable:
        gc, gg = mod_c._grad(k), mod_g._grad(k)
        np.testing.assert_allclose(gg, gc, rtol=1e-4, atol=1e-5 * max(np.abs(gc).max(), 1e-6), err_msg=k)
        assert np.abs(gc).max() > 0
    for m_ in (mod_c, mod_g):
        m_.lazy_reset_grad()
    for k in trainable:  # a pending reset reads as zeros
        assert not mod_g._grad(k).any()
    # a parameter set in the checkpoint is what the next device step uses
    k0 = trainable[0]
    new = rand(st_c.parameters[k0].data.shape)
    st_c.parameters[k0].data = new
    st_g.parameters[k0].data = new
    x, y = batches[0]
    assert float(mod_g(x, y)) == pytest.approx(float(mod_c(x, y)), rel=1e-4)
    for o_ in (opt_c, opt_g):
        o_.step()
    np.testing.assert_allclose(st_g.parameters[k0].data, st_c.parameters[k0].data, rtol=1e-4, atol=1e-6)
