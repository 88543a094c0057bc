/* com.microsoft GroupQueryAttention, onnxruntime's CPU semantics: query heads share kv_num_heads
 * key/value heads; the KV cache is BNSH with per-batch lengths from seqlens_k (total length - 1).
 *
 * Per batch b: total_b = seqlens_k[b] + 1 and past_b = 0 on the first prompt (sequence_length ==
 * total_sequence_length), else total_b - sequence_length. present (B, N_kv, max(total_sequence_length,
 * past length), H) is the past buffer updated in place, as when onnxruntime shares one buffer for
 * past and present: the past rows are copied whole and the S new rows written from row past_b.
 * Query row s then sees keys (past_b + s - local_window_size, past_b + s] within [0, total_b).
 * head_sink / smooth_softmax add a sink score to each softmax. Rotary (do_rotary) rotates the new
 * Q and K rows at positions past_b + s (or position_ids) before they are cached. The attention
 * itself is kattn_run, the core every attention op shares. Not supported (refused by name):
 * quantized KV caches, sliding_window_cache, qk_output, q/k_norm_weight. */
#include "attention_common.h"
#include "gemm_util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { IN_Q, IN_K, IN_V, IN_PK, IN_PV, IN_SEQLENS, IN_TOTAL, IN_COS, IN_SIN, IN_POS, IN_BIAS,
       IN_SINK, GQA_SUPPORTED };

static const char *const unsupported_inputs[] = {"k_scale", "v_scale", "q_norm_weight", "k_norm_weight"};

typedef struct gqa_cfg {
    const kiln_tensor *q, *k, *v, *pk, *pv, *seqlens, *total, *cosc, *sinc, *pos, *bias, *sink;
    int64_t B, S, N, Nkv, H, P, L; /* L: present rows */
    int64_t total_len;             /* total_sequence_length (-1: unknown in static inference) */
    int packed, rotary, interleaved, causal, dtype, smooth;
    int64_t local_window, rd;
    float scale, softcap;
} gqa_cfg;

