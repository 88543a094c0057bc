/* The CUDA training family: the kiln-domain gradient ops the autodiff builder (src/train/) emits.
 * MatMulGrad goes through cuBLAS (float32 GEMMs, no TF32); the others map onto the launchers of
 * kernels/grad.h. The shared op definitions (src/cpu/kernels/grad_*.c) validate the inputs and set
 * the output shapes before compute runs; the checks repeated here are those the CPU kernels make
 * at compute time (shapes that infer could not see).
 *
 * Also the forward NegativeLogLikelihoodLoss every training graph's loss ends with (float32).
 *
 * float32 only (the CPU kernels also take float64, which stays on the CPU). ConvGrad is in
 * grad_conv.c (cuDNN). */
#include "../cuda_ep.h"
#include "../kernels/conv.h"
#include "../kernels/grad.h"

#include <cublas_v2.h>
#include <cuda_runtime.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>

static void *stream_of(kiln_ctx *ctx) { return kiln_cuda_stream(kiln_cuda_of(ctx)); }

static int is_f32(int dt) { return dt == KILN_DTYPE_FLOAT; }

/* Every present input in mask is float32; ranks known to exceed the kernels' limit are refused. */
static int need_f32(const kiln_node *n, const kiln_graph_value *const *in, unsigned mask, char *why, size_t cap) {
    if (!kiln_cuda_need_same_type(n, in, mask, is_f32, "float32", why, cap)) return 0;
    for (int i = 0; i < n->n_in && i < 32; i++)
        if (in[i] && in[i]->has_type && in[i]->type.rank > KILN_CUDA_GRAD_RANK) {
            snprintf(why, cap, "input %d has rank %d; the CUDA gradient kernels take up to %d", i,
                     in[i]->type.rank, KILN_CUDA_GRAD_RANK);
            return 0;
        }
    return 1;
}

static kiln_status rank_ok(kiln_ctx *ctx, const kiln_tensor *t, const char *what) {
    if (t->rank > KILN_CUDA_GRAD_RANK)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "%s has rank %d; the CUDA gradient kernels take up to %d",
                         what, t->rank, KILN_CUDA_GRAD_RANK);
    return KILN_OK;
}

static kiln_tensor *opt_out(kiln_ctx *ctx, int k) { return k < ctx->n_out ? kiln_output(ctx, k) : NULL; }

static kiln_status zero(kiln_ctx *ctx, kiln_tensor *t) {
    if (t && t->data && kiln_tensor_nbytes(t))
        KILN_CUDA_TRY(ctx, kiln_cuda_memset(kiln_cuda_of(ctx), t->data, 0, kiln_tensor_nbytes(t)));
    return KILN_OK;
}

/* ---------------------------------------------------------------- MatMulGrad(dY, A, B) -> dA, dB */

/* C = op(A) op(B) (+ beta C) on row-major matrices, batched with element strides sa / sb / sc:
 * cuBLAS is column-major, so it computes Cᵀ = op(B)ᵀ op(A)ᵀ. */
static kiln_status gemm_rm(kiln_ctx *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A,
                           int64_t lda, int64_t sa, const float *B, int64_t ldb, int64_t sb, float beta, float *C,
                           int64_t ldc, int64_t sc, int64_t batch) {
    if (M == 0 || N == 0 || batch == 0) return KILN_OK;
    if (M > INT_MAX || N > INT_MAX || K > INT_MAX || lda > INT_MAX || ldb > INT_MAX || ldc > INT_MAX || batch > INT_MAX)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "a product of %lld x %lld x %lld (batch %lld) exceeds cuBLAS's "
                         "32-bit sizes", (long long)M, (long long)N, (long long)K, (long long)batch);
    if (K == 0) {
        if (beta != 0.0f) return KILN_OK;
        for (int64_t b = 0; b < batch; b++)
            KILN_CUDA_TRY(ctx, kiln_cuda_check((int)cudaMemset2DAsync(C + b * sc, (size_t)ldc * sizeof(float), 0,
                                                                      (size_t)N * sizeof(float), (size_t)M,
                                                                      (cudaStream_t)stream_of(ctx)),
                                               "MatMulGrad (cudaMemset2DAsync)"));
        return KILN_OK;
    }
    const float one = 1.0f;
    cublasHandle_t h = (cublasHandle_t)kiln_cuda_cublas(kiln_cuda_of(ctx));
    cublasStatus_t st;
    if (batch == 1)
        st = cublasSgemm(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N, (int)M, (int)K, &one,
                         B, (int)ldb, A, (int)lda, &beta, C, (int)ldc);
    else
        st = cublasSgemmStridedBatched(h, tb ? CUBLAS_OP_T : CUBLAS_OP_N, ta ? CUBLAS_OP_T : CUBLAS_OP_N, (int)N,
                                       (int)M, (int)K, &one, B, (int)ldb, (long long)sb, A, (int)lda, (long long)sa,
                                       &beta, C, (int)ldc, (long long)sc, (int)batch);
    KILN_CUDA_TRY(ctx, kiln_cublas_check((int)st, "MatMulGrad (cublasSgemm)"));
    return KILN_OK;
}

