/* Two-input (and variadic) arithmetic with numpy broadcasting: Add Sub Mul Div Pow Mod,
 * Max Min Sum Mean, BitwiseAnd BitwiseOr BitwiseXor BitShift.
 *
 * Integer arithmetic wraps through the unsigned type of the same width (no signed-overflow UB);
 * integer division and modulo by zero are reported as errors, as onnxruntime does. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast") /* see elementwise_util.h */
#endif
#include "elementwise_util.h"

#define BIN_FLOAT(op, EXPR)                                                                        \
    EW_BIN_ROW(op##_f32, float, float, EXPR)                                                       \
    EW_BIN_ROW(op##_f64, double, double, EXPR)                                                     \
    EW_BIN_ROW_HALF(op##_f16, op##_f32, ew_f16_load, ew_f16_store)                                 \
    EW_BIN_ROW_HALF(op##_bf16, op##_f32, ew_bf16_load, ew_bf16_store)

/* float16 Add/Sub/Mul/Div: with F16C the conversions and the operation share one 8-wide loop
 * instead of staging blocks through float32 buffers (the fp16 models' hot path) */
#define BIN_F16_FUSED(op, VOP, EXPR)                                                               \
    EW_BIN_ROW(op##_f32, float, float, EXPR)                                                       \
    EW_BIN_ROW(op##_f64, double, double, EXPR)                                                     \
    EW_BIN_ROW_HALF(op##_f16_staged, op##_f32, ew_f16_load, ew_f16_store)                          \
    EW_BIN_ROW_HALF(op##_bf16, op##_f32, ew_bf16_load, ew_bf16_store)                              \
    BIN_F16C(op, VOP)                                                                              \
    static void op##_f16(void *o, const void *a, const void *b, const void *c, int64_t n,          \
                         unsigned scalar, const void *P) {                                         \
        if (BIN_HAVE_F16C()) BIN_F16C_CALL(op, o, a, b, n, scalar);                                \
        else op##_f16_staged(o, a, b, c, n, scalar, P);                                            \
    }

#ifdef EW_X86
#define BIN_HAVE_F16C() ew_have_f16c()
#define BIN_F16C_CALL(op, o, a, b, n, scalar) op##_f16c(o, a, b, n, scalar)
#define BIN_F16C(op, VOP)                                                                          \
    __attribute__((target("avx,f16c"))) static void op##_f16c(uint16_t *o, const uint16_t *a,      \
                                                              const uint16_t *b, int64_t n,        \
                                                              unsigned scalar) {                   \
        const int sa = (scalar & 1u) != 0, sb = (scalar & 2u) != 0;                                \
        const __m256 ka = _mm256_set1_ps(kiln_f16_to_f32(a[0]));                                   \
        const __m256 kb = _mm256_set1_ps(kiln_f16_to_f32(b[0]));                                   \
        int64_t i = 0;                                                                             \
        for (; i + 8 <= n; i += 8) {                                                               \
            __m256 x = sa ? ka : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(a + i)));       \
            __m256 y = sb ? kb : _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(b + i)));       \
            _mm_storeu_si128((__m128i *)(o + i), _mm256_cvtps_ph(VOP(x, y), _MM_FROUND_TO_NEAREST_INT)); \
        }                                                                                          \
        if (i < n) { /* the tail through an 8-wide buffer */                                       \
            uint16_t ta[8] = {0}, tb[8] = {0}, to[8];                                              \
            for (int64_t k = i; k < n; k++) {                                                      \
                ta[k - i] = a[sa ? 0 : k];                                                         \
                tb[k - i] = b[sb ? 0 : k];                                                         \
            }                                                                                      \
            __m256 x = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)ta));                      \
            __m256 y = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)tb));                      \
            _mm_storeu_si128((__m128i *)to, _mm256_cvtps_ph(VOP(x, y), _MM_FROUND_TO_NEAREST_INT)); \
            memcpy(o + i, to, (size_t)(n - i) * 2);                                                \
        }                                                                                          \
    }
#else
#define BIN_HAVE_F16C() 0
#define BIN_F16C_CALL(op, o, a, b, n, scalar) (void)0
#define BIN_F16C(op, VOP)
#endif

