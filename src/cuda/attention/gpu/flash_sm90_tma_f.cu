// Instantiations of the TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh) at head size 96 (issue 13):
// persistent, ping-pong, BM 128 x BN 128 as at 80 and 128 (same shared memory as 128: CB 2), and
// BM 192 x BN 64 (three consumer warpgroups; BN 128 spills at their 160 registers). Opt-in
// variants named in flash_sm90_hd80_128.cu until measured.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

KILN_TMA_INSTANTIATE(96, 128, 1, 2, true, true)
KILN_TMA_INSTANTIATE(96, 64, 1, 3, true, true)

} // namespace kiln_sm90
