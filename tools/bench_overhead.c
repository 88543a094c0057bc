/* kiln bench's runtime overheads, independent of the model: the cost of one parallel-for on the
 * session's pool, and the runtime's cost per node (a chain of tiny Add nodes, where the kernels'
 * own work is a few nanoseconds, so the time per node is the runner's). */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a minimal protobuf writer for the synthetic ONNX model ---- */

typedef struct pbuf { unsigned char *p; size_t n, cap; int oom; } pbuf;

static void pb_bytes(pbuf *b, const void *src, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 256) + n;
        unsigned char *q = realloc(b->p, cap);
        if (!q) { b->oom = 1; return; }
        b->p = q, b->cap = cap;
    }
    memcpy(b->p + b->n, src, n);
    b->n += n;
}

static void pb_varint(pbuf *b, uint64_t v) {
    unsigned char tmp[10];
    int k = 0;
    do { tmp[k++] = (unsigned char)((v & 0x7f) | (v > 0x7f ? 0x80 : 0)); v >>= 7; } while (v);
    pb_bytes(b, tmp, (size_t)k);
}

static void pb_int(pbuf *b, int field, uint64_t v) { pb_varint(b, (uint64_t)field << 3); pb_varint(b, v); }

static void pb_len(pbuf *b, int field, const void *data, size_t n) {
    pb_varint(b, (uint64_t)field << 3 | 2);
    pb_varint(b, n);
    pb_bytes(b, data, n);
}

static void pb_str(pbuf *b, int field, const char *s) { pb_len(b, field, s, strlen(s)); }

static void pb_msg(pbuf *b, int field, pbuf *m) {
    if (m->oom) b->oom = 1;
    pb_len(b, field, m->p, m->n);
    free(m->p);
    memset(m, 0, sizeof *m);
}

/* ValueInfoProto: float tensor of shape [1, width] */
static void value_info(pbuf *b, int field, const char *name, int width) {
    pbuf vi = {0}, tp = {0}, tt = {0}, sh = {0}, d = {0};
    pb_int(&d, 1, 1);
    pb_msg(&sh, 1, &d);
    pb_int(&d, 1, (uint64_t)width);
    pb_msg(&sh, 1, &d);
    pb_int(&tt, 1, KILN_DTYPE_FLOAT);
    pb_msg(&tt, 2, &sh);
    pb_msg(&tp, 1, &tt);
    pb_str(&vi, 1, name);
    pb_msg(&vi, 2, &tp);
    pb_msg(b, field, &vi);
}

/* y = x + c + c + ... : n Add nodes on [1, width] floats */
static int chain_model(int n, int width, pbuf *model) {
    pbuf g = {0}, node = {0}, init = {0}, op = {0};
    char in[32], out[32];
    for (int i = 0; i < n; i++) {
        snprintf(in, sizeof in, i ? "t%d" : "x", i);
        snprintf(out, sizeof out, i == n - 1 ? "y" : "t%d", i + 1);
        pb_str(&node, 1, in);
        pb_str(&node, 1, "c");
        pb_str(&node, 2, out);
        pb_str(&node, 3, out);
        pb_str(&node, 4, "Add");
        pb_msg(&g, 1, &node);
    }
    pb_str(&g, 2, "chain");
    pb_int(&init, 1, 1);
    pb_int(&init, 1, (uint64_t)width);
    pb_int(&init, 2, KILN_DTYPE_FLOAT);
    pb_str(&init, 8, "c");
    float *c = malloc((size_t)width * sizeof *c);
    if (!c) return -1;
    for (int k = 0; k < width; k++) c[k] = 1e-3f * (float)(k + 1);
    pb_len(&init, 9, c, (size_t)width * sizeof *c);
    free(c);
    pb_msg(&g, 5, &init);
    value_info(&g, 11, "x", width);
    value_info(&g, 12, "y", width);
    pb_int(model, 1, 8); /* ir_version */
    pb_int(&op, 2, 17);  /* opset_import { domain "" version 17 } */
    pb_msg(model, 8, &op);
    pb_msg(model, 7, &g);
    return model->oom ? -1 : 0;
}

/* ---- parallel-for ---- */

typedef struct spin_job { int64_t iters; volatile double sink; } spin_job;

