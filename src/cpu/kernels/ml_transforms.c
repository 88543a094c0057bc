/* ai.onnx.ml feature transforms: Binarizer, ArrayFeatureExtractor, Scaler, Normalizer,
 * OneHotEncoder, Imputer. The ml family table is at the end. ZipMap is absent: its output is a
 * sequence of maps, which kiln's values cannot hold. */
#include "ml_common.h"
#include "string_kernels.h"

/* ------------------------------------------------------------------------------------------ */
/* Binarizer */

static kiln_status binarizer_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!ml_is_feature_type(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s", kiln_dtype_name(x->dtype));
    return kiln_set_output_like(ctx, 0, x);
}

static kiln_status binarizer_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    double th = kiln_attr_float(ctx->node, "threshold", 0.0f);
    int64_t n = kiln_numel(x);
    for (int64_t i = 0; i < n; i++) {
        double v = qe_load_f64(x->dtype, x->data, i);
        qe_store_any(y->dtype, y->data, i, v > th ? 1.0 : 0.0);
    }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* ArrayFeatureExtractor: gathers indices along the last axis (a 1-D X gives one row) */

static kiln_status afe_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *idx;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &idx));
    KILN_TRY(kiln_check_dtype(ctx, idx, 1, 1, KILN_DTYPE_INT64));
    if (!ml_is_feature_type(x->dtype) && x->dtype != KILN_DTYPE_STRING)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s", kiln_dtype_name(x->dtype));
    if (x->rank < 0 || idx->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    if (x->rank < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X must have rank >= 1");
    int64_t k = kiln_shape_concrete(idx) ? kiln_numel(idx) : KILN_DIM_UNKNOWN;
    int64_t dims[KILN_MAX_RANK];
    if (x->rank == 1) {
        dims[0] = 1;
        dims[1] = k;
        return kiln_set_output(ctx, 0, x->dtype, 2, dims);
    }
    memcpy(dims, x->dims, sizeof(int64_t) * x->rank);
    dims[x->rank - 1] = k;
    return kiln_set_output(ctx, 0, x->dtype, x->rank, dims);
}

static kiln_status afe_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0), *idx = kiln_input(ctx, 1);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t C = x->dims[x->rank - 1], rows = C ? kiln_numel(x) / C : 0, k = kiln_numel(idx);
    const int64_t *ix = (const int64_t *)idx->data;
    for (int64_t j = 0; j < k; j++)
        if (ix[j] < 0 || ix[j] >= C)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "index %lld is outside [0, %lld)",
                             (long long)ix[j], (long long)C);
    if (x->rank == 1) rows = 1;
    size_t es = x->dtype == KILN_DTYPE_STRING ? sizeof(char *) : kiln_dtype_size(x->dtype);
    for (int64_t r = 0; r < rows; r++)
        for (int64_t j = 0; j < k; j++) {
            int64_t src = r * C + ix[j], dst = r * k + j;
            if (x->dtype == KILN_DTYPE_STRING) {
                char *d = kiln_str_dup(str_at(x, src));
                if (!d) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
                kiln_str_free(((char **)y->data)[dst]);
                ((char **)y->data)[dst] = d;
            } else {
                memcpy((char *)y->data + dst * es, (const char *)x->data + src * es, es);
            }
        }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Scaler and Normalizer: float outputs of X's shape */

static kiln_status float_like_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!ml_is_feature_type(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s", kiln_dtype_name(x->dtype));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_FLOAT);
    if (!strcmp(ctx->node->op_type, "Normalizer") && x->rank != 1 && x->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must be [N, C] or [C]");
    return kiln_set_output(ctx, 0, KILN_DTYPE_FLOAT, x->rank, x->dims);
}

static kiln_status scaler_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int ns = 0, no = 0;
    const float *scale = kiln_attr_floats(ctx->node, "scale", &ns);
    const float *offset = kiln_attr_floats(ctx->node, "offset", &no);
    int64_t C = x->rank >= 1 ? x->dims[x->rank - 1] : 1, n = kiln_numel(x);
    if ((ns != 0 && ns != 1 && ns != C) || (no != 0 && no != 1 && no != C))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "scale (%d) and offset (%d) must hold 1 or %lld values", ns, no, (long long)C);
    float *out = (float *)y->data;
    for (int64_t i = 0; i < n; i++) {
        int64_t j = C ? i % C : 0;
        float s = ns == 0 ? 1.0f : scale[ns == 1 ? 0 : j], o = no == 0 ? 0.0f : offset[no == 1 ? 0 : j];
        out[i] = (ml_feature(x, i) - o) * s;
    }
    return KILN_OK;
}

