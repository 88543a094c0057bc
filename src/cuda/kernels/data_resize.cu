// Resize, modes nearest and linear, one launch: each thread maps its output index to input
// coordinates per axis and reads the taps itself.
//
// The arithmetic copies the CPU provider's (cpu/kernels/resize.c) so that results agree bit for
// bit: coordinates in double through the _rn intrinsics (no fused multiply-add, which the host
// compiler does not use either), weights rounded to float, and linear taps combined one resized
// axis at a time, last axis first, exactly the order of the CPU's separable passes. The passes
// form a binary tree over the 2^m corner values (m resized axes); it is evaluated depth-first
// with a stack of m partial sums, so m up to the full rank works without a 2^m buffer.
#include "data_common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <string.h>

using namespace kiln_data;

namespace {

constexpr int kMaxRank = KILN_CUDA_RESIZE_MAX_RANK;

template <typename IX> struct ResizeGeom {
    int rank, ctm, nearest, exclude;
    unsigned lin_mask;   // bit d: axis d is resized (linear)
    unsigned ident_mask; // bit d: axis d maps output index o to input o (nearest)
    typename IX::Div out[kMaxRank];
    typename IX::S in[kMaxRank], istr[kMaxRank];
    double scale[kMaxRank];
    // linear: the resized axes in pass order (the last axis first), each with what its output
    // coordinate needs: o = (i / inner) % out
    int n_lin;
    typename IX::Div lin_inner[kMaxRank], lin_out[kMaxRank];
    typename IX::S lin_in[kMaxRank], lin_istr[kMaxRank];
    double lin_scale[kMaxRank];
};

__device__ __forceinline__ double original_coord(int ctm, double s, int64_t in, int64_t out, int64_t o) {
    double xr = (double)o, dn = (double)in, out_w = __dmul_rn(s, dn);
    switch (ctm) {
    case KILN_CUDA_CT_HALF_PIXEL_SYMMETRIC: {
        double adj = __ddiv_rn((double)out, out_w), center = __ddiv_rn(dn, 2.0);
        return __dadd_rn(__dadd_rn(__dmul_rn(center, __dadd_rn(1.0, -adj)), __ddiv_rn(__dadd_rn(xr, 0.5), s)), -0.5);
    }
    case KILN_CUDA_CT_PYTORCH_HALF_PIXEL:
        return out > 1 ? __dadd_rn(__ddiv_rn(__dadd_rn(xr, 0.5), s), -0.5) : 0.0;
    case KILN_CUDA_CT_ALIGN_CORNERS:
        return out_w == 1.0 ? 0.0 : __ddiv_rn(__dmul_rn(xr, __dadd_rn(dn, -1.0)), __dadd_rn(out_w, -1.0));
    case KILN_CUDA_CT_ASYMMETRIC: return __ddiv_rn(xr, s);
    case KILN_CUDA_CT_TF_HALF_PIXEL_FOR_NN: return __ddiv_rn(__dadd_rn(xr, 0.5), s);
    default: return __dadd_rn(__ddiv_rn(__dadd_rn(xr, 0.5), s), -0.5); // half_pixel
    }
}

__device__ __forceinline__ int64_t nearest_index(int mode, double x, double scale) {
    double fl = floor(x);
    if (x == fl) return (int64_t)fl;
    double frac = x - fl;
    switch (mode) {
    case KILN_CUDA_NEAREST_ROUND_PREFER_FLOOR: return (int64_t)(frac <= 0.5 ? fl : fl + 1.0);
    case KILN_CUDA_NEAREST_ROUND_PREFER_CEIL: return (int64_t)(frac < 0.5 ? fl : fl + 1.0);
    case KILN_CUDA_NEAREST_FLOOR: return (int64_t)fl;
    case KILN_CUDA_NEAREST_CEIL: return (int64_t)fl + 1;
    default: return scale < 1.0 ? (int64_t)ceil(x) : (int64_t)x;
    }
}

__device__ __forceinline__ int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    resize_nearest_kernel(T *__restrict__ dst, const T *__restrict__ src, ResizeGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    using S = typename IX::S;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I rem = i;
        S off = 0;
#pragma unroll
        for (int k = kMaxRank - 1; k >= 0; --k) {
            if (k < g.rank) {
                I q = g.out[k].div(rem);
                S o = (S)(rem - q * g.out[k].d());
                rem = q;
                if (!(g.ident_mask >> k & 1)) {
                    double x = original_coord(g.ctm, g.scale[k], g.in[k], (int64_t)g.out[k].d(), o);
                    o = (S)clamp_index(nearest_index(g.nearest, x, g.scale[k]), g.in[k]);
                }
                off += o * g.istr[k];
            }
        }
        dst[i] = src[off];
    }
}

