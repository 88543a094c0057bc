/* CUDA element-wise ops of two or more inputs: Add Sub Mul Div Mod Pow, variadic Max Min Sum Mean,
 * the comparisons, And Or Xor, Where, and com.microsoft BiasGelu FastGelu BiasAdd. */
#include "elementwise_internal.h"

#include <stdio.h>
#include <string.h>

/* ---------------------------------------------------------------- shared ---- */

/* Before opset 7 the two-input ops broadcast only with broadcast=1, and then B lines up with A's
 * axes from `axis` on (default: A's trailing axes); view is B re-shaped so that numpy
 * broadcasting means that. The CPU op's infer has validated the attributes. */
static void legacy_view(const kiln_ctx *ctx, const kiln_tensor *a, const kiln_tensor *b, kiln_tensor *view) {
    *view = *b;
    if (ctx->opset >= 7 || !kiln_attr_int(ctx->node, "broadcast", 0)) return;
    int64_t axis = kiln_has_attr(ctx->node, "axis") ? kiln_attr_int(ctx->node, "axis", 0) : a->rank - b->rank;
    if (axis < 0) axis += a->rank;
    if (axis < 0 || axis + b->rank > a->rank) return;
    view->rank = a->rank;
    for (int i = 0; i < a->rank; i++) view->dims[i] = 1;
    for (int i = 0; i < b->rank; i++) view->dims[axis + i] = b->dims[i];
}

static kiln_status binary_compute(kiln_ctx *ctx, int op, const kiln_ew_params *p) {
    kiln_tensor *a = kiln_input(ctx, 0), *b = kiln_input(ctx, 1), bv;
    if (!a || !b) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input %d", a ? 1 : 0);
    legacy_view(ctx, a, b, &bv);
    const kiln_tensor *ts[2] = {a, &bv};
    return kiln_cuew_run(ctx, op, ts, p);
}

static int binary_supports(const kiln_node *n, const kiln_graph_value *const *in,
                           const kiln_graph_value *const *out, char *why, size_t cap, int op, int out_bool) {
    int dts[KILN_EW_MAX_IN] = {0, 0, 0};
    if (!kiln_cuew_in_dtype(in, n->n_in, 0, &dts[0], why, cap)) return 0;
    if (!kiln_cuew_in_dtype(in, n->n_in, 1, &dts[1], why, cap)) return 0;
    if (!kiln_cuew_rank_fits(out, why, cap)) return 0;
    return kiln_cuew_have_kernel(n, op, dts, out_bool ? KILN_DTYPE_BOOL : dts[0], why, cap);
}

/* A constant integer divisor holding a zero: the CPU kernel reports "integer division by zero",
 * which a CUDA kernel cannot without a sync, so such nodes stay on the CPU. */
static int const_int_has_zero(const kiln_graph_value *v) {
    if (!v || !v->is_const || v->konst.kind != KILN_KIND_TENSOR || !v->konst.t.data) return 0;
    const kiln_tensor *t = &v->konst.t;
    const int64_t n = kiln_numel(t);
    for (int64_t i = 0; i < n; i++) {
        if (t->dtype == KILN_DTYPE_INT32 && ((const int32_t *)t->data)[i] == 0) return 1;
        if (t->dtype == KILN_DTYPE_INT64 && ((const int64_t *)t->data)[i] == 0) return 1;
    }
    return 0;
}

static int divisor_ok(const kiln_node *n, const kiln_graph_value *const *in, char *why, size_t cap) {
    if (n->n_in > 1 && const_int_has_zero(in[1])) {
        snprintf(why, cap, "the constant integer divisor holds a zero (the CPU kernel reports it)");
        return 0;
    }
    return 1;
}

#define BINARY_OP(name, OP, OUT_BOOL)                                                              \
    int kiln_cuew_##name##_supports(const kiln_node *n, const kiln_graph_value *const *in,         \
                                    const kiln_graph_value *const *out, char *why, size_t cap) {   \
        return binary_supports(n, in, out, why, cap, OP, OUT_BOOL);                                \
    }                                                                                              \
    kiln_status kiln_cuew_##name##_compute(kiln_ctx *ctx) { return binary_compute(ctx, OP, NULL); }

