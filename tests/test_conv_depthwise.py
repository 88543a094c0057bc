"""Depthwise convolution (one input channel per group) against onnxruntime on fresh random data:
the plane kernel (large maps, strides 1/2/3, dilations, 1-D) and the blocked kernel (maps under 16
wide; 16 channels per vector on AVX-512, 8 on AVX2), odd channel counts and channel tails, asymmetric pads, kernels 3 and 5,
batch 1 and 3, with and without bias, and the residual Add and activations that kiln fuses into
the kernel (Relu, Clip, HardSigmoid, HardSwish): the graph is Conv [-> Add(z)] [-> activation],
which kiln runs as one FusedConv and ORT (no optimisations) as separate nodes. Also the float32
GlobalAveragePool of the squeeze-excite blocks."""
import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import HAS_AVX512, HAS_PACKED, assert_same, kiln, rand, run_ort  # noqa: E402

F32 = np.float32

# (x shape, kernel, attrs) with group = channels; comments name the kernel kiln picks
CASES = [
    ((1, 16, 56, 56), (3, 3), {"pads": [1, 1, 1, 1]}),                        # plane, rows in place
    ((3, 17, 30, 29), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),     # plane, stride 2
    ((1, 24, 28, 28), (5, 5), {"pads": [2, 2, 2, 2]}),                        # plane, pitched 28
    ((1, 9, 20, 21), (5, 5), {"strides": [2, 2], "pads": [2, 1, 2, 1]}),      # plane, asymmetric pads
    ((1, 3, 67, 70), (3, 3), {"strides": [2, 2], "pads": [0, 1, 0, 1]}),      # plane, stride 2, pad 1 right only
    ((1, 2, 41, 75), (5, 5), {"strides": [2, 2], "pads": [2, 2, 1, 1]}),      # plane, input longer than read
    ((1, 5, 33, 31), (3, 3), {"strides": [3, 3], "pads": [0, 1, 1, 0]}),      # plane, stride 3
    ((1, 6, 19, 40), (3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),    # plane, dilation
    ((3, 40, 14, 14), (3, 3), {"pads": [1, 1, 1, 1]}),                        # blocked, 14x14
    ((1, 33, 14, 14), (5, 5), {"pads": [2, 2, 2, 2]}),                        # blocked, channel tail
    ((3, 20, 7, 7), (5, 5), {"pads": [2, 2, 2, 2]}),                          # blocked, 7x7
    ((1, 48, 14, 14), (5, 5), {"strides": [2, 2], "pads": [2, 2, 2, 2]}),     # blocked, stride 2
    ((1, 31, 9, 11), (3, 3), {"strides": [2, 2], "pads": [1, 0, 0, 1]}),      # blocked, odd sizes
    ((2, 7, 5, 13), (3, 3), {}),                                              # blocked, no pads
    ((2, 13, 50), (5,), {"pads": [2, 2]}),                                    # 1-D
]

ACTS = [None, ("Relu", {}, []), ("Clip", {}, [0.0, 6.0]), ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}, []),
        ("HardSwish", {}, [])]


def dw_model(xs, ks, attrs, bias, residual, act, mult=1, dense_m=None):
    """Conv(x, W[, B]) [+ z] [-> act], W and B initializers; returns the model and its feeds.
    Depthwise (group = channels, mult outputs each), or dense_m output channels with group 1."""
    rng = np.random.default_rng(hash((xs, ks, bias, residual, mult, dense_m)) % 2**32)
    C = xs[1]
    M = dense_m or C * mult
    if dense_m:
        attrs = dict(attrs, group=1)
    w = rand(rng, (M, 1 if not dense_m else C) + tuple(ks), low=-1 if not dense_m else -0.3,
             high=1 if not dense_m else 0.3)
    inits = [numpy_helper.from_array(w, "w")]
    conv_in = ["x", "w"]
    if bias:
        inits.append(numpy_helper.from_array(rand(rng, (M,)), "b"))
        conv_in.append("b")
    x = rand(rng, xs)
    attrs = dict({"group": C}, **attrs)
    ref = run_ort(_graph([helper.make_node("Conv", conv_in, ["y"], kernel_shape=list(ks), **attrs)],
                         xs, [], inits), {"x": x})[0]
    feeds = {"x": x}
    nodes = [helper.make_node("Conv", conv_in, ["c"], kernel_shape=list(ks), **attrs)]
    vis = []
    last = "c"
    if residual:
        feeds["z"] = rand(rng, ref.shape)
        vis.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ref.shape))
        nodes.append(helper.make_node("Add", [last, "z"], ["s"]))
        last = "s"
    if act:
        name, kw, bounds = act
        ins = [last]
        for i, v in enumerate(bounds):
            inits.append(numpy_helper.from_array(np.array(v, F32), f"bound{i}"))
            ins.append(f"bound{i}")
        nodes.append(helper.make_node(name, ins, ["a"], **kw))
        last = "a"
    nodes.append(helper.make_node("Identity", [last], ["y"]))
    return _graph(nodes, xs, vis, inits), feeds


