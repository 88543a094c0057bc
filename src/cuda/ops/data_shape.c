/* CUDA Slice, Pad, Expand, Tile and Trilu. Their shape-like inputs (Slice's starts / ends /
 * axes / steps, Pad's pads / constant_value / axes, Expand's shape, Tile's repeats, Trilu's k)
 * are host inputs: infer reads them to size the output, and compute reads them again here to
 * find where each output element comes from (Slice's through ops/slice_geom.c, as the CPU does). Slice, Expand and Tile are one strided copy; Pad and
 * Trilu have their own kernels. */
#include "data_internal.h"

#include <string.h>

static int movable0(const kiln_node *n, const kiln_graph_value *const *in, char *why, size_t cap) {
    return kiln_cuda_data_movable(n, in, 0, why, cap);
}

static kiln_status input_elem(kiln_ctx *ctx, kiln_tensor **x, size_t *elem) {
    KILN_TRY(kiln_need_input(ctx, 0, x));
    *elem = kiln_cuda_data_elem((*x)->dtype);
    if (!*elem)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "element type %s is not supported on CUDA",
                         kiln_dtype_name((kiln_dtype)(*x)->dtype));
    return KILN_OK;
}

static kiln_status strided(kiln_ctx *ctx, size_t elem, int rank, const int64_t *dims, void *dst, const void *src,
                           const int64_t *strides) {
    return kiln_cuda_data_launched(
        ctx, kiln_cuda_strided_copy(kiln_cuda_data_stream(ctx), elem, rank, dims, dst, src, strides));
}

/* ---- Slice ---- */

int kiln_cuda_slice_supports(const kiln_node *n, const kiln_graph_value *const *in,
                             const kiln_graph_value *const *out, char *why, size_t cap) {
    return movable0(n, in, why, cap);
}

kiln_status kiln_cuda_slice_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(input_elem(ctx, &x, &elem));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    int r = x->rank;
    kiln_slice_geom sg;
    KILN_TRY(kiln_slice_geometry(ctx, 1, ctx->opset < 10, r, x->dims, &sg));
    const int64_t *start = sg.start, *step = sg.step;
    int64_t in_str[KILN_MAX_RANK], src_str[KILN_MAX_RANK], off = 0;
    kiln_strides(r, x->dims, in_str);
    for (int i = 0; i < r; i++) {
        off += start[i] * in_str[i];
        src_str[i] = y->dims[i] > 1 ? step[i] * in_str[i] : in_str[i];
    }
    return strided(ctx, elem, r, y->dims, y->data, (const char *)x->data + (size_t)off * elem, src_str);
}

/* ---- Pad ---- */

static int pad_mode_of(const kiln_node *n, int opset) {
    const char *m = kiln_attr_string(n, "mode", "constant");
    if (!strcmp(m, "constant")) return KILN_CUDA_PAD_CONSTANT;
    if (!strcmp(m, "reflect")) return KILN_CUDA_PAD_REFLECT;
    if (!strcmp(m, "edge")) return KILN_CUDA_PAD_EDGE;
    if (!strcmp(m, "wrap") && opset >= 19) return KILN_CUDA_PAD_WRAP;
    return -1;
}

int kiln_cuda_pad_supports(const kiln_node *n, const kiln_graph_value *const *in,
                           const kiln_graph_value *const *out, char *why, size_t cap) {
    if (pad_mode_of(n, n->opset) < 0) {
        snprintf(why, cap, "mode '%s' is not supported", kiln_attr_string(n, "mode", "constant"));
        return 0;
    }
    return movable0(n, in, why, cap);
}

/* The constant, one element of x's type: attribute 'value' (before opset 11) or input 2. */
static kiln_status pad_value(kiln_ctx *ctx, const kiln_tensor *x, size_t elem, unsigned char *value) {
    memset(value, 0, 16);
    if (ctx->opset < 11) {
        float v = kiln_attr_float(ctx->node, "value", 0.0f);
        if (x->dtype == KILN_DTYPE_BOOL) value[0] = v != 0.0f;
        else if (v != 0.0f) kiln_store_f64(x->dtype, value, 0, v);
        return KILN_OK;
    }
    kiln_tensor *cv = kiln_input(ctx, 2);
    if (!cv || kiln_numel(cv) < 1) return KILN_OK;
    if (cv->dtype != x->dtype || !cv->data)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "constant_value must be a %s scalar",
                         kiln_dtype_name((kiln_dtype)x->dtype));
    memcpy(value, cv->data, elem);
    return KILN_OK;
}

/* Pads before / after each axis, from attribute 'paddings' (opset 1) / 'pads' (2-10) or input
 * 1 (11+), for all axes or (18+) the axes of input 3. */
