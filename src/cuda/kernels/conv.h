/* Device kernels of the CUDA conv family (kernels/conv.cu): the epilogue after a cuDNN
 * convolution (bias, FusedConv's residual Z and activation), the zero-padding / cropping copy that
 * turns asymmetric pads into the symmetric ones cuDNN takes, and the pooling ops (MaxPool,
 * AveragePool, GlobalAveragePool, GlobalMaxPool), which run on our own kernels because cuDNN's
 * pooling has no ceil_mode, dilations or Indices.
 *
 * Plain C launchers: `stream` is a cudaStream_t, every pointer is device memory, dtype is a
 * kiln_dtype. Each returns KILN_OK or a failure recorded with kiln_cuda_fail/kiln_cuda_check. */
#ifndef KILN_CUDA_KERNELS_CONV_H
#define KILN_CUDA_KERNELS_CONV_H

#include "kiln.h"
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Activations of com.microsoft FusedConv (same numbering as the CPU kernel's KACT_*). */
enum {
    KILN_CUDA_ACT_NONE, KILN_CUDA_ACT_RELU, KILN_CUDA_ACT_TANH, KILN_CUDA_ACT_SIGMOID,
    KILN_CUDA_ACT_LEAKY, KILN_CUDA_ACT_CLIP, KILN_CUDA_ACT_HSIGMOID, KILN_CUDA_ACT_HSWISH
};

/* y[n, m, s] = act(y[n, m, s] + bias[m] + z[n, m, s]) in float32, in place, over `planes`
 * (= N * M) planes of plane_size values; bias and z may be NULL. act_a / act_b: LeakyRelu's
 * alpha, Clip's min/max, HardSigmoid's alpha/beta. dtype: float32, float16 or bfloat16. */
kiln_status kiln_cuda_conv_epilogue(void *stream, int dtype, void *y, const void *bias, const void *z,
                                    int64_t planes, int64_t channels, int64_t plane_size, int act,
                                    float act_a, float act_b);

/* Window copy over up to 3 spatial dims (lower ranks use leading 1s): for each of `planes` planes,
 * dst[o] = src[o - shift] where that lies inside src's dims, else 0. A positive shift pads at the
 * start, a negative one crops. elem_size: 2 or 4 bytes. */
kiln_status kiln_cuda_conv_shift_copy(void *stream, int elem_size, const void *src, void *dst,
                                      int64_t planes, const int64_t src_dims[3],
                                      const int64_t dst_dims[3], const int64_t shift[3]);

/* A sliding-window pooling over 3 spatial dims (lower ranks use leading 1s with k = s = dil = 1). */
typedef struct kiln_cuda_pool_geom {
    int64_t planes;                       /* N * C */
    int64_t in[3], out[3];
    int64_t k[3], stride[3], dil[3], pad_b[3], pad_e[3];
    int is_max;                           /* 1: MaxPool, 0: AveragePool */
    int count_include_pad;                /* AveragePool */
    int storage_order;                    /* MaxPool Indices: 1 = column-major */
} kiln_cuda_pool_geom;

/* MaxPool / AveragePool. dtype: float32, float16, bfloat16 (and int8/uint8 for MaxPool). y and
 * indices (int64, MaxPool's second output) may each be NULL. */
kiln_status kiln_cuda_pool(void *stream, int dtype, const kiln_cuda_pool_geom *g, const void *x,
                           void *y, int64_t *indices);

/* GlobalAveragePool (is_max 0) / GlobalMaxPool (1): one value per plane of plane_size values. */
kiln_status kiln_cuda_global_pool(void *stream, int dtype, int is_max, const void *x, void *y,
                                  int64_t planes, int64_t plane_size);

/* ---- host side: window geometry shared by ops/conv.c and ops/pool.c (defined in ops/pool.c) ---- */

struct kiln_node;

enum { KILN_CUDA_PAD_NOTSET, KILN_CUDA_PAD_SAME_UPPER, KILN_CUDA_PAD_SAME_LOWER, KILN_CUDA_PAD_VALID };

/* The node's auto_pad as KILN_CUDA_PAD_*, or -1 when it is not one of the four. */
int kiln_cuda_auto_pad(const struct kiln_node *n);

/* Sliding-window geometry over nd (1..3) spatial dims, as the ops' shared infer computes it. */
typedef struct kiln_cuda_window {
    int nd;
    int64_t in[3], out[3], k[3], stride[3], dil[3], pad_b[3], pad_e[3];
} kiln_cuda_window;

/* Reads strides, dilations (when use_dilations), pads and auto_pad of node n for the window
 * sizes k over the input sizes in, and computes pads and output sizes (ceil_mode: pooling's
 * rounding up). Returns 1, or 0 with the reason in why. */
int kiln_cuda_window_geom(const struct kiln_node *n, int nd, const int64_t *in, const int64_t *k,
                          int use_dilations, int ceil_mode, kiln_cuda_window *w, char *why, size_t cap);

#ifdef __cplusplus
}
#endif

#endif
