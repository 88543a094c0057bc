/* The recurrent step loops of RNN, LSTM and GRU, written once for both working precisions.
 * Included by rnn_cells_f32.c / rnn_cells_f64.c after defining:
 *   RT      element type (float / double)
 *   RSFX    name suffix (f32 / f64)
 *   RGEMM   cblas_sgemm / cblas_dgemm
 *   REXP, RTANH, RLOG1P   the matching libm functions
 *
 * Per direction: one GEMM projects the input of every time step at once (X[S*B, I] x W^T), the
 * biases that are added unconditionally are folded into that product, then each step does one
 * GEMM of the previous hidden state against R (two for GRU without linear_before_reset, whose
 * hidden gate needs r (.) H first) followed by the element-wise gate math. A batch entry whose
 * sequence has ended keeps its state, so the final state is the last valid one. */
#include "rnn_common.h"
#include <cblas.h>
#include <stdlib.h>
#include <string.h>

#define RNN_CAT2(a, b) a##b
#define RNN_CAT(a, b) RNN_CAT2(a, b)
#define RFN(name) RNN_CAT(name, RSFX)

static inline RT RFN(act_one)(const rnn_act *a, RT x) {
    switch (a->kind) {
    case RNN_ACT_SIGMOID: return (RT)1 / ((RT)1 + REXP(-x));
    case RNN_ACT_TANH: return RTANH(x);
    case RNN_ACT_RELU: return x > 0 ? x : 0;
    case RNN_ACT_AFFINE: return (RT)a->alpha * x + (RT)a->beta;
    case RNN_ACT_LEAKYRELU: return x >= 0 ? x : (RT)a->alpha * x;
    case RNN_ACT_THRESHOLDEDRELU: return x > (RT)a->alpha ? x : 0;
    case RNN_ACT_SCALEDTANH: return (RT)a->alpha * RTANH((RT)a->beta * x);
    case RNN_ACT_HARDSIGMOID: {
        RT v = (RT)a->alpha * x + (RT)a->beta;
        return v < 0 ? 0 : v > 1 ? 1 : v;
    }
    case RNN_ACT_ELU: return x >= 0 ? x : (RT)a->alpha * (REXP(x) - 1);
    case RNN_ACT_SOFTSIGN: return x / (1 + (x < 0 ? -x : x));
    case RNN_ACT_SOFTPLUS: return x > 0 ? x + RLOG1P(REXP(-x)) : RLOG1P(REXP(x));
    }
    return x;
}

/* Clips to [-lim, lim] (when clip) then applies the activation, in place. */
static void RFN(act_vec)(const rnn_act *a, RT *x, int64_t n, int clip, RT lim) {
    if (clip) {
        for (int64_t k = 0; k < n; k++) x[k] = x[k] < -lim ? -lim : x[k] > lim ? lim : x[k];
    }
    /* the two defaults get their own loops so the compiler can vectorise them */
    if (a->kind == RNN_ACT_SIGMOID) {
        for (int64_t k = 0; k < n; k++) x[k] = (RT)1 / ((RT)1 + REXP(-x[k]));
    } else if (a->kind == RNN_ACT_TANH) {
        for (int64_t k = 0; k < n; k++) x[k] = RTANH(x[k]);
    } else {
        for (int64_t k = 0; k < n; k++) x[k] = RFN(act_one)(a, x[k]);
    }
}

/* out[M, N] (row stride ldc) = a[M, K] x b[N, K]^T */
static void RFN(gemm_nt)(int64_t M, int64_t N, int64_t K, const RT *a, const RT *b, RT *out,
                         int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t m = 0; m < M; m++) memset(out + m * ldc, 0, (size_t)N * sizeof(RT));
        return;
    }
    RGEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, (RT)1, a, (int)K, b,
          (int)K, (RT)0, out, (int)ldc);
}

