/* Activation functions: Sigmoid Tanh Relu LeakyRelu Elu Selu Celu ThresholdedRelu HardSigmoid
 * HardSwish Softplus Softsign Mish Gelu Swish Shrink, plus PRelu (broadcast slope) and Clip
 * (bounds as attributes before opset 11, as optional inputs from 11). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast") /* see elementwise_util.h */
#endif
#include "elementwise_util.h"

#include <float.h>

typedef struct act_param {
    float alpha, beta, gamma;
    int approx_tanh; /* Gelu */
} act_param;

#define PA (p.alpha)
#define PB (p.beta)
#define PG (p.gamma)

#define ACT_FLOAT(op, EF, ED)                                                                      \
    EW_UN_ROW_P(op##_f32, float, float, act_param, EF)                                             \
    EW_UN_ROW_P(op##_f64, double, double, act_param, ED)                                           \
    EW_UN_ROW_HALF(op##_f16, op##_f32, ew_f16_load, ew_f16_store)                                  \
    EW_UN_ROW_HALF(op##_bf16, op##_f32, ew_bf16_load, ew_bf16_store)
#define GELU_K 0.7978845608028654      /* sqrt(2/pi) */
#define EW_SQRT1_2 0.70710678118654752440 /* 1/sqrt(2) */
static inline float gelu_erf_f(float x) { return 0.5f * x * (1.0f + ew_fast_erff(x * (float)EW_SQRT1_2)); }
static inline double gelu_erf_d(double x) { return 0.5 * x * (1.0 + erf(x * EW_SQRT1_2)); }
static inline float gelu_tanh_f(float x) {
    return 0.5f * x * (1.0f + ew_fast_tanhf((float)GELU_K * (x + 0.044715f * x * x * x)));
}
static inline double gelu_tanh_d(double x) {
    return 0.5 * x * (1.0 + tanh(GELU_K * (x + 0.044715 * x * x * x)));
}

/* tanh(softplus(x)) = n / (n + 2) with n = e^x (e^x + 2); past x = 20 it is 1 in float */
static inline float mish_f(float x) {
    const float e = ew_fast_expf(x < 20.0f ? x : 20.0f), n = e * (e + 2.0f);
    return x * (n / (n + 2.0f));
}

ACT_FLOAT(sigmoid, ew_fast_sigmoidf(x), ew_sigmoid(x))
ACT_FLOAT(tanh, ew_fast_tanhf(x), tanh(x))
ACT_FLOAT(relu, x < 0 ? 0.0f : x, x < 0 ? 0.0 : x) /* NaN passes through */
ACT_FLOAT(leaky, x >= 0 ? x : PA * x, x >= 0 ? x : (double)PA * x)
ACT_FLOAT(elu, x >= 0 ? x : PA * ew_fast_expm1f(x), x >= 0 ? x : (double)PA * expm1(x))
ACT_FLOAT(selu, x > 0 ? PG * x : PG * PA * ew_fast_expm1f(x),
          x > 0 ? (double)PG * x : (double)PG * (double)PA * expm1(x))
/* x itself when neither branch holds, so that NaN passes through (found by the differential fuzzer) */
ACT_FLOAT(celu, x > 0 ? x : x < 0 ? PA * ew_fast_expm1f(x / PA) : x,
          x > 0 ? x : x < 0 ? (double)PA * expm1(x / (double)PA) : x)
ACT_FLOAT(thresholded, x > PA ? x : 0.0f, x > (double)PA ? x : 0.0)
/* comparisons rather than fminf/fmaxf (library calls); NaN passes through */
static inline float clamp01f(float v) {
    v = v > 1.0f ? 1.0f : v;
    return v < 0.0f ? 0.0f : v;
}

ACT_FLOAT(hardsigmoid, clamp01f(PA * x + PB),
          fmax(0.0, fmin(1.0, (double)PA * x + (double)PB)))
ACT_FLOAT(hardswish, x * clamp01f(x * (1.0f / 6) + 0.5f),
          x * fmax(0.0, fmin(1.0, x / 6.0 + 0.5)))
ACT_FLOAT(softplus, ew_softplusf(x), ew_softplus(x))
ACT_FLOAT(softsign, x / (1.0f + fabsf(x)), x / (1.0 + fabs(x)))
ACT_FLOAT(mish, mish_f(x), x * tanh(ew_softplus(x)))
ACT_FLOAT(gelu, p.approx_tanh ? gelu_tanh_f(x) : gelu_erf_f(x),
          p.approx_tanh ? gelu_tanh_d(x) : gelu_erf_d(x))
ACT_FLOAT(swish, x * ew_fast_sigmoidf(PA * x), x * ew_sigmoid((double)PA * x))

/* Relu on integers (opset 14) */
#define RELU_I(dt, T, UT, sfx) EW_UN_ROW(relu_##sfx, T, T, x > 0 ? x : 0)
#define RELU_E(dt, T, UT, sfx) [dt] = relu_##sfx,
EW_SINT_TYPES(RELU_I)

/* Shrink: alpha = lambd, beta = bias. Integer inputs are compared and shifted in double, then
 * brought back through int64 so that a negative result wraps for unsigned types instead of
 * being undefined. */
#define SHRINK_EXPR(x) ((x) < -(double)PA ? (x) + (double)PB : (x) > (double)PA ? (x) - (double)PB : 0.0)
ACT_FLOAT(shrink, (float)SHRINK_EXPR(x), SHRINK_EXPR(x))
/* a shift by an infinite or huge bias saturates instead of being undefined */
static inline int64_t shrink_saturate(double v) {
    if (v != v) return 0;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    if (v >= 9223372036854775808.0) return INT64_MAX;
    return (int64_t)v;
}
#define SHRINK_I(dt, T, UT, sfx)                                                                   \
    EW_UN_ROW_P(shrink_##sfx, T, T, act_param, (T)shrink_saturate(SHRINK_EXPR((double)x)))
#define SHRINK_E(dt, T, UT, sfx) [dt] = shrink_##sfx,
EW_INT_TYPES(SHRINK_I)

typedef struct act_desc {
    uint32_t types;
    ew_row_fn rows[EW_NDT];
    int64_t grain;
} act_desc;

#define D_FLOAT(op, grain) {EW_FLOATS, {EW_FLOAT_ROWS(op)}, grain}
static const act_desc d_sigmoid = D_FLOAT(sigmoid, EW_GRAIN_MATH);
static const act_desc d_tanh = D_FLOAT(tanh, EW_GRAIN_MATH);
static const act_desc d_relu = {EW_FLOATS | EW_SINTS, {EW_FLOAT_ROWS(relu), EW_SINT_TYPES(RELU_E)},
                                EW_GRAIN_CHEAP};
static const act_desc d_leaky = D_FLOAT(leaky, EW_GRAIN_CHEAP);
static const act_desc d_elu = D_FLOAT(elu, EW_GRAIN_MATH);
static const act_desc d_selu = D_FLOAT(selu, EW_GRAIN_MATH);
static const act_desc d_celu = D_FLOAT(celu, EW_GRAIN_MATH);
static const act_desc d_thresholded = D_FLOAT(thresholded, EW_GRAIN_CHEAP);
static const act_desc d_hardsigmoid = D_FLOAT(hardsigmoid, EW_GRAIN_CHEAP);
static const act_desc d_hardswish = D_FLOAT(hardswish, EW_GRAIN_CHEAP);
static const act_desc d_softplus = D_FLOAT(softplus, EW_GRAIN_MATH);
static const act_desc d_softsign = D_FLOAT(softsign, EW_GRAIN_CHEAP);
static const act_desc d_mish = D_FLOAT(mish, EW_GRAIN_MATH);
static const act_desc d_gelu = D_FLOAT(gelu, EW_GRAIN_MATH);
static const act_desc d_swish = D_FLOAT(swish, EW_GRAIN_MATH);
static const act_desc d_shrink = {EW_FLOATS | EW_INTS, {EW_FLOAT_ROWS(shrink), EW_INT_TYPES(SHRINK_E)},
                                  EW_GRAIN_CHEAP};

static kiln_status act_infer(kiln_ctx *ctx, const act_desc *d) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(ew_check_type(ctx, x, 0, d->types));
    return ew_set_like(ctx, 0, x->dtype, x);
}

static kiln_status act_compute(kiln_ctx *ctx, const act_desc *d, const act_param *p) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!x || !y || ew_empty(y)) return KILN_OK;
    ew_row_fn fn = x->dtype > 0 && x->dtype < EW_NDT ? d->rows[x->dtype] : NULL;
    if (!fn)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input 0",
                         ew_dtype_name(x->dtype));
    ew_unary_apply(ctx, y, x, fn, p, d->grain);
    return KILN_OK;
}

/* name, descriptor, and how the parameters come from attributes (defaults per the schema) */
#define ACT_OP(name, desc, ALPHA, BETA, GAMMA)                                                     \
    static kiln_status name##_infer(kiln_ctx *ctx) { return act_infer(ctx, &desc); }               \
    static kiln_status name##_compute(kiln_ctx *ctx) {                                             \
        const kiln_node *nd = ctx->node;                                                           \
        (void)nd;                                                                                  \
        act_param p = {ALPHA, BETA, GAMMA, 0};                                                     \
        return act_compute(ctx, &desc, &p);                                                        \
    }

