/* Shared machinery of the element-wise kernel families (unary, binary, logical, activation, cast,
 * contrib): dtype lists for generating typed loops, block conversion of float16/bfloat16 to
 * float32, a broadcast planner that folds n-d broadcasting into rows of contiguous-or-scalar
 * operands, and the threaded walker that feeds those rows to a typed row function.
 *
 * Everything is static inline so each family file stays self-contained. The family files compile
 * themselves with #pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast"): gcc's -O2
 * cost model leaves loops of unknown trip count scalar, trapping math keeps it from if-converting
 * the branch-free selects of the math below (kiln never reads floating-point exception flags),
 * and contraction lets the AVX2/AVX-512 clones use FMA in the polynomials. */
#ifndef KILN_ELEMENTWISE_UTIL_H
#define KILN_ELEMENTWISE_UTIL_H

#include "../cpu_features.h"

#include "ops/op.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define EW_X86 1
#endif

enum { EW_NDT = 32 };   /* dtype-indexed tables; ONNX type numbers stay below this */
enum { EW_BLOCK = 512 };/* elements per float32 staging block for half-precision paths */

#define EW_BIT(dt) (1u << (dt))
#define EW_FLOATS (EW_BIT(KILN_DTYPE_FLOAT) | EW_BIT(KILN_DTYPE_DOUBLE) | EW_BIT(KILN_DTYPE_FLOAT16) | \
                   EW_BIT(KILN_DTYPE_BFLOAT16))
#define EW_SINTS (EW_BIT(KILN_DTYPE_INT8) | EW_BIT(KILN_DTYPE_INT16) | EW_BIT(KILN_DTYPE_INT32) |    \
                  EW_BIT(KILN_DTYPE_INT64))
#define EW_UINTS (EW_BIT(KILN_DTYPE_UINT8) | EW_BIT(KILN_DTYPE_UINT16) | EW_BIT(KILN_DTYPE_UINT32) | \
                  EW_BIT(KILN_DTYPE_UINT64))
#define EW_INTS (EW_SINTS | EW_UINTS)
#define EW_NUMERIC (EW_FLOATS | EW_INTS)
#define EW_F8S (EW_BIT(KILN_DTYPE_FLOAT8E4M3FN) | EW_BIT(KILN_DTYPE_FLOAT8E4M3FNUZ) |                \
                EW_BIT(KILN_DTYPE_FLOAT8E5M2) | EW_BIT(KILN_DTYPE_FLOAT8E5M2FNUZ))

/* X(dtype, C type, unsigned C type of the same width, suffix) */
#define EW_SINT_TYPES(X)                                                                           \
    X(KILN_DTYPE_INT8, int8_t, uint8_t, i8) X(KILN_DTYPE_INT16, int16_t, uint16_t, i16)            \
    X(KILN_DTYPE_INT32, int32_t, uint32_t, i32) X(KILN_DTYPE_INT64, int64_t, uint64_t, i64)
#define EW_UINT_TYPES(X)                                                                           \
    X(KILN_DTYPE_UINT8, uint8_t, uint8_t, u8) X(KILN_DTYPE_UINT16, uint16_t, uint16_t, u16)        \
    X(KILN_DTYPE_UINT32, uint32_t, uint32_t, u32) X(KILN_DTYPE_UINT64, uint64_t, uint64_t, u64)
#define EW_INT_TYPES(X) EW_SINT_TYPES(X) EW_UINT_TYPES(X)
#define EW_NATIVE_FLOAT_TYPES(X)                                                                   \
    X(KILN_DTYPE_FLOAT, float, float, f32) X(KILN_DTYPE_DOUBLE, double, double, f64)

/* Designated-initializer entries of dtype-indexed row tables, for rows named op_<suffix>. */
#define EW_FLOAT_ROWS(op)                                                                          \
    [KILN_DTYPE_FLOAT] = op##_f32, [KILN_DTYPE_DOUBLE] = op##_f64, [KILN_DTYPE_FLOAT16] = op##_f16, \
    [KILN_DTYPE_BFLOAT16] = op##_bf16