BIN_F16_FUSED(add, _mm256_add_ps, x + y)
BIN_F16_FUSED(sub, _mm256_sub_ps, x - y)
BIN_F16_FUSED(mul, _mm256_mul_ps, x * y)
BIN_F16_FUSED(div, _mm256_div_ps, x / y)
/* NaN in either operand wins, as in onnxruntime and numpy.maximum */
BIN_FLOAT(max, (x != x || x > y) ? x : y)
BIN_FLOAT(min, (x != x || x < y) ? x : y)
BIN_FLOAT(fmod, fmod(x, y))

#define ADD_I(dt, T, UT, sfx) EW_BIN_ROW(add_##sfx, T, T, (UT)x + (UT)y)
#define SUB_I(dt, T, UT, sfx) EW_BIN_ROW(sub_##sfx, T, T, (UT)x - (UT)y)
/* 1u * keeps 16-bit operands from being promoted to (overflowing) signed int */
#define MUL_I(dt, T, UT, sfx) EW_BIN_ROW(mul_##sfx, T, T, (UT)x * (1u * (UT)y))
#define MAX_I(dt, T, UT, sfx) EW_BIN_ROW(max_##sfx, T, T, x > y ? x : y)
#define MIN_I(dt, T, UT, sfx) EW_BIN_ROW(min_##sfx, T, T, x < y ? x : y)
#define AND_I(dt, T, UT, sfx) EW_BIN_ROW(band_##sfx, T, T, x & y)
#define OR_I(dt, T, UT, sfx) EW_BIN_ROW(bor_##sfx, T, T, x | y)
#define XOR_I(dt, T, UT, sfx) EW_BIN_ROW(bxor_##sfx, T, T, x ^ y)
/* zero divisors were rejected before the rows run; -1 is special-cased because INT_MIN / -1
 * traps on x86 */
#define DIV_S(dt, T, UT, sfx) EW_BIN_ROW(div_##sfx, T, T, y == -1 ? (T)(0 - (UT)x) : (y ? x / y : 0))
#define DIV_U(dt, T, UT, sfx) EW_BIN_ROW(div_##sfx, T, T, y ? x / y : 0)
/* Mod with fmod=0 takes the divisor's sign (Python's %), with fmod=1 the dividend's (C's %) */
#define MOD_S(dt, T, UT, sfx)                                                                      \
    EW_BIN_ROW(mod_##sfx, T, T,                                                                    \
               (y == 0 || y == -1) ? 0 : (x % y != 0 && ((x % y < 0) != (y < 0)) ? x % y + y : x % y))
#define TMOD_S(dt, T, UT, sfx) EW_BIN_ROW(tmod_##sfx, T, T, (y == 0 || y == -1) ? 0 : x % y)
#define MOD_U(dt, T, UT, sfx) EW_BIN_ROW(mod_##sfx, T, T, y ? x % y : 0)
#define SHL_U(dt, T, UT, sfx) EW_BIN_ROW(shl_##sfx, T, T, y < 8 * sizeof(T) ? (T)(1u * x << y) : 0)
#define SHR_U(dt, T, UT, sfx) EW_BIN_ROW(shr_##sfx, T, T, y < 8 * sizeof(T) ? x >> y : 0)

EW_INT_TYPES(ADD_I)
EW_INT_TYPES(SUB_I)
EW_INT_TYPES(MUL_I)
EW_INT_TYPES(MAX_I)
EW_INT_TYPES(MIN_I)
EW_INT_TYPES(AND_I)
EW_INT_TYPES(OR_I)
EW_INT_TYPES(XOR_I)
EW_SINT_TYPES(DIV_S)
EW_UINT_TYPES(DIV_U)
EW_SINT_TYPES(MOD_S)
EW_SINT_TYPES(TMOD_S)
EW_UINT_TYPES(MOD_U)
EW_UINT_TYPES(SHL_U)
EW_UINT_TYPES(SHR_U)

typedef struct bin_desc {
    uint32_t types;
    ew_row_fn rows[EW_NDT];
    int64_t grain;
} bin_desc;

