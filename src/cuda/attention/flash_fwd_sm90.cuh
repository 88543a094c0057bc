// Hopper (sm_90a) flash attention forward on wgmma.
//
// CTA = NWG (2 or 3) warpgroups × 64 query rows (BM = 64·NWG). Q, K and V tiles sit in shared memory in the
// canonical 128-byte-swizzled layout that wgmma descriptors read directly: rows of 128 bytes
// (64 elements), 16-byte chunk j of row r stored at chunk j ^ (r & 7), head dimensions beyond 64
// in further column blocks. Q·Kᵀ reads both operands from shared memory (K-major); P·V takes P
// from registers (the S accumulator layout is the A-fragment layout for 16-bit types) and V as a
// transposed (MN-major) operand, so V is never transposed in memory.
//
// Per warpgroup, iteration i overlaps the tensor cores with the softmax (FA3's intra-warpgroup
// pipelining): issue S_i = Q·K_iᵀ and O += P_{i-1}·V_{i-1} back to back, wait for S_i only, run
// the softmax of S_i while P·V still runs, then wait for P·V and rescale O. K_{i+1} is loaded
// (cp.async, all threads) during iteration i, V_{i+1} once P·V_{i-1} has freed its buffer; with
// P·V lagging one block behind, V gets a full iteration of slack too. Two stages each for K and V.
//
// Masking, key lengths, packed batches, strides and the reversed block order are those of the
// mma.sync kernel (flash_fwd.cuh); see there.
#pragma once

#include "flash_fwd.cuh"
#include "wgmma_ops.cuh"

#include <type_traits>

