/* Sequence building blocks: SequenceEmpty, SequenceConstruct, SequenceInsert, SequenceErase,
 * SequenceAt, SequenceLength, and the op table of the sequence family (SplitToSequence and
 * ConcatFromSequence live in sequence_split.c / sequence_concat.c).
 *
 * Ops producing a sequence are KILN_OP_DYNAMIC: infer only runs in static mode, so compute
 * validates again. Sequence items are deep copies: a sequence owns every tensor in it. */
#include "sequence_ops.h"
#include "sequence_util.h"

/* ---- SequenceEmpty ---- */

static kiln_status empty_dtype(kiln_ctx *ctx, int *dt) {
    *dt = (int)kiln_attr_int(ctx->node, "dtype", KILN_DTYPE_FLOAT);
    if (!kiln_dtype_valid(*dt) || *dt == KILN_DTYPE_UNDEFINED)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute 'dtype' = %d is not an element type", *dt);
    return KILN_OK;
}

static kiln_status seq_empty_infer(kiln_ctx *ctx) {
    int dt;
    KILN_TRY(empty_dtype(ctx, &dt));
    kiln_seq_mark_output(ctx, 0, dt);
    return KILN_OK;
}

static kiln_status seq_empty_compute(kiln_ctx *ctx) {
    int dt;
    KILN_TRY(empty_dtype(ctx, &dt));
    return kiln_seq_emit(ctx, 0, dt, 0, NULL);
}

/* ---- SequenceConstruct ---- */

static kiln_status construct_check(kiln_ctx *ctx, int *dt) {
    if (ctx->n_in < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "SequenceConstruct needs at least one input");
    *dt = 0;
    for (int i = 0; i < ctx->n_in; i++) {
        kiln_tensor *t;
        KILN_TRY(kiln_need_input(ctx, i, &t));
        if (i == 0) *dt = t->dtype;
        else if (t->dtype != *dt)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input %d has element type %s but input 0 has %s", i,
                             kiln_seq_dt(t->dtype), kiln_seq_dt(*dt));
    }
    return KILN_OK;
}

static kiln_status seq_construct_infer(kiln_ctx *ctx) {
    int dt;
    KILN_TRY(construct_check(ctx, &dt));
    kiln_seq_mark_output(ctx, 0, dt);
    return KILN_OK;
}

static kiln_status seq_construct_compute(kiln_ctx *ctx) {
    int dt;
    KILN_TRY(construct_check(ctx, &dt));
    kiln_tensor *items = calloc((size_t)ctx->n_in, sizeof *items);
    if (!items) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < ctx->n_in; i++) {
        kiln_status st = kiln_tensor_copy(&items[i], kiln_input(ctx, i), ctx->err);
        if (st != KILN_OK) {
            kiln_seq_items_free(items, i);
            return st;
        }
    }
    return kiln_seq_emit(ctx, 0, dt, ctx->n_in, items);
}

/* ---- SequenceInsert / SequenceErase ---- */

/* Copies seq's items into a new array with one slot left out (skip >= 0) or one extra slot
 * left empty at `gap` (gap >= 0). */
static kiln_status copy_items(kiln_ctx *ctx, const kiln_value *seq, int skip, int gap,
                              kiln_tensor **out, int *n_out) {
    int n = seq->seq_len + (gap >= 0) - (skip >= 0);
    kiln_tensor *items = calloc((size_t)(n > 0 ? n : 1), sizeof *items);
    if (!items) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    int k = 0;
    for (int s = 0; s <= seq->seq_len; s++) {
        if (s == gap) k++;
        if (s == seq->seq_len) break;
        if (s == skip) continue;
        kiln_status st = kiln_tensor_copy(&items[k++], &seq->seq[s], ctx->err);
        if (st != KILN_OK) {
            kiln_seq_items_free(items, n);
            return st;
        }
    }
    *out = items;
    *n_out = n;
    return KILN_OK;
}

static kiln_status seq_insert_check(kiln_ctx *ctx, const kiln_value **seq, kiln_tensor **t) {
    KILN_TRY(kiln_seq_input(ctx, 0, seq));
    KILN_TRY(kiln_need_input(ctx, 1, t));
    /* an empty sequence read from a proto may not record its element type */
    if (*seq && (*t)->dtype != (*seq)->seq_dtype && (*seq)->seq_dtype != KILN_DTYPE_UNDEFINED)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "tensor has element type %s but the sequence holds %s",
                         kiln_seq_dt((*t)->dtype), kiln_seq_dt((*seq)->seq_dtype));
    return KILN_OK;
}

static kiln_status seq_insert_infer(kiln_ctx *ctx) {
    const kiln_value *seq;
    kiln_tensor *t;
    KILN_TRY(seq_insert_check(ctx, &seq, &t));
    kiln_seq_mark_output(ctx, 0, t->dtype);
    return KILN_OK;
}

