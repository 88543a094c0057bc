/* Single-precision instance of the recurrent step loops (also serves float16 / bfloat16). */
#include <math.h>
#define RT float
#define RSFX f32
#define RGEMM cblas_sgemm
#define REXP expf
#define RTANH tanhf
#define RLOG1P log1pf
#include "rnn_cells.h"
