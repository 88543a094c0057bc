// Split-KV decode attention (flash-decoding) for a few query rows against a long key/value cache.
//
// Decoding is bandwidth-bound: every key/value row is read once and used by only G·S query rows
// (G = query heads per KV head, S = query length), so the FlashAttention tiles (64-128 query rows
// per CTA, one CTA per (b, head)) leave most SMs idle when B·N is small and waste their MMA rows.
// Here one CTA owns one KV head of one batch and up to M of the G·S query rows that read it (all
// of them for the usual G·S <= 8, so the shared KV head is read once), over one contiguous slice
// of the keys. Slices ("splits") are chosen so the grid fills the SMs at the kernel's occupancy
// (plan_decode); each writes unnormalised fp32 partial output with its running max and sum, and
// a combine kernel rescales and adds them. With one split the CTA writes the output itself.
//
// Inside a CTA, key tiles of TK = 1024/L rows stream through registers: L lanes (L = H/8 rounded
// up to 8, 16 or 32) each hold 16 bytes of a key row, so a tile is 8 16-byte loads per thread for
// K and 8 for V, both issued before any arithmetic so that plenty of bytes are in flight. Scores
// are dot products reduced across the L lanes with shuffles (group_reduce), in the exp2 domain
// (Q is pre-scaled by scale·log2 e), masked per row (key length, causal diagonal aligned
// bottom-right as in flash_fwd.cuh), and turned into probabilities in shared memory by one warp per row.
#include "../attention_decode.cuh"
#include "../attention_internal.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdio.h>

