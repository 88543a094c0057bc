/* Conv, com.microsoft FusedConv and ConvTranspose on cuDNN (legacy descriptor API), 1-D to 3-D,
 * float32 / float16 / bfloat16 in NCHW.
 *
 * Per node the kernel state holds a plan: cuDNN descriptors and the algorithm chosen by the
 * heuristics (cudnnGet*Algorithm_v7: no trial runs, so no synchronisation and nothing that breaks
 * graph capture), rebuilt only when an input shape changes. What cuDNN cannot express is done
 * around it:
 *  - asymmetric pads (SAME_* with even kernels, explicit pads): cuDNN pads symmetrically, so Conv
 *    pads the input by the difference into the workspace first, and ConvTranspose computes its
 *    full output into the workspace and crops it (the crop also covers output_padding and an
 *    output_shape larger than the full output, which only add zeros);
 *  - bias, FusedConv's residual Z and its activation: one epilogue kernel over the output;
 *  - 1-D: run as 2-D with a unit width;
 *  - tensors over 2^31 elements (cuDNN's strides are int): the batch is cut into equal chunks.
 * float32 runs with CUDNN_FMA_MATH, so cuDNN never rounds inputs to TF32 (the CPU does not);
 * float16 / bfloat16 use tensor cores with float32 accumulation. */
#include "../cuda_ep.h"
#include "../kernels/conv.h"

#include <cudnn.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* A larger workspace buys little over the next algorithm, and the workspace never shrinks. */
#define CONV_WS_LIMIT ((size_t)256 << 20)

typedef struct conv_plan {
    int ready;
    int dtype, rank;
    int64_t xdims[5], wdims[5], ydims[5]; /* the shapes the plan was made for */
    cudnnTensorDescriptor_t xd, yd;       /* ConvTranspose: xd is cuDNN's dy, yd its dx */
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
    int algo;
    size_t algo_ws;
    int64_t chunk;                        /* images per cuDNN call */
    int64_t x_image, y_image;             /* elements per image of X and Y */
    int staged;                           /* Conv: X padded into the stage; ConvT: Y cropped out */
    int64_t stage_planes;                 /* planes per chunk the window copy moves */
    int64_t st_src[3], st_dst[3], st_shift[3];
    size_t stage_bytes;
} conv_plan;

typedef struct conv_act {
    int kind;
    float a, b;
} conv_act;

/* ---- small helpers ---- */

/* what: the failing call's source text; the message names the function only */
static kiln_status cudnn_fail(kiln_ctx *ctx, cudnnStatus_t s, const char *what) {
    int code = s == CUDNN_STATUS_NOT_SUPPORTED ? KILN_ERR_NOT_IMPLEMENTED
               : s == CUDNN_STATUS_ALLOC_FAILED ? KILN_ERR_NO_MEMORY
                                                : KILN_ERR_RUNTIME;
    return KILN_FAIL(ctx, code, "%.*s: %s", (int)strcspn(what, "("), what, cudnnGetErrorString(s));
}

