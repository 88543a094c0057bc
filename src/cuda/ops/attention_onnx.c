/* ai.onnx Attention (opset 23) on the CUDA provider, float16 / bfloat16: the op the optimizer's
 * attention fusion writes for exported BERT, GPT-2 and ViT self-attention. Q, K and V are read in
 * place (3-D (B, S, N*H) or 4-D (B, N, S, H)) by the fused attention dispatcher; an additive mask
 * of the inputs' type is passed as its broadcast bias (strides 0 on broadcast axes).
 *
 * Refused in supports (the node then runs on the CPU): float32/float64, boolean masks, past/present
 * KV cache, the qk_matmul_output output, softcap, nonpad_kv_seqlen, and is_causal when the query
 * and key lengths may differ (the spec aligns the causal diagonal top-left, the kernels
 * bottom-right; they agree when S == T). */
#include "../cuda_ep.h"
#include "../attention/attention_dispatch.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

enum { IN_Q, IN_K, IN_V, IN_MASK, IN_PAST_K, IN_PAST_V, IN_NONPAD };
enum { OUT_Y, OUT_PRESENT_K, OUT_PRESENT_V, OUT_QK };

static int is_half(int dt) { return dt == KILN_DTYPE_FLOAT16 || dt == KILN_DTYPE_BFLOAT16; }

static int seq_dim(const kiln_type *t) { return t->rank == 3 ? 1 : 2; }

static int onnx_attention_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                   const kiln_graph_value *const *out, char *why, size_t cap) {
    int dt = kiln_cuda_in_dtype(in, IN_Q);
    if (!is_half(dt)) {
        snprintf(why, cap, "the fused attention kernels take float16/bfloat16 (Q is %s)",
                 dt ? kiln_dtype_name((kiln_dtype)dt) : "of unknown type");
        return 0;
    }
    for (int i = IN_K; i <= IN_V; i++)
        if (kiln_cuda_in_dtype(in, i) != dt) {
            snprintf(why, cap, "input %d's element type differs from Q's", i);
            return 0;
        }
    for (int i = IN_PAST_K; i < n->n_in && i <= IN_NONPAD; i++)
        if (in[i]) {
            snprintf(why, cap, "%s is not supported on CUDA", i == IN_NONPAD ? "nonpad_kv_seqlen" : "a past KV cache");
            return 0;
        }
    for (int i = OUT_PRESENT_K; i < n->n_out; i++)
        if (out[i]) {
            snprintf(why, cap, "output %d (present KV / qk_matmul_output) is not produced on CUDA", i);
            return 0;
        }
    if (in[IN_MASK] && kiln_cuda_in_dtype(in, IN_MASK) != dt) {
        snprintf(why, cap, "attn_mask must be additive of Q's type on CUDA (it is %s)",
                 kiln_dtype_name((kiln_dtype)kiln_cuda_in_dtype(in, IN_MASK)));
        return 0;
    }
    if (kiln_attr_float(n, "softcap", 0.0f) != 0.0f) {
        snprintf(why, cap, "softcap is not supported on CUDA");
        return 0;
    }
    const kiln_type *q = &in[IN_Q]->type, *k = &in[IN_K]->type, *v = &in[IN_V]->type;
    if ((q->rank != 3 && q->rank != 4) || k->rank != q->rank || v->rank != q->rank) {
        snprintf(why, cap, "Q, K and V must all be 3-D or all 4-D");
        return 0;
    }
    if (kiln_attr_int(n, "is_causal", 0)) {
        int64_t s = q->dims[seq_dim(q)], t = k->dims[seq_dim(k)];
        if (!(s == t && s != KILN_DIM_UNKNOWN)) {
            snprintf(why, cap, "is_causal needs query length == key length (known before running)");
            return 0;
        }
    }
    return 1;
}

static int fits(int64_t v) { return v >= 0 && v <= INT_MAX; }

/* (b, n, s, h) strides of a 3-D (B, S, N*H) or 4-D (B, N, S, H) tensor. */
static kiln_cuda_view view_of(const kiln_tensor *t, int64_t N, int64_t H) {
    if (t->rank == 3) return (kiln_cuda_view){t->data, t->dims[1] * N * H, H, N * H};
    return (kiln_cuda_view){t->data, t->dims[1] * t->dims[2] * H, t->dims[2] * H, H};
}

