/* The "shape" family: ops that make values from shapes or attributes rather than move data:
 * Shape, Size, ConstantOfShape, Constant, Range.
 *
 * Shape and Size (and small Constants) also fill their output during static inference when the
 * answer is already known, so that constant folding can see through Shape -> Gather -> Concat ->
 * Reshape chains before any input is fed. */
#include "cpu/kernels/tensor_common.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Constants up to this many elements are materialised during static inference. */
#define STATIC_FILL_MAX 65536

/* In static mode: gives output i its own buffer (the runtime allocates only at run time). */
static kiln_tensor *static_buffer(kiln_ctx *ctx, int i) {
    kiln_tensor *y = kiln_output(ctx, i);
    if (!y || y->data) return y && y->data ? y : NULL;
    if (kiln_tensor_alloc(y, ctx->err) != KILN_OK) return NULL;
    return y;
}

/* ---- Shape ---- */

static void shape_range(kiln_ctx *ctx, int r, int64_t *start, int64_t *end) {
    *start = 0;
    *end = r;
    if (ctx->opset < 15) return;
    int64_t s = kiln_attr_int(ctx->node, "start", 0);
    int64_t e = kiln_has_attr(ctx->node, "end") ? kiln_attr_int(ctx->node, "end", r) : r;
    if (s < 0) s += r;
    if (e < 0) e += r;
    *start = s < 0 ? 0 : (s > r ? r : s);
    *end = e < 0 ? 0 : (e > r ? r : e);
    if (*end < *start) *end = *start;
}

static kiln_status shape_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (x->rank < 0) {
        int64_t unk = KILN_DIM_UNKNOWN;
        return kiln_set_output(ctx, 0, KILN_DTYPE_INT64, 1, &unk);
    }
    int64_t s, e;
    shape_range(ctx, x->rank, &s, &e);
    int64_t len = e - s;
    KILN_TRY(kiln_set_output(ctx, 0, KILN_DTYPE_INT64, 1, &len));
    if (!ctx->static_mode) return KILN_OK;
    for (int64_t i = s; i < e; i++)
        if (x->dims[i] < 0) return KILN_OK;
    kiln_tensor *y = static_buffer(ctx, 0);
    if (y) memcpy(y->data, x->dims + s, (size_t)len * sizeof(int64_t));
    return KILN_OK;
}

static kiln_status shape_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    int64_t s, e;
    shape_range(ctx, x->rank, &s, &e);
    if (e > s) memcpy(y->data, x->dims + s, (size_t)(e - s) * sizeof(int64_t));
    return KILN_OK;
}

/* ---- Size ---- */

static kiln_status size_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_set_output(ctx, 0, KILN_DTYPE_INT64, 0, NULL));
    int64_t n = kiln_numel(x);
    if (ctx->static_mode && n >= 0) {
        kiln_tensor *y = static_buffer(ctx, 0);
        if (y) *(int64_t *)y->data = n;
    }
    return KILN_OK;
}

static kiln_status size_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (y) *(int64_t *)y->data = kiln_numel(x);
    return KILN_OK;
}

/* ---- ConstantOfShape ---- */

