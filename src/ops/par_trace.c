/* KILN_PARTITION=T: how each parallel loop would share its work among T threads, on a machine
 * that may have fewer cores than T. Kernels plan for T threads (kiln_num_threads answers T), the
 * pool's chunking for T threads is applied (kiln_threadpool_plan), and the chunks then run one
 * after another on the calling thread, each timed alone (CPU time). Greedy assignment of the timed chunks in
 * claiming order to the first free thread gives the loop's time on T threads without the fork
 * and memory-bandwidth costs. One line per loop goes to stderr:
 *
 *   kiln-partition <node> <op> items=N grain=G chunks=C serial_us=S min_us= max_us= span_us=P eff=E
 *
 * eff = S / (T * P): 1 when the T threads share the work evenly. Nested loops run inline, as
 * they do in the pool. bench/partition_report.py sums the lines per node. */
#include "op.h"
#include "../cpu/threadpool.h"
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

static _Thread_local int trace_depth;

int kiln_par_trace_threads(void) {
    static _Atomic int cached = -1;
    int t = cached;
    if (t < 0) {
        const char *e = getenv("KILN_PARTITION");
        t = e ? atoi(e) : 0;
        if (t < 2) t = 0;
        if (t > 4096) t = 4096;
        cached = t;
    }
    return t;
}

static double now_us(void) {
    struct timespec ts;
    /* the thread's CPU time: on a loaded machine a chunk that lost the core for a time slice
     * would otherwise look milliseconds long */
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return ts.tv_sec * 1e6 + ts.tv_nsec * 1e-3;
}

int kiln_par_trace_run(kiln_ctx *ctx, int64_t n, int64_t grain, kiln_range_fn fn, void *arg) {
    int T = kiln_par_trace_threads();
    if (!T || n <= 0) return 0;
    if (trace_depth) { /* inside a traced chunk: inline, like a nested job in the pool */
        fn(arg, 0, n);
        return 1;
    }
    int64_t chunks = kiln_threadpool_plan(T, n, grain);
    double *cost = malloc(sizeof(double) * (size_t)chunks), *free_at = calloc((size_t)T, sizeof(double));
    if (!cost || !free_at) {
        free(cost);
        free(free_at);
        return 0;
    }
    trace_depth = 1;
    double total = 0, lo = 1e300, hi = 0;
    for (int64_t i = 0; i < chunks; i++) {
        double t0 = now_us();
        fn(arg, kiln_chunk_begin(n, chunks, i), kiln_chunk_begin(n, chunks, i + 1));
        cost[i] = now_us() - t0;
        total += cost[i];
        if (cost[i] < lo) lo = cost[i];
        if (cost[i] > hi) hi = cost[i];
    }
    trace_depth = 0;
    /* the pool's threads claim chunks in order, each as soon as it is free */
    double span = 0;
    for (int64_t i = 0; i < chunks; i++) {
        int best = 0;
        for (int k = 1; k < T; k++)
            if (free_at[k] < free_at[best]) best = k;
        free_at[best] += cost[i];
        if (free_at[best] > span) span = free_at[best];
    }
    const kiln_node *nd = ctx ? ctx->node : NULL;
    fprintf(stderr,
            "kiln-partition\t%s\t%s\titems=%lld\tgrain=%lld\tchunks=%lld\tserial_us=%.2f\tmin_us=%.2f"
            "\tmax_us=%.2f\tspan_us=%.2f\teff=%.3f\n",
            nd ? nd->name : "-", nd ? nd->op_type : "-", (long long)n, (long long)grain,
            (long long)chunks, total, lo, hi, span, span > 0 ? total / (T * span) : 1.0);
    free(cost);
    free(free_at);
    return 1;
}
