/* The typed loops behind Reduce*: one instance per element class (float, double, int64, uint64).
 * Input is [outer, r, inner]; r >= 1 (empty reductions are filled by the caller). inner == 1 walks
 * contiguous rows; inner > 1 keeps a block of column accumulators so rows are read in order. */
#pragma GCC optimize("O3") /* -O2 leaves these typed loops scalar */
#include "reduce_impl.h"
#include "reduce_simd.h"

#define COL_BLOCK 128

static inline int64_t clamp_i64(double v) {
    if (v != v) return 0;
    if (v <= -9223372036854775808.0) return INT64_MIN;
    if (v >= 9223372036854775808.0) return INT64_MAX;
    return (int64_t)v;
}

static inline uint64_t clamp_u64(double v) {
    if (!(v > 0)) return 0;
    if (v >= 18446744073709551616.0) return UINT64_MAX;
    return (uint64_t)v;
}

/* Per class: T element, U accumulator for sums and products (integers wrap like the narrow type
 * they came from, modulo 2^64), F real type of the log/sqrt/exp steps, TO_T rounding F to T,
 * MEAN_DIV the sum-to-mean step (integer division for integer types, as onnxruntime does). */
#define F32_TO_T(v) (v)
#define F64_TO_T(v) (v)
#define I64_TO_T(v) clamp_i64(v)
#define U64_TO_T(v) clamp_u64(v)
#define F32_ABS(v) fabsf(v)
#define F64_ABS(v) fabs(v)
#define I64_ABS(v) ((v) < 0 ? (uint64_t)0 - (uint64_t)(v) : (uint64_t)(v))
#define U64_ABS(v) (v)
#define F32_MEAN(s, n) ((s) / (float)(n))
#define F64_MEAN(s, n) ((s) / (double)(n))
#define I64_MEAN(s, n) ((int64_t)(s) / (int64_t)(n))
#define U64_MEAN(s, n) ((s) / (uint64_t)(n))
#define F32_EXP expf
#define F64_EXP exp
/* onnxruntime accumulates exp(x - max) in the integer type itself, so for integers only the
 * maxima count (exp(0) = 1, the rest truncate to 0); max + log(count) then truncates to T. */
#define I64_EXP(v) trunc(exp(v))
#define U64_EXP(v) trunc(exp(v))
#define F32_LSE(m, e) ((m) + logf(e))
#define F64_LSE(m, e) ((m) + log(e))
#define I64_LSE(m, e) clamp_i64((double)(m) + log(e))
#define U64_LSE(m, e) clamp_u64((double)(m) + log(e))
#define F32_LOG logf
#define F64_LOG log
#define I64_LOG log
#define U64_LOG log
#define F32_SQRT sqrtf
#define F64_SQRT sqrt
#define I64_SQRT sqrt
#define U64_SQRT sqrt

/* NaN-propagating max/min (the integer forms compile to plain compares). */
#define GT_OR_NAN(a, b) ((a) > (b) || (a) != (a))
#define LT_OR_NAN(a, b) ((a) < (b) || (a) != (a))

/* rows per partial sum in the column loops */
#define SUM_RUN 256

/* vector max/min for float rows (NaN-propagating like the scalar loops) */
#define F32_FAST_EXTREME(kind, x, n) \
    if ((kind) == KILN_RK_MAX || (kind) == KILN_RK_MIN) return rs_extreme_nan(x, n, (kind) == KILN_RK_MIN);
#define F64_FAST_EXTREME(kind, x, n)
#define I64_FAST_EXTREME(kind, x, n)
#define U64_FAST_EXTREME(kind, x, n)

