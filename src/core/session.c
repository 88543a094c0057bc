/* The public session API: open (load, bind kernels, prepare), describe, run. */
#include "session.h"
#include "../onnx/model_write.h"
#include "../ops/op.h"
#include "../opt/optimize.h"
#include "placement.h"
#include "capture.h"
#include "host_blocks.h"
#include "dims.h"
#include "specialize.h"
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define MAX_PLANS 8

static int live_nodes(kiln_session *s);

void kiln_options_init(kiln_options *opt) {
    memset(opt, 0, sizeof *opt);
    opt->threads = 0;
    opt->opt_level = 2; /* the fusions of level 2 all measure faster on the shared models */
    opt->providers = KILN_PROVIDER_CPU;
}

static kiln_status fail_open(kiln_err *e) {
    kiln_set_last_error(e);
    return e->code;
}

/* Finds a kernel for every node (recursively); appends "name (op, domain, opset)" of each node
 * without one to *missing. */
static kiln_status bind_kernels(kiln_session *s, kiln_graph *g, char **missing, size_t *len, int *count) {
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_attrs; k++) {
            if (n->attrs[k].g) KILN_TRY(bind_kernels(s, n->attrs[k].g, missing, len, count));
            for (int j = 0; n->attrs[k].graphs && j < n->attrs[k].n_graphs; j++)
                KILN_TRY(bind_kernels(s, n->attrs[k].graphs[j], missing, len, count));
        }
        if (!n->op && n->opset >= 0) n->op = kiln_find_op(n->domain, n->op_type, n->opset);
        if (n->op) continue;
        char line[512];
        if (n->opset < 0)
            snprintf(line, sizeof line, "%s'%s' (%s): domain '%s' is not imported by the model",
                     *count ? "; " : "", n->name, n->op_type, n->domain);
        else
            snprintf(line, sizeof line, "%s'%s' (%s%s%s, opset %d)", *count ? "; " : "", n->name,
                     n->domain[0] ? n->domain : "", n->domain[0] ? ":" : "", n->op_type, n->opset);
        size_t l = strlen(line);
        char *m = realloc(*missing, *len + l + 1);
        if (!m) return KILN_ERR_NO_MEMORY;
        memcpy(m + *len, line, l + 1);
        *missing = m;
        *len += l;
        (*count)++;
    }
    return KILN_OK;
}

/* Which graph inputs some node reads on the host (a CPU kernel, or a device kernel's host input).
 * One pass over the nodes marks the values read on the host, so that graphs with many inputs do
 * not cost inputs x nodes. */
static kiln_status find_host_readers(kiln_session *s) {
    kiln_graph *g = s->model->graph;
    s->input_host_readers = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof(int));
    char *on_host = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    if (!s->input_host_readers || !on_host) {
        free(on_host);
        return KILN_ERR_NO_MEMORY;
    }
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->removed || kiln_is_memcpy_node(n)) continue;
        for (int k = 0; k < n->n_in + n->n_implicit; k++) {
            int x = k < n->n_in ? n->in[k] : n->implicit[k - n->n_in];
            if (x < 0) continue;
            int host_kernel = n->ep == 0 && !(k < n->n_in && n->op && (n->op->flags & KILN_OP_SHAPE_ONLY));
            int host_input = n->kernel && k < n->n_in && k < 32 && (n->kernel->host_inputs & (1u << k));
            if (host_kernel || host_input || k >= n->n_in) on_host[x] = 1;
        }
    }
    for (int j = 0; j < g->n_inputs; j++) s->input_host_readers[j] = on_host[g->inputs[j]];
    free(on_host);
    return KILN_OK;
}

/* input_at / output_at for the final main graph. An output listed twice maps to its last
 * position, as the name scan this replaces did. */
static kiln_status map_io_positions(kiln_session *s, kiln_err *e) {
    kiln_graph *g = s->model->graph;
    size_t nv = (size_t)(g->n_values ? g->n_values : 1);
    s->input_at = malloc(nv * sizeof(int));
    s->output_at = malloc(nv * sizeof(int));
    if (!s->input_at || !s->output_at) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    s->n_at = g->n_values;
    for (int v = 0; v < g->n_values; v++) s->input_at[v] = s->output_at[v] = -1;
    for (int j = g->n_inputs - 1; j >= 0; j--) s->input_at[g->inputs[j]] = j; /* first wins */
    for (int j = 0; j < g->n_outputs; j++) s->output_at[g->outputs[j]] = j;  /* last wins */
    return KILN_OK;
}

/* Position of the input (or output) named `name` among the main graph's, or -1. */
static int io_position(const kiln_session *s, const int *at, const char *name) {
    if (!name) return -1;
    int v = kiln_graph_find_value(s->model->graph, name);
    return v < 0 || v >= s->n_at ? -1 : at[v];
}

/* One line per provider with its node count, then each node left on the CPU with the reason. */
static void print_placement(kiln_session *s) {
    kiln_graph *g = s->model->graph;
    if (s->eps.n < 2) return;
    int count[KILN_MAX_PROVIDERS] = {0};
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].removed && !kiln_is_memcpy_node(&g->nodes[i])) count[g->nodes[i].ep]++;
    for (int p = 0; p < s->eps.n; p++)
        fprintf(stderr, "kiln: placement: %d node%s on %s\n", count[p], count[p] == 1 ? "" : "s",
                s->eps.ep[p]->vt->name);
    fprintf(stderr, "kiln: placement: %d copies between memory spaces, %d constants uploaded\n",
            s->copies, s->uploads);
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->removed || !n->placement_why) continue;
        fprintf(stderr, "kiln: node '%s' (%s) on %s: %s\n", n->name, n->op_type, s->eps.ep[n->ep]->vt->name,
                n->placement_why);
    }
}

static kiln_status prepare_recursive(kiln_session *s, kiln_graph *g, kiln_err *e) {
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_attrs; k++) {
            if (n->attrs[k].g) KILN_TRY(prepare_recursive(s, n->attrs[k].g, e));
            for (int j = 0; n->attrs[k].graphs && j < n->attrs[k].n_graphs; j++)
                KILN_TRY(prepare_recursive(s, n->attrs[k].graphs[j], e));
        }
    }
    return kiln_graph_prepare(s, g, e);
}

static kiln_status fill_io(kiln_session *s, const int *idx, size_t n, kiln_io_info **out, kiln_err *e) {
    kiln_graph *g = s->model->graph;
    kiln_io_info *info = calloc(n ? n : 1, sizeof *info);
    if (!info) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    *out = info;
    for (size_t i = 0; i < n; i++) {
        kiln_graph_value *v = &g->values[idx[i]];
        info[i].name = v->name;
        info[i].dtype = (kiln_dtype)v->type.dtype;
        info[i].rank = v->has_type ? v->type.rank : -1;
        info[i].dims = v->type.dims;
        info[i].is_sequence = v->type.kind == KILN_KIND_SEQUENCE || v->type.kind == KILN_KIND_MAP_SEQUENCE;
        info[i].is_map = kiln_kind_is_map(v->type.kind);
        info[i].map_key_dtype = info[i].is_map ? (kiln_dtype)v->type.key_dtype : KILN_DTYPE_UNDEFINED;
        if (info[i].is_map) info[i].rank = -1;
        if (info[i].rank > 0) {
            const char **names = calloc((size_t)info[i].rank, sizeof *names);
            if (!names) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
            for (int d = 0; d < info[i].rank; d++) {
                int64_t x = v->type.dims[d];
                names[d] = KILN_DIM_IS_SYM(x) && KILN_DIM_SYM_ID(x) < s->model->n_syms
                               ? s->model->syms[KILN_DIM_SYM_ID(x)] : "";
            }
            info[i].dim_names = names;
        }
    }
    return KILN_OK;
}

/* A failed open: the caller's error (a child's, eo) or the thread's. */
static kiln_status open_failed(const kiln_err *e, kiln_err *eo) {
    if (eo) {
        *eo = *e;
        return e->code;
    }
    kiln_set_last_error(e);
    return e->code;
}

/* Opens a session on m; a child (parent not NULL) uses the parent's providers and constant cache
 * and reports failure into eo. */
