// Hopper FP8 attention forward, wgmma, with an ST-stage K/Vᵀ ring and one barrier per key block.
//
// Same tile, operands, fragments, softmax and epilogue as flash_fp8_sm90.cuh (read that header
// first: this one reuses its helpers and changes only the load schedule). Why a second kernel:
// at FP8 the tensor cores finish a key block in half the fp16 time, so the double-buffered
// kernel's two __syncthreads per block and its one-block prefetch distance become a large share
// of the time. Here, with ST >= 3 stages:
//   * K_j and Vᵀ_{j-1} travel in one cp.async group (group j), issued ST-1 key blocks before
//     their use, instead of one;
//   * iteration i issues S_i = Q·K_iᵀ and O += P_{i-1}·Vᵀ_{i-1} first and only then the loads of
//     K_{i+ST-1} and Vᵀ_{i+ST-2}, so the ~16 cp.async per thread hide behind the tensor cores
//     instead of delaying the wgmma issue;
//   * a single __syncthreads at the top of the iteration both publishes K_i / Vᵀ_{i-1} and frees
//     the stages those loads overwrite: K_{i+ST-1} goes where K_{i-1} was (read by S_{i-1},
//     waited for in iteration i-1) and Vᵀ_{i+ST-2} where Vᵀ_{i-2} was (P_{i-2}·Vᵀ_{i-2}, waited
//     for in iteration i-1), so every thread is past those reads once it is past the barrier.
// The stage of block j is j % ST for K and Vᵀ alike. Group j (counting the prologue's: group 0
// = Q + K_0, group j < ST = K_j + Vᵀ_{j-1}, iteration i's = K_{i+ST-1} + Vᵀ_{i+ST-2}) holds K_j, so
// at the top of iteration i >= 1, ST + i - 1 groups committed, group i is complete once at most
// ST - 2 are pending.
//
// NWG may be 3 (BM = 192) where the registers allow: more query rows per K/Vᵀ tile loaded, and a
// third warpgroup to keep the tensor cores busy while the other two run their softmax.
#pragma once

#include "flash_fp8_sm90.cuh"

