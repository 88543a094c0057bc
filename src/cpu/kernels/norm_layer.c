/* Row normalisations over the trailing axes: LayerNormalization (opset 17, and onnxruntime's
 * earlier contrib form registered from opset 1), SimplifiedLayerNormalization, RMSNormalization
 * (opset 23), and com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization
 * (input + skip + bias, then normalise, optionally returning the sum).
 *
 * X is viewed as [rows, n], n = prod(dims[axis:]). float32, float16 and bfloat16 compute in
 * float32 (halves through float32 copies; Mean/InvStdDev are float32 as in onnxruntime), double
 * in double. Rows are spread over threads; float32 rows use the AVX2 primitives. */
#include "norm_impl.h"
#include <math.h>
#include "reduce_simd.h"

typedef struct lnjob {
    int simplified, dbl;
    int half;         /* X's dtype when float16/bfloat16 (rows go through float32), else 0 */
    int64_t n;
    double eps;
    const void *x;
    void *y;          /* NULL: only statistics wanted */
    const void *skip; /* skip variants: [skip_rows, n], broadcast over leading rows */
    int64_t skip_rows;
    const void *bias; /* [n] float or double, added with skip */
    void *sum;        /* input_skip_bias_sum (X's dtype), or NULL */
    const void *g, *b; /* float or double */
    int64_t gs, bs;   /* row strides of g and b: 0 or n */
    float *mean, *inv;
    ru_fail_flag fail;
} lnjob;

/* One float32 row: s = x (+ skip + bias), then y = normalise(s) * g + b. s may be x or y
 * (in place is safe); y may be x. */
