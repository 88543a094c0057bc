/* Element-wise kernels: the C entry points (kiln_cuda_ew_launch and friends), the broadcast
 * planner, and the binary arithmetic ops (Add Sub Mul Div Max Min Mod Pow, the Mean step and the
 * biased Gelus). Comparisons, logic, Where, Clip and BiasAdd are in elementwise_logic.cu, the
 * unary ops in elementwise_unary.cu, Cast in elementwise_cast.cu. */
#include "elementwise_impl.cuh"

#include <math.h>
#include <string.h>

namespace kew {

/* ---------------------------------------------------------------- arithmetic ---- */

struct AddF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b) { return wrap_add(a, b); }
};
struct SubF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b) { return wrap_sub(a, b); }
};
struct MulF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b) { return wrap_mul(a, b); }
};
/* Integer division truncates toward zero (C's /). The CPU kernel rejects zero divisors before it
 * starts; a kernel cannot report one without a sync, so a zero divisor gives 0 here. -1 is
 * special-cased so INT_MIN / -1 wraps like the CPU's. */
struct DivF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b) {
        if constexpr (std::is_integral<X>::value) return b == -1 ? wrap_neg(a) : (b ? (X)(a / b) : (X)0);
        else return a / b;
    }
};
/* NaN in either operand wins, as in onnxruntime and numpy.maximum */
struct MaxF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b) {
        if constexpr (std::is_integral<X>::value) return a > b ? a : b;
        else return (a != a || a > b) ? a : b;
    }
};
struct MinF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b) {
        if constexpr (std::is_integral<X>::value) return a < b ? a : b;
        else return (a != a || a < b) ? a : b;
    }
};
/* Integers: mode 1 (fmod) takes the dividend's sign (C's %), mode 0 the divisor's (Python's %).
 * Floats: always fmod (ONNX requires fmod=1 for them). */
struct ModF {
    template <class X> static __device__ __forceinline__ X f(const Params &p, X a, X b) {
        if constexpr (std::is_integral<X>::value) {
            if (b == 0 || b == -1) return 0;
            const X r = (X)(a % b);
            if (p.mode) return r;
            return (r != 0 && ((r < 0) != (b < 0))) ? (X)(r + b) : r;
        } else {
            return fmodf(a, b);
        }
    }
};
/* Same-type float power; squaring (the common case, LayerNorm's variance) skips powf. */
struct PowF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b) {
        return b == 2.0f ? a * a : powf(a, b);
    }
};
struct MeanLastF {
    template <class X> static __device__ __forceinline__ X f(const Params &p, X a, X b) { return (a + b) / p.alpha; }
};
struct BiasGeluF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b) { return gelu_erf(a + b); }
};
struct FastGeluBiasF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X a, X b) { return fast_gelu(a + b); }
};

/* An integer base to a non-negative integral power, exactly: the magnitude in 64-bit integers
 * (anything past 2^64 is out of int64's range whatever its digits), then rounded to double once,
 * which is what the CPU's correctly rounded pow gives before its truncation. CUDA's pow may be an
 * ulp off, which the truncation to an integer would expose. Other exponents go through pow. */
__device__ __forceinline__ double pow_for_int_base(double x, double e) {
    if (!(e >= 0 && e < 4294967296.0 && e == floor(e))) return pow(x, e);
    uint64_t k = (uint64_t)e, m = (uint64_t)fabs(x), r = 1;
    const bool negative = x < 0 && (k & 1u);
    bool over = false;
    while (k) {
        if (k & 1u) {
            over |= __umul64hi(r, m) != 0;
            r *= m;
        }
        k >>= 1;
        if (k) {
            over |= __umul64hi(m, m) != 0 && r != 0;
            m *= m;
        }
    }
    const double mag = over ? 1e300 : (double)r;
    return negative ? -mag : mag;
}

/* Mixed types (and integer bases): the power in double, converted to the base's type (integers
 * truncating as x86 does), as the CPU kernel computes it. */
