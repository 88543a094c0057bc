/* Helpers shared by the sequence, optional and control-flow kernels: reading sequence inputs,
 * building sequence outputs, copying tensors (strings duplicated) and moving values into
 * outputs. All static: each kernel file gets its own copy. */
#ifndef KILN_SEQUENCE_UTIL_H
#define KILN_SEQUENCE_UTIL_H

#include "ops/op.h"
#include <stdlib.h>
#include <string.h>

static inline const char *kiln_seq_kind_name(const kiln_value *v) {
    if (!v) return "absent";
    if (kiln_kind_is_map(v->kind)) return v->kind == KILN_KIND_MAP ? "map" : "sequence of maps";
    return v->kind == KILN_KIND_SEQUENCE ? "sequence" : v->kind == KILN_KIND_NONE ? "empty optional"
                                                                                 : "tensor";
}

static inline const char *kiln_seq_dt(int dt) { return kiln_dtype_name((kiln_dtype)dt); }

/* Input i as a sequence. At run time anything else fails; in static mode the kind may not be
 * known yet, and *out is then NULL with success. */
static inline kiln_status kiln_seq_input(kiln_ctx *ctx, int i, const kiln_value **out) {
    *out = NULL;
    const kiln_value *v = i < ctx->n_in ? ctx->in[i] : NULL;
    if (!v) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input %d (a sequence)", i);
    if (v->kind != KILN_KIND_SEQUENCE) {
        if (ctx->static_mode && v->kind == KILN_KIND_TENSOR && v->t.rank < 0) return KILN_OK;
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d is a %s, expected a sequence", i,
                         kiln_seq_kind_name(v));
    }
    if (!ctx->static_mode && v->seq_len > 0 && !v->seq)
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "input %d: sequence has no items", i);
    *out = v;
    return KILN_OK;
}

/* Static inference: output i is a sequence of dtype (its items unknown). */
static inline void kiln_seq_mark_output(kiln_ctx *ctx, int i, int dtype) {
    if (i >= ctx->n_out || !ctx->out[i]) return;
    kiln_value *o = ctx->out[i];
    kiln_value_release(o);
    o->kind = KILN_KIND_SEQUENCE;
    o->seq_dtype = dtype;
    o->seq_len = 0;
    o->seq = NULL;
}

static inline void kiln_seq_items_free(kiln_tensor *items, int n) {
    if (!items) return;
    for (int k = 0; k < n; k++) kiln_tensor_release(&items[k]);
    free(items);
}

/* Hands n items (each owning its data) to output i; the output takes the items' data over and
 * the array itself is freed here. */
static inline kiln_status kiln_seq_emit(kiln_ctx *ctx, int i, int dtype, int n, kiln_tensor *items) {
    kiln_status st = kiln_set_output_sequence(ctx, i, dtype, n, items);
    free(items);
    return st;
}

/* Reads an optional scalar int32/int64 position input. */
static inline kiln_status kiln_seq_position(kiln_ctx *ctx, int i, int64_t *pos, int *present) {
    *present = 0;
    if (i >= ctx->n_in || !ctx->in[i]) return KILN_OK;
    const kiln_tensor *t = kiln_input(ctx, i);
    if (!t) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'position' must be a tensor");
    if (t->dtype != KILN_DTYPE_INT32 && t->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input 'position' has element type %s, expected int32 or int64",
                         kiln_seq_dt(t->dtype));
    if (t->rank < 0 || !t->data) return KILN_OK; /* static inference: not known yet */
    if (kiln_numel(t) != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input 'position' must be a scalar, got %lld elements",
                         (long long)kiln_numel(t));
    *pos = t->dtype == KILN_DTYPE_INT32 ? *(const int32_t *)t->data : *(const int64_t *)t->data;
    *present = 1;
    return KILN_OK;
}

/* Copies count elements from src[soff..] to dst[doff..] (offsets in elements), duplicating
 * strings into empty slots. Sub-byte element types cannot be cut at arbitrary offsets. */
static inline kiln_status kiln_seq_copy_range(kiln_ctx *ctx, int dt, void *dst, int64_t doff,
                                              const void *src, int64_t soff, int64_t count) {
    if (count <= 0) return KILN_OK;
    if (dt == KILN_DTYPE_STRING) {
        char **d = (char **)dst + doff;
        char *const *s = (char *const *)src + soff;
        for (int64_t k = 0; k < count; k++)
            if (!(d[k] = kiln_str_dup(s[k]))) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        return KILN_OK;
    }
    size_t es = kiln_dtype_size((kiln_dtype)dt);
    if (!es)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "element type %s is not supported here",
                         kiln_seq_dt(dt));
    memcpy((char *)dst + doff * es, (const char *)src + soff * es, (size_t)count * es);
    return KILN_OK;
}

/* Copies src's elements into dst, which has src's dtype and element count and an allocated
 * buffer whose string slots (if any) are empty. */
static inline kiln_status kiln_seq_copy_elems(kiln_ctx *ctx, kiln_tensor *dst, const kiln_tensor *src) {
    int64_t n = kiln_numel(src);
    if (n <= 0) return KILN_OK;
    if (src->dtype == KILN_DTYPE_STRING)
        return kiln_seq_copy_range(ctx, src->dtype, dst->data, 0, src->data, 0, n);
    memcpy(dst->data, src->data, kiln_tensor_nbytes(src));
    return KILN_OK;
}

/* Moves a value (as a subgraph returns it) into output i. Tensors that do not own their bytes may
 * point into memory of the subgraph or of the outer graph, so those are copied. */
static inline kiln_status kiln_seq_move_to_output(kiln_ctx *ctx, int i, kiln_value *v) {
    if (i >= ctx->n_out || !ctx->out[i]) {
        kiln_value_release(v);
        return KILN_OK;
    }
    kiln_value *o = ctx->out[i];
    kiln_value_release(o);
    if (v->kind == KILN_KIND_TENSOR && !v->t.owner && v->t.data) {
        kiln_status st = kiln_value_copy(o, v, ctx->err);
        kiln_value_release(v);
        return st;
    }
    *o = *v;
    memset(v, 0, sizeof *v);
    v->kind = KILN_KIND_NONE;
    return KILN_OK;
}

#endif