static kiln_status parse(kiln_ctx *ctx, gqa_cfg *c) {
    const kiln_node *node = ctx->node;
    char b1[128], b2[128];
    memset(c, 0, sizeof *c);
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, IN_Q, &t));
    c->q = t;
    c->k = kiln_input(ctx, IN_K);
    c->v = kiln_input(ctx, IN_V);
    c->pk = kiln_input(ctx, IN_PK);
    c->pv = kiln_input(ctx, IN_PV);
    KILN_TRY(kiln_need_input(ctx, IN_SEQLENS, &t));
    c->seqlens = t;
    KILN_TRY(kiln_need_input(ctx, IN_TOTAL, &t));
    c->total = t;
    c->cosc = ctx->n_in > IN_COS ? kiln_input(ctx, IN_COS) : NULL;
    c->sinc = ctx->n_in > IN_SIN ? kiln_input(ctx, IN_SIN) : NULL;
    c->pos = ctx->n_in > IN_POS ? kiln_input(ctx, IN_POS) : NULL;
    c->bias = ctx->n_in > IN_BIAS ? kiln_input(ctx, IN_BIAS) : NULL;
    c->sink = ctx->n_in > IN_SINK ? kiln_input(ctx, IN_SINK) : NULL;
    for (int i = GQA_SUPPORTED; i < ctx->n_in; i++)
        if (kiln_input(ctx, i))
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "input %d (%s) is not supported", i,
                             i - GQA_SUPPORTED < 4 ? unsupported_inputs[i - GQA_SUPPORTED] : "unknown");
    if (ctx->n_out > 3 && kiln_output(ctx, 3))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "output 3 (output_qk) is not supported");
    static const char *const zero_attrs[] = {"qk_output", "sliding_window_cache"};
    for (int i = 0; i < 2; i++)
        if (kiln_attr_int(node, zero_attrs[i], 0) != 0)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "attribute %s=%lld is not supported",
                             zero_attrs[i], (long long)kiln_attr_int(node, zero_attrs[i], 0));
    const char *kq = kiln_attr_string(node, "k_quant_type", "NONE");
    const char *vq = kiln_attr_string(node, "v_quant_type", "NONE");
    if (strcmp(kq, "NONE") || strcmp(vq, "NONE"))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "quantized KV cache (k_quant_type %s, v_quant_type %s) is not supported", kq, vq);
    static const int fl[] = {IN_Q, IN_K, IN_V, IN_PK, IN_PV, IN_COS, IN_SIN, IN_BIAS, IN_SINK};
    KILN_TRY(kattn_check_float_inputs(ctx, fl, 9, &c->dtype));
    c->smooth = kiln_attr_int(node, "smooth_softmax", 0) != 0;
    if (c->seqlens->dtype != KILN_DTYPE_INT32 || c->total->dtype != KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "seqlens_k and total_sequence_length must be int32, got %s and %s",
                         kiln_dtype_name(c->seqlens->dtype), kiln_dtype_name(c->total->dtype));

    c->N = kiln_attr_int(node, "num_heads", 0);
    c->Nkv = kiln_attr_int(node, "kv_num_heads", 0);
    if (c->N <= 0 || c->Nkv <= 0 || c->N % c->Nkv)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "num_heads (%lld) and kv_num_heads (%lld) must be > 0 and num_heads a "
                         "multiple of kv_num_heads", (long long)c->N, (long long)c->Nkv);
    c->rotary = kiln_attr_int(node, "do_rotary", 0) != 0;
    c->interleaved = kiln_attr_int(node, "rotary_interleaved", 0) != 0;
    c->local_window = kiln_attr_int(node, "local_window_size", -1);
    c->causal = kiln_attr_int(node, "causal", 1) != 0;
    c->softcap = kiln_attr_float(node, "softcap", 0.0f);
    if (c->softcap < 0.0f)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "softcap must be >= 0, got %g", (double)c->softcap);
    if (!c->causal && c->local_window > 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "local_window_size must be -1 when causal is 0");

    const kiln_tensor *q = c->q;
    if (q->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "query must be 3-D (B, S, D), got %s",
                         kattn_shape(q, b1, sizeof b1));
    c->B = q->dims[0];
    c->S = q->dims[1];
    int64_t D = q->dims[2];
    if (!c->k && !c->v) {
        c->packed = 1;
        int64_t heads = c->N + 2 * c->Nkv;
        if (D % heads)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "packed QKV query width %lld is not divisible by num_heads + 2 * "
                             "kv_num_heads = %lld", (long long)D, (long long)heads);
        c->H = D / heads;
    } else {
        if (!c->k || !c->v)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "key and value must both be present, or both absent (packed QKV)");
        if (D % c->N)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "query hidden size %lld is not divisible by num_heads %lld", (long long)D,
                             (long long)c->N);
        c->H = D / c->N;
        int64_t kd[3] = {c->B, c->S, c->Nkv * c->H};
        const kiln_tensor *kv[2] = {c->k, c->v};
        for (int i = 0; i < 2; i++)
            if (kv[i]->rank != 3 || memcmp(kv[i]->dims, kd, sizeof kd))
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "%s %s must be (B, S, kv_num_heads * head_size) = (%lld, %lld, %lld)",
                                 i ? "value" : "key", kattn_shape(kv[i], b1, sizeof b1), (long long)kd[0],
                                 (long long)kd[1], (long long)kd[2]);
    }
    if ((c->pk == NULL) != (c->pv == NULL))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "past_key and past_value must both be present or both be absent");
    if (c->pk) {
        const kiln_tensor *pp[2] = {c->pk, c->pv};
        for (int i = 0; i < 2; i++) {
            const int64_t *d = pp[i]->dims;
            if (pp[i]->rank != 4 || d[0] != c->B || d[1] != c->Nkv || d[3] != c->H ||
                d[2] != c->pk->dims[2])
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "%s %s must be BNSH (B=%lld, kv_num_heads=%lld, P, head_size=%lld)%s",
                                 i ? "past_value" : "past_key", kattn_shape(pp[i], b1, sizeof b1),
                                 (long long)c->B, (long long)c->Nkv, (long long)c->H,
                                 i ? " like past_key" : "");
        }
        c->P = c->pk->dims[2];
    }
    if (c->seqlens->rank != 1 || c->seqlens->dims[0] != c->B)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "seqlens_k %s must be 1-D of length batch=%lld",
                         kattn_shape(c->seqlens, b1, sizeof b1), (long long)c->B);
    if (kiln_numel(c->total) != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "total_sequence_length %s must hold one value",
                         kattn_shape(c->total, b1, sizeof b1));
    c->total_len = -1;
    c->L = -1;
    if (c->total->data && kattn_host_readable(c->total)) {
        c->total_len = *(const int32_t *)c->total->data;
        if (c->total_len < c->S)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "total_sequence_length %lld is less than sequence_length %lld",
                             (long long)c->total_len, (long long)c->S);
        if (c->S > 1 && c->S != c->total_len && c->B != 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "batch_size must be 1 when sequence_length > 1 and past context is given");
        c->L = c->total_len > c->P ? c->total_len : c->P;
        int64_t pd[4] = {c->B, c->Nkv, c->L, c->H};
        if (kiln_dims_numel(4, pd) < 0 || kiln_dims_numel(4, pd) > INT64_MAX / 8)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "a KV cache of (%lld, %lld, %lld, %lld) is too large", (long long)pd[0],
                             (long long)pd[1], (long long)pd[2], (long long)pd[3]);
    }
    float sc = kiln_attr_float(node, "scale", 0.0f);
    c->scale = sc != 0.0f ? sc : 1.0f / sqrtf((float)c->H);

    if (c->rotary) {
        if (!c->cosc || !c->sinc)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "do_rotary=1 needs cos_cache and sin_cache");
        if (c->cosc->rank != 2 || !kiln_shape_equal(c->cosc, c->sinc) || c->cosc->dims[1] * 2 > c->H ||
            c->cosc->dims[1] == 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "cos_cache %s and sin_cache %s must both be (max_sequence_length, "
                             "rotary_dim / 2) with rotary_dim <= head_size %lld",
                             kattn_shape(c->cosc, b1, sizeof b1), kattn_shape(c->sinc, b2, sizeof b2),
                             (long long)c->H);
        c->rd = c->cosc->dims[1] * 2;
        if (c->pos && (c->pos->dtype != KILN_DTYPE_INT64 || c->pos->rank != 2 ||
                       c->pos->dims[0] != c->B || c->pos->dims[1] != c->S))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "position_ids must be int64 (B=%lld, S=%lld), got %s %s", (long long)c->B,
                             (long long)c->S, kiln_dtype_name(c->pos->dtype),
                             kattn_shape(c->pos, b1, sizeof b1));
    }
    if (c->bias) {
        const int64_t *d = c->bias->dims;
        if (c->bias->rank != 4 || (d[0] != 1 && d[0] != c->B) || (d[1] != 1 && d[1] != c->N) ||
            d[2] != c->S || (c->total_len >= 0 && d[3] != c->total_len))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "attention_bias %s must be (B or 1, num_heads or 1, S=%lld, "
                             "total_sequence_length=%lld)", kattn_shape(c->bias, b1, sizeof b1),
                             (long long)c->S, (long long)c->total_len);
    }
    if (c->sink && (c->sink->rank != 1 || c->sink->dims[0] != c->N))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "head_sink %s must be 1-D of length num_heads=%lld",
                         kattn_shape(c->sink, b1, sizeof b1), (long long)c->N);
    return KILN_OK;
}

