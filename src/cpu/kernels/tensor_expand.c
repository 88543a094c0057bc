/* Expand and Tile, both strided copies from a smaller source: Expand reads broadcast dims with
 * stride 0; Tile views each output axis as (repeat, dim) and reads the repeat with stride 0. */
#include "cpu/kernels/tensor_common.h"
#include "cpu/kernels/tensor_ops.h"

/* ---- Expand ---- */

static kiln_status expand_shape(kiln_ctx *ctx, const kiln_tensor *x, const int64_t *shape, int n,
                                int *rank, int64_t *out) {
    int r = x->rank > n ? x->rank : n;
    if (r > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "output rank %d exceeds %d", r, KILN_MAX_RANK);
    for (int i = 0; i < r; i++) {
        int xi = i - (r - x->rank), si = i - (r - n);
        int64_t a = xi >= 0 ? x->dims[xi] : 1, b = si >= 0 ? shape[si] : 1;
        if (si >= 0 && b < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "shape[%d] = %lld is negative", si, (long long)b);
        if (a == b || b == 1) out[i] = a;
        else if (a == 1 || a < 0) out[i] = b; /* a symbolic dim must be 1 or b */
        else
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input dim %d (%lld) cannot be broadcast to %lld", xi, (long long)a, (long long)b);
    }
    *rank = r;
    return KILN_OK;
}

static kiln_status expand_target(kiln_ctx *ctx, kiln_tensor **st) {
    KILN_TRY(kiln_need_input(ctx, 1, st));
    if ((*st)->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'shape' must be int64, got %s",
                         kiln_dtype_name((kiln_dtype)(*st)->dtype));
    if ((*st)->rank > 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'shape' must be 1-D, got rank %d", (*st)->rank);
    return KILN_OK;
}

kiln_status kiln_tk_expand_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *st;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(expand_target(ctx, &st));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int64_t shape[KILN_MAX_RANK], out[KILN_MAX_RANK];
    int n = 0, r = 0;
    if (!kiln_tk_has_values(ctx, st)) {
        if (st->rank != 1 || st->dims[0] < 0 || st->dims[0] > KILN_MAX_RANK)
            return kiln_set_output_unknown(ctx, 0, x->dtype);
        /* unknown targets: a known input dim > 1 survives, everything else is open */
        r = x->rank > st->dims[0] ? x->rank : (int)st->dims[0];
        for (int i = 0; i < r; i++) {
            int xi = i - (r - x->rank);
            out[i] = xi >= 0 && x->dims[xi] > 1 ? x->dims[xi] : KILN_DIM_UNKNOWN;
        }
        return kiln_set_output(ctx, 0, x->dtype, r, out);
    }
    KILN_TRY(kiln_tk_read_ints(ctx, st, "input 'shape'", shape, KILN_MAX_RANK, &n));
    KILN_TRY(expand_shape(ctx, x, shape, n, &r, out));
    return kiln_set_output(ctx, 0, x->dtype, r, out);
}

kiln_status kiln_tk_expand_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    if (kiln_numel(y) <= 0) return KILN_OK;
    int r = y->rank;
    int64_t in_str[KILN_MAX_RANK], out_str[KILN_MAX_RANK], src_str[KILN_MAX_RANK];
    kiln_strides(x->rank, x->dims, in_str);
    kiln_strides(r, y->dims, out_str);
    for (int i = 0; i < r; i++) {
        int xi = i - (r - x->rank);
        if (xi < 0 || x->dims[xi] == 1) {
            src_str[i] = 0;
        } else {
            if (x->dims[xi] != y->dims[i])
                return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output shape does not match the input");
            src_str[i] = in_str[xi];
        }
    }
    kiln_tk_strided_copy(ctx, elem, r, y->dims, y->data, out_str, x->data, src_str);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

/* ---- Tile ---- */

/* Repeats per axis: input 'repeats' (opset 6+), or inputs tiles + axis (opset 1). *known = 0
 * when the values are not available yet. */
