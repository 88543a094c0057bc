/* Channel normalisations on the GPU: GroupNormalization and InstanceNormalization (instance norm
 * is group norm with one channel per group), and BatchNormalization with given statistics.
 *
 * Group norm statistics run over a (sample, group) block of channels/groups * inner elements,
 * which can be long (a diffusion UNet has 32 groups of 40k+ elements) while there are few of
 * them. So a block is cut into chunks: one kernel computes (count, mean, M2) per chunk and a
 * second merges a block's chunks (Chan's combine) and normalises its chunk. When the blocks are
 * many, one kernel does both per block. Within a thread, values are folded in vectors: the
 * vector's own mean and M2 first, then merged, so the variance stays accurate without dividing
 * per element. y = (x - mean) * (inv * scale[c]) + bias[c], inv = 1 / sqrt(var + eps), as the CPU.
 *
 * Batch norm is elementwise per channel: y = (x - mean) * a + b with a = scale / sqrt(var + eps)
 * computed in double (as the CPU does) once per block for planes of one channel, or per element
 * when the planes are small. */
#include "norm.h"
#include "norm_reduce_util.cuh"

namespace {

using nr::from_f;
using nr::load_any;
using nr::load_vec;
using nr::Moments;
using nr::store_vec;

template <int V> __device__ __forceinline__ Moments vec_moments(const float (&v)[V]) {
    float s = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) s += v[i];
    const float mean = s / (float)V;
    float m2 = 0.0f;
#pragma unroll
    for (int i = 0; i < V; i++) m2 += (v[i] - mean) * (v[i] - mean);
    return Moments{(float)V, mean, m2};
}

/* moments of elements [k0, k1) of xr, V at a time (k0 and k1 multiples of V) */
template <typename T, int V>
__device__ Moments chunk_moments(const T *xr, int64_t k0, int64_t k1) {
    Moments acc = {0.0f, 0.0f, 0.0f};
    for (int64_t j = k0 + (int64_t)threadIdx.x * V; j < k1; j += (int64_t)blockDim.x * V) {
        float v[V];
        load_vec<T, V>(xr + j, v);
        acc = nr::MergeMoments::merge(acc, vec_moments<V>(v));
    }
    return acc;
}

struct GnShape {
    int64_t rows, len, chunk; /* rows = batch * groups; len per row; chunk per block */
    int splits;               /* blocks per row */
};

template <typename T, int V>
__global__ void gn_partial_kernel(const kiln_cuda_gn_args a, GnShape sh, Moments *part) {
    __shared__ Moments red[32];
    const int64_t b = blockIdx.x, row = b / sh.splits, s = b - row * sh.splits;
    const int64_t k0 = s * sh.chunk, k1 = min(sh.len, k0 + sh.chunk);
    const Moments m = chunk_moments<T, V>((const T *)a.x + row * sh.len, k0, k1);
    const Moments all = nr::block_all<nr::MergeMoments>(m, Moments{0.0f, 0.0f, 0.0f}, red);
    if (threadIdx.x == 0) part[b] = all;
}