namespace {

using kiln_decode::DecodeArgs;
using kiln_decode::split_fn;

constexpr int THREADS = 128;
constexpr int MAX_SPLITS = 256; // slices of one unit in the split plan
constexpr int MAX_PARTS = 2048; // combine keeps one weight per partial result in shared memory
constexpr int MIN_KEYS_PER_SPLIT = 256;
// From this many query rows per KV head on, the tensor-core kernel (attention_decode_mma.cu):
// the CUDA-core kernel's 2·R·H FMAs per key outrun the CUDA cores there. Measured on an H100
// (bench/attention/decode_ab.sh, 51 shapes, fp16 and bf16): from 3 rows the tensor-core kernel
// took 0.14-0.72x the time; at 1 or 2 rows the two were within about ±10% (hd64 favouring the
// CUDA cores), so those stay on the kernel without padding rows.
constexpr int MMA_MIN_ROWS = 3;

__device__ __forceinline__ void unpack8(const uint4 &u, float *f, __half) {
    const __half2 *h = reinterpret_cast<const __half2 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float2 t = __half22float2(h[i]);
        f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ void unpack8(const uint4 &u, float *f, __nv_bfloat16) {
    const __nv_bfloat162 *h = reinterpret_cast<const __nv_bfloat162 *>(&u);
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        float2 t = __bfloat1622float2(h[i]);
        f[2 * i] = t.x, f[2 * i + 1] = t.y;
    }
}
__device__ __forceinline__ float load1(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float load1(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ void store1(__half *p, float v) { *p = __float2half_rn(v); }
__device__ __forceinline__ void store1(__nv_bfloat16 *p, float v) { *p = __float2bfloat16_rn(v); }

// Streaming loads: the cache is read once per step, keep it out of L1.
__device__ __forceinline__ uint4 ld_stream(const void *p) {
    uint4 r;
    asm volatile("ld.global.nc.L1::no_allocate.v4.u32 {%0,%1,%2,%3}, [%4];\n"
                 : "=r"(r.x), "=r"(r.y), "=r"(r.z), "=r"(r.w)
                 : "l"(p));
    return r;
}

// Sums each of d[0..M) over the L lanes of a lane group (L >= M, both powers of two) with M − 1 +
// log2(L / M) shuffles instead of M·log2(L): each exchange step halves the values a lane holds,
// keeping one half and sending the other to its partner. On return d[0] is the full sum of row
// `row`; the L / M lanes that share c / (L / M) share the row.
template <int L, int M> __device__ __forceinline__ float group_reduce(float (&d)[M], int c, int &row) {
    row = 0;
#pragma unroll
    for (int cnt = M, off = L / 2; cnt > 1; cnt >>= 1, off >>= 1) {
        const bool up = (c & off) != 0;
#pragma unroll
        for (int i = 0; i < cnt / 2; ++i) {
            const float send = up ? d[i] : d[i + cnt / 2];
            const float keep = up ? d[i + cnt / 2] : d[i];
            d[i] = keep + __shfl_xor_sync(0xffffffffu, send, off);
        }
        if (up) row += cnt / 2;
    }
#pragma unroll
    for (int off = L / M / 2; off > 0; off >>= 1) d[0] += __shfl_xor_sync(0xffffffffu, d[0], off);
    return d[0];
}

template <typename E, int L, int M> __global__ void __launch_bounds__(THREADS) decode_split(const DecodeArgs a) {
    constexpr int KG = THREADS / L;  // key groups: threads that share a column chunk
    constexpr int J = 8;             // keys per thread per tile
    constexpr int TK = KG * J;       // keys per tile
    constexpr int HP = L * 8;        // padded head size
    const kiln_flash::Params &p = a.p;
    const int rg = blockIdx.x % a.rowgroups, sp = blockIdx.x / a.rowgroups;
    const int kvh = blockIdx.y, b = blockIdx.z;
    const int S = p.S, G = p.kv_group, R = G * S;
    const int tid = threadIdx.x, c = tid % L, kg = tid / L;
    const int hvec = p.H / 8;
    const bool cact = c < hvec;

    __shared__ __align__(16) float sq[M][HP]; // query rows, pre-scaled, zero-padded
    __shared__ float sp_[M][TK];              // scores, then probabilities
    __shared__ float s_m[M], s_l[M], s_alpha[M];
    __shared__ int s_lim[M];
    __shared__ const E *s_bias[M]; // the row's additive scores over the keys, or NULL
    __shared__ __align__(16) float red[KG][HP]; // cross-key-group reduction of the output

    const int kv_limit = kiln_flash::key_limit(p, b, p.T);
    const int causal_off = p.T - S;
    int maxlim = 0;
    for (int m = 0; m < M; ++m) {
        const int r = rg * M + m;
        int lim = 0;
        if (r < R) {
            const int s = r % S;
            lim = p.causal ? min(kv_limit, s + causal_off + 1) : kv_limit;
            if (lim < 0) lim = 0;
        }
        maxlim = max(maxlim, lim);
        if (tid == 0) {
            s_lim[m] = lim, s_m[m] = -INFINITY, s_l[m] = 0.f;
            s_bias[m] = p.bias && r < R ? static_cast<const E *>(p.bias) + (int64_t)b * p.bias_sb +
                                              (int64_t)(kvh * G + r / S) * p.bias_sn + (int64_t)(r % S) * p.bias_ss
                                        : nullptr;
        }
    }
    const E *qg = static_cast<const E *>(p.q) + (int64_t)b * p.q_sb;
    for (int i = tid; i < M * HP; i += THREADS) {
        const int m = i / HP, h = i % HP, r = rg * M + m;
        float v = 0.f;
        if (r < R && h < p.H) {
            const int n = kvh * G + r / S, s = r % S;
            v = load1(qg + (int64_t)n * p.q_sn + (int64_t)s * p.q_ss + h) * p.scale_log2;
        }
        sq[m][h] = v;
    }
    __syncthreads();

    const int k_begin = sp * a.chunk;
    const int k_end = min(k_begin + a.chunk, maxlim);
    const E *kgp = static_cast<const E *>(p.k) + (int64_t)b * p.k_sb + (int64_t)kvh * p.k_sn + c * 8;
    const E *vgp = static_cast<const E *>(p.v) + (int64_t)b * p.v_sb + (int64_t)kvh * p.v_sn + c * 8;

    float acc[M][8];
#pragma unroll
    for (int m = 0; m < M; ++m)
#pragma unroll
        for (int e = 0; e < 8; ++e) acc[m][e] = 0.f;

    for (int t0 = k_begin; t0 < k_end; t0 += TK) {
        uint4 kr[J], vr[J];
#pragma unroll
        for (int j = 0; j < J; ++j) {
            const int key = t0 + kg + j * KG;
            const bool ok = cact && key < k_end;
            kr[j] = ok ? ld_stream(kgp + (int64_t)key * p.k_ss) : make_uint4(0, 0, 0, 0);
        }
#pragma unroll
        for (int j = 0; j < J; ++j) {
            const int key = t0 + kg + j * KG;
            const bool ok = cact && key < k_end;
            vr[j] = ok ? ld_stream(vgp + (int64_t)key * p.v_ss) : make_uint4(0, 0, 0, 0);
        }
        // Scores.
#pragma unroll
        for (int j = 0; j < J; ++j) {
            float kf[8];
            unpack8(kr[j], kf, E());
            const int kidx = kg + j * KG, key = t0 + kidx;
            float dots[M];
#pragma unroll
            for (int m = 0; m < M; ++m) {
                const float4 q0 = *reinterpret_cast<const float4 *>(&sq[m][c * 8]);
                const float4 q1 = *reinterpret_cast<const float4 *>(&sq[m][c * 8 + 4]);
                dots[m] = q0.x * kf[0] + q0.y * kf[1] + q0.z * kf[2] + q0.w * kf[3] + q1.x * kf[4] + q1.y * kf[5] +
                          q1.z * kf[6] + q1.w * kf[7];
            }
            int row;
            const float d = group_reduce<L, M>(dots, c, row);
            if (c % (L / M) == 0) {
                const bool vis = key < k_end && key < s_lim[row];
                // Scores are in log2 units here (Q carries scale·log2 e), so the bias takes log2 e.
                const float bias = vis && s_bias[row] ? load1(s_bias[row] + key) * 1.4426950408889634f : 0.f;
                sp_[row][kidx] = vis ? d + bias : -INFINITY;
            }
        }
        __syncthreads();
        // Online softmax over the tile, one warp per row.
        for (int m = tid / 32; m < M; m += THREADS / 32) {
            const int lane = tid & 31;
            float mx = -INFINITY;
            for (int k = lane; k < TK; k += 32) mx = fmaxf(mx, sp_[m][k]);
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
            const float m_old = s_m[m], m_new = fmaxf(m_old, mx);
            float sum = 0.f;
            for (int k = lane; k < TK; k += 32) {
                const float x = sp_[m][k];
                const float pr = x == -INFINITY ? 0.f : exp2f(x - m_new);
                sp_[m][k] = pr;
                sum += pr;
            }
#pragma unroll
            for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
            __syncwarp();
            if (lane == 0) {
                // m_old = -inf: nothing accumulated yet (acc is zero), any finite factor works.
                const float alpha = m_old == -INFINITY ? 0.f : exp2f(m_old - m_new);
                s_alpha[m] = alpha;
                s_l[m] = s_l[m] * alpha + sum;
                s_m[m] = m_new;
            }
        }
        __syncthreads();
        // Output accumulation.
#pragma unroll
        for (int m = 0; m < M; ++m) {
            const float al = s_alpha[m];
#pragma unroll
            for (int e = 0; e < 8; ++e) acc[m][e] *= al;
        }
#pragma unroll
        for (int j = 0; j < J; ++j) {
            float vf[8];
            unpack8(vr[j], vf, E());
            const int kidx = kg + j * KG;
#pragma unroll
            for (int m = 0; m < M; ++m) {
                const float pr = sp_[m][kidx];
#pragma unroll
                for (int e = 0; e < 8; ++e) acc[m][e] += pr * vf[e];
            }
        }
        __syncthreads(); // sp_ and s_alpha are rewritten by the next tile
    }

    // Sum the key groups' partial outputs row by row and write.
    const bool direct = a.splits == 1;
#pragma unroll
    for (int m = 0; m < M; ++m) {
#pragma unroll
        for (int e = 0; e < 8; ++e) red[kg][c * 8 + e] = acc[m][e];
        __syncthreads();
        const int r = rg * M + m;
        if (r < R) {
            const int n = kvh * G + r / S, s = r % S;
            const int64_t row = ((int64_t)b * p.N + n) * S + s;
            const float l = s_l[m];
            for (int h = tid; h < p.H; h += THREADS) {
                float o = 0.f;
#pragma unroll
                for (int g = 0; g < KG; ++g) o += red[g][h];
                if (direct) {
                    // A row that sees no key is written as zeros (l == 0).
                    E *og = static_cast<E *>(p.o) + (int64_t)b * p.o_sb + (int64_t)n * p.o_sn + (int64_t)s * p.o_ss;
                    store1(og + h, l > 0.f ? o / l : 0.f);
                } else {
                    a.part_o[(row * a.splits + sp) * p.H + h] = o;
                }
            }
            if (!direct && tid == 0) {
                a.part_ml[(row * a.splits + sp) * 2] = s_m[m];
                a.part_ml[(row * a.splits + sp) * 2 + 1] = l;
            }
        }
        __syncthreads();
    }
}

// One CTA per output row: weights w_i = exp2(m_i − max m), out = Σ w_i·O_i / Σ w_i·l_i.
template <typename E> __global__ void __launch_bounds__(THREADS) decode_combine(const DecodeArgs a) {
    const kiln_flash::Params &p = a.p;
    const int64_t row = blockIdx.x;
    const int s = (int)(row % p.S);
    const int64_t bn = row / p.S;
    const int n = (int)(bn % p.N), b = (int)(bn / p.N);
    const int tid = threadIdx.x;
    int ns = a.splits; // this row's partial results, at a stride of a.splits
    if (a.streamk) {
        const int G = p.kv_group, r = (n % G) * p.S + s;
        ns = kiln_decode::stream_parts(a, ((int64_t)b * (p.N / G) + n / G) * a.rowgroups + r / kiln_decode::MMA_ROWS);
    }
    __shared__ float w[MAX_PARTS];
    __shared__ float red[THREADS / 32];
    __shared__ float4 red4[THREADS];
    __shared__ float s_max, s_sum;
    const float *ml = a.part_ml + row * a.splits * 2;

    float mx = -INFINITY;
    for (int i = tid; i < ns; i += THREADS)
        if (ml[2 * i + 1] > 0.f) mx = fmaxf(mx, ml[2 * i]);
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) mx = fmaxf(mx, __shfl_xor_sync(0xffffffffu, mx, off));
    if ((tid & 31) == 0) red[tid / 32] = mx;
    __syncthreads();
    if (tid == 0) {
        float v = red[0];
        for (int i = 1; i < THREADS / 32; ++i) v = fmaxf(v, red[i]);
        s_max = v;
    }
    __syncthreads();
    const float gmax = s_max;
    float sum = 0.f;
    for (int i = tid; i < ns; i += THREADS) {
        const float l = ml[2 * i + 1];
        const float wi = l > 0.f ? exp2f(ml[2 * i] - gmax) : 0.f;
        w[i] = wi;
        sum += wi * l;
    }
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) sum += __shfl_xor_sync(0xffffffffu, sum, off);
    __syncthreads(); // red is reused
    if ((tid & 31) == 0) red[tid / 32] = sum;
    __syncthreads();
    if (tid == 0) {
        float v = 0.f;
        for (int i = 0; i < THREADS / 32; ++i) v += red[i];
        s_sum = v;
    }
    __syncthreads();
    const float total = s_sum, inv = total > 0.f ? 1.f / total : 0.f;
    // Threads as groups of H / 4 lanes, each lane four columns, each group every groups-th partial
    // result, so many partials are read with many loads in flight; then the groups are summed in a
    // fixed order.
    const float *po = a.part_o + row * a.splits * p.H;
    const int lanes = p.H / 4, groups = THREADS / lanes; // H % 8 == 0 and H <= 256: lanes <= 64
    const int c4 = tid % lanes, grp = tid / lanes;
    float4 acc = make_float4(0.f, 0.f, 0.f, 0.f);
    if (grp < groups)
        for (int i = grp; i < ns; i += groups) {
            const float4 v = *reinterpret_cast<const float4 *>(po + (int64_t)i * p.H + 4 * c4);
            const float wi = w[i];
            acc.x += wi * v.x, acc.y += wi * v.y, acc.z += wi * v.z, acc.w += wi * v.w;
        }
    red4[tid] = acc;
    __syncthreads();
    if (tid < lanes) {
        float4 o = red4[tid];
        for (int g = 1; g < groups; ++g) {
            const float4 v = red4[g * lanes + tid];
            o.x += v.x, o.y += v.y, o.z += v.z, o.w += v.w;
        }
        E *og = static_cast<E *>(p.o) + (int64_t)b * p.o_sb + (int64_t)n * p.o_sn + (int64_t)s * p.o_ss + 4 * tid;
        store1(og, o.x * inv), store1(og + 1, o.y * inv), store1(og + 2, o.z * inv), store1(og + 3, o.w * inv);
    }
}

template <typename E> split_fn pick(int L, int M) {
#define KILN_DECODE_CASE(LL, MM)                                                                                     \
    if (L == LL && M == MM) return decode_split<E, LL, MM>;
#define KILN_DECODE_L(LL) KILN_DECODE_CASE(LL, 1) KILN_DECODE_CASE(LL, 2) KILN_DECODE_CASE(LL, 4) KILN_DECODE_CASE(LL, 8)
    KILN_DECODE_L(8)
    KILN_DECODE_L(16)
    KILN_DECODE_L(32)
#undef KILN_DECODE_L
#undef KILN_DECODE_CASE
    return nullptr;
}

int lanes_for(int H) { return H <= 64 ? 8 : H <= 128 ? 16 : 32; }
int rows_for(int R) { return R <= 1 ? 1 : R <= 2 ? 2 : R <= 4 ? 4 : 8; }

struct Plan {
    bool mma;         // the tensor-core kernel; else the CUDA-core one with L lanes and M rows
    int L, M, rowgroups, splits, chunk;
    bool streamk;     // the tensor-core kernel's stream-K share-out (splits: partials per row)
    int ctas, rounds_per_unit, parts_per_cta;
    int64_t total_rounds;
    int threads, smem; // launch shape
    split_fn fn;
    size_t ws_bytes;
};

// Blocks per SM of each CUDA-core instantiation, asked once (benign race: every thread gets the same).
int occupancy(split_fn fn, int idx) {
    static int cache[2 * 3 * 4];
    if (!cache[idx]) {
        int n = 0;
        if (cudaOccupancyMaxActiveBlocksPerMultiprocessor(&n, fn, THREADS, 0) != cudaSuccess || n < 1) {
            cudaGetLastError();
            n = 1;
        }
        cache[idx] = n;
    }
    return cache[idx];
}

int ceil_div(int64_t a, int64_t b) { return (int)((a + b - 1) / b); }

// Which kernel: KILN_DECODE_KERNEL=simt|mma forces one (A/B runs and the tests of each);
// otherwise the tensor cores from MMA_MIN_ROWS rows per KV head, where the device has them.
bool want_mma(const kiln_cuda_provider *prov, int R) {
    const kiln_attn_env *env = kiln_attn_env_get();
    if (env->decode_kernel == 1) return false;
    if (kiln_cuda_info(prov)->cc_major < 8) return false;
    return env->decode_kernel == 2 || R >= MMA_MIN_ROWS;
}

// Splits: enough CTAs to fill every SM at the kernel's occupancy (the target), given the
// B·N_kv·row-group CTAs there are without splitting, choosing the count whose last wave is
// fullest; none when those CTAs already come within 80 % of the target; no slice shorter than
// min_keys keys (the partial output and the combine pass then stay small next to the K/V
// bytes) and at most MAX_SPLITS.
int choose_splits(int64_t base, int64_t target, int T, int min_keys) {
    int max_splits = ceil_div(T, min_keys);
    if (max_splits > MAX_SPLITS) max_splits = MAX_SPLITS;
    if (base * 5 >= target * 4 || max_splits <= 1) return 1;
    // Wave efficiency (CTAs / slots filled in the last wave) of each count; the smallest count
    // within 85 % of the best, since every split adds partial output and combine work.
    float best = 0.f;
    for (int s = 1; s <= max_splits; ++s) {
        const double w = (double)base * s / target;
        const float eff = (float)(w / ceil(w));
        if (eff > best) best = eff;
    }
    for (int s = 1; s <= max_splits; ++s) {
        const double w = (double)base * s / target;
        if ((float)(w / ceil(w)) >= 0.85f * best) return s;
    }
    return 1;
}

// The tensor-core kernel shares its work out stream-K where the split plan's ctas CTAs leave SM
// slots idle in their last wave (wave efficiency under 0.95): few units (batch x KV heads) whose
// slices do not divide into the SMs, as in single-sequence decoding. Measured on an H100 against
// the split plan (bench/attention/decode_streamk.sh, 2026-12-07, 51 decode layouts): at wave
// efficiency 0.36-0.91 (15 layouts) stream-K took 0.76-1.11x the split plan's time, 0.95x
// geomean (1 x 2048 keys, 32/8 heads: 19.7 -> 15.0 us; 1 x 4096: 20.1 -> 17.3); with full waves
// (efficiency 0.97) it took 0.90-1.15x, so those keep the split plan.
// KILN_DECODE_STREAMK=0|1 forces one (A/B runs and the tests of each).
bool want_streamk(int64_t ctas, int64_t target) {
    const int s = kiln_attn_env_get()->decode_streamk;
    if (s >= 0) return s != 0;
    const int64_t waves = (ctas + target - 1) / target;
    return (double)ctas < 0.95 * (double)(waves * target);
}

// Stream-K: target CTAs (one per SM slot) share units · rounds_per_unit rounds evenly. Each unit
// then has a partial result per warp of every CTA that touches it: at most ceil(rounds per unit /
// shortest share) + 1 CTAs. False where that passes what the combine pass holds.
bool plan_streamk(Plan *pl, int64_t units, int64_t target, int warps) {
    const int64_t total = units * pl->rounds_per_unit;
    const int64_t ctas = target < total ? target : total;
    if (ctas < 1 || ctas > 0x7fffffff) return false;
    const int64_t shortest = total / ctas;
    const int64_t parts = ((pl->rounds_per_unit + shortest - 1) / shortest + 1) * warps;
    if (parts > MAX_PARTS) return false;
    pl->streamk = true;
    pl->ctas = (int)ctas;
    pl->total_rounds = total;
    pl->parts_per_cta = warps;
    pl->splits = (int)parts;
    pl->chunk = 0;
    return true;
}

bool plan_decode(const kiln_cuda_provider *prov, const kiln_cuda_sdpa *d, Plan *pl) {
    const int nkv = d->N_kv ? d->N_kv : d->N;
    const int G = d->N / nkv, R = G * d->S;
    const bool bf = d->dtype == KILN_DTYPE_BFLOAT16;
    const int T = d->T > 0 ? d->T : 1;
    const int sms = kiln_cuda_info(prov)->sm_count;
    int64_t target;
    int tile; // keys the CTA takes per step: slices are whole multiples of it
    pl->mma = pl->streamk = false;
    pl->ctas = pl->rounds_per_unit = pl->parts_per_cta = 0;
    pl->total_rounds = 0;
    if (want_mma(prov, R)) {
        const kiln_decode::MmaKernel k = kiln_decode::mma_kernel(d->H, bf);
        if (k.fn) {
            pl->mma = true;
            pl->fn = k.fn;
            pl->threads = k.threads, pl->smem = k.smem_bytes;
            pl->L = pl->M = 0;
            pl->rowgroups = ceil_div(R, kiln_decode::MMA_ROWS);
            target = (int64_t)sms * k.blocks_per_sm;
            tile = k.keys_per_round;
        }
    }
    if (!pl->mma) {
        pl->L = lanes_for(d->H);
        pl->M = rows_for(R);
        pl->rowgroups = ceil_div(R, pl->M);
        pl->fn = bf ? pick<__nv_bfloat16>(pl->L, pl->M) : pick<__half>(pl->L, pl->M);
        if (!pl->fn) return false;
        pl->threads = THREADS, pl->smem = 0;
        const int li = pl->L == 8 ? 0 : pl->L == 16 ? 1 : 2, mi = pl->M == 1 ? 0 : pl->M == 2 ? 1 : pl->M == 4 ? 2 : 3;
        target = (int64_t)sms * occupancy(pl->fn, (bf ? 12 : 0) + li * 4 + mi);
        tile = (THREADS / pl->L) * 8;
    }
    const int64_t base = (int64_t)d->B * nkv * pl->rowgroups;
    const int64_t rows = (int64_t)d->B * d->N * d->S;
    if (pl->mma) {
        pl->rounds_per_unit = ceil_div(T, tile);
        if (base * pl->rounds_per_unit > 0x7fffffff) return false; // the kernel counts rounds in int
    }
    // The CUDA-core kernel's row groups each re-read the slice, so their slices grow with them.
    const int min_keys = pl->mma ? (tile > MIN_KEYS_PER_SPLIT ? tile : MIN_KEYS_PER_SPLIT)
                                 : MIN_KEYS_PER_SPLIT * pl->rowgroups;
    const int splits = choose_splits(base, target, T, min_keys);
    // Whole tiles per slice, then drop slices that would start past the end.
    pl->chunk = ceil_div(ceil_div(T, splits), tile) * tile;
    pl->splits = ceil_div(T, pl->chunk);
    if (pl->mma && want_streamk(base * pl->splits, target) && plan_streamk(pl, base, target, pl->threads / 32)) {
        pl->ws_bytes = (size_t)rows * pl->splits * (d->H + 2) * sizeof(float);
        return true;
    }
    if ((int64_t)pl->splits * pl->rowgroups > 0x7fffffff) return false;
    pl->ws_bytes = pl->splits > 1 ? (size_t)rows * pl->splits * (d->H + 2) * sizeof(float) : 0;
    return true;
}

} // namespace

