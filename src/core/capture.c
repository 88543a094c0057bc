/* Graph capture (kiln_options.graph_capture): the device work of one input-shape signature is
 * recorded once through the provider's capture hooks and replayed on later runs, so a run costs
 * one launch instead of one per node.
 *
 * A replay repeats the recorded run exactly, so the session must have nothing that varies between
 * runs of one shape outside the device work: every node on the device provider and every host
 * value a device kernel reads (a Reshape's shape, say) a constant. Both are checked when the
 * session opens; by default (auto) a session that passes records, one that does not runs node by
 * node, and graph_capture = 1 makes a failure an error.
 *
 * A recording can only use device memory whose address never changes, so it needs:
 *  - a plan for the signature (every intermediate value in the device arena), and the output
 *    shapes from a run with that plan, so that outputs get fixed staging buffers;
 *  - inputs in fixed staging buffers: each run copies its inputs there first, outside the
 *    recording (the recorded copy nodes then alias them).
 * The third run of a signature records (the first plans, the second learns the output shapes);
 * if recording fails (a kernel that synchronises, an allocation inside it) the signature runs
 * normally from then on. */
#include "capture.h"
#include "placement.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Why the session cannot record (into e), or KILN_OK. */
static kiln_status capture_blocker(kiln_session *s, kiln_err *e) {
    kiln_provider *dev = s->eps.n > 1 ? s->eps.ep[1] : NULL;
    if (!dev || !dev->vt->capture_begin)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                         "graph capture needs a device provider that can record (the session runs on %s)",
                         s->eps.ep[s->eps.n > 1 ? 1 : 0]->vt->name);
    kiln_graph *g = s->model->graph;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->removed) continue;
        int host_copy = kiln_is_memcpy_node(n) && g->values[n->out[0]].dev == 0;
        if (n->ep == 0 || host_copy)
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                             "graph capture needs every node on %s, but node '%s' (%s) runs on the CPU%s%s",
                             dev->vt->name, n->name, n->op_type, n->placement_why ? ": " : "",
                             n->placement_why ? n->placement_why : "");
        for (int k = 0; n->kernel && k < n->n_in && k < 32; k++) {
            int v = n->in[k];
            if (v >= 0 && (n->kernel->host_inputs >> k & 1u) && !g->values[v].is_const)
                return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                                 "graph capture needs the host values device kernels read to be constants, but "
                                 "node '%s' (%s) reads '%s', which can change from run to run",
                                 n->name, n->op_type, g->values[v].name);
        }
    }
    return KILN_OK;
}

kiln_status kiln_capture_check(kiln_session *s, kiln_err *e) {
    s->capture_on = 0;
    if (s->opt.graph_capture < 0 || (s->opt.graph_capture == 0 && s->eps.n < 2)) return KILN_OK;
    kiln_err why = {0};
    if (capture_blocker(s, &why)) {
        if (s->opt.graph_capture > 0) {
            *e = why;
            return why.code;
        }
        if (s->opt.verbose) fprintf(stderr, "kiln: runs go node by node: %s\n", why.msg);
        return KILN_OK;
    }
    s->capture_on = 1;
    return KILN_OK;
}

void kiln_capture_free(kiln_plan *p) {
    kiln_capture *c = p->capture;
    if (!c) return;
    kiln_provider *dev = c->dev;
    if (c->graph) dev->vt->graph_free(dev, c->graph);
    for (int i = 0; i < c->n_in; i++)
        if (c->in_stage[i]) dev->vt->free(dev, c->in_stage[i]);
    for (int i = 0; i < c->n_out; i++)
        if (c->out_stage[i].data) dev->vt->free(dev, c->out_stage[i].data);
    free(c->in_stage);
    free(c->out_stage);
    free(c);
    p->capture = NULL;
}

/* After a planned run: the graph outputs' types, needed to give them staging buffers. */
void kiln_capture_note_outputs(kiln_session *s, kiln_plan *p, const kiln_value *const *outs, int n) {
    if (!s->capture_on || p->capture) return;
    kiln_capture *c = calloc(1, sizeof *c);
    if (!c) return;
    p->capture = c;
    c->dev = s->eps.ep[1];
    c->n_out = n;
    c->out_stage = calloc((size_t)(n ? n : 1), sizeof *c->out_stage);
    if (!c->out_stage) {
        c->failed = 1;
        return;
    }
    for (int i = 0; i < n; i++) {
        if (!outs[i] || outs[i]->kind != KILN_KIND_TENSOR || !outs[i]->t.dev || outs[i]->t.dtype == KILN_DTYPE_STRING) {
            c->failed = 1; /* an output the device does not make */
            return;
        }
        c->out_stage[i] = outs[i]->t;
        c->out_stage[i].data = c->out_stage[i].owner = NULL;
    }
}

