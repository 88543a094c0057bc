/* Scan. Opset 9 and later: N state inputs then M scan inputs, each scanned along its own axis
 * and direction; the body's K scan outputs are stacked along their own axes and directions.
 * Opset 8: an optional sequence_lens first, every input batched on axis 0, scan inputs scanned
 * along axis 1 per batch entry, scan outputs [batch, time, ...] padded with zeros past each
 * entry's length.
 *
 * Slices along a leading axis are handed to the body as views of the input; other axes are
 * gathered into one scratch buffer per scan input. */
#include <string.h>
#include "control_common.h"
#include <stdio.h>

typedef struct scan_cfg {
    kiln_graph *body;
    int v8;          /* the opset-8 batched form */
    int first;       /* index of the first state input: 1 in opset 8 (after sequence_lens) */
    int N, M, K;
    const int64_t *in_axes, *in_dirs, *out_axes, *out_dirs;
    int n_in_axes, n_in_dirs, n_out_axes, n_out_dirs;
} scan_cfg;

static int64_t list_at(const int64_t *v, int n, int i) { return v && i < n ? v[i] : 0; }

static kiln_status scan_check(kiln_ctx *ctx, scan_cfg *c) {
    memset(c, 0, sizeof *c);
    KILN_TRY(kiln_cf_graph_attr(ctx, "body", &c->body));
    c->v8 = ctx->opset < 9;
    c->first = c->v8;
    if (!kiln_has_attr(ctx->node, "num_scan_inputs"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "missing attribute 'num_scan_inputs'");
    int64_t m = kiln_attr_int(ctx->node, "num_scan_inputs", 0);
    if (m < 1 || m > ctx->n_in - c->first)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "num_scan_inputs = %lld but there are %d inputs",
                         (long long)m, ctx->n_in - c->first);
    c->M = (int)m;
    c->N = ctx->n_in - c->first - c->M;
    if (c->body->n_inputs != c->N + c->M)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "body takes %d inputs, expected %d (%d states, %d scanned)",
                         c->body->n_inputs, c->N + c->M, c->N, c->M);
    c->K = c->body->n_outputs - c->N;
    if (c->K < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "body has %d outputs, fewer than the %d states",
                         c->body->n_outputs, c->N);
    if (ctx->n_out > c->N + c->K)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "Scan has %d outputs but its body gives %d",
                         ctx->n_out, c->N + c->K);
    if (c->v8) {
        c->in_dirs = kiln_attr_ints(ctx->node, "directions", &c->n_in_dirs);
    } else {
        c->in_axes = kiln_attr_ints(ctx->node, "scan_input_axes", &c->n_in_axes);
        c->in_dirs = kiln_attr_ints(ctx->node, "scan_input_directions", &c->n_in_dirs);
        c->out_axes = kiln_attr_ints(ctx->node, "scan_output_axes", &c->n_out_axes);
        c->out_dirs = kiln_attr_ints(ctx->node, "scan_output_directions", &c->n_out_dirs);
    }
    if ((c->in_axes && c->n_in_axes != c->M) || (c->in_dirs && c->n_in_dirs != c->M) ||
        (c->out_axes && c->n_out_axes != c->K) || (c->out_dirs && c->n_out_dirs != c->K))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "scan axes/directions lists must have one entry per scan input (%d) or output (%d)",
                         c->M, c->K);
    for (int i = 0; i < c->n_in_dirs; i++)
        if (c->in_dirs[i] != 0 && c->in_dirs[i] != 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "scan input direction %d must be 0 or 1", i);
    for (int i = 0; i < c->n_out_dirs; i++)
        if (c->out_dirs[i] != 0 && c->out_dirs[i] != 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "scan output direction %d must be 0 or 1", i);
    return KILN_OK;
}

kiln_status kiln_scan_infer(kiln_ctx *ctx) {
    scan_cfg c;
    KILN_TRY(scan_check(ctx, &c));
    for (int i = 0; i < ctx->n_out; i++)
        KILN_TRY(kiln_cf_type_output(ctx, i, kiln_cf_graph_output(c.body, i), c.v8 || i >= c.N));
    return KILN_OK;
}

static size_t elem_size(int dt) {
    return dt == KILN_DTYPE_STRING ? sizeof(char *) : kiln_dtype_size((kiln_dtype)dt);
}

