/* kiln convert: load a model, optionally rewrite it (float16, the level-2 fusions) and write it
 * back as an ONNX file that other runtimes can load. */
#include "cli.h"
#include "onnx/model_write.h"
#include "opt/optimize.h"
#include <stdio.h>
#include <string.h>

int cmd_convert(int argc, char **argv);

static int live_nodes(const kiln_graph *g) {
    int n = 0;
    for (int i = 0; i < g->n_nodes; i++) n += !g->nodes[i].removed;
    return n;
}

int cmd_convert(int argc, char **argv) {
    const char *in = NULL, *out = NULL;
    int fp16 = 0, optimize = 0, verbose = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--fp16")) fp16 = 1;
        else if (!strcmp(a, "--optimize")) optimize = 1;
        else if (!strcmp(a, "--verbose")) verbose = 1;
        else if (a[0] != '-' && !in) in = a;
        else if (a[0] != '-' && !out) out = a;
        else {
            fprintf(stderr, "kiln convert: unknown option '%s'\n", a);
            return 2;
        }
    }
    if (!in || !out) {
        fprintf(stderr, "kiln convert: usage: kiln convert MODEL OUT.onnx [--fp16] [--optimize] [--verbose]\n");
        return 2;
    }
    kiln_err e = {0};
    kiln_model *m;
    if (kiln_model_load_file(in, &m, &e)) {
        fprintf(stderr, "kiln convert: %s: %s\n", in, e.msg);
        return 1;
    }
    size_t converted = 0, fused = 0;
    int nodes_before = live_nodes(m->graph);
    /* float16 first: the fusions then see the graph the runtime will run */
    if (fp16 && kiln_graph_to_float16(m, verbose, &converted, &e)) {
        fprintf(stderr, "kiln convert: %s: %s\n", in, e.msg);
        kiln_model_free(m);
        return 1;
    }
    if (optimize && kiln_graph_optimize(m->graph, 2, verbose, &fused, &e)) {
        fprintf(stderr, "kiln convert: %s: optimizing: %s\n", in, e.msg);
        kiln_model_free(m);
        return 1;
    }
    if (kiln_model_write(m, out, &e)) {
        fprintf(stderr, "kiln convert: %s\n", e.msg);
        kiln_model_free(m);
        return 1;
    }
    printf("wrote %s: %d nodes (was %d)", out, live_nodes(m->graph), nodes_before);
    if (fp16) printf(", %zu tensors converted to float16", converted);
    if (optimize) printf(", %zu fusions", fused);
    printf("\n");
    kiln_model_free(m);
    return 0;
}
