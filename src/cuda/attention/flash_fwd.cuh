// FlashAttention-2 style forward kernel: mma.sync m16n8k16 (fp16/bf16 in, fp32 accumulate),
// ldmatrix from padded shared memory, cp.async loads that overlap the two GEMMs, online softmax
// in the exp2 domain with one division at the end. No S×T matrix ever reaches device memory.
//
// One CTA owns BM query rows of one (batch, head); NW warps each own 16·MT of those rows, so
// no reduction ever crosses warps. Key/value tiles of BN rows stream through one K and one V
// buffer: V_j is fetched while Q·K_jᵀ runs and K_{j-1} while softmax and P·V_j run. Key blocks
// are visited from last to first so the only partially masked blocks (sequence tail, causal
// diagonal) come first and the rest run the unmasked path.
//
// Every input layout arrives as (pointer, batch/head/row strides) with the head dimension
// contiguous, so BSNH, BNSH, BSN3H, BSN2H and cu_seqlens-packed tokens are read in place.
// Head sizes that are not a multiple of the tile's HD (e.g. 40 in HD=48) are zero-filled in
// shared memory: zeros add nothing to q·k, and the padded output columns are never stored.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <stdint.h>

namespace kiln_flash {

struct Params {
    const void *q, *k, *v;
    void *o;
    int64_t q_sb, q_sn, q_ss;
    int64_t k_sb, k_sn, k_ss;
    int64_t v_sb, v_sn, v_ss;
    int64_t o_sb, o_sn, o_ss;
    const int *cu_q, *cu_k; // packed batches (both set) or NULL
    const int *key_lens;    // per-batch key limit or NULL
    int B, N, kv_group;     // kv head = n / kv_group
    int S, T, H;            // H: true head size (multiple of 8)
    float scale_log2;       // scale · log2(e), > 0
    int causal;
    // Additive score term (b, n, s, t) at bias[b*bias_sb + n*bias_sn + s*bias_ss + t] (element type
    // E, a padding mask broadcast with zero strides), or NULL; not with packed batches.
    const void *bias;
    int64_t bias_sb, bias_sn, bias_ss;
    float inv_scale; // 1 / scale: the bias in the units of Q·Kᵀ
};

// Batch b's slice of the views: where its rows start and how many there are (packed batches take
// their cu_seqlens ranges, the others the plain S and T), and kv_limit, the key-length limit
// (key_lens entries <= 0 attend to every key, as the additive-mask path does).
__device__ __forceinline__ int key_limit(const Params &p, int b, int seqlen_k) {
    const int kl = p.key_lens ? p.key_lens[b] : 0;
    return kl > 0 && kl < seqlen_k ? kl : seqlen_k;
}
struct BatchSpan {
    int64_t q_off, k_off, v_off, o_off;
    int seqlen_q, seqlen_k, kv_limit;
};
__device__ __forceinline__ BatchSpan batch_span(const Params &p, int b) {
    BatchSpan s;
    s.q_off = (int64_t)b * p.q_sb, s.k_off = (int64_t)b * p.k_sb, s.v_off = (int64_t)b * p.v_sb;
    s.o_off = (int64_t)b * p.o_sb;
    s.seqlen_q = p.S, s.seqlen_k = p.T;
    if (p.cu_q) {
        const int q0 = p.cu_q[b], k0 = p.cu_k[b];
        s.seqlen_q = p.cu_q[b + 1] - q0;
        s.seqlen_k = p.cu_k[b + 1] - k0;
        s.q_off = q0 * p.q_ss, s.o_off = q0 * p.o_ss;
        s.k_off = k0 * p.k_ss, s.v_off = k0 * p.v_ss;
    }
    s.kv_limit = key_limit(p, b, s.seqlen_k);
    return s;
}

__device__ __forceinline__ uint32_t smem_u32(const void *p) {
    return static_cast<uint32_t>(__cvta_generic_to_shared(p));
}

// Zero-fills the 16 bytes when src_bytes == 0, which is how padded rows and columns get zeros.
__device__ __forceinline__ void cp_async16(uint32_t dst, const void *src, int src_bytes) {
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(dst), "l"(src), "r"(src_bytes)
                 : "memory");
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::: "memory"); }
__device__ __forceinline__ void cp_async_wait_all() { asm volatile("cp.async.wait_group 0;\n" ::: "memory"); }
// Waits until at most N of this thread's committed groups are still in flight.
template <int N> __device__ __forceinline__ void cp_async_wait() {
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
}

