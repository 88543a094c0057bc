/* Graph rewrites run when a session is opened, before kernels are bound (opt_level >= 2):
 * fusions of common subgraphs into single nodes with faster kernels. Constant folding and
 * dead-node removal (opt_level >= 1) happen later, in kiln_graph_prepare. */
#ifndef KILN_OPTIMIZE_H
#define KILN_OPTIMIZE_H

#include "../core/graph.h"

/* Rewrites g (and its subgraphs) in place. *n_rewrites counts the fusions applied. A rewrite that
 * does not apply leaves the graph unchanged; errors are only out-of-memory. */
kiln_status kiln_graph_optimize(kiln_graph *g, int level, int verbose, size_t *n_rewrites, kiln_err *e);

#endif