/* sv = x with axis removed, at index p. A view when the slice is contiguous, else gathered into
 * *scratch (allocated on first use; string pointers are shared, not duplicated: the body only
 * reads them). scratch NULL: the caller knows the slice is contiguous (a leading axis). */
static kiln_status slice_at(kiln_ctx *ctx, const kiln_tensor *x, int axis, int64_t p, void **scratch,
                            kiln_value *sv) {
    const size_t es = elem_size(x->dtype);
    if (!es)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "cannot scan over element type %s",
                         kiln_seq_dt(x->dtype));
    int64_t dims[KILN_MAX_RANK], outer = 1, inner = 1;
    int r = 0;
    for (int d = 0; d < x->rank; d++) {
        if (d == axis) continue;
        dims[r++] = x->dims[d];
        if (d < axis) outer *= x->dims[d];
        else inner *= x->dims[d];
    }
    memset(sv, 0, sizeof *sv);
    sv->kind = KILN_KIND_TENSOR;
    kiln_tensor_set_shape(&sv->t, x->dtype, r, dims);
    if (outer * inner == 0) return KILN_OK;
    const int64_t T = x->dims[axis];
    if (outer == 1) {
        sv->t.data = (char *)x->data + (size_t)(p * inner) * es;
        return KILN_OK;
    }
    if (!scratch) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "slice along axis %d is not contiguous", axis);
    if (!*scratch && !(*scratch = malloc((size_t)(outer * inner) * es)))
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int64_t o = 0; o < outer; o++)
        memcpy((char *)*scratch + (size_t)(o * inner) * es,
               (const char *)x->data + (size_t)((o * T + p) * inner) * es, (size_t)inner * es);
    sv->t.data = *scratch;
    return KILN_OK;
}

/* Output i shaped like `like` with a dimension of size n inserted at axis (scan outputs), or
 * from the body's declared type when nothing was produced (unknown sizes become 0). */
static kiln_status alloc_stacked(kiln_ctx *ctx, int i, const kiln_tensor *like,
                                 const kiln_graph_value *decl, int axis, int64_t n, int64_t n2) {
    int64_t dims[KILN_MAX_RANK], elem[KILN_MAX_RANK];
    int er = 0, dt = KILN_DTYPE_FLOAT;
    if (like) {
        er = like->rank;
        dt = like->dtype;
        memcpy(elem, like->dims, (size_t)er * sizeof *elem);
    } else if (decl && decl->has_type) {
        if (decl->type.dtype) dt = decl->type.dtype;
        if (decl->type.rank > 0 && decl->type.rank < KILN_MAX_RANK - 1) er = decl->type.rank;
        for (int d = 0; d < er; d++) elem[d] = decl->type.dims[d] >= 0 ? decl->type.dims[d] : 0;
    }
    const int extra = n2 >= 0 ? 2 : 1;
    if (er + extra > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "output %d would exceed rank %d", i, KILN_MAX_RANK);
    if (axis < 0) axis += er + 1;
    if (axis < 0 || axis > er)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "scan output axis for output %d is out of range for rank %d",
                         i, er + 1);
    int r = 0;
    for (int d = 0; d <= er; d++) {
        if (d == axis) {
            dims[r++] = n;
            if (n2 >= 0) dims[r++] = n2;
        }
        if (d < er) dims[r++] = elem[d];
    }
    return kiln_alloc_output(ctx, i, dt, r, dims);
}

static kiln_status same_shape(kiln_ctx *ctx, const kiln_tensor *a, const kiln_tensor *first, int k) {
    if (a->dtype == first->dtype && kiln_shape_equal(a, first)) return KILN_OK;
    char s0[96], s1[96];
    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "body output %d changed from %s to %s between iterations",
                     k, kiln_shape_str(first, s0, sizeof s0), kiln_shape_str(a, s1, sizeof s1));
}

static kiln_status need_tensor(kiln_ctx *ctx, int i, const kiln_tensor **t) {
    *t = kiln_input(ctx, i);
    if (!*t) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d must be a tensor", i);
    return KILN_OK;
}

typedef struct scan_frame {
    kiln_value **ins;     /* N states then M slices, as handed to the body */
    kiln_value *states;   /* owned states once an iteration has run */
    int owned;
    kiln_value *slices;
    void **scratch;
    kiln_value *outs;
    kiln_tensor *first;   /* shape of each scan output's first item */
    int *have_first;
} scan_frame;

