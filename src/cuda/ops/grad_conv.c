/* kiln:ConvGrad(dY, X, W) -> dX, dW, dB on cuDNN's backward convolutions (BackwardData,
 * BackwardFilter, BackwardBias), 1-D to 3-D, float32 with CUDNN_FMA_MATH (no TF32, as the CPU).
 *
 * cuDNN pads symmetrically: a node whose pads differ at the two ends of an axis (explicit pads, or
 * auto_pad SAME_*, whose pads depend on the input size) stays on the CPU. Algorithms come from
 * cuDNN's heuristics (no trial runs), preferring deterministic ones, so that a step gives the same
 * gradients every time. Descriptors are made per call: their cost is host-side and small next to a
 * training step. */
#include "../cuda_ep.h"
#include "../kernels/conv.h"

#include <cudnn.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

#define GRAD_WS_LIMIT ((size_t)256 << 20)

static kiln_status cudnn_fail(kiln_ctx *ctx, cudnnStatus_t s, const char *what) {
    int code = s == CUDNN_STATUS_NOT_SUPPORTED ? KILN_ERR_NOT_IMPLEMENTED
               : s == CUDNN_STATUS_ALLOC_FAILED ? KILN_ERR_NO_MEMORY
                                                : KILN_ERR_RUNTIME;
    return KILN_FAIL(ctx, code, "ConvGrad: %.*s: %s", (int)strcspn(what, "("), what, cudnnGetErrorString(s));
}

#define CUDNN_TRY(ctx, call)                                                                        \
    do {                                                                                            \
        cudnnStatus_t cs_ = (call);                                                                 \
        if (cs_ != CUDNN_STATUS_SUCCESS) return cudnn_fail(ctx, cs_, #call);                        \
    } while (0)

typedef struct cg_desc {
    cudnnTensorDescriptor_t xd, yd, bd;
    cudnnFilterDescriptor_t wd;
    cudnnConvolutionDescriptor_t cd;
} cg_desc;

static void desc_destroy(cg_desc *d) {
    if (d->xd) cudnnDestroyTensorDescriptor(d->xd);
    if (d->yd) cudnnDestroyTensorDescriptor(d->yd);
    if (d->bd) cudnnDestroyTensorDescriptor(d->bd);
    if (d->wd) cudnnDestroyFilterDescriptor(d->wd);
    if (d->cd) cudnnDestroyConvolutionDescriptor(d->cd);
}

static int to_int(int64_t v, int *out) {
    if (v < 0 || v > INT_MAX) return 0;
    *out = (int)v;
    return 1;
}

/* cuDNN's 4-D / 5-D shapes (1-D gets a trailing unit dim), packed strides. */
static kiln_status set_tensor(kiln_ctx *ctx, cudnnTensorDescriptor_t d, int nb, const int64_t *dims) {
    int di[5], st[5];
    for (int i = 0; i < nb; i++)
        if (!to_int(dims[i], &di[i]))
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "ConvGrad: a dimension does not fit cuDNN's int");
    st[nb - 1] = 1;
    for (int i = nb - 2; i >= 0; i--) {
        int64_t s = (int64_t)st[i + 1] * di[i + 1];
        if (s > INT_MAX) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "ConvGrad: a tensor exceeds cuDNN's 2^31 elements");
        st[i] = (int)s;
    }
    CUDNN_TRY(ctx, cudnnSetTensorNdDescriptor(d, CUDNN_DATA_FLOAT, nb, di, st));
    return KILN_OK;
}

static int window(const kiln_node *n, int nd, const int64_t *x, const int64_t *w, kiln_cuda_window *win, char *why,
                  size_t cap) {
    if (!kiln_cuda_window_geom(n, nd, x, w, 1, 0, win, why, cap)) return 0;
    for (int i = 0; i < nd; i++)
        if (win->pad_b[i] != win->pad_e[i]) {
            snprintf(why, cap, "pads differ at the two ends of axis %d (%lld, %lld): cuDNN pads symmetrically", i + 2,
                     (long long)win->pad_b[i], (long long)win->pad_e[i]);
            return 0;
        }
    return 1;
}

static int is_f32(int dt) { return dt == KILN_DTYPE_FLOAT; }

static int cg_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                       char *why, size_t cap) {
    if (!kiln_cuda_need_same_type(n, in, 7u, is_f32, "float32", why, cap)) return 0;
    int r = in[1] && in[1]->has_type ? in[1]->type.rank : -1;
    if (r < 3 || r > 5) {
        snprintf(why, cap, r < 0 ? "the rank of X is not known before running"
                                 : "X has rank %d; the CUDA ConvGrad takes 1-D to 3-D convolutions", r);
        return 0;
    }
    const char *ap = kiln_attr_string(n, "auto_pad", "NOTSET");
    if (strcmp(ap, "NOTSET") && strcmp(ap, "VALID")) {
        snprintf(why, cap, "auto_pad %s may pad the two ends differently; cuDNN pads symmetrically", ap);
        return 0;
    }
    int np = 0;
    const int64_t *pads = kiln_attr_ints(n, "pads", &np);
    for (int i = 0; pads && i < np / 2; i++)
        if (pads[i] != pads[i + np / 2]) {
            snprintf(why, cap, "pads differ at the two ends of an axis; cuDNN pads symmetrically");
            return 0;
        }
    return 1;
}

