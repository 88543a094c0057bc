/* Shared machinery of the element-wise kernels (elementwise*.cu): element types, the broadcast
 * plan passed by value to every kernel, the one kernel template all ops instantiate, and the
 * host-side launch that picks its vector width.
 *
 * An op is a struct with the input types A (B, C), the output type O, the arity nin, and a static
 * device function apply(params, a[, b[, c]]). Half types compute in float32; integer arithmetic
 * wraps through the unsigned type of the same width, as the CPU kernels do.
 *
 * The kernel runs in one of two modes, chosen per launch on the host:
 *  - flat: the folded plan has one axis, so every operand is either the output's full shape or
 *    a single repeated value (same-shape ops, scalar operands, unary ops, Cast);
 *  - strided: element i's operand offsets come from its coordinates in the folded axes (one
 *    division per axis but the first, e.g. one for the bias add [B,S,D] + [D]).
 * Each thread handles VEC consecutive outputs with 16-byte loads where the pointers and the
 * innermost axis allow it (checked on the host from pointer values; nothing is read back). */
#ifndef KILN_CUDA_ELEMENTWISE_IMPL_CUH
#define KILN_CUDA_ELEMENTWISE_IMPL_CUH

#include "../cuda_provider.h"
#include "elementwise.h"

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdint.h>
#include <type_traits>

namespace kew {

constexpr int kMaxIn = KILN_EW_MAX_IN;
constexpr int kMaxRank = KILN_EW_MAX_RANK;
constexpr int kThreads = 256;
/* enough blocks to fill an H100 several times over; the grid-stride loop covers the rest */
constexpr int64_t kMaxBlocks = 8192;

typedef __nv_bfloat16 bf16;
typedef __half f16;

/* A bool element: one byte, any non-zero value true (distinct from uint8_t so Cast can tell). */
struct kbool {
    uint8_t v;
};

struct Params {
    float alpha, beta, gamma;
    int mode;
};

/* Everything a kernel needs, by value (a few hundred bytes of kernel argument space). */
struct Args {
    void *out;
    const void *in[kMaxIn];
    int64_t n;              /* output elements */
    int rank;               /* folded axes, >= 1 */
    unsigned rep;           /* bit k: operand k repeats along the innermost axis (stride 0) */
    int64_t dims[kMaxRank];
    int64_t st[kMaxIn][kMaxRank];
    Params p;
};

/* ---------------------------------------------------------------- element conversions ---- */

template <class T> struct Acc { typedef T type; };
template <> struct Acc<f16> { typedef float type; };
template <> struct Acc<bf16> { typedef float type; };

__device__ __forceinline__ float to_acc(f16 x) { return __half2float(x); }
__device__ __forceinline__ float to_acc(bf16 x) { return __bfloat162float(x); }
template <class T> __device__ __forceinline__ T to_acc(T x) { return x; }

template <class T> __device__ __forceinline__ T from_acc(typename Acc<T>::type x) { return x; }
template <> __device__ __forceinline__ f16 from_acc<f16>(float x) { return __float2half_rn(x); }
template <> __device__ __forceinline__ bf16 from_acc<bf16>(float x) { return __float2bfloat16_rn(x); }

template <class T> __device__ __forceinline__ double to_f64(T x) { return (double)to_acc(x); }

/* double to int64 as x86's truncating conversion: NaN and out-of-range give INT64_MIN (CUDA's
 * own conversion saturates instead) */
__device__ __forceinline__ int64_t f64_to_i64(double v) {
    if (!(v >= -9223372036854775808.0 && v < 9223372036854775808.0)) return INT64_MIN;
    return (int64_t)v;
}

/* integer arithmetic that wraps instead of overflowing */
template <class X> struct Unsigned { typedef typename std::make_unsigned<X>::type type; };
template <class X> __device__ __forceinline__ X wrap_add(X a, X b) {
    if constexpr (std::is_integral<X>::value) {
        typedef typename Unsigned<X>::type U;
        return (X)((U)a + (U)b);
    } else {
        return a + b;
    }
}
template <class X> __device__ __forceinline__ X wrap_sub(X a, X b) {
    if constexpr (std::is_integral<X>::value) {
        typedef typename Unsigned<X>::type U;
        return (X)((U)a - (U)b);
    } else {
        return a - b;
    }
}
template <class X> __device__ __forceinline__ X wrap_mul(X a, X b) {
    if constexpr (std::is_integral<X>::value) {
        typedef typename Unsigned<X>::type U;
        return (X)((U)a * (U)b);
    } else {
        return a * b;
    }
}
template <class X> __device__ __forceinline__ X wrap_neg(X a) {
    if constexpr (std::is_integral<X>::value) {
        typedef typename Unsigned<X>::type U;
        return (X)((U)0 - (U)a);
    } else {
        return -a;
    }
}

/* ---------------------------------------------------------------- shared float math ---- */

/* split by sign so exp never overflows into inf/inf; NaN stays NaN */
__device__ __forceinline__ float sigmoidf_(float x) {
    const float e = expf(-fabsf(x));
    const float s = 1.0f / (1.0f + e);
    return x >= 0 ? s : (x != x ? x : e * s);
}
/* Gelu, erf form (ONNX Gelu, com.microsoft Gelu/BiasGelu) */
__device__ __forceinline__ float gelu_erf(float x) {
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752440f));
}
/* Gelu, tanh form as ONNX Gelu-20 writes it */
__device__ __forceinline__ float gelu_tanh(float x) {
    return 0.5f * x * (1.0f + tanhf(0.7978845608028654f * (x + 0.044715f * x * x * x)));
}
/* Gelu, tanh form as com.microsoft FastGelu writes it */
__device__ __forceinline__ float fast_gelu(float x) {
    return 0.5f * x * (1.0f + tanhf(0.79788456080286535588f * x * (1.0f + 0.044715f * x * x)));
}

