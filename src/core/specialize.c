/* Shape specialisation: a session whose inputs have symbolic dimensions opens, for an input shape
 * it sees a second time, a child session of the same model with those dimensions fixed (the
 * dim_overrides mechanism), and runs that shape on it. With static shapes the exporter's shape
 * arithmetic folds away, fusions that need static shapes apply and graph capture can take the
 * whole model; a session with a device provider gains most, so "auto" means on there.
 *
 * The rules (docs/design.md):
 *  - the key of a run is the value of each symbolic dimension of the inputs ("batch=2,seq=7"); a
 *    name with two values in one run, or an input dimension without a name, means no key: the run
 *    goes the generic way;
 *  - the first run of a key is remembered, the second opens the child (a one-off shape is not
 *    worth the compile); at most SPEC_MAX children, the least recently used idle one closed to
 *    make room (none idle: the run goes the generic way and the next one tries again);
 *  - a key takes a full table's slot only after as many runs as evict_need, which starts at 2
 *    and doubles with every child closed that way: shapes that cycle through more keys than
 *    there are slots (a decoder's growing cache length, repeated per request) would otherwise
 *    close and open a child on every run, each open costing far more than the run;
 *  - a dimension that has taken twice as many sizes as there are slots (a decoder's cache length, a
 *    server's free-form sequence length) leaves the keys: runs then specialise on the other
 *    dimensions only ("batch=1,seq=1", the cache length left symbolic in the child), or, when
 *    none is left, go the generic way. Without this a decoder would open a child per token and
 *    run each once (an H100's GPT-2 decode: 0.65 s per open against 13 ms per generic step);
 *  - a child that fails to open, or whose run fails where the generic run then succeeds, marks
 *    its key "not specialised"; no run fails because of specialisation;
 *  - children borrow the parent's providers and its device-constant cache (devcache.h); what the
 *    caller asks the session (io info, providers, metadata, stats) answers for the parent, and a
 *    child's runs trace, profile and count memory against the parent (session.h: root).
 * Concurrency: CPU runs are concurrent, so the table has a lock held for a few instructions; a
 * child in use is counted (users) and only an idle one is closed. A child opens outside the lock
 * while other runs go on; runs of its key meanwhile go the generic way. */
#include "specialize.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SPEC_MAX 8     /* children per session */
#define SEEN_MAX 256   /* keys remembered without a child (seen once, or refused) */
#define KEY_MAX 512
#define SIZES_MAX 16   /* sizes a dimension may take and stay in the keys (twice the slots) */

typedef struct spec_child {
    char *key;          /* NULL: a free slot */
    kiln_session *s;    /* NULL while opening */
    int users;
    int doomed;         /* failed where the generic run succeeded: closed by its last user */
    unsigned long used; /* tick of the last run (least recently used goes first) */
} spec_child;

typedef struct spec_seen {
    char *key;
    int refused;
    unsigned runs;      /* generic runs of this key so far */
    unsigned long used;
    struct spec_seen *next;
} spec_seen;

/* One symbolic dimension of a graph input: input `in`, axis `dim`, symbol `k` (compact index). */
typedef struct spec_use { int in, dim, k; } spec_use;

struct kiln_spec_table {
    pthread_mutex_t mu;
    spec_child child[SPEC_MAX];
    spec_seen *seen;
    int n_seen;
    unsigned long tick;
    char *path;          /* the model file (absolute), or NULL with bytes */
    const void *bytes;
    size_t size;
    int n_uses, n_keys;
    spec_use *uses;
    int *sym_of;         /* [k]: the model's symbol id */
    int64_t *sizes;      /* [k * SIZES_MAX + i]: the distinct sizes symbol k has taken */
    int *n_sizes;        /* [k]: how many; SIZES_MAX + 1: more than that, k is out of the keys */
    int conflict_logged;
    unsigned evict_need; /* runs a key needs before it may take a busy table's slot */
};

static int spec_on(const kiln_session *s) {
    return s->opt.specialize > 0 || (s->opt.specialize == 0 && s->eps.n > 1);
}

static int inputs_symbolic(const kiln_session *s) {
    const kiln_graph *g = s->model->graph;
    for (int j = 0; j < g->n_inputs; j++) {
        const kiln_type *t = &g->values[g->inputs[j]].type;
        for (int d = 0; d < t->rank && d < KILN_MAX_RANK; d++)
            if (t->dims[d] < 0) return 1;
    }
    return 0;
}

