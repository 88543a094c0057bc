/* The recurrent step loops of RNN, LSTM and GRU, written once for both working precisions.
 * Included by rnn_cells_f32.c / rnn_cells_f64.c after defining:
 *   RT                    element type (float / double)
 *   RSFX                  name suffix (f32 / f64)
 *   RGEMM, RGEMV          cblas_sgemm / cblas_dgemm, cblas_sgemv / cblas_dgemv
 *   REXP, RTANH, RLOG1P   the matching libm functions
 *   RVEC_SIGMOID, RVEC_TANH   in-place array versions of the two default activations
 *   RPACK                 1 (float): W and R packed for kiln's AVX-512 product (at init when
 *                         they are constants, else R once per run), so that the projection and
 *                         each step's recurrent product for all gates read them without re-packing
 *
 * Per direction: one GEMM projects the input of every time step at once (X[S*B, I] x W^T), split
 * over kiln's threads by rows, with the biases that are added unconditionally folded in. Each
 * step then runs on the threads split by hidden unit: a thread multiplies the previous hidden
 * state by the rows of R that feed its units (one GEMM for all gates when it has all units, else
 * one per gate; a matrix-vector product per batch row when the batch is small, since a GEMM
 * re-packs all of R on every step for a single row) and does those units' gate
 * math for the whole batch, so a step needs one pass over the pool (two for GRU without
 * linear_before_reset, whose hidden gate needs r (.) H of every unit first). The hidden state
 * is double-buffered because every thread's GEMM reads all of it while units are rewritten.
 * A batch entry whose sequence has ended keeps its state, so the final state is its last valid
 * one. OpenBLAS itself runs single-threaded: kiln's pool provides the parallelism.
 * When a step would split into at most two chunks anyway, a bidirectional node instead runs each
 * direction whole (projection and steps) on a thread of its own, with its own buffers; otherwise
 * its two directions step in lock step, one pass over the pool doing both directions' units
 * (half the hand-offs, twice the threads with work: a bidirectional LSTM of 256 units at batch 8
 * on 16 threads had 8 chunks per pass and 800 passes per run, and ran no faster than 1 thread). */
#include "rnn_common.h"
#include <cblas.h>
#include "gemm_util.h"
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
    if (clip)
        for (int64_t k = 0; k < n; k++) x[k] = x[k] < -lim ? -lim : x[k] > lim ? lim : x[k];
    if (a->kind == RNN_ACT_SIGMOID) RVEC_SIGMOID(x, n);
    else if (a->kind == RNN_ACT_TANH) RVEC_TANH(x, n);
    else
        for (int64_t k = 0; k < n; k++) x[k] = RFN(act_one)(a, x[k]);
}

/* out[M, N] (row stride ldc) = a[M, K] (stride lda) x b[N, K]^T (stride ldb) */
static void RFN(gemm_nt)(int64_t M, int64_t N, int64_t K, const RT *a, int64_t lda, const RT *b,
                         int64_t ldb, RT *out, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {
        for (int64_t m = 0; m < M; m++) memset(out + m * ldc, 0, (size_t)N * sizeof(RT));
        return;
    }
#if RPACK
    /* kiln's product: AVX-512 where the CPU has it, a matrix-vector product for one row */
    kgemm_f32_serial(0, 1, M, N, K, 1.0f, a, lda, b, ldb, 0.0f, out, ldc);
    return;
#endif
    if (M <= 4) { /* a step of a small batch: packing b would cost more than the product */
        for (int64_t m = 0; m < M; m++)
            RGEMV(CblasRowMajor, CblasNoTrans, (int)N, (int)K, (RT)1, b, (int)ldb, a + m * lda, 1, (RT)0,
                  out + m * ldc, 1);
        return;
    }
    RGEMM(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)N, (int)K, (RT)1, a, (int)lda, b,
          (int)ldb, (RT)0, out, (int)ldc);
}