static int mmg_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                        char *why, size_t cap) {
    if (!need_f32(n, in, 7u, why, cap)) return 0;
    /* batches: B shared (rank <= 2), A shared, or both with the same batch dims; a partial broadcast
     * (some batch dims of one operand 1) stays on the CPU */
    const kiln_graph_value *a = in[1], *b = in[2];
    if (!a || !b || !a->has_type || !b->has_type || a->type.rank < 0 || b->type.rank < 0) return 1;
    int ra = a->type.rank, rb = b->type.rank;
    if (rb <= 2 || ra <= 2) return 1;
    if (ra != rb) {
        snprintf(why, cap, "A and B have different batch ranks (%d, %d): a broadcast the CUDA kernel does not take",
                 ra - 2, rb - 2);
        return 0;
    }
    for (int d = 0; d < ra - 2; d++) {
        int64_t x = a->type.dims[d], y = b->type.dims[d];
        if (x >= 0 && y >= 0 && x != y) {
            snprintf(why, cap, "batch dim %d broadcasts (%lld vs %lld): the CUDA kernel takes shared or equal batches",
                     d, (long long)x, (long long)y);
            return 0;
        }
    }
    return 1;
}

static kiln_status mmg_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *A = kiln_input(ctx, 1), *B = kiln_input(ctx, 2);
    kiln_tensor *dA = opt_out(ctx, 0), *dB = opt_out(ctx, 1);
    int ra = A->rank, rb = B->rank;
    int64_t M = ra >= 2 ? A->dims[ra - 2] : 1, K = A->dims[ra - 1];
    int64_t Kb = rb >= 2 ? B->dims[rb - 2] : B->dims[0], N = rb >= 2 ? B->dims[rb - 1] : 1;
    if (K != Kb) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "A has %lld columns, B %lld rows", (long long)K, (long long)Kb);
    int ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0, br = ba > bb ? ba : bb;
    int64_t n = 1, ca = 1, cb = 1;
    for (int d = 0; d < br; d++) {
        int da = d - (br - ba), db = d - (br - bb);
        int64_t xa = da >= 0 ? A->dims[da] : 1, xb = db >= 0 ? B->dims[db] : 1;
        if (xa != xb && xa != 1 && xb != 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "batch dims %lld and %lld do not broadcast", (long long)xa,
                             (long long)xb);
        n *= xa > xb ? xa : xb;
        ca *= xa;
        cb *= xb;
    }
    if (kiln_numel(g) != n * M * N)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has %lld elements, the product %lld",
                         (long long)kiln_numel(g), (long long)(n * M * N));
    const float *gp = g->data, *ap = A->data, *bp = B->data;
    if (cb == 1 && ca == n) {
        /* B shared by every batch (a weight): the batches fold into the rows of one product */
        if (dA) KILN_TRY(gemm_rm(ctx, 0, 1, n * M, K, N, gp, N, 0, bp, N, 0, 0.0f, dA->data, K, 0, 1));
        if (dB) KILN_TRY(gemm_rm(ctx, 1, 0, K, N, n * M, ap, K, 0, gp, N, 0, 0.0f, dB->data, N, 0, 1));
        return KILN_OK;
    }
    /* with ca or cb equal to n, every batch dim of that operand is full, so its batch i is at i */
    if (ca == n && cb == n) {
        if (dA) KILN_TRY(gemm_rm(ctx, 0, 1, M, K, N, gp, N, M * N, bp, N, K * N, 0.0f, dA->data, K, M * K, n));
        if (dB) KILN_TRY(gemm_rm(ctx, 1, 0, K, N, M, ap, K, M * K, gp, N, M * N, 0.0f, dB->data, N, K * N, n));
        return KILN_OK;
    }
    if (ca == 1 && cb == n) {
        /* A shared: dA sums every batch's product (in batch order), dB is one product per batch */
        if (dA)
            for (int64_t i = 0; i < n; i++)
                KILN_TRY(gemm_rm(ctx, 0, 1, M, K, N, gp + i * M * N, N, 0, bp + i * K * N, N, 0, i ? 1.0f : 0.0f,
                                 dA->data, K, 0, 1));
        if (dA && n == 0) KILN_TRY(zero(ctx, dA));
        if (dB) KILN_TRY(gemm_rm(ctx, 1, 0, K, N, M, ap, K, 0, gp, N, M * N, 0.0f, dB->data, N, K * N, n));
        return KILN_OK;
    }
    return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "the CUDA MatMulGrad takes shared or equal batches; these "
                     "operands broadcast only some batch dims");
}

