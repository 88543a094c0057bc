#include "threadpool.h"
#include "pool_trace.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sched.h>
#include <time.h>

/* Workers spin for SPIN_NS after a job before sleeping: a model runs many small parallel ops back
 * to back, and waking a sleeping thread through the condition variable costs about as much as a
 * medium op itself. After that they sleep, so an idle session uses no CPU. The spin is bounded by
 * time and uses no PAUSE: under KVM a vCPU that executes PAUSE in a loop is taken off the CPU
 * (pause-loop exiting) after a few thousand cycles, so a PAUSE spin put the worker to sleep in
 * the host exactly when the next op needed it (bert_tiny at 2 threads ran slower than at 1).
 * Past the first YIELD_AFTER_NS a spinner calls sched_yield between looks: on a machine with more
 * runnable threads than cores (more threads than cores, or other processes) the thread that owes
 * the job its last chunk gets the core, instead of waiting out the spinner's time slice. */
#define SPIN_NS 200000
#define YIELD_AFTER_NS 2000

static int64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* empty statement the compiler may not remove or hoist loads across */
#define SPIN_BARRIER() __asm__ __volatile__("" ::: "memory")

/* One job's admission word: OPEN while the caller still hands out chunks, WANT the most workers
 * that may join (chunks - 1: the caller takes one), JOINED those that did and have not finished.
 * Joining, closing and finishing are single atomic operations, so the fast path takes no lock. */
#define ST_OPEN 0x80000000u
#define ST_WANT_SHIFT 16
#define ST_JOINED 0xffffu
#define ST_WANT(s) (((s) >> ST_WANT_SHIFT) & 0x7fffu)

struct kiln_threadpool {
    int n_threads; /* including the caller */
    pthread_t *workers;
    pthread_mutex_t mu;     /* only for sleeping and waking */
    pthread_cond_t wake, done;
    pthread_mutex_t run_mu; /* one job at a time: nested calls, and calls from other threads while
                               a job runs (concurrent runs of a session), run inline */
    /* the current job: written while no worker can join (state closed, none joined), published
     * by the release store that opens state, read by a worker after it joined (acquire) */
    kiln_pool_fn fn;
    void *arg;
    int64_t n, nchunks;
    int64_t trace_job; /* KILN_POOL_TRACE's number for this job */
    /* Each word that threads write during a job has a cache line of its own: every chunk claim
     * writes `next` and every join and finish writes `state`, and sharing a line with the job
     * description above (read before every chunk) or with job_id (read in every spinner's loop)
     * made each of those writes a miss on every other core. */
    _Alignas(64) atomic_llong next; /* the next chunk to claim */
    _Alignas(64) atomic_uint state;
    _Alignas(64) atomic_ulong job_id; /* bumped per job: what spinning and sleeping workers watch */
    atomic_int stop;
    _Alignas(64) atomic_int sleepers; /* workers blocked on `wake` or about to be */
    atomic_int caller_waits;          /* the caller sleeps on `done` */
};

static _Thread_local int in_pool_job;

static void run_chunks(kiln_threadpool *tp) {
    for (;;) {
        int64_t i = atomic_fetch_add(&tp->next, 1);
        if (i >= tp->nchunks) break;
        int64_t t0 = kiln_pool_trace_on ? kiln_pool_trace_now() : 0;
        tp->fn(tp->arg, kiln_chunk_begin(tp->n, tp->nchunks, i),
               kiln_chunk_begin(tp->n, tp->nchunks, i + 1));
        if (kiln_pool_trace_on) kiln_pool_trace_chunk(tp->trace_job, t0, kiln_pool_trace_now());
    }
}

