// Rotary position embedding (see rotary.h). One thread per rotated pair (so y may alias x), block
// rows of head vectors, threads along the head: coalesced reads of x and of the cache rows.
#include "rotary.h"

#include "../cuda_provider.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>

namespace {

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename E> __device__ __forceinline__ E from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

template <typename E>
__global__ void rotary_kernel(kiln_cuda_rope r) {
    const E *x = (const E *)r.x;
    const E *cosc = (const E *)r.cos_cache, *sinc = (const E *)r.sin_cache;
    E *y = (E *)r.y;
    const int64_t half = r.rd / 2, items = half + (r.H - r.rd), rows = r.B * r.N * r.S;
    const int64_t row_stride = (int64_t)gridDim.x * blockDim.y;
    for (int64_t row = (int64_t)blockIdx.x * blockDim.y + threadIdx.y; row < rows; row += row_stride) {
        // row enumerates head vectors in memory order: (b, n, s) or (b, s, n)
        const int64_t s = r.heads_first ? row % r.S : (row / r.N) % r.S;
        const int64_t b = row / (r.N * r.S);
        int64_t p;
        if (r.pos_mode == KILN_ROPE_POS_BS) p = r.pos[b * r.S + s];
        else if (r.pos_mode == KILN_ROPE_POS_BASE) p = r.pos[0] + s;
        else p = b * r.S + s;
        const bool bad = p < 0 || p >= r.cache_rows; // the CPU op rejects these; NaN makes it visible
        const E *c = cosc + (bad ? 0 : p) * half, *sn = sinc + (bad ? 0 : p) * half;
        const E *xr = x + row * r.H;
        E *yr = y + row * r.H;
        for (int64_t t = threadIdx.x; t < items; t += blockDim.x) {
            if (t >= half) { // entries past the rotary dimension pass through
                const int64_t h = r.rd + (t - half);
                if (yr != xr) yr[h] = xr[h];
                continue;
            }
            const int64_t i1 = r.interleaved ? 2 * t : t, i2 = r.interleaved ? 2 * t + 1 : t + half;
            const float x1 = to_f(xr[i1]), x2 = to_f(xr[i2]);
            const float cv = bad ? NAN : to_f(c[t]), sv = bad ? NAN : to_f(sn[t]);
            yr[i1] = from_f<E>(cv * x1 - sv * x2);
            yr[i2] = from_f<E>(sv * x1 + cv * x2);
        }
    }
}

template <typename E> kiln_status launch(cudaStream_t stream, const kiln_cuda_rope *r) {
    const int64_t items = r->rd / 2 + (r->H - r->rd), rows = r->B * r->N * r->S;
    const int bx = items > 64 ? 128 : items > 32 ? 64 : 32;
    const dim3 block(bx, 256 / bx);
    int64_t blocks = (rows + block.y - 1) / block.y;
    if (blocks > 65535LL * 16) blocks = 65535LL * 16; // grid-stride beyond this
    rotary_kernel<E><<<(unsigned)blocks, block, 0, stream>>>(*r);
    return kiln_cuda_check(cudaGetLastError(), "rotary_kernel");
}

} // namespace

extern "C" kiln_status kiln_cuda_rotary(void *stream, const kiln_cuda_rope *r) {
    if (r->B <= 0 || r->N <= 0 || r->S <= 0 || r->H <= 0) return KILN_OK; // empty tensor
    if (r->rd < 0 || r->rd > r->H || r->rd % 2)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "rotary: rotary dimension %lld for head size %lld",
                              (long long)r->rd, (long long)r->H);
    if (r->pos_mode != KILN_ROPE_POS_NONE && !r->pos)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "rotary: position_ids missing");
    cudaStream_t s = (cudaStream_t)stream;
    switch (r->dtype) {
    case KILN_DTYPE_FLOAT: return launch<float>(s, r);
    case KILN_DTYPE_FLOAT16: return launch<__half>(s, r);
    case KILN_DTYPE_BFLOAT16: return launch<__nv_bfloat16>(s, r);
    default:
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "rotary: element type %d is not float32/float16/bfloat16",
                              r->dtype);
    }
}