/* ---------------------------------------------------------------- SoftmaxGrad(dY, Y) */

static int f32_2_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                          char *why, size_t cap) {
    return need_f32(n, in, 3u, why, cap);
}

static kiln_status smg_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *y = kiln_input(ctx, 1), *x = kiln_output(ctx, 0);
    if (kiln_numel(g) != kiln_numel(y) || g->rank != y->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and Y differ in shape");
    int ax;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -1), y->rank ? y->rank : 1, "axis", &ax));
    int64_t outer = 1, n = 1, inner = 1;
    for (int d = 0; d < ax && d < y->rank; d++) outer *= y->dims[d];
    if (kiln_attr_int(ctx->node, "legacy", 0)) {
        for (int d = ax; d < y->rank; d++) n *= y->dims[d];
    } else {
        n = y->rank ? y->dims[ax] : 1;
        for (int d = ax + 1; d < y->rank; d++) inner *= y->dims[d];
    }
    KILN_CUDA_TRY(ctx, kiln_cuda_softmax_grad(stream_of(ctx), (int)kiln_attr_int(ctx->node, "log", 0), g->data,
                                              y->data, x->data, outer, n, inner));
    return KILN_OK;
}

/* ---------------------------------------------------------------- LayerNormGrad, BatchNormGrad, InstanceNormGrad */

static int f32_3_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                          char *why, size_t cap) {
    return need_f32(n, in, 7u, why, cap);
}

static int f32_5_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                          char *why, size_t cap) {
    return need_f32(n, in, 0x1fu, why, cap);
}

static int same_shape(const kiln_tensor *a, const kiln_tensor *b) {
    if (a->rank != b->rank) return 0;
    for (int d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d]) return 0;
    return 1;
}

static kiln_status scratch(kiln_ctx *ctx, size_t bytes, void **out) {
    KILN_CUDA_TRY(ctx, kiln_cuda_workspace(kiln_cuda_of(ctx), bytes ? bytes : 16, out));
    return KILN_OK;
}

static kiln_status lng_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *s = kiln_input(ctx, 2);
    if (!same_shape(g, x)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and X differ in shape");
    int ax;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -1), x->rank, "axis", &ax));
    int64_t M = 1, D = 1;
    for (int d = 0; d < ax; d++) M *= x->dims[d];
    for (int d = ax; d < x->rank; d++) D *= x->dims[d];
    if (kiln_numel(s) != D)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "scale has %lld elements, the normalised axes %lld (a "
                         "broadcast scale is not differentiated)", (long long)kiln_numel(s), (long long)D);
    kiln_tensor *dx = opt_out(ctx, 0), *ds = opt_out(ctx, 1), *db = opt_out(ctx, 2);
    void *stats;
    KILN_TRY(scratch(ctx, sizeof(double) * (size_t)(2 * M), &stats));
    KILN_CUDA_TRY(ctx, kiln_cuda_layernorm_grad(stream_of(ctx), g->data, x->data, s->data, dx ? dx->data : NULL,
                                                ds ? ds->data : NULL, db ? db->data : NULL, M, D,
                                                kiln_attr_float(ctx->node, "epsilon", 1e-5f), stats));
    return KILN_OK;
}

static kiln_status bng_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1);
    if (!same_shape(g, x)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and X differ in shape");
    if (x->rank < 2) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has rank %d, expected >= 2", x->rank);
    int64_t N = x->dims[0], C = x->dims[1], S = 1;
    for (int d = 2; d < x->rank; d++) S *= x->dims[d];
    for (int i = 2; i <= 4; i++)
        if (kiln_numel(kiln_input(ctx, i)) != C)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d has %lld elements, expected C = %lld", i,
                             (long long)kiln_numel(kiln_input(ctx, i)), (long long)C);
    kiln_tensor *dx = opt_out(ctx, 0), *ds = opt_out(ctx, 1), *db = opt_out(ctx, 2);
    KILN_CUDA_TRY(ctx, kiln_cuda_batchnorm_grad(stream_of(ctx), g->data, x->data, kiln_input(ctx, 2)->data,
                                                kiln_input(ctx, 3)->data, kiln_input(ctx, 4)->data,
                                                dx ? dx->data : NULL, ds ? ds->data : NULL, db ? db->data : NULL, N,
                                                C, S, kiln_attr_float(ctx->node, "epsilon", 1e-5f)));
    return KILN_OK;
}