namespace kiln_fp8 {

template <int HD, int BN, int NWG, int ST> struct RingCfg {
    static constexpr int BM = 64 * NWG, THREADS = 128 * NWG;
    static constexpr int QCB = (HD + 127) / 128;
    static constexpr int VCB = (BN + 127) / 128;
    static constexpr int Q_BYTES = BM * 128 * QCB;
    static constexpr int K_BYTES = BN * 128 * QCB;
    static constexpr int V_BYTES = HD * 128 * VCB;
    static constexpr int OCB = HD / 64;
    static constexpr int LOAD_BYTES = Q_BYTES + ST * (K_BYTES + V_BYTES);
    static constexpr int O_BYTES = BM * 128 * OCB;
    static constexpr int SMEM = (LOAD_BYTES > O_BYTES ? LOAD_BYTES : O_BYTES) + 1024;
    static_assert(HD == 64 || HD == 128 || HD == 256, "padded head sizes");
    static_assert(BN == 64 || BN == 128, "key tiles with a Q·Kᵀ wrapper");
    static_assert(NWG >= 1 && NWG <= 3, "one to three consumer warpgroups");
    static_assert(ST >= 2 && ST <= 4, "ring depth");
    static_assert(KEY_PAD % BN == 0, "Vᵀ is padded to whole key tiles");
    static_assert(SMEM <= 227 * 1024, "the ring must fit one SM's shared memory");
};

// 2^x on the FMA pipe, for the share of the softmax exponentials that EMU moves off the MUFU
// (16 lanes per clock per SM, while the FP8 tensor cores finish a 128 × 128 × 128 block in about
// the time the MUFU needs for its 16k exponentials). Round x to n + f, |f| <= 1/2, by the 1.5·2^23
// trick, a degree-3 fit of 2^f (relative error 2.2e-4, far below the e4m3 rounding of P that
// follows), and n added to the exponent field: the low bits of the rounded float are n, and
// shifting by 23 drops the rest. x is clamped to -126 so that the result stays a normal float:
// masked keys (-inf) give 2^-126 instead of 0, which rounds to 0 in e4m3 and is nothing next to l
// (>= 1 from the row's maximum).
__device__ __forceinline__ float ex2_fma(float x) {
    x = fmaxf(x, -126.f);
    const float j = x + 12582912.f;
    const float f = x - (j - 12582912.f);
    float q = fmaf(0.05286743491888046f, f, 0.2421518862247467f);
    q = fmaf(q, f, 0.6935867667198181f);
    q = fmaf(q, f, 0.9999627470970154f);
    return __uint_as_float(__float_as_uint(q) + (__float_as_uint(j) << 23)); // unsigned: the shift wraps by design
}

// softmax_fp8 with the exponentials of n-tiles t (t % 4 < EMU) from ex2_fma. The row maximum keeps
// MUFU's exact ex2 for the correction factor.
template <int BN, int EMU>
__device__ __forceinline__ void softmax_fp8_emu(float (&s)[BN / 2], float (&m_run)[2], float (&l_run)[2],
                                                float (&corr)[2], float sl2, float p_log2, bool need_mask,
                                                const int (&lim)[2], int col_lane) {
    constexpr int NT = BN / 8;
    if (need_mask) {
#pragma unroll
        for (int h = 0; h < 2; ++h)
#pragma unroll
            for (int t = 0; t < NT; ++t)
#pragma unroll
                for (int e = 0; e < 2; ++e)
                    if (t * 8 + col_lane + e >= lim[h]) s[4 * t + 2 * h + e] = -INFINITY;
    }
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float mx = -INFINITY;
#pragma unroll
        for (int t = 0; t < NT; ++t) mx = fmaxf(mx, fmaxf(s[4 * t + 2 * h], s[4 * t + 2 * h + 1]));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
        mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
        const float m_new = fmaxf(m_run[h], mx * sl2);
        const float m_use = m_new == -INFINITY ? 0.f : m_new;
        corr[h] = ex2(m_run[h] - m_use);
        m_run[h] = m_new;
        const float bias = p_log2 - m_use;
        float sum = 0.f;
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float x = fmaf(s[4 * t + 2 * h + e], sl2, bias);
                const float pv = (t & 3) < EMU ? ex2_fma(x) : ex2(x);
                s[4 * t + 2 * h + e] = pv;
                sum += pv;
            }
        l_run[h] = l_run[h] * corr[h] + sum;
    }
}

