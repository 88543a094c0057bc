/* Running a graph: nodes in topological order, each output allocated from the plan's arena (or the
 * heap when there is no plan yet or the size differs), buffers released after their last reader,
 * view ops aliasing their input. The first run of an input-shape signature records every value's
 * size and lifetime; kiln_plan_make turns that into arena offsets for the runs that follow. */
#include "runner.h"
#include "session.h"
#include "placement.h"
#include "capture.h"
#include "arena_plan.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define ARENA_ALIGN 64

struct kiln_runner {
    kiln_session *s;
    kiln_graph *g;
    kiln_value *vals;      /* slots of values owned by this frame */
    int *uses;             /* readers of each value (nodes, implicit readers, graph outputs) */
    int *remaining;        /* readers left for each buffer root */
    int *root;             /* value whose buffer this value's bytes are; -1 = not ours to free */
    struct kiln_runner *parent;
    kiln_plan *plan;
    void *const *arena;    /* the plan's memory for this run, per memory space */
    kiln_lifetime *rec;
    int *is_output;
    int step;
    kiln_run_limits *lim;  /* the run's, shared with parent and child frames */
    size_t *charged;       /* per value: heap bytes counted against the memory limit; NULL: no limit */
    struct kiln_subframe *frame; /* the arrays above belong to this cached subgraph frame */
};

static kiln_value *slot(struct kiln_runner *r, int v) {
    kiln_graph_value *gv = &r->g->values[v];
    if (gv->is_const) return &gv->konst;
    if (gv->outer >= 0 && r->parent) return slot(r->parent, gv->outer);
    return &r->vals[v];
}

static int is_managed(struct kiln_runner *r, int v) {
    kiln_graph_value *gv = &r->g->values[v];
    return !gv->is_const && gv->outer < 0 && !gv->is_input;
}

kiln_status kiln_runner_alloc_output(kiln_ctx *ctx, int i);

static double now_seconds(void);

/* ---------------------------------------------------------------- run limits */

void kiln_run_limits_init(kiln_run_limits *lim, kiln_session *s, const kiln_run_options *ro) {
    memset(lim, 0, sizeof *lim);
    lim->memory_limit = s->opt.memory_limit;
    lim->session_held = &s->root->mem_held; /* a child's runs count against the caller's session */
    if (!ro) return;
    lim->terminate = ro->terminate;
    lim->timeout_ms = ro->timeout_ms;
    if (ro->timeout_ms > 0) lim->deadline = now_seconds() + ro->timeout_ms / 1000.0;
}

/* The deadline costs a clock read; reading it on every DEADLINE_STRIDE-th check keeps short nodes
 * and loop iterations cheap while a run stays within a few nodes of its deadline. */
#define DEADLINE_STRIDE 4

/* Called between nodes and at each subgraph run and loop iteration. `where` names what was about
 * to run, for the deadline message. */
static kiln_status check_limits(kiln_run_limits *lim, const char *kind, const char *where, kiln_err *e) {
    if (lim->terminate && *lim->terminate)
        return kiln_fail(e, KILN_ERR_CANCELLED, "the run was terminated (at %s '%s')", kind, where);
    if (lim->deadline && lim->ticks++ % DEADLINE_STRIDE == 0 && now_seconds() > lim->deadline)
        return kiln_fail(e, KILN_ERR_CANCELLED, "the run passed its deadline of %g ms at %s '%s'",
                         lim->timeout_ms, kind, where);
    return KILN_OK;
}

static inline int has_checks(const kiln_run_limits *lim) { return lim->terminate || lim->deadline; }

/* The session's count is one atomic word that every concurrent run adds to and takes from: a
 * compare-and-swap admits a charge only while the total stays under the limit. */
static kiln_status charge(kiln_run_limits *lim, size_t bytes, const char *what, kiln_err *e) {
    if (!lim->memory_limit) return KILN_OK;
    size_t cur = atomic_load_explicit(lim->session_held, memory_order_relaxed);
    do {
        if (bytes > lim->memory_limit - cur || cur > lim->memory_limit) {
            if (!e) return KILN_ERR_NO_MEMORY;
            if (cur == lim->held)
                return kiln_fail(e, KILN_ERR_NO_MEMORY,
                                 "%s needs %zu bytes, which would pass the session's memory limit of %zu bytes "
                                 "(%zu held by the run already)",
                                 what, bytes, lim->memory_limit, lim->held);
            return kiln_fail(e, KILN_ERR_NO_MEMORY,
                             "%s needs %zu bytes, which would pass the session's memory limit of %zu bytes "
                             "(%zu held by the run already, %zu by the session's other runs)",
                             what, bytes, lim->memory_limit, lim->held, cur - lim->held);
        }
    } while (!atomic_compare_exchange_weak_explicit(lim->session_held, &cur, cur + bytes, memory_order_relaxed,
                                                    memory_order_relaxed));
    lim->held += bytes;
    return KILN_OK;
}

static void uncharge(kiln_run_limits *lim, size_t bytes) {
    if (bytes > lim->held) bytes = lim->held;
    lim->held -= bytes;
    if (bytes) atomic_fetch_sub_explicit(lim->session_held, bytes, memory_order_relaxed);
}

void kiln_run_limits_end(kiln_run_limits *lim) {
    if (lim->memory_limit) uncharge(lim, lim->held);
}

/* Value v's heap bytes leave this frame's count (released, or moved to the caller). */
static void uncharge_value(struct kiln_runner *r, int v) {
    if (!r->charged || v < 0 || !r->charged[v]) return;
    uncharge(r->lim, r->charged[v]);
    r->charged[v] = 0;
}

kiln_status kiln_run_check(kiln_ctx *ctx) {
    struct kiln_runner *r = ctx->runner;
    if (!r || !has_checks(r->lim)) return KILN_OK;
    return check_limits(r->lim, "node", ctx->node->name, ctx->err);
}

kiln_status kiln_run_charge(kiln_ctx *ctx, size_t bytes, const char *what) {
    struct kiln_runner *r = ctx->runner;
    return r ? charge(r->lim, bytes, what, ctx->err) : KILN_OK;
}

void kiln_run_uncharge(kiln_ctx *ctx, size_t bytes) {
    struct kiln_runner *r = ctx->runner;
    if (r && r->lim->memory_limit) uncharge(r->lim, bytes);
}

