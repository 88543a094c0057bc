/* Gradient rules, one per op: given the gradients of a node's outputs, the nodes that compute
 * the gradients of its inputs. Broadcasting ops un-broadcast with kiln:SumTo (sums the gradient
 * down to the input's run-time shape), so that no rule depends on shapes known statically. */
#include "autodiff.h"
#include "../core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define OOM kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory")
#define CHECK(v) do { if ((v) < 0) return a->e->code ? a->e->code : OOM; } while (0)

static kiln_attr *attrs_new(kiln_ad *a, int n) {
    kiln_attr *at = calloc((size_t)(n ? n : 1), sizeof *at);
    if (!at) OOM;
    return at;
}

static int op1(kiln_ad *a, const char *op, int x) { return kiln_ad_op1(a, "", op, &x, 1, NULL, 0); }

static int op2(kiln_ad *a, const char *op, int x, int y) {
    int ins[2] = {x, y};
    return kiln_ad_op1(a, "", op, ins, 2, NULL, 0);
}

static int fwd_in(const kiln_node *n, int i) { return i < n->n_in ? n->in[i] : -1; }

/* grad summed down to ref's shape (scaled), unless the forward shapes say it already has it */
static int sum_to(kiln_ad *a, int grad, int ref, int fwd_out, double scale) {
    if (scale == 1.0 && fwd_out >= 0 && opt_same_shape(opt_fact(&a->oc, ref), opt_fact(&a->oc, fwd_out)))
        return grad;
    kiln_attr *at = NULL;
    int na = 0;
    if (scale != 1.0) {
        if (!(at = attrs_new(a, 1)) || !kiln_ad_attr_float(&at[0], "scale", (float)scale)) {
            free(at);
            return OOM, -1;
        }
        na = 1;
    }
    int ins[2] = {grad, ref};
    return kiln_ad_op1(a, "kiln", "SumTo", ins, 2, at, na);
}

/* kiln:UnaryGrad(dY, T) with kind (and alpha, beta) */
static int unary_grad2(kiln_ad *a, int dy, int t, const char *kind, double alpha, double beta) {
    kiln_attr *at = attrs_new(a, 3);
    if (!at || !kiln_ad_attr_string(&at[0], "kind", kind) || !kiln_ad_attr_float(&at[1], "alpha", (float)alpha) ||
        !kiln_ad_attr_float(&at[2], "beta", (float)beta)) {
        if (at) for (int k = 0; k < 3; k++) kiln_attr_free(&at[k]);
        free(at);
        return OOM, -1;
    }
    int ins[2] = {dy, t};
    return kiln_ad_op1(a, "kiln", "UnaryGrad", ins, 2, at, 3);
}

static int unary_grad(kiln_ad *a, int dy, int t, const char *kind, double alpha) {
    return unary_grad2(a, dy, t, kind, alpha, 0.0);
}

/* ---------------------------------------------------------------- elementwise */

static kiln_status g_add_sub(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    int sub = !strcmp(n->op_type, "Sub");
    for (int i = 0; i < 2; i++) {
        if (!need[i]) continue;
        int gi = dy[0];
        if (sub && i == 1) CHECK(gi = op1(a, "Neg", gi));
        CHECK(dx[i] = sum_to(a, gi, n->in[i], n->out[0], 1.0));
    }
    return KILN_OK;
}

static kiln_status g_sum(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    for (int i = 0; i < n->n_in; i++)
        if (need[i]) CHECK(dx[i] = sum_to(a, dy[0], n->in[i], n->out[0], 1.0));
    return KILN_OK;
}

static kiln_status g_mul(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    for (int i = 0; i < 2; i++) {
        if (!need[i]) continue;
        int p = op2(a, "Mul", dy[0], n->in[1 - i]);
        CHECK(p);
        CHECK(dx[i] = sum_to(a, p, n->in[i], n->out[0], 1.0));
    }
    return KILN_OK;
}

static kiln_status g_div(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    int q = op2(a, "Div", dy[0], n->in[1]); /* dY / B */
    CHECK(q);
    if (need[0]) CHECK(dx[0] = sum_to(a, q, n->in[0], n->out[0], 1.0));
    if (need[1]) {
        /* d(A/B)/dB = -Y/B */
        int p = op2(a, "Mul", q, n->out[0]);
        CHECK(p);
        CHECK(p = op1(a, "Neg", p));
        CHECK(dx[1] = sum_to(a, p, n->in[1], n->out[0], 1.0));
    }
    return KILN_OK;
}

