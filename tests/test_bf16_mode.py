"""The opt-in bfloat16 mode for float32 models on the CPU (kiln_options.cpu_bf16; Python bf16=True or
the session config entry "kiln.cpu_bf16"): MatMul, Gemm, FusedMatMul, MatMulBias and GEMM-based Conv
round their operands to bfloat16 and sum in float32.

Two references on fresh random data: the float64 product of the inputs rounded to bfloat16 the way
the hardware does (round to nearest even), which kiln must match to float32 summation error, and
the float64 product of the original inputs, from which bfloat16 may stray by about 2^-8 relative
(checked as a relative L2 error). Convolutions compare with onnxruntime run in float32 on the
rounded inputs. Also: the option off is bitwise the float32 result, results do not depend on the
thread count, constant and activation weights agree, the packed weights take half the memory, a
CPU without AVX512-BF16 falls back to float32 with a warning, and (on a CPU with AMX-BF16) the
AMX tiles agree with the AVX512-BF16 kernel."""
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import cpu_flags, kiln, node_model, rand, run_ort  # noqa: E402

F32 = np.float32
MS = "com.microsoft"
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


FLAGS = cpu_flags()
HAS_BF16 = {"avx512f", "avx512bw", "avx512vl", "avx512_bf16"} <= FLAGS and not os.environ.get("KILN_NO_AVX512")
HAS_AMX = {"amx_bf16", "amx_tile"} <= FLAGS
need_bf16 = pytest.mark.skipif(not HAS_BF16, reason="this CPU has no AVX512-BF16")


def bf16_round(a):
    """float32 -> nearest bfloat16 (ties to even) as float32; NaN stays NaN."""
    a = np.ascontiguousarray(a, dtype=F32)
    u = a.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16 << 16).astype(np.uint32)
    out = r.view(F32).copy()
    out[np.isnan(a)] = np.nan
    return out


def session(model, threads=2, bf16=True, **kw):
    data = model.SerializeToString() if hasattr(model, "SerializeToString") else model
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback warning expected here
        return kiln.InferenceSession(data, threads=threads, bf16=bf16, **kw)


def run(model, feeds, threads=2, bf16=True):
    return session(model, threads, bf16).run(None, feeds)


def rel_l2(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.linalg.norm(got - want) / max(np.linalg.norm(want), 1e-30)


def check_product(got, a, b, matmul, k):
    """got against matmul() of the rounded inputs (float32 summation error) and of the originals
    (bfloat16 error)."""
    exact = matmul(bf16_round(a).astype(np.float64), bf16_round(b).astype(np.float64))
    true = matmul(np.asarray(a, np.float64), np.asarray(b, np.float64))
    assert got.shape == true.shape
    # float32 sums of k terms against float64: a few ulps times sqrt(k), relative to the terms' size
    scale = np.sqrt(k) * 2.0 * 2.0
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=2e-6 * scale)
    assert rel_l2(got, true) < 1.2e-2
    assert rel_l2(got, true) > 1e-5  # really rounded: float32 would be ~1e-7


# ---- MatMul ----

MM_SHAPES = [
    # (A shape, B shape)
    ((1, 7), (7, 5)),            # one row
    ((37, 77), (77, 45)),        # odd M, N, K
    ((64, 33), (33, 100)),       # K not a multiple of 2 or 32
    ((5, 1), (1, 9)),            # K = 1
    ((3, 300), (300, 2)),        # N < a panel, two K slices
    ((20, 1000), (1000, 70)),    # K over several 256-deep slices, not a multiple of 32
    ((130, 64), (64, 129)),      # M past 4 AMX blocks, N past 4 panels
    ((2, 3, 17, 24), (24, 40)),  # batch folded into rows (constant B)
    ((9,), (9, 16)),             # 1-D A
    ((12, 31), (31,)),           # 1-D B
]


@need_bf16
@pytest.mark.parametrize("as_,bs", MM_SHAPES)
@pytest.mark.parametrize("const_b", [True, False])
def test_matmul(as_, bs, const_b):
    rng = np.random.default_rng(hash((as_, bs, const_b)) % 2**32)
    a, b = rand(rng, as_), rand(rng, bs, low=-1, high=1)
    m = node_model("MatMul", [("a", a), ("b", b)], ["y"], initializers={"b": b} if const_b else None)
    feeds = {"a": a} if const_b else {"a": a, "b": b}
    got = run(m, feeds)[0]
    check_product(got, a, b, np.matmul, as_[-1])


