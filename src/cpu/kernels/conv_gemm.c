/* Convolution as matrix products. Bias, residual and activation are applied while an output
 * tile is still hot. With weights packed for the packed (AVX-512 or AVX2) product, the im2col columns go straight
 * into its panels a KC-deep slice at a time, so products are wide (up to KCONV_TILE_COLS) and,
 * on maps smaller than that at batch > 1, run on across images; the threads get equal runs of
 * (column panel, row panel) pairs (for_segments). Without packing, output positions are cut into
 * tiles whose im2col block is kept to about 256 KB, split further by output channels when tiles
 * alone cannot feed every thread. 1x1 convolutions with unit strides and no padding read the
 * input directly; strided ones read a subsampled copy. Depthwise convolutions go to the direct
 * kernels (conv_depthwise.c), most others with windows to conv_direct.c. */
#include "conv_util.h"
#include "gemm_util.h"
#include "../cpu_provider.h"
#include <cblas.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct conv_job {
    const kconv_geom *g;
    const float *x, *w, *bias, *z;
    const kconv_act *act;
    const float *wpk; /* weights packed per group for the packed product, or NULL */
    int64_t wpk_group;  /* floats per group in wpk */
    float *y;
    int64_t Cg, Mg, Kc;
    /* column tile t of ntiles covers units [t * cpan / ntiles, (t + 1) * cpan / ntiles) of cunit
     * columns, row block b of nmb likewise units of runit rows (see kconv_block_start); tile is
     * the widest tile's width */
    int64_t cunit, cpan, ntiles, runit, rpan, nmb, tile;
    int linear;          /* linear items (see for_segments) instead of the grid */
    int64_t units, items; /* linear: units of rpan x cpan panels, cut into items */
    float *bp;            /* or NULL: the inputs packed once for all items, unit u's columns at */
    int64_t bp_npad;      /* bp + u * Kc * bp_npad, as kgemm_sgemm_avx512_packed_ab_epi reads */
    int64_t cols; /* columns a tile index runs over: N * out_size when span, else out_size */
    int span;     /* tiles run over the whole batch, so one product may cover several images */
    int pointwise;
    volatile int failed;
} conv_job;

/* residual and activation over rows [m0, m1) x columns [p0, p1) of one (image, group); with
 * with_bias also the bias (when the product could not add it itself). */
static void epilogue_fused(const conv_job *j, int64_t n, int64_t grp, int64_t m0, int64_t m1,
                           int64_t p0, int64_t p1, int with_bias, int fused);

static void epilogue(const conv_job *j, int64_t n, int64_t grp, int64_t m0, int64_t m1, int64_t p0,
                     int64_t p1, int with_bias) {
    epilogue_fused(j, n, grp, m0, m1, p0, p1, with_bias, 0);
}

/* The part of the epilogue the product's store can do (kgemm_epi): the residual, and Relu, Clip,
 * LeakyRelu or HardSwish after it. Returns what it took on: 0 nothing, 1 the residual, 2 both. */
static int fuse_epi(const conv_job *j, int64_t n, int64_t grp, int64_t m0, int64_t p0,
                    kgemm_epi *ep) {
    const kconv_geom *g = j->g;
    memset(ep, 0, sizeof *ep);
    int kind = j->act ? j->act->kind : KACT_NONE, fused = 2;
    if (kind == KACT_RELU) ep->act = KGEMM_EPI_RELU;
    else if (kind == KACT_CLIP) ep->act = KGEMM_EPI_CLIP;
    else if (kind == KACT_LEAKY) ep->act = KGEMM_EPI_LEAKY;
    else if (kind == KACT_HSWISH) ep->act = KGEMM_EPI_HSWISH;
    else if (kind != KACT_NONE) fused = 1;
    if (j->act) {
        ep->a = j->act->a;
        ep->b = j->act->b;
    }
    if (j->z) {
        ep->z = j->z + (n * g->M + grp * j->Mg + m0) * g->out_size + p0;
        ep->ldz = g->out_size;
    }
    return fused;
}

static void epilogue_fused(const conv_job *j, int64_t n, int64_t grp, int64_t m0, int64_t m1,
                           int64_t p0, int64_t p1, int with_bias, int fused) {
    const kconv_geom *g = j->g;
    int act = j->act && j->act->kind != KACT_NONE && fused < 2;
    const float *z = fused ? NULL : j->z;
    if (!(with_bias && j->bias) && !z && !act) return;
    for (int64_t m = m0; m < m1; m++) {
        int64_t oc = grp * j->Mg + m;
        float *yr = j->y + (n * g->M + oc) * g->out_size + p0;
        int64_t len = p1 - p0;
        if (with_bias && j->bias) kvec_add_scalar_f32(yr, j->bias[oc], len);
        if (z) kvec_add_f32(yr, z + (n * g->M + oc) * g->out_size + p0, len);
        if (act) kconv_apply_act(j->act, yr, len);
    }
}

