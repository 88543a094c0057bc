/* The 8-bit integer matrix product of qgemm.h: packing, the register kernels (AVX-512 VNNI,
 * AVX2 in qgemm_avx2.c, and portable), the parallel driver with its zero-point corrections, and
 * the requantising epilogues. */
#include "qgemm.h"
#include "gemm_util.h"
#include "qgemm_avx2.h"
#include "qgemm_amx.h"
#include "amx.h"
#include "quant_isa.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define KQG_X86 1
#include <immintrin.h>
#define VNNI __attribute__((target("avx512f,avx512bw,avx512vnni")))
#define AVX512 __attribute__((target("avx512f,avx512bw")))
#endif

#define MR 6         /* rows of a register tile */
#define MAXNP 4      /* panels (16 columns each) of a register tile */
#define MB 48        /* rows of a block handed to the epilogue */
#define NB (KQG_NR * MAXNP)

int kqg_have_vnni(void) {
    static int cached = -1;
    if (cached < 0) {
        int v = 0;
#ifdef KQG_X86
        __builtin_cpu_init();
        v = kq_use_avx512() && __builtin_cpu_supports("avx512vnni");
#endif
        cached = v;
    }
    return cached;
}

int kqg_have_avx2(void) {
    static int cached = -1;
    if (cached < 0) cached = !kqg_have_vnni() && kq_use_avx2();
    return cached;
}

/* The AVX-512 packing, correction and epilogue loops; KILN_NO_VNNI turns them off too, so that
 * the tests reach every portable loop, and KILN_NO_AVX512 so that they reach the AVX2 ones. */
static int have_avx512(void) { return kq_use_avx512(); }

/* ---- packing ---- */

kiln_status kqg_a_init(kiln_ctx *ctx, kqg_a *a, int64_t M, int64_t K) {
    memset(a, 0, sizeof *a);
    a->M = M;
    a->K = K;
    a->K4 = (K + 3) / 4;
    if (kqg_have_avx2()) a->wide = aligned_alloc(64, (size_t)((M * a->K4 * 8 + 63) / 64 * 64 + 64));
    else a->data = aligned_alloc(64, (size_t)((M * a->K4 * 4 + 63) / 64 * 64 + 64));
    a->rowsum = malloc(sizeof(int32_t) * (size_t)(M + 1));
    if (!(a->data || a->wide) || !a->rowsum) {
        kqg_a_free(a);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing an 8-bit matrix");
    }
    return KILN_OK;
}

void kqg_a_free(kqg_a *a) {
    free(a->data);
    free(a->wide);
    free(a->rowsum);
    a->data = NULL;
    a->wide = NULL;
    a->rowsum = NULL;
}

typedef struct pack_a_job {
    kqg_a *a;
    const uint8_t *src;
    int64_t lda;
    uint8_t flip;
} pack_a_job;

#ifdef KQG_X86
/* The same 64 bytes at a time; the sum of the (unsigned) stored bytes comes from vpsadbw. */
AVX512 static void pack_a_rows_avx512(const pack_a_job *j, int64_t r0, int64_t r1) {
    int64_t K = j->a->K, Kp = j->a->K4 * 4;
    const __m512i fl = _mm512_set1_epi8((char)j->flip), zero = _mm512_setzero_si512();
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *s = j->src + r * j->lda;
        uint8_t *d = j->a->data + r * Kp;
        __m512i sum = zero;
        for (int64_t k = 0; k < Kp; k += 64) {
            /* bytes past K load as 0 and store as 0 (the flip applies to real ones only) */
            __mmask64 in = K - k >= 64 ? ~(__mmask64)0 : K - k > 0 ? (((__mmask64)1 << (K - k)) - 1) : 0;
            __mmask64 out = Kp - k >= 64 ? ~(__mmask64)0 : (((__mmask64)1 << (Kp - k)) - 1);
            __m512i v = _mm512_maskz_mov_epi8(in, _mm512_xor_si512(_mm512_maskz_loadu_epi8(in, s + k), fl));
            _mm512_mask_storeu_epi8(d + k, out, v);
            sum = _mm512_add_epi64(sum, _mm512_sad_epu8(v, zero));
        }
        j->a->rowsum[r] = (int32_t)_mm512_reduce_add_epi64(sum);
    }
}
#endif

