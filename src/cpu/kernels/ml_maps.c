/* ai.onnx.ml ops on map values: ZipMap (class scores to one map per row: the last node of every
 * scikit-learn, LightGBM and XGBoost classifier converted at default options), DictVectorizer and
 * CastMap (a map to a tensor). Maps keep their keys sorted (core/map.c), as onnxruntime's std::map
 * does, so a map's order and its lookups follow from that. This file also holds the table of the
 * ml_maps family, CategoryMapper and FeatureVectorizer included (ml_features.c). */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "ml_keys.h"
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ML_DOMAIN "ai.onnx.ml"

/* ---------------------------------------------------------------- sorted keys */

static int keys_cmp(const void *pa, const void *pb, void *arg) {
    const ml_keys *k = arg;
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    int c = k->is_str ? kiln_str_cmp(k->strs[a], k->strs[b]) : (k->ints[a] > k->ints[b]) - (k->ints[a] < k->ints[b]);
    return c ? c : (a > b) - (a < b);
}

static int keys_equal(const ml_keys *k, int64_t a, int64_t b) {
    return k->is_str ? kiln_str_eq(k->strs[a], k->strs[b]) : k->ints[a] == k->ints[b];
}

int ml_keys_build(ml_keys *k, int64_t n, const int64_t *ints, char *const *strs, int keep_last) {
    memset(k, 0, sizeof *k);
    k->is_str = strs != NULL;
    k->ints = ints;
    k->strs = strs;
    k->order = malloc((size_t)(n > 0 ? n : 1) * sizeof *k->order);
    if (!k->order) return -1;
    for (int64_t i = 0; i < n; i++) k->order[i] = i;
    qsort_r(k->order, (size_t)n, sizeof *k->order, keys_cmp, k);
    int64_t m = 0;
    for (int64_t i = 0; i < n; i++) {
        if (m > 0 && keys_equal(k, k->order[m - 1], k->order[i])) {
            if (keep_last) k->order[m - 1] = k->order[i]; /* ties are in list order */
            continue;
        }
        k->order[m++] = k->order[i];
    }
    k->n = m;
    return 0;
}

void ml_keys_free(ml_keys *k) {
    free(k->order);
    k->order = NULL;
}

int64_t ml_keys_find_int(const ml_keys *k, int64_t x) {
    int64_t lo = 0, hi = k->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (k->ints[k->order[mid]] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo < k->n && k->ints[k->order[lo]] == x ? k->order[lo] : -1;
}

int64_t ml_keys_find_str(const ml_keys *k, const char *x) {
    int64_t lo = 0, hi = k->n;
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (kiln_str_cmp(k->strs[k->order[mid]], x) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < k->n && kiln_str_eq(k->strs[k->order[lo]], x) ? k->order[lo] : -1;
}

/* Position of key x in map m (keys sorted), or -1. */
static int64_t map_find_int(const kiln_map *m, int64_t x) {
    const int64_t *k = m->keys.data;
    int64_t lo = 0, hi = m->keys.dims[0];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (k[mid] < x) lo = mid + 1;
        else hi = mid;
    }
    return lo < m->keys.dims[0] && k[lo] == x ? lo : -1;
}

static int64_t map_find_str(const kiln_map *m, const char *x) {
    char *const *k = m->keys.data;
    int64_t lo = 0, hi = m->keys.dims[0];
    while (lo < hi) {
        int64_t mid = lo + (hi - lo) / 2;
        if (kiln_str_cmp(k[mid], x) < 0) lo = mid + 1;
        else hi = mid;
    }
    return lo < m->keys.dims[0] && kiln_str_eq(k[lo], x) ? lo : -1;
}

static const char *type_name(int dtype) { return kiln_dtype_name((kiln_dtype)dtype); }

/* ---------------------------------------------------------------- ZipMap */

typedef struct zipmap_state {
    ml_keys keys;       /* the class labels; of a label given twice the last column wins, as in
                           onnxruntime (each column is assigned to map[label] in turn) */
    int64_t n_labels;   /* columns X must have */
} zipmap_state;

static void zipmap_fini(void *p) {
    zipmap_state *s = p;
    if (!s) return;
    ml_keys_free(&s->keys);
    free(s);
}

static kiln_status zipmap_init(kiln_ctx *ctx) {
    int ns = 0, ni = 0;
    char *const *strs = kiln_attr_strings(ctx->node, "classlabels_strings", &ns);
    const int64_t *ints = kiln_attr_ints(ctx->node, "classlabels_int64s", &ni);
    if ((ns > 0) == (ni > 0))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "ZipMap needs classlabels_strings or classlabels_int64s (one of them, not %s)",
                         ns > 0 ? "both" : "neither");
    zipmap_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    s->n_labels = ns > 0 ? ns : ni;
    if (ml_keys_build(&s->keys, s->n_labels, ns > 0 ? NULL : ints, ns > 0 ? strs : NULL, 1)) {
        free(s);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    ctx->state = s;
    return KILN_OK;
}

static kiln_status zipmap_infer(kiln_ctx *ctx) {
    zipmap_state *s = ctx->state;
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_FLOAT));
    if (x->rank == 0 || x->rank > 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'X' has rank %d, expected 1 or 2", x->rank);
    if (s && x->rank > 0 && x->dims[x->rank - 1] >= 0 && x->dims[x->rank - 1] != s->n_labels)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'X' has %lld columns but there are %lld class labels",
                         (long long)x->dims[x->rank - 1], (long long)s->n_labels);
    return kiln_set_output_map_type(ctx, 0, KILN_KIND_MAP_SEQUENCE,
                                    s && s->keys.is_str ? KILN_DTYPE_STRING : KILN_DTYPE_INT64, KILN_DTYPE_FLOAT);
}

