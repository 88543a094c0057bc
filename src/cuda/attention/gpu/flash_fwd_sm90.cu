// Dispatch glue for the Hopper wgmma flash kernel (flash_fwd_sm90.cuh).
#include "../attention_internal.h"
#include "../flash_fwd_sm90.cuh"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
// 96, 192 and 256 were not in the table; they follow their neighbours. Within a head size, the
// variant list's first entry is the tile taken (default_variant below for the exception at 64):
// the persistent TMA-fed kernel from 32 to 160 (see the lists in flash_sm90_hd*.cu).
// KILN_ENABLE_SM90_ATTENTION=1 takes it for every head size.
bool default_on(int hd) { return hd != 16; }

int find_variant(const kiln_sm90::Variant *vs, int nv, const char *name) {
    for (int i = 0; i < nv; ++i)
        if (!strcmp(vs[i].name, name)) return i;
    return 0;
}

// The first TMA-fed tile of a list (0 when none).
int first_tma(const kiln_sm90::Variant *vs, int nv) {
    for (int i = 0; i < nv; ++i)
        if (!strncmp(vs[i].name, "tma", 3)) return i;
    return 0;
}

// The tile normal selection takes: the list's first entry, except at head size 64 where the
// fastest tile depends on the mask and the query length (bench/attention/RESULTS.md, persistent
// sweeps): under a causal mask the persistent BM 128 x BN 128 tile; otherwise BM 128 x BN 64
// while a BM 192 tile would be mostly padding (S <= 256), the BM 192 tile above. Packed batches
// run the first entry, the cp.async tile (the TMA kernel cannot map them).
//
// Head sizes 96, 192, 256 (issue 13): the TMA tiles follow the cp.async default in their lists.
// Measured on the H100 (bench/attention/hd_tiles.sh, 16 shapes per head size, fp16 and bf16;
// bench/results/attention/hd_tiles_2026-12-06.md), the list's first TMA entry beat the cp.async
// tile on every row: 1.68x geomean at 96, 1.52x at 192, 1.37x at 256. As at 64, a smaller BN
// wins while the grid is short (S <= 512: 4 query tiles per head or fewer), where the wide tile
// fell to 0.86x cuDNN at 256 under a causal mask.
int default_variant(int hd, int S, int causal, bool packed, const kiln_sm90::Variant *vs, int nv) {
    if ((hd == 96 || hd == 192 || hd == 256) && !packed) {
        const char *short_grid = hd == 192 ? "tma_wg2_bn64_persist_pp" : hd == 256 ? "tma_wg2_bn64_occ1_pp" : nullptr;
        const int v = short_grid && S <= 512 ? find_variant(vs, nv, short_grid) : 0;
        return v ? v : first_tma(vs, nv);
    }
    if (hd != 64 || packed) return 0;
    static const int small = find_variant(vs, nv, "tma_wg2_bn64_persist_pp");
    static const int large = find_variant(vs, nv, "tma_wg3_bn128_persist_pp");
    static const int masked = find_variant(vs, nv, "tma_wg2_bn128_persist_pp");
    if (causal) return masked;
    return S <= 256 ? small : large;
}

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
    const int vi = kiln_cuda_sm90_resolve_variant(d, variant);
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

int kiln_cuda_sm90_resolve_variant(const kiln_cuda_sdpa *d, int variant) {
    const int hd = kiln_cuda_pad_head(d->H);
    const kiln_sm90::Variant *vs;
    const int nv = sm90_variants(hd, &vs);
    if (variant >= 0 && variant < nv) return variant;
    return default_variant(hd, d->S, d->causal, d->cu_seqlens_q != nullptr, vs, nv);
}

const char *kiln_cuda_sm90_variant_name(int H, int v) {
    const kiln_sm90::Variant *vs;
    const int nv = sm90_variants(kiln_cuda_pad_head(H), &vs);
    return v >= 0 && v < nv ? vs[v].name : nullptr;
}

