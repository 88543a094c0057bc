/* The fusion passes run by kiln_graph_optimize, in this order. Each walks one graph, rewrites
 * every match it proves safe and returns an error only when out of memory. */
#ifndef KILN_OPT_FUSIONS_H
#define KILN_OPT_FUSIONS_H

#include "pattern.h"

/* fuse_conv.c: Conv + BatchNormalization -> Conv (folded weights); Conv + Add(residual) and
 * Conv + Relu/Clip/LeakyRelu/Sigmoid/Tanh/HardSigmoid/HardSwish -> com.microsoft FusedConv. */
kiln_status opt_fuse_conv_batchnorm(opt_ctx *c);
kiln_status opt_fuse_conv_add(opt_ctx *c);
kiln_status opt_fuse_conv_activation(opt_ctx *c);
/* BatchNormalization + one of those activations -> FusedConv, a 1x1 depthwise convolution (CPU
 * sessions). */
kiln_status opt_fuse_batchnorm_activation(opt_ctx *c);
/* fuse_gelu.c: the erf form -> Gelu, the tanh form -> FastGelu, then Add(bias) in front of
 * either -> BiasGelu / FastGelu with bias. */
kiln_status opt_fuse_gelu(opt_ctx *c);
kiln_status opt_fuse_gelu_bias(opt_ctx *c);
/* fuse_layernorm.c: Add [+ Add(bias)] + LayerNormalization -> SkipLayerNormalization. */
kiln_status opt_fuse_skip_layernorm(opt_ctx *c);
/* simplify.c: Reshapes that provably keep their input's shape are dropped (readers read the
 * input), then nodes left with no readers. */
kiln_status opt_drop_same_shape_reshapes(opt_ctx *c);
/* fuse_attention.c: the exported self-attention subgraph (head split, Q.K^T, scale, mask,
 * Softmax, P.V, head merge) -> ONNX Attention (opset 23 kernel) on the 3-D projections. */
kiln_status opt_fuse_attention(opt_ctx *c);
/* fuse_matmul.c: MatMul + Add(bias) -> Gemm (2-D A); Transpose(last two axes) + MatMul ->
 * com.microsoft FusedMatMul. */
kiln_status opt_fuse_matmul_add(opt_ctx *c);
kiln_status opt_fuse_transpose_matmul(opt_ctx *c);

/* fuse_qdq.c: DequantizeLinear -> Conv / MatMul / Gemm -> QuantizeLinear -> QLinearConv,
 * QLinearMatMul, com.microsoft QGemm (CPU sessions only). */
kiln_status opt_fuse_qdq(opt_ctx *c);

#endif
