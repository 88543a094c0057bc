/* 8-bit integer convolution on the qgemm.h product: the weights are the packed A (one block per
 * group, prepacked once), the im2col matrix of each image the B packed per call (1x1 stride-1
 * convolutions pack the input planes directly). Depthwise 2-D convolutions, where a product would
 * have one row, run a direct kernel instead. */
#include "qgemm.h"
#include "gemm_util.h"
#include "qgemm_avx2.h"
#include "quant_isa.h"
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define KQC_X86 1
#include <immintrin.h>
#define AVX512 __attribute__((target("avx512f,avx512bw,avx512vl")))
#endif

static int is_depthwise(const kqg_conv_geom *g) {
    return g->nsp == 2 && g->group > 1 && g->C == g->group && g->M == g->group;
}

kiln_status kqg_conv_pack_w(kiln_ctx *ctx, const kqg_conv_geom *g, int wdt, const void *w,
                            kqg_conv_w *out) {
    memset(out, 0, sizeof *out);
    out->group = g->group;
    int64_t Mg = g->M / g->group, Kg = g->C / g->group * g->k_size;
    if (is_depthwise(g)) {
        out->depthwise = 1;
        int64_t n = g->M * g->k_size;
        out->taps = malloc(sizeof(int32_t) * (size_t)(n + 1));
        if (!out->taps) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing weights");
        for (int64_t i = 0; i < n; i++)
            out->taps[i] = wdt == KILN_DTYPE_INT8 ? ((const int8_t *)w)[i] : ((const uint8_t *)w)[i];
        return KILN_OK;
    }
    out->a = calloc((size_t)g->group, sizeof(kqg_a));
    if (!out->a) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing weights");
    for (int64_t gr = 0; gr < g->group; gr++) {
        kiln_status st = kqg_a_init(ctx, &out->a[gr], Mg, Kg);
        if (st != KILN_OK) {
            kqg_conv_w_free(out);
            return st;
        }
        kqg_pack_a(ctx, &out->a[gr], wdt, (const uint8_t *)w + gr * Mg * Kg, Kg);
    }
    return KILN_OK;
}

void kqg_conv_w_free(kqg_conv_w *w) {
    if (w->a)
        for (int64_t gr = 0; gr < w->group; gr++) kqg_a_free(&w->a[gr]);
    free(w->a);
    free(w->taps);
    memset(w, 0, sizeof *w);
}

/* ---- im2col of raw bytes: row r = (channel, kernel offset), column = output position; padding
 * reads as the zero point's byte ---- */

typedef struct col_job {
    const kqg_conv_geom *g;
    const uint8_t *x; /* the group's first input plane */
    uint8_t pad;
    uint8_t *col;
} col_job;

static void im2col_rows(void *arg, int64_t begin, int64_t end) {
    const col_job *j = arg;
    const kqg_conv_geom *g = j->g;
    int nsp = g->nsp;
    int64_t W = g->out_sp[nsp - 1], IW = g->in_sp[nsp - 1], sw = g->stride[nsp - 1];
    for (int64_t r = begin; r < end; r++) {
        int64_t c = r / g->k_size, rem = r % g->k_size, koff[KILN_MAX_RANK];
        for (int d = nsp - 1; d >= 0; d--) {
            koff[d] = (rem % g->k[d]) * g->dil[d];
            rem /= g->k[d];
        }
        const uint8_t *plane = j->x + c * g->in_size;
        uint8_t *dst = j->col + r * g->out_size;
        int64_t x0 = koff[nsp - 1] - g->pad_lo[nsp - 1];
        /* the positions whose input column is inside: ix = x0 + o sw in [0, IW) */
        int64_t lo = x0 >= 0 ? 0 : (-x0 + sw - 1) / sw;
        int64_t hi = IW - x0 <= 0 ? 0 : (IW - x0 - 1) / sw + 1;
        if (hi > W) hi = W;
        if (lo > hi) lo = hi;
        int64_t rows = W ? g->out_size / W : 0, oc[KILN_MAX_RANK] = {0};
        for (int64_t orow = 0; orow < rows; orow++, dst += W) {
            int64_t base = 0, mul = IW;
            int inside = 1;
            for (int d = nsp - 2; d >= 0; d--) {
                int64_t ic = oc[d] * g->stride[d] - g->pad_lo[d] + koff[d];
                if (ic < 0 || ic >= g->in_sp[d]) inside = 0;
                base += ic * mul;
                mul *= g->in_sp[d];
            }
            for (int d = nsp - 2; d >= 0; d--) {
                if (++oc[d] < g->out_sp[d]) break;
                oc[d] = 0;
            }
            if (!inside) {
                memset(dst, j->pad, (size_t)W);
                continue;
            }
            const uint8_t *src = plane + base;
            memset(dst, j->pad, (size_t)lo);
            if (sw == 1) memcpy(dst + lo, src + x0 + lo, (size_t)(hi - lo));
            else
                for (int64_t o = lo; o < hi; o++) dst[o] = src[x0 + o * sw];
            memset(dst + hi, j->pad, (size_t)(W - hi));
        }
    }
}

