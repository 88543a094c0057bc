// Hopper (sm_90a) FP8 (e4m3) attention forward on wgmma. sm_90 has no native e4m3 mma.sync
// (flash_fp8.cuh's kernel runs it through the fp16 path); wgmma k32 e4m3 is the native FP8 rate.
//
// Shape: NWG consumer warpgroups × 64 query rows (BM = 64·NWG), every thread also loading tiles
// with cp.async (no producer warpgroup); K and Vᵀ double-buffered. The pipeline, block order,
// masking and register pins are those of flash_fwd_sm90.cuh's cp.async kernel (see there): in
// iteration i, S_i = Q·K_iᵀ and O += P_{i-1}·Vᵀ_{i-1} are issued back to back, the softmax of
// S_i runs while P·V still does.
//
// Operands. 8-bit wgmma has no transpose option: A and B must both be K-major in shared memory.
//   Q·Kᵀ  SS, m64nBNk32: Q (rows × head bytes) and K (keys × head bytes) as they are in memory.
//   P·Vᵀ  RS, m64nHDk32: P from registers, B = Vᵀ (head rows × key bytes), which the prologue of
//         gpu/flash_fp8.cu (fp8_transpose_v) already writes for the mma.sync kernel.
// Shared-memory tiles use the canonical 128-byte swizzle, as the fp16 kernels do: rows of 128
// bytes, 16-byte chunk j of row r stored at chunk j ^ (r & 7), further 128-byte column blocks
// (head bytes 128.. of Q/K, keys 128.. of Vᵀ) in further blocks of R·128 bytes. A 32-byte k step
// of e4m3 is the same 32 bytes as a k16 step of fp16, so the descriptors (start + 32·ks, SBO
// 1024) are the fp16 kernel's. Rows narrower than 128 bytes (head 64, key tile 64) leave the
// rest of the row unused: the swizzle needs whole 128-byte rows.
//
// P fragment (the reason no register moves are needed). The 8-bit A fragment of wgmma m64nNk32
// is per warp the m16n8k32 mma.sync A fragment (CUTLASS ALayout_64x32; PTX ISA "wgmma register
// fragments", matrix A for .e4m3): thread lane of warp w holds row 16w + lane/4 + 8·v1 and k
// 4·(lane%4) + v0 + 16·v2 in byte v0 of register v1 + 2·v2. The Q·Kᵀ accumulator is per warp
// the m16n8 C layout repeated over 8-column n-tiles: s[4j + 2h + e] is row 16w + lane/4 + 8h,
// key 8j + 2·(lane%4) + e. Within a 32-key step the thread thus holds keys {2t, 2t+1, 8+2t, 9+2t}
// (+16) for k positions 4t..4t+3 (+16): the key_at() permutation of flash_fp8.cuh, which the
// prologue has already applied to Vᵀ's keys. So register r = v1 + 2·v2 of step kk packs
// s[16kk + 8·v2 + 2·v1 + {0, 1}] and s[16kk + 8·v2 + 4 + 2·v1 + {0, 1}] (pack_p_e4m3).
// tests/test_attention_fp8_layout.py checks this mapping lane by lane.
//
// Scales as in flash_fp8.cuh: softmax scale · q_scale · k_scale in the exponent, P rounded to e4m3
// as P · 2^p_log2_scale (the bias of the exponent), v_scale and 1/l in the final normalisation.
#pragma once

#include "flash_fp8.cuh"
#include "flash_fwd_sm90.cuh"
#include "wgmma_fp8_ops.cuh"

