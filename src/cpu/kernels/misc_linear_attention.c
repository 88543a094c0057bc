/* LinearAttention (opset 27): the recurrent linear-attention family used by Gated DeltaNet and
 * friends. Per KV head a (d_k x d_v) state S is carried through the sequence:
 *   linear       S = S + k v^T
 *   gated        S = exp(g) S + k v^T
 *   delta        S = S + k (beta (v - S^T k))^T
 *   gated_delta  S = exp(g) S, then the delta update
 * and each query head of the KV head's group reads o = scale q^T S. Q/K/V are packed
 * (B, T, H*D); the state is (B, H_kv, d_k, d_v). Everything is accumulated in float32 as the ONNX
 * reference does; chunk_size is a tuning hint for chunked GPU algorithms and does not change the
 * result, so the sequential recurrence is exact. Work is split over (batch, KV head) pairs, whose
 * states are independent. */
#include "../../ops/op.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* misc_util.c */
int kmisc_is_float(int dt, int allow_double);
float *kmisc_f32_copy(const kiln_tensor *t);
void kmisc_store_all_f32(kiln_tensor *t, const float *v, int64_t n);
int kmisc_static_unknown(kiln_ctx *ctx, int dtype);

enum { IN_Q, IN_K, IN_V, IN_PAST, IN_DECAY, IN_BETA };
enum { OUT_Y, OUT_STATE };
enum { RULE_LINEAR, RULE_GATED, RULE_DELTA, RULE_GATED_DELTA };

typedef struct la_cfg {
    const kiln_tensor *q, *k, *v, *past, *decay, *beta;
    int rule, gating, delta;
    int64_t B, T, Hq, Hkv, dk, dv;
    int decay_per_key; /* decay is (B, T, H_kv*d_k) rather than (B, T, H_kv) */
    int beta_shared;   /* beta is (B, T, 1): one rate for all heads */
    float scale;
    int state_dtype;
} la_cfg;

static kiln_tensor *opt_input(kiln_ctx *ctx, int i) { return i < ctx->n_in ? kiln_input(ctx, i) : NULL; }

static kiln_status parse_rule(kiln_ctx *ctx, int *rule) {
    const char *r = kiln_attr_string(ctx->node, "update_rule", "gated_delta");
    static const char *names[] = {"linear", "gated", "delta", "gated_delta"};
    for (int i = 0; i < 4; i++)
        if (!strcmp(r, names[i])) {
            *rule = i;
            return KILN_OK;
        }
    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                     "update_rule '%s' is not one of 'linear', 'gated', 'delta', 'gated_delta'", r);
}

static kiln_status check_3d(kiln_ctx *ctx, const kiln_tensor *t, const char *name, int64_t B,
                            int64_t T) {
    char b[96];
    if (t->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be rank 3 (B, T, H*D), got %s", name,
                         kiln_shape_str(t, b, sizeof b));
    if (t->dims[0] != B || t->dims[1] != T)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "%s %s must have query's batch %lld and sequence length %lld", name,
                         kiln_shape_str(t, b, sizeof b), (long long)B, (long long)T);
    return KILN_OK;
}

