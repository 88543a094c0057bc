/* kiln_graph_optimize: the fusion passes of fusions.h over a graph and, first, over every
 * subgraph it holds (their contexts see the enclosing graph's static types for the values they
 * read from outside). */
#include "optimize.h"
#include "fusions.h"

typedef struct fusion_pass {
    kiln_status (*run)(opt_ctx *c);
    int min_level;
} fusion_pass;

/* Order matters where patterns overlap: the quantised (QDQ) products are taken first, before a
 * float Conv could take an activation or MatMul a bias; BatchNormalization folds into Conv before the Conv takes
 * an activation; Gelu exists before its bias Add is folded in; SkipLayerNormalization takes the
 * bias Add of an output projection before MatMul + Add could become Gemm; attention is matched
 * before Transpose + MatMul would take the key's transpose.
 *
 * Level 3 currently adds nothing: Conv + activation and self-attention used to wait there while
 * their kernels cost more than they saved. Both moved to level 2 once fixed: FusedConv's
 * activation is vectorised (kconv_apply_act, AVX-512; MobileNetV3-small now equal to the separate
 * Relu/HardSigmoid, it was 1.7 -> 7 ms), and the attention kernel's grain follows its work, so a
 * tiny model no longer waits for a worker every layer (gpt2_tiny 1 thread 0.089 -> 0.081 ms,
 * 2 threads 0.097 -> 0.091; bert_tiny 0.186 -> 0.175 / 0.187 -> 0.179). A fusion whose kernel
 * loses on some model goes back to level 3 until fixed. */
static const fusion_pass passes[] = {
    {opt_fuse_qdq, 2},
    {opt_fuse_conv_batchnorm, 2}, {opt_fuse_conv_add, 2},    {opt_fuse_conv_activation, 2},
    {opt_fuse_batchnorm_activation, 2},
    {opt_fuse_gelu, 2},           {opt_fuse_gelu_bias, 2},   {opt_fuse_skip_layernorm, 2},
    {opt_drop_same_shape_reshapes, 2}, {opt_fuse_attention, 2},      {opt_fuse_matmul_add, 2},  {opt_fuse_transpose_matmul, 2},
};

static kiln_status optimize_graph(kiln_graph *g, opt_ctx *parent, int level, int verbose, int device,
                                  size_t *n_rewrites, kiln_err *e) {
    opt_ctx c;
    kiln_status st = opt_ctx_init(&c, g, parent, verbose, e);
    c.device = device;
    for (int i = 0; !st && i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        for (int k = 0; !st && k < n->n_attrs; k++) {
            kiln_attr *a = &n->attrs[k];
            if (a->g) st = optimize_graph(a->g, &c, level, verbose, device, n_rewrites, e);
            for (int j = 0; !st && a->graphs && j < a->n_graphs; j++)
                st = optimize_graph(a->graphs[j], &c, level, verbose, device, n_rewrites, e);
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
    return kiln_graph_optimize_for(g, level, verbose, 0, n_rewrites, e);
}

kiln_status kiln_graph_optimize_for(kiln_graph *g, int level, int verbose, int device, size_t *n_rewrites,
                                    kiln_err *e) {
    *n_rewrites = 0;
    if (level < 2 || !g) return KILN_OK;
    return optimize_graph(g, NULL, level, verbose, device, n_rewrites, e);
}