typedef struct zipmap_job {
    const zipmap_state *s;
    const float *x;
    kiln_map *maps;
    int failed;
} zipmap_job;

static void zipmap_rows(void *arg, int64_t begin, int64_t end) {
    zipmap_job *j = arg;
    const ml_keys *k = &j->s->keys;
    int64_t n = k->n, c = j->s->n_labels;
    kiln_err scratch;
    for (int64_t r = begin; r < end; r++) {
        kiln_map *m = &j->maps[r];
        m->keys.dtype = k->is_str ? KILN_DTYPE_STRING : KILN_DTYPE_INT64;
        m->vals.dtype = KILN_DTYPE_FLOAT;
        m->keys.rank = m->vals.rank = 1;
        m->keys.dims[0] = m->vals.dims[0] = n;
        if (kiln_tensor_alloc(&m->keys, &scratch) || kiln_tensor_alloc(&m->vals, &scratch)) {
            j->failed = 1;
            return;
        }
        float *v = m->vals.data;
        const float *row = j->x + r * c;
        for (int64_t i = 0; i < n; i++) v[i] = row[k->order[i]];
        if (!k->is_str) {
            int64_t *kk = m->keys.data;
            for (int64_t i = 0; i < n; i++) kk[i] = k->ints[k->order[i]];
            continue;
        }
        char **kk = m->keys.data;
        for (int64_t i = 0; i < n; i++)
            if (!(kk[i] = kiln_str_dup(k->strs[k->order[i]]))) {
                j->failed = 1; /* the strings made so far go with the map */
                return;
            }
    }
}

static kiln_status zipmap_compute(kiln_ctx *ctx) {
    zipmap_state *s = ctx->state;
    kiln_tensor *x = kiln_input(ctx, 0);
    int64_t rows = x->rank == 1 ? 1 : x->dims[0];
    if (rows > INT32_MAX) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'X' has %lld rows", (long long)rows);
    kiln_map *maps = calloc((size_t)(rows > 0 ? rows : 1), sizeof *maps);
    if (!maps) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    zipmap_job j = {s, x->data, maps, 0};
    /* a row's map takes a few small allocations: rows go to threads in chunks */
    kiln_parallel_for(ctx, rows, s->keys.is_str ? 64 : 256, zipmap_rows, &j);
    int kind_key = s->keys.is_str ? KILN_DTYPE_STRING : KILN_DTYPE_INT64;
    kiln_status st = kiln_set_output_maps(ctx, 0, KILN_KIND_MAP_SEQUENCE, kind_key, KILN_DTYPE_FLOAT, (int)rows, maps);
    if (!st && j.failed) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory making %lld maps", (long long)rows);
    return st;
}

/* ---------------------------------------------------------------- DictVectorizer */

/* The (key, value) types onnxruntime registers: string keys to int64, float or double; int64
 * keys to string, float or double. */
static int dictvec_types_ok(int key, int val) {
    if (key == KILN_DTYPE_STRING) return val == KILN_DTYPE_INT64 || val == KILN_DTYPE_FLOAT || val == KILN_DTYPE_DOUBLE;
    if (key == KILN_DTYPE_INT64) return val == KILN_DTYPE_STRING || val == KILN_DTYPE_FLOAT || val == KILN_DTYPE_DOUBLE;
    return 0;
}

