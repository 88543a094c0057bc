// Device kernels of the CUDA conv family: the convolution epilogue (bias, residual, activation),
// the window copy that pads or crops around cuDNN's symmetric padding, and pooling.
//
// All arithmetic is in float32 (double for the global average's sum, which can span millions of
// values); half types are converted on load and rounded once on store, as the CPU kernels do.
// Every kernel is a grid-stride loop over 64-bit positions (outputs can exceed 2^31 elements); the
// index arithmetic inside is 32-bit where the tensors allow, since 64-bit division is slow on the
// GPU. Planes move as 16-byte vectors where their size and alignment allow.
#include "conv.h"
#include "../cuda_provider.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <type_traits>

namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1 << 20; // grid-stride loops cover the rest

int64_t blocks_for(int64_t n, int threads) {
    int64_t b = (n + threads - 1) / threads;
    return b < 1 ? 1 : b > kMaxBlocks ? kMaxBlocks : b;
}

// Element traits: Acc is what a value is computed in (float for float types, int for the int8 /
// uint8 that MaxPool takes); load and store convert, store rounding to nearest even.
template <typename T> struct Num;
template <> struct Num<float> {
    using Acc = float;
    static __device__ __forceinline__ float load(float v) { return v; }
    static __device__ __forceinline__ float store(float v) { return v; }
};
template <> struct Num<__half> {
    using Acc = float;
    static __device__ __forceinline__ float load(__half v) { return __half2float(v); }
    static __device__ __forceinline__ __half store(float v) { return __float2half_rn(v); }
};
template <> struct Num<__nv_bfloat16> {
    using Acc = float;
    static __device__ __forceinline__ float load(__nv_bfloat16 v) { return __bfloat162float(v); }
    static __device__ __forceinline__ __nv_bfloat16 store(float v) { return __float2bfloat16_rn(v); }
};
template <> struct Num<int8_t> {
    using Acc = int;
    static __device__ __forceinline__ int load(int8_t v) { return v; }
    static __device__ __forceinline__ int8_t store(int v) { return (int8_t)v; }
};
template <> struct Num<uint8_t> {
    using Acc = int;
    static __device__ __forceinline__ int load(uint8_t v) { return v; }
    static __device__ __forceinline__ uint8_t store(int v) { return (uint8_t)v; }
};

// The same comparisons as the CPU's kconv_apply_act, so NaN propagates the same way.
__device__ __forceinline__ float activate(int act, float v, float a, float b) {
    switch (act) {
    case KILN_CUDA_ACT_RELU: return v < 0.0f ? 0.0f : v;
    case KILN_CUDA_ACT_TANH: return tanhf(v);
    case KILN_CUDA_ACT_SIGMOID: return 1.0f / (1.0f + expf(-v));
    case KILN_CUDA_ACT_LEAKY: return v >= 0.0f ? v : a * v;
    case KILN_CUDA_ACT_CLIP: return v < a ? a : v > b ? b : v;
    case KILN_CUDA_ACT_HSIGMOID: {
        float t = a * v + b;
        return t < 0.0f ? 0.0f : t > 1.0f ? 1.0f : t;
    }
    case KILN_CUDA_ACT_HSWISH: {
        float t = v * (1.0f / 6) + 0.5f;
        return v * (t < 0.0f ? 0.0f : t > 1.0f ? 1.0f : t);
    }
    default: return v;
    }
}

// ---- vector access ----

// VEC elements moved as one 16-byte access (VEC = 1: plain scalar access).
template <typename T, int VEC> struct alignas(sizeof(T) * VEC) Vec {
    T e[VEC];
};

template <typename T, int VEC> __device__ __forceinline__ Vec<T, VEC> load_vec(const T *p) {
    return *reinterpret_cast<const Vec<T, VEC> *>(p);
}

template <typename T, int VEC> __device__ __forceinline__ void store_vec(T *p, const Vec<T, VEC> &v) {
    *reinterpret_cast<Vec<T, VEC> *>(p) = v;
}

// 16-byte vectors apply when every plane starts on a 16-byte boundary.
bool vec_ok(int64_t plane_size, size_t elem, const void *a, const void *b) {
    const int64_t vec = 16 / (int64_t)elem;
    return plane_size % vec == 0 && (uintptr_t)a % 16 == 0 && (uintptr_t)b % 16 == 0;
}

