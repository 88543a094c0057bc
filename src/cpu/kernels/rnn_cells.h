/* The recurrent step loops of RNN, LSTM and GRU, written once for both working precisions.
 * Included by rnn_cells_f32.c / rnn_cells_f64.c after defining:
 *   RT                    element type (float / double)
 *   RSFX                  name suffix (f32 / f64)
 *   RGEMM, RGEMV          cblas_sgemm / cblas_dgemm, cblas_sgemv / cblas_dgemv
 *   REXP, RTANH, RLOG1P   the matching libm functions
 *   RVEC_SIGMOID, RVEC_TANH   in-place array versions of the two default activations
 *   RPACK                 1 (float): W and R packed for kiln's packed product (at init when
 *                         they are constants, else R once per run), so that the projection and
 *                         each step's recurrent product for all gates read them without re-packing
 *
 * Per direction: one GEMM projects the input of every time step at once (X[S*B, I] x W^T), split
 * over kiln's threads by row panels, with the biases that are added unconditionally folded in.
 * Each step then runs on the threads split by blocks of hidden units: a thread multiplies the
 * previous hidden state by the rows of R that feed its blocks, one product over R packed by
 * rnn_pack.c (float where the packed product runs, AVX-512 or AVX2: each block's gates side by
 * side, so whole blocks are contiguous packed columns; elsewhere one product per gate, or one for
 * all when it has every unit) and does those units' gate math for the whole batch, a block at a
 * time while the products are in cache (the default LSTM gates in one pass, 16 lanes on AVX-512,
 * 8 on AVX2: rnn_fastmath.h).
 * A step needs one pass over the pool (two for GRU without linear_before_reset, whose hidden gate
 * needs r (.) H of every unit first), and a thread claims the chunk it had on the last step
 * (rnn_sched.c). The hidden state is double-buffered because every thread's product reads all of
 * it while units are rewritten. A batch entry whose sequence has ended keeps its state, so the
 * final state is its last valid one. OpenBLAS itself runs single-threaded: kiln's pool provides
 * the parallelism.
 * When a step would split into at most two chunks anyway, a bidirectional node instead runs each
 * direction's steps whole on a thread of its own, with its own buffers; otherwise its two
 * directions step in lock step, one pass over the pool doing both directions' blocks (half the
 * hand-offs, twice the threads with work). */
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
    RT *hr;          /* [B, ld] recurrent products of this step */
    RT *rh;          /* [B, H] GRU: r (.) H_prev */
    const RT *hcur;  /* [B, H] state before the step */
    RT *hnext;       /* [B, H] state after it */
    RT *cd;          /* [B, H] LSTM cell state, updated in place (each unit by its own thread) */
    const float *Rp; /* Rd packed by kiln_rnn_pack_r, hr then in its blocked layout; or NULL */
    const float *Wp; /* Wd packed as the B operand of kgemm_sgemm_avx512_bpacked (at init), or NULL */
    const RT *bsum;  /* [GH] the biases folded into xw, or NULL when there are none */
    int lstm_fused;  /* LSTM with the default activations: rnn_lstm_units_f32 does the gates */
    rnn_blocks bk;   /* where Rp: the blocked layout; else blocks of one unit, gate g at g * H */
    int64_t ld;      /* hr's row length */
} RFN(rnn_dir);

/* The input projection of row panels [p0, p1) of the S*B rows, KGEMM_MR rows a panel (the last may
 * have fewer). Cut at the product's own panel boundaries, every row goes through the same kernel
 * whatever the thread count, so the results do not depend on it. */