typedef struct panel_src {
    const kconv_geom *g;
    const float *x;  /* one image's channel block, or (span) the batch's first image + group */
    int64_t col0;    /* first column: an output position, or (span) a batch column */
} panel_src;

static int64_t round_nr(int64_t n) { return (n + KGEMM_NR - 1) / KGEMM_NR * KGEMM_NR; }

static void pack_im2col(void *arg, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float *dst) {
    const panel_src *s = arg;
    kconv_im2col_panels_f32(s->g, s->x, s->col0, p0, kc, j0, nc, dst, 0, round_nr(nc));
}

/* The same over batch columns (image n, position p) = n * out_size + p: each image's run of
 * columns lands at its place in the shared panels. */
static void pack_im2col_span(void *arg, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
                             float *dst) {
    const panel_src *s = arg;
    const kconv_geom *g = s->g;
    int64_t q = s->col0 + j0, end = q + nc;
    while (q < end) {
        int64_t n = q / g->out_size, p = q - n * g->out_size;
        int64_t len = g->out_size - p < end - q ? g->out_size - p : end - q;
        int64_t dcol = q - (s->col0 + j0);
        kconv_im2col_panels_f32(g, s->x + n * g->C * g->in_size, p, p0, kc, 0, len, dst, dcol,
                                q + len == end ? round_nr(nc) : 0);
        q += len;
    }
}

/* A tile whose columns cover parts of several images (small maps, batch > 1): one product into
 * tmp, then each image's part is copied to its place, where the residual and activation go. */
/* Rows [m0, m0 + M) x columns [c0, c0 + N) of unit u's product into C, the inputs packed by
 * pack_fn from ps, or read from j->bp when they were packed once for all items. */
static int product(const conv_job *j, int64_t u, int64_t grp, panel_src *ps, kgemm_pack_b_fn pack_fn,
                   int64_t c0, int64_t m0, int64_t M, int64_t N, float *C, int64_t ldc,
                   const float *bias, const kgemm_epi *ep) {
    const float *ap = j->wpk + grp * j->wpk_group;
    if (j->bp)
        return kgemm_sgemm_avx512_packed_ab_epi(ap, j->Mg, m0, M, N, j->Kc,
                                                j->bp + u * j->Kc * j->bp_npad, j->bp_npad, c0, C,
                                                ldc, bias, ep);
    return kgemm_sgemm_avx512_packed_cb_epi(ap, j->Mg, m0, M, N, j->Kc, 1.0f, pack_fn, ps, 0.0f, C,
                                            ldc, bias, ep);
}

static int span_tile(conv_job *j, int64_t grp, int64_t q0, int64_t q1, int64_t m0, int64_t m1) {
    const kconv_geom *g = j->g;
    int64_t nc = q1 - q0, os = g->out_size;
    float *tmp = malloc(sizeof(float) * (size_t)((m1 - m0) * nc));
    if (!tmp) return 0;
    panel_src ps = {g, j->x + grp * j->Cg * g->in_size, q0};
    const float *bias = j->bias ? j->bias + grp * j->Mg + m0 : NULL;
    if (!product(j, grp, grp, &ps, pack_im2col_span, q0, m0, m1 - m0, nc, tmp, nc, bias, NULL)) {
        free(tmp);
        return 0;
    }
    for (int64_t q = q0; q < q1;) {
        int64_t n = q / os, p = q - n * os, len = os - p < q1 - q ? os - p : q1 - q;
        for (int64_t m = m0; m < m1; m++)
            memcpy(j->y + (n * g->M + grp * j->Mg + m) * os + p, tmp + (m - m0) * nc + (q - q0),
                   sizeof(float) * (size_t)len);
        epilogue(j, n, grp, m0, m1, p, p + len, 0);
        q += len;
    }
    free(tmp);
    return 1;
}

static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

/* The same tile stored in place: the product writes each image's columns where they belong (the
 * epilogue's runs, one per image), adding the residual and activation on the way. */
static int span_direct(conv_job *j, int64_t grp, int64_t q0, int64_t q1, int64_t m0, int64_t m1) {
    const kconv_geom *g = j->g;
    int64_t os = g->out_size, n = q0 / os, p = q0 - n * os;
    panel_src ps = {g, j->x + grp * j->Cg * g->in_size, q0};
    const float *bias = j->bias ? j->bias + grp * j->Mg + m0 : NULL;
    kgemm_epi ep;
    int fused = fuse_epi(j, n, grp, m0, p, &ep);
    ep.period = os;
    ep.phase = p;
    ep.jump = (g->M - 1) * os;
    float *yg = j->y + (n * g->M + grp * j->Mg + m0) * os + p;
    if (!product(j, grp, grp, &ps, pack_im2col_span, q0, m0, m1 - m0, q1 - q0, yg, os, bias, &ep))
        return 0;
    if (fused < 2) /* what the store could not apply, image by image */
        for (int64_t q = q0; q < q1;) {
            int64_t ni = q / os, pi = q - ni * os, len = min64(os - pi, q1 - q);
            epilogue_fused(j, ni, grp, m0, m1, pi, pi + len, 0, fused);
            q += len;
        }
    return 1;
}