/* ---- depthwise 2-D: per channel, int32 sums of (x - xz)(w - wz) over the window ----
 * Each channel's plane is copied once as int16 x - xz into a buffer padded with zeros (the
 * padding's x - xz) and split by column into `stride` phases, so that every tap of every output
 * row reads one contiguous run: input column o * s + kw * d is phase (kw * d) % s, index
 * o + (kw * d) / s. */

typedef struct dw_job {
    const kqg_conv_geom *g;
    const kqg_conv_w *w;
    const int32_t *wz;
    int wz_per_ch, s8;
    const uint8_t *x;
    int32_t xz;
    kqg_conv_epi_fn epi;
    void *arg;
    int64_t Hq, Wq; /* rows and columns per phase of the padded plane */
    int failed;     /* a worker ran out of memory */
} dw_job;

#ifdef KQC_X86
/* One output row: acc[o] = sum over taps t of wt[t] * src[t][o], o in [0, n). Two taps at a
 * time with vpmaddwd: their int16 inputs interleaved in pairs (unpack works within 128-bit
 * lanes, so the sums come out permuted and are put back in order at the end). The products of
 * int16 values are formed in 32 bits and x - xz, w - wz stay within +-255: exact. */
AVX512 static void dw_row_avx512(int32_t *acc, int64_t n, int ntaps, const int16_t *const *src,
                                 const int32_t *wt) {
    const __m512i idx0 = _mm512_setr_epi32(0, 1, 2, 3, 16, 17, 18, 19, 4, 5, 6, 7, 20, 21, 22, 23);
    const __m512i idx1 = _mm512_setr_epi32(8, 9, 10, 11, 24, 25, 26, 27, 12, 13, 14, 15, 28, 29, 30, 31);
    for (int64_t o = 0; o < n; o += 32) {
        __mmask32 m = n - o >= 32 ? 0xffffffffu : (__mmask32)((1u << (n - o)) - 1u);
        __m512i lo = _mm512_setzero_si512(), hi = _mm512_setzero_si512();
        for (int t = 0; t < ntaps; t += 2) {
            __m512i a = _mm512_maskz_loadu_epi16(m, src[t] + o);
            __m512i b = t + 1 < ntaps ? _mm512_maskz_loadu_epi16(m, src[t + 1] + o) : _mm512_setzero_si512();
            int32_t w1 = t + 1 < ntaps ? wt[t + 1] : 0;
            __m512i w = _mm512_set1_epi32((int32_t)(((uint32_t)w1 << 16) | ((uint32_t)wt[t] & 0xffffu)));
            lo = _mm512_add_epi32(lo, _mm512_madd_epi16(_mm512_unpacklo_epi16(a, b), w));
            hi = _mm512_add_epi32(hi, _mm512_madd_epi16(_mm512_unpackhi_epi16(a, b), w));
        }
        __m512i r0 = _mm512_permutex2var_epi32(lo, idx0, hi), r1 = _mm512_permutex2var_epi32(lo, idx1, hi);
        __mmask16 m0 = (__mmask16)(m & 0xffffu), m1 = (__mmask16)(m >> 16);
        _mm512_mask_storeu_epi32(acc + o, m0, r0);
        _mm512_mask_storeu_epi32(acc + o + 16, m1, r1);
    }
}

