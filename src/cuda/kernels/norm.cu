/* Row normalisations on the GPU: LayerNormalization, SimplifiedLayerNormalization /
 * RMSNormalization and the com.microsoft SkipLayerNormalization / SkipSimplifiedLayerNormalization
 * (see kiln_cuda_ln_args in norm.h).
 *
 * The statistics follow the CPU kernel (src/cpu/kernels/norm_layer.c): two passes over the row in
 * float32 (mean, then the mean squared deviation), inv = 1 / sqrt(var + eps), and for the skip
 * forms the normalised value is the float32 sum x + skip + bias (the sum output is that value
 * rounded to X's type).
 *
 * Rows of up to 1024 elements take one warp each and live in registers (16-byte vector loads when
 * the row length and pointers allow). Longer rows take one block each; the row is kept as float32
 * in shared memory when it fits in 48 KB, else re-read (and the skip sum recomputed) per pass. */
#include "norm.h"
#include "norm_reduce_util.cuh"

namespace {

using nr::from_f;
using nr::load_vec;
using nr::store_vec;
using nr::to_f;

/* s = x (+ skip + bias) for the V elements at column j of a row */
template <typename T, int V, bool SKIP>
__device__ __forceinline__ void ln_load(const kiln_cuda_ln_args &a, int64_t row, int64_t j,
                                        float (&s)[V]) {
    load_vec<T, V>((const T *)a.x + row * a.n + j, s);
    if (SKIP) {
        float k[V];
        load_vec<T, V>((const T *)a.skip + (row % a.skip_rows) * a.n + j, k);
#pragma unroll
        for (int i = 0; i < V; i++) s[i] += k[i];
        if (a.bias) {
            load_vec<T, V>((const T *)a.bias + j, k);
#pragma unroll
            for (int i = 0; i < V; i++) s[i] += k[i];
        }
    }
}

/* y = (s - mean) * inv * gamma + beta for the V elements at column j */
template <typename T, int V>
__device__ __forceinline__ void ln_store(const kiln_cuda_ln_args &a, int64_t row, int64_t j,
                                         const float (&s)[V], float mean, float inv) {
    float o[V], g[V], b[V];
#pragma unroll
    for (int i = 0; i < V; i++) {
        g[i] = 1.0f;
        b[i] = 0.0f;
    }
    if (a.gamma) load_vec<T, V>((const T *)a.gamma + row * a.gamma_row_stride + j, g);
    if (a.beta) load_vec<T, V>((const T *)a.beta + row * a.beta_row_stride + j, b);
#pragma unroll
    for (int i = 0; i < V; i++) o[i] = (s[i] - mean) * inv * g[i] + b[i];
    store_vec<T, V>((T *)a.y + row * a.n + j, o);
}

__device__ __forceinline__ void ln_stats_out(const kiln_cuda_ln_args &a, int64_t row, float mean,
                                             float inv) {
    if (a.mean) a.mean[row] = mean;
    if (a.inv) a.inv[row] = inv;
}

/* One warp per row, the row in registers: lane l holds vectors l, l + 32, ... (K of them). */
template <typename T, int V, int K, bool SKIP>
__global__ void ln_warp_kernel(const kiln_cuda_ln_args a) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= a.rows) return; /* the whole warp leaves together */
    const int64_t n = a.n;
    float s[K][V];
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int64_t j = ((int64_t)k * 32 + lane) * V;
        if (j < n) {
            ln_load<T, V, SKIP>(a, row, j, s[k]);
            if (SKIP && a.sum) store_vec<T, V>((T *)a.sum + row * n + j, s[k]);
#pragma unroll
            for (int i = 0; i < V; i++) sum += s[k][i];
        } else {
#pragma unroll
            for (int i = 0; i < V; i++) s[k][i] = 0.0f;
        }
    }
    float mean = 0.0f;
    if (!a.simplified) mean = nr::warp_all<nr::SumF>(sum) / (float)n;
    float sq = 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int64_t j = ((int64_t)k * 32 + lane) * V;
        if (j < n) {
#pragma unroll
            for (int i = 0; i < V; i++) {
                float d = s[k][i] - mean;
                sq += d * d;
            }
        }
    }
    const float var = nr::warp_all<nr::SumF>(sq) / (float)n;
    const float inv = 1.0f / sqrtf(var + a.eps);
    if (a.y) {
#pragma unroll
        for (int k = 0; k < K; k++) {
            const int64_t j = ((int64_t)k * 32 + lane) * V;
            if (j < n) ln_store<T, V>(a, row, j, s[k], mean, inv);
        }
    }
    if (lane == 0) ln_stats_out(a, row, mean, inv);
}

/* One block per row. CACHE: the float32 row is kept in dynamic shared memory (n floats);
 * otherwise each pass reads x (and skip, bias) again. */
template <typename T, int V, bool SKIP, bool CACHE>
__global__ void ln_block_kernel(const kiln_cuda_ln_args a) {
    extern __shared__ float cache[];
    __shared__ float red[32];
    const int64_t row = blockIdx.x, n = a.n, nv = n / V;
    float sum = 0.0f;
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
        float s[V];
        ln_load<T, V, SKIP>(a, row, v * V, s);
        if (SKIP && a.sum) store_vec<T, V>((T *)a.sum + row * n + v * V, s);
#pragma unroll
        for (int i = 0; i < V; i++) {
            sum += s[i];
            if (CACHE) cache[v * V + i] = s[i];
        }
    }
    float mean = 0.0f;
    if (!a.simplified) mean = nr::block_all<nr::SumF>(sum, 0.0f, red) / (float)n;
    float sq = 0.0f;
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
        float s[V];
        if (CACHE) {
#pragma unroll
            for (int i = 0; i < V; i++) s[i] = cache[v * V + i];
        } else {
            ln_load<T, V, SKIP>(a, row, v * V, s);
        }