ACT_OP(sigmoid, d_sigmoid, 0, 0, 0)
ACT_OP(tanh, d_tanh, 0, 0, 0)
ACT_OP(relu, d_relu, 0, 0, 0)
ACT_OP(leaky, d_leaky, kiln_attr_float(nd, "alpha", 0.01f), 0, 0)
ACT_OP(elu, d_elu, kiln_attr_float(nd, "alpha", 1.0f), 0, 0)
ACT_OP(selu, d_selu, kiln_attr_float(nd, "alpha", 1.67326319217681884765625f), 0,
       kiln_attr_float(nd, "gamma", 1.05070102214813232421875f))
ACT_OP(thresholded, d_thresholded, kiln_attr_float(nd, "alpha", 1.0f), 0, 0)
ACT_OP(hardsigmoid, d_hardsigmoid, kiln_attr_float(nd, "alpha", 0.2f),
       kiln_attr_float(nd, "beta", 0.5f), 0)
ACT_OP(hardswish, d_hardswish, 0, 0, 0)
ACT_OP(softplus, d_softplus, 0, 0, 0)
ACT_OP(softsign, d_softsign, 0, 0, 0)
ACT_OP(mish, d_mish, 0, 0, 0)
ACT_OP(swish, d_swish, kiln_attr_float(nd, "alpha", 1.0f), 0, 0)
ACT_OP(shrink, d_shrink, kiln_attr_float(nd, "lambd", 0.5f), kiln_attr_float(nd, "bias", 0.0f), 0)

