/* The "gather" family: Gather, GatherElements, GatherND and OneHot. Indices are checked before
 * anything is written (negative ones count from the back); the moves are memcpy of contiguous
 * slices, spread over threads when large. */
#include "cpu/kernels/tensor_common.h"
#include <string.h>

static kiln_status index_input(kiln_ctx *ctx, int i, kiln_tensor **t, int int64_only) {
    KILN_TRY(kiln_need_input(ctx, i, t));
    int dt = (*t)->dtype;
    if (dt != KILN_DTYPE_INT64 && (int64_only || dt != KILN_DTYPE_INT32))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices must be %s, got %s",
                         int64_only ? "int64" : "int32 or int64", kiln_dtype_name((kiln_dtype)dt));
    return KILN_OK;
}

static kiln_status index_error(kiln_ctx *ctx, int64_t at, int64_t v, int64_t dim) {
    return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "index %lld (at position %lld) is out of range [-%lld, %lld]",
                     (long long)v, (long long)at, (long long)dim, (long long)dim - 1);
}

/* ---- Gather ---- */

static kiln_status gather_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *ind;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(index_input(ctx, 1, &ind, 0));
    if (x->rank == 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "data must have rank >= 1");
    if (x->rank < 0 || ind->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int axis, r = x->rank, q = ind->rank;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), r, "axis", &axis));
    if (r - 1 + q > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "output rank %d exceeds %d", r - 1 + q, KILN_MAX_RANK);
    int64_t out[KILN_MAX_RANK];
    int k = 0;
    for (int i = 0; i < axis; i++) out[k++] = x->dims[i];
    for (int i = 0; i < q; i++) out[k++] = ind->dims[i];
    for (int i = axis + 1; i < r; i++) out[k++] = x->dims[i];
    return kiln_set_output(ctx, 0, x->dtype, k, out);
}

typedef struct {
    char *dst;
    const char *src;
    const void *ind;
    int ind_dtype;
    int64_t n_ind, dim;
    size_t row; /* bytes per gathered slice */
} gather_job;

/* rows r = o * n_ind + j; walks j with a carry instead of dividing per row (rows are often a
 * single element) */
#define GATHER_ROWS(ET)                                                                             \
    do {                                                                                            \
        ET *d_ = (ET *)g->dst;                                                                      \
        const ET *s_ = (const ET *)g->src;                                                          \
        for (int64_t r = begin; r < end; r++) {                                                     \
            int64_t v = kiln_tk_index_at(g->ind_dtype, g->ind, j);                                  \
            if (v < 0) v += g->dim;                                                                 \
            d_[r] = s_[o * g->dim + v];                                                             \
            if (++j == g->n_ind) {                                                                  \
                j = 0;                                                                              \
                o++;                                                                                \
            }                                                                                       \
        }                                                                                           \
    } while (0)

static void gather_rows(void *arg, int64_t begin, int64_t end) {
    const gather_job *g = arg;
    int64_t o = begin / g->n_ind, j = begin % g->n_ind;
    switch (g->row) {
    case 1: GATHER_ROWS(uint8_t); return;
    case 2: GATHER_ROWS(uint16_t); return;
    case 4: GATHER_ROWS(uint32_t); return;
    case 8: GATHER_ROWS(uint64_t); return;
    default: break;
    }
    for (int64_t r = begin; r < end; r++) {
        int64_t v = kiln_tk_index_at(g->ind_dtype, g->ind, j);
        if (v < 0) v += g->dim;
        memcpy(g->dst + (size_t)r * g->row, g->src + (size_t)(o * g->dim + v) * g->row, g->row);
        if (++j == g->n_ind) {
            j = 0;
            o++;
        }
    }
}