template <typename O, int HD, int BN, int NWG, int ST, int EMU>
__device__ __forceinline__ void flash_fp8_ring_body(const Params &p) {
    using C = RingCfg<HD, BN, NWG, ST>;
    constexpr int BM = C::BM, THREADS = C::THREADS, OCB = C::OCB;
    using kiln_flash::cp_async_wait;
    using kiln_sm90::fence_proxy_async;
    using kiln_sm90::load_sw;
    using kiln_sm90::make_desc;
    using kiln_sm90::wg_commit;
    using kiln_sm90::wg_fence;
    using kiln_sm90::wg_wait;
    extern __shared__ __align__(1024) unsigned char smem_fp8r[];
    const uint32_t raw = smem_u32(smem_fp8r);
    const uint32_t base = (raw + 1023u) & ~1023u;
    unsigned char *smem = smem_fp8r + (base - raw);
    const uint32_t sQ = base, sK = base + C::Q_BYTES, sV = sK + ST * C::K_BYTES;

    const int tid = threadIdx.x, wg = tid >> 7, wwarp = (tid >> 5) & 3, lane = tid & 31;
    const int m_block = gridDim.x - 1 - blockIdx.x;
    const int n = blockIdx.y, b = blockIdx.z;
    const int nk = n / p.kv_group;
    const int seqlen_q = p.S, seqlen_k = p.T;
    if (m_block * BM >= seqlen_q) return;
    const int causal_off = seqlen_k - seqlen_q;
    int n_blocks = (seqlen_k + BN - 1) / BN;
    if (p.causal) {
        const int last_key = (m_block + 1) * BM - 1 + causal_off;
        n_blocks = min(n_blocks, last_key < 0 ? 0 : last_key / BN + 1);
    }

    typedef uint16_t W;
    const W *qg = reinterpret_cast<const W *>(p.q + (int64_t)b * p.q_sb + n * p.q_sn + (int64_t)m_block * BM * p.q_ss);
    const W *kg = reinterpret_cast<const W *>(p.k + (int64_t)b * p.k_sb + nk * p.k_sn);
    const W *vg = reinterpret_cast<const W *>(p.vt + (int64_t)b * p.vt_sb + nk * p.vt_sn);
    const W *qfb = reinterpret_cast<const W *>(p.q), *kfb = reinterpret_cast<const W *>(p.k),
            *vfb = reinterpret_cast<const W *>(p.vt);
    const int64_t q_ss = p.q_ss / 2, k_ss = p.k_ss / 2, v_ss = p.tp / 2;
    const int hch = p.H / 16;
    auto blk = [&](int i) { return n_blocks - 1 - i; };
    // Out-of-range blocks are skipped here so that callers can keep one commit per iteration
    // (empty groups keep the wait counts of the header comment exact).
    auto load_k = [&](int i) {
        if (i >= n_blocks) return;
        const int kb = blk(i);
        load_sw<BN, HD / 2, THREADS>(sK + (i % ST) * C::K_BYTES, kg + (int64_t)kb * BN * k_ss, k_ss,
                                     seqlen_k - kb * BN, hch, kfb, tid);
    };
    auto load_v = [&](int i) {
        if (i >= n_blocks) return;
        const int kb = blk(i);
        load_sw<HD, BN / 2, THREADS>(sV + (i % ST) * C::V_BYTES, vg + (int64_t)kb * (BN / 2), v_ss, HD, BN / 16, vfb,
                                     tid);
    };

    load_sw<BM, HD / 2, THREADS>(sQ, qg, q_ss, seqlen_q - m_block * BM, hch, qfb, tid);
    load_k(0);
    cp_async_commit();
#pragma unroll
    for (int j = 1; j < ST; ++j) {
        load_k(j);
        load_v(j - 1);
        cp_async_commit();
    }

    float o[OCB][32];
#pragma unroll
    for (int c = 0; c < OCB; ++c)
#pragma unroll
        for (int i = 0; i < 32; ++i) o[c][i] = 0.f;
    float(&o_flat)[HD / 2] = *reinterpret_cast<float(*)[HD / 2]>(&o[0][0]);
    float s[BN / 2];
    uint32_t pf[BN / 32][4];
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
    const float sl2 = p.scale * __ldg(p.q_scale) * __ldg(p.k_scale) * 1.4426950408889634f;
    const float p_log2 = p.p_log2_scale;
    const int row0 = m_block * BM + wg * 64 + wwarp * 16 + (lane >> 2);
    const int col_lane = 2 * (lane & 3);

    auto issue_qk = [&](int st) {
#pragma unroll
        for (int ks = 0; ks < HD / 32; ++ks) {
            const uint64_t da = make_desc(sQ + (ks >> 2) * (BM * 128) + wg * (64 * 128) + (ks & 3) * 32, 16, 1024);
            const uint64_t db = make_desc(sK + st * C::K_BYTES + (ks >> 2) * (BN * 128) + (ks & 3) * 32, 16, 1024);
            mma_qk<BN>(s, da, db, ks > 0 ? 1 : 0);
        }
    };
    auto issue_pv = [&](int st) {
#pragma unroll
        for (int kk = 0; kk < BN / 32; ++kk) {
            const uint64_t db = make_desc(sV + st * C::V_BYTES + (kk >> 2) * (HD * 128) + (kk & 3) * 32, 16, 1024);
            mma_pv<HD>(o_flat, pf[kk], db);
        }
    };
    auto pin_s = [&] { kiln_sm90::pin_all(s); };
    auto pin_o = [&] { kiln_sm90::pin_acc<HD>(o); };
    auto softmax = [&](int i, float (&corr)[2]) {
        const int kb = blk(i);
        const bool need_mask =
            (kb + 1) * BN > seqlen_k || (p.causal && (kb + 1) * BN - 1 > m_block * BM + causal_off);
        int lim[2];
#pragma unroll
        for (int h = 0; h < 2; ++h)
            lim[h] = (p.causal ? min(seqlen_k, row0 + 8 * h + causal_off + 1) : seqlen_k) - kb * BN;
        if constexpr (EMU == 0) softmax_fp8<BN>(s, m_run, l_run, corr, sl2, p_log2, need_mask, lim, col_lane);
        else softmax_fp8_emu<BN, EMU>(s, m_run, l_run, corr, sl2, p_log2, need_mask, lim, col_lane);
    };
    auto pack_p = [&] { pack_p_e4m3<BN>(pf, s); };

    if (n_blocks > 0) {
        float corr[2];
        cp_async_wait<ST - 1>(); // group 0: Q and K_0
        fence_proxy_async();
        __syncthreads();
        wg_fence();
        issue_qk(0);
        wg_commit();
        wg_wait<0>();
        pin_s();
        softmax(0, corr);
        pack_p();
        for (int i = 1; i < n_blocks; ++i) {
            cp_async_wait<ST - 2>(); // group i: K_i and Vᵀ_{i-1}
            fence_proxy_async();
            __syncthreads(); // K_i, Vᵀ_{i-1} in for all; all past S_{i-1} and P_{i-2}·Vᵀ_{i-2}
            wg_fence();
            issue_qk(i % ST);
            wg_commit();
            issue_pv((i - 1) % ST);
            wg_commit();
            load_k(i + ST - 1);
            load_v(i + ST - 2);
            cp_async_commit();
            wg_wait<1>();
            pin_s();
            softmax(i, corr);
            kiln_sm90::wg_wait0_after<(HD >= 128)>(l_run[0] + l_run[1]);
            pin_o();
            kiln_sm90::rescale_o<HD>(o, corr);
            pack_p();
        }
        cp_async_wait<0>();
        fence_proxy_async();
        __syncthreads();
        wg_fence();
        issue_pv((n_blocks - 1) % ST);
        wg_commit();
        wg_wait<0>();
        pin_o();
    }

    // Epilogue as flash_fp8_sm90.cuh's: the O tile goes over the idle ring.
    cp_async_wait<0>();
    __syncthreads();
    fence_proxy_async();
    const int r0 = wg * 64 + wwarp * 16 + (lane >> 2);
    stage_o_fp8<O, OCB, BM>(smem, o, l_run, __ldg(p.v_scale), r0, col_lane);
    __syncthreads();
    store_o_fp8<O, HD, BM>(p, b, n, m_block, smem, 0, BM, tid, THREADS);
}