namespace kiln_fp8 {

template <int HD, int BN, int NWG> struct Sm90Cfg {
    static constexpr int BM = 64 * NWG, THREADS = 128 * NWG;
    static constexpr int QCB = (HD + 127) / 128; // 128-byte column blocks of Q and K rows
    static constexpr int VCB = (BN + 127) / 128; // of Vᵀ rows
    static constexpr int Q_BYTES = BM * 128 * QCB;
    static constexpr int K_BYTES = BN * 128 * QCB; // one stage
    static constexpr int V_BYTES = HD * 128 * VCB; // one stage
    static constexpr int OCB = HD / 64;            // 64-column chunks of O (epilogue tile, 16-bit)
    static constexpr int LOAD_BYTES = Q_BYTES + 2 * K_BYTES + 2 * V_BYTES;
    static constexpr int O_BYTES = BM * 128 * OCB;
    // +1024: align to the swizzle period (the 128-byte swizzle repeats every 8 rows of 128 bytes)
    static constexpr int SMEM = (LOAD_BYTES > O_BYTES ? LOAD_BYTES : O_BYTES) + 1024;
    static_assert(HD == 64 || HD == 128 || HD == 256, "padded head sizes");
    static_assert(BN == 64 || BN == 128, "key tiles with a Q·Kᵀ wrapper");
    static_assert(NWG == 1 || NWG == 2, "one or two consumer warpgroups");
    static_assert(KEY_PAD % BN == 0, "Vᵀ is padded to whole key tiles");
};

template <int BN> __device__ __forceinline__ void mma_qk(float (&s)[BN / 2], uint64_t da, uint64_t db, int scale_d) {
    if constexpr (BN == 64) kiln_sm90::wgmma_ss_e4m3_n64(s, da, db, scale_d);
    else kiln_sm90::wgmma_ss_e4m3_n128(s, da, db, scale_d);
}
template <int HD> __device__ __forceinline__ void mma_pv(float (&o)[HD / 2], const uint32_t (&a)[4], uint64_t db) {
    if constexpr (HD == 64) kiln_sm90::wgmma_rs_e4m3_n64(o, a, db);
    else if constexpr (HD == 128) kiln_sm90::wgmma_rs_e4m3_n128(o, a, db);
    else kiln_sm90::wgmma_rs_e4m3_n256(o, a, db);
}

// Online softmax of one key block for the thread's two rows (h = 0, 1), in the accumulator layout
// s[4j + 2h + e]. As kiln_sm90::softmax_block, except that the exponent carries + p_log2 (P leaves
// scaled by 2^p_log2 for its e4m3 rounding; l sums the same scaled values, so it cancels).
template <int BN>
__device__ __forceinline__ void softmax_fp8(float (&s)[BN / 2], float (&m_run)[2], float (&l_run)[2], float (&corr)[2],
                                            float sl2, float p_log2, bool need_mask, const int (&lim)[2],
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
        const float m_use = m_new == -INFINITY ? 0.f : m_new; // a fully masked row: no NaN from -inf - -inf
        corr[h] = ex2(m_run[h] - m_use);
        m_run[h] = m_new;
        const float bias = p_log2 - m_use;
        float sum = 0.f;
#pragma unroll
        for (int t = 0; t < NT; ++t)
#pragma unroll
            for (int e = 0; e < 2; ++e) {
                const float pv = ex2(fmaf(s[4 * t + 2 * h + e], sl2, bias));
                s[4 * t + 2 * h + e] = pv;
                sum += pv;
            }
        l_run[h] = l_run[h] * corr[h] + sum;
    }
}

// P as e4m3 A fragments of the P·Vᵀ wgmmas, one per 32 keys (see the header comment for the map).
template <int BN> __device__ __forceinline__ void pack_p_e4m3(uint32_t (&pf)[BN / 32][4], const float (&s)[BN / 2]) {
#pragma unroll
    for (int kk = 0; kk < BN / 32; ++kk)
#pragma unroll
        for (int v2 = 0; v2 < 2; ++v2)
#pragma unroll
            for (int v1 = 0; v1 < 2; ++v1) {
                const float *a = &s[16 * kk + 8 * v2 + 2 * v1], *b = a + 4;
                pf[kk][v1 + 2 * v2] = pack_e4m3(a[0], a[1], b[0], b[1]);
            }
}

// Epilogue, first half: O · v_scale / l of the thread's rows r0 and r0 + 8 as 16-bit O into the
// swizzled tile at so (rows of 128 bytes, BM rows per 64-column block).
template <typename O, int OCB, int BM>
__device__ __forceinline__ void stage_o_fp8(unsigned char *so, const float (&o)[OCB][32], const float (&l_run)[2],
                                            float vs, int r0, int col_lane) {
#pragma unroll
    for (int h = 0; h < 2; ++h) {
        float l = l_run[h];
        l += __shfl_xor_sync(0xffffffffu, l, 1);
        l += __shfl_xor_sync(0xffffffffu, l, 2);
        const float inv = l > 0.f ? vs / l : 0.f;
        const int r = r0 + 8 * h;
#pragma unroll
        for (int c = 0; c < OCB; ++c)
#pragma unroll
            for (int t = 0; t < 8; ++t) {
                unsigned char *dst = so + c * (BM * 128) + r * 128 + ((t ^ (r & 7)) << 4) + col_lane * 2;
                *reinterpret_cast<uint32_t *>(dst) = Out<O>::pack(o[c][4 * t + 2 * h] * inv, o[c][4 * t + 2 * h + 1] * inv);
            }
    }
}

