/* Static types for the fusion passes. Rewrites run before kernels are bound and before
 * kiln_graph_prepare infers shapes, so this walks the graph once with the kernels' own infer
 * functions in static mode (as prepare does), starting from the declared types. Small tensors the
 * kernels fill statically (Shape, Constant) keep their data, so that a Reshape fed by a computed
 * shape still gets a rank. What cannot be inferred stays rank -1, and the passes then leave the
 * pattern alone. */
#include "pattern.h"
#include "sym_shape.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Ops whose kernels have an init: infer is called here without it, which only these tolerate
 * (their infer reads attributes and input shapes, never the init state). */
static int infer_needs_no_init(const kiln_node *n) {
    static const char *const ok[] = {"Conv", "ConvTranspose", "FusedConv", "MatMul", "Gemm",
                                     "Constant", NULL};
    for (int i = 0; ok[i]; i++)
        if (!strcmp(n->op_type, ok[i])) return 1;
    return 0;
}

static int has_subgraph(const kiln_node *n) {
    for (int k = 0; k < n->n_attrs; k++)
        if (n->attrs[k].g || n->attrs[k].n_graphs) return 1;
    return 0;
}

static void declared(const kiln_graph_value *gv, kiln_value *f) {
    memset(f, 0, sizeof *f);
    f->kind = KILN_KIND_TENSOR;
    f->t.rank = -1;
    if (!gv->has_type) return;
    if (kiln_kind_is_map(gv->type.kind)) {
        f->kind = gv->type.kind;
        f->map_key_dtype = gv->type.key_dtype;
        f->map_val_dtype = gv->type.dtype;
        f->n_maps = -1;
        return;
    }
    if (gv->type.kind == KILN_KIND_SEQUENCE) {
        f->kind = KILN_KIND_SEQUENCE;
        f->seq_dtype = gv->type.dtype;
        f->seq_len = -1;
        return;
    }
    f->t.dtype = gv->type.dtype;
    f->t.rank = gv->type.rank;
    if (gv->type.rank > 0) memcpy(f->t.dims, gv->type.dims, (size_t)gv->type.rank * sizeof(int64_t));
}

/* The value a kernel sees for input v (constants with their data). */
static kiln_value *input_view(opt_ctx *c, int v) {
    kiln_graph_value *gv = &c->g->values[v];
    if (gv->is_const) return &gv->konst;
    if (gv->outer >= 0 && c->parent && c->parent->facts && gv->outer < c->parent->n_tracked)
        return &c->parent->facts[gv->outer];
    return &c->facts[v];
}

/* Keeps the inferred type of an output, filling dimensions it left unknown from the declared
 * type of the same rank. */
static void merge(kiln_value *fact, kiln_value *inferred) {
    kiln_value old = *fact;
    *fact = *inferred;
    memset(inferred, 0, sizeof *inferred);
    if (!fact->t.dtype) fact->t.dtype = old.t.dtype;
    if (old.kind == KILN_KIND_TENSOR && old.t.rank == fact->t.rank)
        for (int d = 0; d < fact->t.rank; d++)
            if (fact->t.dims[d] == KILN_DIM_UNKNOWN) fact->t.dims[d] = old.t.dims[d];
    kiln_value_release(&old);
}

static void infer_node(opt_ctx *c, kiln_node *n) {
    kiln_value *ins[64], outv[64], *outs[64];
    const kiln_op *op = n->opset >= 0 ? kiln_find_op(n->domain, n->op_type, n->opset) : NULL;
    if (!op || !op->infer || n->n_in > 64 || n->n_out > 64 || has_subgraph(n)) return;
    if (op->init && !infer_needs_no_init(n)) return;
    for (int i = 0; i < n->n_in; i++) ins[i] = n->in[i] >= 0 ? input_view(c, n->in[i]) : NULL;
    memset(outv, 0, sizeof outv);
    for (int i = 0; i < n->n_out; i++) {
        outv[i].kind = KILN_KIND_TENSOR;
        outv[i].t.rank = -1;
        outs[i] = n->out[i] >= 0 ? &outv[i] : NULL;
    }
    kiln_err scratch;
    kiln_ctx ctx = {n, n->opset, n->n_in, ins, n->n_out, outs, NULL, &scratch, 1, NULL, NULL, NULL, NULL};
    if (op->infer(&ctx) == KILN_OK) {
        for (int i = 0; i < n->n_out; i++) {
            int v = n->out[i];
            if (v < 0 || outv[i].kind != KILN_KIND_TENSOR) continue;
            kiln_value *f = &c->facts[v];
            if (outv[i].t.rank >= 0 || f->kind != KILN_KIND_TENSOR || f->t.rank < 0)
                merge(f, &outv[i]);
            else if (!f->t.dtype)
                f->t.dtype = outv[i].t.dtype;
        }
    }
    for (int i = 0; i < n->n_out; i++) kiln_value_release(&outv[i]);
}

/* An unknown dimension is still one fixed size per run: naming it with a symbol of its own lets a
 * fusion see that a value and what is computed from it (MatMul, Add, LayerNormalization, the
 * Shape -> Gather chains of sym_shape.c) share it, where exporters left no type to say so. The
 * names lie past the model's own symbols and are made only in the top graph, so that the values
 * of a subgraph, numbered from 0 again, cannot take the same names. */
#define FRESH_SYMBOLS (1 << 24)

static void name_unknown_dims(opt_ctx *c, int v) {
    if (c->parent || v < 0 || v >= c->n_tracked || v >= (INT32_MAX - FRESH_SYMBOLS) / KILN_MAX_RANK) return;
    kiln_value *f = &c->facts[v];
    if (f->kind != KILN_KIND_TENSOR) return;
    for (int d = 0; d < f->t.rank; d++)
        if (f->t.dims[d] == KILN_DIM_UNKNOWN) f->t.dims[d] = KILN_DIM_SYM(FRESH_SYMBOLS + v * KILN_MAX_RANK + d);
}

kiln_status opt_facts_build(opt_ctx *c) {
    kiln_graph *g = c->g;
    c->facts = calloc((size_t)(c->n_tracked ? c->n_tracked : 1), sizeof *c->facts);
    if (!c->facts) return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    for (int v = 0; v < c->n_tracked; v++) {
        declared(&g->values[v], &c->facts[v]);
        if (g->values[v].producer < 0 && !g->values[v].is_const) name_unknown_dims(c, v);
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].removed) {
            infer_node(c, &g->nodes[i]);
            opt_sym_refine(c, &g->nodes[i]);
            for (int k = 0; k < g->nodes[i].n_out; k++) name_unknown_dims(c, g->nodes[i].out[k]);
        }
    return KILN_OK;
}
