/* ONNX Attention (opset 23, and 24's nonpad_kv_seqlen): 3-D or 4-D Q/K/V, grouped-query heads,
 * boolean or additive attn_mask broadcast to (B, Nq, S, T), is_causal, past/present KV cache,
 * softcap, scale and the optional qk_matmul_output in its four modes. Float16, bfloat16 and double
 * tensors are computed in float32. */
#include "attention_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { IN_Q, IN_K, IN_V, IN_MASK, IN_PAST_K, IN_PAST_V, IN_NONPAD };
enum { OUT_Y, OUT_PRESENT_K, OUT_PRESENT_V, OUT_QK };

typedef struct onnx_cfg {
    const kiln_tensor *q, *k, *v, *mask, *past_k, *past_v, *nonpad;
    int rank;
    int64_t B, Nq, Nkv, S, L, P, T, H, Hv;
    int causal, qk_mode;
    float scale, softcap;
    int64_t m_dims[4]; /* mask aligned to (B, Nq, S, T) */
    /* kiln_mask_broadcast: the optimizer fused this node from Add(scores, mask) without proving
     * the mask's sizes, so it follows Add's rules (a last axis of 1 broadcasts, a shorter one is
     * an error) instead of the operator's padding with -inf */
    int mask_add;
} onnx_cfg;

static kiln_tensor *out_or_null(kiln_ctx *ctx, int i) { return i < ctx->n_out ? kiln_output(ctx, i) : NULL; }

