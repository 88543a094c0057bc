// The CUDA data-movement engine: one strided N-D copy that Transpose, Slice, Expand, Tile and
// DepthToSpace reduce to (with a shared-memory tile for real transposes), Concat / Split in one
// launch per 32 parts, Trilu and Pad. Elements move as unsigned units of their size; where rows
// are contiguous and aligned, several elements move as one unit of up to 16 bytes.
#include "data_common.cuh"

#include <string.h>

using namespace kiln_data;

namespace {

constexpr int kMaxDims = KILN_CUDA_DATA_MAX_DIMS;

// ---------------------------------------------------------------------------------------------
// strided copy

template <typename IX> struct StridedGeom {
    int rank;
    typename IX::Div div[kMaxDims];
    typename IX::S stride[kMaxDims];
};

template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    strided_kernel(T *__restrict__ dst, const T *__restrict__ src, StridedGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    using S = typename IX::S;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I rem = i;
        S off = 0;
#pragma unroll
        for (int k = kMaxDims - 1; k > 0; --k) {
            if (k < g.rank) {
                I q = g.div[k].div(rem);
                off += (S)(rem - q * g.div[k].d()) * g.stride[k];
                rem = q;
            }
        }
        off += (S)rem * g.stride[0];
        dst[i] = src[off];
    }
}

template <typename T, typename IX>
static void launch_strided(cudaStream_t st, void *dst, const void *src, int rank, const int64_t *dims,
                           const int64_t *strides, int64_t n) {
    StridedGeom<IX> g;
    g.rank = rank;
    for (int k = 0; k < kMaxDims; k++) {
        g.div[k] = IX::make(k < rank ? dims[k] : 1);
        g.stride[k] = (typename IX::S)(k < rank ? strides[k] : 0);
    }
    strided_kernel<T, IX><<<grid_for(n), kThreads, 0, st>>>((T *)dst, (const T *)src, g, (typename IX::T)n);
}

// A batched 2-D transpose through shared memory: dim A is contiguous in the source, dim B (the
// output's last) is contiguous in the destination, the other dims are batch. Reads and writes
// are both coalesced, where the plain strided kernel would read with stride src_b.
constexpr int kTile = 32, kTileRows = 8;

struct TileGeom {
    int64_t A, B, src_b, dst_a;
    int64_t tiles_a, tiles_b, n_tiles;
    int n_batch;
    int64_t bdims[kMaxDims], bsrc[kMaxDims], bdst[kMaxDims];
};

template <typename T>
__global__ void __launch_bounds__(kTile *kTileRows)
    transpose_tiled_kernel(T *__restrict__ dst, const T *__restrict__ src, TileGeom g) {
    __shared__ T tile[kTile][kTile + 1];
    for (int64_t t = blockIdx.x; t < g.n_tiles; t += gridDim.x) {
        int64_t tb = t % g.tiles_b, r = t / g.tiles_b;
        int64_t ta = r % g.tiles_a, batch = r / g.tiles_a;
        int64_t so = 0, dof = 0;
        for (int k = g.n_batch - 1; k >= 0; --k) {
            int64_t q = batch / g.bdims[k], c = batch - q * g.bdims[k];
            so += c * g.bsrc[k];
            dof += c * g.bdst[k];
            batch = q;
        }
        int64_t a0 = ta * kTile, b0 = tb * kTile;
        for (int i = threadIdx.y; i < kTile; i += kTileRows) {
            int64_t a = a0 + threadIdx.x, b = b0 + i;
            if (a < g.A && b < g.B) tile[i][threadIdx.x] = src[so + a + b * g.src_b];
        }
        __syncthreads();
        for (int i = threadIdx.y; i < kTile; i += kTileRows) {
            int64_t a = a0 + i, b = b0 + threadIdx.x;
            if (a < g.A && b < g.B) dst[dof + a * g.dst_a + b] = tile[threadIdx.x][i];
        }
        __syncthreads();
    }
}