#define EW_SINT_ROWS(op)                                                                           \
    [KILN_DTYPE_INT8] = op##_i8, [KILN_DTYPE_INT16] = op##_i16, [KILN_DTYPE_INT32] = op##_i32,      \
    [KILN_DTYPE_INT64] = op##_i64
#define EW_UINT_ROWS(op)                                                                           \
    [KILN_DTYPE_UINT8] = op##_u8, [KILN_DTYPE_UINT16] = op##_u16, [KILN_DTYPE_UINT32] = op##_u32,   \
    [KILN_DTYPE_UINT64] = op##_u64
#define EW_INT_ROWS(op) EW_SINT_ROWS(op), EW_UINT_ROWS(op)

/* ---------------------------------------------------------------- validation and shapes ---- */

static inline const char *ew_dtype_name(int dt) {
    const char *s = kiln_dtype_name((kiln_dtype)dt);
    return s ? s : "?";
}

/* Fails unless input i's dtype is in the mask. */
static inline kiln_status ew_check_type(kiln_ctx *ctx, const kiln_tensor *t, int i, uint32_t mask) {
    if (t->dtype <= 0 || t->dtype >= EW_NDT || !(mask & EW_BIT(t->dtype)))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input %d",
                         ew_dtype_name(t->dtype), i);
    return KILN_OK;
}

static inline kiln_status ew_same_type(kiln_ctx *ctx, const kiln_tensor *a, int ia,
                                       const kiln_tensor *b, int ib) {
    if (a->dtype != b->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "input %d has type %s but input %d has %s",
                         ib, ew_dtype_name(b->dtype), ia, ew_dtype_name(a->dtype));
    return KILN_OK;
}

/* Output i takes t's shape with element type dtype (unknown rank stays unknown). */
static inline kiln_status ew_set_like(kiln_ctx *ctx, int i, int dtype, const kiln_tensor *t) {
    if (t->rank < 0) return kiln_set_output_unknown(ctx, i, dtype);
    return kiln_set_output(ctx, i, dtype, t->rank, t->dims);
}

/* Output 0 gets the numpy broadcast of the n shapes. */
static inline kiln_status ew_set_broadcast(kiln_ctx *ctx, int n, const kiln_tensor *const *ts,
                                           int dtype) {
    for (int k = 0; k < n; k++)
        if (ts[k]->rank < 0) return kiln_set_output_unknown(ctx, 0, dtype);
    int rank;
    int64_t dims[KILN_MAX_RANK];
    KILN_TRY(kiln_broadcast_shape(ctx, n, ts, &rank, dims));
    return kiln_set_output(ctx, 0, dtype, rank, dims);
}

/* Before opset 7 the two-input arithmetic, logical and comparison ops broadcast only with the
 * attribute broadcast=1, and then B's shape lines up with A's axes from `axis` on (default: A's
 * trailing axes). view receives B re-shaped so that numpy broadcasting gives that meaning. */
static inline kiln_status ew_legacy_view(kiln_ctx *ctx, const kiln_tensor *a, const kiln_tensor *b,
                                         kiln_tensor *view) {
    *view = *b;
    if (ctx->opset >= 7 || a->rank < 0 || b->rank < 0) return KILN_OK;
    char s1[160], s2[160];
    if (!kiln_attr_int(ctx->node, "broadcast", 0)) {
        if (!kiln_shape_equal(a, b))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "inputs have shapes %s and %s, which must be equal before opset 7 "
                             "unless broadcast=1",
                             kiln_shape_str(a, s1, sizeof s1), kiln_shape_str(b, s2, sizeof s2));
        return KILN_OK;
    }
    int64_t axis = kiln_has_attr(ctx->node, "axis") ? kiln_attr_int(ctx->node, "axis", 0)
                                                    : a->rank - b->rank;
    if (axis < 0) axis += a->rank;
    if (axis < 0 || axis + b->rank > a->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "B %s does not fit into A %s at axis %lld",
                         kiln_shape_str(b, s2, sizeof s2), kiln_shape_str(a, s1, sizeof s1),
                         (long long)axis);
    view->rank = a->rank;
    for (int i = 0; i < a->rank; i++) view->dims[i] = 1;
    for (int i = 0; i < b->rank; i++) view->dims[axis + i] = b->dims[i];
    return KILN_OK;
}

