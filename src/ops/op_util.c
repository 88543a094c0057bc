/* The helpers kernels use (declared in op.h): inputs, outputs, attributes, shapes, threads. */
#include "op.h"
#include "../core/session.h"
#include "../cpu/pool_trace.h"
#include "../cpu/threadpool.h"
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

kiln_status kiln_runner_alloc_output(kiln_ctx *ctx, int i);

void kiln_input_packed(kiln_ctx *ctx, int i, size_t bytes, const void **src_note) {
    kiln_node *n = (kiln_node *)ctx->node; /* init is the node's single writer */
    if (!n || i < 0 || i >= 64) return;
    n->packed_inputs |= (uint64_t)1 << i;
    n->packed_bytes += bytes;
    n->packed_src = src_note;
}

kiln_tensor *kiln_input(kiln_ctx *ctx, int i) {
    if (i < 0 || i >= ctx->n_in || !ctx->in[i] || ctx->in[i]->kind != KILN_KIND_TENSOR) return NULL;
    return &ctx->in[i]->t;
}

kiln_status kiln_need_input(kiln_ctx *ctx, int i, kiln_tensor **t) {
    if (i >= ctx->n_in || !ctx->in[i])
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "required input %d is missing", i);
    if (ctx->in[i]->kind != KILN_KIND_TENSOR) {
        const kiln_value *v = ctx->in[i];
        char what[64];
        if (kiln_kind_is_map(v->kind)) kiln_map_type_str(v->kind, v->map_key_dtype, v->map_val_dtype, what, sizeof what);
        else snprintf(what, sizeof what, "%s", v->kind == KILN_KIND_SEQUENCE ? "sequence" : "empty optional");
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d must be a tensor, got a %s", i, what);
    }
    *t = &ctx->in[i]->t;
    return KILN_OK;
}

kiln_status kiln_need_map_input(kiln_ctx *ctx, int i, kiln_value **v) {
    if (i >= ctx->n_in || !ctx->in[i])
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "required input %d is missing", i);
    kiln_value *x = ctx->in[i];
    if (x->kind != KILN_KIND_MAP) {
        char what[400];
        if (x->kind == KILN_KIND_TENSOR) kiln_shape_str(&x->t, what, sizeof what);
        else if (x->kind == KILN_KIND_MAP_SEQUENCE) kiln_map_type_str(x->kind, x->map_key_dtype, x->map_val_dtype, what, sizeof what);
        else snprintf(what, sizeof what, "%s", x->kind == KILN_KIND_SEQUENCE ? "sequence" : "empty optional");
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d must be a map, got a %s%s", i,
                         x->kind == KILN_KIND_TENSOR ? "tensor " : "", what);
    }
    if (!ctx->static_mode && (x->n_maps != 1 || !x->maps))
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "input %d: a map value without its entries", i);
    *v = x;
    return KILN_OK;
}

kiln_status kiln_set_output_map_type(kiln_ctx *ctx, int i, int kind, int key_dtype, int val_dtype) {
    if (i < 0 || i >= ctx->n_out || !ctx->out[i]) return KILN_OK;
    kiln_value *v = ctx->out[i];
    kiln_value_release(v);
    memset(v, 0, sizeof *v);
    v->kind = kind;
    v->map_key_dtype = key_dtype;
    v->map_val_dtype = val_dtype;
    v->n_maps = -1;
    return KILN_OK;
}

kiln_status kiln_set_output_maps(kiln_ctx *ctx, int i, int kind, int key_dtype, int val_dtype, int n,
                                 kiln_map *maps) {
    if (i < 0 || i >= ctx->n_out || !ctx->out[i]) {
        for (int k = 0; k < n; k++) kiln_map_release(&maps[k]);
        free(maps);
        return KILN_OK;
    }
    kiln_set_output_map_type(ctx, i, kind, key_dtype, val_dtype);
    ctx->out[i]->n_maps = n;
    ctx->out[i]->maps = maps;
    return KILN_OK;
}