#define DEFINE_REDUCE_LOOPS(C, T, U, F)                                                             \
    static T row_##C(int kind, const T *x, int64_t n) {                                             \
        C##_FAST_EXTREME(kind, x, n)                                                                \
        switch (kind) {                                                                             \
        case KILN_RK_MAX: {                                                                         \
            T m = x[0];                                                                             \
            for (int64_t i = 1; i < n; i++) m = GT_OR_NAN(x[i], m) ? x[i] : m;                     \
            return m;                                                                               \
        }                                                                                           \
        case KILN_RK_MIN: {                                                                         \
            T m = x[0];                                                                             \
            for (int64_t i = 1; i < n; i++) m = LT_OR_NAN(x[i], m) ? x[i] : m;                     \
            return m;                                                                               \
        }                                                                                           \
        case KILN_RK_PROD: {                                                                        \
            U p = 1;                                                                                \
            for (int64_t i = 0; i < n; i++) p *= (U)x[i];                                           \
            return (T)p;                                                                            \
        }                                                                                           \
        case KILN_RK_SUM: case KILN_RK_MEAN: case KILN_RK_LOGSUM: {                                 \
            U s = row_sum_##C(x, n);                                                                \
            if (kind == KILN_RK_SUM) return (T)s;                                                   \
            if (kind == KILN_RK_MEAN) return (T)C##_MEAN(s, n);                                     \
            return C##_TO_T(C##_LOG((F)(T)s));                                                      \
        }                                                                                           \
        case KILN_RK_L1: {                                                                          \
            U s = 0;                                                                                \
            for (int64_t i = 0; i < n; i++) s += (U)C##_ABS(x[i]);                                  \
            return (T)s;                                                                            \
        }                                                                                           \
        case KILN_RK_SUMSQ: case KILN_RK_L2: {                                                      \
            U s = 0;                                                                                \
            for (int64_t i = 0; i < n; i++) s += (U)x[i] * (U)x[i];                                 \
            return kind == KILN_RK_SUMSQ ? (T)s : C##_TO_T(C##_SQRT((F)(T)s));                      \
        }                                                                                           \
        case KILN_RK_LOGSUMEXP: {                                                                   \
            T m = x[0];                                                                             \
            for (int64_t i = 1; i < n; i++) m = GT_OR_NAN(x[i], m) ? x[i] : m;                     \
            if ((F)m != (F)m || (F)m == (F)INFINITY || (F)m == -(F)INFINITY) return m;              \
            F e = 0;                                                                                \
            for (int64_t i = 0; i < n; i++) e += C##_EXP((F)x[i] - (F)m);                           \
            return (T)C##_LSE(m, e);                                                     \
        }                                                                                           \
        }                                                                                           \
        return 0;                                                                                   \
    }                                                                                               \
                                                                                                    \
    /* columns [0, nc) of a [r, inner] slice starting at x, into y[0..nc) */                       \
    static void cols_##C(int kind, const T *x, int64_t r, int64_t inner, int64_t nc, T *y) {        \
        U s[COL_BLOCK];                                                                             \
        T m[COL_BLOCK];                                                                             \
        F e[COL_BLOCK];                                                                             \
        switch (kind) {                                                                             \
        case KILN_RK_MAX: case KILN_RK_MIN: case KILN_RK_LOGSUMEXP: {                               \
            for (int64_t j = 0; j < nc; j++) m[j] = x[j];                                           \
            for (int64_t k = 1; k < r; k++) {                                                       \
                const T *row = x + k * inner;                                                       \
                if (kind == KILN_RK_MIN)                                                            \
                    for (int64_t j = 0; j < nc; j++) m[j] = LT_OR_NAN(row[j], m[j]) ? row[j] : m[j]; \
                else                                                                                \
                    for (int64_t j = 0; j < nc; j++) m[j] = GT_OR_NAN(row[j], m[j]) ? row[j] : m[j]; \
            }                                                                                       \
            if (kind != KILN_RK_LOGSUMEXP) {                                                        \
                memcpy(y, m, (size_t)nc * sizeof(T));                                               \
                return;                                                                             \
            }                                                                                       \
            for (int64_t j = 0; j < nc; j++) e[j] = 0;                                              \
            for (int64_t k = 0; k < r; k++) {                                                       \
                const T *row = x + k * inner;                                                       \
                for (int64_t j = 0; j < nc; j++) e[j] += C##_EXP((F)row[j] - (F)m[j]);              \
            }                                                                                       \
            for (int64_t j = 0; j < nc; j++) {                                                      \
                F mj = (F)m[j];                                                                     \
                y[j] = (mj != mj || mj == (F)INFINITY || mj == -(F)INFINITY)                        \
                           ? m[j] : (T)C##_LSE(m[j], e[j]);                                   \
            }                                                                                       \
            return;                                                                                 \
        }                                                                                           \
        case KILN_RK_PROD:                                                                          \
            for (int64_t j = 0; j < nc; j++) s[j] = 1;                                              \
            for (int64_t k = 0; k < r; k++) {                                                       \
                const T *row = x + k * inner;                                                       \
                for (int64_t j = 0; j < nc; j++) s[j] *= (U)row[j];                                 \
            }                                                                                       \
            break;                                                                                  \
        default: { /* SUM, MEAN, LOGSUM, L1, SUMSQ, L2 */                                          \
            /* two-level sums (runs of SUM_RUN rows, then the runs' totals): a long float column    \
             * would otherwise drift by about r * eps (1e-4 relative over 2^20 rows) */             \
            U c[COL_BLOCK];                                                                         \
            for (int64_t j = 0; j < nc; j++) s[j] = 0;                                              \
            for (int64_t k0 = 0; k0 < r; k0 += SUM_RUN) {                                           \
                const int64_t k1 = r - k0 < SUM_RUN ? r : k0 + SUM_RUN;                             \
                for (int64_t j = 0; j < nc; j++) c[j] = 0;                                          \
                for (int64_t k = k0; k < k1; k++) {                                                 \
                    const T *row = x + k * inner;                                                   \
                    if (kind == KILN_RK_L1)                                                         \
                        for (int64_t j = 0; j < nc; j++) c[j] += (U)C##_ABS(row[j]);                \
                    else if (kind == KILN_RK_SUMSQ || kind == KILN_RK_L2)                           \
                        for (int64_t j = 0; j < nc; j++) c[j] += (U)row[j] * (U)row[j];             \
                    else                                                                            \
                        for (int64_t j = 0; j < nc; j++) c[j] += (U)row[j];                         \
                }                                                                                   \
                for (int64_t j = 0; j < nc; j++) s[j] += c[j];                                      \
            }                                                                                       \
        }                                                                                           \
        }                                                                                           \
        for (int64_t j = 0; j < nc; j++) {                                                          \
            switch (kind) {                                                                         \
            case KILN_RK_MEAN: y[j] = (T)C##_MEAN(s[j], r); break;                                  \
            case KILN_RK_LOGSUM: y[j] = C##_TO_T(C##_LOG((F)(T)s[j])); break;                       \
            case KILN_RK_L2: y[j] = C##_TO_T(C##_SQRT((F)(T)s[j])); break;                          \
            default: y[j] = (T)s[j];                                                                \
            }                                                                                       \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    /* final step of a reduction whose associative part gave v (see split_kind) */                \
    static T post_##C(int kind, T v, int64_t r) {                                                   \
        switch (kind) {                                                                             \
        case KILN_RK_MEAN: return (T)C##_MEAN((U)v, r);                                             \
        case KILN_RK_LOGSUM: return C##_TO_T(C##_LOG((F)v));                                        \
        case KILN_RK_L2: return C##_TO_T(C##_SQRT((F)v));                                           \
        default: return v;                                                                          \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    static void split_range_##C(const struct rjob *jb, int64_t b, int64_t e) {                     \
        const T *x = jb->src;                                                                       \
        T *part = jb->part;                                                                         \
        for (int64_t u = b; u < e; u++) {                                                           \
            int64_t o = u / jb->nparts, p = u % jb->nparts, k0 = p * jb->chunk;                     \
            int64_t len = jb->r - k0 < jb->chunk ? jb->r - k0 : jb->chunk;                          \
            part[u] = row_##C(split_kind(jb->kind), x + o * jb->r + k0, len);                       \
        }                                                                                           \
    }                                                                                               \
                                                                                                    \
    static void split_finish_##C(const struct rjob *jb, int64_t outer) {                            \
        const T *part = jb->part;                                                                   \
        T *y = jb->dst;                                                                             \
        int ck = combine_kind(split_kind(jb->kind));                                                \
        for (int64_t o = 0; o < outer; o++)                                                         \
            y[o] = post_##C(jb->kind, row_##C(ck, part + o * jb->nparts, jb->nparts), jb->r);      \
    }                                                                                               \
                                                                                                    \
    static void range_##C(const struct rjob *jb, int64_t b, int64_t e) {                           \
        const T *x = jb->src;                                                                       \
        T *y = jb->dst;                                                                             \
        if (jb->inner == 1) {                                                                       \
            for (int64_t o = b; o < e; o++) y[o] = row_##C(jb->kind, x + o * jb->r, jb->r);         \
            return;                                                                                 \
        }                                                                                           \
        for (int64_t u = b; u < e; u++) {                                                           \
            int64_t o = u / jb->nblk, j0 = (u % jb->nblk) * COL_BLOCK;                              \
            int64_t nc = jb->inner - j0 < COL_BLOCK ? jb->inner - j0 : COL_BLOCK;                   \
            cols_##C(jb->kind, x + o * jb->r * jb->inner + j0, jb->r, jb->inner, nc,                \
                     y + o * jb->inner + j0);                                                       \
        }                                                                                           \
    }

