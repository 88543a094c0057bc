/* Direct 2-D convolution for CPUs with AVX-512F ("implicit GEMM"): no im2col matrix. Each input
 * channel is copied once with its zero padding and split by stride phase, so that for any kernel
 * tap (c, ky, kx) the input values under 32 consecutive outputs are one contiguous run (see
 * flat_ok for the two layouts). A register tile of 12 output channels x 32 outputs then sums over
 * all K = C/group * KH * KW taps, reading the input runs through a table of tap offsets and the
 * weights from the 12-channel panels the AVX-512 product packs (kgemm_avx512_pack_a). Work items
 * are (image, group, channel panel, block of output rows or 32-lane chunks). */
#include "conv_util.h"
#include "gemm_util.h"
#include "conv_split.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#include "conv_act_avx512.h"
#include "conv_direct_isa.h"

#define DMR KGEMM_MR
#define DNR 32

/* Flat layout: each channel's padded input is split by stride phase in both directions into
 * sh x sw planes (plane (py, px) holds padded rows py, py + sh, ... and columns px, px + sw, ...),
 * each of Hq rows of Lq laid end to end. Output (oy, ox) and tap (ky, kx) then read plane
 * ((ky dh) % sh, (kx dw) % sw) at row oy + (ky dh) / sh, column ox + (kx dw) / sw: a strided
 * convolution becomes a unit-stride one over the planes, and the 32 lanes run over consecutive
 * positions oy * Lq + ox of that flat map, across row ends. A tap is one fixed offset for every
 * lane; the few lanes that land in the padding columns are computed and dropped. Small maps (7x7,
 * 14x14, also the stride-2 convolutions that make them) keep most lanes busy this way, where
 * lanes along one output row would idle three quarters of a 7-wide row, and need no im2col. */
#define FLAT_MAX_STRIDE 4
static int flat_ok(const kconv_geom *g) {
    int strided = 0;
    for (int d = 0; d < g->nd; d++) {
        if (g->stride[d] > FLAT_MAX_STRIDE) return 0;
        if (g->stride[d] > 1) strided = 1;
    }
    /* Strided rows of 20 or more go lane by output row: ResNet's 56 -> 28 stride-2 3x3 ran 2.8
     * ms flat against 2.3 along rows (1 thread, AVX-512 VM), while 14 -> 7 ran 2.0 flat, 2.4 as
     * im2col products. */
    return !strided || g->out[g->nd - 1] < 20;
}

/* KILN_NO_CONV_DIRECT=1 / KILN_NO_CONV_LANES=1 turn the direct or the channel-lane tiles off,
 * for A/B runs against the product over im2col panels (bench/variants_ab.py) */
int kconv_switched_off(const char *name, _Atomic int *cached) {
    if (*cached < 0) {
        const char *e = getenv(name);
        *cached = e && *e && strcmp(e, "0") ? 1 : 0;
    }
    return *cached;
}

static int direct_geom_ok(const kconv_geom *g);

int kconv_direct_ok(const kconv_geom *g) {
    static _Atomic int off = -1;
    return !kconv_switched_off("KILN_NO_CONV_DIRECT", &off) && direct_geom_ok(g);
}

static int direct_geom_ok(const kconv_geom *g) {
    if (!kgemm_packed_available() || g->nd < 1 || g->nd > 2) return 0;
    int L = g->nd - 1;
    int pointwise = 1;
    for (int d = 0; d < g->nd; d++)
        if (g->k[d] != 1 || g->stride[d] != 1 || g->pad_b[d] || g->pad_e[d]) pointwise = 0;
    if (pointwise) return 0;          /* the plain product reads 1x1 inputs directly already */
    if (g->M / g->group < 4) return 0;
    if (flat_ok(g)) return 1;
    if (g->out[L] < 20) return 0;     /* narrow rows would leave most of the 32 lanes idle */
    return g->stride[L] <= 4;
}

/* Geometry of the padded, phase-split channel copies (2-D view; 1-D has H = 1). */
typedef struct dgeo {
    int64_t IH, IW, OH, OW, KH, KW, sh, sw, dh, dw, pt, pl;
    int64_t Hp, Lq, rowlen, cs; /* padded rows, phase row length, sw * Lq, channel stride */
    int64_t Hq, plane;          /* flat: rows of a phase plane, and its size Hq * Lq */
    int flat;                   /* lanes over the flat padded map (see flat_ok) */
    int64_t chunks;             /* flat: 32-lane chunks covering OH rows of rowlen */
} dgeo;

static void dgeo_make(const kconv_geom *g, dgeo *d) {
    int two = g->nd == 2, L = g->nd - 1;
    d->IH = two ? g->in[0] : 1;
    d->IW = g->in[L];
    d->OH = two ? g->out[0] : 1;
    d->OW = g->out[L];
    d->KH = two ? g->k[0] : 1;
    d->KW = g->k[L];
    d->sh = two ? g->stride[0] : 1;
    d->sw = g->stride[L];
    d->dh = two ? g->dil[0] : 1;
    d->dw = g->dil[L];
    d->pt = two ? g->pad_b[0] : 0;
    d->pl = g->pad_b[L];
    d->Hp = (d->OH - 1) * d->sh + (d->KH - 1) * d->dh + 1;
    d->flat = flat_ok(g);
    if (d->flat) {
        /* the planes hold just what the outputs read; reads run on into the next rows */
        d->Lq = d->OW + ((d->KW - 1) * d->dw) / d->sw;
        d->Hq = d->OH + ((d->KH - 1) * d->dh) / d->sh;
        d->plane = d->Hq * d->Lq;
        d->rowlen = d->Lq;
        d->cs = d->sh * d->sw * d->plane;
    } else {
        /* every tap reads [shift, shift + OW rounded up to 32) of its phase row */
        d->Lq = (d->OW + DNR - 1) / DNR * DNR + ((d->KW - 1) * d->dw) / d->sw + 1;
        d->rowlen = d->sw * d->Lq;
        d->cs = d->Hp * d->rowlen;
    }
    d->chunks = (d->OH * d->rowlen + DNR - 1) / DNR;
}

typedef struct djob {
    const kconv_geom *g;
    dgeo d;
    const float *x, *wpk, *bias, *z;
    const kconv_act *act;
    float *y, *pad;
    const int64_t *offs;
    int64_t n, Cg, Mg, K, panels, wpk_group;
    int64_t rows, row_items; /* an item's rows: block rb of row_items over rows (kconv_block_start) */
    int clear;               /* fill_run zeroes each plane before copying (a new padded layout) */
    int avx512;              /* the AVX-512 tiles; else conv_direct_avx2.c's */
} djob;

/* Copies channels [c0, c1) of image n into the padded layout. Only input values are written: the
 * padding sits at the same places for every image and stays zero from the buffer's clearing. */
