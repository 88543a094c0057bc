// Hopper (sm_90a) wgmma flash kernel: placeholder until the warp-specialised kernel lands; the
// dispatcher falls back to the mma.sync kernel.
#include "../attention_internal.h"

#include <stdio.h>

extern "C" int kiln_cuda_sm90_supports(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d, char *name, size_t n) {
    (void)p;
    (void)d;
    if (n) snprintf(name, n, "no sm90 kernel in this build");
    return 0;
}

extern "C" kiln_status kiln_cuda_attention_sm90(kiln_cuda_provider *p, const kiln_cuda_sdpa *d, float scale) {
    (void)p;
    (void)d;
    (void)scale;
    return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "sm90 attention kernel not built");
}
