/* Session internals shared by the session, the runner and the tools (kiln info / test). */
#ifndef KILN_SESSION_H
#define KILN_SESSION_H

#include "graph.h"
#include "../cpu/threadpool.h"
#include "../providers/registry.h"
#include "trace.h"
#include "devcache.h"
#include <pthread.h>
#include <stdatomic.h>

/* The memory of one run under a plan: one arena per memory space ([0] the host's). */
typedef struct kiln_arena_set {
    void *mem[KILN_MAX_PROVIDERS];
    struct kiln_arena_set *next;
} kiln_arena_set;

/* A memory plan for one input-shape signature: where each intermediate value lives in the arena
 * of its memory space (one arena per provider memory; [0] is the host's). The offsets are read
 * only once made; the arenas are not: concurrent runs of one signature each take an arena set of
 * their own from `arenas` (made when none is idle) and give it back, so they never share bytes. */
typedef struct kiln_plan {
    char *signature;
    int n_values;
    int64_t *offset;       /* per value of the main graph, in its memory space's arena; -1 = none */
    size_t *size;
    size_t arena_bytes;    /* all arenas of one set together */
    size_t naive_bytes;
    size_t dev_bytes[KILN_MAX_PROVIDERS];
    kiln_arena_set *arenas;                /* idle sets (the first is made with the plan) */
    kiln_provider *ep[KILN_MAX_PROVIDERS]; /* who allocates and frees each arena */
    struct kiln_capture *capture;          /* graph capture of this signature (capture.c) */
    int users;             /* runs holding the plan (under the session's mu) */
    int dropped;           /* evicted while held: its last user frees it */
    struct kiln_plan *next;
} kiln_plan;

/* One run's reusable working memory besides the main arena: the subgraph frames (and their
 * plans) of runner.c, by subgraph id. A run takes a context from the session's pool (made when
 * none is idle) and gives it back, so that concurrent runs never share a frame. */
typedef struct kiln_run_ctx {
    struct kiln_subframe **frames; /* [sub_id], 1-based; n_sub + 1 entries */
    int n_sub;
    struct kiln_subframe *all;     /* every frame made, for freeing */
    struct kiln_run_ctx *next;     /* the session's idle list */
} kiln_run_ctx;

/* One run's limits (kiln_run_options' terminate flag and deadline, the session's memory_limit)
 * and what the run holds against them; shared by the main graph's frame and every subgraph frame
 * of the run, all on the calling thread. The memory limit is the session's: every concurrent run
 * charges the session's counter too, so that together they stay under it. */
typedef struct kiln_run_limits {
    volatile int *terminate;   /* NULL: none */
    double timeout_ms;
    double deadline;           /* CLOCK_MONOTONIC seconds; 0: none */
    size_t memory_limit;       /* 0: none */
    size_t held;               /* bytes this run holds now (counted only with a limit) */
    _Atomic size_t *session_held; /* what all runs of the session hold (counted only with a limit) */
    unsigned ticks;            /* checks so far: the clock is read on every few */
    kiln_run_ctx *rc;          /* the run's frames; NULL: kiln_run_graph_limited takes one */
} kiln_run_limits;

/* Hands back the mapped pages of constants that every consumer packed at init (core/weights.c). */
void kiln_release_packed_weights(kiln_session *s);
/* Before the main graph's last preparation: count each constant's consumers so that
 * kiln_weights_node_ready can hand a constant back as soon as the last of them has packed it,
 * rather than once every weight has been packed (then each would be resident twice at the peak).
 * An optimisation only: without memory it watches nothing. kiln_release_packed_weights ends it. */
void kiln_weights_watch(kiln_session *s);
/* Node ni of graph g has been prepared (init, static inference or folding). */
void kiln_weights_node_ready(kiln_session *s, const kiln_graph *g, int ni);