namespace kiln_sm90 {

using kiln_flash::BatchSpan;
using kiln_flash::Params;
using kiln_flash::batch_span;
using kiln_flash::cp_async16;
using kiln_flash::cp_async_commit;
using kiln_flash::cp_async_wait;
using kiln_flash::ex2;
using kiln_flash::pow2_at_least;
using kiln_flash::smem_u32;
__device__ __forceinline__ void wg_fence() { asm volatile("wgmma.fence.sync.aligned;\n" ::: "memory"); }
__device__ __forceinline__ void wg_commit() { asm volatile("wgmma.commit_group.sync.aligned;\n" ::: "memory"); }
template <int N> __device__ __forceinline__ void wg_wait() {
    asm volatile("wgmma.wait_group.sync.aligned %0;\n" ::"n"(N) : "memory");
}
// cp.async writes through the generic proxy; wgmma reads through the async proxy.
// The P·V wait after the softmax. ptxas takes wgmma.wait_group for a cheap instruction and
// schedules it early to fill a latency gap, before the exponentials (seen in the SASS,
// 2026-11-25): the softmax then runs after P·V instead of beside it. With PIN a branch on dep (the
// row sums, produced by the last exponential) keeps the wait after them; both sides wait, their
// asm text differs so the front end cannot merge them back above the branch. Measured (A/B on the
// H100, 2026-11-25): +2% at head size 128 and 160, -3..-7% at 32..64 (the ping-pong of the
// other warpgroup already hides the softmax there), so kernels pin from 128 up.
template <bool PIN> __device__ __forceinline__ void wg_wait0_after(float dep) {
    if constexpr (PIN) {
        if (!(dep < 0.f)) asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
        else asm volatile("wgmma.wait_group.sync.aligned 0; // dep < 0\n" ::: "memory");
    } else {
        (void)dep;
        asm volatile("wgmma.wait_group.sync.aligned 0;\n" ::: "memory");
    }
}
__device__ __forceinline__ void fence_proxy_async() { asm volatile("fence.proxy.async.shared::cta;\n" ::: "memory"); }
// Pins a register between asm statements so the compiler cannot move reads of an accumulator
// above the wgmma.wait that makes it valid.
__device__ __forceinline__ void pin(float &r) { asm volatile("" : "+f"(r)::"memory"); }

// Shared-memory matrix descriptor, 128-byte swizzle. Addresses and offsets in bytes.
__device__ __forceinline__ uint64_t make_desc(uint32_t addr, uint32_t lbo, uint32_t sbo) {
    return (uint64_t)((addr & 0x3FFFF) >> 4) | ((uint64_t)((lbo >> 4) & 0x3FFF) << 16) |
           ((uint64_t)((sbo >> 4) & 0x3FFF) << 32) | (1ull << 62);
}

template <typename E, int N>
__device__ __forceinline__ void mma_ss(float (&d)[N / 2], uint64_t da, uint64_t db, int scale_d) {
    static_assert(N == 64 || N == 80 || N == 96 || N == 112 || N == 128 || N == 176, "Q·Kᵀ tile widths with a wrapper");
    if constexpr (std::is_same<E, __half>::value) {
        if constexpr (N == 64) wgmma_ss_f16_n64(d, da, db, scale_d);
        else if constexpr (N == 80) wgmma_ss_f16_n80(d, da, db, scale_d);
        else if constexpr (N == 96) wgmma_ss_f16_n96(d, da, db, scale_d);
        else if constexpr (N == 112) wgmma_ss_f16_n112(d, da, db, scale_d);
        else if constexpr (N == 128) wgmma_ss_f16_n128(d, da, db, scale_d);
        else wgmma_ss_f16_n176(d, da, db, scale_d);
    } else {
        if constexpr (N == 64) wgmma_ss_bf16_n64(d, da, db, scale_d);
        else if constexpr (N == 80) wgmma_ss_bf16_n80(d, da, db, scale_d);
        else if constexpr (N == 96) wgmma_ss_bf16_n96(d, da, db, scale_d);
        else if constexpr (N == 112) wgmma_ss_bf16_n112(d, da, db, scale_d);
        else if constexpr (N == 128) wgmma_ss_bf16_n128(d, da, db, scale_d);
        else wgmma_ss_bf16_n176(d, da, db, scale_d);
    }
}

// P·V over a whole 128-wide head in one instruction (B spans two 64-column blocks, LBO apart).
template <typename E> __device__ __forceinline__ void mma_rs_w128(float (&d)[64], const uint32_t (&a)[4], uint64_t db) {
    if constexpr (std::is_same<E, __half>::value) wgmma_rs_f16_w128(d, a, db);
    else wgmma_rs_bf16_w128(d, a, db);
}

// The same over a head of HD = 96, 128, 192 or 256 (wide_pv), the accumulator being the o[CB][32]
// chunks seen as one array: the columns of chunk c are those of the wide accumulator's floats
// 32c.., so no register moves. One instruction per 16 keys instead of CB, P sent once.
template <int HD> __host__ __device__ constexpr bool wide_pv() { return HD == 96 || HD == 128 || HD == 192 || HD == 256; }
template <typename E, int HD>
__device__ __forceinline__ void mma_rs_wide(float (&d)[HD / 2], const uint32_t (&a)[4], uint64_t db) {
    static_assert(wide_pv<HD>(), "head sizes with a wide P·V wrapper");
    if constexpr (HD == 128) mma_rs_w128<E>(d, a, db);
    else if constexpr (std::is_same<E, __half>::value) {
        if constexpr (HD == 96) wgmma_rs_f16_w96(d, a, db);
        else if constexpr (HD == 192) wgmma_rs_f16_w192(d, a, db);
        else wgmma_rs_f16_w256(d, a, db);
    } else {
        if constexpr (HD == 96) wgmma_rs_bf16_w96(d, a, db);
        else if constexpr (HD == 192) wgmma_rs_bf16_w192(d, a, db);
        else wgmma_rs_bf16_w256(d, a, db);
    }
}

template <typename E, int N>
__device__ __forceinline__ void mma_rs(float (&d)[32], const uint32_t (&a)[4], uint64_t db) {
    if constexpr (std::is_same<E, __half>::value) {
        if constexpr (N == 16) wgmma_rs_f16_n16(d, a, db);
        else if constexpr (N == 32) wgmma_rs_f16_n32(d, a, db);
        else if constexpr (N == 48) wgmma_rs_f16_n48(d, a, db);
        else wgmma_rs_f16_n64(d, a, db);
    } else {
        if constexpr (N == 16) wgmma_rs_bf16_n16(d, a, db);
        else if constexpr (N == 32) wgmma_rs_bf16_n32(d, a, db);
        else if constexpr (N == 48) wgmma_rs_bf16_n48(d, a, db);
        else wgmma_rs_bf16_n64(d, a, db);
    }
}

template <typename E, int HD, int BN, int MINB, int NWG> struct Cfg {
    static constexpr int BM = 64 * NWG, THREADS = 128 * NWG;
    static constexpr int CB = (HD + 63) / 64;     // 64-element column blocks (also P·V output chunks)
    static constexpr int Q_BYTES = BM * 128 * CB;
    static constexpr int KV_BYTES = BN * 128 * CB; // one stage of K or of V
    static constexpr int SMEM = Q_BYTES + 4 * KV_BYTES + 1024; // +1024: align to the swizzle period
    static_assert(HD % 16 == 0 && HD <= 256, "HD is a multiple of 16 up to 256");
    static_assert(BN == 64 || BN == 128, "Q·Kᵀ is one m64nBNk16 wgmma per 16 head dims");
    static_assert(NWG == 2 || NWG == 3, "two or three consumer warpgroups");
};

// One key block of the online softmax, for the two rows (h = 0, 1) a thread holds in the wgmma
// accumulator layout (s[4t + 2h + e]: n-tile t, column 2·(lane&3) + e). With need_mask, columns
// from lim[h] on (relative to the block's first key) become -inf. Updates the running max and sum,
// leaves the exponentials in s and the factor for the older accumulator in corr. (Four partial
// maxima and sums, to shorten the dependent chains, measured no faster: 2026-11-25 A/B.)
template <int BN>
__device__ __forceinline__ void softmax_block(float (&s)[BN / 2], float (&m_run)[2], float (&l_run)[2],
                                              float (&corr)[2], float sl2, bool need_mask, const int (&lim)[2],
                                              int col_lane) {
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
        float sum = 0.f;
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float pv = ex2(fmaf(s[4 * t + 2 * h + e], sl2, -m_use));
                s[4 * t + 2 * h + e] = pv;
                sum += pv;
            }
        l_run[h] = l_run[h] * corr[h] + sum;
    }
}