static kiln_status open_impl(kiln_model *m, const kiln_options *opt, int allow_missing, kiln_session *parent,
                             kiln_session **out, kiln_err *eo) {
    kiln_err e = {0};
    kiln_session *s = calloc(1, sizeof *s);
    if (!s) {
        kiln_model_free(m);
        kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
        return open_failed(&e, eo);
    }
    s->model = m;
    s->root = parent ? parent : s;
    if (opt) s->opt = *opt;
    else kiln_options_init(&s->opt);
    pthread_mutex_init(&s->mu, NULL);
    pthread_mutex_init(&s->err_mu, NULL);
    pthread_mutex_init(&s->trace_mu, NULL);
    pthread_mutex_init(&s->dev_mu, NULL);
    const char *prof = getenv("KILN_PROFILE");
    s->profile = prof && prof[0] == '1';
    if (s->opt.dim_overrides && !(s->dim_spec = strdup(s->opt.dim_overrides))) {
        kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
        kiln_session_close(s);
        return open_failed(&e, eo);
    }
    if (parent) {
        /* one context, stream and thread pool for the family: the child borrows the parent's */
        s->eps = parent->eps;
        s->eps_borrowed = 1;
        s->dcache = parent->dcache;
    } else if (kiln_providers_open(&s->opt, &s->eps, &e)) {
        kiln_session_close(s);
        return open_failed(&e, eo);
    }
    s->tp = s->eps.tp;
    int threads = s->eps.threads;
    /* the CLI and Python report the fallback themselves (kiln_session_warning) */
    if (s->eps.warning[0] && s->opt.verbose) fprintf(stderr, "kiln: warning: %s\n", s->eps.warning);
    for (int p = 1; s->opt.verbose && !parent && p < s->eps.n; p++)
        fprintf(stderr, "kiln: %s on %s\n", s->eps.ep[p]->vt->name, s->eps.ep[p]->vt->describe(s->eps.ep[p]));
    if (kiln_apply_dim_overrides(m, s->opt.dim_overrides, &e)) {
        kiln_session_close(s);
        return open_failed(&e, eo);
    }
    /* a family that may specialise keeps one device copy of each constant's bytes */
    if (!parent && kiln_spec_wanted(s) && !(s->dcache = kiln_dev_cache_new())) {
        kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
        kiln_session_close(s);
        return open_failed(&e, eo);
    }
    s->opt.dim_overrides = NULL; /* the caller's string need not outlive the call */
    /* the loader has copied these; the optimised model path is used below, during this call */
    s->opt.n_initializers = 0;
    s->opt.initializer_names = NULL;
    s->opt.initializers = NULL;
    const char *opt_path = s->opt.optimized_model_path, *opt_ext = s->opt.optimized_model_external_data;
    s->opt.optimized_model_path = s->opt.optimized_model_external_data = NULL;
    if (s->opt.float16) {
        size_t converted = 0;
        if (kiln_graph_to_float16(m, s->opt.verbose, &converted, &e)) {
            kiln_session_close(s);
            return open_failed(&e, eo);
        }
    }
    if (s->opt.opt_level >= 2) {
        /* fold first: shapes computed from static dimensions (Shape -> Gather -> Concat chains of
         * exported models, or dims fixed by dim_overrides) become constants the fusions can read */
        size_t len0 = 0;
        int count0 = 0;
        char *missing0 = NULL;
        kiln_status st = bind_kernels(s, m->graph, &missing0, &len0, &count0);
        free(missing0);
        s->prepack = KILN_PREPACK_DEFER;
        if (!st && !count0) st = prepare_recursive(s, m->graph, &e);
        s->prepack = KILN_PREPACK_NOW;
        size_t n_rw = 0;
        if (!st) st = kiln_graph_optimize_for(m->graph, s->opt.opt_level, s->opt.verbose, s->eps.n > 1, &n_rw, &e);
        if (st) {
            if (!e.code) kiln_fail(&e, st, "out of memory");
            kiln_session_close(s);
            return open_failed(&e, eo);
        }
        s->fused_nodes = n_rw;
    }
    size_t len = 0;
    int count = 0;
    if (bind_kernels(s, m->graph, &s->missing_ops, &len, &count)) {
        kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
        kiln_session_close(s);
        return open_failed(&e, eo);
    }
    if (count && !allow_missing) {
        kiln_fail(&e, KILN_ERR_NOT_IMPLEMENTED, "%d node%s use%s ops kiln does not implement: %s", count,
                  count > 1 ? "s" : "", count > 1 ? "" : "s", s->missing_ops);
        kiln_session_close(s);
        return open_failed(&e, eo);
    }
    if (!count) {
        kiln_session_place_args pa = {&s->eps, 0, 0, s->dcache, &s->holds};
        /* a device provider may take a node whose CPU kernel packed its weight and read the
         * original, and the optimised model is written from the originals: both wait for the end */
        if (s->eps.n == 1 && !opt_path) kiln_weights_watch(s);
        /* with a device provider, the CPU packs weights only for the nodes it is given: GPT-2's
         * Gemms on a GPU would otherwise hold a float32 packed copy of every weight on the host
         * (988 MB for the fp16 model) and pack it at every open */
        s->prepack = s->eps.n > 1 ? KILN_PREPACK_DEFER : KILN_PREPACK_NOW;
        kiln_status st = prepare_recursive(s, m->graph, &e);
        s->prepack = KILN_PREPACK_NOW;
        /* written before placement: constants are still on the host, copy nodes not yet in */
        if (!st && opt_path)
            st = kiln_model_write_ext(m, opt_path, opt_ext, s->opt.optimized_model_external_min_bytes, &e);
        if (!st) st = kiln_place(&pa, m->graph, &e);
        if (!st && s->eps.n > 1) {
            s->prepack = KILN_PREPACK_CPU_NODES;
            st = prepare_recursive(s, m->graph, &e);
            s->prepack = KILN_PREPACK_NOW;
        }
        if (st) {
            kiln_session_close(s);
            return open_failed(&e, eo);
        }
        s->copies = pa.copies;
        s->uploads = pa.uploads;
        kiln_release_packed_weights(s);
        if (kiln_capture_check(s, &e)) {
            kiln_session_close(s);
            return open_failed(&e, eo);
        }
        if (find_host_readers(s) || !live_nodes(s)) {
            kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
            kiln_session_close(s);
            return open_failed(&e, eo);
        }
        if (s->opt.verbose) print_placement(s);
        kiln_subgraphs_number(s);
    }
    kiln_graph *g = m->graph;
    s->n_inputs = (size_t)g->n_inputs;
    s->n_outputs = (size_t)g->n_outputs;
    if (fill_io(s, g->inputs, s->n_inputs, &s->inputs, &e) ||
        fill_io(s, g->outputs, s->n_outputs, &s->outputs, &e) || map_io_positions(s, &e)) {
        kiln_session_close(s);
        return open_failed(&e, eo);
    }
    if (s->opt.verbose)
        fprintf(stderr, "kiln: session ready: %d nodes, %zu folded or dead, %d threads\n", g->n_nodes,
                s->folded_nodes, threads);
    if (!parent && !s->missing_ops) kiln_spec_init(s, opt && opt->n_initializers);
    *out = s;
    return KILN_OK;
}

kiln_status kiln_session_open_model(kiln_model *m, const kiln_options *opt, int allow_missing,
                                    kiln_session **out) {
    return open_impl(m, opt, allow_missing, NULL, out, NULL);
}

kiln_status kiln_session_open_child(kiln_session *parent, kiln_model *m, const kiln_options *opt,
                                    kiln_session **out, kiln_err *e) {
    return open_impl(m, opt, 0, parent, out, e);
}


static kiln_load_overrides load_overrides(const kiln_options *opt) {
    kiln_load_overrides ov = {0, NULL, NULL};
    if (opt && opt->n_initializers) {
        ov.n = opt->n_initializers;
        ov.names = opt->initializer_names;
        ov.tensors = opt->initializers;
    }
    return ov;
}

kiln_status kiln_session_open(const char *path, const kiln_options *opt, kiln_session **out) {
    kiln_err e = {0};
    if (!path || !out) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_session_open: path and out must not be NULL");
        return fail_open(&e);
    }
    *out = NULL;
    kiln_model *m;
    kiln_load_overrides ov = load_overrides(opt);
    if (kiln_model_load_file_with(path, &ov, &m, &e)) {
        kiln_err_prefix(&e, "%s", path);
        return fail_open(&e);
    }
    return kiln_session_open_model(m, opt, 0, out);
}

kiln_status kiln_session_open_bytes(const void *bytes, size_t size, const kiln_options *opt,
                                    kiln_session **out) {
    kiln_err e = {0};
    if (!out) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_session_open_bytes: out must not be NULL");
        return fail_open(&e);
    }
    *out = NULL;
    kiln_model *m;
    kiln_load_overrides ov = load_overrides(opt);
    if (kiln_model_load_bytes_with(bytes, size, &ov, &m, &e)) return fail_open(&e);
    return kiln_session_open_model(m, opt, 0, out);
}

static int by_time(const void *a, const void *b) {
    double x = ((const struct kiln_op_profile *)a)->seconds, y = ((const struct kiln_op_profile *)b)->seconds;
    return x < y ? 1 : x > y ? -1 : 0;
}