static void fill_run(void *arg, int64_t c0, int64_t c1) {
    const djob *j = arg;
    const dgeo *d = &j->d;
    for (int64_t cc = c0; cc < c1; cc++) {
        int64_t n = j->n + cc / j->g->C, c = cc % j->g->C; /* cc runs over the images' channels */
        const float *xp = j->x + (n * j->g->C + c) * j->g->in_size;
        float *cp = j->pad + cc * d->cs;
        if (j->clear) memset(cp, 0, sizeof(float) * (size_t)d->cs);
        for (int64_t iy = 0; iy < d->IH; iy++) {
            int64_t r = iy + d->pt;
            float *ph[FLAT_MAX_STRIDE]; /* the rows the phases of this input row go to */
            if (d->flat) {
                int64_t py = r % d->sh, i = r / d->sh;
                if (i >= d->Hq) continue;
                for (int64_t q = 0; q < d->sw; q++)
                    ph[q] = cp + (py * d->sw + q) * d->plane + i * d->Lq;
            } else {
                if (r >= d->Hp) continue;
                for (int64_t q = 0; q < d->sw; q++) ph[q] = cp + r * d->rowlen + q * d->Lq;
            }
            const float *xr = xp + iy * d->IW;
            if (d->sw == 1) {
                int64_t head = d->pl < d->Lq ? d->pl : d->Lq;
                int64_t body = d->IW < d->Lq - head ? d->IW : d->Lq - head;
                memcpy(ph[0] + head, xr, sizeof(float) * (size_t)body);
            } else if (d->sw == 2) {
#if defined(__GNUC__) && defined(__x86_64__)
                if (j->avx512) kconv_split2_avx512(xr, d->IW, d->pl, d->Lq, ph[0], ph[1]);
                else if (kgemm_avx2_available()) kconv_split2_avx2(xr, d->IW, d->pl, d->Lq, ph[0], ph[1]);
                else
#endif
                    kconv_split2_plain(xr, d->IW, d->pl, d->Lq, ph[0], ph[1]);
            } else {
                for (int64_t q = 0; q < d->sw; q++) {
                    float *o = ph[q];
                    int64_t first = d->pl - q, lo = first > 0 ? (first + d->sw - 1) / d->sw : 0;
                    int64_t hi = (d->IW + d->pl - q + d->sw - 1) / d->sw;
                    if (hi > d->Lq) hi = d->Lq;
                    for (int64_t u = lo; u < hi; u++) o[u] = xr[u * d->sw + q - d->pl];
                }
            }
        }
    }
}

#define DACC_DECL(i) __m512 c##i##a = _mm512_setzero_ps(), c##i##b = _mm512_setzero_ps();
#define DACC_STEP(i)                                                                               \
    a = _mm512_set1_ps(ap[i]);                                                                     \
    c##i##a = _mm512_fmadd_ps(a, b0, c##i##a);                                                     \
    c##i##b = _mm512_fmadd_ps(a, b1, c##i##b);
#define DACC_SAVE(i) acc[i][0] = c##i##a; acc[i][1] = c##i##b;
#define DROWS4(X) X(0) X(1) X(2) X(3)
#define DROWS8(X) DROWS4(X) X(4) X(5) X(6) X(7)
#define DROWS12(X) DROWS8(X) X(8) X(9) X(10) X(11)

/* with z (laid out as y) the residual is added after the bias, and with relu y < 0 ? 0 : y
 * follows (NaN and -0 stay), as the separate passes over y did */
__attribute__((target("avx512f"))) static inline void dstore(__m512 (*acc)[2], float *y,
                                                             int64_t ys, const float *bias, int mr,
                                                             int nr, const float *z, int relu) {
    const __m512 zero = _mm512_setzero_ps();
    __mmask16 m0 = (__mmask16)(nr >= 16 ? 0xffff : (1u << nr) - 1);
    __mmask16 m1 = (__mmask16)(nr <= 16 ? 0 : nr >= 32 ? 0xffff : (1u << (nr - 16)) - 1);
    for (int r = 0; r < mr; r++) {
        __m512 x = acc[r][0], v = acc[r][1];
        if (bias) {
            __m512 b = _mm512_set1_ps(bias[r]);
            x = _mm512_add_ps(x, b);
            v = _mm512_add_ps(v, b);
        }
        if (z) {
            x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(m0, z + r * ys));
            v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m1, z + r * ys + 16));
        }
        if (relu) {
            x = _mm512_mask_mov_ps(x, _mm512_cmp_ps_mask(x, zero, _CMP_LT_OQ), zero);
            v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
        }
        _mm512_mask_storeu_ps(y + r * ys, m0, x);
        _mm512_mask_storeu_ps(y + r * ys + 16, m1, v);
    }
}

/* 16-output accumulators (nr <= 16), for the last chunk of a row whose width leaves 16 or fewer
 * (112 = 3 x 32 + 16: the 7x7 and 3x3 stride-2 stems) ran the full 32 lanes for half of them. */
#define DACC1_DECL(i) __m512 c##i##a = _mm512_setzero_ps();
#define DACC1_STEP(i) c##i##a = _mm512_fmadd_ps(_mm512_set1_ps(ap[i]), b0, c##i##a);
#define DACC1_SAVE(i) acc[i][0] = c##i##a; acc[i][1] = _mm512_setzero_ps();
#define DLOAD32 __m512 b0 = _mm512_loadu_ps(p), b1 = _mm512_loadu_ps(p + 16), a; (void)a;
#define DLOAD16 __m512 b0 = _mm512_loadu_ps(p);

/* y[r * ys + 0..nr) = bias[r] + sum_k w[m0 + r, k] * xb[offs[k] + 0..nr), r < mr, nr <= 32 (ACC
 * DACC, LOAD DLOAD32) or 16 (DACC1, DLOAD16), with the weights in the product's packed blocks
 * (wpk, Mpad rows) */
