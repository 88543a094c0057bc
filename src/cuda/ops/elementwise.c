/* The CUDA element-wise family: its kernel table and the helpers its ops share. The ops
 * themselves are in elementwise_binary.c (two or more inputs) and elementwise_unary.c (one input,
 * Clip, Cast); the device code is kernels/elementwise*.cu.
 *
 * Every op is one launch (variadic Sum/Mean/Max/Min: one per extra input) with its broadcast plan
 * passed by value: no workspace, no host reads of device memory, no sync. Shapes and dtypes were
 * validated by the CPU op's infer before compute runs; supports() rejects at placement every
 * element type and attribute value compute has no kernel for. */
#include "elementwise_internal.h"

#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- compute helpers ---- */

kiln_ew_operand kiln_cuew_operand(const kiln_tensor *t) {
    kiln_ew_operand o = {t->data, t->dtype, t->rank, t->dims};
    return o;
}

kiln_status kiln_cuew_launch(kiln_ctx *ctx, int op, const kiln_ew_operand *in, kiln_tensor *y,
                             const kiln_ew_params *p) {
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    kiln_ew_operand out = kiln_cuew_operand(y);
    void *stream = kiln_cuda_stream(kiln_cuda_of(ctx));
    KILN_CUDA_TRY(ctx, kiln_cuda_ew_launch(stream, op, in, &out, p));
    return KILN_OK;
}

kiln_status kiln_cuew_run(kiln_ctx *ctx, int op, const kiln_tensor *const *ts, const kiln_ew_params *p) {
    kiln_ew_operand in[KILN_EW_MAX_IN];
    const int n = kiln_cuda_ew_arity(op);
    for (int k = 0; k < n; k++) {
        if (!ts[k]) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input %d", k);
        in[k] = kiln_cuew_operand(ts[k]);
    }
    return kiln_cuew_launch(ctx, op, in, kiln_output(ctx, 0), p);
}

kiln_status kiln_cuew_copy(kiln_ctx *ctx, kiln_tensor *y, const kiln_tensor *x) {
    if (!y || kiln_numel(y) == 0 || y->data == x->data) return KILN_OK;
    KILN_CUDA_TRY(ctx, kiln_cuda_d2d(kiln_cuda_of(ctx), y->data, x->data, kiln_tensor_nbytes(y)));
    return KILN_OK;
}

/* ---------------------------------------------------------------- supports helpers ---- */

static const char *dtype_name(int dt) {
    const char *s = dt > 0 ? kiln_dtype_name((kiln_dtype)dt) : NULL;
    return s ? s : "unknown";
}

int kiln_cuew_in_dtype(const kiln_graph_value *const *in, int n_in, int i, int *dt, char *why, size_t cap) {
    if (i >= n_in || !in[i]) {
        snprintf(why, cap, "input %d is absent", i);
        return 0;
    }
    *dt = kiln_cuda_in_dtype(in, i);
    if (!*dt) {
        snprintf(why, cap, "the element type of input %d is not known before running", i);
        return 0;
    }
    return 1;
}

int kiln_cuew_have_kernel(const kiln_node *n, int op, const int *dts, int out_dt, char *why, size_t cap) {
    if (kiln_cuda_ew_supported(op, dts, out_dt)) return 1;
    const int arity = kiln_cuda_ew_arity(op);
    char types[96] = "";
    for (int k = 0, len = 0; k < arity && len < (int)sizeof types; k++)
        len += snprintf(types + len, sizeof types - len, "%s%s", k ? ", " : "", dtype_name(dts[k]));
    snprintf(why, cap, "the CUDA %s kernel has no form for element types (%s) -> %s", n->op_type, types,
             dtype_name(out_dt));
    return 0;
}

int kiln_cuew_rank_fits(const kiln_graph_value *const *out, char *why, size_t cap) {
    const kiln_graph_value *y = out[0];
    if (y && y->has_type && y->type.rank > KILN_EW_MAX_RANK) {
        snprintf(why, cap, "the output has rank %d; the CUDA broadcast kernels take at most %d axes",
                 y->type.rank, KILN_EW_MAX_RANK);
        return 0;
    }
    return 1;
}

int kiln_cuew_same_dtype(const kiln_node *n, const kiln_graph_value *const *in, int dt, char *why, size_t cap) {
    for (int i = 0; i < n->n_in; i++) {
        if (!in[i]) continue;
        int d = 0;
        if (!kiln_cuew_in_dtype(in, n->n_in, i, &d, why, cap)) return 0;
        if (d != dt) {
            snprintf(why, cap, "input %d has element type %s, input 0 has %s", i, dtype_name(d),
                     dtype_name(dt));
            return 0;
        }
    }
    return 1;
}

/* ---------------------------------------------------------------- the table ---- */

#define K(domain, name, since, fn)                                                                 \
    {domain, name, since, 0, kiln_cuew_##fn##_supports, NULL, NULL, kiln_cuew_##fn##_compute}
#define MS "com.microsoft"

const kiln_kernel kiln_cuda_kernels_elementwise[] = {
    /* binary arithmetic, numpy broadcasting (legacy broadcast=1/axis before opset 7) */
    K("", "Add", 1, add),
    K("", "Sub", 1, sub),
    K("", "Mul", 1, mul),
    K("", "Div", 1, div),
    K("", "Mod", 10, mod),
    K("", "Pow", 1, pow),
    /* variadic */
    K("", "Max", 1, max),
    K("", "Min", 1, min),
    K("", "Sum", 1, sum),
    K("", "Mean", 1, mean),
    /* comparisons and logic */
    K("", "Equal", 1, equal),
    K("", "Less", 1, less),
    K("", "LessOrEqual", 12, less_equal),
    K("", "Greater", 1, greater),
    K("", "GreaterOrEqual", 12, greater_equal),
    K("", "And", 1, and),
    K("", "Or", 1, or),
    K("", "Xor", 1, xor),
    K("", "Not", 1, not),
    K("", "Where", 9, where),
    /* unary math */
    K("", "Abs", 1, abs),
    K("", "Neg", 1, neg),
    K("", "Sign", 9, sign),
    K("", "Exp", 1, exp),
    K("", "Log", 1, log),
    K("", "Sqrt", 1, sqrt),
    K("", "Reciprocal", 1, reciprocal),
    K("", "Sin", 7, sin),
    K("", "Cos", 7, cos),
    K("", "Floor", 1, floor),
    K("", "Ceil", 1, ceil),
    K("", "Round", 11, round),
    K("", "Erf", 9, erf),
    K("", "IsNaN", 9, isnan),
    K("", "IsInf", 10, isinf),
    /* activations */
    K("", "Relu", 1, relu),
    K("", "Sigmoid", 1, sigmoid),
    K("", "Tanh", 1, tanh),
    K("", "LeakyRelu", 1, leaky_relu),
    K("", "Elu", 1, elu),
    K("", "Selu", 1, selu),
    K("", "Softplus", 1, softplus),
    K("", "HardSigmoid", 1, hard_sigmoid),
    K("", "HardSwish", 14, hard_swish),
    K("", "Mish", 18, mish),
    K("", "Gelu", 20, gelu),
    K("", "Clip", 1, clip),
    /* type conversion */
    K("", "Cast", 1, cast),
    K("", "CastLike", 15, cast_like),
    /* com.microsoft */
    K(MS, "Gelu", 1, ms_gelu),
    K(MS, "FastGelu", 1, fast_gelu),
    K(MS, "BiasGelu", 1, bias_gelu),
    K(MS, "QuickGelu", 1, quick_gelu),
    K(MS, "BiasAdd", 1, bias_add),
    {0},
};
