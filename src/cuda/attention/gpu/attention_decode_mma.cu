// Split-KV decode on tensor cores, for query heads that share a KV head (GQA/MQA) or short
// speculative queries: the G·S query rows that read one KV head form the M side of
// mma.m16n8k16.
//
// Why not the CUDA-core kernel (attention_decode.cu) here: it spends 2·R·H fp32 FMAs on every
// key (scores and output, R = G·S rows). At 3 TB/s that is about 4.5·R TFLOP/s, past what the
// CUDA cores give from R = 8 on, so GQA decode ran at a third of the copy bandwidth. The tensor
// cores do the same work with room to spare, even with half of the 16 rows padding.
//
// A CTA works on units of 16 of those rows, each over all of its KV head's keys. Each warp streams
// its own key tiles (every NW-th tile) through a private ring of STAGES K/V buffers filled by
// cp.async, so warps never wait on each other and STAGES−1 tiles per warp are always in flight. A
// warp keeps its own online-softmax state like one row block of flash_fwd.cuh.
//
// Two ways to share the work out:
// - split: one CTA per slice of one unit, the slices sized so the grid fills the SMs. At the end
//   the warps' results are rescaled to the CTA's max and summed in shared memory, then written as
//   the final output (one split) or as the partial-result format decode_combine reads.
// - stream-K: one CTA per SM slot, each with an equal share of all units' keys laid end to end.
//   A share may cross into the next unit; the ring then keeps loading across the boundary, and each
//   warp writes its own partial result per unit. This evens out the SMs where the units do not
//   divide into whole waves (Nsight Compute on 4x65536, 8/2 heads: 120 split CTAs on 132 SMs kept
//   the SMs 75% busy and DRAM at 71% of peak).
#include "../attention_decode.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>

