/* CumSum (opset 11, 14) and CumProd (opset 26): running sum / product along the axis given by
 * the second input, with the exclusive and reverse attributes. Each output row is the previous
 * output row combined with one input row, so no accumulator array is needed and rows are read in
 * memory order. Integers wrap (computed in the unsigned type of the same width); float16 and
 * bfloat16 accumulate in float32. */
#pragma GCC optimize("O3") /* -O2 leaves these typed loops scalar */
#include "reduce_util.h"

#define CUM_BLOCK 1024

static kiln_status cum_axis(kiln_ctx *ctx, const kiln_tensor *x, int *axis, int *known) {
    kiln_tensor *a;
    KILN_TRY(kiln_need_input(ctx, 1, &a));
    KILN_TRY(kiln_check_dtype(ctx, a, 1, 2, KILN_DTYPE_INT32, KILN_DTYPE_INT64));
    if (a->rank > 1 || (a->rank == 1 && a->dims[0] >= 0 && a->dims[0] != 1))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input 'axis' must be a scalar (or a 1-element 1-D tensor)");
    *known = 0;
    if (!a->data || x->rank < 0) return KILN_OK;
    int64_t v = a->dtype == KILN_DTYPE_INT32 ? *(const int32_t *)a->data : *(const int64_t *)a->data;
    KILN_TRY(kiln_norm_axis(ctx, v, x->rank, "axis", axis));
    *known = 1;
    return KILN_OK;
}

static kiln_status cum_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 12, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                              KILN_DTYPE_BFLOAT16, KILN_DTYPE_INT8, KILN_DTYPE_UINT8,
                              KILN_DTYPE_INT16, KILN_DTYPE_UINT16, KILN_DTYPE_INT32,
                              KILN_DTYPE_UINT32, KILN_DTYPE_INT64, KILN_DTYPE_UINT64));
    if (x->rank == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'x' must have rank >= 1");
    int axis, known;
    KILN_TRY(cum_axis(ctx, x, &axis, &known));
    if (!known && !ctx->static_mode)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'axis' has no data");
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    return kiln_set_output_like(ctx, 0, x);
}

struct cumjob {
    int dtype, prod, exclusive, reverse;
    const void *x;
    void *y;
    int64_t n, inner, nblk;
};

/* columns [j0, j0 + nc) of one [n, inner] slice */
#define DEFINE_CUM(SFX, T, U)                                                                       \
    static void cum_##SFX(const struct cumjob *jb, const T *x, T *y, int64_t nc) {                  \
        int64_t n = jb->n, inner = jb->inner;                                                       \
        int64_t first = jb->reverse ? n - 1 : 0, step = jb->reverse ? -inner : inner;               \
        const T *xr = x + first * inner;                                                            \
        T *yr = y + first * inner;                                                                  \
        if (jb->exclusive) {                                                                        \
            for (int64_t j = 0; j < nc; j++) yr[j] = (T)(jb->prod ? 1 : 0);                         \
        } else {                                                                                    \
            for (int64_t j = 0; j < nc; j++) yr[j] = xr[j];                                         \
        }                                                                                           \
        for (int64_t k = 1; k < n; k++) {                                                           \
            const T *prev = yr, *xin = jb->exclusive ? xr : xr + step;                              \
            xr += step;                                                                             \
            yr += step;                                                                             \
            if (jb->prod)                                                                           \
                for (int64_t j = 0; j < nc; j++) yr[j] = (T)((U)prev[j] * (U)xin[j]);               \
            else                                                                                    \
                for (int64_t j = 0; j < nc; j++) yr[j] = (T)((U)prev[j] + (U)xin[j]);               \
        }                                                                                           \
    }

