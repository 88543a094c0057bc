/* com.microsoft PackedAttention and PackedMultiHeadAttention (spec §4, §5): padding-free batches
 * where sequence b owns token rows [cu[b], cu[b+1]) of every tensor. Each sequence attends over
 * its own tokens only (non-causal self-attention); the relative position bias is indexed in
 * padded coordinates, which for right padding are the positions inside the sequence. */
#include "attention_common.h"

#include <stdlib.h>
#include <string.h>

typedef struct packed_cfg {
    const kiln_tensor *q, *k, *v, *weights, *bias, *offsets, *cu, *rpb;
    int64_t tokens, B, S, N, Di, D, Dv, H, Hv;
    int qkv_packed;
    int dtype; /* T: float32, float16 or bfloat16 */
    float scale;
} packed_cfg;

/* token_offset (B, S), cumulative_sequence_length (B + 1): shapes, and the lengths when the data
 * is there (they decide which rows are read). */
static kiln_status check_packing(kiln_ctx *ctx, packed_cfg *c, int off_idx, int cu_idx) {
    char b1[128];
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, off_idx, &t));
    c->offsets = t;
    KILN_TRY(kiln_need_input(ctx, cu_idx, &t));
    c->cu = t;
    if (c->offsets->dtype != KILN_DTYPE_INT32 || c->offsets->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "token_offset must be int32 (B, S), got %s %s",
                         kiln_dtype_name(c->offsets->dtype), kattn_shape(c->offsets, b1, sizeof b1));
    c->B = c->offsets->dims[0];
    c->S = c->offsets->dims[1];
    if (c->cu->dtype != KILN_DTYPE_INT32 || c->cu->rank != 1 || c->cu->dims[0] != c->B + 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "cumulative_sequence_length must be int32 (B + 1) = (%lld), got %s %s",
                         (long long)(c->B + 1), kiln_dtype_name(c->cu->dtype),
                         kattn_shape(c->cu, b1, sizeof b1));
    if (c->tokens > c->B * c->S)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "%lld tokens do not fit in token_offset's B*S = %lld slots",
                         (long long)c->tokens, (long long)(c->B * c->S));
    if (kattn_host_readable(c->cu)) { /* device values are validated by their provider's kernel */
        const int32_t *cu = c->cu->data;
        if (cu[0] != 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "cumulative_sequence_length[0] must be 0, got %d", cu[0]);
        for (int64_t b = 0; b < c->B; b++) {
            int64_t len = (int64_t)cu[b + 1] - cu[b];
            if (len < 0 || len > c->S)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "sequence %lld has length %lld, outside [0, S=%lld] "
                                 "(cumulative_sequence_length must be non-decreasing)",
                                 (long long)b, (long long)len, (long long)c->S);
        }
        if (cu[c->B] != c->tokens)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "cumulative_sequence_length[B] = %d but there are %lld tokens",
                             cu[c->B], (long long)c->tokens);
    }
    return KILN_OK;
}

static kiln_status check_rpb(kiln_ctx *ctx, packed_cfg *c) {
    char b1[128];
    if (!c->rpb) return KILN_OK;
    const int64_t *d = c->rpb->dims;
    if (c->rpb->dtype != c->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "relative_position_bias has element type %s, the other inputs %s",
                         kiln_dtype_name(c->rpb->dtype), kiln_dtype_name(c->dtype));
    if (c->rpb->rank != 4 || (d[0] != c->B && d[0] != 1) || d[1] != c->N || d[2] != c->S ||
        d[3] != c->S)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "relative_position_bias must be (B or 1, N, S, S) = (%lld, %lld, %lld, %lld), "
                         "got %s", (long long)c->B, (long long)c->N, (long long)c->S,
                         (long long)c->S, kattn_shape(c->rpb, b1, sizeof b1));
    return KILN_OK;
}

static kiln_status num_heads(kiln_ctx *ctx, packed_cfg *c) {
    c->N = kiln_attr_int(ctx->node, "num_heads", 0);
    if (c->N <= 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "num_heads must be > 0, got %lld", (long long)c->N);
    return KILN_OK;
}