/* each chunk index is a fixed amount of arithmetic, the same on every thread */
static void spin_chunks(void *arg, int64_t b, int64_t e) {
    spin_job *j = arg;
    double x = 1.0;
    for (int64_t c = b; c < e; c++)
        for (int64_t i = 0; i < j->iters; i++) x = x * 0.999999 + 1e-9;
    j->sink = x;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* One parallel-for of one chunk per thread, each chunk CHUNK_US of work: what the call takes
 * beyond the chunk itself is the cost of handing work out and waiting for it (median of
 * batches of back-to-back calls, as a model runs its parallel ops). */
double cli_parallel_for_us(kiln_session *s) {
    enum { BATCHES = 21, PER = 200 };
    const double CHUNK_US = 5.0;
    int nt = kiln_threadpool_size(s->tp);
    spin_job j = {1000, 0};
    double t0 = cli_now();
    spin_chunks(&j, 0, 100);
    double per_iter_us = (cli_now() - t0) * 1e6 / (100.0 * 1000);
    j.iters = (int64_t)(CHUNK_US / per_iter_us) + 1;
    double serial[BATCHES], par[BATCHES];
    for (int w = 0; w < 50; w++) kiln_threadpool_run(s->tp, nt, 1, spin_chunks, &j);
    for (int k = 0; k < BATCHES; k++) {
        t0 = cli_now();
        for (int i = 0; i < PER; i++) spin_chunks(&j, 0, 1);
        serial[k] = (cli_now() - t0) * 1e6 / PER;
        t0 = cli_now();
        for (int i = 0; i < PER; i++) kiln_threadpool_run(s->tp, nt, 1, spin_chunks, &j);
        par[k] = (cli_now() - t0) * 1e6 / PER;
    }
    qsort(serial, BATCHES, sizeof serial[0], cmp_d);
    qsort(par, BATCHES, sizeof par[0], cmp_d);
    double d = par[BATCHES / 2] - serial[BATCHES / 2];
    return d > 0 ? d : 0;
}

/* ---- per node ---- */

/* Median microseconds of one run of a chain of n tiny Add nodes; -1 on failure. */
static double chain_run_us(int threads, int n) {
    enum { WIDTH = 16, RUNS = 200, BATCHES = 9 };
    pbuf m = {0};
    if (chain_model(n, WIDTH, &m)) { free(m.p); return -1; }
    kiln_options opt;
    kiln_options_init(&opt);
    opt.threads = threads;
    opt.opt_level = 1; /* no fusions: every Add stays a node */
    kiln_session *s;
    /* the session may keep pointing into the model's bytes (initializer data): free them after it */
    kiln_status st = kiln_session_open_bytes(m.p, m.n, &opt, &s);
    if (st) {
        fprintf(stderr, "kiln: per-node benchmark: %s\n", kiln_last_error());
        free(m.p);
        return -1;
    }
    float x[WIDTH];
    for (int k = 0; k < WIDTH; k++) x[k] = (float)k;
    int64_t dims[2] = {1, WIDTH};
    kiln_tensor_desc in = {KILN_DTYPE_FLOAT, 2, dims, x, 0};
    const char *names[1] = {"x"}, *outs[1] = {"y"};
    double t[BATCHES];
    for (int k = -1; k < BATCHES; k++) { /* batch -1 warms up (plans the arena) */
        double t0 = cli_now();
        for (int r = 0; r < RUNS; r++) {
            kiln_value *out[1] = {NULL};
            if (kiln_run(s, 1, names, &in, 1, outs, out)) {
                fprintf(stderr, "kiln: per-node benchmark: %s\n", kiln_session_error(s));
                kiln_session_close(s);
                free(m.p);
                return -1;
            }
            kiln_value_free(out[0]);
        }
        if (k >= 0) t[k] = (cli_now() - t0) * 1e6 / RUNS;
    }
    kiln_session_close(s);
    free(m.p);
    qsort(t, BATCHES, sizeof t[0], cmp_d);
    return t[BATCHES / 2];
}

/* What each node adds to a run: the difference between chains of n and 1 nodes, per node (the
 * run's fixed cost, inputs and outputs, cancels out). */
double cli_per_node_us(int threads, int n) {
    double big = chain_run_us(threads, n), one = chain_run_us(threads, 1);
    if (big < 0 || one < 0) return -1;
    return (big - one) / (n - 1);
}

void cli_print_overheads(kiln_session *s, int threads) {
    printf("parallel-for: %.2f us (%d threads)\n", cli_parallel_for_us(s), kiln_threadpool_size(s->tp));
    const int n = 200;
    double pn = cli_per_node_us(threads, n);
    if (pn >= 0) printf("per-node overhead: %.3f us (chain of %d tiny Add nodes)\n", pn, n);
}