/* Fills the limits of a run that starts now. */
void kiln_run_limits_init(kiln_run_limits *lim, kiln_session *s, const kiln_run_options *ro);
/* Gives back what the run still has charged against the session's memory limit. */
void kiln_run_limits_end(kiln_run_limits *lim);

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
    int outputs_on_device;      /* the current run hands device outputs over as they are (device
                                   sessions only: written under dev_mu) */
    struct kiln_capture *capturing; /* the recording in progress (capture.c; under dev_mu), else NULL */
    int capture_on;             /* runs record and replay (kiln_capture_check decided at open) */
    kiln_trace trace;           /* path set: profiling to a Chrome trace (trace.h); under trace_mu */
    atomic_int tracing;         /* trace.path is set: runs look at this, not at the path */
    int *live, n_live;          /* indices of the main graph's live nodes (kiln_session_node_info) */
    int *input_host_readers;    /* per graph input: read on the host by some node (a device input
                                   is then staged to the host before the run) */
    int *input_at, *output_at;  /* per value of the main graph: its position among the graph's
                                   inputs / outputs, or -1 (names bind in O(1) per run) */
    int n_at;                   /* values input_at / output_at cover */
    /* Runs of a CPU session are concurrent: what they share (graph, constants, kernel states made
     * at open) is read only, and what they write is theirs (value slots, an arena set, a run
     * context). The locks below are each held for a few instructions, never across a node. */
    pthread_mutex_t mu;         /* plans, their idle arena sets, last_plan, the idle run contexts */
    pthread_mutex_t err_mu;     /* err, when a run fails */
    pthread_mutex_t trace_mu;   /* trace, prof */
    pthread_mutex_t dev_mu;     /* runs of a session with a device provider, whole: the device
                                   path (capture, outputs_on_device, the device's stream) keeps
                                   one run at a time */
    kiln_plan *plans;           /* most recent first */
    int n_plans;
    kiln_plan *last_plan;
    kiln_run_ctx *idle_ctx;     /* run contexts not in use */
    int n_sub;                  /* subgraphs numbered for run contexts (kiln_subgraphs_number) */
    _Atomic size_t mem_held;    /* bytes all runs hold against opt.memory_limit */
    size_t folded_nodes;
    size_t fused_nodes;         /* rewrites applied by kiln_graph_optimize */
    /* which KILN_OP_PREPACK inits a preparation runs: all (KILN_PREPACK_NOW), none (before the
     * fusions, or before placement with a device provider), or only the CPU's nodes' (after it) */
    enum { KILN_PREPACK_NOW, KILN_PREPACK_DEFER, KILN_PREPACK_CPU_NODES } prepack;
    struct kiln_weight_watch *weights; /* core/weights.c, during the last preparation only */
    char *missing_ops;          /* non-NULL: ops without a kernel, all named; running fails */
    /* public io info, filled at open */
    kiln_io_info *inputs, *outputs;
    size_t n_inputs, n_outputs;
    /* KILN_PROFILE=1: time per op type, printed to stderr when the session closes (names copied:
     * a specialised child's runs count here too, and the child may close first) */
    int profile;
    int n_prof;
    struct kiln_op_profile { char op[64]; char domain[48]; double seconds; long calls; } prof[256];
    /* Shape specialisation (specialize.c). A child is a session of the same model with the
     * symbolic dimensions of one input shape fixed; its parent routes the runs of that shape to
     * it. Traces, profiles and the memory limit of a child's runs are its root's. */
    struct kiln_session *root;      /* the session the caller opened: itself, or a child's parent */
    int eps_borrowed;               /* a child: eps are the parent's, opened and closed by it */
    char *dim_spec;                 /* the caller's dim_overrides (a child fixes these too) */
    struct kiln_spec_table *spec;   /* NULL: runs never specialise */
    kiln_dev_cache *dcache;         /* device constants of the family (the root's); NULL: none */
    kiln_dev_holds holds;           /* the entries of dcache this session's constants use */
};

/* Opens a session; with allow_missing the session is made even when ops lack kernels (kiln info
 * uses this to report everything at once); s->missing_ops then lists them. */
kiln_status kiln_session_open_model(kiln_model *m, const kiln_options *opt, int allow_missing,
                                    kiln_session **out);
/* Opens a specialised child of parent on model m (taken, as by kiln_session_open_model): it uses
 * the parent's providers and device-constant cache. Fails into *e without touching the thread's
 * last error. */
kiln_status kiln_session_open_child(kiln_session *parent, kiln_model *m, const kiln_options *opt,
                                    kiln_session **out, kiln_err *e);
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
/* Frees the idle run contexts with their subgraph frames and plans (at close, and when the
 * session gives memory back; contexts in use are kept by their runs). */
void kiln_subframes_free(kiln_session *s);
/* Gives every subgraph of the model an id (graph->sub_id) for the run contexts' frame tables. */
void kiln_subgraphs_number(kiln_session *s);
/* A run context from the session's idle list, or a new one (NULL when out of memory: the run
 * then makes its subgraph frames afresh each time); and back. */
kiln_run_ctx *kiln_run_ctx_take(kiln_session *s);
void kiln_run_ctx_give(kiln_session *s, kiln_run_ctx *rc);
/* An arena set for plan p (NULL when out of memory), and its release. */
kiln_arena_set *kiln_arena_set_make(const kiln_plan *p);
void kiln_arena_set_free(const kiln_plan *p, kiln_arena_set *a);
/* Adds a trace event for the span [t0, t1] (kiln_trace_now seconds) when the session traces. */
void kiln_session_trace(kiln_session *s, kiln_trace_event *ev, double t0, double t1);
/* kiln_run_graph under a run's limits (NULL: none but the session's memory limit), with the
 * plan's memory in `arena` (NULL with a plan: the plan's first idle set, for a caller that holds
 * no set and runs alone; no plan is used when there is none idle). */
kiln_status kiln_run_graph_limited(kiln_session *s, kiln_graph *g, kiln_value *input_slots, kiln_plan *plan,
                                   kiln_arena_set *arena, kiln_lifetime *record, kiln_run_limits *lim, int n_out,
                                   const int *out_idx, kiln_value *outputs, kiln_err *e);
kiln_status kiln_run_graph(kiln_session *s, kiln_graph *g, kiln_value *input_slots, kiln_plan *plan,
                           kiln_lifetime *record, int n_out, const int *out_idx, kiln_value *outputs,
                           kiln_err *e);
kiln_plan *kiln_plan_make(kiln_session *s, const kiln_graph *g, const kiln_lifetime *rec,
                          const char *signature);
void kiln_plan_free(kiln_plan *p);
/* Static pass at open: kernel init, type/shape inference, constant folding, dead-node removal. */
kiln_status kiln_graph_prepare(kiln_session *s, kiln_graph *g, kiln_err *e);

/* The session's device provider (the first after the CPU), or NULL: for the training module. */
kiln_provider *kiln_session_device(const kiln_session *s);

#endif
