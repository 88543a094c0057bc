/* SVMClassifier and SVMRegressor (ai.onnx.ml 1), in float as onnxruntime computes them. With
 * support vectors the classifier runs libsvm's one-vs-one scheme (pairwise decision values,
 * votes, optional Platt probabilities coupled by libsvm's iterative method); without, one linear
 * score per class. Labels and score columns follow onnxruntime's rules for the binary case. */
#include "ml_common.h"
#include "string_kernels.h"

enum { K_LINEAR, K_POLY, K_RBF, K_SIGMOID };

typedef struct svm_model {
    int classifier, kernel, pt, one_class;
    float gamma, coef0;
    int degree;
    int64_t C;               /* features */
    int64_t n_sv;            /* support vectors (0: linear mode) */
    const float *sv, *coef, *rho, *prob_a, *prob_b;
    int n_coef, n_rho, n_prob;
    int64_t n_class;
    int64_t *vpc, *start;    /* vectors per class and first vector of each class */
    const int64_t *labels_i;
    char *const *labels_s;
    int n_labels;
    int weights_positive;
} svm_model;

void kiln_ml_svm_fini(void *p) {
    svm_model *m = p;
    if (!m) return;
    free(m->vpc);
    free(m->start);
    free(m);
}

kiln_status kiln_ml_svm_init(kiln_ctx *ctx) {
    const kiln_node *nd = ctx->node;
    svm_model *m = calloc(1, sizeof *m);
    if (!m) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = KILN_OK;
    m->classifier = !strcmp(nd->op_type, "SVMClassifier");
    const char *k = kiln_attr_string(nd, "kernel_type", "LINEAR");
    m->kernel = !strcmp(k, "LINEAR") ? K_LINEAR : !strcmp(k, "POLY") ? K_POLY : !strcmp(k, "RBF") ? K_RBF
              : !strcmp(k, "SIGMOID") ? K_SIGMOID : -1;
    m->pt = ml_post_transform(kiln_attr_string(nd, "post_transform", "NONE"));
    if (m->kernel < 0 || m->pt < 0) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown kernel_type or post_transform");
        goto fail;
    }
    int nkp = 0, nsv = 0;
    const float *kp = kiln_attr_floats(nd, "kernel_params", &nkp);
    if (kp && nkp >= 3) {
        m->gamma = kp[0];
        m->coef0 = kp[1];
        m->degree = (int)kp[2];
    }
    m->coef = kiln_attr_floats(nd, "coefficients", &m->n_coef);
    m->rho = kiln_attr_floats(nd, "rho", &m->n_rho);
    m->sv = kiln_attr_floats(nd, "support_vectors", &nsv);
    if (!m->coef || !m->rho || m->n_rho < 1) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "coefficients and rho are required");
        goto fail;
    }
    if (m->classifier) {
        m->labels_i = kiln_attr_ints(nd, "classlabels_ints", &m->n_labels);
        if (!m->labels_i) m->labels_s = kiln_attr_strings(nd, "classlabels_strings", &m->n_labels);
        m->n_class = m->n_labels > 0 ? m->n_labels : 1;
        int nv = 0, na = 0, nb = 0;
        const int64_t *vpc = kiln_attr_ints(nd, "vectors_per_class", &nv);
        m->prob_a = kiln_attr_floats(nd, "prob_a", &na);
        m->prob_b = kiln_attr_floats(nd, "prob_b", &nb);
        m->n_prob = na;
        if (na != nb) { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "prob_a and prob_b differ in length"); goto fail; }
        m->vpc = calloc((size_t)(m->n_class + 1), sizeof(int64_t));
        m->start = calloc((size_t)(m->n_class + 1), sizeof(int64_t));
        if (!m->vpc || !m->start) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
        if (vpc && nv != m->n_class) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "vectors_per_class has %d entries for %lld classes", nv,
                           (long long)m->n_class);
            goto fail;
        }
        for (int64_t c = 0; c < m->n_class; c++) {
            m->start[c] = m->n_sv;
            m->vpc[c] = vpc ? vpc[c] : 0;
            if (m->vpc[c] < 0) { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "negative vectors_per_class"); goto fail; }
            m->n_sv += m->vpc[c];
        }
        if (m->n_sv > 0) {
            int64_t pairs = m->n_class * (m->n_class - 1) / 2;
            if (m->n_coef != (m->n_class - 1) * m->n_sv || m->n_rho < pairs || (m->n_prob && m->n_prob < pairs)) {
                st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                               "coefficients/rho/prob_* do not fit %lld classes and %lld support vectors",
                               (long long)m->n_class, (long long)m->n_sv);
                goto fail;
            }
        }
    } else {
        m->n_sv = kiln_attr_int(nd, "n_supports", 0);
        m->one_class = kiln_attr_int(nd, "one_class", 0) != 0;
        if (m->n_sv < 0 || (m->n_sv > 0 && m->n_coef != m->n_sv)) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "coefficients must hold one value per support vector");
            goto fail;
        }
    }
    if (m->n_sv > 0) {
        if (!m->sv || nsv % m->n_sv) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "support_vectors does not hold %lld vectors", (long long)m->n_sv);
            goto fail;
        }
        m->C = nsv / m->n_sv;
    } else {
        m->kernel = K_LINEAR; /* no support vectors: a linear model over the coefficients */
        m->C = m->classifier ? m->n_coef / (m->n_class > 0 ? m->n_class : 1) : m->n_coef;
    }
    m->weights_positive = 1;
    for (int i = 0; i < m->n_coef; i++)
        if (m->coef[i] < 0) m->weights_positive = 0;
    ctx->state = m;
    return KILN_OK;
