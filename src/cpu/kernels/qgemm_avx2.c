/* The AVX2 loops of the 8-bit integer kernels; see qgemm_avx2.h for why the products are formed
 * from int16 with vpmaddwd. */
#include "qgemm_avx2.h"
#include "qgemm.h"
#include "quant_isa.h"
#include <string.h>

#ifdef KQ_X86
#include <immintrin.h>

/* ---- packing ---- */

KQ_AVX2 int32_t kqg_avx2_pack_a_row(const uint8_t *src, int64_t K, int64_t Kp, uint8_t flip, int16_t *dst) {
    const __m128i fl = _mm_set1_epi8((char)flip), zero = _mm_setzero_si128();
    __m128i sum = zero;
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m128i v = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + k)), fl);
        _mm256_storeu_si256((__m256i *)(dst + k), _mm256_cvtepu8_epi16(v));
        sum = _mm_add_epi64(sum, _mm_sad_epu8(v, zero));
    }
    int32_t s = (int32_t)(_mm_cvtsi128_si64(sum) + _mm_extract_epi64(sum, 1));
    for (; k < K; k++) {
        uint8_t v = src[k] ^ flip;
        dst[k] = v;
        s += v;
    }
    for (; k < Kp; k++) dst[k] = 0;
    return s;
}

/* The 32 bytes of 8 columns x 4 rows ([column][row]) as two vectors of 8 columns x 2 rows in
 * int16: rows 0-1 to w0, rows 2-3 to w1. */
KQ_AVX2 static inline void widen_group8(const int8_t *p, int16_t *w0, int16_t *w1) {
    /* within each 128-bit lane: rows 0-1 of its 4 columns, then rows 2-3 */
    const __m256i split = _mm256_setr_epi8(0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15,
                                           0, 1, 4, 5, 8, 9, 12, 13, 2, 3, 6, 7, 10, 11, 14, 15);
    __m256i v = _mm256_shuffle_epi8(_mm256_loadu_si256((const __m256i *)p), split);
    v = _mm256_permute4x64_epi64(v, 0xd8); /* 64-bit quarters 0, 2, 1, 3: rows 0-1 low, 2-3 high */
    _mm256_storeu_si256((__m256i *)w0, _mm256_cvtepi8_epi16(_mm256_castsi256_si128(v)));
    _mm256_storeu_si256((__m256i *)w1, _mm256_cvtepi8_epi16(_mm256_extracti128_si256(v, 1)));
}

KQ_AVX2 void kqg_avx2_widen_panel(const int8_t *panel, int64_t K4, int16_t *wide, int32_t *colsum) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    for (int64_t k4 = 0; k4 < K4; k4++) {
        int16_t *w = wide + k4 * 64; /* pairs 2 k4 and 2 k4 + 1 */
        widen_group8(panel + k4 * 64, w, w + 32);
        widen_group8(panel + k4 * 64 + 32, w + 16, w + 48);
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)w), ones));
        s0 = _mm256_add_epi32(s0, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + 32)), ones));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + 16)), ones));
        s1 = _mm256_add_epi32(s1, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(w + 48)), ones));
    }
    _mm256_storeu_si256((__m256i *)colsum, s0);
    _mm256_storeu_si256((__m256i *)(colsum + 8), s1);
}

/* 16 columns of two rows, already flipped, as 32 int16 (column-major pairs) plus their sums */
KQ_AVX2 static inline void pack_pair16(__m128i r0, __m128i r1, int16_t *w, __m256i *s0, __m256i *s1) {
    const __m256i ones = _mm256_set1_epi16(1);
    __m256i lo = _mm256_cvtepi8_epi16(_mm_unpacklo_epi8(r0, r1));
    __m256i hi = _mm256_cvtepi8_epi16(_mm_unpackhi_epi8(r0, r1));
    _mm256_store_si256((__m256i *)w, lo);
    _mm256_store_si256((__m256i *)(w + 16), hi);
    *s0 = _mm256_add_epi32(*s0, _mm256_madd_epi16(lo, ones));
    *s1 = _mm256_add_epi32(*s1, _mm256_madd_epi16(hi, ones));
}

