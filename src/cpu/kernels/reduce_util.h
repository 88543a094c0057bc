/* Helpers shared by the reduction, softmax, normalisation, cumsum, topk and loss kernels.
 * Everything is static so that each kernel file gets its own copy and no symbols clash. */
#ifndef KILN_REDUCE_UTIL_H
#define KILN_REDUCE_UTIL_H

#include "../cpu_features.h"

#include "ops/op.h"
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__)
#define RU_UNUSED __attribute__((unused))
#else
#define RU_UNUSED
#endif

/* Product of dims[a..b). */
static RU_UNUSED int64_t ru_prod(const int64_t *dims, int a, int b) {
    int64_t p = 1;
    for (int i = a; i < b; i++) p *= dims[i];
    return p;
}

/* Any dim of the tensor not concrete (static inference with symbolic/unknown dims)? */
static RU_UNUSED int ru_dims_known(const kiln_tensor *t) {
    if (t->rank < 0) return 0;
    for (int i = 0; i < t->rank; i++)
        if (t->dims[i] < 0) return 0;
    return 1;
}

static RU_UNUSED int ru_is_halfish(int dt) {
    return dt == KILN_DTYPE_FLOAT16 || dt == KILN_DTYPE_BFLOAT16;
}

/* float16 <-> float32 with the F16C instructions where the CPU has them (both round to nearest
 * even, like kiln_f32_to_f16). */
#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define RU_HAVE_F16C_PATH 1
static RU_UNUSED int ru_use_f16c(void) {
    static _Atomic int v = -1;
    if (v < 0) v = kiln_cpu_has_f16c();
    return v;
}

__attribute__((target("avx,f16c"))) static RU_UNUSED int64_t ru_f16_to_f32_f16c(
    const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(src + i))));
    return i;
}

__attribute__((target("avx,f16c"))) static RU_UNUSED int64_t ru_f32_to_f16_f16c(
    const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT));
    return i;
}
#else
#define RU_HAVE_F16C_PATH 0
#endif

/* float16 / bfloat16 <-> float32 buffers; half kernels compute in float32 through these. */
static RU_UNUSED void ru_half_to_f32(int dt, const uint16_t *src, float *dst, int64_t n) {
    int64_t i = 0;
    if (dt == KILN_DTYPE_FLOAT16) {
#if RU_HAVE_F16C_PATH
        if (ru_use_f16c()) i = ru_f16_to_f32_f16c(src, dst, n);
#endif
        for (; i < n; i++) dst[i] = kiln_f16_to_f32(src[i]);
    } else {
        for (; i < n; i++) dst[i] = kiln_bf16_to_f32(src[i]);
    }
}

static RU_UNUSED void ru_f32_to_half(int dt, const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    if (dt == KILN_DTYPE_FLOAT16) {
#if RU_HAVE_F16C_PATH
        if (ru_use_f16c()) i = ru_f32_to_f16_f16c(src, dst, n);
#endif
        for (; i < n; i++) dst[i] = kiln_f32_to_f16(src[i]);
    } else {
        for (; i < n; i++) dst[i] = kiln_f32_to_bf16(src[i]);
    }
}

/* A float32 copy of a float16/bfloat16/float/double tensor's n elements (malloc'ed; NULL when out
 * of memory). Used for small parameter vectors (scale, bias, mean, ...) of any float type. */
static RU_UNUSED float *ru_to_f32_copy(const kiln_tensor *t, int64_t n) {
    float *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!p) return NULL;
    switch (t->dtype) {
    case KILN_DTYPE_FLOAT: memcpy(p, t->data, (size_t)n * sizeof(float)); break;
    case KILN_DTYPE_DOUBLE:
        for (int64_t i = 0; i < n; i++) p[i] = (float)((const double *)t->data)[i];
        break;
    case KILN_DTYPE_FLOAT16:
    case KILN_DTYPE_BFLOAT16: ru_half_to_f32(t->dtype, t->data, p, n); break;
    default:
        for (int64_t i = 0; i < n; i++) p[i] = (float)kiln_load_f64(t->dtype, t->data, i);
    }
    return p;
}

static RU_UNUSED double *ru_to_f64_copy(const kiln_tensor *t, int64_t n) {
    double *p = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (!p) return NULL;
    for (int64_t i = 0; i < n; i++) p[i] = kiln_load_f64(t->dtype, t->data, i);
    return p;
}

/* Float sums with eight independent accumulators: the compiler keeps them in vector registers,
 * and the partial sums are also a little more accurate than one running total. */
static RU_UNUSED float ru_sum_f32(const float *x, int64_t n) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) a[l] += x[i + l];
    float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    for (; i < n; i++) s += x[i];
    return s;
}

/* sum of (x[i] - m)^2 */
static RU_UNUSED float ru_sumsqdev_f32(const float *x, int64_t n, float m) {
    float a[8] = {0, 0, 0, 0, 0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) {
            float d = x[i + l] - m;
            a[l] += d * d;
        }
    float s = ((a[0] + a[4]) + (a[1] + a[5])) + ((a[2] + a[6]) + (a[3] + a[7]));
    for (; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return s;
}

static RU_UNUSED float ru_max_f32(const float *x, int64_t n) {
    float a[8];
    int64_t i = 0;
    if (n >= 8) {
        for (int l = 0; l < 8; l++) a[l] = x[l];
        for (i = 8; i + 8 <= n; i += 8)
            for (int l = 0; l < 8; l++) a[l] = x[i + l] > a[l] ? x[i + l] : a[l];
    } else {
        for (int l = 0; l < 8; l++) a[l] = -INFINITY;
    }
    float m = a[0];
    for (int l = 1; l < 8; l++) m = a[l] > m ? a[l] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static RU_UNUSED double ru_sum_f64(const double *x, int64_t n) {
    double a[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) a[l] += x[i + l];
    double s = (a[0] + a[2]) + (a[1] + a[3]);
    for (; i < n; i++) s += x[i];
    return s;
}

static RU_UNUSED double ru_sumsqdev_f64(const double *x, int64_t n, double m) {
    double a[4] = {0, 0, 0, 0};
    int64_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int l = 0; l < 4; l++) {
            double d = x[i + l] - m;
            a[l] += d * d;
        }
    double s = (a[0] + a[2]) + (a[1] + a[3]);
    for (; i < n; i++) s += (x[i] - m) * (x[i] - m);
    return s;
}

/* Records the first failure of a worker (which cannot return a status) for compute to report. */
typedef struct ru_fail_flag {
    volatile int failed;
} ru_fail_flag;

/* Elements per parallel chunk: enough work per task to amortise the hand-off. */
#define RU_GRAIN_ELEMS 16384

static RU_UNUSED int64_t ru_grain(int64_t per_item) {
    if (per_item < 1) per_item = 1;
    int64_t g = RU_GRAIN_ELEMS / per_item;
    return g < 1 ? 1 : g;
}

#endif
