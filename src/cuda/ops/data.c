/* The CUDA data-movement family: kiln_cuda_kernels_data[] and the ops that are a single strided
 * copy or a row-block copy (the views, Transpose, DepthToSpace, SpaceToDepth, Concat, Split).
 * The rest live in data_shape.c (Slice, Pad, Expand, Tile, Trilu), data_index.c (Gather and
 * friends) and data_resize.c; the device code is in kernels/data*.cu.
 *
 * Shapes, attributes and host inputs were validated by the shared infer before compute runs, and
 * each output's shape is set, so compute only re-derives what the launchers need. Elements move
 * by size: every type of 1, 2, 4, 8 or 16 bytes is supported except strings. */
#include "data_internal.h"

#include <string.h>

/* ---- helpers (declared in data_internal.h) ---- */

size_t kiln_cuda_data_elem(int dtype) {
    if (dtype == KILN_DTYPE_STRING || dtype <= 0) return 0;
    size_t e = kiln_dtype_size((kiln_dtype)dtype);
    return e == 1 || e == 2 || e == 4 || e == 8 || e == 16 ? e : 0;
}

int kiln_cuda_data_movable(const kiln_node *n, const kiln_graph_value *const *in, int i, char *why, size_t cap) {
    int dt = i < n->n_in ? kiln_cuda_in_dtype(in, i) : 0;
    if (!dt) {
        snprintf(why, cap, "the element type of input %d is not known before running", i);
        return 0;
    }
    if (!kiln_cuda_data_elem(dt)) {
        snprintf(why, cap, "input %d has element type %s, which the CUDA data kernels cannot move", i,
                 kiln_dtype_name((kiln_dtype)dt));
        return 0;
    }
    return 1;
}

int kiln_cuda_data_rank_at_most(const kiln_node *n, const kiln_graph_value *const *in, int i, int max, char *why,
                                size_t cap) {
    int r = i < n->n_in && in[i] && in[i]->has_type ? in[i]->type.rank : -1;
    if (r < 0) {
        snprintf(why, cap, "the rank of input %d is not known before running", i);
        return 0;
    }
    if (r > max) {
        snprintf(why, cap, "input %d has rank %d, the CUDA kernel takes at most %d", i, r, max);
        return 0;
    }
    return 1;
}

void *kiln_cuda_data_stream(kiln_ctx *ctx) { return kiln_cuda_stream(kiln_cuda_of(ctx)); }

kiln_status kiln_cuda_data_ints(kiln_ctx *ctx, const kiln_tensor *t, const char *what, int64_t *out, int max,
                                int *count) {
    if (t->dtype != KILN_DTYPE_INT64 && t->dtype != KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be int64 (or int32), got %s", what,
                         kiln_dtype_name((kiln_dtype)t->dtype));
    int64_t n = kiln_numel(t);
    if (t->rank > 1 || n < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be a 1-D tensor", what);
    if (n > max) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has %lld values, at most %d", what, (long long)n, max);
    if (n > 0 && !t->data) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "%s has no data", what);
    for (int64_t i = 0; i < n; i++)
        out[i] = t->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
    *count = (int)n;
    return KILN_OK;
}

kiln_status kiln_cuda_data_launched(kiln_ctx *ctx, kiln_status st) {
    return st == KILN_OK ? KILN_OK : KILN_CUDA_FAIL(ctx, st);
}

/* Element size of input 0 at compute (supports() already took the type). */
static kiln_status movable_input(kiln_ctx *ctx, kiln_tensor **x, size_t *elem) {
    KILN_TRY(kiln_need_input(ctx, 0, x));
    *elem = kiln_cuda_data_elem((*x)->dtype);
    if (!*elem)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "element type %s is not supported on CUDA",
                         kiln_dtype_name((kiln_dtype)(*x)->dtype));
    return KILN_OK;
}

/* ---- views: Reshape, Flatten, Squeeze, Unsqueeze, Identity ----
 * The runtime lets the output share the input's bytes when it can (KILN_OP_ALIAS); compute runs
 * only when it cannot (a graph output, say) and copies device to device. */

static int view_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                         char *why, size_t cap) {
    if (n->n_in < 1) {
        snprintf(why, cap, "input 0 is missing");
        return 0;
    }
    if (in[0] && in[0]->has_type && (in[0]->type.kind != KILN_KIND_TENSOR || in[0]->type.optional)) {
        snprintf(why, cap, "input 0 is a sequence or optional, the CUDA kernel copies tensors only");
        return 0;
    }
    int dt = kiln_cuda_in_dtype(in, 0);
    if (!dt || dt == KILN_DTYPE_STRING) {
        snprintf(why, cap, dt ? "string tensors stay on the CPU" : "the element type of input 0 is not known before running");
        return 0;
    }
    return 1;
}