namespace kiln_decode {
namespace {

using kiln_flash::cp_async16;
using kiln_flash::cp_async_commit;
using kiln_flash::cp_async_wait;
using kiln_flash::ex2;
using kiln_flash::ldsm_x4;
using kiln_flash::ldsm_x4_t;
using kiln_flash::Mma;
using kiln_flash::smem_u32;

__device__ __forceinline__ void store_e(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store_e(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

template <int HD> struct MmaCfg {
    static constexpr int BN = 32;              // keys per warp tile
    static constexpr int NW = HD > 128 ? 2 : 4; // fewer warps where a ring of wide rows fills the SM
    static constexpr int STAGES = 3;
    static constexpr int LDS = HD + 8; // +16 bytes: ldmatrix rows land in distinct bank groups
    static constexpr int RING = STAGES * 2 * BN * LDS; // elements per warp
    static constexpr int SMEM = (MMA_ROWS * LDS + NW * RING) * 2;
    static constexpr int MERGE_BYTES = (MMA_ROWS * HD + 2 * NW * MMA_ROWS + 2 * MMA_ROWS) * 4;
    static_assert(MERGE_BYTES <= NW * RING * 2, "the merge buffers reuse the rings");
    static_assert(HD % 16 == 0 && BN % 16 == 0, "whole mma tiles");
};

// The query rows of work unit `unit` (one 16-row group of one KV head of one batch; units are
// numbered rg fastest, then the KV head, then the batch) and the end of the keys any of them sees.
struct Unit {
    int b, kvh, rg, end;
};
__device__ __forceinline__ int row_limit(const kiln_flash::Params &p, int kv_limit, int r) {
    if (r >= p.kv_group * p.S) return 0;
    const int lim = p.causal ? min(kv_limit, r % p.S + (p.T - p.S) + 1) : kv_limit;
    return lim > 0 ? lim : 0;
}
__device__ __forceinline__ Unit unit_at(const DecodeArgs &a, int unit) {
    const kiln_flash::Params &p = a.p;
    const int nkv = p.N / p.kv_group;
    Unit u;
    u.rg = unit % a.rowgroups;
    const int bk = unit / a.rowgroups;
    u.kvh = bk % nkv;
    u.b = bk / nkv;
    const int kv_limit = kiln_flash::key_limit(p, u.b, p.T);
    u.end = 0;
    for (int m = 0; m < MMA_ROWS; ++m) u.end = max(u.end, row_limit(p, kv_limit, u.rg * MMA_ROWS + m));
    return u;
}

template <typename E, int HD> __device__ __forceinline__ void decode_mma_body(const DecodeArgs &a) {
    using C = MmaCfg<HD>;
    constexpr int BN = C::BN, NW = C::NW, ST = C::STAGES, LDS = C::LDS;
    constexpr int NT = BN / 8, DT = HD / 8, THREADS = NW * 32, KPR = NW * BN;
    constexpr uint32_t ES = sizeof(E);
    extern __shared__ __align__(128) unsigned char smem_raw[];
    E *sQ = reinterpret_cast<E *>(smem_raw);
    E *rings = sQ + MMA_ROWS * LDS;

    const kiln_flash::Params &p = a.p;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int S = p.S, G = p.kv_group, R = G * S;
    const int hch = p.H / 8;
    const int RP = a.rounds_per_unit;

    // The CTA's rounds [g0, g1) of the units' keys laid end to end (round = KPR keys, one warp
    // tile per warp). Split: one slice of one unit. Stream-K: an equal share of all of them, which
    // may cross from one unit into the next; the ring then runs on across the boundary.
    // (The plan keeps the rounds of all units within int.)
    int g0, g1;
    if (a.streamk) {
        g0 = (int)((int64_t)blockIdx.x * a.total_rounds / a.ctas);
        g1 = (int)((int64_t)(blockIdx.x + 1) * a.total_rounds / a.ctas);
    } else {
        const int rg = blockIdx.x % a.rowgroups, sp = blockIdx.x / a.rowgroups;
        const int unit = ((int)blockIdx.z * (p.N / G) + (int)blockIdx.y) * a.rowgroups + rg;
        const int slice = a.chunk / KPR;
        g0 = unit * RP + sp * slice;
        g1 = min(g0 + slice, (unit + 1) * RP);
    }
    const int rounds = g1 - g0;
    E *ring = rings + warp * C::RING;

    // Loads run ST − 1 rounds ahead of the arithmetic, so they follow their own unit.
    int ld_unit = g0 / RP;
    int ld_round = g0 - ld_unit * RP;
    Unit ld_u = unit_at(a, ld_unit);
    auto kv_base = [&](const Unit &u, const void *base, int64_t sb, int64_t sn) {
        return static_cast<const E *>(base) + (int64_t)u.b * sb + (int64_t)u.kvh * sn;
    };
    const E *ld_k = kv_base(ld_u, p.k, p.k_sb, p.k_sn), *ld_v = kv_base(ld_u, p.v, p.v_sb, p.v_sn);
    // Every call commits a group, empty past the CTA's rounds or the unit's last key, so the wait
    // below always leaves exactly the ST − 1 newest groups pending. Called with i = 0, 1, 2, ...
    auto issue = [&](int i) {
        if (i < rounds) {
            const int key0 = ld_round * KPR + warp * BN;
            if (key0 < ld_u.end) {
                E *sk = ring + (i % ST) * 2 * BN * LDS;
                kiln_flash::load_tile<BN, HD, LDS, 32>(sk, ld_k + (int64_t)key0 * p.k_ss, p.k_ss, ld_u.end - key0, hch,
                                                       static_cast<const E *>(p.k), lane);
                kiln_flash::load_tile<BN, HD, LDS, 32>(sk + BN * LDS, ld_v + (int64_t)key0 * p.v_ss, p.v_ss,
                                                       ld_u.end - key0, hch, static_cast<const E *>(p.v), lane);
            }
            if (++ld_round == RP && i + 1 < rounds) {
                ld_round = 0;
                ld_u = unit_at(a, ++ld_unit);
                ld_k = kv_base(ld_u, p.k, p.k_sb, p.k_sn), ld_v = kv_base(ld_u, p.v, p.v_sb, p.v_sn);
            }
        }
        cp_async_commit();
    };
#pragma unroll
    for (int i = 0; i < ST - 1; ++i) issue(i);

    // ldmatrix lane addresses, as in flash_fwd.cuh.
    const uint32_t q_lane = smem_u32(sQ + (lane & 15) * LDS + (lane >> 4) * 8);
    const uint32_t k_lane = smem_u32(ring + ((lane & 7) + ((lane >> 4) << 3)) * LDS + ((lane >> 3) & 1) * 8);
    const uint32_t v_lane =
        smem_u32(ring + BN * LDS + ((lane & 7) + (((lane >> 3) & 1) << 3)) * LDS + (lane >> 4) * 8);
    const float sl2 = p.scale_log2;
    const int row_in_tile = lane >> 2; // and row_in_tile + 8

    int it = 0; // the CTA's round
    for (int g = g0; g < g1;) {
        const int unit = g / RP;
        const int seg_rounds = min(g1, (unit + 1) * RP) - g;
        const int round0 = g - unit * RP;
        const Unit u = unit_at(a, unit);
        const int kv_limit = kiln_flash::key_limit(p, u.b, p.T);

        // Tile row m is query row r = rg·16 + m: head kvh·G + r / S at position r % S. Plain loads:
        // a cp.async group here would make the ring's waits wait for it too. Every warp is past the
        // previous unit's reads of sQ (the barrier after its partial results).
        const E *qb = static_cast<const E *>(p.q) + (int64_t)u.b * p.q_sb;
        for (int i = tid; i < MMA_ROWS * (HD / 8); i += THREADS) {
            const int m = i / (HD / 8), c = i % (HD / 8), r = u.rg * MMA_ROWS + m;
            uint4 v = make_uint4(0, 0, 0, 0);
            if (r < R && c < hch)
                v = *reinterpret_cast<const uint4 *>(qb + (int64_t)(u.kvh * G + r / S) * p.q_sn +
                                                     (int64_t)(r % S) * p.q_ss + c * 8);
            *reinterpret_cast<uint4 *>(sQ + m * LDS + c * 8) = v;
        }
        __syncthreads();

        const int lim[2] = {row_limit(p, kv_limit, u.rg * MMA_ROWS + row_in_tile),
                            row_limit(p, kv_limit, u.rg * MMA_ROWS + row_in_tile + 8)};
        // Each of the lane's two rows' additive scores over the keys (GPT-2's causal mask exported as
        // a bias, relative positions), in the units of Q·Kᵀ like flash_fwd.cuh's; NULL without one.
        const E *brow[2];
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            const int r = u.rg * MMA_ROWS + row_in_tile + 8 * h;
            brow[h] = p.bias && r < R ? static_cast<const E *>(p.bias) + (int64_t)u.b * p.bias_sb +
                                            (int64_t)(u.kvh * G + r / S) * p.bias_sn + (int64_t)(r % S) * p.bias_ss
                                      : nullptr;
        }

        float acc_o[DT][4];
#pragma unroll
        for (int d = 0; d < DT; ++d)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_o[d][e] = 0.f;
        float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};

        for (int j = 0; j < seg_rounds; ++j, ++it) {
            issue(it + ST - 1);
            cp_async_wait<ST - 1>();
            __syncwarp(); // every lane's copies of this round's tile are visible to the warp
            const int key0 = (round0 + j) * KPR + warp * BN;
            if (key0 < u.end) {
                const uint32_t soff = (uint32_t)((it % ST) * 2 * BN * LDS) * ES;
                float s[NT][4];
#pragma unroll
                for (int t = 0; t < NT; ++t)
#pragma unroll
                    for (int e = 0; e < 4; ++e) s[t][e] = 0.f;
#pragma unroll
                for (int ks = 0; ks < HD / 16; ++ks) {
                    uint32_t aq[4];
                    ldsm_x4(aq, q_lane + ks * 16 * ES);
#pragma unroll
                    for (int np = 0; np < NT / 2; ++np) {
                        uint32_t bk[4];
                        ldsm_x4(bk, k_lane + soff + (np * 16 * LDS + ks * 16) * ES);
                        Mma<E>::run(s[2 * np], aq, bk[0], bk[1]);
                        Mma<E>::run(s[2 * np + 1], aq, bk[2], bk[3]);
                    }
                }
                // Keys past a row's limit (key length, causal diagonal) and padding rows; the bias is
                // read only where the key is visible.
                const int col0 = key0 + 2 * (lane & 3);
#pragma unroll
                for (int t = 0; t < NT; ++t)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int col = col0 + t * 8 + e;
                            if (col >= lim[h]) s[t][2 * h + e] = -INFINITY;
                            else if (brow[h]) s[t][2 * h + e] += kiln_flash::to_f32(brow[h][col]) * p.inv_scale;
                        }

#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    float mx = -INFINITY;
#pragma unroll
                    for (int t = 0; t < NT; ++t) mx = fmaxf(mx, fmaxf(s[t][2 * h], s[t][2 * h + 1]));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                    mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                    const float m_new = fmaxf(m_run[h], mx * sl2);
                    // A row with nothing visible yet keeps max −inf; subtracting 0 instead avoids inf − inf.
                    const float m_use = m_new == -INFINITY ? 0.f : m_new;
                    const float corr = ex2(m_run[h] - m_use);
                    m_run[h] = m_new;
                    float sum = 0.f;
#pragma unroll
                    for (int t = 0; t < NT; ++t)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const float pv = ex2(fmaf(s[t][2 * h + e], sl2, -m_use));
                            s[t][2 * h + e] = pv;
                            sum += pv;
                        }
                    l_run[h] = l_run[h] * corr + sum; // per lane; the quad is summed at the end
#pragma unroll
                    for (int d = 0; d < DT; ++d) acc_o[d][2 * h] *= corr, acc_o[d][2 * h + 1] *= corr;
                }

#pragma unroll
                for (int kk = 0; kk < BN / 16; ++kk) {
                    uint32_t ap[4];
                    ap[0] = Mma<E>::pack(s[2 * kk][0], s[2 * kk][1]);
                    ap[1] = Mma<E>::pack(s[2 * kk][2], s[2 * kk][3]);
                    ap[2] = Mma<E>::pack(s[2 * kk + 1][0], s[2 * kk + 1][1]);
                    ap[3] = Mma<E>::pack(s[2 * kk + 1][2], s[2 * kk + 1][3]);
#pragma unroll
                    for (int dp = 0; dp < HD / 16; ++dp) {
                        uint32_t bv[4];
                        ldsm_x4_t(bv, v_lane + soff + (kk * 16 * LDS + dp * 16) * ES);
                        Mma<E>::run(acc_o[2 * dp], ap, bv[0], bv[1]);
                        Mma<E>::run(acc_o[2 * dp + 1], ap, bv[2], bv[3]);
                    }
                }
            }
            __syncwarp(); // a later issue refills the stage just read
        }
        g += seg_rounds;

#pragma unroll
        for (int h = 0; h < 2; ++h) {
            l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 1);
            l_run[h] += __shfl_xor_sync(0xffffffffu, l_run[h], 2);
        }
        if (a.streamk) {
            // Each warp writes its own partial result for the unit (no merge in shared memory:
            // the rings hold the next unit's tiles in flight); decode_combine sums them.
            const int part = ((int)blockIdx.x - stream_cta(a, (int64_t)unit * RP)) * NW + warp;
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                const int r = u.rg * MMA_ROWS + row_in_tile + 8 * h;
                if (r >= R) continue;
                const int n = u.kvh * G + r / S;
                const int64_t slot = ((((int64_t)u.b * p.N + n) * S + r % S) * a.splits + part);
#pragma unroll
                for (int d = 0; d < DT; ++d) {
                    const int col = d * 8 + 2 * (lane & 3);
                    if (col < p.H)
                        *reinterpret_cast<float2 *>(a.part_o + slot * p.H + col) =
                            make_float2(acc_o[d][2 * h], acc_o[d][2 * h + 1]);
                }
                if ((lane & 3) == 0) {
                    a.part_ml[slot * 2] = m_run[h];
                    a.part_ml[slot * 2 + 1] = l_run[h];
                }
            }
            __syncthreads(); // sQ is rewritten for the next unit
            continue;
        }

        // Split: one unit per CTA. Merge the warps: rescale each to the CTA's row max, sum in shared
        // memory (the rings' space, free once the last copies have landed).
        const int sp = blockIdx.x / a.rowgroups;
        cp_async_wait<0>();
        __syncthreads();
        float *sO = reinterpret_cast<float *>(rings); // 16 × HD
        float *sM = sO + MMA_ROWS * HD;               // NW × 16 per-warp row max
        float *sL = sM + NW * MMA_ROWS;               // NW × 16 per-warp row sum
        float *rowM = sL + NW * MMA_ROWS, *rowL = rowM + MMA_ROWS;
        if ((lane & 3) == 0) {
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                sM[warp * MMA_ROWS + row_in_tile + 8 * h] = m_run[h];
                sL[warp * MMA_ROWS + row_in_tile + 8 * h] = l_run[h];
            }
        }
        __syncthreads();
        if (tid < MMA_ROWS) {
            float mx = -INFINITY, l = 0.f;
            for (int w = 0; w < NW; ++w) mx = fmaxf(mx, sM[w * MMA_ROWS + tid]);
            for (int w = 0; w < NW; ++w) {
                const float mw = sM[w * MMA_ROWS + tid];
                if (mw != -INFINITY) l += sL[w * MMA_ROWS + tid] * ex2(mw - mx);
            }
            rowM[tid] = mx, rowL[tid] = l;
        }
        __syncthreads();
        float fac[2];