/* Allocates value v's tensor (shape already set) in its memory space, from the arena or the heap. */
static kiln_status alloc_value(struct kiln_runner *r, int v, kiln_err *e) {
    kiln_tensor *t = &r->vals[v].t;
    int64_t n = t->rank < 0 ? -1 : kiln_checked_numel(t->rank, t->dims); /* one pass over the dims */
    int too_large = n == KILN_NUMEL_TOO_LARGE;
    if (too_large) n = -1;
    if (n < 0 && !too_large) return kiln_fail(e, KILN_ERR_RUNTIME, "output shape is not concrete");
    int size_ok;
    size_t bytes = kiln_checked_nbytes(t->dtype, n, &size_ok);
    if (too_large || !size_ok) {
        char shape[400];
        return kiln_fail(e, KILN_ERR_NO_MEMORY, "cannot allocate value '%s' of shape %s: too large",
                         r->g->values[v].name, kiln_shape_str(t, shape, sizeof shape));
    }
    int dev = r->g->values[v].dev;
    /* graph outputs go to the caller, never to the arena (device outputs may go to the caller too) */
    int arena_ok = !r->is_output[v] && t->dtype != KILN_DTYPE_STRING;
    if (r->rec && arena_ok) {
        r->rec[v].def = r->step;
        r->rec[v].last = r->step;
        r->rec[v].size = bytes;
        r->rec[v].dev = dev;
    }
    if (r->plan && arena_ok && v < r->plan->n_values && r->plan->offset[v] >= 0 && bytes <= r->plan->size[v] &&
        r->arena[dev]) {
        t->data = (char *)r->arena[dev] + r->plan->offset[v];
        t->owner = NULL; /* not zeroed: kernels write every element (the repeated-run tests check) */
        t->dev = dev ? r->s->eps.ep[dev] : NULL;
        return KILN_OK;
    }
    if (r->s->capturing && !r->parent) {
        /* a recording replays at fixed addresses: outputs go to their staging buffers, and every
         * other value must come from the arena */
        kiln_capture *c = r->s->capturing;
        for (int i = 0; r->is_output[v] && i < r->g->n_outputs; i++)
            if (r->g->outputs[i] == v && i < c->n_out && c->out_stage[i].data &&
                kiln_tensor_nbytes(&c->out_stage[i]) == bytes) {
                t->data = c->out_stage[i].data;
                t->owner = NULL;
                t->dev = c->dev;
                return KILN_OK;
            }
        return kiln_fail(e, KILN_ERR_RUNTIME, "value '%s' is not in the planned arena (graph capture needs it there)",
                         r->g->values[v].name);
    }
    if (r->charged) {
        char what[300];
        snprintf(what, sizeof what, "value '%s'", r->g->values[v].name);
        KILN_TRY(charge(r->lim, bytes, what, e));
    }
    kiln_status st;
    if (!dev) {
        st = kiln_tensor_alloc_uninit(t, e); /* as in the arena, the kernel writes every element */
    } else {
        kiln_provider *p = r->s->eps.ep[dev];
        void *mem;
        st = p->vt->alloc(p, bytes, &mem, e);
        if (!st) {
            t->data = t->owner = mem;
            t->dev = p;
        }
    }
    if (r->charged) {
        if (st) uncharge(r->lim, bytes);
        else r->charged[v] = bytes;
    }
    return st;
}

kiln_status kiln_runner_alloc_output(kiln_ctx *ctx, int i) {
    struct kiln_runner *r = ctx->runner;
    int v = ctx->node->out[i];
    return alloc_value(r, v, ctx->err);
}

static void release_root(struct kiln_runner *r, int v) {
    if (v < 0) return;
    if (--r->remaining[v] > 0) return;
    if (r->rec && r->rec[v].def >= 0) r->rec[v].last = r->step;
    uncharge_value(r, v);
    if (r->rec) kiln_value_release_uncached(&r->vals[v]);
    else kiln_value_release(&r->vals[v]);
}

static int root_of(struct kiln_runner *r, int v) {
    if (!is_managed(r, v)) return -1;
    return r->root[v];
}

