/* Shared checks for the CUDA kernels' supports() functions. */
#include "../cuda_ep.h"

#include <stdio.h>

int kiln_cuda_float_type(int dtype) {
    return dtype == KILN_DTYPE_FLOAT || dtype == KILN_DTYPE_FLOAT16 || dtype == KILN_DTYPE_BFLOAT16;
}

int kiln_cuda_in_dtype(const kiln_graph_value *const *in, int i) {
    return in[i] && in[i]->has_type ? in[i]->type.dtype : 0;
}

int kiln_cuda_need_float(const kiln_node *n, const kiln_graph_value *const *in, unsigned mask,
                         char *why, size_t cap) {
    int want = kiln_cuda_in_dtype(in, 0);
    for (int i = 0; i < n->n_in && i < 32; i++) {
        if (!(mask & (1u << i)) || !in[i]) continue;
        int dt = kiln_cuda_in_dtype(in, i);
        if (!dt) {
            snprintf(why, cap, "the element type of input %d is not known before running", i);
            return 0;
        }
        if (!kiln_cuda_float_type(dt) || dt != want) {
            snprintf(why, cap, "input %d has element type %s; the CUDA kernel takes float32, float16 or "
                     "bfloat16, the same for every float input", i, kiln_dtype_name((kiln_dtype)dt));
            return 0;
        }
    }
    return 1;
}