static kiln_status cos_value(kiln_ctx *ctx, int *dtype, const void **value) {
    static const float zero = 0.0f;
    const kiln_tensor *v = kiln_has_attr(ctx->node, "value") ? kiln_attr_tensor(ctx->node, "value") : NULL;
    if (!v) {
        *dtype = KILN_DTYPE_FLOAT;
        *value = &zero;
        return KILN_OK;
    }
    if (kiln_numel(v) != 1 || !v->data)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute 'value' must hold exactly one element");
    if (!kiln_tk_elem_size(v->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "value type %s is not supported",
                         kiln_dtype_name((kiln_dtype)v->dtype));
    *dtype = v->dtype;
    *value = v->data;
    return KILN_OK;
}

static kiln_status cos_infer(kiln_ctx *ctx) {
    kiln_tensor *st;
    int dt;
    const void *value;
    KILN_TRY(cos_value(ctx, &dt, &value));
    KILN_TRY(kiln_need_input(ctx, 0, &st));
    if (st->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must be int64, got %s",
                         kiln_dtype_name((kiln_dtype)st->dtype));
    if (st->rank > 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must be 1-D, got rank %d", st->rank);
    int64_t dims[KILN_MAX_RANK];
    int n;
    if (!kiln_tk_has_values(ctx, st)) {
        if (st->rank != 1 || st->dims[0] < 0 || st->dims[0] > KILN_MAX_RANK)
            return kiln_set_output_unknown(ctx, 0, dt);
        for (int i = 0; i < st->dims[0]; i++) dims[i] = KILN_DIM_UNKNOWN;
        return kiln_set_output(ctx, 0, dt, (int)st->dims[0], dims);
    }
    KILN_TRY(kiln_tk_read_ints(ctx, st, "input 'shape'", dims, KILN_MAX_RANK, &n));
    for (int i = 0; i < n; i++)
        if (dims[i] < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "shape[%d] = %lld is negative", i, (long long)dims[i]);
    return kiln_set_output(ctx, 0, dt, n, dims);
}

static kiln_status cos_compute(kiln_ctx *ctx) {
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int dt;
    const void *value;
    KILN_TRY(cos_value(ctx, &dt, &value));
    kiln_tk_fill(y->data, kiln_numel(y), value, kiln_tk_elem_size(dt));
    if (dt == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

/* ---- Constant ---- */

typedef struct {
    kiln_tensor t; /* the value; data borrowed from the attribute or owned (list attributes) */
} constant_state;

static kiln_status constant_init(kiln_ctx *ctx) {
    static const char *const names[] = {"value", "sparse_value", "value_float", "value_floats",
                                        "value_int", "value_ints", "value_string",
                                        "value_strings"};
    const char *which = NULL;
    int count = 0;
    for (size_t i = 0; i < sizeof names / sizeof *names; i++) {
        if (kiln_has_attr(ctx->node, names[i])) {
            which = names[i];
            count++;
        }
    }
    if (count != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "exactly one value attribute must be set, found %d", count);
    constant_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_tensor *t = &s->t;
    kiln_status st = KILN_OK;
    int n = 0;
    if (!strcmp(which, "value") || !strcmp(which, "sparse_value")) {
        const kiln_tensor *a = kiln_attr_tensor(ctx->node, which);
        if (!a || a->rank < 0 || (kiln_numel(a) > 0 && !a->data)) {
            st = KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "attribute '%s' could not be read", which);
        } else {
            *t = *a;
            t->owner = NULL;
        }
    } else if (!strcmp(which, "value_float")) {
        kiln_tensor_set_shape(t, KILN_DTYPE_FLOAT, 0, NULL);
        if ((st = kiln_tensor_alloc(t, ctx->err)) == KILN_OK) *(float *)t->data = kiln_attr_float(ctx->node, which, 0);
    } else if (!strcmp(which, "value_int")) {
        kiln_tensor_set_shape(t, KILN_DTYPE_INT64, 0, NULL);
        if ((st = kiln_tensor_alloc(t, ctx->err)) == KILN_OK) *(int64_t *)t->data = kiln_attr_int(ctx->node, which, 0);
    } else if (!strcmp(which, "value_floats")) {
        const float *v = kiln_attr_floats(ctx->node, which, &n);
        int64_t d = n;
        kiln_tensor_set_shape(t, KILN_DTYPE_FLOAT, 1, &d);
        if ((st = kiln_tensor_alloc(t, ctx->err)) == KILN_OK && n) memcpy(t->data, v, (size_t)n * sizeof *v);
    } else if (!strcmp(which, "value_ints")) {
        const int64_t *v = kiln_attr_ints(ctx->node, which, &n);
        int64_t d = n;
        kiln_tensor_set_shape(t, KILN_DTYPE_INT64, 1, &d);
        if ((st = kiln_tensor_alloc(t, ctx->err)) == KILN_OK && n) memcpy(t->data, v, (size_t)n * sizeof *v);
    } else if (!strcmp(which, "value_string")) {
        size_t len;
        const char *v = kiln_attr_bytes(ctx->node, which, "", &len);
        kiln_tensor_set_shape(t, KILN_DTYPE_STRING, 0, NULL);
        if ((st = kiln_tensor_alloc(t, ctx->err)) == KILN_OK && !(*(char **)t->data = kiln_str_new(v, len)))
            st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    } else {
        char *const *v = kiln_attr_strings(ctx->node, which, &n);
        int64_t d = n;
        kiln_tensor_set_shape(t, KILN_DTYPE_STRING, 1, &d);
        kiln_tensor src = *t;
        src.data = (void *)v;
        st = kiln_tensor_copy(t, &src, ctx->err);
    }
    if (st != KILN_OK) {
        kiln_tensor_release(t);
        free(s);
        return st;
    }
    ctx->state = s;
    return KILN_OK;
}

static void constant_fini(void *state) {
    constant_state *s = state;
    if (!s) return;
    kiln_tensor_release(&s->t);
    free(s);
}

static kiln_status constant_fill(kiln_ctx *ctx, kiln_tensor *y, const kiln_tensor *t) {
    int64_t n = kiln_numel(t);
    if (n <= 0) return KILN_OK;
    if (t->dtype == KILN_DTYPE_STRING) {
        memcpy(y->data, t->data, (size_t)n * sizeof(char *));
        return kiln_tk_own_strings(ctx, y);
    }
    memcpy(y->data, t->data, kiln_tk_data_bytes(t->dtype, n));
    return KILN_OK;
}

/* The parsed value: the one init made, or (when infer runs before init) a temporary that
 * constant_done frees again. */
static kiln_status constant_get(kiln_ctx *ctx, const constant_state **s) {
    if (ctx->state) {
        *s = ctx->state;
        return KILN_OK;
    }
    KILN_TRY(constant_init(ctx));
    *s = ctx->state;
    ctx->state = NULL;
    return KILN_OK;
}

static kiln_status constant_done(kiln_ctx *ctx, const constant_state *s, kiln_status st) {
    if (s != ctx->state) constant_fini((void *)s);
    return st;
}

static kiln_status constant_infer(kiln_ctx *ctx) {
    const constant_state *s;
    KILN_TRY(constant_get(ctx, &s));
    kiln_status st = kiln_set_output(ctx, 0, s->t.dtype, s->t.rank, s->t.dims);
    if (st == KILN_OK && ctx->static_mode && kiln_numel(&s->t) <= STATIC_FILL_MAX) {
        kiln_tensor *y = static_buffer(ctx, 0);
        if (y) st = constant_fill(ctx, y, &s->t);
    }
    return constant_done(ctx, s, st);
}

static kiln_status constant_compute(kiln_ctx *ctx) {
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    const constant_state *s;
    KILN_TRY(constant_get(ctx, &s));
    return constant_done(ctx, s, constant_fill(ctx, y, &s->t));
}

/* ---- Range ---- */

static int range_type_ok(int dt) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: case KILN_DTYPE_DOUBLE: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16:
    case KILN_DTYPE_INT8: case KILN_DTYPE_INT16: case KILN_DTYPE_INT32: case KILN_DTYPE_INT64:
    case KILN_DTYPE_UINT8: case KILN_DTYPE_UINT16: case KILN_DTYPE_UINT32: case KILN_DTYPE_UINT64:
        return 1;
    default:
        return 0;
    }
}

/* Element count, exactly for integers and as ceil((limit - start) / delta) for floats, with the
 * difference taken in the element type (float stays float) as the reference does. */
static kiln_status range_count(kiln_ctx *ctx, const kiln_tensor *const *in, int64_t *count) {
    int dt = in[0]->dtype;
    if (kiln_dtype_is_integer(dt)) {
        int64_t s, l, d;
        KILN_TRY(kiln_tk_read_scalar_i64(ctx, in[0], "start", &s));
        KILN_TRY(kiln_tk_read_scalar_i64(ctx, in[1], "limit", &l));
        KILN_TRY(kiln_tk_read_scalar_i64(ctx, in[2], "delta", &d));
        if (d == 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "delta is 0");
        uint64_t n = 0;
        if (d > 0 && l > s) n = ((uint64_t)l - (uint64_t)s - 1) / (uint64_t)d + 1;
        if (d < 0 && s > l) n = ((uint64_t)s - (uint64_t)l - 1) / (0 - (uint64_t)d) + 1;
        if (n > ((uint64_t)1 << 40))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Range would have %llu elements", (unsigned long long)n);
        *count = (int64_t)n;
        return KILN_OK;
    }
    double s, l, d, diff;
    KILN_TRY(kiln_tk_read_scalar_f64(ctx, in[0], "start", &s));
    KILN_TRY(kiln_tk_read_scalar_f64(ctx, in[1], "limit", &l));
    KILN_TRY(kiln_tk_read_scalar_f64(ctx, in[2], "delta", &d));
    if (d == 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "delta is 0");
    diff = dt == KILN_DTYPE_DOUBLE ? l - s : (double)((float)l - (float)s);
    double n = ceil(diff / d);
    if (!(n < 1099511627776.0))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Range would have %g elements", n);
    *count = n > 0 ? (int64_t)n : 0;
    return KILN_OK;
}

static kiln_status range_inputs(kiln_ctx *ctx, kiln_tensor **in) {
    for (int i = 0; i < 3; i++) {
        KILN_TRY(kiln_need_input(ctx, i, &in[i]));
        if (in[i]->dtype != in[0]->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d is %s but input 0 is %s", i,
                             kiln_dtype_name((kiln_dtype)in[i]->dtype), kiln_dtype_name((kiln_dtype)in[0]->dtype));
        if (in[i]->rank > 1 || (in[i]->rank == 1 && in[i]->dims[0] >= 0 && in[i]->dims[0] != 1))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d must be a scalar", i);
    }
    if (!range_type_ok(in[0]->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported element type %s",
                         kiln_dtype_name((kiln_dtype)in[0]->dtype));
    return KILN_OK;
}

static kiln_status range_infer(kiln_ctx *ctx) {
    kiln_tensor *in[3];
    KILN_TRY(range_inputs(ctx, in));
    int64_t n = KILN_DIM_UNKNOWN;
    if (kiln_tk_has_values(ctx, in[0]) && kiln_tk_has_values(ctx, in[1]) && kiln_tk_has_values(ctx, in[2]))
        KILN_TRY(range_count(ctx, (const kiln_tensor *const *)in, &n));
    return kiln_set_output(ctx, 0, in[0]->dtype, 1, &n);
}

static kiln_status range_compute(kiln_ctx *ctx) {
    kiln_tensor *in[3], *y = kiln_output(ctx, 0);
    KILN_TRY(range_inputs(ctx, in));
    if (!y) return KILN_OK;
    int64_t n;
    KILN_TRY(range_count(ctx, (const kiln_tensor *const *)in, &n));
    if (kiln_numel(y) != n) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output has the wrong size");
    int dt = in[0]->dtype;
    if (kiln_dtype_is_integer(dt)) {
        int64_t s, d;
        KILN_TRY(kiln_tk_read_scalar_i64(ctx, in[0], "start", &s));
        KILN_TRY(kiln_tk_read_scalar_i64(ctx, in[2], "delta", &d));
        for (int64_t i = 0; i < n; i++) {
            int64_t v = (int64_t)((uint64_t)s + (uint64_t)i * (uint64_t)d);
            switch (dt) {
            case KILN_DTYPE_INT8: case KILN_DTYPE_UINT8: ((uint8_t *)y->data)[i] = (uint8_t)v; break;
            case KILN_DTYPE_INT16: case KILN_DTYPE_UINT16: ((uint16_t *)y->data)[i] = (uint16_t)v; break;
            case KILN_DTYPE_INT32: case KILN_DTYPE_UINT32: ((uint32_t *)y->data)[i] = (uint32_t)v; break;
            default: ((int64_t *)y->data)[i] = v; break;
            }
        }
        return KILN_OK;
    }
    double s, d;
    KILN_TRY(kiln_tk_read_scalar_f64(ctx, in[0], "start", &s));
    KILN_TRY(kiln_tk_read_scalar_f64(ctx, in[2], "delta", &d));
    /* accumulate in the element type, as the spec's loop (and onnxruntime) do */
    if (dt == KILN_DTYPE_DOUBLE) {
        double v = s, *o = y->data;
        for (int64_t i = 0; i < n; i++, v += d) o[i] = v;
    } else if (dt == KILN_DTYPE_FLOAT) {
        float v = (float)s, fd = (float)d, *o = y->data;
        for (int64_t i = 0; i < n; i++, v += fd) o[i] = v;
    } else {
        float v = (float)s, fd = (float)d;
        for (int64_t i = 0; i < n; i++) {
            kiln_store_f64(dt, y->data, i, v);
            v = (float)kiln_load_f64(dt, y->data, i) + fd;
        }
    }
    return KILN_OK;
}

const kiln_op kiln_ops_shape[] = {
    {"", "Shape", 1, KILN_OP_SHAPE_ONLY, NULL, shape_infer, shape_compute, NULL},
    {"", "Size", 1, KILN_OP_SHAPE_ONLY, NULL, size_infer, size_compute, NULL},
    {"", "ConstantOfShape", 9, 0, NULL, cos_infer, cos_compute, NULL},
    {"", "Constant", 1, 0, constant_init, constant_infer, constant_compute, constant_fini},
    {"", "Range", 11, 0, NULL, range_infer, range_compute, NULL},
    {0},
};
