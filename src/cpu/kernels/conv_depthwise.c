/* Depthwise convolution (one input channel per group), 1-D and 2-D, computed directly: im2col
 * and GEMM would do one tiny product per channel. Each input plane is first copied with its zero
 * padding and split by stride phase (see dw_plan), so that every kernel tap reads one contiguous,
 * in-bounds run for the whole plane; one loop with several vector accumulators then sums all taps,
 * which also keeps small maps (7x7, 14x14) vectorised. An AVX2/FMA version is chosen at run time
 * where the CPU has it. */
#include "conv_util.h"
#include "gemm_util.h"
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#include "avx2_part.h"
#define DW_HAVE_AVX2 1
#include "conv_act_avx2.h"
#endif

int kconv_depthwise_ok(const kconv_geom *g) {
    if (g->nd < 1 || g->nd > 2 || g->group != g->C || g->group < 1 || g->M % g->group) return 0;
    return g->k_size <= 4096;
}

/* For each of `rows` rows: out[r*ldo + 0..n) = bias + sum_t wt[t] * src[t][r*ldi + 0..n). Every
 * src[t] row is readable up to n rounded up to 16 (the plane copy carries zero slack). */
static void dw_run_plain(int nt, const float *const *src, const float *wt, float bias, float *out,
                         int64_t rows, int64_t n, int64_t ldi, int64_t ldo) {
    for (int64_t r = 0; r < rows; r++) {
        float *o = out + r * ldo;
        for (int64_t i = 0; i < n; i++) {
            float a = bias;
            for (int t = 0; t < nt; t++) a += wt[t] * src[t][r * ldi + i];
            o[i] = a;
        }
    }
}

#ifdef DW_HAVE_AVX2
/* FusedConv's activation on the row's sums before they are stored, instead of a second pass over
 * each plane (3.5% of MobileNetV3-Large at one thread on the EPYC VM); kconv_actv_apply8 keeps
 * kconv_apply_act's formulas, so the values are the same. */
/* mode (KACTV_*, the activation p's) is a constant at every call (inlined), so each activation
 * gets its own loop */
__attribute__((target("avx2,fma"), always_inline)) static inline void
dw_row_avx2(int nt, const float *const *src, int64_t ro, const float *wt, __m256 vb, float *out,
            int64_t n, const kconv_actv *p, const int mode) {
    kconv_actv a = *p;
    a.mode = mode;
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
        for (int t = 0; t < nt; t++) {
            const float *s = src[t] + ro + i;
            __m256 w = _mm256_broadcast_ss(wt + t);
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 24), a3);
        }
        _mm256_storeu_ps(out + i, kconv_actv_apply8(&a, a0));
        _mm256_storeu_ps(out + i + 8, kconv_actv_apply8(&a, a1));
        _mm256_storeu_ps(out + i + 16, kconv_actv_apply8(&a, a2));
        _mm256_storeu_ps(out + i + 24, kconv_actv_apply8(&a, a3));
    }
    if (i < n) { /* the last 1..31 outputs: up to four independent accumulators, not one chain */
        int64_t r = n - i;
        int v = (int)((r + 7) / 8);
        __m256 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
        for (int t = 0; t < nt; t++) {
            const float *s = src[t] + ro + i;
            __m256 w = _mm256_broadcast_ss(wt + t);
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s), a0);
            if (v > 1) a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 8), a1);
            if (v > 2) a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 16), a2);
            if (v > 3) a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 24), a3);
        }
        kavx2_store_part(out + i, kconv_actv_apply8(&a, a0), r);
        if (v > 1) kavx2_store_part(out + i + 8, kconv_actv_apply8(&a, a1), r - 8);
        if (v > 2) kavx2_store_part(out + i + 16, kconv_actv_apply8(&a, a2), r - 16);
        if (v > 3) kavx2_store_part(out + i + 24, kconv_actv_apply8(&a, a3), r - 24);
    }
}

__attribute__((target("avx2,fma"))) static void dw_run_avx2(int nt, const float *const *src,
                                                             const float *wt, float bias,
                                                             float *out, int64_t rows, int64_t n,
                                                             int64_t ldi, int64_t ldo) {
    static const kconv_actv none = {KACTV_NONE, 0, 1.0f, 0.0f, 0.0f, INFINITY};
    __m256 vb = _mm256_set1_ps(bias);
    for (int64_t r = 0; r < rows; r++)
        dw_row_avx2(nt, src, r * ldi, wt, vb, out + r * ldo, n, &none, KACTV_NONE);
}

