/* FlexAttention (ai.onnx.preview, version 1): scaled dot-product attention over rank-4 Q/K/V with
 * grouped-query heads and two optional modifier subgraphs, score_mod (applied to the scaled scores
 * Q K^T) and prob_mod (applied to the softmax output), each taking and returning one
 * (B, Hq, L, S) tensor of the softmax precision. Arithmetic is done in double and rounded to the
 * tensor type (scores) and to the softmax precision (scores, probabilities, V) at the points where
 * the ONNX reference casts, so float16 results match it. Without modifiers every (b, h, l) row is
 * independent and runs start to finish in one task; with them the whole score tensor is built
 * first so the subgraph sees it at once. */
#include "../../core/runner.h"
#include "../../ops/op.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

/* misc_util.c */
int kmisc_static_unknown(kiln_ctx *ctx, int dtype);

typedef struct fa_cfg {
    const kiln_tensor *q, *k, *v;
    int64_t B, Hq, Hkv, L, S, E, Ev;
    double scale;
    int prec; /* softmax precision: float, float16, bfloat16 or double */
    kiln_graph *score_mod, *prob_mod;
} fa_cfg;

static int fa_float_type(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_FLOAT16 || dt == KILN_DTYPE_BFLOAT16 ||
           dt == KILN_DTYPE_DOUBLE;
}

/* v rounded to element type dt (double leaves it as is). */
static double round_to(int dt, double v) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return (float)v;
    case KILN_DTYPE_FLOAT16: return kiln_f16_to_f32(kiln_f32_to_f16((float)v));
    case KILN_DTYPE_BFLOAT16: return kiln_bf16_to_f32(kiln_f32_to_bf16((float)v));
    default: return v;
    }
}

static kiln_status check_mod(kiln_ctx *ctx, kiln_graph *g, const char *name) {
    if (g && (g->n_inputs != 1 || g->n_outputs != 1))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "%s must have exactly one input and one output, it has %d and %d", name,
                         g->n_inputs, g->n_outputs);
    return KILN_OK;
}

static kiln_status parse(kiln_ctx *ctx, fa_cfg *c) {
    memset(c, 0, sizeof *c);
    char b1[96], b2[96], b3[96];
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, 0, &t));
    c->q = t;
    KILN_TRY(kiln_need_input(ctx, 1, &t));
    c->k = t;
    KILN_TRY(kiln_need_input(ctx, 2, &t));
    c->v = t;
    if (!fa_float_type(c->q->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "Q has element type %s; expected float, float16, bfloat16 or double",
                         kiln_dtype_name(c->q->dtype));
    if (c->k->dtype != c->q->dtype || c->v->dtype != c->q->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Q, K and V must share one element type, got %s, %s, %s",
                         kiln_dtype_name(c->q->dtype), kiln_dtype_name(c->k->dtype),
                         kiln_dtype_name(c->v->dtype));
    const kiln_tensor *q = c->q, *k = c->k, *v = c->v;
    if (q->rank != 4 || k->rank != 4 || v->rank != 4)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Q, K and V must be rank 4, got %s, %s, %s",
                         kiln_shape_str(q, b1, sizeof b1), kiln_shape_str(k, b2, sizeof b2),
                         kiln_shape_str(v, b3, sizeof b3));
    c->B = q->dims[0], c->Hq = q->dims[1], c->L = q->dims[2], c->E = q->dims[3];
    c->Hkv = k->dims[1], c->S = k->dims[2], c->Ev = v->dims[3];
    if (k->dims[0] != c->B || v->dims[0] != c->B || v->dims[1] != c->Hkv || v->dims[2] != c->S ||
        k->dims[3] != c->E)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "shapes do not fit Q (B, Hq, L, E), K (B, Hkv, S, E), V (B, Hkv, S, Ev): "
                         "%s, %s, %s", kiln_shape_str(q, b1, sizeof b1), kiln_shape_str(k, b2, sizeof b2),
                         kiln_shape_str(v, b3, sizeof b3));
    if (c->Hkv <= 0 || c->Hq % c->Hkv)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "Q's head count %lld must be a multiple of K/V's %lld", (long long)c->Hq,
                         (long long)c->Hkv);
    float scale = kiln_has_attr(ctx->node, "scale") ? kiln_attr_float(ctx->node, "scale", 1.0f)
                                                    : (c->E > 0 ? 1.0f / sqrtf((float)c->E) : 1.0f);
    /* The op's function body scales Q and K each by sqrt(scale) computed in float32; squaring
     * that float32 root keeps double inputs bit-compatible with it. */
    double root = (double)sqrtf(scale);
    c->scale = root * root;
    if (kiln_has_attr(ctx->node, "softmax_precision")) {
        int64_t p = kiln_attr_int(ctx->node, "softmax_precision", 0);
        if (p != KILN_DTYPE_FLOAT && p != KILN_DTYPE_FLOAT16 && p != KILN_DTYPE_BFLOAT16 &&
            p != KILN_DTYPE_DOUBLE)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "softmax_precision %lld is not float (1), float16 (10), bfloat16 (16) or "
                             "double (11)", (long long)p);
        c->prec = (int)p;
    } else {
        c->prec = q->dtype == KILN_DTYPE_DOUBLE ? KILN_DTYPE_DOUBLE : KILN_DTYPE_FLOAT;
    }
    c->score_mod = kiln_attr_graph(ctx->node, "score_mod");
    c->prob_mod = kiln_attr_graph(ctx->node, "prob_mod");
    KILN_TRY(check_mod(ctx, c->score_mod, "score_mod"));
    return check_mod(ctx, c->prob_mod, "prob_mod");
}

