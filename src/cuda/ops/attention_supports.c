/* Placement of the com.microsoft attention ops on the CUDA provider: which nodes the GPU kernels
 * take, decided from the static types (ops/attention.c says what the kernels have a form for). A
 * node refused here runs on the CPU with the reason written into why. */
#include "attention_glue.h"

#include <stdio.h>

const kiln_type *kattn_cuda_type(const kiln_node *n, const kiln_graph_value *const *in, int i) {
    return i < n->n_in && in[i] && in[i]->has_type ? &in[i]->type : NULL;
}

/* Static dimensions known to differ (both concrete). */
static int dim_differs(int64_t a, int64_t b) { return a >= 0 && b >= 0 && a != b; }

/* The float inputs in mask must all be float16 or all bfloat16. */
static int need_half(const kiln_node *n, const kiln_graph_value *const *in, unsigned mask, char *why,
                     size_t cap) {
    int dt = kiln_cuda_in_dtype(in, 0);
    if (dt == KILN_DTYPE_FLOAT) {
        snprintf(why, cap, "float32 inputs: the GPU attention kernels take float16 and bfloat16");
        return 0;
    }
    return kiln_cuda_need_float(n, in, mask, why, cap);
}

static int need_int32(const kiln_node *n, const kiln_graph_value *const *in, int i, const char *what,
                      char *why, size_t cap) {
    const kiln_type *t = kattn_cuda_type(n, in, i);
    if (i < n->n_in && in[i] && (!t || t->dtype != KILN_DTYPE_INT32)) {
        snprintf(why, cap, "%s must be int32 (its type is not known to be)", what);
        return 0;
    }
    return 1;
}

int kattn_cuda_mha_supports(const kiln_node *n, const kiln_graph_value *const *in,
                        const kiln_graph_value *const *out, char *why, size_t cap) {
    if (kiln_cuda_in_dtype(in, 0) == KILN_DTYPE_FLOAT8E4M3FN) return kattn_cuda_mha_fp8_supports(n, in, out, why, cap);
    /* float inputs: query, key, value, bias, relative_position_bias, past_key, past_value */
    if (!need_half(n, in, 0xEF, why, cap)) return 0;
    for (int i = 8; i < n->n_in; i++)
        if (in[i]) {
            snprintf(why, cap, "input %d is not supported (inputs 0-7 are)", i);
            return 0;
        }
    if (!need_int32(n, in, 4, "key_padding_mask", why, cap)) return 0;
    const kiln_type *mask = kattn_cuda_type(n, in, 4);
    if (mask && mask->rank < 0) {
        snprintf(why, cap, "the rank of key_padding_mask is not known before running");
        return 0;
    }
    if (mask && mask->rank != 1) {
        snprintf(why, cap, "key_padding_mask of rank %d: raw 0/1 masks ((B,L), (B,T), (B,S,T)) have no "
                 "form in the GPU kernels, only (B) and (3B+2) key lengths", mask->rank);
        return 0;
    }
    const kiln_type *q = kattn_cuda_type(n, in, 0), *k = kattn_cuda_type(n, in, 1);
    if (kiln_attr_int(n, "unidirectional", 0) && q && q->rank == 3 && k && k->rank >= 3) {
        int64_t L = k->rank == 4 ? k->dims[2] : k->dims[1];
        if (dim_differs(q->dims[1], L)) {
            snprintf(why, cap, "unidirectional with key length %lld != query length %lld: the GPU kernels "
                     "align the causal diagonal to the last key", (long long)L, (long long)q->dims[1]);
            return 0;
        }
    }
    return 1;
}

/* The head size a packed query gives, when static inference knows it (else 0). */
static int64_t packed_head(const kiln_node *n, const kiln_type *q, int64_t N) {
    if (q && q->rank == 4 && q->dims[3] > 0) return q->dims[3];
    if (q && q->rank == 2 && q->dims[1] > 0 && N > 0) return q->dims[1] / N;
    return 0;
}

int kattn_cuda_packed_mha_supports(const kiln_node *n, const kiln_graph_value *const *in,
                               const kiln_graph_value *const *out, char *why, size_t cap) {
    /* float inputs: query, key, value, bias, relative_position_bias */
    if (!need_half(n, in, 0x4F, why, cap)) return 0;
    if (!need_int32(n, in, 4, "token_offset", why, cap) ||
        !need_int32(n, in, 5, "cumulative_sequence_length", why, cap))
        return 0;
    /* Only the flash kernels take packed sequences without reading the lengths on the host. */
    const char *unfused = NULL;
    if (n->n_in > 6 && in[6]) unfused = "relative_position_bias";
    int64_t N = kiln_attr_int(n, "num_heads", 0), H = packed_head(n, kattn_cuda_type(n, in, 0), N);
    const kiln_type *q = kattn_cuda_type(n, in, 0), *v = kattn_cuda_type(n, in, 2);
    if (H > 0 && (H % 8 || H > 256)) unfused = "a head size that is not a multiple of 8 up to 256";
    if (q && v && q->rank == 2 && v->rank == 2 && dim_differs(q->dims[1], v->dims[1]))
        unfused = "a value head size different from the query's";
    if (unfused) {
        snprintf(why, cap, "%s needs the unfused attention path, which with packed sequences reads "
                 "cumulative_sequence_length on the host", unfused);
        return 0;
    }
    return 1;
}

int kattn_cuda_attention_supports(const kiln_node *n, const kiln_graph_value *const *in,
                              const kiln_graph_value *const *out, char *why, size_t cap) {
    /* float inputs: input, weights, bias, past, relative_position_bias */
    if (!need_half(n, in, 0x37, why, cap)) return 0;
    if (kiln_attr_int(n, "past_present_share_buffer", 0)) {
        snprintf(why, cap, "past_present_share_buffer = 1 (one shared KV buffer) has no GPU form");
        return 0;
    }
    if (kiln_attr_int(n, "do_rotary", 0)) {
        snprintf(why, cap, "do_rotary = 1 is not supported");
        return 0;
    }
    if (!need_int32(n, in, 3, "mask_index", why, cap)) return 0;
    const kiln_type *mask = kattn_cuda_type(n, in, 3), *x = kattn_cuda_type(n, in, 0);
    if (!mask) return 1;
    if (mask->rank < 0) {
        snprintf(why, cap, "the rank of mask_index is not known before running");
        return 0;
    }
    int64_t B = x && x->rank == 3 ? x->dims[0] : KILN_DIM_UNKNOWN;
    if (mask->rank == 1 && B > 0 && mask->dims[0] == 2 * B) {
        snprintf(why, cap, "mask_index (2B) (key end and start positions) has no form in the GPU kernels");
        return 0;
    }
    if (mask->rank == 1 || (mask->rank == 2 && mask->dims[1] == 1)) return 1; /* lengths / dummy */
    snprintf(why, cap, "mask_index of rank %d: raw masks ((B,T), (B,S,T), 4-D) have no form in the GPU "
             "kernels, only (B) and (3B+2) key lengths", mask->rank);
    return 0;
}