static kiln_status celu_infer(kiln_ctx *ctx) {
    KILN_TRY(act_infer(ctx, &d_celu));
    if (kiln_attr_float(ctx->node, "alpha", 1.0f) == 0.0f)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute alpha must not be 0");
    return KILN_OK;
}
static kiln_status celu_compute(kiln_ctx *ctx) {
    act_param p = {kiln_attr_float(ctx->node, "alpha", 1.0f), 0, 0, 0};
    return act_compute(ctx, &d_celu, &p);
}

static kiln_status gelu_mode(kiln_ctx *ctx, int *tanh_mode) {
    const char *a = kiln_attr_string(ctx->node, "approximate", "none");
    if (!strcmp(a, "none")) *tanh_mode = 0;
    else if (!strcmp(a, "tanh")) *tanh_mode = 1;
    else
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "attribute approximate is '%s', expected 'none' or 'tanh'", a);
    return KILN_OK;
}
static kiln_status gelu_infer(kiln_ctx *ctx) {
    int t;
    KILN_TRY(gelu_mode(ctx, &t));
    return act_infer(ctx, &d_gelu);
}
static kiln_status gelu_compute(kiln_ctx *ctx) {
    act_param p = {0, 0, 0, 0};
    KILN_TRY(gelu_mode(ctx, &p.approx_tanh));
    return act_compute(ctx, &d_gelu, &p);
}

/* ---- PRelu: y = x < 0 ? slope * x : x, slope broadcast onto x's shape ---- */

#define PRELU_F(T, sfx) EW_BIN_ROW(prelu_##sfx, T, T, x < 0 ? y * x : x)
PRELU_F(float, f32)
PRELU_F(double, f64)
EW_BIN_ROW_HALF(prelu_f16, prelu_f32, ew_f16_load, ew_f16_store)
EW_BIN_ROW_HALF(prelu_bf16, prelu_f32, ew_bf16_load, ew_bf16_store)
#define PRELU_S(dt, T, UT, sfx) EW_BIN_ROW(prelu_##sfx, T, T, x < 0 ? (T)((UT)y * (UT)x) : x)
#define PRELU_U(dt, T, UT, sfx) EW_BIN_ROW(prelu_##sfx, T, T, x)
#define PRELU_E(dt, T, UT, sfx) [dt] = prelu_##sfx,
EW_SINT_TYPES(PRELU_S)
EW_UINT_TYPES(PRELU_U)
static const ew_row_fn prelu_rows[EW_NDT] = {EW_FLOAT_ROWS(prelu), EW_INT_TYPES(PRELU_E)};

