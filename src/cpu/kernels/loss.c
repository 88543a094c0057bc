/* NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss. Inputs are [N, C, d1..dk] with targets
 * [N, d1..dk]; both are viewed as [N, C, D] / [N, D]. Sums run in double (the per-element losses
 * are few compared with a matmul, and this keeps mean reductions stable). */
#include "reduce_impl.h"

enum { RED_NONE, RED_SUM, RED_MEAN };

static kiln_status loss_reduction(kiln_ctx *ctx, int *red) {
    const char *s = kiln_attr_string(ctx->node, "reduction", "mean");
    if (!strcmp(s, "none")) *red = RED_NONE;
    else if (!strcmp(s, "sum")) *red = RED_SUM;
    else if (!strcmp(s, "mean")) *red = RED_MEAN;
    else
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "attribute 'reduction' is '%s', expected none, sum or mean", s);
    return KILN_OK;
}

/* Shared validation: scores [N, C, d...], target [N, d...] int32/int64, weight [C]. */
static kiln_status loss_check(kiln_ctx *ctx, const char *what, kiln_tensor **px, kiln_tensor **pt,
                              kiln_tensor **pw) {
    kiln_tensor *x, *t, *w;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &t));
    w = ctx->n_in > 2 ? kiln_input(ctx, 2) : NULL;
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                              KILN_DTYPE_BFLOAT16));
    KILN_TRY(kiln_check_dtype(ctx, t, 1, 2, KILN_DTYPE_INT32, KILN_DTYPE_INT64));
    if (w) {
        if (w->dtype != x->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input 'weights' has type %s, expected %s like %s",
                             kiln_dtype_name(w->dtype), kiln_dtype_name(x->dtype), what);
    }
    *px = x;
    *pt = t;
    *pw = w;
    if (x->rank < 0 || t->rank < 0) return KILN_OK;
    if (x->rank < 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' has rank %d, expected >= 2",
                         what, x->rank);
    if (t->rank != x->rank - 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "target has rank %d, expected %d (one less than '%s')", t->rank,
                         x->rank - 1, what);
    for (int i = 0; i < t->rank; i++) {
        int64_t a = x->dims[i == 0 ? 0 : i + 1], b = t->dims[i];
        if (a >= 0 && b >= 0 && a != b)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "target dim %d is %lld but '%s' has %lld there", i, (long long)b,
                             what, (long long)a);
    }
    if (w && w->rank >= 0) {
        if (w->rank != 1 || (w->dims[0] >= 0 && x->dims[1] >= 0 && w->dims[0] != x->dims[1]))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input 'weights' must be 1-D of size C = %lld", (long long)x->dims[1]);
    }
    return KILN_OK;
}

static kiln_status loss_set_output(kiln_ctx *ctx, const kiln_tensor *x, const kiln_tensor *t) {
    int red;
    KILN_TRY(loss_reduction(ctx, &red));
    if (red != RED_NONE) return kiln_set_output(ctx, 0, x->dtype, 0, NULL);
    if (t->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    return kiln_set_output(ctx, 0, x->dtype, t->rank, t->dims);
}

static inline double load_real(int dt, const void *p, int64_t i) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return ((const float *)p)[i];
    case KILN_DTYPE_DOUBLE: return ((const double *)p)[i];
    case KILN_DTYPE_FLOAT16: return kiln_f16_to_f32(((const uint16_t *)p)[i]);
    default: return kiln_bf16_to_f32(((const uint16_t *)p)[i]);
    }
}

static inline int64_t load_target(const kiln_tensor *t, int64_t i) {
    return t->dtype == KILN_DTYPE_INT32 ? ((const int32_t *)t->data)[i]
                                        : ((const int64_t *)t->data)[i];
}

/* Common tail of both losses. logp(n, c, d) is either the input itself (NLL) or the computed
 * log-softmax; stored in lp as [N, C, D] doubles when given, else read from x. */
