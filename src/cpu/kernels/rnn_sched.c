/* Passes over the pool that give each thread the same chunk of a step, step after step. A step's
 * chunk reads its rows of R (128 KB for 2 blocks of a 256-unit LSTM): the pool hands chunks out
 * in the order threads arrive, which changes from step to step, so a chunk's rows of R would
 * move from one core's cache to another's on most steps, at a cost comparable with the chunk's
 * arithmetic. Here the pool only says how many chunks a thread does; which ones it claims itself,
 * trying first the one it did last. Which thread does a chunk never changes what it computes. */
#include "rnn_common.h"
#include "../threadpool.h"
#include <stdatomic.h>
#include <stdlib.h>

struct rnn_claims {
    int64_t n;         /* chunks per pass */
    int64_t pass;      /* the current pass, from 1 */
    _Atomic int64_t *at; /* [n]: the last pass that claimed each chunk */
};

/* the chunk this thread claimed last, in whichever node: a hint only (every claim is checked) */
static _Thread_local int64_t last_chunk = -1;

rnn_claims *kiln_rnn_claims_new(int64_t n) {
    rnn_claims *cl = malloc(sizeof *cl);
    if (!cl) return NULL;
    cl->n = n;
    cl->pass = 0;
    cl->at = malloc(sizeof *cl->at * (size_t)(n > 0 ? n : 1));
    if (!cl->at) {
        free(cl);
        return NULL;
    }
    for (int64_t i = 0; i < n; i++) atomic_init(&cl->at[i], 0);
    return cl;
}

void kiln_rnn_claims_free(rnn_claims *cl) {
    if (!cl) return;
    free((void *)cl->at);
    free(cl);
}

/* Claims a chunk not yet claimed in this pass. One always remains: the pool makes exactly n calls
 * a pass, each claiming one. */
static int64_t claim(rnn_claims *cl, int64_t start) {
    const int64_t n = cl->n, pass = cl->pass;
    const int64_t first = last_chunk >= 0 && last_chunk < n ? last_chunk : start;
    for (int64_t k = 0; k < n; k++) {
        const int64_t c = (first + k) % n;
        int64_t seen = atomic_load_explicit(&cl->at[c], memory_order_relaxed);
        if (seen != pass && atomic_compare_exchange_strong(&cl->at[c], &seen, pass)) return last_chunk = c;
    }
    return -1;
}

typedef struct sticky_job {
    rnn_claims *cl;
    int64_t items;
    kiln_range_fn fn;
    void *arg;
} sticky_job;

static void sticky_chunks(void *arg, int64_t i0, int64_t i1) {
    sticky_job *s = arg;
    for (int64_t i = i0; i < i1; i++) {
        const int64_t c = claim(s->cl, i);
        if (c >= 0)
            s->fn(s->arg, kiln_chunk_begin(s->items, s->cl->n, c), kiln_chunk_begin(s->items, s->cl->n, c + 1));
    }
}

void kiln_rnn_pass(kiln_ctx *ctx, rnn_claims *cl, int64_t items, kiln_range_fn fn, void *arg) {
    if (cl->n <= 1) {
        fn(arg, 0, items);
        return;
    }
    cl->pass++;
    sticky_job s = {cl, items, fn, arg};
    kiln_parallel_for(ctx, cl->n, 1, sticky_chunks, &s);
}