/* Bytes per element as the rows index them (a string element is its char pointer). */
static inline size_t ew_elem_size(int dt) {
    return dt == KILN_DTYPE_STRING ? sizeof(char *) : kiln_dtype_size((kiln_dtype)dt);
}

/* Any input holding no elements: compute has nothing to write. */
static inline int ew_empty(const kiln_tensor *t) { return kiln_numel(t) == 0; }

/* ---------------------------------------------------------------- half precision blocks ---- */

#ifdef EW_X86
__attribute__((target("avx,f16c"))) static inline void ew_f16_load_f16c(float *d, const uint16_t *s,
                                                                         int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(s + i))));
    for (; i < n; i++) d[i] = kiln_f16_to_f32(s[i]);
}
__attribute__((target("avx,f16c"))) static inline void ew_f16_store_f16c(uint16_t *d, const float *s,
                                                                          int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128((__m128i *)(d + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < n; i++) d[i] = kiln_f32_to_f16(s[i]);
}
static inline int ew_have_f16c(void) {
    static _Atomic int have = -1;
    if (have < 0) have = kiln_cpu_has_f16c();
    return have;
}
#endif

static inline void ew_f16_load(float *d, const uint16_t *s, int64_t n) {
#ifdef EW_X86
    if (n >= 8 && ew_have_f16c()) { ew_f16_load_f16c(d, s, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) d[i] = kiln_f16_to_f32(s[i]);
}
static inline void ew_f16_store(uint16_t *d, const float *s, int64_t n) {
#ifdef EW_X86
    if (n >= 8 && ew_have_f16c()) { ew_f16_store_f16c(d, s, n); return; }
#endif
    for (int64_t i = 0; i < n; i++) d[i] = kiln_f32_to_f16(s[i]);
}
static inline void ew_bf16_load(float *d, const uint16_t *s, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t b = (uint32_t)s[i] << 16;
        memcpy(d + i, &b, 4);
    }
}
static inline void ew_bf16_store(uint16_t *d, const float *s, int64_t n) {
    for (int64_t i = 0; i < n; i++) d[i] = kiln_f32_to_bf16(s[i]);
}

/* ---------------------------------------------------------------- broadcast planning ---- */

/* Up to three operands (Where) mapped onto the output's index space. After folding, the last
 * axis of every operand has stride 1 (walks along the row) or 0 (one value for the whole row). */
enum { EW_MAX_IN = 3 };

typedef struct ew_plan {
    int n;                               /* operands */
    int rank;                            /* >= 1 */
    int64_t dims[KILN_MAX_RANK];
    int64_t st[EW_MAX_IN][KILN_MAX_RANK]; /* element strides, 0 on broadcast axes */
    int64_t total;
} ew_plan;

/* Operands must already be known to broadcast to (out_rank, out_dims). */
static inline void ew_plan_make(ew_plan *p, int out_rank, const int64_t *out_dims, int n,
                                const kiln_tensor *const *ins) {
    int64_t full_st[EW_MAX_IN][KILN_MAX_RANK];
    p->n = n;
    p->total = kiln_dims_numel(out_rank, out_dims);
    for (int k = 0; k < n; k++) {
        const kiln_tensor *t = ins[k];
        int off = out_rank - t->rank;
        int64_t s = 1;
        for (int i = out_rank - 1; i >= 0; i--) {
            int j = i - off;
            if (j < 0 || t->dims[j] == 1) {
                full_st[k][i] = 0;
            } else {
                full_st[k][i] = s;
                s *= t->dims[j];
            }
        }
    }
    int r = 0;
    for (int i = 0; i < out_rank; i++) {
        if (out_dims[i] == 1) continue; /* size-1 axes move nothing */
        int merge = r > 0;
        for (int k = 0; k < n && merge; k++)
            if (p->st[k][r - 1] != full_st[k][i] * out_dims[i]) merge = 0;
        if (merge) {
            p->dims[r - 1] *= out_dims[i];
            for (int k = 0; k < n; k++) p->st[k][r - 1] = full_st[k][i];
        } else {
            p->dims[r] = out_dims[i];
            for (int k = 0; k < n; k++) p->st[k][r] = full_st[k][i];
            r++;
        }
    }
    if (r == 0) { /* a single element */
        p->dims[0] = 1;
        for (int k = 0; k < n; k++) p->st[k][0] = 1;
        r = 1;
    }
    p->rank = r;
}

/* A row function computes n output elements; bit k of `scalar` says operand k is one value
 * repeated along the row (stride 0) instead of n consecutive values. */
typedef void (*ew_row_fn)(void *out, const void *a, const void *b, const void *c, int64_t n,
                          unsigned scalar, const void *param);

typedef struct ew_job {
    const ew_plan *plan;
    char *out;
    size_t out_size;
    const char *in[EW_MAX_IN];
    size_t in_size[EW_MAX_IN];
    ew_row_fn fn;
    const void *param;
} ew_job;

static inline void ew_walk(void *arg, int64_t begin, int64_t end) {
    const ew_job *j = arg;
    const ew_plan *p = j->plan;
    const int r = p->rank, n = p->n, last = r - 1;
    int64_t idx[KILN_MAX_RANK], off[EW_MAX_IN] = {0, 0, 0};
    int64_t rem = begin;
    for (int i = last; i >= 0; i--) {
        idx[i] = rem % p->dims[i];
        rem /= p->dims[i];
        for (int k = 0; k < n; k++) off[k] += idx[i] * p->st[k][i];
    }
    unsigned scalar = 0;
    for (int k = 0; k < n; k++)
        if (p->st[k][last] == 0) scalar |= 1u << k;
    const char *none = NULL;
    int64_t pos = begin;
    while (pos < end) {
        int64_t len = p->dims[last] - idx[last];
        if (len > end - pos) len = end - pos;
        j->fn(j->out + pos * (int64_t)j->out_size, j->in[0] + off[0] * (int64_t)j->in_size[0],
              n > 1 ? j->in[1] + off[1] * (int64_t)j->in_size[1] : none,
              n > 2 ? j->in[2] + off[2] * (int64_t)j->in_size[2] : none, len, scalar, j->param);
        pos += len;
        if (pos >= end) break;
        for (int k = 0; k < n; k++) off[k] += len * p->st[k][last];
        idx[last] += len;
        for (int i = last; i > 0 && idx[i] == p->dims[i]; i--) {
            idx[i] = 0;
            idx[i - 1]++;
            for (int k = 0; k < n; k++) off[k] += p->st[k][i - 1] - p->dims[i] * p->st[k][i];
        }
    }
}

/* Runs the row function over the whole output, threaded when there is enough work. `grain` is
 * the smallest number of elements worth a task (lower for costly element functions). */
static inline void ew_run_range(kiln_ctx *ctx, int64_t total, int64_t grain, kiln_range_fn fn,
                                void *arg) {
    if (total <= 0) return;
    if (total < 2 * grain || !ctx->tp || kiln_num_threads(ctx) <= 1)
        fn(arg, 0, total);
    else
        kiln_parallel_for(ctx, total, grain, fn, arg);
}

static inline void ew_run(kiln_ctx *ctx, ew_job *job, int64_t grain) {
    ew_run_range(ctx, job->plan->total, grain, ew_walk, job);
}

/* Element-wise over operands broadcast to the output tensor `out`. */
static inline void ew_broadcast_apply(kiln_ctx *ctx, kiln_tensor *out, int n,
                                      const kiln_tensor *const *ins, ew_row_fn fn,
                                      const void *param, int64_t grain) {
    ew_plan plan;
    ew_plan_make(&plan, out->rank, out->dims, n, ins);
    ew_job job;
    memset(&job, 0, sizeof job);
    job.plan = &plan;
    job.out = out->data;
    job.out_size = ew_elem_size(out->dtype);
    for (int k = 0; k < n; k++) {
        job.in[k] = ins[k]->data;
        job.in_size[k] = ew_elem_size(ins[k]->dtype);
    }
    job.fn = fn;
    job.param = param;
    ew_run(ctx, &job, grain);
}

/* Typical task sizes: cheap arithmetic vs. transcendental element functions. */
/* Cheap: about 2 us of a memory-bound op per chunk, so that 16 threads split a transformer's
 * [128, 768] residual Add 12 ways (32768 gave 3 chunks) while tensors under 16K elements (a few
 * microseconds, about a fork's cost) stay on the calling thread. */
enum { EW_GRAIN_CHEAP = 8192, EW_GRAIN_MATH = 4096 };

/* ---------------------------------------------------------------- row generators ---- */

/* Row functions get AVX-512 and AVX2+FMA twins chosen at load time where the compiler can do
 * that (ifunc); the SSE2 baseline runs everywhere else. Not under ThreadSanitizer: its
 * instrumented ifunc resolvers would run while the library is relocated, before TSan starts. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__) && \
    !defined(__SANITIZE_THREAD__)
#define EW_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define EW_CLONES
#endif

/* Binary row over C types TA (operands) and TO (result); EXPR sees x (from a) and y (from b) and
 * P (the param pointer, as const void *). The mode switch sits outside the loops so each loop is
 * a plain vectorisable one. */
#define EW_BIN_ROW(fname, TA, TO, EXPR)                                                            \
    EW_CLONES static void fname(void *o_, const void *a_, const void *b_, const void *c_, int64_t n,         \
                      unsigned scalar, const void *P) {                                            \
        TO *o = (TO *)o_;                                                                          \
        const TA *a = (const TA *)a_, *b = (const TA *)b_;                                         \
        (void)c_; (void)P;                                                                         \
        switch (scalar & 3u) {                                                                     \
        case 0:                                                                                    \
            for (int64_t i = 0; i < n; i++) {                                                      \
                TA x = a[i], y = b[i];                                                             \
                (void)x; (void)y;                                                                  \
                o[i] = (TO)(EXPR);                                                                 \
            }                                                                                      \
            break;                                                                                 \
        case 1: {                                                                                  \
            const TA x = a[0];                                                                     \
            (void)x;                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                      \
                TA y = b[i];                                                                       \
                (void)y;                                                                           \
                o[i] = (TO)(EXPR);                                                                 \
            }                                                                                      \
        } break;                                                                                   \
        case 2: {                                                                                  \
            const TA y = b[0];                                                                     \
            (void)y;                                                                               \
            for (int64_t i = 0; i < n; i++) {                                                      \
                TA x = a[i];                                                                       \
                (void)x;                                                                           \
                o[i] = (TO)(EXPR);                                                                 \
            }                                                                                      \
        } break;                                                                                   \
        default: {                                                                                 \
            const TA x = a[0], y = b[0];                                                           \
            (void)x; (void)y;                                                                      \
            const TO v = (TO)(EXPR);                                                               \
            for (int64_t i = 0; i < n; i++) o[i] = v;                                              \
        }                                                                                          \
        }                                                                                          \
    }

