/* Cast, CastLike and BitCast between every element type kiln has: bool, the integers, float16,
 * bfloat16, float, double, the four float8 formats (with `saturate`), float8e8m0 (with
 * `round_mode`), float4e2m1 and int4/uint4 (two per byte, low nibble first), int2/uint2 (four
 * per byte, lowest bits first) and strings.
 *
 * Values move in blocks through one of three wide forms chosen by the source: double for the
 * float types (exact for all of them), int64 for bool and signed integers, uint64 for unsigned
 * ones. Narrowing a double to float16/bfloat16/float8 first rounds to float32 "to odd", so the
 * final round-to-nearest-even is not spoiled by double rounding. Float to integer follows what
 * x86 (and so onnxruntime) does; ONNX leaves out-of-range values undefined. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast") /* see elementwise_util.h */
#endif
#include "elementwise_util.h"
#include "tensor_common.h"

#include <stdio.h>

#define CAST_TYPES                                                                                 \
    (EW_NUMERIC | EW_BIT(KILN_DTYPE_BOOL) | EW_BIT(KILN_DTYPE_STRING) | EW_F8S |                   \
     EW_BIT(KILN_DTYPE_INT4) | EW_BIT(KILN_DTYPE_UINT4) | EW_BIT(KILN_DTYPE_FLOAT4E2M1) |           \
     EW_BIT(KILN_DTYPE_FLOAT8E8M0) | EW_BIT(KILN_DTYPE_INT2) | EW_BIT(KILN_DTYPE_UINT2))

enum { K_FLOAT, K_SINT, K_UINT, K_STRING };

static int kind_of(int dt) {
    if (dt == KILN_DTYPE_STRING) return K_STRING;
    if ((EW_FLOATS | EW_F8S | EW_BIT(KILN_DTYPE_FLOAT4E2M1) | EW_BIT(KILN_DTYPE_FLOAT8E8M0)) &
        EW_BIT(dt))
        return K_FLOAT;
    if ((EW_UINTS | EW_BIT(KILN_DTYPE_UINT4) | EW_BIT(KILN_DTYPE_UINT2)) & EW_BIT(dt)) return K_UINT;
    return K_SINT; /* signed integers, int4, int2, bool */
}

typedef union wide {
    double f;
    int64_t i;
    uint64_t u;
} wide;

/* ---- scalar conversions ---- */

static inline float f64_to_f32_odd(double d) {
    float f = (float)d;
    if ((double)f != d && !isinf(f) && d == d) {
        uint32_t b;
        memcpy(&b, &f, 4);
        if (fabs((double)f) > fabs(d)) b -= 1; /* truncate toward zero ... */
        b |= 1;                                /* ... and mark it inexact */
        memcpy(&f, &b, 4);
    }
    return f;
}

/* x86 cvttsd2si into 32 bits: NaN and out-of-range give INT32_MIN */
static inline int32_t f64_to_i32(double d) {
    if (!(d > -2147483649.0 && d < 2147483648.0)) return INT32_MIN;
    return (int32_t)d;
}

static inline uint64_t f64_to_u64(double d) {
    if (d >= 9223372036854775808.0 && d < 18446744073709551616.0)
        return (uint64_t)(d - 9223372036854775808.0) + 9223372036854775808u;
    return (uint64_t)ew_f64_to_i64(d);
}

/* ---- block loads: n elements from index `start` into w ---- */

