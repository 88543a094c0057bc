/* Ops whose output size depends on the data (KILN_OP_DYNAMIC: compute allocates): NonZero,
 * Compress and Unique. */
#include "cpu/kernels/tensor_common.h"
#include "cpu/kernels/tensor_ops.h"
#include <stdlib.h>
#include <string.h>

/* ---- element tests and ordering shared by NonZero and Unique ---- */

static int elem_nonzero(int dt, const char *p) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: { float v; memcpy(&v, p, 4); return v != 0.0f; }
    case KILN_DTYPE_DOUBLE: { double v; memcpy(&v, p, 8); return v != 0.0; }
    case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16: { uint16_t v; memcpy(&v, p, 2); return (v & 0x7fff) != 0; }
    case KILN_DTYPE_FLOAT8E4M3FN: case KILN_DTYPE_FLOAT8E5M2: return (*(const uint8_t *)p & 0x7f) != 0;
    case KILN_DTYPE_COMPLEX64: { float v[2]; memcpy(v, p, 8); return v[0] != 0.0f || v[1] != 0.0f; }
    case KILN_DTYPE_COMPLEX128: { double v[2]; memcpy(v, p, 16); return v[0] != 0.0 || v[1] != 0.0; }
    case KILN_DTYPE_STRING: { const char *s; memcpy(&s, p, sizeof s); return kiln_str_len(s) != 0; }
    default: { /* integers, bool, fnuz float8 (whose only zero is 0x00) */
        size_t n = kiln_tk_elem_size(dt);
        for (size_t i = 0; i < n; i++)
            if (p[i]) return 1;
        return 0;
    }
    }
}

#define CMP_AS(T)                                                                                   \
    do {                                                                                            \
        T x_, y_;                                                                                   \
        memcpy(&x_, a, sizeof x_);                                                                  \
        memcpy(&y_, b, sizeof y_);                                                                  \
        return x_ < y_ ? -1 : (x_ > y_ ? 1 : 0);                                                    \
    } while (0)

static int cmp_f64(double x, double y) {
    if (x != x || y != y) return (x != x) - (y != y); /* NaN sorts last and equals NaN */
    return x < y ? -1 : (x > y ? 1 : 0);
}

static int elem_cmp(int dt, const char *a, const char *b) {
    switch (dt) {
    case KILN_DTYPE_INT8: CMP_AS(int8_t);
    case KILN_DTYPE_INT16: CMP_AS(int16_t);
    case KILN_DTYPE_INT32: CMP_AS(int32_t);
    case KILN_DTYPE_INT64: CMP_AS(int64_t);
    case KILN_DTYPE_UINT8: case KILN_DTYPE_BOOL: CMP_AS(uint8_t);
    case KILN_DTYPE_UINT16: CMP_AS(uint16_t);
    case KILN_DTYPE_UINT32: CMP_AS(uint32_t);
    case KILN_DTYPE_UINT64: CMP_AS(uint64_t);
    case KILN_DTYPE_FLOAT: { float x, y; memcpy(&x, a, 4); memcpy(&y, b, 4); return cmp_f64(x, y); }
    case KILN_DTYPE_DOUBLE: { double x, y; memcpy(&x, a, 8); memcpy(&y, b, 8); return cmp_f64(x, y); }
    case KILN_DTYPE_FLOAT16: {
        uint16_t x, y;
        memcpy(&x, a, 2); memcpy(&y, b, 2);
        return cmp_f64(kiln_f16_to_f32(x), kiln_f16_to_f32(y));
    }
    case KILN_DTYPE_BFLOAT16: {
        uint16_t x, y;
        memcpy(&x, a, 2); memcpy(&y, b, 2);
        return cmp_f64(kiln_bf16_to_f32(x), kiln_bf16_to_f32(y));
    }
    case KILN_DTYPE_COMPLEX64: {
        float x[2], y[2];
        memcpy(x, a, 8); memcpy(y, b, 8);
        int c = cmp_f64(x[0], y[0]);
        return c ? c : cmp_f64(x[1], y[1]);
    }
    case KILN_DTYPE_COMPLEX128: {
        double x[2], y[2];
        memcpy(x, a, 16); memcpy(y, b, 16);
        int c = cmp_f64(x[0], y[0]);
        return c ? c : cmp_f64(x[1], y[1]);
    }
    case KILN_DTYPE_STRING: {
        const char *x, *y;
        memcpy(&x, a, sizeof x); memcpy(&y, b, sizeof y);
        int c = kiln_str_cmp(x, y);
        return c < 0 ? -1 : (c > 0);
    }
    default: { /* float8: compare as float */
        float x = kiln_f8_to_f32(dt, *(const uint8_t *)a), y = kiln_f8_to_f32(dt, *(const uint8_t *)b);
        return cmp_f64(x, y);
    }
    }
}