static kiln_status tile_repeats(kiln_ctx *ctx, const kiln_tensor *x, int64_t *reps, int *known) {
    *known = 1;
    kiln_tensor *rt;
    KILN_TRY(kiln_need_input(ctx, 1, &rt));
    if (ctx->opset < 6) {
        kiln_tensor *at;
        KILN_TRY(kiln_need_input(ctx, 2, &at));
        if (!kiln_tk_has_values(ctx, rt) || !kiln_tk_has_values(ctx, at)) {
            *known = 0;
            return KILN_OK;
        }
        int64_t tiles, axis;
        KILN_TRY(kiln_tk_read_scalar_i64(ctx, rt, "input 'tiles'", &tiles));
        KILN_TRY(kiln_tk_read_scalar_i64(ctx, at, "input 'axis'", &axis));
        int a;
        KILN_TRY(kiln_norm_axis(ctx, axis, x->rank, "axis", &a));
        if (tiles < 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "tiles is negative (%lld)", (long long)tiles);
        for (int i = 0; i < x->rank; i++) reps[i] = i == a ? tiles : 1;
        return KILN_OK;
    }
    if (rt->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'repeats' must be int64, got %s",
                         kiln_dtype_name((kiln_dtype)rt->dtype));
    if (!kiln_tk_has_values(ctx, rt)) {
        *known = 0;
        return KILN_OK;
    }
    int n;
    KILN_TRY(kiln_tk_read_ints(ctx, rt, "input 'repeats'", reps, KILN_MAX_RANK, &n));
    if (rt->rank != 1 || n != x->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "repeats has %d values but the input has rank %d", n,
                         x->rank);
    for (int i = 0; i < n; i++)
        if (reps[i] < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "repeats[%d] = %lld is negative", i, (long long)reps[i]);
    return KILN_OK;
}

kiln_status kiln_tk_tile_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int64_t reps[KILN_MAX_RANK], out[KILN_MAX_RANK];
    int known;
    KILN_TRY(tile_repeats(ctx, x, reps, &known));
    for (int i = 0; i < x->rank; i++) {
        if (!known) out[i] = KILN_DIM_UNKNOWN;
        else if (reps[i] == 1 || x->dims[i] == 0) out[i] = x->dims[i];
        else if (reps[i] == 0) out[i] = 0;
        else if (x->dims[i] < 0) out[i] = KILN_DIM_UNKNOWN;
        else if (kiln_mul_overflow_i64(x->dims[i], reps[i], &out[i]))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output dimension %d (%lld x repeats %lld) overflows",
                             i, (long long)x->dims[i], (long long)reps[i]);
    }
    return kiln_set_output(ctx, 0, x->dtype, x->rank, out);
}

kiln_status kiln_tk_tile_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    int64_t reps[KILN_MAX_RANK];
    int known;
    KILN_TRY(tile_repeats(ctx, x, reps, &known));
    if (kiln_numel(y) <= 0) return KILN_OK;
    int r = x->rank;
    int64_t in_str[KILN_MAX_RANK], out_str[KILN_MAX_RANK];
    int64_t vd[KILN_TK_MAX_VIEW], vds[KILN_TK_MAX_VIEW], vss[KILN_TK_MAX_VIEW];
    kiln_strides(r, x->dims, in_str);
    kiln_strides(r, y->dims, out_str);
    for (int i = 0; i < r; i++) {
        /* output index o = rep * d + k: the rep part steps d output rows, the k part one */
        vd[2 * i] = reps[i];
        vds[2 * i] = x->dims[i] * out_str[i];
        vss[2 * i] = 0;
        vd[2 * i + 1] = x->dims[i];
        vds[2 * i + 1] = out_str[i];
        vss[2 * i + 1] = in_str[i];
    }
    kiln_tk_strided_copy(ctx, elem, 2 * r, vd, y->data, vds, x->data, vss);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}
