// Attention forward benchmark: kiln's kernels over the MultiHeadAttention benchmark table (the
// 31 (B, S, N, H) rows of ../shared/bench/sdpa_peers.py), in one input format per run, each
// format read in place through strides (no transpose pass is timed, none exists).
//
// Timing is the peers script's median_seconds: 10 warm-up calls, then 15 blocks of k
// back-to-back calls (k chosen so a block lasts >= 2 ms) timed with CUDA events; the median
// block time / k. FLOPs = 4·B·S·T·N·H, halved when causal.
//
//   bench_attention --format qkv_sep|kv_packed|qkv_packed [--dtype fp16|bf16] [--causal]
//                   [--unfused] [--variants [--only SUBSTR]] [--configs B,S,N,H ...] [--json FILE]
//   --unfused   also time the unfused cuBLAS path (fewer repetitions when a call is slow)
//   --variants  also time every compiled flash tile variant for the row's head size
//   --only S    of those, only the variants whose kernel name contains S
#include "cuda/attention/attention_dispatch.h"

#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <algorithm>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#include "bench_timing.h"

static const int TABLE[][4] = {
    {32, 512, 64, 32},   {32, 512, 128, 16},  {16, 1024, 64, 32},  {16, 1024, 128, 16}, {8, 2048, 64, 32},
    {8, 2048, 128, 16},  {4, 4096, 64, 32},   {4, 4096, 128, 16},  {2, 8192, 64, 32},   {2, 8192, 128, 16},
    {1, 16384, 64, 32},  {1, 16384, 128, 16}, {1, 4096, 8, 40},    {1, 4096, 8, 80},    {1, 4096, 8, 160},
    {4, 4096, 8, 40},    {4, 4096, 8, 80},    {4, 4096, 8, 160},   {1, 16384, 8, 40},   {1, 16384, 8, 80},
    {1, 16384, 8, 160},  {128, 128, 12, 64},  {64, 128, 12, 64},   {128, 384, 12, 64},  {64, 384, 12, 64},
    {128, 512, 12, 64},  {64, 512, 12, 64},   {4, 2048, 32, 128},  {4, 4096, 32, 128},  {8, 2048, 32, 128},
    {8, 4096, 32, 128}};