/* dw_run_avx2 with activation p (not KACTV_OTHER) applied before each store */
__attribute__((target("avx2,fma"))) static void dw_run_avx2_act(int nt, const float *const *src,
                                                                 const float *wt, float bias,
                                                                 float *out, int64_t rows,
                                                                 int64_t n, int64_t ldi,
                                                                 int64_t ldo, const kconv_actv *p) {
    __m256 vb = _mm256_set1_ps(bias);
    for (int64_t r = 0; r < rows; r++) {
        float *o = out + r * ldo;
        if (p->mode == KACTV_CLAMP) dw_row_avx2(nt, src, r * ldi, wt, vb, o, n, p, KACTV_CLAMP);
        else if (p->mode == KACTV_HSWISH) dw_row_avx2(nt, src, r * ldi, wt, vb, o, n, p, KACTV_HSWISH);
        else if (p->mode == KACTV_LEAKY) dw_row_avx2(nt, src, r * ldi, wt, vb, o, n, p, KACTV_LEAKY);
        else dw_row_avx2(nt, src, r * ldi, wt, vb, o, n, p, KACTV_NONE);
    }
}
#endif

#ifdef DW_HAVE_AVX2
/* The AVX-512 row: 16 lanes, four accumulators, the ragged end by masked stores. */
__attribute__((target("avx512f"))) static void dw_row_avx512(int nt, const float *const *src,
                                                              int64_t ro, const float *wt,
                                                              __m512 vb, float *out, int64_t n) {
    int64_t i = 0;
    for (; i + 64 <= n; i += 64) {
        __m512 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
        for (int t = 0; t < nt; t++) {
            const float *s = src[t] + ro + i;
            __m512 w = _mm512_set1_ps(wt[t]);
            a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s), a0);
            a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 16), a1);
            a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 32), a2);
            a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 48), a3);
        }
        _mm512_storeu_ps(out + i, a0);
        _mm512_storeu_ps(out + i + 16, a1);
        _mm512_storeu_ps(out + i + 32, a2);
        _mm512_storeu_ps(out + i + 48, a3);
    }
    if (i < n) {
        int64_t r = n - i;
        int v = (int)((r + 15) / 16);
        __m512 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
        for (int t = 0; t < nt; t++) {
            const float *s = src[t] + ro + i;
            __m512 w = _mm512_set1_ps(wt[t]);
            a0 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s), a0);
            if (v > 1) a1 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 16), a1);
            if (v > 2) a2 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 32), a2);
            if (v > 3) a3 = _mm512_fmadd_ps(w, _mm512_loadu_ps(s + 48), a3);
        }
        __m512 acc[4] = {a0, a1, a2, a3};
        for (int k = 0; k < v; k++) {
            int64_t left = r - 16 * k;
            __mmask16 m = (__mmask16)(left >= 16 ? 0xffff : (1u << left) - 1);
            _mm512_mask_storeu_ps(out + i + 16 * k, m, acc[k]);
        }
    }
}

__attribute__((target("avx512f"))) static void dw_run_avx512(int nt, const float *const *src,
                                                              const float *wt, float bias,
                                                              float *out, int64_t rows, int64_t n,
                                                              int64_t ldi, int64_t ldo) {
    __m512 vb = _mm512_set1_ps(bias);
    for (int64_t r = 0; r < rows; r++) dw_row_avx512(nt, src, r * ldi, wt, vb, out + r * ldo, n);
}
#endif

typedef void (*dw_run_fn)(int, const float *const *, const float *, float, float *, int64_t,
                          int64_t, int64_t, int64_t);

static dw_run_fn pick_run(void) {
#ifdef DW_HAVE_AVX2
    if (__builtin_cpu_supports("avx512f")) return dw_run_avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return dw_run_avx2;
#endif
    return dw_run_plain;
}

/* Plan of one plane: the zero-padded input window region split into stride phases, each phase a
 * sub-plane of Hq x Wq. Output (oy, ox) then sits at oy * Wq + ox of a "pitched" output, and
 * kernel tap (ky, kx) reads the pitched position plus a fixed offset: the whole plane is one
 * long multi-tap vector loop, with (Wq - OW) throwaway columns per row. */
typedef struct dw_plan {
    int64_t IH, IW, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl;
    int64_t Hq, Wq, sub, total, pitched, slack;
} dw_plan;

static void dw_make_plan(const kconv_geom *g, dw_plan *p) {
    int two = g->nd == 2, L = g->nd - 1;
    p->IH = two ? g->in[0] : 1;
    p->IW = g->in[L];
    p->OH = two ? g->out[0] : 1;
    p->OW = g->out[L];
    p->KH = two ? g->k[0] : 1;
    p->KW = g->k[L];
    p->sh = two ? g->stride[0] : 1;
    p->sw = g->stride[L];
    p->dh = two ? g->dil[0] : 1;
    p->dw = g->dil[L];
    p->pt = two ? g->pad_b[0] : 0;
    p->pl = g->pad_b[L];
    int64_t Hp = (p->OH - 1) * p->sh + (p->KH - 1) * p->dh + 1;
    int64_t Wp = (p->OW - 1) * p->sw + (p->KW - 1) * p->dw + 1;
    p->Hq = (Hp + p->sh - 1) / p->sh;
    p->Wq = (Wp + p->sw - 1) / p->sw;
    p->sub = p->Hq * p->Wq;
    p->total = p->sh * p->sw * p->sub;
    p->pitched = p->OH * p->Wq;
    /* valid outputs read inside their sub-plane; the throwaway columns of the last row and the
     * rounding up to whole vectors read at most Wq + 8 past its end */
    p->slack = p->Wq + 32;
}