// Drops size-1 dims and merges neighbours that read contiguously (the destination is always
// contiguous, so only the source decides). Returns the new rank (0: a single element).
static int collapse_dims(int rank, const int64_t *dims, const int64_t *strides, int64_t *od, int64_t *os) {
    int n = 0;
    for (int k = 0; k < rank; k++) {
        if (dims[k] == 1) continue;
        if (n > 0 && os[n - 1] == strides[k] * dims[k]) {
            od[n - 1] *= dims[k];
            os[n - 1] = strides[k];
            continue;
        }
        od[n] = dims[k];
        os[n] = strides[k];
        n++;
    }
    return n;
}

// Uses the tile when the output's last dim would be read with a stride and some other dim is
// the source's contiguous one, both long enough for tiles to pay.
static bool try_tiled(cudaStream_t st, size_t elem, int n, const int64_t *d, const int64_t *s, void *dst,
                      const void *src, kiln_status *status) {
    if (n < 2 || s[n - 1] <= 1 || d[n - 1] < 8) return false;
    int j = -1;
    for (int k = 0; k < n - 1; k++)
        if (s[k] == 1) j = k;
    if (j < 0 || d[j] < 8) return false;
    TileGeom g;
    g.A = d[j];
    g.B = d[n - 1];
    g.src_b = s[n - 1];
    int64_t dst_str[kMaxDims];
    dst_str[n - 1] = 1;
    for (int k = n - 2; k >= 0; k--) dst_str[k] = dst_str[k + 1] * d[k + 1];
    g.dst_a = dst_str[j];
    g.n_batch = 0;
    int64_t batch = 1;
    for (int k = 0; k < n - 1; k++) {
        if (k == j) continue;
        g.bdims[g.n_batch] = d[k];
        g.bsrc[g.n_batch] = s[k];
        g.bdst[g.n_batch] = dst_str[k];
        g.n_batch++;
        batch *= d[k];
    }
    g.tiles_a = (g.A + kTile - 1) / kTile;
    g.tiles_b = (g.B + kTile - 1) / kTile;
    g.n_tiles = batch * g.tiles_a * g.tiles_b;
    unsigned blocks = (unsigned)(g.n_tiles < (1 << 18) ? g.n_tiles : (1 << 18));
    dim3 block(kTile, kTileRows);
    *status = with_unit(elem, [&](auto tag) {
        using T = typename decltype(tag)::type;
        transpose_tiled_kernel<T><<<blocks, block, 0, st>>>((T *)dst, (const T *)src, g);
    });
    if (*status == KILN_OK) *status = launched("transpose kernel");
    return true;
}

// ---------------------------------------------------------------------------------------------
// Concat / Split

constexpr int kCatMax = 32;

template <typename IX> struct CatGeom {
    int n;
    typename IX::Div cols;         // columns of the big rows this launch covers
    typename IX::T row, col0;      // big row length, first column of this launch
    void *part[kCatMax];
    typename IX::T off[kCatMax + 1]; // part i covers columns [off[i], off[i + 1]) of the launch
};

template <typename T, typename IX, bool kSplit>
__global__ void __launch_bounds__(kThreads) concat_kernel(T *big, CatGeom<IX> g, typename IX::T n) {
    using I = typename IX::T;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I o = g.cols.div(i), c = i - o * g.cols.d();
        int lo = 0, hi = g.n - 1; // the last part starting at or before c (empty parts are skipped)
        while (lo < hi) {
            int mid = (lo + hi + 1) >> 1;
            if (g.off[mid] <= c) lo = mid;
            else hi = mid - 1;
        }
        I len = g.off[lo + 1] - g.off[lo];
        I p = o * len + (c - g.off[lo]), b = o * g.row + g.col0 + c;
        T *part = (T *)g.part[lo];
        if (kSplit) {
            if (part) part[p] = big[b];
        } else {
            big[b] = part[p];
        }
    }
}