/* What the pool workers of one direction share. */
typedef struct RFN(rnn_dir) {
    const rnn_job *j;
    const rnn_cfg *c;
    int64_t S, B, In, H, D, G, GH;
    int64_t d, t;
    int rev, clip, gru_split, phase;
    RT lim;
    const rnn_act *acts;
    const RT *Wd, *Rd, *Wb, *Rb, *Rbh, *Pd;
    RT *xw;          /* [S*B, GH] input projections (+ folded biases) */
    RT *hr;          /* [B, GH] recurrent products of this step */
    RT *rh;          /* [B, H] GRU: r (.) H_prev */
    const RT *hcur;  /* [B, H] state before the step */
    RT *hnext;       /* [B, H] state after it */
    RT *cd;          /* [B, H] LSTM cell state, updated in place (each unit by its own thread) */
    const float *Rp; /* Rd packed as the B operand of kgemm_sgemm_avx512_bpacked, or NULL */
    const float *Wp; /* Wd packed likewise (at init), or NULL */
    const RT *bsum;  /* [GH] the biases folded into xw, or NULL when there are none */
    int lstm_fused;  /* LSTM with the default activations: rnn_lstm_units_f32 does the gates */
} RFN(rnn_dir);

static void RFN(project_rows)(void *arg, int64_t r0, int64_t r1) {
    RFN(rnn_dir) *s = arg;
    const RT *X = (const RT *)s->j->X;
#if RPACK
    if (!(s->Wp && kgemm_sgemm_avx512_bpacked(0, r1 - r0, s->GH, s->In, 1.0f, X + r0 * s->In, s->In, s->Wp,
                                              s->GH, 0, 0.0f, s->xw + r0 * s->GH, s->GH)))
#endif
        RFN(gemm_nt)(r1 - r0, s->GH, s->In, X + r0 * s->In, s->In, s->Wd, s->In, s->xw + r0 * s->GH, s->GH);
    if (!s->bsum) return;
    for (int64_t row = r0; row < r1; row++) {
#if RPACK
        kvec_add_f32(s->xw + row * s->GH, s->bsum, s->GH);
#else
        RT *x = s->xw + row * s->GH;
        for (int64_t k = 0; k < s->GH; k++) x[k] += s->bsum[k];
#endif
    }
}

static inline int64_t RFN(time_of)(const RFN(rnn_dir) *s, int64_t b) {
    return s->rev ? s->j->lens[b] - 1 - s->t : s->t;
}

static void RFN(write_y)(const RFN(rnn_dir) *s, int64_t b, int64_t u0, int64_t w) {
    if (!s->j->Y) return;
    RT *y = (RT *)s->j->Y + ((RFN(time_of)(s, b) * s->D + s->d) * s->B + b) * s->H + u0;
    memcpy(y, s->hnext + b * s->H + u0, (size_t)w * sizeof(RT));
}

/* One step for hidden units [u0, u1) of every batch entry (GRU without linear_before_reset:
 * phase 0 does z, r and r (.) H, phase 1 the hidden gate and the new state). */