BINARY_OP(add, KILN_EW_ADD, 0)
BINARY_OP(sub, KILN_EW_SUB, 0)
BINARY_OP(mul, KILN_EW_MUL, 0)
BINARY_OP(pow, KILN_EW_POW, 0)
BINARY_OP(equal, KILN_EW_EQUAL, 1)
BINARY_OP(less, KILN_EW_LESS, 1)
BINARY_OP(less_equal, KILN_EW_LESS_EQUAL, 1)
BINARY_OP(greater, KILN_EW_GREATER, 1)
BINARY_OP(greater_equal, KILN_EW_GREATER_EQUAL, 1)
BINARY_OP(and, KILN_EW_AND, 1)
BINARY_OP(or, KILN_EW_OR, 1)
BINARY_OP(xor, KILN_EW_XOR, 1)
BINARY_OP(bias_gelu, KILN_EW_BIAS_GELU, 0)

/* ---------------------------------------------------------------- Div, Mod ---- */

int kiln_cuew_div_supports(const kiln_node *n, const kiln_graph_value *const *in,
                           const kiln_graph_value *const *out, char *why, size_t cap) {
    return binary_supports(n, in, out, why, cap, KILN_EW_DIV, 0) && divisor_ok(n, in, why, cap);
}
kiln_status kiln_cuew_div_compute(kiln_ctx *ctx) { return binary_compute(ctx, KILN_EW_DIV, NULL); }

int kiln_cuew_mod_supports(const kiln_node *n, const kiln_graph_value *const *in,
                           const kiln_graph_value *const *out, char *why, size_t cap) {
    if (!binary_supports(n, in, out, why, cap, KILN_EW_MOD, 0) || !divisor_ok(n, in, why, cap)) return 0;
    const int64_t fm = kiln_attr_int(n, "fmod", 0);
    const int dt = kiln_cuda_in_dtype(in, 0);
    if ((fm != 0 && fm != 1) || (!fm && kiln_cuda_float_type(dt))) {
        snprintf(why, cap, "fmod=%lld is not valid for element type %s", (long long)fm,
                 kiln_dtype_name((kiln_dtype)dt));
        return 0;
    }
    return 1;
}
kiln_status kiln_cuew_mod_compute(kiln_ctx *ctx) {
    kiln_ew_params p = {0, 0, 0, kiln_attr_int(ctx->node, "fmod", 0) != 0};
    return binary_compute(ctx, KILN_EW_MOD, &p);
}

/* ---------------------------------------------------------------- variadic ---- */

/* y = in0 op in1, then y = y op in_k for the rest; Mean's last step also divides by the count.
 * A single input is copied. */
static kiln_status variadic_compute(kiln_ctx *ctx, int op, int mean) {
    kiln_tensor *y = kiln_output(ctx, 0), *x0 = kiln_input(ctx, 0);
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    if (!x0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input 0");
    const int n = ctx->n_in;
    if (n == 1) return kiln_cuew_copy(ctx, y, x0);
    kiln_ew_params p = {0, 0, 0, 0};
    for (int k = 1; k < n; k++) {
        kiln_tensor *xk = kiln_input(ctx, k);
        if (!xk) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input %d", k);
        kiln_ew_operand in[2] = {kiln_cuew_operand(k == 1 ? x0 : y), kiln_cuew_operand(xk)};
        int step = op;
        if (mean && k == n - 1) {
            step = KILN_EW_MEAN_LAST;
            p.alpha = (float)n;
        }
        KILN_TRY(kiln_cuew_launch(ctx, step, in, y, &p));
    }
    return KILN_OK;
}

static int variadic_supports(const kiln_node *n, const kiln_graph_value *const *in,
                             const kiln_graph_value *const *out, char *why, size_t cap, int op, int mean) {
    int dt = 0;
    if (n->n_in < 1) {
        snprintf(why, cap, "the node has no inputs");
        return 0;
    }
    if (!kiln_cuew_in_dtype(in, n->n_in, 0, &dt, why, cap)) return 0;
    if (!kiln_cuew_same_dtype(n, in, dt, why, cap) || !kiln_cuew_rank_fits(out, why, cap)) return 0;
    const int dts[KILN_EW_MAX_IN] = {dt, dt, 0};
    if (!kiln_cuew_have_kernel(n, op, dts, dt, why, cap)) return 0;
    return !mean || kiln_cuew_have_kernel(n, KILN_EW_MEAN_LAST, dts, dt, why, cap);
}

#define VARIADIC_OP(name, OP, MEAN)                                                                \
    int kiln_cuew_##name##_supports(const kiln_node *n, const kiln_graph_value *const *in,         \
                                    const kiln_graph_value *const *out, char *why, size_t cap) {   \
        return variadic_supports(n, in, out, why, cap, OP, MEAN);                                  \
    }                                                                                              \
    kiln_status kiln_cuew_##name##_compute(kiln_ctx *ctx) { return variadic_compute(ctx, OP, MEAN); }