int kiln_spec_wanted(const kiln_session *s) {
    return spec_on(s) && s->eps.n > 1 && inputs_symbolic(s);
}

static void refuse(const kiln_session *s, const char *why) {
    if (s->opt.verbose) fprintf(stderr, "kiln: shape specialisation off: %s\n", why);
}

void kiln_spec_init(kiln_session *s, int init_overrides) {
    if (!spec_on(s) || !inputs_symbolic(s)) return;
    kiln_model *m = s->model;
    kiln_graph *g = m->graph;
    if (init_overrides) {
        refuse(s, "initializers given in the options cannot be loaded again");
        return;
    }
    const char *path = !m->src_bytes && m->dir && m->n_maps > 0 ? m->maps[0].path : NULL;
    if (!path && !m->src_bytes) {
        refuse(s, "the model's source is not known");
        return;
    }
    int n_uses = 0;
    char why[300];
    for (int j = 0; j < g->n_inputs; j++) {
        const kiln_graph_value *gv = &g->values[g->inputs[j]];
        const kiln_type *t = &gv->type;
        for (int d = 0; d < t->rank && d < KILN_MAX_RANK; d++) {
            if (t->dims[d] >= 0) continue;
            if (t->kind != KILN_KIND_TENSOR) {
                snprintf(why, sizeof why, "input '%s' is not a tensor", gv->name);
                refuse(s, why);
                return;
            }
            int sym = KILN_DIM_IS_SYM(t->dims[d]) ? KILN_DIM_SYM_ID(t->dims[d]) : -1;
            const char *name = sym >= 0 && sym < m->n_syms ? m->syms[sym] : "";
            if (!name[0]) {
                snprintf(why, sizeof why, "input '%s' has a dimension without a name (axis %d)", gv->name, d);
                refuse(s, why);
                return;
            }
            if (strpbrk(name, ",=") || name[0] == '@') {
                snprintf(why, sizeof why, "the dimension name '%s' cannot be fixed by name", name);
                refuse(s, why);
                return;
            }
            n_uses++;
        }
    }
    struct kiln_spec_table *t = calloc(1, sizeof *t);
    if (!t) return;
    t->uses = calloc((size_t)n_uses, sizeof *t->uses);
    t->sym_of = calloc((size_t)n_uses, sizeof *t->sym_of);
    t->sizes = calloc((size_t)n_uses * SIZES_MAX, sizeof *t->sizes);
    t->n_sizes = calloc((size_t)n_uses, sizeof *t->n_sizes);
    if (path) {
        t->path = realpath(path, NULL); /* the caller's folder may change later */
    } else {
        t->bytes = m->src_bytes;
        t->size = m->src_size;
    }
    if (!t->uses || !t->sym_of || !t->sizes || !t->n_sizes || (path && !t->path)) {
        free(t->uses);
        free(t->sym_of);
        free(t->sizes);
        free(t->n_sizes);
        free(t->path);
        free(t);
        {
        refuse(s, path ? "the model's path cannot be resolved" : "out of memory");
        return;
    }
    }
    for (int j = 0; j < g->n_inputs; j++) {
        const kiln_type *ty = &g->values[g->inputs[j]].type;
        for (int d = 0; d < ty->rank && d < KILN_MAX_RANK; d++) {
            if (ty->dims[d] >= 0) continue;
            int sym = KILN_DIM_SYM_ID(ty->dims[d]), k = 0;
            while (k < t->n_keys && t->sym_of[k] != sym) k++;
            if (k == t->n_keys) t->sym_of[t->n_keys++] = sym;
            t->uses[t->n_uses++] = (spec_use){j, d, k};
        }
    }
    pthread_mutex_init(&t->mu, NULL);
    s->spec = t;
}

void kiln_spec_free(kiln_session *s) {
    struct kiln_spec_table *t = s->spec;
    if (!t) return;
    for (int i = 0; i < SPEC_MAX; i++) {
        kiln_session_close(t->child[i].s);
        free(t->child[i].key);
    }
    for (spec_seen *x = t->seen, *nx; x; x = nx) {
        nx = x->next;
        free(x->key);
        free(x);
    }
    free(t->uses);
    free(t->sym_of);
    free(t->sizes);
    free(t->n_sizes);
    free(t->path);
    pthread_mutex_destroy(&t->mu);
    free(t);
    s->spec = NULL;
}

