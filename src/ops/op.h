/* Op definitions and the CPU kernels. An op is a table entry: (domain, name, first opset) plus up
 * to four functions. init, infer and fini are the op's definition, shared by every provider;
 * compute is the CPU provider's kernel. Other providers register compute-only kernels against the
 * same definitions (core/provider.h). Every kernel family file (src/cpu/kernels/<family>.c) defines one array
 *
 *     const kiln_op kiln_ops_<family>[] = { {...}, {...}, {0} };
 *
 * terminated by an entry whose name is NULL; src/ops/registry.c lists the families.
 *
 * How the runtime calls an op, per node:
 *   init(ctx)    once, when the session is made: parse attributes into ctx->state (allocate it with
 *                malloc; fini frees it). Inputs that are constants (initializers, folded values)
 *                already hold data; others have data == NULL. Optional.
 *   infer(ctx)   sets each wanted output's dtype and shape with kiln_set_output(). Called at run time
 *                (all inputs concrete, with data) and during static inference (ctx->static_mode = 1:
 *                an input's data may be NULL and dims may be unknown/symbolic, dims < 0; an op that
 *                needs data it lacks sets the output with rank -1 via kiln_set_output_unknown()).
 *                Must validate inputs and fail with a clear message (wrong rank, bad axis, ...).
 *   compute(ctx) fills the outputs, already allocated by the runtime from what infer set.
 *   fini(state)  frees ctx->state. Optional.
 * Ops whose output shape is only known while computing (NonZero, Unique, Loop, ...) set
 * KILN_OP_DYNAMIC: the runtime skips infer at run time and compute allocates each output with
 * kiln_alloc_output() (infer still runs in static mode, where it may set rank -1).
 * KILN_OP_ALIAS: output 0 shares input 0's bytes (Reshape, Squeeze, Identity ...); compute is
 * then not called when the runtime could alias (it copies only when it must).
 * KILN_OP_PREPACK: init only copies constant inputs into faster forms (kiln_input_packed); infer
 * and compute work without it. The session then skips init in the pass before the fusions, whose
 * rewrites would throw those copies away, so that each weight is packed once.
 *
 * Errors: return KILN_FAIL(ctx, code, "fmt", ...). The runtime prefixes the node name, op type and
 * opset, so say only what is wrong: "input 'B' has rank 3, expected 2".
 */
#ifndef KILN_OP_H
#define KILN_OP_H

#include "../core/graph.h"
#include "../core/dtype.h"
#include "../core/status.h"
#include "../core/tensor.h"

struct kiln_threadpool;
struct kiln_runner;

typedef struct kiln_ctx {
    const kiln_node *node;
    int opset;                   /* = node->opset: pick per-version behaviour from this */
    int n_in;
    kiln_value **in;             /* in[i] == NULL: optional input absent */
    int n_out;
    kiln_value **out;            /* out[i] == NULL: output not wanted (empty name) */
    void *state;
    kiln_err *err;
    int static_mode;
    struct kiln_threadpool *tp;  /* may be NULL: run serially */
    struct kiln_runner *runner;  /* for control-flow ops: runs subgraphs (see core/runner.h) */
    struct kiln_provider *ep;    /* the provider running the node (NULL in static inference) */
    void *kernel_state;          /* a non-CPU kernel's own state (kiln_kernel.init) */
} kiln_ctx;

/* KILN_OP_SHAPE_ONLY: the op reads its input's shape, never its elements (Shape, Size): the input
 * may stay in any provider's memory. */
enum { KILN_OP_DYNAMIC = 1, KILN_OP_ALIAS = 2, KILN_OP_SHAPE_ONLY = 4, KILN_OP_PREPACK = 8 };

typedef struct kiln_op {
    const char *domain;          /* "" = ai.onnx, "ai.onnx.ml", "com.microsoft" */
    const char *name;
    int since;                   /* first opset version this entry serves */
    unsigned flags;
    kiln_status (*init)(kiln_ctx *ctx);
    kiln_status (*infer)(kiln_ctx *ctx);
    kiln_status (*compute)(kiln_ctx *ctx);
    void (*fini)(void *state);
} kiln_op;

#define KILN_FAIL(ctx, code, ...) kiln_fail((ctx)->err, (code), __VA_ARGS__)

/* ---- inputs and outputs ---- */
/* Tensor input i, or NULL when absent (or when it is not a tensor). */
kiln_tensor *kiln_input(kiln_ctx *ctx, int i);
/* From init: constant input i has been copied into a packed form of `bytes` bytes that compute
 * reads instead, so its original need not stay in memory (core/weights.c). src_note: where the
 * kernel keeps the input's data pointer to recognise it at run time (NULL: nowhere); the runtime
 * updates it if the original moves. */
void kiln_input_packed(kiln_ctx *ctx, int i, size_t bytes, const void **src_note);
/* Like kiln_input but fails with "missing required input i" / wrong kind. */
kiln_status kiln_need_input(kiln_ctx *ctx, int i, kiln_tensor **t);
kiln_tensor *kiln_output(kiln_ctx *ctx, int i); /* NULL when not wanted */
kiln_status kiln_set_output(kiln_ctx *ctx, int i, int dtype, int rank, const int64_t *dims);
kiln_status kiln_set_output_like(kiln_ctx *ctx, int i, const kiln_tensor *t);
kiln_status kiln_set_output_unknown(kiln_ctx *ctx, int i, int dtype);
/* For KILN_OP_DYNAMIC ops inside compute: sets the shape and allocates the buffer. */
kiln_status kiln_alloc_output(kiln_ctx *ctx, int i, int dtype, int rank, const int64_t *dims);
/* Sequence outputs (sequence ops): the output takes over each item's data (items that do not own
 * their bytes, owner == NULL, are copied); the `items` array itself stays the caller's. */