static kiln_status g_neg(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    (void)n;
    if (need[0]) CHECK(dx[0] = op1(a, "Neg", dy[0]));
    return KILN_OK;
}

static kiln_status g_identity(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    (void)a;
    (void)n;
    if (need[0]) dx[0] = dy[0];
    return KILN_OK;
}

/* Dropout as exported for inference (no training_mode, or a constant false one) is the identity;
 * a training-mode Dropout's random mask is not differentiated. */
static kiln_status g_dropout(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    int tm = fwd_in(n, 2);
    if (tm >= 0) {
        const kiln_graph_value *gv = &a->g->values[tm];
        const kiln_tensor *t = gv->is_const && gv->konst.kind == KILN_KIND_TENSOR ? &gv->konst.t : NULL;
        if (!t || t->dtype != KILN_DTYPE_BOOL || kiln_numel(t) != 1 || *(const unsigned char *)t->data)
            return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for Dropout in training mode (export the "
                             "model in eval mode)");
    }
    if (n->opset < 12 && kiln_attr_int(n, "is_test", 1) == 0 && n->opset < 7)
        return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for Dropout in training mode");
    return g_identity(a, n, dy, need, dx);
}

static kiln_status g_exp(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (need[0]) CHECK(dx[0] = op2(a, "Mul", dy[0], n->out[0]));
    return KILN_OK;
}

static kiln_status g_log(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (need[0]) CHECK(dx[0] = op2(a, "Div", dy[0], n->in[0]));
    return KILN_OK;
}

/* Unary ops whose gradient kiln:UnaryGrad computes from the input (x) or the output (y). */
static const struct { const char *domain, *op, *kind; int from_output; } unary_table[] = {
    {"", "Relu", "relu", 1},       {"", "Sigmoid", "sigmoid", 1}, {"", "Tanh", "tanh", 1},
    {"", "Sqrt", "sqrt", 1},       {"", "Erf", "erf", 0},         {"", "Abs", "abs", 0},
    {"", "Softplus", "softplus", 0}, {"", "LeakyRelu", "leakyrelu", 0}, {"", "Gelu", "gelu", 0},
    {"com.microsoft", "Gelu", "gelu", 0}, {"", "Reciprocal", "reciprocal", 1},
    {"", "HardSigmoid", "hardsigmoid", 0}, {"", "HardSwish", "hardswish", 0}, {"", "Sin", "sin", 0},
    {"", "Cos", "cos", 0}, {"", "Elu", "elu", 0},
    {NULL, NULL, NULL, 0}};

static kiln_status g_unary(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    for (int i = 0; unary_table[i].op; i++) {
        if (strcmp(unary_table[i].op, n->op_type) || strcmp(unary_table[i].domain, n->domain)) continue;
        const char *kind = unary_table[i].kind;
        double alpha = 0, beta = 0;
        if (!strcmp(kind, "leakyrelu")) alpha = kiln_attr_float(n, "alpha", 0.01f);
        if (!strcmp(kind, "elu")) alpha = kiln_attr_float(n, "alpha", 1.0f);
        if (!strcmp(kind, "hardsigmoid")) {
            alpha = kiln_attr_float(n, "alpha", 0.2f);
            beta = kiln_attr_float(n, "beta", 0.5f);
        }
        if (!strcmp(kind, "gelu") && !strcmp(kiln_attr_string(n, "approximate", "none"), "tanh")) kind = "gelu_tanh";
        CHECK(dx[0] = unary_grad2(a, dy[0], unary_table[i].from_output ? n->out[0] : n->in[0], kind, alpha, beta));
        return KILN_OK;
    }
    return KILN_ERR_NOT_IMPLEMENTED;
}

static kiln_status g_pow(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (need[1])
        return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for the exponent (only a constant exponent "
                         "is differentiated)");
    if (need[0]) {
        int ins[3] = {dy[0], n->in[0], n->in[1]};
        CHECK(dx[0] = kiln_ad_op1(a, "kiln", "PowGrad", ins, 3, NULL, 0));
    }
    return KILN_OK;
}