/* ---------------------------------------------------------------- op shapes ---- */

/* Type lists of the op structs. vec_ok = false keeps an op scalar (costly per-element math that
 * gains nothing from wide loads, and fewer kernels to compile). */
template <class T, class TO = T, bool VEC_OK = true> struct UnaryShape {
    typedef T A;
    typedef T B;
    typedef T C;
    typedef TO O;
    static constexpr int nin = 1;
    static constexpr bool vec_ok = VEC_OK;
};
template <class TA, class TB, class TO, bool VEC_OK = true> struct BinaryShape {
    typedef TA A;
    typedef TB B;
    typedef TA C;
    typedef TO O;
    static constexpr int nin = 2;
    static constexpr bool vec_ok = VEC_OK;
};
template <class TA, class TB, class TC, class TO> struct TernaryShape {
    typedef TA A;
    typedef TB B;
    typedef TC C;
    typedef TO O;
    static constexpr int nin = 3;
    static constexpr bool vec_ok = true;
};

/* F::f(p, x) computed in T's accumulator type. */
template <class T, class F> struct Un : UnaryShape<T> {
    static __device__ __forceinline__ T apply(const Params &p, T a) {
        return from_acc<T>(F::f(p, to_acc(a)));
    }
};
/* Predicates: bool result. */
template <class T, class F> struct UnPred : UnaryShape<T, kbool> {
    static __device__ __forceinline__ kbool apply(const Params &p, T a) {
        return kbool{(uint8_t)(F::f(p, to_acc(a)) ? 1 : 0)};
    }
};
template <class T, class F> struct Bin : BinaryShape<T, T, T> {
    static __device__ __forceinline__ T apply(const Params &p, T a, T b) {
        return from_acc<T>(F::f(p, to_acc(a), to_acc(b)));
    }
};
template <class T, class F> struct Cmp : BinaryShape<T, T, kbool> {
    static __device__ __forceinline__ kbool apply(const Params &p, T a, T b) {
        return kbool{(uint8_t)(F::f(p, to_acc(a), to_acc(b)) ? 1 : 0)};
    }
};
template <class T, class F> struct Tern : TernaryShape<T, T, T, T> {
    static __device__ __forceinline__ T apply(const Params &p, T a, T b, T c) {
        return from_acc<T>(F::f(p, to_acc(a), to_acc(b), to_acc(c)));
    }
};

/* ---------------------------------------------------------------- the kernel ---- */

template <class T, int N> struct alignas(sizeof(T) * N) Vec {
    T v[N];
};

