/* com.microsoft Attention on a differentiated path is rewritten, in the training graph only, into
 * the standard ops it stands for (the projection, the head split, scaled scores, the mask,
 * Softmax, the weighted sum and the head merge), which the rules then differentiate. The eval
 * model keeps the fused node. Supported: no past/present, no relative position bias, no
 * qkv_hidden_sizes that differ, not unidirectional; mask_index absent or a 2-D (B, T) 0/1 mask. */
#include "autodiff.h"
#include "../core/dtype.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int const_ints(kiln_ad *a, const int64_t *v, int n, int rank) {
    kiln_tensor t = {0};
    t.dtype = KILN_DTYPE_INT64;
    t.rank = rank;
    t.dims[0] = n;
    if (kiln_tensor_alloc(&t, a->e) != KILN_OK) return -1;
    memcpy(t.data, v, sizeof(int64_t) * (size_t)n);
    return kiln_ad_const(a, "grad_attention_const", &t);
}

static int op2(kiln_ad *a, const char *op, int x, int y) {
    int ins[2] = {x, y};
    return kiln_ad_op1(a, "", op, ins, 2, NULL, 0);
}

static int transpose(kiln_ad *a, int x, const int64_t *perm, int n) {
    kiln_attr *at = calloc(1, sizeof *at);
    if (!at || !kiln_ad_attr_ints(&at[0], "perm", perm, n)) {
        free(at);
        kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
        return -1;
    }
    return kiln_ad_op1(a, "", "Transpose", &x, 1, at, 1);
}

static int gather0(kiln_ad *a, int x, int64_t k) {
    int idx = const_ints(a, &k, 1, 0);
    return idx < 0 ? -1 : op2(a, "Gather", x, idx);
}

static kiln_status refuse(kiln_ad *a, const kiln_node *n, const char *why) {
    return kiln_fail(a->e, KILN_ERR_NOT_IMPLEMENTED, "node '%s' (op com.microsoft:Attention): no gradient %s", n->name,
                     why);
}

/* Appends the decomposition of node `ni`, writing its output value; returns KILN_OK. */
static kiln_status expand_one(kiln_ad *a, int ni) {
    kiln_node n = a->g->nodes[ni];
    int in = n.in[0], w = n.n_in > 1 ? n.in[1] : -1, bias = n.n_in > 2 ? n.in[2] : -1;
    int mask = n.n_in > 3 ? n.in[3] : -1, y = n.out[0];
    for (int k = 4; k < n.n_in; k++)
        if (n.in[k] >= 0) return refuse(a, &n, "with past, attention_bias or past_sequence_length inputs");
    for (int k = 1; k < n.n_out; k++)
        if (n.out[k] >= 0 && a->g->values[n.out[k]].n_consumers) return refuse(a, &n, "with a present output");
    if (w < 0) return refuse(a, &n, "without weights");
    if (kiln_attr_int(&n, "unidirectional", 0)) return refuse(a, &n, "for unidirectional attention");
    if (kiln_attr_int(&n, "do_rotary", 0)) return refuse(a, &n, "with do_rotary");
    int nq = 0;
    const int64_t *qkv = kiln_attr_ints(&n, "qkv_hidden_sizes", &nq);
    if (qkv && (nq != 3 || qkv[0] != qkv[1] || qkv[1] != qkv[2]))
        return refuse(a, &n, "for unequal qkv_hidden_sizes");
    int64_t N = kiln_attr_int(&n, "num_heads", 0);
    const kiln_type *wt = &a->g->values[w].type;
    if (!a->g->values[w].has_type || wt->rank != 2 || wt->dims[1] < 0 || N <= 0 || wt->dims[1] % (3 * N))
        return refuse(a, &n, "unless the weights' shape (D, 3 D) and num_heads are known");
    int64_t H = wt->dims[1] / 3 / N;
    int dt = a->g->values[w].type.dtype;
    if (mask >= 0) {
        const kiln_graph_value *mv = &a->g->values[mask];
        if (!mv->has_type || mv->type.rank != 2) return refuse(a, &n, "unless mask_index is a 2-D (batch, length) mask");
    }
    double scale = kiln_attr_float(&n, "scale", 0.0f);
    if (scale == 0.0) scale = (float)(1.0 / sqrt((double)H)); /* as the kernel: a float32 scale */
    double filter = kiln_attr_float(&n, "mask_filter_value", -10000.0f);

    int qkvv = op2(a, "MatMul", in, w);
    if (qkvv >= 0 && bias >= 0) qkvv = op2(a, "Add", qkvv, bias);
    int64_t split[5] = {0, 0, 3, N, H}, merge[3] = {0, 0, -1};
    int sh = const_ints(a, split, 5, 1);
    int r = qkvv < 0 || sh < 0 ? -1 : op2(a, "Reshape", qkvv, sh);
    static const int64_t pq[5] = {2, 0, 3, 1, 4}, pk[5] = {2, 0, 3, 4, 1}, pc[4] = {0, 2, 1, 3};
    int tq = r < 0 ? -1 : transpose(a, r, pq, 5);
    int tk = tq < 0 ? -1 : transpose(a, r, pk, 5);
    int q = tk < 0 ? -1 : gather0(a, tq, 0);
    int kT = q < 0 ? -1 : gather0(a, tk, 1);
    int v = kT < 0 ? -1 : gather0(a, tq, 2);
    int s = v < 0 ? -1 : op2(a, "MatMul", q, kT);
    int sc = s < 0 ? -1 : kiln_ad_scalar(a, dt, scale);
    s = sc < 0 ? -1 : op2(a, "Mul", s, sc);
    if (s >= 0 && mask >= 0) {
        kiln_attr *at = calloc(1, sizeof *at);
        if (!at || !kiln_ad_attr_int(&at[0], "to", dt)) {
            free(at);
            return kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
        }
        int mf = kiln_ad_op1(a, "", "Cast", &mask, 1, at, 1);
        int one = mf < 0 ? -1 : kiln_ad_scalar(a, dt, 1.0);
        int inv = one < 0 ? -1 : op2(a, "Sub", one, mf);
        int fv = inv < 0 ? -1 : kiln_ad_scalar(a, dt, filter);
        int add = fv < 0 ? -1 : op2(a, "Mul", inv, fv);
        int64_t ms[4] = {0, 1, 1, -1};
        int msh = add < 0 ? -1 : const_ints(a, ms, 4, 1);
        int m4 = msh < 0 ? -1 : op2(a, "Reshape", add, msh);
        s = m4 < 0 ? -1 : op2(a, "Add", s, m4);
    }
    int p = -1;
    if (s >= 0) {
        kiln_attr *at = calloc(1, sizeof *at);
        if (!at || !kiln_ad_attr_int(&at[0], "axis", -1)) {
            free(at);
            return kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
        }
        p = kiln_ad_op1(a, "", "Softmax", &s, 1, at, 1);
    }
    int c = p < 0 ? -1 : op2(a, "MatMul", p, v);
    int ct = c < 0 ? -1 : transpose(a, c, pc, 4);
    int mh = ct < 0 ? -1 : const_ints(a, merge, 3, 1);
    if (mh < 0) return a->e->code ? a->e->code : kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
    int ins[2] = {ct, mh}, outs[1] = {y};
    if (kiln_ad_node(a, "", "Reshape", ins, 2, outs, 1, NULL, 0) < 0) return a->e->code;
    return KILN_OK;
}

