// Unfused attention: cuBLAS Q·Kᵀ into fp32 scores, a row softmax (masks, additive bias) that
// writes probabilities in the input dtype, cuBLAS P·V straight into the strided output.
//
// The fallback for what the flash kernels do not cover (head sizes that are not a multiple of
// 8 or above 256, H ≠ H_v, additive bias, unaligned views) and the baseline the benchmark
// compares against. Scores live only for a chunk of heads × query rows at a time, capped by
// KILN_UNFUSED_WORKSPACE_MB, so even S = 16k problems run (slowly) instead of asking for
// B·N·S·T·4 bytes at once.
#include "../attention_internal.h"

#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdlib.h>

namespace {

template <typename E> __device__ __forceinline__ float to_f(E x);
template <> __device__ __forceinline__ float to_f<__half>(__half x) { return __half2float(x); }
template <> __device__ __forceinline__ float to_f<__nv_bfloat16>(__nv_bfloat16 x) { return __bfloat162float(x); }
template <typename E> __device__ __forceinline__ E from_f(float x);
template <> __device__ __forceinline__ __half from_f<__half>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ __nv_bfloat16 from_f<__nv_bfloat16>(float x) { return __float2bfloat16_rn(x); }

constexpr int SM_THREADS = 256;

template <bool IS_MAX> __device__ float block_reduce(float v, float *red) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = IS_MAX ? fmaxf(v, w) : v + w;
    }
    const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
    __syncthreads(); // red[] may still be read from the previous reduction
    if (lane == 0) red[warp] = v;
    __syncthreads();
    v = lane < SM_THREADS / 32 ? red[lane] : (IS_MAX ? -INFINITY : 0.f);
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) {
        float w = __shfl_xor_sync(0xffffffffu, v, o);
        v = IS_MAX ? fmaxf(v, w) : v + w;
    }
    return v;
}

// One block per (query row, head) of the chunk. Rows are [s0, s0 + gridDim.x) of batch b.
template <typename E>
__global__ void __launch_bounds__(SM_THREADS) softmax_rows(const float *scores, E *probs, int T, int S_b, int s0,
                                                           int n0, const int *key_lens, int b, int causal,
                                                           const E *bias, int64_t bias_sn, int64_t bias_ss) {
    __shared__ float red[32];
    const int row = blockIdx.x, hl = blockIdx.y, s = s0 + row, n = n0 + hl;
    const size_t off = ((size_t)hl * gridDim.x + row) * (size_t)T;
    const float *x = scores + off;
    E *y = probs + off;
    int lim = T;
    if (key_lens) {
        const int kl = key_lens[b];
        if (kl > 0 && kl < T) lim = kl; // kl <= 0: an additive mask over every key masks nothing
    }
    if (causal) lim = min(lim, s + (T - S_b) + 1);
    const E *br = bias ? bias + n * bias_sn + (int64_t)s * bias_ss : nullptr;

    float m = -INFINITY;
    for (int j = threadIdx.x; j < lim; j += SM_THREADS) m = fmaxf(m, x[j] + (br ? to_f(br[j]) : 0.f));
    m = block_reduce<true>(m, red);
    float sum = 0.f;
    for (int j = threadIdx.x; j < lim; j += SM_THREADS) sum += __expf(x[j] + (br ? to_f(br[j]) : 0.f) - m);
    sum = block_reduce<false>(sum, red);
    const float inv = sum > 0.f ? 1.f / sum : 0.f;
    for (int j = threadIdx.x; j < T; j += SM_THREADS)
        y[j] = from_f<E>(j < lim ? __expf(x[j] + (br ? to_f(br[j]) : 0.f) - m) * inv : 0.f);
}

#define TRY(x)                                                                                      \
    do {                                                                                            \
        kiln_status st_ = (x);                                                                      \
        if (st_ != KILN_OK) return st_;                                                             \
    } while (0)

} // namespace