static kiln_status dictvec_vocab(kiln_ctx *ctx, int key, int *n, const int64_t **ints, char *const **strs) {
    *ints = NULL;
    *strs = NULL;
    if (key == KILN_DTYPE_STRING) *strs = kiln_attr_strings(ctx->node, "string_vocabulary", n);
    else *ints = kiln_attr_ints(ctx->node, "int64_vocabulary", n);
    if (!kiln_has_attr(ctx->node, key == KILN_DTYPE_STRING ? "string_vocabulary" : "int64_vocabulary"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "a map with %s keys needs the attribute '%s'", type_name(key),
                         key == KILN_DTYPE_STRING ? "string_vocabulary" : "int64_vocabulary");
    return KILN_OK;
}

static kiln_status dictvec_infer(kiln_ctx *ctx) {
    kiln_value *m;
    KILN_TRY(kiln_need_map_input(ctx, 0, &m));
    if (!dictvec_types_ok(m->map_key_dtype, m->map_val_dtype)) {
        char t[64];
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "input 'X' is a %s; DictVectorizer takes string keys to "
                         "int64, float or double, or int64 keys to string, float or double",
                         kiln_map_type_str(m->kind, m->map_key_dtype, m->map_val_dtype, t, sizeof t));
    }
    int n;
    const int64_t *ints;
    char *const *strs;
    KILN_TRY(dictvec_vocab(ctx, m->map_key_dtype, &n, &ints, &strs));
    int64_t dims[2] = {1, n};
    return kiln_set_output(ctx, 0, m->map_val_dtype, 2, dims);
}

static kiln_status dictvec_compute(kiln_ctx *ctx) {
    const kiln_value *v = ctx->in[0];
    const kiln_map *m = &v->maps[0];
    kiln_tensor *y = kiln_output(ctx, 0);
    int n;
    const int64_t *ints;
    char *const *strs;
    KILN_TRY(dictvec_vocab(ctx, v->map_key_dtype, &n, &ints, &strs));
    int vt = v->map_val_dtype;
    size_t sz = kiln_dtype_size(vt);
    for (int i = 0; i < n; i++) {
        int64_t at = strs ? map_find_str(m, strs[i]) : map_find_int(m, ints[i]);
        if (vt == KILN_DTYPE_STRING) {
            /* a word not in the map reads as "", the default std::string */
            char *s = kiln_str_dup(at >= 0 ? ((char *const *)m->vals.data)[at] : NULL);
            if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
            ((char **)y->data)[i] = s;
        } else if (at >= 0) {
            memcpy((char *)y->data + (size_t)i * sz, (const char *)m->vals.data + (size_t)at * sz, sz);
        } else {
            memset((char *)y->data + (size_t)i * sz, 0, sz);
        }
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- CastMap */

enum { CAST_TO_FLOAT, CAST_TO_STRING, CAST_TO_INT64 };

typedef struct castmap_state {
    int to;          /* CAST_TO_* */
    int sparse;
    int64_t max_map;
} castmap_state;

static kiln_status castmap_init(kiln_ctx *ctx) {
    const char *to = kiln_attr_string(ctx->node, "cast_to", "TO_FLOAT");
    const char *form = kiln_attr_string(ctx->node, "map_form", "DENSE");
    castmap_state s = {0, 0, kiln_attr_int(ctx->node, "max_map", 1)};
    if (!strcmp(to, "TO_FLOAT")) s.to = CAST_TO_FLOAT;
    else if (!strcmp(to, "TO_STRING")) s.to = CAST_TO_STRING;
    else if (!strcmp(to, "TO_INT64")) s.to = CAST_TO_INT64;
    else return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "cast_to is '%s', expected TO_FLOAT, TO_STRING or TO_INT64", to);
    if (!strcmp(form, "SPARSE")) s.sparse = 1;
    else if (strcmp(form, "DENSE"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "map_form is '%s', expected DENSE or SPARSE", form);
    if (s.sparse && (s.max_map <= 0 || s.max_map > KILN_MAX_NUMEL))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "max_map is %lld; a SPARSE map needs it in [1, 2^48]",
                         (long long)s.max_map);
    castmap_state *p = malloc(sizeof *p);
    if (!p) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    *p = s;
    ctx->state = p;
    return KILN_OK;
}

static const int castmap_dtype[] = {KILN_DTYPE_FLOAT, KILN_DTYPE_STRING, KILN_DTYPE_INT64};

static kiln_status castmap_infer(kiln_ctx *ctx) {
    castmap_state *s = ctx->state;
    kiln_value *m;
    KILN_TRY(kiln_need_map_input(ctx, 0, &m));
    if (m->map_key_dtype != KILN_DTYPE_INT64 ||
        (m->map_val_dtype != KILN_DTYPE_FLOAT && m->map_val_dtype != KILN_DTYPE_STRING)) {
        char t[64];
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'X' is a %s; CastMap takes map(int64,tensor(float)) "
                         "or map(int64,tensor(string))",
                         kiln_map_type_str(m->kind, m->map_key_dtype, m->map_val_dtype, t, sizeof t));
    }
    int64_t n = s->sparse ? s->max_map : m->maps ? m->maps[0].keys.dims[0] : KILN_DIM_UNKNOWN;
    int64_t dims[2] = {1, n};
    return kiln_set_output(ctx, 0, castmap_dtype[s->to], 2, dims);
}

