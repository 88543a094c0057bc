/* com.microsoft block-quantized weights as onnxruntime's quantization tools emit them:
 *
 * MatMulNBits(A, B, scales, zero_points?, g_idx?, bias?): Y = A · Wᵀ (+ bias), where W (N × K) is
 * stored as B (N, k_blocks, block_size * bits / 8) bytes of `bits`-bit codes, low bits first,
 * dequantized per block as (q - zp) * scale. zero_points are either packed like B (N,
 * ceil(k_blocks * bits / 8)) or float of A's type (N * k_blocks); absent, zp = 2^(bits - 1).
 * W is never dequantized whole (nothing is cached between runs): see "the product" below.
 *
 * GatherBlockQuantized(data, indices, scales, zero_points?): Gather on 4-bit (int4/uint4, or
 * bits-packed uint8) block-quantized data, dequantized as (q - zp) * scale. */
#include "contrib_transformers.h"
#include "gemm_util.h"

#include <math.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { NB_A, NB_B, NB_SCALES, NB_ZP, NB_GIDX, NB_BIAS };

typedef struct nbits_cfg {
    int64_t K, N, bits, block, kb, blob;   /* kb = blocks per column, blob = bytes per block */
    int64_t M;                             /* rows of A */
    int dtype;                             /* A's element type: float or float16 */
    const kiln_tensor *a, *b, *scales, *zp, *bias;
    int zp_float;                          /* zero points stored as A's type, not packed */
} nbits_cfg;

static int half_or_float(int dt) { return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_FLOAT16; }

static kiln_status nbits_parse(kiln_ctx *ctx, nbits_cfg *c) {
    const kiln_node *node = ctx->node;
    char s1[96];
    memset(c, 0, sizeof *c);
    kiln_tensor *a, *b, *sc;
    KILN_TRY(kiln_need_input(ctx, NB_A, &a));
    KILN_TRY(kiln_need_input(ctx, NB_B, &b));
    KILN_TRY(kiln_need_input(ctx, NB_SCALES, &sc));
    c->a = a;
    c->b = b;
    c->scales = sc;
    c->zp = kiln_input(ctx, NB_ZP);
    c->bias = kiln_input(ctx, NB_BIAS);
    if (kiln_input(ctx, NB_GIDX))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "input g_idx (act-order) is not supported; onnxruntime's quantizers emit "
                         "MatMulNBits without it");
    if (!half_or_float(a->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input A has element type %s; expected float or float16",
                         kiln_dtype_name(a->dtype));
    c->dtype = a->dtype;
    if (b->dtype != KILN_DTYPE_UINT8)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input B has element type %s; expected uint8",
                         kiln_dtype_name(b->dtype));
    if (sc->dtype != a->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scales have type %s; expected A's type %s",
                         kiln_dtype_name(sc->dtype), kiln_dtype_name(a->dtype));
    c->K = kiln_attr_int(node, "K", -1);
    c->N = kiln_attr_int(node, "N", -1);
    c->bits = kiln_attr_int(node, "bits", 4);
    c->block = kiln_attr_int(node, "block_size", -1);
    /* bounded so that products like N * k_blocks * blob stay far from int64 overflow */
    if (c->K <= 0 || c->N <= 0 || c->K > INT32_MAX || c->N > INT32_MAX)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "attributes K and N must be in [1, 2^31), got %lld and %lld", (long long)c->K,
                         (long long)c->N);
    if (c->bits != 2 && c->bits != 4 && c->bits != 8)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "bits=%lld is not supported (2, 4 or 8)",
                         (long long)c->bits);
    if (c->block < 16 || c->block > (1 << 20) || (c->block & (c->block - 1)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "block_size must be a power of 2 in [16, 2^20], got %lld", (long long)c->block);
    c->kb = (c->K + c->block - 1) / c->block;
    c->blob = c->block * c->bits / 8;
    if (a->rank < 0) return KILN_OK; /* static inference without A's shape */
    if (a->rank < 1 || (a->dims[a->rank - 1] >= 0 && a->dims[a->rank - 1] != c->K))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input A %s must end in K=%lld",
                         kgemm_dims_str(a->rank, a->dims, s1, sizeof s1), (long long)c->K);
    int64_t bn = kiln_numel(b);
    if (b->rank >= 0 && bn >= 0 && bn != c->N * c->kb * c->blob)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input B %s must hold N x k_blocks x blob = %lld x %lld x %lld bytes",
                         kgemm_dims_str(b->rank, b->dims, s1, sizeof s1), (long long)c->N,
                         (long long)c->kb, (long long)c->blob);
    int64_t sn = kiln_numel(sc);
    if (sc->rank >= 0 && sn >= 0 && sn != c->N * c->kb)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "scales %s must hold N x k_blocks = %lld values",
                         kgemm_dims_str(sc->rank, sc->dims, s1, sizeof s1), (long long)(c->N * c->kb));
    if (c->zp) {
        int64_t zn = kiln_numel(c->zp);
        if (c->zp->dtype == KILN_DTYPE_UINT8) {
            int64_t want = c->N * ((c->kb * c->bits + 7) / 8);
            if (c->zp->rank >= 0 && zn >= 0 && zn != want)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "packed zero_points must hold N x ceil(k_blocks * bits / 8) = %lld "
                                 "bytes, got %lld", (long long)want, (long long)zn);
        } else if (c->zp->dtype == a->dtype) {
            c->zp_float = 1;
            if (c->zp->rank >= 0 && zn >= 0 && zn != c->N * c->kb)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "float zero_points must hold N x k_blocks = %lld values, got %lld",
                                 (long long)(c->N * c->kb), (long long)zn);
        } else {
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "zero_points have type %s; expected uint8 or A's type %s",
                             kiln_dtype_name(c->zp->dtype), kiln_dtype_name(a->dtype));
        }
    }
    if (c->bias) {
        if (c->bias->dtype != a->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias has type %s; expected A's type %s",
                             kiln_dtype_name(c->bias->dtype), kiln_dtype_name(a->dtype));
        if (c->bias->rank >= 0 && (c->bias->rank != 1 || (c->bias->dims[0] >= 0 && c->bias->dims[0] != c->N)))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias %s must be 1-D of length N=%lld",
                             kgemm_dims_str(c->bias->rank, c->bias->dims, s1, sizeof s1), (long long)c->N);
    }
    return KILN_OK;
}

