/* Pattern matching and graph editing for the fusion passes (see pattern.h). */
#include "pattern.h"
#include "../core/dtype.h"
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- context */

/* Reads of every value by live nodes (each input slot counts, so Mul(x, x) reads x twice), by
 * subgraphs (implicit inputs) and by the graph's outputs. */
static void count_uses(opt_ctx *c) {
    kiln_graph *g = c->g;
    memset(c->uses, 0, (size_t)c->n_tracked * sizeof(int));
    memset(c->is_output, 0, (size_t)c->n_tracked * sizeof(int));
    for (int i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->removed) continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) c->uses[n->in[k]]++;
        for (int k = 0; k < n->n_implicit; k++) c->uses[n->implicit[k]]++;
    }
    for (int i = 0; i < g->n_outputs; i++) {
        c->uses[g->outputs[i]]++;
        c->is_output[g->outputs[i]] = 1;
    }
}

kiln_status opt_ctx_init(opt_ctx *c, kiln_graph *g, opt_ctx *parent, int verbose, kiln_err *e) {
    memset(c, 0, sizeof *c);
    c->g = g;
    c->parent = parent;
    c->verbose = verbose;
    c->e = e;
    c->n_tracked = g->n_values;
    size_t nv = (size_t)(g->n_values ? g->n_values : 1);
    c->uses = calloc(nv, sizeof(int));
    c->is_output = calloc(nv, sizeof(int));
    c->foldable = malloc(nv);
    if (!c->uses || !c->is_output || !c->foldable) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    memset(c->foldable, -1, nv);
    count_uses(c);
    return opt_facts_build(c);
}

void opt_ctx_free(opt_ctx *c) {
    if (c->facts)
        for (int v = 0; v < c->n_tracked; v++) kiln_value_release(&c->facts[v]);
    free(c->facts);
    free(c->uses);
    free(c->is_output);
    free(c->foldable);
    memset(c, 0, sizeof *c);
}

/* ---------------------------------------------------------------- matching */

int opt_node_index(const opt_ctx *c, const kiln_node *n) { return (int)(n - c->g->nodes); }

kiln_node *opt_producer_in(opt_ctx *c, int v, const char *domain, const char *op) {
    if (v < 0 || v >= c->g->n_values) return NULL;
    int p = c->g->values[v].producer;
    if (p < 0 || p >= c->g->n_nodes) return NULL;
    kiln_node *n = &c->g->nodes[p];
    if (n->removed || strcmp(n->op_type, op) || strcmp(n->domain, domain)) return NULL;
    return n;
}

kiln_node *opt_producer(opt_ctx *c, int v, const char *op) { return opt_producer_in(c, v, "", op); }

int opt_private(const opt_ctx *c, int v, int reads) {
    return v >= 0 && v < c->n_tracked && !c->is_output[v] && c->uses[v] == reads;
}

int opt_other_input(const kiln_node *n, int v) {
    if (n->n_in != 2) return -1;
    if (n->in[0] == v) return n->in[1];
    if (n->in[1] == v) return n->in[0];
    return -1;
}

int opt_only_first_output(const opt_ctx *c, const kiln_node *n) {
    for (int k = 1; k < n->n_out; k++) {
        int v = n->out[k];
        if (v >= 0 && (v >= c->n_tracked || c->uses[v] || c->is_output[v])) return 0;
    }
    return 1;
}

const kiln_tensor *opt_const(opt_ctx *c, int v) {
    for (int hops = 0; v >= 0 && v < c->g->n_values && hops < 8; hops++) {
        const kiln_graph_value *gv = &c->g->values[v];
        if (gv->is_const) return gv->konst.kind == KILN_KIND_TENSOR ? &gv->konst.t : NULL;
        kiln_node *n = opt_producer(c, v, "Identity");
        if (n) {
            v = opt_in(n, 0);
            continue;
        }
        n = opt_producer(c, v, "Constant");
        if (!n) return NULL;
        const kiln_tensor *t = kiln_attr_tensor(n, "value");
        return t && t->rank >= 0 && (t->data || kiln_numel(t) == 0) ? t : NULL;
    }
    return NULL;
}

