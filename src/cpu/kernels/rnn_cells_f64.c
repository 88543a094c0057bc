/* Double-precision instance of the recurrent step loops. */
#include <math.h>
#define RT double
#define RSFX f64
#define RGEMM cblas_dgemm
#define REXP exp
#define RTANH tanh
#define RLOG1P log1p
#include "rnn_cells.h"
