// Resize, modes nearest and linear.
//
// The arithmetic copies the CPU provider's (cpu/kernels/resize.c) so that results agree bit for
// bit: coordinates in double through the _rn intrinsics (no fused multiply-add, which the host
// compiler does not use either), weights rounded to float, and linear taps combined one resized
// axis at a time, last axis first, exactly the order of the CPU's separable passes.
//
// Two launches: a tiny one fills a table of taps per resized axis and output coordinate (input
// offsets and weights, the double arithmetic done once per coordinate instead of once per output
// element, where it would dominate), then one thread per output element reads its taps from the
// table (cached: a few KiB) and its 2^m corners. The passes form a binary tree over the corners;
// for m <= 3 resized axes it is unrolled in registers, beyond that evaluated depth-first with a
// stack of m partial sums.
#include "data_common.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <string.h>

using namespace kiln_data;

namespace {

constexpr int kMaxRank = KILN_CUDA_RESIZE_MAX_RANK;

// One output coordinate of one axis: its input taps (offsets, already times the axis stride)
// and their weights. Nearest uses off0 alone.
struct Tap {
    int64_t off0, off1;
    float w0, w1;
};

// Which axes get a table: nearest, those whose index map is not the identity (at scale 1 every
// coordinate mode but tf_half_pixel_for_nn maps o to o); linear, those the CPU runs a pass over
// (any axis but one keeping its size at scale 1), in pass order, the last axis first.
struct Slots {
    int n;
    int axis[kMaxRank];
    int64_t first[kMaxRank + 1]; // slot j's entries: [first[j], first[j + 1])
};

static Slots plan_slots(const kiln_cuda_resize_desc *d) {
    Slots s;
    s.n = 0;
    s.first[0] = 0;
    for (int k = d->rank - 1; k >= 0; k--) {
        bool same = d->out[k] == d->in[k] && d->scale[k] == 1.0;
        bool table = d->mode == KILN_CUDA_RESIZE_LINEAR ? !same
                                                        : !(same && d->coord_mode != KILN_CUDA_CT_TF_HALF_PIXEL_FOR_NN);
        if (!table) continue;
        s.axis[s.n] = k;
        s.first[s.n + 1] = s.first[s.n] + d->out[k];
        s.n++;
    }
    return s;
}

struct TableGeom {
    int n, ctm, nearest, exclude, linear;
    int64_t first[kMaxRank + 1], in[kMaxRank], out[kMaxRank], istr[kMaxRank];
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

__device__ __forceinline__ int64_t clamp_index(int64_t i, int64_t n) { return i < 0 ? 0 : (i >= n ? n - 1 : i); }

__global__ void __launch_bounds__(kThreads) tap_table_kernel(Tap *__restrict__ tab, TableGeom g) {
    int64_t total = g.first[g.n];
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int j = 0;
        while (j + 1 < g.n && e >= g.first[j + 1]) j++;
        int64_t o = e - g.first[j], in = g.in[j];
        double x = original_coord(g.ctm, g.scale[j], in, g.out[j], o);
        Tap t;
        if (!g.linear) {
            t.off0 = t.off1 = clamp_index(nearest_index(g.nearest, x, g.scale[j]), in) * g.istr[j];
            t.w0 = 1.0f;
            t.w1 = 0.0f;
            tab[e] = t;
            continue;
        }
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
        t.off0 = clamp_index(i0, in) * g.istr[j];
        t.off1 = clamp_index(i0 + 1, in) * g.istr[j];
        t.w0 = __double2float_rn(a);
        t.w1 = __double2float_rn(b);
        tab[e] = t;
    }
}

template <typename IX> struct ResizeGeom {
    int rank, n_lin;
    const Tap *tab;
    typename IX::Div out[kMaxRank];
    typename IX::S istr[kMaxRank];
    int64_t tab_first[kMaxRank]; // nearest: axis k's first table entry, -1 when o maps to o
    unsigned lin_mask;           // linear: bit k set when axis k is resized
    // linear, per resized axis in pass order: o = (i / inner) % out, taps at tab[first + o]
    typename IX::Div lin_inner[kMaxRank], lin_out[kMaxRank];
    int64_t lin_first[kMaxRank];
    // row path: rows of W outputs along the last axis; each warp covers 32 * kRowV outputs of
    // one row (lane + 32 v), so the leading axes are worked out once per kRowV outputs and every
    // store instruction is coalesced
    typename IX::T W;
    typename IX::Div chunks;           // chunks of 32 * kRowV per row
    typename IX::Div lin_inner_row[kMaxRank]; // lin_inner / W
    int64_t last_first;                // the last axis' table, -1 when it maps o to o
    typename IX::S last_istr;
    int last_lin;                      // linear: the last axis is resized (slot 0)
};

constexpr int kRowV = 4;
constexpr int64_t kRowMin = 32 * kRowV; // rows at least this long take the row path

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
                I o = rem - q * g.out[k].d();
                rem = q;
                off += g.tab_first[k] < 0 ? (S)o * g.istr[k] : (S)__ldg(&g.tab[g.tab_first[k] + (int64_t)o].off0);
            }
        }
        dst[i] = src[off];
    }
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

