/* MaxPool (with its optional Indices), AveragePool, GlobalAveragePool and GlobalMaxPool on our own
 * kernels (kernels/conv.cu), 1-D to 3-D, float32 / float16 / bfloat16 (MaxPool also int8 and
 * uint8, as the CPU). cuDNN's pooling has no ceil_mode, dilations or Indices; one thread per
 * output with 32-bit index arithmetic runs ResNet's 3x3/2 MaxPool (8x64x112x112 fp16) in 35 us on an
 * H100, PyTorch's kernel in 28 us.
 *
 * The window geometry (kiln_cuda_window_geom, also used by Conv in ops/conv.c) follows the ops'
 * shared infer exactly, and compute checks that it lands on the output shape infer set. The
 * pooling kernels are registered in the conv family's table (ops/conv.c). */
#include "../cuda_ep.h"
#include "../kernels/conv.h"

#include <stdio.h>
#include <string.h>

/* ---- window geometry ---- */

int kiln_cuda_auto_pad(const kiln_node *n) {
    const char *s = kiln_attr_string(n, "auto_pad", "NOTSET");
    if (!s || !*s || !strcmp(s, "NOTSET")) return KILN_CUDA_PAD_NOTSET;
    if (!strcmp(s, "SAME_UPPER")) return KILN_CUDA_PAD_SAME_UPPER;
    if (!strcmp(s, "SAME_LOWER")) return KILN_CUDA_PAD_SAME_LOWER;
    if (!strcmp(s, "VALID")) return KILN_CUDA_PAD_VALID;
    return -1;
}

static int read_list(const kiln_node *n, const char *name, int want, int64_t dflt, int64_t min,
                     int64_t *out, char *why, size_t cap) {
    int count = 0;
    const int64_t *v = kiln_attr_ints(n, name, &count);
    for (int i = 0; i < want; i++) out[i] = dflt;
    if (!v) return 1;
    if (count != want) {
        snprintf(why, cap, "attribute %s has %d values, expected %d", name, count, want);
        return 0;
    }
    for (int i = 0; i < want; i++) {
        if (v[i] < min) {
            snprintf(why, cap, "attribute %s[%d] is %lld; it must be >= %lld", name, i, (long long)v[i],
                     (long long)min);
            return 0;
        }
        out[i] = v[i];
    }
    return 1;
}

int kiln_cuda_window_geom(const kiln_node *n, int nd, const int64_t *in, const int64_t *k,
                          int use_dilations, int ceil_mode, kiln_cuda_window *w, char *why, size_t cap) {
    int64_t pads[6];
    int mode = kiln_cuda_auto_pad(n);
    memset(w, 0, sizeof *w);
    w->nd = nd;
    if (nd < 1 || nd > 3) {
        snprintf(why, cap, "%d spatial dims; the CUDA kernels take 1 to 3", nd);
        return 0;
    }
    if (mode < 0) {
        snprintf(why, cap, "auto_pad '%s' is not recognised", kiln_attr_string(n, "auto_pad", ""));
        return 0;
    }
    if (!read_list(n, "strides", nd, 1, 1, w->stride, why, cap) ||
        (use_dilations && !read_list(n, "dilations", nd, 1, 1, w->dil, why, cap)) ||
        !read_list(n, "pads", 2 * nd, 0, 0, pads, why, cap))
        return 0;
    for (int i = 0; i < nd; i++) {
        if (!use_dilations) w->dil[i] = 1;
        if (k[i] < 1 || in[i] < 0) {
            snprintf(why, cap, "kernel size %lld / input size %lld in spatial dim %d", (long long)k[i],
                     (long long)in[i], i);
            return 0;
        }
        int64_t dk = (k[i] - 1) * w->dil[i] + 1, s = w->stride[i];
        w->in[i] = in[i];
        w->k[i] = k[i];
        if (mode == KILN_CUDA_PAD_SAME_UPPER || mode == KILN_CUDA_PAD_SAME_LOWER) {
            int64_t out = (in[i] + s - 1) / s, total = (out - 1) * s + dk - in[i];
            if (total < 0) total = 0;
            w->pad_b[i] = mode == KILN_CUDA_PAD_SAME_UPPER ? total / 2 : total - total / 2;
            w->pad_e[i] = total - w->pad_b[i];
            w->out[i] = out;
            continue;
        }
        w->pad_b[i] = mode == KILN_CUDA_PAD_NOTSET ? pads[i] : 0;
        w->pad_e[i] = mode == KILN_CUDA_PAD_NOTSET ? pads[nd + i] : 0;
        int64_t span = in[i] + w->pad_b[i] + w->pad_e[i] - dk;
        if (span < 0) {
            snprintf(why, cap, "in spatial dim %d the window (extent %lld) is larger than the padded input", i,
                     (long long)dk);
            return 0;
        }
        int64_t out = span / s + 1;
        if (ceil_mode && span % s) {
            out++;
            if ((out - 1) * s >= in[i] + w->pad_b[i]) out--; /* no window may start in the end padding */
        }
        w->out[i] = out;
    }
    return 1;
}

/* ---- MaxPool / AveragePool ---- */

static int pool_dtype_ok(int is_max, int dt) {
    return kiln_cuda_float_type(dt) || (is_max && (dt == KILN_DTYPE_INT8 || dt == KILN_DTYPE_UINT8));
}

/* The window of node n (opset-dependent: dilations from MaxPool-10 / AveragePool-19, ceil_mode
 * from opset 10) over the spatial sizes in. */
