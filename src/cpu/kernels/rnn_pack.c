/* R laid out for the blocked step product of rnn_cells.h. Splitting a step by hidden unit over
 * threads used to hand each thread a slice of every gate's rows of R, which the packed product
 * could not read in place (gate g of units [u0, u1) sits at columns g*H + u0 of the plain packing,
 * off the 32-column panel grid, and n products instead of one), so every chunk re-packed its
 * slice of R on every step: a bidirectional LSTM of 256 units at batch 8 did three times the
 * single-thread work when split 16 ways, and 16 threads ran no faster than 1. Interleaving the
 * gates per block of units makes any run of whole blocks one contiguous range of packed columns,
 * so a chunk is one product over R packed once, whatever the thread count. */
#include "rnn_common.h"
#include "gemm_util.h"
#include <stdlib.h>
#include <string.h>

void kiln_rnn_blocks(const rnn_cfg *c, int64_t H, rnn_blocks *bk) {
    const int split = c->cell == RNN_CELL_GRU && !c->linear_before_reset;
    bk->n = split ? 2 : c->n_gates;
    /* n * U must be a whole number of the product's 32-column panels so that every block starts
     * on one; 16 units keep an LSTM's blocks (64 columns) fine-grained for many threads, and GRU
     * without linear_before_reset needs 32 for its hidden gate's own panels (U columns a block) */
    bk->U = bk->n == 4 ? 16 : 32;
    bk->nblk = H > 0 ? (H + bk->U - 1) / bk->U : 0;
    bk->hpad = bk->nblk * bk->U;
    bk->hcol = split ? bk->n * bk->hpad : -1;
    bk->ld = bk->n * bk->hpad + (split ? bk->hpad : 0);
}

int64_t kiln_rnn_packed_r_size(const rnn_cfg *c, int64_t H) {
    rnn_blocks bk;
    kiln_rnn_blocks(c, H, &bk);
    return kgemm_avx512_packed_b_size(H, bk.ld);
}

int kiln_rnn_pack_r(const rnn_cfg *c, int64_t H, const float *R, float *dst) {
    rnn_blocks bk;
    kiln_rnn_blocks(c, H, &bk);
    if (H <= 0) return 1;
    /* the rows of R in packed column order, padding units as zero rows, then packed as one
     * [ld, H] matrix (a constant's packing happens once, at init) */
    float *rows = calloc((size_t)(bk.ld * H), sizeof *rows);
    if (!rows) return 0;
    for (int64_t blk = 0; blk < bk.nblk; blk++)
        for (int64_t g = 0; g < bk.n; g++)
            for (int64_t j = 0; j < bk.U && blk * bk.U + j < H; j++)
                memcpy(rows + ((blk * bk.n + g) * bk.U + j) * H, R + (g * H + blk * bk.U + j) * H,
                       (size_t)H * sizeof *rows);
    if (bk.hcol >= 0)
        memcpy(rows + bk.hcol * H, R + 2 * H * H, (size_t)(H * H) * sizeof *rows);
    kgemm_avx512_pack_b(1, H, bk.ld, rows, H, dst);
    free(rows);
    return 1;
}
