// Instantiations of the TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh) for head sizes 48, 64, 80;
// the variant lists (flash_sm90_hd*.cu) name them. Split from the 128/160 file so the two
// compile in parallel.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

KILN_TMA_INSTANTIATE(48, 64, 2, 2, true, false)
KILN_TMA_INSTANTIATE(64, 64, 1, 2, true, false)
KILN_TMA_INSTANTIATE(64, 128, 1, 2, true, false)
KILN_TMA_INSTANTIATE(80, 128, 1, 2, true, false)
KILN_TMA_INSTANTIATE(80, 64, 1, 2, true, false)

} // namespace kiln_sm90