/* Whether key ("a=1,b=2") gives name a size. */
static int key_names(const char *key, const char *name) {
    size_t n = strlen(name);
    for (const char *p = key;; p++) {
        if (!strncmp(p, name, n) && p[n] == '=') return 1;
        if (!(p = strchr(p, ','))) return 0;
    }
}

/* Records the run's size of each symbol. One that passes SIZES_MAX distinct sizes leaves the keys,
 * and the children keyed on it are closed (by their last user when in use): their keys cannot
 * come again. Then val[k] is -1 for each symbol out of the keys. */
static void note_sizes(kiln_session *s, int64_t *val) {
    struct kiln_spec_table *t = s->spec;
    kiln_session *dead[SPEC_MAX];
    char *dead_key[SPEC_MAX];
    int n_dead = 0;
    pthread_mutex_lock(&t->mu);
    for (int k = 0; k < t->n_keys; k++) {
        if (t->n_sizes[k] > SIZES_MAX) val[k] = -1;
        if (val[k] < 0) continue;
        int64_t *seen = &t->sizes[(size_t)k * SIZES_MAX];
        int i = 0;
        while (i < t->n_sizes[k] && seen[i] != val[k]) i++;
        if (i < t->n_sizes[k]) continue;
        if (t->n_sizes[k] < SIZES_MAX) {
            seen[t->n_sizes[k]++] = val[k];
            continue;
        }
        t->n_sizes[k] = SIZES_MAX + 1;
        val[k] = -1;
        const char *name = s->model->syms[t->sym_of[k]];
        if (s->opt.verbose)
            fprintf(stderr, "kiln: dimension '%s' has taken more than %d sizes: shape specialisation leaves it "
                            "symbolic from now on\n", name, SIZES_MAX);
        for (int c = 0; c < SPEC_MAX; c++) {
            spec_child *ch = &t->child[c];
            if (!ch->key || !ch->s || !key_names(ch->key, name)) continue;
            if (ch->users) {
                ch->doomed = 1;
                continue;
            }
            dead[n_dead] = ch->s;
            dead_key[n_dead++] = ch->key;
            memset(ch, 0, sizeof *ch);
        }
    }
    pthread_mutex_unlock(&t->mu);
    for (int i = 0; i < n_dead; i++) {
        kiln_session_close(dead[i]);
        free(dead_key[i]);
    }
}

/* The run's key into buf; 0: none (a name with two values, every dimension left out, or too long). */
static int make_key(kiln_session *s, const kiln_value *slots, char *buf, size_t cap) {
    struct kiln_spec_table *t = s->spec;
    int64_t small[32], *val = t->n_keys <= 32 ? small : malloc((size_t)t->n_keys * sizeof *val);
    if (!val) return 0;
    for (int k = 0; k < t->n_keys; k++) val[k] = -1;
    int ok = 1;
    for (int u = 0; u < t->n_uses && ok; u++) {
        const kiln_value *v = &slots[t->uses[u].in];
        if (v->kind != KILN_KIND_TENSOR) continue; /* an absent optional input fixes nothing */
        int64_t x = v->t.dims[t->uses[u].dim];
        int64_t *slot = &val[t->uses[u].k];
        if (*slot >= 0 && *slot != x) ok = 0;
        *slot = x;
    }
    if (!ok && s->opt.verbose) {
        pthread_mutex_lock(&t->mu);
        int first = !t->conflict_logged;
        t->conflict_logged = 1;
        pthread_mutex_unlock(&t->mu);
        if (first)
            fprintf(stderr, "kiln: not specialising a run whose inputs give one dimension name two sizes "
                            "(such runs go the generic way)\n");
    }
    if (ok) note_sizes(s, val);
    size_t len = 0;
    buf[0] = 0;
    for (int k = 0; k < t->n_keys && ok; k++) {
        if (val[k] < 0) continue;
        int n = snprintf(buf + len, cap - len, "%s%s=%lld", len ? "," : "", s->model->syms[t->sym_of[k]],
                         (long long)val[k]);
        if (n < 0 || len + (size_t)n >= cap) ok = 0;
        else len += (size_t)n;
    }
    if (val != small) free(val);
    return ok && len > 0;
}