__device__ __forceinline__ void ldsm_x4(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}
__device__ __forceinline__ void ldsm_x4_t(uint32_t (&r)[4], uint32_t addr) {
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                 : "r"(addr));
}

__device__ __forceinline__ float to_f32(__half x) { return __half2float(x); }
__device__ __forceinline__ float to_f32(__nv_bfloat16 x) { return __bfloat162float(x); }

template <typename E> struct Mma;
template <> struct Mma<__half> {
    static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.f16.f16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __half2 h = __floats2half2_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};
template <> struct Mma<__nv_bfloat16> {
    static __device__ __forceinline__ void run(float (&c)[4], const uint32_t (&a)[4], uint32_t b0, uint32_t b1) {
        asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
                     "{%8,%9}, {%0,%1,%2,%3};\n"
                     : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                     : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
    }
    static __device__ __forceinline__ uint32_t pack(float lo, float hi) {
        __nv_bfloat162 h = __floats2bfloat162_rn(lo, hi);
        return *reinterpret_cast<uint32_t *>(&h);
    }
};

__device__ __forceinline__ float ex2(float x) {
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;\n" : "=f"(y) : "f"(x));
    return y;
}

__host__ __device__ constexpr int pow2_at_least(int x) { return x <= 1 ? 1 : 2 * pow2_at_least((x + 1) / 2); }

// ROWS × HD tile from global rows g[0..rows_valid) (row stride ss) into shared memory with row
// stride LDS; chunks of 8 elements at or past hch and rows past rows_valid become zeros.
// Each thread keeps one column chunk and walks rows with a single pointer: per-chunk 64-bit
// offsets would otherwise be hoisted out of the key loop and cost dozens of registers.
template <int ROWS, int HD, int LDS, int THREADS, typename E>
__device__ __forceinline__ void load_tile(E *s, const E *g, int64_t ss, int rows_valid, int hch,
                                          const E *fallback, int tid) {
    constexpr int CH = HD / 8;
    constexpr int CHP = pow2_at_least(CH) < THREADS ? pow2_at_least(CH) : THREADS;
    constexpr int RPP = THREADS / CHP; // rows per pass
    constexpr int PASSES = (ROWS + RPP - 1) / RPP;
    static_assert(CHP >= CH, "one pass covers a whole row");
    const int c = tid % CHP, r0 = tid / CHP;
    if (c >= CH) return;
    const bool c_ok = c < hch;
    const E *src = g + r0 * ss + c * 8;
    const int64_t step = RPP * ss;
    const uint32_t dst = smem_u32(s + r0 * LDS + c * 8);
#pragma unroll
    for (int i = 0; i < PASSES; ++i) {
        const int r = r0 + i * RPP;
        if (ROWS % RPP == 0 || r < ROWS) {
            const bool ok = c_ok && r < rows_valid;
            cp_async16(dst + i * RPP * LDS * (int)sizeof(E), ok ? src : fallback, ok ? 16 : 0);
        }
        src += step;
    }
}

template <typename E, int HD, int BM, int BN, int NW> struct Cfg {
    static constexpr int THREADS = NW * 32;
    static constexpr int MT = BM / (16 * NW); // 16-row MMA tiles per warp
    static constexpr int LDS = HD + 8;        // +16 bytes: the 8 row addresses of one ldmatrix
                                              // land in 8 different bank groups
    static constexpr int SMEM = (BM + 2 * BN) * LDS * (int)sizeof(E);
    // Two CTAs per SM when registers allow it: one CTA's barrier stalls are the other's issue
    // slots. 8 warps with one 16-row tile each fit in 128 registers up to HD = 128.
    static constexpr int MIN_BLOCKS = (NW == 4 || HD <= 128) ? 2 : 1;
    static_assert(HD % 16 == 0 && HD <= 256, "HD is a multiple of 16 up to 256");
    static_assert(BM % (16 * NW) == 0 && MT >= 1, "each warp owns whole 16-row tiles");
    static_assert(BN % 16 == 0, "BN is a multiple of 16");
};

