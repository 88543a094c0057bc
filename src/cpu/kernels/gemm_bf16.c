/* bfloat16 products with float32 sums (gemm_bf16.h). Blocking like gemm_avx512.c: a KC-deep slice
 * of an NC-wide block of B in 32-column panels, an MC-high block of A, and either a 12 x 32
 * register tile of vdpbf16ps (each instruction adds two k-steps into 16 float sums) or, with AMX,
 * a 32 x 32 block of four 16 x 16 tiles. Every output element sums its K in the same order
 * whatever the blocking of rows and columns, so results do not depend on the thread count. */
#include "gemm_bf16.h"
#include "amx.h"
#include "../cpu_provider.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define KBF16_X86 1
#endif

#define NR KBF16_NR
#define MR 12
#define KC 256  /* k per slice: a panel's slice is 16 KB */
#define MC 96   /* rows per A block, a multiple of 32 for AMX */
#define NC 1024 /* columns per B block (512 KB packed) */

int64_t kbf16_kpad(int64_t K) { return (K + KBF16_KALIGN - 1) / KBF16_KALIGN * KBF16_KALIGN; }

int64_t kbf16_packed_a_size(int64_t M, int64_t K) {
    return (M + KBF16_MALIGN - 1) / KBF16_MALIGN * KBF16_MALIGN * kbf16_kpad(K);
}

int64_t kbf16_packed_b_size(int64_t K, int64_t N) { return (N + NR - 1) / NR * NR * kbf16_kpad(K); }

uint16_t *kbf16_alloc(int64_t n) {
    size_t bytes = (sizeof(uint16_t) * (size_t)(n > 0 ? n : 1) + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes);
}

int kbf16_on(const kiln_ctx *ctx) {
    return ctx && ctx->ep && kiln_cpu_provider_bf16(ctx->ep) && kbf16_available();
}

#ifdef KBF16_X86

static int env_set(const char *name) {
    const char *v = getenv(name);
    return v && *v && *v != '0';
}

int kbf16_available(void) {
    static _Atomic int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bf16") && !env_set("KILN_NO_AVX512");
    }
    return cached;
}

int kbf16_amx_active(void) {
    static _Atomic int cached = -1;
    if (cached < 0) {
        cached = kbf16_available() && kamx_usable(KAMX_BF16);
    }
    return cached;
}

/* ---- rounding to bfloat16 ---- */

/* Every conversion goes through vcvtneps2bf16 (round to nearest even), so a value rounds the
 * same whichever packing routine meets it. */
#define BF16_TARGET __attribute__((target("avx512f,avx512bw,avx512vl,avx512bf16")))

BF16_TARGET static inline __m256i cvt16(__m512 v) { return (__m256i)_mm512_cvtneps_pbh(v); }

static inline __mmask16 mask16(int64_t n) {
    return (__mmask16)(n >= 16 ? 0xffff : (1u << (n > 0 ? n : 0)) - 1);
}

/* n floats of a contiguous row into bf16 */
BF16_TARGET static void cvt_row(const float *src, uint16_t *dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm256_storeu_si256((__m256i *)(dst + i), cvt16(_mm512_loadu_ps(src + i)));
    if (i < n) {
        __mmask16 m = mask16(n - i);
        _mm256_mask_storeu_epi16(dst + i, m, cvt16(_mm512_maskz_loadu_ps(m, src + i)));
    }
}

/* n floats at stride s into bf16 (a column of a row-major matrix) */
BF16_TARGET static void cvt_strided(const float *src, int64_t s, uint16_t *dst, int64_t n) {
    float tmp[16];
    for (int64_t i = 0; i < n; i += 16) {
        int64_t c = n - i < 16 ? n - i : 16;
        for (int64_t t = 0; t < c; t++) tmp[t] = src[(i + t) * s];
        __mmask16 m = mask16(c);
        _mm256_mask_storeu_epi16(dst + i, m, cvt16(_mm512_maskz_loadu_ps(m, tmp)));
    }
}

/* Rows [r0, r0 + mr) x k [p0, p0 + kc) of op(A) into row-major bf16 of row stride ld, zero from
 * column kc to ld and for rows mr..mpad-1. */
