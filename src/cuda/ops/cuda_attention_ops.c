/* com.microsoft attention operators on the CUDA provider: MultiHeadAttention,
 * PackedMultiHeadAttention and Attention for float16 / bfloat16 inputs.
 *
 * The runtime keeps values on the host, so every compute stages its inputs to the device, runs
 * kiln_cuda_mha_forward / kiln_cuda_attention on the provider's stream, copies the outputs back
 * and synchronises. Validation and output shapes come from the CPU op's infer (one source of
 * truth for the spec's rules); the CPU kernels accept only float32, so infer runs them on a
 * shadow context whose fp16/bf16 inputs are relabelled float32 (infer never reads float data).
 *
 * What the GPU path does not take falls back to the CPU op: float32 inputs (directly), and for
 * fp16/bf16 the masks the GPU kernels have no form for (2-D/3-D raw masks, (2B), (3B+2), 4-D
 * Megatron) and Attention's shared past/present buffer (through float32 copies). With
 * KILN_ATTENTION_VERBOSE=1 each fallback prints one stderr line saying why; the GPU dispatcher
 * prints the kernel it ran. Every CUDA failure becomes KILN_FAIL with kiln_cuda_last_error(). */
#include "../../ops/op.h"
#include "../attention/attention_dispatch.h"
#include "../cuda_provider.h"

#include <cublas_v2.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { MAX_IO = 16 };
enum { OP_MHA, OP_PACKED_MHA, OP_ATTENTION };

typedef struct cuop_state {
    const kiln_op *cpu; /* the CPU op of the same (domain, name, opset): infer and fallback */
    int kind;
} cuop_state;

static int verbose(void) {
    /* read once: the env var is a debugging switch, not something that changes mid-run */
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("KILN_ATTENTION_VERBOSE");
        v = e && e[0] == '1';
    }
    return v;
}

static int kind_of(const char *name) {
    if (!strcmp(name, "PackedMultiHeadAttention")) return OP_PACKED_MHA;
    if (!strcmp(name, "Attention")) return OP_ATTENTION;
    return OP_MHA;
}

/* The CPU op, from state when init ran, else looked up (static inference may come first). */
static const kiln_op *cpu_op(kiln_ctx *ctx) {
    cuop_state *s = ctx->state;
    if (s && s->cpu) return s->cpu;
    return kiln_find_op(ctx->node->domain, ctx->node->op_type, ctx->opset);
}

static kiln_status op_init(kiln_ctx *ctx) {
    cuop_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    s->cpu = kiln_find_op(ctx->node->domain, ctx->node->op_type, ctx->opset);
    s->kind = kind_of(ctx->node->op_type);
    ctx->state = s;
    if (!s->cpu || !s->cpu->infer || !s->cpu->compute)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "no CPU kernel for %s to validate with",
                         ctx->node->op_type);
    return KILN_OK;
}

static void op_fini(void *state) { free(state); }

static int is_half(int dtype) { return dtype == KILN_DTYPE_FLOAT16 || dtype == KILN_DTYPE_BFLOAT16; }
static int is_floaty(int dtype) { return dtype == KILN_DTYPE_FLOAT || is_half(dtype); }

/* The element type of the op's T: input 0's. Every other floating input must match it (the CPU
 * infer would not notice a mix once relabelled, and the GPU kernels take one dtype). */
static kiln_status op_dtype(kiln_ctx *ctx, int *dtype) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    *dtype = x->dtype;
    for (int i = 1; i < ctx->n_in; i++) {
        kiln_tensor *t = kiln_input(ctx, i);
        if (t && is_floaty(t->dtype) && t->dtype != x->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input %d has element type %s but input 0 has %s (they must match)", i,
                             kiln_dtype_name(t->dtype), kiln_dtype_name(x->dtype));
    }
    return KILN_OK;
}

/* Runs the CPU infer with fp16/bf16 inputs relabelled float32, then gives the outputs the real
 * dtype. Shapes and data pointers are shared; only dtype fields differ in the shadow values. */