// Width of P·V output chunk c (one wgmma each): 64 except the last.
template <int HD> __host__ __device__ constexpr int chunk_n(int c) { return HD - 64 * c < 64 ? HD - 64 * c : 64; }

// O += P·V for one key block: one wgmma per 16 keys and 64-column chunk of the head (the last
// chunk narrower when HD is not a multiple of 64). sv: the V stage (BN rows per column block).
template <typename E, int HD, int BN, int CB>
__device__ __forceinline__ void issue_pv_chunks(float (&o)[CB][32], const uint32_t (&pf)[BN / 16][4], uint32_t sv) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
        for (int c = 0; c < CB; ++c) {
            const uint64_t db = make_desc(sv + c * (BN * 128) + kk * (16 * 128), BN * 128, 1024);
            if (c < CB - 1) mma_rs<E, 64>(o[c], pf[kk], db);
            else mma_rs<E, chunk_n<HD>(CB - 1)>(o[c], pf[kk], db);
        }
}

// Register pins (see pin) for a whole accumulator: the S tile, and the used columns of O.
template <int N> __device__ __forceinline__ void pin_all(float (&a)[N]) {
#pragma unroll
    for (int i = 0; i < N; ++i) pin(a[i]);
}
template <int HD, int CB> __device__ __forceinline__ void pin_acc(float (&o)[CB][32]) {
#pragma unroll
    for (int c = 0; c < CB; ++c)
#pragma unroll
        for (int i = 0; i < 32; ++i)
            if (c * 64 + (i >> 2) * 8 < HD) pin(o[c][i]);
}

// The additive bias (b, n, row, key) of the thread's rows row0 and row0 + 8 over key block kb,
// added to the raw scores in the units of Q·Kᵀ as flash_fwd.cuh adds it. Keys at or past kv_limit
// are left alone (the mask takes them) and rows at or past seqlen_q read nothing. The values are
// read from global memory where the scores wait; the CTA's rows share them, so after the first
// warp they come from L1. Only the kernels instantiated with BIAS call it: a run-time branch in
// the one kernel cost about 3% on shapes without a bias (H100, 24 sweep rows).
template <typename E, int BN>
__device__ __forceinline__ void add_bias(float (&s)[BN / 2], const Params &p, int b, int n, int kb, int kv_limit,
                                         int row0, int seqlen_q, int col_lane) {
    constexpr int NT = BN / 8;
    const E *base = static_cast<const E *>(p.bias) + (int64_t)b * p.bias_sb + (int64_t)n * p.bias_sn;
    const int col0 = kb * BN + col_lane;
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        const int row = row0 + 8 * h;
        if (row >= seqlen_q) continue;
        const E *brow = base + (int64_t)row * p.bias_ss;
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const int col = col0 + t * 8 + e;
                if (col < kv_limit) s[4 * t + 2 * h + e] += kiln_flash::to_f32(brow[col]) * p.inv_scale;
            }
    }
}