BF16_TARGET static void pack_a_rows(int ta, const float *A, int64_t lda, int64_t r0, int64_t mr,
                                    int64_t mpad, int64_t p0, int64_t kc, uint16_t *dst, int64_t ld) {
    for (int64_t r = 0; r < mr; r++) {
        uint16_t *d = dst + r * ld;
        if (!ta) cvt_row(A + (r0 + r) * lda + p0, d, kc);
        else cvt_strided(A + p0 * lda + r0 + r, lda, d, kc);
        memset(d + kc, 0, sizeof(uint16_t) * (size_t)(ld - kc));
    }
    for (int64_t r = mr; r < mpad; r++) memset(dst + r * ld, 0, sizeof(uint16_t) * (size_t)ld);
}

/* Rows [p0, p0 + kc) x columns [j0, j0 + nc) of op(B) into panels of npair = kcp / 2 k-pairs
 * (panel q at dst + q * NR * kcp), zero past kc and nc. */
BF16_TARGET static void pack_b_panels(int tb, const float *B, int64_t ldb, int64_t p0, int64_t kc,
                                      int64_t kcp, int64_t j0, int64_t nc, uint16_t *dst) {
    /* interleaves two converted rows: result word 2c is row 0's column c, 2c + 1 row 1's */
    const __m512i perm = _mm512_set_epi16(31, 15, 30, 14, 29, 13, 28, 12, 27, 11, 26, 10, 25, 9,
                                          24, 8, 23, 7, 22, 6, 21, 5, 20, 4, 19, 3, 18, 2, 17, 1,
                                          16, 0);
    int64_t npair = kcp / 2;
    for (int64_t jp = 0; jp < nc; jp += NR) {
        int64_t cols = nc - jp < NR ? nc - jp : NR;
        uint16_t *d = dst + jp * kcp;
        if (!tb) {
            for (int64_t p = 0; p < npair; p++) {
                int64_t k0 = 2 * p, k1 = 2 * p + 1;
                for (int h = 0; h < 2; h++) {
                    int64_t c0 = h * 16, c = cols - c0;
                    __mmask16 m = mask16(c);
                    __m512 r0 = _mm512_setzero_ps(), r1 = _mm512_setzero_ps();
                    const float *src = B + j0 + jp + c0;
                    if (c > 0 && k0 < kc) r0 = _mm512_maskz_loadu_ps(m, src + (p0 + k0) * ldb);
                    if (c > 0 && k1 < kc) r1 = _mm512_maskz_loadu_ps(m, src + (p0 + k1) * ldb);
                    __m512i two = (__m512i)_mm512_cvtne2ps_pbh(r1, r0); /* low: r0, high: r1 */
                    _mm512_storeu_si512(d + p * 2 * NR + h * 32, _mm512_permutexvar_epi16(perm, two));
                }
            }
        } else {
            /* a column of op(B) is a row of B: its consecutive k values are already the pairs */
            uint16_t row[KC + 32];
            uint32_t *d32 = (uint32_t *)d;
            for (int64_t c = 0; c < NR; c++) {
                if (c < cols) {
                    cvt_row(B + (j0 + jp + c) * ldb + p0, row, kc);
                    memset(row + kc, 0, sizeof(uint16_t) * (size_t)(kcp - kc));
                } else {
                    memset(row, 0, sizeof(uint16_t) * (size_t)kcp);
                }
                for (int64_t p = 0; p < npair; p++)
                    d32[p * NR + c] = (uint32_t)row[2 * p] | (uint32_t)row[2 * p + 1] << 16;
            }
        }
    }
}

/* ---- AVX512-BF16 register kernels ---- */

