/* HannWindow, HammingWindow, BlackmanWindow and MelWeightMatrix (opset 17). Values are computed in
 * double and converted to output_datatype (integers truncate, as numpy's astype does). */
#include "quant_elem.h"
#include <stdlib.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

kiln_status kiln_window_infer(kiln_ctx *ctx);
kiln_status kiln_window_compute(kiln_ctx *ctx);
kiln_status kiln_mel_infer(kiln_ctx *ctx);
kiln_status kiln_mel_compute(kiln_ctx *ctx);

static int valid_out_type(int dt) {
    return qe_is_float(dt) || (kiln_dtype_is_integer(dt) && dt != KILN_DTYPE_BOOL &&
                               kiln_dtype_size((kiln_dtype)dt) > 0);
}

static kiln_status out_type(kiln_ctx *ctx, int *dt) {
    *dt = (int)kiln_attr_int(ctx->node, "output_datatype", KILN_DTYPE_FLOAT);
    if (!valid_out_type(*dt))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported output_datatype %d", *dt);
    return KILN_OK;
}

static kiln_status read_int_scalar(kiln_ctx *ctx, int i, const char *what, int64_t *v, int *known) {
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, i, &t));
    if (t->dtype != KILN_DTYPE_INT64 && t->dtype != KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be int32 or int64, not %s", what,
                         kiln_dtype_name(t->dtype));
    if (!t->data) { *known = 0; return KILN_OK; }
    if (kiln_numel(t) != 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be a scalar", what);
    *v = kiln_load_i64(t->dtype, t->data, 0);
    return KILN_OK;
}

static kiln_status read_float_scalar(kiln_ctx *ctx, int i, const char *what, double *v, int *known) {
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, i, &t));
    if (!qe_is_float(t->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be a float tensor, not %s", what,
                         kiln_dtype_name(t->dtype));
    if (!t->data) { *known = 0; return KILN_OK; }
    if (kiln_numel(t) != 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be a scalar", what);
    *v = qe_load_f64(t->dtype, t->data, 0);
    return KILN_OK;
}

kiln_status kiln_window_infer(kiln_ctx *ctx) {
    int dt, known = 1;
    int64_t size = 0;
    KILN_TRY(out_type(ctx, &dt));
    KILN_TRY(read_int_scalar(ctx, 0, "size", &size, &known));
    if (known && size < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "size %lld is negative", (long long)size);
    int64_t d = known ? size : KILN_DIM_UNKNOWN;
    return kiln_set_output(ctx, 0, dt, 1, &d);
}

kiln_status kiln_window_compute(kiln_ctx *ctx) {
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t size = y->dims[0];
    double n1 = kiln_attr_int(ctx->node, "periodic", 1) ? (double)size : (double)(size - 1);
    const char *op = ctx->node->op_type;
    for (int64_t i = 0; i < size; i++) {
        double x = (double)i, v;
        if (!strcmp(op, "HannWindow")) {
            double s = sin(x * M_PI / n1);
            v = s * s;
        } else if (!strcmp(op, "HammingWindow")) {
            const double alpha = 25.0 / 46.0;
            v = alpha - cos(x * M_PI * 2.0 / n1) * (1.0 - alpha);
        } else {
            v = cos(x * (M_PI * 2.0) / n1) * -0.5 + cos(x * (M_PI * 4.0) / n1) * 0.08 + 0.42;
        }
        qe_store_any(y->dtype, y->data, i, v);
    }
    return KILN_OK;
}

typedef struct mel_args {
    int64_t bins, dft_len, rate;
    double lo, hi;
    int known;
} mel_args;

static kiln_status mel_read(kiln_ctx *ctx, mel_args *a) {
    a->known = 1;
    KILN_TRY(read_int_scalar(ctx, 0, "num_mel_bins", &a->bins, &a->known));
    KILN_TRY(read_int_scalar(ctx, 1, "dft_length", &a->dft_len, &a->known));
    KILN_TRY(read_int_scalar(ctx, 2, "sample_rate", &a->rate, &a->known));
    KILN_TRY(read_float_scalar(ctx, 3, "lower_edge_hertz", &a->lo, &a->known));
    KILN_TRY(read_float_scalar(ctx, 4, "upper_edge_hertz", &a->hi, &a->known));
    if (!a->known) return KILN_OK;
    if (a->bins < 1 || a->dft_len < 1 || a->rate < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "num_mel_bins, dft_length and sample_rate must be positive");
    if (!(a->lo >= 0.0) || !(a->hi >= a->lo) || isinf(a->hi))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "need 0 <= lower_edge_hertz (%g) <= upper_edge_hertz (%g)", a->lo, a->hi);
    return KILN_OK;
}

kiln_status kiln_mel_infer(kiln_ctx *ctx) {
    int dt;
    mel_args a;
    KILN_TRY(out_type(ctx, &dt));
    KILN_TRY(mel_read(ctx, &a));
    int64_t dims[2] = {a.known ? a.dft_len / 2 + 1 : KILN_DIM_UNKNOWN, a.known ? a.bins : KILN_DIM_UNKNOWN};
    return kiln_set_output(ctx, 0, dt, 2, dims);
}

kiln_status kiln_mel_compute(kiln_ctx *ctx) {
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    mel_args a;
    KILN_TRY(mel_read(ctx, &a));
    int64_t nspec = a.dft_len / 2 + 1, nb = a.bins;
    int64_t *edge = malloc(sizeof(int64_t) * (size_t)(nb + 2));
    double *w = calloc((size_t)(nspec * nb), sizeof(double));
    if (!edge || !w) {
        free(edge);
        free(w);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    /* triangle corners: equally spaced on the mel scale, mapped back to spectrogram bins */
    double mlo = 2595.0 * log10(1.0 + a.lo / 700.0), mhi = 2595.0 * log10(1.0 + a.hi / 700.0);
    double step = (mhi - mlo) / (double)(nb + 2);
    kiln_status st = KILN_OK;
    for (int64_t i = 0; i < nb + 2; i++) {
        double hz = 700.0 * (pow(10.0, ((double)i * step + mlo) / 2595.0) - 1.0);
        edge[i] = (int64_t)floor((double)(a.dft_len + 1) * hz / (double)a.rate);
        if (edge[i] < 0 || edge[i] >= nspec) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                           "mel band edge %g Hz falls outside the %lld spectrogram bins", hz,
                           (long long)nspec);
            goto done;
        }
    }
    for (int64_t i = 0; i < nb; i++) {
        int64_t l = edge[i], c = edge[i + 1], h = edge[i + 2];
        if (c == l) {
            w[c * nb + i] = 1.0;
        } else {
            for (int64_t j = l; j <= c; j++) w[j * nb + i] = (double)(j - l) / (double)(c - l);
        }
        if (h > c)
            for (int64_t j = c; j < h; j++) w[j * nb + i] = (double)(h - j) / (double)(h - c);
    }
    for (int64_t i = 0; i < nspec * nb; i++) qe_store_any(y->dtype, y->data, i, w[i]);
done:
    free(edge);
    free(w);
    return st;
}