__device__ __forceinline__ float to_f(float v) { return v; }
__device__ __forceinline__ float to_f(__half v) { return __half2float(v); }
__device__ __forceinline__ float to_f(__nv_bfloat16 v) { return __bfloat162float(v); }
__device__ __forceinline__ float to_f(uint8_t v) { return (float)v; }
__device__ __forceinline__ float to_f(int8_t v) { return (float)v; }

template <typename T> __device__ __forceinline__ T from_f(float v);
template <> __device__ __forceinline__ float from_f<float>(float v) { return v; }
template <> __device__ __forceinline__ __half from_f<__half>(float v) { return __float2half_rn(v); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float v) { return __float2bfloat16_rn(v); }
// integers: truncate, then saturate (NaN goes to the low end), as the CPU provider does
template <> __device__ __forceinline__ uint8_t from_f<uint8_t>(float v) {
    v = truncf(v);
    if (!(v >= 0.0f)) v = 0.0f;
    if (v > 255.0f) v = 255.0f;
    return (uint8_t)v;
}
template <> __device__ __forceinline__ int8_t from_f<int8_t>(float v) {
    v = truncf(v);
    if (!(v >= -128.0f)) v = -128.0f;
    if (v > 127.0f) v = 127.0f;
    return (int8_t)v;
}

// One CPU pass step: d = w0 * a, then d += w1 * b unless w1 is 0 (rounded as the CPU rounds).
__device__ __forceinline__ float combine(float w0, float a, float w1, float b) {
    float d = __fmul_rn(w0, a);
    return w1 != 0.0f ? __fadd_rn(d, __fmul_rn(w1, b)) : d;
}

// The two taps of resized axis t (pass order) for output index i: offsets and float weights.
template <typename IX>
__device__ __forceinline__ void linear_taps(const ResizeGeom<IX> &g, int t, typename IX::T i, typename IX::S &off0,
                                            typename IX::S &off1, float &w0, float &w1) {
    using I = typename IX::T;
    I q = g.lin_inner[t].div(i);
    int64_t o = (int64_t)(q - g.lin_out[t].div(q) * g.lin_out[t].d()), in = (int64_t)g.lin_in[t];
    double x = original_coord(g.ctm, g.lin_scale[t], in, (int64_t)g.lin_out[t].d(), o);
    // i0 is the tap left of x; an integral x counts as the right end of its interval
    double i0f = ceil(x) - 1.0, ratio = x - i0f;
    int64_t i0 = (int64_t)i0f;
    double a = 1.0 - ratio, b = ratio;
    if (g.exclude) {
        if (i0 < 0 || i0 >= in) a = 0.0;
        if (i0 + 1 < 0 || i0 + 1 >= in) b = 0.0;
        double sum = a + b;
        if (sum != 0.0) {
            a = __ddiv_rn(a, sum);
            b = __ddiv_rn(b, sum);
        }
    }
    w0 = __double2float_rn(a);
    w1 = __double2float_rn(b);
    off0 = (typename IX::S)clamp_index(i0, in) * g.lin_istr[t];
    off1 = (typename IX::S)clamp_index(i0 + 1, in) * g.lin_istr[t];
}

// Offset of the axes that are not resized.
template <typename IX> __device__ __forceinline__ typename IX::S linear_base(const ResizeGeom<IX> &g, typename IX::T i) {
    using I = typename IX::T;
    using S = typename IX::S;
    I rem = i;
    S base = 0;
#pragma unroll
    for (int k = kMaxRank - 1; k >= 0; --k) {
        if (k < g.rank) {
            I q = g.out[k].div(rem);
            if (!(g.lin_mask >> k & 1)) base += (S)(rem - q * g.out[k].d()) * g.istr[k];
            rem = q;
        }
    }
    return base;
}