static kiln_status ing_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *s = kiln_input(ctx, 2);
    if (!same_shape(g, x)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and X differ in shape");
    if (x->rank < 3) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has rank %d, expected >= 3", x->rank);
    int64_t N = x->dims[0], C = x->dims[1], D = 1;
    for (int d = 2; d < x->rank; d++) D *= x->dims[d];
    if (kiln_numel(s) != C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scale has %lld elements, expected C = %lld",
                         (long long)kiln_numel(s), (long long)C);
    kiln_tensor *dx = opt_out(ctx, 0), *ds = opt_out(ctx, 1), *db = opt_out(ctx, 2);
    void *rows;
    KILN_TRY(scratch(ctx, sizeof(double) * (size_t)(2 * N * C), &rows));
    KILN_CUDA_TRY(ctx, kiln_cuda_instancenorm_grad(stream_of(ctx), g->data, x->data, s->data, dx ? dx->data : NULL,
                                                   ds ? ds->data : NULL, db ? db->data : NULL, N, C, D,
                                                   kiln_attr_float(ctx->node, "epsilon", 1e-5f), rows));
    return KILN_OK;
}

/* ---------------------------------------------------------------- UnaryGrad(dY, T), PowGrad(dY, X, P) */

static int unary_kind(const char *s) {
    static const char *const k[] = {"relu", "leakyrelu", "sigmoid", "tanh", "sqrt", "erf", "abs", "softplus",
                                    "gelu", "gelu_tanh", "reciprocal", "hardsigmoid", "hardswish", "sin", "cos",
                                    "clip", "elu", NULL};
    for (int i = 0; k[i]; i++)
        if (!strcmp(k[i], s)) return i;
    return -1;
}

static int unary_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                          char *why, size_t cap) {
    if (unary_kind(kiln_attr_string(n, "kind", "")) < 0) {
        snprintf(why, cap, "kind '%s' is not known to the CUDA kernel", kiln_attr_string(n, "kind", ""));
        return 0;
    }
    return need_f32(n, in, 3u, why, cap);
}

static kiln_status unary_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *t = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    if (!same_shape(g, t)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and the operand differ in shape");
    KILN_CUDA_TRY(ctx, kiln_cuda_unary_grad(stream_of(ctx), unary_kind(kiln_attr_string(ctx->node, "kind", "")),
                                            kiln_attr_float(ctx->node, "alpha", 0.0f),
                                            kiln_attr_float(ctx->node, "beta", 0.0f), g->data, t->data, y->data,
                                            kiln_numel(y)));
    return KILN_OK;
}

static kiln_status pow_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    double p;
    KILN_TRY(kiln_read_scalar(ctx, kiln_input(ctx, 2), &p));
    if (!same_shape(g, x)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and X differ in shape");
    KILN_CUDA_TRY(ctx, kiln_cuda_pow_grad(stream_of(ctx), p, g->data, x->data, y->data, kiln_numel(y)));
    return KILN_OK;
}

/* ---------------------------------------------------------------- ReduceGrad(dY, X[, axes]) */

static int g_only_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                           char *why, size_t cap) {
    if (!need_f32(n, in, 1u, why, cap)) return 0;
    for (int i = 1; i < n->n_in && i < 32; i++)
        if (in[i] && in[i]->has_type && in[i]->type.rank > KILN_CUDA_GRAD_RANK) {
            snprintf(why, cap, "input %d has rank %d; the CUDA gradient kernels take up to %d", i, in[i]->type.rank,
                     KILN_CUDA_GRAD_RANK);
            return 0;
        }
    return 1;
}

/* Which axes of X the forward reduction summed (as grad_elementwise.c's reduce_axes). */
static kiln_status reduce_axes(kiln_ctx *ctx, const kiln_tensor *x, int *mask, int *identity) {
    const kiln_node *n = ctx->node;
    int r = x->rank, na = 0;
    int64_t axes[KILN_MAX_RANK];
    *identity = 0;
    memset(mask, 0, sizeof(int) * KILN_MAX_RANK);
    int64_t from = kiln_attr_int(n, "from_axis", -1);
    if (from >= 0) {
        for (int d = (int)from; d < r; d++) mask[d] = 1;
        return KILN_OK;
    }
    kiln_tensor *at = ctx->n_in > 2 ? kiln_input(ctx, 2) : NULL;
    if (at) {
        if (!at->data) return KILN_OK;
        KILN_TRY(kiln_read_ints(ctx, at, axes, KILN_MAX_RANK, &na));
    } else {
        int cnt = 0;
        const int64_t *a = kiln_attr_ints(n, "axes", &cnt);
        if (cnt > KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many axes");
        for (int i = 0; i < cnt; i++) axes[na++] = a[i];
    }
    if (na == 0) {
        if (kiln_attr_int(n, "noop_with_empty_axes", 0)) *identity = 1;
        else
            for (int d = 0; d < r; d++) mask[d] = 1;
        return KILN_OK;
    }
    for (int i = 0; i < na; i++) {
        int ax;
        KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &ax));
        mask[ax] = 1;
    }
    return KILN_OK;
}