template <typename IX>
__device__ __forceinline__ void linear_taps(const ResizeGeom<IX> &g, int t, typename IX::T i, typename IX::S &off0,
                                            typename IX::S &off1, float &w0, float &w1) {
    using I = typename IX::T;
    I q = g.lin_inner[t].div(i);
    I o = q - g.lin_out[t].div(q) * g.lin_out[t].d();
    const Tap *tp = g.tab + g.lin_first[t] + (int64_t)o;
    off0 = (typename IX::S)__ldg(&tp->off0);
    off1 = (typename IX::S)__ldg(&tp->off1);
    w0 = __ldg(&tp->w0);
    w1 = __ldg(&tp->w1);
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

// ---- the row path ----

template <typename IX> struct RowPos {
    typename IX::T row, c0; // c0: this lane's first column
};

template <typename IX> __device__ __forceinline__ RowPos<IX> row_pos(const ResizeGeom<IX> &g, typename IX::T idx) {
    using I = typename IX::T;
    I seg = idx >> 5, lane = idx & 31;
    RowPos<IX> p;
    p.row = g.chunks.div(seg);
    p.c0 = (seg - p.row * g.chunks.d()) * (32 * kRowV) + lane;
    return p;
}

// Offset of the leading axes (all but the last) of a row: nearest through the tables, linear
// only the axes that are not resized (their taps come separately).
template <typename IX>
__device__ __forceinline__ typename IX::S row_base(const ResizeGeom<IX> &g, typename IX::T row, bool nearest) {
    using I = typename IX::T;
    using S = typename IX::S;
    I rem = row;
    S off = 0;
#pragma unroll
    for (int k = kMaxRank - 2; k >= 0; --k) {
        if (k < g.rank - 1) {
            I q = g.out[k].div(rem);
            I o = rem - q * g.out[k].d();
            rem = q;
            if (nearest)
                off += g.tab_first[k] < 0 ? (S)o * g.istr[k] : (S)__ldg(&g.tab[g.tab_first[k] + (int64_t)o].off0);
            else if (!(g.lin_mask >> k & 1))
                off += (S)o * g.istr[k];
        }
    }
    return off;
}

template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    resize_nearest_rows_kernel(T *__restrict__ dst, const T *__restrict__ src, ResizeGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    using S = typename IX::S;
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (I)gridDim.x * blockDim.x) {
        RowPos<IX> p = row_pos(g, idx);
        S base = row_base(g, p.row, true);
        T *out = dst + (S)p.row * (S)g.W;
#pragma unroll
        for (int v = 0; v < kRowV; v++) {
            I c = p.c0 + 32 * v;
            if (c < g.W) {
                S o = g.last_first < 0 ? (S)c * g.last_istr : (S)__ldg(&g.tab[g.last_first + (int64_t)c].off0);
                out[c] = src[base + o];
            }
        }
    }
}

template <typename IX>
__device__ __forceinline__ void tap_at(const ResizeGeom<IX> &g, int64_t entry, typename IX::S &off0,
                                       typename IX::S &off1, float &w0, float &w1) {
    const Tap *tp = g.tab + entry;
    off0 = (typename IX::S)__ldg(&tp->off0);
    off1 = (typename IX::S)__ldg(&tp->off1);
    w0 = __ldg(&tp->w0);
    w1 = __ldg(&tp->w1);
}

