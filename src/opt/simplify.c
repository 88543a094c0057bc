/* Clean-ups that let the fusions see exported patterns whole. Exporters write Reshapes whose
 * target is computed from a tensor's own Shape and gives that same shape back (T5's attention
 * reshapes P.V to [B, -1, S, H]); such a Reshape is an identity, but it and the Shape reading its
 * input hide the MatMul it follows from the attention fusion, which needs that MatMul's result
 * to be read by the head merge alone. Likewise T5's first layer reads the sequence length off its
 * head-split query and key (Gather(Shape(q4), 2)) to size the relative position bias: that length
 * is a dimension of the graph input they are computed from, and reading it there leaves q4 and k4
 * to the fusion. */
#include "fusions.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int same_dim(int64_t a, int64_t b) { return a == b && a != KILN_DIM_UNKNOWN; }

/* v is read by a subgraph of some node (by name): such readers cannot be pointed elsewhere */
static int read_implicitly(const kiln_graph *g, int v) {
    for (int i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        for (int k = 0; !n->removed && k < n->n_implicit; k++)
            if (n->implicit[k] == v) return 1;
    }
    return 0;
}

/* Nodes whose every output is read by nobody, last first so that a dead chain goes in one walk
 * (nodes are in topological order). ONNX nodes have no side effects, so this only drops work. */
static void drop_dead(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = g->n_nodes - 1; i >= 0; i--) {
        kiln_node *n = &g->nodes[i];
        if (n->removed || n->n_out == 0) continue;
        int dead = 1;
        for (int k = 0; dead && k < n->n_out; k++) {
            int v = n->out[k];
            dead = v < 0 || (v < c->n_tracked && !c->uses[v] && !c->is_output[v]);
        }
        if (!dead) continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0 && n->in[k] < c->n_tracked) c->uses[n->in[k]]--;
        for (int k = 0; k < n->n_implicit; k++)
            if (n->implicit[k] < c->n_tracked) c->uses[n->implicit[k]]--;
        n->removed = 1;
        c->rewrites++;
    }
}

/* The graph input that v is computed from and that holds symbolic dimension d, and where: its
 * value index; -1 when none, or when several of v's source inputs hold d. Inputs declared with
 * one dimension name need not agree at run time (neither kiln nor onnxruntime enforces it), so
 * the size is read only from an input v itself comes from. */
static int source_input_with_dim(opt_ctx *c, int v, int64_t d, int64_t *at) {
    const kiln_graph *g = c->g;
    char *seen = calloc((size_t)g->n_values, 1);
    int *stack = malloc(sizeof(int) * (size_t)(g->n_values ? g->n_values : 1));
    int found = -1, n = 0, ambiguous = 0;
    if (!seen || !stack) {
        free(seen);
        free(stack);
        return -1;
    }
    stack[n++] = v;
    seen[v] = 1;
    while (n > 0 && !ambiguous) {
        int x = stack[--n];
        const kiln_graph_value *gv = &g->values[x];
        if (gv->producer < 0) {
            const kiln_tensor *f = opt_fact(c, x);
            for (int k = 0; !gv->is_const && k < f->rank; k++)
                if (f->dims[k] == d) {
                    if (found >= 0 && found != x) ambiguous = 1;
                    found = x;
                    *at = k;
                    break;
                }
            continue;
        }
        const kiln_node *p = &g->nodes[gv->producer];
        for (int k = 0; k < p->n_in; k++) {
            int u = p->in[k];
            if (u >= 0 && u < g->n_values && !seen[u]) {
                seen[u] = 1;
                stack[n++] = u;
            }
        }
    }
    free(seen);
    free(stack);
    if (ambiguous || found < 0) return -1;
    for (int i = 0; i < g->n_inputs; i++)
        if (g->inputs[i] == found) return found;
    return -1; /* an outer value of a subgraph, not this graph's input */
}

/* Shape(v) read only by Gathers of one symbolic dimension each, all found in one graph input v is
 * computed from: the Shape reads that input instead and each Gather the input's position of its
 * dimension. */