template <class TB, class TE> struct PowMixed : BinaryShape<TB, TE, TB, false> {
    static __device__ __forceinline__ TB apply(const Params &, TB a, TE b) {
        const double x = to_f64(a), e = to_f64(b);
        if constexpr (std::is_integral<TB>::value) {
            const int64_t v = f64_to_i64(pow_for_int_base(x, e));
            return (TB)(typename Unsigned<TB>::type)(uint64_t)v;
        } else {
            return from_acc<TB>((float)pow(x, e));
        }
    }
};

template <class F> LaunchFn arith_num(int dt) {
#define X(T) return fn<Bin<T, F>>();
    KEW_SWITCH_NUM(dt, X)
#undef X
    return nullptr;
}
template <class F> LaunchFn arith_float(int dt) {
#define X(T) return fn<Bin<T, F>>();
    KEW_SWITCH_FLOAT(dt, X)
#undef X
    return nullptr;
}

template <class TB, class TE> LaunchFn pow_pair() {
    if constexpr (std::is_same<TB, TE>::value && !std::is_integral<TB>::value) return fn<Bin<TB, PowF>>();
    else return fn<PowMixed<TB, TE>>();
}
template <class TB> LaunchFn pow_for_base(int exp_dt) {
    switch (exp_dt) {
    case KILN_DTYPE_FLOAT: return pow_pair<TB, float>();
    case KILN_DTYPE_FLOAT16: return pow_pair<TB, f16>();
    case KILN_DTYPE_BFLOAT16: return pow_pair<TB, bf16>();
    case KILN_DTYPE_DOUBLE: return pow_pair<TB, double>();
    case KILN_DTYPE_INT32: return pow_pair<TB, int32_t>();
    case KILN_DTYPE_INT64: return pow_pair<TB, int64_t>();
    default: return nullptr;
    }
}

LaunchFn pick_binary(int op, const int *dt, int out) {
    if (op == KILN_EW_POW) {
        if (out != dt[0]) return nullptr;
#define X(T) return pow_for_base<T>(dt[1]);
        KEW_SWITCH_NUM(dt[0], X)
#undef X
        return nullptr;
    }
    if (dt[0] != dt[1] || out != dt[0]) return nullptr;
    switch (op) {
    case KILN_EW_ADD: return arith_num<AddF>(dt[0]);
    case KILN_EW_SUB: return arith_num<SubF>(dt[0]);
    case KILN_EW_MUL: return arith_num<MulF>(dt[0]);
    case KILN_EW_DIV: return arith_num<DivF>(dt[0]);
    case KILN_EW_MAX: return arith_num<MaxF>(dt[0]);
    case KILN_EW_MIN: return arith_num<MinF>(dt[0]);
    case KILN_EW_MOD: return arith_num<ModF>(dt[0]);
    case KILN_EW_MEAN_LAST: return arith_float<MeanLastF>(dt[0]);
    case KILN_EW_BIAS_GELU: return arith_float<BiasGeluF>(dt[0]);
    case KILN_EW_FAST_GELU_BIAS: return arith_float<FastGeluBiasF>(dt[0]);
    default: return nullptr;
    }
}

/* ---------------------------------------------------------------- planning ---- */

enum { kHostMaxRank = 32 };

/* Folds out's shape and the inputs' broadcast strides into as few axes as possible: size-1 axes
 * go, and neighbouring axes merge where every operand walks them as one (contiguous for it, or
 * repeated for it). Afterwards each operand's innermost stride is 1 or 0. */
