/* DeformConv (2-D): every kernel tap samples the input at its regular position plus a learned
 * offset, bilinearly (points outside the image read zero), scaled by an optional mask. The
 * sampled taps form an im2col matrix per (image, group) that one product with W turns into the
 * output. Computed in float64 for every element type: the op is rare and precision is cheap. */
#include "conv_util.h"
#include "gemm_util.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct deform {
    kconv_geom g;
    int64_t offset_group;
} deform;

static int float_type(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || kcvt_is_half(dt);
}

static kiln_status dc_check(kiln_ctx *ctx, deform *d, int *known) {
    kiln_tensor *X, *W, *off, *B = kiln_input(ctx, 3), *mask = kiln_input(ctx, 4);
    char s1[96], s2[96];
    KILN_TRY(kiln_need_input(ctx, 0, &X));
    KILN_TRY(kiln_need_input(ctx, 1, &W));
    KILN_TRY(kiln_need_input(ctx, 2, &off));
    if (!float_type(X->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d for input X", X->dtype);
    if (W->dtype != X->dtype || off->dtype != X->dtype || (B && B->dtype != X->dtype) ||
        (mask && mask->dtype != X->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "inputs have different element types");
    KILN_TRY(kconv_check(ctx, X, W, B, &d->g, known));
    if (!*known) return KILN_OK;
    kconv_geom *g = &d->g;
    if (g->nd != 2)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "only 2-D deformable convolution is supported (X has %d spatial dims)", g->nd);
    d->offset_group = kiln_attr_int(ctx->node, "offset_group", 1);
    if (d->offset_group < 1 || (g->C >= 0 && g->C % d->offset_group))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "offset_group %lld must be >= 1 and divide the %lld input channels",
                         (long long)d->offset_group, (long long)g->C);
    int64_t want[4] = {g->N, d->offset_group * g->k_size * 2, g->out[0], g->out[1]};
    int ok = off->rank < 0 || off->rank == 4;
    for (int i = 0; ok && off->rank == 4 && i < 4; i++)
        ok = off->dims[i] < 0 || want[i] < 0 || off->dims[i] == want[i];
    if (!ok)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "offset is %s; expected %s",
                         kconv_dims_str(off->rank, off->dims, s1, sizeof s1),
                         kconv_dims_str(4, want, s2, sizeof s2));
    if (mask) {
        want[1] = d->offset_group * g->k_size;
        ok = mask->rank < 0 || mask->rank == 4;
        for (int i = 0; ok && mask->rank == 4 && i < 4; i++)
            ok = mask->dims[i] < 0 || want[i] < 0 || mask->dims[i] == want[i];
        if (!ok)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "mask is %s; expected %s",
                             kconv_dims_str(mask->rank, mask->dims, s1, sizeof s1),
                             kconv_dims_str(4, want, s2, sizeof s2));
    }
    return KILN_OK;
}

kiln_status kdeform_infer(kiln_ctx *ctx) {
    deform d;
    int known;
    KILN_TRY(dc_check(ctx, &d, &known));
    kiln_tensor *X = kiln_input(ctx, 0);
    if (!known) return kiln_set_output_unknown(ctx, 0, X->dtype);
    int64_t dims[4] = {d.g.N, d.g.M, d.g.out[0], d.g.out[1]};
    return kiln_set_output(ctx, 0, X->dtype, 4, dims);
}

static double *to_f64(const kiln_tensor *t) {
    if (!t) return NULL;
    int64_t n = kiln_numel(t);
    double *o = malloc(sizeof(double) * (size_t)(n + 1));
    if (o)
        for (int64_t i = 0; i < n; i++) o[i] = kiln_load_f64(t->dtype, t->data, i);
    return o;
}

