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

#endif
