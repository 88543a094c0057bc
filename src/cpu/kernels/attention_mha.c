/* com.microsoft MultiHeadAttention (spec §3): separate Q/K/V, packed KV (B,L,N,2,H), packed QKV
 * (B,S,N,3,H), cross attention with cached 4-D K/V, bias, key_padding_mask, relative position
 * bias, past/present KV cache. Unbiased inputs are read in place through strided views; a bias
 * costs one copy of the biased tensor. */
#include "attention_common.h"

#include <stdlib.h>
#include <string.h>

enum { IN_Q, IN_K, IN_V, IN_BIAS, IN_MASK, IN_RPB, IN_PAST_K, IN_PAST_V, MHA_INPUTS };

enum mha_format { FMT_Q_K_V, FMT_Q_KV_PACKED, FMT_QKV_PACKED, FMT_Q_CACHED_KV };

typedef struct mha_cfg {
    const kiln_tensor *q, *k, *v, *bias, *mask, *rpb, *past_k, *past_v;
    int format;
    int64_t B, S, L, P, T, N, D, Dv, H, Hv;
    int causal;
    int dtype; /* T: float32, float16 or bfloat16 */
    float scale, filter;
} mha_cfg;

static kiln_status parse(kiln_ctx *ctx, mha_cfg *c) {
    const kiln_node *node = ctx->node;
    char b1[128], b2[128];
    memset(c, 0, sizeof *c);
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, IN_Q, &t));
    c->q = t;
    c->k = kiln_input(ctx, IN_K);
    c->v = kiln_input(ctx, IN_V);
    c->bias = kiln_input(ctx, IN_BIAS);
    c->mask = kiln_input(ctx, IN_MASK);
    c->rpb = kiln_input(ctx, IN_RPB);
    c->past_k = kiln_input(ctx, IN_PAST_K);
    c->past_v = kiln_input(ctx, IN_PAST_V);
    if (kattn_is_fp8(t->dtype)) {
        /* FP8: c->dtype is the output's type; the data is dequantised before parse() meets it */
        KILN_TRY(kattn_mha_fp8_check(ctx, &c->dtype));
    } else {
        for (int i = MHA_INPUTS; i < ctx->n_in; i++)
            if (kiln_input(ctx, i))
                return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                                 "MultiHeadAttention input %d is not supported (inputs 0-7 are)", i);
        static const int fl_idx[] = {IN_Q, IN_K, IN_V, IN_BIAS, IN_RPB, IN_PAST_K, IN_PAST_V};
        KILN_TRY(kattn_check_float_inputs(ctx, fl_idx, 7, &c->dtype));
    }

    int64_t N = kiln_attr_int(node, "num_heads", 0);
    if (N <= 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "num_heads must be > 0, got %lld", (long long)N);
    c->N = N;
    c->filter = kiln_attr_float(node, "mask_filter_value", -10000.0f);
    c->causal = kiln_attr_int(node, "unidirectional", 0) != 0;

    const kiln_tensor *q = c->q, *k = c->k, *v = c->v;
    if (q->rank != 3 && q->rank != 5)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "query must be 3-D (B, S, D) or 5-D packed QKV (B, S, N, 3, H), got %s",
                         kattn_shape(q, b1, sizeof b1));
    c->B = q->dims[0];
    c->S = q->dims[1];
    if (q->rank == 5) {
        if (k || v)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "key and value must be absent when query is packed QKV (5-D)");
        if (q->dims[2] != N || q->dims[3] != 3)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "packed QKV query must be (B, S, N=%lld, 3, H), got %s", (long long)N,
                             kattn_shape(q, b1, sizeof b1));
        c->format = FMT_QKV_PACKED;
        c->H = c->Hv = q->dims[4];
        c->D = c->Dv = N * c->H;
        c->L = c->S;
    } else {
        c->D = q->dims[2];
        if (c->D % N)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "query hidden size %lld is not divisible by num_heads %lld",
                             (long long)c->D, (long long)N);
        c->H = c->D / N;
        if (!k)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "key is required when query is 3-D (only packed QKV omits it)");
        if (k->dims[0] != c->B)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "query and key batch sizes differ: %s vs %s", kattn_shape(q, b1, sizeof b1),
                             kattn_shape(k, b2, sizeof b2));
        if (k->rank == 5) {
            if (v)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "value must be absent when key is packed KV (5-D)");
            if (k->dims[2] != N || k->dims[3] != 2 || k->dims[4] != c->H)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "packed KV key must be (B, L, N=%lld, 2, H=%lld), got %s",
                                 (long long)N, (long long)c->H, kattn_shape(k, b1, sizeof b1));
            if (c->bias)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "bias is not supported with packed KV (5-D key)");
            c->format = FMT_Q_KV_PACKED;
            c->L = k->dims[1];
            c->Hv = c->H;
            c->Dv = c->D;
        } else if (k->rank == 3 || k->rank == 4) {
            if (!v)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "value is required with a %d-D key", k->rank);
            if (v->rank != k->rank)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "key %s and value %s must both be 3-D or both 4-D",
                                 kattn_shape(k, b1, sizeof b1), kattn_shape(v, b2, sizeof b2));
            if (v->dims[0] != c->B)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "query and value batch sizes differ (%lld vs %lld)",
                                 (long long)c->B, (long long)v->dims[0]);
            if (k->rank == 3) {
                if (k->dims[2] != c->D)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "key hidden size %lld must equal query hidden size %lld",
                                     (long long)k->dims[2], (long long)c->D);
                c->format = FMT_Q_K_V;
                c->L = k->dims[1];
                if (v->dims[1] != c->L)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "value sequence length %lld must equal key's %lld",
                                     (long long)v->dims[1], (long long)c->L);
                c->Dv = v->dims[2];
                if (c->Dv % N)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "value hidden size %lld is not divisible by num_heads %lld",
                                     (long long)c->Dv, (long long)N);
                c->Hv = c->Dv / N;
            } else {
                if (k->dims[1] != N || k->dims[3] != c->H)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "4-D key must be (B, N=%lld, L, H=%lld), got %s", (long long)N,
                                     (long long)c->H, kattn_shape(k, b1, sizeof b1));
                c->format = FMT_Q_CACHED_KV;
                c->L = k->dims[2];
                if (v->dims[1] != N || v->dims[2] != c->L)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "4-D value must be (B, N=%lld, L=%lld, H_v), got %s",
                                     (long long)N, (long long)c->L, kattn_shape(v, b1, sizeof b1));
                c->Hv = v->dims[3];
                c->Dv = N * c->Hv;
                if (c->past_k || c->past_v)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "past_key/past_value cannot be used with 4-D (cached) key/value");
            }
        } else {
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "key must be 3-D (B, L, D), 4-D (B, N, L, H) or 5-D packed KV, got %s",
                             kattn_shape(k, b1, sizeof b1));
        }
    }
    if (c->bias && (c->bias->rank != 1 || c->bias->dims[0] != 2 * c->D + c->Dv))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "bias must be 1-D of length D + D + D_v = %lld, got %s",
                         (long long)(2 * c->D + c->Dv), kattn_shape(c->bias, b1, sizeof b1));

    if ((c->past_k == NULL) != (c->past_v == NULL))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "past_key and past_value must both be present or both be absent");
    if (c->past_k) {
        const int64_t *pk = c->past_k->dims, *pv = c->past_v->dims;
        if (c->past_k->rank != 4 || pk[0] != c->B || pk[1] != N || pk[3] != c->H)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past_key must be (B=%lld, N=%lld, P, H=%lld), got %s", (long long)c->B,
                             (long long)N, (long long)c->H, kattn_shape(c->past_k, b1, sizeof b1));
        if (c->past_v->rank != 4 || pv[0] != c->B || pv[1] != N || pv[2] != pk[2] || pv[3] != c->Hv)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past_value must be (B=%lld, N=%lld, P=%lld, H_v=%lld), got %s",
                             (long long)c->B, (long long)N, (long long)pk[2], (long long)c->Hv,
                             kattn_shape(c->past_v, b1, sizeof b1));
        c->P = pk[2];
    }
    c->T = c->P + c->L;
    c->scale = kattn_default_scale(kiln_attr_float(node, "scale", 0.0f), c->H);

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
        KILN_TRY(kattn_mask_check(ctx, c->mask, KATTN_MASK_MHA, c->B, c->S, c->L, c->T, -1, 0));
    return KILN_OK;
}

