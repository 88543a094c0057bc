/* float32 row primitives for the hot last-axis paths (Softmax, LayerNormalization and friends):
 * AVX2+FMA versions chosen at run time, portable scalar versions otherwise. The build uses plain
 * -O2 for x86-64, which leaves these loops scalar, hence the intrinsics.
 *
 * rs_exp_neg(): exp for arguments <= 0 (after subtracting a row maximum). Range reduction
 * x = k ln2 + r with |r| <= ln2/2, then the degree-7 Taylor polynomial of e^r, whose truncation
 * error r^8/8! < 6e-9 is below float precision; 2^k is put into the exponent bits. Arguments
 * below -87.3 (where e^x is no longer a normal float) give 0. */
#ifndef KILN_REDUCE_SIMD_H
#define KILN_REDUCE_SIMD_H

#include "reduce_util.h"

#if defined(__x86_64__) && defined(__GNUC__)
#define RS_X86 1
#include <immintrin.h>
#else
#define RS_X86 0
#endif

static RU_UNUSED int rs_use_avx2(void) {
#if RS_X86
    static _Atomic int v = -1;
    if (v < 0) v = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return v;
#else
    return 0;
#endif
}

#if RS_X86
#define RS_AVX2 __attribute__((target("avx2,fma")))

RS_AVX2 static inline float rs_hsum256(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

RS_AVX2 static inline float rs_hmax256(__m256 v) {
    __m128 s = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_max_ps(s, _mm_movehl_ps(s, s));
    s = _mm_max_ss(s, _mm_shuffle_ps(s, s, 1));
    return _mm_cvtss_f32(s);
}

RS_AVX2 static inline __m256 rs_exp_neg256(__m256 x) {
    const __m256 log2e = _mm256_set1_ps(1.44269504088896341f);
    const __m256 ln2_hi = _mm256_set1_ps(0.693359375f);
    const __m256 ln2_lo = _mm256_set1_ps(-2.12194440054690583e-4f);
    __m256 under = _mm256_cmp_ps(x, _mm256_set1_ps(-87.3f), _CMP_LT_OQ);
    x = _mm256_max_ps(x, _mm256_set1_ps(-87.3f));
    __m256 k = _mm256_round_ps(_mm256_mul_ps(x, log2e), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(k, ln2_hi, x);
    r = _mm256_fnmadd_ps(k, ln2_lo, r);
    __m256 p = _mm256_set1_ps(1.0f / 5040);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 720));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(k), _mm256_set1_epi32(127)), 23);
    __m256 y = _mm256_mul_ps(p, _mm256_castsi256_ps(e));
    return _mm256_andnot_ps(under, y);
}

/* v = exp(v) in place for v <= 0 (NaN stays NaN) */
RS_AVX2 static void rs_exp_neg_inplace_avx2(float *v, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 a = _mm256_loadu_ps(v + i);
        __m256 e = rs_exp_neg256(a);
        _mm256_storeu_ps(v + i, _mm256_blendv_ps(e, a, _mm256_cmp_ps(a, a, _CMP_UNORD_Q)));
    }
    for (; i < n; i++) v[i] = expf(v[i]);
}

