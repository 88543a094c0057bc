/* CUDA Resize (opset 10+): modes nearest (every nearest_mode) and linear, coordinate modes
 * half_pixel, half_pixel_symmetric, pytorch_half_pixel, align_corners, asymmetric and
 * tf_half_pixel_for_nn. roi / scales / sizes are host inputs; compute works out the scale of
 * every axis the way the CPU op does (cpu/kernels/resize.c: scales as given, sizes / input for
 * sizes, one common scale under keep_aspect_ratio_policy) and the kernel does the rest.
 * Left to the CPU, with the reason: cubic, antialias, tf_crop_and_resize, linear on types other
 * than float32 / float16 / bfloat16 / uint8 / int8, ranks above 8. */
#include "data_internal.h"

#include <math.h>
#include <string.h>

static int find_name(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

static const char *const coord_names[] = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                                          "align_corners", "asymmetric", "tf_half_pixel_for_nn"};
static const char *const nearest_names[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};

/* Fills mode / coord_mode / nearest_mode / exclude_outside; 0 with why when the kernel cannot. */
static int resize_modes(const kiln_node *n, int opset, kiln_cuda_resize_desc *d, char *why, size_t cap) {
    const char *mode = kiln_attr_string(n, "mode", "nearest");
    if (!strcmp(mode, "nearest")) d->mode = KILN_CUDA_RESIZE_NEAREST;
    else if (!strcmp(mode, "linear")) d->mode = KILN_CUDA_RESIZE_LINEAR;
    else {
        snprintf(why, cap, "mode '%s' is not supported on CUDA (nearest and linear are)", mode);
        return 0;
    }
    d->exclude_outside = 0;
    if (opset < 11) { /* Resize-10: x_original = x / scale, nearest truncates */
        d->coord_mode = KILN_CUDA_CT_ASYMMETRIC;
        d->nearest_mode = KILN_CUDA_NEAREST_SIMPLE;
        return 1;
    }
    const char *ct = kiln_attr_string(n, "coordinate_transformation_mode", "half_pixel");
    d->coord_mode = find_name(ct, coord_names, 6);
    if (d->coord_mode < 0 || (d->coord_mode == KILN_CUDA_CT_HALF_PIXEL_SYMMETRIC && opset < 19)) {
        snprintf(why, cap, "coordinate_transformation_mode '%s' is not supported on CUDA", ct);
        return 0;
    }
    const char *nm = kiln_attr_string(n, "nearest_mode", "round_prefer_floor");
    d->nearest_mode = find_name(nm, nearest_names, 4);
    if (d->nearest_mode < 0) {
        snprintf(why, cap, "nearest_mode '%s' is not supported", nm);
        return 0;
    }
    d->exclude_outside = kiln_attr_int(n, "exclude_outside", 0) != 0;
    if (opset >= 18 && kiln_attr_int(n, "antialias", 0) != 0) {
        snprintf(why, cap, "antialias is not supported on CUDA");
        return 0;
    }
    return 1;
}

int kiln_cuda_resize_supports(const kiln_node *n, const kiln_graph_value *const *in,
                              const kiln_graph_value *const *out, char *why, size_t cap) {
    kiln_cuda_resize_desc d;
    if (!resize_modes(n, n->opset, &d, why, cap)) return 0;
    if (!kiln_cuda_data_rank_at_most(n, in, 0, KILN_CUDA_RESIZE_MAX_RANK, why, cap)) return 0;
    int dt = kiln_cuda_in_dtype(in, 0);
    if (d.mode == KILN_CUDA_RESIZE_LINEAR) {
        if (!kiln_cuda_resize_linear_dtype(dt)) {
            snprintf(why, cap, "linear Resize of %s is not supported on CUDA (float32, float16, bfloat16, uint8, int8 are)",
                     dt ? kiln_dtype_name((kiln_dtype)dt) : "an unknown type");
            return 0;
        }
        return 1;
    }
    if (!kiln_cuda_data_movable(n, in, 0, why, cap)) return 0;
    if (kiln_cuda_data_elem(dt) > 8) {
        snprintf(why, cap, "Resize of %s is not supported on CUDA", kiln_dtype_name((kiln_dtype)dt));
        return 0;
    }
    return 1;
}

