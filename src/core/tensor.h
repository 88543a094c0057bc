/* Tensors and values. A tensor is a dtype, a shape and a pointer to its elements; it owns its
 * buffer only when `owner` is set (heap), otherwise the bytes belong to someone else: the mapped
 * model file, the session arena, or the caller. A value is what flows along a graph edge: a
 * tensor, a sequence of tensors, an empty optional, a map (ai.onnx.ml: DictVectorizer's input) or a
 * sequence of maps (ZipMap's output). */
#ifndef KILN_TENSOR_H
#define KILN_TENSOR_H

#include "kiln.h"
#include "status.h"
#include "kstring.h"
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

/* KILN_KIND_MAP_SEQUENCE is a kind of its own (not a KILN_KIND_SEQUENCE with other items) so that
 * the sequence ops, which read tensors, refuse it by kind. */
enum { KILN_KIND_TENSOR = 0, KILN_KIND_SEQUENCE = 1, KILN_KIND_NONE = 2, KILN_KIND_MAP = 3,
       KILN_KIND_MAP_SEQUENCE = 4 };

/* A map: n distinct keys (int64 or string) in ascending order (byte order for strings, as
 * onnxruntime's std::map keeps them) and their values, both 1-D tensors that own their bytes. */
typedef struct kiln_map {
    kiln_tensor keys, vals;
} kiln_map;

struct kiln_value {
    int kind;
    kiln_tensor t;        /* KILN_KIND_TENSOR */
    int seq_dtype;        /* KILN_KIND_SEQUENCE: element type, also when empty */
    int seq_len;
    kiln_tensor *seq;     /* seq_len tensors, each owning its data */
    int none_is_seq;      /* KILN_KIND_NONE: the optional's element would be a sequence */
    /* KILN_KIND_MAP (n_maps == 1) and KILN_KIND_MAP_SEQUENCE: key and value types (also when
     * empty, and in static inference, where n_maps is -1 and maps NULL) */
    int map_key_dtype, map_val_dtype;
    int n_maps;
    kiln_map *maps;
};

static inline int kiln_kind_is_map(int kind) { return kind == KILN_KIND_MAP || kind == KILN_KIND_MAP_SEQUENCE; }

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
/* The same without clearing the elements (strings are still cleared): for a kernel's output,
 * which the kernel writes in full, as it does in the arena. KILN_POISON_OUTPUTS=1 fills them
 * with 0xff bytes instead (NaN, -1), so that a test run shows any kernel that leaves some
 * unwritten. */
kiln_status kiln_tensor_alloc_uninit(kiln_tensor *t, kiln_err *e);
/* Deep copy (src may alias anything; dst owns its copy). Strings are duplicated. */
kiln_status kiln_tensor_copy(kiln_tensor *dst, const kiln_tensor *src, kiln_err *e);
/* kiln_tensor_copy of a caller's host tensor: src's dtype may be KILN_DTYPE_SIZED_STRING (kiln_string
 * elements) and a KILN_DTYPE_STRING src holds NUL-terminated char* (see kiln_strs_import); dst is
 * then a string tensor of kiln strings. */
kiln_status kiln_tensor_import(kiln_tensor *dst, const kiln_tensor *src, const char *what, kiln_err *e);
void kiln_tensor_release(kiln_tensor *t);          /* frees owned data (and strings) */
/* Strides in elements for a contiguous row-major tensor. */
void kiln_strides(int rank, const int64_t *dims, int64_t *strides);
/* "float32[2,3,?]"-style text for messages. */
const char *kiln_shape_str(const kiln_tensor *t, char *buf, size_t n);

void kiln_value_release(kiln_value *v);            /* releases content, keeps the struct */
/* The same, but large host blocks go straight back to the allocator, not to the block cache
 * (core/host_blocks.h): the run that records a plan frees its intermediate values so, as later
 * runs use the plan's arena and would never take them (DenseNet-121 at batch 8 peaked at 318 MB
 * with them cached, 201 MB without). */
void kiln_value_release_uncached(kiln_value *v);
/* Key and value types a map may have (onnxruntime's: int64 or string keys; float, double, int64
 * or string values). */
int kiln_map_key_dtype_ok(int dtype);
int kiln_map_val_dtype_ok(int dtype);
/* Builds map m from n keys and values (copied), sorted by key; a key given twice fails, naming
 * `what`. */
kiln_status kiln_map_make(kiln_map *m, int key_dtype, int val_dtype, int64_t n, const void *keys,
                          const void *vals, const char *what, kiln_err *e);
void kiln_map_release(kiln_map *m);
/* "map(string,float)" / "seq(map(int64,double))"-style text of a map-kind value, for messages. */
const char *kiln_map_type_str(int kind, int key_dtype, int val_dtype, char *buf, size_t n);
kiln_status kiln_value_copy(kiln_value *dst, const kiln_value *src, kiln_err *e);

#endif