static kiln_status g_cast(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    int from = kiln_ad_dtype(a, n->in[0]), to = (int)kiln_attr_int(n, "to", 0);
    if (from == to) {
        dx[0] = dy[0];
        return KILN_OK;
    }
    if (!kiln_dtype_is_float(from) || !kiln_dtype_is_float(to))
        return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient through a cast from %s to %s",
                         from ? kiln_dtype_name(from) : "an unknown type", kiln_dtype_name(to));
    kiln_attr *at = attrs_new(a, 1);
    if (!at || !kiln_ad_attr_int(&at[0], "to", from)) {
        free(at);
        return OOM;
    }
    CHECK(dx[0] = kiln_ad_op1(a, "", "Cast", dy, 1, at, 1));
    return KILN_OK;
}

static kiln_status g_where(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (need[0]) return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for the condition");
    int dt = kiln_ad_dtype(a, n->out[0]);
    int zero = kiln_ad_scalar(a, dt, 0.0);
    CHECK(zero);
    for (int i = 1; i <= 2; i++) {
        if (!need[i]) continue;
        int ins[3] = {n->in[0], i == 1 ? dy[0] : zero, i == 1 ? zero : dy[0]};
        int w = kiln_ad_op1(a, "", "Where", ins, 3, NULL, 0);
        CHECK(w);
        CHECK(dx[i] = sum_to(a, w, n->in[i], n->out[0], 1.0));
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- products */

static kiln_status g_matmul(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    int ins[3] = {dy[0], n->in[0], n->in[1]}, outs[2] = {need[0] ? -2 : -1, need[1] ? -2 : -1};
    if (kiln_ad_node(a, "kiln", "MatMulGrad", ins, 3, outs, 2, NULL, 0) < 0) return a->e->code;
    dx[0] = outs[0];
    dx[1] = outs[1];
    return KILN_OK;
}

static int gemm(kiln_ad *a, int x, int y, int ta, int tb, double alpha) {
    kiln_attr *at = attrs_new(a, 3);
    if (!at || !kiln_ad_attr_int(&at[0], "transA", ta) || !kiln_ad_attr_int(&at[1], "transB", tb) ||
        !kiln_ad_attr_float(&at[2], "alpha", (float)alpha)) {
        if (at) for (int k = 0; k < 3; k++) kiln_attr_free(&at[k]);
        free(at);
        return OOM, -1;
    }
    int ins[2] = {x, y};
    return kiln_ad_op1(a, "", "Gemm", ins, 2, at, 3);
}

/* Y = alpha op(A) op(B) + beta C */
static kiln_status g_gemm(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    int ta = (int)kiln_attr_int(n, "transA", 0), tb = (int)kiln_attr_int(n, "transB", 0);
    double alpha = kiln_attr_float(n, "alpha", 1.0f), beta = kiln_attr_float(n, "beta", 1.0f);
    int A = n->in[0], B = n->in[1];
    if (need[0]) CHECK(dx[0] = ta ? gemm(a, B, dy[0], tb, 1, alpha) : gemm(a, dy[0], B, 0, !tb, alpha));
    if (need[1]) CHECK(dx[1] = tb ? gemm(a, dy[0], A, 1, ta, alpha) : gemm(a, A, dy[0], !ta, 0, alpha));
    if (n->n_in > 2 && need[2]) CHECK(dx[2] = sum_to(a, dy[0], n->in[2], n->out[0], beta));
    return KILN_OK;
}

/* ---------------------------------------------------------------- shapes */

static kiln_status g_reshape_like(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    int s = op1(a, "Shape", n->in[0]);
    CHECK(s);
    CHECK(dx[0] = op2(a, "Reshape", dy[0], s));
    return KILN_OK;
}

static kiln_status g_transpose(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    int cnt = 0;
    const int64_t *perm = kiln_attr_ints(n, "perm", &cnt);
    kiln_attr *at = NULL;
    if (perm) {
        int64_t inv[KILN_MAX_RANK];
        if (cnt > KILN_MAX_RANK) return kiln_fail(a->e, KILN_ERR_INVALID_MODEL, "perm has %d entries", cnt);
        for (int k = 0; k < cnt; k++) {
            if (perm[k] < 0 || perm[k] >= cnt) return kiln_fail(a->e, KILN_ERR_INVALID_MODEL, "bad perm");
            inv[perm[k]] = k;
        }
        if (!(at = attrs_new(a, 1)) || !kiln_ad_attr_ints(&at[0], "perm", inv, cnt)) {
            free(at);
            return OOM;
        }
    }
    /* no perm: the reversal, its own inverse */
    CHECK(dx[0] = kiln_ad_op1(a, "", "Transpose", dy, 1, at, at ? 1 : 0));
    return KILN_OK;
}

static kiln_status g_concat(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    int ins[65], outs[64];
    ins[0] = dy[0];
    for (int k = 0; k < n->n_in; k++) {
        ins[k + 1] = n->in[k];
        outs[k] = need[k] ? -2 : -1;
    }
    kiln_attr *at = attrs_new(a, 1);
    if (!at || !kiln_ad_attr_int(&at[0], "axis", kiln_attr_int(n, "axis", 0))) {
        free(at);
        return OOM;
    }
    if (kiln_ad_node(a, "kiln", "ConcatGrad", ins, n->n_in + 1, outs, n->n_in, at, 1) < 0) return a->e->code;
    for (int k = 0; k < n->n_in; k++) dx[k] = outs[k];
    return KILN_OK;
}

static kiln_status g_slice(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    if (n->opset < 10 || n->n_in < 3)
        return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for Slice before opset 10 (attribute form)");
    int ins[6] = {dy[0], n->in[0], n->in[1], n->in[2], fwd_in(n, 3), fwd_in(n, 4)};
    CHECK(dx[0] = kiln_ad_op1(a, "kiln", "SliceGrad", ins, 6, NULL, 0));
    return KILN_OK;
}

static kiln_status g_gather(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    kiln_attr *at = attrs_new(a, 1);
    if (!at || !kiln_ad_attr_int(&at[0], "axis", kiln_attr_int(n, "axis", 0))) {
        free(at);
        return OOM;
    }
    int ins[3] = {dy[0], n->in[1], n->in[0]};
    CHECK(dx[0] = kiln_ad_op1(a, "kiln", "GatherGrad", ins, 3, at, 1));
    return KILN_OK;
}

static kiln_status g_expand(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (need[0]) CHECK(dx[0] = sum_to(a, dy[0], n->in[0], n->out[0], 1.0));
    return KILN_OK;
}

/* ---------------------------------------------------------------- reductions, normalisation */

/* kiln:ReduceGrad: g (shaped as the reduction's output) spread back over X's shape (/ count) */
static int spread(kiln_ad *a, const kiln_node *n, int g, int mean, int from_axis) {
    kiln_attr *at = NULL;
    int na = 0;
    if (kiln_ad_copy_attrs(a, n, 2, &at, &na)) return -1;
    if (!kiln_ad_attr_int(&at[na++], "mean", mean) || !kiln_ad_attr_int(&at[na++], "from_axis", from_axis)) {
        for (int k = 0; k < na; k++) kiln_attr_free(&at[k]);
        free(at);
        return OOM, -1;
    }
    int ins[3] = {g, n->in[0], fwd_in(n, 1)};
    return kiln_ad_op1(a, "kiln", "ReduceGrad", ins, ins[2] >= 0 ? 3 : 2, at, na);
}

static kiln_status reduce_grad(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx,
                               int mean, int from_axis) {
    if (need[0]) CHECK(dx[0] = spread(a, n, dy[0], mean, from_axis));
    return KILN_OK;
}

/* the gradient goes where x equals the selected value (every tied element gets all of it) */
static int where_equal(kiln_ad *a, int x, int sel, int g, int dt) {
    int eq = op2(a, "Equal", x, sel), zero = eq < 0 ? -1 : kiln_ad_scalar(a, dt, 0.0);
    if (zero < 0) return -1;
    int ins[3] = {eq, g, zero};
    return kiln_ad_op1(a, "", "Where", ins, 3, NULL, 0);
}

static kiln_status g_reduce_extreme(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    if (a->opset < 11) return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient before opset 11 (float Equal)");
    int yb = spread(a, n, n->out[0], 0, -1), gb = yb < 0 ? -1 : spread(a, n, dy[0], 0, -1);
    CHECK(gb);
    CHECK(dx[0] = where_equal(a, n->in[0], yb, gb, kiln_ad_dtype(a, n->out[0])));
    return KILN_OK;
}

static kiln_status g_min_max(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (a->opset < 11) return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient before opset 11 (float Equal)");
    for (int i = 0; i < n->n_in; i++) {
        if (!need[i]) continue;
        int w = where_equal(a, n->in[i], n->out[0], dy[0], kiln_ad_dtype(a, n->out[0]));
        CHECK(w);
        CHECK(dx[i] = sum_to(a, w, n->in[i], -1, 1.0));
    }
    return KILN_OK;
}

static kiln_status g_reduce_mean(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    return reduce_grad(a, n, dy, need, dx, 1, -1);
}

static kiln_status g_reduce_sum(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    return reduce_grad(a, n, dy, need, dx, 0, -1);
}

static kiln_status g_global_avg(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    return reduce_grad(a, n, dy, need, dx, 1, 2);
}

static kiln_status g_softmax(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    int legacy = n->opset < 13;
    kiln_attr *at = attrs_new(a, 3);
    if (!at || !kiln_ad_attr_int(&at[0], "axis", kiln_attr_int(n, "axis", legacy ? 1 : -1)) ||
        !kiln_ad_attr_int(&at[1], "log", !strcmp(n->op_type, "LogSoftmax")) ||
        !kiln_ad_attr_int(&at[2], "legacy", legacy)) {
        if (at) for (int k = 0; k < 3; k++) kiln_attr_free(&at[k]);
        free(at);
        return OOM;
    }
    int ins[2] = {dy[0], n->out[0]};
    CHECK(dx[0] = kiln_ad_op1(a, "kiln", "SoftmaxGrad", ins, 2, at, 3));
    return KILN_OK;
}

static kiln_status g_layernorm(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (n->n_out > 1)
        for (int k = 1; k < n->n_out; k++)
            if (dy[k] >= 0)
                return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient through the Mean / InvStdDev outputs");
    if (dy[0] < 0) return KILN_OK;
    kiln_attr *at = attrs_new(a, 2);
    if (!at || !kiln_ad_attr_int(&at[0], "axis", kiln_attr_int(n, "axis", -1)) ||
        !kiln_ad_attr_float(&at[1], "epsilon", kiln_attr_float(n, "epsilon", 1e-5f))) {
        if (at) for (int k = 0; k < 2; k++) kiln_attr_free(&at[k]);
        free(at);
        return OOM;
    }
    int ins[3] = {dy[0], n->in[0], n->in[1]};
    int outs[3] = {need[0] ? -2 : -1, need[1] ? -2 : -1, n->n_in > 2 && need[2] ? -2 : -1};
    if (kiln_ad_node(a, "kiln", "LayerNormGrad", ins, 3, outs, 3, at, 2) < 0) return a->e->code;
    for (int k = 0; k < 3 && k < n->n_in; k++) dx[k] = outs[k];
    return KILN_OK;
}

static kiln_status g_instancenorm(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    kiln_attr *at = attrs_new(a, 1);
    if (!at || !kiln_ad_attr_float(&at[0], "epsilon", kiln_attr_float(n, "epsilon", 1e-5f))) {
        free(at);
        return OOM;
    }
    int ins[3] = {dy[0], n->in[0], n->in[1]}, outs[3] = {need[0] ? -2 : -1, need[1] ? -2 : -1, need[2] ? -2 : -1};
    if (kiln_ad_node(a, "kiln", "InstanceNormGrad", ins, 3, outs, 3, at, 1) < 0) return a->e->code;
    for (int k = 0; k < 3; k++) dx[k] = outs[k];
    return KILN_OK;
}

static kiln_status g_batchnorm(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (kiln_attr_int(n, "training_mode", 0))
        return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "training-mode BatchNormalization (batch statistics) is "
                         "not differentiated; export the model in eval mode");
    if (need[3] || need[4])
        return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for the running mean or variance");
    if (dy[0] < 0) return KILN_OK;
    kiln_attr *at = attrs_new(a, 1);
    if (!at || !kiln_ad_attr_float(&at[0], "epsilon", kiln_attr_float(n, "epsilon", 1e-5f))) {
        free(at);
        return OOM;
    }
    int ins[5] = {dy[0], n->in[0], n->in[1], n->in[3], n->in[4]};
    int outs[3] = {need[0] ? -2 : -1, need[1] ? -2 : -1, need[2] ? -2 : -1};
    if (kiln_ad_node(a, "kiln", "BatchNormGrad", ins, 5, outs, 3, at, 1) < 0) return a->e->code;
    for (int k = 0; k < 3; k++) dx[k] = outs[k];
    return KILN_OK;
}

/* ---------------------------------------------------------------- convolution, pooling */

static kiln_status g_conv(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    kiln_attr *at = NULL;
    int na = 0;
    KILN_TRY(kiln_ad_copy_attrs(a, n, 0, &at, &na));
    int ins[3] = {dy[0], n->in[0], n->in[1]};
    int outs[3] = {need[0] ? -2 : -1, need[1] ? -2 : -1, n->n_in > 2 && need[2] ? -2 : -1};
    if (kiln_ad_node(a, "kiln", "ConvGrad", ins, 3, outs, 3, at, na) < 0) return a->e->code;
    for (int k = 0; k < 3 && k < n->n_in; k++) dx[k] = outs[k];
    return KILN_OK;
}

static kiln_status g_pool(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0] || dy[0] < 0) return KILN_OK;
    kiln_attr *at = NULL;
    int na = 0;
    KILN_TRY(kiln_ad_copy_attrs(a, n, 0, &at, &na));
    int ins[2] = {dy[0], n->in[0]};
    const char *op = !strcmp(n->op_type, "MaxPool") ? "MaxPoolGrad" : "AveragePoolGrad";
    CHECK(dx[0] = kiln_ad_op1(a, "kiln", op, ins, 2, at, na));
    return KILN_OK;
}

