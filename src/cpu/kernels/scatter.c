/* The "scatter" family: Scatter (opset 9-10), ScatterElements, ScatterND (with reductions
 * none/add/mul from 16 and max/min from 18) and TensorScatter (24, KV-cache writes).
 *
 * The output starts as a copy of data; updates are then applied in index order, serially: with
 * duplicate indices the result depends on that order (the last write wins for "none"), which is
 * what the reference implementations do. All indices are checked before anything is written. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cpu/kernels/tensor_common.h"
#include <stdlib.h>
#include <string.h>

enum { RED_NONE, RED_ADD, RED_MUL, RED_MAX, RED_MIN };

static kiln_status reduction_mode(kiln_ctx *ctx, int *red) {
    *red = RED_NONE;
    if (ctx->opset < 16) return KILN_OK;
    const char *s = kiln_attr_string(ctx->node, "reduction", "none");
    if (!strcmp(s, "none")) *red = RED_NONE;
    else if (!strcmp(s, "add")) *red = RED_ADD;
    else if (!strcmp(s, "mul")) *red = RED_MUL;
    else if (!strcmp(s, "max") && ctx->opset >= 18) *red = RED_MAX;
    else if (!strcmp(s, "min") && ctx->opset >= 18) *red = RED_MIN;
    else return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported reduction '%s'", s);
    return KILN_OK;
}

static int reducible(int dt) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: case KILN_DTYPE_DOUBLE: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16:
    case KILN_DTYPE_INT8: case KILN_DTYPE_INT16: case KILN_DTYPE_INT32: case KILN_DTYPE_INT64:
    case KILN_DTYPE_UINT8: case KILN_DTYPE_UINT16: case KILN_DTYPE_UINT32: case KILN_DTYPE_UINT64:
    case KILN_DTYPE_BOOL:
        return 1;
    default:
        return 0;
    }
}

#define RED_APPLY(T)                                                                                \
    do {                                                                                            \
        T *d_ = (T *)dst;                                                                           \
        const T *s_ = (const T *)src;                                                               \
        for (int64_t i = 0; i < n; i++) {                                                           \
            T a = d_[i], b = s_[i];                                                                 \
            switch (red) {                                                                          \
            case RED_ADD: d_[i] = (T)(a + b); break;                                                \
            case RED_MUL: d_[i] = (T)(a * b); break;                                                \
            case RED_MAX: d_[i] = a > b ? a : b; break;                                             \
            default: d_[i] = a < b ? a : b; break;                                                  \
            }                                                                                       \
        }                                                                                           \
    } while (0)

/* unsigned arithmetic for integers: wrap-around instead of signed-overflow UB */
#define RED_APPLY_INT(T, U)                                                                         \
    do {                                                                                            \
        T *d_ = (T *)dst;                                                                           \
        const T *s_ = (const T *)src;                                                               \
        for (int64_t i = 0; i < n; i++) {                                                           \
            T a = d_[i], b = s_[i];                                                                 \
            switch (red) {                                                                          \
            case RED_ADD: d_[i] = (T)((U)a + (U)b); break;                                          \
            case RED_MUL: d_[i] = (T)((U)a * (U)b); break;                                          \
            case RED_MAX: d_[i] = a > b ? a : b; break;                                             \
            default: d_[i] = a < b ? a : b; break;                                                  \
            }                                                                                       \
        }                                                                                           \
    } while (0)