/* a partial panel's row: the first nc bytes flipped, the rest 0 (padding columns are not flipped) */
static inline __m128i partial_row(const uint8_t *src, int nc, uint8_t flip) {
    uint8_t t[16] = {0};
    for (int c = 0; c < nc; c++) t[c] = src[c] ^ flip;
    __m128i v;
    memcpy(&v, t, 16);
    return v;
}

/* Two rows per step instead of the four-row int8 transpose plus a second pass to widen it. */
KQ_AVX2 void kqg_avx2_pack_b_panel(const uint8_t *src, int64_t ldb, int64_t K, int64_t K4, int nc, uint8_t flip,
                                   int16_t *wide, int32_t *colsum) {
    const __m128i fl = _mm_set1_epi8((char)flip), zero = _mm_setzero_si128();
    __m256i s0 = _mm256_setzero_si256(), s1 = _mm256_setzero_si256();
    int64_t p = 0;
    if (nc == 16) {
        for (; 2 * p + 1 < K; p++) {
            __m128i r0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + 2 * p * ldb)), fl);
            __m128i r1 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + (2 * p + 1) * ldb)), fl);
            pack_pair16(r0, r1, wide + p * 32, &s0, &s1);
        }
        if (2 * p < K) {
            pack_pair16(_mm_xor_si128(_mm_loadu_si128((const __m128i *)(src + 2 * p * ldb)), fl), zero,
                        wide + p * 32, &s0, &s1);
            p++;
        }
    } else {
        for (; 2 * p < K; p++) {
            __m128i r0 = partial_row(src + 2 * p * ldb, nc, flip);
            __m128i r1 = 2 * p + 1 < K ? partial_row(src + (2 * p + 1) * ldb, nc, flip) : zero;
            pack_pair16(r0, r1, wide + p * 32, &s0, &s1);
        }
    }
    for (; p < 2 * K4; p++) memset(wide + p * 32, 0, 64);
    _mm256_storeu_si256((__m256i *)colsum, s0);
    _mm256_storeu_si256((__m256i *)(colsum + 8), s1);
}

/* ---- register tile ---- */

static inline __attribute__((always_inline)) KQ_AVX2 void
tile_body(const int mr, int64_t K2, const int16_t *a, int64_t lda, const int16_t *b, int32_t *c, int64_t ldc) {
    __m256i acc[KQG_AVX2_MR][2];
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) acc[i][0] = acc[i][1] = _mm256_setzero_si256();
    for (int64_t p = 0; p < K2; p++) {
        __m256i b0 = _mm256_load_si256((const __m256i *)(b + p * 32));
        __m256i b1 = _mm256_load_si256((const __m256i *)(b + p * 32 + 16));
#pragma GCC unroll 6
        for (int i = 0; i < mr; i++) {
            int32_t pair;
            memcpy(&pair, a + i * lda + 2 * p, 4);
            __m256i av = _mm256_set1_epi32(pair);
            acc[i][0] = _mm256_add_epi32(acc[i][0], _mm256_madd_epi16(av, b0));
            acc[i][1] = _mm256_add_epi32(acc[i][1], _mm256_madd_epi16(av, b1));
        }
    }
#pragma GCC unroll 6
    for (int i = 0; i < mr; i++) {
        _mm256_storeu_si256((__m256i *)(c + i * ldc), acc[i][0]);
        _mm256_storeu_si256((__m256i *)(c + i * ldc + 8), acc[i][1]);
    }
}

#define TILE(m)                                                                                     \
    KQ_AVX2 static void tile_##m(int64_t K2, const int16_t *a, int64_t lda, const int16_t *b,       \
                                 int32_t *c, int64_t ldc) {                                         \
        tile_body(m, K2, a, lda, b, c, ldc);                                                        \
    }
