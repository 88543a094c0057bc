/* GlobalAveragePool, GlobalMaxPool, GlobalLpPool: one value per (image, channel) plane, planes
 * in parallel. Sums accumulate in double so that large planes keep float32 accuracy. */
#include "pool_util.h"
#include "gemm_util.h"
#include <math.h>
#include <stdlib.h>

enum { G_AVG, G_MAX, G_LP };

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
/* Sum of a float32 plane: eight-lane partial sums in float, each short enough (the lanes see at
 * most size/32 values apiece in each of four accumulators) to stay accurate. The tail (up to 31
 * values) goes through masked loads into the same accumulators and the 32 partial sums are added
 * as a tree: MobileNetV3's squeeze-excite planes are 7x7 to 56x56, where a scalar tail and a
 * serial 32-step reduction in double cost more than the vector loop itself. */
__attribute__((target("avx2"))) static double sum_f32_avx2(const float *x, int64_t n) {
    __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        a0 = _mm256_add_ps(a0, _mm256_loadu_ps(x + i));
        a1 = _mm256_add_ps(a1, _mm256_loadu_ps(x + i + 8));
        a2 = _mm256_add_ps(a2, _mm256_loadu_ps(x + i + 16));
        a3 = _mm256_add_ps(a3, _mm256_loadu_ps(x + i + 24));
    }
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    __m256 *acc[4] = {&a0, &a1, &a2, &a3};
    for (int k = 0; i < n; i += 8, k++) {
        /* lanes below n - i are loaded, the rest read as zero (and are never touched) */
        __m256i m = _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n - i < 8 ? n - i : 8)), lane);
        *acc[k] = _mm256_add_ps(*acc[k], _mm256_maskload_ps(x + i, m));
    }
    __m256 s8 = _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3));
    __m128 s4 = _mm_add_ps(_mm256_castps256_ps128(s8), _mm256_extractf128_ps(s8, 1));
    s4 = _mm_add_ps(s4, _mm_movehl_ps(s4, s4));
    s4 = _mm_add_ss(s4, _mm_movehdup_ps(s4));
    return (double)_mm_cvtss_f32(s4);
}
#define HAVE_SUM_AVX2 1

/* The same with 16 lanes and one masked load for the tail: MobileNet's 7x7 planes are three
 * full vectors and one lane, where the AVX2 version spent more on building masks and on its
 * three partial loads than on the sum. */
__attribute__((target("avx512f"))) static double sum_f32_avx512(const float *x, int64_t n) {
    __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        a0 = _mm512_add_ps(a0, _mm512_loadu_ps(x + i));
        a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i + 16));
        a2 = _mm512_add_ps(a2, _mm512_loadu_ps(x + i + 32));
        a3 = _mm512_add_ps(a3, _mm512_loadu_ps(x + i + 48));
    }
    for (; i + 16 <= n; i += 16) a1 = _mm512_add_ps(a1, _mm512_loadu_ps(x + i));
    if (i < n) a2 = _mm512_add_ps(a2, _mm512_maskz_loadu_ps((__mmask16)((1u << (n - i)) - 1), x + i));
    return (double)_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
#endif

kiln_status kgpool_infer(kiln_ctx *ctx) {
    kiln_tensor *X;
    char sx[96];
    KILN_TRY(kiln_need_input(ctx, 0, &X));
    int dt = X->dtype;
    if (dt != KILN_DTYPE_FLOAT && dt != KILN_DTYPE_DOUBLE && !kcvt_is_half(dt))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d for input X", dt);
    if (X->rank < 0) return kiln_set_output_unknown(ctx, 0, dt);
    if (X->rank < 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input X is %s; expected [N, C, spatial...] (rank >= 3)",
                         kconv_dims_str(X->rank, X->dims, sx, sizeof sx));
    int64_t dims[KILN_MAX_RANK];
    dims[0] = X->dims[0];
    dims[1] = X->dims[1];
    for (int i = 2; i < X->rank; i++) dims[i] = 1;
    return kiln_set_output(ctx, 0, dt, X->rank, dims);
}

