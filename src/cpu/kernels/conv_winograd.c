/* 3x3 stride-1 convolutions by Winograd's minimal filtering, F(4x4, 3x3) (Lavin and Gray, 2015).
 *
 * Each 4x4 block of outputs ("tile") of one output channel is A^T [sum_c U_c (.) V_c] A, where
 * V_c = B^T d_c B transforms the tile's 6x6 input window of channel c and U_c = G g_c G^T the
 * 3x3 weights. Per tile that is 36 products over the channels instead of 16 x 9: the 36
 * elementwise sums are 36 matrix products U_e [M x C] . V_e [C x tiles], which run on the packed
 * product engine (gemm_avx512.c, or its AVX2 kernels) with both operands packed.
 *
 * Why: a direct 3x3 convolution already runs the FMA units near their peak (ORT's NCHWc kernels
 * at 94% on the 2-core EPYC, kiln's at 82%), so only fewer multiplications make it faster.
 *
 * A run is cut into blocks of tiles that keep V and the products' results (P) within a few MB:
 *   1. V: per channel and group of 8 tiles, the 6 window rows of each tile are loaded as one
 *      vector per tile and transposed, so that each of the 36 transformed values is a vector over
 *      the 8 tiles, stored straight into the product's packed column panels;
 *   2. P_e = U_e . V_e, split over (e, row blocks, column blocks);
 *   3. per output channel and group of 8 tiles: A^T P A, the bias, the residual and the
 *      activation, transposed back into rows of 4 outputs per tile.
 * The transforms are AVX2+FMA code on both instruction-set tiers; on AVX-512 only the product
 * is wider.
 *
 * Weights: U is 36/9 = 4x the size of W. It is made on first use from the packed weights (the
 * model file's copy was handed back), and only for layers the rule takes (kconv_winograd_ok).
 *
 * Accuracy: the transforms' constants (1/4, 1/6, 1/24, 4, 5, 8) round in float32, so the
 * outputs differ from a direct sum by a few units in the last place of the larger terms
 * (tests/test_conv_winograd.py bounds it against float64). KILN_NO_WINOGRAD=1 turns it off. */
#include "conv_util.h"
#include "gemm_util.h"
#include "../cpu_provider.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#include "avx2_part.h"
#include "conv_act_avx2.h"

#define WG_FN __attribute__((target("avx2,fma")))
#define WG_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline
#define NE 36            /* transformed values per tile (6 x 6) */
#define LANES 8          /* tiles per vector */
#define SCRATCH (8 << 20) /* bytes of V and P per block of tiles */

/* Transformed weights larger than this stay with the direct kernels (512 -> 512 channels: 37 MB
 * against 9.4 MB): at batch 1 their few tiles would stream them from memory every run, and
 * ResNet-50's peak memory would pass ONNX Runtime's. (At batch 8 such a layer ran 2.2x faster
 * on the EPYC, one thread.) */
#define WEIGHT_CAP (10 << 20)

static int64_t packed_rows(int64_t M) { return (M + KGEMM_MR - 1) / KGEMM_MR * KGEMM_MR; }

/* tiles per image (rows, columns) */
static void tile_grid(const kconv_geom *g, int64_t *th, int64_t *tw) {
    *th = (g->out[0] + 3) / 4;
    *tw = (g->out[1] + 3) / 4;
}

#define BLOCK KGEMM_NR /* tiles per fused block: one column panel of the product */
#define MCHUNK 48      /* output channels per pass over a fused block (4 row panels) */
#define FUSED_SCRATCH (2 << 20)

/* KILN_WINOGRAD_FORM=fused or =steps forces the form (tests, A/B runs) wherever Winograd
 * applies at all; 0 when unset (the rule decides) */
enum { FORM_RULE, FORM_FUSED, FORM_STEPS };
static int forced_form(void) {
    static _Atomic int cached = -1;
    if (cached < 0) {
        const char *e = getenv("KILN_WINOGRAD_FORM");
        cached = e && !strcmp(e, "fused") ? FORM_FUSED : e && !strcmp(e, "steps") ? FORM_STEPS : FORM_RULE;
    }
    return cached;
}