// ---- epilogue ----

// threadIdx.y / blockIdx.y pick the plane (so the bias is read once per plane, with no division
// per element); threadIdx.x / blockIdx.x walk along it in VEC-element vectors. Small planes get
// several per block.
template <typename T, int VEC>
__global__ void epilogue_kernel(T *y, const T *bias, const T *z, int64_t planes, int64_t channels,
                                int64_t plane_size, int act, float a, float b) {
    const int64_t pstep = (int64_t)gridDim.y * blockDim.y, step = (int64_t)gridDim.x * blockDim.x;
    const int64_t nvec = plane_size / VEC;
    for (int64_t p = (int64_t)blockIdx.y * blockDim.y + threadIdx.y; p < planes; p += pstep) {
        const float bv = bias ? Num<T>::load(bias[p % channels]) : 0.0f;
        T *yp = y + p * plane_size;
        const T *zp = z ? z + p * plane_size : nullptr;
        for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < nvec; i += step) {
            Vec<T, VEC> v = load_vec<T, VEC>(yp + i * VEC), r;
            if (zp) r = load_vec<T, VEC>(zp + i * VEC);
#pragma unroll
            for (int j = 0; j < VEC; j++) {
                float f = Num<T>::load(v.e[j]) + bv;
                if (zp) f += Num<T>::load(r.e[j]);
                v.e[j] = Num<T>::store(activate(act, f, a, b));
            }
            store_vec<T, VEC>(yp + i * VEC, v);
        }
    }
}

// ---- window copy ----

struct Dims3 {
    int64_t d[3];
};

// I: the index type, 32-bit whenever both tensors are under 2^31 elements (64-bit division is
// many times slower than 32-bit on the GPU).
template <typename T, typename I>
__global__ void shift_copy_kernel(const T *src, T *dst, int64_t total, Dims3 sd64, Dims3 dd64, Dims3 sh64) {
    const I s0 = (I)sd64.d[0], s1 = (I)sd64.d[1], s2 = (I)sd64.d[2];
    const I d0 = (I)dd64.d[0], d1 = (I)dd64.d[1], d2 = (I)dd64.d[2];
    const I h0 = (I)sh64.d[0], h1 = (I)sh64.d[1], h2 = (I)sh64.d[2];
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total; i += step) {
        I r = (I)i;
        const I o2 = r % d2;
        r /= d2;
        const I o1 = r % d1;
        r /= d1;
        const I o0 = r % d0, q = r / d0;
        const I i0 = o0 - h0, i1 = o1 - h1, i2 = o2 - h2;
        const bool in = i0 >= 0 && i0 < s0 && i1 >= 0 && i1 < s1 && i2 >= 0 && i2 < s2;
        dst[i] = in ? src[((q * s0 + i0) * s1 + i1) * s2 + i2] : T(0);
    }
}

// ---- pooling ----

// Valid taps [lo, hi) of one dim for the window starting at `start`, and the taps inside the
// padded extent (count_include_pad): the closed forms of the CPU's dim_ranges loop.
template <typename I> struct Taps {
    I lo, hi, padded;
};

template <typename I> __device__ __forceinline__ I clamp_taps(I v, I k) { return v < 0 ? 0 : v > k ? k : v; }

// taps t with start + t * dil < bound (bound > start)
template <typename I> __device__ __forceinline__ I taps_below(I bound, I start, I dil) {
    return dil == 1 ? bound - start : (bound - start + dil - 1) / dil;
}

template <typename I> __device__ __forceinline__ Taps<I> taps(I start, I in, I pad_e, I k, I dil) {
    Taps<I> t;
    t.lo = start < 0 ? clamp_taps<I>(taps_below<I>(0, start, dil), k) : 0;
    t.hi = start < in ? clamp_taps<I>(taps_below<I>(in, start, dil), k) : 0;
    if (t.hi < t.lo) t.hi = t.lo;
    t.padded = start < in + pad_e ? clamp_taps<I>(taps_below<I>(in + pad_e, start, dil), k) : 0;
    return t;
}

