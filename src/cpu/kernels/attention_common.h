/* Shared pieces of the attention kernels (com.microsoft Attention, MultiHeadAttention,
 * PackedAttention, PackedMultiHeadAttention, ONNX Attention, RotaryEmbedding).
 *
 * Every op reduces its inputs to one description, kattn_sdpa: strided views of Q, K_all and V_all
 * (any of BSNH, BNSH, BSN3H, BSN2H or packed-token layouts without copying), additive score terms
 * (relative position bias, converted masks), per-batch key windows (1-D masks, key lengths),
 * causality, and where the output goes. kattn_run then computes, per (batch, head, query block),
 * a tiled online softmax over key tiles with cblas_sgemm for Q·Kᵀ and P·V, so no more than one
 * (query block × key tile) block of scores exists per thread. */
#ifndef KILN_ATTENTION_COMMON_H
#define KILN_ATTENTION_COMMON_H

#include "ops/op.h"
#include <stdint.h>

/* A (batch, head, seq, h) view: element = p + batch_offset + head*sn + seq*ss + h, with h
 * contiguous. batch_offset is b*sb, or row0[b]*ss when the problem has packed batches. */
typedef struct kattn_view {
    const float *p;
    int64_t sb, sn, ss;
} kattn_view;

/* An additive score term indexed (b, n, s, j), j contiguous; strides of 0 broadcast. Columns at
 * or beyond `cols` count as -inf (ONNX masks shorter than the key length). */
typedef struct kattn_addend {
    const float *p; /* NULL: absent */
    int64_t sb, sn, ss;
    int64_t cols;
} kattn_addend;

enum { KATTN_MAX_ADDENDS = 2 };

typedef struct kattn_sdpa {
    int64_t B, N, N_kv; /* query heads; query head n reads key/value head n / (N / N_kv) */
    int64_t S, T;       /* query rows and key rows (maxima when seq_len is set) */
    int64_t H, Hv;
    int64_t past;       /* causal offset: query s sees keys j <= past + s */
    const int64_t *past_b; /* per-batch causal offsets instead of past (NULL: use past) */
    int64_t local_window;  /* > 0 with causal: query s sees at most local_window keys, the last
                              * being past + s (onnxruntime's GroupQueryAttention window) */
    /* Smooth softmax: the denominator also holds exp(sink[n] - max) for query head n (sink NULL
     * and smooth set: a sink of 0), as onnxruntime's head_sink / smooth_softmax. */
    const float *sink;
    int smooth;
    float scale;
    float softcap;      /* > 0: x = softcap * tanh(x / softcap) before the addends */
    int causal;
    kattn_view q, k, v;
    float *out;
    int64_t o_sb, o_sn, o_ss;
    kattn_addend add[KATTN_MAX_ADDENDS];
    /* Per-batch key window [key_lo[b], key_hi[b]) (NULL: [0, T)). Keys outside it are masked.
     * window_additive = 1: the mask is a finite additive penalty (com.microsoft masks), so a row
     * whose window is empty attends to every (causally visible) key; 0: a hard -inf mask. */
    const int64_t *key_lo, *key_hi;
    int window_additive;
    /* Packed batches (PackedAttention / PackedMHA): sequence b holds seq_len[b] query and key
     * rows starting at token row row0[b] of q, k, v and out. NULL: dense batches. */
    const int64_t *row0, *seq_len;
    /* Optional (B, N, S, T) copy of the scores (ONNX qk_matmul_output): mode 0 scaled Q·Kᵀ,
     * 1 after softcap, 2 after masks, 3 softmax probabilities. */
    float *qk_out;
    int qk_mode;
} kattn_sdpa;

/* Runs the attention described by p over ctx's threads. Fails only on allocation failure. A row
 * whose scores are all -inf (hard masks) gets zero probabilities and a zero output. */
kiln_status kattn_run(kiln_ctx *ctx, const kattn_sdpa *p);

/* Keeps OpenBLAS on the calling thread: kiln threads the work itself, and two thread pools
 * competing for the same cores slow both down. */
void kattn_blas_serial(void);

/* C (M × N, row stride ldc) = A (M × K, lda) · B (K × N, ldb) + bias broadcast over rows (bias
 * may be NULL), rows spread over ctx's threads. */
void kattn_project(kiln_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, const float *bias, float *C, int64_t ldc);

/* dst (B, N, L, H) contiguous = src viewed as (b, n, l, h) through v, plus bias[n*H + h] when
 * bias is not NULL; parallel over ctx. Used for present outputs and biased copies. */
void kattn_gather_bnsh(kiln_ctx *ctx, float *dst, const kattn_view *v, int64_t B, int64_t N,
                       int64_t L, int64_t H, const float *bias);

/* KV cache update into dst laid out (B, N, dst_rows, H): rows [0, P) come from past (blocks of
 * past_rows rows per (b, n); past NULL: leave them as they are), rows [P, P + L) from the new
 * rows seen through v. dst_rows >= P + L. */
void kattn_concat_kv(kiln_ctx *ctx, float *dst, int64_t dst_rows, const float *past,
                     int64_t past_rows, int64_t P, const kattn_view *v, int64_t B, int64_t N,
                     int64_t L, int64_t H);

/* Same-shape copy of a (B, N, L, H) view with bias added per (n, h) into a BSNH buffer (row stride
 * N*H): used to give biased Q/K/V a layout the core reads directly. */
void kattn_gather_bsnh(kiln_ctx *ctx, float *dst, const kattn_view *v, int64_t B, int64_t N,
                       int64_t L, int64_t H, const float *bias);

/* ---- com.microsoft masks (mask_index of Attention, key_padding_mask of MultiHeadAttention) ---- */