static kiln_status view_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y || y->data == x->data) return KILN_OK;
    size_t bytes = kiln_dtype_bytes(x->dtype, kiln_numel(x));
    if (bytes == 0) return KILN_OK;
    KILN_CUDA_TRY(ctx, kiln_cuda_d2d(kiln_cuda_of(ctx), y->data, x->data, bytes));
    return KILN_OK;
}

/* ---- Transpose, DepthToSpace, SpaceToDepth: permutations of a (view of the) input ---- */

static int movable_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                            char *why, size_t cap) {
    return kiln_cuda_data_movable(n, in, 0, why, cap);
}

/* y = x viewed as view[] with its dims permuted by perm[] (both of rank r). */
static kiln_status permute_into(kiln_ctx *ctx, const kiln_tensor *x, kiln_tensor *y, size_t elem, int r,
                                const int64_t *view, const int64_t *perm) {
    int64_t vstr[KILN_MAX_RANK], dims[KILN_MAX_RANK], str[KILN_MAX_RANK];
    kiln_strides(r, view, vstr);
    for (int i = 0; i < r; i++) {
        dims[i] = view[perm[i]];
        str[i] = vstr[perm[i]];
    }
    return kiln_cuda_data_launched(
        ctx, kiln_cuda_strided_copy(kiln_cuda_data_stream(ctx), elem, r, dims, y->data, x->data, str));
}

static kiln_status transpose_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(movable_input(ctx, &x, &elem));
    if (!y) return KILN_OK;
    int r = x->rank, cnt = 0;
    int64_t perm[KILN_MAX_RANK];
    const int64_t *p = kiln_attr_ints(ctx->node, "perm", &cnt);
    for (int i = 0; i < r; i++) perm[i] = p && cnt == r ? p[i] : r - 1 - i;
    return permute_into(ctx, x, y, elem, r, x->dims, perm);
}

static int64_t block_size(kiln_ctx *ctx) { return kiln_attr_int(ctx->node, "blocksize", 1); }

static kiln_status depth_to_space_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(movable_input(ctx, &x, &elem));
    if (!y) return KILN_OK;
    if (x->rank != 4) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must have rank 4");
    int64_t b = block_size(ctx);
    const int64_t *d = x->dims;
    int64_t c = d[1] / (b * b);
    const char *mode = ctx->opset >= 11 ? kiln_attr_string(ctx->node, "mode", "DCR") : "DCR";
    if (mode && !strcmp(mode, "CRD")) {
        int64_t view[6] = {d[0], c, b, b, d[2], d[3]}, perm[6] = {0, 1, 4, 2, 5, 3};
        return permute_into(ctx, x, y, elem, 6, view, perm);
    }
    int64_t view[6] = {d[0], b, b, c, d[2], d[3]}, perm[6] = {0, 3, 4, 1, 5, 2};
    return permute_into(ctx, x, y, elem, 6, view, perm);
}

static kiln_status space_to_depth_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    size_t elem;
    KILN_TRY(movable_input(ctx, &x, &elem));
    if (!y) return KILN_OK;
    if (x->rank != 4) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must have rank 4");
    int64_t b = block_size(ctx);
    const int64_t *d = x->dims;
    int64_t view[6] = {d[0], d[1], d[2] / b, b, d[3] / b, b}, perm[6] = {0, 3, 5, 1, 2, 4};
    return permute_into(ctx, x, y, elem, 6, view, perm);
}

/* ---- Concat / Split: [outer, part] blocks of a [outer, row] tensor ---- */

enum { MAX_PARTS = 1024 };

static int concat_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                           char *why, size_t cap) {
    if (n->n_in > MAX_PARTS) {
        snprintf(why, cap, "Concat of %d inputs (the CUDA kernel takes at most %d)", n->n_in, MAX_PARTS);
        return 0;
    }
    for (int i = 0; i < n->n_in; i++)
        if (!kiln_cuda_data_movable(n, in, i, why, cap)) return 0;
    return 1;
}

static kiln_status concat_compute(kiln_ctx *ctx) {
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    size_t elem = kiln_cuda_data_elem(y->dtype);
    if (!elem || ctx->n_in > MAX_PARTS) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported Concat");
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 1), y->rank, "axis", &axis));
    int64_t outer = kiln_dims_numel(axis, y->dims);
    int64_t inner = kiln_dims_numel(y->rank - axis - 1, y->dims + axis + 1);
    const void *srcs[MAX_PARTS];
    int64_t lens[MAX_PARTS];
    for (int i = 0; i < ctx->n_in; i++) {
        kiln_tensor *t;
        KILN_TRY(kiln_need_input(ctx, i, &t));
        srcs[i] = t->data;
        lens[i] = t->dims[axis] * inner;
    }
    return kiln_cuda_data_launched(
        ctx, kiln_cuda_concat(kiln_cuda_data_stream(ctx), elem, outer, ctx->n_in, srcs, lens, y->data));
}