/* ---- NonZero ---- */

kiln_status kiln_tk_nonzero_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!kiln_tk_elem_size(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s",
                         kiln_dtype_name((kiln_dtype)x->dtype));
    int64_t dims[2] = {x->rank < 0 ? KILN_DIM_UNKNOWN : (x->rank == 0 ? 1 : x->rank), KILN_DIM_UNKNOWN};
    return kiln_set_output(ctx, 0, KILN_DTYPE_INT64, 2, dims);
}

kiln_status kiln_tk_nonzero_compute(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    int64_t n = kiln_numel(x), nnz = 0;
    const char *p = x->data;
    for (int64_t i = 0; i < n; i++) nnz += elem_nonzero(x->dtype, p + (size_t)i * elem);
    /* a scalar reports like a 1-element vector (as onnxruntime does) */
    int r = x->rank == 0 ? 1 : x->rank;
    int64_t dims[2] = {r, nnz};
    KILN_TRY(kiln_alloc_output(ctx, 0, KILN_DTYPE_INT64, 2, dims));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || nnz == 0) return KILN_OK;
    int64_t *out = y->data, idx[KILN_MAX_RANK] = {0}, k = 0;
    for (int64_t i = 0; i < n; i++) {
        if (elem_nonzero(x->dtype, p + (size_t)i * elem)) {
            for (int d = 0; d < r; d++) out[d * nnz + k] = x->rank == 0 ? 0 : idx[d];
            k++;
        }
        for (int d = x->rank - 1; d >= 0; d--) {
            if (++idx[d] < x->dims[d]) break;
            idx[d] = 0;
        }
    }
    return KILN_OK;
}

/* ---- Compress ---- */

typedef struct {
    int axis; /* -1: flatten */
    int64_t outer, dim, inner, kept;
} compress_geo;

static kiln_status compress_geometry(kiln_ctx *ctx, const kiln_tensor *x, const kiln_tensor *c,
                                     compress_geo *g) {
    if (c->dtype != KILN_DTYPE_BOOL)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "condition must be bool, got %s",
                         kiln_dtype_name((kiln_dtype)c->dtype));
    if (c->rank >= 0 && c->rank != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "condition must be 1-D, got rank %d", c->rank);
    g->axis = -1;
    if (kiln_has_attr(ctx->node, "axis")) {
        if (x->rank < 0) {
            g->axis = 0;
            return KILN_OK;
        }
        KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), x->rank, "axis", &g->axis));
    }
    return KILN_OK;
}

kiln_status kiln_tk_compress_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *c;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &c));
    compress_geo g;
    KILN_TRY(compress_geometry(ctx, x, c, &g));
    if (g.axis < 0 || x->rank < 0) {
        int64_t d = KILN_DIM_UNKNOWN;
        return kiln_set_output(ctx, 0, x->dtype, g.axis < 0 ? 1 : x->rank, &d);
    }
    int64_t dims[KILN_MAX_RANK];
    for (int i = 0; i < x->rank; i++) dims[i] = i == g.axis ? KILN_DIM_UNKNOWN : x->dims[i];
    return kiln_set_output(ctx, 0, x->dtype, x->rank, dims);
}

