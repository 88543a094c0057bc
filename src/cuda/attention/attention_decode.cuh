// What the two split-KV decode kernels share: their arguments and the partial-result format that
// decode_combine (gpu/attention_decode.cu) reads. Both write, per query row and split, the
// unnormalised fp32 output, the running max (log2 units) and the sum of exp2(score − max).
#pragma once

#include "flash_fwd.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace kiln_decode {

struct DecodeArgs {
    kiln_flash::Params p;
    float *part_o;  // (row, split, H) fp32, row = (b·N + n)·S + s; NULL with one split
    float *part_ml; // (row, split, 2): running max (log2 units) and sum
    // One per (b, KV head, row group), zero between launches; NULL: decode_combine runs after.
    unsigned *counters;
    int splits, chunk, rowgroups;
};

constexpr int MAX_SPLITS = 256; // the combine keeps one weight per split in shared memory

__device__ __forceinline__ void store_out(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_out(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

// Called by every thread of a CTA once its partial rows (rows rg·rows .. rg·rows + rows − 1 of
// KV head kvh, batch b) are written. The CTA that finishes last among the row group's splits
// combines them into the output, so no second kernel is launched: at a few µs per launch that
// was a fifth of a 1k-key decode step. w: MAX_SPLITS floats of shared memory per warp. Each
// row's sums run in a fixed order, so results do not depend on which CTA is last.
template <typename E>
__device__ __forceinline__ void combine_if_last(const DecodeArgs &a, int b, int kvh, int rg, int rows, float *w,
                                                unsigned *s_flag) {
    const int tid = threadIdx.x;
    __threadfence(); // this CTA's partials are visible device-wide before it is counted
    __syncthreads();
    unsigned *cnt = a.counters + ((int64_t)b * gridDim.y + kvh) * a.rowgroups + rg;
    if (tid == 0) *s_flag = atomicAdd(cnt, 1u) == (unsigned)a.splits - 1;
    __syncthreads();
    if (!*s_flag) return;
    __threadfence(); // ... and the other CTAs' partials are read after their counts
    const kiln_flash::Params &p = a.p;
    const int S = p.S, R = p.kv_group * S, ns = a.splits;
    const int warp = tid >> 5, lane = tid & 31, nw = blockDim.x >> 5;
    float *wv = w + warp * MAX_SPLITS;
    for (int m = warp; m < rows; m += nw) {
        const int r = rg * rows + m;
        if (r >= R) break;
        const int n = kvh * p.kv_group + r / S, s = r % S;
        const int64_t row = ((int64_t)b * p.N + n) * S + s;
        const float *ml = a.part_ml + row * ns * 2;
        float mx = -INFINITY;
        for (int i = lane; i < ns; i += 32)
            if (__ldcg(ml + 2 * i + 1) > 0.f) mx = fmaxf(mx, __ldcg(ml + 2 * i));
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
        float sum = 0.f;
        for (int i = lane; i < ns; i += 32) {
            const float l = __ldcg(ml + 2 * i + 1);
            const float wi = l > 0.f ? exp2f(__ldcg(ml + 2 * i) - mx) : 0.f;
            wv[i] = wi;
            sum += wi * l;
        }
#pragma unroll
        for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
        __syncwarp();
        // A row that sees no key is written as zeros (sum == 0).
        const float inv = sum > 0.f ? 1.f / sum : 0.f;
        const float *po = a.part_o + row * ns * p.H;
        E *og = static_cast<E *>(p.o) + (int64_t)b * p.o_sb + (int64_t)n * p.o_sn + (int64_t)s * p.o_ss;
        for (int h = lane; h < p.H; h += 32) {
            float o = 0.f;
            for (int i = 0; i < ns; ++i) o += wv[i] * __ldcg(po + (int64_t)i * p.H + h);
            store_out(og + h, o * inv);
        }
        __syncwarp(); // wv is rewritten for the warp's next row
    }
    if (tid == 0) *cnt = 0; // zero again for the next launch
}

typedef void (*split_fn)(const DecodeArgs);

// The tensor-core kernel (gpu/attention_decode_mma.cu): 16 query rows per CTA, its warps each
// streaming their own key tiles through a cp.async ring. fn is null where H has no instantiation.
struct MmaKernel {
    split_fn fn;
    int threads, smem_bytes;
    int keys_per_round; // keys the CTA's warps take together, one tile each
    int blocks_per_sm;
};
MmaKernel mma_kernel(int H, bool bf16);
constexpr int MMA_ROWS = 16;

} // namespace kiln_decode
