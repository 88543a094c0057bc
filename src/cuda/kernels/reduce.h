/* Launcher of the CUDA reduce family (reduce.cu): Reduce{Sum,Mean,Max,Min,Prod,L1,L2,LogSum,
 * LogSumExp,SumSquare} and ArgMax / ArgMin over any set of axes of a contiguous tensor.
 *
 * Semantics follow the CPU kernels (src/cpu/kernels/reduce_kernels.c, reduce_arg.c): float types
 * accumulate in float32 (float16 / bfloat16 are widened), Max/Min propagate NaN, LogSumExp
 * returns the maximum itself when it is not finite, Mean of no elements is NaN and every other
 * empty reduction gives the operation's identity; int32 / int64 accumulate in 64-bit two's
 * complement (wrapping like the CPU) and are truncated back. ArgMax / ArgMin give int64 indices
 * of the first (select_last: last) extreme, comparing half types as float32.
 *
 * Enqueues on the provider's stream, never synchronises; takes the provider for its SM count and
 * for workspace when long reductions are split over several blocks. */
#ifndef KILN_CUDA_KERNELS_REDUCE_H
#define KILN_CUDA_KERNELS_REDUCE_H

#include "../cuda_provider.h"

#ifdef __cplusplus
extern "C" {
#endif

enum {
    KILN_CUDA_RK_SUM, KILN_CUDA_RK_MEAN, KILN_CUDA_RK_MAX, KILN_CUDA_RK_MIN, KILN_CUDA_RK_PROD,
    KILN_CUDA_RK_L1, KILN_CUDA_RK_L2, KILN_CUDA_RK_LOGSUM, KILN_CUDA_RK_LOGSUMEXP,
    KILN_CUDA_RK_SUMSQ, KILN_CUDA_RK_ARGMAX, KILN_CUDA_RK_ARGMIN
};

#define KILN_CUDA_REDUCE_MAX_RANK 16

typedef struct kiln_cuda_reduce_args {
    int kind;          /* KILN_CUDA_RK_* */
    int dtype;         /* x's type; y has it too, except int64 for ArgMax / ArgMin */
    int select_last;   /* ArgMax / ArgMin: the last index among equal extremes */
    int rank;
    int64_t dims[KILN_CUDA_REDUCE_MAX_RANK];
    int reduced[KILN_CUDA_REDUCE_MAX_RANK]; /* 1: axis i is reduced (none: y = op(x) per element) */
    const void *x;
    void *y;           /* the kept dims in order (keepdims only changes the shape) */
} kiln_cuda_reduce_args;

/* 1 when the launcher takes (kind, dtype): float32/float16/bfloat16 for every kind, int32/int64
 * for Sum, Max, Min, Prod, ArgMax and ArgMin. */
int kiln_cuda_reduce_supported(int kind, int dtype);

kiln_status kiln_cuda_reduce(kiln_cuda_provider *p, const kiln_cuda_reduce_args *a);

#ifdef __cplusplus
}
#endif

#endif