#pragma unroll
        for (int h = 0; h < 2; ++h)
            fac[h] = m_run[h] == -INFINITY ? 0.f : ex2(m_run[h] - rowM[row_in_tile + 8 * h]);
        // Warp by warp, in a fixed order, so the sums do not depend on scheduling.
        for (int w = 0; w < NW; ++w) {
            if (warp == w) {
#pragma unroll
                for (int d = 0; d < DT; ++d)
#pragma unroll
                    for (int h = 0; h < 2; ++h)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            float *dst = sO + (row_in_tile + 8 * h) * HD + d * 8 + 2 * (lane & 3) + e;
                            const float v = acc_o[d][2 * h + e] * fac[h];
                            *dst = w == 0 ? v : *dst + v;
                        }
            }
            __syncthreads();
        }

        const bool direct = a.splits == 1;
        for (int i = tid; i < MMA_ROWS * HD; i += THREADS) {
            const int m = i / HD, h = i % HD, r = u.rg * MMA_ROWS + m;
            if (r >= R || h >= p.H) continue;
            const int n = u.kvh * G + r / S, s = r % S;
            const float o = sO[i];
            if (direct) {
                // A row that sees no key is written as zeros (l == 0).
                const float l = rowL[m];
                E *og = static_cast<E *>(p.o) + (int64_t)u.b * p.o_sb + (int64_t)n * p.o_sn + (int64_t)s * p.o_ss;
                store_e(og + h, l > 0.f ? o / l : 0.f);
            } else {
                const int64_t row = ((int64_t)u.b * p.N + n) * S + s;
                a.part_o[(row * a.splits + sp) * p.H + h] = o;
                if (h == 0) {
                    a.part_ml[(row * a.splits + sp) * 2] = rowM[m];
                    a.part_ml[(row * a.splits + sp) * 2 + 1] = rowL[m];
                }
            }
        }
    }
    cp_async_wait<0>(); // nothing may land in shared memory after the CTA exits
}

