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

/* Saturation range of an integer quantised type; returns 0 when dt is not one. */
int kiln_quant_int_range(int dt, int64_t *lo, int64_t *hi);

#endif