/* C[0..mr, 0..nr) = alpha * acc + beta * C */
__attribute__((target("avx512f"))) static inline void store_rows(__m512 (*acc)[2], int mr, int nr,
                                                                 float *C, int64_t ldc,
                                                                 float alpha, float beta) {
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 m0 = mask16(nr), m1 = mask16(nr - 16);
    for (int r = 0; r < mr; r++) {
        float *c = C + r * ldc;
        __m512 x = _mm512_mul_ps(acc[r][0], va), y = _mm512_mul_ps(acc[r][1], va);
        if (beta != 0.0f) {
            x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, c), x);
            y = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16), y);
        }
        _mm512_mask_storeu_ps(c, m0, x);
        _mm512_mask_storeu_ps(c + 16, m1, y);
    }
}

/* A rows as 32-bit k-pairs (lda in pairs); rows past mr read row mr - 1 again (never stored). */
#define BROW(i) const uint32_t *r##i = A + (int64_t)((i) < mr ? (i) : mr - 1) * lda;
#define BACC(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = _mm512_setzero_ps();
#define BSTEP(i)                                                                                   \
    a = (__m512bh)_mm512_set1_epi32((int)r##i[p]);                                                 \
    c##i##a = _mm512_dpbf16_ps(c##i##a, a, b0);                                                    \
    c##i##b = _mm512_dpbf16_ps(c##i##b, a, b1);
#define BSAVE(i) acc[i][0] = c##i##a; acc[i][1] = c##i##b;
#define DEFINE_BKERNEL(NAME, ROWS, FOR_ROWS)                                                       \
    BF16_TARGET static void NAME(int64_t npair, const uint32_t *A, int64_t lda,                    \
                                 const uint16_t *Bp, float *C, int64_t ldc, float alpha,           \
                                 float beta, int mr, int nr) {                                     \
        FOR_ROWS(BROW)                                                                             \
        FOR_ROWS(BACC)                                                                             \
        for (int64_t p = 0; p < npair; p++) {                                                      \
            __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp);                                        \
            __m512bh b1 = (__m512bh)_mm512_loadu_si512(Bp + 32), a;                                \
            _mm_prefetch((const char *)(Bp + 8 * 2 * NR), _MM_HINT_T0);                           \
            FOR_ROWS(BSTEP)                                                                        \
            Bp += 2 * NR;                                                                          \
        }                                                                                          \
        __m512 acc[ROWS][2];                                                                       \
        FOR_ROWS(BSAVE)                                                                            \
        store_rows(acc, mr, nr, C, ldc, alpha, beta);                                              \
    }
#define BR1(X) X(0)
#define BR4(X) X(0) X(1) X(2) X(3)
#define BR8(X) BR4(X) X(4) X(5) X(6) X(7)
#define BR12(X) BR8(X) X(8) X(9) X(10) X(11)
DEFINE_BKERNEL(bkernel_12, 12, BR12)
DEFINE_BKERNEL(bkernel_8, 8, BR8)
DEFINE_BKERNEL(bkernel_4, 4, BR4)
DEFINE_BKERNEL(bkernel_1, 1, BR1)

/* ---- AMX-BF16 ---- */

/* A: 32 rows (row stride lda bf16 values) of kcp = 2 * npair values, kcp a multiple of 32;
 * Bp: one panel. Sums into tmp, then C = alpha * sums + beta * C on rows < mr, columns < nr. */
__attribute__((target("amx-tile,amx-bf16,avx512f"))) static void amx_block(
    int64_t npair, const uint16_t *A, int64_t lda, const uint16_t *Bp, float *C, int64_t ldc,
    float alpha, float beta, int mr, int nr) {
    float tmp[32 * 32] __attribute__((aligned(64)));
    _tile_zero(0);
    _tile_zero(1);
    _tile_zero(2);
    _tile_zero(3);
    long sa = (long)(lda * 2), sb = 2 * NR * 2;
    for (int64_t p = 0; p < npair; p += 16) {
        const uint16_t *a = A + 2 * p, *b = Bp + p * 2 * NR;
        _tile_loadd(4, a, sa);
        _tile_loadd(5, a + 16 * lda, sa);
        _tile_loadd(6, b, sb);
        _tile_loadd(7, b + 32, sb);
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, tmp, 128);
    _tile_stored(1, tmp + 16, 128);
    _tile_stored(2, tmp + 16 * 32, 128);
    _tile_stored(3, tmp + 16 * 32 + 16, 128);
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 m0 = mask16(nr), m1 = mask16(nr - 16);
    for (int r = 0; r < mr; r++) {
        float *c = C + r * ldc;
        __m512 x = _mm512_mul_ps(_mm512_load_ps(tmp + r * 32), va);
        __m512 y = _mm512_mul_ps(_mm512_load_ps(tmp + r * 32 + 16), va);
        if (beta != 0.0f) {
            x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, c), x);
            y = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16), y);
        }
        _mm512_mask_storeu_ps(c, m0, x);
        _mm512_mask_storeu_ps(c + 16, m1, y);
    }
}

