/* conv_direct.c's register tiles for CPUs with AVX2 and FMA but no AVX-512. The padded input
 * layouts, the tap offsets, the packed weights and the work items are conv_direct.c's; only the
 * tiles and their stores are here, in 8-lane registers.
 *
 * - Direct tiles (12 output channels x up to 32 positions): computed as gemm_avx2.c computes the
 *   product's 12 x 32 tiles, in 6 x 16 quarters (12 accumulators, two input vectors, one
 *   broadcast weight) over the same packed weight panels, with a 12 x 8 strip for a tail of at
 *   most 8 positions. Each output is the same FMA chain over the taps, in the same order, as in
 *   the AVX-512 tiles, so both tiers give the same bits.
 * - Channel-lane tiles (up to 32 channels x 12 positions): 16 channels (two vectors) x up to 6
 *   positions at a time, 12 accumulators again (32 channels x 3 positions would need 17
 *   registers). A segment's positions may span output rows, each read from its own row's input
 *   (at[i]), so a 7x7 map makes groups of 5 and 6, not 4 and 3: under about 10 accumulators a
 *   pass waits on its FMA chains.
 *
 * Ragged ends are stored in 4/2/1-float pieces: AVX2's masked loads and stores (vmaskmovps) are
 * microcoded on AMD cores, and a 7x7 map ends every row with one. */
#include "conv_util.h"
#include "gemm_util.h"
#include <math.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#include "conv_direct_isa.h"
#include "avx2_part.h"
#include "conv_act_avx2.h"

#define AVX2_FN __attribute__((target("avx2,fma")))
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline
#define MR KGEMM_MR
#define LANES_BLOCK 32 /* channels per block of the lanes layout (conv_direct.c LMB) */

