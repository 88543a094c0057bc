/* Softmax row operations. The exponential is the hot spot of attention after the two GEMMs (one
 * exp per score, i.e. per 4·H flops), so it gets an AVX2/FMA polynomial version; libm's expf
 * would cost more than the matrix products at H = 64. */
#include "attention_vecmath.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

int kattn_isa_cap(void) {
    const char *e = getenv("KILN_ATTENTION_ISA");
    if (!e) return 2;
    if (!strcmp(e, "portable")) return 0;
    if (!strcmp(e, "avx2")) return 1;
    return 2;
}

/* Below this the result is a denormal or 0; returning 0 keeps masked (-inf) scores exactly 0. */
#define KATTN_EXP_LOW (-87.0f)

static float row_max_c(const float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++)
        if (x[i] > m) m = x[i];
    return m;
}

static float exp_shift_sum_c(float *x, int64_t n, float m) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        float d = x[i] - m;
        float e = d < KATTN_EXP_LOW ? 0.0f : expf(d);
        x[i] = e;
        s += e;
    }
    return s;
}

static void scale_c(float *x, int64_t n, float c) {
    for (int64_t i = 0; i < n; i++) x[i] *= c;
}

static void add_c(float *x, const float *a, int64_t n) {
    for (int64_t i = 0; i < n; i++) x[i] += a[i];
}

static const kattn_vec_ops portable_ops = {row_max_c, exp_shift_sum_c, scale_c, add_c};

const kattn_vec_ops *kattn_vec_portable(void) { return &portable_ops; }

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX2 __attribute__((target("avx2,fma")))

AVX2 static inline float hmax8(__m256 v) {
    __m128 a = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_max_ps(a, _mm_movehl_ps(a, a));
    a = _mm_max_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

AVX2 static inline float hsum8(__m256 v) {
    __m128 a = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    a = _mm_add_ps(a, _mm_movehl_ps(a, a));
    a = _mm_add_ss(a, _mm_shuffle_ps(a, a, 1));
    return _mm_cvtss_f32(a);
}

/* exp(x) = 2^k · e^r with k = round(x / ln 2), |r| <= ln2 / 2, e^r by a degree-6 Taylor
 * polynomial (relative error ~2e-7 on that interval). ln 2 is split in two parts so that
 * x - k·ln2 is exact enough for |k| <= 126. */
AVX2 static inline __m256 exp8(__m256 x) {
    const __m256 lo = _mm256_set1_ps(KATTN_EXP_LOW), hi = _mm256_set1_ps(88.0f);
    __m256 zero = _mm256_cmp_ps(x, lo, _CMP_LT_OQ); /* also true for -inf */
    x = _mm256_min_ps(_mm256_max_ps(x, lo), hi);
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(k, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.0f / 720.0f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(zero, y);
}

AVX2 static float row_max_avx2(const float *x, int64_t n) {
    int64_t i = 0;
    float m = -INFINITY;
    if (n >= 8) {
        __m256 v = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8) v = _mm256_max_ps(v, _mm256_loadu_ps(x + i));
        m = hmax8(v);
    }
    for (; i < n; i++)
        if (x[i] > m) m = x[i];
    return m;
}

AVX2 static float exp_shift_sum_avx2(float *x, int64_t n, float m) {
    __m256 vm = _mm256_set1_ps(m), acc = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(x + i, e);
        acc = _mm256_add_ps(acc, e);
    }
    if (i < n) { /* tail through a padded lane buffer so the same exp is used everywhere */
        float buf[8];
        int64_t r = n - i;
        for (int j = 0; j < 8; j++) buf[j] = j < r ? x[i + j] - m : -INFINITY;
        __m256 e = exp8(_mm256_loadu_ps(buf));
        _mm256_storeu_ps(buf, e);
        for (int64_t j = 0; j < r; j++) x[i + j] = buf[j];
        acc = _mm256_add_ps(acc, e);
    }
    return hsum8(acc);
}

AVX2 static void scale_avx2(float *x, int64_t n, float c) {
    __m256 vc = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vc));
    for (; i < n; i++) x[i] *= c;
}

AVX2 static void add_avx2(float *x, const float *a, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_add_ps(_mm256_loadu_ps(x + i), _mm256_loadu_ps(a + i)));
    for (; i < n; i++) x[i] += a[i];
}

static const kattn_vec_ops avx2_ops = {row_max_avx2, exp_shift_sum_avx2, scale_avx2, add_avx2};

/* The same with 16 lanes; tails use masked loads and stores instead of scalar loops. */
#define AVX512 __attribute__((target("avx512f")))

AVX512 static inline __m512 exp16(__m512 x) {
    const __m512 lo = _mm512_set1_ps(KATTN_EXP_LOW), hi = _mm512_set1_ps(88.0f);
    __mmask16 keep = _mm512_cmp_ps_mask(x, lo, _CMP_GE_OQ); /* false for -inf and NaN */
    x = _mm512_min_ps(_mm512_max_ps(x, lo), hi);
    __m512 k = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(k, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(k, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.0f / 720.0f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
    __m512 y = _mm512_scalef_ps(p, k); /* p · 2^k */
    return _mm512_maskz_mov_ps(keep, y);
}

static inline __mmask16 tail_mask(int64_t left) {
    return left >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << left) - 1);
}

AVX512 static float row_max_avx512(const float *x, int64_t n) {
    __m512 v = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16)
        v = _mm512_max_ps(v, _mm512_mask_loadu_ps(_mm512_set1_ps(-INFINITY), tail_mask(n - i), x + i));
    return _mm512_reduce_max_ps(v);
}

AVX512 static float exp_shift_sum_avx512(float *x, int64_t n, float m) {
    __m512 vm = _mm512_set1_ps(m), acc = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        __m512 e = exp16(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vm));
        e = _mm512_maskz_mov_ps(k, e);
        _mm512_mask_storeu_ps(x + i, k, e);
        acc = _mm512_add_ps(acc, e);
    }
    return _mm512_reduce_add_ps(acc);
}

AVX512 static void scale_avx512(float *x, int64_t n, float c) {
    __m512 vc = _mm512_set1_ps(c);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vc));
    }
}

AVX512 static void add_avx512(float *x, const float *a, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = tail_mask(n - i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, a + i)));
    }
}

static const kattn_vec_ops avx512_ops = {row_max_avx512, exp_shift_sum_avx512, scale_avx512, add_avx512};

const kattn_vec_ops *kattn_vec(void) {
    /* threads that race here all compute the same answer */
    static _Atomic int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        int h = __builtin_cpu_supports("avx512f")                                   ? 2
                : __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1
                                                                                    : 0;
        int cap = kattn_isa_cap();
        have = h < cap ? h : cap;
    }
    return have == 2 ? &avx512_ops : have == 1 ? &avx2_ops : &portable_ops;
}

const kattn_vec_ops *kattn_vec_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? &avx2_ops : &portable_ops;
}

#else

const kattn_vec_ops *kattn_vec(void) { return &portable_ops; }
const kattn_vec_ops *kattn_vec_avx2(void) { return &portable_ops; }

#endif
