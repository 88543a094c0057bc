// Hopper wgmma flash tile variants for head sizes 80, 96, 128. The first entry of
// each list is the default the dispatcher takes (the fastest in bench/attention/RESULTS.md); the
// others exist for the benchmark to compare.
#include "../flash_fwd_sm90.cuh"

namespace kiln_sm90 {

static const Variant v80[] = {
    // Default since the 2026-11-25 persistent sweep (RESULTS.md): the next tile run by persistent
    // CTAs, faster than it in all five passes (+3..+6% geomean).
    KILN_SM90_TMA_VARIANT_PERSIST(80, 128, 2, true, "_pp"),
    // Default from the 2026-11-25 TMA sweep (RESULTS.md): faster than every cp.async tile in all five passes; its
    // forced-variant tests passed in that call.
    KILN_SM90_TMA_VARIANT(80, 128, 1, true, "_pp"),
    KILN_SM90_VARIANT(80, 64, 1, 2),
    KILN_SM90_VARIANT(80, 128, 1, 2),
    KILN_SM90_VARIANT(80, 64, 1, 3),
    KILN_SM90_TMA_VARIANT(80, 64, 1, true, "_pp"),
};
int variants_hd80(const Variant **out) {
    *out = v80;
    return (int)(sizeof v80 / sizeof v80[0]);
}

static const Variant v96[] = {
    KILN_SM90_VARIANT(96, 64, 1, 2),
    KILN_SM90_VARIANT(96, 128, 1, 2),
    KILN_SM90_VARIANT(96, 64, 1, 3),
    // TMA-fed, warp-specialised tiles (issue 13; flash_sm90_tma_f.cu): BM 128 x BN 128 persistent
    // as at 80 and 128, and BM 192 x BN 64 persistent. The first is what selection takes
    // (default_variant): on the H100 it beat the cp.async tile on all 32 rows of hd_tiles.sh.
    KILN_SM90_TMA_VARIANT_PERSIST(96, 128, 2, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(96, 64, 3, true, "_pp"),
};
int variants_hd96(const Variant **out) {
    *out = v96;
    return (int)(sizeof v96 / sizeof v96[0]);
}

static const Variant v128[] = {
    // Default since the 2026-11-25 persistent sweep (RESULTS.md): the next tile run by persistent
    // CTAs, level or faster in the four non-causal passes (causal calls launch one CTA per tile).
    KILN_SM90_TMA_VARIANT_PERSIST(128, 128, 2, true, "_pp"),
    // Default from the 2026-11-25 TMA sweep (RESULTS.md): faster than every cp.async tile in all five passes; its
    // forced-variant tests passed in that call.
    KILN_SM90_TMA_VARIANT(128, 128, 1, true, "_pp"),
    KILN_SM90_VARIANT(128, 128, 1, 2),
    KILN_SM90_VARIANT(128, 64, 1, 2),
    KILN_SM90_VARIANT(128, 64, 1, 3),
    KILN_SM90_TMA_VARIANT(128, 128, 1, false, ""),
    // BM 192 (three consumer warpgroups; flash_sm90_tma_c.cu), opt-in: measured 2026-11-25,
    // ~9% slower than the default.
    KILN_SM90_TMA_VARIANT_WG(128, 64, 1, 3, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(128, 128, 2, false, ""),
};
int variants_hd128(const Variant **out) {
    *out = v128;
    return (int)(sizeof v128 / sizeof v128[0]);
}

} // namespace kiln_sm90
