/* Concat and Split: each input (output) is a box of rows [outer, part] inside the big tensor,
 * copied with the strided engine (contiguous runs become memcpy, big copies are threaded). */
#include "cpu/kernels/tensor_common.h"
#include "cpu/kernels/tensor_ops.h"
#include <stdlib.h>

static int64_t axis_attr(kiln_ctx *ctx, int64_t dflt) { return kiln_attr_int(ctx->node, "axis", dflt); }

/* ---- Concat ---- */

kiln_status kiln_tk_concat_infer(kiln_ctx *ctx) {
    if (ctx->n_in < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Concat needs at least one input");
    if (ctx->opset >= 4 && !kiln_has_attr(ctx->node, "axis"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute 'axis' is required");
    kiln_tensor *first;
    KILN_TRY(kiln_need_input(ctx, 0, &first));
    int rank = -1;
    for (int i = 0; i < ctx->n_in; i++) {
        kiln_tensor *t;
        KILN_TRY(kiln_need_input(ctx, i, &t));
        if (t->dtype != first->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d is %s but input 0 is %s", i,
                             kiln_dtype_name((kiln_dtype)t->dtype), kiln_dtype_name((kiln_dtype)first->dtype));
        if (t->rank < 0) continue;
        if (rank >= 0 && t->rank != rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d has rank %d, expected %d", i, t->rank, rank);
        rank = t->rank;
    }
    if (rank < 0) return kiln_set_output_unknown(ctx, 0, first->dtype);
    if (rank == 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cannot concatenate scalars");
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, axis_attr(ctx, 1), rank, "axis", &axis));
    int64_t out[KILN_MAX_RANK];
    for (int k = 0; k < rank; k++) out[k] = k == axis ? 0 : KILN_DIM_UNKNOWN;
    int unknown_rank = 0;
    for (int i = 0; i < ctx->n_in; i++) {
        kiln_tensor *t = kiln_input(ctx, i);
        if (t->rank < 0) {
            unknown_rank = 1;
            continue;
        }
        for (int k = 0; k < rank; k++) {
            if (k == axis) {
                if (out[k] < 0 || t->dims[k] < 0) out[k] = KILN_DIM_UNKNOWN;
                else if (kiln_add_overflow_i64(out[k], t->dims[k], &out[k]))
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the inputs' sizes along axis %d overflow int64",
                                     axis);
                continue;
            }
            if (kiln_tk_dims_conflict(out[k], t->dims[k]))
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "input %d has size %lld at dim %d, other inputs have %lld", i,
                                 (long long)t->dims[k], k, (long long)out[k]);
            out[k] = kiln_tk_dim_merge(out[k], t->dims[k]);
        }
    }
    if (unknown_rank) out[axis] = KILN_DIM_UNKNOWN;
    return kiln_set_output(ctx, 0, first->dtype, rank, out);
}

/* The output read as rows of out_row elements, each the inputs' parts side by side; units of
 * UNIT elements of the output in order, so one job covers every input. A copy per input was a
 * job per input: at 16 threads SqueezeNet's eight two-input Concats spent more time handing out
 * and waiting on their 16 jobs than copying (0.3 of its 1.8 ms at batch 1). */
typedef struct concat_job {
    char *y;
    const char **src;
    int64_t *start; /* n + 1 offsets of the parts inside a row */
    int n;
    int64_t out_row, total, unit;
    size_t elem;
} concat_job;

static void concat_units(void *arg, int64_t u0, int64_t u1) {
    const concat_job *j = arg;
    int64_t a = u0 * j->unit, b = u1 * j->unit < j->total ? u1 * j->unit : j->total;
    int i = 0;
    while (a < b) {
        int64_t row = a / j->out_row, c = a % j->out_row;
        while (c >= j->start[i + 1]) i++;
        while (c < j->start[i]) i--;
        int64_t part = j->start[i + 1] - j->start[i], take = j->start[i + 1] - c;
        if (take > b - a) take = b - a;
        memcpy(j->y + (size_t)a * j->elem, j->src[i] + (size_t)(row * part + c - j->start[i]) * j->elem,
               (size_t)take * j->elem);
        a += take;
        if (c + take == j->out_row) i = 0;
    }
}

static kiln_status concat_one_job(kiln_ctx *ctx, kiln_tensor *y, size_t elem, int axis, int64_t outer,
                                  int64_t inner, int64_t out_row) {
    concat_job j = {.y = y->data, .n = ctx->n_in, .out_row = out_row, .elem = elem};
    j.src = malloc(sizeof(*j.src) * (size_t)ctx->n_in);
    j.start = malloc(sizeof(*j.start) * (size_t)(ctx->n_in + 1));
    if (!j.src || !j.start) {
        free(j.src);
        free(j.start);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    j.start[0] = 0;
    for (int i = 0; i < ctx->n_in; i++) {
        kiln_tensor *t = kiln_input(ctx, i);
        j.src[i] = t->data;
        j.start[i + 1] = j.start[i] + t->dims[axis] * inner;
    }
    if (j.start[ctx->n_in] != out_row) { /* the units would read past the last input */
        free(j.src);
        free(j.start);
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "the inputs do not fill the output");
    }
    j.total = outer * out_row;
    j.unit = (int64_t)(16384 / elem);
    if (j.unit < 1) j.unit = 1;
    kiln_tk_parallel(ctx, (j.total + j.unit - 1) / j.unit, (double)(j.unit * (int64_t)elem), concat_units, &j);
    free(j.src);
    free(j.start);
    return KILN_OK;
}

kiln_status kiln_tk_concat_compute(kiln_ctx *ctx) {
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, y, 0, &elem));
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, axis_attr(ctx, 1), y->rank, "axis", &axis));
    int64_t outer = kiln_dims_numel(axis, y->dims);
    int64_t inner = kiln_dims_numel(y->rank - axis - 1, y->dims + axis + 1);
    int64_t out_row = y->dims[axis] * inner, offset = 0;
    /* rows of at least 256 bytes a part on average: shorter ones are the strided engine's */
    if (y->dtype != KILN_DTYPE_STRING && out_row > 0 && ctx->n_in > 1 &&
        (double)out_row * (double)elem >= 256.0 * ctx->n_in)
        return concat_one_job(ctx, y, elem, axis, outer, inner, out_row);
    for (int i = 0; i < ctx->n_in; i++) {
        kiln_tensor *t = kiln_input(ctx, i);
        int64_t part = t->dims[axis] * inner;
        if (offset + part > out_row)
            return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "input %d does not fit the output", i);
        int64_t dims[2] = {outer, part}, ds[2] = {out_row, 1}, ss[2] = {part, 1};
        if (part > 0)
            kiln_tk_strided_copy(ctx, elem, 2, dims, (char *)y->data + (size_t)offset * elem, ds, t->data, ss);
        offset += part;
    }
    if (y->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

/* ---- Split ---- */

/* Sizes of the n_out parts along axis (dim d, maybe not concrete). *known = 0 when they cannot
 * be told yet (static inference). */
static kiln_status split_sizes(kiln_ctx *ctx, int64_t d, int64_t *sizes, int *known) {
    int n = ctx->n_out;
    int64_t vals[256];
    int cnt = -1;
    *known = 1;
    kiln_tensor *st = (ctx->opset >= 13 || ctx->opset < 2) ? kiln_input(ctx, 1) : NULL;
    if (st && (st->rank < 0 || kiln_numel(st) != 0 || ctx->opset < 13)) {
        if (!kiln_tk_has_values(ctx, st)) {
            *known = 0;
            return KILN_OK;
        }
        KILN_TRY(kiln_tk_read_ints(ctx, st, "input 'split'", vals, 256, &cnt));
    } else if (ctx->opset < 13 && kiln_has_attr(ctx->node, "split")) {
        const int64_t *a = kiln_attr_ints(ctx->node, "split", &cnt);
        if (cnt > 256) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "too many split sizes (%d)", cnt);
        for (int i = 0; i < cnt; i++) vals[i] = a[i];
    }
    if (ctx->opset >= 18 && kiln_has_attr(ctx->node, "num_outputs")) {
        if (cnt >= 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "give either input 'split' or 'num_outputs', not both");
        int64_t no = kiln_attr_int(ctx->node, "num_outputs", 0);
        if (no != n)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "num_outputs is %lld but the node has %d outputs",
                             (long long)no, n);
    }
    if (cnt >= 0) {
        if (cnt != n)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "split has %d sizes but the node has %d outputs", cnt, n);
        int64_t sum = 0;
        for (int i = 0; i < n; i++) {
            if (vals[i] < 0)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "split[%d] = %lld is negative", i, (long long)vals[i]);
            sizes[i] = vals[i];
            /* a wrapped sum could equal the axis: [2^63-1, 2^63-1, 3] adds up to 1 */
            if (kiln_add_overflow_i64(sum, vals[i], &sum))
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "split sizes overflow int64 (at split[%d] = %lld)",
                                 i, (long long)vals[i]);
        }
        if (d >= 0 && sum != d)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "split sizes add up to %lld, the axis has %lld",
                             (long long)sum, (long long)d);
        return KILN_OK;
    }
    if (d < 0) {
        *known = 0;
        return KILN_OK;
    }
    if (d % n == 0) {
        for (int i = 0; i < n; i++) sizes[i] = d / n;
        return KILN_OK;
    }
    if (ctx->opset < 18)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis of size %lld cannot be split evenly into %d parts",
                         (long long)d, n);
    /* opset 18: chunks of ceil(d / n), the last one smaller */
    int64_t chunk = (d + n - 1) / n, last = d - chunk * (n - 1);
    if (last < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis of size %lld cannot be split into %d chunks",
                         (long long)d, n);
    for (int i = 0; i < n; i++) sizes[i] = i == n - 1 ? last : chunk;
    return KILN_OK;
}

