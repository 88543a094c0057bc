/* Gradient kernels of the kiln training domain on the GPU: element-wise (UnaryGrad, PowGrad),
 * broadcast and reduction moves (ReduceGrad, SumTo, TileGrad, SliceGrad, PadGrad) and the
 * index-driven GatherGrad and NLLLossGrad (see grad.h). The element-wise forms compute in float32
 * with the CPU kernel's float32 formulas where it has them, in double otherwise (as the CPU). */
#include "grad.h"

#include <cuda_runtime.h>
#include <math.h>

namespace {

constexpr int kThreads = 256;

/* Blocks for a grid-stride loop over n elements: grid.x allows 2^31 - 1, but past a few per SM
 * more blocks only cost scheduling. */
unsigned blocks_for(int64_t n) {
    int64_t b = (n + kThreads - 1) / kThreads;
    if (b > (1 << 20)) b = 1 << 20;
    return (unsigned)(b > 0 ? b : 1);
}

__device__ __forceinline__ int64_t gtid() { return (int64_t)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ int64_t gstride() { return (int64_t)gridDim.x * blockDim.x; }

/* float32 results below the normal range become zero, as the CPU's gk_ftz */
__device__ __forceinline__ float ftz(float v) { return fabsf(v) < 1.17549435e-38f ? 0.0f : v; }

enum { U_RELU, U_LEAKY, U_SIGMOID, U_TANH, U_SQRT, U_ERF, U_ABS, U_SOFTPLUS, U_GELU, U_GELU_TANH, U_RECIP,
       U_HARDSIGMOID, U_HARDSWISH, U_SIN, U_COS, U_CLIP, U_ELU };

__device__ double unary_d(int kind, double t, double alpha, double beta) {
    const double k2pi = 0.7978845608028654, kc = 0.044715, kirt2 = 0.7071067811865476, k1rt2pi = 0.3989422804014327;
    switch (kind) {
    case U_RELU: return t > 0 ? 1.0 : 0.0;
    case U_LEAKY: return t > 0 ? 1.0 : alpha;
    case U_SIGMOID: return t * (1 - t);
    case U_TANH: return 1 - t * t;
    case U_SQRT: return 0.5 / t;
    case U_ERF: return 1.1283791670955126 * exp(-t * t);
    case U_ABS: return t > 0 ? 1.0 : t < 0 ? -1.0 : 0.0;
    case U_SOFTPLUS: return 1 / (1 + exp(-t));
    case U_GELU: return 0.5 * (1 + erf(t * kirt2)) + t * k1rt2pi * exp(-0.5 * t * t);
    case U_GELU_TANH: {
        double u = k2pi * (t + kc * t * t * t), th = tanh(u);
        return 0.5 * (1 + th) + 0.5 * t * (1 - th * th) * k2pi * (1 + 3 * kc * t * t);
    }
    case U_RECIP: return -t * t;
    case U_HARDSIGMOID: {
        double u = alpha * t + beta;
        return u > 0 && u < 1 ? alpha : 0.0;
    }
    case U_HARDSWISH: return t < -3 ? 0.0 : t > 3 ? 1.0 : (2 * t + 3) / 6;
    case U_SIN: return cos(t);
    case U_COS: return -sin(t);
    case U_CLIP: return t > alpha && t < beta ? 1.0 : 0.0;
    case U_ELU: return t > 0 ? 1.0 : alpha * exp(t);
    default: return 0;
    }
}

__global__ void unary_grad_kernel(int kind, float alpha, float beta, const float *__restrict__ g,
                                  const float *__restrict__ t, float *__restrict__ y, int64_t n) {
    for (int64_t i = gtid(); i < n; i += gstride()) {
        float tv = t[i], gv = g[i];
        switch (kind) {
        case U_RELU: y[i] = tv > 0 ? gv : 0.0f; break;
        case U_SIGMOID: y[i] = ftz(gv * tv * (1.0f - tv)); break;
        case U_ERF: y[i] = ftz(gv * (1.12837917f * expf(-tv * tv))); break;
        case U_GELU:
            y[i] = ftz(gv * (0.5f * (1.0f + erff(tv * 0.70710678f)) + tv * 0.39894228f * expf(-0.5f * tv * tv)));
            break;
        default: y[i] = ftz((float)(gv * unary_d(kind, tv, alpha, beta)));
        }
    }
}

__global__ void pow_grad_kernel(double p, const float *__restrict__ g, const float *__restrict__ x,
                                float *__restrict__ y, int64_t n) {
    for (int64_t i = gtid(); i < n; i += gstride()) {
        double xv = x[i];
        double d = p == 2.0 ? 2 * xv : p == 1.0 ? 1.0 : p * pow(xv, p - 1);
        y[i] = ftz((float)((double)g[i] * d));
    }
}

__global__ void bcast_kernel(kiln_cuda_bcast b, float scale, const float *__restrict__ g, float *__restrict__ y,
                             int64_t n) {
    for (int64_t i = gtid(); i < n; i += gstride()) {
        int64_t rem = i, off = 0;
        for (int d = b.rank - 1; d >= 0; d--) {
            int64_t q = rem / b.dims[d];
            off += (rem - q * b.dims[d]) * b.gstride[d];
            rem = q;
        }
        y[i] = ftz((float)((double)scale * g[off]));
    }
}

__global__ void sumto_kernel(kiln_cuda_sumto_args s, float scale, const float *__restrict__ g, float *__restrict__ y) {
    for (int64_t j = gtid(); j < s.ny; j += gstride()) {
        int64_t rem = j, base = 0;
        for (int d = s.krank - 1; d >= 0; d--) {
            int64_t q = rem / s.kdims[d];
            base += (rem - q * s.kdims[d]) * s.kstride[d];
            rem = q;
        }
        double acc = 0;
        for (int64_t k = 0; k < s.nsum; k++) {
            int64_t r = k, off = base;
            for (int d = s.srank - 1; d >= 0; d--) {
                int64_t q = r / s.sdims[d];
                off += (r - q * s.sdims[d]) * s.sstride[d];
                r = q;
            }
            acc += g[off];
        }
        y[j] = ftz((float)(scale * acc));
    }
}

/* g_shape: dims = g's shape, gstride = y's step per axis (the slice's step times y's stride) */
__global__ void slice_scatter_kernel(kiln_cuda_bcast b, int64_t yoff, const float *__restrict__ g,
                                     float *__restrict__ y, int64_t n) {
    for (int64_t i = gtid(); i < n; i += gstride()) {
        int64_t rem = i, off = yoff;
        for (int d = b.rank - 1; d >= 0; d--) {
            int64_t q = rem / b.dims[d];
            off += (rem - q * b.dims[d]) * b.gstride[d];
            rem = q;
        }
        y[off] = g[i];
    }
}

__global__ void pad_grad_kernel(kiln_cuda_padgrad a, const float *__restrict__ g, float *__restrict__ y, int64_t n) {
    for (int64_t i = gtid(); i < n; i += gstride()) {
        int64_t rem = i, off = 0, gs = 1;
        bool in = true;
        for (int d = a.rank - 1; d >= 0; d--) {
            int64_t q = rem / a.ydims[d], k = rem - q * a.ydims[d] + a.lo[d];
            in = in && k >= 0 && k < a.gdims[d];
            off += k * gs;
            gs *= a.gdims[d];
            rem = q;
        }
        y[i] = in ? g[off] : 0.0f;
    }
}

template <typename I>
__global__ void gather_grad_kernel(const float *__restrict__ g, const I *__restrict__ ind, int64_t n_ind,
                                   int64_t outer, int64_t len, int64_t inner, float *__restrict__ y) {
    int64_t total = outer * n_ind * inner;
    for (int64_t i = gtid(); i < total; i += gstride()) {
        int64_t t = i % inner, oj = i / inner, j = oj % n_ind, o = oj / n_ind;
        int64_t k = (int64_t)ind[j];
        if (k < 0) k += len;
        if (k < 0 || k >= len) continue;
        atomicAdd(&y[(o * len + k) * inner + t], g[i]);
    }
}

template <typename I>
__device__ __forceinline__ bool counted(const I *target, int64_t i, int64_t C, int64_t ignore, int64_t *c) {
    *c = (int64_t)target[i];
    return *c != ignore && *c >= 0 && *c < C;
}

/* One block: the weight sum of the counted targets (for mean), then every target's gradient. The
 * sum runs in double in a fixed order (per thread, then a tree), so it is deterministic. */
template <typename I>
__global__ void nll_grad_kernel(const float *__restrict__ g, int per_elem, int mean, const I *__restrict__ target,
                                const float *__restrict__ w, int64_t N, int64_t C, int64_t D, int64_t ignore,
                                float *__restrict__ y) {
    __shared__ double part[kThreads];
    int64_t total = N * D;
    double wsum = 0;
    if (mean) {
        for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
            int64_t c;
            if (counted(target, i, C, ignore, &c)) wsum += w ? (double)w[c] : 1.0;
        }
        part[threadIdx.x] = wsum;
        __syncthreads();
        for (int s = blockDim.x / 2; s > 0; s >>= 1) {
            if ((int)threadIdx.x < s) part[threadIdx.x] += part[threadIdx.x + s];
            __syncthreads();
        }
        wsum = part[0];
    }
    for (int64_t i = threadIdx.x; i < total; i += blockDim.x) {
        int64_t c;
        if (!counted(target, i, C, ignore, &c)) continue;
        double wc = w ? (double)w[c] : 1.0, gv = g[per_elem ? i : 0];
        if (mean) gv = wsum != 0 ? gv / wsum : 0;
        int64_t n = i / D, d = i % D;
        y[(n * C + c) * D + d] = ftz((float)(-wc * gv));
    }
}

template <typename I>
__global__ void nll_loss_kernel(const float *__restrict__ x, const I *__restrict__ target,
                                const float *__restrict__ w, int64_t N, int64_t C, int64_t D, int has_ii,
                                int64_t ii, int red, float *__restrict__ y) {
    __shared__ double ps[kThreads], pw[kThreads];
    double sum = 0, wsum = 0;
    for (int64_t i = threadIdx.x; i < N * D; i += blockDim.x) {
        int64_t t = (int64_t)target[i], n = i / D, d = i % D;
        double l = 0, wv = 0;
        if (!(has_ii && t == ii) && t >= 0 && t < C) {
            wv = w ? (double)w[t] : 1.0;
            l = -(double)x[(n * C + t) * D + d] * wv;
        }
        if (red == 0) y[i] = (float)l;
        sum += l;
        wsum += wv;
    }
    if (red == 0) return;
    ps[threadIdx.x] = sum;
    pw[threadIdx.x] = wsum;
    __syncthreads();
    for (int s = blockDim.x / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) {
            ps[threadIdx.x] += ps[threadIdx.x + s];
            pw[threadIdx.x] += pw[threadIdx.x + s];
        }
        __syncthreads();
    }
    if (threadIdx.x == 0) y[0] = (float)(red == 1 ? ps[0] : ps[0] / pw[0]);
}

} // namespace