template <typename E, int HD, int BM, int BN, int NW>
__device__ __forceinline__ void flash_fwd_body(const Params &p) {
    using C = Cfg<E, HD, BM, BN, NW>;
    constexpr int MT = C::MT, LDS = C::LDS, THREADS = C::THREADS;
    constexpr int NT = BN / 8;  // n-tiles of S per warp row tile
    constexpr int DT = HD / 8;  // n-tiles of O
    extern __shared__ __align__(128) unsigned char smem_raw[];
    E *sQ = reinterpret_cast<E *>(smem_raw);
    E *sK = sQ + BM * LDS;
    E *sV = sK + BN * LDS;

    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31;
    // Reverse order: under causal masking the last query blocks have the most key blocks, and
    // starting them first keeps the tail of the grid short.
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
        const int last_key = (m_block + 1) * BM - 1 + causal_off; // what the block's last row sees
        n_blocks = min(n_blocks, last_key < 0 ? 0 : last_key / BN + 1);
    }

    const E *qg = static_cast<const E *>(p.q) + q_off + n * p.q_sn + (int64_t)m_block * BM * p.q_ss;
    const E *kg = static_cast<const E *>(p.k) + k_off + nk * p.k_sn;
    const E *vg = static_cast<const E *>(p.v) + v_off + nk * p.v_sn;
    const int hch = p.H / 8;

    load_tile<BM, HD, LDS, THREADS>(sQ, qg, p.q_ss, seqlen_q - m_block * BM, hch,
                                    static_cast<const E *>(p.q), tid);
    if (n_blocks > 0) {
        const int nb = n_blocks - 1;
        load_tile<BN, HD, LDS, THREADS>(sK, kg + (int64_t)nb * BN * p.k_ss, p.k_ss, kv_limit - nb * BN, hch,
                                        static_cast<const E *>(p.k), tid);
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

    const int warp_row0 = warp * 16 * MT; // first row of this warp inside the CTA tile
    // ldmatrix lane addresses (see the fragment layouts of mma.m16n8k16):
    //  Q (A operand, row-major): lane supplies row (lane & 15), column half (lane >> 4).
    //  K (B operand of Q·Kᵀ, K rows are B columns): row (lane & 7) + 8·(lane >> 4), column half (lane >> 3) & 1.
    //  V (B operand of P·V via .trans): row (lane & 7) + 8·((lane >> 3) & 1), column half (lane >> 4).
    const uint32_t q_lane = smem_u32(sQ + (warp_row0 + (lane & 15)) * LDS + (lane >> 4) * 8);
    const uint32_t k_lane = smem_u32(sK + ((lane & 7) + ((lane >> 4) << 3)) * LDS + ((lane >> 3) & 1) * 8);
    const uint32_t v_lane = smem_u32(sV + ((lane & 7) + (((lane >> 3) & 1) << 3)) * LDS + (lane >> 4) * 8);
    constexpr uint32_t ES = sizeof(E);
    const float sl2 = p.scale_log2;
    const int row_in_tile = (lane >> 2); // + 8·h + 16·mt + warp_row0

    for (int nb = n_blocks - 1; nb >= 0; --nb) {
        cp_async_wait_all();
        __syncthreads(); // K_nb (and Q) visible; every warp is done reading V of the last block
        load_tile<BN, HD, LDS, THREADS>(sV, vg + (int64_t)nb * BN * p.v_ss, p.v_ss, kv_limit - nb * BN, hch,
                                        static_cast<const E *>(p.v), tid);
        cp_async_commit();

        float acc_s[MT][NT][4];
#pragma unroll
        for (int mt = 0; mt < MT; ++mt)
#pragma unroll
            for (int t = 0; t < NT; ++t)
#pragma unroll
                for (int e = 0; e < 4; ++e) acc_s[mt][t][e] = 0.f;

#pragma unroll
        for (int ks = 0; ks < HD / 16; ++ks) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) ldsm_x4(a[mt], q_lane + (mt * 16 * LDS + ks * 16) * ES);
#pragma unroll
            for (int np = 0; np < NT / 2; ++np) {
                uint32_t bk[4];
                ldsm_x4(bk, k_lane + (np * 16 * LDS + ks * 16) * ES);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    Mma<E>::run(acc_s[mt][2 * np], a[mt], bk[0], bk[1]);
                    Mma<E>::run(acc_s[mt][2 * np + 1], a[mt], bk[2], bk[3]);
                }
            }
        }

        if (p.bias) {
            const E *bias = static_cast<const E *>(p.bias) + (int64_t)b * p.bias_sb + (int64_t)n * p.bias_sn;
            const int col0 = nb * BN + 2 * (lane & 3);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int row = m_block * BM + warp_row0 + mt * 16 + h * 8 + row_in_tile;
                    if (row >= seqlen_q) continue;
                    const E *brow = bias + (int64_t)row * p.bias_ss;
#pragma unroll
                    for (int t = 0; t < NT; ++t)
#pragma unroll
                        for (int e = 0; e < 2; ++e) {
                            const int col = col0 + t * 8 + e;
                            if (col < kv_limit) acc_s[mt][t][2 * h + e] += to_f32(brow[col]) * p.inv_scale;
                        }
                }
        }

        const bool need_mask = (nb + 1) * BN > kv_limit ||
                               (p.causal && (nb + 1) * BN - 1 > m_block * BM + causal_off);
        if (need_mask) {
            const int col0 = nb * BN + 2 * (lane & 3);
#pragma unroll
            for (int mt = 0; mt < MT; ++mt)
#pragma unroll
                for (int h = 0; h < 2; ++h) {
                    const int row = m_block * BM + warp_row0 + mt * 16 + h * 8 + row_in_tile;
                    const int lim = p.causal ? min(kv_limit, row + causal_off + 1) : kv_limit;
#pragma unroll
                    for (int t = 0; t < NT; ++t)
#pragma unroll
                        for (int e = 0; e < 2; ++e)
                            if (col0 + t * 8 + e >= lim) acc_s[mt][t][2 * h + e] = -INFINITY;
                }
        }

        cp_async_wait_all();
        __syncthreads(); // V_nb visible; every warp is done reading K_nb
        if (nb > 0) {
            load_tile<BN, HD, LDS, THREADS>(sK, kg + (int64_t)(nb - 1) * BN * p.k_ss, p.k_ss,
                                            kv_limit - (nb - 1) * BN, hch, static_cast<const E *>(p.k), tid);
            cp_async_commit();
        }

        // Online softmax, rows (mt, h). The four lanes of a quad share a row.
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
                // A row with nothing visible yet keeps max −inf; subtracting 0 instead avoids inf−inf.
                const float m_use = m_new == -INFINITY ? 0.f : m_new;
                const float corr = ex2(m_run[mt][h] - m_use);
                m_run[mt][h] = m_new;
                float sum = 0.f;
