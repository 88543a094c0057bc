// Instantiations of the TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh) with three consumer
// warpgroups (BM 192) at head sizes 48, 64 and 128; opt-in variants named in flash_sm90_hd16_64.cu and
// flash_sm90_hd80_128.cu.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

KILN_TMA_INSTANTIATE(64, 64, 1, 3, true, false)
KILN_TMA_INSTANTIATE(64, 128, 1, 3, true, false)
KILN_TMA_INSTANTIATE(64, 128, 1, 3, false, false)
KILN_TMA_INSTANTIATE(48, 64, 1, 3, true, false)
KILN_TMA_INSTANTIATE(48, 128, 1, 3, true, false)
KILN_TMA_INSTANTIATE(128, 64, 1, 3, true, false)

} // namespace kiln_sm90
