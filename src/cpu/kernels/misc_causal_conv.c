/* CausalConvWithState (opset 27): depthwise causal 1-D convolution with a carried state, the
 * Mamba / Gated DeltaNet preprocessing step. The input (B, C, L) is left-padded with past_state
 * (B, C, k-1) (zeros when absent), convolved per channel with weight (C, 1, k) plus bias, optionally
 * followed by SiLU (= swish), and present_state is the last k-1 positions of the padded input.
 * Arithmetic is float32; the convolution result is rounded to the tensor type before the
 * activation, as the ONNX reference does. Rows (batch, channel) run in parallel. */
#include "../../ops/op.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* misc_util.c */
int kmisc_is_float(int dt, int allow_double);
float kmisc_load_f32(int dt, const void *p, int64_t i);
void kmisc_store_f32(int dt, void *p, int64_t i, float v);
int kmisc_static_unknown(kiln_ctx *ctx, int dtype);

enum { IN_X, IN_W, IN_BIAS, IN_PAST };
enum { OUT_Y, OUT_STATE };

typedef struct cc_cfg {
    const kiln_tensor *x, *w, *bias, *past;
    int64_t B, C, L, K;
    int silu;
} cc_cfg;

static kiln_status parse(kiln_ctx *ctx, cc_cfg *c) {
    memset(c, 0, sizeof *c);
    char b1[96], b2[96];
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, IN_X, &t));
    c->x = t;
    KILN_TRY(kiln_need_input(ctx, IN_W, &t));
    c->w = t;
    c->bias = ctx->n_in > IN_BIAS ? kiln_input(ctx, IN_BIAS) : NULL;
    c->past = ctx->n_in > IN_PAST ? kiln_input(ctx, IN_PAST) : NULL;
    const char *act = kiln_attr_string(ctx->node, "activation", "none");
    if (!strcmp(act, "silu") || !strcmp(act, "swish"))
        c->silu = 1;
    else if (strcmp(act, "none"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "activation '%s' is not one of 'none', 'silu', 'swish'", act);
    if (!kmisc_is_float(c->x->dtype, 0))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "input has element type %s; expected float, float16 or bfloat16",
                         kiln_dtype_name(c->x->dtype));
    const kiln_tensor *others[] = {c->w, c->bias, c->past};
    static const char *names[] = {"weight", "bias", "past_state"};
    for (int i = 0; i < 3; i++)
        if (others[i] && others[i]->dtype != c->x->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has element type %s; expected input's %s",
                             names[i], kiln_dtype_name(others[i]->dtype), kiln_dtype_name(c->x->dtype));
    if (c->x->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input must be rank 3 (batch, channels, length), got %s",
                         kiln_shape_str(c->x, b1, sizeof b1));
    c->B = c->x->dims[0], c->C = c->x->dims[1], c->L = c->x->dims[2];
    if (c->w->rank != 3 || c->w->dims[0] != c->C || c->w->dims[1] != 1 || c->w->dims[2] < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "weight %s must be (channels=%lld, 1, k) with k >= 1 for input %s",
                         kiln_shape_str(c->w, b1, sizeof b1), (long long)c->C,
                         kiln_shape_str(c->x, b2, sizeof b2));
    c->K = c->w->dims[2];
    if (c->bias && (c->bias->rank != 1 || c->bias->dims[0] != c->C))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias %s must be (channels=%lld)",
                         kiln_shape_str(c->bias, b1, sizeof b1), (long long)c->C);
    if (c->past && (c->past->rank != 3 || c->past->dims[0] != c->B || c->past->dims[1] != c->C ||
                    c->past->dims[2] != c->K - 1))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "past_state %s must be (batch=%lld, channels=%lld, k-1=%lld)",
                         kiln_shape_str(c->past, b1, sizeof b1), (long long)c->B, (long long)c->C,
                         (long long)(c->K - 1));
    return KILN_OK;
}

kiln_status kmisc_causal_conv_infer(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, IN_X);
    if (kmisc_static_unknown(ctx, x ? x->dtype : KILN_DTYPE_FLOAT)) return KILN_OK;
    cc_cfg c;
    KILN_TRY(parse(ctx, &c));
    int64_t yd[3] = {c.B, c.C, c.L}, sd[3] = {c.B, c.C, c.K - 1};
    KILN_TRY(kiln_set_output(ctx, OUT_Y, c.x->dtype, 3, yd));
    if (ctx->n_out > OUT_STATE && kiln_output(ctx, OUT_STATE))
        KILN_TRY(kiln_set_output(ctx, OUT_STATE, c.x->dtype, 3, sd));
    return KILN_OK;
}

typedef struct cc_job {
    const cc_cfg *c;
    kiln_tensor *y, *state;
} cc_job;

/* Element p of the padded row (past_state then input) of row r = b*C + ch. */
static float padded_at(const cc_cfg *c, int64_t r, int64_t p) {
    int64_t pad = c->K - 1;
    if (p >= pad) return kmisc_load_f32(c->x->dtype, c->x->data, r * c->L + p - pad);
    return c->past ? kmisc_load_f32(c->past->dtype, c->past->data, r * pad + p) : 0.0f;
}

static void cc_rows(void *arg, int64_t begin, int64_t end) {
    const cc_job *j = arg;
    const cc_cfg *c = j->c;
    int dt = c->x->dtype;
    int64_t K = c->K, pad = K - 1, n = c->L + pad;
    float *row = malloc((size_t)n * sizeof(float)), wk[64];
    float *w = K <= 64 ? wk : malloc((size_t)K * sizeof(float));
    for (int64_t r = begin; r < end; r++) {
        int64_t ch = r % c->C;
        if (row && w) {
            for (int64_t p = 0; p < n; p++) row[p] = padded_at(c, r, p);
            for (int64_t i = 0; i < K; i++) w[i] = kmisc_load_f32(dt, c->w->data, ch * K + i);
        }
        float bias = c->bias ? kmisc_load_f32(dt, c->bias->data, ch) : 0.0f;
        for (int64_t l = 0; j->y && l < c->L; l++) {
            float acc = bias;
            if (row && w)
                for (int64_t i = 0; i < K; i++) acc += w[i] * row[l + i];
            else /* no scratch memory: read straight from the tensors (slow, still right) */
                for (int64_t i = 0; i < K; i++)
                    acc += kmisc_load_f32(dt, c->w->data, ch * K + i) * padded_at(c, r, l + i);
            kmisc_store_f32(dt, j->y->data, r * c->L + l, acc);
            if (c->silu) {
                float v = kmisc_load_f32(dt, j->y->data, r * c->L + l); /* rounded to the type */
                kmisc_store_f32(dt, j->y->data, r * c->L + l, v / (1.0f + expf(-v)));
            }
        }
        for (int64_t p = 0; j->state && p < pad; p++)
            kmisc_store_f32(dt, j->state->data, r * pad + p, padded_at(c, r, c->L + p));
    }
    if (w != wk) free(w);
    free(row);
}

kiln_status kmisc_causal_conv_compute(kiln_ctx *ctx) {
    cc_cfg c;
    KILN_TRY(parse(ctx, &c));
    cc_job j = {&c, kiln_output(ctx, OUT_Y), ctx->n_out > OUT_STATE ? kiln_output(ctx, OUT_STATE) : NULL};
    int64_t per_row = (c.L + c.K) * c.K;
    kiln_parallel_for(ctx, c.B * c.C, per_row > 16384 ? 1 : 16384 / (per_row + 1) + 1, cc_rows, &j);
    return KILN_OK;
}