static kiln_status parse(kiln_ctx *ctx, onnx_cfg *c) {
    const kiln_node *node = ctx->node;
    char b1[128], b2[128], b3[128];
    memset(c, 0, sizeof *c);
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, IN_Q, &t));
    c->q = t;
    KILN_TRY(kiln_need_input(ctx, IN_K, &t));
    c->k = t;
    KILN_TRY(kiln_need_input(ctx, IN_V, &t));
    c->v = t;
    c->mask = kiln_input(ctx, IN_MASK);
    c->past_k = kiln_input(ctx, IN_PAST_K);
    c->past_v = kiln_input(ctx, IN_PAST_V);
    c->nonpad = ctx->n_in > IN_NONPAD ? kiln_input(ctx, IN_NONPAD) : NULL;

    const kiln_tensor *fl[] = {c->q, c->k, c->v, c->past_k, c->past_v};
    for (int i = 0; i < 5; i++)
        if (fl[i] && !kattn_float_type(fl[i]->dtype))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input %d has element type %s; expected a float type", i == 3 ? 4 : i == 4 ? 5 : i,
                             kiln_dtype_name(fl[i]->dtype));
    if (c->k->dtype != c->q->dtype || (c->past_k && c->past_k->dtype != c->q->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Q, K and past_key must have the same type");
    if (c->past_v && c->past_v->dtype != c->v->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "V and past_value must have the same type");

    const kiln_tensor *q = c->q, *k = c->k, *v = c->v;
    if (q->rank != k->rank || q->rank != v->rank || (q->rank != 3 && q->rank != 4))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "Q, K and V must all be 3-D or all 4-D, got %s, %s, %s",
                         kattn_shape(q, b1, sizeof b1), kattn_shape(k, b2, sizeof b2),
                         kattn_shape(v, b3, sizeof b3));
    c->rank = q->rank;
    c->B = q->dims[0];
    if (k->dims[0] != c->B || v->dims[0] != c->B)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Q, K and V batch sizes differ: %s, %s, %s",
                         kattn_shape(q, b1, sizeof b1), kattn_shape(k, b2, sizeof b2),
                         kattn_shape(v, b3, sizeof b3));
    int64_t qn = kiln_attr_int(node, "q_num_heads", 0), kvn = kiln_attr_int(node, "kv_num_heads", 0);
    if (c->rank == 3) {
        if (qn <= 0 || kvn <= 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "3-D inputs need positive q_num_heads and kv_num_heads attributes");
        c->Nq = qn;
        c->Nkv = kvn;
        c->S = q->dims[1];
        c->L = k->dims[1];
        if (v->dims[1] != c->L)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "K and V sequence lengths differ: %s vs %s", kattn_shape(k, b1, sizeof b1),
                             kattn_shape(v, b2, sizeof b2));
        if (q->dims[2] % qn || k->dims[2] % kvn || v->dims[2] % kvn)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "hidden sizes (Q %lld, K %lld, V %lld) must be divisible by q_num_heads "
                             "%lld / kv_num_heads %lld", (long long)q->dims[2], (long long)k->dims[2],
                             (long long)v->dims[2], (long long)qn, (long long)kvn);
        c->H = q->dims[2] / qn;
        if (k->dims[2] / kvn != c->H)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "Q head size %lld differs from K head size %lld", (long long)c->H,
                             (long long)(k->dims[2] / kvn));
        c->Hv = v->dims[2] / kvn;
    } else {
        c->Nq = q->dims[1];
        c->Nkv = k->dims[1];
        c->S = q->dims[2];
        c->L = k->dims[2];
        c->H = q->dims[3];
        c->Hv = v->dims[3];
        if ((qn > 0 && qn != c->Nq) || (kvn > 0 && kvn != c->Nkv))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "q_num_heads/kv_num_heads (%lld/%lld) disagree with the 4-D inputs "
                             "(%lld/%lld)", (long long)qn, (long long)kvn, (long long)c->Nq,
                             (long long)c->Nkv);
        if (k->dims[3] != c->H)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Q head size %lld differs from K head size %lld",
                             (long long)c->H, (long long)k->dims[3]);
        if (v->dims[1] != c->Nkv || v->dims[2] != c->L)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "V %s must have K's heads (%lld) and sequence length (%lld)",
                             kattn_shape(v, b1, sizeof b1), (long long)c->Nkv, (long long)c->L);
    }
    if (c->Nkv <= 0 || c->Nq % c->Nkv)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "q_num_heads %lld must be a multiple of kv_num_heads %lld", (long long)c->Nq,
                         (long long)c->Nkv);

    if ((c->past_k == NULL) != (c->past_v == NULL))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "past_key and past_value must both be present or both be absent");
    if (c->past_k) {
        const int64_t *pk = c->past_k->dims, *pv = c->past_v->dims;
        if (c->past_k->rank != 4 || pk[0] != c->B || pk[1] != c->Nkv || pk[3] != c->H)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past_key must be (B=%lld, kv_num_heads=%lld, P, head_size=%lld), got %s",
                             (long long)c->B, (long long)c->Nkv, (long long)c->H,
                             kattn_shape(c->past_k, b1, sizeof b1));
        if (c->past_v->rank != 4 || pv[0] != c->B || pv[1] != c->Nkv || pv[2] != pk[2] ||
            pv[3] != c->Hv)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "past_value must be (B=%lld, kv_num_heads=%lld, P=%lld, v_head_size=%lld), "
                             "got %s", (long long)c->B, (long long)c->Nkv, (long long)pk[2],
                             (long long)c->Hv, kattn_shape(c->past_v, b1, sizeof b1));
        c->P = pk[2];
    }
    c->T = c->P + c->L;

    if (c->nonpad) {
        if (c->nonpad->dtype != KILN_DTYPE_INT64 || c->nonpad->rank != 1 || c->nonpad->dims[0] != c->B)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "nonpad_kv_seqlen must be int64 (B=%lld), got %s %s", (long long)c->B,
                             kiln_dtype_name(c->nonpad->dtype), kattn_shape(c->nonpad, b1, sizeof b1));
        if (c->past_k)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "nonpad_kv_seqlen cannot be used together with past_key/past_value");
    }

    if (c->mask) {
        const kiln_tensor *m = c->mask;
        if (m->dtype != KILN_DTYPE_BOOL && m->dtype != c->q->dtype)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                             "attn_mask must be bool or the type of Q (%s), got %s",
                             kiln_dtype_name(c->q->dtype), kiln_dtype_name(m->dtype));
        if (m->rank < 1 || m->rank > 4)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attn_mask must have rank 1 to 4, got %s",
                             kattn_shape(m, b1, sizeof b1));
        const int64_t full[4] = {c->B, c->Nq, c->S, c->T};
        for (int i = 0; i < 4; i++) c->m_dims[i] = 1;
        for (int i = 0; i < m->rank; i++) c->m_dims[4 - m->rank + i] = m->dims[i];
        for (int i = 0; i < 3; i++)
            if (c->m_dims[i] != 1 && c->m_dims[i] != full[i])
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "attn_mask %s does not broadcast to (B, q_num_heads, S, T) = "
                                 "(%lld, %lld, %lld, %lld)", kattn_shape(m, b1, sizeof b1),
                                 (long long)c->B, (long long)c->Nq, (long long)c->S, (long long)c->T);
        c->mask_add = kiln_attr_int(ctx->node, "kiln_mask_broadcast", 0) != 0;
        if (c->mask_add && c->m_dims[3] != 1 && c->m_dims[3] != c->T)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "attn_mask %s does not broadcast onto the scores (B, q_num_heads, S, T) = "
                             "(%lld, %lld, %lld, %lld) as the Add this node was fused from needs",
                             kattn_shape(m, b1, sizeof b1), (long long)c->B, (long long)c->Nq,
                             (long long)c->S, (long long)c->T);
        /* a shorter last dimension is padded with -inf (opset 24 wording, reference behaviour) */
        if (c->m_dims[3] > c->T)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "attn_mask %s is longer than the total sequence length %lld",
                             kattn_shape(m, b1, sizeof b1), (long long)c->T);
    }

    c->causal = kiln_attr_int(node, "is_causal", 0) != 0;
    c->softcap = kiln_attr_float(node, "softcap", 0.0f);
    c->qk_mode = (int)kiln_attr_int(node, "qk_matmul_output_mode", 0);
    if (c->qk_mode < 0 || c->qk_mode > 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "qk_matmul_output_mode must be 0..3, got %d",
                         c->qk_mode);
    if (kiln_has_attr(node, "scale"))
        c->scale = kiln_attr_float(node, "scale", 1.0f);
    else
        c->scale = kattn_default_scale(0.0f, c->H);
    return KILN_OK;
}

