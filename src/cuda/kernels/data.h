/* Launchers of the CUDA data-movement kernels (kernels/data.cu, data_index.cu, data_resize.cu),
 * used by ops/data*.c. All pointers are device pointers unless said otherwise, `stream` is a
 * cudaStream_t, sizes and strides count elements, and `elem` is an element's size in bytes (1, 2,
 * 4, 8 or 16: data movement does not care about the type beyond that). Every launcher enqueues
 * on the stream and returns at once; an empty problem launches nothing. Errors are recorded with
 * kiln_cuda_fail / kiln_cuda_check (message in kiln_cuda_last_error()). */
#ifndef KILN_CUDA_KERNELS_DATA_H
#define KILN_CUDA_KERNELS_DATA_H

#include "kiln.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The most dims a strided view may keep after collapsing (size-1 dims are dropped and dims that
 * read contiguously merged), and the most dims Resize, Pad and GatherElements take. */
#define KILN_CUDA_DATA_MAX_DIMS 16

/* dst[i] = src[sum_k i_k * src_strides[k]] for every index i of dims, dst contiguous row-major.
 * Strides may be 0 (broadcast) or negative (reversed reads; src then points at the element of
 * index 0). The building block of Transpose, Slice, Expand, Tile, DepthToSpace, SpaceToDepth:
 * contiguous runs move 16 bytes per thread, a view whose reads would be strided (a transpose of
 * the last dim) goes through a shared-memory tile, a plain copy is one cudaMemcpyAsync. */
kiln_status kiln_cuda_strided_copy(void *stream, size_t elem, int rank, const int64_t *dims, void *dst,
                                   const void *src, const int64_t *src_strides);

/* Concat along an axis seen as [outer, row]: part i is a contiguous [outer, lens[i]] block that
 * lands at columns [sum lens[<i], +lens[i]) of dst's rows (row = sum of lens). One launch per 32
 * parts. */
kiln_status kiln_cuda_concat(void *stream, size_t elem, int64_t outer, int n, const void *const *srcs,
                             const int64_t *lens, void *dst);
/* The inverse: part i of src's rows goes to dsts[i] (NULL: not wanted). */
kiln_status kiln_cuda_split(void *stream, size_t elem, int64_t outer, int n, void *const *dsts,
                            const int64_t *lens, const void *src);

/* Trilu on `batch` matrices of rows x cols: keeps j - i >= k (upper) or j - i <= k (lower),
 * zeroes the rest. */
kiln_status kiln_cuda_trilu(void *stream, size_t elem, int64_t batch, int64_t rows, int64_t cols, int64_t k,
                            int upper, const void *src, void *dst);

enum { KILN_CUDA_PAD_CONSTANT = 0, KILN_CUDA_PAD_REFLECT = 1, KILN_CUDA_PAD_EDGE = 2, KILN_CUDA_PAD_WRAP = 3 };
/* Pad (negative pads crop first; the border modes then reflect / clamp / wrap within what is
 * left, as onnxruntime does). value: a host pointer to one element, used by the constant mode. */
kiln_status kiln_cuda_pad(void *stream, size_t elem, int mode, int rank, const int64_t *in_dims,
                          const int64_t *out_dims, const int64_t *pads_begin, const int64_t *pads_end,
                          const void *value, const void *src, void *dst);

/* Gather on data seen as [outer, dim, inner]: dst[o, j, c] = src[o, indices[j], c]. indices are
 * int32 or int64 (index_dtype: KILN_DTYPE_INT32 / KILN_DTYPE_INT64), negative ones count from the
 * back. An index outside [-dim, dim) is never read through: its slice of dst is written with
 * zeros (the CPU provider is the one that reports such an index as an error). */
kiln_status kiln_cuda_gather(void *stream, size_t elem, int64_t outer, int64_t dim, int64_t inner,
                             const void *src, const void *indices, int index_dtype, int64_t n_indices,
                             void *dst);
/* GatherElements: dst has indices' shape; dst[i] = src[i with i[axis] replaced by indices[i]].
 * Out-of-range indices give zeros, as in kiln_cuda_gather. */