static void load_block(int dt, const void *src, int64_t start, int64_t n, wide *w) {
    switch (dt) {
#define LOADF(DT, T)                                                                               \
    case DT:                                                                                       \
        for (int64_t i = 0; i < n; i++) w[i].f = ((const T *)src)[start + i];                      \
        return;
#define LOADI(DT, T, FIELD, WT)                                                                    \
    case DT:                                                                                       \
        for (int64_t i = 0; i < n; i++) w[i].FIELD = (WT)((const T *)src)[start + i];              \
        return;
        LOADF(KILN_DTYPE_FLOAT, float)
        LOADF(KILN_DTYPE_DOUBLE, double)
        LOADI(KILN_DTYPE_INT8, int8_t, i, int64_t)
        LOADI(KILN_DTYPE_INT16, int16_t, i, int64_t)
        LOADI(KILN_DTYPE_INT32, int32_t, i, int64_t)
        LOADI(KILN_DTYPE_INT64, int64_t, i, int64_t)
        LOADI(KILN_DTYPE_UINT8, uint8_t, u, uint64_t)
        LOADI(KILN_DTYPE_UINT16, uint16_t, u, uint64_t)
        LOADI(KILN_DTYPE_UINT32, uint32_t, u, uint64_t)
        LOADI(KILN_DTYPE_UINT64, uint64_t, u, uint64_t)
#undef LOADF
#undef LOADI
    case KILN_DTYPE_BOOL:
        for (int64_t i = 0; i < n; i++) w[i].i = ((const uint8_t *)src)[start + i] != 0;
        return;
    case KILN_DTYPE_FLOAT16:
        for (int64_t i = 0; i < n; i++) w[i].f = kiln_f16_to_f32(((const uint16_t *)src)[start + i]);
        return;
    case KILN_DTYPE_BFLOAT16:
        for (int64_t i = 0; i < n; i++)
            w[i].f = kiln_bf16_to_f32(((const uint16_t *)src)[start + i]);
        return;
    case KILN_DTYPE_FLOAT8E4M3FN: case KILN_DTYPE_FLOAT8E4M3FNUZ:
    case KILN_DTYPE_FLOAT8E5M2: case KILN_DTYPE_FLOAT8E5M2FNUZ:
        for (int64_t i = 0; i < n; i++)
            w[i].f = kiln_cast_f8_to_f32(dt, ((const uint8_t *)src)[start + i]);
        return;
    case KILN_DTYPE_FLOAT8E8M0:
        for (int64_t i = 0; i < n; i++) w[i].f = kiln_cast_e8m0_to_f32(((const uint8_t *)src)[start + i]);
        return;
    case KILN_DTYPE_INT4:
    case KILN_DTYPE_UINT4:
    case KILN_DTYPE_FLOAT4E2M1:
        for (int64_t i = 0; i < n; i++) {
            int64_t k = start + i;
            uint8_t byte = ((const uint8_t *)src)[k >> 1];
            unsigned nib = (k & 1) ? byte >> 4 : byte & 15u;
            if (dt == KILN_DTYPE_INT4) w[i].i = (int64_t)nib - ((nib & 8u) ? 16 : 0);
            else if (dt == KILN_DTYPE_UINT4) w[i].u = nib;
            else w[i].f = kiln_cast_f4_to_f32((uint8_t)nib);
        }
        return;
    case KILN_DTYPE_INT2:
    case KILN_DTYPE_UINT2:
        for (int64_t i = 0; i < n; i++) {
            int64_t k = start + i;
            unsigned v = (((const uint8_t *)src)[k >> 2] >> (2 * (k & 3))) & 3u;
            if (dt == KILN_DTYPE_INT2) w[i].i = (int64_t)v - ((v & 2u) ? 4 : 0);
            else w[i].u = v;
        }
        return;
    }
}

/* ---- block stores: w holds values of kind `kind`; write n elements of dt at `start` ---- */

/* Integer results of any kind reduce to their low bits; floats convert as x86 does, except that
 * the 4-bit types round half away from zero first, as onnxruntime does. */
static inline uint64_t wide_bits(int kind, wide v, int width) {
    if (kind == K_FLOAT) {
        if (width <= 4) return (uint64_t)(int64_t)f64_to_i32(round(v.f));
        if (width <= 16) return (uint64_t)(int64_t)f64_to_i32(v.f);
        if (width == 64) return (uint64_t)ew_f64_to_i64(v.f);
        return (uint64_t)ew_f64_to_i64(v.f); /* 32: through int64, so -1.0 gives 0xffffffff */
    }
    return v.u; /* int64 and uint64 share their bit pattern */
}

