/* Device helpers of the matmul family (the products themselves go through cuBLASLt). */
#ifndef KILN_CUDA_KERNELS_MATMUL_H
#define KILN_CUDA_KERNELS_MATMUL_H

#include "kiln.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* y (M x N, row-major) = scale * c broadcast from c_rows x c_cols, where c_rows is 1 or M and
 * c_cols is 1 or N (Gemm's C: scalar, (N), (M,1), (1,N), (M,N)). dtype: float32, float16,
 * bfloat16 or float64; scale == 1 copies the elements bit for bit. Enqueued on stream. */
kiln_status kiln_cuda_matmul_broadcast_c(void *stream, int dtype, const void *c, int64_t c_rows,
                                         int64_t c_cols, void *y, int64_t M, int64_t N, double scale);

#ifdef __cplusplus
}
#endif

#endif
