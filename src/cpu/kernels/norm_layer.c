/* Row normalisations over the trailing axes: LayerNormalization (opset 17, and onnxruntime's
 * earlier contrib form registered from opset 1), SimplifiedLayerNormalization, RMSNormalization
 * (opset 23), and com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization
 * (input + skip + bias, then normalise, optionally returning the sum).
 *
 * X is viewed as [rows, n], n = prod(dims[axis:]). float32, float16 and bfloat16 compute in
 * float32 (halves through float32 copies; Mean/InvStdDev are float32 as in onnxruntime), double
 * in double. Rows are spread over threads; float32 rows use the AVX2 primitives. */
#include "norm_impl.h"
#include "reduce_simd.h"

typedef struct lnjob {
    int simplified, dbl;
    int64_t n;
    double eps;
    const void *x;
    void *y;
    const void *skip; /* skip variants: [skip_rows, n], broadcast over leading rows */
    int64_t skip_rows;
    const void *bias; /* [n], added with skip */
    void *sum;        /* input_skip_bias_sum, or NULL */
    const void *g, *b;
    int64_t gs, bs;   /* row strides of g and b: 0 or n */
    float *mean, *inv;
} lnjob;

static void ln_row_f32(const lnjob *jb, int64_t r) {
    int64_t n = jb->n;
    const float *src = (const float *)jb->x + r * n;
    float *y = (float *)jb->y + r * n;
    if (jb->skip) {
        float *s = jb->sum ? (float *)jb->sum + r * n : y; /* y doubles as scratch: in place is safe */
        rs_add3(src, (const float *)jb->skip + (r % jb->skip_rows) * n, jb->bias, s, n);
        src = s;
    }
    float mean = 0, var;
    if (!jb->simplified) {
        mean = rs_sum(src, n) / (float)n;
        var = rs_sumsqdev(src, n, mean) / (float)n;
    } else {
        var = rs_sumsqdev(src, n, 0.0f) / (float)n;
    }
    float inv = 1.0f / sqrtf(var + (float)jb->eps);
    const float *g = jb->g ? (const float *)jb->g + r * jb->gs : NULL;
    const float *b = jb->b ? (const float *)jb->b + r * jb->bs : NULL;
    rs_affine(src, y, n, mean, inv, g, b);
    if (jb->mean) jb->mean[r] = mean;
    if (jb->inv) jb->inv[r] = inv;
}

static void ln_row_f64(const lnjob *jb, int64_t r) {
    int64_t n = jb->n;
    const double *src = (const double *)jb->x + r * n;
    double *y = (double *)jb->y + r * n;
    if (jb->skip) {
        double *s = jb->sum ? (double *)jb->sum + r * n : y;
        const double *k = (const double *)jb->skip + (r % jb->skip_rows) * n;
        const double *bias = jb->bias;
        for (int64_t i = 0; i < n; i++) s[i] = src[i] + k[i] + (bias ? bias[i] : 0.0);
        src = s;
    }
    double mean = 0, var;
    if (!jb->simplified) {
        mean = ru_sum_f64(src, n) / (double)n;
        var = ru_sumsqdev_f64(src, n, mean) / (double)n;
    } else {
        var = ru_sumsqdev_f64(src, n, 0.0) / (double)n;
    }
    double inv = 1.0 / sqrt(var + jb->eps);
    const double *g = jb->g ? (const double *)jb->g + r * jb->gs : NULL;
    const double *b = jb->b ? (const double *)jb->b + r * jb->bs : NULL;
    for (int64_t i = 0; i < n; i++) {
        double v = (src[i] - mean) * inv;
        if (g) v *= g[i];
        if (b) v += b[i];
        y[i] = v;
    }
    if (jb->mean) jb->mean[r] = (float)mean;
    if (jb->inv) jb->inv[r] = (float)inv;
}

static void ln_range(void *arg, int64_t b, int64_t e) {
    const lnjob *jb = arg;
    for (int64_t r = b; r < e; r++) {
        if (jb->dbl)
            ln_row_f64(jb, r);
        else
            ln_row_f32(jb, r);
    }
}

/* ---- shape checks ---- */

static kiln_status check_float_input(kiln_ctx *ctx, const kiln_tensor *x) {
    return kiln_check_dtype(ctx, x, 0, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                            KILN_DTYPE_BFLOAT16);
}