static void item_bounds(const conv_job *j, int64_t t, int64_t mb, int64_t *c0, int64_t *c1,
                        int64_t *m0, int64_t *m1) {
    *c0 = min64(j->cols, j->cunit * kconv_block_start(t, j->ntiles, j->cpan));
    *c1 = min64(j->cols, j->cunit * kconv_block_start(t + 1, j->ntiles, j->cpan));
    *m0 = min64(j->Mg, j->runit * kconv_block_start(mb, j->nmb, j->rpan));
    *m1 = min64(j->Mg, j->runit * kconv_block_start(mb + 1, j->nmb, j->rpan));
}

/* One product: rows [m0, m1) x columns [c0, c1) of unit ng (image x group, or the group when the
 * columns span the batch); key identifies the columns for reusing an im2col block. 0: out of
 * memory. */
static int block_run(conv_job *j, int64_t ng, int64_t key, int64_t c0, int64_t c1, int64_t m0,
                     int64_t m1, float *buf, int64_t *last_col) {
    const kconv_geom *g = j->g;
    int64_t grp = ng % g->group, n = ng / g->group;
    if (c0 >= c1 || m0 >= m1) return 1;
    int64_t p0 = c0, p1 = c1;
    if (j->span) {
        n = c0 / g->out_size;
        if ((c1 - 1) / g->out_size != n) {
            if (!j->wpk || g->out_size < KGEMM_NR) return span_tile(j, grp, c0, c1, m0, m1);
            return span_direct(j, grp, c0, c1, m0, m1);
        }
        p0 = c0 - n * g->out_size;
        p1 = c1 - n * g->out_size;
    }
    const float *xg = j->x + (n * g->C + grp * j->Cg) * g->in_size;
    float *yg = j->y + (n * g->M + grp * j->Mg + m0) * g->out_size + p0;
    const float *bias = j->bias ? j->bias + grp * j->Mg + m0 : NULL;
    kgemm_epi ep;
    int fused = j->wpk ? fuse_epi(j, n, grp, m0, p0, &ep) : 0;
    if ((!j->pointwise || j->bp) && j->wpk) {
        panel_src ps = {g, xg, p0};
        if (!product(j, ng, grp, &ps, pack_im2col, c0, m0, m1 - m0, p1 - p0, yg, g->out_size, bias,
                     &ep))
            return 0; /* no packing buffers */
        epilogue_fused(j, n, grp, m0, m1, p0, p1, 0, fused);
        return 1;
    }
    const float *B;
    int64_t ldb;
    if (j->pointwise) {
        B = xg + p0;
        ldb = g->in_size;
    } else {
        if (key != *last_col) kconv_im2col_f32(g, j->Cg, xg, p0, p1, buf, p1 - p0);
        *last_col = key;
        B = buf;
        ldb = p1 - p0;
    }
    if (!(j->wpk && kgemm_sgemm_avx512_packed_epi(j->wpk + grp * j->wpk_group, j->Mg, m0, 0,
                                                  m1 - m0, p1 - p0, j->Kc, 1.0f, B, ldb, 0.0f,
                                                  yg, g->out_size, bias, &ep))) {
        kgemm_f32_serial_bias(0, 0, m1 - m0, p1 - p0, j->Kc, 1.0f,
                              j->w + (grp * j->Mg + m0) * j->Kc, j->Kc, B, ldb, 0.0f, yg,
                              g->out_size, bias);
        fused = 0;
    }
    epilogue_fused(j, n, grp, m0, m1, p0, p1, 0, fused);
    return 1;
}

/* Grid items (no packed product) = (image, group, column tile, row block). Row blocks only exist
 * when there are too few tiles to keep every thread busy; each then redoes its tile's im2col.
 * How the items are cut never changes what any output sums, or in which order: results do not
 * depend on the thread count. */
static void tile_run(void *arg, int64_t i0, int64_t i1) {
    conv_job *j = arg;
    float *buf = NULL;
    if (!j->pointwise && !j->wpk && !(buf = malloc(sizeof(float) * (size_t)(j->Kc * j->tile)))) {
        j->failed = 1;
        return;
    }
    int64_t last_col = -1;
    for (int64_t it = i0; it < i1; it++) {
        int64_t mb = it % j->nmb, rest = it / j->nmb;
        int64_t c0, c1, m0, m1;
        item_bounds(j, rest % j->ntiles, mb, &c0, &c1, &m0, &m1);
        if (!block_run(j, rest / j->ntiles, rest, c0, c1, m0, m1, buf, &last_col)) {
            j->failed = 1;
            break;
        }
    }
    free(buf);
}

