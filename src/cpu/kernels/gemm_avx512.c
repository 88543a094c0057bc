/* Single-precision GEMM for CPUs with AVX-512F, and its driver, shared with the AVX2+FMA kernels
 * of gemm_avx2.c. The OpenBLAS that Debian ships (0.3.21) runs its AVX2 kernels on CPUs it does
 * not know (recent AMD EPYC among them), at about half of what those cores can do; this kernel
 * closes that gap. Classic blocking: a KC x NC block of B is packed into 32-column panels, an
 * MC x KC block of A into 12-row panels, and a 12 x 32 register tile (24 zmm accumulators) walks
 * the panels. Single-threaded: callers split the work. Without AVX-512 the same driver, packed
 * formats and blocking run gemm_avx2.c's tile (four 6 x 16 ymm quarters) and B packing: one
 * packed weight layout for both, and the epilogue and run-splitting logic written once. */
#include "gemm_util.h"
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define MR KGEMM_MR
#define NR KGEMM_NR
#define KC KGEMM_KC
#define MC 192
#define NC 3072

static int env_on(const char *name);

int kgemm_avx512_available(void) {
    static _Atomic int cached = -1;
    if (cached < 0) {
        __builtin_cpu_init();
        cached = __builtin_cpu_supports("avx512f") ? 1 : 0;
        if (env_on("KILN_NO_AVX512")) cached = 0;
    }
    return cached;
}

/* The tile kernels the driver runs: AVX-512 where present, else AVX2+FMA (see the header). */
typedef void (*tile_fn)(int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc,
                        float alpha, float beta, const float *bias, int mr, int nr,
                        const kgemm_epi *ep, const float *z, int split, int64_t jump);
typedef void (*tile_rows_fn)(int64_t kc, const float *A, int64_t lda, const float *Bp, float *C,
                             int64_t ldc, float alpha, float beta, int mr, int nr);
typedef void (*pack_b_fn)(int tb, const float *B, int64_t ldb, int64_t p0, int64_t kc,
                          int64_t j0, int64_t nc, float *dst);
typedef struct packed_engine {
    tile_fn tile;
    tile_rows_fn tile_rows;
    pack_b_fn pack_b;
} packed_engine;
static const packed_engine *engine(void);

static int env_on(const char *name) {
    const char *env = getenv(name);
    return env && *env && *env != '0';
}

int kgemm_packed_available(void) { return engine() != NULL; }

/* One thread's packing buffers (3.3 MB), kept for the thread's life: every product needs them,
 * and a fresh allocation of that size per call would fault in new pages each time. */
static _Thread_local float *pack_a, *pack_b;
static pthread_key_t pack_key;
static pthread_once_t pack_once = PTHREAD_ONCE_INIT;

static void free_buffers(void *p) { free(p); }
static void make_key(void) { pthread_key_create(&pack_key, free_buffers); }

static int ensure_buffers(void) {
    if (pack_a) return 1;
    pthread_once(&pack_once, make_key);
    float *buf = aligned_alloc(64, sizeof(float) * (MC * KC + KC * NC));
    if (!buf) return 0;
    pack_a = buf;
    pack_b = buf + MC * KC;
    pthread_setspecific(pack_key, buf); /* freed when the thread exits */
    return 1;
}

/* A rows [i0, i0+mc) x cols [p0, p0+kc) into 12-row panels: panel p holds, for each k, the 12
 * values of rows 12p..12p+11 (zero rows past mc). */
static void pack_a_block(int ta, const float *A, int64_t lda, int64_t i0, int64_t mc, int64_t p0,
                         int64_t kc, float *dst) {
    for (int64_t ip = 0; ip < mc; ip += MR) {
        int64_t rows = mc - ip < MR ? mc - ip : MR;
        float *d = dst + ip * kc;
        if (!ta) {
            for (int64_t r = 0; r < rows; r++) {
                const float *src = A + (i0 + ip + r) * lda + p0;
                for (int64_t k = 0; k < kc; k++) d[k * MR + r] = src[k];
            }
        } else {
            for (int64_t k = 0; k < kc; k++)
                memcpy(d + k * MR, A + (p0 + k) * lda + i0 + ip, sizeof(float) * (size_t)rows);
        }
        for (int64_t r = rows; r < MR; r++)
            for (int64_t k = 0; k < kc; k++) d[k * MR + r] = 0.0f;
    }
}

/* B rows [p0, p0+kc) x cols [j0, j0+nc) into 32-column panels (zero columns past nc). Row-major
 * B is read one row at a time, left to right: panel by panel, the copy hopped across kc rows
 * for 128 bytes each, more streams than the hardware prefetcher follows when B is a 1x1
 * convolution's input out of cache (256 -> 64 channels on 56x56, batch 8, one thread: 9.2 ->
 * 8.4 ms with the residual; no change at 64 or 128 rows). */