#pragma unroll
                for (int t = 0; t < NT; ++t)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const float pv = ex2(fmaf(acc_s[mt][t][2 * h + e], sl2, -m_use));
                        acc_s[mt][t][2 * h + e] = pv;
                        sum += pv;
                    }
                l_run[mt][h] = l_run[mt][h] * corr + sum; // per-lane partial; quad-reduced at the end
#pragma unroll
                for (int d = 0; d < DT; ++d) {
                    acc_o[mt][d][2 * h] *= corr;
                    acc_o[mt][d][2 * h + 1] *= corr;
                }
            }

        // O += P·V: the S accumulator of n-tiles (2kk, 2kk+1) is exactly the A fragment of k-step kk.
#pragma unroll
        for (int kk = 0; kk < BN / 16; ++kk) {
            uint32_t a[MT][4];
#pragma unroll
            for (int mt = 0; mt < MT; ++mt) {
                a[mt][0] = Mma<E>::pack(acc_s[mt][2 * kk][0], acc_s[mt][2 * kk][1]);
                a[mt][1] = Mma<E>::pack(acc_s[mt][2 * kk][2], acc_s[mt][2 * kk][3]);
                a[mt][2] = Mma<E>::pack(acc_s[mt][2 * kk + 1][0], acc_s[mt][2 * kk + 1][1]);
                a[mt][3] = Mma<E>::pack(acc_s[mt][2 * kk + 1][2], acc_s[mt][2 * kk + 1][3]);
            }
#pragma unroll
            for (int dp = 0; dp < HD / 16; ++dp) {
                uint32_t bv[4];
                ldsm_x4_t(bv, v_lane + (kk * 16 * LDS + dp * 16) * ES);
#pragma unroll
                for (int mt = 0; mt < MT; ++mt) {
                    Mma<E>::run(acc_o[mt][2 * dp], a[mt], bv[0], bv[1]);
                    Mma<E>::run(acc_o[mt][2 * dp + 1], a[mt], bv[2], bv[3]);
                }
            }
        }
    }

    // Epilogue: normalise, stage this warp's rows in sQ, then 16-byte coalesced stores.
    cp_async_wait_all();
    __syncthreads();
