"""The packed float product on whatever vector unit this CPU has (gemm_avx512.c's driver with its
AVX-512 kernels, or gemm_avx2.c's AVX2+FMA ones): convolutions through the packed path, MatMul and
Gemm with constant and non-constant B, against onnxruntime or numpy in float64, on fresh random
data. The shapes leave tails of the register tile (rows not a multiple of 6 or 12, columns not of
8, 16 or 32, a single row), depths over one 256-deep block, and every fused epilogue (bias, Relu,
Clip, LeakyRelu, HardSwish, residual). Child processes check that KILN_NO_AVX512 (the AVX2 engine
on an AVX-512 machine) and KILN_NO_AVX2 (no engine without AVX-512) give the same answers."""
import functools
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import assert_same, node_model, rand, run_in_child, run_kiln, run_ort  # noqa: E402

MS = "com.microsoft"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(next((ln.split(":", 1)[1].split() for ln in f if ln.startswith("flags")), []))
    except OSError:
        return set()


FLAGS = cpu_flags()
HAS_AVX512 = "avx512f" in FLAGS and not os.environ.get("KILN_NO_AVX512")
HAS_ENGINE = HAS_AVX512 or ({"avx2", "fma"} <= FLAGS and not os.environ.get("KILN_NO_AVX2"))


def tol(k):
    """Float32 sums of k products of values in [-2, 2] x [-1, 1]."""
    return dict(rtol=1e-4, atol=3e-6 * np.sqrt(k) + 1e-5)


# The engines' tiles and the direct kernels, held to direct sums' tolerances: 3x3 stride-1 shapes
# would otherwise go to the Winograd path (test_conv_winograd.py).
def in_child(m, feeds, env, threads=1):
    return run_in_child(m, feeds, dict(env, KILN_NO_WINOGRAD="1"), threads)


run_kiln = functools.partial(run_kiln, winograd=False)


# ---- convolutions (packed weights, im2col panels packed by the product) ----


def packed_path(path):
    """Whether a convolution's reported path is one of the packed engine's (the product over
    im2col panels, or conv_direct.c's direct and channel-lane tiles)."""
    return path == "gemm-packed-linear" or path.split("-")[0] == "direct"


CONV_CASES = [
    # (x, w, attrs)
    ((1, 20, 9, 11), (37, 20, 1, 1), {}),                                          # M 37: a 1-row panel
    ((2, 300, 6, 9), (50, 300, 1, 1), {}),                                         # K 300: two blocks, batch 2
    ((1, 16, 15, 13), (29, 16, 3, 3), {"pads": [1, 1, 1, 1]}),                     # 3x3, M 29, N 195
    ((1, 40, 10, 10), (31, 40, 3, 3), {"pads": [1, 1, 1, 1]}),                     # K 360
    ((2, 24, 17, 17), (40, 24, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # stride 2 (gathers)
    ((1, 3, 30, 29), (16, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),    # a ResNet stem
    ((2, 24, 11, 11), (36, 8, 3, 3), {"group": 3, "pads": [1, 1, 1, 1]}),          # grouped
    ((1, 8, 41, 39), (13, 8, 1, 1), {}),                                           # 1599 columns
    ((3, 10, 9, 9), (7, 10, 3, 3), {}),                                            # M 7, batch 3
    ((4, 48, 5, 7), (20, 48, 1, 1), {}),                                           # 35 positions, runs across images
]
FUSED_ACTS = [(None, None), ("Relu", None), ("Clip", [-0.7, 1.1]), ("LeakyRelu", [0.13])]


def conv_model(x, w, b, attrs, act, z, params=None):
    """Conv, FusedConv with an activation (and residual z), or Conv -> Add z; W and B
    initializers. kiln fuses the Add into the product's store as it does FusedConv's z."""
    if act is None and z is not None:
        return conv_add_model(x, w, b, attrs, z)
    op = "FusedConv" if act else "Conv"
    attrs = dict(attrs)
    if act:
        attrs["activation"] = act
        if params:
            attrs["activation_params"] = params
    inputs = [("x", x), ("w", w), ("b" if b is not None else "", b)]
    if z is not None:
        inputs.append(("z", z))
    inits = {"w": w, **({"b": b} if b is not None else {})}
    m = node_model(op, inputs, ["y"], attrs, domain=MS if op == "FusedConv" else "", initializers=inits)
    return m, {"x": x, **({"z": z} if z is not None else {})}


def conv_add_model(x, w, b, attrs, z):
    names = ["x", "w"] + (["b"] if b is not None else [])
    nodes = [helper.make_node("Conv", names, ["c"], **attrs), helper.make_node("Add", ["c", "z"], ["y"])]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, v.shape) for n, v in (("x", x), ("z", z))]
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if b is not None else [])
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, {"x": x, "z": z}