static kiln_status cg_compute(kiln_ctx *ctx) {
    kiln_tensor *dy = kiln_input(ctx, 0), *X = kiln_input(ctx, 1), *W = kiln_input(ctx, 2);
    kiln_tensor *dx = kiln_output(ctx, 0), *dw = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL,
                *db = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    kiln_cuda_provider *cp = kiln_cuda_of(ctx);
    if (X->rank < 3 || X->rank > 5 || W->rank != X->rank || dy->rank != X->rank)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "X has rank %d, W %d, the gradient %d; the CUDA ConvGrad "
                         "takes equal ranks 3 to 5", X->rank, W->rank, dy->rank);
    int nd = X->rank - 2;
    int64_t group = kiln_attr_int(ctx->node, "group", 1), N = X->dims[0], C = X->dims[1], M = W->dims[0];
    if (group < 1 || C % group || M % group || W->dims[1] * group != C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "channels (X %lld, W %lld x %lld) do not match group %lld",
                         (long long)C, (long long)M, (long long)W->dims[1], (long long)group);
    kiln_cuda_window win;
    char why[200];
    if (!window(ctx->node, nd, X->dims + 2, W->dims + 2, &win, why, sizeof why))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "%s", why);
    if (dy->dims[0] != N || dy->dims[1] != M)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient is [%lld, %lld, ...], expected [%lld, %lld, ...]",
                         (long long)dy->dims[0], (long long)dy->dims[1], (long long)N, (long long)M);
    for (int i = 0; i < nd; i++)
        if (win.out[i] != dy->dims[i + 2])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's dim %d is %lld, the convolution gives %lld",
                             i + 2, (long long)dy->dims[i + 2], (long long)win.out[i]);
    if (kiln_numel(dy) == 0 || kiln_numel(X) == 0 || kiln_numel(W) == 0) {
        /* nothing flows back: zero gradients (a sum over no terms) */
        kiln_tensor *o[3] = {dx, dw, db};
        for (int i = 0; i < 3; i++)
            if (o[i] && kiln_tensor_nbytes(o[i]))
                KILN_CUDA_TRY(ctx, kiln_cuda_memset(cp, o[i]->data, 0, kiln_tensor_nbytes(o[i])));
        return KILN_OK;
    }
    void *hv;
    KILN_TRY(kiln_cuda_cudnn(ctx, &hv));
    cudnnHandle_t h = (cudnnHandle_t)hv;
    int nsp = nd < 2 ? 2 : nd, nb = nsp + 2;
    int64_t xs[5], ws[5], ys[5], bs[5];
    int pi[3], si[3], di[3];
    for (int i = 0; i < nb; i++) {
        xs[i] = i < nd + 2 ? X->dims[i] : 1;
        ws[i] = i < nd + 2 ? W->dims[i] : 1;
        ys[i] = i < nd + 2 ? dy->dims[i] : 1;
        bs[i] = i == 1 ? M : 1;
    }
    for (int i = 0; i < nsp; i++)
        if (!to_int(i < nd ? win.pad_b[i] : 0, &pi[i]) || !to_int(i < nd ? win.stride[i] : 1, &si[i]) ||
            !to_int(i < nd ? win.dil[i] : 1, &di[i]))
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "ConvGrad: pads, strides or dilations do not fit cuDNN's int");
    cg_desc d;
    memset(&d, 0, sizeof d);
    kiln_status st = KILN_OK;
