/* The CUDA norm family: LayerNormalization (and onnxruntime's earlier default-domain and
 * com.microsoft forms), SimplifiedLayerNormalization, RMSNormalization, com.microsoft
 * SkipLayerNormalization / SkipSimplifiedLayerNormalization, Softmax / LogSoftmax / Hardmax,
 * BatchNormalization (inference), InstanceNormalization and GroupNormalization.
 *
 * The shared op definitions (src/cpu/kernels/norm_*.c, softmax.c) validate inputs and set output
 * shapes before compute runs; this file maps each node onto the launchers of kernels/norm.h.
 * float32, float16 and bfloat16; the row normalisations need every float input of X's type (as
 * the CPU op does); the channel normalisations take parameters of any of the three types. */
#include "../cuda_ep.h"
#include "../kernels/norm.h"

#include <stdio.h>
#include <string.h>

static void *stream_of(kiln_ctx *ctx) { return kiln_cuda_stream(kiln_cuda_of(ctx)); }

static int64_t dims_prod(const int64_t *dims, int a, int b) {
    int64_t p = 1;
    for (int i = a; i < b; i++) p *= dims[i];
    return p;
}

static kiln_tensor *opt_input(kiln_ctx *ctx, int i) { return i < ctx->n_in ? kiln_input(ctx, i) : NULL; }
static kiln_tensor *opt_output(kiln_ctx *ctx, int i) { return i >= 0 && i < ctx->n_out ? kiln_output(ctx, i) : NULL; }

/* ---- row normalisations: LayerNormalization, SimplifiedLayerNormalization, RMSNormalization ---- */

/* A static dim is known to equal 1 / known not to broadcast against x's dim xd: */
static int no_broadcast(int64_t pd, int64_t xd) { return pd > 1 || pd == 0 || (pd == 1 && xd == 1); }

/* Whether the kernel can take scale/bias p over x normalised from `axis`: p must not broadcast
 * within the normalised dims, and over the leading dims it is either all 1s (one set of n values
 * for every row) or not broadcast at all (one set per row). */
static int param_layout_ok(const kiln_graph_value *p, const kiln_graph_value *x, int axis,
                           const char *what, char *why, size_t cap) {
    if (!p) return 1;
    if (p->type.rank < 0) {
        snprintf(why, cap, "the rank of %s is not known before running", what);
        return 0;
    }
    int xr = x->type.rank, off = xr - p->type.rank, lead_ones = 1, lead_full = 1;
    if (off < 0) return 1; /* the shared infer rejects it */
    for (int i = 0; i < p->type.rank; i++) {
        if (p->type.dims[i] < 0) {
            snprintf(why, cap, "the shape of %s is not known before running", what);
            return 0;
        }
    }
    for (int xi = 0; xi < xr; xi++) {
        int64_t pd = xi >= off ? p->type.dims[xi - off] : 1, xd = x->type.dims[xi];
        if (xi >= axis && !no_broadcast(pd, xd)) {
            snprintf(why, cap, "%s would broadcast within the normalised axes (only a full set of "
                     "values is supported)", what);
            return 0;
        }
        if (xi < axis) {
            if (pd != 1) lead_ones = 0;
            if (!no_broadcast(pd, xd)) lead_full = 0;
        }
    }
    if (!lead_ones && !lead_full) {
        snprintf(why, cap, "%s is broadcast over only some of the leading axes", what);
        return 0;
    }
    return 1;
}

static int axis_norm_supports(const kiln_node *n, const kiln_graph_value *const *in, int has_bias,
                              char *why, size_t cap) {
    unsigned mask = has_bias ? 7u : 3u;
    if (!kiln_cuda_need_float(n, in, mask, why, cap)) return 0;
    const kiln_graph_value *x = in[0];
    if (x->type.rank < 1) {
        snprintf(why, cap, "the rank of X is not known before running");
        return 0;
    }
    int64_t axis = kiln_attr_int(n, "axis", -1);
    if (axis < 0) axis += x->type.rank;
    if (axis < 0 || axis >= x->type.rank) {
        snprintf(why, cap, "axis is out of range");
        return 0;
    }
    if (!param_layout_ok(n->n_in > 1 ? in[1] : NULL, x, (int)axis, "scale", why, cap)) return 0;
    if (has_bias && !param_layout_ok(n->n_in > 2 ? in[2] : NULL, x, (int)axis, "B", why, cap)) return 0;
    return 1;
}

static int layernorm_supports(const kiln_node *n, const kiln_graph_value *const *in,
                              const kiln_graph_value *const *out, char *why, size_t cap) {
    return axis_norm_supports(n, in, 1, why, cap);
}