def conv_case(seed, xs, ws, attrs, act=None, params=None, bias=True, residual=False):
    rng = np.random.default_rng(seed)
    x, w = rand(rng, xs), rand(rng, ws, low=-1, high=1)
    b = rand(rng, (ws[0],)) if bias else None
    ys = run_ort(*conv_model(x, w, None, attrs, None, None))[0].shape
    z = rand(rng, ys) if residual else None
    m, feeds = conv_model(x, w, b, attrs, act, z, params)
    return m, feeds, int(np.prod(ws[1:]))


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
@pytest.mark.parametrize("act,params", FUSED_ACTS, ids=lambda a: str(a))
@pytest.mark.parametrize("bias", [True, False], ids=["b", "nob"])
@pytest.mark.parametrize("residual", [False, True], ids=["", "z"])
def test_conv(xs, ws, attrs, act, params, bias, residual):
    m, feeds, k = conv_case(hash((xs, ws)) % 997, xs, ws, attrs, act, params, bias, residual)
    want = run_ort(m, feeds)[0]
    for threads in (1, 2):
        assert_same(run_kiln(m, feeds, threads=threads)[0], want, what=f"threads {threads}", **tol(k))


def conv_hswish_graph(seed, xs, ws, attrs, residual):
    """Conv [-> Add z] -> HardSwish, which kiln fuses into one node (the product's HSWISH)."""
    rng = np.random.default_rng(seed)
    x, w, b = rand(rng, xs), rand(rng, ws, low=-0.5, high=0.5), rand(rng, (ws[0],))
    ys = run_ort(*conv_model(x, w, b, attrs, None, None))[0].shape
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)]
    feeds, last = {"x": x}, "c"
    if residual:
        feeds["z"] = rand(rng, ys)
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ys))
        nodes.append(helper.make_node("Add", ["c", "z"], ["s"]))
        last = "s"
    nodes.append(helper.make_node("HardSwish", [last], ["y"]))
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, feeds


@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
@pytest.mark.parametrize("residual", [False, True], ids=["", "z"])
def test_conv_hardswish(xs, ws, attrs, residual):
    m, feeds = conv_hswish_graph(7, xs, ws, attrs, residual)
    want = run_ort(m, feeds)[0]
    assert_same(run_kiln(m, feeds, threads=2)[0], want, rtol=1e-4, atol=1e-4)


def test_conv_nan_kept_by_activations():
    """A NaN input reaches the fused store: every activation passes it on (kconv_apply_act's rule)."""
    rng = np.random.default_rng(3)
    for act, params in FUSED_ACTS[1:]:
        m, feeds, k = conv_case(11, (1, 16, 6, 6), (20, 16, 1, 1), {}, act, params)
        feeds["x"][0, 3, 2, 4] = np.nan
        got = run_kiln(m, feeds, threads=1)[0]
        want = run_ort(m, feeds)[0]
        assert np.array_equal(np.isnan(got), np.isnan(want)) and np.isnan(got).sum() == 20, act
        ok = ~np.isnan(want)
        assert_same(got[ok], want[ok], **tol(k))


@pytest.mark.skipif(not HAS_ENGINE, reason="no packed engine on this CPU")
@pytest.mark.parametrize("case", [0, 2, 4, 6, 9])
def test_conv_takes_packed_path(case):
    xs, ws, attrs = CONV_CASES[case]
    m, feeds, k = conv_case(5, xs, ws, attrs, "Relu", None, True, True)
    outs, paths = in_child(m, feeds, {})
    assert len(paths) == 1 and packed_path(paths[0]), paths
    assert_same(outs[0], run_ort(m, feeds)[0], **tol(k))


# ---- MatMul and Gemm (numpy float64 oracle) ----

