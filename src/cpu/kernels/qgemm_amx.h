/* AMX-INT8 blocks for the 8-bit product (qgemm.c), on the packed layouts of qgemm.h. */
#ifndef KILN_QGEMM_AMX_H
#define KILN_QGEMM_AMX_H

#include <stdint.h>

/* 1 where KILN_AMX_INT8=1 asks for the tiles, the CPU has AMX-INT8, the OS grants the tiles and
 * KILN_NO_AMX is not set (the caller checks kqg_have_vnni too). */
int kqg_have_amx(void);

/* c[i * ldc + j] = dot(row i of a, column j) for rows i < rows (16 or 32) and the 16 or 32
 * columns of panels (1 or 2) packed B panels at b, ps bytes apart: a's rows are lda = K4 * 4
 * bytes apart, every row readable (the matrix's allocation holds 64 bytes of slack past its last
 * row). The thread must have loaded kamx_cfg_16x64 (amx.h). */
void kqg_amx_block(int rows, int panels, int64_t K4, const uint8_t *a, int64_t lda,
                   const int8_t *b, int64_t ps, int32_t *c, int64_t ldc);

#endif
