/* Small device kernels around the fused attention dispatcher (src/cuda/attention): the per-channel
 * projection bias of the com.microsoft attention ops, added while copying Q/K/V into scratch (or
 * in place after the Attention projection GEMM). */
#ifndef KILN_CUDA_KERNELS_ATTENTION_H
#define KILN_CUDA_KERNELS_ATTENTION_H

#include "kiln.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* dst = src + bias over `rows` rows of N·J·H elements laid out (n, j, h); element (r, n, j, h)
 * gets bias[j·bias_seg + n·H + h]. With N = J = 1 the bias is one row of H values (plain Q/K/V or
 * a projection); with J = 3, bias_seg = N·H it is the q|k|v bias of a packed (…, N, 3, H) tensor.
 * dst may equal src (in place). dtype: KILN_DTYPE_FLOAT16 or KILN_DTYPE_BFLOAT16. */
kiln_status kiln_cuda_attn_add_bias(void *stream, int dtype, void *dst, const void *src, int64_t rows,
                                    int64_t N, int64_t J, int64_t H, const void *bias, int64_t bias_seg);

#ifdef __cplusplus
}
#endif

#endif
