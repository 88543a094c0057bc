// Instantiations of the TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh) for head sizes 128, 160.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

#define KILN_TMA_INST(HD, BN, MINB, PP)                                                                      \
    template cudaError_t launch_sm90_tma<__half, HD, BN, MINB, 2, PP>(const Params &, cudaStream_t);         \
    template cudaError_t launch_sm90_tma<__nv_bfloat16, HD, BN, MINB, 2, PP>(const Params &, cudaStream_t);  \
    template const void *tma_probe<__half, HD, BN, MINB, 2, PP>();

KILN_TMA_INST(128, 128, 1, true)
KILN_TMA_INST(128, 128, 1, false)
KILN_TMA_INST(160, 64, 1, true)

} // namespace kiln_sm90
