"""The CUDA matmul family (src/cuda/ops/matmul.c, src/cuda/ops/matmul_lt.c, src/cuda/kernels/matmul.cu)
against kiln's CPU provider: MatMul, Gemm and com.microsoft FusedMatMul through cuBLASLt, in float32
(no TF32: within 2e-5 of the CPU), float16, bfloat16 and float64.

Covers square / rectangular / odd sizes, batched and broadcast batches (strided-batched calls, the
batch folded into M, the host loop for irregular broadcasts), 1-D operands, every Gemm C form with
trans flags and alpha/beta (bias epilogue, direct C, broadcast copy), FusedMatMul's alpha, trans and
transBatch, empty outputs and K = 0, and the integer forms that stay on the CPU.

Skips where the CUDA provider is unavailable (see cuda_diff.py)."""
import itertools
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_diff import BF16, F16, F32, F64, I32, I64, check, rand  # noqa: E402

DTYPES = [pytest.param(F32, id="f32"), pytest.param(F16, id="f16"), pytest.param(BF16, id="bf16")]
ALL_DTYPES = DTYPES + [pytest.param(F64, id="f64")]
MS = "com.microsoft"


def sid(shape):
    return "x".join(str(d) for d in shape) or "scalar"


def mm(sa, sb, dtype, op="MatMul", attrs=None, domain="", const_b=False, opset=None):
    ins = [("a", rand(sa, dtype)), ("b", rand(sb, dtype))]
    return check(op, ins, attrs=attrs, domain=domain, const_inputs=("b",) if const_b else (), opset=opset)


# ---- MatMul ----

SIZES_2D = [(1, 1, 1), (1, 3, 17), (3, 17, 1), (17, 127, 3), (127, 768, 17), (768, 1000, 127),
            (1000, 1, 768), (64, 64, 64), (33, 47, 29)]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("mnk", SIZES_2D, ids=lambda s: "M%dN%dK%d" % s)
def test_matmul_2d(dtype, mnk):
    m, n, k = mnk
    mm((m, k), (k, n), dtype)


BATCHED = [
    ((2, 5, 7), (7, 9)),                # [B,S,K] x [K,N]: batch folded into M
    ((4, 33, 64), (64, 50)),
    ((5, 7), (3, 7, 2)),                # shared A, batched B: stride-0 A
    ((2, 3, 5, 8), (2, 3, 8, 5)),       # [B,H,S,D] x [B,H,D,S]
    ((2, 12, 65, 64), (2, 12, 64, 65)),
    ((1, 4, 5), (3, 5, 6)),             # size-1 batch broadcast
    ((3, 4, 5), (1, 5, 6)),
    ((1, 2, 3), (2, 3, 4)),
    ((2, 1, 6, 4), (1, 3, 4, 7)),       # irregular broadcast: host loop over strided calls
    ((3, 1, 4, 5), (2, 5, 6)),
    ((2, 1, 3, 4), (2, 5, 4, 2)),
    ((2, 3, 4, 5, 6), (4, 6, 2)),
    ((6,), (6,)),                       # 1-D operands
    ((7,), (7, 3)),
    ((4, 7), (7,)),
    ((6,), (2, 6, 4)),
    ((2, 3, 6), (6,)),
    ((1, 1), (1, 1)),
]


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("shapes", BATCHED, ids=lambda s: "%s@%s" % (sid(s[0]), sid(s[1])))
def test_matmul_batched(dtype, shapes):
    mm(shapes[0], shapes[1], dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_const_weight(dtype):
    mm((3, 17, 96), (96, 40), dtype, const_b=True)
    mm((5, 40), (40, 8), dtype, const_b=True)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_large(dtype):
    # 4 x 256 x 1100 = 1.1M outputs (over 2^20), K = 768
    mm((4, 256, 768), (768, 1100), dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", [((2, 3, 0, 5), (2, 3, 5, 4)), ((0, 4, 5), (5, 3)), ((3, 0), (0, 4)),
                                    ((2, 4, 0), (0, 5)), ((0,), (0,)), ((2, 0, 3), (3, 0))],
                         ids=lambda s: "%s@%s" % (sid(s[0]), sid(s[1])))
def test_matmul_empty(dtype, shapes):
    # empty outputs, and K = 0 (an empty sum: zeros)
    mm(shapes[0], shapes[1], dtype)


@pytest.mark.parametrize("opset", [1, 9, 13])
def test_matmul_opsets(opset):
    mm((2, 3, 4), (4, 5), F32 if opset < 13 else F16, opset=opset)


@pytest.mark.parametrize("dt", [I32, I64])
def test_matmul_integer_stays_on_cpu(dt):
    ins = [("a", rand((3, 4), dt, -3, 3)), ("b", rand((4, 5), dt, -3, 3))]
    check("MatMul", ins, expect_cuda=False)


# ---- Gemm ----

C_FORMS = ["none", (), (1,), ("N",), (1, "N"), ("M", 1), ("M", "N"), (1, 1)]


def c_shape(form, m, n):
    return tuple(m if d == "M" else n if d == "N" else d for d in form)


def gemm(m, n, k, dtype, ta=0, tb=0, alpha=1.0, beta=1.0, cform="none", const_b=False, opset=None):
    ins = [("a", rand((k, m) if ta else (m, k), dtype)), ("b", rand((n, k) if tb else (k, n), dtype))]
    if cform != "none":
        ins.append(("c", rand(c_shape(cform, m, n), dtype)))
    attrs = {"transA": ta, "transB": tb, "alpha": alpha, "beta": beta}
    return check("Gemm", ins, attrs=attrs, const_inputs=("b",) if const_b else (), opset=opset)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", list(itertools.product([0, 1], [0, 1])), ids=lambda t: "tA%dtB%d" % t)
