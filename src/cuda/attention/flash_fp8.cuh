// FP8 (e4m3) attention forward, FlashAttention-2 style: mma.sync m16n8k32 e4m3 × e4m3 → fp32
// (sm_89+), the same CTA/warp split, key order and online softmax as flash_fwd.cuh. Native on Ada;
// sm_90 runs this mma by way of the fp16 tensor-core path, so Hopper's FP8 rate needs a wgmma
// kernel (docs/design.md, "FP8 attention"); this one is the portable, checked baseline.
//
// Operands. Q·Kᵀ takes Q and K as they are: both are K-major (head dimension contiguous), which
// is what the row.col MMA wants. P·V needs V with the keys contiguous, so a prologue kernel
// (fp8_transpose_v) writes Vᵀ (head × keys) into scratch. It also permutes the keys inside each
// 32-key block so that P goes from the Q·Kᵀ accumulators into A registers by packing alone:
// the accumulator of n-tile j gives a thread keys {8j + 2t, 8j + 2t + 1} (t = lane % 4), while the
// A fragment of m16n8k32 wants k positions {4t..4t+3, 16 + 4t..16 + 4t + 3}. P·V sums over keys
// in any order, so position 4t + i of a block holds key key_at(4t + i) (below) in Vᵀ and the B
// fragments stay plain ldmatrix loads. FA3 does the same reordering with byte permutes in
// registers; here it costs nothing in the main loop.
//
// Scales. Inputs are per-tensor dequantisation scales (real = code · scale), read from device
// memory so they may be computed on the GPU. softmax scale · q_scale · k_scale goes into the
// exponent; v_scale into the final normalisation. P is rounded to e4m3 for the second MMA after
// scaling it by 2^8 (folded into the exponent as +8): the row maximum becomes 256 instead of 1,
// so small probabilities land in e4m3's normal range (down to 2^-6 · 2^-8) instead of its
// subnormals, and l sums the same scaled values, so the factor cancels exactly.
#pragma once

#include "flash_fwd.cuh"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <stdint.h>