/* floats of a thread's scratch for the fused form: V and P of one block */
static int64_t fused_floats(int64_t C) { return NE * (C + MCHUNK) * BLOCK; }

static int fused_fits(const kconv_geom *g) {
    return (int64_t)sizeof(float) * fused_floats(g->C) <= FUSED_SCRATCH;
}

/* Whether nt threads take blocks of tiles through all three steps (see fused_run): enough blocks
 * for every thread, and a block's V and P within a thread's scratch. */
static int fused_form(const kconv_geom *g, int64_t tiles, int nt) {
    int f = forced_form();
    if (f != FORM_RULE) return f == FORM_FUSED && fused_fits(g);
    int64_t blocks = (tiles + BLOCK - 1) / BLOCK;
    return (nt == 1 || blocks >= 2 * (int64_t)nt) && fused_fits(g);
}

int kconv_winograd_ok(const kiln_ctx *ctx, const kconv_geom *g) {
    static _Atomic int off = -1;
    if (kconv_switched_off("KILN_NO_WINOGRAD", &off)) return 0;
    if (!ctx || !ctx->ep || kiln_cpu_provider_no_winograd(ctx->ep)) return 0;
    if (!kgemm_packed_available() || !kgemm_avx2_available()) return 0;
    if (g->nd != 2 || g->group != 1 || g->k[0] != 3 || g->k[1] != 3) return 0;
    for (int d = 0; d < 2; d++)
        if (g->stride[d] != 1 || g->dil[d] != 1) return 0;
    /* the transforms cost per channel what the products cost per channel pair */
    if (g->C < 16 || g->M < 16) return 0;
    if ((double)NE * packed_rows(g->M) * g->C * sizeof(float) > WEIGHT_CAP) return 0;
    int64_t th, tw;
    tile_grid(g, &th, &tw);
    /* Multiplications saved: 9 per output against 36 per tile, with the tiles padded to the
     * product's panels of 32 and the outputs past the map's edge counted (a 14x14 map takes 16
     * tiles and computes 32: 1.53; 28x28 at batch 1, 49 tiles in 64 columns: 3.06). On the AVX2
     * EPYC (1 thread, bench/variants_ab.py, cases wg_*, r50_*, sq_* and dn_* of
     * bench/conv_bench.py, the rule relaxed) every shape with 2.5 or more won, 1.16-2.2x (least
     * with 16 input channels); at 1.5-2.5 only those with 32768 channel pairs or more won (256 ->
     * 128 on 16x16 1.55x, 256 -> 256 on 14x14 1.27x; 128 -> 128 on 14x14 even, 64 -> 64 0.78x);
     * below 1.5 all lost (0.25-0.87x). */
    int64_t tiles = g->N * th * tw, cols = (tiles + KGEMM_NR - 1) / KGEMM_NR * KGEMM_NR;
    double saved = 9.0 * (double)(g->N * g->out_size) / (NE * (double)cols);
    if (!(saved >= 2.5 || (saved >= 1.5 && g->C * g->M >= 32768))) return 0;
    /* Run as three steps over all threads, each step a fork and join with V and P passing
     * through memory between them: on the 16-core Sapphire Rapids at 16 threads that lost to the
     * direct kernels where each thread's share was small (ResNet-50's 64 channels on 56x56 at
     * batch 1: 0.43 against 0.35 ms; 256 on 14x14 0.52 against 0.37) and won from about 200k
     * tiles x channel pairs per thread (128 on 28x28 at batch 8: 3.1 against 5.1 ms; on the EPYC
     * at 2 threads, 128 on 28x28 at batch 1: 0.81 against 1.39). */
    int nt = kiln_num_threads(ctx);
    return forced_form() != FORM_RULE || fused_form(g, tiles, nt) ||
           (double)tiles * g->C * g->M / nt >= 200000.0;
}