/* ---------------------------------------------------------------- losses */

static kiln_status g_nll(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (n->n_in > 2 && need[2]) return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for the class weights");
    if (!need[0]) return KILN_OK;
    kiln_attr *at = NULL;
    int na = 0;
    KILN_TRY(kiln_ad_copy_attrs(a, n, 0, &at, &na));
    int ins[4] = {dy[0], n->in[0], n->in[1], fwd_in(n, 2)};
    CHECK(dx[0] = kiln_ad_op1(a, "kiln", "NLLLossGrad", ins, ins[3] >= 0 ? 4 : 3, at, na));
    return KILN_OK;
}

/* ---------------------------------------------------------------- more shapes, fused contrib ops */

/* Clip with constant bounds (attributes before opset 11, inputs after): the gradient passes
 * strictly inside them. */
static kiln_status g_clip(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    for (int k = 1; k < n->n_in; k++)
        if (need[k]) return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for the bounds");
    if (!need[0]) return KILN_OK;
    double lo = -INFINITY, hi = INFINITY;
    if (n->opset < 11) {
        lo = kiln_attr_float(n, "min", -INFINITY);
        hi = kiln_attr_float(n, "max", INFINITY);
    } else {
        for (int k = 1; k <= 2; k++) {
            int v = fwd_in(n, k);
            if (v < 0) continue;
            double b;
            int dt;
            if (!opt_const_scalar(&a->oc, v, &b, &dt))
                return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient unless the bounds are constants");
            if (k == 1) lo = b;
            else hi = b;
        }
    }
    CHECK(dx[0] = unary_grad2(a, dy[0], n->in[0], "clip", lo, hi));
    return KILN_OK;
}