template <typename T, typename IX, bool kSplit>
static void launch_concat(cudaStream_t st, void *big, int n, void *const *parts, const int64_t *lens,
                          int64_t per_unit, int64_t outer, int64_t row) {
    int64_t col0 = 0;
    for (int i0 = 0; i0 < n; i0 += kCatMax) {
        int m = n - i0 < kCatMax ? n - i0 : kCatMax;
        CatGeom<IX> g;
        g.n = m;
        g.row = (typename IX::T)row;
        g.col0 = (typename IX::T)col0;
        int64_t cols = 0;
        int any = 0;
        for (int i = 0; i < m; i++) {
            g.part[i] = parts[i0 + i];
            g.off[i] = (typename IX::T)cols;
            cols += lens[i0 + i] / per_unit;
            any |= parts[i0 + i] != nullptr && lens[i0 + i] > 0;
        }
        g.off[m] = (typename IX::T)cols;
        g.cols = IX::make(cols);
        if (cols > 0 && any) {
            int64_t total = outer * cols;
            concat_kernel<T, IX, kSplit>
                <<<grid_for(total), kThreads, 0, st>>>((T *)big, g, (typename IX::T)total);
        }
        col0 += cols;
    }
}

static kiln_status concat_or_split(void *stream, size_t elem, int64_t outer, int n, void *const *parts,
                                   const int64_t *lens, void *big, bool split, const char *what) {
    if (n < 1) return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "%s of no parts", what);
    int64_t row = 0;
    for (int i = 0; i < n; i++) row += lens[i];
    if (outer <= 0 || row <= 0) return KILN_OK;
    // one unit for every part: the widest dividing every part's row bytes and address
    int64_t bytes[kCatMax + 1];
    const void *ptrs[kCatMax + 1];
    size_t u = 16;
    for (int i0 = 0; i0 < n; i0 += kCatMax) {
        int m = n - i0 < kCatMax ? n - i0 : kCatMax;
        for (int i = 0; i < m; i++) {
            bytes[i] = lens[i0 + i] * (int64_t)elem;
            ptrs[i] = parts[i0 + i];
        }
        ptrs[m] = big;
        size_t v = widest_unit(elem, m, bytes, m + 1, ptrs);
        if (v < u) u = v;
    }
    int64_t g = (int64_t)(u / elem), urow = row / g;
    cudaStream_t st = (cudaStream_t)stream;
    bool small = fits32(outer * urow);
    kiln_status s = with_unit(u, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (split) {
            if (small) launch_concat<T, Ix32, true>(st, big, n, parts, lens, g, outer, urow);
            else launch_concat<T, Ix64, true>(st, big, n, parts, lens, g, outer, urow);
        } else {
            if (small) launch_concat<T, Ix32, false>(st, big, n, parts, lens, g, outer, urow);
            else launch_concat<T, Ix64, false>(st, big, n, parts, lens, g, outer, urow);
        }
    });
    return s != KILN_OK ? s : launched(what);
}

// ---------------------------------------------------------------------------------------------
// Trilu

template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    trilu_kernel(T *__restrict__ dst, const T *__restrict__ src, typename IX::Div cols, typename IX::Div rows,
                 int64_t k, int upper, typename IX::T n) {
    using I = typename IX::T;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I t = cols.div(i), c = i - t * cols.d();
        I r = t - rows.div(t) * rows.d();
        int64_t diff = (int64_t)c - (int64_t)r;
        bool keep = upper ? diff >= k : diff <= k;
        dst[i] = keep ? src[i] : T();
    }
}

// ---------------------------------------------------------------------------------------------
// Pad

template <typename IX> struct PadGeom {
    int rank, mode;
    typename IX::Div odims[kMaxDims];
    int64_t istr[kMaxDims], add_b[kMaxDims], crop_b[kMaxDims], kept[kMaxDims];
};

