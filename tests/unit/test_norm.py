"""Normalisations (layer, simplified/RMS, skip, batch, instance, group, Lp, mean-variance, LRN)
and Dropout, checked against onnxruntime (numpy where onnxruntime lacks the case)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, kiln, node_model, rand, run_kiln, run_ort  # noqa: E402

F32, F64, F16 = np.float32, np.float64, np.float16
MS = "com.microsoft"


def tol(dt):
    if dt == F16:
        return dict(rtol=2e-2, atol=2e-2)
    return dict(rtol=1e-4, atol=1e-5)


def feeds_of(inputs):
    return {k: v for k, v in inputs if k}


# ---- LayerNormalization ----

@pytest.mark.parametrize("opset", [16, 17])
def test_layernorm(opset):
    rng = np.random.default_rng(1)
    for dt in (F32, F64, F16):
        for shape, axis, sshape in [((2, 3, 8), -1, (8,)), ((2, 3, 8), 1, (3, 8)),
                                    ((2, 3, 8), 0, (2, 3, 8)), ((4, 5), -2, (4, 5)),
                                    ((2, 3, 8), 1, (8,)), ((2, 3, 8), -1, (2, 1, 8)),
                                    ((6, 37), -1, (37,))]:
            for with_b in (True, False):
                for outs in (["y"], ["y", "m", "i"], ["y", "", "i"]):
                    x = rand(rng, shape, dt)
                    s = rand(rng, sshape, dt)
                    inputs = [("x", x), ("s", s)]
                    if with_b:
                        inputs.append(("b", rand(rng, sshape, dt)))
                    m = node_model("LayerNormalization", inputs, outs,
                                   {"axis": axis, "epsilon": 1e-3}, opset=opset)
                    check(m, feeds_of(inputs), **tol(dt))


def test_layernorm_transformer_sizes():
    """Rows like bert/gpt layers: long enough for the vector path, many rows for the threads."""
    rng = np.random.default_rng(2)
    for shape in [(4, 128, 768), (3, 7, 129), (1, 1, 1)]:
        h = shape[-1]
        x = rand(rng, shape, F32) * 3 + 1
        s, b = rand(rng, (h,), F32), rand(rng, (h,), F32)
        m = node_model("LayerNormalization", [("x", x), ("s", s), ("b", b)], ["y", "m", "i"],
                       opset=17)
        check(m, {"x": x, "s": s, "b": b}, rtol=1e-4, atol=1e-4)


def test_layernorm_errors():
    x = np.ones((2, 3), F32)
    for s, attrs in [(np.ones((4,), F32), {}), (np.ones((3,), F32), {"axis": 2}),
                     (np.ones((3,), F64), {})]:
        m = node_model("LayerNormalization", [("x", x), ("s", s)], ["y"], attrs, opset=17)
        with pytest.raises(kiln.KilnError):
            run_kiln(m, {"x": x, "s": s})


def test_simplified_layernorm_and_rms():
    rng = np.random.default_rng(3)
    for dt in (F32, F64, F16):
        for shape, axis in [((2, 3, 16), -1), ((2, 3, 16), 1), ((5, 300), -1)]:
            x = rand(rng, shape, dt)
            s = rand(rng, shape[axis:] if axis >= 0 else shape[axis:], dt)
            inputs = [("x", x), ("s", s)]
            for outs in (["y"], ["y", "i"]):
                m = node_model("SimplifiedLayerNormalization", inputs, outs,
                               {"axis": axis, "epsilon": 1e-4}, opset=17)
                check(m, feeds_of(inputs), **tol(dt))
            m = node_model("RMSNormalization", inputs, ["y"], {"axis": axis, "epsilon": 1e-4},
                           opset=23)
            check(m, feeds_of(inputs), **tol(dt))


# ---- SkipLayerNormalization / SkipSimplifiedLayerNormalization (com.microsoft) ----

@pytest.mark.parametrize("simplified", [False, True])
def test_skip_layernorm(simplified):
    op = "SkipSimplifiedLayerNormalization" if simplified else "SkipLayerNormalization"
    rng = np.random.default_rng(4)
    for dt in (F32, F16):
        for shape, kshape in [((2, 5, 32), (2, 5, 32)), ((2, 5, 32), (1, 5, 32)),
                              ((2, 5, 32), (5, 32)), ((6, 40), (6, 40)), ((2, 128, 128), None)]:
            kshape = kshape or shape
            h = shape[-1]
            for with_beta in ((False,) if simplified else (False, True)):
                for with_bias in (False, True):
                    for outs in (["y"], ["y", "m", "i", "sum"], ["y", "", "", "sum"]):
                        x, k = rand(rng, shape, dt), rand(rng, kshape, dt)
                        g = rand(rng, (h,), dt)
                        inputs = [("x", x), ("k", k), ("g", g)]
                        if not simplified:
                            inputs.append(("beta", rand(rng, (h,), dt)) if with_beta else ("", None))
                        if with_bias:
                            inputs.append(("bias", rand(rng, (h,), dt)))
                        while inputs[-1][0] == "":
                            inputs.pop()
                        m = node_model(op, inputs, outs, {"epsilon": 1e-5}, domain=MS, opset=17)
                        check(m, feeds_of(inputs), **tol(dt))


def test_skip_layernorm_errors():
    x = np.ones((2, 3, 4), F32)
    for k, g in [(np.ones((2, 3, 5), F32), np.ones((4,), F32)),
                 (np.array(1.0, F32), np.ones((4,), F32)),  # a scalar skip (found by fuzz_graph)
                 (np.ones((3, 3, 4), F32), np.ones((4,), F32)),
                 (np.ones((2, 3, 4), F32), np.ones((5,), F32))]:
        m = node_model("SkipLayerNormalization", [("x", x), ("k", k), ("g", g)], ["y"],
                       domain=MS, opset=17)
        with pytest.raises(kiln.KilnError):
            run_kiln(m, {"x": x, "k": k, "g": g})


# ---- BatchNormalization ----

def bn_inputs(rng, dt, c, pdt=None):
    pdt = pdt or dt
    return [rand(rng, (c,), pdt), rand(rng, (c,), pdt), rand(rng, (c,), pdt),
            rand(rng, (c,), pdt, low=0.5, high=2.0)]


@pytest.mark.parametrize("opset", [7, 9, 14, 15])
def test_batchnorm_inference(opset):
    rng = np.random.default_rng(5)
    for dt in (F32, F64, F16):
        for shape in [(2, 3, 4, 5), (3, 4), (2, 3, 7), (2, 16, 33, 9)]:
            x = rand(rng, shape, dt)
            s, b, mu, var = bn_inputs(rng, dt, shape[1])
            inputs = [("x", x), ("s", s), ("b", b), ("mu", mu), ("var", var)]
            m = node_model("BatchNormalization", inputs, ["y"], {"epsilon": 1e-3}, opset=opset)
            check(m, feeds_of(inputs), **tol(dt))


def test_batchnorm_mixed_param_types_opset15():
    rng = np.random.default_rng(6)
    x = rand(rng, (2, 3, 4), F16)
    s, b, mu, var = bn_inputs(rng, F32, 3)
    inputs = [("x", x), ("s", s), ("b", b), ("mu", mu), ("var", var)]
    m = node_model("BatchNormalization", inputs, ["y"], opset=15)
    check(m, feeds_of(inputs), **tol(F16))


def test_batchnorm_spatial0_opset7():
    rng = np.random.default_rng(7)
    x = rand(rng, (3, 2, 4), F32)
    s, b, mu, var = (p.reshape(2, 4) for p in bn_inputs(rng, F32, 8))
    inputs = [("x", x), ("s", s), ("b", b), ("mu", mu), ("var", var)]
    m = node_model("BatchNormalization", inputs, ["y"], {"spatial": 0}, opset=7)
    (y,) = run_kiln(m, feeds_of(inputs))
    want = (x - mu) / np.sqrt(var + 1e-5) * s + b
    assert_same(y, want, rtol=1e-5, atol=1e-5)


def test_batchnorm_training_mode():
    rng = np.random.default_rng(8)
    for dt in (F32, F64):
        x = rand(rng, (4, 3, 5, 2), dt)
        s, b, mu, var = bn_inputs(rng, dt, 3)
        inputs = [("x", x), ("s", s), ("b", b), ("mu", mu), ("var", var)]
        m = node_model("BatchNormalization", inputs, ["y", "rm", "rv"],
                       {"training_mode": 1, "momentum": 0.8, "epsilon": 1e-4}, opset=15)
        y, rm, rv = run_kiln(m, feeds_of(inputs))
        bm = x.mean(axis=(0, 2, 3))
        bv = x.var(axis=(0, 2, 3))
        want = (x - bm.reshape(1, 3, 1, 1)) / np.sqrt(bv.reshape(1, 3, 1, 1) + 1e-4) * \
            s.reshape(1, 3, 1, 1) + b.reshape(1, 3, 1, 1)
        assert_same(y, want.astype(dt), rtol=1e-4, atol=1e-5)
        assert_same(rm, (mu * 0.8 + bm * 0.2).astype(dt), rtol=1e-5, atol=1e-6)
        assert_same(rv, (var * 0.8 + bv * 0.2).astype(dt), rtol=1e-5, atol=1e-6)


def test_batchnorm_errors():
    x = np.ones((2, 3, 4), F32)
    p = np.ones((4,), F32)
    m = node_model("BatchNormalization", [("x", x), ("s", p), ("b", p), ("mu", p), ("var", p)],
                   ["y"], opset=15)
    with pytest.raises(kiln.KilnError):
        run_kiln(m, {"x": x, "s": p, "b": p, "mu": p, "var": p})


# ---- InstanceNormalization / GroupNormalization ----

def test_instancenorm():
    rng = np.random.default_rng(9)
    for dt in (F32, F16, F64):
        for shape in [(2, 3, 4, 5), (1, 4, 100), (3, 2, 2, 2, 3)]:
            x = rand(rng, shape, dt)
            s, b = rand(rng, (shape[1],), dt), rand(rng, (shape[1],), dt)
            inputs = [("x", x), ("s", s), ("b", b)]
            m = node_model("InstanceNormalization", inputs, ["y"], {"epsilon": 1e-3}, opset=17)
            if dt == F64:  # not in onnxruntime's CPU kernels
                (y,) = run_kiln(m, feeds_of(inputs))
                ax = tuple(range(2, len(shape)))
                bshape = (1, shape[1]) + (1,) * (len(shape) - 2)
                want = (x - x.mean(axis=ax, keepdims=True)) / \
                    np.sqrt(x.var(axis=ax, keepdims=True) + 1e-3) * s.reshape(bshape) + \
                    b.reshape(bshape)
                assert_same(y, want, rtol=1e-9, atol=1e-10)
            else:
                check(m, feeds_of(inputs), **tol(dt))


@pytest.mark.parametrize("opset", [18, 21])
def test_groupnorm(opset):
    rng = np.random.default_rng(10)
    for dt in (F32, F64, F16):
        for shape, g in [((2, 6, 4, 5), 3), ((2, 6, 4, 5), 1), ((2, 6, 4, 5), 6), ((3, 4, 7), 2)]:
            x = rand(rng, shape, dt)
            n = g if opset < 21 else shape[1]
            s, b = rand(rng, (n,), dt), rand(rng, (n,), dt)
            inputs = [("x", x), ("s", s), ("b", b)]
            m = node_model("GroupNormalization", inputs, ["y"],
                           {"num_groups": g, "epsilon": 1e-3}, opset=opset)
            # onnxruntime computes double in float (stash_type 1)
            check(m, feeds_of(inputs), **(tol(dt) if dt != F64 else dict(rtol=1e-5, atol=1e-5)))
    x = rand(rng, (2, 6, 3), F32)
    m = node_model("GroupNormalization", [("x", x), ("s", x[0, :, 0]), ("b", x[0, :, 0])], ["y"],
                   {"num_groups": 4}, opset=21)
    with pytest.raises(kiln.KilnError):
        run_kiln(m, {"x": x, "s": x[0, :, 0], "b": x[0, :, 0]})


# ---- LpNormalization / MeanVarianceNormalization / LRN ----

@pytest.mark.parametrize("opset", [17, 22])
def test_lpnorm(opset):
    rng = np.random.default_rng(11)
    for dt in (F32, F64, F16):
        for p in (1, 2):
            for shape, axis in [((3, 4, 5), -1), ((3, 4, 5), 1), ((3, 4, 5), 0), ((7,), 0)]:
                x = rand(rng, shape, dt)
                m = node_model("LpNormalization", [("x", x)], ["y"], {"axis": axis, "p": p},
                               opset=opset)
                check(m, {"x": x}, **tol(dt))
    x = rand(rng, (3, 4), F32)
    x[1] = 0
    check(node_model("LpNormalization", [("x", x)], ["y"], {}, opset=17), {"x": x})
    with pytest.raises(kiln.KilnError):
        run_kiln(node_model("LpNormalization", [("x", x)], ["y"], {"p": 3}, opset=17), {"x": x})


def test_mvn():
    rng = np.random.default_rng(12)
    for opset in (9, 13):
        for shape, axes in [((2, 3, 4, 5), None), ((2, 3, 4, 5), [1]), ((2, 3, 4, 5), [0, 1, 2, 3]),
                            ((3, 4, 5), [0, 2]), ((2, 3, 4, 5), [2, 3])]:
            x = rand(rng, shape, F32)
            attrs = {} if axes is None else {"axes": axes}
            m = node_model("MeanVarianceNormalization", [("x", x)], ["y"], attrs, opset=opset)
            check(m, {"x": x}, rtol=1e-4, atol=1e-4)
    # double: numpy of the ONNX function
    x = rand(rng, (2, 3, 4, 5), F64)
    m = node_model("MeanVarianceNormalization", [("x", x)], ["y"], {"axes": [0, 2]}, opset=13)
    mu = x.mean(axis=(0, 2), keepdims=True)
    var = (x * x).mean(axis=(0, 2), keepdims=True) - mu * mu
    assert_same(run_kiln(m, {"x": x})[0], (x - mu) / (np.sqrt(var) + 1e-9), rtol=1e-9, atol=1e-9)


def test_lrn():
    rng = np.random.default_rng(13)
    for dt in (F32, F16):
        for size in (1, 3, 5):  # onnxruntime takes odd sizes only; size 4 below
            for shape in [(2, 6, 4, 5), (1, 3, 7, 2)]:
                x = rand(rng, shape, dt)
                m = node_model("LRN", [("x", x)], ["y"],
                               {"size": size, "alpha": 0.01, "beta": 0.6, "bias": 1.5}, opset=13)
                check(m, {"x": x}, **tol(dt))
    x = rand(rng, (2, 4, 3, 3), F32)
    check(node_model("LRN", [("x", x)], ["y"], {"size": 3}, opset=1), {"x": x})
    # rank 3 (onnxruntime takes only 4-D): numpy of the formula
    x = rand(rng, (2, 5, 3), F64)
    m = node_model("LRN", [("x", x)], ["y"], {"size": 4, "alpha": 0.1, "beta": 0.5}, opset=13)
    sq = np.zeros_like(x)
    for c in range(5):
        lo, hi = max(0, c - 1), min(4, c + 2)  # floor(3/2) = 1 before, ceil(3/2) = 2 after
        sq[:, c] = (x[:, lo:hi + 1] ** 2).sum(axis=1)
    alpha = float(np.float32(0.1))  # attributes are float32
    assert_same(run_kiln(m, {"x": x})[0], x / (1.0 + alpha / 4 * sq) ** 0.5, rtol=1e-12, atol=1e-12)
    with pytest.raises(kiln.KilnError):
        run_kiln(node_model("LRN", [("x", x)], ["y"], {}, opset=13), {"x": x})


# ---- Dropout ----

@pytest.mark.parametrize("opset", [7, 10, 12, 13, 22])
def test_dropout_inference(opset):
    rng = np.random.default_rng(14)
    for dt in (F32, F64, F16):
        x = rand(rng, (3, 4, 5), dt)
        check(node_model("Dropout", [("x", x)], ["y"], {}, opset=opset), {"x": x})
        check(node_model("Dropout", [("x", x)], ["y", "mask"], {}, opset=opset), {"x": x})
    if opset >= 12:
        x = rand(rng, (3, 4), F32)
        for r, t in [(np.array(0.3, F32), np.array(False)),
                     # training with ratio 0: identity, mask all true (seed independent)
                     (np.array(0.0, F32), np.array(True))]:
            inputs = [("x", x), ("r", r), ("t", t)]
            m = node_model("Dropout", inputs, ["y", "mask"], opset=opset,
                           initializers={"r": r, "t": t})
            check(m, {"x": x})
            m = node_model("Dropout", inputs, ["y", "mask"], opset=opset)  # fed at run time
            check(m, feeds_of(inputs))


def test_dropout_training_random():
    rng = np.random.default_rng(15)
    x = rand(rng, (200, 100), F32, low=0.5, high=2.0)
    r, t = np.array(0.25, F32), np.array(True)
    inputs = [("x", x), ("r", r), ("t", t)]
    m = node_model("Dropout", inputs, ["y", "mask"], {"seed": 7}, opset=13,
                   initializers={"r": r, "t": t})
    y, mask = run_kiln(m, {"x": x})
    assert mask.dtype == np.bool_ and y.shape == x.shape
    assert abs(mask.mean() - 0.75) < 0.02
    # the draws are numpy's RandomState(seed).uniform, like the ONNX reference implementation
    np.testing.assert_array_equal(mask, np.random.RandomState(7).uniform(0, 1, x.shape) >= 0.25)
    assert_same(y, np.where(mask, x / np.float32(0.75), 0).astype(F32), rtol=1e-6, atol=1e-6)
    y2, mask2 = run_kiln(m, {"x": x})
    np.testing.assert_array_equal(mask, mask2)  # same seed, same bits
    bad = np.array(1.0, F32)
    m = node_model("Dropout", [("x", x), ("r", bad), ("t", t)], ["y"], opset=13,
                   initializers={"r": bad, "t": t})
    with pytest.raises(kiln.KilnError):
        run_kiln(m, {"x": x})


# ---- bfloat16 (numpy has no bfloat16: every input is cast to it inside the model) ----

def bf16_values(x):
    u = np.asarray(x, F32).view(np.uint32).astype(np.uint64)
    u = ((u + 0x7FFF + ((u >> 16) & 1)) & 0xFFFF0000).astype(np.uint32)
    return u.view(F32).astype(F64)


def bf16_run(op, inputs, attrs, opset, domain=""):
    from onnx import TensorProto, helper
    nodes = [helper.make_node("Cast", [n], [n + "_b"], to=TensorProto.BFLOAT16) for n, _ in inputs]
    nodes.append(helper.make_node(op, [n + "_b" for n, _ in inputs], ["yb"], domain=domain or None,
                                  **attrs))
    nodes.append(helper.make_node("Cast", ["yb"], ["y"], to=TensorProto.FLOAT))
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape) for n, v in inputs],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    imports = [helper.make_opsetid("", opset)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    m = helper.make_model(g, opset_imports=imports)
    m.ir_version = 10
    return run_kiln(m, dict(inputs))[0]


def test_bfloat16_norms():
    rng = np.random.default_rng(17)
    x, s, b = rand(rng, (4, 6, 32), F32), rand(rng, (32,), F32), rand(rng, (32,), F32)
    xb, sb, bb = bf16_values(x), bf16_values(s), bf16_values(b)
    mu, var = xb.mean(axis=-1, keepdims=True), xb.var(axis=-1, keepdims=True)
    want = (xb - mu) / np.sqrt(var + 1e-5) * sb + bb
    y = bf16_run("LayerNormalization", [("x", x), ("s", s), ("b", b)], {}, 17)
    np.testing.assert_allclose(y, want, rtol=3e-2, atol=3e-2)
    y = bf16_run("SkipLayerNormalization", [("x", x), ("k", x), ("s", s), ("b", b)], {"epsilon": 1e-5},
                 17, domain=MS)
    x2 = 2 * xb
    want2 = (x2 - x2.mean(axis=-1, keepdims=True)) / np.sqrt(x2.var(axis=-1, keepdims=True) + 1e-5) * sb + bb
    np.testing.assert_allclose(y, want2, rtol=3e-2, atol=3e-2)
    y = bf16_run("RMSNormalization", [("x", x), ("s", s)], {}, 23)
    np.testing.assert_allclose(y, xb / np.sqrt((xb * xb).mean(axis=-1, keepdims=True) + 1e-5) * sb,
                               rtol=3e-2, atol=3e-2)
    c = rand(rng, (2, 3, 4, 5), F32)
    p = [rand(rng, (3,), F32) for _ in range(3)] + [rand(rng, (3,), F32, low=0.5, high=2)]
    y = bf16_run("BatchNormalization", [("x", c)] + [("p%d" % i, v) for i, v in enumerate(p)], {}, 15)
    cb, pb = bf16_values(c), [bf16_values(v).reshape(1, 3, 1, 1) for v in p]
    np.testing.assert_allclose(y, (cb - pb[2]) / np.sqrt(pb[3] + 1e-5) * pb[0] + pb[1],
                               rtol=3e-2, atol=3e-2)


def test_contrib_domain_layernorm_alias():
    """com.microsoft LayerNormalization (not in onnxruntime's CPU kernels) is the same op as the
    default-domain contrib form, which onnxruntime runs at opset 16."""
    rng = np.random.default_rng(18)
    x, s, b = rand(rng, (3, 4, 16), F32), rand(rng, (16,), F32), rand(rng, (16,), F32)
    inputs = [("x", x), ("s", s), ("b", b)]
    want = run_ort(node_model("LayerNormalization", inputs, ["y", "m", "i"], {"epsilon": 1e-4},
                              opset=16), feeds_of(inputs))
    got = run_kiln(node_model("LayerNormalization", inputs, ["y", "m", "i"], {"epsilon": 1e-4},
                              opset=16, domain=MS), feeds_of(inputs))
    for g, w in zip(got, want):
        assert_same(g, w, rtol=1e-5, atol=1e-6)
