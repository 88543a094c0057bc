/* Splitting an input row by column phase for stride-2 windows: x[j] goes to phase (j + pl) & 1
 * at column (j + pl) >> 1, for the columns below Lq; the other columns keep the zeros the buffer
 * started with. The padded copies of the depthwise (conv_depthwise.c) and direct
 * (conv_direct.c) convolutions both use it, so that each tap then reads one contiguous run. */
#ifndef KILN_CONV_SPLIT_H
#define KILN_CONV_SPLIT_H

#include <stdint.h>

/* the placement a value at a time, from input j on */
static inline void kconv_split2_from(const float *x, int64_t j, int64_t IW, int64_t pl, int64_t Lq,
                                     float *d0, float *d1) {
    for (; j < IW; j++) {
        int64_t J = j + pl;
        if ((J >> 1) >= Lq) break;
        ((J & 1) ? d1 : d0)[J >> 1] = x[j];
    }
}

static inline void kconv_split2_plain(const float *x, int64_t IW, int64_t pl, int64_t Lq, float *d0,
                                      float *d1) {
    kconv_split2_from(x, 0, IW, pl, Lq, d0, d1);
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

/* 16 inputs per step, evens and odds by an in-lane shuffle and a cross-lane permute, the rest a
 * value at a time (pieces for the tail measured no faster on the EPYC VM) */
__attribute__((target("avx2"))) static inline void kconv_split2_avx2(const float *x, int64_t IW,
                                                                     int64_t pl, int64_t Lq,
                                                                     float *d0, float *d1) {
    int64_t j = 0;
    if (pl & 1) { /* x[0] lands in phase 1: start the pairs at x[1] */
        if ((pl >> 1) < Lq) d1[pl >> 1] = x[0];
        j = 1;
    }
    /* pairs (x[j], x[j+1]) -> d0[col], d1[col], col = (j + pl) / 2 */
    int64_t col = (j + pl) >> 1;
    for (; j + 16 <= IW && col + 8 <= Lq; j += 16, col += 8) {
        __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + 8);
        __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8));
        od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xD8));
        _mm256_storeu_ps(d0 + col, ev);
        _mm256_storeu_ps(d1 + col, od);
    }
    kconv_split2_from(x, j, IW, pl, Lq, d0, d1);
}

static inline __mmask16 kconv_split_lanes(int64_t n) {
    return (__mmask16)(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1);
}

/* 32 inputs per step, one two-source permute per phase, the ragged end by masks: the AVX2 form
 * spent half the time of a stride-2 depthwise layer (56x56 and 112x112 maps) in its shuffles and
 * scalar tail on AVX-512 CPUs. */
__attribute__((target("avx512f"))) static inline void kconv_split2_avx512(const float *x, int64_t IW,
                                                                          int64_t pl, int64_t Lq,
                                                                          float *d0, float *d1) {
    int64_t j = 0;
    if (pl & 1) {
        if ((pl >> 1) < Lq) d1[pl >> 1] = x[0];
        j = 1;
    }
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int64_t col = (j + pl) >> 1; j < IW && col < Lq; j += 32, col += 16) {
        int64_t left = IW - j, room = Lq - col;
        __m512 a = _mm512_maskz_loadu_ps(kconv_split_lanes(left), x + j);
        __m512 b = _mm512_maskz_loadu_ps(kconv_split_lanes(left - 16), x + j + 16);
        int64_t ne = (left + 1) / 2, no = left / 2; /* columns of each phase these inputs hold */
        _mm512_mask_storeu_ps(d0 + col, kconv_split_lanes(ne < room ? ne : room),
                              _mm512_permutex2var_ps(a, ev, b));
        _mm512_mask_storeu_ps(d1 + col, kconv_split_lanes(no < room ? no : room),
                              _mm512_permutex2var_ps(a, od, b));
    }
}
#endif

#endif
