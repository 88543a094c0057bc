/* kiln info: what a model is made of and what kiln makes of it. */
#include "cli.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_io(kiln_session *s, const kiln_io_info *io) {
    if (io->is_map) {
        char t[64];
        kiln_map_type_str(io->is_sequence ? KILN_KIND_MAP_SEQUENCE : KILN_KIND_MAP, io->map_key_dtype, io->dtype, t,
                          sizeof t);
        printf("  %s: %s\n", io->name, t);
        return;
    }
    printf("  %s: %s%s[", io->name, io->is_sequence ? "sequence of " : "", kiln_dtype_name(io->dtype));
    if (io->rank < 0) printf("?");
    for (int d = 0; d < io->rank; d++) {
        if (io->dims[d] >= 0) printf("%s%lld", d ? ", " : "", (long long)io->dims[d]);
        else printf("%s%s", d ? ", " : "", io->dim_names && io->dim_names[d][0] ? io->dim_names[d] : "?");
    }
    printf("]\n");
    (void)s;
}

typedef struct op_count { const char *name; const char *domain; int n; } op_count;

static void count_ops(const kiln_graph *g, op_count *ops, int *n_ops, int cap) {
    for (int i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        int k;
        for (k = 0; k < *n_ops; k++)
            if (!strcmp(ops[k].name, n->op_type) && !strcmp(ops[k].domain, n->domain)) break;
        if (k == *n_ops && *n_ops < cap) ops[(*n_ops)++] = (op_count){n->op_type, n->domain, 0};
        if (k < cap) ops[k].n++;
        for (int a = 0; a < n->n_attrs; a++) {
            if (n->attrs[a].g) count_ops(n->attrs[a].g, ops, n_ops, cap);
            for (int j = 0; n->attrs[a].graphs && j < n->attrs[a].n_graphs; j++) count_ops(n->attrs[a].graphs[j], ops, n_ops, cap);
        }
    }
}

static int by_count(const void *a, const void *b) { return ((const op_count *)b)->n - ((const op_count *)a)->n; }

/* Which provider runs each node, and why a node is not on the first one. */
static void print_placement(kiln_session *s) {
    size_t np = kiln_session_provider_count(s), nn = kiln_session_node_count(s);
    printf("providers:");
    for (size_t p = 0; p < np; p++) printf("%s %s", p ? "," : "", kiln_session_provider_name(s, p));
    printf("\n");
    if (np < 2) return;
    for (size_t p = 0; p < np; p++) {
        const char *name = kiln_session_provider_name(s, p);
        size_t count = 0;
        kiln_node_info ni;
        for (size_t i = 0; i < nn; i++)
            if (!kiln_session_node_info(s, i, &ni) && !strcmp(ni.provider, name) && strcmp(ni.domain, "kiln")) count++;
        printf("  %zu nodes on %s\n", count, name);
    }
    printf("placement (node, op, provider, why not on %s):\n", kiln_session_provider_name(s, 0));
    for (size_t i = 0; i < nn; i++) {
        kiln_node_info ni;
        if (kiln_session_node_info(s, i, &ni)) continue;
        printf("  %-40s %-28s %-22s %s\n", ni.name, ni.op_type, ni.provider, ni.reason);
    }
}