int64_t kconv_winograd_weight_size(const kconv_geom *g) {
    return NE * kgemm_avx512_packed_size(g->M, g->C);
}

/* U_e = (G g G^T)_e for every (m, c), each e packed as the product's A [M x C]; g read from the
 * weights as kconv_pack_weight packed them ([M x 9C]). Computed in double. */
void kconv_winograd_pack(const kconv_geom *g, const float *wpk, float *dst) {
    static const double G[6][3] = {{0.25, 0, 0},
                                   {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                   {-1.0 / 6, 1.0 / 6, -1.0 / 6},
                                   {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                   {1.0 / 24, -1.0 / 12, 1.0 / 6},
                                   {0, 0, 1}};
    int64_t M = g->M, C = g->C, Mpad = packed_rows(M), per = kgemm_avx512_packed_size(M, C);
    memset(dst, 0, sizeof(float) * (size_t)(NE * per));
    for (int64_t m = 0; m < M; m++)
        for (int64_t c = 0; c < C; c++) {
            double w[3][3], t[6][3];
            for (int i = 0; i < 9; i++) w[i / 3][i % 3] = wpk[kgemm_packed_a_at(Mpad, 9 * C, m, 9 * c + i)];
            for (int i = 0; i < 6; i++)
                for (int j = 0; j < 3; j++) t[i][j] = G[i][0] * w[0][j] + G[i][1] * w[1][j] + G[i][2] * w[2][j];
            int64_t at = kgemm_packed_a_at(Mpad, C, m, c);
            for (int i = 0; i < 6; i++)
                for (int k = 0; k < 6; k++)
                    dst[(i * 6 + k) * per + at] =
                        (float)(t[i][0] * G[k][0] + t[i][1] * G[k][1] + t[i][2] * G[k][2]);
        }
}

typedef struct wg_job {
    const kconv_geom *g;
    const float *x, *wu, *bias, *z;
    const kconv_act *act;
    kconv_actv av;
    float *y;
    int64_t C, M, IH, IW, OH, OW, pt, pl, th, tw, tiles_img;
    int64_t ublk;             /* floats per U_e */
    float *V, *P;             /* 36 x packed [C x tpad]; 36 x [M x tpad] */
    int64_t t0, tb, tpad, groups; /* the current block: tiles [t0, t0 + tb), groups of 8 */
    int64_t rb, cb;           /* the products' row and column blocks */
    int64_t tiles;            /* all images' */
    _Atomic int failed;       /* a fused block found no scratch memory */
} wg_job;

/* where tile lane l of group gi lies: image, first input row and column (may be in the padding) */
typedef struct wg_lanes {
    int64_t n[LANES], oy[LANES], ox[LANES];
    int64_t out[LANES];  /* the tile's first output in y, channel 0 */
    int64_t cols[LANES]; /* its outputs per row inside the map (4 but at the right edge) */
    int valid;
} wg_lanes;

/* group gi of the tiles from t0 on, tiles up to end */
static void lanes_of(const wg_job *j, int64_t t0, int64_t end, int64_t gi, wg_lanes *L) {
    int64_t first = t0 + gi * LANES;
    L->valid = (int)(end - first < LANES ? end - first : LANES);
    for (int l = 0; l < LANES; l++) {
        int64_t t = first + (l < L->valid ? l : L->valid - 1);
        int64_t r = t % j->tiles_img;
        L->n[l] = t / j->tiles_img;
        L->oy[l] = r / j->tw * 4;
        L->ox[l] = r % j->tw * 4;
        L->out[l] = (L->n[l] * j->M * j->OH + L->oy[l]) * j->OW + L->ox[l];
        L->cols[l] = j->OW - L->ox[l] < 4 ? j->OW - L->ox[l] : 4;
    }
}

/* lane k takes lane k - s, lanes under s are zero (s = 1..7) */
static const int32_t shift_index[16] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7};

/* columns x0 .. x0 + 5 of row yy of a plane, zero outside it (8 lanes; 6 and 7 are not used, so
 * they may hold the next row's first values). Edges load pieces (avx2_part.h) rather than going
 * through a buffer on the stack, whose scalar stores stall the vector load after them. */
WG_INLINE __m256 window_row(const float *plane, int64_t yy, int64_t x0, int64_t IH, int64_t IW) {
    if (yy < 0 || yy >= IH) return _mm256_setzero_ps();
    const float *row = plane + yy * IW;
    if (x0 >= 0) {
        if (x0 + 8 <= IW || (x0 + 6 <= IW && yy + 1 < IH)) return _mm256_loadu_ps(row + x0);
        return kavx2_load_part(row + x0, IW - x0);
    }
    int64_t sh = -x0;
    if (sh >= 8) return _mm256_setzero_ps();
    __m256 v = kavx2_load_part(row, IW < 8 - sh ? IW : 8 - sh);
    __m256i idx = _mm256_loadu_si256((const __m256i *)(shift_index + 8 - sh));
    __m256i keep = _mm256_cmpgt_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)sh - 1));
    return _mm256_and_ps(_mm256_permutevar8x32_ps(v, idx), _mm256_castsi256_ps(keep));
}