int main(int argc, char **argv) {
    std::string format = "qkv_sep", dtype = "fp16", json, only;
    bool causal = false, unfused = false, variants = false;
    std::vector<std::vector<int>> configs;
    for (int i = 1; i < argc; ++i) {
        std::string a = argv[i];
        if (a == "--format" && i + 1 < argc) format = argv[++i];
        else if (a == "--dtype" && i + 1 < argc) dtype = argv[++i];
        else if (a == "--causal") causal = true;
        else if (a == "--unfused") unfused = true;
        else if (a == "--variants") variants = true;
        else if (a == "--only" && i + 1 < argc) only = argv[++i];
        else if (a == "--json" && i + 1 < argc) json = argv[++i];
        else if (a == "--configs") {
            while (i + 1 < argc && argv[i + 1][0] != '-') {
                std::vector<int> c(4);
                if (sscanf(argv[++i], "%d,%d,%d,%d", &c[0], &c[1], &c[2], &c[3]) == 4) configs.push_back(c);
            }
        } else {
            fprintf(stderr, "unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    if (configs.empty())
        for (auto &r : TABLE) configs.push_back({r[0], r[1], r[2], r[3]});
    const bool bf16 = dtype == "bf16";
    int fmt = format == "qkv_sep" ? KILN_MHA_Q_K_V : format == "kv_packed" ? KILN_MHA_Q_KV : format == "qkv_packed" ? KILN_MHA_QKV : -1;
    if (fmt < 0) {
        fprintf(stderr, "unknown format %s\n", format.c_str());
        return 2;
    }

    kiln_cuda_provider *prov;
    if (kiln_cuda_provider_create(0, &prov) != KILN_OK) {
        fprintf(stderr, "provider: %s\n", kiln_cuda_last_error());
        return 2;
    }
    const kiln_cuda_device_info *info = kiln_cuda_info(prov);
    printf("# kiln attention bench: %s, %s, %s, causal=%d\n", info->name, dtype.c_str(), format.c_str(), (int)causal);
    printf("B,S,N,H,kiln_tflops,kernel%s%s\n", unfused ? ",unfused_tflops" : "", variants ? ",variants" : "");
    FILE *jf = json.empty() ? nullptr : fopen(json.c_str(), "w");
    if (jf) fprintf(jf, "{\"format\": \"%s\", \"dtype\": \"%s\", \"causal\": %s, \"device\": \"%s\", \"rows\": [\n",
                    format.c_str(), dtype.c_str(), causal ? "true" : "false", info->name);

    cudaStream_t stream = (cudaStream_t)kiln_cuda_stream(prov);
    g_stream = stream;
    for (size_t ci = 0; ci < configs.size(); ++ci) {
        const int B = configs[ci][0], S = configs[ci][1], N = configs[ci][2], H = configs[ci][3];
        const size_t tok = (size_t)B * S * N * H;
        std::vector<void *> bufs;
        auto alloc = [&](size_t elems, uint32_t seed) {
            void *p;
            CUDA_OK(cudaMalloc(&p, elems * 2));
            fill_random<<<1024, 256, 0, stream>>>((uint16_t *)p, elems, seed, bf16);
            CUDA_OK(cudaGetLastError());
            bufs.push_back(p);
            return p;
        };
        kiln_cuda_mha_args a;
        memset(&a, 0, sizeof a);
        a.dtype = bf16 ? KILN_DTYPE_BFLOAT16 : KILN_DTYPE_FLOAT16;
        a.format = fmt;
        a.B = B, a.S = S, a.L = S, a.N = N, a.H = H;
        a.causal = causal;
        if (fmt == KILN_MHA_Q_K_V) {
            a.q = alloc(tok, 1);
            a.k = alloc(tok, 2);
            a.v = alloc(tok, 3);
        } else if (fmt == KILN_MHA_Q_KV) {
            a.q = alloc(tok, 1);
            a.k = alloc(2 * tok, 2);
        } else {
            a.q = alloc(3 * tok, 1);
        }
        void *out;
        CUDA_OK(cudaMalloc(&out, tok * 2));
        bufs.push_back(out);
        a.out = out;
        CUDA_OK(cudaDeviceSynchronize());
        const double flops = 4.0 * B * S * (double)S * N * H * (causal ? 0.5 : 1.0);

        kiln_cuda_attn_choice ch;
        kiln_status st = kiln_cuda_mha_forward(prov, &a, nullptr, &ch);
        if (st != KILN_OK) {
            fprintf(stderr, "kiln failed on %d,%d,%d,%d: %s\n", B, S, N, H, kiln_cuda_last_error());
            return 1;
        }
        auto call = [&](const kiln_cuda_attn_opts *o) {
            kiln_status s2 = kiln_cuda_mha_forward(prov, &a, o, nullptr);
            if (s2 != KILN_OK) {
                fprintf(stderr, "kiln failed: %s\n", kiln_cuda_last_error());
                exit(1);
            }
        };
        const double t = median_seconds([&] { call(nullptr); });
        const double tf = flops / t / 1e12;
        printf("%d,%d,%d,%d,%.1f,%s", B, S, N, H, tf, ch.name);
        if (jf) fprintf(jf, "  {\"B\": %d, \"S\": %d, \"N\": %d, \"H\": %d, \"kiln\": %.1f, \"kernel\": \"%s\", \"ms\": %.4f",
                        B, S, N, H, tf, ch.name, t * 1e3);
        if (unfused) {
            kiln_cuda_attn_opts o = {KILN_ATTN_KERNEL_UNFUSED, 0};
            cudaEvent_t e0, e1;
            CUDA_OK(cudaEventCreate(&e0));
            CUDA_OK(cudaEventCreate(&e1));
            CUDA_OK(cudaEventRecord(e0, stream));
            call(&o);
            CUDA_OK(cudaEventRecord(e1, stream));
            CUDA_OK(cudaEventSynchronize(e1));
            float ms;
            CUDA_OK(cudaEventElapsedTime(&ms, e0, e1));
            // Slow calls: fewer repetitions, the spread of a 10 ms+ call is small anyway.
            const double tu = ms > 5.f ? median_seconds([&] { call(&o); }, 5, 2.0, 1) : median_seconds([&] { call(&o); });
            printf(",%.1f", flops / tu / 1e12);
            if (jf) fprintf(jf, ", \"unfused\": %.1f", flops / tu / 1e12);
        }
        if (variants) {
            // Every compiled tile of both flash kinds, forced, so the defaults can be chosen from data.
            if (jf) fprintf(jf, ", \"variants\": {");
            int first = 1;
            for (int kind = 0; kind < 2; ++kind) {
                const kiln_cuda_attn_kernel k = kind ? KILN_ATTN_KERNEL_FLASH_SM90 : KILN_ATTN_KERNEL_FLASH;
                const int nv = kind ? kiln_cuda_sm90_variants(H) : kiln_cuda_flash_variants(H);
                for (int v = 0; v < nv; ++v) {
                    kiln_cuda_attn_opts o = {k, v};
                    kiln_cuda_attn_choice vc;
                    if (kiln_cuda_mha_forward(prov, &a, &o, &vc) != KILN_OK || vc.kernel != k) continue;
                    if (!only.empty() && !strstr(vc.name, only.c_str())) continue;
                    const double tv = median_seconds([&] { call(&o); });
                    printf(",%s=%.1f", vc.name, flops / tv / 1e12);
                    if (jf) fprintf(jf, "%s\"%s\": %.1f", first ? "" : ", ", vc.name, flops / tv / 1e12);
                    first = 0;
                }
            }
            if (jf) fprintf(jf, "}");
        }
        printf("\n");
        fflush(stdout);
        if (jf) {
            fprintf(jf, "}%s\n", ci + 1 < configs.size() ? "," : "");
            fflush(jf);
        }
        CUDA_OK(cudaDeviceSynchronize());
        for (void *p : bufs) CUDA_OK(cudaFree(p));
    }
    if (jf) {
        fprintf(jf, "]}\n");
        fclose(jf);
    }
    kiln_cuda_provider_destroy(prov);
    return 0;
}