struct rjob {
    int cls, kind;
    const void *src;
    void *dst;
    int64_t r, inner, nblk;
    void *part;            /* split rows: partial results [outer, nparts] */
    int64_t nparts, chunk;
};

/* A long row can be cut into chunks when the reduction is an associative step (this kind)
 * followed by a final transform (post_*); -1 when it is not (LogSumExp). */
static int split_kind(int kind) {
    switch (kind) {
    case KILN_RK_SUM: case KILN_RK_MEAN: case KILN_RK_LOGSUM: return KILN_RK_SUM;
    case KILN_RK_SUMSQ: case KILN_RK_L2: return KILN_RK_SUMSQ;
    case KILN_RK_L1: case KILN_RK_PROD: case KILN_RK_MAX: case KILN_RK_MIN: return kind;
    default: return -1;
    }
}

/* how the chunk results combine */
static int combine_kind(int k) { return k == KILN_RK_SUMSQ || k == KILN_RK_L1 ? KILN_RK_SUM : k; }

static float row_sum_F32(const float *x, int64_t n) { return ru_sum_f32(x, n); }
static double row_sum_F64(const double *x, int64_t n) { return ru_sum_f64(x, n); }
static uint64_t row_sum_I64(const int64_t *x, int64_t n) {
    uint64_t s = 0;
    for (int64_t i = 0; i < n; i++) s += (uint64_t)x[i];
    return s;
}
static uint64_t row_sum_U64(const uint64_t *x, int64_t n) {
    uint64_t s = 0;
    for (int64_t i = 0; i < n; i++) s += x[i];
    return s;
}