#define CUDNN_TRY(ctx, call)                                                                        \
    do {                                                                                            \
        cudnnStatus_t cs_ = (call);                                                                 \
        if (cs_ != CUDNN_STATUS_SUCCESS) return cudnn_fail(ctx, cs_, #call);                        \
    } while (0)

static cudnnDataType_t cudnn_type(int dtype) {
    return dtype == KILN_DTYPE_FLOAT16 ? CUDNN_DATA_HALF
           : dtype == KILN_DTYPE_BFLOAT16 ? CUDNN_DATA_BFLOAT16
                                          : CUDNN_DATA_FLOAT;
}

static size_t elem_size(int dtype) { return dtype == KILN_DTYPE_FLOAT ? 4 : 2; }

static size_t align_up(size_t n) { return (n + 255) & ~(size_t)255; }

static int64_t prod(int n, const int64_t *d) {
    int64_t p = 1;
    for (int i = 0; i < n; i++) p *= d[i];
    return p;
}

/* The largest divisor of n whose chunks keep every tensor cuDNN sees under 2^31 elements;
 * 0 when one image alone is too large. Equal chunks let one set of descriptors serve them all. */
static int64_t pick_chunk(int64_t n, int64_t per_image) {
    if (per_image <= 0) return n;
    int64_t most = (int64_t)INT_MAX / per_image;
    if (most >= n) return n;
    for (int64_t c = most; c >= 1; c--)
        if (n % c == 0) return c;
    return 0;
}

/* Lower-rank spatial dims as a 3-D view with leading ones. */
static void view3(int nd, const int64_t *d, int64_t fill, int64_t *out) {
    for (int i = 0; i < 3; i++) out[i] = i < 3 - nd ? fill : d[i - (3 - nd)];
}

static int parse_act(const kiln_node *n, conv_act *act, char *why, size_t cap) {
    const char *name = kiln_attr_string(n, "activation", "");
    int np = 0;
    const float *p = kiln_attr_floats(n, "activation_params", &np);
    act->kind = KILN_CUDA_ACT_NONE;
    act->a = act->b = 0.0f;
    if (!name || !*name) return 1;
    if (!strcmp(name, "Relu")) act->kind = KILN_CUDA_ACT_RELU;
    else if (!strcmp(name, "Tanh")) act->kind = KILN_CUDA_ACT_TANH;
    else if (!strcmp(name, "Sigmoid")) act->kind = KILN_CUDA_ACT_SIGMOID;
    else if (!strcmp(name, "LeakyRelu")) {
        act->kind = KILN_CUDA_ACT_LEAKY;
        act->a = np > 0 ? p[0] : 0.01f;
    } else if (!strcmp(name, "Clip")) {
        act->kind = KILN_CUDA_ACT_CLIP;
        act->a = np > 0 ? p[0] : -3.402823466e38f;
        act->b = np > 1 ? p[1] : 3.402823466e38f;
    } else if (!strcmp(name, "HardSigmoid")) {
        act->kind = KILN_CUDA_ACT_HSIGMOID;
        act->a = np > 0 ? p[0] : 0.2f;
        act->b = np > 1 ? p[1] : 0.5f;
    } else if (!strcmp(name, "HardSwish")) {
        act->kind = KILN_CUDA_ACT_HSWISH;
    } else {
        snprintf(why, cap, "FusedConv activation '%s' is not supported", name);
        return 0;
    }
    return 1;
}

/* ---- the plan ---- */

static kiln_status plan_descriptors(kiln_ctx *ctx, conv_plan *p) {
    if (p->xd) return KILN_OK;
    CUDNN_TRY(ctx, cudnnCreateTensorDescriptor(&p->xd));
    CUDNN_TRY(ctx, cudnnCreateTensorDescriptor(&p->yd));
    CUDNN_TRY(ctx, cudnnCreateFilterDescriptor(&p->wd));
    CUDNN_TRY(ctx, cudnnCreateConvolutionDescriptor(&p->cd));
    return KILN_OK;
}

static void plan_destroy(conv_plan *p) {
    if (p->xd) cudnnDestroyTensorDescriptor(p->xd);
    if (p->yd) cudnnDestroyTensorDescriptor(p->yd);
    if (p->wd) cudnnDestroyFilterDescriptor(p->wd);
    if (p->cd) cudnnDestroyConvolutionDescriptor(p->cd);
    memset(p, 0, sizeof *p);
}

static int plan_matches(const conv_plan *p, const kiln_tensor *X, const kiln_tensor *W,
                        const kiln_tensor *Y) {
    if (!p->ready || p->dtype != X->dtype || p->rank != X->rank) return 0;
    size_t b = sizeof(int64_t) * (size_t)X->rank;
    return !memcmp(p->xdims, X->dims, b) && !memcmp(p->wdims, W->dims, b) && !memcmp(p->ydims, Y->dims, b);
}

static int ints_of(int n, const int64_t *v, int *out) {
    for (int i = 0; i < n; i++) {
        if (v[i] > INT_MAX || v[i] < 0) return 0;
        out[i] = (int)v[i];
    }
    return 1;
}

/* The shapes as cuDNN takes them (4-D or 5-D: a 1-D op gets a trailing unit dim) and the
 * convolution itself. x/y: N, C, spatial...; w: filter dims; pad/stride/dil per spatial dim. */
static kiln_status plan_set(kiln_ctx *ctx, conv_plan *p, int nd, const int64_t *x, const int64_t *w,
                            const int64_t *y, const int64_t *pad, const int64_t *stride,
                            const int64_t *dil, int64_t group) {
    int nsp = nd < 2 ? 2 : nd, nb = nsp + 2;
    int64_t xd[5], wd[5], yd[5], pd[3], sd[3], dd[3];
    for (int i = 0; i < nb; i++) {
        xd[i] = i < nd + 2 ? x[i] : 1;
        wd[i] = i < nd + 2 ? w[i] : 1;
        yd[i] = i < nd + 2 ? y[i] : 1;
    }
    for (int i = 0; i < nsp; i++) {
        pd[i] = i < nd ? pad[i] : 0;
        sd[i] = i < nd ? stride[i] : 1;
        dd[i] = i < nd ? dil[i] : 1;
    }
    int xi[5], wi[5], yi[5], xs[5], ys[5], pi[3], si[3], di[3];
    if (!ints_of(nb, xd, xi) || !ints_of(nb, wd, wi) || !ints_of(nb, yd, yi) || !ints_of(nsp, pd, pi) ||
        !ints_of(nsp, sd, si) || !ints_of(nsp, dd, di) || group > INT_MAX)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "a dimension does not fit cuDNN's int");
    xs[nb - 1] = ys[nb - 1] = 1;
    for (int i = nb - 2; i >= 0; i--) {
        xs[i] = xs[i + 1] * xi[i + 1];
        ys[i] = ys[i + 1] * yi[i + 1];
    }
    cudnnDataType_t dt = cudnn_type(p->dtype);
    CUDNN_TRY(ctx, cudnnSetTensorNdDescriptor(p->xd, dt, nb, xi, xs));
    CUDNN_TRY(ctx, cudnnSetTensorNdDescriptor(p->yd, dt, nb, yi, ys));
    CUDNN_TRY(ctx, cudnnSetFilterNdDescriptor(p->wd, dt, CUDNN_TENSOR_NCHW, nb, wi));
    CUDNN_TRY(ctx, cudnnSetConvolutionNdDescriptor(p->cd, nsp, pi, si, di, CUDNN_CROSS_CORRELATION,
                                                   CUDNN_DATA_FLOAT));
    CUDNN_TRY(ctx, cudnnSetConvolutionGroupCount(p->cd, (int)group));
    CUDNN_TRY(ctx, cudnnSetConvolutionMathType(
                       p->cd, p->dtype == KILN_DTYPE_FLOAT ? CUDNN_FMA_MATH : CUDNN_TENSOR_OP_MATH));
    return KILN_OK;
}

