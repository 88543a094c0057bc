/* Shared checks for the CUDA kernels' supports() functions. */
#include "../cuda_ep.h"

#include <stdio.h>

int kiln_cuda_float_type(int dtype) {
    return dtype == KILN_DTYPE_FLOAT || dtype == KILN_DTYPE_FLOAT16 || dtype == KILN_DTYPE_BFLOAT16;
}

int kiln_cuda_in_dtype(const kiln_graph_value *const *in, int i) {
    return in[i] && in[i]->has_type ? in[i]->type.dtype : 0;
}

int kiln_cuda_need_same_type(const kiln_node *n, const kiln_graph_value *const *in, unsigned mask,
                             int (*ok)(int dtype), const char *takes, char *why, size_t cap) {
    int want = kiln_cuda_in_dtype(in, 0);
    for (int i = 0; i < n->n_in && i < 32; i++) {
        if (!(mask & (1u << i)) || !in[i]) continue;
        int dt = kiln_cuda_in_dtype(in, i);
        if (!dt) {
            snprintf(why, cap, "the element type of input %d is not known before running", i);
            return 0;
        }
        if (!ok(dt) || dt != want) {
            snprintf(why, cap, "input %d has element type %s; the CUDA kernel takes %s, the same for every "
                     "input", i, kiln_dtype_name((kiln_dtype)dt), takes);
            return 0;
        }
    }
    return 1;
}

int kiln_cuda_need_float(const kiln_node *n, const kiln_graph_value *const *in, unsigned mask,
                         char *why, size_t cap) {
    return kiln_cuda_need_same_type(n, in, mask, kiln_cuda_float_type, "float32, float16 or bfloat16", why, cap);
}
