/* Entry points of the pooling ops kept outside pool.c (which holds the pool family table). */
#ifndef KILN_POOL_UTIL_H
#define KILN_POOL_UTIL_H

#include "conv_util.h"

kiln_status kgpool_infer(kiln_ctx *ctx);
kiln_status kgpool_avg_compute(kiln_ctx *ctx);
kiln_status kgpool_max_compute(kiln_ctx *ctx);
kiln_status kgpool_lp_compute(kiln_ctx *ctx);
kiln_status kunpool_infer(kiln_ctx *ctx);
kiln_status kunpool_compute(kiln_ctx *ctx);
kiln_status kroipool_infer(kiln_ctx *ctx);
kiln_status kroipool_compute(kiln_ctx *ctx);

/* The outputs [*oa, *ob) of a row whose whole window (KW wide, stride S, PB padding on the left)
 * lies inside the W input columns, clamped to the OW outputs (empty: *oa == *ob). */
static inline void kpool_inner_cols(int64_t W, int64_t KW, int64_t S, int64_t PB, int64_t OW,
                                    int64_t *oa, int64_t *ob) {
    int64_t a = (PB + S - 1) / S, b = W - KW + PB >= 0 ? (W - KW + PB) / S + 1 : 0;
    if (b > OW) b = OW;
    *oa = a > b ? b : a;
    *ob = b;
}

#endif