static void RFN(step_units)(void *arg, int64_t u0, int64_t u1) {
    RFN(rnn_dir) *s = arg;
    const rnn_cfg *c = s->c;
    const int64_t B = s->B, H = s->H, GH = s->GH, w = u1 - u0;
    const int64_t *lens = s->j->lens;
    const rnn_act *acts = s->acts;
    const int clip = s->clip;
    const RT lim = s->lim;

    if (s->phase == 1) {
#if RPACK
        if (!(s->Rp && w == H && (2 * H) % KGEMM_NR == 0 &&
              kgemm_sgemm_avx512_bpacked(0, B, H, H, 1.0f, s->rh, H, s->Rp, GH, 2 * H, 0.0f, s->hr + 2 * H, GH)))
#endif
            RFN(gemm_nt)(B, w, H, s->rh, H, s->Rd + (2 * H + u0) * H, H, s->hr + 2 * H + u0, GH);
        for (int64_t b = 0; b < B; b++) {
            if (s->t >= lens[b]) continue; /* phase 0 carried the state over */
            const RT *x = s->xw + (RFN(time_of)(s, b) * B + b) * GH;
            RT *g = s->hr + b * GH, *z = g + u0, *hh = g + 2 * H + u0;
            const RT *hp = s->hcur + b * H + u0;
            RT *hn = s->hnext + b * H + u0;
            for (int64_t k = 0; k < w; k++) hh[k] += x[2 * H + u0 + k] + (s->Rbh ? s->Rbh[u0 + k] : 0);
            RFN(act_vec)(&acts[1], hh, w, clip, lim);
            for (int64_t k = 0; k < w; k++) hn[k] = (1 - z[k]) * hh[k] + z[k] * hp[k];
            RFN(write_y)(s, b, u0, w);
        }
        return;
    }

    const int64_t n_gemm = s->gru_split ? 2 : s->G;
    if (w == H) { /* all units (one thread, or one chunk): the gates' rows of R are contiguous */
#if RPACK
        if (!(s->Rp && kgemm_sgemm_avx512_bpacked(0, B, n_gemm * H, H, 1.0f, s->hcur, H, s->Rp, GH, 0, 0.0f,
                                                  s->hr, GH)))
#endif
            RFN(gemm_nt)(B, n_gemm * H, H, s->hcur, H, s->Rd, H, s->hr, GH);
    } else
        for (int64_t gi = 0; gi < n_gemm; gi++)
            RFN(gemm_nt)(B, w, H, s->hcur, H, s->Rd + (gi * H + u0) * H, H, s->hr + gi * H + u0, GH);

    for (int64_t b = 0; b < B; b++) {
        const RT *hp = s->hcur + b * H + u0;
        RT *hn = s->hnext + b * H + u0;
        if (s->t >= lens[b]) {
            memcpy(hn, hp, (size_t)w * sizeof(RT));
            if (s->gru_split) memset(s->rh + b * H + u0, 0, (size_t)w * sizeof(RT));
            continue;
        }
        const RT *x = s->xw + (RFN(time_of)(s, b) * B + b) * GH;
        RT *g = s->hr + b * GH;
        if (c->cell == RNN_CELL_SIMPLE) {
            RT *v = g + u0;
            for (int64_t k = 0; k < w; k++) v[k] += x[u0 + k];
            RFN(act_vec)(&acts[0], v, w, clip, lim);
            memcpy(hn, v, (size_t)w * sizeof(RT));
        } else if (c->cell == RNN_CELL_LSTM) {
            RT *gi = g + u0, *go = g + H + u0, *gf = g + 2 * H + u0, *gc = g + 3 * H + u0;
            const RT *xi = x + u0, *xo = x + H + u0, *xf = x + 2 * H + u0, *xc = x + 3 * H + u0;
            RT *cb = s->cd + b * H + u0;
#if RPACK && defined(RNN_HAVE_LSTM_UNITS16)
            if (s->lstm_fused) {
                const RT *P = s->Pd;
                rnn_lstm_units_f32(gi, go, gf, gc, xi, xo, xf, xc, P ? P + u0 : NULL, P ? P + H + u0 : NULL,
                                   P ? P + 2 * H + u0 : NULL, cb, hn, w);
                RFN(write_y)(s, b, u0, w);
                continue;
            }
#endif
            for (int64_t k = 0; k < w; k++) {
                gi[k] += xi[k];
                go[k] += xo[k];
                gf[k] += xf[k];
                gc[k] += xc[k];
            }
            if (s->Pd)
                for (int64_t k = 0; k < w; k++) {
                    gi[k] += s->Pd[u0 + k] * cb[k];
                    gf[k] += s->Pd[2 * H + u0 + k] * cb[k];
                }
            RFN(act_vec)(&acts[0], gi, w, clip, lim);
            if (c->input_forget)
                for (int64_t k = 0; k < w; k++) gf[k] = 1 - gi[k];
            else
                RFN(act_vec)(&acts[0], gf, w, clip, lim);
            RFN(act_vec)(&acts[1], gc, w, clip, lim);
            for (int64_t k = 0; k < w; k++) cb[k] = gf[k] * cb[k] + gi[k] * gc[k];
            if (s->Pd)
                for (int64_t k = 0; k < w; k++) go[k] += s->Pd[H + u0 + k] * cb[k];
            RFN(act_vec)(&acts[0], go, w, clip, lim);
            /* h(C) goes through gc's storage: the cell candidate is no longer needed */
            memcpy(gc, cb, (size_t)w * sizeof(RT));
            RFN(act_vec)(&acts[2], gc, w, 0, 0); /* clip bounds gate inputs, not C */
            for (int64_t k = 0; k < w; k++) hn[k] = go[k] * gc[k];
        } else {
            RT *z = g + u0, *r = g + H + u0;
            for (int64_t k = 0; k < w; k++) {
                z[k] += x[u0 + k];
                r[k] += x[H + u0 + k];
            }
            RFN(act_vec)(&acts[0], z, w, clip, lim);
            RFN(act_vec)(&acts[0], r, w, clip, lim);
            if (s->gru_split) {
                RT *rhb = s->rh + b * H + u0;
                for (int64_t k = 0; k < w; k++) rhb[k] = r[k] * hp[k];
                continue; /* the hidden gate waits for phase 1 */
            }
            RT *hh = g + 2 * H + u0;
            for (int64_t k = 0; k < w; k++)
                hh[k] = x[2 * H + u0 + k] + r[k] * (hh[k] + (s->Rbh ? s->Rbh[u0 + k] : 0));
            RFN(act_vec)(&acts[1], hh, w, clip, lim);
            for (int64_t k = 0; k < w; k++) hn[k] = (1 - z[k]) * hh[k] + z[k] * hp[k];
        }
        RFN(write_y)(s, b, u0, w);
    }
}