static int same_names(const kiln_io_info *a, const kiln_io_info *b, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(a[i].name, b[i].name)) return 0;
    return 1;
}

/* Loads the model again and opens it with the key's dimensions fixed. */
static kiln_session *open_child(kiln_session *s, const char *key, kiln_err *e) {
    struct kiln_spec_table *t = s->spec;
    kiln_model *m;
    kiln_status st = t->path ? kiln_model_load_file(t->path, &m, e) : kiln_model_load_bytes(t->bytes, t->size, &m, e);
    if (st) return NULL;
    size_t l = (s->dim_spec ? strlen(s->dim_spec) : 0) + strlen(key) + 2;
    char *dims = malloc(l);
    if (!dims) {
        kiln_model_free(m);
        kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
        return NULL;
    }
    snprintf(dims, l, "%s%s%s", s->dim_spec ? s->dim_spec : "", s->dim_spec ? "," : "", key);
    kiln_options opt = s->opt;
    opt.dim_overrides = dims;
    opt.verbose = 0; /* the parent says what matters in one line */
    opt.specialize = -1;
    opt.n_initializers = 0;
    opt.optimized_model_path = opt.optimized_model_external_data = NULL;
    kiln_session *c = NULL;
    st = kiln_session_open_child(s, m, &opt, &c, e);
    free(dims);
    if (st) return NULL;
    if (c->n_inputs != s->n_inputs || c->n_outputs != s->n_outputs || !same_names(c->inputs, s->inputs, s->n_inputs) ||
        !same_names(c->outputs, s->outputs, s->n_outputs)) {
        kiln_fail(e, KILN_ERR_RUNTIME, "its inputs or outputs differ from the session's");
        kiln_session_close(c);
        return NULL;
    }
    return c;
}

static spec_seen *find_seen(struct kiln_spec_table *t, const char *key) {
    for (spec_seen *x = t->seen; x; x = x->next)
        if (!strcmp(x->key, key)) return x;
    return NULL;
}

/* Remembers key (t->mu held); beyond SEEN_MAX the least recently used key is forgotten. */
static void add_seen(struct kiln_spec_table *t, const char *key, int refused) {
    spec_seen *x = calloc(1, sizeof *x);
    if (!x || !(x->key = strdup(key))) {
        free(x);
        return;
    }
    x->refused = refused;
    x->used = ++t->tick;
    x->next = t->seen;
    t->seen = x;
    if (++t->n_seen <= SEEN_MAX) return;
    spec_seen **old = &t->seen;
    for (spec_seen **pp = &t->seen; *pp; pp = &(*pp)->next)
        if ((*pp)->used < (*old)->used) old = pp;
    spec_seen *dead = *old;
    *old = dead->next;
    free(dead->key);
    free(dead);
    t->n_seen--;
}

static void drop_seen(struct kiln_spec_table *t, spec_seen *x) {
    for (spec_seen **pp = &t->seen; *pp; pp = &(*pp)->next)
        if (*pp == x) {
            *pp = x->next;
            break;
        }
    free(x->key);
    free(x);
    t->n_seen--;
}

static int live_count(kiln_session *s) { return (int)kiln_session_node_count(s); }

