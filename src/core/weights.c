/* Weights held once. A MatMul, Gemm or Conv whose weight is a constant packs it at init into the
 * layout its product reads (kiln_input_packed), after which the original bytes are never read by
 * that kernel again. Initializers stay in the mapped model file, so keeping both made every such
 * weight count twice in the process's memory (BERT-base: 901 MB against ONNX Runtime's 699).
 * The pages of a constant whose every use was packed are handed back to the kernel with
 * MADV_DONTNEED. This is safe whatever reads them later (an unfused fallback, a device upload):
 * the mapping is private, read-only and never written, so a dropped page is read again from the
 * file on its next touch.
 * Most initializers of exported models are misaligned in the file and were copied to the heap at
 * load (the file's pages were dropped then). Such a copy is freed, and the value points back at
 * its bytes in the file, so it stays readable; every kernel that packed it has its note of the
 * bytes (kiln_input_packed's src_note) moved along, so it still recognises the constant. Other
 * heap constants (folded values, caller-supplied initializers) are kept.
 * When does this happen: a CPU-only session hands each constant back as soon as its last
 * consumer has packed it during the final preparation (kiln_weights_watch), so that the peak
 * while opening holds the weights once plus one packed copy being made, not all of both; the
 * rest (and every constant of a session with a device provider, whose placement may still give a
 * packed node's input to the device) waits for the session to be ready. */
#include "session.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "dtype.h"
#include <sys/mman.h>
#include <unistd.h>

enum { WATCH_OFF = -1, WATCH_RELEASED = -2 };

struct kiln_weight_watch {
    int n_values, n_nodes;
    int *left;              /* per value: uses not yet packed (or WATCH_OFF, WATCH_RELEASED) */
    unsigned char *counted; /* per node of the main graph: its uses are counted in left */
    size_t released;
};

static const void *file_bytes_of(const kiln_model *m, const void *heap) {
    for (int i = 0; i < m->n_copies; i++)
        if (m->copies[i].heap == heap) return m->copies[i].file;
    return NULL;
}

static const kiln_mapping *mapping_of(const kiln_model *m, const void *p, size_t bytes) {
    uintptr_t a = (uintptr_t)p;
    for (int i = 0; i < m->n_maps; i++) {
        uintptr_t lo = (uintptr_t)m->maps[i].addr;
        if (m->maps[i].addr && a >= lo && a - lo <= m->maps[i].size && bytes <= m->maps[i].size - (a - lo))
            return &m->maps[i];
    }
    return NULL;
}

/* Every live consumer of value v noted the bytes it packed, and noted these. */
static int moves_with(const kiln_graph *g, int v, const void *data) {
    for (int ni = 0; ni < g->n_nodes; ni++) {
        const kiln_node *n = &g->nodes[ni];
        for (int i = 0; !n->removed && i < n->n_in; i++)
            if (n->in[i] == v && (!n->packed_src || *n->packed_src != data)) return 0;
    }
    return 1;
}

/* Hands back constant v of the main graph, which no live node reads but through its packed copy;
 * returns the bytes given back. */
static size_t release_value(kiln_model *m, int v) {
    kiln_graph *g = m->graph;
    const kiln_tensor *t = &g->values[v].konst.t;
    if (g->values[v].konst.kind != KILN_KIND_TENSOR || !t->data) return 0;
    int64_t n = kiln_numel(t);
    if (n <= 0) return 0;
    size_t bytes = kiln_dtype_bytes(t->dtype, n);
    if (!mapping_of(m, t->data, bytes)) {
        const void *file = t->owner == t->data ? file_bytes_of(m, t->data) : NULL;
        /* only bytes of a mapped file outlive the load (a model given as bytes is the caller's) */
        if (!file || !mapping_of(m, file, bytes) || !moves_with(g, v, t->data)) return 0;
        for (int ni = 0; ni < g->n_nodes; ni++) {
            kiln_node *nd = &g->nodes[ni];
            for (int i = 0; !nd->removed && i < nd->n_in; i++)
                if (nd->in[i] == v && *nd->packed_src == t->data) *nd->packed_src = file;
        }
        kiln_graph_value *w = &g->values[v];
        free(w->konst.t.owner);
        w->konst.t.owner = NULL;
        w->konst.t.data = (void *)file;
        return bytes;
    }
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) page = 4096;
    uintptr_t lo = ((uintptr_t)t->data + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
    uintptr_t hi = ((uintptr_t)t->data + bytes) & ~((uintptr_t)page - 1);
    return hi > lo && !madvise((void *)lo, hi - lo, MADV_DONTNEED) ? hi - lo : 0;
}

