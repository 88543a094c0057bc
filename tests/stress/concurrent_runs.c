/* Stress test of concurrent runs on one session: each model gets one session that T threads run
 * at once, each thread picking feeds (with different shapes) in its own order; every output is
 * compared bitwise with what a separate session gave for the same feed, one run at a time.
 * One thread also drops the session's plans and frames now and then (kiln_session_release_memory)
 * while the others run. tests/test_concurrent_runs.py writes the models and feeds and runs this,
 * and scripts/tsan.sh runs it under ThreadSanitizer.
 *
 *   test_concurrent_runs [-t threads] [-n runs per thread] [-j intra-op threads]
 *                        model.onnx feeds.npz [feeds.npz ...] [-- model.onnx feeds.npz ...]
 */
#include "kiln.h"
#include "npy.h"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_MODELS 16
#define MAX_FEEDS 32

typedef struct feed {
    npz_entry *e;
    int n;
    const char **names;
    kiln_tensor_desc *desc;
    kiln_value **ref;   /* outputs of the reference session */
    size_t n_out;
} feed;

typedef struct model {
    const char *path;
    kiln_session *s;    /* shared by the threads */
    feed feeds[MAX_FEEDS];
    int n_feeds;
} model;

static model models[MAX_MODELS];
static int n_models, runs_per_thread = 50, intra_threads = 1, specialize;

typedef struct worker {
    int id;
    long runs, failures;
    char first[1024];   /* the first failure, for the report */
} worker;

static int load_feed(feed *f, const char *path) {
    char err[512];
    if (npz_read_file(path, &f->e, &f->n, err, sizeof err)) {
        fprintf(stderr, "%s: %s\n", path, err);
        return -1;
    }
    f->names = calloc((size_t)f->n + 1, sizeof *f->names);
    f->desc = calloc((size_t)f->n + 1, sizeof *f->desc);
    if (!f->names || !f->desc) return -1;
    for (int i = 0; i < f->n; i++) {
        kiln_tensor *t = &f->e[i].t;
        f->names[i] = f->e[i].name;
        f->desc[i] = (kiln_tensor_desc){(kiln_dtype)t->dtype, t->rank, t->dims, t->data, KILN_MEMORY_HOST};
    }
    return 0;
}

static kiln_status run_feed(kiln_session *s, const feed *f, kiln_value **out) {
    return kiln_run(s, (size_t)f->n, f->names, f->desc, 0, NULL, out);
}

/* 0 when a and b hold the same bits (strings: the same characters). */
static int same_value(const kiln_value *a, const kiln_value *b, char *why, size_t cap) {
    if (kiln_value_kind(a) != kiln_value_kind(b) || kiln_value_dtype(a) != kiln_value_dtype(b) ||
        kiln_value_rank(a) != kiln_value_rank(b)) {
        snprintf(why, cap, "kind, type or rank differs");
        return 1;
    }
    if (kiln_value_kind(a) == KILN_VALUE_SEQUENCE) {
        size_t n = kiln_value_sequence_length(a);
        if (n != kiln_value_sequence_length(b)) {
            snprintf(why, cap, "sequence length differs");
            return 1;
        }
        for (size_t i = 0; i < n; i++) {
            /* kiln_value_item's view lasts until the thread's next call: copy what it says */
            kiln_value *x = NULL;
            if (kiln_value_to_host(kiln_value_item(a, i), &x)) {
                snprintf(why, cap, "cannot copy sequence item %zu", i);
                return 1;
            }
            int d = same_value(x, kiln_value_item(b, i), why, cap);
            kiln_value_free(x);
            if (d) return 1;
        }
        return 0;
    }
    int rank = kiln_value_rank(a);
    for (int d = 0; d < rank; d++)
        if (kiln_value_dims(a)[d] != kiln_value_dims(b)[d]) {
            snprintf(why, cap, "dimension %d is %lld, not %lld", d, (long long)kiln_value_dims(a)[d],
                     (long long)kiln_value_dims(b)[d]);
            return 1;
        }
    if (kiln_value_dtype(a) == KILN_DTYPE_STRING) {
        int64_t n = 1;
        for (int d = 0; d < rank; d++) n *= kiln_value_dims(a)[d];
        const char *const *x = kiln_value_data(a), *const *y = kiln_value_data(b);
        for (int64_t i = 0; i < n; i++)
            if (strcmp(x[i], y[i])) {
                snprintf(why, cap, "string %lld is '%s', not '%s'", (long long)i, x[i], y[i]);
                return 1;
            }
        return 0;
    }
    size_t bytes = kiln_value_nbytes(a);
    if (bytes != kiln_value_nbytes(b) || (bytes && memcmp(kiln_value_data(a), kiln_value_data(b), bytes))) {
        snprintf(why, cap, "the bytes differ");
        return 1;
    }
    return 0;
}

static void fail(worker *w, const char *fmt, const char *a, const char *b) {
    if (!w->failures++) snprintf(w->first, sizeof w->first, fmt, a, b);
}

