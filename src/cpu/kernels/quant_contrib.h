/* Shared pieces of the com.microsoft quantised CPU ops (quant_contrib*.c). Their arithmetic follows
 * onnxruntime's CPU kernels step by step (float32 operations in the same order, round half to even
 * then saturate), so that integer outputs are bit-exact with onnxruntime's. */
#ifndef KILN_QUANT_CONTRIB_H
#define KILN_QUANT_CONTRIB_H

#include "qgemm.h"
#include "quant_elem.h"
#include <math.h>
#include <stdint.h>

static inline int qc_is_q8(int dt) { return dt == KILN_DTYPE_UINT8 || dt == KILN_DTYPE_INT8; }

static inline int32_t qc_q8(int dt, const void *p, int64_t i) {
    return dt == KILN_DTYPE_INT8 ? (int32_t)((const int8_t *)p)[i] : (int32_t)((const uint8_t *)p)[i];
}

static inline void qc_q8_range(int dt, int32_t *lo, int32_t *hi) {
    *lo = dt == KILN_DTYPE_INT8 ? -128 : 0;
    *hi = dt == KILN_DTYPE_INT8 ? 127 : 255;
}

/* Rounds half to even like CVTPS2DQ, which also maps NaN and out-of-range values to INT32_MIN
 * (so hostile scales saturate to the low end instead of reaching an undefined C conversion). */
static inline int32_t qc_cvt(float v) {
    return v >= -2147483648.0f && v < 2147483648.0f ? (int32_t)rintf(v) : INT32_MIN;
}

static inline int32_t qc_clamp(int32_t v, int32_t lo, int32_t hi) { return v < lo ? lo : v > hi ? hi : v; }

/* onnxruntime's MlasQuantizeLinear for one value: v / scale clamped to the type's range shifted by
 * the zero point (a NaN quotient takes the lower bound, as MAXPS does), rounded half to even. */
static inline int32_t qc_quantize(float v, float scale, int32_t zp, int32_t lo, int32_t hi) {
    float r = v / scale, a = (float)(lo - zp), b = (float)(hi - zp);
    r = r > a ? r : a;
    r = r < b ? r : b;
    return (int32_t)rintf(r) + zp;
}

/* onnxruntime's requantisation of an int32 accumulator (MlasRequantizeOutput). */
static inline int32_t qc_requant(int32_t acc, float scale, int32_t zp, int32_t lo, int32_t hi) {
    float r = (float)acc * scale, a = (float)(lo - zp), b = (float)(hi - zp);
    r = r > a ? r : a;
    r = r < b ? r : b;
    return (int32_t)rintf(r) + zp;
}

static inline void qc_store8(int dt, void *p, int64_t i, int32_t v) {
    if (dt == KILN_DTYPE_INT8) ((int8_t *)p)[i] = (int8_t)v;
    else ((uint8_t *)p)[i] = (uint8_t)v;
}

/* Input i (named `name` in messages) must be present with one of the n listed element types. */
kiln_status qc_need(kiln_ctx *ctx, int i, const char *name, kiln_tensor **t, int n, const int *types);
/* Optional input i: NULL when absent, else checked like qc_need. */
kiln_status qc_opt(kiln_ctx *ctx, int i, const char *name, kiln_tensor **t, int n, const int *types);
/* A float scale that must hold one value (scalar or 1-element). */
kiln_status qc_scale1(kiln_ctx *ctx, int i, const char *name, int required, float *out);
/* A zero point of element type dt holding one value (0 when absent and allowed). */
kiln_status qc_zp1(kiln_ctx *ctx, int i, const char *name, int dt, int required, int32_t *out);

/* A 256-entry table from every 8-bit code of type dt: dequantised with (xs, xz), mapped by fn (a
 * whole-array transform), quantised with (ys, yz), as onnxruntime's QlinearBuildLookupTable. */
typedef void (*qc_table_fn)(const float *in, float *out, int n, const void *arg);
void qc_build_table(int dt, float xs, int32_t xz, float ys, int32_t yz, qc_table_fn fn,
                    const void *arg, uint8_t table[256]);
/* y[i] = table[(uint8_t)x[i]] over ctx's threads. */
void qc_apply_table(kiln_ctx *ctx, const uint8_t *x, uint8_t *y, int64_t n, const uint8_t table[256]);

/* Integer product C[M,N] (int32, row stride ldc) = sum_k (A[m,k] - a_zp) (B[k,n] - b_zp[n]) for
 * int8/uint8 A (row stride lda) and B (row stride ldb); b_zp has N entries (per column) or 1.
 * packed: B already packed (then B and ldb are not read), or NULL.
 * Exact int32 sums (modulo 2^32) on the qgemm.h kernels over ctx's threads. */
kiln_status qc_igemm(kiln_ctx *ctx, int64_t M, int64_t N, int64_t K, int adt, const void *A,
                     int64_t lda, int32_t a_zp, int bdt, const void *B, int64_t ldb,
                     const int32_t *b_zp, int b_zp_per_col, int32_t *C, int64_t ldc,
                     const kqg_b *packed);
/* init/fini of the products whose constant B is packed once: QGemm (input 3, transB), and
 * MatMulIntegerToFloat / DynamicQuantizeMatMul (input 1). */
kiln_status qc_qgemm_init(kiln_ctx *ctx);
kiln_status qc_mm_b1_init(kiln_ctx *ctx);
void qc_bpack_fini(void *state);

/* Entry points in quant_contrib_pool.c and quant_contrib_gemm.c (the family table is in
 * quant_contrib.c). */
kiln_status qc_gavgpool_infer(kiln_ctx *ctx);
kiln_status qc_gavgpool_compute(kiln_ctx *ctx);
kiln_status qc_avgpool_infer(kiln_ctx *ctx);
kiln_status qc_avgpool_compute(kiln_ctx *ctx);
kiln_status qc_softmax_infer(kiln_ctx *ctx);
kiln_status qc_softmax_compute(kiln_ctx *ctx);
kiln_status qc_qgemm_infer(kiln_ctx *ctx);
kiln_status qc_qgemm_compute(kiln_ctx *ctx);
kiln_status qc_dqmm_infer(kiln_ctx *ctx);
kiln_status qc_dqmm_compute(kiln_ctx *ctx);
kiln_status qc_mmitf_infer(kiln_ctx *ctx);
kiln_status qc_mmitf_compute(kiln_ctx *ctx);
kiln_status qc_qattention_infer(kiln_ctx *ctx);
kiln_status qc_qattention_compute(kiln_ctx *ctx);

#endif