namespace kiln_fp8 {

using kiln_flash::cp_async_commit;
using kiln_flash::cp_async_wait_all;
using kiln_flash::ex2;
using kiln_flash::ldsm_x4;
using kiln_flash::load_tile;
using kiln_flash::smem_u32;

struct Params {
    const uint8_t *q, *k, *vt;
    void *o;
    int64_t q_sb, q_sn, q_ss; // bytes
    int64_t k_sb, k_sn, k_ss;
    int64_t vt_sb, vt_sn;     // Vᵀ (B, N_kv, HD, tp): row d of (b, n) at vt + b*vt_sb + n*vt_sn + d*tp
    int tp;                   // keys rounded up to KEY_PAD, zero-filled
    int64_t o_sb, o_sn, o_ss; // output elements
    int B, N, kv_group;
    int S, T, H;
    float scale; // softmax scale, resolved (> 0)
    const float *q_scale, *k_scale, *v_scale;
    int causal;
    float p_log2_scale; // P is rounded to e4m3 as P · 2^p_log2_scale (P_LOG2_SCALE; 0 for the ablation)
};

// Vᵀ's key padding: a multiple of every tile's BN, so the main loop reads whole tiles.
constexpr int KEY_PAD = 128;
constexpr float P_LOG2_SCALE = 8.f; // the default p_log2_scale: P · 2^8 before it becomes e4m3

// Key stored at position p (0..31) of a 32-key block of Vᵀ.
__host__ __device__ constexpr int key_at(int p) {
    return (p & 16) + (((p & 3) >> 1) << 3) + 2 * ((p & 15) >> 2) + (p & 1);
}

__device__ __forceinline__ void mma_e4m3(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
    asm volatile("mma.sync.aligned.m16n8k32.row.col.f32.e4m3.e4m3.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                 "{%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

// Four floats → four e4m3 bytes, x0 in the lowest. cvt puts its first source in the upper byte.
__device__ __forceinline__ uint32_t pack_e4m3(float x0, float x1, float x2, float x3) {
    uint16_t lo, hi;
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(lo) : "f"(x1), "f"(x0));
    asm("cvt.rn.satfinite.e4m3x2.f32 %0, %1, %2;\n" : "=h"(hi) : "f"(x3), "f"(x2));
    return (uint32_t)lo | ((uint32_t)hi << 16);
}

// Two e4m3 codes (low byte first) → f16x2, exactly (every e4m3 value is an fp16 value).
__device__ __forceinline__ uint32_t e4m3x2_to_f16x2(uint16_t x) {
    uint32_t r;
    asm("cvt.rn.f16x2.e4m3x2 %0, %1;\n" : "=r"(r) : "h"(x));
    return r;
}
__device__ __forceinline__ uint32_t lo16(uint32_t r) { return e4m3x2_to_f16x2((uint16_t)(r & 0xFFFFu)); }
__device__ __forceinline__ uint32_t hi16(uint32_t r) { return e4m3x2_to_f16x2((uint16_t)(r >> 16)); }

// The F16 variants keep the e4m3 operands in memory and shared memory but multiply in fp16
// (m16n8k16), converting each fragment once after ldmatrix: sm_90 has no native e4m3 mma.sync
// and runs it through the fp16 path anyway, so this form lets the conversions be shared across
// the MMAs that reuse a fragment, and P stays in fp16 (no e4m3 rounding). One m16n8k32 becomes two
// m16n8k16 over a relabelled k: virtual k (2t, 2t+1) is real k (4t, 4t+1), the low half of the
// 8-bit register, and virtual (8+2t, 9+2t) is real (4t+2, 4t+3), its high half; A and B are
// relabelled alike, so the sums are unchanged.
__device__ __forceinline__ void mma_f16(float (&c)[4], uint32_t a0, uint32_t a1, uint32_t a2, uint32_t a3, uint32_t b0,
                                        uint32_t b1) {
    const uint32_t a[4] = {a0, a1, a2, a3};
    kiln_flash::Mma<__half>::run(c, a, b0, b1);
}

template <typename O> struct Out;
template <> struct Out<__half> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};
template <> struct Out<__nv_bfloat16> {
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};

template <int HD, int BM, int BN, int NW> struct Cfg {
    static constexpr int THREADS = NW * 32;
    static constexpr int MT = BM / (16 * NW);
    static constexpr int LDQ = HD + 16; // bytes; +16 puts the 8 rows of one ldmatrix in 8 bank groups
    static constexpr int LDV = BN + 16;
    static constexpr int SMEM = (BM + BN) * LDQ + HD * LDV;
    // Two CTAs per SM where the registers allow it (4 warps, or 8 warps with small tiles): one
    // CTA's barrier stalls are the other's issue slots.
    static constexpr int MIN_BLOCKS = (NW == 4 || HD <= 64) ? 2 : 1;
    static_assert(HD % 32 == 0 && HD <= 256, "HD is a multiple of 32 up to 256");
    static_assert(BM % (16 * NW) == 0 && MT >= 1, "each warp owns whole 16-row tiles");
    static_assert(BN % 32 == 0 && KEY_PAD % BN == 0, "BN is a multiple of 32 dividing KEY_PAD");
};

template <typename O, int HD, int BM, int BN, int NW, bool F16>
__device__ __forceinline__ void flash_fp8_body(const Params &p) {
    using C = Cfg<HD, BM, BN, NW>;
    constexpr int MT = C::MT, LDQ = C::LDQ, LDV = C::LDV, THREADS = C::THREADS;
    constexpr int NT = BN / 8, DT = HD / 8;
    extern __shared__ __align__(128) unsigned char smem_raw[];
    uint8_t *sQ = smem_raw;
    uint8_t *sK = sQ + BM * LDQ;
    uint8_t *sV = sK + BN * LDQ; // Vᵀ tile: HD rows of BN keys

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    const int m_block = gridDim.x - 1 - blockIdx.x; // longest causal rows first
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

    // Tiles move as 16-bit elements (load_tile's 16-byte chunks are 8 of them); strides are even
    // because the dispatcher takes only 16-byte aligned rows.
    typedef uint16_t W;
    const W *qg = reinterpret_cast<const W *>(p.q + (int64_t)b * p.q_sb + n * p.q_sn + (int64_t)m_block * BM * p.q_ss);
    const W *kg = reinterpret_cast<const W *>(p.k + (int64_t)b * p.k_sb + nk * p.k_sn);
    const W *vg = reinterpret_cast<const W *>(p.vt + (int64_t)b * p.vt_sb + nk * p.vt_sn);
    const int64_t q_ss = p.q_ss / 2, k_ss = p.k_ss / 2, v_ss = p.tp / 2;
    const int hch = p.H / 16;
    W *wQ = reinterpret_cast<W *>(sQ), *wK = reinterpret_cast<W *>(sK), *wV = reinterpret_cast<W *>(sV);

    load_tile<BM, HD / 2, LDQ / 2, THREADS>(wQ, qg, q_ss, seqlen_q - m_block * BM, hch,
                                            reinterpret_cast<const W *>(p.q), tid);
    if (n_blocks > 0) {
        const int nb = n_blocks - 1;
        load_tile<BN, HD / 2, LDQ / 2, THREADS>(wK, kg + (int64_t)nb * BN * k_ss, k_ss, seqlen_k - nb * BN, hch,
                                                reinterpret_cast<const W *>(p.k), tid);
    }
    cp_async_commit();

    float acc_o[MT][DT][4];
    float m_run[MT][2], l_run[MT][2];
#pragma unroll
    for (int mt = 0; mt < MT; ++mt) {
#pragma unroll
        for (int d = 0; d < DT; ++d)
#pragma unroll
            for (int e = 0; e < 4; ++e) acc_o[mt][d][e] = 0.f;
        m_run[mt][0] = m_run[mt][1] = -INFINITY;
        l_run[mt][0] = l_run[mt][1] = 0.f;
    }

    const int warp_row0 = warp * 16 * MT;
    // ldmatrix.b16 on bytes: register q of lane T holds row T/4, bytes 4(T%4)..+3 of matrix q, which
    // is the m16n8k32 8-bit fragment when the four matrices are A (rows 0-7 | 8-15) × (k bytes
    // 0-15 | 16-31) and B (n 0-7, k 0-15 | n 0-7, k 16-31 | n 8-15, k 0-15 | n 8-15, k 16-31).
    const uint32_t q_lane = smem_u32(sQ + (warp_row0 + (lane & 15)) * LDQ + (lane >> 4) * 16);
    const uint32_t k_lane = smem_u32(sK + ((lane & 7) + ((lane >> 4) << 3)) * LDQ + ((lane >> 3) & 1) * 16);
    const uint32_t v_lane = smem_u32(sV + ((lane & 7) + ((lane >> 4) << 3)) * LDV + ((lane >> 3) & 1) * 16);
    const float sl2 = p.scale * __ldg(p.q_scale) * __ldg(p.k_scale) * 1.4426950408889634f;
    const int row_in_tile = lane >> 2;

    for (int nb = n_blocks - 1; nb >= 0; --nb) {
        cp_async_wait_all();
        __syncthreads(); // K_nb (and Q) visible; every warp is done with the last Vᵀ tile
        load_tile<HD, BN / 2, LDV / 2, THREADS>(wV, vg + (int64_t)nb * (BN / 2), v_ss, HD, BN / 16,
                                                reinterpret_cast<const W *>(p.vt), tid);
        cp_async_commit();

        float acc_s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int t = 0; t < NT; ++t)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc_s[mt][t][e] = 0.f;

#pragma unroll
        for (int ks = 0; ks < HD / 32; ++ks) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) ldsm_x4(a[mt], q_lane + mt * 16 * LDQ + ks * 32);
            // F16: a16[mt] = lo/hi halves of a0..a3 (a16[2r] low, a16[2r + 1] high of register r)
            uint32_t a16[MT][F16 ? 8 : 1];
            if constexpr (F16) {
#pragma unroll
                for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                    for (int r = 0; r < 4; ++r) a16[mt][2 * r] = lo16(a[mt][r]), a16[mt][2 * r + 1] = hi16(a[mt][r]);
            }
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                uint32_t bk[4];
                ldsm_x4(bk, k_lane + np * 16 * LDQ + ks * 32);
                if constexpr (F16) {
                    uint32_t b16[8];
#pragma unroll
                    for (int i = 0; i < 4; ++i) b16[2 * i] = lo16(bk[i]), b16[2 * i + 1] = hi16(bk[i]);
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                        for (int j = 0; j < 2; ++j) {
                            mma_f16(acc_s[mt][2 * np + j], a16[mt][0], a16[mt][2], a16[mt][1], a16[mt][3], b16[4 * j],
                                    b16[4 * j + 1]);
                            mma_f16(acc_s[mt][2 * np + j], a16[mt][4], a16[mt][6], a16[mt][5], a16[mt][7],
                                    b16[4 * j + 2], b16[4 * j + 3]);
                        }
                } else {
#pragma unroll
                    for (int mt = 0; mt < MT; ++mt) {
                        mma_e4m3(acc_s[mt][2 * np], a[mt], bk[0], bk[1]);
                        mma_e4m3(acc_s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
                    }
                }
            }
        }

