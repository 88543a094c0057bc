/* Fused multi-head attention forward on the GPU (com.microsoft MultiHeadAttention,
 * PackedMultiHeadAttention, Attention after its projection) — the C-callable entry.
 *
 * Two levels:
 *  - kiln_cuda_attention(): one scaled-dot-product attention over strided views. Every input
 *    format reduces to it without copying: a view is (pointer, batch/head/row strides) with the
 *    head dimension contiguous, so BSNH, BNSH, BSN3H, BSN2H and packed-token (cu_seqlens) tensors
 *    are all read in place.
 *  - kiln_cuda_mha_forward(): the MultiHeadAttention formats (spec §3.4, §5) plus KV-cache
 *    append (present = past ++ new), built on the first.
 *
 * Semantics follow spec §9: x = scale·q·k (+ bias), softmax over visible keys in fp32, out = p·v.
 *  - causal: query s of sequence b sees keys j <= s + (T_b − S_b) (bottom-right aligned).
 *  - key_lens: keys j >= key_lens[b] are masked. The com.microsoft masks are additive (−10000), so
 *    a batch whose length is <= 0 attends to every key (spec §7.2, quirk Q6); we reproduce that
 *    and otherwise treat masked keys as exactly zero weight (what −10000 gives in fp32 for any
 *    score range that fp16/bf16 inputs can produce short of |score| ~ 1e4).
 *  - A query row that sees no key at all (causal with T_b < S_b) is written as zeros.
 *
 * Kernel selection (first match wins), printed to stderr when KILN_ATTENTION_VERBOSE=1:
 *  Flash eligibility (both kinds): H % 8 == 0, H <= 256, H == H_v, scale > 0, fp16/bf16,
 *  16-byte aligned pointers and strides, compute capability >= 8.0, no additive bias with packed
 *  batches.
 *  0. decode (split-KV, flash-decoding) when the query is a few rows per KV head against the
 *     keys: S <= KILN_DECODE_MAX_S, (N / N_kv)·S <= 64, no packed batches, H == H_v; an additive
 *     bias is added to the scores as flash adds it. It splits the keys over CTAs to fill the SMs
 *     and combines the partial results (workspace:
 *     kiln_cuda_decode_workspace bytes from offset 0, as the unfused path). From 3 query rows per
 *     KV head (GQA groups, speculative queries) its scores and output run on tensor cores
 *     (decode_splitkv_mma), below that on CUDA cores.
 *  1. flash_sm90 (wgmma, sm_90a image, compute capability 9.0) for the head sizes where it is the
 *     measured default (or all, with KILN_ENABLE_SM90_ATTENTION=1), without an additive bias.
 *  2. flash (mma.sync, FlashAttention-2 style), any eligible case; it adds the bias to the scores.
 *  3. unfused: cuBLAS Q·Kᵀ into fp32 scores, a softmax kernel (masks, bias), cuBLAS P·V.
 * Environment (read once per process):
 *  KILN_DISABLE_FLASH_ATTENTION=1   never take the flash kernels (either kind)
 *  KILN_DISABLE_SM90_ATTENTION=1    never take the Hopper wgmma kernel
 *  KILN_ENABLE_SM90_ATTENTION=1     take the Hopper kernel for every head size it has
 *  KILN_FORCE_UNFUSED_ATTENTION=1   always take the unfused path
 *  KILN_DISABLE_DECODE_ATTENTION=1  never take the split-KV decode kernel (the default for the
 *                                   shapes above since its first GPU run, 2026-12-06)
 *  KILN_DECODE_KERNEL=simt|mma      run every decode shape on the CUDA-core or the tensor-core
 *                                   decode kernel (A/B runs, tests of each)
 *  KILN_ATTENTION_VERBOSE=1         one line per call naming the kernel that ran and why
 *  KILN_UNFUSED_WORKSPACE_MB=n      cap on the unfused score buffer (default 4096)
 */
#ifndef KILN_CUDA_ATTENTION_DISPATCH_H
#define KILN_CUDA_ATTENTION_DISPATCH_H

#include "../cuda_provider.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element (b, n, s, h) lives at p + b*sb + n*sn + s*ss + h (in elements). With cu_seqlens, b's
 * rows start at token row cu_seqlens[b] instead: p + (cu[b] + s)*ss + n*sn + h, and sb is unused. */
typedef struct kiln_cuda_view {
    const void *p;
    int64_t sb, sn, ss;
} kiln_cuda_view;

typedef struct kiln_cuda_sdpa {
    int dtype;          /* KILN_DTYPE_FLOAT16 or KILN_DTYPE_BFLOAT16 */
    int B, N, N_kv;     /* query head n reads key/value head n / (N / N_kv); N_kv = 0 means N */
    int S, T;           /* query and key lengths (maxima with cu_seqlens) */
    int H, Hv;          /* head sizes of q/k and of v/out */
    float scale;        /* 0 → 1/sqrt(H) */
    int causal;
    kiln_cuda_view q, k, v;
    void *out;          /* (b, n, s, h) at out + b*o_sb + n*o_sn + s*o_ss + h */
    int64_t o_sb, o_sn, o_ss;
    const int32_t *key_lens;     /* device, B entries, or NULL */
    const int32_t *cu_seqlens_q; /* device, B+1 entries, or NULL: packed query rows */
    const int32_t *cu_seqlens_k; /* device, B+1 entries; NULL with cu_seqlens_q means the same */
    /* Additive score term (b, n, s, j) at bias + b*bias_sb + n*bias_sn + s*bias_ss + j, same dtype
     * as the inputs, added after scaling (spec §8); a stride of 0 broadcasts. Unfused path only. */
    const void *bias;
    int64_t bias_sb, bias_sn, bias_ss;
} kiln_cuda_sdpa;