// One thread per output. I: the index type, 32-bit when the input and output fit (the common
// case), which makes the index arithmetic several times cheaper.
template <typename T, typename I>
__global__ void pool_kernel(const T *x, T *y, int64_t *indices, kiln_cuda_pool_geom g, int64_t total) {
    using Acc = typename Num<T>::Acc;
    const I D = (I)g.in[0], H = (I)g.in[1], W = (I)g.in[2], in_size = D * H * W;
    const I O0 = (I)g.out[0], O1 = (I)g.out[1], O2 = (I)g.out[2];
    const I k0 = (I)g.k[0], k1 = (I)g.k[1], k2 = (I)g.k[2];
    const I s0 = (I)g.stride[0], s1 = (I)g.stride[1], s2 = (I)g.stride[2];
    const I dl0 = (I)g.dil[0], dl1 = (I)g.dil[1], dl2 = (I)g.dil[2];
    const int64_t step = (int64_t)gridDim.x * blockDim.x;
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < total; o += step) {
        I r = (I)o;
        const I ow = r % O2;
        r /= O2;
        const I oh = r % O1;
        r /= O1;
        const I od = r % O0, q = r / O0;
        const I d0 = od * s0 - (I)g.pad_b[0], h0 = oh * s1 - (I)g.pad_b[1], w0 = ow * s2 - (I)g.pad_b[2];
        const Taps<I> td = taps<I>(d0, D, (I)g.pad_e[0], k0, dl0);
        const Taps<I> th = taps<I>(h0, H, (I)g.pad_e[1], k1, dl1);
        const Taps<I> tw = taps<I>(w0, W, (I)g.pad_e[2], k2, dl2);
        const T *xp = x + q * in_size;
        if (g.is_max) {
            Acc best = 0;
            I bd = -1, bh = 0, bw = 0;
            for (I a = td.lo; a < td.hi; a++) {
                const I id = d0 + a * dl0;
                for (I b = th.lo; b < th.hi; b++) {
                    const I ih = h0 + b * dl1;
                    const T *row = xp + (id * H + ih) * W;
                    for (I c = tw.lo; c < tw.hi; c++) {
                        const I iw = w0 + c * dl2;
                        const Acc v = Num<T>::load(row[iw]);
                        if (bd < 0 || v > best) { // the first tap wins ties and keeps a leading NaN
                            best = v;
                            bd = id;
                            bh = ih;
                            bw = iw;
                        }
                    }
                }
            }
            if (y) y[o] = Num<T>::store(bd < 0 ? Acc(0) : best);
            if (indices) {
                const int64_t base = (int64_t)q * in_size;
                indices[o] = bd < 0 ? -1
                             : g.storage_order ? base + bd + (int64_t)D * (bh + (int64_t)H * bw) // column-major
                                               : base + ((int64_t)bd * H + bh) * W + bw;
            }
            continue;
        }
        if constexpr (!std::is_integral<Acc>::value) {
            // summed in tap order in float32, as the CPU does
            float sum = 0.0f;
            for (I a = td.lo; a < td.hi; a++) {
                const I id = d0 + a * dl0;
                for (I b = th.lo; b < th.hi; b++) {
                    const T *row = xp + (id * H + h0 + b * dl1) * W;
                    for (I c = tw.lo; c < tw.hi; c++) sum += Num<T>::load(row[w0 + c * dl2]);
                }
            }
            const I n = g.count_include_pad ? td.padded * th.padded * tw.padded
                                            : (td.hi - td.lo) * (th.hi - th.lo) * (tw.hi - tw.lo);
            y[o] = Num<T>::store(n > 0 ? sum / (float)n : 0.0f);
        }
    }
}

// ---- global pooling ----

// max that keeps NaN (the CPU stops at the first NaN of a plane)
__device__ __forceinline__ float max_nan(float a, float b) { return a != a ? a : b != b ? b : fmaxf(a, b); }

