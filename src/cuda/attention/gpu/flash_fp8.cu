// Host side of the FP8 attention (attention_fp8.h): checks, the Vᵀ prologue, tile selection.
#include "../attention_fp8.h"
#include "../flash_fp8.cuh"
#include "../flash_fp8_sm90_tma.cuh"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

namespace {

using kiln_fp8::KEY_PAD;

int pad_head(int H) { return H <= 64 ? 64 : H <= 128 ? 128 : H <= 256 ? 256 : 0; }

int variants_for(int H, const kiln_fp8::Variant **out) {
    switch (pad_head(H)) {
    case 64: return kiln_fp8::variants_hd64(out);
    case 128: return kiln_fp8::variants_hd128(out);
    case 256: return kiln_fp8::variants_hd256(out);
    default: *out = nullptr; return 0;
    }
}

bool aligned16(const void *p) { return ((uintptr_t)p & 15) == 0; }
bool mult16(int64_t s) { return (s & 15) == 0; }
bool view_ok(const kiln_cuda_view &v) { return aligned16(v.p) && mult16(v.sb) && mult16(v.sn) && mult16(v.ss); }

int64_t padded_keys(int T) { return ((int64_t)T + KEY_PAD - 1) / KEY_PAD * KEY_PAD; }

// Vᵀ tile of 64 keys × 64 head columns per CTA: coalesced 16-byte reads of V rows into shared
// memory, then 16-byte writes of Vᵀ rows gathered in key_at order. Keys >= T and columns >= H are
// written as zeros (P is 0 there, and 0 · NaN from stale memory would poison the output).
constexpr int TK = 64, TD = 64;
__global__ void __launch_bounds__(256) fp8_transpose_v(const uint8_t *__restrict__ v, int64_t sb, int64_t sn,
                                                       int64_t ss, int N_kv, int T, int H, int HDP, int64_t tp,
                                                       uint8_t *__restrict__ vt) {
    __shared__ uint8_t tile[TK][TD + 4];
    const int k0 = blockIdx.x * TK, d0 = blockIdx.y * TD;
    const int bn = blockIdx.z, b = bn / N_kv, n = bn % N_kv;
    const int tid = threadIdx.x;
    {
        const int r = tid >> 2, c = (tid & 3) * 16, key = k0 + r, d = d0 + c;
        uint4 x = make_uint4(0, 0, 0, 0);
        if (key < T && d < H) x = *reinterpret_cast<const uint4 *>(v + b * sb + n * sn + key * ss + d);
        const uint32_t w[4] = {x.x, x.y, x.z, x.w};
#pragma unroll
        for (int i = 0; i < 4; ++i) *reinterpret_cast<uint32_t *>(&tile[r][c + 4 * i]) = w[i];
    }
    __syncthreads();
    const int dr = tid >> 2, c = (tid & 3) * 16; // Vᵀ row d0 + dr, positions c..c+15 of the tile
    uint32_t w[4];
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        uint32_t word = 0;
#pragma unroll
        for (int j = 0; j < 4; ++j) {
            const int pos = c + 4 * i + j;
            const int key = (pos & ~31) + kiln_fp8::key_at(pos & 31);
            word |= (uint32_t)tile[key][dr] << (8 * j);
        }
        w[i] = word;
    }
    *reinterpret_cast<uint4 *>(vt + ((int64_t)bn * HDP + d0 + dr) * tp + k0 + c) = make_uint4(w[0], w[1], w[2], w[3]);
}

} // namespace