static int pool_window(const kiln_node *n, int opset, int is_max, int nd, const int64_t *in,
                       kiln_cuda_window *w, char *why, size_t cap) {
    int nk = 0;
    const int64_t *ks = kiln_attr_ints(n, "kernel_shape", &nk);
    if (!ks || nk != nd) {
        snprintf(why, cap, "kernel_shape has %d values for %d spatial dims", ks ? nk : 0, nd);
        return 0;
    }
    int use_dil = is_max ? opset >= 10 : opset >= 19;
    int ceil_mode = opset >= 10 && kiln_attr_int(n, "ceil_mode", 0) != 0;
    return kiln_cuda_window_geom(n, nd, in, ks, use_dil, ceil_mode, w, why, cap);
}

static kiln_status pool_compute(kiln_ctx *ctx, int is_max) {
    kiln_tensor *X = kiln_input(ctx, 0), *Y = kiln_output(ctx, 0);
    kiln_tensor *I = is_max && ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    kiln_tensor *shape = Y ? Y : I;
    if (!shape || kiln_numel(shape) == 0) return KILN_OK;
    if (!X) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing input X");
    if (I && I->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output Indices is not int64");
    int nd = X->rank - 2;
    kiln_cuda_window w;
    char why[160];
    if (nd < 1 || nd > 3 || !pool_dtype_ok(is_max, X->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "X has rank %d, element type %d", X->rank, X->dtype);
    if (!pool_window(ctx->node, ctx->opset, is_max, nd, X->dims + 2, &w, why, sizeof why))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s", why);
    for (int i = 0; i < nd; i++)
        if (w.out[i] != shape->dims[i + 2])
            return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output dim %d is %lld, the window gives %lld", i + 2,
                             (long long)shape->dims[i + 2], (long long)w.out[i]);
    kiln_cuda_pool_geom g;
    memset(&g, 0, sizeof g);
    g.planes = X->dims[0] * X->dims[1];
    int off = 3 - nd;
    for (int d = 0; d < 3; d++) {
        int e = d - off;
        g.in[d] = e >= 0 ? w.in[e] : 1;
        g.out[d] = e >= 0 ? w.out[e] : 1;
        g.k[d] = e >= 0 ? w.k[e] : 1;
        g.stride[d] = e >= 0 ? w.stride[e] : 1;
        g.dil[d] = e >= 0 ? w.dil[e] : 1;
        g.pad_b[d] = e >= 0 ? w.pad_b[e] : 0;
        g.pad_e[d] = e >= 0 ? w.pad_e[e] : 0;
    }
    g.is_max = is_max;
    g.count_include_pad = kiln_attr_int(ctx->node, "count_include_pad", 0) != 0;
    g.storage_order = kiln_attr_int(ctx->node, "storage_order", 0) != 0;
    KILN_CUDA_TRY(ctx, kiln_cuda_pool(kiln_cuda_stream(kiln_cuda_of(ctx)), X->dtype, &g, X->data,
                                      Y ? Y->data : NULL, I ? (int64_t *)I->data : NULL));
    return KILN_OK;
}

kiln_status kiln_cuda_maxpool_compute(kiln_ctx *ctx) { return pool_compute(ctx, 1); }
kiln_status kiln_cuda_avgpool_compute(kiln_ctx *ctx) { return pool_compute(ctx, 0); }

int kiln_cuda_pool_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap) {
    int is_max = !strcmp(n->op_type, "MaxPool"), dt = kiln_cuda_in_dtype(in, 0);
    if (!pool_dtype_ok(is_max, dt)) {
        snprintf(why, cap, "X has element type %s; the CUDA kernel takes float32, float16, bfloat16%s",
                 dt ? kiln_dtype_name((kiln_dtype)dt) : "unknown", is_max ? ", int8, uint8" : "");
        return 0;
    }
    int r = in[0]->type.rank;
    if (r < 0) {
        snprintf(why, cap, "the rank of X is not known before running");
        return 0;
    }
    if (r < 3 || r > 5) {
        snprintf(why, cap, "X has rank %d; the CUDA kernel pools over 1 to 3 spatial dims", r);
        return 0;
    }
    /* the geometry's attribute checks, on placeholder sizes large enough for any window */
    int64_t big[3] = {INT32_MAX, INT32_MAX, INT32_MAX};
    kiln_cuda_window w;
    return pool_window(n, n->opset, is_max, r - 2, big, &w, why, cap);
}

/* ---- GlobalAveragePool / GlobalMaxPool ---- */

static kiln_status gpool_compute(kiln_ctx *ctx, int is_max) {
    kiln_tensor *X = kiln_input(ctx, 0), *Y = kiln_output(ctx, 0);
    if (!Y || kiln_numel(Y) == 0) return KILN_OK;
    if (!X || X->rank < 3) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X must have rank >= 3");
    int64_t planes = X->dims[0] * X->dims[1], size = 1;
    for (int i = 2; i < X->rank; i++) size *= X->dims[i];
    KILN_CUDA_TRY(ctx, kiln_cuda_global_pool(kiln_cuda_stream(kiln_cuda_of(ctx)), X->dtype, is_max, X->data,
                                             Y->data, planes, size));
    return KILN_OK;
}

kiln_status kiln_cuda_gavgpool_compute(kiln_ctx *ctx) { return gpool_compute(ctx, 0); }
kiln_status kiln_cuda_gmaxpool_compute(kiln_ctx *ctx) { return gpool_compute(ctx, 1); }

int kiln_cuda_gpool_supports(const kiln_node *n, const kiln_graph_value *const *in,
                             const kiln_graph_value *const *out, char *why, size_t cap) {
    if (!kiln_cuda_need_float(n, in, 0x1u, why, cap)) return 0;
    int r = in[0]->type.rank;
    if (r >= 0 && r < 3) {
        snprintf(why, cap, "X has rank %d; expected [N, C, spatial...]", r);
        return 0;
    }
    return 1;
}
