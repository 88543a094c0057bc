/* Matrix products on the CUDA provider through cuBLASLt.
 *
 * Two layers:
 *  - kiln_lt_matmul: one (strided-batched) row-major GEMM, D = act(alpha op(A) op(B) + beta C +
 *    bias), with the descriptors and the heuristic's algorithm cached per node. Knows nothing of
 *    kiln_ctx, so a standalone driver can exercise it.
 *  - kiln_cuda_matmul_product: numpy-style matmul of two tensors (batch broadcasting, 1-D
 *    operands, FusedMatMul's trans/transBatch views) with an optional bias and activation: what
 *    MatMul, FusedMatMul and a fused MatMul+Add(+Relu/Gelu) node call.
 *
 * Float types: float32 (CUBLAS_COMPUTE_32F, exact float32 products unless KILN_CUDA_ALLOW_TF32=1),
 * float16 and bfloat16 (float32 accumulation and scale), float64 (CUBLAS_COMPUTE_64F). */
#ifndef KILN_CUDA_MATMUL_LT_H
#define KILN_CUDA_MATMUL_LT_H

#include "kiln.h"
#include <stddef.h>
#include <stdint.h>

struct kiln_ctx;
struct kiln_tensor;

/* Epilogue activation, applied after the bias. GELU is cuBLASLt's tanh approximation
 * (0.5x(1+tanh(sqrt(2/pi)(x+0.044715x^3)))): use it only for Gelu(approximate="tanh") or
 * FastGelu, never for the exact erf Gelu. */
typedef enum kiln_lt_act { KILN_LT_ACT_NONE = 0, KILN_LT_ACT_RELU = 1, KILN_LT_ACT_GELU_TANH = 2 } kiln_lt_act;

/* One GEMM on row-major matrices: for every batch index i < batch,
 *     D_i = act(alpha * op(A_i) op(B_i) + beta * C_i + bias)
 * op(A_i) is M x K, op(B_i) is K x N, D_i and C_i are M x N with leading dimension ldc.
 * X_i starts at x + i * stride_x elements (stride 0: one matrix shared by every batch). */
typedef struct kiln_lt_gemm {
    int dtype;                            /* KILN_DTYPE_FLOAT / FLOAT16 / BFLOAT16 / DOUBLE */
    int trans_a, trans_b;                 /* op() = transpose of the stored row-major matrix */
    int64_t M, N, K;                      /* all >= 1 */
    int64_t lda, ldb, ldc;                /* elements between consecutive stored rows */
    int64_t batch;                        /* >= 1 */
    int64_t stride_a, stride_b, stride_c; /* stride_c serves C and D */
    double alpha, beta;                   /* beta == 0: C is not read */
    const void *a, *b;
    const void *c;                        /* beta != 0: same layout as D; may be D itself */
    void *d;
    const void *bias;                     /* NULL or N elements of dtype, added to each row */
    int act;                              /* kiln_lt_act */
} kiln_lt_gemm;

/* Per-node cache of descriptors and chosen algorithms (a few shapes, replaced round-robin). */
typedef struct kiln_lt_cache kiln_lt_cache;
kiln_lt_cache *kiln_lt_cache_new(void);
void kiln_lt_cache_free(kiln_lt_cache *c);

/* Enqueues g on stream. lt: a cublasLtHandle_t; ws/ws_bytes: scratch for cuBLASLt. cache may be
 * NULL (descriptors are then made and dropped per call). Returns KILN_ERR_NOT_IMPLEMENTED (with
 * kiln_cuda_last_error set) when cuBLASLt has no algorithm for the form, e.g. an epilogue it
 * cannot fuse for these types, so the caller can fall back. */
kiln_status kiln_lt_matmul(void *lt, void *stream, void *ws, size_t ws_bytes, kiln_lt_cache *cache,
                           const kiln_lt_gemm *g);

/* Scratch bytes asked of kiln_cuda_workspace for cuBLASLt (32 MiB: what cuBLAS advises on Hopper). */
#define KILN_LT_WORKSPACE_BYTES ((size_t)32 << 20)

/* ---- with the runtime (matmul.c) ---- */

/* The provider's cublasLtHandle_t, created on first use and kept in kiln_cuda_ep.cublaslt (the
 * provider destroys it with cublasLtDestroy when it closes). */
kiln_status kiln_cuda_lt_handle(struct kiln_ctx *ctx, void **handle);

/* What a matmul node's operands are read as (FusedMatMul's attributes; zero for MatMul). */
typedef struct kiln_mm_form {
    int trans_a, trans_b;                 /* ignored for a 1-D operand */
    int trans_batch_a, trans_batch_b;     /* FusedMatMul: [b0,d1..,dn] read as [d1..,b0,dn] */
    double alpha;
} kiln_mm_form;

/* Y = act(alpha * matmul(op(A), op(B)) + bias) with numpy matmul semantics (1-D promotion, batch
 * broadcasting). Y is allocated with the product's shape. bias: NULL or a device tensor of N
 * elements (the last output dimension), added to every row. form NULL: plain MatMul. cache: the
 * node's (kiln_lt_cache_new), or NULL. With act != NONE or a bias, a cuBLASLt that cannot fuse
 * the epilogue makes this return KILN_ERR_NOT_IMPLEMENTED; the caller then runs the product and
 * the epilogue separately. Must be called from a kernel's compute (uses the node's ctx). */
kiln_status kiln_cuda_matmul_product(struct kiln_ctx *ctx, kiln_lt_cache *cache,
                                     const struct kiln_tensor *A, const struct kiln_tensor *B,
                                     const kiln_mm_form *form, const struct kiln_tensor *bias,
                                     int act, struct kiln_tensor *Y);

#endif