typedef struct gjob {
    int kind, dt;
    double p;
    const void *x;
    void *y;
    int64_t size;
    int avx2, avx512; /* checked once per op, not per plane */
} gjob;

static double load(int dt, const void *x, int64_t i) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return ((const float *)x)[i];
    case KILN_DTYPE_DOUBLE: return ((const double *)x)[i];
    case KILN_DTYPE_FLOAT16: return kiln_f16_to_f32(((const uint16_t *)x)[i]);
    default: return kiln_bf16_to_f32(((const uint16_t *)x)[i]);
    }
}

static void store(int dt, void *y, int64_t i, double v) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: ((float *)y)[i] = (float)v; break;
    case KILN_DTYPE_DOUBLE: ((double *)y)[i] = v; break;
    case KILN_DTYPE_FLOAT16: ((uint16_t *)y)[i] = kiln_f32_to_f16((float)v); break;
    default: ((uint16_t *)y)[i] = kiln_f32_to_bf16((float)v); break;
    }
}

static void grun(void *arg, int64_t q0, int64_t q1) {
    const gjob *j = arg;
    for (int64_t q = q0; q < q1; q++) {
        int64_t b = q * j->size;
        double acc = 0.0;
        if (j->dt == KILN_DTYPE_FLOAT && j->kind == G_AVG) { /* the common case */
            const float *x = (const float *)j->x + b;
#ifdef HAVE_SUM_AVX2
            if (j->size <= (1 << 16) && j->avx512) acc = sum_f32_avx512(x, j->size);
            else if (j->size <= (1 << 16) && j->avx2) acc = sum_f32_avx2(x, j->size);
            else
#endif
                for (int64_t i = 0; i < j->size; i++) acc += x[i];
        } else if (j->kind == G_MAX) {
            acc = -INFINITY;
            for (int64_t i = 0; i < j->size; i++) {
                double v = load(j->dt, j->x, b + i);
                if (v > acc || isnan(v)) acc = v;
                if (isnan(v)) break;
            }
        } else {
            for (int64_t i = 0; i < j->size; i++) {
                double v = load(j->dt, j->x, b + i);
                if (j->kind == G_AVG) acc += v;
                else if (j->p == 2.0) acc += v * v;
                else acc += pow(fabs(v), j->p);
            }
        }
        if (j->kind == G_AVG) acc = j->size ? acc / (double)j->size : NAN;
        else if (j->kind == G_LP) acc = j->p == 2.0 ? sqrt(acc) : pow(acc, 1.0 / j->p);
        store(j->dt, j->y, q, acc);
    }
}

static kiln_status gpool(kiln_ctx *ctx, int kind) {
    kiln_tensor *X = kiln_input(ctx, 0), *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    gjob j = {kind, X->dtype, 2.0, X->data, Y->data, 1, 0, 0};
#ifdef HAVE_SUM_AVX2
    j.avx2 = __builtin_cpu_supports("avx2");
    j.avx512 = __builtin_cpu_supports("avx512f");
#endif
    for (int i = 2; i < X->rank; i++) j.size *= X->dims[i];
    if (kind == G_LP) {
        const kiln_attr *a = kiln_node_attr(ctx->node, "p");
        j.p = !a ? 2.0 : a->type == KILN_ATTR_FLOAT ? a->f : (double)a->i;
        if (!(j.p > 0.0))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "p is %g; it must be positive", j.p);
    }
    int64_t planes = X->dims[0] * X->dims[1];
    kiln_parallel_for(ctx, planes, kpar_grain(planes, (double)planes * j.size * 0.5), grun, &j);
    return KILN_OK;
}

kiln_status kgpool_avg_compute(kiln_ctx *ctx) { return gpool(ctx, G_AVG); }
kiln_status kgpool_max_compute(kiln_ctx *ctx) { return gpool(ctx, G_MAX); }
kiln_status kgpool_lp_compute(kiln_ctx *ctx) { return gpool(ctx, G_LP); }
