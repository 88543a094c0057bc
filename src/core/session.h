/* Session internals shared by the session, the runner and the tools (kiln info / test). */
#ifndef KILN_SESSION_H
#define KILN_SESSION_H

#include "graph.h"
#include "../cpu/threadpool.h"
#include "../providers/registry.h"
#include "trace.h"
#include <pthread.h>

/* A memory plan for one input-shape signature: where each intermediate value lives in the arena
 * of its memory space (one arena per provider memory; [0] is the host's). */
typedef struct kiln_plan {
    char *signature;
    int n_values;
    int64_t *offset;       /* per value of the main graph, in its memory space's arena; -1 = none */
    size_t *size;
    size_t arena_bytes;    /* all arenas together */
    size_t naive_bytes;
    size_t dev_bytes[KILN_MAX_PROVIDERS];
    void *arena[KILN_MAX_PROVIDERS];
    kiln_provider *ep[KILN_MAX_PROVIDERS]; /* who frees each arena */
    struct kiln_capture *capture;          /* graph capture of this signature (capture.c) */
    struct kiln_plan *next;
} kiln_plan;

/* One run's limits (kiln_run_options' terminate flag and deadline, the session's memory_limit)
 * and what the run holds against them; shared by the main graph's frame and every subgraph frame
 * of the run, all on the calling thread. */
typedef struct kiln_run_limits {
    volatile int *terminate;   /* NULL: none */
    double timeout_ms;
    double deadline;           /* CLOCK_MONOTONIC seconds; 0: none */
    size_t memory_limit;       /* 0: none */
    size_t held;               /* bytes of intermediate values held now (counted only with a limit) */
    unsigned ticks;            /* checks so far: the clock is read on every few */
} kiln_run_limits;

/* Hands back the mapped pages of constants that every consumer packed at init (core/weights.c). */
void kiln_release_packed_weights(kiln_model *m);

/* Fills the limits of a run that starts now. */
void kiln_run_limits_init(kiln_run_limits *lim, const kiln_session *s, const kiln_run_options *ro);

/* What one run records about each value, to make a plan from. */
typedef struct kiln_lifetime {
    int def, last;         /* node steps; def -1 = never allocated by the runner */
    size_t size;
    int dev;               /* memory space */
} kiln_lifetime;

struct kiln_session {
    kiln_model *model;
    kiln_options opt;
    kiln_err err;
    kiln_threadpool *tp;        /* the CPU provider's pool */
    kiln_provider_set eps;      /* [0] the CPU, then the providers asked for that started */
    int copies, uploads;        /* copy nodes inserted and constants uploaded by placement */
    int outputs_on_device;      /* the current run hands device outputs over as they are */
    struct kiln_capture *capturing; /* the recording in progress (capture.c), else NULL */
    int capture_on;             /* runs record and replay (kiln_capture_check decided at open) */
    kiln_trace trace;           /* path set: profiling to a Chrome trace (trace.h) */
    int *live, n_live;          /* indices of the main graph's live nodes (kiln_session_node_info) */
    int *input_host_readers;    /* per graph input: read on the host by some node (a device input
                                   is then staged to the host before the run) */
    int *input_at, *output_at;  /* per value of the main graph: its position among the graph's
                                   inputs / outputs, or -1 (names bind in O(1) per run) */
    int n_at;                   /* values input_at / output_at cover */
    pthread_mutex_t run_mu;     /* runs on one session are serialised (they share the arena) */
    kiln_plan *plans;           /* most recent first */
    int n_plans;
    kiln_plan *last_plan;
    struct kiln_subframe *subframes; /* runner.c: each subgraph's reusable frame and plans */
    size_t folded_nodes;
    size_t fused_nodes;         /* rewrites applied by kiln_graph_optimize */
    char *missing_ops;          /* non-NULL: ops without a kernel, all named; running fails */
    /* public io info, filled at open */
    kiln_io_info *inputs, *outputs;
    size_t n_inputs, n_outputs;
    /* KILN_PROFILE=1: time per op type, printed to stderr when the session closes */
    int profile;
    int n_prof;
    struct kiln_op_profile { const char *op; const char *domain; double seconds; long calls; } prof[256];
};

/* Opens a session; with allow_missing the session is made even when ops lack kernels (kiln info
 * uses this to report everything at once); s->missing_ops then lists them. */
kiln_status kiln_session_open_model(kiln_model *m, const kiln_options *opt, int allow_missing,
                                    kiln_session **out);
/* Runs the main graph with inputs given as values (tensors, sequences, optionals), by name.
 * outputs[i] receive owned values for out_idx[i] (graph output indices). */
kiln_status kiln_session_run_values(kiln_session *s, int n_in, const char *const *names,
                                    const kiln_value *inputs, int n_out, const int *out_idx,
                                    kiln_value *outputs);

/* kiln_session_run_values with per-run options (terminate flag, deadline); ro may be NULL. */
kiln_status kiln_session_run_values_opts(kiln_session *s, const kiln_run_options *ro, int n_in,
                                         const char *const *names, const kiln_value *inputs, int n_out,
                                         const int *out_idx, kiln_value *outputs);

/* runner.c */
/* Frees every subgraph frame and plan (at close, and when the session gives memory back). */
void kiln_subframes_free(kiln_session *s);
/* kiln_run_graph under a run's limits (NULL: none but the session's memory limit). */
kiln_status kiln_run_graph_limited(kiln_session *s, kiln_graph *g, kiln_value *input_slots, kiln_plan *plan,
                                   kiln_lifetime *record, kiln_run_limits *lim, int n_out, const int *out_idx,
                                   kiln_value *outputs, kiln_err *e);
kiln_status kiln_run_graph(kiln_session *s, kiln_graph *g, kiln_value *input_slots, kiln_plan *plan,
                           kiln_lifetime *record, int n_out, const int *out_idx, kiln_value *outputs,
                           kiln_err *e);
kiln_plan *kiln_plan_make(kiln_session *s, const kiln_graph *g, const kiln_lifetime *rec,
                          const char *signature);
void kiln_plan_free(kiln_plan *p);
/* Static pass at open: kernel init, type/shape inference, constant folding, dead-node removal. */
kiln_status kiln_graph_prepare(kiln_session *s, kiln_graph *g, kiln_err *e);

#endif
