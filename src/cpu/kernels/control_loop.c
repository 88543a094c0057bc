/* Loop (opsets 1 to 24). Body inputs: (iteration number, condition, N loop-carried values);
 * body outputs: (condition, N loop-carried values, K scan outputs). Loop-carried values may be
 * tensors, sequences or optionals (opsets 13 / 16): they pass through as whole values. Scan
 * outputs are stacked along a new first axis and must keep one shape across iterations. */
#include "control_common.h"
#include <limits.h>
#include <stdio.h>

typedef struct loop_shape {
    kiln_graph *body;
    int N, K;
} loop_shape;

static kiln_status loop_check(kiln_ctx *ctx, loop_shape *ls) {
    KILN_TRY(kiln_cf_graph_attr(ctx, "body", &ls->body));
    if (ctx->n_in < 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "Loop needs inputs M and cond (possibly empty)");
    ls->N = ctx->n_in - 2;
    if (ls->body->n_inputs != ls->N + 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "body takes %d inputs, expected %d (iteration, condition and %d loop-carried)",
                         ls->body->n_inputs, ls->N + 2, ls->N);
    ls->K = ls->body->n_outputs - 1 - ls->N;
    if (ls->K < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL,
                         "body has %d outputs, expected at least %d (condition and %d loop-carried)",
                         ls->body->n_outputs, ls->N + 1, ls->N);
    if (ctx->n_out > ls->N + ls->K)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "Loop has %d outputs but its body gives %d",
                         ctx->n_out, ls->N + ls->K);
    return KILN_OK;
}

kiln_status kiln_loop_infer(kiln_ctx *ctx) {
    loop_shape ls;
    KILN_TRY(loop_check(ctx, &ls));
    for (int i = 0; i < ctx->n_out; i++)
        KILN_TRY(kiln_cf_type_output(ctx, i, kiln_cf_graph_output(ls.body, 1 + i), i >= ls.N));
    return KILN_OK;
}

/* Stacked scan output k: the items of every iteration, then one tensor [iterations, ...]. */
typedef struct scan_acc {
    kiln_tensor *items;
    int64_t n, cap;
    size_t charged; /* bytes of items counted against the session's memory limit */
} scan_acc;

static kiln_status acc_push(kiln_ctx *ctx, scan_acc *a, kiln_value *v, int k) {
    char what[64];
    snprintf(what, sizeof what, "scan output %d", k);
    if (a->n == a->cap) {
        int64_t cap = a->cap ? a->cap * 2 : 16;
        kiln_tensor *p = realloc(a->items, (size_t)cap * sizeof *p);
        if (!p) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        a->items = p;
        a->cap = cap;
    }
    kiln_tensor *t = &a->items[a->n];
    KILN_TRY(kiln_cf_take_tensor(ctx, v, what, t));
    a->n++;
    /* the stacked items live until the loop ends: a loop without end must meet the memory limit */
    size_t bytes = kiln_tensor_nbytes(t);
    KILN_TRY(kiln_run_charge(ctx, bytes, what));
    a->charged += bytes;
    if (a->n > 1 && (!kiln_shape_equal(t, &a->items[0]) || t->dtype != a->items[0].dtype)) {
        char s0[96], s1[96];
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "scan output %d is %s in iteration %lld but %s in iteration 0", k,
                         kiln_shape_str(t, s1, sizeof s1), (long long)(a->n - 1),
                         kiln_shape_str(&a->items[0], s0, sizeof s0));
    }
    return KILN_OK;
}

static void acc_free(kiln_ctx *ctx, scan_acc *a) {
    for (int64_t i = 0; i < a->n; i++) kiln_tensor_release(&a->items[i]);
    free(a->items);
    kiln_run_uncharge(ctx, a->charged);
    a->items = NULL;
    a->n = a->cap = 0;
    a->charged = 0;
}

static kiln_status acc_emit(kiln_ctx *ctx, int i, scan_acc *a, const kiln_graph_value *decl) {
    if (i >= ctx->n_out || !ctx->out[i]) return KILN_OK;
    int64_t dims[KILN_MAX_RANK];
    int rank, dtype;
    if (a->n > 0) {
        rank = a->items[0].rank + 1;
        dtype = a->items[0].dtype;
        if (rank > KILN_MAX_RANK)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "scan output %d would exceed rank %d", i,
                             KILN_MAX_RANK);
        memcpy(dims + 1, a->items[0].dims, (size_t)(rank - 1) * sizeof(int64_t));
    } else {
        /* no iteration ran: take the element shape the body declares, unknown sizes as 0 */
        dtype = decl && decl->has_type && decl->type.dtype ? decl->type.dtype : KILN_DTYPE_FLOAT;
        rank = 1;
        if (decl && decl->has_type && decl->type.rank >= 0 && decl->type.rank < KILN_MAX_RANK) {
            rank = decl->type.rank + 1;
            for (int d = 0; d < decl->type.rank; d++)
                dims[d + 1] = decl->type.dims[d] >= 0 ? decl->type.dims[d] : 0;
        }
    }
    dims[0] = a->n;
    KILN_TRY(kiln_alloc_output(ctx, i, dtype, rank, dims));
    kiln_tensor *out = kiln_output(ctx, i);
    if (a->n == 0) return KILN_OK;
    const int64_t per = kiln_numel(&a->items[0]);
    for (int64_t it = 0; it < a->n; it++)
        KILN_TRY(kiln_seq_copy_range(ctx, dtype, out->data, it * per, a->items[it].data, 0, per));
    return KILN_OK;
}

