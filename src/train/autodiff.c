/* Reverse-mode differentiation: which values need a gradient, the backward walk in reverse
 * topological order with fan-out sums, and the node-building helpers the rules use. */
#include "autodiff.h"
#include "../core/dtype.h"
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- building */

int kiln_ad_value(kiln_ad *a, const char *base) {
    kiln_graph *g = a->g;
    size_t len = strlen(base) + 24;
    char *name = malloc(len);
    if (!name) return -1;
    snprintf(name, len, "%s", base);
    for (int k = 1; kiln_graph_find_value(g, name) >= 0; k++) snprintf(name, len, "%s_%d", base, k);
    int v = kiln_graph_add_value(g, name);
    free(name);
    return v;
}

static void attrs_free(kiln_attr *at, int n) {
    for (int i = 0; at && i < n; i++) kiln_attr_free(&at[i]);
    free(at);
}

int kiln_ad_node(kiln_ad *a, const char *domain, const char *op, const int *ins, int n_in, int *outs,
                 int n_out, kiln_attr *attrs, int n_attrs) {
    kiln_graph *g = a->g;
    if (g->n_nodes == g->cap_nodes) {
        int cap = g->cap_nodes ? g->cap_nodes * 2 : 64;
        kiln_node *nn = realloc(g->nodes, (size_t)cap * sizeof *nn);
        if (!nn) goto oom;
        g->nodes = nn;
        g->cap_nodes = cap;
    }
    kiln_node n = {0};
    char name[96];
    snprintf(name, sizeof name, "%s_%s_%d", a->prefix ? a->prefix : "grad", op, g->n_nodes);
    n.name = strdup(name);
    n.op_type = strdup(op);
    n.domain = strdup(domain);
    n.in = malloc(sizeof(int) * (size_t)(n_in ? n_in : 1));
    n.out = malloc(sizeof(int) * (size_t)(n_out ? n_out : 1));
    if (!n.name || !n.op_type || !n.domain || !n.in || !n.out) {
        free(n.name); free(n.op_type); free(n.domain); free(n.in); free(n.out);
        goto oom;
    }
    n.n_in = n_in;
    n.n_out = n_out;
    if (n_in) memcpy(n.in, ins, sizeof(int) * (size_t)n_in);
    n.opset = domain[0] ? 1 : a->opset;
    for (int k = 0; k < n_out; k++) {
        if (outs[k] != -2) {
            n.out[k] = outs[k];
            if (outs[k] >= 0) g->values[outs[k]].producer = g->n_nodes;
            continue;
        }
        char vname[128];
        snprintf(vname, sizeof vname, "%s_out%d", name, k);
        int v = kiln_ad_value(a, vname);
        if (v < 0) {
            free(n.name); free(n.op_type); free(n.domain); free(n.in); free(n.out);
            goto oom;
        }
        g->values[v].producer = g->n_nodes;
        n.out[k] = outs[k] = v;
    }
    n.attrs = attrs;
    n.n_attrs = n_attrs;
    for (int k = 0; k < n_in; k++)
        if (ins[k] >= 0) g->values[ins[k]].n_consumers++;
    g->nodes[g->n_nodes++] = n;
    for (int k = 0; k < n_out; k++)
        if (outs[k] >= 0) return outs[k];
    return 0;
oom:
    attrs_free(attrs, n_attrs);
    kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
    return -1;
}

int kiln_ad_op1(kiln_ad *a, const char *domain, const char *op, const int *ins, int n_in, kiln_attr *attrs,
                int n_attrs) {
    int out = -2;
    return kiln_ad_node(a, domain, op, ins, n_in, &out, 1, attrs, n_attrs);
}

int kiln_ad_const(kiln_ad *a, const char *base, kiln_tensor *t) {
    int c = kiln_ad_value(a, base);
    if (c < 0) {
        kiln_tensor_release(t);
        kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
        return -1;
    }
    kiln_graph_value *gv = &a->g->values[c];
    gv->is_const = 1;
    gv->konst.kind = KILN_KIND_TENSOR;
    gv->konst.t = *t;
    gv->type.kind = KILN_KIND_TENSOR;
    gv->type.dtype = t->dtype;
    gv->type.rank = t->rank;
    for (int i = 0; i < t->rank; i++) gv->type.dims[i] = t->dims[i];
    gv->has_type = 1;
    return c;
}