static kiln_status normalizer_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    const char *norm = kiln_attr_string(ctx->node, "norm", "MAX");
    int kind = !strcmp(norm, "MAX") ? 0 : !strcmp(norm, "L1") ? 1 : !strcmp(norm, "L2") ? 2 : -1;
    if (kind < 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown norm '%s'", norm);
    int64_t N = 0, C = 0;
    KILN_TRY(ml_rows_cols(ctx, x, &N, &C));
    float *out = (float *)y->data;
    for (int64_t r = 0; r < N; r++) {
        float *row = out + r * C;
        for (int64_t j = 0; j < C; j++) row[j] = ml_feature(x, r * C + j);
        float d = 0.0f;
        if (kind == 0) {
            d = -INFINITY;
            for (int64_t j = 0; j < C; j++) d = row[j] > d ? row[j] : d;
        } else if (kind == 1) {
            for (int64_t j = 0; j < C; j++) d += fabsf(row[j]);
        } else {
            for (int64_t j = 0; j < C; j++) d += row[j] * row[j];
            d = sqrtf(d);
        }
        if (d != 0.0f)
            for (int64_t j = 0; j < C; j++) row[j] /= d;
    }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* OneHotEncoder */

static kiln_status ohe_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int ni = 0, ns = 0;
    kiln_attr_ints(ctx->node, "cats_int64s", &ni);
    kiln_attr_strings(ctx->node, "cats_strings", &ns);
    if ((ni > 0) == (ns > 0))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "exactly one of cats_int64s and cats_strings is needed");
    if ((ns > 0) != (x->dtype == KILN_DTYPE_STRING))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input type %s does not match the categories",
                         kiln_dtype_name(x->dtype));
    if (x->dtype != KILN_DTYPE_STRING && !ml_is_feature_type(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s", kiln_dtype_name(x->dtype));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_FLOAT);
    if (x->rank + 1 > KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "rank too large");
    int64_t dims[KILN_MAX_RANK];
    memcpy(dims, x->dims, sizeof(int64_t) * x->rank);
    dims[x->rank] = ni > 0 ? ni : ns;
    return kiln_set_output(ctx, 0, KILN_DTYPE_FLOAT, x->rank + 1, dims);
}

static kiln_status ohe_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int ni = 0, ns = 0;
    const int64_t *ci = kiln_attr_ints(ctx->node, "cats_int64s", &ni);
    char *const *cs = kiln_attr_strings(ctx->node, "cats_strings", &ns);
    int zeros = kiln_attr_int(ctx->node, "zeros", 1) != 0;
    int64_t n = kiln_numel(x), k = ni > 0 ? ni : ns;
    float *out = (float *)y->data;
    memset(out, 0, sizeof(float) * (size_t)(n * k));
    for (int64_t i = 0; i < n; i++) {
        int64_t hit = -1;
        if (ns > 0) {
            const char *s = str_at(x, i);
            for (int64_t c = 0; c < k && hit < 0; c++)
                if (kiln_str_eq(cs[c], s)) hit = c;
        } else {
            int64_t v = x->dtype == KILN_DTYPE_INT64 || x->dtype == KILN_DTYPE_INT32
                            ? kiln_load_i64(x->dtype, x->data, i)
                            : (int64_t)qe_load_f64(x->dtype, x->data, i);
            for (int64_t c = 0; c < k && hit < 0; c++)
                if (ci[c] == v) hit = c;
        }
        if (hit >= 0) out[i * k + hit] = 1.0f;
        else if (!zeros)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "element %lld matches no category and zeros is 0", (long long)i);
    }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Imputer */

