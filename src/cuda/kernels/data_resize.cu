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

using namespace kiln_data;

namespace {

constexpr int kMaxRank = KILN_CUDA_RESIZE_MAX_RANK;

template <typename IX> struct ResizeGeom {
    int rank, ctm, nearest, exclude;
    int n_lin;              // linear: resized axes, in pass order (the last axis first)
    int lin_axes[kMaxRank];
    unsigned lin_mask;      // bit d: axis d is resized (linear)
    typename IX::Div out[kMaxRank];
    int64_t in[kMaxRank], istr[kMaxRank];
    double scale[kMaxRank];
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

// Output index i -> coordinates, innermost first.
template <typename IX>
__device__ __forceinline__ void out_coords(const ResizeGeom<IX> &g, typename IX::T i, int64_t *o) {
    using I = typename IX::T;
    I rem = i;
    for (int k = g.rank - 1; k >= 0; --k) {
        I q = g.out[k].div(rem);
        o[k] = (int64_t)(rem - q * g.out[k].d());
        rem = q;
    }
}

template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    resize_nearest_kernel(T *__restrict__ dst, const T *__restrict__ src, ResizeGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        int64_t o[kMaxRank], off = 0;
        out_coords(g, i, o);
        for (int k = 0; k < g.rank; k++) {
            double x = original_coord(g.ctm, g.scale[k], g.in[k], (int64_t)g.out[k].d(), o[k]);
            off += clamp_index(nearest_index(g.nearest, x, g.scale[k]), g.in[k]) * g.istr[k];
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

template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    resize_linear_kernel(T *__restrict__ dst, const T *__restrict__ src, ResizeGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        int64_t o[kMaxRank], base = 0;
        out_coords(g, i, o);
        for (int k = 0; k < g.rank; k++)
            if (!(g.lin_mask >> k & 1)) base += o[k] * g.istr[k];
        int64_t off0[kMaxRank], off1[kMaxRank];
        float w0[kMaxRank], w1[kMaxRank];
        for (int t = 0; t < g.n_lin; t++) {
            int d = g.lin_axes[t];
            int64_t in = g.in[d];
            double x = original_coord(g.ctm, g.scale[d], in, (int64_t)g.out[d].d(), o[d]);
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
            w0[t] = __double2float_rn(a);
            w1[t] = __double2float_rn(b);
            off0[t] = clamp_index(i0, in) * g.istr[d];
            off1[t] = clamp_index(i0 + 1, in) * g.istr[d];
        }
        // depth-first over the pass tree: leaf bit t picks axis t's right tap
        float stack[kMaxRank + 1], result = 0.0f;
        unsigned leaves = 1u << g.n_lin;
        for (unsigned leaf = 0; leaf < leaves; leaf++) {
            int64_t off = base;
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
    ResizeGeom<IX> g;
    g.rank = d->rank;
    g.ctm = d->coord_mode;
    g.nearest = d->nearest_mode;
    g.exclude = d->exclude_outside;
    g.n_lin = 0;
    g.lin_mask = 0;
    int64_t str = 1;
    for (int k = kMaxRank - 1; k >= 0; k--) {
        bool live = k < d->rank;
        g.out[k] = IX::make(live ? d->out[k] : 1);
        g.in[k] = live ? d->in[k] : 1;
        g.scale[k] = live ? d->scale[k] : 1.0;
        g.istr[k] = live ? str : 0;
        if (live) str *= d->in[k];
        // the CPU skips the pass of an axis that keeps its size at scale 1
        if (live && !(d->out[k] == d->in[k] && d->scale[k] == 1.0)) {
            g.lin_axes[g.n_lin++] = k;
            g.lin_mask |= 1u << k;
        }
    }
    return g;
}

template <typename T, typename IX>
static void launch_linear(cudaStream_t st, const kiln_cuda_resize_desc *d, const void *src, void *dst, int64_t n) {
    resize_linear_kernel<T, IX>
        <<<grid_for(n), kThreads, 0, st>>>((T *)dst, (const T *)src, make_geom<IX>(d), (typename IX::T)n);
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
    bool small = fits32(n);
    if (d->mode == KILN_CUDA_RESIZE_LINEAR)
        return small ? resize_linear<Ix32>(st, d, src, dst, n) : resize_linear<Ix64>(st, d, src, dst, n);
    return small ? resize_nearest<Ix32>(st, d, src, dst, n) : resize_nearest<Ix64>(st, d, src, dst, n);
}
