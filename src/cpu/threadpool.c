#include "threadpool.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

/* Workers spin for SPIN_NS after a job before sleeping: a model runs many small parallel ops back
 * to back, and waking a sleeping thread through the condition variable costs about as much as a
 * medium op itself. After that they sleep, so an idle session uses no CPU. The spin is bounded by
 * time and uses no PAUSE: under KVM a vCPU that executes PAUSE in a loop is taken off the CPU
 * (pause-loop exiting) after a few thousand cycles, so a PAUSE spin put the worker to sleep in
 * the host exactly when the next op needed it (bert_tiny at 2 threads ran slower than at 1). */
#define SPIN_NS 200000

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* empty statement the compiler may not remove or hoist loads across */
#define SPIN_BARRIER() __asm__ __volatile__("" ::: "memory")

struct kiln_threadpool {
    int n_threads; /* including the caller */
    pthread_t *workers;
    pthread_mutex_t mu;
    pthread_cond_t wake, done;
    pthread_mutex_t run_mu; /* one job at a time (nested calls run inline) */
    /* the current job: written before job_id is published (release), read after (acquire) */
    kiln_pool_fn fn;
    void *arg;
    int64_t n, chunk;
    atomic_llong next;
    atomic_ulong job_id;
    /* Workers join a job only while it is open (under mu). The caller closes it once it has run
     * out of chunks and then waits only for the workers that joined: a worker the scheduler has
     * not run yet costs the job nothing. */
    int open;
    atomic_int joined;       /* changed under mu; the caller also polls it without the lock */
    int sleepers;            /* workers blocked on `wake` (under mu) */
    atomic_int stop;
};

static _Thread_local int in_pool_job;

static void run_chunks(kiln_threadpool *tp) {
    for (;;) {
        int64_t b = atomic_fetch_add(&tp->next, tp->chunk);
        if (b >= tp->n) break;
        int64_t e = b + tp->chunk < tp->n ? b + tp->chunk : tp->n;
        tp->fn(tp->arg, b, e);
    }
}

static void *worker_main(void *p) {
    kiln_threadpool *tp = p;
    unsigned long seen = 0;
    in_pool_job = 1;
    for (;;) {
        unsigned long id = seen;
        int64_t t0 = now_ns();
        for (int i = 1;; i++) {
            id = atomic_load_explicit(&tp->job_id, memory_order_acquire);
            if (id != seen || atomic_load(&tp->stop)) break;
            if (!(i & 255) && now_ns() - t0 > SPIN_NS) break; /* the clock read is ~20 ns */
            SPIN_BARRIER();
        }
        pthread_mutex_lock(&tp->mu);
        while (!atomic_load(&tp->stop) && (id = atomic_load(&tp->job_id)) == seen) {
            tp->sleepers++;
            pthread_cond_wait(&tp->wake, &tp->mu);
            tp->sleepers--;
        }
        if (atomic_load(&tp->stop)) {
            pthread_mutex_unlock(&tp->mu);
            break;
        }
        seen = id;
        int join = tp->open;
        if (join) atomic_fetch_add(&tp->joined, 1);
        pthread_mutex_unlock(&tp->mu);
        if (!join) continue; /* woke too late: the caller already finished that job */
        run_chunks(tp);
        pthread_mutex_lock(&tp->mu);
        if (atomic_fetch_sub(&tp->joined, 1) == 1 && !tp->open) pthread_cond_signal(&tp->done);
        pthread_mutex_unlock(&tp->mu);
    }
    return NULL;
}