kiln_status kiln_set_output_sequence(kiln_ctx *ctx, int i, int elem_dtype, int n, kiln_tensor *items);

/* Map inputs and outputs (ai.onnx.ml). kiln_need_map_input fails unless input i is one map (in
 * static inference its n_maps is -1 and maps NULL: only the key and value types are known).
 * kiln_set_output_map_type marks output i as a map or a sequence of maps (infer);
 * kiln_set_output_maps hands it `maps` (malloc'd, n of them; taken over, also on failure). */
kiln_status kiln_need_map_input(kiln_ctx *ctx, int i, kiln_value **v);
kiln_status kiln_set_output_map_type(kiln_ctx *ctx, int i, int kind, int key_dtype, int val_dtype);
kiln_status kiln_set_output_maps(kiln_ctx *ctx, int i, int kind, int key_dtype, int val_dtype, int n,
                                 kiln_map *maps);

/* ---- attributes ---- */
int64_t kiln_attr_int(const kiln_node *n, const char *name, int64_t dflt);
float kiln_attr_float(const kiln_node *n, const char *name, float dflt);
const char *kiln_attr_string(const kiln_node *n, const char *name, const char *dflt);
/* kiln_attr_string with the value's length in bytes (*len; it may hold NUL bytes, as string
 * attributes that become string elements may). */
const char *kiln_attr_bytes(const kiln_node *n, const char *name, const char *dflt, size_t *len);
/* List attributes: returns the array and sets *count; NULL and 0 when absent. */
const int64_t *kiln_attr_ints(const kiln_node *n, const char *name, int *count);
const float *kiln_attr_floats(const kiln_node *n, const char *name, int *count);
/* The elements are kiln strings (kstring.h): read their length with kiln_str_len. */
char *const *kiln_attr_strings(const kiln_node *n, const char *name, int *count);
const kiln_tensor *kiln_attr_tensor(const kiln_node *n, const char *name);
struct kiln_graph *kiln_attr_graph(const kiln_node *n, const char *name);
int kiln_has_attr(const kiln_node *n, const char *name);

/* ---- shape helpers ---- */
/* Normalises axis in [-rank, rank) to [0, rank); fails with a message naming `what`. */
kiln_status kiln_norm_axis(kiln_ctx *ctx, int64_t axis, int rank, const char *what, int *out);
/* numpy broadcast of n shapes into out (rank, dims); fails naming the mismatching dims. */
kiln_status kiln_broadcast_shape(kiln_ctx *ctx, int n, const kiln_tensor *const *ts, int *rank,
                                 int64_t *dims);
/* Reads an integer tensor (int32/int64) into out[] (at most max values); fails on other types. */
kiln_status kiln_read_ints(kiln_ctx *ctx, const kiln_tensor *t, int64_t *out, int max, int *count);
/* Slice's geometry (ops/slice_geom.c), for Slice and SliceGrad on every provider: per axis the
 * first kept index, the step and the kept length; known[a] = 0 where static inference cannot tell
 * the length yet. Lists come from inputs first_input..first_input+3 (starts, ends, axes, steps),
 * or from attributes when attrs is set (Slice before opset 10). */
typedef struct kiln_slice_geom {
    int64_t start[KILN_MAX_RANK], step[KILN_MAX_RANK], len[KILN_MAX_RANK];
    int known[KILN_MAX_RANK];
} kiln_slice_geom;
kiln_status kiln_slice_geometry(kiln_ctx *ctx, int first_input, int attrs, int rank, const int64_t *dims,
                                kiln_slice_geom *g);
/* Reads a scalar (or 1-element) numeric tensor as double. */
kiln_status kiln_read_scalar(kiln_ctx *ctx, const kiln_tensor *t, double *out);
/* Fails with "unsupported element type X for input i" unless t->dtype is one of the list. */
kiln_status kiln_check_dtype(kiln_ctx *ctx, const kiln_tensor *t, int input_index, int n_types, ...);

/* ---- threads ---- */
/* Calls fn(arg, begin, end) over [0, n) in chunks of at least `grain`, on the session's pool. */
typedef void (*kiln_range_fn)(void *arg, int64_t begin, int64_t end);
void kiln_parallel_for(kiln_ctx *ctx, int64_t n, int64_t grain, kiln_range_fn fn, void *arg);
int kiln_num_threads(const kiln_ctx *ctx);
/* KILN_PARTITION=T (par_trace.c): loops run serially, each chunk timed, as if on T threads; one
 * line per loop on stderr. 0 when unset. kiln_par_trace_run returns 1 when it ran the loop. */
int kiln_par_trace_threads(void);
int kiln_par_trace_run(kiln_ctx *ctx, int64_t n, int64_t grain, kiln_range_fn fn, void *arg);

/* ---- registry (ops/registry.c) ---- */
const kiln_op *kiln_find_op(const char *domain, const char *name, int opset);
/* Fills names of all registered ops "domain:name" (for coverage listings); returns count. */
int kiln_list_ops(const kiln_op **out, int max);

#endif
