/* The attention kernel family: every op served by the attention_*.c files. */
#include "attention_common.h"

const kiln_op kiln_ops_attention[] = {
    {"com.microsoft", "Attention", 1, 0, NULL, kattn_contrib_infer, kattn_contrib_compute, NULL},
    {"com.microsoft", "MultiHeadAttention", 1, 0, NULL, kattn_mha_infer, kattn_mha_compute, NULL},
    {"com.microsoft", "PackedAttention", 1, 0, NULL, kattn_packed_infer, kattn_packed_compute, NULL},
    {"com.microsoft", "PackedMultiHeadAttention", 1, 0, NULL, kattn_packed_mha_infer,
     kattn_packed_mha_compute, NULL},
    {"com.microsoft", "RotaryEmbedding", 1, 0, NULL, kattn_ms_rotary_infer, kattn_ms_rotary_compute,
     NULL},
    {"com.microsoft", "GroupQueryAttention", 1, 0, NULL, kattn_gqa_infer, kattn_gqa_compute, NULL},
    {"", "Attention", 23, 0, NULL, kattn_onnx_infer, kattn_onnx_compute, NULL},
    {"", "RotaryEmbedding", 23, 0, NULL, kattn_rotary_infer, kattn_rotary_compute, NULL},
    {0},
};
