/* CUDA element-wise ops of one input: math, activations, predicates, com.microsoft Gelu and
 * QuickGelu, Clip (bounds as optional inputs from opset 11, attributes before), Cast and
 * CastLike. Attributes are read at compute (a few lookups, no state to keep in step). */
#include "elementwise_internal.h"

#include <float.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static int unary_supports(const kiln_node *n, const kiln_graph_value *const *in, char *why, size_t cap,
                          int op, int out_bool) {
    int dts[KILN_EW_MAX_IN] = {0, 0, 0};
    if (!kiln_cuew_in_dtype(in, n->n_in, 0, &dts[0], why, cap)) return 0;
    return kiln_cuew_have_kernel(n, op, dts, out_bool ? KILN_DTYPE_BOOL : dts[0], why, cap);
}

static kiln_status unary_compute(kiln_ctx *ctx, int op, const kiln_ew_params *p) {
    const kiln_tensor *ts[1] = {kiln_input(ctx, 0)};
    return kiln_cuew_run(ctx, op, ts, p);
}

/* name, op, bool output, then alpha/beta/gamma from the node nd (defaults per the schemas) */
#define UNARY_OP(name, OP, OUT_BOOL, ALPHA, BETA, GAMMA)                                           \
    int kiln_cuew_##name##_supports(const kiln_node *n, const kiln_graph_value *const *in,         \
                                    const kiln_graph_value *const *out, char *why, size_t cap) {   \
        (void)out;                                                                                 \
        return unary_supports(n, in, why, cap, OP, OUT_BOOL);                                      \
    }                                                                                              \
    kiln_status kiln_cuew_##name##_compute(kiln_ctx *ctx) {                                        \
        const kiln_node *nd = ctx->node;                                                           \
        (void)nd;                                                                                  \
        kiln_ew_params p = {ALPHA, BETA, GAMMA, 0};                                                \
        return unary_compute(ctx, OP, &p);                                                         \
    }

UNARY_OP(abs, KILN_EW_ABS, 0, 0, 0, 0)
UNARY_OP(neg, KILN_EW_NEG, 0, 0, 0, 0)
UNARY_OP(sign, KILN_EW_SIGN, 0, 0, 0, 0)
UNARY_OP(relu, KILN_EW_RELU, 0, 0, 0, 0)
UNARY_OP(exp, KILN_EW_EXP, 0, 0, 0, 0)
UNARY_OP(log, KILN_EW_LOG, 0, 0, 0, 0)
UNARY_OP(sqrt, KILN_EW_SQRT, 0, 0, 0, 0)
UNARY_OP(reciprocal, KILN_EW_RECIPROCAL, 0, 0, 0, 0)
UNARY_OP(sin, KILN_EW_SIN, 0, 0, 0, 0)
UNARY_OP(cos, KILN_EW_COS, 0, 0, 0, 0)
UNARY_OP(floor, KILN_EW_FLOOR, 0, 0, 0, 0)
UNARY_OP(ceil, KILN_EW_CEIL, 0, 0, 0, 0)
UNARY_OP(round, KILN_EW_ROUND, 0, 0, 0, 0)
UNARY_OP(erf, KILN_EW_ERF, 0, 0, 0, 0)
UNARY_OP(sigmoid, KILN_EW_SIGMOID, 0, 0, 0, 0)
UNARY_OP(tanh, KILN_EW_TANH, 0, 0, 0, 0)
UNARY_OP(leaky_relu, KILN_EW_LEAKY_RELU, 0, kiln_attr_float(nd, "alpha", 0.01f), 0, 0)
UNARY_OP(elu, KILN_EW_ELU, 0, kiln_attr_float(nd, "alpha", 1.0f), 0, 0)
UNARY_OP(selu, KILN_EW_SELU, 0, kiln_attr_float(nd, "alpha", 1.67326319217681884765625f), 0,
         kiln_attr_float(nd, "gamma", 1.05070102214813232421875f))
