/* Conv and com.microsoft FusedConv: shape checks and dtype dispatch. The arithmetic lives in
 * conv_gemm.c (im2col + sgemm, 1x1 direct) and conv_depthwise.c; float16/bfloat16 run in
 * float32 (a constant weight is converted once, at init). This file holds the conv family table. */
#include "conv_util.h"
#include "gemm_util.h"
#include "gemm_bf16.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

typedef struct conv_state {
    const void *w_src; /* the constant W seen at init */
    float *w_f32;      /* half-precision W converted once, or NULL */
    float *w_packed;   /* W packed for the AVX-512 product (Conv, FusedConv), or NULL */
    uint16_t *w_bf16;  /* float32 W packed for the bfloat16 product (cpu_bf16), or NULL */
    kconv_lazy_forms forms;    /* W's other forms (output channels in the lanes, Winograd) */
} conv_state;

static int conv_float_type(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || kcvt_is_half(dt);
}

/* Checks X, W (and B) and fills g; g->out may hold unknown dims in static inference. */
kiln_status kconv_check_ranks(kiln_ctx *ctx, const kiln_tensor *X, const kiln_tensor *W, kconv_geom *g,
                              int *ranks_known) {
    char sx[96], sw[96];
    memset(g, 0, sizeof *g);
    *ranks_known = 0;
    g->group = kiln_attr_int(ctx->node, "group", 1);
    if (g->group < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "group is %lld; it must be >= 1",
                         (long long)g->group);
    if (X->rank < 0 || W->rank < 0) return KILN_OK;
    if (X->rank < 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input X has rank %d; expected [N, C, spatial...] (rank >= 3)", X->rank);
    if (W->rank != X->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "W is %s but X is %s: ranks differ",
                         kconv_dims_str(W->rank, W->dims, sw, sizeof sw),
                         kconv_dims_str(X->rank, X->dims, sx, sizeof sx));
    g->nd = X->rank - 2;
    *ranks_known = 1;
    return KILN_OK;
}

kiln_status kconv_check(kiln_ctx *ctx, const kiln_tensor *X, const kiln_tensor *W,
                        const kiln_tensor *B, kconv_geom *g, int *shape_known) {
    char sx[96], sw[96];
    int ranks_known;
    *shape_known = 0;
    KILN_TRY(kconv_check_ranks(ctx, X, W, g, &ranks_known));
    if (!ranks_known) return KILN_OK;
    g->N = X->dims[0];
    g->C = X->dims[1];
    g->M = W->dims[0];
    if (g->C >= 0 && W->dims[1] >= 0 && W->dims[1] * g->group != g->C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "X is %s with %lld channels, but W is %s: W's dim 1 (%lld) times group "
                         "(%lld) must equal the channels",
                         kconv_dims_str(X->rank, X->dims, sx, sizeof sx), (long long)g->C,
                         kconv_dims_str(W->rank, W->dims, sw, sizeof sw), (long long)W->dims[1],
                         (long long)g->group);
    if (g->M >= 0 && g->M % g->group)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "W has %lld output channels, not divisible by group %lld",
                         (long long)g->M, (long long)g->group);
    int nk = 0;
    const int64_t *ks = kiln_attr_ints(ctx->node, "kernel_shape", &nk);
    if (ks && nk != g->nd)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "kernel_shape has %d values for %d spatial dims", nk, g->nd);
    int known = 1;
    for (int i = 0; i < g->nd; i++) {
        int64_t wk = W->dims[i + 2];
        if (ks && wk >= 0 && ks[i] != wk)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "kernel_shape[%d] is %lld but W's spatial dim is %lld", i,
                             (long long)ks[i], (long long)wk);
        g->k[i] = ks ? ks[i] : wk;
        g->in[i] = X->dims[i + 2];
        if (g->k[i] < 0) known = 0;
    }
    if (B && B->rank >= 0) {
        if (B->rank != 1 || (B->dims[0] >= 0 && g->M >= 0 && B->dims[0] != g->M))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "bias B is %s; expected [%lld] (one per output channel)",
                             kconv_dims_str(B->rank, B->dims, sx, sizeof sx), (long long)g->M);
    }
    if (!known) {
        for (int i = 0; i < g->nd; i++) g->out[i] = KILN_DIM_UNKNOWN;
        kconv_finish_sizes(g);
        *shape_known = 1;
        return KILN_OK;
    }
    KILN_TRY(kconv_window(ctx, g, 1, 0));
    *shape_known = 1;
    return KILN_OK;
}