template <bool kMax> struct GlobalAcc;
template <> struct GlobalAcc<true> {
    using Acc = float;
    static __device__ __forceinline__ float init() { return -INFINITY; }
    static __device__ __forceinline__ float add(float a, float v) { return max_nan(a, v); }
    static __device__ __forceinline__ float shfl(float a, int off) {
        return max_nan(a, __shfl_xor_sync(0xffffffffu, a, off));
    }
    static __device__ __forceinline__ float finish(float a, int64_t) { return a; }
};
template <> struct GlobalAcc<false> {
    using Acc = double; // one plane may hold millions of values
    static __device__ __forceinline__ double init() { return 0.0; }
    static __device__ __forceinline__ double add(double a, float v) { return a + v; }
    static __device__ __forceinline__ double shfl(double a, int off) {
        return a + __shfl_xor_sync(0xffffffffu, a, off);
    }
    static __device__ __forceinline__ float finish(double a, int64_t n) { return (float)(a / (double)n); }
};

template <bool kMax>
__device__ __forceinline__ typename GlobalAcc<kMax>::Acc warp_reduce(typename GlobalAcc<kMax>::Acc a) {
    for (int off = 16; off > 0; off >>= 1) a = GlobalAcc<kMax>::shfl(a, off);
    return a;
}

// This thread's part of one plane: vectors tid, tid + nthreads, ...
template <typename T, bool kMax, int VEC>
__device__ __forceinline__ typename GlobalAcc<kMax>::Acc plane_part(const T *xp, int64_t size, int tid,
                                                                     int nthreads) {
    using G = GlobalAcc<kMax>;
    typename G::Acc a = G::init();
    const int64_t nvec = size / VEC;
#pragma unroll 4
    for (int64_t i = tid; i < nvec; i += nthreads) {
        const Vec<T, VEC> v = load_vec<T, VEC>(xp + i * VEC);
#pragma unroll
        for (int j = 0; j < VEC; j++) a = G::add(a, Num<T>::load(v.e[j]));
    }
    return a;
}

// One warp per plane: the small planes of CNN heads and squeeze-excite blocks (7x7 .. 90x90).
template <typename T, bool kMax, int VEC>
__global__ void global_pool_warp_kernel(const T *x, T *y, int64_t planes, int64_t size) {
    using G = GlobalAcc<kMax>;
    const int lane = threadIdx.x & 31;
    const int64_t nwarps = ((int64_t)gridDim.x * blockDim.x) >> 5;
    for (int64_t p = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) >> 5; p < planes; p += nwarps) {
        typename G::Acc a = warp_reduce<kMax>(plane_part<T, kMax, VEC>(x + p * size, size, lane, 32));
        if (lane == 0) y[p] = Num<T>::store(G::finish(a, size));
    }
}

// One block per plane for large planes.
template <typename T, bool kMax, int VEC>
__global__ void global_pool_block_kernel(const T *x, T *y, int64_t planes, int64_t size) {
    using G = GlobalAcc<kMax>;
    __shared__ typename G::Acc part[kThreads / 32];
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    for (int64_t p = blockIdx.x; p < planes; p += gridDim.x) {
        typename G::Acc a =
            warp_reduce<kMax>(plane_part<T, kMax, VEC>(x + p * size, size, threadIdx.x, blockDim.x));
        if (lane == 0) part[warp] = a;
        __syncthreads();
        if (warp == 0) {
            a = lane < (int)(blockDim.x >> 5) ? part[lane] : G::init();
            a = warp_reduce<kMax>(a);
            if (lane == 0) y[p] = Num<T>::store(G::finish(a, size));
        }
        __syncthreads(); // part[] is reused by the next plane
    }
}

// ---- launchers ----

template <typename T, int VEC>
kiln_status launch_epilogue_vec(cudaStream_t s, void *y, const void *bias, const void *z, int64_t planes,
                                int64_t channels, int64_t plane_size, int act, float a, float b) {
    const int64_t nvec = plane_size / VEC;
    int bx = 32;
    while (bx < kThreads && bx < nvec) bx *= 2;
    dim3 block(bx, kThreads / bx);
    int64_t gx = (nvec + bx - 1) / bx, gy = (planes + block.y - 1) / block.y;
    dim3 grid((unsigned)(gx > 4096 ? 4096 : gx), (unsigned)(gy > 65535 ? 65535 : gy));
    epilogue_kernel<T, VEC><<<grid, block, 0, s>>>((T *)y, (const T *)bias, (const T *)z, planes, channels,
                                                   plane_size, act, a, b);
    return kiln_cuda_check(cudaGetLastError(), "conv epilogue kernel");
}