def _graph(nodes, xs, extra_inputs, inits):
    g = helper.make_graph(nodes, "dw", [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)] + extra_inputs,
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def run_both(m, feeds, threads):
    want = run_ort(m, feeds)[0]
    s = kiln.InferenceSession(m.SerializeToString(), threads=threads)
    got = s.run(None, feeds)[0]
    return got, want, s


def tol(ks):
    k = int(np.prod(ks))
    return dict(rtol=1e-4, atol=2e-6 * np.sqrt(k) + 1e-5)


@pytest.mark.parametrize("xs,ks,attrs", CASES, ids=[f"{c[0]}k{c[1][0]}" for c in CASES])
@pytest.mark.parametrize("act", ACTS, ids=lambda a: a[0] if a else "none")
@pytest.mark.parametrize("residual", [False, True], ids=["", "z"])
def test_depthwise_fused(xs, ks, attrs, act, residual):
    m, feeds = dw_model(xs, ks, attrs, True, residual, act)
    for threads in (1, 2):
        got, want, s = run_both(m, feeds, threads)
        assert_same(got, want, what=f"threads {threads}", **tol(ks))
    # Conv, Add and the activation ran as one node (the Identity stays)
    assert s.plan_stats()["nodes"] == 2


@pytest.mark.parametrize("xs,ks,attrs", CASES[:3] + CASES[8:11], ids=lambda v: str(v))
@pytest.mark.parametrize("mult", [1, 2])
def test_depthwise_no_bias_and_multiplier(xs, ks, attrs, mult):
    """Without bias, and with two output channels per input channel (which the blocked kernel
    leaves to the plane kernel)."""
    m, feeds = dw_model(xs, ks, attrs, False, False, ("HardSwish", {}, []), mult=mult)
    got, want, _ = run_both(m, feeds, 2)
    assert_same(got, want, **tol(ks))


# the product convolutions (1x1 and 3x3 through the packed-weight product, whose store applies
# the residual and HardSwish), small maps across images at batch 3 and one image per product
PRODUCT_CASES = [((1, 24, 14, 14), (1, 1), {}, 40), ((3, 40, 7, 7), (1, 1), {}, 96),
                 ((1, 16, 30, 31), (1, 1), {}, 72), ((2, 9, 11, 13), (3, 3), {"pads": [1, 1, 1, 1]}, 33),
                 ((1, 3, 40, 40), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, 16)]


@pytest.mark.parametrize("xs,ks,attrs,m", PRODUCT_CASES, ids=[str(c[0]) + "k" + str(c[1][0]) for c in PRODUCT_CASES])
@pytest.mark.parametrize("residual", [False, True], ids=["", "z"])
def test_product_conv_hardswish(xs, ks, attrs, m, residual):
    m_, feeds = dw_model(xs, ks, attrs, True, residual, ("HardSwish", {}, []), dense_m=m)
    for threads in (1, 2):
        got, want, s = run_both(m_, feeds, threads)
        assert_same(got, want, what=f"threads {threads}", rtol=1e-4, atol=1e-4)
    assert s.plan_stats()["nodes"] == 2


def test_depthwise_nan_passes_through_fused_activation():
    """NaN inputs stay NaN through the fused HardSwish/Relu (no max/min swallowing them)."""
    for act in (("HardSwish", {}, []), ("Relu", {}, [])):
        for xs in ((1, 16, 14, 14), (1, 8, 30, 30)):
            m, feeds = dw_model(xs, (3, 3), {"pads": [1, 1, 1, 1]}, True, False, act)
            feeds["x"].reshape(-1)[::29] = np.nan
            got, want, _ = run_both(m, feeds, 2)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            assert_same(got, want, **tol((3, 3)))