kiln_status kiln_tk_compress_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *c;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &c));
    compress_geo g;
    size_t elem;
    KILN_TRY(compress_geometry(ctx, x, c, &g));
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    if (g.axis < 0) {
        g.outer = 1;
        g.dim = kiln_numel(x);
        g.inner = 1;
    } else {
        g.outer = kiln_dims_numel(g.axis, x->dims);
        g.dim = x->dims[g.axis];
        g.inner = kiln_dims_numel(x->rank - g.axis - 1, x->dims + g.axis + 1);
    }
    /* entries past the axis length are ignored, as onnxruntime does */
    int64_t len = c->dims[0] < g.dim ? c->dims[0] : g.dim;
    const uint8_t *cond = c->data;
    g.kept = 0;
    for (int64_t i = 0; i < len; i++) g.kept += cond[i] != 0;
    int64_t dims[KILN_MAX_RANK];
    int rank;
    if (g.axis < 0) {
        rank = 1;
        dims[0] = g.kept;
    } else {
        rank = x->rank;
        for (int i = 0; i < rank; i++) dims[i] = i == g.axis ? g.kept : x->dims[i];
    }
    KILN_TRY(kiln_alloc_output(ctx, 0, x->dtype, rank, dims));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || g.kept == 0 || g.outer == 0 || g.inner == 0) return KILN_OK;
    size_t run = (size_t)g.inner * elem;
    char *d = y->data;
    const char *s = x->data;
    for (int64_t o = 0; o < g.outer; o++) {
        for (int64_t i = 0; i < len; i++) {
            if (!cond[i]) continue;
            if (g.inner == 1) kiln_tk_move_elem(d, s + (size_t)(o * g.dim + i) * run, run);
            else memcpy(d, s + (size_t)(o * g.dim + i) * run, run);
            d += run;
        }
    }
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

/* ---- Unique ---- */

/* Items are single elements (no axis) or slices x[o, i, :] across all o (with axis). */
typedef struct {
    int dtype;
    size_t elem;
    const char *data;
    int64_t outer, dim, inner;
} unique_items;

static int item_cmp(const unique_items *u, int64_t i, int64_t j) {
    for (int64_t o = 0; o < u->outer; o++) {
        const char *a = u->data + (size_t)((o * u->dim + i) * u->inner) * u->elem;
        const char *b = u->data + (size_t)((o * u->dim + j) * u->inner) * u->elem;
        for (int64_t k = 0; k < u->inner; k++) {
            int c = elem_cmp(u->dtype, a + k * u->elem, b + k * u->elem);
            if (c) return c;
        }
    }
    return 0;
}

/* stable merge sort of idx by the items (C11 qsort has no context argument) */
static void sort_items(const unique_items *u, int64_t *idx, int64_t *tmp, int64_t n) {
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi) tmp[k++] = item_cmp(u, idx[b], idx[a]) < 0 ? idx[b++] : idx[a++];
            while (a < mid) tmp[k++] = idx[a++];
            while (b < hi) tmp[k++] = idx[b++];
        }
        memcpy(idx, tmp, (size_t)n * sizeof *idx);
    }
}

/* plain sort of int64 keys by value (group first-indices for the unsorted order) */
static void sort_by_key(int64_t *g, const int64_t *key, int64_t *tmp, int64_t n) {
    for (int64_t w = 1; w < n; w *= 2) {
        for (int64_t lo = 0; lo < n; lo += 2 * w) {
            int64_t mid = lo + w < n ? lo + w : n, hi = lo + 2 * w < n ? lo + 2 * w : n;
            int64_t a = lo, b = mid, k = lo;
            while (a < mid && b < hi) tmp[k++] = key[g[b]] < key[g[a]] ? g[b++] : g[a++];
            while (a < mid) tmp[k++] = g[a++];
            while (b < hi) tmp[k++] = g[b++];
        }
        memcpy(g, tmp, (size_t)n * sizeof *g);
    }
}

kiln_status kiln_tk_unique_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int64_t unk = KILN_DIM_UNKNOWN;
    if (kiln_has_attr(ctx->node, "axis") && x->rank >= 0) {
        int axis;
        KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), x->rank, "axis", &axis));
        int64_t dims[KILN_MAX_RANK];
        for (int i = 0; i < x->rank; i++) dims[i] = i == axis ? KILN_DIM_UNKNOWN : x->dims[i];
        KILN_TRY(kiln_set_output(ctx, 0, x->dtype, x->rank, dims));
        if (ctx->n_out > 2 && ctx->out[2]) KILN_TRY(kiln_set_output(ctx, 2, KILN_DTYPE_INT64, 1, &x->dims[axis]));
    } else {
        KILN_TRY(kiln_set_output(ctx, 0, x->dtype, 1, &unk));
        int64_t n = kiln_tk_dims_product(x->rank < 0 ? 0 : x->rank, x->dims);
        if (x->rank < 0) n = KILN_DIM_UNKNOWN;
        if (ctx->n_out > 2 && ctx->out[2]) KILN_TRY(kiln_set_output(ctx, 2, KILN_DTYPE_INT64, 1, &n));
    }
    if (ctx->n_out > 1 && ctx->out[1]) KILN_TRY(kiln_set_output(ctx, 1, KILN_DTYPE_INT64, 1, &unk));
    if (ctx->n_out > 3 && ctx->out[3]) KILN_TRY(kiln_set_output(ctx, 3, KILN_DTYPE_INT64, 1, &unk));
    return KILN_OK;
}