/* Mean of n inputs: each gets dY / n, summed to its shape */
static kiln_status g_mean(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    for (int i = 0; i < n->n_in; i++)
        if (need[i]) CHECK(dx[i] = sum_to(a, dy[0], n->in[i], -1, 1.0 / n->n_in));
    return KILN_OK;
}

static kiln_status g_pad(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    for (int k = 1; k < n->n_in; k++)
        if (need[k]) return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for the pads or the constant");
    if (!need[0]) return KILN_OK;
    if (strcmp(kiln_attr_string(n, "mode", "constant"), "constant"))
        return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient for Pad in mode '%s' (only constant)",
                         kiln_attr_string(n, "mode", "constant"));
    kiln_attr *at = NULL;
    int na = 0;
    KILN_TRY(kiln_ad_copy_attrs(a, n, 0, &at, &na));
    int ins[4] = {dy[0], n->in[0], fwd_in(n, 1), fwd_in(n, 3)}, cnt = ins[3] >= 0 ? 4 : ins[2] >= 0 ? 3 : 2;
    CHECK(dx[0] = kiln_ad_op1(a, "kiln", "PadGrad", ins, cnt, at, na));
    return KILN_OK;
}

static kiln_status g_tile(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    int ins[2] = {dy[0], n->in[0]};
    CHECK(dx[0] = kiln_ad_op1(a, "kiln", "TileGrad", ins, 2, NULL, 0));
    return KILN_OK;
}

