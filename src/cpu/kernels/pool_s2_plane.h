/* One plane of a MaxPool with windows 2 or 3 wide at horizontal stride 2 (pool.c: plane_s2_f32 on
 * AVX-512, plane_s2_f32_avx2), written once for both vector widths. Each input row is reduced
 * over the window's columns once, into a ring of kh rows (row r in slot r % kh: a window's rows
 * are consecutive), then each output row takes the max of its window's reduced rows; the border
 * outputs follow in a pass of their own (border_cols). pool.c includes this file once per
 * instruction set, after defining:
 *   S2_PLANE, S2_TARGET             the function's name and its target attribute
 *   S2_ROW(xr, pb, kw, oa, ob, h)   outputs [oa, ob) of input row xr reduced over kw columns into h
 *   S2_OUT(yr, rows, nr, first, oa, ob)
 *                                   outputs [oa, ob) of an output row from its nr reduced rows, NaN
 *                                   where the window's first tap (its row at first) is
 * and undefines them afterwards. */
S2_TARGET __attribute__((always_inline)) static inline void
S2_PLANE(const pool_job *j, int64_t q, float *ring, const int kw, const int prefetch) {
    const float *x = (const float *)j->x + q * j->c->g.in_size;
    float *y = (float *)j->y + q * j->c->g.out_size;
    int64_t W = j->in[2], OH = j->out[1], OW = j->out[2], KH = j->k[1], PB = j->pb[2];
    int64_t oa, ob;
    kpool_inner_cols(W, kw, 2, PB, OW, &oa, &ob);
    int64_t nv = ob - oa;
    int64_t *held = (int64_t *)(ring + KH * s2_stride(j));
    for (int64_t i = 0; i < KH; i++) held[i] = -1;
    for (int64_t oh = 0; oh < OH; oh++) {
        float *yr = y + oh * OW;
        int64_t h0 = oh * j->s[1] - j->pb[1], hl = j->tlo[1][oh], hh = j->thi[1][oh];
        if (hl >= hh) { /* no valid rows: 0, as plane_f32 */
            memset(yr, 0, sizeof(float) * (size_t)OW);
            continue;
        }
        float *rows[S2_MAX_KH];
        for (int64_t r = h0 + hl; r < h0 + hh; r++) {
            float *h = ring + (r % KH) * s2_stride(j);
            if (held[r % KH] != r && nv > 0) {
                S2_ROW(x + r * W, PB, kw, oa, ob, h);
                if (prefetch) prefetch_ahead(x + r * W, W);
                held[r % KH] = r;
            }
            rows[r - h0 - hl] = h;
        }
        if (nv > 0) S2_OUT(yr, rows, hh - hl, x + (h0 + hl) * W - PB, oa, ob);
    }
    border_cols(j, x, y, oa, ob, 1);
}
