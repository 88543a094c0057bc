/* MatMul, Gemm and com.microsoft FusedMatMul on the CUDA provider: float32, float16, bfloat16
 * and float64 through cuBLASLt (matmul_lt.c holds the GEMM call and the row-major mapping).
 *
 * A numpy product is planned once per call on the host from the shapes alone:
 *  - each operand is a stored row-major matrix (rows x cols, leading dimension ld) repeated over
 *    its batch dimensions every `mstride` elements; FusedMatMul's transBatch view
 *    [b0,d1..,dn] -> [d1..,b0,dn] is such a layout too (ld = prod(d1..)*dn, mstride = dn), so it
 *    needs no copy;
 *  - the broadcast batch dimensions are split into an inner run that one strided-batched call
 *    covers (every operand either steps uniformly through it or is shared, stride 0) and outer
 *    dimensions looped over on the host (irregular broadcasts like [2,1,S,K] x [1,3,K,N]);
 *  - a shared right operand over a contiguous left one ([B,S,K] x [K,N]) folds the batch into M:
 *    one (B*S) x K by K x N product.
 * Gemm's C: (M,N)-sized C is cuBLASLt's C operand directly; a row vector (N) / (1,N) with
 * beta == 1 is the bias epilogue; any other broadcast form is copied into Y first
 * (kernels/matmul.cu) and accumulated onto with beta. K == 0 gives zeros / beta*C. */
#include "matmul_lt.h"
#include "../cuda_ep.h"
#include "../kernels/conv.h"
#include "../kernels/matmul.h"

#include <cublasLt.h>
#include <stdio.h>
#include <string.h>

kiln_status kiln_cuda_lt_handle(kiln_ctx *ctx, void **handle) {
    kiln_cuda_ep *ep = kiln_cuda_ep_of(ctx);
    if (!ep->cublaslt) {
        cublasLtHandle_t h;
        kiln_status st = kiln_cublas_check((int)cublasLtCreate(&h), "cublasLtCreate");
        if (st != KILN_OK) return KILN_CUDA_FAIL(ctx, st);
        ep->cublaslt = h;
    }
    *handle = ep->cublaslt;
    return KILN_OK;
}

static int lt_dtype_ok(int dt) { return kiln_cuda_float_type(dt) || dt == KILN_DTYPE_DOUBLE; }

/* ---- operands and the batch plan ---- */

typedef struct mm_operand {
    const char *data;
    int64_t rows, cols, ld, mstride; /* the stored matrix, row-major, in elements */
    int trans;
    int nb;                          /* batch rank */
    int64_t bdims[KILN_MAX_RANK];
} mm_operand;

/* The layout of A (is_b 0) or B (is_b 1) of a numpy product. A 1-D A is [1,K], a 1-D B [K,1]. */
static kiln_status operand_of(kiln_ctx *ctx, const kiln_tensor *t, int is_b, int trans,
                              int trans_batch, mm_operand *o) {
    memset(o, 0, sizeof *o);
    int r = t->rank;
    if (r < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s is a scalar", is_b ? "B" : "A");
    o->data = t->data;
    if (r == 1) {
        o->rows = is_b ? t->dims[0] : 1;
        o->cols = is_b ? 1 : t->dims[0];
        o->ld = o->cols;
        o->mstride = t->dims[0];
        return KILN_OK;
    }
    o->trans = trans;
    o->cols = t->dims[r - 1];
    o->nb = r - 2;
    if (trans_batch && r >= 3) {
        int64_t mid = 1;
        for (int i = 1; i < r - 1; i++) mid *= t->dims[i];
        o->rows = t->dims[0];
        o->ld = mid * o->cols;
        o->mstride = o->cols;
        memcpy(o->bdims, t->dims + 1, sizeof(int64_t) * (size_t)o->nb);
    } else {
        o->rows = t->dims[r - 2];
        o->ld = o->cols;
        o->mstride = o->rows * o->cols;
        memcpy(o->bdims, t->dims, sizeof(int64_t) * (size_t)o->nb);
    }
    return KILN_OK;
}

typedef struct mm_plan {
    int64_t M, N, K;
    int nb;
    int64_t bdims[KILN_MAX_RANK];
    int64_t count;                                   /* products: prod(bdims) */
    int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK], sd[KILN_MAX_RANK]; /* 0: broadcast */
    int split;          /* batch dims [0, split) are looped on the host; [split, nb) are one call */
    int64_t inner, inner_sa, inner_sb;               /* that call's batch count and strides */
    int fold;           /* inner batch folded into M (B shared, A contiguous) */
} mm_plan;