/* Linear items (packed weights): the (column panel, row panel) pairs of all units, row panels
 * inner, are cut into equal runs, one per item. A run is a few whole columns of every row and at
 * most a partial column at each end, so every item does the same number of 12 x 32 kernel tiles
 * (give or take the last, partial panels) and packs the inputs of only the columns it touches:
 * an exact balanced split, where a grid of tiles x row blocks cannot divide, say, 49 column
 * panels by 16 threads. Whole columns go as products of at most KCONV_TILE_COLS columns. */
typedef void (*segment_fn)(conv_job *j, int64_t ng, int64_t c0, int64_t c1, int64_t m0,
                           int64_t m1, void *arg);

static void for_segments(conv_job *j, int64_t it, segment_fn fn, void *arg) {
    int64_t P = j->rpan, Q = j->cpan, W = j->units * P * Q;
    int64_t a = it * W / j->items, b = (it + 1) * W / j->items;
    while (a < b) {
        int64_t col = a / P, r0 = a - col * P, u = col / Q, c = col - u * Q, nc, r1;
        if (r0 > 0 || b - a < P) {
            nc = 1;
            r1 = min64(P, r0 + (b - a));
        } else {
            /* whole columns left in this run and unit, in even products of at most a tile */
            int64_t rem = min64((b - a) / P, Q - c), most = KCONV_TILE_COLS / KGEMM_NR;
            int64_t parts = (rem + most - 1) / most;
            nc = (rem + parts - 1) / parts;
            r1 = P;
        }
        fn(j, u, min64(j->cols, c * KGEMM_NR), min64(j->cols, (c + nc) * KGEMM_NR),
           r0 * KGEMM_MR, min64(j->Mg, r1 * KGEMM_MR), arg);
        a += nc == 1 ? r1 - r0 : nc * P;
    }
}

static void segment_run(conv_job *j, int64_t ng, int64_t c0, int64_t c1, int64_t m0, int64_t m1,
                        void *arg) {
    (void)arg;
    int64_t last_col = -1;
    if (!j->failed && !block_run(j, ng, 0, c0, c1, m0, m1, NULL, &last_col)) j->failed = 1;
}

/* Packs the inputs once for all items: items are (unit, KC block, column panel). */
static void prepack_run(void *arg, int64_t i0, int64_t i1) {
    conv_job *j = arg;
    const kconv_geom *g = j->g;
    int64_t Q = j->cpan, nkb = (j->Kc + KGEMM_KC - 1) / KGEMM_KC;
    for (int64_t it = i0; it < i1; it++) {
        int64_t q = it % Q, rest = it / Q, kb = rest % nkb, u = rest / nkb;
        int64_t pc = kb * KGEMM_KC, kc = min64(KGEMM_KC, j->Kc - pc);
        int64_t c0 = q * KGEMM_NR, nc = min64(KGEMM_NR, j->cols - c0);
        int64_t grp = u % g->group, n = u / g->group;
        float *dst = j->bp + u * j->Kc * j->bp_npad + pc * j->bp_npad + c0 * kc;
        panel_src ps = {g, j->x + ((j->span ? 0 : n * g->C) + grp * j->Cg) * g->in_size, 0};
        if (j->span) pack_im2col_span(&ps, pc, kc, c0, nc, dst);
        else pack_im2col(&ps, pc, kc, c0, nc, dst);
    }
}

static void linear_run(void *arg, int64_t i0, int64_t i1) {
    conv_job *j = arg;
    for (int64_t it = i0; it < i1; it++) for_segments(j, it, segment_run, NULL);
}

/* multiply-adds as the kernels do them (rows in 4s, columns in 32s), for the partition report */
static double block_cost(const conv_job *j, int64_t c0, int64_t c1, int64_t m0, int64_t m1) {
    if (c0 >= c1 || m0 >= m1) return 0;
    return (double)((m1 - m0 + 3) / 4 * 4) * (double)((c1 - c0 + 31) / 32 * 32) * (double)j->Kc;
}

static void segment_cost(conv_job *j, int64_t ng, int64_t c0, int64_t c1, int64_t m0, int64_t m1,
                         void *arg) {
    (void)ng;
    *(double *)arg += block_cost(j, c0, c1, m0, m1);
}

