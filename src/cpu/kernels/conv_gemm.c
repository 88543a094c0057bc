/* Convolution as matrix products. The output positions of each (image, group) are cut into
 * column tiles; a tile's im2col block fits in cache, one single-threaded sgemm turns it into the
 * tile's outputs, and bias, residual and activation are applied while the tile is still hot.
 * Tiles are the unit of parallel work. When there are too few tiles to feed every thread (small
 * feature maps), the whole im2col matrix is built once and the product itself is split instead.
 * 1x1 convolutions with unit strides and no padding read the input directly. Depthwise
 * convolutions go to the direct kernel (conv_depthwise.c). */
#include "conv_util.h"
#include "gemm_util.h"
#include <stdlib.h>
#include <string.h>

typedef struct conv_job {
    const kconv_geom *g;
    const float *x, *w, *bias, *z;
    const kconv_act *act;
    float *y;
    int64_t Cg, Mg, Kc, tile, ntiles;
    int pointwise;
    volatile int failed;
} conv_job;

/* residual and activation over rows [0, Mg) x columns [p0, p1) of one (image, group); with
 * with_bias also the bias (when the product could not add it itself). */
static void epilogue(const conv_job *j, int64_t n, int64_t grp, int64_t p0, int64_t p1,
                     int with_bias) {
    const kconv_geom *g = j->g;
    int act = j->act && j->act->kind != KACT_NONE;
    if (!(with_bias && j->bias) && !j->z && !act) return;
    for (int64_t m = 0; m < j->Mg; m++) {
        int64_t oc = grp * j->Mg + m;
        float *yr = j->y + (n * g->M + oc) * g->out_size + p0;
        int64_t len = p1 - p0;
        if (with_bias && j->bias) kvec_add_scalar_f32(yr, j->bias[oc], len);
        if (j->z) kvec_add_f32(yr, j->z + (n * g->M + oc) * g->out_size + p0, len);
        if (act) kconv_apply_act(j->act, yr, len);
    }
}

static void tile_run(void *arg, int64_t i0, int64_t i1) {
    conv_job *j = arg;
    const kconv_geom *g = j->g;
    float *buf = NULL;
    if (!j->pointwise && !(buf = malloc(sizeof(float) * (size_t)(j->Kc * j->tile)))) {
        j->failed = 1;
        return;
    }
    for (int64_t it = i0; it < i1; it++) {
        int64_t t = it % j->ntiles, ng = it / j->ntiles, grp = ng % g->group, n = ng / g->group;
        int64_t p0 = t * j->tile, p1 = p0 + j->tile < g->out_size ? p0 + j->tile : g->out_size;
        if (p0 >= p1) continue;
        const float *xg = j->x + (n * g->C + grp * j->Cg) * g->in_size;
        const float *B;
        int64_t ldb;
        if (j->pointwise) {
            B = xg + p0;
            ldb = g->in_size;
        } else {
            kconv_im2col_f32(g, j->Cg, xg, p0, p1, buf, p1 - p0);
            B = buf;
            ldb = p1 - p0;
        }
        float *yg = j->y + (n * g->M + grp * j->Mg) * g->out_size + p0;
        kgemm_f32_serial_bias(0, 0, j->Mg, p1 - p0, j->Kc, 1.0f, j->w + grp * j->Mg * j->Kc, j->Kc,
                              B, ldb, 0.0f, yg, g->out_size, j->bias ? j->bias + grp * j->Mg : NULL);
        epilogue(j, n, grp, p0, p1, 0);
    }
    free(buf);
}

typedef struct cols_job {
    const kconv_geom *g;
    int64_t Cg, chunk;
    const float *x;
    float *col;
} cols_job;

static void cols_run(void *arg, int64_t c0, int64_t c1) {
    const cols_job *j = arg;
    int64_t p0 = c0 * j->chunk, p1 = c1 * j->chunk;
    if (p1 > j->g->out_size) p1 = j->g->out_size;
    if (p0 < p1) kconv_im2col_f32(j->g, j->Cg, j->x, p0, p1, j->col + p0, j->g->out_size);
}

typedef struct epi_job {
    const conv_job *cj;
    int64_t n, grp;
} epi_job;

static void epi_rows(void *arg, int64_t m0, int64_t m1) {
    const epi_job *e = arg;
    const kconv_geom *g = e->cj->g;
    for (int64_t m = m0; m < m1; m++) {
        int64_t oc = e->grp * e->cj->Mg + m;
        float *yr = e->cj->y + (e->n * g->M + oc) * g->out_size;
        if (e->cj->bias) kvec_add_scalar_f32(yr, e->cj->bias[oc], g->out_size);
        if (e->cj->z) kvec_add_f32(yr, e->cj->z + (e->n * g->M + oc) * g->out_size, g->out_size);
        if (e->cj->act && e->cj->act->kind != KACT_NONE) kconv_apply_act(e->cj->act, yr, g->out_size);
    }
}

