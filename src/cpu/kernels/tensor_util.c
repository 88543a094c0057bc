/* Small shared helpers of the data-movement kernels; see tensor_common.h. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "cpu/kernels/tensor_common.h"
#include <stdlib.h>
#include <string.h>

size_t kiln_tk_elem_size(int dt) {
    switch (dt) {
    case KILN_DTYPE_BOOL: case KILN_DTYPE_UINT8: case KILN_DTYPE_INT8:
    case KILN_DTYPE_FLOAT8E4M3FN: case KILN_DTYPE_FLOAT8E4M3FNUZ:
    case KILN_DTYPE_FLOAT8E5M2: case KILN_DTYPE_FLOAT8E5M2FNUZ:
        return 1;
    case KILN_DTYPE_UINT16: case KILN_DTYPE_INT16: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16:
        return 2;
    case KILN_DTYPE_FLOAT: case KILN_DTYPE_INT32: case KILN_DTYPE_UINT32:
        return 4;
    case KILN_DTYPE_DOUBLE: case KILN_DTYPE_INT64: case KILN_DTYPE_UINT64: case KILN_DTYPE_COMPLEX64:
        return 8;
    case KILN_DTYPE_COMPLEX128:
        return 16;
    case KILN_DTYPE_STRING:
        return sizeof(char *);
    default:
        return 0;
    }
}

size_t kiln_tk_data_bytes(int dt, int64_t n) {
    if (n <= 0) return 0;
    if (dt == KILN_DTYPE_INT4 || dt == KILN_DTYPE_UINT4) return (size_t)(n + 1) / 2;
    return (size_t)n * kiln_tk_elem_size(dt);
}

kiln_status kiln_tk_movable(kiln_ctx *ctx, const kiln_tensor *t, int input, size_t *elem) {
    *elem = kiln_tk_elem_size(t->dtype);
    if (!*elem)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "element type %s of input %d is not supported",
                         kiln_dtype_name((kiln_dtype)t->dtype), input);
    return KILN_OK;
}

int kiln_tk_has_values(const kiln_ctx *ctx, const kiln_tensor *t) {
    if (!t || t->rank < 0) return 0;
    if (t->data) return 1;
    int64_t n = kiln_numel(t);
    if (n == 0) return 1;
    return !ctx->static_mode && n > 0;
}

kiln_status kiln_tk_read_ints(kiln_ctx *ctx, const kiln_tensor *t, const char *what, int64_t *out,
                              int max, int *count) {
    if (t->dtype != KILN_DTYPE_INT64 && t->dtype != KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be int64 (or int32), got %s", what,
                         kiln_dtype_name((kiln_dtype)t->dtype));
    if (t->rank > 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be 1-D, got rank %d", what, t->rank);
    int64_t n = t->rank == 0 ? 1 : t->dims[0];
    if (n < 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has an unknown length", what);
    if (n > max)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has %lld values, at most %d are supported",
                         what, (long long)n, max);
    if (n > 0 && !t->data) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has no data", what);
    for (int64_t i = 0; i < n; i++) out[i] = kiln_tk_index_at(t->dtype, t->data, i);
    *count = (int)n;
    return KILN_OK;
}

static kiln_status scalar_check(kiln_ctx *ctx, const kiln_tensor *t, const char *what) {
    if (t->rank < 0 || kiln_numel(t) != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must hold exactly one element", what);
    if (!t->data) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has no data", what);
    if (t->dtype == KILN_DTYPE_STRING || !kiln_tk_elem_size(t->dtype) ||
        t->dtype == KILN_DTYPE_COMPLEX64 || t->dtype == KILN_DTYPE_COMPLEX128)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be numeric, got %s", what,
                         kiln_dtype_name((kiln_dtype)t->dtype));
    return KILN_OK;
}

kiln_status kiln_tk_read_scalar_i64(kiln_ctx *ctx, const kiln_tensor *t, const char *what,
                                    int64_t *out) {
    KILN_TRY(scalar_check(ctx, t, what));
    if (kiln_dtype_is_integer(t->dtype) || t->dtype == KILN_DTYPE_BOOL) {
        *out = kiln_load_i64(t->dtype, t->data, 0);
    } else {
        double d = kiln_load_f64(t->dtype, t->data, 0);
        if (!(d > -9.2e18 && d < 9.2e18))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s value %g is not a valid integer", what, d);
        *out = (int64_t)d;
    }
    return KILN_OK;
}

kiln_status kiln_tk_read_scalar_f64(kiln_ctx *ctx, const kiln_tensor *t, const char *what,
                                    double *out) {
    KILN_TRY(scalar_check(ctx, t, what));
    *out = kiln_load_f64(t->dtype, t->data, 0);
    return KILN_OK;
}

int64_t kiln_tk_dims_product(int rank, const int64_t *dims) {
    int64_t p = 1, odd = 1;
    int n_odd = 0;
    for (int i = 0; i < rank; i++) {
        if (dims[i] == 0) return 0;
    }
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0) {
            n_odd++;
            odd = dims[i];
        } else {
            p *= dims[i];
        }
    }
    if (n_odd == 0) return p;
    if (n_odd == 1 && p == 1) return odd;
    return KILN_DIM_UNKNOWN;
}

kiln_status kiln_tk_own_strings(kiln_ctx *ctx, kiln_tensor *t) {
    int64_t n = kiln_numel(t);
    char **s = t->data;
    for (int64_t i = 0; i < n; i++) {
        char *c = kiln_str_dup(s[i]);
        if (!c) {
            for (int64_t j = i; j < n; j++) s[j] = NULL;
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory copying strings");
        }
        s[i] = c;
    }
    return KILN_OK;
}

kiln_status kiln_tk_copy_all(kiln_ctx *ctx, kiln_tensor *dst, const kiln_tensor *src) {
    int64_t n = kiln_numel(src);
    if (n <= 0 || dst->data == src->data) return KILN_OK;
    if (!src->data || !dst->data)
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "tensor data missing for a copy");
    if (src->dtype == KILN_DTYPE_STRING) {
        memcpy(dst->data, src->data, (size_t)n * sizeof(char *));
        return kiln_tk_own_strings(ctx, dst);
    }
    size_t bytes = kiln_tk_data_bytes(src->dtype, n);
    if (!bytes && n > 0)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "element type %s is not supported",
                         kiln_dtype_name((kiln_dtype)src->dtype));
    int64_t one[1] = {(int64_t)bytes}, unit[1] = {1};
    kiln_tk_strided_copy(ctx, 1, 1, one, dst->data, unit, src->data, unit);
    return KILN_OK;
}

void kiln_tk_fill(void *dst, int64_t n, const void *value, size_t elem) {
    if (n <= 0) return;
    char *d = dst;
    size_t total = (size_t)n * elem, have = elem;
    memcpy(d, value, elem);
    while (have < total) {
        size_t k = have < total - have ? have : total - have;
        memcpy(d + have, d, k);
        have += k;
    }
}

void kiln_tk_parallel(kiln_ctx *ctx, int64_t n, double unit_bytes, kiln_range_fn fn, void *arg) {
    if (n <= 0) return;
    /* below ~64 KiB the hand-off to the pool costs more than the copy */
    if (!ctx->tp || kiln_num_threads(ctx) <= 1 || (double)n * unit_bytes < 65536.0) {
        fn(arg, 0, n);
        return;
    }
    int64_t grain = (int64_t)(32768.0 / (unit_bytes > 1 ? unit_bytes : 1));
    if (grain < 1) grain = 1;
    int64_t per_thread = (n + kiln_num_threads(ctx) * 4 - 1) / (kiln_num_threads(ctx) * 4);
    if (grain > per_thread) grain = per_thread > 0 ? per_thread : 1;
    kiln_parallel_for(ctx, n, grain, fn, arg);
}