/* x[0, n) - xz as int16 split by parity: even elements to ev[0, ...), odd ones to od[0, ...). */
AVX512 static void widen_split2_avx512(int16_t *ev, int16_t *od, const uint8_t *x, int64_t n, int32_t xz, int s8) {
    const __m512i vz = _mm512_set1_epi16((short)xz);
    const __m512i perm = _mm512_setr_epi64(0, 2, 4, 6, 1, 3, 5, 7); /* after the pack below */
    for (int64_t i = 0; i < n; i += 32) {
        int64_t c = n - i < 32 ? n - i : 32;
        __mmask32 m = c == 32 ? 0xffffffffu : (__mmask32)((1u << c) - 1u);
        __m256i b = _mm256_maskz_loadu_epi8(m, x + i);
        __m512i v = _mm512_sub_epi16(s8 ? _mm512_cvtepi8_epi16(b) : _mm512_cvtepu8_epi16(b), vz);
        /* evens are the low halves of the 32-bit pairs, odds the high halves */
        __m512i e = _mm512_srai_epi32(_mm512_slli_epi32(v, 16), 16), d = _mm512_srai_epi32(v, 16);
        __m512i pk = _mm512_permutexvar_epi64(perm, _mm512_packs_epi32(e, d));
        int64_t ne = (c + 1) / 2, no = c / 2;
        _mm256_mask_storeu_epi16(ev + i / 2, (__mmask16)((1u << ne) - 1u), _mm512_castsi512_si256(pk));
        _mm256_mask_storeu_epi16(od + i / 2, (__mmask16)((1u << no) - 1u), _mm512_extracti64x4_epi64(pk, 1));
    }
}

/* d[o] = x[o] - xz as int16, o in [0, n) */
AVX512 static void widen_row_avx512(int16_t *d, const uint8_t *x, int64_t n, int32_t xz, int s8) {
    const __m512i vz = _mm512_set1_epi16((short)xz);
    for (int64_t o = 0; o < n; o += 32) {
        __mmask32 m = n - o >= 32 ? 0xffffffffu : (__mmask32)((1u << (n - o)) - 1u);
        __m256i b = _mm256_maskz_loadu_epi8(m, x + o);
        __m512i v = s8 ? _mm512_cvtepi8_epi16(b) : _mm512_cvtepu8_epi16(b);
        _mm512_mask_storeu_epi16(d + o, m, _mm512_sub_epi16(v, vz));
    }
}

/* KILN_NO_VNNI: the portable loops, for tests; KILN_NO_AVX512: the AVX2 ones (quant_isa.h) */
static int dw_avx512(void) { return kq_use_avx512(); }
#endif

static void dw_channels(void *arg, int64_t begin, int64_t end) {
    dw_job *j = arg;
    const kqg_conv_geom *g = j->g;
    int64_t OH = g->out_sp[0], OW = g->out_sp[1], IH = g->in_sp[0], IW = g->in_sp[1];
    int64_t KH = g->k[0], KW = g->k[1], sh = g->stride[0], sw = g->stride[1];
    int64_t dh = g->dil[0], dwl = g->dil[1], pt = g->pad_lo[0], pl = g->pad_lo[1];
    int64_t P = g->out_size, Hq = j->Hq, Wq = j->Wq, ntaps = KH * KW;
    /* the flat runs below read up to Wq past the last phase plane, and the AVX2 loop whole
     * blocks of 16 (nvec) past their start: the slack, kept 0 */
    int64_t plane = Hq * Wq, nflat = OH * Wq, nvec = (nflat + 15) / 16 * 16;
    int64_t nbuf = sh * sw * plane + Wq + 64 + 16;
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)(nvec + ntaps + 1));
    int16_t *buf = malloc(sizeof(int16_t) * (size_t)nbuf);
    const int16_t **src = malloc(sizeof(int16_t *) * (size_t)(ntaps + 1));
    int64_t *toff = malloc(sizeof(int64_t) * (size_t)(ntaps + 2 * sw + 1));
    if (!acc || !buf || !src || !toff) {
        __atomic_store_n(&j->failed, 1, __ATOMIC_RELAXED);
        free(acc);
        free(buf);
        free(src);
        free(toff);
        return;
    }
    int32_t *wt = acc + nvec;
    int64_t *ph_first = toff + ntaps, *ph_index = ph_first + sw; /* per column phase: first input
                                                                   * column, its index in the phase */
    for (int64_t p = 0; p < sw; p++) {
        ph_first[p] = ((p - pl) % sw + sw) % sw;
        ph_index[p] = (ph_first[p] + pl) / sw;
    }
    for (int64_t kh = 0; kh < KH; kh++) /* where each tap's run starts for output (0, 0) */
        for (int64_t kw = 0; kw < KW; kw++) {
            int64_t r = kh * dh, col = kw * dwl;
            toff[kh * KW + kw] = (((r % sh) * sw + col % sw) * Hq + r / sh) * Wq + col / sw;
        }