static int packed_input(const kiln_node *n, int i) {
    return i < 64 && (n->packed_inputs >> i & 1) && (!n->kernel || n->ep == 0);
}

void kiln_weights_watch(kiln_session *s) {
    kiln_graph *g = s->model->graph;
    int nv = g->n_values, nn = g->n_nodes;
    struct kiln_weight_watch *w = calloc(1, sizeof *w + (size_t)(nv ? nv : 1) * sizeof(int) + (size_t)(nn ? nn : 1));
    if (!w) return;
    w->n_values = nv;
    w->n_nodes = nn;
    w->left = (int *)(w + 1);
    w->counted = (unsigned char *)(w->left + (nv ? nv : 1));
    for (int v = 0; v < nv; v++) w->left[v] = g->values[v].is_const ? 0 : WATCH_OFF;
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] >= 0 && g->outputs[i] < nv) w->left[g->outputs[i]] = WATCH_OFF;
    for (int ni = 0; ni < nn; ni++) {
        const kiln_node *n = &g->nodes[ni];
        if (n->removed) continue;
        w->counted[ni] = 1;
        for (int i = 0; i < n->n_in; i++)
            if (n->in[i] >= 0 && n->in[i] < nv && w->left[n->in[i]] >= 0) w->left[n->in[i]]++;
        /* a subgraph's read is never packed: its constant stays */
        for (int i = 0; i < n->n_implicit; i++)
            if (n->implicit[i] >= 0 && n->implicit[i] < nv) w->left[n->implicit[i]] = WATCH_OFF;
    }
    /* a constant already without readers is someone else's business (kiln_release_packed_weights
     * never touched those either) */
    for (int v = 0; v < nv; v++)
        if (!w->left[v]) w->left[v] = WATCH_OFF;
    s->weights = w;
}

void kiln_weights_node_ready(kiln_session *s, const kiln_graph *g, int ni) {
    struct kiln_weight_watch *w = s->weights;
    if (!w || g != s->model->graph || ni >= w->n_nodes || !w->counted[ni]) return;
    w->counted[ni] = 0;
    const kiln_node *n = &g->nodes[ni];
    for (int i = 0; i < n->n_in; i++) {
        int v = n->in[i];
        if (v < 0 || v >= w->n_values || w->left[v] <= 0) continue;
        /* a node folded away no longer reads it either */
        if (!n->removed && !packed_input(n, i)) continue;
        if (--w->left[v]) continue;
        /* packed by every consumer that is left */
        w->released += release_value(s->model, v);
        w->left[v] = WATCH_RELEASED;
    }
}

void kiln_release_packed_weights(kiln_session *s) {
    kiln_model *m = s->model;
    kiln_graph *g = m->graph;
    struct kiln_weight_watch *w = s->weights;
    int nv = g->n_values;
    /* per value: uses by live nodes, and how many of them packed it */
    int *uses = calloc((size_t)(nv ? nv : 1) * 2, sizeof *uses);
    size_t packed_bytes = 0, released = w ? w->released : 0;
    for (int ni = 0; ni < g->n_nodes; ni++) {
        const kiln_node *n = &g->nodes[ni];
        if (n->removed) continue;
        packed_bytes += n->packed_bytes;
        for (int i = 0; uses && i < n->n_in; i++) {
            int v = n->in[i];
            if (v < 0 || v >= nv) continue;
            uses[v]++;
            if (packed_input(n, i)) uses[nv + v]++;
        }
        for (int i = 0; uses && i < n->n_implicit; i++)
            if (n->implicit[i] >= 0 && n->implicit[i] < nv) uses[n->implicit[i]]++;
    }
    for (int i = 0; uses && i < g->n_outputs; i++)
        if (g->outputs[i] >= 0 && g->outputs[i] < nv) uses[g->outputs[i]]++;
    for (int v = 0; uses && v < nv; v++) {
        if (w && v < w->n_values && w->left[v] == WATCH_RELEASED) continue;
        if (g->values[v].is_const && uses[v] && uses[nv + v] == uses[v]) released += release_value(m, v);
    }
    free(uses);
    free(s->weights);
    s->weights = NULL;
    m->packed_bytes = packed_bytes;
    m->released_init_bytes = released;
}