extern "C" const char *kiln_cuda_decode_blocker(const kiln_cuda_sdpa *d) {
    const int nkv = d->N_kv ? d->N_kv : d->N;
    if (d->S > KILN_DECODE_MAX_S) return "query length above the decode kernel's";
    if (nkv <= 0 || d->N % nkv) return "head counts";
    if ((int64_t)(d->N / nkv) * d->S > 64) return "more than 64 query rows per KV head";
    if (d->cu_seqlens_q || d->cu_seqlens_k) return "packed batches";
    if (d->H != d->Hv || d->H % 8 || d->H > 256) return "head size";
    if (d->dtype != KILN_DTYPE_FLOAT16 && d->dtype != KILN_DTYPE_BFLOAT16) return "dtype";
    return "";
}

extern "C" size_t kiln_cuda_decode_workspace(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d) {
    Plan pl;
    return plan_decode(p, d, &pl) ? pl.ws_bytes : 0;
}

extern "C" int kiln_cuda_decode_splits(const kiln_cuda_provider *p, const kiln_cuda_sdpa *d, int *kind) {
    Plan pl;
    const bool ok = plan_decode(p, d, &pl);
    if (kind) *kind = !ok ? 0 : pl.streamk ? 2 : pl.mma ? 1 : 0;
    return !ok ? 0 : pl.streamk ? pl.ctas : pl.splits;
}

