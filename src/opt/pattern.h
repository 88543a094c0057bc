/* What the fusion passes share: a per-graph context that knows how often each value is read and
 * what static type/shape it has, helpers to match nodes backwards from a pattern's last node, and
 * the edit that replaces a matched pattern by one node.
 *
 * Rewrites run before kernels are bound, so only the model's declared types and the kernels' own
 * shape inference (run here in static mode, see static_types.c) tell shapes; a pattern whose
 * shape conditions cannot be proven is left alone. */
#ifndef KILN_OPT_PATTERN_H
#define KILN_OPT_PATTERN_H

#include "../core/graph.h"
#include "../ops/op.h"

typedef struct opt_ctx {
    kiln_graph *g;
    struct opt_ctx *parent;   /* the enclosing graph's context (for values read from outside) */
    int n_tracked;            /* values covered by uses/is_output/facts; later ones are new constants */
    int *uses;                /* reads of each value: node input slots, subgraph reads, graph outputs */
    int *is_output;
    kiln_value *facts;        /* static type of each non-constant value (rank -1: unknown) */
    signed char *foldable;    /* opt_foldable's answers: -1 not yet known, 0, 1 */
    int verbose;
    int device;               /* the session also runs on a device provider */
    size_t rewrites;
    kiln_err *e;
} opt_ctx;

kiln_status opt_ctx_init(opt_ctx *c, kiln_graph *g, opt_ctx *parent, int verbose, kiln_err *e);
void opt_ctx_free(opt_ctx *c);
/* Static types (static_types.c): fills c->facts from declared types and the kernels' inference. */
kiln_status opt_facts_build(opt_ctx *c);

/* ---- matching ---- */
/* The live node producing v when its op is `op` in the default domain; NULL otherwise. */
kiln_node *opt_producer(opt_ctx *c, int v, const char *op);
kiln_node *opt_producer_in(opt_ctx *c, int v, const char *domain, const char *op);
int opt_node_index(const opt_ctx *c, const kiln_node *n);
/* v is read exactly `reads` times and is not a graph output: a pattern holding all those reads may
 * absorb it. */
int opt_private(const opt_ctx *c, int v, int reads);
/* The constant tensor behind v (initializer, Constant node's tensor, Identity of either), or NULL. */
const kiln_tensor *opt_const(opt_ctx *c, int v);
/* v is a constant or computed from constants only, so that constant folding (opt_level 1, after
 * the rewrites) will turn it into one. */
int opt_foldable(opt_ctx *c, int v);
/* v is a one-element constant of a floating type; *out gets its value, *dtype its type. */
int opt_const_scalar(opt_ctx *c, int v, double *out, int *dtype);
/* v is a one-element float constant close to `want` (within what its type can hold) and
 * broadcasting it against a value of static type `x` does not change x's shape. */
int opt_is_scalar(opt_ctx *c, int v, double want, const kiln_tensor *x);
/* Static type of v: rank -1 and dtype 0 when unknown. Never NULL. */
const kiln_tensor *opt_fact(opt_ctx *c, int v);
/* Ranks known and every dimension equal and known (the same symbolic dimension counts). */
int opt_same_shape(const kiln_tensor *a, const kiln_tensor *b);
int opt_dim_known(int64_t d);
int opt_float_type(int dtype); /* float, double, float16, bfloat16 */
/* Input i of node n (or -1 when absent). */
static inline int opt_in(const kiln_node *n, int i) { return i < n->n_in ? n->in[i] : -1; }
/* Other input of a two-input node, given one of them; -1 if `v` is not an input. */
int opt_other_input(const kiln_node *n, int v);
/* Outputs past the first are absent or read by nobody. */
int opt_only_first_output(const opt_ctx *c, const kiln_node *n);

/* ---- attributes of new nodes (each returns 0 when out of memory) ---- */
int opt_attr_int(kiln_attr *a, const char *name, int64_t v);
int opt_attr_float(kiln_attr *a, const char *name, float v);
int opt_attr_string(kiln_attr *a, const char *name, const char *s);
int opt_attr_floats(kiln_attr *a, const char *name, const float *v, int n);
int opt_attr_ints(kiln_attr *a, const char *name, const int64_t *v, int n);
void opt_attrs_free(kiln_attr *attrs, int n);
/* Moves n's attributes into a new array with room for `extra` more (n keeps none). */
kiln_status opt_attrs_take(opt_ctx *c, kiln_node *n, int extra, kiln_attr **out, int *count);

/* ---- editing ---- */
/* Replaces the pattern nodes by one node op (domain) placed in the slot of the pattern's last
 * node, named "<first pattern node>_fused_<op>"; the other pattern nodes are marked removed.
 * `attrs` (n_attrs entries, malloc'ed) pass to the new node, also on failure. opset < 0 takes the
 * model's version of the domain (1 for com.microsoft when the model does not import it). */
kiln_status opt_replace(opt_ctx *c, kiln_node **pattern, int n_pattern, const char *domain,
                        const char *op, int opset, const int *ins, int n_in, const int *outs,
                        int n_out, kiln_attr *attrs, int n_attrs);
/* Adds an intermediate value (a fused node's output feeding nodes outside the pattern); returns
 * its index or -1 (no memory). The name is made unique. */
int opt_add_value(opt_ctx *c, const char *name);
/* Points input slot i of node n at value v. */
void opt_set_input(opt_ctx *c, kiln_node *n, int i, int v);
/* Adds an initializer owning *t (moved); returns its value index or -1 (no memory). */
int opt_add_const(opt_ctx *c, const char *name, kiln_tensor *t);
/* Drops removed nodes from the array (freeing them) and renumbers producers. */
kiln_status opt_compact(opt_ctx *c);

#endif
