/* The CUDA reduce family: ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1,
 * ReduceL2, ReduceLogSum, ReduceLogSumExp, ReduceSumSquare, ArgMax, ArgMin.
 *
 * The shared op definitions (src/cpu/kernels/reduce.c, reduce_arg.c) validate and set the output
 * shape; here the node's axes become a reduced-axis mask for kiln_cuda_reduce (kernels/reduce.h).
 * Like the CPU op, the axes come from input 1 when the node has it (ReduceSum from opset 13, the
 * others from 18) and from the `axes` attribute otherwise, so every Reduce* kernel is registered
 * from opset 1 with input 1 kept on the host. No axes: all of them, or none with
 * noop_with_empty_axes (then each element is reduced alone: Sum is a copy, SumSquare squares). */
#include "../cuda_ep.h"
#include "../kernels/reduce.h"

#include <stdio.h>
#include <string.h>

static const char *kind_name(int kind) {
    static const char *const names[] = {"ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin",
                                        "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
                                        "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin"};
    return kind >= 0 && kind < (int)(sizeof names / sizeof names[0]) ? names[kind] : "reduce";
}

static int reduce_supports_kind(int kind, const kiln_graph_value *const *in, char *why, size_t cap) {
    int dt = kiln_cuda_in_dtype(in, 0);
    if (!dt) {
        snprintf(why, cap, "the element type of the input is not known before running");
        return 0;
    }
    if (!kiln_cuda_reduce_supported(kind, dt)) {
        int is_int_kind = kind == KILN_CUDA_RK_SUM || kind == KILN_CUDA_RK_MAX ||
                          kind == KILN_CUDA_RK_MIN || kind == KILN_CUDA_RK_PROD ||
                          kind == KILN_CUDA_RK_ARGMAX || kind == KILN_CUDA_RK_ARGMIN;
        snprintf(why, cap, "%s on CUDA takes float32, float16, bfloat16%s; not %s", kind_name(kind),
                 is_int_kind ? ", int32 or int64" : "", kiln_dtype_name((kiln_dtype)dt));
        return 0;
    }
    return 1;
}

/* Marks the reduced axes of x in a->reduced, as the CPU's reduce_plan does. */
static kiln_status reduced_axes(kiln_ctx *ctx, const kiln_tensor *x, kiln_cuda_reduce_args *a) {
    int64_t axes[KILN_MAX_RANK];
    int n_axes = 0;
    kiln_tensor *at = ctx->n_in > 1 ? kiln_input(ctx, 1) : NULL;
    if (at) {
        if (kiln_numel(at) > x->rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input 'axes' has %lld entries for an input of rank %d",
                             (long long)kiln_numel(at), x->rank);
        KILN_TRY(kiln_read_ints(ctx, at, axes, KILN_MAX_RANK, &n_axes));
    } else {
        int n = 0;
        const int64_t *attr = kiln_attr_ints(ctx->node, "axes", &n);
        if (n > x->rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "attribute 'axes' has %d entries for an input of rank %d", n, x->rank);
        for (int i = 0; i < n; i++) axes[i] = attr[i];
        n_axes = n;
    }
    if (n_axes == 0) {
        int all = !kiln_attr_int(ctx->node, "noop_with_empty_axes", 0);
        for (int i = 0; i < x->rank; i++) a->reduced[i] = all;
        return KILN_OK;
    }
    for (int i = 0; i < n_axes; i++) {
        int ax;
        KILN_TRY(kiln_norm_axis(ctx, axes[i], x->rank, "axes", &ax));
        if (a->reduced[ax])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %lld appears twice in 'axes'",
                             (long long)axes[i]);
        a->reduced[ax] = 1;
    }
    return KILN_OK;
}

static kiln_status args_for(kiln_ctx *ctx, int kind, kiln_cuda_reduce_args *a, kiln_tensor **y) {
    kiln_tensor *x = kiln_input(ctx, 0);
    *y = kiln_output(ctx, 0);
    memset(a, 0, sizeof *a);
    if (x->rank > KILN_CUDA_REDUCE_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "rank %d is too high", x->rank);
    a->kind = kind;
    a->dtype = x->dtype;
    a->rank = x->rank;
    memcpy(a->dims, x->dims, sizeof(int64_t) * (size_t)x->rank);
    a->x = x->data;
    a->y = *y ? (*y)->data : NULL;
    return KILN_OK;
}

