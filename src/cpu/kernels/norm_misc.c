/* LpNormalization (p = 1 or 2 along one axis), MeanVarianceNormalization (over a set of axes,
 * as its ONNX function: (X - E[X]) / (sqrt(E[X^2] - E[X]^2) + 1e-9)) and LRN (across channels).
 * None of these is on a hot path of the models we target, so they favour plain double
 * arithmetic over vector code. */
#include "norm_impl.h"

static kiln_status float_x(kiln_ctx *ctx, kiln_tensor **x) {
    KILN_TRY(kiln_need_input(ctx, 0, x));
    return kiln_check_dtype(ctx, *x, 0, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                            KILN_DTYPE_BFLOAT16);
}

static kiln_status same_shape_out(kiln_ctx *ctx, const kiln_tensor *x) {
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    return kiln_set_output_like(ctx, 0, x);
}

/* X as doubles (for non-double types a converted copy); *own is what to free. */
static kiln_status as_f64(kiln_ctx *ctx, const kiln_tensor *x, const double **out, double **own) {
    *own = NULL;
    if (x->dtype == KILN_DTYPE_DOUBLE) {
        *out = x->data;
        return KILN_OK;
    }
    *own = ru_to_f64_copy(x, kiln_numel(x));
    if (!*own) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    *out = *own;
    return KILN_OK;
}

/* x in double (as_f64) and a double result buffer of total elements; on failure nothing is held. */
static kiln_status f64_in_out(kiln_ctx *ctx, const kiln_tensor *x, int64_t total, const double **v, double **own,
                              double **out) {
    *out = malloc((size_t)total * sizeof(double));
    if (!*out) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = as_f64(ctx, x, v, own);
    if (st) {
        free(*out);
        *out = NULL;
    }
    return st;
}

static void store_all(kiln_tensor *y, const double *v, int64_t n) {
    if (y->dtype == KILN_DTYPE_DOUBLE) {
        memcpy(y->data, v, (size_t)n * sizeof(double));
    } else if (y->dtype == KILN_DTYPE_FLOAT) {
        for (int64_t i = 0; i < n; i++) ((float *)y->data)[i] = (float)v[i];
    } else {
        for (int64_t i = 0; i < n; i++) kiln_store_f64(y->dtype, y->data, i, v[i]);
    }
}

/* ---- LpNormalization ---- */

static kiln_status lp_params(kiln_ctx *ctx, const kiln_tensor *x, int *axis, int *p) {
    *p = (int)kiln_attr_int(ctx->node, "p", 2);
    if (*p != 1 && *p != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'p' is %d, expected 1 or 2", *p);
    if (x->rank < 0) return KILN_OK;
    if (x->rank == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must have rank >= 1");
    return kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -1), x->rank, "axis", axis);
}

kiln_status kiln_lpnorm_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(float_x(ctx, &x));
    int axis, p;
    KILN_TRY(lp_params(ctx, x, &axis, &p));
    return same_shape_out(ctx, x);
}

kiln_status kiln_lpnorm_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int axis, p;
    KILN_TRY(lp_params(ctx, x, &axis, &p));
    int64_t total = kiln_numel(x), n = x->dims[axis];
    int64_t outer = ru_prod(x->dims, 0, axis), inner = ru_prod(x->dims, axis + 1, x->rank);
    if (total == 0) return KILN_OK;
    const double *v;
    double *own, *out;
    KILN_TRY(f64_in_out(ctx, x, total, &v, &own, &out));
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t j = 0; j < inner; j++) {
            const double *xs = v + o * n * inner + j;
            double *ys = out + o * n * inner + j, s = 0;
            for (int64_t k = 0; k < n; k++) s += p == 1 ? fabs(xs[k * inner]) : xs[k * inner] * xs[k * inner];
            if (p == 2) s = sqrt(s);
            /* a zero vector stays zero (onnxruntime), rather than 0/0 */
            for (int64_t k = 0; k < n; k++) ys[k * inner] = s != 0 ? xs[k * inner] / s : 0.0;
        }
    }
    store_all(y, out, total);
    free(own);
    free(out);
    return KILN_OK;
}

/* ---- MeanVarianceNormalization ---- */

static kiln_status mvn_axes(kiln_ctx *ctx, const kiln_tensor *x, int *red) {
    int n = 0;
    const int64_t *a = kiln_attr_ints(ctx->node, "axes", &n);
    static const int64_t dflt[] = {0, 2, 3};
    if (!kiln_has_attr(ctx->node, "axes")) {
        a = dflt;
        n = 3;
    }
    for (int i = 0; i < x->rank; i++) red[i] = 0;
    for (int i = 0; i < n; i++) {
        int ax;
        KILN_TRY(kiln_norm_axis(ctx, a[i], x->rank, "axes", &ax));
        if (red[ax])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %lld appears twice in 'axes'",
                             (long long)a[i]);
        red[ax] = 1;
    }
    return KILN_OK;
}

