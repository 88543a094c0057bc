/* The blocked depthwise kernel of conv_depthwise.c (small maps: VL channels per vector), written
 * once for both vector widths. conv_depthwise.c includes this file once per instruction set,
 * after defining:
 *   DWB_NAME, DWB_TARGET     the function's name and its target attribute
 *   DWB_VL, DWB_VEC          lanes per vector (16 or 8) and the vector type
 *   DWB_ZERO()               a zero vector
 *   DWB_LOAD(p), DWB_STORE(p, v)      aligned whole vectors
 *   DWB_LOADN(p, n)          the first n lanes from p (n may pass VL: all of them), the rest zero
 *   DWB_STOREN(p, v, n)      the first n lanes of v to p (n may pass VL: all of them)
 *   DWB_FMA(a, b, c), DWB_ADD(a, b)
 *   DWB_TRANSPOSE(r)         r[0..VL) as a VL x VL matrix, transposed in registers
 *   DWB_ACT(av, v)           FusedConv's activation (kconv_actv) on v
 * and undefines them afterwards. */

/* Items [b0, b1) of the N * ceil(C / VL) channel blocks, each cut into rsplit bands of output
 * rows (item = block * rsplit + band), with their epilogue. A band interleaves only the input
 * rows its outputs read. Returns -1 when out of memory. */