__attribute__((target("avx512f"))) static void pack_b_block_avx512(int tb, const float *B, int64_t ldb,
                                                            int64_t p0, int64_t kc, int64_t j0,
                                                            int64_t nc, float *dst) {
    if (!tb) {
        int64_t full = nc / NR * NR, rest = nc - full;
        __mmask16 m0 = (__mmask16)(rest >= 16 ? 0xffff : (1u << rest) - 1);
        __mmask16 m1 = (__mmask16)(rest <= 16 ? 0 : (1u << (rest - 16)) - 1);
        for (int64_t k = 0; k < kc; k++) {
            const float *src = B + (p0 + k) * ldb + j0;
            float *d = dst + k * NR;
            int64_t jp = 0;
            for (; jp < full; jp += NR) {
                _mm512_storeu_ps(d + jp * kc, _mm512_loadu_ps(src + jp));
                _mm512_storeu_ps(d + jp * kc + 16, _mm512_loadu_ps(src + jp + 16));
            }
            if (rest) {
                _mm512_storeu_ps(d + jp * kc, _mm512_maskz_loadu_ps(m0, src + jp));
                _mm512_storeu_ps(d + jp * kc + 16, _mm512_maskz_loadu_ps(m1, src + jp + 16));
            }
        }
        return;
    }
    kgemm_pack_bt_block(B, ldb, p0, kc, j0, nc, dst);
}

/* C[0..mr, 0..nr) = alpha * (Ap . Bp) + beta * C (+ bias[r]) over kc steps; beta == 0 never
 * reads C. ROWS (4, 8 or 12) is how many rows the variant computes: the packed panels are always
 * 12 rows wide, the smaller variants skip the zero rows of a short last panel. */
#define ACC_DECL(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = _mm512_setzero_ps();
#define ACC_STEP(i)                                                                                \
    a = _mm512_set1_ps(Ap[i]);                                                                     \
    c##i##a = _mm512_fmadd_ps(a, b0, c##i##a);                                                     \
    c##i##b = _mm512_fmadd_ps(a, b1, c##i##b);
#define ACC_SAVE(i) acc[i][0] = c##i##a; acc[i][1] = c##i##b;
#define DEFINE_KERNEL(NAME, ROWS, FOR_ROWS)                                                        \
    __attribute__((target("avx512f"))) static void NAME(                                           \
        int64_t kc, const float *Ap, const float *Bp, float *C, int64_t ldc, float alpha,          \
        float beta, const float *bias, int mr, int nr, const kgemm_epi *ep, const float *z,        \
        int split, int64_t jump) {                                                                 \
        FOR_ROWS(ACC_DECL)                                                                         \
        for (int64_t k = 0; k < kc; k++) {                                                         \
            __m512 b0 = _mm512_loadu_ps(Bp), b1 = _mm512_loadu_ps(Bp + 16), a;                       \
            _mm_prefetch((const char *)(Bp + 8 * NR), _MM_HINT_T0);                                \
            FOR_ROWS(ACC_STEP)                                                                     \
            Ap += MR;                                                                              \
            Bp += NR;                                                                              \
        }                                                                                          \
        __m512 acc[ROWS][2];                                                                       \
        FOR_ROWS(ACC_SAVE)                                                                         \
        store_tile(acc, C, ldc, alpha, beta, bias, mr, nr, ep, z, kc <= PREFETCH_C_KC, split,      \
                   jump);                                                                          \
    }
#define ROWS4(X) X(0) X(1) X(2) X(3)
#define ROWS8(X) ROWS4(X) X(4) X(5) X(6) X(7)
#define ROWS12(X) ROWS8(X) X(8) X(9) X(10) X(11)

/* the fused epilogue on one stored vector: + z, then the activation (see kgemm_epi) */
__attribute__((target("avx512f"))) static inline __m512 epi_vec(const kgemm_epi *ep, __m512 x,
                                                                const float *z, __mmask16 m) {
    if (z) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m, z));
    switch (ep->act) {
    case KGEMM_EPI_RELU: /* x < 0 ? 0 : x; NaN stays */
        return _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_LT_OQ),
                                  _mm512_setzero_ps());
    case KGEMM_EPI_CLIP: { /* x < a ? a : x > b ? b : x */
        __m512 a = _mm512_set1_ps(ep->a), b = _mm512_set1_ps(ep->b);
        __m512 r = _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, b, _CMP_GT_OQ), b);
        return _mm512_mask_mov_ps(r, _mm512_cmp_ps_mask(x, a, _CMP_LT_OQ), a);
    }
    case KGEMM_EPI_LEAKY: /* x >= 0 ? x : a * x */
        return _mm512_mask_mov_ps(_mm512_mul_ps(x, _mm512_set1_ps(ep->a)),
                                  _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ), x);
    case KGEMM_EPI_HSWISH: { /* x * clamp(x / 6 + 1/2, 0, 1), as kconv_apply_act; NaN stays */
        __m512 t = _mm512_fmadd_ps(x, _mm512_set1_ps(1.0f / 6), _mm512_set1_ps(0.5f));
        t = _mm512_min_ps(_mm512_set1_ps(1.0f), _mm512_max_ps(_mm512_setzero_ps(), t));
        return _mm512_mul_ps(x, t);
    }
    default:
        return x;
    }
}