static void print_profile(kiln_session *s) {
    double total = 0;
    for (int i = 0; i < s->n_prof; i++) total += s->prof[i].seconds;
    if (total <= 0) return;
    qsort(s->prof, (size_t)s->n_prof, sizeof s->prof[0], by_time);
    fprintf(stderr, "kiln profile (time in kernels by op, all runs):\n  %-34s %8s %10s %6s\n", "op", "calls", "total ms", "%");
    for (int i = 0; i < s->n_prof; i++) {
        char name[160];
        snprintf(name, sizeof name, "%s%s%s", s->prof[i].domain, s->prof[i].domain[0] ? ":" : "", s->prof[i].op);
        fprintf(stderr, "  %-34s %8ld %10.3f %6.1f\n", name, s->prof[i].calls, s->prof[i].seconds * 1e3,
                100.0 * s->prof[i].seconds / total);
    }
}

void kiln_session_close(kiln_session *s) {
    if (!s) return;
    kiln_spec_free(s); /* children first: they use this session's providers and constants */
    if (s->profile && s->root == s) print_profile(s);
    for (kiln_plan *p = s->plans, *nx; p; p = nx) {
        nx = p->next;
        kiln_plan_free(p);
    }
    kiln_subframes_free(s);
    for (size_t i = 0; s->inputs && i < s->n_inputs; i++) free((void *)s->inputs[i].dim_names);
    for (size_t i = 0; s->outputs && i < s->n_outputs; i++) free((void *)s->outputs[i].dim_names);
    free(s->inputs);
    free(s->outputs);
    kiln_model_free(s->model); /* kernel states first: they may reference the shared constants */
    kiln_dev_holds_release(s->dcache, &s->holds);
    if (!s->eps_borrowed) {
        kiln_dev_cache_free(s->dcache);
        kiln_providers_close(&s->eps);
    }
    free(s->dim_spec);
    free(s->missing_ops);
    free(s->input_host_readers);
    free(s->live);
    free(s->input_at);
    free(s->output_at);
    free(s->weights);
    kiln_trace_free(&s->trace);
    pthread_mutex_destroy(&s->mu);
    pthread_mutex_destroy(&s->err_mu);
    pthread_mutex_destroy(&s->trace_mu);
    pthread_mutex_destroy(&s->dev_mu);
    free(s);
}

const char *kiln_session_error(const kiln_session *s) { return s ? s->err.msg : kiln_last_error(); }
size_t kiln_session_input_count(const kiln_session *s) { return s ? s->n_inputs : 0; }
size_t kiln_session_output_count(const kiln_session *s) { return s ? s->n_outputs : 0; }

kiln_status kiln_session_input_info(const kiln_session *s, size_t i, kiln_io_info *info) {
    if (!s || !info || i >= s->n_inputs) return KILN_ERR_INVALID_ARGUMENT;
    *info = s->inputs[i];
    return KILN_OK;
}

kiln_status kiln_session_output_info(const kiln_session *s, size_t i, kiln_io_info *info) {
    if (!s || !info || i >= s->n_outputs) return KILN_ERR_INVALID_ARGUMENT;
    *info = s->outputs[i];
    return KILN_OK;
}

/* ---------------------------------------------------------------- running */

static kiln_status check_input(kiln_session *s, const kiln_graph_value *gv, const kiln_value *v, kiln_err *e) {
    if (!gv->has_type) return KILN_OK;
    const kiln_type *t = &gv->type;
    if (v->kind == KILN_KIND_NONE) {
        if (t->optional) return KILN_OK;
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' is not optional but was given no value", gv->name);
    }
    char vt[64], tt[64];
    if (kiln_kind_is_map(v->kind)) kiln_map_type_str(v->kind, v->map_key_dtype, v->map_val_dtype, vt, sizeof vt);
    else snprintf(vt, sizeof vt, "%s", v->kind == KILN_KIND_SEQUENCE ? "sequence" : "tensor");
    if (kiln_kind_is_map(t->kind)) {
        kiln_map_type_str(t->kind, t->key_dtype, t->dtype, tt, sizeof tt);
        if (v->kind != t->kind || v->map_key_dtype != t->key_dtype || v->map_val_dtype != t->dtype)
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' must be a %s, got a %s", gv->name, tt, vt);
        return KILN_OK;
    }
    if (t->kind == KILN_KIND_SEQUENCE) {
        if (v->kind != KILN_KIND_SEQUENCE)
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' must be a sequence of tensors, got a %s",
                             gv->name, vt);
        if (t->dtype && v->seq_dtype && v->seq_dtype != t->dtype) /* an empty test-data sequence has none */
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' is a sequence of %s, the model expects %s",
                             gv->name, kiln_dtype_name((kiln_dtype)v->seq_dtype), kiln_dtype_name((kiln_dtype)t->dtype));
        return KILN_OK;
    }
    if (v->kind != KILN_KIND_TENSOR)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' must be a tensor, got a %s", gv->name, vt);
    const kiln_tensor *x = &v->t;
    char want[256], got[256];
    kiln_tensor wt = {0};
    wt.dtype = t->dtype;
    wt.rank = t->rank;
    if (t->rank > 0) memcpy(wt.dims, t->dims, (size_t)t->rank * sizeof(int64_t));
    if (t->dtype && x->dtype != t->dtype)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' has element type %s, the model expects %s",
                         gv->name, kiln_dtype_name((kiln_dtype)x->dtype), kiln_dtype_name((kiln_dtype)t->dtype));
    if (t->rank >= 0 && x->rank != t->rank)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' has rank %d (%s), the model expects rank %d (%s)",
                         gv->name, x->rank, kiln_shape_str(x, got, sizeof got), t->rank,
                         kiln_shape_str(&wt, want, sizeof want));
    for (int d = 0; t->rank > 0 && d < t->rank; d++)
        if (t->dims[d] >= 0 && x->dims[d] != t->dims[d])
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                             "input '%s' has shape %s, the model expects %s (dimension %d)", gv->name,
                             kiln_shape_str(x, got, sizeof got), kiln_shape_str(&wt, want, sizeof want), d);
    (void)s;
    return KILN_OK;
}

static kiln_status run_values(kiln_session *s, const kiln_run_options *ro, int n_in, const char *const *names,
                              const kiln_value *inputs, int n_out, const int *out_idx, kiln_value *outputs,
                              kiln_err *e);

static void append_sig(char *buf, size_t cap, size_t *len, const kiln_value *v) {
    char tmp[400];
    if (v->kind == KILN_KIND_TENSOR) kiln_shape_str(&v->t, tmp, sizeof tmp);
    else if (kiln_kind_is_map(v->kind)) snprintf(tmp, sizeof tmp, "map%d", v->n_maps);
    else snprintf(tmp, sizeof tmp, v->kind == KILN_KIND_SEQUENCE ? "seq%d" : "none", v->seq_len);
    int n = snprintf(buf + *len, cap - *len, "%s;", tmp);
    if (n > 0 && *len + (size_t)n < cap) *len += (size_t)n;
}

kiln_status kiln_session_run_values(kiln_session *s, int n_in, const char *const *names,
                                    const kiln_value *inputs, int n_out, const int *out_idx,
                                    kiln_value *outputs) {
    return kiln_session_run_values_opts(s, NULL, n_in, names, inputs, n_out, out_idx, outputs);
}

/* The failure of a run becomes the session's error (kiln_session_error; with concurrent runs, the
 * latest one's) and the calling thread's (kiln_last_error). */
static kiln_status run_failed(kiln_session *s, const kiln_err *e) {
    pthread_mutex_lock(&s->err_mu);
    s->err = *e;
    pthread_mutex_unlock(&s->err_mu);
    kiln_set_last_error(e);
    return e->code;
}

/* The plan of signature sig with an arena set for this run, both taken under s->mu (plan NULL:
 * none yet, or no memory for another arena set). */
static kiln_plan *plan_take(kiln_session *s, const char *sig, kiln_arena_set **arena) {
    *arena = NULL;
    pthread_mutex_lock(&s->mu);
    kiln_plan *plan = NULL;
    for (kiln_plan *p = s->plans; p; p = p->next)
        if (!strcmp(p->signature, sig)) { plan = p; break; }
    if (plan) {
        plan->users++;
        if ((*arena = plan->arenas)) plan->arenas = (*arena)->next;
    }
    pthread_mutex_unlock(&s->mu);
    /* every idle set is in another run: this one gets its own (outside the lock: it is large) */
    if (plan && !*arena && !(*arena = kiln_arena_set_make(plan))) {
        pthread_mutex_lock(&s->mu);
        int last = --plan->users == 0 && plan->dropped;
        pthread_mutex_unlock(&s->mu);
        if (last) kiln_plan_free(plan);
        return NULL;
    }
    return plan;
}

