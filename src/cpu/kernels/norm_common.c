/* Parameter handling shared by the normalisation kernels: broadcast checks and expansion of
 * scale / bias tensors to the [rows, n] view the row loops use. */
#include "norm_impl.h"

kiln_status kiln_norm_check_bcast(kiln_ctx *ctx, const kiln_tensor *p, const kiln_tensor *x,
                                  const char *what) {
    if (p->rank < 0 || x->rank < 0) return KILN_OK;
    if (p->dtype != x->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' has type %s, expected %s",
                         what, kiln_dtype_name(p->dtype), kiln_dtype_name(x->dtype));
    if (p->rank > x->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input '%s' has rank %d, more than the input's %d", what, p->rank,
                         x->rank);
    for (int i = 0; i < p->rank; i++) {
        int64_t pd = p->dims[i], xd = x->dims[x->rank - p->rank + i];
        if (pd >= 0 && xd >= 0 && pd != 1 && pd != xd)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input '%s' (dim %d = %lld) does not broadcast to the input (%lld)",
                             what, i, (long long)pd, (long long)xd);
    }
    return KILN_OK;
}

/* Writes p (values in src, shape p->dims) broadcast to dims[first..rank) of x. */
#define DEFINE_EXPAND(SFX, T)                                                                      \
    static void expand_##SFX(const T *src, const kiln_tensor *p, const kiln_tensor *x, int first,  \
                             T *out) {                                                             \
        int r = x->rank - first;                                                                   \
        int64_t dims[KILN_MAX_RANK], pst[KILN_MAX_RANK], idx[KILN_MAX_RANK], st = 1;               \
        for (int i = r - 1; i >= 0; i--) {                                                         \
            int xi = first + i, pi = xi - (x->rank - p->rank);                                     \
            dims[i] = x->dims[xi];                                                                 \
            int64_t pd = pi >= 0 ? p->dims[pi] : 1;                                                \
            pst[i] = pd == 1 ? 0 : st;                                                             \
            st *= pd;                                                                              \
            idx[i] = 0;                                                                            \
        }                                                                                          \
        int64_t total = kiln_dims_numel(r, dims), off = 0;                                         \
        for (int64_t t = 0; t < total; t++) {                                                      \
            out[t] = src[off];                                                                     \
            for (int i = r - 1; i >= 0; i--) {                                                     \
                off += pst[i];                                                                     \
                if (++idx[i] < dims[i]) break;                                                     \
                off -= pst[i] * dims[i];                                                           \
                idx[i] = 0;                                                                        \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_EXPAND(f32, float)
DEFINE_EXPAND(f64, double)

/* Do p's dims aligned before `axis` of x vary (any != 1)? */
static int varies_by_row(const kiln_tensor *p, const kiln_tensor *x, int axis) {
    for (int i = 0; i < p->rank; i++) {
        int xi = x->rank - p->rank + i;
        if (xi < axis && p->dims[i] != 1) return 1;
    }
    return 0;
}

#define DEFINE_PARAM(SFX, T, DT, COPY)                                                             \
    kiln_status kiln_norm_param_##SFX(kiln_ctx *ctx, const kiln_tensor *p, const kiln_tensor *x,    \
                                      int axis, const T **out, int64_t *row_stride, T **owned) {   \
        int64_t n = ru_prod(x->dims, axis, x->rank), pn = kiln_numel(p);                           \
        int rowwise = varies_by_row(p, x, axis);                                                   \
        *owned = NULL;                                                                             \
        *row_stride = rowwise ? n : 0;                                                             \
        if (!rowwise && pn == n && p->dtype == DT) {                                               \
            *out = p->data;                                                                        \
            return KILN_OK;                                                                        \
        }                                                                                          \
        T *src = COPY(p, pn);                                                                      \
        int64_t total = rowwise ? kiln_numel(x) : n;                                               \
        T *dst = malloc((size_t)(total > 0 ? total : 1) * sizeof(T));                              \
        if (!src || !dst) {                                                                        \
            free(src);                                                                             \
            free(dst);                                                                             \
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");                            \
        }                                                                                          \
        expand_##SFX(src, p, x, rowwise ? 0 : axis, dst);                                          \
        free(src);                                                                                 \
        *out = dst;                                                                                \
        *owned = dst;                                                                              \
        return KILN_OK;                                                                            \
    }

DEFINE_PARAM(f32, float, KILN_DTYPE_FLOAT, ru_to_f32_copy)
DEFINE_PARAM(f64, double, KILN_DTYPE_DOUBLE, ru_to_f64_copy)

kiln_status kiln_norm_as_f32(kiln_ctx *ctx, const kiln_tensor *t, const float **out, float **owned) {
    *owned = NULL;
    if (t->dtype == KILN_DTYPE_FLOAT) {
        *out = t->data;
        return KILN_OK;
    }
    int64_t n = kiln_numel(t);
    float *p = ru_to_f32_copy(t, n);
    if (!p) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    *out = p;
    *owned = p;
    return KILN_OK;
}