template <typename T, typename IX, int NL>
__global__ void __launch_bounds__(kThreads)
    resize_linear_rows_kernel(T *__restrict__ dst, const T *__restrict__ src, ResizeGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    using S = typename IX::S;
    for (I idx = (I)blockIdx.x * blockDim.x + threadIdx.x; idx < n; idx += (I)gridDim.x * blockDim.x) {
        RowPos<IX> p = row_pos(g, idx);
        S base = row_base(g, p.row, false), off0[NL], off1[NL];
        float w0[NL], w1[NL];
#pragma unroll
        for (int t = 0; t < NL; t++) { // the taps of the leading axes, shared by the row
            off0[t] = off1[t] = 0;
            w0[t] = w1[t] = 0.0f;
            if (t > 0 || !g.last_lin) {
                I q = g.lin_inner_row[t].div(p.row);
                I o = q - g.lin_out[t].div(q) * g.lin_out[t].d();
                tap_at(g, g.lin_first[t] + (int64_t)o, off0[t], off1[t], w0[t], w1[t]);
            }
        }
        T *out = dst + (S)p.row * (S)g.W;
#pragma unroll
        for (int v = 0; v < kRowV; v++) {
            I c = p.c0 + 32 * v;
            if (c >= g.W) break;
            S off_c = 0;
            if (g.last_lin) tap_at(g, g.lin_first[0] + (int64_t)c, off0[0], off1[0], w0[0], w1[0]);
            else off_c = (S)c * g.last_istr;
            float val[1 << NL];
#pragma unroll
            for (int leaf = 0; leaf < (1 << NL); leaf++) {
                S off = base + off_c;
#pragma unroll
                for (int t = 0; t < NL; t++) off += (leaf >> t & 1) ? off1[t] : off0[t];
                val[leaf] = to_f(src[off]);
            }
#pragma unroll
            for (int t = 0; t < NL; t++) {
#pragma unroll
                for (int j = 0; j < (1 << (NL - t - 1)); j++)
                    val[j] = combine(w0[t], val[2 * j], w1[t], val[2 * j + 1]);
            }
            out[c] = from_f<T>(val[0]);
        }
    }
}

// Threads the row path launches, 0 when rows are too short for it.
static int64_t row_threads(const kiln_cuda_resize_desc *d) {
    int64_t W = d->out[d->rank - 1], rows = 1;
    if (W < kRowMin) return 0;
    for (int k = 0; k < d->rank - 1; k++) rows *= d->out[k];
    return rows * ((W + kRowMin - 1) / kRowMin) * 32;
}

template <typename IX> static ResizeGeom<IX> make_geom(const kiln_cuda_resize_desc *d, const Slots &s, const Tap *tab) {
    ResizeGeom<IX> g;
    memset(&g, 0, sizeof g);
    g.rank = d->rank;
    g.tab = tab;
    int64_t str[kMaxRank], inner[kMaxRank], a = 1, b = 1;
    for (int k = kMaxRank - 1; k >= 0; k--) {
        bool live = k < d->rank;
        g.out[k] = IX::make(live ? d->out[k] : 1);
        g.istr[k] = (typename IX::S)(live ? a : 0);
        g.tab_first[k] = -1;
        str[k] = a;
        inner[k] = b;
        if (live) {
            a *= d->in[k];
            b *= d->out[k];
        }
    }
    g.n_lin = d->mode == KILN_CUDA_RESIZE_LINEAR ? s.n : 0;
    for (int j = 0; j < s.n; j++) {
        int k = s.axis[j];
        g.tab_first[k] = s.first[j];
        if (d->mode != KILN_CUDA_RESIZE_LINEAR) continue;
        g.lin_mask |= 1u << k;
        g.lin_inner[j] = IX::make(inner[k]);
        g.lin_out[j] = IX::make(d->out[k]);
        g.lin_first[j] = s.first[j];
    }
    int last = d->rank - 1;
    int64_t W = d->out[last];
    g.W = (typename IX::T)W;
    g.chunks = IX::make((W + kRowMin - 1) / kRowMin);
    g.last_first = g.tab_first[last];
    g.last_istr = (typename IX::S)str[last];
    g.last_lin = (int)(g.lin_mask >> last & 1);
    for (int j = 0; j < g.n_lin; j++) g.lin_inner_row[j] = IX::make(inner[s.axis[j]] / (W > 0 ? W : 1));
    return g;
}

static kiln_status fill_table(cudaStream_t st, const kiln_cuda_resize_desc *d, const Slots &s, Tap *tab) {
    TableGeom t;
    memset(&t, 0, sizeof t);
    t.n = s.n;
    t.ctm = d->coord_mode;
    t.nearest = d->nearest_mode;
    t.exclude = d->exclude_outside;
    t.linear = d->mode == KILN_CUDA_RESIZE_LINEAR;
    int64_t str[kMaxRank], a = 1;
    for (int k = d->rank - 1; k >= 0; k--) {
        str[k] = a;
        a *= d->in[k];
    }
    for (int j = 0; j <= s.n; j++) t.first[j] = s.first[j];
    for (int j = 0; j < s.n; j++) {
        int k = s.axis[j];
        t.in[j] = d->in[k];
        t.out[j] = d->out[k];
        t.istr[j] = str[k];
        t.scale[j] = d->scale[k];
    }
    tap_table_kernel<<<grid_for(s.first[s.n]), kThreads, 0, st>>>(tab, t);
    return launched("Resize table kernel");
}

