// Instantiations of the persistent TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh, PERSIST: one CTA
// per SM walking the tiles, the next tile's loads overlapping this tile's last GEMMs and epilogue)
// at head sizes 16, 32, 48, 64, 80.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

KILN_TMA_INSTANTIATE(16, 128, 1, 2, true, true)
KILN_TMA_INSTANTIATE(16, 128, 1, 3, true, true)
KILN_TMA_INSTANTIATE(32, 64, 1, 2, true, true)
KILN_TMA_INSTANTIATE(32, 128, 1, 2, true, true)
KILN_TMA_INSTANTIATE(32, 128, 1, 3, true, true)
KILN_TMA_INSTANTIATE(48, 128, 1, 2, true, true)
KILN_TMA_INSTANTIATE(48, 128, 1, 3, true, true)
KILN_TMA_INSTANTIATE(64, 64, 1, 2, true, true)
KILN_TMA_INSTANTIATE(64, 128, 1, 2, true, true)
KILN_TMA_INSTANTIATE(64, 128, 1, 3, true, true)
KILN_TMA_INSTANTIATE(80, 128, 1, 2, true, true)

} // namespace kiln_sm90
