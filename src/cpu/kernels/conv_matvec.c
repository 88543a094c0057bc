/* 1x1 convolutions of 1x1 maps (the squeeze-excite blocks of MobileNetV3 and EfficientNet): a
 * dense layer, y[n, m] = sum_k w[m, k] x[n, k], computed from the weights the AVX-512 product
 * packed at init. One matrix-vector product per image (sgemv) streamed the weights once per
 * image, on one thread, from pages that had been handed back after packing; here each 12-row
 * panel of packed weights is read once per four images (from L1 after the first), with one
 * image's 12 outputs in the lanes of a vector and the input broadcast, and the panels are spread
 * over the threads.
 * The AVX2+FMA version below (CPUs without AVX-512, gemm_avx2.c's engine) reads the same packed
 * panels, a panel's 12 rows as one 8-lane and one 4-lane vector. */
#include "conv_util.h"
#include "gemm_util.h"
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

typedef struct matvec_job {
    const kconv_geom *g;
    const float *x, *wpk, *bias;
    float *y;
    int64_t Mg, Kc, Mpad, panels; /* panels per group */
} matvec_job;

/* Panel rows [r0, r0 + 12) of group grp: its packed weights, KC-deep blocks of [kc][12]. */
static inline const float *panel_block(const matvec_job *j, int64_t grp, int64_t r0, int64_t pc,
                                       int64_t *kc) {
    *kc = j->Kc - pc < KGEMM_KC ? j->Kc - pc : KGEMM_KC;
    return j->wpk + grp * kgemm_avx512_packed_size(j->Mg, j->Kc) + pc * j->Mpad + r0 * *kc;
}

__attribute__((target("avx512f"))) static void panel_store(const matvec_job *j, int64_t grp,
                                                           int64_t r0, int64_t n, __m512 s) {
    int64_t rows = j->Mg - r0 < KGEMM_MR ? j->Mg - r0 : KGEMM_MR, m0 = grp * j->Mg + r0;
    __mmask16 om = (__mmask16)((1u << rows) - 1);
    if (j->bias) s = _mm512_add_ps(s, _mm512_maskz_loadu_ps(om, j->bias + m0));
    _mm512_mask_storeu_ps(j->y + n * j->g->M + m0, om, s);
}

#define MV_LANES ((__mmask16)((1u << KGEMM_MR) - 1))
#define MV_W(k) _mm512_maskz_loadu_ps(MV_LANES, a + (k) * KGEMM_MR)
#define MV_X(i, k) _mm512_set1_ps(xk[(i) * ldx + (k)])

/* One image: eight accumulators over interleaved k, so the FMA chains do not wait on each other. */
__attribute__((target("avx512f"))) static void panel_1(const matvec_job *j, int64_t grp, int64_t r0,
                                                       int64_t n) {
    const float *xg = j->x + n * j->g->C + grp * j->Kc;
    int64_t ldx = 0;
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0, c6 = c0, c7 = c0;
    for (int64_t pc = 0, kc; pc < j->Kc; pc += KGEMM_KC) {
        const float *a = panel_block(j, grp, r0, pc, &kc), *xk = xg + pc;
        int64_t k = 0;
        for (; k + 8 <= kc; k += 8, a += 8 * KGEMM_MR, xk += 8) {
            c0 = _mm512_fmadd_ps(MV_W(0), MV_X(0, 0), c0);
            c1 = _mm512_fmadd_ps(MV_W(1), MV_X(0, 1), c1);
            c2 = _mm512_fmadd_ps(MV_W(2), MV_X(0, 2), c2);
            c3 = _mm512_fmadd_ps(MV_W(3), MV_X(0, 3), c3);
            c4 = _mm512_fmadd_ps(MV_W(4), MV_X(0, 4), c4);
            c5 = _mm512_fmadd_ps(MV_W(5), MV_X(0, 5), c5);
            c6 = _mm512_fmadd_ps(MV_W(6), MV_X(0, 6), c6);
            c7 = _mm512_fmadd_ps(MV_W(7), MV_X(0, 7), c7);
        }
        for (; k < kc; k++, a += KGEMM_MR, xk++) c0 = _mm512_fmadd_ps(MV_W(0), MV_X(0, 0), c0);
    }
    c0 = _mm512_add_ps(_mm512_add_ps(c0, c1), _mm512_add_ps(c2, c3));
    c4 = _mm512_add_ps(_mm512_add_ps(c4, c5), _mm512_add_ps(c6, c7));
    panel_store(j, grp, r0, n, _mm512_add_ps(c0, c4));
}