/* Y like X; statistics outputs (indices in stat_outs) float32 of shape dims[:axis] + 1s. */
static kiln_status set_ln_outputs(kiln_ctx *ctx, const kiln_tensor *x, int axis, int n_stats,
                                  const int *stat_outs) {
    KILN_TRY(kiln_set_output_like(ctx, 0, x));
    int64_t dims[KILN_MAX_RANK];
    for (int i = 0; i < x->rank; i++) dims[i] = i < axis ? x->dims[i] : 1;
    for (int k = 0; k < n_stats; k++) {
        int o = stat_outs[k];
        if (o < ctx->n_out && kiln_output(ctx, o))
            KILN_TRY(kiln_set_output(ctx, o, KILN_DTYPE_FLOAT, x->rank, dims));
    }
    return KILN_OK;
}

/* LayerNormalization / SimplifiedLayerNormalization / RMSNormalization: X, scale[, B] */
static kiln_status axis_norm_check(kiln_ctx *ctx, int has_bias, kiln_tensor **px, int *axis) {
    kiln_tensor *x, *s, *b = NULL;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &s));
    KILN_TRY(check_float_input(ctx, x));
    KILN_TRY(kiln_norm_check_bcast(ctx, s, x, "scale"));
    if (has_bias && ctx->n_in > 2 && (b = kiln_input(ctx, 2)))
        KILN_TRY(kiln_norm_check_bcast(ctx, b, x, "B"));
    *px = x;
    if (x->rank < 0) return KILN_OK;
    if (x->rank == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'X' must have rank >= 1");
    return kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -1), x->rank, "axis", axis);
}

static kiln_status run_axis_norm(kiln_ctx *ctx, int simplified, int has_bias, int mean_out,
                                 int inv_out) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    int axis;
    KILN_TRY(axis_norm_check(ctx, has_bias, &x, &axis));
    kiln_tensor *s = kiln_input(ctx, 1), *bt = has_bias && ctx->n_in > 2 ? kiln_input(ctx, 2) : NULL;
    int64_t rows = ru_prod(x->dims, 0, axis), n = ru_prod(x->dims, axis, x->rank), total = rows * n;
    kiln_tensor *mo = mean_out >= 0 && mean_out < ctx->n_out ? kiln_output(ctx, mean_out) : NULL;
    kiln_tensor *io = inv_out >= 0 && inv_out < ctx->n_out ? kiln_output(ctx, inv_out) : NULL;
    if (total == 0) return KILN_OK;
    lnjob jb = {.simplified = simplified, .dbl = x->dtype == KILN_DTYPE_DOUBLE, .n = n,
                .eps = kiln_attr_float(ctx->node, "epsilon", 1e-5f)};
    jb.mean = mo ? mo->data : NULL;
    jb.inv = io ? io->data : NULL;
    void *own_g = NULL, *own_b = NULL;
    float *xbuf = NULL, *scratch = NULL;
    kiln_status st = KILN_OK;
    if (jb.dbl) {
        st = kiln_norm_param_f64(ctx, s, x, axis, (const double **)&jb.g, &jb.gs, (double **)&own_g);
        if (!st && bt)
            st = kiln_norm_param_f64(ctx, bt, x, axis, (const double **)&jb.b, &jb.bs,
                                     (double **)&own_b);
        jb.x = x->data;
        jb.y = y ? y->data : NULL;
    } else {
        st = kiln_norm_param_f32(ctx, s, x, axis, (const float **)&jb.g, &jb.gs, (float **)&own_g);
        if (!st && bt)
            st = kiln_norm_param_f32(ctx, bt, x, axis, (const float **)&jb.b, &jb.bs,
                                     (float **)&own_b);
        jb.x = x->data;
        jb.y = y ? y->data : NULL;
        if (!st && ru_is_halfish(x->dtype)) {
            xbuf = malloc((size_t)total * sizeof(float));
            if (!xbuf) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
            else ru_half_to_f32(x->dtype, x->data, xbuf, total);
            jb.x = jb.y = xbuf;
        }
    }
    if (!st && !jb.y) { /* only the statistics are wanted */
        scratch = malloc((size_t)total * (jb.dbl ? 8 : 4));
        if (!scratch) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        jb.y = scratch;
    }
    if (!st) {
        kiln_parallel_for(ctx, rows, ru_grain(n * 4), ln_range, &jb);
        if (xbuf && y) ru_f32_to_half(y->dtype, xbuf, y->data, total);
    }
    free(own_g);
    free(own_b);
    free(xbuf);
    free(scratch);
    return st;
}

/* LayerNormalization: Y, Mean, InvStdDev */
kiln_status kiln_layernorm_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    int axis = 0;
    KILN_TRY(axis_norm_check(ctx, 1, &x, &axis));
    if (x->rank < 0) {
        for (int o = 0; o < ctx->n_out && o < 3; o++)
            if (kiln_output(ctx, o))
                KILN_TRY(kiln_set_output_unknown(ctx, o, o ? KILN_DTYPE_FLOAT : x->dtype));
        return KILN_OK;
    }
    static const int stats[] = {1, 2};
    return set_ln_outputs(ctx, x, axis, 2, stats);
}