static int simplified_supports(const kiln_node *n, const kiln_graph_value *const *in,
                               const kiln_graph_value *const *out, char *why, size_t cap) {
    return axis_norm_supports(n, in, 0, why, cap);
}

/* Row stride of p's values in the [rows, n] view: 0 when every row uses the same n values, n when
 * each row has its own; -1 for any other broadcast (supports() keeps those away). */
static int64_t param_row_stride(const kiln_tensor *p, const kiln_tensor *x, int axis, int64_t n) {
    int64_t pn = kiln_numel(p);
    int off = x->rank - p->rank, lead_ones = 1;
    for (int i = 0; i < p->rank; i++)
        if (i + off < axis && p->dims[i] != 1) lead_ones = 0;
    if (lead_ones && pn == n) return 0;
    if (pn == kiln_numel(x)) return n;
    return -1;
}

static kiln_status run_axis_norm(kiln_ctx *ctx, int simplified, int has_bias, int mean_out,
                                 int inv_out) {
    kiln_tensor *x = kiln_input(ctx, 0), *scale = kiln_input(ctx, 1);
    kiln_tensor *bias = has_bias ? opt_input(ctx, 2) : NULL;
    kiln_tensor *y = kiln_output(ctx, 0), *mo = opt_output(ctx, mean_out), *io = opt_output(ctx, inv_out);
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -1), x->rank, "axis", &axis));
    kiln_cuda_ln_args a;
    memset(&a, 0, sizeof a);
    a.dtype = x->dtype;
    a.simplified = simplified;
    a.rows = dims_prod(x->dims, 0, axis);
    a.n = dims_prod(x->dims, axis, x->rank);
    a.eps = kiln_attr_float(ctx->node, "epsilon", 1e-5f);
    if (a.rows * a.n == 0 || (!y && !mo && !io)) return KILN_OK;
    a.x = x->data;
    a.gamma = scale->data;
    a.gamma_row_stride = param_row_stride(scale, x, axis, a.n);
    if (bias) {
        a.beta = bias->data;
        a.beta_row_stride = param_row_stride(bias, x, axis, a.n);
    }
    if (a.gamma_row_stride < 0 || (bias && a.beta_row_stride < 0))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "the CUDA kernel takes scale/B with the normalised dims in full");
    a.y = y ? y->data : NULL;
    a.mean = mo ? mo->data : NULL;
    a.inv = io ? io->data : NULL;
    KILN_CUDA_TRY(ctx, kiln_cuda_layer_norm(stream_of(ctx), &a));
    return KILN_OK;
}

/* LayerNormalization: Y, Mean, InvStdDev; SimplifiedLayerNormalization: Y, inv_std_var;
 * RMSNormalization: Y. */
static kiln_status layernorm_compute(kiln_ctx *ctx) { return run_axis_norm(ctx, 0, 1, 1, 2); }
static kiln_status simplified_compute(kiln_ctx *ctx) { return run_axis_norm(ctx, 1, 0, -1, 1); }
static kiln_status rmsnorm_compute(kiln_ctx *ctx) { return run_axis_norm(ctx, 1, 0, -1, -1); }

/* ---- com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization ----
 * inputs: input, skip, gamma, beta (not simplified), bias; outputs: output, mean, inv_std_var,
 * input_skip_bias_sum. */

static int skip_supports(const kiln_node *n, const kiln_graph_value *const *in, int simplified,
                         char *why, size_t cap) {
    return kiln_cuda_need_float(n, in, simplified ? 0xfu : 0x1fu, why, cap);
}

static int skip_ln_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap) {
    return skip_supports(n, in, 0, why, cap);
}

static int skip_simplified_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                    const kiln_graph_value *const *out, char *why, size_t cap) {
    return skip_supports(n, in, 1, why, cap);
}

static kiln_status run_skip(kiln_ctx *ctx, int simplified) {
    kiln_tensor *x = kiln_input(ctx, 0), *skip = kiln_input(ctx, 1), *gamma = kiln_input(ctx, 2);
    kiln_tensor *beta = simplified ? NULL : opt_input(ctx, 3);
    kiln_tensor *bias = opt_input(ctx, simplified ? 3 : 4);
    kiln_cuda_ln_args a;
    memset(&a, 0, sizeof a);
    a.dtype = x->dtype;
    a.simplified = simplified;
    a.n = x->dims[x->rank - 1];
    int64_t total = kiln_numel(x);
    if (total == 0 || a.n == 0) return KILN_OK;
    a.rows = total / a.n;
    a.eps = kiln_attr_float(ctx->node, "epsilon", 1e-12f);
    a.x = x->data;
    a.skip = skip->data;
    a.skip_rows = kiln_numel(skip) / a.n;
    a.bias = bias ? bias->data : NULL;
    a.gamma = gamma->data;
    a.beta = beta ? beta->data : NULL;
    kiln_tensor *y = kiln_output(ctx, 0), *mo = opt_output(ctx, 1), *io = opt_output(ctx, 2);
    kiln_tensor *so = opt_output(ctx, 3);
    a.y = y ? y->data : NULL;
    a.mean = mo ? mo->data : NULL;
    a.inv = io ? io->data : NULL;
    a.sum = so ? so->data : NULL;
    if (!a.y && !a.mean && !a.inv && !a.sum) return KILN_OK;
    KILN_CUDA_TRY(ctx, kiln_cuda_layer_norm(stream_of(ctx), &a));
    return KILN_OK;
}

