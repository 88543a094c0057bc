// Instantiations of the persistent TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh, PERSIST) at head
// sizes 128 and 160.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

KILN_TMA_INSTANTIATE(128, 128, 1, 2, true, true)
KILN_TMA_INSTANTIATE(128, 128, 1, 2, false, true)
KILN_TMA_INSTANTIATE(160, 64, 1, 2, true, true)

} // namespace kiln_sm90
