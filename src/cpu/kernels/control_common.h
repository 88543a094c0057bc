/* Shared by the control-flow kernels (If, Loop, Scan, SequenceMap): the body-graph lookups,
 * scalar reads and static typing of outputs from a subgraph's declared output types. */
#ifndef KILN_CONTROL_COMMON_H
#define KILN_CONTROL_COMMON_H

#include "core/runner.h"
#include "sequence_util.h"

kiln_status kiln_loop_infer(kiln_ctx *ctx);
kiln_status kiln_loop_compute(kiln_ctx *ctx);
kiln_status kiln_scan_infer(kiln_ctx *ctx);
kiln_status kiln_scan_compute(kiln_ctx *ctx);
kiln_status kiln_sequence_map_infer(kiln_ctx *ctx);
kiln_status kiln_sequence_map_compute(kiln_ctx *ctx);

static inline kiln_status kiln_cf_graph_attr(kiln_ctx *ctx, const char *name, kiln_graph **g) {
    *g = kiln_attr_graph(ctx->node, name);
    if (!*g) return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "missing graph attribute '%s'", name);
    return KILN_OK;
}

static inline const kiln_graph_value *kiln_cf_graph_output(const kiln_graph *g, int i) {
    return i >= 0 && i < g->n_outputs ? &g->values[g->outputs[i]] : NULL;
}

/* Reads a one-element bool tensor input (or body output). */
static inline kiln_status kiln_cf_read_bool(kiln_ctx *ctx, const kiln_value *v, const char *what, int *out) {
    if (!v || v->kind != KILN_KIND_TENSOR)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be a bool tensor, got %s", what,
                         kiln_seq_kind_name(v));
    if (v->t.dtype != KILN_DTYPE_BOOL || kiln_numel(&v->t) != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "%s must be a single bool, got %s with %lld elements", what,
                         kiln_seq_dt(v->t.dtype), (long long)kiln_numel(&v->t));
    *out = *(const uint8_t *)v->t.data != 0;
    return KILN_OK;
}

/* Static inference: output i gets the declared type of a subgraph output, dims unknown when
 * `unknown_shape` (a stacked scan output, or branches that disagree). */
static inline kiln_status kiln_cf_type_output(kiln_ctx *ctx, int i, const kiln_graph_value *gv,
                                              int unknown_shape) {
    if (i >= ctx->n_out || !ctx->out[i]) return KILN_OK;
    if (!gv || !gv->has_type) return kiln_set_output_unknown(ctx, i, 0);
    if (gv->type.kind == KILN_KIND_SEQUENCE) {
        kiln_seq_mark_output(ctx, i, gv->type.dtype);
        return KILN_OK;
    }
    if (unknown_shape || gv->type.rank < 0) return kiln_set_output_unknown(ctx, i, gv->type.dtype);
    return kiln_set_output(ctx, i, gv->type.dtype, gv->type.rank, gv->type.dims);
}

/* A body output as a tensor this kernel may keep: moved when it owns its bytes, else copied. */
static inline kiln_status kiln_cf_take_tensor(kiln_ctx *ctx, kiln_value *v, const char *what,
                                              kiln_tensor *out) {
    if (v->kind != KILN_KIND_TENSOR)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be a tensor, got a %s", what,
                         kiln_seq_kind_name(v));
    if (v->t.owner || !v->t.data) {
        *out = v->t;
        memset(&v->t, 0, sizeof v->t);
        v->kind = KILN_KIND_NONE;
        return KILN_OK;
    }
    return kiln_tensor_copy(out, &v->t, ctx->err);
}

static inline void kiln_cf_release_all(kiln_value *v, int n) {
    if (!v) return;
    for (int i = 0; i < n; i++) kiln_value_release(&v[i]);
}

#endif