/* Tiles of at most PREFETCH_C_KC steps are little more than their stores, which miss: C is
 * written 12 or more rows at a time, too many streams for the hardware prefetcher on the 2-core
 * test VM. Each stored row asks for ownership of its line PREFETCH_C_AHEAD floats on, where the
 * tile two column panels later writes. SqueezeNet at batch 8, one thread, in the model: the
 * 55x55 expand1x1 pair (16 -> 64) 1.55 -> 1.14 ms (and 1.58 -> 1.16 in a second run), the 27x27
 * pair 0.90 -> 0.86. Deeper tiles (its squeeze convs, K 128 to 512) were left out: not measured
 * apart from the noise there. A fused residual z is read as late, 12 rows at a time, by demand
 * loads that wait on memory in turn: it is fetched two panels ahead at every depth (ResNet's
 * 64 -> 256 1x1 on 56x56 with its residual and Relu, batch 8, one thread: 12.7 -> 9.8 ms). */
enum { PREFETCH_C_KC = 64, PREFETCH_C_AHEAD = 64 };

/* The 16 lanes of the vector holding columns [c0, c0 + 16) that lie below column n. */
static inline __mmask16 lanes_below(int n, int c0) {
    return (__mmask16)(n - c0 >= 16 ? 0xffff : n <= c0 ? 0 : (1u << (n - c0)) - 1);
}

/* An x vector of C, z or (from, to) across a run boundary: lanes in lo from p, the others from
 * p + jump (see kgemm_epi's runs). Masked-off lanes are never touched. */
__attribute__((target("avx512f"))) static inline __m512 load_split(const float *p, int64_t jump,
                                                                   __mmask16 m, __mmask16 lo) {
    return _mm512_mask_loadu_ps(_mm512_maskz_loadu_ps(m & lo, p), m & (__mmask16)~lo, p + jump);
}

__attribute__((target("avx512f"))) static inline void store_split(float *p, int64_t jump,
                                                                  __mmask16 m, __mmask16 lo,
                                                                  __m512 v) {
    _mm512_mask_storeu_ps(p, m & lo, v);
    _mm512_mask_storeu_ps(p + jump, m & (__mmask16)~lo, v);
}

/* store_tile for a tile whose columns from split on belong to the next run (jump floats on) */
__attribute__((target("avx512f"))) static void store_tile_split(
    __m512 (*acc)[2], float *C, int64_t ldc, float alpha, float beta, const float *bias, int mr,
    int nr, const kgemm_epi *ep, const float *z, int split, int64_t jump) {
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 m0 = lanes_below(nr, 0), m1 = lanes_below(nr, 16);
    __mmask16 lo0 = lanes_below(split, 0), lo1 = lanes_below(split, 16);
    for (int r = 0; r < mr; r++) {
        float *c = C + r * ldc;
        __m512 x = _mm512_mul_ps(acc[r][0], va), y = _mm512_mul_ps(acc[r][1], va);
        if (beta != 0.0f) {
            x = _mm512_fmadd_ps(vb, load_split(c, jump, m0, lo0), x);
            y = _mm512_fmadd_ps(vb, load_split(c + 16, jump, m1, lo1), y);
        }
        if (bias) {
            __m512 bb = _mm512_set1_ps(bias[r]);
            x = _mm512_add_ps(x, bb);
            y = _mm512_add_ps(y, bb);
        }
        if (ep) {
            if (z) {
                const float *zr = z + r * ep->ldz;
                x = _mm512_add_ps(x, load_split(zr, jump, m0, lo0));
                y = _mm512_add_ps(y, load_split(zr + 16, jump, m1, lo1));
            }
            x = epi_vec(ep, x, NULL, m0);
            y = epi_vec(ep, y, NULL, m1);
        }
        store_split(c, jump, m0, lo0, x);
        store_split(c + 16, jump, m1, lo1, y);
    }
}

__attribute__((target("avx512f"))) static inline void store_tile(__m512 (*acc)[2], float *C,
                                                                 int64_t ldc, float alpha,
                                                                 float beta, const float *bias,
                                                                 int mr, int nr,
                                                                 const kgemm_epi *ep,
                                                                 const float *z, int prefetch,
                                                                 int split, int64_t jump) {
    if (split < nr) {
        store_tile_split(acc, C, ldc, alpha, beta, bias, mr, nr, ep, z, split, jump);
        return;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1);
    __mmask16 m1 = (__mmask16)(nr <= 16 ? 0 : nr >= 32 ? 0xffff : (1u << (nr - 16)) - 1);
    for (int r = 0; r < mr; r++) {
        float *c = C + r * ldc;
        __m512 x = _mm512_mul_ps(acc[r][0], va), y = _mm512_mul_ps(acc[r][1], va);
        if (beta != 0.0f) {
            x = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m0, c), x);
            y = _mm512_fmadd_ps(vb, _mm512_maskz_loadu_ps(m1, c + 16), y);
        }
        if (bias) {
            __m512 bb = _mm512_set1_ps(bias[r]);
            x = _mm512_add_ps(x, bb);
            y = _mm512_add_ps(y, bb);
        }
        if (ep) {
            const float *zr = z ? z + r * ep->ldz : NULL;
            x = epi_vec(ep, x, zr, m0);
            y = epi_vec(ep, y, zr ? zr + 16 : NULL, m1);
        }
        _mm512_mask_storeu_ps(c, m0, x);
        _mm512_mask_storeu_ps(c + 16, m1, y);
        if (prefetch) {
            _mm_prefetch((const char *)(c + PREFETCH_C_AHEAD), _MM_HINT_ET0);
            _mm_prefetch((const char *)(c + PREFETCH_C_AHEAD + 16), _MM_HINT_ET0);
        }
        if (z) { /* the residual the tile two panels on adds (see PREFETCH_C_AHEAD) */
            const float *zn = z + r * ep->ldz + PREFETCH_C_AHEAD;
            _mm_prefetch((const char *)zn, _MM_HINT_T0);
            _mm_prefetch((const char *)(zn + 16), _MM_HINT_T0);
        }
    }
}

