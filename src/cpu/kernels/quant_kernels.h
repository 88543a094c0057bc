/* Entry points of the quantisation family that live outside quant.c (which holds the table). */
#ifndef KILN_QUANT_KERNELS_H
#define KILN_QUANT_KERNELS_H

#include "ops/op.h"

/* QuantizeLinear / DequantizeLinear, shared with their com.microsoft versions. */
kiln_status kiln_quantize_linear_infer(kiln_ctx *ctx);
kiln_status kiln_quantize_linear_compute(kiln_ctx *ctx);
kiln_status kiln_dequantize_linear_infer(kiln_ctx *ctx);
kiln_status kiln_dequantize_linear_compute(kiln_ctx *ctx);
kiln_status kiln_qlinear_matmul_init(kiln_ctx *ctx);
void kiln_qlinear_matmul_fini(void *state);
kiln_status kiln_qlinear_conv_init(kiln_ctx *ctx);
void kiln_qlinear_conv_fini(void *state);
kiln_status kiln_qlinear_matmul_infer(kiln_ctx *ctx);
kiln_status kiln_qlinear_matmul_compute(kiln_ctx *ctx);
kiln_status kiln_qlinear_conv_infer(kiln_ctx *ctx);
kiln_status kiln_qlinear_conv_compute(kiln_ctx *ctx);

/* min(0, min x) and max(0, max x) over n floats; NaN elements are skipped. */
void kiln_quant_minmax(const float *x, int64_t n, float *lo, float *hi);
/* y = saturate(round_half_even(clamp(x / scale)) + zp) to uint8, as QuantizeLinear, over ctx's threads. */
void kiln_quantize_f32_u8(kiln_ctx *ctx, const float *x, int64_t n, float scale, uint8_t zp, uint8_t *y);

/* Saturation range of an integer quantised type; returns 0 when dt is not one. */
int kiln_quant_int_range(int dt, int64_t *lo, int64_t *hi);

#endif
