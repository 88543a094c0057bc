/* The packed single-precision product's kernels for CPUs with AVX2 and FMA but no AVX-512 (the
 * AMD EPYC test VM among them). The driver, the packed formats and the epilogue semantics are
 * gemm_avx512.c's; only the register tile and the B packing differ, so every caller of the
 * kgemm_sgemm_avx512_* entry points runs unchanged here.
 *
 * The 12 x 32 tile of the packed panels would need 48 ymm accumulators; AVX2 has 16 registers.
 * It is computed as four 6 x 16 quarters instead: 12 accumulators, two B vectors and one
 * broadcast A value, 15 registers. Per tap a quarter does 12 FMAs against 2 vector loads and 6
 * broadcasts (loads too), which keeps both FMA pipes fed without exceeding two loads a cycle;
 * a 12 x 8 strip would need 13 loads for its 12 FMAs. Quarters over columns past nr are
 * skipped, a short panel's rows are split evenly between its two row quarters, and a column tail
 * of at most 8 runs as one such 12 x 8 strip, so short panels cost about what they hold (see
 * tile). Each quarter streams its half of the B panel (64 bytes a tap, one cache line) and its
 * rows of the A panel: the two quarters sharing a B half run back to back, while that half is
 * still in L1. */
#include "gemm_util.h"
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#include "avx2_part.h"

#define MR KGEMM_MR
#define NR KGEMM_NR
#define AVX2_FN __attribute__((target("avx2,fma")))
#define AVX2_INLINE __attribute__((target("avx2,fma"), always_inline)) static inline

enum { QROWS = 6, QCOLS = 16 };
/* The same C and residual prefetching as the AVX-512 kernels (see PREFETCH_C_KC there): shallow
 * tiles are mostly stores, which miss on this VM too. */
enum { PREFETCH_C_KC = 64, PREFETCH_C_AHEAD = 64 };

/* Where one tile's results go and what happens to them on the way (see kgemm_epi). */
typedef struct tile_out {
    float *C;
    int64_t ldc;
    float alpha, beta;
    const float *bias; /* per row, or NULL */
    const kgemm_epi *ep;
    const float *z;    /* residual at the tile's [0, 0] (row stride ep->ldz), or NULL */
    int nr, split;     /* columns stored; columns from split on lie jump floats further on */
    int64_t jump;
    int prefetch;
} tile_out;