kiln_status kiln_tk_unique_compute(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    unique_items u;
    u.dtype = x->dtype;
    u.data = x->data;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &u.elem));
    int axis = -1;
    if (kiln_has_attr(ctx->node, "axis"))
        KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), x->rank, "axis", &axis));
    if (axis < 0) {
        u.outer = 1;
        u.dim = kiln_numel(x);
        u.inner = 1;
    } else {
        u.outer = kiln_dims_numel(axis, x->dims);
        u.dim = x->dims[axis];
        u.inner = kiln_dims_numel(x->rank - axis - 1, x->dims + axis + 1);
    }
    int sorted = kiln_attr_int(ctx->node, "sorted", 1) != 0;
    int64_t n = u.dim;
    /* order, tmp, first, count, group_of, rank_of: six arrays of n */
    int64_t *mem = malloc((size_t)(6 * (n > 0 ? n : 1)) * sizeof(int64_t));
    if (!mem) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in Unique");
    int64_t *order = mem, *tmp = mem + n, *first = mem + 2 * n, *count = mem + 3 * n, *group_of = mem + 4 * n,
            *final_of = mem + 5 * n;
    for (int64_t i = 0; i < n; i++) order[i] = i;
    sort_items(&u, order, tmp, n);
    int64_t ng = 0;
    for (int64_t k = 0; k < n; k++) {
        if (k == 0 || item_cmp(&u, order[k - 1], order[k]) != 0) {
            first[ng] = order[k]; /* stable sort: the smallest index of the group comes first */
            count[ng] = 0;
            ng++;
        }
        count[ng - 1]++;
        group_of[order[k]] = ng - 1;
    }
    /* final order of the groups: by value (sorted) or by first occurrence */
    int64_t *gorder = tmp; /* tmp is free again; sort_by_key needs its own scratch: use order */
    for (int64_t g = 0; g < ng; g++) gorder[g] = g;
    if (!sorted) sort_by_key(gorder, first, order, ng);
    for (int64_t k = 0; k < ng; k++) final_of[gorder[k]] = k;

    kiln_status st = KILN_OK;
    int64_t dims[KILN_MAX_RANK];
    if (kiln_output(ctx, 0)) {
        int rank = axis < 0 ? 1 : x->rank;
        for (int i = 0; i < rank; i++) dims[i] = axis < 0 ? ng : (i == axis ? ng : x->dims[i]);
        st = kiln_alloc_output(ctx, 0, x->dtype, rank, dims);
        kiln_tensor *y = st ? NULL : kiln_output(ctx, 0);
        if (y && ng > 0) {
            size_t run = (size_t)u.inner * u.elem;
            for (int64_t o = 0; o < u.outer; o++)
                for (int64_t k = 0; k < ng; k++)
                    memcpy((char *)y->data + (size_t)(o * ng + k) * run,
                           u.data + (size_t)(o * u.dim + first[gorder[k]]) * run, run);
            if (x->dtype == KILN_DTYPE_STRING) st = kiln_tk_own_strings(ctx, y);
        }
    }
    for (int out = 1; out < 4 && out < ctx->n_out && st == KILN_OK; out++) {
        if (!ctx->out[out]) continue;
        int64_t len = out == 2 ? n : ng;
        st = kiln_alloc_output(ctx, out, KILN_DTYPE_INT64, 1, &len);
        kiln_tensor *t = st ? NULL : kiln_output(ctx, out);
        if (!t) continue;
        int64_t *v = t->data;
        for (int64_t k = 0; k < len; k++)
            v[k] = out == 1 ? first[gorder[k]] : out == 2 ? final_of[group_of[k]] : count[gorder[k]];
    }
    free(mem);
    return st;
}
