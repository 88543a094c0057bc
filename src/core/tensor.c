#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tensor.h"
#include "host_blocks.h"
#include "provider.h"
#include "dtype.h"
#include <stdio.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

int kiln_mul_overflow_i64(int64_t a, int64_t b, int64_t *out) { return __builtin_mul_overflow(a, b, out); }

int kiln_add_overflow_i64(int64_t a, int64_t b, int64_t *out) { return __builtin_add_overflow(a, b, out); }

/* The product of the non-zero dims (INT64_MAX when it overflows), or -1 for a negative dim;
 * *has_zero tells whether some dim is 0 (the element count is then 0). */
static int64_t nonzero_dims_product(int rank, const int64_t *dims, int *has_zero) {
    int64_t n = 1;
    int overflow = 0;
    *has_zero = 0;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0) return -1;
        if (dims[i] == 0) *has_zero = 1;
        else if (!overflow && __builtin_mul_overflow(n, dims[i], &n)) overflow = 1; /* inline: runs per node */
    }
    return overflow ? INT64_MAX : n;
}

int64_t kiln_dims_numel(int rank, const int64_t *dims) {
    int has_zero;
    int64_t n = nonzero_dims_product(rank, dims, &has_zero);
    if (n < 0) return -1;
    if (has_zero) return 0;
    return n == INT64_MAX ? -1 : n;
}

int64_t kiln_checked_numel(int rank, const int64_t *dims) {
    int has_zero;
    int64_t n = nonzero_dims_product(rank, dims, &has_zero);
    if (n < 0) return -1;
    /* an empty tensor's other dims are still bounded: kernels loop over them, and strides are
     * products of them */
    if (n > KILN_MAX_NUMEL) return KILN_NUMEL_TOO_LARGE;
    return has_zero ? 0 : n;
}

size_t kiln_checked_nbytes(int dtype, int64_t n, int *ok) {
    *ok = 0;
    if (n < 0) return 0;
    size_t item = kiln_dtype_size(dtype); /* 0 for sub-byte types, whose count fits anyway */
    if (item && (uint64_t)n > (uint64_t)PTRDIFF_MAX / item) return 0;
    *ok = 1;
    return kiln_dtype_bytes(dtype, n);
}

int64_t kiln_numel(const kiln_tensor *t) { return t->rank < 0 ? -1 : kiln_dims_numel(t->rank, t->dims); }

size_t kiln_tensor_nbytes(const kiln_tensor *t) {
    int64_t n = kiln_numel(t);
    return n < 0 ? 0 : kiln_dtype_bytes(t->dtype, n);
}

int kiln_shape_concrete(const kiln_tensor *t) { return t->rank >= 0 && kiln_numel(t) >= 0; }

int kiln_shape_equal(const kiln_tensor *a, const kiln_tensor *b) {
    if (a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i]) return 0;
    return 1;
}

void kiln_tensor_set_shape(kiln_tensor *t, int dtype, int rank, const int64_t *dims) {
    t->dtype = dtype;
    t->rank = rank;
    for (int i = 0; i < rank && i < KILN_MAX_RANK; i++) t->dims[i] = dims[i];
}

/* KILN_POISON_OUTPUTS (tensor.h), read once: this runs for every node output off the arena */
static int poison_outputs(void) {
    static _Atomic int cached = -1;
    if (cached < 0) {
        const char *v = getenv("KILN_POISON_OUTPUTS");
        cached = v && *v && *v != '0';
    }
    return cached;
}

static kiln_status tensor_alloc(kiln_tensor *t, int zero, kiln_err *e) {
    int64_t n = kiln_numel(t);
    if (n < 0) {
        if (t->rank >= 0 && kiln_checked_numel(t->rank, t->dims) == KILN_NUMEL_TOO_LARGE) {
            char shape[400];
            return kiln_fail(e, KILN_ERR_NO_MEMORY, "cannot allocate a tensor of shape %s: its size overflows",
                             kiln_shape_str(t, shape, sizeof shape));
        }
        return kiln_fail(e, KILN_ERR_RUNTIME, "cannot allocate a tensor of unknown shape");
    }
    int size_ok;
    size_t bytes = kiln_checked_nbytes(t->dtype, n, &size_ok);
    if (!size_ok || bytes > SIZE_MAX - 64)
        return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory allocating %lld elements of %s", (long long)n,
                         kiln_dtype_name((kiln_dtype)t->dtype));
    /* one extra cache line keeps zero-sized tensors non-NULL and vector over-reads harmless */
    int strings = t->dtype == KILN_DTYPE_STRING;
    void *p = strings ? NULL : kiln_host_block_take(bytes + 64);
    if (p && zero) memset(p, 0, bytes + 64);
    if (!p) p = zero || strings ? calloc(1, bytes + 64) : malloc(bytes + 64);
    if (!p) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory allocating %zu bytes", bytes);
    if (!zero && !strings && poison_outputs()) memset(p, 0xff, bytes);
    t->data = p;
    t->owner = p;
    return KILN_OK;
}

kiln_status kiln_tensor_alloc(kiln_tensor *t, kiln_err *e) { return tensor_alloc(t, 1, e); }

kiln_status kiln_tensor_alloc_uninit(kiln_tensor *t, kiln_err *e) { return tensor_alloc(t, 0, e); }