        const bool need_mask = (nb + 1) * BN > seqlen_k ||
                               (p.causal && (nb + 1) * BN - 1 > m_block * BM + causal_off);
        if (need_mask) {
            const int col0 = nb * BN + 2 * (lane & 3);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int row = m_block * BM + warp_row0 + mt * 16 + h * 8 + row_in_tile;
                    const int lim = p.causal ? min(seqlen_k, row + causal_off + 1) : seqlen_k;
#pragma unroll
                    for (int t = 0; t < NT; ++t)
#pragma unroll
                        for (int e = 0; e < 2; ++e)
                            if (col0 + t * 8 + e >= lim) acc_s[mt][t][2 * h + e] = -INFINITY;
                }
        }

        cp_async_wait_all();
        __syncthreads(); // Vᵀ_nb visible; every warp is done reading K_nb
        if (nb > 0) {
            load_tile<BN, HD / 2, LDQ / 2, THREADS>(wK, kg + (int64_t)(nb - 1) * BN * k_ss, k_ss,
                                                    seqlen_k - (nb - 1) * BN, hch, reinterpret_cast<const W *>(p.k),
                                                    tid);
            cp_async_commit();
        }

#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int h = 0; h < 2; ++h) {
                float mx = -INFINITY;
#pragma unroll
                for (int t = 0; t < NT; ++t) mx = fmaxf(mx, fmaxf(acc_s[mt][t][2 * h], acc_s[mt][t][2 * h + 1]));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 1));
                mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, 2));
                const float m_new = fmaxf(m_run[mt][h], mx * sl2);
                const float m_use = m_new == -INFINITY ? 0.f : m_new;
                const float corr = ex2(m_run[mt][h] - m_use);
                m_run[mt][h] = m_new;
                const float bias = p.p_log2_scale - m_use;
                float sum = 0.f;