static void pack_a_rows(void *arg, int64_t r0, int64_t r1) {
    const pack_a_job *j = arg;
#ifdef KQG_X86
    if (kqg_have_avx2()) { /* before AVX-512: the AVX2 kernel reads the int16 copy only */
        int64_t Kp = j->a->K4 * 4;
        for (int64_t r = r0; r < r1; r++)
            j->a->rowsum[r] = kqg_avx2_pack_a_row(j->src + r * j->lda, j->a->K, Kp, j->flip, j->a->wide + r * Kp);
        return;
    }
    if (have_avx512()) {
        pack_a_rows_avx512(j, r0, r1);
        return;
    }
#endif
    int64_t K = j->a->K, Kp = j->a->K4 * 4;
    const uint8_t flip = j->flip;
    for (int64_t r = r0; r < r1; r++) {
        const uint8_t *s = j->src + r * j->lda;
        uint8_t *d = j->a->data + r * Kp;
        int32_t sum = 0;
        for (int64_t k = 0; k < K; k++) {
            uint8_t v = s[k] ^ flip;
            d[k] = v;
            sum += v;
        }
        for (int64_t k = K; k < Kp; k++) d[k] = 0;
        j->a->rowsum[r] = sum;
    }
}

void kqg_pack_a(kiln_ctx *ctx, kqg_a *a, int dt, const void *src, int64_t lda) {
    a->off = dt == KILN_DTYPE_INT8 ? 128 : 0;
    pack_a_job j = {a, src, lda, dt == KILN_DTYPE_INT8 ? 0x80 : 0};
    if (a->M > 0) kiln_parallel_for(ctx, a->M, kpar_grain(a->M, (double)a->M * a->K * 0.4), pack_a_rows, &j);
}

kiln_status kqg_b_init(kiln_ctx *ctx, kqg_b *b, int64_t K, int64_t N) {
    memset(b, 0, sizeof *b);
    b->K = K;
    b->N = N;
    b->K4 = (K + 3) / 4;
    b->np = (N + KQG_NR - 1) / KQG_NR;
    b->data = aligned_alloc(64, (size_t)(b->np * b->K4 * 64 + 64));
    if (kqg_have_avx2()) b->wide = aligned_alloc(64, (size_t)(b->np * b->K4 * 128 + 64));
    b->colsum = malloc(sizeof(int32_t) * (size_t)(b->np * KQG_NR + 1));
    if (!b->data || !b->colsum || (kqg_have_avx2() && !b->wide)) {
        kqg_b_free(b);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing an 8-bit matrix");
    }
    return KILN_OK;
}

void kqg_b_free(kqg_b *b) {
    free(b->data);
    free(b->wide);
    free(b->colsum);
    b->data = NULL;
    b->wide = NULL;
    b->colsum = NULL;
}

typedef struct pack_b_job {
    kqg_b *b;
    const uint8_t *src;
    int64_t ldb;
    int trans;
    uint8_t flip;
} pack_b_job;

/* Column sums of one packed panel: vpdpbusd of a vector of ones with each 4-row group. */
#ifdef KQG_X86
VNNI static void panel_colsum_vnni(const int8_t *p, int64_t K4, int32_t *cs) {
    __m512i acc = _mm512_setzero_si512(), ones = _mm512_set1_epi8(1);
    for (int64_t k = 0; k < K4; k++)
        acc = _mm512_dpbusd_epi32(acc, ones, _mm512_load_si512((const void *)(p + k * 64)));
    _mm512_storeu_si512((void *)cs, acc);
}
#endif