static void segment_cols(conv_job *j, int64_t ng, int64_t c0, int64_t c1, int64_t m0, int64_t m1,
                         void *arg) {
    (void)ng;
    (void)m0;
    (void)m1;
    *(double *)arg += (double)(c1 - c0);
}

/* columns the items pack, over the columns there are: linear runs pack each column they touch
 * (unless packed once for all), grid items each pack their tile */
static double repack_factor(conv_job *j, int64_t items) {
    double c = 0;
    if (!j->linear) return (double)j->nmb;
    if (j->bp) return 1.0;
    for (int64_t it = 0; it < items; it++) for_segments(j, it, segment_cols, &c);
    return c / ((double)j->units * (double)j->cols);
}

static double item_cost(const void *arg, int64_t it) {
    conv_job *j = (conv_job *)arg;
    double c = 0;
    if (j->linear) {
        for_segments(j, it, segment_cost, &c);
        return c;
    }
    int64_t c0, c1, m0, m1;
    item_bounds(j, (it / j->nmb) % j->ntiles, it % j->nmb, &c0, &c1, &m0, &m1);
    return block_cost(j, c0, c1, m0, m1);
}

int64_t kconv_packed_weight_size(const kconv_geom *g) {
    if (!kgemm_packed_available()) return 0;
    int64_t Mg = g->M / g->group, Kc = g->C / g->group * g->k_size;
    return g->group * kgemm_avx512_packed_size(Mg, Kc);
}

void kconv_pack_weight(const kconv_geom *g, const float *w, float *dst) {
    int64_t Mg = g->M / g->group, Kc = g->C / g->group * g->k_size;
    int64_t per = kgemm_avx512_packed_size(Mg, Kc);
    for (int64_t grp = 0; grp < g->group; grp++)
        kgemm_avx512_pack_a(0, Mg, Kc, w + grp * Mg * Kc, Kc, dst + grp * per);
}

int kconv_uses_gemm(const kconv_geom *g) {
    if (g->C / g->group != 1 || !kconv_depthwise_ok(g)) return 1;
    /* One input channel feeding many outputs through a long kernel (a 1-D audio front end:
     * 1 -> 256 channels, kernel 512, stride 160) is a real product over the taps: the direct
     * kernel, made for 3x3 and 5x5 windows, would walk every stride phase of the input instead. */
    return g->M / g->group >= 8 && g->k_size >= 32;
}

static kiln_status run_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *w,
                           const float *bias, const float *z, const kconv_act *act,
                           const float *w_packed, kconv_lazy_forms *forms, float *y);

/* A 1x1 convolution with strides and no padding (ResNet's downsampling shortcuts) reads every
 * stride-th input only. */
static int strided_pointwise(const kconv_geom *g) {
    int strided = 0;
    for (int d = 0; d < g->nd; d++) {
        if (g->k[d] != 1 || g->pad_b[d] || g->pad_e[d]) return 0;
        if (g->stride[d] != 1) strided = 1;
    }
    return strided;
}

typedef struct sub_job {
    const kconv_geom *g;
    const float *x;
    float *xs;
} sub_job;

/* planes [q0, q1) of the N * C input planes, subsampled to the output grid */
static void subsample_run(void *arg, int64_t q0, int64_t q1) {
    const sub_job *s = arg;
    const kconv_geom *g = s->g;
    int nd = g->nd, L = nd - 1;
    int64_t OW = g->out[L], sw = g->stride[L];
    for (int64_t q = q0; q < q1; q++) {
        const float *xp = s->x + q * g->in_size;
        float *d = s->xs + q * g->out_size;
        int64_t o[KCONV_MAX_ND] = {0};
        for (int64_t p = 0; p < g->out_size; p += OW) {
            int64_t off = 0, st = 1;
            for (int i = nd - 1; i >= 0; i--) {
                if (i < L) off += o[i] * g->stride[i] * st;
                st *= g->in[i];
            }
            const float *src = xp + off;
            if (sw == 1) memcpy(d + p, src, sizeof(float) * (size_t)OW);
            else for (int64_t t = 0; t < OW; t++) d[p + t] = src[t * sw];
            for (int i = L - 1; i >= 0; i--) {
                if (++o[i] < g->out[i]) break;
                o[i] = 0;
            }
        }
    }
}