static inline double wide_f64(int kind, wide v) {
    return kind == K_FLOAT ? v.f : kind == K_SINT ? (double)v.i : (double)v.u;
}

/* value narrowed to float32 for a later round to a shorter float (see the file comment) */
static inline float wide_f32_odd(int kind, wide v) {
    if (kind == K_FLOAT) return f64_to_f32_odd(v.f);
    if (kind == K_SINT) return f64_to_f32_odd((double)v.i);
    return f64_to_f32_odd((double)v.u);
}

static void store_block(int dt, void *dst, int64_t start, int64_t n, int kind, const wide *w,
                        int saturate, int round_mode) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: {
        float *o = (float *)dst + start;
        if (kind == K_FLOAT) for (int64_t i = 0; i < n; i++) o[i] = (float)w[i].f;
        else if (kind == K_SINT) for (int64_t i = 0; i < n; i++) o[i] = (float)w[i].i;
        else for (int64_t i = 0; i < n; i++) o[i] = (float)w[i].u;
        return;
    }
    case KILN_DTYPE_DOUBLE: {
        double *o = (double *)dst + start;
        for (int64_t i = 0; i < n; i++) o[i] = wide_f64(kind, w[i]);
        return;
    }
    case KILN_DTYPE_FLOAT16: {
        uint16_t *o = (uint16_t *)dst + start;
        for (int64_t i = 0; i < n; i++) o[i] = kiln_f32_to_f16(wide_f32_odd(kind, w[i]));
        return;
    }
    case KILN_DTYPE_BFLOAT16: {
        uint16_t *o = (uint16_t *)dst + start;
        for (int64_t i = 0; i < n; i++) o[i] = kiln_f32_to_bf16(wide_f32_odd(kind, w[i]));
        return;
    }
    case KILN_DTYPE_FLOAT8E4M3FN: case KILN_DTYPE_FLOAT8E4M3FNUZ:
    case KILN_DTYPE_FLOAT8E5M2: case KILN_DTYPE_FLOAT8E5M2FNUZ: {
        uint8_t *o = (uint8_t *)dst + start;
        for (int64_t i = 0; i < n; i++)
            o[i] = kiln_cast_f32_to_f8(dt, wide_f32_odd(kind, w[i]), saturate);
        return;
    }
    case KILN_DTYPE_BOOL: {
        uint8_t *o = (uint8_t *)dst + start;
        if (kind == K_FLOAT) for (int64_t i = 0; i < n; i++) o[i] = w[i].f != 0;
        else for (int64_t i = 0; i < n; i++) o[i] = w[i].u != 0;
        return;
    }
#define STOREI(DT, T, WIDTH)                                                                       \
    case DT: {                                                                                     \
        T *o = (T *)dst + start;                                                                   \
        if (kind == K_FLOAT) for (int64_t i = 0; i < n; i++) o[i] = (T)wide_bits(kind, w[i], WIDTH); \
        else for (int64_t i = 0; i < n; i++) o[i] = (T)w[i].u;                                     \
        return;                                                                                    \
    }
        STOREI(KILN_DTYPE_INT8, int8_t, 8)
        STOREI(KILN_DTYPE_INT16, int16_t, 16)
        STOREI(KILN_DTYPE_INT32, int32_t, 32)
        STOREI(KILN_DTYPE_UINT8, uint8_t, 8)
        STOREI(KILN_DTYPE_UINT16, uint16_t, 16)
        STOREI(KILN_DTYPE_UINT32, uint32_t, 32)