namespace kiln_fp8 {

bool tma_map_u8(CUtensorMap *m, const void *ptr, int64_t d0, int64_t rows, int64_t heads, int64_t batches,
                int64_t s1, int64_t s2, int64_t s3, int box_rows) {
    PFN_cuTensorMapEncodeTiled_v12000 enc = kiln_sm90::tma_encoder();
    if (!enc || d0 <= 0 || rows <= 0 || heads <= 0 || batches <= 0) return false;
    const cuuint64_t dims[4] = {(cuuint64_t)d0, (cuuint64_t)rows, (cuuint64_t)heads, (cuuint64_t)batches};
    // A single-entry dimension's stride is never used: a zero or unaligned one becomes legal.
    int64_t st[3] = {s1, s2, s3};
    const int64_t n_of[3] = {rows, heads, batches};
    for (int i = 0; i < 3; ++i)
        if (n_of[i] == 1 && (st[i] <= 0 || st[i] % 16)) st[i] = 16;
    const cuuint64_t strides[3] = {(cuuint64_t)st[0], (cuuint64_t)st[1], (cuuint64_t)st[2]};
    const cuuint32_t box[4] = {128, (cuuint32_t)box_rows, 1, 1};
    const cuuint32_t estr[4] = {1, 1, 1, 1};
    CUresult r = enc(m, CU_TENSOR_MAP_DATA_TYPE_UINT8, 4, const_cast<void *>(ptr), dims, strides, box, estr,
                     CU_TENSOR_MAP_INTERLEAVE_NONE, CU_TENSOR_MAP_SWIZZLE_128B, CU_TENSOR_MAP_L2_PROMOTION_L2_256B,
                     CU_TENSOR_MAP_FLOAT_OOB_FILL_NONE);
    return r == CUDA_SUCCESS;
}

} // namespace kiln_fp8

extern "C" int kiln_cuda_fp8_variants(int H) {
    const kiln_fp8::Variant *vs;
    return variants_for(H, &vs);
}

extern "C" const char *kiln_cuda_fp8_variant_name(int H, int i) {
    const kiln_fp8::Variant *vs;
    const int nv = variants_for(H, &vs);
    return i >= 0 && i < nv ? vs[i].name : nullptr;
}

extern "C" int kiln_cuda_fp8_variant_find(int H, const char *part, int from) {
    const kiln_fp8::Variant *vs;
    const int nv = variants_for(H, &vs);
    for (int i = from < 0 ? 0 : from; part && i < nv; ++i)
        if (strstr(vs[i].name, part)) return i;
    return -1;
}

extern "C" const char *kiln_cuda_fp8_blocker(const kiln_cuda_sdpa_fp8 *d, int cc_major, int cc_minor) {
    if (cc_major * 10 + cc_minor < 89) return "FP8 attention needs compute capability 8.9 or newer (e4m3 mma)";
    if (d->out_dtype != KILN_DTYPE_FLOAT16 && d->out_dtype != KILN_DTYPE_BFLOAT16)
        return "FP8 attention writes float16 or bfloat16";
    if (d->B <= 0 || d->N <= 0 || d->S <= 0 || d->T <= 0 || d->H <= 0) return "empty or negative sizes";
    const int nkv = d->N_kv ? d->N_kv : d->N;
    if (nkv <= 0 || d->N % nkv) return "query heads not a multiple of key/value heads";
    if (d->H % 16 || d->H > 256) return "FP8 attention needs a head size that is a multiple of 16 up to 256";
    if (!d->q_scale || !d->k_scale || !d->v_scale) return "missing q/k/v scale";
    const float s = d->scale != 0.f ? d->scale : 1.f / sqrtf((float)d->H);
    if (!(s > 0.f) || isinf(s)) return "softmax scale <= 0";
    if (!view_ok(d->q) || !view_ok(d->k) || !view_ok(d->v) || !aligned16(d->out) || (d->o_sb & 7) ||
        (d->o_sn & 7) || (d->o_ss & 7))
        return "pointers or strides not 16-byte aligned";
    if (d->N > 65535 || d->B > 65535 || (int64_t)d->B * nkv > 65535) return "grid too large";
    return nullptr;
}

extern "C" size_t kiln_cuda_fp8_workspace(const kiln_cuda_sdpa_fp8 *d) {
    const int nkv = d->N_kv ? d->N_kv : d->N;
    return (size_t)d->B * nkv * pad_head(d->H) * padded_keys(d->T);
}

