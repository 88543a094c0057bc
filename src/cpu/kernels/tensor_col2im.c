/* Col2Im: the inverse of im2col for N spatial dims. Column (c, kernel offset) x block position
 * lands at image position block * stride - pad_begin + offset * dilation; overlapping
 * contributions are summed, positions in the padding are dropped. */
#include "cpu/kernels/tensor_common.h"
#include "cpu/kernels/tensor_ops.h"
#include <stdlib.h>
#include <string.h>

#define C2I_MAX 8

typedef struct {
    int n;                                  /* spatial dims */
    int64_t image[C2I_MAX], block[C2I_MAX]; /* image_shape, block_shape */
    int64_t stride[C2I_MAX], dil[C2I_MAX], pad_b[C2I_MAX], pad_e[C2I_MAX];
    int64_t blocks[C2I_MAX]; /* sliding positions per dim */
    int64_t batch, channels, kernel, positions;
} col2im_geo;

static kiln_status col2im_attr(kiln_ctx *ctx, const char *name, int want, int64_t dflt, int64_t *out) {
    int cnt = 0;
    const int64_t *v = kiln_attr_ints(ctx->node, name, &cnt);
    if (!v || !kiln_has_attr(ctx->node, name)) {
        for (int i = 0; i < want; i++) out[i] = dflt;
        return KILN_OK;
    }
    if (cnt != want)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "'%s' has %d values, expected %d", name, cnt, want);
    memcpy(out, v, (size_t)cnt * sizeof *out);
    return KILN_OK;
}

/* *known = 0: image/block shapes not available (static inference); geo->n is then set if known */
static kiln_status col2im_geometry(kiln_ctx *ctx, col2im_geo *g, int *known) {
    kiln_tensor *x, *is, *bs;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &is));
    KILN_TRY(kiln_need_input(ctx, 2, &bs));
    *known = 0;
    g->n = -1;
    if (x->rank >= 0 && x->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must have rank 3 [N, C*prod(block), L], got %d",
                         x->rank);
    if (is->dtype != KILN_DTYPE_INT64 || bs->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "image_shape and block_shape must be int64");
    if (is->rank == 1 && is->dims[0] >= 0) g->n = (int)is->dims[0];
    if (!kiln_tk_has_values(ctx, is) || !kiln_tk_has_values(ctx, bs)) return KILN_OK;
    int ni, nb;
    KILN_TRY(kiln_tk_read_ints(ctx, is, "image_shape", g->image, C2I_MAX, &ni));
    KILN_TRY(kiln_tk_read_ints(ctx, bs, "block_shape", g->block, C2I_MAX, &nb));
    if (ni != nb || ni < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "image_shape (%d) and block_shape (%d) need the same length >= 1",
                         ni, nb);
    g->n = ni;
    int64_t pads[2 * C2I_MAX];
    KILN_TRY(col2im_attr(ctx, "strides", ni, 1, g->stride));
    KILN_TRY(col2im_attr(ctx, "dilations", ni, 1, g->dil));
    KILN_TRY(col2im_attr(ctx, "pads", 2 * ni, 0, pads));
    g->kernel = 1;
    g->positions = 1;
    for (int i = 0; i < ni; i++) {
        g->pad_b[i] = pads[i];
        g->pad_e[i] = pads[i + ni];
        if (g->image[i] < 0 || g->block[i] <= 0 || g->stride[i] <= 0 || g->dil[i] <= 0 || g->pad_b[i] < 0 ||
            g->pad_e[i] < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "invalid geometry on spatial dim %d (image %lld, block %lld, stride %lld, dilation %lld)",
                             i, (long long)g->image[i], (long long)g->block[i], (long long)g->stride[i],
                             (long long)g->dil[i]);
        int64_t span = g->dil[i] * (g->block[i] - 1) + 1;
        int64_t room = g->image[i] + g->pad_b[i] + g->pad_e[i] - span;
        if (room < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "block does not fit the padded image on dim %d", i);
        g->blocks[i] = room / g->stride[i] + 1;
        g->kernel *= g->block[i];
        g->positions *= g->blocks[i];
    }
    if (x->rank < 0) return KILN_OK;
    g->batch = x->dims[0];
    if (x->dims[1] >= 0 && x->dims[1] % g->kernel)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input dim 1 (%lld) is not a multiple of prod(block_shape) = %lld",
                         (long long)x->dims[1], (long long)g->kernel);
    g->channels = x->dims[1] >= 0 ? x->dims[1] / g->kernel : KILN_DIM_UNKNOWN;
    if (x->dims[2] >= 0 && x->dims[2] != g->positions)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input dim 2 is %lld but there are %lld block positions",
                         (long long)x->dims[2], (long long)g->positions);
    *known = 1;
    return KILN_OK;
}