UNARY_OP(softplus, KILN_EW_SOFTPLUS, 0, 0, 0, 0)
UNARY_OP(hard_sigmoid, KILN_EW_HARD_SIGMOID, 0, kiln_attr_float(nd, "alpha", 0.2f),
         kiln_attr_float(nd, "beta", 0.5f), 0)
UNARY_OP(hard_swish, KILN_EW_HARD_SWISH, 0, 0, 0, 0)
UNARY_OP(mish, KILN_EW_MISH, 0, 0, 0, 0)
UNARY_OP(ms_gelu, KILN_EW_GELU, 0, 0, 0, 0) /* com.microsoft Gelu: the erf form */
UNARY_OP(quick_gelu, KILN_EW_QUICK_GELU, 0, kiln_attr_float(nd, "alpha", 1.702f), 0, 0)
UNARY_OP(isnan, KILN_EW_ISNAN, 1, 0, 0, 0)
UNARY_OP(not, KILN_EW_NOT, 1, 0, 0, 0)

/* ---------------------------------------------------------------- Gelu-20 ---- */

/* 1: tanh, 0: none (erf), -1: another value */
static int gelu_tanh_mode(const kiln_node *n) {
    const char *a = kiln_attr_string(n, "approximate", "none");
    return !strcmp(a, "tanh") ? 1 : !strcmp(a, "none") ? 0 : -1;
}

int kiln_cuew_gelu_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap) {
    (void)out;
    if (gelu_tanh_mode(n) < 0) {
        snprintf(why, cap, "attribute approximate='%s' is neither 'none' nor 'tanh'",
                 kiln_attr_string(n, "approximate", ""));
        return 0;
    }
    return unary_supports(n, in, why, cap, KILN_EW_GELU, 0);
}
kiln_status kiln_cuew_gelu_compute(kiln_ctx *ctx) {
    kiln_ew_params p = {0, 0, 0, gelu_tanh_mode(ctx->node) == 1};
    return unary_compute(ctx, KILN_EW_GELU, &p);
}

/* ---------------------------------------------------------------- IsInf ---- */

int kiln_cuew_isinf_supports(const kiln_node *n, const kiln_graph_value *const *in,
                             const kiln_graph_value *const *out, char *why, size_t cap) {
    (void)out;
    return unary_supports(n, in, why, cap, KILN_EW_ISINF, 1);
}
kiln_status kiln_cuew_isinf_compute(kiln_ctx *ctx) {
    const int neg = kiln_attr_int(ctx->node, "detect_negative", 1) != 0;
    const int pos = kiln_attr_int(ctx->node, "detect_positive", 1) != 0;
    kiln_ew_params p = {0, 0, 0, neg | pos << 1};
    return unary_compute(ctx, KILN_EW_ISINF, &p);
}

/* ---------------------------------------------------------------- Clip ---- */

/* From opset 11 the bounds are optional scalar inputs read on the device (no host copy); an
 * absent one is replaced by x (loaded, never used) and flagged in mode. Before, they are the
 * float attributes min/max. */
int kiln_cuew_clip_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap) {
    (void)out;
    int dt = 0;
    if (!kiln_cuew_in_dtype(in, n->n_in, 0, &dt, why, cap)) return 0;
    if (n->opset < 11 && !kiln_cuda_float_type(dt)) {
        snprintf(why, cap, "Clip-%d takes float types only", n->opset);
        return 0;
    }
    if (n->opset >= 11 && !kiln_cuew_same_dtype(n, in, dt, why, cap)) return 0;
    const int dts[KILN_EW_MAX_IN] = {dt, dt, dt};
    return kiln_cuew_have_kernel(n, KILN_EW_CLIP, dts, dt, why, cap);
}