int RFN(kiln_rnn_run_)(const rnn_job *j) {
    const rnn_cfg *c = j->cfg;
    const int64_t S = j->S, B = j->B, In = j->in_size, H = j->H, D = j->D;
    const int64_t G = c->n_gates, GH = G * H;
    if (B == 0 || H == 0) return 0; /* nothing to compute, outputs are empty */

    RT *xw = malloc((size_t)(S > 0 ? S * B * GH : 1) * sizeof(RT));
    RT *hr = malloc((size_t)(B * GH) * sizeof(RT));
    RT *rh = c->cell == RNN_CELL_GRU ? malloc((size_t)(B * H) * sizeof(RT)) : NULL;
    if (!xw || !hr || (c->cell == RNN_CELL_GRU && !rh)) {
        free(xw), free(hr), free(rh);
        return -1;
    }

    for (int64_t d = 0; d < D; d++) {
        const int rev = D == 2 ? d == 1 : c->reverse;
        const RT *Wd = (const RT *)j->W + d * GH * In;
        const RT *Rd = (const RT *)j->R + d * GH * H;
        const RT *Wb = j->bias ? (const RT *)j->bias + d * 2 * GH : NULL;
        const RT *Rb = Wb ? Wb + GH : NULL;
        const RT *Pd = j->P ? (const RT *)j->P + d * 3 * H : NULL;
        RT *hd = (RT *)j->h + d * B * H;
        RT *cd = j->c ? (RT *)j->c + d * B * H : NULL;
        const rnn_act *acts = c->act[d];
        const int clip = c->has_clip;
        const RT lim = (RT)c->clip;

        RFN(gemm_nt)(S * B, GH, In, (const RT *)j->X, Wd, xw, GH);
        if (Wb) {
            /* GRU's hidden-gate recurrent bias sits inside r (.) (...) with linear_before_reset,
             * and is added after the recurrent product otherwise: keep it out of xw. */
            const int64_t fold_r = c->cell == RNN_CELL_GRU ? 2 * H : GH;
            for (int64_t row = 0; row < S * B; row++) {
                RT *x = xw + row * GH;
                for (int64_t k = 0; k < GH; k++) x[k] += Wb[k] + (k < fold_r ? Rb[k] : 0);
            }
        }
        const RT *Rbh = Rb && c->cell == RNN_CELL_GRU ? Rb + 2 * H : NULL;

        for (int64_t t = 0; t < S; t++) {
            const int gru_split = c->cell == RNN_CELL_GRU && !c->linear_before_reset;
            RFN(gemm_nt)(B, gru_split ? 2 * H : GH, H, hd, Rd, hr, GH);

            for (int64_t b = 0; b < B; b++) {
                if (t >= j->lens[b]) continue;
                const int64_t ti = rev ? j->lens[b] - 1 - t : t;
                const RT *x = xw + (ti * B + b) * GH;
                RT *g = hr + b * GH;
                RT *hb = hd + b * H;
                if (c->cell == RNN_CELL_SIMPLE) {
                    for (int64_t k = 0; k < H; k++) g[k] += x[k];
                    RFN(act_vec)(&acts[0], g, H, clip, lim);
                    memcpy(hb, g, (size_t)H * sizeof(RT));
                } else if (c->cell == RNN_CELL_LSTM) {
                    RT *gi = g, *go = g + H, *gf = g + 2 * H, *gc = g + 3 * H;
                    RT *cb = cd + b * H;
                    for (int64_t k = 0; k < GH; k++) g[k] += x[k];
                    if (Pd)
                        for (int64_t k = 0; k < H; k++) {
                            gi[k] += Pd[k] * cb[k];
                            gf[k] += Pd[2 * H + k] * cb[k];
                        }
                    RFN(act_vec)(&acts[0], gi, H, clip, lim);
                    if (c->input_forget)
                        for (int64_t k = 0; k < H; k++) gf[k] = 1 - gi[k];
                    else
                        RFN(act_vec)(&acts[0], gf, H, clip, lim);
                    RFN(act_vec)(&acts[1], gc, H, clip, lim);
                    for (int64_t k = 0; k < H; k++) cb[k] = gf[k] * cb[k] + gi[k] * gc[k];
                    if (Pd)
                        for (int64_t k = 0; k < H; k++) go[k] += Pd[H + k] * cb[k];
                    RFN(act_vec)(&acts[0], go, H, clip, lim);
                    /* h(C) goes through gc's storage: the cell candidate is no longer needed */
                    memcpy(gc, cb, (size_t)H * sizeof(RT));
                    RFN(act_vec)(&acts[2], gc, H, 0, 0); /* clip bounds gate inputs, not C */
                    for (int64_t k = 0; k < H; k++) hb[k] = go[k] * gc[k];
                } else { /* GRU: z and r now, h after r is known */
                    for (int64_t k = 0; k < 2 * H; k++) g[k] += x[k];
                    RFN(act_vec)(&acts[0], g, 2 * H, clip, lim);
                    if (gru_split)
                        for (int64_t k = 0; k < H; k++) rh[b * H + k] = g[H + k] * hb[k];
                }
            }

            if (c->cell == RNN_CELL_GRU) {
                if (gru_split) {
                    for (int64_t b = 0; b < B; b++)
                        if (t >= j->lens[b]) memset(rh + b * H, 0, (size_t)H * sizeof(RT));
                    RFN(gemm_nt)(B, H, H, rh, Rd + 2 * H * H, hr + 2 * H, GH);
                }
                for (int64_t b = 0; b < B; b++) {
                    if (t >= j->lens[b]) continue;
                    const int64_t ti = rev ? j->lens[b] - 1 - t : t;
                    const RT *x = xw + (ti * B + b) * GH;
                    RT *g = hr + b * GH, *z = g, *r = g + H, *hh = g + 2 * H;
                    RT *hb = hd + b * H;
                    if (gru_split) {
                        for (int64_t k = 0; k < H; k++) hh[k] += x[2 * H + k] + (Rbh ? Rbh[k] : 0);
                    } else {
                        for (int64_t k = 0; k < H; k++)
                            hh[k] = x[2 * H + k] + r[k] * (hh[k] + (Rbh ? Rbh[k] : 0));
                    }
                    RFN(act_vec)(&acts[1], hh, H, clip, lim);
                    for (int64_t k = 0; k < H; k++) hb[k] = (1 - z[k]) * hh[k] + z[k] * hb[k];
                }
            }

            if (j->Y)
                for (int64_t b = 0; b < B; b++) {
                    if (t >= j->lens[b]) continue;
                    const int64_t ti = rev ? j->lens[b] - 1 - t : t;
                    memcpy((RT *)j->Y + ((ti * D + d) * B + b) * H, hd + b * H,
                           (size_t)H * sizeof(RT));
                }
        }
    }
    /* an entry with no steps reports zero states, as onnxruntime does, not its initial ones */
    for (int64_t d = 0; d < D; d++)
        for (int64_t b = 0; b < B; b++) {
            if (j->lens[b] != 0) continue;
            memset((RT *)j->h + (d * B + b) * H, 0, (size_t)H * sizeof(RT));
            if (j->c) memset((RT *)j->c + (d * B + b) * H, 0, (size_t)H * sizeof(RT));
        }
    free(xw), free(hr), free(rh);
    return 0;
}

#undef RFN
#undef RNN_CAT
#undef RNN_CAT2
