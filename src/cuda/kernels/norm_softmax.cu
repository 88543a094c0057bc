/* Softmax, LogSoftmax and Hardmax on the GPU over x viewed as [outer, n, inner], along n (the
 * caller folds opset < 13's 2-D coercion into this view with inner = 1).
 *
 * Contiguous rows (inner == 1), the transformer case: rows of up to 1024 elements take one warp
 * each in registers; longer rows one block, which keeps a running (max, sum of exp) per thread,
 * combines them, and writes in a second pass (over a float32 copy in shared memory when the row
 * fits in 48 KB). Strided rows (inner > 1) take one thread per column, so neighbouring threads
 * read neighbouring addresses. Arithmetic is float32 with expf / logf, as on the CPU:
 * softmax = exp(x - max) * (1 / sum), log-softmax = (x - max) - log(sum). A row of -inf gives NaN
 * (as on the CPU). Hardmax puts 1 at the first maximum (a NaN at the row's start wins, other NaNs
 * are skipped, like the CPU loop). */
#include "norm.h"
#include "norm_reduce_util.cuh"

namespace {

using nr::from_f;
using nr::load_vec;
using nr::store_vec;
using nr::to_f;

/* running maximum and sum of exp(x - max) */
struct MaxSum {
    float m, s;
};

struct MergeMaxSum {
    __device__ static MaxSum merge(MaxSum a, MaxSum b) {
        if (a.m == -INFINITY) return b;
        if (b.m == -INFINITY) return a;
        MaxSum r;
        r.m = fmaxf(a.m, b.m);
        r.s = a.s * expf(a.m - r.m) + b.s * expf(b.m - r.m);
        return r;
    }
};

/* -inf elements add nothing (and would give NaN as exp(-inf - -inf)) */
__device__ __forceinline__ void maxsum_add(MaxSum &a, float x) {
    if (x > a.m) {
        a.s = a.s * expf(a.m - x) + 1.0f;
        a.m = x;
    } else if (x != -INFINITY) {
        a.s += expf(x - a.m);
    }
}

template <int KIND> __device__ __forceinline__ float sm_out(float x, float m, float scale) {
    /* scale: 1 / sum for softmax, log(sum) for log-softmax */
    if (KIND == KILN_CUDA_SOFTMAX) return expf(x - m) * scale;
    return (x - m) - scale;
}

template <int KIND> __device__ __forceinline__ float sm_scale(float sum) {
    return KIND == KILN_CUDA_SOFTMAX ? 1.0f / sum : logf(sum);
}

/* One warp per row of n <= 32 * V * K elements, in registers. */
template <typename T, int V, int K, int KIND>
__global__ void sm_warp_kernel(const T *__restrict__ x, T *__restrict__ y, int64_t rows, int64_t n) {
    const int lane = threadIdx.x & 31;
    const int64_t row = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (row >= rows) return;
    x += row * n;
    y += row * n;
    float v[K][V];
    float m = -INFINITY;
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int64_t j = ((int64_t)k * 32 + lane) * V;
        if (j < n) {
            load_vec<T, V>(x + j, v[k]);
#pragma unroll
            for (int i = 0; i < V; i++) m = fmaxf(m, v[k][i]);
        }
    }
    m = nr::warp_all<nr::MaxF>(m);
    float sum = 0.0f;
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int64_t j = ((int64_t)k * 32 + lane) * V;
        if (j < n) {
#pragma unroll
            for (int i = 0; i < V; i++) sum += expf(v[k][i] - m);
        }
    }
    const float scale = sm_scale<KIND>(nr::warp_all<nr::SumF>(sum));
#pragma unroll
    for (int k = 0; k < K; k++) {
        const int64_t j = ((int64_t)k * 32 + lane) * V;
        if (j < n) {
            float o[V];
#pragma unroll
            for (int i = 0; i < V; i++) o[i] = sm_out<KIND>(v[k][i], m, scale);
            store_vec<T, V>(y + j, o);
        }
    }
}