/* Element strides of x's batch dims right-aligned into nb output dims (0 where x has size 1). */
static void batch_strides(const mm_operand *x, int nb, int64_t *s) {
    int64_t step = x->mstride;
    for (int i = nb - 1; i >= 0; i--) {
        int ix = i - (nb - x->nb);
        int64_t d = ix >= 0 ? x->bdims[ix] : 1;
        s[i] = d == 1 ? 0 : step;
        step *= d;
    }
}

/* The longest run of innermost batch dims over which A and B each step with one stride. */
static void plan_split(mm_plan *p) {
    int last = -1, innermost = -1;
    p->split = 0;
    p->inner = 1;
    for (int i = p->nb - 1; i >= 0; i--) {
        if (p->bdims[i] == 1) continue;
        if (last >= 0 && (p->sa[i] != p->sa[last] * p->bdims[last] ||
                          p->sb[i] != p->sb[last] * p->bdims[last])) {
            p->split = i + 1;
            break;
        }
        if (innermost < 0) innermost = i;
        last = i;
        p->inner *= p->bdims[i];
    }
    p->inner_sa = innermost >= 0 ? p->sa[innermost] : 0;
    p->inner_sb = innermost >= 0 ? p->sb[innermost] : 0;
}

static kiln_status plan_product(kiln_ctx *ctx, const mm_operand *a, const mm_operand *b, mm_plan *p) {
    memset(p, 0, sizeof *p);
    p->M = a->trans ? a->cols : a->rows;
    p->K = a->trans ? a->rows : a->cols;
    int64_t kb = b->trans ? b->cols : b->rows;
    p->N = b->trans ? b->rows : b->cols;
    if (kb != p->K)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "inner dimensions %lld and %lld differ",
                         (long long)p->K, (long long)kb);
    p->nb = a->nb > b->nb ? a->nb : b->nb;
    p->count = 1;
    for (int i = 0; i < p->nb; i++) {
        int ia = i - (p->nb - a->nb), ib = i - (p->nb - b->nb);
        int64_t da = ia >= 0 ? a->bdims[ia] : 1, db = ib >= 0 ? b->bdims[ib] : 1;
        if (da != db && da != 1 && db != 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "batch dimensions %lld and %lld cannot be broadcast", (long long)da,
                             (long long)db);
        p->bdims[i] = da == 1 ? db : da;
        p->count *= p->bdims[i];
    }
    batch_strides(a, p->nb, p->sa);
    batch_strides(b, p->nb, p->sb);
    int64_t step = p->M * p->N;
    for (int i = p->nb - 1; i >= 0; i--) {
        p->sd[i] = p->bdims[i] == 1 ? 0 : step;
        step *= p->bdims[i];
    }
    plan_split(p);
    p->fold = p->split == 0 && p->inner > 1 && p->inner_sb == 0 && !a->trans && a->ld == p->K &&
              p->inner_sa == p->M * p->K;
    return KILN_OK;
}

/* ---- running a plan ---- */

typedef struct mm_run {
    void *lt, *stream, *ws;
    kiln_lt_cache *cache;
} mm_run;

static kiln_status run_setup(kiln_ctx *ctx, kiln_lt_cache *cache, mm_run *r) {
    kiln_cuda_provider *cp = kiln_cuda_of(ctx);
    r->cache = cache;
    r->stream = kiln_cuda_stream(cp);
    KILN_TRY(kiln_cuda_lt_handle(ctx, &r->lt));
    KILN_CUDA_TRY(ctx, kiln_cuda_workspace(cp, KILN_LT_WORKSPACE_BYTES, &r->ws));
    return KILN_OK;
}

static kiln_status run_gemm(kiln_ctx *ctx, const mm_run *r, const kiln_lt_gemm *g) {
    kiln_status st = kiln_lt_matmul(r->lt, r->stream, r->ws, KILN_LT_WORKSPACE_BYTES, r->cache, g);
    return st == KILN_OK ? KILN_OK : KILN_CUDA_FAIL(ctx, st);
}