#ifdef KQC_X86
    int vec = dw_avx512(), avx2 = !vec && kq_use_avx2();
#endif
    memset(buf, 0, sizeof(int16_t) * (size_t)nbuf);
    for (int64_t t = 0; t < ntaps; t++) src[t] = buf + toff[t];
    for (int64_t nc = begin; nc < end; nc++) {
        int64_t n = nc / g->C, c = nc % g->C;
        const uint8_t *xp = j->x + nc * g->in_size;
        int32_t wz = j->wz ? j->wz[j->wz_per_ch ? c : 0] : 0;
        for (int64_t t = 0; t < ntaps; t++) wt[t] = j->w->taps[c * ntaps + t] - wz;
        /* the plane into the padded phases (the padding stays 0 from the first memset) */
        for (int64_t ih = 0; ih < IH; ih++) {
            const uint8_t *xr = xp + ih * IW;
            int64_t r = ih + pt;
            int16_t *rows = buf + ((r % sh) * sw * Hq + r / sh) * Wq; /* column phase 0's row */
            for (int64_t p = 0; p < sw; p++) {
                int64_t iw0 = ph_first[p];
                int16_t *d = rows + p * plane + ph_index[p];
#ifdef KQC_X86
                if (vec && sw == 1) {
                    widen_row_avx512(d, xr, IW, j->xz, j->s8);
                    continue;
                }
                if (avx2 && sw == 1) {
                    kqg_avx2_widen_row(d, xr, IW, j->xz, j->s8);
                    continue;
                }
                if ((vec || avx2) && sw == 2) { /* both phases in one pass */
                    int16_t *other = rows + (1 - p) * plane + (iw0 + 1 + pl) / 2;
                    if (vec) widen_split2_avx512(d, other, xr + iw0, IW - iw0, j->xz, j->s8);
                    else kqg_avx2_widen_split2(d, other, xr + iw0, IW - iw0, j->xz, j->s8);
                    if (iw0 == 1) /* column 0 is the other phase's first element */
                        rows[(pl % 2) * plane + pl / 2] =
                            (int16_t)((j->s8 ? (int32_t)(int8_t)xr[0] : (int32_t)xr[0]) - j->xz);
                    break;
                }
#endif
                if (j->s8)
                    for (int64_t iw = iw0, k = 0; iw < IW; iw += sw, k++) d[k] = (int16_t)((int8_t)xr[iw] - j->xz);
                else
                    for (int64_t iw = iw0, k = 0; iw < IW; iw += sw, k++) d[k] = (int16_t)(xr[iw] - j->xz);
            }
        }
        /* every output row at once: output (oh, ow) is flat index oh * Wq + ow of each tap's run;
         * the columns past OW are discarded */
#ifdef KQC_X86
        if (vec) {
            dw_row_avx512(acc, nflat, (int)ntaps, src, wt);
        } else if (avx2) {
            kqg_avx2_dw_row(acc, nvec, (int)ntaps, src, wt); /* whole blocks: see nbuf */
        } else
#endif
        {
            for (int64_t o = 0; o < nflat; o++) {
                int32_t a = 0;
                for (int64_t t = 0; t < ntaps; t++) a += wt[t] * src[t][o];
                acc[o] = a;
            }
        }
        for (int64_t oh = 1; oh < OH; oh++) memmove(acc + oh * OW, acc + oh * Wq, sizeof(int32_t) * (size_t)OW);
        j->epi(j->arg, n, c, 0, 1, P, acc, P);
    }
    free(toff);
    free(acc);
    free(buf);
    free(src);
}

typedef struct epi_wrap {
    kqg_conv_epi_fn epi;
    void *arg;
    int64_t n, m0;
} epi_wrap;