kiln_status kconv_run_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *w,
                          const float *bias, const float *z, const kconv_act *act,
                          const float *w_packed, kconv_lazy_forms *forms, float *y) {
    if (g->N == 0 || g->M == 0 || g->out_size == 0 || !strided_pointwise(g))
        return run_f32(ctx, g, x, w, bias, z, act, w_packed, forms, y);
    /* gather the inputs the strides pick into a dense map once, then run a plain 1x1 product
     * on it (the im2col or direct kernels would hop across channel planes for every tap) */
    kconv_geom gs = *g;
    for (int d = 0; d < g->nd; d++) {
        gs.in[d] = g->out[d];
        gs.stride[d] = gs.dil[d] = 1;
    }
    kconv_finish_sizes(&gs);
    int64_t planes = g->N * g->C;
    float *xs = malloc(sizeof(float) * (size_t)(planes * g->out_size + 1));
    if (!xs) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory subsampling X");
    sub_job sj = {g, x, xs};
    kiln_parallel_for(ctx, planes, kpar_grain(planes, (double)planes * g->out_size * 0.5),
                      subsample_run, &sj);
    kiln_status st = run_f32(ctx, &gs, xs, w, bias, z, act, w_packed, forms, y);
    free(xs);
    return st;
}

/* Whether a 1x1 convolution's tiles should run across images. On maps of a column panel or more,
 * a tile across two images stores each image's columns in place (span_direct): nothing is
 * wasted on the padding of each image's last column panel (196 columns of a 14x14 map take 224,
 * 49 of a 7x7 map 64). Smaller maps go through a scratch block (span_tile), copied to each
 * image's place and only then given its activation, and their inputs through im2col; that costs
 * more than the padding unless the weights, streamed once per tile, are too big to stay in L2:
 * at one thread SqueezeNet's 13x13 expand convs (48 -> 192, batch 8) took 0.33 ms spanning
 * through the scratch block, 0.20 not; 1024 -> 256 at 14x14 7.4 and 6.2; at two threads,
 * 2048 -> 512 at 7x7 (4 MB of weights) 3.2 spanning, 3.7 not. */
static int pointwise_spans(const conv_job *j) {
    if (j->wpk && j->g->out_size >= KGEMM_NR) return 1;
    return (double)j->Mg * j->Kc * j->g->group * sizeof(float) > 2.0 * 1024 * 1024;
}

/* Another form of the weights, made from the packed ones by pack into size(g) floats: kept in
 * *slot from the first call on (NULL slot: *own holds a copy for this call only); NULL when out
 * of memory. */
static const float *lazy_form(const kconv_geom *g, const float *wpk, kconv_lazy_weights *slot,
                              float **own, int64_t (*size)(const kconv_geom *),
                              void (*pack)(const kconv_geom *, const float *, float *)) {
    float *wl = slot ? atomic_load(slot) : NULL;
    if (wl) return wl;
    float *fresh = kgemm_alloc_packed(size(g));
    if (!fresh) return NULL;
    pack(g, wpk, fresh);
    if (!slot) return *own = fresh;
    float *expect = NULL;
    if (atomic_compare_exchange_strong(slot, &expect, fresh)) return fresh;
    free(fresh); /* another run filled it meanwhile */
    return expect;
}

/* A kernel that reads its own form of the packed weights (Winograd's, the channel lanes'). */
typedef struct form_kernel {
    int64_t (*size)(const kconv_geom *);
    void (*pack)(const kconv_geom *, const float *, float *);
    kiln_status (*run)(kiln_ctx *, const kconv_geom *, const float *x, const float *w,
                       const float *bias, const float *z, const kconv_act *, float *y);
} form_kernel;

/* j's convolution through kernel k with its form of the weights (kept in slot, or made for this
 * call); frees packed, the weights packed for this call only */
static kiln_status run_form(kiln_ctx *ctx, const conv_job *j, kconv_lazy_weights *slot,
                            const form_kernel *k, float *packed) {
    float *own = NULL;
    const float *wf = lazy_form(j->g, j->wpk, slot, &own, k->size, k->pack);
    kiln_status st = wf ? k->run(ctx, j->g, j->x, wf, j->bias, j->z, j->act, j->y)
                        : KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing weights");
    free(own);
    free(packed);
    return st;
}

/* A node's Winograd weights, kept for the session's life, must fit its budget
 * (kiln_cpu_provider_reserve_winograd) when first made; weights made per call need none. (Two
 * runs making the same node's weights at once both reserve: the budget errs low.) */
static int winograd_weights_ok(kiln_ctx *ctx, const kconv_geom *g, kconv_lazy_forms *forms) {
    if (!forms || atomic_load(&forms->wino)) return 1;
    return kiln_cpu_provider_reserve_winograd(ctx->ep, (long long)(kconv_winograd_weight_size(g) * (int64_t)sizeof(float)));
}