static kiln_status loss_finish(kiln_ctx *ctx, const kiln_tensor *x, const double *lp,
                               const kiln_tensor *t, const kiln_tensor *w) {
    kiln_tensor *y = kiln_output(ctx, 0);
    int red;
    KILN_TRY(loss_reduction(ctx, &red));
    int has_ii = kiln_has_attr(ctx->node, "ignore_index");
    int64_t ii = kiln_attr_int(ctx->node, "ignore_index", 0);
    int64_t n = x->dims[0], c = x->dims[1], d = ru_prod(x->dims, 2, x->rank);
    double sum = 0, wsum = 0;
    for (int64_t a = 0; a < n; a++) {
        for (int64_t b = 0; b < d; b++) {
            int64_t k = a * d + b, tv = load_target(t, k);
            double l = 0, wv = 0;
            if (!(has_ii && tv == ii)) {
                if (tv < 0 || tv >= c)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "target value %lld at position %lld is outside [0, %lld)",
                                     (long long)tv, (long long)k, (long long)c);
                int64_t xi = (a * c + tv) * d + b;
                wv = w ? load_real(w->dtype, w->data, tv) : 1.0;
                l = -(lp ? lp[xi] : load_real(x->dtype, x->data, xi)) * wv;
            }
            if (red == RED_NONE) {
                if (y) kiln_store_f64(y->dtype, y->data, k, l);
            } else {
                sum += l;
                wsum += wv;
            }
        }
    }
    if (red != RED_NONE && y) kiln_store_f64(y->dtype, y->data, 0, red == RED_SUM ? sum : sum / wsum);
    return KILN_OK;
}

kiln_status kiln_nll_loss_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *t, *w;
    KILN_TRY(loss_check(ctx, "input", &x, &t, &w));
    return loss_set_output(ctx, x, t);
}

kiln_status kiln_nll_loss_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *t, *w;
    KILN_TRY(loss_check(ctx, "input", &x, &t, &w));
    return loss_finish(ctx, x, NULL, t, w);
}

kiln_status kiln_sce_loss_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *t, *w;
    KILN_TRY(loss_check(ctx, "scores", &x, &t, &w));
    KILN_TRY(loss_set_output(ctx, x, t));
    if (ctx->n_out > 1 && kiln_output(ctx, 1)) {
        if (x->rank < 0) return kiln_set_output_unknown(ctx, 1, x->dtype);
        return kiln_set_output(ctx, 1, x->dtype, x->rank, x->dims);
    }
    return KILN_OK;
}

kiln_status kiln_sce_loss_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *t, *w;
    KILN_TRY(loss_check(ctx, "scores", &x, &t, &w));
    int64_t n = x->dims[0], c = x->dims[1], d = ru_prod(x->dims, 2, x->rank);
    int64_t total = n * c * d;
    double *lp = malloc((size_t)(total > 0 ? total : 1) * sizeof(double));
    if (!lp) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    /* log-softmax over the class axis (stride d) */
    for (int64_t a = 0; a < n; a++) {
        for (int64_t b = 0; b < d; b++) {
            int64_t base = a * c * d + b;
            double m = -INFINITY, s = 0;
            for (int64_t k = 0; k < c; k++) {
                double v = load_real(x->dtype, x->data, base + k * d);
                lp[base + k * d] = v;
                if (v > m) m = v;
            }
            for (int64_t k = 0; k < c; k++) s += exp(lp[base + k * d] - m);
            double lse = m + log(s);
            for (int64_t k = 0; k < c; k++) lp[base + k * d] -= lse;
        }
    }
    kiln_tensor *lpo = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    if (lpo)
        for (int64_t i = 0; i < total; i++) kiln_store_f64(lpo->dtype, lpo->data, i, lp[i]);
    kiln_status st = loss_finish(ctx, x, lp, t, w);
    free(lp);
    return st;
}