/* FUSED: one block per row computes the row's moments itself (part unused). */
template <typename T, int V, bool FUSED>
__global__ void gn_apply_kernel(const kiln_cuda_gn_args a, GnShape sh, const Moments *part) {
    __shared__ Moments red[32];
    const int64_t b = blockIdx.x, row = b / sh.splits, s = b - row * sh.splits;
    const int64_t k0 = s * sh.chunk, k1 = min(sh.len, k0 + sh.chunk);
    const T *xr = (const T *)a.x + row * sh.len;
    T *yr = (T *)a.y + row * sh.len;
    Moments m = {0.0f, 0.0f, 0.0f};
    if (FUSED) {
        m = chunk_moments<T, V>(xr, k0, k1);
    } else {
        for (int i = threadIdx.x; i < sh.splits; i += blockDim.x)
            m = nr::MergeMoments::merge(m, part[row * sh.splits + i]);
    }
    const Moments all = nr::block_all<nr::MergeMoments>(m, Moments{0.0f, 0.0f, 0.0f}, red);
    const float mean = all.mean, inv = 1.0f / sqrtf(all.m2 / all.n + a.eps);
    const int64_t cpg = a.channels / a.groups, c0 = (row % a.groups) * cpg;
    const bool small = sh.len <= 0xffffffffLL;
    for (int64_t j = k0 + (int64_t)threadIdx.x * V; j < k1; j += (int64_t)blockDim.x * V) {
        /* the V elements share a channel (inner is a multiple of V) */
        const int64_t cl = small ? (int64_t)((uint32_t)j / (uint32_t)a.inner) : j / a.inner;
        const int64_t p = (c0 + cl) / a.param_div;
        const float sc = inv * load_any(a.scale, a.scale_dtype, p);
        const float bi = load_any(a.bias, a.bias_dtype, p);
        float v[V];
        load_vec<T, V>(xr + j, v);
#pragma unroll
        for (int i = 0; i < V; i++) v[i] = (v[i] - mean) * sc + bi;
        store_vec<T, V>(yr + j, v);
    }
}

template <typename T, int V>
kiln_status gn_launch(kiln_cuda_provider *p, const kiln_cuda_gn_args &a) {
    cudaStream_t st = (cudaStream_t)kiln_cuda_stream(p);
    const int sms = kiln_cuda_info(p)->sm_count > 0 ? kiln_cuda_info(p)->sm_count : 132;
    GnShape sh;
    sh.rows = a.batch * a.groups;
    sh.len = (a.channels / a.groups) * a.inner;
    /* enough blocks to fill the GPU a few times over, but chunks of at least 4096 elements */
    const int64_t target = 4LL * sms, max_split = nr::ceil_div(sh.len, 4096);
    int64_t splits = nr::ceil_div(target, sh.rows);
    if (splits > max_split) splits = max_split;
    if (splits > 1024) splits = 1024;
    if (splits < 1) splits = 1;
    sh.chunk = nr::ceil_div(nr::ceil_div(sh.len, splits), V) * V;
    sh.splits = (int)nr::ceil_div(sh.len, sh.chunk);
    const int64_t blocks = sh.rows * sh.splits;
    if (blocks > 0x7fffffffLL)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "group norm: %lld blocks exceed the grid",
                              (long long)blocks);
    const int64_t per_block = sh.chunk / V;
    const int threads = per_block >= 1024 ? 512 : per_block >= 256 ? 256 : per_block >= 64 ? 64 : 32;
    if (sh.splits == 1) {
        gn_apply_kernel<T, V, true><<<(unsigned)blocks, threads, 0, st>>>(a, sh, nullptr);
        return kiln_cuda_check(cudaGetLastError(), "group norm");
    }
    void *ws = nullptr;
    kiln_status s = kiln_cuda_workspace(p, (size_t)blocks * sizeof(Moments), &ws);
    if (s != KILN_OK) return s;
    Moments *part = (Moments *)ws;
    gn_partial_kernel<T, V><<<(unsigned)blocks, threads, 0, st>>>(a, sh, part);
    s = kiln_cuda_check(cudaGetLastError(), "group norm (statistics)");
    if (s != KILN_OK) return s;
    gn_apply_kernel<T, V, false><<<(unsigned)blocks, threads, 0, st>>>(a, sh, part);
    return kiln_cuda_check(cudaGetLastError(), "group norm (apply)");
}

template <typename T> kiln_status gn_dispatch(kiln_cuda_provider *p, const kiln_cuda_gn_args &a) {
    constexpr int V = nr::VecWidth<T>::value;
    if (a.inner % V == 0 && nr::aligned(a.x, 16) && nr::aligned(a.y, 16)) return gn_launch<T, V>(p, a);
    return gn_launch<T, 1>(p, a);
}

/* ---- batch normalisation ---- */

struct BnCoef {
    float mean, a, b;
};

