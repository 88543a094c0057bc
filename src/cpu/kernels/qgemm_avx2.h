/* The AVX2 loops of the 8-bit integer kernels (qgemm_avx2.c), for CPUs without AVX-512 VNNI.
 * Private to qgemm.c and qgemm_conv.c; callers check kqg_have_avx2() / kq_use_avx2() first.
 *
 * AVX2 has no exact 8-bit dot product: vpmaddubsw adds two u8 x s8 products into a saturating
 * int16. So both operands are widened to int16 once, at packing, and vpmaddwd multiplies them:
 * its two int16 x int16 products are summed in int32, exact for the +-255 x +-128 values here. */
#ifndef KILN_QGEMM_AVX2_H
#define KILN_QGEMM_AVX2_H

#include <stdint.h>

#define KQG_AVX2_MR 6 /* rows of the AVX2 register tile (16 columns: two ymm of int32 per row) */

/* One row of A: dst[k] = src[k] ^ flip as int16 for k < K, 0 up to Kp; returns the sum of dst. */
int32_t kqg_avx2_pack_a_row(const uint8_t *src, int64_t K, int64_t Kp, uint8_t flip, int16_t *dst);

/* The int16 copy (qgemm.h's kqg_b.wide layout) of one packed int8 panel of K4 groups, and the
 * panel's 16 column sums. */
void kqg_avx2_widen_panel(const int8_t *panel, int64_t K4, int16_t *wide, int32_t *colsum);

/* One panel of an untransposed B (rows k < K of src, ldb apart; its first nc <= 16 columns, the
 * others 0) straight into the int16 layout above, without the int8 panel: each bytes ^ flip as
 * int8, pairs of rows interleaved, 0 past K up to 4 K4 rows; and the panel's 16 column sums. */
void kqg_avx2_pack_b_panel(const uint8_t *src, int64_t ldb, int64_t K, int64_t K4, int nc, uint8_t flip,
                           int16_t *wide, int32_t *colsum);

/* c[i * ldc + j] = sum over k of a[i * lda + k] * column j of the wide panel b, for rows
 * i < mr (1 .. KQG_AVX2_MR), all 16 columns, K2 pairs of rows. */
void kqg_avx2_tile(int mr, int64_t K2, const int16_t *a, int64_t lda, const int16_t *b, int32_t *c,
                   int64_t ldc);

/* acc[m] = sum over k < Kp of a[m * Kp + k] * x[k], m < M (Kp a multiple of 4). Reads a and x in
 * whole blocks of 16: x must hold zeros up to Kp rounded up to 16, and a that many elements past
 * its last row. */
void kqg_avx2_gemv(const int16_t *a, int64_t M, int64_t Kp, const int16_t *x, int32_t *acc);

/* row[c] += colterm[c] - zb[c] * rs modulo 2^32 (zb NULL: all zero) */
void kqg_avx2_correct_row(int32_t *row, int64_t n, const uint32_t *colterm, const uint32_t *zb,
                          uint32_t rs);

/* qgemm.h's kqg_requant_row with its clamp bounds lo, hi worked out. */
void kqg_avx2_requant_row(const int32_t *acc, int64_t n, const float *scale_v, float scale_s,
                          const int32_t *bias_v, int32_t bias_s, int32_t zp, int is_s8, void *y,
                          float lo, float hi);
void kqg_avx2_scale_row(const int32_t *acc, int64_t n, const float *scale_v, float scale_s,
                        const float *bias_v, float *y);

/* Depthwise convolution (qgemm_conv.c): acc[o] = sum over taps t < ntaps of wt[t] * src[t][o],
 * o < n, in blocks of 16 (a ragged end is finished by a scalar loop: callers with room in src and
 * acc pass n rounded up instead); d[o] = x[o] - xz as int16; and ev[k] = x[2 k] - xz,
 * od[k] = x[2 k + 1] - xz (stride-2 phases). The widening loops touch only the n bytes of x and
 * the elements of d, ev, od they define. */
void kqg_avx2_dw_row(int32_t *acc, int64_t n, int ntaps, const int16_t *const *src, const int32_t *wt);
void kqg_avx2_widen_row(int16_t *d, const uint8_t *x, int64_t n, int32_t xz, int s8);
void kqg_avx2_widen_split2(int16_t *ev, int16_t *od, const uint8_t *x, int64_t n, int32_t xz, int s8);

#endif
