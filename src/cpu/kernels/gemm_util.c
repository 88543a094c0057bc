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
    if (kgemm_avx512_available() &&
        kgemm_sgemm_avx512(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc, NULL))
        return;
    cblas_sgemm(CblasRowMajor, ta ? CblasTrans : CblasNoTrans, tb ? CblasTrans : CblasNoTrans,
                (int)M, (int)N, (int)K, alpha, A, (int)lda, B, (int)ldb, beta, C, (int)ldc);
}

void kgemm_f32_serial_bias(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                           float *C, int64_t ldc, const float *row_bias) {
    if (row_bias && M > 1 && N > 1 && K > 0 && kgemm_avx512_available() &&
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

typedef struct split_job {
    int dtype, ta, tb, by_rows;
    int64_t M, N, K, lda, ldb, ldc, block, nblocks;
    double alpha, beta;
    const void *A, *B;
    void *C;
} split_job;

static void split_run(void *arg, int64_t b0, int64_t b1) {
    const split_job *j = arg;
    int64_t extent = j->by_rows ? j->M : j->N;
    int64_t s = b0 * j->block, e = b1 * j->block;
    if (e > extent) e = extent;
    if (s >= e) return;
    size_t es = j->dtype == KILN_DTYPE_DOUBLE ? 8 : 4;
    const char *A = j->A, *B = j->B;
    char *C = j->C;
    int64_t M = j->M, N = j->N;
    if (j->by_rows) {
        A += (size_t)(j->ta ? s : s * j->lda) * es;
        C += (size_t)(s * j->ldc) * es;
        M = e - s;
    } else {
        B += (size_t)(j->tb ? s * j->ldb : s) * es;
        C += (size_t)s * es;
        N = e - s;
    }
    if (j->dtype == KILN_DTYPE_DOUBLE)
        kgemm_f64_serial(j->ta, j->tb, M, N, j->K, j->alpha, (const double *)A, j->lda,
                         (const double *)B, j->ldb, j->beta, (double *)C, j->ldc);
    else
        kgemm_f32_serial(j->ta, j->tb, M, N, j->K, (float)j->alpha, (const float *)A, j->lda,
                         (const float *)B, j->ldb, (float)j->beta, (float *)C, j->ldc);
}

/* Below this many multiply-adds (about 40 us on one core) a product is not worth waking the
 * pool for. */
#define PAR_MIN_FLOPS (KPAR_SERIAL_NS * 100.0)

static void gemm_split(kiln_ctx *ctx, int dtype, int ta, int tb, int64_t M, int64_t N, int64_t K,
                       double alpha, const void *A, int64_t lda, const void *B, int64_t ldb,
                       double beta, void *C, int64_t ldc) {
    kgemm_blas_serial();
    int nt = kiln_num_threads(ctx);
    split_job j = {dtype, ta, tb, 0, M, N, K, lda, ldb, ldc, 0, 0, alpha, beta, A, B, C};
    if (nt <= 1 || (double)M * N * K < PAR_MIN_FLOPS || (M < 2 && N < 32)) {
        j.by_rows = 1;
        j.block = M;
        split_run(&j, 0, 1);
        return;
    }
    /* Split the longer side into one block per thread, columns in multiples of 16 so that each
     * block keeps BLAS's vector width; rows need no alignment. */
    j.by_rows = M >= N;
    int64_t extent = j.by_rows ? M : N, align = j.by_rows ? 1 : 16;
    int64_t block = (extent + nt - 1) / nt;
    block = (block + align - 1) / align * align;
    if (block < 1) block = 1;
    j.block = block;
    j.nblocks = (extent + block - 1) / block;
    kiln_parallel_for(ctx, j.nblocks, 1, split_run, &j);
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
    int ta, by_rows;
    int64_t M, N, K, lda, ldc, block;
    float alpha, beta;
    const float *A, *Bp;
    float *C;
} bp_job;

static void bp_run(void *arg, int64_t b0, int64_t b1) {
    const bp_job *j = arg;
    int64_t ext = j->by_rows ? j->M : j->N, s = b0 * j->block, e = b1 * j->block;
    if (e > ext) e = ext;
    if (s >= e) return;
    if (j->by_rows)
        kgemm_sgemm_avx512_bpacked(j->ta, e - s, j->N, j->K, j->alpha,
                                   j->A + (j->ta ? s : s * j->lda), j->lda, j->Bp, j->N, 0,
                                   j->beta, j->C + s * j->ldc, j->ldc);
    else
        kgemm_sgemm_avx512_bpacked(j->ta, j->M, e - s, j->K, j->alpha, j->A, j->lda, j->Bp, j->N, s,
                                   j->beta, j->C + s, j->ldc);
}

void kgemm_f32_bpacked(kiln_ctx *ctx, int ta, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *Bp, float beta, float *C,
                       int64_t ldc) {
    bp_job j = {ta, 1, M, N, K, lda, ldc, M, alpha, beta, A, Bp, C};
    int nt = kiln_num_threads(ctx);
    double macs = (double)M * N * K;
    if (nt <= 1 || macs < PAR_MIN_FLOPS || (M < 24 && N < 2 * KGEMM_NR)) {
        bp_run(&j, 0, 1);
        return;
    }
    /* B is packed already, so row blocks share it and pack only their own rows of A: cut them
     * small (a few per thread, whole 12-row panels) so that a thread that wakes late still
     * finds work. Few rows: split the columns instead, in whole 32-column panels. */
    j.by_rows = M >= 24;
    int64_t ext = j.by_rows ? M : N, align = j.by_rows ? KGEMM_MR : KGEMM_NR;
    int64_t pieces = j.by_rows ? 4 * nt : nt;
    int64_t block = (ext + pieces - 1) / pieces;
    block = (block + align - 1) / align * align;
    if (j.by_rows && block < 2 * KGEMM_MR) block = 2 * KGEMM_MR;
    j.block = block;
    kiln_parallel_for(ctx, (ext + block - 1) / block, 1, bp_run, &j);
}

/* ---- batches ---- */

static void batch_run(void *arg, int64_t i0, int64_t i1) {
    const kgemm_batch *b = arg;
    for (int64_t i = i0; i < i1; i++) {
        if (b->dtype == KILN_DTYPE_DOUBLE)
            kgemm_f64_serial(b->ta, b->tb, b->M, b->N, b->K, b->alpha,
                             (const double *)b->A + b->aoff[i], b->lda,
                             (const double *)b->B + b->boff[i], b->ldb, b->beta,
                             (double *)b->C + b->coff[i], b->ldc);
        else
            kgemm_f32_serial(b->ta, b->tb, b->M, b->N, b->K, (float)b->alpha,
                             (const float *)b->A + b->aoff[i], b->lda,
                             (const float *)b->B + b->boff[i], b->ldb, (float)b->beta,
                             (float *)b->C + b->coff[i], b->ldc);
    }
}

void kgemm_batched(kiln_ctx *ctx, const kgemm_batch *b) {
    kgemm_blas_serial();
    int nt = kiln_num_threads(ctx);
    if (b->count <= 0) return;
    double flops = (double)b->M * b->N * b->K;
    /* Whole products per thread balance well when the count divides evenly or is large. */
    if (nt > 1 && b->count > 1 &&
        (b->count % nt == 0 || b->count >= 4 * nt || flops < PAR_MIN_FLOPS)) {
        kiln_parallel_for(ctx, b->count, kpar_grain(b->count, flops * b->count / 100.0), batch_run,
                          (void *)b);
        return;
    }
    for (int64_t i = 0; i < b->count; i++) {
        const char *A = (const char *)b->A, *B = (const char *)b->B;
        char *C = b->C;
        size_t es = b->dtype == KILN_DTYPE_DOUBLE ? 8 : 4;
        gemm_split(ctx, b->dtype, b->ta, b->tb, b->M, b->N, b->K, b->alpha, A + b->aoff[i] * es,
                   b->lda, B + b->boff[i] * es, b->ldb, b->beta, C + b->coff[i] * es, b->ldc);
    }
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