// softmax_block for key block kb of query block m_block: masks keys at or past kv_limit and, when
// causal, past each row's diagonal (row0: the thread's first row; causal_off = T - S).
template <int BM, int BN>
__device__ __forceinline__ void softmax_key_block(float (&s)[BN / 2], float (&m_run)[2], float (&l_run)[2],
                                                  float (&corr)[2], float sl2, int causal, int kb, int kv_limit,
                                                  int m_block, int row0, int causal_off, int col_lane) {
    const bool need_mask = (kb + 1) * BN > kv_limit || (causal && (kb + 1) * BN - 1 > m_block * BM + causal_off);
    int lim[2];
#pragma unroll
    for (int h = 0; h < 2; ++h) lim[h] = (causal ? min(kv_limit, row0 + 8 * h + causal_off + 1) : kv_limit) - kb * BN;
    softmax_block<BN>(s, m_run, l_run, corr, sl2, need_mask, lim, col_lane);
}

// P (the exponentials in s) as the A fragments of the P·V wgmmas, 16 keys each.
template <typename E, int BN>
__device__ __forceinline__ void pack_p_frag(uint32_t (&pf)[BN / 16][4], const float (&s)[BN / 2]) {
#pragma unroll
    for (int kk = 0; kk < BN / 16; ++kk)
#pragma unroll
        for (int r = 0; r < 4; ++r) pf[kk][r] = kiln_flash::Mma<E>::pack(s[8 * kk + 2 * r], s[8 * kk + 2 * r + 1]);
}

// O *= corr per row (the online softmax's correction after the running max moved). From head size
// 128 up it is skipped when no row of the warp moved: corr is then exactly 1 (ex2(0)), so skipping
// is exact, and after the first key blocks a new maximum is rare. Below that the vote and branch
// cost more than the multiplies (measured: -8% at H=32 and H=40, 2026-11-25).
template <int HD, int CB> __device__ __forceinline__ void rescale_o(float (&o)[CB][32], const float (&corr)[2]) {
    if constexpr (HD >= 128)
        if (!__any_sync(0xffffffffu, corr[0] != 1.f || corr[1] != 1.f)) return;
#pragma unroll
    for (int c = 0; c < CB; ++c)
#pragma unroll
        for (int t = 0; t < 8; ++t)
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (c * 64 + t * 8 < HD) o[c][4 * t + e] *= corr[e >> 1];
}

// Epilogue: O / l (the row sums, completed over the quad) as E into the swizzled tile at so (rows
// of 128 bytes, BM rows per 64-column block), the layout the 16-byte store loops read back. r0 is
// the first of the thread's two rows (r0 and r0 + 8).
template <typename E, int HD, int BM, int CB>
__device__ __forceinline__ void stage_o(unsigned char *so, const float (&o)[CB][32], const float (&l_run)[2], int r0,
                                        int col_lane) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float l = l_run[h];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = l > 0.f ? 1.f / l : 0.f;
        const int r = r0 + 8 * h;
#pragma unroll
        for (int c = 0; c < CB; ++c)
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                if (c * 64 + t * 8 >= HD) continue;
                unsigned char *dst = so + c * (BM * 128) + r * 128 + ((t ^ (r & 7)) << 4) + col_lane * 2;
                *reinterpret_cast<uint32_t *>(dst) =
                    kiln_flash::Mma<E>::pack(o[c][4 * t + 2 * h] * inv, o[c][4 * t + 2 * h + 1] * inv);
            }
    }
}


// R × HD tile into the swizzled layout at s (R rows per column block). Rows past rows_valid and
// chunks past hch are zero-filled.
template <int R, int HD, int THREADS, typename E>
__device__ __forceinline__ void load_sw(uint32_t s, const E *g, int64_t ss, int rows_valid, int hch, const E *fb,
                                        int tid) {
    constexpr int CH = HD / 8;
    constexpr int CHP = pow2_at_least(CH);
    constexpr int RPP = THREADS / CHP; // a multiple of 8, so (r & 7) and with it the swizzle is fixed per thread
    constexpr int PASSES = (R + RPP - 1) / RPP;
    static_assert(RPP % 8 == 0, "rows per pass keep the swizzle phase");
    const int c = tid % CHP, r0 = tid / CHP;
    if (c >= CH) return;
    const bool c_ok = c < hch;
    const uint32_t dst = s + (c >> 3) * (R * 128) + r0 * 128 + (((c & 7) ^ (r0 & 7)) << 4);
    const E *src = g + r0 * ss + c * 8;
    const int64_t step = RPP * ss;
#pragma unroll
    for (int i = 0; i < PASSES; ++i) {
        const int r = r0 + i * RPP;
        if (R % RPP == 0 || r < R) {
            const bool ok = c_ok && r < rows_valid;
            cp_async16(dst + i * RPP * 128, ok ? src : fb, ok ? 16 : 0);
        }
        src += step;
    }
}

