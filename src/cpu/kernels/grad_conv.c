/* kiln:ConvGrad(dY, X, W) -> dX, dW, dB: the gradients of an ONNX Conv (groups, strides, pads,
 * auto_pad, dilations; any number of spatial dims), by im2col and GEMM per image and group:
 * dW_g += dY_g col^T, dX = col2im(W_g^T dY_g), dB = the sum of dY over images and positions. */
#include "grad_common.h"
#include "conv_util.h"
#include "gemm_util.h"
#include <stdlib.h>

static kiln_status geometry(kiln_ctx *ctx, const kiln_tensor *x, const kiln_tensor *w, kconv_geom *g) {
    memset(g, 0, sizeof *g);
    if (x->rank < 3 || w->rank != x->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has rank %d and W %d; expected equal ranks >= 3", x->rank,
                         w->rank);
    g->nd = x->rank - 2;
    g->N = x->dims[0];
    g->C = x->dims[1];
    g->M = w->dims[0];
    g->group = kiln_attr_int(ctx->node, "group", 1);
    if (g->group < 1 || g->C < 0 || g->M < 0 || g->C % g->group || g->M % g->group || w->dims[1] * g->group != g->C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "channels (X %lld, W %lld x %lld) do not match group %lld",
                         (long long)g->C, (long long)g->M, (long long)w->dims[1], (long long)g->group);
    int nk = 0;
    const int64_t *ks = kiln_attr_ints(ctx->node, "kernel_shape", &nk);
    for (int d = 0; d < g->nd; d++) {
        g->in[d] = x->dims[d + 2];
        g->k[d] = w->dims[d + 2];
        if (ks && (nk != g->nd || ks[d] != g->k[d]))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "kernel_shape does not match W");
    }
    return kconv_window(ctx, g, 1, 0);
}

static kiln_status cg_infer(kiln_ctx *ctx) {
    kiln_tensor *dy, *x, *w;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &dy));
    KILN_TRY(gk_float_input(ctx, 1, dy, &x));
    KILN_TRY(gk_float_input(ctx, 2, dy, &w));
    KILN_TRY(gk_out_like(ctx, 0, dy->dtype, x));
    KILN_TRY(gk_out_like(ctx, 1, dy->dtype, w));
    if (ctx->n_out > 2 && kiln_output(ctx, 2)) {
        int64_t m = w->rank > 0 ? w->dims[0] : KILN_DIM_UNKNOWN;
        KILN_TRY(kiln_set_output(ctx, 2, dy->dtype, 1, &m));
    }
    return KILN_OK;
}

typedef struct {
    const kconv_geom *g, *tg;
    int64_t Cg, P;
    const void *x;  /* the image's channel block */
    void *col, *dx;
    int dt;
} cg_job;

static void cg_im2col(void *arg, int64_t p0, int64_t p1) {
    const cg_job *j = arg;
    if (j->dt == KILN_DTYPE_DOUBLE) kconv_im2col_f64(j->g, j->Cg, j->x, p0, p1, (double *)j->col + p0, j->P);
    else kconv_im2col_f32(j->g, j->Cg, j->x, p0, p1, (float *)j->col + p0, j->P);
}

static void cg_col2im(void *arg, int64_t c0, int64_t c1) {
    const cg_job *j = arg;
    if (j->dt == KILN_DTYPE_DOUBLE) kconv_col2im_f64(j->tg, j->col, c0, c1, j->dx);
    else kconv_col2im_f32(j->tg, j->col, c0, c1, j->dx);
}