/* Short copies: most rows here are 7 to 56 floats, where a library call (or the string-move
 * instruction compilers turn plain copy loops into) costs more than the copy itself. */
#ifdef DW_HAVE_AVX2
__attribute__((target("avx2"))) static void copy_floats_avx2(float *d, const float *s, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(d + i, _mm256_loadu_ps(s + i));
    if (i < n) kavx2_store_part(d + i, kavx2_load_part(s + i, n - i), n - i);
}

/* AVX-512's masked store for the ragged end (AVX2's: avx2_part.h) */
__attribute__((target("avx512f"))) static void copy_floats_avx512(float *d, const float *s,
                                                                   int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(d + i, _mm512_loadu_ps(s + i));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(d + i, m, _mm512_maskz_loadu_ps(m, s + i));
    }
}
#endif

/* simd: 0 scalar, 1 AVX2, 2 AVX-512 */
static inline void copy_floats(float *d, const float *s, int64_t n, int simd) {
#ifdef DW_HAVE_AVX2
    if (simd == 2 && n <= 256) {
        copy_floats_avx512(d, s, n);
        return;
    }
    if (simd == 1 && n <= 256) {
        copy_floats_avx2(d, s, n);
        return;
    }
#endif
    memcpy(d, s, sizeof(float) * (size_t)n);
}

#ifdef DW_HAVE_AVX2
/* Writes x[j] to phase (j + pl) & 1 at column (j + pl) >> 1, for the columns below Wq; the other
 * columns keep the zeros the buffer started with. */
__attribute__((target("avx2"))) static void split2_avx2(const float *x, int64_t IW, int64_t pl,
                                                        int64_t Wq, float *d0, float *d1) {
    int64_t j = 0;
    if (pl & 1) { /* x[0] lands in phase 1: start the pairs at x[1] */
        if ((pl >> 1) < Wq) d1[pl >> 1] = x[0];
        j = 1;
    }
    /* pairs (x[j], x[j+1]) -> d0[col], d1[col], col = (j + pl) / 2 */
    int64_t col = (j + pl) >> 1;
    for (; j + 16 <= IW && col + 8 <= Wq; j += 16, col += 8) {
        __m256 a = _mm256_loadu_ps(x + j), b = _mm256_loadu_ps(x + j + 8);
        __m256 ev = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(2, 0, 2, 0));
        __m256 od = _mm256_shuffle_ps(a, b, _MM_SHUFFLE(3, 1, 3, 1));
        ev = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(ev), 0xD8));
        od = _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(od), 0xD8));
        _mm256_storeu_ps(d0 + col, ev);
        _mm256_storeu_ps(d1 + col, od);
    }
    for (; j < IW; j++) {
        int64_t J = j + pl;
        if ((J >> 1) >= Wq) break;
        ((J & 1) ? d1 : d0)[J >> 1] = x[j];
    }
}

static inline __mmask16 first_lanes(int64_t n) {
    return (__mmask16)(n >= 16 ? 0xffff : n <= 0 ? 0 : (1u << n) - 1);
}

/* The same with 32 inputs per step, one two-source permute per phase, and the ragged end by
 * masks: the AVX2 version spent half the time of a stride-2 layer (56x56 and 112x112 maps) in
 * its shuffles and scalar tail. */
__attribute__((target("avx512f"))) static void split2_avx512(const float *x, int64_t IW,
                                                            int64_t pl, int64_t Wq, float *d0,
                                                            float *d1) {
    int64_t j = 0;
    if (pl & 1) {
        if ((pl >> 1) < Wq) d1[pl >> 1] = x[0];
        j = 1;
    }
    const __m512i ev = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    const __m512i od = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
    for (int64_t col = (j + pl) >> 1; j < IW && col < Wq; j += 32, col += 16) {
        int64_t left = IW - j, room = Wq - col;
        __m512 a = _mm512_maskz_loadu_ps(first_lanes(left), x + j);
        __m512 b = _mm512_maskz_loadu_ps(first_lanes(left - 16), x + j + 16);
        int64_t ne = (left + 1) / 2, no = left / 2; /* columns of each phase these inputs hold */
        _mm512_mask_storeu_ps(d0 + col, first_lanes(ne < room ? ne : room),
                              _mm512_permutex2var_ps(a, ev, b));
        _mm512_mask_storeu_ps(d1 + col, first_lanes(no < room ? no : room),
                              _mm512_permutex2var_ps(a, od, b));
    }
}
#endif

/* Copies one input plane into the padded, phase-split layout. Only input values are written:
 * the padding positions are the same for every plane and stay zero from the buffer's first
 * clearing. */