static kiln_status nbits_infer(kiln_ctx *ctx) {
    nbits_cfg c;
    KILN_TRY(nbits_parse(ctx, &c));
    if (c.a->rank < 0) return kiln_set_output_unknown(ctx, 0, c.dtype);
    int64_t d[KILN_MAX_RANK];
    memcpy(d, c.a->dims, sizeof(int64_t) * (size_t)c.a->rank);
    d[c.a->rank - 1] = c.N;
    return kiln_set_output(ctx, 0, c.dtype, c.a->rank, d);
}

/* ---- the product ----
 * Few rows of A (decoding, M <= GEMV_ROWS): a fused product that dequantizes 16 codes at a time
 * in registers and multiplies them into every row of A, so W is read once and never written out.
 * More rows: sgemm, which amortises the dequantization over the rows of A. With kiln's AVX-512
 * sgemm, A is packed once and the sgemm's own B panels (KGEMM_KC x KGEMM_NR, L1-sized) are filled
 * by dequantizing straight from the codes; otherwise each work item dequantizes a tile of output
 * columns (about 256 KiB) and calls cblas on it. AVX2/FMA code for 4-bit weights is picked at run
 * time; the portable C serves every bit width. */

enum { GEMV_ROWS = 8 };

typedef struct nbits_job {
    const nbits_cfg *c;
    const float *a, *scales, *zpf, *bias; /* float32 views */
    const uint8_t *b, *zpq;
    int64_t lda;        /* row stride of a (>= K: rows padded with zeros to whole blocks) */
    float *y;
    int64_t nt;         /* output columns per work item */
    int64_t ldw;        /* row stride of a dequantized tile: K rounded up to whole blocks */
    const float *ap;    /* a packed once for kiln's AVX-512 sgemm (NULL: cblas per tile) */
    int avx2;
    atomic_int failed;
} nbits_job;

/* Code k of a bits-packed byte row (low bits first). */
static inline int code_at(const uint8_t *p, int64_t k, int bits) {
    if (bits == 8) return p[k];
    int64_t bit = k * bits;
    return (p[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
}

/* Scale and zero point of block blk of column n. */
static inline void block_params(const nbits_job *j, int64_t n, int64_t blk, float *s, float *zp) {
    const nbits_cfg *c = j->c;
    int bits = (int)c->bits;
    int64_t i = n * c->kb + blk, zp_row = (c->kb * bits + 7) / 8;
    *s = j->scales[i];
    *zp = j->zpf ? j->zpf[i] : j->zpq ? (float)code_at(j->zpq + n * zp_row, blk, bits)
                                      : (float)(1 << (bits - 1));
}

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define NB_AVX2 __attribute__((target("avx2,fma")))

/* 16 4-bit codes (8 bytes, low nibble first) as two vectors of 8 floats, in order. */
NB_AVX2 static inline void unpack16(const uint8_t *p, __m256 *c0, __m256 *c1) {
    __m128i v = _mm_loadl_epi64((const __m128i *)p), m = _mm_set1_epi8(0x0f);
    __m128i lo = _mm_and_si128(v, m), hi = _mm_and_si128(_mm_srli_epi16(v, 4), m);
    __m128i codes = _mm_unpacklo_epi8(lo, hi);
    *c0 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(codes));
    *c1 = _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(_mm_srli_si128(codes, 8)));
}

NB_AVX2 static float hsum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

/* One row of a against four columns at once: eight independent FMA chains (one chain would wait
 * on FMA latency) and each load of a serves four columns. */