/* Four images [n, n + 4), two interleaved k phases each: one weight load feeds four FMAs. */
__attribute__((target("avx512f"))) static void panel_4(const matvec_job *j, int64_t grp, int64_t r0,
                                                       int64_t n) {
    const float *xg = j->x + n * j->g->C + grp * j->Kc;
    int64_t ldx = j->g->C;
    __m512 c0 = _mm512_setzero_ps(), c1 = c0, c2 = c0, c3 = c0, d0 = c0, d1 = c0, d2 = c0, d3 = c0;
    for (int64_t pc = 0, kc; pc < j->Kc; pc += KGEMM_KC) {
        const float *a = panel_block(j, grp, r0, pc, &kc), *xk = xg + pc;
        int64_t k = 0;
        for (; k + 2 <= kc; k += 2, a += 2 * KGEMM_MR, xk += 2) {
            __m512 w0 = MV_W(0), w1 = MV_W(1);
            c0 = _mm512_fmadd_ps(w0, MV_X(0, 0), c0);
            c1 = _mm512_fmadd_ps(w0, MV_X(1, 0), c1);
            c2 = _mm512_fmadd_ps(w0, MV_X(2, 0), c2);
            c3 = _mm512_fmadd_ps(w0, MV_X(3, 0), c3);
            d0 = _mm512_fmadd_ps(w1, MV_X(0, 1), d0);
            d1 = _mm512_fmadd_ps(w1, MV_X(1, 1), d1);
            d2 = _mm512_fmadd_ps(w1, MV_X(2, 1), d2);
            d3 = _mm512_fmadd_ps(w1, MV_X(3, 1), d3);
        }
        if (k < kc) {
            __m512 w0 = MV_W(0);
            c0 = _mm512_fmadd_ps(w0, MV_X(0, 0), c0);
            c1 = _mm512_fmadd_ps(w0, MV_X(1, 0), c1);
            c2 = _mm512_fmadd_ps(w0, MV_X(2, 0), c2);
            c3 = _mm512_fmadd_ps(w0, MV_X(3, 0), c3);
        }
    }
    panel_store(j, grp, r0, n, _mm512_add_ps(c0, d0));
    panel_store(j, grp, r0, n + 1, _mm512_add_ps(c1, d1));
    panel_store(j, grp, r0, n + 2, _mm512_add_ps(c2, d2));
    panel_store(j, grp, r0, n + 3, _mm512_add_ps(c3, d3));
}

__attribute__((target("avx512f"))) static void matvec_run(void *arg, int64_t p0, int64_t p1) {
    const matvec_job *j = arg;
    for (int64_t p = p0; p < p1; p++) {
        int64_t grp = p / j->panels, r0 = p % j->panels * KGEMM_MR, n = 0;
        for (; n + 4 <= j->g->N; n += 4) panel_4(j, grp, r0, n);
        for (; n < j->g->N; n++) panel_1(j, grp, r0, n);
    }
}

/* ---- AVX2+FMA: rows 0-7 of a panel in a ymm, rows 8-11 in an xmm ----
 * The panels are padded to 12 rows, so both weight loads are whole; the one broadcast of an
 * input feeds both halves. Only a short last panel is stored row by row: AVX2's masked loads and
 * stores are microcoded on AMD, slower than the dozen scalar moves. */
#define AVX2_FN __attribute__((target("avx2,fma")))
#define MV2_WL(k) _mm256_loadu_ps(a + (k) * KGEMM_MR)
#define MV2_WH(k) _mm_loadu_ps(a + (k) * KGEMM_MR + 8)
#define MV2_X(i, k) _mm256_broadcast_ss(xk + (i) * ldx + (k))
#define MV2_FMA(lo, hi, k, xv)                                                                     \
    (lo = _mm256_fmadd_ps(MV2_WL(k), xv, lo),                                                      \
     hi = _mm_fmadd_ps(MV2_WH(k), _mm256_castps256_ps128(xv), hi))

AVX2_FN static void panel_store_avx2(const matvec_job *j, int64_t grp, int64_t r0, int64_t n,
                                     __m256 lo, __m128 hi) {
    int64_t rows = j->Mg - r0 < KGEMM_MR ? j->Mg - r0 : KGEMM_MR, m0 = grp * j->Mg + r0;
    float *y = j->y + n * j->g->M + m0;
    const float *b = j->bias ? j->bias + m0 : NULL;
    if (rows == KGEMM_MR) {
        if (b) lo = _mm256_add_ps(lo, _mm256_loadu_ps(b)), hi = _mm_add_ps(hi, _mm_loadu_ps(b + 8));
        _mm256_storeu_ps(y, lo);
        _mm_storeu_ps(y + 8, hi);
        return;
    }
    float t[KGEMM_MR];
    _mm256_storeu_ps(t, lo);
    _mm_storeu_ps(t + 8, hi);
    for (int64_t r = 0; r < rows; r++) y[r] = b ? t[r] + b[r] : t[r];
}

/* One image: the weights stream from memory once, so four taps in flight (eight FMA chains)
 * keep the loads coming rather than waiting on one accumulator. */
