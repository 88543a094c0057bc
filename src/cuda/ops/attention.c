/* com.microsoft MultiHeadAttention, PackedMultiHeadAttention and Attention on the CUDA provider,
 * float16 / bfloat16 (placement checks in attention_supports.c, RotaryEmbedding in
 * attention_rotary.c).
 *
 * The op definitions (infer) are the CPU ops'; inputs arrive in device memory and outputs are
 * allocated. Each compute describes the problem as one kiln_cuda_sdpa (strided views of Q, K, V
 * read in place) and enqueues, on the provider's stream: the projection GEMM (Attention, cuBLAS),
 * bias adds into scratch (kernels/attention.cu), KV-cache copies into the present outputs, then
 * the fused attention dispatcher (attention/attention_dispatch.h). Nothing is read on the host.
 *
 * What the kernels have no form for is rejected in supports() (the node then runs on the CPU):
 * float32, raw 0/1 masks ((B,L), (B,T), (B,S,T), 4-D), (2B) end/start masks, Attention's shared
 * past/present buffer, unidirectional cross-attention, and packed sequences that only the unfused
 * path could take (it reads cumulative_sequence_length on the host). What only the values can
 * tell (a (2B) mask whose length was not known statically, lengths L != S) fails at compute with
 * the reason.
 *
 * Scratch comes from the provider workspace. The dispatcher's unfused path takes the same
 * workspace from offset 0 when it runs, so when kiln_cuda_attention_select says it will, this
 * glue's buffers sit behind the room the unfused path needs (unfused_scratch_bound). */
#include "../cuda_ep.h"
#include "../attention/attention_dispatch.h"
#include "../attention/attention_internal.h"
#include "../kernels/attention.h"
#include "attention_glue.h"

#include <cublas_v2.h>
#include <limits.h>
#include <stdint.h>
#include <string.h>

enum { ES = 2 }; /* bytes per float16 / bfloat16 element */

/* ---------------------------------------------------------------- shared compute pieces */

static size_t al256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Reserves bytes in a layout of 256-byte aligned buffers; returns the offset. */
static size_t take(size_t *total, size_t bytes) {
    size_t off = *total;
    *total += al256(bytes);
    return off;
}

/* An upper bound of the workspace kiln_cuda_attention_unfused asks for on d. It mirrors that
 * function's chunking (src/cuda/attention/gpu/attention_unfused.cu): a chunk of heads × query rows
 * of fp32 scores and 16-bit probabilities, at most the larger of one key row and the smaller of
 * the cap and every head's rows. Keep the two in step. */
static size_t unfused_scratch_bound(const kiln_cuda_sdpa *d) {
    size_t cap = kiln_attn_env_get()->unfused_ws_bytes;
    size_t row = (size_t)d->T * (sizeof(float) + ES);
    size_t all = row * (size_t)d->S * (size_t)d->N;
    size_t b = all < cap ? all : cap;
    return b > row ? b : row;
}

/* The node's own scratch (bytes, 256-aligned) in the provider workspace, behind the room the
 * unfused path takes when it is the kernel that will run probe (same as the final description up
 * to the scratch pointers, which keep their alignment). base is NULL when bytes is 0. */
static kiln_status get_scratch(kiln_ctx *ctx, const kiln_cuda_sdpa *probe, size_t bytes, char **base) {
    *base = NULL;
    if (!bytes) return KILN_OK;
    kiln_cuda_provider *p = kiln_cuda_of(ctx);
    kiln_cuda_attn_choice c;
    kiln_cuda_attention_select(p, probe, NULL, &c);
    size_t front = c.kernel == KILN_ATTN_KERNEL_UNFUSED ? al256(unfused_scratch_bound(probe))
                   : c.kernel == KILN_ATTN_KERNEL_DECODE ? al256(kiln_cuda_decode_workspace(p, probe))
                                                          : 0;
    void *ws;
    KILN_CUDA_TRY(ctx, kiln_cuda_workspace(p, front + bytes, &ws));
    *base = (char *)ws + front;
    return KILN_OK;
}

/* A stand-in scratch base for the probe: 256-aligned like the real one, never dereferenced. */
static char *probe_base(void) { return (char *)(uintptr_t)4096; }

static int fits_int(int64_t v) { return v >= 0 && v <= INT_MAX; }