static void panel_colsum(const int8_t *p, int64_t K4, int32_t *cs) {
#ifdef KQG_X86
    if (kqg_have_vnni()) {
        panel_colsum_vnni(p, K4, cs);
        return;
    }
#endif
    for (int j = 0; j < KQG_NR; j++) cs[j] = 0;
    for (int64_t k = 0; k < K4; k++)
        for (int j = 0; j < KQG_NR; j++)
            cs[j] += p[k * 64 + j * 4] + p[k * 64 + j * 4 + 1] + p[k * 64 + j * 4 + 2] + p[k * 64 + j * 4 + 3];
}

static void pack_b_panels(void *arg, int64_t q0, int64_t q1) {
    const pack_b_job *j = arg;
    const kqg_b *b = j->b;
    int64_t K = b->K, N = b->N, K4 = b->K4, ldb = j->ldb;
    const uint8_t flip = j->flip;
    for (int64_t q = q0; q < q1; q++) {
        uint8_t *d = (uint8_t *)b->data + q * K4 * 64;
        int64_t n0 = q * KQG_NR, nc = N - n0 < KQG_NR ? N - n0 : KQG_NR;
#ifdef KQG_X86
        if (b->wide && !j->trans) { /* the AVX2 kernel reads only the int16 copy */
            kqg_avx2_pack_b_panel(j->src + n0, ldb, K, K4, (int)nc, flip, b->wide + q * K4 * 64, b->colsum + n0);
            continue;
        }
#endif
        int64_t k4 = 0;
#if defined(KQG_X86) && defined(__SSE2__)
        if (!j->trans && nc == KQG_NR) { /* four rows of 16 columns -> 16 columns of 4 rows */
            const __m128i fl = _mm_set1_epi8((char)flip);
            for (; k4 < K / 4; k4++) {
                const uint8_t *s = j->src + 4 * k4 * ldb + n0;
                __m128i r0 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)s), fl);
                __m128i r1 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + ldb)), fl);
                __m128i r2 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + 2 * ldb)), fl);
                __m128i r3 = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(s + 3 * ldb)), fl);
                __m128i lo01 = _mm_unpacklo_epi8(r0, r1), hi01 = _mm_unpackhi_epi8(r0, r1);
                __m128i lo23 = _mm_unpacklo_epi8(r2, r3), hi23 = _mm_unpackhi_epi8(r2, r3);
                __m128i *o = (__m128i *)(d + k4 * 64);
                _mm_store_si128(o, _mm_unpacklo_epi16(lo01, lo23));
                _mm_store_si128(o + 1, _mm_unpackhi_epi16(lo01, lo23));
                _mm_store_si128(o + 2, _mm_unpacklo_epi16(hi01, hi23));
                _mm_store_si128(o + 3, _mm_unpackhi_epi16(hi01, hi23));
            }
        }
#endif
        for (; k4 < K4; k4++)
            for (int c = 0; c < KQG_NR; c++)
                for (int t = 0; t < 4; t++) {
                    int64_t k = 4 * k4 + t, n = n0 + c;
                    uint8_t v = 0;
                    if (k < K && c < nc) v = (j->trans ? j->src[n * ldb + k] : j->src[k * ldb + n]) ^ flip;
                    d[k4 * 64 + c * 4 + t] = v;
                }
#ifdef KQG_X86
        if (b->wide) { /* widened while the panel is still in cache */
            kqg_avx2_widen_panel((const int8_t *)d, K4, b->wide + q * K4 * 64, b->colsum + n0);
            continue;
        }
#endif
        panel_colsum((const int8_t *)d, K4, b->colsum + n0);
    }
}

void kqg_pack_b(kiln_ctx *ctx, kqg_b *b, int dt, const void *src, int64_t ldb, int trans) {
    b->off = dt == KILN_DTYPE_UINT8 ? 128 : 0;
    pack_b_job j = {b, src, ldb, trans, dt == KILN_DTYPE_UINT8 ? 0x80 : 0};
    if (b->np > 0)
        kiln_parallel_for(ctx, b->np, kpar_grain(b->np, (double)b->np * b->K4 * 64 * 0.3), pack_b_panels, &j);
}

/* ---- register kernels: c[i * ldc + j] = dot(row i of a, column j of the np panels) ---- */