@need_bf16
@pytest.mark.parametrize("as_,bs", [((2, 3, 17, 24), (3, 24, 40)), ((4, 5, 33), (4, 33, 6)),
                                    ((2, 1, 9, 70), (1, 3, 70, 35)), ((12, 64, 64), (12, 64, 64))])
def test_batch_matmul_both_activations(as_, bs):
    """Attention-like products: both operands are activations, with broadcast batches."""
    rng = np.random.default_rng(7)
    a, b = rand(rng, as_), rand(rng, bs, low=-1, high=1)
    m = node_model("MatMul", [("a", a), ("b", b)], ["y"])
    got = run(m, {"a": a, "b": b})[0]
    check_product(got, a, b, np.matmul, as_[-1])


@need_bf16
def test_matmul_bias_fused():
    """MatMul + Add over a batched left operand becomes kiln:MatMulBias: bias added in float32."""
    rng = np.random.default_rng(3)
    a, w, bias = rand(rng, (2, 9, 48)), rand(rng, (48, 50), low=-1, high=1), rand(rng, (50,))
    g = helper.make_graph(
        [helper.make_node("MatMul", ["a", "w"], ["t"]), helper.make_node("Add", ["t", "bias"], ["y"])], "g",
        [helper.make_tensor_value_info("a", TensorProto.FLOAT, a.shape)],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "bias")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    got = run(m, {"a": a})[0]
    check_product(got - bias, a, w, np.matmul, 48)


# ---- Gemm ----

@need_bf16
@pytest.mark.parametrize("ta", [0, 1])
@pytest.mark.parametrize("tb", [0, 1])
@pytest.mark.parametrize("const_b", [True, False])
@pytest.mark.parametrize("mkn", [(23, 45, 67), (1, 130, 40), (64, 31, 1)])
def test_gemm(ta, tb, const_b, mkn):
    M, K, N = mkn
    rng = np.random.default_rng(M * 1000 + K + ta * 7 + tb * 13 + const_b)
    a = rand(rng, (K, M) if ta else (M, K))
    b = rand(rng, (N, K) if tb else (K, N), low=-1, high=1)
    c = rand(rng, (N,))
    alpha, beta = 0.75, 1.5
    inits = {"b": b, "c": c} if const_b else {"c": c}
    m = node_model("Gemm", [("a", a), ("b", b), ("c", c)], ["y"],
                   {"transA": ta, "transB": tb, "alpha": alpha, "beta": beta}, initializers=inits)
    feeds = {"a": a} if const_b else {"a": a, "b": b}
    got = run(m, feeds)[0]
    opa = a.T if ta else a
    opb = b.T if tb else b
    check_product((got - beta * c.astype(np.float64)) / alpha, opa, opb, np.matmul, K)


# ---- FusedMatMul ----

@need_bf16
@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_fused_matmul(ta, tb):
    rng = np.random.default_rng(11 + 2 * ta + tb)
    M, K, N = 19, 45, 27
    a = rand(rng, (3, K, M) if ta else (3, M, K))
    b = rand(rng, (3, N, K) if tb else (3, K, N), low=-1, high=1)
    m = node_model("FusedMatMul", [("a", a), ("b", b)], ["y"],
                   {"transA": ta, "transB": tb, "alpha": 0.5}, domain=MS)
    got = run(m, {"a": a, "b": b})[0]
    opa = np.swapaxes(a, -1, -2) if ta else a
    opb = np.swapaxes(b, -1, -2) if tb else b
    check_product(got / 0.5, opa, opb, np.matmul, K)


# ---- Conv through the product ----

def conv_model(x, w, b, attrs, op="Conv", z=None):
    inputs = [("x", x), ("w", w), ("b", b)]
    if z is not None:
        inputs.append(("z", z))
    return node_model(op, inputs, ["y"], attrs, domain=MS if op == "FusedConv" else "",
                      initializers={"w": w, "b": b})


