/* Opt-in bfloat16 products for float32 models (kiln_options.cpu_bf16): operands rounded to
 * bfloat16, products summed in float32, outputs float32. The runtime takes it only where the CPU
 * has AVX512-BF16 (vdpbf16ps); where it also has AMX-BF16 the tile unit does the products
 * (KILN_NO_AMX=1 keeps it off). A constant weight is rounded and packed once at session open.
 *
 * Packed layouts (both zero-padded, so the kernels never test for edges inside a block):
 *   A: row-major bfloat16, Kp = K rounded up to KBF16_KALIGN per row, rows rounded up to
 *      KBF16_MALIGN (an AMX tile reads 16 rows of 32 values).
 *   B: panels of KBF16_NR columns, panel q at q * NR * Kp; inside a panel, k-pair p (rows 2p and
 *      2p + 1) at p * 2 * NR holds (b[2p][c], b[2p+1][c]) for c = 0..NR-1: the pair order
 *      vdpbf16ps and AMX's B tiles read. */
#ifndef KILN_GEMM_BF16_H
#define KILN_GEMM_BF16_H

#include "gemm_util.h"
#include <stdint.h>

#define KBF16_KALIGN 32
#define KBF16_MALIGN 32
#define KBF16_NR 32

/* The CPU can run the bfloat16 products (AVX-512F/BW and AVX512-BF16; KILN_NO_AVX512 says no). */
int kbf16_available(void);
/* The AMX-BF16 tile kernel will be used (present, permitted by the OS, KILN_NO_AMX unset). */
int kbf16_amx_active(void);
/* The node runs on the CPU of a session opened with cpu_bf16 on a CPU that can. */
int kbf16_on(const kiln_ctx *ctx);

int64_t kbf16_kpad(int64_t K);
/* uint16 counts of a packed A [M, K] and B [K, N]; 64-byte aligned storage from kbf16_alloc. */
int64_t kbf16_packed_a_size(int64_t M, int64_t K);
int64_t kbf16_packed_b_size(int64_t K, int64_t N);
uint16_t *kbf16_alloc(int64_t n);
/* op(A) [M, K] (ta: A stored [K, M]) and op(B) [K, N] (tb: B stored [N, K]) packed. */
void kbf16_pack_a(int ta, int64_t M, int64_t K, const float *A, int64_t lda, uint16_t *dst);
void kbf16_pack_b(int tb, int64_t K, int64_t N, const float *B, int64_t ldb, uint16_t *dst);

/* One operand of a product: packed (whole matrix packed by kbf16_pack_a/b, of which rows, or
 * columns, from off on are this product's: off a multiple of 32; full = the packed matrix's
 * K) or a float32 matrix (f, trans, ld) rounded while the product packs it. */
typedef struct kbf16_src {
    const uint16_t *packed;
    int64_t off;
    const float *f;
    int trans;
    int64_t ld;
} kbf16_src;

/* C [M, N] = alpha * op(A) op(B) + beta * C on the calling thread (beta 0 never reads C). Returns
 * 0 when the thread's packing buffers could not be allocated. */
int kbf16_gemm_serial(const kbf16_src *a, const kbf16_src *b, int64_t M, int64_t N, int64_t K,
                      float alpha, float beta, float *C, int64_t ldc);
/* The same spread over ctx's threads in tiles of rows and columns. */
kiln_status kbf16_gemm(kiln_ctx *ctx, const kbf16_src *a, const kbf16_src *b, int64_t M, int64_t N,
                       int64_t K, float alpha, float beta, float *C, int64_t ldc);
/* kgemm_batched's products (dtype FLOAT) in bfloat16. */
kiln_status kbf16_batched(kiln_ctx *ctx, const kgemm_batch *b);

/* MatMul-family helpers (matmul.c). kmm_pack_b_bf16: from init, the constant float32 2-D input 1
 * (op(B) = B, or B transposed with tb) packed into *dst, its data noted in *src (kiln_input_packed);
 * kmm_run_bf16: kmm_run_float's float32 products in bfloat16. */
struct kmm_plan_t;
kiln_status kmm_pack_b_bf16(kiln_ctx *ctx, int tb, const void **src, uint16_t **dst);
kiln_status kmm_run_bf16(kiln_ctx *ctx, const kiln_tensor *At, const kiln_tensor *Bt,
                         const struct kmm_plan_t *p, int ta, int tb, double alpha, const float *A,
                         const float *B, float *C);

#endif
