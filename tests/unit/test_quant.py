"""QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear, QLinearMatMul, QLinearConv against
onnxruntime; QLinearMatMul and QLinearConv against exact numpy (tests/int8_oracle.py) first, and
onnxruntime only where its integer products are exact (its AVX2 u8 x s8 kernels saturate pairs of
products at int16 on x86 CPUs without VNNI). Types numpy cannot hold (int4, float8) are checked through a Quantize -> Dequantize
round trip, so the compared outputs are float."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import check, node_model, rand, run_kiln  # noqa: E402
from int8_oracle import check_int8  # noqa: E402

RNG = np.random.default_rng(1234)


def qrange(dt):
    info = np.iinfo(dt)
    return info.min, info.max


@pytest.mark.parametrize("opset", [10, 13, 19, 21])
@pytest.mark.parametrize("qt", [np.uint8, np.int8])
@pytest.mark.parametrize("shape", [(7,), (2, 3, 5), (1, 4, 33, 17)])
def test_quantize_per_tensor(opset, qt, shape):
    x = rand(RNG, shape, np.float32, -30, 30)
    lo, hi = qrange(qt)
    zp = np.array(RNG.integers(lo // 2, hi // 2), dtype=qt)
    sc = np.array(0.13, dtype=np.float32)
    m = node_model("QuantizeLinear", [("x", x), ("s", sc), ("z", zp)], ["y"], opset=opset)
    check(m, {"x": x, "s": sc, "z": zp})


def test_quantize_default_zero_point_and_ties():
    # halves exercise round-half-to-even; out-of-range values saturate
    x = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 1000.0, -1000.0, 3.49, 7.0], dtype=np.float32)
    sc = np.array(1.0, dtype=np.float32)
    m = node_model("QuantizeLinear", [("x", x), ("s", sc)], ["y"], opset=13)
    got = check(m, {"x": x, "s": sc})[0]
    assert got.dtype == np.uint8 and got[0] == 0 and got[1] == 2 and got[2] == 2 and got[5] == 255


@pytest.mark.parametrize("qt", [np.uint16, np.int16])
def test_quantize_16bit(qt):
    x = rand(RNG, (3, 40), np.float32, -3000, 3000)
    zp = np.array(7, dtype=qt)
    sc = np.array(0.37, dtype=np.float32)
    m = node_model("QuantizeLinear", [("x", x), ("s", sc), ("z", zp)], ["y"], opset=21)
    check(m, {"x": x, "s": sc, "z": zp})


@pytest.mark.parametrize("axis", [0, 1, -1, 2])
@pytest.mark.parametrize("opset", [13, 21])
def test_quantize_per_axis(axis, opset):
    x = rand(RNG, (3, 4, 5), np.float32, -10, 10)
    n = x.shape[axis]
    sc = RNG.uniform(0.05, 0.3, size=n).astype(np.float32)
    zp = RNG.integers(-20, 20, size=n).astype(np.int8)
    m = node_model("QuantizeLinear", [("x", x), ("s", sc), ("z", zp)], ["y"],
                   attrs={"axis": axis}, opset=opset)
    check(m, {"x": x, "s": sc, "z": zp})


@pytest.mark.parametrize("shape,axis,block", [((6, 8), 1, 2), ((6, 8), 0, 3), ((2, 7, 3), 1, 3),
                                              ((4, 10), 1, 4)])
def test_quantize_blocked(shape, axis, block):
    x = rand(RNG, shape, np.float32, -10, 10)
    sshape = list(shape)
    sshape[axis] = -(-shape[axis] // block)
    sc = RNG.uniform(0.05, 0.3, size=sshape).astype(np.float32)
    zp = RNG.integers(0, 50, size=sshape).astype(np.uint8)
    m = node_model("QuantizeLinear", [("x", x), ("s", sc), ("z", zp)], ["y"],
                   attrs={"axis": axis, "block_size": block}, opset=21)
    check(m, {"x": x, "s": sc, "z": zp})
    # and back
    q = run_kiln(m, {"x": x, "s": sc, "z": zp})[0]
    m2 = node_model("DequantizeLinear", [("q", q), ("s", sc), ("z", zp)], ["y"],
                    attrs={"axis": axis, "block_size": block}, opset=21)
    check(m2, {"q": q, "s": sc, "z": zp})


def test_quantize_output_dtype_attr():
    x = rand(RNG, (3, 4), np.float32, -100, 100)
    sc = np.array(0.5, dtype=np.float32)
    m = node_model("QuantizeLinear", [("x", x), ("s", sc)], ["y"],
                   attrs={"output_dtype": TensorProto.INT16}, opset=21)
    got = check(m, {"x": x, "s": sc})[0]
    assert got.dtype == np.int16


def test_quantize_float16_input():
    x = rand(RNG, (4, 9), np.float16, -10, 10)
    sc = np.array(0.07, dtype=np.float16)
    zp = np.array(3, dtype=np.int8)
    m = node_model("QuantizeLinear", [("x", x), ("s", sc), ("z", zp)], ["y"], opset=19)
    check(m, {"x": x, "s": sc, "z": zp})


def roundtrip_model(qtype, x_shape, s_shape, attrs, opset=21, with_zp=True, sat=None):
    """x -> QuantizeLinear(qtype) -> DequantizeLinear -> y (float)."""
    qattrs = dict(attrs)
    if sat is not None:
        qattrs["saturate"] = sat
    inits = []
    q_in = ["x", "s"]
    if with_zp:
        inits.append(helper.make_tensor("z", qtype, s_shape, [0] * int(np.prod(s_shape or [1]))))
        q_in.append("z")
    nodes = [helper.make_node("QuantizeLinear", q_in, ["q"], **qattrs),
             helper.make_node("DequantizeLinear", ["q"] + q_in[1:], ["y"], **attrs)]
    g = helper.make_graph(nodes, "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, x_shape),
                           helper.make_tensor_value_info("s", TensorProto.FLOAT, s_shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


@pytest.mark.parametrize("qtype", [TensorProto.INT4, TensorProto.UINT4])
@pytest.mark.parametrize("shape", [(5,), (3, 7), (2, 3, 5)])
def test_int4_roundtrip(qtype, shape):
    x = rand(RNG, shape, np.float32, -5, 12)
    sc = np.array(0.9, dtype=np.float32)
    m = roundtrip_model(qtype, list(shape), [], {})
    check(m, {"x": x, "s": sc})


def test_int4_per_axis_roundtrip():
    x = rand(RNG, (3, 5), np.float32, -5, 5)
    sc = RNG.uniform(0.3, 1.0, size=3).astype(np.float32)
    m = roundtrip_model(TensorProto.INT4, [3, 5], [3], {"axis": 0})
    check(m, {"x": x, "s": sc})


def test_int4_blocked_roundtrip():
    x = rand(RNG, (3, 7), np.float32, -5, 5)
    sc = RNG.uniform(0.3, 1.0, size=(3, 2)).astype(np.float32)
    m = roundtrip_model(TensorProto.INT4, [3, 7], [3, 2], {"axis": 1, "block_size": 4})
    check(m, {"x": x, "s": sc})


F8_MAX = {TensorProto.FLOAT8E4M3FN: 448.0, TensorProto.FLOAT8E5M2: 57344.0,
          TensorProto.FLOAT8E4M3FNUZ: 240.0, TensorProto.FLOAT8E5M2FNUZ: 57344.0}


@pytest.mark.parametrize("qtype", list(F8_MAX))
@pytest.mark.parametrize("sat", [1, 0])
def test_float8_roundtrip(qtype, sat):
    x = rand(RNG, (4, 30), np.float32, -600, 600)
    x[0, :4] = [1e6, -1e6, 0.001, -0.3]
    if not sat:  # onnxruntime's overflow handling differs from the ONNX definition; see below
        x = np.clip(x, -F8_MAX[qtype] / 2, F8_MAX[qtype] / 2)  # scale is 0.5
    sc = np.array(0.5, dtype=np.float32)
    m = roundtrip_model(qtype, [4, 30], [], {}, opset=19, sat=sat)
    check(m, {"x": x, "s": sc})


@pytest.mark.parametrize("qtype,npt", [(TensorProto.FLOAT8E4M3FN, "float8_e4m3fn"),
                                       (TensorProto.FLOAT8E5M2, "float8_e5m2"),
                                       (TensorProto.FLOAT8E4M3FNUZ, "float8_e4m3fnuz"),
                                       (TensorProto.FLOAT8E5M2FNUZ, "float8_e5m2fnuz")])
def test_float8_no_saturate_overflow_vs_ml_dtypes(qtype, npt):
    # ONNX: without saturation, values rounding past the largest finite value become inf (E5M2)
    # or NaN; the reference implementation uses ml_dtypes' casts, which do exactly that.
    import ml_dtypes
    x = np.concatenate([np.linspace(-70000, 70000, 4001), np.linspace(-600, 600, 2401),
                        [np.inf, -np.inf, 1e-9, -1e-9]]).astype(np.float32)
    sc = np.array(1.0, dtype=np.float32)
    m = roundtrip_model(qtype, [x.size], [], {}, opset=19, sat=0)
    got = run_kiln(m, {"x": x, "s": sc})[0]
    want = x.astype(getattr(ml_dtypes, npt)).astype(np.float32)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("opset", [10, 13, 21])
@pytest.mark.parametrize("qt", [np.uint8, np.int8, np.int32])
def test_dequantize_per_tensor(opset, qt):
    x = rand(RNG, (3, 17), qt, -100, 100) if qt != np.uint8 else \
        RNG.integers(0, 256, size=(3, 17)).astype(np.uint8)
    sc = np.array(0.021, dtype=np.float32)
    feeds = {"x": x, "s": sc}
    ins = [("x", x), ("s", sc)]
    if qt != np.int32:
        feeds["z"] = np.array(5, dtype=qt)
        ins.append(("z", feeds["z"]))
    m = node_model("DequantizeLinear", ins, ["y"], opset=opset)
    check(m, feeds)


@pytest.mark.parametrize("qt", [np.uint16, np.int16])
def test_dequantize_16bit(qt):
    x = RNG.integers(np.iinfo(qt).min, np.iinfo(qt).max, size=(5, 6)).astype(qt)
    sc = np.array(0.3, dtype=np.float32)
    zp = np.array(11, dtype=qt)
    m = node_model("DequantizeLinear", [("x", x), ("s", sc), ("z", zp)], ["y"], opset=21)
    check(m, {"x": x, "s": sc, "z": zp})


@pytest.mark.parametrize("axis", [0, 1, -2])
def test_dequantize_per_axis(axis):
    x = RNG.integers(0, 256, size=(2, 3, 4)).astype(np.uint8)
    n = x.shape[axis]
    sc = RNG.uniform(0.01, 0.3, size=n).astype(np.float32)
    zp = RNG.integers(0, 255, size=n).astype(np.uint8)
    m = node_model("DequantizeLinear", [("x", x), ("s", sc), ("z", zp)], ["y"],
                   attrs={"axis": axis}, opset=13)
    check(m, {"x": x, "s": sc, "z": zp})


def test_dequantize_float16_scale():
    x = RNG.integers(-128, 128, size=(6, 5)).astype(np.int8)
    sc = np.array(0.0123, dtype=np.float16)
    zp = np.array(-3, dtype=np.int8)
    m = node_model("DequantizeLinear", [("x", x), ("s", sc), ("z", zp)], ["y"], opset=19)
    check(m, {"x": x, "s": sc, "z": zp}, rtol=1e-3, atol=1e-3)


def test_quantize_bad_scale_shape():
    x = rand(RNG, (3, 4), np.float32)
    sc = RNG.uniform(0.1, 1, size=5).astype(np.float32)
    m = node_model("QuantizeLinear", [("x", x), ("s", sc)], ["y"], attrs={"axis": 1}, opset=13)
    with pytest.raises(Exception):
        run_kiln(m, {"x": x, "s": sc})


@pytest.mark.parametrize("shape", [(6,), (3, 4), (2, 50, 70)])
def test_dynamic_quantize(shape):
    x = rand(RNG, shape, np.float32, -3, 7)
    m = node_model("DynamicQuantizeLinear", [("x", x)], ["y", "s", "z"], opset=11)
    check(m, {"x": x})


def test_dynamic_quantize_positive_only_and_large():
    x = rand(RNG, (300, 700), np.float32, 0.5, 9)  # range widened to include 0
    m = node_model("DynamicQuantizeLinear", [("x", x)], ["y", "s", "z"], opset=11)
    check(m, {"x": x})


def qmm_inputs(qt, a_shape, b_shape, per_col=False, sdt=np.float32):
    lo, hi = (0, 255) if qt == np.uint8 else (-128, 127)
    a = RNG.integers(lo, hi + 1, size=a_shape).astype(qt)
    b = RNG.integers(lo, hi + 1, size=b_shape).astype(qt)
    n = b_shape[-1]
    feeds = {
        "a": a, "as": np.array([0.02], dtype=sdt), "az": np.array([RNG.integers(lo, hi)], dtype=qt),
        "b": b,
        "bs": (RNG.uniform(0.01, 0.03, size=n) if per_col else np.array([0.025])).astype(sdt),
        "bz": (np.array([RNG.integers(lo, hi)]) if True else None).astype(qt),
        "ys": np.array([RNG.uniform(2, 5)], dtype=sdt),
        "yz": np.array([RNG.integers(lo, hi)], dtype=qt),
    }
    return feeds


@pytest.mark.parametrize("opset", [10, 21])
@pytest.mark.parametrize("qt", [np.uint8, np.int8])
@pytest.mark.parametrize("a_shape,b_shape", [((2, 4), (4, 3)), ((2, 5, 16), (2, 16, 7)),
                                             ((3, 1, 8, 9), (4, 9, 5)), ((33, 64), (64, 40))])
def test_qlinear_matmul(opset, qt, a_shape, b_shape):
    feeds = qmm_inputs(qt, a_shape, b_shape)
    m = node_model("QLinearMatMul", [(k, v) for k, v in feeds.items()], ["y"], opset=opset)
    check_int8(m, feeds)


def test_qlinear_matmul_per_column():
    feeds = qmm_inputs(np.uint8, (6, 8), (8, 5), per_col=True)
    m = node_model("QLinearMatMul", [(k, v) for k, v in feeds.items()], ["y"], opset=10)
    check_int8(m, feeds)


def test_qlinear_matmul_float16_scales():
    feeds = qmm_inputs(np.int8, (2, 4, 6), (2, 6, 3), sdt=np.float16)
    m = node_model("QLinearMatMul", [(k, v) for k, v in feeds.items()], ["y"], opset=21)
    check_int8(m, feeds)


def qconv_feeds(qt, wt, x_shape, w_shape, per_channel=False, bias=True):
    xlo, xhi = (0, 255) if qt == np.uint8 else (-128, 127)
    wlo, whi = (0, 255) if wt == np.uint8 else (-128, 127)
    m = w_shape[0]
    feeds = {
        "x": RNG.integers(xlo, xhi + 1, size=x_shape).astype(qt),
        "xs": np.array(0.05, dtype=np.float32),
        "xz": np.array(RNG.integers(xlo, xhi), dtype=qt),
        "w": RNG.integers(wlo, whi + 1, size=w_shape).astype(wt),
        "ws": (RNG.uniform(0.005, 0.02, size=m) if per_channel else np.array(0.01)).astype(np.float32),
        "wz": (np.zeros(m) if per_channel else np.array(0 if wt == np.int8 else 128)).astype(wt),
        "ys": np.array(RNG.uniform(0.5, 2), dtype=np.float32),
        "yz": np.array(RNG.integers(xlo, xhi), dtype=qt),
    }
    if bias:
        feeds["b"] = RNG.integers(-2000, 2000, size=m).astype(np.int32)
    return feeds


@pytest.mark.parametrize("qt,wt", [(np.uint8, np.uint8), (np.uint8, np.int8), (np.int8, np.int8)])
@pytest.mark.parametrize("attrs", [{}, {"pads": [1, 1, 1, 1]}, {"strides": [2, 2], "pads": [1, 0, 2, 1]},
                                   {"dilations": [2, 1]}, {"auto_pad": "SAME_UPPER"},
                                   {"auto_pad": "SAME_LOWER", "strides": [2, 2]}])
def test_qlinear_conv_2d(qt, wt, attrs):
    feeds = qconv_feeds(qt, wt, (2, 3, 9, 8), (4, 3, 3, 3))
    m = node_model("QLinearConv", [(k, v) for k, v in feeds.items()], ["y"], attrs=attrs, opset=10)
    check_int8(m, feeds)


def test_qlinear_conv_group_per_channel():
    feeds = qconv_feeds(np.uint8, np.int8, (1, 4, 7, 7), (6, 2, 3, 3), per_channel=True)
    m = node_model("QLinearConv", [(k, v) for k, v in feeds.items()], ["y"],
                   attrs={"group": 2, "pads": [1, 1, 1, 1]}, opset=10)
    check_int8(m, feeds)


def test_qlinear_conv_depthwise_no_bias():
    feeds = qconv_feeds(np.uint8, np.uint8, (2, 5, 6, 6), (5, 1, 3, 3), bias=False)
    m = node_model("QLinearConv", [(k, v) for k, v in feeds.items()], ["y"],
                   attrs={"group": 5}, opset=10)
    check_int8(m, feeds)


@pytest.mark.parametrize("x_shape,w_shape,attrs", [((1, 2, 11), (3, 2, 4), {"strides": [2]}),
                                                   ((1, 2, 4, 5, 6), (2, 2, 2, 3, 2), {"pads": [1] * 6})])
def test_qlinear_conv_1d_3d(x_shape, w_shape, attrs):
    feeds = qconv_feeds(np.uint8, np.uint8, x_shape, w_shape)
    m = node_model("QLinearConv", [(k, v) for k, v in feeds.items()], ["y"], attrs=attrs, opset=10)
    check_int8(m, feeds)


def test_qlinear_conv_bad_channels():
    feeds = qconv_feeds(np.uint8, np.uint8, (1, 3, 5, 5), (2, 2, 3, 3))
    m = node_model("QLinearConv", [(k, v) for k, v in feeds.items()], ["y"], opset=10)
    with pytest.raises(Exception):
        run_kiln(m, feeds)
