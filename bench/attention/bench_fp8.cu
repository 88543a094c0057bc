// FP8 (e4m3) attention forward: throughput next to kiln's own fp16 kernels, and accuracy.
//
// Throughput: the FA3 grid (B·S = 16k tokens, N·H = 2048; S = 1k..16k; H = 64, 128, 256; causal
// and not), timed as bench_timing.h's median_seconds. The FP8 time includes the Vᵀ prologue (it is
// part of every call); each tile variant is timed: the default, the alternative tile and the
// fp16-multiply one (e4m3 in memory, fp16 MMAs: sm_90 has no native e4m3 mma.sync) and the wgmma
// ones (sm_90 only; fp8_wgmma_tflops is the fastest, fp8_wgmma_each lists them all). FLOPs =
// 4·B·N·S·T·H, halved when causal. kiln fp16 is the dispatcher's
// normal choice (kiln_cuda_mha_forward, BSNH inputs), the same layout as the FP8 call.
//
// Accuracy: random normal Q, K, V (and a set with outliers: 0.1 % of Q/K entries × 10), quantised
// per tensor (scale = amax / 448). The reference is a float32 GPU kernel over the UNQUANTISED
// inputs, so the numbers are the whole FP8 error (inputs and P); the fp16 kernel is measured on
// the same inputs rounded to fp16. RMSE and max abs error of the output; the FP8 kernel also
// without its 2^8 factor on P (p_unscaled), to show what that scaling buys.
//
//   bench_fp8 [--quick] [--json FILE]     --quick: S = 1k and 4k only
#include "cuda/attention/attention_dispatch.h"
#include "cuda/attention/attention_fp8.h"

#include <cuda_fp16.h>
#include <cuda_fp8.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#include "bench_timing.h"

// Random e4m3 codes of normal-ish values times 16 (so they span e4m3's normals, never NaN).
__global__ void fill_e4m3(uint8_t *p, size_t n, uint32_t seed) {
    for (size_t i = blockIdx.x * (size_t)blockDim.x + threadIdx.x; i < n; i += (size_t)gridDim.x * blockDim.x) {
        uint32_t x = (uint32_t)i * 0x9E3779B1u ^ seed;
        x ^= x >> 16, x *= 0x7feb352du, x ^= x >> 15, x *= 0x846ca68bu, x ^= x >> 16;
        const float v = ((x >> 8) * (1.f / 16777216.f) - 0.5f) * 64.f;
        __nv_fp8_e4m3 q(v);
        p[i] = *reinterpret_cast<uint8_t *>(&q);
    }
}

// float32 reference: one CTA per (b, n, s) query row, scores in shared memory. Layout (B, S, N·H).
__global__ void ref_attention(const float *q, const float *k, const float *v, float *o, int S, int T, int N, int H,
                              float scale, int causal) {
    extern __shared__ float sm[]; // T scores, then H query values
    float *sc = sm, *qs = sm + T;
    const int s = blockIdx.x, n = blockIdx.y, b = blockIdx.z;
    const size_t D = (size_t)N * H;
    const float *qr = q + ((size_t)b * S + s) * D + (size_t)n * H;
    for (int h = threadIdx.x; h < H; h += blockDim.x) qs[h] = qr[h];
    __syncthreads();
    const int lim = causal ? min(T, s + (T - S) + 1) : T;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        float a = -INFINITY;
        if (t < lim) {
            const float *kr = k + ((size_t)b * T + t) * D + (size_t)n * H;
            a = 0.f;
            for (int h = 0; h < H; ++h) a += qs[h] * kr[h];
            a *= scale;
        }
        sc[t] = a;
    }
    __syncthreads();
    __shared__ float red[32];
    float mx = -INFINITY;
    for (int t = threadIdx.x; t < T; t += blockDim.x) mx = fmaxf(mx, sc[t]);
    for (int o2 = 16; o2; o2 >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, o2));
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = mx;
    __syncthreads();
    mx = -INFINITY;
    for (int i = 0; i < (int)(blockDim.x >> 5); ++i) mx = fmaxf(mx, red[i]);
    __syncthreads();
    float l = 0.f;
    for (int t = threadIdx.x; t < T; t += blockDim.x) {
        const float e = t < lim ? expf(sc[t] - mx) : 0.f;
        sc[t] = e;
        l += e;
    }
    for (int o2 = 16; o2; o2 >>= 1) l += __shfl_xor_sync(0xffffffffu, l, o2);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = l;
    __syncthreads();
    l = 0.f;
    for (int i = 0; i < (int)(blockDim.x >> 5); ++i) l += red[i];
    for (int h = threadIdx.x; h < H; h += blockDim.x) {
        float a = 0.f;
        for (int t = 0; t < lim; ++t) a += sc[t] * v[((size_t)b * T + t) * D + (size_t)n * H + h];
        o[((size_t)b * S + s) * D + (size_t)n * H + h] = a / l;
    }
}