static kiln_status skip_ln_compute(kiln_ctx *ctx) { return run_skip(ctx, 0); }
static kiln_status skip_simplified_compute(kiln_ctx *ctx) { return run_skip(ctx, 1); }

/* ---- Softmax / LogSoftmax / Hardmax ---- */

static int softmax_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap) {
    return kiln_cuda_need_float(n, in, 1u, why, cap);
}

/* before opset 13: [prod(dims[:axis]), prod(dims[axis:])] rows (axis default 1); from 13 on:
 * along dims[axis] (default -1) of [outer, n, inner] */
static kiln_status run_softmax(kiln_ctx *ctx, int kind) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int old = ctx->opset < 13, axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", old ? 1 : -1), x->rank, "axis", &axis));
    int64_t outer = dims_prod(x->dims, 0, axis), n, inner;
    if (old) {
        n = dims_prod(x->dims, axis, x->rank);
        inner = 1;
    } else {
        n = x->dims[axis];
        inner = dims_prod(x->dims, axis + 1, x->rank);
    }
    if (outer * n * inner == 0) return KILN_OK;
    KILN_CUDA_TRY(ctx, kiln_cuda_softmax(stream_of(ctx), kind, x->dtype, x->data, y->data, outer, n,
                                         inner));
    return KILN_OK;
}

static kiln_status softmax_compute(kiln_ctx *ctx) { return run_softmax(ctx, KILN_CUDA_SOFTMAX); }
static kiln_status logsoftmax_compute(kiln_ctx *ctx) { return run_softmax(ctx, KILN_CUDA_LOG_SOFTMAX); }
static kiln_status hardmax_compute(kiln_ctx *ctx) { return run_softmax(ctx, KILN_CUDA_HARDMAX); }

/* ---- channel normalisations ---- */

/* X float32/float16/bfloat16 of known rank >= 2 (or unknown rank); inputs 1..last each a float
 * type of their own (ONNX lets the parameters differ from X). */
static int channel_supports(const kiln_node *n, const kiln_graph_value *const *in, int last,
                            char *why, size_t cap) {
    if (!kiln_cuda_need_float(n, in, 1u, why, cap)) return 0;
    for (int i = 1; i <= last && i < n->n_in; i++) {
        int dt = kiln_cuda_in_dtype(in, i);
        if (!in[i]) continue;
        if (!kiln_cuda_float_type(dt)) {
            snprintf(why, cap, "input %d has element type %s; the CUDA kernel takes float32, float16 "
                     "or bfloat16", i, dt ? kiln_dtype_name((kiln_dtype)dt) : "unknown");
            return 0;
        }
    }
    return 1;
}

static int instancenorm_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                 const kiln_graph_value *const *out, char *why, size_t cap) {
    return channel_supports(n, in, 2, why, cap);
}

static kiln_status run_group_norm(kiln_ctx *ctx, int64_t groups, int per_group_params) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    kiln_tensor *scale = kiln_input(ctx, 1), *bias = kiln_input(ctx, 2);
    if (!y || kiln_numel(x) == 0) return KILN_OK;
    kiln_cuda_gn_args a;
    memset(&a, 0, sizeof a);
    a.dtype = x->dtype;
    a.scale_dtype = scale->dtype;
    a.bias_dtype = bias->dtype;
    a.batch = x->dims[0];
    a.channels = x->dims[1];
    a.groups = groups;
    a.inner = dims_prod(x->dims, 2, x->rank);
    a.param_div = per_group_params ? a.channels / groups : 1;
    a.eps = kiln_attr_float(ctx->node, "epsilon", 1e-5f);
    a.x = x->data;
    a.scale = scale->data;
    a.bias = bias->data;
    a.y = y->data;
    KILN_CUDA_TRY(ctx, kiln_cuda_group_norm(kiln_cuda_of(ctx), &a));
    return KILN_OK;
}

