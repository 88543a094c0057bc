/* Shared by the gradient kernels (grad_*.c, the kiln training domain): float / double access and
 * the checks every gradient op repeats. The kernels run in float32 or float64, as their inputs. */
#ifndef KILN_GRAD_COMMON_H
#define KILN_GRAD_COMMON_H

#include "ops/op.h"
#include <math.h>
#include <string.h>

static inline double gk_ld(const void *p, int64_t i, int dt) {
    return dt == KILN_DTYPE_DOUBLE ? ((const double *)p)[i] : (double)((const float *)p)[i];
}

/* float32 results below the normal range are stored as zero: a gradient that underflows (the
 * tail of exp(-x^2), a masked attention probability) would otherwise feed denormals to the GEMMs
 * downstream, which run many times slower on them, for a change below 1e-38. */
static inline float gk_ftz(float v) { return fabsf(v) < 1.17549435e-38f ? 0.0f : v; }

static inline void gk_st(void *p, int64_t i, int dt, double v) {
    if (dt == KILN_DTYPE_DOUBLE) ((double *)p)[i] = v;
    else ((float *)p)[i] = gk_ftz((float)v);
}

static inline void gk_add(void *p, int64_t i, int dt, double v) {
    if (dt == KILN_DTYPE_DOUBLE) ((double *)p)[i] += v;
    else ((float *)p)[i] += (float)v;
}

/* Input i, present, float or double; with `like` (may be NULL) of the same element type. */
static inline kiln_status gk_float_input(kiln_ctx *ctx, int i, const kiln_tensor *like, kiln_tensor **t) {
    KILN_TRY(kiln_need_input(ctx, i, t));
    KILN_TRY(kiln_check_dtype(ctx, *t, i, 2, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE));
    if (like && like->dtype != (*t)->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d has element type %s, input 0 %s", i,
                         kiln_dtype_name((*t)->dtype), kiln_dtype_name(like->dtype));
    return KILN_OK;
}

/* Output k takes the shape of `shape` and the element type dt (when wanted). */
static inline kiln_status gk_out_like(kiln_ctx *ctx, int k, int dt, const kiln_tensor *shape) {
    if (k >= ctx->n_out || !kiln_output(ctx, k)) return KILN_OK;
    if (shape->rank < 0) return kiln_set_output_unknown(ctx, k, dt);
    return kiln_set_output(ctx, k, dt, shape->rank, shape->dims);
}

/* a and b have equal, known shapes */
static inline int gk_same_shape(const kiln_tensor *a, const kiln_tensor *b) {
    if (a->rank != b->rank) return 0;
    for (int d = 0; d < a->rank; d++)
        if (a->dims[d] != b->dims[d]) return 0;
    return 1;
}

static inline void gk_zero(kiln_tensor *t) {
    if (t && t->data) memset(t->data, 0, kiln_tensor_nbytes(t));
}

/* Grain for kiln_parallel_for so that a chunk holds at least ~16k elements of work. */
static inline int64_t gk_grain(int64_t per_item) { return per_item >= 16384 ? 1 : 16384 / (per_item > 0 ? per_item : 1); }

#endif