/* Before opset 7 a 1-D slope of C values addressed the channel axis (1) of an n-d input. */
static void prelu_slope_view(const kiln_ctx *ctx, const kiln_tensor *x, const kiln_tensor *slope,
                             kiln_tensor *view) {
    *view = *slope;
    if (ctx->opset < 7 && x->rank > 2 && slope->rank == 1 && slope->dims[0] != 1 &&
        slope->dims[0] == x->dims[1]) {
        view->rank = x->rank - 1;
        view->dims[0] = slope->dims[0];
        for (int i = 1; i < view->rank; i++) view->dims[i] = 1;
    }
}

static kiln_status prelu_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *slope, sv;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &slope));
    KILN_TRY(ew_check_type(ctx, x, 0, EW_FLOATS | EW_INTS));
    KILN_TRY(ew_same_type(ctx, x, 0, slope, 1));
    if (x->rank < 0 || slope->rank < 0) return ew_set_like(ctx, 0, x->dtype, x);
    prelu_slope_view(ctx, x, slope, &sv);
    const kiln_tensor *ts[2] = {x, &sv};
    int rank;
    int64_t dims[KILN_MAX_RANK];
    KILN_TRY(kiln_broadcast_shape(ctx, 2, ts, &rank, dims));
    int ok = rank == x->rank;
    for (int i = 0; ok && i < rank; i++)
        if (x->dims[i] >= 0 && dims[i] >= 0 && dims[i] != x->dims[i]) ok = 0;
    if (!ok) {
        char b1[128], b2[128];
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "slope %s does not broadcast to X %s",
                         kiln_shape_str(slope, b1, sizeof b1), kiln_shape_str(x, b2, sizeof b2));
    }
    return ew_set_like(ctx, 0, x->dtype, x);
}

static kiln_status prelu_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *slope = kiln_input(ctx, 1), *y = kiln_output(ctx, 0), sv;
    if (!x || !slope || !y || ew_empty(y)) return KILN_OK;
    ew_row_fn fn = prelu_rows[x->dtype];
    if (!fn)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input 0",
                         ew_dtype_name(x->dtype));
    prelu_slope_view(ctx, x, slope, &sv);
    const kiln_tensor *ts[2] = {x, &sv};
    ew_broadcast_apply(ctx, y, 2, ts, fn, NULL, EW_GRAIN_CHEAP);
    return KILN_OK;
}

/* ---- Clip ---- */

/* The bounds travel as two values of the row's C type (float for the half types). */
typedef union clip_bounds {
    double d[2];
    float f[2];
    int64_t i64[2];
    uint64_t u64[2];
    int32_t i32[2];
    uint32_t u32[2];
    int16_t i16[2];
    uint16_t u16[2];
    int8_t i8[2];
    uint8_t u8[2];
} clip_bounds;

/* NaN passes through; with lo > hi every element becomes hi, as numpy.clip does. */
#define CLIP_ROW(dt, T, UT, sfx)                                                                   \
    typedef struct clip_##sfx##_pair { T lo, hi; } clip_##sfx##_pair;                              \
    EW_UN_ROW_P(clip_##sfx, T, T, clip_##sfx##_pair,                                               \
                (x < p.lo ? p.lo : x) > p.hi ? p.hi : (x < p.lo ? p.lo : x))
#define CLIP_E(dt, T, UT, sfx) [dt] = clip_##sfx,
EW_INT_TYPES(CLIP_ROW)
EW_NATIVE_FLOAT_TYPES(CLIP_ROW)
EW_UN_ROW_HALF(clip_f16, clip_f32, ew_f16_load, ew_f16_store)
EW_UN_ROW_HALF(clip_bf16, clip_f32, ew_bf16_load, ew_bf16_store)
static const ew_row_fn clip_rows[EW_NDT] = {EW_INT_TYPES(CLIP_E) EW_NATIVE_FLOAT_TYPES(CLIP_E)
                                            [KILN_DTYPE_FLOAT16] = clip_f16,
                                            [KILN_DTYPE_BFLOAT16] = clip_bf16};