static kiln_status imputer_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!ml_is_feature_type(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s", kiln_dtype_name(x->dtype));
    int nf = 0, ni = 0;
    kiln_attr_floats(ctx->node, "imputed_value_floats", &nf);
    kiln_attr_ints(ctx->node, "imputed_value_int64s", &ni);
    int is_float = x->dtype == KILN_DTYPE_FLOAT || x->dtype == KILN_DTYPE_DOUBLE;
    if ((is_float && nf == 0) || (!is_float && ni == 0))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "imputed_value_%s is required for %s input",
                         is_float ? "floats" : "int64s", kiln_dtype_name(x->dtype));
    int64_t C = x->rank >= 1 ? x->dims[x->rank - 1] : 1, k = is_float ? nf : ni;
    if (C >= 0 && k != 1 && k != C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%lld imputed values for %lld features",
                         (long long)k, (long long)C);
    return kiln_set_output_like(ctx, 0, x);
}

static kiln_status imputer_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int nf = 0, ni = 0;
    const float *vf = kiln_attr_floats(ctx->node, "imputed_value_floats", &nf);
    const int64_t *vi = kiln_attr_ints(ctx->node, "imputed_value_int64s", &ni);
    int64_t C = x->rank >= 1 ? x->dims[x->rank - 1] : 1, n = kiln_numel(x);
    if (x->dtype == KILN_DTYPE_FLOAT || x->dtype == KILN_DTYPE_DOUBLE) {
        float rep = kiln_attr_float(ctx->node, "replaced_value_float", 0.0f);
        for (int64_t i = 0; i < n; i++) {
            double v = qe_load_f64(x->dtype, x->data, i);
            int missing = isnan(rep) ? isnan(v) : v == (double)rep;
            qe_store_f64(y->dtype, y->data, i, missing ? vf[nf == 1 ? 0 : i % C] : v);
        }
    } else {
        int64_t rep = kiln_attr_int(ctx->node, "replaced_value_int64", 0);
        for (int64_t i = 0; i < n; i++) {
            int64_t v = kiln_load_i64(x->dtype, x->data, i);
            qe_store_any(y->dtype, y->data, i, (double)(v == rep ? vi[ni == 1 ? 0 : i % C] : v));
        }
    }
    return KILN_OK;
}

const kiln_op kiln_ops_ml[] = {
    {ML_DOMAIN, "Binarizer", 1, 0, NULL, binarizer_infer, binarizer_compute, NULL},
    {ML_DOMAIN, "ArrayFeatureExtractor", 1, 0, NULL, afe_infer, afe_compute, NULL},
    {ML_DOMAIN, "Scaler", 1, 0, NULL, float_like_infer, scaler_compute, NULL},
    {ML_DOMAIN, "Normalizer", 1, 0, NULL, float_like_infer, normalizer_compute, NULL},
    {ML_DOMAIN, "OneHotEncoder", 1, 0, NULL, ohe_infer, ohe_compute, NULL},
    {ML_DOMAIN, "Imputer", 1, 0, NULL, imputer_infer, imputer_compute, NULL},
    {ML_DOMAIN, "LabelEncoder", 1, 0, kiln_ml_label_encoder_init, kiln_ml_label_encoder_infer,
     kiln_ml_label_encoder_compute, kiln_ml_label_encoder_fini},
    {ML_DOMAIN, "LinearClassifier", 1, 0, NULL, kiln_ml_linear_classifier_infer,
     kiln_ml_linear_classifier_compute, NULL},
    {ML_DOMAIN, "LinearRegressor", 1, 0, NULL, kiln_ml_linear_regressor_infer,
     kiln_ml_linear_regressor_compute, NULL},
    {ML_DOMAIN, "TreeEnsembleClassifier", 1, 0, kiln_ml_tree_init, kiln_ml_tree_infer, kiln_ml_tree_compute,
     kiln_ml_tree_fini},
    {ML_DOMAIN, "TreeEnsembleRegressor", 1, 0, kiln_ml_tree_init, kiln_ml_tree_infer, kiln_ml_tree_compute,
     kiln_ml_tree_fini},
    {ML_DOMAIN, "TreeEnsemble", 5, 0, kiln_ml_tree_init, kiln_ml_tree_infer, kiln_ml_tree_compute,
     kiln_ml_tree_fini},
    {ML_DOMAIN, "SVMClassifier", 1, 0, kiln_ml_svm_init, kiln_ml_svm_infer, kiln_ml_svm_compute, kiln_ml_svm_fini},
    {ML_DOMAIN, "SVMRegressor", 1, 0, kiln_ml_svm_init, kiln_ml_svm_infer, kiln_ml_svm_compute, kiln_ml_svm_fini},
    {0},
};