fail:
    kiln_ml_svm_fini(m);
    return st;
}

kiln_status kiln_ml_svm_infer(kiln_ctx *ctx) {
    const svm_model *m = ctx->state;
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!m) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "SVM was not initialised");
    if (!ml_is_feature_type(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s", kiln_dtype_name(x->dtype));
    if (x->rank < 0) {
        if (!m->classifier) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_FLOAT);
        KILN_TRY(kiln_set_output_unknown(ctx, 0, m->labels_s ? KILN_DTYPE_STRING : KILN_DTYPE_INT64));
        return kiln_set_output_unknown(ctx, 1, KILN_DTYPE_FLOAT);
    }
    int64_t N = 0, C = 0;
    KILN_TRY(ml_rows_cols(ctx, x, &N, &C));
    if (C >= 0 && C != m->C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has %lld features, the model %lld", (long long)C,
                         (long long)m->C);
    if (!m->classifier) {
        int64_t d[2] = {N, 1};
        return kiln_set_output(ctx, 0, KILN_DTYPE_FLOAT, 2, d);
    }
    int64_t width;
    if (m->n_sv > 0 && m->n_prob > 0) width = m->n_class;
    else if (m->n_sv > 0) width = m->n_class * (m->n_class - 1) / 2;
    else width = m->n_class;
    if (width == 1 && m->pt != ML_PT_PROBIT && m->n_labels == 2) width = 2;
    int64_t zd[2] = {N, width};
    KILN_TRY(kiln_set_output(ctx, 0, m->labels_s ? KILN_DTYPE_STRING : KILN_DTYPE_INT64, 1, &N));
    return kiln_set_output(ctx, 1, KILN_DTYPE_FLOAT, 2, zd);
}

static float kdot(const svm_model *m, const float *a, const float *b, int kernel) {
    float s = 0.0f;
    if (kernel == K_RBF) {
        for (int64_t i = 0; i < m->C; i++) { float d = a[i] - b[i]; s += d * d; }
        return expf(-m->gamma * s);
    }
    for (int64_t i = 0; i < m->C; i++) s += a[i] * b[i];
    if (kernel == K_POLY) return powf(m->gamma * s + m->coef0, (float)m->degree);
    if (kernel == K_SIGMOID) return tanhf(m->gamma * s + m->coef0);
    return s;
}

