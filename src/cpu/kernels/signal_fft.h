/* A small complex FFT for any length, in double precision: iterative radix-2 for powers of two,
 * Bluestein's chirp-z (through a power-of-two FFT) otherwise. A plan is read-only once made, so
 * threads share it; each thread brings its own scratch. */
#ifndef KILN_SIGNAL_FFT_H
#define KILN_SIGNAL_FFT_H

#include <stdint.h>
#include <stddef.h>

typedef struct sig_fft_plan {
    int64_t n;        /* transform length */
    int64_t m;        /* power-of-two length of the inner FFT (n itself when n is one) */
    double *tw_re, *tw_im;     /* m/2 twiddles of the inner FFT, forward sign */
    double *chirp_re, *chirp_im; /* Bluestein: n chirp values exp(-i pi k^2 / n) */
    double *bk_re, *bk_im;       /* Bluestein: FFT of the conjugate chirp, length m */
} sig_fft_plan;

/* Returns 0 on success, -1 when out of memory (n >= 1). */
int sig_fft_plan_make(sig_fft_plan *p, int64_t n);
void sig_fft_plan_free(sig_fft_plan *p);
/* Doubles of scratch that sig_fft_exec needs (0 for powers of two). */
size_t sig_fft_scratch(const sig_fft_plan *p);
/* In-place transform of re/im (length n). inverse: sign +i and no scaling (callers scale). */
void sig_fft_exec(const sig_fft_plan *p, double *re, double *im, int inverse, double *scratch);

#endif
