"""The fast convolution paths against onnxruntime, on fresh random data: wide packed-weight tiles
that run across images (small maps, batch > 1), strided 1x1 convolutions (subsampled, then a plain
1x1 product), single-channel long-kernel convolutions (the 1-D audio front end) through the product,
fused bias/activation/residual on each of them, float16 inputs, results that do not depend on the
thread count, and the float32 MaxPool fast path. The weights are initializers (packed once at load)
unless a test says otherwise."""
import functools
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import HAS_AVX512, on_this_cpu, run_in_child, assert_same, check, node_model, rand, run_kiln, run_ort  # noqa: E402
import kiln  # noqa: E402

# These tests hold the direct, channel-lane and product kernels to direct sums' tolerances; 3x3
# stride-1 shapes would otherwise go to the Winograd path, checked in test_conv_winograd.py.
run_kiln = functools.partial(run_kiln, winograd=False)
check = functools.partial(check, winograd=False)
Session = functools.partial(kiln.InferenceSession, winograd=False)

F32, F16 = np.float32, np.float16
MS = "com.microsoft"


def tol(dt, k=1):
    """Tolerance for a sum over k products of values in [-2, 2] x [-1, 1]."""
    if dt == F16:
        return dict(rtol=2e-2, atol=3e-3 * np.sqrt(k) + 2e-2)
    return dict(rtol=1e-4, atol=2e-6 * np.sqrt(k) + 1e-5)


def conv_model(x, w, b, attrs, op="Conv", z=None, w_init=True):
    """Conv (or FusedConv) with W and B as initializers (w_init) or graph inputs."""
    inputs = [("x", x), ("w", w), ("b" if b is not None else "", b)]
    if z is not None:
        inputs.append(("z", z))
    inits = {"w": w, **({"b": b} if b is not None else {})} if w_init else {}
    dom = MS if op == "FusedConv" else ""
    m = node_model(op, inputs, ["y"], attrs, domain=dom, initializers=inits)
    feeds = {"x": x}
    if not w_init:
        feeds["w"] = w
        if b is not None:
            feeds["b"] = b
    if z is not None:
        feeds["z"] = z
    return m, feeds


def fused_attrs(attrs, act, params):
    """attrs plus FusedConv's activation and its parameters (when it has any)."""
    return dict(attrs, activation=act, **({"activation_params": params} if params else {}))


def run_case(rng, xs, ws, attrs, bias=True, dt=F32, threads=2, op="Conv", z=False, w_init=True):
    x = rand(rng, xs, dt)
    w = rand(rng, ws, dt, low=-1, high=1)
    b = rand(rng, (ws[0],), dt) if bias else None
    ys = None
    if z:
        ys = run_ort(*conv_model(x.astype(F32), w.astype(F32), None if b is None else b.astype(F32),
                                 {k: v for k, v in attrs.items() if k not in ("activation", "activation_params")}))[0].shape
    zz = rand(rng, ys, dt) if z else None
    m, feeds = conv_model(x, w, b, attrs, op=op, z=zz, w_init=w_init)
    k = int(np.prod(ws[1:]))
    return check(m, feeds, threads=threads, **tol(dt, k))


# ---- wide tiles, across images (small maps, batch > 1) ----

SPAN_CASES = [
    # (x, w, attrs)
    ((3, 20, 7, 7), (30, 20, 1, 1), {}),                                   # 1x1 across images
    ((5, 33, 5, 9), (40, 33, 1, 1), {}),
    ((3, 1024, 7, 7), (560, 1024, 1, 1), {}),                              # 1x1, weights > 2 MB
    ((4, 16, 7, 7), (24, 16, 3, 3), {"pads": [1, 1, 1, 1]}),               # 3x3 on small maps
    ((3, 13, 11, 13), (27, 13, 3, 3), {"pads": [1, 0, 2, 1]}),
    ((6, 8, 9, 6), (16, 8, 3, 3), {"dilations": [2, 1], "pads": [2, 1, 2, 1]}),
    ((3, 12, 14, 14), (24, 3, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}),  # grouped
    ((2, 24, 13, 13), (256, 24, 3, 3), {"pads": [1, 1, 1, 1]}),            # many output channels
    ((3, 8, 23), (20, 8, 5), {"pads": [2, 2]}),                            # 1-D
    ((2, 4, 5, 6, 7), (10, 4, 3, 3, 3), {"pads": [1] * 6}),                 # 3-D
    ((1, 64, 14, 14), (96, 64, 3, 3), {"pads": [1, 1, 1, 1]}),             # batch 1, one wide tile
    ((2, 16, 40, 40), (20, 16, 3, 3), {"pads": [1, 1, 1, 1]}),             # maps above a tile
]