/* The strided calls of plan p: one per combination of the looped outer batch dims. */
static kiln_status run_plan(kiln_ctx *ctx, const mm_run *r, const mm_plan *p, const mm_operand *a,
                            const mm_operand *b, int dtype, double alpha, const void *bias, int act,
                            void *y) {
    size_t es = kiln_dtype_bytes(dtype, 1);
    kiln_lt_gemm g = {.dtype = dtype, .trans_a = a->trans, .trans_b = b->trans, .M = p->M,
                      .N = p->N, .K = p->K, .lda = a->ld, .ldb = b->ld, .ldc = p->N,
                      .batch = p->inner, .stride_a = p->inner_sa, .stride_b = p->inner_sb,
                      .stride_c = p->M * p->N, .alpha = alpha, .beta = 0.0, .bias = bias, .act = act};
    if (p->fold) {
        g.M = p->M * p->inner;
        g.batch = 1;
    }
    int64_t outer = p->count / p->inner, idx[KILN_MAX_RANK] = {0}, oa = 0, ob = 0, od = 0;
    for (int64_t c = 0; c < outer; c++) {
        g.a = a->data + oa * (int64_t)es;
        g.b = b->data + ob * (int64_t)es;
        g.d = (char *)y + od * (int64_t)es;
        g.c = g.d;
        KILN_TRY(run_gemm(ctx, r, &g));
        for (int i = p->split - 1; i >= 0; i--) { /* odometer over the outer dims */
            oa += p->sa[i];
            ob += p->sb[i];
            od += p->sd[i];
            if (++idx[i] < p->bdims[i]) break;
            oa -= p->sa[i] * p->bdims[i];
            ob -= p->sb[i] * p->bdims[i];
            od -= p->sd[i] * p->bdims[i];
            idx[i] = 0;
        }
    }
    return KILN_OK;
}

kiln_status kiln_cuda_matmul_product(kiln_ctx *ctx, kiln_lt_cache *cache, const kiln_tensor *A,
                                     const kiln_tensor *B, const kiln_mm_form *form,
                                     const kiln_tensor *bias, int act, kiln_tensor *Y) {
    static const kiln_mm_form plain = {0, 0, 0, 0, 1.0};
    if (!form) form = &plain;
    if (!lt_dtype_ok(A->dtype) || B->dtype != A->dtype || Y->dtype != A->dtype ||
        (bias && bias->dtype != A->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "element types %s x %s -> %s: the CUDA matmul takes one of float32, "
                         "float16, bfloat16, float64", kiln_dtype_name((kiln_dtype)A->dtype),
                         kiln_dtype_name((kiln_dtype)B->dtype), kiln_dtype_name((kiln_dtype)Y->dtype));
    mm_operand a, b;
    mm_plan p;
    KILN_TRY(operand_of(ctx, A, 0, form->trans_a, form->trans_batch_a, &a));
    KILN_TRY(operand_of(ctx, B, 1, form->trans_b, form->trans_batch_b, &b));
    KILN_TRY(plan_product(ctx, &a, &b, &p));
    if (kiln_numel(Y) != p.count * p.M * p.N)
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output has %lld elements, the product %lld",
                         (long long)kiln_numel(Y), (long long)(p.count * p.M * p.N));
    if (bias && kiln_numel(bias) != p.N)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias has %lld elements, expected N = %lld",
                         (long long)kiln_numel(bias), (long long)p.N);
    if (p.count == 0 || p.M == 0 || p.N == 0) return KILN_OK;
    kiln_cuda_provider *cp = kiln_cuda_of(ctx);
    if (p.K == 0) { /* an empty sum: zeros, plus the bias */
        if (act != KILN_LT_ACT_NONE && bias)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "K = 0 with an activation epilogue");
        if (!bias) {
            KILN_CUDA_TRY(ctx, kiln_cuda_memset(cp, Y->data, 0, kiln_tensor_nbytes(Y)));
            return KILN_OK;
        }
        KILN_CUDA_TRY(ctx, kiln_cuda_matmul_broadcast_c(kiln_cuda_stream(cp), A->dtype, bias->data, 1,
                                                        p.N, Y->data, p.count * p.M, p.N, 1.0));
        return KILN_OK;
    }
    mm_run r;
    KILN_TRY(run_setup(ctx, cache, &r));
    return run_plan(ctx, &r, &p, &a, &b, A->dtype, form->alpha, bias ? bias->data : NULL, act, Y->data);
}