#define DEFINE_DKERNEL(NAME, ROWS, FOR_ROWS, ACC, LOAD)                                            \
    __attribute__((target("avx512f"))) static void NAME(                                           \
        const float *wpk, int64_t Mpad, int64_t m0, const float *xb, const int64_t *offs,          \
        int64_t K, float *y, int64_t ys, const float *bias, int mr, int nr, const float *z,        \
        int relu) {                                                                                \
        FOR_ROWS(ACC##_DECL)                                                                       \
        for (int64_t pc = 0; pc < K; pc += KGEMM_KC) {                                             \
            int64_t kc = K - pc < KGEMM_KC ? K - pc : KGEMM_KC;                                    \
            const float *ap = wpk + pc * Mpad + m0 * kc;                                           \
            const int64_t *ob = offs + pc;                                                         \
            for (int64_t k = 0; k < kc; k++) {                                                     \
                const float *p = xb + ob[k];                                                       \
                LOAD                                                                               \
                FOR_ROWS(ACC##_STEP)                                                               \
                ap += DMR;                                                                         \
            }                                                                                      \
        }                                                                                          \
        __m512 acc[ROWS][2];                                                                       \
        FOR_ROWS(ACC##_SAVE)                                                                       \
        dstore(acc, y, ys, bias, mr, nr, z, relu);                                                 \
    }
DEFINE_DKERNEL(dkernel_12, 12, DROWS12, DACC, DLOAD32)
DEFINE_DKERNEL(dkernel_8, 8, DROWS8, DACC, DLOAD32)
DEFINE_DKERNEL(dkernel_4, 4, DROWS4, DACC, DLOAD32)
DEFINE_DKERNEL(dkernel16_12, 12, DROWS12, DACC1, DLOAD16)
DEFINE_DKERNEL(dkernel16_8, 8, DROWS8, DACC1, DLOAD16)
DEFINE_DKERNEL(dkernel16_4, 4, DROWS4, DACC1, DLOAD16)

/* The padded copy is kept by the calling thread between calls: a fresh one would fault in and
 * clear its pages every time, which costs as much as the product on small convolutions. Copies
 * only ever write input values, so a kept buffer whose layout matches (the same padding places)
 * needs no clearing; another layout is cleared once, plane by plane by the threads that fill it
 * (*clear): cleared here on the calling thread, ResNet-50's stride-2 3x3 convolutions at batch 8
 * spent half their 16-thread time in that memset (13.8 MB), as each new layout came round in
 * every run. Large maps allocate per call. */
#define PAD_CACHE_MAX ((int64_t)4 << 20) /* floats */
static _Thread_local float *pad_buf;
static _Thread_local int64_t pad_cap, pad_key[10];
static pthread_key_t pad_tkey;
static pthread_once_t pad_once = PTHREAD_ONCE_INIT;
static void pad_free(void *p) { free(p); }
static void pad_make_key(void) { pthread_key_create(&pad_tkey, pad_free); }

static float *cached_pad(const kconv_geom *g, const dgeo *d, int64_t n, int *clear) {
    *clear = 0;
    if (n > PAD_CACHE_MAX) return NULL;
    int64_t key[10] = {g->C, d->IH, d->IW, d->pt, d->pl, d->flat ? d->Hq : d->Hp, d->Lq,
                       d->sw * FLAT_MAX_STRIDE + d->sh, d->cs, n};
    if (pad_buf && pad_cap >= n && !memcmp(key, pad_key, sizeof key)) return pad_buf;
    if (!pad_buf || pad_cap < n) {
        pthread_once(&pad_once, pad_make_key);
        float *b = aligned_alloc(64, (size_t)((n + 15) / 16 * 16) * sizeof(float));
        if (!b) return NULL;
        free(pad_buf);
        pad_buf = b;
        pad_cap = (n + 15) / 16 * 16;
        pthread_setspecific(pad_tkey, b); /* freed when the thread exits */
    }
    *clear = 1;
    memcpy(pad_key, key, sizeof key);
    return pad_buf;
}

/* Output rows [r0, r1) of item it's (image, group, channel panel). */
static void rows_item(const djob *j, int64_t it, int64_t r0, int64_t r1) {
    const dgeo *d = &j->d;
    const kconv_geom *g = j->g;
    int64_t rest = it / j->row_items;
    int64_t p = rest % j->panels, ig = rest / j->panels;
    int64_t grp = ig % g->group, in = ig / g->group; /* image j->n + in, its group grp */
    int64_t m0 = p * DMR, mr = j->Mg - m0 < DMR ? j->Mg - m0 : DMR;
    const float *wg = j->wpk + grp * j->wpk_group;
    int64_t Mpad = j->panels * DMR;
    const float *bias = j->bias ? j->bias + grp * j->Mg + m0 : NULL;
    const float *gx = j->pad + (in * g->C + grp * j->Cg) * d->cs;
    float *yb = j->y + ((j->n + in) * g->M + grp * j->Mg + m0) * g->out_size;
    /* no activation or Relu: the residual and Relu go in the kernel's store */
    int act = j->act && j->act->kind != KACT_NONE, relu = act && j->act->kind == KACT_RELU;
    int fused = !act || relu;
    for (int64_t oy = r0; oy < r1; oy++) {
        const float *xrow = gx + oy * d->sh * d->rowlen;
        for (int64_t ox = 0; ox < d->OW; ox += DNR) {
            int nr = (int)(d->OW - ox < DNR ? d->OW - ox : DNR);
            float *yt = yb + oy * d->OW + ox;
            const float *zt = fused && j->z ? j->z + (yt - j->y) : NULL;
            const float *xb = xrow + ox;
            if (!j->avx512)
                kconv_dtile_avx2(wg, Mpad, m0, xb, j->offs, j->K, yt, g->out_size, bias, (int)mr,
                                 nr, zt, relu);
            else if (nr <= 16) {
                if (mr > 8)
                    dkernel16_12(wg, Mpad, m0, xb, j->offs, j->K, yt, g->out_size, bias, (int)mr,
                                 nr, zt, relu);
                else if (mr > 4)
                    dkernel16_8(wg, Mpad, m0, xb, j->offs, j->K, yt, g->out_size, bias, (int)mr,
                                nr, zt, relu);
                else
                    dkernel16_4(wg, Mpad, m0, xb, j->offs, j->K, yt, g->out_size, bias, (int)mr,
                                nr, zt, relu);
            } else if (mr > 8)
                dkernel_12(wg, Mpad, m0, xb, j->offs, j->K, yt, g->out_size, bias, (int)mr, nr,
                          zt, relu);
            else if (mr > 4)
                dkernel_8(wg, Mpad, m0, xb, j->offs, j->K, yt, g->out_size, bias, (int)mr, nr,
                          zt, relu);
            else
                dkernel_4(wg, Mpad, m0, xb, j->offs, j->K, yt, g->out_size, bias, (int)mr, nr,
                          zt, relu);
        }
        if (!fused)
            for (int64_t r = 0; r < mr; r++) {
                float *yr = yb + r * g->out_size + oy * d->OW;
                if (j->z) kvec_add_f32(yr, j->z + (yb - j->y) + r * g->out_size + oy * d->OW, d->OW);
                if (j->act) kconv_apply_act(j->act, yr, d->OW);
            }
    }
}

/* Calls fn(j, item, r, r + 1) for items [i0, i1) that each cover all rows (row_items 1), a row
 * at a time across the channel panels of one image and group: the panels then share the row's
 * inputs while they are in L1, where panel after panel streamed the whole map from L2 (a 3x3
 * convolution of 16 channels on 55x55, alone at one thread: 0.52 -> 0.44 ms). Every output is
 * summed as before. */
static void rows_across_panels(const djob *j, int64_t i0, int64_t i1,
                               void (*fn)(const djob *, int64_t, int64_t, int64_t)) {
    for (int64_t it = i0; it < i1;) {
        int64_t end = (it / j->panels + 1) * j->panels;
        if (end > i1) end = i1;
        for (int64_t r = 0; r < j->rows; r++)
            for (int64_t k = it; k < end; k++) fn(j, k, r, r + 1);
        it = end;
    }
}

static void compute_run(void *arg, int64_t i0, int64_t i1) {
    const djob *j = arg;
    if (j->row_items == 1) {
        rows_across_panels(j, i0, i1, rows_item);
        return;
    }
    for (int64_t it = i0; it < i1; it++) {
        int64_t rb = it % j->row_items;
        rows_item(j, it, kconv_block_start(rb, j->row_items, j->rows),
                  kconv_block_start(rb + 1, j->row_items, j->rows));
    }
}

/* Flat chunk [f0, f0 + 32) of mr output channels, computed into tile (32 floats a row), goes to
 * its (row, column) places in y; residual and activation follow there. */
/* y[0..n) = t[0..n) (+ z) (Relu: y < 0 ? 0 : y, as kconv_apply_act: NaN and -0 stay) */
__attribute__((target("avx512f"))) static void seg_store_avx512(float *y, const float *t,
                                                               const float *z, int64_t n,
                                                               int relu) {
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, t + i);
        if (z) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(m, z + i));
        if (relu) v = _mm512_mask_mov_ps(v, _mm512_cmp_ps_mask(v, zero, _CMP_LT_OQ), zero);
        _mm512_mask_storeu_ps(y + i, m, v);
    }
}