typedef void (*ukr_fn)(int64_t K4, const uint8_t *a, int64_t lda, const int8_t *b, int64_t ps,
                       int32_t *c, int64_t ldc);

#ifdef KQG_X86
static inline __attribute__((always_inline)) VNNI void
ukr_body(const int mr, const int np, int64_t K4, const uint8_t *a, int64_t lda, const int8_t *b,
         int64_t ps, int32_t *c, int64_t ldc) {
    __m512i acc[MR][MAXNP];
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int q = 0; q < np; q++) acc[i][q] = _mm512_setzero_si512();
    for (int64_t k = 0; k < K4; k++) {
        __m512i bv[MAXNP];
#pragma GCC unroll 4
        for (int q = 0; q < np; q++) bv[q] = _mm512_load_si512((const void *)(b + q * ps + k * 64));
#pragma GCC unroll 8
        for (int i = 0; i < mr; i++) {
            int32_t w;
            memcpy(&w, a + i * lda + k * 4, 4);
            __m512i av = _mm512_set1_epi32(w);
#pragma GCC unroll 4
            for (int q = 0; q < np; q++) acc[i][q] = _mm512_dpbusd_epi32(acc[i][q], av, bv[q]);
        }
    }
#pragma GCC unroll 8
    for (int i = 0; i < mr; i++)
#pragma GCC unroll 4
        for (int q = 0; q < np; q++) _mm512_storeu_si512((void *)(c + i * ldc + q * 16), acc[i][q]);
}

#define UKR(m, p)                                                                                   \
    VNNI static void ukr_##m##_##p(int64_t K4, const uint8_t *a, int64_t lda, const int8_t *b,      \
                                   int64_t ps, int32_t *c, int64_t ldc) {                           \
        ukr_body(m, p, K4, a, lda, b, ps, c, ldc);                                                  \
    }
#define UKR_ROW(m) UKR(m, 1) UKR(m, 2) UKR(m, 3) UKR(m, 4)
UKR_ROW(1) UKR_ROW(2) UKR_ROW(3) UKR_ROW(4) UKR_ROW(5) UKR_ROW(6)
#define UKR_REF(m) {ukr_##m##_1, ukr_##m##_2, ukr_##m##_3, ukr_##m##_4}
static const ukr_fn ukr_vnni[MR][MAXNP] = {UKR_REF(1), UKR_REF(2), UKR_REF(3),
                                            UKR_REF(4), UKR_REF(5), UKR_REF(6)};
#endif

static void ukr_portable(int mr, int np, int64_t K4, const uint8_t *a, int64_t lda, const int8_t *b,
                         int64_t ps, int32_t *c, int64_t ldc) {
    for (int i = 0; i < mr; i++)
        for (int q = 0; q < np; q++)
            for (int j = 0; j < KQG_NR; j++) {
                uint32_t s = 0;
                const uint8_t *ar = a + i * lda;
                const int8_t *bp = b + q * ps + j * 4;
                for (int64_t k = 0; k < K4; k++)
                    for (int t = 0; t < 4; t++) s += (uint32_t)((int32_t)ar[k * 4 + t] * bp[k * 64 + t]);
                c[i * ldc + q * KQG_NR + j] = (int32_t)s;
            }
}

/* ---- driver ---- */

/* row[c] += colterm[c] - zb[c] * rs modulo 2^32 (zb NULL: all zero) */
#ifdef KQG_X86
AVX512 static void correct_row_avx512(int32_t *row, int64_t n, const uint32_t *colterm, const uint32_t *zb,
                                      uint32_t rs) {
    const __m512i vr = _mm512_set1_epi32((int32_t)rs);
    for (int64_t c = 0; c < n; c += 16) {
        __mmask16 m = n - c >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - c)) - 1u);
        __m512i v = _mm512_add_epi32(_mm512_maskz_loadu_epi32(m, row + c), _mm512_maskz_loadu_epi32(m, colterm + c));
        if (zb) v = _mm512_sub_epi32(v, _mm512_mullo_epi32(_mm512_maskz_loadu_epi32(m, zb + c), vr));
        _mm512_mask_storeu_epi32(row + c, m, v);
    }
}
#endif