/* ---- PackedAttention: input, weights, bias, token_offset, cu_seqlens, rpb ---- */

static kiln_status parse_packed(kiln_ctx *ctx, packed_cfg *c) {
    char b1[128];
    memset(c, 0, sizeof *c);
    kiln_tensor *t;
    KILN_TRY(num_heads(ctx, c));
    KILN_TRY(kiln_need_input(ctx, 0, &t));
    c->q = t;
    KILN_TRY(kiln_need_input(ctx, 1, &t));
    c->weights = t;
    KILN_TRY(kiln_need_input(ctx, 2, &t));
    c->bias = t;
    c->rpb = kiln_input(ctx, 5);
    static const int fl_idx[] = {0, 1, 2};
    KILN_TRY(kattn_check_float_inputs(ctx, fl_idx, 3, &c->dtype));
    if (c->q->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must be 2-D (token_count, D_i), got %s",
                         kattn_shape(c->q, b1, sizeof b1));
    c->tokens = c->q->dims[0];
    c->Di = c->q->dims[1];
    if (c->weights->rank != 2 || c->weights->dims[0] != c->Di)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "weights must be 2-D with dim 0 == input dim 1 (%lld), got %s",
                         (long long)c->Di, kattn_shape(c->weights, b1, sizeof b1));
    int64_t W = c->weights->dims[1];
    if (c->bias->rank != 1 || c->bias->dims[0] != W)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "bias must be 1-D with length == weights dim 1 (%lld), got %s", (long long)W,
                         kattn_shape(c->bias, b1, sizeof b1));
    int nq = 0;
    const int64_t *qkv = kiln_attr_ints(ctx->node, "qkv_hidden_sizes", &nq);
    if (qkv && nq > 0) {
        if (nq != 3)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "qkv_hidden_sizes must have 3 values, got %d", nq);
        for (int i = 0; i < 3; i++)
            if (qkv[i] <= 0 || qkv[i] % c->N)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "qkv_hidden_sizes[%d] = %lld must be positive and divisible by "
                                 "num_heads = %lld", i, (long long)qkv[i], (long long)c->N);
        if (qkv[0] != qkv[1])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "qkv_hidden_sizes: q and k hidden sizes must be equal, got %lld and %lld",
                             (long long)qkv[0], (long long)qkv[1]);
        if (qkv[0] + qkv[1] + qkv[2] != W)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "qkv_hidden_sizes sum to %lld but weights dim 1 is %lld",
                             (long long)(qkv[0] + qkv[1] + qkv[2]), (long long)W);
        c->D = qkv[0];
        c->Dv = qkv[2];
    } else {
        if (W % 3 || (W / 3) % c->N)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "weights dim 1 (%lld) must be 3 * hidden size with hidden size divisible "
                             "by num_heads %lld", (long long)W, (long long)c->N);
        c->D = c->Dv = W / 3;
    }
    c->H = c->D / c->N;
    c->Hv = c->Dv / c->N;
    c->scale = kattn_default_scale(kiln_attr_float(ctx->node, "scale", 0.0f), c->H);
    KILN_TRY(check_packing(ctx, c, 3, 4));
    return check_rpb(ctx, c);
}

kiln_status kattn_packed_infer(kiln_ctx *ctx) {
    static const int ins[] = {0, 1, 2, 3, 4, 5};
    const kiln_tensor *x = kiln_input(ctx, 0);
    if (kattn_static_unknown(ctx, ins, 6, x ? x->dtype : KILN_DTYPE_FLOAT)) return KILN_OK;
    packed_cfg c;
    KILN_TRY(parse_packed(ctx, &c));
    int64_t od[2] = {c.tokens, c.Dv};
    return kiln_set_output(ctx, 0, c.dtype, 2, od);
}

