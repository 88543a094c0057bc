/* Add(a, b) [one of them Add(m, bias)] + LayerNormalization(axis -1) -> com.microsoft
 * SkipLayerNormalization(input, skip, gamma, beta, bias). The kernel adds input + skip + bias,
 * normalises the last axis, and can return the sum as its 4th output (input_skip_bias_sum), which
 * keeps the Add's result for other readers (the residual stream of the next block).
 *
 * Shapes decide the roles: `input` must have the sum's full shape; `skip` the same shape or its
 * trailing dimensions after leading 1s (as the kernel broadcasts it); both end in the hidden size
 * H, which gamma, beta and bias have as their only dimension. */
#include "fusions.h"
#include <stdlib.h>
#include <string.h>

/* skip may be added to an input of shape x: same rank or fewer, trailing dimensions equal, any
 * leading ones 1 (the kernel reads skip row r % skip_rows). */
static int skip_fits(const kiln_tensor *k, const kiln_tensor *x) {
    if (k->rank < 1 || x->rank < 0 || k->rank > x->rank) return 0;
    int lead = 1;
    for (int i = 0; i < k->rank; i++) {
        int64_t a = k->dims[i], b = x->dims[x->rank - k->rank + i];
        if (a == KILN_DIM_UNKNOWN) return 0;
        if (lead && a == 1) continue;
        lead = 0;
        if (a != b) return 0;
    }
    return 1;
}

/* A 1-D per-hidden-unit vector (gamma, beta, bias): H elements of the input's type. */
static int hidden_vector(const kiln_tensor *t, int dtype, int64_t h) {
    if (t->rank < 1 || t->dtype != dtype) return 0;
    for (int i = 0; i < t->rank - 1; i++)
        if (t->dims[i] != 1) return 0;
    return t->dims[t->rank - 1] == h;
}

/* Looks through v = Add(m, bias) read only by the sum; on success *v becomes m, *bias the bias. */
static kiln_node *bias_add(opt_ctx *c, int *v, int *bias, int dtype, int64_t h) {
    if (!opt_private(c, *v, 1)) return NULL;
    kiln_node *add = opt_producer(c, *v, "Add");
    if (!add || add->n_in != 2) return NULL;
    const kiln_tensor *fv = opt_fact(c, *v);
    for (int k = 1; k >= 0; k--) {
        const kiln_tensor *fb = opt_fact(c, add->in[k]), *fm = opt_fact(c, add->in[1 - k]);
        if (fb->rank != 1 || !hidden_vector(fb, dtype, h) || !opt_same_shape(fm, fv)) continue;
        *bias = add->in[k];
        *v = add->in[1 - k];
        return add;
    }
    return NULL;
}

/* Every reader of v other than `except` comes after slot `after` (the fused node's slot). */
static int read_only_after(opt_ctx *c, int v, int after, const kiln_node *except) {
    for (int i = 0; i <= after; i++) {
        const kiln_node *n = &c->g->nodes[i];
        if (n->removed || n == except) continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] == v) return 0;
        for (int k = 0; k < n->n_implicit; k++)
            if (n->implicit[k] == v) return 0;
    }
    return 1;
}

static kiln_status fuse_one(opt_ctx *c, kiln_node *ln) {
    if (ln->n_in < 2 || ln->n_out < 1 || ln->out[0] < 0 || !opt_only_first_output(c, ln)) return KILN_OK;
    if (kiln_attr_int(ln, "stash_type", 1) != 1) return KILN_OK;
    int s = ln->in[0];
    kiln_node *sum = opt_producer(c, s, "Add");
    if (!sum || sum->n_in != 2) return KILN_OK;
    const kiln_tensor *fs = opt_fact(c, s);
    int r = fs->rank, dt = fs->dtype;
    if (r < 2 || !opt_float_type(dt) || !opt_dim_known(fs->dims[r - 1])) return KILN_OK;
    int64_t h = fs->dims[r - 1], axis = kiln_attr_int(ln, "axis", -1);
    if (axis != -1 && axis != r - 1) return KILN_OK;
    int gamma = ln->in[1], beta = opt_in(ln, 2);
    if (!hidden_vector(opt_fact(c, gamma), dt, h)) return KILN_OK;
    if (beta >= 0 && !hidden_vector(opt_fact(c, beta), dt, h)) return KILN_OK;

    /* roles: input has the sum's shape, skip fits it */
    int a = sum->in[0], b = sum->in[1];
    if (!opt_same_shape(opt_fact(c, a), fs)) {
        int t = a;
        a = b;
        b = t;
    }
    if (!opt_same_shape(opt_fact(c, a), fs) || !skip_fits(opt_fact(c, b), fs)) return KILN_OK;

    /* a bias added to either operand (read only by the sum) folds into the kernel's bias */
    int bias = -1;
    kiln_node *badd = bias_add(c, &a, &bias, dt, h);
    if (!badd && opt_same_shape(opt_fact(c, b), fs)) badd = bias_add(c, &b, &bias, dt, h);

    /* the sum stays available to its other readers through output 3 */
    int keep_sum = !opt_private(c, s, 1);
    if (keep_sum && !read_only_after(c, s, opt_node_index(c, ln), ln)) return KILN_OK;

    kiln_attr *attrs = calloc(1, sizeof *attrs);
    if (!attrs || !opt_attr_float(attrs, "epsilon", kiln_attr_float(ln, "epsilon", 1e-5f))) {
        opt_attrs_free(attrs, attrs ? 1 : 0);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    int ins[5] = {a, b, gamma, beta, bias};
    int outs[4] = {ln->out[0], -1, -1, s};
    kiln_node *pattern[3] = {sum, ln, badd};
    return opt_replace(c, pattern, badd ? 3 : 2, "com.microsoft", "SkipLayerNormalization", -1, ins,
                       bias >= 0 ? 5 : beta >= 0 ? 4 : 3, outs, keep_sum ? 4 : 1, attrs, 1);
}

kiln_status opt_fuse_skip_layernorm(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->removed || n->domain[0] || strcmp(n->op_type, "LayerNormalization")) continue;
        KILN_TRY(fuse_one(c, n));
    }
    return KILN_OK;
}