/* Not itself compiled for AVX-512: it runs on AVX2 CPUs too, where an AVX-512 function's code
 * may use AVX-512 registers anywhere (the sanitizer build did, before any branch on the tier). */
static void flat_scatter(const djob *j, const float *tile, int64_t f0, int64_t mr, float *yb) {
    const dgeo *d = &j->d;
    const kconv_geom *g = j->g;
    int act = j->act && j->act->kind != KACT_NONE;
    /* no activation or Relu: copy, residual and Relu in one vector pass (the calls per
     * row segment cost a third as much as the 3x3 product of 16 channels itself) */
    int relu = act && j->act->kind == KACT_RELU;
    int inline_ok = !act || relu;
    int64_t end = f0 + DNR < d->OH * d->rowlen ? f0 + DNR : d->OH * d->rowlen;
    for (int64_t f = f0; f < end;) {
        int64_t oy = f / d->rowlen, ox = f - oy * d->rowlen;
        if (ox >= d->OW) {
            f += d->rowlen - ox;
            continue;
        }
        int64_t len = d->OW - ox < end - f ? d->OW - ox : end - f;
        for (int64_t r = 0; r < mr; r++) {
            float *yr = yb + r * g->out_size + oy * d->OW + ox;
            const float *tr = tile + r * DNR + (f - f0);
            if (inline_ok) {
                const float *zr = j->z ? j->z + (yr - j->y) : NULL;
                if (j->avx512) seg_store_avx512(yr, tr, zr, len, relu);
                else kconv_seg_store_avx2(yr, tr, zr, len, relu);
                continue;
            }
            memcpy(yr, tr, sizeof(float) * (size_t)len);
            if (j->z) kvec_add_f32(yr, j->z + (yr - j->y), len);
            if (act) kconv_apply_act(j->act, yr, len);
        }
        f += len;
    }
}

/* 32-lane chunks [r0, r1) of item it's (image, group, channel panel). */
static void flat_item(const djob *j, int64_t it, int64_t r0, int64_t r1) {
    const dgeo *d = &j->d;
    const kconv_geom *g = j->g;
    float tile[DMR * DNR];
    int64_t rest = it / j->row_items;
    int64_t p = rest % j->panels, ig = rest / j->panels;
    int64_t grp = ig % g->group, in = ig / g->group; /* image j->n + in, its group grp */
    int64_t m0 = p * DMR, mr = j->Mg - m0 < DMR ? j->Mg - m0 : DMR;
    const float *wg = j->wpk + grp * j->wpk_group;
    int64_t Mpad = j->panels * DMR;
    const float *bias = j->bias ? j->bias + grp * j->Mg + m0 : NULL;
    const float *gx = j->pad + (in * g->C + grp * j->Cg) * d->cs;
    float *yb = j->y + ((j->n + in) * g->M + grp * j->Mg + m0) * g->out_size;
    for (int64_t c = r0; c < r1; c++) {
        const float *xb = gx + c * DNR;
        if (!j->avx512)
            kconv_dtile_avx2(wg, Mpad, m0, xb, j->offs, j->K, tile, DNR, bias, (int)mr, DNR, NULL,
                             0);
        else if (mr > 8)
            dkernel_12(wg, Mpad, m0, xb, j->offs, j->K, tile, DNR, bias, (int)mr, DNR, NULL, 0);
        else if (mr > 4)
            dkernel_8(wg, Mpad, m0, xb, j->offs, j->K, tile, DNR, bias, (int)mr, DNR, NULL, 0);
        else
            dkernel_4(wg, Mpad, m0, xb, j->offs, j->K, tile, DNR, bias, (int)mr, DNR, NULL, 0);
        flat_scatter(j, tile, c * DNR, mr, yb);
    }
}

static void compute_flat_run(void *arg, int64_t i0, int64_t i1) {
    const djob *j = arg;
    if (j->row_items == 1) {
        rows_across_panels(j, i0, i1, flat_item);
        return;
    }
    for (int64_t it = i0; it < i1; it++) {
        int64_t rb = it % j->row_items;
        flat_item(j, it, kconv_block_start(rb, j->row_items, j->rows),
                  kconv_block_start(rb + 1, j->row_items, j->rows));
    }
}

static double item_cost(const void *arg, int64_t it) {
    const djob *j = arg;
    const dgeo *d = &j->d;
    int64_t rb = it % j->row_items, p = (it / j->row_items) % j->panels;
    int64_t mr = j->Mg - p * DMR < DMR ? j->Mg - p * DMR : DMR;
    int64_t r0 = kconv_block_start(rb, j->row_items, j->rows);
    int64_t r1 = kconv_block_start(rb + 1, j->row_items, j->rows);
    int64_t lanes = d->flat ? DNR : (d->OW + DNR - 1) / DNR * DNR;
    return r1 > r0 ? (double)((mr + 3) / 4 * 4) * (double)((r1 - r0) * lanes) * (double)j->K : 0;
}

/* The padded copy's buffer (j->pad; *own: to free after) for *nb images at a time, and the
 * offset of every tap from a position's input (*offs, to free). With threads, images go together,
 * as many as a kept buffer holds (at batch 8 a per-image loop gave 16 threads one image's items
 * at a time, and two pool hand-offs per image). One thread goes image by image: the copy it just
 * made is still in its cache. */