static int nondeterministic(const kiln_node *n) {
    static const char *names[] = {"RandomNormal", "RandomUniform", "RandomNormalLike",
                                  "RandomUniformLike", "Bernoulli", "Multinomial", NULL};
    for (int i = 0; names[i]; i++)
        if (!strcmp(n->op_type, names[i])) return 1;
    return 0;
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void profile_add(kiln_session *s, const kiln_node *n, double seconds) {
    s = s->root;
    pthread_mutex_lock(&s->trace_mu);
    int i;
    for (i = 0; i < s->n_prof; i++)
        if (!strncmp(s->prof[i].op, n->op_type, sizeof s->prof[i].op - 1) &&
            !strncmp(s->prof[i].domain, n->domain, sizeof s->prof[i].domain - 1))
            break;
    if (i == s->n_prof) {
        if (s->n_prof == (int)(sizeof s->prof / sizeof s->prof[0])) {
            pthread_mutex_unlock(&s->trace_mu);
            return;
        }
        struct kiln_op_profile *pr = &s->prof[s->n_prof++];
        snprintf(pr->op, sizeof pr->op, "%s", n->op_type);
        snprintf(pr->domain, sizeof pr->domain, "%s", n->domain);
        pr->seconds = 0;
        pr->calls = 0;
    }
    s->prof[i].seconds += seconds;
    s->prof[i].calls++;
    pthread_mutex_unlock(&s->trace_mu);
}

void kiln_session_trace(kiln_session *s, kiln_trace_event *ev, double t0, double t1) {
    s = s->root; /* a specialised child's events land in the trace of the caller's session */
    pthread_mutex_lock(&s->trace_mu);
    if (s->trace.path) { /* profiling may have ended during the span */
        ev->ts_us = (t0 - s->trace.t0) * 1e6;
        ev->dur_us = (t1 - t0) * 1e6;
        kiln_trace_add(&s->trace, ev);
    }
    pthread_mutex_unlock(&s->trace_mu);
}

static kiln_status run_node_timed(struct kiln_runner *r, int ni, kiln_err *e);

/* Tracing: the device is idle before the node starts and waited for after it, so that its span
 * is the node's own work. */
static kiln_status run_node_traced(struct kiln_runner *r, int ni, kiln_err *e) {
    kiln_session *s = r->s;
    kiln_node *n = &r->g->nodes[ni];
    int ep = r->parent ? 0 : n->ep;
    kiln_provider *p = s->eps.ep[ep];
    kiln_err scratch;
    if (ep) p->vt->sync(p, &scratch);
    double t0 = kiln_trace_now();
    kiln_status st = run_node_timed(r, ni, e);
    if (ep) p->vt->sync(p, &scratch);
    double t1 = kiln_trace_now();
    kiln_trace_event ev = {n->name, n->op_type, p->vt->name, 0, 0, ep, ""};
    if (n->n_out > 0 && n->out[0] >= 0 && !r->g->values[n->out[0]].is_const) {
        kiln_value *v = slot(r, n->out[0]);
        if (v->kind == KILN_KIND_TENSOR && v->t.rank >= 0) kiln_shape_str(&v->t, ev.shapes, sizeof ev.shapes);
    }
    kiln_session_trace(s, &ev, t0, t1);
    return st;
}

static kiln_status run_node(struct kiln_runner *r, int ni, kiln_err *e) {
    if (atomic_load_explicit(&r->s->root->tracing, memory_order_relaxed) && !r->s->capturing)
        return run_node_traced(r, ni, e);
    if (!r->s->root->profile) return run_node_timed(r, ni, e);
    double t0 = now_seconds();
    kiln_status st = run_node_timed(r, ni, e);
    profile_add(r->s, &r->g->nodes[ni], now_seconds() - t0);
    return st;
}

static kiln_status run_node_timed(struct kiln_runner *r, int ni, kiln_err *e) {
    kiln_graph *g = r->g;
    kiln_node *n = &g->nodes[ni];
    kiln_value *ins[64], *outs[64];
    kiln_value **in = n->n_in <= 64 ? ins : malloc((size_t)n->n_in * sizeof *in);
    kiln_value **out = n->n_out <= 64 ? outs : malloc((size_t)n->n_out * sizeof *out);
    kiln_status st = KILN_OK;
    if (!in || !out) {
        st = kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
        goto done;
    }
    for (int i = 0; i < n->n_in; i++) {
        in[i] = n->in[i] >= 0 ? slot(r, n->in[i]) : NULL;
        if (in[i] && in[i]->kind == KILN_KIND_NONE && !g->values[n->in[i]].type.optional &&
            !g->values[n->in[i]].is_input) {
            /* a value that was never produced (an earlier failure would have stopped us) */
        }
    }
    for (int i = 0; i < n->n_out; i++) {
        int v = n->out[i];
        out[i] = v >= 0 ? &r->vals[v] : NULL;
        if (out[i]) {
            uncharge_value(r, v);
            kiln_value_release(out[i]);
            memset(out[i], 0, sizeof *out[i]);
            out[i]->kind = KILN_KIND_TENSOR;
            out[i]->t.rank = -1;
        }
    }
    kiln_provider *ep = r->parent ? r->s->eps.ep[0] : r->s->eps.ep[n->ep];
    kiln_ctx ctx = {n, n->opset, n->n_in, in, n->n_out, out, n->state, e, 0, r->s->tp, r, ep, n->kernel_state};
    const kiln_op *op = n->op;
    kiln_status (*compute)(kiln_ctx *) = n->kernel && !r->parent ? n->kernel->compute : op->compute;
    int dynamic = op->flags & KILN_OP_DYNAMIC;
    if (!dynamic) {
        if (!op->infer) {
            st = kiln_fail(e, KILN_ERR_NOT_IMPLEMENTED, "kernel has no shape inference");
            goto done;
        }
        if ((st = op->infer(&ctx))) goto done;
        int aliased = 0;
        if ((op->flags & KILN_OP_ALIAS) && out[0] && in[0] && in[0]->kind == KILN_KIND_TENSOR &&
            out[0]->kind == KILN_KIND_TENSOR && !r->is_output[n->out[0]] &&
            in[0]->t.dev == (g->values[n->out[0]].dev ? r->s->eps.ep[g->values[n->out[0]].dev] : NULL) &&
            kiln_numel(&out[0]->t) == kiln_numel(&in[0]->t) && out[0]->t.dtype == in[0]->t.dtype) {
            out[0]->t.data = in[0]->t.data;
            out[0]->t.owner = NULL;
            out[0]->t.dev = in[0]->t.dev;
            int v = n->out[0], src = root_of(r, n->in[0]);
            r->root[v] = src;
            if (src >= 0) r->remaining[src] += r->uses[v];
            aliased = 1;
        }
        for (int i = aliased; i < n->n_out; i++) {
            if (!out[i] || out[i]->kind != KILN_KIND_TENSOR) continue;
            if (out[i]->t.rank < 0) {
                st = kiln_fail(e, KILN_ERR_RUNTIME, "output %d has no shape after inference", i);
                goto done;
            }
            if (out[i]->t.data) continue; /* the kernel's infer filled it (Shape, Constant ...) */
            if ((st = alloc_value(r, n->out[i], e))) goto done;
        }
        if (!aliased && (st = compute(&ctx))) goto done;
    } else {
        if ((st = compute(&ctx))) goto done;
    }
    for (int i = 0; i < n->n_out; i++) {
        if (!out[i]) continue;
        if (out[i]->kind == KILN_KIND_TENSOR && out[i]->t.rank >= 0 && !out[i]->t.data &&
            kiln_numel(&out[i]->t) != 0) {
            st = kiln_fail(e, KILN_ERR_RUNTIME, "kernel left output %d without data", i);
            goto done;
        }
        /* outputs nobody reads are released at once */
        int v = n->out[i];
        if (r->root[v] == v && r->uses[v] == 0) {
            r->remaining[v] = 1;
            release_root(r, v);
        }
    }
done:
    if (in != ins) free(in);
    if (out != outs) free(out);
    if (st) {
        kiln_err_prefix(e, "node '%s' (%s%s%s, opset %d)", n->name, n->domain[0] ? n->domain : "",
                        n->domain[0] ? ":" : "", n->op_type, n->opset);
        return st;
    }
    /* release inputs whose last reader this was */
    for (int i = 0; i < n->n_in + n->n_implicit; i++) {
        int v = i < n->n_in ? n->in[i] : n->implicit[i - n->n_in];
        if (v >= 0) release_root(r, root_of(r, v));
    }
    return KILN_OK;
}

static kiln_status runner_init(struct kiln_runner *r, kiln_session *s, kiln_graph *g,
                               struct kiln_runner *parent, kiln_run_limits *lim, kiln_err *e) {
    memset(r, 0, sizeof *r);
    r->s = s;
    r->g = g;
    r->parent = parent;
    int nv = g->n_values ? g->n_values : 1;
    r->vals = calloc((size_t)nv, sizeof *r->vals);
    r->uses = calloc((size_t)nv, sizeof(int));
    r->remaining = calloc((size_t)nv, sizeof(int));
    r->root = malloc((size_t)nv * sizeof(int));
    r->is_output = calloc((size_t)nv, sizeof(int));
    r->lim = lim;
    /* accounting per value only when there is a limit to count against */
    if (lim->memory_limit) r->charged = calloc((size_t)nv, sizeof(size_t));
    if (!r->vals || !r->uses || !r->remaining || !r->root || !r->is_output || (lim->memory_limit && !r->charged))
        return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    for (int v = 0; v < g->n_values; v++) r->root[v] = v;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->removed) continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) r->uses[n->in[k]]++;
        for (int k = 0; k < n->n_implicit; k++) r->uses[n->implicit[k]]++;
    }
    for (int i = 0; i < g->n_outputs; i++) {
        r->uses[g->outputs[i]]++;
        r->is_output[g->outputs[i]] = 1;
    }
    memcpy(r->remaining, r->uses, (size_t)g->n_values * sizeof(int));
    return KILN_OK;
}