static kiln_status infer_shadow(kiln_ctx *ctx, const kiln_op *cpu, int dtype) {
    if (ctx->n_in > MAX_IO || ctx->n_out > MAX_IO)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many inputs/outputs");
    kiln_value in_sh[MAX_IO], out_sh[MAX_IO];
    kiln_value *inp[MAX_IO], *outp[MAX_IO];
    for (int i = 0; i < ctx->n_in; i++) {
        inp[i] = NULL;
        if (!ctx->in[i]) continue;
        in_sh[i] = *ctx->in[i];
        if (in_sh[i].kind == KILN_KIND_TENSOR && in_sh[i].t.dtype == dtype)
            in_sh[i].t.dtype = KILN_DTYPE_FLOAT;
        inp[i] = &in_sh[i];
    }
    for (int i = 0; i < ctx->n_out; i++) {
        outp[i] = NULL;
        if (!ctx->out[i]) continue;
        out_sh[i] = *ctx->out[i];
        outp[i] = &out_sh[i];
    }
    kiln_ctx sh = *ctx;
    sh.in = inp;
    sh.out = outp;
    kiln_status st = cpu->infer(&sh);
    if (st != KILN_OK) return st;
    for (int i = 0; i < ctx->n_out; i++) {
        if (!ctx->out[i]) continue;
        kiln_value *v = ctx->out[i];
        v->kind = out_sh[i].kind;
        v->t.dtype = out_sh[i].t.dtype == KILN_DTYPE_FLOAT ? dtype : out_sh[i].t.dtype;
        v->t.rank = out_sh[i].t.rank;
        memcpy(v->t.dims, out_sh[i].t.dims, sizeof v->t.dims);
    }
    return KILN_OK;
}

static kiln_status op_infer(kiln_ctx *ctx) {
    const kiln_op *cpu = cpu_op(ctx);
    if (!cpu) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "no CPU kernel to validate with");
    int dtype;
    KILN_TRY(op_dtype(ctx, &dtype));
    if (!is_half(dtype)) return cpu->infer(ctx);
    return infer_shadow(ctx, cpu, dtype);
}

/* ---- host conversions (fallback and bias) ---- */

static float half_get(int dtype, const void *p, int64_t i) {
    const uint16_t *h = p;
    return dtype == KILN_DTYPE_FLOAT16 ? kiln_f16_to_f32(h[i]) : kiln_bf16_to_f32(h[i]);
}

static uint16_t half_from(int dtype, float f) {
    return dtype == KILN_DTYPE_FLOAT16 ? kiln_f32_to_f16(f) : kiln_f32_to_bf16(f);
}

/* fp16/bf16 case the GPU kernels cannot take: run the CPU op on float32 copies of the inputs and
 * round its outputs back. Slow, but exact to the CPU maths and never silently wrong. */
static kiln_status fallback_f32(kiln_ctx *ctx, const kiln_op *cpu, int dtype, const char *why) {
    if (verbose())
        fprintf(stderr, "kiln: cuda %s '%s': %s -> CPU kernel on float32 copies\n",
                ctx->node->op_type, ctx->node->name ? ctx->node->name : "", why);
    if (ctx->n_in > MAX_IO || ctx->n_out > MAX_IO)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many inputs/outputs");
    kiln_value in_sh[MAX_IO], out_sh[MAX_IO];
    kiln_value *inp[MAX_IO], *outp[MAX_IO];
    float *bufs[2 * MAX_IO];
    int nb = 0;
    kiln_status st = KILN_OK;
    for (int i = 0; i < ctx->n_in; i++) {
        inp[i] = NULL;
        if (!ctx->in[i]) continue;
        in_sh[i] = *ctx->in[i];
        inp[i] = &in_sh[i];
        kiln_tensor *t = &in_sh[i].t;
        if (in_sh[i].kind != KILN_KIND_TENSOR || t->dtype != dtype) continue;
        int64_t n = kiln_numel(t);
        float *f = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
        if (!f) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto done; }
        bufs[nb++] = f;
        for (int64_t k = 0; k < n; k++) f[k] = half_get(dtype, t->data, k);
        t->dtype = KILN_DTYPE_FLOAT;
        t->data = f;
        t->owner = NULL; /* the shadow never frees; bufs[] does */
    }
    for (int i = 0; i < ctx->n_out; i++) {
        outp[i] = NULL;
        if (!ctx->out[i]) continue;
        out_sh[i] = *ctx->out[i];
        outp[i] = &out_sh[i];
        kiln_tensor *t = &out_sh[i].t;
        if (t->dtype != dtype) continue;
        int64_t n = kiln_numel(t);
        float *f = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
        if (!f) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto done; }
        bufs[nb++] = f;
        t->dtype = KILN_DTYPE_FLOAT;
        t->data = f;
        t->owner = NULL;
    }
    {
        kiln_ctx sh = *ctx;
        sh.in = inp;
        sh.out = outp;
        st = cpu->compute(&sh);
    }
    if (st == KILN_OK)
        for (int i = 0; i < ctx->n_out; i++) {
            if (!ctx->out[i] || ctx->out[i]->t.dtype != dtype) continue;
            kiln_tensor *t = &ctx->out[i]->t;
            const float *f = out_sh[i].t.data;
            uint16_t *h = t->data;
            int64_t n = kiln_numel(t);
            for (int64_t k = 0; k < n; k++) h[k] = half_from(dtype, f[k]);
        }