#pragma unroll
    for (int mt = 0; mt < MT; ++mt)
#pragma unroll
        for (int h = 0; h < 2; ++h) {
            float l = l_run[mt][h];
            l += __shfl_xor_sync(0xffffffffu, l, 1);
            l += __shfl_xor_sync(0xffffffffu, l, 2);
            const float inv = l > 0.f ? 1.f / l : 0.f;
            E *dst = sQ + (warp_row0 + mt * 16 + h * 8 + row_in_tile) * LDS + 2 * (lane & 3);
#pragma unroll
            for (int d = 0; d < DT; ++d)
                *reinterpret_cast<uint32_t *>(dst + d * 8) =
                    Mma<E>::pack(acc_o[mt][d][2 * h] * inv, acc_o[mt][d][2 * h + 1] * inv);
        }
    __syncwarp();
    E *og = static_cast<E *>(p.o) + o_off + n * p.o_sn;
    constexpr int CH = HD / 8, WROWS = 16 * MT;
#pragma unroll
    for (int i = 0; i < (WROWS * CH + 31) / 32; ++i) {
        const int idx = lane + i * 32;
        if ((WROWS * CH) % 32 == 0 || idx < WROWS * CH) {
            const int r = idx / CH, c = idx - r * CH;
            const int row = m_block * BM + warp_row0 + r;
            if (row < seqlen_q && c < hch)
                *reinterpret_cast<uint4 *>(og + (int64_t)row * p.o_ss + c * 8) =
                    *reinterpret_cast<const uint4 *>(sQ + (warp_row0 + r) * LDS + c * 8);
        }
    }
}

template <typename E, int HD, int BM, int BN, int NW>
__global__ void __launch_bounds__(NW * 32, (Cfg<E, HD, BM, BN, NW>::MIN_BLOCKS))
    flash_fwd_kernel(const __grid_constant__ Params p) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ < 800
    __trap(); // cp.async/ldmatrix/bf16 mma need sm_80; the dispatcher never launches it below
#else
    flash_fwd_body<E, HD, BM, BN, NW>(p);
#endif
}

template <typename E, int HD, int BM, int BN, int NW>
cudaError_t launch_flash(const Params &p, cudaStream_t stream) {
    using C = Cfg<E, HD, BM, BN, NW>;
    auto kern = flash_fwd_kernel<E, HD, BM, BN, NW>;
    // Above 48 KB a kernel must opt in; asking every launch costs ~1 µs, so once per instantiation.
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

// One tile configuration, as the dispatcher sees it.
struct Variant {
    const char *name;
    int hd, bm, bn, nw;
    cudaError_t (*fp16)(const Params &, cudaStream_t);
    cudaError_t (*bf16)(const Params &, cudaStream_t);
};

#define KILN_FLASH_VARIANT(HD, BM, BN, NW)                                                          \
    {#BM "x" #BN "x" #NW "w", HD, BM, BN, NW, &launch_flash<__half, HD, BM, BN, NW>,                \
     &launch_flash<__nv_bfloat16, HD, BM, BN, NW>}

// Tile variants compiled for one padded head size, defined in flash_fwd_hd*.cu (split so that
// a parallel build compiles them side by side). Returns the count; out[0] is the tuned default.
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

} // namespace kiln_flash
