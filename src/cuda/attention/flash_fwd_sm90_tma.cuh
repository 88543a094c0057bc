// Hopper (sm_90a) flash attention forward, warp-specialised and TMA-fed (tile variants named
// "tma_*"; its persistent tiles, "_persist", are the default at head sizes 32 to 160, from the
// measured sweeps in bench/attention/RESULTS.md). NWG = 2 or 3 consumer warpgroups (BM 128 / 192).
// PERSIST: one CTA per SM walks the tiles (first_tile), the producer running ahead into the next
// tile; otherwise one CTA per tile.
//
// Why: the cp.async kernel spends every consumer thread's issue slots on address arithmetic and
// cp.async, and synchronises the whole CTA twice per key block. Here one producer warpgroup (one
// elected thread) issues cp.async.bulk.tensor loads that complete on mbarriers, so:
//   * loads need no consumer instructions and no __syncthreads: consumers wait on "full"
//     mbarriers and hand buffers back by arriving on "empty" ones (one arrive per consumer warp);
//   * the producer gives its registers away (setmaxnreg.dec) and the consumers take them
//     (setmaxnreg.inc), so the S/O accumulators of large key tiles fit without spills;
//   * ping-pong (PP): the two consumer warpgroups take turns issuing their GEMMs through named
//     barriers, so one warpgroup's softmax runs while the other's wgmmas own the tensor cores.
// The SMEM tile layout is exactly that of flash_fwd_sm90.cuh (128-byte rows, 16-byte chunk j of
// row r at j ^ (r & 7), 64-column blocks): a TMA box of {64 elements, rows} with
// CU_TENSOR_MAP_SWIZZLE_128B writes that layout, so the wgmma descriptors and the softmax are
// the same. Out-of-range rows (past S or T) and columns (past the true head size) are zero-filled
// by TMA, which is what load_sw did by hand. Key-length and causal masking are unchanged.
//
// Tensor maps (built on the host per call, passed in the __grid_constant__ parameter block) are
// 4-D: {head dim, sequence, heads, batch} with the view's strides, so every strided format
// (Q,K,V / Q+KV / QKV / BNSH) maps without copies. Packed batches (cu_seqlens) cannot be
// expressed as a box-aligned 4-D map; those calls, and any map the driver refuses, run the
// first cp.async variant of the same head size instead.
#pragma once

#include "flash_fwd_sm90.cuh"

#include <cuda.h>
#include <cudaTypedefs.h>
#include <stdint.h>

namespace kiln_sm90 {

struct TmaParams {
    Params p;
    CUtensorMap tq, tk, tv; // 64-byte aligned by type
    int n_m, n_tiles;       // query blocks per head, tiles (read by TCfg::COUNTS_IN_PARAMS tiles)
};

__device__ __forceinline__ void mbar_init(uint32_t bar, uint32_t count) {
    asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;\n" ::"r"(bar), "r"(count) : "memory");
}
__device__ __forceinline__ void mbar_expect_tx(uint32_t bar, uint32_t bytes) {
    asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;\n" ::"r"(bar), "r"(bytes) : "memory");
}
__device__ __forceinline__ void mbar_arrive(uint32_t bar) {
    asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];\n" ::"r"(bar) : "memory");
}
// Spins until the barrier's phase with the given parity has completed.
__device__ __forceinline__ void mbar_wait(uint32_t bar, uint32_t parity) {
    asm volatile("{\n.reg .pred P1;\nKILN_MBAR_WAIT:\n"
                 "mbarrier.try_wait.parity.shared::cta.b64 P1, [%0], %1;\n"
                 "@!P1 bra KILN_MBAR_WAIT;\n}\n" ::"r"(bar),
                 "r"(parity)
                 : "memory");
}
__device__ __forceinline__ void tma_load_4d(uint32_t dst, const CUtensorMap *map, int c0, int c1, int c2, int c3,
                                            uint32_t bar) {
    asm volatile("cp.async.bulk.tensor.4d.shared::cluster.global.mbarrier::complete_tx::bytes [%0], [%1, {%2, %3, "
                 "%4, %5}], [%6];\n" ::"r"(dst),
                 "l"(reinterpret_cast<uint64_t>(map)), "r"(c0), "r"(c1), "r"(c2), "r"(c3), "r"(bar)
                 : "memory");
}
__device__ __forceinline__ void named_sync(int id, int n) { asm volatile("bar.sync %0, %1;\n" ::"r"(id), "r"(n) : "memory"); }
__device__ __forceinline__ void named_arrive(int id, int n) {
    asm volatile("bar.arrive %0, %1;\n" ::"r"(id), "r"(n) : "memory");
}

