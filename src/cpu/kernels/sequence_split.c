/* SplitToSequence (opsets 11, 24): cuts a tensor along an axis into a sequence of tensors. */
#include "sequence_ops.h"
#include "sequence_util.h"

typedef struct split_plan {
    int axis;
    int squeeze;      /* no 'split' input and keepdims = 0: the axis is dropped */
    int64_t n;        /* number of pieces */
    int64_t *sizes;   /* n sizes along axis (heap) */
} split_plan;

/* Validates the inputs; with concrete data also decides the pieces (plan->sizes). */
static kiln_status plan_split(kiln_ctx *ctx, const kiln_tensor *x, split_plan *p, int want_sizes) {
    p->sizes = NULL;
    p->n = 0;
    p->axis = 0;
    const kiln_tensor *split = ctx->n_in > 1 ? kiln_input(ctx, 1) : NULL;
    if (ctx->n_in > 1 && ctx->in[1] && !split)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'split' must be a tensor");
    if (split && split->dtype != KILN_DTYPE_INT32 && split->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input 'split' has element type %s, expected int32 or int64",
                         kiln_seq_dt(split->dtype));
    if (split && split->rank > 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input 'split' must be a scalar or 1-D, got rank %d", split->rank);
    p->squeeze = !split && kiln_attr_int(ctx->node, "keepdims", 1) == 0;
    if (x->rank < 0) return KILN_OK;
    if (x->rank == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cannot split a scalar");
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), x->rank, "axis", &p->axis));
    if (!want_sizes) return KILN_OK;

    const int64_t dim = x->dims[p->axis];
    if (!split) {
        p->n = dim;
    } else if (split->rank == 0) {
        int64_t k = split->dtype == KILN_DTYPE_INT32 ? *(const int32_t *)split->data
                                                      : *(const int64_t *)split->data;
        if (k <= 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scalar 'split' must be positive, got %lld",
                             (long long)k);
        p->n = (dim + k - 1) / k;
        p->sizes = malloc((size_t)(p->n > 0 ? p->n : 1) * sizeof *p->sizes);
        if (!p->sizes) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        for (int64_t i = 0; i < p->n; i++) p->sizes[i] = i + 1 < p->n ? k : dim - k * (p->n - 1);
        return KILN_OK;
    } else {
        p->n = split->dims[0];
    }
    if (p->n > 0x7fffffff)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many pieces (%lld)", (long long)p->n);
    p->sizes = malloc((size_t)(p->n > 0 ? p->n : 1) * sizeof *p->sizes);
    if (!p->sizes) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    int64_t sum = 0;
    for (int64_t i = 0; i < p->n; i++) {
        p->sizes[i] = !split ? 1
                    : split->dtype == KILN_DTYPE_INT32 ? ((const int32_t *)split->data)[i]
                                                       : ((const int64_t *)split->data)[i];
        if (p->sizes[i] < 0) {
            int64_t bad = p->sizes[i];
            free(p->sizes);
            p->sizes = NULL;
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "split[%lld] = %lld is negative",
                             (long long)i, (long long)bad);
        }
        if (kiln_add_overflow_i64(sum, p->sizes[i], &sum)) { /* a wrapped sum could equal dim */
            free(p->sizes);
            p->sizes = NULL;
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "split sizes overflow int64 (at split[%lld])",
                             (long long)i);
        }
    }
    if (sum != dim) {
        free(p->sizes);
        p->sizes = NULL;
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "split sizes add up to %lld but axis %d has %lld", (long long)sum, p->axis,
                         (long long)dim);
    }
    return KILN_OK;
}

kiln_status kiln_split_to_sequence_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    split_plan p;
    KILN_TRY(plan_split(ctx, x, &p, 0));
    kiln_seq_mark_output(ctx, 0, x->dtype);
    return KILN_OK;
}

kiln_status kiln_split_to_sequence_compute(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    split_plan p;
    KILN_TRY(plan_split(ctx, x, &p, 1));
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < p.axis; d++) outer *= x->dims[d];
    for (int d = p.axis + 1; d < x->rank; d++) inner *= x->dims[d];
    const int64_t dim = x->dims[p.axis];

    kiln_tensor *items = calloc((size_t)(p.n > 0 ? p.n : 1), sizeof *items);
    if (!items) {
        free(p.sizes);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    kiln_status st = KILN_OK;
    int64_t start = 0;
    for (int64_t i = 0; i < p.n && st == KILN_OK; i++) {
        const int64_t len = p.sizes[i];
        int64_t dims[KILN_MAX_RANK];
        int rank = 0;
        for (int d = 0; d < x->rank; d++) {
            if (d == p.axis && p.squeeze) continue;
            dims[rank++] = d == p.axis ? len : x->dims[d];
        }
        kiln_tensor_set_shape(&items[i], x->dtype, rank, dims);
        st = kiln_tensor_alloc(&items[i], ctx->err);
        for (int64_t o = 0; o < outer && st == KILN_OK; o++)
            st = kiln_seq_copy_range(ctx, x->dtype, items[i].data, o * len * inner, x->data,
                                     (o * dim + start) * inner, len * inner);
        start += len;
    }
    free(p.sizes);
    if (st != KILN_OK) {
        kiln_seq_items_free(items, (int)p.n);
        return st;
    }
    return kiln_seq_emit(ctx, 0, x->dtype, (int)p.n, items);
}
