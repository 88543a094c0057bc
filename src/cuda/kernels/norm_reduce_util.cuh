/* Device helpers shared by the norm and reduce kernel families (norm*.cu, reduce.cu): element
 * conversions to and from float32, 16-byte vector loads, warp and block combines of any
 * accumulator type, and the dtype dispatch the launchers use. Header-only: everything here is a
 * template or inline, so each .cu file gets its own copy. */
#ifndef KILN_CUDA_NORM_REDUCE_UTIL_CUH
#define KILN_CUDA_NORM_REDUCE_UTIL_CUH

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

#include "../cuda_provider.h"

namespace nr {

/* ---- element conversions ---- */

template <typename T> __device__ __forceinline__ float to_f(T v) { return (float)v; }
template <> __device__ __forceinline__ float to_f<__half>(__half v) { return __half2float(v); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 v) {
    return __bfloat162float(v);
}

template <typename T> __device__ __forceinline__ T from_f(float v) { return (T)v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) {
    return __float2bfloat16_rn(v);
}

/* Reads element i of a float32/float16/bfloat16 buffer whose type is only known at run time
 * (parameters that ONNX lets differ from X's type). */
__device__ __forceinline__ float load_any(const void *p, int dtype, int64_t i) {
    if (dtype == KILN_DTYPE_FLOAT16) return __half2float(((const __half *)p)[i]);
    if (dtype == KILN_DTYPE_BFLOAT16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return ((const float *)p)[i];
}

/* ---- vectors of V elements (16 bytes for the vector paths, V = 1 for the scalar ones) ---- */

template <typename T, int V> struct alignas(sizeof(T) * V) Pack {
    T v[V];
};

/* p must be aligned to V elements when V > 1 */
template <typename T, int V> __device__ __forceinline__ void load_vec(const T *p, float (&out)[V]) {
    Pack<T, V> pk = *reinterpret_cast<const Pack<T, V> *>(p);
#pragma unroll
    for (int i = 0; i < V; i++) out[i] = to_f<T>(pk.v[i]);
}

template <typename T, int V> __device__ __forceinline__ void store_vec(T *p, const float (&in)[V]) {
    Pack<T, V> pk;
#pragma unroll
    for (int i = 0; i < V; i++) pk.v[i] = from_f<T>(in[i]);
    *reinterpret_cast<Pack<T, V> *>(p) = pk;
}

/* elements per 16-byte vector */
template <typename T> struct VecWidth {
    static constexpr int value = 16 / (int)sizeof(T);
};

/* ---- warp / block combines ---- */

/* __shfl_xor_sync of any plain struct made of 4-byte words */
template <typename A> __device__ __forceinline__ A shfl_xor_any(A v, int mask) {
    static_assert(sizeof(A) % 4 == 0, "accumulators are made of 4-byte words");
    union U {
        A a;
        int w[sizeof(A) / 4];
        __device__ U() {}
    } u;
    u.a = v;
#pragma unroll
    for (int i = 0; i < (int)(sizeof(A) / 4); i++) u.w[i] = __shfl_xor_sync(0xffffffffu, u.w[i], mask);
    return u.a;
}

struct SumF {
    __device__ static float merge(float a, float b) { return a + b; }
};
struct MaxF {
    __device__ static float merge(float a, float b) { return fmaxf(a, b); }
};

/* All 32 lanes must call; every lane gets the combined value. */
template <typename Op, typename A> __device__ __forceinline__ A warp_all(A a) {
#pragma unroll
    for (int m = 16; m > 0; m >>= 1) a = Op::merge(a, shfl_xor_any(a, m));
    return a;
}

/* Every thread of the block must call (blockDim.x a multiple of 32, at most 1024); every thread
 * gets the combined value. `identity` fills the missing warps. smem: 32 accumulators. */
template <typename Op, typename A>
__device__ __forceinline__ A block_all(A a, A identity, A *smem) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    a = warp_all<Op>(a);
    __syncthreads(); /* smem may still be read from an earlier call */
    if (lane == 0) smem[warp] = a;
    __syncthreads();
    a = lane < nw ? smem[lane] : identity;
    return warp_all<Op>(a);
}

/* Mean and sum of squared deviations of a set of values (Chan et al.'s parallel combine). */
struct Moments {
    float n, mean, m2;
};
struct MergeMoments {
    __device__ static Moments merge(Moments a, Moments b) {
        float n = a.n + b.n;
        if (n == 0.0f) return a;
        float d = b.mean - a.mean, fb = b.n / n;
        Moments r;
        r.n = n;
        r.mean = a.mean + d * fb;
        r.m2 = a.m2 + b.m2 + d * d * a.n * fb;
        return r;
    }
};

/* Arg-extreme accumulator (ArgMax / ArgMin / Hardmax) with the CPU's sequential semantics:
 * the first (LAST: the last) index of the largest (IS_MIN: smallest) value, where NaN elements
 * are skipped except a NaN at index 0, which wins outright (the CPU loop starts from element 0 and
 * nothing compares greater than NaN). c: -1 empty, 0 NaN elsewhere, 1 a number, 2 NaN at 0. */
template <typename V> struct ArgAcc {
    V v;
    long long i;
    int c, pad;
};

template <typename V> __device__ __forceinline__ ArgAcc<V> arg_leaf(V v, long long i) {
    ArgAcc<V> a;
    a.v = v;
    a.i = i;
    a.c = v != v ? (i == 0 ? 2 : 0) : 1;
    a.pad = 0;
    return a;
}

template <typename V> __device__ __forceinline__ ArgAcc<V> arg_empty() {
    ArgAcc<V> a;
    a.v = V(0);
    a.i = 0;
    a.c = -1;
    a.pad = 0;
    return a;
}

template <typename V, bool IS_MIN, bool LAST> struct ArgMerge {
    __device__ static ArgAcc<V> merge(ArgAcc<V> a, ArgAcc<V> b) {
        if (a.c != b.c) return a.c > b.c ? a : b;
        if (a.c == 1) {
            if (IS_MIN ? a.v < b.v : a.v > b.v) return a;
            if (IS_MIN ? b.v < a.v : b.v > a.v) return b;
        }
        return (LAST ? a.i > b.i : a.i < b.i) ? a : b;
    }
};

__host__ __device__ inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* 1 when p is aligned to `bytes` */
__host__ __device__ inline bool aligned(const void *p, int bytes) {
    return ((uintptr_t)p & (uintptr_t)(bytes - 1)) == 0;
}

} // namespace nr

/* Runs BODY with T bound to the device type of a float dtype; other dtypes fail. Used inside
 * launchers returning kiln_status. */
#define NR_FLOAT_SWITCH(dtype, T, what, ...)                                                        \
    switch (dtype) {                                                                                \
    case KILN_DTYPE_FLOAT: {                                                                        \
        typedef float T;                                                                            \
        __VA_ARGS__;                                                                                \
        break;                                                                                      \
    }                                                                                               \
    case KILN_DTYPE_FLOAT16: {                                                                      \
        typedef __half T;                                                                           \
        __VA_ARGS__;                                                                                \
        break;                                                                                      \
    }                                                                                               \
    case KILN_DTYPE_BFLOAT16: {                                                                     \
        typedef __nv_bfloat16 T;                                                                    \
        __VA_ARGS__;                                                                                \
        break;                                                                                      \
    }                                                                                               \
    default:                                                                                        \
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "%s: element type %d is not supported",     \
                              what, (int)(dtype));                                                  \
    }

#endif