static kiln_status reducegrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    int mask[KILN_MAX_RANK], identity, r = x->rank;
    KILN_TRY(rank_ok(ctx, x, "X"));
    KILN_TRY(reduce_axes(ctx, x, mask, &identity));
    kiln_cuda_bcast b;
    memset(&b, 0, sizeof b);
    b.rank = r;
    if (identity) {
        if (kiln_numel(g) != kiln_numel(y))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "gradient size differs from X");
        if (kiln_tensor_nbytes(y))
            KILN_CUDA_TRY(ctx, kiln_cuda_d2d(kiln_cuda_of(ctx), y->data, g->data, kiln_tensor_nbytes(y)));
        return KILN_OK;
    }
    int64_t kd[KILN_MAX_RANK], kst[KILN_MAX_RANK], count = 1;
    for (int d = 0; d < r; d++) {
        kd[d] = mask[d] ? 1 : x->dims[d];
        if (mask[d]) count *= x->dims[d];
    }
    if (kiln_dims_numel(r, kd) != kiln_numel(g))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has %lld elements, the reduction of X %lld",
                         (long long)kiln_numel(g), (long long)kiln_dims_numel(r, kd));
    kiln_strides(r, kd, kst);
    for (int d = 0; d < r; d++) {
        b.dims[d] = x->dims[d];
        b.gstride[d] = mask[d] ? 0 : kst[d];
    }
    double scale = kiln_attr_int(ctx->node, "mean", 0) && count > 0 ? 1.0 / (double)count : 1.0;
    KILN_CUDA_TRY(ctx, kiln_cuda_bcast_scale(stream_of(ctx), &b, (float)scale, g->data, y->data));
    return KILN_OK;
}

/* ---------------------------------------------------------------- SumTo(G, Ref), TileGrad(dY, X) */

static kiln_status sumto_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    double scale = kiln_attr_float(ctx->node, "scale", 1.0f);
    KILN_TRY(rank_ok(ctx, g, "the gradient"));
    if (scale == 0.0 || kiln_numel(g) == 0) return zero(ctx, y);
    int r = g->rank, off = g->rank - y->rank;
    if (off < 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "target has rank %d, more than the gradient's %d", y->rank, r);
    kiln_cuda_sumto_args s;
    memset(&s, 0, sizeof s);
    int64_t gs[KILN_MAX_RANK];
    kiln_strides(r, g->dims, gs);
    for (int d = 0; d < r; d++) {
        int keep = d >= off && y->dims[d - off] != 1;
        if (keep && y->dims[d - off] != g->dims[d])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "gradient dim %d is %lld, target's %lld", d,
                             (long long)g->dims[d], (long long)y->dims[d - off]);
        if (keep) {
            s.kdims[s.krank] = g->dims[d];
            s.kstride[s.krank++] = gs[d];
        } else {
            s.sdims[s.srank] = g->dims[d];
            s.sstride[s.srank++] = gs[d];
        }
    }
    s.ny = kiln_numel(y);
    s.nsum = kiln_dims_numel(s.srank, s.sdims);
    KILN_CUDA_TRY(ctx, kiln_cuda_sumto(stream_of(ctx), &s, (float)scale, g->data, y->data));
    return KILN_OK;
}

static kiln_status tilegrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    int r = x->rank;
    KILN_TRY(rank_ok(ctx, x, "X"));
    if (g->rank != r) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has rank %d, X %d", g->rank, r);
    for (int d = 0; d < r; d++)
        if (x->dims[d] == 0 ? g->dims[d] != 0 : g->dims[d] % x->dims[d])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's dim %d (%lld) is not a multiple of X's (%lld)",
                             d, (long long)g->dims[d], (long long)x->dims[d]);
    if (kiln_numel(y) == 0) return KILN_OK;
    /* g's axis d is (tile, i) with i over X's dim: i is kept, the tile summed */
    kiln_cuda_sumto_args s;
    memset(&s, 0, sizeof s);
    int64_t gs[KILN_MAX_RANK];
    kiln_strides(r, g->dims, gs);
    for (int d = 0; d < r; d++) {
        s.kdims[s.krank] = x->dims[d];
        s.kstride[s.krank++] = gs[d];
        s.sdims[s.srank] = g->dims[d] / x->dims[d];
        s.sstride[s.srank++] = x->dims[d] * gs[d];
    }
    s.ny = kiln_numel(y);
    s.nsum = kiln_dims_numel(s.srank, s.sdims);
    KILN_CUDA_TRY(ctx, kiln_cuda_sumto(stream_of(ctx), &s, 1.0f, g->data, y->data));
    return KILN_OK;
}

/* ---------------------------------------------------------------- SliceGrad(dY, X, starts, ends[, axes, steps]) */