static void dw_fill(const dw_plan *p, const float *x, const float *next, float *P, int simd) {
    for (int64_t qy = 0; qy < p->sh; qy++)
        for (int64_t r = 0; r < p->Hq; r++) {
            int64_t iy = r * p->sh + qy - p->pt;
            if (iy < 0 || iy >= p->IH) continue;
            const float *xr = x + iy * p->IW;
            if (next) /* the same row of the next plane, into L2 while this one is copied */
                for (int64_t c = 0; c < p->IW; c += 16) __builtin_prefetch(next + iy * p->IW + c, 0, 2);
            if (p->sw == 1) {
                float *d = P + qy * p->sub + r * p->Wq;
                int64_t head = p->pl < p->Wq ? p->pl : p->Wq;
                int64_t body = p->IW < p->Wq - head ? p->IW : p->Wq - head;
                copy_floats(d + head, xr, body, simd);
                continue;
            }
#ifdef DW_HAVE_AVX2
            if (p->sw == 2 && simd) {
                float *d0 = P + (qy * 2) * p->sub + r * p->Wq;
                if (simd == 2) split2_avx512(xr, p->IW, p->pl, p->Wq, d0, d0 + p->sub);
                else split2_avx2(xr, p->IW, p->pl, p->Wq, d0, d0 + p->sub);
                continue;
            }
#endif
            for (int64_t qx = 0; qx < p->sw; qx++) {
                float *d = P + (qy * p->sw + qx) * p->sub + r * p->Wq;
                /* columns c with 0 <= c*sw + qx - pl < IW hold input values */
                int64_t first = p->pl - qx, lo = first > 0 ? (first + p->sw - 1) / p->sw : 0;
                int64_t hi = (p->IW + p->pl - qx + p->sw - 1) / p->sw;
                if (lo > p->Wq) lo = p->Wq;
                if (hi > p->Wq) hi = p->Wq;
                const float *xs = xr + (lo * p->sw + qx - p->pl);
                for (int64_t c = lo; c < hi; c++) d[c] = xs[(c - lo) * p->sw];
            }
        }
}

/* FusedConv's residual and activation over n outputs of one plane, while they are in cache */
static void dw_epilogue(float *y, const float *z, const kconv_act *act, int64_t n) {
    if (z) kvec_add_f32(y, z, n);
    if (act && act->kind != KACT_NONE) kconv_apply_act(act, y, n);
}

/* Output planes [q0, q1) of the N * M, each with its epilogue. Returns -1 when out of memory. */
static int dw_planes_f32(const kconv_geom *g, const float *x, const float *w, const float *bias,
                         const float *z, const kconv_act *act, float *y, int64_t q0, int64_t q1) {
    dw_plan p;
    dw_make_plan(g, &p);
    int64_t mult = g->M / g->C, ntaps = p.KH * p.KW;
    int64_t nP = (p.total + p.slack + 15) & ~(int64_t)15, nO = (p.pitched + 15) & ~(int64_t)15;
    float *P = malloc(sizeof(float) * (size_t)(nP + nO) + sizeof(float *) * (size_t)ntaps);
    if (!P) return -1;
    float *O = P + nP;
    const float **src = (const float **)(void *)(O + nO);
    dw_run_fn run = pick_run();
    int simd = run == dw_run_plain ? 0 : run == dw_run_avx2 ? 1 : 2; /* AVX-512 CPUs have AVX2 */
    int pitched_is_dense = p.Wq == p.OW;
    int fused = 0; /* the AVX2 rows apply the activation themselves (as kconv_apply_act would) */
#ifdef DW_HAVE_AVX2
    kconv_actv av = kconv_actv_make(act);
    fused = run == dw_run_avx2 && kgemm_avx2_available() && !z && av.mode != KACTV_OTHER;
#endif
    memset(P, 0, sizeof(float) * (size_t)nP); /* padding and slack, once for all planes */
    /* where each tap reads, relative to the plane copy: the same for every plane */
    int64_t *toff = malloc(sizeof(int64_t) * (size_t)ntaps);
    if (!toff) {
        free(P);
        return -1;
    }
    for (int64_t ky = 0; ky < p.KH; ky++)
        for (int64_t kx = 0; kx < p.KW; kx++) {
            int64_t dy = ky * p.dh, dx = kx * p.dw;
            toff[ky * p.KW + kx] =
                ((dy % p.sh) * p.sw + dx % p.sw) * p.sub + (dy / p.sh) * p.Wq + dx / p.sw;
        }
    for (int64_t t = 0; t < ntaps; t++) src[t] = P + toff[t];
    free(toff);
    int64_t last_c = -1;
    for (int64_t q = q0; q < q1; q++) {
        int64_t n = q / g->M, m = q % g->M, c = m / mult;
        const float *wp = w + m * ntaps;
        float *yp = y + q * g->out_size;
        if (n * g->C + c != last_c) {
            /* the next plane this thread reads (its input channel, or the next one) */
            int64_t nq = q + 1 < q1 ? q + 1 : -1, nc = nq < 0 ? -1 : nq / g->M * g->C + nq % g->M / mult;
            const float *next = nc >= 0 && nc != n * g->C + c ? x + nc * g->in_size : NULL;
            dw_fill(&p, x + (n * g->C + c) * g->in_size, next, P, simd);
        }
        last_c = n * g->C + c;
        float b = bias ? bias[m] : 0.0f;
        /* rows long enough to vectorise are written in place; small maps take one pitched run,
         * then drop the throwaway columns */
        int in_rows = !pitched_is_dense && p.OW >= 24;
        float *dst = pitched_is_dense || in_rows ? yp : O;
        int64_t rows = in_rows ? p.OH : 1, len = in_rows ? p.OW : p.pitched;
        int64_t ldi = in_rows ? p.Wq : 0, ldo = in_rows ? p.OW : 0;
#ifdef DW_HAVE_AVX2
        if (fused) dw_run_avx2_act((int)ntaps, src, wp, b, dst, rows, len, ldi, ldo, &av);
        else
#endif
            run((int)ntaps, src, wp, b, dst, rows, len, ldi, ldo);
        if (dst == O)
            for (int64_t oy = 0; oy < p.OH; oy++)
                copy_floats(yp + oy * p.OW, O + oy * p.Wq, p.OW, simd);
        if (!fused) dw_epilogue(yp, z ? z + q * g->out_size : NULL, act, g->out_size);
    }
    free(P);
    return 0;
}

