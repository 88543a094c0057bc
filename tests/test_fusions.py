"""Graph fusions (src/opt): each unfused pattern, built with the onnx package, must give onnxruntime's
(optimisations off) and kiln-at-level-1's results at opt_level 2 (3 for Conv + activation and
attention) with fewer nodes, and the verbose log must name the fused op. Negative cases (an
intermediate read outside the pattern, shapes the fused kernel cannot take) must not fuse and must
still be right. Then the shared models at levels 2 and 3."""
import os

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import MODELS, assert_same, kiln, rand, run_ort

F32, F16 = np.float32, np.float16
MS = "com.microsoft"


def make_model(nodes, inputs, outputs, inits=None, opset=17):
    """inputs: {name: (np dtype, shape)}; outputs: names; inits: {name: array}."""
    vis = [helper.make_tensor_value_info(n, helper.np_dtype_to_tensor_dtype(np.dtype(dt)), shape)
           for n, (dt, shape) in inputs.items()]
    outs = [helper.make_empty_tensor_value_info(o) for o in outputs]
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()]
    g = helper.make_graph(nodes, "g", vis, outs, initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def session(model, level, threads=2, verbose=False):
    return kiln.InferenceSession(model.SerializeToString(), threads=threads, opt_level=level,
                                 verbose=verbose)


def run_levels(model, feeds, capfd, fused_ops=(), level=2, rtol=1e-5, atol=1e-6, oracle=True):
    """Runs model at level 1 and `level`; compares both with onnxruntime (when oracle) and with
    each other; returns (nodes at level 1, nodes at level). fused_ops must appear in the log."""
    s1 = session(model, 1)
    capfd.readouterr()
    s2 = session(model, level, verbose=True)
    log = capfd.readouterr().err
    got1, got2 = s1.run(None, feeds), s2.run(None, feeds)
    want = run_ort(model, feeds) if oracle else got1
    for i, (a, b, w) in enumerate(zip(got1, got2, want)):
        assert_same(b, w, rtol, atol, what=f"output {i} at level {level} vs oracle")
        assert_same(b, a, rtol, atol, what=f"output {i} at level {level} vs level 1")
    for op in fused_ops:
        assert f"({op})" in log, f"no {op} fusion in the log:\n{log}"
    return s1.plan_stats()["nodes"], s2.plan_stats()["nodes"], log


def expect_fused(model, feeds, capfd, ops, level=2, **kw):
    n1, n2, log = run_levels(model, feeds, capfd, ops, level, **kw)
    assert n2 < n1, (n1, n2, log)
    return log


def expect_unfused(model, feeds, capfd, level=2, **kw):
    n1, n2, log = run_levels(model, feeds, capfd, (), level, **kw)
    assert n2 == n1 and "fused" not in log, log
    return log


def c(v, dt=F32):
    return np.array(v, dtype=dt)


# ---------------------------------------------------------------- Gelu (erf form)

def gelu_nodes(variant, x="x", out="y"):
    """The erf Gelu as exporters write it; constants as initializers named k_*."""
    if variant == "bert":  # x * (0.5 * (1 + erf(x / sqrt2)))
        return [helper.make_node("Div", [x, "k_sqrt2"], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                helper.make_node("Add", ["e", "k_one"], ["a"]), helper.make_node("Mul", ["k_half", "a"], ["h"]),
                helper.make_node("Mul", [x, "h"], [out])]
    if variant == "mul_rsqrt2":  # (x * (1 + erf(x * 1/sqrt2))) * 0.5
        return [helper.make_node("Mul", ["k_rsqrt2", x], ["d"]), helper.make_node("Erf", ["d"], ["e"]),
                helper.make_node("Add", ["k_one", "e"], ["a"]), helper.make_node("Mul", ["a", x], ["h"]),
                helper.make_node("Mul", ["h", "k_half"], [out])]
    if variant == "half_x_first":  # (0.5 * x) * (1 + erf(x / sqrt2))
        return [helper.make_node("Mul", [x, "k_half"], ["hx"]), helper.make_node("Div", [x, "k_sqrt2"], ["d"]),
                helper.make_node("Erf", ["d"], ["e"]), helper.make_node("Add", ["e", "k_one"], ["a"]),
                helper.make_node("Mul", ["hx", "a"], [out])]
    raise ValueError(variant)


def gelu_consts(dt=F32):
    return {"k_sqrt2": c(np.sqrt(2.0), dt), "k_rsqrt2": c(1 / np.sqrt(2.0), dt), "k_one": c(1.0, dt),
            "k_half": c(0.5, dt)}


def used_consts(nodes, consts):
    names = {i for n in nodes for i in n.input}
    return {k: v for k, v in consts.items() if k in names}


@pytest.mark.parametrize("variant", ["bert", "mul_rsqrt2", "half_x_first"])
def test_gelu_erf_forms(variant, capfd):
    rng = np.random.default_rng(1)
    nodes = gelu_nodes(variant)
    m = make_model(nodes, {"x": (F32, [2, 8, 32])}, ["y"], used_consts(nodes, gelu_consts()))
    expect_fused(m, {"x": rand(rng, (2, 8, 32), low=-4, high=4)}, capfd, [f"{MS}:Gelu"])


def test_gelu_fused_node_name(capfd):
    nodes = gelu_nodes("bert")
    for i, n in enumerate(nodes):
        n.name = f"n{i}"
    m = make_model(nodes, {"x": (F32, [4, 16])}, ["y"], used_consts(nodes, gelu_consts()))
    log = expect_fused(m, {"x": rand(np.random.default_rng(2), (4, 16))}, capfd, [f"{MS}:Gelu"])
    assert "'n0_fused_Gelu'" in log


def test_gelu_constant_nodes_and_scalar_x(capfd):
    """Constants from Constant nodes (as torch exports them); x a 1-D input."""
    consts = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k))
              for k, v in gelu_consts().items()]
    nodes = consts + gelu_nodes("bert")
    m = make_model(nodes, {"x": (F32, [64])}, ["y"])
    expect_fused(m, {"x": rand(np.random.default_rng(3), (64,), low=-3, high=3)}, capfd, [f"{MS}:Gelu"])


def test_bias_gelu(capfd):
    rng = np.random.default_rng(4)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "bias"], ["x1"])]
    nodes += gelu_nodes("bert", x="x1")
    inits = dict(used_consts(nodes, gelu_consts()), W=rand(rng, (32, 48), low=-0.5, high=0.5),
                 bias=rand(rng, (48,)))
    m = make_model(nodes, {"x": (F32, [2, 8, 32])}, ["y"], inits)
    expect_fused(m, {"x": rand(rng, (2, 8, 32))}, capfd, [f"{MS}:BiasGelu"], rtol=1e-5, atol=1e-5)


