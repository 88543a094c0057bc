/* kiln:MaxPoolGrad(dY, X) and kiln:AveragePoolGrad(dY, X): the gradients of ONNX MaxPool and
 * AveragePool (kernel_shape, strides, pads, auto_pad, ceil_mode, dilations, count_include_pad;
 * any number of spatial dims). MaxPool's window maximum is found again from X (the first one on
 * ties) and takes the whole gradient; AveragePool spreads it over the window with the forward's
 * divisor. Planes (image, channel) run in parallel. */
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast") /* see elementwise_util.h */
#include "grad_common.h"
#include "conv_util.h"

static kiln_status pg_geometry(kiln_ctx *ctx, const kiln_tensor *x, kconv_geom *g) {
    memset(g, 0, sizeof *g);
    if (x->rank < 3) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has rank %d, expected >= 3", x->rank);
    g->nd = x->rank - 2;
    g->N = x->dims[0];
    g->C = g->M = x->dims[1];
    g->group = 1;
    int nk = 0;
    const int64_t *ks = kiln_attr_ints(ctx->node, "kernel_shape", &nk);
    if (!ks || nk != g->nd)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "kernel_shape must have %d entries", g->nd);
    for (int d = 0; d < g->nd; d++) {
        g->in[d] = x->dims[d + 2];
        g->k[d] = ks[d];
    }
    return kconv_window(ctx, g, 1, (int)kiln_attr_int(ctx->node, "ceil_mode", 0));
}

static kiln_status pg_infer(kiln_ctx *ctx) {
    kiln_tensor *dy, *x;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &dy));
    KILN_TRY(gk_float_input(ctx, 1, dy, &x));
    return gk_out_like(ctx, 0, dy->dtype, x);
}

typedef struct {
    const kconv_geom *g;
    const void *dy, *x;
    void *dx;
    int dt, max, include_pad;
} pg_job;

static void pg_planes(void *arg, int64_t q0, int64_t q1) {
    const pg_job *j = arg;
    const kconv_geom *g = j->g;
    int nd = g->nd, dt = j->dt;
    int64_t ist[KCONV_MAX_ND], st = 1;
    for (int d = nd - 1; d >= 0; d--) {
        ist[d] = st;
        st *= g->in[d];
    }
    for (int64_t q = q0; q < q1; q++) {
        const int64_t xo = q * g->in_size, yo = q * g->out_size;
        int64_t o[KCONV_MAX_ND] = {0};
        for (int64_t p = 0; p < g->out_size; p++) {
            double gv = gk_ld(j->dy, yo + p, dt), best = 0;
            int64_t best_at = -1, valid = 0, padded = 1;
            if (!j->max && j->include_pad)
                for (int d = 0; d < nd; d++) {
                    /* window clipped to the padded extent, as the forward's divisor */
                    int64_t lo = o[d] * g->stride[d] - g->pad_b[d], hi = lo + (g->k[d] - 1) * g->dil[d] + 1;
                    if (hi > g->in[d] + g->pad_e[d]) hi = g->in[d] + g->pad_e[d];
                    padded *= (hi - lo + g->dil[d] - 1) / g->dil[d];
                }
            for (int pass = 0; pass < (j->max ? 1 : 2); pass++) {
                int64_t kidx[KCONV_MAX_ND] = {0};
                for (int64_t kk = 0; kk < g->k_size; kk++) {
                    int64_t off = 0;
                    int ok = 1;
                    for (int d = 0; d < nd; d++) {
                        int64_t i = o[d] * g->stride[d] - g->pad_b[d] + kidx[d] * g->dil[d];
                        if (i < 0 || i >= g->in[d]) { ok = 0; break; }
                        off += i * ist[d];
                    }
                    if (ok) {
                        if (j->max) {
                            double v = gk_ld(j->x, xo + off, dt);
                            if (best_at < 0 || v > best) { best = v; best_at = off; }
                        } else if (pass == 0) {
                            valid++;
                        } else {
                            int64_t div = j->include_pad ? padded : valid;
                            gk_add(j->dx, xo + off, dt, div > 0 ? gv / (double)div : 0.0);
                        }
                    }
                    for (int d = nd - 1; d >= 0; d--) {
                        if (++kidx[d] < g->k[d]) break;
                        kidx[d] = 0;
                    }
                }
            }
            if (j->max && best_at >= 0) gk_add(j->dx, xo + best_at, dt, gv);
            for (int d = nd - 1; d >= 0; d--) {
                if (++o[d] < g->out[d]) break;
                o[d] = 0;
            }
        }
    }
}

/* 2-D windows, the common case, with the bounds of each window clipped once instead of tested
 * per tap */
