/* Shared pieces of the ai.onnx.ml kernels: score post-transforms (as onnxruntime computes them),
 * attribute lookups and the entry points that live outside ml.c (ml_transforms.c holds the table). */
#ifndef KILN_ML_COMMON_H
#define KILN_ML_COMMON_H

#include "quant_elem.h"
#include <stdlib.h>

#define ML_DOMAIN "ai.onnx.ml"

enum { ML_PT_NONE, ML_PT_SOFTMAX, ML_PT_LOGISTIC, ML_PT_SOFTMAX_ZERO, ML_PT_PROBIT };

static inline int ml_post_transform(const char *s) {
    if (!s || !strcmp(s, "NONE")) return ML_PT_NONE;
    if (!strcmp(s, "SOFTMAX")) return ML_PT_SOFTMAX;
    if (!strcmp(s, "LOGISTIC")) return ML_PT_LOGISTIC;
    if (!strcmp(s, "SOFTMAX_ZERO")) return ML_PT_SOFTMAX_ZERO;
    if (!strcmp(s, "PROBIT")) return ML_PT_PROBIT;
    return -1;
}

static inline float ml_logistic(float x) {
    float v = 1.0f / (1.0f + expf(-fabsf(x)));
    return x < 0 ? 1.0f - v : v;
}

/* Winitzki's approximation of erf^-1, the one onnxruntime and the reference use. */
static inline float ml_erf_inv(float x) {
    float sgn = x < 0 ? -1.0f : 1.0f;
    x = (1.0f - x) * (1.0f + x);
    float lg = logf(x);
    float v = 2.0f / (3.14159f * 0.147f) + 0.5f * lg; /* onnxruntime's constant, for equal results */
    float v2 = 1.0f / 0.147f * lg;
    float v3 = -v + sqrtf(v * v - v2);
    return sgn * sqrtf(v3);
}

static inline float ml_probit(float x) { return 1.41421356f * ml_erf_inv(x * 2.0f - 1.0f); }

static inline void ml_softmax(float *v, int64_t n) {
    float mx = -INFINITY, s = 0.0f;
    for (int64_t i = 0; i < n; i++) mx = v[i] > mx ? v[i] : mx;
    for (int64_t i = 0; i < n; i++) { v[i] = expf(v[i] - mx); s += v[i]; }
    for (int64_t i = 0; i < n; i++) v[i] /= s;
}

/* Softmax that keeps exact zeros at zero weight (onnxruntime's SOFTMAX_ZERO). */
static inline void ml_softmax_zero(float *v, int64_t n) {
    float mx = -INFINITY, s = 0.0f;
    for (int64_t i = 0; i < n; i++) mx = v[i] > mx ? v[i] : mx;
    float e = expf(-mx);
    for (int64_t i = 0; i < n; i++) {
        if (v[i] > 0.0000001f || v[i] < -0.0000001f) v[i] = expf(v[i] - mx);
        else v[i] *= e;
        s += v[i];
    }
    for (int64_t i = 0; i < n; i++) v[i] = s == 0.0f ? 0.5f : v[i] / s;
}

static inline void ml_apply_transform(int pt, float *v, int64_t n) {
    switch (pt) {
    case ML_PT_SOFTMAX: ml_softmax(v, n); break;
    case ML_PT_SOFTMAX_ZERO: ml_softmax_zero(v, n); break;
    case ML_PT_LOGISTIC: for (int64_t i = 0; i < n; i++) v[i] = ml_logistic(v[i]); break;
    case ML_PT_PROBIT: for (int64_t i = 0; i < n; i++) v[i] = ml_probit(v[i]); break;
    default: break;
    }
}

/* onnxruntime's write_scores for one row: with a single score, add_second makes a second column
 * (0/1: 1 - s and s; 2/3: the transform of -s and s); otherwise the transform applies in place.
 * out receives *n_out values (room for 2 needed when n == 1). */
static inline void ml_write_scores(int pt, const float *in, int64_t n, int add_second, float *out,
                                   int64_t *n_out) {
    if (n >= 2) {
        memcpy(out, in, sizeof(float) * (size_t)n);
        ml_apply_transform(pt, out, n);
        *n_out = n;
        return;
    }
    float s = in[0];
    if (pt == ML_PT_PROBIT) {
        out[0] = ml_probit(s);
        *n_out = 1;
        return;
    }
    switch (add_second) {
    case 0: case 1:
        out[0] = 1.0f - s;
        out[1] = s;
        *n_out = 2;
        return;
    case 2: case 3:
        if (pt == ML_PT_LOGISTIC) { out[0] = ml_logistic(-s); out[1] = ml_logistic(s); }
        else if (pt == ML_PT_SOFTMAX) { out[0] = -s; out[1] = s; ml_softmax(out, 2); }
        else if (pt == ML_PT_SOFTMAX_ZERO) { out[0] = -s; out[1] = s; ml_softmax_zero(out, 2); }
        else { out[0] = -s; out[1] = s; }
        *n_out = 2;
        return;
    default:
        out[0] = s;
        ml_apply_transform(pt, out, 1);
        *n_out = 1;
    }
}

/* Reads element i of a numeric feature tensor as float (features are float in ai.onnx.ml). */
static inline float ml_feature(const kiln_tensor *x, int64_t i) { return qe_load_f32(x->dtype, x->data, i); }

/* X as [N, C]: a 1-D X is one row. Fails for other ranks. */
static inline kiln_status ml_rows_cols(kiln_ctx *ctx, const kiln_tensor *x, int64_t *n, int64_t *c) {
    if (x->rank == 1) { *n = 1; *c = x->dims[0]; return KILN_OK; }
    if (x->rank == 2) { *n = x->dims[0]; *c = x->dims[1]; return KILN_OK; }
    char b[96];
    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s must be [N, C] or [C]",
                     kiln_shape_str(x, b, sizeof b));
}

static inline int ml_is_feature_type(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || dt == KILN_DTYPE_INT64 ||
           dt == KILN_DTYPE_INT32;
}

/* entry points */
kiln_status kiln_ml_linear_classifier_infer(kiln_ctx *ctx);
kiln_status kiln_ml_linear_classifier_compute(kiln_ctx *ctx);
kiln_status kiln_ml_linear_regressor_infer(kiln_ctx *ctx);
kiln_status kiln_ml_linear_regressor_compute(kiln_ctx *ctx);
kiln_status kiln_ml_tree_init(kiln_ctx *ctx);
kiln_status kiln_ml_tree_infer(kiln_ctx *ctx);
kiln_status kiln_ml_tree_compute(kiln_ctx *ctx);
void kiln_ml_tree_fini(void *state);
kiln_status kiln_ml_svm_init(kiln_ctx *ctx);
kiln_status kiln_ml_svm_infer(kiln_ctx *ctx);
kiln_status kiln_ml_svm_compute(kiln_ctx *ctx);
void kiln_ml_svm_fini(void *state);
kiln_status kiln_ml_label_encoder_init(kiln_ctx *ctx);
kiln_status kiln_ml_label_encoder_infer(kiln_ctx *ctx);
kiln_status kiln_ml_label_encoder_compute(kiln_ctx *ctx);
void kiln_ml_label_encoder_fini(void *state);

#endif
