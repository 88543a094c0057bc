/* com.microsoft element-wise ops as onnxruntime defines them: Gelu (erf form), BiasGelu
 * (Gelu of A + B), FastGelu (tanh form, optional bias), QuickGelu (x * sigmoid(alpha x)) and
 * BiasAdd (X + bias + skip). The biases are 1-D over the last axis. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast") /* see elementwise_util.h */
#endif
#include "elementwise_util.h"

#define SQRT1_2 0.70710678118654752440
#define SQRT_2_PI 0.79788456080286535588 /* sqrt(2/pi) */

static inline float gelu_f(float x) { return 0.5f * x * (1.0f + ew_fast_erff(x * (float)SQRT1_2)); }
static inline double gelu_d(double x) { return 0.5 * x * (1.0 + erf(x * SQRT1_2)); }
static inline float fastgelu_f(float x) {
    return 0.5f * x * (1.0f + ew_fast_tanhf((float)SQRT_2_PI * x * (1.0f + 0.044715f * x * x)));
}
static inline double fastgelu_d(double x) {
    return 0.5 * x * (1.0 + tanh(SQRT_2_PI * x * (1.0 + 0.044715 * x * x)));
}

#define UN_FLOAT(op, EF, ED)                                                                       \
    EW_UN_ROW(op##_f32, float, float, EF)                                                          \
    EW_UN_ROW(op##_f64, double, double, ED)                                                        \
    EW_UN_ROW_HALF(op##_f16, op##_f32, ew_f16_load, ew_f16_store)                                  \
    EW_UN_ROW_HALF(op##_bf16, op##_f32, ew_bf16_load, ew_bf16_store)
#define BIN_FLOAT(op, EF, ED)                                                                      \
    EW_BIN_ROW(op##_f32, float, float, EF)                                                         \
    EW_BIN_ROW(op##_f64, double, double, ED)                                                       \
    EW_BIN_ROW_HALF(op##_f16, op##_f32, ew_f16_load, ew_f16_store)                                 \
    EW_BIN_ROW_HALF(op##_bf16, op##_f32, ew_bf16_load, ew_bf16_store)

UN_FLOAT(gelu, gelu_f(x), gelu_d(x))
UN_FLOAT(fastgelu, fastgelu_f(x), fastgelu_d(x))
EW_UN_ROW_P(quickgelu_f32, float, float, float, x * ew_fast_sigmoidf(p * x))
EW_UN_ROW_P(quickgelu_f64, double, double, float, x * ew_sigmoid((double)p * x))
EW_UN_ROW_HALF(quickgelu_f16, quickgelu_f32, ew_f16_load, ew_f16_store)
EW_UN_ROW_HALF(quickgelu_bf16, quickgelu_f32, ew_bf16_load, ew_bf16_store)
BIN_FLOAT(biasgelu, gelu_f(x + y), gelu_d(x + y))
BIN_FLOAT(fastgelu_bias, fastgelu_f(x + y), fastgelu_d(x + y))

static const ew_row_fn gelu_rows[EW_NDT] = {EW_FLOAT_ROWS(gelu)};
static const ew_row_fn fastgelu_rows[EW_NDT] = {EW_FLOAT_ROWS(fastgelu)};
static const ew_row_fn quickgelu_rows[EW_NDT] = {EW_FLOAT_ROWS(quickgelu)};
static const ew_row_fn biasgelu_rows[EW_NDT] = {EW_FLOAT_ROWS(biasgelu)};
static const ew_row_fn fastgelu_bias_rows[EW_NDT] = {EW_FLOAT_ROWS(fastgelu_bias)};

/* BiasAdd: a = X, b = bias (constant along the row or not), c = skip */
#define BIASADD_ROW(sfx, T)                                                                        \
    static void biasadd_##sfx(void *o_, const void *a_, const void *b_, const void *c_, int64_t n, \
                              unsigned scalar, const void *P) {                                    \
        T *o = o_;                                                                                 \
        const T *a = a_, *b = b_, *c = c_;                                                         \
        if (scalar == 0) {                                                                         \
            for (int64_t i = 0; i < n; i++) o[i] = a[i] + b[i] + c[i];                             \
        } else {                                                                                   \
            const int64_t sa = (scalar & 1u) ? 0 : 1, sb = (scalar & 2u) ? 0 : 1,                  \
                          sc = (scalar & 4u) ? 0 : 1;                                              \
            for (int64_t i = 0; i < n; i++) o[i] = a[i * sa] + b[i * sb] + c[i * sc];              \
        }                                                                                          \
    }
BIASADD_ROW(f32, float)
BIASADD_ROW(f64, double)

#define BIASADD_HALF(sfx, LOAD, STORE)                                                             \
    static void biasadd_##sfx(void *o_, const void *a_, const void *b_, const void *c_, int64_t n, \
                              unsigned scalar, const void *P) {                                    \
        const uint16_t *in[3] = {a_, b_, c_};                                                      \
        float t[3][EW_BLOCK], r[EW_BLOCK];                                                         \
        for (int k = 0; k < 3; k++)                                                                \
            if (scalar & (1u << k)) LOAD(t[k], in[k], 1);                                          \
        for (int64_t s = 0; s < n; s += EW_BLOCK) {                                                \
            int64_t m = n - s < EW_BLOCK ? n - s : EW_BLOCK;                                       \
            for (int k = 0; k < 3; k++)                                                            \
                if (!(scalar & (1u << k))) LOAD(t[k], in[k] + s, m);                               \
            biasadd_f32(r, t[0], t[1], t[2], m, scalar, P);                                        \
            STORE((uint16_t *)o_ + s, r, m);                                                       \
        }                                                                                          \
    }
BIASADD_HALF(f16, ew_f16_load, ew_f16_store)
BIASADD_HALF(bf16, ew_bf16_load, ew_bf16_store)
static const ew_row_fn biasadd_rows[EW_NDT] = {EW_FLOAT_ROWS(biasadd)};

/* ---- checks ---- */

static kiln_status need_float(kiln_ctx *ctx, int i, kiln_tensor **t) {
    KILN_TRY(kiln_need_input(ctx, i, t));
    return ew_check_type(ctx, *t, i, EW_FLOATS);
}

/* bias must be 1-D with as many values as x's last axis */
static kiln_status check_bias(kiln_ctx *ctx, const kiln_tensor *x, int xi, const kiln_tensor *b,
                              int bi) {
    KILN_TRY(ew_same_type(ctx, x, xi, b, bi));
    if (x->rank < 0 || b->rank < 0) return KILN_OK;
    if (x->rank < 1 || b->rank != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input %d must be 1-D over the last axis of input %d (ranks %d and %d)", bi,
                         xi, b->rank, x->rank);
    int64_t c = x->dims[x->rank - 1], d = b->dims[0];
    if (c >= 0 && d >= 0 && c != d)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input %d has %lld values but the last axis of input %d has %lld", bi,
                         (long long)d, xi, (long long)c);
    return KILN_OK;
}

static kiln_status apply_unary(kiln_ctx *ctx, const ew_row_fn *rows, const void *param) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!x || !y || ew_empty(y)) return KILN_OK;
    ew_unary_apply(ctx, y, x, rows[x->dtype], param, EW_GRAIN_MATH);
    return KILN_OK;
}

static kiln_status apply_bias(kiln_ctx *ctx, const ew_row_fn *rows) {
    kiln_tensor *x = kiln_input(ctx, 0), *b = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    if (!x || !b || !y || ew_empty(y)) return KILN_OK;
    const kiln_tensor *ts[2] = {x, b};
    ew_broadcast_apply(ctx, y, 2, ts, rows[x->dtype], NULL, EW_GRAIN_MATH);
    return KILN_OK;
}

/* ---- Gelu, QuickGelu ---- */

static kiln_status x_only_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(need_float(ctx, 0, &x));
    return ew_set_like(ctx, 0, x->dtype, x);
}

static kiln_status gelu_compute(kiln_ctx *ctx) { return apply_unary(ctx, gelu_rows, NULL); }

static kiln_status quickgelu_compute(kiln_ctx *ctx) {
    float alpha = kiln_attr_float(ctx->node, "alpha", 1.702f);
    return apply_unary(ctx, quickgelu_rows, &alpha);
}

/* ---- BiasGelu(A, B), FastGelu(X, bias?) ---- */

static kiln_status biasgelu_infer(kiln_ctx *ctx) {
    kiln_tensor *a, *b;
    KILN_TRY(need_float(ctx, 0, &a));
    KILN_TRY(kiln_need_input(ctx, 1, &b));
    KILN_TRY(check_bias(ctx, a, 0, b, 1));
    return ew_set_like(ctx, 0, a->dtype, a);
}
static kiln_status biasgelu_compute(kiln_ctx *ctx) { return apply_bias(ctx, biasgelu_rows); }

static kiln_status fastgelu_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *b = kiln_input(ctx, 1);
    KILN_TRY(need_float(ctx, 0, &x));
    if (b) KILN_TRY(check_bias(ctx, x, 0, b, 1));
    return ew_set_like(ctx, 0, x->dtype, x);
}
static kiln_status fastgelu_compute(kiln_ctx *ctx) {
    if (kiln_input(ctx, 1)) return apply_bias(ctx, fastgelu_bias_rows);
    return apply_unary(ctx, fastgelu_rows, NULL);
}

/* ---- BiasAdd(X, bias, skip): X and skip (N, S, C), bias (C) ---- */

static kiln_status biasadd_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *bias, *skip;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(ew_check_type(ctx, x, 0, EW_BIT(KILN_DTYPE_FLOAT) | EW_BIT(KILN_DTYPE_FLOAT16)));
    KILN_TRY(kiln_need_input(ctx, 1, &bias));
    KILN_TRY(kiln_need_input(ctx, 2, &skip));
    KILN_TRY(check_bias(ctx, x, 0, bias, 1));
    KILN_TRY(ew_same_type(ctx, x, 0, skip, 2));
    if (x->rank >= 0 && x->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 0 has rank %d, expected 3", x->rank);
    if (x->rank >= 0 && skip->rank >= 0 && !kiln_shape_equal(x, skip)) {
        char s1[128], s2[128];
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "skip %s must have X's shape %s",
                         kiln_shape_str(skip, s1, sizeof s1), kiln_shape_str(x, s2, sizeof s2));
    }
    return ew_set_like(ctx, 0, x->dtype, x);
}

static kiln_status biasadd_compute(kiln_ctx *ctx) {
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || ew_empty(y)) return KILN_OK;
    const kiln_tensor *ts[3] = {kiln_input(ctx, 0), kiln_input(ctx, 1), kiln_input(ctx, 2)};
    ew_broadcast_apply(ctx, y, 3, ts, biasadd_rows[ts[0]->dtype], NULL, EW_GRAIN_CHEAP);
    return KILN_OK;
}

#define MS "com.microsoft"
const kiln_op kiln_ops_contrib[] = {
    {MS, "Gelu", 1, 0, NULL, x_only_infer, gelu_compute, NULL},
    {MS, "QuickGelu", 1, 0, NULL, x_only_infer, quickgelu_compute, NULL},
    {MS, "BiasGelu", 1, 0, NULL, biasgelu_infer, biasgelu_compute, NULL},
    {MS, "FastGelu", 1, 0, NULL, fastgelu_infer, fastgelu_compute, NULL},
    {MS, "BiasAdd", 1, 0, NULL, biasadd_infer, biasadd_compute, NULL},
    {0},
};