/* ---- small maps: 16 channels per vector ----
 * On 7x7 or 14x14 maps a plane is too short to fill vectors well, so blocks of 16 channels are
 * interleaved into a padded [Hp][Wp][16] copy and every output position of the block becomes one
 * 16-lane vector: 4 positions at a time sum all taps into a [position][16] buffer, and the 16
 * planes are written back from it. Both interleavings are 16x16 register transposes (tr16x16);
 * they replaced one gather per input and one scatter per output position, which cost as much
 * as the taps themselves on AMD cores. AVX-512 only; one input channel per output
 * channel (multiplier 1). */
#ifdef DW_HAVE_AVX2
static int dw_blocked_ok(const kconv_geom *g) {
    if (!__builtin_cpu_supports("avx512f") || g->M != g->C || !kconv_depthwise_ok(g)) return 0;
    int L = g->nd - 1;
    /* lanes index whole planes through 32-bit offsets */
    if ((double)g->in_size * 16 > 2e9 || (double)g->out_size * 16 > 2e9) return 0;
    return g->out[L] < 16 && g->out_size <= 256;
}

/* r[0..16) (16 rows of 16 floats) transposed in registers: afterwards r[k] holds column k. Two
 * in-lane unpack/shuffle rounds, then a 4x4 transpose of the 128-bit lanes. Gathers and scatters
 * are slow on some cores (several cycles per element on AMD), and this is about a quarter cycle
 * per element. */