/* Half-precision binary row: stages blocks through float32 and calls the float32 row f32fn.
 * LOAD/STORE are ew_f16_* or ew_bf16_*. With STORE_NATIVE the float32 row writes the result type
 * directly (comparisons writing bool): out_elem is then that type's size. */
#define EW_BIN_ROW_HALF(fname, f32fn, LOAD, STORE)                                                 \
    static void fname(void *o_, const void *a_, const void *b_, const void *c_, int64_t n,         \
                      unsigned scalar, const void *P) {                                            \
        uint16_t *o = (uint16_t *)o_;                                                              \
        const uint16_t *a = (const uint16_t *)a_, *b = (const uint16_t *)b_;                       \
        float ta[EW_BLOCK], tb[EW_BLOCK], to[EW_BLOCK];                                            \
        (void)c_;                                                                                  \
        if (scalar & 1u) LOAD(ta, a, 1);                                                           \
        if (scalar & 2u) LOAD(tb, b, 1);                                                           \
        for (int64_t s = 0; s < n; s += EW_BLOCK) {                                                \
            int64_t m = n - s < EW_BLOCK ? n - s : EW_BLOCK;                                       \
            if (!(scalar & 1u)) LOAD(ta, a + s, m);                                                \
            if (!(scalar & 2u)) LOAD(tb, b + s, m);                                                \
            f32fn(to, ta, tb, NULL, m, scalar, P);                                                 \
            STORE(o + s, to, m);                                                                   \
        }                                                                                          \
    }

