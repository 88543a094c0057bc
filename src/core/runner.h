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

/* A loop kernel's check once per iteration: KILN_ERR_CANCELLED when the run's terminate flag is
 * set or its deadline has passed. */
kiln_status kiln_run_check(kiln_ctx *ctx);
/* Bytes a kernel holds for the run outside its outputs (e.g. a Loop's stacked scan items), counted
 * against the session's memory limit: charge fails with KILN_ERR_NO_MEMORY (and counts nothing)
 * when they would pass it; uncharge gives back what was charged. */
kiln_status kiln_run_charge(kiln_ctx *ctx, size_t bytes, const char *what);
void kiln_run_uncharge(kiln_ctx *ctx, size_t bytes);

#endif
