/* Entry points of the image family; image.c holds the table. */
#ifndef KILN_IMAGE_KERNELS_H
#define KILN_IMAGE_KERNELS_H

#include "ops/op.h"

kiln_status kiln_grid_sample_init(kiln_ctx *ctx);
kiln_status kiln_grid_sample_infer(kiln_ctx *ctx);
kiln_status kiln_grid_sample_compute(kiln_ctx *ctx);
kiln_status kiln_affine_grid_infer(kiln_ctx *ctx);
kiln_status kiln_affine_grid_compute(kiln_ctx *ctx);
kiln_status kiln_roi_align_infer(kiln_ctx *ctx);
kiln_status kiln_roi_align_compute(kiln_ctx *ctx);

#endif