int kiln_ad_scalar(kiln_ad *a, int dtype, double v) {
    kiln_tensor t = {0};
    t.dtype = dtype;
    t.rank = 0;
    if (kiln_tensor_alloc(&t, a->e) != KILN_OK) return -1;
    if (dtype == KILN_DTYPE_DOUBLE) *(double *)t.data = v;
    else if (dtype == KILN_DTYPE_FLOAT) *(float *)t.data = (float)v;
    else {
        kiln_tensor_release(&t);
        kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "gradients are built for float and double only, not %s",
                  kiln_dtype_name(dtype));
        return -1;
    }
    return kiln_ad_const(a, "grad_const", &t);
}

static int attr_named(kiln_attr *at, const char *name, int type) {
    memset(at, 0, sizeof *at);
    at->type = type;
    at->name = strdup(name);
    return at->name != NULL;
}

int kiln_ad_attr_int(kiln_attr *at, const char *name, int64_t v) {
    if (!attr_named(at, name, KILN_ATTR_INT)) return 0;
    at->i = v;
    return 1;
}

int kiln_ad_attr_float(kiln_attr *at, const char *name, float v) {
    if (!attr_named(at, name, KILN_ATTR_FLOAT)) return 0;
    at->f = v;
    return 1;
}

int kiln_ad_attr_string(kiln_attr *at, const char *name, const char *s) {
    if (!attr_named(at, name, KILN_ATTR_STRING)) return 0;
    at->s = strdup(s);
    at->s_len = strlen(s);
    return at->s != NULL;
}

int kiln_ad_attr_ints(kiln_attr *at, const char *name, const int64_t *v, int n) {
    if (!attr_named(at, name, KILN_ATTR_INTS)) return 0;
    at->ints = malloc(sizeof(int64_t) * (size_t)(n ? n : 1));
    if (!at->ints) return 0;
    if (n) memcpy(at->ints, v, sizeof(int64_t) * (size_t)n);
    at->n = n;
    return 1;
}

kiln_status kiln_ad_copy_attrs(kiln_ad *a, const kiln_node *n, int extra, kiln_attr **out, int *count) {
    kiln_attr *at = calloc((size_t)(n->n_attrs + extra + 1), sizeof *at);
    if (!at) return kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
    int k = 0, ok = 1;
    for (int i = 0; i < n->n_attrs && ok; i++) {
        const kiln_attr *s = &n->attrs[i];
        switch (s->type) {
        case KILN_ATTR_INT: ok = kiln_ad_attr_int(&at[k++], s->name, s->i); break;
        case KILN_ATTR_FLOAT: ok = kiln_ad_attr_float(&at[k++], s->name, s->f); break;
        case KILN_ATTR_STRING: ok = kiln_ad_attr_string(&at[k++], s->name, s->s ? s->s : ""); break;
        case KILN_ATTR_INTS: ok = kiln_ad_attr_ints(&at[k++], s->name, s->ints, s->n); break;
        case KILN_ATTR_FLOATS:
            ok = attr_named(&at[k], s->name, KILN_ATTR_FLOATS) &&
                 (at[k].floats = malloc(sizeof(float) * (size_t)(s->n ? s->n : 1))) != NULL;
            if (ok) {
                if (s->n) memcpy(at[k].floats, s->floats, sizeof(float) * (size_t)s->n);
                at[k].n = s->n;
            }
            k++;
            break;
        default:
            attrs_free(at, k);
            return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "node '%s' (op %s): attribute '%s' cannot be copied "
                             "into its gradient node", n->name, n->op_type, s->name);
        }
    }
    if (!ok) {
        attrs_free(at, k);
        return kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    *out = at;
    *count = k;
    return KILN_OK;
}

int kiln_ad_dtype(const kiln_ad *a, int v) {
    if (v < 0) return 0;
    if (v < a->n_fwd) return a->dtype[v];
    const kiln_graph_value *gv = &a->g->values[v];
    return gv->has_type ? gv->type.dtype : 0;
}

/* ---------------------------------------------------------------- the walk */

kiln_status kiln_ad_init(kiln_ad *a, kiln_model *m, kiln_err *e) {
    memset(a, 0, sizeof *a);
    a->m = m;
    a->g = m->graph;
    a->e = e;
    int64_t v = kiln_model_opset(m, "");
    a->opset = v >= 1 && v <= INT_MAX ? (int)v : 1;
    return KILN_OK;
}

