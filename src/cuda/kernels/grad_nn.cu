/* Gradient kernels of softmax and the normalisations on the GPU: SoftmaxGrad, LayerNormGrad,
 * BatchNormGrad (inference statistics) and InstanceNormGrad (see grad.h). As the CPU kernels
 * (src/cpu/kernels/grad_nn.c), the row statistics and sums are taken in double, in a fixed order
 * (per thread, then a tree), so results do not depend on scheduling. */
#include "grad.h"

#include <cuda_runtime.h>
#include <math.h>

namespace {

constexpr int kThreads = 256;

__device__ __forceinline__ float ftz(float v) { return fabsf(v) < 1.17549435e-38f ? 0.0f : v; }

/* The sum of v over the block (blockDim.x == kThreads), returned to every thread. */
__device__ double block_sum(double v, double *sh) {
    sh[threadIdx.x] = v;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s >>= 1) {
        if ((int)threadIdx.x < s) sh[threadIdx.x] += sh[threadIdx.x + s];
        __syncthreads();
    }
    double r = sh[0];
    __syncthreads(); /* sh is reused by the next call */
    return r;
}

/* grid-stride over rows: rows may exceed grid.x's practical size */
__device__ __forceinline__ int64_t row0() { return blockIdx.x; }
__device__ __forceinline__ int64_t rows_step() { return gridDim.x; }

unsigned row_blocks(int64_t rows) { return (unsigned)(rows < 65535 * 16 ? (rows > 0 ? rows : 1) : 65535 * 16); }

/* One block per (outer, inner) row of n elements spaced `inner` apart. */
__global__ void softmax_grad_kernel(int log, const float *__restrict__ g, const float *__restrict__ y,
                                    float *__restrict__ x, int64_t outer, int64_t n, int64_t inner) {
    __shared__ double sh[kThreads];
    for (int64_t r = row0(); r < outer * inner; r += rows_step()) {
        int64_t o = r / inner, in = r % inner, base = o * n * inner + in;
        double acc = 0;
        for (int64_t k = threadIdx.x; k < n; k += kThreads) {
            double gv = g[base + k * inner];
            acc += log ? gv : gv * (double)y[base + k * inner];
        }
        acc = block_sum(acc, sh);
        float a = (float)acc;
        for (int64_t k = threadIdx.x; k < n; k += kThreads) {
            int64_t i = base + k * inner;
            x[i] = log ? ftz(g[i] - expf(y[i]) * a) : ftz(y[i] * (g[i] - a));
        }
    }
}

/* Per row: mean, 1/std, then dX = rstd (g s - mean(g s) - xhat mean(g s xhat)). */
__global__ void layernorm_rows_kernel(const float *__restrict__ g, const float *__restrict__ x,
                                      const float *__restrict__ s, float *__restrict__ dx, int64_t M, int64_t D,
                                      double eps, double *__restrict__ stats) {
    __shared__ double sh[kThreads];
    for (int64_t r = row0(); r < M; r += rows_step()) {
        const float *xr = x + r * D, *gr = g + r * D;
        double mu = 0, var = 0;
        for (int64_t k = threadIdx.x; k < D; k += kThreads) mu += xr[k];
        mu = block_sum(mu, sh) / (double)D;
        for (int64_t k = threadIdx.x; k < D; k += kThreads) var += ((double)xr[k] - mu) * ((double)xr[k] - mu);
        double rs = 1.0 / sqrt(block_sum(var, sh) / (double)D + eps);
        if (threadIdx.x == 0) {
            stats[r] = mu;
            stats[M + r] = rs;
        }
        if (!dx) continue;
        double m1 = 0, m2 = 0;
        for (int64_t k = threadIdx.x; k < D; k += kThreads) {
            double gs = (double)gr[k] * s[k];
            m1 += gs;
            m2 += gs * ((double)xr[k] - mu);
        }
        m1 = block_sum(m1, sh) / (double)D;
        m2 = block_sum(m2, sh) * rs / (double)D;
        for (int64_t k = threadIdx.x; k < D; k += kThreads)
            dx[r * D + k] = (float)(rs * ((double)gr[k] * s[k] - m1 - ((double)xr[k] - mu) * rs * m2));
    }
}