static kiln_status gather_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(index_input(ctx, 1, &ind, 0));
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), x->rank, "axis", &axis));
    gather_job g;
    g.dim = x->dims[axis];
    g.n_ind = kiln_numel(ind);
    g.ind = ind->data;
    g.ind_dtype = ind->dtype;
    for (int64_t j = 0; j < g.n_ind; j++) {
        int64_t v = kiln_tk_index_at(ind->dtype, ind->data, j);
        if (v < -g.dim || v >= g.dim) return index_error(ctx, j, v, g.dim);
    }
    int64_t outer = kiln_dims_numel(axis, x->dims);
    int64_t inner = kiln_dims_numel(x->rank - axis - 1, x->dims + axis + 1);
    g.row = (size_t)inner * elem;
    g.dst = y->data;
    g.src = x->data;
    if (outer * g.n_ind == 0 || g.row == 0) return KILN_OK;
    kiln_tk_parallel(ctx, outer * g.n_ind, (double)g.row + 16.0, gather_rows, &g);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

/* ---- GatherElements ---- */

static kiln_status gather_elements_check(kiln_ctx *ctx, kiln_tensor **x, kiln_tensor **ind, int *axis) {
    KILN_TRY(kiln_need_input(ctx, 0, x));
    KILN_TRY(index_input(ctx, 1, ind, 0));
    if ((*x)->rank == 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "data must have rank >= 1");
    *axis = -1;
    if ((*x)->rank < 0 || (*ind)->rank < 0) return KILN_OK;
    if ((*x)->rank != (*ind)->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices have rank %d but data has rank %d", (*ind)->rank,
                         (*x)->rank);
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), (*x)->rank, "axis", axis));
    for (int i = 0; i < (*x)->rank; i++) {
        int64_t a = (*ind)->dims[i], b = (*x)->dims[i];
        if (i != *axis && a >= 0 && b >= 0 && a > b)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices dim %d (%lld) exceeds the data dim (%lld)", i,
                             (long long)a, (long long)b);
    }
    return KILN_OK;
}

static kiln_status gather_elements_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *ind;
    int axis;
    KILN_TRY(gather_elements_check(ctx, &x, &ind, &axis));
    if (ind->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    return kiln_set_output(ctx, 0, x->dtype, ind->rank, ind->dims);
}

typedef struct {
    char *dst;
    const char *src;
    const void *ind;
    int ind_dtype, rank, axis;
    size_t elem;
    const int64_t *idims;
    int64_t xstr[KILN_MAX_RANK], dim;
} gather_el_job;

/* the inner walk of one row, typed by index and element type */
#define GEL_ROW(IT, ET)                                                                             \
    do {                                                                                            \
        const IT *ip_ = (const IT *)g->ind + r * len;                                               \
        ET *dp_ = (ET *)g->dst + r * len;                                                           \
        const ET *sp_ = (const ET *)g->src + base;                                                  \
        for (int64_t j = 0; j < len; j++) {                                                         \
            int64_t v = ip_[j];                                                                     \
            if (v < 0) v += g->dim;                                                                 \
            dp_[j] = sp_[v * sa + j * sl];                                                          \
        }                                                                                           \
    } while (0)

#define GEL_BY_ELEM(IT)                                                                             \
    switch (g->elem) {                                                                              \
    case 1: GEL_ROW(IT, uint8_t); break;                                                            \
    case 2: GEL_ROW(IT, uint16_t); break;                                                           \
    case 4: GEL_ROW(IT, uint32_t); break;                                                           \
    case 8: GEL_ROW(IT, uint64_t); break;                                                           \
    default:                                                                                        \
        for (int64_t j = 0; j < len; j++) {                                                         \
            int64_t v = ((const IT *)g->ind)[r * len + j];                                          \
            if (v < 0) v += g->dim;                                                                 \
            memcpy(g->dst + (size_t)(r * len + j) * g->elem,                                        \
                   g->src + (size_t)(base + v * sa + j * sl) * g->elem, g->elem);                   \
        }                                                                                           \
    }

