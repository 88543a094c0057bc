/* 8-bit integer matrix products with int32 accumulation (qgemm.c, qgemm_conv.c), shared by
 * MatMulInteger, QLinearMatMul, ConvInteger, QLinearConv and the com.microsoft quantised
 * products.
 *
 * The kernel multiplies unsigned bytes of A by signed bytes of B, four pairs at a time into an
 * int32 lane (AVX-512 VNNI vpdpbusd; a portable loop elsewhere). Every uint8/int8 combination
 * maps onto that one form: an int8 A is stored as a + 128 (uint8), a uint8 B as b - 128 (int8),
 * and the shifts fold into the zero points. With ZA = za + offA and ZB[n] = zb[n] - offB,
 *     sum_k (a - za)(b - zb[n]) = dot(Au, Bs) - ZA colsum(Bs)[n] - ZB[n] rowsum(Au) + K ZA ZB[n],
 * computed modulo 2^32 like onnxruntime's int32 accumulators. vpdpbusd adds its four products at
 * full precision (it is the 8-bit pmaddubsw whose int16 sums saturate, not this one), so the
 * result is exact for every K that int32 holds. */
#ifndef KILN_QGEMM_H
#define KILN_QGEMM_H

#include "ops/op.h"
#include <stdint.h>

#define KQG_NR 16 /* columns of a packed B panel: one zmm of int32 sums */

/* A packed: M rows of K4 * 4 bytes (K padded with zeros), each row value + off as uint8. Where
 * the AVX2 kernel runs (kqg_have_avx2), the same values are stored widened to int16 in `wide`
 * instead (M rows of K4 * 4), and data is NULL. */
typedef struct kqg_a {
    int64_t M, K, K4;
    uint8_t *data;
    int16_t *wide;
    int32_t *rowsum; /* sum of each row's stored bytes */
    int32_t off;     /* 0 for uint8 sources, 128 for int8 */
} kqg_a;

/* B packed: ceil(N / 16) panels; panel q holds, for each group of 4 rows k4, the 16 columns'
 * 4 bytes (column j's rows 4 k4 .. 4 k4 + 3 at q * K4 * 64 + k4 * 64 + j * 4), value - off as
 * int8; padding (rows past K, columns past N) is 0. For the AVX2 kernel `wide` holds the same
 * values as int16, panel q at q * K4 * 64: for each pair of rows p, the 16 columns' 2 values
 * (column j's rows 2 p, 2 p + 1 at p * 32 + j * 2), so that one vpmaddwd multiplies a broadcast
 * pair of A with 8 columns; NULL elsewhere. */
typedef struct kqg_b {
    int64_t K, N, K4, np;
    int8_t *data;
    int16_t *wide;
    int32_t *colsum; /* np * 16 sums of each column's stored bytes */
    int32_t off;     /* 0 for int8 sources, 128 for uint8 */
} kqg_b;

/* 1 when the CPU runs the VNNI kernel (KILN_NO_VNNI=1 forces the portable kernels, the AVX-512
 * packing and epilogue loops included, for tests). */
int kqg_have_vnni(void);
/* 1 when the AVX2 kernel (int16 products summed in pairs by vpmaddwd) runs instead: AVX2 and FMA
 * without VNNI, or KILN_NO_AVX512=1 (see quant_isa.h). */
int kqg_have_avx2(void);

kiln_status kqg_a_init(kiln_ctx *ctx, kqg_a *a, int64_t M, int64_t K);
void kqg_a_free(kqg_a *a);
/* Rows of src (dt uint8/int8, row stride lda) into a (initialised for M x K). */
void kqg_pack_a(kiln_ctx *ctx, kqg_a *a, int dt, const void *src, int64_t lda);

kiln_status kqg_b_init(kiln_ctx *ctx, kqg_b *b, int64_t K, int64_t N);
void kqg_b_free(kqg_b *b);
/* src holds B [K, N] with row stride ldb, or when trans its transpose [N, K] with row stride ldb. */
void kqg_pack_b(kiln_ctx *ctx, kqg_b *b, int dt, const void *src, int64_t ldb, int trans);

/* Receives the exact sums of rows [m0, m0 + mc) x columns [n0, n0 + nc): acc[i * ld + j] for
 * row m0 + i, column n0 + j. Called from worker threads, on disjoint blocks. */