RS_AVX2 static float rs_max_avx2(const float *x, int64_t n) {
    int64_t i = 0;
    float m = -INFINITY;
    if (n >= 8) {
        __m256 a = _mm256_loadu_ps(x);
        for (i = 8; i + 8 <= n; i += 8) a = _mm256_max_ps(a, _mm256_loadu_ps(x + i));
        m = rs_hmax256(a);
    }
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

/* max (or min) of x, NaN if any element is NaN; n >= 1 */
RS_AVX2 static float rs_extreme_nan_avx2(const float *x, int64_t n, int is_min) {
    int64_t i = 0;
    float m = x[0];
    int nan = 0;
    if (n >= 8) {
        __m256 a = _mm256_loadu_ps(x), bad = _mm256_cmp_ps(a, a, _CMP_UNORD_Q);
        for (i = 8; i + 8 <= n; i += 8) {
            __m256 v = _mm256_loadu_ps(x + i);
            bad = _mm256_or_ps(bad, _mm256_cmp_ps(v, v, _CMP_UNORD_Q));
            a = is_min ? _mm256_min_ps(a, v) : _mm256_max_ps(a, v);
        }
        nan = _mm256_movemask_ps(bad) != 0;
        float t[8];
        _mm256_storeu_ps(t, a);
        m = t[0];
        for (int l = 1; l < 8; l++) m = is_min ? (t[l] < m ? t[l] : m) : (t[l] > m ? t[l] : m);
    }
    for (; i < n; i++) {
        nan |= x[i] != x[i];
        m = is_min ? (x[i] < m ? x[i] : m) : (x[i] > m ? x[i] : m);
    }
    return nan ? NAN : m;
}

/* y = exp(x - m); returns the sum of y */
RS_AVX2 static float rs_expsum_avx2(const float *x, float *y, int64_t n, float m) {
    __m256 vm = _mm256_set1_ps(m), s = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 e = rs_exp_neg256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm));
        _mm256_storeu_ps(y + i, e);
        s = _mm256_add_ps(s, e);
    }
    float t = rs_hsum256(s);
    for (; i < n; i++) t += (y[i] = expf(x[i] - m));
    return t;
}

/* sum of exp(x - m), nothing stored */
RS_AVX2 static float rs_expsum_only_avx2(const float *x, int64_t n, float m) {
    __m256 vm = _mm256_set1_ps(m), s = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) s = _mm256_add_ps(s, rs_exp_neg256(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm)));
    float t = rs_hsum256(s);
    for (; i < n; i++) t += expf(x[i] - m);
    return t;
}

RS_AVX2 static void rs_scale_avx2(float *y, int64_t n, float c) {
    __m256 vc = _mm256_set1_ps(c);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_loadu_ps(y + i), vc));
    for (; i < n; i++) y[i] *= c;
}

/* y = (x - c) - d: two steps, so that x close to c + d does not lose digits to rounding c + d */
RS_AVX2 static void rs_sub2_avx2(const float *x, float *y, int64_t n, float c, float d) {
    __m256 vc = _mm256_set1_ps(c), vd = _mm256_set1_ps(d);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_sub_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vc), vd));
    for (; i < n; i++) y[i] = (x[i] - c) - d;
}

RS_AVX2 static float rs_sum_avx2(const float *x, int64_t n) {
    __m256 a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
        b = _mm256_add_ps(b, _mm256_loadu_ps(x + i + 8));
    }
    for (; i + 8 <= n; i += 8) a = _mm256_add_ps(a, _mm256_loadu_ps(x + i));
    float t = rs_hsum256(_mm256_add_ps(a, b));
    for (; i < n; i++) t += x[i];
    return t;
}

/* sum of (x - m)^2 */
RS_AVX2 static float rs_sumsqdev_avx2(const float *x, int64_t n, float m) {
    __m256 vm = _mm256_set1_ps(m), a = _mm256_setzero_ps(), b = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm);
        a = _mm256_fmadd_ps(d0, d0, a);
        b = _mm256_fmadd_ps(d1, d1, b);
    }
    for (; i + 8 <= n; i += 8) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm);
        a = _mm256_fmadd_ps(d0, d0, a);
    }
    float t = rs_hsum256(_mm256_add_ps(a, b));
    for (; i < n; i++) t += (x[i] - m) * (x[i] - m);
    return t;
}

/* y = (x - m) * s * g + b; g and b may be NULL (1 and 0) */
RS_AVX2 static void rs_affine_avx2(const float *x, float *y, int64_t n, float m, float s,
                                   const float *g, const float *b) {
    __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(s);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vs);
        if (g) v = _mm256_mul_ps(v, _mm256_loadu_ps(g + i));
        if (b) v = _mm256_add_ps(v, _mm256_loadu_ps(b + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++) {
        float v = (x[i] - m) * s;
        if (g) v *= g[i];
        if (b) v += b[i];
        y[i] = v;
    }
}

/* y = (x - m) * s + t */
RS_AVX2 static void rs_scale_shift_avx2(const float *x, float *y, int64_t n, float m, float s,
                                        float t) {
    __m256 vm = _mm256_set1_ps(m), vs = _mm256_set1_ps(s), vt = _mm256_set1_ps(t);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vs, vt));
    for (; i < n; i++) y[i] = (x[i] - m) * s + t;
}

