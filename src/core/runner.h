/* Running graphs. The session runs the main graph through a runner; control-flow kernels (If,
 * Loop, Scan, SequenceMap) use kiln_run_subgraph to run their body graphs. */
#ifndef KILN_RUNNER_H
#define KILN_RUNNER_H

#include "../ops/op.h"

/* Runs subgraph g (an attribute graph of ctx->node). ins[i] feeds g's i-th formal input
 * (g->inputs[i]; NULL leaves it absent). Names g uses but does not define resolve to values of the
 * enclosing graphs as they are at this point of the run. On success outs[0..g->n_outputs) hold the
 * subgraph's outputs, owned by the caller (release each with kiln_value_release). */
kiln_status kiln_run_subgraph(kiln_ctx *ctx, kiln_graph *g, int n_in, kiln_value *const *ins,
                              kiln_value *outs);

#endif