/* Memoised, so shared inputs are visited once; rewrites keep the answers valid (a fused node
 * computes the same values from the same inputs). */
static int foldable(opt_ctx *c, int v, int depth) {
    static const char *const random_ops[] = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                                             "RandomUniformLike", "Bernoulli", "Multinomial", NULL};
    if (v < 0 || v >= c->g->n_values || depth > 256) return 0;
    const kiln_graph_value *gv = &c->g->values[v];
    if (gv->is_const) return 1;
    if (v >= c->n_tracked) return 0;
    if (c->foldable[v] >= 0) return c->foldable[v];
    int ok = gv->producer >= 0 && gv->producer < c->g->n_nodes;
    const kiln_node *n = ok ? &c->g->nodes[gv->producer] : NULL;
    if (ok && (n->removed || n->n_implicit)) ok = 0;
    for (int i = 0; ok && random_ops[i]; i++)
        if (!strcmp(n->op_type, random_ops[i])) ok = 0;
    for (int k = 0; ok && k < n->n_attrs; k++)
        if (n->attrs[k].g || n->attrs[k].n_graphs) ok = 0;
    for (int k = 0; ok && k < n->n_in; k++)
        if (n->in[k] >= 0 && !foldable(c, n->in[k], depth + 1)) ok = 0;
    c->foldable[v] = (signed char)ok; /* past the depth limit "no": safe, only less optimal */
    return ok;
}

int opt_foldable(opt_ctx *c, int v) { return foldable(c, v, 0); }

int opt_float_type(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || dt == KILN_DTYPE_FLOAT16 ||
           dt == KILN_DTYPE_BFLOAT16;
}

int opt_const_scalar(opt_ctx *c, int v, double *out, int *dtype) {
    const kiln_tensor *t = opt_const(c, v);
    if (!t) {
        /* Constant(value_float=...) carries no tensor */
        kiln_node *n = opt_producer(c, v, "Constant");
        if (!n || !kiln_has_attr(n, "value_float")) return 0;
        *out = kiln_attr_float(n, "value_float", 0.0f);
        *dtype = KILN_DTYPE_FLOAT;
        return 1;
    }
    if (!opt_float_type(t->dtype) || kiln_numel(t) != 1) return 0;
    *out = kiln_load_f64(t->dtype, t->data, 0);
    *dtype = t->dtype;
    return 1;
}

/* Relative closeness a constant of type dt can promise: exporters round the exact constant to
 * the model's type (and some write short decimals such as 0.035677). */
static int near(double got, double want, int dt) {
    double tol = dt == KILN_DTYPE_FLOAT16 ? 2e-3 : dt == KILN_DTYPE_BFLOAT16 ? 1e-2 : 1e-5;
    return fabs(got - want) <= tol * fabs(want);
}

static int const_rank(opt_ctx *c, int v) {
    const kiln_tensor *t = opt_const(c, v);
    return t ? t->rank : 0;
}

int opt_is_scalar(opt_ctx *c, int v, double want, const kiln_tensor *x) {
    double got;
    int dt;
    if (!opt_const_scalar(c, v, &got, &dt) || !near(got, want, dt)) return 0;
    int r = const_rank(c, v);
    /* a [1, 1] constant would lift a 1-D x to 2-D */
    return r == 0 || (x->rank >= 0 && r <= x->rank);
}

static const kiln_tensor unknown_type = {0, -1, {0}, NULL, NULL};

const kiln_tensor *opt_fact(opt_ctx *c, int v) {
    if (v < 0 || v >= c->g->n_values) return &unknown_type;
    const kiln_graph_value *gv = &c->g->values[v];
    if (gv->is_const) return gv->konst.kind == KILN_KIND_TENSOR ? &gv->konst.t : &unknown_type;
    if (gv->outer >= 0 && c->parent) return opt_fact(c->parent, gv->outer);
    if (v < c->n_tracked && c->facts && c->facts[v].kind == KILN_KIND_TENSOR) return &c->facts[v].t;
    return &unknown_type;
}

int opt_dim_known(int64_t d) { return d >= 0; }