static const bin_desc d_add = {EW_NUMERIC, {EW_FLOAT_ROWS(add), EW_INT_ROWS(add)}, EW_GRAIN_CHEAP};
static const bin_desc d_sub = {EW_NUMERIC, {EW_FLOAT_ROWS(sub), EW_INT_ROWS(sub)}, EW_GRAIN_CHEAP};
static const bin_desc d_mul = {EW_NUMERIC, {EW_FLOAT_ROWS(mul), EW_INT_ROWS(mul)}, EW_GRAIN_CHEAP};
static const bin_desc d_div = {EW_NUMERIC, {EW_FLOAT_ROWS(div), EW_INT_ROWS(div)}, EW_GRAIN_CHEAP};
static const bin_desc d_max = {EW_NUMERIC, {EW_FLOAT_ROWS(max), EW_INT_ROWS(max)}, EW_GRAIN_CHEAP};
static const bin_desc d_min = {EW_NUMERIC, {EW_FLOAT_ROWS(min), EW_INT_ROWS(min)}, EW_GRAIN_CHEAP};
static const bin_desc d_sum = {EW_FLOATS, {EW_FLOAT_ROWS(add)}, EW_GRAIN_CHEAP};
static const bin_desc d_mod = {EW_NUMERIC, {EW_FLOAT_ROWS(fmod), EW_INT_ROWS(mod)}, EW_GRAIN_MATH};
static const bin_desc d_tmod = {EW_NUMERIC, {EW_FLOAT_ROWS(fmod), EW_SINT_ROWS(tmod),
                                             EW_UINT_ROWS(mod)}, EW_GRAIN_MATH};
static const bin_desc d_band = {EW_INTS, {EW_INT_ROWS(band)}, EW_GRAIN_CHEAP};
static const bin_desc d_bor = {EW_INTS, {EW_INT_ROWS(bor)}, EW_GRAIN_CHEAP};
static const bin_desc d_bxor = {EW_INTS, {EW_INT_ROWS(bxor)}, EW_GRAIN_CHEAP};
static const bin_desc d_shl = {EW_UINTS, {EW_UINT_ROWS(shl)}, EW_GRAIN_CHEAP};
static const bin_desc d_shr = {EW_UINTS, {EW_UINT_ROWS(shr)}, EW_GRAIN_CHEAP};

/* ---- two-input ops ---- */

static kiln_status bin_shapes(kiln_ctx *ctx, uint32_t types, kiln_tensor **a, kiln_tensor *bv) {
    kiln_tensor *b;
    KILN_TRY(kiln_need_input(ctx, 0, a));
    KILN_TRY(kiln_need_input(ctx, 1, &b));
    KILN_TRY(ew_check_type(ctx, *a, 0, types));
    KILN_TRY(ew_same_type(ctx, *a, 0, b, 1));
    return ew_legacy_view(ctx, *a, b, bv);
}

static kiln_status bin_infer(kiln_ctx *ctx, const bin_desc *d) {
    kiln_tensor *a, bv;
    KILN_TRY(bin_shapes(ctx, d->types, &a, &bv));
    const kiln_tensor *ts[2] = {a, &bv};
    return ew_set_broadcast(ctx, 2, ts, a->dtype);
}

static kiln_status bin_compute(kiln_ctx *ctx, const bin_desc *d, const void *param) {
    kiln_tensor *a, bv, *y = kiln_output(ctx, 0);
    KILN_TRY(bin_shapes(ctx, d->types, &a, &bv));
    if (!y || ew_empty(y)) return KILN_OK;
    ew_row_fn fn = d->rows[a->dtype];
    if (!fn)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input 0",
                         ew_dtype_name(a->dtype));
    const kiln_tensor *ts[2] = {a, &bv};
    ew_broadcast_apply(ctx, y, 2, ts, fn, param, d->grain);
    return KILN_OK;
}

/* Integer Div and Mod: a zero divisor is an error, found before any output is written. */
static kiln_status check_int_divisor(kiln_ctx *ctx) {
    kiln_tensor *b = kiln_input(ctx, 1);
    if (!b || !b->data || !kiln_dtype_is_integer(b->dtype)) return KILN_OK;
    int64_t n = kiln_numel(b);
    int zero = 0;
    switch (kiln_dtype_size((kiln_dtype)b->dtype)) {
#define SCAN(T)                                                                                    \
    for (int64_t i = 0; i < n; i++) zero |= ((const T *)b->data)[i] == 0;                          \
    break;
    case 1: SCAN(uint8_t)
    case 2: SCAN(uint16_t)
    case 4: SCAN(uint32_t)
    case 8: SCAN(uint64_t)
#undef SCAN
    }
    if (zero) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "integer division by zero");
    return KILN_OK;
}