static kiln_status slicegrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    int r = x->rank;
    KILN_TRY(rank_ok(ctx, x, "X"));
    kiln_slice_geom sg;
    KILN_TRY(kiln_slice_geometry(ctx, 2, 0, r, x->dims, &sg));
    const int64_t *start = sg.start, *step = sg.step, *cnt = sg.len;
    if (g->rank != r) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has rank %d, X %d", g->rank, r);
    for (int d = 0; d < r; d++)
        if (g->dims[d] != cnt[d])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's dim %d is %lld, the slice's %lld", d,
                             (long long)g->dims[d], (long long)cnt[d]);
    KILN_TRY(zero(ctx, y));
    if (kiln_numel(g) == 0) return KILN_OK;
    int64_t xs[KILN_MAX_RANK], yoff = 0;
    kiln_strides(r, x->dims, xs);
    kiln_cuda_bcast b;
    memset(&b, 0, sizeof b);
    b.rank = r;
    for (int d = 0; d < r; d++) {
        yoff += start[d] * xs[d];
        b.dims[d] = cnt[d];
        b.gstride[d] = step[d] * xs[d];
    }
    KILN_CUDA_TRY(ctx, kiln_cuda_slice_scatter(stream_of(ctx), &b, yoff, g->data, y->data));
    return KILN_OK;
}

/* ---------------------------------------------------------------- PadGrad(dY, X[, pads, axes]) */

static kiln_status padgrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    int r = x->rank, n = 0, na = r;
    int64_t pads[2 * KILN_MAX_RANK], axes[KILN_MAX_RANK];
    kiln_tensor *pt = ctx->n_in > 2 ? kiln_input(ctx, 2) : NULL, *at = ctx->n_in > 3 ? kiln_input(ctx, 3) : NULL;
    KILN_TRY(rank_ok(ctx, x, "X"));
    if (pt) {
        KILN_TRY(kiln_read_ints(ctx, pt, pads, 2 * KILN_MAX_RANK, &n));
    } else {
        const int64_t *a = kiln_attr_ints(ctx->node, kiln_has_attr(ctx->node, "pads") ? "pads" : "paddings", &n);
        if (n > 2 * KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many pads");
        if (n) memcpy(pads, a, sizeof(int64_t) * (size_t)n);
    }
    for (int i = 0; i < r; i++) axes[i] = i;
    if (at) KILN_TRY(kiln_read_ints(ctx, at, axes, KILN_MAX_RANK, &na));
    if (n != 2 * na) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pads has %d values for %d axes", n, na);
    kiln_cuda_padgrad a;
    memset(&a, 0, sizeof a);
    a.rank = r;
    for (int i = 0; i < na; i++) {
        int ax;
        KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &ax));
        a.lo[ax] = pads[i];
        if (g->rank != r || g->dims[ax] != x->dims[ax] + pads[i] + pads[i + na])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's shape does not match the padding");
    }
    if (g->rank != r) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has rank %d, X %d", g->rank, r);
    for (int d = 0; d < r; d++) {
        a.ydims[d] = x->dims[d];
        a.gdims[d] = g->dims[d];
    }
    KILN_CUDA_TRY(ctx, kiln_cuda_pad_grad(stream_of(ctx), &a, g->data, y->data));
    return KILN_OK;
}

/* ---------------------------------------------------------------- GatherGrad(dY, indices, data) */

static int gathergrad_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                               char *why, size_t cap) {
    return need_f32(n, in, 1u, why, cap);
}

static kiln_status gathergrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *ind = kiln_input(ctx, 1), *data = kiln_input(ctx, 2), *y = kiln_output(ctx, 0);
    int ax;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), data->rank, "axis", &ax));
    if (g->rank != data->rank - 1 + ind->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has rank %d, expected %d", g->rank,
                         data->rank - 1 + ind->rank);
    int64_t outer = 1, inner = 1, ni = kiln_numel(ind), len = data->dims[ax];
    for (int d = 0; d < ax; d++) outer *= data->dims[d];
    for (int d = ax + 1; d < data->rank; d++) inner *= data->dims[d];
    if (kiln_numel(g) != outer * ni * inner)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's shape does not match the gather");
    KILN_CUDA_TRY(ctx, kiln_cuda_gather_grad(stream_of(ctx), g->data, ind->data, ind->dtype, ni, outer, len, inner,
                                             y->data));
    return KILN_OK;
}

/* ---------------------------------------------------------------- ConcatGrad(dY, X0, X1, ...) */

