/* ConvTranspose: per (image, group) one product col = W_g^T X_g (the kernel taps of every input
 * position), then col2im scatters the taps into the output planes, which start as the bias.
 * The scatter runs in parallel over output channels, which never share a plane. */
#include "conv_util.h"
#include "gemm_util.h"
#include <stdlib.h>
#include <string.h>

static kiln_status convt_check(kiln_ctx *ctx, const kiln_tensor *X, const kiln_tensor *W,
                               const kiln_tensor *B, kconv_geom *g, int *known) {
    char sx[96], sw[96];
    int ranks_known;
    *known = 0;
    KILN_TRY(kconv_check_ranks(ctx, X, W, g, &ranks_known));
    if (!ranks_known) return KILN_OK;
    int nd = g->nd;
    g->N = X->dims[0];
    g->C = X->dims[1];
    g->M = W->dims[1] < 0 ? -1 : W->dims[1] * g->group;
    if (g->C >= 0 && W->dims[0] >= 0 && W->dims[0] != g->C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "X is %s with %lld channels, but W is %s: W's dim 0 must equal the channels",
                         kconv_dims_str(X->rank, X->dims, sx, sizeof sx), (long long)g->C,
                         kconv_dims_str(W->rank, W->dims, sw, sizeof sw));
    if (g->C >= 0 && g->C % g->group)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "X has %lld channels, not divisible by group %lld", (long long)g->C,
                         (long long)g->group);
    if (B && B->rank >= 0 &&
        (B->rank != 1 || (B->dims[0] >= 0 && g->M >= 0 && B->dims[0] != g->M)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "bias B is %s; expected [%lld] (one per output channel)",
                         kconv_dims_str(B->rank, B->dims, sx, sizeof sx), (long long)g->M);
    int nk = 0, nop = 0, nos = 0, npads = 0, mode;
    const int64_t *ks = kiln_attr_ints(ctx->node, "kernel_shape", &nk);
    const int64_t *op = kiln_attr_ints(ctx->node, "output_padding", &nop);
    const int64_t *os = kiln_attr_ints(ctx->node, "output_shape", &nos);
    const int64_t *pads = kiln_attr_ints(ctx->node, "pads", &npads);
    if (ks && nk != nd)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "kernel_shape has %d values for %d spatial dims", nk, nd);
    if (op && nop != nd)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "output_padding has %d values for %d spatial dims", nop, nd);
    if (os && nos != nd && nos != nd + 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "output_shape has %d values for %d spatial dims", nos, nd);
    if (pads && npads != 2 * nd)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pads has %d values, expected %d", npads,
                         2 * nd);
    if (os && nos == nd + 2) os += 2;
    KILN_TRY(kconv_auto_pad(ctx, &mode));
    int nst = 0, ndl = 0;
    const int64_t *st = kiln_attr_ints(ctx->node, "strides", &nst);
    const int64_t *dl = kiln_attr_ints(ctx->node, "dilations", &ndl);
    if ((st && nst != nd) || (dl && ndl != nd))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "%s has %d values for %d spatial dims", st && nst != nd ? "strides" : "dilations",
                         st && nst != nd ? nst : ndl, nd);
    for (int i = 0; i < nd; i++) {
        int64_t wk = W->dims[i + 2];
        if (ks && wk >= 0 && ks[i] != wk)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "kernel_shape[%d] is %lld but W's spatial dim is %lld", i,
                             (long long)ks[i], (long long)wk);
        g->k[i] = ks ? ks[i] : wk;
        g->in[i] = X->dims[i + 2];
        g->stride[i] = st ? st[i] : 1;
        g->dil[i] = dl ? dl[i] : 1;
        int64_t adj = op ? op[i] : 0;
        if (g->stride[i] < 1 || g->dil[i] < 1 || adj < 0 || (pads && (pads[i] < 0 || pads[nd + i] < 0)))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "strides/dilations must be >= 1 and pads/output_padding >= 0 (dim %d)", i);
        if (g->k[i] < 0 || g->in[i] < 0) {
            g->out[i] = os ? os[i] : KILN_DIM_UNKNOWN;
            continue;
        }
        if (g->k[i] < 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "kernel size %lld in dim %d is not positive",
                             (long long)g->k[i], i);
        int64_t dk = (g->k[i] - 1) * g->dil[i] + 1, full = g->stride[i] * (g->in[i] - 1) + adj + dk;
        if (os || mode == KCONV_PAD_SAME_UPPER || mode == KCONV_PAD_SAME_LOWER) {
            int64_t out = os ? os[i] : g->in[i] * g->stride[i];
            int64_t total = full - out;
            if (total < 0) total = 0; /* a larger output only gets trailing zeros (plus bias) */
            /* SAME_UPPER puts the odd unit of padding last, everything else (SAME_LOWER, an
             * explicit output_shape) puts it first, as the operator's spec says */
            g->pad_b[i] = mode == KCONV_PAD_SAME_UPPER ? total / 2 : total - total / 2;
            g->pad_e[i] = total - g->pad_b[i];
            if (out < 0)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output_shape[%d] is negative", i);
            g->out[i] = out;
        } else {
            g->pad_b[i] = mode == KCONV_PAD_NOTSET && pads ? pads[i] : 0;
            g->pad_e[i] = mode == KCONV_PAD_NOTSET && pads ? pads[nd + i] : 0;
            g->out[i] = full - g->pad_b[i] - g->pad_e[i];
            if (g->out[i] < 0)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "pads of dim %d (%lld + %lld) exceed the full output size %lld", i,
                                 (long long)g->pad_b[i], (long long)g->pad_e[i], (long long)full);
        }
    }
    kconv_finish_sizes(g);
    *known = 1;
    return KILN_OK;
}