/* Gives the arena set back to its plan and the plan back to the session. A plan evicted while
 * runs held it is freed by the last of them. */
static void plan_give(kiln_session *s, kiln_plan *plan, kiln_arena_set *arena) {
    pthread_mutex_lock(&s->mu);
    if (!plan->dropped) s->last_plan = plan;
    arena->next = plan->arenas;
    plan->arenas = arena;
    int last = --plan->users == 0 && plan->dropped;
    pthread_mutex_unlock(&s->mu);
    if (last) kiln_plan_free(plan);
}

/* Unlinks plan p (s->mu held); returns 1 when nobody holds it, so that the caller frees it. */
static int plan_drop(kiln_session *s, kiln_plan *p) {
    if (s->last_plan == p) s->last_plan = NULL;
    s->n_plans--;
    p->dropped = 1;
    return p->users == 0;
}

/* Adds a plan made from a recording run (or keeps the one a concurrent run of the same
 * signature added first) and drops the oldest beyond MAX_PLANS. */
static void plan_insert(kiln_session *s, kiln_plan *p) {
    kiln_plan *old = NULL, *dup = NULL;
    pthread_mutex_lock(&s->mu);
    for (kiln_plan *q = s->plans; q; q = q->next)
        if (!strcmp(q->signature, p->signature)) { dup = q; break; }
    if (dup) {
        s->last_plan = dup;
    } else {
        p->next = s->plans;
        s->plans = p;
        s->last_plan = p;
        if (++s->n_plans > MAX_PLANS) {
            kiln_plan *q = s->plans;
            while (q->next && q->next->next) q = q->next;
            if (plan_drop(s, q->next)) old = q->next;
            q->next = NULL;
        }
    }
    pthread_mutex_unlock(&s->mu);
    if (dup) kiln_plan_free(p);
    kiln_plan_free(old);
}

kiln_status kiln_session_run_values_opts(kiln_session *s, const kiln_run_options *ro, int n_in,
                                         const char *const *names, const kiln_value *inputs, int n_out,
                                         const int *out_idx, kiln_value *outputs) {
    kiln_err err = {0}, *e = &err; /* the run's own: concurrent runs fail independently */
    int dev = s->eps.n > 1; /* device sessions run one call at a time (see run_common) */
    if (dev) pthread_mutex_lock(&s->dev_mu);
    kiln_status st = run_values(s, ro, n_in, names, inputs, n_out, out_idx, outputs, e);
    if (dev) pthread_mutex_unlock(&s->dev_mu);
    return st ? run_failed(s, e) : KILN_OK;
}

static kiln_status run_values(kiln_session *s, const kiln_run_options *ro, int n_in, const char *const *names,
                              const kiln_value *inputs, int n_out, const int *out_idx, kiln_value *outputs,
                              kiln_err *e) {
    kiln_run_limits lim; /* the deadline counts from here: waiting for the session is part of the run */
    kiln_run_limits_init(&lim, s, ro);
    kiln_graph *g = s->model->graph;
    if (s->missing_ops)
        return kiln_fail(e, KILN_ERR_NOT_IMPLEMENTED, "the model uses ops kiln does not implement: %s", s->missing_ops);
    kiln_value *slots = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof *slots);
    int *given = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof(int));
    if (!slots || !given) {
        free(slots); free(given);
        return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    kiln_status st = KILN_OK;
    for (int i = 0; i < n_in && !st; i++) {
        int k = io_position(s, s->input_at, names[i]);
        if (k < 0) {
            char list[512] = "";
            size_t l = 0;
            for (int j = 0; j < g->n_inputs && l < sizeof list - 64; j++)
                l += (size_t)snprintf(list + l, sizeof list - l, "%s'%s'", j ? ", " : "", g->values[g->inputs[j]].name);
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "the model has no input named '%s' (its inputs: %s)",
                           names[i] ? names[i] : "(null)", list);
        } else if (given[k]) {
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' is given twice", names[i]);
        } else {
            given[k] = 1;
            slots[k] = inputs[i];
            st = check_input(s, &g->values[g->inputs[k]], &inputs[i], e);
        }
    }
    for (int j = 0; j < g->n_inputs && !st; j++) {
        if (given[j]) continue;
        const kiln_graph_value *gv = &g->values[g->inputs[j]];
        if (gv->type.optional) { slots[j].kind = KILN_KIND_NONE; continue; }
        st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' is missing", gv->name);
    }
    if (st) {
        free(slots); free(given);
        return st;
    }
    /* a shape seen before may have a child with its dims fixed: the run is the child's */
    kiln_session *child = s->spec ? kiln_spec_take(s, slots) : NULL;
    if (child) {
        int dev = s->eps.n > 1; /* then runs come one at a time (dev_mu): the flag is this run's */
        if (dev) child->outputs_on_device = s->outputs_on_device;
        st = run_values(child, ro, n_in, names, inputs, n_out, out_idx, outputs, e);
        if (dev) child->outputs_on_device = 0;
        if (!st || st == KILN_ERR_CANCELLED) {
            kiln_spec_give(s, child, 0);
            free(slots); free(given);
            return st;
        }
        /* the generic plan decides: an error of the data fails there too, one of the child's
         * static shapes does not (and the shape is then not specialised again) */
        st = KILN_OK;
        memset(e, 0, sizeof *e);
    }
    /* a device input that some node reads on the host gets a host copy for this run */
    kiln_value *staged = calloc((size_t)(g->n_inputs ? g->n_inputs : 1), sizeof *staged);
    if (!staged) {
        free(slots); free(given);
        return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    for (int j = 0; j < g->n_inputs && !st; j++) {
        if (slots[j].kind != KILN_KIND_TENSOR || !slots[j].t.dev || !s->input_host_readers ||
            !s->input_host_readers[j])
            continue;
        kiln_value *h;
        if (kiln_value_to_host(&slots[j], &h)) {
            st = kiln_fail(e, KILN_ERR_RUNTIME, "input '%s': %s", g->values[g->inputs[j]].name, kiln_last_error());
            break;
        }
        staged[j] = *h;
        free(h);
        slots[j] = staged[j];
        slots[j].t.owner = NULL;
    }
    if (st) {
        for (int j = 0; j < g->n_inputs; j++) kiln_value_release(&staged[j]);
        free(staged); free(slots); free(given);
        if (child) kiln_spec_give(s, child, 0);
        return st;
    }
    char sig[4096];
    size_t sl = 0;
    sig[0] = 0;
    for (int j = 0; j < g->n_inputs; j++) append_sig(sig, sizeof sig, &sl, &slots[j]);

    kiln_arena_set *arena;
    kiln_plan *plan = plan_take(s, sig, &arena);
    kiln_lifetime *rec = NULL;
    /* a signature that has a plan but no memory for another arena set runs on the heap */
    if (!plan) {
        pthread_mutex_lock(&s->mu);
        int planned = 0;
        for (kiln_plan *p = s->plans; p && !planned; p = p->next) planned = !strcmp(p->signature, sig);
        pthread_mutex_unlock(&s->mu);
        if (!planned) rec = calloc((size_t)(g->n_values ? g->n_values : 1), sizeof *rec);
    }
    int replayed = 0;
    int traced = atomic_load_explicit(&s->root->tracing, memory_order_relaxed);
    double run_t0 = traced ? kiln_trace_now() : 0;
    lim.rc = kiln_run_ctx_take(s);
    if (plan && s->capture_on) st = kiln_capture_run(s, plan, arena, slots, n_out, out_idx, outputs, &replayed, e);
    if (!st && !replayed)
        st = kiln_run_graph_limited(s, g, slots, plan, arena, rec, &lim, n_out, out_idx, outputs, e);
    kiln_run_ctx_give(s, lim.rc);
    lim.rc = NULL;
    kiln_run_limits_end(&lim);
    if (plan) plan_give(s, plan, arena);
    if (!st && rec) {
        kiln_plan *p = kiln_plan_make(s, g, rec, sig);
        if (p) {
            if (s->opt.verbose)
                fprintf(stderr, "kiln: planned %s: arena %zu bytes (%zu if allocated one by one)\n", sig,
                        p->arena_bytes, p->naive_bytes);
            plan_insert(s, p);
        }
    }
    if (traced) {
        kiln_trace_event ev = {"model_run", NULL, NULL, 0, 0, 0, ""};
        kiln_session_trace(s, &ev, run_t0, kiln_trace_now());
    }
    for (int j = 0; j < g->n_inputs; j++) kiln_value_release(&staged[j]);
    free(staged);
    if (child) kiln_spec_give(s, child, !st);
    free(rec);
    free(slots);
    free(given);
    return st;
}

kiln_status kiln_run(kiln_session *s, size_t n_in, const char *const *in_names,
                     const kiln_tensor_desc *inputs, size_t n_out, const char *const *out_names,
                     kiln_value **outputs) {
    return kiln_run_with_options(s, NULL, n_in, in_names, inputs, n_out, out_names, outputs);
}

