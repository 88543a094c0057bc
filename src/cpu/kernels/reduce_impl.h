/* Internal interface between the reduce family's files: the typed reduction loops
 * (reduce_kernels.c), the Reduce* ops (reduce.c, which also holds the family table) and the
 * other ops listed in that table (reduce_arg.c, loss.c). */
#ifndef KILN_REDUCE_IMPL_H
#define KILN_REDUCE_IMPL_H

#include "reduce_util.h"

enum kiln_rkind {
    KILN_RK_SUM, KILN_RK_MEAN, KILN_RK_MAX, KILN_RK_MIN, KILN_RK_PROD, KILN_RK_L1, KILN_RK_L2,
    KILN_RK_LOGSUM, KILN_RK_LOGSUMEXP, KILN_RK_SUMSQ
};

/* Element classes the loops run on: narrower types are widened to one of these first. */
enum kiln_rclass { KILN_RC_F32, KILN_RC_F64, KILN_RC_I64, KILN_RC_U64 };

/* Reduces src, laid out as [outer, r, inner] (r >= 1), into dst [outer, inner], both of the
 * class's element type, on ctx's thread pool. */
void kiln_reduce_run(kiln_ctx *ctx, int cls, int kind, const void *src, void *dst, int64_t outer,
                     int64_t r, int64_t inner);

/* ArgMax / ArgMin (reduce_arg.c) */
kiln_status kiln_argmax_infer(kiln_ctx *ctx);
kiln_status kiln_argmax_compute(kiln_ctx *ctx);
kiln_status kiln_argmin_compute(kiln_ctx *ctx);

/* NegativeLogLikelihoodLoss / SoftmaxCrossEntropyLoss (loss.c) */
kiln_status kiln_nll_loss_infer(kiln_ctx *ctx);
kiln_status kiln_nll_loss_compute(kiln_ctx *ctx);
kiln_status kiln_sce_loss_infer(kiln_ctx *ctx);
kiln_status kiln_sce_loss_compute(kiln_ctx *ctx);

#endif