void kiln_ad_free(kiln_ad *a) {
    if (a->oc.g) opt_ctx_free(&a->oc);
    for (int v = 0; a->contrib && v < a->n_fwd; v++) free(a->contrib[v]);
    free(a->contrib);
    free(a->n_contrib);
    free(a->cap_contrib);
    free(a->dtype);
    free(a->active);
    a->contrib = NULL;
    a->n_contrib = a->cap_contrib = a->dtype = NULL;
    a->active = NULL;
}

static kiln_status add_contrib(kiln_ad *a, int v, int grad) {
    if (a->n_contrib[v] == a->cap_contrib[v]) {
        int cap = a->cap_contrib[v] ? a->cap_contrib[v] * 2 : 2;
        int *c = realloc(a->contrib[v], sizeof(int) * (size_t)cap);
        if (!c) return kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
        a->contrib[v] = c;
        a->cap_contrib[v] = cap;
    }
    a->contrib[v][a->n_contrib[v]++] = grad;
    return KILN_OK;
}

/* The gradient of v: its contributions summed (one Sum node for a fan-out), or -1. */
static int gradient_of(kiln_ad *a, int v) {
    int n = a->n_contrib[v];
    if (n == 0) return -1;
    if (n == 1) return a->contrib[v][0];
    int s = kiln_ad_op1(a, "", "Sum", a->contrib[v], n, NULL, 0);
    if (s < 0) return -2;
    a->contrib[v][0] = s;
    a->n_contrib[v] = 1;
    return s;
}

static int is_float_dtype(int dt) { return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE; }

static kiln_status forward_types(kiln_ad *a) {
    kiln_graph *g = a->g;
    KILN_TRY(opt_ctx_init(&a->oc, g, NULL, 0, a->e));
    for (int v = 0; v < a->n_fwd; v++) a->dtype[v] = opt_fact(&a->oc, v)->dtype;
    /* what static inference could not type: most ops keep the element type of their first input */
    for (int i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        int guess = 0;
        for (int k = 0; k < n->n_in && !kiln_dtype_is_float(guess); k++)
            if (n->in[k] >= 0 && a->dtype[n->in[k]]) guess = a->dtype[n->in[k]];
        for (int k = 0; k < n->n_out; k++)
            if (n->out[k] >= 0 && !a->dtype[n->out[k]]) a->dtype[n->out[k]] = guess;
    }
    return KILN_OK;
}