template <typename E, int HD> __global__ void __launch_bounds__(MmaCfg<HD>::NW * 32) decode_mma(const DecodeArgs a) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap(); // cp.async, ldmatrix and bf16 mma need sm_80; mma_kernel reports none below
#else
    decode_mma_body<E, HD>(a);
#endif
}

template <typename E, int HD> MmaKernel make_kernel() {
    using C = MmaCfg<HD>;
    MmaKernel k;
    k.fn = decode_mma<E, HD>;
    k.threads = C::NW * 32;
    k.smem_bytes = C::SMEM;
    k.keys_per_round = C::NW * C::BN;
    k.blocks_per_sm = 0;
    // Fails where the device offers less shared memory per block; the caller then keeps the
    // CUDA-core kernel.
    if (cudaFuncSetAttribute(k.fn, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM) != cudaSuccess) {
        cudaGetLastError();
        k.fn = nullptr;
        return k;
    }
    int n = 0;
    if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, k.fn, k.threads, k.smem_bytes) != cudaSuccess || n < 1) {
        cudaGetLastError();
        k.fn = nullptr;
        return k;
    }
    k.blocks_per_sm = n;
    return k;
}

} // namespace

// Head sizes pad to 64, 128 or 256: padded columns are zero-filled in shared memory without
// reading memory, and tensor-core time is not what bounds decoding.
MmaKernel mma_kernel(int H, bool bf16) {
    static MmaKernel cache[2][3];
    static bool ready[2][3]; // benign race: every thread computes the same kernel
    const int hi = H <= 64 ? 0 : H <= 128 ? 1 : H <= 256 ? 2 : -1;
    if (hi < 0) return MmaKernel{};
    const int bi = bf16 ? 1 : 0;
    if (!ready[bi][hi]) {
        if (bf16)
            cache[bi][hi] = hi == 0   ? make_kernel<__nv_bfloat16, 64>()
                            : hi == 1 ? make_kernel<__nv_bfloat16, 128>()
                                      : make_kernel<__nv_bfloat16, 256>();
        else
            cache[bi][hi] = hi == 0 ? make_kernel<__half, 64>() : hi == 1 ? make_kernel<__half, 128>() : make_kernel<__half, 256>();
        ready[bi][hi] = true;
    }
    return cache[bi][hi];
}

} // namespace kiln_decode
