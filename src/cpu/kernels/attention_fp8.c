/* FP8 (float8e4m3fn) query/key/value for com.microsoft MultiHeadAttention (docs/operators.md,
 * "FP8 attention"). real = code · scale with one float32 scale per tensor, given as inputs 10-12
 * (q_scale, k_scale, v_scale) so that they can be initializers from calibration or values computed
 * in the graph (dynamic scaling); inputs 8 and 9 are onnxruntime's past_sequence_length and
 * cache_indirection and stay free. The output is float16, or bfloat16 with output_dtype = 16.
 *
 * The CPU path is the reference the GPU kernel is judged against: it dequantises Q, K and V to
 * float32 and runs the float32 operator on them, so every FP8 model runs on any machine. Only what
 * the GPU kernel has a form for is accepted (no bias, masks, attention_bias, KV cache or packed
 * QKV/KV); refusing the rest here keeps the two providers answering the same set of models. */
#include "attention_common.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { FP8_IN_Q_SCALE = 10, FP8_IN_K_SCALE = 11, FP8_IN_V_SCALE = 12, FP8_N_IN = 13 };

int kattn_is_fp8(int dtype) { return dtype == KILN_DTYPE_FLOAT8E4M3FN; }

static const char *const in_names[FP8_N_IN] = {
    "query", "key", "value", "bias", "key_padding_mask", "attention_bias", "past_key", "past_value",
    "past_sequence_length", "cache_indirection", "q_scale", "k_scale", "value_scale"};

kiln_status kattn_mha_fp8_check(kiln_ctx *ctx, int *out_dtype) {
    const kiln_tensor *q = kiln_input(ctx, 0), *k = kiln_input(ctx, 1), *v = kiln_input(ctx, 2);
    char b1[128];
    if (!k || !v || q->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "float8e4m3fn attention needs separate query (B, S, D), key and value "
                         "(packed QKV / KV have one tensor and so one scale for all three); query is %s",
                         kattn_shape(q, b1, sizeof b1));
    for (int i = 1; i < 3; i++) {
        const kiln_tensor *t = kiln_input(ctx, i);
        if (!kattn_is_fp8(t->dtype))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "query is float8e4m3fn but %s is %s: FP8 attention takes query, key and "
                             "value all float8e4m3fn", in_names[i], kiln_dtype_name(t->dtype));
    }
    /* MultiHeadAttention's causal diagonal starts at key 0 without a cache; the GPU kernels align
     * it to the last key. They agree only for square attention, so FP8 takes only that. */
    const int64_t L = k->rank == 4 ? k->dims[2] : k->dims[1];
    if (kiln_attr_int(ctx->node, "unidirectional", 0) && L >= 0 && q->dims[1] >= 0 && L != q->dims[1])
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "unidirectional with key length %lld != query length %lld is not supported with "
                         "float8e4m3fn inputs", (long long)L, (long long)q->dims[1]);
    for (int i = 3; i < ctx->n_in && i < FP8_IN_Q_SCALE; i++)
        if (kiln_input(ctx, i))
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                             "input %d (%s) is not supported with float8e4m3fn query/key/value (FP8 "
                             "attention takes query, key, value, unidirectional and the scales only)",
                             i, in_names[i]);
    for (int i = FP8_N_IN; i < ctx->n_in; i++)
        if (kiln_input(ctx, i))
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "MultiHeadAttention input %d is not supported", i);
    for (int i = FP8_IN_Q_SCALE; i < FP8_N_IN; i++) {
        const kiln_tensor *s = i < ctx->n_in ? kiln_input(ctx, i) : NULL;
        if (!s)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "float8e4m3fn query/key/value need the dequantisation scale input %d (%s): "
                             "real value = float8 value * scale", i, in_names[i]);
        if (s->dtype != KILN_DTYPE_FLOAT)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s (input %d) must be float32, got %s",
                             in_names[i], i, kiln_dtype_name(s->dtype));
        if (kiln_shape_concrete(s) && (s->rank > 1 || kiln_numel(s) != 1))
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                             "%s (input %d) must be one per-tensor scale (a scalar or shape (1)), got %s",
                             in_names[i], i, kattn_shape(s, b1, sizeof b1));
    }
    for (int i = 1; i < ctx->n_out; i++)
        if (kiln_output(ctx, i))
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                             "output %d (present key/value) is not supported with float8e4m3fn inputs", i);
    int64_t odt = kiln_attr_int(ctx->node, "output_dtype", KILN_DTYPE_FLOAT16);
    if (odt != KILN_DTYPE_FLOAT16 && odt != KILN_DTYPE_BFLOAT16)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "output_dtype %lld is not supported: FP8 attention writes float16 (10) or "
                         "bfloat16 (16)", (long long)odt);
    *out_dtype = (int)odt;
    return KILN_OK;
}

kiln_status kattn_mha_fp8_scales(kiln_ctx *ctx, float sc[3]) {
    for (int i = 0; i < 3; i++) {
        const kiln_tensor *s = kiln_input(ctx, FP8_IN_Q_SCALE + i);
        if (!kattn_host_readable(s)) {
            sc[i] = 0.f;
            continue; /* device providers read their scales themselves */
        }
        sc[i] = *(const float *)s->data;
        if (!(sc[i] > 0.f) || isinf(sc[i]))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "%s must be a finite positive number, got %g", in_names[FP8_IN_Q_SCALE + i],
                             (double)sc[i]);
    }
    return KILN_OK;
}

kiln_status kattn_mha_fp8_compute(kiln_ctx *ctx, kiln_status (*f32_compute)(kiln_ctx *)) {
    int odt;
    float sc[3];
    KILN_TRY(kattn_mha_fp8_check(ctx, &odt));
    KILN_TRY(kattn_mha_fp8_scales(ctx, sc));
    kiln_tensor *out = kiln_output(ctx, 0);
    if (!out) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output 0 is required");

    /* A shadow context: the first three inputs dequantised to float32, the scales dropped (the
     * float32 operator takes inputs 0-7), output 0 into float32 scratch. */
    kiln_value vals[4];
    kiln_value *ins[8] = {0}, *outs[1];
    float *bufs[4] = {0};
    kiln_status st = KILN_OK;
    for (int i = 0; i < 4 && st == KILN_OK; i++) {
        kiln_value *src = i < 3 ? ctx->in[i] : ctx->out[0];
        vals[i] = *src;
        kiln_tensor *t = &vals[i].t;
        int64_t n = kiln_numel(t);
        bufs[i] = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
        if (!bufs[i]) {
            st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory dequantising FP8 attention inputs");
            break;
        }
        if (i < 3) {
            const uint8_t *code = t->data;
            for (int64_t j = 0; j < n; j++) bufs[i][j] = kiln_f8_to_f32(KILN_DTYPE_FLOAT8E4M3FN, code[j]) * sc[i];
            ins[i] = &vals[i];
        }
        t->dtype = KILN_DTYPE_FLOAT;
        t->data = bufs[i];
        t->owner = NULL;
        t->dev = NULL;
    }
    if (st == KILN_OK) {
        outs[0] = &vals[3];
        kiln_ctx sh = *ctx;
        sh.in = ins;
        sh.n_in = 8;
        sh.out = outs;
        sh.n_out = 1;
        st = f32_compute(&sh);
    }
    if (st == KILN_OK) kattn_store_as(out->dtype, bufs[3], out->data, kiln_numel(out));
    for (int i = 0; i < 4; i++) free(bufs[i]);
    return st;
}