/* dScale, dBias: one thread per column, rows in order (coalesced across the warp). */
__global__ void layernorm_cols_kernel(const float *__restrict__ g, const float *__restrict__ x, float *__restrict__ ds,
                                      float *__restrict__ db, int64_t M, int64_t D, const double *__restrict__ stats) {
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < D; c += (int64_t)gridDim.x * blockDim.x) {
        double as = 0, ab = 0;
        for (int64_t r = 0; r < M; r++) {
            double gv = g[r * D + c];
            as += gv * ((double)x[r * D + c] - stats[r]) * stats[M + r];
            ab += gv;
        }
        if (ds) ds[c] = ftz((float)as);
        if (db) db[c] = ftz((float)ab);
    }
}

/* One block per channel: dScale, dBias as sums, dX = g scale rstd. */
__global__ void batchnorm_grad_kernel(const float *__restrict__ g, const float *__restrict__ x,
                                      const float *__restrict__ s, const float *__restrict__ mean,
                                      const float *__restrict__ var, float *__restrict__ dx, float *__restrict__ ds,
                                      float *__restrict__ db, int64_t N, int64_t C, int64_t S, double eps) {
    __shared__ double sh[kThreads];
    for (int64_t c = row0(); c < C; c += rows_step()) {
        double rs = 1.0 / sqrt((double)var[c] + eps), mu = mean[c], sc = s[c], as = 0, ab = 0;
        for (int64_t k = threadIdx.x; k < N * S; k += kThreads) {
            int64_t n = k / S, i = (n * C + c) * S + k % S;
            double gv = g[i];
            as += gv * ((double)x[i] - mu) * rs;
            ab += gv;
            if (dx) dx[i] = ftz((float)(gv * sc * rs));
        }
        as = block_sum(as, sh);
        ab = block_sum(ab, sh);
        if (threadIdx.x == 0) {
            if (ds) ds[c] = ftz((float)as);
            if (db) db[c] = ftz((float)ab);
        }
    }
}

/* One block per (image, channel) row of D: the statistics, the row's sums, dX. */
__global__ void instancenorm_rows_kernel(const float *__restrict__ g, const float *__restrict__ x,
                                         const float *__restrict__ s, float *__restrict__ dx, int64_t NC, int64_t C,
                                         int64_t D, double eps, double *__restrict__ rows) {
    __shared__ double sh[kThreads];
    double Dd = (double)(D ? D : 1);
    for (int64_t r = row0(); r < NC; r += rows_step()) {
        const float *xr = x + r * D, *gr = g + r * D;
        double mu = 0, var = 0, sg = 0, sgx = 0, sc = s[r % C];
        for (int64_t k = threadIdx.x; k < D; k += kThreads) mu += xr[k];
        mu = block_sum(mu, sh) / Dd;
        for (int64_t k = threadIdx.x; k < D; k += kThreads) var += ((double)xr[k] - mu) * ((double)xr[k] - mu);
        double rs = 1.0 / sqrt(block_sum(var, sh) / Dd + eps);
        for (int64_t k = threadIdx.x; k < D; k += kThreads) {
            double gv = gr[k];
            sg += gv;
            sgx += gv * ((double)xr[k] - mu) * rs;
        }
        sg = block_sum(sg, sh);
        sgx = block_sum(sgx, sh);
        if (threadIdx.x == 0) {
            rows[r] = sgx;
            rows[NC + r] = sg;
        }
        if (!dx) continue;
        double m1 = sg / (double)D, m2 = sgx / (double)D;
        for (int64_t k = threadIdx.x; k < D; k += kThreads) {
            double xh = ((double)xr[k] - mu) * rs;
            dx[r * D + k] = ftz((float)(sc * rs * ((double)gr[k] - m1 - xh * m2)));
        }
    }
}

__global__ void instancenorm_cols_kernel(const double *__restrict__ rows, float *__restrict__ ds,
                                         float *__restrict__ db, int64_t N, int64_t C) {
    for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < C; c += (int64_t)gridDim.x * blockDim.x) {
        double as = 0, ab = 0;
        for (int64_t n = 0; n < N; n++) {
            as += rows[n * C + c];
            ab += rows[N * C + n * C + c];
        }
        if (ds) ds[c] = ftz((float)as);
        if (db) db[c] = ftz((float)ab);
    }
}