MM_SHAPES = [  # (M, K, N)
    (1, 300, 70), (2, 5, 3), (13, 257, 33), (37, 64, 100), (100, 520, 47), (6, 16, 16), (12, 32, 32),
    (25, 1000, 9), (7, 3, 129), (11, 40, 9), (22, 300, 41), (9, 70, 24),
]


def matmul_ref(a, b):
    """a @ b summed in float64, rounded once to float32."""
    return (a.astype(np.float64) @ b.astype(np.float64)).astype(np.float32)


@pytest.mark.parametrize("M,K,N", MM_SHAPES)
@pytest.mark.parametrize("const_b", [True, False], ids=["packedB", "inputB"])
def test_matmul(M, K, N, const_b):
    rng = np.random.default_rng(M * 1000 + K + N)
    a, b = rand(rng, (M, K)), rand(rng, (K, N), low=-1, high=1)
    m = node_model("MatMul", [("a", a), ("b", b)], ["y"], initializers={"b": b} if const_b else None)
    feeds = {"a": a, **({} if const_b else {"b": b})}
    for threads in (1, 2):
        assert_same(run_kiln(m, feeds, threads=threads)[0], matmul_ref(a, b), what=f"threads {threads}", **tol(K))


def test_matmul_batched_a():
    rng = np.random.default_rng(8)
    a, b = rand(rng, (3, 19, 50)), rand(rng, (50, 65), low=-1, high=1)
    m = node_model("MatMul", [("a", a), ("b", b)], ["y"], initializers={"b": b})
    assert_same(run_kiln(m, {"a": a}, threads=2)[0], matmul_ref(a, b), **tol(50))


@pytest.mark.parametrize("M,K,N", MM_SHAPES)
@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("const_b", [True, False], ids=["packedB", "inputB"])
def test_gemm(M, K, N, ta, tb, const_b):
    rng = np.random.default_rng(M + 7 * K + 13 * N + ta + 2 * tb)
    a = rand(rng, (K, M) if ta else (M, K))
    b = rand(rng, (N, K) if tb else (K, N), low=-1, high=1)
    c = rand(rng, (1, N))
    alpha, beta = 0.75, -1.25
    m = node_model("Gemm", [("a", a), ("b", b), ("c", c)], ["y"],
                   {"transA": ta, "transB": tb, "alpha": alpha, "beta": beta},
                   initializers={"b": b, "c": c} if const_b else {"c": c})
    feeds = {"a": a, **({} if const_b else {"b": b})}
    A = a.T if ta else a
    B = b.T if tb else b
    want = (alpha * (A.astype(np.float64) @ B.astype(np.float64)) + beta * c.astype(np.float64)).astype(np.float32)
    assert_same(run_kiln(m, feeds, threads=2)[0], want, **tol(K))


# ---- the engine switches (child processes: each reads its environment once) ----

ENGINE_ENVS = [{"KILN_NO_AVX512": "1"}, {"KILN_NO_AVX2": "1"}, {"KILN_NO_AVX512": "1", "KILN_NO_AVX2": "1"}]


@pytest.mark.parametrize("env", ENGINE_ENVS, ids=lambda e: "+".join(sorted(e)))
def test_engine_switches(env):
    """Each switch picks the engine it names (seen in the convolution's path) and every engine
    gives onnxruntime's answers."""
    m, feeds, k = conv_case(9, (2, 24, 17, 17), (40, 24, 3, 3), {"pads": [1, 1, 1, 1]}, "Clip", [-0.5, 0.9],
                            True, True)
    outs, paths = in_child(m, feeds, env, threads=2)
    assert_same(outs[0], run_ort(m, feeds)[0], **tol(k))
    avx512 = "avx512f" in FLAGS and "KILN_NO_AVX512" not in env
    avx2 = {"avx2", "fma"} <= FLAGS and "KILN_NO_AVX2" not in env
    # either engine runs the product and the direct kernels (conv_direct.c); neither: im2col + BLAS
    assert len(paths) == 1 and (packed_path(paths[0]) if avx512 or avx2 else paths[0] == "gemm"), paths
    rng = np.random.default_rng(4)
    a, b = rand(rng, (29, 300)), rand(rng, (300, 45), low=-1, high=1)
    mm = node_model("MatMul", [("a", a), ("b", b)], ["y"], initializers={"b": b})
    outs, _ = in_child(mm, {"a": a}, env)
    assert_same(outs[0], matmul_ref(a, b), **tol(300))
