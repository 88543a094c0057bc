/* CUDA Gather, GatherElements, GatherND and ScatterND.
 *
 * Indices live on the device, so compute cannot check them without a device-to-host round trip.
 * The kernels guard every read instead (an out-of-range index yields zeros, or a skipped update
 * for ScatterND; see kernels/data_index.cu) and the CPU provider stays the reference for the
 * error. Gather's indices are often constants (embedding tables, shape picks): those are checked
 * here at placement, and a node whose constant indices are out of range for a known data dim is
 * left to the CPU, which reports it. */
#include "data_internal.h"

#include <string.h>

static kiln_status input_elem(kiln_ctx *ctx, kiln_tensor **x, size_t *elem) {
    KILN_TRY(kiln_need_input(ctx, 0, x));
    *elem = kiln_cuda_data_elem((*x)->dtype);
    if (!*elem)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "element type %s is not supported on CUDA",
                         kiln_dtype_name((kiln_dtype)(*x)->dtype));
    return KILN_OK;
}

/* supports(): input i is present and holds indices of an accepted type. */
static int index_type_ok(const kiln_node *n, const kiln_graph_value *const *in, int i, int int64_only, char *why,
                         size_t cap) {
    if (i >= n->n_in || !in[i]) {
        snprintf(why, cap, "input %d (indices) is missing", i);
        return 0;
    }
    int dt = kiln_cuda_in_dtype(in, i);
    if (dt == KILN_DTYPE_INT64 || (!int64_only && dt == KILN_DTYPE_INT32)) return 1;
    if (!dt) snprintf(why, cap, "the element type of input %d is not known before running", i);
    else snprintf(why, cap, "indices of type %s are not supported", kiln_dtype_name((kiln_dtype)dt));
    return 0;
}

/* ---- Gather ---- */

/* 0 (with why) when input 1 is a constant holding an index outside [-dim, dim) of a known dim. */
static int const_indices_in_range(const kiln_node *n, const kiln_graph_value *const *in, char *why, size_t cap) {
    const kiln_graph_value *dv = in[0], *iv = in[1];
    if (!iv->is_const || iv->konst.kind != KILN_KIND_TENSOR || !dv->has_type || dv->type.rank < 1) return 1;
    const kiln_tensor *t = &iv->konst.t;
    if (!t->data || t->dev) return 1; /* not readable here */
    int r = dv->type.rank;
    int64_t axis = kiln_attr_int(n, "axis", 0);
    if (axis < -r || axis >= r) return 1; /* infer reports it */
    int64_t dim = dv->type.dims[axis < 0 ? axis + r : axis], count = kiln_numel(t);
    if (dim < 0) return 1;
    for (int64_t j = 0; j < count; j++) {
        int64_t v = t->dtype == KILN_DTYPE_INT32 ? ((const int32_t *)t->data)[j] : ((const int64_t *)t->data)[j];
        if (v < -dim || v >= dim) {
            snprintf(why, cap, "constant index %lld is out of range for a dim of %lld (the CPU reports it)",
                     (long long)v, (long long)dim);
            return 0;
        }
    }
    return 1;
}

int kiln_cuda_gather_supports(const kiln_node *n, const kiln_graph_value *const *in,
                              const kiln_graph_value *const *out, char *why, size_t cap) {
    return kiln_cuda_data_movable(n, in, 0, why, cap) && index_type_ok(n, in, 1, 0, why, cap) &&
           const_indices_in_range(n, in, why, cap);
}

kiln_status kiln_cuda_gather_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(input_elem(ctx, &x, &elem));
    KILN_TRY(kiln_need_input(ctx, 1, &ind));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), x->rank, "axis", &axis));
    int64_t outer = kiln_dims_numel(axis, x->dims);
    int64_t inner = kiln_dims_numel(x->rank - axis - 1, x->dims + axis + 1);
    return kiln_cuda_data_launched(ctx, kiln_cuda_gather(kiln_cuda_data_stream(ctx), elem, outer, x->dims[axis],
                                                         inner, x->data, ind->data, ind->dtype, kiln_numel(ind),
                                                         y->data));
}

/* ---- GatherElements ---- */

int kiln_cuda_gather_elements_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                       const kiln_graph_value *const *out, char *why, size_t cap) {
    return kiln_cuda_data_movable(n, in, 0, why, cap) && index_type_ok(n, in, 1, 0, why, cap);
}

kiln_status kiln_cuda_gather_elements_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(input_elem(ctx, &x, &elem));
    KILN_TRY(kiln_need_input(ctx, 1, &ind));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    if (ind->rank != x->rank) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices and data ranks differ");
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), x->rank, "axis", &axis));
    return kiln_cuda_data_launched(ctx, kiln_cuda_gather_elements(kiln_cuda_data_stream(ctx), elem, x->rank,
                                                                  ind->dims, x->dims, axis, x->data, ind->data,
                                                                  ind->dtype, y->data));
}

/* ---- GatherND ---- */

int kiln_cuda_gather_nd_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                 const kiln_graph_value *const *out, char *why, size_t cap) {
    return kiln_cuda_data_movable(n, in, 0, why, cap) && index_type_ok(n, in, 1, 1, why, cap);
}

kiln_status kiln_cuda_gather_nd_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(input_elem(ctx, &x, &elem));
    KILN_TRY(kiln_need_input(ctx, 1, &ind));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    int b = ctx->opset >= 12 ? (int)kiln_attr_int(ctx->node, "batch_dims", 0) : 0, q = ind->rank;
    if (q < 1 || b < 0 || b >= q) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bad batch_dims or indices");
    int k = (int)ind->dims[q - 1];
    int64_t tuples = kiln_dims_numel(q - 1 - b, ind->dims + b);
    return kiln_cuda_data_launched(ctx, kiln_cuda_gather_nd(kiln_cuda_data_stream(ctx), elem, x->rank, x->dims, b,
                                                            k, tuples, x->data, ind->data, y->data));
}

/* ---- ScatterND (reduction "none" only) ---- */

int kiln_cuda_scatter_nd_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                  const kiln_graph_value *const *out, char *why, size_t cap) {
    const char *red = kiln_attr_string(n, "reduction", "none");
    if (strcmp(red, "none") != 0) {
        snprintf(why, cap, "reduction '%s' is not supported (only 'none')", red);
        return 0;
    }
    if (n->n_in < 3 || !in[2]) {
        snprintf(why, cap, "input 'updates' is missing");
        return 0;
    }
    return kiln_cuda_data_movable(n, in, 0, why, cap) && index_type_ok(n, in, 1, 1, why, cap) &&
           kiln_cuda_data_movable(n, in, 2, why, cap);
}

kiln_status kiln_cuda_scatter_nd_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *ind, *upd, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(input_elem(ctx, &x, &elem));
    KILN_TRY(kiln_need_input(ctx, 1, &ind));
    KILN_TRY(kiln_need_input(ctx, 2, &upd));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    if (ind->rank < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices must have rank >= 1");
    int k = (int)ind->dims[ind->rank - 1];
    int64_t tuples = kiln_dims_numel(ind->rank - 1, ind->dims);
    return kiln_cuda_data_launched(ctx, kiln_cuda_scatter_nd(kiln_cuda_data_stream(ctx), elem, x->rank, x->dims, k,
                                                             tuples, x->data, ind->data, upd->data, y->data));
}
