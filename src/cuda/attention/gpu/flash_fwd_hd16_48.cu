// Flash forward tile variants for head sizes 16, 32, 48. The first entry of each
// list is the default the dispatcher takes (the fastest in bench/attention/RESULTS.md); the others
// exist for the benchmark to compare.
#include "../flash_fwd.cuh"

namespace kiln_flash {

static const Variant v16[] = {
    KILN_FLASH_VARIANT(16, 64, 128, 4),
    KILN_FLASH_VARIANT(16, 128, 64, 4),
    KILN_FLASH_VARIANT(16, 128, 128, 4),
};
int variants_hd16(const Variant **out) {
    *out = v16;
    return (int)(sizeof v16 / sizeof v16[0]);
}

static const Variant v32[] = {
    KILN_FLASH_VARIANT(32, 128, 128, 4),
    KILN_FLASH_VARIANT(32, 128, 64, 4),
    KILN_FLASH_VARIANT(32, 64, 128, 4),
};
int variants_hd32(const Variant **out) {
    *out = v32;
    return (int)(sizeof v32 / sizeof v32[0]);
}

static const Variant v48[] = {
    KILN_FLASH_VARIANT(48, 128, 128, 4),
    KILN_FLASH_VARIANT(48, 128, 64, 4),
};
int variants_hd48(const Variant **out) {
    *out = v48;
    return (int)(sizeof v48 / sizeof v48[0]);
}

} // namespace kiln_flash