// NL resized axes known at compile time: taps and the 2^NL corners stay in registers, and the
// pass tree is evaluated level by level (level t combines the pairs that differ in axis t).
template <typename T, typename IX, int NL>
__global__ void __launch_bounds__(kThreads)
    resize_linear_kernel(T *__restrict__ dst, const T *__restrict__ src, ResizeGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    using S = typename IX::S;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        S base = linear_base(g, i), off0[NL], off1[NL];
        float w0[NL], w1[NL], v[1 << NL];
#pragma unroll
        for (int t = 0; t < NL; t++) linear_taps(g, t, i, off0[t], off1[t], w0[t], w1[t]);
#pragma unroll
        for (int leaf = 0; leaf < (1 << NL); leaf++) {
            S off = base;
#pragma unroll
            for (int t = 0; t < NL; t++) off += (leaf >> t & 1) ? off1[t] : off0[t];
            v[leaf] = to_f(src[off]);
        }
#pragma unroll
        for (int t = 0; t < NL; t++) {
#pragma unroll
            for (int j = 0; j < (1 << (NL - t - 1)); j++) v[j] = combine(w0[t], v[2 * j], w1[t], v[2 * j + 1]);
        }
        dst[i] = from_f<T>(v[0]);
    }
}

// Any number of resized axes: the pass tree depth-first with a stack of partial sums.
template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    resize_linear_any_kernel(T *__restrict__ dst, const T *__restrict__ src, ResizeGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    using S = typename IX::S;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        S base = linear_base(g, i), off0[kMaxRank], off1[kMaxRank];
        float w0[kMaxRank], w1[kMaxRank], stack[kMaxRank], result = 0.0f;
        for (int t = 0; t < g.n_lin; t++) linear_taps(g, t, i, off0[t], off1[t], w0[t], w1[t]);
        unsigned leaves = 1u << g.n_lin;
        for (unsigned leaf = 0; leaf < leaves; leaf++) {
            S off = base;
            for (int t = 0; t < g.n_lin; t++) off += (leaf >> t & 1) ? off1[t] : off0[t];
            float v = to_f(src[off]);
            int t = 0;
            while (t < g.n_lin && (leaf >> t & 1)) {
                v = combine(w0[t], stack[t], w1[t], v);
                t++;
            }
            if (t == g.n_lin) result = v;
            else stack[t] = v;
        }
        dst[i] = from_f<T>(result);
    }
}

template <typename IX> static ResizeGeom<IX> make_geom(const kiln_cuda_resize_desc *d) {
    using S = typename IX::S;
    ResizeGeom<IX> g;
    memset(&g, 0, sizeof g);
    g.rank = d->rank;
    g.ctm = d->coord_mode;
    g.nearest = d->nearest_mode;
    g.exclude = d->exclude_outside;
    int64_t str = 1, inner = 1;
    for (int k = kMaxRank - 1; k >= 0; k--) {
        bool live = k < d->rank;
        g.out[k] = IX::make(live ? d->out[k] : 1);
        g.in[k] = (S)(live ? d->in[k] : 1);
        g.scale[k] = live ? d->scale[k] : 1.0;
        g.istr[k] = (S)(live ? str : 0);
        if (!live) continue;
        bool same = d->out[k] == d->in[k] && d->scale[k] == 1.0;
        // at scale 1 every mode but tf_half_pixel_for_nn maps o to exactly o
        if (same && d->coord_mode != KILN_CUDA_CT_TF_HALF_PIXEL_FOR_NN) g.ident_mask |= 1u << k;
        // the CPU skips the linear pass of an axis that keeps its size at scale 1
        if (!same) {
            int t = g.n_lin++;
            g.lin_mask |= 1u << k;
            g.lin_inner[t] = IX::make(inner);
            g.lin_out[t] = IX::make(d->out[k]);
            g.lin_in[t] = (S)d->in[k];
            g.lin_istr[t] = (S)str;
            g.lin_scale[t] = d->scale[k];
        }
        str *= d->in[k];
        inner *= d->out[k];
    }
    return g;
}