AVX2_FN static void panel_1_avx2(const matvec_job *j, int64_t grp, int64_t r0, int64_t n) {
    const float *xg = j->x + n * j->g->C + grp * j->Kc;
    const int64_t ldx = 0;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    __m128 e0 = _mm_setzero_ps(), e1 = e0, e2 = e0, e3 = e0;
    for (int64_t pc = 0, kc; pc < j->Kc; pc += KGEMM_KC) {
        const float *a = panel_block(j, grp, r0, pc, &kc), *xk = xg + pc;
        int64_t k = 0;
        for (; k + 4 <= kc; k += 4, a += 4 * KGEMM_MR, xk += 4) {
            __m256 x0 = MV2_X(0, 0), x1 = MV2_X(0, 1), x2 = MV2_X(0, 2), x3 = MV2_X(0, 3);
            MV2_FMA(c0, e0, 0, x0);
            MV2_FMA(c1, e1, 1, x1);
            MV2_FMA(c2, e2, 2, x2);
            MV2_FMA(c3, e3, 3, x3);
        }
        for (; k < kc; k++, a += KGEMM_MR, xk++) {
            __m256 x0 = MV2_X(0, 0);
            MV2_FMA(c0, e0, 0, x0);
        }
    }
    c0 = _mm256_add_ps(_mm256_add_ps(c0, c1), _mm256_add_ps(c2, c3));
    e0 = _mm_add_ps(_mm_add_ps(e0, e1), _mm_add_ps(e2, e3));
    panel_store_avx2(j, grp, r0, n, c0, e0);
}

/* Four images [n, n + 4), one tap at a time: each weight load feeds four FMAs (eight chains, 8
 * of the 16 registers), the panel read from L1 after the first group of images. */
AVX2_FN static void panel_4_avx2(const matvec_job *j, int64_t grp, int64_t r0, int64_t n) {
    const float *xg = j->x + n * j->g->C + grp * j->Kc;
    const int64_t ldx = j->g->C;
    __m256 c0 = _mm256_setzero_ps(), c1 = c0, c2 = c0, c3 = c0;
    __m128 e0 = _mm_setzero_ps(), e1 = e0, e2 = e0, e3 = e0;
    for (int64_t pc = 0, kc; pc < j->Kc; pc += KGEMM_KC) {
        const float *a = panel_block(j, grp, r0, pc, &kc), *xk = xg + pc;
        for (int64_t k = 0; k < kc; k++, a += KGEMM_MR, xk++) {
            __m256 x0 = MV2_X(0, 0), x1 = MV2_X(1, 0), x2 = MV2_X(2, 0), x3 = MV2_X(3, 0);
            MV2_FMA(c0, e0, 0, x0);
            MV2_FMA(c1, e1, 0, x1);
            MV2_FMA(c2, e2, 0, x2);
            MV2_FMA(c3, e3, 0, x3);
        }
    }
    panel_store_avx2(j, grp, r0, n, c0, e0);
    panel_store_avx2(j, grp, r0, n + 1, c1, e1);
    panel_store_avx2(j, grp, r0, n + 2, c2, e2);
    panel_store_avx2(j, grp, r0, n + 3, c3, e3);
}

AVX2_FN static void matvec_run_avx2(void *arg, int64_t p0, int64_t p1) {
    const matvec_job *j = arg;
    for (int64_t p = p0; p < p1; p++) {
        int64_t grp = p / j->panels, r0 = p % j->panels * KGEMM_MR, n = 0;
        for (; n + 4 <= j->g->N; n += 4) panel_4_avx2(j, grp, r0, n);
        for (; n < j->g->N; n++) panel_1_avx2(j, grp, r0, n);
    }
}

/* Multiply-adds of panel i, for KILN_DEBUG_PARTITION's report. */
static double matvec_cost(const void *arg, int64_t i) {
    const matvec_job *j = arg;
    int64_t r0 = i % j->panels * KGEMM_MR, rows = j->Mg - r0 < KGEMM_MR ? j->Mg - r0 : KGEMM_MR;
    return (double)j->g->N * rows * j->Kc;
}

/* The packed weights exist only where the packed product runs, so AVX2 here means its AVX2
 * engine (KILN_NO_AVX2=1 leaves no packed weights and the sgemv fallback). */
int kconv_matvec_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wpk,
                     const float *bias, const float *z, const kconv_act *act, float *y) {
    if (!wpk) return 0;
    const int avx512 = kgemm_avx512_available();
    if (!avx512 && !(kgemm_avx2_available() && kgemm_packed_available())) return 0;
    matvec_job j = {g, x, wpk, bias, y, g->M / g->group, g->C / g->group, 0, 0};
    j.Mpad = (j.Mg + KGEMM_MR - 1) / KGEMM_MR * KGEMM_MR;
    j.panels = j.Mpad / KGEMM_MR;
    int64_t n = g->group * j.panels;
    /* about one multiply-add per lane per nanosecond */
    double lanes = avx512 ? 16.0 : 8.0;
    int64_t grain = kpar_grain(n, (double)g->N * g->M * j.Kc / lanes);
    if (kconv_debug_partition())
        kconv_report_partition(avx512 ? "matvec-avx512" : "matvec-avx2", g, kiln_num_threads(ctx), n,
                               grain, matvec_cost, &j, 1.0);
    kiln_parallel_for(ctx, n, grain, avx512 ? matvec_run : matvec_run_avx2, &j);
    if (z) kvec_add_f32(y, z, g->N * g->M);
    if (act && act->kind != KACT_NONE) kconv_apply_act(act, y, g->N * g->M);
    return 1;
}
#else
int kconv_matvec_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wpk,
                     const float *bias, const float *z, const kconv_act *act, float *y) {
    return 0;
}
#endif
