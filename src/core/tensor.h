/* Tensors and values. A tensor is a dtype, a shape and a pointer to its elements; it owns its
 * buffer only when `owner` is set (heap), otherwise the bytes belong to someone else: the mapped
 * model file, the session arena, or the caller. A value is what flows along a graph edge: a
 * tensor, a sequence of tensors, or an empty optional. */
#ifndef KILN_TENSOR_H
#define KILN_TENSOR_H

#include "kiln.h"
#include "status.h"
#include <stdint.h>
#include <stddef.h>

#define KILN_MAX_RANK 16

/* Dimensions: >= 0 is a concrete size; KILN_DIM_UNKNOWN is unknown; values below it are
 * symbolic dimensions (symbol k stored as KILN_DIM_SYM(k)), which only static inference sees. */
#define KILN_DIM_UNKNOWN (-1)
#define KILN_DIM_SYM(k) (-2 - (int64_t)(k))
#define KILN_DIM_IS_SYM(d) ((d) <= -2)
#define KILN_DIM_SYM_ID(d) ((int)(-2 - (d)))

typedef struct kiln_tensor {
    int dtype;                    /* kiln_dtype */
    int rank;                     /* -1: unknown (static inference only) */
    int64_t dims[KILN_MAX_RANK];
    void *data;                   /* NULL during static inference unless the value is known */
    void *owner;                  /* heap block to free, or NULL */
    struct kiln_provider *dev;    /* NULL: host memory; else the provider whose memory holds data
                                     (owner is then freed through it) */
} kiln_tensor;

enum { KILN_KIND_TENSOR = 0, KILN_KIND_SEQUENCE = 1, KILN_KIND_NONE = 2 };

struct kiln_value {
    int kind;
    kiln_tensor t;        /* KILN_KIND_TENSOR */
    int seq_dtype;        /* KILN_KIND_SEQUENCE: element type, also when empty */
    int seq_len;
    kiln_tensor *seq;     /* seq_len tensors, each owning its data */
    int none_is_seq;      /* KILN_KIND_NONE: the optional's element would be a sequence */
};

/* Product of dims; -1 if any is not concrete or the product overflows int64 (so that a wrapped,
 * too-small count never sizes a buffer). */
int64_t kiln_numel(const kiln_tensor *t);
int64_t kiln_dims_numel(int rank, const int64_t *dims);

/* The most elements a tensor may have at run time: far beyond any memory (2^48 float32 is 1 PiB),
 * yet small enough that element count times element size and any in-bounds offset fit in int64
 * and size_t. Shapes from data (Reshape, Expand, a .npy header, kiln_run dims) are checked
 * against it, as onnxruntime refuses such shapes. */
#define KILN_MAX_NUMEL ((int64_t)1 << 48)
#define KILN_NUMEL_TOO_LARGE (-2)
/* 1 when a*b or a+b overflows int64 (*out is then unspecified), else 0 with *out set. */
int kiln_mul_overflow_i64(int64_t a, int64_t b, int64_t *out);
int kiln_add_overflow_i64(int64_t a, int64_t b, int64_t *out);
/* Product of dims: -1 if any dim is negative, KILN_NUMEL_TOO_LARGE if the product of the non-zero
 * dims exceeds KILN_MAX_NUMEL (overflowing int64 included: an empty tensor's other dims are
 * bounded too, as kernels loop over them). */
int64_t kiln_checked_numel(int rank, const int64_t *dims);
/* Bytes that n elements of dtype take; 0 when n is negative or the size would not fit in what
 * malloc could ever return (PTRDIFF_MAX), with *ok cleared. */
size_t kiln_checked_nbytes(int dtype, int64_t n, int *ok);
size_t kiln_tensor_nbytes(const kiln_tensor *t);
int kiln_shape_concrete(const kiln_tensor *t);     /* rank known and every dim >= 0 */
int kiln_shape_equal(const kiln_tensor *a, const kiln_tensor *b);
void kiln_tensor_set_shape(kiln_tensor *t, int dtype, int rank, const int64_t *dims);
/* Allocates a zero-filled heap buffer for t's shape; t then owns it. */
kiln_status kiln_tensor_alloc(kiln_tensor *t, kiln_err *e);
/* Deep copy (src may alias anything; dst owns its copy). Strings are duplicated. */
kiln_status kiln_tensor_copy(kiln_tensor *dst, const kiln_tensor *src, kiln_err *e);
void kiln_tensor_release(kiln_tensor *t);          /* frees owned data (and strings) */
/* Strides in elements for a contiguous row-major tensor. */
void kiln_strides(int rank, const int64_t *dims, int64_t *strides);
/* "float32[2,3,?]"-style text for messages. */
const char *kiln_shape_str(const kiln_tensor *t, char *buf, size_t n);

void kiln_value_release(kiln_value *v);            /* releases content, keeps the struct */
kiln_status kiln_value_copy(kiln_value *dst, const kiln_value *src, kiln_err *e);

#endif