#define DTRY(call)                                                                                  \
    do {                                                                                            \
        cudnnStatus_t cs_ = (call);                                                                 \
        if (cs_ != CUDNN_STATUS_SUCCESS) {                                                          \
            st = cudnn_fail(ctx, cs_, #call);                                                       \
            goto done;                                                                              \
        }                                                                                           \
    } while (0)
#define KTRY(call)                                                                                  \
    do {                                                                                            \
        if ((st = (call)) != KILN_OK) goto done;                                                    \
    } while (0)
    DTRY(cudnnCreateTensorDescriptor(&d.xd));
    DTRY(cudnnCreateTensorDescriptor(&d.yd));
    DTRY(cudnnCreateTensorDescriptor(&d.bd));
    DTRY(cudnnCreateFilterDescriptor(&d.wd));
    DTRY(cudnnCreateConvolutionDescriptor(&d.cd));
    KTRY(set_tensor(ctx, d.xd, nb, xs));
    KTRY(set_tensor(ctx, d.yd, nb, ys));
    KTRY(set_tensor(ctx, d.bd, nb, bs));
    {
        int wi[5];
        for (int i = 0; i < nb; i++)
            if (!to_int(ws[i], &wi[i])) {
                st = KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "ConvGrad: a dimension does not fit cuDNN's int");
                goto done;
            }
        DTRY(cudnnSetFilterNdDescriptor(d.wd, CUDNN_DATA_FLOAT, CUDNN_TENSOR_NCHW, nb, wi));
    }
    DTRY(cudnnSetConvolutionNdDescriptor(d.cd, nsp, pi, si, di, CUDNN_CROSS_CORRELATION, CUDNN_DATA_FLOAT));
    DTRY(cudnnSetConvolutionGroupCount(d.cd, (int)group));
    DTRY(cudnnSetConvolutionMathType(d.cd, CUDNN_FMA_MATH));
    {
        /* algorithms: the heuristics' first deterministic one within the workspace limit */
        cudnnConvolutionBwdDataAlgo_t da = CUDNN_CONVOLUTION_BWD_DATA_ALGO_1;
        cudnnConvolutionBwdFilterAlgo_t fa = CUDNN_CONVOLUTION_BWD_FILTER_ALGO_1;
        size_t dws = 0, fws = 0;
        if (dx) {
            cudnnConvolutionBwdDataAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT];
            int n = 0, found = 0;
            DTRY(cudnnGetConvolutionBackwardDataAlgorithm_v7(h, d.wd, d.yd, d.cd, d.xd,
                                                             CUDNN_CONVOLUTION_BWD_DATA_ALGO_COUNT, &n, perf));
            for (int i = 0; i < n && !found; i++) {
                size_t b = 0;
                if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].determinism != CUDNN_DETERMINISTIC) continue;
                if (cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.wd, d.yd, d.cd, d.xd, perf[i].algo, &b) !=
                        CUDNN_STATUS_SUCCESS || b > GRAD_WS_LIMIT)
                    continue;
                da = perf[i].algo;
                dws = b;
                found = 1;
            }
            if (!found) DTRY(cudnnGetConvolutionBackwardDataWorkspaceSize(h, d.wd, d.yd, d.cd, d.xd, da, &dws));
        }
        if (dw) {
            cudnnConvolutionBwdFilterAlgoPerf_t perf[CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT];
            int n = 0, found = 0;
            DTRY(cudnnGetConvolutionBackwardFilterAlgorithm_v7(h, d.xd, d.yd, d.cd, d.wd,
                                                               CUDNN_CONVOLUTION_BWD_FILTER_ALGO_COUNT, &n, perf));
            for (int i = 0; i < n && !found; i++) {
                size_t b = 0;
                if (perf[i].status != CUDNN_STATUS_SUCCESS || perf[i].determinism != CUDNN_DETERMINISTIC) continue;
                if (cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.xd, d.yd, d.cd, d.wd, perf[i].algo, &b) !=
                        CUDNN_STATUS_SUCCESS || b > GRAD_WS_LIMIT)
                    continue;
                fa = perf[i].algo;
                fws = b;
                found = 1;
            }
            if (!found) DTRY(cudnnGetConvolutionBackwardFilterWorkspaceSize(h, d.xd, d.yd, d.cd, d.wd, fa, &fws));
        }
        /* the heuristics' entries may ask for another math type: float32 stays on FMA */
        DTRY(cudnnSetConvolutionMathType(d.cd, CUDNN_FMA_MATH));
        size_t need = dws > fws ? dws : fws;
        void *ws_ptr = NULL;
        if (need) {
            kiln_status wst = kiln_cuda_workspace(cp, need, &ws_ptr);
            if (wst != KILN_OK) {
                st = KILN_CUDA_FAIL(ctx, wst);
                goto done;
            }
        }
        const float one = 1.0f, zero = 0.0f;
        if (dx)
            DTRY(cudnnConvolutionBackwardData(h, &one, d.wd, W->data, d.yd, dy->data, d.cd, da, ws_ptr, dws, &zero,
                                              d.xd, dx->data));
        if (dw)
            DTRY(cudnnConvolutionBackwardFilter(h, &one, d.xd, X->data, d.yd, dy->data, d.cd, fa, ws_ptr, fws, &zero,
                                                d.wd, dw->data));
        if (db) DTRY(cudnnConvolutionBackwardBias(h, &one, d.yd, dy->data, &zero, d.bd, db->data));
    }
done:
    desc_destroy(&d);
    return st;
#undef DTRY
#undef KTRY
}

const kiln_kernel kiln_cuda_kernels_grad_conv[] = {
    {"kiln", "ConvGrad", 1, 0, cg_supports, NULL, NULL, cg_compute},
    {0}};
