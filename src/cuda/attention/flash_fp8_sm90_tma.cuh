// Hopper FP8 attention forward, warp-specialised and TMA-fed (variants "wgmma_tma_*").
//
// Same tile, operands, fragments, softmax and epilogue as flash_fp8_sm90.cuh (read that header
// first); the load and synchronisation scheme is that of the fp16 TMA kernel
// (flash_fwd_sm90_tma.cuh): one producer warpgroup issues cp.async.bulk.tensor loads of Q, K and
// Vᵀ that complete on mbarriers, the consumers hand stages back with one arrive per warp, the
// producer gives its registers to the consumers, and the two consumer warpgroups take turns
// issuing their wgmmas (ping-pong) so one's softmax runs under the other's tensor-core work.
// Why: at FP8 a key block's multiply-adds take half the fp16 time, and the cp.async kernels spend
// a growing share of each block on their own loads and on two (ring: one) CTA-wide barriers,
// which also keep both warpgroups' softmaxes in step, leaving the tensor cores idle meanwhile.
//
// TMA boxes are 128 bytes (the swizzle span) by rows: Q and K rows are head bytes (a second box
// for head bytes 128..255), Vᵀ rows are the BN = 128 keys of one head dimension. Rows past S or T
// and head bytes past H are zero-filled by TMA, as load_sw zero-fills them; Vᵀ's keys past T are
// zeros the prologue wrote. The normalised O is staged in its own buffer (each warpgroup its 64
// rows), so neither warpgroup's epilogue waits for the other's last wgmmas.
#pragma once

#include "flash_fp8_sm90.cuh"
#include "flash_fp8_sm90_ring.cuh"
#include "flash_fwd_sm90_tma.cuh"