TILE(1) TILE(2) TILE(3) TILE(4) TILE(5) TILE(6)

typedef void (*tile_fn)(int64_t, const int16_t *, int64_t, const int16_t *, int32_t *, int64_t);
static const tile_fn tiles[KQG_AVX2_MR] = {tile_1, tile_2, tile_3, tile_4, tile_5, tile_6};

void kqg_avx2_tile(int mr, int64_t K2, const int16_t *a, int64_t lda, const int16_t *b, int32_t *c,
                   int64_t ldc) {
    tiles[mr - 1](K2, a, lda, b, c, ldc);
}

/* ---- one column: dot products of rows ---- */

/* the 8 sums of the 8 int32 lanes of each v[i], in order */
KQ_AVX2 static inline __m256i hsum8(const __m256i v[8]) {
    __m256i s01 = _mm256_hadd_epi32(v[0], v[1]), s23 = _mm256_hadd_epi32(v[2], v[3]);
    __m256i s45 = _mm256_hadd_epi32(v[4], v[5]), s67 = _mm256_hadd_epi32(v[6], v[7]);
    __m256i s0123 = _mm256_hadd_epi32(s01, s23), s4567 = _mm256_hadd_epi32(s45, s67);
    /* each lane now holds half of every row's sum: rows 0-3 then 4-7 per 128-bit lane */
    return _mm256_add_epi32(_mm256_permute2x128_si256(s0123, s4567, 0x20),
                            _mm256_permute2x128_si256(s0123, s4567, 0x31));
}

KQ_AVX2 void kqg_avx2_gemv(const int16_t *a, int64_t M, int64_t Kp, const int16_t *x, int32_t *acc) {
    int64_t m = 0;
    for (; m + 8 <= M; m += 8) {
        __m256i s[8];
        for (int i = 0; i < 8; i++) s[i] = _mm256_setzero_si256();
        for (int64_t k = 0; k < Kp; k += 16) {
            __m256i xv = _mm256_loadu_si256((const __m256i *)(x + k));
            for (int i = 0; i < 8; i++)
                s[i] = _mm256_add_epi32(s[i], _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(a + (m + i) * Kp + k)), xv));
        }
        _mm256_storeu_si256((__m256i *)(acc + m), hsum8(s));
    }
    for (; m < M; m++) {
        __m256i s = _mm256_setzero_si256();
        for (int64_t k = 0; k < Kp; k += 16)
            s = _mm256_add_epi32(s, _mm256_madd_epi16(_mm256_loadu_si256((const __m256i *)(a + m * Kp + k)),
                                                      _mm256_loadu_si256((const __m256i *)(x + k))));
        __m128i h = _mm_add_epi32(_mm256_castsi256_si128(s), _mm256_extracti128_si256(s, 1));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0x4e));
        h = _mm_add_epi32(h, _mm_shuffle_epi32(h, 0xb1));
        acc[m] = _mm_cvtsi128_si32(h);
    }
}

/* ---- corrections and epilogues; tails go through a padded copy of 8 lanes so that every
 * element takes the same vector steps ---- */

KQ_AVX2 void kqg_avx2_correct_row(int32_t *row, int64_t n, const uint32_t *colterm, const uint32_t *zb,
                                  uint32_t rs) {
    const __m256i vr = _mm256_set1_epi32((int32_t)rs);
    int64_t c = 0;
    for (; c + 8 <= n; c += 8) {
        __m256i v = _mm256_add_epi32(_mm256_loadu_si256((const __m256i *)(row + c)),
                                     _mm256_loadu_si256((const __m256i *)(colterm + c)));
        if (zb) v = _mm256_sub_epi32(v, _mm256_mullo_epi32(_mm256_loadu_si256((const __m256i *)(zb + c)), vr));
        _mm256_storeu_si256((__m256i *)(row + c), v);
    }
    for (; c < n; c++) row[c] = (int32_t)((uint32_t)row[c] + colterm[c] - (zb ? zb[c] * rs : 0u));
}

