/* Element-wise CUDA kernels: unary math and activations, binary arithmetic and comparisons with
 * numpy broadcasting, Where, Clip, the com.microsoft Gelu family, and Cast.
 *
 * One entry point launches any of them: kiln_cuda_ew_launch(op, inputs, output). The inputs are
 * broadcast onto the output's shape (dims of 1 and missing leading dims repeat); the host folds
 * the shapes into at most KILN_EW_MAX_RANK axes of per-operand strides, passed by value in the
 * kernel's argument, so a launch allocates nothing and reads nothing back. The kernel family
 * (ops/elementwise*.c) asks kiln_cuda_ew_supported() at placement which (op, dtypes) exist, so
 * the launcher never meets a combination it has no kernel for.
 *
 * Device code: kernels/elementwise*.cu (shared templates in elementwise_impl.cuh). */
#ifndef KILN_CUDA_KERNELS_ELEMENTWISE_H
#define KILN_CUDA_KERNELS_ELEMENTWISE_H

#include "kiln.h"
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum { KILN_EW_MAX_IN = 3, KILN_EW_MAX_RANK = 8 };

/* The operations. Inputs are listed per group; all inputs of a group share one element type
 * unless said otherwise. */
typedef enum kiln_ew_op {
    /* one input, output of the input's type */
    KILN_EW_ABS, KILN_EW_NEG, KILN_EW_SIGN, KILN_EW_RELU,          /* float and int32/int64 */
    KILN_EW_EXP, KILN_EW_LOG, KILN_EW_SQRT, KILN_EW_RECIPROCAL,    /* float only from here */
    KILN_EW_SIN, KILN_EW_COS, KILN_EW_FLOOR, KILN_EW_CEIL, KILN_EW_ROUND, KILN_EW_ERF,
    KILN_EW_SIGMOID, KILN_EW_TANH, KILN_EW_LEAKY_RELU, KILN_EW_ELU, KILN_EW_SELU,
    KILN_EW_SOFTPLUS, KILN_EW_HARD_SIGMOID, KILN_EW_HARD_SWISH, KILN_EW_MISH,
    KILN_EW_GELU,       /* mode 1: tanh approximation (ONNX Gelu-20), else erf */
    KILN_EW_FAST_GELU,  /* com.microsoft FastGelu without bias */
    KILN_EW_QUICK_GELU, /* x * sigmoid(alpha x) */
    /* one input, bool output */
    KILN_EW_ISNAN, KILN_EW_ISINF, /* IsInf mode: bit 0 detect negative, bit 1 detect positive */
    KILN_EW_NOT,                  /* bool -> bool */
    /* one input of any supported type, output of another (or the same) type */
    KILN_EW_CAST,
    /* two inputs, output of their type */
    KILN_EW_ADD, KILN_EW_SUB, KILN_EW_MUL, KILN_EW_DIV, KILN_EW_MAX, KILN_EW_MIN,
    KILN_EW_MOD,        /* mode 1: fmod (sign of the dividend), else Python's % (integers) */
    KILN_EW_POW,        /* the exponent (input 1) may have another numeric type */
    KILN_EW_MEAN_LAST,  /* (a + b) / alpha: the last step of a variadic Mean */
    KILN_EW_BIAS_GELU,  /* erf Gelu of a + b */
    KILN_EW_FAST_GELU_BIAS, /* tanh Gelu of a + b */
    /* two inputs, bool output */
    KILN_EW_EQUAL, KILN_EW_LESS, KILN_EW_LESS_EQUAL, KILN_EW_GREATER, KILN_EW_GREATER_EQUAL,
    KILN_EW_AND, KILN_EW_OR, KILN_EW_XOR, /* bool inputs */
    /* three inputs */
    KILN_EW_WHERE,      /* (bool cond, x, y), x/y any type of 1, 2, 4 or 8 bytes */
    KILN_EW_BIAS_ADD,   /* a + b + c */
    KILN_EW_CLIP,       /* (x, lo, hi); mode bit 0: lo given, bit 1: hi given, bit 2: the bounds
                           are alpha/beta (Clip before opset 11); an absent bound's operand may
                           be any readable pointer of x's type (it is loaded, not used) */
    KILN_EW_COUNT
} kiln_ew_op;

/* A device tensor as the launcher sees it: contiguous row-major. */
typedef struct kiln_ew_operand {
    const void *data;
    int dtype;
    int rank;
    const int64_t *dims;
} kiln_ew_operand;

/* Attribute values; each op reads what it needs (see the list above). */
typedef struct kiln_ew_params {
    float alpha, beta, gamma;
    int mode;
} kiln_ew_params;

/* The number of inputs op takes (1, 2 or 3). */
int kiln_cuda_ew_arity(int op);

/* 1 when there is a kernel for op over inputs of in_dtypes[0..arity) giving out_dtype. */
int kiln_cuda_ew_supported(int op, const int *in_dtypes, int out_dtype);

/* out = op(in[0], ..., in[arity-1]) with the inputs broadcast onto out's shape, enqueued on
 * stream (a cudaStream_t). Empty outputs launch nothing. Fails (kiln_cuda_last_error) when the
 * shapes do not broadcast, the folded rank exceeds KILN_EW_MAX_RANK, or no kernel exists. */
kiln_status kiln_cuda_ew_launch(void *stream, int op, const kiln_ew_operand *in,
                                const kiln_ew_operand *out, const kiln_ew_params *params);

#ifdef __cplusplus
}
#endif

#endif