static void runner_free(struct kiln_runner *r) {
    if (r->vals)
        for (int v = 0; v < r->g->n_values; v++)
            if (is_managed(r, v)) {
                uncharge_value(r, v);
                if (r->rec) kiln_value_release_uncached(&r->vals[v]);
                else kiln_value_release(&r->vals[v]);
            }
    free(r->charged);
    if (r->frame) return; /* the arrays stay with the frame for its next call */
    free(r->vals);
    free(r->uses);
    free(r->remaining);
    free(r->root);
    free(r->is_output);
}

/* Hands graph output v to the caller: moved when this frame owns the heap buffer, else copied. */
static kiln_status take_output(struct kiln_runner *r, int v, kiln_value *dst, int last_use, kiln_err *e) {
    kiln_value *src = slot(r, v);
    int movable_dev = last_use && is_managed(r, v) && r->root[v] == v && src->t.owner == src->t.data;
    if (src->kind == KILN_KIND_TENSOR && src->t.dev && r->s->outputs_on_device && !movable_dev) {
        kiln_provider *p = src->t.dev;
        *dst = *src;
        size_t bytes = kiln_tensor_nbytes(&src->t);
        void *mem;
        KILN_TRY(p->vt->alloc(p, bytes, &mem, e));
        kiln_status st = bytes ? p->vt->copy(p, mem, src->t.data, bytes, e) : KILN_OK;
        if (st) {
            p->vt->free(p, mem);
            return st;
        }
        dst->t.data = dst->t.owner = mem;
        return KILN_OK;
    }
    if (src->kind == KILN_KIND_TENSOR && src->t.dev && !r->s->outputs_on_device) {
        /* to the host: the caller reads it there */
        kiln_provider *p = src->t.dev;
        *dst = *src;
        dst->t.owner = dst->t.data = NULL;
        dst->t.dev = NULL;
        KILN_TRY(kiln_tensor_alloc_uninit(&dst->t, e)); /* the copy writes every byte: no clearing */
        size_t bytes = kiln_tensor_nbytes(&src->t);
        kiln_status st = bytes ? p->vt->to_host(p, dst->t.data, src->t.data, bytes, e) : KILN_OK;
        if (!st) st = p->vt->sync(p, e);
        if (st) kiln_tensor_release(&dst->t);
        return st;
    }
    int movable = last_use && is_managed(r, v) && r->root[v] == v &&
                  (src->kind != KILN_KIND_TENSOR || src->t.owner == src->t.data || !src->t.data);
    if (src->kind == KILN_KIND_TENSOR && src->t.owner && src->t.owner != src->t.data) movable = 0;
    if (movable) {
        uncharge_value(r, v); /* the caller holds it now */
        *dst = *src;
        memset(src, 0, sizeof *src);
        src->kind = KILN_KIND_NONE;
        return KILN_OK;
    }
    return kiln_value_copy(dst, src, e);
}

static kiln_status sync_devices(kiln_session *s, kiln_err *e) {
    kiln_err scratch;
    if (s->capturing) return KILN_OK; /* a recording cannot wait; the replay's caller does */
    for (int p = 1; p < s->eps.n; p++)
        if (s->eps.ep[p]->vt->sync(s->eps.ep[p], e ? e : &scratch) && e) return e->code;
    return KILN_OK;
}