/* The math type a candidate algorithm runs with: float32 stays on FMA whatever the heuristics
 * report (their entries may say DEFAULT, which lets cuDNN use TF32). */
static cudnnMathType_t math_for(const conv_plan *p, cudnnMathType_t suggested) {
    return p->dtype == KILN_DTYPE_FLOAT ? CUDNN_FMA_MATH : suggested;
}

static kiln_status pick_fwd_algo(kiln_ctx *ctx, cudnnHandle_t h, conv_plan *p) {
    cudnnConvolutionFwdAlgoPerf_t perf[CUDNN_CONVOLUTION_FWD_ALGO_COUNT];
    int n = 0;
    CUDNN_TRY(ctx, cudnnGetConvolutionForwardAlgorithm_v7(h, p->xd, p->wd, p->cd, p->yd,
                                                          CUDNN_CONVOLUTION_FWD_ALGO_COUNT, &n, perf));
    for (int i = 0; i < n; i++) {
        size_t ws = 0;
        if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
        if (cudnnSetConvolutionMathType(p->cd, math_for(p, perf[i].mathType)) != CUDNN_STATUS_SUCCESS)
            continue;
        if (cudnnGetConvolutionForwardWorkspaceSize(h, p->xd, p->wd, p->cd, p->yd, perf[i].algo, &ws) !=
                CUDNN_STATUS_SUCCESS || ws > CONV_WS_LIMIT)
            continue;
        p->algo = (int)perf[i].algo;
        p->algo_ws = ws;
        return KILN_OK;
    }
    /* implicit GEMM takes every configuration and no workspace */
    CUDNN_TRY(ctx, cudnnSetConvolutionMathType(p->cd, math_for(p, CUDNN_DEFAULT_MATH)));
    p->algo = (int)CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM;
    CUDNN_TRY(ctx, cudnnGetConvolutionForwardWorkspaceSize(h, p->xd, p->wd, p->cd, p->yd,
                                                           CUDNN_CONVOLUTION_FWD_ALGO_IMPLICIT_GEMM,
                                                           &p->algo_ws));
    return KILN_OK;
}