kiln_status kiln_cuew_clip_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0);
    if (!x) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input 0");
    kiln_ew_params p = {0, 0, 0, 0};
    kiln_ew_operand in[3] = {kiln_cuew_operand(x), kiln_cuew_operand(x), kiln_cuew_operand(x)};
    in[1].rank = in[2].rank = 0; /* one value, repeated */
    if (ctx->opset < 11) {
        p.mode = 4;
        p.alpha = kiln_attr_float(ctx->node, "min", -FLT_MAX);
        p.beta = kiln_attr_float(ctx->node, "max", FLT_MAX);
    } else {
        for (int k = 1; k <= 2; k++) {
            kiln_tensor *b = kiln_input(ctx, k);
            if (!b) continue;
            in[k].data = b->data;
            p.mode |= 1 << (k - 1);
        }
    }
    return kiln_cuew_launch(ctx, KILN_EW_CLIP, in, kiln_output(ctx, 0), &p);
}

/* ---------------------------------------------------------------- Cast, CastLike ---- */

/* Cast-1 named the target type with a string */
static int dtype_from_name(const char *s) {
    static const char *const names[] = {"",       "FLOAT",  "UINT8",  "INT8",   "UINT16",
                                        "INT16",  "INT32",  "INT64",  "STRING", "BOOL",
                                        "FLOAT16", "DOUBLE", "UINT32", "UINT64"};
    for (int i = 1; i < (int)(sizeof names / sizeof names[0]); i++)
        if (!strcasecmp(s, names[i])) return i;
    return 0;
}

static int cast_target(const kiln_node *n) {
    const kiln_attr *a = kiln_node_attr(n, "to");
    if (!a) return 0;
    if (a->type == KILN_ATTR_STRING) return dtype_from_name(a->s ? a->s : "");
    return a->i > 0 && a->i < 64 ? (int)a->i : 0;
}

static int cast_supports(const kiln_node *n, const kiln_graph_value *const *in, int to, char *why, size_t cap) {
    int dts[KILN_EW_MAX_IN] = {0, 0, 0};
    if (!kiln_cuew_in_dtype(in, n->n_in, 0, &dts[0], why, cap)) return 0;
    if (!to) {
        snprintf(why, cap, "the target element type is missing or unknown");
        return 0;
    }
    /* a same-type Cast is a copy of whole bytes */
    if (dts[0] == to && to != KILN_DTYPE_STRING && kiln_dtype_size((kiln_dtype)to) > 0) return 1;
    if (kiln_cuda_ew_supported(KILN_EW_CAST, dts, to)) return 1;
    const char *a = kiln_dtype_name((kiln_dtype)dts[0]), *b = kiln_dtype_name((kiln_dtype)to);
    snprintf(why, cap, "Cast from %s to %s has no CUDA kernel (it takes float32, float16, bfloat16, "
             "float64, int8, uint8, int16, int32, int64 and bool)", a ? a : "?", b ? b : "?");
    return 0;
}

static kiln_status cast_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!x) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input 0");
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    if (x->dtype == y->dtype) return kiln_cuew_copy(ctx, y, x);
    const kiln_tensor *ts[1] = {x};
    return kiln_cuew_run(ctx, KILN_EW_CAST, ts, NULL);
}

int kiln_cuew_cast_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap) {
    (void)out;
    return cast_supports(n, in, cast_target(n), why, cap);
}
kiln_status kiln_cuew_cast_compute(kiln_ctx *ctx) { return cast_compute(ctx); }

/* CastLike(x, like): the target type is input 1's; like's data is never read */
int kiln_cuew_cast_like_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                 const kiln_graph_value *const *out, char *why, size_t cap) {
    (void)out;
    int to = 0;
    if (!kiln_cuew_in_dtype(in, n->n_in, 1, &to, why, cap)) return 0;
    return cast_supports(n, in, to, why, cap);
}
kiln_status kiln_cuew_cast_like_compute(kiln_ctx *ctx) { return cast_compute(ctx); }