static kiln_status conv_inputs(kiln_ctx *ctx, kiln_tensor **X, kiln_tensor **W, kiln_tensor **B) {
    KILN_TRY(kiln_need_input(ctx, 0, X));
    KILN_TRY(kiln_need_input(ctx, 1, W));
    *B = kiln_input(ctx, 2);
    if (!conv_float_type((*X)->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d for input X",
                         (*X)->dtype);
    if ((*W)->dtype != (*X)->dtype || (*B && (*B)->dtype != (*X)->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "inputs have different element types (X %d, W %d%s)", (*X)->dtype,
                         (*W)->dtype, *B && (*B)->dtype != (*X)->dtype ? ", B differs" : "");
    return KILN_OK;
}

/* The weight's geometry as far as W alone tells it (enough to pick the kernel and pack). */
static int weight_geom(kiln_ctx *ctx, const kiln_tensor *W, kconv_geom *g) {
    memset(g, 0, sizeof *g);
    if (W->rank < 3 || W->rank - 2 > KCONV_MAX_ND) return 0;
    g->nd = W->rank - 2;
    g->group = kiln_attr_int(ctx->node, "group", 1);
    if (g->group < 1 || W->dims[0] % g->group) return 0;
    g->M = W->dims[0];
    g->C = W->dims[1] * g->group;
    for (int i = 0; i < g->nd; i++) {
        g->k[i] = W->dims[i + 2];
        g->in[i] = g->out[i] = 1;
    }
    kconv_finish_sizes(g);
    return 1;
}

kiln_status kconv_init_weight(kiln_ctx *ctx) {
    kiln_tensor *W = kiln_input(ctx, 1);
    if (!W || !W->data || !kiln_shape_concrete(W)) return KILN_OK;
    int half = kcvt_is_half(W->dtype);
    kconv_geom g;
    int is_conv = !strcmp(ctx->node->op_type, "Conv") || !strcmp(ctx->node->op_type, "FusedConv");
    int64_t npk = 0;
    if (is_conv && W->dtype == KILN_DTYPE_FLOAT && kbf16_on(ctx) && weight_geom(ctx, W, &g) &&
        kconv_uses_gemm(&g)) {
        conv_state *s = calloc(1, sizeof *s);
        int64_t nb = kconv_bf16_weight_size(&g);
        if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory preparing W");
        ctx->state = s;
        if (!(s->w_bf16 = kbf16_alloc(nb)))
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing W as bfloat16");
        kconv_pack_weight_bf16(&g, W->data, s->w_bf16);
        s->w_src = W->data;
        kiln_input_packed(ctx, 1, sizeof(uint16_t) * (size_t)nb, &s->w_src);
        return KILN_OK;
    }
    if (is_conv && (half || W->dtype == KILN_DTYPE_FLOAT) && weight_geom(ctx, W, &g) &&
        kconv_uses_gemm(&g))
        npk = kconv_packed_weight_size(&g);
    if (!half && !npk) return KILN_OK;
    conv_state *s = calloc(1, sizeof *s);
    int64_t n = kiln_numel(W);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory preparing W");
    s->w_src = W->data;
    ctx->state = s;
    if (half) {
        if (!(s->w_f32 = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1))))
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory converting W");
        kcvt_to_f32(NULL, W->dtype, W->data, s->w_f32, n);
    }
    if (npk) {
        if (!(s->w_packed = kgemm_alloc_packed(npk)))
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing W");
        kconv_pack_weight(&g, half ? s->w_f32 : W->data, s->w_packed);
    }
    kiln_input_packed(ctx, 1, sizeof(float) * (size_t)(npk + (half ? n : 0)), &s->w_src);
    return KILN_OK;
}