kiln_threadpool *kiln_threadpool_create(int n_threads) {
    if (n_threads < 1) n_threads = 1;
    kiln_threadpool *tp = calloc(1, sizeof *tp);
    if (!tp) return NULL;
    tp->n_threads = n_threads;
    pthread_mutex_init(&tp->mu, NULL);
    pthread_mutex_init(&tp->run_mu, NULL);
    pthread_cond_init(&tp->wake, NULL);
    pthread_cond_init(&tp->done, NULL);
    if (n_threads > 1) {
        tp->workers = calloc((size_t)n_threads - 1, sizeof(pthread_t));
        if (!tp->workers) { free(tp); return NULL; }
        for (int i = 0; i < n_threads - 1; i++) {
            if (pthread_create(&tp->workers[i], NULL, worker_main, tp)) {
                tp->n_threads = i + 1; /* run with the workers we got */
                break;
            }
        }
    }
    return tp;
}

void kiln_threadpool_destroy(kiln_threadpool *tp) {
    if (!tp) return;
    pthread_mutex_lock(&tp->mu);
    atomic_store(&tp->stop, 1);
    pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->mu);
    for (int i = 0; i < tp->n_threads - 1; i++) pthread_join(tp->workers[i], NULL);
    free(tp->workers);
    pthread_mutex_destroy(&tp->mu);
    pthread_mutex_destroy(&tp->run_mu);
    pthread_cond_destroy(&tp->wake);
    pthread_cond_destroy(&tp->done);
    free(tp);
}

int kiln_threadpool_size(const kiln_threadpool *tp) { return tp ? tp->n_threads : 1; }

void kiln_threadpool_run(kiln_threadpool *tp, int64_t n, int64_t grain, kiln_pool_fn fn, void *arg) {
    if (n <= 0) return;
    if (grain < 1) grain = 1;
    /* serial when there is no pool, the work is small, or we are already inside a job */
    if (!tp || tp->n_threads == 1 || n <= grain || in_pool_job) {
        fn(arg, 0, n);
        return;
    }
    pthread_mutex_lock(&tp->run_mu);
    /* about 4 chunks per thread balances uneven work without much counter traffic */
    int64_t chunk = (n + tp->n_threads * 4 - 1) / (tp->n_threads * 4);
    if (chunk < grain) chunk = grain;
    /* Whole rounds of chunks: a count just above a multiple of the thread count leaves one
     * thread a last chunk while the others wait (3 chunks of 32K on 2 threads take as long as 4),
     * so round the count down to a multiple and widen the chunks to match. */
    int64_t nchunks = (n + chunk - 1) / chunk;
    if (nchunks > tp->n_threads && nchunks % tp->n_threads) {
        nchunks -= nchunks % tp->n_threads;
        chunk = (n + nchunks - 1) / nchunks;
    }
    pthread_mutex_lock(&tp->mu);
    tp->fn = fn;
    tp->arg = arg;
    tp->n = n;
    tp->chunk = chunk;
    atomic_store(&tp->next, 0);
    tp->open = 1;
    atomic_store(&tp->joined, 0);
    atomic_fetch_add_explicit(&tp->job_id, 1, memory_order_release);
    if (tp->sleepers) pthread_cond_broadcast(&tp->wake);
    pthread_mutex_unlock(&tp->mu);
    in_pool_job = 1;
    run_chunks(tp);
    in_pool_job = 0;
    pthread_mutex_lock(&tp->mu);
    tp->open = 0;
    pthread_mutex_unlock(&tp->mu);
    /* A joined worker is usually a few microseconds from finishing its last chunk; sleeping on
     * `done` would add a futex wake-up (tens of microseconds) to every parallel op, so spin first.
     * The worker still signals under mu, so the fallback wait cannot miss its wake-up. */
    int64_t t0 = now_ns();
    for (int i = 1; atomic_load(&tp->joined) > 0; i++) {
        if (!(i & 255) && now_ns() - t0 > SPIN_NS) break;
        SPIN_BARRIER();
    }
    if (atomic_load(&tp->joined) > 0) {
        pthread_mutex_lock(&tp->mu);
        while (atomic_load(&tp->joined) > 0) pthread_cond_wait(&tp->done, &tp->mu);
        pthread_mutex_unlock(&tp->mu);
    }
    pthread_mutex_unlock(&tp->run_mu);
}
