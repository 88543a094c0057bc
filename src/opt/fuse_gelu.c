/* Gelu fusions, as exporters write them:
 *   erf form   x * 0.5 * (1 + Erf(x / sqrt 2))           (Div by sqrt 2 or Mul by 1/sqrt 2)
 *   tanh form  0.5 * x * (1 + Tanh(sqrt(2/pi) * (x + 0.044715 * x^3)))
 *              (x^3 as Pow(x, 3) or x * x * x; also sqrt(2/pi) * x * (1 + 0.044715 x^2) written
 *               as x * (0.7978.. + 0.0356.. * x * x))
 * The three outer factors (x, 0.5 and the 1 + ... term) may be multiplied in any grouping, so
 * the final Mul is opened into its factors first. The erf form becomes com.microsoft Gelu, the
 * tanh form FastGelu; an Add of a 1-D bias in front of either then folds in (BiasGelu, or
 * FastGelu's bias input). */
#include "fusions.h"
#include <stdlib.h>
#include <string.h>

#define SQRT2 1.41421356237309504880
#define SQRT1_2 0.70710678118654752440
#define SQRT_2_PI 0.79788456080286535588 /* sqrt(2/pi) */
#define GELU_CUBIC 0.044715

#define MAX_PATTERN 12

typedef struct match {
    kiln_node *nodes[MAX_PATTERN];
    int n;
} match;

static int take(match *m, kiln_node *n) {
    if (!n || m->n == MAX_PATTERN) return 0;
    m->nodes[m->n++] = n;
    return 1;
}

/* The node producing v when it is `op` and v is read only by the pattern (once). */
static kiln_node *inner(opt_ctx *c, int v, const char *op) {
    return opt_private(c, v, 1) ? opt_producer(c, v, op) : NULL;
}

/* Of a two-input node, the input that is not a scalar close to `want` when the other one is. */
static int beside_scalar(opt_ctx *c, const kiln_node *n, double want, const kiln_tensor *x) {
    if (n->n_in != 2) return -1;
    if (opt_is_scalar(c, n->in[1], want, x)) return n->in[0];
    if (opt_is_scalar(c, n->in[0], want, x)) return n->in[1];
    return -1;
}

/* Factors of the product at v: Mul nodes read only by the product are opened up. */
typedef struct factors {
    int v[4];
    int n;
} factors;

static int open_product(opt_ctx *c, int v, int is_root, factors *f, match *m) {
    kiln_node *mul = opt_producer(c, v, "Mul");
    if (mul && mul->n_in == 2 && (is_root || opt_private(c, v, 1)) && m->n < 2) {
        take(m, mul);
        return open_product(c, mul->in[0], 0, f, m) && open_product(c, mul->in[1], 0, f, m);
    }
    if (f->n == 3) return 0;
    f->v[f->n++] = v;
    return 1;
}

/* 1 + Erf(x / sqrt 2) at a */
static int erf_term(opt_ctx *c, int a, int x, match *m) {
    const kiln_tensor *fx = opt_fact(c, x);
    kiln_node *add = inner(c, a, "Add");
    if (!add) return 0;
    kiln_node *erf = inner(c, beside_scalar(c, add, 1.0, fx), "Erf");
    if (!erf || erf->n_in != 1) return 0;
    int d = erf->in[0];
    kiln_node *scale = inner(c, d, "Div");
    if (scale) {
        if (scale->n_in != 2 || scale->in[0] != x || !opt_is_scalar(c, scale->in[1], SQRT2, fx))
            return 0;
    } else {
        scale = inner(c, d, "Mul");
        if (!scale || beside_scalar(c, scale, SQRT1_2, fx) != x) return 0;
    }
    return take(m, add) && take(m, erf) && take(m, scale);
}

/* x * x at v (read only by the pattern) */
static int square(opt_ctx *c, int v, int x, match *m) {
    kiln_node *sq = inner(c, v, "Mul");
    return sq && sq->n_in == 2 && sq->in[0] == x && sq->in[1] == x && take(m, sq);
}

/* x^3 at v: Pow(x, 3) or x * (x * x) in either order */
static int cube(opt_ctx *c, int v, int x, match *m) {
    kiln_node *p = inner(c, v, "Pow");
    if (p) return p->n_in == 2 && p->in[0] == x && opt_is_scalar(c, p->in[1], 3.0, opt_fact(c, x)) &&
                  take(m, p);
    kiln_node *mul = inner(c, v, "Mul");
    if (!mul || mul->n_in != 2) return 0;
    int other = opt_other_input(mul, x);
    return other >= 0 && other != x && take(m, mul) && square(c, other, x, m);
}