namespace kiln_fp8 {

struct TmaParams8 {
    Params p;
    CUtensorMap tq, tk, tv;
};

// Host (gpu/flash_fp8.cu): a 4-D map over bytes {d0, rows, heads, batches} with byte strides for
// dims 1..3 and a box of 128 bytes by box_rows, 128-byte swizzle; false if the driver refuses it.
bool tma_map_u8(CUtensorMap *m, const void *ptr, int64_t d0, int64_t rows, int64_t heads, int64_t batches,
                int64_t s1, int64_t s2, int64_t s3, int box_rows);

template <int HD, int BN, int ST> struct TmaCfg8 {
    static constexpr int NWG = 2, BM = 128, THREADS = 128 * (NWG + 1);
    static constexpr int QCB = (HD + 127) / 128; // 128-byte column blocks of Q and K rows
    static constexpr int Q_BYTES = BM * 128 * QCB;
    static constexpr int K_BYTES = BN * 128 * QCB; // one stage
    static constexpr int V_BYTES = HD * 128;       // one stage: HD rows of BN = 128 key bytes
    static constexpr int OCB = HD / 64;            // 64-column chunks of the 16-bit O tile
    static constexpr int O_BYTES = BM * 128 * OCB;
    static constexpr int BAR_BYTES = 8 * (1 + 4 * ST);
    static constexpr int SMEM = Q_BYTES + ST * (K_BYTES + V_BYTES) + O_BYTES + BAR_BYTES + 1024;
    // Registers as in TCfg (MINB 1): the producer keeps 24, the consumers take 240.
    static constexpr int CAP = (65536 / THREADS) & ~7;
    static constexpr int PROD_REGS = 24;
    static constexpr int CONS_REGS_RAW = ((CAP * THREADS - 128 * PROD_REGS) / (128 * NWG)) & ~7;
    static constexpr int CONS_REGS = CONS_REGS_RAW > 240 ? 240 : CONS_REGS_RAW;
    static_assert(BN == 128, "a Vᵀ box row is one 128-byte swizzle span of keys");
    static_assert(HD == 64 || HD == 128 || HD == 256, "padded head sizes");
    static_assert(SMEM <= 227 * 1024, "fits in shared memory");
};

// Named barriers: 0 is __syncthreads, 2 + w the ping-pong turn of consumer warpgroup w, 5 + w
// warpgroup w's epilogue.
template <typename O, int HD, int BN, int ST, bool PP, int EMU>
__device__ __forceinline__ void flash_fp8_tma_body(const TmaParams8 &tp) {
    using namespace kiln_sm90;
    using C = TmaCfg8<HD, BN, ST>;
    constexpr int BM = C::BM, NWG = C::NWG, QCB = C::QCB, OCB = C::OCB;
    const Params &p = tp.p;
    extern __shared__ __align__(1024) unsigned char smem_fp8t[];
    const uint32_t raw = smem_u32(smem_fp8t);
    const uint32_t base = (raw + 1023u) & ~1023u; // the 128-byte swizzle repeats every 1024 bytes
    unsigned char *smem = smem_fp8t + (base - raw);
    const uint32_t sQ = base, sK = sQ + C::Q_BYTES, sV = sK + ST * C::K_BYTES, sO = sV + ST * C::V_BYTES;
    const uint32_t bars = sO + C::O_BYTES;
    const uint32_t q_full = bars;
    auto k_full = [&](int s) { return bars + 8 * (1 + s); };
    auto v_full = [&](int s) { return bars + 8 * (1 + ST + s); };
    auto k_empty = [&](int s) { return bars + 8 * (1 + 2 * ST + s); };
    auto v_empty = [&](int s) { return bars + 8 * (1 + 3 * ST + s); };

    const int tid = threadIdx.x, wg = tid >> 7, wwarp = (tid >> 5) & 3, lane = tid & 31;
    const int m_block = gridDim.x - 1 - blockIdx.x; // longest causal rows first
    const int n = blockIdx.y, b = blockIdx.z, nk = n / p.kv_group;
    const int seqlen_q = p.S, seqlen_k = p.T, causal_off = seqlen_k - seqlen_q;
    int n_blocks = (seqlen_k + BN - 1) / BN;
    if (p.causal) {
        const int last_key = (m_block + 1) * BM - 1 + causal_off;
        n_blocks = min(n_blocks, last_key < 0 ? 0 : last_key / BN + 1);
    }
    auto blk = [&](int i) { return n_blocks - 1 - i; }; // last key block first

    if (tid == 0) {
        mbar_init(q_full, 1);
        for (int s = 0; s < ST; ++s) {
            mbar_init(k_full(s), 1); // the producer's arrive.expect_tx; the bytes complete it
            mbar_init(v_full(s), 1);
            mbar_init(k_empty(s), 4 * NWG); // one arrive per consumer warp
            mbar_init(v_empty(s), 4 * NWG);
        }
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        fence_proxy_async();
    }
    __syncthreads(); // the only CTA-wide barrier

    if (wg == NWG) {
        // ---- producer warpgroup ----
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(C::PROD_REGS));
        if (wwarp == 0 && lane == 0) {
            mbar_expect_tx(q_full, C::Q_BYTES); // a box counts its full size, zero-filled parts included
#pragma unroll
            for (int c = 0; c < QCB; ++c) tma_load_4d(sQ + c * (BM * 128), &tp.tq, c * 128, m_block * BM, n, b, q_full);
            for (int i = 0; i < n_blocks; ++i) {
                const int s = i % ST, use = i / ST, kb = blk(i);
                if (use > 0) mbar_wait(k_empty(s), (use - 1) & 1);
                mbar_expect_tx(k_full(s), C::K_BYTES);
#pragma unroll
                for (int c = 0; c < QCB; ++c)
                    tma_load_4d(sK + s * C::K_BYTES + c * (BN * 128), &tp.tk, c * 128, kb * BN, nk, b, k_full(s));
                if (use > 0) mbar_wait(v_empty(s), (use - 1) & 1);
                mbar_expect_tx(v_full(s), C::V_BYTES);
                tma_load_4d(sV + s * C::V_BYTES, &tp.tv, kb * BN, 0, nk, b, v_full(s));
            }
        }
        return; // the loads in flight complete on barriers the consumers wait on
    }