static kiln_status pick_bwd_algo(kiln_ctx *ctx, cudnnHandle_t h, conv_plan *p) {
    cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
    int n = 0;
    CUDNN_TRY(ctx, cudnnGetConvolutionBackwardDataAlgorithm_v7(
                       h, p->wd, p->xd, p->cd, p->yd, CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
    for (int i = 0; i < n; i++) {
        size_t ws = 0;
        if (perf[i].status != CUDNN_STATUS_SUCCESS) continue;
        if (cudnnSetConvolutionMathType(p->cd, math_for(p, perf[i].mathType)) != CUDNN_STATUS_SUCCESS)
            continue;
        if (cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->wd, p->xd, p->cd, p->yd, perf[i].algo, &ws) !=
                CUDNN_STATUS_SUCCESS || ws > CONV_WS_LIMIT)
            continue;
        p->algo = (int)perf[i].algo;
        p->algo_ws = ws;
        return KILN_OK;
    }
    CUDNN_TRY(ctx, cudnnSetConvolutionMathType(p->cd, math_for(p, CUDNN_DEFAULT_MATH)));
    p->algo = (int)CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
    CUDNN_TRY(ctx, cudnnGetConvolutionBackwardDataWorkspaceSize(h, p->wd, p->xd, p->cd, p->yd,
                                                                CUDNN_CONVOLUTION_BWD_DATA_ALGO_1,
                                                                &p->algo_ws));
    return KILN_OK;
}

static void plan_key(conv_plan *p, const kiln_tensor *X, const kiln_tensor *W, const kiln_tensor *Y) {
    size_t b = sizeof(int64_t) * (size_t)X->rank;
    p->dtype = X->dtype;
    p->rank = X->rank;
    memcpy(p->xdims, X->dims, b);
    memcpy(p->wdims, W->dims, b);
    memcpy(p->ydims, Y->dims, b);
}

/* Conv: Y = X (*) W with the node's window; X is padded into the stage when the pads differ. */
static kiln_status plan_forward(kiln_ctx *ctx, cudnnHandle_t h, conv_plan *p, const kiln_tensor *X,
                                const kiln_tensor *W, const kiln_tensor *Y) {
    char why[160];
    int nd = X->rank - 2;
    int64_t group = kiln_attr_int(ctx->node, "group", 1);
    kiln_cuda_window w;
    if (!kiln_cuda_window_geom(ctx->node, nd, X->dims + 2, W->dims + 2, 1, 0, &w, why, sizeof why))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s", why);
    int64_t C = X->dims[1], M = W->dims[0], xin[3], pad[3], lead[3];
    for (int i = 0; i < nd; i++) {
        if (w.out[i] != Y->dims[i + 2])
            return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output dim %d is %lld, the window gives %lld", i + 2,
                             (long long)Y->dims[i + 2], (long long)w.out[i]);
        pad[i] = w.pad_b[i] < w.pad_e[i] ? w.pad_b[i] : w.pad_e[i];
        lead[i] = w.pad_b[i] - pad[i];
        xin[i] = w.in[i] + (w.pad_b[i] - pad[i]) + (w.pad_e[i] - pad[i]);
        if (xin[i] != w.in[i]) p->staged = 1;
    }
    p->x_image = C * prod(nd, w.in);
    p->y_image = M * prod(nd, w.out);
    int64_t staged_image = C * prod(nd, xin);
    int64_t most = p->x_image > p->y_image ? p->x_image : p->y_image;
    if (staged_image > most) most = staged_image;
    p->chunk = pick_chunk(X->dims[0], most);
    if (!p->chunk) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "one image exceeds cuDNN's 2^31 elements");
    int64_t xs[5] = {p->chunk, C}, ys[5] = {p->chunk, M};
    for (int i = 0; i < nd; i++) {
        xs[i + 2] = xin[i];
        ys[i + 2] = w.out[i];
    }
    KILN_TRY(plan_set(ctx, p, nd, xs, W->dims, ys, pad, w.stride, w.dil, group));
    if (p->staged) {
        p->stage_planes = p->chunk * C;
        view3(nd, w.in, 1, p->st_src);
        view3(nd, xin, 1, p->st_dst);
        view3(nd, lead, 0, p->st_shift);
        p->stage_bytes = align_up((size_t)(p->chunk * staged_image) * elem_size(p->dtype));
    }
    return pick_fwd_algo(ctx, h, p);
}

