/* RNN, LSTM and GRU (all opsets): the op table and the glue that brings inputs of any layout
 * and float type into the time-major working buffers of rnn_cells.h and back. float16 and
 * bfloat16 run in float; double runs in double. */
#include "rnn_common.h"
#include "gemm_util.h"
#include <stdlib.h>
#include <string.h>

static int working_dtype(int dt) { return dt == KILN_DTYPE_DOUBLE ? KILN_DTYPE_DOUBLE : KILN_DTYPE_FLOAT; }

static double load_real(int dt, const void *p, int64_t i) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return ((const float *)p)[i];
    case KILN_DTYPE_DOUBLE: return ((const double *)p)[i];
    case KILN_DTYPE_FLOAT16: return kiln_f16_to_f32(((const kiln_f16 *)p)[i]);
    default: return kiln_bf16_to_f32(((const kiln_bf16 *)p)[i]);
    }
}

static void store_real(int dt, void *p, int64_t i, double v) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: ((float *)p)[i] = (float)v; break;
    case KILN_DTYPE_DOUBLE: ((double *)p)[i] = v; break;
    case KILN_DTYPE_FLOAT16: ((kiln_f16 *)p)[i] = kiln_f32_to_f16((float)v); break;
    default: ((kiln_bf16 *)p)[i] = kiln_f32_to_bf16((float)v); break;
    }
}

static size_t real_size(int dt) {
    return dt == KILN_DTYPE_DOUBLE ? 8 : dt == KILN_DTYPE_FLOAT ? 4 : 2;
}

/* Copies src, viewed as [A, M, C], to dst as [A, M, C] (swap = 0) or [M, A, C] (swap = 1),
 * converting the element type on the way. */
static void copy_rows(const void *src, int sdt, void *dst, int ddt, int64_t A, int64_t M, int64_t C,
                      int swap) {
    const size_t ss = real_size(sdt), ds = real_size(ddt);
    if (A <= 0 || M <= 0 || C <= 0) return; /* empty tensors may have no buffer at all */
    for (int64_t a = 0; a < A; a++)
        for (int64_t m = 0; m < M; m++) {
            const int64_t si = (a * M + m) * C, di = (swap ? m * A + a : a * M + m) * C;
            if (sdt == ddt) {
                memcpy((char *)dst + di * ds, (const char *)src + si * ss, (size_t)C * ss);
            } else {
                for (int64_t k = 0; k < C; k++)
                    store_real(ddt, dst, di + k, load_real(sdt, src, si + k));
            }
        }
}

/* The tensor's data in the working type, or a converted copy (tracked in *owned). */
static const void *as_working(const kiln_tensor *t, int wdt, void **owned) {
    *owned = NULL;
    if (!t) return NULL;
    if (t->dtype == wdt) return t->data;
    int64_t n = kiln_numel(t);
    void *buf = malloc((size_t)(n > 0 ? n : 1) * real_size(wdt));
    if (!buf) return NULL;
    copy_rows(t->data, t->dtype, buf, wdt, 1, 1, n, 0);
    *owned = buf;
    return buf;
}

/* What init keeps: the attributes, and float weights that are constants packed once for kiln's
 * AVX-512 product, so that a run re-packs neither W for the input projection nor R for the
 * recurrent steps (at batch 1 that packing cost as much as a tenth of the node). */
typedef struct rnn_state {
    rnn_cfg cfg;               /* first: get_cfg reads it through the state pointer */
    const void *w_src, *r_src; /* the constants seen at init, to recognise them at run time */
    float *wp, *rp;            /* packed W / R, one block of wp_len / rp_len floats per direction */
    int64_t wp_len, rp_len;
} rnn_state;

static void rnn_fini(void *p) {
    rnn_state *s = p;
    if (!s) return;
    free(s->wp);
    free(s->rp);
    free(s);
}

static kiln_status get_cfg(kiln_ctx *ctx, int cell, rnn_cfg *cfg) {
    if (ctx->state) {
        *cfg = ((const rnn_state *)ctx->state)->cfg;
        return KILN_OK;
    }
    return kiln_rnn_parse_cfg(ctx, cell, cfg);
}

/* Packs constant float input idx ([D, GH, K]) direction by direction (R, idx 2, in the blocked
 * layout of kiln_rnn_pack_r); NULL when it is not one, or is not shaped as cfg and the other
 * weight say (compute then reports what is wrong). */