#define EW_BIN_ROW_HALF_TO(fname, f32fn, LOAD, TO)                                                 \
    static void fname(void *o_, const void *a_, const void *b_, const void *c_, int64_t n,         \
                      unsigned scalar, const void *P) {                                            \
        TO *o = (TO *)o_;                                                                          \
        const uint16_t *a = (const uint16_t *)a_, *b = (const uint16_t *)b_;                       \
        float ta[EW_BLOCK], tb[EW_BLOCK];                                                          \
        (void)c_;                                                                                  \
        if (scalar & 1u) LOAD(ta, a, 1);                                                           \
        if (scalar & 2u) LOAD(tb, b, 1);                                                           \
        for (int64_t s = 0; s < n; s += EW_BLOCK) {                                                \
            int64_t m = n - s < EW_BLOCK ? n - s : EW_BLOCK;                                       \
            if (!(scalar & 1u)) LOAD(ta, a + s, m);                                                \
            if (!(scalar & 2u)) LOAD(tb, b + s, m);                                                \
            f32fn(o + s, ta, tb, NULL, m, scalar, P);                                              \
        }                                                                                          \
    }

/* Unary row: out[i] = EXPR over x = in[i]; P is the param pointer. */
#define EW_UN_ROW(fname, TI, TO, EXPR)                                                             \
    EW_CLONES static void fname(void *o_, const void *a_, const void *b_, const void *c_, int64_t n,         \
                      unsigned scalar, const void *P) {                                            \
        TO *o = (TO *)o_;                                                                          \
        const TI *a = (const TI *)a_;                                                              \
        (void)b_; (void)c_; (void)scalar; (void)P;                                                 \
        for (int64_t i = 0; i < n; i++) { TI x = a[i]; o[i] = (TO)(EXPR); }                        \
    }