/* 8 int32 codes, each within the output type's range, to 8 bytes */
KQ_AVX2 static inline __m128i codes_to_bytes(__m256i q, int is_s8) {
    __m256i w = _mm256_packs_epi32(q, q); /* lane-wise: [q0-3 q0-3 | q4-7 q4-7] as int16 */
    __m256i b = is_s8 ? _mm256_packs_epi16(w, w) : _mm256_packus_epi16(w, w);
    return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4)));
}

/* 32 codes to 32 bytes with three packs and one permute instead of eight and four: the packs
 * interleave the four vectors by 128-bit lane, the permute puts the 4-byte groups back */
KQ_AVX2 static inline __m256i codes32_to_bytes(__m256i q0, __m256i q1, __m256i q2, __m256i q3, int is_s8) {
    __m256i w01 = _mm256_packs_epi32(q0, q1), w23 = _mm256_packs_epi32(q2, q3);
    __m256i b = is_s8 ? _mm256_packs_epi16(w01, w23) : _mm256_packus_epi16(w01, w23);
    return _mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

/* the int32 codes of acc[0, 8), before packing */
KQ_AVX2 static inline __m256i requant_codes(const int32_t *acc, const float *scale_v, __m256 vs, const int32_t *bias_v,
                                            __m256i vb, __m256 vlo, __m256 vhi, __m256i vz) {
    __m256i v = _mm256_loadu_si256((const __m256i *)acc);
    v = _mm256_add_epi32(v, bias_v ? _mm256_loadu_si256((const __m256i *)bias_v) : vb);
    __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(v), scale_v ? _mm256_loadu_ps(scale_v) : vs);
    f = _mm256_min_ps(_mm256_max_ps(f, vlo), vhi); /* max(NaN, lo) = lo, as the scalar r > lo ? r : lo */
    return _mm256_add_epi32(_mm256_cvtps_epi32(f), vz);
}

KQ_AVX2 static inline __m128i requant8(const int32_t *acc, const float *scale_v, __m256 vs, const int32_t *bias_v,
                                       __m256i vb, __m256 vlo, __m256 vhi, __m256i vz, int is_s8) {
    return codes_to_bytes(requant_codes(acc, scale_v, vs, bias_v, vb, vlo, vhi, vz), is_s8);
}

#define AT(p, j) ((p) ? (p) + (j) : NULL)

/* Rows of 8 or more end with one block of 8 that overlaps the one before (the same codes are
 * stored twice); only shorter rows go through a padded copy. */
