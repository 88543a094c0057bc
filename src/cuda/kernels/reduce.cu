/* Reductions on the GPU (see reduce.h for the semantics).
 *
 * Plan, on the host, from the shape alone: drop size-1 dims and merge runs of adjacent reduced /
 * kept dims. Then
 *   - nothing reduced (r = 1)        -> one elementwise pass (y = op of one element);
 *   - one reduced run [outer, r, 1]  -> row kernel: a warp per row (short rows) or a block per row;
 *   - one reduced run [outer, r, inner > 1] -> column kernel: 32 neighbouring columns per block,
 *     its 8 (or fewer) thread rows splitting r, so loads stay coalesced;
 *   - reduced runs separated by kept ones -> general kernel: a block per output (or a thread per
 *     output when outputs are many) walking the reduced index space through its strides.
 * When rows / columns are too few to fill the GPU and long, r is cut into chunks reduced by
 * separate blocks into workspace partials that a last kernel merges. Each reduction is an
 * accumulator type with init / add / merge / fin (the ops below), so every kernel serves every
 * kind; the accumulators merge associatively, so chunking and tree combines change only rounding. */
#include "norm_reduce_util.cuh"
#include "reduce.h"

#include <limits.h>
#include <type_traits>

namespace {

/* ---- loading and storing ---- */

__device__ __forceinline__ float ld(const float *p) { return *p; }
__device__ __forceinline__ float ld(const __half *p) { return __half2float(*p); }
__device__ __forceinline__ float ld(const __nv_bfloat16 *p) { return __bfloat162float(*p); }
__device__ __forceinline__ long long ld(const int32_t *p) { return *p; }
__device__ __forceinline__ long long ld(const int64_t *p) { return (long long)*p; }

template <typename TO> __device__ __forceinline__ void put(TO *p, float v) { *p = nr::from_f<TO>(v); }
template <typename TO> __device__ __forceinline__ void put(TO *p, long long v) { *p = (TO)v; }

/* ---- the reductions: A accumulator, O result; add takes the element's index along r ---- */

struct FSum {
    typedef float A;
    typedef float O;
    __device__ static A init() { return 0.0f; }
    __device__ static A add(A a, float v, long long) { return a + v; }
    __device__ static A merge(A a, A b) { return a + b; }
    __device__ static O fin(A a, long long) { return a; }
};
struct FMean : FSum {
    __device__ static O fin(A a, long long r) { return a / (float)r; }
};
struct FLogSum : FSum {
    __device__ static O fin(A a, long long) { return logf(a); }
};
struct FL1 : FSum {
    __device__ static A add(A a, float v, long long) { return a + fabsf(v); }
};
struct FSumSq : FSum {
    __device__ static A add(A a, float v, long long) { return a + v * v; }
};
struct FL2 : FSumSq {
    __device__ static O fin(A a, long long) { return sqrtf(a); }
};
struct FProd : FSum {
    __device__ static A init() { return 1.0f; }
    __device__ static A add(A a, float v, long long) { return a * v; }
    __device__ static A merge(A a, A b) { return a * b; }
};
/* NaN wins (the CPU's GT_OR_NAN / LT_OR_NAN) */
struct FMax : FSum {
    __device__ static A init() { return -INFINITY; }
    __device__ static A merge(A a, A b) { return (b > a || b != b) ? b : a; }
    __device__ static A add(A a, float v, long long) { return merge(a, v); }
};
struct FMin : FSum {
    __device__ static A init() { return INFINITY; }
    __device__ static A merge(A a, A b) { return (b < a || b != b) ? b : a; }
    __device__ static A add(A a, float v, long long) { return merge(a, v); }
};

/* log-sum-exp as a running (max, sum of exp(x - max)); a NaN max is sticky, and a max that is not
 * finite is the result (CPU: max + log(sum) only for a finite max) */
struct MaxSum {
    float m, s;
};
struct FLse {
    typedef MaxSum A;
    typedef float O;
    __device__ static A init() { return MaxSum{-INFINITY, 0.0f}; }
    __device__ static A add(A a, float v, long long) {
        if (a.m != a.m) return a;
        if (v != v) return MaxSum{v, 0.0f};
        if (v > a.m) {
            a.s = a.s * expf(a.m - v) + 1.0f;
            a.m = v;
        } else if (v != -INFINITY) {
            a.s += expf(v - a.m);
        }
        return a;
    }
    __device__ static A merge(A a, A b) {
        if (a.m != a.m || b.m == -INFINITY) return a;
        if (b.m != b.m || a.m == -INFINITY) return b;
        const float m = fmaxf(a.m, b.m);
        return MaxSum{m, a.s * expf(a.m - m) + b.s * expf(b.m - m)};
    }
    __device__ static O fin(A a, long long) {
        if (a.m != a.m || a.m == INFINITY || a.m == -INFINITY) return a.m;
        return a.m + logf(a.s);
    }
};

/* integers: sums and products wrap modulo 2^64 like the CPU's, then truncate to T */
struct ISum {
    typedef unsigned long long A;
    typedef long long O;
    __device__ static A init() { return 0ull; }
    __device__ static A add(A a, long long v, long long) { return a + (A)v; }
    __device__ static A merge(A a, A b) { return a + b; }
    __device__ static O fin(A a, long long) { return (O)a; }
};
struct IProd : ISum {
    __device__ static A init() { return 1ull; }
    __device__ static A add(A a, long long v, long long) { return a * (A)v; }
    __device__ static A merge(A a, A b) { return a * b; }
};
template <typename T> struct ILimits;
template <> struct ILimits<int32_t> {
    __device__ static long long lowest() { return INT_MIN; }
    __device__ static long long highest() { return INT_MAX; }
};
template <> struct ILimits<int64_t> {
    __device__ static long long lowest() { return LLONG_MIN; }
    __device__ static long long highest() { return LLONG_MAX; }
};
template <typename T> struct IMax {
    typedef long long A;
    typedef long long O;
    __device__ static A init() { return ILimits<T>::lowest(); }
    __device__ static A merge(A a, A b) { return b > a ? b : a; }
    __device__ static A add(A a, long long v, long long) { return merge(a, v); }
    __device__ static O fin(A a, long long) { return a; }
};
template <typename T> struct IMin : IMax<T> {
    typedef long long A;
    __device__ static A init() { return ILimits<T>::highest(); }
    __device__ static A merge(A a, A b) { return b < a ? b : a; }
    __device__ static A add(A a, long long v, long long) { return merge(a, v); }
};

template <typename V, bool IS_MIN, bool LAST> struct Arg {
    typedef nr::ArgAcc<V> A;
    typedef long long O;
    typedef nr::ArgMerge<V, IS_MIN, LAST> M;
    __device__ static A init() { return nr::arg_empty<V>(); }
    __device__ static A add(A a, V v, long long k) { return M::merge(a, nr::arg_leaf<V>(v, k)); }
    __device__ static A merge(A a, A b) { return M::merge(a, b); }
    __device__ static O fin(A a, long long) { return a.i; }
};

/* ---- kernels ---- */

constexpr int kThreads = 256;

/* r == 1: y = fin(add(init, x)); r == 0 (x unused): y = fin(init) */
template <typename T, typename TO, typename Op>
__global__ void map_kernel(const T *__restrict__ x, TO *__restrict__ y, int64_t total, int empty) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < total;
         i += (int64_t)gridDim.x * blockDim.x) {
        if (empty)
            put(y + i, Op::fin(Op::init(), 0));
        else
            put(y + i, Op::fin(Op::add(Op::init(), ld(x + i), 0), 1));
    }
}