#pragma unroll
                for (int t = 0; t < NT; ++t)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const float pv = ex2(fmaf(acc_s[mt][t][2 * h + e], sl2, bias));
                        acc_s[mt][t][2 * h + e] = pv;
                        sum += pv;
                    }
                l_run[mt][h] = l_run[mt][h] * corr + sum;
#pragma unroll
                for (int d = 0; d < DT; ++d) {
                    acc_o[mt][d][2 * h] *= corr;
                    acc_o[mt][d][2 * h + 1] *= corr;
                }
            }

        // O += P·V over 32-key steps; the four n-tiles of step kk are packed in Vᵀ's key order.
#pragma unroll
        for (int kk = 0; kk < BN / 32 && F16; ++kk) {
            // P in fp16, A fragments of the two k16 halves: keys (2t.., 8+2t..) then (16+2t.., 24+2t..)
            uint32_t a[MT][2][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int j = 0; j < 2; ++j) {
                    const float(&s0)[4] = acc_s[mt][4 * kk + 2 * j], (&s1)[4] = acc_s[mt][4 * kk + 2 * j + 1];
                    a[mt][j][0] = kiln_flash::Mma<__half>::pack(s0[0], s0[1]);
                    a[mt][j][1] = kiln_flash::Mma<__half>::pack(s0[2], s0[3]);
                    a[mt][j][2] = kiln_flash::Mma<__half>::pack(s1[0], s1[1]);
                    a[mt][j][3] = kiln_flash::Mma<__half>::pack(s1[2], s1[3]);
                }
#pragma unroll
            for (int dp = 0; dp < HD / 16; ++dp) {
                uint32_t bv[4];
                ldsm_x4(bv, v_lane + dp * 16 * LDV + kk * 32);
#pragma unroll
                for (int i = 0; i < 2; ++i) // n-tiles 2dp + i: registers bv[2i] (keys 0-15), bv[2i+1] (16-31)
#pragma unroll
                    for (int j = 0; j < 2; ++j) {
                        const uint32_t b0 = lo16(bv[2 * i + j]), b1 = hi16(bv[2 * i + j]);
#pragma unroll
                        for (int mt = 0; mt < MT; ++mt) kiln_flash::Mma<__half>::run(acc_o[mt][2 * dp + i], a[mt][j], b0, b1);
                    }
            }
        }