/* rows = all index dims but the last; each row walks the last dim */
static void gather_elements_rows(void *arg, int64_t begin, int64_t end) {
    const gather_el_job *g = arg;
    int last = g->rank - 1;
    int64_t len = g->idims[last], sa = g->xstr[g->axis], sl = last == g->axis ? 0 : g->xstr[last];
    for (int64_t r = begin; r < end; r++) {
        int64_t rem = r, base = 0;
        for (int k = last - 1; k >= 0; k--) {
            int64_t i = rem % g->idims[k];
            rem /= g->idims[k];
            if (k != g->axis) base += i * g->xstr[k];
        }
        if (g->ind_dtype == KILN_DTYPE_INT32) {
            GEL_BY_ELEM(int32_t)
        } else {
            GEL_BY_ELEM(int64_t)
        }
    }
}

static kiln_status gather_elements_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *y = kiln_output(ctx, 0);
    int axis;
    KILN_TRY(gather_elements_check(ctx, &x, &ind, &axis));
    if (!y) return KILN_OK;
    gather_el_job g;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &g.elem));
    int64_t n = kiln_numel(ind);
    g.dim = x->dims[axis];
    for (int64_t j = 0; j < n; j++) {
        int64_t v = kiln_tk_index_at(ind->dtype, ind->data, j);
        if (v < -g.dim || v >= g.dim) return index_error(ctx, j, v, g.dim);
    }
    if (n == 0) return KILN_OK;
    g.dst = y->data;
    g.src = x->data;
    g.ind = ind->data;
    g.ind_dtype = ind->dtype;
    g.rank = x->rank;
    g.axis = axis;
    g.idims = ind->dims;
    kiln_strides(x->rank, x->dims, g.xstr);
    int64_t rows = n / ind->dims[x->rank - 1];
    kiln_tk_parallel(ctx, rows, (double)ind->dims[x->rank - 1] * (double)g.elem * 4.0, gather_elements_rows, &g);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

/* ---- GatherND ---- */

typedef struct {
    int b, k;          /* batch dims, index tuple length */
    int64_t batches;   /* product of the batch dims */
    int64_t tuples;    /* index tuples per batch */
    int64_t slice;     /* elements per gathered slice */
    int64_t batch_len; /* elements of data per batch */
} gnd_geo;

static kiln_status gather_nd_check(kiln_ctx *ctx, kiln_tensor **x, kiln_tensor **ind, gnd_geo *g, int *known) {
    KILN_TRY(kiln_need_input(ctx, 0, x));
    KILN_TRY(index_input(ctx, 1, ind, 1));
    *known = 0;
    int64_t b = ctx->opset >= 12 ? kiln_attr_int(ctx->node, "batch_dims", 0) : 0;
    if ((*x)->rank < 0 || (*ind)->rank < 0) return KILN_OK;
    int r = (*x)->rank, q = (*ind)->rank;
    if (r < 1 || q < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "data and indices need rank >= 1 (got %d and %d)", r, q);
    if (b < 0 || b >= (q < r ? q : r))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "batch_dims %lld must be in [0, %d)", (long long)b,
                         q < r ? q : r);
    for (int i = 0; i < b; i++)
        if (kiln_tk_dims_conflict((*x)->dims[i], (*ind)->dims[i]))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "batch dim %d differs: data %lld, indices %lld", i,
                             (long long)(*x)->dims[i], (long long)(*ind)->dims[i]);
    int64_t k = (*ind)->dims[q - 1];
    if (k < 0) return KILN_OK;
    if (k < 1 || k > r - b)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices' last dim is %lld, must be in [1, %lld]",
                         (long long)k, (long long)(r - b));
    if (q - 1 + r - b - k > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "output rank exceeds %d", KILN_MAX_RANK);
    g->b = (int)b;
    g->k = (int)k;
    g->batches = kiln_dims_numel((int)b, (*x)->dims);
    g->tuples = kiln_dims_numel(q - 1 - (int)b, (*ind)->dims + b);
    g->slice = kiln_dims_numel(r - (int)b - (int)k, (*x)->dims + b + k);
    g->batch_len = kiln_dims_numel(r - (int)b, (*x)->dims + b);
    *known = 1;
    return KILN_OK;
}