void kconv_fini_weight(void *state) {
    conv_state *s = state;
    if (!s) return;
    free(s->w_f32);
    free(s->w_packed);
    free(s->w_bf16);
    free(atomic_load(&s->forms.lanes));
    free(atomic_load(&s->forms.wino));
    free(s);
}

static const float *cached_packed(kiln_ctx *ctx, const kiln_tensor *W) {
    const conv_state *s = ctx->state;
    return s && s->w_src == W->data ? s->w_packed : NULL;
}

static kconv_lazy_forms *forms_slot(kiln_ctx *ctx, const kiln_tensor *W) {
    conv_state *s = ctx->state;
    return s && s->w_src == W->data && s->w_packed ? &s->forms : NULL;
}

const float *kconv_cached_weight(kiln_ctx *ctx, const kiln_tensor *W) {
    const conv_state *s = ctx->state;
    return s && s->w_src == W->data ? s->w_f32 : NULL;
}

static kiln_status conv_infer(kiln_ctx *ctx) {
    kiln_tensor *X, *W, *B;
    KILN_TRY(conv_inputs(ctx, &X, &W, &B));
    kconv_geom g;
    int known;
    KILN_TRY(kconv_check(ctx, X, W, B, &g, &known));
    if (!known) return kiln_set_output_unknown(ctx, 0, X->dtype);
    int64_t dims[KILN_MAX_RANK];
    dims[0] = g.N;
    dims[1] = g.M;
    for (int i = 0; i < g.nd; i++) dims[i + 2] = g.out[i];
    if (ctx->n_in > 3 && kiln_input(ctx, 3)) { /* FusedConv's Z is added to the output */
        kiln_tensor *Z = kiln_input(ctx, 3);
        char sz[96], sy[96];
        int same = Z->rank < 0 || Z->rank == g.nd + 2;
        for (int i = 0; same && Z->rank >= 0 && i < Z->rank; i++)
            same = Z->dims[i] < 0 || dims[i] < 0 || Z->dims[i] == dims[i];
        if (!same || Z->dtype != X->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input Z is %s; expected the output shape %s",
                             kconv_dims_str(Z->rank, Z->dims, sz, sizeof sz),
                             kconv_dims_str(g.nd + 2, dims, sy, sizeof sy));
    }
    return kiln_set_output(ctx, 0, X->dtype, g.nd + 2, dims);
}

static kiln_status fused_act(kiln_ctx *ctx, kconv_act *act) {
    const char *name = kiln_attr_string(ctx->node, "activation", "");
    int np = 0;
    const float *p = kiln_attr_floats(ctx->node, "activation_params", &np);
    act->kind = KACT_NONE;
    act->a = act->b = 0.0f;
    if (!name || !*name) return KILN_OK;
    if (!strcmp(name, "Relu")) act->kind = KACT_RELU;
    else if (!strcmp(name, "Tanh")) act->kind = KACT_TANH;
    else if (!strcmp(name, "Sigmoid")) act->kind = KACT_SIGMOID;
    else if (!strcmp(name, "LeakyRelu")) {
        act->kind = KACT_LEAKY;
        act->a = np > 0 ? p[0] : 0.01f;
    } else if (!strcmp(name, "Clip")) {
        act->kind = KACT_CLIP;
        act->a = np > 0 ? p[0] : -3.402823466e38f;
        act->b = np > 1 ? p[1] : 3.402823466e38f;
    } else if (!strcmp(name, "HardSigmoid")) {
        act->kind = KACT_HSIGMOID;
        act->a = np > 0 ? p[0] : 0.2f;
        act->b = np > 1 ? p[1] : 0.5f;
    } else if (!strcmp(name, "HardSwish")) /* kiln's own: ORT's FusedConv lacks it */
        act->kind = KACT_HSWISH;
    else
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "activation '%s' is not supported", name);
    return KILN_OK;
}

