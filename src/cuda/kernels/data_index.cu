// Index-driven data movement: Gather, GatherElements, GatherND and ScatterND.
//
// Out-of-range indices: the CPU provider fails the node with an error; a kernel cannot do that
// without a device-to-host round trip per call. Here every read is guarded instead, so an index
// outside [-dim, dim) never touches memory out of bounds: Gather / GatherElements / GatherND
// write zeros for it and ScatterND skips it. The CPU provider remains the reference for
// reporting such indices (and Gather's constant indices are checked at placement, see
// ops/data_index.c).
#include "data_common.cuh"

using namespace kiln_data;

namespace {

constexpr int kMaxDims = KILN_CUDA_DATA_MAX_DIMS;

__device__ __forceinline__ int64_t load_index(const int32_t *p, int64_t i) { return p[i]; }
__device__ __forceinline__ int64_t load_index(const int64_t *p, int64_t i) { return p[i]; }

// ---- Gather: dst[o, j, c] = src[o, ind[j], c] ----

template <typename T, typename Ind, typename IX>
__global__ void __launch_bounds__(kThreads)
    gather_kernel(T *__restrict__ dst, const T *__restrict__ src, const Ind *__restrict__ ind,
                  typename IX::Div inner, typename IX::Div n_ind, int64_t dim, typename IX::T n) {
    using I = typename IX::T;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I t = inner.div(i), c = i - t * inner.d();
        I o = n_ind.div(t), j = t - o * n_ind.d();
        int64_t v = load_index(ind, (int64_t)j);
        if (v < 0) v += dim;
        dst[i] = (v >= 0 && v < dim) ? src[((I)o * (I)dim + (I)v) * inner.d() + c] : T();
    }
}

// ---- GatherElements ----

template <typename IX> struct GelGeom {
    int rank, axis;
    int64_t dim; // data's size along axis
    typename IX::Div idims[kMaxDims];
    int64_t xstr[kMaxDims];
};

template <typename T, typename Ind, typename IX>
__global__ void __launch_bounds__(kThreads)
    gather_elements_kernel(T *__restrict__ dst, const T *__restrict__ src, const Ind *__restrict__ ind,
                           GelGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I rem = i;
        int64_t off = 0;
        for (int k = g.rank - 1; k >= 0; --k) {
            I q = g.idims[k].div(rem);
            if (k != g.axis) off += (int64_t)(rem - q * g.idims[k].d()) * g.xstr[k];
            rem = q;
        }
        int64_t v = load_index(ind, (int64_t)i);
        if (v < 0) v += g.dim;
        dst[i] = (v >= 0 && v < g.dim) ? src[off + v * g.xstr[g.axis]] : T();
    }
}

// ---- GatherND / ScatterND: rows of `slice` units addressed by k-tuples ----

template <typename IX> struct NdGeom {
    int k;
    typename IX::Div slice;  // units per gathered slice
    typename IX::Div tuples; // tuples per batch
    int64_t batch_len;       // units of data per batch
    int64_t dims[kMaxDims], str[kMaxDims];
};

// Offset of tuple r's slice, or -1 when one of its entries is out of range.
template <typename IX>
__device__ __forceinline__ int64_t nd_offset(const NdGeom<IX> &g, const int64_t *__restrict__ ind,
                                             typename IX::T r) {
    int64_t b = (int64_t)g.tuples.div(r), off = b * g.batch_len;
    const int64_t *t = ind + (int64_t)r * g.k;
    for (int q = 0; q < g.k; q++) {
        int64_t v = t[q];
        if (v < 0) v += g.dims[q];
        if (v < 0 || v >= g.dims[q]) return -1;
        off += v * g.str[q];
    }
    return off;
}

template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    gather_nd_kernel(T *__restrict__ dst, const T *__restrict__ src, const int64_t *__restrict__ ind,
                     NdGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I r = g.slice.div(i), c = i - r * g.slice.d();
        int64_t off = nd_offset(g, ind, r);
        dst[i] = off >= 0 ? src[off + (int64_t)c] : T();
    }
}

template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    scatter_nd_kernel(T *__restrict__ dst, const T *__restrict__ upd, const int64_t *__restrict__ ind,
                      NdGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I r = g.slice.div(i), c = i - r * g.slice.d();
        int64_t off = nd_offset(g, ind, r);
        if (off >= 0) dst[off + (int64_t)c] = upd[i];
    }
}

