/* One-input element-wise math: Abs Neg Reciprocal Floor Ceil Round Sign Sqrt Exp Log, the
 * trigonometric and hyperbolic functions, Erf, and the predicates IsNaN IsInf Not BitwiseNot.
 * Float16/bfloat16 go through float32 in blocks; integer types where the schema allows them. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast") /* see elementwise_util.h */
#endif
#include "elementwise_util.h"

/* ---- typed rows ---- */

#define UN_FLOAT(op, EF, ED)                                                                       \
    EW_UN_ROW(op##_f32, float, float, EF)                                                          \
    EW_UN_ROW(op##_f64, double, double, ED)                                                        \
    EW_UN_ROW_HALF(op##_f16, op##_f32, ew_f16_load, ew_f16_store)                                  \
    EW_UN_ROW_HALF(op##_bf16, op##_f32, ew_bf16_load, ew_bf16_store)
UN_FLOAT(abs, fabsf(x), fabs(x))
UN_FLOAT(neg, -x, -x)
UN_FLOAT(reciprocal, 1.0f / x, 1.0 / x)
UN_FLOAT(floor, floorf(x), floor(x))
UN_FLOAT(ceil, ceilf(x), ceil(x))
UN_FLOAT(round, rintf(x), rint(x)) /* default rounding mode: half to even, as ONNX asks */
UN_FLOAT(sign, x > 0 ? 1.0f : (x < 0 ? -1.0f : x), x > 0 ? 1.0 : (x < 0 ? -1.0 : x))
#ifdef EW_X86
/* sqrtf keeps an errno branch that stops vectorisation (the optimize pragma cannot lift
 * -fmath-errno), so the float rows use the SSE instruction directly */
EW_CLONES static void sqrt_f32(void *o_, const void *a_, const void *b_, const void *c_, int64_t n,
                               unsigned scalar, const void *P) {
    float *o = o_;
    const float *a = a_;
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) _mm_storeu_ps(o + i, _mm_sqrt_ps(_mm_loadu_ps(a + i)));
    for (; i < n; i++) _mm_store_ss(o + i, _mm_sqrt_ss(_mm_load_ss(a + i)));
}
EW_UN_ROW(sqrt_f64, double, double, sqrt(x))
EW_UN_ROW_HALF(sqrt_f16, sqrt_f32, ew_f16_load, ew_f16_store)
EW_UN_ROW_HALF(sqrt_bf16, sqrt_f32, ew_bf16_load, ew_bf16_store)
#else
UN_FLOAT(sqrt, sqrtf(x), sqrt(x))
#endif
UN_FLOAT(exp, ew_fast_expf(x), exp(x))
UN_FLOAT(log, logf(x), log(x))
UN_FLOAT(sin, sinf(x), sin(x))
UN_FLOAT(cos, cosf(x), cos(x))
UN_FLOAT(tan, tanf(x), tan(x))
UN_FLOAT(asin, asinf(x), asin(x))
UN_FLOAT(acos, acosf(x), acos(x))
UN_FLOAT(atan, atanf(x), atan(x))
UN_FLOAT(sinh, sinhf(x), sinh(x))
UN_FLOAT(cosh, coshf(x), cosh(x))
UN_FLOAT(asinh, asinhf(x), asinh(x))
UN_FLOAT(acosh, acoshf(x), acosh(x))
UN_FLOAT(atanh, atanhf(x), atanh(x))
UN_FLOAT(erf, ew_fast_erff(x), erf(x))

/* Integer forms: negation wraps through the unsigned type (no signed-overflow UB on INT_MIN). */
#define ABS_S(dt, T, UT, sfx) EW_UN_ROW(abs_##sfx, T, T, x < 0 ? (T)(0 - (UT)x) : x)
#define ABS_U(dt, T, UT, sfx) EW_UN_ROW(abs_##sfx, T, T, x)
#define NEG_S(dt, T, UT, sfx) EW_UN_ROW(neg_##sfx, T, T, (T)(0 - (UT)x))
#define SIGN_S(dt, T, UT, sfx) EW_UN_ROW(sign_##sfx, T, T, (x > 0) - (x < 0))
#define SIGN_U(dt, T, UT, sfx) EW_UN_ROW(sign_##sfx, T, T, x > 0)
#define BNOT(dt, T, UT, sfx) EW_UN_ROW(bnot_##sfx, T, T, ~x)
EW_SINT_TYPES(ABS_S)
EW_UINT_TYPES(ABS_U)
EW_SINT_TYPES(NEG_S)
EW_SINT_TYPES(SIGN_S)
EW_UINT_TYPES(SIGN_U)
EW_INT_TYPES(BNOT)
EW_UN_ROW(not_b, uint8_t, uint8_t, x == 0)

#define ROW_ENTRY(op, dt, sfx) [dt] = op##_##sfx
#define ABS_E(dt, T, UT, sfx) ROW_ENTRY(abs, dt, sfx),
#define NEG_E(dt, T, UT, sfx) ROW_ENTRY(neg, dt, sfx),
#define SIGN_E(dt, T, UT, sfx) ROW_ENTRY(sign, dt, sfx),
#define BNOT_E(dt, T, UT, sfx) ROW_ENTRY(bnot, dt, sfx),

/* ---- IsNaN / IsInf: decided on the bits, so every float width is exact ---- */

typedef struct inf_param {
    int neg, pos;
} inf_param;

EW_UN_ROW(isnan_f32, float, uint8_t, x != x)
EW_UN_ROW(isnan_f64, double, uint8_t, x != x)
EW_UN_ROW(isnan_f16, uint16_t, uint8_t, (x & 0x7fff) > 0x7c00)
EW_UN_ROW(isnan_bf16, uint16_t, uint8_t, (x & 0x7fff) > 0x7f80)
EW_UN_ROW(isnan_e4m3fn, uint8_t, uint8_t, (x & 0x7f) == 0x7f)
EW_UN_ROW(isnan_fnuz, uint8_t, uint8_t, x == 0x80) /* both fnuz formats: NaN is "negative zero" */
EW_UN_ROW(isnan_e5m2, uint8_t, uint8_t, (x & 0x7f) > 0x7c)

#define INF_TEST(is_inf, negative)                                                                 \
    ((is_inf) && ((negative) ? ((const inf_param *)P)->neg : ((const inf_param *)P)->pos))
EW_UN_ROW(isinf_f32, float, uint8_t, INF_TEST(isinf(x), x < 0))
EW_UN_ROW(isinf_f64, double, uint8_t, INF_TEST(isinf(x), x < 0))
EW_UN_ROW(isinf_f16, uint16_t, uint8_t, INF_TEST((x & 0x7fff) == 0x7c00, x & 0x8000))
EW_UN_ROW(isinf_bf16, uint16_t, uint8_t, INF_TEST((x & 0x7fff) == 0x7f80, x & 0x8000))
EW_UN_ROW(isinf_none, uint8_t, uint8_t, 0 && x) /* e4m3fn and the fnuz formats have no infinity */
EW_UN_ROW(isinf_e5m2, uint8_t, uint8_t, INF_TEST((x & 0x7f) == 0x7c, x & 0x80))

/* ---- op descriptions ---- */

typedef struct unary_desc {
    uint32_t types;      /* allowed input dtypes */
    int out_bool;        /* result is bool, not the input type */
    ew_row_fn rows[EW_NDT];
    int64_t grain;
} unary_desc;

#define D_FLOAT(op, grain) {EW_FLOATS, 0, {EW_FLOAT_ROWS(op)}, grain}
static const unary_desc d_abs = {EW_NUMERIC, 0, {EW_FLOAT_ROWS(abs), EW_INT_TYPES(ABS_E)}, EW_GRAIN_CHEAP};
static const unary_desc d_neg = {EW_FLOATS | EW_SINTS, 0, {EW_FLOAT_ROWS(neg), EW_SINT_TYPES(NEG_E)},
                                 EW_GRAIN_CHEAP};
static const unary_desc d_sign = {EW_NUMERIC, 0, {EW_FLOAT_ROWS(sign), EW_INT_TYPES(SIGN_E)},
                                  EW_GRAIN_CHEAP};
static const unary_desc d_reciprocal = D_FLOAT(reciprocal, EW_GRAIN_CHEAP);
static const unary_desc d_floor = D_FLOAT(floor, EW_GRAIN_CHEAP);
static const unary_desc d_ceil = D_FLOAT(ceil, EW_GRAIN_CHEAP);
static const unary_desc d_round = D_FLOAT(round, EW_GRAIN_CHEAP);
static const unary_desc d_sqrt = D_FLOAT(sqrt, EW_GRAIN_CHEAP);
static const unary_desc d_exp = D_FLOAT(exp, EW_GRAIN_MATH);
static const unary_desc d_log = D_FLOAT(log, EW_GRAIN_MATH);
static const unary_desc d_sin = D_FLOAT(sin, EW_GRAIN_MATH);
static const unary_desc d_cos = D_FLOAT(cos, EW_GRAIN_MATH);
static const unary_desc d_tan = D_FLOAT(tan, EW_GRAIN_MATH);
static const unary_desc d_asin = D_FLOAT(asin, EW_GRAIN_MATH);
static const unary_desc d_acos = D_FLOAT(acos, EW_GRAIN_MATH);
static const unary_desc d_atan = D_FLOAT(atan, EW_GRAIN_MATH);
static const unary_desc d_sinh = D_FLOAT(sinh, EW_GRAIN_MATH);
static const unary_desc d_cosh = D_FLOAT(cosh, EW_GRAIN_MATH);
static const unary_desc d_asinh = D_FLOAT(asinh, EW_GRAIN_MATH);
static const unary_desc d_acosh = D_FLOAT(acosh, EW_GRAIN_MATH);
static const unary_desc d_atanh = D_FLOAT(atanh, EW_GRAIN_MATH);
static const unary_desc d_erf = D_FLOAT(erf, EW_GRAIN_MATH);
static const unary_desc d_isnan = {
    EW_FLOATS | EW_F8S, 1,
    {[KILN_DTYPE_FLOAT] = isnan_f32, [KILN_DTYPE_DOUBLE] = isnan_f64,
     [KILN_DTYPE_FLOAT16] = isnan_f16, [KILN_DTYPE_BFLOAT16] = isnan_bf16,
     [KILN_DTYPE_FLOAT8E4M3FN] = isnan_e4m3fn, [KILN_DTYPE_FLOAT8E4M3FNUZ] = isnan_fnuz,
     [KILN_DTYPE_FLOAT8E5M2] = isnan_e5m2, [KILN_DTYPE_FLOAT8E5M2FNUZ] = isnan_fnuz},
    EW_GRAIN_CHEAP};
static const unary_desc d_isinf = {
    EW_FLOATS | EW_F8S, 1,
    {[KILN_DTYPE_FLOAT] = isinf_f32, [KILN_DTYPE_DOUBLE] = isinf_f64,
     [KILN_DTYPE_FLOAT16] = isinf_f16, [KILN_DTYPE_BFLOAT16] = isinf_bf16,
     [KILN_DTYPE_FLOAT8E4M3FN] = isinf_none, [KILN_DTYPE_FLOAT8E4M3FNUZ] = isinf_none,
     [KILN_DTYPE_FLOAT8E5M2] = isinf_e5m2, [KILN_DTYPE_FLOAT8E5M2FNUZ] = isinf_none},
    EW_GRAIN_CHEAP};
static const unary_desc d_not = {EW_BIT(KILN_DTYPE_BOOL), 0, {[KILN_DTYPE_BOOL] = not_b},
                                 EW_GRAIN_CHEAP};
static const unary_desc d_bitwise_not = {EW_INTS, 0, {EW_INT_TYPES(BNOT_E)}, EW_GRAIN_CHEAP};

/* ---- shared infer / compute ---- */

static kiln_status unary_infer(kiln_ctx *ctx, const unary_desc *d) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(ew_check_type(ctx, x, 0, d->types));
    return ew_set_like(ctx, 0, d->out_bool ? KILN_DTYPE_BOOL : x->dtype, x);
}

static kiln_status unary_compute(kiln_ctx *ctx, const unary_desc *d, const void *param) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!x || !y || ew_empty(y)) return KILN_OK;
    ew_row_fn fn = x->dtype > 0 && x->dtype < EW_NDT ? d->rows[x->dtype] : NULL;
    if (!fn)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input 0",
                         ew_dtype_name(x->dtype));
    ew_unary_apply(ctx, y, x, fn, param, d->grain);
    return KILN_OK;
}