extern "C" {

kiln_status kiln_cuda_nll_loss(void *stream, const float *x, const void *target, int target_dtype, const float *w,
                               int64_t N, int64_t C, int64_t D, int has_ignore, int64_t ignore_index,
                               int reduction, float *y) {
    cudaStream_t st = (cudaStream_t)stream;
    if (N * D <= 0 && reduction == 0) return KILN_OK;
    if (target_dtype == KILN_DTYPE_INT64)
        nll_loss_kernel<<<1, kThreads, 0, st>>>(x, (const int64_t *)target, w, N, C, D, has_ignore, ignore_index,
                                                reduction, y);
    else
        nll_loss_kernel<<<1, kThreads, 0, st>>>(x, (const int32_t *)target, w, N, C, D, has_ignore, ignore_index,
                                                reduction, y);
    return kiln_cuda_check((int)cudaGetLastError(), "NegativeLogLikelihoodLoss kernel launch");
}

kiln_status kiln_cuda_unary_grad(void *stream, int kind, float alpha, float beta, const float *g, const float *t,
                                 float *y, int64_t n) {
    if (n <= 0) return KILN_OK;
    unary_grad_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(kind, alpha, beta, g, t, y, n);
    return kiln_cuda_check((int)cudaGetLastError(), "UnaryGrad kernel launch");
}

kiln_status kiln_cuda_pow_grad(void *stream, double p, const float *g, const float *x, float *y, int64_t n) {
    if (n <= 0) return KILN_OK;
    pow_grad_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(p, g, x, y, n);
    return kiln_cuda_check((int)cudaGetLastError(), "PowGrad kernel launch");
}

kiln_status kiln_cuda_bcast_scale(void *stream, const kiln_cuda_bcast *b, float scale, const float *g, float *y) {
    int64_t n = 1;
    for (int d = 0; d < b->rank; d++) n *= b->dims[d];
    if (n <= 0) return KILN_OK;
    bcast_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(*b, scale, g, y, n);
    return kiln_cuda_check((int)cudaGetLastError(), "broadcast gradient kernel launch");
}

kiln_status kiln_cuda_sumto(void *stream, const kiln_cuda_sumto_args *s, float scale, const float *g, float *y) {
    if (s->ny <= 0) return KILN_OK;
    sumto_kernel<<<blocks_for(s->ny), kThreads, 0, (cudaStream_t)stream>>>(*s, scale, g, y);
    return kiln_cuda_check((int)cudaGetLastError(), "SumTo kernel launch");
}

kiln_status kiln_cuda_slice_scatter(void *stream, const kiln_cuda_bcast *b, int64_t yoff, const float *g, float *y) {
    int64_t n = 1;
    for (int d = 0; d < b->rank; d++) n *= b->dims[d];
    if (n <= 0) return KILN_OK;
    slice_scatter_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(*b, yoff, g, y, n);
    return kiln_cuda_check((int)cudaGetLastError(), "SliceGrad kernel launch");
}

kiln_status kiln_cuda_pad_grad(void *stream, const kiln_cuda_padgrad *a, const float *g, float *y) {
    int64_t n = 1;
    for (int d = 0; d < a->rank; d++) n *= a->ydims[d];
    if (n <= 0) return KILN_OK;
    pad_grad_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(*a, g, y, n);
    return kiln_cuda_check((int)cudaGetLastError(), "PadGrad kernel launch");
}

kiln_status kiln_cuda_gather_grad(void *stream, const float *g, const void *ind, int ind_dtype, int64_t n_ind,
                                  int64_t outer, int64_t len, int64_t inner, float *y) {
    cudaStream_t st = (cudaStream_t)stream;
    size_t ybytes = (size_t)(outer * len * inner) * sizeof(float);
    if (ybytes) {
        kiln_status s = kiln_cuda_check((int)cudaMemsetAsync(y, 0, ybytes, st), "GatherGrad (cudaMemsetAsync)");
        if (s != KILN_OK) return s;
    }
    int64_t total = outer * n_ind * inner;
    if (total <= 0 || len <= 0) return KILN_OK;
    if (ind_dtype == KILN_DTYPE_INT64)
        gather_grad_kernel<<<blocks_for(total), kThreads, 0, st>>>(g, (const int64_t *)ind, n_ind, outer, len, inner, y);
    else
        gather_grad_kernel<<<blocks_for(total), kThreads, 0, st>>>(g, (const int32_t *)ind, n_ind, outer, len, inner, y);
    return kiln_cuda_check((int)cudaGetLastError(), "GatherGrad kernel launch");
}

kiln_status kiln_cuda_nll_grad(void *stream, const float *g, int per_elem, int mean, const void *target,
                               int target_dtype, const float *w, int64_t N, int64_t C, int64_t D,
                               int64_t ignore_index, float *y) {
    cudaStream_t st = (cudaStream_t)stream;
    size_t ybytes = (size_t)(N * C * D) * sizeof(float);
    if (ybytes) {
        kiln_status s = kiln_cuda_check((int)cudaMemsetAsync(y, 0, ybytes, st), "NLLLossGrad (cudaMemsetAsync)");
        if (s != KILN_OK) return s;
    }
    if (N * D <= 0) return KILN_OK;
    if (target_dtype == KILN_DTYPE_INT64)
        nll_grad_kernel<<<1, kThreads, 0, st>>>(g, per_elem, mean, (const int64_t *)target, w, N, C, D, ignore_index, y);
    else
        nll_grad_kernel<<<1, kThreads, 0, st>>>(g, per_elem, mean, (const int32_t *)target, w, N, C, D, ignore_index, y);
    return kiln_cuda_check((int)cudaGetLastError(), "NLLLossGrad kernel launch");
}

} // extern "C"