/* Partition of r into `splits` chunks of `chunk` (the last may be shorter). */
struct Split {
    int64_t splits, chunk;
};

/* Writes a unit's result: the output when r is not split, else its partial. */
template <typename TO, typename Op>
__device__ __forceinline__ void emit(TO *y, typename Op::A *part, int64_t out, int64_t s,
                                     const Split &sp, typename Op::A acc, int64_t r) {
    if (sp.splits == 1)
        put(y + out, Op::fin(acc, r));
    else
        part[out * sp.splits + s] = acc;
}

/* Rows of [outer, r]: unit u = row * splits + chunk; WARP: a warp per unit, else a block. V > 1:
 * 16-byte vector loads (float types, r and chunk multiples of V, x aligned). */
template <typename T, typename TO, typename Op, int V, bool WARP>
__global__ void row_kernel(const T *__restrict__ x, TO *__restrict__ y, typename Op::A *part,
                           int64_t outer, int64_t r, Split sp) {
    typedef typename Op::A A;
    __shared__ A red[32];
    const int lane = WARP ? (threadIdx.x & 31) : threadIdx.x, step = WARP ? 32 : blockDim.x;
    const int64_t u = WARP ? (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5) : blockIdx.x;
    if (u >= outer * sp.splits) return; /* whole warps (WARP) or whole blocks leave */
    const int64_t row = u / sp.splits, s = u - row * sp.splits;
    const int64_t k0 = s * sp.chunk, k1 = min(r, k0 + sp.chunk);
    const T *xr = x + row * r;
    A acc = Op::init();
    for (int64_t k = k0 + (int64_t)lane * V; k < k1; k += (int64_t)step * V) {
        if constexpr (V > 1) {
            float v[V];
            nr::load_vec<T, V>(xr + k, v);
#pragma unroll
            for (int i = 0; i < V; i++) acc = Op::add(acc, v[i], k + i);
        } else {
            acc = Op::add(acc, ld(xr + k), k);
        }
    }
    if (WARP) {
        acc = nr::warp_all<Op>(acc);
        if (lane == 0) emit<TO, Op>(y, part, row, s, sp, acc, r);
    } else {
        acc = nr::block_all<Op>(acc, Op::init(), red);
        if (threadIdx.x == 0) emit<TO, Op>(y, part, row, s, sp, acc, r);
    }
}