// The geometry of GatherND / ScatterND in units of u bytes (u divides a slice's bytes).
template <typename IX>
static NdGeom<IX> nd_geom(int rank, const int64_t *data_dims, int b, int k, int64_t tuples, int64_t per_unit) {
    NdGeom<IX> g;
    int64_t str[kMaxDims];
    str[rank - 1] = 1;
    for (int q = rank - 2; q >= 0; q--) str[q] = str[q + 1] * data_dims[q + 1];
    int64_t slice = 1;
    for (int q = b + k; q < rank; q++) slice *= data_dims[q];
    g.k = k;
    g.slice = IX::make(slice / per_unit);
    g.tuples = IX::make(tuples);
    g.batch_len = b > 0 ? str[b - 1] / per_unit : 0;
    for (int q = 0; q < k; q++) {
        g.dims[q] = data_dims[b + q];
        g.str[q] = str[b + q] / per_unit;
    }
    return g;
}

static kiln_status nd_check(int rank, int b, int k, const char *what) {
    if (rank < 1 || rank > kMaxDims || b < 0 || k < 1 || b + k > rank)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "%s: rank %d, batch_dims %d, tuple length %d", what, rank,
                              b, k);
    return KILN_OK;
}

template <typename F> static kiln_status with_index(int dtype, F f) {
    if (dtype == KILN_DTYPE_INT32) f(Tag<int32_t>());
    else if (dtype == KILN_DTYPE_INT64) f(Tag<int64_t>());
    else return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "indices of type %d are not supported", dtype);
    return KILN_OK;
}

} // namespace

extern "C" kiln_status kiln_cuda_gather(void *stream, size_t elem, int64_t outer, int64_t dim, int64_t inner,
                                        const void *src, const void *indices, int index_dtype, int64_t n_indices,
                                        void *dst) {
    if (index_dtype != KILN_DTYPE_INT32 && index_dtype != KILN_DTYPE_INT64)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "Gather indices of type %d", index_dtype);
    int64_t n = outer * n_indices * inner;
    if (n <= 0) return KILN_OK;
    cudaStream_t st = (cudaStream_t)stream;
    int64_t row_bytes = inner * (int64_t)elem;
    const void *ptrs[2] = {src, dst};
    size_t u = widest_unit(elem, 1, &row_bytes, 2, ptrs);
    int64_t uinner = row_bytes / (int64_t)u, un = n / (int64_t)(u / elem);
    bool small = fits32(un) && fits32(outer * dim * uinner);
    kiln_status s = with_unit(u, [&](auto tag) {
        using T = typename decltype(tag)::type;
        with_index(index_dtype, [&](auto itag) {
            using Ind = typename decltype(itag)::type;
            if (small)
                gather_kernel<T, Ind, Ix32><<<grid_for(un), kThreads, 0, st>>>(
                    (T *)dst, (const T *)src, (const Ind *)indices, Ix32::make(uinner), Ix32::make(n_indices), dim,
                    (uint32_t)un);
            else
                gather_kernel<T, Ind, Ix64><<<grid_for(un), kThreads, 0, st>>>(
                    (T *)dst, (const T *)src, (const Ind *)indices, Ix64::make(uinner), Ix64::make(n_indices), dim,
                    un);
        });
    });
    if (s != KILN_OK) return s;
    return launched("gather kernel");
}

template <typename T, typename Ind, typename IX>
static void launch_gather_elements(cudaStream_t st, int rank, const int64_t *idims, const int64_t *ddims, int axis,
                                   const void *src, const void *ind, void *dst, int64_t n) {
    GelGeom<IX> g;
    g.rank = rank;
    g.axis = axis;
    g.dim = ddims[axis];
    int64_t str = 1;
    for (int k = rank - 1; k >= 0; k--) {
        g.idims[k] = IX::make(idims[k]);
        g.xstr[k] = str;
        str *= ddims[k];
    }
    gather_elements_kernel<T, Ind, IX>
        <<<grid_for(n), kThreads, 0, st>>>((T *)dst, (const T *)src, (const Ind *)ind, g, (typename IX::T)n);
}

extern "C" kiln_status kiln_cuda_gather_elements(void *stream, size_t elem, int rank, const int64_t *index_dims,
                                                 const int64_t *data_dims, int axis, const void *src,
                                                 const void *indices, int index_dtype, void *dst) {
    if (rank < 1 || rank > kMaxDims || axis < 0 || axis >= rank)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "GatherElements of rank %d, axis %d", rank, axis);
    if (index_dtype != KILN_DTYPE_INT32 && index_dtype != KILN_DTYPE_INT64)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "GatherElements indices of type %d", index_dtype);
    int64_t n = 1;
    for (int k = 0; k < rank; k++) n *= index_dims[k];
    if (n <= 0) return KILN_OK;
    cudaStream_t st = (cudaStream_t)stream;
    bool small = fits32(n);
    kiln_status s = with_unit(elem, [&](auto tag) {
        using T = typename decltype(tag)::type;
        with_index(index_dtype, [&](auto itag) {
            using Ind = typename decltype(itag)::type;
            if (small) launch_gather_elements<T, Ind, Ix32>(st, rank, index_dims, data_dims, axis, src, indices, dst, n);
            else launch_gather_elements<T, Ind, Ix64>(st, rank, index_dims, data_dims, axis, src, indices, dst, n);
        });
    });
    return s != KILN_OK ? s : launched("GatherElements kernel");
}