kiln_status kiln_cuda_run_decode(kiln_cuda_provider *prov, const kiln_cuda_sdpa *d, const kiln_flash::Params &fp,
                                 const char *name) {
    Plan pl;
    if (!plan_decode(prov, d, &pl)) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "%s: no plan for this shape", name);
    DecodeArgs a;
    a.p = fp;
    a.splits = pl.splits;
    a.chunk = pl.chunk;
    a.rowgroups = pl.rowgroups;
    a.streamk = pl.streamk;
    a.rounds_per_unit = pl.rounds_per_unit;
    a.ctas = pl.ctas;
    a.parts_per_cta = pl.parts_per_cta;
    a.total_rounds = pl.total_rounds;
    a.part_o = a.part_ml = nullptr;
    if (pl.splits > 1) {
        void *ws;
        kiln_status st = kiln_cuda_workspace(prov, pl.ws_bytes, &ws);
        if (st != KILN_OK) return st;
        const size_t rows = (size_t)d->B * d->N * d->S;
        a.part_o = static_cast<float *>(ws);
        a.part_ml = a.part_o + rows * pl.splits * d->H;
    }
    const int nkv = d->N_kv ? d->N_kv : d->N;
    cudaStream_t stream = (cudaStream_t)kiln_cuda_stream(prov);
    const dim3 grid = pl.streamk ? dim3((unsigned)pl.ctas)
                                 : dim3((unsigned)(pl.splits * pl.rowgroups), (unsigned)nkv, (unsigned)d->B);
    pl.fn<<<grid, pl.threads, pl.smem, stream>>>(a);
    kiln_status st = kiln_cuda_check(cudaGetLastError(), name);
    if (st != KILN_OK || pl.splits == 1) return st;
    const int64_t rows = (int64_t)d->B * d->N * d->S;
    if (rows > 0x7fffffff) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "%s: too many rows", name);
    if (d->dtype == KILN_DTYPE_BFLOAT16)
        decode_combine<__nv_bfloat16><<<(unsigned)rows, THREADS, 0, stream>>>(a);
    else
        decode_combine<__half><<<(unsigned)rows, THREADS, 0, stream>>>(a);
    return kiln_cuda_check(cudaGetLastError(), "decode_combine");
}