done:
    for (int i = 0; i < nb; i++) free(bufs[i]);
    return st;
}

/* ---- device staging: one allocation per call, sliced ---- */

typedef struct stage {
    kiln_cuda_provider *p;
    char *base;
    size_t used, cap;
} stage;

static size_t al256(size_t n) { return (n + 255) & ~(size_t)255; }

/* Reserves `bytes` in the block (sizes are summed first by a dry pass with base == NULL). */
static void *stage_take(stage *s, size_t bytes) {
    void *r = s->base ? s->base + s->used : NULL;
    s->used += al256(bytes ? bytes : 1);
    return r;
}

static kiln_status cuda_err(kiln_ctx *ctx, const char *what) {
    return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "CUDA %s failed: %s", what, kiln_cuda_last_error());
}

static kiln_cuda_provider *provider(kiln_ctx *ctx) { return (kiln_cuda_provider *)ctx->cuda; }

/* Host copy of an fp16/bf16 tensor slice with a per-channel bias added, in the same dtype: the
 * GPU entry points take no projection bias, so it is applied while staging. */
static uint16_t *biased_copy(const kiln_tensor *t, int dtype, const void *bias, int64_t rows,
                             int64_t row_len, int64_t seg, int64_t seg_stride, int64_t bias_off,
                             int64_t bias_seg_stride) {
    /* row layout: row_len elements = segments of `seg` elements each `seg_stride` apart; segment
     * k of a row gets bias[bias_off + k*bias_seg_stride + h]. Elements not in a segment keep. */
    int64_t n = kiln_numel(t);
    uint16_t *o = malloc(sizeof(uint16_t) * (size_t)(n > 0 ? n : 1));
    if (!o) return NULL;
    memcpy(o, t->data, sizeof(uint16_t) * (size_t)n);
    int64_t nseg = row_len / seg_stride;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t k = 0; k < nseg; k++)
            for (int64_t h = 0; h < seg; h++) {
                int64_t i = r * row_len + k * seg_stride + h;
                float v = half_get(dtype, o, i) + half_get(dtype, bias, bias_off + k * bias_seg_stride + h);
                o[i] = half_from(dtype, v);
            }
    return o;
}

/* ---- MultiHeadAttention / PackedMultiHeadAttention ---- */