/* lane i of lanes_below(n) is set when i < n (n clamped to [0, 8]) */
static const int32_t lane_table[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

AVX2_INLINE __m256i lanes_below(int n) {
    n = n < 0 ? 0 : n > 8 ? 8 : n;
    return _mm256_loadu_si256((const __m256i *)(lane_table + 8 - n));
}

/* The eight columns [col, col + 8) of a tile: how many are stored (valid) and how many of those
 * lie before the run boundary (local; the rest are jump floats on). */
typedef struct vec_cols {
    int valid, local;
    __m256i all, lo, hi;
} vec_cols;

AVX2_INLINE vec_cols cols_at(const tile_out *o, int col) {
    vec_cols v;
    v.valid = o->nr - col < 0 ? 0 : o->nr - col > 8 ? 8 : o->nr - col;
    v.local = o->split - col < 0 ? 0 : o->split - col > v.valid ? v.valid : o->split - col;
    v.all = lanes_below(v.valid);
    v.lo = lanes_below(v.local);
    v.hi = _mm256_andnot_si256(v.lo, v.all);
    return v;
}

/* Masked-off lanes are never touched (maskload does not fault on them), so a partial vector
 * may hang over the end of a row. */
AVX2_INLINE __m256 load_cols(const float *p, int64_t jump, const vec_cols *v) {
    if (v->local == 8) return _mm256_loadu_ps(p);
    __m256 x = _mm256_maskload_ps(p, v->lo);
    if (v->local < v->valid) x = _mm256_or_ps(x, _mm256_maskload_ps(p + jump, v->hi));
    return x;
}

AVX2_INLINE void store_cols(float *p, int64_t jump, const vec_cols *v, __m256 x) {
    if (v->local == 8) {
        _mm256_storeu_ps(p, x);
        return;
    }
    kavx2_store_part(p, x, v->local);
    if (v->local < v->valid) kavx2_store_range(p + jump, x, v->local, v->valid);
}

/* the activation of kgemm_epi on one vector, NaN kept as the AVX-512 kernels keep it */
AVX2_INLINE __m256 act_vec_as(int act, const kgemm_epi *ep, __m256 x) {
    __m256 zero = _mm256_setzero_ps();
    switch (act) {
    case KGEMM_EPI_RELU: /* x < 0 ? 0 : x */
        return _mm256_blendv_ps(x, zero, _mm256_cmp_ps(x, zero, _CMP_LT_OQ));
    case KGEMM_EPI_CLIP: { /* x < a ? a : x > b ? b : x */
        __m256 a = _mm256_set1_ps(ep->a), b = _mm256_set1_ps(ep->b);
        __m256 r = _mm256_blendv_ps(x, b, _mm256_cmp_ps(x, b, _CMP_GT_OQ));
        return _mm256_blendv_ps(r, a, _mm256_cmp_ps(x, a, _CMP_LT_OQ));
    }
    case KGEMM_EPI_LEAKY: /* x >= 0 ? x : a * x */
        return _mm256_blendv_ps(_mm256_mul_ps(x, _mm256_set1_ps(ep->a)), x,
                                _mm256_cmp_ps(x, zero, _CMP_GE_OQ));
    case KGEMM_EPI_HSWISH: { /* x * clamp(x / 6 + 1/2, 0, 1); max/min pass a NaN t through */
        __m256 t = _mm256_fmadd_ps(x, _mm256_set1_ps(1.0f / 6), _mm256_set1_ps(0.5f));
        t = _mm256_min_ps(_mm256_set1_ps(1.0f), _mm256_max_ps(zero, t));
        return _mm256_mul_ps(x, t);
    }
    default:
        return x;
    }
}

/* act_vec_as with ep's own activation (act_vec_as with a constant folds the switch away) */
AVX2_INLINE __m256 act_vec(const kgemm_epi *ep, __m256 x) { return act_vec_as(ep->act, ep, x); }

/* alpha * sum (+ beta * C) (+ bias) (+ z, activation) for one vector of row r */
AVX2_INLINE __m256 finish_vec(const tile_out *o, __m256 sum, const float *c, const float *zr,
                              float bias, const vec_cols *v) {
    __m256 x = _mm256_mul_ps(sum, _mm256_set1_ps(o->alpha));
    if (o->beta != 0.0f) /* beta 0 never reads C, which may hold garbage */
        x = _mm256_fmadd_ps(_mm256_set1_ps(o->beta), load_cols(c, o->jump, v), x);
    if (o->bias) x = _mm256_add_ps(x, _mm256_set1_ps(bias));
    if (o->ep) {
        if (zr) x = _mm256_add_ps(x, load_cols(zr, o->jump, v));
        x = act_vec(o->ep, x);
    }
    return x;
}

/* store_quarter's common case, 16 whole columns with alpha 1 and beta 0, with the activation
 * and the residual fixed at compile time (ACT, HAS_Z constants at each call): the general loop
 * tested alpha, beta, bias, residual and the activation's kind for every vector, and perf put
 * most of its time on those branches. Same operations in the same order. */
AVX2_INLINE void store_whole(const tile_out *o, __m256 (*acc)[2], int r0, int rows, int c0,
                             const int ACT, const int HAS_Z, const int ADD_C) {
    for (int r = 0; r < rows; r++) {
        int row = r0 + r;
        float *c = o->C + row * o->ldc + c0;
        const float *zr = HAS_Z ? o->z + row * o->ep->ldz + c0 : NULL;
        __m256 x = acc[r][0], y = acc[r][1];
        if (ADD_C) { /* beta 1: finish_vec's fma(1, C, x) is C + x, rounded once */
            x = _mm256_add_ps(_mm256_loadu_ps(c), x);
            y = _mm256_add_ps(_mm256_loadu_ps(c + 8), y);
        }
        if (o->bias) {
            __m256 b = _mm256_set1_ps(o->bias[row]);
            x = _mm256_add_ps(x, b);
            y = _mm256_add_ps(y, b);
        }
        if (HAS_Z) {
            x = _mm256_add_ps(x, _mm256_loadu_ps(zr));
            y = _mm256_add_ps(y, _mm256_loadu_ps(zr + 8));
        }
        if (ACT != KGEMM_EPI_NONE) {
            x = act_vec_as(ACT, o->ep, x);
            y = act_vec_as(ACT, o->ep, y);
        }
        _mm256_storeu_ps(c, x);
        _mm256_storeu_ps(c + 8, y);
        if (o->prefetch) __builtin_prefetch(c + PREFETCH_C_AHEAD, 1, 3);
        if (HAS_Z) __builtin_prefetch(zr + PREFETCH_C_AHEAD, 0, 3);
    }
}

/* Rows [r0, r0 + rows) x columns [c0, c0 + 16) of the tile from the quarter's sums. Beta 1 is a
 * deep product's later blocks of taps (K past KGEMM_KC: SqueezeNet's 512 -> 1000 classifier),
 * which took the general loop's tests for every vector too. */
AVX2_FN static void store_quarter(const tile_out *o, __m256 (*acc)[2], int r0, int rows, int c0) {
    vec_cols v0 = cols_at(o, c0), v1 = cols_at(o, c0 + 8);
    if (v0.local == 8 && v1.local == 8 && o->alpha == 1.0f && (o->beta == 0.0f || o->beta == 1.0f)) {
        int act = o->ep ? o->ep->act : KGEMM_EPI_NONE, z = o->ep && o->z, add = o->beta == 1.0f;
#define SW(A, Z)                                                                                   \
    do {                                                                                           \
        if (add) store_whole(o, acc, r0, rows, c0, A, Z, 1);                                       \
        else store_whole(o, acc, r0, rows, c0, A, Z, 0);                                           \
    } while (0)
        if (act == KGEMM_EPI_NONE && !z) SW(KGEMM_EPI_NONE, 0);
        else if (act == KGEMM_EPI_NONE) SW(KGEMM_EPI_NONE, 1);
        else if (act == KGEMM_EPI_RELU && !z) SW(KGEMM_EPI_RELU, 0);
        else if (act == KGEMM_EPI_RELU) SW(KGEMM_EPI_RELU, 1);
        else if (act == KGEMM_EPI_HSWISH && !z) SW(KGEMM_EPI_HSWISH, 0);
        else if (act == KGEMM_EPI_HSWISH) SW(KGEMM_EPI_HSWISH, 1);
        else if (act == KGEMM_EPI_CLIP && !z) SW(KGEMM_EPI_CLIP, 0);
        else if (act == KGEMM_EPI_CLIP) SW(KGEMM_EPI_CLIP, 1);
        else if (!z) SW(KGEMM_EPI_LEAKY, 0);
        else SW(KGEMM_EPI_LEAKY, 1);
#undef SW
        return;
    }
    for (int r = 0; r < rows; r++) {
        int row = r0 + r;
        float *c = o->C + row * o->ldc + c0;
        const float *zr = o->z ? o->z + row * o->ep->ldz + c0 : NULL;
        float b = o->bias ? o->bias[row] : 0.0f;
        __m256 x = finish_vec(o, acc[r][0], c, zr, b, &v0);
        __m256 y = finish_vec(o, acc[r][1], c + 8, zr ? zr + 8 : NULL, b, &v1);
        store_cols(c, o->jump, &v0, x);
        if (v1.valid) store_cols(c + 8, o->jump, &v1, y);
        if (o->prefetch) __builtin_prefetch(c + PREFETCH_C_AHEAD, 1, 3);
        if (zr) __builtin_prefetch(zr + PREFETCH_C_AHEAD, 0, 3);
    }
}

/* One quarter's sums over kc taps: row i of A at a + i * rs, tap k at + k * ks (packed panels:
 * rs 1, ks MR; rows of A read in place: rs lda, ks 1); B's 16 columns at Bp, tap k at + k * NR.
 * ROWS is a constant at every call, so the unused accumulators vanish. */
#define Q_ROW(i)                                                                                   \
    if (ROWS > (i)) {                                                                              \
        x = _mm256_broadcast_ss(a + (i) * rs);                                                     \
        s##i##a = _mm256_fmadd_ps(x, b0, s##i##a);                                                 \
        s##i##b = _mm256_fmadd_ps(x, b1, s##i##b);                                                 \
    }
#define Q_SAVE(i)                                                                                  \
    if (ROWS > (i)) {                                                                              \
        acc[i][0] = s##i##a;                                                                       \
        acc[i][1] = s##i##b;                                                                       \
    }
AVX2_INLINE void quarter_sums(const int ROWS, int64_t kc, const float *a, int64_t rs, int64_t ks,
                              const float *Bp, __m256 (*acc)[2]) {
    __m256 s0a = _mm256_setzero_ps(), s0b = s0a, s1a = s0a, s1b = s0a, s2a = s0a, s2b = s0a;
    __m256 s3a = s0a, s3b = s0a, s4a = s0a, s4b = s0a, s5a = s0a, s5b = s0a, x;
    for (int64_t k = 0; k < kc; k++) {
        __m256 b0 = _mm256_loadu_ps(Bp), b1 = _mm256_loadu_ps(Bp + 8);
        _mm_prefetch((const char *)(Bp + 8 * NR), _MM_HINT_T0);
        Q_ROW(0) Q_ROW(1) Q_ROW(2) Q_ROW(3) Q_ROW(4) Q_ROW(5)
        a += ks;
        Bp += NR;
    }
    Q_SAVE(0) Q_SAVE(1) Q_SAVE(2) Q_SAVE(3) Q_SAVE(4) Q_SAVE(5)
}

/* quarter_sums with ROWS as a constant for each row count a quarter can have; packed selects
 * the constant strides of the packed panel so that they fold into the addressing. */
AVX2_FN static void quarter(int rows, int packed, int64_t kc, const float *a, int64_t lda,
                            const float *Bp, __m256 (*acc)[2]) {
#define Q_CASE(n)                                                                                  \
    case n:                                                                                        \
        if (packed) quarter_sums(n, kc, a, 1, MR, Bp, acc);                                        \
        else quarter_sums(n, kc, a, lda, 1, Bp, acc);                                              \
        break;
    switch (rows) {
        Q_CASE(1) Q_CASE(2) Q_CASE(3) Q_CASE(4) Q_CASE(5) Q_CASE(6)
    default:
        break;
    }
#undef Q_CASE
}

/* A narrow column tail (at most 8 columns left): all rows of the panel against one vector of B,
 * 12 accumulators, instead of quarters that would compute 16 columns for the few stored
 * (DenseNet's 3x3 convolutions on 7x7 and 14x14 maps end their 49 or 196 columns so). */
#define S_ROW(i)                                                                                   \
    if (ROWS > (i)) {                                                                              \
        x = _mm256_broadcast_ss(a + (i) * rs);                                                     \
        t##i = _mm256_fmadd_ps(x, b, t##i);                                                        \
    }
#define S_SAVE(i)                                                                                  \
    if (ROWS > (i)) acc[i][0] = t##i;
AVX2_INLINE void strip_sums(const int ROWS, int64_t kc, const float *a, int64_t rs, int64_t ks,
                            const float *Bp, __m256 (*acc)[2]) {
    __m256 t0 = _mm256_setzero_ps(), t1 = t0, t2 = t0, t3 = t0, t4 = t0, t5 = t0, t6 = t0, t7 = t0;
    __m256 t8 = t0, t9 = t0, t10 = t0, t11 = t0, x;
    for (int64_t k = 0; k < kc; k++) {
        __m256 b = _mm256_loadu_ps(Bp);
        S_ROW(0) S_ROW(1) S_ROW(2) S_ROW(3) S_ROW(4) S_ROW(5)
        S_ROW(6) S_ROW(7) S_ROW(8) S_ROW(9) S_ROW(10) S_ROW(11)
        a += ks;
        Bp += NR;
    }
    S_SAVE(0) S_SAVE(1) S_SAVE(2) S_SAVE(3) S_SAVE(4) S_SAVE(5)
    S_SAVE(6) S_SAVE(7) S_SAVE(8) S_SAVE(9) S_SAVE(10) S_SAVE(11)
}

AVX2_FN static void strip(int rows, int packed, int64_t kc, const float *a, int64_t lda,
                          const float *Bp, __m256 (*acc)[2]) {
#define S_CASE(n)                                                                                  \
    case n:                                                                                        \
        if (packed) strip_sums(n, kc, a, 1, MR, Bp, acc);                                          \
        else strip_sums(n, kc, a, lda, 1, Bp, acc);                                                \
        break;
    switch (rows) {
        S_CASE(1) S_CASE(2) S_CASE(3) S_CASE(4) S_CASE(5) S_CASE(6)
        S_CASE(7) S_CASE(8) S_CASE(9) S_CASE(10) S_CASE(11) S_CASE(12)
    default:
        break;
    }
#undef S_CASE
}

/* One row against all 32 columns (a batch-1 recurrent step, a single token against packed
 * weights): a 1-row quarter would leave two accumulators waiting out each FMA's latency, so two
 * taps at a time go to separate sets of four. */
#define R1_TAP(t, s0, s1, s2, s3)                                                                  \
    x = _mm256_broadcast_ss(a + (t) * ks);                                                         \
    s0 = _mm256_fmadd_ps(x, _mm256_loadu_ps(Bp + (t) * NR), s0);                                   \
    s1 = _mm256_fmadd_ps(x, _mm256_loadu_ps(Bp + (t) * NR + 8), s1);                               \
    s2 = _mm256_fmadd_ps(x, _mm256_loadu_ps(Bp + (t) * NR + 16), s2);                              \
    s3 = _mm256_fmadd_ps(x, _mm256_loadu_ps(Bp + (t) * NR + 24), s3);
AVX2_FN static void row1_sums(int64_t kc, const float *a, int64_t ks, const float *Bp,
                              __m256 (*acc)[2]) {
    __m256 p0 = _mm256_setzero_ps(), p1 = p0, p2 = p0, p3 = p0, q0 = p0, q1 = p0, q2 = p0,
           q3 = p0, x;
    int64_t k = 0;
    for (; k + 2 <= kc; k += 2) {
        _mm_prefetch((const char *)(Bp + 8 * NR), _MM_HINT_T0);
        R1_TAP(0, p0, p1, p2, p3)
        R1_TAP(1, q0, q1, q2, q3)
        a += 2 * ks;
        Bp += 2 * NR;
    }
    if (k < kc) {
        R1_TAP(0, p0, p1, p2, p3)
    }
    acc[0][0] = _mm256_add_ps(p0, q0); /* columns 0..15: the first "quarter" */
    acc[0][1] = _mm256_add_ps(p1, q1);
    acc[1][0] = _mm256_add_ps(p2, q2); /* columns 16..31 */
    acc[1][1] = _mm256_add_ps(p3, q3);
}

/* The tile of rows [0, mr) x columns [0, nr): A at a (packed panel, or rows in place with lda). */
AVX2_FN static void tile(int packed, int64_t kc, const float *a, int64_t lda, const float *Bp,
                         const tile_out *o, int mr) {
    __m256 acc[QROWS][2];
    if (mr == 1) {
        row1_sums(kc, a, packed ? MR : 1, Bp, acc);
        store_quarter(o, acc, 0, 1, 0);
        if (o->nr > QCOLS) store_quarter(o, acc + 1, 0, 1, QCOLS);
        return;
    }
    /* Panels of 7 to 11 rows split evenly (8: 4 + 4, not 6 + 2): a quarter of one or two rows
     * has too few accumulators to hide the FMA latency. */
    int top = mr > QROWS ? (mr + 1) / 2 : mr;
    for (int c0 = 0; c0 < o->nr; c0 += QCOLS) {
        if (o->nr - c0 <= 8) {
            __m256 s[MR][2];
            memset(s, 0, sizeof s);
            strip(mr, packed, kc, a, lda, Bp + c0, s);
            store_quarter(o, s, 0, mr, c0);
            continue;
        }
        quarter(top, packed, kc, a, lda, Bp + c0, acc);
        store_quarter(o, acc, 0, top, c0);
        if (mr > top) {
            quarter(mr - top, packed, kc, packed ? a + top : a + top * lda, lda, Bp + c0, acc);
            store_quarter(o, acc, top, mr - top, c0);
        }
    }
}

void kgemm_avx2_tile(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                     float alpha, float beta, const float *bias, int mr, int nr,
                     const kgemm_epi *ep, const float *z, int split, int64_t jump) {
    tile_out o = {C, ldc, alpha, beta, bias, ep, z, nr, split < nr ? split : nr, jump,
                  kc <= PREFETCH_C_KC};
    tile(1, kc, Ap, 0, Bp, &o, mr);
}

void kgemm_avx2_tile_rows(int64_t kc, const float *A, int64_t lda, const float *Bp, float *C,
                          int64_t ldc, float alpha, float beta, int mr, int nr) {
    tile_out o = {C, ldc, alpha, beta, NULL, NULL, NULL, nr, nr, 0, 0};
    tile(0, kc, A, lda, Bp, &o, mr);
}

/* B rows [p0, p0+kc) x cols [j0, j0+nc) into 32-column panels (zero columns past nc); row-major
 * B is read a row at a time, for the reason given at the AVX-512 twin. */
AVX2_FN void kgemm_avx2_pack_b_block(int tb, const float *B, int64_t ldb, int64_t p0, int64_t kc,
                                     int64_t j0, int64_t nc, float *dst) {
    if (!tb) {
        int64_t full = nc / NR * NR;
        int rest = (int)(nc - full);
        __m256i m[4];
        for (int q = 0; q < 4; q++) m[q] = lanes_below(rest - 8 * q);
        for (int64_t k = 0; k < kc; k++) {
            const float *src = B + (p0 + k) * ldb + j0;
            float *d = dst + k * NR;
            int64_t jp = 0;
            for (; jp < full; jp += NR)
                for (int q = 0; q < 4; q++)
                    _mm256_storeu_ps(d + jp * kc + 8 * q, _mm256_loadu_ps(src + jp + 8 * q));
            if (rest)
                for (int q = 0; q < 4; q++)
                    _mm256_storeu_ps(d + jp * kc + 8 * q, _mm256_maskload_ps(src + jp + 8 * q, m[q]));
        }
        return;
    }
    kgemm_pack_bt_block(B, ldb, p0, kc, j0, nc, dst);
}

/* cached: FusedConv's activations and the pools ask per output row */
int kgemm_avx2_available(void) {
    static _Atomic int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    }
    return cached;
}
#else
int kgemm_avx2_available(void) { return 0; }
void kgemm_avx2_tile(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                     float alpha, float beta, const float *bias, int mr, int nr,
                     const kgemm_epi *ep, const float *z, int split, int64_t jump) {}
void kgemm_avx2_tile_rows(int64_t kc, const float *A, int64_t lda, const float *Bp, float *C,
                          int64_t ldc, float alpha, float beta, int mr, int nr) {}
void kgemm_avx2_pack_b_block(int tb, const float *B, int64_t ldb, int64_t p0, int64_t kc,
                             int64_t j0, int64_t nc, float *dst) {}
#endif