template <typename E, int HD, int BN, int MINB, int NWG, bool BIAS>
__device__ __forceinline__ void flash_sm90_body(const Params &p) {
    using C = Cfg<E, HD, BN, MINB, NWG>;
    constexpr int BM = C::BM, CB = C::CB, THREADS = C::THREADS;
    extern __shared__ __align__(1024) unsigned char smem_raw[];
    const uint32_t raw = smem_u32(smem_raw);
    const uint32_t base = (raw + 1023u) & ~1023u;
    unsigned char *smem = smem_raw + (base - raw);
    const uint32_t sQ = base, sK = base + C::Q_BYTES, sV = sK + 2 * C::KV_BYTES;

    const int tid = threadIdx.x, wg = tid >> 7, wwarp = (tid >> 5) & 3, lane = tid & 31;
    const int m_block = gridDim.x - 1 - blockIdx.x;
    const int n = blockIdx.y, b = blockIdx.z;
    const int nk = n / p.kv_group;

    const BatchSpan span = batch_span(p, b);
    const int64_t q_off = span.q_off, k_off = span.k_off, v_off = span.v_off, o_off = span.o_off;
    const int seqlen_q = span.seqlen_q, seqlen_k = span.seqlen_k, kv_limit = span.kv_limit;
    if (m_block * BM >= seqlen_q) return;
    const int causal_off = seqlen_k - seqlen_q;
    int n_blocks = (kv_limit + BN - 1) / BN;
    if (p.causal) {
        const int last_key = (m_block + 1) * BM - 1 + causal_off;
        n_blocks = min(n_blocks, last_key < 0 ? 0 : last_key / BN + 1);
    }

    const E *qg = static_cast<const E *>(p.q) + q_off + n * p.q_sn + (int64_t)m_block * BM * p.q_ss;
    const E *kg = static_cast<const E *>(p.k) + k_off + nk * p.k_sn;
    const E *vg = static_cast<const E *>(p.v) + v_off + nk * p.v_sn;
    const E *qfb = static_cast<const E *>(p.q), *kfb = static_cast<const E *>(p.k), *vfb = static_cast<const E *>(p.v);
    const int hch = p.H / 8;
    // Key block visited at step i (last block first).
    auto blk = [&](int i) { return n_blocks - 1 - i; };
    auto load_k = [&](int i, int st) {
        const int kb = blk(i);
        load_sw<BN, HD, THREADS>(sK + st * C::KV_BYTES, kg + (int64_t)kb * BN * p.k_ss, p.k_ss, kv_limit - kb * BN, hch, kfb, tid);
    };
    auto load_v = [&](int i, int st) {
        const int kb = blk(i);
        load_sw<BN, HD, THREADS>(sV + st * C::KV_BYTES, vg + (int64_t)kb * BN * p.v_ss, p.v_ss, kv_limit - kb * BN, hch, vfb, tid);
    };

    load_sw<BM, HD, THREADS>(sQ, qg, p.q_ss, seqlen_q - m_block * BM, hch, qfb, tid);
    if (n_blocks > 0) {
        load_k(0, 0);
        load_v(0, 0);
    }
    cp_async_commit();
    if (n_blocks > 1) load_k(1, 1);
    cp_async_commit();

    float o[CB][32];
#pragma unroll
    for (int c = 0; c < CB; ++c)
#pragma unroll
        for (int i = 0; i < 32; ++i) o[c][i] = 0.f;
    float s[BN / 2];
    uint32_t pf[BN / 16][4];
    float m_run[2] = {-INFINITY, -INFINITY}, l_run[2] = {0.f, 0.f};
    const float sl2 = p.scale_log2;
    const int row0 = m_block * BM + wg * 64 + wwarp * 16 + (lane >> 2); // + 8h
    const int col_lane = 2 * (lane & 3);

    auto issue_qk = [&](int st) {
#pragma unroll
        for (int ks = 0; ks < HD / 16; ++ks) {
            const uint64_t da = make_desc(sQ + (ks >> 2) * (BM * 128) + wg * (64 * 128) + (ks & 3) * 32, 16, 1024);
            const uint64_t db = make_desc(sK + st * C::KV_BYTES + (ks >> 2) * (BN * 128) + (ks & 3) * 32, 16, 1024);
            mma_ss<E, BN>(s, da, db, ks > 0 ? 1 : 0);
        }
    };
    auto issue_pv = [&](int st) { issue_pv_chunks<E, HD, BN>(o, pf, sV + st * C::KV_BYTES); };
    auto pin_s = [&] { pin_all(s); };
    auto pin_o = [&] { pin_acc<HD>(o); };
    // Masks block i's scores, updates the running max/sum, leaves exp'd scores in s and returns
    // the factor the older accumulator must be scaled by.
    auto softmax = [&](int i, float (&corr)[2]) {
        if constexpr (BIAS) add_bias<E, BN>(s, p, b, n, blk(i), kv_limit, row0, seqlen_q, col_lane);
        softmax_key_block<BM, BN>(s, m_run, l_run, corr, sl2, p.causal, blk(i), kv_limit, m_block, row0, causal_off,
                                  col_lane);
    };
    auto pack_p = [&] { pack_p_frag<E, BN>(pf, s); };

    if (n_blocks > 0) {
        float corr[2];
        cp_async_wait<1>();
        fence_proxy_async();
        __syncthreads();
        wg_fence();
        issue_qk(0);
        wg_commit();
        wg_wait<0>();
        pin_s();
        softmax(0, corr);
        pack_p();
        if (n_blocks > 1) load_v(1, 1);
        cp_async_commit();
        for (int i = 1; i < n_blocks; ++i) {
            cp_async_wait<1>(); // everything but V_i: K_i and V_{i-1} are in
            fence_proxy_async();
            __syncthreads();    // ...for every thread; and every warpgroup is done with S_{i-1} (K stage i+1)
            if (i + 1 < n_blocks) load_k(i + 1, (i + 1) & 1);
            cp_async_commit();
            wg_fence();
            issue_qk(i & 1);
            wg_commit();
            issue_pv((i - 1) & 1);
            wg_commit();
            wg_wait<1>();
            pin_s();
            softmax(i, corr);
            wg_wait0_after<(HD >= 128)>(l_run[0] + l_run[1]);
            pin_o();
            rescale_o<HD>(o, corr);
            pack_p();
            __syncthreads(); // every warpgroup is done with V_{i-1}
            if (i + 1 < n_blocks) load_v(i + 1, (i + 1) & 1);
            cp_async_commit();
        }
        cp_async_wait<0>();
        fence_proxy_async();
        __syncthreads();
        wg_fence();
        issue_pv((n_blocks - 1) & 1);
        wg_commit();
        wg_wait<0>();
        pin_o();
    }

    // Epilogue: normalise, stage in the Q tile's (swizzled) bytes, 16-byte coalesced stores.
    cp_async_wait<0>();
    __syncthreads();
    fence_proxy_async();
    stage_o<E, HD, BM>(smem, o, l_run, wg * 64 + wwarp * 16 + (lane >> 2), col_lane);
    __syncthreads();
    E *og = static_cast<E *>(p.o) + o_off + n * p.o_sn;
    constexpr int CH = HD / 8;
#pragma unroll 4
    for (int idx = tid; idx < BM * CH; idx += C::THREADS) {
        const int r = idx / CH, c = idx - r * CH;
        const int row = m_block * BM + r;
        if (row < seqlen_q && c < hch)
            *reinterpret_cast<uint4 *>(og + (int64_t)row * p.o_ss + c * 8) = *reinterpret_cast<const uint4 *>(
                smem + (c >> 3) * (BM * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4));
    }
}