DEFINE_REDUCE_LOOPS(F32, float, float, float)
DEFINE_REDUCE_LOOPS(F64, double, double, double)
DEFINE_REDUCE_LOOPS(I64, int64_t, uint64_t, double)
DEFINE_REDUCE_LOOPS(U64, uint64_t, uint64_t, double)

static void reduce_range(void *arg, int64_t b, int64_t e) {
    const struct rjob *jb = arg;
    switch (jb->cls) {
    case KILN_RC_F32: range_F32(jb, b, e); break;
    case KILN_RC_F64: range_F64(jb, b, e); break;
    case KILN_RC_I64: range_I64(jb, b, e); break;
    default: range_U64(jb, b, e);
    }
}

static void split_range(void *arg, int64_t b, int64_t e) {
    const struct rjob *jb = arg;
    switch (jb->cls) {
    case KILN_RC_F32: split_range_F32(jb, b, e); break;
    case KILN_RC_F64: split_range_F64(jb, b, e); break;
    case KILN_RC_I64: split_range_I64(jb, b, e); break;
    default: split_range_U64(jb, b, e);
    }
}

#define SPLIT_CHUNK 32768

void kiln_reduce_run(kiln_ctx *ctx, int cls, int kind, const void *src, void *dst, int64_t outer,
                     int64_t r, int64_t inner) {
    struct rjob jb = {cls, kind, src, dst, r, inner, (inner + COL_BLOCK - 1) / COL_BLOCK, NULL, 0, 0};
    /* few long rows: reduce chunks of each row in parallel, then combine the chunk results */
    int threads = kiln_num_threads(ctx);
    if (inner == 1 && threads > 1 && outer < 2 * threads && r >= 2 * SPLIT_CHUNK &&
        split_kind(kind) >= 0) {
        jb.chunk = SPLIT_CHUNK;
        jb.nparts = (r + SPLIT_CHUNK - 1) / SPLIT_CHUNK;
        jb.part = malloc((size_t)(outer * jb.nparts) * 8);
        if (jb.part) {
            kiln_parallel_for(ctx, outer * jb.nparts, 1, split_range, &jb);
            switch (cls) {
            case KILN_RC_F32: split_finish_F32(&jb, outer); break;
            case KILN_RC_F64: split_finish_F64(&jb, outer); break;
            case KILN_RC_I64: split_finish_I64(&jb, outer); break;
            default: split_finish_U64(&jb, outer);
            }
            free(jb.part);
            return;
        }
        /* out of memory for the partials: fall through to whole rows */
    }
    if (inner == 1)
        kiln_parallel_for(ctx, outer, ru_grain(r), reduce_range, &jb);
    else
        kiln_parallel_for(ctx, outer * jb.nblk, ru_grain(r * COL_BLOCK), reduce_range, &jb);
}