static int col2im_type_ok(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || dt == KILN_DTYPE_FLOAT16 ||
           dt == KILN_DTYPE_BFLOAT16 || kiln_dtype_is_integer(dt);
}

kiln_status kiln_tk_col2im_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!col2im_type_ok(x->dtype) || x->dtype == KILN_DTYPE_INT4 || x->dtype == KILN_DTYPE_UINT4)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s",
                         kiln_dtype_name((kiln_dtype)x->dtype));
    col2im_geo g;
    int known;
    KILN_TRY(col2im_geometry(ctx, &g, &known));
    if (g.n < 0 || x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    if (g.n + 2 > KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "too many spatial dims");
    int64_t dims[KILN_MAX_RANK];
    dims[0] = x->dims[0];
    dims[1] = known ? g.channels : KILN_DIM_UNKNOWN;
    for (int i = 0; i < g.n; i++) dims[2 + i] = known ? g.image[i] : KILN_DIM_UNKNOWN;
    return kiln_set_output(ctx, 0, x->dtype, 2 + g.n, dims);
}

/* Accumulates one (batch, channel) plane: col is [kernel, positions], img is the image. */
static void col2im_plane(const col2im_geo *g, const double *col, double *img) {
    int n = g->n;
    int64_t koff[C2I_MAX] = {0};
    for (int64_t k = 0; k < g->kernel; k++) {
        int64_t pos[C2I_MAX] = {0};
        for (int64_t p = 0; p < g->positions; p++) {
            int64_t at = 0;
            int inside = 1;
            for (int d = 0; d < n; d++) {
                int64_t c = pos[d] * g->stride[d] - g->pad_b[d] + koff[d] * g->dil[d];
                if (c < 0 || c >= g->image[d]) {
                    inside = 0;
                    break;
                }
                at = at * g->image[d] + c;
            }
            if (inside) img[at] += col[k * g->positions + p];
            for (int d = n - 1; d >= 0; d--) {
                if (++pos[d] < g->blocks[d]) break;
                pos[d] = 0;
            }
        }
        for (int d = n - 1; d >= 0; d--) {
            if (++koff[d] < g->block[d]) break;
            koff[d] = 0;
        }
    }
}

/* float planes summed in float like the reference kernels, so rounding matches */
static void col2im_plane_f32(const col2im_geo *g, const float *col, float *img) {
    int n = g->n;
    int64_t koff[C2I_MAX] = {0};
    for (int64_t k = 0; k < g->kernel; k++) {
        int64_t pos[C2I_MAX] = {0};
        for (int64_t p = 0; p < g->positions; p++) {
            int64_t at = 0;
            int inside = 1;
            for (int d = 0; d < n; d++) {
                int64_t c = pos[d] * g->stride[d] - g->pad_b[d] + koff[d] * g->dil[d];
                if (c < 0 || c >= g->image[d]) {
                    inside = 0;
                    break;
                }
                at = at * g->image[d] + c;
            }
            if (inside) img[at] += col[k * g->positions + p];
            for (int d = n - 1; d >= 0; d--) {
                if (++pos[d] < g->blocks[d]) break;
                pos[d] = 0;
            }
        }
        for (int d = n - 1; d >= 0; d--) {
            if (++koff[d] < g->block[d]) break;
            koff[d] = 0;
        }
    }
}

kiln_status kiln_tk_col2im_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    col2im_geo g;
    int known;
    KILN_TRY(col2im_geometry(ctx, &g, &known));
    if (!known) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "image_shape or block_shape has no data");
    int64_t planes = g.batch * g.channels, img = 1;
    for (int i = 0; i < g.n; i++) img *= g.image[i];
    int64_t colsz = g.kernel * g.positions;
    if (planes <= 0 || img <= 0) return KILN_OK;
    if (x->dtype == KILN_DTYPE_FLOAT) {
        memset(y->data, 0, (size_t)(planes * img) * sizeof(float));
        for (int64_t p = 0; p < planes; p++)
            col2im_plane_f32(&g, (const float *)x->data + p * colsz, (float *)y->data + p * img);
        return KILN_OK;
    }
    double *col = malloc((size_t)(colsz + img) * sizeof(double));
    if (!col) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in Col2Im");
    double *acc = col + colsz;
    for (int64_t p = 0; p < planes; p++) {
        for (int64_t i = 0; i < colsz; i++) col[i] = kiln_load_f64(x->dtype, x->data, p * colsz + i);
        memset(acc, 0, (size_t)img * sizeof(double));
        col2im_plane(&g, col, acc);
        for (int64_t i = 0; i < img; i++) kiln_store_f64(y->dtype, y->data, p * img + i, acc[i]);
    }
    free(col);
    return KILN_OK;
}