kiln_tensor *kiln_output(kiln_ctx *ctx, int i) {
    if (i < 0 || i >= ctx->n_out || !ctx->out[i]) return NULL;
    return &ctx->out[i]->t;
}

/* A shape taken from data ([7, 7905747460161236407], whose count wraps to 1) must never size a
 * buffer: refuse it while its dims are still all there to name. Unknown dims (static inference)
 * are checked when they become known. */
static kiln_status check_output_size(kiln_ctx *ctx, int i, const kiln_tensor *t) {
    for (int k = 0; k < t->rank; k++)
        if (t->dims[k] < 0) return KILN_OK;
    int64_t n = kiln_checked_numel(t->rank, t->dims);
    int bytes_ok = 0;
    if (n >= 0) kiln_checked_nbytes(t->dtype, n, &bytes_ok);
    if (bytes_ok) return KILN_OK;
    char shape[400];
    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                     "output %d would have shape %s: too large (its element count overflows or exceeds "
                     "2^48)", i, kiln_shape_str(t, shape, sizeof shape));
}

kiln_status kiln_set_output(kiln_ctx *ctx, int i, int dtype, int rank, const int64_t *dims) {
    if (i < 0 || i >= ctx->n_out || !ctx->out[i]) return KILN_OK;
    if (rank > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "output %d would have rank %d (at most %d)", i,
                         rank, KILN_MAX_RANK);
    kiln_value *v = ctx->out[i];
    v->kind = KILN_KIND_TENSOR;
    v->t.dtype = dtype;
    v->t.rank = rank;
    for (int k = 0; k < rank; k++) {
        if (dims[k] < 0 && !ctx->static_mode)
            return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output %d would have negative dimension %lld", i,
                             (long long)dims[k]);
        v->t.dims[k] = dims[k];
    }
    return check_output_size(ctx, i, &v->t);
}

kiln_status kiln_set_output_like(kiln_ctx *ctx, int i, const kiln_tensor *t) {
    return kiln_set_output(ctx, i, t->dtype, t->rank, t->dims);
}

kiln_status kiln_set_output_unknown(kiln_ctx *ctx, int i, int dtype) {
    if (i < 0 || i >= ctx->n_out || !ctx->out[i]) return KILN_OK;
    if (!ctx->static_mode)
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "output %d has an unknown shape at run time", i);
    ctx->out[i]->kind = KILN_KIND_TENSOR;
    ctx->out[i]->t.dtype = dtype;
    ctx->out[i]->t.rank = -1;
    return KILN_OK;
}

kiln_status kiln_alloc_output(kiln_ctx *ctx, int i, int dtype, int rank, const int64_t *dims) {
    if (i < 0 || i >= ctx->n_out || !ctx->out[i]) return KILN_OK;
    kiln_value_release(ctx->out[i]);
    memset(&ctx->out[i]->t, 0, sizeof ctx->out[i]->t);
    int static_mode = ctx->static_mode;
    ctx->static_mode = 0;
    kiln_status st = kiln_set_output(ctx, i, dtype, rank, dims);
    ctx->static_mode = static_mode;
    if (st) return st;
    if (ctx->runner) return kiln_runner_alloc_output(ctx, i);
    return kiln_tensor_alloc(&ctx->out[i]->t, ctx->err);
}

