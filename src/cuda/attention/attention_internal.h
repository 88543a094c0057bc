/* Pieces shared by the attention .cu files; not part of the provider's interface. */
#ifndef KILN_CUDA_ATTENTION_INTERNAL_H
#define KILN_CUDA_ATTENTION_INTERNAL_H

#include "attention_dispatch.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Settings read once from the environment. */
typedef struct kiln_attn_env {
    int disable_flash, disable_sm90, enable_sm90, force_unfused, verbose, disable_decode;
    int decode_kernel; /* KILN_DECODE_KERNEL: 0 by rule, 1 CUDA cores ("simt"), 2 tensor cores ("mma") */
    int decode_streamk; /* KILN_DECODE_STREAMK: the tensor-core decode kernel's share-out, -1 by rule, 0 split, 1 stream-K */
    size_t unfused_ws_bytes;
} kiln_attn_env;
const kiln_attn_env *kiln_attn_env_get(void);

/* The unfused path (attention_unfused.cu): cuBLAS Q·Kᵀ, softmax kernel, cuBLAS P·V. Handles every
 * case kiln_cuda_attention accepts. scale is already resolved (non-zero). */
kiln_status kiln_cuda_attention_unfused(kiln_cuda_provider *p, const kiln_cuda_sdpa *d, float scale);

/* Writes zeros to (b, n, s, h) at out + b*sb + n*sn + s*ss + h for all b < B, n < N, s < S,
 * h < Hv (16-bit elements); for query rows that see no key. */
kiln_status kiln_cuda_zero_rows(kiln_cuda_provider *p, void *out, int64_t sb, int64_t sn, int64_t ss, int B, int N,
                                int S, int Hv);

/* Head size rounded up to the next compiled tile head dimension (16, 32, 48, 64, 80, 96, 128,
 * 160, 192, 256); 0 above 256. */
int kiln_cuda_pad_head(int H);

#ifdef __cplusplus
}

namespace kiln_flash {
struct Params;
}
/* Hopper wgmma kernel (gpu/flash_fwd_sm90.cu). supports() says whether it runs d on p (forced:
 * ignore the default-on table) and writes its name, or the reason it does not, into name. */
// The sm90 tile index that runs for d: variant itself when in range (forced), else the default.
int kiln_cuda_sm90_resolve_variant(const kiln_cuda_sdpa *d, int variant);
int kiln_cuda_sm90_supports(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d, int forced, int variant, char *name,
                            size_t n);
// Split-KV decode kernel (gpu/attention_decode.cu); d must pass kiln_cuda_decode_blocker.
kiln_status kiln_cuda_run_decode(kiln_cuda_provider *p, const kiln_cuda_sdpa *d, const kiln_flash::Params &fp,
                                 const char *name);
kiln_status kiln_cuda_run_sm90(kiln_cuda_provider *p, const kiln_flash::Params &fp, int dtype, int variant,
                               const char *name);
#endif

#endif