static kiln_status mha_gpu(kiln_ctx *ctx, int dtype, int packed) {
    const kiln_op *cpu = cpu_op(ctx);
    kiln_cuda_provider *p = provider(ctx);
    const kiln_node *node = ctx->node;
    /* inputs: MHA q,k,v,bias,mask,rpb,past_k,past_v; packed q,k,v,bias,token_offset,cu,rpb */
    kiln_tensor *q = kiln_input(ctx, 0), *k = kiln_input(ctx, 1), *v = kiln_input(ctx, 2);
    kiln_tensor *bias = kiln_input(ctx, 3);
    kiln_tensor *mask = packed ? NULL : kiln_input(ctx, 4);
    kiln_tensor *offs = packed ? kiln_input(ctx, 4) : NULL;
    kiln_tensor *cu = packed ? kiln_input(ctx, 5) : NULL;
    kiln_tensor *rpb = kiln_input(ctx, packed ? 6 : 5);
    kiln_tensor *pk = packed ? NULL : kiln_input(ctx, 6), *pv = packed ? NULL : kiln_input(ctx, 7);
    kiln_tensor *out = kiln_output(ctx, 0);
    kiln_tensor *prk = !packed && ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    kiln_tensor *prv = !packed && ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    if (!out) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output 0 is required");
    int N = (int)kiln_attr_int(node, "num_heads", 0);

    kiln_cuda_mha_args a;
    memset(&a, 0, sizeof a);
    a.dtype = dtype;
    a.N = N;
    a.scale = kiln_attr_float(node, "scale", 0.0f); /* 0 -> 1/sqrt(H) in the dispatcher too */
    a.causal = !packed && kiln_attr_int(node, "unidirectional", 0) != 0;
    int64_t D, Dv, rows_q, rows_kv;
    if (packed) {
        a.B = (int)offs->dims[0];
        a.S = a.L = (int)offs->dims[1];
        rows_q = rows_kv = q->dims[0];
        if (q->rank == 4) {
            a.format = KILN_MHA_QKV;
            a.H = a.Hv = (int)q->dims[3];
        } else {
            a.format = KILN_MHA_Q_K_V;
            a.H = (int)(q->dims[1] / N);
            a.Hv = (int)(v->dims[1] / N);
        }
    } else {
        a.B = (int)q->dims[0];
        a.S = (int)q->dims[1];
        if (q->rank == 5) {
            a.format = KILN_MHA_QKV;
            a.H = a.Hv = (int)q->dims[4];
            a.L = a.S;
        } else if (k->rank == 5) {
            a.format = KILN_MHA_Q_KV;
            a.H = a.Hv = (int)k->dims[4];
            a.L = (int)k->dims[1];
        } else if (k->rank == 4) {
            a.format = KILN_MHA_Q_K_V_BNSH;
            a.H = (int)k->dims[3];
            a.Hv = (int)v->dims[3];
            a.L = (int)k->dims[2];
        } else {
            a.format = KILN_MHA_Q_K_V;
            a.H = (int)(q->dims[2] / N);
            a.Hv = (int)(v->dims[2] / N);
            a.L = (int)k->dims[1];
        }
        rows_q = (int64_t)a.B * a.S;
        rows_kv = (int64_t)a.B * a.L;
    }
    D = (int64_t)N * a.H;
    Dv = (int64_t)N * a.Hv;
    a.P = pk ? (int)pk->dims[2] : 0;
    int T = a.P + a.L;

    /* masks: only (B) key lengths map onto the GPU kernels; everything else goes to the CPU */
    if (mask && !(mask->rank == 1 && mask->dims[0] == a.B))
        return fallback_f32(ctx, cpu, dtype, "key_padding_mask other than (B) lengths");

    /* projection bias, added on the host while staging (see biased_copy) */
    uint16_t *hq = NULL, *hk = NULL, *hv = NULL;
    kiln_status st = KILN_OK;
    const void *src_q = q->data, *src_k = k ? k->data : NULL, *src_v = v ? v->data : NULL;
    if (bias) {
        const void *b = bias->data;
        if (a.format == KILN_MHA_QKV) {
            /* (rows, N, 3, H): slot j of head n gets bias[j*D + n*H + h] */
            int64_t rows = rows_q * N, H = a.H;
            hq = malloc(sizeof(uint16_t) * (size_t)(rows * 3 * H));
            if (hq) {
                memcpy(hq, q->data, sizeof(uint16_t) * (size_t)(rows * 3 * H));
                for (int64_t r = 0; r < rows; r++)
                    for (int j = 0; j < 3; j++)
                        for (int64_t h = 0; h < H; h++) {
                            int64_t i = r * 3 * H + j * H + h;
                            int64_t bi = j * D + (r % N) * H + h;
                            hq[i] = half_from(dtype, half_get(dtype, hq, i) + half_get(dtype, b, bi));
                        }
            }
            src_q = hq;
        } else {
            hq = biased_copy(q, dtype, b, rows_q, D, D, D, 0, 0);
            src_q = hq;
            if (a.format == KILN_MHA_Q_K_V) { /* cached BNSH K/V take no bias (spec §3.4) */
                hk = biased_copy(k, dtype, b, rows_kv, D, D, D, D, 0);
                hv = biased_copy(v, dtype, b, rows_kv, Dv, Dv, Dv, 2 * D, 0);
                src_k = hk;
                src_v = hv;
                if (!hk || !hv) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
            }
        }
        if (!hq) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }

    int32_t *lens32 = NULL;
    if (st == KILN_OK && mask) {
        lens32 = malloc(sizeof(int32_t) * (size_t)a.B);
        if (!lens32) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        else if (mask->dtype == KILN_DTYPE_INT32) memcpy(lens32, mask->data, sizeof(int32_t) * a.B);
        else
            for (int b = 0; b < a.B; b++) lens32[b] = (int32_t)((const int64_t *)mask->data)[b];
    }

    /* device layout: sizes first (dry pass), then one allocation */
    size_t es = 2;
    size_t nq = kiln_tensor_nbytes(q), nk = k ? kiln_tensor_nbytes(k) : 0, nv = v ? kiln_tensor_nbytes(v) : 0;
    size_t nout = kiln_tensor_nbytes(out);
    size_t npk = pk ? kiln_tensor_nbytes(pk) : 0, npv = pv ? kiln_tensor_nbytes(pv) : 0;
    /* present buffers: past needs them on the device even when not requested */
    int want_present = prk || prv || pk;
    size_t nprk = want_present ? (size_t)a.B * N * T * a.H * es : 0;
    size_t nprv = want_present ? (size_t)a.B * N * T * a.Hv * es : 0;
    size_t nrpb = rpb ? kiln_tensor_nbytes(rpb) : 0;
    stage sg = {p, NULL, 0, 0};
    void *dq, *dk, *dv, *dout, *dlens, *dcu, *dpk, *dpv, *dprk, *dprv, *drpb;
    for (int pass = 0; pass < 2 && st == KILN_OK; pass++) {
        sg.used = 0;
        dq = stage_take(&sg, nq);
        dk = nk ? stage_take(&sg, nk) : NULL;
        dv = nv ? stage_take(&sg, nv) : NULL;
        dout = stage_take(&sg, nout);
        dlens = lens32 ? stage_take(&sg, sizeof(int32_t) * a.B) : NULL;
        dcu = cu ? stage_take(&sg, sizeof(int32_t) * (a.B + 1)) : NULL;
        dpk = npk ? stage_take(&sg, npk) : NULL;
        dpv = npv ? stage_take(&sg, npv) : NULL;
        dprk = nprk ? stage_take(&sg, nprk) : NULL;
        dprv = nprv ? stage_take(&sg, nprv) : NULL;
        drpb = nrpb ? stage_take(&sg, nrpb) : NULL;
        if (pass == 0) {
            void *blk = NULL;
            if (kiln_cuda_malloc(p, sg.used, &blk)) st = cuda_err(ctx, "malloc");
            sg.base = blk;
            sg.cap = sg.used;
        }
    }
    if (st == KILN_OK) {
        int bad = 0;
        bad |= kiln_cuda_h2d(p, dq, src_q, nq) != KILN_OK;
        if (nk) bad |= kiln_cuda_h2d(p, dk, src_k, nk) != KILN_OK;
        if (nv) bad |= kiln_cuda_h2d(p, dv, src_v, nv) != KILN_OK;
        if (dlens) bad |= kiln_cuda_h2d(p, dlens, lens32, sizeof(int32_t) * a.B) != KILN_OK;
        if (dcu) bad |= kiln_cuda_h2d(p, dcu, cu->data, sizeof(int32_t) * (a.B + 1)) != KILN_OK;
        if (npk) bad |= kiln_cuda_h2d(p, dpk, pk->data, npk) != KILN_OK;
        if (npv) bad |= kiln_cuda_h2d(p, dpv, pv->data, npv) != KILN_OK;
        if (nrpb) bad |= kiln_cuda_h2d(p, drpb, rpb->data, nrpb) != KILN_OK;
        if (bad) st = cuda_err(ctx, "host-to-device copy");
    }
    if (st == KILN_OK) {
        a.q = dq;
        a.k = dk;
        a.v = dv;
        a.out = dout;
        a.key_lens = dlens;
        a.cu_seqlens = dcu;
        a.past_key = dpk;
        a.past_value = dpv;
        a.present_key = dprk;
        a.present_value = dprv;
        a.bias = drpb;
        a.bias_batch_broadcast = rpb && rpb->dims[0] == 1 && a.B > 1;
        if (kiln_cuda_mha_forward(p, &a, NULL, NULL)) st = cuda_err(ctx, "attention");
    }
    if (st == KILN_OK) {
        int bad = kiln_cuda_d2h(p, out->data, dout, nout) != KILN_OK;
        if (prk) bad |= kiln_cuda_d2h(p, prk->data, dprk, nprk) != KILN_OK;
        if (prv) bad |= kiln_cuda_d2h(p, prv->data, dprv, nprv) != KILN_OK;
        if (bad || kiln_cuda_sync(p)) st = cuda_err(ctx, "device-to-host copy");
    }
    if (sg.base) {
        kiln_cuda_sync(p); /* the stream may still read the block after a failure */
        kiln_cuda_free(p, sg.base);
    }
    free(hq);
    free(hk);
    free(hv);
    free(lens32);
    return st;
}

