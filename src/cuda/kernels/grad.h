/* Launchers of the CUDA training family: the kiln-domain gradient kernels (grad.cu: element-wise,
 * reductions and index-driven ones; grad_nn.cu: softmax and the normalisations) and the fused
 * optimizer step and gradient accumulation the training module runs on the device (train.cu).
 *
 * Each enqueues on `stream` (a cudaStream_t), never synchronises, takes device pointers to
 * contiguous row-major float32 tensors (indices int32 or int64, a kiln dtype number) and returns a
 * kiln_status, recording the failure with kiln_cuda_check. The arithmetic follows the CPU kernels
 * (src/cpu/kernels/grad_*.c); sums over rows are taken in double as the CPU takes them. Shape
 * arrays (dims, strides) are passed by value in the structs below, at most KILN_CUDA_GRAD_RANK
 * dimensions. */
#ifndef KILN_CUDA_KERNELS_GRAD_H
#define KILN_CUDA_KERNELS_GRAD_H

#include "../cuda_provider.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_CUDA_GRAD_RANK 8

/* y[i] = g[i] * f'(t[i]) for UnaryGrad's kinds (numbered as grad_elementwise.c's enum). */
kiln_status kiln_cuda_unary_grad(void *stream, int kind, float alpha, float beta, const float *g, const float *t,
                                 float *y, int64_t n);
/* y[i] = g[i] * p * x[i]^(p - 1) (p == 2: 2x; p == 1: 1), as PowGrad. */
kiln_status kiln_cuda_pow_grad(void *stream, double p, const float *g, const float *x, float *y, int64_t n);

/* A strided gather: y[i] = scale * g[off(i)] over y's elements, where off(i) = sum_d idx_d(i) * gstride[d]
 * for y's index (idx_d) in dims[rank] (ReduceGrad: gstride 0 on the reduced axes). */
typedef struct kiln_cuda_bcast {
    int rank;
    int64_t dims[KILN_CUDA_GRAD_RANK];    /* y's shape */
    int64_t gstride[KILN_CUDA_GRAD_RANK]; /* g's stride for each of y's axes */
} kiln_cuda_bcast;
kiln_status kiln_cuda_bcast_scale(void *stream, const kiln_cuda_bcast *b, float scale, const float *g, float *y);

/* SumTo / TileGrad: y[j] = scale * sum of g over the elements that map onto y[j]. g's shape is
 * split into kept axes (y's, by kdims / kstride in g) and summed axes (sdims / sstride in g); one
 * thread per y element walks the summed ones, so the sum's order is fixed (deterministic). */
typedef struct kiln_cuda_sumto_args {
    int krank, srank;
    int64_t kdims[KILN_CUDA_GRAD_RANK], kstride[KILN_CUDA_GRAD_RANK];
    int64_t sdims[2 * KILN_CUDA_GRAD_RANK], sstride[2 * KILN_CUDA_GRAD_RANK];
    int64_t ny, nsum;
} kiln_cuda_sumto_args;
kiln_status kiln_cuda_sumto(void *stream, const kiln_cuda_sumto_args *s, float scale, const float *g, float *y);

/* SliceGrad's scatter: y (already zeroed) at yoff + sum_d idx_d * ystep[d] gets g's element, over
 * g's shape dims. PadGrad's gather: y[i] = g[i's index + lo] or 0 outside g (dims: y's shape). */
kiln_status kiln_cuda_slice_scatter(void *stream, const kiln_cuda_bcast *g_shape, int64_t yoff,
                                    const float *g, float *y);
typedef struct kiln_cuda_padgrad {
    int rank;
    int64_t ydims[KILN_CUDA_GRAD_RANK], gdims[KILN_CUDA_GRAD_RANK], lo[KILN_CUDA_GRAD_RANK];
} kiln_cuda_padgrad;
kiln_status kiln_cuda_pad_grad(void *stream, const kiln_cuda_padgrad *a, const float *g, float *y);

/* GatherGrad: y [outer, len, inner] zeroed, then y[o, ind[j], t] += g[o, j, t]. float32 atomics:
 * rows gathered more than once sum in an unspecified order (not bitwise deterministic). An index
 * outside [-len, len) is skipped (the CPU provider reports it). */
kiln_status kiln_cuda_gather_grad(void *stream, const float *g, const void *ind, int ind_dtype, int64_t n_ind,
                                  int64_t outer, int64_t len, int64_t inner, float *y);