/* dst[0..n) = dst (red) src, or a plain copy for RED_NONE */
static void apply_run(int dt, int red, void *dst, const void *src, int64_t n, size_t elem) {
    if (red == RED_NONE) {
        if (n == 1) kiln_tk_move_elem(dst, src, elem);
        else memcpy(dst, src, (size_t)n * elem);
        return;
    }
    switch (dt) {
    case KILN_DTYPE_FLOAT: RED_APPLY(float); break;
    case KILN_DTYPE_DOUBLE: RED_APPLY(double); break;
    case KILN_DTYPE_INT8: RED_APPLY_INT(int8_t, uint8_t); break;
    case KILN_DTYPE_INT16: RED_APPLY_INT(int16_t, uint16_t); break;
    case KILN_DTYPE_INT32: RED_APPLY_INT(int32_t, uint32_t); break;
    case KILN_DTYPE_INT64: RED_APPLY_INT(int64_t, uint64_t); break;
    case KILN_DTYPE_UINT8: RED_APPLY_INT(uint8_t, unsigned); break;
    case KILN_DTYPE_UINT16: RED_APPLY_INT(uint16_t, unsigned); break;
    case KILN_DTYPE_UINT32: RED_APPLY_INT(uint32_t, uint32_t); break;
    case KILN_DTYPE_UINT64: RED_APPLY_INT(uint64_t, uint64_t); break;
    case KILN_DTYPE_BOOL: { /* add/max = or, mul/min = and */
        uint8_t *d = dst;
        const uint8_t *s = src;
        for (int64_t i = 0; i < n; i++)
            d[i] = (red == RED_ADD || red == RED_MAX) ? (d[i] || s[i]) : (d[i] && s[i]);
        break;
    }
    default: { /* float16 / bfloat16: reduce in float, round once */
        uint16_t *d = dst;
        const uint16_t *s = src;
        int bf = dt == KILN_DTYPE_BFLOAT16;
        for (int64_t i = 0; i < n; i++) {
            float a = bf ? kiln_bf16_to_f32(d[i]) : kiln_f16_to_f32(d[i]);
            float b = bf ? kiln_bf16_to_f32(s[i]) : kiln_f16_to_f32(s[i]);
            float r = red == RED_ADD ? a + b : red == RED_MUL ? a * b : red == RED_MAX ? (a > b ? a : b) : (a < b ? a : b);
            d[i] = bf ? kiln_f32_to_bf16(r) : kiln_f32_to_f16(r);
        }
    }
    }
}

static kiln_status scatter_common_inputs(kiln_ctx *ctx, kiln_tensor **x, kiln_tensor **ind, kiln_tensor **upd,
                                         int int64_only, int *red) {
    KILN_TRY(kiln_need_input(ctx, 0, x));
    KILN_TRY(kiln_need_input(ctx, 1, ind));
    KILN_TRY(kiln_need_input(ctx, 2, upd));
    int it = (*ind)->dtype;
    if (it != KILN_DTYPE_INT64 && (int64_only || it != KILN_DTYPE_INT32))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices must be %s, got %s",
                         int64_only ? "int64" : "int32 or int64", kiln_dtype_name((kiln_dtype)it));
    if ((*upd)->dtype != (*x)->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "updates are %s but data is %s",
                         kiln_dtype_name((kiln_dtype)(*upd)->dtype), kiln_dtype_name((kiln_dtype)(*x)->dtype));
    KILN_TRY(reduction_mode(ctx, red));
    if (*red != RED_NONE && !reducible((*x)->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "reduction is not supported for %s",
                         kiln_dtype_name((kiln_dtype)(*x)->dtype));
    return KILN_OK;
}

/* Overwrites n owned strings at dst with copies of those at src. */
static kiln_status replace_strings(kiln_ctx *ctx, char *dst, const char *src, int64_t n) {
    for (int64_t e = 0; e < n; e++) {
        char *s, *old;
        memcpy(&s, src + e * sizeof(char *), sizeof s);
        char *c = kiln_str_dup(s);
        if (!c) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory copying strings");
        memcpy(&old, dst + e * sizeof(char *), sizeof old);
        kiln_str_free(old);
        memcpy(dst + e * sizeof(char *), &c, sizeof c);
    }
    return KILN_OK;
}

/* output = data (strings duplicated), unless the runtime already made them share */
static kiln_status start_from_data(kiln_ctx *ctx, kiln_tensor *y, const kiln_tensor *x) {
    return kiln_tk_copy_all(ctx, y, x);
}

/* ---- Scatter / ScatterElements ---- */

