/* com.microsoft Attention (spec §2): QKV projection (one sgemm over all tokens), optional KV
 * cache (past/present, or one shared (2, B, N, M, H) buffer), mask_index in every §7 format,
 * relative position bias, unidirectional. */
#include "attention_common.h"

#include <stdlib.h>
#include <string.h>

enum { IN_INPUT, IN_WEIGHTS, IN_BIAS, IN_MASK, IN_PAST, IN_RPB, IN_PAST_LEN };

typedef struct contrib_cfg {
    const kiln_tensor *input, *weights, *bias, *mask, *past, *rpb, *past_len;
    int64_t B, S, Di, D, Dv, N, H, Hv, P, T;
    int64_t M;     /* share-buffer capacity (past.dim3), else -1 */
    int share, causal;
    int dtype;     /* T: float32, float16 or bfloat16 */
    float scale, filter;
} contrib_cfg;

static kiln_status parse(kiln_ctx *ctx, contrib_cfg *c) {
    const kiln_node *node = ctx->node;
    char b1[128], b2[128];
    memset(c, 0, sizeof *c);
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, IN_INPUT, &t));
    c->input = t;
    KILN_TRY(kiln_need_input(ctx, IN_WEIGHTS, &t));
    c->weights = t;
    c->bias = kiln_input(ctx, IN_BIAS);
    c->mask = kiln_input(ctx, IN_MASK);
    c->past = kiln_input(ctx, IN_PAST);
    c->rpb = kiln_input(ctx, IN_RPB);
    c->past_len = kiln_input(ctx, IN_PAST_LEN);

    static const int fl_idx[] = {IN_INPUT, IN_WEIGHTS, IN_BIAS, IN_PAST, IN_RPB};
    KILN_TRY(kattn_check_float_inputs(ctx, fl_idx, 5, &c->dtype));

    int64_t N = kiln_attr_int(node, "num_heads", 0);
    if (N <= 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "num_heads must be > 0, got %lld", (long long)N);
    if (kiln_attr_int(node, "do_rotary", 0) != 0)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "do_rotary = 1 is not supported");
    c->N = N;
    if (c->input->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must be 3-D (B, S, D_i), got %s",
                         kattn_shape(c->input, b1, sizeof b1));
    c->B = c->input->dims[0];
    c->S = c->input->dims[1];
    c->Di = c->input->dims[2];
    if (c->weights->rank != 2 || c->weights->dims[0] != c->Di)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "weights must be 2-D with dim 0 == input dim 2 (%lld), got %s",
                         (long long)c->Di, kattn_shape(c->weights, b1, sizeof b1));
    int64_t W = c->weights->dims[1];
    if (c->bias && (c->bias->rank != 1 || c->bias->dims[0] != W))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "bias must be 1-D with length == weights dim 1 (%lld), got %s",
                         (long long)W, kattn_shape(c->bias, b1, sizeof b1));

    int nq = 0;
    const int64_t *qkv = kiln_attr_ints(node, "qkv_hidden_sizes", &nq);
    if (qkv && nq > 0) {
        if (nq != 3)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "qkv_hidden_sizes must have 3 values, got %d", nq);
        for (int i = 0; i < 3; i++)
            if (qkv[i] <= 0 || qkv[i] % N)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "qkv_hidden_sizes[%d] = %lld must be positive and divisible by "
                                 "num_heads = %lld", i, (long long)qkv[i], (long long)N);
        if (qkv[0] != qkv[1])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "qkv_hidden_sizes: q and k hidden sizes must be equal, got %lld and %lld",
                             (long long)qkv[0], (long long)qkv[1]);
        c->D = qkv[0];
        c->Dv = qkv[2];
        if (2 * c->D + c->Dv != W)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "qkv_hidden_sizes sum to %lld but weights dim 1 is %lld",
                             (long long)(2 * c->D + c->Dv), (long long)W);
    } else {
        if (W % 3)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "weights dim 1 (%lld) must be 3 * hidden size", (long long)W);
        c->D = c->Dv = W / 3;
        if (c->D % N)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "hidden size %lld is not divisible by num_heads %lld", (long long)c->D,
                             (long long)N);
    }
    c->H = c->D / N;
    c->Hv = c->Dv / N;
    c->scale = kattn_default_scale(kiln_attr_float(node, "scale", 0.0f), c->H);
    c->filter = kiln_attr_float(node, "mask_filter_value", -10000.0f);
    c->share = kiln_attr_int(node, "past_present_share_buffer", 0) != 0;
    c->M = -1;

    if (c->past) {
        if (c->D != c->Dv)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past requires equal Q/K and V hidden sizes, got %lld and %lld",
                             (long long)c->D, (long long)c->Dv);
        const int64_t *d = c->past->dims;
        if (c->past->rank != 5 || d[0] != 2 || d[1] != c->B || d[2] != N || d[4] != c->H)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past must be (2, B=%lld, N=%lld, P, H=%lld), got %s", (long long)c->B,
                             (long long)N, (long long)c->H, kattn_shape(c->past, b1, sizeof b1));
        if (c->rpb)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past and relative_position_bias cannot be used together");
        if (kiln_output(ctx, 1) == NULL)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past is given but output 'present' is not requested");
    }
    if (kiln_output(ctx, 1) && c->D != c->Dv)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "output 'present' requires equal Q/K and V hidden sizes, got %lld and %lld",
                         (long long)c->D, (long long)c->Dv);
    if (c->share) {
        if (!c->past)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past_present_share_buffer = 1 requires input 'past'");
        if (!c->past_len || kiln_numel(c->past_len) != 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past_present_share_buffer = 1 requires a 1-element past_sequence_length, "
                             "got %s", kattn_shape(c->past_len, b1, sizeof b1));
        if (c->past_len->dtype != KILN_DTYPE_INT32)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "past_sequence_length must be int32");
        c->M = c->past->dims[3];
        c->P = 0;
        if (kattn_host_readable(c->past_len)) {
            c->P = *(const int32_t *)c->past_len->data;
            if (c->P < 0)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "past_sequence_length is negative (%lld)", (long long)c->P);
        }
        if (c->P + c->S > c->M)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past_sequence_length %lld + sequence length %lld exceeds the shared "
                             "buffer length %lld", (long long)c->P, (long long)c->S, (long long)c->M);
    } else {
        c->P = c->past ? c->past->dims[3] : 0;
    }
    c->T = c->P + c->S;
    c->causal = kiln_attr_int(node, "unidirectional", 0) != 0;

    if (c->rpb) {
        const int64_t *d = c->rpb->dims;
        if (c->rpb->rank != 4 || (d[0] != c->B && d[0] != 1) || d[1] != N || d[2] != c->S ||
            d[3] != c->T)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "relative_position_bias must be (B or 1, N, S, T) = (%lld, %lld, %lld, "
                             "%lld), got %s", (long long)c->B, (long long)N, (long long)c->S,
                             (long long)c->T, kattn_shape(c->rpb, b2, sizeof b2));
    }
    if (c->mask)
        KILN_TRY(kattn_mask_check(ctx, c->mask, KATTN_MASK_ATTENTION, c->B, c->S, c->S, c->T,
                                  c->share ? c->M : -1, c->causal));
    return KILN_OK;
}