/* Columns of [outer, r, inner]: a block of (32, BY) threads takes 32 neighbouring columns of one
 * outer index and one chunk of r; unit = ((o * tiles) + tile) * splits + chunk. */
template <typename T, typename TO, typename Op>
__global__ void col_kernel(const T *__restrict__ x, TO *__restrict__ y, typename Op::A *part,
                           int64_t r, int64_t inner, int64_t tiles, Split sp) {
    typedef typename Op::A A;
    __shared__ A red[8][33];
    const int64_t u = blockIdx.x, s = u % sp.splits, ot = u / sp.splits;
    const int64_t o = ot / tiles, j = (ot - o * tiles) * 32 + threadIdx.x;
    const int64_t k0 = s * sp.chunk, k1 = min(r, k0 + sp.chunk);
    A acc = Op::init();
    if (j < inner) {
        const T *xc = x + o * r * inner + j;
        for (int64_t k = k0 + threadIdx.y; k < k1; k += blockDim.y) acc = Op::add(acc, ld(xc + k * inner), k);
    }
    red[threadIdx.y][threadIdx.x] = acc;
    __syncthreads();
    if (threadIdx.y == 0 && j < inner) {
        for (int t = 1; t < (int)blockDim.y; t++) acc = Op::merge(acc, red[t][threadIdx.x]);
        emit<TO, Op>(y, part, o * inner + j, s, sp, acc, r);
    }
}

/* Merges each output's partials: a warp per output. */
template <typename TO, typename Op>
__global__ void finish_kernel(const typename Op::A *__restrict__ part, TO *__restrict__ y,
                              int64_t outs, int64_t splits, int64_t r) {
    const int lane = threadIdx.x & 31;
    const int64_t o = (int64_t)blockIdx.x * (blockDim.x >> 5) + (threadIdx.x >> 5);
    if (o >= outs) return;
    typename Op::A acc = Op::init();
    for (int64_t s = lane; s < splits; s += 32) acc = Op::merge(acc, part[o * splits + s]);
    acc = nr::warp_all<Op>(acc);
    if (lane == 0) put(y + o, Op::fin(acc, r));
}

/* Reduced runs separated by kept ones: kept dims (output order) and reduced dims with their
 * strides in x. */
struct Gen {
    int nk, nr;
    int64_t kdim[KILN_CUDA_REDUCE_MAX_RANK], kstr[KILN_CUDA_REDUCE_MAX_RANK];
    int64_t rdim[KILN_CUDA_REDUCE_MAX_RANK], rstr[KILN_CUDA_REDUCE_MAX_RANK];
    int64_t outs, r;
};