/* One direction's working buffers. */
typedef struct RFN(rnn_bufs) {
    RT *xw, *hr, *hbuf, *rh, *bsum;
} RFN(rnn_bufs);

static int RFN(bufs_alloc)(RFN(rnn_bufs) *w, const rnn_job *j) {
    const int64_t S = j->S, B = j->B, H = j->H, GH = j->cfg->n_gates * H;
    w->xw = malloc((size_t)(S > 0 ? S * B * GH : 1) * sizeof(RT));
    w->hr = malloc((size_t)(B * GH) * sizeof(RT));
    w->hbuf = malloc((size_t)(B * H) * sizeof(RT));
    w->rh = j->cfg->cell == RNN_CELL_GRU ? malloc((size_t)(B * H) * sizeof(RT)) : NULL;
    w->bsum = malloc((size_t)GH * sizeof(RT));
    return w->xw && w->hr && w->hbuf && w->bsum && (j->cfg->cell != RNN_CELL_GRU || w->rh);
}

static void RFN(bufs_free)(RFN(rnn_bufs) *w) {
    free(w->xw), free(w->hr), free(w->hbuf), free(w->rh), free(w->bsum);
}

/* Fills s for direction d with w's buffers (and w's folded biases); *Rp_own receives an R packed
 * here that the caller frees. unit_grain >= H: one chunk does every unit of a step, so R is used
 * packed (at init, or once here). */
static void RFN(dir_prepare)(const rnn_job *j, int64_t d, const RFN(rnn_bufs) *w, RFN(rnn_dir) *sp,
                             int64_t unit_grain, float **Rp_own) {
    const rnn_cfg *c = j->cfg;
    const int64_t S = j->S, B = j->B, H = j->H, D = j->D, G = c->n_gates, GH = G * H;
    RFN(rnn_dir) s;
    memset(&s, 0, sizeof s);
    *Rp_own = NULL;
    s.j = j, s.c = c;
    s.S = S, s.B = B, s.In = j->in_size, s.H = H, s.D = D, s.G = G, s.GH = GH, s.d = d;
    s.rev = D == 2 ? d == 1 : c->reverse;
    s.clip = c->has_clip;
    s.lim = (RT)c->clip;
    s.gru_split = c->cell == RNN_CELL_GRU && !c->linear_before_reset;
    s.acts = c->act[d];
    s.Wd = (const RT *)j->W + d * GH * s.In;
    s.Rd = (const RT *)j->R + d * GH * H;
    s.Wb = j->bias ? (const RT *)j->bias + d * 2 * GH : NULL;
    s.Rb = s.Wb ? s.Wb + GH : NULL;
    s.Rbh = s.Rb && c->cell == RNN_CELL_GRU ? s.Rb + 2 * H : NULL;
    s.Pd = j->P ? (const RT *)j->P + d * 3 * H : NULL;
    s.xw = w->xw, s.hr = w->hr, s.rh = w->rh;
    s.cd = j->c ? (RT *)j->c + d * B * H : NULL;
    if (s.Wb) {
        /* GRU's hidden-gate recurrent bias sits inside r (.) (...) with linear_before_reset, and
         * is added after the recurrent product otherwise: keep it out of xw. */
        const int64_t fold_r = c->cell == RNN_CELL_GRU ? 2 * H : GH;
        for (int64_t k = 0; k < GH; k++) w->bsum[k] = s.Wb[k] + (k < fold_r ? s.Rb[k] : 0);
        s.bsum = w->bsum;
    }
#if RPACK && defined(RNN_HAVE_LSTM_UNITS16)
    s.lstm_fused = c->cell == RNN_CELL_LSTM && !s.clip && !c->input_forget && s.acts[0].kind == RNN_ACT_SIGMOID &&
                   s.acts[1].kind == RNN_ACT_TANH && s.acts[2].kind == RNN_ACT_TANH && kgemm_avx512_available();
#endif
#if RPACK
    s.Wp = j->Wp[d];
    if (unit_grain >= H) {
        if (j->Rp[d]) s.Rp = j->Rp[d];
        else if (S > 1 && kgemm_avx512_available() &&
                 (*Rp_own = kgemm_alloc_packed(kgemm_avx512_packed_b_size(H, GH))))
            kgemm_avx512_pack_b(1, H, GH, s.Rd, H, *Rp_own), s.Rp = *Rp_own;
    }
#else
    (void)unit_grain;
#endif
    s.hcur = (RT *)j->h + d * B * H;
    s.hnext = w->hbuf;
    *sp = s;
}

