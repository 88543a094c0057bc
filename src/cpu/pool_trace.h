/* KILN_POOL_TRACE=FILE: a timeline of the intra-op pool, for finding where many-thread runs lose
 * time. Every job (a parallel-for, also one that ran serially on the caller) and every chunk is
 * recorded with its thread and CLOCK_MONOTONIC times; the records are written to FILE when the
 * process exits. bench/pool_trace_report.py splits a run's wall time into chunk work, fork and
 * join costs, waiting on the slowest thread, and serial time between jobs, per node. */
#ifndef KILN_POOL_TRACE_H
#define KILN_POOL_TRACE_H

#include <stdint.h>

/* nonzero while recording (the variable is read on every job; set once, before any job) */
extern int kiln_pool_trace_on;

void kiln_pool_trace_init(void);
int64_t kiln_pool_trace_now(void);
/* the label the calling thread's next job is recorded under (a node name; copied) */
void kiln_pool_trace_label(const char *label);
/* a job of n items in `chunks` chunks, opened at t_open and returned at t_done; returns its
 * number for the chunk records, or -1 once the buffer is full */
int64_t kiln_pool_trace_job(int64_t n, int64_t chunks, int64_t t_open);
void kiln_pool_trace_job_done(int64_t job, int64_t t_done);
void kiln_pool_trace_chunk(int64_t job, int64_t t0, int64_t t1);

#endif
