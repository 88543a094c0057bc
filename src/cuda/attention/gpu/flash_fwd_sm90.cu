// Dispatch glue for the Hopper wgmma flash kernel (flash_fwd_sm90.cuh).
#include "../attention_internal.h"
#include "../flash_fwd_sm90.cuh"

#include <stdio.h>
#include <stdlib.h>

namespace {

int sm90_variants(int hd, const kiln_sm90::Variant **out) {
    switch (hd) {
    case 16: return kiln_sm90::variants_hd16(out);
    case 32: return kiln_sm90::variants_hd32(out);
    case 48: return kiln_sm90::variants_hd48(out);
    case 64: return kiln_sm90::variants_hd64(out);
    case 80: return kiln_sm90::variants_hd80(out);
    case 96: return kiln_sm90::variants_hd96(out);
    case 128: return kiln_sm90::variants_hd128(out);
    case 160: return kiln_sm90::variants_hd160(out);
    case 192: return kiln_sm90::variants_hd192(out);
    case 256: return kiln_sm90::variants_hd256(out);
    default: *out = nullptr; return 0;
    }
}

// Head sizes (padded) whose wgmma kernel is the default on Hopper. Measured on an H100
// (bench/attention/RESULTS.md): faster than every mma.sync tile at H = 32, 40, 64, 80, 128, 160;
// at H = 16 the mma.sync 64x128 tile is ~10% faster (softmax-bound, more CTAs in flight).
// 96, 192 and 256 were not in the table; they follow their neighbours.
// KILN_ENABLE_SM90_ATTENTION=1 takes it for every head size.
bool default_on(int hd) { return hd != 16; }

} // namespace

int kiln_cuda_sm90_variants(int H) {
    const kiln_sm90::Variant *v;
    return sm90_variants(kiln_cuda_pad_head(H), &v);
}

int kiln_cuda_sm90_supports(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d, int forced, int variant, char *name,
                            size_t n) {
    const kiln_cuda_device_info *info = kiln_cuda_info(p);
    if (info->cc_major != 9 || info->cc_minor != 0) {
        snprintf(name, n, "not sm_90");
        return 0;
    }
    const int hd = kiln_cuda_pad_head(d->H);
    const kiln_sm90::Variant *vs;
    const int nv = sm90_variants(hd, &vs);
    if (nv == 0) {
        snprintf(name, n, "no sm90 kernel for head size %d", d->H);
        return 0;
    }
    if (!forced && !default_on(hd) && !kiln_attn_env_get()->enable_sm90) {
        snprintf(name, n, "sm90 kernel not enabled for hd%d", hd);
        return 0;
    }
    const int vi = variant > 0 && variant < nv ? variant : 0;
    // A build without sm_90a machine code has no image for this device.
    cudaFuncAttributes attr;
    if (cudaFuncGetAttributes(&attr, vs[vi].probe) != cudaSuccess) {
        cudaGetLastError();
        snprintf(name, n, "no sm_90a image in this build");
        return 0;
    }
    snprintf(name, n, "flash_sm90<%s,hd%d,%s>", d->dtype == KILN_DTYPE_FLOAT16 ? "fp16" : "bf16", hd, vs[vi].name);
    return 1;
}

kiln_status kiln_cuda_run_sm90(kiln_cuda_provider *p, const kiln_flash::Params &fp, int dtype, int variant,
                               const char *name) {
    const kiln_sm90::Variant *vs;
    const int nv = sm90_variants(kiln_cuda_pad_head(fp.H), &vs);
    if (nv == 0) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "no sm90 attention kernel for head size %d", fp.H);
    const int vi = variant > 0 && variant < nv ? variant : 0;
    cudaStream_t stream = (cudaStream_t)kiln_cuda_stream(p);
    cudaError_t e = dtype == KILN_DTYPE_FLOAT16 ? vs[vi].fp16(fp, stream) : vs[vi].bf16(fp, stream);
    return kiln_cuda_check(e, name);
}