/* Runs the core over the packed sequences; q/k/v views are per token row (row0 = cu). */
static kiln_status run_packed(kiln_ctx *ctx, const packed_cfg *c, kattn_sdpa *p) {
    kiln_tensor *out = kiln_output(ctx, 0);
    if (!out) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output 0 is required");
    size_t nb = (size_t)(c->B ? c->B : 1);
    int64_t *row0 = malloc(sizeof(int64_t) * nb), *len = malloc(sizeof(int64_t) * nb);
    if (!row0 || !len) {
        free(row0);
        free(len);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    const int32_t *cu = c->cu->data;
    for (int64_t b = 0; b < c->B; b++) {
        row0[b] = cu[b];
        len[b] = (int64_t)cu[b + 1] - cu[b];
    }
    p->B = c->B;
    p->N = p->N_kv = c->N;
    p->S = p->T = c->S;
    p->H = c->H;
    p->Hv = c->Hv;
    p->scale = c->scale;
    p->row0 = row0;
    p->seq_len = len;
    if (c->rpb)
        p->add[0] = (kattn_addend){c->rpb->data, c->rpb->dims[0] == 1 ? 0 : c->N * c->S * c->S,
                                   c->S * c->S, c->S, c->S};
    p->out = out->data;
    p->o_sb = 0;
    p->o_sn = c->Hv;
    p->o_ss = c->Dv;
    kiln_status st = kattn_run(ctx, p);
    free(row0);
    free(len);
    return st;
}

kiln_status kattn_packed_compute(kiln_ctx *ctx) {
    if (kattn_has_half(ctx)) return kattn_compute_as_f32(ctx, kattn_packed_compute);
    packed_cfg c;
    KILN_TRY(parse_packed(ctx, &c));
    int64_t W = 2 * c.D + c.Dv;
    size_t n = (size_t)(c.tokens * W);
    float *qkv = malloc(sizeof(float) * (n ? n : 1));
    if (!qkv) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the QKV projection");
    kattn_project(ctx, c.tokens, W, c.Di, c.q->data, c.Di, c.weights->data, W, c.bias->data, qkv, W);
    kattn_sdpa p;
    memset(&p, 0, sizeof p);
    p.q = (kattn_view){qkv, 0, c.H, W};
    p.k = (kattn_view){qkv + c.D, 0, c.H, W};
    p.v = (kattn_view){qkv + 2 * c.D, 0, c.Hv, W};
    kiln_status st = run_packed(ctx, &c, &p);
    free(qkv);
    return st;
}

/* ---- PackedMultiHeadAttention: query, key, value, bias, token_offset, cu_seqlens, rpb ---- */

static kiln_status parse_packed_mha(kiln_ctx *ctx, packed_cfg *c) {
    char b1[128], b2[128];
    memset(c, 0, sizeof *c);
    kiln_tensor *t;
    KILN_TRY(num_heads(ctx, c));
    KILN_TRY(kiln_need_input(ctx, 0, &t));
    c->q = t;
    c->k = kiln_input(ctx, 1);
    c->v = kiln_input(ctx, 2);
    c->bias = kiln_input(ctx, 3);
    c->rpb = kiln_input(ctx, 6);
    static const int fl_idx[] = {0, 1, 2, 3};
    KILN_TRY(kattn_check_float_inputs(ctx, fl_idx, 4, &c->dtype));
    const kiln_tensor *q = c->q;
    if (q->rank == 4) {
        if (c->k || c->v)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "key and value must be absent when query is packed QKV (4-D)");
        if (q->dims[1] != c->N || q->dims[2] != 3)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "packed QKV query must be (token_count, N=%lld, 3, H), got %s",
                             (long long)c->N, kattn_shape(q, b1, sizeof b1));
        c->qkv_packed = 1;
        c->H = c->Hv = q->dims[3];
        c->D = c->Dv = c->N * c->H;
    } else if (q->rank == 2) {
        if (!c->k || !c->v)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "key and value are required when query is 2-D");
        if (!kiln_shape_equal(c->k, q))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "key shape %s must equal query shape %s",
                             kattn_shape(c->k, b1, sizeof b1), kattn_shape(q, b2, sizeof b2));
        c->D = q->dims[1];
        if (c->D % c->N)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "query hidden size %lld is not divisible by num_heads %lld",
                             (long long)c->D, (long long)c->N);
        if (c->v->rank != 2 || c->v->dims[0] != q->dims[0] || c->v->dims[1] % c->N)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "value must be (token_count=%lld, D_v) with D_v divisible by num_heads, "
                             "got %s", (long long)q->dims[0], kattn_shape(c->v, b1, sizeof b1));
        c->H = c->D / c->N;
        c->Dv = c->v->dims[1];
        c->Hv = c->Dv / c->N;
    } else {
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "query must be 2-D (token_count, D) or 4-D packed QKV (token_count, N, 3, H), "
                         "got %s", kattn_shape(q, b1, sizeof b1));
    }
    c->tokens = q->dims[0];
    if (c->bias && (c->bias->rank != 1 || c->bias->dims[0] != 2 * c->D + c->Dv))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "bias must be 1-D of length D + D + D_v = %lld, got %s",
                         (long long)(2 * c->D + c->Dv), kattn_shape(c->bias, b1, sizeof b1));
    c->scale = kattn_default_scale(kiln_attr_float(ctx->node, "scale", 0.0f), c->H);
    KILN_TRY(check_packing(ctx, c, 4, 5));
    return check_rpb(ctx, c);
}