int opt_same_shape(const kiln_tensor *a, const kiln_tensor *b) {
    if (a->rank < 0 || a->rank != b->rank) return 0;
    for (int i = 0; i < a->rank; i++)
        if (a->dims[i] != b->dims[i] || a->dims[i] == KILN_DIM_UNKNOWN) return 0;
    return 1;
}

/* ---------------------------------------------------------------- attributes */

static int attr_named(kiln_attr *a, const char *name, int type) {
    memset(a, 0, sizeof *a);
    a->type = type;
    a->name = strdup(name);
    return a->name != NULL;
}

int opt_attr_int(kiln_attr *a, const char *name, int64_t v) {
    if (!attr_named(a, name, KILN_ATTR_INT)) return 0;
    a->i = v;
    return 1;
}

int opt_attr_float(kiln_attr *a, const char *name, float v) {
    if (!attr_named(a, name, KILN_ATTR_FLOAT)) return 0;
    a->f = v;
    return 1;
}

int opt_attr_string(kiln_attr *a, const char *name, const char *s) {
    if (!attr_named(a, name, KILN_ATTR_STRING)) return 0;
    a->s = strdup(s);
    a->s_len = strlen(s);
    return a->s != NULL;
}

int opt_attr_floats(kiln_attr *a, const char *name, const float *v, int n) {
    if (!attr_named(a, name, KILN_ATTR_FLOATS)) return 0;
    a->floats = malloc(sizeof(float) * (size_t)(n ? n : 1));
    if (!a->floats) return 0;
    if (n) memcpy(a->floats, v, sizeof(float) * (size_t)n);
    a->n = n;
    return 1;
}

int opt_attr_ints(kiln_attr *a, const char *name, const int64_t *v, int n) {
    if (!attr_named(a, name, KILN_ATTR_INTS)) return 0;
    a->ints = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!a->ints) return 0;
    if (n) memcpy(a->ints, v, sizeof(int64_t) * (size_t)n);
    a->n = n;
    return 1;
}

void opt_attrs_free(kiln_attr *attrs, int n) {
    for (int i = 0; attrs && i < n; i++) kiln_attr_free(&attrs[i]);
    free(attrs);
}

kiln_status opt_attrs_take(opt_ctx *c, kiln_node *n, int extra, kiln_attr **out, int *count) {
    kiln_attr *a = calloc((size_t)(n->n_attrs + extra + 1), sizeof *a);
    if (!a) return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    if (n->n_attrs) memcpy(a, n->attrs, (size_t)n->n_attrs * sizeof *a);
    *count = n->n_attrs;
    free(n->attrs);
    n->attrs = NULL;
    n->n_attrs = 0;
    *out = a;
    return KILN_OK;
}

/* ---------------------------------------------------------------- editing */

static void node_release(kiln_node *n) {
    /* a node the session prepared before optimising holds its kernel state */
    if (n->op && n->op->fini && n->state) n->op->fini(n->state);
    free(n->name);
    free(n->op_type);
    free(n->domain);
    free(n->in);
    free(n->out);
    free(n->implicit);
    opt_attrs_free(n->attrs, n->n_attrs);
    memset(n, 0, sizeof *n);
}

static void add_uses(opt_ctx *c, const kiln_node *n, int delta) {
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0 && n->in[k] < c->n_tracked) c->uses[n->in[k]] += delta;
    for (int k = 0; k < n->n_implicit; k++)
        if (n->implicit[k] < c->n_tracked) c->uses[n->implicit[k]] += delta;
}

