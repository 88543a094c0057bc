// Hopper wgmma flash tile variants for head sizes 160, 192, 256. The first entry of
// each list is the default the dispatcher takes; the others exist for the benchmark to compare.
#include "../flash_fwd_sm90.cuh"

namespace kiln_sm90 {

static const Variant v160[] = {
    // Default since the 2026-11-25 persistent sweep (RESULTS.md): the next tile run by persistent
    // CTAs, level or faster (+0..+4% geomean non-causal).
    KILN_SM90_TMA_VARIANT_PERSIST(160, 64, 2, true, "_pp"),
    // Default from the 2026-11-25 TMA sweep (RESULTS.md): faster than every cp.async tile in all five passes; its
    // forced-variant tests passed in that call.
    KILN_SM90_TMA_VARIANT(160, 64, 1, true, "_pp"),
    KILN_SM90_VARIANT(160, 64, 1, 2),
};
int variants_hd160(const Variant **out) {
    *out = v160;
    return (int)(sizeof v160 / sizeof v160[0]);
}

static const Variant v192[] = {
    KILN_SM90_VARIANT(192, 64, 1, 2),
    // TMA-fed, warp-specialised tiles (issue 13; flash_sm90_tma_g.cu): BN 112 and 96 one CTA per
    // tile, BN 64 persistent. Selection (default_variant) takes BN 112, and BN 64 persistent while
    // S <= 512: each beat the cp.async tile on every row of hd_tiles.sh on the H100.
    KILN_SM90_TMA_VARIANT(192, 112, 1, true, "_pp"),
    KILN_SM90_TMA_VARIANT(192, 96, 1, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(192, 64, 2, true, "_pp"),
};
int variants_hd192(const Variant **out) {
    *out = v192;
    return (int)(sizeof v192 / sizeof v192[0]);
}

static const Variant v256[] = {
    KILN_SM90_VARIANT(256, 64, 1, 2),
    // TMA-fed, warp-specialised tiles (issue 13; flash_sm90_tma_h.cu): BN 80 and 64, one CTA per
    // tile, then the same persistent, staging O in the Q buffer. Selection (default_variant) takes
    // BN 80, and BN 64 while S <= 512: each beat the cp.async tile on every row of hd_tiles.sh.
    KILN_SM90_TMA_VARIANT(256, 80, 1, true, "_pp"),
    KILN_SM90_TMA_VARIANT(256, 64, 1, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(256, 80, 2, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(256, 64, 2, true, "_pp"),
};
int variants_hd256(const Variant **out) {
    *out = v256;
    return (int)(sizeof v256 / sizeof v256[0]);
}

} // namespace kiln_sm90