__attribute__((target("avx512f"), always_inline)) static inline void tr16x16(__m512 *r) {
    __m512 a[16], b[16];
    for (int i = 0; i < 8; i++) {
        a[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        a[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    /* b[4g + k], lane L: rows 4g..4g+3 at column 4L + k */
    for (int g = 0; g < 4; g++) {
        __m512 a0 = a[4 * g], a1 = a[4 * g + 1], a2 = a[4 * g + 2], a3 = a[4 * g + 3];
        b[4 * g] = _mm512_shuffle_ps(a0, a2, 0x44);
        b[4 * g + 1] = _mm512_shuffle_ps(a0, a2, 0xEE);
        b[4 * g + 2] = _mm512_shuffle_ps(a1, a3, 0x44);
        b[4 * g + 3] = _mm512_shuffle_ps(a1, a3, 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        __m512 c0 = _mm512_shuffle_f32x4(b[k], b[4 + k], 0x88);
        __m512 c1 = _mm512_shuffle_f32x4(b[k], b[4 + k], 0xDD);
        __m512 c2 = _mm512_shuffle_f32x4(b[8 + k], b[12 + k], 0x88);
        __m512 c3 = _mm512_shuffle_f32x4(b[8 + k], b[12 + k], 0xDD);
        r[k] = _mm512_shuffle_f32x4(c0, c2, 0x88);      /* column k      (lane 0) */
        r[4 + k] = _mm512_shuffle_f32x4(c1, c3, 0x88);  /* column 4 + k  (lane 1) */
        r[8 + k] = _mm512_shuffle_f32x4(c0, c2, 0xDD);  /* column 8 + k  (lane 2) */
        r[12 + k] = _mm512_shuffle_f32x4(c1, c3, 0xDD); /* column 12 + k (lane 3) */
    }
}

/* Items [b0, b1) of the N * ceil(C / 16) channel blocks, each cut into rsplit bands of output
 * rows (item = block * rsplit + band), with their epilogue. A band interleaves only the input
 * rows its outputs read. Returns -1 when out of memory. */
__attribute__((target("avx512f"))) static int dw_blocked_f32(const kconv_geom *g, const float *x,
                                                            const float *w, const float *bias,
                                                            const float *z, const kconv_act *act,
                                                            float *y, int64_t rsplit, int64_t b0,
                                                            int64_t b1) {
    dw_plan p;
    dw_make_plan(g, &p);
    int64_t Hp = (p.OH - 1) * p.sh + (p.KH - 1) * p.dh + 1;
    int64_t Wp = (p.OW - 1) * p.sw + (p.KW - 1) * p.dw + 1;
    int64_t ntaps = p.KH * p.KW, cblocks = (g->C + 15) / 16;
    int64_t opad = (g->out_size + 15) / 16 * 16;
    /* the map, then 16 positions of slack for the interleave's whole-vector stores */
    int64_t nmap = (Hp * Wp + 16) * 16;
    /* a band's last 16 positions may start anywhere: 16 more positions of slack */
    float *P = aligned_alloc(64, sizeof(float) * (size_t)(nmap + ntaps * 16 + (opad + 16) * 16));
    if (!P) return -1;
    float *W16 = P + nmap;
    float *O = W16 + ntaps * 16; /* outputs, [position][16 channels], transposed back at the end */
    memset(O + g->out_size * 16, 0, sizeof(float) * (size_t)((opad + 16 - g->out_size) * 16));
    memset(P, 0, sizeof(float) * (size_t)nmap); /* the padding stays zero */
    int64_t toff[64];
    int use_toff = ntaps <= 64;
    kconv_actv av = kconv_actv_make(act);
    int act_regs = act && av.mode != KACTV_OTHER && av.mode != KACTV_NONE;
    int act_after = act && av.mode == KACTV_OTHER;
    for (int64_t ky = 0; ky < p.KH && use_toff; ky++)
        for (int64_t kx = 0; kx < p.KW; kx++)
            toff[ky * p.KW + kx] = ((ky * p.dh) * Wp + kx * p.dw) * 16;
    for (int64_t it = b0; it < b1; it++) {
        int64_t b = it / rsplit, band = it % rsplit;
        int64_t oy0 = band * p.OH / rsplit, oy1 = (band + 1) * p.OH / rsplit;
        int64_t n = b / cblocks, c0 = (b % cblocks) * 16;
        int64_t lanes = g->C - c0 < 16 ? g->C - c0 : 16;
        __mmask16 lm = (__mmask16)(lanes >= 16 ? 0xffff : (1u << lanes) - 1);
        const float *xb = x + (n * g->C + c0) * g->in_size;
        float *yb = y + (n * g->M + c0) * g->out_size;
        /* interleave: 16 pixels of a row from each of the 16 planes, transposed in registers */
        int64_t iw = p.IW < Wp - p.pl ? p.IW : Wp - p.pl;
        int64_t iy0 = oy0 * p.sh - p.pt, iy1 = (oy1 - 1) * p.sh + (p.KH - 1) * p.dh - p.pt + 1;
        if (iy0 < 0) iy0 = 0;
        if (iy1 > p.IH) iy1 = p.IH;
        for (int64_t iy = iy0; iy < iy1; iy++) {
            int64_t py = iy + p.pt;
            if (py >= Hp) break;
            for (int64_t ix = 0; ix < iw; ix += 16) {
                int64_t cnt = iw - ix < 16 ? iw - ix : 16;
                __mmask16 pm = (__mmask16)(cnt >= 16 ? 0xffff : (1u << cnt) - 1);
                __m512 r[16];
                for (int c = 0; c < 16; c++)
                    r[c] = c < lanes ? _mm512_maskz_loadu_ps(pm, xb + c * g->in_size + iy * p.IW + ix)
                                     : _mm512_setzero_ps();
                tr16x16(r);
                /* all 16 positions, a fixed run of stores (a loop to cnt became a rep movsq,
                 * slow for short copies): past cnt the lanes were loaded as zeros, so the
                 * extra stores only zero padding or positions of the next row, which the
                 * next row writes later */
                float *dst = P + (py * Wp + ix + p.pl) * 16;
                for (int k = 0; k < 16; k++) _mm512_store_ps(dst + k * 16, r[k]);
            }
        }
        for (int64_t t0 = 0; t0 < ntaps; t0 += 16) { /* the block's taps, [tap][16 channels] */
            int64_t cnt = ntaps - t0 < 16 ? ntaps - t0 : 16;
            __mmask16 tm = (__mmask16)(cnt >= 16 ? 0xffff : (1u << cnt) - 1);
            __m512 r[16];
            for (int c = 0; c < 16; c++)
                r[c] = c < lanes ? _mm512_maskz_loadu_ps(tm, w + (c0 + c) * ntaps + t0)
                                 : _mm512_setzero_ps();
            tr16x16(r);
            for (int64_t k = 0; k < cnt; k++) _mm512_store_ps(W16 + (t0 + k) * 16, r[k]);
        }
        __m512 vb = bias ? _mm512_maskz_loadu_ps(lm, bias + c0) : _mm512_setzero_ps();
        /* The next block's planes are one contiguous run of NCHW input; fetched while this block
         * computes, its interleave no longer waits on memory (at batch 8 the layer's input is
         * past L2, and the 16 plane-strided loads of a row missed in turn: a sixth of the time). */
        const float *nx = band == rsplit - 1 && it + 1 < b1
                              ? x + ((b + 1) / cblocks * g->C + (b + 1) % cblocks * 16) * g->in_size
                              : NULL;
        int64_t nlines = 0, pf_per_row = 0, pf = 0;
        if (nx) {
            int64_t nl = g->C - (b + 1) % cblocks * 16 < 16 ? g->C - (b + 1) % cblocks * 16 : 16;
            nlines = (nl * g->in_size * (int64_t)sizeof(float) + 63) / 64;
            pf_per_row = (nlines + (oy1 - oy0) - 1) / (oy1 - oy0);
        }
        for (int64_t oy = oy0; oy < oy1; oy++) {
            const float *prow = P + (oy * p.sh) * Wp * 16;
            for (int64_t e = pf + pf_per_row; pf < e && pf < nlines; pf++)
                _mm_prefetch((const char *)nx + pf * 64, _MM_HINT_T0);
            int64_t ox = 0;
            /* 4 positions at a time, so four independent FMA chains; the last group of a row
             * repeats its final position (same value written twice) rather than falling back to
             * one chain, which is latency-bound on the 7- and 14-wide maps */
            for (; ox < p.OW; ox += 4) {
                int64_t x1 = ox + 1 < p.OW ? ox + 1 : p.OW - 1, x2 = ox + 2 < p.OW ? ox + 2 : p.OW - 1;
                int64_t x3 = ox + 3 < p.OW ? ox + 3 : p.OW - 1;
                __m512 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
                const float *s0 = prow + ox * p.sw * 16, *s1 = prow + x1 * p.sw * 16;
                const float *s2 = prow + x2 * p.sw * 16, *s3 = prow + x3 * p.sw * 16;
                for (int64_t t = 0; t < ntaps; t++) {
                    int64_t o = use_toff ? toff[t]
                                         : (((t / p.KW) * p.dh) * Wp + (t % p.KW) * p.dw) * 16;
                    __m512 wv = _mm512_load_ps(W16 + t * 16);
                    a0 = _mm512_fmadd_ps(wv, _mm512_load_ps(s0 + o), a0);
                    a1 = _mm512_fmadd_ps(wv, _mm512_load_ps(s1 + o), a1);
                    a2 = _mm512_fmadd_ps(wv, _mm512_load_ps(s2 + o), a2);
                    a3 = _mm512_fmadd_ps(wv, _mm512_load_ps(s3 + o), a3);
                }
                float *orow = O + oy * p.OW * 16;
                _mm512_store_ps(orow + ox * 16, a0);
                _mm512_store_ps(orow + x1 * 16, a1);
                _mm512_store_ps(orow + x2 * 16, a2);
                _mm512_store_ps(orow + x3 * 16, a3);
            }
        }
        int64_t q1 = oy1 * p.OW;
        for (int64_t q = oy0 * p.OW; q < q1; q += 16) {
            int64_t cnt = q1 - q < 16 ? q1 - q : 16;
            __mmask16 pm = (__mmask16)(cnt >= 16 ? 0xffff : (1u << cnt) - 1);
            __m512 r[16];
            for (int k = 0; k < 16; k++) r[k] = _mm512_load_ps(O + (q + k) * 16);
            tr16x16(r);
            /* residual and activation on the registers on their way out, rather than a second
             * pass over each plane (a call per 196-value plane of a 14x14 map) */
            for (int64_t c = 0; c < lanes; c++) {
                float *yc = yb + c * g->out_size + q;
                __m512 v = r[c];
                if (z) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(pm, z + (yc - y)));
                if (act_regs) v = kconv_actv_apply(&av, v);
                _mm512_mask_storeu_ps(yc, pm, v);
            }
        }
        for (int64_t c = 0; act_after && c < lanes; c++) {
            int64_t off = (n * g->M + c0 + c) * g->out_size + oy0 * p.OW;
            dw_epilogue(y + off, NULL, act, (oy1 - oy0) * p.OW);
        }
    }
    free(P);
    return 0;
}
#else
static int dw_blocked_ok(const kconv_geom *g) { return 0; }
static int dw_blocked_f32(const kconv_geom *g, const float *x, const float *w, const float *bias,
                          const float *z, const kconv_act *act, float *y, int64_t rsplit, int64_t b0,
                          int64_t b1) {
    return -1;
}
#endif

/* A 1x1 window with unit strides and no padding: a per-channel scale and shift (BatchNormalization
 * fused with its activation, opt/fuse_conv.c), one pass over each plane with no copy. */
static int dw_pointwise(const kconv_geom *g) {
    if (g->k_size != 1) return 0;
    for (int d = 0; d < g->nd; d++)
        if (g->stride[d] != 1 || g->pad_b[d] || g->pad_e[d]) return 0;
    return 1;
}

static void dw_affine(const float *x, float w, float b, float *y, int64_t n) {
    for (int64_t i = 0; i < n; i++) y[i] = x[i] * w + b;
}

#ifdef DW_HAVE_AVX2
__attribute__((target("avx512f"))) static void dw_affine_avx512(const float *x, float w, float b,
                                                                float *y, int64_t n) {
    __m512 vw = _mm512_set1_ps(w), vb = _mm512_set1_ps(b);
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) _mm512_storeu_ps(y + i, _mm512_fmadd_ps(_mm512_loadu_ps(x + i), vw, vb));
    if (i < n) {
        __mmask16 m = (__mmask16)((1u << (n - i)) - 1);
        _mm512_mask_storeu_ps(y + i, m, _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, x + i), vw, vb));
    }
}
#endif