/* out[j] = lane j of r[0..7], for j < 6: an 8x8 transpose without its last two rows */
WG_INLINE void transpose8x6(const __m256 r[8], __m256 out[6]) {
    __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
    __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
    __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
    __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
    __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
    __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
    out[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
    out[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
    out[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
    out[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
    out[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
    out[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
}

/* o = B^T d for one column of six values (strided by s in d and o) */
WG_INLINE void bt6(const __m256 *d, int s, __m256 *o, int so) {
    __m256 four = _mm256_set1_ps(4.0f), five = _mm256_set1_ps(-5.0f), mfour = _mm256_set1_ps(-4.0f);
    __m256 d0 = d[0], d1 = d[s], d2 = d[2 * s], d3 = d[3 * s], d4 = d[4 * s], d5 = d[5 * s];
    __m256 a = _mm256_fmadd_ps(mfour, d2, d4), b = _mm256_fmadd_ps(mfour, d1, d3);
    __m256 c = _mm256_sub_ps(d4, d2), e = _mm256_sub_ps(d3, d1);
    e = _mm256_add_ps(e, e);
    o[0] = _mm256_fmadd_ps(four, d0, _mm256_fmadd_ps(five, d2, d4));
    o[so] = _mm256_add_ps(a, b);
    o[2 * so] = _mm256_sub_ps(a, b);
    o[3 * so] = _mm256_add_ps(c, e);
    o[4 * so] = _mm256_sub_ps(c, e);
    o[5 * so] = _mm256_fmadd_ps(four, d1, _mm256_fmadd_ps(five, d3, d5));
}

/* One channel of one group of 8 tiles into column col of V (36 packed [C x tpad] blocks). */
WG_INLINE void input_group(const wg_job *j, const wg_lanes *L, float *V, int64_t tpad, int64_t col,
                           int64_t c) {
    int64_t vstride = j->C * tpad;
    __m256 d[36], s[36];
    for (int r = 0; r < 6; r++) {
        __m256 rows[8];
        for (int l = 0; l < LANES; l++)
            rows[l] = window_row(j->x + (L->n[l] * j->C + c) * j->IH * j->IW, L->oy[l] - j->pt + r,
                                 L->ox[l] - j->pl, j->IH, j->IW);
        transpose8x6(rows, d + r * 6);
    }
    for (int k = 0; k < 6; k++) bt6(d + k, 6, s + k, 6);         /* down the columns */
    for (int r = 0; r < 6; r++) bt6(s + r * 6, 1, d + r * 6, 1); /* along the rows */
    float *dst = V + kgemm_packed_b_at(j->C, tpad, c, col);
    for (int e = 0; e < NE; e++) _mm256_storeu_ps(dst + e * vstride, d[e]);
}

/* items: pairs of groups (16 tiles, whole cache lines of V) major, channels minor (a chunk
 * reuses its lanes' positions) */
static WG_FN void input_run(void *arg, int64_t i0, int64_t i1) {
    const wg_job *j = arg;
    wg_lanes L[2];
    int64_t have = -1, end = j->t0 + j->tb;
    for (int64_t i = i0; i < i1; i++) {
        int64_t pair = i / j->C, c = i % j->C;
        int two = pair * 2 + 1 < j->groups;
        if (pair != have) {
            lanes_of(j, j->t0, end, pair * 2, &L[0]);
            if (two) lanes_of(j, j->t0, end, pair * 2 + 1, &L[1]);
            have = pair;
        }
        input_group(j, &L[0], j->V, j->tpad, pair * 2 * LANES, c);
        if (two) input_group(j, &L[1], j->V, j->tpad, (pair * 2 + 1) * LANES, c);
    }
}

static void product_run(void *arg, int64_t i0, int64_t i1) {
    const wg_job *j = arg;
    int64_t rp = (j->M + KGEMM_MR - 1) / KGEMM_MR, cp = j->tpad / KGEMM_NR;
    for (int64_t i = i0; i < i1; i++) {
        int64_t e = i / (j->rb * j->cb), rest = i % (j->rb * j->cb);
        int64_t r = rest / j->cb, q = rest % j->cb;
        int64_t m0 = kconv_block_start(r, j->rb, rp) * KGEMM_MR;
        int64_t m1 = kconv_block_start(r + 1, j->rb, rp) * KGEMM_MR;
        int64_t c0 = kconv_block_start(q, j->cb, cp) * KGEMM_NR;
        int64_t c1 = kconv_block_start(q + 1, j->cb, cp) * KGEMM_NR;
        if (m1 > j->M) m1 = j->M;
        if (m1 <= m0 || c1 <= c0) continue;
        float *out = j->P + e * j->M * j->tpad + m0 * j->tpad + c0;
        kgemm_sgemm_avx512_packed_ab_epi(j->wu + e * j->ublk, j->M, m0, m1 - m0, c1 - c0, j->C,
                                         j->V + e * j->C * j->tpad, j->tpad, c0, out, j->tpad,
                                         NULL, NULL);
    }
}

/* o = A^T m for one column of six values */
WG_INLINE void at6(const __m256 *m, int s, __m256 *o, int so) {
    __m256 p = _mm256_add_ps(m[s], m[2 * s]), q = _mm256_sub_ps(m[s], m[2 * s]);
    __m256 r = _mm256_add_ps(m[3 * s], m[4 * s]), t = _mm256_sub_ps(m[3 * s], m[4 * s]);
    o[0] = _mm256_add_ps(_mm256_add_ps(m[0], p), r);
    o[so] = _mm256_fmadd_ps(_mm256_set1_ps(2.0f), t, q);
    o[2 * so] = _mm256_fmadd_ps(_mm256_set1_ps(4.0f), r, p);
    o[3 * so] = _mm256_add_ps(_mm256_fmadd_ps(_mm256_set1_ps(8.0f), t, q), m[5 * s]);
}

/* one output row of a lane's tile: n floats of v's half h (0: low) to y, with the residual */
WG_INLINE void store_tile_row(const wg_job *j, __m256 v, int h, float *yrow, const float *zrow,
                              int64_t n) {
    __m128 q = h ? _mm256_extractf128_ps(v, 1) : _mm256_castps256_ps128(v);
    if (zrow) {
        q = _mm_add_ps(q, kavx2_load4_part(zrow, (int)n));
        if (j->av.mode != KACTV_NONE && j->av.mode != KACTV_OTHER)
            q = _mm256_castps256_ps128(kconv_actv_apply8(&j->av, _mm256_castps128_ps256(q)));
    }
    kavx2_store_part(yrow, _mm256_castps128_ps256(q), n);
    if (j->av.mode == KACTV_OTHER) kconv_apply_act(j->act, yrow, n);
}

/* Output channel m of one group of 8 tiles into y, from src (row m of P_0 at column col) with
 * P_e pstride floats apart. */
WG_INLINE void output_group(const wg_job *j, const wg_lanes *L, const float *src, int64_t pstride,
                            int64_t m, int act_early) {
    int64_t plane = j->OH * j->OW;
    __m256 v[36], t[24], o[16];
    for (int e = 0; e < NE; e++) v[e] = _mm256_loadu_ps(src + e * pstride);
    for (int k = 0; k < 6; k++) at6(v + k, 6, t + k, 6);         /* t: 4 rows x 6 */
    for (int r = 0; r < 4; r++) at6(t + r * 6, 1, o + r * 4, 1); /* o: 4 x 4 */
    __m256 b = _mm256_set1_ps(j->bias ? j->bias[m] : 0.0f);
    for (int k = 0; k < 16; k++) {
        o[k] = _mm256_add_ps(o[k], b);
        if (act_early) o[k] = kconv_actv_apply8(&j->av, o[k]);
    }
    for (int r = 0; r < 4; r++) {
        __m256 *w = o + r * 4;
        __m256 a = _mm256_unpacklo_ps(w[0], w[1]), bb = _mm256_unpackhi_ps(w[0], w[1]);
        __m256 c = _mm256_unpacklo_ps(w[2], w[3]), d = _mm256_unpackhi_ps(w[2], w[3]);
        __m256 e4[4] = {_mm256_shuffle_ps(a, c, 0x44), _mm256_shuffle_ps(a, c, 0xEE),
                        _mm256_shuffle_ps(bb, d, 0x44), _mm256_shuffle_ps(bb, d, 0xEE)};
        for (int l = 0; l < L->valid; l++) {
            if (L->oy[l] + r >= j->OH) continue;
            int64_t off = L->out[l] + m * plane + r * j->OW;
            store_tile_row(j, e4[l & 3], l >> 2, j->y + off, j->z ? j->z + off : NULL, L->cols[l]);
        }
    }
}

/* items: pairs of groups (whole cache lines of P) major, output channels minor */
static WG_FN void output_run(void *arg, int64_t i0, int64_t i1) {
    const wg_job *j = arg;
    wg_lanes L[2];
    int64_t have = -1, end = j->t0 + j->tb, pstride = j->M * j->tpad;
    int act_early = !j->z && j->av.mode != KACTV_NONE && j->av.mode != KACTV_OTHER;
    for (int64_t i = i0; i < i1; i++) {
        int64_t pair = i / j->M, m = i % j->M;
        int two = pair * 2 + 1 < j->groups;
        if (pair != have) {
            lanes_of(j, j->t0, end, pair * 2, &L[0]);
            if (two) lanes_of(j, j->t0, end, pair * 2 + 1, &L[1]);
            have = pair;
        }
        const float *src = j->P + m * j->tpad + pair * 2 * LANES;
        output_group(j, &L[0], src, pstride, m, act_early);
        if (two) output_group(j, &L[1], src + LANES, pstride, m, act_early);
    }
}

/* ---- fused blocks ----
 * With tiles enough for every thread, a thread takes BLOCK tiles at a time through all three
 * steps, its V and P in its own scratch: they stay in its cache instead of passing through
 * memory between the steps (on the 2-core EPYC the strided stores into V and loads from P had
 * taken a third of the time). */
/* One thread's scratch for the fused blocks, kept for the thread's life (as the product's packing
 * buffers are): allocating it per call would fault its pages in every time. */
static _Thread_local float *scratch;
static _Thread_local int64_t scratch_n;
static pthread_key_t scratch_key;
static pthread_once_t scratch_once = PTHREAD_ONCE_INIT;
static void scratch_free(void *p) { free(p); }
static void scratch_key_make(void) { pthread_key_create(&scratch_key, scratch_free); }

static float *thread_scratch(int64_t n) {
    if (scratch_n >= n) return scratch;
    pthread_once(&scratch_once, scratch_key_make);
    float *p = kgemm_alloc_packed(n);
    if (!p) return NULL;
    free(scratch);
    scratch = p;
    scratch_n = n;
    pthread_setspecific(scratch_key, p);
    return p;
}


static WG_FN void fused_run(void *arg, int64_t b0, int64_t b1) {
    wg_job *j = arg;
    float *V = thread_scratch(fused_floats(j->C));
    if (!V) {
        atomic_store(&j->failed, 1);
        return;
    }
    float *P = V + NE * j->C * BLOCK;
    int act_early = !j->z && j->av.mode != KACTV_NONE && j->av.mode != KACTV_OTHER;
    for (int64_t b = b0; b < b1; b++) {
        int64_t t0 = b * BLOCK, end = t0 + BLOCK < j->tiles ? t0 + BLOCK : j->tiles;
        int groups = (int)((end - t0 + LANES - 1) / LANES);
        wg_lanes L[BLOCK / LANES];
        for (int g = 0; g < groups; g++) lanes_of(j, t0, end, g, &L[g]);
        for (int64_t c = 0; c < j->C; c++) {
            for (int g = 0; g < groups; g++) input_group(j, &L[g], V, BLOCK, g * LANES, c);
            for (int g = groups; g < BLOCK / LANES; g++) /* the panel's unused columns */
                for (int e = 0; e < NE; e++)
                    memset(V + e * j->C * BLOCK + kgemm_packed_b_at(j->C, BLOCK, c, g * LANES), 0,
                           sizeof(float) * LANES);
        }
        for (int64_t m0 = 0; m0 < j->M; m0 += MCHUNK) {
            int64_t mc = j->M - m0 < MCHUNK ? j->M - m0 : MCHUNK;
            for (int e = 0; e < NE; e++)
                kgemm_sgemm_avx512_packed_ab_epi(j->wu + e * j->ublk, j->M, m0, mc, BLOCK, j->C,
                                                 V + e * j->C * BLOCK, BLOCK, 0,
                                                 P + e * MCHUNK * BLOCK, BLOCK, NULL, NULL);
            for (int64_t m = m0; m < m0 + mc; m++)
                for (int g = 0; g < groups; g++)
                    output_group(j, &L[g], P + (m - m0) * BLOCK + g * LANES, MCHUNK * BLOCK, m,
                                 act_early);
        }
    }
}

static double block_cost(const void *arg, int64_t i) {
    const wg_job *j = arg;
    int64_t end = (i + 1) * BLOCK < j->tiles ? (i + 1) * BLOCK : j->tiles;
    return (double)(end - i * BLOCK) * NE * j->M * j->C;
}

/* KILN_DEBUG_PARTITION: the products' items, in multiply-adds */
static double product_cost(const void *arg, int64_t i) {
    const wg_job *j = arg;
    int64_t rp = (j->M + KGEMM_MR - 1) / KGEMM_MR, cp = j->tpad / KGEMM_NR;
    int64_t rest = i % (j->rb * j->cb), r = rest / j->cb, q = rest % j->cb;
    int64_t rows = (kconv_block_start(r + 1, j->rb, rp) - kconv_block_start(r, j->rb, rp)) * KGEMM_MR;
    int64_t cols = (kconv_block_start(q + 1, j->cb, cp) - kconv_block_start(q, j->cb, cp)) * KGEMM_NR;
    return (double)rows * cols * j->C;
}

/* column and row blocks of the products: enough items for every thread, splitting the side
 * with more panels */
static void product_split(wg_job *j, int nt) {
    int64_t rp = (j->M + KGEMM_MR - 1) / KGEMM_MR, cp = j->tpad / KGEMM_NR;
    j->rb = j->cb = 1;
    while (NE * j->rb * j->cb < 3 * (int64_t)nt) {
        int64_t rows = (rp + j->rb - 1) / j->rb, cols = (cp + j->cb - 1) / j->cb;
        if (rows <= 1 && cols <= 1) break;
        if (cols >= 2 * rows || rows <= 2) j->cb++;
        else j->rb++;
        if (j->cb > cp) j->cb = cp;
        if (j->rb > rp) j->rb = rp;
    }
}

kiln_status kconv_winograd_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wu,
                               const float *bias, const float *z, const kconv_act *act, float *y) {
    wg_job j = {.g = g, .x = x, .wu = wu, .bias = bias, .z = z, .act = act, .y = y,
                .C = g->C, .M = g->M, .IH = g->in[0], .IW = g->in[1], .OH = g->out[0],
                .OW = g->out[1], .pt = g->pad_b[0], .pl = g->pad_b[1]};
    j.av = kconv_actv_make(act);
    tile_grid(g, &j.th, &j.tw);
    j.tiles_img = j.th * j.tw;
    j.ublk = kgemm_avx512_packed_size(j.M, j.C);
    int64_t tiles = g->N * j.tiles_img;
    j.tiles = tiles;
    int nt = kiln_num_threads(ctx);
    int64_t blocks = (tiles + BLOCK - 1) / BLOCK;
    if (fused_form(g, tiles, nt)) {
        if (kconv_debug_partition())
            kconv_report_partition("winograd-fused", g, nt, blocks, 1, block_cost, &j, 1.0);
        kiln_parallel_for(ctx, blocks, 1, fused_run, &j);
        if (atomic_load(&j.failed))
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the Winograd transforms");
        return KILN_OK;
    }
    int64_t per_tile = NE * (j.C + j.M) * (int64_t)sizeof(float);
    int64_t block = SCRATCH / per_tile / KGEMM_NR * KGEMM_NR;
    if (block < KGEMM_NR) block = KGEMM_NR;
    if (block >= tiles) block = tiles;
    int64_t tpad_max = (block + KGEMM_NR - 1) / KGEMM_NR * KGEMM_NR;
    float *buf = kgemm_alloc_packed(NE * (j.C + j.M) * tpad_max);
    if (!buf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the Winograd transforms");
    j.V = buf;
    j.P = buf + NE * j.C * tpad_max;
    for (j.t0 = 0; j.t0 < tiles; j.t0 += block) {
        j.tb = tiles - j.t0 < block ? tiles - j.t0 : block;
        j.tpad = (j.tb + KGEMM_NR - 1) / KGEMM_NR * KGEMM_NR;
        j.groups = (j.tb + LANES - 1) / LANES;
        /* columns past the last group are read by the product's last panel: keep them finite */
        for (int64_t col = j.groups * LANES; col < j.tpad; col += LANES)
            for (int64_t e = 0; e < NE; e++)
                for (int64_t c = 0; c < j.C; c++)
                    memset(j.V + e * j.C * j.tpad + kgemm_packed_b_at(j.C, j.tpad, c, col), 0,
                           sizeof(float) * LANES);
        int64_t n1 = (j.groups + 1) / 2 * j.C, n3 = (j.groups + 1) / 2 * j.M;
        kiln_parallel_for(ctx, n1, kpar_grain(n1, (double)n1 * 150.0), input_run, &j);
        product_split(&j, nt);
        if (j.t0 == 0 && kconv_debug_partition())
            kconv_report_partition("winograd", g, nt, NE * j.rb * j.cb, 1, product_cost, &j, 1.0);
        kiln_parallel_for(ctx, NE * j.rb * j.cb, 1, product_run, &j);
        kiln_parallel_for(ctx, n3, kpar_grain(n3, (double)n3 * 120.0), output_run, &j);
    }
    free(buf);
    return KILN_OK;
}

#else
int kconv_winograd_ok(const kiln_ctx *ctx, const kconv_geom *g) { return 0; }
int64_t kconv_winograd_weight_size(const kconv_geom *g) { return 0; }
void kconv_winograd_pack(const kconv_geom *g, const float *wpk, float *dst) {}
kiln_status kconv_winograd_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wu,
                               const float *bias, const float *z, const kconv_act *act, float *y) {
    return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "Winograd convolution needs x86-64 with AVX2");
}
#endif