static double bilinear(const double *plane, int64_t H, int64_t W, double h, double w) {
    if (!(h > -1.0 && h < (double)H && w > -1.0 && w < (double)W)) return 0.0;
    double hf = floor(h), wf = floor(w);
    int64_t h0 = (int64_t)hf, w0 = (int64_t)wf;
    double lh = h - hf, lw = w - wf, v = 0.0;
    for (int dy = 0; dy < 2; dy++)
        for (int dx = 0; dx < 2; dx++) {
            int64_t y = h0 + dy, x = w0 + dx;
            if (y < 0 || y >= H || x < 0 || x >= W) continue;
            v += (dy ? lh : 1.0 - lh) * (dx ? lw : 1.0 - lw) * plane[y * W + x];
        }
    return v;
}

kiln_status kdeform_compute(kiln_ctx *ctx) {
    kiln_tensor *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    deform d;
    int known;
    KILN_TRY(dc_check(ctx, &d, &known));
    const kconv_geom *g = &d.g;
    kiln_tensor *X = kiln_input(ctx, 0), *W = kiln_input(ctx, 1), *O = kiln_input(ctx, 2);
    kiln_tensor *B = kiln_input(ctx, 3), *Mk = kiln_input(ctx, 4);
    int64_t Cg = g->C / g->group, Mg = g->M / g->group, KK = g->k_size, Kc = Cg * KK;
    int64_t H = g->in[0], Wd = g->in[1], OH = g->out[0], OW = g->out[1], os = g->out_size;
    int64_t cpo = g->C / d.offset_group;
    double *x = to_f64(X), *w = to_f64(W), *off = to_f64(O), *b = to_f64(B), *mk = to_f64(Mk);
    double *col = malloc(sizeof(double) * (size_t)(Kc * os + 1));
    double *y = malloc(sizeof(double) * (size_t)(kiln_numel(Y) + 1));
    kiln_status st = KILN_OK;
    if (!x || !w || !off || (B && !b) || (Mk && !mk) || !col || !y) {
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for DeformConv");
        goto done;
    }
    kgemm_blas_serial();
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t grp = 0; grp < g->group; grp++) {
            for (int64_t ci = 0; ci < Cg; ci++) {
                int64_t c = grp * Cg + ci, og = c / cpo;
                const double *plane = x + (n * g->C + c) * g->in_size;
                for (int64_t ki = 0; ki < g->k[0]; ki++)
                    for (int64_t kj = 0; kj < g->k[1]; kj++) {
                        int64_t tap = ki * g->k[1] + kj;
                        double *dst = col + (ci * KK + tap) * os;
                        const double *oh_ = off + ((n * d.offset_group + og) * KK + tap) * 2 * os;
                        const double *ow_ = oh_ + os;
                        const double *m_ = mk ? mk + ((n * d.offset_group + og) * KK + tap) * os : NULL;
                        for (int64_t i = 0; i < OH; i++)
                            for (int64_t j = 0; j < OW; j++) {
                                int64_t p = i * OW + j;
                                double h = (double)(i * g->stride[0] - g->pad_b[0] + ki * g->dil[0]) + oh_[p];
                                double ww = (double)(j * g->stride[1] - g->pad_b[1] + kj * g->dil[1]) + ow_[p];
                                double v = bilinear(plane, H, Wd, h, ww);
                                dst[p] = m_ ? v * m_[p] : v;
                            }
                    }
            }
            double *yg = y + (n * g->M + grp * Mg) * os;
            kgemm_f64(ctx, 0, 0, Mg, os, Kc, 1.0, w + grp * Mg * Kc, Kc, col, os, 0.0, yg, os);
            for (int64_t m = 0; b && m < Mg; m++)
                for (int64_t p = 0; p < os; p++) yg[m * os + p] += b[grp * Mg + m];
        }
    for (int64_t i = 0, n = kiln_numel(Y); i < n; i++) kiln_store_f64(Y->dtype, Y->data, i, y[i]);
done:
    free(x); free(w); free(off); free(b); free(mk); free(col); free(y);
    return st;
}