static kiln_status instancenorm_compute(kiln_ctx *ctx) {
    return run_group_norm(ctx, kiln_input(ctx, 0)->dims[1], 0);
}

static int groupnorm_supports(const kiln_node *n, const kiln_graph_value *const *in,
                              const kiln_graph_value *const *out, char *why, size_t cap) {
    if (!kiln_has_attr(n, "num_groups")) {
        snprintf(why, cap, "attribute 'num_groups' is missing");
        return 0;
    }
    return channel_supports(n, in, 2, why, cap);
}

/* scale and bias per group before opset 21, per channel from 21 */
static kiln_status groupnorm_compute(kiln_ctx *ctx) {
    int64_t g = kiln_attr_int(ctx->node, "num_groups", 1);
    kiln_tensor *x = kiln_input(ctx, 0);
    if (g <= 0 || x->dims[1] % g)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "num_groups = %lld must be positive and divide the %lld channels",
                         (long long)g, (long long)x->dims[1]);
    return run_group_norm(ctx, g, ctx->opset < 21);
}

/* Inference only: training mode (opset 14+ training_mode = 1, or before 14 a node that asks for
 * the statistics outputs) updates running statistics, which this kernel does not do. */
static int batchnorm_supports(const kiln_node *n, const kiln_graph_value *const *in,
                              const kiln_graph_value *const *out, char *why, size_t cap) {
    if (n->opset >= 14 && kiln_attr_int(n, "training_mode", 0) != 0) {
        snprintf(why, cap, "training_mode = 1 is not supported (inference only)");
        return 0;
    }
    for (int o = 1; o < n->n_out; o++) {
        if (n->out[o] >= 0) {
            snprintf(why, cap, "the training statistics outputs are not supported (inference only)");
            return 0;
        }
    }
    return channel_supports(n, in, 4, why, cap);
}

static kiln_status batchnorm_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y || kiln_numel(x) == 0) return KILN_OK;
    kiln_tensor *p[4];
    for (int i = 0; i < 4; i++) KILN_TRY(kiln_need_input(ctx, i + 1, &p[i]));
    kiln_cuda_bn_args a;
    memset(&a, 0, sizeof a);
    a.dtype = x->dtype;
    a.batch = x->dims[0];
    if (ctx->opset < 9 && kiln_attr_int(ctx->node, "spatial", 1) == 0) {
        /* statistics per element of a sample */
        a.channels = dims_prod(x->dims, 1, x->rank);
        a.inner = 1;
    } else {
        a.channels = x->dims[1];
        a.inner = dims_prod(x->dims, 2, x->rank);
    }
    a.eps = kiln_attr_float(ctx->node, "epsilon", 1e-5f);
    a.x = x->data;
    a.y = y->data;
    a.scale = p[0]->data;
    a.bias = p[1]->data;
    a.mean = p[2]->data;
    a.var = p[3]->data;
    a.scale_dtype = p[0]->dtype;
    a.bias_dtype = p[1]->dtype;
    a.mean_dtype = p[2]->dtype;
    a.var_dtype = p[3]->dtype;
    KILN_CUDA_TRY(ctx, kiln_cuda_batch_norm(stream_of(ctx), &a));
    return KILN_OK;
}

#define K(dom, name, since, fn) {dom, name, since, 0, fn##_supports, NULL, NULL, fn##_compute}
#define K2(dom, name, since, sup, fn) {dom, name, since, 0, sup##_supports, NULL, NULL, fn##_compute}

const kiln_kernel kiln_cuda_kernels_norm[] = {
    /* the CPU serves LayerNormalization and SimplifiedLayerNormalization under the default domain
     * from opset 1 (as onnxruntime does) and under com.microsoft */
    K("", "LayerNormalization", 1, layernorm),
    K2("com.microsoft", "LayerNormalization", 1, layernorm, layernorm),
    K2("", "SimplifiedLayerNormalization", 1, simplified, simplified),
    K2("com.microsoft", "SimplifiedLayerNormalization", 1, simplified, simplified),
    K2("", "RMSNormalization", 23, simplified, rmsnorm),
    K2("com.microsoft", "SkipLayerNormalization", 1, skip_ln, skip_ln),
    K2("com.microsoft", "SkipSimplifiedLayerNormalization", 1, skip_simplified, skip_simplified),
    K2("", "Softmax", 1, softmax, softmax),
    K2("", "LogSoftmax", 1, softmax, logsoftmax),
    K2("", "Hardmax", 1, softmax, hardmax),
    K("", "BatchNormalization", 1, batchnorm),
    K("", "InstanceNormalization", 1, instancenorm),
    K("", "GroupNormalization", 18, groupnorm),
    {0}};