def test_depthwise_same_bits_any_thread_count():
    """How planes and blocks are shared out never changes a value."""
    for xs in ((3, 40, 14, 14), (2, 24, 28, 28)):
        m, feeds = dw_model(xs, (5, 5), {"pads": [2, 2, 2, 2]}, True, True, ("HardSwish", {}, []))
        outs = [kiln.InferenceSession(m.SerializeToString(), threads=t).run(None, feeds)[0] for t in (1, 2, 3)]
        for o in outs[1:]:
            assert np.array_equal(o, outs[0])


# the blocked kernel's row bands: with fewer channel blocks than two per thread (batch 1 on
# many threads) it also cuts the output rows; every band interleaves its own input rows (pads,
# strides and dilation at the band edges), and no thread count changes a value
BAND_CASES = [
    ((1, 200, 14, 14), (3, 3), {"pads": [1, 1, 1, 1]}),
    ((1, 40, 14, 14), (5, 5), {"strides": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 33, 15, 13), (3, 3), {"pads": [0, 1, 2, 1]}),
    ((2, 20, 11, 9), (3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 17, 7, 7), (5, 5), {"pads": [2, 2, 2, 2]}),
    ((1, 48, 28, 28), (3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),
]


@pytest.mark.parametrize("xs,ks,attrs", BAND_CASES, ids=[f"{c[0]}k{c[1][0]}" for c in BAND_CASES])
@pytest.mark.parametrize("act", [None, ("HardSwish", {}, []), ("Relu", {}, [])], ids=lambda a: a[0] if a else "none")
@pytest.mark.parametrize("residual", [False, True], ids=["", "z"])
def test_depthwise_row_bands(xs, ks, attrs, act, residual):
    m, feeds = dw_model(xs, ks, attrs, True, residual, act)
    outs = []
    for threads in (1, 2, 3, 16):
        got, want, _ = run_both(m, feeds, threads)
        assert_same(got, want, what=f"threads {threads}", **tol(ks))
        outs.append(got)
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])


@pytest.mark.skipif(not HAS_PACKED, reason="the blocked depthwise kernel is AVX-512 or AVX2 code; this "
                    "CPU runs the plane kernel, checked against onnxruntime above")
def test_depthwise_row_bands_are_used():
    """At 16 threads a 200-channel 14x14 layer (13 blocks of 16 channels on AVX-512, 25 of 8 on
    AVX2) runs in more items than blocks. A 5x5 window: AVX2 takes the blocked kernel from 16 taps."""
    import subprocess
    m, feeds = dw_model((1, 200, 14, 14), (5, 5), {"pads": [2, 2, 2, 2]}, True, False, None)
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[3]); from util import run_kiln;"
            "run_kiln(open(sys.argv[1], 'rb').read(), {'x': np.load(sys.argv[2])}, threads=16)")
    import tempfile
    d = tempfile.mkdtemp()
    mp, xp = os.path.join(d, "m.onnx"), os.path.join(d, "x.npy")
    open(mp, "wb").write(m.SerializeToString())
    np.save(xp, feeds["x"])
    r = subprocess.run([sys.executable, "-c", code, mp, xp, os.path.dirname(os.path.abspath(__file__))],
                       capture_output=True, text=True,
                       env=dict(os.environ, KILN_DEBUG_PARTITION="1"))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if "path=depthwise-blocked" in ln]
    assert len(lines) == 1
    items = int(lines[0].split("items=")[1].split()[0])
    blocks = (200 + 15) // 16 if HAS_AVX512 else (200 + 7) // 8
    assert items > blocks


# ---- the squeeze-excite pool: float32 GlobalAveragePool ----

@pytest.mark.parametrize("shape", [(1, 3, 1, 1), (2, 5, 7, 7), (1, 4, 14, 14), (3, 2, 15), (1, 3, 63), (1, 2, 64),
                                   (1, 2, 65), (2, 3, 5, 40), (1, 2, 56, 56), (1, 1, 300, 300)])
def test_global_average_pool_vs_float64(shape):
    """Plane means against numpy in float64 (ORT's float32 sum is no better an oracle): vector
    bodies, masked tails, planes of one value, and a plane long enough to leave the fast path."""
    from util import node_model
    x = rand(np.random.default_rng(len(shape) * 1000 + shape[-1]), shape, low=-1, high=3)
    m = node_model("GlobalAveragePool", [("x", x)], ["y"])
    got = kiln.InferenceSession(m.SerializeToString(), threads=2).run(None, {"x": x})[0]
    want = x.astype(np.float64).reshape(shape[0], shape[1], -1).mean(axis=2)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=2e-6, atol=1e-6)
    assert_same(got, run_ort(m, {"x": x})[0], rtol=1e-5, atol=1e-6)
