/* RotaryEmbedding on the CUDA provider (com.microsoft and ONNX opset 23), float32 / float16 /
 * bfloat16: the shapes come from the shared infer (src/cpu/kernels/attention_rotary.c), the
 * rotation is one kernel (kernels/rotary.cu). position_ids stay on the device: the kernel reads
 * them, and a position outside the caches gives NaN there (the CPU op's infer rejects it when the
 * values are on the host). */
#include "../kernels/rotary.h"
#include "attention_glue.h"

#include <stdio.h>
#include <string.h>

/* x, cos_cache and sin_cache (inputs x_i, c_i, s_i) share one float type; position_ids is int64. */
static int rotary_types(const kiln_node *n, const kiln_graph_value *const *in, int x_i, int c_i, int s_i,
                        int pos_i, char *why, size_t cap) {
    if (!kiln_cuda_need_float(n, in, (1u << x_i) | (1u << c_i) | (1u << s_i), why, cap)) return 0;
    if (pos_i < n->n_in && in[pos_i]) {
        const kiln_type *p = kattn_cuda_type(n, in, pos_i);
        if (!p || p->dtype != KILN_DTYPE_INT64) {
            snprintf(why, cap, "position_ids must be int64 (its type is not known to be)");
            return 0;
        }
    }
    return 1;
}

int kattn_cuda_ms_rotary_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                  const kiln_graph_value *const *out, char *why, size_t cap) {
    if (kiln_attr_int(n, "is_packed_batching", 0)) {
        snprintf(why, cap, "is_packed_batching = 1 is not supported");
        return 0;
    }
    return rotary_types(n, in, 0, 2, 3, 1, why, cap);
}

int kattn_cuda_rotary_supports(const kiln_node *n, const kiln_graph_value *const *in,
                               const kiln_graph_value *const *out, char *why, size_t cap) {
    return rotary_types(n, in, 0, 1, 2, 3, why, cap);
}

/* Head layout of x: (B, N, S, H) when 4-D, else (B, S, N·H) with H from head_size. */
static void rope_layout(const kiln_tensor *x, int64_t head_size, kiln_cuda_rope *r) {
    r->B = x->dims[0];
    if (x->rank == 4) {
        r->heads_first = 1;
        r->N = x->dims[1];
        r->S = x->dims[2];
        r->H = x->dims[3];
    } else {
        r->heads_first = 0;
        r->S = x->dims[1];
        r->H = head_size;
        r->N = head_size > 0 ? x->dims[2] / head_size : 0;
    }
}

static kiln_status rope_run(kiln_ctx *ctx, kiln_cuda_rope *r, const kiln_tensor *x, const kiln_tensor *cosc,
                            const kiln_tensor *sinc) {
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output 0 is required");
    if (kiln_numel(x) == 0) return KILN_OK;
    r->dtype = x->dtype;
    r->interleaved = kiln_attr_int(ctx->node, "interleaved", 0) != 0;
    r->x = x->data;
    r->cos_cache = cosc->data;
    r->sin_cache = sinc->data;
    r->y = y->data;
    KILN_CUDA_TRY(ctx, kiln_cuda_rotary(kiln_cuda_stream(kiln_cuda_of(ctx)), r));
    return KILN_OK;
}

kiln_status kattn_cuda_ms_rotary_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0), *pos = kiln_input(ctx, 1);
    const kiln_tensor *cosc = kiln_input(ctx, 2), *sinc = kiln_input(ctx, 3);
    kiln_cuda_rope r;
    memset(&r, 0, sizeof r);
    int64_t half = cosc->dims[1], nh = kiln_attr_int(ctx->node, "num_heads", 0);
    /* without num_heads a 3-D input's head size is the full rotation the cache describes */
    int64_t head = x->rank == 3 ? (nh > 0 ? x->dims[2] / nh : 2 * half) : 0;
    rope_layout(x, head, &r);
    r.rd = kiln_attr_int(ctx->node, "rotary_embedding_dim", 0);
    if (r.rd == 0) r.rd = r.H;
    r.pos = pos->data;
    r.pos_mode = kiln_numel(pos) == 1 && pos->rank <= 1 ? KILN_ROPE_POS_BASE : KILN_ROPE_POS_BS;
    r.cache_rows = cosc->dims[0];
    return rope_run(ctx, &r, x, cosc, sinc);
}

kiln_status kattn_cuda_rotary_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0), *cosc = kiln_input(ctx, 1), *sinc = kiln_input(ctx, 2);
    const kiln_tensor *pos = ctx->n_in > 3 ? kiln_input(ctx, 3) : NULL;
    kiln_cuda_rope r;
    memset(&r, 0, sizeof r);
    int64_t nh = kiln_attr_int(ctx->node, "num_heads", 0);
    rope_layout(x, x->rank == 3 && nh > 0 ? x->dims[2] / nh : 0, &r);
    r.rd = kiln_attr_int(ctx->node, "rotary_embedding_dim", 0);
    if (r.rd == 0) r.rd = r.H;
    if (pos) {
        r.pos = pos->data;
        r.pos_mode = KILN_ROPE_POS_BS;
        r.cache_rows = cosc->dims[0];
    } else { /* caches (B, S, rd/2) */
        r.pos_mode = KILN_ROPE_POS_NONE;
        r.cache_rows = r.B * r.S;
    }
    return rope_run(ctx, &r, x, cosc, sinc);
}