template <typename E, int HD, int BN, int MINB, int NWG, bool BIAS>
__global__ void __launch_bounds__(128 * NWG, MINB) flash_sm90_kernel(const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    flash_sm90_body<E, HD, BN, MINB, NWG, BIAS>(p);
#elif defined(__CUDA_ARCH__)
    __trap(); // wgmma exists only in sm_90a code; the dispatcher checks the image before launching
#endif
}

template <typename E, int HD, int BN, int MINB, int NWG>
cudaError_t launch_sm90(const Params &p, cudaStream_t stream) {
    using C = Cfg<E, HD, BN, MINB, NWG>;
    auto kern = p.bias ? flash_sm90_kernel<E, HD, BN, MINB, NWG, true> : flash_sm90_kernel<E, HD, BN, MINB, NWG, false>;
    static bool attr_done[2] = {false, false};
    if (!attr_done[p.bias != nullptr]) {
        cudaError_t e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, C::SMEM);
        if (e != cudaSuccess) return e;
        attr_done[p.bias != nullptr] = true;
    }
    dim3 grid((p.S + C::BM - 1) / C::BM, p.N, p.B);
    kern<<<grid, C::THREADS, C::SMEM, stream>>>(p);
    return cudaGetLastError();
}

struct Variant {
    const char *name;
    int hd, bn, minb;
    cudaError_t (*fp16)(const Params &, cudaStream_t);
    cudaError_t (*bf16)(const Params &, cudaStream_t);
    const void *probe; // the fp16 kernel, to ask the runtime whether an sm_90a image is loaded
};

