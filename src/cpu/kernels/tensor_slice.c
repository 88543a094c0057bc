/* Slice: starts/ends/axes as attributes (opset 1-9) or inputs with steps (10+). Out-of-range
 * starts and ends are clamped as numpy does; negative steps walk backwards. The copy is one
 * strided copy whose source strides are step * stride (negative for reversed axes); the clamping
 * is ops/slice_geom.c's, shared with SliceGrad and the other providers. */
#include "cpu/kernels/tensor_common.h"
#include "cpu/kernels/tensor_ops.h"

kiln_status kiln_tk_slice_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    kiln_slice_geom p;
    KILN_TRY(kiln_slice_geometry(ctx, 1, ctx->opset < 10, x->rank, x->dims, &p));
    int64_t out[KILN_MAX_RANK];
    for (int i = 0; i < x->rank; i++) out[i] = p.known[i] ? p.len[i] : KILN_DIM_UNKNOWN;
    return kiln_set_output(ctx, 0, x->dtype, x->rank, out);
}

kiln_status kiln_tk_slice_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    kiln_slice_geom p;
    KILN_TRY(kiln_slice_geometry(ctx, 1, ctx->opset < 10, x->rank, x->dims, &p));
    int r = x->rank;
    int64_t in_str[KILN_MAX_RANK], out_str[KILN_MAX_RANK], src_str[KILN_MAX_RANK], off = 0;
    kiln_strides(r, x->dims, in_str);
    kiln_strides(r, p.len, out_str);
    for (int i = 0; i < r; i++) {
        if (p.len[i] == 0) return KILN_OK;
        off += p.start[i] * in_str[i];
        src_str[i] = p.len[i] > 1 ? p.step[i] * in_str[i] : in_str[i];
    }
    kiln_tk_strided_copy(ctx, elem, r, p.len, y->data, out_str, (const char *)x->data + (size_t)off * elem,
                         src_str);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}
