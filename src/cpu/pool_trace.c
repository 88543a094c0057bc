#include "pool_trace.h"
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_JOBS (1 << 18)
#define MAX_CHUNKS (1 << 22)
#define LABEL_LEN 64

typedef struct job_rec {
    int64_t n, chunks, t_open, t_done;
    char label[LABEL_LEN];
} job_rec;

typedef struct chunk_rec {
    int64_t t0, t1;
    int32_t job, thread;
} chunk_rec;

int kiln_pool_trace_on;
static char *trace_path;
static job_rec *jobs;
static chunk_rec *chunks;
static atomic_llong n_jobs, n_chunks;
static atomic_int n_threads;
static _Thread_local int thread_slot = -1;
static _Thread_local char thread_label[LABEL_LEN];
static pthread_once_t once = PTHREAD_ONCE_INIT;

int64_t kiln_pool_trace_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static void write_trace(void) {
    FILE *f = fopen(trace_path, "w");
    if (!f) {
        fprintf(stderr, "kiln: KILN_POOL_TRACE: cannot write %s\n", trace_path);
        return;
    }
    int64_t nj = atomic_load(&n_jobs), nc = atomic_load(&n_chunks);
    if (nj > MAX_JOBS) nj = MAX_JOBS;
    if (nc > MAX_CHUNKS) nc = MAX_CHUNKS;
    fprintf(f, "# kiln pool trace (CLOCK_MONOTONIC ns): J job items chunks open_ns done_ns label / C job thread begin_ns end_ns\n");
    for (int64_t i = 0; i < nj; i++)
        fprintf(f, "J %lld %lld %lld %lld %lld %s\n", (long long)i, (long long)jobs[i].n,
                (long long)jobs[i].chunks, (long long)jobs[i].t_open,
                (long long)(jobs[i].t_done ? jobs[i].t_done : -1),
                jobs[i].label[0] ? jobs[i].label : "-");
    for (int64_t i = 0; i < nc; i++)
        fprintf(f, "C %d %d %lld %lld\n", chunks[i].job, chunks[i].thread,
                (long long)chunks[i].t0, (long long)chunks[i].t1);
    fclose(f);
}

static void init(void) {
    const char *e = getenv("KILN_POOL_TRACE");
    if (!e || !*e) return;
    trace_path = strdup(e);
    jobs = calloc(MAX_JOBS, sizeof *jobs);
    chunks = calloc(MAX_CHUNKS, sizeof *chunks);
    if (!trace_path || !jobs || !chunks) {
        fprintf(stderr, "kiln: KILN_POOL_TRACE: no memory for the trace buffers\n");
        return;
    }
    atexit(write_trace);
    kiln_pool_trace_on = 1;
}

/* called where pools are made, so the switch is set before the first job */
void kiln_pool_trace_init(void) { pthread_once(&once, init); }

void kiln_pool_trace_label(const char *label) {
    snprintf(thread_label, sizeof thread_label, "%s", label ? label : "-");
    for (char *p = thread_label; *p; p++)
        if (*p == ' ' || *p == '\n') *p = '_';
}

int64_t kiln_pool_trace_job(int64_t n, int64_t nchunks, int64_t t_open) {
    int64_t i = atomic_fetch_add(&n_jobs, 1);
    if (i >= MAX_JOBS) return -1;
    jobs[i].n = n;
    jobs[i].chunks = nchunks;
    jobs[i].t_open = t_open;
    memcpy(jobs[i].label, thread_label, LABEL_LEN);
    return i;
}

void kiln_pool_trace_job_done(int64_t job, int64_t t_done) {
    if (job >= 0) jobs[job].t_done = t_done;
}

void kiln_pool_trace_chunk(int64_t job, int64_t t0, int64_t t1) {
    if (job < 0) return;
    if (thread_slot < 0) thread_slot = atomic_fetch_add(&n_threads, 1);
    int64_t i = atomic_fetch_add(&n_chunks, 1);
    if (i >= MAX_CHUNKS) return;
    chunks[i] = (chunk_rec){t0, t1, (int32_t)job, thread_slot};
}