__device__ __forceinline__ int64_t offset_of(int64_t i, int n, const int64_t *dim, const int64_t *str) {
    int64_t off = 0;
    for (int d = n - 1; d >= 0; d--) {
        const int64_t q = i / dim[d];
        off += (i - q * dim[d]) * str[d];
        i = q;
    }
    return off;
}

/* A block per output. With a long innermost reduced dim (NEST), the threads walk that dim for
 * each index of the other reduced dims (one index split per step, no division per element);
 * otherwise they walk the flattened reduced index. Either way the innermost reduced dim is the
 * fastest, so neighbouring threads read neighbouring elements when it is contiguous. */
template <typename T, typename TO, typename Op, bool NEST>
__global__ void gen_block_kernel(const T *__restrict__ x, TO *__restrict__ y, const Gen g) {
    typedef typename Op::A A;
    __shared__ A red[32];
    const int64_t o = blockIdx.x;
    const T *xo = x + offset_of(o, g.nk, g.kdim, g.kstr);
    A acc = Op::init();
    if (NEST) {
        const int last = g.nr - 1;
        const int64_t len = g.rdim[last], step = g.rstr[last], outer = g.r / len;
        for (int64_t q = 0; q < outer; q++) {
            const T *xq = xo + offset_of(q, last, g.rdim, g.rstr);
            for (int64_t j = threadIdx.x; j < len; j += blockDim.x) acc = Op::add(acc, ld(xq + j * step), q * len + j);
        }
    } else {
        for (int64_t k = threadIdx.x; k < g.r; k += blockDim.x)
            acc = Op::add(acc, ld(xo + offset_of(k, g.nr, g.rdim, g.rstr)), k);
    }
    acc = nr::block_all<Op>(acc, Op::init(), red);
    if (threadIdx.x == 0) put(y + o, Op::fin(acc, g.r));
}

/* a thread per output, stepping through the reduced dims like an odometer */
template <typename T, typename TO, typename Op>
__global__ void gen_thread_kernel(const T *__restrict__ x, TO *__restrict__ y, const Gen g) {
    for (int64_t o = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; o < g.outs;
         o += (int64_t)gridDim.x * blockDim.x) {
        int64_t idx[KILN_CUDA_REDUCE_MAX_RANK];
        for (int d = 0; d < g.nr; d++) idx[d] = 0;
        int64_t off = offset_of(o, g.nk, g.kdim, g.kstr);
        typename Op::A acc = Op::init();
        for (int64_t k = 0; k < g.r; k++) {
            acc = Op::add(acc, ld(x + off), k);
            for (int d = g.nr - 1; d >= 0; d--) {
                off += g.rstr[d];
                if (++idx[d] < g.rdim[d]) break;
                off -= g.rstr[d] * g.rdim[d];
                idx[d] = 0;
            }
        }
        put(y + o, Op::fin(acc, g.r));
    }
}

/* ---- host side ---- */

struct Plan {
    int n;                                  /* merged dims */
    int64_t d[KILN_CUDA_REDUCE_MAX_RANK];
    int f[KILN_CUDA_REDUCE_MAX_RANK];       /* 1: reduced */
    int groups, gpos;                       /* reduced runs; position of the last */
    int64_t r, outs;                        /* reduced count, output count */
};

Plan make_plan(const kiln_cuda_reduce_args &a) {
    Plan p = {};
    p.r = 1;
    p.outs = 1;
    p.gpos = -1;
    for (int i = 0; i < a.rank; i++) {
        const int red = a.reduced[i] != 0;
        if (red) p.r *= a.dims[i];
        else p.outs *= a.dims[i];
        if (a.dims[i] == 1) continue;
        if (p.n > 0 && p.f[p.n - 1] == red) {
            p.d[p.n - 1] *= a.dims[i];
        } else {
            p.d[p.n] = a.dims[i];
            p.f[p.n] = red;
            if (red) {
                p.groups++;
                p.gpos = p.n;
            }
            p.n++;
        }
    }
    return p;
}

unsigned grid_for(int64_t items, int threads) {
    const int64_t b = nr::ceil_div(items, threads);
    return (unsigned)(b < 65536LL * 32 ? (b > 0 ? b : 1) : 65536LL * 32);
}