KQ_AVX2 void kqg_avx2_requant_row(const int32_t *acc, int64_t n, const float *scale_v, float scale_s,
                                  const int32_t *bias_v, int32_t bias_s, int32_t zp, int is_s8, void *y,
                                  float lo, float hi) {
    const __m256 vlo = _mm256_set1_ps(lo), vhi = _mm256_set1_ps(hi), vs = _mm256_set1_ps(scale_s);
    const __m256i vb = _mm256_set1_epi32(bias_s), vz = _mm256_set1_epi32(zp);
    uint8_t *out = y;
    int64_t j = 0;
    for (; j + 32 <= n; j += 32) { /* four named vectors: an array of them went through the stack */
        __m256i q0 = requant_codes(acc + j, AT(scale_v, j), vs, AT(bias_v, j), vb, vlo, vhi, vz);
        __m256i q1 = requant_codes(acc + j + 8, AT(scale_v, j + 8), vs, AT(bias_v, j + 8), vb, vlo, vhi, vz);
        __m256i q2 = requant_codes(acc + j + 16, AT(scale_v, j + 16), vs, AT(bias_v, j + 16), vb, vlo, vhi, vz);
        __m256i q3 = requant_codes(acc + j + 24, AT(scale_v, j + 24), vs, AT(bias_v, j + 24), vb, vlo, vhi, vz);
        _mm256_storeu_si256((__m256i *)(out + j), codes32_to_bytes(q0, q1, q2, q3, is_s8));
    }
    for (; j + 8 <= n; j += 8)
        _mm_storel_epi64((__m128i *)(out + j),
                         requant8(acc + j, AT(scale_v, j), vs, AT(bias_v, j), vb, vlo, vhi, vz, is_s8));
    if (j < n && n >= 8) {
        j = n - 8;
        _mm_storel_epi64((__m128i *)(out + j),
                         requant8(acc + j, AT(scale_v, j), vs, AT(bias_v, j), vb, vlo, vhi, vz, is_s8));
    } else if (j < n) {
        int32_t ta[8] = {0}, tb[8] = {0};
        float ts[8] = {0};
        uint8_t tq[8];
        int64_t r = n - j;
        memcpy(ta, acc + j, sizeof(int32_t) * (size_t)r);
        if (scale_v) memcpy(ts, scale_v + j, sizeof(float) * (size_t)r);
        if (bias_v) memcpy(tb, bias_v + j, sizeof(int32_t) * (size_t)r);
        _mm_storel_epi64((__m128i *)tq, requant8(ta, scale_v ? ts : NULL, vs, bias_v ? tb : NULL, vb, vlo, vhi, vz, is_s8));
        memcpy(out + j, tq, (size_t)r);
    }
}

/* Plain AVX2 without FMA: the product and the bias must stay two roundings, as in the scalar loop
 * (-std=gnu11 lets the compiler contract a multiply and an add where FMA is enabled). */
__attribute__((target("avx2"))) void kqg_avx2_scale_row(const int32_t *acc, int64_t n, const float *scale_v,
                                                         float scale_s, const float *bias_v, float *y) {
    const __m256 vs = _mm256_set1_ps(scale_s);
    int64_t j = 0;
    for (; j + 8 <= n; j += 8) {
        __m256 f = _mm256_mul_ps(_mm256_cvtepi32_ps(_mm256_loadu_si256((const __m256i *)(acc + j))),
                                 scale_v ? _mm256_loadu_ps(scale_v + j) : vs);
        if (bias_v) f = _mm256_add_ps(f, _mm256_loadu_ps(bias_v + j));
        _mm256_storeu_ps(y + j, f);
    }
    for (; j < n; j++) {
        float v = (float)acc[j] * (scale_v ? scale_v[j] : scale_s);
        y[j] = bias_v ? v + bias_v[j] : v;
    }
}

/* ---- depthwise convolution ---- */

/* Two taps at a time: their int16 inputs interleaved in pairs and multiplied by the pair of
 * weights with vpmaddwd (unpack works within 128-bit lanes, so the sums come out as columns
 * 0-3, 8-11 and 4-7, 12-15, put back in order by the permutes). x - xz and w - wz stay within
 * +-255: the int32 sums are exact. The weight pairs are made once per call, not per block. */
KQ_AVX2 static inline void dw_block16(int32_t *acc, int64_t o, int npairs, const int16_t *const *src,
                                      const int32_t *wp, int odd_last) {
    __m256i lo = _mm256_setzero_si256(), hi = _mm256_setzero_si256();
    int full = npairs - odd_last;
    for (int q = 0; q < full; q++) {
        __m256i a = _mm256_loadu_si256((const __m256i *)(src[2 * q] + o));
        __m256i b = _mm256_loadu_si256((const __m256i *)(src[2 * q + 1] + o));
        __m256i w = _mm256_set1_epi32(wp[q]);
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, b), w));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, b), w));
    }
    if (odd_last) { /* the last tap alone: its partner's weight is 0, any input will do */
        __m256i a = _mm256_loadu_si256((const __m256i *)(src[2 * full] + o));
        __m256i w = _mm256_set1_epi32(wp[full]);
        lo = _mm256_add_epi32(lo, _mm256_madd_epi16(_mm256_unpacklo_epi16(a, a), w));
        hi = _mm256_add_epi32(hi, _mm256_madd_epi16(_mm256_unpackhi_epi16(a, a), w));
    }
    _mm256_storeu_si256((__m256i *)(acc + o), _mm256_permute2x128_si256(lo, hi, 0x20));
    _mm256_storeu_si256((__m256i *)(acc + o + 8), _mm256_permute2x128_si256(lo, hi, 0x31));
}