static void gemm(kiln_ctx *ctx, int dt, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                 const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (dt == KILN_DTYPE_DOUBLE) kgemm_f64(ctx, ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
    else kgemm_f32(ctx, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, (float)beta, C, ldc);
}

static void gemm_serial(int dt, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                        const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (dt == KILN_DTYPE_DOUBLE) kgemm_f64_serial(ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
    else kgemm_f32_serial(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, (float)beta, C, ldc);
}

/* Many small images: each block of images runs on one thread with serial products, into its own
 * dW (summed at the end), since per-image products are too small to split. */
typedef struct {
    const kconv_geom *g, *tg;
    const char *x, *w, *dy;
    char *dx;
    char *dw_blocks;  /* one dW per block, or NULL */
    char *cols;       /* one im2col buffer per block */
    int64_t n_blocks, dw_size;
    int dt;
    int fail;
} cg_images;

static void cg_image_blocks(void *arg, int64_t b0, int64_t b1) {
    cg_images *j = arg;
    const kconv_geom *g = j->g;
    int dt = j->dt;
    size_t es = dt == KILN_DTYPE_DOUBLE ? 8 : 4;
    int64_t G = g->group, Cg = g->C / G, Mg = g->M / G, CK = Cg * g->k_size, P = g->out_size;
    for (int64_t b = b0; b < b1; b++) {
        int64_t n0 = g->N * b / j->n_blocks, n1 = g->N * (b + 1) / j->n_blocks;
        char *col = j->cols + (size_t)(b * CK * P) * es, *dwb = j->dw_blocks ? j->dw_blocks + (size_t)(b * j->dw_size) * es : NULL;
        for (int64_t n = n0; n < n1; n++)
            for (int64_t gr = 0; gr < G; gr++) {
                const char *dyg = j->dy + (size_t)((n * g->M + gr * Mg) * P) * es;
                const char *xg = j->x + (size_t)((n * g->C + gr * Cg) * g->in_size) * es;
                if (dwb) {
                    if (dt == KILN_DTYPE_DOUBLE) kconv_im2col_f64(g, Cg, (const double *)xg, 0, P, (double *)col, P);
                    else kconv_im2col_f32(g, Cg, (const float *)xg, 0, P, (float *)col, P);
                    gemm_serial(dt, 0, 1, Mg, CK, P, dyg, P, col, P, n > n0 ? 1.0 : 0.0, dwb + (size_t)(gr * Mg * CK) * es, CK);
                }
                if (j->dx) {
                    char *dxg = j->dx + (size_t)((n * g->C + gr * Cg) * g->in_size) * es;
                    gemm_serial(dt, 1, 0, CK, P, Mg, j->w + (size_t)(gr * Mg * CK) * es, CK, dyg, P, 0.0, col, P);
                    if (dt == KILN_DTYPE_DOUBLE) kconv_col2im_f64(j->tg, (const double *)col, 0, Cg, (double *)dxg);
                    else kconv_col2im_f32(j->tg, (const float *)col, 0, Cg, (float *)dxg);
                }
            }
        if (dwb && n1 == n0) memset(dwb, 0, (size_t)j->dw_size * es);
    }
}

/* One image and group at a time, each product and im2col spread over the threads. */
static kiln_status cg_by_image(kiln_ctx *ctx, const kconv_geom *gp_, const kconv_geom *tgp, const kiln_tensor *x,
                               const kiln_tensor *w, const kiln_tensor *dy, kiln_tensor *dx, kiln_tensor *dw) {
    const kconv_geom g = *gp_, tg = *tgp;
    int dt = dy->dtype;
    size_t es = dt == KILN_DTYPE_DOUBLE ? 8 : 4;
    int64_t G = g.group, Cg = g.C / G, Mg = g.M / G, CK = Cg * g.k_size, P = g.out_size;
    void *col = malloc(es * (size_t)(CK * P > 0 ? CK * P : 1));
    if (!col) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    const char *xp = x->data, *wp = w->data, *gp = dy->data;
    for (int64_t n = 0; n < g.N; n++)
        for (int64_t gr = 0; gr < G; gr++) {
            const char *dyg = gp + (size_t)((n * g.M + gr * Mg) * P) * es;
            if (dw) {
                cg_job j = {&g, &tg, Cg, P, xp + (size_t)((n * g.C + gr * Cg) * g.in_size) * es, col, NULL, dt};
                kiln_parallel_for(ctx, P, gk_grain(CK), cg_im2col, &j);
                gemm(ctx, dt, 0, 1, Mg, CK, P, dyg, P, col, P, n > 0 ? 1.0 : 0.0,
                     (char *)dw->data + (size_t)(gr * Mg * CK) * es, CK);
            }
            if (dx) {
                gemm(ctx, dt, 1, 0, CK, P, Mg, wp + (size_t)(gr * Mg * CK) * es, CK, dyg, P, 0.0, col, P);
                cg_job j = {&g, &tg, Cg, P, NULL, col, (char *)dx->data + (size_t)((n * g.C + gr * Cg) * g.in_size) * es, dt};
                kiln_parallel_for(ctx, Cg, gk_grain(g.k_size * P), cg_col2im, &j);
            }
        }
    if (dw && g.N == 0) gk_zero(dw);
    free(col);
    return KILN_OK;
}

static kiln_status cg_compute(kiln_ctx *ctx) {
    kiln_tensor *dy = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *w = kiln_input(ctx, 2);
    kiln_tensor *dx = kiln_output(ctx, 0), *dw = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL,
                *db = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    kconv_geom g;
    KILN_TRY(geometry(ctx, x, w, &g));
    if (dy->rank != x->rank || dy->dims[0] != g.N || dy->dims[1] != g.M)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's shape does not match the convolution's output");
    for (int d = 0; d < g.nd; d++)
        if (dy->dims[d + 2] != g.out[d])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's spatial dim %d is %lld, the output's %lld",
                             d, (long long)dy->dims[d + 2], (long long)g.out[d]);
    int dt = dy->dtype;
    size_t es = dt == KILN_DTYPE_DOUBLE ? 8 : 4;
    int64_t G = g.group, Cg = g.C / G, CK = Cg * g.k_size, P = g.out_size;
    kconv_geom tg = g; /* col2im's view: the gradient positions are the small side */
    memcpy(tg.in, g.out, sizeof g.out);
    memcpy(tg.out, g.in, sizeof g.in);
    tg.in_size = g.out_size;
    tg.out_size = g.in_size;
    if (dx) gk_zero(dx);
    int64_t threads = kiln_num_threads(ctx), work = CK * P * g.M / (G ? G : 1);
    if (threads > 1 && g.N >= 2 * threads && work < ((int64_t)1 << 22)) {
        int64_t nb = threads, dws = kiln_numel(w);
        cg_images j = {&g, &tg, x->data, w->data, dy->data, dx ? dx->data : NULL, NULL, NULL, nb, dws, dt, 0};
        j.cols = malloc(es * (size_t)(nb * CK * P > 0 ? nb * CK * P : 1));
        if (dw) j.dw_blocks = malloc(es * (size_t)(nb * dws > 0 ? nb * dws : 1));
        if (!j.cols || (dw && !j.dw_blocks)) {
            free(j.cols);
            free(j.dw_blocks);
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        }
        kiln_parallel_for(ctx, nb, 1, cg_image_blocks, &j);
        if (dw)
            for (int64_t i = 0; i < dws; i++) {
                double acc = 0;
                for (int64_t b = 0; b < nb; b++) acc += gk_ld(j.dw_blocks, b * dws + i, dt);
                gk_st(dw->data, i, dt, acc);
            }
        free(j.cols);
        free(j.dw_blocks);
    } else {
        KILN_TRY(cg_by_image(ctx, &g, &tg, x, w, dy, dx, dw));
    }
    if (db) {
        for (int64_t m = 0; m < g.M; m++) {
            double s = 0;
            for (int64_t n = 0; n < g.N; n++)
                for (int64_t p = 0; p < P; p++) s += gk_ld(dy->data, (n * g.M + m) * P + p, dt);
            gk_st(db->data, m, dt, s);
        }
    }
    return KILN_OK;
}

const kiln_op kiln_ops_grad_conv[] = {
    {"kiln", "ConvGrad", 1, 0, NULL, cg_infer, cg_compute, NULL},
    {0}};