/* The session's device provider (the first one that is not the CPU), or NULL. */
static kiln_provider *device_provider(const kiln_session *s) {
    return s->eps.n > 1 ? s->eps.ep[1] : NULL;
}

/* Writes output value v into the caller's buffer b (same dtype and shape). */
static kiln_status write_bound(kiln_session *s, const char *name, const kiln_value *v, const kiln_tensor_desc *b,
                               kiln_err *e) {
    if (v->kind != KILN_KIND_TENSOR)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "output '%s' is not a tensor and cannot be bound", name);
    const kiln_tensor *t = &v->t;
    int same = b->dtype == (kiln_dtype)t->dtype && b->rank == t->rank;
    for (int d = 0; same && d < t->rank; d++) same = b->dims && b->dims[d] == t->dims[d];
    if (!same) {
        char shape[256];
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "output '%s' is %s, the bound buffer has another type or shape",
                         name, kiln_shape_str(t, shape, sizeof shape));
    }
    if (t->dtype == KILN_DTYPE_STRING)
        return kiln_fail(e, KILN_ERR_NOT_IMPLEMENTED, "output '%s': string outputs cannot be bound", name);
    size_t bytes = kiln_tensor_nbytes(t);
    if (!bytes) return KILN_OK;
    kiln_provider *dev = device_provider(s);
    if (b->memory == KILN_MEMORY_DEVICE && !dev)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "output '%s' is bound to device memory but the session has no device", name);
    if (!t->dev && b->memory == KILN_MEMORY_HOST) {
        memcpy((void *)b->data, t->data, bytes);
        return KILN_OK;
    }
    kiln_provider *p = t->dev ? t->dev : dev;
    kiln_status st = !t->dev ? p->vt->to_device(p, (void *)b->data, t->data, bytes, e)
                     : b->memory == KILN_MEMORY_HOST ? p->vt->to_host(p, (void *)b->data, t->data, bytes, e)
                                                     : p->vt->copy(p, (void *)b->data, t->data, bytes, e);
    return st ? st : p->vt->sync(p, e);
}

/* An input given as a value (kiln_run_values): borrowed for the run, as a desc's bytes are. */
static kiln_status value_input(kiln_session *s, const char *name, const kiln_value *v, kiln_value *dst,
                               kiln_err *e) {
    name = name ? name : "(null)";
    if (!v) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': the value is NULL", name);
    if (v->kind < KILN_KIND_TENSOR || v->kind > KILN_KIND_MAP_SEQUENCE)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': not a kiln value", name);
    if (v->kind == KILN_KIND_TENSOR && v->t.dev && v->t.dev != device_provider(s))
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s' is in another session's device memory", name);
    *dst = *v;
    dst->t.owner = NULL;
    return KILN_OK;
}

/* A KILN_RANK_SEQUENCE desc as a sequence value whose items view the caller's tensors. */
static kiln_status sequence_input(kiln_session *s, const char *name, const kiln_tensor_desc *d, kiln_value *v,
                                  kiln_err *e) {
    name = name ? name : "(null)";
    int seq_dtype = d->dtype == KILN_DTYPE_SIZED_STRING ? KILN_DTYPE_STRING : d->dtype;
    if (!kiln_dtype_valid(seq_dtype) || !d->dims || d->dims[0] < 0 || d->dims[0] > INT32_MAX ||
        (d->dims[0] && !d->data) || d->memory != KILN_MEMORY_HOST)
        return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                         "input '%s': a sequence needs an element type, an item count in dims[0] and, for "
                         "items, a host array of kiln_tensor_desc", name);
    int n = (int)d->dims[0];
    const kiln_tensor_desc *items = d->data;
    v->kind = KILN_KIND_SEQUENCE;
    v->seq_dtype = seq_dtype;
    v->seq = calloc((size_t)(n ? n : 1), sizeof *v->seq);
    if (!v->seq) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    for (int k = 0; k < n; k++) {
        const kiln_tensor_desc *it = &items[k];
        kiln_tensor *t = &v->seq[k];
        int item_dtype = it->dtype == KILN_DTYPE_SIZED_STRING ? KILN_DTYPE_STRING : it->dtype;
        if (item_dtype != seq_dtype || it->rank < 0 || it->rank > KILN_MAX_RANK || (it->rank && !it->dims) ||
            it->memory != KILN_MEMORY_HOST)
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                             "input '%s': sequence item %d must be a host tensor of element type %s (rank 0 to %d)",
                             name, k, kiln_dtype_name(d->dtype), KILN_MAX_RANK);
        t->dtype = item_dtype;
        t->rank = it->rank;
        for (int j = 0; j < it->rank; j++) {
            if (it->dims[j] < 0)
                return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': sequence item %d has a negative dimension",
                                 name, k);
            t->dims[j] = it->dims[j];
        }
        if (kiln_checked_numel(t->rank, t->dims) == KILN_NUMEL_TOO_LARGE)
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': sequence item %d is too large", name, k);
        t->data = (void *)it->data;
        if (!t->data && kiln_numel(t) > 0)
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': sequence item %d has no data", name, k);
        if (t->dtype == KILN_DTYPE_STRING) { /* the caller's strings become kiln strings (owned: freed after the run) */
            kiln_tensor view = *t;
            view.dtype = it->dtype;
            memset(t, 0, sizeof *t);
            KILN_TRY(kiln_tensor_import(t, &view, name, e));
        }
        v->seq_len = k + 1;
    }
    return KILN_OK;
}