/* Unary row with parameters: EXPR sees p, a copy of *(const PT *)P taken before the loop (read
 * through P inside the loop, the compiler would have to assume the stores change it). */
#define EW_UN_ROW_P(fname, TI, TO, PT, EXPR)                                                       \
    EW_CLONES static void fname(void *o_, const void *a_, const void *b_, const void *c_, int64_t n, \
                                unsigned scalar, const void *P) {                                  \
        TO *o = (TO *)o_;                                                                          \
        const TI *a = (const TI *)a_;                                                              \
        const PT p = *(const PT *)P;                                                               \
        (void)b_; (void)c_; (void)scalar; (void)p;                                                 \
        for (int64_t i = 0; i < n; i++) { TI x = a[i]; o[i] = (TO)(EXPR); }                        \
    }

#define EW_UN_ROW_HALF(fname, f32fn, LOAD, STORE)                                                  \
    static void fname(void *o_, const void *a_, const void *b_, const void *c_, int64_t n,         \
                      unsigned scalar, const void *P) {                                            \
        uint16_t *o = (uint16_t *)o_;                                                              \
        const uint16_t *a = (const uint16_t *)a_;                                                  \
        float ta[EW_BLOCK], to[EW_BLOCK];                                                          \
        for (int64_t s = 0; s < n; s += EW_BLOCK) {                                                \
            int64_t m = n - s < EW_BLOCK ? n - s : EW_BLOCK;                                       \
            LOAD(ta, a + s, m);                                                                    \
            f32fn(to, ta, b_, c_, m, scalar, P);                                                   \
            STORE(o + s, to, m);                                                                   \
        }                                                                                          \
    }

#define EW_UN_ROW_HALF_TO(fname, f32fn, LOAD, TO)                                                  \
    static void fname(void *o_, const void *a_, const void *b_, const void *c_, int64_t n,         \
                      unsigned scalar, const void *P) {                                            \
        TO *o = (TO *)o_;                                                                          \
        const uint16_t *a = (const uint16_t *)a_;                                                  \
        float ta[EW_BLOCK];                                                                        \
        for (int64_t s = 0; s < n; s += EW_BLOCK) {                                                \
            int64_t m = n - s < EW_BLOCK ? n - s : EW_BLOCK;                                       \
            LOAD(ta, a + s, m);                                                                    \
            f32fn(o + s, ta, b_, c_, m, scalar, P);                                                \
        }                                                                                          \
    }