kiln_status kattn_onnx_infer(kiln_ctx *ctx) {
    static const int ins[] = {IN_Q, IN_K, IN_V, IN_MASK, IN_PAST_K, IN_PAST_V, IN_NONPAD};
    const kiln_tensor *q = kiln_input(ctx, IN_Q);
    int dt = q ? q->dtype : KILN_DTYPE_FLOAT;
    if (kattn_static_unknown(ctx, ins, 7, dt)) return KILN_OK;
    onnx_cfg c;
    KILN_TRY(parse(ctx, &c));
    if (c.rank == 3) {
        int64_t d[3] = {c.B, c.S, c.Nq * c.Hv};
        KILN_TRY(kiln_set_output(ctx, OUT_Y, c.q->dtype, 3, d));
    } else {
        int64_t d[4] = {c.B, c.Nq, c.S, c.Hv};
        KILN_TRY(kiln_set_output(ctx, OUT_Y, c.q->dtype, 4, d));
    }
    int64_t kd[4] = {c.B, c.Nkv, c.T, c.H}, vd[4] = {c.B, c.Nkv, c.T, c.Hv};
    int64_t qd[4] = {c.B, c.Nq, c.S, c.T};
    if (out_or_null(ctx, OUT_PRESENT_K)) KILN_TRY(kiln_set_output(ctx, OUT_PRESENT_K, c.k->dtype, 4, kd));
    if (out_or_null(ctx, OUT_PRESENT_V)) KILN_TRY(kiln_set_output(ctx, OUT_PRESENT_V, c.v->dtype, 4, vd));
    if (out_or_null(ctx, OUT_QK)) KILN_TRY(kiln_set_output(ctx, OUT_QK, c.q->dtype, 4, qd));
    return KILN_OK;
}