static kiln_status check_ints(kiln_ctx *ctx, const int64_t *v, int n) {
    for (int i = 0; i < n; i++)
        if (!fits_int(v[i]))
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                             "a size (%lld) exceeds what the GPU attention kernels index", (long long)v[i]);
    return KILN_OK;
}

static void set_rpb(kiln_cuda_sdpa *d, const kiln_tensor *rpb) {
    if (!rpb) return;
    d->bias = rpb->data;
    d->bias_ss = d->T;
    d->bias_sn = (int64_t)d->S * d->T;
    d->bias_sb = rpb->dims[0] == 1 ? 0 : (int64_t)d->N * d->S * d->T;
}

/* Runs d into out. No query rows: nothing to do; no keys: every row sees nothing and is zero
 * (the key/value pointers of empty tensors may be NULL, which the dispatcher refuses). */
static kiln_status run_attention(kiln_ctx *ctx, const kiln_cuda_sdpa *d, kiln_tensor *out) {
    if (d->B == 0 || d->S == 0 || kiln_numel(out) == 0) return KILN_OK;
    kiln_cuda_provider *p = kiln_cuda_of(ctx);
    if (d->T == 0) {
        KILN_CUDA_TRY(ctx, kiln_cuda_memset(p, out->data, 0, kiln_tensor_nbytes(out)));
        return KILN_OK;
    }
    KILN_CUDA_TRY(ctx, kiln_cuda_attention(p, d, NULL, NULL));
    return KILN_OK;
}

/* KV cache for one of K, V: rows [0, P) of dst (B, N, P + L, H) from past (B, N, P, H), rows
 * [P, P + L) from the new rows seen through v. */
static kiln_status cache_append(kiln_ctx *ctx, int dtype, void *dst, const void *past, int64_t P,
                                const kiln_cuda_view *v, int64_t B, int64_t N, int64_t L, int64_t H) {
    kiln_cuda_provider *p = kiln_cuda_of(ctx);
    if (past && P > 0) {
        kiln_cuda_view pv = {past, N * P * H, P * H, H};
        KILN_CUDA_TRY(ctx, kiln_cuda_copy_bnsh(p, dtype, dst, P + L, 0, &pv, (int)B, (int)N, (int)P, (int)H));
    }
    KILN_CUDA_TRY(ctx, kiln_cuda_copy_bnsh(p, dtype, dst, P + L, P, v, (int)B, (int)N, (int)L, (int)H));
    return KILN_OK;
}

static kiln_status add_bias(kiln_ctx *ctx, int dtype, void *dst, const void *src, int64_t rows, int64_t N,
                            int64_t J, int64_t H, const void *bias, int64_t bias_seg) {
    void *stream = kiln_cuda_stream(kiln_cuda_of(ctx));
    KILN_CUDA_TRY(ctx, kiln_cuda_attn_add_bias(stream, dtype, dst, src, rows, N, J, H, bias, bias_seg));
    return KILN_OK;
}

/* ---------------------------------------------------------------- MultiHeadAttention */

enum { MHA_Q_K_V, MHA_Q_KV, MHA_QKV, MHA_CACHED_KV };

typedef struct mha_plan {
    int dtype, format, causal;
    float scale;
    int64_t B, S, L, P, T, N, H, Hv, D, Dv;
    const char *q, *k, *v;
    const kiln_tensor *bias, *mask, *rpb, *past_k, *past_v;
    kiln_tensor *out, *present_k, *present_v;
    size_t off_q, off_k, off_v, off_kall, off_vall, scratch; /* scratch layout */
} mha_plan;