static void conv_epi(void *arg, int64_t m0, int64_t n0, int64_t mc, int64_t nc, const int32_t *acc,
                     int64_t ld) {
    const epi_wrap *w = arg;
    w->epi(w->arg, w->n, w->m0 + m0, n0, mc, nc, acc, ld);
}

kiln_status kqg_conv_run(kiln_ctx *ctx, const kqg_conv_geom *g, const kqg_conv_w *w,
                         const int32_t *wz, int wz_per_ch, int xdt, const void *x, int32_t xz,
                         kqg_conv_epi_fn epi, void *arg) {
    int64_t P = g->out_size, Cg = g->C / g->group, Mg = g->M / g->group, Kg = Cg * g->k_size;
    if (P <= 0 || g->N <= 0 || g->M <= 0) return KILN_OK;
    if (w->depthwise) {
        dw_job j = {g, w, wz, wz_per_ch, xdt == KILN_DTYPE_INT8, x, xz, epi, arg, 0, 0, 0};
        /* padded extent: every input row and column, and every one a window reads */
        int64_t need_h = (g->out_sp[0] - 1) * g->stride[0] + (g->k[0] - 1) * g->dil[0] + 1;
        int64_t need_w = (g->out_sp[1] - 1) * g->stride[1] + (g->k[1] - 1) * g->dil[1] + 1;
        int64_t hp = g->in_sp[0] + g->pad_lo[0], wp = g->in_sp[1] + g->pad_lo[1];
        hp = hp > need_h ? hp : need_h;
        j.Hq = (hp + g->stride[0] - 1) / g->stride[0];
        wp = wp > need_w ? wp : need_w;
        j.Wq = (wp + g->stride[1] - 1) / g->stride[1];
        int64_t n = g->N * g->C;
        kiln_parallel_for(ctx, n, kpar_grain(n, (double)n * P * g->k_size * 0.5), dw_channels, &j);
        return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the convolution") : KILN_OK;
    }
    int direct = 1; /* 1x1, stride 1, no padding: the input planes are the im2col matrix */
    for (int d = 0; d < g->nsp; d++)
        direct &= g->k[d] == 1 && g->stride[d] == 1 && g->pad_lo[d] == 0 && g->out_sp[d] == g->in_sp[d];
    if (direct && P == 1 && kqg_have_avx2()) { /* squeeze-excite 1x1 maps: one column each */
        for (int64_t n = 0; n < g->N; n++)
            for (int64_t gr = 0; gr < g->group; gr++) {
                epi_wrap ew = {epi, arg, n, gr * Mg};
                int r = kqg_gemv(ctx, &w->a[gr], wz ? (wz_per_ch ? wz + gr * Mg : wz) : NULL, wz_per_ch, xdt,
                                 (const uint8_t *)x + n * g->C + gr * Cg, xz, conv_epi, &ew);
                if (r < 0) return KILN_ERR_NO_MEMORY;
            }
        return KILN_OK;
    }
    kqg_b B;
    KILN_TRY(kqg_b_init(ctx, &B, Kg, P));
    uint8_t *col = direct ? NULL : malloc((size_t)(Kg * P + 1));
    if (!direct && !col) {
        kqg_b_free(&B);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the convolution's columns");
    }
    const uint8_t *xb = x;
    for (int64_t n = 0; n < g->N; n++)
        for (int64_t gr = 0; gr < g->group; gr++) {
            const uint8_t *xs = xb + (n * g->C + gr * Cg) * g->in_size;
            if (direct) {
                kqg_pack_b(ctx, &B, xdt, xs, g->in_size, 0);
            } else {
                col_job cj = {g, xs, (uint8_t)xz, col};
                kiln_parallel_for(ctx, Kg, kpar_grain(Kg, (double)Kg * P * 0.3), im2col_rows, &cj);
                kqg_pack_b(ctx, &B, xdt, col, P, 0);
            }
            epi_wrap ew = {epi, arg, n, gr * Mg};
            kqg_gemm(ctx, &w->a[gr], &B, wz ? (wz_per_ch ? wz + gr * Mg : wz) : NULL, wz_per_ch, &xz, 0,
                     conv_epi, &ew);
        }
    free(col);
    kqg_b_free(&B);
    return KILN_OK;
}