/* After the last step: the state into h (it may sit in the other buffer). */
static void RFN(dir_finish)(RFN(rnn_dir) *s, float *Rp_own) {
    RT *hd = (RT *)s->j->h + s->d * s->B * s->H;
    if (s->hcur != hd) memcpy(hd, s->hcur, (size_t)(s->B * s->H) * sizeof(RT));
    free(Rp_own);
}

static void RFN(dir_swap)(RFN(rnn_dir) *s) {
    RT *old = (RT *)s->hcur;
    s->hcur = s->hnext;
    s->hnext = old;
}

/* Runs direction d: its projection and steps over the pool, or on the calling thread alone when
 * pool is 0 (the two directions then run side by side, one per thread). */
static void RFN(run_dir)(const rnn_job *j, int64_t d, const RFN(rnn_bufs) *w, int pool,
                         int64_t unit_grain, int64_t row_grain) {
    const int64_t S = j->S, B = j->B, H = j->H;
    if (!pool) unit_grain = H, row_grain = S * B;
    RFN(rnn_dir) s;
    float *Rp = NULL;
    RFN(dir_prepare)(j, d, w, &s, unit_grain, &Rp);
    if (pool) kiln_parallel_for(j->ctx, S * B, row_grain, RFN(project_rows), &s);
    else if (S * B > 0) RFN(project_rows)(&s, 0, S * B);
    for (int64_t t = 0; t < S; t++) {
        s.t = t;
        s.phase = 0;
        if (pool) kiln_parallel_for(j->ctx, H, unit_grain, RFN(step_units), &s);
        else RFN(step_units)(&s, 0, H);
        if (s.gru_split) {
            s.phase = 1;
            if (pool) kiln_parallel_for(j->ctx, H, unit_grain, RFN(step_units), &s);
            else RFN(step_units)(&s, 0, H);
        }
        RFN(dir_swap)(&s);
    }
    RFN(dir_finish)(&s, Rp);
}

/* Both directions in lock step: one pass over the pool per step does both directions' units
 * (items [0, H) are direction 0's, [H, 2H) direction 1's), so a step costs one hand-off instead
 * of two and twice as many threads have work. */
typedef struct RFN(rnn_pair) {
    RFN(rnn_dir) s[2];
    int64_t n; /* rows (projection) or units (steps) per direction */
} RFN(rnn_pair);

static void RFN(pair_split)(RFN(rnn_pair) *p, int64_t i0, int64_t i1, void (*fn)(void *, int64_t, int64_t)) {
    const int64_t n = p->n;
    if (i0 < n) fn(&p->s[0], i0, i1 < n ? i1 : n);
    if (i1 > n) fn(&p->s[1], i0 > n ? i0 - n : 0, i1 - n);
}
static void RFN(pair_rows)(void *arg, int64_t i0, int64_t i1) {
    RFN(pair_split)(arg, i0, i1, RFN(project_rows));
}
static void RFN(pair_units)(void *arg, int64_t i0, int64_t i1) {
    RFN(pair_split)(arg, i0, i1, RFN(step_units));
}