DWB_TARGET static int DWB_NAME(const kconv_geom *g, const float *x, const float *w, const float *bias,
                               const float *z, const kconv_act *act, float *y, int64_t rsplit, int64_t b0,
                               int64_t b1) {
    enum { VL = DWB_VL };
    dw_plan p;
    dw_make_plan(g, &p);
    int64_t Hp = (p.OH - 1) * p.sh + (p.KH - 1) * p.dh + 1;
    int64_t Wp = (p.OW - 1) * p.sw + (p.KW - 1) * p.dw + 1;
    int64_t ntaps = p.KH * p.KW, cblocks = (g->C + VL - 1) / VL;
    int64_t opad = (g->out_size + VL - 1) / VL * VL;
    /* the map, then VL positions of slack for the interleave's whole-vector stores */
    int64_t nmap = (Hp * Wp + VL) * VL;
    /* a band's last VL positions may start anywhere: VL more positions of slack; C11's
     * aligned_alloc takes whole multiples of the alignment (8 lanes are 32 bytes) */
    size_t bytes = sizeof(float) * (size_t)(nmap + ntaps * VL + (opad + VL) * VL);
    float *P = aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!P) return -1;
    float *WB = P + nmap;
    float *O = WB + ntaps * VL; /* outputs, [position][VL channels], transposed back at the end */
    memset(O + g->out_size * VL, 0, sizeof(float) * (size_t)((opad + VL - g->out_size) * VL));
    memset(P, 0, sizeof(float) * (size_t)nmap); /* the padding stays zero */
    int64_t toff[64];
    int use_toff = ntaps <= 64;
    kconv_actv av = kconv_actv_make(act);
    int act_regs = act && av.mode != KACTV_OTHER && av.mode != KACTV_NONE;
    int act_after = act && av.mode == KACTV_OTHER;
    for (int64_t ky = 0; ky < p.KH && use_toff; ky++)
        for (int64_t kx = 0; kx < p.KW; kx++)
            toff[ky * p.KW + kx] = ((ky * p.dh) * Wp + kx * p.dw) * VL;
    for (int64_t it = b0; it < b1; it++) {
        int64_t b = it / rsplit, band = it % rsplit;
        int64_t oy0 = band * p.OH / rsplit, oy1 = (band + 1) * p.OH / rsplit;
        int64_t n = b / cblocks, c0 = (b % cblocks) * VL;
        int64_t lanes = g->C - c0 < VL ? g->C - c0 : VL;
        const float *xb = x + (n * g->C + c0) * g->in_size;
        float *yb = y + (n * g->M + c0) * g->out_size;
        /* interleave: VL pixels of a row from each of the VL planes, transposed in registers */
        int64_t iw = p.IW < Wp - p.pl ? p.IW : Wp - p.pl;
        int64_t iy0 = oy0 * p.sh - p.pt, iy1 = (oy1 - 1) * p.sh + (p.KH - 1) * p.dh - p.pt + 1;
        if (iy0 < 0) iy0 = 0;
        if (iy1 > p.IH) iy1 = p.IH;
        for (int64_t iy = iy0; iy < iy1; iy++) {
            int64_t py = iy + p.pt;
            if (py >= Hp) break;
            for (int64_t ix = 0; ix < iw; ix += VL) {
                int64_t cnt = iw - ix;
                DWB_VEC r[VL];
                for (int c = 0; c < VL; c++)
                    r[c] = c < lanes ? DWB_LOADN(xb + c * g->in_size + iy * p.IW + ix, cnt) : DWB_ZERO();
                DWB_TRANSPOSE(r);
                /* all VL positions, a fixed run of stores (a loop to cnt became a rep movsq,
                 * slow for short copies): past cnt the lanes were loaded as zeros, so the
                 * extra stores only zero padding or positions of the next row, which the
                 * next row writes later */
                float *dst = P + (py * Wp + ix + p.pl) * VL;
                for (int k = 0; k < VL; k++) DWB_STORE(dst + k * VL, r[k]);
            }
        }
        for (int64_t t0 = 0; t0 < ntaps; t0 += VL) { /* the block's taps, [tap][VL channels] */
            int64_t cnt = ntaps - t0 < VL ? ntaps - t0 : VL;
            DWB_VEC r[VL];
            for (int c = 0; c < VL; c++)
                r[c] = c < lanes ? DWB_LOADN(w + (c0 + c) * ntaps + t0, cnt) : DWB_ZERO();
            DWB_TRANSPOSE(r);
            for (int64_t k = 0; k < cnt; k++) DWB_STORE(WB + (t0 + k) * VL, r[k]);
        }
        DWB_VEC vb = bias ? DWB_LOADN(bias + c0, lanes) : DWB_ZERO();
        /* The next block's planes are one contiguous run of NCHW input; fetched while this block
         * computes, its interleave no longer waits on memory (at batch 8 the layer's input is
         * past L2, and the plane-strided loads of a row missed in turn: a sixth of the time). */
        const float *nx = band == rsplit - 1 && it + 1 < b1
                              ? x + ((b + 1) / cblocks * g->C + (b + 1) % cblocks * VL) * g->in_size
                              : NULL;
        int64_t nlines = 0, pf_per_row = 0, pf = 0;
        if (nx) {
            int64_t nl = g->C - (b + 1) % cblocks * VL < VL ? g->C - (b + 1) % cblocks * VL : VL;
            nlines = (nl * g->in_size * (int64_t)sizeof(float) + 63) / 64;
            pf_per_row = (nlines + (oy1 - oy0) - 1) / (oy1 - oy0);
        }
        for (int64_t oy = oy0; oy < oy1; oy++) {
            const float *prow = P + (oy * p.sh) * Wp * VL;
            for (int64_t e = pf + pf_per_row; pf < e && pf < nlines; pf++)
                _mm_prefetch((const char *)nx + pf * 64, _MM_HINT_T0);
            int64_t ox = 0;
            /* 4 positions at a time, so four independent FMA chains; the last group of a row
             * repeats its final position (same value written twice) rather than falling back to
             * one chain, which is latency-bound on the 7- and 14-wide maps */
            for (; ox < p.OW; ox += 4) {
                int64_t x1 = ox + 1 < p.OW ? ox + 1 : p.OW - 1, x2 = ox + 2 < p.OW ? ox + 2 : p.OW - 1;
                int64_t x3 = ox + 3 < p.OW ? ox + 3 : p.OW - 1;
                DWB_VEC a0 = vb, a1 = vb, a2 = vb, a3 = vb;
                const float *s0 = prow + ox * p.sw * VL, *s1 = prow + x1 * p.sw * VL;
                const float *s2 = prow + x2 * p.sw * VL, *s3 = prow + x3 * p.sw * VL;
                for (int64_t t = 0; t < ntaps; t++) {
                    int64_t o = use_toff ? toff[t] : (((t / p.KW) * p.dh) * Wp + (t % p.KW) * p.dw) * VL;
                    DWB_VEC wv = DWB_LOAD(WB + t * VL);
                    a0 = DWB_FMA(wv, DWB_LOAD(s0 + o), a0);
                    a1 = DWB_FMA(wv, DWB_LOAD(s1 + o), a1);
                    a2 = DWB_FMA(wv, DWB_LOAD(s2 + o), a2);
                    a3 = DWB_FMA(wv, DWB_LOAD(s3 + o), a3);
                }
                float *orow = O + oy * p.OW * VL;
                DWB_STORE(orow + ox * VL, a0);
                DWB_STORE(orow + x1 * VL, a1);
                DWB_STORE(orow + x2 * VL, a2);
                DWB_STORE(orow + x3 * VL, a3);
            }
        }
        int64_t q1 = oy1 * p.OW;
        for (int64_t q = oy0 * p.OW; q < q1; q += VL) {
            int64_t cnt = q1 - q;
            DWB_VEC r[VL];
            for (int k = 0; k < VL; k++) r[k] = DWB_LOAD(O + (q + k) * VL);
            DWB_TRANSPOSE(r);
            /* residual and activation on the registers on their way out, rather than a second
             * pass over each plane (a call per 196-value plane of a 14x14 map) */
            for (int64_t c = 0; c < lanes; c++) {
                float *yc = yb + c * g->out_size + q;
                DWB_VEC v = r[c];
                if (z) v = DWB_ADD(v, DWB_LOADN(z + (yc - y), cnt));
                if (act_regs) v = DWB_ACT(&av, v);
                DWB_STOREN(yc, v, cnt);
            }
        }
        for (int64_t c = 0; act_after && c < lanes; c++) {
            int64_t off = (n * g->M + c0 + c) * g->out_size + oy0 * p.OW;
            dw_epilogue(y + off, NULL, act, (oy1 - oy0) * p.OW);
        }
    }
    free(P);
    return 0;
}