static kiln_status frame_init(kiln_ctx *ctx, const scan_cfg *c, scan_frame *f) {
    memset(f, 0, sizeof *f);
    f->ins = calloc((size_t)(c->N + c->M), sizeof *f->ins);
    f->states = calloc((size_t)(c->N + 1), sizeof *f->states);
    f->slices = calloc((size_t)c->M, sizeof *f->slices);
    f->scratch = calloc((size_t)c->M, sizeof *f->scratch);
    f->outs = calloc((size_t)(c->N + c->K + 1), sizeof *f->outs);
    f->first = calloc((size_t)(c->K + 1), sizeof *f->first);
    f->have_first = calloc((size_t)(c->K + 1), sizeof *f->have_first);
    if (!f->ins || !f->states || !f->slices || !f->scratch || !f->outs || !f->first || !f->have_first)
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int j = 0; j < c->M; j++) f->ins[c->N + j] = &f->slices[j];
    return KILN_OK;
}

static void frame_drop_states(const scan_cfg *c, scan_frame *f) {
    if (f->owned) kiln_cf_release_all(f->states, c->N);
    f->owned = 0;
}

static void frame_free(const scan_cfg *c, scan_frame *f) {
    frame_drop_states(c, f);
    if (f->outs) kiln_cf_release_all(f->outs, c->N + c->K);
    if (f->scratch)
        for (int j = 0; j < c->M; j++) free(f->scratch[j]);
    free(f->ins), free(f->states), free(f->slices), free(f->scratch), free(f->outs), free(f->first);
    free(f->have_first);
}

/* Runs the body once on f->ins; the new states replace the old. */
static kiln_status frame_step(kiln_ctx *ctx, const scan_cfg *c, scan_frame *f) {
    memset(f->outs, 0, (size_t)(c->N + c->K) * sizeof *f->outs);
    KILN_TRY(kiln_run_subgraph(ctx, c->body, c->N + c->M, f->ins, f->outs));
    frame_drop_states(c, f);
    for (int s = 0; s < c->N; s++) {
        f->states[s] = f->outs[s];
        memset(&f->outs[s], 0, sizeof f->outs[s]);
        f->ins[s] = &f->states[s];
    }
    f->owned = 1;
    return KILN_OK;
}

static kiln_status scan9(kiln_ctx *ctx, const scan_cfg *c, scan_frame *f) {
    int64_t T = -1;
    int *in_axis = calloc((size_t)c->M, sizeof *in_axis);
    if (!in_axis) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = KILN_OK;
    for (int j = 0; j < c->M && !st; j++) {
        const kiln_tensor *x;
        if ((st = need_tensor(ctx, c->first + c->N + j, &x))) break;
        if (x->rank < 1) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scan input %d is a scalar", j);
            break;
        }
        if ((st = kiln_norm_axis(ctx, list_at(c->in_axes, c->n_in_axes, j), x->rank, "scan_input_axes",
                                 &in_axis[j])))
            break;
        int64_t tj = x->dims[in_axis[j]];
        if (T >= 0 && tj != T)
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                           "scan input %d has %lld steps along its axis but scan input 0 has %lld", j,
                           (long long)tj, (long long)T);
        T = tj;
    }
    for (int s = 0; s < c->N && !st; s++) {
        const kiln_tensor *t;
        st = need_tensor(ctx, c->first + s, &t);
        f->ins[s] = ctx->in[c->first + s];
    }

    for (int64_t t = 0; t < T && !st; t++) {
        for (int j = 0; j < c->M && !st; j++) {
            const int64_t p = list_at(c->in_dirs, c->n_in_dirs, j) ? T - 1 - t : t;
            st = slice_at(ctx, kiln_input(ctx, c->first + c->N + j), in_axis[j], p, &f->scratch[j],
                          &f->slices[j]);
        }
        if (st || (st = frame_step(ctx, c, f))) break;
        for (int k = 0; k < c->K && !st; k++) {
            kiln_value *yv = &f->outs[c->N + k];
            const int oi = c->N + k;
            if (yv->kind != KILN_KIND_TENSOR) {
                st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scan output %d is not a tensor", k);
                break;
            }
            const kiln_tensor *y = &yv->t;
            if (!f->have_first[k]) {
                kiln_tensor_set_shape(&f->first[k], y->dtype, y->rank, y->dims);
                f->have_first[k] = 1;
                if (oi < ctx->n_out && ctx->out[oi])
                    st = alloc_stacked(ctx, oi, y, NULL, (int)list_at(c->out_axes, c->n_out_axes, k), T, -1);
            } else {
                st = same_shape(ctx, y, &f->first[k], c->N + k);
            }
            kiln_tensor *out = oi < ctx->n_out ? kiln_output(ctx, oi) : NULL;
            if (st || !out) continue;
            int64_t axis = list_at(c->out_axes, c->n_out_axes, k);
            if (axis < 0) axis += y->rank + 1;
            int64_t outer = 1, inner = 1;
            for (int d = 0; d < y->rank; d++) *(d < axis ? &outer : &inner) *= y->dims[d];
            const int64_t pos = list_at(c->out_dirs, c->n_out_dirs, k) ? T - 1 - t : t;
            for (int64_t o = 0; o < outer && !st; o++)
                st = kiln_seq_copy_range(ctx, y->dtype, out->data, (o * T + pos) * inner, y->data,
                                         o * inner, inner);
        }
        kiln_cf_release_all(f->outs, c->N + c->K);
    }
    free(in_axis);
    if (st) return st;

    for (int s = 0; s < c->N && s < ctx->n_out; s++) {
        if (!ctx->out[s]) continue;
        if (f->owned) {
            KILN_TRY(kiln_seq_move_to_output(ctx, s, &f->states[s]));
        } else {
            kiln_value_release(ctx->out[s]);
            KILN_TRY(kiln_value_copy(ctx->out[s], ctx->in[c->first + s], ctx->err));
        }
    }
    for (int k = 0; k < c->K && c->N + k < ctx->n_out; k++)
        if (!f->have_first[k] && ctx->out[c->N + k])
            KILN_TRY(alloc_stacked(ctx, c->N + k, NULL, kiln_cf_graph_output(c->body, c->N + k),
                                   (int)list_at(c->out_axes, c->n_out_axes, k), T < 0 ? 0 : T, -1));
    return KILN_OK;
}