/* zeros of v's run-time shape */
static int zeros_like(kiln_ad *a, int v) { return sum_to(a, v, v, -1, 0.0); }

static kiln_status g_split(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    if (!need[0]) return KILN_OK;
    int parts[64];
    for (int k = 0; k < n->n_out; k++) {
        if (n->out[k] < 0) return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient with an absent output");
        CHECK(parts[k] = dy[k] >= 0 ? dy[k] : zeros_like(a, n->out[k]));
    }
    kiln_attr *at = attrs_new(a, 1);
    if (!at || !kiln_ad_attr_int(&at[0], "axis", kiln_attr_int(n, "axis", 0))) {
        free(at);
        return OOM;
    }
    CHECK(dx[0] = kiln_ad_op1(a, "", "Concat", parts, n->n_out, at, 1));
    return KILN_OK;
}

/* BiasGelu(X, bias) and FastGelu(X[, bias]) = gelu(X + bias), exact and tanh-approximated */
static kiln_status g_bias_gelu(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    int b = fwd_in(n, 1), z = n->in[0];
    if (b >= 0) CHECK(z = op2(a, "Add", n->in[0], b));
    int d = unary_grad(a, dy[0], z, !strcmp(n->op_type, "FastGelu") ? "gelu_tanh" : "gelu", 0);
    CHECK(d);
    if (need[0]) CHECK(dx[0] = sum_to(a, d, n->in[0], n->out[0], 1.0));
    if (b >= 0 && need[1]) CHECK(dx[1] = sum_to(a, d, b, -1, 1.0));
    return KILN_OK;
}

