/* Placement: which provider runs each node of the main graph, decided once when the session is
 * made, and the copies that keep every kernel's inputs in the memory it reads.
 *
 * A node goes to the first non-CPU provider that claims it, else to the CPU. The CPU keeps:
 * control flow (its subgraphs run on the CPU), ops whose output shapes depend on values, nodes on
 * sequences, and integer-only nodes fed from the host (shape arithmetic: moving it to a device
 * would only add copies back to the host, where Reshape and Slice read shapes).
 *
 * Copies are ordinary nodes (kiln:MemcpyFromHost, kiln:MemcpyToHost) inserted before the first
 * node that needs a value in another memory space, so memory planning and profiling see them like
 * any other node. A constant a device kernel reads is uploaded once, here. */
#include "placement.h"
#include "../ops/op.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the copy op ---- */

static kiln_status copy_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    return kiln_set_output_like(ctx, 0, x);
}

static kiln_status copy_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    size_t bytes = kiln_tensor_nbytes(x);
    if (!bytes) return KILN_OK;
    if (x->dtype == KILN_DTYPE_STRING)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "string tensors cannot leave the host");
    if (!x->dev && !y->dev) {
        memcpy(y->data, x->data, bytes);
        return KILN_OK;
    }
    if (x->dev && !y->dev) {
        /* the host reads it next: wait for the copy (and the work it depends on) */
        KILN_TRY(x->dev->vt->to_host(x->dev, y->data, x->data, bytes, ctx->err));
        return x->dev->vt->sync(x->dev, ctx->err);
    }
    if (!x->dev) return y->dev->vt->to_device(y->dev, y->data, x->data, bytes, ctx->err);
    if (x->dev == y->dev) return y->dev->vt->copy(y->dev, y->data, x->data, bytes, ctx->err);
    /* a session has one device provider, so placement never asks for this */
    return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "copies between two devices are not supported");
}

/* KILN_OP_ALIAS: when the value is already where it must go (a device input bound by the caller),
 * the runner aliases instead of copying. */
const kiln_op kiln_memcpy_op = {"kiln", "Memcpy", 1, KILN_OP_ALIAS, NULL, copy_infer, copy_compute, NULL};

int kiln_is_memcpy_node(const kiln_node *n) { return n->op == &kiln_memcpy_op; }

/* ---- deciding ---- */

static int has_subgraph(const kiln_node *n) {
    for (int k = 0; k < n->n_attrs; k++)
        if (n->attrs[k].g || n->attrs[k].n_graphs) return 1;
    return n->n_implicit > 0;
}

static int is_int_type(int dt) {
    return dt == KILN_DTYPE_INT64 || dt == KILN_DTYPE_INT32 || dt == KILN_DTYPE_BOOL ||
           dt == KILN_DTYPE_INT8 || dt == KILN_DTYPE_UINT8 || dt == KILN_DTYPE_INT16 ||
           dt == KILN_DTYPE_UINT16 || dt == KILN_DTYPE_UINT32 || dt == KILN_DTYPE_UINT64;
}

/* Shape arithmetic: a node on integer scalars and vectors (what Shape, Gather of a shape, Concat
 * of dims make) whose inputs all live on the host. Integer tensors of higher rank are data, which
 * the device takes. */
static int shape_arithmetic(const kiln_graph *g, const kiln_node *n) {
    int any = 0;
    for (int i = 0; i < n->n_in + n->n_out; i++) {
        int is_in = i < n->n_in;
        int v = is_in ? n->in[i] : n->out[i - n->n_in];
        if (v < 0) continue;
        const kiln_graph_value *gv = &g->values[v];
        if (!gv->has_type || !is_int_type(gv->type.dtype) || gv->type.rank < 0 || gv->type.rank > 1) return 0;
        if (is_in && gv->dev != 0) return 0;
        any |= is_in;
    }
    return any;
}