template <typename T>
kiln_status launch_epilogue(cudaStream_t s, void *y, const void *bias, const void *z, int64_t planes,
                            int64_t channels, int64_t plane_size, int act, float a, float b) {
    if (vec_ok(plane_size, sizeof(T), y, z))
        return launch_epilogue_vec<T, 16 / sizeof(T)>(s, y, bias, z, planes, channels, plane_size, act, a, b);
    return launch_epilogue_vec<T, 1>(s, y, bias, z, planes, channels, plane_size, act, a, b);
}

template <typename T>
kiln_status launch_pool(cudaStream_t s, const kiln_cuda_pool_geom *g, const void *x, void *y,
                        int64_t *indices) {
    const int64_t total = g->planes * g->out[0] * g->out[1] * g->out[2];
    const int64_t in_total = g->planes * g->in[0] * g->in[1] * g->in[2];
    const unsigned blocks = (unsigned)blocks_for(total, kThreads);
    if (total < INT32_MAX && in_total < INT32_MAX)
        pool_kernel<T, int32_t><<<blocks, kThreads, 0, s>>>((const T *)x, (T *)y, indices, *g, total);
    else
        pool_kernel<T, int64_t><<<blocks, kThreads, 0, s>>>((const T *)x, (T *)y, indices, *g, total);
    return kiln_cuda_check(cudaGetLastError(), "pool kernel");
}

template <typename T, bool kMax, int VEC>
kiln_status launch_global_vec(cudaStream_t s, const void *x, void *y, int64_t planes, int64_t size) {
    // a warp per plane while that leaves each lane a few vectors; a block per plane beyond
    if (size <= 512 * VEC) {
        const int warps_per_block = kThreads / 32;
        global_pool_warp_kernel<T, kMax, VEC>
            <<<(unsigned)blocks_for(planes, warps_per_block), kThreads, 0, s>>>((const T *)x, (T *)y, planes, size);
    } else {
        global_pool_block_kernel<T, kMax, VEC>
            <<<(unsigned)(planes > kMaxBlocks ? kMaxBlocks : planes), kThreads, 0, s>>>((const T *)x, (T *)y,
                                                                                       planes, size);
    }
    return kiln_cuda_check(cudaGetLastError(), "global pool kernel");
}

template <typename T, bool kMax>
kiln_status launch_global(cudaStream_t s, const void *x, void *y, int64_t planes, int64_t size) {
    if (size > 0 && vec_ok(size, sizeof(T), x, x))
        return launch_global_vec<T, kMax, 16 / sizeof(T)>(s, x, y, planes, size);
    return launch_global_vec<T, kMax, 1>(s, x, y, planes, size);
}

kiln_status bad_dtype(const char *what, int dtype) {
    return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "%s: element type %d is not supported", what, dtype);
}

} // namespace

extern "C" kiln_status kiln_cuda_conv_epilogue(void *stream, int dtype, void *y, const void *bias,
                                               const void *z, int64_t planes, int64_t channels,
                                               int64_t plane_size, int act, float act_a, float act_b) {
    if (planes <= 0 || plane_size <= 0 || (!bias && !z && act == KILN_CUDA_ACT_NONE)) return KILN_OK;
    cudaStream_t s = (cudaStream_t)stream;
    switch (dtype) {
    case KILN_DTYPE_FLOAT:
        return launch_epilogue<float>(s, y, bias, z, planes, channels, plane_size, act, act_a, act_b);
    case KILN_DTYPE_FLOAT16:
        return launch_epilogue<__half>(s, y, bias, z, planes, channels, plane_size, act, act_a, act_b);
    case KILN_DTYPE_BFLOAT16:
        return launch_epilogue<__nv_bfloat16>(s, y, bias, z, planes, channels, plane_size, act, act_a,
                                              act_b);
    default: return bad_dtype("conv epilogue", dtype);
    }
}