/* SkipLayerNormalization(input, skip, gamma[, beta, bias]) = LayerNorm(input + skip + bias) over the
 * last axis; output 3 (if read) is that sum. */
static kiln_status g_skip_layernorm(kiln_ad *a, const kiln_node *n, const int *dy, const unsigned char *need, int *dx) {
    for (int k = 1; k < 3 && k < n->n_out; k++)
        if (dy[k] >= 0) return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "no gradient through the mean / inv_std outputs");
    int bias = fwd_in(n, 4);
    int s = op2(a, "Add", n->in[0], n->in[1]);
    CHECK(s);
    if (bias >= 0) CHECK(s = op2(a, "Add", s, bias));
    int ds = -1, outs[3] = {-2, need[2] ? -2 : -1, n->n_in > 3 && n->in[3] >= 0 && need[3] ? -2 : -1};
    if (dy[0] >= 0) {
        kiln_attr *at = attrs_new(a, 2);
        if (!at || !kiln_ad_attr_int(&at[0], "axis", -1) ||
            !kiln_ad_attr_float(&at[1], "epsilon", kiln_attr_float(n, "epsilon", 1e-12f))) {
            if (at) for (int k = 0; k < 2; k++) kiln_attr_free(&at[k]);
            free(at);
            return OOM;
        }
        int ins[3] = {dy[0], s, n->in[2]};
        if (kiln_ad_node(a, "kiln", "LayerNormGrad", ins, 3, outs, 3, at, 2) < 0) return a->e->code;
        ds = outs[0];
        dx[2] = outs[1];
        if (n->n_in > 3) dx[3] = outs[2];
    }
    if (n->n_out > 3 && dy[3] >= 0) CHECK(ds = ds >= 0 ? op2(a, "Add", ds, dy[3]) : dy[3]);
    if (ds < 0) return KILN_OK;
    if (need[0]) CHECK(dx[0] = sum_to(a, ds, n->in[0], -1, 1.0));
    if (need[1]) CHECK(dx[1] = sum_to(a, ds, n->in[1], -1, 1.0));
    if (bias >= 0 && need[4]) CHECK(dx[4] = sum_to(a, ds, bias, -1, 1.0));
    return KILN_OK;
}

