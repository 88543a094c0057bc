// FP8 attention tile variants for head size 128 (a file per head size so that a parallel build
// compiles them side by side). The first entry is the dispatcher's default; the _f16mma one multiplies
// in fp16 (e4m3 kept in memory), for Hopper, where e4m3 mma.sync is not native; the wgmma_ ones
// (flash_fp8_sm90.cuh, sm_90 only: elsewhere their launch fails) come last.
#include "../flash_fp8.cuh"
#include "../flash_fp8_sm90.cuh"
#include "../flash_fp8_sm90_ring.cuh"
#include "../flash_fp8_sm90_tma.cuh"

namespace kiln_fp8 {

static const Variant v128[] = {
    KILN_FP8_VARIANT(128, 128, 64, 8),
    KILN_FP8_VARIANT(128, 128, 64, 4),
    KILN_FP8_VARIANT_F16(128, 128, 64, 4),
    KILN_FP8_VARIANT_WGMMA(128, 128, 2, 1),
    KILN_FP8_VARIANT_WGMMA_RING(128, 128, 2, 3, 1),
    KILN_FP8_VARIANT_WGMMA_RING(128, 64, 3, 3, 1),
    KILN_FP8_VARIANT_WGMMA_RING_EMU(128, 128, 2, 3, 1, 1),
    KILN_FP8_VARIANT_WGMMA_RING_EMU(128, 128, 2, 3, 2, 1),
    KILN_FP8_VARIANT_TMA(128, 128, 2, 1),
    KILN_FP8_VARIANT_TMA(128, 128, 3, 1),
    KILN_FP8_VARIANT_TMA(128, 128, 2, 0),
    KILN_FP8_VARIANT_TMA_EMU(128, 128, 2, 1, 1),
};
int variants_hd128(const Variant **out) {
    *out = v128;
    return (int)(sizeof v128 / sizeof v128[0]);
}

} // namespace kiln_fp8