static kiln_status shape_from_input(opt_ctx *c, kiln_node *shape, int *moved) {
    kiln_graph *g = c->g;
    int v = shape->in[0], sv = shape->out[0], src = -1;
    const kiln_tensor *fv = opt_fact(c, v);
    if (fv->rank < 0 || sv < 0 || sv >= c->n_tracked || c->is_output[sv] || kiln_has_attr(shape, "start") || kiln_has_attr(shape, "end"))
        return KILN_OK;
    int readers = 0;
    int64_t at[KILN_MAX_RANK];
    kiln_node *gathers[KILN_MAX_RANK];
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        for (int k = 0; !n->removed && k < n->n_in; k++) {
            if (n->in[k] != sv) continue;
            const kiln_tensor *ti = n->n_in == 2 ? opt_const(c, n->in[1]) : NULL;
            if (k != 0 || n->domain[0] || strcmp(n->op_type, "Gather") || !ti || ti->rank > 1 ||
                kiln_numel(ti) != 1 || (ti->dtype != KILN_DTYPE_INT64 && ti->dtype != KILN_DTYPE_INT32) ||
                kiln_attr_int(n, "axis", 0) != 0 || readers == KILN_MAX_RANK)
                return KILN_OK;
            int64_t d = kiln_load_i64(ti->dtype, ti->data, 0);
            if (d < 0) d += fv->rank;
            if (d < 0 || d >= fv->rank || !KILN_DIM_IS_SYM(fv->dims[d])) return KILN_OK;
            int64_t j = 0;
            int in = source_input_with_dim(c, v, fv->dims[d], &j);
            if (in < 0 || (src >= 0 && in != src)) return KILN_OK;
            src = in;
            at[readers] = j;
            gathers[readers++] = n;
        }
    }
    if (!readers || readers != c->uses[sv] || src == v) return KILN_OK;
    for (int r = 0; r < readers; r++) {
        const kiln_tensor *ti = opt_const(c, gathers[r]->in[1]);
        kiln_tensor t = {0};
        int64_t one = 1;
        /* a scalar index keeps a scalar result, [k] a 1-D one */
        kiln_tensor_set_shape(&t, KILN_DTYPE_INT64, ti && ti->rank == 1 ? 1 : 0, &one);
        if (kiln_tensor_alloc(&t, c->e)) return c->e->code;
        *(int64_t *)t.data = at[r];
        char name[64];
        snprintf(name, sizeof name, "kiln_dim_index_%lld", (long long)at[r]);
        int iv = opt_add_const(c, name, &t);
        if (iv < 0) {
            kiln_tensor_release(&t);
            return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
        }
        opt_set_input(c, gathers[r], 1, iv);
    }
    opt_set_input(c, shape, 0, src);
    if (c->verbose) fprintf(stderr, "kiln: Shape '%s' reads graph input '%s'\n", shape->name, g->values[src].name);
    c->rewrites++;
    (*moved)++;
    return KILN_OK;
}

kiln_status opt_drop_same_shape_reshapes(opt_ctx *c) {
    kiln_graph *g = c->g;
    int dropped = 0;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *r = &g->nodes[i];
        if (r->removed || r->domain[0] || strcmp(r->op_type, "Reshape") || r->n_in != 2 || r->n_out != 1) continue;
        int x = r->in[0], y = r->out[0];
        if (x < 0 || y < 0 || y >= c->n_tracked || c->is_output[y]) continue;
        const kiln_tensor *fx = opt_fact(c, x), *fy = opt_fact(c, y);
        if (fx->rank < 0 || fx->rank != fy->rank || fx->dtype != fy->dtype) continue;
        int same = 1;
        for (int d = 0; same && d < fx->rank; d++) same = same_dim(fx->dims[d], fy->dims[d]);
        if (!same || read_implicitly(g, y)) continue;
        for (int j = i + 1; j < g->n_nodes; j++) {
            kiln_node *n = &g->nodes[j];
            for (int k = 0; !n->removed && k < n->n_in; k++)
                if (n->in[k] == y) opt_set_input(c, n, k, x);
        }
        if (c->verbose)
            fprintf(stderr, "kiln: Reshape '%s' keeps its input's shape: dropped\n", r->name);
        dropped++;
        c->rewrites++;
    }
    if (!c->parent)
        for (int i = 0; i < g->n_nodes; i++) {
            kiln_node *n = &g->nodes[i];
            if (!n->removed && !n->domain[0] && !strcmp(n->op_type, "Shape") && n->n_in == 1 && n->n_out == 1 &&
                n->in[0] >= 0 && c->g->values[n->in[0]].producer >= 0)
                KILN_TRY(shape_from_input(c, n, &dropped));
        }
    /* the Reshapes now read by nobody go with the shape arithmetic that fed them */
    if (dropped) drop_dead(c);
    return KILN_OK;
}