/* ---- packing into the whole-matrix layouts ---- */

void kbf16_pack_a(int ta, int64_t M, int64_t K, const float *A, int64_t lda, uint16_t *dst) {
    int64_t Kp = kbf16_kpad(K), Mpad = (M + KBF16_MALIGN - 1) / KBF16_MALIGN * KBF16_MALIGN;
    pack_a_rows(ta, A, lda, 0, M, Mpad, 0, K, dst, Kp);
}

void kbf16_pack_b(int tb, int64_t K, int64_t N, const float *B, int64_t ldb, uint16_t *dst) {
    int64_t Kp = kbf16_kpad(K);
    /* one slice of at most KC k at a time: the transposed packer's row buffer holds KC */
    for (int64_t pc = 0; pc < Kp; pc += KC) {
        int64_t kc = K - pc < KC ? K - pc : KC, kcp = Kp - pc < KC ? Kp - pc : KC;
        if (kc < 0) kc = 0;
        /* panel q's slice starts at q * NR * Kp + pc * NR: pack panel by panel */
        for (int64_t jp = 0; jp < N; jp += NR) {
            int64_t nc = N - jp < NR ? N - jp : NR;
            pack_b_panels(tb, B, ldb, pc, kc, kcp, jp, nc, dst + jp * Kp + pc * NR);
        }
    }
}

/* ---- the product ---- */

static _Thread_local uint16_t *buf_a, *buf_b;
static pthread_key_t buf_key;
static pthread_once_t buf_once = PTHREAD_ONCE_INIT;
static void free_buf(void *p) { free(p); }
static void make_key(void) { pthread_key_create(&buf_key, free_buf); }

static int ensure_buffers(void) {
    if (buf_a) return 1;
    pthread_once(&buf_once, make_key);
    uint16_t *b = kbf16_alloc((int64_t)MC * KC + (int64_t)KC * NC);
    if (!b) return 0;
    buf_a = b;
    buf_b = b + MC * KC;
    pthread_setspecific(buf_key, b);
    return 1;
}

