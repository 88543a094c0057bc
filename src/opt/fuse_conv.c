/* Convolution fusions.
 *
 * Conv + BatchNormalization (inference form, constant parameters) -> Conv with folded weights:
 * BN(y) = (y - mean) * s + b with s = scale / sqrt(var + eps) per output channel, so
 * W'[m] = W[m] * s[m] and B'[m] = (B[m] - mean[m]) * s[m] + b[m]. The folded tensors are new
 * initializers (the originals may be shared with other nodes).
 *
 * Conv + Add(residual of the output's shape) and Conv + activation -> com.microsoft FusedConv,
 * whose kernel adds the residual Z and applies the activation to each output tile while it is
 * still in cache. The activations are those the FusedConv kernel implements: Relu, Tanh,
 * Sigmoid, LeakyRelu, Clip, HardSigmoid, and HardSwish (MobileNetV3's), which ORT's FusedConv
 * lacks: a file kiln writes splits that one back into FusedConv + HardSwish (model_write.c).
 *
 * BatchNormalization (inference form) + activation, not after a Conv (DenseNet's pre-activation
 * layers: Concat -> BN -> Relu -> Conv) -> FusedConv, a 1x1 depthwise convolution with W[c] = s[c]
 * and B[c] = b[c] - mean[c] * s[c] and the activation: one pass over the tensor instead of two
 * (ONNX Runtime turns the same pair into one NCHWc convolution). CPU sessions only, 1-D and 2-D
 * maps in float32, where the depthwise kernels take it. */
#include "fusions.h"
#include "../core/dtype.h"
#include <float.h>
#include <stdio.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* Float types whose FusedConv path computes in float32 (the double path would round through
 * float for the activation). */
static int fused_conv_type(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_FLOAT16 || dt == KILN_DTYPE_BFLOAT16;
}

/* ---------------------------------------------------------------- Conv + BatchNormalization */

/* A constant with exactly m elements of type dt. */
static const kiln_tensor *channel_param(opt_ctx *c, int v, int dt, int64_t m) {
    const kiln_tensor *t = opt_const(c, v);
    return t && t->dtype == dt && kiln_numel(t) == m ? t : NULL;
}

/* New weight and bias tensors: W of w_rank dims, B of m elements, both of type dt. */
static kiln_status alloc_folded(opt_ctx *c, int dt, int w_rank, const int64_t *w_dims, int64_t m,
                                kiln_tensor *nw, kiln_tensor *nb) {
    memset(nw, 0, sizeof *nw);
    memset(nb, 0, sizeof *nb);
    kiln_tensor_set_shape(nw, dt, w_rank, w_dims);
    kiln_tensor_set_shape(nb, dt, 1, &m);
    if (kiln_tensor_alloc(nw, c->e)) return c->e->code;
    if (kiln_tensor_alloc(nb, c->e)) {
        kiln_tensor_release(nw);
        return c->e->code;
    }
    return KILN_OK;
}

/* Adds nw and nb (released here) as initializers "<node>_<tag>_W" and "_B". Adding values may
 * move g->values: constants read from it before are not to be used after this. */
static kiln_status add_folded(opt_ctx *c, const char *node, const char *tag, kiln_tensor *nw,
                              kiln_tensor *nb, int *wv, int *bv) {
    char name[512];
    snprintf(name, sizeof name, "%s_%s_W", node, tag);
    *wv = opt_add_const(c, name, nw);
    snprintf(name, sizeof name, "%s_%s_B", node, tag);
    *bv = *wv >= 0 ? opt_add_const(c, name, nb) : -1;
    kiln_tensor_release(nw);
    kiln_tensor_release(nb);
    return *wv < 0 || *bv < 0 ? kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory") : KILN_OK;
}