/* x < 0 ? 0 : x: NaN and -0 stay, as in kconv_apply_act */
AVX2_INLINE __m256 relu8(__m256 x) {
    __m256 zero = _mm256_setzero_ps();
    return _mm256_blendv_ps(x, zero, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
}

/* ---- direct tiles ---- */

/* Where a tile's rows go: y row r at y + r * ys, bias[r] first, then the residual z (laid out as
 * y), then Relu. */
typedef struct dout {
    float *y;
    int64_t ys;
    const float *bias, *z;
    int relu;
} dout;

AVX2_INLINE void dstore_vec(const dout *o, int r, int c, __m256 v, int n) {
    if (o->bias) v = _mm256_add_ps(v, _mm256_set1_ps(o->bias[r]));
    if (o->z) v = _mm256_add_ps(v, kavx2_load_part(o->z + r * o->ys + c, n));
    if (o->relu) v = relu8(v);
    kavx2_store_part(o->y + r * o->ys + c, v, n);
}

/* Sums over all K taps of ROWS weight rows (the packed panel at m0, from row r0 on) against the
 * 16 inputs at xb + offs[k] (WIDE) or 8; acc[i][0..1]. */
#define DQ_ROW(i)                                                                                  \
    if (ROWS > (i)) {                                                                              \
        x = _mm256_broadcast_ss(ap + (i));                                                         \
        s##i##a = _mm256_fmadd_ps(x, b0, s##i##a);                                                 \
        if (WIDE) s##i##b = _mm256_fmadd_ps(x, b1, s##i##b);                                       \
    }
#define DQ_SAVE(i)                                                                                 \
    if (ROWS > (i)) {                                                                              \
        acc[i][0] = s##i##a;                                                                       \
        acc[i][1] = s##i##b;                                                                       \
    }
AVX2_INLINE void dquarter_sums(const int ROWS, const int WIDE, const float *wpk, int64_t Mpad,
                               int64_t m0, int64_t r0, const float *xb, const int64_t *offs,
                               int64_t K, __m256 (*acc)[2]) {
    __m256 s0a = _mm256_setzero_ps(), s0b = s0a, s1a = s0a, s1b = s0a, s2a = s0a, s2b = s0a;
    __m256 s3a = s0a, s3b = s0a, s4a = s0a, s4b = s0a, s5a = s0a, s5b = s0a, x;
    for (int64_t pc = 0; pc < K; pc += KGEMM_KC) {
        int64_t kc = K - pc < KGEMM_KC ? K - pc : KGEMM_KC;
        const float *ap = wpk + pc * Mpad + m0 * kc + r0;
        const int64_t *ob = offs + pc;
        for (int64_t k = 0; k < kc; k++) {
            const float *p = xb + ob[k];
            __m256 b0 = _mm256_loadu_ps(p), b1 = WIDE ? _mm256_loadu_ps(p + 8) : b0;
            DQ_ROW(0) DQ_ROW(1) DQ_ROW(2) DQ_ROW(3) DQ_ROW(4) DQ_ROW(5)
            ap += MR;
        }
    }
    DQ_SAVE(0) DQ_SAVE(1) DQ_SAVE(2) DQ_SAVE(3) DQ_SAVE(4) DQ_SAVE(5)
}

/* A strip: ROWS (up to 12) weight rows against 8 inputs, for a tail of at most 8 positions. */
#define DS_ROW(i)                                                                                  \
    if (ROWS > (i)) t##i = _mm256_fmadd_ps(_mm256_broadcast_ss(ap + (i)), b, t##i);
#define DS_SAVE(i)                                                                                 \
    if (ROWS > (i)) acc[i][0] = t##i;
AVX2_INLINE void dstrip_sums(const int ROWS, const float *wpk, int64_t Mpad, int64_t m0,
                             const float *xb, const int64_t *offs, int64_t K, __m256 (*acc)[2]) {
    __m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0, t4 = t0, t5 = t0, t6 = t0, t7 = t0;
    __m256 t8 = t0, t9 = t0, t10 = t0, t11 = t0;
    for (int64_t pc = 0; pc < K; pc += KGEMM_KC) {
        int64_t kc = K - pc < KGEMM_KC ? K - pc : KGEMM_KC;
        const float *ap = wpk + pc * Mpad + m0 * kc;
        const int64_t *ob = offs + pc;
        for (int64_t k = 0; k < kc; k++) {
            __m256 b = _mm256_loadu_ps(xb + ob[k]);
            DS_ROW(0) DS_ROW(1) DS_ROW(2) DS_ROW(3) DS_ROW(4) DS_ROW(5)
            DS_ROW(6) DS_ROW(7) DS_ROW(8) DS_ROW(9) DS_ROW(10) DS_ROW(11)
            ap += MR;
        }
    }
    DS_SAVE(0) DS_SAVE(1) DS_SAVE(2) DS_SAVE(3) DS_SAVE(4) DS_SAVE(5)
    DS_SAVE(6) DS_SAVE(7) DS_SAVE(8) DS_SAVE(9) DS_SAVE(10) DS_SAVE(11)
}

/* dquarter's common store, 16 whole columns, with bias, residual and Relu fixed at compile time
 * (constants at each call): dstore_vec tests each of them and the column count for every vector,
 * and with the few taps of a stem (27: 3 channels x 3x3) those tests took a good part of the
 * tile's time. The same operations in the same order. */
AVX2_INLINE void dstore_whole(const dout *o, __m256 (*acc)[2], int r0, int rows, int c0,
                              const int BIAS, const int Z, const int RELU) {
    for (int r = 0; r < rows; r++) {
        int row = r0 + r;
        float *y = o->y + row * o->ys + c0;
        __m256 a = acc[r][0], b = acc[r][1];
        if (BIAS) {
            __m256 v = _mm256_set1_ps(o->bias[row]);
            a = _mm256_add_ps(a, v);
            b = _mm256_add_ps(b, v);
        }
        if (Z) {
            const float *z = o->z + row * o->ys + c0;
            a = _mm256_add_ps(a, _mm256_loadu_ps(z));
            b = _mm256_add_ps(b, _mm256_loadu_ps(z + 8));
        }
        if (RELU) {
            a = relu8(a);
            b = relu8(b);
        }
        _mm256_storeu_ps(y, a);
        _mm256_storeu_ps(y + 8, b);
    }
}

/* rows [r0, r0 + rows) x columns [c0, c0 + n) (n <= 16) of the tile */
AVX2_FN static void dquarter(const float *wpk, int64_t Mpad, int64_t m0, int r0, int rows,
                             const float *xb, const int64_t *offs, int64_t K, const dout *o,
                             int c0, int n) {
    __m256 acc[6][2];
#define DQ_CASE(R)                                                                                 \
    case R:                                                                                        \
        dquarter_sums(R, 1, wpk, Mpad, m0, r0, xb + c0, offs, K, acc);                            \
        break;
    switch (rows) {
        DQ_CASE(1) DQ_CASE(2) DQ_CASE(3) DQ_CASE(4) DQ_CASE(5) DQ_CASE(6)
    default: return;
    }
#undef DQ_CASE
    if (n == 16) {
        int flags = (o->bias ? 1 : 0) | (o->z ? 2 : 0) | (o->relu ? 4 : 0);
        switch (flags) {
        case 0: dstore_whole(o, acc, r0, rows, c0, 0, 0, 0); return;
        case 1: dstore_whole(o, acc, r0, rows, c0, 1, 0, 0); return;
        case 2: dstore_whole(o, acc, r0, rows, c0, 0, 1, 0); return;
        case 3: dstore_whole(o, acc, r0, rows, c0, 1, 1, 0); return;
        case 4: dstore_whole(o, acc, r0, rows, c0, 0, 0, 1); return;
        case 5: dstore_whole(o, acc, r0, rows, c0, 1, 0, 1); return;
        case 6: dstore_whole(o, acc, r0, rows, c0, 0, 1, 1); return;
        default: dstore_whole(o, acc, r0, rows, c0, 1, 1, 1); return;
        }
    }
    for (int r = 0; r < rows; r++) {
        dstore_vec(o, r0 + r, c0, acc[r][0], n);
        if (n > 8) dstore_vec(o, r0 + r, c0 + 8, acc[r][1], n - 8);
    }
}

AVX2_FN static void dstrip(const float *wpk, int64_t Mpad, int64_t m0, int rows, const float *xb,
                           const int64_t *offs, int64_t K, const dout *o, int c0, int n) {
    __m256 acc[12][2];
#define DS_CASE(R)                                                                                 \
    case R:                                                                                        \
        dstrip_sums(R, wpk, Mpad, m0, xb + c0, offs, K, acc);                                     \
        break;
    switch (rows) {
        DS_CASE(1) DS_CASE(2) DS_CASE(3) DS_CASE(4) DS_CASE(5) DS_CASE(6)
        DS_CASE(7) DS_CASE(8) DS_CASE(9) DS_CASE(10) DS_CASE(11) DS_CASE(12)
    default: return;
    }
#undef DS_CASE
    for (int r = 0; r < rows; r++) dstore_vec(o, r, c0, acc[r][0], n);
}

void kconv_dtile_avx2(const float *wpk, int64_t Mpad, int64_t m0, const float *xb,
                      const int64_t *offs, int64_t K, float *y, int64_t ys, const float *bias,
                      int mr, int nr, const float *z, int relu) {
    dout o = {y, ys, bias, z, relu};
    /* a short panel's rows split evenly between the two row quarters */
    int top = mr <= 6 ? mr : (mr + 1) / 2;
    for (int c0 = 0; c0 < nr; c0 += 16) {
        int n = nr - c0 < 16 ? nr - c0 : 16;
        if (n <= 8) {
            dstrip(wpk, Mpad, m0, mr, xb, offs, K, &o, c0, n);
            continue;
        }
        dquarter(wpk, Mpad, m0, 0, top, xb, offs, K, &o, c0, n);
        if (mr > top) dquarter(wpk, Mpad, m0, top, mr - top, xb, offs, K, &o, c0, n);
    }
}

AVX2_FN void kconv_seg_store_avx2(float *y, const float *t, const float *z, int64_t n, int relu) {
    for (int64_t i = 0; i < n; i += 8) {
        int m = n - i < 8 ? (int)(n - i) : 8;
        __m256 v = kavx2_load_part(t + i, m);
        if (z) v = _mm256_add_ps(v, kavx2_load_part(z + i, m));
        if (relu) v = relu8(v);
        kavx2_store_part(y + i, v, m);
    }
}

/* ---- channel-lane tiles ---- */

/* Taps per pass: each pass (16 channels x up to 6 positions) rereads its block's weights, so the
 * taps go in blocks whose weights (16 KB at 32 channels) stay in L1 across the passes; a 3x3 of
 * 512 channels has 590 KB of weights per 32-channel block, which four passes streamed from L3. */
#define LANES_KB 128

/* tile[i * 32 + 0..16) (+)= sum over taps [k0, k1) of wb[k * bw + 0..16) * at[i][offs[k]], i < NP */
AVX2_INLINE void lanes_group(const int NP, const float *wb, int64_t bw, int64_t k0, int64_t k1,
                             const int64_t *offs, const float *const *at, float *tile) {
    __m256 c0[6], c1[6];
    const float *p[6];
#pragma GCC unroll 6
    for (int i = 0; i < NP; i++) {
        p[i] = at[i];
        c0[i] = k0 ? _mm256_loadu_ps(tile + i * LANES_BLOCK) : _mm256_setzero_ps();
        c1[i] = k0 ? _mm256_loadu_ps(tile + i * LANES_BLOCK + 8) : _mm256_setzero_ps();
    }
    wb += k0 * bw;
    for (int64_t k = k0; k < k1; k++) {
        int64_t o = offs[k];
        __m256 w0 = _mm256_loadu_ps(wb), w1 = _mm256_loadu_ps(wb + 8);
#pragma GCC unroll 6
        for (int i = 0; i < NP; i++) {
            __m256 a = _mm256_broadcast_ss(p[i] + o);
            c0[i] = _mm256_fmadd_ps(a, w0, c0[i]);
            c1[i] = _mm256_fmadd_ps(a, w1, c1[i]);
        }
        wb += bw;
    }
#pragma GCC unroll 6
    for (int i = 0; i < NP; i++) {
        _mm256_storeu_ps(tile + i * LANES_BLOCK, c0[i]);
        _mm256_storeu_ps(tile + i * LANES_BLOCK + 8, c1[i]);
    }
}

AVX2_FN static void lanes_positions(int np, const float *wb, int64_t bw, int64_t k0, int64_t k1,
                                    const int64_t *offs, const float *const *at, float *tile) {
#define LG_CASE(n)                                                                                 \
    case n: lanes_group(n, wb, bw, k0, k1, offs, at, tile); break;
    switch (np) {
        LG_CASE(1) LG_CASE(2) LG_CASE(3) LG_CASE(4) LG_CASE(5) LG_CASE(6)
    default: break;
    }
#undef LG_CASE
}

void kconv_lanes_tile_avx2(const float *wb, int64_t K, const int64_t *offs,
                           const float *const *at, float *tile, int np, int bw) {
    /* two near-equal groups: a group of 1 or 2 would wait on its few FMA chains */
    int first = np <= 6 ? np : (np + 1) / 2;
    for (int64_t k0 = 0; k0 < K; k0 += LANES_KB) {
        int64_t k1 = K - k0 < LANES_KB ? K : k0 + LANES_KB;
        for (int h = 0; h < bw; h += 16) {
            lanes_positions(first, wb + h, bw, k0, k1, offs, at, tile + h);
            if (np > first)
                lanes_positions(np - first, wb + h, bw, k0, k1, offs, at + first,
                                tile + first * LANES_BLOCK + h);
        }
    }
}

/* Where a 32-channel block's weights outgrow L2 (a 3x3 of 512 channels: 590 KB, past the EPYC
 * VM's 512 KB), kconv_lanes_tile_avx2's tiles of 12 positions streamed all of them from L3 once
 * per tile (five times per block on a 7x7 map); here each block of LANES_KB taps passes over all
 * the positions, in groups of 5 or 6, while it is in L1. Each output gets the same FMA chain in
 * the same tap order, so the same bits. */
void kconv_lanes_span_avx2(const float *wb, int64_t K, const int64_t *offs,
                           const float *const *at, float *tile, int np, int bw) {
    int groups = (np + 5) / 6;
    for (int64_t k0 = 0; k0 < K; k0 += LANES_KB) {
        int64_t k1 = K - k0 < LANES_KB ? K : k0 + LANES_KB;
        for (int h = 0; h < bw; h += 16)
            for (int gi = 0; gi < groups; gi++) {
                int a = gi * np / groups, b = (gi + 1) * np / groups;
                lanes_positions(b - a, wb + h, bw, k0, k1, offs, at + a, tile + a * LANES_BLOCK + h);
            }
    }
}

/* r[c] = column c of the 8 x 8 block r */
AVX2_INLINE void transpose8(__m256 *r) {
    __m256 t[8], u[8];
    for (int i = 0; i < 8; i += 2) {
        t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[4i + j], 128-bit half L: rows 4i..4i+3 of column 4L + j */
    for (int i = 0; i < 8; i += 4) {
        u[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        r[j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x20);
        r[4 + j] = _mm256_permute2f128_ps(u[j], u[4 + j], 0x31);
    }
}

AVX2_FN void kconv_lanes_store_avx2(const float *tile, int np, int mr, const float *bias,
                                    float *y, int64_t ys, const float *z, const kconv_actv *av) {
    for (int m0 = 0; m0 < mr; m0 += 8) {
        int mc = mr - m0 < 8 ? mr - m0 : 8;
        __m256 bv = bias ? kavx2_load_part(bias + m0, mc) : _mm256_setzero_ps();
        for (int q0 = 0; q0 < np; q0 += 8) {
            int nq = np - q0 < 8 ? np - q0 : 8;
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = i < nq ? _mm256_add_ps(_mm256_loadu_ps(tile + (q0 + i) * LANES_BLOCK + m0), bv)
                              : _mm256_setzero_ps();
            transpose8(r);
            for (int m = 0; m < mc; m++) {
                int64_t at = (int64_t)(m0 + m) * ys + q0;
                __m256 v = r[m];
                if (z) v = _mm256_add_ps(v, kavx2_load_part(z + at, nq));
                v = kconv_actv_apply8(av, v);
                kavx2_store_part(y + at, v, nq);
            }
        }
    }
}

#endif
