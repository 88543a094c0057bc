/* Graph rewrites run when a session is opened, before kernels are bound (opt_level >= 2):
 * fusions of common subgraphs into single nodes with faster kernels. Constant folding and
 * dead-node removal (opt_level >= 1) happen later, in kiln_graph_prepare. */
#ifndef KILN_OPTIMIZE_H
#define KILN_OPTIMIZE_H

#include "../core/graph.h"

/* Rewrites g (and its subgraphs) in place. *n_rewrites counts the fusions applied. A rewrite that
 * does not apply leaves the graph unchanged; errors are only out-of-memory. */
kiln_status kiln_graph_optimize(kiln_graph *g, int level, int verbose, size_t *n_rewrites, kiln_err *e);
/* Same, for a session that also runs on a device provider (device = 1): rewrites that pay only
 * with device kernels are made too (float16 attention, whose CPU kernel converts to float32). */
kiln_status kiln_graph_optimize_for(kiln_graph *g, int level, int verbose, int device, size_t *n_rewrites,
                                    kiln_err *e);

/* float16.c: rewrites a float32 model, in place, to compute in float16 while its float32 graph
 * inputs and outputs stay float32 (Casts after the inputs and before the outputs; ONNX Runtime's
 * float16 converter with keep_io_types=True). Float32 initializers and constants become float16,
 * except those only float32 readers use; ops without trustworthy float16 kernels (TopK, Range,
 * CumSum, Min, Max, Upsample, NonMaxSuppression, RoiAlign, the ai.onnx.ml ops, ...) run in
 * float32 between Casts, and Resize keeps float32 roi and scales. Declared types follow. Call it
 * on a freshly loaded model, before kiln_graph_optimize and static inference. Models holding
 * subgraphs (If, Loop, Scan) are refused with an error naming the node. *converted (may be NULL)
 * gets the number of tensors converted. verbose: a summary on stderr. */
kiln_status kiln_graph_to_float16(kiln_model *m, int verbose, size_t *converted, kiln_err *e);

#endif