def test_bias_gelu_needs_1d_bias_over_last_axis(capfd):
    """A bias broadcast over another axis ([8, 1]) stays an Add before a plain Gelu."""
    rng = np.random.default_rng(5)
    nodes = [helper.make_node("Add", ["x", "bias"], ["x1"])] + gelu_nodes("bert", x="x1")
    inits = dict(used_consts(nodes, gelu_consts()), bias=rand(rng, (8, 1)))
    m = make_model(nodes, {"x": (F32, [2, 8, 32])}, ["y"], inits)
    log = expect_fused(m, {"x": rand(rng, (2, 8, 32))}, capfd, [f"{MS}:Gelu"])
    assert "BiasGelu" not in log


def test_gelu_float16_matches_level1(capfd):
    rng = np.random.default_rng(6)
    nodes = gelu_nodes("bert")
    m = make_model(nodes, {"x": (F16, [4, 32])}, ["y"], used_consts(nodes, gelu_consts(F16)))
    expect_fused(m, {"x": rand(rng, (4, 32), F16)}, capfd, [f"{MS}:Gelu"], rtol=2e-3, atol=2e-3,
                 oracle=False)


def test_gelu_intermediate_read_outside_is_not_fused(capfd):
    nodes = gelu_nodes("bert")
    m = make_model(nodes, {"x": (F32, [4, 16])}, ["y", "e"], used_consts(nodes, gelu_consts()))
    expect_unfused(m, {"x": rand(np.random.default_rng(7), (4, 16))}, capfd)


def test_gelu_intermediate_read_by_another_node_is_not_fused(capfd):
    nodes = gelu_nodes("bert") + [helper.make_node("Neg", ["a"], ["z"])]
    m = make_model(nodes, {"x": (F32, [4, 16])}, ["y", "z"], used_consts(nodes, gelu_consts()))
    expect_unfused(m, {"x": rand(np.random.default_rng(8), (4, 16))}, capfd)


def test_gelu_wrong_constant_is_not_fused(capfd):
    nodes = gelu_nodes("bert")
    consts = dict(gelu_consts(), k_sqrt2=c(1.5))
    m = make_model(nodes, {"x": (F32, [4, 16])}, ["y"], used_consts(nodes, consts))
    expect_unfused(m, {"x": rand(np.random.default_rng(9), (4, 16))}, capfd)


def test_gelu_inside_if_branch(capfd):
    """Subgraphs are optimised too; x comes from the enclosing graph."""
    nodes = gelu_nodes("bert")
    consts = [helper.make_node("Constant", [], [k], value=numpy_helper.from_array(v, k))
              for k, v in gelu_consts().items() if k != "k_rsqrt2"]
    then_g = helper.make_graph(consts + nodes, "then", [], [helper.make_empty_tensor_value_info("y")])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["y2"])], "else", [],
                               [helper.make_empty_tensor_value_info("y2")])
    m = make_model([helper.make_node("If", ["cond"], ["out"], then_branch=then_g, else_branch=else_g)],
                   {"cond": (np.bool_, []), "x": (F32, [4, 16])}, ["out"])
    x = rand(np.random.default_rng(10), (4, 16))
    _, _, log = run_levels(m, {"cond": np.array(True), "x": x}, capfd, [f"{MS}:Gelu"])
    run_levels(m, {"cond": np.array(False), "x": x}, capfd)


# ---------------------------------------------------------------- FastGelu (tanh form)

def fast_gelu_nodes(cube="pow", x="x", out="y"):
    """GPT-2: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))"""
    if cube == "pow":
        cn = [helper.make_node("Pow", [x, "k_three"], ["x3"])]
    else:
        cn = [helper.make_node("Mul", [x, x], ["xx"]), helper.make_node("Mul", ["xx", x], ["x3"])]
    return cn + [helper.make_node("Mul", [x, "k_half"], ["hx"]),
                 helper.make_node("Mul", ["x3", "k_cubic"], ["q"]), helper.make_node("Add", [x, "q"], ["p"]),
                 helper.make_node("Mul", ["p", "k_s2pi"], ["s"]), helper.make_node("Tanh", ["s"], ["t"]),
                 helper.make_node("Add", ["t", "k_one"], ["a"]), helper.make_node("Mul", ["hx", "a"], [out])]


def fast_gelu_consts(dt=F32):
    return {"k_three": c(3.0, dt), "k_half": c(0.5, dt), "k_cubic": c(0.044715, dt),
            "k_s2pi": c(np.sqrt(2 / np.pi), dt), "k_one": c(1.0, dt),
            "k_c2": c(0.044715 * np.sqrt(2 / np.pi), dt)}


@pytest.mark.parametrize("cube", ["pow", "mul"])
def test_fast_gelu(cube, capfd):
    rng = np.random.default_rng(11)
    nodes = fast_gelu_nodes(cube)
    m = make_model(nodes, {"x": (F32, [1, 12, 64])}, ["y"], used_consts(nodes, fast_gelu_consts()))
    expect_fused(m, {"x": rand(rng, (1, 12, 64), low=-4, high=4)}, capfd, [f"{MS}:FastGelu"],
                 rtol=1e-5, atol=2e-6)


