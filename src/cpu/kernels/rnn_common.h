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
    /* float only: W of direction d packed once at init as the B operand of
     * kgemm_sgemm_avx512_bpacked (tb), and R by kiln_rnn_pack_r; NULL: not a constant (R is then
     * packed per run) */
    const float *Wp[2], *Rp[2];
} rnn_job;

/* How rnn_pack.c lays out R for the step product, and how a row of step products is laid out
 * (float with AVX-512): the hidden units in blocks of U; block k holds the n gates of units
 * [k*U, k*U + U) side by side, gate g at column (k*n + g)*U; units past H are zero rows. GRU
 * without linear_before_reset then has its hidden gate (multiplied by r (.) H, not H, so a
 * product of its own) at columns hcol + u. A step's share of whole blocks is one product over
 * contiguous packed columns. */
typedef struct rnn_blocks {
    int64_t n;    /* gates in the step product: G, or 2 (z, r) for GRU without linear_before_reset */
    int64_t U;    /* units per block */
    int64_t nblk; /* blocks: H / U rounded up */
    int64_t hpad; /* nblk * U */
    int64_t hcol; /* the column of the separate hidden gate's unit 0, or -1 */
    int64_t ld;   /* columns in all */
} rnn_blocks;
void kiln_rnn_blocks(const rnn_cfg *cfg, int64_t H, rnn_blocks *bk);
/* floats in one direction's packed R */
int64_t kiln_rnn_packed_r_size(const rnn_cfg *cfg, int64_t H);
/* Packs one direction's R ([G*H, H]) into dst; 0 when out of memory. */
int kiln_rnn_pack_r(const rnn_cfg *cfg, int64_t H, const float *R, float *dst);

/* Reads the node's attributes into cfg, failing on unknown activations or directions. */
kiln_status kiln_rnn_parse_cfg(kiln_ctx *ctx, int cell, rnn_cfg *cfg);
/* Validates every input against cfg and fills d; sets the outputs' shapes when set_outputs. */
kiln_status kiln_rnn_check_inputs(kiln_ctx *ctx, const rnn_cfg *cfg, rnn_dims *d, int set_outputs);

/* A step's passes over the pool, cut into n chunks that each thread tends to claim again on the
 * next pass (rnn_sched.c): kiln_rnn_pass runs fn over [0, items) in those n chunks. */
typedef struct rnn_claims rnn_claims;
rnn_claims *kiln_rnn_claims_new(int64_t n); /* NULL when out of memory */
void kiln_rnn_claims_free(rnn_claims *cl);
void kiln_rnn_pass(kiln_ctx *ctx, rnn_claims *cl, int64_t items, kiln_range_fn fn, void *arg);

/* Runs all directions; returns 0, or -1 when out of memory. rnn_cells.h instantiated in
 * rnn_cells_f32.c and rnn_cells_f64.c. */
int kiln_rnn_run_f32(const rnn_job *job);
int kiln_rnn_run_f64(const rnn_job *job);

#endif
