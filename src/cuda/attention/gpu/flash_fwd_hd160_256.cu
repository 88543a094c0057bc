// Flash forward tile variants for head sizes 160, 192, 256. The first entry of each
// list is the default the dispatcher takes (the fastest in bench/attention/RESULTS.md); the others
// exist for the benchmark to compare.
#include "../flash_fwd.cuh"

namespace kiln_flash {

static const Variant v160[] = {
    KILN_FLASH_VARIANT(160, 128, 32, 4),
    KILN_FLASH_VARIANT(160, 64, 64, 4),
    KILN_FLASH_VARIANT(160, 128, 64, 8),
};
int variants_hd160(const Variant **out) {
    *out = v160;
    return (int)(sizeof v160 / sizeof v160[0]);
}

static const Variant v192[] = {
    KILN_FLASH_VARIANT(192, 128, 64, 8),
    KILN_FLASH_VARIANT(192, 64, 64, 4),
};
int variants_hd192(const Variant **out) {
    *out = v192;
    return (int)(sizeof v192 / sizeof v192[0]);
}

static const Variant v256[] = {
    KILN_FLASH_VARIANT(256, 128, 64, 8),
    KILN_FLASH_VARIANT(256, 64, 64, 4),
    KILN_FLASH_VARIANT(256, 128, 32, 8),
};
int variants_hd256(const Variant **out) {
    *out = v256;
    return (int)(sizeof v256 / sizeof v256[0]);
}

} // namespace kiln_flash