int kbf16_gemm_serial(const kbf16_src *a, const kbf16_src *b, int64_t M, int64_t N, int64_t K,
                      float alpha, float beta, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return 1;
    if (K <= 0) {
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
        return 1;
    }
    if (!ensure_buffers()) return 0;
    int amx = kbf16_amx_active();
    if (amx) kamx_load_16x64();
    int64_t Kp = kbf16_kpad(K);
    for (int64_t jc = 0; jc < N; jc += NC) {
        int64_t nc = N - jc < NC ? N - jc : NC;
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = K - pc < KC ? K - pc : KC, kcp = kbf16_kpad(kc);
            float bet = pc == 0 ? beta : 1.0f;
            const uint16_t *bblk;
            int64_t pstride; /* between panels */
            if (b->packed) {
                bblk = b->packed + (b->off + jc) * Kp + pc * NR;
                pstride = NR * Kp;
            } else {
                pack_b_panels(b->trans, b->f, b->ld, pc, kc, kcp, jc, nc, buf_b);
                bblk = buf_b;
                pstride = NR * kcp;
            }
            for (int64_t ic = 0; ic < M; ic += MC) {
                int64_t mc = M - ic < MC ? M - ic : MC;
                const uint16_t *ablk;
                int64_t lda;
                if (a->packed) {
                    ablk = a->packed + (a->off + ic) * Kp + pc;
                    lda = Kp;
                } else {
                    int64_t mpad = (mc + KBF16_MALIGN - 1) / KBF16_MALIGN * KBF16_MALIGN;
                    pack_a_rows(a->trans, a->f, a->ld, ic, mc, mpad, pc, kc, buf_a, kcp);
                    ablk = buf_a;
                    lda = kcp;
                }
                for (int64_t jr = 0; jr < nc; jr += NR) {
                    int nr = (int)(nc - jr < NR ? nc - jr : NR);
                    const uint16_t *bp = bblk + jr / NR * pstride;
                    float *cb = C + ic * ldc + jc + jr;
                    if (amx) {
                        for (int64_t ir = 0; ir < mc; ir += 32) {
                            int mr = (int)(mc - ir < 32 ? mc - ir : 32);
                            amx_block(kcp / 2, ablk + ir * lda, lda, bp, cb + ir * ldc, ldc, alpha,
                                      bet, mr, nr);
                        }
                        continue;
                    }
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int mr = (int)(mc - ir < MR ? mc - ir : MR);
                        const uint32_t *ar = (const uint32_t *)(ablk + ir * lda);
                        float *c = cb + ir * ldc;
                        if (mr > 8) bkernel_12(kcp / 2, ar, lda / 2, bp, c, ldc, alpha, bet, mr, nr);
                        else if (mr > 4) bkernel_8(kcp / 2, ar, lda / 2, bp, c, ldc, alpha, bet, mr, nr);
                        else if (mr > 1) bkernel_4(kcp / 2, ar, lda / 2, bp, c, ldc, alpha, bet, mr, nr);
                        else bkernel_1(kcp / 2, ar, lda / 2, bp, c, ldc, alpha, bet, mr, nr);
                    }
                }
            }
        }
    }
    if (amx) kamx_release();
    return 1;
}

#else /* not x86-64: never available, so none of these run */
int kbf16_available(void) { return 0; }
int kbf16_amx_active(void) { return 0; }
void kbf16_pack_a(int ta, int64_t M, int64_t K, const float *A, int64_t lda, uint16_t *dst) {}
void kbf16_pack_b(int tb, int64_t K, int64_t N, const float *B, int64_t ldb, uint16_t *dst) {}
int kbf16_gemm_serial(const kbf16_src *a, const kbf16_src *b, int64_t M, int64_t N, int64_t K,
                      float alpha, float beta, float *C, int64_t ldc) {
    return 0;
}
#endif

/* ---- spread over threads ---- */

/* The product cut into tiles of rb x cb (multiples of 32, so a packed operand's offsets stay on
 * its panels and AMX's 32-row blocks): halved, the longer side first, until there are a few
 * tiles per thread or a tile would fall below about 0.25 M multiply-adds. */
typedef struct bf_tiles {
    int64_t rb, cb, nr, nc;
} bf_tiles;

static bf_tiles plan(int64_t M, int64_t N, int64_t K, int64_t want) {
    bf_tiles t = {M, N, 1, 1};
    while (t.nr * t.nc < want) {
        int64_t r2 = ((t.rb + 1) / 2 + 31) / 32 * 32, c2 = ((t.cb + 1) / 2 + 31) / 32 * 32;
        int can_r = r2 < t.rb && (double)r2 * t.cb * K >= (1 << 18);
        int can_c = c2 < t.cb && (double)t.rb * c2 * K >= (1 << 18);
        if (!can_r && !can_c) break;
        if (can_r && (!can_c || t.rb >= t.cb)) t.rb = r2;
        else t.cb = c2;
        t.nr = (M + t.rb - 1) / t.rb;
        t.nc = (N + t.cb - 1) / t.cb;
    }
    return t;
}

/* the sub-operand of rows [r0, ...) (A) or columns [c0, ...) (B) */
static kbf16_src sub_a(const kbf16_src *a, int64_t r0) {
    kbf16_src s = *a;
    if (s.packed) s.off += r0;
    else s.f += s.trans ? r0 : r0 * s.ld;
    return s;
}

static kbf16_src sub_b(const kbf16_src *b, int64_t c0) {
    kbf16_src s = *b;
    if (s.packed) s.off += c0;
    else s.f += s.trans ? c0 * s.ld : c0;
    return s;
}

