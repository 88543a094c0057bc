/* Ops that only relabel the shape: Reshape, Flatten, Squeeze, Unsqueeze, Identity. They are
 * registered KILN_OP_ALIAS, so their compute (a copy) runs only when the runtime cannot let the
 * output share the input's bytes. */
#include "cpu/kernels/tensor_common.h"
#include "cpu/kernels/tensor_ops.h"
#include <string.h>

kiln_status kiln_tk_copy_input_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    return kiln_tk_copy_all(ctx, y, x);
}

/* ---- Reshape ---- */

/* The -1 of a Reshape when dims are symbolic: if the symbols of the input are exactly the
 * symbols kept in the output, the remaining factor is a concrete ratio ([B,S,12,64] -> [0,0,-1]). */
static int64_t reshape_symbolic_fill(const kiln_tensor *x, const int64_t *out, int n, int skip) {
    int64_t syms[KILN_MAX_RANK];
    int n_syms = 0;
    int64_t in_conc = 1, out_conc = 1;
    for (int i = 0; i < x->rank; i++) {
        if (x->dims[i] == KILN_DIM_UNKNOWN) return KILN_DIM_UNKNOWN;
        if (KILN_DIM_IS_SYM(x->dims[i])) syms[n_syms++] = x->dims[i];
        else if (kiln_mul_overflow_i64(in_conc, x->dims[i], &in_conc)) return KILN_DIM_UNKNOWN;
    }
    for (int i = 0; i < n; i++) {
        if (i == skip) continue;
        if (out[i] == KILN_DIM_UNKNOWN) return KILN_DIM_UNKNOWN;
        if (out[i] >= 0) {
            if (kiln_mul_overflow_i64(out_conc, out[i], &out_conc)) return KILN_DIM_UNKNOWN;
            continue;
        }
        int k = 0;
        while (k < n_syms && syms[k] != out[i]) k++;
        if (k == n_syms) return KILN_DIM_UNKNOWN;
        syms[k] = syms[--n_syms];
    }
    if (n_syms || out_conc == 0 || in_conc % out_conc) return KILN_DIM_UNKNOWN;
    return in_conc / out_conc;
}