typedef void (*kqg_epi_fn)(void *arg, int64_t m0, int64_t n0, int64_t mc, int64_t nc,
                           const int32_t *acc, int64_t ld);

/* sum_k (a[m,k] - za) (b[k,n] - zb) for every (m, n), handed to epi block by block over ctx's
 * threads. za: M values (za_rows) or 1, NULL for 0; zb: N values (zb_cols) or 1, NULL for 0. */
void kqg_gemm(kiln_ctx *ctx, const kqg_a *a, const kqg_b *b, const int32_t *za, int za_rows,
              const int32_t *zb, int zb_cols, kqg_epi_fn epi, void *arg);

/* The same product for a single column b (x[k], k < K, of type xdt, zero point xz) where the
 * AVX2 kernel packs A (kqg_have_avx2): one dot product per row instead of a 16-column panel
 * that is mostly padding. Hands every row to epi at once (m0 = n0 = 0, nc = 1, ld = 1). Returns 0
 * without calling epi when the AVX2 kernel is not the one in use. */
int kqg_gemv(kiln_ctx *ctx, const kqg_a *a, const int32_t *za, int za_rows, int xdt, const void *x,
             int32_t xz, kqg_epi_fn epi, void *arg);

/* Epilogue pieces. y[j] = saturate(round_half_even(clamp(float(acc[j] + bias) * scale)) + zp)
 * as onnxruntime's MlasRequantizeOutput (the clamp to [lo - zp, hi - zp] comes before rounding,
 * a NaN product takes the low end). scale: per element (scale_v[j]) or scale_s when scale_v is
 * NULL; bias likewise (bias_v or bias_s, added modulo 2^32). dt: uint8 or int8. */
void kqg_requant_row(const int32_t *acc, int64_t n, const float *scale_v, float scale_s,
                     const int32_t *bias_v, int32_t bias_s, int32_t zp, int dt, void *y);
/* y[j] = float(acc[j]) * scale (scale_v[j] or scale_s) [+ bias_v[j]] */
void kqg_scale_row(const int32_t *acc, int64_t n, const float *scale_v, float scale_s,
                   const float *bias_v, float *y);

/* ---- convolution (qgemm_conv.c) ---- */
typedef struct kqg_conv_geom {
    int nsp; /* spatial rank */
    int64_t N, C, M, group;
    int64_t in_sp[KILN_MAX_RANK], out_sp[KILN_MAX_RANK], k[KILN_MAX_RANK];
    int64_t stride[KILN_MAX_RANK], dil[KILN_MAX_RANK], pad_lo[KILN_MAX_RANK];
    int64_t in_size, out_size, k_size;
} kqg_conv_geom;

/* Weights [M, C / group, k...] packed once: one kqg_a per group (Mg rows); depthwise 2-D
 * convolutions (one input and one output channel per group) keep their taps as int32 instead,
 * for the direct kernel. */
typedef struct kqg_conv_w {
    int64_t group;
    kqg_a *a;
    int depthwise;
    int32_t *taps; /* depthwise: M * k_size weights as int32 */
} kqg_conv_w;

kiln_status kqg_conv_pack_w(kiln_ctx *ctx, const kqg_conv_geom *g, int wdt, const void *w,
                            kqg_conv_w *out);
void kqg_conv_w_free(kqg_conv_w *w);

/* Receives image n's output channels [m0, m0 + mc) x positions [p0, p0 + pc) (m0 counts over
 * all groups). */
typedef void (*kqg_conv_epi_fn)(void *arg, int64_t n, int64_t m0, int64_t p0, int64_t mc,
                                int64_t pc, const int32_t *acc, int64_t ld);
/* The convolution's exact int32 sums of (x - xz)(w - wz[m]) (padding reads as xz), handed to
 * epi. wz: M values (wz_per_ch) or 1, NULL for 0. */
kiln_status kqg_conv_run(kiln_ctx *ctx, const kqg_conv_geom *g, const kqg_conv_w *w,
                         const int32_t *wz, int wz_per_ch, int xdt, const void *x, int32_t xz,
                         kqg_conv_epi_fn epi, void *arg);

#endif
