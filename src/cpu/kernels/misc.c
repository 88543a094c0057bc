/* The misc kernel family: recent ONNX ops that fit no other family. LinearAttention and
 * CausalConvWithState (opset 27), FlexAttention (ai.onnx.preview), the training optimisers
 * Adagrad / Adam / Momentum (ai.onnx.preview.training, one update step as inference) and
 * ImageDecoder (opset 20). */
#include "../../ops/op.h"

kiln_status kmisc_linear_attention_infer(kiln_ctx *ctx);
kiln_status kmisc_linear_attention_compute(kiln_ctx *ctx);
kiln_status kmisc_causal_conv_infer(kiln_ctx *ctx);
kiln_status kmisc_causal_conv_compute(kiln_ctx *ctx);
kiln_status kmisc_flex_attention_infer(kiln_ctx *ctx);
kiln_status kmisc_flex_attention_compute(kiln_ctx *ctx);
kiln_status kmisc_adagrad_infer(kiln_ctx *ctx);
kiln_status kmisc_adagrad_compute(kiln_ctx *ctx);
kiln_status kmisc_adam_infer(kiln_ctx *ctx);
kiln_status kmisc_adam_compute(kiln_ctx *ctx);
kiln_status kmisc_momentum_infer(kiln_ctx *ctx);
kiln_status kmisc_momentum_compute(kiln_ctx *ctx);
kiln_status kmisc_image_decoder_infer(kiln_ctx *ctx);
kiln_status kmisc_image_decoder_compute(kiln_ctx *ctx);

const kiln_op kiln_ops_misc[] = {
    {"", "LinearAttention", 27, 0, NULL, kmisc_linear_attention_infer, kmisc_linear_attention_compute,
     NULL},
    {"", "CausalConvWithState", 27, 0, NULL, kmisc_causal_conv_infer, kmisc_causal_conv_compute, NULL},
    {"ai.onnx.preview", "FlexAttention", 1, 0, NULL, kmisc_flex_attention_infer,
     kmisc_flex_attention_compute, NULL},
    {"ai.onnx.preview.training", "Adagrad", 1, 0, NULL, kmisc_adagrad_infer, kmisc_adagrad_compute, NULL},
    {"ai.onnx.preview.training", "Adam", 1, 0, NULL, kmisc_adam_infer, kmisc_adam_compute, NULL},
    {"ai.onnx.preview.training", "Momentum", 1, 0, NULL, kmisc_momentum_infer, kmisc_momentum_compute,
     NULL},
    {"", "ImageDecoder", 20, KILN_OP_DYNAMIC, NULL, kmisc_image_decoder_infer, kmisc_image_decoder_compute,
     NULL},
    {0},
};