static void RFN(project_rows)(void *arg, int64_t p0, int64_t p1) {
    RFN(rnn_dir) *s = arg;
    const RT *X = (const RT *)s->j->X;
    const int64_t r0 = p0 * KGEMM_MR, r1 = p1 * KGEMM_MR < s->S * s->B ? p1 * KGEMM_MR : s->S * s->B;
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

/* The recurrent product of gate g for unit a of batch row b; the units after a up to the end of
 * its block follow it. */
static inline RT *RFN(gate)(const RFN(rnn_dir) *s, int64_t b, int64_t g, int64_t a) {
    RT *row = s->hr + b * s->ld;
    if (!s->Rp) return row + g * s->H + a;
    const int64_t U = s->bk.U, blk = a / U;
    return row + (blk * s->bk.n + g) * U + (a - blk * U);
}

/* GRU's hidden gate: a product of its own in the two-phase step (blocked layout), else gate 2. */
static inline RT *RFN(hgate)(const RFN(rnn_dir) *s, int64_t b, int64_t a) {
    if (s->Rp && s->bk.hcol >= 0) return s->hr + b * s->ld + s->bk.hcol + a;
    return RFN(gate)(s, b, 2, a);
}

/* This phase's recurrent products for blocks [k0, k1), which are units [u0, u1). */
static void RFN(step_product)(RFN(rnn_dir) *s, int64_t k0, int64_t k1, int64_t u0, int64_t u1) {
    const int64_t B = s->B, H = s->H, w = u1 - u0;
    const int ph1 = s->phase == 1;
    const RT *a = ph1 ? s->rh : s->hcur;
#if RPACK
    if (s->Rp) {
        const int64_t U = s->bk.U, n = ph1 ? 1 : s->bk.n;
        const int64_t j0 = (ph1 ? s->bk.hcol : 0) + k0 * n * U;
        if (kgemm_sgemm_avx512_bpacked(0, B, (k1 - k0) * n * U, H, 1.0f, a, H, s->Rp, s->ld, j0, 0.0f, s->hr + j0,
                                       s->ld))
            return;
        /* no buffers for the product: the same columns, gate by gate, from R as it is */
        for (int64_t k = k0; k < k1; k++) {
            const int64_t ua = k * U, wk = H - ua < U ? H - ua : U;
            for (int64_t g = 0; g < n; g++)
                RFN(gemm_nt)(B, wk, H, a, H, s->Rd + ((ph1 ? 2 : g) * H + ua) * H, H,
                             ph1 ? RFN(hgate)(s, 0, ua) : RFN(gate)(s, 0, g, ua), s->ld);
        }
        return;
    }
#else
    (void)k0, (void)k1;
#endif
    if (ph1) {
        RFN(gemm_nt)(B, w, H, a, H, s->Rd + (2 * H + u0) * H, H, s->hr + 2 * H + u0, s->ld);
    } else if (w == H) { /* all units: the gates' rows of R are contiguous */
        RFN(gemm_nt)(B, s->bk.n * H, H, a, H, s->Rd, H, s->hr, s->ld);
    } else {
        for (int64_t g = 0; g < s->bk.n; g++)
            RFN(gemm_nt)(B, w, H, a, H, s->Rd + (g * H + u0) * H, H, s->hr + g * H + u0, s->ld);
    }
}

/* Phase 0 of a step for batch row b and units [u, u + w), all of one block: the gate math after
 * the recurrent product (GRU without linear_before_reset: z, r and r (.) H only). */
static void RFN(row_units)(RFN(rnn_dir) *s, int64_t b, int64_t u, int64_t w) {
    const rnn_cfg *c = s->c;
    const int64_t H = s->H;
    const rnn_act *acts = s->acts;
    const int clip = s->clip;
    const RT lim = s->lim;
    const RT *hp = s->hcur + b * H + u;
    RT *hn = s->hnext + b * H + u;
    if (s->t >= s->j->lens[b]) { /* ended: the state carries over */
        memcpy(hn, hp, (size_t)w * sizeof(RT));
        if (s->gru_split) memset(s->rh + b * H + u, 0, (size_t)w * sizeof(RT));
        return;
    }
    const RT *x = s->xw + (RFN(time_of)(s, b) * s->B + b) * s->GH;
    if (c->cell == RNN_CELL_SIMPLE) {
        RT *v = RFN(gate)(s, b, 0, u);
        for (int64_t k = 0; k < w; k++) v[k] += x[u + k];
        RFN(act_vec)(&acts[0], v, w, clip, lim);
        memcpy(hn, v, (size_t)w * sizeof(RT));
    } else if (c->cell == RNN_CELL_LSTM) {
        RT *gi = RFN(gate)(s, b, 0, u), *go = RFN(gate)(s, b, 1, u), *gf = RFN(gate)(s, b, 2, u),
           *gc = RFN(gate)(s, b, 3, u);
        const RT *xi = x + u, *xo = x + H + u, *xf = x + 2 * H + u, *xc = x + 3 * H + u;
        RT *cb = s->cd + b * H + u;
        const RT *P = s->Pd;
#if RPACK && defined(RNN_HAVE_LSTM_UNITS16)
        if (s->lstm_fused) {
            /* blocks of 16 units: the next 16 units' gates are a block (n * U columns) further */
            rnn_lstm_units_f32(gi, go, gf, gc, s->Rp ? s->bk.n * s->bk.U : 16, xi, xo, xf, xc,
                               P ? P + u : NULL, P ? P + H + u : NULL, P ? P + 2 * H + u : NULL, cb, hn, w);
            RFN(write_y)(s, b, u, w);
            return;
        }
#endif
        for (int64_t k = 0; k < w; k++) {
            gi[k] += xi[k];
            go[k] += xo[k];
            gf[k] += xf[k];
            gc[k] += xc[k];
        }
        if (P)
            for (int64_t k = 0; k < w; k++) {
                gi[k] += P[u + k] * cb[k];
                gf[k] += P[2 * H + u + k] * cb[k];
            }
        RFN(act_vec)(&acts[0], gi, w, clip, lim);
        if (c->input_forget)
            for (int64_t k = 0; k < w; k++) gf[k] = 1 - gi[k];
        else
            RFN(act_vec)(&acts[0], gf, w, clip, lim);
        RFN(act_vec)(&acts[1], gc, w, clip, lim);
        for (int64_t k = 0; k < w; k++) cb[k] = gf[k] * cb[k] + gi[k] * gc[k];
        if (P)
            for (int64_t k = 0; k < w; k++) go[k] += P[H + u + k] * cb[k];
        RFN(act_vec)(&acts[0], go, w, clip, lim);
        /* h(C) goes through gc's storage: the cell candidate is no longer needed */
        memcpy(gc, cb, (size_t)w * sizeof(RT));
        RFN(act_vec)(&acts[2], gc, w, 0, 0); /* clip bounds gate inputs, not C */
        for (int64_t k = 0; k < w; k++) hn[k] = go[k] * gc[k];
    } else {
        RT *z = RFN(gate)(s, b, 0, u), *r = RFN(gate)(s, b, 1, u);
        for (int64_t k = 0; k < w; k++) {
            z[k] += x[u + k];
            r[k] += x[H + u + k];
        }
        RFN(act_vec)(&acts[0], z, w, clip, lim);
        RFN(act_vec)(&acts[0], r, w, clip, lim);
        if (s->gru_split) {
            RT *rhb = s->rh + b * H + u;
            for (int64_t k = 0; k < w; k++) rhb[k] = r[k] * hp[k];
            return; /* the hidden gate waits for phase 1 */
        }
        RT *hh = RFN(gate)(s, b, 2, u);
        for (int64_t k = 0; k < w; k++) hh[k] = x[2 * H + u + k] + r[k] * (hh[k] + (s->Rbh ? s->Rbh[u + k] : 0));
        RFN(act_vec)(&acts[1], hh, w, clip, lim);
        for (int64_t k = 0; k < w; k++) hn[k] = (1 - z[k]) * hh[k] + z[k] * hp[k];
    }
    RFN(write_y)(s, b, u, w);
}

/* Phase 1 of GRU's two-phase step for batch row b and units [u, u + w): the hidden gate, whose
 * product phase 0's r (.) H of every unit had to precede, and the new state. */
static void RFN(row_hidden)(RFN(rnn_dir) *s, int64_t b, int64_t u, int64_t w) {
    if (s->t >= s->j->lens[b]) return; /* phase 0 carried the state over */
    const int64_t H = s->H;
    const RT *x = s->xw + (RFN(time_of)(s, b) * s->B + b) * s->GH;
    const RT *z = RFN(gate)(s, b, 0, u), *hp = s->hcur + b * H + u;
    RT *hh = RFN(hgate)(s, b, u), *hn = s->hnext + b * H + u;
    for (int64_t k = 0; k < w; k++) hh[k] += x[2 * H + u + k] + (s->Rbh ? s->Rbh[u + k] : 0);
    RFN(act_vec)(&s->acts[1], hh, w, s->clip, s->lim);
    for (int64_t k = 0; k < w; k++) hn[k] = (1 - z[k]) * hh[k] + z[k] * hp[k];
    RFN(write_y)(s, b, u, w);
}

/* One step (one phase of it) for blocks [k0, k1) of hidden units, every batch entry: one product
 * for the blocks' gates, then their gate math a block at a time, while the products are in cache. */
static void RFN(step_units)(void *arg, int64_t k0, int64_t k1) {
    RFN(rnn_dir) *s = arg;
    const int64_t H = s->H, U = s->bk.U;
    const int64_t u0 = k0 * U, u1 = k1 * U < H ? k1 * U : H;
    /* the gate math may cover any run of units that stays inside a block of the layout, except
     * the fused LSTM gates, which step from block to block themselves: one call per batch row,
     * as in the plain layout, rather than a call's set-up (pointers, length, tail) per 16 units */
    const int64_t seg = !s->Rp || (s->lstm_fused && s->bk.U == 16) ? u1 - u0 : U;
    RFN(step_product)(s, k0, k1, u0, u1);
    for (int64_t b = 0; b < s->B; b++)
        for (int64_t u = u0; u < u1; u += seg) {
            const int64_t w = u1 - u < seg ? u1 - u : seg;
            if (s->phase == 1) RFN(row_hidden)(s, b, u, w);
            else RFN(row_units)(s, b, u, w);
        }
}

/* One direction's working buffers. */
typedef struct RFN(rnn_bufs) {
    RT *xw, *hr, *hbuf, *rh, *bsum;
} RFN(rnn_bufs);

static int RFN(bufs_alloc)(RFN(rnn_bufs) *w, const rnn_job *j) {
    const int64_t S = j->S, B = j->B, H = j->H, GH = j->cfg->n_gates * H;
    rnn_blocks bk;
    kiln_rnn_blocks(j->cfg, H, &bk);
    const int64_t ld = bk.ld > GH ? bk.ld : GH; /* either layout */
    w->xw = malloc((size_t)(S > 0 ? S * B * GH : 1) * sizeof(RT));
    w->hr = malloc((size_t)(B * ld) * sizeof(RT));
    w->hbuf = malloc((size_t)(B * H) * sizeof(RT));
    w->rh = j->cfg->cell == RNN_CELL_GRU ? malloc((size_t)(B * H) * sizeof(RT)) : NULL;
    w->bsum = malloc((size_t)GH * sizeof(RT));
    return w->xw && w->hr && w->hbuf && w->bsum && (j->cfg->cell != RNN_CELL_GRU || w->rh);
}

static void RFN(bufs_free)(RFN(rnn_bufs) *w) {
    free(w->xw), free(w->hr), free(w->hbuf), free(w->rh), free(w->bsum);
}

/* How a run is cut: R of each direction in the blocked layout (or NULL: the plain one), and the
 * grains, in blocks of hidden units for the steps and in rows for the projection. */
typedef struct RFN(rnn_plan) {
    const rnn_job *j;
    const float *Rp[2];
    int64_t blk_grain, row_grain; /* row_grain: in KGEMM_MR-row panels */
    rnn_claims *cl; /* the steps' chunks, claimed by the same threads pass after pass; or NULL */
} RFN(rnn_plan);

/* One pass of a step over the pool, in the plan's sticky chunks where it has them. */
static void RFN(step_pass)(const RFN(rnn_plan) *pl, int64_t items, kiln_range_fn fn, void *arg) {
    if (pl->cl) kiln_rnn_pass(pl->j->ctx, pl->cl, items, fn, arg);
    else kiln_parallel_for(pl->j->ctx, items, pl->blk_grain, fn, arg);
}

/* Fills s for direction d with w's buffers (and w's folded biases). */
static void RFN(dir_prepare)(const RFN(rnn_plan) *pl, int64_t d, const RFN(rnn_bufs) *w, RFN(rnn_dir) *sp) {
    const rnn_job *j = pl->j;
    const rnn_cfg *c = j->cfg;
    const int64_t S = j->S, B = j->B, H = j->H, D = j->D, G = c->n_gates, GH = G * H;
    RFN(rnn_dir) s;
    memset(&s, 0, sizeof s);
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
                   s.acts[1].kind == RNN_ACT_TANH && s.acts[2].kind == RNN_ACT_TANH && rnn_lstm_fused_ok();
#endif
#if RPACK
    s.Wp = j->Wp[d];
#endif
    s.Rp = pl->Rp[d];
    if (s.Rp) {
        kiln_rnn_blocks(c, H, &s.bk);
        s.ld = s.bk.ld;
    } else {
        s.bk.n = s.gru_split ? 2 : G;
        s.bk.U = 1;
        s.bk.nblk = s.bk.hpad = H;
        s.bk.hcol = -1;
        s.ld = GH;
    }
    s.hcur = (RT *)j->h + d * B * H;
    s.hnext = w->hbuf;
    *sp = s;
}

/* After the last step: the state into h (it may sit in the other buffer). */
static void RFN(dir_finish)(RFN(rnn_dir) *s) {
    RT *hd = (RT *)s->j->h + s->d * s->B * s->H;
    if (s->hcur != hd) memcpy(hd, s->hcur, (size_t)(s->B * s->H) * sizeof(RT));
}

static void RFN(dir_swap)(RFN(rnn_dir) *s) {
    RT *old = (RT *)s->hcur;
    s->hcur = s->hnext;
    s->hnext = old;
}

/* Runs direction d: its projection (unless done already) and steps over the pool, or on the
 * calling thread alone when pool is 0 (the two directions then run side by side, one per thread). */
static void RFN(run_dir)(const RFN(rnn_plan) *pl, int64_t d, const RFN(rnn_bufs) *w, int pool, int projected) {
    const rnn_job *j = pl->j;
    const int64_t S = j->S, B = j->B;
    RFN(rnn_dir) s;
    RFN(dir_prepare)(pl, d, w, &s);
    const int64_t nb = s.bk.nblk;
    const int64_t np = (S * B + KGEMM_MR - 1) / KGEMM_MR;
    if (!projected && pool) kiln_parallel_for(j->ctx, np, pl->row_grain, RFN(project_rows), &s);
    else if (!projected && np > 0) RFN(project_rows)(&s, 0, np);
    for (int64_t t = 0; t < S; t++) {
        s.t = t;
        s.phase = 0;
        if (pool) RFN(step_pass)(pl, nb, RFN(step_units), &s);
        else RFN(step_units)(&s, 0, nb);
        if (s.gru_split) {
            s.phase = 1;
            if (pool) RFN(step_pass)(pl, nb, RFN(step_units), &s);
            else RFN(step_units)(&s, 0, nb);
        }
        RFN(dir_swap)(&s);
    }
    RFN(dir_finish)(&s);
}

/* Both directions in lock step: one pass over the pool per step does both directions' blocks
 * (items [0, n) are direction 0's, [n, 2n) direction 1's), so a step costs one hand-off instead
 * of two and twice as many threads have work. */
typedef struct RFN(rnn_pair) {
    RFN(rnn_dir) s[2];
    int64_t n; /* row panels (projection) or blocks (steps) per direction */
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

static void RFN(run_pair)(const RFN(rnn_plan) *pl, RFN(rnn_bufs) *w) {
    const rnn_job *j = pl->j;
    const int64_t S = j->S, B = j->B;
    RFN(rnn_pair) p;
    for (int d = 0; d < 2; d++) RFN(dir_prepare)(pl, d, &w[d], &p.s[d]);
    p.n = (S * B + KGEMM_MR - 1) / KGEMM_MR;
    if (p.n > 0) kiln_parallel_for(j->ctx, 2 * p.n, pl->row_grain, RFN(pair_rows), &p);
    p.n = p.s[0].bk.nblk;
    for (int64_t t = 0; t < S; t++) {
        p.s[0].t = p.s[1].t = t;
        p.s[0].phase = p.s[1].phase = 0;
        RFN(step_pass)(pl, 2 * p.n, RFN(pair_units), &p);
        if (p.s[0].gru_split) {
            p.s[0].phase = p.s[1].phase = 1;
            RFN(step_pass)(pl, 2 * p.n, RFN(pair_units), &p);
        }
        RFN(dir_swap)(&p.s[0]);
        RFN(dir_swap)(&p.s[1]);
    }
    for (int d = 0; d < 2; d++) RFN(dir_finish)(&p.s[d]);
}

typedef struct RFN(rnn_both) {
    const RFN(rnn_plan) *pl;
    RFN(rnn_bufs) w[2];
    int projected;
} RFN(rnn_both);

static void RFN(dir_task)(void *arg, int64_t d0, int64_t d1) {
    RFN(rnn_both) *a = arg;
    for (int64_t d = d0; d < d1; d++) RFN(run_dir)(a->pl, d, &a->w[d], 0, a->projected);
}

/* Both directions' projections in one pass over the pool, before they step side by side: with
 * more threads than directions, the projection (at batch 1 a tenth of the node) need not wait
 * for the two threads that then do the steps. */
static void RFN(project_both)(const RFN(rnn_plan) *pl, RFN(rnn_bufs) *w) {
    RFN(rnn_pair) p;
    for (int d = 0; d < 2; d++) RFN(dir_prepare)(pl, d, &w[d], &p.s[d]);
    p.n = (pl->j->S * pl->j->B + KGEMM_MR - 1) / KGEMM_MR;
    if (p.n > 0) kiln_parallel_for(pl->j->ctx, 2 * p.n, pl->row_grain, RFN(pair_rows), &p);
}

/* Sticky chunks for steps of `items` blocks cut by the plan's grain, as the pool would cut them
 * (whole grains); without them (one chunk, or no memory) the steps use the pool's own claiming. */
static void RFN(sticky)(RFN(rnn_plan) *pl, int64_t items) {
    const int64_t nch = items / pl->blk_grain;
    if (nch > 1) pl->cl = kiln_rnn_claims_new(nch);
}

int RFN(kiln_rnn_run_)(const rnn_job *j) {
    const rnn_cfg *c = j->cfg;
    const int64_t S = j->S, B = j->B, H = j->H, D = j->D;
    const int64_t G = c->n_gates;
    if (B == 0 || H == 0) return 0; /* nothing to compute, outputs are empty */
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);

    RFN(rnn_plan) pl;
    memset(&pl, 0, sizeof pl);
    pl.j = j;
    float *Rown = NULL;
#if RPACK
    /* the blocked product wherever the packed engine runs (AVX-512 or AVX2), R packed at init
     * or here once per run (a single step reads R once either way: packing it would double
     * that). Without it each step's product packed R again: the bidirectional LSTM at batch 8
     * ran 1.6x slower on AVX2 than through OpenBLAS. */
    if (kgemm_packed_available() && (j->Rp[0] || S > 1)) {
        if (j->Rp[0]) {
            pl.Rp[0] = j->Rp[0], pl.Rp[1] = j->Rp[1];
        } else {
            const int64_t len = kiln_rnn_packed_r_size(c, H);
            if (!(Rown = kgemm_alloc_packed(len * D))) return -1;
            for (int64_t d = 0; d < D; d++) {
                if (!kiln_rnn_pack_r(c, H, (const float *)j->R + d * G * H * H, Rown + d * len)) {
                    free(Rown);
                    return -1;
                }
                pl.Rp[d] = Rown + d * len;
            }
        }
    }
#endif
    rnn_blocks bk;
    kiln_rnn_blocks(c, H, &bk);
    if (!pl.Rp[0]) bk.U = 1, bk.nblk = H; /* the plain layout: any unit may start a chunk */

    const int64_t nth = kiln_num_threads(j->ctx);
    /* A step split over threads pays a pass over the pool (microseconds) every step: split only
     * steps with at least ~128K multiply-adds per chunk (an LSTM of 128 units at batch 1 has 64K).
     * Otherwise about one chunk per thread, every thread with work: the bidirectional LSTM of 256
     * units at batch 8 has 32 blocks of 16 units (128K multiply-adds each) in its two directions,
     * 2 blocks per thread on 16 threads. */
    const int64_t blk_macs = B * G * bk.U * H;
    const int64_t min_blk = (((int64_t)1 << 17) + blk_macs - 1) / blk_macs;
    /* the plain layout re-packs its slice of R in every chunk of every step: fewer, wider chunks */
    const int64_t min_grain = pl.Rp[0] ? min_blk : min_blk > 32 ? min_blk : 32;
    int64_t grain = bk.nblk / nth > min_grain ? bk.nblk / nth : min_grain;
    const int64_t chunks = bk.nblk / grain; /* as the pool cuts: whole grains */
    pl.row_grain = ((S * B / nth > 64 ? (S * B + nth - 1) / nth : 64) + KGEMM_MR - 1) / KGEMM_MR;

    /* Two directions are independent: where a step would be split in at most two chunks, give
     * each direction a thread for the whole run instead, one hand-off per node rather than one per
     * step (bidirectional LSTM 256 at 2 threads: each step's pass over the pool cost more than it
     * saved), and each thread keeps its direction's R in its own cache. */
    int rc = 0;
    if (D == 2 && nth >= 2 && chunks <= 2) {
        RFN(rnn_both) a = {.pl = &pl};
        if (RFN(bufs_alloc)(&a.w[0], j) && RFN(bufs_alloc)(&a.w[1], j)) {
            if (nth > 2) RFN(project_both)(&pl, a.w), a.projected = 1;
            kiln_parallel_for(j->ctx, 2, 1, RFN(dir_task), &a);
        } else {
            rc = -1;
        }
        RFN(bufs_free)(&a.w[0]), RFN(bufs_free)(&a.w[1]);
    } else if (D == 2 && nth >= 2) {
        /* both directions split over the pool in one pass per step: the grain for twice the items */
        RFN(rnn_bufs) w[2];
        memset(w, 0, sizeof w);
        pl.blk_grain = 2 * bk.nblk / nth > min_grain ? 2 * bk.nblk / nth : min_grain;
        RFN(sticky)(&pl, 2 * bk.nblk);
        if (RFN(bufs_alloc)(&w[0], j) && RFN(bufs_alloc)(&w[1], j)) RFN(run_pair)(&pl, w);
        else rc = -1;
        RFN(bufs_free)(&w[0]), RFN(bufs_free)(&w[1]);
    } else {
        RFN(rnn_bufs) w;
        pl.blk_grain = grain;
        if (nth >= 2) RFN(sticky)(&pl, bk.nblk);
        if (RFN(bufs_alloc)(&w, j))
            for (int64_t d = 0; d < D; d++) RFN(run_dir)(&pl, d, &w, 1, 0);
        else rc = -1;
        RFN(bufs_free)(&w);
    }
    free(Rown);
    kiln_rnn_claims_free(pl.cl);
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
