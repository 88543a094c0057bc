/* ConvInteger: int8/uint8 convolution with zero points, int32 output, on the qgemm.h integer
 * kernels (padding reads as the zero point, as the operator requires). */
#include "conv_util.h"
#include "qgemm.h"
#include <stdlib.h>
#include <string.h>

static int is_q8(int dt) { return dt == KILN_DTYPE_INT8 || dt == KILN_DTYPE_UINT8; }

static kiln_status ci_check(kiln_ctx *ctx, kconv_geom *g, int *known) {
    kiln_tensor *X, *W;
    KILN_TRY(kiln_need_input(ctx, 0, &X));
    KILN_TRY(kiln_need_input(ctx, 1, &W));
    if (!is_q8(X->dtype) || !is_q8(W->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input %s has element type %d; expected int8 or uint8",
                         is_q8(X->dtype) ? "w" : "x", is_q8(X->dtype) ? W->dtype : X->dtype);
    KILN_TRY(kconv_check(ctx, X, W, NULL, g, known));
    kiln_tensor *xz = kiln_input(ctx, 2), *wz = kiln_input(ctx, 3);
    if (xz) {
        if (xz->dtype != X->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "x_zero_point's element type differs from x's");
        if (kiln_numel(xz) > 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "x_zero_point must be a scalar (per-tensor); it has %lld elements",
                             (long long)kiln_numel(xz));
    }
    if (wz) {
        int64_t n = kiln_numel(wz);
        if (wz->dtype != W->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "w_zero_point's element type differs from w's");
        if (n > 1 && g->M >= 0 && n != g->M)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "w_zero_point has %lld elements; expected 1 or %lld (one per output "
                             "channel)", (long long)n, (long long)g->M);
    }
    return KILN_OK;
}

kiln_status kconvint_infer(kiln_ctx *ctx) {
    kconv_geom g;
    int known;
    KILN_TRY(ci_check(ctx, &g, &known));
    if (!known) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_INT32);
    int64_t dims[KILN_MAX_RANK] = {g.N, g.M};
    for (int i = 0; i < g.nd; i++) dims[i + 2] = g.out[i];
    return kiln_set_output(ctx, 0, KILN_DTYPE_INT32, g.nd + 2, dims);
}

static int q8(const kiln_tensor *t, int64_t i) {
    return t->dtype == KILN_DTYPE_INT8 ? ((const int8_t *)t->data)[i] : ((const uint8_t *)t->data)[i];
}

typedef struct ci_epi {
    int32_t *y;
    int64_t M, P;
} ci_epi;

static void ci_store(void *arg, int64_t n, int64_t m0, int64_t p0, int64_t mc, int64_t pc,
                     const int32_t *acc, int64_t ld) {
    const ci_epi *e = arg;
    for (int64_t i = 0; i < mc; i++)
        memcpy(e->y + (n * e->M + m0 + i) * e->P + p0, acc + i * ld, sizeof(int32_t) * (size_t)pc);
}

kiln_status kconvint_compute(kiln_ctx *ctx) {
    kiln_tensor *X = kiln_input(ctx, 0), *W = kiln_input(ctx, 1), *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    kconv_geom g;
    int known;
    KILN_TRY(ci_check(ctx, &g, &known));
    if (kiln_numel(Y) == 0) return KILN_OK;
    kiln_tensor *xz = kiln_input(ctx, 2), *wz = kiln_input(ctx, 3);
    kqg_conv_geom q;
    memset(&q, 0, sizeof q);
    q.nsp = g.nd;
    q.N = g.N;
    q.C = g.C;
    q.M = g.M;
    q.group = g.group;
    for (int d = 0; d < g.nd; d++) {
        q.in_sp[d] = g.in[d];
        q.out_sp[d] = g.out[d];
        q.k[d] = g.k[d];
        q.stride[d] = g.stride[d];
        q.dil[d] = g.dil[d];
        q.pad_lo[d] = g.pad_b[d];
    }
    q.in_size = g.in_size;
    q.out_size = g.out_size;
    q.k_size = g.k_size;
    int64_t nwz = wz ? kiln_numel(wz) : 0;
    int32_t *wzv = malloc(sizeof(int32_t) * (size_t)(g.M + 1));
    if (!wzv) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for ConvInteger");
    for (int64_t m = 0; m < (nwz > 1 ? g.M : 1); m++) wzv[m] = nwz == 0 ? 0 : q8(wz, nwz > 1 ? m : 0);
    kqg_conv_w pw;
    kiln_status st = kqg_conv_pack_w(ctx, &q, W->dtype, W->data, &pw);
    if (st == KILN_OK) {
        ci_epi e = {Y->data, g.M, g.out_size};
        st = kqg_conv_run(ctx, &q, &pw, wzv, nwz > 1, X->dtype, X->data,
                          xz && kiln_numel(xz) ? q8(xz, 0) : 0, ci_store, &e);
        kqg_conv_w_free(&pw);
    }
    free(wzv);
    return st;
}