// Where output coordinate c (relative to the kept input range of n) reads from; -1: the constant.
__device__ __forceinline__ int64_t border_index(int mode, int64_t c, int64_t n) {
    if (c >= 0 && c < n) return c;
    if (n <= 0) return -1;
    switch (mode) {
    case KILN_CUDA_PAD_EDGE: return c < 0 ? 0 : n - 1;
    case KILN_CUDA_PAD_WRAP: return ((c % n) + n) % n;
    case KILN_CUDA_PAD_REFLECT: {
        if (n == 1) return 0;
        int64_t period = 2 * (n - 1), m = ((c % period) + period) % period;
        return m < n ? m : period - m;
    }
    default: return -1;
    }
}

template <typename T, typename IX>
__global__ void __launch_bounds__(kThreads)
    pad_kernel(T *__restrict__ dst, const T *__restrict__ src, PadGeom<IX> g, T value, typename IX::T n) {
    using I = typename IX::T;
    for (I i = (I)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (I)gridDim.x * blockDim.x) {
        I rem = i;
        int64_t off = 0;
        bool fill = false;
        for (int k = g.rank - 1; k >= 0; --k) {
            I q = g.odims[k].div(rem);
            int64_t o = (int64_t)(rem - q * g.odims[k].d());
            rem = q;
            int64_t c = border_index(g.mode, o - g.add_b[k], g.kept[k]);
            if (c < 0) fill = true;
            else off += (c + g.crop_b[k]) * g.istr[k];
        }
        dst[i] = fill ? value : src[off];
    }
}

template <typename T, typename IX>
static void launch_pad(cudaStream_t st, int mode, int rank, const int64_t *in_dims, const int64_t *out_dims,
                       const int64_t *pb, const int64_t *pe, const void *value, const void *src, void *dst,
                       int64_t n) {
    PadGeom<IX> g;
    g.rank = rank;
    g.mode = mode;
    int64_t str = 1;
    for (int k = rank - 1; k >= 0; k--) {
        int64_t crop_b = pb[k] < 0 ? -pb[k] : 0, crop_e = pe[k] < 0 ? -pe[k] : 0;
        g.odims[k] = IX::make(out_dims[k]);
        g.istr[k] = str;
        g.add_b[k] = pb[k] > 0 ? pb[k] : 0;
        g.crop_b[k] = crop_b;
        g.kept[k] = in_dims[k] - crop_b - crop_e;
        str *= in_dims[k];
    }
    T v;
    memcpy(&v, value, sizeof v);
    pad_kernel<T, IX><<<grid_for(n), kThreads, 0, st>>>((T *)dst, (const T *)src, g, v, (typename IX::T)n);
}

} // namespace

extern "C" kiln_status kiln_cuda_strided_copy(void *stream, size_t elem, int rank, const int64_t *dims, void *dst,
                                              const void *src, const int64_t *src_strides) {
    if (rank < 0 || rank > 2 * kMaxDims)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "strided copy of rank %d", rank);
    int64_t total = 1;
    for (int k = 0; k < rank; k++) total *= dims[k];
    if (total <= 0) return KILN_OK;
    cudaStream_t st = (cudaStream_t)stream;
    int64_t d[2 * kMaxDims], s[2 * kMaxDims];
    int n = collapse_dims(rank, dims, src_strides, d, s);
    if (n == 0 || (n == 1 && s[0] == 1))
        return kiln_cuda_check((int)cudaMemcpyAsync(dst, src, (size_t)total * elem, cudaMemcpyDeviceToDevice, st),
                               "cudaMemcpyAsync (strided copy)");
    if (n > kMaxDims)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "strided copy keeps %d dims after merging, at most %d", n,
                              kMaxDims);
    if (s[n - 1] == 1) { // contiguous runs: move them in wider units
        int64_t bytes[kMaxDims];
        for (int k = 0; k < n - 1; k++) bytes[k] = (s[k] < 0 ? -s[k] : s[k]) * (int64_t)elem;
        bytes[n - 1] = d[n - 1] * (int64_t)elem;
        const void *ptrs[2] = {dst, src};
        size_t u = widest_unit(elem, n, bytes, 2, ptrs);
        int64_t g = (int64_t)(u / elem);
        for (int k = 0; k < n - 1; k++) s[k] /= g;
        d[n - 1] /= g;
        total /= g;
        elem = u;
    }
    kiln_status status;
    if (try_tiled(st, elem, n, d, s, dst, src, &status)) return status;
    int64_t span = 0;
    for (int k = 0; k < n; k++) span += (d[k] - 1) * (s[k] < 0 ? -s[k] : s[k]);
    bool small = fits32(total) && fits32(span);
    status = with_unit(elem, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (small) launch_strided<T, Ix32>(st, dst, src, n, d, s, total);
        else launch_strided<T, Ix64>(st, dst, src, n, d, s, total);
    });
    return status != KILN_OK ? status : launched("strided copy kernel");
}

