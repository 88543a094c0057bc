/* LabelEncoder (ai.onnx.ml 1, 2 and 4): maps keys to values through a sorted key table.
 * Opset 1 uses classes_strings (string -> its index, index -> string); later opsets pair
 * keys_* with values_* (or keys_tensor / values_tensor), falling back to the default_* value.
 * Numeric keys compare as doubles, with NaN matching NaN. */
#include "ml_common.h"
#include "string_kernels.h"

typedef struct le_state {
    int opset1;
    int key_string;          /* keys are strings (else numbers) */
    int out_dtype;           /* 0 for opset 1: decided by the input type */
    int64_t n;
    char **skeys;            /* borrowed from the attributes */
    double *nkeys;
    int64_t *ikeys;          /* integer keys, exact (NULL for float / string keys) */
    int64_t *order;          /* key positions sorted by key */
    char **svals;            /* borrowed */
    double *nvals;
    int64_t *ivals;          /* integer values, exact */
    char *sdefault;          /* an owned kiln string */
    double ndefault;
    int64_t idefault;
} le_state;

/* qsort has no context argument; per thread, because sessions open concurrently (a shape
 * specialisation child opens on whichever thread ran the shape) */
static _Thread_local const le_state *g_sort_state;

static int key_cmp_num(double a, double b) {
    if (isnan(a) || isnan(b)) return isnan(a) - isnan(b); /* NaN sorts last and equals NaN */
    return (a > b) - (a < b);
}

static int order_cmp(const void *pa, const void *pb) {
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    const le_state *s = g_sort_state;
    int c = s->key_string ? kiln_str_cmp(s->skeys[a], s->skeys[b])
          : s->ikeys ? (s->ikeys[a] > s->ikeys[b]) - (s->ikeys[a] < s->ikeys[b])
                     : key_cmp_num(s->nkeys[a], s->nkeys[b]);
    return c ? c : (a > b) - (a < b); /* equal keys: the first one wins */
}