static kiln_status run_common(kiln_session *s, const kiln_run_options *options, size_t n_in,
                              const char *const *in_names, const kiln_tensor_desc *inputs,
                              const kiln_value *const *values, size_t n_out, const char *const *out_names,
                              kiln_value **outputs) {
    kiln_err err = {0}, *e = &err; /* the run's own: concurrent runs fail independently */
    if (!s) {
        kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "kiln_run: session is NULL");
        kiln_set_last_error(e);
        return e->code;
    }
    if ((n_in && (!in_names || (!inputs && !values))) || !outputs || (n_out && !out_names)) {
        kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "kiln_run: NULL array argument");
        return run_failed(s, e);
    }
    kiln_graph *g = s->model->graph;
    size_t no = n_out ? n_out : (size_t)g->n_outputs;
    kiln_value *vin = calloc(n_in ? n_in : 1, sizeof *vin), *vout = calloc(no ? no : 1, sizeof *vout);
    /* string inputs copied into kiln strings (which carry their length), freed after the run */
    kiln_tensor *imported = calloc(n_in ? n_in : 1, sizeof *imported);
    int *idx = calloc(no ? no : 1, sizeof(int));
    kiln_status st = KILN_OK;
    if (!vin || !vout || !idx || !imported) st = kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    for (size_t i = 0; !st && i < n_in; i++) {
        if (values) {
            st = value_input(s, in_names[i], values[i], &vin[i], e);
            continue;
        }
        const kiln_tensor_desc *d = &inputs[i];
        if (d->rank == KILN_RANK_SEQUENCE) {
            st = sequence_input(s, in_names[i], d, &vin[i], e);
            continue;
        }
        int sized = d->dtype == KILN_DTYPE_SIZED_STRING;
        if ((!kiln_dtype_valid(d->dtype) && !sized) || d->rank < 0 || d->rank > KILN_MAX_RANK || (d->rank && !d->dims)) {
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': invalid dtype %d or rank %d",
                           in_names[i] ? in_names[i] : "(null)", (int)d->dtype, d->rank);
            break;
        }
        vin[i].kind = KILN_KIND_TENSOR;
        vin[i].t.dtype = sized ? KILN_DTYPE_STRING : d->dtype;
        vin[i].t.rank = d->rank;
        for (int k = 0; k < d->rank; k++) {
            if (d->dims[k] < 0) {
                st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': dimension %d is negative",
                               in_names[i] ? in_names[i] : "(null)", k);
                break;
            }
            vin[i].t.dims[k] = d->dims[k];
        }
        if (!st && kiln_checked_numel(d->rank, vin[i].t.dims) == KILN_NUMEL_TOO_LARGE) {
            char shape[400];
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                           "input '%s': shape %s is too large (its element count overflows or exceeds 2^48)",
                           in_names[i] ? in_names[i] : "(null)", kiln_shape_str(&vin[i].t, shape, sizeof shape));
        }
        vin[i].t.data = (void *)d->data;
        if (!st && !d->data && kiln_numel(&vin[i].t) > 0)
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': data is NULL", in_names[i]);
        if (!st && d->memory == KILN_MEMORY_DEVICE) {
            vin[i].t.dev = device_provider(s);
            if (!vin[i].t.dev)
                st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                               "input '%s' is in device memory but the session runs on the CPU only (providers: %s)",
                               in_names[i], kiln_session_provider_name(s, 0));
            else if (vin[i].t.dtype == KILN_DTYPE_STRING)
                st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': strings cannot be in device memory",
                               in_names[i]);
        } else if (!st && d->memory != KILN_MEMORY_HOST) {
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "input '%s': unknown memory kind %d", in_names[i],
                           (int)d->memory);
        } else if (!st && vin[i].t.dtype == KILN_DTYPE_STRING) {
            kiln_tensor view = vin[i].t;
            view.dtype = d->dtype;
            st = kiln_tensor_import(&imported[i], &view, in_names[i], e);
            vin[i].t.data = imported[i].data; /* owner stays NULL: a borrowed input to the run */
        }
    }
    for (size_t k = 0; !st && k < no; k++) {
        if (!n_out) { idx[k] = (int)k; continue; }
        idx[k] = io_position(s, s->output_at, out_names[k]);
        if (idx[k] < 0)
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "the model has no output named '%s'",
                           out_names[k] ? out_names[k] : "(null)");
    }
    if (!st && options && !(options->timeout_ms >= 0)) /* also NaN */
        st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "kiln_run: timeout_ms is %g, it must be >= 0 (0: none)",
                       options->timeout_ms);
    /* The device path keeps one run at a time: the recording and replay of graph capture, the
     * device outputs' hand-over flag and the provider's stream belong to the session. A CPU-only
     * session takes no lock here: its device flags are never set. */
    int dev = s->eps.n > 1;
    if (dev) {
        pthread_mutex_lock(&s->dev_mu);
        s->outputs_on_device = options && (options->outputs_on_device || options->bound_outputs);
    }
    if (!st) st = run_values(s, options, (int)n_in, in_names, vin, (int)no, idx, vout, e);
    if (dev) {
        s->outputs_on_device = 0;
        pthread_mutex_unlock(&s->dev_mu);
    }
    for (size_t k = 0; !st && options && options->bound_outputs && k < no; k++) {
        const kiln_tensor_desc *b = &options->bound_outputs[k];
        if (!b->data) continue;
        st = write_bound(s, s->model->graph->values[s->model->graph->outputs[idx[k]]].name, &vout[k], b, e);
        kiln_value_release(&vout[k]);
        memset(&vout[k], 0, sizeof vout[k]);
        vout[k].kind = KILN_KIND_NONE;
    }
    if (st && options && options->bound_outputs)
        for (size_t k = 0; k < no; k++) kiln_value_release(&vout[k]);
    if (!st) {
        for (size_t k = 0; k < no; k++) {
            outputs[k] = malloc(sizeof(kiln_value));
            if (!outputs[k]) {
                for (size_t j = 0; j < k; j++) kiln_value_free(outputs[j]);
                for (size_t j = k; j < no; j++) kiln_value_release(&vout[j]);
                st = kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
                break;
            }
            *outputs[k] = vout[k];
            if (options && options->bound_outputs && options->bound_outputs[k].data) {
                free(outputs[k]);
                outputs[k] = NULL;
            } else if (!options || !options->outputs_on_device) {
                /* outputs_on_device was set only for bound outputs: hand the rest over on the host */
                kiln_value *h;
                if (outputs[k]->kind == KILN_KIND_TENSOR && outputs[k]->t.dev) {
                    if (kiln_value_to_host(outputs[k], &h)) {
                        for (size_t j = 0; j <= k; j++) kiln_value_free(outputs[j]);
                        for (size_t j = k + 1; j < no; j++) kiln_value_release(&vout[j]);
                        st = kiln_fail(e, KILN_ERR_RUNTIME, "%s", kiln_last_error());
                        break;
                    }
                    kiln_value_free(outputs[k]);
                    outputs[k] = h;
                }
            }
        }
    }
    for (size_t i = 0; vin && !values && i < n_in; i++) { /* values given as such stay the caller's */
        if (vin[i].kind != KILN_KIND_SEQUENCE) continue;
        for (int k = 0; k < vin[i].seq_len; k++) /* the items' data is the caller's, but for imported strings */
            if (vin[i].seq[k].owner) kiln_tensor_release(&vin[i].seq[k]);
        free(vin[i].seq);
    }
    for (size_t i = 0; imported && i < n_in; i++) kiln_tensor_release(&imported[i]);
    free(imported);
    free(vin);
    free(vout);
    free(idx);
    return st ? run_failed(s, e) : KILN_OK;
}

kiln_status kiln_run_with_options(kiln_session *s, const kiln_run_options *options, size_t n_in,
                                  const char *const *in_names, const kiln_tensor_desc *inputs,
                                  size_t n_out, const char *const *out_names, kiln_value **outputs) {
    return run_common(s, options, n_in, in_names, inputs, NULL, n_out, out_names, outputs);
}

kiln_status kiln_run_values(kiln_session *s, const kiln_run_options *options, size_t n_in,
                            const char *const *in_names, const kiln_value *const *inputs, size_t n_out,
                            const char *const *out_names, kiln_value **outputs) {
    return run_common(s, options, n_in, in_names, NULL, inputs, n_out, out_names, outputs);
}

kiln_status kiln_session_weight_stats(kiln_session *s, size_t *packed_bytes, size_t *released_bytes) {
    if (!s) return KILN_ERR_INVALID_ARGUMENT;
    if (packed_bytes) *packed_bytes = s->model->packed_bytes;
    if (released_bytes) *released_bytes = s->model->released_init_bytes;
    return KILN_OK;
}

kiln_status kiln_session_plan_stats(kiln_session *s, kiln_plan_stats *stats) {
    if (!s || !stats) return KILN_ERR_INVALID_ARGUMENT;
    memset(stats, 0, sizeof *stats);
    stats->initializer_bytes = s->model->init_bytes;
    stats->copied_initializer_bytes = s->model->copied_init_bytes;
    stats->folded_nodes = s->folded_nodes;
    kiln_graph *g = s->model->graph;
    for (int i = 0; i < g->n_nodes; i++) stats->nodes += !g->nodes[i].removed;
    pthread_mutex_lock(&s->mu);
    if (s->last_plan) {
        stats->arena_bytes = s->last_plan->arena_bytes;
        stats->naive_bytes = s->last_plan->naive_bytes;
    }
    pthread_mutex_unlock(&s->mu);
    return KILN_OK;
}

/* ---------------------------------------------------------------- output values */

int kiln_value_kind(const kiln_value *v) {
    if (!v) return KILN_VALUE_NONE;
    return v->kind == KILN_KIND_MAP_SEQUENCE ? KILN_VALUE_SEQUENCE : v->kind;
}
kiln_dtype kiln_value_dtype(const kiln_value *v) {
    if (!v) return KILN_DTYPE_UNDEFINED;
    if (kiln_kind_is_map(v->kind)) return (kiln_dtype)v->map_val_dtype;
    return (kiln_dtype)(v->kind == KILN_KIND_SEQUENCE ? v->seq_dtype : v->t.dtype);
}
int kiln_value_rank(const kiln_value *v) { return v && v->kind == KILN_KIND_TENSOR ? v->t.rank : 0; }
const int64_t *kiln_value_dims(const kiln_value *v) { return v ? v->t.dims : NULL; }
const void *kiln_value_data(const kiln_value *v) { return v && v->kind == KILN_KIND_TENSOR ? v->t.data : NULL; }
kiln_memory kiln_value_memory(const kiln_value *v) {
    return v && v->kind == KILN_KIND_TENSOR && v->t.dev ? KILN_MEMORY_DEVICE : KILN_MEMORY_HOST;
}

kiln_status kiln_value_to_device(kiln_session *s, const kiln_tensor_desc *d, kiln_value **out) {
    kiln_err e = {0};
    if (!out) return KILN_ERR_INVALID_ARGUMENT;
    *out = NULL;
    kiln_provider *p = s ? device_provider(s) : NULL;
    if (!s || !d || !p) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_value_to_device: %s",
                  !s || !d ? "NULL argument" : "the session has no device provider");
        kiln_set_last_error(&e);
        return e.code;
    }
    if (!kiln_dtype_valid(d->dtype) || d->dtype == KILN_DTYPE_STRING || d->rank < 0 || d->rank > KILN_MAX_RANK ||
        (d->rank && !d->dims)) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_value_to_device: invalid dtype %d or rank %d", (int)d->dtype, d->rank);
        kiln_set_last_error(&e);
        return e.code;
    }
    kiln_value *v = calloc(1, sizeof *v);
    if (!v) return KILN_ERR_NO_MEMORY;
    v->kind = KILN_KIND_TENSOR;
    v->t.dtype = d->dtype;
    v->t.rank = d->rank;
    for (int k = 0; k < d->rank; k++) v->t.dims[k] = d->dims[k] < 0 ? 0 : d->dims[k];
    size_t bytes = kiln_tensor_nbytes(&v->t);
    void *mem = NULL;
    kiln_status st = p->vt->alloc(p, bytes, &mem, &e);
    if (!st && bytes) {
        st = d->memory == KILN_MEMORY_DEVICE ? p->vt->copy(p, mem, d->data, bytes, &e)
                                             : p->vt->to_device(p, mem, d->data, bytes, &e);
    }
    if (!st) st = p->vt->sync(p, &e);
    if (st) {
        if (mem) p->vt->free(p, mem);
        free(v);
        kiln_set_last_error(&e);
        return st;
    }
    v->t.data = v->t.owner = mem;
    v->t.dev = p;
    *out = v;
    return KILN_OK;
}