/* Unary job over a flat range (no broadcasting): same row functions, scalar bits unused. */
typedef struct ew_flat_job {
    char *out;
    size_t out_size;
    const char *in;
    size_t in_size;
    ew_row_fn fn;
    const void *param;
} ew_flat_job;

static inline void ew_flat_walk(void *arg, int64_t begin, int64_t end) {
    const ew_flat_job *j = arg;
    j->fn(j->out + begin * (int64_t)j->out_size, j->in + begin * (int64_t)j->in_size, NULL, NULL,
          end - begin, 0, j->param);
}

static inline void ew_unary_apply(kiln_ctx *ctx, kiln_tensor *out, const kiln_tensor *in,
                                  ew_row_fn fn, const void *param, int64_t grain) {
    ew_flat_job j = {out->data, ew_elem_size(out->dtype), in->data, ew_elem_size(in->dtype), fn,
                     param};
    ew_run_range(ctx, kiln_numel(out), grain, ew_flat_walk, &j);
}

/* ---------------------------------------------------------------- generic loads ---- */

/* n elements of numeric dtype dt (any integer or float type but float8) widened to double. */
static inline void ew_load_f64_block(int dt, const void *src, int64_t n, double *d) {
    switch (dt) {
#define EW_LOAD_CASE(DT, T, UT, sfx)                                                               \
    case DT:                                                                                       \
        for (int64_t i = 0; i < n; i++) d[i] = (double)((const T *)src)[i];                        \
        break;
        EW_INT_TYPES(EW_LOAD_CASE)
        EW_NATIVE_FLOAT_TYPES(EW_LOAD_CASE)
#undef EW_LOAD_CASE
    case KILN_DTYPE_BOOL:
        for (int64_t i = 0; i < n; i++) d[i] = ((const uint8_t *)src)[i] != 0;
        break;
    case KILN_DTYPE_FLOAT16:
        for (int64_t i = 0; i < n; i++) d[i] = kiln_f16_to_f32(((const uint16_t *)src)[i]);
        break;
    case KILN_DTYPE_BFLOAT16:
        for (int64_t i = 0; i < n; i++) d[i] = kiln_bf16_to_f32(((const uint16_t *)src)[i]);
        break;
    default:
        for (int64_t i = 0; i < n; i++) d[i] = 0;
    }
}

/* double to int64 the way x86's truncating conversion does it: out-of-range and NaN give
 * INT64_MIN (C leaves that undefined; this keeps it defined and sanitizer-clean). */
static inline int64_t ew_f64_to_i64(double v) {
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return INT64_MIN;
    return (int64_t)v;
}

/* float8 / float4 codecs with Cast's rounding and saturate rules (cast_f8.c). */
float kiln_cast_f8_to_f32(int dt, uint8_t v);
uint8_t kiln_cast_f32_to_f8(int dt, float x, int saturate);
float kiln_cast_f4_to_f32(uint8_t v);
uint8_t kiln_cast_f32_to_f4(float x);
enum { KILN_E8M0_ROUND_UP, KILN_E8M0_ROUND_DOWN, KILN_E8M0_ROUND_NEAREST };
float kiln_cast_e8m0_to_f32(uint8_t v);
uint8_t kiln_cast_f32_to_e8m0(float x, int saturate, int round_mode);

/* ---------------------------------------------------------------- fast float32 math ---- */

/* Branch-free float32 exp, expm1, tanh, sigmoid and erf: written so that loops over them
 * vectorise (libm's expf/tanhf/erff are calls the compiler cannot vectorise). All stay within a
 * few ulp of the correctly rounded result over the whole float range, and keep NaN a NaN. */

