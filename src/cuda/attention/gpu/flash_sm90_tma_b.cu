// Instantiations of the TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh) for head sizes 128, 160.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

KILN_TMA_INSTANTIATE(128, 128, 1, 2, true, false)
KILN_TMA_INSTANTIATE(128, 128, 1, 2, false, false)
KILN_TMA_INSTANTIATE(160, 64, 1, 2, true, false)

} // namespace kiln_sm90