template <typename O, int HD, int BN, int NWG, int ST, int EMU, int MINB>
__global__ void __launch_bounds__(128 * NWG, MINB) flash_fp8_ring_kernel(const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    flash_fp8_ring_body<O, HD, BN, NWG, ST, EMU>(p);
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}

template <typename O, int HD, int BN, int NWG, int ST, int EMU, int MINB>
cudaError_t launch_fp8_ring(const Params &p, cudaStream_t stream) {
    using C = RingCfg<HD, BN, NWG, ST>;
    auto kern = flash_fp8_ring_kernel<O, HD, BN, NWG, ST, EMU, MINB>;
    static int state = 0;
    const cudaError_t ready = sm90_ready(kern, C::SMEM, state);
    if (ready != cudaSuccess) return ready;
    dim3 grid((p.S + C::BM - 1) / C::BM, p.N, p.B);
    kern<<<grid, C::THREADS, C::SMEM, stream>>>(p);
    return cudaGetLastError();
}

// Name: as KILN_FP8_VARIANT_WGMMA's plus "_st" and the ring depth; "_emu" and the n-tiles of
// every 4 whose exponentials run on the FMA pipe.
#define KILN_FP8_VARIANT_WGMMA_RING(HD, BN, NWG, ST, MINB)                                          \
    {"wgmma_wg" #NWG "_bn" #BN "_st" #ST "_occ" #MINB, HD, 64 * NWG, BN, 4 * NWG,                   \
     &launch_fp8_ring<__half, HD, BN, NWG, ST, 0, MINB>, &launch_fp8_ring<__nv_bfloat16, HD, BN, NWG, ST, 0, MINB>}
#define KILN_FP8_VARIANT_WGMMA_RING_EMU(HD, BN, NWG, ST, EMU, MINB)                                 \
    {"wgmma_wg" #NWG "_bn" #BN "_st" #ST "_emu" #EMU "_occ" #MINB, HD, 64 * NWG, BN, 4 * NWG,       \
     &launch_fp8_ring<__half, HD, BN, NWG, ST, EMU, MINB>,                                           \
     &launch_fp8_ring<__nv_bfloat16, HD, BN, NWG, ST, EMU, MINB>}

} // namespace kiln_fp8
