/* LinearClassifier and LinearRegressor (ai.onnx.ml 1): scores = X . coefficients^T + intercepts in
 * float, then labels and post-transforms following onnxruntime: a single score column with two
 * class labels is a binary model (label by the sign of the score, scores widened to two columns). */
#include "ml_common.h"
#include "string_kernels.h"

typedef struct lin_model {
    const float *coef, *icpt;
    int n_coef, n_icpt;
    int64_t targets;         /* score columns */
    int64_t C;               /* features */
} lin_model;

static kiln_status lin_model_read(kiln_ctx *ctx, int64_t C, int64_t targets, lin_model *m) {
    m->coef = kiln_attr_floats(ctx->node, "coefficients", &m->n_coef);
    m->icpt = kiln_attr_floats(ctx->node, "intercepts", &m->n_icpt);
    if (!m->coef) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'coefficients' is required");
    m->targets = targets;
    m->C = C;
    if (C >= 0 && (int64_t)m->n_coef != targets * C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%d coefficients do not fit %lld targets x %lld features",
                         m->n_coef, (long long)targets, (long long)C);
    if (m->n_icpt != 0 && m->n_icpt != targets)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%d intercepts for %lld targets", m->n_icpt,
                         (long long)targets);
    return KILN_OK;
}

static void lin_scores(const lin_model *m, const kiln_tensor *x, int64_t row, float *out) {
    for (int64_t t = 0; t < m->targets; t++) {
        float s = m->n_icpt ? m->icpt[t] : 0.0f;
        for (int64_t j = 0; j < m->C; j++) s += ml_feature(x, row * m->C + j) * m->coef[t * m->C + j];
        out[t] = s;
    }
}

/* ------------------------------------------------------------------------------------------ */

typedef struct lc_info {
    int n_ints, n_strs, pt;
    const int64_t *ints;
    char *const *strs;
    int64_t classes;         /* score rows in coefficients */
    int binary2;             /* one score column, two labels: widen to two columns */
} lc_info;

static kiln_status lc_read(kiln_ctx *ctx, const kiln_tensor *x, lc_info *li) {
    li->ints = kiln_attr_ints(ctx->node, "classlabels_ints", &li->n_ints);
    li->strs = kiln_attr_strings(ctx->node, "classlabels_strings", &li->n_strs);
    li->pt = ml_post_transform(kiln_attr_string(ctx->node, "post_transform", "NONE"));
    if (li->pt < 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown post_transform");
    if ((li->n_ints > 0) == (li->n_strs > 0))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "exactly one of classlabels_ints and classlabels_strings is needed");
    int nc = 0, ni = 0;
    kiln_attr_floats(ctx->node, "coefficients", &nc);
    kiln_attr_floats(ctx->node, "intercepts", &ni);
    int64_t C = x->rank == 2 ? x->dims[1] : x->rank == 1 ? x->dims[0] : -1;
    li->classes = ni > 0 ? ni : (C > 0 ? nc / C : -1);
    int64_t labels = li->n_ints > 0 ? li->n_ints : li->n_strs;
    li->binary2 = li->classes == 1 && labels == 2;
    return KILN_OK;
}

kiln_status kiln_ml_linear_classifier_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!ml_is_feature_type(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s", kiln_dtype_name(x->dtype));
    lc_info li;
    KILN_TRY(lc_read(ctx, x, &li));
    int ldt = li.n_strs > 0 ? KILN_DTYPE_STRING : KILN_DTYPE_INT64;
    if (x->rank < 0) {
        KILN_TRY(kiln_set_output_unknown(ctx, 0, ldt));
        return kiln_set_output_unknown(ctx, 1, KILN_DTYPE_FLOAT);
    }
    int64_t N = 0, C = 0;
    KILN_TRY(ml_rows_cols(ctx, x, &N, &C));
    lin_model m;
    KILN_TRY(lin_model_read(ctx, C, li.classes, &m));
    int64_t zd[2] = {N, li.binary2 ? 2 : li.classes};
    KILN_TRY(kiln_set_output(ctx, 0, ldt, 1, &N));
    return kiln_set_output(ctx, 1, KILN_DTYPE_FLOAT, 2, zd);
}

