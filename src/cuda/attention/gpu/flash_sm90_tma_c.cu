// Instantiations of the TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh) with three consumer
// warpgroups (BM 192) at head sizes 48, 64 and 128; opt-in variants named in flash_sm90_hd16_64.cu and
// flash_sm90_hd80_128.cu.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

#define KILN_TMA_INST3(HD, BN, MINB, PP)                                                                     \
    template cudaError_t launch_sm90_tma<__half, HD, BN, MINB, 3, PP>(const Params &, cudaStream_t);         \
    template cudaError_t launch_sm90_tma<__nv_bfloat16, HD, BN, MINB, 3, PP>(const Params &, cudaStream_t);  \
    template const void *tma_probe<__half, HD, BN, MINB, 3, PP>();

KILN_TMA_INST3(64, 64, 1, true)
KILN_TMA_INST3(64, 128, 1, true)
KILN_TMA_INST3(64, 128, 1, false)
KILN_TMA_INST3(48, 64, 1, true)
KILN_TMA_INST3(48, 128, 1, true)
KILN_TMA_INST3(128, 64, 1, true)

} // namespace kiln_sm90