static kiln_status padded_setup(kiln_ctx *ctx, djob *j, int nt, int64_t *nb_out, int *own,
                                int64_t **offs_out) {
    const kconv_geom *g = j->g;
    const dgeo *d = &j->d;
    int64_t K = g->C / g->group * g->k_size;
    int64_t slack = d->rowlen + 2 * DNR, per_image = g->C * d->cs, nb = nt > 1 ? g->N : 1;
    if (nb * per_image + slack > PAD_CACHE_MAX) {
        nb = (PAD_CACHE_MAX - slack) / per_image;
        if (nb < 1) nb = 1;
    }
    /* the padding: zero; flat chunks past the last row read up to a row and a chunk further */
    int64_t npad = nb * per_image + slack;
    *own = 0;
    float *pad = cached_pad(g, d, npad, &j->clear);
    if (j->clear) memset(pad + nb * per_image, 0, sizeof(float) * (size_t)slack); /* fill_run: the planes */
    if (!pad) {
        pad = calloc((size_t)npad, sizeof(float));
        *own = 1;
    }
    int64_t *offs = malloc(sizeof(int64_t) * (size_t)(K > 0 ? K : 1));
    if (!pad || !offs) {
        if (*own) free(pad);
        free(offs);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the padded input");
    }
    /* one channel's taps, then the other channels' as those plus c * cs: with divisions for
     * every tap the table took 15 us a call at K = 1152, half the time of that 3x3 convolution
     * of 128 -> 32 channels on a 7x7 map */
    int64_t T = d->KH * d->KW;
    for (int64_t t = 0; t < T && t < K; t++) {
        int64_t dy = t / d->KW * d->dh, dx = t % d->KW * d->dw;
        if (d->flat)
            offs[t] = ((dy % d->sh) * d->sw + dx % d->sw) * d->plane + dy / d->sh * d->Lq +
                      dx / d->sw;
        else
            offs[t] = dy * d->rowlen + (dx % d->sw) * d->Lq + dx / d->sw;
    }
    for (int64_t k = T; k < K; k += T) /* K = C/group * T */
        for (int64_t t = 0; t < T; t++) offs[k + t] = offs[t] + k / T * d->cs;
    j->pad = pad;
    j->offs = offs;
    *nb_out = nb;
    *offs_out = offs;
    return KILN_OK;
}

kiln_status kconv_direct_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wpk,
                             const float *bias, const float *z, const kconv_act *act, float *y) {
    djob j;
    memset(&j, 0, sizeof j);
    j.g = g;
    dgeo_make(g, &j.d);
    j.x = x;
    j.wpk = wpk;
    j.bias = bias;
    j.z = z;
    j.act = act;
    j.y = y;
    j.Cg = g->C / g->group;
    j.Mg = g->M / g->group;
    j.K = j.Cg * g->k_size;
    j.panels = (j.Mg + DMR - 1) / DMR;
    j.wpk_group = kgemm_avx512_packed_size(j.Mg, j.K);
    j.avx512 = kgemm_avx512_available();
    const dgeo *d = &j.d;
    int nt = kiln_num_threads(ctx);
    int64_t nb, *offs, per_image = g->C * d->cs;
    int own;
    KILN_TRY(padded_setup(ctx, &j, nt, &nb, &own, &offs));
    /* Items: one 12-channel panel of one image and group over a block of output rows (flat: of
     * 32-lane chunks); the planner picks the blocks. Nothing is repacked per item, so only the
     * balance and a small cost per item count. */
    j.rows = d->flat ? d->chunks : d->OH;
    double lanes = d->flat ? 1.0 : (double)((d->OW + DNR - 1) / DNR);
    double macs = (double)j.Mg * g->group * j.K * g->out_size * nb;
    int64_t last = j.Mg - (j.panels - 1) * DMR;
    kconv_plan_in pi = {nb * g->group, j.panels, j.rows, j.panels, j.panels, 1,
                        macs / 100.0 < KPAR_SERIAL_NS ? 1 : nt, (double)((last + 3) / 4 * 4) / DMR,
                        1.0, lanes, 0.0, 0.0, 1000.0 / (12.0 * (double)j.K)};
    j.row_items = kconv_plan_split(&pi).nc;
    int64_t per_batch = g->group * j.panels * j.row_items;
    for (int64_t n = 0; n < g->N; n += nb) {
        int64_t cnt = g->N - n < nb ? g->N - n : nb, items = cnt * per_batch;
        double work = macs / (double)nb * (double)cnt;
        int64_t grain = kpar_grain(items, work / 100.0);
        j.n = n;
        if (kconv_debug_partition() && n == 0) {
            char path[48];
            snprintf(path, sizeof path, "%s%s", d->flat ? "direct-flat" : "direct-rows",
                     nb < g->N ? "-per-image-group" : "");
            kconv_report_partition(path, g, nt, items, grain, item_cost, &j, 1.0);
        }
        kiln_parallel_for(ctx, cnt * g->C, kpar_grain(cnt * g->C, (double)cnt * per_image * 0.3),
                          fill_run, &j);
        j.clear = 0; /* later rounds refill the same planes */
        kiln_parallel_for(ctx, items, grain, d->flat ? compute_flat_run : compute_run, &j);
    }
    if (own) free(j.pad);
    free(offs);
    return KILN_OK;
}

/* ---- Output channels in the lanes ----
 * On small maps the 32 output positions of a register tile run over padding columns or a partial
 * last chunk: a 7x7 map keeps 49 of 64 lanes busy, 14x14 196 of 224 (the flat layout above, or
 * the product's 32-column panels for a 1x1 convolution). Here a vector holds 16 output channels of
 * one position instead: a tile is 32 channels x up to 12 consecutive positions of one output row
 * (24 accumulators), each tap one broadcast input value per position times two weight vectors,
 * so lanes idle only where the channel count is not a multiple of 16 (ONNX Runtime's NCHWc
 * kernels put channels in the lanes for the same reason). Inputs: a 1x1 convolution reads X
 * where it lies; others read the padded copy above (a tap is again one offset for every
 * position). Weights: kconv_pack_lanes, per group blocks of 32 channels (the last may hold 16),
 * [tap][channel] inside a block. */
#define LMB 32 /* channels per block */
#define LNP 12 /* positions per tile, at most */
#define LSPAN 192 /* positions per item of the AVX2 tiles' spans (ljob.span), at most */

static int64_t lanes_mpad(const kconv_geom *g) { return (g->M / g->group + 15) / 16 * 16; }

int64_t kconv_lanes_weight_size(const kconv_geom *g) {
    return g->group * lanes_mpad(g) * (g->C / g->group) * g->k_size;
}

/* Read from the product's packed panels (kconv_pack_weight), not from W: a constant W's pages
 * were handed back once packed, and reading them here would fault them in again. */