kiln_status kiln_set_output_sequence(kiln_ctx *ctx, int i, int elem_dtype, int n, kiln_tensor *items) {
    if (i < 0 || i >= ctx->n_out || !ctx->out[i]) {
        for (int k = 0; k < n; k++) kiln_tensor_release(&items[k]);
        return KILN_OK;
    }
    kiln_value *v = ctx->out[i];
    kiln_value_release(v);
    memset(v, 0, sizeof *v);
    v->kind = KILN_KIND_SEQUENCE;
    v->seq_dtype = elem_dtype;
    if (n <= 0) return KILN_OK;
    v->seq = calloc((size_t)n, sizeof *v->seq);
    if (!v->seq) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int k = 0; k < n; k++) {
        if (items[k].owner || !items[k].data) {
            v->seq[k] = items[k];
        } else {
            kiln_status st = kiln_tensor_copy(&v->seq[k], &items[k], ctx->err);
            if (st) {
                v->seq_len = k;
                return st;
            }
        }
        v->seq_len = k + 1;
    }
    return KILN_OK;
}

/* ---- attributes ---- */

static const kiln_attr *find(const kiln_node *n, const char *name, int type) {
    const kiln_attr *a = kiln_node_attr(n, name);
    return a && a->type == type ? a : NULL;
}

int64_t kiln_attr_int(const kiln_node *n, const char *name, int64_t dflt) {
    const kiln_attr *a = find(n, name, KILN_ATTR_INT);
    return a ? a->i : dflt;
}

float kiln_attr_float(const kiln_node *n, const char *name, float dflt) {
    const kiln_attr *a = find(n, name, KILN_ATTR_FLOAT);
    if (a) return a->f;
    a = find(n, name, KILN_ATTR_INT); /* some exporters write integral floats as ints */
    return a ? (float)a->i : dflt;
}

const char *kiln_attr_string(const kiln_node *n, const char *name, const char *dflt) {
    const kiln_attr *a = find(n, name, KILN_ATTR_STRING);
    return a ? a->s : dflt;
}

const char *kiln_attr_bytes(const kiln_node *n, const char *name, const char *dflt, size_t *len) {
    const kiln_attr *a = find(n, name, KILN_ATTR_STRING);
    *len = a ? a->s_len : dflt ? strlen(dflt) : 0;
    return a ? a->s : dflt;
}

const int64_t *kiln_attr_ints(const kiln_node *n, const char *name, int *count) {
    const kiln_attr *a = find(n, name, KILN_ATTR_INTS);
    *count = a ? a->n : 0;
    if (a && !a->ints) { static const int64_t none[1]; return none; }
    return a ? a->ints : NULL;
}

const float *kiln_attr_floats(const kiln_node *n, const char *name, int *count) {
    const kiln_attr *a = find(n, name, KILN_ATTR_FLOATS);
    *count = a ? a->n : 0;
    if (a && !a->floats) { static const float none[1]; return none; }
    return a ? a->floats : NULL;
}

char *const *kiln_attr_strings(const kiln_node *n, const char *name, int *count) {
    const kiln_attr *a = find(n, name, KILN_ATTR_STRINGS);
    *count = a ? a->n : 0;
    if (a && !a->strings) { static char *const none[1]; return none; }
    return a ? a->strings : NULL;
}

const kiln_tensor *kiln_attr_tensor(const kiln_node *n, const char *name) {
    const kiln_attr *a = find(n, name, KILN_ATTR_TENSOR);
    return a ? a->t : NULL;
}

struct kiln_graph *kiln_attr_graph(const kiln_node *n, const char *name) {
    const kiln_attr *a = find(n, name, KILN_ATTR_GRAPH);
    return a ? a->g : NULL;
}

int kiln_has_attr(const kiln_node *n, const char *name) { return kiln_node_attr(n, name) != NULL; }

/* ---- shapes ---- */

kiln_status kiln_norm_axis(kiln_ctx *ctx, int64_t axis, int rank, const char *what, int *out) {
    if (axis < -rank || axis >= rank || (rank == 0 && axis != 0 && axis != -1))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s %lld is out of range for rank %d",
                         what ? what : "axis", (long long)axis, rank);
    *out = (int)(axis < 0 ? axis + rank : axis);
    return KILN_OK;
}