#undef STOREI
    case KILN_DTYPE_INT64: {
        int64_t *o = (int64_t *)dst + start;
        if (kind == K_FLOAT) for (int64_t i = 0; i < n; i++) o[i] = ew_f64_to_i64(w[i].f);
        else for (int64_t i = 0; i < n; i++) o[i] = w[i].i;
        return;
    }
    case KILN_DTYPE_UINT64: {
        uint64_t *o = (uint64_t *)dst + start;
        if (kind == K_FLOAT) for (int64_t i = 0; i < n; i++) o[i] = f64_to_u64(w[i].f);
        else for (int64_t i = 0; i < n; i++) o[i] = w[i].u;
        return;
    }
    case KILN_DTYPE_FLOAT8E8M0: {
        /* the reference rounds through float32 first (not to odd) */
        uint8_t *o = (uint8_t *)dst + start;
        for (int64_t i = 0; i < n; i++)
            o[i] = kiln_cast_f32_to_e8m0((float)wide_f64(kind, w[i]), saturate, round_mode);
        return;
    }
    case KILN_DTYPE_INT4:
    case KILN_DTYPE_UINT4:
    case KILN_DTYPE_FLOAT4E2M1: {
        /* blocks start on even indices, so pairs never straddle two tasks */
        uint8_t *o = dst;
        for (int64_t i = 0; i < n; i += 2) {
            unsigned nib[2] = {0, 0};
            for (int k = 0; k < 2 && i + k < n; k++)
                nib[k] = dt == KILN_DTYPE_FLOAT4E2M1 ? kiln_cast_f32_to_f4(wide_f32_odd(kind, w[i + k]))
                                                    : (unsigned)wide_bits(kind, w[i + k], 4) & 15u;
            o[(start + i) >> 1] = (uint8_t)(nib[0] | nib[1] << 4);
        }
        return;
    }
    case KILN_DTYPE_INT2:
    case KILN_DTYPE_UINT2: {
        /* blocks start on multiples of 4 too */
        uint8_t *o = dst;
        for (int64_t i = 0; i < n; i += 4) {
            unsigned byte = 0;
            for (int k = 0; k < 4 && i + k < n; k++)
                byte |= ((unsigned)wide_bits(kind, w[i + k], 2) & 3u) << (2 * k);
            o[(start + i) >> 2] = (uint8_t)byte;
        }
        return;
    }
    }
}

/* ---- strings ---- */

static int ieq(const char *a, const char *b) {
    for (; *a && *b; a++, b++) {
        char x = *a >= 'A' && *a <= 'Z' ? *a - 'A' + 'a' : *a;
        char y = *b >= 'A' && *b <= 'Z' ? *b - 'A' + 'a' : *b;
        if (x != y) return 0;
    }
    return *a == *b;
}

/* Parses s into w for a destination of kind `kind`; 0 when s holds no number. */
static int parse_string(const char *s, int kind, wide *w) {
    if (!s) return 0;
    char *end;
    if (kind == K_FLOAT) {
        const char *p = s;
        while (*p == ' ' || *p == '\t' || *p == '\n') p++;
        if (ieq(p, "inf") || ieq(p, "+inf")) { w->f = INFINITY; return 1; }
        if (ieq(p, "-inf")) { w->f = -INFINITY; return 1; }
        if (ieq(p, "nan") || ieq(p, "+nan") || ieq(p, "-nan")) { w->f = NAN; return 1; }
        w->f = strtod(p, &end);
        return end != p;
    }
    if (kind == K_UINT) w->u = strtoull(s, &end, 10);
    else w->i = strtoll(s, &end, 10);
    return end != s;
}

static char *format_wide(int src_dt, int kind, wide v) {
    char buf[64];
    if (kind == K_FLOAT) {
        if (v.f != v.f) snprintf(buf, sizeof buf, "NaN");
        else if (isinf(v.f)) snprintf(buf, sizeof buf, v.f < 0 ? "-INF" : "INF");
        else snprintf(buf, sizeof buf, "%.8g", v.f); /* what onnxruntime writes */
    } else if (kind == K_SINT) {
        snprintf(buf, sizeof buf, "%lld", (long long)v.i);
    } else {
        snprintf(buf, sizeof buf, "%llu", (unsigned long long)v.u);
    }
    (void)src_dt;
    return kiln_str_new(buf, strlen(buf));
}