static void correct_row(int32_t *row, int64_t n, const uint32_t *colterm, const uint32_t *zb, uint32_t rs) {
#ifdef KQG_X86
    if (have_avx512()) {
        correct_row_avx512(row, n, colterm, zb, rs);
        return;
    }
    if (kq_use_avx2()) {
        kqg_avx2_correct_row(row, n, colterm, zb, rs);
        return;
    }
#endif
    for (int64_t c = 0; c < n; c++)
        row[c] = (int32_t)((uint32_t)row[c] + colterm[c] - (zb ? zb[c] * rs : 0u));
}

typedef struct gemm_job {
    const kqg_a *a;
    const kqg_b *b;
    const int32_t *za, *zb;
    int za_rows, zb_cols, vnni, avx2, amx;
    kqg_epi_fn epi;
    void *arg;
    int64_t nmb; /* row blocks per column block */
} gemm_job;

static void gemm_blocks(void *arg, int64_t t0, int64_t t1) {
    const gemm_job *j = arg;
    const kqg_a *A = j->a;
    const kqg_b *B = j->b;
    if (j->amx) kamx_load_16x64();
    _Alignas(64) int32_t tile[MB * NB];
    uint32_t zbv[NB], csv[NB], colterm[NB];
    int64_t lda = A->K4 * 4, ps = B->K4 * 64;
    uint32_t K = (uint32_t)A->K;
    for (int64_t t = t0; t < t1; t++) {
        int64_t nbk = t / j->nmb, mbk = t % j->nmb;
        int64_t m0 = mbk * MB, n0 = nbk * NB;
        int64_t mc = A->M - m0 < MB ? A->M - m0 : MB, nc = B->N - n0 < NB ? B->N - n0 : NB;
        int np = (int)((nc + KQG_NR - 1) / KQG_NR);
        const int8_t *bp = B->data + (n0 / KQG_NR) * ps;
#ifdef KQG_X86
        /* panel by panel, so that one panel of int16 B stays in L1 over the block's rows */
        for (int q = 0; j->avx2 && q < np; q++)
            for (int64_t i = 0; i < mc; i += KQG_AVX2_MR) {
                int mr = mc - i < KQG_AVX2_MR ? (int)(mc - i) : KQG_AVX2_MR;
                kqg_avx2_tile(mr, A->K4 * 2, A->wide + (m0 + i) * lda, lda, B->wide + (n0 / KQG_NR + q) * ps,
                              tile + i * NB + q * KQG_NR, NB);
            }
#endif
        int64_t i0 = 0; /* rows the tile unit did */
        if (j->amx) {
            for (; i0 + 16 <= mc; i0 += mc - i0 >= 32 ? 32 : 16)
                for (int q = 0; q < np; q += 2)
                    kqg_amx_block(mc - i0 >= 32 ? 32 : 16, np - q >= 2 ? 2 : 1, A->K4,
                                  A->data + (m0 + i0) * lda, lda, bp + q * ps, ps,
                                  tile + i0 * NB + q * KQG_NR, NB);
        }
        for (int64_t i = i0; i < mc && !j->avx2; i += MR) {
            int mr = mc - i < MR ? (int)(mc - i) : MR;
            const uint8_t *ap = A->data + (m0 + i) * lda;
#ifdef KQG_X86
            if (j->vnni) {
                ukr_vnni[mr - 1][np - 1](A->K4, ap, lda, bp, ps, tile + i * NB, NB);
                continue;
            }
#endif
            ukr_portable(mr, np, A->K4, ap, lda, bp, ps, tile + i * NB, NB);
        }
        /* zero-point corrections, see qgemm.h: acc += colterm[c] - ZB[c] rowsum, with
         * colterm[c] = K ZA ZB[c] - ZA colsum[c] (per row when za is) */
        int any_zb = 0;
        for (int64_t c = 0; c < nc; c++) {
            zbv[c] = (uint32_t)(j->zb ? j->zb[j->zb_cols ? n0 + c : 0] : 0) - (uint32_t)B->off;
            csv[c] = (uint32_t)B->colsum[n0 + c];
            any_zb |= zbv[c] != 0;
        }
        uint32_t za_prev = 0;
        int have_colterm = 0;
        for (int64_t i = 0; i < mc; i++) {
            uint32_t ZA = (uint32_t)(j->za ? j->za[j->za_rows ? m0 + i : 0] : 0) + (uint32_t)A->off;
            if (ZA == 0 && !any_zb) continue;
            if (!have_colterm || ZA != za_prev) {
                for (int64_t c = 0; c < nc; c++) colterm[c] = K * ZA * zbv[c] - ZA * csv[c];
                za_prev = ZA;
                have_colterm = 1;
            }
            correct_row(tile + i * NB, nc, colterm, any_zb ? zbv : NULL, (uint32_t)A->rowsum[m0 + i]);
        }
        j->epi(j->arg, m0, n0, mc, nc, tile, NB);
    }
    if (j->amx) kamx_release();
}