kiln_status kiln_broadcast_shape(kiln_ctx *ctx, int n, const kiln_tensor *const *ts, int *rank,
                                 int64_t *dims) {
    int r = 0;
    for (int i = 0; i < n; i++) {
        if (!ts[i]) continue;
        if (ts[i]->rank < 0) { *rank = -1; return KILN_OK; }
        if (ts[i]->rank > r) r = ts[i]->rank;
    }
    for (int d = 0; d < r; d++) {
        int64_t out = 1;
        int unknown = 0;
        for (int i = 0; i < n; i++) {
            if (!ts[i]) continue;
            int k = d - (r - ts[i]->rank);
            if (k < 0) continue;
            int64_t x = ts[i]->dims[k];
            if (x < 0) {
                /* symbolic: equal symbols broadcast to themselves, otherwise unknown */
                if (out == 1 && !unknown) out = x;
                else if (out != x) unknown = 1;
                continue;
            }
            if (x == 1) continue;
            if (out == 1 || out < 0) {
                out = x;
            } else if (out != x) {
                char a[128], b[128];
                const kiln_tensor *first = NULL;
                for (int j = 0; j < i; j++) if (ts[j]) { first = ts[j]; break; }
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "shapes %s and %s cannot be broadcast (dimension %d: %lld vs %lld)",
                                 first ? kiln_shape_str(first, a, sizeof a) : "?",
                                 kiln_shape_str(ts[i], b, sizeof b), d, (long long)out, (long long)x);
            }
        }
        dims[d] = unknown && out < 0 ? KILN_DIM_UNKNOWN : out;
    }
    *rank = r;
    return KILN_OK;
}

kiln_status kiln_read_ints(kiln_ctx *ctx, const kiln_tensor *t, int64_t *out, int max, int *count) {
    if (t->dtype != KILN_DTYPE_INT64 && t->dtype != KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "expected an int32 or int64 tensor, got %s",
                         kiln_dtype_name((kiln_dtype)t->dtype));
    int64_t n = kiln_numel(t);
    if (n < 0 || !t->data) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "integer tensor has no data");
    if (n > max) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "expected at most %d values, got %lld", max, (long long)n);
    for (int64_t i = 0; i < n; i++)
        out[i] = t->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
    *count = (int)n;
    return KILN_OK;
}

kiln_status kiln_read_scalar(kiln_ctx *ctx, const kiln_tensor *t, double *out) {
    if (kiln_numel(t) != 1 || !t->data)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "expected a scalar (one element), got %lld elements",
                         (long long)kiln_numel(t));
    if (t->dtype == KILN_DTYPE_STRING || !kiln_dtype_valid(t->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "expected a numeric scalar");
    *out = kiln_load_f64(t->dtype, t->data, 0);
    return KILN_OK;
}

kiln_status kiln_check_dtype(kiln_ctx *ctx, const kiln_tensor *t, int input_index, int n_types, ...) {
    va_list ap;
    va_start(ap, n_types);
    for (int i = 0; i < n_types; i++)
        if (va_arg(ap, int) == t->dtype) { va_end(ap); return KILN_OK; }
    va_end(ap);
    return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input %d",
                     kiln_dtype_name((kiln_dtype)t->dtype), input_index);
}

/* ---- threads ---- */

void kiln_parallel_for(kiln_ctx *ctx, int64_t n, int64_t grain, kiln_range_fn fn, void *arg) {
    if (kiln_par_trace_threads() && kiln_par_trace_run(ctx, n, grain, fn, arg)) return;
    if (kiln_pool_trace_on) kiln_pool_trace_label(ctx && ctx->node ? ctx->node->name : NULL);
    kiln_threadpool_run(ctx ? ctx->tp : NULL, n, grain, fn, arg);
}

int kiln_num_threads(const kiln_ctx *ctx) {
    int traced = kiln_par_trace_threads();
    if (traced) return traced;
    return ctx && ctx->tp ? kiln_threadpool_size(ctx->tp) : 1;
}