/* Input i unless absent or empty (an empty tensor stands for an absent input). */
static kiln_tensor *given(kiln_ctx *ctx, int i) {
    kiln_tensor *t = kiln_input(ctx, i);
    return t && kiln_numel(t) > 0 ? t : NULL;
}

/* Scale of every axis, as the CPU's make_plan works it out. */
static kiln_status resize_scales(kiln_ctx *ctx, const kiln_tensor *x, kiln_cuda_resize_desc *d) {
    int r = x->rank, n_axes = r, axes[KILN_MAX_RANK];
    for (int i = 0; i < r; i++) {
        axes[i] = i;
        d->scale[i] = 1.0;
    }
    if (ctx->opset >= 18 && kiln_has_attr(ctx->node, "axes")) {
        const int64_t *a = kiln_attr_ints(ctx->node, "axes", &n_axes);
        if (n_axes > r) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many axes");
        for (int i = 0; i < n_axes; i++) KILN_TRY(kiln_norm_axis(ctx, a[i], r, "axes", &axes[i]));
    }
    kiln_tensor *scales = given(ctx, ctx->opset < 11 ? 1 : 2), *sizes = ctx->opset < 11 ? NULL : given(ctx, 3);
    if (scales) {
        int64_t n = kiln_numel(scales);
        int want = ctx->opset < 11 ? r : n_axes;
        if (n != want || !scales->data)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scales has %lld values, expected %d", (long long)n, want);
        for (int i = 0; i < want; i++) d->scale[ctx->opset < 11 ? i : axes[i]] = kiln_load_f64(scales->dtype, scales->data, i);
        return KILN_OK;
    }
    if (!sizes) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "one of scales and sizes is required");
    int64_t sz[KILN_MAX_RANK];
    int n;
    KILN_TRY(kiln_cuda_data_ints(ctx, sizes, "sizes", sz, KILN_MAX_RANK, &n));
    if (n != n_axes) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sizes has %d values, expected %d", n, n_axes);
    const char *keep = ctx->opset >= 18 ? kiln_attr_string(ctx->node, "keep_aspect_ratio_policy", "stretch") : "stretch";
    if (!strcmp(keep, "stretch")) {
        for (int i = 0; i < n; i++) {
            int64_t in = x->dims[axes[i]];
            d->scale[axes[i]] = in ? (double)sz[i] / (double)in : 1.0;
        }
        return KILN_OK;
    }
    int not_larger = !strcmp(keep, "not_larger");
    double s = not_larger ? INFINITY : -INFINITY;
    for (int i = 0; i < n; i++) {
        int64_t in = x->dims[axes[i]];
        double q = in ? (double)sz[i] / (double)in : 1.0;
        s = not_larger ? fmin(s, q) : fmax(s, q);
    }
    for (int i = 0; i < n; i++) d->scale[axes[i]] = s;
    return KILN_OK;
}

kiln_status kiln_cuda_resize_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y || kiln_numel(y) <= 0) return KILN_OK;
    kiln_cuda_resize_desc d;
    char why[160];
    if (!resize_modes(ctx->node, ctx->opset, &d, why, sizeof why))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "%s", why);
    if (x->rank < 1 || x->rank > KILN_CUDA_RESIZE_MAX_RANK || y->rank != x->rank)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "Resize of rank %d on CUDA", x->rank);
    d.rank = x->rank;
    d.dtype = x->dtype;
    d.elem = kiln_cuda_data_elem(x->dtype);
    for (int i = 0; i < x->rank; i++) {
        d.in[i] = x->dims[i];
        d.out[i] = y->dims[i];
    }
    KILN_TRY(resize_scales(ctx, x, &d));
    void *ws = NULL;
    size_t ws_bytes = kiln_cuda_resize_workspace(&d);
    if (ws_bytes) KILN_CUDA_TRY(ctx, kiln_cuda_workspace(kiln_cuda_of(ctx), ws_bytes, &ws));
    return kiln_cuda_data_launched(ctx, kiln_cuda_resize(kiln_cuda_data_stream(ctx), &d, x->data, y->data, ws));
}