static kiln_status concatgrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0);
    int ax;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), g->rank, "axis", &ax));
    int64_t outer = 1, inner = 1, total = 0;
    for (int d = 0; d < ax; d++) outer *= g->dims[d];
    for (int d = ax + 1; d < g->rank; d++) inner *= g->dims[d];
    for (int k = 1; k < ctx->n_in; k++) {
        kiln_tensor *x = kiln_input(ctx, k);
        if (x->rank != g->rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d has rank %d, the gradient %d", k, x->rank, g->rank);
        total += x->dims[ax];
    }
    if (total != g->dims[ax])
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the inputs' sizes along the axis add to %lld, the gradient "
                         "has %lld", (long long)total, (long long)g->dims[ax]);
    int64_t at = 0;
    for (int k = 1; k < ctx->n_in; k++) {
        int64_t len = kiln_input(ctx, k)->dims[ax];
        kiln_tensor *y = opt_out(ctx, k - 1);
        size_t width = (size_t)(len * inner) * sizeof(float);
        if (y && width && outer)
            KILN_CUDA_TRY(ctx, kiln_cuda_check(
                                   (int)cudaMemcpy2DAsync(y->data, width, (const float *)g->data + at * inner,
                                                          (size_t)(g->dims[ax] * inner) * sizeof(float), width,
                                                          (size_t)outer, cudaMemcpyDeviceToDevice,
                                                          (cudaStream_t)stream_of(ctx)),
                                   "ConcatGrad (cudaMemcpy2DAsync)"));
        at += len;
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- NLLLossGrad(dL, input, target[, weight]) */

static int nllgrad_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                            char *why, size_t cap) {
    return need_f32(n, in, 0xbu, why, cap);
}

static kiln_status nllgrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *t = kiln_input(ctx, 2), *y = kiln_output(ctx, 0);
    kiln_tensor *w = ctx->n_in > 3 ? kiln_input(ctx, 3) : NULL;
    const char *red = kiln_attr_string(ctx->node, "reduction", "mean");
    int none = !strcmp(red, "none"), mean = !strcmp(red, "mean");
    int64_t ignore = kiln_attr_int(ctx->node, "ignore_index", INT64_MIN);
    if (x->rank < 2 || t->rank != x->rank - 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input has rank %d and target %d", x->rank, t->rank);
    int64_t N = x->dims[0], C = x->dims[1], D = 1;
    for (int d = 2; d < x->rank; d++) D *= x->dims[d];
    if (kiln_numel(t) != N * D) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "target does not match the input's shape");
    if (none ? kiln_numel(g) != N * D : kiln_numel(g) != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the loss gradient has %lld elements", (long long)kiln_numel(g));
    if (w && (w->rank != 1 || w->dims[0] != C || w->dtype != g->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "weight must be a [C] tensor of the input's type");
    KILN_CUDA_TRY(ctx, kiln_cuda_nll_grad(stream_of(ctx), g->data, none, mean, t->data, t->dtype, w ? w->data : NULL,
                                          N, C, D, ignore, y->data));
    return KILN_OK;
}

/* ---------------------------------------------------------------- MaxPoolGrad(dY, X), AveragePoolGrad(dY, X) */

static int poolgrad_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                             char *why, size_t cap) {
    if (!need_f32(n, in, 3u, why, cap)) return 0;
    int r = in[1] && in[1]->has_type ? in[1]->type.rank : -1;
    if (r < 3 || r > 5) {
        snprintf(why, cap, r < 0 ? "the rank of X is not known before running"
                                 : "X has rank %d; the CUDA kernel takes 1-D to 3-D pooling", r);
        return 0;
    }
    if (kiln_cuda_auto_pad(n) < 0) {
        snprintf(why, cap, "auto_pad '%s' is not recognised", kiln_attr_string(n, "auto_pad", ""));
        return 0;
    }
    int nk = 0;
    const int64_t *ks = kiln_attr_ints(n, "kernel_shape", &nk);
    for (int i = 0; ks && i < nk; i++)
        if (ks[i] > KILN_CUDA_POOLGRAD_K) {
            snprintf(why, cap, "a window of %lld taps; the CUDA kernel takes up to %d per axis", (long long)ks[i],
                     KILN_CUDA_POOLGRAD_K);
            return 0;
        }
    return 1;
}