static kiln_status mha_plan_make(kiln_ctx *ctx, mha_plan *m) {
    memset(m, 0, sizeof *m);
    const kiln_tensor *q = kiln_input(ctx, 0), *k = kiln_input(ctx, 1), *v = kiln_input(ctx, 2);
    m->bias = kiln_input(ctx, 3);
    m->mask = kiln_input(ctx, 4);
    m->rpb = kiln_input(ctx, 5);
    m->past_k = kiln_input(ctx, 6);
    m->past_v = kiln_input(ctx, 7);
    m->out = kiln_output(ctx, 0);
    m->present_k = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    m->present_v = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    if (!q || !m->out) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "query and output 0 are required");
    m->dtype = q->dtype;
    m->q = q->data;
    m->k = k ? k->data : NULL;
    m->v = v ? v->data : NULL;
    m->N = kiln_attr_int(ctx->node, "num_heads", 0);
    m->B = q->dims[0];
    m->S = q->dims[1];
    if (q->rank == 5) {
        m->format = MHA_QKV;
        m->H = m->Hv = q->dims[4];
        m->L = m->S;
    } else if (k->rank == 5) {
        m->format = MHA_Q_KV;
        m->H = m->Hv = k->dims[4];
        m->L = k->dims[1];
    } else if (k->rank == 4) {
        m->format = MHA_CACHED_KV;
        m->H = k->dims[3];
        m->Hv = v->dims[3];
        m->L = k->dims[2];
    } else {
        m->format = MHA_Q_K_V;
        m->H = q->dims[2] / m->N;
        m->Hv = v->dims[2] / m->N;
        m->L = k->dims[1];
    }
    m->D = m->N * m->H;
    m->Dv = m->N * m->Hv;
    m->P = m->past_k ? m->past_k->dims[2] : 0;
    m->T = m->P + m->L;
    m->scale = kiln_attr_float(ctx->node, "scale", 0.0f);
    m->causal = kiln_attr_int(ctx->node, "unidirectional", 0) != 0;
    if (m->causal && m->L != m->S)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "unidirectional with key length %lld != query length %lld has no GPU form (the "
                         "kernels align the causal diagonal to the last key)", (long long)m->L, (long long)m->S);
    const int64_t sizes[] = {m->B, m->S, m->T, m->N, m->H, m->Hv};
    KILN_TRY(check_ints(ctx, sizes, 6));

    /* scratch: biased copies, and K/V with past when present is not wanted */
    size_t total = 0;
    if (m->bias) {
        if (m->format == MHA_QKV) {
            m->off_q = take(&total, (size_t)(m->B * m->S * 3 * m->D) * ES);
        } else {
            m->off_q = take(&total, (size_t)(m->B * m->S * m->D) * ES);
            if (m->format == MHA_Q_K_V) { /* cached BNSH K/V take no bias */
                m->off_k = take(&total, (size_t)(m->B * m->L * m->D) * ES);
                m->off_v = take(&total, (size_t)(m->B * m->L * m->Dv) * ES);
            }
        }
    }
    if (m->past_k && !m->present_k) m->off_kall = take(&total, (size_t)(m->B * m->N * m->T * m->H) * ES);
    if (m->past_v && !m->present_v) m->off_vall = take(&total, (size_t)(m->B * m->N * m->T * m->Hv) * ES);
    m->scratch = total;
    return KILN_OK;
}

/* Where K_all (which = 0) or V_all (1) goes: present, or scratch when only past needs it. */
static char *mha_kv_dest(const mha_plan *m, char *base, int which) {
    kiln_tensor *present = which ? m->present_v : m->present_k;
    const kiln_tensor *past = which ? m->past_v : m->past_k;
    if (present) return present->data;
    return past ? base + (which ? m->off_vall : m->off_kall) : NULL;
}