@pytest.mark.parametrize("cform", C_FORMS, ids=lambda f: "C_" + (sid(f) if f != "none" else "none"))
def test_gemm_forms(dtype, trans, cform):
    ta, tb = trans
    for alpha, beta in [(1.0, 1.0), (0.5, 2.0), (1.0, 0.0), (-1.5, 1.0)]:
        if cform == "none" and beta != 1.0:
            continue
        gemm(33, 47, 29, dtype, ta, tb, alpha, beta, cform)


@pytest.mark.parametrize("dtype", ALL_DTYPES)
@pytest.mark.parametrize("mnk", [(1, 1, 1), (1, 768, 768), (127, 3, 17), (768, 1000, 64), (1000, 1, 3)],
                         ids=lambda s: "M%dN%dK%d" % s)
def test_gemm_sizes(dtype, mnk):
    m, n, k = mnk
    gemm(m, n, k, dtype, 0, 1, 1.0, 1.0, ("N",))      # bias epilogue (Linear layers)
    gemm(m, n, k, dtype, 1, 0, 0.5, 0.25, ("M", 1))    # broadcast copy, then beta


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_large(dtype):
    gemm(1100, 1000, 256, dtype, 0, 1, 1.0, 1.0, ("N",))
    gemm(1100, 1000, 256, dtype, 0, 0, 1.0, 0.5, ())


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_const_weight(dtype):
    gemm(16, 40, 96, dtype, 0, 1, 1.0, 1.0, ("N",), const_b=True)
    gemm(16, 40, 96, dtype, 0, 0, 2.0, 1.0, ("M", "N"), const_b=True)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("cform", ["none", (), ("N",), ("M", 1), ("M", "N")],
                         ids=lambda f: "C_" + (sid(f) if f != "none" else "none"))
def test_gemm_k0(dtype, cform):
    # an empty sum: Y = beta * C (broadcast), or zeros
    gemm(5, 7, 0, dtype, 0, 0, 1.0, 1.0, cform)
    if cform != "none":
        gemm(5, 7, 0, dtype, 1, 1, 2.0, 0.5, cform)


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_empty(dtype):
    gemm(0, 7, 4, dtype, 0, 0, 1.0, 1.0, ("N",))
    gemm(5, 0, 4, dtype, 0, 1, 1.0, 1.0, ())


@pytest.mark.parametrize("opset", [7, 9, 11, 13])
def test_gemm_opsets(opset):
    gemm(6, 5, 4, F32, 1, 0, 1.0, 1.0, ("N",), opset=opset)


def test_gemm_integer_stays_on_cpu():
    ins = [("a", rand((3, 4), I32, -3, 3)), ("b", rand((4, 5), I32, -3, 3)), ("c", rand((5,), I32, -3, 3))]
    check("Gemm", ins, expect_cuda=False)


# ---- com.microsoft FusedMatMul ----

def fused(sa, sb, dtype, **attrs):
    return mm(sa, sb, dtype, op="FusedMatMul", attrs=attrs, domain=MS)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("trans", list(itertools.product([0, 1], [0, 1])), ids=lambda t: "tA%dtB%d" % t)
def test_fused_matmul_trans_alpha(dtype, trans):
    ta, tb = trans
    for alpha in (1.0, 0.125):
        fused((17, 9) if ta else (9, 17), (33, 17) if tb else (17, 33), dtype, transA=ta, transB=tb, alpha=alpha)
        fused((3, 5, 4) if ta else (3, 4, 5), (3, 6, 5) if tb else (3, 5, 6), dtype, transA=ta, transB=tb,
              alpha=alpha)
        fused((2, 3, 17, 9) if ta else (2, 3, 9, 17), (33, 17) if tb else (17, 33), dtype, transA=ta,
              transB=tb, alpha=alpha)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("tbatch", [(1, 0), (0, 1), (1, 1)], ids=lambda t: "tbA%dtbB%d" % t)
@pytest.mark.parametrize("trans", list(itertools.product([0, 1], [0, 1])), ids=lambda t: "tA%dtB%d" % t)
def test_fused_matmul_trans_batch(dtype, tbatch, trans):
    # transBatch reads [b0, d1.., dn] as [d1.., b0, dn]: A (4,2,5,6) is viewed as (2,5,4,6)
    tba, tbb = tbatch
    ta, tb = trans
    sa = (4, 2, 5, 6) if tba else (2, 5, 4, 6)
    k = 4 if ta else 6
    inner = (7, k) if tb else (k, 7)
    sb = (inner[0], 2, 5, inner[1]) if tbb else (2, 5) + inner
    fused(sa, sb, dtype, transA=ta, transB=tb, transBatchA=tba, transBatchB=tbb, alpha=1.5)


@pytest.mark.parametrize("dtype", DTYPES)
def test_fused_matmul_trans_batch_shared(dtype):
    fused((4, 3, 6), (6, 5), dtype, transBatchA=1)
    fused((4,), (4, 6, 5), dtype, transBatchB=1)   # B viewed as (6,4,5)
    fused((3, 6), (6, 5), dtype, transBatchA=1, transBatchB=1)  # rank 2: transBatch has no effect


def test_fused_matmul_f64():
    fused((3, 4, 5), (5, 6), F64, alpha=0.5, transB=0)
    fused((2, 5, 4), (2, 6, 5), F64, transA=1, transB=1)