template <int HD, int BN, int MINB, int NWG, bool PERSIST> struct TCfg {
    static constexpr int BM = 64 * NWG, THREADS = 128 * (NWG + 1); // + the producer warpgroup
    static constexpr int CB = (HD + 63) / 64;
    static constexpr int STAGES = 2;
    static constexpr int Q_BYTES = BM * 128 * CB;
    static constexpr int KV_BYTES = BN * 128 * CB;
    // Persistent CTAs stage O in their own buffer (the next tile's Q is already loading into the
    // Q buffer) and double-buffer Q where shared memory allows, so the next tile's Q lands while
    // this tile's last P·V and epilogue run.
    // Where even one Q buffer and an O buffer do not fit beside the K/V stages (head size 256),
    // a persistent CTA stages O in the Q buffer instead (O_IN_Q): the next tile's Q then loads
    // only after this tile's stores have read it, its first K/V blocks before that.
    static constexpr int LIMIT = 227 * 1024;
    static constexpr bool O_IN_Q =
        PERSIST && 2 * STAGES * KV_BYTES + 2 * Q_BYTES + 1024 + 8 * (2 + 4 * STAGES) > LIMIT;
    static constexpr int O_BYTES = PERSIST && !O_IN_Q ? Q_BYTES : 0;
    static constexpr int FIXED = 2 * STAGES * KV_BYTES + O_BYTES + 1024;
    static constexpr int QST = PERSIST && FIXED + 2 * Q_BYTES + 8 * (4 + 4 * STAGES) <= LIMIT ? 2 : 1;
    static constexpr int BAR_BYTES = 8 * (2 * QST + 4 * STAGES);
    static constexpr int SMEM = QST * Q_BYTES + FIXED + BAR_BYTES;
    // Register split. A CTA is granted THREADS x (the count ptxas compiles for, which with
    // setmaxnreg in the kernel is the __launch_bounds__ cap: 65536 / (THREADS * MINB), rounded
    // down to 8) at launch; setmaxnreg only moves registers inside that pool, so an .inc beyond
    // what the producer's .dec freed would wait forever. Producer keeps 24, consumers get the rest
    // (MINB 1: 168 -> 24 / 240; MINB 2: 80 -> 24 / 104).
    static constexpr int CAP = (65536 / (THREADS * MINB)) & ~7;
    static constexpr int PROD_REGS = 24;
    static constexpr int CONS_REGS_RAW = ((CAP * THREADS - 128 * PROD_REGS) / (128 * NWG)) & ~7;
    static constexpr int CONS_REGS = CONS_REGS_RAW > 240 ? 240 : CONS_REGS_RAW;
    static_assert(128 * PROD_REGS + 128 * NWG * CONS_REGS <= CAP * THREADS, "register split fits the launch pool");
    // Registers a consumer thread's O and S accumulators and P fragments hold through the key
    // loop. Past 176 (head size 192 with BN 112, 256 with BN 80) the tile loop's two counts no
    // longer fit beside them in 240 and ptxas spills them; such tiles read them from the parameter
    // block (a constant-bank operand, no register). The tiles at or below it compute them, as
    // they did when measured.
    static constexpr int ACC_REGS = CB * 32 + BN / 2 + BN / 4;
    static constexpr bool COUNTS_IN_PARAMS = ACC_REGS > 176;
    // 2 consumer warpgroups (BM 128) or 3 (BM 192; ping-pong then takes turns round-robin).
    static_assert(NWG == 2 || NWG == 3, "two or three consumer warpgroups");
    static_assert(SMEM <= LIMIT, "fits in shared memory");
};