// Epilogue, second half: tile rows [r_begin, r_begin + rows) of query block m_block of (b, n), read
// back from the staged tile and written with 16-byte stores by nthreads threads (t: this one).
template <typename O, int HD, int BM>
__device__ __forceinline__ void store_o_fp8(const Params &p, int b, int n, int m_block, const unsigned char *so,
                                            int r_begin, int rows, int t, int nthreads) {
    O *og = static_cast<O *>(p.o) + (int64_t)b * p.o_sb + (int64_t)n * p.o_sn;
    constexpr int CH = HD / 8;
    const int och = p.H / 8;
#pragma unroll 4
    for (int idx = t; idx < rows * CH; idx += nthreads) {
        const int r = r_begin + idx / CH, c = idx % CH;
        const int row = m_block * BM + r;
        if (row < p.S && c < och)
            *reinterpret_cast<uint4 *>(og + (int64_t)row * p.o_ss + c * 8) =
                *reinterpret_cast<const uint4 *>(so + (c >> 3) * (BM * 128) + r * 128 + (((c & 7) ^ (r & 7)) << 4));
    }
}

// sm_90a code runs on compute capability 9.0 only: elsewhere the launch fails instead of trapping.
// state: 0 unchecked, 1 runnable (shared memory attribute set), 2 not on this device.
template <typename K> cudaError_t sm90_ready(K kern, int smem, int &state) {
    if (state == 0) {
        int dev = 0, major = 0, minor = 0;
        cudaError_t e = cudaGetDevice(&dev);
        if (e == cudaSuccess) e = cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, dev);
        if (e == cudaSuccess) e = cudaDeviceGetAttribute(&minor, cudaDevAttrComputeCapabilityMinor, dev);
        if (e != cudaSuccess) return e;
        if (major != 9 || minor != 0) {
            state = 2;
        } else {
            e = cudaFuncSetAttribute(kern, cudaFuncAttributeMaxDynamicSharedMemorySize, smem);
            if (e != cudaSuccess) return e;
            state = 1;
        }
    }
    return state == 2 ? cudaErrorInvalidDeviceFunction : cudaSuccess;
}

