/* Depthwise convolution (one input channel per group), 1-D and 2-D, computed directly: im2col
 * and GEMM would do one tiny product per channel. Each input plane is first copied with its
 * horizontal zero padding and split by stride phase, so that every kernel tap of an output row
 * reads a contiguous, in-bounds run; the row loop then keeps several vector accumulators over
 * all taps. An AVX2/FMA version is chosen at run time where the CPU has it. */
#include "conv_util.h"
#include <stdlib.h>
#include <string.h>

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define DW_HAVE_AVX2 1
#endif

int kconv_depthwise_ok(const kconv_geom *g) {
    if (g->nd < 1 || g->nd > 2 || g->group != g->C || g->group < 1 || g->M % g->group) return 0;
    return g->k_size <= 4096;
}

/* out[0, OW) = bias + sum_t wt[t] * src[t][0, OW); every src[t] is readable up to OW rounded up
 * to 8 (the copy's tail holds zeros). */
static void dw_row_plain(int nt, const float *const *src, const float *wt, float bias, float *out,
                         int64_t OW) {
    int64_t ox = 0;
    for (; ox + 8 <= OW; ox += 8) {
        float a[8];
        for (int i = 0; i < 8; i++) a[i] = bias;
        for (int t = 0; t < nt; t++) {
            const float *s = src[t] + ox;
            float w = wt[t];
            for (int i = 0; i < 8; i++) a[i] += w * s[i];
        }
        memcpy(out + ox, a, sizeof a);
    }
    for (; ox < OW; ox++) {
        float a = bias;
        for (int t = 0; t < nt; t++) a += wt[t] * src[t][ox];
        out[ox] = a;
    }
}

#ifdef DW_HAVE_AVX2
__attribute__((target("avx2,fma"))) static void dw_row_avx2(int nt, const float *const *src,
                                                             const float *wt, float bias,
                                                             float *out, int64_t OW) {
    int64_t ox = 0;
    __m256 vb = _mm256_set1_ps(bias);
    for (; ox + 32 <= OW; ox += 32) {
        __m256 a0 = vb, a1 = vb, a2 = vb, a3 = vb;
        for (int t = 0; t < nt; t++) {
            const float *s = src[t] + ox;
            __m256 w = _mm256_broadcast_ss(wt + t);
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 8), a1);
            a2 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 16), a2);
            a3 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 24), a3);
        }
        _mm256_storeu_ps(out + ox, a0);
        _mm256_storeu_ps(out + ox + 8, a1);
        _mm256_storeu_ps(out + ox + 16, a2);
        _mm256_storeu_ps(out + ox + 24, a3);
    }
    for (; ox + 16 <= OW; ox += 16) {
        __m256 a0 = vb, a1 = vb;
        for (int t = 0; t < nt; t++) {
            const float *s = src[t] + ox;
            __m256 w = _mm256_broadcast_ss(wt + t);
            a0 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s), a0);
            a1 = _mm256_fmadd_ps(w, _mm256_loadu_ps(s + 8), a1);
        }
        _mm256_storeu_ps(out + ox, a0);
        _mm256_storeu_ps(out + ox + 8, a1);
    }
    for (; ox < OW; ox += 8) {
        __m256 a = vb;
        for (int t = 0; t < nt; t++)
            a = _mm256_fmadd_ps(_mm256_broadcast_ss(wt + t), _mm256_loadu_ps(src[t] + ox), a);
        if (ox + 8 <= OW) {
            _mm256_storeu_ps(out + ox, a);
        } else {
            float tmp[8];
            _mm256_storeu_ps(tmp, a);
            memcpy(out + ox, tmp, sizeof(float) * (size_t)(OW - ox));
        }
    }
}
#endif

typedef void (*dw_row_fn)(int, const float *const *, const float *, float, float *, int64_t);

static dw_row_fn pick_row(void) {
#ifdef DW_HAVE_AVX2
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return dw_row_avx2;
#endif
    return dw_row_plain;
}

int kconv_depthwise_f32(const kconv_geom *g, const float *x, const float *w, const float *bias,
                        float *y, int64_t q0, int64_t q1) {
    int two = g->nd == 2, L = g->nd - 1;
    int64_t IH = two ? g->in[0] : 1, IW = g->in[L], OH = two ? g->out[0] : 1, OW = g->out[L];
    int64_t KH = two ? g->k[0] : 1, KW = g->k[L], sh = two ? g->stride[0] : 1, sw = g->stride[L];
    int64_t dh = two ? g->dil[0] : 1, dw = g->dil[L], pt = two ? g->pad_b[0] : 0, pl = g->pad_b[L];
    int64_t mult = g->M / g->C;
    /* phase row length: every tap reads [shift, shift + OW rounded up to 8) */
    int64_t Lp = ((OW + 7) & ~(int64_t)7) + ((KW - 1) * dw) / sw + 1;
    int64_t ntaps = KH * KW, nf = (IH * sw * Lp + ntaps + 7) & ~(int64_t)7;
    float *P = malloc(sizeof(float) * (size_t)nf + sizeof(float *) * (size_t)ntaps);
    if (!P) return -1;
    float *wt = P + IH * sw * Lp;
    const float **src = (const float **)(void *)(P + nf);
    dw_row_fn row = pick_row();
    for (int64_t q = q0; q < q1; q++) {
        int64_t n = q / g->M, m = q % g->M, c = m / mult;
        const float *xp = x + (n * g->C + c) * g->in_size, *wp = w + m * ntaps;
        float *yp = y + q * g->out_size, b = bias ? bias[m] : 0.0f;
        for (int64_t iy = 0; iy < IH; iy++) {
            const float *xr = xp + iy * IW;
            for (int64_t ph = 0; ph < sw; ph++) {
                float *d = P + (iy * sw + ph) * Lp;
                if (sw == 1) {
                    int64_t head = pl < Lp ? pl : Lp, body = IW < Lp - head ? IW : Lp - head;
                    memset(d, 0, sizeof(float) * (size_t)head);
                    memcpy(d + head, xr, sizeof(float) * (size_t)body);
                    memset(d + head + body, 0, sizeof(float) * (size_t)(Lp - head - body));
                } else {
                    for (int64_t pos = 0; pos < Lp; pos++) {
                        int64_t ix = pos * sw + ph - pl;
                        d[pos] = ix >= 0 && ix < IW ? xr[ix] : 0.0f;
                    }
                }
            }
        }
        for (int64_t oy = 0; oy < OH; oy++) {
            int nt = 0;
            for (int64_t ky = 0; ky < KH; ky++) {
                int64_t iy = oy * sh - pt + ky * dh;
                if (iy < 0 || iy >= IH) continue;
                for (int64_t kx = 0; kx < KW; kx++) {
                    int64_t off = kx * dw;
                    src[nt] = P + (iy * sw + off % sw) * Lp + off / sw;
                    wt[nt] = wp[ky * KW + kx];
                    nt++;
                }
            }
            row(nt, src, wt, b, yp + oy * OW, OW);
        }
    }
    free(P);
    return 0;
}
