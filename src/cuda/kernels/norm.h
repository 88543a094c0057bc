/* Launchers of the CUDA norm family: row normalisations (LayerNormalization, the simplified /
 * RMS forms and the com.microsoft Skip* variants; norm.cu), Softmax / LogSoftmax / Hardmax
 * (norm_softmax.cu), and the channel normalisations Group / Instance / BatchNormalization
 * (norm_channel.cu).
 *
 * Every launcher enqueues on `stream` (a cudaStream_t), never synchronises, takes device pointers
 * and returns a kiln_status, recording the failure message with kiln_cuda_fail / kiln_cuda_check.
 * Data types are kiln dtype numbers; X's type is one of float32, float16, bfloat16. All tensors
 * are contiguous row-major. Statistics are computed in float32. */
#ifndef KILN_CUDA_KERNELS_NORM_H
#define KILN_CUDA_KERNELS_NORM_H

#include "../cuda_provider.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Row normalisation of x viewed as [rows, n]:
 *   s = x (+ skip[r % skip_rows] + bias)            (skip variants; sum gets s when wanted)
 *   mean = simplified ? 0 : avg(s);  var = avg((s - mean)^2);  inv = 1 / sqrt(var + eps)
 *   y = (s - mean) * inv * gamma + beta
 * gamma / beta have X's dtype and hold n values per row, the same for every row (row stride 0) or
 * one set per row (row stride n). NULL pointers are absent inputs / unwanted outputs. mean and inv
 * (float32, one per row) are written when not NULL. */
typedef struct kiln_cuda_ln_args {
    int dtype;
    int simplified;
    int64_t rows, n;
    float eps;
    const void *x;
    const void *skip;     /* [skip_rows, n] or NULL */
    int64_t skip_rows;
    const void *bias;     /* [n] or NULL (skip variants) */
    const void *gamma;    /* or NULL (scale 1) */
    const void *beta;     /* or NULL (shift 0) */
    int64_t gamma_row_stride, beta_row_stride;
    void *y;              /* or NULL */
    void *sum;            /* input + skip + bias, or NULL */
    float *mean, *inv;    /* or NULL */
} kiln_cuda_ln_args;

kiln_status kiln_cuda_layer_norm(void *stream, const kiln_cuda_ln_args *a);

/* Softmax family over x viewed as [outer, n, inner], along n. */
enum { KILN_CUDA_SOFTMAX = 0, KILN_CUDA_LOG_SOFTMAX = 1, KILN_CUDA_HARDMAX = 2 };
kiln_status kiln_cuda_softmax(void *stream, int kind, int dtype, const void *x, void *y,
                              int64_t outer, int64_t n, int64_t inner);

/* Group normalisation of x [batch, channels, inner...] with `groups` groups per sample (instance
 * normalisation: groups = channels). Statistics per (sample, group) over channels/groups * inner
 * elements; y = (x - mean) * inv * scale[c / param_div] + bias[c / param_div] for channel c
 * (param_div = channels per group when the parameters are per group, else 1). scale and bias may
 * have any float type (scale_dtype, bias_dtype). Needs scratch from the provider's workspace when
 * a (sample, group) is split over several blocks, so it takes the provider. */
typedef struct kiln_cuda_gn_args {
    int dtype, scale_dtype, bias_dtype;
    int64_t batch, channels, groups, inner, param_div;
    float eps;
    const void *x, *scale, *bias;
    void *y;
} kiln_cuda_gn_args;

kiln_status kiln_cuda_group_norm(kiln_cuda_provider *p, const kiln_cuda_gn_args *a);

/* Batch normalisation with given statistics (inference):
 * y = (x - mean[c]) * scale[c] / sqrt(var[c] + eps) + bias[c] over x [batch, channels, inner].
 * Each parameter may have any float type. */
typedef struct kiln_cuda_bn_args {
    int dtype;
    int scale_dtype, bias_dtype, mean_dtype, var_dtype;
    int64_t batch, channels, inner;
    float eps;
    const void *x, *scale, *bias, *mean, *var;
    void *y;
} kiln_cuda_bn_args;

kiln_status kiln_cuda_batch_norm(void *stream, const kiln_cuda_bn_args *a);

#ifdef __cplusplus
}
#endif

#endif