kiln_status kiln_tk_reshape_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int64_t shape[KILN_MAX_RANK], out[KILN_MAX_RANK];
    int n = 0;
    if (ctx->opset < 5) {
        int cnt = 0;
        const int64_t *s = kiln_attr_ints(ctx->node, "shape", &cnt);
        if (!kiln_has_attr(ctx->node, "shape"))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute 'shape' is required");
        if (cnt > KILN_MAX_RANK)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "target rank %d exceeds %d", cnt, KILN_MAX_RANK);
        for (int i = 0; i < cnt; i++) shape[i] = s[i];
        n = cnt;
    } else {
        kiln_tensor *st;
        KILN_TRY(kiln_need_input(ctx, 1, &st));
        if (st->dtype != KILN_DTYPE_INT64)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'shape' must be int64, got %s",
                             kiln_dtype_name((kiln_dtype)st->dtype));
        if (st->rank > 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'shape' must be 1-D, got rank %d",
                             st->rank);
        if (!kiln_tk_has_values(ctx, st)) {
            if (st->rank == 1 && st->dims[0] >= 0 && st->dims[0] <= KILN_MAX_RANK) {
                int64_t unk[KILN_MAX_RANK];
                for (int i = 0; i < st->dims[0]; i++) unk[i] = KILN_DIM_UNKNOWN;
                return kiln_set_output(ctx, 0, x->dtype, (int)st->dims[0], unk);
            }
            return kiln_set_output_unknown(ctx, 0, x->dtype);
        }
        KILN_TRY(kiln_tk_read_ints(ctx, st, "input 'shape'", shape, KILN_MAX_RANK, &n));
    }
    int allowzero = ctx->opset >= 14 ? (int)kiln_attr_int(ctx->node, "allowzero", 0) : 0;
    int neg = -1, has_zero = 0;
    for (int i = 0; i < n; i++) {
        int64_t v = shape[i];
        if (v == -1) {
            if (neg >= 0)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "shape has more than one -1 (%d and %d)",
                                 neg, i);
            neg = i;
            out[i] = KILN_DIM_UNKNOWN;
        } else if (v == 0 && !allowzero) {
            if (x->rank >= 0 && i >= x->rank)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "shape[%d] is 0 (copy the input dim) but the input has rank %d", i, x->rank);
            out[i] = x->rank >= 0 ? x->dims[i] : KILN_DIM_UNKNOWN;
        } else if (v < 0) {
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "shape[%d] = %lld is invalid", i, (long long)v);
        } else {
            if (v == 0) has_zero = 1;
            out[i] = v;
        }
    }
    if (neg >= 0 && has_zero)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "shape has both -1 and 0 with allowzero=1");
    int64_t in_total = kiln_numel(x);
    int64_t known = 1;
    int all_known = 1;
    for (int i = 0; i < n; i++) {
        if (i == neg) continue;
        if (out[i] < 0) all_known = 0;
        else if (kiln_mul_overflow_i64(known, out[i], &known))
            /* a wrapped product could match the input's count: [7, 7905747460161236407] is 1 */
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "the target shape's dims multiply past int64 (at shape[%d] = %lld)", i,
                             (long long)out[i]);
    }
    if (neg >= 0) {
        if (in_total >= 0 && all_known) {
            if (known == 0 || in_total % known)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "cannot reshape %lld elements: the other dims multiply to %lld",
                                 (long long)in_total, (long long)known);
            out[neg] = in_total / known;
        } else if (x->rank >= 0) {
            out[neg] = reshape_symbolic_fill(x, out, n, neg);
        }
    } else if (in_total >= 0 && all_known && in_total != known) {
        char buf[256];
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "cannot reshape input %s (%lld elements) into %lld elements",
                         kiln_shape_str(x, buf, sizeof buf), (long long)in_total, (long long)known);
    }
    return kiln_set_output(ctx, 0, x->dtype, n, out);
}

kiln_status kiln_tk_reshape_compute(kiln_ctx *ctx) { return kiln_tk_copy_input_compute(ctx); }

/* ---- Flatten ---- */

kiln_status kiln_tk_flatten_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int64_t axis = kiln_attr_int(ctx->node, "axis", 1);
    if (x->rank < 0) {
        int64_t unk[2] = {KILN_DIM_UNKNOWN, KILN_DIM_UNKNOWN};
        return kiln_set_output(ctx, 0, x->dtype, 2, unk);
    }
    int r = x->rank;
    if (axis < 0 && ctx->opset >= 11) axis += r;
    if (axis < 0 || axis > r)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %lld is out of range for rank %d",
                         (long long)kiln_attr_int(ctx->node, "axis", 1), r);
    int64_t out[2] = {kiln_tk_dims_product((int)axis, x->dims),
                      kiln_tk_dims_product(r - (int)axis, x->dims + axis)};
    return kiln_set_output(ctx, 0, x->dtype, 2, out);
}

kiln_status kiln_tk_flatten_compute(kiln_ctx *ctx) { return kiln_tk_copy_input_compute(ctx); }

/* ---- Squeeze / Unsqueeze ---- */

/* The axes list of (Un)squeeze: attribute before opset 13, optional input 1 from 13.
 * *have = 0: no axes given; *have = -1: given but not known yet (static inference). */
static kiln_status read_axes(kiln_ctx *ctx, int64_t *axes, int *n, int *have) {
    *n = 0;
    *have = 0;
    if (ctx->opset < 13) {
        int cnt = 0;
        const int64_t *a = kiln_attr_ints(ctx->node, "axes", &cnt);
        if (!a || !kiln_has_attr(ctx->node, "axes")) return KILN_OK;
        if (cnt > KILN_MAX_RANK)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many axes (%d)", cnt);
        memcpy(axes, a, (size_t)cnt * sizeof *axes);
        *n = cnt;
        *have = 1;
        return KILN_OK;
    }
    kiln_tensor *t = kiln_input(ctx, 1);
    if (!t) return KILN_OK;
    if (!kiln_tk_has_values(ctx, t)) {
        *have = -1;
        return KILN_OK;
    }
    KILN_TRY(kiln_tk_read_ints(ctx, t, "input 'axes'", axes, KILN_MAX_RANK, n));
    *have = 1;
    return KILN_OK;
}