#define BIN_OP(name, desc)                                                                         \
    static kiln_status name##_infer(kiln_ctx *ctx) { return bin_infer(ctx, &desc); }               \
    static kiln_status name##_compute(kiln_ctx *ctx) { return bin_compute(ctx, &desc, NULL); }
BIN_OP(add, d_add)
BIN_OP(sub, d_sub)
BIN_OP(mul, d_mul)
BIN_OP(band, d_band)
BIN_OP(bor, d_bor)
BIN_OP(bxor, d_bxor)

static kiln_status div_infer(kiln_ctx *ctx) { return bin_infer(ctx, &d_div); }
static kiln_status div_compute(kiln_ctx *ctx) {
    KILN_TRY(check_int_divisor(ctx));
    return bin_compute(ctx, &d_div, NULL);
}

static kiln_status mod_infer(kiln_ctx *ctx) {
    KILN_TRY(bin_infer(ctx, &d_mod));
    kiln_tensor *a = kiln_input(ctx, 0);
    int64_t fm = kiln_attr_int(ctx->node, "fmod", 0);
    if (fm != 0 && fm != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute fmod is %lld, expected 0 or 1",
                         (long long)fm);
    if (!fm && kiln_dtype_is_float(a->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "fmod must be 1 for floating-point inputs (got %s)",
                         ew_dtype_name(a->dtype));
    return KILN_OK;
}
static kiln_status mod_compute(kiln_ctx *ctx) {
    KILN_TRY(check_int_divisor(ctx));
    return bin_compute(ctx, kiln_attr_int(ctx->node, "fmod", 0) ? &d_tmod : &d_mod, NULL);
}

static kiln_status bitshift_dir(kiln_ctx *ctx, const bin_desc **d) {
    const char *dir = kiln_attr_string(ctx->node, "direction", "");
    if (!strcmp(dir, "LEFT")) *d = &d_shl;
    else if (!strcmp(dir, "RIGHT")) *d = &d_shr;
    else
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "attribute direction is '%s', expected 'LEFT' or 'RIGHT'", dir);
    return KILN_OK;
}
static kiln_status bitshift_infer(kiln_ctx *ctx) {
    const bin_desc *d = NULL;
    KILN_TRY(bitshift_dir(ctx, &d));
    return bin_infer(ctx, d);
}
static kiln_status bitshift_compute(kiln_ctx *ctx) {
    const bin_desc *d = NULL;
    KILN_TRY(bitshift_dir(ctx, &d));
    return bin_compute(ctx, d, NULL);
}

/* ---- Pow: the exponent may have another numeric type than the base ---- */

/* Same-type float power; the common small constant exponents avoid powf altogether. */
static void pow_f32(void *o_, const void *a_, const void *b_, const void *c_, int64_t n,
                    unsigned scalar, const void *P) {
    float *o = o_;
    const float *a = a_, *b = b_;
    if ((scalar & 3u) == 2u) {
        const float e = b[0];
        if (e == 2.0f) {
            for (int64_t i = 0; i < n; i++) o[i] = a[i] * a[i];
        } else if (e == 1.0f) {
            for (int64_t i = 0; i < n; i++) o[i] = a[i];
        } else if (e == 3.0f) {
            for (int64_t i = 0; i < n; i++) o[i] = a[i] * a[i] * a[i];
        } else {
            for (int64_t i = 0; i < n; i++) o[i] = powf(a[i], e);
        }
        return;
    }
    for (int64_t i = 0; i < n; i++) o[i] = powf(a[(scalar & 1u) ? 0 : i], b[(scalar & 2u) ? 0 : i]);
}
EW_BIN_ROW(pow_f64, double, double, pow(x, y))
EW_BIN_ROW_HALF(pow_f16, pow_f32, ew_f16_load, ew_f16_store)
EW_BIN_ROW_HALF(pow_bf16, pow_f32, ew_bf16_load, ew_bf16_store)
static const ew_row_fn pow_same_rows[EW_NDT] = {EW_FLOAT_ROWS(pow)};

/* Mixed types: the power is taken in double and converted to the base type (truncating for the
 * integer bases, as onnxruntime does); P points at the exponent's dtype. */