static int split_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                          char *why, size_t cap) {
    if (n->n_out > 256) {
        snprintf(why, cap, "Split into %d outputs (at most 256)", n->n_out);
        return 0;
    }
    return kiln_cuda_data_movable(n, in, 0, why, cap);
}

/* The part sizes along the axis (size d), as infer worked them out: input 'split' (opset 13+, and
 * opset 1), attribute 'split' (2-12), else equal parts (opset 18: ceil-sized, last one smaller). */
static kiln_status split_sizes(kiln_ctx *ctx, int64_t d, int64_t *sizes) {
    int n = ctx->n_out, cnt = -1;
    kiln_tensor *st = (ctx->opset >= 13 || ctx->opset < 2) ? kiln_input(ctx, 1) : NULL;
    if (st && (kiln_numel(st) != 0 || ctx->opset < 13)) {
        KILN_TRY(kiln_cuda_data_ints(ctx, st, "input 'split'", sizes, n, &cnt));
    } else if (ctx->opset < 13 && kiln_has_attr(ctx->node, "split")) {
        const int64_t *a = kiln_attr_ints(ctx->node, "split", &cnt);
        if (cnt > n) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many split sizes (%d)", cnt);
        for (int i = 0; i < cnt; i++) sizes[i] = a[i];
    }
    if (cnt >= 0) {
        if (cnt != n) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "split has %d sizes for %d outputs", cnt, n);
        return KILN_OK;
    }
    int64_t chunk = d % n == 0 ? d / n : (d + n - 1) / n;
    for (int i = 0; i < n; i++) sizes[i] = i < n - 1 ? chunk : d - chunk * (n - 1);
    return KILN_OK;
}

static kiln_status split_compute(kiln_ctx *ctx) {
    kiln_tensor *x;
    size_t elem;
    KILN_TRY(movable_input(ctx, &x, &elem));
    if (ctx->n_out < 1 || ctx->n_out > 256)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Split has %d outputs", ctx->n_out);
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), x->rank, "axis", &axis));
    int64_t sizes[256], lens[256];
    void *dsts[256];
    KILN_TRY(split_sizes(ctx, x->dims[axis], sizes));
    int64_t inner = kiln_dims_numel(x->rank - axis - 1, x->dims + axis + 1);
    for (int i = 0; i < ctx->n_out; i++) {
        kiln_tensor *y = kiln_output(ctx, i);
        lens[i] = sizes[i] * inner;
        dsts[i] = y && kiln_numel(y) > 0 ? y->data : NULL;
    }
    return kiln_cuda_data_launched(ctx, kiln_cuda_split(kiln_cuda_data_stream(ctx), elem,
                                                        kiln_dims_numel(axis, x->dims), ctx->n_out, dsts, lens,
                                                        x->data));
}

/* ---- the table ---- */

#define DATA(name, since, host, fn) {"", name, since, host, kiln_cuda_##fn##_supports, NULL, NULL, kiln_cuda_##fn##_compute}
#define LOCAL(name, since, host, sup, fn) {"", name, since, host, sup, NULL, NULL, fn}

const kiln_kernel kiln_cuda_kernels_data[] = {
    /* views (KILN_OP_ALIAS): compute copies only when the runtime cannot alias */
    LOCAL("Reshape", 1, 1u << 1, view_supports, view_compute),
    LOCAL("Flatten", 1, 0, view_supports, view_compute),
    LOCAL("Squeeze", 1, 1u << 1, view_supports, view_compute),
    LOCAL("Unsqueeze", 1, 1u << 1, view_supports, view_compute),
    LOCAL("Identity", 1, 0, view_supports, view_compute),
    /* permutations and row blocks */
    LOCAL("Transpose", 1, 0, movable_supports, transpose_compute),
    LOCAL("DepthToSpace", 1, 0, movable_supports, depth_to_space_compute),
    LOCAL("SpaceToDepth", 1, 0, movable_supports, space_to_depth_compute),
    LOCAL("Concat", 1, 0, concat_supports, concat_compute),
    LOCAL("Split", 1, 1u << 1, split_supports, split_compute),
    /* data_shape.c: starts/ends/axes/steps, pads/constant_value/axes, shape, repeats, k */
    DATA("Slice", 1, 0x1eu, slice),
    DATA("Pad", 1, 0xeu, pad),
    DATA("Expand", 8, 1u << 1, expand),
    DATA("Tile", 6, 1u << 1, tile),
    DATA("Trilu", 14, 1u << 1, trilu),
    /* data_index.c */
    DATA("Gather", 1, 0, gather),
    DATA("GatherElements", 11, 0, gather_elements),
    DATA("GatherND", 11, 0, gather_nd),
    DATA("ScatterND", 11, 0, scatter_nd),
    /* data_resize.c: roi, scales, sizes (Resize-10: scales) */
    DATA("Resize", 10, 0xeu, resize),
    {0},
};