/* ConvTranspose as cuDNN's backward-data convolution, with Y = the full output cropped by
 * pad_b: Y[o] = full[o + pad_b] (zero past the full output). cuDNN computes full[p, F0 - p) for
 * the symmetric pad p = min(pad_b, pad_e), F0 = s * (in - 1) + dk, which is exact whenever the
 * crop needs nothing outside it; other positions only ever hold zeros. */
static kiln_status plan_transposed(kiln_ctx *ctx, cudnnHandle_t h, conv_plan *p, const kiln_tensor *X,
                                   const kiln_tensor *W, const kiln_tensor *Y) {
    int nd = X->rank - 2, nst = 0, ndl = 0, nop = 0, nos = 0, npads = 0;
    int mode = kiln_cuda_auto_pad(ctx->node);
    int64_t group = kiln_attr_int(ctx->node, "group", 1);
    const int64_t *st = kiln_attr_ints(ctx->node, "strides", &nst);
    const int64_t *dl = kiln_attr_ints(ctx->node, "dilations", &ndl);
    const int64_t *op = kiln_attr_ints(ctx->node, "output_padding", &nop);
    const int64_t *pads = kiln_attr_ints(ctx->node, "pads", &npads);
    int has_os = kiln_attr_ints(ctx->node, "output_shape", &nos) != NULL;
    if (mode < 0 || (st && nst != nd) || (dl && ndl != nd) || (op && nop != nd) || (pads && npads != 2 * nd))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bad strides/dilations/output_padding/pads/auto_pad");
    int64_t C = X->dims[1], M = Y->dims[1], in[3], out[3], full[3], pad[3], shift[3], s[3], d[3];
    for (int i = 0; i < nd; i++) {
        in[i] = X->dims[i + 2];
        out[i] = Y->dims[i + 2];
        s[i] = st ? st[i] : 1;
        d[i] = dl ? dl[i] : 1;
        int64_t dk = (W->dims[i + 2] - 1) * d[i] + 1, adj = op ? op[i] : 0;
        int64_t f = s[i] * (in[i] - 1) + adj + dk, f0 = f - adj, pb;
        if (has_os || mode == KILN_CUDA_PAD_SAME_UPPER || mode == KILN_CUDA_PAD_SAME_LOWER) {
            int64_t total = f - out[i] < 0 ? 0 : f - out[i];
            pb = mode == KILN_CUDA_PAD_SAME_UPPER ? total / 2 : total - total / 2;
        } else {
            pb = mode == KILN_CUDA_PAD_NOTSET && pads ? pads[i] : 0;
        }
        int64_t pe0 = f0 - out[i] - pb; /* the end pad relative to the full output without adj */
        pad[i] = pb < pe0 ? pb : pe0;
        if (pad[i] < 0) pad[i] = 0;
        full[i] = f0 - 2 * pad[i];
        shift[i] = pad[i] - pb;
        if (full[i] != out[i] || shift[i]) p->staged = 1;
    }
    p->x_image = C * prod(nd, in);
    p->y_image = M * prod(nd, out);
    int64_t full_image = M * prod(nd, full);
    int64_t most = p->x_image > p->y_image ? p->x_image : p->y_image;
    if (full_image > most) most = full_image;
    p->chunk = pick_chunk(X->dims[0], most);
    if (!p->chunk) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "one image exceeds cuDNN's 2^31 elements");
    int64_t xs[5] = {p->chunk, C}, ys[5] = {p->chunk, M};
    for (int i = 0; i < nd; i++) {
        xs[i + 2] = in[i];
        ys[i + 2] = full[i];
    }
    /* cuDNN's forward view: the full output (M channels) convolved by W [C, M/group, k] gives X */
    KILN_TRY(plan_set(ctx, p, nd, ys, W->dims, xs, pad, s, d, group));
    /* plan_set named them by the forward convolution; swap so xd describes X and yd the full Y */
    cudnnTensorDescriptor_t t = p->xd;
    p->xd = p->yd;
    p->yd = t;
    if (p->staged) {
        p->stage_planes = p->chunk * M;
        view3(nd, full, 1, p->st_src);
        view3(nd, out, 1, p->st_dst);
        view3(nd, shift, 0, p->st_shift);
        p->stage_bytes = align_up((size_t)(p->chunk * full_image) * elem_size(p->dtype));
    }
    return pick_bwd_algo(ctx, h, p);
}

