/* Weights held once. A MatMul, Gemm or Conv whose weight is a constant packs it at init into the
 * layout its product reads (kiln_input_packed), after which the original bytes are never read by
 * that kernel again. Initializers stay in the mapped model file, so keeping both made every such
 * weight count twice in the process's memory (BERT-base: 901 MB against ONNX Runtime's 699).
 * Once the session is ready, the pages of a constant whose every use was packed are handed back
 * to the kernel with MADV_DONTNEED. This is safe whatever reads them later (an unfused fallback,
 * a device upload): the mapping is private, read-only and never written, so a dropped page is read
 * again from the file on its next touch.
 * Most initializers of exported models are misaligned in the file and were copied to the heap at
 * load (the file's pages were dropped then). Such a copy is freed, and the value points back at
 * its bytes in the file, so it stays readable; every kernel that packed it has its note of the
 * bytes (kiln_input_packed's src_note) moved along, so it still recognises the constant. Other
 * heap constants (folded values, caller-supplied initializers) are kept. */
#include "session.h"
#include <stdint.h>
#include <stdlib.h>
#include "dtype.h"
#include <sys/mman.h>
#include <unistd.h>

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

void kiln_release_packed_weights(kiln_model *m) {
    kiln_graph *g = m->graph;
    int nv = g->n_values;
    /* per value: uses by live nodes, and how many of them packed it */
    int *uses = calloc((size_t)(nv ? nv : 1) * 2, sizeof *uses);
    if (!uses) return; /* an optimisation only */
    int *packed = uses + nv;
    size_t packed_bytes = 0;
    for (int ni = 0; ni < g->n_nodes; ni++) {
        const kiln_node *n = &g->nodes[ni];
        if (n->removed) continue;
        packed_bytes += n->packed_bytes;
        for (int i = 0; i < n->n_in; i++) {
            int v = n->in[i];
            if (v < 0 || v >= nv) continue;
            uses[v]++;
            if (i < 64 && (n->packed_inputs >> i & 1) && (!n->kernel || n->ep == 0)) packed[v]++;
        }
        for (int i = 0; i < n->n_implicit; i++)
            if (n->implicit[i] >= 0 && n->implicit[i] < nv) uses[n->implicit[i]]++;
    }
    for (int i = 0; i < g->n_outputs; i++)
        if (g->outputs[i] >= 0 && g->outputs[i] < nv) uses[g->outputs[i]]++;
    long page = sysconf(_SC_PAGESIZE);
    if (page <= 0) page = 4096;
    size_t released = 0;
    for (int v = 0; v < nv; v++) {
        const kiln_graph_value *gv = &g->values[v];
        if (!gv->is_const || !uses[v] || packed[v] != uses[v]) continue;
        const kiln_tensor *t = &gv->konst.t;
        if (gv->konst.kind != KILN_KIND_TENSOR || !t->data) continue;
        int64_t n = kiln_numel(t);
        if (n <= 0) continue;
        size_t bytes = kiln_dtype_bytes(t->dtype, n);
        if (!mapping_of(m, t->data, bytes)) {
            const void *file = t->owner == t->data ? file_bytes_of(m, t->data) : NULL;
            /* only bytes of a mapped file outlive the load (a model given as bytes is the caller's) */
            if (!file || !mapping_of(m, file, bytes) || !moves_with(g, v, t->data)) continue;
            for (int ni = 0; ni < g->n_nodes; ni++) {
                kiln_node *n = &g->nodes[ni];
                for (int i = 0; !n->removed && i < n->n_in; i++)
                    if (n->in[i] == v && *n->packed_src == t->data) *n->packed_src = file;
            }
            kiln_graph_value *w = &g->values[v];
            free(w->konst.t.owner);
            w->konst.t.owner = NULL;
            w->konst.t.data = (void *)file;
            released += bytes;
            continue;
        }
        uintptr_t lo = ((uintptr_t)t->data + (uintptr_t)page - 1) & ~((uintptr_t)page - 1);
        uintptr_t hi = ((uintptr_t)t->data + bytes) & ~((uintptr_t)page - 1);
        if (hi > lo && !madvise((void *)lo, hi - lo, MADV_DONTNEED)) released += hi - lo;
    }
    free(uses);
    m->packed_bytes = packed_bytes;
    m->released_init_bytes = released;
}
