/* Internal interface of the norm family: the op functions each norm_*.c file defines, listed in
 * the family table in norm.c, plus the parameter helpers of norm_common.c. */
#ifndef KILN_NORM_IMPL_H
#define KILN_NORM_IMPL_H

#include "reduce_util.h"

/* Input p (a scale or bias) must broadcast unidirectionally to x's shape (p right-aligned). */
kiln_status kiln_norm_check_bcast(kiln_ctx *ctx, const kiln_tensor *p, const kiln_tensor *x,
                                  const char *what);

/* p broadcast over x viewed as [rows, n] with n = prod(x.dims[axis:]). Returns a buffer of n
 * values when p is constant across rows (*row_stride = 0) or rows*n values (*row_stride = n).
 * *owned is what to free (NULL when *out points into p itself). */
kiln_status kiln_norm_param_f32(kiln_ctx *ctx, const kiln_tensor *p, const kiln_tensor *x, int axis,
                                const float **out, int64_t *row_stride, float **owned);
kiln_status kiln_norm_param_f64(kiln_ctx *ctx, const kiln_tensor *p, const kiln_tensor *x, int axis,
                                const double **out, int64_t *row_stride, double **owned);

/* float32 copy of a float-typed tensor when it is not float already (else the data itself). */
kiln_status kiln_norm_as_f32(kiln_ctx *ctx, const kiln_tensor *t, const float **out, float **owned);

/* norm_layer.c */
kiln_status kiln_layernorm_infer(kiln_ctx *ctx);
kiln_status kiln_layernorm_compute(kiln_ctx *ctx);
kiln_status kiln_simplified_ln_infer(kiln_ctx *ctx);
kiln_status kiln_simplified_ln_compute(kiln_ctx *ctx);
kiln_status kiln_rmsnorm_infer(kiln_ctx *ctx);
kiln_status kiln_rmsnorm_compute(kiln_ctx *ctx);
kiln_status kiln_skip_ln_infer(kiln_ctx *ctx);
kiln_status kiln_skip_ln_compute(kiln_ctx *ctx);
kiln_status kiln_skip_simplified_ln_infer(kiln_ctx *ctx);
kiln_status kiln_skip_simplified_ln_compute(kiln_ctx *ctx);

/* norm_batch.c */
kiln_status kiln_batchnorm_infer(kiln_ctx *ctx);
kiln_status kiln_batchnorm_compute(kiln_ctx *ctx);
kiln_status kiln_instancenorm_infer(kiln_ctx *ctx);
kiln_status kiln_instancenorm_compute(kiln_ctx *ctx);
kiln_status kiln_groupnorm_infer(kiln_ctx *ctx);
kiln_status kiln_groupnorm_compute(kiln_ctx *ctx);

/* norm_misc.c */
kiln_status kiln_lpnorm_infer(kiln_ctx *ctx);
kiln_status kiln_lpnorm_compute(kiln_ctx *ctx);
kiln_status kiln_mvn_infer(kiln_ctx *ctx);
kiln_status kiln_mvn_compute(kiln_ctx *ctx);
kiln_status kiln_lrn_infer(kiln_ctx *ctx);
kiln_status kiln_lrn_compute(kiln_ctx *ctx);

/* norm_dropout.c */
kiln_status kiln_dropout_infer(kiln_ctx *ctx);
kiln_status kiln_dropout_compute(kiln_ctx *ctx);

#endif
