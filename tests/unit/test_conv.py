"""Conv, ConvTranspose, ConvInteger, DeformConv and com.microsoft FusedConv against onnxruntime
(onnx's reference evaluator for float64, which onnxruntime's CPU kernels lack)."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, node_model, rand, run_kiln, run_ort  # noqa: E402
from int8_oracle import check_int8  # noqa: E402  (exact numpy oracle for 8-bit products)

F32, F64, F16 = np.float32, np.float64, np.float16


def tol(dt):
    if dt == F16:
        return dict(rtol=2e-2, atol=5e-2)
    if dt == F32:
        return dict(rtol=1e-4, atol=1e-4)
    return dict(rtol=1e-9, atol=1e-9)


def conv_inputs(rng, xs, ws, bias, dt, cin_w_dim=1):
    x, w = rand(rng, xs, dt), rand(rng, ws, dt, low=-1, high=1)
    inputs = [("x", x), ("w", w)]
    if bias:
        nb = ws[0] if cin_w_dim == 1 else None
        inputs.append(("b", rand(rng, (nb,), dt)))
    return inputs


def compare(op, inputs, attrs, dt, opset=18, threads=2, domain=""):
    m = node_model(op, inputs, ["y"], attrs, opset=opset, domain=domain)
    feeds = {k: v for k, v in inputs if k}
    if dt == F64:
        got = run_kiln(m, feeds, threads=threads)[0]
        try:
            want = ReferenceEvaluator(m).run(None, feeds)[0]
        except ValueError:  # the reference's grouped ConvTranspose breaks on some shapes
            f32 = node_model(op, [(k, v.astype(F32) if v is not None else v) for k, v in inputs],
                             ["y"], attrs, opset=opset, domain=domain)
            want = run_ort(f32, {k: v.astype(F32) for k, v in feeds.items()})[0].astype(F64)
            assert_same(got, want, rtol=1e-4, atol=1e-4)
            return
        assert_same(got, want, **tol(dt))
    else:
        # direct sums (3x3 stride-1 cases with enough tiles would take Winograd, whose error
        # bounds test_conv_winograd.py holds)
        check(m, feeds, threads=threads, winograd=False, **tol(dt))


# ---------------- Conv ----------------

CONV_CASES = [
    # (x shape, w shape, attrs, bias)
    ((1, 3, 10, 10), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, True),
    ((2, 3, 9, 11), (5, 3, 3, 3), {}, True),
    ((1, 4, 12, 12), (6, 4, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, False),
    ((1, 4, 12, 13), (6, 4, 3, 2), {"dilations": [2, 3], "pads": [2, 0, 1, 3]}, True),
    ((1, 6, 9, 9), (8, 3, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}, True),
    ((1, 8, 11, 11), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}, True),      # depthwise
    ((2, 8, 12, 12), (8, 1, 3, 3), {"group": 8, "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ((1, 6, 15, 17), (6, 1, 5, 5), {"group": 6, "strides": [2, 2], "pads": [2, 2, 2, 2]}, True),
    ((1, 4, 10, 10), (8, 1, 3, 3), {"group": 4, "pads": [1, 1, 1, 1]}, True),      # multiplier 2
    ((1, 5, 9, 40), (5, 1, 3, 3), {"group": 5, "dilations": [2, 2], "pads": [2, 2, 2, 2]}, False),
    ((1, 3, 8, 9), (3, 1, 3, 4), {"group": 3, "strides": [3, 2], "pads": [0, 1, 2, 3]}, True),
    ((2, 20, 10, 12), (20, 1, 3, 3), {"group": 20, "dilations": [2, 2], "pads": [2, 2, 2, 2]}, True),
    ((1, 40, 7, 7), (40, 1, 5, 5), {"group": 40, "pads": [2, 2, 2, 2]}, True),
    ((1, 8, 7, 7), (16, 8, 1, 1), {}, True),                                        # pointwise
    ((2, 16, 20, 20), (24, 16, 1, 1), {}, True),
    ((1, 8, 9, 9), (4, 8, 1, 1), {"strides": [2, 2]}, True),
    ((1, 3, 10, 10), (4, 3, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}, True),
    ((1, 3, 10, 11), (4, 3, 4, 4), {"auto_pad": "SAME_LOWER", "strides": [3, 2]}, True),
    ((1, 3, 10, 10), (4, 3, 3, 3), {"auto_pad": "VALID", "strides": [2, 2]}, True),
    ((1, 3, 10, 10), (4, 3, 3, 3), {"kernel_shape": [3, 3], "pads": [1, 1, 1, 1]}, True),
    ((1, 3, 20), (4, 3, 5), {"pads": [2, 1], "strides": [2]}, True),               # 1-D
    ((2, 4, 17), (4, 1, 3), {"group": 4, "pads": [1, 1]}, True),                    # 1-D depthwise
    ((1, 2, 6, 7, 8), (3, 2, 3, 3, 3), {"pads": [1, 0, 1, 1, 2, 0]}, True),         # 3-D
    ((1, 4, 5, 6, 7), (4, 2, 2, 3, 2), {"group": 2, "strides": [2, 1, 2]}, False),
    ((1, 64, 7, 7), (96, 64, 3, 3), {"pads": [1, 1, 1, 1]}, True),                  # small maps
    ((1, 32, 28, 28), (48, 32, 3, 3), {"pads": [1, 1, 1, 1]}, True),
    ((1, 3, 5, 5), (2, 3, 5, 5), {}, True),                                         # 1x1 output
    # wide rows: the direct (im2col-free) kernel where the CPU has AVX-512
    ((1, 5, 20, 45), (14, 5, 3, 3), {"pads": [1, 1, 1, 1]}, True),
    ((2, 4, 17, 50), (7, 4, 3, 3), {"strides": [2, 2], "pads": [1, 0, 1, 2], "dilations": [2, 1]}, True),
    ((1, 6, 9, 70), (10, 3, 3, 5), {"group": 2, "strides": [1, 3], "pads": [0, 2, 1, 2]}, True),
    ((1, 3, 64), (5, 3, 5), {"strides": [2], "pads": [2, 2]}, False),
    ((1, 2, 12, 90), (25, 2, 2, 2), {"strides": [4, 4]}, True),
    ((2, 3, 20, 61), (13, 3, 3, 3), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ((1, 3, 21, 80), (16, 3, 3, 3), {"strides": [2, 2], "pads": [1, 3, 1, 0]}, True),
    # depthwise on small maps (the 16-channel blocked kernel): partial channel blocks, rows not a
    # multiple of 4, more than 16 taps, strides, dilations, uneven pads
    ((1, 20, 7, 7), (20, 1, 3, 3), {"group": 20, "pads": [1, 1, 1, 1]}, True),
    ((2, 35, 14, 14), (35, 1, 5, 5), {"group": 35, "strides": [2, 2], "pads": [2, 2, 2, 2]}, True),
    ((1, 17, 5, 3), (17, 1, 3, 3), {"group": 17, "pads": [1, 0, 1, 2]}, False),
    ((1, 24, 20, 9), (24, 1, 3, 3), {"group": 24, "pads": [1, 1, 1, 1]}, True),
    ((1, 18, 9, 9), (18, 1, 7, 7), {"group": 18, "pads": [3, 3, 3, 3]}, True),
    ((1, 33, 11, 11), (33, 1, 3, 3), {"group": 33, "dilations": [2, 2], "pads": [2, 2, 2, 2]}, True),
    ((1, 16, 1, 1), (16, 1, 1, 1), {"group": 16}, True),
    # 1x1 convolutions of 1x1 maps (squeeze-excite): matrix-vector products
    ((1, 24, 1, 1), (40, 24, 1, 1), {}, True),
    ((2, 12, 1, 1), (8, 6, 1, 1), {"group": 2}, False),
    ((3, 7, 1), (5, 7, 1), {}, True),
]


@pytest.mark.parametrize("xs,ws,attrs,bias", CONV_CASES)
def test_conv_f32(xs, ws, attrs, bias):
    rng = np.random.default_rng(1)
    compare("Conv", conv_inputs(rng, xs, ws, bias, F32), attrs, F32)


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("idx", [0, 2, 5, 7, 11, 12, 14, 24, 27, 28])
def test_conv_threads(threads, idx):
    xs, ws, attrs, bias = CONV_CASES[idx]
    rng = np.random.default_rng(2)
    compare("Conv", conv_inputs(rng, xs, ws, bias, F32), attrs, F32, threads=threads)


DTYPE_CASES = [
    ((1, 3, 10, 10), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}, True),
    ((1, 6, 9, 9), (8, 3, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}, True),
    ((1, 8, 11, 11), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}, True),
    ((2, 8, 12, 12), (8, 1, 3, 3), {"group": 8, "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ((1, 8, 7, 7), (16, 8, 1, 1), {}, True),
    ((1, 3, 20), (4, 3, 5), {"pads": [2, 1], "strides": [2]}, True),
    ((1, 2, 6, 7, 8), (3, 2, 3, 3, 3), {"pads": [1, 0, 1, 1, 2, 0]}, True),
    ((1, 5, 20, 45), (14, 5, 3, 3), {"pads": [1, 1, 1, 1]}, True),
]


@pytest.mark.parametrize("dt", [F16, F64])
@pytest.mark.parametrize("xs,ws,attrs,bias", DTYPE_CASES)
def test_conv_dtypes(dt, xs, ws, attrs, bias):
    rng = np.random.default_rng(3)
    compare("Conv", conv_inputs(rng, xs, ws, bias, dt), attrs, dt)


@pytest.mark.parametrize("opset", [1, 11, 22])
def test_conv_opsets(opset):
    rng = np.random.default_rng(4)
    compare("Conv", conv_inputs(rng, (1, 4, 8, 8), (4, 2, 3, 3), True, F32),
            {"group": 2, "pads": [1, 0, 1, 0]}, F32, opset=opset)


def test_conv_constant_weight_f16():
    rng = np.random.default_rng(5)
    inputs = conv_inputs(rng, (1, 4, 8, 8), (6, 4, 3, 3), True, F16)
    m = node_model("Conv", inputs, ["y"], {"pads": [1, 1, 1, 1]}, initializers={"w": inputs[1][1]})
    check(m, {"x": inputs[0][1], "b": inputs[2][1]}, **tol(F16))


def test_conv_bf16():
    rng = np.random.default_rng(6)
    x, w, b = rand(rng, (1, 3, 6, 6)), rand(rng, (4, 3, 3, 3), low=-1, high=1), rand(rng, (4,))
    nodes = [helper.make_node("Cast", [n], [n + "c"], to=TensorProto.BFLOAT16) for n in "xwb"]
    nodes += [helper.make_node("Conv", ["xc", "wc", "bc"], ["yc"], pads=[1, 1, 1, 1]),
              helper.make_node("Cast", ["yc"], ["y"], to=TensorProto.FLOAT)]
    vis = [helper.make_tensor_value_info(n, TensorProto.FLOAT, a.shape) for n, a in zip("xwb", (x, w, b))]
    g = helper.make_graph(nodes, "g", vis, [helper.make_empty_tensor_value_info("y")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 22)])
    m.ir_version = 10
    got = run_kiln(m, {"x": x, "w": w, "b": b})[0]
    want = run_ort(node_model("Conv", [("x", x), ("w", w), ("b", b)], ["y"], {"pads": [1, 1, 1, 1]}),
                   {"x": x, "w": w, "b": b})[0]
    np.testing.assert_allclose(got, want, rtol=3e-2, atol=1e-1)


@pytest.mark.parametrize("xs,ws,attrs,msg", [
    ((1, 4, 8, 8), (6, 3, 3, 3), {}, "times group"),
    ((1, 4, 8, 8), (6, 2, 3, 3), {"group": 2}, None),
    ((1, 4, 8, 8), (5, 2, 3, 3), {"group": 2}, "not divisible by group"),
    ((1, 4, 8), (6, 4, 3, 3), {}, "ranks differ"),
    ((4, 8), (6, 4), {}, "rank"),
    ((1, 4, 8, 8), (6, 4, 3, 3), {"kernel_shape": [2, 2]}, "kernel_shape"),
    ((1, 4, 8, 8), (6, 4, 3, 3), {"strides": [1]}, "strides"),
    ((1, 4, 2, 2), (6, 4, 3, 3), {}, "larger than the padded input"),
    ((1, 4, 8, 8), (6, 4, 3, 3), {"group": 0}, "group"),
])
def test_conv_errors(xs, ws, attrs, msg):
    x, w = np.ones(xs, F32), np.ones(ws, F32)
    m = node_model("Conv", [("x", x), ("w", w)], ["y"], attrs)
    for vi in m.graph.input:
        vi.type.tensor_type.ClearField("shape")
    if msg is None:  # a valid grouped conv (control case)
        check(m, {"x": x, "w": w})
        return
    with pytest.raises(Exception, match=msg):
        run_kiln(m, {"x": x, "w": w})


def test_conv_bias_error():
    x, w, b = np.ones((1, 4, 8, 8), F32), np.ones((6, 4, 3, 3), F32), np.ones((5,), F32)
    m = node_model("Conv", [("x", x), ("w", w), ("b", b)], ["y"])
    for vi in m.graph.input:
        vi.type.tensor_type.ClearField("shape")
    with pytest.raises(Exception, match="bias"):
        run_kiln(m, {"x": x, "w": w, "b": b})


# ---------------- FusedConv ----------------

@pytest.mark.parametrize("act,params", [("Relu", None), ("Tanh", None), ("Sigmoid", None),
                                        ("LeakyRelu", [0.2]), ("Clip", [-0.5, 0.7]),
                                        ("HardSigmoid", [0.3, 0.4]), ("", None)])
@pytest.mark.parametrize("group", [1, 4])
def test_fused_conv(act, params, group):
    rng = np.random.default_rng(7)
    inputs = conv_inputs(rng, (1, 4, 9, 9), (4, 4 // group, 3, 3), True, F32)
    attrs = {"pads": [1, 1, 1, 1], "group": group}
    if act:
        attrs["activation"] = act
    if params:
        attrs["activation_params"] = params
    compare("FusedConv", inputs, attrs, F32, domain="com.microsoft")


@pytest.mark.parametrize("hw", [(9, 9), (6, 33)])
@pytest.mark.parametrize("group", [1, 6])
def test_fused_conv_with_z(hw, group):
    rng = np.random.default_rng(8)
    inputs = conv_inputs(rng, (1, 6) + hw, (6, 6 // group, 3, 3), True, F32)
    inputs.append(("z", rand(rng, (1, 6) + hw)))
    compare("FusedConv", inputs, {"pads": [1, 1, 1, 1], "activation": "Relu", "group": group}, F32,
            domain="com.microsoft")


# ---------------- ConvTranspose ----------------

CONVT_CASES = [
    ((1, 3, 5, 5), (3, 4, 3, 3), {}, True),
    ((2, 3, 4, 5), (3, 2, 3, 3), {"strides": [2, 2]}, True),
    ((1, 3, 4, 5), (3, 2, 3, 3), {"strides": [2, 3], "pads": [1, 0, 1, 2]}, False),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_padding": [1, 1]}, True),
    ((1, 3, 4, 4), (3, 2, 2, 3), {"dilations": [2, 2], "strides": [2, 1]}, True),
    ((1, 4, 5, 5), (4, 3, 3, 3), {"group": 2, "strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ((1, 4, 5, 5), (4, 1, 3, 3), {"group": 4, "strides": [2, 2]}, True),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [9, 9]}, True),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [10, 8]}, True),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "output_shape": [6, 7]}, True),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "auto_pad": "SAME_UPPER"}, True),
    ((1, 3, 4, 4), (3, 2, 4, 4), {"strides": [2, 2], "auto_pad": "SAME_LOWER"}, True),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"strides": [2, 2], "auto_pad": "VALID"}, True),
    ((1, 2, 7), (2, 3, 3), {"strides": [2], "pads": [1, 0]}, True),                 # 1-D
    ((1, 2, 3, 4, 3), (2, 2, 2, 3, 2), {"strides": [2, 1, 2]}, True),                # 3-D
    ((1, 16, 8, 8), (16, 8, 4, 4), {"strides": [2, 2], "pads": [1, 1, 1, 1]}, True),
    ((1, 3, 4, 4), (3, 2, 3, 3), {"kernel_shape": [3, 3]}, True),
]


@pytest.mark.parametrize("xs,ws,attrs,bias", CONVT_CASES)
def test_conv_transpose_f32(xs, ws, attrs, bias):
    rng = np.random.default_rng(9)
    x, w = rand(rng, xs), rand(rng, ws, low=-1, high=1)
    inputs = [("x", x), ("w", w)]
    if bias:
        inputs.append(("b", rand(rng, (ws[1] * attrs.get("group", 1),))))
    compare("ConvTranspose", inputs, attrs, F32)


@pytest.mark.parametrize("dt", [F16, F64])
@pytest.mark.parametrize("idx", [1, 3, 5, 12])
def test_conv_transpose_dtypes(dt, idx):
    xs, ws, attrs, bias = CONVT_CASES[idx]
    rng = np.random.default_rng(10)
    x, w = rand(rng, xs, dt), rand(rng, ws, dt, low=-1, high=1)
    inputs = [("x", x), ("w", w), ("b", rand(rng, (ws[1] * attrs.get("group", 1),), dt))]
    compare("ConvTranspose", inputs, attrs, dt)


@pytest.mark.parametrize("opset", [1, 11, 22])
def test_conv_transpose_opsets(opset):
    rng = np.random.default_rng(11)
    x, w = rand(rng, (1, 2, 4, 4)), rand(rng, (2, 3, 3, 3))
    compare("ConvTranspose", [("x", x), ("w", w)], {"strides": [2, 2]}, F32, opset=opset)


def test_conv_transpose_errors():
    x, w = np.ones((1, 3, 4, 4), F32), np.ones((4, 2, 3, 3), F32)
    m = node_model("ConvTranspose", [("x", x), ("w", w)], ["y"])
    for vi in m.graph.input:
        vi.type.tensor_type.ClearField("shape")
    with pytest.raises(Exception, match="dim 0"):
        run_kiln(m, {"x": x, "w": w})


# ---------------- ConvInteger ----------------

@pytest.mark.parametrize("xt,wt", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8),
                                   (np.int8, np.uint8)])
@pytest.mark.parametrize("xs,ws,attrs", [((1, 3, 7, 7), (4, 3, 3, 3), {"pads": [1, 1, 1, 1]}),
                                         ((2, 4, 6, 6), (4, 2, 3, 3), {"group": 2, "strides": [2, 2]}),
                                         ((1, 40, 5, 5), (3, 40, 3, 3), {})])
def test_conv_integer(xt, wt, xs, ws, attrs):
    rng = np.random.default_rng(12)
    xi, wi = np.iinfo(xt), np.iinfo(wt)
    x = rng.integers(xi.min, xi.max + 1, xs).astype(xt)
    w = rng.integers(wi.min, wi.max + 1, ws).astype(wt)
    zx, zw = np.array(rng.integers(xi.min, xi.max + 1), xt), np.array(rng.integers(wi.min, wi.max + 1), wt)
    # against exact int64 numpy sums; onnxruntime too where its products are exact (its AVX2
    # u8 x s8 kernel saturates at int16 on CPUs without VNNI: see tests/int8_oracle.py)
    m = node_model("ConvInteger", [("x", x), ("w", w), ("zx", zx), ("zw", zw)], ["y"], attrs,
                   opset=10, initializers={"zx": zx, "zw": zw})
    check_int8(m, {"x": x, "w": w})
    m = node_model("ConvInteger", [("x", x), ("w", w)], ["y"], attrs, opset=10)
    check_int8(m, {"x": x, "w": w})


# ---------------- DeformConv ----------------

@pytest.mark.parametrize("xs,ws,attrs,og,mask,bias", [
    ((1, 2, 5, 5), (3, 2, 3, 3), {}, 1, False, False),
    ((1, 4, 6, 6), (4, 2, 3, 3), {"group": 2, "pads": [1, 1, 1, 1]}, 2, True, True),
    ((2, 2, 7, 6), (2, 2, 2, 2), {"strides": [2, 2], "dilations": [1, 2]}, 1, True, True),
])
@pytest.mark.parametrize("dt", [F32, F64])
def test_deform_conv(xs, ws, attrs, og, mask, bias, dt):
    rng = np.random.default_rng(13)
    x, w = rand(rng, xs, dt), rand(rng, ws, dt)
    kh, kw = ws[2:]
    s, d, p = attrs.get("strides", [1, 1]), attrs.get("dilations", [1, 1]), attrs.get("pads", [0] * 4)
    oh = (xs[2] + p[0] + p[2] - (d[0] * (kh - 1) + 1)) // s[0] + 1
    ow = (xs[3] + p[1] + p[3] - (d[1] * (kw - 1) + 1)) // s[1] + 1
    off = rand(rng, (xs[0], og * kh * kw * 2, oh, ow), dt, low=-1.5, high=1.5)
    inputs = [("x", x), ("w", w), ("off", off)]
    inputs.append(("b", rand(rng, (ws[0],), dt)) if bias else ("", None))
    if mask:
        inputs.append(("mask", rand(rng, (xs[0], og * kh * kw, oh, ow), dt, low=0, high=1)))
    attrs = dict(attrs, offset_group=og)
    m = node_model("DeformConv", inputs, ["y"], attrs, opset=19)
    feeds = {k: v for k, v in inputs if k}
    want = ReferenceEvaluator(m).run(None, feeds)[0]
    got = run_kiln(m, feeds)[0]
    # the reference samples through GridSample's normalised float coordinates: about 1e-6 off
    assert_same(got, want.astype(dt), rtol=1e-4, atol=1e-5)
    if dt == F32:
        check(m, feeds, **tol(dt))
