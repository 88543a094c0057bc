/* Shared by the RNN / LSTM / GRU kernels: attribute parsing, shape checks and the activation
 * table. The per-precision step loops live in rnn_cells.h. */
#ifndef KILN_RNN_COMMON_H
#define KILN_RNN_COMMON_H

#include "ops/op.h"
#include <stdint.h>

enum { RNN_CELL_SIMPLE = 0, RNN_CELL_LSTM = 1, RNN_CELL_GRU = 2 };

enum {
    RNN_ACT_SIGMOID, RNN_ACT_TANH, RNN_ACT_RELU, RNN_ACT_AFFINE, RNN_ACT_LEAKYRELU,
    RNN_ACT_THRESHOLDEDRELU, RNN_ACT_SCALEDTANH, RNN_ACT_HARDSIGMOID, RNN_ACT_ELU,
    RNN_ACT_SOFTSIGN, RNN_ACT_SOFTPLUS
};

typedef struct rnn_act {
    int kind;
    float alpha, beta;
} rnn_act;

typedef struct rnn_cfg {
    int cell;
    int n_gates;            /* 1 (RNN), 4 (LSTM: i o f c), 3 (GRU: z r h) */
    int n_acts;             /* activations per direction: 1, 3, 2 */
    int64_t hidden;         /* hidden_size attribute, -1 when absent */
    int dirs;               /* 1 or 2 */
    int reverse;            /* direction == "reverse" */
    int layout;             /* 0: time-major, 1: batch-major */
    int has_clip;
    float clip;
    int input_forget;       /* LSTM */
    int linear_before_reset;/* GRU */
    rnn_act act[2][3];      /* [direction][f, g, h] */
} rnn_cfg;

/* Sizes resolved from the inputs; dims may be negative (unknown) only in static mode. */
typedef struct rnn_dims {
    int64_t S, B, in_size, H, D; /* in_size: not I, which complex.h (via cblas.h) takes */
} rnn_dims;

/* Work description for one run, in the working precision (float or double); everything
 * time-major ([S, B, ...]) and direction-major ([D, ...]) whatever the node's layout. */
typedef struct rnn_job {
    kiln_ctx *ctx;           /* for kiln's thread pool */
    const rnn_cfg *cfg;
    int64_t S, B, in_size, H, D; /* in_size: not I, which complex.h (via cblas.h) takes */
    const int64_t *lens;     /* [B], every entry in [0, S] */
    const void *X;           /* [S, B, I] */
    const void *W;           /* [D, G*H, I] */
    const void *R;           /* [D, G*H, H] */
    const void *bias;        /* [D, 2*G*H] or NULL */
    const void *P;           /* [D, 3*H] or NULL (LSTM peepholes i, o, f) */
    void *h;                 /* [D, B, H]: initial state in, final state out */
    void *c;                 /* [D, B, H]: LSTM cell state in/out */
    void *Y;                 /* [S, D, B, H], zero-filled, or NULL when not wanted */
    /* float only: W (tb) and R (tb) of direction d packed once at init as the B operand of
     * kgemm_sgemm_avx512_bpacked, or NULL (R is then packed per run) */
    const float *Wp[2], *Rp[2];
} rnn_job;

/* Reads the node's attributes into cfg, failing on unknown activations or directions. */
kiln_status kiln_rnn_parse_cfg(kiln_ctx *ctx, int cell, rnn_cfg *cfg);
/* Validates every input against cfg and fills d; sets the outputs' shapes when set_outputs. */
kiln_status kiln_rnn_check_inputs(kiln_ctx *ctx, const rnn_cfg *cfg, rnn_dims *d, int set_outputs);

/* Runs all directions; returns 0, or -1 when out of memory. rnn_cells.h instantiated in
 * rnn_cells_f32.c and rnn_cells_f64.c. */
int kiln_rnn_run_f32(const rnn_job *job);
int kiln_rnn_run_f64(const rnn_job *job);

#endif