static kiln_status plan(Args &a, int nin, const kiln_ew_operand *in, const kiln_ew_operand *out) {
    const int R = out->rank;
    if (R < 0 || R > kHostMaxRank)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "element-wise: output rank %d is not supported", R);
    int64_t full[kMaxIn][kHostMaxRank];
    a.n = 1;
    for (int i = 0; i < R; i++) a.n *= out->dims[i];
    for (int k = 0; k < nin; k++) {
        const int r = in[k].rank, off = R - r;
        if (r < 0 || r > R)
            return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT,
                                  "element-wise: input %d has rank %d, more than the output's %d", k, r, R);
        int64_t s = 1;
        for (int i = R - 1; i >= 0; i--) {
            const int j = i - off;
            if (j < 0 || in[k].dims[j] == 1) {
                full[k][i] = 0;
                continue;
            }
            if (in[k].dims[j] != out->dims[i])
                return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT,
                                      "element-wise: input %d dim %d is %lld, which does not broadcast to %lld",
                                      k, j, (long long)in[k].dims[j], (long long)out->dims[i]);
            full[k][i] = s;
            s *= in[k].dims[j];
        }
    }
    int r = 0;
    for (int i = 0; i < R; i++) {
        if (out->dims[i] == 1) continue; /* size-1 axes move nothing */
        bool merge = r > 0;
        for (int k = 0; k < nin && merge; k++)
            if (a.st[k][r - 1] != full[k][i] * out->dims[i]) merge = false;
        if (merge) {
            a.dims[r - 1] *= out->dims[i];
            for (int k = 0; k < nin; k++) a.st[k][r - 1] = full[k][i];
            continue;
        }
        if (r == kMaxRank)
            return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED,
                                  "element-wise: the broadcast folds into more than %d axes", kMaxRank);
        a.dims[r] = out->dims[i];
        for (int k = 0; k < nin; k++) a.st[k][r] = full[k][i];
        r++;
    }
    if (r == 0) { /* a single element */
        a.dims[0] = 1;
        for (int k = 0; k < nin; k++) a.st[k][0] = 0;
        r = 1;
    }
    a.rank = r;
    a.rep = 0;
    for (int k = 0; k < nin; k++)
        if (a.st[k][r - 1] == 0) a.rep |= 1u << k;
    return KILN_OK;
}

static LaunchFn pick(int op, const int *in_dt, int out_dt) {
    LaunchFn f = pick_unary(op, in_dt, out_dt);
    if (!f) f = pick_binary(op, in_dt, out_dt);
    if (!f) f = pick_logic(op, in_dt, out_dt);
    if (!f) f = pick_cast(op, in_dt, out_dt);
    return f;
}

} // namespace kew

extern "C" int kiln_cuda_ew_arity(int op) {
    if (op < 0 || op >= KILN_EW_COUNT) return 0;
    if (op <= KILN_EW_CAST) return 1;
    if (op <= KILN_EW_XOR) return 2;
    return 3;
}

extern "C" int kiln_cuda_ew_supported(int op, const int *in_dtypes, int out_dtype) {
    return kiln_cuda_ew_arity(op) > 0 && kew::pick(op, in_dtypes, out_dtype) != nullptr;
}

extern "C" kiln_status kiln_cuda_ew_launch(void *stream, int op, const kiln_ew_operand *in,
                                           const kiln_ew_operand *out, const kiln_ew_params *params) {
    const int nin = kiln_cuda_ew_arity(op);
    if (!nin) return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT, "element-wise: unknown op %d", op);
    int dts[kew::kMaxIn] = {0, 0, 0};
    for (int k = 0; k < nin; k++) dts[k] = in[k].dtype;
    const kew::LaunchFn f = kew::pick(op, dts, out->dtype);
    if (!f)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED,
                              "element-wise: no CUDA kernel for op %d over element types %d/%d/%d -> %d",
                              op, dts[0], dts[1], dts[2], out->dtype);
    kew::Args a;
    memset(&a, 0, sizeof a);
    const kiln_status st = kew::plan(a, nin, in, out);
    if (st != KILN_OK || a.n == 0) return st;
    a.out = const_cast<void *>(out->data);
    for (int k = 0; k < nin; k++) a.in[k] = in[k].data;
    if (params) {
        a.p.alpha = params->alpha;
        a.p.beta = params->beta;
        a.p.gamma = params->gamma;
        a.p.mode = params->mode;
    }
    return f((cudaStream_t)stream, a);
}