kiln_status kmisc_flex_attention_infer(kiln_ctx *ctx) {
    const kiln_tensor *q = kiln_input(ctx, 0);
    if (kmisc_static_unknown(ctx, q ? q->dtype : KILN_DTYPE_FLOAT)) return KILN_OK;
    fa_cfg c;
    KILN_TRY(parse(ctx, &c));
    int64_t d[4] = {c.B, c.Hq, c.L, c.Ev};
    return kiln_set_output(ctx, 0, c.v->dtype, 4, d);
}

typedef struct fa_job {
    const fa_cfg *c;
    const double *q, *k, *v; /* double copies; v already rounded to the softmax precision */
    double *scores;          /* (B*Hq*L, S): the whole tensor (modifiers) or NULL (fused rows) */
    double *row_scratch;     /* S doubles per row when fused */
    kiln_tensor *y;
    int phase;               /* with modifiers: 0 = scores, 1 = softmax, 2 = P V */
} fa_job;

static void qk_row(const fa_job *j, int64_t row, double *s) {
    const fa_cfg *c = j->c;
    int64_t bh = row / c->L, b = bh / c->Hq, h = bh % c->Hq, kvh = h / (c->Hq / c->Hkv);
    const double *q = j->q + row * c->E, *k = j->k + (b * c->Hkv + kvh) * c->S * c->E;
    for (int64_t t = 0; t < c->S; t++) {
        double acc = 0;
        for (int64_t e = 0; e < c->E; e++) acc += q[e] * k[t * c->E + e];
        s[t] = round_to(c->prec, round_to(c->q->dtype, acc * c->scale));
    }
}

static void softmax_row(const fa_cfg *c, double *s) {
    double mx = -INFINITY, sum = 0;
    for (int64_t t = 0; t < c->S; t++)
        if (s[t] > mx || isnan(s[t])) mx = s[t];
    for (int64_t t = 0; t < c->S; t++) sum += (s[t] = exp(s[t] - mx));
    for (int64_t t = 0; t < c->S; t++) s[t] = round_to(c->prec, s[t] / sum);
}

static void pv_row(const fa_job *j, int64_t row, const double *p) {
    const fa_cfg *c = j->c;
    int64_t bh = row / c->L, b = bh / c->Hq, h = bh % c->Hq, kvh = h / (c->Hq / c->Hkv);
    const double *v = j->v + (b * c->Hkv + kvh) * c->S * c->Ev;
    for (int64_t e = 0; e < c->Ev; e++) {
        double acc = 0;
        for (int64_t t = 0; t < c->S; t++) acc += p[t] * v[t * c->Ev + e];
        kiln_store_f64(c->v->dtype, j->y->data, row * c->Ev + e, round_to(c->prec, acc));
    }
}

static void fa_rows(void *arg, int64_t begin, int64_t end) {
    const fa_job *j = arg;
    for (int64_t row = begin; row < end; row++) {
        if (!j->scores) { /* fused: the row's scores live in its own scratch slice */
            double *s = j->row_scratch + row * j->c->S;
            qk_row(j, row, s);
            softmax_row(j->c, s);
            pv_row(j, row, s);
            continue;
        }
        double *s = j->scores + row * j->c->S;
        if (j->phase == 0) qk_row(j, row, s);
        else if (j->phase == 1) softmax_row(j->c, s);
        else pv_row(j, row, s);
    }
}