DEFINE_KERNEL(kernel_12x32, 12, ROWS12)
DEFINE_KERNEL(kernel_8x32, 8, ROWS8)
DEFINE_KERNEL(kernel_4x32, 4, ROWS4)

/* One row (a batch-1 recurrent step, a single decoder token against packed weights): the 4-row
 * kernel would spend three quarters of its multiply-adds on zero rows, and one accumulator pair
 * waits out each FMA's latency, so four taps at a time go to separate accumulators. */
#define K1_TAP(j)                                                                                  \
    x = _mm512_set1_ps(Ap[(j) * MR]);                                                              \
    c##j##a = _mm512_fmadd_ps(x, _mm512_loadu_ps(Bp + (j) * NR), c##j##a);                          \
    c##j##b = _mm512_fmadd_ps(x, _mm512_loadu_ps(Bp + (j) * NR + 16), c##j##b);
__attribute__((target("avx512f"))) static void kernel_1x32(int64_t kc, const float *Ap, const float *Bp,
                                                           float *C, int64_t ldc, float alpha, float beta,
                                                           const float *bias, int mr, int nr,
                                                           const kgemm_epi *ep, const float *z,
                                                           int split, int64_t jump) {
    ROWS4(ACC_DECL)
    __m512 x;
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(Bp + 8 * NR), _MM_HINT_T0);
        K1_TAP(0) K1_TAP(1) K1_TAP(2) K1_TAP(3)
        Ap += 4 * MR;
        Bp += 4 * NR;
    }
    for (; k < kc; k++) {
        K1_TAP(0)
        Ap += MR;
        Bp += NR;
    }
    __m512 acc[1][2];
    acc[0][0] = _mm512_add_ps(_mm512_add_ps(c0a, c1a), _mm512_add_ps(c2a, c3a));
    acc[0][1] = _mm512_add_ps(_mm512_add_ps(c0b, c1b), _mm512_add_ps(c2b, c3b));
    store_tile(acc, C, ldc, alpha, beta, bias, mr, nr, ep, z, 0, split, jump);
}

/* The same kernels reading A where it lies (row-major, lda) instead of from a packed panel. With B
 * packed once (a weight), packing A was the only per-call copy, and a product split into tiles
 * over many threads packed each row block once per column tile: at 16 threads on BERT-base's
 * projections that copy, done element by element, cost more than the tiles' multiply-adds. Rows
 * past mr read row mr - 1 again (their sums are never stored), so no row outside A is touched. */