typedef struct dw_job {
    const kconv_geom *g;
    const float *x, *w, *bias, *z;
    const kconv_act *act; /* NULL when there is none */
    float *y;
    int64_t rsplit; /* row bands per channel block (blocked kernel) */
    volatile int failed;
} dw_job;

static void dw_blocked_run(void *arg, int64_t b0, int64_t b1) {
    dw_job *j = arg;
    if (dw_blocked_f32(j->g, j->x, j->w, j->bias, j->z, j->act, j->y, j->rsplit, b0, b1)) j->failed = 1;
}

static void dw_pointwise_run(void *arg, int64_t q0, int64_t q1) {
    dw_job *j = arg;
    const kconv_geom *g = j->g;
    int64_t mult = g->M / g->C, n = g->out_size;
    void (*affine)(const float *, float, float, float *, int64_t) = dw_affine;
#ifdef DW_HAVE_AVX2
    if (__builtin_cpu_supports("avx512f")) affine = dw_affine_avx512;
#endif
    for (int64_t q = q0; q < q1; q++) {
        int64_t m = q % g->M, c = q / g->M * g->C + m / mult;
        affine(j->x + c * g->in_size, j->w[m], j->bias ? j->bias[m] : 0.0f, j->y + q * n, n);
        dw_epilogue(j->y + q * n, j->z ? j->z + q * n : NULL, j->act, n);
    }
}