/* The attention over scratch at base; nk / nv: the new key / value rows (before the cache). */
static void mha_sdpa(const mha_plan *m, char *base, kiln_cuda_sdpa *d, kiln_cuda_view *nk, kiln_cuda_view *nv) {
    int64_t B = m->B, S = m->S, L = m->L, N = m->N, H = m->H, Hv = m->Hv, D = m->D, Dv = m->Dv;
    const char *q = m->bias ? base + m->off_q : m->q;
    memset(d, 0, sizeof *d);
    switch (m->format) {
    case MHA_QKV: /* (B, S, N, 3, H) */
        d->q = (kiln_cuda_view){q, S * N * 3 * H, 3 * H, N * 3 * H};
        *nk = (kiln_cuda_view){q + H * ES, S * N * 3 * H, 3 * H, N * 3 * H};
        *nv = (kiln_cuda_view){q + 2 * H * ES, S * N * 3 * H, 3 * H, N * 3 * H};
        break;
    case MHA_Q_KV: /* kv (B, L, N, 2, H) */
        d->q = (kiln_cuda_view){q, S * D, H, D};
        *nk = (kiln_cuda_view){m->k, L * N * 2 * H, 2 * H, N * 2 * H};
        *nv = (kiln_cuda_view){m->k + H * ES, L * N * 2 * H, 2 * H, N * 2 * H};
        break;
    case MHA_CACHED_KV: /* k, v (B, N, L, H) */
        d->q = (kiln_cuda_view){q, S * D, H, D};
        *nk = (kiln_cuda_view){m->k, N * L * H, L * H, H};
        *nv = (kiln_cuda_view){m->v, N * L * Hv, L * Hv, Hv};
        break;
    default: { /* (B, L, D) */
        const char *k = m->bias ? base + m->off_k : m->k, *v = m->bias ? base + m->off_v : m->v;
        d->q = (kiln_cuda_view){q, S * D, H, D};
        *nk = (kiln_cuda_view){k, L * D, H, D};
        *nv = (kiln_cuda_view){v, L * Dv, Hv, Dv};
        break;
    }
    }
    d->dtype = m->dtype;
    d->B = (int)B;
    d->N = d->N_kv = (int)N;
    d->S = (int)S;
    d->T = (int)m->T;
    d->H = (int)H;
    d->Hv = (int)Hv;
    d->scale = m->scale;
    d->causal = m->causal;
    d->k = *nk;
    d->v = *nv;
    /* with past, attention reads the whole cache where it now lives */
    if (m->past_k) {
        int64_t T = m->T;
        d->k = (kiln_cuda_view){mha_kv_dest(m, base, 0), N * T * H, T * H, H};
        d->v = (kiln_cuda_view){mha_kv_dest(m, base, 1), N * T * Hv, T * Hv, Hv};
    }
    d->out = m->out->data;
    d->o_sb = S * Dv;
    d->o_sn = Hv;
    d->o_ss = Dv;
    d->key_lens = m->mask ? m->mask->data : NULL; /* (B) or (3B+2): key lengths first */
    set_rpb(d, m->rpb);
}

static kiln_status mha_compute(kiln_ctx *ctx) {
    const kiln_tensor *q0 = kiln_input(ctx, 0);
    if (q0 && q0->dtype == KILN_DTYPE_FLOAT8E4M3FN) return kattn_cuda_mha_fp8_compute(ctx);
    mha_plan m;
    KILN_TRY(mha_plan_make(ctx, &m));
    kiln_cuda_sdpa d;
    kiln_cuda_view nk, nv;
    mha_sdpa(&m, probe_base(), &d, &nk, &nv);
    char *base;
    KILN_TRY(get_scratch(ctx, &d, m.scratch, &base));
    mha_sdpa(&m, base, &d, &nk, &nv);

    if (m.bias) {
        const char *b = m.bias->data;
        if (m.format == MHA_QKV) {
            KILN_TRY(add_bias(ctx, m.dtype, base + m.off_q, m.q, m.B * m.S, m.N, 3, m.H, b, m.D));
        } else {
            KILN_TRY(add_bias(ctx, m.dtype, base + m.off_q, m.q, m.B * m.S, 1, 1, m.D, b, 0));
            if (m.format == MHA_Q_K_V) {
                KILN_TRY(add_bias(ctx, m.dtype, base + m.off_k, m.k, m.B * m.L, 1, 1, m.D, b + m.D * ES, 0));
                KILN_TRY(add_bias(ctx, m.dtype, base + m.off_v, m.v, m.B * m.L, 1, 1, m.Dv, b + 2 * m.D * ES, 0));
            }
        }
    }
    char *kall = mha_kv_dest(&m, base, 0), *vall = mha_kv_dest(&m, base, 1);
    const void *pk = m.past_k ? m.past_k->data : NULL, *pv = m.past_v ? m.past_v->data : NULL;
    if (kall) KILN_TRY(cache_append(ctx, m.dtype, kall, pk, m.P, &nk, m.B, m.N, m.L, m.H));
    if (vall) KILN_TRY(cache_append(ctx, m.dtype, vall, pv, m.P, &nv, m.B, m.N, m.L, m.Hv));
    return run_attention(ctx, &d, m.out);
}

/* ---------------------------------------------------------------- PackedMultiHeadAttention */

typedef struct packed_plan {
    int dtype, qkv_packed;
    float scale;
    int64_t tokens, B, S, N, H, Hv, D, Dv;
    const char *q, *k, *v;
    const kiln_tensor *bias, *cu;
    kiln_tensor *out;
    size_t off_q, off_k, off_v, scratch;
} packed_plan;

