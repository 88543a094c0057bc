/* Transpose and the two ops that are a reshape-transpose-reshape: DepthToSpace, SpaceToDepth.
 * All go through kiln_tk_permute, which collapses dims and tiles real transposes. */
#include "cpu/kernels/tensor_common.h"
#include "cpu/kernels/tensor_ops.h"

static kiln_status transpose_perm(kiln_ctx *ctx, int rank, int64_t *perm) {
    int cnt = 0;
    const int64_t *p = kiln_attr_ints(ctx->node, "perm", &cnt);
    if (!p || !kiln_has_attr(ctx->node, "perm")) {
        for (int i = 0; i < rank; i++) perm[i] = rank - 1 - i;
        return KILN_OK;
    }
    if (cnt != rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "perm has %d entries but the input has rank %d", cnt,
                         rank);
    int seen[KILN_MAX_RANK] = {0};
    for (int i = 0; i < rank; i++) {
        if (p[i] < 0 || p[i] >= rank || seen[p[i]])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "perm is not a permutation of 0..%d (entry %d = %lld)",
                             rank - 1, i, (long long)p[i]);
        seen[p[i]] = 1;
        perm[i] = p[i];
    }
    return KILN_OK;
}

kiln_status kiln_tk_transpose_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int64_t perm[KILN_MAX_RANK], out[KILN_MAX_RANK];
    KILN_TRY(transpose_perm(ctx, x->rank, perm));
    for (int i = 0; i < x->rank; i++) out[i] = x->dims[perm[i]];
    return kiln_set_output(ctx, 0, x->dtype, x->rank, out);
}

/* moves elements of x into y following a permutation of the view dims; owns strings after */
static kiln_status permute_into(kiln_ctx *ctx, const kiln_tensor *x, kiln_tensor *y, int rank,
                                const int64_t *view, const int64_t *perm) {
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    if (kiln_numel(x) <= 0) return KILN_OK;
    kiln_tk_permute(ctx, elem, rank, view, perm, y->data, x->data);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

kiln_status kiln_tk_transpose_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    int64_t perm[KILN_MAX_RANK];
    KILN_TRY(transpose_perm(ctx, x->rank, perm));
    return permute_into(ctx, x, y, x->rank, x->dims, perm);
}

/* ---- DepthToSpace / SpaceToDepth on NCHW ---- */

static kiln_status block_size(kiln_ctx *ctx, const kiln_tensor *x, int64_t *b) {
    if (!kiln_has_attr(ctx->node, "blocksize"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute 'blocksize' is required");
    *b = kiln_attr_int(ctx->node, "blocksize", 0);
    if (*b <= 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "blocksize must be positive, got %lld", (long long)*b);
    /* blocksize^2 must not overflow (the fuzzer's 2^40 made it 0, then a division by it); past
     * 2^24 it exceeds any tensor's element count (KILN_MAX_NUMEL = 2^48) */
    if (*b > ((int64_t)1 << 24))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "blocksize %lld is too large (at most 2^24)",
                         (long long)*b);
    if (x->rank >= 0 && x->rank != 4)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must have rank 4 (NCHW), got rank %d", x->rank);
    return KILN_OK;
}

static int dcr_mode(kiln_ctx *ctx, int *crd) {
    const char *mode = ctx->opset >= 11 ? kiln_attr_string(ctx->node, "mode", "DCR") : "DCR";
    *crd = mode && mode[0] == 'C' && mode[1] == 'R' && mode[2] == 'D' && !mode[3];
    return *crd || (mode && mode[0] == 'D' && mode[1] == 'C' && mode[2] == 'R' && !mode[3]);
}

kiln_status kiln_tk_depth_to_space_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int64_t b;
    int crd;
    KILN_TRY(block_size(ctx, x, &b));
    if (!dcr_mode(ctx, &crd))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "mode must be DCR or CRD, got '%s'",
                         kiln_attr_string(ctx->node, "mode", ""));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    const int64_t *d = x->dims;
    if (d[1] >= 0 && d[1] % (b * b))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "channels %lld are not divisible by blocksize^2 = %lld",
                         (long long)d[1], (long long)(b * b));
    int64_t out[4] = {d[0], d[1] >= 0 ? d[1] / (b * b) : KILN_DIM_UNKNOWN, KILN_DIM_UNKNOWN, KILN_DIM_UNKNOWN};
    for (int i = 2; i < 4; i++)
        if (d[i] >= 0 && kiln_mul_overflow_i64(d[i], b, &out[i]))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "dim %d (%lld) times blocksize %lld overflows", i,
                             (long long)d[i], (long long)b);
    return kiln_set_output(ctx, 0, x->dtype, 4, out);
}

kiln_status kiln_tk_depth_to_space_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    int64_t b;
    int crd;
    KILN_TRY(block_size(ctx, x, &b));
    dcr_mode(ctx, &crd);
    const int64_t *d = x->dims;
    int64_t c = d[1] / (b * b);
    if (crd) {
        int64_t view[6] = {d[0], c, b, b, d[2], d[3]}, perm[6] = {0, 1, 4, 2, 5, 3};
        return permute_into(ctx, x, y, 6, view, perm);
    }
    int64_t view[6] = {d[0], b, b, c, d[2], d[3]}, perm[6] = {0, 3, 4, 1, 5, 2};
    return permute_into(ctx, x, y, 6, view, perm);
}

kiln_status kiln_tk_space_to_depth_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int64_t b;
    KILN_TRY(block_size(ctx, x, &b));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    const int64_t *d = x->dims;
    for (int i = 2; i < 4; i++)
        if (d[i] >= 0 && d[i] % b)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "dim %d (%lld) is not divisible by blocksize %lld", i,
                             (long long)d[i], (long long)b);
    int64_t out[4] = {d[0], KILN_DIM_UNKNOWN, d[2] >= 0 ? d[2] / b : KILN_DIM_UNKNOWN,
                      d[3] >= 0 ? d[3] / b : KILN_DIM_UNKNOWN};
    if (d[1] >= 0 && kiln_mul_overflow_i64(d[1], b * b, &out[1]))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "channels %lld times blocksize^2 %lld overflow",
                         (long long)d[1], (long long)(b * b));
    return kiln_set_output(ctx, 0, x->dtype, 4, out);
}

kiln_status kiln_tk_space_to_depth_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    int64_t b;
    KILN_TRY(block_size(ctx, x, &b));
    const int64_t *d = x->dims;
    int64_t view[6] = {d[0], d[1], d[2] / b, b, d[3] / b, b}, perm[6] = {0, 3, 5, 1, 2, 4};
    return permute_into(ctx, x, y, 6, view, perm);
}
