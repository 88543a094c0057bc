/* Channel normalisations of [N, C, D...] tensors: BatchNormalization (inference with given
 * statistics, or training mode with batch statistics and updated running ones),
 * InstanceNormalization (per sample and channel), GroupNormalization (per sample and group of
 * channels; scale/bias per group in opset 18, per channel from 21).
 *
 * Parameters are read into double vectors (any float type, opset 15 allows them to differ from
 * X's). float32 / float16 / bfloat16 data is processed in float32, double in double. */
#include "norm_impl.h"
#include "reduce_simd.h"

static kiln_status check_x(kiln_ctx *ctx, const kiln_tensor *x) {
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                              KILN_DTYPE_BFLOAT16));
    if (x->rank >= 0 && x->rank < 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input 'X' has rank %d, expected [N, C, ...] (rank >= 2)", x->rank);
    return KILN_OK;
}

/* input i must be a float vector of n elements (n < 0: unknown, not checked) */
static kiln_status check_param(kiln_ctx *ctx, int i, const char *what, int64_t n,
                               kiln_tensor **out) {
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, i, &t));
    KILN_TRY(kiln_check_dtype(ctx, t, i, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                              KILN_DTYPE_BFLOAT16));
    int64_t k = kiln_numel(t);
    if (n >= 0 && k >= 0 && k != n)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' has %lld elements, expected %lld",
                         what, (long long)k, (long long)n);
    if (out) *out = t;
    return KILN_OK;
}

/* Converts a half/float tensor to float32 in a new buffer, runs, converts back. */
typedef struct fbuf {
    float *x;  /* float32 view of X (X's data when float) */
    float *y;  /* where float32 results go (Y's data when float) */
    float *own;
} fbuf;

static kiln_status fbuf_open(kiln_ctx *ctx, const kiln_tensor *x, kiln_tensor *y, fbuf *b) {
    int64_t n = kiln_numel(x);
    b->own = NULL;
    if (x->dtype == KILN_DTYPE_FLOAT) {
        b->x = x->data;
        b->y = y->data;
        return KILN_OK;
    }
    b->own = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!b->own) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    ru_half_to_f32(x->dtype, x->data, b->own, n);
    b->x = b->y = b->own; /* the loops below work in place */
    return KILN_OK;
}

static void fbuf_close(const kiln_tensor *x, kiln_tensor *y, fbuf *b) {
    if (b->own) {
        ru_f32_to_half(y->dtype, b->own, y->data, kiln_numel(x));
        free(b->own);
    }
}

/* ---- per block statistics: [blocks, cpb channels, inner] ---- */

typedef struct blkjob {
    int dbl;
    const void *x;
    void *y;
    int64_t groups, cpb, inner; /* blocks per sample, channels per block, elements per channel */
    double eps;
    const double *sc, *bi;      /* per channel (C = groups * cpb) */
} blkjob;

static void blk_range(void *arg, int64_t b0, int64_t b1) {
    const blkjob *jb = arg;
    int64_t len = jb->cpb * jb->inner;
    for (int64_t b = b0; b < b1; b++) {
        int64_t c0 = (b % jb->groups) * jb->cpb, base = b * len;
        if (!jb->dbl) {
            const float *x = (const float *)jb->x + base;
            float *y = (float *)jb->y + base;
            float mean = rs_sum(x, len) / (float)len;
            float var = rs_sumsqdev(x, len, mean) / (float)len;
            float inv = 1.0f / sqrtf(var + (float)jb->eps);
            for (int64_t c = 0; c < jb->cpb; c++)
                rs_scale_shift(x + c * jb->inner, y + c * jb->inner, jb->inner, mean,
                               inv * (float)jb->sc[c0 + c], (float)jb->bi[c0 + c]);
        } else {
            const double *x = (const double *)jb->x + base;
            double *y = (double *)jb->y + base;
            double mean = ru_sum_f64(x, len) / (double)len;
            double inv = 1.0 / sqrt(ru_sumsqdev_f64(x, len, mean) / (double)len + jb->eps);
            for (int64_t c = 0; c < jb->cpb; c++) {
                double s = inv * jb->sc[c0 + c], t = jb->bi[c0 + c];
                const double *xc = x + c * jb->inner;
                double *yc = y + c * jb->inner;
                for (int64_t i = 0; i < jb->inner; i++) yc[i] = (xc[i] - mean) * s + t;
            }
        }
    }
}