kiln_status kiln_tensor_copy(kiln_tensor *dst, const kiln_tensor *src, kiln_err *e) {
    kiln_tensor t = *src;
    t.owner = NULL;
    t.data = NULL;
    /* every element is written below (strings are cleared by the allocation: a failed dup frees them) */
    KILN_TRY(kiln_tensor_alloc_uninit(&t, e));
    int64_t n = kiln_numel(src);
    if (src->dtype == KILN_DTYPE_STRING) {
        char **d = t.data, *const *s = src->data;
        for (int64_t i = 0; i < n; i++) {
            d[i] = kiln_str_dup(s ? s[i] : NULL);
            if (!d[i]) {
                kiln_tensor_release(&t);
                return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory copying strings");
            }
        }
    } else if (n > 0) {
        size_t bytes = kiln_dtype_bytes(src->dtype, n);
        if (src->data) memcpy(t.data, src->data, bytes);
        else memset(t.data, 0, bytes);
    }
    *dst = t;
    return KILN_OK;
}

kiln_status kiln_tensor_import(kiln_tensor *dst, const kiln_tensor *src, const char *what, kiln_err *e) {
    if (src->dtype != KILN_DTYPE_STRING && src->dtype != KILN_DTYPE_SIZED_STRING) return kiln_tensor_copy(dst, src, e);
    kiln_tensor t = *src;
    t.dtype = KILN_DTYPE_STRING;
    t.owner = NULL;
    t.data = NULL;
    t.dev = NULL;
    KILN_TRY(kiln_tensor_alloc(&t, e));
    kiln_status st = kiln_strs_import(t.data, src->data, kiln_numel(src), src->dtype == KILN_DTYPE_SIZED_STRING, what, e);
    if (st) {
        kiln_tensor_release(&t);
        return st;
    }
    *dst = t;
    return KILN_OK;
}

static void tensor_release(kiln_tensor *t, int cache) {
    if (t->owner && t->dev) {
        t->dev->vt->free(t->dev, t->owner);
    } else if (t->owner) {
        if (t->dtype == KILN_DTYPE_STRING && t->data == t->owner) {
            int64_t n = kiln_numel(t);
            kiln_strs_free(t->data, n);
            free(t->owner);
        } else if (!cache || !kiln_host_block_give(t->owner)) {
            free(t->owner);
        }
    }
    t->owner = NULL;
    t->data = NULL;
    t->dev = NULL;
}

void kiln_tensor_release(kiln_tensor *t) { tensor_release(t, 1); }

void kiln_strides(int rank, const int64_t *dims, int64_t *strides) {
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        strides[i] = s;
        s *= dims[i];
    }
}

const char *kiln_shape_str(const kiln_tensor *t, char *buf, size_t n) {
    size_t k = (size_t)snprintf(buf, n, "%s[", kiln_dtype_name((kiln_dtype)t->dtype));
    if (t->rank < 0) {
        snprintf(buf + (k < n ? k : n), k < n ? n - k : 0, "?]");
        return buf;
    }
    for (int i = 0; i < t->rank && k < n; i++) {
        if (t->dims[i] >= 0)
            k += (size_t)snprintf(buf + k, n - k, "%s%lld", i ? "," : "", (long long)t->dims[i]);
        else
            k += (size_t)snprintf(buf + k, n - k, "%s?", i ? "," : "");
    }
    if (k < n) snprintf(buf + k, n - k, "]");
    return buf;
}

static void value_release(kiln_value *v, int cache) {
    if (!v) return;
    tensor_release(&v->t, cache);
    for (int i = 0; i < v->seq_len; i++) tensor_release(&v->seq[i], cache);
    free(v->seq);
    v->seq = NULL;
    v->seq_len = 0;
    for (int i = 0; v->maps && i < v->n_maps; i++) kiln_map_release(&v->maps[i]);
    free(v->maps);
    v->maps = NULL;
    v->n_maps = 0;
}

void kiln_value_release(kiln_value *v) { value_release(v, 1); }

void kiln_value_release_uncached(kiln_value *v) { value_release(v, 0); }

kiln_status kiln_value_copy(kiln_value *dst, const kiln_value *src, kiln_err *e) {
    kiln_value v = *src;
    v.t.owner = NULL;
    v.seq = NULL;
    v.seq_len = 0;
    v.maps = NULL;
    v.n_maps = 0;
    if (kiln_kind_is_map(src->kind) && src->n_maps > 0 && src->maps) {
        v.maps = calloc((size_t)src->n_maps, sizeof *v.maps);
        if (!v.maps) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory copying a map");
        for (int i = 0; i < src->n_maps; i++) {
            kiln_status st = kiln_tensor_copy(&v.maps[i].keys, &src->maps[i].keys, e);
            if (!st) st = kiln_tensor_copy(&v.maps[i].vals, &src->maps[i].vals, e);
            v.n_maps = i + 1;
            if (st) {
                kiln_value_release(&v);
                return st;
            }
        }
    } else if (src->kind == KILN_KIND_TENSOR) {
        KILN_TRY(kiln_tensor_copy(&v.t, &src->t, e));
    } else if (src->kind == KILN_KIND_SEQUENCE && src->seq_len > 0) {
        v.seq = calloc((size_t)src->seq_len, sizeof *v.seq);
        if (!v.seq) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory copying a sequence");
        for (int i = 0; i < src->seq_len; i++) {
            kiln_status st = kiln_tensor_copy(&v.seq[i], &src->seq[i], e);
            if (st) {
                v.seq_len = i;
                kiln_value_release(&v);
                return st;
            }
        }
        v.seq_len = src->seq_len;
    }
    *dst = v;
    return KILN_OK;
}
