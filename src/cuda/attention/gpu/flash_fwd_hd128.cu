// Flash forward tile variants for head sizes 128. The first entry of each
// list is the default the dispatcher takes; the others exist for the benchmark to compare.
#include "../flash_fwd.cuh"

namespace kiln_flash {

static const Variant v128[] = {
    KILN_FLASH_VARIANT(128, 128, 64, 4),
    KILN_FLASH_VARIANT(128, 128, 32, 4),
    KILN_FLASH_VARIANT(128, 128, 64, 8),
    KILN_FLASH_VARIANT(128, 64, 64, 4),
};
int variants_hd128(const Variant **out) {
    *out = v128;
    return (int)(sizeof v128 / sizeof v128[0]);
}

} // namespace kiln_flash