/* ---- the job ---- */

typedef struct cast_job {
    int src_dt, dst_dt, saturate, round_mode;
    const void *src;
    void *dst;
    int64_t n;
    int failed;      /* 1: a string was not a number, 2: out of memory */
    int64_t bad_at;  /* index of a string that failed to parse */
} cast_job;

static void cast_fail(cast_job *j, int code, int64_t at) {
    __atomic_store_n(&j->bad_at, at, __ATOMIC_RELAXED);
    __atomic_store_n(&j->failed, code, __ATOMIC_RELAXED);
}

/* float32 <-> half precision and float32 <-> double go straight, without the wide form */
static int cast_direct(const cast_job *j, int64_t s, int64_t m) {
    const int a = j->src_dt, b = j->dst_dt;
    if (a == KILN_DTYPE_FLOAT && b == KILN_DTYPE_FLOAT16)
        ew_f16_store((uint16_t *)j->dst + s, (const float *)j->src + s, m);
    else if (a == KILN_DTYPE_FLOAT16 && b == KILN_DTYPE_FLOAT)
        ew_f16_load((float *)j->dst + s, (const uint16_t *)j->src + s, m);
    else if (a == KILN_DTYPE_FLOAT && b == KILN_DTYPE_BFLOAT16)
        ew_bf16_store((uint16_t *)j->dst + s, (const float *)j->src + s, m);
    else if (a == KILN_DTYPE_BFLOAT16 && b == KILN_DTYPE_FLOAT)
        ew_bf16_load((float *)j->dst + s, (const uint16_t *)j->src + s, m);
    else if (a == KILN_DTYPE_FLOAT16 && b == KILN_DTYPE_BFLOAT16) {
        float t[EW_BLOCK];
        ew_f16_load(t, (const uint16_t *)j->src + s, m);
        ew_bf16_store((uint16_t *)j->dst + s, t, m);
    } else if (a == KILN_DTYPE_FLOAT && b == KILN_DTYPE_DOUBLE) {
        const float *x = (const float *)j->src + s;
        double *y = (double *)j->dst + s;
        for (int64_t i = 0; i < m; i++) y[i] = x[i];
    } else if (a == KILN_DTYPE_DOUBLE && b == KILN_DTYPE_FLOAT) {
        const double *x = (const double *)j->src + s;
        float *y = (float *)j->dst + s;
        for (int64_t i = 0; i < m; i++) y[i] = (float)x[i];
    } else {
        return 0;
    }
    return 1;
}

static void cast_blocks(void *arg, int64_t b0, int64_t b1) {
    cast_job *j = arg;
    wide w[EW_BLOCK];
    const int src_kind = kind_of(j->src_dt), dst_kind = kind_of(j->dst_dt);
    for (int64_t blk = b0; blk < b1; blk++) {
        int64_t s = blk * EW_BLOCK, m = j->n - s < EW_BLOCK ? j->n - s : EW_BLOCK;
        if (cast_direct(j, s, m)) continue;
        int kind = src_kind;
        if (src_kind == K_STRING) {
            char *const *in = (char *const *)j->src + s;
            kind = dst_kind == K_STRING ? K_SINT : dst_kind;
            for (int64_t i = 0; i < m; i++) {
                if (!parse_string(in[i], kind, &w[i])) {
                    cast_fail(j, 1, s + i);
                    w[i].u = 0;
                }
            }
        } else {
            load_block(j->src_dt, j->src, s, m, w);
        }
        if (dst_kind == K_STRING) {
            char **out = (char **)j->dst + s;
            for (int64_t i = 0; i < m; i++) {
                out[i] = format_wide(j->src_dt, kind, w[i]);
                if (!out[i]) cast_fail(j, 2, s + i);
            }
        } else {
            store_block(j->dst_dt, j->dst, s, m, kind, w, j->saturate, j->round_mode);
        }
    }
}