static void packed_plan_make(kiln_ctx *ctx, packed_plan *m) {
    memset(m, 0, sizeof *m);
    const kiln_tensor *q = kiln_input(ctx, 0), *k = kiln_input(ctx, 1), *v = kiln_input(ctx, 2);
    const kiln_tensor *offs = kiln_input(ctx, 4);
    m->bias = kiln_input(ctx, 3);
    m->cu = kiln_input(ctx, 5);
    m->out = kiln_output(ctx, 0);
    m->dtype = q->dtype;
    m->N = kiln_attr_int(ctx->node, "num_heads", 0);
    m->scale = kiln_attr_float(ctx->node, "scale", 0.0f);
    m->tokens = q->dims[0];
    m->B = offs->dims[0];
    m->S = offs->dims[1];
    m->q = q->data;
    m->k = k ? k->data : NULL;
    m->v = v ? v->data : NULL;
    if (q->rank == 4) {
        m->qkv_packed = 1;
        m->H = m->Hv = q->dims[3];
    } else {
        m->H = q->dims[1] / m->N;
        m->Hv = v->dims[1] / m->N;
    }
    m->D = m->N * m->H;
    m->Dv = m->N * m->Hv;
    size_t total = 0;
    if (m->bias) {
        m->off_q = take(&total, (size_t)(m->tokens * (m->qkv_packed ? 3 * m->D : m->D)) * ES);
        if (!m->qkv_packed) {
            m->off_k = take(&total, (size_t)(m->tokens * m->D) * ES);
            m->off_v = take(&total, (size_t)(m->tokens * m->Dv) * ES);
        }
    }
    m->scratch = total;
}

static void packed_sdpa(const packed_plan *m, char *base, kiln_cuda_sdpa *d) {
    int64_t N = m->N, H = m->H, Hv = m->Hv, D = m->D, Dv = m->Dv;
    const char *q = m->bias ? base + m->off_q : m->q;
    memset(d, 0, sizeof *d);
    if (m->qkv_packed) { /* (tokens, N, 3, H) */
        d->q = (kiln_cuda_view){q, 0, 3 * H, N * 3 * H};
        d->k = (kiln_cuda_view){q + H * ES, 0, 3 * H, N * 3 * H};
        d->v = (kiln_cuda_view){q + 2 * H * ES, 0, 3 * H, N * 3 * H};
    } else {
        const char *k = m->bias ? base + m->off_k : m->k, *v = m->bias ? base + m->off_v : m->v;
        d->q = (kiln_cuda_view){q, 0, H, D};
        d->k = (kiln_cuda_view){k, 0, H, D};
        d->v = (kiln_cuda_view){v, 0, Hv, Dv};
    }
    d->dtype = m->dtype;
    d->B = (int)m->B;
    d->N = d->N_kv = (int)N;
    d->S = d->T = (int)m->S;
    d->H = (int)H;
    d->Hv = (int)Hv;
    d->scale = m->scale;
    d->out = m->out->data;
    d->o_sb = 0;
    d->o_sn = Hv;
    d->o_ss = Dv;
    d->cu_seqlens_q = d->cu_seqlens_k = m->cu->data;
}

static kiln_status packed_mha_compute(kiln_ctx *ctx) {
    if (ctx->n_in > 6 && kiln_input(ctx, 6))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "relative_position_bias has no GPU form with packed "
                         "sequences");
    packed_plan m;
    packed_plan_make(ctx, &m);
    if (m.tokens == 0 || m.B == 0) return KILN_OK;
    const int64_t sizes[] = {m.B, m.S, m.N, m.H, m.Hv};
    KILN_TRY(check_ints(ctx, sizes, 5));
    kiln_cuda_sdpa d;
    packed_sdpa(&m, probe_base(), &d);
    char *base;
    KILN_TRY(get_scratch(ctx, &d, m.scratch, &base));
    packed_sdpa(&m, base, &d);
    if (m.bias) {
        const char *b = m.bias->data;
        if (m.qkv_packed) {
            KILN_TRY(add_bias(ctx, m.dtype, base + m.off_q, m.q, m.tokens, m.N, 3, m.H, b, m.D));
        } else {
            KILN_TRY(add_bias(ctx, m.dtype, base + m.off_q, m.q, m.tokens, 1, 1, m.D, b, 0));
            KILN_TRY(add_bias(ctx, m.dtype, base + m.off_k, m.k, m.tokens, 1, 1, m.D, b + m.D * ES, 0));
            KILN_TRY(add_bias(ctx, m.dtype, base + m.off_v, m.v, m.tokens, 1, 1, m.Dv, b + 2 * m.D * ES, 0));
        }
    }
    return run_attention(ctx, &d, m.out);
}