kiln_provider *kiln_session_device(const kiln_session *s) { return s ? device_provider(s) : NULL; }

static kiln_status no_device(const char *what, kiln_session *s) {
    kiln_err e = {0};
    kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "%s: %s", what, s ? "the session has no device provider" : "NULL session");
    kiln_set_last_error(&e);
    return e.code;
}

kiln_status kiln_session_device_alloc(kiln_session *s, size_t bytes, void **out) {
    kiln_provider *p = kiln_session_device(s);
    if (!out) return KILN_ERR_INVALID_ARGUMENT;
    *out = NULL;
    if (!p) return no_device("kiln_session_device_alloc", s);
    kiln_err e = {0};
    if (p->vt->alloc(p, bytes, out, &e)) {
        kiln_set_last_error(&e);
        return e.code;
    }
    return KILN_OK;
}

void kiln_session_device_free(kiln_session *s, void *ptr) {
    kiln_provider *p = kiln_session_device(s);
    if (p && ptr) p->vt->free(p, ptr);
}

kiln_status kiln_session_device_copy(kiln_session *s, void *dst, kiln_memory dst_memory, const void *src,
                                     kiln_memory src_memory, size_t bytes) {
    kiln_provider *p = kiln_session_device(s);
    if (!p) return no_device("kiln_session_device_copy", s);
    kiln_err e = {0};
    if (!bytes) return KILN_OK;
    if (!dst || !src) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_session_device_copy: NULL pointer");
        kiln_set_last_error(&e);
        return e.code;
    }
    kiln_status st;
    if (dst_memory == KILN_MEMORY_HOST && src_memory == KILN_MEMORY_HOST) {
        memcpy(dst, src, bytes);
        return KILN_OK;
    }
    if (dst_memory == KILN_MEMORY_HOST) st = p->vt->to_host(p, dst, src, bytes, &e);
    else if (src_memory == KILN_MEMORY_HOST) st = p->vt->to_device(p, dst, src, bytes, &e);
    else st = p->vt->copy(p, dst, src, bytes, &e);
    if (!st) st = p->vt->sync(p, &e);
    if (st) kiln_set_last_error(&e);
    return st;
}

kiln_status kiln_value_to_host(const kiln_value *v, kiln_value **out) {
    kiln_err e = {0};
    if (!v || !out) return KILN_ERR_INVALID_ARGUMENT;
    *out = NULL;
    kiln_value *h = calloc(1, sizeof *h);
    if (!h) return KILN_ERR_NO_MEMORY;
    kiln_status st;
    if (v->kind == KILN_KIND_TENSOR && v->t.dev) {
        kiln_provider *p = v->t.dev;
        *h = *v;
        h->t.data = h->t.owner = NULL;
        h->t.dev = NULL;
        st = kiln_tensor_alloc_uninit(&h->t, &e); /* the copy writes every byte */
        size_t bytes = kiln_tensor_nbytes(&v->t);
        if (!st && bytes) st = p->vt->to_host(p, h->t.data, v->t.data, bytes, &e);
        if (!st) st = p->vt->sync(p, &e);
        if (st) kiln_tensor_release(&h->t);
    } else {
        st = kiln_value_copy(h, v, &e);
    }
    if (st) {
        free(h);
        kiln_set_last_error(&e);
        return st;
    }
    *out = h;
    return KILN_OK;
}
size_t kiln_value_nbytes(const kiln_value *v) {
    return v && v->kind == KILN_KIND_TENSOR ? kiln_tensor_nbytes(&v->t) : 0;
}
size_t kiln_value_sequence_length(const kiln_value *v) {
    if (v && v->kind == KILN_KIND_MAP_SEQUENCE) return v->n_maps > 0 ? (size_t)v->n_maps : 0;
    return v && v->kind == KILN_KIND_SEQUENCE ? (size_t)v->seq_len : 0;
}

/* Items are exposed as views on the sequence's tensors or maps (a kiln_value per item, made on
 * demand). */
const kiln_value *kiln_value_item(const kiln_value *v, size_t i) {
    static _Thread_local kiln_value view;
    if (v && v->kind == KILN_KIND_MAP_SEQUENCE && v->maps && i < (size_t)(v->n_maps > 0 ? v->n_maps : 0)) {
        memset(&view, 0, sizeof view);
        view.kind = KILN_KIND_MAP;
        view.map_key_dtype = v->map_key_dtype;
        view.map_val_dtype = v->map_val_dtype;
        view.n_maps = 1;
        view.maps = &v->maps[i];
        return &view;
    }
    if (!v || v->kind != KILN_KIND_SEQUENCE || i >= (size_t)v->seq_len) return NULL;
    memset(&view, 0, sizeof view);
    view.kind = KILN_KIND_TENSOR;
    view.t = v->seq[i];
    view.t.owner = NULL;
    return &view;
}

/* ---------------------------------------------------------------- maps */

static const kiln_map *one_map(const kiln_value *v) {
    return v && v->kind == KILN_KIND_MAP && v->n_maps == 1 && v->maps ? &v->maps[0] : NULL;
}

kiln_dtype kiln_value_map_key_dtype(const kiln_value *v) {
    return v && kiln_kind_is_map(v->kind) ? (kiln_dtype)v->map_key_dtype : KILN_DTYPE_UNDEFINED;
}
size_t kiln_value_map_size(const kiln_value *v) {
    const kiln_map *m = one_map(v);
    return m ? (size_t)m->keys.dims[0] : 0;
}
const void *kiln_value_map_keys(const kiln_value *v) {
    const kiln_map *m = one_map(v);
    return m ? m->keys.data : NULL;
}
const void *kiln_value_map_values(const kiln_value *v) {
    const kiln_map *m = one_map(v);
    return m ? m->vals.data : NULL;
}

/* The caller's strings of a map's keys or values as kiln strings (*out NULL when there are none). */
static kiln_status import_map_strings(kiln_dtype *dt, size_t n, const void *src, char ***out, kiln_err *e) {
    *out = NULL;
    if (*dt != KILN_DTYPE_STRING && *dt != KILN_DTYPE_SIZED_STRING) return KILN_OK;
    if (n > (size_t)INT32_MAX || (n && !src)) return KILN_OK; /* kiln_map_make says what is wrong */
    char **s = calloc(n ? n : 1, sizeof *s);
    if (!s) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = kiln_strs_import(s, src, (int64_t)n, *dt == KILN_DTYPE_SIZED_STRING, "kiln_value_map_new", e);
    if (st) {
        free(s);
        return st;
    }
    *dt = KILN_DTYPE_STRING;
    *out = s;
    return KILN_OK;
}

static void free_map_strings(char **s, size_t n) {
    if (!s) return;
    kiln_strs_free(s, (int64_t)n);
    free(s);
}

kiln_status kiln_value_map_new(kiln_dtype key_dtype, kiln_dtype value_dtype, size_t n, const void *keys,
                               const void *values, kiln_value **out) {
    kiln_err e = {0};
    if (!out) return KILN_ERR_INVALID_ARGUMENT;
    *out = NULL;
    char **ks = NULL, **vs = NULL;
    kiln_status st = import_map_strings(&key_dtype, n, keys, &ks, &e);
    if (!st) st = import_map_strings(&value_dtype, n, values, &vs, &e);
    kiln_value *v = st ? NULL : calloc(1, sizeof *v);
    kiln_map *m = st ? NULL : calloc(1, sizeof *m);
    if (!st)
        st = !v || !m ? kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory")
                      : kiln_map_make(m, key_dtype, value_dtype, n > (size_t)INT32_MAX ? -1 : (int64_t)n,
                                      ks ? (const void *)ks : keys, vs ? (const void *)vs : values,
                                      "kiln_value_map_new", &e);
    free_map_strings(ks, n);
    free_map_strings(vs, n);
    if (st) {
        free(v);
        free(m);
        kiln_set_last_error(&e);
        return st;
    }
    v->kind = KILN_KIND_MAP;
    v->map_key_dtype = key_dtype;
    v->map_val_dtype = value_dtype;
    v->n_maps = 1;
    v->maps = m;
    *out = v;
    return KILN_OK;
}

