/* ArgMax / ArgMin: index (int64) of the first (or, with select_last_index, last) extreme value
 * along one axis. Compared in the input's own type so large int64 values stay exact;
 * float16/bfloat16 are compared as float32. */
#pragma GCC optimize("O3") /* -O2 leaves these typed loops scalar */
#include "reduce_impl.h"

#define ARG_BLOCK 128

static kiln_status arg_axis(kiln_ctx *ctx, const kiln_tensor *x, int *axis) {
    if (x->rank < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input has rank 0; %s needs rank >= 1",
                         ctx->node->op_type);
    return kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), x->rank, "axis", axis);
}

kiln_status kiln_argmax_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 13, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE,
                              KILN_DTYPE_FLOAT16, KILN_DTYPE_BFLOAT16, KILN_DTYPE_INT8,
                              KILN_DTYPE_UINT8, KILN_DTYPE_INT16, KILN_DTYPE_UINT16, KILN_DTYPE_INT32,
                              KILN_DTYPE_UINT32, KILN_DTYPE_INT64, KILN_DTYPE_UINT64,
                              KILN_DTYPE_BOOL));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_INT64);
    int axis;
    KILN_TRY(arg_axis(ctx, x, &axis));
    if (x->dims[axis] == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %d has size 0: no element to select",
                         axis);
    int keep = kiln_attr_int(ctx->node, "keepdims", 1) != 0;
    int64_t dims[KILN_MAX_RANK];
    int n = 0;
    for (int i = 0; i < x->rank; i++) {
        if (i != axis)
            dims[n++] = x->dims[i];
        else if (keep)
            dims[n++] = 1;
    }
    return kiln_set_output(ctx, 0, KILN_DTYPE_INT64, n, dims);
}

struct argjob {
    const void *x;
    int64_t *y;
    int64_t r, inner, nblk;
    int mode; /* 0 max, 1 max-last, 2 min, 3 min-last */
};

#define ARG_SCAN(T, CMP)                                                                            \
    do {                                                                                            \
        for (int64_t j = 0; j < nc; j++) {                                                          \
            best[j] = x[j];                                                                         \
            bi[j] = 0;                                                                              \
        }                                                                                           \
        for (int64_t k = 1; k < r; k++) {                                                           \
            const T *row = x + k * inner;                                                           \
            for (int64_t j = 0; j < nc; j++)                                                        \
                if (row[j] CMP best[j]) {                                                           \
                    best[j] = row[j];                                                               \
                    bi[j] = k;                                                                      \
                }                                                                                   \
        }                                                                                           \
    } while (0)

#define DEFINE_ARG(SFX, T)                                                                          \
    static void arg_block_##SFX(const T *x, int64_t r, int64_t inner, int64_t nc, int mode,         \
                                int64_t *bi) {                                                      \
        T best[ARG_BLOCK];                                                                          \
        switch (mode) {                                                                             \
        case 0: ARG_SCAN(T, >); break;                                                              \
        case 1: ARG_SCAN(T, >=); break;                                                             \
        case 2: ARG_SCAN(T, <); break;                                                              \
        default: ARG_SCAN(T, <=); break;                                                            \
        }                                                                                           \
    }                                                                                               \
    static void arg_range_##SFX(const struct argjob *jb, int64_t b, int64_t e) {                    \
        for (int64_t u = b; u < e; u++) {                                                           \
            int64_t o = u / jb->nblk, j0 = (u % jb->nblk) * ARG_BLOCK;                              \
            int64_t nc = jb->inner - j0 < ARG_BLOCK ? jb->inner - j0 : ARG_BLOCK;                   \
            arg_block_##SFX((const T *)jb->x + o * jb->r * jb->inner + j0, jb->r, jb->inner, nc,    \
                            jb->mode, jb->y + o * jb->inner + j0);                                  \
        }                                                                                           \
    }

DEFINE_ARG(f32, float)
DEFINE_ARG(f64, double)
DEFINE_ARG(i8, int8_t)
DEFINE_ARG(u8, uint8_t)
DEFINE_ARG(i16, int16_t)
DEFINE_ARG(u16, uint16_t)
DEFINE_ARG(i32, int32_t)
DEFINE_ARG(u32, uint32_t)
DEFINE_ARG(i64, int64_t)
DEFINE_ARG(u64, uint64_t)

struct argjob_typed {
    struct argjob jb;
    int dtype;
};

static void arg_range(void *arg, int64_t b, int64_t e) {
    const struct argjob_typed *t = arg;
    switch (t->dtype) {
    case KILN_DTYPE_FLOAT: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16:
        arg_range_f32(&t->jb, b, e);
        break;
    case KILN_DTYPE_DOUBLE: arg_range_f64(&t->jb, b, e); break;
    case KILN_DTYPE_INT8: arg_range_i8(&t->jb, b, e); break;
    case KILN_DTYPE_UINT8: case KILN_DTYPE_BOOL: arg_range_u8(&t->jb, b, e); break;
    case KILN_DTYPE_INT16: arg_range_i16(&t->jb, b, e); break;
    case KILN_DTYPE_UINT16: arg_range_u16(&t->jb, b, e); break;
    case KILN_DTYPE_INT32: arg_range_i32(&t->jb, b, e); break;
    case KILN_DTYPE_UINT32: arg_range_u32(&t->jb, b, e); break;
    case KILN_DTYPE_INT64: arg_range_i64(&t->jb, b, e); break;
    default: arg_range_u64(&t->jb, b, e); break;
    }
}

static kiln_status arg_compute(kiln_ctx *ctx, int is_min) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int axis;
    KILN_TRY(arg_axis(ctx, x, &axis));
    int64_t outer = ru_prod(x->dims, 0, axis), r = x->dims[axis];
    int64_t inner = ru_prod(x->dims, axis + 1, x->rank);
    if (outer * inner == 0) return KILN_OK;
    int last = ctx->opset >= 12 && kiln_attr_int(ctx->node, "select_last_index", 0) != 0;
    struct argjob_typed t = {{x->data, y->data, r, inner, (inner + ARG_BLOCK - 1) / ARG_BLOCK,
                              is_min * 2 + last},
                             x->dtype};
    float *wide = NULL;
    if (ru_is_halfish(x->dtype)) {
        int64_t n = kiln_numel(x);
        wide = malloc((size_t)n * sizeof(float));
        if (!wide) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        ru_half_to_f32(x->dtype, x->data, wide, n);
        t.jb.x = wide;
    }
    kiln_parallel_for(ctx, outer * t.jb.nblk, ru_grain(r * ARG_BLOCK), arg_range, &t);
    free(wide);
    return KILN_OK;
}

kiln_status kiln_argmax_compute(kiln_ctx *ctx) { return arg_compute(ctx, 0); }
kiln_status kiln_argmin_compute(kiln_ctx *ctx) { return arg_compute(ctx, 1); }
