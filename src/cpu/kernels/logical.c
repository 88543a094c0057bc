/* Boolean logic, comparisons and selection with numpy broadcasting: And Or Xor, Equal (numbers,
 * bool, strings) Less LessOrEqual Greater GreaterOrEqual, and Where (any element type). */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast") /* see elementwise_util.h */
#endif
#include "elementwise_util.h"

/* ---- And Or Xor on bool bytes (any non-zero byte counts as true) ---- */

EW_BIN_ROW(and_b, uint8_t, uint8_t, (x != 0) & (y != 0))
EW_BIN_ROW(or_b, uint8_t, uint8_t, (x != 0) | (y != 0))
EW_BIN_ROW(xor_b, uint8_t, uint8_t, (x != 0) ^ (y != 0))

/* ---- comparisons: result bool ---- */

#define CMP_NATIVE(op, EXPR)                                                                       \
    EW_BIN_ROW(op##_f32, float, uint8_t, EXPR)                                                     \
    EW_BIN_ROW(op##_f64, double, uint8_t, EXPR)                                                    \
    EW_BIN_ROW_HALF_TO(op##_f16, op##_f32, ew_f16_load, uint8_t)                                   \
    EW_BIN_ROW_HALF_TO(op##_bf16, op##_f32, ew_bf16_load, uint8_t)

CMP_NATIVE(eq, x == y)
CMP_NATIVE(lt, x < y)
CMP_NATIVE(le, x <= y)
CMP_NATIVE(gt, x > y)
CMP_NATIVE(ge, x >= y)

#define CMP_INT(dt, T, UT, sfx)                                                                    \
    EW_BIN_ROW(eq_##sfx, T, uint8_t, x == y)                                                       \
    EW_BIN_ROW(lt_##sfx, T, uint8_t, x < y)                                                        \
    EW_BIN_ROW(le_##sfx, T, uint8_t, x <= y)                                                       \
    EW_BIN_ROW(gt_##sfx, T, uint8_t, x > y)                                                        \
    EW_BIN_ROW(ge_##sfx, T, uint8_t, x >= y)
EW_INT_TYPES(CMP_INT)
EW_BIN_ROW(eq_b, uint8_t, uint8_t, (x != 0) == (y != 0))

static void eq_str(void *o_, const void *a_, const void *b_, const void *c_, int64_t n,
                   unsigned scalar, const void *P) {
    uint8_t *o = o_;
    char *const *a = a_, *const *b = b_;
    const int64_t sa = (scalar & 1u) ? 0 : 1, sb = (scalar & 2u) ? 0 : 1;
    for (int64_t i = 0; i < n; i++) {
        const char *x = a[i * sa], *y = b[i * sb];
        o[i] = (uint8_t)kiln_str_eq(x, y);
    }
}

typedef struct logic_desc {
    uint32_t types;
    ew_row_fn rows[EW_NDT];
} logic_desc;

static const logic_desc d_and = {EW_BIT(KILN_DTYPE_BOOL), {[KILN_DTYPE_BOOL] = and_b}};
static const logic_desc d_or = {EW_BIT(KILN_DTYPE_BOOL), {[KILN_DTYPE_BOOL] = or_b}};
static const logic_desc d_xor = {EW_BIT(KILN_DTYPE_BOOL), {[KILN_DTYPE_BOOL] = xor_b}};
static const logic_desc d_eq = {EW_NUMERIC | EW_BIT(KILN_DTYPE_BOOL) | EW_BIT(KILN_DTYPE_STRING),
                                {EW_FLOAT_ROWS(eq), EW_INT_ROWS(eq), [KILN_DTYPE_BOOL] = eq_b,
                                 [KILN_DTYPE_STRING] = eq_str}};
static const logic_desc d_lt = {EW_NUMERIC, {EW_FLOAT_ROWS(lt), EW_INT_ROWS(lt)}};
static const logic_desc d_le = {EW_NUMERIC, {EW_FLOAT_ROWS(le), EW_INT_ROWS(le)}};
static const logic_desc d_gt = {EW_NUMERIC, {EW_FLOAT_ROWS(gt), EW_INT_ROWS(gt)}};
static const logic_desc d_ge = {EW_NUMERIC, {EW_FLOAT_ROWS(ge), EW_INT_ROWS(ge)}};

static kiln_status logic_shapes(kiln_ctx *ctx, const logic_desc *d, kiln_tensor **a,
                                kiln_tensor *bv) {
    kiln_tensor *b;
    KILN_TRY(kiln_need_input(ctx, 0, a));
    KILN_TRY(kiln_need_input(ctx, 1, &b));
    KILN_TRY(ew_check_type(ctx, *a, 0, d->types));
    KILN_TRY(ew_same_type(ctx, *a, 0, b, 1));
    return ew_legacy_view(ctx, *a, b, bv);
}

static kiln_status logic_infer(kiln_ctx *ctx, const logic_desc *d) {
    kiln_tensor *a, bv;
    KILN_TRY(logic_shapes(ctx, d, &a, &bv));
    const kiln_tensor *ts[2] = {a, &bv};
    return ew_set_broadcast(ctx, 2, ts, KILN_DTYPE_BOOL);
}

static kiln_status logic_compute(kiln_ctx *ctx, const logic_desc *d) {
    kiln_tensor *a, bv, *y = kiln_output(ctx, 0);
    KILN_TRY(logic_shapes(ctx, d, &a, &bv));
    if (!y || ew_empty(y)) return KILN_OK;
    ew_row_fn fn = d->rows[a->dtype];
    if (!fn)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input 0",
                         ew_dtype_name(a->dtype));
    const kiln_tensor *ts[2] = {a, &bv};
    ew_broadcast_apply(ctx, y, 2, ts, fn, NULL, EW_GRAIN_CHEAP);
    return KILN_OK;
}

#define LOGIC_OP(name, desc)                                                                       \
    static kiln_status name##_infer(kiln_ctx *ctx) { return logic_infer(ctx, &desc); }             \
    static kiln_status name##_compute(kiln_ctx *ctx) { return logic_compute(ctx, &desc); }
LOGIC_OP(and, d_and)
LOGIC_OP(or, d_or)
LOGIC_OP(xor, d_xor)
LOGIC_OP(equal, d_eq)
LOGIC_OP(less, d_lt)
LOGIC_OP(less_equal, d_le)
LOGIC_OP(greater, d_gt)
LOGIC_OP(greater_equal, d_ge)

/* ---- Where(cond, X, Y): operands a = cond, b = X, c = Y; moved by element size ---- */

typedef struct bytes16 {
    uint64_t lo, hi;
} bytes16; /* complex128 */

#define WHERE_ROW(sfx, T)                                                                          \
    static void where_##sfx(void *o_, const void *c_, const void *x_, const void *y_, int64_t n,   \
                            unsigned scalar, const void *P) {                                      \
        T *o = (T *)o_;                                                                            \
        const uint8_t *c = (const uint8_t *)c_;                                                    \
        const T *x = (const T *)x_, *y = (const T *)y_;                                            \
        if (scalar == 0) {                                                                         \
            for (int64_t i = 0; i < n; i++) o[i] = c[i] ? x[i] : y[i];                             \
        } else if (scalar == 1u) {                                                                 \
            memcpy(o, c[0] ? x : y, (size_t)n * sizeof(T));                                        \
        } else {                                                                                   \
            const int64_t sc = (scalar & 1u) ? 0 : 1, sx = (scalar & 2u) ? 0 : 1,                  \
                          sy = (scalar & 4u) ? 0 : 1;                                              \
            for (int64_t i = 0; i < n; i++) o[i] = c[i * sc] ? x[i * sx] : y[i * sy];              \
        }                                                                                          \
    }
WHERE_ROW(1, uint8_t)
WHERE_ROW(2, uint16_t)
WHERE_ROW(4, uint32_t)
WHERE_ROW(8, uint64_t)
WHERE_ROW(16, bytes16)

/* Strings are copied (the output owns its strings); P counts allocation failures. */
static void where_str(void *o_, const void *c_, const void *x_, const void *y_, int64_t n,
                      unsigned scalar, const void *P) {
    char **o = o_;
    const uint8_t *c = c_;
    char *const *x = x_, *const *y = y_;
    const int64_t sc = (scalar & 1u) ? 0 : 1, sx = (scalar & 2u) ? 0 : 1, sy = (scalar & 4u) ? 0 : 1;
    int failed = 0;
    for (int64_t i = 0; i < n; i++) {
        const char *s = c[i * sc] ? x[i * sx] : y[i * sy];
        char *d = kiln_str_dup(s);
        if (!d) failed = 1;
        o[i] = d;
    }
    if (failed) __atomic_store_n((int *)P, 1, __ATOMIC_RELAXED);
}

static kiln_status where_check(kiln_ctx *ctx, kiln_tensor **c, kiln_tensor **x, kiln_tensor **y) {
    KILN_TRY(kiln_need_input(ctx, 0, c));
    KILN_TRY(kiln_need_input(ctx, 1, x));
    KILN_TRY(kiln_need_input(ctx, 2, y));
    KILN_TRY(ew_check_type(ctx, *c, 0, EW_BIT(KILN_DTYPE_BOOL)));
    KILN_TRY(ew_check_type(ctx, *x, 1,
                           EW_NUMERIC | EW_BIT(KILN_DTYPE_BOOL) | EW_BIT(KILN_DTYPE_STRING) |
                               EW_BIT(KILN_DTYPE_COMPLEX64) | EW_BIT(KILN_DTYPE_COMPLEX128) |
                               EW_F8S));
    return ew_same_type(ctx, *x, 1, *y, 2);
}

static kiln_status where_infer(kiln_ctx *ctx) {
    kiln_tensor *c, *x, *y;
    KILN_TRY(where_check(ctx, &c, &x, &y));
    const kiln_tensor *ts[3] = {c, x, y};
    return ew_set_broadcast(ctx, 3, ts, x->dtype);
}

static kiln_status where_compute(kiln_ctx *ctx) {
    kiln_tensor *c, *x, *y, *out = kiln_output(ctx, 0);
    KILN_TRY(where_check(ctx, &c, &x, &y));
    if (!out || ew_empty(out)) return KILN_OK;
    const kiln_tensor *ts[3] = {c, x, y};
    int failed = 0;
    ew_row_fn fn;
    if (x->dtype == KILN_DTYPE_STRING) {
        fn = where_str;
    } else {
        switch (kiln_dtype_size((kiln_dtype)x->dtype)) {
        case 1: fn = where_1; break;
        case 2: fn = where_2; break;
        case 4: fn = where_4; break;
        case 8: fn = where_8; break;
        case 16: fn = where_16; break;
        default:
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s",
                             ew_dtype_name(x->dtype));
        }
    }
    ew_broadcast_apply(ctx, out, 3, ts, fn, &failed, EW_GRAIN_CHEAP);
    if (failed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory copying strings");
    return KILN_OK;
}

#define E(name, since, fn) {"", name, since, 0, NULL, fn##_infer, fn##_compute, NULL}
const kiln_op kiln_ops_logical[] = {
    E("And", 1, and),
    E("Or", 1, or),
    E("Xor", 1, xor),
    E("Equal", 1, equal),
    E("Less", 1, less),
    E("LessOrEqual", 12, less_equal),
    E("Greater", 1, greater),
    E("GreaterOrEqual", 12, greater_equal),
    E("Where", 9, where),
    {0},
};