kiln_status kattn_contrib_infer(kiln_ctx *ctx) {
    static const int ins[] = {IN_INPUT, IN_WEIGHTS, IN_BIAS, IN_MASK, IN_PAST, IN_RPB};
    const kiln_tensor *x = kiln_input(ctx, IN_INPUT);
    if (kattn_static_unknown(ctx, ins, 6, x ? x->dtype : KILN_DTYPE_FLOAT)) return KILN_OK;
    contrib_cfg c;
    KILN_TRY(parse(ctx, &c));
    int64_t od[3] = {c.B, c.S, c.Dv};
    KILN_TRY(kiln_set_output(ctx, 0, c.dtype, 3, od));
    if (kiln_output(ctx, 1)) {
        int64_t pd[5] = {2, c.B, c.N, c.share ? c.M : c.T, c.H};
        KILN_TRY(kiln_set_output(ctx, 1, c.dtype, 5, pd));
    }
    return KILN_OK;
}

kiln_status kattn_contrib_compute(kiln_ctx *ctx) {
    if (kattn_has_half(ctx)) return kattn_compute_as_f32(ctx, kattn_contrib_compute);
    contrib_cfg c;
    KILN_TRY(parse(ctx, &c));
    int64_t W = 2 * c.D + c.Dv, BS = c.B * c.S;
    float *qkv = malloc(sizeof(float) * (size_t)(BS * W > 0 ? BS * W : 1));
    if (!qkv) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the QKV projection");
    kattn_project(ctx, BS, W, c.Di, c.input->data, c.Di, c.weights->data, W,
                  c.bias ? c.bias->data : NULL, qkv, W);

    kattn_sdpa p;
    memset(&p, 0, sizeof p);
    p.B = c.B;
    p.N = p.N_kv = c.N;
    p.S = c.S;
    p.T = c.T;
    p.H = c.H;
    p.Hv = c.Hv;
    p.past = c.P;
    p.scale = c.scale;
    p.causal = c.causal;
    p.q = (kattn_view){qkv, c.S * W, c.H, W};
    p.k = (kattn_view){qkv + c.D, c.S * W, c.H, W};
    p.v = (kattn_view){qkv + 2 * c.D, c.S * W, c.Hv, W};

    kiln_tensor *present = kiln_output(ctx, 1);
    if (present) {
        float *pk = present->data;
        int64_t R = c.share ? c.M : c.T;
        float *pv = pk + c.B * c.N * R * c.H;
        kattn_view nk = p.k, nv = p.v;
        const float *past = c.past ? c.past->data : NULL;
        if (c.share) {
            /* The new rows go at P .. P+S-1 of the M-long buffer, like the in-place update of
             * the reference; the rest of the buffer carries over unchanged. */
            if (past != pk) memcpy(pk, past, sizeof(float) * (size_t)(2 * c.B * c.N * c.M * c.H));
            kattn_concat_kv(ctx, pk, R, NULL, R, c.P, &nk, c.B, c.N, c.S, c.H);
            kattn_concat_kv(ctx, pv, R, NULL, R, c.P, &nv, c.B, c.N, c.S, c.H);
        } else {
            const float *past_v = past ? past + c.B * c.N * c.P * c.H : NULL;
            kattn_concat_kv(ctx, pk, R, past, c.P, c.P, &nk, c.B, c.N, c.S, c.H);
            kattn_concat_kv(ctx, pv, R, past_v, c.P, c.P, &nv, c.B, c.N, c.S, c.Hv);
        }
        p.k = (kattn_view){pk, c.N * R * c.H, R * c.H, c.H};
        p.v = (kattn_view){pv, c.N * R * c.Hv, R * c.Hv, c.Hv};
    }

    if (c.rpb)
        p.add[0] = (kattn_addend){c.rpb->data, c.rpb->dims[0] == 1 ? 0 : c.N * c.S * c.T,
                                  c.S * c.T, c.T, c.T};
    kattn_mask mask;
    kiln_status st = kattn_mask_build(ctx, c.mask, KATTN_MASK_ATTENTION, c.B, c.S, c.S, c.T,
                                      c.filter, &mask);
    if (st == KILN_OK) {
        kattn_mask_apply(&mask, &p, 1);
        kiln_tensor *out = kiln_output(ctx, 0);
        if (!out) st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output 0 is required");
        else p.out = out->data;
        p.o_sb = c.S * c.Dv;
        p.o_sn = c.Hv;
        p.o_ss = c.Dv;
        if (st == KILN_OK) st = kattn_run(ctx, &p);
    }
    kattn_mask_free(&mask);
    free(qkv);
    return st;
}
