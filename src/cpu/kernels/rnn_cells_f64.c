/* Double-precision instance of the recurrent step loops: libm throughout, for full precision. */
#include <math.h>
#include <stdint.h>

static void sigmoid_f64(double *x, int64_t n) {
    for (int64_t k = 0; k < n; k++) x[k] = 1.0 / (1.0 + exp(-x[k]));
}

static void tanh_f64(double *x, int64_t n) {
    for (int64_t k = 0; k < n; k++) x[k] = tanh(x[k]);
}

#define RPACK 0
#define RT double
#define RSFX f64
#define RGEMM cblas_dgemm
#define RGEMV cblas_dgemv
#define REXP exp
#define RTANH tanh
#define RLOG1P log1p
#define RVEC_SIGMOID sigmoid_f64
#define RVEC_TANH tanh_f64
#include "rnn_cells.h"