kiln_status kiln_layernorm_compute(kiln_ctx *ctx) { return run_axis_norm(ctx, 0, 1, 1, 2); }

/* SimplifiedLayerNormalization: Y, inv_std_var */
kiln_status kiln_simplified_ln_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    int axis = 0;
    KILN_TRY(axis_norm_check(ctx, 0, &x, &axis));
    if (x->rank < 0) {
        for (int o = 0; o < ctx->n_out && o < 2; o++)
            if (kiln_output(ctx, o))
                KILN_TRY(kiln_set_output_unknown(ctx, o, o ? KILN_DTYPE_FLOAT : x->dtype));
        return KILN_OK;
    }
    static const int stats[] = {1};
    return set_ln_outputs(ctx, x, axis, 1, stats);
}

kiln_status kiln_simplified_ln_compute(kiln_ctx *ctx) { return run_axis_norm(ctx, 1, 0, -1, 1); }

/* RMSNormalization (opset 23): Y only */
kiln_status kiln_rmsnorm_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    int axis = 0;
    KILN_TRY(axis_norm_check(ctx, 0, &x, &axis));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    return kiln_set_output_like(ctx, 0, x);
}

kiln_status kiln_rmsnorm_compute(kiln_ctx *ctx) { return run_axis_norm(ctx, 1, 0, -1, -1); }

/* ---- com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization ----
 * inputs: input [.., H], skip (input's shape, or a suffix of it after leading 1s), gamma [H],
 * beta [H] (not in the simplified form), bias [H]; outputs: output, mean, inv_std_var,
 * input_skip_bias_sum. */

static kiln_status check_vec(kiln_ctx *ctx, const kiln_tensor *t, const kiln_tensor *x, int64_t h,
                             const char *what) {
    if (t->dtype != x->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' has type %s, expected %s",
                         what, kiln_dtype_name(t->dtype), kiln_dtype_name(x->dtype));
    if (t->rank < 0 || h < 0) return KILN_OK;
    int64_t n = kiln_numel(t);
    if (t->rank < 1 || (n >= 0 && n != h) || (t->dims[t->rank - 1] >= 0 && t->dims[t->rank - 1] != h))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input '%s' must have %lld elements (the hidden size)", what,
                         (long long)h);
    return KILN_OK;
}

static kiln_status skip_check(kiln_ctx *ctx, int simplified, kiln_tensor **in) {
    /* in[0] input, in[1] skip, in[2] gamma, in[3] beta, in[4] bias */
    KILN_TRY(kiln_need_input(ctx, 0, &in[0]));
    KILN_TRY(kiln_need_input(ctx, 1, &in[1]));
    KILN_TRY(kiln_need_input(ctx, 2, &in[2]));
    in[3] = !simplified && ctx->n_in > 3 ? kiln_input(ctx, 3) : NULL;
    int bias_at = simplified ? 3 : 4;
    in[4] = ctx->n_in > bias_at ? kiln_input(ctx, bias_at) : NULL;
    kiln_tensor *x = in[0], *k = in[1];
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                              KILN_DTYPE_BFLOAT16));
    if (k->dtype != x->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'skip' has type %s, expected %s",
                         kiln_dtype_name(k->dtype), kiln_dtype_name(x->dtype));
    if (x->rank < 0) return KILN_OK;
    if (x->rank < 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'input' has rank %d, expected >= 2",
                         x->rank);
    int64_t h = x->dims[x->rank - 1];
    if (k->rank >= 0) {
        /* skip is input's shape, or its trailing dims with leading 1s: row r uses skip row
         * r % skip_rows */
        int ok = k->rank >= 1 && k->rank <= x->rank, lead = 1;
        for (int i = 0; ok && i < k->rank; i++) {
            int64_t a = k->dims[i], b = x->dims[x->rank - k->rank + i];
            if (a >= 0 && b >= 0 && a != b && !(lead && a == 1)) ok = 0;
            if (a != 1) lead = 0;
        }
        if (ok && k->dims[k->rank - 1] != h) ok = 0;
        if (!ok) {
            char b1[96], b2[96];
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input 'skip' %s does not match input %s", kiln_shape_str(k, b1, 96),
                             kiln_shape_str(x, b2, 96));
        }
    }
    KILN_TRY(check_vec(ctx, in[2], x, h, "gamma"));
    if (in[3]) KILN_TRY(check_vec(ctx, in[3], x, h, "beta"));
    if (in[4]) KILN_TRY(check_vec(ctx, in[4], x, h, "bias"));
    return KILN_OK;
}