static inline float ew_bits_f(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static inline float ew_fast_expf(float x) {
    /* clamp with comparisons (fminf/fmaxf are calls); NaN becomes -104 here, restored below */
    float xc = x > -104.0f ? x : -104.0f;
    xc = xc < 88.8f ? xc : 88.8f;
    /* x = k ln2 + r, |r| <= ln2/2; adding 1.5*2^23 rounds to the nearest integer */
    const float k = (xc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = xc - k * 0.693145751953125f; /* ln2, high part: k * it is exact */
    r = r - k * 1.42860676533018704e-06f;  /* ln2, low part */
    float p = 1.0f / 5040;
    p = p * r + 1.0f / 720;
    p = p * r + 1.0f / 120;
    p = p * r + 1.0f / 24;
    p = p * r + 1.0f / 6;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    /* 2^k in two halves so results near the overflow and subnormal edges stay exact */
    const int32_t n = (int32_t)k, n1 = n / 2, n2 = n - n1;
    const float y = p * ew_bits_f((uint32_t)(n1 + 127) << 23) * ew_bits_f((uint32_t)(n2 + 127) << 23);
    return x != x ? x : y;
}

static inline float ew_fast_expm1f(float x) {
    /* near 0, e^x - 1 cancels: use the series there */
    float p = 1.0f / 362880;
    p = p * x + 1.0f / 40320;
    p = p * x + 1.0f / 5040;
    p = p * x + 1.0f / 720;
    p = p * x + 1.0f / 120;
    p = p * x + 1.0f / 24;
    p = p * x + 1.0f / 6;
    p = p * x + 0.5f;
    const float small = (p * x) * x + x;
    const float big = ew_fast_expf(x) - 1.0f;
    return fabsf(x) < 0.34657359f ? small : big;
}

static inline float ew_fast_tanhf(float x) {
    const float e = ew_fast_expm1f(-2.0f * fabsf(x)); /* in (-1, 0] */
    const float t = -e / (2.0f + e);
    return copysignf(t, x);
}

static inline float ew_fast_sigmoidf(float x) {
    const float e = ew_fast_expf(-fabsf(x)); /* never overflows */
    const float s = 1.0f / (1.0f + e);
    return x >= 0 ? s : (x != x ? x : e * s);
}

static inline float ew_fast_erff(float x) {
    const float a = fabsf(x);
    /* |x| <= 1: x * P(x^2); 1 < |x| < 3.92: polynomial in |x| - 2.41; beyond, erf rounds to 1.
     * Both least-squares fits were made for kiln (float32 evaluation error <= 2.6 ulp). */
    const float t = a * a;
    float p = 7.897490286268294e-05f;
    p = p * t - 0.0008024125127121806f;
    p = p * t + 0.005190025549381971f;
    p = p * t - 0.02685479260981083f;
    p = p * t + 0.11283612251281738f;
    p = p * t - 0.3761262893676758f;
    p = p * t + 1.128379225730896f;
    const float near0 = a * p;
    const float u = a - 2.41f;
    float q = 1.310710786128766e-06f;
    q = q * u - 9.115645980273257e-07f;
    q = q * u - 1.861971577454824e-05f;
    q = q * u + 3.660463698906824e-05f;
    q = q * u + 6.331752956612036e-05f;
    q = q * u - 0.00033738630008883774f;
    q = q * u + 0.000493517320137471f;
    q = q * u + 0.00029325662762857974f;
    q = q * u - 0.003066311590373516f;
    q = q * u + 0.007699653040617704f;
    q = q * u - 0.011727155186235905f;
    q = q * u + 0.011993295513093472f;
    q = q * u - 0.008166749961674213f;
    q = q * u + 0.003388569224625826f;
    q = q * u + 0.9993461966514587f;
    const float mid = q < 1.0f ? q : 1.0f;
    const float r = a <= 1.0f ? near0 : (a < 3.92f ? mid : 1.0f);
    return x != x ? x : copysignf(r, x);
}

/* ---------------------------------------------------------------- scalar helpers ---- */

static inline float ew_sigmoidf(float x) {
    /* split by sign so exp never overflows into inf/inf */
    if (x >= 0) return 1.0f / (1.0f + expf(-x));
    float e = expf(x);
    return e / (1.0f + e);
}
static inline double ew_sigmoid(double x) {
    if (x >= 0) return 1.0 / (1.0 + exp(-x));
    double e = exp(x);
    return e / (1.0 + e);
}
static inline float ew_softplusf(float x) { return x > 0 ? x + log1pf(expf(-x)) : log1pf(expf(x)); }
static inline double ew_softplus(double x) { return x > 0 ? x + log1p(exp(-x)) : log1p(exp(x)); }

#endif