#pragma unroll
        for (int kk = 0; kk < BN / 32 && !F16; ++kk) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                const float(&s0)[4] = acc_s[mt][4 * kk], (&s1)[4] = acc_s[mt][4 * kk + 1];
                const float(&s2)[4] = acc_s[mt][4 * kk + 2], (&s3)[4] = acc_s[mt][4 * kk + 3];
                a[mt][0] = pack_e4m3(s0[0], s0[1], s1[0], s1[1]);
                a[mt][1] = pack_e4m3(s0[2], s0[3], s1[2], s1[3]);
                a[mt][2] = pack_e4m3(s2[0], s2[1], s3[0], s3[1]);
                a[mt][3] = pack_e4m3(s2[2], s2[3], s3[2], s3[3]);
            }
#pragma unroll
            for (int dp = 0; dp < HD / 16; ++dp) {
                uint32_t bv[4];
                ldsm_x4(bv, v_lane + dp * 16 * LDV + kk * 32);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    mma_e4m3(acc_o[mt][2 * dp], a[mt], bv[0], bv[1]);
                    mma_e4m3(acc_o[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
                }
            }
        }
    }
    cp_async_wait_all();

    // Epilogue: 4-byte stores straight from the accumulators (a quad covers 16 contiguous bytes).
    const float vs = __ldg(p.v_scale);
    O *og = static_cast<O *>(p.o) + (int64_t)b * p.o_sb + (int64_t)n * p.o_sn;
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float l = l_run[mt][h];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = l > 0.f ? vs / l : 0.f;
            const int row = m_block * BM + warp_row0 + mt * 16 + h * 8 + row_in_tile;
            if (row >= seqlen_q) continue;
            O *dst = og + (int64_t)row * p.o_ss + 2 * (lane & 3);
#pragma unroll
            for (int d = 0; d < DT; ++d)
                if (d * 8 < p.H)
                    *reinterpret_cast<uint32_t *>(dst + d * 8) =
                        Out<O>::pack(acc_o[mt][d][2 * h] * inv, acc_o[mt][d][2 * h + 1] * inv);
        }
}

template <typename O, int HD, int BM, int BN, int NW, bool F16>
__global__ void __launch_bounds__(NW * 32, (Cfg<HD, BM, BN, NW>::MIN_BLOCKS))
    flash_fp8_kernel(const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 890
    __trap(); // e4m3 mma needs sm_89; the dispatcher never launches it below
#else
    flash_fp8_body<O, HD, BM, BN, NW, F16>(p);
#endif
}

template <typename O, int HD, int BM, int BN, int NW, bool F16>
cudaError_t launch_fp8(const Params &p, cudaStream_t stream) {
    using C = Cfg<HD, BM, BN, NW>;
    auto kern = flash_fp8_kernel<O, HD, BM, BN, NW, F16>;
    static bool attr_done = false;
    if (!attr_done) {
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
        if (e != cudaSuccess) return e;
        attr_done = true;
    }
    dim3 grid((p.S + BM - 1) / BM, p.N, p.B);
    kern<<<grid, C::THREADS, C::SMEM, stream>>>(p);
    return cudaGetLastError();
}

struct Variant {
    const char *name;
    int hd, bm, bn, nw;
    cudaError_t (*fp16)(const Params &, cudaStream_t);
    cudaError_t (*bf16)(const Params &, cudaStream_t);
};

#define KILN_FP8_VARIANT(HD, BM, BN, NW)                                                            \
    {#BM "x" #BN "x" #NW "w", HD, BM, BN, NW, &launch_fp8<__half, HD, BM, BN, NW, false>,           \
     &launch_fp8<__nv_bfloat16, HD, BM, BN, NW, false>}
// The same tile multiplying in fp16 (see mma_f16).
#define KILN_FP8_VARIANT_F16(HD, BM, BN, NW)                                                        \
    {#BM "x" #BN "x" #NW "w_f16mma", HD, BM, BN, NW, &launch_fp8<__half, HD, BM, BN, NW, true>,     \
     &launch_fp8<__nv_bfloat16, HD, BM, BN, NW, true>}

// Tile variants per padded head size (gpu/flash_fp8_hd*.cu); out[0] is the default.
int variants_hd64(const Variant **out);
int variants_hd128(const Variant **out);
int variants_hd256(const Variant **out);

} // namespace kiln_fp8