kiln_status kattn_gqa_infer(kiln_ctx *ctx) {
    static const int ins[] = {IN_Q, IN_K, IN_V, IN_PK, IN_PV, IN_SEQLENS, IN_TOTAL};
    const kiln_tensor *q = kiln_input(ctx, IN_Q);
    if (kattn_static_unknown(ctx, ins, 7, q ? q->dtype : KILN_DTYPE_FLOAT)) return KILN_OK;
    gqa_cfg c;
    KILN_TRY(parse(ctx, &c));
    int64_t od[3] = {c.B, c.S, c.N * c.H};
    KILN_TRY(kiln_set_output(ctx, 0, c.dtype, 3, od));
    for (int o = 1; o < 3 && o < ctx->n_out; o++) {
        if (!kiln_output(ctx, o)) continue;
        if (c.L < 0) { /* total_sequence_length not known before running */
            KILN_TRY(kiln_set_output_unknown(ctx, o, c.dtype));
        } else {
            int64_t pd[4] = {c.B, c.Nkv, c.L, c.H};
            KILN_TRY(kiln_set_output(ctx, o, c.dtype, 4, pd));
        }
    }
    return KILN_OK;
}

typedef struct cache_job {
    float *dst;             /* (B, Nkv, L, H) */
    const float *past;      /* (B, Nkv, P, H) or NULL */
    kattn_view v;           /* the S new rows */
    const int64_t *past_b;
    int64_t Nkv, L, P, S, H;
} cache_job;