static kiln_status copy_strings(kiln_ctx *ctx, char **dst, char *const *src, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        dst[i] = kiln_str_dup(src[i]);
        if (!dst[i]) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory copying strings");
    }
    return KILN_OK;
}

static kiln_status cast_run(kiln_ctx *ctx, int to, int saturate, int round_mode) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!x || !y || ew_empty(y)) return KILN_OK;
    int64_t n = kiln_numel(x);
    if (x->dtype == to) {
        if (to == KILN_DTYPE_STRING) return copy_strings(ctx, y->data, x->data, n);
        /* only where the runtime could not alias (a graph output): exporters write such casts
         * on attention probabilities (softmax in float32 then .to(float32)), [8, 12, 128, 128]
         * for GPT-2 at batch 8, which one thread copied 3x slower at 16 threads than at 1 */
        return kiln_tk_copy_all(ctx, y, x);
    }
    cast_job j = {x->dtype, to, saturate, round_mode, x->data, y->data, n, 0, 0};
    int64_t blocks = (n + EW_BLOCK - 1) / EW_BLOCK;
    int slow = x->dtype == KILN_DTYPE_STRING || to == KILN_DTYPE_STRING;
    ew_run_range(ctx, blocks, slow ? 4 : 32, cast_blocks, &j);
    if (j.failed == 2) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory writing strings");
    if (j.failed == 1) {
        const char *s = ((char *const *)x->data)[j.bad_at];
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "element %lld of the input, '%.64s', is not a number", (long long)j.bad_at,
                         s ? s : "");
    }
    return KILN_OK;
}

/* ---- Cast ---- */

/* Cast-1 named the target type with a string */
static int64_t dtype_from_name(const char *s) {
    static const char *const names[] = {"",       "FLOAT",  "UINT8",  "INT8",   "UINT16",
                                        "INT16",  "INT32",  "INT64",  "STRING", "BOOL",
                                        "FLOAT16", "DOUBLE", "UINT32", "UINT64"};
    for (int i = 1; i < (int)(sizeof names / sizeof names[0]); i++)
        if (ieq(s, names[i])) return i;
    return -1;
}

static kiln_status cast_target(kiln_ctx *ctx, int *to) {
    const kiln_attr *a = kiln_node_attr(ctx->node, "to");
    if (!a) return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute 'to' is missing");
    int64_t t = a->type == KILN_ATTR_STRING ? dtype_from_name(a->s ? a->s : "") : a->i;
    if (t <= 0 || t >= EW_NDT || !(CAST_TYPES & EW_BIT(t)))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "cast to element type %lld (%s) is not supported",
                         (long long)t, t > 0 && t < EW_NDT ? ew_dtype_name((int)t) : "invalid");
    *to = (int)t;
    return KILN_OK;
}

static int cast_saturate(const kiln_ctx *ctx) {
    return ctx->opset < 19 || kiln_attr_int(ctx->node, "saturate", 1) != 0;
}

/* round_mode (opset 24) only steers casts to float8e8m0 */
static kiln_status cast_round_mode(kiln_ctx *ctx, int *mode) {
    const char *m = kiln_attr_string(ctx->node, "round_mode", "up");
    if (!strcmp(m, "up")) *mode = KILN_E8M0_ROUND_UP;
    else if (!strcmp(m, "down")) *mode = KILN_E8M0_ROUND_DOWN;
    else if (!strcmp(m, "nearest")) *mode = KILN_E8M0_ROUND_NEAREST;
    else
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "attribute round_mode is '%s', expected 'up', 'down' or 'nearest'", m);
    return KILN_OK;
}