#define ROWPTR(i) const float *r##i = A + (int64_t)((i) < mr ? (i) : mr - 1) * lda;
#define ACC_STEP_U(i)                                                                              \
    a = _mm512_set1_ps(r##i[k]);                                                                   \
    c##i##a = _mm512_fmadd_ps(a, b0, c##i##a);                                                     \
    c##i##b = _mm512_fmadd_ps(a, b1, c##i##b);
#define DEFINE_KERNEL_U(NAME, ROWS, FOR_ROWS)                                                      \
    __attribute__((target("avx512f"))) static void NAME(                                           \
        int64_t kc, const float *A, int64_t lda, const float *Bp, float *C, int64_t ldc,           \
        float alpha, float beta, int mr, int nr) {                                                 \
        FOR_ROWS(ROWPTR)                                                                           \
        FOR_ROWS(ACC_DECL)                                                                         \
        for (int64_t k = 0; k < kc; k++) {                                                         \
            __m512 b0 = _mm512_loadu_ps(Bp), b1 = _mm512_loadu_ps(Bp + 16), a;                       \
            _mm_prefetch((const char *)(Bp + 8 * NR), _MM_HINT_T0);                                \
            FOR_ROWS(ACC_STEP_U)                                                                   \
            Bp += NR;                                                                              \
        }                                                                                          \
        __m512 acc[ROWS][2];                                                                       \
        FOR_ROWS(ACC_SAVE)                                                                         \
        store_tile(acc, C, ldc, alpha, beta, NULL, mr, nr, NULL, NULL, 0, NR, 0);                  \
    }
DEFINE_KERNEL_U(kernel_u12x32, 12, ROWS12)
DEFINE_KERNEL_U(kernel_u8x32, 8, ROWS8)
DEFINE_KERNEL_U(kernel_u4x32, 4, ROWS4)

#define K1U_TAP(j)                                                                                 \
    x = _mm512_set1_ps(A[k + (j)]);                                                                \
    c##j##a = _mm512_fmadd_ps(x, _mm512_loadu_ps(Bp + (j) * NR), c##j##a);                          \
    c##j##b = _mm512_fmadd_ps(x, _mm512_loadu_ps(Bp + (j) * NR + 16), c##j##b);
__attribute__((target("avx512f"))) static void kernel_u1x32(int64_t kc, const float *A, int64_t lda,
                                                            const float *Bp, float *C, int64_t ldc,
                                                            float alpha, float beta, int mr, int nr) {
    (void)lda;
    ROWS4(ACC_DECL)
    __m512 x;
    int64_t k = 0;
    for (; k + 4 <= kc; k += 4) {
        _mm_prefetch((const char *)(Bp + 8 * NR), _MM_HINT_T0);
        K1U_TAP(0) K1U_TAP(1) K1U_TAP(2) K1U_TAP(3)
        Bp += 4 * NR;
    }
    for (; k < kc; k++) {
        x = _mm512_set1_ps(A[k]);
        c0a = _mm512_fmadd_ps(x, _mm512_loadu_ps(Bp), c0a);
        c0b = _mm512_fmadd_ps(x, _mm512_loadu_ps(Bp + 16), c0b);
        Bp += NR;
    }
    __m512 acc[1][2];
    acc[0][0] = _mm512_add_ps(_mm512_add_ps(c0a, c1a), _mm512_add_ps(c2a, c3a));
    acc[0][1] = _mm512_add_ps(_mm512_add_ps(c0b, c1b), _mm512_add_ps(c2b, c3b));
    store_tile(acc, C, ldc, alpha, beta, NULL, mr, nr, NULL, NULL, 0, NR, 0);
}

/* The AVX-512 kernel for a tile's row count (the panels are 12 rows; shorter variants skip the
 * zero rows of a short last panel). */
static void tile_avx512(int64_t kc, const float *ap, const float *bp, float *c, int64_t ldc,
                        float alpha, float beta, const float *rb, int mr, int nr,
                        const kgemm_epi *ep, const float *z, int split, int64_t jump) {
    if (mr > 8) kernel_12x32(kc, ap, bp, c, ldc, alpha, beta, rb, mr, nr, ep, z, split, jump);
    else if (mr > 4) kernel_8x32(kc, ap, bp, c, ldc, alpha, beta, rb, mr, nr, ep, z, split, jump);
    else if (mr > 1) kernel_4x32(kc, ap, bp, c, ldc, alpha, beta, rb, mr, nr, ep, z, split, jump);
    else kernel_1x32(kc, ap, bp, c, ldc, alpha, beta, rb, mr, nr, ep, z, split, jump);
}

static void tile_rows_avx512(int64_t kc, const float *a, int64_t lda, const float *bp, float *c,
                             int64_t ldc, float alpha, float beta, int mr, int nr) {
    if (mr > 8) kernel_u12x32(kc, a, lda, bp, c, ldc, alpha, beta, mr, nr);
    else if (mr > 4) kernel_u8x32(kc, a, lda, bp, c, ldc, alpha, beta, mr, nr);
    else if (mr > 1) kernel_u4x32(kc, a, lda, bp, c, ldc, alpha, beta, mr, nr);
    else kernel_u1x32(kc, a, lda, bp, c, ldc, alpha, beta, mr, nr);
}

static const packed_engine engine_avx512 = {tile_avx512, tile_rows_avx512, pack_b_block_avx512};
static const packed_engine engine_avx2 = {kgemm_avx2_tile, kgemm_avx2_tile_rows,
                                          kgemm_avx2_pack_b_block};

/* AVX-512 first; the AVX2 kernels where it is missing (or KILN_NO_AVX512 hides it) unless
 * KILN_NO_AVX2 is set, which leaves callers their OpenBLAS fallbacks; NULL: no engine. */
static const packed_engine *engine(void) {
    static _Atomic int cached = -1; /* 0 none, 1 AVX-512, 2 AVX2 */
    if (cached < 0)
        cached = kgemm_avx512_available()                          ? 1
                 : kgemm_avx2_available() && !env_on("KILN_NO_AVX2") ? 2
                                                                     : 0;
    return cached == 1 ? &engine_avx512 : cached == 2 ? &engine_avx2 : NULL;
}

/* C = alpha * A . B + beta * C with B packed whole (Npad columns, this product's start at column
 * j0) and A row-major, read in place. For each KC-deep slice, a 32-column panel of B (32 KB) stays
 * in L1/L2 while every row block of an MC-high band of A passes over it. The columns go in chunks
 * whose C block (mc x nc) stays in L2 across the KC slices: one pass over all N columns per slice
 * wrote C out to L3 and read it back K / KC times (BERT's 128 x 768 -> 3072 at one thread: C is
 * 1.5 MB). KILN_BP_CHUNK_KB sets the block's size (0: no chunks), for A/B runs. */
enum { BP_CHUNK_BYTES = 128 * 1024 };
static int64_t bp_chunk_bytes(void) {
    static _Atomic int64_t cached = -1;
    if (cached < 0) {
        const char *e = getenv("KILN_BP_CHUNK_KB");
        cached = e && *e ? (int64_t)atoll(e) * 1024 : BP_CHUNK_BYTES;
    }
    return cached;
}

static void gemm_bp_direct(int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                           int64_t lda, const float *bp_all, int64_t Npad, int64_t j0, float beta,
                           float *C, int64_t ldc) {
    tile_rows_fn tile_rows = engine()->tile_rows;
    int64_t chunk_bytes = bp_chunk_bytes();
    for (int64_t ic = 0; ic < M; ic += MC) {
        int64_t mc = M - ic < MC ? M - ic : MC;
        int64_t ncb = N;
        if (chunk_bytes > 0 && K > KC) {
            ncb = chunk_bytes / (mc * (int64_t)sizeof(float)) / NR * NR;
            if (ncb < NR) ncb = NR;
        }
        for (int64_t jc = 0; jc < N; jc += ncb) {
            int64_t nc = N - jc < ncb ? N - jc : ncb;
            for (int64_t pc = 0; pc < K; pc += KC) {
                int64_t kc = K - pc < KC ? K - pc : KC;
                float bet = pc == 0 ? beta : 1.0f;
                const float *bpk = bp_all + pc * Npad + j0 * kc;
                for (int64_t jr = jc; jr < jc + nc; jr += NR) {
                    int nr = (int)(jc + nc - jr < NR ? jc + nc - jr : NR);
                    const float *bp = bpk + jr * kc;
                    for (int64_t ir = 0; ir < mc; ir += MR) {
                        int mr = (int)(mc - ir < MR ? mc - ir : MR);
                        const float *a = A + (ic + ir) * lda + pc;
                        float *c = C + (ic + ir) * ldc + jr;
                        tile_rows(kc, a, lda, bp, c, ldc, alpha, bet, mr, nr);
                    }
                }
            }
        }
    }
}

/* One packed block's products: its A panels, B panels and where its C, bias and residual start. */
typedef struct block_tiles {
    int64_t kc;
    const float *apk, *bpk;
    float *c;
    int64_t ldc;
    float alpha, beta;
    const float *bias;
    const kgemm_epi *ep;
    const float *z;
    const kgemm_epi *runs; /* column runs (kgemm_epi's period), or NULL */
    int64_t col0;          /* the product's column at this block's column 0 */
    tile_fn tile;
} block_tiles;

/* The tile of row panel ir and column panel jr of an mc x nc block. */
static void block_tile(const block_tiles *t, int64_t ir, int64_t jr, int64_t mc, int64_t nc) {
    int64_t kc = t->kc;
    int nr = (int)(nc - jr < NR ? nc - jr : NR), mr = (int)(mc - ir < MR ? mc - ir : MR);
    const float *ap = t->apk + ir * kc, *bp = t->bpk + jr * kc;
    float *c = t->c + ir * t->ldc + jr;
    const float *rb = t->bias ? t->bias + ir : NULL;
    const float *z = t->z ? t->z + ir * t->ep->ldz + jr : NULL;
    int split = NR;
    int64_t jump = 0;
    if (t->runs) { /* earlier runs move the tile on; a boundary inside it splits its stores */
        int64_t q = t->runs->phase + t->col0 + jr, run = q / t->runs->period;
        jump = t->runs->jump;
        c += run * jump;
        if (z) z += run * jump;
        int64_t left = t->runs->period - q % t->runs->period;
        if (left < NR) split = (int)left;
    }
    t->tile(kc, ap, bp, c, t->ldc, t->alpha, t->beta, rb, mr, nr, t->ep, z, split, jump);
}

/* Blocks at most SHALLOW_KC deep, of at most SHALLOW_B packed floats of B, walk their row panels
 * outer, column panels inner. With so few multiply-adds per output, storing C is most of a tile's
 * time, and the usual order (each B panel held while every row panel passes over it) writes 32
 * columns into each of mc rows before moving on: 64 or more streams of 128 bytes, where row
 * panels outer write 12 rows end to end and read the small B block again from L2. SqueezeNet's
 * 27x27 expand convs (32 -> 128, 93 KB of B per image, batch 8) in the model, at one thread:
 * 1.03 -> 0.85 ms the pair (and 1.43 -> 0.91 in a second, noisier run); its 55x55 ones
 * (16 -> 64, 194 KB of B) were no faster this way, 1.38 -> 1.42 and 1.58 -> 1.95, so they keep
 * the usual order. */
enum { SHALLOW_KC = 32, SHALLOW_B = 32 * 1024 };

/* Products with an epilogue (the convolutions') walk row panels outer at any depth while the B
 * block fits in L2 with room to spare (at most ROWS_OUTER_B floats, 512 KB): C and the residual
 * are then written and read as 12 rows, left to right, which the prefetchers follow, where
 * column panels outer touch every row of the MC band for 128 bytes and move on. B is read from
 * L2 once per row panel instead of once per block; the L2 keeps up. 1x1 convolutions with their
 * residual, batch 8, one thread (with the residual prefetch): 64 -> 256 on 56x56 9.8 -> 8.2 ms,
 * 128 -> 512 on 28x28 7.4 -> 6.6, 256 -> 64 on 56x56 8.9 -> 8.4. */
enum { ROWS_OUTER_B = 128 * 1024 };

/* ap_all: A packed whole by kgemm_avx512_pack_a (Mpad rows), of which rows [i0, i0 + M) are
 * wanted; NULL: pack A (ta, lda) block by block here. */
static int gemm_core(const float *ap_all, int64_t Mpad, int64_t i0, int ta, int tb, int64_t M,
                     int64_t N, int64_t K, float alpha, const float *A, int64_t lda,
                     const float *B, int64_t ldb, kgemm_pack_b_fn pack_fn, void *pack_arg,
                     const float *bp_all, int64_t Npad, int64_t j0, float beta, float *C,
                     int64_t ldc, const float *row_bias, const kgemm_epi *epi) {
    const packed_engine *eng = engine();
    if (!eng || !ensure_buffers()) return 0;
    for (int64_t jc = 0; jc < N; jc += NC) {
        int64_t nc = N - jc < NC ? N - jc : NC;
        for (int64_t pc = 0; pc < K; pc += KC) {
            int64_t kc = K - pc < KC ? K - pc : KC;
            float bet = pc == 0 ? beta : 1.0f;
            const float *bias = pc + kc >= K ? row_bias : NULL; /* added once, at the last block */
            const kgemm_epi *ep = pc + kc >= K ? epi : NULL;
            const float *bpk = pack_b;
            if (bp_all) bpk = bp_all + pc * Npad + (j0 + jc) * kc;
            else if (pack_fn) pack_fn(pack_arg, pc, kc, jc, nc, pack_b);
            else eng->pack_b(tb, B, ldb, pc, kc, jc, nc, pack_b);
            for (int64_t ic = 0; ic < M; ic += MC) {
                int64_t mc = M - ic < MC ? M - ic : MC;
                const float *apk;
                if (ap_all) {
                    apk = ap_all + pc * Mpad + (i0 + ic) * kc;
                } else {
                    pack_a_block(ta, A, lda, ic, mc, pc, kc, pack_a);
                    apk = pack_a;
                }
                block_tiles tb = {kc, apk, bpk, C + ic * ldc + jc, ldc, alpha, bet, bias ? bias + ic : NULL,
                                  ep, ep && ep->z ? ep->z + ic * ep->ldz + jc : NULL,
                                  epi && epi->period ? epi : NULL, jc, eng->tile};
                if ((kc <= SHALLOW_KC && kc * nc <= SHALLOW_B) || (epi && kc * nc <= ROWS_OUTER_B)) {
                    /* row panels outer: see SHALLOW_KC and ROWS_OUTER_B */
                    for (int64_t ir = 0; ir < mc; ir += MR)
                        for (int64_t jr = 0; jr < nc; jr += NR) block_tile(&tb, ir, jr, mc, nc);
                } else {
                    for (int64_t jr = 0; jr < nc; jr += NR)
                        for (int64_t ir = 0; ir < mc; ir += MR) block_tile(&tb, ir, jr, mc, nc);
                }
            }
        }
    }
    return 1;
}

int kgemm_sgemm_avx512(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc, const float *row_bias) {
    return gemm_core(NULL, 0, 0, ta, tb, M, N, K, alpha, A, lda, B, ldb, NULL, NULL, NULL, 0, 0,
                     beta, C, ldc, row_bias, NULL);
}

int64_t kgemm_avx512_packed_size(int64_t M, int64_t K) { return (M + MR - 1) / MR * MR * K; }

void kgemm_avx512_pack_a(int ta, int64_t M, int64_t K, const float *A, int64_t lda, float *dst) {
    int64_t Mpad = (M + MR - 1) / MR * MR;
    for (int64_t pc = 0; pc < K; pc += KC) {
        int64_t kc = K - pc < KC ? K - pc : KC;
        pack_a_block(ta, A, lda, 0, M, pc, kc, dst + pc * Mpad);
    }
}

int kgemm_sgemm_avx512_packed(const float *Ap, int64_t Mfull, int64_t i0, int tb, int64_t M,
                              int64_t N, int64_t K, float alpha, const float *B, int64_t ldb,
                              float beta, float *C, int64_t ldc, const float *row_bias) {
    return kgemm_sgemm_avx512_packed_epi(Ap, Mfull, i0, tb, M, N, K, alpha, B, ldb, beta, C, ldc,
                                         row_bias, NULL);
}

int kgemm_sgemm_avx512_packed_epi(const float *Ap, int64_t Mfull, int64_t i0, int tb, int64_t M,
                                  int64_t N, int64_t K, float alpha, const float *B, int64_t ldb,
                                  float beta, float *C, int64_t ldc, const float *row_bias,
                                  const kgemm_epi *ep) {
    int64_t Mpad = (Mfull + MR - 1) / MR * MR;
    return gemm_core(Ap, Mpad, i0, 0, tb, M, N, K, alpha, NULL, 0, B, ldb, NULL, NULL, NULL, 0, 0,
                     beta, C, ldc, row_bias, ep);
}

int kgemm_sgemm_avx512_packed_cb(const float *Ap, int64_t Mfull, int64_t i0, int64_t M, int64_t N,
                                 int64_t K, float alpha, kgemm_pack_b_fn pack_fn, void *pack_arg,
                                 float beta, float *C, int64_t ldc, const float *row_bias) {
    return kgemm_sgemm_avx512_packed_cb_epi(Ap, Mfull, i0, M, N, K, alpha, pack_fn, pack_arg, beta,
                                            C, ldc, row_bias, NULL);
}

int kgemm_sgemm_avx512_packed_cb_epi(const float *Ap, int64_t Mfull, int64_t i0, int64_t M,
                                     int64_t N, int64_t K, float alpha, kgemm_pack_b_fn pack_fn,
                                     void *pack_arg, float beta, float *C, int64_t ldc,
                                     const float *row_bias, const kgemm_epi *ep) {
    int64_t Mpad = (Mfull + MR - 1) / MR * MR;
    return gemm_core(Ap, Mpad, i0, 0, 0, M, N, K, alpha, NULL, 0, NULL, 0, pack_fn, pack_arg, NULL,
                     0, 0, beta, C, ldc, row_bias, ep);
}

int kgemm_sgemm_avx512_packed_ab_epi(const float *Ap, int64_t Mfull, int64_t i0, int64_t M,
                                     int64_t N, int64_t K, const float *Bp, int64_t Npad,
                                     int64_t j0, float *C, int64_t ldc, const float *row_bias,
                                     const kgemm_epi *ep) {
    int64_t Mpad = (Mfull + MR - 1) / MR * MR;
    return gemm_core(Ap, Mpad, i0, 0, 0, M, N, K, 1.0f, NULL, 0, NULL, 0, NULL, NULL, Bp, Npad, j0,
                     0.0f, C, ldc, row_bias, ep);
}

int64_t kgemm_avx512_packed_b_size(int64_t K, int64_t N) { return (N + NR - 1) / NR * NR * K; }

void kgemm_avx512_pack_b(int tb, int64_t K, int64_t N, const float *B, int64_t ldb, float *dst) {
    int64_t Npad = (N + NR - 1) / NR * NR;
    for (int64_t pc = 0; pc < K; pc += KC) {
        int64_t kc = K - pc < KC ? K - pc : KC;
        engine()->pack_b(tb, B, ldb, pc, kc, 0, N, dst + pc * Npad);
    }
}

int kgemm_sgemm_avx512_bpacked(int ta, int64_t M, int64_t N, int64_t K, float alpha,
                               const float *A, int64_t lda, const float *Bp, int64_t Nfull,
                               int64_t j0, float beta, float *C, int64_t ldc) {
    int64_t Npad = (Nfull + NR - 1) / NR * NR;
    if (!ta && M > 0 && N > 0 && K > 0 && engine()) {
        gemm_bp_direct(M, N, K, alpha, A, lda, Bp, Npad, j0, beta, C, ldc);
        return 1;
    }
    return gemm_core(NULL, 0, 0, ta, 0, M, N, K, alpha, A, lda, NULL, 0, NULL, NULL, Bp, Npad, j0,
                     beta, C, ldc, NULL, NULL);
}

#else
int kgemm_avx512_available(void) { return 0; }
int kgemm_packed_available(void) { return 0; }
int64_t kgemm_avx512_packed_b_size(int64_t K, int64_t N) { return K * N; }
void kgemm_avx512_pack_b(int tb, int64_t K, int64_t N, const float *B, int64_t ldb, float *dst) {}
int kgemm_sgemm_avx512_bpacked(int ta, int64_t M, int64_t N, int64_t K, float alpha,
                               const float *A, int64_t lda, const float *Bp, int64_t Nfull,
                               int64_t j0, float beta, float *C, int64_t ldc) {
    return 0;
}
int64_t kgemm_avx512_packed_size(int64_t M, int64_t K) { return M * K; }
void kgemm_avx512_pack_a(int ta, int64_t M, int64_t K, const float *A, int64_t lda, float *dst) {}
int kgemm_sgemm_avx512_packed(const float *Ap, int64_t Mfull, int64_t i0, int tb, int64_t M,
                              int64_t N, int64_t K, float alpha, const float *B, int64_t ldb,
                              float beta, float *C, int64_t ldc, const float *row_bias) {
    return 0;
}
int kgemm_sgemm_avx512_packed_cb(const float *Ap, int64_t Mfull, int64_t i0, int64_t M, int64_t N,
                                 int64_t K, float alpha, kgemm_pack_b_fn pack_fn, void *pack_arg,
                                 float beta, float *C, int64_t ldc, const float *row_bias) {
    return 0;
}
int kgemm_sgemm_avx512_packed_epi(const float *Ap, int64_t Mfull, int64_t i0, int tb, int64_t M,
                                  int64_t N, int64_t K, float alpha, const float *B, int64_t ldb,
                                  float beta, float *C, int64_t ldc, const float *row_bias,
                                  const kgemm_epi *ep) {
    return 0;
}
int kgemm_sgemm_avx512_packed_cb_epi(const float *Ap, int64_t Mfull, int64_t i0, int64_t M,
                                     int64_t N, int64_t K, float alpha, kgemm_pack_b_fn pack_fn,
                                     void *pack_arg, float beta, float *C, int64_t ldc,
                                     const float *row_bias, const kgemm_epi *ep) {
    return 0;
}
int kgemm_sgemm_avx512_packed_ab_epi(const float *Ap, int64_t Mfull, int64_t i0, int64_t M,
                                     int64_t N, int64_t K, const float *Bp, int64_t Npad,
                                     int64_t j0, float *C, int64_t ldc, const float *row_bias,
                                     const kgemm_epi *ep) {
    return 0;
}
int kgemm_sgemm_avx512(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, const float *B, int64_t ldb, float beta,
                       float *C, int64_t ldc, const float *row_bias) {
    return 0;
}
#endif