kiln_status kiln_ml_linear_classifier_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0), *z = kiln_output(ctx, 1);
    lc_info li;
    KILN_TRY(lc_read(ctx, x, &li));
    int64_t N = 0, C = 0;
    KILN_TRY(ml_rows_cols(ctx, x, &N, &C));
    lin_model m;
    KILN_TRY(lin_model_read(ctx, C, li.classes, &m));
    float *sc = malloc(sizeof(float) * (size_t)(li.classes + 2)), *out = malloc(sizeof(float) * (size_t)(li.classes + 2));
    if (!sc || !out) {
        free(sc);
        free(out);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    kiln_status st = KILN_OK;
    for (int64_t r = 0; r < N && st == KILN_OK; r++) {
        lin_scores(&m, x, r, sc);
        int64_t label_pos;
        if (li.classes == 1) {
            label_pos = sc[0] > 0.0f ? 1 : 0; /* binary: the sign picks the second or first label */
        } else {
            label_pos = 0;
            for (int64_t c = 1; c < li.classes; c++)
                if (sc[c] > sc[label_pos]) label_pos = c;
        }
        if (y) {
            if (li.n_strs > 0) {
                char *d = li.classes == 1 && li.n_strs != 2 ? str_dup_n(label_pos ? "1" : "0", 1)
                                                            : kiln_str_dup(li.strs[label_pos < li.n_strs ? label_pos : 0]);
                if (!d) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); break; }
                kiln_str_free(((char **)y->data)[r]);
                ((char **)y->data)[r] = d;
            } else {
                ((int64_t *)y->data)[r] = li.classes == 1 && li.n_ints != 2
                                              ? label_pos
                                              : li.ints[label_pos < li.n_ints ? label_pos : 0];
            }
        }
        if (z) {
            int64_t nz;
            if (li.binary2) {
                /* onnxruntime widens one score s to (1 - t, t) where t is s, or its logistic /
                 * probit; a softmax of one value is not taken */
                float t = sc[0];
                if (li.pt == ML_PT_LOGISTIC || li.pt == ML_PT_PROBIT) ml_apply_transform(li.pt, &t, 1);
                out[0] = 1.0f - t;
                out[1] = t;
            } else {
                ml_write_scores(li.pt, sc, li.classes, -1, out, &nz);
            }
            memcpy((float *)z->data + r * (li.binary2 ? 2 : li.classes), out,
                   sizeof(float) * (size_t)(li.binary2 ? 2 : li.classes));
        }
    }
    free(sc);
    free(out);
    return st;
}

/* ------------------------------------------------------------------------------------------ */

kiln_status kiln_ml_linear_regressor_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!ml_is_feature_type(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s", kiln_dtype_name(x->dtype));
    int64_t targets = kiln_attr_int(ctx->node, "targets", 1);
    if (targets < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "targets must be >= 1");
    if (ml_post_transform(kiln_attr_string(ctx->node, "post_transform", "NONE")) < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown post_transform");
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_FLOAT);
    int64_t N = 0, C = 0;
    KILN_TRY(ml_rows_cols(ctx, x, &N, &C));
    lin_model m;
    KILN_TRY(lin_model_read(ctx, C, targets, &m));
    int64_t dims[2] = {N, targets};
    return kiln_set_output(ctx, 0, KILN_DTYPE_FLOAT, 2, dims);
}

kiln_status kiln_ml_linear_regressor_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t targets = kiln_attr_int(ctx->node, "targets", 1), N = 0, C = 0;
    int pt = ml_post_transform(kiln_attr_string(ctx->node, "post_transform", "NONE"));
    KILN_TRY(ml_rows_cols(ctx, x, &N, &C));
    lin_model m;
    KILN_TRY(lin_model_read(ctx, C, targets, &m));
    for (int64_t r = 0; r < N; r++) {
        float *row = (float *)y->data + r * targets;
        lin_scores(&m, x, r, row);
        ml_apply_transform(pt, row, targets);
    }
    return KILN_OK;
}
