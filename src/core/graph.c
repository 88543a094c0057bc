#include "graph.h"
#include "provider.h"
#include "../ops/op.h"
#include <stdlib.h>
#include <limits.h>
#include <string.h>
#include <sys/mman.h>

/* FNV-1a: short names, mostly distinct suffixes; good enough spread for linear probing. */
static size_t name_hash(const char *name) {
    size_t h = (size_t)1469598103934665603ULL;
    for (const unsigned char *p = (const unsigned char *)name; *p; p++) {
        h ^= *p;
        h *= (size_t)1099511628211ULL;
    }
    return h;
}

/* Puts value i in the first free slot of its probe chain. Duplicate names (which the loader
 * refuses, but later passes could add) land after the earlier ones, so a lookup still finds the
 * lowest index first, as the linear scan this replaces did. */
static void index_insert(int *slots, size_t n_slots, const kiln_graph_value *values, int i) {
    size_t mask = n_slots - 1;
    for (size_t s = name_hash(values[i].name) & mask;; s = (s + 1) & mask)
        if (!slots[s]) {
            slots[s] = i + 1;
            return;
        }
}

/* Keeps the table at most half full so that probe chains stay short. */
static int index_reserve(kiln_graph *g, int n_values) {
    if (g->n_name_slots >= 2 * (size_t)n_values && g->n_name_slots) return 0;
    size_t n = g->n_name_slots ? g->n_name_slots : 128;
    while (n < 2 * (size_t)n_values) n *= 2;
    int *slots = calloc(n, sizeof *slots);
    if (!slots) return -1;
    for (int i = 0; i < g->n_values; i++) index_insert(slots, n, g->values, i);
    free(g->name_slots);
    g->name_slots = slots;
    g->n_name_slots = n;
    return 0;
}

int kiln_graph_find_value(const kiln_graph *g, const char *name) {
    if (!g->name_slots) return -1;
    size_t mask = g->n_name_slots - 1;
    for (size_t s = name_hash(name) & mask; g->name_slots[s]; s = (s + 1) & mask) {
        int i = g->name_slots[s] - 1;
        if (!strcmp(g->values[i].name, name)) return i;
    }
    return -1;
}

int kiln_graph_add_value(kiln_graph *g, const char *name) {
    if (g->n_values == INT_MAX - 1) return -1;
    if (index_reserve(g, g->n_values + 1)) return -1;
    if (g->n_values == g->cap_values) {
        int cap = g->cap_values ? g->cap_values * 2 : 64;
        kiln_graph_value *v = realloc(g->values, (size_t)cap * sizeof *v);
        if (!v) return -1;
        g->values = v;
        g->cap_values = cap;
    }
    kiln_graph_value *v = &g->values[g->n_values];
    memset(v, 0, sizeof *v);
    v->name = strdup(name);
    if (!v->name) return -1;
    v->producer = -1;
    v->outer = -1;
    v->type.rank = -1;
    index_insert(g->name_slots, g->n_name_slots, g->values, g->n_values);
    return g->n_values++;
}

int64_t kiln_model_opset(const kiln_model *m, const char *domain) {
    if (!domain || !strcmp(domain, "ai.onnx")) domain = "";
    for (int i = 0; i < m->n_opsets; i++) {
        const char *d = m->opsets[i].domain;
        if (!strcmp(d, "ai.onnx")) d = "";
        if (!strcmp(d, domain)) return m->opsets[i].version;
    }
    return -1;
}

int kiln_model_symbol(kiln_model *m, const char *name) {
    for (int i = 0; i < m->n_syms; i++)
        if (!strcmp(m->syms[i], name)) return i;
    char **s = realloc(m->syms, (size_t)(m->n_syms + 1) * sizeof *s);
    if (!s) return -1;
    m->syms = s;
    if (!(s[m->n_syms] = strdup(name))) return -1;
    return m->n_syms++;
}

const kiln_attr *kiln_node_attr(const kiln_node *n, const char *name) {
    for (int i = 0; i < n->n_attrs; i++)
        if (!strcmp(n->attrs[i].name, name)) return &n->attrs[i];
    return NULL;
}

void kiln_attr_free(kiln_attr *a) {
    free(a->name);
    free(a->s);
    if (a->t) {
        kiln_tensor_release(a->t);
        free(a->t);
    }
    if (a->g) kiln_graph_free(a->g);
    free(a->floats);
    free(a->ints);
    if (a->strings)
        for (int i = 0; i < a->n_strings; i++) kiln_str_free(a->strings[i]);
    free(a->strings);
    if (a->tensors)
        for (int i = 0; i < a->n_tensors; i++) kiln_tensor_release(&a->tensors[i]);
    free(a->tensors);
    if (a->graphs)
        for (int i = 0; i < a->n_graphs; i++) kiln_graph_free(a->graphs[i]);
    free(a->graphs);
}

void kiln_graph_free(kiln_graph *g) {
    if (!g) return;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->op && n->op->fini && n->state) n->op->fini(n->state);
        if (n->kernel && n->kernel->fini && n->kernel_state) n->kernel->fini(n->kernel_state);
        free(n->placement_why);
        free(n->name);
        free(n->op_type);
        free(n->domain);
        free(n->in);
        free(n->out);
        free(n->implicit);
        for (int k = 0; k < n->n_attrs; k++) kiln_attr_free(&n->attrs[k]);
        free(n->attrs);
    }
    free(g->nodes);
    for (int i = 0; i < g->n_values; i++) {
        free(g->values[i].name);
        kiln_value_release(&g->values[i].konst);
    }
    free(g->values);
    free(g->name_slots);
    free(g->inputs);
    free(g->outputs);
    free(g->name);
    free(g);
}

void kiln_model_free(kiln_model *m) {
    if (!m) return;
    kiln_graph_free(m->graph);
    for (int i = 0; i < m->n_opsets; i++) free(m->opsets[i].domain);
    free(m->opsets);
    for (int i = 0; i < m->n_maps; i++) {
        if (m->maps[i].addr) munmap(m->maps[i].addr, m->maps[i].size);
        free(m->maps[i].path);
    }
    free(m->maps);
    free(m->copies);
    for (int i = 0; i < m->n_syms; i++) free(m->syms[i]);
    free(m->syms);
    free(m->producer);
    free(m->producer_version);
    free(m->domain);
    free(m->doc);
    free(m->graph_doc);
    for (int i = 0; i < m->n_props; i++) {
        free(m->prop_keys[i]);
        free(m->prop_values[i]);
    }
    free(m->prop_keys);
    free(m->prop_values);
    for (int i = 0; i < m->n_denots; i++) free(m->denots[i].name);
    free(m->denots);
    free(m->dir);
    free(m);
}