template <typename T, typename IX>
static void launch_linear(cudaStream_t st, const kiln_cuda_resize_desc *d, const void *src, void *dst, int64_t n) {
    ResizeGeom<IX> g = make_geom<IX>(d);
    unsigned blocks = grid_for(n);
    T *y = (T *)dst;
    const T *x = (const T *)src;
    typename IX::T m = (typename IX::T)n;
    switch (g.n_lin) {
    case 1: resize_linear_kernel<T, IX, 1><<<blocks, kThreads, 0, st>>>(y, x, g, m); break;
    case 2: resize_linear_kernel<T, IX, 2><<<blocks, kThreads, 0, st>>>(y, x, g, m); break;
    case 3: resize_linear_kernel<T, IX, 3><<<blocks, kThreads, 0, st>>>(y, x, g, m); break;
    default: resize_linear_any_kernel<T, IX><<<blocks, kThreads, 0, st>>>(y, x, g, m); break;
    }
}

template <typename IX>
static kiln_status resize_linear(cudaStream_t st, const kiln_cuda_resize_desc *d, const void *src, void *dst,
                                 int64_t n) {
    switch (d->dtype) {
    case KILN_DTYPE_FLOAT: launch_linear<float, IX>(st, d, src, dst, n); break;
    case KILN_DTYPE_FLOAT16: launch_linear<__half, IX>(st, d, src, dst, n); break;
    case KILN_DTYPE_BFLOAT16: launch_linear<__nv_bfloat16, IX>(st, d, src, dst, n); break;
    case KILN_DTYPE_UINT8: launch_linear<uint8_t, IX>(st, d, src, dst, n); break;
    case KILN_DTYPE_INT8: launch_linear<int8_t, IX>(st, d, src, dst, n); break;
    default: return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "linear Resize of element type %d", d->dtype);
    }
    return launched("Resize (linear) kernel");
}

template <typename IX>
static kiln_status resize_nearest(cudaStream_t st, const kiln_cuda_resize_desc *d, const void *src, void *dst,
                                  int64_t n) {
    if (d->elem > 8) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "Resize of %zu-byte elements", d->elem);
    kiln_status s = with_unit(d->elem, [&](auto tag) {
        using T = typename decltype(tag)::type;
        resize_nearest_kernel<T, IX>
            <<<grid_for(n), kThreads, 0, st>>>((T *)dst, (const T *)src, make_geom<IX>(d), (typename IX::T)n);
    });
    return s != KILN_OK ? s : launched("Resize (nearest) kernel");
}

} // namespace

extern "C" int kiln_cuda_resize_linear_dtype(int dtype) {
    return dtype == KILN_DTYPE_FLOAT || dtype == KILN_DTYPE_FLOAT16 || dtype == KILN_DTYPE_BFLOAT16 ||
           dtype == KILN_DTYPE_UINT8 || dtype == KILN_DTYPE_INT8;
}

extern "C" kiln_status kiln_cuda_resize(void *stream, const kiln_cuda_resize_desc *d, const void *src, void *dst) {
    if (d->rank < 1 || d->rank > kMaxRank)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "Resize of rank %d (at most %d)", d->rank, kMaxRank);
    int64_t n = 1, n_in = 1;
    for (int k = 0; k < d->rank; k++) {
        n *= d->out[k];
        n_in *= d->in[k];
    }
    if (n <= 0) return KILN_OK;
    if (n_in <= 0)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "cannot resize an empty input to a non-empty output");
    cudaStream_t st = (cudaStream_t)stream;
    bool same = true;
    for (int k = 0; k < d->rank; k++) same = same && d->out[k] == d->in[k] && d->scale[k] == 1.0;
    if (same && (d->mode == KILN_CUDA_RESIZE_LINEAR || d->coord_mode != KILN_CUDA_CT_TF_HALF_PIXEL_FOR_NN))
        return kiln_cuda_check((int)cudaMemcpyAsync(dst, src, (size_t)n * d->elem, cudaMemcpyDeviceToDevice, st),
                               "cudaMemcpyAsync (Resize to the same shape)");
    bool small = fits32(n) && fits32(n_in);
    if (d->mode == KILN_CUDA_RESIZE_LINEAR)
        return small ? resize_linear<Ix32>(st, d, src, dst, n) : resize_linear<Ix64>(st, d, src, dst, n);
    return small ? resize_nearest<Ix32>(st, d, src, dst, n) : resize_nearest<Ix64>(st, d, src, dst, n);
}