static int64_t le_find_str(const le_state *s, const char *k) {
    int64_t lo = 0, hi = s->n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        int c = kiln_str_cmp(s->skeys[s->order[mid]], k);
        if (c < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n && kiln_str_eq(s->skeys[s->order[lo]], k) ? s->order[lo] : -1;
}

static int64_t le_find_int(const le_state *s, int64_t k) {
    int64_t lo = 0, hi = s->n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (s->ikeys[s->order[mid]] < k) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n && s->ikeys[s->order[lo]] == k ? s->order[lo] : -1;
}

static int64_t le_find_num(const le_state *s, double k) {
    int64_t lo = 0, hi = s->n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (key_cmp_num(s->nkeys[s->order[mid]], k) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < s->n && key_cmp_num(s->nkeys[s->order[lo]], k) == 0 ? s->order[lo] : -1;
}

void kiln_ml_label_encoder_fini(void *p) {
    le_state *s = p;
    if (!s) return;
    free(s->nkeys);
    free(s->nvals);
    free(s->ikeys);
    free(s->ivals);
    free(s->order);
    free(s->skeys);
    free(s->svals);
    kiln_str_free(s->sdefault);
    free(s);
}

/* Reads a list attribute (floats / ints / strings) or a 1-D tensor attribute into numbers or
 * string pointers; *kind: 1 strings, 2 numbers; returns the count or -1 when absent. */
static int64_t read_list(const kiln_node *nd, const char *fl, const char *in, const char *st, const char *tn,
                         double **nums, int64_t **ints, char ***strs, int *dtype) {
    int n = 0;
    const float *f = kiln_attr_floats(nd, fl, &n);
    if (f) {
        *nums = malloc(sizeof(double) * (size_t)(n + 1));
        if (*nums) for (int i = 0; i < n; i++) (*nums)[i] = f[i];
        *dtype = KILN_DTYPE_FLOAT;
        return n;
    }
    const int64_t *iv = kiln_attr_ints(nd, in, &n);
    if (iv) {
        *nums = malloc(sizeof(double) * (size_t)(n + 1));
        *ints = malloc(sizeof(int64_t) * (size_t)(n + 1));
        if (*nums) for (int i = 0; i < n; i++) (*nums)[i] = (double)iv[i];
        if (*ints) memcpy(*ints, iv, sizeof(int64_t) * (size_t)n);
        *dtype = KILN_DTYPE_INT64;
        return n;
    }
    char *const *sv = kiln_attr_strings(nd, st, &n);
    if (sv) {
        *strs = malloc(sizeof(char *) * (size_t)(n + 1));
        if (*strs) for (int i = 0; i < n; i++) (*strs)[i] = sv[i];
        *dtype = KILN_DTYPE_STRING;
        return n;
    }
    const kiln_tensor *t = tn ? kiln_attr_tensor(nd, tn) : NULL;
    if (t) {
        int64_t m = kiln_numel(t);
        *dtype = t->dtype;
        if (t->dtype == KILN_DTYPE_STRING) {
            *strs = malloc(sizeof(char *) * (size_t)(m + 1));
            if (*strs) for (int64_t i = 0; i < m; i++) (*strs)[i] = (char *)kiln_str_bytes(((char **)t->data)[i]);
        } else {
            *nums = malloc(sizeof(double) * (size_t)(m + 1));
            if (*nums) for (int64_t i = 0; i < m; i++) (*nums)[i] = qe_load_f64(t->dtype, t->data, i);
            if (kiln_dtype_is_integer(t->dtype)) {
                *ints = malloc(sizeof(int64_t) * (size_t)(m + 1));
                if (*ints) for (int64_t i = 0; i < m; i++) (*ints)[i] = kiln_load_i64(t->dtype, t->data, i);
            }
        }
        return m;
    }
    return -1;
}

kiln_status kiln_ml_label_encoder_init(kiln_ctx *ctx) {
    const kiln_node *nd = ctx->node;
    le_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = KILN_OK;
    if (ctx->opset < 2) {
        int n = 0;
        char *const *cls = kiln_attr_strings(nd, "classes_strings", &n);
        s->opset1 = 1;
        s->key_string = 1;
        s->n = n;
        s->skeys = malloc(sizeof(char *) * (size_t)(n + 1));
        s->order = malloc(sizeof(int64_t) * (size_t)(n + 1));
        if (!s->skeys || !s->order) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
        for (int i = 0; i < n; i++) { s->skeys[i] = cls[i]; s->order[i] = i; }
        size_t dl;
        const char *d = kiln_attr_bytes(nd, "default_string", "_Unused", &dl);
        if (!(s->sdefault = kiln_str_new(d, dl))) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
        s->ndefault = (double)kiln_attr_int(nd, "default_int64", -1);
    } else {
        int kt = 0, vt = 0;
        int64_t nk = read_list(nd, "keys_floats", "keys_int64s", "keys_strings", ctx->opset >= 4 ? "keys_tensor" : NULL,
                               &s->nkeys, &s->ikeys, &s->skeys, &kt);
        int64_t nv = read_list(nd, "values_floats", "values_int64s", "values_strings",
                               ctx->opset >= 4 ? "values_tensor" : NULL, &s->nvals, &s->ivals, &s->svals, &vt);
        if (nk < 0 || nv < 0) { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "keys_* and values_* are required"); goto fail; }
        if (nk != nv) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%lld keys but %lld values", (long long)nk, (long long)nv);
            goto fail;
        }
        if ((nk > 0 && !s->nkeys && !s->skeys) || (nv > 0 && !s->nvals && !s->svals) ||
            (kiln_dtype_is_integer(kt) && nk > 0 && !s->ikeys) || (kiln_dtype_is_integer(vt) && nv > 0 && !s->ivals)) {
            st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
            goto fail;
        }
        s->n = nk;
        s->key_string = kt == KILN_DTYPE_STRING;
        s->out_dtype = vt;
        if (!(vt == KILN_DTYPE_STRING || vt == KILN_DTYPE_INT64 || vt == KILN_DTYPE_FLOAT || vt == KILN_DTYPE_DOUBLE ||
              vt == KILN_DTYPE_INT32 || vt == KILN_DTYPE_INT16)) {
            st = KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported value type %d", vt);
            goto fail;
        }
        const kiln_tensor *dt = ctx->opset >= 4 ? kiln_attr_tensor(nd, "default_tensor") : NULL;
        if (dt && kiln_numel(dt) >= 1) {
            if ((dt->dtype == KILN_DTYPE_STRING) != (vt == KILN_DTYPE_STRING)) {
                st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "default_tensor type does not match the values");
                goto fail;
            }
            if (dt->dtype == KILN_DTYPE_STRING) {
                if (!(s->sdefault = kiln_str_dup(((char **)dt->data)[0]))) {
                    st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
                    goto fail;
                }
            } else s->ndefault = qe_load_f64(dt->dtype, dt->data, 0);
            if (kiln_dtype_is_integer(dt->dtype)) s->idefault = kiln_load_i64(dt->dtype, dt->data, 0);
        } else if (vt == KILN_DTYPE_STRING) {
            size_t dl;
            const char *d = kiln_attr_bytes(nd, "default_string", "_Unused", &dl);
            if (!(s->sdefault = kiln_str_new(d, dl))) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
        } else if (vt == KILN_DTYPE_FLOAT || vt == KILN_DTYPE_DOUBLE) {
            s->ndefault = kiln_attr_float(nd, "default_float", -0.0f);
        } else {
            s->idefault = kiln_attr_int(nd, "default_int64", -1);
            s->ndefault = (double)s->idefault;
        }
        s->order = malloc(sizeof(int64_t) * (size_t)(nk + 1));
        if (!s->order) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto fail; }
        for (int64_t i = 0; i < nk; i++) s->order[i] = i;
    }
    g_sort_state = s;
    qsort(s->order, (size_t)s->n, sizeof(int64_t), order_cmp);
    g_sort_state = NULL;
    ctx->state = s;
    return KILN_OK;