#define DW_MAXPAIRS 64 /* 11 x 11 kernels; larger ones take the scalar loop */

KQ_AVX2 void kqg_avx2_dw_row(int32_t *acc, int64_t n, int ntaps, const int16_t *const *src, const int32_t *wt) {
    int32_t wp[DW_MAXPAIRS];
    int npairs = (ntaps + 1) / 2;
    int64_t o = 0;
    if (npairs <= DW_MAXPAIRS) {
        for (int q = 0; q < npairs; q++) {
            uint32_t w1 = 2 * q + 1 < ntaps ? (uint32_t)wt[2 * q + 1] : 0u;
            wp[q] = (int32_t)((w1 << 16) | ((uint32_t)wt[2 * q] & 0xffffu));
        }
        for (; o + 16 <= n; o += 16) dw_block16(acc, o, npairs, src, wp, ntaps & 1);
    }
    for (; o < n; o++) {
        int32_t a = 0;
        for (int t = 0; t < ntaps; t++) a += wt[t] * src[t][o];
        acc[o] = a;
    }
}

/* ---- widening the depthwise input rows. Rows shorter than a vector are done with two
 * overlapping narrower ones, which store the same values twice, so that nothing is read or
 * written outside the row: 7- and 14-wide maps no longer go through scalar loops. ---- */

KQ_AVX2 static inline __m128i widen_bytes8(__m128i b, __m128i vz, int s8) {
    return _mm_sub_epi16(s8 ? _mm_cvtepi8_epi16(b) : _mm_cvtepu8_epi16(b), vz);
}

KQ_AVX2 static inline void widen16(int16_t *d, const uint8_t *x, __m256i vz, int s8) {
    __m128i b = _mm_loadu_si128((const __m128i *)x);
    __m256i v = s8 ? _mm256_cvtepi8_epi16(b) : _mm256_cvtepu8_epi16(b);
    _mm256_storeu_si256((__m256i *)d, _mm256_sub_epi16(v, vz));
}

KQ_AVX2 static inline void widen8(int16_t *d, const uint8_t *x, __m128i vz, int s8) {
    _mm_storeu_si128((__m128i *)d, widen_bytes8(_mm_loadl_epi64((const __m128i *)x), vz, s8));
}

KQ_AVX2 static inline void widen4(int16_t *d, const uint8_t *x, __m128i vz, int s8) {
    int32_t v;
    memcpy(&v, x, 4);
    _mm_storel_epi64((__m128i *)d, widen_bytes8(_mm_cvtsi32_si128(v), vz, s8));
}

KQ_AVX2 void kqg_avx2_widen_row(int16_t *d, const uint8_t *x, int64_t n, int32_t xz, int s8) {
    const __m256i vz = _mm256_set1_epi16((short)xz);
    const __m128i vz4 = _mm256_castsi256_si128(vz);
    if (n >= 16) {
        int64_t o = 0;
        for (; o + 16 <= n; o += 16) widen16(d + o, x + o, vz, s8);
        if (o < n) widen16(d + n - 16, x + n - 16, vz, s8);
    } else if (n >= 8) {
        widen8(d, x, vz4, s8);
        widen8(d + n - 8, x + n - 8, vz4, s8);
    } else if (n >= 4) {
        widen4(d, x, vz4, s8);
        widen4(d + n - 4, x + n - 4, vz4, s8);
    } else {
        for (int64_t o = 0; o < n; o++) d[o] = (int16_t)((s8 ? (int32_t)(int8_t)x[o] : (int32_t)x[o]) - xz);
    }
}

