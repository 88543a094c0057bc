/* Pieces shared by the attention family's glue files (ops/attention.c, attention_supports.c,
 * attention_rotary.c). */
#ifndef KILN_CUDA_OPS_ATTENTION_GLUE_H
#define KILN_CUDA_OPS_ATTENTION_GLUE_H

#include "../cuda_ep.h"

/* The static type of node input i, or NULL when it is absent or its type is unknown. */
const kiln_type *kattn_cuda_type(const kiln_node *n, const kiln_graph_value *const *in, int i);

/* supports() of MultiHeadAttention, PackedMultiHeadAttention and Attention (attention_supports.c). */
int kattn_cuda_mha_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap);
/* The FP8 (float8e4m3fn) form of MultiHeadAttention (attention_fp8.c); mha_supports / the MHA
 * compute hand over to these when query is float8e4m3fn. */
int kattn_cuda_mha_fp8_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                const kiln_graph_value *const *out, char *why, size_t cap);
kiln_status kattn_cuda_mha_fp8_compute(kiln_ctx *ctx);
int kattn_cuda_packed_mha_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                   const kiln_graph_value *const *out, char *why, size_t cap);
int kattn_cuda_attention_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                  const kiln_graph_value *const *out, char *why, size_t cap);

/* RotaryEmbedding, com.microsoft (input, position_ids, cos_cache, sin_cache) and ONNX opset 23
 * (X, cos_cache, sin_cache, position_ids). */
int kattn_cuda_ms_rotary_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                  const kiln_graph_value *const *out, char *why, size_t cap);
kiln_status kattn_cuda_ms_rotary_compute(kiln_ctx *ctx);
int kattn_cuda_rotary_supports(const kiln_node *n, const kiln_graph_value *const *in,
                               const kiln_graph_value *const *out, char *why, size_t cap);
kiln_status kattn_cuda_rotary_compute(kiln_ctx *ctx);

#endif