// The unit for rows of `slice` elements: wide when slices and both buffers allow it.
static size_t slice_unit(size_t elem, int rank, const int64_t *dims, int first, const void *a, const void *b) {
    int64_t slice = 1;
    for (int q = first; q < rank; q++) slice *= dims[q];
    int64_t bytes = slice * (int64_t)elem;
    const void *ptrs[2] = {a, b};
    return widest_unit(elem, 1, &bytes, 2, ptrs);
}

extern "C" kiln_status kiln_cuda_gather_nd(void *stream, size_t elem, int rank, const int64_t *data_dims,
                                           int batch_dims, int k, int64_t tuples, const void *src,
                                           const int64_t *indices, void *dst) {
    kiln_status chk = nd_check(rank, batch_dims, k, "GatherND");
    if (chk != KILN_OK) return chk;
    int64_t batches = 1, slice = 1;
    for (int q = 0; q < batch_dims; q++) batches *= data_dims[q];
    for (int q = batch_dims + k; q < rank; q++) slice *= data_dims[q];
    int64_t n = batches * tuples * slice;
    if (n <= 0) return KILN_OK;
    size_t u = slice_unit(elem, rank, data_dims, batch_dims + k, src, dst);
    int64_t per = (int64_t)(u / elem), un = n / per;
    cudaStream_t st = (cudaStream_t)stream;
    bool small = fits32(un);
    kiln_status s = with_unit(u, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (small)
            gather_nd_kernel<T, Ix32><<<grid_for(un), kThreads, 0, st>>>(
                (T *)dst, (const T *)src, indices, nd_geom<Ix32>(rank, data_dims, batch_dims, k, tuples, per),
                (uint32_t)un);
        else
            gather_nd_kernel<T, Ix64><<<grid_for(un), kThreads, 0, st>>>(
                (T *)dst, (const T *)src, indices, nd_geom<Ix64>(rank, data_dims, batch_dims, k, tuples, per), un);
    });
    return s != KILN_OK ? s : launched("GatherND kernel");
}

extern "C" kiln_status kiln_cuda_scatter_nd(void *stream, size_t elem, int rank, const int64_t *data_dims, int k,
                                            int64_t n_tuples, const void *data, const int64_t *indices,
                                            const void *updates, void *dst) {
    kiln_status chk = nd_check(rank, 0, k, "ScatterND");
    if (chk != KILN_OK) return chk;
    cudaStream_t st = (cudaStream_t)stream;
    int64_t total = 1, slice = 1;
    for (int q = 0; q < rank; q++) total *= data_dims[q];
    for (int q = k; q < rank; q++) slice *= data_dims[q];
    if (total <= 0) return KILN_OK;
    if (dst != data) {
        chk = kiln_cuda_check((int)cudaMemcpyAsync(dst, data, (size_t)total * elem, cudaMemcpyDeviceToDevice, st),
                              "cudaMemcpyAsync (ScatterND data)");
        if (chk != KILN_OK) return chk;
    }
    int64_t n = n_tuples * slice;
    if (n <= 0) return KILN_OK;
    size_t u = slice_unit(elem, rank, data_dims, k, updates, dst);
    int64_t per = (int64_t)(u / elem), un = n / per;
    bool small = fits32(un);
    kiln_status s = with_unit(u, [&](auto tag) {
        using T = typename decltype(tag)::type;
        // tuples: the geometry's batch count is 1, so every tuple's base offset is 0
        if (small)
            scatter_nd_kernel<T, Ix32><<<grid_for(un), kThreads, 0, st>>>(
                (T *)dst, (const T *)updates, indices, nd_geom<Ix32>(rank, data_dims, 0, k, n_tuples, per),
                (uint32_t)un);
        else
            scatter_nd_kernel<T, Ix64><<<grid_for(un), kThreads, 0, st>>>(
                (T *)dst, (const T *)updates, indices, nd_geom<Ix64>(rank, data_dims, 0, k, n_tuples, per), un);
    });
    return s != KILN_OK ? s : launched("ScatterND kernel");
}