static kiln_status poolgrad_run(kiln_ctx *ctx, int max) {
    kiln_tensor *dy = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *dx = kiln_output(ctx, 0);
    if (x->rank < 3 || x->rank > 5)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "X has rank %d; the CUDA kernel takes 3 to 5", x->rank);
    int nd = x->rank - 2, nk = 0;
    const int64_t *ks = kiln_attr_ints(ctx->node, "kernel_shape", &nk);
    if (!ks || nk != nd) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "kernel_shape must have %d entries", nd);
    kiln_cuda_window w;
    char why[200];
    if (!kiln_cuda_window_geom(ctx->node, nd, x->dims + 2, ks, 1, (int)kiln_attr_int(ctx->node, "ceil_mode", 0), &w,
                               why, sizeof why))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s", why);
    if (dy->rank != x->rank || dy->dims[0] != x->dims[0] || dy->dims[1] != x->dims[1])
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's shape does not match the pooling's output");
    kiln_cuda_poolgrad a;
    memset(&a, 0, sizeof a);
    a.nd = nd;
    a.max = max;
    a.include_pad = (int)kiln_attr_int(ctx->node, "count_include_pad", 0);
    a.planes = x->dims[0] * x->dims[1];
    for (int d = 0; d < nd; d++) {
        if (dy->dims[d + 2] != w.out[d])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's spatial dim %d is %lld, the output's %lld",
                             d, (long long)dy->dims[d + 2], (long long)w.out[d]);
        if (ks[d] < 1 || ks[d] > KILN_CUDA_POOLGRAD_K || w.stride[d] < 1 || w.dil[d] < 1)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "window %lld, stride %lld, dilation %lld on axis %d",
                             (long long)ks[d], (long long)w.stride[d], (long long)w.dil[d], d + 2);
        a.in[d] = w.in[d];
        a.out[d] = w.out[d];
        a.k[d] = ks[d];
        a.stride[d] = w.stride[d];
        a.dil[d] = w.dil[d];
        a.pad_b[d] = w.pad_b[d];
        a.pad_e[d] = w.pad_e[d];
    }
    KILN_CUDA_TRY(ctx, kiln_cuda_pool_grad(stream_of(ctx), &a, dy->data, x->data, dx->data));
    return KILN_OK;
}

static kiln_status maxpoolgrad_compute(kiln_ctx *ctx) { return poolgrad_run(ctx, 1); }
static kiln_status avgpoolgrad_compute(kiln_ctx *ctx) { return poolgrad_run(ctx, 0); }

/* ---------------------------------------------------------------- NegativeLogLikelihoodLoss(input, target[, weight]) */

static int nll_supports(const kiln_node *n, const kiln_graph_value *const *in, const kiln_graph_value *const *out,
                        char *why, size_t cap) {
    const char *red = kiln_attr_string(n, "reduction", "mean");
    if (strcmp(red, "none") && strcmp(red, "sum") && strcmp(red, "mean")) {
        snprintf(why, cap, "reduction '%s' is not none, sum or mean", red);
        return 0;
    }
    return need_f32(n, in, 0x5u, why, cap);
}

static kiln_status nll_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *t = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    kiln_tensor *w = ctx->n_in > 2 ? kiln_input(ctx, 2) : NULL;
    const char *red = kiln_attr_string(ctx->node, "reduction", "mean");
    if (!y) return KILN_OK;
    int64_t N = x->dims[0], C = x->dims[1], D = 1;
    for (int d = 2; d < x->rank; d++) D *= x->dims[d];
    if (kiln_numel(t) != N * D) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "target does not match the input's shape");
    if (w && kiln_numel(w) != C) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'weights' must be 1-D of size C");
    KILN_CUDA_TRY(ctx, kiln_cuda_nll_loss(stream_of(ctx), x->data, t->data, t->dtype, w ? w->data : NULL, N, C, D,
                                          kiln_has_attr(ctx->node, "ignore_index"),
                                          kiln_attr_int(ctx->node, "ignore_index", 0),
                                          !strcmp(red, "none") ? 0 : !strcmp(red, "sum") ? 1 : 2, y->data));
    return KILN_OK;
}

#define K(name, hosts, sup, fn) {"kiln", name, 1, hosts, sup##_supports, NULL, NULL, fn##_compute}

const kiln_kernel kiln_cuda_kernels_grad[] = {
    K("MatMulGrad", 0, mmg, mmg),
    K("SoftmaxGrad", 0, f32_2, smg),
    K("LayerNormGrad", 0, f32_3, lng),
    K("BatchNormGrad", 0, f32_5, bng),
    K("InstanceNormGrad", 0, f32_3, ing),
    K("UnaryGrad", 0, unary, unary),
    K("PowGrad", 1u << 2, f32_2, pow),
    K("ReduceGrad", 1u << 2, g_only, reducegrad),
    K("SumTo", 0, g_only, sumto),
    K("TileGrad", 0, g_only, tilegrad),
    K("SliceGrad", 0x3cu, g_only, slicegrad),
    K("PadGrad", 0xcu, g_only, padgrad),
    K("GatherGrad", 0, gathergrad, gathergrad),
    K("ConcatGrad", 0, g_only, concatgrad),
    K("NLLLossGrad", 0, nllgrad, nllgrad),
    K("MaxPoolGrad", 0, poolgrad, maxpoolgrad),
    K("AveragePoolGrad", 0, poolgrad, avgpoolgrad),
    {"", "NegativeLogLikelihoodLoss", 12, 0, nll_supports, NULL, NULL, nll_compute},
    {0}};
