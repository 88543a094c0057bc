/* Helpers shared by the data-movement kernels (tensor, shape, gather, scatter, pad families):
 * element sizes, reading small integer tensors, static-shape arithmetic, string ownership after
 * a pointer move, and one strided-copy engine that Transpose, Slice, Expand, Tile, Pad,
 * DepthToSpace and friends reduce to. Defined in tensor_copy.c and tensor_util.c. */
#ifndef KILN_CPU_TENSOR_COMMON_H
#define KILN_CPU_TENSOR_COMMON_H

#include "ops/op.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* Strided views may have up to twice the tensor rank (Tile splits each axis in two). */
#define KILN_TK_MAX_VIEW (2 * KILN_MAX_RANK + 2)

/* Bytes per element for kernels that move whole elements; strings move as char* pointers.
 * 0 for sub-byte types (int4/uint4) and unknown types, which such kernels cannot address. */
size_t kiln_tk_elem_size(int dtype);
/* Bytes of n elements, sub-byte types included (for whole-buffer copies). */
size_t kiln_tk_data_bytes(int dtype, int64_t n);
/* Element size of t for an element-addressing kernel, or a NOT_IMPLEMENTED failure. */
kiln_status kiln_tk_movable(kiln_ctx *ctx, const kiln_tensor *t, int input, size_t *elem);

/* Whether t's values can be read now: at run time always; in static mode only when the data is
 * there (or there is none to read). */
int kiln_tk_has_values(const kiln_ctx *ctx, const kiln_tensor *t);
/* Reads an int32/int64 tensor of rank 0 or 1 (`what` names it in messages). */
kiln_status kiln_tk_read_ints(kiln_ctx *ctx, const kiln_tensor *t, const char *what, int64_t *out,
                              int max, int *count);
/* Reads element 0 of a one-element numeric tensor as int64 / double. */
kiln_status kiln_tk_read_scalar_i64(kiln_ctx *ctx, const kiln_tensor *t, const char *what,
                                    int64_t *out);
kiln_status kiln_tk_read_scalar_f64(kiln_ctx *ctx, const kiln_tensor *t, const char *what,
                                    double *out);
/* Values of an index-like integer tensor element (int32 or int64 buffer). */
static inline int64_t kiln_tk_index_at(int dtype, const void *p, int64_t i) {
    return dtype == KILN_DTYPE_INT32 ? (int64_t)((const int32_t *)p)[i] : ((const int64_t *)p)[i];
}

/* Moves one element of e bytes; the fixed sizes compile to single loads and stores, where a
 * memcpy of a run-time size would be a library call per element. */
static inline void kiln_tk_move_elem(void *d, const void *s, size_t e) {
    switch (e) {
    case 1: *(uint8_t *)d = *(const uint8_t *)s; break;
    case 2: memcpy(d, s, 2); break;
    case 4: memcpy(d, s, 4); break;
    case 8: memcpy(d, s, 8); break;
    case 16: memcpy(d, s, 16); break;
    default: memcpy(d, s, e); break;
    }
}

/* Product of dims for static inference: the product when all are concrete, 0 when any is 0, the
 * lone non-concrete dim when all others are 1 (symbols survive Flatten of [N,1]), else unknown. */
int64_t kiln_tk_dims_product(int rank, const int64_t *dims);
/* Merges two dims that must be equal: a concrete one wins over a symbolic/unknown one. */
static inline int64_t kiln_tk_dim_merge(int64_t a, int64_t b) { return a >= 0 ? a : b; }
/* Whether two dims are known to differ (both concrete and unequal). */
static inline int kiln_tk_dims_conflict(int64_t a, int64_t b) { return a >= 0 && b >= 0 && a != b; }

/* After moving string pointers into t (which then borrows them), makes t own copies. NULL
 * entries become "". On failure the remaining entries are NULLed so t can be released safely. */
kiln_status kiln_tk_own_strings(kiln_ctx *ctx, kiln_tensor *t);
/* Copies all of src's elements into dst (same element count); strings are duplicated. A no-op
 * when both already share the bytes. */
kiln_status kiln_tk_copy_all(kiln_ctx *ctx, kiln_tensor *dst, const kiln_tensor *src);
/* Fills n elements of dst with the element at value (elem bytes), doubling memcpy. */
void kiln_tk_fill(void *dst, int64_t n, const void *value, size_t elem);

/* dst[sum i_k * dst_strides[k]] = src[sum i_k * src_strides[k]] for every index i in dims.
 * Strides are in elements and may be 0 (broadcast) or negative (reversed reads). Collapses
 * mergeable dims, memcpys contiguous runs, tiles transposes, and threads large copies. */
void kiln_tk_strided_copy(kiln_ctx *ctx, size_t elem, int rank, const int64_t *dims, void *dst,
                          const int64_t *dst_strides, const void *src, const int64_t *src_strides);
/* out = transpose(in, perm) for a contiguous in of in_dims; out contiguous. */
void kiln_tk_permute(kiln_ctx *ctx, size_t elem, int rank, const int64_t *in_dims,
                     const int64_t *perm, void *dst, const void *src);
/* Splits [0, n) over the session's threads when n * unit_bytes is large, serially otherwise. */
void kiln_tk_parallel(kiln_ctx *ctx, int64_t n, double unit_bytes, kiln_range_fn fn, void *arg);

#endif