static kiln_status run_frame(struct kiln_runner *r, int n_out, const int *out_idx, kiln_value *outputs,
                             kiln_err *e) {
    kiln_graph *g = r->g;
    int checks = has_checks(r->lim);
    for (int i = 0; i < g->n_nodes; i++) {
        if (g->nodes[i].removed) continue;
        r->step = i;
        kiln_status st = checks ? check_limits(r->lim, "node", g->nodes[i].name, e) : KILN_OK;
        if (!st) st = run_node(r, i, e);
        if (st) {
            sync_devices(r->s, NULL); /* let queued device work finish before buffers go */
            return st;
        }
    }
    if (!r->parent) KILN_TRY(sync_devices(r->s, e));
    if (!r->parent && r->plan && !r->rec && r->s->capture_on && !r->plan->capture && g->n_outputs <= 256) {
        const kiln_value *outs[256];
        for (int k = 0; k < g->n_outputs; k++) outs[k] = slot(r, g->outputs[k]);
        kiln_capture_note_outputs(r->s, r->plan, outs, g->n_outputs);
    }
    /* an output asked for twice is copied at all but its last position; one backward pass finds
     * the last positions (graphs can have tens of thousands of outputs) */
    char last_buf[64], seen_buf[1024]; /* small graphs (subgraph bodies every iteration) skip the heap */
    int small = n_out <= (int)sizeof last_buf && g->n_values <= (int)sizeof seen_buf;
    char *is_last = small ? last_buf : malloc((size_t)(n_out ? n_out : 1));
    char *seen = small ? seen_buf : calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    if (small) memset(seen_buf, 0, (size_t)g->n_values);
    if (!is_last || !seen) {
        if (!small) { free(is_last); free(seen); }
        return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    for (int k = n_out - 1; k >= 0; k--) {
        int v = g->outputs[out_idx[k]];
        is_last[k] = !seen[v];
        seen[v] = 1;
    }
    if (!small) free(seen);
    kiln_status st = KILN_OK;
    for (int k = 0; k < n_out && !st; k++) {
        st = take_output(r, g->outputs[out_idx[k]], &outputs[k], is_last[k], e);
        if (st)
            for (int j = 0; j < k; j++) kiln_value_release(&outputs[j]);
    }
    if (!small) free(is_last);
    return st;
}

kiln_status kiln_run_graph(kiln_session *s, kiln_graph *g, kiln_value *input_slots, kiln_plan *plan,
                           kiln_lifetime *record, int n_out, const int *out_idx, kiln_value *outputs,
                           kiln_err *e) {
    return kiln_run_graph_limited(s, g, input_slots, plan, NULL, record, NULL, n_out, out_idx, outputs, e);
}

kiln_status kiln_run_graph_limited(kiln_session *s, kiln_graph *g, kiln_value *input_slots, kiln_plan *plan,
                                   kiln_arena_set *arena, kiln_lifetime *record, kiln_run_limits *lim, int n_out,
                                   const int *out_idx, kiln_value *outputs, kiln_err *e) {
    kiln_run_limits own;
    if (!lim) {
        kiln_run_limits_init(&own, s, NULL);
        lim = &own;
    }
    if (has_checks(lim)) KILN_TRY(check_limits(lim, "graph", g->name ? g->name : "", e));
    if (plan && !arena) arena = plan->arenas;
    if (!arena) plan = NULL;
    /* a planned arena larger than what the limit leaves (it can exceed the first run's peak) is
     * not used: the run allocates on the heap instead, value by value, under the limit */
    size_t arena_charged = 0;
    if (plan && lim->memory_limit) {
        if (charge(lim, plan->arena_bytes, "the planned arena", NULL)) plan = NULL;
        else arena_charged = plan->arena_bytes;
    }
    kiln_run_ctx *rc = NULL;
    if (!lim->rc) lim->rc = rc = kiln_run_ctx_take(s);
    struct kiln_runner r;
    kiln_status st = runner_init(&r, s, g, NULL, lim, e);
    if (!st) {
        for (int i = 0; i < g->n_inputs; i++) r.vals[g->inputs[i]] = input_slots[i];
        r.plan = plan;
        r.arena = plan ? arena->mem : NULL;
        r.rec = record;
        if (record)
            for (int v = 0; v < g->n_values; v++) record[v].def = record[v].last = -1;
        st = run_frame(&r, n_out, out_idx, outputs, e);
        for (int i = 0; i < g->n_inputs; i++) memset(&r.vals[g->inputs[i]], 0, sizeof(kiln_value));
    }
    runner_free(&r);
    if (rc) {
        kiln_run_ctx_give(s, rc);
        lim->rc = NULL;
    }
    if (arena_charged) uncharge(lim, arena_charged);
    return st;
}

/* ---------------------------------------------------------------- subgraph frames */

/* A subgraph runs once per If, per Loop iteration, per Scan step. Its frame's arrays and reader
 * counts are made on the first call and kept; each shape signature of what it reads (its formal
 * inputs and the enclosing graphs' values it uses) gets a memory plan, as the main graph's input
 * shapes do, so that a body's intermediate values come from one arena rather than the heap on
 * every call. A value larger than its planned slot still goes to the heap (alloc_value). */
#define SUB_MAX_PLANS 4

typedef struct sub_plan {
    int64_t *key;
    int key_len;
    kiln_plan *plan;
    struct sub_plan *next;
} sub_plan;

typedef struct kiln_subframe {
    kiln_graph *g;
    int busy;              /* in use: a second, nested run of g makes a frame of its own (a frame
                              belongs to one run context, so only its run's thread sees this) */
    int *uses, *is_output; /* fixed for the graph */
    kiln_value *vals;
    int *remaining, *root;
    kiln_lifetime *rec;
    int *outer;            /* values g reads from enclosing graphs */
    int n_outer;
    int64_t *key;          /* scratch: this call's signature */
    int key_len;
    long hits, misses;     /* a body whose shapes change every call (a growing loop-carried value)
                              stops recording: a plan per call would cost more than the heap */
    sub_plan *plans;       /* most recent first */
    int n_plans;
    struct kiln_subframe *next; /* the run context's list */
} kiln_subframe;

static void subframe_free(kiln_subframe *f) {
    for (sub_plan *p = f->plans, *nx; p; p = nx) {
        nx = p->next;
        kiln_plan_free(p->plan);
        free(p->key);
        free(p);
    }
    free(f->uses), free(f->is_output), free(f->vals), free(f->remaining), free(f->root);
    free(f->rec), free(f->outer), free(f->key);
    free(f);
}

static void run_ctx_free(kiln_run_ctx *rc) {
    for (kiln_subframe *f = rc->all, *nx; f; f = nx) {
        nx = f->next;
        subframe_free(f);
    }
    free(rc->frames);
    free(rc);
}

void kiln_subframes_free(kiln_session *s) {
    pthread_mutex_lock(&s->mu);
    kiln_run_ctx *idle = s->idle_ctx;
    s->idle_ctx = NULL;
    pthread_mutex_unlock(&s->mu);
    for (kiln_run_ctx *rc = idle, *nx; rc; rc = nx) {
        nx = rc->next;
        run_ctx_free(rc);
    }
}

kiln_run_ctx *kiln_run_ctx_take(kiln_session *s) {
    pthread_mutex_lock(&s->mu);
    kiln_run_ctx *rc = s->idle_ctx;
    if (rc) s->idle_ctx = rc->next;
    pthread_mutex_unlock(&s->mu);
    if (rc) return rc;
    rc = calloc(1, sizeof *rc);
    if (rc) rc->frames = calloc((size_t)s->n_sub + 1, sizeof *rc->frames);
    if (rc && !rc->frames) {
        free(rc);
        return NULL;
    }
    if (rc) rc->n_sub = s->n_sub;
    return rc;
}

void kiln_run_ctx_give(kiln_session *s, kiln_run_ctx *rc) {
    if (!rc) return;
    pthread_mutex_lock(&s->mu);
    rc->next = s->idle_ctx;
    s->idle_ctx = rc;
    pthread_mutex_unlock(&s->mu);
}

static void number_graphs(kiln_graph *g, int *n) {
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *nd = &g->nodes[i];
        for (int k = 0; k < nd->n_attrs; k++) {
            if (nd->attrs[k].g) {
                nd->attrs[k].g->sub_id = ++*n;
                number_graphs(nd->attrs[k].g, n);
            }
            for (int j = 0; nd->attrs[k].graphs && j < nd->attrs[k].n_graphs; j++) {
                nd->attrs[k].graphs[j]->sub_id = ++*n;
                number_graphs(nd->attrs[k].graphs[j], n);
            }
        }
    }
}

void kiln_subgraphs_number(kiln_session *s) {
    int n = 0;
    number_graphs(s->model->graph, &n);
    s->n_sub = n;
}

#define KEY_PER_VALUE (3 + KILN_MAX_RANK)

static kiln_subframe *subframe_make(kiln_session *s, kiln_run_ctx *rc, kiln_graph *g, struct kiln_runner *parent) {
    kiln_subframe *f = calloc(1, sizeof *f);
    if (!f) return NULL;
    struct kiln_runner r;
    kiln_run_limits none = {0};
    kiln_err scratch;
    kiln_status st = runner_init(&r, s, g, parent, &none, &scratch);
    f->g = g;
    f->uses = r.uses, f->is_output = r.is_output, f->vals = r.vals, f->remaining = r.remaining, f->root = r.root;
    int nv = g->n_values ? g->n_values : 1;
    f->rec = malloc((size_t)nv * sizeof *f->rec);
    f->outer = malloc((size_t)nv * sizeof(int));
    if (st || !f->rec || !f->outer) {
        subframe_free(f);
        return NULL;
    }
    for (int v = 0; v < g->n_values; v++)
        if (!g->values[v].is_const && g->values[v].outer >= 0) f->outer[f->n_outer++] = v;
    f->key = malloc((size_t)(g->n_inputs + f->n_outer + 1) * KEY_PER_VALUE * sizeof(int64_t));
    if (!f->key) {
        subframe_free(f);
        return NULL;
    }
    f->next = rc->all;
    rc->all = f;
    rc->frames[g->sub_id] = f;
    return f;
}

static int key_value(int64_t *k, const kiln_value *v) {
    if (!v) { k[0] = -1; return 1; }
    k[0] = v->kind;
    if (v->kind != KILN_KIND_TENSOR) { k[1] = v->kind == KILN_KIND_SEQUENCE ? v->seq_len : v->n_maps; return 2; }
    k[1] = v->t.dtype;
    k[2] = v->t.rank;
    for (int d = 0; d < v->t.rank; d++) k[3 + d] = v->t.dims[d];
    return 3 + (v->t.rank > 0 ? v->t.rank : 0);
}