static uint64_t rs = 0x853c49e6748fea9bull;
static double ur() {
    rs ^= rs << 13, rs ^= rs >> 7, rs ^= rs << 17;
    return ((rs >> 11) + 0.5) * (1.0 / 9007199254740992.0);
}
static float nr() { return (float)(sqrt(-2.0 * log(ur())) * cos(6.283185307179586 * ur())); }

struct Acc {
    double rmse, maxerr, ref_rms;
};

static kiln_cuda_provider *prov;
static cudaStream_t stream;

static Acc compare(const std::vector<uint16_t> &got, const std::vector<float> &ref) {
    double ss = 0, mx = 0, rr = 0;
    for (size_t i = 0; i < ref.size(); ++i) {
        __half h;
        memcpy(&h, &got[i], 2);
        const double e = (double)__half2float(h) - ref[i];
        ss += e * e, mx = fmax(mx, fabs(e)), rr += (double)ref[i] * ref[i];
    }
    return {sqrt(ss / ref.size()), mx, sqrt(rr / ref.size())};
}

// Accuracy of FP8 and fp16 on one shape; prints one line per input kind.
static void accuracy(int B, int S, int N, int H, int causal, bool outliers, FILE *jf) {
    const size_t n = (size_t)B * S * N * H;
    std::vector<float> x[3];
    std::vector<uint8_t> code[3];
    std::vector<uint16_t> half[3];
    float scl[3];
    for (int i = 0; i < 3; ++i) {
        x[i].resize(n), code[i].resize(n), half[i].resize(n);
        for (auto &v : x[i]) v = nr();
        if (outliers && i < 2)
            for (size_t j = 0; j < n / 1000 + 1; ++j) x[i][(size_t)(ur() * n) % n] *= 10.f;
        float amax = 0;
        for (float v : x[i]) amax = fmaxf(amax, fabsf(v));
        scl[i] = amax / 448.f;
        for (size_t j = 0; j < n; ++j) {
            __nv_fp8_e4m3 q(x[i][j] / scl[i]);
            memcpy(&code[i][j], &q, 1);
            __half h = __float2half_rn(x[i][j]);
            memcpy(&half[i][j], &h, 2);
        }
    }
    float *df[3], *dref, *dsc;
    uint8_t *d8[3];
    uint16_t *d16[3], *dout;
    for (int i = 0; i < 3; ++i) {
        CUDA_OK(cudaMalloc(&df[i], n * 4));
        CUDA_OK(cudaMalloc(&d8[i], n));
        CUDA_OK(cudaMalloc(&d16[i], n * 2));
        CUDA_OK(cudaMemcpy(df[i], x[i].data(), n * 4, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(d8[i], code[i].data(), n, cudaMemcpyHostToDevice));
        CUDA_OK(cudaMemcpy(d16[i], half[i].data(), n * 2, cudaMemcpyHostToDevice));
    }
    CUDA_OK(cudaMalloc(&dref, n * 4));
    CUDA_OK(cudaMalloc(&dout, n * 2));
    CUDA_OK(cudaMalloc(&dsc, 12));
    CUDA_OK(cudaMemcpy(dsc, scl, 12, cudaMemcpyHostToDevice));
    const size_t smem = (size_t)(S + H) * 4;
    CUDA_OK(cudaFuncSetAttribute(ref_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)smem));
    ref_attention<<<dim3(S, N, B), 256, smem, stream>>>(df[0], df[1], df[2], dref, S, S, N, H, 1.f / sqrtf((float)H),
                                                        causal);
    CUDA_OK(cudaGetLastError());
    std::vector<float> ref(n);
    CUDA_OK(cudaMemcpyAsync(ref.data(), dref, n * 4, cudaMemcpyDeviceToHost, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    std::vector<uint16_t> got(n);

    kiln_cuda_sdpa_fp8 d;
    memset(&d, 0, sizeof d);
    d.out_dtype = KILN_DTYPE_FLOAT16;
    d.B = B, d.N = N, d.S = S, d.T = S, d.H = H, d.causal = causal;
    const int64_t D = (int64_t)N * H;
    d.q = (kiln_cuda_view){d8[0], S * D, H, D};
    d.k = (kiln_cuda_view){d8[1], S * D, H, D};
    d.v = (kiln_cuda_view){d8[2], S * D, H, D};
    d.q_scale = dsc, d.k_scale = dsc + 1, d.v_scale = dsc + 2;
    d.out = dout, d.o_sb = S * D, d.o_sn = H, d.o_ss = D;
    if (kiln_cuda_attention_fp8(prov, &d) != KILN_OK) {
        fprintf(stderr, "fp8 failed: %s\n", kiln_cuda_last_error());
        exit(1);
    }
    CUDA_OK(cudaMemcpyAsync(got.data(), dout, n * 2, cudaMemcpyDeviceToHost, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    const Acc a8 = compare(got, ref);
    // the same without the 2^8 factor on P: what the scaling buys
    d.p_unscaled = 1;
    if (kiln_cuda_attention_fp8(prov, &d) != KILN_OK) {
        fprintf(stderr, "fp8 failed: %s\n", kiln_cuda_last_error());
        exit(1);
    }
    CUDA_OK(cudaMemcpyAsync(got.data(), dout, n * 2, cudaMemcpyDeviceToHost, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    const Acc a8u = compare(got, ref);
    // the fp16-multiply variant: P stays in fp16
    d.p_unscaled = 0;
    d.variant = kiln_cuda_fp8_variant_find(H, "f16mma", 0);
    if (kiln_cuda_attention_fp8(prov, &d) != KILN_OK) {
        fprintf(stderr, "fp8 failed: %s\n", kiln_cuda_last_error());
        exit(1);
    }
    CUDA_OK(cudaMemcpyAsync(got.data(), dout, n * 2, cudaMemcpyDeviceToHost, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    const Acc a8f = compare(got, ref);
    // the first wgmma variant (sm_90 only; -1 elsewhere): same e4m3 P as the default, other order
    Acc a8w = {-1, -1, 0};
    d.variant = kiln_cuda_fp8_variant_find(H, "wgmma", 0);
    if (d.variant >= 0) {
        if (kiln_cuda_attention_fp8(prov, &d) == KILN_OK) {
            CUDA_OK(cudaMemcpyAsync(got.data(), dout, n * 2, cudaMemcpyDeviceToHost, stream));
            CUDA_OK(cudaStreamSynchronize(stream));
            a8w = compare(got, ref);
        } else {
            fprintf(stderr, "fp8 wgmma not run: %s\n", kiln_cuda_last_error());
            cudaGetLastError();
        }
    }
    d.variant = 0;

    kiln_cuda_mha_args a;
    memset(&a, 0, sizeof a);
    a.dtype = KILN_DTYPE_FLOAT16, a.format = KILN_MHA_Q_K_V;
    a.B = B, a.S = S, a.L = S, a.N = N, a.H = H, a.causal = causal;
    a.q = d16[0], a.k = d16[1], a.v = d16[2], a.out = dout;
    if (kiln_cuda_mha_forward(prov, &a, nullptr, nullptr) != KILN_OK) {
        fprintf(stderr, "fp16 failed: %s\n", kiln_cuda_last_error());
        exit(1);
    }
    CUDA_OK(cudaMemcpyAsync(got.data(), dout, n * 2, cudaMemcpyDeviceToHost, stream));
    CUDA_OK(cudaStreamSynchronize(stream));
    const Acc a16 = compare(got, ref);
    printf("acc,%d,%d,%d,%d,%d,%s,%.3e,%.3e,%.3e,%.3e,%.3e,%.3e,%.3e,%.3e,%.3e,%.3e,%.3e\n", B, S, N, H, causal,
           outliers ? "outliers" : "normal", a8.rmse, a8.maxerr, a16.rmse, a16.maxerr, a8.ref_rms, a8u.rmse, a8u.maxerr,
           a8f.rmse, a8f.maxerr, a8w.rmse, a8w.maxerr);
    if (jf)
        fprintf(jf,
                "{\"kind\": \"accuracy\", \"B\": %d, \"S\": %d, \"N\": %d, \"H\": %d, \"causal\": %d, \"inputs\": \"%s\", "
                "\"fp8_rmse\": %.4e, \"fp8_maxerr\": %.4e, \"fp16_rmse\": %.4e, \"fp16_maxerr\": %.4e, \"ref_rms\": %.4e, "
                "\"fp8_p_unscaled_rmse\": %.4e, \"fp8_p_unscaled_maxerr\": %.4e, \"fp8_f16mma_rmse\": %.4e, "
                "\"fp8_f16mma_maxerr\": %.4e, \"fp8_wgmma_rmse\": %.4e, \"fp8_wgmma_maxerr\": %.4e}\n",
                B, S, N, H, causal, outliers ? "outliers" : "normal", a8.rmse, a8.maxerr, a16.rmse, a16.maxerr,
                a8.ref_rms, a8u.rmse, a8u.maxerr, a8f.rmse, a8f.maxerr, a8w.rmse, a8w.maxerr);
    for (int i = 0; i < 3; ++i) cudaFree(df[i]), cudaFree(d8[i]), cudaFree(d16[i]);
    cudaFree(dref), cudaFree(dout), cudaFree(dsc);
}

static void throughput(int B, int S, int N, int H, int causal, FILE *jf) {
    const size_t n = (size_t)B * S * N * H;
    uint8_t *d8[3];
    uint16_t *d16[3], *dout;
    float *dsc;
    for (int i = 0; i < 3; ++i) {
        CUDA_OK(cudaMalloc(&d8[i], n));
        CUDA_OK(cudaMalloc(&d16[i], n * 2));
        fill_e4m3<<<1024, 256, 0, stream>>>(d8[i], n, 11u + i);
        fill_random<<<1024, 256, 0, stream>>>(d16[i], n, 21u + i, 0);
    }
    CUDA_OK(cudaMalloc(&dout, n * 2));
    CUDA_OK(cudaMalloc(&dsc, 12));
    const float scl[3] = {1.f / 64, 1.f / 64, 1.f / 64};
    CUDA_OK(cudaMemcpy(dsc, scl, 12, cudaMemcpyHostToDevice));
    const double flops = 4.0 * B * N * (double)S * S * H * (causal ? 0.5 : 1.0);
    const int64_t D = (int64_t)N * H;

    kiln_cuda_sdpa_fp8 d;
    memset(&d, 0, sizeof d);
    d.out_dtype = KILN_DTYPE_FLOAT16;
    d.B = B, d.N = N, d.S = S, d.T = S, d.H = H, d.causal = causal;
    d.q = (kiln_cuda_view){d8[0], S * D, H, D};
    d.k = (kiln_cuda_view){d8[1], S * D, H, D};
    d.v = (kiln_cuda_view){d8[2], S * D, H, D};
    d.q_scale = dsc, d.k_scale = dsc + 1, d.v_scale = dsc + 2;
    d.out = dout, d.o_sb = S * D, d.o_sn = H, d.o_ss = D;
    void *ws;
    CUDA_OK(cudaMalloc(&ws, kiln_cuda_fp8_workspace(&d)));
    char name[128] = "";
    // every tile variant: t8[0] the default, [1] the alternative tile, [2] the fp16-multiply one,
    // [3] the fastest wgmma one (sm_90 only; each is listed in wgmma_all)
    double t8[4] = {0, 0, 0, 0};
    std::string names, wgmma_all;
    for (int var = 0; var < kiln_cuda_fp8_variants(H); ++var) {
        const char *vn = kiln_cuda_fp8_variant_name(H, var);
        const bool wg = strstr(vn, "wgmma") != nullptr;
        const int slot = wg ? 3 : strstr(vn, "f16mma") ? 2 : var < 2 ? var : -1;
        if (slot < 0) continue;
        d.variant = var;
        const cudaError_t e = (cudaError_t)kiln_cuda_fp8_launch(&d, ws, stream, name, sizeof name);
        if (e != cudaSuccess) {
            if (!wg) CUDA_OK(e);
            fprintf(stderr, "%s not run: %s\n", vn, cudaGetErrorString(e));
            cudaGetLastError();
            continue;
        }
        names += (names.empty() ? "" : "|") + std::string(name);
        const double t = median_seconds([&] { kiln_cuda_fp8_launch(&d, ws, stream, nullptr, 0); });
        if (wg) {
            char buf[160];
            snprintf(buf, sizeof buf, "%s%s=%.1f", wgmma_all.empty() ? "" : "|", vn, flops / t / 1e12);
            wgmma_all += buf;
        }
        if (t8[slot] == 0 || t < t8[slot]) t8[slot] = t;
    }
    CUDA_OK(cudaGetLastError());

    kiln_cuda_mha_args a;
    memset(&a, 0, sizeof a);
    a.dtype = KILN_DTYPE_FLOAT16, a.format = KILN_MHA_Q_K_V;
    a.B = B, a.S = S, a.L = S, a.N = N, a.H = H, a.causal = causal;
    a.q = d16[0], a.k = d16[1], a.v = d16[2], a.out = dout;
    kiln_cuda_attn_choice ch;
    if (kiln_cuda_mha_forward(prov, &a, nullptr, &ch) != KILN_OK) {
        fprintf(stderr, "fp16 failed: %s\n", kiln_cuda_last_error());
        exit(1);
    }
    const double t16 = median_seconds([&] { kiln_cuda_mha_forward(prov, &a, nullptr, nullptr); });
    const double f8 = flops / t8[0] / 1e12, f8b = t8[1] > 0 ? flops / t8[1] / 1e12 : 0,
                 f8h = t8[2] > 0 ? flops / t8[2] / 1e12 : 0, f8w = t8[3] > 0 ? flops / t8[3] / 1e12 : 0,
                 f16 = flops / t16 / 1e12;
    printf("perf,%d,%d,%d,%d,%d,%.1f,%.1f,%.1f,%.2f,%.1f,%.1f,\"%s\",\"%s\",\"%s\"\n", B, S, N, H, causal, f8, f8b,
           f16, fmax(fmax(fmax(f8, f8b), f8h), f8w) / f16, f8h, f8w, names.c_str(), ch.name, wgmma_all.c_str());
    fflush(stdout);
    if (jf)
        fprintf(jf,
                "{\"kind\": \"perf\", \"B\": %d, \"S\": %d, \"N\": %d, \"H\": %d, \"causal\": %d, \"fp8_tflops\": %.2f, "
                "\"fp8_alt_tflops\": %.2f, \"fp8_f16mma_tflops\": %.2f, \"fp8_wgmma_tflops\": %.2f, \"fp16_tflops\": %.2f, "
                "\"fp8_wgmma_each\": \"%s\", \"fp8_kernels\": \"%s\", "
                "\"fp16_kernel\": \"%s\"}\n",
                B, S, N, H, causal, f8, f8b, f8h, f8w, f16, wgmma_all.c_str(), names.c_str(), ch.name);
    for (int i = 0; i < 3; ++i) cudaFree(d8[i]), cudaFree(d16[i]);
    cudaFree(dout), cudaFree(dsc), cudaFree(ws);
}

int main(int argc, char **argv) {
    bool quick = false;
    std::string json;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) json = argv[++i];
        else {
            fprintf(stderr, "usage: bench_fp8 [--quick] [--json FILE]\n");
            return 2;
        }
    }
    if (kiln_cuda_provider_create(0, &prov) != KILN_OK) {
        fprintf(stderr, "provider: %s\n", kiln_cuda_last_error());
        return 2;
    }
    stream = (cudaStream_t)kiln_cuda_stream(prov);
    g_stream = stream;
    const kiln_cuda_device_info *info = kiln_cuda_info(prov);
    printf("# bench_fp8 on %s (cc %d.%d)\n", info->name, info->cc_major, info->cc_minor);
    FILE *jf = json.empty() ? nullptr : fopen(json.c_str(), "w");

    printf("acc,B,S,N,H,causal,inputs,fp8_rmse,fp8_maxerr,fp16_rmse,fp16_maxerr,ref_rms,fp8_p_unscaled_rmse,"
           "fp8_p_unscaled_maxerr,fp8_f16mma_rmse,fp8_f16mma_maxerr,fp8_wgmma_rmse,fp8_wgmma_maxerr\n");
    const int heads[] = {64, 128, 256};
    for (int H : heads)
        for (int causal = 0; causal < 2; ++causal)
            for (int outl = 0; outl < 2; ++outl) accuracy(1, 1024, 2, H, causal, outl != 0, jf);

    printf("perf,B,S,N,H,causal,fp8_tflops,fp8_alt_tflops,fp16_tflops,best_fp8_over_fp16,fp8_f16mma_tflops,fp8_wgmma_tflops,"
           "fp8_kernels,fp16_kernel,fp8_wgmma_each\n");
    const int seqs_full[] = {1024, 2048, 4096, 8192, 16384}, seqs_quick[] = {1024, 4096};
    const int *seqs = quick ? seqs_quick : seqs_full;
    const int ns = quick ? 2 : 5;
    for (int causal = 0; causal < 2; ++causal)
        for (int H : heads)
            for (int i = 0; i < ns; ++i) {
                const int S = seqs[i];
                throughput(16384 / S, S, 2048 / H, H, causal, jf);
            }
    if (jf) fclose(jf);
    kiln_cuda_provider_destroy(prov);
    return 0;
}