typedef enum kiln_cuda_attn_kernel {
    KILN_ATTN_KERNEL_NONE = 0,
    KILN_ATTN_KERNEL_FLASH = 1,      /* mma.sync FlashAttention-2 style */
    KILN_ATTN_KERNEL_FLASH_SM90 = 2, /* wgmma, Hopper */
    KILN_ATTN_KERNEL_UNFUSED = 3,
    KILN_ATTN_KERNEL_DECODE = 4      /* split-KV decode (gpu/attention_decode.cu) */
} kiln_cuda_attn_kernel;

typedef struct kiln_cuda_attn_choice {
    kiln_cuda_attn_kernel kernel;
    char name[96];   /* e.g. "flash_fwd<fp16,hd128,128x64,4w>" */
    char why[160];   /* why the faster kinds were not taken ("" when the first was) */
    int variant;     /* tile variant that runs (flash kinds) */
} kiln_cuda_attn_choice;

/* Forces a kernel regardless of the environment (tests, benchmarks); NONE = normal selection. */
typedef struct kiln_cuda_attn_opts {
    kiln_cuda_attn_kernel force;
    int flash_variant; /* with force = FLASH or FLASH_SM90: tile variant, an index into the head
                          size's list (0 = its first entry; normal selection may take another
                          tile for some shapes, see default_variant in gpu/flash_fwd_sm90.cu) */
} kiln_cuda_attn_opts;

/* Chooses the kernel for d without running anything. */
void kiln_cuda_attention_select(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d,
                                const kiln_cuda_attn_opts *opts, kiln_cuda_attn_choice *out);
/* Runs attention d on p's stream (asynchronous; no host sync unless the unfused path needs
 * cu_seqlens on the host). opts may be NULL; chosen may be NULL. */
kiln_status kiln_cuda_attention(kiln_cuda_provider *p, const kiln_cuda_sdpa *d,
                                const kiln_cuda_attn_opts *opts, kiln_cuda_attn_choice *chosen);

/* The split-KV decode kernel: the most query rows it takes; why it cannot run d ("" when it can,
 * apart from the flash kernels' common conditions); the workspace it takes from offset 0 and the
 * number of key splits it would use on p (0 when it has no plan; with the stream-K share-out, the
 * number of CTAs), with *kind (may be NULL) set to 0 for the CUDA-core kernel, 1 for the
 * tensor-core kernel's splits and 2 for its stream-K share-out. */
#define KILN_DECODE_MAX_S 4
const char *kiln_cuda_decode_blocker(const kiln_cuda_sdpa *d);
size_t kiln_cuda_decode_workspace(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d);
int kiln_cuda_decode_splits(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d, int *kind);

/* ---- MultiHeadAttention formats ---- */
typedef enum kiln_cuda_mha_format {
    KILN_MHA_Q_K_V = 0,    /* q (B,S,N·H), k (B,L,N·H), v (B,L,N·Hv) */
    KILN_MHA_Q_KV = 1,     /* q (B,S,N·H), kv (B,L,N,2,H) passed as k; v NULL */
    KILN_MHA_QKV = 2,      /* qkv (B,S,N,3,H) passed as q; k, v NULL; L = S */
    KILN_MHA_Q_K_V_BNSH = 3 /* q (B,S,N·H), k (B,N,L,H), v (B,N,L,Hv): cached cross-attention K/V */
} kiln_cuda_mha_format;

typedef struct kiln_cuda_mha_args {
    int dtype;
    int format;
    int B, S, L, N, H, Hv;     /* Hv = 0 means H */
    float scale;
    int causal;
    const void *q, *k, *v;
    void *out;                 /* (B,S,N·Hv); packed batches: (tokens, N·Hv) */
    const int32_t *key_lens;   /* device (B) or NULL */
    /* Packed batches (PackedMultiHeadAttention): q/k/v/out have token rows instead of (B,S);
     * S and L are the maximum sequence lengths; cu_seqlens (B+1) on the device. Q_K_V and QKV only. */
    const int32_t *cu_seqlens;
    /* KV cache (BNSH): past (B,N,P,H) may be NULL (P = 0); present (B,N,P+L,H) may be NULL
     * unless past is given. With past, attention runs over present (T = P + L). */
    const void *past_key, *past_value;
    int P;
    void *present_key, *present_value;
    const void *bias; int bias_batch_broadcast; /* additive (B or 1, N, S, T), unfused only */
} kiln_cuda_mha_args;

kiln_status kiln_cuda_mha_forward(kiln_cuda_provider *p, const kiln_cuda_mha_args *a,
                                  const kiln_cuda_attn_opts *opts, kiln_cuda_attn_choice *chosen);

/* Copies (b, n, l, h) of src (a view, L rows) into dst (B, N, dst_rows, H) at rows
 * [row0, row0 + L); rows of dst outside that range are left alone. */
kiln_status kiln_cuda_copy_bnsh(kiln_cuda_provider *p, int dtype, void *dst, int64_t dst_rows,
                                int64_t row0, const kiln_cuda_view *src, int B, int N, int L, int H);

/* Number of tile variants compiled for head size H (0 when none): opts.flash_variant 0..n-1 with
 * force = KILN_ATTN_KERNEL_FLASH, resp. KILN_ATTN_KERNEL_FLASH_SM90. Variant 0 is the default. */
int kiln_cuda_flash_variants(int H);
int kiln_cuda_sm90_variants(int H);
/* Name of sm90 tile variant v for head size H ("tma_..." for the TMA-fed kernel), NULL if none. */
const char *kiln_cuda_sm90_variant_name(int H, int v);

#ifdef __cplusplus
}
#endif

#endif