static kiln_status gather_nd_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *ind;
    gnd_geo g;
    int known;
    KILN_TRY(gather_nd_check(ctx, &x, &ind, &g, &known));
    if (!known) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int64_t out[KILN_MAX_RANK];
    int n = 0;
    for (int i = 0; i < ind->rank - 1; i++) out[n++] = i < g.b ? kiln_tk_dim_merge(ind->dims[i], x->dims[i]) : ind->dims[i];
    for (int i = g.b + g.k; i < x->rank; i++) out[n++] = x->dims[i];
    return kiln_set_output(ctx, 0, x->dtype, n, out);
}

typedef struct {
    const gnd_geo *g;
    char *dst;
    const char *src;
    const int64_t *ind;
    int64_t str[KILN_MAX_RANK]; /* element strides of the k indexed dims */
    int64_t dims[KILN_MAX_RANK];
    size_t elem;
} gnd_job;

static void gather_nd_rows(void *arg, int64_t begin, int64_t end) {
    const gnd_job *j = arg;
    const gnd_geo *g = j->g;
    size_t run = (size_t)g->slice * j->elem;
    for (int64_t r = begin; r < end; r++) {
        int64_t batch = r / g->tuples, off = batch * g->batch_len;
        const int64_t *t = j->ind + r * g->k;
        for (int i = 0; i < g->k; i++) off += (t[i] < 0 ? t[i] + j->dims[i] : t[i]) * j->str[i];
        if (g->slice == 1) kiln_tk_move_elem(j->dst + (size_t)r * run, j->src + (size_t)off * j->elem, run);
        else memcpy(j->dst + (size_t)r * run, j->src + (size_t)off * j->elem, run);
    }
}

static kiln_status gather_nd_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *y = kiln_output(ctx, 0);
    gnd_geo g;
    int known;
    KILN_TRY(gather_nd_check(ctx, &x, &ind, &g, &known));
    if (!y) return KILN_OK;
    if (!known) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "shapes are not known");
    gnd_job j;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &j.elem));
    int64_t all[KILN_MAX_RANK];
    kiln_strides(x->rank, x->dims, all);
    for (int i = 0; i < g.k; i++) {
        j.str[i] = all[g.b + i];
        j.dims[i] = x->dims[g.b + i];
    }
    const int64_t *iv = ind->data;
    int64_t rows = g.batches * g.tuples;
    for (int64_t r = 0; r < rows; r++)
        for (int i = 0; i < g.k; i++) {
            int64_t v = iv[r * g.k + i];
            if (v < -j.dims[i] || v >= j.dims[i]) return index_error(ctx, r * g.k + i, v, j.dims[i]);
        }
    if (rows == 0 || g.slice == 0) return KILN_OK;
    j.g = &g;
    j.dst = y->data;
    j.src = x->data;
    j.ind = iv;
    kiln_tk_parallel(ctx, rows, (double)g.slice * (double)j.elem + 16.0, gather_nd_rows, &j);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

/* ---- OneHot ---- */

static int onehot_numeric(int dt) {
    return kiln_dtype_is_integer(dt) && dt != KILN_DTYPE_INT4 && dt != KILN_DTYPE_UINT4 ? 1
           : (dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || dt == KILN_DTYPE_FLOAT16 ||
              dt == KILN_DTYPE_BFLOAT16);
}

static int64_t onehot_index(int dt, const void *p, int64_t i) {
    if (kiln_dtype_is_integer(dt)) return kiln_load_i64(dt, p, i);
    double v = kiln_load_f64(dt, p, i);
    if (!(v > -9.2e18 && v < 9.2e18)) return INT64_MIN; /* never a valid class */
    return (int64_t)v;
}