/* Moves the nodes appended since `from` to position `at` (before the node there), keeping
 * topological order, and renumbers the producers. */
static kiln_status splice(kiln_ad *a, int from, int at) {
    kiln_graph *g = a->g;
    int k = g->n_nodes - from;
    kiln_node *tmp = malloc(sizeof *tmp * (size_t)(k ? k : 1));
    if (!tmp) return kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
    memcpy(tmp, g->nodes + from, sizeof *tmp * (size_t)k);
    memmove(g->nodes + at + k, g->nodes + at, sizeof *tmp * (size_t)(from - at));
    memcpy(g->nodes + at, tmp, sizeof *tmp * (size_t)k);
    free(tmp);
    for (int i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].removed) continue;
        for (int o = 0; o < g->nodes[i].n_out; o++)
            if (g->nodes[i].out[o] >= 0) g->values[g->nodes[i].out[o]].producer = i;
    }
    return KILN_OK;
}

kiln_status kiln_ad_expand_attention(kiln_ad *a, const int *params, int n_params) {
    kiln_graph *g = a->g;
    unsigned char *reached = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    if (!reached) return kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < n_params; i++) reached[params[i]] = 1;
    kiln_status st = KILN_OK;
    int n_fwd = g->n_nodes;
    for (int i = 0; i < n_fwd && !st; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->removed) continue;
        int any = 0;
        for (int k = 0; k < n->n_in; k++) any |= n->in[k] >= 0 && reached[n->in[k]];
        if (!any) continue;
        for (int k = 0; k < n->n_out; k++)
            if (n->out[k] >= 0) reached[n->out[k]] = 1;
        if (strcmp(n->op_type, "Attention") || strcmp(n->domain, "com.microsoft")) continue;
        int from = g->n_nodes, old_values = g->n_values;
        if ((st = expand_one(a, i))) break;
        g->nodes[i].removed = 1;
        int added = g->n_nodes - from;
        if ((st = splice(a, from, i + 1))) break;
        i += added; /* the new nodes read only the node's inputs and constants: nothing to expand */
        n_fwd += added;
        unsigned char *r2 = realloc(reached, (size_t)g->n_values);
        if (!r2) {
            st = kiln_fail(a->e, KILN_ERR_NO_MEMORY, "out of memory");
            break;
        }
        reached = r2;
        /* conservatively reached: this only decides which later Attention nodes are expanded */
        memset(reached + old_values, 1, (size_t)(g->n_values - old_values));
    }
    free(reached);
    return st;
}