NB_AVX2 static void gemv4_row_x4(const nbits_job *j, int64_t n) {
    const nbits_cfg *c = j->c;
    __m256 acc[4][2];
    for (int t = 0; t < 4; t++) acc[t][0] = acc[t][1] = _mm256_setzero_ps();
    for (int64_t blk = 0; blk < c->kb; blk++) {
        __m256 sv[4], nzs[4];
        const uint8_t *q[4];
        for (int t = 0; t < 4; t++) {
            float s, zp;
            block_params(j, n + t, blk, &s, &zp);
            sv[t] = _mm256_set1_ps(s);
            nzs[t] = _mm256_set1_ps(-zp * s);
            q[t] = j->b + ((n + t) * c->kb + blk) * c->blob;
        }
        const float *a = j->a + blk * c->block;
        for (int64_t k = 0; k < c->block; k += 16) {
            __m256 x0 = _mm256_loadu_ps(a + k), x1 = _mm256_loadu_ps(a + k + 8);
            for (int t = 0; t < 4; t++) {
                __m256 w0, w1;
                unpack16(q[t] + k / 2, &w0, &w1);
                acc[t][0] = _mm256_fmadd_ps(_mm256_fmadd_ps(w0, sv[t], nzs[t]), x0, acc[t][0]);
                acc[t][1] = _mm256_fmadd_ps(_mm256_fmadd_ps(w1, sv[t], nzs[t]), x1, acc[t][1]);
            }
        }
    }
    for (int t = 0; t < 4; t++)
        j->y[n + t] = hsum8(_mm256_add_ps(acc[t][0], acc[t][1])) + (j->bias ? j->bias[n + t] : 0.0f);
}

/* Columns [n0, n1) of y = a · Wᵀ for 4-bit W and M <= GEMV_ROWS rows of a (padded to lda). */
NB_AVX2 static void gemv4_avx2(const nbits_job *j, int64_t n0, int64_t n1) {
    const nbits_cfg *c = j->c;
    int64_t M = c->M;
    if (M == 1)
        for (; n0 + 4 <= n1; n0 += 4) gemv4_row_x4(j, n0);
    for (int64_t n = n0; n < n1; n++) {
        __m256 acc[GEMV_ROWS][2];
        for (int64_t m = 0; m < M; m++) acc[m][0] = acc[m][1] = _mm256_setzero_ps();
        for (int64_t blk = 0; blk < c->kb; blk++) {
            float s, zp;
            block_params(j, n, blk, &s, &zp);
            __m256 sv = _mm256_set1_ps(s), nzs = _mm256_set1_ps(-zp * s);
            const uint8_t *q = j->b + (n * c->kb + blk) * c->blob;
            const float *a = j->a + blk * c->block;
            for (int64_t k = 0; k < c->block; k += 16) {
                __m256 w0, w1;
                unpack16(q + k / 2, &w0, &w1);
                w0 = _mm256_fmadd_ps(w0, sv, nzs); /* (q - zp) * s */
                w1 = _mm256_fmadd_ps(w1, sv, nzs);
                for (int64_t m = 0; m < M; m++) {
                    const float *am = a + m * j->lda + k;
                    acc[m][0] = _mm256_fmadd_ps(w0, _mm256_loadu_ps(am), acc[m][0]);
                    acc[m][1] = _mm256_fmadd_ps(w1, _mm256_loadu_ps(am + 8), acc[m][1]);
                }
            }
        }
        for (int64_t m = 0; m < M; m++)
            j->y[m * c->N + n] = hsum8(_mm256_add_ps(acc[m][0], acc[m][1])) + (j->bias ? j->bias[n] : 0.0f);
    }
}

/* Rows [n0, n0 + cnt) of W into w (row stride ldw), 4-bit codes. */
NB_AVX2 static void dequant4_avx2(const nbits_job *j, int64_t n0, int64_t cnt, float *w) {
    const nbits_cfg *c = j->c;
    for (int64_t r = 0; r < cnt; r++) {
        int64_t n = n0 + r;
        for (int64_t blk = 0; blk < c->kb; blk++) {
            float s, zp;
            block_params(j, n, blk, &s, &zp);
            __m256 sv = _mm256_set1_ps(s), nzs = _mm256_set1_ps(-zp * s);
            const uint8_t *q = j->b + (n * c->kb + blk) * c->blob;
            float *o = w + r * j->ldw + blk * c->block;
            for (int64_t k = 0; k < c->block; k += 16) {
                __m256 w0, w1;
                unpack16(q + k / 2, &w0, &w1);
                _mm256_storeu_ps(o + k, _mm256_fmadd_ps(w0, sv, nzs));
                _mm256_storeu_ps(o + k + 8, _mm256_fmadd_ps(w1, sv, nzs));
            }
        }
    }
}

/* Codes [k0, k0 + len) of column n (4-bit), k0 a multiple of 16, into out. */
NB_AVX2 static void span4_avx2(const nbits_job *j, int64_t n, int64_t k0, int64_t len, float *out) {
    const nbits_cfg *c = j->c;
    int64_t k = k0, end = k0 + len;
    while (k < end) {
        int64_t blk = k / c->block, bend = (blk + 1) * c->block < end ? (blk + 1) * c->block : end;
        float s, zp;
        block_params(j, n, blk, &s, &zp);
        __m256 sv = _mm256_set1_ps(s), nzs = _mm256_set1_ps(-zp * s);
        const uint8_t *q = j->b + (n * c->kb + blk) * c->blob - blk * c->block / 2;
        for (; k + 16 <= bend; k += 16) {
            __m256 w0, w1;
            unpack16(q + k / 2, &w0, &w1);
            _mm256_storeu_ps(out + (k - k0), _mm256_fmadd_ps(w0, sv, nzs));
            _mm256_storeu_ps(out + (k - k0) + 8, _mm256_fmadd_ps(w1, sv, nzs));
        }
        for (; k < bend; k++) out[k - k0] = ((float)code_at(q, k, 4) - zp) * s;
    }
}