/* libsvm's multiclass_probability: pairwise probabilities r -> class probabilities p. */
static void couple(int64_t k, const float *r, float *p, float *Q, float *Qp) {
    int64_t max_iter = k > 100 ? k : 100;
    float eps = 0.005f / (float)k;
    for (int64_t t = 0; t < k; t++) {
        p[t] = 1.0f / (float)k;
        Q[t * k + t] = 0.0f;
        for (int64_t j = 0; j < t; j++) {
            Q[t * k + t] += r[j * k + t] * r[j * k + t];
            Q[t * k + j] = Q[j * k + t];
        }
        for (int64_t j = t + 1; j < k; j++) {
            Q[t * k + t] += r[j * k + t] * r[j * k + t];
            Q[t * k + j] = -r[j * k + t] * r[t * k + j];
        }
    }
    for (int64_t it = 0; it < max_iter; it++) {
        float pQp = 0.0f;
        for (int64_t t = 0; t < k; t++) {
            Qp[t] = 0.0f;
            for (int64_t j = 0; j < k; j++) Qp[t] += Q[t * k + j] * p[j];
            pQp += p[t] * Qp[t];
        }
        float max_error = 0.0f;
        for (int64_t t = 0; t < k; t++) {
            float e = fabsf(Qp[t] - pQp);
            if (e > max_error) max_error = e;
        }
        if (max_error < eps) break;
        for (int64_t t = 0; t < k; t++) {
            float diff = (-Qp[t] + pQp) / Q[t * k + t];
            p[t] += diff;
            pQp = (pQp + diff * (diff * Q[t * k + t] + 2.0f * Qp[t])) / (1.0f + diff) / (1.0f + diff);
            for (int64_t j = 0; j < k; j++) {
                Qp[j] = (Qp[j] + diff * Q[t * k + j]) / (1.0f + diff);
                p[j] /= (1.0f + diff);
            }
        }
    }
}

typedef struct svm_job {
    const svm_model *m;
    const kiln_tensor *x;
    kiln_tensor *y, *z;
    int failed;
} svm_job;