VARIADIC_OP(max, KILN_EW_MAX, 0)
VARIADIC_OP(min, KILN_EW_MIN, 0)
VARIADIC_OP(sum, KILN_EW_ADD, 0)
VARIADIC_OP(mean, KILN_EW_ADD, 1)

/* ---------------------------------------------------------------- three inputs ---- */

static int ternary_supports(const kiln_node *n, const kiln_graph_value *const *in,
                            const kiln_graph_value *const *out, char *why, size_t cap, int op, int out_in) {
    int dts[KILN_EW_MAX_IN];
    for (int k = 0; k < KILN_EW_MAX_IN; k++)
        if (!kiln_cuew_in_dtype(in, n->n_in, k, &dts[k], why, cap)) return 0;
    if (!kiln_cuew_rank_fits(out, why, cap)) return 0;
    return kiln_cuew_have_kernel(n, op, dts, dts[out_in], why, cap);
}

static kiln_status ternary_compute(kiln_ctx *ctx, int op) {
    const kiln_tensor *ts[3] = {kiln_input(ctx, 0), kiln_input(ctx, 1), kiln_input(ctx, 2)};
    return kiln_cuew_run(ctx, op, ts, NULL);
}

/* Where(cond, X, Y): X and Y of any element type of 1, 2, 4 or 8 bytes */
int kiln_cuew_where_supports(const kiln_node *n, const kiln_graph_value *const *in,
                             const kiln_graph_value *const *out, char *why, size_t cap) {
    return ternary_supports(n, in, out, why, cap, KILN_EW_WHERE, 1);
}
kiln_status kiln_cuew_where_compute(kiln_ctx *ctx) { return ternary_compute(ctx, KILN_EW_WHERE); }

/* com.microsoft BiasAdd(X, bias, skip) = X + bias + skip */
int kiln_cuew_bias_add_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                const kiln_graph_value *const *out, char *why, size_t cap) {
    return ternary_supports(n, in, out, why, cap, KILN_EW_BIAS_ADD, 0);
}
kiln_status kiln_cuew_bias_add_compute(kiln_ctx *ctx) { return ternary_compute(ctx, KILN_EW_BIAS_ADD); }

/* ---------------------------------------------------------------- FastGelu ---- */

/* com.microsoft FastGelu(X, bias?): the tanh Gelu of X (+ bias over the last axis) */
int kiln_cuew_fast_gelu_supports(const kiln_node *n, const kiln_graph_value *const *in,
                                 const kiln_graph_value *const *out, char *why, size_t cap) {
    if (n->n_in > 1 && in[1]) return binary_supports(n, in, out, why, cap, KILN_EW_FAST_GELU_BIAS, 0);
    int dts[KILN_EW_MAX_IN] = {0, 0, 0};
    if (!kiln_cuew_in_dtype(in, n->n_in, 0, &dts[0], why, cap)) return 0;
    return kiln_cuew_have_kernel(n, KILN_EW_FAST_GELU, dts, dts[0], why, cap);
}
kiln_status kiln_cuew_fast_gelu_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *bias = kiln_input(ctx, 1);
    if (bias) {
        const kiln_tensor *ts[2] = {x, bias};
        return kiln_cuew_run(ctx, KILN_EW_FAST_GELU_BIAS, ts, NULL);
    }
    const kiln_tensor *ts[1] = {x};
    return kiln_cuew_run(ctx, KILN_EW_FAST_GELU, ts, NULL);
}