static void cache_range(void *arg, int64_t begin, int64_t end) {
    const cache_job *j = arg;
    size_t row = sizeof(float) * (size_t)j->H;
    for (int64_t bn = begin; bn < end; bn++) {
        int64_t b = bn / j->Nkv, n = bn % j->Nkv;
        float *d = j->dst + bn * j->L * j->H;
        int64_t keep = j->P < j->L ? j->P : j->L;
        if (j->past && keep > 0) memcpy(d, j->past + bn * j->P * j->H, row * (size_t)keep);
        if (j->L > keep) memset(d + keep * j->H, 0, row * (size_t)(j->L - keep));
        const float *src = j->v.p + b * j->v.sb + n * j->v.sn;
        for (int64_t s = 0; s < j->S; s++)
            memcpy(d + (j->past_b[b] + s) * j->H, src + s * j->v.ss, row);
    }
}

/* A contiguous (B, S, heads, H) copy of the view v (the rows rotary will rotate). */
static float *copy_bsnh(const kattn_view *v, int64_t B, int64_t S, int64_t heads, int64_t H) {
    float *d = malloc(sizeof(float) * (size_t)(B * S * heads * H > 0 ? B * S * heads * H : 1));
    if (!d) return NULL;
    for (int64_t b = 0; b < B; b++)
        for (int64_t s = 0; s < S; s++)
            for (int64_t n = 0; n < heads; n++)
                memcpy(d + ((b * S + s) * heads + n) * H, v->p + b * v->sb + n * v->sn + s * v->ss,
                       sizeof(float) * (size_t)H);
    return d;
}

