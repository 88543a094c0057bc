/* ConcatFromSequence (opset 11): numpy.concatenate (new_axis = 0) or numpy.stack (new_axis = 1)
 * over the tensors of a sequence. */
#include "sequence_ops.h"
#include "sequence_util.h"

/* Checks the items against each other and computes the output shape. */
static kiln_status concat_shape(kiln_ctx *ctx, const kiln_value *seq, int *axis_out, int *rank_out,
                                int64_t *dims) {
    int64_t new_axis = kiln_attr_int(ctx->node, "new_axis", 0);
    if (new_axis != 0 && new_axis != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "new_axis must be 0 or 1, got %lld",
                         (long long)new_axis);
    if (!kiln_has_attr(ctx->node, "axis"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "missing required attribute 'axis'");
    if (seq->seq_len == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cannot concatenate an empty sequence");
    const kiln_tensor *first = &seq->seq[0];
    const int r = first->rank;
    if (r + (int)new_axis < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cannot concatenate scalars without new_axis");
    if (r + new_axis > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "result would have rank above %d", KILN_MAX_RANK);
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), r + (int)new_axis, "axis", &axis));
    int64_t total = 0;
    for (int i = 0; i < seq->seq_len; i++) {
        const kiln_tensor *t = &seq->seq[i];
        char a[96], b[96];
        if (t->dtype != first->dtype || t->rank != r)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "item %d is %s but item 0 is %s", i,
                             kiln_shape_str(t, a, sizeof a), kiln_shape_str(first, b, sizeof b));
        for (int d = 0; d < r; d++)
            if (t->dims[d] != first->dims[d] && (new_axis || d != axis))
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "item %d is %s but item 0 is %s: they differ off axis %d", i,
                                 kiln_shape_str(t, a, sizeof a), kiln_shape_str(first, b, sizeof b),
                                 axis);
        if (kiln_add_overflow_i64(total, new_axis ? 1 : t->dims[axis], &total))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the items' sizes along axis %d overflow int64", axis);
    }
    int k = 0;
    for (int d = 0; d < r + new_axis; d++) {
        if (d == axis) dims[d] = total;
        else dims[d] = first->dims[k];
        if (d != axis || !new_axis) k++;
    }
    *axis_out = axis;
    *rank_out = r + (int)new_axis;
    return KILN_OK;
}

kiln_status kiln_concat_from_sequence_infer(kiln_ctx *ctx) {
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    if (ctx->static_mode || !seq) return kiln_set_output_unknown(ctx, 0, seq ? seq->seq_dtype : 0);
    int axis, rank;
    int64_t dims[KILN_MAX_RANK];
    KILN_TRY(concat_shape(ctx, seq, &axis, &rank, dims));
    return kiln_set_output(ctx, 0, seq->seq[0].dtype, rank, dims);
}

kiln_status kiln_concat_from_sequence_compute(kiln_ctx *ctx) {
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    int axis, rank;
    int64_t dims[KILN_MAX_RANK];
    KILN_TRY(concat_shape(ctx, seq, &axis, &rank, dims));
    kiln_tensor *out = kiln_output(ctx, 0);
    if (!out) return KILN_OK;
    if (out->rank != rank || out->dtype != seq->seq[0].dtype)
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output was not shaped as inferred");
    const int new_axis = rank != seq->seq[0].rank;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= dims[d];
    for (int d = axis + 1; d < rank; d++) inner *= dims[d];
    int64_t offset = 0;
    for (int i = 0; i < seq->seq_len; i++) {
        const kiln_tensor *t = &seq->seq[i];
        const int64_t ext = new_axis ? 1 : t->dims[axis];
        for (int64_t o = 0; o < outer; o++)
            KILN_TRY(kiln_seq_copy_range(ctx, t->dtype, out->data, (o * dims[axis] + offset) * inner,
                                         t->data, o * ext * inner, ext * inner));
        offset += ext;
    }
    return KILN_OK;
}