static kiln_status seq_insert_compute(kiln_ctx *ctx) {
    const kiln_value *seq;
    kiln_tensor *t;
    KILN_TRY(seq_insert_check(ctx, &seq, &t));
    int64_t pos = seq->seq_len;
    int has_pos;
    KILN_TRY(kiln_seq_position(ctx, 2, &pos, &has_pos));
    if (pos < -(int64_t)seq->seq_len || pos > seq->seq_len)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "position %lld is outside [-%d, %d] for a sequence of %d tensors",
                         (long long)pos, seq->seq_len, seq->seq_len, seq->seq_len);
    if (pos < 0) pos += seq->seq_len;
    kiln_tensor *items;
    int n;
    KILN_TRY(copy_items(ctx, seq, -1, (int)pos, &items, &n));
    kiln_status st = kiln_tensor_copy(&items[pos], t, ctx->err);
    if (st != KILN_OK) {
        kiln_seq_items_free(items, n);
        return st;
    }
    return kiln_seq_emit(ctx, 0, t->dtype, n, items);
}

static kiln_status seq_erase_infer(kiln_ctx *ctx) {
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    int64_t pos;
    int has_pos;
    KILN_TRY(kiln_seq_position(ctx, 1, &pos, &has_pos));
    kiln_seq_mark_output(ctx, 0, seq ? seq->seq_dtype : 0);
    return KILN_OK;
}

static kiln_status seq_erase_compute(kiln_ctx *ctx) {
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    int64_t pos = seq->seq_len - 1;
    int has_pos;
    KILN_TRY(kiln_seq_position(ctx, 1, &pos, &has_pos));
    if (seq->seq_len == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cannot erase from an empty sequence");
    if (pos < -(int64_t)seq->seq_len || pos >= seq->seq_len)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "position %lld is outside [-%d, %d] for a sequence of %d tensors",
                         (long long)pos, seq->seq_len, seq->seq_len - 1, seq->seq_len);
    if (pos < 0) pos += seq->seq_len;
    kiln_tensor *items;
    int n;
    KILN_TRY(copy_items(ctx, seq, (int)pos, -1, &items, &n));
    return kiln_seq_emit(ctx, 0, seq->seq_dtype, n, items);
}

/* ---- SequenceAt / SequenceLength ---- */

static kiln_status seq_at_infer(kiln_ctx *ctx) {
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    int64_t pos = 0;
    int has_pos;
    KILN_TRY(kiln_seq_position(ctx, 1, &pos, &has_pos));
    if (!(ctx->n_in > 1 && ctx->in[1]))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input 'position'");
    if (ctx->static_mode || !seq || !has_pos)
        return kiln_set_output_unknown(ctx, 0, seq ? seq->seq_dtype : 0);
    if (pos < -(int64_t)seq->seq_len || pos >= seq->seq_len)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "position %lld is outside [-%d, %d] for a sequence of %d tensors",
                         (long long)pos, seq->seq_len, seq->seq_len - 1, seq->seq_len);
    if (pos < 0) pos += seq->seq_len;
    return kiln_set_output_like(ctx, 0, &seq->seq[pos]);
}

static kiln_status seq_at_compute(kiln_ctx *ctx) {
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    int64_t pos = 0;
    int has_pos;
    KILN_TRY(kiln_seq_position(ctx, 1, &pos, &has_pos));
    if (!has_pos || pos < -(int64_t)seq->seq_len || pos >= seq->seq_len)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "position %lld is outside the sequence of %d",
                         (long long)pos, seq->seq_len);
    if (pos < 0) pos += seq->seq_len;
    kiln_tensor *out = kiln_output(ctx, 0);
    if (!out) return KILN_OK;
    if (!kiln_shape_equal(out, &seq->seq[pos]) || out->dtype != seq->seq[pos].dtype)
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output was not shaped like the selected tensor");
    return kiln_seq_copy_elems(ctx, out, &seq->seq[pos]);
}

static kiln_status seq_length_infer(kiln_ctx *ctx) {
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    return kiln_set_output(ctx, 0, KILN_DTYPE_INT64, 0, NULL);
}

static kiln_status seq_length_compute(kiln_ctx *ctx) {
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    kiln_tensor *out = kiln_output(ctx, 0);
    if (out) *(int64_t *)out->data = seq->seq_len;
    return KILN_OK;
}

const kiln_op kiln_ops_sequence[] = {
    {"", "SequenceEmpty", 11, KILN_OP_DYNAMIC, NULL, seq_empty_infer, seq_empty_compute, NULL},
    {"", "SequenceConstruct", 11, KILN_OP_DYNAMIC, NULL, seq_construct_infer, seq_construct_compute, NULL},
    {"", "SequenceInsert", 11, KILN_OP_DYNAMIC, NULL, seq_insert_infer, seq_insert_compute, NULL},
    {"", "SequenceErase", 11, KILN_OP_DYNAMIC, NULL, seq_erase_infer, seq_erase_compute, NULL},
    {"", "SequenceAt", 11, 0, NULL, seq_at_infer, seq_at_compute, NULL},
    {"", "SequenceLength", 11, 0, NULL, seq_length_infer, seq_length_compute, NULL},
    {"", "SplitToSequence", 11, KILN_OP_DYNAMIC, NULL, kiln_split_to_sequence_infer,
     kiln_split_to_sequence_compute, NULL},
    {"", "ConcatFromSequence", 11, 0, NULL, kiln_concat_from_sequence_infer,
     kiln_concat_from_sequence_compute, NULL},
    {0},
};
