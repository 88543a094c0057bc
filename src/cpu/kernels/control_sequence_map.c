/* SequenceMap (opset 17): runs the body once per item of the first input sequence. Other
 * sequence inputs contribute their item of the same index, tensor inputs are passed whole; each
 * body output (a tensor) becomes one item of the matching output sequence. */
#include "control_common.h"
#include <stdio.h>

static kiln_status map_check(kiln_ctx *ctx, kiln_graph **body) {
    KILN_TRY(kiln_cf_graph_attr(ctx, "body", body));
    if (ctx->n_in < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "SequenceMap needs an input sequence");
    if ((*body)->n_inputs != ctx->n_in)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "body takes %d inputs but the node has %d",
                         (*body)->n_inputs, ctx->n_in);
    if ((*body)->n_outputs != ctx->n_out)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "body gives %d outputs but the node has %d",
                         (*body)->n_outputs, ctx->n_out);
    return KILN_OK;
}

kiln_status kiln_sequence_map_infer(kiln_ctx *ctx) {
    kiln_graph *body;
    KILN_TRY(map_check(ctx, &body));
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    for (int k = 0; k < ctx->n_out; k++) {
        const kiln_graph_value *gv = kiln_cf_graph_output(body, k);
        kiln_seq_mark_output(ctx, k, gv && gv->has_type ? gv->type.dtype : 0);
    }
    return KILN_OK;
}

kiln_status kiln_sequence_map_compute(kiln_ctx *ctx) {
    kiln_graph *body;
    KILN_TRY(map_check(ctx, &body));
    const kiln_value *seq;
    KILN_TRY(kiln_seq_input(ctx, 0, &seq));
    const int n = seq->seq_len, n_in = ctx->n_in, n_out = ctx->n_out;
    for (int j = 1; j < n_in; j++) {
        const kiln_value *v = ctx->in[j];
        if (!v || v->kind == KILN_KIND_NONE)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d is %s", j, kiln_seq_kind_name(v));
        if (v->kind == KILN_KIND_SEQUENCE && v->seq_len != n)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input %d is a sequence of %d items but input 0 has %d", j, v->seq_len, n);
    }

    kiln_value **ins = calloc((size_t)n_in, sizeof *ins);
    kiln_value *views = calloc((size_t)n_in, sizeof *views);
    kiln_value *outs = calloc((size_t)(n_out ? n_out : 1), sizeof *outs);
    kiln_tensor **items = calloc((size_t)(n_out ? n_out : 1), sizeof *items);
    kiln_status st = KILN_OK;
    if (!ins || !views || !outs || !items) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int k = 0; k < n_out && !st; k++)
        if (!(items[k] = calloc((size_t)(n ? n : 1), sizeof **items)))
            st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");

    int done = 0; /* iterations whose items are filled */
    for (int i = 0; i < n && !st; i++) {
        for (int j = 0; j < n_in; j++) {
            const kiln_value *v = ctx->in[j];
            if (v->kind == KILN_KIND_SEQUENCE) {
                memset(&views[j], 0, sizeof views[j]);
                views[j].kind = KILN_KIND_TENSOR;
                views[j].t = v->seq[i];
                views[j].t.owner = NULL; /* borrowed for the call */
                ins[j] = &views[j];
            } else {
                ins[j] = ctx->in[j];
            }
        }
        memset(outs, 0, (size_t)n_out * sizeof *outs);
        if ((st = kiln_run_subgraph(ctx, body, n_in, ins, outs))) break;
        for (int k = 0; k < n_out && !st; k++) {
            char what[48];
            snprintf(what, sizeof what, "body output %d", k);
            st = kiln_cf_take_tensor(ctx, &outs[k], what, &items[k][i]);
        }
        kiln_cf_release_all(outs, n_out);
        if (!st) done = i + 1;
    }

    for (int k = 0; k < n_out; k++) {
        if (!items || !items[k]) continue;
        if (st) {
            /* items of a failed iteration may be partly filled: release up to and including it */
            kiln_seq_items_free(items[k], done < n ? done + 1 : n);
            continue;
        }
        int dt = n ? items[k][0].dtype : 0;
        for (int i = 1; i < n && !st; i++)
            if (items[k][i].dtype != dt)
                st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                               "body output %d has element type %s for item %d but %s for item 0", k,
                               kiln_seq_dt(items[k][i].dtype), i, kiln_seq_dt(dt));
        if (!n) {
            const kiln_graph_value *gv = kiln_cf_graph_output(body, k);
            dt = gv && gv->has_type && gv->type.dtype ? gv->type.dtype : seq->seq_dtype;
        }
        if (st) {
            kiln_seq_items_free(items[k], n);
            continue;
        }
        st = kiln_seq_emit(ctx, k, dt, n, items[k]);
    }
    free(ins), free(views), free(outs), free(items);
    return st;
}