/* Stores bound k (0 = lo, 1 = hi) from a tensor of the input's type into b. */
static void clip_store(clip_bounds *b, int k, int dt, const void *src) {
    switch (dt) {
    case KILN_DTYPE_FLOAT16: b->f[k] = kiln_f16_to_f32(*(const uint16_t *)src); break;
    case KILN_DTYPE_BFLOAT16: b->f[k] = kiln_bf16_to_f32(*(const uint16_t *)src); break;
    default: {
        size_t sz = kiln_dtype_size((kiln_dtype)dt);
        memcpy((char *)b + k * sz, src, sz);
    }
    }
}

static void clip_default(clip_bounds *b, int k, int dt) {
    int lo = k == 0;
    switch (dt) {
    case KILN_DTYPE_FLOAT: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16:
        b->f[k] = lo ? -INFINITY : INFINITY; break;
    case KILN_DTYPE_DOUBLE: b->d[k] = lo ? -INFINITY : INFINITY; break;
    case KILN_DTYPE_INT8: b->i8[k] = lo ? INT8_MIN : INT8_MAX; break;
    case KILN_DTYPE_INT16: b->i16[k] = lo ? INT16_MIN : INT16_MAX; break;
    case KILN_DTYPE_INT32: b->i32[k] = lo ? INT32_MIN : INT32_MAX; break;
    case KILN_DTYPE_INT64: b->i64[k] = lo ? INT64_MIN : INT64_MAX; break;
    case KILN_DTYPE_UINT8: b->u8[k] = lo ? 0 : UINT8_MAX; break;
    case KILN_DTYPE_UINT16: b->u16[k] = lo ? 0 : UINT16_MAX; break;
    case KILN_DTYPE_UINT32: b->u32[k] = lo ? 0 : UINT32_MAX; break;
    case KILN_DTYPE_UINT64: b->u64[k] = lo ? 0 : UINT64_MAX; break;
    }
}

static kiln_status clip_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(ew_check_type(ctx, x, 0, ctx->opset < 12 ? EW_FLOATS : EW_FLOATS | EW_INTS));
    if (ctx->opset >= 11) {
        static const char *const what[2] = {"min", "max"};
        for (int k = 1; k <= 2; k++) {
            kiln_tensor *b = kiln_input(ctx, k);
            if (!b) continue;
            KILN_TRY(ew_same_type(ctx, x, 0, b, k));
            int64_t n = kiln_numel(b);
            if (b->rank > 1 || (n >= 0 && n != 1))
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "input '%s' must be a scalar, it has %lld elements", what[k - 1],
                                 (long long)n);
        }
    }
    return ew_set_like(ctx, 0, x->dtype, x);
}

static kiln_status clip_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!x || !y || ew_empty(y)) return KILN_OK;
    ew_row_fn fn = clip_rows[x->dtype];
    if (!fn)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input 0",
                         ew_dtype_name(x->dtype));
    clip_bounds b;
    memset(&b, 0, sizeof b);
    if (ctx->opset < 11) {
        float lo = kiln_attr_float(ctx->node, "min", -FLT_MAX);
        float hi = kiln_attr_float(ctx->node, "max", FLT_MAX);
        if (x->dtype == KILN_DTYPE_DOUBLE) {
            b.d[0] = lo;
            b.d[1] = hi;
        } else {
            b.f[0] = lo;
            b.f[1] = hi;
        }
    } else {
        for (int k = 0; k < 2; k++) {
            kiln_tensor *t = kiln_input(ctx, k + 1);
            if (t && t->data) clip_store(&b, k, x->dtype, t->data);
            else clip_default(&b, k, x->dtype);
        }
    }
    ew_unary_apply(ctx, y, x, fn, &b, EW_GRAIN_CHEAP);
    return KILN_OK;
}

#define E(name, since, fn) {"", name, since, 0, NULL, fn##_infer, fn##_compute, NULL}
const kiln_op kiln_ops_activation[] = {
    E("Sigmoid", 1, sigmoid),
    E("Tanh", 1, tanh),
    E("Relu", 1, relu),
    E("LeakyRelu", 1, leaky),
    E("Elu", 1, elu),
    E("Selu", 1, selu),
    E("Celu", 12, celu),
    E("ThresholdedRelu", 10, thresholded),
    E("HardSigmoid", 1, hardsigmoid),
    E("HardSwish", 14, hardswish),
    E("Softplus", 1, softplus),
    E("Softsign", 1, softsign),
    E("Mish", 18, mish),
    E("Gelu", 20, gelu),
    E("Swish", 24, swish),
    E("Shrink", 9, shrink),
    E("PRelu", 1, prelu),
    E("Clip", 1, clip),
    {0},
};