int sm_count(kiln_cuda_provider *p) {
    const kiln_cuda_device_info *info = kiln_cuda_info(p);
    return info && info->sm_count > 0 ? info->sm_count : 132;
}

/* chunks for r when `units` blocks would not fill the GPU, each at least min_chunk long
 * (a multiple of align) */
Split choose_split(int64_t units, int64_t r, int sms, int64_t min_chunk, int64_t align) {
    const int64_t target = 4LL * sms;
    int64_t splits = 1;
    if (units < target && r >= 2 * min_chunk) {
        splits = nr::ceil_div(target, units);
        const int64_t most = r / min_chunk;
        if (splits > most) splits = most;
        if (splits > 4096) splits = 4096;
    }
    Split sp;
    sp.chunk = nr::ceil_div(nr::ceil_div(r, splits), align) * align;
    sp.splits = nr::ceil_div(r, sp.chunk);
    return sp;
}

template <typename T, typename TO, typename Op>
kiln_status finish(cudaStream_t st, typename Op::A *part, TO *y, int64_t outs, const Split &sp,
                   int64_t r) {
    if (sp.splits == 1) return KILN_OK;
    const int64_t blocks = nr::ceil_div(outs, kThreads / 32);
    if (blocks > 0x7fffffffLL) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "reduce: too many outputs");
    finish_kernel<TO, Op><<<(unsigned)blocks, kThreads, 0, st>>>(part, y, outs, sp.splits, r);
    return kiln_cuda_check(cudaGetLastError(), "reduce (merge chunks)");
}

template <typename Op>
kiln_status partials(kiln_cuda_provider *p, int64_t outs, const Split &sp, typename Op::A **part) {
    *part = nullptr;
    if (sp.splits == 1) return KILN_OK;
    void *ws = nullptr;
    kiln_status s = kiln_cuda_workspace(p, (size_t)(outs * sp.splits) * sizeof(typename Op::A), &ws);
    *part = (typename Op::A *)ws;
    return s;
}

template <typename T, typename TO, typename Op, int V>
kiln_status run_rows(kiln_cuda_provider *p, const T *x, TO *y, int64_t outer, int64_t r) {
    cudaStream_t st = (cudaStream_t)kiln_cuda_stream(p);
    typename Op::A *part = nullptr;
    if (r <= 1024) { /* a warp per row */
        const Split sp = {1, r};
        const int64_t blocks = nr::ceil_div(outer, kThreads / 32);
        if (blocks > 0x7fffffffLL) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "reduce: too many rows");
        row_kernel<T, TO, Op, V, true><<<(unsigned)blocks, kThreads, 0, st>>>(x, y, part, outer, r, sp);
        return kiln_cuda_check(cudaGetLastError(), "reduce (rows)");
    }
    const Split sp = choose_split(outer, r, sm_count(p), 8192, V);
    const int64_t blocks = outer * sp.splits;
    if (blocks > 0x7fffffffLL) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "reduce: too many rows");
    kiln_status s = partials<Op>(p, outer, sp, &part);
    if (s != KILN_OK) return s;
    row_kernel<T, TO, Op, V, false><<<(unsigned)blocks, kThreads, 0, st>>>(x, y, part, outer, r, sp);
    s = kiln_cuda_check(cudaGetLastError(), "reduce (rows)");
    if (s != KILN_OK) return s;
    return finish<T, TO, Op>(st, part, y, outer, sp, r);
}

template <typename T, typename TO, typename Op>
kiln_status run_cols(kiln_cuda_provider *p, const T *x, TO *y, int64_t outer, int64_t r, int64_t inner) {
    cudaStream_t st = (cudaStream_t)kiln_cuda_stream(p);
    const int64_t tiles = nr::ceil_div(inner, 32);
    const Split sp = choose_split(outer * tiles, r, sm_count(p), 64, 1);
    const int64_t blocks = outer * tiles * sp.splits;
    if (blocks > 0x7fffffffLL) return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "reduce: too many columns");
    typename Op::A *part = nullptr;
    kiln_status s = partials<Op>(p, outer * inner, sp, &part);
    if (s != KILN_OK) return s;
    const int by = sp.chunk >= 8 ? 8 : sp.chunk >= 4 ? 4 : sp.chunk >= 2 ? 2 : 1;
    col_kernel<T, TO, Op><<<(unsigned)blocks, dim3(32, by), 0, st>>>(x, y, part, r, inner, tiles, sp);
    s = kiln_cuda_check(cudaGetLastError(), "reduce (columns)");
    if (s != KILN_OK) return s;
    return finish<T, TO, Op>(st, part, y, outer * inner, sp, r);
}

