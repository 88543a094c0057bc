/* Gemm's C operand broadcast into the output before the product accumulates onto it (beta C). */
#include "matmul.h"
#include "../cuda_provider.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace {

template <typename T> __device__ __forceinline__ float to_f(T v) { return (float)v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) { return __bfloat162float(v); }
template <typename T> __device__ __forceinline__ T from_f(float v) { return (T)v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }

template <typename T> __device__ __forceinline__ T scaled(T v, double s) { return from_f<T>(to_f(v) * (float)s); }
template <> __device__ __forceinline__ double scaled<double>(double v, double s) { return v * s; }

/* Rows go over blockIdx.y (grid-stride), columns over x threads: no per-element division, and
 * consecutive threads write consecutive outputs. */
template <typename T, bool SCALE>
__global__ void broadcast_c(const T *__restrict__ c, int64_t row_step, int64_t col_step,
                            T *__restrict__ y, int64_t M, int64_t N, double scale) {
    for (int64_t i = blockIdx.y; i < M; i += gridDim.y) {
        const T *crow = c + i * row_step;
        T *yrow = y + i * N;
        for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < N;
             j += (int64_t)gridDim.x * blockDim.x) {
            T v = crow[j * col_step];
            yrow[j] = SCALE ? scaled(v, scale) : v;
        }
    }
}

template <typename T>
kiln_status launch(cudaStream_t s, const void *c, int64_t c_rows, int64_t c_cols, void *y, int64_t M,
                   int64_t N, double scale) {
    const int threads = 256;
    int64_t bx = (N + threads - 1) / threads;
    dim3 grid((unsigned)(bx < 1024 ? bx : 1024), (unsigned)(M < 65535 ? M : 65535));
    int64_t row_step = c_rows == 1 ? 0 : c_cols, col_step = c_cols == 1 ? 0 : 1;
    if (scale == 1.0)
        broadcast_c<T, false><<<grid, threads, 0, s>>>((const T *)c, row_step, col_step, (T *)y, M, N, scale);
    else
        broadcast_c<T, true><<<grid, threads, 0, s>>>((const T *)c, row_step, col_step, (T *)y, M, N, scale);
    return kiln_cuda_check(cudaGetLastError(), "matmul broadcast_c launch");
}

} // namespace

extern "C" kiln_status kiln_cuda_matmul_broadcast_c(void *stream, int dtype, const void *c, int64_t c_rows,
                                                    int64_t c_cols, void *y, int64_t M, int64_t N,
                                                    double scale) {
    if (M <= 0 || N <= 0) return KILN_OK;
    if ((c_rows != 1 && c_rows != M) || (c_cols != 1 && c_cols != N))
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "C of %lldx%lld does not broadcast to %lldx%lld",
                              (long long)c_rows, (long long)c_cols, (long long)M, (long long)N);
    cudaStream_t s = (cudaStream_t)stream;
    switch (dtype) {
    case KILN_DTYPE_FLOAT: return launch<float>(s, c, c_rows, c_cols, y, M, N, scale);
    case KILN_DTYPE_FLOAT16: return launch<__half>(s, c, c_rows, c_cols, y, M, N, scale);
    case KILN_DTYPE_BFLOAT16: return launch<__nv_bfloat16>(s, c, c_rows, c_cols, y, M, N, scale);
    case KILN_DTYPE_DOUBLE: return launch<double>(s, c, c_rows, c_cols, y, M, N, scale);
    default: return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "matmul broadcast_c: element type %d", dtype);
    }
}