// Name: warpgroups, key tile, CTAs per SM the registers are capped for.
#define KILN_SM90_VARIANT(HD, BN, MINB, NWG)                                                        \
    {"wg" #NWG "_bn" #BN "_occ" #MINB, HD, BN, MINB, &launch_sm90<__half, HD, BN, MINB, NWG>,       \
     &launch_sm90<__nv_bfloat16, HD, BN, MINB, NWG>,                                               \
     (const void *)&flash_sm90_kernel<__half, HD, BN, MINB, NWG, false>}

// TMA-fed, warp-specialised kernel (flash_fwd_sm90_tma.cuh), declared only: its instantiations
// live in gpu/flash_sm90_tma_*.cu so the variant lists do not compile it again.
template <typename E, int HD, int BN, int MINB, int NWG, bool PP, bool PERSIST>
cudaError_t launch_sm90_tma(const Params &p, cudaStream_t stream);
template <typename E, int HD, int BN, int MINB, int NWG, bool PP, bool PERSIST> const void *tma_probe();
#define KILN_SM90_TMA_VARIANT_X(NAME, HD, BN, MINB, NWG, PP, PERSIST)                                    \
    {NAME, HD, BN, MINB, &launch_sm90_tma<__half, HD, BN, MINB, NWG, PP, PERSIST>,                      \
     &launch_sm90_tma<__nv_bfloat16, HD, BN, MINB, NWG, PP, PERSIST>,                                   \
     tma_probe<__half, HD, BN, MINB, NWG, PP, PERSIST>()}
// Name: "tma_", then as above, "_pp" with ping-pong of the two consumer warpgroups.
#define KILN_SM90_TMA_VARIANT(HD, BN, MINB, PP, SUFFIX)                                             \
    KILN_SM90_TMA_VARIANT_X("tma_wg2_bn" #BN "_occ" #MINB SUFFIX, HD, BN, MINB, 2, PP, false)
// The same with NWG consumer warpgroups (BM = 64 * NWG); 3 is the BM 192 tile.
#define KILN_SM90_TMA_VARIANT_WG(HD, BN, MINB, NWG, PP, SUFFIX)                                     \
    KILN_SM90_TMA_VARIANT_X("tma_wg" #NWG "_bn" #BN "_occ" #MINB SUFFIX, HD, BN, MINB, NWG, PP, false)
// Persistent CTAs (one per SM, striding over the tiles; "_persist"), one CTA per SM.
#define KILN_SM90_TMA_VARIANT_PERSIST(HD, BN, NWG, PP, SUFFIX)                                      \
    KILN_SM90_TMA_VARIANT_X("tma_wg" #NWG "_bn" #BN "_persist" SUFFIX, HD, BN, 1, NWG, PP, true)

int variants_hd16(const Variant **out);
int variants_hd32(const Variant **out);
int variants_hd48(const Variant **out);
int variants_hd64(const Variant **out);
int variants_hd80(const Variant **out);
int variants_hd96(const Variant **out);
int variants_hd128(const Variant **out);
int variants_hd160(const Variant **out);
int variants_hd192(const Variant **out);
int variants_hd256(const Variant **out);

} // namespace kiln_sm90
