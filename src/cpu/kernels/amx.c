/* CPU and OS checks for AMX (amx.h). */
#include "amx.h"
#include <stdlib.h>

#if defined(__GNUC__) && defined(__x86_64__) && !defined(KQG_AMX_EMULATE)
#include <immintrin.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_REQ_XCOMP_PERM 0x1023
#define XFEATURE_XTILEDATA 18

static unsigned cpuid7_edx(void) {
    unsigned a, b, c, d;
    __asm__("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7), "c"(0));
    return d;
}

static int tiles_granted(void) {
    static _Atomic int cached = -1;
    if (cached < 0) cached = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    return cached;
}

int kamx_usable(int feature) {
    const char *off = getenv("KILN_NO_AMX");
    if (off && *off && *off != '0') return 0;
    unsigned d = cpuid7_edx();
    if (!(d >> KAMX_TILE & 1) || !(d >> feature & 1)) return 0;
    return tiles_granted();
}

__attribute__((target("amx-tile"))) void kamx_load_16x64(void) { _tile_loadconfig(&kamx_cfg_16x64); }

__attribute__((target("amx-tile"))) void kamx_release(void) { _tile_release(); }
#else
int kamx_usable(int feature) {
    (void)feature;
    return 0;
}

void kamx_load_16x64(void) {}

void kamx_release(void) {}
#endif

const kamx_cfg kamx_cfg_16x64 = {
    .palette = 1,
    .colsb = {64, 64, 64, 64, 64, 64, 64, 64},
    .rows = {16, 16, 16, 16, 16, 16, 16, 16},
};
