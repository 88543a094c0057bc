/* CategoryMapper (strings to int64 categories and back through two parallel attribute lists) and
 * FeatureVectorizer (several feature tensors side by side in one float matrix), ai.onnx.ml 1,
 * as onnxruntime computes them. Listed in ml_maps.c's table. */
#include "ml_keys.h"
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- CategoryMapper */

typedef struct category_state {
    ml_keys by_str, by_int;    /* of a category given twice the last pairing wins (onnxruntime
                                  assigns map[key] = value in list order) */
    char *const *strs;         /* borrowed from the attributes */
    const int64_t *ints;
    const char *default_string;
    size_t default_len;
    int64_t default_int;
} category_state;

void kiln_ml_category_fini(void *p) {
    category_state *s = p;
    if (!s) return;
    ml_keys_free(&s->by_str);
    ml_keys_free(&s->by_int);
    free(s);
}

kiln_status kiln_ml_category_init(kiln_ctx *ctx) {
    int ns = 0, ni = 0;
    char *const *strs = kiln_attr_strings(ctx->node, "cats_strings", &ns);
    const int64_t *ints = kiln_attr_ints(ctx->node, "cats_int64s", &ni);
    if (ns != ni)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "cats_strings has %d entries and cats_int64s %d; they pair up",
                         ns, ni);
    category_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    s->strs = strs;
    s->ints = ints;
    s->default_string = kiln_attr_bytes(ctx->node, "default_string", "_Unused", &s->default_len);
    s->default_int = kiln_attr_int(ctx->node, "default_int64", -1);
    if (ml_keys_build(&s->by_str, ns, NULL, strs, 1) || ml_keys_build(&s->by_int, ni, ints, NULL, 1)) {
        kiln_ml_category_fini(s);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    ctx->state = s;
    return KILN_OK;
}

kiln_status kiln_ml_category_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 2, KILN_DTYPE_STRING, KILN_DTYPE_INT64));
    int out = x->dtype == KILN_DTYPE_STRING ? KILN_DTYPE_INT64 : KILN_DTYPE_STRING;
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, out);
    return kiln_set_output(ctx, 0, out, x->rank, x->dims);
}

typedef struct category_job {
    const category_state *s;
    const kiln_tensor *x;
    kiln_tensor *y;
    int failed;
} category_job;

static void category_range(void *arg, int64_t begin, int64_t end) {
    category_job *j = arg;
    const category_state *s = j->s;
    if (j->x->dtype == KILN_DTYPE_STRING) {
        char *const *x = j->x->data;
        int64_t *y = j->y->data;
        for (int64_t i = begin; i < end; i++) {
            int64_t at = ml_keys_find_str(&s->by_str, x[i]);
            y[i] = at >= 0 ? s->ints[at] : s->default_int;
        }
        return;
    }
    const int64_t *x = j->x->data;
    char **y = j->y->data;
    for (int64_t i = begin; i < end; i++) {
        int64_t at = ml_keys_find_int(&s->by_int, x[i]);
        if (!(y[i] = at >= 0 ? kiln_str_dup(s->strs[at]) : kiln_str_new(s->default_string, s->default_len))) j->failed = 1;
    }
}

kiln_status kiln_ml_category_compute(kiln_ctx *ctx) {
    category_job j = {ctx->state, kiln_input(ctx, 0), kiln_output(ctx, 0), 0};
    kiln_parallel_for(ctx, kiln_numel(j.x), 4096, category_range, &j);
    return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory") : KILN_OK;
}

/* ---------------------------------------------------------------- FeatureVectorizer */

/* Rows of input t: its first dimension (1 for a vector); columns: the rest of its elements. */
static void featvec_geometry(const kiln_tensor *t, int64_t *rows, int64_t *cols) {
    *rows = t->rank == 1 ? 1 : t->dims[0];
    *cols = t->rank == 1 ? t->dims[0] : kiln_dims_numel(t->rank - 1, t->dims + 1);
}

static kiln_status featvec_check(kiln_ctx *ctx, int64_t *total) {
    int nd = 0;
    const int64_t *dims = kiln_attr_ints(ctx->node, "inputdimensions", &nd);
    if (nd != ctx->n_in)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "%d inputs but inputdimensions has %d values", ctx->n_in, nd);
    *total = 0;
    for (int i = 0; i < nd; i++) {
        if (dims[i] < 0 || dims[i] > KILN_MAX_NUMEL)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "inputdimensions[%d] is %lld", i, (long long)dims[i]);
        *total += dims[i];
        if (*total > KILN_MAX_NUMEL) return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "inputdimensions add up to too many");
        kiln_tensor *t;
        KILN_TRY(kiln_need_input(ctx, i, &t));
        KILN_TRY(kiln_check_dtype(ctx, t, i, 4, KILN_DTYPE_INT32, KILN_DTYPE_INT64, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE));
        if (t->rank == 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d is a scalar; features come as [N, C] or [C]", i);
    }
    return KILN_OK;
}

kiln_status kiln_ml_featvec_infer(kiln_ctx *ctx) {
    int64_t total = 0;
    KILN_TRY(featvec_check(ctx, &total));
    kiln_tensor *x0 = kiln_input(ctx, 0);
    if (x0->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_FLOAT);
    int64_t n = x0->rank == 1 ? 1 : x0->dims[0];
    /* one row per example in every input (onnxruntime checks the same) */
    for (int i = 1; i < ctx->n_in && n >= 0; i++) {
        kiln_tensor *t = kiln_input(ctx, i);
        int64_t r = t->rank < 0 ? -1 : t->rank == 1 ? 1 : t->dims[0];
        if (r >= 0 && r != n)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d has %lld rows, input 0 has %lld; all inputs "
                             "need the same batch size", i, (long long)r, (long long)n);
    }
    int64_t dims[2] = {n, total};
    return kiln_set_output(ctx, 0, KILN_DTYPE_FLOAT, 2, dims);
}

static float featvec_load(int dtype, const void *p, int64_t i) {
    switch (dtype) {
    case KILN_DTYPE_FLOAT: return ((const float *)p)[i];
    case KILN_DTYPE_DOUBLE: return (float)((const double *)p)[i];
    case KILN_DTYPE_INT32: return (float)((const int32_t *)p)[i];
    default: return (float)((const int64_t *)p)[i];
    }
}

kiln_status kiln_ml_featvec_compute(kiln_ctx *ctx) {
    const int64_t *widths = kiln_attr_ints(ctx->node, "inputdimensions", &(int){0});
    kiln_tensor *y = kiln_output(ctx, 0);
    int64_t total = y->dims[1];
    float *out = y->data;
    memset(out, 0, kiln_tensor_nbytes(y)); /* columns an input does not fill stay 0 */
    int64_t offset = 0;
    for (int i = 0; i < ctx->n_in; i++) {
        kiln_tensor *t = kiln_input(ctx, i);
        int64_t rows, cols;
        featvec_geometry(t, &rows, &cols);
        int64_t take = cols < widths[i] ? cols : widths[i]; /* extra columns are dropped */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t c = 0; c < take; c++) out[r * total + offset + c] = featvec_load(t->dtype, t->data, r * cols + c);
        offset += widths[i];
    }
    return KILN_OK;
}