kiln_status kiln_loop_compute(kiln_ctx *ctx) {
    loop_shape ls;
    KILN_TRY(loop_check(ctx, &ls));
    const int N = ls.N, K = ls.K;

    int64_t max_trip = INT64_MAX;
    const kiln_value *mv = ctx->in[0];
    if (mv) {
        if (mv->kind != KILN_KIND_TENSOR || kiln_numel(&mv->t) != 1 ||
            (mv->t.dtype != KILN_DTYPE_INT64 && mv->t.dtype != KILN_DTYPE_INT32))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'M' must be a single int64");
        max_trip = mv->t.dtype == KILN_DTYPE_INT64 ? *(const int64_t *)mv->t.data
                                                   : *(const int32_t *)mv->t.data;
    }
    int cond = 1;
    if (ctx->in[1]) KILN_TRY(kiln_cf_read_bool(ctx, ctx->in[1], "input 'cond'", &cond));

    /* the counters handed to the body: scalars this frame owns */
    int64_t iter_val = 0;
    uint8_t cond_val = 1;
    kiln_value iter_v = {0}, cond_v = {0};
    kiln_tensor_set_shape(&iter_v.t, KILN_DTYPE_INT64, 0, NULL);
    iter_v.t.data = &iter_val;
    kiln_tensor_set_shape(&cond_v.t, KILN_DTYPE_BOOL, 0, NULL);
    cond_v.t.data = &cond_val;

    const int nb_out = ls.body->n_outputs;
    kiln_value **ins = calloc((size_t)(N + 2), sizeof *ins);
    kiln_value *carried = calloc((size_t)(N ? N : 1), sizeof *carried); /* owned after iter 0 */
    kiln_value *outs = calloc((size_t)nb_out, sizeof *outs);
    scan_acc *acc = calloc((size_t)(K ? K : 1), sizeof *acc);
    kiln_status st = KILN_OK;
    int owned = 0;
    if (!ins || !carried || !outs || !acc) {
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    ins[0] = &iter_v;
    ins[1] = &cond_v;
    for (int j = 0; j < N; j++) ins[2 + j] = ctx->in[2 + j];

    for (int64_t i = 0; i < max_trip && cond; i++) {
        /* a loop of 2^62 trips must stay stoppable (terminate flag, deadline) */
        if ((st = kiln_run_check(ctx))) goto done;
        iter_val = i;
        cond_val = (uint8_t)cond;
        memset(outs, 0, (size_t)nb_out * sizeof *outs);
        if ((st = kiln_run_subgraph(ctx, ls.body, N + 2, ins, outs))) goto done;
        int next = 1;
        /* the body's condition ends the loop even without a 'cond' input (the spec's pseudo-code
         * calls it ignored there, but onnxruntime and the reference evaluator both obey it) */
        st = kiln_cf_read_bool(ctx, &outs[0], "body output 'cond'", &next);
        for (int j = 0; j < N && st == KILN_OK; j++) {
            if (owned) kiln_value_release(&carried[j]);
            carried[j] = outs[1 + j];
            memset(&outs[1 + j], 0, sizeof outs[1 + j]);
            ins[2 + j] = &carried[j];
        }
        owned = 1;
        for (int k = 0; k < K && st == KILN_OK; k++) st = acc_push(ctx, &acc[k], &outs[1 + N + k], k);
        kiln_cf_release_all(outs, nb_out);
        if (st) goto done;
        cond = next;
    }

    for (int j = 0; j < N && j < ctx->n_out; j++) {
        if (!ctx->out[j]) continue;
        if (owned) {
            st = kiln_seq_move_to_output(ctx, j, &carried[j]);
        } else if (ctx->in[2 + j]) {
            kiln_value_release(ctx->out[j]);
            st = kiln_value_copy(ctx->out[j], ctx->in[2 + j], ctx->err);
        } else {
            kiln_value_release(ctx->out[j]);
            memset(ctx->out[j], 0, sizeof *ctx->out[j]);
            ctx->out[j]->kind = KILN_KIND_NONE;
        }
        if (st) goto done;
    }
    for (int k = 0; k < K && N + k < ctx->n_out; k++)
        if ((st = acc_emit(ctx, N + k, &acc[k], kiln_cf_graph_output(ls.body, 1 + N + k)))) goto done;

done:
    if (owned && carried) kiln_cf_release_all(carried, N);
    if (outs) kiln_cf_release_all(outs, nb_out);
    if (acc)
        for (int k = 0; k < K; k++) acc_free(ctx, &acc[k]);
    free(ins), free(carried), free(outs), free(acc);
    return st;
}