@pytest.mark.parametrize("xs,ws,attrs", SPAN_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_span_tiles(xs, ws, attrs, bias):
    run_case(np.random.default_rng(hash((xs, ws)) % 1000), xs, ws, attrs, bias)


@pytest.mark.parametrize("xs,ws,attrs", SPAN_CASES[:4])
def test_weight_as_input(xs, ws, attrs):
    """W a graph input: packed per call instead of at load."""
    run_case(np.random.default_rng(5), xs, ws, attrs, w_init=False)


# ---- 1x1 with few input channels (SqueezeNet's expand convs): per-image tiles, and GEMM blocks
# shallow enough to walk their row panels outer (gemm_avx512.c, SHALLOW_KC) ----

SHALLOW_CASES = [
    ((8, 16, 13, 13), (64, 16, 1, 1)),
    ((8, 48, 13, 13), (192, 48, 1, 1)),
    ((3, 32, 27, 27), (128, 32, 1, 1)),
    ((2, 16, 55, 55), (64, 16, 1, 1)),
    ((1, 7, 19, 23), (37, 7, 1, 1)),
    ((2, 32, 9, 61), (13, 32, 1, 1)),
    ((1, 33, 20, 21), (50, 33, 1, 1)),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("op", ["Conv", "FusedConv"])
@pytest.mark.parametrize("xs,ws", SHALLOW_CASES)
def test_pointwise_few_channels(xs, ws, op, threads):
    attrs = fused_attrs({}, "Relu", None) if op == "FusedConv" else {}
    run_case(np.random.default_rng(hash((xs, ws)) % 1000), xs, ws, attrs, threads=threads, op=op)


# ---- strided 1x1 ----

STRIDED_CASES = [
    ((2, 32, 14, 14), (48, 32, 1, 1), {"strides": [2, 2]}),
    ((1, 17, 15, 13), (20, 17, 1, 1), {"strides": [2, 3]}),
    ((3, 9, 10, 11), (12, 9, 1, 1), {"strides": [3, 1]}),
    ((2, 12, 30), (16, 12, 1), {"strides": [4]}),
    ((2, 6, 7, 8, 9), (8, 6, 1, 1, 1), {"strides": [2, 2, 3]}),
    ((1, 8, 12, 12), (16, 2, 1, 1), {"strides": [2, 2], "group": 4}),
    ((2, 8, 12, 12), (16, 8, 1, 1), {"strides": [2, 2], "dilations": [3, 2]}),  # dilation: no effect
    ((1, 256, 56, 56), (128, 256, 1, 1), {"strides": [2, 2]}),                  # ResNet downsample
]


@pytest.mark.parametrize("xs,ws,attrs", STRIDED_CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_strided_pointwise(xs, ws, attrs, bias):
    run_case(np.random.default_rng(11), xs, ws, attrs, bias)


def test_strided_pointwise_auto_pad():
    """SAME_UPPER on a 1x1 kernel pads nothing; VALID likewise."""
    rng = np.random.default_rng(12)
    for ap in ("SAME_UPPER", "VALID"):
        run_case(rng, (2, 8, 9, 9), (12, 8, 1, 1), {"strides": [2, 2], "auto_pad": ap})


def test_strided_pointwise_padded():
    """Padding with a 1x1 kernel keeps the general path (pads read as zeros)."""
    run_case(np.random.default_rng(13), (2, 8, 9, 9), (12, 8, 1, 1),
             {"strides": [2, 2], "pads": [1, 0, 1, 2]})


# ---- one input channel, long kernel ----

@pytest.mark.parametrize("xs,ws,attrs", [
    ((1, 1, 4000), (64, 1, 400), {"strides": [160]}),                     # audio front end
    ((3, 1, 3001), (32, 1, 256), {"strides": [100], "pads": [50, 7]}),
    ((2, 1, 41, 37), (16, 1, 8, 8), {"strides": [4, 4]}),                 # 2-D, 64 taps
    ((2, 2, 500), (24, 1, 64), {"strides": [16], "group": 2}),             # depthwise-like, 2 groups
    ((1, 1, 20, 20), (8, 1, 3, 3), {"pads": [1, 1, 1, 1]}),               # short kernel: direct kernel
])
def test_single_channel_long_kernel(xs, ws, attrs):
    run_case(np.random.default_rng(21), xs, ws, attrs)


# ---- fused bias, activation and residual ----

ACTS = [("Relu", None), ("LeakyRelu", [0.1]), ("Clip", [-0.5, 0.6]), ("Sigmoid", None),
        ("HardSigmoid", [0.2, 0.5]), ("Tanh", None)]


FUSED_CASES = [
    SPAN_CASES[2], STRIDED_CASES[0], SPAN_CASES[0], ((2, 1, 3000), (16, 1, 128), {"strides": [64]}),
    # one image per product: the residual and activation go into the product's store
    ((1, 20, 9, 11), (30, 20, 1, 1), {}),                                  # 1x1, batch 1
    ((2, 8, 30, 30), (28, 8, 1, 1), {}),                                   # 1x1, maps above a tile
    ((1, 12, 15, 15), (40, 12, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # im2col panels
    ((1, 1, 3000), (16, 1, 128), {"strides": [64]}),
    ((1, 6, 9, 9), (24, 3, 1, 1), {"group": 2}),
]


@pytest.mark.parametrize("act,params", ACTS)
@pytest.mark.parametrize("xs,ws,attrs", FUSED_CASES)
@pytest.mark.parametrize("z", [False, True])
def test_fused_conv(act, params, xs, ws, attrs, z):
    run_case(np.random.default_rng(31), xs, ws, fused_attrs(attrs, act, params), op="FusedConv", z=z)



# ---- 1x1 convolutions of 1x1 maps (squeeze-excite): a dense layer over the packed weights ----
# batches below, at and past the four images one pass takes; rows not a multiple of the 12-row
# panels; depths past one 256-deep packed block; groups
MATVEC_CASES = [
    ((1, 960, 1, 1), (240, 960, 1, 1), {}),
    ((3, 100, 1, 1), (37, 100, 1, 1), {}),
    ((4, 300, 1, 1), (25, 300, 1, 1), {}),
    ((9, 513, 1, 1), (130, 513, 1, 1), {}),
    ((5, 64, 1, 1), (48, 32, 1, 1), {"group": 2}),
    ((6, 40, 1), (13, 40, 1), {}),
]


@pytest.mark.parametrize("xs,ws,attrs", MATVEC_CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_matvec(xs, ws, attrs, bias, threads):
    run_case(np.random.default_rng(37), xs, ws, attrs, bias=bias, threads=threads)


@pytest.mark.parametrize("act,params", [("Relu", None), ("HardSigmoid", [0.2, 0.5]), ("Clip", [-0.5, 0.6])])
@pytest.mark.parametrize("z", [False, True])
def test_matvec_fused(act, params, z):
    run_case(np.random.default_rng(41), (7, 300, 1, 1), (50, 300, 1, 1), fused_attrs({}, act, params),
             op="FusedConv", z=z)


def test_matvec_weight_as_input():
    """A W fed at run time is not packed: the matrix-vector fallback runs instead."""
    run_case(np.random.default_rng(43), (5, 96, 1, 1), (20, 96, 1, 1), {}, w_init=False)


def test_conv_add_relu_fused_graph():
    """Conv -> Add(residual) -> Relu as a model: kiln fuses it into FusedConv; ORT is the oracle."""
    rng = np.random.default_rng(41)
    x = rand(rng, (3, 32, 7, 7))
    r = rand(rng, (3, 64, 4, 4))
    w = rand(rng, (64, 32, 1, 1), low=-1, high=1)
    b = rand(rng, (64,))
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], strides=[2, 2]),
             helper.make_node("Add", ["c", "r"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape),
                                       helper.make_tensor_value_info("r", TensorProto.FLOAT, r.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    check(m, {"x": x, "r": r}, **tol(F32, 32))


# ---- float16 ----

@pytest.mark.parametrize("xs,ws,attrs", [SPAN_CASES[2], SPAN_CASES[0], STRIDED_CASES[1],
                                         ((2, 1, 2000), (16, 1, 100), {"strides": [50]})])
def test_float16(xs, ws, attrs):
    run_case(np.random.default_rng(51), xs, ws, attrs, dt=F16)


# ---- thread-count independence ----

@pytest.mark.parametrize("xs,ws,attrs", [SPAN_CASES[2], SPAN_CASES[6], SPAN_CASES[9], STRIDED_CASES[0],
                                         ((2, 1, 4000), (64, 1, 400), {"strides": [160]}),
                                         ((2, 16, 40, 40), (20, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
                                         # channel lanes: segments and tap blocks vary with threads
                                         ((1, 128, 7, 7), (32, 128, 3, 3), {"pads": [1, 1, 1, 1]}),
                                         ((3, 128, 7, 7), (44, 128, 3, 3), {"pads": [1, 1, 1, 1]}),
                                         ((2, 400, 7, 7), (45, 400, 1, 1), {}),
                                         ((1, 64, 14, 14), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]})])
def test_same_bits_any_thread_count(xs, ws, attrs):
    rng = np.random.default_rng(61)
    x = rand(rng, xs)
    w = rand(rng, ws, low=-1, high=1)
    b = rand(rng, (ws[0],))
    m, feeds = conv_model(x, w, b, dict(attrs, activation="Relu"), op="FusedConv")
    ref = run_kiln(m, feeds, threads=1)[0]
    for t in (2, 3, 5, 16):
        got = run_kiln(m, feeds, threads=t)[0]
        assert np.array_equal(got.view(np.uint32), ref.view(np.uint32)), f"threads={t}"
    want = run_ort(m, feeds)[0]
    assert_same(ref, want, **tol(F32, int(np.prod(ws[1:]))))


# ---- bad input ----

def test_bad_channels_named():
    rng = np.random.default_rng(71)
    x = rand(rng, (2, 8, 7, 7))
    w = rand(rng, (16, 6, 1, 1))
    m, feeds = conv_model(x, w, None, {"strides": [2, 2]})
    with pytest.raises(Exception, match="channels"):
        run_kiln(m, feeds)


def test_bad_bias_shape_named():
    rng = np.random.default_rng(72)
    x = rand(rng, (1, 1, 300))
    w = rand(rng, (16, 1, 64))
    b = rand(rng, (15,))
    m, feeds = conv_model(x, w, b, {"strides": [16]})
    with pytest.raises(Exception, match="bias"):
        run_kiln(m, feeds)


# ---- MaxPool float32 fast path ----

POOL_CASES = [
    ((1, 64, 112, 112), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((2, 5, 11, 13), {"kernel_shape": [3, 2], "strides": [2, 1], "pads": [1, 0, 1, 1]}),
    ((2, 3, 111, 111), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 4, 9, 10), {"kernel_shape": [4, 4], "strides": [3, 3], "pads": [2, 2, 2, 2]}),
    ((3, 2, 40), {"kernel_shape": [5], "strides": [2], "pads": [2, 1]}),
    ((1, 2, 6, 7, 8), {"kernel_shape": [2, 3, 3], "strides": [1, 2, 2], "pads": [1, 1, 1, 0, 1, 1]}),
    ((1, 3, 8, 8), {"kernel_shape": [2, 2], "auto_pad": "SAME_UPPER"}),
]


@pytest.mark.parametrize("xs,attrs", POOL_CASES)
def test_maxpool_fast(xs, attrs):
    x = rand(np.random.default_rng(81), xs)
    check(node_model("MaxPool", [("x", x)], ["y"], attrs), {"x": x}, rtol=0, atol=0)


@pytest.mark.parametrize("xs,attrs", POOL_CASES[1:])
def test_maxpool_fast_nan_same_as_indices_path(xs, attrs):
    """With NaN inputs ORT's answer depends on which of its loops a window falls in (NaN is kept
    or dropped by position), so the fast path is held to kiln's general one (taken when Indices is
    asked for): a window whose first tap is NaN gives NaN, else the largest number (zeros of
    either sign among the inputs; 0.0 and -0.0 compare equal)."""
    rng = np.random.default_rng(82)
    x = rand(rng, xs)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 7), replace=False)] = np.nan
    flat[rng.choice(flat.size, size=max(1, flat.size // 9), replace=False)] = -0.0
    flat[rng.choice(flat.size, size=max(1, flat.size // 9), replace=False)] = 0.0
    fast = run_kiln(node_model("MaxPool", [("x", x)], ["y"], attrs), {"x": x})[0]
    general = run_kiln(node_model("MaxPool", [("x", x)], ["y", ("i", np.int64)], attrs), {"x": x})[0]
    assert np.isnan(fast).any() and not np.isnan(fast).all()
    assert np.array_equal(np.isnan(fast), np.isnan(general))
    assert np.array_equal(np.nan_to_num(fast), np.nan_to_num(general))


def test_direct_pad_buffer_reuse_across_layouts():
    """Convs with different paddings/strides in one model, run several times on the same threads:
    the kept padded copy must be cleared whenever its layout changes."""
    rng = np.random.default_rng(91)
    x = rand(rng, (2, 8, 15, 17))
    specs = [((12, 8, 3, 3), [1, 1, 1, 1], [1, 1]), ((12, 12, 5, 5), [2, 0, 1, 2], [1, 1]),
             ((16, 12, 3, 3), [1, 1, 1, 1], [2, 2]), ((16, 16, 3, 3), [0, 0, 0, 0], [1, 1]),
             ((8, 16, 3, 3), [1, 1, 1, 1], [1, 1])]
    nodes, inits, prev = [], [], "x"
    for i, (ws, pads, strides) in enumerate(specs):
        w = rand(rng, ws, low=-0.5, high=0.5)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        out = "y" if i == len(specs) - 1 else f"t{i}"
        nodes.append(helper.make_node("Conv", [prev, f"w{i}"], [out], pads=pads, strides=strides))
        prev = out
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    want = run_ort(m, {"x": x})[0]
    import kiln
    for threads in (1, 2):
        s = Session(m.SerializeToString(), threads=threads)
        for _ in range(3):
            for xx in (x, rand(rng, x.shape)):
                got = s.run(None, {"x": xx})[0]
                ref = run_ort(m, {"x": xx})[0]
                # five chained sums of up to 300 products: rounding, not stale padding (which
                # would be off by whole products)
                assert_same(got, ref, rtol=1e-3, atol=1e-4 * float(np.abs(ref).max()))
    assert want.shape == got.shape


@pytest.mark.parametrize("act,params", [("Relu", None), ("LeakyRelu", [0.1]), ("Clip", [-0.5, 0.6])])
@pytest.mark.parametrize("xs,ws,attrs", FUSED_CASES[4:8])
def test_fused_store_nan(act, params, xs, ws, attrs):
    """NaN through the activation fused into the product's store: NaN stays NaN (x < 0 ? 0 : x and
    the like), as in kiln's separate activation; everything else as ORT's Conv + Add + activation."""
    rng = np.random.default_rng(101)
    x = rand(rng, xs)
    x.reshape(-1)[::29] = np.nan
    w = rand(rng, ws, low=-1, high=1)
    b = rand(rng, (ws[0],))
    plain = run_kiln(*conv_model(x, w, b, attrs))[0]
    z = rand(rng, plain.shape)
    z.reshape(-1)[::31] = np.nan
    fattrs = dict(attrs, activation=act)
    if params:
        fattrs["activation_params"] = params
    got = run_kiln(*conv_model(x, w, b, fattrs, op="FusedConv", z=z))[0]
    s = plain + z
    with np.errstate(invalid="ignore"):
        if act == "Relu":
            want = np.where(s < 0, np.float32(0), s)
        elif act == "LeakyRelu":
            want = np.where(s >= 0, s, np.float32(params[0]) * s)
        else:
            want = np.where(s < params[0], np.float32(params[0]), np.where(s > params[1], np.float32(params[1]), s))
    assert np.isnan(got).any()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert_same(got, want.astype(np.float32), rtol=1e-6, atol=1e-6)


# ---- output channels in the lanes (small maps, many taps) ----

LANES_CASES = [
    # (x, w, attrs): each is checked to take the lanes path
    ((1, 128, 7, 7), (32, 128, 3, 3), {"pads": [1, 1, 1, 1]}),            # DenseNet's 3x3 on 7x7
    ((3, 128, 7, 7), (44, 128, 3, 3), {"pads": [1, 1, 1, 1]}),            # a 16-channel block, tail
    ((2, 400, 7, 7), (45, 400, 1, 1), {}),                                # 1x1 read in place, odd
    ((3, 96, 14, 14), (64, 48, 3, 3), {"group": 2, "pads": [1, 0, 2, 1]}),  # grouped, uneven pads
    ((2, 64, 15, 15), (48, 64, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),  # strided flat
    ((2, 256, 14, 13), (64, 256, 1, 1), {"strides": [2, 2]}),             # strided 1x1 (subsampled)
    ((3, 80, 11), (64, 80, 5), {"pads": [2, 2]}),                         # 1-D
    ((2, 96, 10, 10), (32, 96, 3, 3), {"dilations": [2, 2], "pads": [2, 2, 2, 2]}),
    ((1, 64, 30, 30), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),            # large map, full blocks
    ((3, 48, 33, 29), (96, 48, 3, 3), {"pads": [1, 0, 2, 1]}),            # rows of 3 uneven tiles
    # blocks of weights past 256 KB: on AVX2, items of many positions with the taps outer (spans)
    ((1, 256, 7, 7), (40, 256, 3, 3), {"pads": [1, 1, 1, 1]}),            # one span, 16-channel tail
    ((2, 240, 14, 15), (48, 240, 3, 3), {"pads": [1, 0, 2, 1]}),          # 210 positions: two spans
    ((1, 512, 9, 9), (70, 512, 3, 3), {"pads": [1, 1, 1, 1]}),            # ResNet's 512 channels
]


def lanes_expected(ws):
    """The lanes path, but for 1x1 windows on CPUs without AVX-512: with 8 lanes the product
    wins there (conv_direct.c, kconv_lanes_ok)."""
    if all(k == 1 for k in ws[2:]) and not HAS_AVX512:
        return on_this_cpu("gemm-packed-linear")
    return on_this_cpu("direct-lanes")


def lanes_paths(m, feeds, threads):
    """The partition report's path names for one run of m."""
    return run_in_child(m, feeds, {"KILN_NO_WINOGRAD": "1"}, threads)[1]


@pytest.mark.parametrize("xs,ws,attrs", LANES_CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_lanes(xs, ws, attrs, bias, threads):
    rng = np.random.default_rng(91)
    x, w = rand(rng, xs), rand(rng, ws, low=-1, high=1)
    b = rand(rng, (ws[0],)) if bias else None
    m, feeds = conv_model(x, w, b, attrs)
    assert lanes_paths(m, feeds, threads) == [lanes_expected(ws)]
    check(m, feeds, threads=threads, **tol(F32, int(np.prod(ws[1:]))))


@pytest.mark.parametrize("xs,ws,attrs", LANES_CASES[-3:])
def test_lanes_spans_same_bits_as_tiles(xs, ws, attrs):
    """The AVX2 tiles' spans (taps outer, positions inner) sum each output in the same order as
    the tiles of 12 positions (KILN_NO_LANES_SPAN=1): the same bits, with a residual and Relu."""
    same_bits_with(np.random.default_rng(94), xs, ws, attrs, {"KILN_NO_LANES_SPAN": "1"})


def same_bits_with(rng, xs, ws, attrs, env):
    """FusedConv (bias, Relu) on fresh data in two child processes, the second with env: the same
    bits, and both close to onnxruntime (the Winograd path off in both)."""
    x, w, b = rand(rng, xs), rand(rng, ws, low=-1, high=1), rand(rng, (ws[0],))
    m, feeds = conv_model(x, w, b, dict(attrs, activation="Relu"), op="FusedConv")
    a = run_in_child(m, feeds, {"KILN_NO_WINOGRAD": "1"}, 2)[0][0]
    v = run_in_child(m, feeds, dict(env, KILN_NO_WINOGRAD="1"), 2)[0][0]
    assert np.array_equal(a.view(np.uint32), v.view(np.uint32))
    assert_same(a, run_ort(m, feeds)[0], **tol(F32, int(np.prod(ws[1:]))))


@pytest.mark.parametrize("act,params", ACTS)
@pytest.mark.parametrize("xs,ws,attrs", LANES_CASES[1:3])
@pytest.mark.parametrize("z", [False, True])
def test_lanes_fused(act, params, xs, ws, attrs, z):
    run_case(np.random.default_rng(92), xs, ws, fused_attrs(attrs, act, params), op="FusedConv", z=z)


def test_lanes_weight_as_input_and_repeat_runs():
    """W as a graph input packs per call; a constant W packs once and serves later runs."""
    rng = np.random.default_rng(93)
    xs, ws, attrs = LANES_CASES[0]
    for w_init in (False, True):
        x, w, b = rand(rng, xs), rand(rng, ws, low=-1, high=1), rand(rng, (ws[0],))
        m, feeds = conv_model(x, w, b, attrs, w_init=w_init)
        want = run_ort(m, feeds)[0]
        s = Session(m.SerializeToString(), threads=2)
        for _ in range(3):
            assert_same(s.run(None, feeds)[0], want, **tol(F32, int(np.prod(ws[1:]))))


# MobileNetV3's expansions and projections on 7x7 and 14x14 maps, as graphs (Conv [-> Add z]
# [-> activation]) that kiln fuses: the channel-lane kernel applies the activation to its channel
# vectors before the transpose where no residual comes between, after the store where one does.
# ORT's FusedConv has no HardSwish, so ORT runs the unfused graph.
LANES_ACT_CASES = [
    ((1, 160, 7, 7), (960, 160, 1, 1), {}),
    ((1, 256, 7, 7), (200, 256, 1, 1), {}),                                # a 16-channel last block
    ((1, 480, 14, 14), (112, 480, 1, 1), {}),                              # (batch > 1: span_direct)
    ((2, 64, 13, 11), (48, 64, 3, 3), {"pads": [1, 1, 1, 1]}),           # padded copy, 3x3
]
GRAPH_ACTS = [("HardSwish", {}), ("HardSigmoid", {"alpha": 0.2, "beta": 0.5}), ("Relu", {}),
              ("LeakyRelu", {"alpha": 0.1}), ("Sigmoid", {})]


def conv_act_graph(rng, xs, ws, attrs, act, residual):
    x, w, b = rand(rng, xs), rand(rng, ws, low=-0.5, high=0.5), rand(rng, (ws[0],))
    ys = run_ort(*conv_model(x, w, b, attrs))[0].shape
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"], **attrs)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, xs)]
    feeds, last = {"x": x}, "c"
    if residual:
        feeds["z"] = rand(rng, ys)
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, ys))
        nodes.append(helper.make_node("Add", ["c", "z"], ["s"]))
        last = "s"
    nodes.append(helper.make_node(act[0], [last], ["y"], **act[1]))
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, feeds


@pytest.mark.parametrize("xs,ws,attrs", LANES_ACT_CASES)
@pytest.mark.parametrize("act", GRAPH_ACTS, ids=lambda a: a[0])
@pytest.mark.parametrize("residual", [False, True], ids=["", "z"])
def test_lanes_activation_graph(xs, ws, attrs, act, residual):
    m, feeds = conv_act_graph(np.random.default_rng(94), xs, ws, attrs, act, residual)
    assert lanes_paths(m, feeds, 2) == [lanes_expected(ws)]
    one_node_same_bits(m, feeds, (1, 2, 3, 16))


def one_node_same_bits(m, feeds, thread_counts):
    """Conv, Add and the activation run as one node, match onnxruntime at every thread count and
    give the same bits at all of them."""
    want = run_ort(m, feeds)[0]
    outs = []
    for threads in thread_counts:
        s = Session(m.SerializeToString(), threads=threads)
        outs.append(s.run(None, feeds)[0])
        assert_same(outs[-1], want, what=f"threads {threads}", rtol=1e-4, atol=1e-4)
        assert s.plan_stats()["nodes"] == 1
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])


# 1x1 convolutions at batch > 1 on maps of 32 to 511 positions: the product's tiles run across
# images and store each image's columns in place (conv_gemm.c, span_direct), splitting the stores
# of a tile across a boundary; with K over 256 the partial sums are stored and reloaded split too.
SPAN_DIRECT_CASES = [
    ((4, 300, 6, 9), (50, 300, 1, 1), {}),                # 54 positions, K in two blocks, M % 12
    ((5, 48, 13, 13), (200, 48, 1, 1), {}),               # SqueezeNet's 13x13
    ((2, 33, 8, 4), (17, 33, 1, 1), {}),                  # a map of exactly one column panel
    ((3, 16, 5, 7), (24, 16, 1, 1), {}),                  # 35 positions
    ((3, 64, 7, 7), (96, 16, 1, 1), {"group": 4}),        # grouped
    ((8, 256, 14, 14), (64, 256, 1, 1), {}),              # ResNet's 14x14 at batch 8
]


@pytest.mark.parametrize("xs,ws,attrs", SPAN_DIRECT_CASES)
@pytest.mark.parametrize("act", [("Relu", {}), ("Sigmoid", {}), ("HardSwish", {})], ids=lambda a: a[0])
@pytest.mark.parametrize("residual", [False, True], ids=["", "z"])
def test_span_direct(xs, ws, attrs, act, residual):
    m, feeds = conv_act_graph(np.random.default_rng(95), xs, ws, attrs, act, residual)
    assert lanes_paths(m, feeds, 2) == ["gemm-packed-linear"]
    one_node_same_bits(m, feeds, (1, 2, 3))


@pytest.mark.parametrize("xs,ws,attrs", SPAN_DIRECT_CASES[:3])
@pytest.mark.parametrize("w_init", [True, False])
@pytest.mark.parametrize("bias", [True, False])
def test_span_direct_plain(xs, ws, attrs, w_init, bias):
    rng = np.random.default_rng(96)
    x, w = rand(rng, xs), rand(rng, ws, low=-1, high=1)
    b = rand(rng, (ws[0],)) if bias else None
    m, feeds = conv_model(x, w, b, attrs, w_init=w_init)
    for threads in (1, 2):
        check(m, feeds, threads=threads, **tol(F32, int(np.prod(ws[1:]))))


# ---- separable MaxPool / AveragePool ----

SEP_POOL_CASES = [
    ((2, 3, 56, 56), {"kernel_shape": [2, 2], "strides": [2, 2]}),        # DenseNet's transitions
    ((1, 4, 37, 75), {"kernel_shape": [2, 2], "strides": [2, 2]}),        # odd sizes, tails
    ((1, 3, 41, 53), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}),     # stride 1
    ((2, 2, 111, 111), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),
    ((1, 3, 40, 70), {"kernel_shape": [3, 5], "strides": [3, 2], "pads": [1, 2, 2, 2]}),
    ((2, 3, 90), {"kernel_shape": [4], "strides": [2], "pads": [1, 2]}),  # 1-D
]


@pytest.mark.parametrize("xs,attrs", SEP_POOL_CASES)
@pytest.mark.parametrize("op,cip", [("MaxPool", 0), ("AveragePool", 0), ("AveragePool", 1)])
def test_separable_pool(xs, attrs, op, cip):
    x = rand(np.random.default_rng(94), xs)
    a = dict(attrs, count_include_pad=cip) if op == "AveragePool" else attrs
    check(node_model(op, [("x", x)], ["y"], a), {"x": x}, **(dict(rtol=0, atol=0) if op == "MaxPool" else dict(rtol=1e-5, atol=1e-6)))


@pytest.mark.parametrize("xs,attrs", SEP_POOL_CASES[1:])
def test_separable_maxpool_nan(xs, attrs):
    """NaN and signed zeros: the separable path gives what the general (Indices) path gives."""
    rng = np.random.default_rng(95)
    x = rand(rng, xs)
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 7), replace=False)] = np.nan
    flat[rng.choice(flat.size, size=max(1, flat.size // 9), replace=False)] = -0.0
    fast = run_kiln(node_model("MaxPool", [("x", x)], ["y"], attrs), {"x": x})[0]
    general = run_kiln(node_model("MaxPool", [("x", x)], ["y", ("i", np.int64)], attrs), {"x": x})[0]
    assert np.isnan(fast).any() and not np.isnan(fast).all()
    assert np.array_equal(np.isnan(fast), np.isnan(general))
    assert np.array_equal(np.signbit(np.nan_to_num(fast)), np.signbit(np.nan_to_num(general)))
    assert np.array_equal(np.nan_to_num(fast), np.nan_to_num(general))


# ---- direct rows: a last chunk of 16 or fewer outputs on the 16-wide kernels ----

ROWS_TAIL_CASES = [
    # (x, w, attrs): strided rows of 20 or more outputs go lane by output row (direct-rows)
    ((1, 3, 21, 80), (20, 3, 7, 7), {"strides": [2, 2], "pads": [3, 3, 3, 3]}),  # 40 = 32 + 8
    ((3, 5, 16, 96), (28, 5, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}),   # 48 = 32 + 16
    ((2, 4, 12, 48), (9, 4, 3, 3), {"strides": [2, 2], "pads": [0, 1, 1, 0]}),    # 24: one chunk
    ((2, 6, 9, 70), (16, 3, 3, 5), {"strides": [2, 2], "group": 2, "pads": [1, 2, 1, 2]}),  # 35
]


@pytest.mark.parametrize("xs,ws,attrs", ROWS_TAIL_CASES)
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_tail(xs, ws, attrs, bias, threads):
    rng = np.random.default_rng(95)
    x, w = rand(rng, xs), rand(rng, ws, low=-1, high=1)
    b = rand(rng, (ws[0],)) if bias else None
    m, feeds = conv_model(x, w, b, attrs)
    paths = lanes_paths(m, feeds, threads)
    assert len(paths) == 1 and paths[0].startswith(on_this_cpu("direct-rows")), paths
    check(m, feeds, threads=threads, **tol(F32, int(np.prod(ws[1:]))))


@pytest.mark.parametrize("act,params", [("Relu", None), ("LeakyRelu", [0.1]), ("Clip", [-0.5, 0.6])])
@pytest.mark.parametrize("xs,ws,attrs", ROWS_TAIL_CASES[:2])
@pytest.mark.parametrize("z", [False, True])
def test_rows_tail_fused(act, params, xs, ws, attrs, z):
    run_case(np.random.default_rng(96), xs, ws, fused_attrs(attrs, act, params), op="FusedConv", z=z)


# ---- MaxPool, windows 2 or 3 wide at horizontal stride 2 (pool.c, plane_s2_f32) ----

S2_POOL_CASES = [
    ((2, 3, 111, 111), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),  # SqueezeNet
    ((1, 2, 67, 67), {"kernel_shape": [3, 3], "strides": [2, 2]}),             # 33 outputs: tail of 1
    ((2, 2, 65, 65), {"kernel_shape": [3, 3], "strides": [2, 2]}),             # 32: a full last chunk
    ((1, 3, 33, 34), {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}),  # 16, ceil past W
    ((1, 2, 112, 112), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]}),
    ((1, 2, 41, 70), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [0, 2, 1, 2], "ceil_mode": 1}),
    ((2, 3, 56, 57), {"kernel_shape": [2, 2], "strides": [2, 2]}),             # kw 2, odd width
    ((1, 2, 64, 64), {"kernel_shape": [2, 2], "strides": [2, 2], "pads": [0, 1, 0, 1]}),
    ((1, 2, 31, 40), {"kernel_shape": [5, 3], "strides": [3, 2], "pads": [2, 1, 2, 1], "ceil_mode": 1}),
    ((1, 2, 20, 35), {"kernel_shape": [1, 3], "strides": [1, 2]}),
    ((1, 2, 30, 49), {"kernel_shape": [8, 2], "strides": [1, 2], "pads": [3, 0, 4, 1]}),  # 8 rows
    ((1, 2, 30, 49), {"kernel_shape": [9, 3], "strides": [2, 2]}),             # 9 rows: separable path
    ((1, 2, 30, 31), {"kernel_shape": [3, 3], "strides": [2, 2], "dilations": [2, 2]}),  # general path
    ((1, 2, 7, 3), {"kernel_shape": [3, 3], "strides": [2, 2]}),               # one output
    ((1, 2, 6, 4), {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1}),
    ((3, 2, 90), {"kernel_shape": [3], "strides": [2], "pads": [1, 1]}),       # 1-D
    ((3, 2, 91), {"kernel_shape": [2], "strides": [2], "ceil_mode": 1}),
]


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("xs,attrs", S2_POOL_CASES)
def test_maxpool_stride2_rows(xs, attrs, threads):
    x = rand(np.random.default_rng(96), xs)
    check(node_model("MaxPool", [("x", x)], ["y"], attrs), {"x": x}, rtol=0, atol=0, threads=threads)


def nan_zero_input(rng, xs):
    """Numbers with many +0 (as after a Relu, whole windows of zeros), some -0 and some NaN."""
    x = rand(rng, xs)
    x[x < 0.3] = 0.0
    flat = x.reshape(-1)
    flat[rng.choice(flat.size, size=max(1, flat.size // 7), replace=False)] = -0.0
    flat[rng.choice(flat.size, size=max(1, flat.size // 11), replace=False)] = np.nan
    return x


@pytest.mark.parametrize("xs,attrs", S2_POOL_CASES)
def test_maxpool_stride2_rows_nan_zeros(xs, attrs):
    """NaN and zeros of both signs (as after a Relu, many windows all zero): the same answer as the
    general (Indices) path, sign of zero included."""
    x = nan_zero_input(np.random.default_rng(97), xs)
    fast = run_kiln(node_model("MaxPool", [("x", x)], ["y"], attrs), {"x": x})[0]
    general = run_kiln(node_model("MaxPool", [("x", x)], ["y", ("i", np.int64)], attrs), {"x": x})[0]
    assert np.isnan(fast).any() and not np.isnan(fast).all()
    assert np.array_equal(np.isnan(fast), np.isnan(general))
    assert np.array_equal(np.signbit(np.nan_to_num(fast)), np.signbit(np.nan_to_num(general)))
    assert np.array_equal(np.nan_to_num(fast), np.nan_to_num(general))


def test_maxpool_stride2_rows_after_relu():
    """Relu then MaxPool 3x3/2 (SqueezeNet's head) at batch 1 and 4, against onnxruntime."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 5, 37, 53])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    rng = np.random.default_rng(98)
    for n in (1, 4):
        x = rand(rng, (n, 5, 37, 53))
        for threads in (1, 2):
            check(m, {"x": x}, rtol=0, atol=0, threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_maxpool_stride2_rows_prefetch(threads):
    """An input over 8 MB (rows are prefetched ahead, up to past its end): SqueezeNet's first pool
    at batch 4."""
    x = rand(np.random.default_rng(99), (4, 64, 111, 111))
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}
    check(node_model("MaxPool", [("x", x)], ["y"], attrs), {"x": x}, rtol=0, atol=0, threads=threads)


@pytest.mark.parametrize("xs,attrs", S2_POOL_CASES[:9])
def test_maxpool_stride2_rows_same_bits_across_paths(xs, attrs):
    """NaN, both zeros and numbers through two stride-2 row paths that must agree bit for bit: on
    an AVX-512 CPU its plane_s2 against the AVX2 tier's (KILN_NO_AVX512=1); on an AVX2 CPU the
    8-lane plane_s2 against the separable AVX2 path (KILN_NO_POOL_S2=1)."""
    x = nan_zero_input(np.random.default_rng(101), xs)
    m, feeds = node_model("MaxPool", [("x", x)], ["y"], attrs), {"x": x}
    other = {"KILN_NO_AVX512": "1"} if HAS_AVX512 else {"KILN_NO_POOL_S2": "1"}
    a = run_in_child(m, feeds, {}, 2)[0][0]
    b = run_in_child(m, feeds, other, 2)[0][0]
    assert np.isnan(a).any() and not np.isnan(a).all()
    assert np.array_equal(a.view(np.uint32), b.view(np.uint32))


# ---- the AVX-512 and AVX2 tiers give the same bits ----
# Both tiers sum each output of a direct or channel-lane tile with the same FMA chain in the same
# tap order (docs/design.md, "Instruction sets"), so an AVX-512 machine must get identical outputs
# with KILN_NO_AVX512=1. Only a CPU with both tiers can compare them (the GPU machine's
# Sapphire Rapids, scripts/gpu/cpu_isa_tests.sh).

@pytest.mark.skipif(not HAS_AVX512, reason="needs a CPU with both the AVX-512 and the AVX2 tier")
# (not LANES_CASES[2], a 1x1: the AVX2 tier sends 1x1 convolutions to the product, not the lanes)
@pytest.mark.parametrize("xs,ws,attrs", LANES_CASES[:2] + LANES_CASES[3:5] + [((2, 16, 40, 40), (20, 16, 3, 3), {"pads": [1, 1, 1, 1]}),
                                                         ((1, 24, 30, 61), (13, 24, 3, 3), {"strides": [1, 2]})])
def test_tiers_same_bits(xs, ws, attrs):
    same_bits_with(np.random.default_rng(97), xs, ws, attrs, {"KILN_NO_AVX512": "1"})