extern "C" kiln_status kiln_cuda_attention_unfused(kiln_cuda_provider *p, const kiln_cuda_sdpa *d, float scale) {
    const kiln_attn_env *env = kiln_attn_env_get();
    cublasHandle_t h = (cublasHandle_t)kiln_cuda_cublas(p);
    cudaStream_t stream = (cudaStream_t)kiln_cuda_stream(p);
    const bool f16 = d->dtype == KILN_DTYPE_FLOAT16;
    const cudaDataType dt = f16 ? CUDA_R_16F : CUDA_R_16BF;
    const int64_t es = 2;
    const int N = d->N, group = d->N / (d->N_kv ? d->N_kv : d->N);

    int *cu_q = nullptr, *cu_k = nullptr;
    if (d->cu_seqlens_q) {
        cu_q = (int *)malloc(sizeof(int) * 2 * (d->B + 1));
        if (!cu_q) return kiln_cuda_fail(KILN_ERR_NO_MEMORY, "out of host memory");
        cu_k = cu_q + d->B + 1;
        kiln_status st = kiln_cuda_d2h(p, cu_q, d->cu_seqlens_q, sizeof(int) * (d->B + 1));
        if (st == KILN_OK) st = kiln_cuda_d2h_sync(p, cu_k, d->cu_seqlens_k, sizeof(int) * (d->B + 1));
        if (st != KILN_OK) {
            free(cu_q);
            return st;
        }
    }

    kiln_status st = KILN_OK;
    const float one = 1.f, zero = 0.f;
    for (int b = 0; b < d->B && st == KILN_OK; ++b) {
        int S_b = d->S, T_b = d->T;
        int64_t qo = (int64_t)b * d->q.sb, ko = (int64_t)b * d->k.sb, vo = (int64_t)b * d->v.sb,
                oo = (int64_t)b * d->o_sb;
        if (cu_q) {
            S_b = cu_q[b + 1] - cu_q[b];
            T_b = cu_k[b + 1] - cu_k[b];
            qo = (int64_t)cu_q[b] * d->q.ss;
            oo = (int64_t)cu_q[b] * d->o_ss;
            ko = (int64_t)cu_k[b] * d->k.ss;
            vo = (int64_t)cu_k[b] * d->v.ss;
        }
        if (S_b <= 0) continue;
        char *ob = (char *)d->out + oo * es;
        if (T_b <= 0) {
            st = kiln_cuda_zero_rows(p, ob, 0, d->o_sn, d->o_ss, 1, N, S_b, d->Hv);
            continue;
        }
        const char *qb = (const char *)d->q.p + qo * es, *kb = (const char *)d->k.p + ko * es,
                   *vb = (const char *)d->v.p + vo * es;
        const size_t row_bytes = (size_t)T_b * (sizeof(float) + es);
        const size_t head_bytes = row_bytes * S_b;
        int Nc = 1, Sc = S_b;
        if (head_bytes <= env->unfused_ws_bytes) {
            size_t fit = env->unfused_ws_bytes / head_bytes;
            Nc = group > 1 ? 1 : (int)(fit < (size_t)N ? fit : (size_t)N);
            if (Nc > 65535) Nc = 65535;
        } else {
            size_t fit = env->unfused_ws_bytes / row_bytes;
            Sc = fit < 1 ? 1 : (int)(fit < (size_t)S_b ? fit : (size_t)S_b);
        }
        void *ws;
        st = kiln_cuda_workspace(p, (size_t)Nc * Sc * row_bytes, &ws);
        if (st != KILN_OK) break;
        float *scores = (float *)ws;
        void *probs = (char *)ws + (size_t)Nc * Sc * T_b * sizeof(float);
        const void *bias_b = d->bias ? (const char *)d->bias + (int64_t)b * d->bias_sb * es : nullptr;

        for (int n0 = 0; n0 < N && st == KILN_OK; n0 += Nc) {
            const int nc = N - n0 < Nc ? N - n0 : Nc;
            const int nk = n0 / group;
            for (int s0 = 0; s0 < S_b && st == KILN_OK; s0 += Sc) {
                const int sc = S_b - s0 < Sc ? S_b - s0 : Sc;
                // Row-major scores (sc × T_b) = column-major (T_b × sc) = K · Qᵀ.
                st = kiln_cublas_check(
                    cublasGemmStridedBatchedEx(h, CUBLAS_OP_T, CUBLAS_OP_N, T_b, sc, d->H, &scale,
                                               kb + (int64_t)nk * d->k.sn * es, dt, (int)d->k.ss, d->k.sn,
                                               qb + ((int64_t)n0 * d->q.sn + (int64_t)s0 * d->q.ss) * es, dt,
                                               (int)d->q.ss, d->q.sn, &zero, scores, CUDA_R_32F, T_b,
                                               (long long)sc * T_b, nc, CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT),
                    "unfused Q·Kᵀ (cublasGemmStridedBatchedEx)");
                if (st != KILN_OK) break;
                dim3 grid(sc, nc);
                if (f16)
                    softmax_rows<__half><<<grid, SM_THREADS, 0, stream>>>(
                        scores, (__half *)probs, T_b, S_b, s0, n0, d->key_lens, b, d->causal,
                        (const __half *)bias_b, d->bias_sn, d->bias_ss);
                else
                    softmax_rows<__nv_bfloat16><<<grid, SM_THREADS, 0, stream>>>(
                        scores, (__nv_bfloat16 *)probs, T_b, S_b, s0, n0, d->key_lens, b, d->causal,
                        (const __nv_bfloat16 *)bias_b, d->bias_sn, d->bias_ss);
                st = kiln_cuda_check(cudaGetLastError(), "unfused softmax_rows");
                if (st != KILN_OK) break;
                // Row-major out (sc × Hv, row stride o_ss) = column-major (Hv × sc) = Vᵀ · Pᵀ.
                st = kiln_cublas_check(
                    cublasGemmStridedBatchedEx(h, CUBLAS_OP_N, CUBLAS_OP_N, d->Hv, sc, T_b, &one,
                                               vb + (int64_t)nk * d->v.sn * es, dt, (int)d->v.ss, d->v.sn, probs,
                                               dt, T_b, (long long)sc * T_b, &zero,
                                               ob + ((int64_t)n0 * d->o_sn + (int64_t)s0 * d->o_ss) * es, dt,
                                               (int)d->o_ss, d->o_sn, nc, CUBLAS_COMPUTE_32F,
                                               CUBLAS_GEMM_DEFAULT),
                    "unfused P·V (cublasGemmStridedBatchedEx)");
            }
        }
    }
    free(cu_q);
    return st;
}