static void RFN(run_pair)(const rnn_job *j, RFN(rnn_bufs) *w, int64_t unit_grain, int64_t row_grain) {
    const int64_t S = j->S, B = j->B, H = j->H;
    RFN(rnn_pair) p;
    float *Rp[2];
    for (int d = 0; d < 2; d++) RFN(dir_prepare)(j, d, &w[d], &p.s[d], unit_grain, &Rp[d]);
    p.n = S * B;
    if (S * B > 0) kiln_parallel_for(j->ctx, 2 * S * B, row_grain, RFN(pair_rows), &p);
    p.n = H;
    for (int64_t t = 0; t < S; t++) {
        p.s[0].t = p.s[1].t = t;
        p.s[0].phase = p.s[1].phase = 0;
        kiln_parallel_for(j->ctx, 2 * H, unit_grain, RFN(pair_units), &p);
        if (p.s[0].gru_split) {
            p.s[0].phase = p.s[1].phase = 1;
            kiln_parallel_for(j->ctx, 2 * H, unit_grain, RFN(pair_units), &p);
        }
        RFN(dir_swap)(&p.s[0]);
        RFN(dir_swap)(&p.s[1]);
    }
    for (int d = 0; d < 2; d++) RFN(dir_finish)(&p.s[d], Rp[d]);
}

typedef struct RFN(rnn_both) {
    const rnn_job *j;
    RFN(rnn_bufs) w[2];
} RFN(rnn_both);

static void RFN(dir_task)(void *arg, int64_t d0, int64_t d1) {
    RFN(rnn_both) *a = arg;
    for (int64_t d = d0; d < d1; d++) RFN(run_dir)(a->j, d, &a->w[d], 0, 0, 0);
}

int RFN(kiln_rnn_run_)(const rnn_job *j) {
    const rnn_cfg *c = j->cfg;
    const int64_t S = j->S, B = j->B, H = j->H, D = j->D;
    const int64_t G = c->n_gates;
    if (B == 0 || H == 0) return 0; /* nothing to compute, outputs are empty */
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);

    const int64_t nth = kiln_num_threads(j->ctx);
    /* about one chunk per thread: each chunk re-packs its GEMM operands, so fewer is cheaper */
    int64_t unit_grain = H / nth > 32 ? (H + nth - 1) / nth : 32;
    /* a step split over threads pays a parallel-for (microseconds) every step: split only steps
     * with at least ~128K multiply-adds per chunk (an LSTM of 128 units at batch 1 has 64K) */
    const int64_t min_units = (((int64_t)1 << 17) + G * H * B - 1) / (G * H * B);
    if (unit_grain < min_units) unit_grain = min_units;
    const int64_t row_grain = S * B / nth > 64 ? (S * B + nth - 1) / nth : 64;

    /* Two directions are independent: where a step would be split in at most two chunks, give
     * each direction a thread for the whole run instead, one hand-off per node rather than one per
     * step (bidirectional LSTM 256 at 2 threads: each step's pass over the pool cost more than it
     * saved), and each thread keeps its direction's R in its own cache. */
    const int64_t chunks = (H + unit_grain - 1) / unit_grain;
    int rc = 0;
    if (D == 2 && nth >= 2 && chunks <= 2) {
        RFN(rnn_both) a = {.j = j};
        if (RFN(bufs_alloc)(&a.w[0], j) && RFN(bufs_alloc)(&a.w[1], j)) kiln_parallel_for(j->ctx, 2, 1, RFN(dir_task), &a);
        else rc = -1;
        RFN(bufs_free)(&a.w[0]), RFN(bufs_free)(&a.w[1]);
    } else if (D == 2 && nth >= 2) {
        /* both directions split over the pool in one pass per step */
        RFN(rnn_bufs) w[2];
        memset(w, 0, sizeof w);
        if (RFN(bufs_alloc)(&w[0], j) && RFN(bufs_alloc)(&w[1], j)) RFN(run_pair)(j, w, unit_grain, row_grain);
        else rc = -1;
        RFN(bufs_free)(&w[0]), RFN(bufs_free)(&w[1]);
    } else {
        RFN(rnn_bufs) w;
        if (RFN(bufs_alloc)(&w, j))
            for (int64_t d = 0; d < D; d++) RFN(run_dir)(j, d, &w, 1, unit_grain, row_grain);
        else rc = -1;
        RFN(bufs_free)(&w);
    }
    if (rc) return rc;

    /* an entry with no steps reports zero states, as onnxruntime does, not its initial ones */
    for (int64_t d = 0; d < D; d++)
        for (int64_t b = 0; b < B; b++) {
            if (j->lens[b] != 0) continue;
            memset((RT *)j->h + (d * B + b) * H, 0, (size_t)H * sizeof(RT));
            if (j->c) memset((RT *)j->c + (d * B + b) * H, 0, (size_t)H * sizeof(RT));
        }
    return 0;
}

#undef RFN
#undef RNN_CAT
#undef RNN_CAT2
