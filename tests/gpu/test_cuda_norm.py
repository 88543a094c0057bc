"""The CUDA norm family (src/cuda/ops/norm.c, src/cuda/kernels/norm*.cu) against kiln's CPU
provider: LayerNormalization (and the Simplified / RMS / com.microsoft Skip forms), Softmax,
LogSoftmax, Hardmax, BatchNormalization, InstanceNormalization and GroupNormalization, in float32,
float16 and bfloat16.

Covers rows that take one warp (up to 1024) and one block (with and without the shared-memory
row), lengths that are not multiples of the vector width, per-row scale/bias, the statistics
outputs, skip broadcast over leading rows, softmax before and after opset 13 along every axis,
parameters of another float type than X, long group-norm blocks split over several blocks, a
case over 2^20 elements and empty tensors. The forms the kernels reject must fall back to the CPU.

Skips where the CUDA provider is unavailable (see cuda_diff.py)."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_diff import BF16, F16, F32, F64, check, rand  # noqa: E402

DTYPES = [pytest.param(F32, id="f32"), pytest.param(F16, id="f16"), pytest.param(BF16, id="bf16")]
MS = "com.microsoft"


def sid(shape):
    return "x".join(str(d) for d in shape) or "scalar"


# ---- LayerNormalization ----

LN_SHAPES = [(2, 3, 8), (4, 7, 768), (3, 1024), (2, 5, 1030), (2, 4096), (3, 5000), (1, 20000),
             (5, 1), (7, 13), (1400, 768)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", LN_SHAPES, ids=sid)
def test_layernorm(dtype, shape):
    h = shape[-1]
    check("LayerNormalization", [("x", rand(shape, dtype, -2, 3)), ("scale", rand((h,), dtype)),
                                 ("b", rand((h,), dtype))], attrs={"epsilon": 1e-5}, opset=17,
          n_outputs=3, const_inputs=("scale", "b"))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("axis", [0, 1, -2, -1])
def test_layernorm_axis(dtype, axis):
    shape = (3, 6, 40)
    a = axis % 3
    check("LayerNormalization", [("x", rand(shape, dtype)), ("scale", rand(shape[a:], dtype)),
                                 ("b", rand(shape[a:], dtype))], attrs={"axis": axis}, opset=17,
          n_outputs=3)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_no_bias_one_output(dtype):
    check("LayerNormalization", [("x", rand((4, 9, 100), dtype)), ("scale", rand((100,), dtype))],
          opset=17)


@pytest.mark.parametrize("dtype", DTYPES)
def test_layernorm_per_row_scale(dtype):
    shape = (3, 4, 64)
    check("LayerNormalization", [("x", rand(shape, dtype)), ("scale", rand(shape, dtype)),
                                 ("b", rand((1, 1, 64), dtype))], opset=17, n_outputs=3)


def test_layernorm_epsilon_large():
    check("LayerNormalization", [("x", rand((8, 32), F32, -0.01, 0.01)), ("scale", rand((32,), F32))],
          attrs={"epsilon": 0.5}, opset=17)


def test_layernorm_old_opset_default_domain():
    # onnxruntime's LayerNormalization served before it became an ONNX op
    check("LayerNormalization", [("x", rand((4, 5, 48), F16)), ("scale", rand((48,), F16)),
                                  ("b", rand((48,), F16))], opset=13)


def test_layernorm_contrib_domain():
    check("LayerNormalization", [("x", rand((4, 5, 48), F32)), ("scale", rand((48,), F32)),
                                  ("b", rand((48,), F32))], domain=MS)


def test_layernorm_empty():
    check("LayerNormalization", [("x", rand((0, 16), F32)), ("scale", rand((16,), F32))], opset=17)


def test_layernorm_float64_falls_back():
    check("LayerNormalization", [("x", rand((4, 16), F64)), ("scale", rand((16,), F64))], opset=17,
          expect_cuda=False)


def test_layernorm_scale_broadcast_within_row_falls_back():
    # scale (1, 40) broadcast over the 6 of the normalised [6, 40]
    check("LayerNormalization", [("x", rand((3, 6, 40), F32)), ("scale", rand((1, 40), F32))],
          attrs={"axis": 1}, opset=17, expect_cuda=False)


# ---- SimplifiedLayerNormalization / RMSNormalization ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 8), (4, 7, 4096), (3, 1030), (2, 30000), (1100, 1000)],
                         ids=sid)
def test_simplified_layernorm(dtype, shape):
    check("SimplifiedLayerNormalization", [("x", rand(shape, dtype)), ("scale", rand(shape[-1:], dtype))],
          attrs={"epsilon": 1e-6}, n_outputs=2, const_inputs=("scale",))


def test_simplified_layernorm_contrib_axis():
    check("SimplifiedLayerNormalization", [("x", rand((3, 5, 7), F16)), ("scale", rand((5, 7), F16))],
          attrs={"axis": 1}, domain=MS, n_outputs=2)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 64), (2, 2048), (5, 1031)], ids=sid)
def test_rmsnorm(dtype, shape):
    check("RMSNormalization", [("x", rand(shape, dtype)), ("scale", rand(shape[-1:], dtype))],
          attrs={"epsilon": 1e-6}, opset=23)


# ---- com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization ----

SKIP_SHAPES = [(2, 3, 8), (2, 16, 768), (1, 5, 1030), (2, 3, 4096), (1, 2, 20000), (8, 160, 768)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SKIP_SHAPES, ids=sid)
def test_skip_layernorm(dtype, shape):
    h = shape[-1]
    check("SkipLayerNormalization",
          [("x", rand(shape, dtype)), ("skip", rand(shape, dtype)), ("gamma", rand((h,), dtype)),
           ("beta", rand((h,), dtype)), ("bias", rand((h,), dtype))],
          attrs={"epsilon": 1e-12}, domain=MS, n_outputs=4, const_inputs=("gamma", "beta", "bias"))


@pytest.mark.parametrize("dtype", DTYPES)
def test_skip_layernorm_broadcast_skip_no_beta(dtype):
    # skip [S, H] for input [B, S, H]; beta absent; only the output
    check("SkipLayerNormalization",
          [("x", rand((3, 5, 64), dtype)), ("skip", rand((5, 64), dtype)), ("gamma", rand((64,), dtype))],
          domain=MS)


@pytest.mark.parametrize("dtype", DTYPES)
def test_skip_layernorm_bias_without_beta(dtype):
    # beta absent, bias present: the sum output is input + skip + bias
    h = 96
    check("SkipLayerNormalization",
          [("x", rand((2, 7, h), dtype)), ("skip", rand((1, 7, h), dtype)), ("gamma", rand((h,), dtype)),
           ("beta", None), ("bias", rand((h,), dtype))], domain=MS, n_outputs=4)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 8), (2, 16, 4096), (1, 5, 1030)], ids=sid)
def test_skip_simplified_layernorm(dtype, shape):
    h = shape[-1]
    check("SkipSimplifiedLayerNormalization",
          [("x", rand(shape, dtype)), ("skip", rand(shape, dtype)), ("gamma", rand((h,), dtype)),
           ("bias", rand((h,), dtype))], attrs={"epsilon": 1e-6}, domain=MS, n_outputs=4)


def test_skip_layernorm_float64_falls_back():
    check("SkipLayerNormalization", [("x", rand((2, 3, 8), F64)), ("skip", rand((2, 3, 8), F64)),
                                     ("gamma", rand((8,), F64))], domain=MS, expect_cuda=False)


# ---- Softmax / LogSoftmax / Hardmax ----

SOFTMAX_OPS = ["Softmax", "LogSoftmax", "Hardmax"]
SM_SHAPES = [(3, 5), (4, 128), (2, 3, 1000), (2, 1025), (3, 4096), (2, 30000), (1024, 1025), (7, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", SOFTMAX_OPS)
@pytest.mark.parametrize("shape", SM_SHAPES, ids=sid)
def test_softmax_last_axis(dtype, op, shape):
    check(op, [("x", rand(shape, dtype, -4, 4))], attrs={"axis": -1}, opset=13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", SOFTMAX_OPS)
@pytest.mark.parametrize("axis", [0, 1, -2])
def test_softmax_inner_axis(dtype, op, axis):
    check(op, [("x", rand((3, 33, 17), dtype, -4, 4))], attrs={"axis": axis}, opset=13)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", SOFTMAX_OPS)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_softmax_opset11_coerced_2d(dtype, op, axis):
    check(op, [("x", rand((2, 3, 40), dtype, -4, 4))], attrs={"axis": axis}, opset=11)


@pytest.mark.parametrize("op", SOFTMAX_OPS)
def test_softmax_default_axis_opset11(op):
    check(op, [("x", rand((4, 6, 10), F32))], opset=11)


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
def test_softmax_masked_minus_inf(op):
    x = rand((4, 300), F32)
    x[:, ::3] = -np.inf
    check(op, [("x", x)], opset=13, atol=0.0)


def test_hardmax_ties_pick_first():
    x = np.round(rand((6, 50), F32, -2, 2)).astype(np.float32)
    check("Hardmax", [("x", x)], opset=13)


def test_softmax_large_column():
    check("Softmax", [("x", rand((2, 7, 100000), F16))], attrs={"axis": 1}, opset=13)


def test_softmax_empty():
    check("Softmax", [("x", rand((0, 8), F32))], opset=13)


def test_softmax_float64_falls_back():
    check("Softmax", [("x", rand((3, 8), F64))], opset=13, expect_cuda=False)


# ---- BatchNormalization ----

BN_SHAPES = [(2, 3, 5, 5), (4, 16), (2, 8, 33, 33), (3, 100, 256), (1, 7, 3, 3, 3), (8, 64, 48, 48)]


def bn_inputs(shape, dtype, pdtype):
    c = shape[1]
    return [("x", rand(shape, dtype, -1, 4)), ("scale", rand((c,), pdtype, 0.5, 2)),
            ("b", rand((c,), pdtype)), ("mean", rand((c,), pdtype, 0, 2)),
            ("var", rand((c,), pdtype, 0.5, 3))]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", BN_SHAPES, ids=sid)
def test_batchnorm(dtype, shape):
    check("BatchNormalization", bn_inputs(shape, dtype, dtype), attrs={"epsilon": 1e-5}, opset=15,
          const_inputs=("scale", "b", "mean", "var"))


@pytest.mark.parametrize("dtype", [pytest.param(F16, id="f16"), pytest.param(BF16, id="bf16")])
def test_batchnorm_float32_params(dtype):
    check("BatchNormalization", bn_inputs((2, 6, 9, 9), dtype, F32), opset=15)


def test_batchnorm_opset9():
    check("BatchNormalization", bn_inputs((2, 4, 7, 7), F32, F32), opset=9)


def test_batchnorm_opset7_not_spatial():
    check("BatchNormalization", [("x", rand((2, 3, 4), F32)), ("scale", rand((3, 4), F32)),
                                 ("b", rand((3, 4), F32)), ("mean", rand((3, 4), F32)),
                                 ("var", rand((3, 4), F32, 0.5, 2))],
          attrs={"spatial": 0}, opset=7)


def test_batchnorm_empty():
    check("BatchNormalization", bn_inputs((0, 3, 4, 4), F32, F32), opset=15)


def test_batchnorm_training_falls_back():
    check("BatchNormalization", bn_inputs((4, 3, 5, 5), F32, F32), attrs={"training_mode": 1},
          opset=15, n_outputs=3, expect_cuda=False)


# ---- InstanceNormalization / GroupNormalization ----

@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(2, 3, 7, 7), (1, 64, 32, 32), (3, 5, 1), (2, 4, 100000), (2, 3)],
                         ids=sid)
def test_instancenorm(dtype, shape):
    c = shape[1]
    check("InstanceNormalization", [("x", rand(shape, dtype, -1, 3)), ("scale", rand((c,), dtype)),
                                    ("b", rand((c,), dtype))], attrs={"epsilon": 1e-5})


def test_instancenorm_float32_params():
    check("InstanceNormalization", [("x", rand((2, 4, 9, 9), F16)), ("scale", rand((4,), F32)),
                                    ("b", rand((4,), F32))])


GN_CASES = [((2, 8, 5, 5), 4), ((2, 320, 32, 32), 32), ((1, 32, 64, 64), 32), ((2, 64, 96, 96), 32),
            ((3, 6, 7), 6), ((2, 8), 2), ((2, 12, 9, 9), 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", GN_CASES, ids=lambda c: sid(c[0]) + "g%d" % c[1])
@pytest.mark.parametrize("opset", [18, 21])
def test_groupnorm(dtype, case, opset):
    shape, g = case
    n = g if opset < 21 else shape[1]
    check("GroupNormalization", [("x", rand(shape, dtype, -1, 3)), ("scale", rand((n,), dtype)),
                                 ("bias", rand((n,), dtype))], attrs={"num_groups": g, "epsilon": 1e-5},
          opset=opset)


def test_groupnorm_float64_falls_back():
    check("GroupNormalization", [("x", rand((2, 4, 3, 3), F64)), ("scale", rand((2,), F64)),
                                 ("bias", rand((2,), F64))], attrs={"num_groups": 2}, opset=18,
          expect_cuda=False)