static kiln_status convt_inputs(kiln_ctx *ctx, kiln_tensor **X, kiln_tensor **W, kiln_tensor **B) {
    KILN_TRY(kiln_need_input(ctx, 0, X));
    KILN_TRY(kiln_need_input(ctx, 1, W));
    *B = kiln_input(ctx, 2);
    int dt = (*X)->dtype;
    if (dt != KILN_DTYPE_FLOAT && dt != KILN_DTYPE_DOUBLE && !kcvt_is_half(dt))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d for input X", dt);
    if ((*W)->dtype != dt || (*B && (*B)->dtype != dt))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "inputs X, W%s have different element types",
                         *B ? ", B" : "");
    return KILN_OK;
}

kiln_status kconvt_infer(kiln_ctx *ctx) {
    kiln_tensor *X, *W, *B;
    KILN_TRY(convt_inputs(ctx, &X, &W, &B));
    kconv_geom g;
    int known;
    KILN_TRY(convt_check(ctx, X, W, B, &g, &known));
    if (!known) return kiln_set_output_unknown(ctx, 0, X->dtype);
    int64_t dims[KILN_MAX_RANK] = {g.N, g.M};
    for (int i = 0; i < g.nd; i++) dims[i + 2] = g.out[i];
    return kiln_set_output(ctx, 0, X->dtype, g.nd + 2, dims);
}

typedef struct scatter_job {
    const kconv_geom *g;
    const void *col, *bias;
    void *y;
    int dbl;
} scatter_job;

static void scatter_run(void *arg, int64_t m0, int64_t m1) {
    const scatter_job *j = arg;
    int64_t os = j->g->out_size;
    for (int64_t m = m0; m < m1; m++) {
        if (j->dbl) {
            double *p = (double *)j->y + m * os, b = j->bias ? ((const double *)j->bias)[m] : 0.0;
            for (int64_t i = 0; i < os; i++) p[i] = b;
        } else {
            float *p = (float *)j->y + m * os, b = j->bias ? ((const float *)j->bias)[m] : 0.0f;
            for (int64_t i = 0; i < os; i++) p[i] = b;
        }
    }
    if (j->dbl) kconv_col2im_f64(j->g, j->col, m0, m1, j->y);
    else kconv_col2im_f32(j->g, j->col, m0, m1, j->y);
}

/* x, w, bias, y: float or double buffers (dbl) of the whole batch */
static kiln_status convt_run(kiln_ctx *ctx, const kconv_geom *g, int dbl, const void *x,
                             const void *w, const void *bias, void *y) {
    int64_t Cg = g->C / g->group, Mg = g->M / g->group, KK = Mg * g->k_size;
    size_t es = dbl ? 8 : 4;
    if (g->N == 0 || g->M == 0 || g->out_size == 0) return KILN_OK;
    void *col = malloc(es * (size_t)(KK * g->in_size + 1));
    if (!col) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the column buffer");
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t grp = 0; grp < g->group; grp++) {
            const char *xg = (const char *)x + es * (size_t)((n * g->C + grp * Cg) * g->in_size);
            const char *wg = (const char *)w + es * (size_t)(grp * Cg * KK);
            char *yg = (char *)y + es * (size_t)((n * g->M + grp * Mg) * g->out_size);
            if (dbl)
                kgemm_f64(ctx, 1, 0, KK, g->in_size, Cg, 1.0, (const double *)wg, KK,
                          (const double *)xg, g->in_size, 0.0, col, g->in_size);
            else
                kgemm_f32(ctx, 1, 0, KK, g->in_size, Cg, 1.0f, (const float *)wg, KK,
                          (const float *)xg, g->in_size, 0.0f, col, g->in_size);
            scatter_job j = {g, col, bias ? (const char *)bias + es * (size_t)(grp * Mg) : NULL, yg, dbl};
            double per = (double)g->k_size * g->in_size + g->out_size;
            kiln_parallel_for(ctx, Mg, kpar_grain(Mg, Mg * per), scatter_run, &j);
        }
    free(col);
    return KILN_OK;
}

kiln_status kconvt_compute(kiln_ctx *ctx) {
    kiln_tensor *X, *W, *B, *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    KILN_TRY(convt_inputs(ctx, &X, &W, &B));
    kconv_geom g;
    int known;
    KILN_TRY(convt_check(ctx, X, W, B, &g, &known));
    kgemm_blas_serial();
    int dt = X->dtype;
    if (dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE)
        return convt_run(ctx, &g, dt == KILN_DTYPE_DOUBLE, X->data, W->data, B ? B->data : NULL,
                         Y->data);
    const float *wc = kconv_cached_weight(ctx, W);
    int64_t nx = kiln_numel(X), nw = wc ? 0 : kiln_numel(W), nb = B ? kiln_numel(B) : 0;
    int64_t ny = kiln_numel(Y);
    float *buf = malloc(sizeof(float) * (size_t)(nx + nw + nb + ny + 1));
    if (!buf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for float32 copies");
    float *x = buf, *w = wc ? (float *)wc : x + nx, *b = x + nx + nw, *y = b + nb;
    kcvt_to_f32(ctx, dt, X->data, x, nx);
    if (!wc) kcvt_to_f32(ctx, dt, W->data, w, nw);
    if (B) kcvt_to_f32(ctx, dt, B->data, b, nb);
    kiln_status st = convt_run(ctx, &g, 0, x, w, B ? b : NULL, y);
    if (st == KILN_OK) kcvt_from_f32(ctx, dt, y, Y->data, ny);
    free(buf);
    return st;
}