/* The mask's strides as a broadcast over (B, N, S, T); fails unless its last axis is T. */
static kiln_status mask_strides(kiln_ctx *ctx, const kiln_tensor *m, int64_t B, int64_t N, int64_t S, int64_t T,
                                kiln_cuda_sdpa *d) {
    if (m->rank < 1 || m->rank > 4 || m->dims[m->rank - 1] != T)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "attn_mask must end in the key length %lld on CUDA (rank %d, last dimension %lld)",
                         (long long)T, m->rank, (long long)(m->rank ? m->dims[m->rank - 1] : 0));
    int64_t full[4] = {B, N, S, T}, dims[4] = {1, 1, 1, 1}, st[4];
    for (int i = 0; i < m->rank; i++) dims[4 - m->rank + i] = m->dims[i];
    int64_t acc = 1;
    for (int i = 3; i >= 0; i--) {
        if (dims[i] != 1 && dims[i] != full[i])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attn_mask does not broadcast to (B, N, S, T)");
        st[i] = dims[i] == 1 ? 0 : acc;
        acc *= dims[i];
    }
    d->bias = m->data;
    d->bias_sb = st[0];
    d->bias_sn = st[1];
    d->bias_ss = st[2];
    return KILN_OK;
}

static kiln_status onnx_attention_compute(kiln_ctx *ctx) {
    kiln_tensor *q, *k, *v, *y = kiln_output(ctx, OUT_Y);
    KILN_TRY(kiln_need_input(ctx, IN_Q, &q));
    KILN_TRY(kiln_need_input(ctx, IN_K, &k));
    KILN_TRY(kiln_need_input(ctx, IN_V, &v));
    if (!y || !kiln_numel(y)) return KILN_OK;
    int64_t B = q->dims[0], Nq, Nkv, S, T, H, Hv;
    if (q->rank == 3) {
        Nq = kiln_attr_int(ctx->node, "q_num_heads", 0);
        Nkv = kiln_attr_int(ctx->node, "kv_num_heads", 0);
        if (Nq <= 0 || Nkv <= 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "3-D inputs need the head counts");
        S = q->dims[1];
        T = k->dims[1];
        H = q->dims[2] / Nq;
        Hv = v->dims[2] / Nkv;
    } else {
        Nq = q->dims[1];
        Nkv = k->dims[1];
        S = q->dims[2];
        T = k->dims[2];
        H = q->dims[3];
        Hv = v->dims[3];
    }
    if (!fits(B) || !fits(Nq) || !fits(Nkv) || !fits(S) || !fits(T) || !fits(H) || !fits(Hv))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "sizes beyond 32-bit are not supported on CUDA");
    kiln_cuda_sdpa d;
    memset(&d, 0, sizeof d);
    d.dtype = q->dtype;
    d.B = (int)B;
    d.N = (int)Nq;
    d.N_kv = (int)Nkv;
    d.S = (int)S;
    d.T = (int)T;
    d.H = (int)H;
    d.Hv = (int)Hv;
    d.scale = kiln_has_attr(ctx->node, "scale") ? kiln_attr_float(ctx->node, "scale", 1.0f) : 0.0f;
    if (kiln_has_attr(ctx->node, "scale") && d.scale <= 0.0f)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "a scale <= 0 is not supported on CUDA");
    d.causal = kiln_attr_int(ctx->node, "is_causal", 0) != 0;
    if (d.causal && S != T)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "is_causal with query length %lld != key length %lld",
                         (long long)S, (long long)T);
    d.q = view_of(q, Nq, H);
    d.k = view_of(k, Nkv, H);
    d.v = view_of(v, Nkv, Hv);
    d.out = y->data;
    if (y->rank == 3) {
        d.o_sb = S * Nq * Hv;
        d.o_sn = Hv;
        d.o_ss = Nq * Hv;
    } else {
        d.o_sb = Nq * S * Hv;
        d.o_sn = S * Hv;
        d.o_ss = Hv;
    }
    kiln_tensor *mask = kiln_input(ctx, IN_MASK);
    if (mask && kiln_numel(mask)) KILN_TRY(mask_strides(ctx, mask, B, Nq, S, T, &d));
    KILN_CUDA_TRY(ctx, kiln_cuda_attention(kiln_cuda_of(ctx), &d, NULL, NULL));
    return KILN_OK;
}

const kiln_kernel kiln_cuda_kernels_attention_onnx[] = {
    {"", "Attention", 23, 0, onnx_attention_supports, NULL, NULL, onnx_attention_compute},
    {0},
};