static kiln_status run_blocks(kiln_ctx *ctx, const kiln_tensor *x, kiln_tensor *y, int64_t groups,
                              int64_t cpb, const double *sc, const double *bi, double eps) {
    int64_t n = x->dims[0], inner = ru_prod(x->dims, 2, x->rank);
    if (kiln_numel(x) == 0) return KILN_OK;
    blkjob jb = {x->dtype == KILN_DTYPE_DOUBLE, x->data, y->data, groups, cpb, inner, eps, sc, bi};
    fbuf fb = {0};
    if (!jb.dbl) {
        KILN_TRY(fbuf_open(ctx, x, y, &fb));
        jb.x = fb.x;
        jb.y = fb.y;
    }
    kiln_parallel_for(ctx, n * groups, ru_grain(cpb * inner * 3), blk_range, &jb);
    if (!jb.dbl) fbuf_close(x, y, &fb);
    return KILN_OK;
}

/* ---- InstanceNormalization ---- */

kiln_status kiln_instancenorm_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(check_x(ctx, x));
    int64_t c = x->rank >= 2 ? x->dims[1] : -1;
    KILN_TRY(check_param(ctx, 1, "scale", c, NULL));
    KILN_TRY(check_param(ctx, 2, "B", c, NULL));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    return kiln_set_output_like(ctx, 0, x);
}

kiln_status kiln_instancenorm_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t c = x->dims[1];
    double *sc = ru_to_f64_copy(kiln_input(ctx, 1), c), *bi = ru_to_f64_copy(kiln_input(ctx, 2), c);
    kiln_status st = sc && bi ? run_blocks(ctx, x, y, c, 1, sc, bi,
                                           kiln_attr_float(ctx->node, "epsilon", 1e-5f))
                              : KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    free(sc);
    free(bi);
    return st;
}

/* ---- GroupNormalization ---- */

static kiln_status gn_groups(kiln_ctx *ctx, const kiln_tensor *x, int64_t *g) {
    if (!kiln_has_attr(ctx->node, "num_groups"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'num_groups' is missing");
    *g = kiln_attr_int(ctx->node, "num_groups", 1);
    int64_t c = x->rank >= 2 ? x->dims[1] : -1;
    if (*g <= 0 || (c >= 0 && c % *g != 0))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "num_groups = %lld must be positive and divide the %lld channels",
                         (long long)*g, (long long)c);
    return KILN_OK;
}

kiln_status kiln_groupnorm_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(check_x(ctx, x));
    int64_t g;
    KILN_TRY(gn_groups(ctx, x, &g));
    int64_t c = x->rank >= 2 ? x->dims[1] : -1, per = ctx->opset >= 21 ? c : g;
    KILN_TRY(check_param(ctx, 1, "scale", per, NULL));
    KILN_TRY(check_param(ctx, 2, "bias", per, NULL));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    return kiln_set_output_like(ctx, 0, x);
}

kiln_status kiln_groupnorm_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t g;
    KILN_TRY(gn_groups(ctx, x, &g));
    int64_t c = x->dims[1], cpg = c / g;
    double *sc = malloc(sizeof(double) * (size_t)(c ? c : 1));
    double *bi = malloc(sizeof(double) * (size_t)(c ? c : 1));
    kiln_tensor *ts = kiln_input(ctx, 1), *tb = kiln_input(ctx, 2);
    kiln_status st = KILN_OK;
    if (!sc || !bi) {
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    } else {
        /* opset 18 has one scale/bias per group: spread it over the group's channels */
        int per_group = ctx->opset < 21;
        for (int64_t k = 0; k < c; k++) {
            int64_t i = per_group ? k / cpg : k;
            sc[k] = kiln_load_f64(ts->dtype, ts->data, i);
            bi[k] = kiln_load_f64(tb->dtype, tb->data, i);
        }
        st = run_blocks(ctx, x, y, g, cpg, sc, bi, kiln_attr_float(ctx->node, "epsilon", 1e-5f));
    }
    free(sc);
    free(bi);
    return st;
}

