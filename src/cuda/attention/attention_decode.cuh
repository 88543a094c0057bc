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
};

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