/* The frame r (already made from f) runs with the plan of its signature, or records one. */
static void subframe_pick_plan(struct kiln_runner *r, kiln_subframe *f, int n_in, kiln_value *const *ins) {
    int len = 0;
    for (int i = 0; i < r->g->n_inputs; i++) len += key_value(f->key + len, i < n_in ? ins[i] : NULL);
    for (int i = 0; i < f->n_outer; i++) len += key_value(f->key + len, slot(r, f->outer[i]));
    for (sub_plan *p = f->plans; p; p = p->next)
        if (p->key_len == len && !memcmp(p->key, f->key, (size_t)len * sizeof(int64_t))) {
            r->plan = p->plan;
            f->hits++;
            return;
        }
    if (++f->misses > 4 * SUB_MAX_PLANS && f->hits < f->misses) return;
    f->key_len = len;
    r->rec = f->rec;
    for (int v = 0; v < r->g->n_values; v++) f->rec[v].def = f->rec[v].last = -1;
}

static void subframe_keep_plan(struct kiln_runner *r, kiln_subframe *f) {
    sub_plan *p = calloc(1, sizeof *p);
    int64_t *key = malloc((size_t)(f->key_len ? f->key_len : 1) * sizeof(int64_t));
    kiln_plan *plan = p && key ? kiln_plan_make(r->s, r->g, f->rec, "") : NULL;
    if (!plan) { free(p); free(key); return; }
    memcpy(key, f->key, (size_t)f->key_len * sizeof(int64_t));
    p->key = key;
    p->key_len = f->key_len;
    p->plan = plan;
    p->next = f->plans;
    f->plans = p;
    if (++f->n_plans > SUB_MAX_PLANS) { /* drop the oldest */
        sub_plan *q = f->plans;
        while (q->next && q->next->next) q = q->next;
        kiln_plan_free(q->next->plan);
        free(q->next->key);
        free(q->next);
        q->next = NULL;
        f->n_plans--;
    }
}

/* A frame for subgraph g: its cached arrays in the run's context when they are free, else new
 * ones. */
static kiln_status frame_open(struct kiln_runner *r, kiln_session *s, kiln_graph *g, struct kiln_runner *parent,
                              kiln_run_limits *lim, kiln_err *e) {
    kiln_run_ctx *rc = lim->rc;
    kiln_subframe *f = NULL;
    if (rc && g->sub_id > 0 && g->sub_id <= rc->n_sub)
        f = rc->frames[g->sub_id] ? rc->frames[g->sub_id] : subframe_make(s, rc, g, parent);
    if (!f || f->busy) return runner_init(r, s, g, parent, lim, e);
    f->busy = 1;
    memset(r, 0, sizeof *r);
    r->s = s, r->g = g, r->parent = parent, r->lim = lim, r->frame = f;
    r->vals = f->vals, r->uses = f->uses, r->is_output = f->is_output, r->remaining = f->remaining, r->root = f->root;
    memset(r->vals, 0, (size_t)g->n_values * sizeof *r->vals);
    memcpy(r->remaining, r->uses, (size_t)g->n_values * sizeof(int));
    for (int v = 0; v < g->n_values; v++) r->root[v] = v;
    if (lim->memory_limit && !(r->charged = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof(size_t))))
        return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory"); /* frame_close still frees it */
    return KILN_OK;
}

static void frame_close(struct kiln_runner *r) {
    runner_free(r);
    if (r->frame) r->frame->busy = 0;
}

kiln_status kiln_run_subgraph(kiln_ctx *ctx, kiln_graph *g, int n_in, kiln_value *const *ins,
                              kiln_value *outs) {
    struct kiln_runner *parent = ctx->runner;
    if (!parent) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "subgraphs can only run inside a session run");
    if (n_in > g->n_inputs)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "subgraph '%s' takes %d inputs, got %d",
                         g->name ? g->name : "", g->n_inputs, n_in);
    if (has_checks(parent->lim))
        KILN_TRY(check_limits(parent->lim, "subgraph", g->name ? g->name : "", ctx->err));
    struct kiln_runner r;
    kiln_status st = frame_open(&r, parent->s, g, parent, parent->lim, ctx->err);
    kiln_subframe *f = r.frame;
    if (!st) {
        for (int i = 0; i < n_in; i++) {
            if (!ins[i]) continue;
            kiln_value *d = &r.vals[g->inputs[i]];
            *d = *ins[i];
            d->t.owner = NULL; /* borrowed from the caller */
            d->seq = ins[i]->seq;
        }
        /* under a memory limit values are counted one by one on the heap, as before plans */
        if (f && !r.lim->memory_limit) subframe_pick_plan(&r, f, n_in, ins);
        if (r.plan) r.arena = r.plan->arenas->mem; /* the context's own plan: no other run uses it */
        int idx_buf[64] = {0};
        int *idx = g->n_outputs <= 64 ? idx_buf : malloc((size_t)g->n_outputs * sizeof(int));
        if (!idx) {
            st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        } else {
            for (int i = 0; i < g->n_outputs; i++) idx[i] = i;
            st = run_frame(&r, g->n_outputs, idx, outs, ctx->err);
            if (idx != idx_buf) free(idx);
        }
        if (!st && f && r.rec) subframe_keep_plan(&r, f);
        for (int i = 0; i < n_in; i++) memset(&r.vals[g->inputs[i]], 0, sizeof(kiln_value));
    }
    frame_close(&r);
    if (st) kiln_err_prefix(ctx->err, "in subgraph '%s'", g->name ? g->name : "");
    return st;
}

/* ---------------------------------------------------------------- memory plans */