static void dw_planes_run(void *arg, int64_t q0, int64_t q1) {
    dw_job *j = arg;
    if (dw_planes_f32(j->g, j->x, j->w, j->bias, j->z, j->act, j->y, q0, q1)) j->failed = 1;
}

/* per-item work for the partition report: a plane, or a block of up to 16 planes */
static double dw_plane_cost(const void *arg, int64_t it) {
    const kconv_geom *g = ((const dw_job *)arg)->g;
    (void)it;
    return (double)g->out_size * g->k_size;
}

static double dw_block_cost(const void *arg, int64_t it) {
    const dw_job *j = arg;
    const kconv_geom *g = j->g;
    int64_t cb = (g->C + 15) / 16, c0 = it / j->rsplit % cb * 16;
    return (double)(g->C - c0 < 16 ? g->C - c0 : 16) * g->out_size * g->k_size / (double)j->rsplit;
}

static void dw_report(kiln_ctx *ctx, const char *path, const dw_job *j, int64_t items,
                      int64_t grain, double (*cost)(const void *, int64_t)) {
    if (kconv_debug_partition())
        kconv_report_partition(path, j->g, kiln_num_threads(ctx), items, grain, cost, j, 1.0);
}

kiln_status kconv_depthwise_run(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *w,
                                const float *bias, const float *z, const kconv_act *act, float *y) {
    dw_job j = {g, x, w, bias, z, act && act->kind != KACT_NONE ? act : NULL, y, 1, 0};
    int64_t planes = g->N * g->M;
    double work = (double)planes * g->out_size * g->k_size;
    /* Serial time estimates (ns) for the pool's grain, from MobileNetV3's layers at one thread
     * (AVX-512 VM): the blocked kernel runs about 8 multiply-adds per ns with its transposes, not
     * the 60 assumed before (a 14x14 layer of 208 channels, 46 us, was cut into 4 chunks and
     * left 12 of 16 threads idle at batch 1); the plane kernel about 20, plus the copy of every
     * input value (the whole input of a stride-2 layer, four times its output). */
    double plane_ns = work / 20.0 + (double)g->N * g->C * g->in_size * 0.25;
    if (dw_pointwise(g)) {
        kiln_parallel_for(ctx, planes, kpar_grain(planes, (double)planes * g->out_size / 4.0), dw_pointwise_run, &j);
    } else if (dw_blocked_ok(g)) {
        /* Fewer channel blocks than two per thread (batch 1 on many threads: 13 blocks of a
         * 208-channel layer for 16 threads) also cut the rows into bands, of two rows at least:
         * a band repeats only its kernel's extra input rows. */
        int64_t blocks = g->N * ((g->C + 15) / 16), nt = kiln_num_threads(ctx);
        int64_t OH = g->nd == 2 ? g->out[0] : 1;
        if (blocks < 2 * nt && OH >= 4) {
            j.rsplit = (2 * nt + blocks - 1) / blocks;
            if (j.rsplit > OH / 2) j.rsplit = OH / 2;
        }
        int64_t items = blocks * j.rsplit;
        int64_t grain = kpar_grain(items, work / 8.0);
        dw_report(ctx, "depthwise-blocked", &j, items, grain, dw_block_cost);
        kiln_parallel_for(ctx, items, grain, dw_blocked_run, &j);
    } else {
        int64_t grain = kpar_grain(planes, plane_ns);
        dw_report(ctx, "depthwise-planes", &j, planes, grain, dw_plane_cost);
        kiln_parallel_for(ctx, planes, grain, dw_planes_run, &j);
    }
    return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in depthwise conv")
                    : KILN_OK;
}