#define UNARY_OP(name, desc)                                                                       \
    static kiln_status name##_infer(kiln_ctx *ctx) { return unary_infer(ctx, &desc); }             \
    static kiln_status name##_compute(kiln_ctx *ctx) { return unary_compute(ctx, &desc, NULL); }

UNARY_OP(abs, d_abs)
UNARY_OP(neg, d_neg)
UNARY_OP(sign, d_sign)
UNARY_OP(reciprocal, d_reciprocal)
UNARY_OP(floor, d_floor)
UNARY_OP(ceil, d_ceil)
UNARY_OP(round, d_round)
UNARY_OP(sqrt, d_sqrt)
UNARY_OP(exp, d_exp)
UNARY_OP(log, d_log)
UNARY_OP(sin, d_sin)
UNARY_OP(cos, d_cos)
UNARY_OP(tan, d_tan)
UNARY_OP(asin, d_asin)
UNARY_OP(acos, d_acos)
UNARY_OP(atan, d_atan)
UNARY_OP(sinh, d_sinh)
UNARY_OP(cosh, d_cosh)
UNARY_OP(asinh, d_asinh)
UNARY_OP(acosh, d_acosh)
UNARY_OP(atanh, d_atanh)
UNARY_OP(erf, d_erf)
UNARY_OP(isnan, d_isnan)
UNARY_OP(not, d_not)
UNARY_OP(bitwise_not, d_bitwise_not)