kiln_status kattn_mha_infer(kiln_ctx *ctx) {
    static const int ins[] = {IN_Q, IN_K, IN_V, IN_BIAS, IN_MASK, IN_RPB, IN_PAST_K, IN_PAST_V};
    const kiln_tensor *q = kiln_input(ctx, IN_Q);
    int odt = q ? q->dtype : KILN_DTYPE_FLOAT;
    if (q && kattn_is_fp8(q->dtype)) KILN_TRY(kattn_mha_fp8_check(ctx, &odt));
    if (kattn_static_unknown(ctx, ins, 8, odt)) return KILN_OK;
    mha_cfg c;
    KILN_TRY(parse(ctx, &c));
    int64_t od[3] = {c.B, c.S, c.Dv};
    KILN_TRY(kiln_set_output(ctx, 0, c.dtype, 3, od));
    int64_t kd[4] = {c.B, c.N, c.T, c.H}, vd[4] = {c.B, c.N, c.T, c.Hv};
    if (ctx->n_out > 1 && kiln_output(ctx, 1)) KILN_TRY(kiln_set_output(ctx, 1, c.dtype, 4, kd));
    if (ctx->n_out > 2 && kiln_output(ctx, 2)) KILN_TRY(kiln_set_output(ctx, 2, c.dtype, 4, vd));
    return KILN_OK;
}