static kiln_status parse(kiln_ctx *ctx, la_cfg *c) {
    memset(c, 0, sizeof *c);
    char b[96];
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, IN_Q, &t));
    c->q = t;
    KILN_TRY(kiln_need_input(ctx, IN_K, &t));
    c->k = t;
    KILN_TRY(kiln_need_input(ctx, IN_V, &t));
    c->v = t;
    c->past = opt_input(ctx, IN_PAST);
    c->decay = opt_input(ctx, IN_DECAY);
    c->beta = opt_input(ctx, IN_BETA);
    if (!kmisc_is_float(c->q->dtype, 0))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "query has element type %s; expected float, float16 or bfloat16",
                         kiln_dtype_name(c->q->dtype));
    const kiln_tensor *same[] = {c->k, c->v, c->decay, c->beta};
    static const char *same_names[] = {"key", "value", "decay", "beta"};
    for (int i = 0; i < 4; i++)
        if (same[i] && same[i]->dtype != c->q->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has element type %s; expected query's %s",
                             same_names[i], kiln_dtype_name(same[i]->dtype), kiln_dtype_name(c->q->dtype));
    if (c->past && !kmisc_is_float(c->past->dtype, 0))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "past_state has element type %s; expected float, float16 or bfloat16",
                         kiln_dtype_name(c->past->dtype));
    c->state_dtype = c->past ? c->past->dtype : c->q->dtype;

    KILN_TRY(parse_rule(ctx, &c->rule));
    c->gating = c->rule == RULE_GATED || c->rule == RULE_GATED_DELTA;
    c->delta = c->rule == RULE_DELTA || c->rule == RULE_GATED_DELTA;
    const char *rule = kiln_attr_string(ctx->node, "update_rule", "gated_delta");
    if (c->gating != (c->decay != NULL))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "update_rule '%s' %s the decay input", rule,
                         c->gating ? "requires" : "forbids");
    if (c->delta != (c->beta != NULL))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "update_rule '%s' %s the beta input", rule,
                         c->delta ? "requires" : "forbids");

    if (!kiln_has_attr(ctx->node, "q_num_heads") || !kiln_has_attr(ctx->node, "kv_num_heads"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "attributes q_num_heads and kv_num_heads are required");
    c->Hq = kiln_attr_int(ctx->node, "q_num_heads", 0);
    c->Hkv = kiln_attr_int(ctx->node, "kv_num_heads", 0);
    if (c->Hq <= 0 || c->Hkv <= 0 || c->Hq % c->Hkv)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "q_num_heads (%lld) must be a positive multiple of kv_num_heads (%lld)",
                         (long long)c->Hq, (long long)c->Hkv);

    if (c->q->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "query must be rank 3 (B, T, H*D), got %s",
                         kiln_shape_str(c->q, b, sizeof b));
    c->B = c->q->dims[0];
    c->T = c->q->dims[1];
    KILN_TRY(check_3d(ctx, c->k, "key", c->B, c->T));
    KILN_TRY(check_3d(ctx, c->v, "value", c->B, c->T));
    if (c->q->dims[2] % c->Hq)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "query's last dimension %lld is not divisible by q_num_heads %lld",
                         (long long)c->q->dims[2], (long long)c->Hq);
    c->dk = c->q->dims[2] / c->Hq;
    if (c->k->dims[2] != c->Hkv * c->dk)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "key's last dimension %lld must be kv_num_heads*d_k = %lld*%lld",
                         (long long)c->k->dims[2], (long long)c->Hkv, (long long)c->dk);
    if (c->v->dims[2] % c->Hkv)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "value's last dimension %lld is not divisible by kv_num_heads %lld",
                         (long long)c->v->dims[2], (long long)c->Hkv);
    c->dv = c->v->dims[2] / c->Hkv;

    if (c->past) {
        const int64_t *d = c->past->dims;
        if (c->past->rank != 4 || d[0] != c->B || d[1] != c->Hkv || d[2] != c->dk || d[3] != c->dv)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past_state %s must be (B, kv_num_heads, d_k, d_v) = (%lld, %lld, %lld, %lld)",
                             kiln_shape_str(c->past, b, sizeof b), (long long)c->B, (long long)c->Hkv,
                             (long long)c->dk, (long long)c->dv);
    }
    if (c->decay) {
        KILN_TRY(check_3d(ctx, c->decay, "decay", c->B, c->T));
        int64_t last = c->decay->dims[2];
        if (last == c->Hkv * c->dk && last != c->Hkv)
            c->decay_per_key = 1;
        else if (last != c->Hkv)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "decay's last dimension %lld must be kv_num_heads (%lld) or "
                             "kv_num_heads*d_k (%lld)", (long long)last, (long long)c->Hkv,
                             (long long)(c->Hkv * c->dk));
    }
    if (c->beta) {
        KILN_TRY(check_3d(ctx, c->beta, "beta", c->B, c->T));
        int64_t last = c->beta->dims[2];
        if (last != c->Hkv && last != 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "beta's last dimension %lld must be kv_num_heads (%lld) or 1",
                             (long long)last, (long long)c->Hkv);
        c->beta_shared = last == 1 && c->Hkv != 1;
    }
    float s = kiln_attr_float(ctx->node, "scale", 0.0f);
    c->scale = s == 0.0f ? 1.0f / sqrtf((float)c->dk) : s;
    if (c->dk == 0) c->scale = 1.0f;
    return KILN_OK;
}

kiln_status kmisc_linear_attention_infer(kiln_ctx *ctx) {
    const kiln_tensor *q = kiln_input(ctx, IN_Q);
    if (kmisc_static_unknown(ctx, q ? q->dtype : KILN_DTYPE_FLOAT)) return KILN_OK;
    la_cfg c;
    KILN_TRY(parse(ctx, &c));
    int64_t yd[3] = {c.B, c.T, c.Hq * c.dv}, sd[4] = {c.B, c.Hkv, c.dk, c.dv};
    KILN_TRY(kiln_set_output(ctx, OUT_Y, c.q->dtype, 3, yd));
    if (ctx->n_out > OUT_STATE && kiln_output(ctx, OUT_STATE))
        KILN_TRY(kiln_set_output(ctx, OUT_STATE, c.state_dtype, 4, sd));
    return KILN_OK;
}

/* float32 working copies of every input, and the outputs in float32 */
typedef struct la_job {
    const la_cfg *c;
    const float *q, *k, *v, *decay, *beta;
    float *state; /* (B, H_kv, d_k, d_v), starts as past_state or zeros */
    float *y;     /* (B, T, H_q*d_v) */
    float *scratch; /* d_v floats per (batch, KV head) pair */
} la_job;