fail:
    kiln_ml_label_encoder_fini(s);
    return st;
}

kiln_status kiln_ml_label_encoder_infer(kiln_ctx *ctx) {
    const le_state *s = ctx->state;
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!s) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "LabelEncoder was not initialised");
    int out;
    if (s->opset1) {
        if (x->dtype == KILN_DTYPE_STRING) out = KILN_DTYPE_INT64;
        else if (x->dtype == KILN_DTYPE_INT64) out = KILN_DTYPE_STRING;
        else return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must be string or int64, not %s",
                              kiln_dtype_name(x->dtype));
    } else {
        if ((x->dtype == KILN_DTYPE_STRING) != s->key_string)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input type %s does not match the key type",
                             kiln_dtype_name(x->dtype));
        if (!s->key_string && !(qe_is_float(x->dtype) || kiln_dtype_is_integer(x->dtype)))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported input type %s", kiln_dtype_name(x->dtype));
        out = s->out_dtype;
    }
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, out);
    return kiln_set_output(ctx, 0, out, x->rank, x->dims);
}

kiln_status kiln_ml_label_encoder_compute(kiln_ctx *ctx) {
    const le_state *s = ctx->state;
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t n = kiln_numel(x);
    for (int64_t i = 0; i < n; i++) {
        if (s->opset1) {
            if (x->dtype == KILN_DTYPE_STRING) {
                int64_t k = le_find_str(s, str_at(x, i));
                ((int64_t *)y->data)[i] = k >= 0 ? k : (int64_t)s->ndefault;
            } else {
                int64_t k = ((const int64_t *)x->data)[i];
                char *d = kiln_str_dup(k >= 0 && k < s->n ? s->skeys[k] : s->sdefault);
                if (!d) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
                kiln_str_free(((char **)y->data)[i]);
                ((char **)y->data)[i] = d;
            }
            continue;
        }
        int64_t k;
        if (s->key_string) {
            k = le_find_str(s, str_at(x, i));
        } else if (s->ikeys) { /* integer keys compare exactly; a float input must be integral */
            if (kiln_dtype_is_integer(x->dtype)) {
                k = le_find_int(s, kiln_load_i64(x->dtype, x->data, i));
            } else {
                double v = qe_load_f64(x->dtype, x->data, i);
                k = v == floor(v) && fabs(v) < 9.2e18 ? le_find_int(s, (int64_t)v) : -1;
            }
        } else {
            k = le_find_num(s, qe_load_f64(x->dtype, x->data, i));
        }
        if (y->dtype == KILN_DTYPE_STRING) {
            char *d = kiln_str_dup(k >= 0 ? s->svals[k] : s->sdefault);
            if (!d) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
            kiln_str_free(((char **)y->data)[i]);
            ((char **)y->data)[i] = d;
        } else {
            if (s->ivals && y->dtype == KILN_DTYPE_INT64) {
                ((int64_t *)y->data)[i] = k >= 0 ? s->ivals[k] : s->idefault;
            } else {
                double v = k >= 0 ? s->nvals[k] : s->ndefault;
                qe_store_any(y->dtype, y->data, i, v);
            }
        }
    }
    return KILN_OK;
}
