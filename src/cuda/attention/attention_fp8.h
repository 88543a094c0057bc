/* FP8 (float8e4m3fn) attention forward on the GPU: the C-callable entry (kernel in flash_fp8.cuh,
 * host side in gpu/flash_fp8.cu).
 *
 * out = softmax(scale · (q_scale·Q)(k_scale·K)ᵀ) · (v_scale·V), Q/K/V e4m3 codes read in place
 * through byte-strided views (kiln_cuda_view with strides in bytes = elements), scales as device
 * float32 scalars, out float16 or bfloat16. Causal masking is bottom-right aligned as in
 * kiln_cuda_attention. No masks, bias, packed batches or KV cache. Before the attention a prologue
 * kernel writes Vᵀ (keys permuted within 32-key blocks) into `workspace`
 * (kiln_cuda_fp8_workspace bytes). Runs on sm_89 and newer (mma.sync e4m3); the wgmma variants
 * on sm_90 only. KILN_FP8_VARIANT=name makes kiln_cuda_attention_fp8 use that variant. */
#ifndef KILN_CUDA_ATTENTION_FP8_H
#define KILN_CUDA_ATTENTION_FP8_H

#include "attention_dispatch.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct kiln_cuda_sdpa_fp8 {
    int out_dtype;      /* KILN_DTYPE_FLOAT16 or KILN_DTYPE_BFLOAT16 */
    int B, N, N_kv;     /* N_kv = 0 means N */
    int S, T, H;        /* H: head size of q, k and v (a multiple of 16 up to 256) */
    float scale;        /* softmax scale; 0 → 1/sqrt(H) */
    int causal;
    kiln_cuda_view q, k, v;                     /* strides in bytes */
    const float *q_scale, *k_scale, *v_scale;  /* device, one float each */
    void *out;                                  /* (b, n, s, h) at out + b*o_sb + n*o_sn + s*o_ss + h */
    int64_t o_sb, o_sn, o_ss;
    int variant;        /* tile variant (0 = default, or KILN_FP8_VARIANT's), for tests and benchmarks */
    int p_unscaled;     /* ablation: round P to e4m3 without the 2^8 factor (benchmark only) */
} kiln_cuda_sdpa_fp8;

/* Why the FP8 kernel cannot run d on a device of compute capability cc_major.cc_minor; NULL when
 * it can. */
const char *kiln_cuda_fp8_blocker(const kiln_cuda_sdpa_fp8 *d, int cc_major, int cc_minor);
/* Scratch bytes the call needs (Vᵀ). */
size_t kiln_cuda_fp8_workspace(const kiln_cuda_sdpa_fp8 *d);
/* Enqueues the Vᵀ prologue and the attention on stream (a cudaStream_t); d must pass the blocker.
 * name (may be NULL) receives the kernel's name. */
int kiln_cuda_fp8_launch(const kiln_cuda_sdpa_fp8 *d, void *workspace, void *stream, char *name, size_t name_cap);
/* Number of tile variants for head size H (0: none). */
int kiln_cuda_fp8_variants(int H);
/* Name of variant i for head size H (NULL if none), e.g. "128x64x4w_f16mma", "wgmma_wg2_bn128_occ1". */
const char *kiln_cuda_fp8_variant_name(int H, int i);
/* Index of the first variant from `from` on whose name contains part; -1 if none. */
int kiln_cuda_fp8_variant_find(int H, const char *part, int from);

/* Provider form: checks, takes the workspace and launches; fails with the blocker's reason. */
kiln_status kiln_cuda_attention_fp8(kiln_cuda_provider *p, const kiln_cuda_sdpa_fp8 *d);

#ifdef __cplusplus
}
#endif

#endif
