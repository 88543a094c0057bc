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

template <typename T> __device__ __forceinline__ T load_scaled(const T *p, bool scale_it, double s) {
    return scale_it ? scaled(*p, s) : *p;
}

/* Wide rows: a block per row (grid-stride over rows), threads over the row in packs of V
 * elements: 16 bytes when every row starts 16-byte aligned and N % V == 0 (the launcher checks),
 * else V = 1. Few large blocks rather than one tiny block per 256 elements: one-element blocks
 * made the fill launch-bound (24 us for 1024 x 3072 half on an H100). */
template <typename T, bool SCALE, int V>
__global__ void broadcast_c_rows(const T *__restrict__ c, int64_t row_step, int64_t col_step,
                                 T *__restrict__ y, int64_t M, int64_t N, double scale) {
    struct alignas(sizeof(T) * V) Pack { T e[V]; };
    int64_t packs = N / V;
    for (int64_t i = blockIdx.x; i < M; i += gridDim.x) {
        const T *crow = c + i * row_step;
        Pack *yrow = reinterpret_cast<Pack *>(y + i * N);
        for (int64_t p = threadIdx.x; p < packs; p += blockDim.x) {
            Pack v;
#pragma unroll
            for (int k = 0; k < V; k++) v.e[k] = load_scaled(crow + (p * V + k) * col_step, SCALE, scale);
            yrow[p] = v;
        }
    }
}

/* Narrow rows (N small): flat grid-stride over all M*N elements. */
template <typename T, bool SCALE>
__global__ void broadcast_c_flat(const T *__restrict__ c, int64_t row_step, int64_t col_step,
                                 T *__restrict__ y, int64_t M, int64_t N, double scale) {
    int64_t total = M * N;
    for (int64_t idx = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; idx < total;
         idx += (int64_t)gridDim.x * blockDim.x) {
        int64_t i = idx / N, j = idx - i * N;
        y[idx] = load_scaled(c + i * row_step + j * col_step, SCALE, scale);
    }
}

template <typename T, bool SCALE>
void launch_kind(cudaStream_t s, const T *c, int64_t row_step, int64_t col_step, T *y, int64_t M,
                 int64_t N, double scale) {
    const int threads = 256;
    constexpr int V = 16 / sizeof(T);
    if (N < 64) {
        int64_t blocks = (M * N + threads - 1) / threads;
        broadcast_c_flat<T, SCALE><<<(unsigned)(blocks < 4096 ? blocks : 4096), threads, 0, s>>>(
            c, row_step, col_step, y, M, N, scale);
        return;
    }
    unsigned blocks = (unsigned)(M < 8192 ? M : 8192);
    bool aligned = ((uintptr_t)y % 16 == 0) && (N % V == 0);
    if (aligned)
        broadcast_c_rows<T, SCALE, V><<<blocks, threads, 0, s>>>(c, row_step, col_step, y, M, N, scale);
    else
        broadcast_c_rows<T, SCALE, 1><<<blocks, threads, 0, s>>>(c, row_step, col_step, y, M, N, scale);
}

template <typename T>
kiln_status launch(cudaStream_t s, const void *c, int64_t c_rows, int64_t c_cols, void *y, int64_t M,
                   int64_t N, double scale) {
    int64_t row_step = c_rows == 1 ? 0 : c_cols, col_step = c_cols == 1 ? 0 : 1;
    if (scale == 1.0)
        launch_kind<T, false>(s, (const T *)c, row_step, col_step, (T *)y, M, N, scale);
    else
        launch_kind<T, true>(s, (const T *)c, row_step, col_step, (T *)y, M, N, scale);
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