// Tiles are numbered with the query block fastest (a head's query blocks run side by side and
// share its K/V in L2), last query block first (under a causal mask the longest go first).
struct TileOf {
    int m_block, n, b;
    __device__ __forceinline__ TileOf(int t, int n_m, int heads) {
        const int mi = t % n_m, nb = t / n_m;
        m_block = n_m - 1 - mi;
        n = nb % heads;
        b = nb / heads;
    }
};

template <int BM, int BN> __device__ __forceinline__ int key_blocks(const Params &p, int m_block, int b, int &kv_limit) {
    // The launcher never sends packed batches here, so lengths are the plain S and T.
    kv_limit = kiln_flash::key_limit(p, b, p.T);
    int n_blocks = (kv_limit + BN - 1) / BN;
    if (p.causal) {
        const int last_key = (m_block + 1) * BM - 1 + (p.T - p.S);
        n_blocks = min(n_blocks, last_key < 0 ? 0 : last_key / BN + 1);
    }
    return n_blocks;
}

// Named barriers: 0 is __syncthreads, 2 + w the ping-pong turn of consumer warpgroup w (2..4),
// 5 + w warpgroup w's epilogue (5..7).
template <typename E, int HD, int BN, int MINB, int NWG, bool PP, bool PERSIST, bool BIAS>
__device__ __forceinline__ void flash_sm90_tma_body(const TmaParams &tp) {
    const Params &p = tp.p;
    using C = TCfg<HD, BN, MINB, NWG, PERSIST>;
    constexpr int BM = C::BM, CB = C::CB, ST = C::STAGES, QST = C::QST;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    const uint32_t raw = smem_u32(smem_raw);
    const uint32_t base = (raw + 1023u) & ~1023u; // the 128B swizzle repeats every 1024 bytes
    unsigned char *smem = smem_raw + (base - raw);
    const uint32_t sQ = base, sK = base + QST * C::Q_BYTES, sV = sK + ST * C::KV_BYTES;
    const uint32_t sO = sV + ST * C::KV_BYTES; // persistent only (O_BYTES is 0 otherwise, or O_IN_Q)
    const uint32_t bars = sO + C::O_BYTES;
    auto q_full = [&](int s) { return bars + 8 * s; };
    auto q_empty = [&](int s) { return bars + 8 * (QST + s); };
    auto k_full = [&](int s) { return bars + 8 * (2 * QST + s); };
    auto v_full = [&](int s) { return bars + 8 * (2 * QST + ST + s); };
    auto k_empty = [&](int s) { return bars + 8 * (2 * QST + 2 * ST + s); };
    auto v_empty = [&](int s) { return bars + 8 * (2 * QST + 3 * ST + s); };

    const int tid = threadIdx.x, wg = tid >> 7, wwarp = (tid >> 5) & 3, lane = tid & 31;
    const int n_m = C::COUNTS_IN_PARAMS ? tp.n_m : (p.S + BM - 1) / BM;
    const int n_tiles = C::COUNTS_IN_PARAMS ? tp.n_tiles : n_m * p.N * p.B; // the launcher checked it fits an int
    // Round k of a persistent CTA takes tile k·G + c (k even) or k·G + G-1-c (k odd), G the grid,
    // c the CTA: a round's tiles are neighbours (same heads, K/V shared in L2), and under a causal
    // mask, where query block j costs j+1 key blocks, the snake pairs a long tile with a short
    // one, so the CTAs' totals even out. Increasing in k, so the first one past the end ends the
    // loop. Without PERSIST the grid has one CTA per tile and the loops run once.
    auto first_tile = [&](int k) -> int {
        const int64_t t = (int64_t)k * gridDim.x + ((k & 1) ? gridDim.x - 1 - blockIdx.x : blockIdx.x);
        return t < n_tiles ? (int)t : n_tiles;
    };

    if (tid == 0) {
        for (int s = 0; s < QST; ++s) {
            mbar_init(q_full(s), 1);
            mbar_init(q_empty(s), 4 * NWG);
        }
        for (int s = 0; s < ST; ++s) {
            mbar_init(k_full(s), 1); // the producer's arrive.expect_tx; the bytes complete it
            mbar_init(v_full(s), 1);
            mbar_init(k_empty(s), 4 * NWG); // one arrive per consumer warp
            mbar_init(v_empty(s), 4 * NWG);
        }
        // Make the initialised barriers visible to the async proxy (TMA) before first use.
        asm volatile("fence.mbarrier_init.release.cluster;\n" ::: "memory");
        fence_proxy_async();
    }
    __syncthreads(); // the only CTA-wide barrier: producer and consumers split after it

    if (wg == NWG) {
        // ---- producer warpgroup ----
        asm volatile("setmaxnreg.dec.sync.aligned.u32 %0;\n" ::"n"(C::PROD_REGS));
        if (wwarp == 0 && lane == 0) {
            int ring = 0; // K/V ring position, running across this CTA's tiles
            int it = 0;
            for (int t = first_tile(0); t < n_tiles; t = first_tile(++it)) {
                const TileOf tl(t, n_m, p.N);
                const int nk = tl.n / p.kv_group;
                int kv_limit;
                const int n_blocks = key_blocks<BM, BN>(p, tl.m_block, tl.b, kv_limit);
                const int qs = it % QST, quse = it / QST;
                auto load_q = [&] {
                    if (quse > 0) mbar_wait(q_empty(qs), (quse - 1) & 1);
                    mbar_expect_tx(q_full(qs), C::Q_BYTES); // a box counts its full size, zero-filled parts included
#pragma unroll
                    for (int c = 0; c < CB; ++c)
                        tma_load_4d(sQ + qs * C::Q_BYTES + c * (BM * 128), &tp.tq, c * 64, tl.m_block * BM, tl.n,
                                    tl.b, q_full(qs));
                };
                // O_IN_Q: Q waits for this CTA's previous epilogue, so K_0 and V_0 go first.
                if (!C::O_IN_Q || n_blocks == 0) load_q();
                for (int i = 0; i < n_blocks; ++i, ++ring) {
                    const int s = ring % ST, use = ring / ST, kb = n_blocks - 1 - i;
                    // K_i then V_i: the consumers need K_i first (S = Q·K_iᵀ) and V_i one step later.
                    if (use > 0) mbar_wait(k_empty(s), (use - 1) & 1);
                    mbar_expect_tx(k_full(s), C::KV_BYTES);
#pragma unroll
                    for (int c = 0; c < CB; ++c)
                        tma_load_4d(sK + s * C::KV_BYTES + c * (BN * 128), &tp.tk, c * 64, kb * BN, nk, tl.b, k_full(s));
                    if (use > 0) mbar_wait(v_empty(s), (use - 1) & 1);
                    mbar_expect_tx(v_full(s), C::KV_BYTES);
#pragma unroll
                    for (int c = 0; c < CB; ++c)
                        tma_load_4d(sV + s * C::KV_BYTES + c * (BN * 128), &tp.tv, c * 64, kb * BN, nk, tl.b, v_full(s));
                    if (C::O_IN_Q && i == 0) load_q();
                }
            }
        }
        return; // the loads in flight complete on barriers the consumers wait on
    }

    // ---- consumer warpgroups ----
    asm volatile("setmaxnreg.inc.sync.aligned.u32 %0;\n" ::"n"(C::CONS_REGS));

    float o[CB][32];
    float s[BN / 2];
    uint32_t pf[BN / 16][4];
    float m_run[2], l_run[2];
    const float sl2 = p.scale_log2;
    const int col_lane = 2 * (lane & 3);
    const int causal_off = p.T - p.S;

    // Ping-pong: warpgroup w issues its GEMMs only after warpgroup w - 1 (mod NWG) has issued its
    // previous ones (named barrier 2 + w, 256 threads: 128 syncing + 128 arriving). The ring runs
    // on across a persistent CTA's tiles (every warpgroup works on the same tiles, so all take the
    // same number of turns): the last warpgroup opens it once with an arrive on warpgroup 0's
    // barrier, and warpgroup 0 takes the last warpgroup's final arrive with one extra sync at the
    // end, so every barrier phase completes exactly. A warpgroup cannot arrive twice on one
    // barrier before its sync: its next arrive follows its own next turn, which waits for the
    // warpgroup it would be arriving for.
    bool pp_open = false;
    auto turn_begin = [&] {
        if constexpr (PP) named_sync(2 + wg, 256);
    };
    auto turn_end = [&] {
        if constexpr (PP) named_arrive(2 + (wg + 1) % NWG, 256);
    };
    // A consumer warp is done with a buffer once its own wgmmas that read it have completed.
    auto release = [&](uint32_t bar) {
        __syncwarp();
        if (lane == 0) mbar_arrive(bar);
    };

    int ring = 0, it = 0;
    for (int t = first_tile(0); t < n_tiles; t = first_tile(++it)) {
        const TileOf tl(t, n_m, p.N);
        const int m_block = tl.m_block;
        int kv_limit;
        const int n_blocks = key_blocks<BM, BN>(p, m_block, tl.b, kv_limit);
        const int qs = it % QST;
        const uint32_t sQt = sQ + qs * C::Q_BYTES;
        const int row0 = m_block * BM + wg * 64 + wwarp * 16 + (lane >> 2); // + 8h
#pragma unroll
        for (int c = 0; c < CB; ++c)
#pragma unroll
            for (int i = 0; i < 32; ++i) o[c][i] = 0.f;
        m_run[0] = m_run[1] = -INFINITY;
        l_run[0] = l_run[1] = 0.f;

        auto issue_qk = [&](int st) {
#pragma unroll
            for (int ks = 0; ks < HD / 16; ++ks) {
                const uint64_t da = make_desc(sQt + (ks >> 2) * (BM * 128) + wg * (64 * 128) + (ks & 3) * 32, 16, 1024);
                const uint64_t db = make_desc(sK + st * C::KV_BYTES + (ks >> 2) * (BN * 128) + (ks & 3) * 32, 16, 1024);
                mma_ss<E, BN>(s, da, db, ks > 0 ? 1 : 0);
            }
        };
        auto issue_pv = [&](int st) {
            if constexpr (wide_pv<HD>()) {
                // One m64nHDk16 per 16 keys instead of CB m64n64k16 (HD 128: measured faster): fewer
                // instructions, P sent to the tensor cores once. o[0..CB-1] are the accumulator's chunks.
#pragma unroll
                for (int kk = 0; kk < BN / 16; ++kk) {
                    const uint64_t db = make_desc(sV + st * C::KV_BYTES + kk * (16 * 128), BN * 128, 1024);
                    mma_rs_wide<E, HD>(*reinterpret_cast<float(*)[HD / 2]>(&o[0][0]), pf[kk], db);
                }
            } else {
                issue_pv_chunks<E, HD, BN>(o, pf, sV + st * C::KV_BYTES);
            }
        };
        auto pin_s = [&] { pin_all(s); };
        auto pin_o = [&] { pin_acc<HD>(o); };
        auto softmax = [&](int i, float (&corr)[2]) {
            // last key block first, as in the cp.async kernel
            if constexpr (BIAS) add_bias<E, BN>(s, p, tl.b, tl.n, n_blocks - 1 - i, kv_limit, row0, p.S, col_lane);
            softmax_key_block<BM, BN>(s, m_run, l_run, corr, sl2, p.causal, n_blocks - 1 - i, kv_limit, m_block, row0,
                                      causal_off, col_lane);
        };
        auto pack_p = [&] { pack_p_frag<E, BN>(pf, s); };

        // Also before the epilogue reuses the Q bytes (non-persistent) when there is no key block.
        mbar_wait(q_full(qs), (it / QST) & 1);
        if (n_blocks > 0) {
            if constexpr (PP)
                if (!pp_open) {
                    if (wg == NWG - 1) named_arrive(2, 256);
                    pp_open = true;
                }
            float corr[2];
            const int s0 = ring % ST;
            mbar_wait(k_full(s0), (ring / ST) & 1);
            turn_begin();
            wg_fence();
            issue_qk(s0);
            wg_commit();
            turn_end();
            wg_wait<0>();
            pin_s();
            release(k_empty(s0));
            if (!C::O_IN_Q && n_blocks == 1) release(q_empty(qs)); // its last Q·Kᵀ is done: the producer may refill Q
            softmax(0, corr);
            pack_p();
            for (int i = 1; i < n_blocks; ++i) {
                const int rk = ring + i, rv = rk - 1;
                const int sk = rk % ST, sv = rv % ST;
                mbar_wait(k_full(sk), (rk / ST) & 1);
                mbar_wait(v_full(sv), (rv / ST) & 1);
                turn_begin();
                wg_fence();
                issue_qk(sk);
                wg_commit();
                issue_pv(sv);
                wg_commit();
                turn_end();
                wg_wait<1>();
                pin_s();
                release(k_empty(sk));
                if (!C::O_IN_Q && i == n_blocks - 1) release(q_empty(qs));
                softmax(i, corr);
                wg_wait0_after<(HD >= 128)>(l_run[0] + l_run[1]);
                pin_o();
                release(v_empty(sv));
                rescale_o<HD>(o, corr);
                pack_p();
            }
            const int rv = ring + n_blocks - 1, sv = rv % ST;
            mbar_wait(v_full(sv), (rv / ST) & 1);
            turn_begin();
            wg_fence();
            issue_pv(sv);
            wg_commit();
            turn_end();
            wg_wait<0>();
            pin_o();
            release(v_empty(sv));
            ring += n_blocks;
        } else if constexpr (!C::O_IN_Q) {
            release(q_empty(qs));
        }

        // Epilogue, per warpgroup (its own 64 rows; barrier 5 + wg counts its 128 threads):
        // normalise, stage swizzled in shared memory, 16-byte coalesced stores. The staging
        // buffer is the warpgroup's own Q rows (one tile per CTA, or O_IN_Q) or the O buffer
        // (persistent).
        const uint32_t stage = PERSIST && !C::O_IN_Q ? sO : sQt;
        unsigned char *so = smem + (stage - base);
        // Persistent: this warpgroup's stores of the previous tile have read the buffer. Otherwise:
        // every warp's Q·Kᵀ reads of these Q rows are done (the wgmmas are warpgroup-wide).
        named_sync(5 + wg, 128);
        if constexpr (!PERSIST || C::O_IN_Q) fence_proxy_async(); // the Q bytes were last written by TMA
        stage_o<E, HD, BM>(so, o, l_run, wg * 64 + wwarp * 16 + (lane >> 2), col_lane);
        named_sync(5 + wg, 128);
        E *og = static_cast<E *>(p.o) + (int64_t)tl.b * p.o_sb + tl.n * p.o_sn;
        constexpr int CH = HD / 8;
        const int hch = p.H / 8;
#pragma unroll 4
        for (int idx = tid & 127; idx < 64 * CH; idx += 128) {
            const int r = wg * 64 + idx / CH, c = idx % CH;
            const int row = m_block * BM + r;
            if (row < p.S && c < hch)
                *reinterpret_cast<uint4 *>(og + (int64_t)row * p.o_ss + c * 8) = *reinterpret_cast<const uint4 *>(
                    so + (c >> 3) * (BM * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4));
        }
        if constexpr (C::O_IN_Q) {
            // This warp's reads of the staged O are done (in registers, being stored): the
            // producer may load the next Q over it (a TMA write: order it after them).
            fence_proxy_async();
            release(q_empty(qs));
        }
    }
    if constexpr (PP)
        if (pp_open && wg == 0) named_sync(2, 256); // the last warpgroup's final arrive
}