kiln_status kiln_tk_squeeze_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int64_t axes[KILN_MAX_RANK], out[KILN_MAX_RANK];
    int n, have;
    KILN_TRY(read_axes(ctx, axes, &n, &have));
    if (x->rank < 0 || have < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int r = x->rank, drop[KILN_MAX_RANK] = {0}, m = 0;
    if (have && n > 0) { /* an empty axes list squeezes every 1, like an absent one */
        for (int i = 0; i < n; i++) {
            int a;
            KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &a));
            if (drop[a])
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %d appears twice in axes", a);
            if (x->dims[a] >= 0 && x->dims[a] != 1)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cannot squeeze axis %d of size %lld", a,
                                 (long long)x->dims[a]);
            drop[a] = 1;
        }
    } else {
        for (int i = 0; i < r; i++) {
            if (x->dims[i] < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
            drop[i] = x->dims[i] == 1;
        }
    }
    for (int i = 0; i < r; i++)
        if (!drop[i]) out[m++] = x->dims[i];
    return kiln_set_output(ctx, 0, x->dtype, m, out);
}

kiln_status kiln_tk_squeeze_compute(kiln_ctx *ctx) { return kiln_tk_copy_input_compute(ctx); }

kiln_status kiln_tk_unsqueeze_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int64_t axes[KILN_MAX_RANK], out[KILN_MAX_RANK];
    int n, have;
    KILN_TRY(read_axes(ctx, axes, &n, &have));
    if (!have) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axes are required");
    if (x->rank < 0 || have < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int r = x->rank + n;
    if (r > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "output rank %d exceeds %d", r, KILN_MAX_RANK);
    int ins[KILN_MAX_RANK] = {0};
    for (int i = 0; i < n; i++) {
        int a;
        KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &a));
        if (ins[a]) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %d appears twice in axes", a);
        ins[a] = 1;
    }
    for (int i = 0, k = 0; i < r; i++) out[i] = ins[i] ? 1 : x->dims[k++];
    return kiln_set_output(ctx, 0, x->dtype, r, out);
}

kiln_status kiln_tk_unsqueeze_compute(kiln_ctx *ctx) { return kiln_tk_copy_input_compute(ctx); }

/* ---- Identity: tensors, and (opset 14+) sequences and optionals, copied whole ---- */

kiln_status kiln_tk_identity_infer(kiln_ctx *ctx) {
    kiln_value *in = ctx->n_in > 0 ? ctx->in[0] : NULL;
    if (!in) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input 0");
    if (in->kind != KILN_KIND_TENSOR) {
        kiln_value *out = ctx->n_out > 0 ? ctx->out[0] : NULL;
        if (out) {
            out->kind = in->kind;
            out->seq_dtype = in->seq_dtype;
            out->none_is_seq = in->none_is_seq;
        }
        return KILN_OK;
    }
    return kiln_set_output_like(ctx, 0, &in->t);
}

kiln_status kiln_tk_identity_compute(kiln_ctx *ctx) {
    kiln_value *in = ctx->n_in > 0 ? ctx->in[0] : NULL;
    kiln_value *out = ctx->n_out > 0 ? ctx->out[0] : NULL;
    if (!in) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input 0");
    if (!out) return KILN_OK;
    if (in->kind != KILN_KIND_TENSOR) {
        if (out == in) return KILN_OK;
        kiln_value_release(out);
        return kiln_value_copy(out, in, ctx->err);
    }
    return kiln_tk_copy_input_compute(ctx);
}
