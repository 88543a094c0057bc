/* Free dimension overrides (kiln_options.dim_overrides): symbolic dimensions of the main graph
 * fixed to sizes given when the session is made, before optimisation and static inference. */
#include "dims.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Replaces symbol `sym` by `value` in every declared type of graph g and its subgraphs. */
static void bind_symbol(kiln_graph *g, int sym, int64_t value) {
    for (int v = 0; v < g->n_values; v++) {
        kiln_type *t = &g->values[v].type;
        for (int d = 0; d < t->rank && d < KILN_MAX_RANK; d++)
            if (KILN_DIM_IS_SYM(t->dims[d]) && KILN_DIM_SYM_ID(t->dims[d]) == sym) t->dims[d] = value;
    }
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_attrs; k++) {
            kiln_attr *a = &g->nodes[i].attrs[k];
            if (a->g) bind_symbol(a->g, sym, value);
            for (int j = 0; a->graphs && j < a->n_graphs; j++) bind_symbol(a->graphs[j], sym, value);
        }
}

kiln_status kiln_apply_dim_overrides(kiln_model *m, const char *spec, kiln_err *e) {
    if (!spec || !spec[0]) return KILN_OK;
    char *copy = strdup(spec);
    if (!copy) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = KILN_OK;
    for (char *save = NULL, *item = strtok_r(copy, ",", &save); item && !st; item = strtok_r(NULL, ",", &save)) {
        char *eq = strchr(item, '=');
        char *end = NULL;
        long long value = eq ? strtoll(eq + 1, &end, 10) : -1;
        if (!eq || eq == item || !end || end == eq + 1 || *end || value < 0) {
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                           "dimension override '%s' is not NAME=N with N >= 0", item);
            break;
        }
        *eq = 0;
        if (item[0] == '@') { /* by dimension denotation: every symbol that carries it */
            int found = 0;
            for (int i = 0; i < m->n_denots; i++)
                if (!strcmp(m->denots[i].name, item + 1)) {
                    bind_symbol(m->graph, m->denots[i].sym, (int64_t)value);
                    found = 1;
                }
            if (!found)
                st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                               "no symbolic dimension of the model has the denotation '%s'", item + 1);
            continue;
        }
        int sym = -1;
        for (int i = 0; i < m->n_syms; i++)
            if (!strcmp(m->syms[i], item)) sym = i;
        if (sym < 0) {
            char names[512] = "";
            size_t l = 0;
            for (int i = 0; i < m->n_syms && l < sizeof names - 64; i++)
                l += (size_t)snprintf(names + l, sizeof names - l, "%s'%s'", i ? ", " : "", m->syms[i]);
            st = kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "the model has no symbolic dimension '%s' (it has: %s)",
                           item, m->n_syms ? names : "none");
            break;
        }
        bind_symbol(m->graph, sym, (int64_t)value);
    }
    free(copy);
    return st;
}