static kiln_status run_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *w,
                           const float *bias, const float *z, const kconv_act *act,
                           const float *w_packed, kconv_lazy_forms *forms, float *y) {
    if (g->N == 0 || g->M == 0 || g->out_size == 0) return KILN_OK;
    kgemm_blas_serial();
    int nt = kiln_num_threads(ctx);
    if (!kconv_uses_gemm(g)) return kconv_depthwise_run(ctx, g, x, w, bias, z, act, y);
    conv_job j = {.g = g, .x = x, .w = w, .bias = bias, .z = z, .act = act, .y = y,
                  .Cg = g->C / g->group, .Mg = g->M / g->group};
    j.Kc = j.Cg * g->k_size;
    j.pointwise = 1;
    for (int d = 0; d < g->nd; d++)
        if (g->k[d] != 1 || g->stride[d] != 1 || g->pad_b[d] || g->pad_e[d]) j.pointwise = 0;
    if (j.Kc == 0) { /* no input channels: the output is the bias */
        memset(y, 0, sizeof(float) * (size_t)(g->N * g->M * g->out_size));
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t grp = 0; grp < g->group; grp++) epilogue(&j, n, grp, 0, j.Mg, 0, g->out_size, 1);
        return KILN_OK;
    }
    if (j.pointwise && g->out_size == 1) {
        /* 1x1 convolution of a 1x1 map (squeeze-excite blocks): a dense layer. With packed
         * weights, conv_matvec.c; otherwise a matrix-vector product per (image, group): the
         * tiled sgemm path would run its 12x32 kernels over a single output column. */
        if (kconv_matvec_f32(ctx, g, x, w_packed, bias, z, act, y)) return KILN_OK;
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t grp = 0; grp < g->group; grp++) {
                float *yg = y + n * g->M + grp * j.Mg;
                if (bias) memcpy(yg, bias + grp * j.Mg, sizeof(float) * (size_t)j.Mg);
                cblas_sgemv(CblasRowMajor, CblasNoTrans, (int)j.Mg, (int)j.Kc, 1.0f,
                            w + grp * j.Mg * j.Kc, (int)j.Kc, x + n * g->C + grp * j.Cg, 1,
                            bias ? 1.0f : 0.0f, yg, 1);
                epilogue(&j, n, grp, 0, j.Mg, 0, 1, 0);
            }
        return KILN_OK;
    }
    float *packed = NULL;
    if (kgemm_packed_available() && j.Mg > 1 && g->out_size > 1) {
        j.wpk_group = kgemm_avx512_packed_size(j.Mg, j.Kc);
        if (!w_packed) {
            packed = kgemm_alloc_packed(j.wpk_group * g->group);
            if (!packed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing weights");
            kconv_pack_weight(g, w, packed);
            w_packed = packed;
        }
        j.wpk = w_packed;
    }
    if (j.wpk && kconv_winograd_ok(ctx, g) && winograd_weights_ok(ctx, g, forms)) {
        static const form_kernel wino = {kconv_winograd_weight_size, kconv_winograd_pack,
                                         kconv_winograd_f32};
        return run_form(ctx, &j, forms ? &forms->wino : NULL, &wino, packed);
    }
    if (j.wpk && kconv_lanes_ok(g)) {
        static const form_kernel lanes = {kconv_lanes_weight_size, kconv_pack_lanes, kconv_lanes_f32};
        return run_form(ctx, &j, forms ? &forms->lanes : NULL, &lanes, packed);
    }
    if (j.wpk && kconv_direct_ok(g)) {
        kiln_status st = kconv_direct_f32(ctx, g, x, j.wpk, bias, z, act, y);
        free(packed);
        return st;
    }
    int64_t images;
    if (j.wpk) {
        /* The product packs a KC-deep slice of a tile's columns at a time, so a tile may be wide
         * (up to KCONV_TILE_COLS): each tile streams the weights once. Maps smaller than a tile
         * let a tile run on into the next image (span). Threads get linear items (see
         * for_segments): a grid of tiles x row blocks both divides unevenly and makes every row
         * block pack its columns' inputs again (one or two row panels' worth of work per column
         * panel: at 16 threads it nearly doubled the work of a 7x7 map's convolution). */
        j.span = g->N > 1 && g->out_size < KCONV_TILE_COLS && (!j.pointwise || pointwise_spans(&j));
        j.cols = j.span ? g->N * g->out_size : g->out_size;
        images = j.span ? g->group : g->N * g->group;
        int64_t P = (j.Mg + KGEMM_MR - 1) / KGEMM_MR, Q = (j.cols + KGEMM_NR - 1) / KGEMM_NR;
        double macs = (double)g->N * g->M * j.Kc * g->out_size;
        int64_t W = images * P * Q, items = 1;
        if (nt > 1 && macs / 100.0 >= KPAR_SERIAL_NS) {
            /* one run per thread; more (up to 4 each) while a run keeps 4 whole columns, so that
             * a thread that starts late is made up for by the others */
            int64_t per = W / ((int64_t)nt * 4 * P);
            items = (int64_t)nt * (per < 1 ? 1 : per > 4 ? 4 : per);
            if (items > W) items = W;
        }
        j.linear = 1;
        j.units = images;
        j.items = items;
        j.cunit = KGEMM_NR;
        j.cpan = Q;
        j.runit = KGEMM_MR;
        j.rpan = P;
        j.ntiles = j.nmb = 1;
        j.tile = min64(j.cols, KCONV_TILE_COLS);
        /* A run packs the inputs of every column it touches; when the runs are short next to
         * the columns (small maps: 16 runs over the 2 column panels of a 7x7 map packed them 8
         * times over), the columns are packed once, in parallel, and the runs read them. */
        int64_t npad = Q * KGEMM_NR, nkb = (j.Kc + KGEMM_KC - 1) / KGEMM_KC;
        if (items > 1 && 2 * items >= images * Q && (double)images * j.Kc * npad <= 16e6) {
            j.bp = kgemm_alloc_packed(images * j.Kc * npad);
            if (j.bp) {
                j.bp_npad = npad;
                int64_t n_pp = images * nkb * Q;
                kiln_parallel_for(ctx, n_pp,
                                  kpar_grain(n_pp, (double)images * j.Kc * npad * 0.5),
                                  prepack_run, &j);
            }
        }
    } else {
        /* a tile's im2col block of about 256 KB stays in L2 */
        int64_t tile, ntiles;
        j.cols = g->out_size;
        images = g->N * g->group;
        tile = (64 * 1024) / j.Kc;
        if (tile < 64) tile = 64;
        tile = (tile + 15) / 16 * 16;
        if (tile > g->out_size) tile = g->out_size;
        ntiles = (g->out_size + tile - 1) / tile;
        if (nt > 1 && images * ntiles < 4 * nt) {
            /* even out the threads' shares with smaller tiles, if they stay reasonably wide */
            int64_t best = ntiles;
            for (int64_t k = ntiles; k <= ntiles + 4 * nt; k++) {
                if ((images * k) % nt == 0) { best = k; break; }
            }
            if ((g->out_size + best - 1) / best >= 48) ntiles = best;
        }
        tile = (g->out_size + ntiles - 1) / ntiles;
        ntiles = (j.cols + tile - 1) / tile;
        j.cunit = j.tile = tile;
        j.cpan = j.ntiles = ntiles;
        /* still too few items (small maps): also split the output channels, in 12-row panels */
        int64_t mblock = j.Mg, nmb = 1;
        double total = (double)g->N * g->M * j.Kc * g->out_size / 100.0;
        if (nt > 1 && images * ntiles < 2 * nt && j.Mg >= 24 && total >= KPAR_SERIAL_NS) {
            int64_t want = (2 * nt + images * ntiles - 1) / (images * ntiles);
            int64_t mb = (j.Mg + want - 1) / want;
            mb = (mb + 11) / 12 * 12;
            if (mb < 24) mb = 24;
            mblock = mb;
            nmb = (j.Mg + mb - 1) / mb;
        }
        j.runit = mblock;
        j.rpan = j.nmb = nmb;
    }
    int64_t items = j.linear ? j.items : images * j.ntiles * j.nmb;
    double macs = (double)g->N * g->M * j.Kc * g->out_size;
    int64_t grain = kpar_grain(items, macs / 100.0);
    if (kconv_debug_partition())
        kconv_report_partition(j.linear ? "gemm-packed-linear" : "gemm", g, nt, items, grain,
                               item_cost, &j, repack_factor(&j, items));
    kiln_parallel_for(ctx, items, grain, j.linear ? linear_run : tile_run, &j);
    free(j.bp);
    free(packed);
    return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for im2col") : KILN_OK;
}