#pragma unroll
        for (int i = 0; i < V; i++) {
            float d = s[i] - mean;
            sq += d * d;
        }
    }
    const float var = nr::block_all<nr::SumF>(sq, 0.0f, red) / (float)n;
    const float inv = 1.0f / sqrtf(var + a.eps);
    if (a.y) {
        for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
            float s[V];
            if (CACHE) {
#pragma unroll
                for (int i = 0; i < V; i++) s[i] = cache[v * V + i];
            } else {
                ln_load<T, V, SKIP>(a, row, v * V, s);
            }
            ln_store<T, V>(a, row, v * V, s, mean, inv);
        }
    }
    if (threadIdx.x == 0) ln_stats_out(a, row, mean, inv);
}

constexpr int kWarpRowsPerBlock = 4;
constexpr int64_t kWarpRowMax = 1024;                          /* longest row one warp takes */
constexpr size_t kCacheBytes = 48 * 1024 - 256;               /* static smem stays under 48 KB */

template <typename T, int V, int K, bool SKIP>
kiln_status launch_warp(cudaStream_t st, const kiln_cuda_ln_args &a) {
    const int64_t blocks = nr::ceil_div(a.rows, kWarpRowsPerBlock);
    if (blocks > 0x7fffffffLL)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "layer norm: %lld rows exceed the grid",
                              (long long)a.rows);
    ln_warp_kernel<T, V, K, SKIP><<<(unsigned)blocks, 32 * kWarpRowsPerBlock, 0, st>>>(a);
    return kiln_cuda_check(cudaGetLastError(), "layer norm (warp rows)");
}

/* Picks K (vectors per lane) as the smallest power of two covering the row (n <= 1024, so K is
 * at most 32 / 8 / 4 for V = 1 / 4 / 8). */
template <typename T, int V, bool SKIP>
kiln_status dispatch_warp(cudaStream_t st, const kiln_cuda_ln_args &a) {
    const int64_t per_lane = nr::ceil_div(a.n, 32 * V);
    if (per_lane <= 1) return launch_warp<T, V, 1, SKIP>(st, a);
    if (per_lane <= 2) return launch_warp<T, V, 2, SKIP>(st, a);
    if (per_lane <= 4) return launch_warp<T, V, 4, SKIP>(st, a);
    if constexpr (V <= 4) {
        if (per_lane <= 8) return launch_warp<T, V, 8, SKIP>(st, a);
    }
    if constexpr (V == 1) {
        if (per_lane <= 16) return launch_warp<T, V, 16, SKIP>(st, a);
        if (per_lane <= 32) return launch_warp<T, V, 32, SKIP>(st, a);
    }
    return kiln_cuda_fail(KILN_ERR_RUNTIME, "layer norm: row of %lld is too long for one warp",
                          (long long)a.n);
}

template <typename T, int V, bool SKIP>
kiln_status launch_block(cudaStream_t st, const kiln_cuda_ln_args &a) {
    const int64_t nv = a.n / V;
    const int threads = nv >= 4096 ? 1024 : nv >= 1024 ? 512 : 256;
    const size_t smem = (size_t)a.n * sizeof(float);
    if (a.rows > 0x7fffffffLL)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "layer norm: %lld rows exceed the grid",
                              (long long)a.rows);
    if (smem <= kCacheBytes)
        ln_block_kernel<T, V, SKIP, true><<<(unsigned)a.rows, threads, smem, st>>>(a);
    else
        ln_block_kernel<T, V, SKIP, false><<<(unsigned)a.rows, threads, 0, st>>>(a);
    return kiln_cuda_check(cudaGetLastError(), "layer norm (block rows)");
}

template <typename T, int V, bool SKIP>
kiln_status dispatch_rows(cudaStream_t st, const kiln_cuda_ln_args &a) {
    if (a.n <= kWarpRowMax) return dispatch_warp<T, V, SKIP>(st, a);
    return launch_block<T, V, SKIP>(st, a);
}

/* 16-byte vectors need the row length to be a multiple of V and every pointer aligned. */
template <typename T> bool can_vectorise(const kiln_cuda_ln_args &a) {
    const int V = nr::VecWidth<T>::value, bytes = 16;
    if (a.n % V) return false;
    const void *ptrs[] = {a.x, a.skip, a.bias, a.gamma, a.beta, a.y, a.sum};
    for (const void *p : ptrs)
        if (p && !nr::aligned(p, bytes)) return false;
    return true;
}

template <typename T> kiln_status dispatch_type(cudaStream_t st, const kiln_cuda_ln_args &a) {
    constexpr int V = nr::VecWidth<T>::value;
    const bool vec = can_vectorise<T>(a), skip = a.skip != nullptr;
    if (vec && skip) return dispatch_rows<T, V, true>(st, a);
    if (vec) return dispatch_rows<T, V, false>(st, a);
    if (skip) return dispatch_rows<T, 1, true>(st, a);
    return dispatch_rows<T, 1, false>(st, a);
}

} // namespace

extern "C" kiln_status kiln_cuda_layer_norm(void *stream, const kiln_cuda_ln_args *a) {
    if (a->rows <= 0 || a->n <= 0) return KILN_OK;
    if (a->skip && a->skip_rows <= 0)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "layer norm: skip has no rows");
    cudaStream_t st = (cudaStream_t)stream;
    NR_FLOAT_SWITCH(a->dtype, T, "layer norm", return dispatch_type<T>(st, *a));
    return KILN_OK;
}