static kiln_status scatter_elements_check(kiln_ctx *ctx, kiln_tensor **x, kiln_tensor **ind, kiln_tensor **upd,
                                          int *red, int *axis) {
    KILN_TRY(scatter_common_inputs(ctx, x, ind, upd, 0, red));
    *axis = -1;
    if ((*x)->rank < 0 || (*ind)->rank < 0) return KILN_OK;
    if ((*x)->rank < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "data must have rank >= 1");
    if ((*ind)->rank != (*x)->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices have rank %d but data has rank %d", (*ind)->rank,
                         (*x)->rank);
    if ((*upd)->rank >= 0) {
        if ((*upd)->rank != (*ind)->rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "updates have rank %d but indices have rank %d",
                             (*upd)->rank, (*ind)->rank);
        for (int i = 0; i < (*ind)->rank; i++)
            if (kiln_tk_dims_conflict((*upd)->dims[i], (*ind)->dims[i]))
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "updates and indices differ at dim %d (%lld vs %lld)",
                                 i, (long long)(*upd)->dims[i], (long long)(*ind)->dims[i]);
    }
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), (*x)->rank, "axis", axis));
    for (int i = 0; i < (*x)->rank; i++) {
        int64_t a = (*ind)->dims[i], b = (*x)->dims[i];
        if (i != *axis && a >= 0 && b >= 0 && a > b)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices dim %d (%lld) exceeds the data dim (%lld)", i,
                             (long long)a, (long long)b);
    }
    return KILN_OK;
}

static kiln_status scatter_elements_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *upd;
    int red, axis;
    KILN_TRY(scatter_elements_check(ctx, &x, &ind, &upd, &red, &axis));
    return kiln_set_output_like(ctx, 0, x);
}

static kiln_status scatter_elements_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *upd, *y = kiln_output(ctx, 0);
    int red, axis;
    KILN_TRY(scatter_elements_check(ctx, &x, &ind, &upd, &red, &axis));
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    int64_t n = kiln_numel(ind), dim = x->dims[axis];
    if (kiln_numel(upd) != n) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "updates and indices differ in size");
    for (int64_t j = 0; j < n; j++) {
        int64_t v = kiln_tk_index_at(ind->dtype, ind->data, j);
        if (v < -dim || v >= dim)
            return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "index %lld (at position %lld) is out of range [-%lld, %lld]",
                             (long long)v, (long long)j, (long long)dim, (long long)dim - 1);
    }
    KILN_TRY(start_from_data(ctx, y, x));
    if (n == 0) return KILN_OK;
    int r = x->rank;
    int64_t xstr[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0};
    kiln_strides(r, x->dims, xstr);
    char *d = y->data;
    const char *u = upd->data;
    for (int64_t j = 0; j < n; j++) {
        int64_t v = kiln_tk_index_at(ind->dtype, ind->data, j), off = 0;
        if (v < 0) v += dim;
        for (int k = 0; k < r; k++) off += (k == axis ? v : idx[k]) * xstr[k];
        char *slot = d + (size_t)off * elem;
        const char *src = u + (size_t)j * elem;
        if (x->dtype == KILN_DTYPE_STRING) {
            KILN_TRY(replace_strings(ctx, slot, src, 1));
        } else {
            apply_run(x->dtype, red, slot, src, 1, elem);
        }
        for (int k = r - 1; k >= 0; k--) {
            if (++idx[k] < ind->dims[k]) break;
            idx[k] = 0;
        }
    }
    return KILN_OK;
}

/* ---- ScatterND ---- */

