/* Softmax row operations. The exponential is the hot spot of attention after the two GEMMs (one
 * exp per score, i.e. per 4·H flops), so it gets an AVX2/FMA polynomial version; libm's expf
 * would cost more than the matrix products at H = 64. */
#include "attention_vecmath.h"

#include <math.h>

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

const kattn_vec_ops *kattn_vec(void) {
    /* benign race: every thread computes the same answer */
    static int have = -1;
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return have ? &avx2_ops : &portable_ops;
}

#else

const kattn_vec_ops *kattn_vec(void) { return &portable_ops; }

#endif
