// Projection-bias add for the com.microsoft attention ops (see attention.h).
#include "attention.h"

#include "../cuda_provider.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

namespace {

__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename E> __device__ __forceinline__ E from_f(float x);
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

struct BiasLayout {
    int64_t row_len, N, J, H, bias_seg;
    // Index into bias of element c (0 <= c < row_len) of a row.
    __device__ __forceinline__ int64_t bias_index(int64_t c) const {
        const int64_t h = c % H, nj = c / H;
        return (nj % J) * bias_seg + (nj / J) * H + h;
    }
};

// V consecutive elements per step (V = 8: 16-byte moves; needs H and bias_seg multiples of 8 and
// aligned pointers so that a step never straddles a head).
template <typename E, int V>
__global__ void add_bias_kernel(E *__restrict__ dst, const E *src, int64_t steps, BiasLayout L,
                                const E *__restrict__ bias) {
    const int64_t stride = (int64_t)gridDim.x * blockDim.x;
    for (int64_t u = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; u < steps; u += stride) {
        const int64_t e = u * V;
        const int64_t bi = L.bias_index(e % L.row_len);
        if constexpr (V == 8) {
            uint4 xs = reinterpret_cast<const uint4 *>(src)[u];
            const uint4 bs = *reinterpret_cast<const uint4 *>(bias + bi);
            E *x = reinterpret_cast<E *>(&xs);
            const E *b = reinterpret_cast<const E *>(&bs);
#pragma unroll
            for (int i = 0; i < 8; i++) x[i] = from_f<E>(to_f(x[i]) + to_f(b[i]));
            reinterpret_cast<uint4 *>(dst)[u] = xs;
        } else {
            dst[e] = from_f<E>(to_f(src[e]) + to_f(bias[bi]));
        }
    }
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }

template <typename E>
kiln_status launch(cudaStream_t stream, void *dst, const void *src, int64_t rows, BiasLayout L, const void *bias) {
    const int64_t n = rows * L.row_len;
    const bool vec = L.H % 8 == 0 && L.bias_seg % 8 == 0 && aligned16(dst) && aligned16(src) && aligned16(bias);
    const int64_t steps = vec ? n / 8 : n;
    const int threads = 256;
    int64_t blocks = (steps + threads - 1) / threads;
    if (blocks > 65535LL * 16) blocks = 65535LL * 16; // grid-stride beyond this
    if (vec)
        add_bias_kernel<E, 8><<<(unsigned)blocks, threads, 0, stream>>>((E *)dst, (const E *)src, steps, L,
                                                                         (const E *)bias);
    else
        add_bias_kernel<E, 1><<<(unsigned)blocks, threads, 0, stream>>>((E *)dst, (const E *)src, steps, L,
                                                                         (const E *)bias);
    return kiln_cuda_check(cudaGetLastError(), "attention add_bias_kernel");
}

} // namespace

extern "C" kiln_status kiln_cuda_attn_add_bias(void *stream, int dtype, void *dst, const void *src, int64_t rows,
                                               int64_t N, int64_t J, int64_t H, const void *bias,
                                               int64_t bias_seg) {
    if (rows <= 0 || N <= 0 || J <= 0 || H <= 0) return KILN_OK;
    const BiasLayout L = {N * J * H, N, J, H, bias_seg};
    cudaStream_t s = (cudaStream_t)stream;
    if (dtype == KILN_DTYPE_FLOAT16) return launch<__half>(s, dst, src, rows, L, bias);
    if (dtype == KILN_DTYPE_BFLOAT16) return launch<__nv_bfloat16>(s, dst, src, rows, L, bias);
    return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "attention bias: element type %d is not float16/bfloat16",
                          dtype);
}