static kiln_status fold_batchnorm(opt_ctx *c, kiln_node *bn) {
    if (bn->n_in != 5 || bn->n_out < 1 || bn->out[0] < 0 || !opt_only_first_output(c, bn)) return KILN_OK;
    if (kiln_attr_int(bn, "training_mode", 0) || kiln_attr_int(bn, "spatial", 1) != 1) return KILN_OK;
    int y = bn->in[0];
    kiln_node *conv = opt_private(c, y, 1) ? opt_producer(c, y, "Conv") : NULL;
    if (!conv || conv->n_in < 2 || conv->n_out != 1) return KILN_OK;
    const kiln_tensor *w = opt_const(c, conv->in[1]);
    if (!w || w->rank < 3 || !opt_float_type(w->dtype) || !kiln_shape_concrete(w)) return KILN_OK;
    int dt = w->dtype;
    int64_t m = w->dims[0], per = m ? kiln_numel(w) / m : 0;
    const kiln_tensor *b = NULL;
    if (opt_in(conv, 2) >= 0 && !(b = channel_param(c, conv->in[2], dt, m))) return KILN_OK;
    const kiln_tensor *p[4];
    for (int k = 0; k < 4; k++)
        if (!(p[k] = channel_param(c, bn->in[k + 1], dt, m))) return KILN_OK;
    double eps = kiln_attr_float(bn, "epsilon", 1e-5f);

    kiln_tensor nw, nb;
    KILN_TRY(alloc_folded(c, dt, w->rank, w->dims, m, &nw, &nb));
    for (int64_t o = 0; o < m; o++) {
        double s = kiln_load_f64(dt, p[0]->data, o) / sqrt(kiln_load_f64(dt, p[3]->data, o) + eps);
        for (int64_t j = 0; j < per; j++)
            kiln_store_f64(dt, nw.data, o * per + j, kiln_load_f64(dt, w->data, o * per + j) * s);
        double bias = b ? kiln_load_f64(dt, b->data, o) : 0.0;
        kiln_store_f64(dt, nb.data, o, (bias - kiln_load_f64(dt, p[2]->data, o)) * s +
                                           kiln_load_f64(dt, p[1]->data, o));
    }
    int wv, bv; /* w, b and p are not used after this */
    KILN_TRY(add_folded(c, conv->name, "bn_folded", &nw, &nb, &wv, &bv));
    kiln_attr *attrs;
    int n_attrs;
    KILN_TRY(opt_attrs_take(c, conv, 0, &attrs, &n_attrs));
    int ins[3] = {conv->in[0], wv, bv}, out = bn->out[0];
    kiln_node *pattern[2] = {conv, bn};
    return opt_replace(c, pattern, 2, "", "Conv", conv->opset, ins, 3, &out, 1, attrs, n_attrs);
}