static kiln_status isinf_infer(kiln_ctx *ctx) { return unary_infer(ctx, &d_isinf); }
static kiln_status isinf_compute(kiln_ctx *ctx) {
    inf_param p = {kiln_attr_int(ctx->node, "detect_negative", 1) != 0,
                   kiln_attr_int(ctx->node, "detect_positive", 1) != 0};
    return unary_compute(ctx, &d_isinf, &p);
}

#define E(name, since, fn) {"", name, since, 0, NULL, fn##_infer, fn##_compute, NULL}
const kiln_op kiln_ops_unary[] = {
    E("Abs", 1, abs),
    E("Neg", 1, neg),
    E("Sign", 9, sign),
    E("Reciprocal", 1, reciprocal),
    E("Floor", 1, floor),
    E("Ceil", 1, ceil),
    E("Round", 11, round),
    E("Sqrt", 1, sqrt),
    E("Exp", 1, exp),
    E("Log", 1, log),
    E("Sin", 7, sin),
    E("Cos", 7, cos),
    E("Tan", 7, tan),
    E("Asin", 7, asin),
    E("Acos", 7, acos),
    E("Atan", 7, atan),
    E("Sinh", 9, sinh),
    E("Cosh", 9, cosh),
    E("Asinh", 9, asinh),
    E("Acosh", 9, acosh),
    E("Atanh", 9, atanh),
    E("Erf", 9, erf),
    E("IsNaN", 9, isnan),
    E("IsInf", 10, isinf),
    E("Not", 1, not),
    E("BitwiseNot", 18, bitwise_not),
    {0},
};