/* Replaces *v by a BSNH copy with bias added; *ws receives the buffer to free. */
static kiln_status add_bias(kiln_ctx *ctx, kattn_view *v, int64_t B, int64_t N, int64_t L,
                            int64_t H, const float *bias, float **ws) {
    size_t n = (size_t)(B * L * N * H);
    *ws = malloc(sizeof(float) * (n ? n : 1));
    if (!*ws) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for biased attention inputs");
    kattn_gather_bsnh(ctx, *ws, v, B, N, L, H, bias);
    *v = (kattn_view){*ws, L * N * H, H, N * H};
    return KILN_OK;
}

/* K_all / V_all for one of K, V: concatenates past and new rows into present (or a workspace
 * when present is not wanted); without past, present is a BNSH copy and the view stays. */
static kiln_status cache_kv(kiln_ctx *ctx, kattn_view *v, const kiln_tensor *past,
                            kiln_tensor *present, int64_t B, int64_t N, int64_t P, int64_t L,
                            int64_t H, float **ws) {
    int64_t T = P + L;
    float *dst = present ? present->data : NULL;
    if (!past && !present) return KILN_OK;
    if (!dst) {
        size_t n = (size_t)(B * N * T * H);
        *ws = malloc(sizeof(float) * (n ? n : 1));
        if (!*ws) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the KV cache");
        dst = *ws;
    }
    kattn_concat_kv(ctx, dst, T, past ? past->data : NULL, P, P, v, B, N, L, H);
    *v = (kattn_view){dst, N * T * H, T * H, H};
    return KILN_OK;
}