kiln_status opt_fuse_conv_batchnorm(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (!n->removed && !n->domain[0] && !strcmp(n->op_type, "BatchNormalization"))
            KILN_TRY(fold_batchnorm(c, n));
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- Conv + Add(Z) */

kiln_status opt_fuse_conv_add(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *add = &g->nodes[i];
        if (add->removed || add->domain[0] || strcmp(add->op_type, "Add") || add->n_in != 2 ||
            add->n_out != 1)
            continue;
        for (int k = 0; k < 2; k++) {
            int y = add->in[k], z = add->in[1 - k];
            kiln_node *conv = opt_private(c, y, 1) ? opt_producer(c, y, "Conv") : NULL;
            if (!conv || conv->n_in < 2 || conv->n_in > 3 || conv->n_out != 1 || z == y) continue;
            const kiln_tensor *fy = opt_fact(c, y);
            if (!fused_conv_type(fy->dtype) || !opt_same_shape(fy, opt_fact(c, z))) continue;
            kiln_attr *attrs;
            int n_attrs;
            KILN_TRY(opt_attrs_take(c, conv, 0, &attrs, &n_attrs));
            int ins[4] = {conv->in[0], conv->in[1], opt_in(conv, 2), z}, out = add->out[0];
            kiln_node *pattern[2] = {conv, add};
            KILN_TRY(opt_replace(c, pattern, 2, "com.microsoft", "FusedConv", -1, ins, 4, &out, 1,
                                 attrs, n_attrs));
            break;
        }
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- Conv + activation */

/* The activation's FusedConv name and parameters; 0 when it is not one FusedConv applies. */
static int activation_of(opt_ctx *c, const kiln_node *act, float *params, int *n_params) {
    const char *op = act->op_type;
    *n_params = 0;
    if (act->domain[0]) return 0;
    if (!strcmp(op, "Relu") || !strcmp(op, "Tanh") || !strcmp(op, "Sigmoid") ||
        !strcmp(op, "HardSwish"))
        return act->n_in == 1;
    if (!strcmp(op, "LeakyRelu")) {
        params[(*n_params)++] = kiln_attr_float(act, "alpha", 0.01f);
        return act->n_in == 1;
    }
    if (!strcmp(op, "HardSigmoid")) {
        params[(*n_params)++] = kiln_attr_float(act, "alpha", 0.2f);
        params[(*n_params)++] = kiln_attr_float(act, "beta", 0.5f);
        return act->n_in == 1;
    }
    if (strcmp(op, "Clip")) return 0;
    float lo = -FLT_MAX, hi = FLT_MAX;
    if (act->opset < 11) {
        lo = kiln_attr_float(act, "min", lo);
        hi = kiln_attr_float(act, "max", hi);
    } else {
        /* min and max are inputs from opset 11: constant scalars, or absent */
        for (int k = 1; k < act->n_in && k < 3; k++) {
            if (act->in[k] < 0) continue;
            double v;
            int dt;
            if (!opt_const_scalar(c, act->in[k], &v, &dt)) return 0;
            if (k == 1) lo = (float)v;
            else hi = (float)v;
        }
        if (act->n_in > 3) return 0;
    }
    params[(*n_params)++] = lo;
    params[(*n_params)++] = hi;
    return 1;
}

/* Matched backwards from the activation, as the other fusions are. */
static kiln_status batchnorm_activation(opt_ctx *c, kiln_node *act) {
    float params[2];
    int np;
    if (act->n_out != 1 || act->n_in < 1 || !activation_of(c, act, params, &np)) return KILN_OK;
    int y = act->in[0];
    kiln_node *bn = opt_private(c, y, 1) ? opt_producer(c, y, "BatchNormalization") : NULL;
    if (!bn || bn->n_in != 5 || !opt_only_first_output(c, bn)) return KILN_OK;
    if (kiln_attr_int(bn, "training_mode", 0) || kiln_attr_int(bn, "spatial", 1) != 1) return KILN_OK;
    int x = bn->in[0];
    const kiln_tensor *fx = opt_fact(c, x);
    if (fx->dtype != KILN_DTYPE_FLOAT || (fx->rank != 3 && fx->rank != 4) || !opt_dim_known(fx->dims[1]) ||
        fx->dims[1] < 1)
        return KILN_OK;
    int64_t m = fx->dims[1];
    const kiln_tensor *p[4];
    for (int k = 0; k < 4; k++)
        if (!(p[k] = channel_param(c, bn->in[k + 1], KILN_DTYPE_FLOAT, m))) return KILN_OK;
    double eps = kiln_attr_float(bn, "epsilon", 1e-5f);
    int64_t wdims[4] = {m, 1, 1, 1};
    kiln_tensor nw, nb;
    KILN_TRY(alloc_folded(c, KILN_DTYPE_FLOAT, fx->rank, wdims, m, &nw, &nb));
    for (int64_t o = 0; o < m; o++) {
        double sc = kiln_load_f64(KILN_DTYPE_FLOAT, p[0]->data, o) /
                    sqrt(kiln_load_f64(KILN_DTYPE_FLOAT, p[3]->data, o) + eps);
        kiln_store_f64(KILN_DTYPE_FLOAT, nw.data, o, sc);
        kiln_store_f64(KILN_DTYPE_FLOAT, nb.data, o, kiln_load_f64(KILN_DTYPE_FLOAT, p[1]->data, o) -
                                                         kiln_load_f64(KILN_DTYPE_FLOAT, p[2]->data, o) * sc);
    }
    int wv, bv;
    KILN_TRY(add_folded(c, bn->name, "as_conv", &nw, &nb, &wv, &bv));
    int64_t ones[2] = {1, 1};
    kiln_attr *attrs = calloc(4, sizeof *attrs);
    int n_attrs = 0, ok = attrs != NULL;
    if (ok) ok = opt_attr_int(&attrs[n_attrs++], "group", m);
    if (ok) ok = opt_attr_ints(&attrs[n_attrs++], "kernel_shape", ones, fx->rank - 2);
    if (ok) ok = opt_attr_string(&attrs[n_attrs++], "activation", act->op_type);
    if (ok && np) ok = opt_attr_floats(&attrs[n_attrs++], "activation_params", params, np);
    if (!ok) {
        opt_attrs_free(attrs, n_attrs);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    int ins[3] = {x, wv, bv}, out = act->out[0];
    kiln_node *pattern[2] = {bn, act};
    return opt_replace(c, pattern, 2, "com.microsoft", "FusedConv", -1, ins, 3, &out, 1, attrs, n_attrs);
}

kiln_status opt_fuse_batchnorm_activation(opt_ctx *c) {
    kiln_graph *g = c->g;
    if (c->device) return KILN_OK;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (!n->removed) KILN_TRY(batchnorm_activation(c, n));
    }
    return KILN_OK;
}

kiln_status opt_fuse_conv_activation(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *act = &g->nodes[i];
        float params[2];
        int np;
        if (act->removed || act->n_out != 1 || act->n_in < 1 || !activation_of(c, act, params, &np))
            continue;
        int y = act->in[0];
        if (!opt_private(c, y, 1)) continue;
        kiln_node *conv = opt_producer(c, y, "Conv");
        if (!conv) { /* a FusedConv made from Conv + Add has no activation yet */
            conv = opt_producer_in(c, y, "com.microsoft", "FusedConv");
            if (conv && kiln_has_attr(conv, "activation")) conv = NULL;
        }
        if (!conv || conv->n_out != 1 || conv->n_in < 2 || conv->n_in > 4) continue;
        if (!fused_conv_type(opt_fact(c, y)->dtype)) continue;
        kiln_attr *attrs;
        int n_attrs;
        KILN_TRY(opt_attrs_take(c, conv, 2, &attrs, &n_attrs));
        int ok = opt_attr_string(&attrs[n_attrs++], "activation", act->op_type);
        if (ok && np) ok = opt_attr_floats(&attrs[n_attrs++], "activation_params", params, np);
        if (!ok) {
            opt_attrs_free(attrs, n_attrs);
            return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
        }
        int ins[4], out = act->out[0];
        for (int k = 0; k < conv->n_in; k++) ins[k] = conv->in[k];
        kiln_node *pattern[2] = {conv, act};
        KILN_TRY(opt_replace(c, pattern, 2, "com.microsoft", "FusedConv", -1, ins, conv->n_in, &out,
                             1, attrs, n_attrs));
    }
    return KILN_OK;
}