static kiln_status cast_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    int to;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(ew_check_type(ctx, x, 0, CAST_TYPES));
    KILN_TRY(cast_target(ctx, &to));
    int rm = KILN_E8M0_ROUND_UP;
    KILN_TRY(cast_round_mode(ctx, &rm));
    return ew_set_like(ctx, 0, to, x);
}

static kiln_status cast_compute(kiln_ctx *ctx) {
    int to = 0, rm = KILN_E8M0_ROUND_UP;
    KILN_TRY(cast_target(ctx, &to));
    KILN_TRY(cast_round_mode(ctx, &rm));
    return cast_run(ctx, to, cast_saturate(ctx), rm);
}

/* ---- CastLike: the target type is input 1's ---- */

static kiln_status castlike_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *like;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &like));
    KILN_TRY(ew_check_type(ctx, x, 0, CAST_TYPES));
    KILN_TRY(ew_check_type(ctx, like, 1, CAST_TYPES));
    int rm = KILN_E8M0_ROUND_UP;
    KILN_TRY(cast_round_mode(ctx, &rm));
    return ew_set_like(ctx, 0, like->dtype, x);
}

static kiln_status castlike_compute(kiln_ctx *ctx) {
    kiln_tensor *like = kiln_input(ctx, 1);
    if (!like) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input 1");
    int rm = KILN_E8M0_ROUND_UP;
    KILN_TRY(cast_round_mode(ctx, &rm));
    return cast_run(ctx, like->dtype, cast_saturate(ctx), rm);
}

/* ---- BitCast: same bits, another type of the same width ---- */

static int bit_width(int dt) {
    if (dt == KILN_DTYPE_INT4 || dt == KILN_DTYPE_UINT4 || dt == KILN_DTYPE_FLOAT4E2M1) return 4;
    if (dt == KILN_DTYPE_INT2 || dt == KILN_DTYPE_UINT2) return 2;
    return 8 * (int)kiln_dtype_size((kiln_dtype)dt);
}

#define BITCAST_TYPES                                                                              \
    ((CAST_TYPES & ~EW_BIT(KILN_DTYPE_STRING)) | EW_BIT(KILN_DTYPE_COMPLEX64) |                    \
     EW_BIT(KILN_DTYPE_COMPLEX128))

static kiln_status bitcast_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(ew_check_type(ctx, x, 0, BITCAST_TYPES));
    if (!kiln_has_attr(ctx->node, "to"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute 'to' is missing");
    int64_t to = kiln_attr_int(ctx->node, "to", 0);
    if (to <= 0 || to >= EW_NDT || !(BITCAST_TYPES & EW_BIT(to)))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "bitcast to element type %lld is not supported",
                         (long long)to);
    if (bit_width((int)to) != bit_width(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "cannot bitcast %s (%d bits) to %s (%d bits): widths differ",
                         ew_dtype_name(x->dtype), bit_width(x->dtype), ew_dtype_name((int)to),
                         bit_width((int)to));
    return ew_set_like(ctx, 0, (int)to, x);
}

static kiln_status bitcast_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!x || !y || ew_empty(y)) return KILN_OK;
    size_t nb = kiln_tensor_nbytes(x), ny = kiln_tensor_nbytes(y);
    memcpy(y->data, x->data, nb < ny ? nb : ny);
    return KILN_OK;
}

const kiln_op kiln_ops_cast[] = {
    /* KILN_OP_ALIAS: a cast to the input's own type is a view of the input, no copy */
    {"", "Cast", 1, KILN_OP_ALIAS, NULL, cast_infer, cast_compute, NULL},
    {"", "CastLike", 15, KILN_OP_ALIAS, NULL, castlike_infer, castlike_compute, NULL},
    {"", "BitCast", 26, 0, NULL, bitcast_infer, bitcast_compute, NULL},
    {0},
};
