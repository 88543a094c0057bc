/* Helpers the misc kernels share (LinearAttention, CausalConvWithState, FlexAttention, the
 * optimisers): converting float tensors of any supported width to float32 / float64 working copies
 * and back, and the static-inference shortcut. Their prototypes are repeated in each misc_*.c
 * file that uses them (the family has no header of its own). */
#include "../../ops/op.h"

#include <stdlib.h>

int kmisc_is_float(int dt, int allow_double) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_FLOAT16 || dt == KILN_DTYPE_BFLOAT16 ||
           (allow_double && dt == KILN_DTYPE_DOUBLE);
}

float kmisc_load_f32(int dt, const void *p, int64_t i) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return ((const float *)p)[i];
    case KILN_DTYPE_FLOAT16: return kiln_f16_to_f32(((const kiln_f16 *)p)[i]);
    case KILN_DTYPE_BFLOAT16: return kiln_bf16_to_f32(((const kiln_bf16 *)p)[i]);
    default: return (float)kiln_load_f64(dt, p, i);
    }
}

void kmisc_store_f32(int dt, void *p, int64_t i, float v) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: ((float *)p)[i] = v; break;
    case KILN_DTYPE_FLOAT16: ((kiln_f16 *)p)[i] = kiln_f32_to_f16(v); break;
    case KILN_DTYPE_BFLOAT16: ((kiln_bf16 *)p)[i] = kiln_f32_to_bf16(v); break;
    default: kiln_store_f64(dt, p, i, v); break;
    }
}

/* A float32 copy of t's elements (malloc'd; at least one element so that empty tensors still
 * give a non-NULL pointer). NULL when out of memory. */
float *kmisc_f32_copy(const kiln_tensor *t) {
    int64_t n = kiln_numel(t);
    float *v = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
    if (!v) return NULL;
    for (int64_t i = 0; i < n; i++) v[i] = kmisc_load_f32(t->dtype, t->data, i);
    return v;
}

void kmisc_store_all_f32(kiln_tensor *t, const float *v, int64_t n) {
    for (int64_t i = 0; i < n; i++) kmisc_store_f32(t->dtype, t->data, i, v[i]);
}

/* In static inference an input whose shape is not fully known makes every output's shape
 * unknown; returns 1 when it did so (the caller then stops). */
int kmisc_static_unknown(kiln_ctx *ctx, int dtype) {
    if (!ctx->static_mode) return 0;
    int unknown = 0;
    for (int i = 0; i < ctx->n_in && !unknown; i++) {
        const kiln_tensor *t = kiln_input(ctx, i);
        if (t && !kiln_shape_concrete(t)) unknown = 1;
    }
    if (!unknown) return 0;
    for (int o = 0; o < ctx->n_out; o++)
        if (kiln_output(ctx, o)) kiln_set_output_unknown(ctx, o, dtype);
    return 1;
}
