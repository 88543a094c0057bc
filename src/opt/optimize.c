/* kiln_graph_optimize: the fusion passes of fusions.h over a graph and, first, over every
 * subgraph it holds (their contexts see the enclosing graph's static types for the values they
 * read from outside). */
#include "optimize.h"
#include "fusions.h"

typedef struct fusion_pass {
    kiln_status (*run)(opt_ctx *c);
    int min_level;
} fusion_pass;

/* Order matters where patterns overlap: BatchNormalization folds into Conv before the Conv takes
 * an activation; Gelu exists before its bias Add is folded in; SkipLayerNormalization takes the
 * bias Add of an output projection before MatMul + Add could become Gemm; attention is matched
 * before Transpose + MatMul would take the key's transpose.
 *
 * Level 3 holds fusions whose kernels currently cost more than they save on the shared models:
 * FusedConv applies its activation with scalar, branching loops (kconv_apply_act), slower than
 * the separate vectorised Relu/HardSigmoid (MobileNetV3-small 1.7 ms -> 7 ms); the attention
 * kernel always splits its heads over the pool (grain 1), so at 2 threads a tiny model waits for
 * a worker's wake-up on every layer (gpt2_tiny 0.10 -> 0.40 ms; 1 thread gains 8-13%). Each
 * moves to level 2 once its kernel is fixed. */
static const fusion_pass passes[] = {
    {opt_fuse_conv_batchnorm, 2}, {opt_fuse_conv_add, 2},    {opt_fuse_conv_activation, 3},
    {opt_fuse_gelu, 2},           {opt_fuse_gelu_bias, 2},   {opt_fuse_skip_layernorm, 2},
    {opt_fuse_attention, 3},      {opt_fuse_matmul_add, 2},  {opt_fuse_transpose_matmul, 2},
};

static kiln_status optimize_graph(kiln_graph *g, opt_ctx *parent, int level, int verbose,
                                  size_t *n_rewrites, kiln_err *e) {
    opt_ctx c;
    kiln_status st = opt_ctx_init(&c, g, parent, verbose, e);
    for (int i = 0; !st && i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        for (int k = 0; !st && k < n->n_attrs; k++) {
            kiln_attr *a = &n->attrs[k];
            if (a->g) st = optimize_graph(a->g, &c, level, verbose, n_rewrites, e);
            for (int j = 0; !st && a->graphs && j < a->n_graphs; j++)
                st = optimize_graph(a->graphs[j], &c, level, verbose, n_rewrites, e);
        }
    }
    for (size_t p = 0; !st && p < sizeof passes / sizeof *passes; p++)
        if (level >= passes[p].min_level) st = passes[p].run(&c);
    if (!st) st = opt_compact(&c);
    *n_rewrites += c.rewrites;
    opt_ctx_free(&c);
    return st;
}

kiln_status kiln_graph_optimize(kiln_graph *g, int level, int verbose, size_t *n_rewrites, kiln_err *e) {
    *n_rewrites = 0;
    if (level < 2 || !g) return KILN_OK;
    return optimize_graph(g, NULL, level, verbose, n_rewrites, e);
}