void kconv_pack_lanes(const kconv_geom *g, const float *wpk, float *dst) {
    int64_t Mg = g->M / g->group, Kg = g->C / g->group * g->k_size, Mp = lanes_mpad(g);
    int64_t M12 = (Mg + DMR - 1) / DMR * DMR, per = kgemm_avx512_packed_size(Mg, Kg);
    for (int64_t grp = 0; grp < g->group; grp++) {
        const float *wg = wpk + grp * per;
        float *dg = dst + grp * Mp * Kg;
        for (int64_t mb = 0; mb < Mp; mb += LMB) {
            int64_t bw = Mp - mb < LMB ? Mp - mb : LMB;
            float *d = dg + mb * Kg;
            for (int64_t k = 0; k < Kg; k++)
                for (int64_t m = 0; m < bw; m++) {
                    int64_t r = mb + m;
                    d[k * bw + m] = r < Mg ? wg[kgemm_packed_a_at(M12, Kg, r, k)] : 0.0f;
                }
        }
    }
}

static int pointwise_geom(const kconv_geom *g) {
    for (int d = 0; d < g->nd; d++)
        if (g->k[d] != 1 || g->stride[d] != 1 || g->pad_b[d] || g->pad_e[d]) return 0;
    return 1;
}

int kconv_lanes_ok(const kconv_geom *g) {
    static _Atomic int off = -1;
    if (kconv_switched_off("KILN_NO_CONV_LANES", &off)) return 0;
    if (!kgemm_packed_available() || g->nd < 1 || g->nd > 2) return 0;
    int64_t Mg = g->M / g->group;
    if (Mg < 16 || g->out_size < 1) return 0;
    /* Time per output against the layout the convolution would take otherwise: taps over busy
     * lanes, plus here a store (bias, transpose) that costs about as much as 32 taps (measured
     * 20 to 30 at K = 48..512, one thread): a 1x1 of 48 channels on 13x13 runs 1.3x slower this
     * way, one of 512 on 7x7 1.25x faster. */
    double K = (double)(g->C / g->group * g->k_size);
    double eff_ch = (double)Mg / (double)lanes_mpad(g), eff_pos;
    if (pointwise_geom(g)) {
        /* With 8 lanes the product won or tied on every 1x1 shape timed (AVX2 EPYC, 1 thread,
         * bench/variants_ab.py, r50_1x1_* and pw_1x1_* of bench/conv_bench.py): 0.82-0.97x the
         * lanes' time on ResNet-50's 14x14 and 7x7 layers, 0.85-1.02x on MobileNetV3's and
         * SqueezeNet's, one at 1.05x (672 -> 112 on 14x14). */
        if (!kgemm_avx512_available()) return 0;
        /* at batch > 1 the product's tiles run across images and store in place on maps of a
         * column panel up to a tile (conv_gemm.c, span_direct): only the batch's last panel is
         * partial. 14x14, batch 8, one thread, with the residual: 256 -> 1024 7.6 ms here, 6.4
         * as the product; 1024 -> 256 7.4 and 6.5; at 7x7, 512 -> 2048 12.3 and 11.1. */
        int64_t cols = g->out_size;
        if (g->N > 1 && g->out_size >= DNR && g->out_size < KCONV_TILE_COLS) cols *= g->N;
        eff_pos = (double)cols / (double)((cols + DNR - 1) / DNR * DNR);
    } else if (direct_geom_ok(g)) {
        dgeo d;
        dgeo_make(g, &d);
        eff_pos = d.flat ? (double)g->out_size / (double)(d.chunks * DNR)
                         : (double)d.OW / (double)((d.OW + DNR - 1) / DNR * DNR);
        /* Fitted to 3x3 convolutions timed both ways (1 thread, AVX-512 VM): a last block of 16
         * channels broadcasts every input for one vector of products and costs about as much as
         * 24 channels of a full block (48 channels on 64x64: 1.67 ms here, 1.51 flat), and the
         * flat 12 x 32 tiles run about 10% under their lane count on large maps (64 -> 64
         * channels on 56x56: 1.46 ms here, 1.60 flat; 64 -> 128 on 112x112: 11.7 and 13.4). */
        int64_t Mp = lanes_mpad(g);
        if (Mp % LMB) eff_ch = (double)Mg / (double)(Mp - 16 + 24);
        if (d.flat) eff_pos /= 1.1;
    } else {
        return 0;
    }
    return (K + 32.0) / eff_ch < K / eff_pos;
}

/* tile[i * 32 + m] = sum_k w[k][m] * xb[offs[k] + i], i < NP, m < 16 * MV */
__attribute__((target("avx512f"), always_inline)) static inline void
lanes_tile(const float *wb, int64_t K, const int64_t *offs, const float *xb, float *tile,
           const int NP, const int MV) {
    __m512 c0[LNP], c1[LNP];
#pragma GCC unroll 12
    for (int i = 0; i < NP; i++) c0[i] = c1[i] = _mm512_setzero_ps();
    for (int64_t k = 0; k < K; k++) {
        const float *p = xb + offs[k];
        __m512 w0 = _mm512_loadu_ps(wb), w1 = MV == 2 ? _mm512_loadu_ps(wb + 16) : w0;
        /* perf puts this loop's time on the instructions after its loads: at 7 positions a
         * tile it does 14 FMAs per 128 bytes of weights. The weights 8 taps ahead and the
         * inputs 16 taps ahead, asked for now: ResNet-50 at batch 1 on the 16-core Sapphire
         * Rapids 0.935x the time at 16 threads, 0.978x at one (bench/variants_ab.py, pf2) */
        _mm_prefetch((const char *)(wb + 16 * MV * 8), _MM_HINT_T0);
        if (MV == 2) _mm_prefetch((const char *)(wb + 16 * MV * 8 + 16), _MM_HINT_T0);
        if (k + 16 < K) _mm_prefetch((const char *)(xb + offs[k + 16]), _MM_HINT_T0);
#pragma GCC unroll 12
        for (int i = 0; i < NP; i++) {
            __m512 a = _mm512_set1_ps(p[i]);
            c0[i] = _mm512_fmadd_ps(a, w0, c0[i]);
            if (MV == 2) c1[i] = _mm512_fmadd_ps(a, w1, c1[i]);
        }
        wb += 16 * MV;
    }
#pragma GCC unroll 12
    for (int i = 0; i < NP; i++) {
        _mm512_storeu_ps(tile + i * LMB, c0[i]);
        if (MV == 2) _mm512_storeu_ps(tile + i * LMB + 16, c1[i]);
    }
}

#define LANES_CASE(n)                                                                              \
    case n:                                                                                        \
        if (mv == 2) lanes_tile(wb, K, offs, xb, tile, n, 2);                                      \
        else lanes_tile(wb, K, offs, xb, tile, n, 1);                                              \
        break;