typedef struct kattn_mask {
    /* Windows (1-D masks) */
    int64_t *key_lo, *key_hi;
    /* Additive term (2-D / 3-D / 4-D raw masks), owned buffer */
    float *add;
    kattn_addend addend;
} kattn_mask;

enum {
    KATTN_MASK_ATTENTION = 1, /* Attention: (B), (2B), (3B+2), (B,T), (B,1)/(1,1), (B,S,T), (B,1,M,M) */
    KATTN_MASK_MHA = 2        /* MultiHeadAttention: (B), (3B+2), (B,L), (B,T), (B,S,T) */
};

/* Checks a mask's type and shape (no data needed). L: new key rows (MHA); max_m: required M of a
 * 4-D mask, or -1 for "any M >= T". */
kiln_status kattn_mask_check(kiln_ctx *ctx, const kiln_tensor *mask, int kind, int64_t B,
                             int64_t S, int64_t L, int64_t T, int64_t required_m, int causal);
/* Builds windows / additive buffer from a checked mask. */
kiln_status kattn_mask_build(kiln_ctx *ctx, const kiln_tensor *mask, int kind, int64_t B,
                             int64_t S, int64_t L, int64_t T, float filter, kattn_mask *out);
void kattn_mask_free(kattn_mask *m);
/* Puts a built mask into the problem description (windows and/or one addend slot). */
void kattn_mask_apply(const kattn_mask *m, kattn_sdpa *p, int addend_slot);

/* ---- element types (ONNX Attention / RotaryEmbedding accept float16, bfloat16, double) ---- */
int kattn_float_type(int dtype); /* float, float16, bfloat16, double */
/* The com.microsoft ops' element type T: input idx[0]'s dtype, which must be float32, float16 or
 * bfloat16; every other listed input that is present must have T too. */
kiln_status kattn_check_float_inputs(kiln_ctx *ctx, const int *idx, int n, int *dtype);
/* 1 when a tensor input or a wanted output of ctx is float16 or bfloat16. */
int kattn_has_half(kiln_ctx *ctx);
/* Runs a float32 compute on a copy of ctx whose float16/bfloat16 inputs and outputs are float32
 * scratch: inputs converted in, outputs converted back afterwards. Other tensors are shared. */
kiln_status kattn_compute_as_f32(kiln_ctx *ctx, kiln_status (*compute)(kiln_ctx *));
/* 1 when t's elements can be read on the host (not in a device provider's memory). */
int kattn_host_readable(const kiln_tensor *t);
/* A float32 copy of t's elements (or t's own data when it is float32; *owned is then NULL). */
kiln_status kattn_as_f32(kiln_ctx *ctx, const kiln_tensor *t, const float **out, float **owned);
void kattn_store_as(int dtype, const float *src, void *dst, int64_t n);

/* ---- small helpers ---- */
const char *kattn_shape(const kiln_tensor *t, char *buf, size_t n);
float kattn_default_scale(float scale_attr, int64_t H); /* 0 → 1/sqrt(H) */
/* Static inference: when any listed input has an unknown shape, marks every output unknown and
 * returns 1. */
int kattn_static_unknown(kiln_ctx *ctx, const int *inputs, int n, int dtype);

/* Entry points of the ops (one file each), gathered into kiln_ops_attention in attention_ops.c. */
kiln_status kattn_contrib_infer(kiln_ctx *ctx);
kiln_status kattn_contrib_compute(kiln_ctx *ctx);
kiln_status kattn_mha_infer(kiln_ctx *ctx);
kiln_status kattn_mha_compute(kiln_ctx *ctx);
kiln_status kattn_packed_infer(kiln_ctx *ctx);
kiln_status kattn_packed_compute(kiln_ctx *ctx);
kiln_status kattn_packed_mha_infer(kiln_ctx *ctx);
kiln_status kattn_packed_mha_compute(kiln_ctx *ctx);
kiln_status kattn_onnx_infer(kiln_ctx *ctx);
kiln_status kattn_onnx_compute(kiln_ctx *ctx);
kiln_status kattn_rotary_infer(kiln_ctx *ctx);
kiln_status kattn_rotary_compute(kiln_ctx *ctx);
kiln_status kattn_ms_rotary_infer(kiln_ctx *ctx);
kiln_status kattn_ms_rotary_compute(kiln_ctx *ctx);
kiln_status kattn_gqa_infer(kiln_ctx *ctx);
kiln_status kattn_gqa_compute(kiln_ctx *ctx);

/* ---- FP8 (float8e4m3fn) MultiHeadAttention (attention_fp8.c) ---- */
int kattn_is_fp8(int dtype);
/* Checks the FP8 form of the node (types, scale inputs 10-12, what FP8 does not support) and
 * gives the output element type (attribute output_dtype: float16 or bfloat16). */
kiln_status kattn_mha_fp8_check(kiln_ctx *ctx, int *out_dtype);
/* The three scales when they are host-readable (else 0), each checked finite and positive. */
kiln_status kattn_mha_fp8_scales(kiln_ctx *ctx, float sc[3]);
/* Dequantises query/key/value and runs f32_compute (the float32 operator) on a shadow context. */
kiln_status kattn_mha_fp8_compute(kiln_ctx *ctx, kiln_status (*f32_compute)(kiln_ctx *));

/* Rotates, in place, the first rd entries of each head vector of x laid out (B, S, N, H)
 * contiguous: pairs (i, i + rd/2), or (2i, 2i + 1) when interleaved, by the angle whose cosine
 * and sine are row pos[b*S + s] of cosc / sinc ((rows, rd/2), positions already checked). */
void kattn_rope_bsnh(kiln_ctx *ctx, float *x, int64_t B, int64_t S, int64_t N, int64_t H,
                     int64_t rd, const float *cosc, const float *sinc, const int64_t *pos,
                     int interleaved);

#endif