static kiln_status onehot_check(kiln_ctx *ctx, kiln_tensor **in, int64_t *depth, int *known, int *axis) {
    for (int i = 0; i < 3; i++) KILN_TRY(kiln_need_input(ctx, i, &in[i]));
    if (!onehot_numeric(in[0]->dtype) || !onehot_numeric(in[1]->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices and depth must be numeric (got %s, %s)",
                         kiln_dtype_name((kiln_dtype)in[0]->dtype), kiln_dtype_name((kiln_dtype)in[1]->dtype));
    if (in[2]->rank >= 0 && (in[2]->rank != 1 || (in[2]->dims[0] >= 0 && in[2]->dims[0] != 2)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "values must be a 1-D tensor of 2 elements [off, on]");
    if (in[1]->rank > 1 || (in[1]->rank == 1 && in[1]->dims[0] >= 0 && in[1]->dims[0] != 1))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "depth must be a scalar or a 1-element tensor");
    *known = 0;
    *axis = 0;
    if (in[0]->rank >= 0) {
        int64_t a = kiln_attr_int(ctx->node, "axis", -1);
        KILN_TRY(kiln_norm_axis(ctx, a, in[0]->rank + 1, "axis", axis));
        if (in[0]->rank + 1 > KILN_MAX_RANK)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "output rank exceeds %d", KILN_MAX_RANK);
    }
    if (kiln_tk_has_values(ctx, in[1])) {
        KILN_TRY(kiln_tk_read_scalar_i64(ctx, in[1], "depth", depth));
        if (*depth < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "depth must be positive, got %lld", (long long)*depth);
        *known = 1;
    }
    return KILN_OK;
}

static kiln_status onehot_infer(kiln_ctx *ctx) {
    kiln_tensor *in[3];
    int64_t depth;
    int known, axis;
    KILN_TRY(onehot_check(ctx, in, &depth, &known, &axis));
    if (in[0]->rank < 0) return kiln_set_output_unknown(ctx, 0, in[2]->dtype);
    int64_t out[KILN_MAX_RANK];
    for (int i = 0, k = 0; i < in[0]->rank + 1; i++) out[i] = i == axis ? (known ? depth : KILN_DIM_UNKNOWN) : in[0]->dims[k++];
    return kiln_set_output(ctx, 0, in[2]->dtype, in[0]->rank + 1, out);
}

static kiln_status onehot_compute(kiln_ctx *ctx) {
    kiln_tensor *in[3], *y = kiln_output(ctx, 0);
    int64_t depth;
    int known, axis;
    KILN_TRY(onehot_check(ctx, in, &depth, &known, &axis));
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, in[2], 2, &elem));
    if (kiln_numel(in[2]) != 2) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "values must hold 2 elements");
    int64_t prefix = kiln_dims_numel(axis, in[0]->dims);
    int64_t suffix = kiln_dims_numel(in[0]->rank - axis, in[0]->dims + axis);
    const char *off = in[2]->data, *on = off + elem;
    char *d = y->data;
    kiln_tk_fill(d, kiln_numel(y), off, elem);
    for (int64_t p = 0; p < prefix; p++) {
        for (int64_t s = 0; s < suffix; s++) {
            int64_t v = onehot_index(in[0]->dtype, in[0]->data, p * suffix + s);
            if (v < 0 && v >= -depth) v += depth;
            if (v < 0 || v >= depth) continue; /* out-of-range classes stay all "off" */
            kiln_tk_move_elem(d + (size_t)((p * depth + v) * suffix + s) * elem, on, elem);
        }
    }
    if (y->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

const kiln_op kiln_ops_gather[] = {
    {"", "Gather", 1, 0, NULL, gather_infer, gather_compute, NULL},
    {"", "GatherElements", 11, 0, NULL, gather_elements_infer, gather_elements_compute, NULL},
    {"", "GatherND", 11, 0, NULL, gather_nd_infer, gather_nd_compute, NULL},
    {"", "OneHot", 9, 0, NULL, onehot_infer, onehot_compute, NULL},
    {0},
};