__device__ __forceinline__ BnCoef bn_coef(const kiln_cuda_bn_args &a, int64_t c) {
    const double sc = load_any(a.scale, a.scale_dtype, c), var = load_any(a.var, a.var_dtype, c);
    BnCoef k;
    k.mean = load_any(a.mean, a.mean_dtype, c);
    k.a = (float)(sc / sqrt(var + (double)a.eps));
    k.b = load_any(a.bias, a.bias_dtype, c);
    return k;
}

/* blocks of `chunks` per (sample, channel) plane of `inner` elements */
template <typename T, int V>
__global__ void bn_plane_kernel(const kiln_cuda_bn_args a, int64_t chunks, int64_t chunk) {
    const int64_t plane = blockIdx.x / chunks, part = blockIdx.x - plane * chunks;
    const BnCoef k = bn_coef(a, plane % a.channels);
    const int64_t k0 = part * chunk, k1 = min(a.inner, k0 + chunk);
    const T *x = (const T *)a.x + plane * a.inner;
    T *y = (T *)a.y + plane * a.inner;
    for (int64_t j = k0 + (int64_t)threadIdx.x * V; j < k1; j += (int64_t)blockDim.x * V) {
        float v[V];
        load_vec<T, V>(x + j, v);
#pragma unroll
        for (int i = 0; i < V; i++) v[i] = (v[i] - k.mean) * k.a + k.b;
        store_vec<T, V>(y + j, v);
    }
}

template <typename T> __global__ void bn_flat_kernel(const kiln_cuda_bn_args a, int64_t total) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        const BnCoef k = bn_coef(a, (i / a.inner) % a.channels);
        ((T *)a.y)[i] = from_f<T>((nr::to_f<T>(((const T *)a.x)[i]) - k.mean) * k.a + k.b);
    }
}

template <typename T> kiln_status bn_dispatch(cudaStream_t st, const kiln_cuda_bn_args &a) {
    constexpr int V = nr::VecWidth<T>::value;
    const int64_t planes = a.batch * a.channels;
    if (a.inner >= 256) {
        const int threads = 256;
        const int64_t chunk = (int64_t)threads * V * 8; /* 8 vectors a thread */
        const int64_t chunks = nr::ceil_div(a.inner, chunk);
        if (planes * chunks <= 0x7fffffffLL) {
            if (a.inner % V == 0 && nr::aligned(a.x, 16) && nr::aligned(a.y, 16))
                bn_plane_kernel<T, V><<<(unsigned)(planes * chunks), threads, 0, st>>>(a, chunks, chunk);
            else
                bn_plane_kernel<T, 1><<<(unsigned)(planes * chunks), threads, 0, st>>>(a, chunks, chunk);
            return kiln_cuda_check(cudaGetLastError(), "batch norm (planes)");
        }
    }
    const int64_t total = planes * a.inner, blocks = nr::ceil_div(total, 256);
    bn_flat_kernel<T><<<(unsigned)(blocks < 65536 * 8 ? blocks : 65536 * 8), 256, 0, st>>>(a, total);
    return kiln_cuda_check(cudaGetLastError(), "batch norm");
}

} // namespace

extern "C" kiln_status kiln_cuda_group_norm(kiln_cuda_provider *p, const kiln_cuda_gn_args *a) {
    if (a->batch <= 0 || a->channels <= 0 || a->inner <= 0) return KILN_OK;
    if (a->groups <= 0 || a->channels % a->groups || a->param_div <= 0)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT,
                              "group norm: %lld groups do not divide %lld channels",
                              (long long)a->groups, (long long)a->channels);
    NR_FLOAT_SWITCH(a->dtype, T, "group norm", return gn_dispatch<T>(p, *a));
    return KILN_OK;
}

extern "C" kiln_status kiln_cuda_batch_norm(void *stream, const kiln_cuda_bn_args *a) {
    if (a->batch <= 0 || a->channels <= 0 || a->inner <= 0) return KILN_OK;
    NR_FLOAT_SWITCH(a->dtype, T, "batch norm", return bn_dispatch<T>((cudaStream_t)stream, *a));
    return KILN_OK;
}