typedef struct tile_job {
    const kbf16_src *a, *b;
    int64_t M, N, K, ldc;
    float alpha, beta;
    float *C;
    bf_tiles t;
    volatile int failed;
} tile_job;

static void tile_run(void *arg, int64_t t0, int64_t t1) {
    tile_job *j = arg;
    for (int64_t t = t0; t < t1; t++) {
        int64_t r0 = t / j->t.nc * j->t.rb, c0 = t % j->t.nc * j->t.cb;
        int64_t M = j->M - r0 < j->t.rb ? j->M - r0 : j->t.rb;
        int64_t N = j->N - c0 < j->t.cb ? j->N - c0 : j->t.cb;
        if (M <= 0 || N <= 0) continue;
        kbf16_src a = sub_a(j->a, r0), b = sub_b(j->b, c0);
        if (!kbf16_gemm_serial(&a, &b, M, N, j->K, j->alpha, j->beta, j->C + r0 * j->ldc + c0, j->ldc))
            j->failed = 1;
    }
}

kiln_status kbf16_gemm(kiln_ctx *ctx, const kbf16_src *a, const kbf16_src *b, int64_t M, int64_t N,
                       int64_t K, float alpha, float beta, float *C, int64_t ldc) {
    tile_job j = {a, b, M, N, K, ldc, alpha, beta, C, {M, N, 1, 1}, 0};
    int nt = kiln_num_threads(ctx);
    if (nt > 1 && (double)M * N * K >= 4e5) j.t = plan(M, N, K, 3 * (int64_t)nt);
    if (j.t.nr * j.t.nc > 1) kiln_parallel_for(ctx, j.t.nr * j.t.nc, 1, tile_run, &j);
    else tile_run(&j, 0, 1);
    return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for bfloat16 packing") : KILN_OK;
}

typedef struct batch_job {
    const kgemm_batch *b;
    bf_tiles t;
    volatile int failed;
} batch_job;

static void batch_run(void *arg, int64_t i0, int64_t i1) {
    batch_job *j = arg;
    const kgemm_batch *b = j->b;
    int64_t per = j->t.nr * j->t.nc;
    for (int64_t i = i0; i < i1; i++) {
        int64_t p = i / per, t = i % per;
        int64_t r0 = t / j->t.nc * j->t.rb, c0 = t % j->t.nc * j->t.cb;
        int64_t M = b->M - r0 < j->t.rb ? b->M - r0 : j->t.rb;
        int64_t N = b->N - c0 < j->t.cb ? b->N - c0 : j->t.cb;
        if (M <= 0 || N <= 0) continue;
        kbf16_src sa = {NULL, 0, (const float *)b->A + b->aoff[p], b->ta, b->lda};
        kbf16_src sb = {NULL, 0, (const float *)b->B + b->boff[p], b->tb, b->ldb};
        sa = sub_a(&sa, r0);
        sb = sub_b(&sb, c0);
        if (!kbf16_gemm_serial(&sa, &sb, M, N, b->K, (float)b->alpha, (float)b->beta,
                               (float *)b->C + b->coff[p] + r0 * b->ldc + c0, b->ldc))
            j->failed = 1;
    }
}

kiln_status kbf16_batched(kiln_ctx *ctx, const kgemm_batch *b) {
    if (b->count <= 0) return KILN_OK;
    int nt = kiln_num_threads(ctx);
    batch_job j = {b, {b->M, b->N, 1, 1}, 0};
    double macs = (double)b->M * b->N * b->K;
    if (nt > 1 && b->count < 4 * nt && b->count % nt)
        j.t = plan(b->M, b->N, b->K, (3 * (int64_t)nt + b->count - 1) / b->count);
    int64_t items = b->count * j.t.nr * j.t.nc;
    if (nt <= 1 || macs * b->count < 4e5) batch_run(&j, 0, items);
    else kiln_parallel_for(ctx, items, kpar_grain(items, macs * b->count / 200.0), batch_run, &j);
    return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for bfloat16 packing") : KILN_OK;
}