/* A worker that saw a new job: joins while it is open and short of workers. */
static int try_join(kiln_threadpool *tp) {
    unsigned s = atomic_load_explicit(&tp->state, memory_order_relaxed);
    for (;;) {
        if (!(s & ST_OPEN) || (s & ST_JOINED) >= ST_WANT(s)) return 0;
        if (atomic_compare_exchange_weak_explicit(&tp->state, &s, s + 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return 1;
    }
}

static void finish(kiln_threadpool *tp) {
    unsigned prev = atomic_fetch_sub(&tp->state, 1); /* seq_cst: against caller_waits */
    /* the last worker out of a closed job wakes the caller if it went to sleep */
    if ((prev & ST_JOINED) == 1 && !(prev & ST_OPEN) && atomic_load(&tp->caller_waits)) {
        pthread_mutex_lock(&tp->mu);
        pthread_cond_signal(&tp->done);
        pthread_mutex_unlock(&tp->mu);
    }
}

/* Spins until job_id moves past `seen` (returns it) or SPIN_NS pass (returns seen). */
static unsigned long spin_for_job(kiln_threadpool *tp, unsigned long seen) {
    int64_t t0 = now_ns(), t;
    for (int i = 1;; i++) {
        unsigned long id = atomic_load_explicit(&tp->job_id, memory_order_acquire);
        if (id != seen || atomic_load_explicit(&tp->stop, memory_order_relaxed)) return id;
        if (!(i & 63)) { /* the clock read is ~20 ns */
            t = now_ns() - t0;
            if (t > SPIN_NS) return seen;
            if (t > YIELD_AFTER_NS) sched_yield();
        }
        SPIN_BARRIER();
    }
}

static void *worker_main(void *p) {
    kiln_threadpool *tp = p;
    unsigned long seen = 0;
    in_pool_job = 1;
    for (;;) {
        unsigned long id = spin_for_job(tp, seen);
        if (id == seen && !atomic_load(&tp->stop)) {
            pthread_mutex_lock(&tp->mu);
            /* seq_cst: the caller bumps job_id, then reads sleepers; this thread counts itself,
             * then reads job_id. One of the two sees the other, so no wake-up is lost. */
            atomic_fetch_add(&tp->sleepers, 1);
            while (!atomic_load(&tp->stop) && (id = atomic_load(&tp->job_id)) == seen)
                pthread_cond_wait(&tp->wake, &tp->mu);
            atomic_fetch_sub(&tp->sleepers, 1);
            pthread_mutex_unlock(&tp->mu);
        }
        if (atomic_load(&tp->stop)) break;
        seen = id;
        if (!try_join(tp)) continue; /* too late, or enough workers already */
        run_chunks(tp);
        finish(tp);
    }
    return NULL;
}

kiln_threadpool *kiln_threadpool_create(int n_threads) {
    kiln_pool_trace_init();
    if (n_threads < 1) n_threads = 1;
    if (n_threads > 0x7fff) n_threads = 0x7fff; /* ST_WANT's width */
    /* aligned as its cache-line members ask (sizeof is a multiple of the alignment) */
    kiln_threadpool *tp = aligned_alloc(_Alignof(kiln_threadpool), sizeof *tp);
    if (!tp) return NULL;
    memset(tp, 0, sizeof *tp);
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

int64_t kiln_threadpool_plan(int n_threads, int64_t n, int64_t grain) {
    if (grain < 1) grain = 1;
    if (n_threads <= 1 || n <= grain) return 1;
    /* about 4 chunks per thread balances uneven work without much counter traffic */
    int64_t chunk = (n + n_threads * 4 - 1) / (n_threads * 4);
    if (chunk < grain) chunk = grain;
    int64_t nchunks = n / chunk; /* floor: every chunk keeps at least `grain` items */
    /* Whole rounds of chunks: a count just above a multiple of the thread count leaves one
     * thread a last chunk while the others wait (3 chunks of 32K on 2 threads take as long as 4),
     * so the count is rounded down to a multiple where that shortens the longest thread's share
     * (rounds x largest chunk, in items). The chunks are cut evenly (sizes differ by one item at
     * most). Before, a fixed chunk size was widened to fit the rounded count, which on small jobs
     * left fewer chunks than threads (24 attention blocks on 16 threads: 12 chunks of 2), and
     * rounding 60 single-item chunks down to 48 made 12 of them two items long. */
    if (nchunks > n_threads && nchunks % n_threads) {
        int64_t down = nchunks - nchunks % n_threads;
        int64_t span_now = (nchunks + n_threads - 1) / n_threads * ((n + nchunks - 1) / nchunks);
        int64_t span_down = down / n_threads * ((n + down - 1) / down);
        if (span_down < span_now) nchunks = down; /* a tie keeps the finer chunks */
    }
    return nchunks < 1 ? 1 : nchunks;
}

void kiln_threadpool_run(kiln_threadpool *tp, int64_t n, int64_t grain, kiln_pool_fn fn, void *arg) {
    if (n <= 0) return;
    /* serial when there is no pool, the work is small, or we are already inside a job */
    int64_t nchunks = tp && !in_pool_job ? kiln_threadpool_plan(tp->n_threads, n, grain) : 1;
    if (nchunks == 1) {
        if (kiln_pool_trace_on && !in_pool_job) {
            int64_t t0 = kiln_pool_trace_now(), job = kiln_pool_trace_job(n, 1, t0);
            fn(arg, 0, n);
            int64_t t1 = kiln_pool_trace_now();
            kiln_pool_trace_chunk(job, t0, t1);
            kiln_pool_trace_job_done(job, t1);
            return;
        }
        fn(arg, 0, n);
        return;
    }
    /* Another thread's job has the workers (concurrent runs of a session): this caller runs its
     * job alone, rather than wait for the pool and serialise the runs. The same chunks as on the
     * pool, so that a kernel's result never depends on which way its job went. */
    if (pthread_mutex_trylock(&tp->run_mu)) {
        in_pool_job = 1; /* calls nested in fn run inline too, without trying the lock again */
        for (int64_t i = 0; i < nchunks; i++)
            fn(arg, kiln_chunk_begin(n, nchunks, i), kiln_chunk_begin(n, nchunks, i + 1));
        in_pool_job = 0;
        return;
    }
    /* the caller takes a chunk itself: only chunks - 1 workers are of use */
    unsigned want = (unsigned)(nchunks - 1 < tp->n_threads - 1 ? nchunks - 1 : tp->n_threads - 1);
    tp->fn = fn;
    tp->arg = arg;
    tp->n = n;
    tp->nchunks = nchunks;
    tp->trace_job = kiln_pool_trace_on ? kiln_pool_trace_job(n, nchunks, kiln_pool_trace_now()) : -1;
    atomic_store_explicit(&tp->next, 0, memory_order_relaxed);
    atomic_store_explicit(&tp->state, ST_OPEN | want << ST_WANT_SHIFT, memory_order_release);
    atomic_fetch_add(&tp->job_id, 1); /* seq_cst: see worker_main */
    int sleeping = atomic_load(&tp->sleepers);
    if (sleeping) {
        /* wake no more sleepers than the job can use; spinning workers may take some places */
        pthread_mutex_lock(&tp->mu);
        if (want >= (unsigned)sleeping) pthread_cond_broadcast(&tp->wake);
        else
            for (unsigned i = 0; i < want; i++) pthread_cond_signal(&tp->wake);
        pthread_mutex_unlock(&tp->mu);
    }
    in_pool_job = 1;
    run_chunks(tp);
    in_pool_job = 0;
    /* close: a worker that has not joined yet stays out, and costs the job nothing */
    unsigned s = atomic_fetch_and_explicit(&tp->state, ~ST_OPEN, memory_order_acq_rel);
    if (s & ST_JOINED) {
        /* A joined worker is usually a few microseconds from finishing its last chunk; sleeping
         * on `done` would add a futex wake-up (tens of microseconds), so spin first. */
        int64_t t0 = now_ns(), t;
        for (int i = 1; atomic_load_explicit(&tp->state, memory_order_acquire) & ST_JOINED; i++) {
            if (!(i & 63)) {
                t = now_ns() - t0;
                if (t > SPIN_NS) break;
                if (t > YIELD_AFTER_NS) sched_yield();
            }
            SPIN_BARRIER();
        }
        if (atomic_load(&tp->state) & ST_JOINED) {
            pthread_mutex_lock(&tp->mu);
            atomic_store(&tp->caller_waits, 1);
            while (atomic_load(&tp->state) & ST_JOINED) pthread_cond_wait(&tp->done, &tp->mu);
            atomic_store(&tp->caller_waits, 0);
            pthread_mutex_unlock(&tp->mu);
        }
    }
    if (kiln_pool_trace_on) kiln_pool_trace_job_done(tp->trace_job, kiln_pool_trace_now());
    pthread_mutex_unlock(&tp->run_mu);
}
