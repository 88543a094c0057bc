/* FFT core for DFT and STFT; see signal_fft.h. */
#include "signal_fft.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#ifndef M_PI
#define M_PI 3.14159265358979323846
#endif

static int is_pow2(int64_t n) { return n > 0 && (n & (n - 1)) == 0; }

/* Radix-2 decimation in time over a power-of-two length m, twiddles exp(-2 pi i k / m). */
static void fft_pow2(int64_t m, const double *tw_re, const double *tw_im, double *re, double *im,
                     int inverse) {
    for (int64_t i = 1, j = 0; i < m; i++) { /* bit reversal */
        int64_t bit = m >> 1;
        for (; j & bit; bit >>= 1) j ^= bit;
        j ^= bit;
        if (i < j) {
            double t = re[i]; re[i] = re[j]; re[j] = t;
            t = im[i]; im[i] = im[j]; im[j] = t;
        }
    }
    for (int64_t len = 2; len <= m; len <<= 1) {
        int64_t half = len >> 1, step = m / len;
        for (int64_t s = 0; s < m; s += len) {
            for (int64_t k = 0; k < half; k++) {
                double wr = tw_re[k * step], wi = inverse ? -tw_im[k * step] : tw_im[k * step];
                int64_t a = s + k, b = a + half;
                double xr = re[b] * wr - im[b] * wi, xi = re[b] * wi + im[b] * wr;
                re[b] = re[a] - xr;
                im[b] = im[a] - xi;
                re[a] += xr;
                im[a] += xi;
            }
        }
    }
}

int sig_fft_plan_make(sig_fft_plan *p, int64_t n) {
    memset(p, 0, sizeof *p);
    if (n < 1) return -1;
    p->n = n;
    if (is_pow2(n)) {
        p->m = n;
    } else {
        p->m = 1;
        while (p->m < 2 * n - 1) p->m <<= 1;
    }
    int64_t m = p->m, half = m / 2 > 0 ? m / 2 : 1;
    p->tw_re = malloc(sizeof(double) * (size_t)half);
    p->tw_im = malloc(sizeof(double) * (size_t)half);
    if (!p->tw_re || !p->tw_im) goto fail;
    for (int64_t k = 0; k < half; k++) {
        double a = -2.0 * M_PI * (double)k / (double)m;
        p->tw_re[k] = cos(a);
        p->tw_im[k] = sin(a);
    }
    if (m == n) return 0;
    p->chirp_re = malloc(sizeof(double) * (size_t)n);
    p->chirp_im = malloc(sizeof(double) * (size_t)n);
    p->bk_re = calloc((size_t)m, sizeof(double));
    p->bk_im = calloc((size_t)m, sizeof(double));
    if (!p->chirp_re || !p->chirp_im || !p->bk_re || !p->bk_im) goto fail;
    for (int64_t k = 0; k < n; k++) {
        /* k^2 mod 2n keeps the angle small and exact for large k */
        uint64_t q = ((uint64_t)k * (uint64_t)k) % (uint64_t)(2 * n); /* k < n < 2^32 */
        double a = -M_PI * (double)q / (double)n;
        p->chirp_re[k] = cos(a);
        p->chirp_im[k] = sin(a);
    }
    p->bk_re[0] = p->chirp_re[0];
    p->bk_im[0] = -p->chirp_im[0];
    for (int64_t k = 1; k < n; k++) {
        p->bk_re[k] = p->bk_re[m - k] = p->chirp_re[k];
        p->bk_im[k] = p->bk_im[m - k] = -p->chirp_im[k];
    }
    fft_pow2(m, p->tw_re, p->tw_im, p->bk_re, p->bk_im, 0);
    return 0;
fail:
    sig_fft_plan_free(p);
    return -1;
}

void sig_fft_plan_free(sig_fft_plan *p) {
    free(p->tw_re);
    free(p->tw_im);
    free(p->chirp_re);
    free(p->chirp_im);
    free(p->bk_re);
    free(p->bk_im);
    memset(p, 0, sizeof *p);
}

size_t sig_fft_scratch(const sig_fft_plan *p) { return p->m == p->n ? 0 : (size_t)(2 * p->m); }

void sig_fft_exec(const sig_fft_plan *p, double *re, double *im, int inverse, double *scratch) {
    int64_t n = p->n, m = p->m;
    if (m == n) {
        fft_pow2(m, p->tw_re, p->tw_im, re, im, inverse);
        return;
    }
    /* The inverse transform is the forward one on conjugated data, conjugated back. */
    double *ar = scratch, *ai = scratch + m;
    for (int64_t k = 0; k < n; k++) {
        double xr = re[k], xi = inverse ? -im[k] : im[k];
        ar[k] = xr * p->chirp_re[k] - xi * p->chirp_im[k];
        ai[k] = xr * p->chirp_im[k] + xi * p->chirp_re[k];
    }
    for (int64_t k = n; k < m; k++) ar[k] = ai[k] = 0.0;
    fft_pow2(m, p->tw_re, p->tw_im, ar, ai, 0);
    for (int64_t k = 0; k < m; k++) {
        double r = ar[k] * p->bk_re[k] - ai[k] * p->bk_im[k];
        double i = ar[k] * p->bk_im[k] + ai[k] * p->bk_re[k];
        ar[k] = r;
        ai[k] = i;
    }
    fft_pow2(m, p->tw_re, p->tw_im, ar, ai, 1);
    double inv_m = 1.0 / (double)m;
    for (int64_t k = 0; k < n; k++) {
        double cr = ar[k] * inv_m, ci = ai[k] * inv_m;
        double yr = cr * p->chirp_re[k] - ci * p->chirp_im[k];
        double yi = cr * p->chirp_im[k] + ci * p->chirp_re[k];
        re[k] = yr;
        im[k] = inverse ? -yi : yi;
    }
}