kiln_status kiln_cuda_gather_elements(void *stream, size_t elem, int rank, const int64_t *index_dims,
                                      const int64_t *data_dims, int axis, const void *src, const void *indices,
                                      int index_dtype, void *dst);
/* GatherND with batch_dims b and index tuples of length k (int64 indices of shape
 * [batch dims..., tuple dims..., k], `tuples` tuples per batch). A tuple with an out-of-range
 * entry gives a zero slice. */
kiln_status kiln_cuda_gather_nd(void *stream, size_t elem, int rank, const int64_t *data_dims, int batch_dims,
                                int k, int64_t tuples, const void *src, const int64_t *indices, void *dst);
/* ScatterND without reduction: dst = data, then each update slice is written where its index
 * tuple (int64, length k) points. Tuples with an out-of-range entry are skipped. When two
 * tuples name the same slice, which update wins is unspecified (as in the ONNX spec). */
kiln_status kiln_cuda_scatter_nd(void *stream, size_t elem, int rank, const int64_t *data_dims, int k,
                                 int64_t n_tuples, const void *data, const int64_t *indices, const void *updates,
                                 void *dst);

/* ---- Resize ---- */
enum { KILN_CUDA_RESIZE_NEAREST = 0, KILN_CUDA_RESIZE_LINEAR = 1 };
enum {
    KILN_CUDA_CT_HALF_PIXEL = 0, KILN_CUDA_CT_HALF_PIXEL_SYMMETRIC, KILN_CUDA_CT_PYTORCH_HALF_PIXEL,
    KILN_CUDA_CT_ALIGN_CORNERS, KILN_CUDA_CT_ASYMMETRIC, KILN_CUDA_CT_TF_HALF_PIXEL_FOR_NN
};
enum {
    KILN_CUDA_NEAREST_ROUND_PREFER_FLOOR = 0, KILN_CUDA_NEAREST_ROUND_PREFER_CEIL, KILN_CUDA_NEAREST_FLOOR,
    KILN_CUDA_NEAREST_CEIL, KILN_CUDA_NEAREST_SIMPLE /* Resize-10: truncate, ceil when shrinking */
};
#define KILN_CUDA_RESIZE_MAX_RANK 8

typedef struct kiln_cuda_resize_desc {
    int rank;
    int dtype;           /* linear: see kiln_cuda_resize_linear_dtype */
    size_t elem;         /* bytes per element (nearest moves any type of 1, 2, 4 or 8 bytes) */
    int mode;            /* KILN_CUDA_RESIZE_* */
    int coord_mode;      /* KILN_CUDA_CT_* */
    int nearest_mode;    /* KILN_CUDA_NEAREST_* */
    int exclude_outside; /* linear: taps outside the input get weight 0, the rest renormalised */
    int64_t in[KILN_CUDA_RESIZE_MAX_RANK], out[KILN_CUDA_RESIZE_MAX_RANK];
    double scale[KILN_CUDA_RESIZE_MAX_RANK]; /* output / input, as the coordinate formulas use it */
} kiln_cuda_resize_desc;

/* 1 when mode linear takes dtype: float32, float16, bfloat16, uint8, int8. */
int kiln_cuda_resize_linear_dtype(int dtype);
/* Device scratch (bytes) kiln_cuda_resize needs: a table of taps per resized axis and output
 * coordinate, a few KiB (0 when the resize is a plain copy). */
size_t kiln_cuda_resize_workspace(const kiln_cuda_resize_desc *d);
/* Resizes src (shape d->in) into dst (shape d->out); workspace: kiln_cuda_resize_workspace(d)
 * bytes of device memory, free for the kernels' use until they complete. Coordinates are computed
 * in double and the linear weights applied in float one axis after another (last axis first),
 * the same arithmetic as the CPU provider, so results match it bit for bit. */
kiln_status kiln_cuda_resize(void *stream, const kiln_cuda_resize_desc *d, const void *src, void *dst,
                             void *workspace);

#ifdef __cplusplus
}
#endif

#endif