extern "C" kiln_status kiln_cuda_concat(void *stream, size_t elem, int64_t outer, int n, const void *const *srcs,
                                        const int64_t *lens, void *dst) {
    return concat_or_split(stream, elem, outer, n, (void *const *)srcs, lens, dst, false, "concat kernel");
}

extern "C" kiln_status kiln_cuda_split(void *stream, size_t elem, int64_t outer, int n, void *const *dsts,
                                       const int64_t *lens, const void *src) {
    return concat_or_split(stream, elem, outer, n, dsts, lens, (void *)src, true, "split kernel");
}

extern "C" kiln_status kiln_cuda_trilu(void *stream, size_t elem, int64_t batch, int64_t rows, int64_t cols,
                                       int64_t k, int upper, const void *src, void *dst) {
    int64_t n = batch * rows * cols;
    if (n <= 0) return KILN_OK;
    cudaStream_t st = (cudaStream_t)stream;
    bool small = fits32(n);
    kiln_status s = with_unit(elem, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (small)
            trilu_kernel<T, Ix32><<<grid_for(n), kThreads, 0, st>>>((T *)dst, (const T *)src, Ix32::make(cols),
                                                                    Ix32::make(rows), k, upper, (uint32_t)n);
        else
            trilu_kernel<T, Ix64><<<grid_for(n), kThreads, 0, st>>>((T *)dst, (const T *)src, Ix64::make(cols),
                                                                    Ix64::make(rows), k, upper, n);
    });
    return s != KILN_OK ? s : launched("trilu kernel");
}

extern "C" kiln_status kiln_cuda_pad(void *stream, size_t elem, int mode, int rank, const int64_t *in_dims,
                                     const int64_t *out_dims, const int64_t *pads_begin, const int64_t *pads_end,
                                     const void *value, const void *src, void *dst) {
    if (rank < 1 || rank > kMaxDims) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "pad of rank %d", rank);
    int64_t n = 1, in_n = 1;
    for (int k = 0; k < rank; k++) {
        n *= out_dims[k];
        in_n *= in_dims[k];
    }
    if (n <= 0) return KILN_OK;
    if (in_n <= 0 && mode != KILN_CUDA_PAD_CONSTANT)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "cannot pad an empty tensor in a border mode");
    cudaStream_t st = (cudaStream_t)stream;
    bool small = fits32(n) && fits32(in_n);
    kiln_status s = with_unit(elem, [&](auto tag) {
        using T = typename decltype(tag)::type;
        if (small) launch_pad<T, Ix32>(st, mode, rank, in_dims, out_dims, pads_begin, pads_end, value, src, dst, n);
        else launch_pad<T, Ix64>(st, mode, rank, in_dims, out_dims, pads_begin, pads_end, value, src, dst, n);
    });
    return s != KILN_OK ? s : launched("pad kernel");
}