/* Panel rows [0, kc) of 8 columns: cols[c] holds column c's kc values; row k goes to
 * pd + k * ld (8 floats). 8 x 8 blocks are transposed in registers. */
NB_AVX2 static void transpose8_store(float *const cols[8], int64_t kc, float *pd, int64_t ld) {
    int64_t k = 0;
    for (; k + 8 <= kc; k += 8) {
        __m256 r[8], t[8];
        for (int c = 0; c < 8; c++) r[c] = _mm256_loadu_ps(cols[c] + k);
        t[0] = _mm256_unpacklo_ps(r[0], r[1]);
        t[1] = _mm256_unpackhi_ps(r[0], r[1]);
        t[2] = _mm256_unpacklo_ps(r[2], r[3]);
        t[3] = _mm256_unpackhi_ps(r[2], r[3]);
        t[4] = _mm256_unpacklo_ps(r[4], r[5]);
        t[5] = _mm256_unpackhi_ps(r[4], r[5]);
        t[6] = _mm256_unpacklo_ps(r[6], r[7]);
        t[7] = _mm256_unpackhi_ps(r[6], r[7]);
        r[0] = _mm256_shuffle_ps(t[0], t[2], 0x44);
        r[1] = _mm256_shuffle_ps(t[0], t[2], 0xee);
        r[2] = _mm256_shuffle_ps(t[1], t[3], 0x44);
        r[3] = _mm256_shuffle_ps(t[1], t[3], 0xee);
        r[4] = _mm256_shuffle_ps(t[4], t[6], 0x44);
        r[5] = _mm256_shuffle_ps(t[4], t[6], 0xee);
        r[6] = _mm256_shuffle_ps(t[5], t[7], 0x44);
        r[7] = _mm256_shuffle_ps(t[5], t[7], 0xee);
        for (int i = 0; i < 4; i++) {
            _mm256_storeu_ps(pd + (k + i) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
            _mm256_storeu_ps(pd + (k + i + 4) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
        }
    }
    for (; k < kc; k++)
        for (int c = 0; c < 8; c++) pd[k * ld + c] = cols[c][k];
}

/* KILN_NBITS_ISA=portable keeps to the portable C (for tests of it on AVX2 machines). */
static int have_avx2(void) {
    const char *isa = getenv("KILN_NBITS_ISA");
    if (isa && !strcmp(isa, "portable")) return 0;
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}
#else
static void transpose8_store(float *const cols[8], int64_t kc, float *pd, int64_t ld) {
    (void)cols; (void)kc; (void)pd; (void)ld;
}
static int have_avx2(void) { return 0; }
static void span4_avx2(const nbits_job *j, int64_t n, int64_t k0, int64_t len, float *out) {
    (void)j; (void)n; (void)k0; (void)len; (void)out;
}
static void gemv4_avx2(const nbits_job *j, int64_t n0, int64_t n1) { (void)j; (void)n0; (void)n1; }
static void dequant4_avx2(const nbits_job *j, int64_t n0, int64_t cnt, float *w) {
    (void)j; (void)n0; (void)cnt; (void)w;
}
#endif

/* The portable fused product (any bits). */
static void gemv_portable(const nbits_job *j, int64_t n0, int64_t n1) {
    const nbits_cfg *c = j->c;
    int bits = (int)c->bits;
    float acc[GEMV_ROWS];
    for (int64_t n = n0; n < n1; n++) {
        for (int64_t m = 0; m < c->M; m++) acc[m] = 0.0f;
        for (int64_t blk = 0; blk < c->kb; blk++) {
            float s, zp;
            block_params(j, n, blk, &s, &zp);
            const uint8_t *q = j->b + (n * c->kb + blk) * c->blob;
            const float *a = j->a + blk * c->block;
            for (int64_t k = 0; k < c->block; k++) {
                float w = ((float)code_at(q, k, bits) - zp) * s;
                for (int64_t m = 0; m < c->M; m++) acc[m] += w * a[m * j->lda + k];
            }
        }
        for (int64_t m = 0; m < c->M; m++) j->y[m * c->N + n] = acc[m] + (j->bias ? j->bias[n] : 0.0f);
    }
}

/* Rows [n0, n0 + cnt) of W into w (row stride ldw; the padding of a last partial block is
 * dequantized too and meets zeros of a or is outside the product's K). */
static void dequant_rows(const nbits_job *j, int64_t n0, int64_t cnt, float *w) {
    const nbits_cfg *c = j->c;
    int bits = (int)c->bits;
    if (bits == 4 && j->avx2) {
        dequant4_avx2(j, n0, cnt, w);
        return;
    }
    for (int64_t r = 0; r < cnt; r++) {
        int64_t n = n0 + r;
        for (int64_t blk = 0; blk < c->kb; blk++) {
            float s, zp;
            block_params(j, n, blk, &s, &zp);
            const uint8_t *q = j->b + (n * c->kb + blk) * c->blob;
            float *o = w + r * j->ldw + blk * c->block;
            for (int64_t k = 0; k < c->block; k++) o[k] = ((float)code_at(q, k, bits) - zp) * s;
        }
    }
}

static void gemv_range(void *arg, int64_t begin, int64_t end) {
    nbits_job *j = arg;
    int64_t n0 = begin * j->nt, n1 = end * j->nt < j->c->N ? end * j->nt : j->c->N;
    if (j->c->bits == 4 && j->avx2) gemv4_avx2(j, n0, n1);
    else gemv_portable(j, n0, n1);
}

/* Codes [k0, k0 + len) of column n into out (any bits). */
static void span_portable(const nbits_job *j, int64_t n, int64_t k0, int64_t len, float *out) {
    const nbits_cfg *c = j->c;
    int bits = (int)c->bits;
    for (int64_t k = k0; k < k0 + len;) {
        int64_t blk = k / c->block, bend = (blk + 1) * c->block < k0 + len ? (blk + 1) * c->block : k0 + len;
        float s, zp;
        block_params(j, n, blk, &s, &zp);
        const uint8_t *q = j->b + (n * c->kb + blk) * c->blob;
        for (; k < bend; k++) out[k - k0] = ((float)code_at(q, k - blk * c->block, bits) - zp) * s;
    }
}

typedef struct panel_arg {
    const nbits_job *j;
    int64_t n0;     /* first W row of this product's columns */
    float *col;     /* 8 * KGEMM_KC floats of scratch */
} panel_arg;

/* The sgemm's B panels (Wᵀ rows [p0, p0 + kc) x columns [j0, j0 + nc), KGEMM_NR columns a panel,
 * row k at k * KGEMM_NR) dequantized straight from the codes: W never exists whole. */
static void pack_panel(void *arg, int64_t p0, int64_t kc, int64_t j0, int64_t nc, float *dst) {
    const panel_arg *pa = arg;
    const nbits_job *j = pa->j;
    int64_t panels = (nc + KGEMM_NR - 1) / KGEMM_NR;
    int fast = j->c->bits == 4 && j->avx2 && p0 % 16 == 0;
    for (int64_t q = 0; q < panels; q++) {
        float *pd = dst + q * KGEMM_NR * kc;
        int64_t jj = 0;
        for (; fast && jj + 8 <= KGEMM_NR && q * KGEMM_NR + jj + 8 <= nc; jj += 8) {
            float *cols[8];
            for (int c = 0; c < 8; c++) {
                cols[c] = pa->col + c * KGEMM_KC;
                span4_avx2(j, pa->n0 + j0 + q * KGEMM_NR + jj + c, p0, kc, cols[c]);
            }
            transpose8_store(cols, kc, pd + jj, KGEMM_NR);
        }
        for (; jj < KGEMM_NR; jj++) {
            int64_t col = q * KGEMM_NR + jj;
            if (col >= nc) {
                for (int64_t k = 0; k < kc; k++) pd[k * KGEMM_NR + jj] = 0.0f;
                continue;
            }
            if (fast) span4_avx2(j, pa->n0 + j0 + col, p0, kc, pa->col);
            else span_portable(j, pa->n0 + j0 + col, p0, kc, pa->col);
            for (int64_t k = 0; k < kc; k++) pd[k * KGEMM_NR + jj] = pa->col[k];
        }
    }
}

static void tile_range(void *arg, int64_t begin, int64_t end) {
    nbits_job *j = arg;
    const nbits_cfg *c = j->c;
    if (j->ap) { /* B panels dequantized by the sgemm's packing callback */
        float col[8 * KGEMM_KC];
        for (int64_t t = begin; t < end; t++) {
            int64_t n0 = t * j->nt, cnt = c->N - n0 < j->nt ? c->N - n0 : j->nt;
            panel_arg pa = {j, n0, col};
            float *y = j->y + n0;
            if (j->bias)
                for (int64_t m = 0; m < c->M; m++) memcpy(y + m * c->N, j->bias + n0, sizeof(float) * (size_t)cnt);
            if (!kgemm_sgemm_avx512_packed_cb(j->ap, c->M, 0, c->M, cnt, c->K, 1.0f, pack_panel, &pa,
                                              j->bias ? 1.0f : 0.0f, y, c->N, NULL))
                atomic_store(&j->failed, 1);
        }
        return;
    }
    float *w = malloc(sizeof(float) * (size_t)(j->nt * j->ldw));
    if (!w) {
        atomic_store(&j->failed, 1);
        return;
    }
    for (int64_t t = begin; t < end; t++) {
        int64_t n0 = t * j->nt, cnt = c->N - n0 < j->nt ? c->N - n0 : j->nt;
        dequant_rows(j, n0, cnt, w);
        float *y = j->y + n0;
        if (j->bias)
            for (int64_t m = 0; m < c->M; m++) memcpy(y + m * c->N, j->bias + n0, sizeof(float) * (size_t)cnt);
        kgemm_f32_serial(0, 1, c->M, cnt, c->K, 1.0f, j->a, j->lda, w, j->ldw, j->bias ? 1.0f : 0.0f,
                         y, c->N);
    }
    free(w);
}

/* A float32 view of t: its own data, or a converted copy in *owned. */
static kiln_status as_f32(kiln_ctx *ctx, const kiln_tensor *t, const float **out, float **owned) {
    *owned = NULL;
    if (!t) {
        *out = NULL;
        return KILN_OK;
    }
    if (t->dtype == KILN_DTYPE_FLOAT) {
        *out = t->data;
        return KILN_OK;
    }
    int64_t n = kiln_numel(t);
    *owned = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!*owned) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kcvt_to_f32(ctx, t->dtype, t->data, *owned, n);
    *out = *owned;
    return KILN_OK;
}

static kiln_status nbits_compute(kiln_ctx *ctx) {
    nbits_cfg c;
    KILN_TRY(nbits_parse(ctx, &c));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    c.M = kiln_numel(c.a) / c.K;
    if (c.M == 0) return KILN_OK;
    kgemm_blas_serial();
    nbits_job j;
    memset(&j, 0, sizeof j);
    atomic_init(&j.failed, 0);
    j.c = &c;
    j.b = c.b->data;
    if (c.zp && !c.zp_float) j.zpq = c.zp->data;
    float *own[6] = {0};
    kiln_status st = as_f32(ctx, c.a, &j.a, &own[0]);
    if (st == KILN_OK) st = as_f32(ctx, c.scales, &j.scales, &own[1]);
    if (st == KILN_OK && c.zp_float) st = as_f32(ctx, c.zp, &j.zpf, &own[2]);
    if (st == KILN_OK) st = as_f32(ctx, c.bias, &j.bias, &own[3]);
    if (st == KILN_OK && y->dtype != KILN_DTYPE_FLOAT) {
        own[4] = malloc(sizeof(float) * (size_t)(c.M * c.N));
        if (!own[4]) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    int gemv = c.M <= GEMV_ROWS;
    j.avx2 = have_avx2();
    j.lda = c.K;
    j.ldw = c.kb * c.block;
    if (st == KILN_OK && gemv && j.ldw != c.K) {
        /* the fused product reads whole blocks: rows of A padded with zeros to ldw */
        own[5] = calloc((size_t)(c.M * j.ldw), sizeof(float));
        if (!own[5]) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        for (int64_t m = 0; st == KILN_OK && m < c.M; m++)
            memcpy(own[5] + m * j.ldw, j.a + m * c.K, sizeof(float) * (size_t)c.K);
        j.a = own[5];
        j.lda = j.ldw;
    }
    if (st == KILN_OK) {
        j.y = own[4] ? own[4] : y->data;
        int64_t threads = kiln_num_threads(ctx);
        if (gemv) {
            /* columns per item: a few per thread at least, W read once in all */
            int64_t nt = c.N / (8 * threads);
            j.nt = nt < 16 ? 16 : nt;
            int64_t items = (c.N + j.nt - 1) / j.nt;
            double ns = (double)c.N * (double)c.kb * (double)c.block * (0.3 + 0.15 * (double)c.M);
            kiln_parallel_for(ctx, items, kpar_grain(items, ns), gemv_range, &j);
        } else {
            /* With kiln's AVX-512 sgemm, A is packed once and the sgemm's B panels are
             * dequantized by its packing callback, so a work item can span many columns. */
            if (kgemm_avx512_available() && c.M >= KGEMM_MR) {
                own[5] = kgemm_alloc_packed(kgemm_avx512_packed_size(c.M, c.K));
                if (own[5]) kgemm_avx512_pack_a(0, c.M, c.K, j.a, j.lda, own[5]);
                j.ap = own[5];
            }
            int64_t nt;
            if (j.ap) {
                nt = (c.N + 2 * threads - 1) / (2 * threads);
                nt = (nt + KGEMM_NR - 1) / KGEMM_NR * KGEMM_NR;
            } else {
                /* a dequantized tile of about 256 KiB stays in L2 while sgemm streams A by it */
                nt = (64 * 1024) / j.ldw;
                nt = nt < 8 ? 8 : nt > 256 ? 256 : nt / 8 * 8;
                while ((c.N + nt - 1) / nt < 2 * threads && nt > 8) nt = nt / 2 < 8 ? 8 : nt / 2;
            }
            int64_t tiles = (c.N + nt - 1) / nt;
            j.nt = nt;
            double ns = (double)c.N * c.K * (1.0 + 0.2 * (double)c.M);
            kiln_parallel_for(ctx, tiles, kpar_grain(tiles, ns), tile_range, &j);
        }
        if (atomic_load(&j.failed)) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for a dequantized tile");
        else if (own[4]) kcvt_from_f32(ctx, y->dtype, own[4], y->data, c.M * c.N);
    }
    for (int i = 0; i < 6; i++) free(own[i]);
    return st;
}

/* ---- GatherBlockQuantized ---- */

enum { GB_DATA, GB_IDX, GB_SCALES, GB_ZP };

typedef struct gbq_cfg {
    const kiln_tensor *data, *idx, *scales, *zp;
    int gaxis, qaxis, bits, dtype;
    int64_t block;
    int64_t dims[KILN_MAX_RANK]; /* logical (unpacked) data shape */
    int rank;
} gbq_cfg;

static kiln_status gbq_parse(kiln_ctx *ctx, gbq_cfg *c) {
    const kiln_node *node = ctx->node;
    char s1[96], s2[96];
    memset(c, 0, sizeof *c);
    kiln_tensor *d, *ix, *sc;
    KILN_TRY(kiln_need_input(ctx, GB_DATA, &d));
    KILN_TRY(kiln_need_input(ctx, GB_IDX, &ix));
    KILN_TRY(kiln_need_input(ctx, GB_SCALES, &sc));
    c->data = d;
    c->idx = ix;
    c->scales = sc;
    c->zp = kiln_input(ctx, GB_ZP);
    if (d->dtype != KILN_DTYPE_UINT8 && d->dtype != KILN_DTYPE_INT4 && d->dtype != KILN_DTYPE_UINT4)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "data has element type %s; supported: int4, uint4, uint8",
                         kiln_dtype_name(d->dtype));
    if (ix->dtype != KILN_DTYPE_INT32 && ix->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices have type %s; expected int32 or int64",
                         kiln_dtype_name(ix->dtype));
    if (!half_or_float(sc->dtype) && sc->dtype != KILN_DTYPE_BFLOAT16)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "scales have type %s; expected float, float16 or bfloat16",
                         kiln_dtype_name(sc->dtype));
    c->dtype = sc->dtype;
    if (c->zp && c->zp->dtype != d->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "zero_points have type %s; expected data's type %s",
                         kiln_dtype_name(c->zp->dtype), kiln_dtype_name(d->dtype));
    c->bits = d->dtype == KILN_DTYPE_UINT8 ? (int)kiln_attr_int(node, "bits", 4) : 4;
    if (c->bits != 4 && c->bits != 8 && c->bits != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bits must be 2, 4 or 8, got %d", c->bits);
    c->block = kiln_attr_int(node, "block_size", 128);
    if (c->block < 16 || c->block > (1 << 20) || (c->block & (c->block - 1)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "block_size must be a power of 2 in [16, 2^20], got %lld", (long long)c->block);
    if (d->rank < 0 || ix->rank < 0) return KILN_OK;
    if (d->rank < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "data must have rank >= 1");
    c->rank = d->rank;
    memcpy(c->dims, d->dims, sizeof(int64_t) * (size_t)d->rank);
    /* uint8 with bits < 8 packs 8/bits codes per byte along the last axis */
    if (d->dtype == KILN_DTYPE_UINT8 && c->bits < 8 && c->dims[c->rank - 1] >= 0)
        c->dims[c->rank - 1] *= 8 / c->bits;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(node, "gather_axis", 0), d->rank, "gather_axis", &c->gaxis));
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(node, "quantize_axis", 1), d->rank, "quantize_axis", &c->qaxis));
    if (d->dtype == KILN_DTYPE_UINT8 && c->gaxis != 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "gather_axis must be 0 for uint8 data, got %d",
                         c->gaxis);
    if (d->dtype == KILN_DTYPE_UINT8 && c->bits < 8 && c->qaxis != c->rank - 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "quantize_axis must be the last axis for packed uint8 data");
    /* scales: data's shape with the quantize axis divided into blocks */
    if (sc->rank != d->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scales %s must have data's rank %d",
                         kgemm_dims_str(sc->rank, sc->dims, s1, sizeof s1), d->rank);
    for (int i = 0; i < d->rank; i++) {
        int64_t want = i == c->qaxis ? (c->dims[i] + c->block - 1) / c->block : c->dims[i];
        if (sc->dims[i] >= 0 && c->dims[i] >= 0 && sc->dims[i] != want)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "scales %s do not match data %s with block_size %lld on axis %d",
                             kgemm_dims_str(sc->rank, sc->dims, s1, sizeof s1),
                             kgemm_dims_str(c->rank, c->dims, s2, sizeof s2), (long long)c->block,
                             c->qaxis);
    }
    if (c->zp) {
        int64_t want = kiln_numel(sc);
        if (d->dtype == KILN_DTYPE_UINT8 && c->bits < 8) {
            int64_t last = sc->dims[sc->rank - 1], per = 8 / c->bits;
            want = want / (last ? last : 1) * ((last + per - 1) / per);
        }
        int64_t zn = kiln_numel(c->zp);
        if (zn >= 0 && want >= 0 && zn != want)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "zero_points %s hold %lld codes; expected %lld (one per block)",
                             kgemm_dims_str(c->zp->rank, c->zp->dims, s1, sizeof s1), (long long)zn,
                             (long long)want);
    }
    return KILN_OK;
}