static inline double pow_load_base(int dt, const void *p, int64_t i) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return ((const float *)p)[i];
    case KILN_DTYPE_DOUBLE: return ((const double *)p)[i];
    case KILN_DTYPE_FLOAT16: return kiln_f16_to_f32(((const uint16_t *)p)[i]);
    case KILN_DTYPE_BFLOAT16: return kiln_bf16_to_f32(((const uint16_t *)p)[i]);
    case KILN_DTYPE_INT32: return ((const int32_t *)p)[i];
    default: return (double)((const int64_t *)p)[i];
    }
}
static inline void pow_store(int dt, void *p, int64_t i, double v) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: ((float *)p)[i] = (float)v; break;
    case KILN_DTYPE_DOUBLE: ((double *)p)[i] = v; break;
    case KILN_DTYPE_FLOAT16: ((uint16_t *)p)[i] = kiln_f32_to_f16((float)v); break;
    case KILN_DTYPE_BFLOAT16: ((uint16_t *)p)[i] = kiln_f32_to_bf16((float)v); break;
    case KILN_DTYPE_INT32: ((int32_t *)p)[i] = (int32_t)ew_f64_to_i64(v); break;
    default: ((int64_t *)p)[i] = ew_f64_to_i64(v);
    }
}

typedef struct pow_param {
    int base_dt, exp_dt;
} pow_param;

static void pow_mixed(void *o, const void *a, const void *b, const void *c, int64_t n,
                      unsigned scalar, const void *P) {
    const pow_param *pp = P;
    const size_t esz = kiln_dtype_size((kiln_dtype)pp->exp_dt);
    double e[EW_BLOCK];
    if (scalar & 2u) ew_load_f64_block(pp->exp_dt, b, 1, e);
    for (int64_t s = 0; s < n; s += EW_BLOCK) {
        int64_t m = n - s < EW_BLOCK ? n - s : EW_BLOCK;
        if (!(scalar & 2u)) ew_load_f64_block(pp->exp_dt, (const char *)b + s * esz, m, e);
        for (int64_t i = 0; i < m; i++) {
            double x = pow_load_base(pp->base_dt, a, (scalar & 1u) ? 0 : s + i);
            pow_store(pp->base_dt, o, s + i, pow(x, e[(scalar & 2u) ? 0 : i]));
        }
    }
}

#define POW_BASE_TYPES                                                                             \
    (EW_FLOATS | EW_BIT(KILN_DTYPE_INT32) | EW_BIT(KILN_DTYPE_INT64))

static kiln_status pow_shapes(kiln_ctx *ctx, kiln_tensor **a, kiln_tensor **b, kiln_tensor *bv) {
    KILN_TRY(kiln_need_input(ctx, 0, a));
    KILN_TRY(kiln_need_input(ctx, 1, b));
    KILN_TRY(ew_check_type(ctx, *a, 0, POW_BASE_TYPES));
    KILN_TRY(ew_check_type(ctx, *b, 1, EW_NUMERIC));
    if (ctx->opset < 12) KILN_TRY(ew_same_type(ctx, *a, 0, *b, 1));
    return ew_legacy_view(ctx, *a, *b, bv);
}

static kiln_status pow_infer(kiln_ctx *ctx) {
    kiln_tensor *a, *b, bv;
    KILN_TRY(pow_shapes(ctx, &a, &b, &bv));
    const kiln_tensor *ts[2] = {a, &bv};
    return ew_set_broadcast(ctx, 2, ts, a->dtype);
}

static kiln_status pow_compute(kiln_ctx *ctx) {
    kiln_tensor *a, *b, bv, *y = kiln_output(ctx, 0);
    KILN_TRY(pow_shapes(ctx, &a, &b, &bv));
    if (!y || ew_empty(y)) return KILN_OK;
    pow_param pp = {a->dtype, b->dtype};
    ew_row_fn fn = a->dtype == b->dtype ? pow_same_rows[a->dtype] : NULL;
    const kiln_tensor *ts[2] = {a, &bv};
    ew_broadcast_apply(ctx, y, 2, ts, fn ? fn : pow_mixed, &pp, EW_GRAIN_MATH);
    return KILN_OK;
}

/* ---- variadic: Max Min Sum Mean ---- */