static float *pack_weight(kiln_ctx *ctx, const rnn_cfg *cfg, int idx, int64_t GH, int64_t *len) {
    const kiln_tensor *t = kiln_input(ctx, idx);
    if (!t || !t->data || t->dtype != KILN_DTYPE_FLOAT || t->rank != 3 || t->dims[0] != cfg->dirs ||
        t->dims[1] != GH || t->dims[2] <= 0)
        return NULL;
    const int64_t K = t->dims[2];
    *len = idx == 2 ? kiln_rnn_packed_r_size(cfg, K) : kgemm_avx512_packed_b_size(K, GH);
    float *p = kgemm_alloc_packed(*len * cfg->dirs);
    if (!p) return NULL;
    for (int64_t d = 0; d < cfg->dirs; d++) {
        const float *src = (const float *)t->data + d * GH * K;
        if (idx != 2) kgemm_avx512_pack_b(1, K, GH, src, K, p + d * *len);
        else if (!kiln_rnn_pack_r(cfg, K, src, p + d * *len)) {
            free(p);
            return NULL;
        }
    }
    return p;
}

static kiln_status init_cell(kiln_ctx *ctx, int cell) {
    rnn_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = kiln_rnn_parse_cfg(ctx, cell, &s->cfg);
    if (st != KILN_OK) {
        free(s);
        return st;
    }
    ctx->state = s;
    const kiln_tensor *R = kiln_input(ctx, 2);
    if (!kgemm_packed_available() || !R || R->rank != 3 || R->dims[2] <= 0) return KILN_OK;
    const int64_t H = R->dims[2], GH = s->cfg.n_gates * H;
    if (s->cfg.hidden >= 0 && s->cfg.hidden != H) return KILN_OK;
    if ((s->wp = pack_weight(ctx, &s->cfg, 1, GH, &s->wp_len))) {
        s->w_src = kiln_input(ctx, 1)->data;
        /* the runtime may then drop W's original bytes and tells w_src where they went; R keeps
         * its bytes (a node has one such note), so r_src stays valid as it is */
        kiln_input_packed(ctx, 1, sizeof(float) * (size_t)(s->wp_len * s->cfg.dirs), &s->w_src);
    }
    /* W's projection and R's blocked recurrent product run on either packed engine */
    if (kgemm_packed_available() && (s->rp = pack_weight(ctx, &s->cfg, 2, GH, &s->rp_len)))
        s->r_src = R->data;
    return KILN_OK;
}

static kiln_status infer_cell(kiln_ctx *ctx, int cell) {
    rnn_cfg cfg;
    rnn_dims d;
    KILN_TRY(get_cfg(ctx, cell, &cfg));
    return kiln_rnn_check_inputs(ctx, &cfg, &d, 1);
}