static kiln_status scatter_nd_check(kiln_ctx *ctx, kiln_tensor **x, kiln_tensor **ind, kiln_tensor **upd,
                                    int *red, int64_t *k) {
    KILN_TRY(scatter_common_inputs(ctx, x, ind, upd, 1, red));
    *k = -1;
    if ((*x)->rank < 0 || (*ind)->rank < 0) return KILN_OK;
    int r = (*x)->rank, q = (*ind)->rank;
    if (r < 1 || q < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "data and indices need rank >= 1 (got %d and %d)", r, q);
    *k = (*ind)->dims[q - 1];
    if (*k < 0) return KILN_OK;
    if (*k > r)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices' last dim %lld exceeds the data rank %d",
                         (long long)*k, r);
    if ((*upd)->rank < 0) return KILN_OK;
    int want = q - 1 + r - (int)*k;
    if ((*upd)->rank != want)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "updates have rank %d, expected %d", (*upd)->rank, want);
    for (int i = 0; i < want; i++) {
        int64_t e = i < q - 1 ? (*ind)->dims[i] : (*x)->dims[*k + i - (q - 1)];
        if (kiln_tk_dims_conflict((*upd)->dims[i], e))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "updates dim %d is %lld, expected %lld", i,
                             (long long)(*upd)->dims[i], (long long)e);
    }
    return KILN_OK;
}

static kiln_status scatter_nd_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *upd;
    int red;
    int64_t k;
    KILN_TRY(scatter_nd_check(ctx, &x, &ind, &upd, &red, &k));
    return kiln_set_output_like(ctx, 0, x);
}

static kiln_status scatter_nd_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *upd, *y = kiln_output(ctx, 0);
    int red;
    int64_t k;
    KILN_TRY(scatter_nd_check(ctx, &x, &ind, &upd, &red, &k));
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    int64_t str[KILN_MAX_RANK];
    kiln_strides(x->rank, x->dims, str);
    int64_t tuples = kiln_dims_numel(ind->rank - 1, ind->dims);
    int64_t slice = kiln_dims_numel(x->rank - (int)k, x->dims + k);
    const int64_t *iv = ind->data;
    for (int64_t t = 0; t < tuples; t++)
        for (int i = 0; i < k; i++) {
            int64_t v = iv[t * k + i], d = x->dims[i];
            if (v < -d || v >= d)
                return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "index %lld (tuple %lld, entry %d) is out of range [-%lld, %lld]",
                                 (long long)v, (long long)t, i, (long long)d, (long long)d - 1);
        }
    KILN_TRY(start_from_data(ctx, y, x));
    if (slice == 0) return KILN_OK;
    for (int64_t t = 0; t < tuples; t++) {
        int64_t off = 0;
        for (int i = 0; i < k; i++) {
            int64_t v = iv[t * k + i];
            off += (v < 0 ? v + x->dims[i] : v) * str[i];
        }
        char *dst = (char *)y->data + (size_t)off * elem;
        const char *src = (const char *)upd->data + (size_t)(t * slice) * elem;
        if (x->dtype == KILN_DTYPE_STRING) {
            KILN_TRY(replace_strings(ctx, dst, src, slice));
        } else {
            apply_run(x->dtype, red, dst, src, slice, elem);
        }
    }
    return KILN_OK;
}

/* ---- TensorScatter ---- */

typedef struct {
    int axis, circular;
    int64_t max_len, len, prefix, inner, batch;
} tscatter_geo;

static kiln_status tensor_scatter_check(kiln_ctx *ctx, kiln_tensor **past, kiln_tensor **upd, kiln_tensor **wi,
                                        tscatter_geo *g) {
    KILN_TRY(kiln_need_input(ctx, 0, past));
    KILN_TRY(kiln_need_input(ctx, 1, upd));
    *wi = kiln_input(ctx, 2);
    const char *mode = kiln_attr_string(ctx->node, "mode", "linear");
    if (strcmp(mode, "linear") && strcmp(mode, "circular"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "mode must be 'linear' or 'circular', got '%s'", mode);
    g->circular = !strcmp(mode, "circular");
    if ((*upd)->dtype != (*past)->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "update is %s but past_cache is %s",
                         kiln_dtype_name((kiln_dtype)(*upd)->dtype), kiln_dtype_name((kiln_dtype)(*past)->dtype));
    if (*wi && (*wi)->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "write_indices must be int64, got %s",
                         kiln_dtype_name((kiln_dtype)(*wi)->dtype));
    g->axis = -1;
    if ((*past)->rank < 0 || (*upd)->rank < 0) return KILN_OK;
    int r = (*past)->rank;
    if (r < 2) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "past_cache must have rank >= 2, got %d", r);
    if ((*upd)->rank != r)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "update has rank %d, past_cache %d", (*upd)->rank, r);
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -2), r, "axis", &g->axis));
    if (g->axis == 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis cannot be the batch dimension 0");
    for (int i = 0; i < r; i++) {
        int64_t a = (*past)->dims[i], b = (*upd)->dims[i];
        if (i != g->axis && kiln_tk_dims_conflict(a, b))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "update dim %d is %lld, past_cache has %lld", i,
                             (long long)b, (long long)a);
        if (i == g->axis && a >= 0 && b >= 0 && b > a)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "update has %lld steps, more than the cache's %lld",
                             (long long)b, (long long)a);
    }
    if (*wi && (*wi)->rank >= 0 && ((*wi)->rank != 1 || kiln_tk_dims_conflict((*wi)->dims[0], (*past)->dims[0])))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "write_indices must have shape [batch]");
    g->max_len = (*past)->dims[g->axis];
    g->len = (*upd)->dims[g->axis];
    g->batch = (*past)->dims[0];
    g->prefix = kiln_dims_numel(g->axis, (*past)->dims);
    g->inner = kiln_dims_numel(r - g->axis - 1, (*past)->dims + g->axis + 1);
    return KILN_OK;
}