kiln_status kiln_ad_backward(kiln_ad *a, int loss, const int *params, int n_params, const int *frozen,
                             int n_frozen, int *grads) {
    kiln_graph *g = a->g;
    a->n_fwd = g->n_values;
    int nv = a->n_fwd, n_nodes = g->n_nodes;
    size_t cnt = (size_t)(nv ? nv : 1);
    a->dtype = calloc(cnt, sizeof(int));
    a->active = calloc(cnt, 1);
    a->n_contrib = calloc(cnt, sizeof(int));
    a->cap_contrib = calloc(cnt, sizeof(int));
    a->contrib = calloc(cnt, sizeof(int *));
    unsigned char *reached = calloc(cnt, 1), *toloss = calloc(cnt, 1);
    kiln_status st = KILN_OK;
    if (!a->dtype || !a->active || !a->n_contrib || !a->cap_contrib || !a->contrib || !reached || !toloss) {
        st = kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    if ((st = forward_types(a))) goto done;
    /* forward: values that depend on a trainable parameter through float paths */
    for (int i = 0; i < n_params; i++) reached[params[i]] = 1;
    for (int i = 0; i < n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->removed || kiln_grad_blocks(n)) continue;
        int any = 0;
        for (int k = 0; k < n->n_in; k++) any |= n->in[k] >= 0 && reached[n->in[k]];
        /* a parameter read inside a subgraph (If, Loop, Scan) reaches the node's outputs too */
        for (int k = 0; k < n->n_implicit; k++) any |= reached[n->implicit[k]];
        if (!any) continue;
        for (int k = 0; k < n->n_out; k++) {
            int v = n->out[k];
            if (v >= 0 && (a->dtype[v] == 0 || kiln_dtype_is_float(a->dtype[v]))) reached[v] = 1;
        }
    }
    for (int i = 0; i < n_frozen; i++) reached[frozen[i]] = 0;
    /* backward: values the loss reads */
    toloss[loss] = 1;
    for (int i = n_nodes - 1; i >= 0; i--) {
        const kiln_node *n = &g->nodes[i];
        if (n->removed) continue;
        int any = 0;
        for (int k = 0; k < n->n_out; k++) any |= n->out[k] >= 0 && toloss[n->out[k]];
        if (!any) continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) toloss[n->in[k]] = 1;
        for (int k = 0; k < n->n_implicit; k++) toloss[n->implicit[k]] = 1;
    }
    for (int v = 0; v < nv; v++) a->active[v] = reached[v] && toloss[v];
    if (!a->active[loss]) {
        st = KILN_OK; /* no parameter reaches the loss: every gradient is zero */
    } else {
        if (!is_float_dtype(a->dtype[loss])) {
            st = kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "the loss has element type %s; gradients are built for "
                           "float and double", kiln_dtype_name(a->dtype[loss]));
            goto done;
        }
        int one = kiln_ad_scalar(a, a->dtype[loss], 1.0);
        if (one < 0 || (st = add_contrib(a, loss, one))) {
            st = st ? st : a->e->code;
            goto done;
        }
        for (int i = n_nodes - 1; i >= 0; i--) {
            /* g->nodes moves as nodes are added: the node is re-read after each call */
            kiln_node *n = &g->nodes[i];
            if (n->removed) continue;
            int any_out = 0, any_in = 0;
            for (int k = 0; k < n->n_out; k++) any_out |= n->out[k] >= 0 && a->active[n->out[k]] && a->n_contrib[n->out[k]];
            for (int k = 0; k < n->n_in; k++) any_in |= n->in[k] >= 0 && a->active[n->in[k]];
            for (int k = 0; k < n->n_implicit; k++) any_in |= a->active[n->implicit[k]];
            if (!any_out || !any_in) continue;
            if (n->n_out > 64 || n->n_in > 64) {
                st = kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "node '%s' (op %s): too many inputs or outputs to "
                               "differentiate", n->name, n->op_type);
                goto done;
            }
            int dy[64], dx[64];
            unsigned char need[64];
            for (int k = 0; k < n->n_out; k++) {
                dy[k] = n->out[k] >= 0 && a->active[n->out[k]] ? gradient_of(a, n->out[k]) : -1;
                if (dy[k] == -2) {
                    st = a->e->code;
                    goto done;
                }
                n = &g->nodes[i];
            }
            for (int k = 0; k < n->n_in; k++) {
                need[k] = n->in[k] >= 0 && a->active[n->in[k]];
                dx[k] = -1;
            }
            kiln_grad_rule rule = n->n_implicit ? NULL : kiln_grad_rule_for(n);
            if (!rule) {
                st = kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "node '%s' (op %s%s%s): no gradient", n->name,
                               n->domain[0] ? n->domain : "", n->domain[0] ? ":" : "", n->op_type);
                goto done;
            }
            /* the rule reads a copy: its own node additions may move g->nodes */
            kiln_node copy = *n;
            if ((st = rule(a, &copy, dy, need, dx))) {
                if (st == KILN_ERR_NOT_IMPLEMENTED && !a->e->msg[0])
                    kiln_fail(a->e, st, "node '%s' (op %s): no gradient", copy.name, copy.op_type);
                else
                    kiln_err_prefix(a->e, "node '%s' (op %s)", copy.name, copy.op_type);
                goto done;
            }
            for (int k = 0; k < copy.n_in; k++) {
                if (!need[k]) continue;
                if (dx[k] < 0) {
                    st = kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "node '%s' (op %s): no gradient for input %d",
                                   copy.name, copy.op_type, k);
                    goto done;
                }
                if ((st = add_contrib(a, copy.in[k], dx[k]))) goto done;
            }
        }
    }
    for (int i = 0; i < n_params; i++) {
        int gr = a->active[params[i]] ? gradient_of(a, params[i]) : -1;
        if (gr == -2) {
            st = a->e->code;
            goto done;
        }
        if (gr < 0) {
            /* a parameter the loss does not depend on: a zero gradient of its shape */
            kiln_attr at[1];
            if (!kiln_ad_attr_float(&at[0], "scale", 0.0f)) {
                st = kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
                goto done;
            }
            kiln_attr *heap = malloc(sizeof at);
            if (!heap) {
                kiln_attr_free(&at[0]);
                st = kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
                goto done;
            }
            memcpy(heap, at, sizeof at);
            int ins[2] = {params[i], params[i]};
            gr = kiln_ad_op1(a, "kiln", "SumTo", ins, 2, heap, 1);
            if (gr < 0) {
                st = a->e->code;
                goto done;
            }
        }
        grads[i] = gr;
    }
done:
    free(reached);
    free(toloss);
    return st;
}
