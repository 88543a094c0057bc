/* The 8-bit product's AMX-INT8 blocks (qgemm_amx.h): tdpbusd multiplies a 16-row tile of A's
 * unsigned bytes (64 per row, 16 groups of 4 k) by a tile of 16 groups x 16 columns of B's signed
 * bytes into 16 x 16 int32 sums, the vpdpbusd form of qgemm.h 256 times over. B's packed panels
 * (16 columns, 64 bytes per group of 4 rows) are already B tiles, 16 groups apart; A's packed
 * rows are A tiles with the row stride K4 * 4. */
#include "qgemm_amx.h"
#include "amx.h"
#include <stdlib.h>
#include <string.h>

#if defined(KQG_AMX_EMULATE)
/* Scalar stand-ins for the tile instructions, so that the blocks' addressing (strides, the K
 * tail's padded copy, A's slack) can be checked on a CPU without AMX: tests/test_qgemm_amx.py
 * compiles this file with KQG_AMX_EMULATE under AddressSanitizer, and a whole library built with
 * -DKQG_AMX_EMULATE runs the 8-bit tests through these blocks. Same sums as tdpbusd: u8 x s8, four
 * products a lane, int32 modulo 2^32. */
#include "amx.h"
static _Thread_local uint8_t emu_tile[8][16][64];

int kqg_have_amx(void) {
    const char *off = getenv("KILN_NO_AMX");
    return !(off && *off && *off != '0');
}

static void emu_load(int t, const void *p, int64_t stride) {
    for (int r = 0; r < 16; r++) memcpy(emu_tile[t][r], (const uint8_t *)p + r * stride, 64);
}

static void emu_dpbusd(int c, int a, int b) {
    for (int m = 0; m < 16; m++)
        for (int n = 0; n < 16; n++) {
            uint32_t s;
            memcpy(&s, emu_tile[c][m] + 4 * n, 4);
            for (int k = 0; k < 64; k++)
                s += (uint32_t)((int32_t)emu_tile[a][m][k] * (int8_t)emu_tile[b][k / 4][4 * n + k % 4]);
            memcpy(emu_tile[c][m] + 4 * n, &s, 4);
        }
}

static void emu_store(int t, void *p, int64_t stride) {
    for (int r = 0; r < 16; r++) memcpy((uint8_t *)p + r * stride, emu_tile[t][r], 64);
}

#define AMX_INT8
#define TILE_ZERO(t) memset(emu_tile[t], 0, sizeof emu_tile[t])
#define TILE_LOAD(t, p, s) emu_load(t, p, s)
#define TILE_DPBUSD(c, a, b) emu_dpbusd(c, a, b)
#define TILE_STORE(t, p, s) emu_store(t, p, s)
#define KQG_AMX_BLOCKS 1
#elif defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

/* Opt-in (KILN_AMX_INT8=1) until the blocks have been timed against VNNI on an AMX machine: so far
 * they have run only through the scalar tiles above (see docs/design.md). */
int kqg_have_amx(void) {
    static _Atomic int cached = -1;
    if (cached < 0) {
        const char *on = getenv("KILN_AMX_INT8");
        cached = on && *on && *on != '0' && kamx_usable(KAMX_INT8);
    }
    return cached;
}

#define AMX_INT8 __attribute__((target("amx-tile,amx-int8")))
#define TILE_ZERO(t) _tile_zero(t)
#define TILE_LOAD(t, p, s) _tile_loadd(t, p, s)
#define TILE_DPBUSD(c, a, b) _tile_dpbusd(c, a, b)
#define TILE_STORE(t, p, s) _tile_stored(t, p, s)
#define KQG_AMX_BLOCKS 1
#endif

#ifdef KQG_AMX_BLOCKS

/* One step of 16 groups: ROWS (16 or 32) rows of A at a, PANELS (1 or 2) B tiles at b0, b1 (row
 * stride sb bytes), into tiles 0-3. ROWS and PANELS are constants at every call. */
static inline __attribute__((always_inline)) AMX_INT8 void
step(const int ROWS, const int PANELS, const uint8_t *a, int64_t lda, const void *b0,
     const void *b1, int64_t sb) {
    TILE_LOAD(4, a, lda);
    TILE_LOAD(6, b0, sb);
    if (PANELS == 2) TILE_LOAD(7, b1, sb);
    if (ROWS == 32) TILE_LOAD(5, a + 16 * lda, lda);
    TILE_DPBUSD(0, 4, 6);
    if (PANELS == 2) TILE_DPBUSD(1, 4, 7);
    if (ROWS == 32) TILE_DPBUSD(2, 5, 6);
    if (ROWS == 32 && PANELS == 2) TILE_DPBUSD(3, 5, 7);
}

static inline __attribute__((always_inline)) AMX_INT8 void
block_body(const int ROWS, const int PANELS, int64_t K4, const uint8_t *a, int64_t lda,
           const int8_t *b, int64_t ps, int32_t *c, int64_t ldc) {
    TILE_ZERO(0);
    TILE_ZERO(1);
    TILE_ZERO(2);
    TILE_ZERO(3);
    int64_t full = K4 / 16 * 16;
    for (int64_t g = 0; g < full; g += 16)
        step(ROWS, PANELS, a + g * 4, lda, b + g * 64, b + ps + g * 64, 64);
    if (full < K4) {
        /* The last groups: B's rows past K4 would be the next panel's (or past the end), so they
         * come from a copy padded with zero rows; A's bytes past K4 * 4 are then multiplied by
         * zeros (they are the next row's, or the 64 bytes of slack after the last row). */
        _Alignas(64) int8_t tail[2][16 * 64];
        int64_t rem = K4 - full;
        for (int p = 0; p < PANELS; p++) {
            memcpy(tail[p], b + p * ps + full * 64, (size_t)(rem * 64));
            memset(tail[p] + rem * 64, 0, (size_t)((16 - rem) * 64));
        }
        step(ROWS, PANELS, a + full * 4, lda, tail[0], tail[1], 64);
    }
    long sc = (long)(ldc * 4);
    TILE_STORE(0, c, sc);
    if (PANELS == 2) TILE_STORE(1, c + 16, sc);
    if (ROWS == 32) TILE_STORE(2, c + 16 * ldc, sc);
    if (ROWS == 32 && PANELS == 2) TILE_STORE(3, c + 16 * ldc + 16, sc);
}

AMX_INT8 void kqg_amx_block(int rows, int panels, int64_t K4, const uint8_t *a, int64_t lda,
                            const int8_t *b, int64_t ps, int32_t *c, int64_t ldc) {
    if (rows == 32 && panels == 2) block_body(32, 2, K4, a, lda, b, ps, c, ldc);
    else if (rows == 32) block_body(32, 1, K4, a, lda, b, ps, c, ldc);
    else if (panels == 2) block_body(16, 2, K4, a, lda, b, ps, c, ldc);
    else block_body(16, 1, K4, a, lda, b, ps, c, ldc);
}
#else
int kqg_have_amx(void) { return 0; }

void kqg_amx_block(int rows, int panels, int64_t K4, const uint8_t *a, int64_t lda, const int8_t *b,
                   int64_t ps, int32_t *c, int64_t ldc) {
    (void)rows, (void)panels, (void)K4, (void)a, (void)lda, (void)b, (void)ps, (void)c, (void)ldc;
}
#endif
