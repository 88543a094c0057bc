// Flash forward tile variants for head sizes 64, 80, 96. The first entry of each
// list is the default the dispatcher takes (the fastest in bench/attention/RESULTS.md); the others
// exist for the benchmark to compare.
#include "../flash_fwd.cuh"

namespace kiln_flash {

static const Variant v64[] = {
    KILN_FLASH_VARIANT(64, 128, 128, 4),
    KILN_FLASH_VARIANT(64, 128, 64, 4),
    KILN_FLASH_VARIANT(64, 128, 128, 8),
    KILN_FLASH_VARIANT(64, 64, 128, 4),
};
int variants_hd64(const Variant **out) {
    *out = v64;
    return (int)(sizeof v64 / sizeof v64[0]);
}

static const Variant v80[] = {
    KILN_FLASH_VARIANT(80, 128, 64, 4),
    KILN_FLASH_VARIANT(80, 128, 64, 8),
    KILN_FLASH_VARIANT(80, 64, 64, 4),
};
int variants_hd80(const Variant **out) {
    *out = v80;
    return (int)(sizeof v80 / sizeof v80[0]);
}

static const Variant v96[] = {
    KILN_FLASH_VARIANT(96, 128, 64, 4),
    KILN_FLASH_VARIANT(96, 128, 64, 8),
};
int variants_hd96(const Variant **out) {
    *out = v96;
    return (int)(sizeof v96 / sizeof v96[0]);
}

} // namespace kiln_flash