/* ---- MatMul and FusedMatMul ---- */

static kiln_status mm_init(kiln_ctx *ctx, void **state) {
    if (!(*state = kiln_lt_cache_new()))
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the matmul cache");
    return KILN_OK;
}

static void mm_fini(void *state) { kiln_lt_cache_free(state); }

static kiln_status matmul_compute(kiln_ctx *ctx) {
    kiln_tensor *A, *B, *Y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &A));
    KILN_TRY(kiln_need_input(ctx, 1, &B));
    if (!Y) return KILN_OK;
    return kiln_cuda_matmul_product(ctx, ctx->kernel_state, A, B, NULL, NULL, KILN_LT_ACT_NONE, Y);
}

static kiln_status fused_matmul_compute(kiln_ctx *ctx) {
    kiln_tensor *A, *B, *Y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &A));
    KILN_TRY(kiln_need_input(ctx, 1, &B));
    if (!Y) return KILN_OK;
    const kiln_node *n = ctx->node;
    kiln_mm_form f = {
        .trans_a = kiln_attr_int(n, "transA", 0) != 0,
        .trans_b = kiln_attr_int(n, "transB", 0) != 0,
        .trans_batch_a = kiln_attr_int(n, "transBatchA", 0) != 0,
        .trans_batch_b = kiln_attr_int(n, "transBatchB", 0) != 0,
        .alpha = kiln_attr_float(n, "alpha", 1.0f),
    };
    return kiln_cuda_matmul_product(ctx, ctx->kernel_state, A, B, &f, NULL, KILN_LT_ACT_NONE, Y);
}

/* kiln:MatMulBias: the bias as cuBLASLt's epilogue, or (no fused form for the shape) added after. */
static kiln_status matmul_bias_compute(kiln_ctx *ctx) {
    kiln_tensor *A, *B, *bias, *Y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &A));
    KILN_TRY(kiln_need_input(ctx, 1, &B));
    KILN_TRY(kiln_need_input(ctx, 2, &bias));
    if (!Y) return KILN_OK;
    kiln_status st = kiln_cuda_matmul_product(ctx, ctx->kernel_state, A, B, NULL, bias, KILN_LT_ACT_NONE, Y);
    if (st != KILN_ERR_NOT_IMPLEMENTED || A->dtype == KILN_DTYPE_DOUBLE) return st;
    KILN_TRY(kiln_cuda_matmul_product(ctx, ctx->kernel_state, A, B, NULL, NULL, KILN_LT_ACT_NONE, Y));
    int64_t n = kiln_numel(bias);
    if (kiln_numel(Y) == 0 || n == 0) return KILN_OK;
    KILN_CUDA_TRY(ctx, kiln_cuda_conv_epilogue(kiln_cuda_stream(kiln_cuda_of(ctx)), Y->dtype, Y->data, bias->data,
                                               NULL, kiln_numel(Y), n, 1, KILN_CUDA_ACT_NONE, 0.0f, 0.0f));
    return KILN_OK;
}

/* ---- Gemm: Y = alpha op(A) op(B) + beta C ---- */

/* C's shape as rows x cols of the (M, N) it broadcasts to: scalar (1,1), (n) -> (1,n). */
static void c_extent(const kiln_tensor *C, int64_t *rows, int64_t *cols) {
    *rows = C->rank == 2 ? C->dims[0] : 1;
    *cols = C->rank >= 1 ? C->dims[C->rank - 1] : 1;
}