DEFINE_CUM(f32, float, float)
DEFINE_CUM(f64, double, double)
DEFINE_CUM(i8, int8_t, uint8_t)
DEFINE_CUM(u8, uint8_t, uint8_t)
DEFINE_CUM(i16, int16_t, uint16_t)
DEFINE_CUM(u16, uint16_t, uint16_t)
DEFINE_CUM(i32, int32_t, uint32_t)
DEFINE_CUM(u32, uint32_t, uint32_t)
DEFINE_CUM(i64, int64_t, uint64_t)
DEFINE_CUM(u64, uint64_t, uint64_t)

static void cum_range(void *arg, int64_t b, int64_t e) {
    const struct cumjob *jb = arg;
    size_t es = ru_is_halfish(jb->dtype) ? 4 : kiln_dtype_bytes(jb->dtype, 1);
    for (int64_t u = b; u < e; u++) {
        int64_t o = u / jb->nblk, j0 = (u % jb->nblk) * CUM_BLOCK;
        int64_t nc = jb->inner - j0 < CUM_BLOCK ? jb->inner - j0 : CUM_BLOCK;
        size_t off = (size_t)(o * jb->n * jb->inner + j0) * es;
        const void *x = (const char *)jb->x + off;
        void *y = (char *)jb->y + off;
        switch (jb->dtype) {
        case KILN_DTYPE_FLOAT: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16:
            cum_f32(jb, x, y, nc);
            break;
        case KILN_DTYPE_DOUBLE: cum_f64(jb, x, y, nc); break;
        case KILN_DTYPE_INT8: cum_i8(jb, x, y, nc); break;
        case KILN_DTYPE_UINT8: cum_u8(jb, x, y, nc); break;
        case KILN_DTYPE_INT16: cum_i16(jb, x, y, nc); break;
        case KILN_DTYPE_UINT16: cum_u16(jb, x, y, nc); break;
        case KILN_DTYPE_INT32: cum_i32(jb, x, y, nc); break;
        case KILN_DTYPE_UINT32: cum_u32(jb, x, y, nc); break;
        case KILN_DTYPE_INT64: cum_i64(jb, x, y, nc); break;
        default: cum_u64(jb, x, y, nc); break;
        }
    }
}

static kiln_status cum_compute(kiln_ctx *ctx, int prod) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int axis, known;
    KILN_TRY(cum_axis(ctx, x, &axis, &known));
    if (!known) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'axis' has no data");
    int64_t total = kiln_numel(x);
    if (total == 0) return KILN_OK;
    struct cumjob jb = {x->dtype, prod, kiln_attr_int(ctx->node, "exclusive", 0) != 0,
                        kiln_attr_int(ctx->node, "reverse", 0) != 0, x->data, y->data,
                        x->dims[axis], ru_prod(x->dims, axis + 1, x->rank), 0};
    jb.nblk = (jb.inner + CUM_BLOCK - 1) / CUM_BLOCK;
    int64_t outer = ru_prod(x->dims, 0, axis);
    float *tmp = NULL;
    if (ru_is_halfish(x->dtype)) {
        tmp = malloc((size_t)total * 2 * sizeof(float));
        if (!tmp) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        ru_half_to_f32(x->dtype, x->data, tmp, total);
        jb.x = tmp;
        jb.y = tmp + total;
    }
    kiln_parallel_for(ctx, outer * jb.nblk, ru_grain(jb.n * CUM_BLOCK), cum_range, &jb);
    if (tmp) {
        ru_f32_to_half(x->dtype, tmp + total, y->data, total);
        free(tmp);
    }
    return KILN_OK;
}

static kiln_status cumsum_compute(kiln_ctx *ctx) { return cum_compute(ctx, 0); }
static kiln_status cumprod_compute(kiln_ctx *ctx) { return cum_compute(ctx, 1); }

const kiln_op kiln_ops_cumsum[] = {
    {"", "CumSum", 11, 0, NULL, cum_infer, cumsum_compute, NULL},
    {"", "CumProd", 26, 0, NULL, cum_infer, cumprod_compute, NULL},
    {0}};