kiln_plan *kiln_plan_make(kiln_session *s, const kiln_graph *g, const kiln_lifetime *rec,
                          const char *signature) {
    kiln_plan *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    int nv = g->n_values;
    p->n_values = nv;
    p->offset = malloc((size_t)(nv ? nv : 1) * sizeof(int64_t));
    p->size = calloc((size_t)(nv ? nv : 1), sizeof(size_t));
    kiln_arena_item *items = malloc((size_t)(nv ? nv : 1) * sizeof *items);
    int *order = malloc((size_t)(nv ? nv : 1) * sizeof(int));
    p->signature = strdup(signature);
    if (!p->offset || !p->size || !items || !order || !p->signature) {
        free(items); free(order); kiln_plan_free(p);
        return NULL;
    }
    int m = 0;
    for (int v = 0; v < nv; v++) {
        p->offset[v] = -1;
        if (rec[v].def < 0 || rec[v].size == 0) continue;
        size_t sz = (rec[v].size + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
        items[m] = (kiln_arena_item){sz, rec[v].def, rec[v].last, rec[v].dev, -1};
        order[m] = v;
        p->naive_bytes += sz;
        m++;
    }
    /* greedy by size: each buffer takes the lowest offset free throughout its lifetime */
    if (kiln_arena_place(items, m)) { free(items); free(order); kiln_plan_free(p); return NULL; }
    for (int i = 0; i < m; i++) {
        const kiln_arena_item *it = &items[i];
        int v = order[i];
        p->offset[v] = it->off;
        p->size[v] = it->size;
        if ((size_t)it->off + it->size > p->dev_bytes[it->dev]) p->dev_bytes[it->dev] = (size_t)it->off + it->size;
    }
    free(items); free(order);
    for (int d = 0; d < s->eps.n; d++) {
        p->arena_bytes += p->dev_bytes[d];
        if (p->dev_bytes[d]) p->ep[d] = s->eps.ep[d];
    }
    if (!(p->arenas = kiln_arena_set_make(p))) {
        kiln_plan_free(p);
        return NULL;
    }
    return p;
}

kiln_arena_set *kiln_arena_set_make(const kiln_plan *p) {
    kiln_arena_set *a = calloc(1, sizeof *a);
    if (!a) return NULL;
    for (int d = 0; d < KILN_MAX_PROVIDERS; d++) {
        if (!p->dev_bytes[d]) continue;
        kiln_err scratch;
        if (p->ep[d]->vt->alloc(p->ep[d], p->dev_bytes[d], &a->mem[d], &scratch)) {
            a->mem[d] = NULL;
            kiln_arena_set_free(p, a);
            return NULL;
        }
    }
    return a;
}

void kiln_arena_set_free(const kiln_plan *p, kiln_arena_set *a) {
    if (!a) return;
    for (int d = 0; d < KILN_MAX_PROVIDERS; d++)
        if (a->mem[d]) p->ep[d]->vt->free(p->ep[d], a->mem[d]);
    free(a);
}

void kiln_plan_free(kiln_plan *p) {
    if (!p) return;
    free(p->signature);
    free(p->offset);
    free(p->size);
    kiln_capture_free(p);
    for (kiln_arena_set *a = p->arenas, *nx; a; a = nx) {
        nx = a->next;
        kiln_arena_set_free(p, a);
    }
    free(p);
}

/* ---------------------------------------------------------------- static preparation */

static void type_to_value(const kiln_type *t, kiln_value *v) {
    memset(v, 0, sizeof *v);
    if (kiln_kind_is_map(t->kind)) {
        v->kind = t->kind;
        v->map_key_dtype = t->key_dtype;
        v->map_val_dtype = t->dtype;
        v->n_maps = -1;
        return;
    }
    if (t->kind == KILN_KIND_SEQUENCE) {
        v->kind = KILN_KIND_SEQUENCE;
        v->seq_dtype = t->dtype;
        v->seq_len = -1;
        return;
    }
    v->kind = KILN_KIND_TENSOR;
    v->t.dtype = t->dtype;
    v->t.rank = t->rank;
    if (t->rank > 0) memcpy(v->t.dims, t->dims, (size_t)t->rank * sizeof(int64_t));
}

static int is_shape_op(const kiln_node *n) {
    return !n->domain[0] && (!strcmp(n->op_type, "Shape") || !strcmp(n->op_type, "Size"));
}

/* Folding at load makes a constant the model keeps for its whole life, outside any run's memory
 * limit: an output larger than 64 MiB (or the session's memory limit) is left to run time, where
 * the limit applies (a hostile HannWindow of 2^31 points would otherwise take 8 GiB at open). */
static int fold_size_ok(const kiln_session *s, const kiln_tensor *t) {
    int64_t n = kiln_numel(t);
    if (n < 0) return 0;
    size_t bytes = kiln_dtype_bytes(t->dtype, n), cap = (size_t)64 << 20;
    if (s->opt.memory_limit && s->opt.memory_limit < cap) cap = s->opt.memory_limit;
    return bytes <= cap;
}

kiln_status kiln_graph_prepare(kiln_session *s, kiln_graph *g, kiln_err *e) {
    int nv = g->n_values;
    kiln_value *tmp = calloc((size_t)(nv ? nv : 1), sizeof *tmp); /* static stand-ins */
    if (!tmp) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    int fold = s->opt.opt_level >= 1;
    kiln_err scratch;
    /* every way out of a node's step, `continue` included, tells core/weights.c it is done */
    for (int ni = 0; ni < g->n_nodes; kiln_weights_node_ready(s, g, ni++)) {
        kiln_node *n = &g->nodes[ni];
        if (!n->op || n->removed) continue;
        kiln_value *ins[64] = {0}, *outs[64] = {0}, outv[64];
        if (n->n_in > 64 || n->n_out > 64) continue;
        int all_const = 1, shape_known = 1;
        for (int i = 0; i < n->n_in; i++) {
            int v = n->in[i];
            if (v < 0) continue;
            kiln_graph_value *gv = &g->values[v];
            if (gv->is_const) {
                ins[i] = &gv->konst;
            } else {
                all_const = 0;
                type_to_value(&gv->type, &tmp[v]);
                if (!gv->has_type) tmp[v].t.rank = -1;
                if (!kiln_shape_concrete(&tmp[v].t)) shape_known = 0;
                ins[i] = &tmp[v];
            }
        }
        if (n->n_implicit) all_const = 0;
        memset(outv, 0, sizeof outv);
        for (int i = 0; i < n->n_out; i++) {
            outv[i].kind = KILN_KIND_TENSOR;
            outv[i].t.rank = -1;
            outs[i] = n->out[i] >= 0 ? &outv[i] : NULL;
        }
        kiln_ctx ctx = {n, n->opset, n->n_in, ins, n->n_out, outs, NULL, &scratch, 1, s->tp, NULL, s->eps.ep[0], NULL};
        int only_packs = n->op->flags & KILN_OP_PREPACK;
        int want_init = s->prepack == KILN_PREPACK_NOW || (!only_packs && s->prepack == KILN_PREPACK_DEFER) ||
                        (only_packs && s->prepack == KILN_PREPACK_CPU_NODES && n->ep == 0);
        if (n->op->init && !n->state && want_init) {
            kiln_status st = n->op->init(&ctx);
            if (st) {
                kiln_err_prefix(&scratch, "node '%s' (%s, opset %d)", n->name, n->op_type, n->opset);
                *e = scratch;
                free(tmp);
                return st;
            }
            n->state = ctx.state;
        }
        ctx.state = n->state;
        if (s->prepack == KILN_PREPACK_CPU_NODES) continue; /* that packing, nothing else */
        int can_fold = fold && !nondeterministic(n) && n->op->compute &&
                       (all_const || (is_shape_op(n) && shape_known));
        if (can_fold) {
            /* run the node now; its outputs become constants */
            ctx.static_mode = 0;
            int ok = 1;
            int dynamic = n->op->flags & KILN_OP_DYNAMIC;
            if (!dynamic && (!n->op->infer || n->op->infer(&ctx))) ok = 0;
            for (int i = 0; ok && !dynamic && i < n->n_out; i++) {
                if (!outs[i] || outs[i]->kind != KILN_KIND_TENSOR || outs[i]->t.data) continue;
                if (outs[i]->t.rank < 0 || !fold_size_ok(s, &outs[i]->t) ||
                    kiln_tensor_alloc(&outs[i]->t, &scratch))
                    ok = 0;
            }
            /* kiln_alloc_output needs a runner: constant folding of dynamic ops allocates on the heap */
            if (ok && n->op->compute(&ctx)) ok = 0;
            for (int i = 0; ok && i < n->n_out; i++)
                if (outs[i] && outs[i]->kind == KILN_KIND_TENSOR && outs[i]->t.data && !outs[i]->t.owner) {
                    kiln_tensor c; /* infer may have pointed at borrowed bytes */
                    if (kiln_tensor_copy(&c, &outs[i]->t, &scratch)) ok = 0;
                    else outs[i]->t = c;
                }
            if (ok) {
                for (int i = 0; i < n->n_out; i++) {
                    if (!outs[i]) continue;
                    kiln_graph_value *gv = &g->values[n->out[i]];
                    gv->is_const = 1;
                    gv->konst = outv[i];
                    gv->type.kind = outv[i].kind == KILN_KIND_SEQUENCE || kiln_kind_is_map(outv[i].kind)
                                        ? outv[i].kind : KILN_KIND_TENSOR;
                    gv->type.dtype = kiln_kind_is_map(outv[i].kind) ? outv[i].map_val_dtype : outv[i].t.dtype;
                    gv->type.key_dtype = outv[i].map_key_dtype;
                    gv->type.rank = outv[i].t.rank;
                    memcpy(gv->type.dims, outv[i].t.dims, sizeof outv[i].t.dims);
                    gv->has_type = 1;
                }
                n->removed = 1;
                s->folded_nodes++;
                continue;
            }
            for (int i = 0; i < n->n_out; i++) kiln_value_release(&outv[i]);
            memset(outv, 0, sizeof outv);
            for (int i = 0; i < n->n_out; i++) {
                outv[i].kind = KILN_KIND_TENSOR;
                outv[i].t.rank = -1;
            }
            ctx.static_mode = 1;
        }
        /* static inference: record what can be known of each output */
        if (n->op->infer && !(n->op->flags & KILN_OP_DYNAMIC && !n->op->infer)) {
            if (n->op->infer(&ctx) == KILN_OK) {
                /* an infer that could compute its outputs' values (Shape of partly static
                 * shapes) turns the node into constants */
                int all_known = fold && !nondeterministic(n) && n->n_out > 0;
                for (int i = 0; i < n->n_out && all_known; i++)
                    all_known = outs[i] && outs[i]->kind == KILN_KIND_TENSOR && outs[i]->t.data &&
                                kiln_shape_concrete(&outs[i]->t) && outs[i]->t.dtype != KILN_DTYPE_STRING;
                if (all_known) {
                    int ok = 1;
                    for (int i = 0; i < n->n_out && ok; i++)
                        if (!outs[i]->t.owner) {
                            kiln_tensor c;
                            if (kiln_tensor_copy(&c, &outs[i]->t, &scratch)) ok = 0;
                            else outs[i]->t = c;
                        }
                    if (ok) {
                        for (int i = 0; i < n->n_out; i++) {
                            kiln_graph_value *gv = &g->values[n->out[i]];
                            gv->is_const = 1;
                            gv->konst = outv[i];
                            gv->type.kind = KILN_KIND_TENSOR;
                            gv->type.dtype = outv[i].t.dtype;
                            gv->type.rank = outv[i].t.rank;
                            memcpy(gv->type.dims, outv[i].t.dims, sizeof outv[i].t.dims);
                            gv->has_type = 1;
                        }
                        n->removed = 1;
                        s->folded_nodes++;
                        continue;
                    }
                }
                for (int i = 0; i < n->n_out; i++) {
                    if (outs[i] && kiln_kind_is_map(outs[i]->kind)) { /* maps have no shape to refine */
                        kiln_graph_value *gv = &g->values[n->out[i]];
                        gv->type.kind = outs[i]->kind;
                        gv->type.key_dtype = outs[i]->map_key_dtype;
                        gv->type.dtype = outs[i]->map_val_dtype;
                        gv->type.rank = -1;
                        gv->has_type = 1;
                        continue;
                    }
                    if (!outs[i] || outs[i]->kind != KILN_KIND_TENSOR) continue;
                    kiln_graph_value *gv = &g->values[n->out[i]];
                    if (outs[i]->t.rank >= 0 || !gv->has_type) {
                        gv->type.kind = KILN_KIND_TENSOR;
                        if (outs[i]->t.dtype) gv->type.dtype = outs[i]->t.dtype;
                        gv->type.rank = outs[i]->t.rank;
                        if (outs[i]->t.rank > 0)
                            memcpy(gv->type.dims, outs[i]->t.dims, (size_t)outs[i]->t.rank * sizeof(int64_t));
                        gv->has_type = outs[i]->t.dtype != 0;
                    }
                }
            } else if (s->opt.verbose) {
                fprintf(stderr, "kiln: static inference of node '%s' (%s): %s\n", n->name, n->op_type, scratch.msg);
            }
            for (int i = 0; i < n->n_out; i++)
                if (outs[i] && outs[i]->t.owner) kiln_tensor_release(&outs[i]->t);
        }
    }
    free(tmp);
    /* dead nodes: outputs nobody reads (walk backwards so chains die together) */
    if (fold) {
        int *uses = calloc((size_t)(nv ? nv : 1), sizeof(int));
        if (!uses) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
        for (int i = 0; i < g->n_outputs; i++) uses[g->outputs[i]]++;
        for (int i = 0; i < g->n_nodes; i++) {
            kiln_node *n = &g->nodes[i];
            if (n->removed) continue;
            for (int k = 0; k < n->n_in; k++) if (n->in[k] >= 0) uses[n->in[k]]++;
            for (int k = 0; k < n->n_implicit; k++) uses[n->implicit[k]]++;
        }
        for (int i = g->n_nodes - 1; i >= 0; i--) {
            kiln_node *n = &g->nodes[i];
            if (n->removed || nondeterministic(n)) continue;
            int used = 0;
            for (int k = 0; k < n->n_out; k++) used |= n->out[k] >= 0 && uses[n->out[k]] > 0;
            if (used) continue;
            n->removed = 1;
            s->folded_nodes++;
            for (int k = 0; k < n->n_in; k++) if (n->in[k] >= 0) uses[n->in[k]]--;
            for (int k = 0; k < n->n_implicit; k++) uses[n->implicit[k]]--;
        }
        free(uses);
    }
    return KILN_OK;
}