template <typename T, typename TO, typename Op>
kiln_status run_general(kiln_cuda_provider *p, const T *x, TO *y, const Plan &pl) {
    cudaStream_t st = (cudaStream_t)kiln_cuda_stream(p);
    Gen g = {};
    int64_t stride = 1;
    for (int i = pl.n - 1; i >= 0; i--) { /* strides of the merged dims, innermost first */
        if (pl.f[i]) {
            g.rdim[g.nr] = pl.d[i];
            g.rstr[g.nr++] = stride;
        } else {
            g.kdim[g.nk] = pl.d[i];
            g.kstr[g.nk++] = stride;
        }
        stride *= pl.d[i];
    }
    for (int i = 0; i < g.nk / 2; i++) { /* back to outermost first */
        int64_t t = g.kdim[i]; g.kdim[i] = g.kdim[g.nk - 1 - i]; g.kdim[g.nk - 1 - i] = t;
        t = g.kstr[i]; g.kstr[i] = g.kstr[g.nk - 1 - i]; g.kstr[g.nk - 1 - i] = t;
    }
    for (int i = 0; i < g.nr / 2; i++) {
        int64_t t = g.rdim[i]; g.rdim[i] = g.rdim[g.nr - 1 - i]; g.rdim[g.nr - 1 - i] = t;
        t = g.rstr[i]; g.rstr[i] = g.rstr[g.nr - 1 - i]; g.rstr[g.nr - 1 - i] = t;
    }
    g.outs = pl.outs;
    g.r = pl.r;
    if (g.outs >= 16LL * kThreads * sm_count(p) || g.outs > 0x7fffffffLL) {
        gen_thread_kernel<T, TO, Op><<<grid_for(g.outs, kThreads), kThreads, 0, st>>>(x, y, g);
    } else if (g.rdim[g.nr - 1] >= kThreads / 2) {
        gen_block_kernel<T, TO, Op, true><<<(unsigned)g.outs, kThreads, 0, st>>>(x, y, g);
    } else {
        gen_block_kernel<T, TO, Op, false><<<(unsigned)g.outs, kThreads, 0, st>>>(x, y, g);
    }
    return kiln_cuda_check(cudaGetLastError(), "reduce (general)");
}

template <typename T, typename TO, typename Op>
kiln_status run_op(kiln_cuda_provider *p, const kiln_cuda_reduce_args &a) {
    const T *x = (const T *)a.x;
    TO *y = (TO *)a.y;
    const Plan pl = make_plan(a);
    cudaStream_t st = (cudaStream_t)kiln_cuda_stream(p);
    if (pl.outs == 0) return KILN_OK;
    if (pl.r == 0 || pl.groups == 0) { /* empty reduction, or one element per output */
        map_kernel<T, TO, Op><<<grid_for(pl.outs, kThreads), kThreads, 0, st>>>(x, y, pl.outs, pl.r == 0);
        return kiln_cuda_check(cudaGetLastError(), "reduce (elementwise)");
    }
    if (pl.groups > 1) return run_general<T, TO, Op>(p, x, y, pl);
    int64_t outer = 1, inner = 1;
    for (int i = 0; i < pl.gpos; i++) outer *= pl.d[i];
    for (int i = pl.gpos + 1; i < pl.n; i++) inner *= pl.d[i];
    if (inner > 1) return run_cols<T, TO, Op>(p, x, y, outer, pl.r, inner);
    if constexpr (!std::is_integral<T>::value) {
        constexpr int V = nr::VecWidth<T>::value;
        if (pl.r % V == 0 && nr::aligned(x, 16)) return run_rows<T, TO, Op, V>(p, x, y, outer, pl.r);
    }
    return run_rows<T, TO, Op, 1>(p, x, y, outer, pl.r);
}

