/* Convolution through the bfloat16 product (a session with cpu_bf16): the weights, rounded and
 * packed once per group as the product's A, times im2col columns rounded while they are packed.
 * Work items are (image, group, column tile, block of output channels); a tile's columns are
 * im2col'd into a float buffer (1x1 unit-stride convolutions read the input in place), and bias,
 * residual and activation follow while the tile is hot. Items never change what an output sums,
 * so results do not depend on the thread count. */
#include "conv_util.h"
#include "gemm_bf16.h"
#include <stdlib.h>
#include <string.h>

int64_t kconv_bf16_weight_size(const kconv_geom *g) {
    int64_t Mg = g->M / g->group, Kc = g->C / g->group * g->k_size;
    return g->group * kbf16_packed_a_size(Mg, Kc);
}

void kconv_pack_weight_bf16(const kconv_geom *g, const float *w, uint16_t *dst) {
    int64_t Mg = g->M / g->group, Kc = g->C / g->group * g->k_size;
    int64_t per = kbf16_packed_a_size(Mg, Kc);
    for (int64_t grp = 0; grp < g->group; grp++)
        kbf16_pack_a(0, Mg, Kc, w + grp * Mg * Kc, Kc, dst + grp * per);
}

typedef struct bconv_job {
    const kconv_geom *g;
    const float *x, *bias, *z;
    const kconv_act *act;
    const uint16_t *w;
    float *y;
    int64_t Cg, Mg, Kc, wper, tile, ntiles, mblock, nmb;
    int pointwise;
    volatile int failed;
} bconv_job;

static void bconv_run(void *arg, int64_t i0, int64_t i1) {
    bconv_job *j = arg;
    const kconv_geom *g = j->g;
    float *buf = NULL;
    if (!j->pointwise && !(buf = malloc(sizeof(float) * (size_t)(j->Kc * j->tile)))) {
        j->failed = 1;
        return;
    }
    int64_t last = -1;
    for (int64_t it = i0; it < i1; it++) {
        int64_t mb = it % j->nmb, rest = it / j->nmb;
        int64_t t = rest % j->ntiles, ng = rest / j->ntiles, grp = ng % g->group, n = ng / g->group;
        int64_t p0 = t * j->tile, p1 = p0 + j->tile < g->out_size ? p0 + j->tile : g->out_size;
        int64_t m0 = mb * j->mblock, m1 = m0 + j->mblock < j->Mg ? m0 + j->mblock : j->Mg;
        if (p0 >= p1 || m0 >= m1) continue;
        const float *xg = j->x + (n * g->C + grp * j->Cg) * g->in_size;
        kbf16_src a = {j->w + grp * j->wper, m0, NULL, 0, 0}, b = {NULL, 0, NULL, 0, 0};
        if (j->pointwise) {
            b.f = xg + p0;
            b.ld = g->in_size;
        } else {
            if (rest != last) kconv_im2col_f32(g, j->Cg, xg, p0, p1, buf, p1 - p0);
            last = rest;
            b.f = buf;
            b.ld = p1 - p0;
        }
        float *yg = j->y + (n * g->M + grp * j->Mg) * g->out_size;
        if (!kbf16_gemm_serial(&a, &b, m1 - m0, p1 - p0, j->Kc, 1.0f, 0.0f, yg + m0 * g->out_size + p0,
                               g->out_size)) {
            j->failed = 1;
            break;
        }
        for (int64_t m = m0; m < m1; m++) {
            int64_t oc = grp * j->Mg + m;
            float *yr = yg + m * g->out_size + p0;
            if (j->bias) kvec_add_scalar_f32(yr, j->bias[oc], p1 - p0);
            if (j->z) kvec_add_f32(yr, j->z + (n * g->M + oc) * g->out_size + p0, p1 - p0);
            if (j->act && j->act->kind != KACT_NONE) kconv_apply_act(j->act, yr, p1 - p0);
        }
    }
    free(buf);
}

kiln_status kconv_run_bf16(kiln_ctx *ctx, const kconv_geom *g, const float *x, const uint16_t *w,
                           const float *bias, const float *z, const kconv_act *act, float *y) {
    if (g->N == 0 || g->M == 0 || g->out_size == 0) return KILN_OK;
    bconv_job j;
    memset(&j, 0, sizeof j);
    j.g = g;
    j.x = x;
    j.bias = bias;
    j.z = z;
    j.act = act;
    j.w = w;
    j.y = y;
    j.Cg = g->C / g->group;
    j.Mg = g->M / g->group;
    j.Kc = j.Cg * g->k_size;
    j.wper = kbf16_packed_a_size(j.Mg, j.Kc);
    j.pointwise = 1;
    for (int d = 0; d < g->nd; d++)
        if (g->k[d] != 1 || g->stride[d] != 1 || g->pad_b[d] || g->pad_e[d]) j.pointwise = 0;
    /* a tile's im2col block stays within about 1 MB */
    int64_t tile = j.Kc > 0 ? (256 * 1024) / j.Kc : 256;
    tile = tile < 64 ? 64 : tile > 256 ? 256 : tile;
    if (tile > g->out_size) tile = g->out_size;
    int nt = kiln_num_threads(ctx);
    int64_t images = g->N * g->group, ntiles = (g->out_size + tile - 1) / tile;
    /* too few items for the threads: narrower tiles (down to 32 columns), then channel blocks
     * of whole 32-row AMX blocks */
    while (nt > 1 && images * ntiles < 2 * nt && tile > 32) {
        tile = (tile / 2 + 31) / 32 * 32;
        ntiles = (g->out_size + tile - 1) / tile;
    }
    j.tile = tile;
    j.ntiles = ntiles;
    j.mblock = j.Mg;
    j.nmb = 1;
    if (nt > 1 && images * ntiles < 2 * nt && j.Mg >= 64) {
        int64_t want = (2 * nt + images * ntiles - 1) / (images * ntiles);
        int64_t mb = ((j.Mg + want - 1) / want + 31) / 32 * 32;
        j.mblock = mb;
        j.nmb = (j.Mg + mb - 1) / mb;
    }
    int64_t items = images * ntiles * j.nmb;
    double macs = (double)g->N * g->M * j.Kc * g->out_size;
    kiln_parallel_for(ctx, items, kpar_grain(items, macs / 200.0), bconv_run, &j);
    return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for im2col") : KILN_OK;
}