template <typename T, typename IX>
static void launch_linear(cudaStream_t st, const ResizeGeom<IX> &g, const void *src, void *dst, int64_t n,
                          int64_t rows_n) {
    T *y = (T *)dst;
    const T *x = (const T *)src;
    if (rows_n > 0 && g.n_lin <= 3) {
        unsigned blocks = grid_for(rows_n);
        typename IX::T m = (typename IX::T)rows_n;
        switch (g.n_lin) {
        case 1: resize_linear_rows_kernel<T, IX, 1><<<blocks, kThreads, 0, st>>>(y, x, g, m); return;
        case 2: resize_linear_rows_kernel<T, IX, 2><<<blocks, kThreads, 0, st>>>(y, x, g, m); return;
        default: resize_linear_rows_kernel<T, IX, 3><<<blocks, kThreads, 0, st>>>(y, x, g, m); return;
        }
    }
    unsigned blocks = grid_for(n);
    typename IX::T m = (typename IX::T)n;
    switch (g.n_lin) {
    case 1: resize_linear_kernel<T, IX, 1><<<blocks, kThreads, 0, st>>>(y, x, g, m); break;
    case 2: resize_linear_kernel<T, IX, 2><<<blocks, kThreads, 0, st>>>(y, x, g, m); break;
    case 3: resize_linear_kernel<T, IX, 3><<<blocks, kThreads, 0, st>>>(y, x, g, m); break;
    default: resize_linear_any_kernel<T, IX><<<blocks, kThreads, 0, st>>>(y, x, g, m); break;
    }
}

template <typename IX>
static kiln_status resize_run(cudaStream_t st, const kiln_cuda_resize_desc *d, const Slots &s, const Tap *tab,
                              const void *src, void *dst, int64_t n, int64_t rows_n) {
    ResizeGeom<IX> g = make_geom<IX>(d, s, tab);
    if (d->mode == KILN_CUDA_RESIZE_LINEAR) {
        switch (d->dtype) {
        case KILN_DTYPE_FLOAT: launch_linear<float, IX>(st, g, src, dst, n, rows_n); break;
        case KILN_DTYPE_FLOAT16: launch_linear<__half, IX>(st, g, src, dst, n, rows_n); break;
        case KILN_DTYPE_BFLOAT16: launch_linear<__nv_bfloat16, IX>(st, g, src, dst, n, rows_n); break;
        case KILN_DTYPE_UINT8: launch_linear<uint8_t, IX>(st, g, src, dst, n, rows_n); break;
        case KILN_DTYPE_INT8: launch_linear<int8_t, IX>(st, g, src, dst, n, rows_n); break;
        default: return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "linear Resize of element type %d", d->dtype);
        }
        return launched("Resize (linear) kernel");
    }
    if (d->elem > 8) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "Resize of %zu-byte elements", d->elem);
    kiln_status r = with_unit(d->elem, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (rows_n > 0)
            resize_nearest_rows_kernel<T, IX>
                <<<grid_for(rows_n), kThreads, 0, st>>>((T *)dst, (const T *)src, g, (typename IX::T)rows_n);
        else
            resize_nearest_kernel<T, IX>
                <<<grid_for(n), kThreads, 0, st>>>((T *)dst, (const T *)src, g, (typename IX::T)n);
    });
    return r != KILN_OK ? r : launched("Resize (nearest) kernel");
}

static bool plain_copy(const kiln_cuda_resize_desc *d) { return plan_slots(d).n == 0; }

} // namespace

extern "C" int kiln_cuda_resize_linear_dtype(int dtype) {
    return dtype == KILN_DTYPE_FLOAT || dtype == KILN_DTYPE_FLOAT16 || dtype == KILN_DTYPE_BFLOAT16 ||
           dtype == KILN_DTYPE_UINT8 || dtype == KILN_DTYPE_INT8;
}

extern "C" size_t kiln_cuda_resize_workspace(const kiln_cuda_resize_desc *d) {
    if (d->rank < 1 || d->rank > kMaxRank) return 0;
    Slots s = plan_slots(d);
    return (size_t)s.first[s.n] * sizeof(Tap);
}

extern "C" kiln_status kiln_cuda_resize(void *stream, const kiln_cuda_resize_desc *d, const void *src, void *dst,
                                        void *workspace) {
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
    if (plain_copy(d)) /* every axis keeps its size and maps o to o (the CPU's result, exactly) */
        return kiln_cuda_check((int)cudaMemcpyAsync(dst, src, (size_t)n * d->elem, cudaMemcpyDeviceToDevice, st),
                               "cudaMemcpyAsync (Resize to the same shape)");
    if (!workspace) return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "Resize needs its workspace");
    Slots s = plan_slots(d);
    Tap *tab = (Tap *)workspace;
    kiln_status r = fill_table(st, d, s, tab);
    if (r != KILN_OK) return r;
    int64_t rows_n = row_threads(d);
    if (fits32(n) && fits32(n_in) && fits32(rows_n)) return resize_run<Ix32>(st, d, s, tab, src, dst, n, rows_n);
    return resize_run<Ix64>(st, d, s, tab, src, dst, n, rows_n);
}