CONV_CASES = [
    ((2, 13, 11, 9), (20, 13, 3, 3), {"pads": [1, 1, 1, 1]}),                # K = 117
    ((1, 16, 20, 20), (33, 16, 1, 1), {}),                                   # 1x1, read in place
    ((2, 16, 15, 15), (24, 16, 1, 1), {"strides": [2, 2]}),                  # strided 1x1
    ((1, 3, 32, 30), (64, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),  # ResNet stem, K = 147
    ((2, 12, 10, 10), (24, 3, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),    # grouped
    ((1, 8, 17, 13), (16, 8, 3, 3), {"dilations": [2, 1], "pads": [2, 1, 2, 1]}),
    ((3, 5, 40), (70, 5, 5), {"pads": [2, 2]}),                              # 1-D
    ((1, 4, 5, 6, 7), (10, 4, 3, 3, 3), {"pads": [1] * 6}),                  # 3-D
    ((1, 64, 7, 7), (96, 64, 3, 3), {"pads": [1, 1, 1, 1]}),                 # K = 576, small map
    ((2, 40, 1, 1), (50, 40, 1, 1), {}),                                     # 1x1 map (squeeze-excite)
]


@need_bf16
@pytest.mark.parametrize("xs,ws,attrs", CONV_CASES)
def test_conv(xs, ws, attrs):
    rng = np.random.default_rng(sum(xs) * 31 + sum(ws))
    x, w, b = rand(rng, xs), rand(rng, ws, low=-1, high=1), rand(rng, (ws[0],))
    got = run(conv_model(x, w, b, attrs), {"x": x})[0]
    exact = run_ort(conv_model(bf16_round(x), bf16_round(w), b, attrs), {"x": bf16_round(x)})[0]
    true = run_ort(conv_model(x, w, b, attrs), {"x": x})[0]
    k = int(np.prod(ws[1:]))
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=2e-6 * 4 * np.sqrt(k) + 1e-6)
    assert 1e-5 < rel_l2(got - b.reshape((-1,) + (1,) * (len(xs) - 2)),
                         true - b.reshape((-1,) + (1,) * (len(xs) - 2))) < 1.2e-2


@need_bf16
@pytest.mark.parametrize("act,params", [("Relu", []), ("LeakyRelu", [0.1]), ("Clip", [-0.5, 0.7]),
                                        ("Sigmoid", [])])
def test_fused_conv_residual_activation(act, params):
    rng = np.random.default_rng(5)
    xs, ws, attrs = (2, 10, 9, 9), (14, 10, 3, 3), {"pads": [1, 1, 1, 1]}
    x, w, b = rand(rng, xs), rand(rng, ws, low=-1, high=1), rand(rng, (14,))
    z = rand(rng, (2, 14, 9, 9))
    fa = dict(attrs, activation=act, **({"activation_params": params} if params else {}))
    got = run(conv_model(x, w, b, fa, op="FusedConv", z=z), {"x": x, "z": z})[0]
    exact = run_ort(conv_model(bf16_round(x), bf16_round(w), b, fa, op="FusedConv", z=z),
                    {"x": bf16_round(x), "z": z})[0]
    np.testing.assert_allclose(got, exact, rtol=1e-5, atol=1e-4)


# ---- option off, threads, config entry, memory ----

def mixed_model(rng):
    """MatMul (constant B), Gemm (transB), a Conv and an activation x activation MatMul."""
    w1 = rand(rng, (64, 96), low=-1, high=1)
    w2 = rand(rng, (64, 64), low=-1, high=1)
    wc = rand(rng, (8, 4, 3, 3), low=-1, high=1)
    shape = np.array([1, 4, 4, 4], np.int64)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]),
             helper.make_node("Gemm", ["h", "w2"], ["g"], transB=1),
             helper.make_node("Reshape", ["g", "shape"], ["r"]),
             helper.make_node("Conv", ["r", "wc"], ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("Reshape", ["c", "shape2"], ["c2"]),
             helper.make_node("MatMul", ["c2", "x2"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 96]),
                                       helper.make_tensor_value_info("x2", TensorProto.FLOAT, [16, 5])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w1.T.copy(), "w1"), numpy_helper.from_array(w2, "w2"),
                           numpy_helper.from_array(wc, "wc"), numpy_helper.from_array(shape, "shape"),
                           numpy_helper.from_array(np.array([8, 16], np.int64), "shape2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    feeds = {"x": rand(rng, (1, 96)), "x2": rand(rng, (16, 5))}
    return m, feeds


def test_option_off_is_float32_bitwise():
    """bf16=False, and the config entry at "0", give exactly what a default session gives."""
    m, feeds = mixed_model(np.random.default_rng(1))
    data = m.SerializeToString()
    want = kiln.InferenceSession(data, threads=2).run(None, feeds)[0]
    off = kiln.InferenceSession(data, threads=2, bf16=False).run(None, feeds)[0]
    assert np.array_equal(off.view(np.uint32), want.view(np.uint32))
    from kiln import onnxruntime as kort
    so = kort.SessionOptions()
    so.add_session_config_entry("kiln.cpu_bf16", "0")
    cfg = kort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.array_equal(cfg.view(np.uint32), want.view(np.uint32))
    ref = run_ort(m, feeds)[0]
    # outputs reach ~1e3 and some cancel to below 1: float32 rounding of the large terms alone
    # (either runtime's summation order) leaves a few 1e-4 there, so atol follows the scale
    np.testing.assert_allclose(want, ref, rtol=1e-4, atol=1e-6 * np.abs(ref).max())


@need_bf16
def test_option_on_and_config_entry():
    """bf16=True and the config entry "kiln.cpu_bf16" = "1" give the same bfloat16 result, which
    differs from float32 by bfloat16 rounding only."""
    m, feeds = mixed_model(np.random.default_rng(2))
    data = m.SerializeToString()
    f32 = kiln.InferenceSession(data, threads=2).run(None, feeds)[0]
    on = session(data).run(None, feeds)[0]
    from kiln import onnxruntime as kort
    so = kort.SessionOptions()
    so.add_session_config_entry("kiln.cpu_bf16", "1")
    cfg = kort.InferenceSession(data, so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
    assert np.array_equal(cfg.view(np.uint32), on.view(np.uint32))
    assert not np.array_equal(on, f32)
    assert rel_l2(on, f32) < 3e-2


@need_bf16
@pytest.mark.parametrize("case", ["mixed", "matmul", "batch", "conv"])
def test_threads_same_result(case):
    rng = np.random.default_rng(9)
    if case == "mixed":
        m, feeds = mixed_model(rng)
    elif case == "matmul":
        a, b = rand(rng, (150, 200)), rand(rng, (200, 190))
        m, feeds = node_model("MatMul", [("a", a), ("b", b)], ["y"], initializers={"b": b}), {"a": a}
    elif case == "batch":
        a, b = rand(rng, (6, 70, 64)), rand(rng, (6, 64, 70))
        m, feeds = node_model("MatMul", [("a", a), ("b", b)], ["y"]), {"a": a, "b": b}
    else:
        x, w, b = rand(rng, (1, 32, 30, 30)), rand(rng, (64, 32, 3, 3)), rand(rng, (64,))
        m, feeds = conv_model(x, w, b, {"pads": [1, 1, 1, 1]}), {"x": x}
    outs = [run(m, feeds, threads=t)[0] for t in (1, 2, 3)]
    for o in outs[1:]:
        assert np.array_equal(o.view(np.uint32), outs[0].view(np.uint32))


@need_bf16
def test_constant_and_activation_weights_agree():
    """B packed at open and B packed per run round the same way: identical results."""
    rng = np.random.default_rng(4)
    a, b = rand(rng, (33, 70)), rand(rng, (70, 41))
    const = run(node_model("MatMul", [("a", a), ("b", b)], ["y"], initializers={"b": b}), {"a": a})[0]
    act = run(node_model("MatMul", [("a", a), ("b", b)], ["y"]), {"a": a, "b": b})[0]
    assert np.array_equal(const.view(np.uint32), act.view(np.uint32))


def cli():
    path = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "kiln")
    if not os.path.exists(path):
        pytest.skip("no kiln CLI build at %s" % path)
    return path


@need_bf16
def test_packed_weights_half_the_bytes(tmp_path):
    """The bfloat16 packing replaces the float32 one: packed weights take about half."""
    import re
    rng = np.random.default_rng(6)
    w1, w2 = rand(rng, (256, 300)), rand(rng, (200, 300))
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w1"], ["h"]),
                           helper.make_node("Gemm", ["h", "w2"], ["y"], transB=1)], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    path = str(tmp_path / "m.onnx")
    with open(path, "wb") as f:
        f.write(m.SerializeToString())

    def packed(*extra):
        out = subprocess.run([cli(), "info", path, *extra], capture_output=True, text=True, timeout=120)
        hit = re.search(r"packed weights: (\d+) bytes", out.stdout)
        assert hit, out.stdout + out.stderr
        return int(hit.group(1))

    f32, bf = packed(), packed("--bf16")
    assert f32 >= 4 * (256 * 300 + 300 * 200)
    assert 0 < bf <= 0.5 * f32 * 1.07, (f32, bf)  # K padded to 32 for AMX: 300 -> 320