    // ---- consumer warpgroups ----
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(C::CONS_REGS));

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
    const int row0 = m_block * BM + wg * 64 + wwarp * 16 + (lane >> 2); // + 8h
    const int col_lane = 2 * (lane & 3);

    auto turn_begin = [&] {
        if constexpr (PP) named_sync(2 + wg, 256);
    };
    auto turn_end = [&] {
        if constexpr (PP) named_arrive(2 + (wg + 1) % NWG, 256);
    };
    auto release = [&](uint32_t bar) {
        __syncwarp();
        if (lane == 0) mbar_arrive(bar);
    };
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
            const uint64_t db = make_desc(sV + st * C::V_BYTES + kk * 32, 16, 1024);
            mma_pv<HD>(o_flat, pf[kk], db);
        }
    };
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

    mbar_wait(q_full, 0);
    if (n_blocks > 0) {
        if constexpr (PP)
            if (wg == NWG - 1) named_arrive(2, 256); // opens the turns: warpgroup 0 goes first
        float corr[2];
        mbar_wait(k_full(0), 0);
        turn_begin();
        wg_fence();
        issue_qk(0);
        wg_commit();
        turn_end();
        wg_wait<0>();
        pin_all(s);
        release(k_empty(0));
        softmax(0, corr);
        pack_p_e4m3<BN>(pf, s);
        for (int i = 1; i < n_blocks; ++i) {
            const int sk = i % ST, sv = (i - 1) % ST;
            mbar_wait(k_full(sk), (i / ST) & 1);
            mbar_wait(v_full(sv), ((i - 1) / ST) & 1);
            turn_begin();
            wg_fence();
            issue_qk(sk);
            wg_commit();
            issue_pv(sv);
            wg_commit();
            turn_end();
            wg_wait<1>();
            pin_all(s);
            release(k_empty(sk));
            softmax(i, corr);
            wg_wait0_after<(HD >= 128)>(l_run[0] + l_run[1]);
            pin_acc<HD>(o);
            release(v_empty(sv));
            rescale_o<HD>(o, corr);
            pack_p_e4m3<BN>(pf, s);
        }
        const int sv = (n_blocks - 1) % ST;
        mbar_wait(v_full(sv), ((n_blocks - 1) / ST) & 1);
        turn_begin();
        wg_fence();
        issue_pv(sv);
        wg_commit();
        turn_end();
        wg_wait<0>();
        pin_acc<HD>(o);
        release(v_empty(sv));
        if constexpr (PP)
            if (wg == 0) named_sync(2, 256); // the last warpgroup's final arrive
    }

    // Epilogue, per warpgroup: O · v_scale / l into its 64 rows of the swizzled O buffer, then
    // 16-byte coalesced stores of those rows.
    unsigned char *so = smem + (sO - base);
    stage_o_fp8<O, OCB, BM>(so, o, l_run, __ldg(p.v_scale), wg * 64 + wwarp * 16 + (lane >> 2), col_lane);
    named_sync(5 + wg, 128);
    store_o_fp8<O, HD, BM>(p, b, n, m_block, so, wg * 64, 64, tid & 127, 128);
}

template <typename O, int HD, int BN, int ST, bool PP, int EMU>
__global__ void __launch_bounds__(128 * 3, 1) flash_fp8_tma_kernel(const __grid_constant__ TmaParams8 tp) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    flash_fp8_tma_body<O, HD, BN, ST, PP, EMU>(tp);
#elif defined(__CUDA_ARCH__)
    __trap(); // sm_90a code only; the launch refuses other devices
#endif
}

template <typename O, int HD, int BN, int ST, bool PP, int EMU>
cudaError_t launch_fp8_tma(const Params &p, cudaStream_t stream) {
    using C = TmaCfg8<HD, BN, ST>;
    auto kern = flash_fp8_tma_kernel<O, HD, BN, ST, PP, EMU>;
    static int state = 0;
    const cudaError_t ready = sm90_ready(kern, C::SMEM, state);
    if (ready != cudaSuccess) return ready;
    TmaParams8 tp;
    tp.p = p;
    const int nkv = p.N / p.kv_group;
    const int64_t vt_row = p.tp;
    // A map the driver refuses runs the double-buffered cp.async tile of the same shape.
    if (!tma_map_u8(&tp.tq, p.q, p.H, p.S, p.N, p.B, p.q_ss, p.q_sn, p.q_sb, C::BM) ||
        !tma_map_u8(&tp.tk, p.k, p.H, p.T, nkv, p.B, p.k_ss, p.k_sn, p.k_sb, BN) ||
        !tma_map_u8(&tp.tv, p.vt, p.tp, HD, nkv, p.B, vt_row, p.vt_sn, p.vt_sb, HD))
        return launch_fp8_sm90<O, HD, BN, 2, 1>(p, stream);
    dim3 grid((p.S + C::BM - 1) / C::BM, p.N, p.B);
    kern<<<grid, C::THREADS, C::SMEM, stream>>>(tp);
    return cudaGetLastError();
}

// Name: "wgmma_tma_", key tile, K/Vᵀ stages, ping-pong, and (_emu<E>) the ring kernel's share of
// exponentials on the FMA pipe (softmax_fp8_emu).
#define KILN_FP8_VARIANT_TMA(HD, BN, ST, PP)                                                        \
    {"wgmma_tma_bn" #BN "_st" #ST "_pp" #PP, HD, 128, BN, 12,                                       \
     &launch_fp8_tma<__half, HD, BN, ST, PP, 0>, &launch_fp8_tma<__nv_bfloat16, HD, BN, ST, PP, 0>}
#define KILN_FP8_VARIANT_TMA_EMU(HD, BN, ST, PP, EMU)                                               \
    {"wgmma_tma_bn" #BN "_st" #ST "_pp" #PP "_emu" #EMU, HD, 128, BN, 12,                           \
     &launch_fp8_tma<__half, HD, BN, ST, PP, EMU>, &launch_fp8_tma<__nv_bfloat16, HD, BN, ST, PP, EMU>}

} // namespace kiln_fp8