/* One (batch, KV head) pair through the whole sequence. */
static void la_run_head(const la_job *j, int64_t bh, float *tmp) {
    const la_cfg *c = j->c;
    int64_t b = bh / c->Hkv, h = bh % c->Hkv, dk = c->dk, dv = c->dv, group = c->Hq / c->Hkv;
    float *S = j->state + bh * dk * dv;
    for (int64_t t = 0; t < c->T; t++) {
        int64_t row = b * c->T + t;
        const float *k = j->k + row * c->Hkv * dk + h * dk;
        const float *v = j->v + row * c->Hkv * dv + h * dv;
        if (c->gating) {
            /* S <- exp(g) S, one factor per key row (per-key decay) or for the whole head */
            const float *g = j->decay + row * c->decay->dims[2];
            for (int64_t d = 0; d < dk; d++) {
                float f = expf(c->decay_per_key ? g[h * dk + d] : g[h]);
                for (int64_t m = 0; m < dv; m++) S[d * dv + m] *= f;
            }
        }
        const float *w = v; /* what gets written: v, or beta (v - S^T k) for the delta rules */
        if (c->delta) {
            float beta = j->beta[row * c->beta->dims[2] + (c->beta->dims[2] == 1 ? 0 : h)];
            for (int64_t m = 0; m < dv; m++) tmp[m] = 0.0f;
            for (int64_t d = 0; d < dk; d++)
                for (int64_t m = 0; m < dv; m++) tmp[m] += S[d * dv + m] * k[d];
            for (int64_t m = 0; m < dv; m++) tmp[m] = beta * (v[m] - tmp[m]);
            w = tmp;
        }
        for (int64_t d = 0; d < dk; d++)
            for (int64_t m = 0; m < dv; m++) S[d * dv + m] += k[d] * w[m];
        /* read: every query head of this KV head's group */
        for (int64_t gq = 0; gq < group; gq++) {
            int64_t hq = h * group + gq;
            const float *q = j->q + row * c->Hq * dk + hq * dk;
            float *y = j->y + row * c->Hq * dv + hq * dv;
            for (int64_t m = 0; m < dv; m++) y[m] = 0.0f;
            for (int64_t d = 0; d < dk; d++)
                for (int64_t m = 0; m < dv; m++) y[m] += q[d] * S[d * dv + m];
            for (int64_t m = 0; m < dv; m++) y[m] *= c->scale;
        }
    }
}

static void la_range(void *arg, int64_t begin, int64_t end) {
    const la_job *j = arg;
    for (int64_t bh = begin; bh < end; bh++) la_run_head(j, bh, j->scratch + bh * j->c->dv);
}

kiln_status kmisc_linear_attention_compute(kiln_ctx *ctx) {
    la_cfg c;
    KILN_TRY(parse(ctx, &c));
    kiln_tensor *y = kiln_output(ctx, OUT_Y);
    kiln_tensor *st = ctx->n_out > OUT_STATE ? kiln_output(ctx, OUT_STATE) : NULL;
    int64_t n_state = c.B * c.Hkv * c.dk * c.dv, n_y = c.B * c.T * c.Hq * c.dv;
    la_job j = {.c = &c};
    float *q = kmisc_f32_copy(c.q), *k = kmisc_f32_copy(c.k), *v = kmisc_f32_copy(c.v);
    float *decay = c.decay ? kmisc_f32_copy(c.decay) : NULL, *beta = c.beta ? kmisc_f32_copy(c.beta) : NULL;
    float *state = c.past ? kmisc_f32_copy(c.past) : calloc((size_t)(n_state > 0 ? n_state : 1), sizeof(float));
    float *yf = malloc((size_t)(n_y > 0 ? n_y : 1) * sizeof(float));
    float *scratch = malloc((size_t)(c.B * c.Hkv * c.dv > 0 ? c.B * c.Hkv * c.dv : 1) * sizeof(float));
    kiln_status ret = KILN_OK;
    if (!q || !k || !v || (c.decay && !decay) || (c.beta && !beta) || !state || !yf || !scratch) {
        ret = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    } else {
        j.q = q, j.k = k, j.v = v, j.decay = decay, j.beta = beta, j.state = state, j.y = yf, j.scratch = scratch;
        int64_t work = c.T * c.dk * c.dv * (c.Hq / c.Hkv + 2);
        kiln_parallel_for(ctx, c.B * c.Hkv, work > 32768 ? 1 : (32768 / (work + 1)) + 1, la_range, &j);
        if (y) kmisc_store_all_f32(y, yf, n_y);
        if (st) kmisc_store_all_f32(st, state, n_state);
    }
    free(q), free(k), free(v), free(decay), free(beta), free(state), free(yf), free(scratch);
    return ret;
}