#define PG2D(NAME, T)                                                                                \
    static void NAME(const pg_job *j, int64_t q0, int64_t q1) {                                      \
        const kconv_geom *g = j->g;                                                                  \
        int64_t IH = g->in[0], IW = g->in[1], OH = g->out[0], OW = g->out[1];                        \
        int64_t sh = g->stride[0], sw = g->stride[1], dh = g->dil[0], dw = g->dil[1];                \
        for (int64_t q = q0; q < q1; q++) {                                                          \
            const T *x = (const T *)j->x + q * IH * IW, *gy = (const T *)j->dy + q * OH * OW;         \
            T *dx = (T *)j->dx + q * IH * IW;                                                        \
            for (int64_t oh = 0; oh < OH; oh++) {                                                    \
                int64_t h0 = oh * sh - g->pad_b[0], kh0 = 0, kh1 = g->k[0];                          \
                while (kh0 < kh1 && h0 + kh0 * dh < 0) kh0++;                                        \
                while (kh1 > kh0 && h0 + (kh1 - 1) * dh >= IH) kh1--;                               \
                for (int64_t ow = 0; ow < OW; ow++) {                                                \
                    int64_t w0 = ow * sw - g->pad_b[1], kw0 = 0, kw1 = g->k[1];                      \
                    while (kw0 < kw1 && w0 + kw0 * dw < 0) kw0++;                                    \
                    while (kw1 > kw0 && w0 + (kw1 - 1) * dw >= IW) kw1--;                            \
                    T gv = gy[oh * OW + ow];                                                         \
                    if (j->max) {                                                                    \
                        int64_t best_at = -1;                                                        \
                        T best = 0;                                                                  \
                        for (int64_t a = kh0; a < kh1; a++)                                          \
                            for (int64_t b = kw0; b < kw1; b++) {                                    \
                                int64_t off = (h0 + a * dh) * IW + w0 + b * dw;                      \
                                if (best_at < 0 || x[off] > best) { best = x[off]; best_at = off; }  \
                            }                                                                        \
                        if (best_at >= 0) dx[best_at] += gv;                                         \
                        continue;                                                                    \
                    }                                                                                \
                    int64_t div = (kh1 - kh0) * (kw1 - kw0);                                         \
                    if (j->include_pad) {                                                            \
                        int64_t he = h0 + (g->k[0] - 1) * dh + 1, we = w0 + (g->k[1] - 1) * dw + 1;   \
                        if (he > IH + g->pad_e[0]) he = IH + g->pad_e[0];                            \
                        if (we > IW + g->pad_e[1]) we = IW + g->pad_e[1];                            \
                        div = ((he - h0 + dh - 1) / dh) * ((we - w0 + dw - 1) / dw);                 \
                    }                                                                                \
                    if (div <= 0) continue;                                                          \
                    T share = gv / (T)div;                                                           \
                    for (int64_t a = kh0; a < kh1; a++)                                              \
                        for (int64_t b = kw0; b < kw1; b++) dx[(h0 + a * dh) * IW + w0 + b * dw] += share; \
                }                                                                                    \
            }                                                                                        \
        }                                                                                            \
    }
PG2D(pg2d_f32, float)
PG2D(pg2d_f64, double)

static void pg_planes2d(void *arg, int64_t q0, int64_t q1) {
    const pg_job *j = arg;
    if (j->dt == KILN_DTYPE_DOUBLE) pg2d_f64(j, q0, q1);
    else pg2d_f32(j, q0, q1);
}

static kiln_status pg_compute(kiln_ctx *ctx, int max) {
    kiln_tensor *dy = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *dx = kiln_output(ctx, 0);
    kconv_geom g;
    KILN_TRY(pg_geometry(ctx, x, &g));
    if (dy->rank != x->rank || dy->dims[0] != g.N || dy->dims[1] != g.C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's shape does not match the pooling's output");
    for (int d = 0; d < g.nd; d++)
        if (dy->dims[d + 2] != g.out[d])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's spatial dim %d is %lld, the output's %lld",
                             d, (long long)dy->dims[d + 2], (long long)g.out[d]);
    gk_zero(dx);
    pg_job j = {&g, dy->data, x->data, dx->data, dy->dtype, max, (int)kiln_attr_int(ctx->node, "count_include_pad", 0)};
    kiln_parallel_for(ctx, g.N * g.C, gk_grain(g.out_size * g.k_size), g.nd == 2 ? pg_planes2d : pg_planes, &j);
    return KILN_OK;
}

static kiln_status maxpg_compute(kiln_ctx *ctx) { return pg_compute(ctx, 1); }
static kiln_status avgpg_compute(kiln_ctx *ctx) { return pg_compute(ctx, 0); }

const kiln_op kiln_ops_grad_pool[] = {
    {"kiln", "MaxPoolGrad", 1, 0, NULL, pg_infer, maxpg_compute, NULL},
    {"kiln", "AveragePoolGrad", 1, 0, NULL, pg_infer, avgpg_compute, NULL},
    {0}};