__attribute__((target("avx512f"))) static void lanes_dispatch(const float *wb, int64_t K,
                                                              const int64_t *offs, const float *xb,
                                                              float *tile, int np, int mv) {
    switch (np) {
        LANES_CASE(1) LANES_CASE(2) LANES_CASE(3) LANES_CASE(4) LANES_CASE(5) LANES_CASE(6)
        LANES_CASE(7) LANES_CASE(8) LANES_CASE(9) LANES_CASE(10) LANES_CASE(11) LANES_CASE(12)
    default: break;
    }
}

/* r[c] = column c of the 16 x 16 block r (r[i] lane c <-> r[c] lane i) */
__attribute__((target("avx512f"))) static inline void transpose16(__m512 *r) {
    __m512 t[16], u[16];
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    /* u[4i + j], 128-bit lane L: rows 4i..4i+3 of column 4L + j */
    for (int i = 0; i < 16; i += 4) {
        u[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        u[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xEE);
        u[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        u[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
    }
    for (int j = 0; j < 4; j++) {
        __m512 v0 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0x88), v1 = _mm512_shuffle_f32x4(u[j], u[4 + j], 0xDD);
        __m512 w0 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0x88);
        __m512 w1 = _mm512_shuffle_f32x4(u[8 + j], u[12 + j], 0xDD);
        r[j] = _mm512_shuffle_f32x4(v0, w0, 0x88);
        r[8 + j] = _mm512_shuffle_f32x4(v0, w0, 0xDD);
        r[4 + j] = _mm512_shuffle_f32x4(v1, w1, 0x88);
        r[12 + j] = _mm512_shuffle_f32x4(v1, w1, 0xDD);
    }
}

typedef struct ljob {
    const kconv_geom *g;
    const float *src;       /* X (1x1) or the padded copy of images [n0, n0 + count) */
    const float *wl, *bias, *z;
    const kconv_act *act;
    float *y;
    const int64_t *offs;    /* per tap, from a position's input */
    int64_t n0, Mg, K, Mp, blocks, rows, rowlen, segs, rstride, img_stride, ch_stride;
    int64_t ow; /* AVX2 tiles: positions per output row (their segments run across rows) */
    int span;   /* AVX2 tiles: items of up to LSPAN positions, the taps outer (lanes_parallel) */
} ljob;

/* Item it of a lanes job: (image, group, channel block, output row, row segment), the segment
 * fastest. */
typedef struct litem {
    int64_t in, grp, mb, bw, mr, np, p0;
    const float *xg, *xb, *wb; /* the image and group's inputs; the segment's first position's */
} litem;

static litem lanes_item(const ljob *j, int64_t it) {
    const kconv_geom *g = j->g;
    litem t;
    int64_t s = it % j->segs, rest = it / j->segs;
    int64_t oy = rest % j->rows;
    rest /= j->rows;
    int64_t b = rest % j->blocks;
    rest /= j->blocks;
    t.grp = rest % g->group;
    t.in = rest / g->group;
    int64_t x0 = s * j->rowlen / j->segs, x1 = (s + 1) * j->rowlen / j->segs;
    t.mb = b * LMB;
    t.bw = j->Mp - t.mb < LMB ? j->Mp - t.mb : LMB;
    t.mr = j->Mg - t.mb < t.bw ? j->Mg - t.mb : t.bw;
    t.np = x1 - x0;
    t.p0 = oy * j->rowlen + x0;
    t.xg = j->src + t.in * j->img_stride + t.grp * (g->C / g->group) * j->ch_stride;
    t.xb = t.xg + oy * j->rstride + x0;
    t.wb = j->wl + t.grp * j->Mp * j->K + t.mb * j->K;
    return t;
}

/* the AVX2 tiles (conv_direct_avx2.c) over items [i0, i1) */
static void lanes_run_avx2(const ljob *j, int64_t i0, int64_t i1) {
    const kconv_geom *g = j->g;
    float tile[LSPAN * LMB];
    kconv_actv av = kconv_actv_make(j->act);
    int act_after = av.mode == KACTV_OTHER;
    for (int64_t it = i0; it < i1; it++) {
        litem t = lanes_item(j, it);
        const float *in_at[LSPAN];
        for (int64_t i = 0; i < t.np; i++) {
            int64_t p = t.p0 + i;
            in_at[i] = t.xg + p / j->ow * j->rstride + p % j->ow;
        }
        if (j->span) kconv_lanes_span_avx2(t.wb, j->K, j->offs, in_at, tile, (int)t.np, (int)t.bw);
        else kconv_lanes_tile_avx2(t.wb, j->K, j->offs, in_at, tile, (int)t.np, (int)t.bw);
        int64_t at = ((j->n0 + t.in) * g->M + t.grp * j->Mg + t.mb) * g->out_size + t.p0;
        kconv_lanes_store_avx2(tile, (int)t.np, (int)t.mr,
                               j->bias ? j->bias + t.grp * j->Mg + t.mb : NULL, j->y + at,
                               g->out_size, j->z ? j->z + at : NULL, &av);
        if (act_after)
            for (int64_t m = 0; m < t.mr; m++)
                kconv_apply_act(j->act, j->y + at + m * g->out_size, t.np);
    }
}

__attribute__((target("avx512f"))) static void lanes_run_avx512(const ljob *j, int64_t i0,
                                                               int64_t i1) {
    const kconv_geom *g = j->g;
    float tile[LNP * LMB];
    /* residual and activation on the transposed registers on their way out: a call per output
     * channel and tile (12 values) cost as much as the product where the rows are short */
    kconv_actv av = kconv_actv_make(j->act);
    int act_regs = av.mode != KACTV_OTHER && av.mode != KACTV_NONE;
    int act_after = av.mode == KACTV_OTHER;
    const __m512 zero = _mm512_setzero_ps();
    for (int64_t it = i0; it < i1; it++) {
        litem t = lanes_item(j, it);
        int64_t grp = t.grp, mb = t.mb, mr = t.mr, np = t.np, mv = t.bw / 16;
        lanes_dispatch(t.wb, j->K, j->offs, t.xb, tile, (int)np, (int)mv);
        /* bias on the channel vectors, then each 16 channels x 16 positions go to the output
         * planes through one transpose */
        int64_t n = j->n0 + t.in, p0 = t.p0;
        __mmask16 st = (__mmask16)((1u << np) - 1);
        for (int64_t v = 0; v < mv; v++) {
            int64_t m0 = 16 * v, mc = mr - m0 < 16 ? mr - m0 : 16;
            if (mc <= 0) break;
            __m512 bv = j->bias ? _mm512_maskz_loadu_ps((__mmask16)((1u << mc) - 1),
                                                        j->bias + grp * j->Mg + mb + m0)
                                : zero;
            __m512 r[16];
            for (int64_t i = 0; i < 16; i++) {
                r[i] = i < np ? _mm512_add_ps(_mm512_loadu_ps(tile + i * LMB + m0), bv) : zero;
            }
            transpose16(r);
            for (int64_t m = 0; m < mc; m++) {
                float *yr = j->y + (n * g->M + grp * j->Mg + mb + m0 + m) * g->out_size + p0;
                __m512 v = r[m];
                if (j->z) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(st, j->z + (yr - j->y)));
                if (act_regs) v = kconv_actv_apply(&av, v);
                _mm512_mask_storeu_ps(yr, st, v);
                if (act_after) kconv_apply_act(j->act, yr, np);
            }
        }
    }
}

