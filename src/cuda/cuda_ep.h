/* The CUDA execution provider as the runtime sees it (core/provider.h), and what its kernels use.
 *
 * Kernels are grouped by family: the device code in kernels/<family>.cu exposes plain C launchers
 * (kernels/<family>.h), and the glue in ops/<family>.c reads the node's inputs and attributes,
 * checks what the launchers take, and registers a kiln_kernel table kiln_cuda_kernels_<family>[]
 * (listed in cuda_ep.c). Every input and output of a kernel is in device memory except those its
 * host_inputs bits name; outputs are allocated by the runtime (after the shared infer) before
 * compute runs. Kernels enqueue on the provider's stream and never synchronise it; they report a
 * CUDA failure with KILN_CUDA_FAIL(ctx, what). */
#ifndef KILN_CUDA_EP_H
#define KILN_CUDA_EP_H

#include "../core/provider.h"
#include "../ops/op.h"
#include "cuda_provider.h"

typedef struct kiln_cuda_ep {
    kiln_provider base;
    kiln_cuda_provider *cp;
    void *cublaslt;          /* cublasLtHandle_t */
    void *cudnn;             /* cudnnHandle_t, made on first use (loading cuDNN costs ~100 MB) */
    char desc[320];
} kiln_cuda_ep;

static inline kiln_cuda_ep *kiln_cuda_ep_of(kiln_ctx *ctx) { return (kiln_cuda_ep *)ctx->ep; }
static inline kiln_cuda_provider *kiln_cuda_of(kiln_ctx *ctx) { return ((kiln_cuda_ep *)ctx->ep)->cp; }
/* The cuDNN handle (cudnnHandle_t) on the provider's stream, created on first use. */
kiln_status kiln_cuda_cudnn(kiln_ctx *ctx, void **handle);

/* Turns the last CUDA failure (kiln_cuda_last_error) into the node's error. */
#define KILN_CUDA_FAIL(ctx, st) KILN_FAIL(ctx, (st), "%s", kiln_cuda_last_error())
/* Runs a kiln_status call of the CUDA base and fails the node with its message. */
#define KILN_CUDA_TRY(ctx, call)                                                                    \
    do {                                                                                            \
        kiln_status cst_ = (call);                                                                  \
        if (cst_ != KILN_OK) return KILN_CUDA_FAIL(ctx, cst_);                                      \
    } while (0)

/* ---- helpers for supports() (ops/cuda_support.c) ---- */
/* 1 when t is float32, float16 or bfloat16. */
int kiln_cuda_float_type(int dtype);
/* The static dtype of node input i (0 when absent or unknown). */
int kiln_cuda_in_dtype(const kiln_graph_value *const *in, int i);
/* Writes "input i has element type X, the CUDA kernel takes float32/float16/bfloat16" into why
 * and returns 0 unless every present input in mask has a float type equal to input 0's. */
int kiln_cuda_need_float(const kiln_node *n, const kiln_graph_value *const *in, unsigned mask,
                         char *why, size_t cap);
/* The same with the accepted types given by ok() and described by `takes` for the message. */
int kiln_cuda_need_same_type(const kiln_node *n, const kiln_graph_value *const *in, unsigned mask,
                             int (*ok)(int dtype), const char *takes, char *why, size_t cap);

/* Kernel families (each table ends with an entry whose name is NULL). */
#define KILN_CUDA_FAMILIES(X)                                                                       \
    X(elementwise) X(norm) X(reduce) X(data) X(matmul) X(conv) X(attention) X(attention_onnx) X(grad) X(grad_conv)
#define KILN_CUDA_DECLARE(f) extern const kiln_kernel kiln_cuda_kernels_##f[];
KILN_CUDA_FAMILIES(KILN_CUDA_DECLARE)
#undef KILN_CUDA_DECLARE

#endif
