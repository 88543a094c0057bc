// Instantiations of the TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh) at head size 192 (issue 13).
// Shared memory (Q 48 KB, two K and two V stages of BN x 384 bytes) decides the key tiles: BN 112
// (216 KB) and 96 (192 KB) one CTA per tile; BN 64 persistent (its own 48 KB O buffer: 193 KB).
// Opt-in variants named in flash_sm90_hd160_256.cu until measured.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

KILN_TMA_INSTANTIATE(192, 112, 1, 2, true, false)
KILN_TMA_INSTANTIATE(192, 96, 1, 2, true, false)
KILN_TMA_INSTANTIATE(192, 64, 1, 2, true, true)

} // namespace kiln_sm90
