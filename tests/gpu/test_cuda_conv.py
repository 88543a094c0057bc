"""The CUDA conv family (src/cuda/ops/conv.c, src/cuda/ops/pool.c, src/cuda/kernels/conv.cu)
against kiln's CPU provider: Conv, com.microsoft FusedConv, ConvTranspose, MaxPool (with Indices),
AveragePool, GlobalAveragePool, GlobalMaxPool, in float32 / float16 / bfloat16.

Skips where the CUDA provider is unavailable (see cuda_diff.py)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_diff import BF16, F16, F32, F64, BF16Array, check, cuda_available, kiln, rand, rng  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

DTYPES = [pytest.param(F32, id="f32"), pytest.param(F16, id="f16"), pytest.param(BF16, id="bf16")]
# cuDNN may pick Winograd/FFT algorithms for float32, accurate to ~1e-5 of the output's range
CONV_TOL = {F32: 1e-4, F16: None, BF16: None}
MS = "com.microsoft"
CT = "ConvTranspose"


def conv_inputs(x_shape, w_shape, dtype, bias=True, bias_len=None):
    """X, W (scaled so outputs stay O(1) whatever the fan-in) and B (bias_len values, default
    W's dim 0: Conv's output channels)."""
    w = rand(w_shape, F32) / np.sqrt(float(np.prod(w_shape[1:])))
    w = BF16Array(w) if dtype == BF16 else np.asarray(w, {F32: np.float32, F16: np.float16}[dtype])
    ins = [("x", rand(x_shape, dtype)), ("w", w)]
    if bias:
        ins.append(("b", rand((bias_len or w_shape[0],), dtype)))
    return ins


def conv_check(x_shape, w_shape, dtype, attrs, bias=True, const_w=False, op="Conv", domain="", extra=()):
    # ConvTranspose's W is [C, M / group, k...]: its bias has M values
    m = w_shape[1] * attrs.get("group", 1) if op == "ConvTranspose" else None
    ins = conv_inputs(x_shape, w_shape, dtype, bias, m) + list(extra)
    const = ("w", "b") if const_w else ()
    return check(op, ins, attrs=attrs, domain=domain, const_inputs=const, rtol=CONV_TOL[dtype])


# ---- Conv ----

RESNET_CASES = [
    # x, w, attrs
    ((2, 3, 224, 224), (64, 3, 7, 7), dict(strides=[2, 2], pads=[3, 3, 3, 3])),  # stem, >2^20 outputs
    ((1, 64, 28, 28), (64, 64, 3, 3), dict(pads=[1, 1, 1, 1])),
    ((2, 32, 14, 14), (64, 32, 1, 1), {}),
    ((2, 64, 15, 15), (128, 64, 1, 1), dict(strides=[2, 2])),
    ((1, 16, 17, 19), (24, 16, 3, 3), dict(strides=[2, 2], pads=[1, 1, 1, 1])),  # odd sizes
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(RESNET_CASES)))
def test_conv_resnet_shapes(dtype, case):
    x, w, attrs = RESNET_CASES[case]
    conv_check(x, w, dtype, attrs, const_w=case % 2 == 0)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_no_bias(dtype):
    conv_check((2, 8, 12, 12), (16, 8, 3, 3), dtype, dict(pads=[1, 1, 1, 1]), bias=False)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("stride", [1, 2])
def test_conv_depthwise(dtype, stride):
    conv_check((2, 32, 19, 19), (32, 1, 3, 3), dtype, dict(group=32, strides=[stride, stride],
                                                           pads=[1, 1, 1, 1]), const_w=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_depthwise_multiplier(dtype):
    conv_check((1, 8, 10, 10), (16, 1, 5, 5), dtype, dict(group=8, pads=[2, 2, 2, 2]))


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_grouped(dtype):
    conv_check((2, 16, 9, 11), (24, 4, 3, 3), dtype, dict(group=4, pads=[1, 0, 1, 0]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dil", [2, 3])
def test_conv_dilated(dtype, dil):
    conv_check((1, 8, 20, 21), (8, 8, 3, 3), dtype, dict(dilations=[dil, dil], pads=[dil] * 4))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("pads", [[0, 1, 1, 2], [2, 0, 0, 1], [1, 1, 0, 0]])
def test_conv_asymmetric_pads(dtype, pads):
    conv_check((2, 6, 13, 10), (8, 6, 3, 4), dtype, dict(pads=pads, strides=[1, 2]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("auto_pad", ["SAME_UPPER", "SAME_LOWER", "VALID"])
@pytest.mark.parametrize("k,s", [(3, 1), (4, 2), (2, 2), (5, 3)])
def test_conv_auto_pad(dtype, auto_pad, k, s):
    conv_check((1, 4, 15, 16), (8, 4, k, k), dtype, dict(auto_pad=auto_pad, strides=[s, s]))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("attrs", [dict(strides=[2], pads=[2, 2]), dict(dilations=[2], pads=[0, 3]),
                                   dict(auto_pad="SAME_UPPER"), dict(group=2)])
def test_conv_1d(dtype, attrs):
    conv_check((2, 8, 50), (16, 8 // attrs.get("group", 1), 5), dtype, attrs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("attrs", [dict(pads=[1] * 6), dict(strides=[2, 1, 2], pads=[0, 1, 1, 1, 0, 2]),
                                   dict(dilations=[1, 2, 1]), dict(group=2, auto_pad="SAME_LOWER")])
def test_conv_3d(dtype, attrs):
    conv_check((1, 4, 8, 10, 12), (8, 4 // attrs.get("group", 1), 3, 3, 3), dtype, attrs)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_empty_batch(dtype):
    conv_check((0, 3, 8, 8), (4, 3, 3, 3), dtype, dict(pads=[1, 1, 1, 1]))


def test_conv_float64_falls_back():
    check("Conv", [("x", rand((1, 2, 5, 5), F64)), ("w", rand((3, 2, 3, 3), F64))], expect_cuda=False)


def test_conv_4d_spatial_falls_back():
    check("Conv", [("x", rand((1, 2, 3, 3, 3, 3), F32)), ("w", rand((2, 2, 2, 2, 2, 2), F32))],
          expect_cuda=False)


# ---- FusedConv ----

ACTS = [("Relu", None), ("Sigmoid", None), ("Tanh", None), ("LeakyRelu", [0.2]), ("Clip", [-0.3, 0.4]),
        ("HardSigmoid", [0.3, 0.4]), ("", None)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", range(len(ACTS)))
def test_fused_conv(dtype, act):
    name, params = ACTS[act]
    attrs = dict(pads=[1, 1, 1, 1], activation=name) if name else dict(pads=[1, 1, 1, 1])
    if params:
        attrs["activation_params"] = params
    conv_check((2, 8, 12, 12), (16, 8, 3, 3), dtype, attrs, op="FusedConv", domain=MS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ["Relu", ""])
def test_fused_conv_residual(dtype, act):
    attrs = dict(strides=[2, 2], pads=[1, 1, 1, 1])
    if act:
        attrs["activation"] = act
    z = ("z", rand((2, 16, 6, 6), dtype))
    conv_check((2, 8, 12, 12), (16, 8, 3, 3), dtype, attrs, op="FusedConv", domain=MS, extra=[z])


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_conv_residual_no_bias(dtype):
    ins = conv_inputs((1, 4, 9, 9), (8, 4, 3, 3), dtype, bias=False)
    ins += [("b", None), ("z", rand((1, 8, 9, 9), dtype))]
    check("FusedConv", ins, attrs=dict(pads=[1, 1, 1, 1], activation="LeakyRelu"), domain=MS,
          rtol=CONV_TOL[dtype])


# ---- ConvTranspose ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("attrs", [
    dict(strides=[2, 2]),
    dict(strides=[2, 2], pads=[1, 1, 1, 1], output_padding=[1, 1]),
    dict(strides=[2, 2], pads=[1, 1, 1, 1]),
    dict(strides=[2, 2], pads=[0, 1, 1, 0]),                  # asymmetric: cropped
    dict(strides=[2, 2], output_shape=[16, 16]),              # odd total: one more at the start
    dict(strides=[2, 2], output_shape=[19, 20]),              # larger than the full output
    dict(strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(strides=[2, 2], auto_pad="SAME_LOWER"),
    dict(strides=[3, 2], output_padding=[2, 1]),              # output_padding of a whole stride - 1
    dict(dilations=[2, 2], pads=[1, 2, 1, 2]),
])
def test_conv_transpose_2d(dtype, attrs):
    conv_check((2, 16, 8, 8), (16, 8, 3, 3), dtype, attrs, op=CT)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose_upsample(dtype):
    # the decoder's k=4, s=2, p=1 doubling, > 2^20 outputs
    conv_check((2, 32, 64, 64), (32, 16, 4, 4), dtype, dict(strides=[2, 2], pads=[1, 1, 1, 1]), const_w=True,
               op=CT)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose_grouped(dtype):
    conv_check((1, 8, 7, 9), (8, 3, 3, 3), dtype, dict(group=2, strides=[2, 2], pads=[1, 1, 1, 1]), op=CT)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose_no_bias(dtype):
    conv_check((1, 4, 5, 5), (4, 6, 3, 3), dtype, dict(strides=[2, 2]), bias=False, op=CT)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("attrs", [dict(strides=[2]), dict(strides=[2], pads=[1, 2], output_padding=[1])])
def test_conv_transpose_1d(dtype, attrs):
    conv_check((2, 8, 31), (8, 4, 5), dtype, attrs, op=CT)


@pytest.mark.parametrize("dtype", DTYPES)
def test_conv_transpose_3d(dtype):
    conv_check((1, 4, 4, 5, 6), (4, 4, 3, 3, 3), dtype, dict(strides=[2, 2, 2], pads=[1, 1, 1, 1, 1, 1]),
               op=CT)


def test_conv_transpose_float64_falls_back():
    check("ConvTranspose", [("x", rand((1, 2, 5, 5), F64)), ("w", rand((2, 3, 3, 3), F64))],
          expect_cuda=False)


# ---- MaxPool / AveragePool ----

POOL_CASES = [
    ((2, 64, 112, 112), dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])),  # ResNet, > 2^20
    ((1, 8, 7, 7), dict(kernel_shape=[2, 2], strides=[2, 2], ceil_mode=1)),
    ((1, 8, 13, 11), dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1, pads=[1, 0, 1, 1])),
    ((2, 4, 10, 9), dict(kernel_shape=[3, 2], pads=[1, 0, 0, 1])),
    ((1, 4, 12, 12), dict(kernel_shape=[2, 2], auto_pad="SAME_UPPER", strides=[2, 2])),
    ((1, 4, 11, 12), dict(kernel_shape=[4, 3], auto_pad="SAME_LOWER")),
    ((1, 4, 11, 12), dict(kernel_shape=[3, 3], auto_pad="VALID", strides=[1, 2])),
    ((1, 4, 15, 16), dict(kernel_shape=[3, 3], dilations=[2, 2], pads=[2, 2, 2, 2])),
    ((1, 4, 15, 16), dict(kernel_shape=[2, 3], dilations=[2, 3], strides=[2, 2], ceil_mode=1)),
    ((2, 6, 33), dict(kernel_shape=[4], strides=[3], pads=[1, 2], ceil_mode=1)),
    ((1, 3, 6, 7, 8), dict(kernel_shape=[2, 3, 2], strides=[2, 2, 2], pads=[0, 1, 1, 1, 1, 0])),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
def test_max_pool(dtype, case):
    shape, attrs = POOL_CASES[case]
    check("MaxPool", [("x", rand(shape, dtype))], attrs=attrs)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(POOL_CASES)))
@pytest.mark.parametrize("include_pad", [0, 1])
def test_average_pool(dtype, case, include_pad):
    shape, attrs = POOL_CASES[case]
    check("AveragePool", [("x", rand(shape, dtype))], attrs=dict(attrs, count_include_pad=include_pad))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("order", [0, 1])
@pytest.mark.parametrize("case", [1, 2, 7, 9, 10])
def test_max_pool_indices(dtype, order, case):
    shape, attrs = POOL_CASES[case]
    check("MaxPool", [("x", rand(shape, dtype))], attrs=dict(attrs, storage_order=order), n_outputs=2)


@pytest.mark.parametrize("to", [TensorProto.INT8, TensorProto.UINT8])
def test_max_pool_int8(to):
    """int8 / uint8 MaxPool (quantized models). An integer node fed from the host stays on the
    host (placement keeps shape arithmetic there), so the input comes through a Cast that runs on
    CUDA, as it would after a QuantizeLinear on the device."""
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    nodes = [helper.make_node("Cast", ["xf"], ["x"], to=to, name="cast"),
             helper.make_node("MaxPool", ["x"], ["y"], name="node", kernel_shape=[3, 3], strides=[2, 2],
                              pads=[1, 1, 1, 1])]
    graph = helper.make_graph(nodes, "int8_pool", [helper.make_tensor_value_info("xf", F32, [2, 3, 9, 9])],
                              [helper.make_empty_tensor_value_info("y")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    m = m.SerializeToString()
    lo, hi = (-128, 127) if to == TensorProto.INT8 else (0, 255)
    feed = {"xf": rng.integers(lo, hi + 1, size=(2, 3, 9, 9)).astype(np.float32)}
    gpu = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    placed = dict(gpu.node_placement())
    if placed.get("cast") != "CUDAExecutionProvider":
        pytest.skip("Cast to an 8-bit type does not run on CUDA here, so MaxPool's input stays on the host")
    assert placed.get("node") == "CUDAExecutionProvider", gpu.placement_reason("node")
    want = kiln.InferenceSession(m, providers=["CPUExecutionProvider"]).run(None, feed)[0]
    np.testing.assert_array_equal(gpu.run(None, feed)[0], want)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_old_opset_ignores_ceil_mode_attribute(op):
    # opset 8: no ceil_mode, no dilations; the plain floor geometry
    check(op, [("x", rand((1, 2, 7, 7), F32))], attrs=dict(kernel_shape=[2, 2], strides=[2, 2]), opset=8)


@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
def test_pool_empty_batch(op):
    check(op, [("x", rand((0, 3, 8, 8), F32))], attrs=dict(kernel_shape=[2, 2]))


def test_max_pool_float64_falls_back():
    check("MaxPool", [("x", rand((1, 2, 6, 6), F64))], attrs=dict(kernel_shape=[2, 2]), expect_cuda=False)


# ---- global pools ----

GLOBAL_SHAPES = [(1, 2048, 7, 7), (2, 32, 128, 128), (2, 5, 33), (1, 8, 4, 5, 6), (3, 7, 1, 1), (2, 4, 40, 41)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("shape", GLOBAL_SHAPES)
def test_global_pool(dtype, op, shape):
    check(op, [("x", rand(shape, dtype))])


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool_empty(op):
    check(op, [("x", rand((0, 4, 5, 5), F32))])


def test_global_pool_float64_falls_back():
    check("GlobalAveragePool", [("x", rand((1, 2, 6, 6), F64))], expect_cuda=False)
