/* Depthwise convolution (one input channel per group), 1-D and 2-D, computed directly: im2col
 * and GEMM would do one tiny product per channel. Each input plane is first copied with its zero
 * padding and split by stride phase (see dw_plan), so that every kernel tap reads one contiguous,
 * in-bounds run for the whole plane; one loop with several vector accumulators then sums all taps,
 * which also keeps small maps (7x7, 14x14) vectorised. An AVX2/FMA version is chosen at run time
 * where the CPU has it. */
#include "conv_util.h"
#include "gemm_util.h"
#include "conv_split.h"
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
static inline __mmask16 first_lanes(int64_t n) { return kconv_split_lanes(n); }
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
                if (simd == 2) kconv_split2_avx512(xr, p->IW, p->pl, p->Wq, d0, d0 + p->sub);
                else kconv_split2_avx2(xr, p->IW, p->pl, p->Wq, d0, d0 + p->sub);
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

/* ---- small maps: a vector of channels per position ----
 * On 7x7 or 14x14 maps a plane is too short to fill vectors well, so blocks of VL channels (16
 * with AVX-512, 8 with AVX2) are interleaved into a padded [Hp][Wp][VL] copy and every output
 * position of the block becomes one vector: 4 positions at a time sum all taps into a
 * [position][VL] buffer, and the VL planes are written back from it. Both interleavings are
 * register transposes (tr16x16, tr8x8); they replaced one gather per input and one scatter per
 * output position, which cost as much as the taps themselves on AMD cores. One input channel per
 * output channel (multiplier 1). The kernel itself: conv_depthwise_blocked.h. */
#ifdef DW_HAVE_AVX2
/* lanes per vector of the blocked kernel on this CPU (KILN_NO_AVX512 takes the AVX2 one), 0
 * without one or with KILN_NO_DW_BLOCKED=1 */
static int dw_blocked_lanes(void) {
    static _Atomic int off = -1;
    if (kconv_switched_off("KILN_NO_DW_BLOCKED", &off)) return 0;
    if (kgemm_avx512_available()) return 16;
    return kgemm_avx2_available() ? 8 : 0;
}

static int dw_blocked_ok(const kconv_geom *g) {
    int vl = dw_blocked_lanes();
    if (!vl || g->M != g->C || !kconv_depthwise_ok(g)) return 0;
    /* With 8 lanes the two transposes weigh more against the taps: on the AVX2 EPYC VM (1 thread,
     * bench/variants_ab.py) the blocked kernel took 0.65-0.8x the plane kernel's time with 5x5
     * windows (14 -> 7 stride 2 at 672 channels, 7x7 at 960) but 1.0-1.35x with 3x3 ones (7x7
     * at 960, 14x14 at 672, 28 -> 14 stride 2 at 240). */
    if (vl == 8 && g->k_size < 16) return 0;
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

/* r[0..8) (8 rows of 8 floats) transposed in registers, the same way on 256 bits */
__attribute__((target("avx2"), always_inline)) static inline void tr8x8(__m256 *r) {
    __m256 t[8], u[8];
    for (int i = 0; i < 4; i++) {
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 2; g++) {
        __m256 a0 = t[4 * g], a1 = t[4 * g + 1], a2 = t[4 * g + 2], a3 = t[4 * g + 3];
        u[4 * g] = _mm256_shuffle_ps(a0, a2, 0x44);
        u[4 * g + 1] = _mm256_shuffle_ps(a0, a2, 0xEE);
        u[4 * g + 2] = _mm256_shuffle_ps(a1, a3, 0x44);
        u[4 * g + 3] = _mm256_shuffle_ps(a1, a3, 0xEE);
    }
    for (int k = 0; k < 4; k++) {
        r[k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x20);
        r[4 + k] = _mm256_permute2f128_ps(u[k], u[4 + k], 0x31);
    }
}

#define DWB_NAME dw_blocked16_avx512
#define DWB_TARGET __attribute__((target("avx512f")))
#define DWB_VL 16
#define DWB_VEC __m512
#define DWB_ZERO() _mm512_setzero_ps()
#define DWB_LOAD(p) _mm512_load_ps(p)
#define DWB_STORE(p, v) _mm512_store_ps(p, v)
#define DWB_LOADN(p, n) _mm512_maskz_loadu_ps(first_lanes(n), p)
#define DWB_STOREN(p, v, n) _mm512_mask_storeu_ps(p, first_lanes(n), v)
#define DWB_FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define DWB_ADD(a, b) _mm512_add_ps(a, b)
#define DWB_TRANSPOSE(r) tr16x16(r)
#define DWB_ACT(av, v) kconv_actv_apply(av, v)
#include "conv_depthwise_blocked.h"
#undef DWB_NAME
#undef DWB_TARGET
#undef DWB_VL
#undef DWB_VEC
#undef DWB_ZERO
#undef DWB_LOAD
#undef DWB_STORE
#undef DWB_LOADN
#undef DWB_STOREN
#undef DWB_FMA
#undef DWB_ADD
#undef DWB_TRANSPOSE
#undef DWB_ACT

#define DWB_NAME dw_blocked8_avx2
#define DWB_TARGET __attribute__((target("avx2,fma")))
#define DWB_VL 8
#define DWB_VEC __m256
#define DWB_ZERO() _mm256_setzero_ps()
#define DWB_LOAD(p) _mm256_load_ps(p)
#define DWB_STORE(p, v) _mm256_store_ps(p, v)
#define DWB_LOADN(p, n) kavx2_load_part(p, n)
#define DWB_STOREN(p, v, n) kavx2_store_part(p, v, n)
#define DWB_FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
#define DWB_ADD(a, b) _mm256_add_ps(a, b)
#define DWB_TRANSPOSE(r) tr8x8(r)
#define DWB_ACT(av, v) kconv_actv_apply8(av, v)
#include "conv_depthwise_blocked.h"
#undef DWB_NAME
#undef DWB_TARGET
#undef DWB_VL
#undef DWB_VEC
#undef DWB_ZERO
#undef DWB_LOAD
#undef DWB_STORE
#undef DWB_LOADN
#undef DWB_STOREN
#undef DWB_FMA
#undef DWB_ADD
#undef DWB_TRANSPOSE
#undef DWB_ACT

static int dw_blocked_f32(const kconv_geom *g, const float *x, const float *w, const float *bias,
                          const float *z, const kconv_act *act, float *y, int64_t rsplit, int64_t b0,
                          int64_t b1) {
    return dw_blocked_lanes() == 16 ? dw_blocked16_avx512(g, x, w, bias, z, act, y, rsplit, b0, b1)
                                    : dw_blocked8_avx2(g, x, w, bias, z, act, y, rsplit, b0, b1);
}
#else
static int dw_blocked_lanes(void) { return 0; }
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

/* per-item work for the partition report: a plane, or a block of up to VL planes */
static double dw_plane_cost(const void *arg, int64_t it) {
    const kconv_geom *g = ((const dw_job *)arg)->g;
    (void)it;
    return (double)g->out_size * g->k_size;
}

static double dw_block_cost(const void *arg, int64_t it) {
    const dw_job *j = arg;
    const kconv_geom *g = j->g;
    int64_t vl = dw_blocked_lanes(), cb = (g->C + vl - 1) / vl, c0 = it / j->rsplit % cb * vl;
    return (double)(g->C - c0 < vl ? g->C - c0 : vl) * g->out_size * g->k_size / (double)j->rsplit;
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
        int64_t vl = dw_blocked_lanes(), blocks = g->N * ((g->C + vl - 1) / vl), nt = kiln_num_threads(ctx);
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
