/* BLAS wrappers that spread one product over kiln's threads, batched products, integer products
 * and float16/bfloat16 conversions. */
#include "gemm_util.h"
#include "../cpu_features.h"
#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define KVEC_AVX2 1
#endif

#ifdef KVEC_AVX2
__attribute__((target("avx2"))) static void add_scalar_avx2(float *y, float b, int64_t n) {
    __m256 vb = _mm256_set1_ps(b);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), vb));
    for (; i < n; i++) y[i] += b;
}

__attribute__((target("avx2"))) static void add_avx2(float *y, const float *x, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(y + i, _mm256_add_ps(_mm256_loadu_ps(y + i), _mm256_loadu_ps(x + i)));
    for (; i < n; i++) y[i] += x[i];
}

static int have_avx2(void) {
    static _Atomic int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") ? 1 : 0;
    return cached;
}
#endif

void kvec_add_scalar_f32(float *y, float b, int64_t n) {
#ifdef KVEC_AVX2
    if (have_avx2()) {
        add_scalar_avx2(y, b, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] += b;
}

void kvec_add_f32(float *y, const float *x, int64_t n) {
#ifdef KVEC_AVX2
    if (have_avx2()) {
        add_avx2(y, x, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++) y[i] += x[i];
}

float *kgemm_alloc_packed(int64_t n) {
    size_t bytes = (sizeof(float) * (size_t)(n > 0 ? n : 1) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

int64_t kpar_grain(int64_t n, double est_ns) {
    if (n <= 1 || est_ns < KPAR_SERIAL_NS) return n > 1 ? n : 1;
    double per = est_ns / (double)n, want = KPAR_SERIAL_NS / 4.0;
    int64_t g = per >= want ? 1 : (int64_t)(want / per) + 1;
    return g < n ? g : n;
}

void kgemm_blas_serial(void) {
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

void kgemm_f32_serial(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) { /* an empty sum: only the beta part remains */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return;
    }
    if (N == 1 || M == 1) {
        /* vector products: gemv avoids gemm's packing of a whole operand. A zero beta must not
         * read C, which may hold anything (NaN * 0 is NaN). */
        int64_t incc = N == 1 ? ldc : 1, len = N == 1 ? M : N;
        if (beta == 0.0f)
            for (int64_t i = 0; i < len; i++) C[i * incc] = 0.0f;
        if (N == 1)
            cblas_sgemv(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, ta ? (int)K : (int)M,
                        ta ? (int)M : (int)K, alpha, A, (int)lda, B, tb ? 1 : (int)ldb, beta, C,
                        (int)incc);
        else /* y^T = x^T op(B)  <=>  y = op(B)^T x */
            cblas_sgemv(CblasRowMajor, tb ? CblasNoTrans : CblasTrans, tb ? (int)N : (int)K,
                        tb ? (int)K : (int)N, alpha, B, (int)ldb, A, ta ? (int)lda : 1, beta, C,
                        1);
        return;
    }
    /* The packed engine on AVX2 too: its tiles round the same way whichever thread computes
     * them, so results do not depend on the thread count (OpenBLAS's edges do). It costs ~10%
     * against OpenBLAS's Zen kernel on large products (768^3 on the 2-core EPYC VM, one thread:
     * 82 against 92 GFLOPS). */
    if (kgemm_packed_available() &&
        kgemm_sgemm_avx512(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL))
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void kgemm_f32_serial_bias(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                           float *C, int64_t ldc, const float *row_bias) {
    if (row_bias && M > 1 && N > 1 && K > 0 && kgemm_packed_available() &&
        kgemm_sgemm_avx512(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, row_bias))
        return;
    kgemm_f32_serial(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (row_bias)
        for (int64_t i = 0; i < M; i++) kvec_add_scalar_f32(C + i * ldc, row_bias[i], N);
}

void kgemm_f64_serial(int ta, int tb, int64_t M, int64_t N, int64_t K, double alpha,
                      const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
                      double *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0 ? 0.0 : beta * C[i * ldc + j];
        return;
    }
    cblas_dgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

/* ---- one product split over threads ---- */

/* A product split over threads cuts C into tiles of rb rows x cb columns. Splitting one side only
 * left most of 16 threads idle on transformer shapes (M = 128 tokens in blocks of 24 rows gives 6
 * pieces), so both sides are halved, the longer first, until there are a few tiles per thread or a
 * tile would drop below the kernel's panel (12 x 32) or about 10 us of work. Square-ish tiles also
 * keep the operands each tile packs small next to its work. */
typedef struct tile_plan {
    int64_t rb, cb, nr, nc;
} tile_plan;

#define TILE_MIN_MACS (1 << 18)

static tile_plan plan_tiles(int64_t M, int64_t N, int64_t K, int64_t want, int64_t ralign,
                            int64_t calign) {
    tile_plan t = {M, N, 1, 1};
    for (;;) {
        if (t.nr * t.nc >= want) break;
        int64_t r2 = (t.rb + 1) / 2, c2 = (t.cb + 1) / 2;
        r2 = (r2 + ralign - 1) / ralign * ralign;
        c2 = (c2 + calign - 1) / calign * calign;
        int can_r = r2 < t.rb && r2 >= ralign && (double)r2 * t.cb * K >= TILE_MIN_MACS;
        int can_c = c2 < t.cb && c2 >= calign && (double)t.rb * c2 * K >= TILE_MIN_MACS;
        if (!can_r && !can_c) break;
        /* rows weigh double: a row panel is 12 high, a column panel 32 wide */
        if (can_r && (!can_c || 2 * t.rb >= t.cb)) t.rb = r2;
        else t.cb = c2;
        t.nr = (M + t.rb - 1) / t.rb;
        t.nc = (N + t.cb - 1) / t.cb;
    }
    return t;
}

typedef struct split_job {
    int dtype, ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    tile_plan t;
    double alpha, beta;
    const void *A, *B;
    void *C;
} split_job;

static void split_run(void *arg, int64_t t0, int64_t t1) {
    const split_job *j = arg;
    size_t es = j->dtype == KILN_DTYPE_DOUBLE ? 8 : 4;
    for (int64_t t = t0; t < t1; t++) {
        int64_t r0 = t / j->t.nc * j->t.rb, c0 = t % j->t.nc * j->t.cb;
        int64_t M = j->M - r0 < j->t.rb ? j->M - r0 : j->t.rb;
        int64_t N = j->N - c0 < j->t.cb ? j->N - c0 : j->t.cb;
        if (M <= 0 || N <= 0) continue;
        const char *A = (const char *)j->A + (size_t)(j->ta ? r0 : r0 * j->lda) * es;
        const char *B = (const char *)j->B + (size_t)(j->tb ? c0 * j->ldb : c0) * es;
        char *C = (char *)j->C + (size_t)(r0 * j->ldc + c0) * es;
        if (j->dtype == KILN_DTYPE_DOUBLE)
            kgemm_f64_serial(j->ta, j->tb, M, N, j->K, j->alpha, (const double *)A, j->lda,
                             (const double *)B, j->ldb, j->beta, (double *)C, j->ldc);
        else
            kgemm_f32_serial(j->ta, j->tb, M, N, j->K, (float)j->alpha, (const float *)A, j->lda,
                             (const float *)B, j->ldb, (float)j->beta, (float *)C, j->ldc);
    }
}

/* Below this many multiply-adds (about 40 us on one core) a product is not worth waking the
 * pool for. */
#define PAR_MIN_FLOPS (KPAR_SERIAL_NS * 100.0)

static void gemm_split(kiln_ctx *ctx, int dtype, int ta, int tb, int64_t M, int64_t N, int64_t K,
                       double alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
                       double beta, void *C, int64_t ldc) {
    kgemm_blas_serial();
    int nt = kiln_num_threads(ctx);
    split_job j = {dtype, ta, tb, M, N, K, lda, ldb, ldc, {M, N, 1, 1}, alpha, beta, A, B, C};
    if (nt <= 1 || (double)M * N * K < PAR_MIN_FLOPS || (M < 2 && N < 32)) {
        split_run(&j, 0, 1);
        return;
    }
    /* columns in multiples of 16 keep BLAS's vector width; a single row is a gemv, split by
     * columns only */
    j.t = plan_tiles(M, N, K, 3 * (int64_t)nt, M < 2 ? M : 1, 16);
    kiln_parallel_for(ctx, j.t.nr * j.t.nc, 1, split_run, &j);
}

void kgemm_f32(kiln_ctx *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
               int64_t ldc) {
    gemm_split(ctx, KILN_DTYPE_FLOAT, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

void kgemm_f64(kiln_ctx *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K, double alpha,
               const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
               double *C, int64_t ldc) {
    gemm_split(ctx, KILN_DTYPE_DOUBLE, ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
}

/* ---- products with a packed B ---- */

typedef struct bp_job {
    int ta;
    int64_t M, N, K, lda, ldc;
    tile_plan t;
    float alpha, beta;
    const float *A, *Bp;
    float *C;
    kgemm_tile_init_fn c_init;
    void *init_arg;
} bp_job;

static void bp_run(void *arg, int64_t t0, int64_t t1) {
    const bp_job *j = arg;
    for (int64_t t = t0; t < t1; t++) {
        int64_t r0 = t / j->t.nc * j->t.rb, c0 = t % j->t.nc * j->t.cb;
        int64_t M = j->M - r0 < j->t.rb ? j->M - r0 : j->t.rb;
        int64_t N = j->N - c0 < j->t.cb ? j->N - c0 : j->t.cb;
        if (M <= 0 || N <= 0) continue;
        if (j->c_init) j->c_init(j->init_arg, r0, M, c0, N);
        kgemm_sgemm_avx512_bpacked(j->ta, M, N, j->K, j->alpha, j->A + (j->ta ? r0 : r0 * j->lda),
                                   j->lda, j->Bp, j->N, c0, j->beta, j->C + r0 * j->ldc + c0, j->ldc);
    }
}

void kgemm_f32_bpacked(kiln_ctx *ctx, int ta, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *Bp, float beta, float *C,
                       int64_t ldc) {
    kgemm_f32_bpacked_init(ctx, ta, M, N, K, alpha, A, lda, Bp, beta, C, ldc, NULL, NULL);
}

void kgemm_f32_bpacked_init(kiln_ctx *ctx, int ta, int64_t M, int64_t N, int64_t K, float alpha,
                            const float *A, int64_t lda, const float *Bp, float beta, float *C,
                            int64_t ldc, kgemm_tile_init_fn c_init, void *init_arg) {
    bp_job j = {ta, M, N, K, lda, ldc, {M, N, 1, 1}, alpha, beta, A, Bp, C, c_init, init_arg};
    int nt = kiln_num_threads(ctx);
    double macs = (double)M * N * K;
    if (nt <= 1 || macs < PAR_MIN_FLOPS || (M < 24 && N < 2 * KGEMM_NR)) {
        bp_run(&j, 0, 1);
        return;
    }
    /* B is packed already; a tile packs only its rows of A, and column offsets must start a
     * packed panel */
    j.t = plan_tiles(M, N, K, 3 * (int64_t)nt, KGEMM_MR, KGEMM_NR);
    kiln_parallel_for(ctx, j.t.nr * j.t.nc, 1, bp_run, &j);
}

/* ---- batches ---- */

/* A batch is cut into (product, tile) items: attention's 12 heads of 128 x 128 products on 16
 * threads left a quarter of the threads idle when whole products were the items, and splitting
 * each small product on its own gave the pool only two tiles at a time. */
typedef struct batch_job {
    const kgemm_batch *b;
    tile_plan t;
} batch_job;

static void batch_run(void *arg, int64_t i0, int64_t i1) {
    const batch_job *j = arg;
    const kgemm_batch *b = j->b;
    int64_t per = j->t.nr * j->t.nc;
    for (int64_t i = i0; i < i1; i++) {
        int64_t p = i / per, t = i % per;
        int64_t r0 = t / j->t.nc * j->t.rb, c0 = t % j->t.nc * j->t.cb;
        int64_t M = b->M - r0 < j->t.rb ? b->M - r0 : j->t.rb;
        int64_t N = b->N - c0 < j->t.cb ? b->N - c0 : j->t.cb;
        if (M <= 0 || N <= 0) continue;
        int64_t ao = b->aoff[p] + (b->ta ? r0 : r0 * b->lda);
        int64_t bo = b->boff[p] + (b->tb ? c0 * b->ldb : c0);
        int64_t co = b->coff[p] + r0 * b->ldc + c0;
        if (b->dtype == KILN_DTYPE_DOUBLE)
            kgemm_f64_serial(b->ta, b->tb, M, N, b->K, b->alpha, (const double *)b->A + ao, b->lda,
                             (const double *)b->B + bo, b->ldb, b->beta, (double *)b->C + co, b->ldc);
        else
            kgemm_f32_serial(b->ta, b->tb, M, N, b->K, (float)b->alpha, (const float *)b->A + ao,
                             b->lda, (const float *)b->B + bo, b->ldb, (float)b->beta,
                             (float *)b->C + co, b->ldc);
    }
}

void kgemm_batched(kiln_ctx *ctx, const kgemm_batch *b) {
    kgemm_blas_serial();
    int nt = kiln_num_threads(ctx);
    if (b->count <= 0) return;
    double flops = (double)b->M * b->N * b->K;
    batch_job j = {b, {b->M, b->N, 1, 1}};
    if (nt <= 1 || flops * b->count < PAR_MIN_FLOPS) {
        batch_run(&j, 0, b->count);
        return;
    }
    /* whole products when there are enough of them to balance; else tiles of each */
    if (b->count < 4 * nt && b->count % nt) {
        int64_t want = (3 * (int64_t)nt + b->count - 1) / b->count;
        j.t = plan_tiles(b->M, b->N, b->K, want, b->M < 2 ? b->M : 1, 16);
    }
    int64_t items = b->count * j.t.nr * j.t.nc;
    kiln_parallel_for(ctx, items, kpar_grain(items, flops * b->count / 100.0), batch_run, &j);
}

/* ---- integer products ---- */

int kgemm_int_supported(int dt) {
    return dt == KILN_DTYPE_INT32 || dt == KILN_DTYPE_INT64 || dt == KILN_DTYPE_UINT32 ||
           dt == KILN_DTYPE_UINT64;
}

typedef struct int_job {
    int dtype, ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    const void *A, *B;
    void *C;
} int_job;

/* Arithmetic in the unsigned type of the same width: wraps without undefined behaviour and gives
 * the same bits as the signed two's-complement result. */
#define INT_GEMM_ROWS(NAME, T, U)                                                                  \
    static void NAME(const int_job *j, int64_t i0, int64_t i1) {                                   \
        const T *A = j->A, *B = j->B;                                                              \
        T *C = j->C;                                                                               \
        for (int64_t i = i0; i < i1; i++) {                                                        \
            T *c = C + i * j->ldc;                                                                 \
            if (!j->tb) {                                                                          \
                for (int64_t n = 0; n < j->N; n++) c[n] = 0;                                       \
                for (int64_t k = 0; k < j->K; k++) {                                               \
                    U a = (U)(j->ta ? A[k * j->lda + i] : A[i * j->lda + k]);                      \
                    const T *b = B + k * j->ldb;                                                   \
                    for (int64_t n = 0; n < j->N; n++) c[n] = (T)((U)c[n] + a * (U)b[n]);          \
                }                                                                                  \
            } else {                                                                               \
                for (int64_t n = 0; n < j->N; n++) {                                               \
                    U s = 0;                                                                       \
                    const T *b = B + n * j->ldb;                                                   \
                    for (int64_t k = 0; k < j->K; k++)                                             \
                        s += (U)(j->ta ? A[k * j->lda + i] : A[i * j->lda + k]) * (U)b[k];         \
                    c[n] = (T)s;                                                           \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }
INT_GEMM_ROWS(int_rows_i32, int32_t, uint32_t)
INT_GEMM_ROWS(int_rows_i64, int64_t, uint64_t)
INT_GEMM_ROWS(int_rows_u32, uint32_t, uint32_t)
INT_GEMM_ROWS(int_rows_u64, uint64_t, uint64_t)

static void int_run(void *arg, int64_t i0, int64_t i1) {
    const int_job *j = arg;
    switch (j->dtype) {
    case KILN_DTYPE_INT32: int_rows_i32(j, i0, i1); break;
    case KILN_DTYPE_INT64: int_rows_i64(j, i0, i1); break;
    case KILN_DTYPE_UINT32: int_rows_u32(j, i0, i1); break;
    default: int_rows_u64(j, i0, i1); break;
    }
}

void kgemm_int(kiln_ctx *ctx, int dtype, int ta, int tb, int64_t M, int64_t N, int64_t K,
               const void *A, int64_t lda, const void *B, int64_t ldb, void *C, int64_t ldc) {
    int_job j = {dtype, ta, tb, M, N, K, lda, ldb, ldc, A, B, C};
    kiln_parallel_for(ctx, M, kpar_grain(M, (double)M * N * (K > 0 ? K : 1) * 0.5), int_run, &j);
}

/* ---- conversions ---- */

typedef struct cvt_job {
    int dtype, to_f32;
    const void *src;
    void *dst;
} cvt_job;

#ifdef KVEC_AVX2
/* float16 <-> float32 with the F16C instructions: both directions are exact or round to nearest
 * even like kiln_f16_to_f32/kiln_f32_to_f16, and 8 values per instruction instead of a branchy
 * scalar routine per value (the fp16 BERT converts every MatMul's input and output). */
__attribute__((target("avx2,f16c"))) static void f16_to_f32_f16c(const uint16_t *in, float *out,
                                                                  int64_t s, int64_t e) {
    int64_t i = s;
    for (; i + 8 <= e; i += 8)
        _mm256_storeu_ps(out + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(in + i))));
    for (; i < e; i++) out[i] = kiln_f16_to_f32(in[i]);
}

__attribute__((target("avx2,f16c"))) static void f32_to_f16_f16c(const float *in, uint16_t *out,
                                                                  int64_t s, int64_t e) {
    int64_t i = s;
    for (; i + 8 <= e; i += 8)
        _mm_storeu_si128((__m128i *)(out + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(in + i), _MM_FROUND_TO_NEAREST_INT));
    for (; i < e; i++) out[i] = kiln_f32_to_f16(in[i]);
}

static int have_f16c(void) {
    static _Atomic int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") && kiln_cpu_has_f16c();
    return cached;
}
#endif

/* estimated ns per converted value: vector F16C is about 0.1, the scalar routines about 0.5 */
#ifdef KVEC_AVX2
#define CVT_NS (have_f16c() ? 0.1 : 0.5)
#else
#define CVT_NS 0.5
#endif

static void cvt_run(void *arg, int64_t s, int64_t e) {
    const cvt_job *j = arg;
#ifdef KVEC_AVX2
    if (j->dtype == KILN_DTYPE_FLOAT16 && have_f16c()) {
        if (j->to_f32) f16_to_f32_f16c(j->src, j->dst, s, e);
        else f32_to_f16_f16c(j->src, j->dst, s, e);
        return;
    }
#endif
    if (j->to_f32) {
        const uint16_t *in = j->src;
        float *out = j->dst;
        if (j->dtype == KILN_DTYPE_FLOAT16)
            for (int64_t i = s; i < e; i++) out[i] = kiln_f16_to_f32(in[i]);
        else
            for (int64_t i = s; i < e; i++) out[i] = kiln_bf16_to_f32(in[i]);
    } else {
        const float *in = j->src;
        uint16_t *out = j->dst;
        if (j->dtype == KILN_DTYPE_FLOAT16)
            for (int64_t i = s; i < e; i++) out[i] = kiln_f32_to_f16(in[i]);
        else
            for (int64_t i = s; i < e; i++) out[i] = kiln_f32_to_bf16(in[i]);
    }
}

void kcvt_to_f32(kiln_ctx *ctx, int dtype, const void *src, float *dst, int64_t n) {
    cvt_job j = {dtype, 1, src, dst};
    if (ctx) kiln_parallel_for(ctx, n, kpar_grain(n, n * CVT_NS), cvt_run, &j);
    else cvt_run(&j, 0, n);
}

void kcvt_from_f32(kiln_ctx *ctx, int dtype, const float *src, void *dst, int64_t n) {
    cvt_job j = {dtype, 0, src, dst};
    if (ctx) kiln_parallel_for(ctx, n, kpar_grain(n, n * CVT_NS), cvt_run, &j);
    else cvt_run(&j, 0, n);
}

const char *kgemm_dims_str(int rank, const int64_t *dims, char *buf, size_t n) {
    size_t o = 0;
    if (n == 0) return buf;
    buf[0] = 0;
    o += snprintf(buf + o, n - o, "[");
    for (int i = 0; i < rank && o < n; i++) {
        if (dims[i] >= 0)
            o += snprintf(buf + o, n - o, "%s%lld", i ? "," : "", (long long)dims[i]);
        else
            o += snprintf(buf + o, n - o, "%s?", i ? "," : "");
    }
    if (o < n) snprintf(buf + o, n - o, "]");
    return buf;
}

/* The transposed-B half of both engines' pack_b_block: column c of the block is row j0 + c of
 * B, read along k, so there is nothing to vectorise on the load side. */
void kgemm_pack_bt_block(const float *B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
                         int64_t nc, float *dst) {
    const int64_t NR = KGEMM_NR;
    for (int64_t jp = 0; jp < nc; jp += NR) {
        int64_t cols = nc - jp < NR ? nc - jp : NR;
        float *d = dst + jp * kc;
        for (int64_t c = 0; c < cols; c++) {
            const float *src = B + (j0 + jp + c) * ldb + p0;
            for (int64_t k = 0; k < kc; k++) d[k * NR + c] = src[k];
        }
        for (int64_t c = cols; c < NR; c++)
            for (int64_t k = 0; k < kc; k++) d[k * NR + c] = 0.0f;
    }
}