kiln_status opt_replace(opt_ctx *c, kiln_node **pattern, int n_pattern, const char *domain,
                        const char *op, int opset, const int *ins, int n_in, const int *outs,
                        int n_out, kiln_attr *attrs, int n_attrs) {
    kiln_graph *g = c->g;
    int first = INT_MAX, last = -1;
    for (int k = 0; k < n_pattern; k++) {
        int i = opt_node_index(c, pattern[k]);
        if (i < first) first = i;
        if (i > last) last = i;
    }
    const char *first_name = g->nodes[first].name;
    kiln_node fresh = {0};
    size_t len = strlen(first_name) + strlen(op) + sizeof "_fused_";
    fresh.name = malloc(len);
    fresh.op_type = strdup(op);
    fresh.domain = strdup(domain);
    fresh.in = malloc(sizeof(int) * (size_t)(n_in ? n_in : 1));
    fresh.out = malloc(sizeof(int) * (size_t)(n_out ? n_out : 1));
    fresh.attrs = attrs;
    fresh.n_attrs = n_attrs;
    if (!fresh.name || !fresh.op_type || !fresh.domain || !fresh.in || !fresh.out) {
        node_release(&fresh);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    /* a node fused again (FusedConv gaining an activation) keeps its name */
    size_t fl = strlen(first_name), ol = strlen(op);
    if (fl > ol + 7 && !strcmp(first_name + fl - ol, op) && !strncmp(first_name + fl - ol - 7, "_fused_", 7))
        snprintf(fresh.name, len, "%s", first_name);
    else
        snprintf(fresh.name, len, "%s_fused_%s", first_name, op);
    fresh.n_in = n_in;
    fresh.n_out = n_out;
    if (n_in) memcpy(fresh.in, ins, sizeof(int) * (size_t)n_in);
    if (n_out) memcpy(fresh.out, outs, sizeof(int) * (size_t)n_out);
    if (opset < 0) {
        int64_t v = kiln_model_opset(g->model, domain);
        opset = v >= 1 && v <= INT_MAX ? (int)v : 1;
    }
    fresh.opset = opset;
    if (c->verbose) {
        fprintf(stderr, "kiln: fused %d nodes into '%s' (%s%s%s):", n_pattern, fresh.name, domain,
                domain[0] ? ":" : "", op);
        for (int k = 0; k < n_pattern; k++) fprintf(stderr, " %s", pattern[k]->op_type);
        fprintf(stderr, "\n");
    }
    for (int k = 0; k < n_pattern; k++) {
        add_uses(c, pattern[k], -1);
        pattern[k]->removed = 1;
    }
    /* the last slot keeps topological order: every input of the pattern is produced before it
     * and every reader of its outputs comes after it */
    node_release(&g->nodes[last]);
    g->nodes[last] = fresh;
    add_uses(c, &g->nodes[last], +1);
    for (int k = 0; k < n_out; k++)
        if (outs[k] >= 0) g->values[outs[k]].producer = last;
    c->rewrites++;
    return KILN_OK;
}

int opt_add_value(opt_ctx *c, const char *name) {
    kiln_graph *g = c->g;
    size_t len = strlen(name) + 24;
    char *unique = malloc(len);
    if (!unique) return -1;
    snprintf(unique, len, "%s", name);
    for (int k = 1; kiln_graph_find_value(g, unique) >= 0; k++) snprintf(unique, len, "%s_%d", name, k);
    int v = kiln_graph_add_value(g, unique);
    free(unique);
    return v;
}

void opt_set_input(opt_ctx *c, kiln_node *n, int i, int v) {
    int old = n->in[i];
    if (old >= 0 && old < c->n_tracked) c->uses[old]--;
    n->in[i] = v;
    if (v >= 0 && v < c->n_tracked) c->uses[v]++;
}

int opt_add_const(opt_ctx *c, const char *name, kiln_tensor *t) {
    kiln_graph *g = c->g;
    int v = opt_add_value(c, name);
    if (v < 0) return -1;
    kiln_graph_value *gv = &g->values[v];
    gv->is_const = 1;
    gv->konst.kind = KILN_KIND_TENSOR;
    gv->konst.t = *t;
    memset(t, 0, sizeof *t);
    gv->type.kind = KILN_KIND_TENSOR;
    gv->type.dtype = gv->konst.t.dtype;
    gv->type.rank = gv->konst.t.rank;
    memcpy(gv->type.dims, gv->konst.t.dims, sizeof gv->type.dims);
    gv->has_type = 1;
    return v;
}

kiln_status opt_compact(opt_ctx *c) {
    kiln_graph *g = c->g;
    int w = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].removed) {
            node_release(&g->nodes[i]);
            continue;
        }
        if (w != i) g->nodes[w] = g->nodes[i];
        w++;
    }
    g->n_nodes = w;
    for (int v = 0; v < g->n_values; v++) g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_out; k++)
            if (g->nodes[i].out[k] >= 0) g->values[g->nodes[i].out[k]].producer = i;
    return KILN_OK;
}