template <typename E, int HD, int BN, int MINB, int NWG, bool PP, bool PERSIST, bool BIAS>
__global__ void __launch_bounds__(128 * (NWG + 1), MINB) flash_sm90_tma_kernel(const __grid_constant__ TmaParams tp) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    flash_sm90_tma_body<E, HD, BN, MINB, NWG, PP, PERSIST, BIAS>(tp);
#elif defined(__CUDA_ARCH__)
    __trap();
#endif
}

// Host: driver's cuTensorMapEncodeTiled through the runtime's entry-point query (no -lcuda).
PFN_cuTensorMapEncodeTiled_v12000 tma_encoder();
// 4-D map over a strided (b, n, s, h) view of 16-bit elements; false if the driver refuses it.
bool tma_make_map(CUtensorMap *m, bool f16, const void *ptr, int H, int rows, int heads, int batches, int64_t ss,
                  int64_t sn, int64_t sb, int box_rows);
// Runs the head size's first cp.async variant (packed batches, refused maps).
cudaError_t tma_fallback(int hd, bool f16, const Params &p, cudaStream_t stream);
// Streaming multiprocessors of the current device (cached per device).
int tma_sm_count();

template <typename E, int HD, int BN, int MINB, int NWG, bool PP, bool PERSIST>
cudaError_t launch_sm90_tma(const Params &p, cudaStream_t stream) {
    using C = TCfg<HD, BN, MINB, NWG, PERSIST>;
    constexpr bool f16 = std::is_same<E, __half>::value;
    if (p.cu_q) return tma_fallback(HD, f16, p, stream);
    const int64_t n_tiles = (int64_t)((p.S + C::BM - 1) / C::BM) * p.N * p.B;
    if (n_tiles > INT32_MAX) return tma_fallback(HD, f16, p, stream);
    TmaParams tp;
    tp.p = p;
    tp.n_m = (p.S + C::BM - 1) / C::BM;
    tp.n_tiles = (int)n_tiles;
    const int nkv = p.N / p.kv_group;
    if (!tma_make_map(&tp.tq, f16, p.q, p.H, p.S, p.N, p.B, p.q_ss, p.q_sn, p.q_sb, C::BM) ||
        !tma_make_map(&tp.tk, f16, p.k, p.H, p.T, nkv, p.B, p.k_ss, p.k_sn, p.k_sb, BN) ||
        !tma_make_map(&tp.tv, f16, p.v, p.H, p.T, nkv, p.B, p.v_ss, p.v_sn, p.v_sb, BN))
        return tma_fallback(HD, f16, p, stream);
    auto kern = p.bias ? flash_sm90_tma_kernel<E, HD, BN, MINB, NWG, PP, PERSIST, true>
                       : flash_sm90_tma_kernel<E, HD, BN, MINB, NWG, PP, PERSIST, false>;
    static bool attr_done[2] = {false, false};
    if (!attr_done[p.bias != nullptr]) {
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
        if (e != cudaSuccess) return e;
        attr_done[p.bias != nullptr] = true;
    }
    // Persistent: one CTA per SM slot walks the tiles (snake order, see first_tile). Under a
    // causal mask the snake only evens the CTAs out when a head has few query blocks and each CTA
    // gets several rounds; otherwise (long single sequences) one CTA per tile, longest first, lets
    // the hardware balance (measured 2026-11-25: 1,16384,8,80 causal 284 vs 489 TFLOP/s).
    int64_t grid = n_tiles;
    if (PERSIST) {
        const int64_t slots = (int64_t)tma_sm_count() * MINB;
        const int n_m = (p.S + C::BM - 1) / C::BM;
        const bool even = !p.causal || (n_m <= 32 && n_tiles >= 4 * slots);
        if (even && slots > 0 && slots < grid) grid = slots;
    }
    kern<<<(unsigned)grid, C::THREADS, C::SMEM, stream>>>(tp);
    return cudaGetLastError();
}

template <typename E, int HD, int BN, int MINB, int NWG, bool PP, bool PERSIST> const void *tma_probe() {
    return (const void *)&flash_sm90_tma_kernel<E, HD, BN, MINB, NWG, PP, PERSIST, false>;
}

// Explicit instantiation of one tile, both element types (gpu/flash_sm90_tma_*.cu).
#define KILN_TMA_INSTANTIATE(HD, BN, MINB, NWG, PP, PERSIST)                                                 \
    template cudaError_t launch_sm90_tma<__half, HD, BN, MINB, NWG, PP, PERSIST>(const Params &, cudaStream_t); \
    template cudaError_t launch_sm90_tma<__nv_bfloat16, HD, BN, MINB, NWG, PP, PERSIST>(const Params &,          \
                                                                                       cudaStream_t);           \
    template const void *tma_probe<__half, HD, BN, MINB, NWG, PP, PERSIST>();

} // namespace kiln_sm90