/* ---------------------------------------------------------------- table */

static const struct { const char *domain, *op; kiln_grad_rule rule; } rules[] = {
    {"", "Add", g_add_sub}, {"", "Sub", g_add_sub}, {"", "Mul", g_mul}, {"", "Div", g_div},
    {"", "Neg", g_neg}, {"", "Sum", g_sum}, {"", "Exp", g_exp}, {"", "Log", g_log}, {"", "Pow", g_pow},
    {"", "Relu", g_unary}, {"", "LeakyRelu", g_unary}, {"", "Sigmoid", g_unary}, {"", "Tanh", g_unary},
    {"", "Sqrt", g_unary}, {"", "Erf", g_unary}, {"", "Abs", g_unary}, {"", "Softplus", g_unary},
    {"", "Gelu", g_unary}, {"com.microsoft", "Gelu", g_unary}, {"", "Reciprocal", g_unary},
    {"", "Identity", g_identity}, {"", "Dropout", g_dropout}, {"", "Cast", g_cast}, {"", "Where", g_where},
    {"", "MatMul", g_matmul}, {"", "Gemm", g_gemm},
    {"", "Reshape", g_reshape_like}, {"", "Flatten", g_reshape_like}, {"", "Squeeze", g_reshape_like},
    {"", "Unsqueeze", g_reshape_like}, {"", "Transpose", g_transpose}, {"", "Concat", g_concat},
    {"", "Slice", g_slice}, {"", "Gather", g_gather}, {"", "Expand", g_expand},
    {"", "ReduceMean", g_reduce_mean}, {"", "ReduceSum", g_reduce_sum}, {"", "ReduceMax", g_reduce_extreme},
    {"", "ReduceMin", g_reduce_extreme}, {"", "Max", g_min_max}, {"", "Min", g_min_max},
    {"", "GlobalAveragePool", g_global_avg},
    {"", "Softmax", g_softmax}, {"", "LogSoftmax", g_softmax},
    {"", "LayerNormalization", g_layernorm}, {"", "BatchNormalization", g_batchnorm},
    {"", "InstanceNormalization", g_instancenorm},
    {"", "Conv", g_conv}, {"", "MaxPool", g_pool}, {"", "AveragePool", g_pool},
    {"", "NegativeLogLikelihoodLoss", g_nll}, {"", "Split", g_split},
    {"", "HardSigmoid", g_unary}, {"", "HardSwish", g_unary}, {"", "Sin", g_unary}, {"", "Cos", g_unary},
    {"", "Elu", g_unary}, {"", "Clip", g_clip}, {"", "Mean", g_mean}, {"", "Pad", g_pad}, {"", "Tile", g_tile},
    {"com.microsoft", "BiasGelu", g_bias_gelu}, {"com.microsoft", "FastGelu", g_bias_gelu},
    {"com.microsoft", "SkipLayerNormalization", g_skip_layernorm},
    {NULL, NULL, NULL}};

static int domain_is(const char *d, const char *want) {
    if (!strcmp(d, "ai.onnx")) d = "";
    return !strcmp(d, want);
}

kiln_grad_rule kiln_grad_rule_for(const kiln_node *n) {
    for (int i = 0; rules[i].op; i++)
        if (!strcmp(rules[i].op, n->op_type) && domain_is(n->domain, rules[i].domain)) return rules[i].rule;
    return NULL;
}

int kiln_grad_blocks(const kiln_node *n) {
    static const char *const ops[] = {"Shape", "Size", "Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual",
                                      "Not", "And", "Or", "Xor", "ArgMax", "ArgMin", "NonZero", "IsNaN", "IsInf",
                                      "Sign", "Floor", "Ceil", "Round", "ConstantOfShape", "Range", "EyeLike",
                                      "RandomUniformLike", "RandomNormalLike", "Bernoulli", "Multinomial", NULL};
    if (!domain_is(n->domain, "")) return 0;
    for (int i = 0; ops[i]; i++)
        if (!strcmp(ops[i], n->op_type)) return 1;
    return 0;
}
