// Instantiations of the TMA-fed sm90 kernel (flash_fwd_sm90_tma.cuh) at head size 256 (issue 13).
// Q is 64 KB and a K or V stage BN x 512 bytes: BN 80 fills 225 of the 227 KB, BN 64 takes 193;
// neither leaves room for a persistent CTA's own O buffer, so the persistent tiles stage O in the
// Q buffer (TCfg::O_IN_Q). Opt-in variants named in flash_sm90_hd160_256.cu until measured.
#include "../flash_fwd_sm90_tma.cuh"

namespace kiln_sm90 {

KILN_TMA_INSTANTIATE(256, 80, 1, 2, true, false)
KILN_TMA_INSTANTIATE(256, 64, 1, 2, true, false)
KILN_TMA_INSTANTIATE(256, 80, 1, 2, true, true)
KILN_TMA_INSTANTIATE(256, 64, 1, 2, true, true)

} // namespace kiln_sm90