static kiln_status gemm_compute(kiln_ctx *ctx) {
    kiln_tensor *A, *B, *C = kiln_input(ctx, 2), *Y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &A));
    KILN_TRY(kiln_need_input(ctx, 1, &B));
    if (!Y) return KILN_OK;
    const kiln_node *n = ctx->node;
    int ta = kiln_attr_int(n, "transA", 0) != 0, tb = kiln_attr_int(n, "transB", 0) != 0;
    float alpha = kiln_attr_float(n, "alpha", 1.0f), beta = kiln_attr_float(n, "beta", 1.0f);
    if (A->rank != 2 || B->rank != 2 || Y->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Gemm takes 2-D A and B");
    int dt = A->dtype;
    int64_t M = A->dims[ta ? 1 : 0], K = A->dims[ta ? 0 : 1], N = B->dims[tb ? 0 : 1];
    if (B->dims[tb ? 1 : 0] != K || Y->dims[0] != M || Y->dims[1] != N)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "A, B and Y shapes do not agree");
    if (M == 0 || N == 0) return KILN_OK;
    int64_t cr = 0, cc = 0;
    int has_c = C && beta != 0.0f && kiln_numel(C) > 0;
    if (has_c) {
        c_extent(C, &cr, &cc);
        if ((cr != 1 && cr != M) || (cc != 1 && cc != N) || C->dtype != dt)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "C does not broadcast to [%lld,%lld]",
                             (long long)M, (long long)N);
    }
    kiln_cuda_provider *cp = kiln_cuda_of(ctx);
    void *stream = kiln_cuda_stream(cp);
    if (K == 0) { /* an empty product: beta C or zeros */
        if (has_c)
            KILN_CUDA_TRY(ctx, kiln_cuda_matmul_broadcast_c(stream, dt, C->data, cr, cc, Y->data, M, N, beta));
        else
            KILN_CUDA_TRY(ctx, kiln_cuda_memset(cp, Y->data, 0, kiln_tensor_nbytes(Y)));
        return KILN_OK;
    }
    mm_run r;
    KILN_TRY(run_setup(ctx, ctx->kernel_state, &r));
    kiln_lt_gemm g = {.dtype = dt, .trans_a = ta, .trans_b = tb, .M = M, .N = N, .K = K,
                      .lda = A->dims[1], .ldb = B->dims[1], .ldc = N, .batch = 1, .alpha = alpha,
                      .beta = 0.0, .a = A->data, .b = B->data, .c = Y->data, .d = Y->data};
    if (has_c && cr * cc == M * N) { /* C is already (M, N): cuBLASLt reads it as is */
        g.c = C->data;
        g.beta = beta;
    } else if (has_c && cr == 1 && cc == N && beta == 1.0f && dt != KILN_DTYPE_DOUBLE) {
        g.bias = C->data; /* a row vector (N) / (1,N): one value per column */
        kiln_status st = kiln_lt_matmul(r.lt, r.stream, r.ws, KILN_LT_WORKSPACE_BYTES, r.cache, &g);
        if (st != KILN_ERR_NOT_IMPLEMENTED) return st == KILN_OK ? KILN_OK : KILN_CUDA_FAIL(ctx, st);
        g.bias = NULL; /* no fused bias for this shape: the broadcast copy below instead */
    }
    if (has_c && !g.bias && g.c == Y->data) {
        KILN_CUDA_TRY(ctx, kiln_cuda_matmul_broadcast_c(stream, dt, C->data, cr, cc, Y->data, M, N, 1.0));
        g.beta = beta;
    }
    return run_gemm(ctx, &r, &g);
}

/* ---- placement ---- */

/* Inputs in mask must have one known element type that cuBLASLt multiplies. */
static int same_float_type(const kiln_node *n, const kiln_graph_value *const *in, unsigned mask,
                           char *why, size_t cap) {
    return kiln_cuda_need_same_type(n, in, mask, lt_dtype_ok,
                                    "float32, float16, bfloat16 or float64 (integer products run on the CPU)",
                                    why, cap);
}

static int matmul_supports(const kiln_node *n, const kiln_graph_value *const *in,
                           const kiln_graph_value *const *out, char *why, size_t cap) {
    return same_float_type(n, in, 0x3, why, cap);
}

static int gemm_supports(const kiln_node *n, const kiln_graph_value *const *in,
                         const kiln_graph_value *const *out, char *why, size_t cap) {
    return same_float_type(n, in, 0x7, why, cap);
}

const kiln_kernel kiln_cuda_kernels_matmul[] = {
    {"", "MatMul", 1, 0, matmul_supports, mm_init, mm_fini, matmul_compute},
    {"", "Gemm", 1, 0, gemm_supports, mm_init, mm_fini, gemm_compute},
    {"com.microsoft", "FusedMatMul", 1, 0, matmul_supports, mm_init, mm_fini, fused_matmul_compute},
    {"kiln", "MatMulBias", 1, 0, gemm_supports, mm_init, mm_fini, matmul_bias_compute},
    {0},
};