static void *work(void *arg) {
    worker *w = arg;
    unsigned x = 2654435761u * (unsigned)(w->id + 1);
    kiln_value *out[64];
    for (int r = 0; r < runs_per_thread; r++) {
        x = x * 1664525u + 1013904223u;
        model *m = &models[(x >> 8) % (unsigned)n_models];
        feed *f = &m->feeds[(x >> 16) % (unsigned)m->n_feeds];
        /* one thread takes the plans and frames away under the others now and then */
        if (w->id == 0 && r % 16 == 15) kiln_session_release_memory(m->s);
        if (run_feed(m->s, f, out)) {
            fail(w, "%s: %s", m->path, kiln_last_error());
            continue;
        }
        w->runs++;
        for (size_t k = 0; k < f->n_out; k++) {
            char why[512];
            if (same_value(out[k], f->ref[k], why, sizeof why)) fail(w, "%s: an output differs: %s", m->path, why);
            kiln_value_free(out[k]);
        }
    }
    return NULL;
}

static kiln_session *open_session(const char *path) {
    kiln_options opt;
    kiln_options_init(&opt);
    opt.threads = intra_threads;
    opt.specialize = specialize;
    kiln_session *s;
    if (kiln_session_open(path, &opt, &s)) {
        fprintf(stderr, "%s: %s\n", path, kiln_last_error());
        return NULL;
    }
    return s;
}

int main(int argc, char **argv) {
    int threads = 8, i = 1;
    for (; i + 1 < argc && argv[i][0] == '-' && argv[i][1] && !argv[i][2]; i += 2) {
        if (argv[i][1] == 't') threads = atoi(argv[i + 1]);
        else if (argv[i][1] == 'n') runs_per_thread = atoi(argv[i + 1]);
        else if (argv[i][1] == 'j') intra_threads = atoi(argv[i + 1]);
        else if (argv[i][1] == 's') specialize = atoi(argv[i + 1]);
        else break;
    }
    for (; i < argc; i++) {
        if (!strcmp(argv[i], "--")) continue;
        if (n_models == MAX_MODELS) return fprintf(stderr, "too many models\n"), 2;
        model *m = &models[n_models++];
        m->path = argv[i];
        while (i + 1 < argc && strcmp(argv[i + 1], "--") && m->n_feeds < MAX_FEEDS)
            if (load_feed(&m->feeds[m->n_feeds++], argv[++i])) return 2;
        if (!m->n_feeds) return fprintf(stderr, "%s: no feeds\n", m->path), 2;
    }
    if (!n_models || threads < 1 || threads > 256 || runs_per_thread < 1) {
        fprintf(stderr, "usage: %s [-t threads] [-n runs] [-j intra-op threads] [-s specialize] model.onnx feeds.npz ... "
                        "[-- model.onnx feeds.npz ...]\n", argv[0]);
        return 2;
    }
    /* references: a session of its own, one run at a time */
    for (int k = 0; k < n_models; k++) {
        model *m = &models[k];
        kiln_session *ref = open_session(m->path);
        if (!ref || !(m->s = open_session(m->path))) return 2;
        for (int j = 0; j < m->n_feeds; j++) {
            feed *f = &m->feeds[j];
            f->n_out = kiln_session_output_count(ref);
            if (f->n_out > 64) return fprintf(stderr, "%s: too many outputs\n", m->path), 2;
            f->ref = calloc(f->n_out + 1, sizeof *f->ref);
            /* with specialisation the second run of a shape is its child's, which the threads' runs
             * are compared with (their first runs, racing, go the generic way or the child's) */
            if (f->ref && specialize > 0 && !run_feed(ref, f, f->ref))
                for (size_t o = 0; o < f->n_out; o++) kiln_value_free(f->ref[o]);
            if (!f->ref || run_feed(ref, f, f->ref)) {
                fprintf(stderr, "%s: reference run: %s\n", m->path, kiln_last_error());
                return 2;
            }
        }
        kiln_session_close(ref);
    }
    pthread_t tid[256];
    worker w[256];
    for (int t = 0; t < threads; t++) {
        memset(&w[t], 0, sizeof w[t]);
        w[t].id = t;
        if (pthread_create(&tid[t], NULL, work, &w[t])) return fprintf(stderr, "pthread_create failed\n"), 2;
    }
    long runs = 0, failures = 0;
    for (int t = 0; t < threads; t++) {
        pthread_join(tid[t], NULL);
        runs += w[t].runs;
        failures += w[t].failures;
        if (w[t].failures) fprintf(stderr, "thread %d: %ld failures, the first: %s\n", t, w[t].failures, w[t].first);
    }
    for (int k = 0; k < n_models; k++) {
        model *m = &models[k];
        for (int j = 0; j < m->n_feeds; j++) {
            feed *f = &m->feeds[j];
            for (size_t o = 0; o < f->n_out; o++) kiln_value_free(f->ref[o]);
            free(f->ref);
            free(f->names);
            free(f->desc);
            npz_free(f->e, f->n);
        }
        kiln_session_close(m->s);
    }
    printf("concurrent_runs: %ld runs on %d threads over %d models, %ld failures\n", runs, threads, n_models, failures);
    return failures || runs != (long)threads * runs_per_thread ? 1 : 0;
}