int cmd_info(int argc, char **argv) {
    const char *model = NULL;
    dim_binding dims[32];
    int n_dims = 0;
    for (int i = 1; i < argc; i++) {
        int sopt = cli_parse_session_opt(argc, argv, &i);
        if (sopt < 0) return 2;
        if (sopt) {
            continue;
        } else if (!strcmp(argv[i], "--dim") && i + 1 < argc && n_dims < 32) {
            char *eq = strchr(argv[++i], '=');
            if (!eq) { fprintf(stderr, "kiln info: --dim needs NAME=N\n"); return 2; }
            *eq = 0;
            dims[n_dims++] = (dim_binding){argv[i], atoll(eq + 1)};
        } else if (argv[i][0] != '-' && !model) {
            model = argv[i];
        } else {
            fprintf(stderr, "kiln info: unknown option '%s'\n", argv[i]);
            return 2;
        }
    }
    if (!model) { fprintf(stderr, "kiln info: no model given\n"); return 2; }
    kiln_session *s = cli_open(model, 1, 1, 0);
    if (!s) return 1;
    kiln_model *m = s->model;
    printf("model: %s\n", model);
    printf("ir_version: %lld, producer: %s\n", (long long)m->ir_version, m->producer ? m->producer : "");
    printf("opsets:");
    for (int i = 0; i < m->n_opsets; i++)
        printf(" %s=%lld", m->opsets[i].domain[0] ? m->opsets[i].domain : "ai.onnx", (long long)m->opsets[i].version);
    printf("\ninputs:\n");
    for (size_t i = 0; i < kiln_session_input_count(s); i++) {
        kiln_io_info io;
        kiln_session_input_info(s, i, &io);
        print_io(s, &io);
    }
    printf("outputs:\n");
    for (size_t i = 0; i < kiln_session_output_count(s); i++) {
        kiln_io_info io;
        kiln_session_output_info(s, i, &io);
        print_io(s, &io);
    }
    op_count ops[512];
    int n_ops = 0;
    count_ops(m->graph, ops, &n_ops, 512);
    qsort(ops, (size_t)n_ops, sizeof ops[0], by_count);
    printf("ops (%d kinds, %d nodes in the main graph):\n", n_ops, m->graph->n_nodes);
    for (int i = 0; i < n_ops; i++)
        printf("  %5d  %s%s%s\n", ops[i].n, ops[i].domain[0] ? ops[i].domain : "", ops[i].domain[0] ? ":" : "", ops[i].name);
    kiln_plan_stats st;
    kiln_session_plan_stats(s, &st);
    printf("initializers: %zu bytes (%zu mapped in place, %zu copied at load because misaligned in the file)\n",
           st.initializer_bytes, st.initializer_bytes - st.copied_initializer_bytes, st.copied_initializer_bytes);
    size_t packed = 0, released = 0;
    kiln_session_weight_stats(s, &packed, &released);
    printf("packed weights: %zu bytes (%zu bytes of the originals handed back: every use reads the packed copy)\n",
           packed, released);
    int rc = 0;
    if (s->missing_ops) {
        printf("missing ops (kiln has no kernel for these nodes): %s\n", s->missing_ops);
        rc = 1;
    } else {
        /* plan for the declared shapes: one run on synthetic inputs records the lifetimes */
        size_t ni = kiln_session_input_count(s);
        kiln_value *vals = calloc(ni ? ni : 1, sizeof *vals);
        const char **names = calloc(ni ? ni : 1, sizeof *names);
        unsigned seed = 1;
        int ok = 1;
        char shapes[1024] = "";
        size_t sl = 0;
        for (size_t i = 0; i < ni && ok; i++) {
            kiln_io_info io;
            kiln_session_input_info(s, i, &io);
            names[i] = io.name;
            vals[i].kind = KILN_KIND_TENSOR;
            if (cli_synthetic_input(s, i, dims, n_dims, &seed, &vals[i].t)) ok = 0;
            else {
                char b[256];
                sl += (size_t)snprintf(shapes + sl, sizeof shapes - sl, "%s%s=%s", i ? ", " : "", io.name,
                                       kiln_shape_str(&vals[i].t, b, sizeof b));
            }
        }
        size_t no = kiln_session_output_count(s);
        kiln_value *outs = calloc(no ? no : 1, sizeof *outs);
        int *idx = calloc(no ? no : 1, sizeof(int));
        for (size_t k = 0; k < no; k++) idx[k] = (int)k;
        if (ok && !kiln_session_run_values(s, (int)ni, names, vals, (int)no, idx, outs)) {
            kiln_session_plan_stats(s, &st);
            printf("planned memory for %s (symbolic dims = 1 unless --dim): arena %zu bytes "
                   "(%zu without reuse), %zu nodes after folding (%zu folded or dead)\n",
                   shapes, st.arena_bytes, st.naive_bytes, st.nodes, st.folded_nodes);
            for (size_t k = 0; k < no; k++) kiln_value_release(&outs[k]);
        } else {
            printf("planned memory: not available (%s)\n", ok ? kiln_session_error(s) : "inputs without static types");
        }
        for (size_t i = 0; i < ni; i++) kiln_value_release(&vals[i]);
        free(vals); free(names); free(outs); free(idx);
        printf("missing ops: none\n");
        print_placement(s);
    }
    kiln_session_close(s);
    return rc;
}