void kqg_gemm(kiln_ctx *ctx, const kqg_a *a, const kqg_b *b, const int32_t *za, int za_rows,
              const int32_t *zb, int zb_cols, kqg_epi_fn epi, void *arg) {
    if (a->M <= 0 || b->N <= 0) return;
    int vnni = kqg_have_vnni();
    gemm_job j = {a, b, za, zb, za_rows, zb_cols, vnni, kqg_have_avx2(), vnni && kqg_have_amx(),
                  epi, arg, (a->M + MB - 1) / MB};
    int64_t nnb = (b->N + NB - 1) / NB, tasks = nnb * j.nmb;
    /* about 100 multiply-adds per ns with VNNI on one core, 30 with AVX2, 2 portable */
    double ns = (double)a->M * (double)b->N * (double)(a->K4 * 4) / (j.vnni ? 100.0 : j.avx2 ? 30.0 : 2.0);
    kiln_parallel_for(ctx, tasks, kpar_grain(tasks, ns), gemm_blocks, &j);
}

/* A's stored rows are w + off (qgemm.h), widened; so sum_k (w - za)(x - xz) =
 * sum_k stored * (x - xz) - (za + off) * sum_k (x - xz), all modulo 2^32 like the tiles. */
int kqg_gemv(kiln_ctx *ctx, const kqg_a *a, const int32_t *za, int za_rows, int xdt, const void *x,
             int32_t xz, kqg_epi_fn epi, void *arg) {
    if (!kqg_have_avx2() || !a->wide) return 0;
    int64_t Kp = a->K4 * 4, Kv = (Kp + 15) / 16 * 16, M = a->M;
    int16_t *xd = calloc((size_t)Kv, sizeof(int16_t));
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)(M + 1));
    if (!xd || !acc) {
        free(xd);
        free(acc);
        KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for an 8-bit product");
        return -1;
    }
    uint32_t xsum = 0;
    for (int64_t k = 0; k < a->K; k++) {
        int32_t v = (xdt == KILN_DTYPE_INT8 ? (int32_t)((const int8_t *)x)[k] : (int32_t)((const uint8_t *)x)[k]) - xz;
        xd[k] = (int16_t)v;
        xsum += (uint32_t)v;
    }
#ifdef KQG_X86
    kqg_avx2_gemv(a->wide, M, Kp, xd, acc);
#endif
    for (int64_t m = 0; m < M; m++) {
        uint32_t z = (uint32_t)(za ? za[za_rows ? m : 0] : 0) + (uint32_t)a->off;
        acc[m] = (int32_t)((uint32_t)acc[m] - z * xsum);
    }
    epi(arg, 0, 0, M, 1, acc, 1);
    free(xd);
    free(acc);
    return 1;
}

/* ---- epilogues ---- */