typedef struct dw_job {
    const kconv_geom *g;
    const float *x, *w, *bias, *z;
    const kconv_act *act;
    float *y;
    volatile int failed;
} dw_job;

static void dw_run(void *arg, int64_t q0, int64_t q1) {
    dw_job *j = arg;
    if (kconv_depthwise_f32(j->g, j->x, j->w, j->bias, j->y, q0, q1)) {
        j->failed = 1;
        return;
    }
    if (!j->z && (!j->act || j->act->kind == KACT_NONE)) return;
    int64_t os = j->g->out_size;
    for (int64_t q = q0; q < q1; q++) {
        float *yp = j->y + q * os;
        if (j->z) kvec_add_f32(yp, j->z + q * os, os);
        if (j->act) kconv_apply_act(j->act, yp, os);
    }
}

kiln_status kconv_run_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *w,
                          const float *bias, const float *z, const kconv_act *act, float *y) {
    if (g->N == 0 || g->M == 0 || g->out_size == 0) return KILN_OK;
    kgemm_blas_serial();
    int nt = kiln_num_threads(ctx);
    if (g->C / g->group == 1 && kconv_depthwise_ok(g)) {
        dw_job j = {g, x, w, bias, z, act, y, 0};
        int64_t planes = g->N * g->M;
        int64_t work = g->out_size * g->k_size;
        kiln_parallel_for(ctx, planes, work >= 4096 ? 1 : 4096 / (work > 0 ? work : 1), dw_run, &j);
        return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in depthwise conv")
                        : KILN_OK;
    }
    conv_job j;
    memset(&j, 0, sizeof j);
    j.g = g;
    j.x = x;
    j.w = w;
    j.bias = bias;
    j.z = z;
    j.act = act;
    j.y = y;
    j.Cg = g->C / g->group;
    j.Mg = g->M / g->group;
    j.Kc = j.Cg * g->k_size;
    j.pointwise = 1;
    for (int d = 0; d < g->nd; d++)
        if (g->k[d] != 1 || g->stride[d] != 1 || g->pad_b[d] || g->pad_e[d]) j.pointwise = 0;
    if (j.Kc == 0) { /* no input channels: the output is the bias */
        memset(y, 0, sizeof(float) * (size_t)(g->N * g->M * g->out_size));
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t grp = 0; grp < g->group; grp++) epilogue(&j, n, grp, 0, g->out_size, 1);
        return KILN_OK;
    }
    /* a tile's im2col block of about 256 KB stays in L2 */
    int64_t tile = (64 * 1024) / j.Kc;
    if (tile < 64) tile = 64;
    tile = (tile + 15) / 16 * 16;
    if (tile > g->out_size) tile = g->out_size;
    int64_t ntiles = (g->out_size + tile - 1) / tile, images = g->N * g->group;
    if (nt > 1 && images * ntiles < 4 * nt) {
        /* even out the threads' shares with smaller tiles, if they stay reasonably wide */
        int64_t best = ntiles;
        for (int64_t k = ntiles; k <= ntiles + 4 * nt; k++) {
            if ((images * k) % nt == 0) { best = k; break; }
        }
        if ((g->out_size + best - 1) / best >= 48) ntiles = best;
    }
    tile = (g->out_size + ntiles - 1) / ntiles;
    ntiles = (g->out_size + tile - 1) / tile;
    j.tile = tile;
    j.ntiles = ntiles;
    if (nt <= 1 || images * ntiles >= nt) {
        kiln_parallel_for(ctx, images * ntiles, 1, tile_run, &j);
        return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for im2col") : KILN_OK;
    }
    /* Small feature maps: build each image's whole im2col matrix, split the product instead. */
    float *col = NULL;
    if (!j.pointwise && !(col = malloc(sizeof(float) * (size_t)(j.Kc * g->out_size))))
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for im2col");
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t grp = 0; grp < g->group; grp++) {
            const float *xg = x + (n * g->C + grp * j.Cg) * g->in_size;
            const float *B = xg;
            if (col) {
                cols_job cj = {g, j.Cg, 64, xg, col};
                kiln_parallel_for(ctx, (g->out_size + 63) / 64, 1, cols_run, &cj);
                B = col;
            }
            float *yg = y + (n * g->M + grp * j.Mg) * g->out_size;
            kgemm_f32(ctx, 0, 0, j.Mg, g->out_size, j.Kc, 1.0f, w + grp * j.Mg * j.Kc, j.Kc, B,
                      g->out_size, 0.0f, yg, g->out_size);
            if (bias || z || (act && act->kind != KACT_NONE)) {
                epi_job e = {&j, n, grp};
                kiln_parallel_for(ctx, j.Mg, 16, epi_rows, &e);
            }
        }
    free(col);
    return KILN_OK;
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