/* ---------------------------------------------------------------- Attention */

typedef struct contrib_plan {
    int dtype, causal;
    float scale;
    int64_t B, S, Di, W, D, Dv, N, H, Hv, P, T;
    const kiln_tensor *x, *w, *bias, *mask, *past, *rpb;
    kiln_tensor *out, *present;
    size_t off_qkv, scratch;
} contrib_plan;

static kiln_status contrib_plan_make(kiln_ctx *ctx, contrib_plan *c) {
    memset(c, 0, sizeof *c);
    c->x = kiln_input(ctx, 0);
    c->w = kiln_input(ctx, 1);
    c->bias = kiln_input(ctx, 2);
    c->mask = kiln_input(ctx, 3);
    c->past = kiln_input(ctx, 4);
    c->rpb = kiln_input(ctx, 5);
    c->out = kiln_output(ctx, 0);
    c->present = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    c->dtype = c->x->dtype;
    c->B = c->x->dims[0];
    c->S = c->x->dims[1];
    c->Di = c->x->dims[2];
    c->W = c->w->dims[1];
    c->N = kiln_attr_int(ctx->node, "num_heads", 0);
    int nq = 0;
    const int64_t *qkv = kiln_attr_ints(ctx->node, "qkv_hidden_sizes", &nq);
    c->D = qkv && nq == 3 ? qkv[0] : c->W / 3;
    c->Dv = qkv && nq == 3 ? qkv[2] : c->W / 3;
    c->H = c->D / c->N;
    c->Hv = c->Dv / c->N;
    c->P = c->past ? c->past->dims[3] : 0;
    c->T = c->P + c->S;
    c->scale = kiln_attr_float(ctx->node, "scale", 0.0f);
    c->causal = kiln_attr_int(ctx->node, "unidirectional", 0) != 0; /* diagonal at past + s */
    if (kiln_attr_int(ctx->node, "past_present_share_buffer", 0))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "past_present_share_buffer = 1 has no GPU form");
    if (c->mask && c->mask->rank == 1 && c->mask->dims[0] == 2 * c->B && c->B > 0)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "mask_index (2B) (key end and start positions) has no form in the GPU kernels");
    if (c->mask && c->mask->rank != 1 && !(c->mask->rank == 2 && c->mask->dims[1] == 1))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "mask_index of rank %d has no form in the GPU kernels",
                         c->mask->rank);
    const int64_t sizes[] = {c->B, c->S, c->T, c->N, c->H, c->Hv, c->Di, c->W, c->B * c->S};
    KILN_TRY(check_ints(ctx, sizes, 9));
    size_t total = 0;
    c->off_qkv = take(&total, (size_t)(c->B * c->S * c->W) * ES);
    c->scratch = total;
    return KILN_OK;
}

static void contrib_sdpa(const contrib_plan *c, char *base, kiln_cuda_sdpa *d, kiln_cuda_view *nk,
                         kiln_cuda_view *nv) {
    int64_t S = c->S, W = c->W, N = c->N, T = c->T, H = c->H, Hv = c->Hv;
    const char *qkv = base + c->off_qkv;
    memset(d, 0, sizeof *d);
    d->q = (kiln_cuda_view){qkv, S * W, H, W};
    *nk = (kiln_cuda_view){qkv + c->D * ES, S * W, H, W};
    *nv = (kiln_cuda_view){qkv + 2 * c->D * ES, S * W, Hv, W};
    d->k = *nk;
    d->v = *nv;
    if (c->present) { /* (2, B, N, T, H): attention reads the cache it writes */
        char *pk = c->present->data, *pv = pk + (size_t)(c->B * N * T * H) * ES;
        d->k = (kiln_cuda_view){pk, N * T * H, T * H, H};
        d->v = (kiln_cuda_view){pv, N * T * Hv, T * Hv, Hv};
    }
    d->dtype = c->dtype;
    d->B = (int)c->B;
    d->N = d->N_kv = (int)N;
    d->S = (int)S;
    d->T = (int)T;
    d->H = (int)H;
    d->Hv = (int)Hv;
    d->scale = c->scale;
    d->causal = c->causal;
    d->out = c->out->data;
    d->o_sb = S * c->Dv;
    d->o_sn = Hv;
    d->o_ss = c->Dv;
    d->key_lens = c->mask && c->mask->rank == 1 ? c->mask->data : NULL; /* (B,1)/(1,1): no mask */
    set_rpb(d, c->rpb);
}