static kiln_status pad_amounts(kiln_ctx *ctx, int r, int64_t *pb, int64_t *pe) {
    int64_t pads[2 * KILN_MAX_RANK], axes[KILN_MAX_RANK];
    int n = 0, na = r;
    if (ctx->opset < 11) {
        const int64_t *a = kiln_attr_ints(ctx->node, ctx->opset < 2 ? "paddings" : "pads", &n);
        if (!a || n > 2 * KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "bad pads attribute");
        memcpy(pads, a, sizeof(int64_t) * (size_t)n);
    } else {
        kiln_tensor *pt;
        KILN_TRY(kiln_need_input(ctx, 1, &pt));
        KILN_TRY(kiln_cuda_data_ints(ctx, pt, "input 'pads'", pads, 2 * KILN_MAX_RANK, &n));
    }
    for (int i = 0; i < r; i++) axes[i] = i;
    kiln_tensor *at = ctx->opset >= 18 ? kiln_input(ctx, 3) : NULL;
    if (at) KILN_TRY(kiln_cuda_data_ints(ctx, at, "input 'axes'", axes, KILN_MAX_RANK, &na));
    if (n != 2 * na) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pads has %d values for %d axes", n, na);
    for (int i = 0; i < r; i++) pb[i] = pe[i] = 0;
    for (int i = 0; i < na; i++) {
        int a;
        KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &a));
        pb[a] = pads[i];
        pe[a] = pads[i + na];
    }
    return KILN_OK;
}

kiln_status kiln_cuda_pad_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(input_elem(ctx, &x, &elem));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    int mode = pad_mode_of(ctx->node, ctx->opset);
    if (mode < 0) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported pad mode");
    if (x->rank == 0) {
        KILN_CUDA_TRY(ctx, kiln_cuda_d2d(kiln_cuda_of(ctx), y->data, x->data, elem));
        return KILN_OK;
    }
    unsigned char value[16];
    int64_t pb[KILN_MAX_RANK], pe[KILN_MAX_RANK];
    KILN_TRY(pad_value(ctx, x, elem, value));
    KILN_TRY(pad_amounts(ctx, x->rank, pb, pe));
    return kiln_cuda_data_launched(ctx, kiln_cuda_pad(kiln_cuda_data_stream(ctx), elem, mode, x->rank, x->dims,
                                                      y->dims, pb, pe, value, x->data, y->data));
}

/* ---- Expand: broadcast dims read with stride 0 ---- */

int kiln_cuda_expand_supports(const kiln_node *n, const kiln_graph_value *const *in,
                              const kiln_graph_value *const *out, char *why, size_t cap) {
    return movable0(n, in, why, cap);
}

kiln_status kiln_cuda_expand_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(input_elem(ctx, &x, &elem));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    int r = y->rank;
    if (x->rank > r) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output rank is below the input's");
    int64_t in_str[KILN_MAX_RANK], src_str[KILN_MAX_RANK];
    kiln_strides(x->rank, x->dims, in_str);
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
    return strided(ctx, elem, r, y->dims, y->data, x->data, src_str);
}

/* ---- Tile: each axis viewed as (repeat, dim), the repeat read with stride 0 ---- */

enum { TILE_MAX_RANK = KILN_CUDA_DATA_MAX_DIMS / 2 };

int kiln_cuda_tile_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap) {
    return movable0(n, in, why, cap) && kiln_cuda_data_rank_at_most(n, in, 0, TILE_MAX_RANK, why, cap);
}

kiln_status kiln_cuda_tile_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(input_elem(ctx, &x, &elem));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    int r = x->rank;
    if (r > TILE_MAX_RANK || y->rank != r)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "Tile of rank %d on CUDA", r);
    /* the output is contiguous in the view order (rep_0, dim_0, rep_1, dim_1, ...) */
    int64_t in_str[KILN_MAX_RANK], vd[2 * TILE_MAX_RANK], vs[2 * TILE_MAX_RANK];
    kiln_strides(r, x->dims, in_str);
    for (int i = 0; i < r; i++) {
        vd[2 * i] = y->dims[i] / x->dims[i]; /* x->dims[i] > 0: y is not empty */
        vs[2 * i] = 0;
        vd[2 * i + 1] = x->dims[i];
        vs[2 * i + 1] = in_str[i];
    }
    return strided(ctx, elem, 2 * r, vd, y->data, x->data, vs);
}

/* ---- Trilu ---- */

int kiln_cuda_trilu_supports(const kiln_node *n, const kiln_graph_value *const *in,
                             const kiln_graph_value *const *out, char *why, size_t cap) {
    return movable0(n, in, why, cap);
}

kiln_status kiln_cuda_trilu_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(input_elem(ctx, &x, &elem));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    if (x->rank < 2) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must have rank >= 2");
    int64_t k = 0;
    kiln_tensor *kt = kiln_input(ctx, 1);
    if (kt) {
        int cnt;
        KILN_TRY(kiln_cuda_data_ints(ctx, kt, "input 'k'", &k, 1, &cnt));
        if (cnt != 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'k' must hold one value");
    }
    int64_t rows = x->dims[x->rank - 2], cols = x->dims[x->rank - 1];
    int upper = kiln_attr_int(ctx->node, "upper", 1) != 0;
    return kiln_cuda_data_launched(ctx, kiln_cuda_trilu(kiln_cuda_data_stream(ctx), elem,
                                                        kiln_numel(x) / (rows * cols), rows, cols, k, upper,
                                                        x->data, y->data));
}