size_t kiln_string_length(const char *element) { return kiln_str_len(element); }

kiln_status kiln_value_strings(const kiln_value *v, kiln_string *out, size_t n) {
    kiln_err e = {0};
    if (!v || v->kind != KILN_KIND_TENSOR || v->t.dtype != KILN_DTYPE_STRING || v->t.dev || (n && !out)) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_value_strings: %s",
                  !v ? "the value is NULL" : n && !out ? "out is NULL" : "the value is not a host string tensor");
    } else if (kiln_numel(&v->t) != (int64_t)n) {
        kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_value_strings: the tensor has %lld strings, n is %zu",
                  (long long)kiln_numel(&v->t), n);
    } else {
        char *const *s = v->t.data;
        for (size_t i = 0; i < n; i++) {
            out[i].data = kiln_str_bytes(s[i]);
            out[i].len = kiln_str_len(s[i]);
        }
        return KILN_OK;
    }
    kiln_set_last_error(&e);
    return e.code;
}

kiln_status kiln_value_tensor_new(const kiln_tensor_desc *d, kiln_value **out) {
    kiln_err e = {0};
    if (!out) return KILN_ERR_INVALID_ARGUMENT;
    *out = NULL;
    kiln_status st = KILN_OK;
    kiln_tensor t;
    memset(&t, 0, sizeof t);
    if (!d || (!kiln_dtype_valid(d->dtype) && d->dtype != KILN_DTYPE_SIZED_STRING) || d->rank < 0 || d->rank > KILN_MAX_RANK || (d->rank && !d->dims) ||
        d->memory != KILN_MEMORY_HOST) {
        st = kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_value_tensor_new: %s",
                       !d ? "desc is NULL" : d->memory != KILN_MEMORY_HOST ? "only host tensors are copied"
                                                                          : "invalid dtype or rank");
    } else {
        t.dtype = d->dtype;
        t.rank = d->rank;
        for (int k = 0; k < d->rank && !st; k++) {
            if (d->dims[k] < 0) st = kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_value_tensor_new: dimension %d is negative", k);
            t.dims[k] = d->dims[k];
        }
        if (!st && kiln_checked_numel(t.rank, t.dims) == KILN_NUMEL_TOO_LARGE)
            st = kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_value_tensor_new: the shape is too large");
        if (!st && !d->data && kiln_numel(&t) > 0)
            st = kiln_fail(&e, KILN_ERR_INVALID_ARGUMENT, "kiln_value_tensor_new: data is NULL");
        t.data = (void *)d->data;
    }
    kiln_value *v = st ? NULL : calloc(1, sizeof *v);
    if (!st && !v) st = kiln_fail(&e, KILN_ERR_NO_MEMORY, "out of memory");
    if (!st) {
        v->kind = KILN_KIND_TENSOR;
        st = kiln_tensor_import(&v->t, &t, "kiln_value_tensor_new", &e);
        if (st) {
            free(v);
            v = NULL;
        }
    }
    if (st) {
        kiln_set_last_error(&e);
        return st;
    }
    *out = v;
    return KILN_OK;
}

void kiln_value_free(kiln_value *v) {
    if (!v) return;
    kiln_value_release(v);
    free(v);
}

/* ---------------------------------------------------------------- providers and placement */

size_t kiln_session_provider_count(const kiln_session *s) { return s ? (size_t)s->eps.n : 0; }

const char *kiln_session_provider_name(const kiln_session *s, size_t i) {
    if (!s || i >= (size_t)s->eps.n) return NULL;
    /* preferred first: the others in the order opened, the CPU last */
    return i + 1 < (size_t)s->eps.n ? s->eps.ep[i + 1]->vt->name : s->eps.ep[0]->vt->name;
}

const char *kiln_session_warning(const kiln_session *s) { return s ? s->eps.warning : ""; }

/* The live (not removed) nodes in order, made on first use: node_info is then O(1). */
static int live_nodes(kiln_session *s) {
    if (s->live) return 1;
    kiln_graph *g = s->model->graph;
    s->live = malloc((size_t)(g->n_nodes ? g->n_nodes : 1) * sizeof(int));
    if (!s->live) return 0;
    s->n_live = 0;
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].removed) s->live[s->n_live++] = i;
    return 1;
}

size_t kiln_session_node_count(const kiln_session *s) {
    if (!s || !live_nodes((kiln_session *)s)) return 0;
    return (size_t)s->n_live;
}

kiln_status kiln_session_node_info(const kiln_session *s, size_t i, kiln_node_info *info) {
    if (!s || !info || !live_nodes((kiln_session *)s) || i >= (size_t)s->n_live) return KILN_ERR_INVALID_ARGUMENT;
    kiln_graph *g = s->model->graph;
    {
        const kiln_node *n = &g->nodes[s->live[i]];
        info->name = n->name;
        info->op_type = n->op_type;
        info->domain = n->domain;
        info->provider = s->eps.n ? s->eps.ep[n->ep]->vt->name : "CPUExecutionProvider";
        info->reason = n->placement_why ? n->placement_why : "";
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- profiling */

kiln_status kiln_session_start_profiling(kiln_session *s, const char *path) {
    if (!s || !path || !path[0]) return KILN_ERR_INVALID_ARGUMENT;
    pthread_mutex_lock(&s->trace_mu);
    kiln_trace_free(&s->trace);
    s->trace.path = strdup(path);
    s->trace.t0 = kiln_trace_now();
    s->trace.start_ns = kiln_trace_wall_ns();
    int ok = s->trace.path != NULL;
    atomic_store(&s->tracing, ok);
    pthread_mutex_unlock(&s->trace_mu);
    return ok ? KILN_OK : KILN_ERR_NO_MEMORY;
}

const char *kiln_session_end_profiling(kiln_session *s) {
    if (!s) return NULL;
    static _Thread_local char written[1024];
    pthread_mutex_lock(&s->trace_mu);
    if (!s->trace.path) {
        pthread_mutex_unlock(&s->trace_mu);
        return NULL;
    }
    atomic_store(&s->tracing, 0);
    int rc = kiln_trace_write(&s->trace);
    snprintf(written, sizeof written, "%s", s->trace.path);
    kiln_trace_free(&s->trace);
    pthread_mutex_unlock(&s->trace_mu);
    if (rc) {
        kiln_err e = {0};
        kiln_fail(&e, KILN_ERR_IO, "cannot write the profile to '%s'", written);
        run_failed(s, &e);
        return NULL;
    }
    return written;
}

int64_t kiln_session_profiling_start_ns(const kiln_session *s) {
    if (!s) return 0;
    pthread_mutex_lock((pthread_mutex_t *)&s->trace_mu);
    int64_t ns = s->trace.path ? s->trace.start_ns : 0;
    pthread_mutex_unlock((pthread_mutex_t *)&s->trace_mu);
    return ns;
}

/* ---------------------------------------------------------------- model metadata */

static const char *or_empty(const char *p) { return p ? p : ""; }

kiln_status kiln_session_model_metadata(const kiln_session *s, kiln_model_metadata *md) {
    if (!s || !md) return KILN_ERR_INVALID_ARGUMENT;
    const kiln_model *m = s->model;
    md->producer_name = or_empty(m->producer);
    md->producer_version = or_empty(m->producer_version);
    md->domain = or_empty(m->domain);
    md->description = or_empty(m->doc);
    md->graph_name = or_empty(m->graph ? m->graph->name : NULL);
    md->graph_description = or_empty(m->graph_doc);
    md->version = m->model_version;
    md->n_custom = (size_t)m->n_props;
    md->custom_keys = (const char *const *)m->prop_keys;
    md->custom_values = (const char *const *)m->prop_values;
    return KILN_OK;
}

/* ---------------------------------------------------------------- memory */

void kiln_session_release_memory(kiln_session *s) {
    if (!s) return;
    kiln_host_blocks_drop();
    /* plans that runs hold now are freed by the last of them; their contexts stay with them */
    kiln_plan *free_list = NULL;
    pthread_mutex_lock(&s->mu);
    for (kiln_plan *p = s->plans, *nx; p; p = nx) {
        nx = p->next;
        if (plan_drop(s, p)) {
            p->next = free_list;
            free_list = p;
        }
    }
    s->plans = s->last_plan = NULL;
    s->n_plans = 0;
    pthread_mutex_unlock(&s->mu);
    for (kiln_plan *p = free_list, *nx; p; p = nx) {
        nx = p->next;
        kiln_plan_free(p);
    }
    kiln_subframes_free(s);
    kiln_spec_release_memory(s);
}