kiln_status kiln_tk_split_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (ctx->n_out < 1 || ctx->n_out > 256)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Split has %d outputs", ctx->n_out);
    if (x->rank < 0) {
        for (int i = 0; i < ctx->n_out; i++)
            if (ctx->out[i]) KILN_TRY(kiln_set_output_unknown(ctx, i, x->dtype));
        return KILN_OK;
    }
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, axis_attr(ctx, 0), x->rank, "axis", &axis));
    int64_t sizes[256];
    int known;
    KILN_TRY(split_sizes(ctx, x->dims[axis], sizes, &known));
    for (int i = 0; i < ctx->n_out; i++) {
        if (!ctx->out[i]) continue;
        int64_t dims[KILN_MAX_RANK];
        for (int k = 0; k < x->rank; k++) dims[k] = x->dims[k];
        dims[axis] = known ? sizes[i] : KILN_DIM_UNKNOWN;
        KILN_TRY(kiln_set_output(ctx, i, x->dtype, x->rank, dims));
    }
    return KILN_OK;
}

kiln_status kiln_tk_split_compute(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (ctx->n_out < 1 || ctx->n_out > 256)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Split has %d outputs", ctx->n_out);
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    int axis, known;
    KILN_TRY(kiln_norm_axis(ctx, axis_attr(ctx, 0), x->rank, "axis", &axis));
    int64_t sizes[256];
    KILN_TRY(split_sizes(ctx, x->dims[axis], sizes, &known));
    int64_t outer = kiln_dims_numel(axis, x->dims);
    int64_t inner = kiln_dims_numel(x->rank - axis - 1, x->dims + axis + 1);
    int64_t in_row = x->dims[axis] * inner, offset = 0;
    for (int i = 0; i < ctx->n_out; i++) {
        int64_t part = sizes[i] * inner;
        kiln_tensor *y = kiln_output(ctx, i);
        if (y && part > 0 && outer > 0) {
            int64_t dims[2] = {outer, part}, ds[2] = {part, 1}, ss[2] = {in_row, 1};
            kiln_tk_strided_copy(ctx, elem, 2, dims, y->data, ds, (const char *)x->data + (size_t)offset * elem, ss);
            if (y->dtype == KILN_DTYPE_STRING) KILN_TRY(kiln_tk_own_strings(ctx, y));
        }
        offset += part;
    }
    return KILN_OK;
}
