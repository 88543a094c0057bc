/* 1x1 convolutions of 1x1 maps (the squeeze-excite blocks of MobileNetV3 and EfficientNet): a
 * dense layer, y[n, m] = sum_k w[m, k] x[n, k], computed from the weights the AVX-512 product
 * packed at init. One matrix-vector product per image (sgemv) streamed the weights once per
 * image, on one thread, from pages that had been handed back after packing; here each 12-row
 * panel of packed weights is read once per four images (from L1 after the first), with one
 * image's 12 outputs in the lanes of a vector and the input broadcast, and the panels are spread
 * over the threads. */
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

int kconv_matvec_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wpk,
                     const float *bias, const float *z, const kconv_act *act, float *y) {
    if (!wpk || !kgemm_avx512_available()) return 0;
    matvec_job j = {g, x, wpk, bias, y, g->M / g->group, g->C / g->group, 0, 0};
    j.Mpad = (j.Mg + KGEMM_MR - 1) / KGEMM_MR * KGEMM_MR;
    j.panels = j.Mpad / KGEMM_MR;
    int64_t n = g->group * j.panels;
    kiln_parallel_for(ctx, n, kpar_grain(n, (double)g->N * g->M * j.Kc / 16.0), matvec_run, &j);
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
