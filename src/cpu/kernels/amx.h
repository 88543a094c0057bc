/* Intel AMX (the tile unit of Sapphire Rapids and later) as the bfloat16 and 8-bit products use
 * it: whether the CPU has a tile instruction set and the OS lets this process use the tile
 * registers, and the one tile configuration both kernels load. */
#ifndef KILN_AMX_H
#define KILN_AMX_H

#include <stdint.h>

enum { KAMX_BF16 = 22, KAMX_TILE = 24, KAMX_INT8 = 25 }; /* CPUID.(7,0):EDX bits */

/* 1 when the CPU has AMX-TILE and the CPUID.(7,0):EDX feature bit `feature`, KILN_NO_AMX is not
 * set, and the OS granted the tile data state to this process (asked once; without the grant the
 * first tile instruction faults). */
int kamx_usable(int feature);

/* The layout ldtilecfg reads (palette 1). */
typedef struct kamx_cfg {
    uint8_t palette, start_row, reserved[14];
    uint16_t colsb[16];
    uint8_t rows[16];
} kamx_cfg;

/* Tiles 0-7 all 16 rows of 64 bytes: 0-3 the 2 x 2 sums of a 32 x 32 block, 4-5 two A tiles,
 * 6-7 two B tiles. A constant in memory: built on the stack, GCC 12 dropped the stores of colsb
 * and rows (it does not see ldtilecfg read them), and the garbage left in their place made
 * ldtilecfg fault (#GP, a segfault on the first product of any AMX machine). */
extern const kamx_cfg kamx_cfg_16x64;

/* Load kamx_cfg_16x64 on the calling thread (zeroing every tile), and give the tile state back
 * when the thread's products are done. Only where kamx_usable(). */
void kamx_load_16x64(void);
void kamx_release(void);

#endif