static kiln_status run_reduce(kiln_ctx *ctx, int kind) {
    kiln_cuda_reduce_args a;
    kiln_tensor *y;
    KILN_TRY(args_for(ctx, kind, &a, &y));
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    KILN_TRY(reduced_axes(ctx, kiln_input(ctx, 0), &a));
    KILN_CUDA_TRY(ctx, kiln_cuda_reduce(kiln_cuda_of(ctx), &a));
    return KILN_OK;
}

/* ArgMax / ArgMin: one axis (default 0); select_last_index from opset 12 */
static kiln_status run_arg(kiln_ctx *ctx, int kind) {
    kiln_cuda_reduce_args a;
    kiln_tensor *y;
    KILN_TRY(args_for(ctx, kind, &a, &y));
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), a.rank, "axis", &axis));
    a.reduced[axis] = 1;
    a.select_last = ctx->opset >= 12 && kiln_attr_int(ctx->node, "select_last_index", 0) != 0;
    KILN_CUDA_TRY(ctx, kiln_cuda_reduce(kiln_cuda_of(ctx), &a));
    return KILN_OK;
}

#define REDUCE_KERNEL(fn, KIND, RUN)                                                                \
    static int fn##_supports(const kiln_node *n, const kiln_graph_value *const *in,                 \
                             const kiln_graph_value *const *out, char *why, size_t cap) {          \
        return reduce_supports_kind(KIND, in, why, cap);                                            \
    }                                                                                               \
    static kiln_status fn##_compute(kiln_ctx *ctx) { return RUN(ctx, KIND); }

REDUCE_KERNEL(rsum, KILN_CUDA_RK_SUM, run_reduce)
REDUCE_KERNEL(rmean, KILN_CUDA_RK_MEAN, run_reduce)
REDUCE_KERNEL(rmax, KILN_CUDA_RK_MAX, run_reduce)
REDUCE_KERNEL(rmin, KILN_CUDA_RK_MIN, run_reduce)
REDUCE_KERNEL(rprod, KILN_CUDA_RK_PROD, run_reduce)
REDUCE_KERNEL(rl1, KILN_CUDA_RK_L1, run_reduce)
REDUCE_KERNEL(rl2, KILN_CUDA_RK_L2, run_reduce)
REDUCE_KERNEL(rlogsum, KILN_CUDA_RK_LOGSUM, run_reduce)
REDUCE_KERNEL(rlogsumexp, KILN_CUDA_RK_LOGSUMEXP, run_reduce)
REDUCE_KERNEL(rsumsq, KILN_CUDA_RK_SUMSQ, run_reduce)
REDUCE_KERNEL(argmax, KILN_CUDA_RK_ARGMAX, run_arg)
REDUCE_KERNEL(argmin, KILN_CUDA_RK_ARGMIN, run_arg)

/* input 1 (axes) is read on the host */
#define AXES_ON_HOST (1u << 1)
#define R(name, fn) {"", name, 1, AXES_ON_HOST, fn##_supports, NULL, NULL, fn##_compute}

const kiln_kernel kiln_cuda_kernels_reduce[] = {
    R("ReduceSum", rsum),
    R("ReduceMean", rmean),
    R("ReduceMax", rmax),
    R("ReduceMin", rmin),
    R("ReduceProd", rprod),
    R("ReduceL1", rl1),
    R("ReduceL2", rl2),
    R("ReduceLogSum", rlogsum),
    R("ReduceLogSumExp", rlogsumexp),
    R("ReduceSumSquare", rsumsq),
    {"", "ArgMax", 1, 0, argmax_supports, NULL, NULL, argmax_compute},
    {"", "ArgMin", 1, 0, argmin_supports, NULL, NULL, argmin_compute},
    {0}};