kiln_status kattn_gqa_compute(kiln_ctx *ctx) {
    if (kattn_has_half(ctx)) return kattn_compute_as_f32(ctx, kattn_gqa_compute);
    gqa_cfg c;
    KILN_TRY(parse(ctx, &c));
    kiln_tensor *out = kiln_output(ctx, 0);
    kiln_tensor *pres[2] = {ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL,
                            ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL};
    int64_t B = c.B, S = c.S, N = c.N, Nkv = c.Nkv, H = c.H, L = c.L;
    int first = S == c.total_len;
    const int32_t *seqlens = c.seqlens->data;

    int64_t *pb = malloc(sizeof(int64_t) * (size_t)(2 * B + 1)), *hi = pb ? pb + B : NULL;
    int64_t *pos = NULL;
    float *ws[4] = {0}; /* rotated q, rotated k, caches not wanted as outputs */
    kiln_status st = KILN_OK;
    if (!pb) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int64_t b = 0; b < B && st == KILN_OK; b++) {
        int64_t tot = (int64_t)seqlens[b] + 1;
        pb[b] = first ? 0 : tot - S;
        hi[b] = tot;
        if (tot < 1 || tot > c.total_len || (first && tot > S))
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                           "seqlens_k[%lld] = %d is outside [0, %lld)", (long long)b, (int)seqlens[b],
                           (long long)(first ? S : c.total_len));
        else if (!first && (pb[b] < 0 || pb[b] > c.P))
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                           "seqlens_k[%lld] = %d needs %lld past rows but past_key holds %lld",
                           (long long)b, (int)seqlens[b], (long long)pb[b], (long long)c.P);
    }
    if (st != KILN_OK) {
        free(pb);
        return st;
    }

    const float *qd = c.q->data;
    int64_t D = c.q->dims[2];
    kattn_view qv, kv, vv;
    if (c.packed) {
        qv = (kattn_view){qd, S * D, H, D};
        kv = (kattn_view){qd + N * H, S * D, H, D};
        vv = (kattn_view){qd + (N + Nkv) * H, S * D, H, D};
    } else {
        qv = (kattn_view){qd, S * D, H, D};
        kv = (kattn_view){c.k->data, S * Nkv * H, H, Nkv * H};
        vv = (kattn_view){c.v->data, S * Nkv * H, H, Nkv * H};
    }

    if (c.rotary) {
        pos = malloc(sizeof(int64_t) * (size_t)(B * S > 0 ? B * S : 1));
        if (!pos) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        int64_t rows = c.cosc->dims[0];
        for (int64_t b = 0; b < B && st == KILN_OK; b++)
            for (int64_t s = 0; s < S && st == KILN_OK; s++) {
                int64_t p = c.pos ? ((const int64_t *)c.pos->data)[b * S + s]
                          : pb[b] + s < hi[b] ? pb[b] + s : 1; /* padding rows: onnxruntime uses 1 */
                if (p < 0 || p >= rows)
                    st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                   "rotary position %lld (batch %lld, token %lld) is outside cos_cache's "
                                   "%lld rows", (long long)p, (long long)b, (long long)s, (long long)rows);
                else
                    pos[b * S + s] = p;
            }
        if (st == KILN_OK) {
            ws[0] = copy_bsnh(&qv, B, S, N, H);
            ws[1] = copy_bsnh(&kv, B, S, Nkv, H);
            if (!ws[0] || !ws[1]) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        }
        if (st == KILN_OK) {
            const float *cs = c.cosc->data, *sn = c.sinc->data;
            kattn_rope_bsnh(ctx, ws[0], B, S, N, H, c.rd, cs, sn, pos, c.interleaved);
            kattn_rope_bsnh(ctx, ws[1], B, S, Nkv, H, c.rd, cs, sn, pos, c.interleaved);
            qv = (kattn_view){ws[0], S * N * H, H, N * H};
            kv = (kattn_view){ws[1], S * Nkv * H, H, Nkv * H};
        }
    }

    /* present K and V: the past buffer updated with the new rows */
    float *cache[2] = {NULL, NULL};
    const kiln_tensor *past[2] = {c.pk, c.pv};
    const kattn_view *nv[2] = {&kv, &vv};
    for (int i = 0; i < 2 && st == KILN_OK; i++) {
        cache[i] = pres[i] ? pres[i]->data : NULL;
        if (!cache[i]) {
            ws[2 + i] = malloc(sizeof(float) * (size_t)(B * Nkv * L * H > 0 ? B * Nkv * L * H : 1));
            if (!ws[2 + i]) {
                st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the KV cache");
                break;
            }
            cache[i] = ws[2 + i];
        }
        cache_job j = {cache[i], past[i] ? past[i]->data : NULL, *nv[i], pb, Nkv, L, c.P, S, H};
        kiln_parallel_for(ctx, B * Nkv, kpar_grain(B * Nkv, (double)(B * Nkv * L * H) * 0.3),
                          cache_range, &j);
    }

    if (st == KILN_OK) {
        kattn_sdpa p;
        memset(&p, 0, sizeof p);
        p.B = B;
        p.N = N;
        p.N_kv = Nkv;
        p.S = S;
        p.T = L;
        p.H = p.Hv = H;
        p.scale = c.scale;
        p.softcap = c.softcap;
        p.causal = c.causal;
        p.past_b = pb;
        p.local_window = c.causal ? c.local_window : 0;
        p.sink = c.sink ? c.sink->data : NULL;
        p.smooth = c.smooth;
        p.q = qv;
        p.k = (kattn_view){cache[0], Nkv * L * H, L * H, H};
        p.v = (kattn_view){cache[1], Nkv * L * H, L * H, H};
        /* keys [0, total_b) exist for batch b; a hard window */
        int64_t *lo = calloc((size_t)(B > 0 ? B : 1), sizeof(int64_t));
        if (!lo) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        if (st == KILN_OK) {
            p.key_lo = lo;
            p.key_hi = hi;
            if (c.bias) {
                const int64_t *d = c.bias->dims;
                p.add[0] = (kattn_addend){c.bias->data, d[0] == 1 ? 0 : d[1] * S * d[3],
                                          d[1] == 1 ? 0 : S * d[3], d[3], d[3]};
            }
            p.out = out->data;
            p.o_sb = S * N * H;
            p.o_sn = H;
            p.o_ss = N * H;
            st = kattn_run(ctx, &p);
        }
        free(lo);
    }
    for (int i = 0; i < 4; i++) free(ws[i]);
    free(pos);
    free(pb);
    return st;
}