/* qkv (B·S, W) = x (B·S, Di) · w (Di, W) + bias, row-major. cuBLAS is column-major, so it computes
 * qkvᵀ = wᵀ · xᵀ: the row-major buffers read as the column-major transposes. */
static kiln_status contrib_project(kiln_ctx *ctx, const contrib_plan *c, void *qkv) {
    kiln_cuda_provider *p = kiln_cuda_of(ctx);
    int rows = (int)(c->B * c->S), W = (int)c->W, Di = (int)c->Di;
    if (rows == 0 || W == 0) return KILN_OK;
    if (Di == 0) {
        KILN_CUDA_TRY(ctx, kiln_cuda_memset(p, qkv, 0, (size_t)rows * W * ES));
    } else {
        cudaDataType_t t = c->dtype == KILN_DTYPE_FLOAT16 ? CUDA_R_16F : CUDA_R_16BF;
        float one = 1.0f, zero = 0.0f;
        int rc = cublasGemmEx((cublasHandle_t)kiln_cuda_cublas(p), CUBLAS_OP_N, CUBLAS_OP_N, W, rows, Di, &one,
                              c->w->data, t, W, c->x->data, t, Di, &zero, qkv, t, W, CUBLAS_COMPUTE_32F,
                              CUBLAS_GEMM_DEFAULT);
        KILN_CUDA_TRY(ctx, kiln_cublas_check(rc, "Attention projection (cublasGemmEx)"));
    }
    if (c->bias) KILN_TRY(add_bias(ctx, c->dtype, qkv, qkv, rows, 1, 1, W, c->bias->data, 0));
    return KILN_OK;
}

static kiln_status attention_compute(kiln_ctx *ctx) {
    contrib_plan c;
    KILN_TRY(contrib_plan_make(ctx, &c));
    if (kiln_numel(c.out) == 0 && (!c.present || kiln_numel(c.present) == 0)) return KILN_OK;
    kiln_cuda_sdpa d;
    kiln_cuda_view nk, nv;
    contrib_sdpa(&c, probe_base(), &d, &nk, &nv);
    char *base;
    KILN_TRY(get_scratch(ctx, &d, c.scratch, &base));
    contrib_sdpa(&c, base, &d, &nk, &nv);
    KILN_TRY(contrib_project(ctx, &c, base + c.off_qkv));
    if (c.present) {
        char *pk = c.present->data, *pv = pk + (size_t)(c.B * c.N * c.T * c.H) * ES;
        const char *past = c.past ? c.past->data : NULL;
        const char *past_v = past ? past + (size_t)(c.B * c.N * c.P * c.H) * ES : NULL;
        KILN_TRY(cache_append(ctx, c.dtype, pk, past, c.P, &nk, c.B, c.N, c.S, c.H));
        KILN_TRY(cache_append(ctx, c.dtype, pv, past_v, c.P, &nv, c.B, c.N, c.S, c.Hv));
    }
    return run_attention(ctx, &d, c.out);
}

/* ---------------------------------------------------------------- the family's table */

const kiln_kernel kiln_cuda_kernels_attention[] = {
    {"com.microsoft", "MultiHeadAttention", 1, 0, kattn_cuda_mha_supports, NULL, NULL, mha_compute},
    {"com.microsoft", "PackedMultiHeadAttention", 1, 0, kattn_cuda_packed_mha_supports, NULL, NULL,
     packed_mha_compute},
    {"com.microsoft", "Attention", 1, 0, kattn_cuda_attention_supports, NULL, NULL, attention_compute},
    {"com.microsoft", "RotaryEmbedding", 1, 0, kattn_cuda_ms_rotary_supports, NULL, NULL,
     kattn_cuda_ms_rotary_compute},
    {"", "RotaryEmbedding", 23, 0, kattn_cuda_rotary_supports, NULL, NULL, kattn_cuda_rotary_compute},
    {0},
};
