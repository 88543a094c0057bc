/* ConvInteger: int8/uint8 convolution with zero points, int32 output. The operands minus their
 * zero points are widened to float32 when every partial sum stays below 2^24 (so the float
 * convolution is exact), otherwise to float64; padding then reads as the zero point, as the
 * operator requires. */
#include "conv_util.h"
#include <stdlib.h>

static int is_q8(int dt) { return dt == KILN_DTYPE_INT8 || dt == KILN_DTYPE_UINT8; }

static kiln_status ci_check(kiln_ctx *ctx, kconv_geom *g, int *known) {
    kiln_tensor *X, *W;
    KILN_TRY(kiln_need_input(ctx, 0, &X));
    KILN_TRY(kiln_need_input(ctx, 1, &W));
    if (!is_q8(X->dtype) || !is_q8(W->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input %s has element type %d; expected int8 or uint8",
                         is_q8(X->dtype) ? "w" : "x", is_q8(X->dtype) ? W->dtype : X->dtype);
    KILN_TRY(kconv_check(ctx, X, W, NULL, g, known));
    kiln_tensor *xz = kiln_input(ctx, 2), *wz = kiln_input(ctx, 3);
    if (xz) {
        if (xz->dtype != X->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "x_zero_point's element type differs from x's");
        if (kiln_numel(xz) > 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "x_zero_point must be a scalar (per-tensor); it has %lld elements",
                             (long long)kiln_numel(xz));
    }
    if (wz) {
        int64_t n = kiln_numel(wz);
        if (wz->dtype != W->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "w_zero_point's element type differs from w's");
        if (n > 1 && g->M >= 0 && n != g->M)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "w_zero_point has %lld elements; expected 1 or %lld (one per output "
                             "channel)", (long long)n, (long long)g->M);
    }
    return KILN_OK;
}

kiln_status kconvint_infer(kiln_ctx *ctx) {
    kconv_geom g;
    int known;
    KILN_TRY(ci_check(ctx, &g, &known));
    if (!known) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_INT32);
    int64_t dims[KILN_MAX_RANK] = {g.N, g.M};
    for (int i = 0; i < g.nd; i++) dims[i + 2] = g.out[i];
    return kiln_set_output(ctx, 0, KILN_DTYPE_INT32, g.nd + 2, dims);
}

static int q8(const kiln_tensor *t, int64_t i) {
    return t->dtype == KILN_DTYPE_INT8 ? ((const int8_t *)t->data)[i] : ((const uint8_t *)t->data)[i];
}

kiln_status kconvint_compute(kiln_ctx *ctx) {
    kiln_tensor *X = kiln_input(ctx, 0), *W = kiln_input(ctx, 1), *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    kconv_geom g;
    int known;
    KILN_TRY(ci_check(ctx, &g, &known));
    kiln_tensor *xz = kiln_input(ctx, 2), *wz = kiln_input(ctx, 3);
    int64_t nx = kiln_numel(X), nw = kiln_numel(W), ny = kiln_numel(Y);
    int64_t Kc = g.C / g.group * g.k_size, per_m = g.M > 0 ? nw / g.M : 0;
    int dbl = (double)Kc * 255.0 * 255.0 >= 16777216.0;
    size_t es = dbl ? 8 : 4;
    char *buf = malloc(es * (size_t)(nx + nw + ny + 1));
    if (!buf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for ConvInteger");
    void *x = buf, *w = buf + es * nx, *y = buf + es * (nx + nw);
    int zx = xz && kiln_numel(xz) ? q8(xz, 0) : 0;
    int64_t nwz = wz ? kiln_numel(wz) : 0;
    for (int64_t i = 0; i < nx; i++) {
        int v = q8(X, i) - zx;
        if (dbl) ((double *)x)[i] = v;
        else ((float *)x)[i] = (float)v;
    }
    for (int64_t i = 0; i < nw; i++) {
        int z = nwz == 0 ? 0 : nwz == 1 ? q8(wz, 0) : q8(wz, i / per_m);
        int v = q8(W, i) - z;
        if (dbl) ((double *)w)[i] = v;
        else ((float *)w)[i] = (float)v;
    }
    kiln_status st;
    if (dbl) {
        st = kconv_run_f64(ctx, &g, x, w, NULL, y);
    } else {
        kconv_act none = {KACT_NONE, 0, 0};
        st = kconv_run_f32(ctx, &g, x, w, NULL, NULL, &none, NULL, y);
    }
    int32_t *out = Y->data;
    for (int64_t i = 0; st == KILN_OK && i < ny; i++) {
        double v = dbl ? ((double *)y)[i] : ((float *)y)[i];
        out[i] = (int32_t)(uint32_t)(int64_t)v;
    }
    free(buf);
    return st;
}
