/* Shared by the CUDA data-movement glue (ops/data.c, data_shape.c, data_index.c,
 * data_resize.c): the kernels of each file, and small helpers for supports() and compute(). */
#ifndef KILN_CUDA_OPS_DATA_INTERNAL_H
#define KILN_CUDA_OPS_DATA_INTERNAL_H

#include "../cuda_ep.h"
#include "../kernels/data.h"

#include <stdint.h>
#include <stdio.h>

/* Bytes of one element for the element-moving kernels (1, 2, 4, 8, 16); 0 for strings, sub-byte
 * and unknown types, which they cannot address. */
size_t kiln_cuda_data_elem(int dtype);
/* supports(): 1 when input i has a known type the element-moving kernels take, else 0 with why. */
int kiln_cuda_data_movable(const kiln_node *n, const kiln_graph_value *const *in, int i, char *why, size_t cap);
/* supports(): 1 when input i's rank is known and at most max, else 0 with why. */
int kiln_cuda_data_rank_at_most(const kiln_node *n, const kiln_graph_value *const *in, int i, int max, char *why,
                                size_t cap);
/* The provider's stream (a cudaStream_t) for the launchers. */
void *kiln_cuda_data_stream(kiln_ctx *ctx);
/* Reads a host int32/int64 tensor of rank <= 1 (an empty one gives *count = 0). */
kiln_status kiln_cuda_data_ints(kiln_ctx *ctx, const kiln_tensor *t, const char *what, int64_t *out, int max,
                                int *count);
/* Fails the node with the launcher's message unless st is KILN_OK. */
kiln_status kiln_cuda_data_launched(kiln_ctx *ctx, kiln_status st);

/* One kernel table entry's functions, per op. */
#define KILN_CUDA_DATA_DECLARE(op)                                                                  \
    int kiln_cuda_##op##_supports(const kiln_node *n, const kiln_graph_value *const *in,            \
                                  const kiln_graph_value *const *out, char *why, size_t cap);       \
    kiln_status kiln_cuda_##op##_compute(kiln_ctx *ctx);

/* data_shape.c */
KILN_CUDA_DATA_DECLARE(slice)
KILN_CUDA_DATA_DECLARE(pad)
KILN_CUDA_DATA_DECLARE(expand)
KILN_CUDA_DATA_DECLARE(tile)
KILN_CUDA_DATA_DECLARE(trilu)
/* data_index.c */
KILN_CUDA_DATA_DECLARE(gather)
KILN_CUDA_DATA_DECLARE(gather_elements)
KILN_CUDA_DATA_DECLARE(gather_nd)
KILN_CUDA_DATA_DECLARE(scatter_nd)
/* data_resize.c */
KILN_CUDA_DATA_DECLARE(resize)

#endif
