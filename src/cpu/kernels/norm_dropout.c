/* Dropout. In inference (every opset before 12; from 12 unless the training_mode input is true)
 * the output is the input. The mask follows onnxruntime: before opset 12 it is all zeros (of type
 * T before opset 10, bool after), from 12 on all true. In training mode each element is kept
 * with probability 1 - ratio and scaled by 1 / (1 - ratio). The draws are those of numpy's
 * RandomState(seed).uniform(), i.e. MT19937 with 53-bit doubles, which is how the ONNX reference
 * (and so the ONNX test data) makes them; without a 'seed' attribute the generator is seeded from
 * the clock and a per-process counter. */
#include "norm_impl.h"
#include <stdatomic.h>
#include <time.h>

static kiln_status dropout_training(kiln_ctx *ctx, int *training, double *ratio) {
    *training = 0;
    *ratio = 0.5;
    if (ctx->opset < 12) {
        *ratio = kiln_attr_float(ctx->node, "ratio", 0.5f);
        return KILN_OK;
    }
    kiln_tensor *r = ctx->n_in > 1 ? kiln_input(ctx, 1) : NULL;
    kiln_tensor *t = ctx->n_in > 2 ? kiln_input(ctx, 2) : NULL;
    if (r) {
        KILN_TRY(kiln_check_dtype(ctx, r, 1, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE,
                                  KILN_DTYPE_FLOAT16, KILN_DTYPE_BFLOAT16));
        if (r->data) KILN_TRY(kiln_read_scalar(ctx, r, ratio));
    }
    if (t) {
        KILN_TRY(kiln_check_dtype(ctx, t, 2, 1, KILN_DTYPE_BOOL));
        if (t->data) {
            if (kiln_numel(t) != 1)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "input 'training_mode' must be a scalar");
            *training = *(const uint8_t *)t->data != 0;
        }
    }
    if (*training && !(*ratio >= 0 && *ratio < 1))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ratio %g is outside [0, 1)", *ratio);
    return KILN_OK;
}

static int mask_dtype(const kiln_ctx *ctx, int x_dtype) {
    return ctx->opset < 10 ? x_dtype : KILN_DTYPE_BOOL;
}

kiln_status kiln_dropout_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                              KILN_DTYPE_BFLOAT16));
    int training;
    double ratio;
    KILN_TRY(dropout_training(ctx, &training, &ratio));
    int wants_mask = ctx->n_out > 1 && kiln_output(ctx, 1);
    if (x->rank < 0) {
        KILN_TRY(kiln_set_output_unknown(ctx, 0, x->dtype));
        return wants_mask ? kiln_set_output_unknown(ctx, 1, mask_dtype(ctx, x->dtype)) : KILN_OK;
    }
    KILN_TRY(kiln_set_output_like(ctx, 0, x));
    if (wants_mask) KILN_TRY(kiln_set_output(ctx, 1, mask_dtype(ctx, x->dtype), x->rank, x->dims));
    return KILN_OK;
}

/* MT19937 (Matsumoto & Nishimura), seeded like init_genrand */
typedef struct mt_state {
    uint32_t v[624];
    int i;
} mt_state;

static void mt_seed(mt_state *m, uint32_t seed) {
    m->v[0] = seed;
    for (int i = 1; i < 624; i++)
        m->v[i] = 1812433253u * (m->v[i - 1] ^ (m->v[i - 1] >> 30)) + (uint32_t)i;
    m->i = 624;
}

static uint32_t mt_next(mt_state *m) {
    if (m->i >= 624) {
        for (int k = 0; k < 624; k++) {
            uint32_t y = (m->v[k] & 0x80000000u) | (m->v[(k + 1) % 624] & 0x7fffffffu);
            m->v[k] = m->v[(k + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        m->i = 0;
    }
    uint32_t y = m->v[m->i++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    return y ^ (y >> 18);
}

/* uniform double in [0, 1) from 53 random bits, as numpy's random_sample */
static double mt_uniform(mt_state *m) {
    uint32_t a = mt_next(m) >> 5, b = mt_next(m) >> 6;
    return (a * 67108864.0 + b) / 9007199254740992.0;
}

static atomic_uint_fast64_t dropout_calls;

kiln_status kiln_dropout_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    kiln_tensor *mask = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    int training;
    double ratio;
    KILN_TRY(dropout_training(ctx, &training, &ratio));
    int64_t n = kiln_numel(x);
    if (!training || ratio == 0) {
        if (y && y->data != x->data) memcpy(y->data, x->data, kiln_tensor_nbytes(x));
        if (mask) {
            if (ctx->opset >= 12)
                memset(mask->data, 1, (size_t)n); /* bool true */
            else
                memset(mask->data, 0, kiln_tensor_nbytes(mask));
        }
        return KILN_OK;
    }
    uint32_t seed = kiln_has_attr(ctx->node, "seed")
                        ? (uint32_t)kiln_attr_int(ctx->node, "seed", 0)
                        : (uint32_t)time(NULL) ^ (uint32_t)(atomic_fetch_add(&dropout_calls, 1) * 2654435761u);
    mt_state *mt = malloc(sizeof *mt);
    if (!mt) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    mt_seed(mt, seed);
    double scale = 1.0 / (1.0 - ratio);
    for (int64_t i = 0; i < n; i++) {
        int keep = mt_uniform(mt) >= ratio;
        if (mask) ((uint8_t *)mask->data)[i] = (uint8_t)keep;
        if (!y) continue;
        switch (x->dtype) {
        case KILN_DTYPE_FLOAT: /* float32 arithmetic, as numpy does for a float32 array */
            ((float *)y->data)[i] = keep ? ((const float *)x->data)[i] * (float)scale : 0.0f;
            break;
        case KILN_DTYPE_DOUBLE:
            ((double *)y->data)[i] = keep ? ((const double *)x->data)[i] * scale : 0.0;
            break;
        default:
            kiln_store_f64(y->dtype, y->data, i, keep ? kiln_load_f64(x->dtype, x->data, i) * scale : 0.0);
        }
    }
    free(mt);
    return KILN_OK;
}