/* One block per row; CACHE keeps the float32 row in dynamic shared memory. */
template <typename T, int V, int KIND, bool CACHE>
__global__ void sm_block_kernel(const T *__restrict__ x, T *__restrict__ y, int64_t n) {
    extern __shared__ float cache[];
    __shared__ MaxSum red[32];
    const int64_t row = blockIdx.x, nv = n / V;
    x += row * n;
    y += row * n;
    MaxSum acc = {-INFINITY, 0.0f};
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
        float s[V];
        load_vec<T, V>(x + v * V, s);
#pragma unroll
        for (int i = 0; i < V; i++) {
            maxsum_add(acc, s[i]);
            if (CACHE) cache[v * V + i] = s[i];
        }
    }
    const MaxSum all = nr::block_all<MergeMaxSum>(acc, MaxSum{-INFINITY, 0.0f}, red);
    const float scale = sm_scale<KIND>(all.s);
    for (int64_t v = threadIdx.x; v < nv; v += blockDim.x) {
        float s[V], o[V];
        if (CACHE) {
#pragma unroll
            for (int i = 0; i < V; i++) s[i] = cache[v * V + i];
        } else {
            load_vec<T, V>(x + v * V, s);
        }
#pragma unroll
        for (int i = 0; i < V; i++) o[i] = sm_out<KIND>(s[i], all.m, scale);
        store_vec<T, V>(y + v * V, o);
    }
}

/* One thread per (outer, inner) column of a [outer, n, inner] tensor. */
template <typename T, int KIND>
__global__ void sm_column_kernel(const T *__restrict__ x, T *__restrict__ y, int64_t outer,
                                 int64_t n, int64_t inner) {
    const int64_t cols = outer * inner;
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols;
         c += (int64_t)gridDim.x * blockDim.x) {
        const int64_t o = c / inner, j = c - o * inner, base = o * n * inner + j;
        if (KIND == KILN_CUDA_HARDMAX) {
            float best = to_f<T>(x[base]);
            int64_t bi = 0;
            for (int64_t k = 1; k < n; k++) {
                const float v = to_f<T>(x[base + k * inner]);
                if (v > best) {
                    best = v;
                    bi = k;
                }
            }
            for (int64_t k = 0; k < n; k++) y[base + k * inner] = from_f<T>(k == bi ? 1.0f : 0.0f);
            continue;
        }
        MaxSum acc = {-INFINITY, 0.0f};
        for (int64_t k = 0; k < n; k++) maxsum_add(acc, to_f<T>(x[base + k * inner]));
        const float scale = sm_scale<KIND>(acc.s);
        for (int64_t k = 0; k < n; k++)
            y[base + k * inner] = from_f<T>(sm_out<KIND>(to_f<T>(x[base + k * inner]), acc.m, scale));
    }
}

/* Hardmax of contiguous rows: one block per row finds the maximum, then writes the row. */
template <typename T>
__global__ void hardmax_row_kernel(const T *__restrict__ x, T *__restrict__ y, int64_t n) {
    typedef nr::ArgAcc<float> A;
    typedef nr::ArgMerge<float, false, false> M;
    __shared__ A red[32];
    const int64_t row = blockIdx.x;
    x += row * n;
    y += row * n;
    A acc = nr::arg_empty<float>();
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) acc = M::merge(acc, nr::arg_leaf(to_f<T>(x[j]), j));
    const A best = nr::block_all<M>(acc, nr::arg_empty<float>(), red);
    for (int64_t j = threadIdx.x; j < n; j += blockDim.x) y[j] = from_f<T>(j == best.i ? 1.0f : 0.0f);
}

constexpr int kWarpRowsPerBlock = 4;
constexpr int64_t kWarpRowMax = 1024;
constexpr size_t kCacheBytes = 48 * 1024 - 512;

template <typename T, int V, int K, int KIND>
kiln_status launch_warp(cudaStream_t st, const T *x, T *y, int64_t rows, int64_t n) {
    const int64_t blocks = nr::ceil_div(rows, kWarpRowsPerBlock);
    sm_warp_kernel<T, V, K, KIND><<<(unsigned)blocks, 32 * kWarpRowsPerBlock, 0, st>>>(x, y, rows, n);
    return kiln_cuda_check(cudaGetLastError(), "softmax (warp rows)");
}

