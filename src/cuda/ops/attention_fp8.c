/* FP8 (float8e4m3fn) com.microsoft MultiHeadAttention on the CUDA provider: query/key/value e4m3
 * with per-tensor float32 scales as inputs 10-12, output float16 or bfloat16 (the op definition
 * and its checks are the CPU op's, src/cpu/kernels/attention_fp8.c). The scales stay in device
 * memory: the kernel reads them itself, so nothing is read on the host and dynamically computed
 * scales cost no synchronisation. What the kernel has no form for (head sizes other than
 * multiples of 16 up to 256, H_v != H, masks, bias, KV cache, packed QKV/KV) stays on the CPU. */
#include "../cuda_ep.h"
#include "../attention/attention_fp8.h"
#include "attention_glue.h"

#include <limits.h>
#include <stdio.h>
#include <string.h>

static int dim_known(int64_t d) { return d >= 0; }

int kattn_cuda_mha_fp8_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                const kiln_graph_value *const *out, char *why, size_t cap) {
    (void)out;
    const kiln_type *q = kattn_cuda_type(n, in, 0), *k = kattn_cuda_type(n, in, 1), *v = kattn_cuda_type(n, in, 2);
    if (!q || !k || !v || k->dtype != KILN_DTYPE_FLOAT8E4M3FN || v->dtype != KILN_DTYPE_FLOAT8E4M3FN) {
        snprintf(why, cap, "FP8 attention on the GPU needs query, key and value all known to be float8e4m3fn");
        return 0;
    }
    for (int i = 3; i < 10 && i < n->n_in; i++)
        if (in[i]) {
            snprintf(why, cap, "input %d is not supported with float8e4m3fn inputs", i);
            return 0;
        }
    for (int i = 10; i < 13; i++) {
        const kiln_type *s = kattn_cuda_type(n, in, i);
        if (!s || s->dtype != KILN_DTYPE_FLOAT) {
            snprintf(why, cap, "scale input %d is absent or not known to be float32", i);
            return 0;
        }
    }
    for (int i = 1; i < n->n_out; i++)
        if (out && out[i]) {
            snprintf(why, cap, "present key/value outputs are not supported with float8e4m3fn inputs");
            return 0;
        }
    if (q->rank != 3 || (k->rank != 3 && k->rank != 4) || v->rank != k->rank) {
        snprintf(why, cap, "FP8 attention takes 3-D query and 3-D or 4-D (cached) key/value");
        return 0;
    }
    const int64_t N = kiln_attr_int(n, "num_heads", 0);
    if (N <= 0 || !dim_known(q->dims[2])) {
        snprintf(why, cap, "the head size is not known before running");
        return 0;
    }
    const int64_t H = q->dims[2] / N;
    const int64_t Hv = v->rank == 4 ? v->dims[3] : dim_known(v->dims[2]) ? v->dims[2] / N : -1;
    if (H % 16 || H > 256) {
        snprintf(why, cap, "head size %lld: the FP8 kernel takes multiples of 16 up to 256", (long long)H);
        return 0;
    }
    if (Hv != H) {
        snprintf(why, cap, "value head size differs from the query's (or is unknown): the FP8 kernel needs them equal");
        return 0;
    }
    const int64_t odt = kiln_attr_int(n, "output_dtype", KILN_DTYPE_FLOAT16);
    if (odt != KILN_DTYPE_FLOAT16 && odt != KILN_DTYPE_BFLOAT16) {
        snprintf(why, cap, "output_dtype %lld (float16 or bfloat16 only)", (long long)odt);
        return 0;
    }
    return 1;
}

kiln_status kattn_cuda_mha_fp8_compute(kiln_ctx *ctx) {
    const kiln_tensor *q = kiln_input(ctx, 0), *k = kiln_input(ctx, 1), *v = kiln_input(ctx, 2);
    kiln_tensor *out = kiln_output(ctx, 0);
    const kiln_tensor *sc[3] = {ctx->n_in > 10 ? kiln_input(ctx, 10) : NULL, ctx->n_in > 11 ? kiln_input(ctx, 11) : NULL,
                                ctx->n_in > 12 ? kiln_input(ctx, 12) : NULL};
    if (!q || !k || !v || !out || !sc[0] || !sc[1] || !sc[2])
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "FP8 attention needs query, key, value, the three scales (inputs 10-12) and output 0");
    const int64_t N = kiln_attr_int(ctx->node, "num_heads", 0);
    const int64_t B = q->dims[0], S = q->dims[1], D = q->dims[2], H = N > 0 ? D / N : 0;
    const int cached = k->rank == 4;
    const int64_t L = cached ? k->dims[2] : k->dims[1];
    const int64_t Hv = cached ? v->dims[3] : v->dims[2] / N;
    if (Hv != H)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "FP8 attention on the GPU needs H_v == H (%lld vs %lld)",
                         (long long)Hv, (long long)H);
    const int64_t sizes[] = {B, S, L, N, H};
    for (int i = 0; i < 5; i++)
        if (sizes[i] < 0 || sizes[i] > INT_MAX)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "a size (%lld) exceeds what the FP8 kernel indexes",
                             (long long)sizes[i]);
    if (B == 0 || S == 0 || kiln_numel(out) == 0) return KILN_OK;
    kiln_cuda_provider *p = kiln_cuda_of(ctx);
    if (L == 0) {
        KILN_CUDA_TRY(ctx, kiln_cuda_memset(p, out->data, 0, kiln_tensor_nbytes(out)));
        return KILN_OK;
    }
    kiln_cuda_sdpa_fp8 d;
    memset(&d, 0, sizeof d);
    d.out_dtype = out->dtype;
    d.B = (int)B, d.N = (int)N, d.N_kv = (int)N, d.S = (int)S, d.T = (int)L, d.H = (int)H;
    d.scale = kiln_attr_float(ctx->node, "scale", 0.0f);
    d.causal = kiln_attr_int(ctx->node, "unidirectional", 0) != 0;
    if (d.causal && L != S)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "unidirectional with key length %lld != query length %lld is not supported with "
                         "float8e4m3fn inputs", (long long)L, (long long)S);
    d.q = (kiln_cuda_view){q->data, S * D, H, D};
    if (cached) {
        d.k = (kiln_cuda_view){k->data, N * L * H, L * H, H};
        d.v = (kiln_cuda_view){v->data, N * L * H, L * H, H};
    } else {
        d.k = (kiln_cuda_view){k->data, L * D, H, D};
        d.v = (kiln_cuda_view){v->data, L * D, H, D};
    }
    d.q_scale = sc[0]->data, d.k_scale = sc[1]->data, d.v_scale = sc[2]->data;
    d.out = out->data;
    d.o_sb = S * D, d.o_sn = H, d.o_ss = D;
    KILN_CUDA_TRY(ctx, kiln_cuda_attention_fp8(p, &d));
    return KILN_OK;
}