static kiln_status compute_cell(kiln_ctx *ctx, int cell) {
    rnn_cfg cfg;
    rnn_dims d;
    KILN_TRY(get_cfg(ctx, cell, &cfg));
    KILN_TRY(kiln_rnn_check_inputs(ctx, &cfg, &d, 0));
    const kiln_tensor *X = kiln_input(ctx, 0);
    const int xdt = X->dtype, wdt = working_dtype(xdt);
    const size_t es = real_size(wdt);
    const int64_t S = d.S, B = d.B, I = d.in_size, H = d.H, D = d.D;
    const int lay = cfg.layout;
    kiln_tensor *Y = kiln_output(ctx, 0);
    kiln_tensor *Yh = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    kiln_tensor *Yc = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;

    void *own[8] = {0};
    void *xbuf = NULL, *hbuf = NULL, *cbuf = NULL, *ybuf = NULL;
    int64_t *lens = malloc((size_t)(B > 0 ? B : 1) * sizeof *lens);
    kiln_status st = KILN_OK;

    rnn_job job = {0};
    job.ctx = ctx;
    job.cfg = &cfg;
    job.S = S, job.B = B, job.in_size = I, job.H = H, job.D = D;
    job.lens = lens;
    if (!lens) goto oom;
    const rnn_state *ps = ctx->state;
    if (ps && wdt == KILN_DTYPE_FLOAT)
        for (int64_t d = 0; d < D; d++) {
            if (ps->wp && kiln_input(ctx, 1)->data == ps->w_src) job.Wp[d] = ps->wp + d * ps->wp_len;
            if (ps->rp && kiln_input(ctx, 2)->data == ps->r_src) job.Rp[d] = ps->rp + d * ps->rp_len;
        }

    const kiln_tensor *sl = kiln_input(ctx, 4);
    for (int64_t b = 0; b < B; b++)
        lens[b] = !sl ? S
                : sl->dtype == KILN_DTYPE_INT32 ? ((const int32_t *)sl->data)[b]
                                                : ((const int64_t *)sl->data)[b];

    if (lay == 0 && xdt == wdt) {
        job.X = X->data;
    } else {
        xbuf = malloc((size_t)(S * B * I > 0 ? S * B * I : 1) * es);
        if (!xbuf) goto oom;
        if (lay) copy_rows(X->data, xdt, xbuf, wdt, B, S, I, 1);
        else copy_rows(X->data, xdt, xbuf, wdt, 1, 1, S * B * I, 0);
        job.X = xbuf;
    }
    static const int param_inputs[4] = {1, 2, 3, 7};
    const void **param_dst[4] = {&job.W, &job.R, &job.bias, &job.P};
    for (int k = 0; k < 4; k++) {
        int idx = param_inputs[k];
        if (idx >= ctx->n_in || (idx == 7 && cell != RNN_CELL_LSTM)) continue;
        const kiln_tensor *t = kiln_input(ctx, idx);
        if (!t) continue;
        *param_dst[k] = as_working(t, wdt, &own[k]);
        if (!*param_dst[k]) goto oom;
    }

    /* states: [D, B, H] working copies, initialised from initial_h / initial_c or zeros */
    const size_t state_bytes = (size_t)(D * B * H > 0 ? D * B * H : 1) * es;
    hbuf = calloc(1, state_bytes);
    if (!hbuf) goto oom;
    if (cell == RNN_CELL_LSTM && !(cbuf = calloc(1, state_bytes))) goto oom;
    for (int idx = 5; idx <= 6; idx++) {
        void *dst = idx == 5 ? hbuf : cbuf;
        const kiln_tensor *t = idx < ctx->n_in ? kiln_input(ctx, idx) : NULL;
        if (!dst || !t) continue;
        if (lay) copy_rows(t->data, t->dtype, dst, wdt, B, D, H, 1);
        else copy_rows(t->data, t->dtype, dst, wdt, 1, 1, D * B * H, 0);
    }
    job.h = hbuf;
    job.c = cbuf;

    if (Y) {
        if (lay == 0 && xdt == wdt) {
            if (S * D * B * H > 0) memset(Y->data, 0, (size_t)(S * D * B * H) * es);
            job.Y = Y->data;
        } else {
            if (!(ybuf = calloc(1, (size_t)(S * D * B * H > 0 ? S * D * B * H : 1) * es))) goto oom;
            job.Y = ybuf;
        }
    }

    if ((wdt == KILN_DTYPE_DOUBLE ? kiln_rnn_run_f64 : kiln_rnn_run_f32)(&job) != 0) goto oom;

    if (Y && ybuf) {
        /* [S, D, B, H] -> [B, S, D, H] for layout 1: S and D travel together */
        if (lay) copy_rows(ybuf, wdt, Y->data, xdt, S * D, B, H, 1);
        else copy_rows(ybuf, wdt, Y->data, xdt, 1, 1, S * D * B * H, 0);
    }
    kiln_tensor *state_out[2] = {Yh, Yc};
    void *state_buf[2] = {hbuf, cbuf};
    for (int k = 0; k < 2; k++) {
        if (!state_out[k] || !state_buf[k]) continue;
        if (lay) copy_rows(state_buf[k], wdt, state_out[k]->data, xdt, D, B, H, 1);
        else copy_rows(state_buf[k], wdt, state_out[k]->data, xdt, 1, 1, D * B * H, 0);
    }
    goto done;
oom:
    st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for %lldx%lld steps of hidden size %lld",
                   (long long)S, (long long)B, (long long)H);
done:
    for (int k = 0; k < 8; k++) free(own[k]);
    free(lens), free(xbuf), free(hbuf), free(cbuf), free(ybuf);
    return st;
}

static kiln_status rnn_init(kiln_ctx *ctx) { return init_cell(ctx, RNN_CELL_SIMPLE); }
static kiln_status rnn_infer(kiln_ctx *ctx) { return infer_cell(ctx, RNN_CELL_SIMPLE); }
static kiln_status rnn_compute(kiln_ctx *ctx) { return compute_cell(ctx, RNN_CELL_SIMPLE); }
static kiln_status lstm_init(kiln_ctx *ctx) { return init_cell(ctx, RNN_CELL_LSTM); }
static kiln_status lstm_infer(kiln_ctx *ctx) { return infer_cell(ctx, RNN_CELL_LSTM); }
static kiln_status lstm_compute(kiln_ctx *ctx) { return compute_cell(ctx, RNN_CELL_LSTM); }
static kiln_status gru_init(kiln_ctx *ctx) { return init_cell(ctx, RNN_CELL_GRU); }
static kiln_status gru_infer(kiln_ctx *ctx) { return infer_cell(ctx, RNN_CELL_GRU); }
static kiln_status gru_compute(kiln_ctx *ctx) { return compute_cell(ctx, RNN_CELL_GRU); }

/* One entry each serves every opset: the versions differ only in attributes (output_sequence
 * in 1, linear_before_reset from GRU-3, layout from 14) and in allowed types. */
const kiln_op kiln_ops_rnn[] = {
    {"", "RNN", 1, KILN_OP_PREPACK, rnn_init, rnn_infer, rnn_compute, rnn_fini},
    {"", "LSTM", 1, KILN_OP_PREPACK, lstm_init, lstm_infer, lstm_compute, rnn_fini},
    {"", "GRU", 1, KILN_OP_PREPACK, gru_init, gru_infer, gru_compute, rnn_fini},
    {0},
};
