// What the two split-KV decode kernels share: their arguments and the partial-result format that
// decode_combine (gpu/attention_decode.cu) reads. Both write, per query row and split, the
// unnormalised fp32 output, the running max (log2 units) and the sum of exp2(score − max).
#pragma once

#include "flash_fwd.cuh"

namespace kiln_decode {

struct DecodeArgs {
    kiln_flash::Params p;
    float *part_o;  // (row, split, H) fp32, row = (b·N + n)·S + s; NULL with one split
    float *part_ml; // (row, split, 2): running max (log2 units) and sum
    int splits, chunk, rowgroups;
    // The tensor-core kernel's work: units (16 query rows of one KV head of one batch) of
    // rounds_per_unit rounds each (a round: one key tile per warp). With streamk, CTA c of ctas
    // takes rounds [c·total/ctas, (c+1)·total/ctas) of all units laid end to end, and each of its
    // parts_per_cta warps writes one partial result per unit it touches; splits is then the
    // partial results' stride per row, and decode_combine counts a row's own (stream_parts).
    int streamk, rounds_per_unit, ctas, parts_per_cta;
    int64_t total_rounds;
};

// The CTA whose rounds include round x (stream-K).
__host__ __device__ inline int stream_cta(const DecodeArgs &a, int64_t x) {
    return (int)(((x + 1) * a.ctas - 1) / a.total_rounds);
}
// How many partial results unit u has: parts_per_cta for every CTA that touches it.
__host__ __device__ inline int stream_parts(const DecodeArgs &a, int64_t u) {
    const int64_t r0 = u * a.rounds_per_unit;
    return (stream_cta(a, r0 + a.rounds_per_unit - 1) - stream_cta(a, r0) + 1) * a.parts_per_cta;
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