/* sqrt(2/pi) * (x + 0.044715 x^3) at s, or x * (sqrt(2/pi) + 0.044715 sqrt(2/pi) x^2) */
static int tanh_argument(opt_ctx *c, int s, int x, match *m) {
    const kiln_tensor *fx = opt_fact(c, x);
    kiln_node *mul = inner(c, s, "Mul");
    if (!mul || mul->n_in != 2) return 0;
    kiln_node *sum = inner(c, beside_scalar(c, mul, SQRT_2_PI, fx), "Add");
    if (sum && sum->n_in == 2) {
        int q = opt_other_input(sum, x);
        kiln_node *qm = inner(c, q, "Mul");
        return qm && take(m, mul) && take(m, sum) && take(m, qm) &&
               cube(c, beside_scalar(c, qm, GELU_CUBIC, fx), x, m);
    }
    sum = inner(c, opt_other_input(mul, x), "Add");
    if (!sum) return 0;
    kiln_node *wm = inner(c, beside_scalar(c, sum, SQRT_2_PI, fx), "Mul");
    return wm && take(m, mul) && take(m, sum) && take(m, wm) &&
           square(c, beside_scalar(c, wm, GELU_CUBIC * SQRT_2_PI, fx), x, m);
}

/* 1 + Tanh(...) at a */
static int tanh_term(opt_ctx *c, int a, int x, match *m) {
    kiln_node *add = inner(c, a, "Add");
    if (!add) return 0;
    kiln_node *th = inner(c, beside_scalar(c, add, 1.0, opt_fact(c, x)), "Tanh");
    return th && th->n_in == 1 && take(m, add) && take(m, th) && tanh_argument(c, th->in[0], x, m);
}

/* Tries the factors (x, 0.5, term) in each role; returns 1 (Gelu) or 2 (FastGelu) and sets *x. */
static int match_gelu(opt_ctx *c, const factors *f, match *m, int *x) {
    if (f->n != 3) return 0;
    int base = m->n;
    for (int h = 0; h < 3; h++)
        for (int t = 0; t < 3; t++) {
            if (t == h) continue;
            int xv = f->v[3 - h - t];
            if (!opt_is_scalar(c, f->v[h], 0.5, opt_fact(c, xv))) continue;
            m->n = base;
            if (erf_term(c, f->v[t], xv, m)) { *x = xv; return 1; }
            m->n = base;
            if (tanh_term(c, f->v[t], xv, m)) { *x = xv; return 2; }
        }
    m->n = base;
    return 0;
}

kiln_status opt_fuse_gelu(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *root = &g->nodes[i];
        if (root->removed || root->domain[0] || strcmp(root->op_type, "Mul") || root->n_out != 1 ||
            root->out[0] < 0)
            continue;
        match m = {{0}, 0};
        factors f = {{0}, 0};
        if (!open_product(c, root->out[0], 1, &f, &m)) continue;
        int x = -1, kind = match_gelu(c, &f, &m, &x);
        if (!kind || !opt_float_type(opt_fact(c, x)->dtype)) continue;
        int out = root->out[0];
        KILN_TRY(opt_replace(c, m.nodes, m.n, "com.microsoft", kind == 1 ? "Gelu" : "FastGelu", -1,
                             &x, 1, &out, 1, NULL, 0));
    }
    return KILN_OK;
}

/* Add(a, bias) where bias is 1-D over a's last axis (so the sum has a's shape); *a gets a. */
static int bias_add(opt_ctx *c, const kiln_node *add, int *a, int *bias) {
    if (add->n_in != 2) return 0;
    for (int k = 1; k >= 0; k--) { /* the bias is usually the second input */
        const kiln_tensor *fb = opt_fact(c, add->in[k]), *fa = opt_fact(c, add->in[1 - k]);
        if (fb->rank != 1 || !opt_dim_known(fb->dims[0]) || fa->rank < 1) continue;
        if (fa->dims[fa->rank - 1] != fb->dims[0] || fa->dtype != fb->dtype) continue;
        *a = add->in[1 - k];
        *bias = add->in[k];
        return 1;
    }
    return 0;
}

kiln_status opt_fuse_gelu_bias(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->removed || strcmp(n->domain, "com.microsoft") || n->n_out != 1) continue;
        int gelu = !strcmp(n->op_type, "Gelu"), fast = !strcmp(n->op_type, "FastGelu");
        if (!(gelu && n->n_in == 1) && !(fast && (n->n_in == 1 || (n->n_in == 2 && n->in[1] < 0))))
            continue;
        kiln_node *add = inner(c, n->in[0], "Add");
        int ins[2];
        if (!add || !bias_add(c, add, &ins[0], &ins[1]) || !opt_float_type(opt_fact(c, ins[0])->dtype))
            continue;
        kiln_node *pattern[2] = {add, n};
        int out = n->out[0];
        KILN_TRY(opt_replace(c, pattern, 2, "com.microsoft", gelu ? "BiasGelu" : "FastGelu", -1, ins,
                             2, &out, 1, NULL, 0));
    }
    return KILN_OK;
}