static kiln_status plan_get(kiln_ctx *ctx, cudnnHandle_t h, conv_plan *p, int transposed,
                            const kiln_tensor *X, const kiln_tensor *W, const kiln_tensor *Y) {
    if (plan_matches(p, X, W, Y)) return KILN_OK;
    KILN_TRY(plan_descriptors(ctx, p));
    p->ready = 0;
    p->staged = 0;
    p->stage_bytes = 0;
    plan_key(p, X, W, Y);
    KILN_TRY(transposed ? plan_transposed(ctx, h, p, X, W, Y) : plan_forward(ctx, h, p, X, W, Y));
    p->ready = 1;
    return KILN_OK;
}

/* ---- compute ---- */

static kiln_status conv_run(kiln_ctx *ctx, int transposed) {
    kiln_tensor *X = kiln_input(ctx, 0), *W = kiln_input(ctx, 1), *B = kiln_input(ctx, 2);
    kiln_tensor *Z = !transposed && ctx->n_in > 3 ? kiln_input(ctx, 3) : NULL, *Y = kiln_output(ctx, 0);
    if (!Y || kiln_numel(Y) == 0) return KILN_OK;
    if (!X || !W) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing input X or W");
    if (X->rank < 3 || X->rank > 5 || W->rank != X->rank)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "X has rank %d; the CUDA kernel takes 3 to 5", X->rank);
    conv_act act = {KILN_CUDA_ACT_NONE, 0.0f, 0.0f};
    char why[160];
    if (!transposed && !parse_act(ctx->node, &act, why, sizeof why))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "%s", why);
    kiln_cuda_provider *cp = kiln_cuda_of(ctx);
    void *stream = kiln_cuda_stream(cp);
    int64_t N = Y->dims[0], M = Y->dims[1], plane = kiln_numel(Y) / (N * M);
    if (kiln_numel(X) == 0 || kiln_numel(W) == 0) { /* no input channels: the bias alone */
        KILN_CUDA_TRY(ctx, kiln_cuda_memset(cp, Y->data, 0, kiln_tensor_nbytes(Y)));
    } else {
        void *hv;
        KILN_TRY(kiln_cuda_cudnn(ctx, &hv));
        cudnnHandle_t h = (cudnnHandle_t)hv;
        conv_plan *p = ctx->kernel_state;
        if (!p) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "the kernel's state was not initialised");
        KILN_TRY(plan_get(ctx, h, p, transposed, X, W, Y));
        size_t es = elem_size(p->dtype), total = p->stage_bytes + p->algo_ws;
        void *ws = NULL;
        if (total) KILN_CUDA_TRY(ctx, kiln_cuda_workspace(cp, total, &ws));
        char *stage = ws, *algo_ws = p->algo_ws ? (char *)ws + p->stage_bytes : NULL;
        const float one = 1.0f, zero = 0.0f;
        for (int64_t n0 = 0; n0 < N; n0 += p->chunk) {
            const char *x = (const char *)X->data + (size_t)(n0 * p->x_image) * es;
            char *y = (char *)Y->data + (size_t)(n0 * p->y_image) * es;
            if (!transposed) {
                if (p->staged) {
                    KILN_CUDA_TRY(ctx, kiln_cuda_conv_shift_copy(stream, (int)es, x, stage, p->stage_planes,
                                                                 p->st_src, p->st_dst, p->st_shift));
                    x = stage;
                }
                CUDNN_TRY(ctx, cudnnConvolutionForward(h, &one, p->xd, x, p->wd, W->data, p->cd,
                                                       (cudnnConvolutionFwdAlgo_t)p->algo, algo_ws,
                                                       p->algo_ws, &zero, p->yd, y));
            } else {
                CUDNN_TRY(ctx, cudnnConvolutionBackwardData(h, &one, p->wd, W->data, p->xd, x, p->cd,
                                                            (cudnnConvolutionBwdDataAlgo_t)p->algo,
                                                            algo_ws, p->algo_ws, &zero, p->yd,
                                                            p->staged ? (void *)stage : (void *)y));
                if (p->staged)
                    KILN_CUDA_TRY(ctx, kiln_cuda_conv_shift_copy(stream, (int)es, stage, y, p->stage_planes,
                                                                 p->st_src, p->st_dst, p->st_shift));
            }
        }
    }
    KILN_CUDA_TRY(ctx, kiln_cuda_conv_epilogue(stream, Y->dtype, Y->data, B ? B->data : NULL,
                                               Z ? Z->data : NULL, N * M, M, plane, act.kind, act.a,
                                               act.b));
    return KILN_OK;
}