static kiln_status scan8(kiln_ctx *ctx, const scan_cfg *c, scan_frame *f) {
    /* batch size and step count from the first scan input; everything else must agree */
    const kiln_tensor *x0;
    KILN_TRY(need_tensor(ctx, c->first + c->N, &x0));
    if (x0->rank < 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scan input 0 must be [batch, sequence, ...], got rank %d",
                         x0->rank);
    const int64_t B = x0->dims[0], T = x0->dims[1];
    for (int i = 0; i < c->N + c->M; i++) {
        const kiln_tensor *t;
        KILN_TRY(need_tensor(ctx, c->first + i, &t));
        int is_scan = i >= c->N;
        if (t->rank < 1 + is_scan || t->dims[0] != B || (is_scan && t->dims[1] != T))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input %d must be [%lld%s, ...] like scan input 0", c->first + i,
                             (long long)B, is_scan ? ", sequence" : "");
    }
    const kiln_tensor *sl = kiln_input(ctx, 0);
    if (ctx->in[0] && !sl)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'sequence_lens' must be a tensor");
    if (sl && ((sl->dtype != KILN_DTYPE_INT64 && sl->dtype != KILN_DTYPE_INT32) || sl->rank != 1 ||
               sl->dims[0] != B))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'sequence_lens' must be int64 [%lld]",
                         (long long)B);

    kiln_status st = KILN_OK;
    int state_alloc = 0;
    for (int64_t b = 0; b < B && !st; b++) {
        int64_t len = T;
        if (sl) len = sl->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)sl->data)[b]
                                                    : ((const int32_t *)sl->data)[b];
        if (len < 0 || len > T)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sequence_lens[%lld] = %lld is outside [0, %lld]",
                             (long long)b, (long long)len, (long long)T);
        frame_drop_states(c, f);
        /* the batch entry's initial states: views of row b */
        kiln_value *init = calloc((size_t)(c->N + 1), sizeof *init);
        if (!init) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        for (int s = 0; s < c->N && !st; s++) {
            st = slice_at(ctx, kiln_input(ctx, c->first + s), 0, b, NULL, &init[s]);
            f->ins[s] = &init[s];
        }
        for (int64_t t = 0; t < len && !st; t++) {
            for (int j = 0; j < c->M && !st; j++) {
                const kiln_tensor *x = kiln_input(ctx, c->first + c->N + j);
                const int64_t p = list_at(c->in_dirs, c->n_in_dirs, j) ? len - 1 - t : t;
                /* row b of x, then step p of that row: both slices are contiguous */
                kiln_value row;
                if ((st = slice_at(ctx, x, 0, b, NULL, &row))) break;
                st = slice_at(ctx, &row.t, 0, p, NULL, &f->slices[j]);
            }
            if (st || (st = frame_step(ctx, c, f))) break;
            for (int k = 0; k < c->K && !st; k++) {
                const int oi = c->N + k;
                kiln_value *yv = &f->outs[oi];
                if (yv->kind != KILN_KIND_TENSOR) {
                    st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scan output %d is not a tensor", k);
                    break;
                }
                const kiln_tensor *y = &yv->t;
                if (!f->have_first[k]) {
                    kiln_tensor_set_shape(&f->first[k], y->dtype, y->rank, y->dims);
                    f->have_first[k] = 1;
                    if (oi < ctx->n_out && ctx->out[oi]) st = alloc_stacked(ctx, oi, y, NULL, 0, B, T);
                } else {
                    st = same_shape(ctx, y, &f->first[k], oi);
                }
                kiln_tensor *out = oi < ctx->n_out ? kiln_output(ctx, oi) : NULL;
                if (st || !out) continue;
                const int64_t per = kiln_numel(y);
                st = kiln_seq_copy_range(ctx, y->dtype, out->data, (b * T + t) * per, y->data, 0, per);
            }
            kiln_cf_release_all(f->outs, c->N + c->K);
        }
        /* final states of entry b go to row b of the state outputs */
        for (int s = 0; s < c->N && !st && s < ctx->n_out; s++) {
            if (!ctx->out[s]) continue;
            const kiln_value *fv = f->owned ? &f->states[s] : &init[s];
            if (fv->kind != KILN_KIND_TENSOR) {
                st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "state %d is not a tensor", s);
                break;
            }
            if (!state_alloc) {
                st = alloc_stacked(ctx, s, &fv->t, NULL, 0, B, -1);
            } else {
                kiln_tensor row;
                kiln_tensor *o = kiln_output(ctx, s);
                int64_t rd[KILN_MAX_RANK];
                for (int d = 1; d < o->rank; d++) rd[d - 1] = o->dims[d];
                kiln_tensor_set_shape(&row, o->dtype, o->rank - 1, rd);
                st = same_shape(ctx, &fv->t, &row, s);
            }
            if (st) break;
            kiln_tensor *o = kiln_output(ctx, s);
            const int64_t per = kiln_numel(&fv->t);
            st = kiln_seq_copy_range(ctx, fv->t.dtype, o->data, b * per, fv->t.data, 0, per);
        }
        state_alloc = 1;
        frame_drop_states(c, f);
        free(init);
    }
    if (st) return st;
    /* positions past an entry's sequence length are zeros (as onnxruntime gives); an output's
     * memory is not cleared for us (the arena's is reused run after run) */
    for (int k = 0; sl && k < c->K && c->N + k < ctx->n_out; k++) {
        kiln_tensor *out = kiln_output(ctx, c->N + k);
        if (!out || !out->data || !f->have_first[k] || out->dtype == KILN_DTYPE_STRING) continue;
        size_t step = kiln_tensor_nbytes(&f->first[k]);
        for (int64_t b = 0; b < B; b++) {
            int64_t len = sl->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)sl->data)[b]
                                                        : ((const int32_t *)sl->data)[b];
            if (len < T) memset((char *)out->data + (size_t)(b * T + len) * step, 0, (size_t)(T - len) * step);
        }
    }
    if (B == 0)
        for (int s = 0; s < c->N && s < ctx->n_out; s++) {
            if (!ctx->out[s]) continue;
            const kiln_tensor *in = kiln_input(ctx, c->first + s);
            KILN_TRY(kiln_alloc_output(ctx, s, in->dtype, in->rank, in->dims));
        }
    for (int k = 0; k < c->K && c->N + k < ctx->n_out; k++)
        if (!f->have_first[k] && ctx->out[c->N + k])
            KILN_TRY(alloc_stacked(ctx, c->N + k, NULL, kiln_cf_graph_output(c->body, c->N + k), 0, B, T));
    return KILN_OK;
}

kiln_status kiln_scan_compute(kiln_ctx *ctx) {
    scan_cfg c;
    KILN_TRY(scan_check(ctx, &c));
    scan_frame f;
    kiln_status st = frame_init(ctx, &c, &f);
    if (!st) st = c.v8 ? scan8(ctx, &c, &f) : scan9(ctx, &c, &f);
    frame_free(&c, &f);
    return st;
}
