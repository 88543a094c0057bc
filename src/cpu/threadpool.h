/* The intra-op thread pool. Workers sleep on a condition variable between jobs, so an idle
 * session burns no CPU. A job is a range [0, n) cut into chunks that the workers and the calling
 * thread claim from a shared counter; the call returns when every chunk is done. */
#ifndef KILN_THREADPOOL_H
#define KILN_THREADPOOL_H

#include <stdint.h>

typedef struct kiln_threadpool kiln_threadpool;
typedef void (*kiln_pool_fn)(void *arg, int64_t begin, int64_t end);

/* n_threads counts the caller: 1 makes a pool with no workers. NULL on failure. */
kiln_threadpool *kiln_threadpool_create(int n_threads);
void kiln_threadpool_destroy(kiln_threadpool *tp);
int kiln_threadpool_size(const kiln_threadpool *tp);
void kiln_threadpool_run(kiln_threadpool *tp, int64_t n, int64_t grain, kiln_pool_fn fn, void *arg);

/* How a job of n items (grain >= 1) is cut on n_threads threads: into the returned number of
 * chunks, chunk i being items [kiln_chunk_begin(n, chunks, i), kiln_chunk_begin(n, chunks, i + 1)).
 * 1 means the job runs serially on the caller. Chunk sizes differ by at most one item. */
int64_t kiln_threadpool_plan(int n_threads, int64_t n, int64_t grain);
static inline int64_t kiln_chunk_begin(int64_t n, int64_t chunks, int64_t i) {
    int64_t base = n / chunks, rem = n % chunks;
    return i * base + (i < rem ? i : rem);
}

#endif