static int on_sequences(const kiln_graph *g, const kiln_node *n) {
    for (int i = 0; i < n->n_in; i++)
        if (n->in[i] >= 0 && g->values[n->in[i]].type.kind != KILN_KIND_TENSOR) return 1;
    for (int i = 0; i < n->n_out; i++)
        if (n->out[i] >= 0 && g->values[n->out[i]].type.kind != KILN_KIND_TENSOR) return 1;
    return 0;
}

static void set_why(kiln_node *n, const char *why) {
    free(n->placement_why);
    n->placement_why = why && why[0] ? strdup(why) : NULL;
}

static void decide(kiln_provider_set *ps, kiln_graph *g, kiln_node *n) {
    n->ep = 0;
    n->kernel = NULL;
    set_why(n, NULL);
    if (ps->n < 2) return;
    const char *keep = NULL;
    if (has_subgraph(n)) keep = "control flow runs on the CPU";
    else if (n->op->flags & KILN_OP_DYNAMIC) keep = "its output shapes depend on values";
    else if (on_sequences(g, n)) keep = "sequences stay on the host";
    else if (shape_arithmetic(g, n)) keep = "integer shape arithmetic stays on the host";
    if (keep) {
        set_why(n, keep);
        return;
    }
    char why[512] = "";
    for (int p = 1; p < ps->n; p++) {
        kiln_claim c;
        memset(&c, 0, sizeof c);
        ps->ep[p]->vt->claim(ps->ep[p], g, n, &c);
        if (c.claimed) {
            n->ep = p;
            n->kernel = c.kernel;
            return;
        }
        if (!why[0]) snprintf(why, sizeof why, "%s: %s", ps->ep[p]->vt->name, c.why);
    }
    set_why(n, why);
}

/* ---- copies ---- */

typedef struct placer {
    kiln_provider_set *ps;
    kiln_graph *g;
    kiln_node *nodes;      /* the new node list */
    int n_nodes, cap_nodes;
    int n_orig_values;
    int *copy_of[KILN_MAX_PROVIDERS]; /* per original value: its copy in memory space d, or -1 */
    int n_copies, n_uploads;
    kiln_dev_cache *cache;
    kiln_dev_holds *holds;
    kiln_err *e;
} placer;

static int value_dev(const placer *pl, int node_ep) {
    return pl->ps->ep[node_ep]->vt->host_memory ? 0 : node_ep;
}

static kiln_status push_node(placer *pl, const kiln_node *n) {
    if (pl->n_nodes == pl->cap_nodes) {
        int cap = pl->cap_nodes ? pl->cap_nodes * 2 : 64;
        kiln_node *nn = realloc(pl->nodes, (size_t)cap * sizeof *nn);
        if (!nn) return kiln_fail(pl->e, KILN_ERR_NO_MEMORY, "out of memory");
        pl->nodes = nn;
        pl->cap_nodes = cap;
    }
    pl->nodes[pl->n_nodes++] = *n;
    return KILN_OK;
}

static kiln_status upload_constant(placer *pl, int v, int dev, int nv) {
    kiln_graph *g = pl->g;
    kiln_provider *p = pl->ps->ep[dev];
    kiln_tensor *src = &g->values[v].konst.t;
    kiln_tensor *dst = &g->values[nv].konst.t;
    size_t bytes = kiln_tensor_nbytes(src);
    void *mem;
    if (pl->cache && bytes && src->dtype != KILN_DTYPE_STRING) {
        /* the buffer belongs to the cache (the family's sessions share it): the value only borrows it */
        KILN_TRY(kiln_dev_cache_upload(pl->cache, pl->holds, p, src->dtype, src->data, bytes, &mem, pl->e));
        *dst = *src;
        dst->data = mem;
        dst->owner = NULL;
        dst->dev = p;
        pl->n_uploads++;
        return KILN_OK;
    }
    KILN_TRY(p->vt->alloc(p, bytes, &mem, pl->e));
    *dst = *src;
    dst->data = mem;
    dst->owner = mem;
    dst->dev = p;
    if (bytes) KILN_TRY(p->vt->to_device(p, mem, src->data, bytes, pl->e));
    pl->n_uploads++;
    return KILN_OK;
}