template <typename T, int V, int KIND>
kiln_status dispatch_warp(cudaStream_t st, const T *x, T *y, int64_t rows, int64_t n) {
    const int64_t per_lane = nr::ceil_div(n, 32 * V);
    if (per_lane <= 1) return launch_warp<T, V, 1, KIND>(st, x, y, rows, n);
    if (per_lane <= 2) return launch_warp<T, V, 2, KIND>(st, x, y, rows, n);
    if (per_lane <= 4) return launch_warp<T, V, 4, KIND>(st, x, y, rows, n);
    if constexpr (V <= 4) {
        if (per_lane <= 8) return launch_warp<T, V, 8, KIND>(st, x, y, rows, n);
    }
    if constexpr (V == 1) {
        if (per_lane <= 16) return launch_warp<T, V, 16, KIND>(st, x, y, rows, n);
        if (per_lane <= 32) return launch_warp<T, V, 32, KIND>(st, x, y, rows, n);
    }
    return kiln_cuda_fail(KILN_ERR_RUNTIME, "softmax: row of %lld is too long for one warp",
                          (long long)n);
}

template <typename T, int V, int KIND>
kiln_status launch_rows(cudaStream_t st, const T *x, T *y, int64_t rows, int64_t n) {
    if (n <= kWarpRowMax) return dispatch_warp<T, V, KIND>(st, x, y, rows, n);
    const int64_t nv = n / V;
    const int threads = nv >= 4096 ? 1024 : nv >= 1024 ? 512 : 256;
    const size_t smem = (size_t)n * sizeof(float);
    if (smem <= kCacheBytes)
        sm_block_kernel<T, V, KIND, true><<<(unsigned)rows, threads, smem, st>>>(x, y, n);
    else
        sm_block_kernel<T, V, KIND, false><<<(unsigned)rows, threads, 0, st>>>(x, y, n);
    return kiln_cuda_check(cudaGetLastError(), "softmax (block rows)");
}

template <typename T, int KIND>
kiln_status launch_kind(cudaStream_t st, const T *x, T *y, int64_t outer, int64_t n, int64_t inner) {
    if (inner == 1 && KIND != KILN_CUDA_HARDMAX) {
        constexpr int V = nr::VecWidth<T>::value;
        if (n % V == 0 && nr::aligned(x, 16) && nr::aligned(y, 16))
            return launch_rows<T, V, KIND>(st, x, y, outer, n);
        return launch_rows<T, 1, KIND>(st, x, y, outer, n);
    }
    if (inner == 1) {
        hardmax_row_kernel<T><<<(unsigned)outer, n >= 1024 ? 256 : 128, 0, st>>>(x, y, n);
        return kiln_cuda_check(cudaGetLastError(), "hardmax (rows)");
    }
    const int threads = 256;
    const int64_t blocks = nr::ceil_div(outer * inner, threads);
    const unsigned grid = (unsigned)(blocks < 65536 * 16 ? blocks : 65536 * 16);
    sm_column_kernel<T, KIND><<<grid, threads, 0, st>>>(x, y, outer, n, inner);
    return kiln_cuda_check(cudaGetLastError(), "softmax (columns)");
}

template <typename T>
kiln_status launch_type(cudaStream_t st, int kind, const void *x, void *y, int64_t outer, int64_t n,
                        int64_t inner) {
    const T *xt = (const T *)x;
    T *yt = (T *)y;
    switch (kind) {
    case KILN_CUDA_SOFTMAX: return launch_kind<T, KILN_CUDA_SOFTMAX>(st, xt, yt, outer, n, inner);
    case KILN_CUDA_LOG_SOFTMAX: return launch_kind<T, KILN_CUDA_LOG_SOFTMAX>(st, xt, yt, outer, n, inner);
    case KILN_CUDA_HARDMAX: return launch_kind<T, KILN_CUDA_HARDMAX>(st, xt, yt, outer, n, inner);
    default: return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "softmax: unknown kind %d", kind);
    }
}

} // namespace

extern "C" kiln_status kiln_cuda_softmax(void *stream, int kind, int dtype, const void *x, void *y,
                                         int64_t outer, int64_t n, int64_t inner) {
    if (outer <= 0 || n <= 0 || inner <= 0) return KILN_OK;
    if (inner == 1 && outer > 0x7fffffffLL)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "softmax: %lld rows exceed the grid",
                              (long long)outer);
    cudaStream_t st = (cudaStream_t)stream;
    NR_FLOAT_SWITCH(dtype, T, "softmax", return launch_type<T>(st, kind, x, y, outer, n, inner));
    return KILN_OK;
}