/* The flat offset of window o's maximum in its plane (first on ties), or -1 for an empty window. */
__device__ int64_t window_argmax(const kiln_cuda_poolgrad &a, const float *x, const int64_t *o) {
    int64_t kidx[3] = {0, 0, 0}, ksize = 1, best_at = -1;
    float best = 0.0f;
    for (int d = 0; d < a.nd; d++) ksize *= a.k[d];
    for (int64_t kk = 0; kk < ksize; kk++) {
        int64_t off = 0;
        bool ok = true;
        for (int d = 0; d < a.nd; d++) {
            int64_t i = o[d] * a.stride[d] - a.pad_b[d] + kidx[d] * a.dil[d];
            if (i < 0 || i >= a.in[d]) {
                ok = false;
                break;
            }
            off = off * a.in[d] + i;
        }
        if (ok) {
            float v = x[off];
            if (best_at < 0 || v > best) {
                best = v;
                best_at = off;
            }
        }
        for (int d = a.nd - 1; d >= 0; d--) {
            if (++kidx[d] < a.k[d]) break;
            kidx[d] = 0;
        }
    }
    return best_at;
}

__global__ void pool_grad_kernel(kiln_cuda_poolgrad a, const float *__restrict__ dy, const float *__restrict__ x,
                                 float *__restrict__ dx, int64_t total) {
    int64_t in_size = 1, out_size = 1;
    for (int d = 0; d < a.nd; d++) {
        in_size *= a.in[d];
        out_size *= a.out[d];
    }
    for (int64_t e = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; e < total; e += (int64_t)gridDim.x * blockDim.x) {
        int64_t q = e / in_size, pos = e % in_size, idx[3] = {0, 0, 0};
        for (int d = a.nd - 1; d >= 0; d--) {
            idx[d] = pos % a.in[d];
            pos /= a.in[d];
        }
        /* per axis, the windows holding this element, ascending */
        int64_t cand[3][KILN_CUDA_POOLGRAD_K];
        int n[3] = {1, 1, 1};
        bool any = true;
        for (int d = 0; d < a.nd; d++) {
            n[d] = 0;
            for (int64_t kd = a.k[d] - 1; kd >= 0; kd--) {
                int64_t t = idx[d] + a.pad_b[d] - kd * a.dil[d];
                if (t < 0 || t % a.stride[d]) continue;
                int64_t o = t / a.stride[d];
                if (o < a.out[d]) cand[d][n[d]++] = o;
            }
            if (!n[d]) any = false;
        }
        float acc = 0.0f;
        if (any) {
            const float *xp = x + q * in_size, *gp = dy + q * out_size;
            int64_t self = e % in_size;
            int c[3] = {0, 0, 0};
            for (;;) {
                int64_t o[3] = {0, 0, 0}, lin = 0;
                for (int d = 0; d < a.nd; d++) {
                    o[d] = cand[d][c[d]];
                    lin = lin * a.out[d] + o[d];
                }
                float gv = gp[lin];
                if (a.max) {
                    if (window_argmax(a, xp, o) == self) acc += gv;
                } else {
                    int64_t div = 1;
                    for (int d = 0; d < a.nd; d++) {
                        int64_t lo = o[d] * a.stride[d] - a.pad_b[d], hi = lo + (a.k[d] - 1) * a.dil[d] + 1, taps;
                        if (a.include_pad) {
                            if (hi > a.in[d] + a.pad_e[d]) hi = a.in[d] + a.pad_e[d];
                            taps = (hi - lo + a.dil[d] - 1) / a.dil[d];
                        } else {
                            int64_t k0 = 0, k1 = a.k[d];
                            while (k0 < k1 && lo + k0 * a.dil[d] < 0) k0++;
                            while (k1 > k0 && lo + (k1 - 1) * a.dil[d] >= a.in[d]) k1--;
                            taps = k1 - k0;
                        }
                        div *= taps;
                    }
                    if (div > 0) acc += gv / (float)div;
                }
                int d = a.nd - 1;
                for (; d >= 0; d--) {
                    if (++c[d] < n[d]) break;
                    c[d] = 0;
                }
                if (d < 0) break;
            }
        }
        dx[e] = acc;
    }
}