def test_cli_bf16_runs():
    """kiln bench accepts --bf16 (float32 fallback with a warning where the CPU cannot)."""
    m, _ = mixed_model(np.random.default_rng(8))
    path = os.path.join(os.environ.get("TMPDIR", "/tmp"), "kiln_bf16_cli_%d.onnx" % os.getpid())
    with open(path, "wb") as f:
        f.write(m.SerializeToString())
    try:
        out = subprocess.run([cli(), "info", path, "--bf16"], capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        assert ("AVX512-BF16" in out.stderr) == (not HAS_BF16), out.stderr
    finally:
        os.unlink(path)


# ---- fallback and AMX, in child processes (the CPU checks are read once per process) ----

CHILD = r"""
import json, sys, warnings
import numpy as np
sys.path.insert(0, %r)
from util import kiln
d = np.load(sys.argv[1])
data = open(sys.argv[2], "rb").read()
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    s = kiln.InferenceSession(data, threads=2, bf16=sys.argv[3] == "1")
y = s.run(None, {k: d[k] for k in d.files})[0]
np.save(sys.argv[4], y)
print(json.dumps([str(x.message) for x in w]))
""" % HERE


def run_child(tmp_path, m, feeds, bf16, env_extra):
    np.savez(tmp_path / "feeds.npz", **feeds)
    (tmp_path / "m.onnx").write_bytes(m.SerializeToString())
    env = dict(os.environ, **env_extra)
    out = subprocess.run([sys.executable, "-c", CHILD, str(tmp_path / "feeds.npz"), str(tmp_path / "m.onnx"),
                          "1" if bf16 else "0", str(tmp_path / "y.npy")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr
    return np.load(tmp_path / "y.npy"), json.loads(out.stdout.strip().splitlines()[-1])


def test_fallback_without_avx512_bf16(tmp_path):
    """KILN_NO_AVX512=1 stands in for a CPU without AVX512-BF16: the session warns once and
    computes in float32, bitwise what a float32 session gives there."""
    m, feeds = mixed_model(np.random.default_rng(12))
    env = {"KILN_NO_AVX512": "1"}
    y_bf, warns = run_child(tmp_path, m, feeds, True, env)
    y_32, warns32 = run_child(tmp_path, m, feeds, False, env)
    assert any("AVX512-BF16" in w and "float32" in w for w in warns), warns
    assert not warns32
    assert np.array_equal(y_bf.view(np.uint32), y_32.view(np.uint32))


@pytest.mark.skipif(not (HAS_BF16 and HAS_AMX), reason="this CPU has no AMX-BF16")
@pytest.mark.parametrize("case", ["matmul", "gemm_tb", "batch", "conv"])
def test_amx_against_avx512_bf16(tmp_path, case):
    """The AMX tile kernel (default where present) against the AVX512-BF16 kernel (KILN_NO_AMX=1)
    and numpy: both sum the same bfloat16 products in float32, in different orders."""
    rng = np.random.default_rng(21)
    if case == "matmul":
        a, b = rand(rng, (77, 300)), rand(rng, (300, 45), low=-1, high=1)
        m, feeds, k = node_model("MatMul", [("a", a), ("b", b)], ["y"], initializers={"b": b}), {"a": a}, 300
        exact = bf16_round(a).astype(np.float64) @ bf16_round(b)
    elif case == "gemm_tb":
        a, b = rand(rng, (130, 70)), rand(rng, (33, 70), low=-1, high=1)
        m = node_model("Gemm", [("a", a), ("b", b)], ["y"], {"transB": 1}, initializers={"b": b})
        feeds, k = {"a": a}, 70
        exact = bf16_round(a).astype(np.float64) @ bf16_round(b).T
    elif case == "batch":
        a, b = rand(rng, (4, 40, 64)), rand(rng, (4, 64, 50), low=-1, high=1)
        m, feeds, k = node_model("MatMul", [("a", a), ("b", b)], ["y"]), {"a": a, "b": b}, 64
        exact = bf16_round(a).astype(np.float64) @ bf16_round(b)
    else:
        x, w, bb = rand(rng, (1, 16, 12, 12)), rand(rng, (40, 16, 3, 3), low=-1, high=1), rand(rng, (40,))
        m, feeds, k = conv_model(x, w, bb, {"pads": [1, 1, 1, 1]}), {"x": x}, 144
        exact = run_ort(conv_model(bf16_round(x), bf16_round(w), bb, {"pads": [1, 1, 1, 1]}),
                        {"x": bf16_round(x)})[0]
    y_amx, _ = run_child(tmp_path, m, feeds, True, {})
    y_avx, _ = run_child(tmp_path, m, feeds, True, {"KILN_NO_AMX": "1"})
    tol = dict(rtol=1e-5, atol=2e-6 * 4 * np.sqrt(k) + 1e-6)
    np.testing.assert_allclose(y_amx, exact, **tol)
    np.testing.assert_allclose(y_avx, exact, **tol)
    np.testing.assert_allclose(y_amx, y_avx, **tol)


# ---- bad input still fails clearly in bfloat16 mode ----

@need_bf16
def test_bad_inputs_fail_clearly():
    rng = np.random.default_rng(0)
    a, b = rand(rng, (4, 6)), rand(rng, (5, 3))
    m = node_model("MatMul", [("a", a), ("b", b)], ["y"])
    with pytest.raises(Exception, match="inner dimensions 6 and 5 differ"):
        run(m, {"a": a, "b": b})
    m = node_model("Gemm", [("a", rand(rng, (2, 4, 6))), ("b", rand(rng, (6, 3)))], ["y"])
    with pytest.raises(Exception, match="rank 3, expected 2"):
        run(m, {"a": rand(rng, (2, 4, 6)), "b": rand(rng, (6, 3))})
    w = rand(rng, (4, 3, 3, 3))
    m = node_model("Conv", [("x", rand(rng, (1, 5, 8, 8))), ("w", w)], ["y"], initializers={"w": w})
    with pytest.raises(Exception, match="channels"):
        run(m, {"x": rand(rng, (1, 5, 8, 8))})
    m = node_model("MatMul", [("a", a), ("b", b.astype(np.float64))], ["y"])
    with pytest.raises(Exception, match="different element types"):
        run(m, {"a": a, "b": b.astype(np.float64)})
    from kiln import onnxruntime as kort
    so = kort.SessionOptions()
    so.add_session_config_entry("kiln.cpu_bf16", "yes")
    with pytest.raises(Exception, match="kiln.cpu_bf16.*0 or 1"):
        kort.InferenceSession(node_model("MatMul", [("a", a), ("b", rand(rng, (6, 3)))], ["y"]).SerializeToString(),
                              so, providers=["CPUExecutionProvider"])


@need_bf16
@pytest.mark.parametrize("as_,bs", [((3, 0), (0, 4)), ((0, 5), (5, 4)), ((2, 0, 5), (5, 3))])
@pytest.mark.parametrize("const_b", [True, False])
def test_empty_products(as_, bs, const_b):
    """K = 0 gives zeros (C alone for Gemm), M = 0 an empty output, as in float32."""
    rng = np.random.default_rng(17)
    a, b = rand(rng, as_), rand(rng, bs)
    m = node_model("MatMul", [("a", a), ("b", b)], ["y"], initializers={"b": b} if const_b else None)
    got = run(m, {"a": a} if const_b else {"a": a, "b": b})[0]
    want = np.matmul(a, b)
    assert got.shape == want.shape and np.array_equal(got, want)
    if len(as_) == 2:
        c = rand(rng, (bs[1],))
        m = node_model("Gemm", [("a", a), ("b", b), ("c", c)], ["y"], {"beta": 2.0},
                       initializers={"b": b, "c": c} if const_b else {"c": c})
        got = run(m, {"a": a} if const_b else {"a": a, "b": b})[0]
        np.testing.assert_allclose(got, a @ b + 2.0 * c, rtol=1e-6, atol=1e-6)