extern "C" kiln_status kiln_cuda_conv_shift_copy(void *stream, int elem_size, const void *src, void *dst,
                                                 int64_t planes, const int64_t src_dims[3],
                                                 const int64_t dst_dims[3], const int64_t shift[3]) {
    Dims3 sd, dd, sh;
    for (int i = 0; i < 3; i++) {
        sd.d[i] = src_dims[i];
        dd.d[i] = dst_dims[i];
        sh.d[i] = shift[i];
    }
    const int64_t total = planes * dd.d[0] * dd.d[1] * dd.d[2];
    if (total <= 0) return KILN_OK;
    cudaStream_t s = (cudaStream_t)stream;
    const unsigned blocks = (unsigned)blocks_for(total, kThreads);
    const bool small = total < INT32_MAX && planes * sd.d[0] * sd.d[1] * sd.d[2] < INT32_MAX;
    if (elem_size == 2 && small)
        shift_copy_kernel<uint16_t, int32_t><<<blocks, kThreads, 0, s>>>((const uint16_t *)src, (uint16_t *)dst,
                                                                        total, sd, dd, sh);
    else if (elem_size == 2)
        shift_copy_kernel<uint16_t, int64_t><<<blocks, kThreads, 0, s>>>((const uint16_t *)src, (uint16_t *)dst,
                                                                        total, sd, dd, sh);
    else if (elem_size == 4 && small)
        shift_copy_kernel<uint32_t, int32_t><<<blocks, kThreads, 0, s>>>((const uint32_t *)src, (uint32_t *)dst,
                                                                        total, sd, dd, sh);
    else if (elem_size == 4)
        shift_copy_kernel<uint32_t, int64_t><<<blocks, kThreads, 0, s>>>((const uint32_t *)src, (uint32_t *)dst,
                                                                        total, sd, dd, sh);
    else
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "conv window copy: element size %d", elem_size);
    return kiln_cuda_check(cudaGetLastError(), "conv window copy kernel");
}

extern "C" kiln_status kiln_cuda_pool(void *stream, int dtype, const kiln_cuda_pool_geom *g, const void *x,
                                      void *y, int64_t *indices) {
    if (g->planes * g->out[0] * g->out[1] * g->out[2] <= 0 || (!y && !indices)) return KILN_OK;
    if (!g->is_max && !y) return KILN_OK;
    cudaStream_t s = (cudaStream_t)stream;
    switch (dtype) {
    case KILN_DTYPE_FLOAT: return launch_pool<float>(s, g, x, y, indices);
    case KILN_DTYPE_FLOAT16: return launch_pool<__half>(s, g, x, y, indices);
    case KILN_DTYPE_BFLOAT16: return launch_pool<__nv_bfloat16>(s, g, x, y, indices);
    case KILN_DTYPE_INT8:
        if (g->is_max) return launch_pool<int8_t>(s, g, x, y, indices);
        break;
    case KILN_DTYPE_UINT8:
        if (g->is_max) return launch_pool<uint8_t>(s, g, x, y, indices);
        break;
    default: break;
    }
    return bad_dtype(g->is_max ? "MaxPool" : "AveragePool", dtype);
}

extern "C" kiln_status kiln_cuda_global_pool(void *stream, int dtype, int is_max, const void *x, void *y,
                                             int64_t planes, int64_t plane_size) {
    if (planes <= 0) return KILN_OK;
    cudaStream_t s = (cudaStream_t)stream;
    switch (dtype) {
    case KILN_DTYPE_FLOAT:
        return is_max ? launch_global<float, true>(s, x, y, planes, plane_size)
                      : launch_global<float, false>(s, x, y, planes, plane_size);
    case KILN_DTYPE_FLOAT16:
        return is_max ? launch_global<__half, true>(s, x, y, planes, plane_size)
                      : launch_global<__half, false>(s, x, y, planes, plane_size);
    case KILN_DTYPE_BFLOAT16:
        return is_max ? launch_global<__nv_bfloat16, true>(s, x, y, planes, plane_size)
                      : launch_global<__nv_bfloat16, false>(s, x, y, planes, plane_size);
    default: return bad_dtype(is_max ? "GlobalMaxPool" : "GlobalAveragePool", dtype);
    }
}