unsigned col_blocks(int64_t n) {
    int64_t b = (n + kThreads - 1) / kThreads;
    return (unsigned)(b < 1 ? 1 : b > (1 << 20) ? (1 << 20) : b);
}

} // namespace

extern "C" {

kiln_status kiln_cuda_softmax_grad(void *stream, int log, const float *g, const float *y, float *x, int64_t outer,
                                   int64_t n, int64_t inner) {
    if (outer * n * inner <= 0) return KILN_OK;
    softmax_grad_kernel<<<row_blocks(outer * inner), kThreads, 0, (cudaStream_t)stream>>>(log, g, y, x, outer, n,
                                                                                          inner);
    return kiln_cuda_check((int)cudaGetLastError(), "SoftmaxGrad kernel launch");
}

kiln_status kiln_cuda_layernorm_grad(void *stream, const float *g, const float *x, const float *s, float *dx,
                                     float *ds, float *db, int64_t M, int64_t D, double eps, double *stats) {
    cudaStream_t st = (cudaStream_t)stream;
    if (M <= 0 || D <= 0) {
        /* no rows: the parameter gradients are zero sums */
        if (D > 0 && ds) {
            kiln_status s0 = kiln_cuda_check((int)cudaMemsetAsync(ds, 0, (size_t)D * sizeof(float), st), "LayerNormGrad memset");
            if (s0 != KILN_OK) return s0;
        }
        if (D > 0 && db) return kiln_cuda_check((int)cudaMemsetAsync(db, 0, (size_t)D * sizeof(float), st), "LayerNormGrad memset");
        return KILN_OK;
    }
    layernorm_rows_kernel<<<row_blocks(M), kThreads, 0, st>>>(g, x, s, dx, M, D, eps, stats);
    kiln_status r = kiln_cuda_check((int)cudaGetLastError(), "LayerNormGrad kernel launch");
    if (r != KILN_OK || (!ds && !db)) return r;
    layernorm_cols_kernel<<<col_blocks(D), kThreads, 0, st>>>(g, x, ds, db, M, D, stats);
    return kiln_cuda_check((int)cudaGetLastError(), "LayerNormGrad (parameters) kernel launch");
}

kiln_status kiln_cuda_batchnorm_grad(void *stream, const float *g, const float *x, const float *s, const float *mean,
                                     const float *var, float *dx, float *ds, float *db, int64_t N, int64_t C,
                                     int64_t S, double eps) {
    if (C <= 0) return KILN_OK;
    batchnorm_grad_kernel<<<row_blocks(C), kThreads, 0, (cudaStream_t)stream>>>(g, x, s, mean, var, dx, ds, db, N,
                                                                                C, S, eps);
    return kiln_cuda_check((int)cudaGetLastError(), "BatchNormGrad kernel launch");
}

kiln_status kiln_cuda_instancenorm_grad(void *stream, const float *g, const float *x, const float *s, float *dx,
                                        float *ds, float *db, int64_t N, int64_t C, int64_t D, double eps,
                                        double *rows) {
    cudaStream_t st = (cudaStream_t)stream;
    if (C <= 0) return KILN_OK;
    if (N > 0) {
        instancenorm_rows_kernel<<<row_blocks(N * C), kThreads, 0, st>>>(g, x, s, dx, N * C, C, D, eps, rows);
        kiln_status r = kiln_cuda_check((int)cudaGetLastError(), "InstanceNormGrad kernel launch");
        if (r != KILN_OK) return r;
    }
    if (!ds && !db) return KILN_OK;
    instancenorm_cols_kernel<<<col_blocks(C), kThreads, 0, st>>>(rows, ds, db, N, C);
    return kiln_cuda_check((int)cudaGetLastError(), "InstanceNormGrad (parameters) kernel launch");
}

kiln_status kiln_cuda_pool_grad(void *stream, const kiln_cuda_poolgrad *a, const float *dy, const float *x, float *dx) {
    int64_t total = a->planes;
    for (int d = 0; d < a->nd; d++) total *= a->in[d];
    if (total <= 0) return KILN_OK;
    pool_grad_kernel<<<col_blocks(total), kThreads, 0, (cudaStream_t)stream>>>(*a, dy, x, dx, total);
    return kiln_cuda_check((int)cudaGetLastError(), "pooling gradient kernel launch");
}

} // extern "C"
