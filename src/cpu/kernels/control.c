/* If, and the op table of the control family (Loop, Scan and SequenceMap are in
 * control_loop.c, control_scan.c and control_sequence_map.c). Every control op is
 * KILN_OP_DYNAMIC: what its outputs are is only known once a body has run. */
#include "control_common.h"

static int same_type(const kiln_graph_value *a, const kiln_graph_value *b) {
    if (!a || !b || !a->has_type || !b->has_type) return 0;
    if (a->type.kind != b->type.kind || a->type.dtype != b->type.dtype || a->type.rank != b->type.rank)
        return 0;
    for (int d = 0; d < a->type.rank; d++)
        if (a->type.dims[d] != b->type.dims[d]) return 0;
    return 1;
}

static kiln_status if_branches(kiln_ctx *ctx, kiln_graph **then_g, kiln_graph **else_g) {
    KILN_TRY(kiln_cf_graph_attr(ctx, "then_branch", then_g));
    KILN_TRY(kiln_cf_graph_attr(ctx, "else_branch", else_g));
    if ((*then_g)->n_outputs != (*else_g)->n_outputs)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "then_branch has %d outputs but else_branch has %d", (*then_g)->n_outputs,
                         (*else_g)->n_outputs);
    if (ctx->n_out > (*then_g)->n_outputs)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "If has %d outputs but its branches have %d",
                         ctx->n_out, (*then_g)->n_outputs);
    return KILN_OK;
}

static kiln_status if_infer(kiln_ctx *ctx) {
    kiln_graph *tg, *eg;
    KILN_TRY(if_branches(ctx, &tg, &eg));
    for (int i = 0; i < ctx->n_out; i++) {
        const kiln_graph_value *a = kiln_cf_graph_output(tg, i), *b = kiln_cf_graph_output(eg, i);
        /* only a shape both branches agree on is certain */
        const kiln_graph_value *pick = a && a->has_type ? a : b;
        KILN_TRY(kiln_cf_type_output(ctx, i, pick, !same_type(a, b)));
    }
    return KILN_OK;
}

static kiln_status if_compute(kiln_ctx *ctx) {
    kiln_graph *tg, *eg;
    KILN_TRY(if_branches(ctx, &tg, &eg));
    int cond = 0;
    KILN_TRY(kiln_cf_read_bool(ctx, ctx->n_in > 0 ? ctx->in[0] : NULL, "input 'cond'", &cond));
    kiln_graph *g = cond ? tg : eg;
    kiln_value *outs = calloc((size_t)(g->n_outputs ? g->n_outputs : 1), sizeof *outs);
    if (!outs) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = kiln_run_subgraph(ctx, g, 0, NULL, outs);
    for (int i = 0; i < g->n_outputs; i++) {
        if (st == KILN_OK && i < ctx->n_out) st = kiln_seq_move_to_output(ctx, i, &outs[i]);
        kiln_value_release(&outs[i]);
    }
    free(outs);
    return st;
}

const kiln_op kiln_ops_control[] = {
    {"", "If", 1, KILN_OP_DYNAMIC, NULL, if_infer, if_compute, NULL},
    {"", "Loop", 1, KILN_OP_DYNAMIC, NULL, kiln_loop_infer, kiln_loop_compute, NULL},
    {"", "Scan", 8, KILN_OP_DYNAMIC, NULL, kiln_scan_infer, kiln_scan_compute, NULL},
    {"", "SequenceMap", 17, KILN_OP_DYNAMIC, NULL, kiln_sequence_map_infer, kiln_sequence_map_compute,
     NULL},
    {0},
};
