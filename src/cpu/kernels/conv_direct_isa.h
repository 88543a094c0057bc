/* The AVX2 + FMA register tiles of the direct and channel-lane convolutions
 * (conv_direct_avx2.c). conv_direct.c's drivers call them where kgemm_avx512_available() is
 * false; its comments describe the layouts. x86-64 with GCC or Clang only. */
#ifndef KILN_CONV_DIRECT_ISA_H
#define KILN_CONV_DIRECT_ISA_H

#include "conv_act_avx512.h"

/* y[r * ys + 0..nr) = bias[r] + sum_k w[m0 + r, k] * xb[offs[k] + 0..nr) (+ z, Relu), r < mr
 * (<= 12), nr <= 32; weights in the product's packed panels (Mpad rows). Reads 32 inputs a tap
 * (16 where nr <= 16), as the AVX-512 tiles do. */
void kconv_dtile_avx2(const float *wpk, int64_t Mpad, int64_t m0, const float *xb,
                      const int64_t *offs, int64_t K, float *y, int64_t ys, const float *bias,
                      int mr, int nr, const float *z, int relu);
/* y[0..n) = t[0..n) (+ z) (Relu) */
void kconv_seg_store_avx2(float *y, const float *t, const float *z, int64_t n, int relu);
/* tile[i * 32 + m] = sum_k wb[k * bw + m] * at[i][offs[k]], i < np (<= 12), m < bw (16 or 32):
 * position i reads its inputs from at[i] */
void kconv_lanes_tile_avx2(const float *wb, int64_t K, const int64_t *offs,
                           const float *const *at, float *tile, int np, int bw);
/* kconv_lanes_tile_avx2 for any number of positions (tile: np x 32), the taps in blocks outer and
 * the positions inner, so that each block of weights is read once from beyond L1 */
void kconv_lanes_span_avx2(const float *wb, int64_t K, const int64_t *offs,
                           const float *const *at, float *tile, int np, int bw);
/* y[m * ys + i] = act(tile[i * 32 + m] + bias[m] (+ z[m * ys + i])), m < mr, i < np */
void kconv_lanes_store_avx2(const float *tile, int np, int mr, const float *bias, float *y,
                            int64_t ys, const float *z, const kconv_actv *av);

#endif
