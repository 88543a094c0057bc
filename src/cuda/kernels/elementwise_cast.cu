/* Cast between float32, float16, bfloat16, float64, int8, uint8, int16, int32, int64 and bool,
 * with the CPU kernel's rules (src/cpu/kernels/cast.c):
 *  - a float source is widened to double (exact); an integer or bool source to int64 / uint64;
 *  - to float16/bfloat16 from double or a wide integer, the value is first rounded to float32
 *    "to odd", so the final round-to-nearest-even is not spoiled by double rounding;
 *  - float to an integer truncates as x86 does: for 8/16-bit targets through int32, for 32/64-bit
 *    through int64, NaN and out-of-range giving the minimum of that intermediate, then the low
 *    bits are kept; integers to narrower integers keep the low bits;
 *  - to bool: non-zero (NaN included) is true; from bool: any non-zero byte is 1. */
#include "elementwise_impl.cuh"

namespace kew {

enum { kFloatKind = 0, kSignedKind = 1, kUnsignedKind = 2 };

template <class T> struct CastKind {
    static constexpr int value = std::is_floating_point<T>::value ? kFloatKind
                               : std::is_signed<T>::value        ? kSignedKind
                                                                 : kUnsignedKind;
};
template <> struct CastKind<f16> { static constexpr int value = kFloatKind; };
template <> struct CastKind<bf16> { static constexpr int value = kFloatKind; };
template <> struct CastKind<kbool> { static constexpr int value = kSignedKind; };

__device__ __forceinline__ float f64_to_f32_odd(double d) {
    float f = __double2float_rn(d);
    if ((double)f != d && !isinf(f) && d == d) {
        uint32_t b = __float_as_uint(f);
        if (fabs((double)f) > fabs(d)) b -= 1; /* truncate toward zero ... */
        b |= 1;                                /* ... and mark it inexact */
        f = __uint_as_float(b);
    }
    return f;
}

/* x86 cvttsd2si into 32 bits: NaN and out-of-range give INT32_MIN */
__device__ __forceinline__ int32_t f64_to_i32(double d) {
    if (!(d > -2147483649.0 && d < 2147483648.0)) return INT32_MIN;
    return (int32_t)d;
}

/* an integer source's value: int64 for signed ones and bool, uint64 for unsigned ones */
template <class S> __device__ __forceinline__ auto wide_int(S x) {
    if constexpr (std::is_same<S, kbool>::value) return (int64_t)(x.v != 0);
    else if constexpr (CastKind<S>::value == kSignedKind) return (int64_t)x;
    else return (uint64_t)x;
}

/* low bits of a 64-bit pattern as the integer type D */
template <class D> __device__ __forceinline__ D low_bits(uint64_t u) {
    return (D)(typename Unsigned<D>::type)u;
}

template <class D> __device__ __forceinline__ D from_f32_rounded(float f) {
    if constexpr (std::is_same<D, f16>::value) return __float2half_rn(f);
    else return __float2bfloat16_rn(f);
}

template <class S, class D> __device__ __forceinline__ D cast_from_float(S x) {
    if constexpr (std::is_same<D, float>::value) {
        return (float)to_f64(x);
    } else if constexpr (std::is_same<D, double>::value) {
        return to_f64(x);
    } else if constexpr (std::is_same<D, f16>::value || std::is_same<D, bf16>::value) {
        if constexpr (std::is_same<S, double>::value) return from_f32_rounded<D>(f64_to_f32_odd(x));
        else return from_f32_rounded<D>(to_acc(x)); /* float32 holds the source exactly */
    } else if constexpr (std::is_same<D, kbool>::value) {
        return kbool{(uint8_t)(to_f64(x) != 0)};
    } else if constexpr (sizeof(D) <= 2) {
        return low_bits<D>((uint64_t)(int64_t)f64_to_i32(to_f64(x)));
    } else {
        return low_bits<D>((uint64_t)f64_to_i64(to_f64(x)));
    }
}

template <class S, class D> __device__ __forceinline__ D cast_from_int(S x) {
    const auto w = wide_int(x);
    if constexpr (std::is_same<D, float>::value) {
        return (float)w;
    } else if constexpr (std::is_same<D, double>::value) {
        return (double)w;
    } else if constexpr (std::is_same<D, f16>::value || std::is_same<D, bf16>::value) {
        return from_f32_rounded<D>(f64_to_f32_odd((double)w));
    } else if constexpr (std::is_same<D, kbool>::value) {
        return kbool{(uint8_t)(w != 0)};
    } else {
        return low_bits<D>((uint64_t)w);
    }
}

template <class S, class D> struct CastOp : UnaryShape<S, D> {
    static __device__ __forceinline__ D apply(const Params &, S x) {
        if constexpr (std::is_same<S, D>::value) return x;
        else if constexpr (CastKind<S>::value == kFloatKind) return cast_from_float<S, D>(x);
        else return cast_from_int<S, D>(x);
    }
};

/* ---------------------------------------------------------------- dispatch ---- */

template <class S> LaunchFn cast_to(int dst) {
    switch (dst) {
    case KILN_DTYPE_FLOAT: return fn<CastOp<S, float>>();
    case KILN_DTYPE_FLOAT16: return fn<CastOp<S, f16>>();
    case KILN_DTYPE_BFLOAT16: return fn<CastOp<S, bf16>>();
    case KILN_DTYPE_DOUBLE: return fn<CastOp<S, double>>();
    case KILN_DTYPE_INT8: return fn<CastOp<S, int8_t>>();
    case KILN_DTYPE_UINT8: return fn<CastOp<S, uint8_t>>();
    case KILN_DTYPE_INT16: return fn<CastOp<S, int16_t>>();
    case KILN_DTYPE_INT32: return fn<CastOp<S, int32_t>>();
    case KILN_DTYPE_INT64: return fn<CastOp<S, int64_t>>();
    case KILN_DTYPE_BOOL: return fn<CastOp<S, kbool>>();
    default: return nullptr;
    }
}

LaunchFn pick_cast(int op, const int *dt, int out) {
    if (op != KILN_EW_CAST) return nullptr;
    switch (dt[0]) {
    case KILN_DTYPE_FLOAT: return cast_to<float>(out);
    case KILN_DTYPE_FLOAT16: return cast_to<f16>(out);
    case KILN_DTYPE_BFLOAT16: return cast_to<bf16>(out);
    case KILN_DTYPE_DOUBLE: return cast_to<double>(out);
    case KILN_DTYPE_INT8: return cast_to<int8_t>(out);
    case KILN_DTYPE_UINT8: return cast_to<uint8_t>(out);
    case KILN_DTYPE_INT16: return cast_to<int16_t>(out);
    case KILN_DTYPE_INT32: return cast_to<int32_t>(out);
    case KILN_DTYPE_INT64: return cast_to<int64_t>(out);
    case KILN_DTYPE_BOOL: return cast_to<kbool>(out);
    default: return nullptr;
    }
}

} // namespace kew