/* Copies the run's inputs into the staging buffers (allocating them the first time). */
static kiln_status stage_inputs(kiln_session *s, kiln_capture *c, const kiln_value *slots, int n, kiln_err *e) {
    kiln_provider *dev = s->eps.ep[1];
    if (!c->in_stage) {
        c->in_stage = calloc((size_t)(n ? n : 1), sizeof(void *));
        if (!c->in_stage) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
        c->n_in = n;
        for (int i = 0; i < n; i++) {
            if (slots[i].kind != KILN_KIND_TENSOR || slots[i].t.dtype == KILN_DTYPE_STRING)
                return kiln_fail(e, KILN_ERR_NOT_IMPLEMENTED, "graph capture takes tensor inputs only");
            KILN_TRY(dev->vt->alloc(dev, kiln_tensor_nbytes(&slots[i].t), &c->in_stage[i], e));
        }
    }
    for (int i = 0; i < n; i++) {
        size_t bytes = kiln_tensor_nbytes(&slots[i].t);
        if (!bytes) continue;
        if (slots[i].t.dev) KILN_TRY(dev->vt->copy(dev, c->in_stage[i], slots[i].t.data, bytes, e));
        else KILN_TRY(dev->vt->to_device(dev, c->in_stage[i], slots[i].t.data, bytes, e));
    }
    return KILN_OK;
}

static kiln_status record(kiln_session *s, kiln_plan *p, kiln_arena_set *arena, kiln_value *staged, kiln_err *e) {
    kiln_capture *c = p->capture;
    kiln_provider *dev = s->eps.ep[1];
    for (int i = 0; i < c->n_out; i++)
        if (!c->out_stage[i].data)
            KILN_TRY(dev->vt->alloc(dev, kiln_tensor_nbytes(&c->out_stage[i]), &c->out_stage[i].data, e));
    /* everything queued so far (staging copies, allocations) completes outside the recording */
    KILN_TRY(dev->vt->sync(dev, e));
    KILN_TRY(dev->vt->capture_begin(dev, e));
    s->capturing = c;
    kiln_status st = kiln_run_graph_limited(s, s->model->graph, staged, p, arena, NULL, NULL, 0, NULL, NULL, e);
    s->capturing = NULL;
    void *graph = NULL;
    kiln_err end_err = {0};
    kiln_status end = dev->vt->capture_end(dev, &graph, &end_err);
    if (!st && end) {
        *e = end_err;
        st = end;
    }
    if (st) {
        if (graph) dev->vt->graph_free(dev, graph);
        return st;
    }
    c->graph = graph;
    return KILN_OK;
}

kiln_status kiln_capture_run(kiln_session *s, kiln_plan *p, kiln_arena_set *arena, kiln_value *slots, int n_out,
                             const int *out_idx, kiln_value *outputs, int *done, kiln_err *e) {
    *done = 0;
    kiln_capture *c = p ? p->capture : NULL;
    if (!c || c->failed) return KILN_OK;
    kiln_graph *g = s->model->graph;
    kiln_provider *dev = s->eps.ep[1];
    kiln_status st = stage_inputs(s, c, slots, g->n_inputs, e);
    if (st) {
        c->failed = 1;
        return st;
    }
    if (!c->graph) {
        kiln_value *staged = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof *staged);
        if (!staged) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
        for (int i = 0; i < g->n_inputs; i++) {
            staged[i] = slots[i];
            staged[i].t.data = c->in_stage[i];
            staged[i].t.owner = NULL;
            staged[i].t.dev = dev;
        }
        kiln_err why = {0};
        st = record(s, p, arena, staged, &why);
        free(staged);
        if (st) {
            c->failed = 1;
            if (s->opt.verbose)
                fprintf(stderr, "kiln: graph capture of %s failed, running it node by node: %s\n", p->signature, why.msg);
            return KILN_OK; /* this run goes the normal way */
        }
        if (s->opt.verbose) fprintf(stderr, "kiln: captured %s\n", p->signature);
    }
    KILN_TRY(dev->vt->replay(dev, c->graph, e));
    for (int k = 0; k < n_out; k++) {
        const kiln_tensor *src = &c->out_stage[out_idx[k]];
        kiln_value *dst = &outputs[k];
        memset(dst, 0, sizeof *dst);
        dst->kind = KILN_KIND_TENSOR;
        dst->t = *src;
        dst->t.data = dst->t.owner = NULL;
        dst->t.dev = NULL;
        size_t bytes = kiln_tensor_nbytes(src);
        if (s->outputs_on_device) {
            void *mem;
            st = dev->vt->alloc(dev, bytes, &mem, e);
            if (!st && bytes) st = dev->vt->copy(dev, mem, src->data, bytes, e);
            if (!st) {
                dst->t.data = dst->t.owner = mem;
                dst->t.dev = dev;
            }
        } else {
            st = kiln_tensor_alloc_uninit(&dst->t, e); /* the copy writes every byte */
            if (!st && bytes) st = dev->vt->to_host(dev, dst->t.data, src->data, bytes, e);
        }
        if (st) {
            for (int j = 0; j <= k; j++) kiln_value_release(&outputs[j]);
            return st;
        }
    }
    KILN_TRY(dev->vt->sync(dev, e));
    *done = 1;
    return KILN_OK;
}