template <int V, class T>
__device__ __forceinline__ void load_vals(T (&x)[V], const void *base, int64_t off, bool rep) {
    const T *p = static_cast<const T *>(base) + off;
    if constexpr (V == 1) {
        x[0] = *p;
    } else if (rep) {
        const T s = *p;
#pragma unroll
        for (int j = 0; j < V; j++) x[j] = s;
    } else {
        const Vec<T, V> t = *reinterpret_cast<const Vec<T, V> *>(p);
#pragma unroll
        for (int j = 0; j < V; j++) x[j] = t.v[j];
    }
}

template <int V, class T> __device__ __forceinline__ void store_vals(void *base, int64_t off, const T (&x)[V]) {
    T *p = static_cast<T *>(base) + off;
    if constexpr (V == 1) {
        *p = x[0];
    } else {
        Vec<T, V> t;
#pragma unroll
        for (int j = 0; j < V; j++) t.v[j] = x[j];
        *reinterpret_cast<Vec<T, V> *>(p) = t;
    }
}

/* q = x / d, r = x % d for non-negative values, in 32 bits when both fit (most tensors) */
__device__ __forceinline__ void divmod(int64_t x, int64_t d, int64_t &q, int64_t &r) {
    if ((((uint64_t)x | (uint64_t)d) >> 32) == 0) {
        const uint32_t q32 = (uint32_t)x / (uint32_t)d;
        q = q32;
    } else {
        q = x / d;
    }
    r = x - q * d;
}

template <bool FLAT, int NIN>
__device__ __forceinline__ void operand_offsets(const Args &a, int64_t i, int64_t (&off)[kMaxIn]) {
    if constexpr (FLAT) {
#pragma unroll
        for (int k = 0; k < NIN; k++) off[k] = ((a.rep >> k) & 1u) ? 0 : i;
    } else {
#pragma unroll
        for (int k = 0; k < NIN; k++) off[k] = 0;
        int64_t rem = i;
        for (int d = a.rank - 1; d > 0; --d) {
            int64_t q, r;
            divmod(rem, a.dims[d], q, r);
#pragma unroll
            for (int k = 0; k < NIN; k++) off[k] += r * a.st[k][d];
            rem = q;
        }
#pragma unroll
        for (int k = 0; k < NIN; k++) off[k] += rem * a.st[k][0];
    }
}

/* V outputs starting at element i. */
template <class Op, int V, bool FLAT> __device__ __forceinline__ void ew_elements(const Args &a, int64_t i) {
    typedef typename Op::A A;
    typedef typename Op::O O;
    int64_t off[kMaxIn];
    operand_offsets<FLAT, Op::nin>(a, i, off);
    A x[V];
    O o[V];
    load_vals<V>(x, a.in[0], off[0], a.rep & 1u);
    if constexpr (Op::nin == 1) {
#pragma unroll
        for (int j = 0; j < V; j++) o[j] = Op::apply(a.p, x[j]);
    } else {
        typename Op::B y[V];
        load_vals<V>(y, a.in[1], off[1], (a.rep >> 1) & 1u);
        if constexpr (Op::nin == 2) {
#pragma unroll
            for (int j = 0; j < V; j++) o[j] = Op::apply(a.p, x[j], y[j]);
        } else {
            typename Op::C z[V];
            load_vals<V>(z, a.in[2], off[2], (a.rep >> 2) & 1u);
#pragma unroll
            for (int j = 0; j < V; j++) o[j] = Op::apply(a.p, x[j], y[j], z[j]);
        }
    }
    store_vals<V>(a.out, i, o);
}

template <class Op, int V, bool FLAT> __global__ void __launch_bounds__(kThreads) ew_kernel(const Args a) {
    const int64_t items = a.n / V;
    const int64_t step = (int64_t)gridDim.x * kThreads;
    const int64_t tid = (int64_t)blockIdx.x * kThreads + threadIdx.x;
    for (int64_t v = tid; v < items; v += step) ew_elements<Op, V, FLAT>(a, v * V);
    if constexpr (V > 1 && FLAT) { /* the last n % V elements, one per thread */
        const int64_t i = items * V + tid;
        if (i < a.n) ew_elements<Op, 1, FLAT>(a, i);
    }
}

/* ---------------------------------------------------------------- host side ---- */

typedef kiln_status (*LaunchFn)(cudaStream_t stream, const Args &a);