static void ln_core_f32(const lnjob *jb, int64_t r, const float *x, const float *skip, float *s,
                        float *y) {
    int64_t n = jb->n;
    const float *src = x;
    if (skip) {
        rs_add3(x, skip, jb->bias, s, n);
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
    if (!isfinite(mean) || !isfinite(var)) {
        /* the float sums overflowed (a row of values near 3e38): redo the row in double, where
         * they fit, instead of turning finite inputs into NaN (a NaN input stays NaN) */
        double md = 0, vd = 0;
        if (!jb->simplified) {
            for (int64_t i = 0; i < n; i++) md += src[i];
            md /= (double)n;
        }
        for (int64_t i = 0; i < n; i++) vd += ((double)src[i] - md) * ((double)src[i] - md);
        double invd = 1.0 / sqrt(vd / (double)n + jb->eps);
        for (int64_t i = 0; i < n; i++) {
            double v = ((double)src[i] - md) * invd;
            if (g) v *= g[i];
            if (b) v += b[i];
            y[i] = (float)v;
        }
        if (jb->mean) jb->mean[r] = (float)md;
        if (jb->inv) jb->inv[r] = (float)invd;
        return;
    }
    rs_affine(src, y, n, mean, inv, g, b);
    if (jb->mean) jb->mean[r] = mean;
    if (jb->inv) jb->inv[r] = inv;
}

static void ln_row_f32(const lnjob *jb, int64_t r, float *scratch) {
    int64_t n = jb->n, ks = (r % (jb->skip_rows ? jb->skip_rows : 1)) * n;
    const float *x = (const float *)jb->x + r * n;
    float *y = jb->y ? (float *)jb->y + r * n : scratch;
    float *s = jb->sum ? (float *)jb->sum + r * n : y;
    ln_core_f32(jb, r, x, jb->skip ? (const float *)jb->skip + ks : NULL, s, y);
}

/* float16/bfloat16 rows: converted into scratch (2n floats), computed in place, converted back */
static void ln_row_half(const lnjob *jb, int64_t r, float *scratch) {
    int64_t n = jb->n, ks = (r % (jb->skip_rows ? jb->skip_rows : 1)) * n;
    float *xb = scratch, *kb = scratch + n;
    ru_half_to_f32(jb->half, (const uint16_t *)jb->x + r * n, xb, n);
    if (jb->skip) ru_half_to_f32(jb->half, (const uint16_t *)jb->skip + ks, kb, n);
    if (jb->skip && jb->sum) { /* the sum output needs s before normalising overwrites it */
        rs_add3(xb, kb, jb->bias, xb, n);
        ru_f32_to_half(jb->half, xb, (uint16_t *)jb->sum + r * n, n);
        ln_core_f32(jb, r, xb, NULL, xb, xb);
    } else {
        ln_core_f32(jb, r, xb, jb->skip ? kb : NULL, xb, xb);
    }
    if (jb->y) ru_f32_to_half(jb->half, xb, (uint16_t *)jb->y + r * n, n);
}

static void ln_row_f64(const lnjob *jb, int64_t r, double *scratch) {
    int64_t n = jb->n;
    const double *src = (const double *)jb->x + r * n;
    double *y = jb->y ? (double *)jb->y + r * n : scratch;
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

#define LN_STACK_BYTES 16384

static void ln_range(void *arg, int64_t b, int64_t e) {
    lnjob *jb = arg;
    /* per-task scratch: two rows of float (or one of double) */
    double stackbuf[LN_STACK_BYTES / sizeof(double)];
    size_t need = (size_t)jb->n * 8;
    void *scratch = need <= sizeof stackbuf ? (void *)stackbuf : malloc(need);
    if (!scratch) {
        jb->fail.failed = 1;
        return;
    }
    for (int64_t r = b; r < e; r++) {
        if (jb->dbl)
            ln_row_f64(jb, r, scratch);
        else if (jb->half)
            ln_row_half(jb, r, scratch);
        else
            ln_row_f32(jb, r, scratch);
    }
    if (scratch != (void *)stackbuf) free(scratch);
}

static kiln_status ln_run(kiln_ctx *ctx, lnjob *jb, int64_t rows) {
    kiln_parallel_for(ctx, rows, ru_grain(jb->n * 4), ln_range, jb);
    if (jb->fail.failed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    return KILN_OK;
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
    int64_t rows = ru_prod(x->dims, 0, axis), n = ru_prod(x->dims, axis, x->rank);
    kiln_tensor *mo = mean_out >= 0 && mean_out < ctx->n_out ? kiln_output(ctx, mean_out) : NULL;
    kiln_tensor *io = inv_out >= 0 && inv_out < ctx->n_out ? kiln_output(ctx, inv_out) : NULL;
    if (rows * n == 0) return KILN_OK;
    lnjob jb = {.simplified = simplified, .dbl = x->dtype == KILN_DTYPE_DOUBLE,
                .half = ru_is_halfish(x->dtype) ? x->dtype : 0, .n = n,
                .eps = kiln_attr_float(ctx->node, "epsilon", 1e-5f), .x = x->data,
                .y = y ? y->data : NULL, .mean = mo ? mo->data : NULL, .inv = io ? io->data : NULL};
    void *own_g = NULL, *own_b = NULL;
    kiln_status st;
    if (jb.dbl) {
        st = kiln_norm_param_f64(ctx, s, x, axis, (const double **)&jb.g, &jb.gs, (double **)&own_g);
        if (!st && bt)
            st = kiln_norm_param_f64(ctx, bt, x, axis, (const double **)&jb.b, &jb.bs,
                                     (double **)&own_b);
    } else {
        st = kiln_norm_param_f32(ctx, s, x, axis, (const float **)&jb.g, &jb.gs, (float **)&own_g);
        if (!st && bt)
            st = kiln_norm_param_f32(ctx, bt, x, axis, (const float **)&jb.b, &jb.bs,
                                     (float **)&own_b);
    }
    if (!st) st = ln_run(ctx, &jb, rows);
    free(own_g);
    free(own_b);
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
        /* the hidden size is compared where both sides know it (static inference may know it from
         * the skip alone, as exporters of GPT-2 leave the residual's last axis unnamed) */
        int64_t kh = k->rank >= 1 ? k->dims[k->rank - 1] : -1;
        if (ok && kh >= 0 && h >= 0 && kh != h) ok = 0;
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
    /* an unknown hidden size is gamma's (or the skip's) */
    kiln_tensor shape = *x;
    int64_t *h = &shape.dims[shape.rank - 1];
    if (*h < 0 && in[2]->rank == 1 && in[2]->dims[0] >= 0) *h = in[2]->dims[0];
    if (*h < 0 && in[1]->rank >= 1 && in[1]->dims[in[1]->rank - 1] >= 0) *h = in[1]->dims[in[1]->rank - 1];
    KILN_TRY(set_ln_outputs(ctx, &shape, shape.rank - 1, 2, stats));
    if (ctx->n_out > 3 && kiln_output(ctx, 3)) KILN_TRY(kiln_set_output_like(ctx, 3, &shape));
    return KILN_OK;
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
    if (total == 0) return KILN_OK;
    lnjob jb = {.simplified = simplified, .dbl = x->dtype == KILN_DTYPE_DOUBLE,
                .half = ru_is_halfish(x->dtype) ? x->dtype : 0, .n = n,
                .eps = kiln_attr_float(ctx->node, "epsilon", 1e-12f), .x = x->data,
                .y = y ? y->data : NULL, .skip = k->data, .skip_rows = kiln_numel(k) / n,
                .sum = so ? so->data : NULL, .mean = mo ? mo->data : NULL,
                .inv = io ? io->data : NULL};
    /* gamma, beta, bias: the data itself for float/double, float32 copies for halves */
    const void *v[5] = {NULL, NULL, NULL, NULL, NULL};
    float *own[5] = {NULL, NULL, NULL, NULL, NULL};
    kiln_status st = KILN_OK;
    for (int i = 2; i < 5 && !st; i++) {
        if (!in[i]) continue;
        if (jb.dbl) v[i] = in[i]->data;
        else st = kiln_norm_as_f32(ctx, in[i], (const float **)&v[i], &own[i]);
    }
    jb.g = v[2];
    jb.b = v[3];
    jb.bias = v[4];
    if (!st) st = ln_run(ctx, &jb, rows);
    for (int i = 0; i < 5; i++) free(own[i]);
    return st;
}

kiln_status kiln_skip_ln_infer(kiln_ctx *ctx) { return skip_infer(ctx, 0); }
kiln_status kiln_skip_ln_compute(kiln_ctx *ctx) { return skip_compute(ctx, 0); }
kiln_status kiln_skip_simplified_ln_infer(kiln_ctx *ctx) { return skip_infer(ctx, 1); }
kiln_status kiln_skip_simplified_ln_compute(kiln_ctx *ctx) { return skip_compute(ctx, 1); }
