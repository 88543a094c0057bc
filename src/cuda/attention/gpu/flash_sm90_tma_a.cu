// Instantiations of the TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh) for head sizes 48, 64, 80;
// the variant lists (flash_sm90_hd*.cu) name them. Split from the 128/160 file so the two
// compile in parallel.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

#define KILN_TMA_INST(HD, BN, MINB, PP)                                                                      \
    template cudaError_t launch_sm90_tma<__half, HD, BN, MINB, 2, PP>(const Params &, cudaStream_t);         \
    template cudaError_t launch_sm90_tma<__nv_bfloat16, HD, BN, MINB, 2, PP>(const Params &, cudaStream_t);  \
    template const void *tma_probe<__half, HD, BN, MINB, 2, PP>();

KILN_TMA_INST(48, 64, 2, true)
KILN_TMA_INST(64, 64, 1, true)
KILN_TMA_INST(64, 128, 1, true)
KILN_TMA_INST(80, 128, 1, true)
KILN_TMA_INST(80, 64, 1, true)

} // namespace kiln_sm90