static void svm_rows(void *arg, int64_t begin, int64_t end) {
    svm_job *j = arg;
    const svm_model *m = j->m;
    int64_t k = m->n_class, nsv = m->n_sv, C = m->C;
    int64_t pairs = k * (k - 1) / 2;
    size_t nf = (size_t)(C + nsv + 3 * k + pairs + 2 * k * k + 8);
    float *buf = malloc(sizeof(float) * nf);
    if (!buf) { j->failed = 1; return; }
    float *xr = buf, *kern = xr + C, *votes = kern + nsv, *sc = votes + k, *out = sc + (pairs > k ? pairs : k) + 2;
    float *Q = out + k + 2, *R = Q + k * k;
    for (int64_t r = begin; r < end; r++) {
        for (int64_t i = 0; i < C; i++) xr[i] = ml_feature(j->x, r * C + i);
        if (!m->classifier) {
            float s;
            if (nsv > 0) {
                s = 0.0f;
                for (int64_t v = 0; v < nsv; v++) s += m->coef[v] * kdot(m, xr, m->sv + v * C, m->kernel);
            } else {
                s = kdot(m, xr, m->coef, K_LINEAR);
            }
            s += m->rho[0];
            if (m->one_class) s = s > 0.0f ? 1.0f : -1.0f;
            ((float *)j->y->data)[r] = s;
            continue;
        }
        int64_t nscores, max_class = 0;
        float max_weight;
        int has_votes = nsv > 0;
        if (nsv == 0) {
            for (int64_t c = 0; c < k; c++) sc[c] = m->rho[0] + kdot(m, xr, m->coef + c * C, K_LINEAR);
            nscores = k;
        } else {
            for (int64_t v = 0; v < nsv; v++) kern[v] = kdot(m, xr, m->sv + v * C, m->kernel);
            for (int64_t c = 0; c < k; c++) votes[c] = 0.0f;
            int64_t e = 0;
            for (int64_t a = 0; a < k; a++)
                for (int64_t b = a + 1; b < k; b++, e++) {
                    float s1 = 0.0f, s2 = 0.0f;
                    for (int64_t v = 0; v < m->vpc[a]; v++)
                        s1 += m->coef[(b - 1) * nsv + m->start[a] + v] * kern[m->start[a] + v];
                    for (int64_t v = 0; v < m->vpc[b]; v++)
                        s2 += m->coef[a * nsv + m->start[b] + v] * kern[m->start[b] + v];
                    float s = m->rho[e] + s1 + s2;
                    sc[e] = s;
                    votes[s > 0 ? a : b] += 1.0f;
                }
            nscores = pairs;
        }
        int has_proba = nsv > 0 && m->n_prob > 0;
        if (has_proba) {
            int64_t e = 0;
            for (int64_t a = 0; a < k; a++) {
                R[a * k + a] = 0.0f;
                for (int64_t b = a + 1; b < k; b++, e++) {
                    float v = 1.0f - ml_logistic(sc[e] * m->prob_a[e] + m->prob_b[e]);
                    v = v < 1e-7f ? 1e-7f : (v > 1.0f - 1e-7f ? 1.0f - 1e-7f : v);
                    R[a * k + b] = v;
                    R[b * k + a] = 1.0f - v;
                }
            }
            couple(k, R, sc, Q, out);
            nscores = k;
        }
        if (has_votes) {
            for (int64_t c = 1; c < k; c++)
                if (votes[c] > votes[max_class]) max_class = c;
            max_weight = votes[max_class];
        } else {
            for (int64_t c = 1; c < nscores; c++)
                if (sc[c] > sc[max_class]) max_class = c;
            max_weight = sc[max_class];
        }
        int add = -1;
        int64_t label_pos = max_class;
        if (m->n_rho == 1 && m->n_labels == 2) { /* binary: one decision function */
            add = 2;
            if (!has_votes) label_pos = max_weight > 0 ? 1 : 0; /* linear: positive / negative */
            else if (!has_proba && m->weights_positive && max_weight >= 0.5f) label_pos = 1;
        }
        if (j->y) {
            if (m->labels_s) {
                char *d = kiln_str_dup(label_pos < m->n_labels ? m->labels_s[label_pos] : NULL);
                if (!d) { j->failed = 1; break; }
                kiln_str_free(((char **)j->y->data)[r]);
                ((char **)j->y->data)[r] = d;
            } else {
                ((int64_t *)j->y->data)[r] = m->n_labels > 0 && label_pos < m->n_labels ? m->labels_i[label_pos] : label_pos;
            }
        }
        if (j->z) {
            int64_t nz, w = j->z->dims[1];
            ml_write_scores(m->pt, sc, nscores, add, out, &nz);
            for (int64_t c = 0; c < w; c++) ((float *)j->z->data)[r * w + c] = c < nz ? out[c] : 0.0f;
        }
    }
    free(buf);
}

kiln_status kiln_ml_svm_compute(kiln_ctx *ctx) {
    svm_job j;
    memset(&j, 0, sizeof j);
    j.m = ctx->state;
    j.x = kiln_input(ctx, 0);
    j.y = kiln_output(ctx, 0);
    j.z = j.m->classifier ? kiln_output(ctx, 1) : NULL;
    int64_t N = 0, C = 0;
    KILN_TRY(ml_rows_cols(ctx, j.x, &N, &C));
    if (C != j.m->C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has %lld features, the model %lld", (long long)C,
                         (long long)j.m->C);
    if (!j.m->classifier && !j.y) return KILN_OK;
    if (N > 0) kiln_parallel_for(ctx, N, 16, svm_rows, &j);
    if (j.failed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory while scoring");
    return KILN_OK;
}