/* Runs modifier g on the score/probability tensor held in sc (as doubles), replacing it. */
static kiln_status run_mod(kiln_ctx *ctx, const fa_cfg *c, kiln_graph *g, const char *name, double *sc) {
    int64_t dims[4] = {c->B, c->Hq, c->L, c->S}, n = c->B * c->Hq * c->L * c->S;
    kiln_value in;
    memset(&in, 0, sizeof in);
    in.kind = KILN_KIND_TENSOR;
    kiln_tensor_set_shape(&in.t, c->prec, 4, dims);
    KILN_TRY(kiln_tensor_alloc(&in.t, ctx->err));
    for (int64_t i = 0; i < n; i++) kiln_store_f64(c->prec, in.t.data, i, sc[i]);
    kiln_value out;
    memset(&out, 0, sizeof out);
    kiln_value *ins[1] = {&in};
    kiln_status st = kiln_run_subgraph(ctx, g, 1, ins, &out);
    kiln_value_release(&in);
    if (st) return st;
    char b1[96];
    const kiln_tensor *o = &out.t;
    if (out.kind != KILN_KIND_TENSOR || !fa_float_type(o->dtype) || o->rank != 4 ||
        memcmp(o->dims, dims, sizeof dims)) {
        st = KILN_FAIL(ctx, KILN_ERR_RUNTIME,
                       "%s must return a float tensor of shape (%lld, %lld, %lld, %lld), got %s %s", name,
                       (long long)c->B, (long long)c->Hq, (long long)c->L, (long long)c->S,
                       out.kind == KILN_KIND_TENSOR ? kiln_dtype_name(o->dtype) : "a non-tensor",
                       out.kind == KILN_KIND_TENSOR ? kiln_shape_str(o, b1, sizeof b1) : "value");
    } else {
        for (int64_t i = 0; i < n; i++) sc[i] = round_to(c->prec, kiln_load_f64(o->dtype, o->data, i));
    }
    kiln_value_release(&out);
    return st;
}

static double *f64_copy(const kiln_tensor *t, int round_dt) {
    int64_t n = kiln_numel(t);
    double *d = malloc((size_t)(n > 0 ? n : 1) * sizeof(double));
    if (d)
        for (int64_t i = 0; i < n; i++) d[i] = round_to(round_dt, kiln_load_f64(t->dtype, t->data, i));
    return d;
}

kiln_status kmisc_flex_attention_compute(kiln_ctx *ctx) {
    fa_cfg c;
    KILN_TRY(parse(ctx, &c));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t rows = c.B * c.Hq * c.L, n_sc = rows * c.S;
    int mods = c.score_mod || c.prob_mod;
    fa_job j = {.c = &c, .y = y};
    double *q = f64_copy(c.q, KILN_DTYPE_DOUBLE), *k = f64_copy(c.k, KILN_DTYPE_DOUBLE);
    double *v = f64_copy(c.v, c.prec);
    double *sc = malloc((size_t)(n_sc > 0 ? n_sc : 1) * sizeof(double));
    kiln_status st = KILN_OK;
    if (!q || !k || !v || !sc) {
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    j.q = q, j.k = k, j.v = v;
    int64_t per_row = c.S * (c.E + c.Ev + 4), grain = per_row > 8192 ? 1 : 8192 / (per_row + 1) + 1;
    if (!mods) {
        j.row_scratch = sc;
        kiln_parallel_for(ctx, rows, grain, fa_rows, &j);
        goto done;
    }
    j.scores = sc;
    j.phase = 0;
    kiln_parallel_for(ctx, rows, grain, fa_rows, &j);
    if (c.score_mod && (st = run_mod(ctx, &c, c.score_mod, "score_mod", sc))) goto done;
    j.phase = 1;
    kiln_parallel_for(ctx, rows, grain, fa_rows, &j);
    if (c.prob_mod && (st = run_mod(ctx, &c, c.prob_mod, "prob_mod", sc))) goto done;
    j.phase = 2;
    kiln_parallel_for(ctx, rows, grain, fa_rows, &j);
done:
    free(q), free(k), free(v), free(sc);
    return st;
}