/* Buffers a run may own; freed together. */
typedef struct owned_bufs {
    void *p[16];
    int n;
} owned_bufs;

static void *keep(owned_bufs *o, void *p) {
    if (p) o->p[o->n++] = p;
    return p;
}

static float *scratch(kiln_ctx *ctx, owned_bufs *o, int64_t n) {
    return keep(o, malloc(sizeof(float) * (size_t)(n > 0 ? n : 1)));
}

/* Float32 place for an output: the output itself when it is float32, else a scratch buffer
 * converted after the run. */
static float *out_f32(kiln_ctx *ctx, owned_bufs *o, kiln_tensor *t) {
    if (!t) return NULL;
    if (t->dtype == KILN_DTYPE_FLOAT) return t->data;
    return scratch(ctx, o, kiln_numel(t));
}

static kiln_status run(kiln_ctx *ctx, const onnx_cfg *c, owned_bufs *o) {
    const float *q, *k, *v, *pk = NULL, *pv = NULL;
    float *tmp;
    KILN_TRY(kattn_as_f32(ctx, c->q, &q, &tmp));
    keep(o, tmp);
    KILN_TRY(kattn_as_f32(ctx, c->k, &k, &tmp));
    keep(o, tmp);
    KILN_TRY(kattn_as_f32(ctx, c->v, &v, &tmp));
    keep(o, tmp);
    if (c->past_k) {
        KILN_TRY(kattn_as_f32(ctx, c->past_k, &pk, &tmp));
        keep(o, tmp);
        KILN_TRY(kattn_as_f32(ctx, c->past_v, &pv, &tmp));
        keep(o, tmp);
    }
    int64_t B = c->B, Nq = c->Nq, Nkv = c->Nkv, S = c->S, L = c->L, T = c->T, H = c->H, Hv = c->Hv;
    kattn_sdpa p;
    memset(&p, 0, sizeof p);
    if (c->rank == 3) {
        p.q = (kattn_view){q, S * Nq * H, H, Nq * H};
        p.k = (kattn_view){k, L * Nkv * H, H, Nkv * H};
        p.v = (kattn_view){v, L * Nkv * Hv, Hv, Nkv * Hv};
    } else {
        p.q = (kattn_view){q, Nq * S * H, S * H, H};
        p.k = (kattn_view){k, Nkv * L * H, L * H, H};
        p.v = (kattn_view){v, Nkv * L * Hv, L * Hv, Hv};
    }

    kiln_tensor *y = out_or_null(ctx, OUT_Y), *prk = out_or_null(ctx, OUT_PRESENT_K);
    kiln_tensor *prv = out_or_null(ctx, OUT_PRESENT_V), *qk = out_or_null(ctx, OUT_QK);
    if (!y) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output Y is required");
    float *yf = out_f32(ctx, o, y), *kf = out_f32(ctx, o, prk), *vf = out_f32(ctx, o, prv);
    float *qkf = out_f32(ctx, o, qk);
    if (!yf || (prk && !kf) || (prv && !vf) || (qk && !qkf))
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for attention outputs");

    /* K_all / V_all: past rows then new rows, in the present output when wanted */
    if (pk || kf) {
        float *dst = kf ? kf : scratch(ctx, o, B * Nkv * T * H);
        if (!dst) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the KV cache");
        kattn_concat_kv(ctx, dst, T, pk, c->P, c->P, &p.k, B, Nkv, L, H);
        p.k = (kattn_view){dst, Nkv * T * H, T * H, H};
    }
    if (pv || vf) {
        float *dst = vf ? vf : scratch(ctx, o, B * Nkv * T * Hv);
        if (!dst) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the KV cache");
        kattn_concat_kv(ctx, dst, T, pv, c->P, c->P, &p.v, B, Nkv, L, Hv);
        p.v = (kattn_view){dst, Nkv * T * Hv, T * Hv, Hv};
    }

    if (c->mask) {
        const kiln_tensor *m = c->mask;
        int64_t n = kiln_numel(m);
        const float *md;
        if (m->dtype == KILN_DTYPE_BOOL) {
            float *a = scratch(ctx, o, n);
            if (!a) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for attn_mask");
            const uint8_t *bm = m->data;
            for (int64_t i = 0; i < n; i++) a[i] = bm[i] ? 0.0f : -INFINITY;
            md = a;
        } else {
            KILN_TRY(kattn_as_f32(ctx, m, &md, &tmp));
            keep(o, tmp);
        }
        int64_t d[4] = {c->m_dims[0], c->m_dims[1], c->m_dims[2], c->m_dims[3]};
        if (c->mask_add && d[3] == 1 && T > 1) { /* Add's broadcast over the keys */
            float *a = scratch(ctx, o, n * T);
            if (!a) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for attn_mask");
            for (int64_t i = 0; i < n; i++)
                for (int64_t j = 0; j < T; j++) a[i * T + j] = md[i];
            md = a;
            d[3] = T;
        }
        int64_t ss = d[3], sn = d[2] * ss, sb = d[1] * sn;
        p.add[0] = (kattn_addend){md, d[0] == 1 ? 0 : sb, d[1] == 1 ? 0 : sn, d[2] == 1 ? 0 : ss, d[3]};
    }
    int64_t *lo = NULL, *hi = NULL;
    if (c->nonpad) {
        lo = keep(o, malloc(sizeof(int64_t) * (size_t)(2 * B + 1)));
        if (!lo) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        hi = lo + B;
        const int64_t *np = c->nonpad->data;
        for (int64_t b = 0; b < B; b++) {
            lo[b] = 0;
            hi[b] = np[b] < 0 ? 0 : np[b] > T ? T : np[b];
        }
        p.key_lo = lo;
        p.key_hi = hi;
        p.window_additive = 0;
    }

    p.B = B;
    p.N = Nq;
    p.N_kv = Nkv;
    p.S = S;
    p.T = T;
    p.H = H;
    p.Hv = Hv;
    p.past = c->P;
    p.scale = c->scale;
    p.softcap = c->softcap > 0.0f ? c->softcap : 0.0f;
    p.causal = c->causal;
    p.qk_out = qkf;
    p.qk_mode = c->qk_mode;
    p.out = yf;
    if (c->rank == 3) {
        p.o_sb = S * Nq * Hv;
        p.o_sn = Hv;
        p.o_ss = Nq * Hv;
    } else {
        p.o_sb = Nq * S * Hv;
        p.o_sn = S * Hv;
        p.o_ss = Hv;
    }
    KILN_TRY(kattn_run(ctx, &p));

    kiln_tensor *outs[4] = {y, prk, prv, qk};
    float *f32[4] = {yf, kf, vf, qkf};
    for (int i = 0; i < 4; i++)
        if (outs[i] && outs[i]->dtype != KILN_DTYPE_FLOAT)
            kattn_store_as(outs[i]->dtype, f32[i], outs[i]->data, kiln_numel(outs[i]));
    return KILN_OK;
}

kiln_status kattn_onnx_compute(kiln_ctx *ctx) {
    onnx_cfg c;
    KILN_TRY(parse(ctx, &c));
    owned_bufs o;
    o.n = 0;
    kiln_status st = run(ctx, &c, &o);
    for (int i = 0; i < o.n; i++) free(o.p[i]);
    return st;
}