kiln_status kattn_mha_compute(kiln_ctx *ctx) {
    const kiln_tensor *q0 = kiln_input(ctx, IN_Q);
    if (q0 && kattn_is_fp8(q0->dtype)) return kattn_mha_fp8_compute(ctx, kattn_mha_compute);
    if (kattn_has_half(ctx)) return kattn_compute_as_f32(ctx, kattn_mha_compute);
    mha_cfg c;
    KILN_TRY(parse(ctx, &c));
    kiln_tensor *out = kiln_output(ctx, 0);
    if (!out) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output 0 is required");
    kiln_tensor *present_k = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    kiln_tensor *present_v = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    int64_t B = c.B, S = c.S, L = c.L, N = c.N, H = c.H, Hv = c.Hv, D = c.D;

    kattn_sdpa p;
    memset(&p, 0, sizeof p);
    const float *qd = c.q->data;
    const float *kd = c.k ? c.k->data : NULL, *vd = c.v ? c.v->data : NULL;
    switch (c.format) {
    case FMT_QKV_PACKED:
        p.q = (kattn_view){qd, S * N * 3 * H, 3 * H, N * 3 * H};
        p.k = (kattn_view){qd + H, S * N * 3 * H, 3 * H, N * 3 * H};
        p.v = (kattn_view){qd + 2 * H, S * N * 3 * H, 3 * H, N * 3 * H};
        break;
    case FMT_Q_KV_PACKED:
        p.q = (kattn_view){qd, S * D, H, D};
        p.k = (kattn_view){kd, L * N * 2 * H, 2 * H, N * 2 * H};
        p.v = (kattn_view){kd + H, L * N * 2 * H, 2 * H, N * 2 * H};
        break;
    case FMT_Q_K_V:
        p.q = (kattn_view){qd, S * D, H, D};
        p.k = (kattn_view){kd, L * D, H, D};
        p.v = (kattn_view){vd, L * c.Dv, Hv, c.Dv};
        break;
    default: /* FMT_Q_CACHED_KV */
        p.q = (kattn_view){qd, S * D, H, D};
        p.k = (kattn_view){kd, N * L * H, L * H, H};
        p.v = (kattn_view){vd, N * L * Hv, L * Hv, Hv};
        break;
    }

    float *ws[5] = {0};
    kiln_status st = KILN_OK;
    const float *bias = c.bias ? c.bias->data : NULL;
    if (bias) {
        st = add_bias(ctx, &p.q, B, N, S, H, bias, &ws[0]);
        if (st == KILN_OK && c.format != FMT_Q_CACHED_KV) {
            st = add_bias(ctx, &p.k, B, N, L, H, bias + D, &ws[1]);
            if (st == KILN_OK) st = add_bias(ctx, &p.v, B, N, L, Hv, bias + 2 * D, &ws[2]);
        }
    }
    if (st == KILN_OK) st = cache_kv(ctx, &p.k, c.past_k, present_k, B, N, c.P, L, H, &ws[3]);
    if (st == KILN_OK) st = cache_kv(ctx, &p.v, c.past_v, present_v, B, N, c.P, L, Hv, &ws[4]);

    kattn_mask mask;
    memset(&mask, 0, sizeof mask);
    if (st == KILN_OK)
        st = kattn_mask_build(ctx, c.mask, KATTN_MASK_MHA, B, S, L, c.T, c.filter, &mask);
    if (st == KILN_OK) {
        p.B = B;
        p.N = p.N_kv = N;
        p.S = S;
        p.T = c.T;
        p.H = H;
        p.Hv = Hv;
        p.past = c.P;
        p.scale = c.scale;
        p.causal = c.causal;
        if (c.rpb)
            p.add[0] = (kattn_addend){c.rpb->data, c.rpb->dims[0] == 1 ? 0 : N * S * c.T, S * c.T,
                                      c.T, c.T};
        kattn_mask_apply(&mask, &p, 1);
        p.out = out->data;
        p.o_sb = S * N * Hv;
        p.o_sn = Hv;
        p.o_ss = N * Hv;
        st = kattn_run(ctx, &p);
    }
    kattn_mask_free(&mask);
    for (int i = 0; i < 5; i++) free(ws[i]);
    return st;
}