/* a plain function: an AVX-512 one may use AVX-512 registers before any branch on the tier */
static void lanes_run(void *arg, int64_t i0, int64_t i1) {
    if (kgemm_avx512_available()) lanes_run_avx512(arg, i0, i1);
    else lanes_run_avx2(arg, i0, i1);
}

static int64_t lanes_items(const ljob *j, int64_t images) {
    return images * j->g->group * j->blocks * j->rows * j->segs;
}

static double lanes_cost(const void *arg, int64_t it) {
    const ljob *j = arg;
    int64_t s = it % j->segs, b = it / (j->segs * j->rows) % j->blocks;
    int64_t np = (s + 1) * j->rowlen / j->segs - s * j->rowlen / j->segs;
    int64_t bw = j->Mp - b * LMB < LMB ? j->Mp - b * LMB : LMB;
    return (double)(bw * np * j->K);
}

static _Atomic int lanes_span_off = -1;

static void lanes_parallel(kiln_ctx *ctx, ljob *lj, int64_t images, double macs, int report) {
    if (!kgemm_avx512_available()) {
        /* The AVX2 tiles' segments span rows, so their count is free: at least 6 positions
         * each (12 accumulators), and up to 4 items a thread where a map is small (a 14x14
         * map of 64 channels made 34 items of 12 for 16 threads) */
        if (lj->rows > 1) {
            lj->ow = lj->rowlen;
            lj->rowlen *= lj->rows;
            lj->rows = 1;
        }
        int64_t lo = (lj->rowlen + LNP - 1) / LNP, hi = (lj->rowlen + 5) / 6;
        int64_t others = images * lj->g->group * lj->blocks;
        int64_t want = (4 * (int64_t)kiln_num_threads(ctx) + others - 1) / others;
        /* A block's weights past 256 KB (half this EPYC's L2) take the spans: at most LSPAN
         * positions an item, 12 at least, about two items a thread. 3x3 of 512 channels on
         * 7x7, one thread (bench/variants_ab.py r50_3x3_7_512_b1): see kconv_lanes_span_avx2. */
        lj->span = !kconv_switched_off("KILN_NO_LANES_SPAN", &lanes_span_off) &&
                   (double)lj->K * LMB * sizeof(float) > 256.0 * 1024 && lj->rowlen > LNP;
        if (lj->span) {
            lo = (lj->rowlen + LSPAN - 1) / LSPAN;
            hi = lj->rowlen / LNP > lo ? lj->rowlen / LNP : lo;
            want = (2 * (int64_t)kiln_num_threads(ctx) + others - 1) / others;
        }
        lj->segs = want < lo ? lo : want > hi ? hi : want;
    }
    if (!lj->ow) lj->ow = lj->rowlen;
    int64_t items = lanes_items(lj, images), grain = kpar_grain(items, macs / 100.0);
    if (report && kconv_debug_partition())
        kconv_report_partition("direct-lanes", lj->g, kiln_num_threads(ctx), items, grain,
                               lanes_cost, lj, 1.0);
    kiln_parallel_for(ctx, items, grain, lanes_run, lj);
}

kiln_status kconv_lanes_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wl,
                            const float *bias, const float *z, const kconv_act *act, float *y) {
    ljob lj = {.g = g, .wl = wl, .bias = bias, .z = z, .act = act, .y = y, .Mg = g->M / g->group,
               .Mp = lanes_mpad(g), .K = g->C / g->group * g->k_size};
    lj.blocks = (lj.Mp + LMB - 1) / LMB;
    int nt = kiln_num_threads(ctx);
    double macs_img = (double)lj.Mp * g->group * lj.K * g->out_size;
    if (pointwise_geom(g)) {
        /* X read in place: one "row" of all positions, a tap is a channel plane */
        int64_t *offs = malloc(sizeof(int64_t) * (size_t)(lj.K > 0 ? lj.K : 1));
        if (!offs) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for tap offsets");
        for (int64_t k = 0; k < lj.K; k++) offs[k] = k * g->in_size;
        lj.src = x;
        lj.offs = offs;
        lj.rows = 1;
        lj.rowlen = g->out_size;
        lj.img_stride = g->C * g->in_size;
        lj.ch_stride = g->in_size;
        lj.segs = (lj.rowlen + LNP - 1) / LNP;
        lanes_parallel(ctx, &lj, g->N, macs_img * (double)g->N, 1);
        free(offs);
        return KILN_OK;
    }
    djob j;
    memset(&j, 0, sizeof j);
    j.g = g;
    dgeo_make(g, &j.d);
    j.x = x;
    j.avx512 = kgemm_avx512_available();
    const dgeo *d = &j.d;
    int64_t nb, *offs, per_image = g->C * d->cs;
    int own;
    KILN_TRY(padded_setup(ctx, &j, nt, &nb, &own, &offs));
    float *pad = j.pad;
    lj.src = pad;
    lj.offs = offs;
    lj.rows = d->OH;
    lj.rowlen = d->OW;
    lj.rstride = d->flat ? d->Lq : d->sh * d->rowlen;
    lj.img_stride = per_image;
    lj.ch_stride = d->cs;
    lj.segs = (lj.rowlen + LNP - 1) / LNP;
    for (int64_t n = 0; n < g->N; n += nb) {
        int64_t cnt = g->N - n < nb ? g->N - n : nb;
        j.n = n;
        lj.n0 = n;
        kiln_parallel_for(ctx, cnt * g->C, kpar_grain(cnt * g->C, (double)cnt * per_image * 0.3),
                          fill_run, &j);
        j.clear = 0; /* later rounds refill the same planes */
        lanes_parallel(ctx, &lj, cnt, macs_img * (double)cnt, n == 0);
    }
    if (own) free(pad);
    free(offs);
    return KILN_OK;
}

#else
int kconv_lanes_ok(const kconv_geom *g) { return 0; }
int64_t kconv_lanes_weight_size(const kconv_geom *g) { return 0; }
void kconv_pack_lanes(const kconv_geom *g, const float *w, float *dst) {}
kiln_status kconv_lanes_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wl,
                            const float *bias, const float *z, const kconv_act *act, float *y) {
    return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "channel-lane convolution needs AVX-512");
}
int kconv_direct_ok(const kconv_geom *g) { return 0; }
kiln_status kconv_direct_f32(kiln_ctx *ctx, const kconv_geom *g, const float *x, const float *wpk,
                             const float *bias, const float *z, const kconv_act *act, float *y) {
    return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "direct convolution needs AVX-512");
}
#endif
