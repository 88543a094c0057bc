/* The training module's steps on the device: gradient accumulation and the fused AdamW / SGD update
 * (see grad.h). The update is the CPU's (src/train/optimizer.c) operation for operation; the _rn
 * intrinsics keep nvcc from contracting a multiply and an add into one FMA, which would round
 * differently from the CPU and make the two drift apart over many steps. */
#include "grad.h"

#include <cuda_runtime.h>

namespace {

constexpr int kThreads = 256;

unsigned blocks_for(int64_t n) {
    int64_t b = (n + kThreads - 1) / kThreads;
    if (b > (1 << 20)) b = 1 << 20;
    return (unsigned)(b > 0 ? b : 1);
}

__global__ void accumulate_kernel(float *__restrict__ dst, const float *__restrict__ src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __fadd_rn(dst[i], src[i]);
}

__global__ void adamw_kernel(kiln_cuda_optim u) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < u.n; i += (int64_t)gridDim.x * blockDim.x) {
        float g = u.grad[i];
        float p = __fmul_rn(u.param[i], u.decay);
        float m = u.m[i];
        m = u.w1 < 0.5f ? __fadd_rn(m, __fmul_rn(u.w1, __fsub_rn(g, m)))
                        : __fsub_rn(g, __fmul_rn(__fsub_rn(g, m), __fsub_rn(1.0f, u.w1)));
        float v = __fmul_rn(u.v[i], u.b2);
        v = __fadd_rn(v, __fmul_rn(__fmul_rn(u.c2, g), g));
        float denom = __fadd_rn(__fdiv_rn(__fsqrt_rn(v), u.bc2_sqrt), u.eps);
        p = __fadd_rn(p, __fmul_rn(u.neg_step, __fdiv_rn(m, denom)));
        u.param[i] = p;
        u.m[i] = m;
        u.v[i] = v;
    }
}

__global__ void sgd_kernel(kiln_cuda_optim u) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < u.n; i += (int64_t)gridDim.x * blockDim.x) {
        float p = u.param[i], g = u.grad[i];
        if (u.wd != 0.0f) g = __fadd_rn(g, __fmul_rn(u.wd, p));
        if (u.m) {
            float b = u.first ? g : __fadd_rn(__fmul_rn(u.m[i], u.mom), __fmul_rn(u.keep, g));
            u.m[i] = b;
            g = u.nesterov ? __fadd_rn(g, __fmul_rn(u.mom, b)) : b;
        }
        u.param[i] = __fadd_rn(p, __fmul_rn(u.neg_lr, g));
    }
}

} // namespace

extern "C" {

kiln_status kiln_cuda_accumulate_f32(void *stream, float *dst, const float *src, int64_t n) {
    if (n <= 0) return KILN_OK;
    accumulate_kernel<<<blocks_for(n), kThreads, 0, (cudaStream_t)stream>>>(dst, src, n);
    return kiln_cuda_check((int)cudaGetLastError(), "gradient accumulation kernel launch");
}

kiln_status kiln_cuda_optim_step(void *stream, const kiln_cuda_optim *u) {
    if (u->n <= 0) return KILN_OK;
    if (u->adamw && (!u->m || !u->v)) return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "AdamW step without its state");
    if (u->adamw) adamw_kernel<<<blocks_for(u->n), kThreads, 0, (cudaStream_t)stream>>>(*u);
    else sgd_kernel<<<blocks_for(u->n), kThreads, 0, (cudaStream_t)stream>>>(*u);
    return kiln_cuda_check((int)cudaGetLastError(), u->adamw ? "AdamW kernel launch" : "SGD kernel launch");
}

} // extern "C"