/* float64: one product per (image, group) over the whole im2col matrix */
kiln_status kconv_run_f64(kiln_ctx *ctx, const kconv_geom *g, const double *x, const double *w,
                          const double *bias, double *y) {
    if (g->N == 0 || g->M == 0 || g->out_size == 0) return KILN_OK;
    int64_t Cg = g->C / g->group, Mg = g->M / g->group, Kc = Cg * g->k_size;
    double *col = malloc(sizeof(double) * (size_t)(Kc * g->out_size + 1));
    if (!col) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for im2col");
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t grp = 0; grp < g->group; grp++) {
            const double *xg = x + (n * g->C + grp * Cg) * g->in_size;
            double *yg = y + (n * g->M + grp * Mg) * g->out_size;
            kconv_im2col_f64(g, Cg, xg, 0, g->out_size, col, g->out_size);
            kgemm_f64(ctx, 0, 0, Mg, g->out_size, Kc, 1.0, w + grp * Mg * Kc, Kc, col, g->out_size,
                      0.0, yg, g->out_size);
            for (int64_t m = 0; m < Mg && bias; m++)
                for (int64_t i = 0; i < g->out_size; i++) yg[m * g->out_size + i] += bias[grp * Mg + m];
        }
    free(col);
    return KILN_OK;
}