extern "C" int kiln_cuda_fp8_launch(const kiln_cuda_sdpa_fp8 *d, void *workspace, void *stream, char *name,
                                    size_t name_cap) {
    cudaStream_t st = static_cast<cudaStream_t>(stream);
    const kiln_fp8::Variant *vs;
    const int nv = variants_for(d->H, &vs);
    const int vi = d->variant >= 0 && d->variant < nv ? d->variant : 0;
    const int nkv = d->N_kv ? d->N_kv : d->N;
    const int HDP = pad_head(d->H);
    const int64_t tp = padded_keys(d->T);
    uint8_t *vt = static_cast<uint8_t *>(workspace);

    dim3 tg((unsigned)(tp / TK), HDP / TD, d->B * nkv);
    fp8_transpose_v<<<tg, 256, 0, st>>>(static_cast<const uint8_t *>(d->v.p), d->v.sb, d->v.sn, d->v.ss, nkv, d->T,
                                        d->H, HDP, tp, vt);
    cudaError_t e = cudaGetLastError();
    if (e != cudaSuccess) return (int)e;

    kiln_fp8::Params p;
    memset(&p, 0, sizeof p);
    p.q = static_cast<const uint8_t *>(d->q.p);
    p.k = static_cast<const uint8_t *>(d->k.p);
    p.vt = vt;
    p.o = d->out;
    p.q_sb = d->q.sb, p.q_sn = d->q.sn, p.q_ss = d->q.ss;
    p.k_sb = d->k.sb, p.k_sn = d->k.sn, p.k_ss = d->k.ss;
    p.vt_sn = (int64_t)HDP * tp;
    p.vt_sb = p.vt_sn * nkv;
    p.tp = (int)tp;
    p.o_sb = d->o_sb, p.o_sn = d->o_sn, p.o_ss = d->o_ss;
    p.B = d->B, p.N = d->N, p.kv_group = d->N / nkv;
    p.S = d->S, p.T = d->T, p.H = d->H;
    p.scale = d->scale != 0.f ? d->scale : 1.f / sqrtf((float)d->H);
    p.q_scale = d->q_scale, p.k_scale = d->k_scale, p.v_scale = d->v_scale;
    p.causal = d->causal;
    p.p_log2_scale = d->p_unscaled ? 0.f : kiln_fp8::P_LOG2_SCALE;
    if (name)
        snprintf(name, name_cap, "flash_fp8<%s,hd%d,%s>", d->out_dtype == KILN_DTYPE_FLOAT16 ? "fp16" : "bf16", HDP,
                 vs[vi].name);
    e = d->out_dtype == KILN_DTYPE_FLOAT16 ? vs[vi].fp16(p, st) : vs[vi].bf16(p, st);
    return (int)e;
}

extern "C" kiln_status kiln_cuda_attention_fp8(kiln_cuda_provider *prov, const kiln_cuda_sdpa_fp8 *d) {
    const kiln_cuda_device_info *info = kiln_cuda_info(prov);
    const char *why = kiln_cuda_fp8_blocker(d, info->cc_major, info->cc_minor);
    if (why) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "FP8 attention: %s", why);
    // Explicit variants (tests, benchmarks) are left alone. Otherwise KILN_FP8_VARIANT=name picks a
    // tile by its exact name (e.g. mma_... to compare) for the head sizes that have it; else, on
    // Hopper, the warp-specialised TMA tile with ping-pong (flash_fp8_sm90_tma.cuh): e4m3 mma.sync
    // is not native there, the wgmma tiles ran 1.2-3.2x the best mma.sync tile on every row, and
    // the TMA tile 1.18x the best cp.async wgmma tile at head sizes 64, 128 and 256 alike
    // (geomean of S = 1k..16k, causal and not; H100, bench/attention/fp8.sh, 2026-12-07). Its
    // siblings were within 2.3% (pp0 and 3 stages at 128), so one tile serves every head size.
    // Ada (8.9) keeps the native mma.sync tile.
    kiln_cuda_sdpa_fp8 dv = *d;
    const char *want = getenv("KILN_FP8_VARIANT");
    if (dv.variant == 0 && want && *want) {
        const kiln_fp8::Variant *vs;
        const int nv = variants_for(dv.H, &vs);
        for (int i = 0; i < nv; ++i)
            if (!strcmp(vs[i].name, want)) dv.variant = i;
    } else if (dv.variant == 0 && info->cc_major == 9) {
        const kiln_fp8::Variant *vs;
        const int nv = variants_for(dv.H, &vs);
        for (int i = 0; i < nv; ++i)
            if (!strcmp(vs[i].name, "wgmma_tma_bn128_st2_pp1")) dv.variant = i;
    }
    void *ws;
    kiln_status s = kiln_cuda_workspace(prov, kiln_cuda_fp8_workspace(&dv), &ws);
    if (s != KILN_OK) return s;
    return kiln_cuda_check(kiln_cuda_fp8_launch(&dv, ws, kiln_cuda_stream(prov), nullptr, 0), "FP8 attention");
}