kiln_status kiln_mvn_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(float_x(ctx, &x));
    if (x->rank >= 0) {
        int red[KILN_MAX_RANK];
        KILN_TRY(mvn_axes(ctx, x, red));
    }
    return same_shape_out(ctx, x);
}

kiln_status kiln_mvn_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int red[KILN_MAX_RANK];
    KILN_TRY(mvn_axes(ctx, x, red));
    int rank = x->rank;
    int64_t total = kiln_numel(x);
    if (total == 0) return KILN_OK;
    /* statistics are indexed by the kept axes; kst[i] is axis i's stride there (0 if reduced) */
    int64_t kst[KILN_MAX_RANK], idx[KILN_MAX_RANK], kept = 1, cnt = 1;
    for (int i = rank - 1; i >= 0; i--) {
        kst[i] = red[i] ? 0 : kept;
        if (red[i]) cnt *= x->dims[i];
        else kept *= x->dims[i];
    }
    const double *v = NULL;
    double *own;
    KILN_TRY(as_f64(ctx, x, &v, &own));
    double *st = calloc((size_t)kept * 2, sizeof(double));
    double *out = malloc((size_t)total * sizeof(double));
    if (!st || !out) {
        free(own);
        free(st);
        free(out);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    double *sum = st, *sq = st + kept;
    for (int pass = 0; pass < 2; pass++) {
        int64_t k = 0;
        for (int i = 0; i < rank; i++) idx[i] = 0;
        for (int64_t e = 0; e < total; e++) {
            if (pass == 0) {
                sum[k] += v[e];
                sq[k] += v[e] * v[e];
            } else {
                out[e] = (v[e] - sum[k]) / (sqrt(sq[k]) + 1e-9);
            }
            for (int i = rank - 1; i >= 0; i--) {
                k += kst[i];
                if (++idx[i] < x->dims[i]) break;
                k -= kst[i] * x->dims[i];
                idx[i] = 0;
            }
        }
        if (pass == 0)
            for (int64_t q = 0; q < kept; q++) {
                sum[q] /= (double)cnt;
                sq[q] = sq[q] / (double)cnt - sum[q] * sum[q];
                if (sq[q] < 0) sq[q] = 0; /* rounding of E[X^2] - E[X]^2 */
            }
    }
    store_all(y, out, total);
    free(own);
    free(st);
    free(out);
    return KILN_OK;
}

/* ---- LRN ---- */

static kiln_status lrn_size(kiln_ctx *ctx, int64_t *size) {
    if (!kiln_has_attr(ctx->node, "size"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'size' is missing");
    *size = kiln_attr_int(ctx->node, "size", 1);
    if (*size <= 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'size' is %lld, expected > 0",
                         (long long)*size);
    return KILN_OK;
}

kiln_status kiln_lrn_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(float_x(ctx, &x));
    int64_t size;
    KILN_TRY(lrn_size(ctx, &size));
    if (x->rank >= 0 && x->rank < 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input has rank %d, expected [N, C, ...]",
                         x->rank);
    return same_shape_out(ctx, x);
}

kiln_status kiln_lrn_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t size;
    KILN_TRY(lrn_size(ctx, &size));
    double alpha = kiln_attr_float(ctx->node, "alpha", 1e-4f);
    double beta = kiln_attr_float(ctx->node, "beta", 0.75f);
    double bias = kiln_attr_float(ctx->node, "bias", 1.0f);
    int64_t total = kiln_numel(x), n = x->dims[0], c = x->dims[1];
    int64_t inner = ru_prod(x->dims, 2, x->rank);
    if (total == 0) return KILN_OK;
    int64_t lo = (size - 1) / 2, hi = size - 1 - lo; /* floor and ceil of (size - 1) / 2 */
    const double *v;
    double *own, *out;
    KILN_TRY(f64_in_out(ctx, x, total, &v, &own, &out));
    for (int64_t b = 0; b < n; b++) {
        for (int64_t ch = 0; ch < c; ch++) {
            int64_t c0 = ch - lo < 0 ? 0 : ch - lo, c1 = ch + hi > c - 1 ? c - 1 : ch + hi;
            for (int64_t i = 0; i < inner; i++) {
                double s = 0;
                for (int64_t k = c0; k <= c1; k++) {
                    double t = v[(b * c + k) * inner + i];
                    s += t * t;
                }
                int64_t e = (b * c + ch) * inner + i;
                out[e] = v[e] / pow(bias + alpha / (double)size * s, beta);
            }
        }
    }
    store_all(y, out, total);
    free(own);
    free(out);
    return KILN_OK;
}
