/* Matrix-product building blocks shared by the matmul, gemm, conv, einsum and linalg kernels:
 * BLAS calls spread over the session's threads, integer products, element-type conversions, and
 * the entry points of ops whose family table lives in another file. */
#ifndef KILN_GEMM_UTIL_H
#define KILN_GEMM_UTIL_H

#include "ops/op.h"
#include <stdint.h>

/* OpenBLAS keeps its own thread pool; kiln runs BLAS single-threaded inside its own pool instead,
 * so that two pools never fight over the cores. Call before any BLAS use (cheap when already so). */
void kgemm_blas_serial(void);

/* Row-major C = alpha * op(A) op(B) + beta * C, on the calling thread only. */
void kgemm_f32_serial(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                      int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
void kgemm_f64_serial(int ta, int tb, int64_t M, int64_t N, int64_t K, double alpha,
                      const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
                      double *C, int64_t ldc);
/* The same spread over ctx's threads (splits the larger of M and N). */
void kgemm_f32(kiln_ctx *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb, float beta, float *C,
               int64_t ldc);
void kgemm_f64(kiln_ctx *ctx, int ta, int tb, int64_t M, int64_t N, int64_t K, double alpha,
               const double *A, int64_t lda, const double *B, int64_t ldb, double beta,
               double *C, int64_t ldc);

/* A batch of equally shaped products C_i = alpha op(A_i) op(B_i) + beta C_i, where the i-th
 * operands start at element offsets aoff[i], boff[i], coff[i]. Runs whole products in parallel
 * when there are many small ones, otherwise splits each product. dtype: FLOAT or DOUBLE. */
typedef struct kgemm_batch {
    int dtype, ta, tb;
    int64_t M, N, K, lda, ldb, ldc;
    double alpha, beta;
    const void *A, *B;
    void *C;
    int64_t count;
    const int64_t *aoff, *boff, *coff;
} kgemm_batch;
void kgemm_batched(kiln_ctx *ctx, const kgemm_batch *b);

/* The packed sgemm engine (gemm_avx512.c's driver): AVX-512F kernels where the CPU has them,
 * else AVX2+FMA ones (gemm_avx2.c) with the same packed formats and epilogues, so the entry
 * points below keep their kgemm_*avx512* names on either. kgemm_packed_available() says whether
 * they run at all (callers that only use them check this); kgemm_avx512_available() stays the
 * check for code with AVX-512 intrinsics of its own. KILN_NO_AVX512=1 makes an AVX-512 machine
 * take the AVX2 kernels; KILN_NO_AVX2=1 turns the AVX2 engine off (the OpenBLAS fallback).
 * kgemm_sgemm_avx512 is used by kgemm_f32_serial where available; returns 0 when it could not
 * run (no buffers, no engine), leaving the work to the caller. */
int kgemm_avx512_available(void);
int kgemm_packed_available(void);
int kgemm_sgemm_avx512(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc, const float *row_bias);
/* A packed once for many products (a constant weight): kgemm_avx512_packed_size floats, filled
 * by kgemm_avx512_pack_a; the product then takes rows [i0, i0 + M) of the Mfull packed rows
 * (i0 a multiple of 12). Only where kgemm_packed_available(). */
#define KGEMM_MR 12  /* rows of a packed A panel */
#define KGEMM_KC 256 /* depth of a packed A block: block b holds k in [b*KC, b*KC + KC) for all
                      * rows, at b * KC * Mpad (Mpad = M rounded up to MR); row panel i0 of it
                      * (i0 a multiple of MR) at + i0 * kc, tap k of the panel at + k * MR */
int64_t kgemm_avx512_packed_size(int64_t M, int64_t K);
/* Where element (m, k) of an M x K matrix lies in kgemm_avx512_pack_a's layout (Mpad: M rounded
 * up to KGEMM_MR), for code that reads or writes packed operands itself (kgemm_packed_b_at, with
 * KGEMM_NR below, does the same for kgemm_avx512_pack_b's). */
static inline int64_t kgemm_packed_a_at(int64_t Mpad, int64_t K, int64_t m, int64_t k) {
    int64_t pc = k / KGEMM_KC * KGEMM_KC, kc = K - pc < KGEMM_KC ? K - pc : KGEMM_KC;
    return pc * Mpad + m / KGEMM_MR * KGEMM_MR * kc + (k - pc) * KGEMM_MR + m % KGEMM_MR;
}
void kgemm_avx512_pack_a(int ta, int64_t M, int64_t K, const float *A, int64_t lda, float *dst);
int kgemm_sgemm_avx512_packed(const float *Ap, int64_t Mfull, int64_t i0, int tb, int64_t M,
                              int64_t N, int64_t K, float alpha, const float *B, int64_t ldb,
                              float beta, float *C, int64_t ldc, const float *row_bias);
/* The same with B produced by a callback instead of read from memory (convolution packs its
 * im2col columns straight into the product's panel layout): pack_fn fills dst with rows
 * [p0, p0 + kc) x columns [j0, j0 + nc) of B as KGEMM_NR-column panels (panel q at
 * dst + q * KGEMM_NR * kc, row k of it at + k * KGEMM_NR, zero columns past nc). */
#define KGEMM_NR 32
/* element (k, j) of a K x N matrix in kgemm_avx512_pack_b's layout (Npad: N rounded up to NR) */
static inline int64_t kgemm_packed_b_at(int64_t K, int64_t Npad, int64_t k, int64_t j) {
    int64_t pc = k / KGEMM_KC * KGEMM_KC, kc = K - pc < KGEMM_KC ? K - pc : KGEMM_KC;
    return pc * Npad + j / KGEMM_NR * KGEMM_NR * kc + (k - pc) * KGEMM_NR + j % KGEMM_NR;
}
typedef void (*kgemm_pack_b_fn)(void *arg, int64_t p0, int64_t kc, int64_t j0, int64_t nc,
                                float *dst);
int kgemm_sgemm_avx512_packed_cb(const float *Ap, int64_t Mfull, int64_t i0, int64_t M, int64_t N,
                                 int64_t K, float alpha, kgemm_pack_b_fn pack_fn, void *pack_arg,
                                 float beta, float *C, int64_t ldc, const float *row_bias);
/* The same two with a fused epilogue in the store of the last K block, after the bias (a
 * convolution's residual and activation, without another pass over C): C += Z (z: the element
 * matching C's [0, 0], row stride ldz; NULL: none), then the activation, with kconv_apply_act's
 * semantics (NaN stays NaN). */
enum { KGEMM_EPI_NONE, KGEMM_EPI_RELU, KGEMM_EPI_CLIP, KGEMM_EPI_LEAKY, KGEMM_EPI_HSWISH };
typedef struct kgemm_epi {
    const float *z;
    int64_t ldz;
    int act;    /* KGEMM_EPI_* */
    float a, b; /* Clip's bounds; LeakyRelu's slope in a */
    /* Columns in runs (a convolution's images side by side in one product): column j lies in run
     * (phase + j) / period, and each run starts jump floats further on in C (and z) than the
     * column count alone says; a tile across a boundary splits its stores. period 0: one run;
     * else at least KGEMM_NR (a tile crosses one boundary at most). Applies at every K block. */
    int64_t period, phase, jump;
} kgemm_epi;
int kgemm_sgemm_avx512_packed_epi(const float *Ap, int64_t Mfull, int64_t i0, int tb, int64_t M,
                                  int64_t N, int64_t K, float alpha, const float *B, int64_t ldb,
                                  float beta, float *C, int64_t ldc, const float *row_bias,
                                  const kgemm_epi *ep);
int kgemm_sgemm_avx512_packed_cb_epi(const float *Ap, int64_t Mfull, int64_t i0, int64_t M,
                                     int64_t N, int64_t K, float alpha, kgemm_pack_b_fn pack_fn,
                                     void *pack_arg, float beta, float *C, int64_t ldc,
                                     const float *row_bias, const kgemm_epi *ep);
/* Both packed: A as for kgemm_sgemm_avx512_packed, B as KC-deep blocks of Npad columns in
 * KGEMM_NR-column panels (block at pc * Npad, panel of column j at + j * kc, as
 * kgemm_avx512_pack_b lays them out), of which columns [j0, j0 + N) are taken (j0 a multiple of
 * KGEMM_NR). Alpha 1, beta 0. */
int kgemm_sgemm_avx512_packed_ab_epi(const float *Ap, int64_t Mfull, int64_t i0, int64_t M,
                                     int64_t N, int64_t K, const float *Bp, int64_t Npad,
                                     int64_t j0, float *C, int64_t ldc, const float *row_bias,
                                     const kgemm_epi *ep);
/* B packed once (a constant weight): kgemm_avx512_packed_b_size floats filled by
 * kgemm_avx512_pack_b (tb: B stored [N, K]); the product then takes columns [j0, j0 + N) of the
 * Nfull packed columns (j0 a multiple of KGEMM_NR). */
int64_t kgemm_avx512_packed_b_size(int64_t K, int64_t N);
/* 64-byte aligned buffer for n packed floats (free with free()), NULL when out of memory. */
float *kgemm_alloc_packed(int64_t n);
void kgemm_avx512_pack_b(int tb, int64_t K, int64_t N, const float *B, int64_t ldb, float *dst);
int kgemm_sgemm_avx512_bpacked(int ta, int64_t M, int64_t N, int64_t K, float alpha,
                               const float *A, int64_t lda, const float *Bp, int64_t Nfull,
                               int64_t j0, float beta, float *C, int64_t ldc);
/* A float32 product whose B is packed (Bp from kgemm_avx512_pack_b, Nfull columns), spread
 * over ctx's threads in tiles of rows and columns. */
void kgemm_f32_bpacked(kiln_ctx *ctx, int ta, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *Bp, float beta, float *C,
                       int64_t ldc);
/* The same where each tile of C is first set by c_init(arg, r0, rows, c0, cols) (rows [r0, r0 +
 * rows), columns [c0, c0 + cols)) on the thread that then computes it, while the tile is in its
 * cache: Gemm's bias broadcast, which as a pass of its own over C cost a trip to memory. */
typedef void (*kgemm_tile_init_fn)(void *arg, int64_t r0, int64_t rows, int64_t c0, int64_t cols);
void kgemm_f32_bpacked_init(kiln_ctx *ctx, int ta, int64_t M, int64_t N, int64_t K, float alpha,
                            const float *A, int64_t lda, const float *Bp, float beta, float *C,
                            int64_t ldc, kgemm_tile_init_fn c_init, void *init_arg);
/* kgemm_f32_serial plus row_bias[i] added to every element of row i (NULL: none); K > 0. */
void kgemm_f32_serial_bias(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                           const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                           float *C, int64_t ldc, const float *row_bias);

/* The AVX2+FMA kernels the engine runs without AVX-512 (gemm_avx2.c; internal to the engine):
 * one register tile of packed A and B with gemm_avx512.c's store semantics, the same reading
 * rows of A in place (lda), and the packing of a block of B into KGEMM_NR-column panels. */
int kgemm_avx2_available(void);
/* B^T rows [j0, j0+nc) x cols [p0, p0+kc) into KGEMM_NR-column panels (zero columns past nc):
 * both engines' packing of a transposed B (plain C) */
void kgemm_pack_bt_block(const float *B, int64_t ldb, int64_t p0, int64_t kc, int64_t j0,
                         int64_t nc, float *dst);
void kgemm_avx2_tile(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                     float alpha, float beta, const float *bias, int mr, int nr,
                     const kgemm_epi *ep, const float *z, int split, int64_t jump);
void kgemm_avx2_tile_rows(int64_t kc, const float *A, int64_t lda, const float *Bp, float *C,
                          int64_t ldc, float alpha, float beta, int mr, int nr);
void kgemm_avx2_pack_b_block(int tb, const float *B, int64_t ldb, int64_t p0, int64_t kc,
                             int64_t j0, int64_t nc, float *dst);

/* Integer row-major C[M,N] = A[M,K] B[K,N] (strides given) for INT32/INT64/UINT32/UINT64, with
 * two's-complement wrap-around like the fixed-width arithmetic of other runtimes. */
int kgemm_int_supported(int dtype);
void kgemm_int(kiln_ctx *ctx, int dtype, int ta, int tb, int64_t M, int64_t N, int64_t K,
               const void *A, int64_t lda, const void *B, int64_t ldb, void *C, int64_t ldc);

/* Conversions between the 16-bit float types and float32 (parallel over ctx when large). */
void kcvt_to_f32(kiln_ctx *ctx, int dtype, const void *src, float *dst, int64_t n);
void kcvt_from_f32(kiln_ctx *ctx, int dtype, const float *src, void *dst, int64_t n);
static inline int kcvt_is_half(int dt) {
    return dt == KILN_DTYPE_FLOAT16 || dt == KILN_DTYPE_BFLOAT16;
}

/* Grain for kiln_parallel_for over n items whose serial run would take about est_ns: n (run on
 * the calling thread) below KPAR_SERIAL_NS, where handing work to the pool costs more than it
 * saves, else items enough for a few microseconds per chunk. 4 us since the caller spins for its
 * workers instead of sleeping (threadpool.c): MobileNetV3-small at 2 threads 1.41 -> 0.90 ms
 * against 40 us, as its mid-sized convs now split. */
#define KPAR_SERIAL_NS 4000.0
int64_t kpar_grain(int64_t n, double est_ns);

/* y[i] += b and y[i] += x[i], vectorised (the build's -O2 leaves such loops scalar). */
void kvec_add_scalar_f32(float *y, float b, int64_t n);
void kvec_add_f32(float *y, const float *x, int64_t n);

/* "[2,3,4]" into buf, for messages. */
const char *kgemm_dims_str(int rank, const int64_t *dims, char *buf, size_t n);

/* Helpers for shapes during static inference: dims may be unknown (< 0). */
static inline int kdim_known(int64_t d) { return d >= 0; }

/* Op entry points defined in gemm.c and listed in matmul.c's family table. */
kiln_status kgemm_op_infer(kiln_ctx *ctx);
kiln_status kgemm_op_compute(kiln_ctx *ctx);
kiln_status kgemm_op_init(kiln_ctx *ctx);
void kgemm_op_fini(void *state);

#endif