/* y = a + b + c; c may be NULL */
RS_AVX2 static void rs_add3_avx2(const float *a, const float *b, const float *c, float *y,
                                 int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_add_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        if (c) v = _mm256_add_ps(v, _mm256_loadu_ps(c + i));
        _mm256_storeu_ps(y + i, v);
    }
    for (; i < n; i++) y[i] = a[i] + b[i] + (c ? c[i] : 0.0f);
}
#endif /* RS_X86 */

/* ---- dispatching front ends ---- */

static RU_UNUSED float rs_extreme_nan(const float *x, int64_t n, int is_min) {
#if RS_X86
    if (rs_use_avx2()) return rs_extreme_nan_avx2(x, n, is_min);
#endif
    float m = x[0];
    int nan = 0;
    for (int64_t i = 0; i < n; i++) {
        nan |= x[i] != x[i];
        m = is_min ? (x[i] < m ? x[i] : m) : (x[i] > m ? x[i] : m);
    }
    return nan ? NAN : m;
}

static RU_UNUSED float rs_max(const float *x, int64_t n) {
#if RS_X86
    if (rs_use_avx2()) return rs_max_avx2(x, n);
#endif
    return ru_max_f32(x, n);
}

static RU_UNUSED void rs_exp_neg_inplace(float *v, int64_t n) {
#if RS_X86
    if (rs_use_avx2()) {
        rs_exp_neg_inplace_avx2(v, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) v[i] = expf(v[i]);
}

static RU_UNUSED float rs_expsum(const float *x, float *y, int64_t n, float m) {
#if RS_X86
    if (rs_use_avx2() && isfinite(m)) return rs_expsum_avx2(x, y, n, m);
#endif
    float t = 0;
    for (int64_t i = 0; i < n; i++) t += (y[i] = expf(x[i] - m));
    return t;
}

static RU_UNUSED float rs_expsum_only(const float *x, int64_t n, float m) {
#if RS_X86
    if (rs_use_avx2() && isfinite(m)) return rs_expsum_only_avx2(x, n, m);
#endif
    float t = 0;
    for (int64_t i = 0; i < n; i++) t += expf(x[i] - m);
    return t;
}

static RU_UNUSED void rs_scale(float *y, int64_t n, float c) {
#if RS_X86
    if (rs_use_avx2()) {
        rs_scale_avx2(y, n, c);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] *= c;
}

static RU_UNUSED void rs_sub2(const float *x, float *y, int64_t n, float c, float d) {
#if RS_X86
    if (rs_use_avx2()) {
        rs_sub2_avx2(x, y, n, c, d);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - c) - d;
}

static RU_UNUSED float rs_sum(const float *x, int64_t n) {
#if RS_X86
    if (rs_use_avx2()) return rs_sum_avx2(x, n);
#endif
    return ru_sum_f32(x, n);
}

static RU_UNUSED float rs_sumsqdev(const float *x, int64_t n, float m) {
#if RS_X86
    if (rs_use_avx2()) return rs_sumsqdev_avx2(x, n, m);
#endif
    return ru_sumsqdev_f32(x, n, m);
}

static RU_UNUSED void rs_affine(const float *x, float *y, int64_t n, float m, float s,
                                const float *g, const float *b) {
#if RS_X86
    if (rs_use_avx2()) {
        rs_affine_avx2(x, y, n, m, s, g, b);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) {
        float v = (x[i] - m) * s;
        if (g) v *= g[i];
        if (b) v += b[i];
        y[i] = v;
    }
}

static RU_UNUSED void rs_scale_shift(const float *x, float *y, int64_t n, float m, float s,
                                     float t) {
#if RS_X86
    if (rs_use_avx2()) {
        rs_scale_shift_avx2(x, y, n, m, s, t);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) * s + t;
}

static RU_UNUSED void rs_add3(const float *a, const float *b, const float *c, float *y, int64_t n) {
#if RS_X86
    if (rs_use_avx2()) {
        rs_add3_avx2(a, b, c, y, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] = a[i] + b[i] + (c ? c[i] : 0.0f);
}

#endif