template <typename O, int HD, int BN, int NWG>
__device__ __forceinline__ void flash_fp8_sm90_body(const Params &p) {
    using C = Sm90Cfg<HD, BN, NWG>;
    constexpr int BM = C::BM, THREADS = C::THREADS, OCB = C::OCB;
    using kiln_flash::cp_async_wait;
    using kiln_sm90::fence_proxy_async;
    using kiln_sm90::load_sw;
    using kiln_sm90::make_desc;
    using kiln_sm90::wg_commit;
    using kiln_sm90::wg_fence;
    using kiln_sm90::wg_wait;
    extern __shared__ __align__(1024) unsigned char smem_fp8w[];
    const uint32_t raw = smem_u32(smem_fp8w);
    const uint32_t base = (raw + 1023u) & ~1023u;
    unsigned char *smem = smem_fp8w + (base - raw);
    const uint32_t sQ = base, sK = base + C::Q_BYTES, sV = sK + 2 * C::K_BYTES;

    const int tid = threadIdx.x, wg = tid >> 7, wwarp = (tid >> 5) & 3, lane = tid & 31;
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

    // Tiles move as 16-bit elements so that load_sw's 16-byte chunks (8 elements) are 16 bytes;
    // byte strides are even (the blocker takes only 16-byte aligned rows).
    typedef uint16_t W;
    const W *qg = reinterpret_cast<const W *>(p.q + (int64_t)b * p.q_sb + n * p.q_sn + (int64_t)m_block * BM * p.q_ss);
    const W *kg = reinterpret_cast<const W *>(p.k + (int64_t)b * p.k_sb + nk * p.k_sn);
    const W *vg = reinterpret_cast<const W *>(p.vt + (int64_t)b * p.vt_sb + nk * p.vt_sn);
    const W *qfb = reinterpret_cast<const W *>(p.q), *kfb = reinterpret_cast<const W *>(p.k),
            *vfb = reinterpret_cast<const W *>(p.vt);
    const int64_t q_ss = p.q_ss / 2, k_ss = p.k_ss / 2, v_ss = p.tp / 2;
    const int hch = p.H / 16; // 16-byte chunks of a Q/K row that hold data (the rest zero-filled)
    auto blk = [&](int i) { return n_blocks - 1 - i; };
    auto load_k = [&](int i, int st) {
        const int kb = blk(i);
        load_sw<BN, HD / 2, THREADS>(sK + st * C::K_BYTES, kg + (int64_t)kb * BN * k_ss, k_ss, seqlen_k - kb * BN, hch,
                                     kfb, tid);
    };
    // Vᵀ rows are the HD padded head dimensions (the prologue zero-fills those >= H and the keys
    // >= T), so the whole HD × BN tile is read.
    auto load_v = [&](int i, int st) {
        const int kb = blk(i);
        load_sw<HD, BN / 2, THREADS>(sV + st * C::V_BYTES, vg + (int64_t)kb * (BN / 2), v_ss, HD, BN / 16, vfb, tid);
    };

    load_sw<BM, HD / 2, THREADS>(sQ, qg, q_ss, seqlen_q - m_block * BM, hch, qfb, tid);
    if (n_blocks > 0) {
        load_k(0, 0);
        load_v(0, 0);
    }
    cp_async_commit();
    if (n_blocks > 1) load_k(1, 1);
    cp_async_commit();

    float o[OCB][32]; // the m64nHD accumulator, seen as 64-column chunks for rescale/epilogue
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
        softmax_fp8<BN>(s, m_run, l_run, corr, sl2, p_log2, need_mask, lim, col_lane);
    };
    auto pack_p = [&] { pack_p_e4m3<BN>(pf, s); };

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
            __syncthreads(); // ...for every thread; and every warpgroup is done with S_{i-1} (K stage i+1)
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
            kiln_sm90::wg_wait0_after<(HD >= 128)>(l_run[0] + l_run[1]);
            pin_o();
            kiln_sm90::rescale_o<HD>(o, corr);
            pack_p();
            __syncthreads(); // every warpgroup is done with Vᵀ_{i-1}
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

    // Epilogue: O · v_scale / l into a swizzled 16-bit tile over the (now idle) load buffers, then
    // 16-byte coalesced stores.
    cp_async_wait<0>();
    __syncthreads();
    fence_proxy_async();
    const int r0 = wg * 64 + wwarp * 16 + (lane >> 2);
    stage_o_fp8<O, OCB, BM>(smem, o, l_run, __ldg(p.v_scale), r0, col_lane);
    __syncthreads();
    store_o_fp8<O, HD, BM>(p, b, n, m_block, smem, 0, BM, tid, THREADS);
}

template <typename O, int HD, int BN, int NWG, int MINB>
__global__ void __launch_bounds__(128 * NWG, MINB) flash_fp8_sm90_kernel(const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && defined(__CUDA_ARCH_FEAT_SM90_ALL)
    flash_fp8_sm90_body<O, HD, BN, NWG>(p);
#elif defined(__CUDA_ARCH__)
    __trap(); // wgmma exists only in sm_90a code; launch_fp8_sm90 refuses other devices
#endif
}

template <typename O, int HD, int BN, int NWG, int MINB>
cudaError_t launch_fp8_sm90(const Params &p, cudaStream_t stream) {
    using C = Sm90Cfg<HD, BN, NWG>;
    auto kern = flash_fp8_sm90_kernel<O, HD, BN, NWG, MINB>;
    static int state = 0;
    const cudaError_t ready = sm90_ready(kern, C::SMEM, state);
    if (ready != cudaSuccess) return ready;
    dim3 grid((p.S + C::BM - 1) / C::BM, p.N, p.B);
    kern<<<grid, C::THREADS, C::SMEM, stream>>>(p);
    return cudaGetLastError();
}

// Name: "wgmma_", consumer warpgroups, key tile, CTAs per SM the registers are capped for.
#define KILN_FP8_VARIANT_WGMMA(HD, BN, NWG, MINB)                                                   \
    {"wgmma_wg" #NWG "_bn" #BN "_occ" #MINB, HD, 64 * NWG, BN, 4 * NWG,                             \
     &launch_fp8_sm90<__half, HD, BN, NWG, MINB>, &launch_fp8_sm90<__nv_bfloat16, HD, BN, NWG, MINB>}

} // namespace kiln_fp8