/* The conversions onnxruntime makes: std::stof / std::stoll (which fail on text that does not
 * start with a number, or one out of range), std::to_string ("%f"), static_cast. */
static kiln_status cast_elem(kiln_ctx *ctx, int to, int from, const void *src, int64_t i, void *dst, int64_t j) {
    if (from == KILN_DTYPE_STRING) {
        const char *str = kiln_str_bytes(((char *const *)src)[i]);
        char *end;
        errno = 0;
        if (to == CAST_TO_STRING) {
            char *d = kiln_str_dup(str);
            if (!d) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
            ((char **)dst)[j] = d;
        } else if (to == CAST_TO_FLOAT) {
            float f = strtof(str, &end);
            if (end == str || errno == ERANGE)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "map value '%s' is not a float", str);
            ((float *)dst)[j] = f;
        } else {
            long long v = strtoll(str, &end, 10);
            if (end == str || errno == ERANGE)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "map value '%s' is not an int64", str);
            ((int64_t *)dst)[j] = v;
        }
        return KILN_OK;
    }
    float f = ((const float *)src)[i];
    if (to == CAST_TO_FLOAT) {
        ((float *)dst)[j] = f;
    } else if (to == CAST_TO_INT64) {
        /* out of range (and NaN) give INT64_MIN, as the x86 conversion does */
        ((int64_t *)dst)[j] = isnan(f) || f >= 9.2233720368547758e18f || f < -9.2233720368547758e18f ? INT64_MIN : (int64_t)f;
    } else {
        char buf[64], *d;
        int len = snprintf(buf, sizeof buf, "%f", (double)f);
        if (len < 0) len = 0;
        if (len < (int)sizeof buf) d = kiln_str_new(buf, (size_t)len);
        else if ((d = kiln_str_alloc((size_t)len))) snprintf(d, (size_t)len + 1, "%f", (double)f);
        if (!d) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        ((char **)dst)[j] = d;
    }
    return KILN_OK;
}

static kiln_status castmap_pad(kiln_ctx *ctx, int to, void *dst, int64_t j) {
    if (to == CAST_TO_STRING) {
        char *d = kiln_str_new("0.f", 3); /* onnxruntime's pad text */
        if (!d) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        ((char **)dst)[j] = d;
    } else if (to == CAST_TO_FLOAT) {
        ((float *)dst)[j] = 0.0f;
    } else {
        ((int64_t *)dst)[j] = 0;
    }
    return KILN_OK;
}

static kiln_status castmap_compute(kiln_ctx *ctx) {
    castmap_state *s = ctx->state;
    const kiln_value *v = ctx->in[0];
    const kiln_map *m = &v->maps[0];
    kiln_tensor *y = kiln_output(ctx, 0);
    int64_t n = m->keys.dims[0];
    const int64_t *keys = m->keys.data;
    if (!s->sparse) {
        for (int64_t i = 0; i < n; i++) KILN_TRY(cast_elem(ctx, s->to, v->map_val_dtype, m->vals.data, i, y->data, i));
        return KILN_OK;
    }
    if (n > 0 && keys[0] < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "map key %lld is negative; a SPARSE map takes keys in [0, max_map)",
                         (long long)keys[0]);
    int64_t at = 0; /* keys are sorted: one pass; keys from max_map on are left out */
    for (int64_t j = 0; j < s->max_map; j++) {
        if (at < n && keys[at] == j) KILN_TRY(cast_elem(ctx, s->to, v->map_val_dtype, m->vals.data, at++, y->data, j));
        else KILN_TRY(castmap_pad(ctx, s->to, y->data, j));
    }
    return KILN_OK;
}

const kiln_op kiln_ops_ml_maps[] = {
    {ML_DOMAIN, "ZipMap", 1, 0, zipmap_init, zipmap_infer, zipmap_compute, zipmap_fini},
    {ML_DOMAIN, "DictVectorizer", 1, 0, NULL, dictvec_infer, dictvec_compute, NULL},
    {ML_DOMAIN, "CastMap", 1, 0, castmap_init, castmap_infer, castmap_compute, free},
    {ML_DOMAIN, "CategoryMapper", 1, 0, kiln_ml_category_init, kiln_ml_category_infer, kiln_ml_category_compute,
     kiln_ml_category_fini},
    {ML_DOMAIN, "FeatureVectorizer", 1, 0, NULL, kiln_ml_featvec_infer, kiln_ml_featvec_compute, NULL},
    {0},
};
