/* Map values (ai.onnx.ml): building them sorted by key, copying and releasing them. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "tensor.h"
#include "dtype.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int kiln_map_key_dtype_ok(int d) { return d == KILN_DTYPE_INT64 || d == KILN_DTYPE_STRING; }

int kiln_map_val_dtype_ok(int d) {
    return d == KILN_DTYPE_FLOAT || d == KILN_DTYPE_DOUBLE || d == KILN_DTYPE_INT64 || d == KILN_DTYPE_STRING;
}

static const char *short_name(int dtype) {
    switch (dtype) {
    case KILN_DTYPE_INT64: return "int64";
    case KILN_DTYPE_STRING: return "string";
    case KILN_DTYPE_FLOAT: return "float";
    case KILN_DTYPE_DOUBLE: return "double";
    default: return kiln_dtype_name((kiln_dtype)dtype);
    }
}

const char *kiln_map_type_str(int kind, int key_dtype, int val_dtype, char *buf, size_t n) {
    /* onnxruntime's spelling, so that messages and NodeArg types read the same */
    snprintf(buf, n, "%smap(%s,tensor(%s))%s", kind == KILN_KIND_MAP_SEQUENCE ? "seq(" : "", short_name(key_dtype),
             short_name(val_dtype), kind == KILN_KIND_MAP_SEQUENCE ? ")" : "");
    return buf;
}

typedef struct key_order {
    int dtype;
    const void *keys;
} key_order;

static int cmp_keys(const void *pa, const void *pb, void *arg) {
    const key_order *o = arg;
    int64_t a = *(const int64_t *)pa, b = *(const int64_t *)pb;
    int c;
    if (o->dtype == KILN_DTYPE_STRING) {
        const char *const *s = o->keys;
        c = kiln_str_cmp(s[a], s[b]);
    } else {
        const int64_t *k = o->keys;
        c = (k[a] > k[b]) - (k[a] < k[b]);
    }
    return c ? c : (a > b) - (a < b); /* ties in input order: duplicates are found next to each other */
}

void kiln_map_release(kiln_map *m) {
    kiln_tensor_release(&m->keys);
    kiln_tensor_release(&m->vals);
}

static kiln_status alloc_1d(kiln_tensor *t, int dtype, int64_t n, kiln_err *e) {
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->rank = 1;
    t->dims[0] = n;
    return kiln_tensor_alloc(t, e);
}

/* Copies element src[i] of a tensor of dtype into dst[j]; strings duplicated (NULL as ""). */
static int put_elem(int dtype, void *dst, int64_t j, const void *src, int64_t i) {
    if (dtype == KILN_DTYPE_STRING) {
        char *d = kiln_str_dup(((const char *const *)src)[i]);
        ((char **)dst)[j] = d;
        return d != NULL;
    }
    size_t sz = kiln_dtype_size(dtype);
    memcpy((char *)dst + (size_t)j * sz, (const char *)src + (size_t)i * sz, sz);
    return 1;
}

kiln_status kiln_map_make(kiln_map *m, int key_dtype, int val_dtype, int64_t n, const void *keys,
                          const void *vals, const char *what, kiln_err *e) {
    memset(m, 0, sizeof *m);
    if (!kiln_map_key_dtype_ok(key_dtype))
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: map keys must be int64 or string, not %s", what,
                         kiln_dtype_name((kiln_dtype)key_dtype));
    if (!kiln_map_val_dtype_ok(val_dtype))
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: map values must be float, double, int64 or string, not %s",
                         what, kiln_dtype_name((kiln_dtype)val_dtype));
    if (n < 0 || n > INT32_MAX)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: a map of %lld entries", what, (long long)n);
    if (n && (!keys || !vals)) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: map keys or values are NULL", what);
    int64_t *order = malloc((size_t)(n ? n : 1) * sizeof *order);
    if (!order) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < n; i++) order[i] = i;
    key_order o = {key_dtype, keys};
    qsort_r(order, (size_t)n, sizeof *order, cmp_keys, &o);
    for (int64_t i = 1; i < n; i++) {
        int64_t a = order[i - 1], b = order[i];
        int same = key_dtype == KILN_DTYPE_STRING
                       ? kiln_str_eq(((const char *const *)keys)[a], ((const char *const *)keys)[b])
                       : ((const int64_t *)keys)[a] == ((const int64_t *)keys)[b];
        if (!same) continue;
        free(order);
        if (key_dtype == KILN_DTYPE_STRING)
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: map key '%s' is given twice", what,
                             kiln_str_bytes(((const char *const *)keys)[a]));
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: map key %lld is given twice", what,
                         (long long)((const int64_t *)keys)[a]);
    }
    kiln_status st = alloc_1d(&m->keys, key_dtype, n, e);
    if (!st) st = alloc_1d(&m->vals, val_dtype, n, e);
    for (int64_t i = 0; !st && i < n; i++)
        if (!put_elem(key_dtype, m->keys.data, i, keys, order[i]) || !put_elem(val_dtype, m->vals.data, i, vals, order[i]))
            st = kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory copying a map");
    free(order);
    if (st) kiln_map_release(m);
    return st;
}