def test_fast_gelu_factored_form(capfd):
    """x * (sqrt(2/pi) + 0.044715 sqrt(2/pi) x^2) inside the tanh."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["xx"]), helper.make_node("Mul", ["xx", "k_c2"], ["w"]),
             helper.make_node("Add", ["w", "k_s2pi"], ["r"]), helper.make_node("Mul", ["x", "r"], ["s"]),
             helper.make_node("Tanh", ["s"], ["t"]), helper.make_node("Add", ["k_one", "t"], ["a"]),
             helper.make_node("Mul", ["a", "x"], ["xa"]), helper.make_node("Mul", ["k_half", "xa"], ["y"])]
    m = make_model(nodes, {"x": (F32, [3, 40])}, ["y"], used_consts(nodes, fast_gelu_consts()))
    expect_fused(m, {"x": rand(np.random.default_rng(12), (3, 40), low=-4, high=4)}, capfd,
                 [f"{MS}:FastGelu"], rtol=1e-5, atol=2e-6)


def test_fast_gelu_with_bias(capfd):
    rng = np.random.default_rng(13)
    nodes = [helper.make_node("Add", ["x", "bias"], ["xb"])] + fast_gelu_nodes("pow", x="xb")
    inits = dict(used_consts(nodes, fast_gelu_consts()), bias=rand(rng, (64,)))
    m = make_model(nodes, {"x": (F32, [2, 5, 64])}, ["y"], inits)
    log = expect_fused(m, {"x": rand(rng, (2, 5, 64))}, capfd, [f"{MS}:FastGelu"], rtol=1e-5, atol=2e-6)
    assert log.count("FastGelu") >= 2  # the tanh form, then its bias Add


def test_fast_gelu_x3_read_outside_is_not_fused(capfd):
    nodes = fast_gelu_nodes("pow")
    m = make_model(nodes, {"x": (F32, [2, 16])}, ["y", "x3"], used_consts(nodes, fast_gelu_consts()))
    expect_unfused(m, {"x": rand(np.random.default_rng(14), (2, 16))}, capfd)


# ---------------------------------------------------------------- SkipLayerNormalization

def ln_inits(rng, h, dt=F32):
    return {"gamma": rand(rng, (h,), dt, 0.5, 1.5), "beta": rand(rng, (h,), dt)}


def test_skip_layernorm(capfd):
    rng = np.random.default_rng(20)
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"], axis=-1, epsilon=1e-5)]
    m = make_model(nodes, {"a": (F32, [2, 8, 64]), "b": (F32, [2, 8, 64])}, ["y"], ln_inits(rng, 64))
    expect_fused(m, {"a": rand(rng, (2, 8, 64)), "b": rand(rng, (2, 8, 64))}, capfd,
                 [f"{MS}:SkipLayerNormalization"], rtol=1e-5, atol=1e-5)


def test_skip_layernorm_bias_and_sum_kept(capfd):
    """BERT/GPT-2 residual: LN(MatMul + bias + residual); the sum also feeds the next residual."""
    rng = np.random.default_rng(21)
    nodes = [helper.make_node("MatMul", ["x", "W"], ["mm"]), helper.make_node("Add", ["mm", "bias"], ["lin"]),
             helper.make_node("Add", ["lin", "res"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["ln"], epsilon=1e-12),
             helper.make_node("Mul", ["ln", "k"], ["y"]), helper.make_node("Add", ["s", "y"], ["z"])]
    inits = dict(ln_inits(rng, 32), W=rand(rng, (48, 32), low=-0.3, high=0.3), bias=rand(rng, (32,)),
                 k=c(1.5))
    m = make_model(nodes, {"x": (F32, [2, 6, 48]), "res": (F32, [2, 6, 32])}, ["z"], inits)
    log = expect_fused(m, {"x": rand(rng, (2, 6, 48)), "res": rand(rng, (2, 6, 32))}, capfd,
                       [f"{MS}:SkipLayerNormalization"], rtol=1e-5, atol=1e-5)
    assert "fused 3 nodes" in log  # Add(bias), Add, LayerNormalization


def test_skip_layernorm_sum_is_graph_output(capfd):
    rng = np.random.default_rng(22)
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma"], ["y"])]
    m = make_model(nodes, {"a": (F32, [3, 16]), "b": (F32, [3, 16])}, ["y", "s"], {"gamma": rand(rng, (16,))})
    expect_fused(m, {"a": rand(rng, (3, 16)), "b": rand(rng, (3, 16))}, capfd,
                 [f"{MS}:SkipLayerNormalization"], rtol=1e-5, atol=1e-5)


def test_skip_layernorm_broadcast_skip_first(capfd):
    """Add(position [1, S, H], x [B, S, H]): the full-shape operand becomes the input."""
    rng = np.random.default_rng(23)
    nodes = [helper.make_node("Add", ["pos", "x"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"])]
    inits = dict(ln_inits(rng, 32), pos=rand(rng, (1, 10, 32)))
    m = make_model(nodes, {"x": (F32, [3, 10, 32])}, ["y"], inits)
    expect_fused(m, {"x": rand(rng, (3, 10, 32))}, capfd, [f"{MS}:SkipLayerNormalization"],
                 rtol=1e-5, atol=1e-5)


def test_skip_layernorm_symbolic_dims(capfd):
    rng = np.random.default_rng(24)
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"])]
    m = make_model(nodes, {"a": (F32, ["batch", "seq", 16]), "b": (F32, ["batch", "seq", 16])}, ["y"],
                   ln_inits(rng, 16))
    expect_fused(m, {"a": rand(rng, (2, 5, 16)), "b": rand(rng, (2, 5, 16))}, capfd,
                 [f"{MS}:SkipLayerNormalization"], rtol=1e-5, atol=1e-5)


def test_skip_layernorm_float16_matches_level1(capfd):
    rng = np.random.default_rng(25)
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ["y"])]
    m = make_model(nodes, {"a": (F16, [2, 4, 32]), "b": (F16, [2, 4, 32])}, ["y"], ln_inits(rng, 32, F16))
    expect_fused(m, {"a": rand(rng, (2, 4, 32), F16), "b": rand(rng, (2, 4, 32), F16)}, capfd,
                 [f"{MS}:SkipLayerNormalization"], rtol=1e-2, atol=1e-2, oracle=False)


@pytest.mark.parametrize("case", ["mean_output_read", "other_axis", "skip_broadcast_last_axis",
                                  "unknown_dims", "sum_read_before"])
def test_skip_layernorm_not_fused(case, capfd):
    rng = np.random.default_rng(26)
    a_shape, b_shape, outs, ln_outs, axis, h = [2, 4, 16], [2, 4, 16], ["y"], ["y"], -1, (16,)
    if case == "mean_output_read":
        ln_outs = outs = ["y", "mean"]
    elif case == "other_axis":
        axis, h = 1, (4, 16)
    elif case == "skip_broadcast_last_axis":
        b_shape = [2, 4, 1]
    elif case == "unknown_dims":
        a_shape = b_shape = [None, None, 16]
    nodes = [helper.make_node("Add", ["a", "b"], ["s"]),
             helper.make_node("LayerNormalization", ["s", "gamma", "beta"], ln_outs, axis=axis)]
    if case == "sum_read_before":  # a reader of the sum before the LN: the fused node would be late
        nodes.insert(1, helper.make_node("Neg", ["s"], ["ns"]))
        outs = ["y", "ns"]
    m = make_model(nodes, {"a": (F32, a_shape), "b": (F32, b_shape)}, outs,
                   {"gamma": rand(rng, h), "beta": rand(rng, h)})
    feeds = {"a": rand(rng, (2, 4, 16)), "b": rand(rng, (2, 4, 1) if b_shape[2] == 1 else (2, 4, 16))}
    expect_unfused(m, feeds, capfd, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- self-attention -> Attention

def attention_model(B=2, S=6, N=2, H=8, key_form="exporter", scale="both", mask="input", guard=True,
                    out_2d=False, extra_outputs=(), axis=-1):
    """The decomposed scaled_dot_product_attention of torch's exporter, on 3-D q, k, v inputs."""
    D = N * H
    s4 = float(H) ** -0.25
    inits = {"split": np.array([B, S, N, H], np.int64), "merge": np.array([B * S, D] if out_2d else [B, S, D], np.int64),
             "kflat": np.array([B * N, S, H], np.int64), "kback": np.array([B, N, H, S], np.int64),
             "s4": c(s4), "sqrt_h": c(np.sqrt(H)), "zero": c(0.0)}
    nodes = []
    for x in "qv":
        nodes += [helper.make_node("Reshape", [x, "split"], [x + "r"]),
                  helper.make_node("Transpose", [x + "r"], [x + "4"], perm=[0, 2, 1, 3])]
    nodes.append(helper.make_node("Reshape", ["k", "split"], ["kr"]))
    if key_form == "exporter":
        nodes += [helper.make_node("Transpose", ["kr"], ["k4"], perm=[0, 2, 1, 3]),
                  helper.make_node("Reshape", ["k4", "kflat"], ["k3f"]),
                  helper.make_node("Transpose", ["k3f"], ["k3t"], perm=[0, 2, 1]),
                  helper.make_node("Reshape", ["k3t", "kback"], ["kt"])]
    elif key_form == "swap_last":
        nodes += [helper.make_node("Transpose", ["kr"], ["k4"], perm=[0, 2, 1, 3]),
                  helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 1, 3, 2])]
    else:  # split then swap in one Transpose
        nodes.append(helper.make_node("Transpose", ["kr"], ["kt"], perm=[0, 2, 3, 1]))
    q, k = "q4", "kt"
    if scale == "both":
        nodes += [helper.make_node("Mul", ["q4", "s4"], ["qs"]), helper.make_node("Mul", ["kt", "s4"], ["ks"])]
        q, k = "qs", "ks"
    nodes.append(helper.make_node("MatMul", [q, k], ["sc"]))
    sc = "sc"
    if scale == "div":
        nodes.append(helper.make_node("Div", ["sc", "sqrt_h"], ["scd"]))
        sc = "scd"
    if mask:
        nodes.append(helper.make_node("Add", [sc, "mask"], ["scm"]))
        sc = "scm"
    nodes.append(helper.make_node("Softmax", [sc], ["p"], axis=axis))
    p = "p"
    if guard:
        nodes += [helper.make_node("IsNaN", ["p"], ["nan"]), helper.make_node("Where", ["nan", "zero", "p"], ["pg"])]
        p = "pg"
    nodes += [helper.make_node("MatMul", [p, "v4"], ["o4"]),
              helper.make_node("Transpose", ["o4"], ["o3"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["o3", "merge"], ["y"])]
    inputs = {x: (F32, [B, S, D]) for x in "qkv"}
    rng = np.random.default_rng(60)
    feeds = {x: rand(rng, (B, S, D)) for x in "qkv"}
    if mask == "input":
        inputs["mask"] = (F32, [B, 1, S, S])
        m = np.zeros((B, 1, S, S), np.float32)
        m[0, 0, :, S - 2:] = -np.inf     # padded keys
        m[1, 0, 2, :] = -np.inf          # a fully masked row: zeros through the NaN guard
        feeds["mask"] = m
    elif mask == "causal":
        inits["mask"] = np.triu(np.full((S, S), -np.inf, np.float32), 1)[None, None]
    elif mask == "padding_where":
        # torch's exporter for a padding mask: Where(keep, 0, lowest finite) expanded over rows
        inputs["keep"] = (np.bool_, [B, 1, 1, S])
        inits["lowest"] = c(np.finfo(np.float32).min)
        inits["mshape"] = np.array([B, 1, S, S], np.int64)
        nodes.insert(0, helper.make_node("Where", ["keep", "zero", "lowest"], ["m1"]))
        nodes.insert(1, helper.make_node("Expand", ["m1", "mshape"], ["mask"]))
        keep = np.ones((B, 1, 1, S), bool)
        keep[0, ..., S - 2:] = False
        keep[1, ..., :] = False  # a fully padded sequence: finite scores, a uniform softmax
        feeds["keep"] = keep
    model = make_model(nodes, inputs, ["y", *extra_outputs], inits)
    return model, feeds


@pytest.mark.parametrize("key_form", ["exporter", "swap_last", "split_swap"])
def test_attention_bert_style(key_form, capfd):
    """Level 2 since the attention kernel's grain follows its work (it used to wait at level 3)."""
    m, feeds = attention_model(key_form=key_form)
    n1, n2, _ = run_levels(m, feeds, capfd, ["Attention"], level=2, rtol=1e-5, atol=1e-5)
    assert n2 == 1, (n1, n2)
    n1, n3, _ = run_levels(m, feeds, capfd, ["Attention"], level=3, rtol=1e-5, atol=1e-5)
    assert n3 == 1, (n1, n3)


def test_attention_scaled_scores_no_mask_no_guard(capfd):
    m, feeds = attention_model(scale="div", mask=None, guard=False, key_form="swap_last")
    n1, n3, _ = run_levels(m, feeds, capfd, ["Attention"], level=3, rtol=1e-5, atol=1e-5)
    assert n3 == 1


def test_attention_causal_constant_mask_gpt2_merge(capfd):
    """A constant causal mask needs no NaN guard; the 2-D head merge Reshape stays after the node."""
    m, feeds = attention_model(mask="causal", guard=False, out_2d=True, scale="none")
    n1, n3, log = run_levels(m, feeds, capfd, ["Attention"], level=3, rtol=1e-5, atol=1e-5)
    assert n3 == 2
    assert "constant causal mask -> is_causal" in log, log


@pytest.mark.parametrize("change", ["masked_too_weakly", "diagonal_masked", "one_more_key", "batch_slice_differs"])
def test_attention_constant_mask_not_quite_causal_is_kept(change, capfd):
    """Only an exactly causal constant (0 on and below the diagonal, -1e4 or less above, every
    slice alike) becomes is_causal; anything else stays an additive mask of the fused node."""
    B, S = 2, 6
    m, feeds = attention_model(B=B, S=S, mask="causal", guard=False, scale="none")
    mask = np.triu(np.full((S, S), -np.inf, np.float32), 1)[None, None].repeat(B, 0)
    if change == "masked_too_weakly":
        mask[:, :, 0, 3] = -100.0  # exp(-100) is not 0 next to a score of order 1
    elif change == "diagonal_masked":
        mask[:, :, 4, 4] = -1e5
    elif change == "one_more_key":
        mask[:, :, 2, 3] = 0.0
    else:
        mask[1, :, 3, 1] = -1e5
    for init in m.graph.initializer:
        if init.name == "mask":
            init.CopyFrom(numpy_helper.from_array(mask, "mask"))
    n1, n2, log = run_levels(m, feeds, capfd, ["Attention"], level=2, rtol=1e-5, atol=1e-5)
    assert "is_causal" not in log, log
    assert n2 == 1, (n1, n2, log)


@pytest.mark.parametrize("mask", ["causal", "padding_where"])
def test_attention_gpt2_present_outputs(mask, capfd):
    """GPT-2's form: k4 and v4 are also the present key/value outputs (through a one-input Concat),
    so the 3-D form cannot take them; the fusion starts from the 4-D tensors and the head merge
    stays."""
    B, S, N, H = 2, 7, 3, 8
    D = N * H
    lowest = np.finfo(np.float32).min
    inits = {"split": np.array([B, S, N, H], np.int64), "merge": np.array([B * S, D], np.int64),
             "scale": c(H ** -0.5)}
    nodes = []
    for x in "qkv":
        nodes += [helper.make_node("Reshape", [x, "split"], [x + "r"]),
                  helper.make_node("Transpose", [x + "r"], [x + "t"], perm=[0, 2, 1, 3])]
    nodes += [helper.make_node("Concat", ["kt"], ["present_k"], axis=-2),
              helper.make_node("Concat", ["vt"], ["present_v"], axis=-2),
              helper.make_node("Transpose", ["present_k"], ["kT"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["qt", "kT"], ["sc"]), helper.make_node("Mul", ["sc", "scale"], ["ss"]),
              helper.make_node("Add", ["ss", "mask"], ["sm"]), helper.make_node("Softmax", ["sm"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "present_v"], ["o4"]),
              helper.make_node("Transpose", ["o4"], ["o3"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["o3", "merge"], ["y"])]
    rng = np.random.default_rng(61)
    inputs = {x: (F32, [B, S, D]) for x in "qkv"}
    feeds = {x: rand(rng, (B, S, D)) for x in "qkv"}
    if mask == "causal":  # what GPT-2's mask folds to once the dims are fixed
        inits["mask"] = np.triu(np.full((S, S), lowest, np.float32), 1)[None, None]
    else:  # a padding mask as torch writes it: Where(keep, 0, lowest), finite
        inputs["keep"] = (np.bool_, [B, 1, 1, S])
        inits.update(zero=c(0.0), lowest=c(lowest))
        nodes.insert(0, helper.make_node("Where", ["keep", "zero", "lowest"], ["mask"]))
        feeds["keep"] = np.arange(S)[None, None, None, :] < np.array([S, 3]).reshape(B, 1, 1, 1)
    m = make_model(nodes, inputs, ["y", "present_k", "present_v"], inits)
    n1, n2, log = run_levels(m, feeds, capfd, ["Attention"], level=2, rtol=1e-5, atol=1e-5)
    assert n2 == n1 - 5, (n1, n2, log)  # Transpose, MatMul, Mul, Add, Softmax, MatMul become one
    assert ("constant causal mask -> is_causal" in log) == (mask == "causal"), log


def test_attention_finite_padding_mask_needs_no_guard(capfd):
    """torch's padding mask, Where(keep, 0, lowest) expanded: finite, so fused without a guard."""
    m, feeds = attention_model(mask="padding_where", guard=False)
    n1, n2, log = run_levels(m, feeds, capfd, ["Attention"], level=2, rtol=1e-5, atol=1e-5)
    assert "Attention" in log


def dynamic_split_attention():
    """The exporter's form for dynamic batch and sequence axes: the head split and merge shapes are
    computed from Shape(q) at run time, and the softmax goes through Cast(float) -> Cast(back)."""
    B, S, N, H = 2, 6, 2, 8
    D = N * H
    inits = {"i0": np.array([0], np.int64), "i1": np.array([1], np.int64), "nh": np.array([N, H], np.int64),
             "d": np.array([D], np.int64), "scale": c(1 / np.sqrt(H))}
    nodes = [helper.make_node("Shape", ["q"], ["shp"]),
             helper.make_node("Gather", ["shp", "i0"], ["b"], axis=0),
             helper.make_node("Gather", ["shp", "i1"], ["s"], axis=0),
             helper.make_node("Concat", ["b", "s", "nh"], ["split"], axis=0),
             helper.make_node("Concat", ["b", "s", "d"], ["merge"], axis=0)]
    for x in "qkv":
        nodes.append(helper.make_node("Reshape", [x, "split"], [x + "r"]))
    nodes += [helper.make_node("Transpose", ["qr"], ["q4"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["vr"], ["v4"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["kr"], ["kt"], perm=[0, 2, 3, 1]),
              helper.make_node("MatMul", ["q4", "kt"], ["sc"]),
              helper.make_node("Mul", ["sc", "scale"], ["scs"]),
              helper.make_node("Softmax", ["scs"], ["p"], axis=-1),
              helper.make_node("Cast", ["p"], ["p32"], to=TensorProto.FLOAT),
              helper.make_node("Cast", ["p32"], ["pc"], to=TensorProto.FLOAT),
              helper.make_node("MatMul", ["pc", "v4"], ["o4"]),
              helper.make_node("Transpose", ["o4"], ["o3"], perm=[0, 2, 1, 3]),
              helper.make_node("Reshape", ["o3", "merge"], ["y"])]
    model = make_model(nodes, {x: (F32, ["batch", "seq", D]) for x in "qkv"}, ["y"], inits)
    rng = np.random.default_rng(61)
    return model, {x: rand(rng, (B, S, D)) for x in "qkv"}


def test_attention_with_shapes_fixed_at_open():
    """With dynamic axes the split shapes are read from the Shape -> Gather -> Concat chains
    (src/opt/sym_shape.c), so the attention fuses with the dims free; fixing them
    (add_free_dimension_override_by_name) folds the shape arithmetic first, and it fuses too. Both
    are one node (identity Casts taken in) whose outputs match onnxruntime."""
    m, feeds = dynamic_split_attention()
    free = kiln.InferenceSession(m.SerializeToString())
    assert [n["op_type"] for n in free.nodes()].count("Attention") == 1
    opts = kiln.SessionOptions()
    opts.add_free_dimension_override_by_name("batch", 2)
    opts.add_free_dimension_override_by_name("seq", 6)
    fixed = kiln.InferenceSession(m.SerializeToString(), sess_options=opts)
    ops = [n["op_type"] for n in fixed.nodes()]
    assert ops.count("Attention") == 1 and "Softmax" not in ops and "Cast" not in ops, ops
    want = run_ort(m, feeds)
    assert_same(fixed.run(None, feeds)[0], want[0], 1e-5, 1e-6, what="fused")
    assert_same(free.run(None, feeds)[0], want[0], 1e-5, 1e-6, what="fused, dims free")


@pytest.mark.parametrize("case", ["mask_without_guard", "probs_read_outside", "softmax_other_axis"])
def test_attention_not_fused(case, capfd):
    kw = {"mask_without_guard": dict(guard=False), "probs_read_outside": dict(extra_outputs=("p",)),
          "softmax_other_axis": dict(axis=2)}[case]
    m, feeds = attention_model(**kw)
    if case == "mask_without_guard":
        feeds["mask"][1, 0, 2, :] = 0.0  # no NaN rows, so kiln and onnxruntime agree anyway
    n1, n3, log = run_levels(m, feeds, capfd, (), level=3, rtol=1e-5, atol=1e-5)
    assert "Attention" not in log


# ---------------------------------------------------------------- MatMul + Add -> Gemm

@pytest.mark.parametrize("bias_shape", [(24,), (1, 24), (5, 24), ()])
def test_matmul_add_gemm(bias_shape, capfd):
    rng = np.random.default_rng(30)
    nodes = [helper.make_node("MatMul", ["a", "W"], ["mm"]), helper.make_node("Add", ["bias", "mm"], ["y"])]
    inits = {"W": rand(rng, (16, 24)), "bias": rand(rng, bias_shape)}
    m = make_model(nodes, {"a": (F32, [5, 16])}, ["y"], inits)
    expect_fused(m, {"a": rand(rng, (5, 16))}, capfd, ["Gemm"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape,dims", [((2, 5, 16), ["B", "S", 16]), ((3, 1, 4, 16), [3, 1, 4, 16]),
                                        ((1, 7, 16), [1, "S", 16])])
@pytest.mark.parametrize("dt", [F32, np.float16])
def test_matmul_add_batched_makes_matmul_bias(shape, dims, dt, capfd):
    """A batched left operand times a 2-D weight plus a bias over the last axis: kiln:MatMulBias."""
    rng = np.random.default_rng(31)
    nodes = [helper.make_node("MatMul", ["a", "W"], ["mm"]), helper.make_node("Add", ["mm", "bias"], ["y"])]
    m = make_model(nodes, {"a": (dt, dims)}, ["y"], {"W": rand(rng, (16, 24), dt), "bias": rand(rng, (24,), dt)})
    tol = 1e-5 if dt == F32 else 2e-3
    expect_fused(m, {"a": rand(rng, shape, dt)}, capfd, ["kiln:MatMulBias"], rtol=tol, atol=tol)


@pytest.mark.parametrize("case", ["bias_2d", "batched_weight"])
def test_matmul_add_batched_not_fused(case, capfd):
    rng = np.random.default_rng(33)
    nodes = [helper.make_node("MatMul", ["a", "W"], ["mm"]), helper.make_node("Add", ["mm", "bias"], ["y"])]
    w = rand(rng, (2, 16, 24)) if case == "batched_weight" else rand(rng, (16, 24))
    bias = rand(rng, (5, 24)) if case == "bias_2d" else rand(rng, (24,))
    m = make_model(nodes, {"a": (F32, [2, 5, 16])}, ["y"], {"W": w, "bias": bias})
    expect_unfused(m, {"a": rand(rng, (2, 5, 16))}, capfd, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["product_read_outside", "bias_grows_output", "int32"])
def test_matmul_add_not_fused(case, capfd):
    rng = np.random.default_rng(32)
    dt = np.int32 if case == "int32" else F32
    nodes = [helper.make_node("MatMul", ["a", "W"], ["mm"]), helper.make_node("Add", ["mm", "bias"], ["y"])]
    outs = ["y", "mm"] if case == "product_read_outside" else ["y"]
    bias = rand(rng, (3, 5, 24), dt) if case == "bias_grows_output" else rand(rng, (24,), dt)
    m = make_model(nodes, {"a": (dt, [5, 16])}, outs, {"W": rand(rng, (16, 24), dt), "bias": bias})
    expect_unfused(m, {"a": rand(rng, (5, 16), dt)}, capfd, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- Transpose + MatMul -> FusedMatMul

@pytest.mark.parametrize("which", ["A", "B", "both", "B4d", "A2d_noperm"])
def test_transpose_matmul(which, capfd):
    rng = np.random.default_rng(40)
    nodes, inputs = [], {}
    if which == "A":
        inputs = {"x": (F32, [3, 16, 8]), "y": (F32, [3, 16, 12])}
        nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]), helper.make_node("MatMul", ["xt", "y"], ["o"])]
    elif which == "B":
        inputs = {"x": (F32, [3, 8, 16]), "y": (F32, [12, 16])}
        nodes = [helper.make_node("Transpose", ["y"], ["yt"], perm=[1, 0]), helper.make_node("MatMul", ["x", "yt"], ["o"])]
    elif which == "both":
        inputs = {"x": (F32, [2, 16, 8]), "y": (F32, [2, 12, 16])}
        nodes = [helper.make_node("Transpose", ["x"], ["xt"], perm=[0, 2, 1]),
                 helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 2, 1]), helper.make_node("MatMul", ["xt", "yt"], ["o"])]
    elif which == "B4d":  # attention scores q . k^T
        inputs = {"x": (F32, [2, 4, 10, 8]), "y": (F32, [2, 4, 10, 8])}
        nodes = [helper.make_node("Transpose", ["y"], ["yt"], perm=[0, 1, 3, 2]), helper.make_node("MatMul", ["x", "yt"], ["o"])]
    else:
        inputs = {"x": (F32, [16, 8]), "y": (F32, [16, 12])}
        nodes = [helper.make_node("Transpose", ["x"], ["xt"]), helper.make_node("MatMul", ["xt", "y"], ["o"])]
    m = make_model(nodes, inputs, ["o"])
    feeds = {k: rand(rng, tuple(s)) for k, (_, s) in inputs.items()}
    expect_fused(m, feeds, capfd, [f"{MS}:FusedMatMul"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["not_last_two", "transpose_read_outside", "int64", "constant",
                                  "computed_constant"])
def test_transpose_matmul_not_fused(case, capfd):
    rng = np.random.default_rng(41)
    dt = np.int64 if case == "int64" else F32
    perm = [1, 0, 2] if case == "not_last_two" else [0, 2, 1]
    inputs = {"x": (dt, [4, 6, 8] if case == "not_last_two" else [4, 4, 8])}
    inits = {}
    nodes = []
    if case == "constant":  # folding makes a transposed weight instead
        inits["y"] = rand(rng, (4, 4, 6), dt)
    elif case == "computed_constant":
        inits.update(y1=rand(rng, (4, 4, 6), dt), y2=rand(rng, (4, 4, 6), dt))
        nodes.append(helper.make_node("Add", ["y1", "y2"], ["y"]))
    else:
        inputs["y"] = (dt, [4, 4, 6])
    nodes.append(helper.make_node("Transpose", ["y"], ["yt"], perm=perm))
    nodes.append(helper.make_node("MatMul", ["yt", "x"], ["o"]))
    outs = ["o", "yt"] if case == "transpose_read_outside" else ["o"]
    m = make_model(nodes, inputs, outs, inits)
    feeds = {k: rand(rng, tuple(s), dt) for k, (_, s) in inputs.items()}
    expect_unfused(m, feeds, capfd, rtol=1e-5, atol=1e-5)


# ---------------------------------------------------------------- Conv fusions

def conv_inits(rng, m, cin, k, group=1, bias=True):
    w = {"W": rand(rng, (m, cin // group, k, k), low=-0.5, high=0.5)}
    if bias:
        w["B"] = rand(rng, (m,))
    return w


def bn_inits(rng, m):
    return {"scale": rand(rng, (m,), low=0.5, high=1.5), "bnb": rand(rng, (m,)),
            "mean": rand(rng, (m,)), "var": rand(rng, (m,), low=0.2, high=2.0)}


@pytest.mark.parametrize("bias,group", [(True, 1), (False, 1), (True, 4)])
def test_conv_batchnorm_folding(bias, group, capfd):
    rng = np.random.default_rng(50)
    cins = ["x", "W", "B"] if bias else ["x", "W"]
    nodes = [helper.make_node("Conv", cins, ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], group=group),
             helper.make_node("BatchNormalization", ["c", "scale", "bnb", "mean", "var"], ["y"], epsilon=1e-3)]
    inits = dict(conv_inits(rng, 8, 8, 3, group, bias), **bn_inits(rng, 8))
    m = make_model(nodes, {"x": (F32, [1, 8, 10, 10])}, ["y"], inits)
    log = expect_fused(m, {"x": rand(rng, (1, 8, 10, 10))}, capfd, ["Conv"], rtol=1e-5, atol=1e-5)
    assert "_fused_Conv" in log


def test_conv_batchnorm_conv_output_read_outside(capfd):
    rng = np.random.default_rng(51)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bnb", "mean", "var"], ["y"])]
    inits = dict(conv_inits(rng, 4, 3, 1), **bn_inits(rng, 4))
    m = make_model(nodes, {"x": (F32, [2, 3, 5, 5])}, ["y", "c"], inits)
    expect_unfused(m, {"x": rand(rng, (2, 3, 5, 5))}, capfd, rtol=1e-5, atol=1e-5)


def test_conv_batchnorm_shared_weight(capfd):
    """Two Convs share W; only one feeds a BN: the other must still see the original weights."""
    rng = np.random.default_rng(52)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "scale", "bnb", "mean", "var"], ["y"]),
             helper.make_node("Conv", ["x", "W", "B"], ["y2"], kernel_shape=[3, 3])]
    inits = dict(conv_inits(rng, 4, 3, 3), **bn_inits(rng, 4))
    m = make_model(nodes, {"x": (F32, [1, 3, 6, 6])}, ["y", "y2"], inits)
    expect_fused(m, {"x": rand(rng, (1, 3, 6, 6))}, capfd, ["Conv"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("group,k", [(1, 1), (1, 3), (8, 3)])
def test_conv_add_residual(group, k, capfd):
    rng = np.random.default_rng(53)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[k, k], pads=[k // 2] * 4, group=group),
             helper.make_node("Add", ["z", "c"], ["y"])]
    m = make_model(nodes, {"x": (F32, ["n", 8, 9, 9]), "z": (F32, ["n", 8, 9, 9])}, ["y"],
                   conv_inits(rng, 8, 8, k, group))
    expect_fused(m, {"x": rand(rng, (2, 8, 9, 9)), "z": rand(rng, (2, 8, 9, 9))}, capfd,
                 [f"{MS}:FusedConv"], rtol=1e-5, atol=1e-5)


def test_conv_add_broadcast_is_not_fused(capfd):
    rng = np.random.default_rng(54)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[1, 1]),
             helper.make_node("Add", ["c", "z"], ["y"])]
    m = make_model(nodes, {"x": (F32, [1, 4, 5, 5]), "z": (F32, [1, 6, 1, 1])}, ["y"], conv_inits(rng, 6, 4, 1))
    expect_unfused(m, {"x": rand(rng, (1, 4, 5, 5)), "z": rand(rng, (1, 6, 1, 1))}, capfd, rtol=1e-5, atol=1e-5)


ACTS = [("Relu", {}, []), ("Sigmoid", {}, []), ("Tanh", {}, []), ("LeakyRelu", {"alpha": 0.2}, []),
        ("HardSigmoid", {"alpha": 1 / 6, "beta": 0.5}, []), ("Clip", {}, ["lo", "hi"]), ("Clip", {}, ["", "hi"]),
        ("HardSwish", {}, [])]


@pytest.mark.parametrize("act,attrs,extra", ACTS, ids=[a[0] + str(i) for i, a in enumerate(ACTS)])
def test_conv_activation_level2(act, attrs, extra, capfd):
    """FusedConv's activations are opt_level 2 now that they are vectorised."""
    rng = np.random.default_rng(55)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
             helper.make_node(act, ["c"] + extra, ["y"], **attrs)]
    inits = dict(conv_inits(rng, 6, 4, 3), lo=c(-0.5), hi=c(0.7))
    inits = {k: v for k, v in inits.items() if k in {"W", "B"} | set(extra)}
    m = make_model(nodes, {"x": (F32, [2, 4, 7, 7])}, ["y"], inits)
    feeds = {"x": rand(rng, (2, 4, 7, 7))}
    expect_fused(m, feeds, capfd, [f"{MS}:FusedConv"], level=2, rtol=1e-5, atol=1e-5)
    expect_fused(m, feeds, capfd, [f"{MS}:FusedConv"], level=3, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("act,attrs,extra", ACTS, ids=[a[0] + str(i) for i, a in enumerate(ACTS)])
@pytest.mark.parametrize("shape,group,k", [((1, 8, 19, 23), 1, 3), ((1, 8, 19, 23), 8, 3),
                                           ((2, 32, 7, 7), 32, 3), ((2, 32, 1, 1), 1, 1)])
def test_conv_activation_vector_paths(act, attrs, extra, shape, group, k, capfd):
    """The vectorised activation over rows longer and shorter than a vector, odd tails, depthwise
    (plane-wise and 16-channel blocked), GEMM and 1x1-map (sgemv) convolutions, with NaN inputs: FusedConv must
    give what the separate activation gives at level 1."""
    rng = np.random.default_rng(58)
    C = shape[1]
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[k, k], pads=[k // 2] * 4,
                              group=group),
             helper.make_node(act, ["c"] + extra, ["y"], **attrs)]
    inits = dict(W=rand(rng, (C, C // group, k, k)), B=rand(rng, (C,)), lo=c(-0.5), hi=c(0.7))
    inits = {k: v for k, v in inits.items() if k in {"W", "B"} | set(extra)}
    m = make_model(nodes, {"x": (F32, list(shape))}, ["y"], inits)
    x = rand(rng, shape) * 3
    x.reshape(-1)[::37] = np.nan
    s1 = session(m, 1)
    s2 = session(m, 2)
    assert s2.plan_stats()["nodes"] == 1
    a, b = s1.run(None, {"x": x})[0], s2.run(None, {"x": x})[0]
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6)


def test_conv_add_relu_level3(capfd):
    """Conv + Add(Z) + Relu: one FusedConv with Z and the activation (named once)."""
    rng = np.random.default_rng(56)
    nodes = [helper.make_node("Conv", ["x", "W", "B"], ["c"], kernel_shape=[1, 1], name="conv"),
             helper.make_node("Add", ["c", "z"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
    m = make_model(nodes, {"x": (F32, [1, 4, 6, 6]), "z": (F32, [1, 5, 6, 6])}, ["y"], conv_inits(rng, 5, 4, 1))
    n1, n3, log = run_levels(m, {"x": rand(rng, (1, 4, 6, 6)), "z": rand(rng, (1, 5, 6, 6))}, capfd,
                             [f"{MS}:FusedConv"], level=3, rtol=1e-5, atol=1e-5)
    assert (n1, n3) == (3, 1) and "'conv_fused_FusedConv'" in log


def test_conv_batchnorm_then_relu_level3(capfd):
    rng = np.random.default_rng(57)
    nodes = [helper.make_node("Conv", ["x", "W"], ["c"], kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "scale", "bnb", "mean", "var"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    inits = dict(conv_inits(rng, 6, 3, 3, bias=False), **bn_inits(rng, 6))
    m = make_model(nodes, {"x": (F32, [1, 3, 8, 8])}, ["y"], inits)
    n1, n3, _ = run_levels(m, {"x": rand(rng, (1, 3, 8, 8))}, capfd, [f"{MS}:FusedConv"], level=3,
                           rtol=1e-5, atol=1e-5)
    assert (n1, n3) == (3, 1)


BN_ACTS = [("Relu", {}, []), ("LeakyRelu", {"alpha": 0.1}, []), ("Clip", {}, ["lo", "hi"]),
           ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, []), ("Sigmoid", {}, [])]


@pytest.mark.parametrize("act,attrs,extra", BN_ACTS, ids=[a[0] for a in BN_ACTS])
@pytest.mark.parametrize("shape", [(2, 6, 20, 19), (1, 40, 7, 7), (3, 5, 33)])
def test_batchnorm_activation_as_depthwise_conv(act, attrs, extra, shape, capfd):
    """DenseNet's pre-activation pair BN -> Relu (no Conv before it) becomes one 1x1 depthwise
    FusedConv; large maps, small maps (the 16-channel blocked path's sizes) and 1-D maps."""
    rng = np.random.default_rng(58)
    C = shape[1]
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "bnb", "mean", "var"], ["b"], epsilon=1e-3),
             helper.make_node(act, ["b"] + extra, ["y"], **attrs)]
    inits = dict(bn_inits(rng, C), lo=c(-0.3), hi=c(0.8))
    inits = {k: v for k, v in inits.items() if k not in ("lo", "hi") or k in extra}
    m = make_model(nodes, {"x": (F32, list(shape))}, ["y"], inits)
    log = expect_fused(m, {"x": rand(rng, shape, low=-3, high=3)}, capfd, [f"{MS}:FusedConv"], rtol=1e-5, atol=1e-5)
    assert "BatchNormalization Relu" in log or act != "Relu"


def test_batchnorm_activation_then_conv(capfd):
    """The DenseNet layer: Concat -> BN -> Relu -> 1x1 Conv, at batch 2."""
    rng = np.random.default_rng(59)
    nodes = [helper.make_node("Concat", ["x", "x2"], ["cat"], axis=1),
             helper.make_node("BatchNormalization", ["cat", "scale", "bnb", "mean", "var"], ["b"]),
             helper.make_node("Relu", ["b"], ["r"]),
             helper.make_node("Conv", ["r", "W", "B"], ["y"], kernel_shape=[1, 1])]
    inits = dict(conv_inits(rng, 12, 10, 1), **bn_inits(rng, 10))
    m = make_model(nodes, {"x": (F32, ["n", 4, 17, 17]), "x2": (F32, ["n", 6, 17, 17])}, ["y"], inits)
    feeds = {"x": rand(rng, (2, 4, 17, 17)), "x2": rand(rng, (2, 6, 17, 17))}
    expect_fused(m, feeds, capfd, [f"{MS}:FusedConv"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("case", ["bn_output_read_outside", "rank5", "float16", "two_readers"])
def test_batchnorm_activation_not_fused(case, capfd):
    rng = np.random.default_rng(60)
    dt = np.float16 if case == "float16" else F32
    shape = (1, 4, 3, 5, 6) if case == "rank5" else (2, 4, 9, 9)
    nodes = [helper.make_node("BatchNormalization", ["x", "scale", "bnb", "mean", "var"], ["b"]),
             helper.make_node("Relu", ["b"], ["y"])]
    outs = ["y"]
    if case == "bn_output_read_outside":
        outs.append("b")
    if case == "two_readers":
        nodes.append(helper.make_node("Sigmoid", ["b"], ["y2"]))
        outs.append("y2")
    inits = {k: v.astype(dt) for k, v in bn_inits(rng, 4).items()}
    m = make_model(nodes, {"x": (dt, list(shape))}, outs, inits)
    tol = dict(rtol=1e-2, atol=1e-2) if dt != F32 else dict(rtol=1e-5, atol=1e-5)
    expect_unfused(m, {"x": rand(rng, shape).astype(dt)}, capfd, **tol)


# ---------------------------------------------------------------- the shared models

MODEL_CASES = [("bert_tiny", 1e-4, 1e-5, True), ("bert_tiny_fused", 1e-4, 1e-5, True),
               ("bert_tiny_fused_fp16", 1e-2, 1e-2, True), ("gpt2_tiny", 1e-4, 1e-5, True),
               ("mobilenet_v3_small", 1e-4, 1e-5, True)]


@pytest.mark.parametrize("name,rtol,atol,fuses", MODEL_CASES, ids=[c[0] for c in MODEL_CASES])
@pytest.mark.parametrize("threads,level", [(1, 2), (2, 2), (2, 3)])
def test_shared_model_fused(name, rtol, atol, fuses, threads, level):
    path = os.path.join(MODELS, name + ".onnx")
    ref = np.load(os.path.join(MODELS, name + ".ref.npz"))
    feeds = {k[3:]: ref[k] for k in ref.files if k.startswith("in.")}
    s1 = kiln.InferenceSession(path, threads=threads, opt_level=1)
    s2 = kiln.InferenceSession(path, threads=threads, opt_level=level)
    for _ in range(2):  # first run on the heap, second in the planned arena
        outs = s2.run(None, feeds)
        for o, got in zip(s2.get_outputs(), outs):
            want = ref["out." + o.name]
            assert got.shape == want.shape and got.dtype == want.dtype, o.name
            np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=o.name)
    if fuses:
        assert s2.plan_stats()["nodes"] < s1.plan_stats()["nodes"]


def test_bert_tiny_fusion_counts(capfd):
    """The unfused BERT gets what onnxruntime's optimizer gave bert_tiny_fused (4 skip layer
    norms, 2 bias Gelus) plus the embedding's Add + LayerNormalization and (level 3) both
    attentions."""
    capfd.readouterr()
    kiln.InferenceSession(os.path.join(MODELS, "bert_tiny.onnx"), threads=1, opt_level=3, verbose=True)
    log = capfd.readouterr().err
    assert log.count(f"({MS}:SkipLayerNormalization)") == 5
    assert log.count(f"({MS}:BiasGelu)") == 2
    assert log.count("(Attention)") == 2


def test_gpt2_tiny_fusion_counts(capfd):
    capfd.readouterr()
    kiln.InferenceSession(os.path.join(MODELS, "gpt2_tiny.onnx"), threads=1, opt_level=3, verbose=True)
    log = capfd.readouterr().err
    assert log.count(f"({MS}:FastGelu)") == 2
    assert log.count(f"({MS}:SkipLayerNormalization)") == 5
    assert log.count("(Attention)") == 2


@pytest.mark.parametrize("case", ["bias_len", "bias_rank", "bias_type"])
def test_matmul_bias_rejects_a_bad_bias(case):
    """kiln:MatMulBias written into a model by hand: a bias that is not N values of A's type fails
    at open, naming the problem."""
    bias = {"bias_len": np.zeros(23, np.float32), "bias_rank": np.zeros((1, 24), np.float32),
            "bias_type": np.zeros(24, np.float64)}[case]
    bias = bias + 0.5
    node = helper.make_node("MatMulBias", ["a", "W", "bias"], ["y"], domain="kiln")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [2, 5, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(np.full((16, 24), 0.25, np.float32), "W"),
                                       numpy_helper.from_array(bias, "bias")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("kiln", 1)])
    m.ir_version = 8
    want = {"bias_len": "bias has 23 elements, the product's last axis 24", "bias_rank": "bias has rank 2",
            "bias_type": "bias has element type"}[case]
    with pytest.raises(kiln.KilnError, match=want):
        kiln.InferenceSession(m.SerializeToString()).run(None, {"a": np.ones((2, 5, 16), np.float32)})
