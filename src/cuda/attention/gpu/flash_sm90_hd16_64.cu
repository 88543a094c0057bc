// Hopper wgmma flash tile variants for head sizes 16, 32, 48, 64. The first entry of
// each list is the default the dispatcher takes (the fastest in bench/attention/RESULTS.md); the
// others exist for the benchmark to compare.
#include "../flash_fwd_sm90.cuh"

namespace kiln_sm90 {

static const Variant v16[] = {
    KILN_SM90_VARIANT(16, 64, 2, 2),
    KILN_SM90_VARIANT(16, 128, 1, 2),
    KILN_SM90_VARIANT(16, 128, 1, 3),
    KILN_SM90_TMA_VARIANT_PERSIST(16, 128, 2, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(16, 128, 3, true, "_pp"),
};
int variants_hd16(const Variant **out) {
    *out = v16;
    return (int)(sizeof v16 / sizeof v16[0]);
}

static const Variant v32[] = {
    // Default since the 2026-11-25 hd32 sweep (RESULTS.md): BM 192 x BN 128, persistent CTAs;
    // +24% over the cp.async tile below (the previous default) non-causal, +9% causal.
    KILN_SM90_TMA_VARIANT_PERSIST(32, 128, 3, true, "_pp"),
    KILN_SM90_VARIANT(32, 64, 2, 2),
    KILN_SM90_VARIANT(32, 128, 1, 2),
    KILN_SM90_VARIANT(32, 128, 1, 3),
    KILN_SM90_TMA_VARIANT_PERSIST(32, 64, 2, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(32, 128, 2, true, "_pp"),
};
int variants_hd32(const Variant **out) {
    *out = v32;
    return (int)(sizeof v32 / sizeof v32[0]);
}

static const Variant v48[] = {
    // Default since the 2026-11-25 persistent sweep (RESULTS.md): the BM 192 tile below, run by
    // persistent CTAs; faster than it in all five passes (+2..+4% geomean).
    KILN_SM90_TMA_VARIANT_PERSIST(48, 128, 3, true, "_pp"),
    // Default from the BM 192 sweep until the persistent one. Before that: the 2026-11-25 BM 192 sweep (RESULTS.md, "H=64/H=40/H=128 BM 192 TMA tiles"):
    // BM 192 (three consumer warpgroups; flash_sm90_tma_c.cu), faster than the previous default
    // (the next entry) in all five passes at H=40 (geomean +3..+13%); its forced-variant tests
    // passed in that call.
    KILN_SM90_TMA_VARIANT_WG(48, 128, 1, 3, true, "_pp"),
    // Default from the 2026-11-25 TMA sweep until the BM 192 one.
    KILN_SM90_TMA_VARIANT(48, 64, 2, true, "_pp"),
    KILN_SM90_VARIANT(48, 64, 2, 2),
    KILN_SM90_VARIANT(48, 128, 1, 2),
    KILN_SM90_VARIANT(48, 128, 1, 3),
    KILN_SM90_TMA_VARIANT_WG(48, 64, 1, 3, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(48, 128, 2, true, "_pp"),
};
int variants_hd48(const Variant **out) {
    *out = v48;
    return (int)(sizeof v48 / sizeof v48[0]);
}

static const Variant v64[] = {
    // First entry: the default for packed batches only. Otherwise the default is a persistent
    // TMA tile chosen by the mask and the query length (default_variant in flash_fwd_sm90.cu;
    // 2026-11-25 persistent sweeps in RESULTS.md).
    KILN_SM90_VARIANT(64, 64, 2, 2),
    KILN_SM90_VARIANT(64, 128, 1, 2),
    KILN_SM90_VARIANT(64, 128, 1, 3),
    KILN_SM90_TMA_VARIANT(64, 64, 1, true, "_pp"),
    KILN_SM90_TMA_VARIANT(64, 128, 1, true, "_pp"),
    // BM 192 (three consumer warpgroups; flash_sm90_tma_c.cu), opt-in: measured 2026-11-25,
    // faster than the default at S >= 384 but ~25% slower at S = 128 and in the causal pass.
    KILN_SM90_TMA_VARIANT_WG(64, 64, 1, 3, true, "_pp"),
    KILN_SM90_TMA_VARIANT_WG(64, 128, 1, 3, true, "_pp"),
    KILN_SM90_TMA_VARIANT_WG(64, 128, 1, 3, false, ""),
    KILN_SM90_TMA_VARIANT_PERSIST(64, 64, 2, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(64, 128, 2, true, "_pp"),
    KILN_SM90_TMA_VARIANT_PERSIST(64, 128, 3, true, "_pp"),
};
int variants_hd64(const Variant **out) {
    *out = v64;
    return (int)(sizeof v64 / sizeof v64[0]);
}

} // namespace kiln_sm90