static kiln_status conv_compute(kiln_ctx *ctx) { return conv_run(ctx, 0); }
static kiln_status convt_compute(kiln_ctx *ctx) { return conv_run(ctx, 1); }

static kiln_status conv_init(kiln_ctx *ctx, void **state) {
    *state = calloc(1, sizeof(conv_plan));
    return *state ? KILN_OK : KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
}

static void conv_fini(void *state) {
    if (!state) return;
    plan_destroy(state);
    free(state);
}

/* ---- placement ---- */

/* The pooling kernels (ops/pool.c) share this family's table. */
int kiln_cuda_pool_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap);
int kiln_cuda_gpool_supports(const kiln_node *n, const kiln_graph_value *const *in,
                             const kiln_graph_value *const *out, char *why, size_t cap);
kiln_status kiln_cuda_maxpool_compute(kiln_ctx *ctx);
kiln_status kiln_cuda_avgpool_compute(kiln_ctx *ctx);
kiln_status kiln_cuda_gavgpool_compute(kiln_ctx *ctx);
kiln_status kiln_cuda_gmaxpool_compute(kiln_ctx *ctx);

static int rank_ok(const kiln_graph_value *const *in, char *why, size_t cap) {
    int r = in[0]->type.rank, rw = in[1] && in[1]->has_type ? in[1]->type.rank : -1;
    if (r < 0) {
        snprintf(why, cap, "the rank of X is not known before running");
        return 0;
    }
    if (r < 3 || r > 5) {
        snprintf(why, cap, "X has rank %d; the CUDA kernel takes 1-D to 3-D convolutions", r);
        return 0;
    }
    if (rw >= 0 && rw != r) {
        snprintf(why, cap, "W has rank %d but X has rank %d", rw, r);
        return 0;
    }
    return 1;
}

static int conv_supports(const kiln_node *n, const kiln_graph_value *const *in,
                         const kiln_graph_value *const *out, char *why, size_t cap) {
    unsigned mask = 0x7u | (!strcmp(n->op_type, "FusedConv") ? 0x8u : 0u);
    if (!kiln_cuda_need_float(n, in, mask, why, cap) || !rank_ok(in, why, cap)) return 0;
    if (kiln_cuda_auto_pad(n) < 0) {
        snprintf(why, cap, "auto_pad '%s' is not recognised", kiln_attr_string(n, "auto_pad", ""));
        return 0;
    }
    conv_act act;
    return parse_act(n, &act, why, cap);
}

static int convt_supports(const kiln_node *n, const kiln_graph_value *const *in,
                          const kiln_graph_value *const *out, char *why, size_t cap) {
    if (!kiln_cuda_need_float(n, in, 0x7u, why, cap) || !rank_ok(in, why, cap)) return 0;
    if (kiln_cuda_auto_pad(n) < 0) {
        snprintf(why, cap, "auto_pad '%s' is not recognised", kiln_attr_string(n, "auto_pad", ""));
        return 0;
    }
    return 1;
}

const kiln_kernel kiln_cuda_kernels_conv[] = {
    {"", "Conv", 1, 0, conv_supports, conv_init, conv_fini, conv_compute},
    {"com.microsoft", "FusedConv", 1, 0, conv_supports, conv_init, conv_fini, conv_compute},
    {"", "ConvTranspose", 1, 0, convt_supports, conv_init, conv_fini, convt_compute},
    {"", "MaxPool", 1, 0, kiln_cuda_pool_supports, NULL, NULL, kiln_cuda_maxpool_compute},
    {"", "AveragePool", 1, 0, kiln_cuda_pool_supports, NULL, NULL, kiln_cuda_avgpool_compute},
    {"", "GlobalAveragePool", 1, 0, kiln_cuda_gpool_supports, NULL, NULL, kiln_cuda_gavgpool_compute},
    {"", "GlobalMaxPool", 1, 0, kiln_cuda_gpool_supports, NULL, NULL, kiln_cuda_gmaxpool_compute},
    {0},
};
