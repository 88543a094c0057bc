// Correctness driver for the CUDA attention kernels (flash variants, sm90, unfused).
//
// Every case draws fresh random inputs, rounds them to the dtype, lays them out in the case's
// format (separate, packed KV, packed QKV, BNSH cache, packed tokens) and runs kiln through the
// public entry kiln_cuda_mha_forward. The reference is a float32 kernel on the GPU that reads the
// same rounded values in a plain (b, n, s, h) layout, so the format/stride logic is checked
// independently of the kernels. The output buffer is poisoned with NaN before each run, and a
// guard zone after it must come back untouched: every element written, nothing beyond.
//
//   test_attention            all cases
//   test_attention --quick    a few small cases (for compute-sanitizer)
//   test_attention --filter S only cases whose name contains S (repeated: contains every S)
//   test_attention --exclude S not the cases whose name contains S (repeated: any S)
#include "cuda/attention/attention_dispatch.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <string>
#include <vector>

#define GPU_TEST_SEED 0x9E3779B97F4A7C15ull
#include "gpu_test_util.h"

static uint16_t to_bits(float x, bool f16) {
    if (f16) {
        __half h = __float2half_rn(x);
        uint16_t b;
        memcpy(&b, &h, 2);
        return b;
    }
    __nv_bfloat16 h = __float2bfloat16_rn(x);
    uint16_t b;
    memcpy(&b, &h, 2);
    return b;
}
static float from_bits(uint16_t b, bool f16) {
    if (f16) {
        __half h;
        memcpy(&h, &b, 2);
        return __half2float(h);
    }
    __nv_bfloat16 h;
    memcpy(&h, &b, 2);
    return __bfloat162float(h);
}

// ---- float32 reference: one block per (b, n, s) row; scores kept in shared memory ----
__global__ void ref_attention(const float *Q, const float *K, const float *V, const float *bias, float *O,
                              const int *lens_q, const int *lens_k, const int *key_lens, int B, int N, int S, int T,
                              int H, int Hv, float scale, int causal) {
    extern __shared__ float sc[];
    __shared__ float red[2];
    const int s = blockIdx.x, n = blockIdx.y, b = blockIdx.z;
    const int Sb = lens_q[b], Tb = lens_k[b];
    float *o = O + (((size_t)b * N + n) * S + s) * Hv;
    if (s >= Sb) return;
    int lim = Tb;
    if (key_lens && key_lens[b] > 0 && key_lens[b] < Tb) lim = key_lens[b];
    if (causal) lim = min(lim, s + Tb - Sb + 1);
    const float *q = Q + (((size_t)b * N + n) * S + s) * H;
    for (int j = threadIdx.x; j < Tb; j += blockDim.x) {
        const float *k = K + (((size_t)b * N + n) * T + j) * H;
        float acc = 0.f;
        for (int h = 0; h < H; ++h) acc += q[h] * k[h];
        acc *= scale;
        if (bias) acc += bias[(((size_t)b * N + n) * S + s) * T + j];
        sc[j] = acc;
    }
    __syncthreads();
    if (threadIdx.x == 0) {
        float m = -INFINITY;
        for (int j = 0; j < lim; ++j) m = fmaxf(m, sc[j]);
        double sum = 0;
        for (int j = 0; j < lim; ++j) sum += exp((double)sc[j] - m);
        red[0] = m;
        red[1] = (float)sum;
    }
    __syncthreads();
    const float m = red[0], inv = red[1] > 0 ? 1.f / red[1] : 0.f;
    for (int h = threadIdx.x; h < Hv; h += blockDim.x) {
        double acc = 0;
        for (int j = 0; j < lim; ++j) acc += (double)expf(sc[j] - m) * V[(((size_t)b * N + n) * T + j) * Hv + h];
        o[h] = (float)(acc * inv);
    }
}

struct Case {
    std::string name;
    bool f16 = true;
    int format = KILN_MHA_Q_K_V;
    int B = 2, S = 64, L = 64, N = 2, H = 64, Hv = 0;
    int causal = 0;
    int key_lens = 0; // 1: per-batch lengths including 0 (= all) and partial
    int varlen = 0;   // packed tokens with cu_seqlens
    int P = -1;       // >= 0: past of this length, present requested
    int present = 0;  // present without past
    int bias = 0;
    int kv_group = 1; // > 1: grouped K/V heads (N / kv_group of them), through kiln_cuda_attention; Q,K,V only
    kiln_cuda_attn_kernel force = KILN_ATTN_KERNEL_NONE;
    int variant = 0;
    float scale = 0.f;
};

struct Dev {
    std::vector<void *> ptrs;
    void *alloc(size_t bytes) {
        void *p;
        CUDA_OK(cudaMalloc(&p, bytes ? bytes : 1));
        ptrs.push_back(p);
        return p;
    }
    void *up(const void *h, size_t bytes) {
        void *p = alloc(bytes);
        CUDA_OK(cudaMemcpy(p, h, bytes, cudaMemcpyHostToDevice));
        return p;
    }
    ~Dev() {
        for (void *p : ptrs) cudaFree(p);
    }
};

static const char *kname(kiln_cuda_attn_kernel k) {
    return k == KILN_ATTN_KERNEL_FLASH        ? "flash"
           : k == KILN_ATTN_KERNEL_FLASH_SM90 ? "sm90"
           : k == KILN_ATTN_KERNEL_UNFUSED    ? "unfused"
           : k == KILN_ATTN_KERNEL_DECODE     ? "decode"
                                              : "auto";
}