static inline int32_t requant1(int32_t acc, int32_t bias, float scale, float lo, float hi, int32_t zp) {
    float r = (float)(int32_t)((uint32_t)acc + (uint32_t)bias) * scale;
    r = r > lo ? r : lo;
    r = r < hi ? r : hi;
    return (int32_t)rintf(r) + zp;
}

#ifdef KQG_X86
AVX512 static void requant_row_avx512(const int32_t *acc, int64_t n, const float *scale_v,
                                      float scale_s, const int32_t *bias_v, int32_t bias_s,
                                      int32_t zp, int is_s8, void *y, float lo, float hi) {
    const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi), vs = _mm512_set1_ps(scale_s);
    const __m512i vb = _mm512_set1_epi32(bias_s), vz = _mm512_set1_epi32(zp);
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m512i v = _mm512_maskz_loadu_epi32(m, acc + j);
        v = _mm512_add_epi32(v, bias_v ? _mm512_maskz_loadu_epi32(m, bias_v + j) : vb);
        __m512 s = scale_v ? _mm512_maskz_loadu_ps(m, scale_v + j) : vs;
        __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(v), s);
        f = _mm512_min_ps(_mm512_max_ps(f, vlo), vhi); /* max(NaN, lo) = lo, as MAXPS */
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(f), vz);
        if (is_s8) _mm512_mask_cvtepi32_storeu_epi8((int8_t *)y + j, m, q);
        else _mm512_mask_cvtepi32_storeu_epi8((uint8_t *)y + j, m, q);
    }
}

AVX512 static void scale_row_avx512(const int32_t *acc, int64_t n, const float *scale_v, float scale_s,
                                    const float *bias_v, float *y) {
    const __m512 vs = _mm512_set1_ps(scale_s);
    for (int64_t j = 0; j < n; j += 16) {
        __mmask16 m = n - j >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - j)) - 1u);
        __m512 s = scale_v ? _mm512_maskz_loadu_ps(m, scale_v + j) : vs;
        __m512 f = _mm512_mul_ps(_mm512_cvtepi32_ps(_mm512_maskz_loadu_epi32(m, acc + j)), s);
        if (bias_v) f = _mm512_add_ps(f, _mm512_maskz_loadu_ps(m, bias_v + j));
        _mm512_mask_storeu_ps(y + j, m, f);
    }
}
#endif

void kqg_requant_row(const int32_t *acc, int64_t n, const float *scale_v, float scale_s,
                     const int32_t *bias_v, int32_t bias_s, int32_t zp, int dt, void *y) {
    int s8 = dt == KILN_DTYPE_INT8;
    float lo = (float)((s8 ? -128 : 0) - zp), hi = (float)((s8 ? 127 : 255) - zp);
#ifdef KQG_X86
    if (have_avx512()) {
        requant_row_avx512(acc, n, scale_v, scale_s, bias_v, bias_s, zp, s8, y, lo, hi);
        return;
    }
    if (kq_use_avx2()) {
        kqg_avx2_requant_row(acc, n, scale_v, scale_s, bias_v, bias_s, zp, s8, y, lo, hi);
        return;
    }
#endif
    for (int64_t j = 0; j < n; j++) {
        int32_t q = requant1(acc[j], bias_v ? bias_v[j] : bias_s, scale_v ? scale_v[j] : scale_s, lo, hi, zp);
        if (s8) ((int8_t *)y)[j] = (int8_t)q;
        else ((uint8_t *)y)[j] = (uint8_t)q;
    }
}

void kqg_scale_row(const int32_t *acc, int64_t n, const float *scale_v, float scale_s,
                   const float *bias_v, float *y) {
#ifdef KQG_X86
    if (have_avx512()) {
        scale_row_avx512(acc, n, scale_v, scale_s, bias_v, y);
        return;
    }
    if (kq_use_avx2()) {
        kqg_avx2_scale_row(acc, n, scale_v, scale_s, bias_v, y);
        return;
    }
#endif
    for (int64_t j = 0; j < n; j++) {
        float v = (float)acc[j] * (scale_v ? scale_v[j] : scale_s);
        y[j] = bias_v ? v + bias_v[j] : v;
    }
}