static kiln_status conv_compute(kiln_ctx *ctx) {
    kiln_tensor *X, *W, *B, *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    KILN_TRY(conv_inputs(ctx, &X, &W, &B));
    kconv_geom g;
    int known;
    KILN_TRY(kconv_check(ctx, X, W, B, &g, &known));
    kconv_act act;
    KILN_TRY(fused_act(ctx, &act));
    kiln_tensor *Z = ctx->n_in > 3 ? kiln_input(ctx, 3) : NULL;
    int dt = X->dtype;
    const conv_state *cs = ctx->state;
    if (dt == KILN_DTYPE_FLOAT && cs && cs->w_bf16 && cs->w_src == W->data)
        return kconv_run_bf16(ctx, &g, X->data, cs->w_bf16, B ? B->data : NULL, Z ? Z->data : NULL,
                              &act, Y->data);
    if (dt == KILN_DTYPE_FLOAT)
        return kconv_run_f32(ctx, &g, X->data, W->data, B ? B->data : NULL, Z ? Z->data : NULL,
                             &act, cached_packed(ctx, W), forms_slot(ctx, W), Y->data);
    if (dt == KILN_DTYPE_DOUBLE) {
        KILN_TRY(kconv_run_f64(ctx, &g, X->data, W->data, B ? B->data : NULL, Y->data));
        int64_t n = kiln_numel(Y);
        double *y = Y->data;
        if (Z)
            for (int64_t i = 0; i < n; i++) y[i] += ((const double *)Z->data)[i];
        if (act.kind != KACT_NONE)
            for (int64_t i = 0; i < n; i++) {
                float v = (float)y[i];
                kconv_apply_act(&act, &v, 1);
                y[i] = v;
            }
        return KILN_OK;
    }
    const float *wc = kconv_cached_weight(ctx, W);
    int64_t nx = kiln_numel(X), nw = wc ? 0 : kiln_numel(W), nb = B ? kiln_numel(B) : 0;
    int64_t nz = Z ? kiln_numel(Z) : 0, ny = kiln_numel(Y);
    float *buf = malloc(sizeof(float) * (size_t)(nx + nw + nb + nz + ny + 1));
    if (!buf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for float32 copies");
    float *x = buf, *w = wc ? (float *)wc : x + nx, *b = x + nx + nw, *z = b + nb, *y = z + nz;
    kcvt_to_f32(ctx, dt, X->data, x, nx);
    if (!wc) kcvt_to_f32(ctx, dt, W->data, w, nw);
    if (B) kcvt_to_f32(ctx, dt, B->data, b, nb);
    if (Z) kcvt_to_f32(ctx, dt, Z->data, z, nz);
    kiln_status st = kconv_run_f32(ctx, &g, x, w, B ? b : NULL, Z ? z : NULL, &act,
                                   cached_packed(ctx, W), forms_slot(ctx, W), y);
    if (st == KILN_OK) kcvt_from_f32(ctx, dt, y, Y->data, ny);
    free(buf);
    return st;
}

const kiln_op kiln_ops_conv[] = {
    {"", "Conv", 1, KILN_OP_PREPACK, kconv_init_weight, conv_infer, conv_compute, kconv_fini_weight},
    {"", "ConvTranspose", 1, KILN_OP_PREPACK, kconv_init_weight, kconvt_infer, kconvt_compute, kconv_fini_weight},
    {"", "ConvInteger", 10, 0, NULL, kconvint_infer, kconvint_compute, NULL},
    {"", "DeformConv", 19, 0, NULL, kdeform_infer, kdeform_compute, NULL},
    {"com.microsoft", "FusedConv", 1, KILN_OP_PREPACK, kconv_init_weight, conv_infer, conv_compute, kconv_fini_weight},
    {0},
};
