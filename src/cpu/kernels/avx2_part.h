/* AVX2 vectors of which only the first n lanes (or lanes [a, b)) are in memory: the ragged ends of
 * rows. They are loaded and stored in 4/2/1-float pieces, not with vmaskmovps: its stores are
 * microcoded on AMD cores (Zen 3: a depthwise layer's 7- to 56-float row copies spent 61% of
 * their time after the masked store), and every short row of a small map ends with one. Nothing
 * outside the lanes is touched, so a part may end a buffer. */
#ifndef KILN_AVX2_PART_H
#define KILN_AVX2_PART_H

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define KAVX2_PART __attribute__((target("avx2"), always_inline)) static inline

/* n (0..4) floats from p, the rest zero */
KAVX2_PART __m128 kavx2_load4_part(const float *p, int n) {
    switch (n) {
    case 0: return _mm_setzero_ps();
    case 1: return _mm_load_ss(p);
    case 2: return _mm_castsi128_ps(_mm_loadl_epi64((const __m128i_u *)p)); /* unaligned-safe */
    case 3: return _mm_movelh_ps(_mm_castsi128_ps(_mm_loadl_epi64((const __m128i_u *)p)), _mm_load_ss(p + 2));
    default: return _mm_loadu_ps(p);
    }
}

/* n (0..8, more reads 8) floats from p, the rest zero */
KAVX2_PART __m256 kavx2_load_part(const float *p, int64_t n) {
    if (n >= 8) return _mm256_loadu_ps(p);
    if (n <= 4) return _mm256_castps128_ps256(kavx2_load4_part(p, (int)(n < 0 ? 0 : n)));
    return _mm256_insertf128_ps(_mm256_castps128_ps256(_mm_loadu_ps(p)),
                                kavx2_load4_part(p + 4, (int)n - 4), 1);
}

/* the first n (0..8, more stores 8) lanes of v to p[0..n) */
KAVX2_PART void kavx2_store_part(float *p, __m256 v, int64_t n) {
    if (n >= 8) {
        _mm256_storeu_ps(p, v);
        return;
    }
    __m128 q = _mm256_castps256_ps128(v);
    if (n >= 4) {
        _mm_storeu_ps(p, q);
        q = _mm256_extractf128_ps(v, 1);
        p += 4;
        n -= 4;
    }
    if (n >= 2) {
        _mm_storel_epi64((__m128i_u *)p, _mm_castps_si128(q));
        q = _mm_movehl_ps(q, q);
        p += 2;
        n -= 2;
    }
    if (n > 0) _mm_store_ss(p, q);
}

/* lanes [a, b) of v to p[a..b) (0 <= a <= b <= 8) */
KAVX2_PART void kavx2_store_range(float *p, __m256 v, int a, int b) {
    if (a >= b) return;
    if (a) v = _mm256_permutevar8x32_ps(v, _mm256_add_epi32(_mm256_set1_epi32(a),
                                                            _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7)));
    kavx2_store_part(p + a, v, b - a);
}
#endif

#endif