template <class Op> constexpr int vec_width() {
    size_t m = sizeof(typename Op::O);
    if (sizeof(typename Op::A) > m) m = sizeof(typename Op::A);
    if (Op::nin > 1 && sizeof(typename Op::B) > m) m = sizeof(typename Op::B);
    if (Op::nin > 2 && sizeof(typename Op::C) > m) m = sizeof(typename Op::C);
    const int v = (int)(16 / m);
    return !Op::vec_ok ? 1 : v > 8 ? 8 : v < 1 ? 1 : v;
}

static inline bool aligned_to(const void *p, size_t bytes) { return ((uintptr_t)p % bytes) == 0; }

template <class Op, int V> bool can_vectorise(const Args &a) {
    if (V == 1) return false;
    if (a.rank > 1 && a.dims[a.rank - 1] % V != 0) return false;
    if (!aligned_to(a.out, V * sizeof(typename Op::O))) return false;
    const size_t sz[3] = {sizeof(typename Op::A), sizeof(typename Op::B), sizeof(typename Op::C)};
    for (int k = 0; k < Op::nin; k++)
        if (!((a.rep >> k) & 1u) && !aligned_to(a.in[k], V * sz[k])) return false;
    return true;
}

template <class Op, int V, bool FLAT> kiln_status launch_mode(cudaStream_t s, const Args &a) {
    int64_t items = (a.n + V - 1) / V;
    int64_t blocks = (items + kThreads - 1) / kThreads;
    if (blocks < 1) blocks = 1;
    if (blocks > kMaxBlocks) blocks = kMaxBlocks;
    ew_kernel<Op, V, FLAT><<<(unsigned)blocks, kThreads, 0, s>>>(a);
    return kiln_cuda_check((int)cudaGetLastError(), "element-wise kernel launch");
}

template <class Op> kiln_status launch_op(cudaStream_t s, const Args &a) {
    constexpr int V = vec_width<Op>();
    const bool flat = a.rank == 1;
    if constexpr (V > 1) {
        if (can_vectorise<Op, V>(a))
            return flat ? launch_mode<Op, V, true>(s, a) : launch_mode<Op, V, false>(s, a);
    }
    return flat ? launch_mode<Op, 1, true>(s, a) : launch_mode<Op, 1, false>(s, a);
}

template <class Op> constexpr LaunchFn fn() { return &launch_op<Op>; }

/* Dispatchers of the element-wise .cu files: the launcher for (op, input dtypes, output dtype),
 * or nullptr when that file has none. */
LaunchFn pick_unary(int op, const int *in_dt, int out_dt);
LaunchFn pick_binary(int op, const int *in_dt, int out_dt);
LaunchFn pick_logic(int op, const int *in_dt, int out_dt);
LaunchFn pick_cast(int op, const int *in_dt, int out_dt);

/* Type switches for the dispatchers: X(C type) for the dtype dt, else falls through. */
#define KEW_CASE(DT, T, X)                                                                         \
    case DT: X(T)
#define KEW_SWITCH_FLOAT(dt, X)                                                                    \
    switch (dt) {                                                                                  \
        KEW_CASE(KILN_DTYPE_FLOAT, float, X)                                                       \
        KEW_CASE(KILN_DTYPE_FLOAT16, ::kew::f16, X)                                                \
        KEW_CASE(KILN_DTYPE_BFLOAT16, ::kew::bf16, X)                                              \
    default: break;                                                                                \
    }
#define KEW_SWITCH_NUM(dt, X)                                                                      \
    switch (dt) {                                                                                  \
        KEW_CASE(KILN_DTYPE_FLOAT, float, X)                                                       \
        KEW_CASE(KILN_DTYPE_FLOAT16, ::kew::f16, X)                                                \
        KEW_CASE(KILN_DTYPE_BFLOAT16, ::kew::bf16, X)                                              \
        KEW_CASE(KILN_DTYPE_INT32, int32_t, X)                                                     \
        KEW_CASE(KILN_DTYPE_INT64, int64_t, X)                                                     \
    default: break;                                                                                \
    }
#define KEW_SWITCH_INT(dt, X)                                                                      \
    switch (dt) {                                                                                  \
        KEW_CASE(KILN_DTYPE_INT32, int32_t, X)                                                     \
        KEW_CASE(KILN_DTYPE_INT64, int64_t, X)                                                     \
    default: break;                                                                                \
    }

} // namespace kew

#endif