template <typename T, typename V>
kiln_status run_arg(kiln_cuda_provider *p, const kiln_cuda_reduce_args &a, bool is_min) {
    if (is_min)
        return a.select_last ? run_op<T, int64_t, Arg<V, true, true>>(p, a)
                             : run_op<T, int64_t, Arg<V, true, false>>(p, a);
    return a.select_last ? run_op<T, int64_t, Arg<V, false, true>>(p, a)
                         : run_op<T, int64_t, Arg<V, false, false>>(p, a);
}

template <typename T> kiln_status run_float(kiln_cuda_provider *p, const kiln_cuda_reduce_args &a) {
    switch (a.kind) {
    case KILN_CUDA_RK_SUM: return run_op<T, T, FSum>(p, a);
    case KILN_CUDA_RK_MEAN: return run_op<T, T, FMean>(p, a);
    case KILN_CUDA_RK_MAX: return run_op<T, T, FMax>(p, a);
    case KILN_CUDA_RK_MIN: return run_op<T, T, FMin>(p, a);
    case KILN_CUDA_RK_PROD: return run_op<T, T, FProd>(p, a);
    case KILN_CUDA_RK_L1: return run_op<T, T, FL1>(p, a);
    case KILN_CUDA_RK_L2: return run_op<T, T, FL2>(p, a);
    case KILN_CUDA_RK_LOGSUM: return run_op<T, T, FLogSum>(p, a);
    case KILN_CUDA_RK_LOGSUMEXP: return run_op<T, T, FLse>(p, a);
    case KILN_CUDA_RK_SUMSQ: return run_op<T, T, FSumSq>(p, a);
    case KILN_CUDA_RK_ARGMAX: return run_arg<T, float>(p, a, false);
    case KILN_CUDA_RK_ARGMIN: return run_arg<T, float>(p, a, true);
    default: return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "reduce: unknown kind %d", a.kind);
    }
}

template <typename T> kiln_status run_int(kiln_cuda_provider *p, const kiln_cuda_reduce_args &a) {
    switch (a.kind) {
    case KILN_CUDA_RK_SUM: return run_op<T, T, ISum>(p, a);
    case KILN_CUDA_RK_MAX: return run_op<T, T, IMax<T>>(p, a);
    case KILN_CUDA_RK_MIN: return run_op<T, T, IMin<T>>(p, a);
    case KILN_CUDA_RK_PROD: return run_op<T, T, IProd>(p, a);
    case KILN_CUDA_RK_ARGMAX: return run_arg<T, long long>(p, a, false);
    case KILN_CUDA_RK_ARGMIN: return run_arg<T, long long>(p, a, true);
    default:
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "reduce kind %d does not take integers", a.kind);
    }
}

} // namespace

extern "C" int kiln_cuda_reduce_supported(int kind, int dtype) {
    if (kind < KILN_CUDA_RK_SUM || kind > KILN_CUDA_RK_ARGMIN) return 0;
    if (dtype == KILN_DTYPE_FLOAT || dtype == KILN_DTYPE_FLOAT16 || dtype == KILN_DTYPE_BFLOAT16) return 1;
    if (dtype == KILN_DTYPE_INT32 || dtype == KILN_DTYPE_INT64)
        return kind == KILN_CUDA_RK_SUM || kind == KILN_CUDA_RK_MAX || kind == KILN_CUDA_RK_MIN ||
               kind == KILN_CUDA_RK_PROD || kind == KILN_CUDA_RK_ARGMAX || kind == KILN_CUDA_RK_ARGMIN;
    return 0;
}

extern "C" kiln_status kiln_cuda_reduce(kiln_cuda_provider *p, const kiln_cuda_reduce_args *a) {
    if (a->rank < 0 || a->rank > KILN_CUDA_REDUCE_MAX_RANK)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "reduce: rank %d", a->rank);
    switch (a->dtype) {
    case KILN_DTYPE_FLOAT: return run_float<float>(p, *a);
    case KILN_DTYPE_FLOAT16: return run_float<__half>(p, *a);
    case KILN_DTYPE_BFLOAT16: return run_float<__nv_bfloat16>(p, *a);
    case KILN_DTYPE_INT32: return run_int<int32_t>(p, *a);
    case KILN_DTYPE_INT64: return run_int<int64_t>(p, *a);
    default:
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "reduce: element type %d is not supported",
                              a->dtype);
    }
}