/* ---- BatchNormalization ---- */

/* Training statistics are used from opset 14 with training_mode = 1, and before 14 when the node
 * asks for the statistics outputs (and is not marked is_test). */
static int bn_training(kiln_ctx *ctx) {
    if (ctx->opset >= 14) return kiln_attr_int(ctx->node, "training_mode", 0) != 0;
    if (ctx->opset < 7 && kiln_attr_int(ctx->node, "is_test", 0)) return 0;
    for (int o = 1; o < ctx->n_out; o++)
        if (kiln_output(ctx, o)) return 1;
    return 0;
}

/* channels the statistics run over: C, or C*D1*...*Dn for opset < 9 with spatial = 0 */
static int64_t bn_channels(kiln_ctx *ctx, const kiln_tensor *x) {
    if (ctx->opset < 9 && kiln_attr_int(ctx->node, "spatial", 1) == 0) {
        for (int i = 1; i < x->rank; i++)
            if (x->dims[i] < 0) return -1;
        return ru_prod(x->dims, 1, x->rank);
    }
    return x->dims[1];
}

kiln_status kiln_batchnorm_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *mean;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(check_x(ctx, x));
    int64_t c = x->rank >= 2 ? bn_channels(ctx, x) : -1;
    KILN_TRY(check_param(ctx, 1, "scale", c, NULL));
    KILN_TRY(check_param(ctx, 2, "B", c, NULL));
    KILN_TRY(check_param(ctx, 3, "input_mean", c, &mean));
    KILN_TRY(check_param(ctx, 4, "input_var", c, NULL));
    if (x->rank < 0) {
        KILN_TRY(kiln_set_output_unknown(ctx, 0, x->dtype));
    } else {
        KILN_TRY(kiln_set_output_like(ctx, 0, x));
    }
    int training = bn_training(ctx);
    for (int o = 1; o < ctx->n_out && o < 5; o++) {
        if (!kiln_output(ctx, o)) continue;
        if (!training)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "output %d is only produced in training mode", o);
        KILN_TRY(kiln_set_output(ctx, o, mean->dtype, 1, &c));
    }
    return KILN_OK;
}

typedef struct bnjob {
    int dbl;
    const void *x;
    void *y;
    int64_t c, inner;
    const double *mean, *a, *b; /* y = (x - mean) * a + b */
} bnjob;

/* one (n, c) plane per unit */
static void bn_range(void *arg, int64_t u0, int64_t u1) {
    const bnjob *jb = arg;
    for (int64_t u = u0; u < u1; u++) {
        int64_t c = u % jb->c, off = u * jb->inner;
        if (!jb->dbl) {
            rs_scale_shift((const float *)jb->x + off, (float *)jb->y + off, jb->inner,
                           (float)jb->mean[c], (float)jb->a[c], (float)jb->b[c]);
        } else {
            const double *x = (const double *)jb->x + off;
            double *y = (double *)jb->y + off;
            for (int64_t i = 0; i < jb->inner; i++) y[i] = (x[i] - jb->mean[c]) * jb->a[c] + jb->b[c];
        }
    }
}

/* one sample (all channels, inner == 1) per unit: the spatial = 0 layout */
static void bn_range_flat(void *arg, int64_t u0, int64_t u1) {
    const bnjob *jb = arg;
    for (int64_t u = u0; u < u1; u++) {
        int64_t off = u * jb->c;
        for (int64_t c = 0; c < jb->c; c++) {
            if (!jb->dbl) {
                const float *x = (const float *)jb->x + off;
                ((float *)jb->y)[off + c] =
                    (x[c] - (float)jb->mean[c]) * (float)jb->a[c] + (float)jb->b[c];
            } else {
                const double *x = (const double *)jb->x + off;
                ((double *)jb->y)[off + c] = (x[c] - jb->mean[c]) * jb->a[c] + jb->b[c];
            }
        }
    }
}