/* The value holding v in memory space dev: v itself, or a copy made now (a copy node appended to
 * the new node list, or an uploaded constant). */
static kiln_status value_in(placer *pl, int v, int dev, int runner_ep, int *out) {
    kiln_graph *g = pl->g;
    if (g->values[v].dev == dev) {
        *out = v;
        return KILN_OK;
    }
    if (v < pl->n_orig_values && pl->copy_of[dev][v] >= 0) {
        *out = pl->copy_of[dev][v];
        return KILN_OK;
    }
    char name[512];
    snprintf(name, sizeof name, "%s@%s", g->values[v].name, pl->ps->ep[dev]->vt->short_name);
    int nv = kiln_graph_add_value(g, name);
    if (nv < 0) return kiln_fail(pl->e, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_graph_value *src = &g->values[v], *dst = &g->values[nv];
    dst->type = src->type;
    dst->has_type = src->has_type;
    dst->dev = dev;
    if (src->is_const) {
        dst->is_const = 1;
        dst->konst.kind = KILN_KIND_TENSOR;
        KILN_TRY(upload_constant(pl, v, dev, nv));
    } else {
        kiln_node c;
        memset(&c, 0, sizeof c);
        c.name = strdup(name);
        c.op_type = strdup(dev ? "MemcpyFromHost" : "MemcpyToHost");
        c.domain = strdup("kiln");
        c.in = malloc(sizeof(int));
        c.out = malloc(sizeof(int));
        if (!c.name || !c.op_type || !c.domain || !c.in || !c.out) {
            free(c.name); free(c.op_type); free(c.domain); free(c.in); free(c.out);
            return kiln_fail(pl->e, KILN_ERR_NO_MEMORY, "out of memory");
        }
        c.n_in = c.n_out = 1;
        c.in[0] = v;
        c.out[0] = nv;
        c.opset = 1;
        c.op = &kiln_memcpy_op;
        c.ep = runner_ep;
        KILN_TRY(push_node(pl, &c));
        pl->n_copies++;
    }
    if (v < pl->n_orig_values) pl->copy_of[dev][v] = nv;
    *out = nv;
    return KILN_OK;
}

/* Points the subgraphs of n (and theirs) that read outer value `from` at `to`. */
static void repoint_outer(kiln_node *n, int from, int to) {
    for (int k = 0; k < n->n_attrs; k++) {
        kiln_graph *subs[1] = {n->attrs[k].g};
        int count = n->attrs[k].g ? 1 : 0;
        for (int j = 0; j < count + n->attrs[k].n_graphs; j++) {
            kiln_graph *sg = j < count ? subs[0] : n->attrs[k].graphs[j - count];
            if (!sg) continue;
            for (int v = 0; v < sg->n_values; v++)
                if (sg->values[v].outer == from) sg->values[v].outer = to;
        }
    }
}

static kiln_status place_inputs(placer *pl, kiln_node *n) {
    int dev = value_dev(pl, n->ep);
    for (int i = 0; i < n->n_in; i++) {
        int v = n->in[i];
        if (v < 0) continue;
        if (n->ep == 0 && (n->op->flags & KILN_OP_SHAPE_ONLY)) continue;
        int want = (n->kernel && i < 32 && (n->kernel->host_inputs & (1u << i))) ? 0 : dev;
        int from = pl->g->values[v].dev;
        /* a copy runs on the device side of the transfer */
        int runner = want ? want : from;
        int nv;
        KILN_TRY(value_in(pl, v, want, runner, &nv));
        n->in[i] = nv;
    }
    for (int i = 0; i < n->n_implicit; i++) {
        int v = n->implicit[i];
        int from = pl->g->values[v].dev;
        if (from == 0) continue;
        int nv;
        KILN_TRY(value_in(pl, v, 0, from, &nv));
        n->implicit[i] = nv;
        repoint_outer(n, v, nv);
    }
    return KILN_OK;
}

static kiln_status init_kernels(kiln_session_place_args *a, kiln_graph *g, kiln_err *e) {
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->removed || !n->kernel || !n->kernel->init) continue;
        kiln_value *ins[64] = {0}, *outs[64] = {0};
        if (n->n_in > 64 || n->n_out > 64) continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0 && g->values[n->in[k]].is_const) ins[k] = &g->values[n->in[k]].konst;
        kiln_err scratch = {0};
        kiln_ctx ctx = {n, n->opset, n->n_in, ins, n->n_out, outs, n->state, &scratch, 1,
                        a->ps->tp, NULL, a->ps->ep[n->ep], NULL};
        if (n->kernel->init(&ctx, &n->kernel_state)) {
            kiln_err_prefix(&scratch, "node '%s' (%s, opset %d) on %s", n->name, n->op_type, n->opset,
                            a->ps->ep[n->ep]->vt->name);
            *e = scratch;
            return e->code;
        }
    }
    return KILN_OK;
}

