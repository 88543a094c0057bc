/* Element-wise kernels with bool inputs or outputs, and the three-input ops: comparisons
 * (Equal Less LessOrEqual Greater GreaterOrEqual), And Or Xor, Where, BiasAdd and Clip. */
#include "elementwise_impl.cuh"

namespace kew {

/* ---------------------------------------------------------------- comparisons ---- */

struct EqF {
    template <class X> static __device__ __forceinline__ bool f(const Params &, X a, X b) { return a == b; }
};
struct LtF {
    template <class X> static __device__ __forceinline__ bool f(const Params &, X a, X b) { return a < b; }
};
struct LeF {
    template <class X> static __device__ __forceinline__ bool f(const Params &, X a, X b) { return a <= b; }
};
struct GtF {
    template <class X> static __device__ __forceinline__ bool f(const Params &, X a, X b) { return a > b; }
};
struct GeF {
    template <class X> static __device__ __forceinline__ bool f(const Params &, X a, X b) { return a >= b; }
};

/* ---------------------------------------------------------------- bool logic ---- */

/* any non-zero byte counts as true, as in the CPU kernels */
template <int KIND> struct Logic : BinaryShape<kbool, kbool, kbool> {
    static __device__ __forceinline__ kbool apply(const Params &, kbool a, kbool b) {
        const bool x = a.v != 0, y = b.v != 0;
        const bool r = KIND == 0 ? (x && y) : KIND == 1 ? (x || y) : KIND == 2 ? (x != y) : (x == y);
        return kbool{(uint8_t)r};
    }
};
enum { kAnd = 0, kOr = 1, kXor = 2, kEqual = 3 };

/* ---------------------------------------------------------------- three inputs ---- */

/* Where moves elements by size: T is the unsigned integer of the element's width. */
template <class T> struct WhereOp : TernaryShape<kbool, T, T, T> {
    static __device__ __forceinline__ T apply(const Params &, kbool c, T x, T y) { return c.v ? x : y; }
};

struct BiasAddF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b, X c) { return a + b + c; }
};

template <class X> __device__ __forceinline__ X lowest_of() {
    if constexpr (std::is_integral<X>::value) return std::is_signed<X>::value ? (X)((typename Unsigned<X>::type)1 << (8 * sizeof(X) - 1)) : (X)0;
    else return -__int_as_float(0x7f800000);
}
template <class X> __device__ __forceinline__ X highest_of() {
    if constexpr (std::is_integral<X>::value) return (X)(lowest_of<X>() - 1);
    else return __int_as_float(0x7f800000);
}

/* NaN passes through; with lo > hi every element becomes hi (numpy.clip, the CPU kernel). */
struct ClipF {
    template <class X> static __device__ __forceinline__ X f(const Params &p, X x, X lo, X hi) {
        if (p.mode & 4) { /* Clip-1/6: float attributes */
            lo = (X)p.alpha;
            hi = (X)p.beta;
        } else {
            if (!(p.mode & 1)) lo = lowest_of<X>();
            if (!(p.mode & 2)) hi = highest_of<X>();
        }
        const X t = x < lo ? lo : x;
        return t > hi ? hi : t;
    }
};

/* ---------------------------------------------------------------- dispatch ---- */

template <class F> LaunchFn compare(int dt) {
#define X(T) return fn<Cmp<T, F>>();
    KEW_SWITCH_NUM(dt, X)
#undef X
    return nullptr;
}

/* Bytes per element of the types Where moves (0: not one of them). */
static int where_elem_size(int dt) {
    switch (dt) {
    case KILN_DTYPE_BOOL: case KILN_DTYPE_INT8: case KILN_DTYPE_UINT8:
    case KILN_DTYPE_FLOAT8E4M3FN: case KILN_DTYPE_FLOAT8E4M3FNUZ: case KILN_DTYPE_FLOAT8E5M2:
    case KILN_DTYPE_FLOAT8E5M2FNUZ: case KILN_DTYPE_FLOAT8E8M0:
        return 1;
    case KILN_DTYPE_INT16: case KILN_DTYPE_UINT16: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16:
        return 2;
    case KILN_DTYPE_INT32: case KILN_DTYPE_UINT32: case KILN_DTYPE_FLOAT:
        return 4;
    case KILN_DTYPE_INT64: case KILN_DTYPE_UINT64: case KILN_DTYPE_DOUBLE: case KILN_DTYPE_COMPLEX64:
        return 8;
    default:
        return 0;
    }
}

static LaunchFn pick_where(const int *dt, int out) {
    if (dt[0] != KILN_DTYPE_BOOL || dt[1] != dt[2] || out != dt[1]) return nullptr;
    switch (where_elem_size(dt[1])) {
    case 1: return fn<WhereOp<uint8_t>>();
    case 2: return fn<WhereOp<uint16_t>>();
    case 4: return fn<WhereOp<uint32_t>>();
    case 8: return fn<WhereOp<uint64_t>>();
    default: return nullptr;
    }
}

LaunchFn pick_logic(int op, const int *dt, int out) {
    switch (op) {
    case KILN_EW_EQUAL: case KILN_EW_LESS: case KILN_EW_LESS_EQUAL: case KILN_EW_GREATER:
    case KILN_EW_GREATER_EQUAL:
        if (dt[0] != dt[1] || out != KILN_DTYPE_BOOL) return nullptr;
        if (op == KILN_EW_EQUAL && dt[0] == KILN_DTYPE_BOOL) return fn<Logic<kEqual>>();
        return op == KILN_EW_EQUAL ? compare<EqF>(dt[0])
             : op == KILN_EW_LESS ? compare<LtF>(dt[0])
             : op == KILN_EW_LESS_EQUAL ? compare<LeF>(dt[0])
             : op == KILN_EW_GREATER ? compare<GtF>(dt[0])
                                     : compare<GeF>(dt[0]);
    case KILN_EW_AND: case KILN_EW_OR: case KILN_EW_XOR:
        if (dt[0] != KILN_DTYPE_BOOL || dt[1] != KILN_DTYPE_BOOL || out != KILN_DTYPE_BOOL) return nullptr;
        return op == KILN_EW_AND ? fn<Logic<kAnd>>() : op == KILN_EW_OR ? fn<Logic<kOr>>() : fn<Logic<kXor>>();
    case KILN_EW_WHERE:
        return pick_where(dt, out);
    case KILN_EW_BIAS_ADD:
        if (dt[1] != dt[0] || dt[2] != dt[0] || out != dt[0]) return nullptr;
#define X(T) return fn<Tern<T, BiasAddF>>();
        KEW_SWITCH_FLOAT(dt[0], X)
#undef X
        return nullptr;
    case KILN_EW_CLIP:
        if (dt[1] != dt[0] || dt[2] != dt[0] || out != dt[0]) return nullptr;
#define X(T) return fn<Tern<T, ClipF>>();
        KEW_SWITCH_NUM(dt[0], X)
#undef X
        return nullptr;
    default:
        return nullptr;
    }
}

} // namespace kew