kiln_session *kiln_spec_take(kiln_session *s, const kiln_value *slots) {
    struct kiln_spec_table *t = s->spec;
    char key[KEY_MAX];
    if (!make_key(s, slots, key, sizeof key)) return NULL;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < SPEC_MAX; i++) {
        spec_child *c = &t->child[i];
        if (!c->key || strcmp(c->key, key)) continue;
        kiln_session *run = c->s && !c->doomed ? c->s : NULL; /* NULL: opening, or failed */
        if (run) {
            c->users++;
            c->used = ++t->tick;
        }
        pthread_mutex_unlock(&t->mu);
        return run;
    }
    spec_seen *x = find_seen(t, key);
    if (!x || x->refused) {
        if (!x) add_seen(t, key, 0);
        else x->used = ++t->tick;
        pthread_mutex_unlock(&t->mu);
        return NULL;
    }
    x->runs++;
    /* the second run of this shape: a slot, free or the least recently used idle child's */
    int slot = -1;
    for (int i = 0; i < SPEC_MAX && slot < 0; i++)
        if (!t->child[i].key) slot = i;
    int full = slot < 0;
    if (!t->evict_need) t->evict_need = 2;
    if (full && x->runs + 1 < t->evict_need) { /* not yet worth a slot another shape holds */
        x->used = ++t->tick;
        pthread_mutex_unlock(&t->mu);
        return NULL;
    }
    for (int i = 0; i < SPEC_MAX && full; i++) {
        spec_child *c = &t->child[i];
        if (c->s && !c->users && (slot < 0 || c->used < t->child[slot].used)) slot = i;
    }
    if (slot < 0) { /* every child is running: try again on a later run */
        x->used = ++t->tick;
        pthread_mutex_unlock(&t->mu);
        return NULL;
    }
    if (full && t->evict_need < (1u << 20)) t->evict_need *= 2;
    spec_child victim = t->child[slot];
    spec_child *c = &t->child[slot];
    memset(c, 0, sizeof *c);
    c->key = x->key; /* the key moves from the seen list to the slot */
    x->key = NULL;
    drop_seen(t, x);
    c->used = ++t->tick;
    pthread_mutex_unlock(&t->mu);
    if (victim.key) {
        if (s->opt.verbose) fprintf(stderr, "kiln: closing the specialisation for %s (least recently used)\n", victim.key);
        kiln_session_close(victim.s);
        free(victim.key);
    }
    double t0 = kiln_trace_now();
    kiln_err e = {0};
    kiln_session *child = open_child(s, key, &e);
    double ms = (kiln_trace_now() - t0) * 1e3;
    pthread_mutex_lock(&t->mu);
    if (child) {
        c->s = child;
        c->users = 1;
    } else {
        free(c->key);
        memset(c, 0, sizeof *c);
        add_seen(t, key, 1);
    }
    pthread_mutex_unlock(&t->mu);
    if (s->opt.verbose && child)
        fprintf(stderr, "kiln: specialised for %s: %d nodes (was %d), graph capture %s, %d constants shared "
                        "(opened in %.1f ms)\n", key, live_count(child), live_count(s), child->capture_on ? "on" : "off",
                child->holds.shared, ms);
    else if (s->opt.verbose)
        fprintf(stderr, "kiln: not specialising for %s: %s\n", key, e.msg);
    return child;
}

void kiln_spec_give(kiln_session *s, kiln_session *child, int failed) {
    struct kiln_spec_table *t = s->spec;
    kiln_session *dead = NULL;
    char *dead_key = NULL;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < SPEC_MAX; i++) {
        spec_child *c = &t->child[i];
        if (c->s != child) continue;
        c->users--;
        if (failed && !c->doomed) {
            c->doomed = 1;
            add_seen(t, c->key, 1);
        }
        if (c->doomed && !c->users) {
            dead = c->s;
            dead_key = c->key;
            memset(c, 0, sizeof *c);
        }
        break;
    }
    pthread_mutex_unlock(&t->mu);
    if (dead && failed && s->opt.verbose)
        fprintf(stderr, "kiln: not specialising for %s any more: its run failed where the generic run did not\n",
                dead_key);
    kiln_session_close(dead);
    free(dead_key);
}

void kiln_spec_release_memory(kiln_session *s) {
    struct kiln_spec_table *t = s->spec;
    if (!t) return;
    /* a child is not closed while the table names it, and it is not freed under the lock: hold
     * each as a user while its memory is given back */
    for (int i = 0; i < SPEC_MAX; i++) {
        pthread_mutex_lock(&t->mu);
        kiln_session *c = t->child[i].s && !t->child[i].doomed ? t->child[i].s : NULL;
        if (c) t->child[i].users++;
        pthread_mutex_unlock(&t->mu);
        if (!c) continue;
        kiln_session_release_memory(c);
        kiln_spec_give(s, c, 0);
    }
}

int kiln_session_specializations(const kiln_session *s) {
    if (!s || !s->spec) return 0;
    struct kiln_spec_table *t = s->spec;
    int n = 0;
    pthread_mutex_lock(&t->mu);
    for (int i = 0; i < SPEC_MAX; i++) n += t->child[i].s != NULL && !t->child[i].doomed;
    pthread_mutex_unlock(&t->mu);
    return n;
}