static kiln_status gbq_infer(kiln_ctx *ctx) {
    if (ctx->static_mode) {
        const kiln_tensor *sc = kiln_input(ctx, GB_SCALES), *zp = kiln_input(ctx, GB_ZP);
        const kiln_tensor *d = kiln_input(ctx, GB_DATA), *ix = kiln_input(ctx, GB_IDX);
        if ((d && !kiln_shape_concrete(d)) || (ix && !kiln_shape_concrete(ix)) ||
            (sc && !kiln_shape_concrete(sc)) || (zp && !kiln_shape_concrete(zp)))
            return kiln_set_output_unknown(ctx, 0, sc ? sc->dtype : KILN_DTYPE_FLOAT);
    }
    gbq_cfg c;
    KILN_TRY(gbq_parse(ctx, &c));
    if (c.data->rank < 0 || c.idx->rank < 0) return kiln_set_output_unknown(ctx, 0, c.dtype);
    int rank = c.rank - 1 + c.idx->rank;
    if (rank > KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output rank %d too large", rank);
    int64_t d[KILN_MAX_RANK];
    int r = 0;
    for (int i = 0; i < c.gaxis; i++) d[r++] = c.dims[i];
    for (int i = 0; i < c.idx->rank; i++) d[r++] = c.idx->dims[i];
    for (int i = c.gaxis + 1; i < c.rank; i++) d[r++] = c.dims[i];
    return kiln_set_output(ctx, 0, c.dtype, rank, d);
}

/* Code number e (row-major over the logical shape) of data, as an integer. */
static inline int gbq_code(const gbq_cfg *c, const uint8_t *p, int64_t e) {
    if (c->data->dtype == KILN_DTYPE_UINT8) return code_at(p, e, c->bits);
    int v = (p[e >> 1] >> ((e & 1) * 4)) & 15;
    if (c->data->dtype == KILN_DTYPE_INT4 && v >= 8) v -= 16;
    return v;
}

static kiln_status gbq_compute(kiln_ctx *ctx) {
    gbq_cfg c;
    KILN_TRY(gbq_parse(ctx, &c));
    kiln_tensor *y = kiln_output(ctx, 0);
    int64_t ny = kiln_numel(y);
    if (!y || ny == 0) return KILN_OK;
    int64_t outer = 1, inner = 1, G = c.dims[c.gaxis];
    for (int i = 0; i < c.gaxis; i++) outer *= c.dims[i];
    for (int i = c.gaxis + 1; i < c.rank; i++) inner *= c.dims[i];
    int64_t nidx = kiln_numel(c.idx);
    /* strides of the logical data and of the scales for the quantize axis */
    int64_t q_in = 1; /* elements after the quantize axis */
    for (int i = c.qaxis + 1; i < c.rank; i++) q_in *= c.dims[i];
    int64_t qd = c.dims[c.qaxis], qb = (qd + c.block - 1) / c.block;
    int zp_packed = c.data->dtype != KILN_DTYPE_UINT8 || c.bits < 8;
    int64_t zp_last = c.scales->dims[c.rank - 1]; /* codes per zero-point row before packing */
    int64_t zp_row = c.data->dtype == KILN_DTYPE_UINT8 && c.bits < 8
                         ? (zp_last + 8 / c.bits - 1) / (8 / c.bits) * (8 / c.bits) : zp_last;
    int dflt = c.data->dtype == KILN_DTYPE_UINT8 ? 1 << (c.bits - 1) : 0;
    float *sc = NULL, *out = NULL;
    kiln_status st = as_f32(ctx, c.scales, (const float **)&sc, &out);
    if (st != KILN_OK) return st;
    const float *scales = sc;
    float *res = y->dtype == KILN_DTYPE_FLOAT ? y->data : malloc(sizeof(float) * (size_t)ny);
    if (!res) {
        free(out);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    const uint8_t *data = c.data->data, *zp = c.zp ? c.zp->data : NULL;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t t = 0; t < nidx; t++) {
            int64_t ix = c.idx->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)c.idx->data)[t]
                                                         : ((const int32_t *)c.idx->data)[t];
            float *dst = res + (o * nidx + t) * inner;
            if (ix < 0) ix += G;
            if (ix < 0 || ix >= G) { /* out of range: zeros, as onnxruntime documents */
                memset(dst, 0, sizeof(float) * (size_t)inner);
                continue;
            }
            int64_t base = (o * G + ix) * inner;
            for (int64_t i = 0; i < inner; i++) {
                int64_t e = base + i;
                /* position along the quantize axis and the matching scale index */
                int64_t qa = (e / q_in) % qd, pre = e / (q_in * qd), post = e % q_in;
                int64_t si = (pre * qb + qa / c.block) * q_in + post;
                int z = dflt;
                if (zp) {
                    if (zp_packed) {
                        int64_t row = si / zp_last, col = si % zp_last;
                        int64_t zi = row * zp_row + col;
                        if (c.data->dtype == KILN_DTYPE_UINT8) z = code_at(zp, zi, c.bits);
                        else z = gbq_code(&c, zp, zi);
                    } else {
                        z = zp[si];
                    }
                }
                dst[i] = (float)(gbq_code(&c, data, e) - z) * scales[si];
            }
        }
    }
    if (res != y->data) {
        kcvt_from_f32(ctx, y->dtype, res, y->data, ny);
        free(res);
    }
    free(out);
    return KILN_OK;
}

/* Entry points listed in contrib_transformers.c's table. */
kiln_status kctr_nbits_infer(kiln_ctx *ctx) { return nbits_infer(ctx); }
kiln_status kctr_nbits_compute(kiln_ctx *ctx) { return nbits_compute(ctx); }
kiln_status kctr_gbq_infer(kiln_ctx *ctx) { return gbq_infer(ctx); }
kiln_status kctr_gbq_compute(kiln_ctx *ctx) { return gbq_compute(ctx); }