/* batch mean and population variance per channel, in double */
static void bn_batch_stats(const bnjob *jb, int64_t n, double *mean, double *var) {
    int64_t cnt = n * jb->inner;
    for (int64_t c = 0; c < jb->c; c++) {
        double s = 0, q = 0;
        for (int pass = 0; pass < 2; pass++) {
            for (int64_t k = 0; k < n; k++) {
                int64_t off = (k * jb->c + c) * jb->inner;
                for (int64_t i = 0; i < jb->inner; i++) {
                    double v = jb->dbl ? ((const double *)jb->x)[off + i]
                                       : ((const float *)jb->x)[off + i];
                    if (pass == 0) s += v;
                    else q += (v - mean[c]) * (v - mean[c]);
                }
            }
            if (pass == 0) mean[c] = cnt > 0 ? s / (double)cnt : 0;
        }
        var[c] = cnt > 0 ? q / (double)cnt : 0;
    }
}

kiln_status kiln_batchnorm_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    int64_t c = bn_channels(ctx, x), n = x->dims[0];
    int spatial = c == x->dims[1];
    double eps = kiln_attr_float(ctx->node, "epsilon", 1e-5f);
    double momentum = kiln_attr_float(ctx->node, "momentum", 0.9f);
    int training = bn_training(ctx);
    double *p[7] = {NULL};
    for (int i = 0; i < 7; i++) {
        p[i] = i < 4 ? ru_to_f64_copy(kiln_input(ctx, i + 1), c) : malloc(sizeof(double) * (size_t)(c ? c : 1));
        if (!p[i]) {
            for (int k = 0; k < i; k++) free(p[k]);
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        }
    }
    double *scale = p[0], *bias = p[1], *rmean = p[2], *rvar = p[3];
    double *bmean = p[4], *bvar = p[5], *a = p[6];
    bnjob jb = {x->dtype == KILN_DTYPE_DOUBLE, x->data, y ? y->data : NULL, c,
                spatial ? ru_prod(x->dims, 2, x->rank) : 1, NULL, a, bias};
    fbuf fb = {0};
    kiln_status st = KILN_OK;
    kiln_tensor tmp_y = *x;
    if (!y) { /* only statistics wanted: compute Y into a scratch */
        tmp_y.data = NULL;
        tmp_y.owner = NULL;
        st = kiln_tensor_alloc(&tmp_y, ctx->err);
        y = &tmp_y;
        jb.y = y->data;
    }
    if (!st && !jb.dbl) {
        st = fbuf_open(ctx, x, y, &fb);
        jb.x = fb.x;
        jb.y = fb.y;
    }
    if (!st) {
        const double *m = rmean, *v = rvar;
        if (training) {
            bn_batch_stats(&jb, n, bmean, bvar);
            m = bmean;
            v = bvar;
        }
        for (int64_t k = 0; k < c; k++) a[k] = scale[k] / sqrt(v[k] + eps);
        jb.mean = m;
        if (spatial)
            kiln_parallel_for(ctx, n * c, ru_grain(jb.inner * 2), bn_range, &jb);
        else
            kiln_parallel_for(ctx, n, ru_grain(c * 2), bn_range_flat, &jb);
        if (!jb.dbl) fbuf_close(x, y, &fb);
        /* statistics outputs: opset 14+: running mean, running var; before: those, then the
         * batch mean and variance */
        const double *stats[4] = {rmean, rvar, bmean, bvar};
        if (training) {
            for (int64_t k = 0; k < c; k++) {
                rmean[k] = rmean[k] * momentum + bmean[k] * (1 - momentum);
                rvar[k] = rvar[k] * momentum + bvar[k] * (1 - momentum);
            }
            for (int o = 1; o < ctx->n_out && o < 5; o++) {
                kiln_tensor *t = kiln_output(ctx, o);
                if (!t) continue;
                for (int64_t k = 0; k < c; k++) kiln_store_f64(t->dtype, t->data, k, stats[o - 1][k]);
            }
        }
    }
    if (y == &tmp_y) kiln_tensor_release(&tmp_y);
    for (int i = 0; i < 7; i++) free(p[i]);
    return st;
}