/* even bytes to the low 8, odd ones to the high 8 */
#define EVEN_ODD_BYTES _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15)

/* x[i, i + 32) split by parity into 16 + 16 int16 at ev[i / 2], od[i / 2] (i even) */
KQ_AVX2 static inline void split32(int16_t *ev, int16_t *od, const uint8_t *x, __m256i vz, int s8) {
    __m128i a = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)x), EVEN_ODD_BYTES);
    __m128i b = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)(x + 16)), EVEN_ODD_BYTES);
    __m128i e = _mm_unpacklo_epi64(a, b), o = _mm_unpackhi_epi64(a, b);
    __m256i ve = s8 ? _mm256_cvtepi8_epi16(e) : _mm256_cvtepu8_epi16(e);
    __m256i vo = s8 ? _mm256_cvtepi8_epi16(o) : _mm256_cvtepu8_epi16(o);
    _mm256_storeu_si256((__m256i *)ev, _mm256_sub_epi16(ve, vz));
    _mm256_storeu_si256((__m256i *)od, _mm256_sub_epi16(vo, vz));
}

KQ_AVX2 static inline void split16(int16_t *ev, int16_t *od, const uint8_t *x, __m128i vz, int s8) {
    __m128i a = _mm_shuffle_epi8(_mm_loadu_si128((const __m128i *)x), EVEN_ODD_BYTES);
    _mm_storeu_si128((__m128i *)ev, widen_bytes8(a, vz, s8));
    _mm_storeu_si128((__m128i *)od, widen_bytes8(_mm_srli_si128(a, 8), vz, s8));
}

KQ_AVX2 static inline void split8(int16_t *ev, int16_t *od, const uint8_t *x, __m128i vz, int s8) {
    /* bytes 0-7 only: evens to 0-3, odds to 8-11 */
    __m128i a = _mm_shuffle_epi8(_mm_loadl_epi64((const __m128i *)x), EVEN_ODD_BYTES);
    __m128i v = widen_bytes8(_mm_unpacklo_epi32(a, _mm_srli_si128(a, 8)), vz, s8);
    _mm_storel_epi64((__m128i *)ev, v);
    _mm_storel_epi64((__m128i *)od, _mm_srli_si128(v, 8));
}

/* One width for the whole row: blocks of w bytes, then one more ending within a byte of the end
 * (its start kept even, so that the parities stay), and the last byte alone when that left it. */
KQ_AVX2 void kqg_avx2_widen_split2(int16_t *ev, int16_t *od, const uint8_t *x, int64_t n, int32_t xz, int s8) {
    const __m256i vz = _mm256_set1_epi16((short)xz);
    const __m128i vz8 = _mm256_castsi256_si128(vz);
    int64_t w = n >= 32 ? 32 : n >= 16 ? 16 : n >= 8 ? 8 : 0, i = 0;
    if (w) {
        for (;; i += w) {
            if (i + w > n) i = (n - w) & ~(int64_t)1;
            if (w == 32) split32(ev + i / 2, od + i / 2, x + i, vz, s8);
            else if (w == 16) split16(ev + i / 2, od + i / 2, x + i, vz8, s8);
            else split8(ev + i / 2, od + i / 2, x + i, vz8, s8);
            if (i + w >= n - 1) break;
        }
        i += w;
    }
    for (; i < n; i++) {
        int16_t v = (int16_t)((s8 ? (int32_t)(int8_t)x[i] : (int32_t)x[i]) - xz);
        if (i & 1) od[i / 2] = v;
        else ev[i / 2] = v;
    }
}

#endif
