/* Shape plan of a numpy-style matrix product (MatMul, MatMulInteger, FusedMatMul, Einsum): 1-D
 * promotion, broadcast batch dimensions, and the runners that execute a plan. */
#ifndef KILN_MATMUL_PLAN_H
#define KILN_MATMUL_PLAN_H

#include "ops/op.h"

typedef struct kmm_plan_t {
    int a_vec, b_vec;              /* operand was 1-D and promoted */
    int64_t M, N, K;
    int nb, nba, nbb;              /* batch ranks: output, A, B */
    int64_t bdims[KILN_MAX_RANK];  /* broadcast batch dims */
    int64_t count;                 /* number of products = prod(bdims) */
    int64_t a_batch, b_batch;      /* matrices held by A and by B */
    int out_rank;
    int64_t out_dims[KILN_MAX_RANK];
} kmm_plan_t;

/* trans_a / trans_b swap the last two dims of A / B (ignored for 1-D operands). */
kiln_status kmm_plan(kiln_ctx *ctx, const kiln_tensor *A, const kiln_tensor *B, int trans_a,
                     int trans_b, kmm_plan_t *p);
kiln_status kmm_batch_offsets(kiln_ctx *ctx, const kiln_tensor *A, const kiln_tensor *B,
                              const kmm_plan_t *p, int64_t **offs);
/* dtype FLOAT or DOUBLE buffers; A, B, C are the (contiguous) data of At, Bt and the output. */
kiln_status kmm_run_float(kiln_ctx *ctx, int dtype, const kiln_tensor *At, const kiln_tensor *Bt,
                          const kmm_plan_t *p, int ta, int tb, double alpha, const void *A,
                          const void *B, void *C);
kiln_status kmm_run_half(kiln_ctx *ctx, int dtype, const kiln_tensor *At, const kiln_tensor *Bt,
                         const kmm_plan_t *p, int ta, int tb, double alpha, const float *b_cached,
                         void *out);

#endif