static kiln_status skip_infer(kiln_ctx *ctx, int simplified) {
    kiln_tensor *in[5];
    KILN_TRY(skip_check(ctx, simplified, in));
    kiln_tensor *x = in[0];
    if (x->rank < 0) {
        for (int o = 0; o < ctx->n_out && o < 4; o++)
            if (kiln_output(ctx, o))
                KILN_TRY(kiln_set_output_unknown(ctx, o, o == 1 || o == 2 ? KILN_DTYPE_FLOAT : x->dtype));
        return KILN_OK;
    }
    static const int stats[] = {1, 2};
    KILN_TRY(set_ln_outputs(ctx, x, x->rank - 1, 2, stats));
    if (ctx->n_out > 3 && kiln_output(ctx, 3)) KILN_TRY(kiln_set_output_like(ctx, 3, x));
    return KILN_OK;
}

/* A float32 view of a float16/bfloat16 tensor (copy), or the data itself. */
static kiln_status f32_view(kiln_ctx *ctx, const kiln_tensor *t, const void **out, float **owned) {
    return kiln_norm_as_f32(ctx, t, (const float **)out, owned);
}

static kiln_status skip_compute(kiln_ctx *ctx, int simplified) {
    kiln_tensor *in[5];
    KILN_TRY(skip_check(ctx, simplified, in));
    kiln_tensor *x = in[0], *k = in[1];
    kiln_tensor *y = kiln_output(ctx, 0);
    kiln_tensor *mo = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    kiln_tensor *io = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    kiln_tensor *so = ctx->n_out > 3 ? kiln_output(ctx, 3) : NULL;
    int64_t n = x->dims[x->rank - 1], total = kiln_numel(x), rows = n ? total / n : 0;
    int64_t kn = kiln_numel(k);
    if (total == 0) return KILN_OK;
    lnjob jb = {.simplified = simplified, .dbl = x->dtype == KILN_DTYPE_DOUBLE, .n = n,
                .eps = kiln_attr_float(ctx->node, "epsilon", 1e-12f)};
    jb.skip_rows = kn / n;
    jb.mean = mo ? mo->data : NULL;
    jb.inv = io ? io->data : NULL;
    kiln_status st = KILN_OK;
    float *own[5] = {NULL, NULL, NULL, NULL, NULL};
    float *ybuf = NULL, *sbuf = NULL, *scratch = NULL;
    if (jb.dbl || x->dtype == KILN_DTYPE_FLOAT) {
        jb.x = x->data;
        jb.skip = k->data;
        jb.g = in[2]->data;
        jb.b = in[3] ? in[3]->data : NULL;
        jb.bias = in[4] ? in[4]->data : NULL;
        jb.y = y ? y->data : NULL;
        jb.sum = so ? so->data : NULL;
    } else {
        const void *v[5] = {NULL, NULL, NULL, NULL, NULL};
        for (int i = 0; i < 5 && !st; i++)
            if (in[i]) st = f32_view(ctx, in[i], &v[i], &own[i]);
        jb.x = v[0];
        jb.skip = v[1];
        jb.g = v[2];
        jb.b = v[3];
        jb.bias = v[4];
        if (!st) {
            ybuf = malloc((size_t)total * sizeof(float));
            if (so) sbuf = malloc((size_t)total * sizeof(float));
            if (!ybuf || (so && !sbuf)) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        }
        jb.y = ybuf;
        jb.sum = sbuf;
    }
    if (!st && !jb.y) {
        scratch = malloc((size_t)total * (jb.dbl ? 8 : 4));
        if (!scratch) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        jb.y = scratch;
    }
    if (!st) {
        kiln_parallel_for(ctx, rows, ru_grain(n * 4), ln_range, &jb);
        if (ybuf && y) ru_f32_to_half(y->dtype, ybuf, y->data, total);
        if (sbuf) ru_f32_to_half(so->dtype, sbuf, so->data, total);
    }
    for (int i = 0; i < 5; i++) free(own[i]);
    free(ybuf);
    free(sbuf);
    free(scratch);
    return st;
}

kiln_status kiln_skip_ln_infer(kiln_ctx *ctx) { return skip_infer(ctx, 0); }
kiln_status kiln_skip_ln_compute(kiln_ctx *ctx) { return skip_compute(ctx, 0); }
kiln_status kiln_skip_simplified_ln_infer(kiln_ctx *ctx) { return skip_infer(ctx, 1); }
kiln_status kiln_skip_simplified_ln_compute(kiln_ctx *ctx) { return skip_compute(ctx, 1); }