static int run_case(kiln_cuda_provider *prov, const Case &c, std::string *msg) {
    const bool f16 = c.f16;
    const int B = c.B, N = c.N, H = c.H, Hv = c.Hv ? c.Hv : c.H, S = c.S;
    const int L = c.format == KILN_MHA_QKV ? c.S : c.L;
    const int P = c.P > 0 ? c.P : 0, T = P + L;
    rng_state = 0x9E3779B97F4A7C15ull ^ (std::hash<std::string>()(c.name) * 0x100000001B3ull);

    // Per-batch lengths (packed tokens: the same cu_seqlens for queries and keys).
    std::vector<int> lq(B, S), lk(B, T), klen;
    std::vector<int> cu(B + 1, 0);
    if (c.varlen) {
        for (int b = 0; b < B; ++b) {
            int len = b == 0 ? S : b == 1 ? 1 : b == 2 ? 0 : (int)(urand() * S);
            if (len > S) len = S;
            lq[b] = lk[b] = len;
            cu[b + 1] = cu[b] + len;
        }
    }
    if (c.key_lens) {
        klen.resize(B);
        for (int b = 0; b < B; ++b) klen[b] = b == 0 ? 0 : b == 1 ? 1 : b == 2 ? T : 1 + (int)(urand() * (T - 1));
    }
    const int tokens = c.varlen ? cu[B] : B * S, ktokens = c.varlen ? cu[B] : B * L;

    // Logical inputs, rounded to the dtype: Q (B,N,S,H), K/V over all T keys (past then new).
    std::vector<float> Q((size_t)B * N * S * H, 0.f), K((size_t)B * N * T * H, 0.f), V((size_t)B * N * T * Hv, 0.f);
    auto rnd = [&](float mul) { return from_bits(to_bits(nrand() * mul, f16), f16); };
    for (int b = 0; b < B; ++b)
        for (int n = 0; n < N; ++n) {
            for (int s = 0; s < lq[b]; ++s)
                for (int h = 0; h < H; ++h) Q[(((size_t)b * N + n) * S + s) * H + h] = rnd(1.5f);
            for (int j = 0; j < (c.varlen ? lk[b] : T); ++j) {
                for (int h = 0; h < H; ++h) K[(((size_t)b * N + n) * T + j) * H + h] = rnd(1.f);
                for (int h = 0; h < Hv; ++h) V[(((size_t)b * N + n) * T + j) * Hv + h] = rnd(1.f);
            }
        }
    // Grouped K/V: query heads n share K/V head n / G, so the reference reads head n's copy.
    const int G = c.kv_group, Nkv = N / G;
    if (G > 1)
        for (int b = 0; b < B; ++b)
            for (int n = 0; n < N; ++n)
                if (n % G)
                    for (int j = 0; j < T; ++j) {
                        for (int h = 0; h < H; ++h)
                            K[(((size_t)b * N + n) * T + j) * H + h] = K[(((size_t)b * N + n - n % G) * T + j) * H + h];
                        for (int h = 0; h < Hv; ++h)
                            V[(((size_t)b * N + n) * T + j) * Hv + h] = V[(((size_t)b * N + n - n % G) * T + j) * Hv + h];
                    }
    std::vector<float> bias;
    if (c.bias) {
        bias.resize((size_t)B * N * S * T);
        for (auto &x : bias) x = rnd(2.f);
    }

    // Lay out in the case's format.
    std::vector<uint16_t> hq, hk, hv, hpk, hpv, hbias;
    auto tok_q = [&](int b, int s) { return c.varlen ? cu[b] + s : b * S + s; };
    auto tok_k = [&](int b, int l) { return c.varlen ? cu[b] + l : b * L + l; };
    if (c.format == KILN_MHA_QKV) {
        hq.assign((size_t)tokens * N * 3 * H, 0);
        for (int b = 0; b < B; ++b)
            for (int s = 0; s < lq[b]; ++s)
                for (int n = 0; n < N; ++n)
                    for (int h = 0; h < H; ++h) {
                        size_t base = (((size_t)tok_q(b, s) * N + n) * 3) * H + h;
                        hq[base] = to_bits(Q[(((size_t)b * N + n) * S + s) * H + h], f16);
                        hq[base + H] = to_bits(K[(((size_t)b * N + n) * T + P + s) * H + h], f16);
                        hq[base + 2 * H] = to_bits(V[(((size_t)b * N + n) * T + P + s) * Hv + h], f16);
                    }
    } else if (G > 1) {
        hq.assign((size_t)tokens * N * H, 0);
        hk.assign((size_t)B * L * Nkv * H, 0);
        hv.assign((size_t)B * L * Nkv * Hv, 0);
        for (int b = 0; b < B; ++b)
            for (int n = 0; n < N; ++n) {
                for (int s = 0; s < S; ++s)
                    for (int h = 0; h < H; ++h)
                        hq[(((size_t)b * S + s) * N + n) * H + h] = to_bits(Q[(((size_t)b * N + n) * S + s) * H + h], f16);
                if (n % G) continue;
                for (int l = 0; l < L; ++l) {
                    for (int h = 0; h < H; ++h)
                        hk[(((size_t)b * L + l) * Nkv + n / G) * H + h] = to_bits(K[(((size_t)b * N + n) * T + l) * H + h], f16);
                    for (int h = 0; h < Hv; ++h)
                        hv[(((size_t)b * L + l) * Nkv + n / G) * Hv + h] =
                            to_bits(V[(((size_t)b * N + n) * T + l) * Hv + h], f16);
                }
            }
    } else {
        hq.assign((size_t)tokens * N * H, 0);
        for (int b = 0; b < B; ++b)
            for (int s = 0; s < lq[b]; ++s)
                for (int n = 0; n < N; ++n)
                    for (int h = 0; h < H; ++h)
                        hq[((size_t)tok_q(b, s) * N + n) * H + h] = to_bits(Q[(((size_t)b * N + n) * S + s) * H + h], f16);
        const int lrows = c.varlen ? 0 : L;
        if (c.format == KILN_MHA_Q_KV) {
            hk.assign((size_t)ktokens * N * 2 * H, 0);
            for (int b = 0; b < B; ++b)
                for (int l = 0; l < (c.varlen ? lk[b] : L); ++l)
                    for (int n = 0; n < N; ++n)
                        for (int h = 0; h < H; ++h) {
                            size_t base = (((size_t)tok_k(b, l) * N + n) * 2) * H + h;
                            hk[base] = to_bits(K[(((size_t)b * N + n) * T + P + l) * H + h], f16);
                            hk[base + H] = to_bits(V[(((size_t)b * N + n) * T + P + l) * Hv + h], f16);
                        }
        } else {
            hk.assign((size_t)ktokens * N * H, 0);
            hv.assign((size_t)ktokens * N * Hv, 0);
            for (int b = 0; b < B; ++b)
                for (int l = 0; l < (c.varlen ? lk[b] : L); ++l)
                    for (int n = 0; n < N; ++n) {
                        size_t kidx = c.format == KILN_MHA_Q_K_V_BNSH ? (((size_t)b * N + n) * L + l) * H
                                                                     : ((size_t)tok_k(b, l) * N + n) * H;
                        size_t vidx = c.format == KILN_MHA_Q_K_V_BNSH ? (((size_t)b * N + n) * L + l) * Hv
                                                                     : ((size_t)tok_k(b, l) * N + n) * Hv;
                        for (int h = 0; h < H; ++h) hk[kidx + h] = to_bits(K[(((size_t)b * N + n) * T + P + l) * H + h], f16);
                        for (int h = 0; h < Hv; ++h) hv[vidx + h] = to_bits(V[(((size_t)b * N + n) * T + P + l) * Hv + h], f16);
                    }
        }
        (void)lrows;
    }
    if (c.P >= 0) {
        hpk.resize((size_t)B * N * P * H);
        hpv.resize((size_t)B * N * P * Hv);
        for (int b = 0; b < B; ++b)
            for (int n = 0; n < N; ++n)
                for (int j = 0; j < P; ++j) {
                    for (int h = 0; h < H; ++h)
                        hpk[(((size_t)b * N + n) * P + j) * H + h] = to_bits(K[(((size_t)b * N + n) * T + j) * H + h], f16);
                    for (int h = 0; h < Hv; ++h)
                        hpv[(((size_t)b * N + n) * P + j) * Hv + h] = to_bits(V[(((size_t)b * N + n) * T + j) * Hv + h], f16);
                }
    }
    if (c.bias) {
        hbias.resize(bias.size());
        for (size_t i = 0; i < bias.size(); ++i) hbias[i] = to_bits(bias[i], f16);
    }

    Dev dev;
    kiln_cuda_mha_args a;
    memset(&a, 0, sizeof a);
    a.dtype = f16 ? KILN_DTYPE_FLOAT16 : KILN_DTYPE_BFLOAT16;
    a.format = c.format;
    a.B = B, a.S = S, a.L = L, a.N = N, a.H = H, a.Hv = c.Hv;
    a.scale = c.scale;
    a.causal = c.causal;
    a.q = dev.up(hq.data(), hq.size() * 2);
    if (!hk.empty()) a.k = dev.up(hk.data(), hk.size() * 2);
    if (!hv.empty()) a.v = dev.up(hv.data(), hv.size() * 2);
    if (c.key_lens) a.key_lens = (const int32_t *)dev.up(klen.data(), B * sizeof(int));
    if (c.varlen) a.cu_seqlens = (const int32_t *)dev.up(cu.data(), (B + 1) * sizeof(int));
    const size_t ptotal = (size_t)B * N * T;
    if (c.P >= 0) {
        a.past_key = dev.up(hpk.data(), hpk.size() * 2 + 2);
        a.past_value = dev.up(hpv.data(), hpv.size() * 2 + 2);
        a.P = P;
    }
    if (c.P >= 0 || c.present) {
        a.present_key = dev.alloc(ptotal * H * 2);
        a.present_value = dev.alloc(ptotal * Hv * 2);
        CUDA_OK(cudaMemset(a.present_key, 0xFF, ptotal * H * 2));
        CUDA_OK(cudaMemset(a.present_value, 0xFF, ptotal * Hv * 2));
    }
    if (c.bias) a.bias = dev.up(hbias.data(), hbias.size() * 2);
    const size_t out_elems = (size_t)tokens * N * Hv, guard = 4096;
    uint16_t *out = (uint16_t *)dev.alloc((out_elems + guard) * 2);
    CUDA_OK(cudaMemset(out, 0xFF, out_elems * 2));           // NaN in fp16 and bf16
    CUDA_OK(cudaMemset(out + out_elems, 0x5A, guard * 2));    // guard pattern
    a.out = out;

    kiln_cuda_attn_opts opts = {c.force, c.variant};
    kiln_cuda_attn_choice ch;
    memset(&ch, 0, sizeof ch);
    kiln_status st;
    kiln_cuda_sdpa last_sdpa;
    if (G > 1) {
        // No MultiHeadAttention format has grouped heads: the attention entry point takes views.
        kiln_cuda_sdpa d;
        memset(&d, 0, sizeof d);
        d.dtype = a.dtype;
        d.B = B, d.N = N, d.N_kv = Nkv, d.S = S, d.T = L, d.H = H, d.Hv = Hv;
        d.scale = c.scale;
        d.causal = c.causal;
        d.q = {a.q, (int64_t)S * N * H, H, (int64_t)N * H};
        d.k = {a.k, (int64_t)L * Nkv * H, H, (int64_t)Nkv * H};
        d.v = {a.v, (int64_t)L * Nkv * Hv, Hv, (int64_t)Nkv * Hv};
        d.out = out;
        d.o_sb = (int64_t)S * N * Hv, d.o_sn = Hv, d.o_ss = (int64_t)N * Hv;
        d.key_lens = a.key_lens;
        if (c.bias) { // (B, N, S, T) as the reference reads it
            d.bias = a.bias;
            d.bias_ss = L, d.bias_sn = (int64_t)S * L, d.bias_sb = (int64_t)N * S * L;
        }
        last_sdpa = d;
        st = kiln_cuda_attention(prov, &d, &opts, &ch);
    } else {
        st = kiln_cuda_mha_forward(prov, &a, &opts, &ch);
    }
    if (st == KILN_OK) st = kiln_cuda_sync(prov);
    if (st != KILN_OK) {
        *msg = std::string("kiln error: ") + kiln_cuda_last_error();
        return 1;
    }
    CUDA_OK(cudaGetLastError());
    if (c.force != KILN_ATTN_KERNEL_NONE && ch.kernel != c.force) {
        *msg = std::string("asked for ") + kname(c.force) + " but ran " + ch.name;
        return 1;
    }
    // Decode again into a poisoned buffer: the splits and their combine sum in a fixed order, so
    // the second output is bit for bit the first.
    size_t rerun_bad = 0;
    if (ch.kernel == KILN_ATTN_KERNEL_DECODE && G > 1) {
        std::vector<uint16_t> first(out_elems);
        CUDA_OK(cudaMemcpy(first.data(), out, out_elems * 2, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemset(out, 0xFF, out_elems * 2));
        kiln_cuda_sdpa d2 = last_sdpa;
        if (kiln_cuda_attention(prov, &d2, &opts, &ch) != KILN_OK || kiln_cuda_sync(prov) != KILN_OK) {
            *msg = std::string("kiln error on the second run: ") + kiln_cuda_last_error();
            return 1;
        }
        std::vector<uint16_t> second(out_elems);
        CUDA_OK(cudaMemcpy(second.data(), out, out_elems * 2, cudaMemcpyDeviceToHost));
        for (size_t i = 0; i < out_elems; ++i) rerun_bad += first[i] != second[i];
    }

    // Reference.
    float *dQ = (float *)dev.up(Q.data(), Q.size() * 4), *dK = (float *)dev.up(K.data(), K.size() * 4),
          *dV = (float *)dev.up(V.data(), V.size() * 4);
    float *dB = c.bias ? (float *)dev.up(bias.data(), bias.size() * 4) : nullptr;
    float *dO = (float *)dev.alloc((size_t)B * N * S * Hv * 4);
    int *dlq = (int *)dev.up(lq.data(), B * 4), *dlk = (int *)dev.up(lk.data(), B * 4);
    const float scale = c.scale != 0.f ? c.scale : 1.f / sqrtf((float)H);
    if (B * N * S > 0) {
        // Long KV caches: the reference keeps a row's T scores in shared memory.
        if ((size_t)T * 4 + 16 > 48 * 1024)
            CUDA_OK(cudaFuncSetAttribute(ref_attention, cudaFuncAttributeMaxDynamicSharedMemorySize, T * 4 + 16));
        ref_attention<<<dim3(S, N, B), 128, T * 4 + 16>>>(dQ, dK, dV, dB, dO, dlq, dlk,
                                                          c.key_lens ? (const int *)a.key_lens : nullptr, B, N, S, T, H,
                                                          Hv, scale, c.causal);
        CUDA_OK(cudaGetLastError());
    }
    CUDA_OK(cudaDeviceSynchronize());
    std::vector<float> ref((size_t)B * N * S * Hv);
    CUDA_OK(cudaMemcpy(ref.data(), dO, ref.size() * 4, cudaMemcpyDeviceToHost));
    std::vector<uint16_t> got(out_elems + guard);
    CUDA_OK(cudaMemcpy(got.data(), out, got.size() * 2, cudaMemcpyDeviceToHost));

    double num = 0, den = 0, maxabs = 0;
    size_t nan = 0, first_nan = (size_t)-1;
    for (int b = 0; b < B; ++b)
        for (int s = 0; s < lq[b]; ++s)
            for (int n = 0; n < N; ++n)
                for (int h = 0; h < Hv; ++h) {
                    size_t oi = ((size_t)tok_q(b, s) * N + n) * Hv + h;
                    float x = from_bits(got[oi], f16), r = ref[(((size_t)b * N + n) * S + s) * Hv + h];
                    if (!isfinite(x)) {
                        if (!nan) first_nan = oi;
                        ++nan;
                        continue;
                    }
                    num += (double)(x - r) * (x - r);
                    den += (double)r * r;
                    maxabs = fmax(maxabs, fabs(x - r));
                }
    size_t guard_bad = 0;
    for (size_t i = 0; i < guard; ++i) guard_bad += got[out_elems + i] != 0x5A5A;
    const double rel = den > 0 ? sqrt(num / den) : sqrt(num);
    const double tol = f16 ? 2e-3 : 1e-2;

    // present = past ++ new, bit for bit.
    size_t present_bad = 0;
    if (a.present_key) {
        const int Tp = c.P >= 0 ? T : L, off = c.P >= 0 ? 0 : P;
        std::vector<uint16_t> pk((size_t)B * N * Tp * H), pv((size_t)B * N * Tp * Hv);
        CUDA_OK(cudaMemcpy(pk.data(), a.present_key, pk.size() * 2, cudaMemcpyDeviceToHost));
        CUDA_OK(cudaMemcpy(pv.data(), a.present_value, pv.size() * 2, cudaMemcpyDeviceToHost));
        for (int b = 0; b < B; ++b)
            for (int n = 0; n < N; ++n)
                for (int j = 0; j < Tp; ++j) {
                    for (int h = 0; h < H; ++h)
                        present_bad += pk[(((size_t)b * N + n) * Tp + j) * H + h] !=
                                       to_bits(K[(((size_t)b * N + n) * T + off + j) * H + h], f16);
                    for (int h = 0; h < Hv; ++h)
                        present_bad += pv[(((size_t)b * N + n) * Tp + j) * Hv + h] !=
                                       to_bits(V[(((size_t)b * N + n) * T + off + j) * Hv + h], f16);
                }
    }

    char buf[512];
    snprintf(buf, sizeof buf, "%-28s rel=%.2e max=%.2e nan=%zu guard=%zu present_bad=%zu rerun_bad=%zu", ch.name, rel,
             maxabs, nan, guard_bad, present_bad, rerun_bad);
    *msg = buf;
    if (nan) {
        snprintf(buf, sizeof buf, " first_nan_at=%zu", first_nan);
        *msg += buf;
    }
    return !(rel <= tol) || nan || guard_bad || present_bad || rerun_bad;
}

static std::vector<Case> make_cases(bool quick) {
    std::vector<Case> cs;
    auto add = [&](Case c) {
        char buf[256];
        snprintf(buf, sizeof buf, "%s fmt=%d B=%d S=%d L=%d N=%d H=%d Hv=%d c=%d kl=%d vl=%d P=%d pr=%d bias=%d %s v%d%s",
                 c.f16 ? "fp16" : "bf16", c.format, c.B, c.S, c.L, c.N, c.H, c.Hv, c.causal, c.key_lens, c.varlen,
                 c.P, c.present, c.bias, kname(c.force), c.variant,
                 c.kv_group > 1 ? (" gqa" + std::to_string(c.kv_group)).c_str() : "");
        c.name = buf;
        // Name the TMA tiles so --filter / --exclude can pick them ("tma_").
        if (c.force == KILN_ATTN_KERNEL_FLASH_SM90) {
            const char *vn = kiln_cuda_sm90_variant_name(c.H, c.variant);
            if (vn && !strncmp(vn, "tma", 3)) c.name += std::string(" ") + vn;
        }
        cs.push_back(c);
    };
    // The scenario as selected by default, and again forced onto each flash kind (the mma.sync
    // kernel and, where it has this head size, the Hopper one): on Hopper the default is mostly
    // the wgmma kernel, elsewhere the mma.sync one, and both must stay covered on either.
    auto add2 = [&](Case c) {
        add(c);
        if (c.force == KILN_ATTN_KERNEL_NONE && c.H % 8 == 0 && c.H <= 256 && (c.Hv == 0 || c.Hv == c.H) &&
            !c.bias) {
            c.force = KILN_ATTN_KERNEL_FLASH;
            add(c);
            if (kiln_cuda_sm90_variants(c.H) > 0) {
                c.force = KILN_ATTN_KERNEL_FLASH_SM90;
                add(c);
            }
        }
    };
    // Split-KV decode: one to four query rows per sequence against a KV cache, through the grouped
    // entry (K/V (B, L, N_kv, H)) and MultiHeadAttention's past/present (BNSH), with key lengths
    // (0 = all keys, 1, T, random), forced onto the decode kernel; one split (direct write) and many
    // (combine pass).
    auto add_decode = [&](bool f16, int B, int N, int G, int H, int S, int T, int key_lens, int causal,
                          int bias = 0) {
        Case c;
        c.f16 = f16, c.B = B, c.N = N, c.H = H, c.key_lens = key_lens, c.causal = causal, c.bias = bias;
        c.force = KILN_ATTN_KERNEL_DECODE;
        if (G > 1) {
            c.kv_group = G, c.S = S, c.L = T;
        } else {
            c.P = T - S, c.S = S, c.L = S;
        }
        add(c);
    };
    if (quick) {
        for (int f16 = 1; f16 >= 0; --f16) {
            add_decode(f16, 2, 4, 2, 64, 1, 1000, 1, 0);
            add_decode(f16, 2, 4, 1, 128, 1, 200, 1, 0);
            add_decode(f16, 2, 8, 4, 128, 3, 777, 1, 1);
            add_decode(f16, 2, 8, 4, 128, 1, 1500, 1, 0, 1);
        }
    }
    if (quick) {
        for (int f16 = 1; f16 >= 0; --f16) {
            Case c;
            c.f16 = f16;
            c.B = 2, c.S = 70, c.L = 70, c.N = 2, c.H = 64;
            add(c);
            c.causal = 1, c.key_lens = 1;
            add(c);
            c.force = KILN_ATTN_KERNEL_UNFUSED;
            add(c);
            c.force = KILN_ATTN_KERNEL_FLASH_SM90;
            add(c);
            Case v;
            v.f16 = f16, v.B = 4, v.S = 90, v.L = 90, v.N = 2, v.H = 40, v.varlen = 1, v.format = KILN_MHA_QKV;
            add(v);
            v.force = KILN_ATTN_KERNEL_FLASH_SM90;
            add(v);
            v.force = KILN_ATTN_KERNEL_NONE;
            v.force = KILN_ATTN_KERNEL_UNFUSED;
            add(v);
        }
        return cs;
    }
    const int heads[] = {8, 16, 24, 32, 40, 64, 80, 96, 112, 128, 160, 192, 256};
    for (int f16 = 1; f16 >= 0; --f16) {
        // Every head size in the separate format, with a ragged S and a different L.
        for (int H : heads) {
            Case c;
            c.f16 = f16, c.B = 2, c.S = 200, c.L = 333, c.N = 3, c.H = H;
            add2(c);
            if (H == 40 || H == 128) {
                c.force = KILN_ATTN_KERNEL_UNFUSED;
                add(c);
            }
        }
        // Every flash tile variant, at the head sizes the benchmark table uses.
        for (int H : {16, 32, 40, 64, 80, 128, 160, 256}) {
            int nv = kiln_cuda_flash_variants(H);
            for (int v = 0; v < nv; ++v) {
                Case c;
                c.f16 = f16, c.B = 2, c.S = 257, c.L = 257, c.N = 2, c.H = H, c.variant = v;
                c.force = KILN_ATTN_KERNEL_FLASH;
                add(c);
                c.causal = 1;
                add(c);
            }
        }
        for (int H : {16, 32, 48, 64, 80, 96, 128, 160, 192, 256}) {
            int nv = kiln_cuda_sm90_variants(H);
            for (int v = 0; v < nv; ++v) {
                Case c;
                c.f16 = f16, c.B = 2, c.S = 257, c.L = 257, c.N = 2, c.H = H, c.variant = v;
                c.force = KILN_ATTN_KERNEL_FLASH_SM90;
                add(c);
                c.causal = 1;
                add(c);
                // An additive (B, N, S, T) bias, read where each key block's scores are: causal,
                // then keys past per-batch lengths with S != L and partial blocks.
                c.bias = 1;
                add(c);
                c.causal = 0, c.S = 150, c.L = 260, c.key_lens = 1;
                add(c);
            }
        }
        // The TMA-fed sm90 variants (opt-in until measured): every strided format (their tensor
        // maps encode the views' strides), causal with S > L and S < L, key lengths (rows past the
        // limit are loaded and must be masked), odd lengths, and packed batches (which fall back
        // to the cp.async kernel).
        for (int H : {16, 32, 40, 64, 80, 96, 128, 160, 192, 256}) {
            const int nv = kiln_cuda_sm90_variants(H);
            for (int v = 0; v < nv; ++v) {
                const char *vn = kiln_cuda_sm90_variant_name(H, v);
                if (!vn || strncmp(vn, "tma", 3) != 0) continue;
                Case c;
                c.f16 = f16, c.N = 2, c.H = H, c.variant = v, c.force = KILN_ATTN_KERNEL_FLASH_SM90;
                for (int fmt : {KILN_MHA_Q_K_V, KILN_MHA_Q_KV, KILN_MHA_QKV, KILN_MHA_Q_K_V_BNSH}) {
                    Case d = c;
                    d.format = fmt, d.B = 3, d.S = 300, d.L = fmt == KILN_MHA_QKV ? 300 : 180, d.causal = 1;
                    add(d);
                }
                Case d = c;
                d.B = 4, d.causal = 1, d.S = 300, d.L = 77;
                add(d);
                d.S = 77, d.L = 300;
                add(d);
                d.causal = 0, d.key_lens = 1, d.S = 150, d.L = 260;
                add(d);
                d.causal = 1;
                add(d);
                d = c;
                d.B = 1, d.S = 1000, d.L = 1000;
                add(d);
                d = c;
                d.format = KILN_MHA_QKV, d.B = 5, d.S = 290, d.L = 290, d.varlen = 1;
                add(d);
                if (!strstr(vn, "persist")) continue;
                // Persistent CTAs: more tiles than SMs, so each CTA walks several tiles of
                // different heads and batches (the Q/K/V rings and the ping-pong barriers carry
                // over from tile to tile), with lengths differing per batch.
                for (int fmt : {KILN_MHA_Q_K_V, KILN_MHA_Q_KV, KILN_MHA_QKV}) {
                    d = c;
                    d.format = fmt, d.B = 8, d.N = 12, d.S = 300, d.L = 300;
                    add(d);
                }
                d = c;
                d.B = 16, d.N = 12, d.key_lens = 1, d.S = 150, d.L = 260;
                add(d);
                d = c;
                d.format = KILN_MHA_Q_KV, d.B = 48, d.N = 12, d.S = 128, d.L = 128;
                add(d);
                d = c;
                d.B = 7, d.N = 40, d.S = 1, d.L = 200;
                add(d);
                // Causal calls run persistent too (snake order): tiles of unequal length, and
                // with S > L tiles that see no key at all.
                d = c;
                d.B = 8, d.N = 12, d.S = 300, d.L = 300, d.causal = 1;
                add(d);
                d.B = 16, d.S = 300, d.L = 77;
                add(d);
                d.S = 77, d.L = 300, d.key_lens = 1;
                add(d);
            }
        }
        // Grouped K/V heads (N / G of them, through kiln_cuda_attention): the default path, each
        // flash kind, the unfused path, and every sm90 tile with more tiles than SMs.
        for (int H : {32, 64, 96, 128, 192, 256})
            for (int G : {2, 4})
                for (int causal = 0; causal < 2; ++causal) {
                    Case c;
                    c.f16 = f16, c.B = 4, c.S = 300, c.L = 300, c.N = 16, c.H = H, c.causal = causal, c.kv_group = G;
                    add(c);
                    c.key_lens = 1;
                    add(c);
                    c.key_lens = 0;
                    c.force = KILN_ATTN_KERNEL_FLASH;
                    add(c);
                    c.force = KILN_ATTN_KERNEL_UNFUSED;
                    add(c);
                    c.force = KILN_ATTN_KERNEL_FLASH_SM90;
                    for (int v = 0; v < kiln_cuda_sm90_variants(H); ++v) {
                        c.variant = v;
                        add(c);
                    }
                }
        // The three benchmark formats plus BNSH K/V, causal and not.
        for (int fmt : {KILN_MHA_Q_K_V, KILN_MHA_Q_KV, KILN_MHA_QKV, KILN_MHA_Q_K_V_BNSH})
            for (int H : {32, 64, 128})
                for (int causal = 0; causal < 2; ++causal) {
                    Case c;
                    c.f16 = f16, c.format = fmt, c.B = 3, c.S = 300, c.L = fmt == KILN_MHA_QKV ? 300 : 180, c.N = 2;
                    c.H = H, c.causal = causal;
                    add2(c);
                    if (H == 64) {
                        c.force = KILN_ATTN_KERNEL_UNFUSED;
                        add(c);
                    }
                }
        // Causal with S > L (rows that see nothing) and S < L (offset diagonal), key lengths.
        for (int H : {40, 64, 128}) {
            Case c;
            c.f16 = f16, c.B = 4, c.N = 2, c.H = H, c.causal = 1;
            c.S = 300, c.L = 77;
            add2(c);
            c.S = 77, c.L = 300;
            add2(c);
            c.causal = 0, c.key_lens = 1, c.S = 150, c.L = 260;
            add2(c);
            c.causal = 1;
            add2(c);
            c.force = KILN_ATTN_KERNEL_UNFUSED;
            add(c);
        }
        // Packed tokens (PackedMultiHeadAttention), including empty and one-token sequences.
        for (int fmt : {KILN_MHA_Q_K_V, KILN_MHA_QKV})
            for (int H : {32, 64, 80})
                for (int causal = 0; causal < 2; ++causal) {
                    Case c;
                    c.f16 = f16, c.format = fmt, c.B = 5, c.S = 290, c.L = 290, c.N = 3, c.H = H, c.causal = causal;
                    c.varlen = 1;
                    add2(c);
                    if (H == 64) {
                        c.force = KILN_ATTN_KERNEL_UNFUSED;
                        add(c);
                    }
                }
        // KV cache: decode step, prompt continuation, present without past.
        for (int H : {64, 128}) {
            Case c;
            c.f16 = f16, c.B = 2, c.N = 4, c.H = H, c.P = 100, c.S = 1, c.L = 1;
            add2(c);
            c.P = 64, c.S = 33, c.L = 33, c.causal = 1;
            add2(c);
            c.force = KILN_ATTN_KERNEL_UNFUSED;
            add(c);
            Case d;
            d.f16 = f16, d.B = 2, d.N = 2, d.H = H, d.S = 50, d.L = 70, d.present = 1;
            add(d);
        }
        // What only the unfused path covers.
        {
            Case c;
            c.f16 = f16, c.B = 2, c.S = 100, c.L = 120, c.N = 2, c.H = 64, c.bias = 1;
            add(c);
            c.causal = 1;
            add(c);
            Case d;
            d.f16 = f16, d.B = 2, d.S = 100, d.L = 120, d.N = 2, d.H = 12;
            add(d);
            d.H = 64, d.Hv = 32;
            add(d);
            d.H = 264, d.Hv = 0;
            add(d);
        }
        // Split-KV decode (see add_decode): head sizes 64..256 (80/96/192: padded lanes), GQA 1/4/8,
        // short and 32k caches, speculative query lengths 2..4 with the causal diagonal.
        for (int H : {64, 128, 256})
            for (int G : {1, 4, 8})
                for (int T : {1000, 4099}) add_decode(f16, 3, 8, G, H, 1, T, G != 4, 0);
        add_decode(f16, 2, 8, 4, 80, 1, 3000, 1, 0);
        add_decode(f16, 2, 8, 1, 96, 1, 2500, 0, 0);
        add_decode(f16, 2, 4, 1, 192, 1, 5000, 1, 0);
        add_decode(f16, 1, 8, 8, 128, 1, 32768, 0, 0);
        add_decode(f16, 2, 8, 4, 64, 1, 16384, 1, 0);
        add_decode(f16, 2, 8, 4, 128, 3, 777, 1, 1);
        add_decode(f16, 2, 4, 1, 128, 4, 2004, 0, 1);
        add_decode(f16, 4, 16, 8, 64, 2, 1500, 1, 1);
        add_decode(f16, 1, 64, 64, 128, 1, 3000, 0, 0); // 64 rows per KV head: eight row groups
        // The tensor-core kernel's edges: 7 and 20 rows (a part-filled 16-row group), head sizes
        // padded to 64/128/256 (40, 112, 160, 200), caches shorter than one tile, and key
        // lengths that end inside a slice.
        add_decode(f16, 2, 14, 7, 128, 1, 4100, 1, 0);
        add_decode(f16, 3, 10, 5, 64, 4, 2500, 1, 1);
        add_decode(f16, 2, 8, 8, 40, 1, 3000, 1, 0);
        add_decode(f16, 2, 8, 4, 112, 2, 1900, 0, 1);
        add_decode(f16, 2, 8, 8, 160, 1, 6000, 1, 0);
        add_decode(f16, 1, 16, 16, 200, 1, 9000, 0, 0);
        add_decode(f16, 2, 8, 8, 128, 1, 5, 1, 0);
        add_decode(f16, 2, 4, 4, 64, 3, 3, 0, 1);
        // Stream-K share-out: many units of a few rounds each, so CTAs cross from one unit (and
        // one batch's key length) into the next mid-ring; two row groups with the causal diagonal;
        // a bias at head size 256.
        add_decode(f16, 5, 12, 4, 128, 1, 3001, 1, 0);
        add_decode(f16, 3, 12, 6, 64, 3, 2222, 1, 1);
        add_decode(f16, 2, 16, 8, 256, 2, 1234, 0, 1, 1);
        add_decode(f16, 7, 6, 3, 96, 1, 777, 1, 0);
        // An additive bias (B, N, S, T) on the scores, on both kernels: one and two rows per KV
        // head (CUDA cores, padded lanes at 80), grouped and speculative rows (tensor cores),
        // with key lengths, the causal diagonal, one split and many.
        add_decode(f16, 2, 4, 1, 64, 1, 1000, 1, 0, 1);
        add_decode(f16, 2, 4, 2, 80, 1, 700, 1, 0, 1);
        add_decode(f16, 2, 8, 4, 128, 1, 3000, 1, 0, 1);
        add_decode(f16, 2, 4, 1, 128, 4, 2004, 0, 1, 1);
        add_decode(f16, 3, 8, 8, 64, 1, 4099, 0, 0, 1);
        add_decode(f16, 1, 16, 16, 256, 1, 9000, 1, 0, 1);
        add_decode(f16, 2, 8, 8, 128, 1, 5, 1, 0, 1);
        // Longer sequences: accumulation over many key blocks.
        {
            Case c;
            c.f16 = f16, c.B = 1, c.N = 2, c.H = 128, c.S = 1500, c.L = 1500;
            add2(c);
            c.causal = 1;
            add2(c);
            c.H = 64, c.S = 2048, c.L = 2048, c.causal = 0;
            add2(c);
            c.H = 32, c.scale = 0.3f;
            add2(c);
        }
    }
    return cs;
}

int main(int argc, char **argv) {
    bool quick = false;
    std::vector<const char *> filters, excludes;
    for (int i = 1; i < argc; ++i) {
        if (!strcmp(argv[i], "--quick")) quick = true;
        else if (!strcmp(argv[i], "--filter") && i + 1 < argc) filters.push_back(argv[++i]);
        else if (!strcmp(argv[i], "--exclude") && i + 1 < argc) excludes.push_back(argv[++i]);
    }
    auto picked = [&](const std::string &name) {
        for (const char *f : filters)
            if (!strstr(name.c_str(), f)) return false;
        for (const char *x : excludes)
            if (strstr(name.c_str(), x)) return false;
        return true;
    };
    kiln_cuda_provider *prov;
    if (kiln_cuda_provider_create(0, &prov) != KILN_OK) {
        fprintf(stderr, "provider: %s\n", kiln_cuda_last_error());
        return 2;
    }
    const kiln_cuda_device_info *info = kiln_cuda_info(prov);
    printf("# device %s (sm_%d%d, %d SMs)\n", info->name, info->cc_major, info->cc_minor, info->sm_count);
    std::vector<Case> cs = make_cases(quick);
    int fails = 0, ran = 0;
    for (const Case &c : cs) {
        if (!picked(c.name)) continue;
        std::string msg;
        int bad = run_case(prov, c, &msg);
        ++ran;
        fails += bad;
        printf("%s %-95s %s\n", bad ? "FAIL" : "ok  ", c.name.c_str(), msg.c_str());
        fflush(stdout);
    }
    printf("# %d cases, %d failed\n", ran, fails);
    kiln_cuda_provider_destroy(prov);
    return fails ? 1 : 0;
}
