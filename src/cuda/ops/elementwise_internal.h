/* Shared parts of the CUDA element-wise family's glue (ops/elementwise*.c): launching through
 * kernels/elementwise.h and the supports() checks every op repeats. Each op NAME has a
 * kiln_cuew_NAME_supports / kiln_cuew_NAME_compute pair, listed in KILN_CUEW_OPS for the table
 * in elementwise.c. */
#ifndef KILN_CUDA_OPS_ELEMENTWISE_INTERNAL_H
#define KILN_CUDA_OPS_ELEMENTWISE_INTERNAL_H

#include "../cuda_ep.h"
#include "../kernels/elementwise.h"

#include <stddef.h>

/* ---- compute helpers (elementwise.c) ---- */

/* The launcher's view of a tensor. */
kiln_ew_operand kiln_cuew_operand(const kiln_tensor *t);
/* y = op(in...) on the node's stream; empty or unwanted outputs do nothing. */
kiln_status kiln_cuew_launch(kiln_ctx *ctx, int op, const kiln_ew_operand *in, kiln_tensor *y,
                             const kiln_ew_params *p);
/* Output 0 = op(inputs ts[0..arity)). */
kiln_status kiln_cuew_run(kiln_ctx *ctx, int op, const kiln_tensor *const *ts, const kiln_ew_params *p);
/* y = x, byte for byte, on the stream (nothing when they share memory). */
kiln_status kiln_cuew_copy(kiln_ctx *ctx, kiln_tensor *y, const kiln_tensor *x);

/* ---- supports() helpers (elementwise.c); each returns 1, or 0 with the reason in why ---- */

/* *dt = the static element type of input i, which must be present and known. */
int kiln_cuew_in_dtype(const kiln_graph_value *const *in, int n_in, int i, int *dt, char *why, size_t cap);
/* A kernel exists for op over dts giving out_dt. */
int kiln_cuew_have_kernel(const kiln_node *n, int op, const int *dts, int out_dt, char *why, size_t cap);
/* Broadcasting ops: the output's rank fits the kernels' folded axes (unknown rank passes). */
int kiln_cuew_rank_fits(const kiln_graph_value *const *out, char *why, size_t cap);
/* Every present input i < n_in has element type dt. */
int kiln_cuew_same_dtype(const kiln_node *n, const kiln_graph_value *const *in, int dt, char *why, size_t cap);

/* ---- the ops ---- */

#define KILN_CUEW_BINARY_OPS(X)                                                                    \
    X(add) X(sub) X(mul) X(div) X(mod) X(pow) X(max) X(min) X(sum) X(mean)                          \
    X(equal) X(less) X(less_equal) X(greater) X(greater_equal) X(and) X(or) X(xor) X(where)         \
    X(bias_gelu) X(fast_gelu) X(bias_add)
#define KILN_CUEW_UNARY_OPS(X)                                                                     \
    X(abs) X(neg) X(sign) X(relu) X(exp) X(log) X(sqrt) X(reciprocal) X(sin) X(cos) X(floor)        \
    X(ceil) X(round) X(erf) X(sigmoid) X(tanh) X(leaky_relu) X(elu) X(selu) X(softplus)             \
    X(hard_sigmoid) X(hard_swish) X(mish) X(gelu) X(ms_gelu) X(quick_gelu) X(isnan) X(isinf)        \
    X(not) X(clip) X(cast) X(cast_like)

#define KILN_CUEW_DECLARE(name)                                                                    \
    int kiln_cuew_##name##_supports(const kiln_node *n, const kiln_graph_value *const *in,          \
                                    const kiln_graph_value *const *out, char *why, size_t cap);    \
    kiln_status kiln_cuew_##name##_compute(kiln_ctx *ctx);
KILN_CUEW_BINARY_OPS(KILN_CUEW_DECLARE)
KILN_CUEW_UNARY_OPS(KILN_CUEW_DECLARE)
#undef KILN_CUEW_DECLARE

#endif