/* ---- Attention: cuBLAS projection on the device, then kiln_cuda_attention ---- */

static kiln_status attention_gpu(kiln_ctx *ctx, int dtype) {
    const kiln_op *cpu = cpu_op(ctx);
    kiln_cuda_provider *p = provider(ctx);
    const kiln_node *node = ctx->node;
    kiln_tensor *x = kiln_input(ctx, 0), *w = kiln_input(ctx, 1), *bias = kiln_input(ctx, 2);
    kiln_tensor *mask = kiln_input(ctx, 3), *past = kiln_input(ctx, 4), *rpb = kiln_input(ctx, 5);
    kiln_tensor *out = kiln_output(ctx, 0);
    kiln_tensor *present = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    if (!out) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output 0 is required");

    if (kiln_attr_int(node, "past_present_share_buffer", 0))
        return fallback_f32(ctx, cpu, dtype, "past_present_share_buffer");
    int B = (int)x->dims[0], S = (int)x->dims[1], Di = (int)x->dims[2];
    int W = (int)w->dims[1];
    int N = (int)kiln_attr_int(node, "num_heads", 0);
    int nq = 0;
    const int64_t *qkv = kiln_attr_ints(node, "qkv_hidden_sizes", &nq);
    int D = qkv && nq == 3 ? (int)qkv[0] : W / 3, Dv = qkv && nq == 3 ? (int)qkv[2] : W / 3;
    int H = D / N, Hv = Dv / N;
    int P = past ? (int)past->dims[3] : 0, T = P + S;

    /* mask_index: (B) lengths -> key_lens, (B,1)/(1,1) dummy -> none; the rest to the CPU */
    int use_lens = 0;
    if (mask) {
        if (mask->rank == 1 && mask->dims[0] == B) use_lens = 1;
        else if (!(mask->rank == 2 && mask->dims[1] == 1 && (mask->dims[0] == B || mask->dims[0] == 1)))
            return fallback_f32(ctx, cpu, dtype, "mask_index other than (B) lengths");
    }

    size_t es = 2;
    size_t nx = kiln_tensor_nbytes(x), nw = kiln_tensor_nbytes(w);
    size_t nqkv = (size_t)B * S * W * es, nout = kiln_tensor_nbytes(out);
    size_t npast = past ? kiln_tensor_nbytes(past) : 0;
    size_t npres = (past || present) ? (size_t)2 * B * N * T * H * es : 0;
    size_t nrpb = rpb ? kiln_tensor_nbytes(rpb) : 0;
    kiln_status st = KILN_OK;
    /* the bias row broadcast over all tokens on the host, so one gemm with beta = 1 adds it */
    uint16_t *hb = NULL;
    if (bias) {
        hb = malloc(nqkv);
        if (!hb) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        for (int64_t r = 0; r < (int64_t)B * S; r++) memcpy(hb + r * W, bias->data, (size_t)W * es);
    }
    stage sg = {p, NULL, 0, 0};
    void *dx, *dw, *dqkv, *dout, *dlens, *dpast, *dpres, *drpb;
    for (int pass = 0; pass < 2 && st == KILN_OK; pass++) {
        sg.used = 0;
        dx = stage_take(&sg, nx);
        dw = stage_take(&sg, nw);
        dqkv = stage_take(&sg, nqkv);
        dout = stage_take(&sg, nout);
        dlens = use_lens ? stage_take(&sg, sizeof(int32_t) * B) : NULL;
        dpast = npast ? stage_take(&sg, npast) : NULL;
        dpres = npres ? stage_take(&sg, npres) : NULL;
        drpb = nrpb ? stage_take(&sg, nrpb) : NULL;
        if (pass == 0) {
            void *blk = NULL;
            if (kiln_cuda_malloc(p, sg.used, &blk)) st = cuda_err(ctx, "malloc");
            sg.base = blk;
        }
    }
    int32_t *lens32 = NULL;
    if (st == KILN_OK && use_lens) {
        lens32 = malloc(sizeof(int32_t) * (size_t)B);
        if (!lens32) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        else if (mask->dtype == KILN_DTYPE_INT32) memcpy(lens32, mask->data, sizeof(int32_t) * B);
        else
            for (int b = 0; b < B; b++) lens32[b] = (int32_t)((const int64_t *)mask->data)[b];
    }
    if (st == KILN_OK) {
        int bad = kiln_cuda_h2d(p, dx, x->data, nx) != KILN_OK;
        bad |= kiln_cuda_h2d(p, dw, w->data, nw) != KILN_OK;
        if (hb) bad |= kiln_cuda_h2d(p, dqkv, hb, nqkv) != KILN_OK;
        if (lens32) bad |= kiln_cuda_h2d(p, dlens, lens32, sizeof(int32_t) * B) != KILN_OK;
        if (npast) bad |= kiln_cuda_h2d(p, dpast, past->data, npast) != KILN_OK;
        if (nrpb) bad |= kiln_cuda_h2d(p, drpb, rpb->data, nrpb) != KILN_OK;
        if (bad) st = cuda_err(ctx, "host-to-device copy");
    }
    if (st == KILN_OK) {
        /* QKV (B*S, W) = X (B*S, Di) . W (Di, W) + bias, row-major. cuBLAS is column-major, so
         * compute QKV^T = W^T . X^T: the row-major buffers read as column-major transposes. */
        cudaDataType_t ct = dtype == KILN_DTYPE_FLOAT16 ? CUDA_R_16F : CUDA_R_16BF;
        float alpha = 1.0f, beta = hb ? 1.0f : 0.0f;
        int rc = cublasGemmEx((cublasHandle_t)kiln_cuda_cublas(p), CUBLAS_OP_N, CUBLAS_OP_N, W,
                              B * S, Di, &alpha, dw, ct, W, dx, ct, Di, &beta, dqkv, ct, W,
                              CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
        if (kiln_cublas_check(rc, "Attention projection gemm")) st = cuda_err(ctx, "projection");
    }
    kiln_cuda_sdpa d;
    memset(&d, 0, sizeof d);
    if (st == KILN_OK) {
        const char *base = dqkv;
        int64_t sb = (int64_t)S * W;
        d.dtype = dtype;
        d.B = B;
        d.N = d.N_kv = N;
        d.S = S;
        d.T = T;
        d.H = H;
        d.Hv = Hv;
        d.scale = kiln_attr_float(node, "scale", 0.0f);
        /* the CPU applies unidirectional only when S > 1: one decode token sees every key */
        d.causal = kiln_attr_int(node, "unidirectional", 0) != 0 && S > 1;
        d.q = (kiln_cuda_view){base, sb, H, W};
        d.k = (kiln_cuda_view){base + (size_t)D * es, sb, H, W};
        d.v = (kiln_cuda_view){base + (size_t)2 * D * es, sb, Hv, W};
        if (dpres) {
            /* present (2, B, N, T, H) = past rows then the new K/V rows; attention reads it */
            char *pk = dpres, *pv = (char *)dpres + (size_t)B * N * T * H * es;
            if (past && P > 0) {
                kiln_cuda_view sk = {dpast, (int64_t)N * P * H, (int64_t)P * H, H};
                kiln_cuda_view sv = {(char *)dpast + (size_t)B * N * P * H * es, (int64_t)N * P * H,
                                     (int64_t)P * H, H};
                if (kiln_cuda_copy_bnsh(p, dtype, pk, T, 0, &sk, B, N, P, H) ||
                    kiln_cuda_copy_bnsh(p, dtype, pv, T, 0, &sv, B, N, P, H))
                    st = cuda_err(ctx, "past copy");
            }
            if (st == KILN_OK && (kiln_cuda_copy_bnsh(p, dtype, pk, T, P, &d.k, B, N, S, H) ||
                                  kiln_cuda_copy_bnsh(p, dtype, pv, T, P, &d.v, B, N, S, H)))
                st = cuda_err(ctx, "present copy");
            d.k = (kiln_cuda_view){pk, (int64_t)N * T * H, (int64_t)T * H, H};
            d.v = (kiln_cuda_view){pv, (int64_t)N * T * H, (int64_t)T * H, H};
        }
        d.out = dout;
        d.o_sb = (int64_t)S * Dv;
        d.o_sn = Hv;
        d.o_ss = Dv;
        d.key_lens = dlens;
        if (drpb) {
            d.bias = drpb;
            d.bias_sb = rpb->dims[0] == 1 ? 0 : (int64_t)N * S * T;
            d.bias_sn = (int64_t)S * T;
            d.bias_ss = T;
        }
        if (st == KILN_OK && kiln_cuda_attention(p, &d, NULL, NULL)) st = cuda_err(ctx, "attention");
    }
    if (st == KILN_OK) {
        int bad = kiln_cuda_d2h(p, out->data, dout, nout) != KILN_OK;
        if (present) bad |= kiln_cuda_d2h(p, present->data, dpres, npres) != KILN_OK;
        if (bad || kiln_cuda_sync(p)) st = cuda_err(ctx, "device-to-host copy");
    }
    if (sg.base) {
        kiln_cuda_sync(p);
        kiln_cuda_free(p, sg.base);
    }
    free(hb);
    free(lens32);
    return st;
}

static kiln_status op_compute(kiln_ctx *ctx) {
    const kiln_op *cpu = cpu_op(ctx);
    if (!cpu) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "no CPU kernel to fall back to");
    int dtype;
    KILN_TRY(op_dtype(ctx, &dtype));
    if (!is_half(dtype)) {
        if (verbose())
            fprintf(stderr, "kiln: cuda %s '%s': %s inputs -> CPU kernel\n", ctx->node->op_type,
                    ctx->node->name ? ctx->node->name : "", kiln_dtype_name(dtype));
        return cpu->compute(ctx);
    }
    if (!ctx->cuda) return fallback_f32(ctx, cpu, dtype, "no CUDA provider in this session");
    switch (kind_of(ctx->node->op_type)) {
    case OP_PACKED_MHA: return mha_gpu(ctx, dtype, 1);
    case OP_ATTENTION: return attention_gpu(ctx, dtype);
    default: return mha_gpu(ctx, dtype, 0);
    }
}

const kiln_op kiln_ops_cuda[] = {
    {"com.microsoft", "MultiHeadAttention", 1, 0, op_init, op_infer, op_compute, op_fini, KILN_EP_CUDA},
    {"com.microsoft", "PackedMultiHeadAttention", 1, 0, op_init, op_infer, op_compute, op_fini,
     KILN_EP_CUDA},
    {"com.microsoft", "Attention", 1, 0, op_init, op_infer, op_compute, op_fini, KILN_EP_CUDA},
    {0},
};
