// Hopper wgmma flash tile variants for head sizes 16, 32, 48, 64. The first entry of
// each list is the default the dispatcher takes (the fastest in bench/attention/RESULTS.md); the
// others exist for the benchmark to compare.
#include "../flash_fwd_sm90.cuh"

namespace kiln_sm90 {

static const Variant v16[] = {
    KILN_SM90_VARIANT(16, 64, 2, 2),
    KILN_SM90_VARIANT(16, 128, 1, 2),
    KILN_SM90_VARIANT(16, 128, 1, 3),
};
int variants_hd16(const Variant **out) {
    *out = v16;
    return (int)(sizeof v16 / sizeof v16[0]);
}

static const Variant v32[] = {
    KILN_SM90_VARIANT(32, 64, 2, 2),
    KILN_SM90_VARIANT(32, 128, 1, 2),
    KILN_SM90_VARIANT(32, 128, 1, 3),
};
int variants_hd32(const Variant **out) {
    *out = v32;
    return (int)(sizeof v32 / sizeof v32[0]);
}

static const Variant v48[] = {
    // Default since the 2026-11-25 TMA sweep (RESULTS.md): faster than every cp.async tile in all five passes; its
    // forced-variant tests passed in that call.
    KILN_SM90_TMA_VARIANT(48, 64, 2, true, "_pp"),
    KILN_SM90_VARIANT(48, 64, 2, 2),
    KILN_SM90_VARIANT(48, 128, 1, 2),
    KILN_SM90_VARIANT(48, 128, 1, 3),
};
int variants_hd48(const Variant **out) {
    *out = v48;
    return (int)(sizeof v48 / sizeof v48[0]);
}

static const Variant v64[] = {
    KILN_SM90_VARIANT(64, 64, 2, 2),
    KILN_SM90_VARIANT(64, 128, 1, 2),
    KILN_SM90_VARIANT(64, 128, 1, 3),
    KILN_SM90_TMA_VARIANT(64, 64, 1, true, "_pp"),
    KILN_SM90_TMA_VARIANT(64, 128, 1, true, "_pp"),
};
int variants_hd64(const Variant **out) {
    *out = v64;
    return (int)(sizeof v64 / sizeof v64[0]);
}

} // namespace kiln_sm90