kiln_status kiln_cuda_run_sm90(kiln_cuda_provider *p, const kiln_flash::Params &fp, int dtype, int variant,
                               const char *name) {
    const kiln_sm90::Variant *vs;
    const int nv = sm90_variants(kiln_cuda_pad_head(fp.H), &vs);
    if (nv == 0) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "no sm90 attention kernel for head size %d", fp.H);
    const int vi = variant >= 0 && variant < nv ? variant : 0; // resolved by the selection
    cudaStream_t stream = (cudaStream_t)kiln_cuda_stream(p);
    cudaError_t e = dtype == KILN_DTYPE_FLOAT16 ? vs[vi].fp16(fp, stream) : vs[vi].bf16(fp, stream);
    return kiln_cuda_check(e, name);
}

// ---------------------------------------------------------------------------------------------
// Host side of the TMA-fed kernel (flash_fwd_sm90_tma.cuh).

#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

PFN_cuTensorMapEncodeTiled_v12000 tma_encoder() {
    // Resolved once; the runtime hands out the driver's function, so kiln needs no -lcuda.
    static PFN_cuTensorMapEncodeTiled_v12000 fn = nullptr;
    static bool tried = false;
    if (!tried) {
        void *f = nullptr;
        cudaDriverEntryPointQueryResult q;
        if (cudaGetDriverEntryPointByVersion("cuTensorMapEncodeTiled", &f, 12000, cudaEnableDefault, &q) ==
                cudaSuccess &&
            q == cudaDriverEntryPointSuccess)
            fn = (PFN_cuTensorMapEncodeTiled_v12000)f;
        else
            cudaGetLastError();
        tried = true;
    }
    return fn;
}

bool tma_make_map(CUtensorMap *m, bool f16, const void *ptr, int H, int rows, int heads, int batches, int64_t ss,
                  int64_t sn, int64_t sb, int box_rows) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = tma_encoder();
    if (!enc || rows <= 0) return false;
    // Dimensions innermost first: head dim (true H: TMA zero-fills the padded columns), sequence,
    // head, batch; strides in bytes for dims 1..3. A single-entry dim's stride is never used, so
    // a zero or odd one is replaced by a legal value.
    const cuuint64_t dims[4] = {(cuuint64_t)H, (cuuint64_t)rows, (cuuint64_t)heads, (cuuint64_t)batches};
    int64_t st[3] = {ss * 2, sn * 2, sb * 2};
    const int64_t n_of[3] = {rows, heads, batches};
    for (int i = 0; i < 3; ++i)
        if (n_of[i] == 1 && (st[i] <= 0 || st[i] % 16)) st[i] = 16;
    const cuuint64_t strides[3] = {(cuuint64_t)st[0], (cuuint64_t)st[1], (cuuint64_t)st[2]};
    // Box: 64 elements (128 bytes, the swizzle span) by box_rows rows of one head and batch.
    const cuuint32_t box[4] = {64, (cuuint32_t)box_rows, 1, 1};
    const cuuint32_t estr[4] = {1, 1, 1, 1};
    CUresult r = enc(m, f16 ? CU_TENSOR_MAP_DATA_TYPE_FLOAT16 : CU_TENSOR_MAP_DATA_TYPE_BFLOAT16, 4,
                     const_cast<void *>(ptr), dims, strides, box, estr, CU_TENSOR_MAP_INTERLEAVE_NONE,
                     CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B, CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS;
}

int tma_sm_count() {
    // Cached per device: the launch path must not pay an attribute query per call.
    static int cached[64];
    int dev = 0;
    if (cudaGetDevice(&dev) != cudaSuccess || dev < 0 || dev >= 64) {
        cudaGetLastError();
        return 0;
    }
    if (cached[dev] == 0) {
        int n = 0;
        if (cudaDeviceGetAttribute(&n, cudaDevAttrMultiProcessorCount, dev) != cudaSuccess) {
            cudaGetLastError();
            return 0;
        }
        cached[dev] = n;
    }
    return cached[dev];
}

cudaError_t tma_fallback(int hd, bool f16, const Params &p, cudaStream_t stream) {
    const Variant *vs;
    const int nv = sm90_variants(hd, &vs);
    for (int i = 0; i < nv; ++i)
        if (strncmp(vs[i].name, "tma", 3) != 0) return f16 ? vs[i].fp16(p, stream) : vs[i].bf16(p, stream);
    return cudaErrorInvalidValue;
}

} // namespace kiln_sm90
