/* Single-precision instance of the recurrent step loops (also serves float16 / bfloat16). */
#include "rnn_fastmath.h"
#include <math.h>
#define RPACK 1
#define RT float
#define RSFX f32
#define RGEMM cblas_sgemm
#define RGEMV cblas_sgemv
#define REXP expf
#define RTANH tanhf
#define RLOG1P log1pf
#define RVEC_SIGMOID rnn_sigmoid_f32
#define RVEC_TANH rnn_tanh_f32
#include "rnn_cells.h"