/* NLLLossGrad: y [N, C, D] zeroed, then y[n, t, d] = -w[t] * g (g[n*D+d] for reduction none, else
 * g[0], divided by the sum of the weights of the counted targets for mean). Targets equal to
 * ignore_index or outside [0, C) are skipped. w may be NULL. */
kiln_status kiln_cuda_nll_grad(void *stream, const float *g, int per_elem, int mean, const void *target,
                               int target_dtype, const float *w, int64_t N, int64_t C, int64_t D,
                               int64_t ignore_index, float *y);

/* NegativeLogLikelihoodLoss (the forward loss the training graphs end with): loss[i] = -x[n, t, d] w[t]
 * per target i = n * D + d (0 where t is ignore_index when has_ignore, or outside [0, C): the CPU
 * provider reports those), then reduction 0 none (y [N*D]), 1 sum, 2 mean (sum / sum of the weights),
 * in double in a fixed order. */
kiln_status kiln_cuda_nll_loss(void *stream, const float *x, const void *target, int target_dtype, const float *w,
                               int64_t N, int64_t C, int64_t D, int has_ignore, int64_t ignore_index,
                               int reduction, float *y);

/* MaxPoolGrad / AveragePoolGrad over planes of nd (1..3) spatial dims: each X element gathers from
 * the windows that hold it, in the forward's window order, so no two threads write one element
 * and the sums run in the CPU's order. MaxPool's window maximum is found again from x (the first on
 * ties); AveragePool divides by the window's valid taps, or with include_pad by its extent clipped
 * to the padded input. Windows of at most KILN_CUDA_POOLGRAD_K taps per axis. */
#define KILN_CUDA_POOLGRAD_K 32
typedef struct kiln_cuda_poolgrad {
    int nd, max, include_pad;
    int64_t planes;
    int64_t in[3], out[3], k[3], stride[3], dil[3], pad_b[3], pad_e[3];
} kiln_cuda_poolgrad;
kiln_status kiln_cuda_pool_grad(void *stream, const kiln_cuda_poolgrad *a, const float *dy, const float *x, float *dx);

/* SoftmaxGrad over [outer, n, inner] along n: log ? g - exp(y) sum(g) : y (g - sum(g y)). */
kiln_status kiln_cuda_softmax_grad(void *stream, int log, const float *g, const float *y, float *x, int64_t outer,
                                   int64_t n, int64_t inner);

/* LayerNormGrad over [M, D] rows with scale [D]: dx (or NULL), ds, db (or NULL). stats: scratch of
 * 2 * M doubles (per-row mean and 1/std). */
kiln_status kiln_cuda_layernorm_grad(void *stream, const float *g, const float *x, const float *s, float *dx,
                                     float *ds, float *db, int64_t M, int64_t D, double eps, double *stats);

/* BatchNormGrad (inference statistics) over x [N, C, S]. */
kiln_status kiln_cuda_batchnorm_grad(void *stream, const float *g, const float *x, const float *s, const float *mean,
                                     const float *var, float *dx, float *ds, float *db, int64_t N, int64_t C,
                                     int64_t S, double eps);

/* InstanceNormGrad over x [N, C, D]. rows: scratch of 2 * N * C doubles. */
kiln_status kiln_cuda_instancenorm_grad(void *stream, const float *g, const float *x, const float *s, float *dx,
                                        float *ds, float *db, int64_t N, int64_t C, int64_t D, double eps,
                                        double *rows);

/* ---- the training module's device steps (train.cu) ---- */

/* dst[i] += src[i] */
kiln_status kiln_cuda_accumulate_f32(void *stream, float *dst, const float *src, int64_t n);

/* The fused AdamW / SGD step, torch.optim's float32 arithmetic without contraction into FMAs (as
 * the CPU's train/optimizer.c computes it); the scalars come precomputed. */
typedef struct kiln_cuda_optim {
    int adamw;
    float *param;
    const float *grad;
    float *m, *v;
    int64_t n;
    float decay, w1, b2, c2, bc2_sqrt, eps, neg_step;
    float wd, mom, keep, neg_lr;
    int nesterov, first;
} kiln_cuda_optim;
kiln_status kiln_cuda_optim_step(void *stream, const kiln_cuda_optim *u);

#ifdef __cplusplus
}
#endif

#endif
