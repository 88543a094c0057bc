/* Chrome-trace JSON for kiln_session_start_profiling / end_profiling (trace.h). */
#include "trace.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

double kiln_trace_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int64_t kiln_trace_wall_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

void kiln_trace_add(kiln_trace *t, const kiln_trace_event *ev) {
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 1024;
        if (cap > ((size_t)1 << 24)) return; /* a runaway trace stops growing at 16M events */
        kiln_trace_event *e = realloc(t->ev, cap * sizeof *e);
        if (!e) return;
        t->ev = e;
        t->cap = cap;
    }
    t->ev[t->n++] = *ev;
}

/* JSON string body: quotes, backslashes and control bytes escaped. */
static void put_json(FILE *f, const char *s) {
    for (; s && *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fputc(c, f);
    }
}

int kiln_trace_write(const kiln_trace *t) {
    FILE *f = fopen(t->path, "w");
    if (!f) return -1;
    fprintf(f, "[\n");
    int pid = (int)getpid();
    for (size_t i = 0; i < t->n; i++) {
        const kiln_trace_event *e = &t->ev[i];
        fprintf(f, "%s{\"cat\":\"%s\",\"pid\":%d,\"tid\":%d,\"ph\":\"X\",\"ts\":%.3f,\"dur\":%.3f,\"name\":\"",
                i ? ",\n" : "", e->op ? "Node" : "Session", pid, e->tid, e->ts_us, e->dur_us);
        put_json(f, e->name);
        fprintf(f, "\",\"args\":{");
        if (e->op) {
            fprintf(f, "\"op_name\":\"");
            put_json(f, e->op);
            fprintf(f, "\",\"provider\":\"");
            put_json(f, e->provider);
            fprintf(f, "\",\"output_shapes\":\"");
            put_json(f, e->shapes);
            fprintf(f, "\"");
        }
        fprintf(f, "}}");
    }
    fprintf(f, "\n]\n");
    return fclose(f) ? -1 : 0;
}

void kiln_trace_free(kiln_trace *t) {
    free(t->path);
    free(t->ev);
    memset(t, 0, sizeof *t);
}