kiln_status kiln_place(kiln_session_place_args *a, kiln_graph *g, kiln_err *e) {
    kiln_provider_set *ps = a->ps;
    for (int v = 0; v < g->n_values; v++) g->values[v].dev = 0;
    if (ps->n < 2) return KILN_OK;
    placer pl;
    memset(&pl, 0, sizeof pl);
    pl.ps = ps;
    pl.g = g;
    pl.e = e;
    pl.cache = a->cache;
    pl.holds = a->holds;
    pl.n_orig_values = g->n_values;
    kiln_status st = KILN_OK;
    for (int d = 0; d < ps->n && !st; d++) {
        pl.copy_of[d] = malloc((size_t)(g->n_values ? g->n_values : 1) * sizeof(int));
        if (!pl.copy_of[d]) st = kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
        else for (int v = 0; v < g->n_values; v++) pl.copy_of[d][v] = -1;
    }
    for (int i = 0; i < g->n_nodes && !st; i++) {
        kiln_node n = g->nodes[i];
        if (!n.removed) {
            decide(ps, g, &n);
            st = place_inputs(&pl, &n);
            for (int k = 0; k < n.n_out && !st; k++)
                if (n.out[k] >= 0) g->values[n.out[k]].dev = value_dev(&pl, n.ep);
        }
        if (!st) st = push_node(&pl, &n);
        g->nodes[i] = n; /* its placement_why is owned by the new list from here on */
    }
    for (int d = 0; d < ps->n; d++) free(pl.copy_of[d]);
    if (st) {
        /* nodes already moved keep their strings in both lists: free only the new list's extras */
        for (int i = 0; i < pl.n_nodes; i++)
            if (kiln_is_memcpy_node(&pl.nodes[i])) {
                free(pl.nodes[i].name); free(pl.nodes[i].op_type); free(pl.nodes[i].domain);
                free(pl.nodes[i].in); free(pl.nodes[i].out);
            }
        free(pl.nodes);
        return st;
    }
    free(g->nodes);
    g->nodes = pl.nodes;
    g->n_nodes = g->cap_nodes = pl.n_nodes;
    if (!pl.n_nodes) g->cap_nodes = 0;
    for (int v = 0; v < g->n_values; v++) g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_out; k++)
            if (g->nodes[i].out[k] >= 0) g->values[g->nodes[i].out[k]].producer = i;
    a->copies = pl.n_copies;
    a->uploads = pl.n_uploads;
    for (int p = 1; p < ps->n; p++) KILN_TRY(ps->ep[p]->vt->sync(ps->ep[p], e));
    return init_kernels(a, g, e);
}