static kiln_status tensor_scatter_infer(kiln_ctx *ctx) {
    kiln_tensor *past, *upd, *wi;
    tscatter_geo g;
    KILN_TRY(tensor_scatter_check(ctx, &past, &upd, &wi, &g));
    return kiln_set_output_like(ctx, 0, past);
}

static kiln_status tensor_scatter_compute(kiln_ctx *ctx) {
    kiln_tensor *past, *upd, *wi, *y = kiln_output(ctx, 0);
    tscatter_geo g;
    KILN_TRY(tensor_scatter_check(ctx, &past, &upd, &wi, &g));
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, past, 0, &elem));
    const int64_t *w = wi ? wi->data : NULL;
    if (wi && kiln_numel(wi) != g.batch)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "write_indices has %lld entries, batch is %lld",
                         (long long)kiln_numel(wi), (long long)g.batch);
    if (!g.circular && w)
        for (int64_t b = 0; b < g.batch; b++)
            if (w[b] < 0 || w[b] > g.max_len - g.len)
                return KILN_FAIL(ctx, KILN_ERR_RUNTIME,
                                 "write_indices[%lld] = %lld: writing %lld steps would leave the cache of %lld",
                                 (long long)b, (long long)w[b], (long long)g.len, (long long)g.max_len);
    KILN_TRY(start_from_data(ctx, y, past));
    if (g.len == 0 || g.inner == 0 || g.prefix == 0) return KILN_OK;
    size_t run = (size_t)g.inner * elem;
    int64_t per_batch = g.prefix / g.batch;
    for (int64_t p = 0; p < g.prefix; p++) {
        int64_t b = p / per_batch, start = w ? w[b] : 0;
        for (int64_t s = 0; s < g.len; s++) {
            int64_t pos = start + s;
            if (g.circular) pos = ((pos % g.max_len) + g.max_len) % g.max_len;
            char *dst = (char *)y->data + (size_t)(p * g.max_len + pos) * run;
            const char *src = (const char *)upd->data + (size_t)(p * g.len + s) * run;
            if (past->dtype == KILN_DTYPE_STRING) {
                KILN_TRY(replace_strings(ctx, dst, src, g.inner));
            } else {
                memcpy(dst, src, run);
            }
        }
    }
    return KILN_OK;
}

const kiln_op kiln_ops_scatter[] = {
    {"", "Scatter", 9, 0, NULL, scatter_elements_infer, scatter_elements_compute, NULL},
    {"", "ScatterElements", 11, 0, NULL, scatter_elements_infer, scatter_elements_compute, NULL},
    {"", "ScatterND", 11, 0, NULL, scatter_nd_infer, scatter_nd_compute, NULL},
    {"", "TensorScatter", 24, 0, NULL, tensor_scatter_infer, tensor_scatter_compute, NULL},
    {0},
};