kiln_status kattn_packed_mha_infer(kiln_ctx *ctx) {
    static const int ins[] = {0, 1, 2, 3, 4, 5, 6};
    const kiln_tensor *q = kiln_input(ctx, 0);
    if (kattn_static_unknown(ctx, ins, 7, q ? q->dtype : KILN_DTYPE_FLOAT)) return KILN_OK;
    packed_cfg c;
    KILN_TRY(parse_packed_mha(ctx, &c));
    int64_t od[2] = {c.tokens, c.Dv};
    return kiln_set_output(ctx, 0, c.dtype, 2, od);
}

kiln_status kattn_packed_mha_compute(kiln_ctx *ctx) {
    if (kattn_has_half(ctx)) return kattn_compute_as_f32(ctx, kattn_packed_mha_compute);
    packed_cfg c;
    KILN_TRY(parse_packed_mha(ctx, &c));
    kattn_sdpa p;
    memset(&p, 0, sizeof p);
    int64_t N = c.N, H = c.H;
    const float *qd = c.q->data;
    if (c.qkv_packed) {
        p.q = (kattn_view){qd, 0, 3 * H, N * 3 * H};
        p.k = (kattn_view){qd + H, 0, 3 * H, N * 3 * H};
        p.v = (kattn_view){qd + 2 * H, 0, 3 * H, N * 3 * H};
    } else {
        p.q = (kattn_view){qd, 0, H, c.D};
        p.k = (kattn_view){c.k->data, 0, H, c.D};
        p.v = (kattn_view){c.v->data, 0, c.Hv, c.Dv};
    }
    float *ws = NULL;
    if (c.bias) { /* one (token, N, H | H | H_v) copy with the bias added, laid out like Q|K|V */
        size_t per = (size_t)(2 * c.D + c.Dv);
        size_t n = (size_t)c.tokens * per;
        ws = malloc(sizeof(float) * (n ? n : 1));
        if (!ws) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for biased inputs");
        const float *bias = c.bias->data;
        float *qb = ws, *kb = ws + c.tokens * c.D, *vb = kb + c.tokens * c.D;
        kattn_gather_bsnh(ctx, qb, &p.q, 1, N, c.tokens, H, bias);
        kattn_gather_bsnh(ctx, kb, &p.k, 1, N, c.tokens, H, bias + c.D);
        kattn_gather_bsnh(ctx, vb, &p.v, 1, N, c.tokens, c.Hv, bias + 2 * c.D);
        p.q = (kattn_view){qb, 0, H, c.D};
        p.k = (kattn_view){kb, 0, H, c.D};
        p.v = (kattn_view){vb, 0, c.Hv, c.Dv};
    }
    kiln_status st = run_packed(ctx, &c, &p);
    free(ws);
    return st;
}