static kiln_status var_check(kiln_ctx *ctx, uint32_t types) {
    if (ctx->n_in < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "needs at least one input");
    kiln_tensor *a, *t;
    KILN_TRY(kiln_need_input(ctx, 0, &a));
    KILN_TRY(ew_check_type(ctx, a, 0, types));
    for (int k = 1; k < ctx->n_in; k++) {
        KILN_TRY(kiln_need_input(ctx, k, &t));
        KILN_TRY(ew_same_type(ctx, a, 0, t, k));
    }
    return KILN_OK;
}

static kiln_status var_infer(kiln_ctx *ctx, uint32_t types) {
    KILN_TRY(var_check(ctx, types));
    const kiln_tensor *ts[64];
    int n = ctx->n_in;
    if (n > 64) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "more than 64 inputs");
    for (int k = 0; k < n; k++) ts[k] = kiln_input(ctx, k);
    return ew_set_broadcast(ctx, n, ts, ts[0]->dtype);
}

/* y = in0 op in1 over y's full shape, then y = y op in_k for the rest. */
static kiln_status var_compute(kiln_ctx *ctx, const bin_desc *d) {
    KILN_TRY(var_check(ctx, d->types));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || ew_empty(y)) return KILN_OK;
    kiln_tensor *a = kiln_input(ctx, 0);
    ew_row_fn fn = d->rows[a->dtype];
    if (!fn)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input 0",
                         ew_dtype_name(a->dtype));
    if (ctx->n_in == 1) {
        /* Max, Min, Sum and Mean of a single input are that input */
        memcpy(y->data, a->data, kiln_tensor_nbytes(y));
        return KILN_OK;
    }
    const kiln_tensor *ts[2] = {a, kiln_input(ctx, 1)};
    ew_broadcast_apply(ctx, y, 2, ts, fn, NULL, d->grain);
    for (int k = 2; k < ctx->n_in; k++) {
        const kiln_tensor *acc[2] = {y, kiln_input(ctx, k)};
        ew_broadcast_apply(ctx, y, 2, acc, fn, NULL, d->grain);
    }
    return KILN_OK;
}

EW_UN_ROW_P(scale_f32, float, float, float, x / p)
EW_UN_ROW_P(scale_f64, double, double, double, x / p)
EW_UN_ROW_HALF(scale_f16, scale_f32, ew_f16_load, ew_f16_store)
EW_UN_ROW_HALF(scale_bf16, scale_f32, ew_bf16_load, ew_bf16_store)
static const ew_row_fn scale_rows[EW_NDT] = {EW_FLOAT_ROWS(scale)};

static kiln_status max_infer(kiln_ctx *ctx) { return var_infer(ctx, d_max.types); }
static kiln_status max_compute(kiln_ctx *ctx) { return var_compute(ctx, &d_max); }
static kiln_status min_infer(kiln_ctx *ctx) { return var_infer(ctx, d_min.types); }
static kiln_status min_compute(kiln_ctx *ctx) { return var_compute(ctx, &d_min); }
static kiln_status sum_infer(kiln_ctx *ctx) { return var_infer(ctx, d_sum.types); }
static kiln_status sum_compute(kiln_ctx *ctx) { return var_compute(ctx, &d_sum); }
static kiln_status mean_infer(kiln_ctx *ctx) { return var_infer(ctx, d_sum.types); }
static kiln_status mean_compute(kiln_ctx *ctx) {
    KILN_TRY(var_compute(ctx, &d_sum));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || ew_empty(y) || ctx->n_in == 1) return KILN_OK;
    union {
        float f;
        double d;
    } n;
    if (y->dtype == KILN_DTYPE_DOUBLE) n.d = ctx->n_in;
    else n.f = (float)ctx->n_in;
    ew_unary_apply(ctx, y, y, scale_rows[y->dtype], &n, EW_GRAIN_CHEAP);
    return KILN_OK;
}

#define E(name, since, fn) {"", name, since, 0, NULL, fn##_infer, fn##_compute, NULL}
const kiln_op kiln_ops_binary[] = {
    E("Add", 1, add),
    E("Sub", 1, sub),
    E("Mul", 1, mul),
    E("Div", 1, div),
    E("Pow", 1, pow),
    E("Mod", 10, mod),
    E("Max", 1, max),
    E("Min", 1, min),
    E("Sum", 1, sum),
    E("Mean", 1, mean),
    E("BitwiseAnd", 18, band),
    E("BitwiseOr", 18, bor),
    E("BitwiseXor", 18, bxor),
    E("BitShift", 11, bitshift),
    {0},
};
