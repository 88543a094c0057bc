/* A Chrome-trace / Perfetto timeline of a session's runs (kiln_session_start_profiling): one event
 * per node with its provider, op and shapes, one per run. A device node is timed from the moment
 * the device is idle until its work is done (the runner synchronises around it while tracing), so
 * tracing slows runs down but shows where device time goes. */
#ifndef KILN_TRACE_H
#define KILN_TRACE_H

#include <stddef.h>
#include <stdint.h>

typedef struct kiln_trace_event {
    const char *name;      /* node name (owned by the model) or "model_run" */
    const char *op;
    const char *provider;
    double ts_us, dur_us;
    int tid;               /* provider index: one timeline row per provider */
    char shapes[96];
} kiln_trace_event;

typedef struct kiln_trace {
    char *path;
    kiln_trace_event *ev;
    size_t n, cap;
    double t0;             /* seconds, monotonic, when profiling started */
    int64_t start_ns;      /* the same moment on the system clock, ns since the epoch */
} kiln_trace;

double kiln_trace_now(void);
int64_t kiln_trace_wall_ns(void);
void kiln_trace_add(kiln_trace *t, const kiln_trace_event *ev);
/* Writes the trace as Chrome-trace JSON; returns 0 on success. */
int kiln_trace_write(const kiln_trace *t);
void kiln_trace_free(kiln_trace *t);

#endif
