/* One-input element-wise kernels: math (Abs Neg Sign Exp Log Sqrt Reciprocal Sin Cos Floor Ceil
 * Round Erf), activations (Relu Sigmoid Tanh LeakyRelu Elu Selu Softplus HardSigmoid HardSwish
 * Mish Gelu, com.microsoft FastGelu/QuickGelu) and the predicates IsNaN IsInf Not. The formulas
 * follow the CPU kernels (src/cpu/kernels/unary.c, activation.c, contrib_elementwise.c) so both
 * providers give the same values up to the libraries' last-ulp differences. */
#include "elementwise_impl.cuh"

namespace kew {

/* comparisons rather than fminf/fmaxf, so NaN passes through */
__device__ __forceinline__ float clamp01(float v) {
    v = v > 1.0f ? 1.0f : v;
    return v < 0.0f ? 0.0f : v;
}
/* x tanh(softplus(x)) = x n / (n + 2) with n = e^x (e^x + 2); past x = 20 the ratio is 1 */
__device__ __forceinline__ float mish(float x) {
    const float e = expf(x < 20.0f ? x : 20.0f), n = e * (e + 2.0f);
    return x * (n / (n + 2.0f));
}

/* F::f(p, x) over the accumulator type X (float for the half types). */
#define KEW_UNARY_F(NAME, EXPR)                                                                    \
    struct NAME {                                                                                  \
        template <class X> static __device__ __forceinline__ X f([[maybe_unused]] const Params &p, X x) { \
            return EXPR;                                                                           \
        }                                                                                          \
    };

/* integer forms negate through the unsigned type, so INT_MIN wraps instead of overflowing */
struct AbsF {
    template <class X> static __device__ __forceinline__ X f(const Params &, X x) {
        if constexpr (std::is_integral<X>::value) return x < 0 ? wrap_neg(x) : x;
        else return fabsf(x);
    }
};
KEW_UNARY_F(NegF, wrap_neg(x))
KEW_UNARY_F(SignF, x > 0 ? (X)1 : (x < 0 ? (X)-1 : x)) /* keeps NaN and the zero's sign */
KEW_UNARY_F(ReluF, x < 0 ? (X)0 : x)                   /* NaN passes through */
KEW_UNARY_F(ExpF, expf(x))
KEW_UNARY_F(LogF, logf(x))
KEW_UNARY_F(SqrtF, sqrtf(x))
KEW_UNARY_F(ReciprocalF, 1.0f / x)
KEW_UNARY_F(SinF, sinf(x))
KEW_UNARY_F(CosF, cosf(x))
KEW_UNARY_F(FloorF, floorf(x))
KEW_UNARY_F(CeilF, ceilf(x))
KEW_UNARY_F(RoundF, rintf(x)) /* half to even, as ONNX asks */
KEW_UNARY_F(ErfF, erff(x))
KEW_UNARY_F(SigmoidF, sigmoidf_(x))
KEW_UNARY_F(TanhF, tanhf(x))
KEW_UNARY_F(LeakyReluF, x >= 0 ? x : p.alpha * x)
KEW_UNARY_F(EluF, x >= 0 ? x : p.alpha * expm1f(x))
KEW_UNARY_F(SeluF, x > 0 ? p.gamma * x : p.gamma * p.alpha * expm1f(x))
KEW_UNARY_F(SoftplusF, x > 0 ? x + log1pf(expf(-x)) : log1pf(expf(x)))
KEW_UNARY_F(HardSigmoidF, clamp01(p.alpha * x + p.beta))
KEW_UNARY_F(HardSwishF, x * clamp01(x * (1.0f / 6) + 0.5f))
KEW_UNARY_F(MishF, mish(x))
KEW_UNARY_F(GeluF, p.mode ? gelu_tanh(x) : gelu_erf(x))
KEW_UNARY_F(FastGeluF, fast_gelu(x))
KEW_UNARY_F(QuickGeluF, x * sigmoidf_(p.alpha * x))
#undef KEW_UNARY_F

struct IsNanF {
    static __device__ __forceinline__ bool f(const Params &, float x) { return x != x; }
};
/* mode bit 0: detect -inf, bit 1: detect +inf */
struct IsInfF {
    static __device__ __forceinline__ bool f(const Params &p, float x) {
        return isinf(x) && ((x < 0 ? p.mode & 1 : p.mode & 2) != 0);
    }
};

struct NotOp : UnaryShape<kbool> {
    static __device__ __forceinline__ kbool apply(const Params &, kbool a) { return kbool{(uint8_t)(a.v == 0)}; }
};

/* ---------------------------------------------------------------- dispatch ---- */

template <class F> LaunchFn un_num(int dt) {
#define X(T) return fn<Un<T, F>>();
    KEW_SWITCH_NUM(dt, X)
#undef X
    return nullptr;
}
template <class F> LaunchFn un_float(int dt) {
#define X(T) return fn<Un<T, F>>();
    KEW_SWITCH_FLOAT(dt, X)
#undef X
    return nullptr;
}
template <class F> LaunchFn pred_float(int dt) {
#define X(T) return fn<UnPred<T, F>>();
    KEW_SWITCH_FLOAT(dt, X)
#undef X
    return nullptr;
}

LaunchFn pick_unary(int op, const int *dt, int out) {
    const int t = dt[0];
    switch (op) {
    case KILN_EW_ISNAN: return out == KILN_DTYPE_BOOL ? pred_float<IsNanF>(t) : nullptr;
    case KILN_EW_ISINF: return out == KILN_DTYPE_BOOL ? pred_float<IsInfF>(t) : nullptr;
    case KILN_EW_NOT: return t == KILN_DTYPE_BOOL && out == KILN_DTYPE_BOOL ? fn<NotOp>() : nullptr;
    default: break;
    }
    if (out != t) return nullptr;
    switch (op) {
    case KILN_EW_ABS: return un_num<AbsF>(t);
    case KILN_EW_NEG: return un_num<NegF>(t);
    case KILN_EW_SIGN: return un_num<SignF>(t);
    case KILN_EW_RELU: return un_num<ReluF>(t);
    case KILN_EW_EXP: return un_float<ExpF>(t);
    case KILN_EW_LOG: return un_float<LogF>(t);
    case KILN_EW_SQRT: return un_float<SqrtF>(t);
    case KILN_EW_RECIPROCAL: return un_float<ReciprocalF>(t);
    case KILN_EW_SIN: return un_float<SinF>(t);
    case KILN_EW_COS: return un_float<CosF>(t);
    case KILN_EW_FLOOR: return un_float<FloorF>(t);
    case KILN_EW_CEIL: return un_float<CeilF>(t);
    case KILN_EW_ROUND: return un_float<RoundF>(t);
    case KILN_EW_ERF: return un_float<ErfF>(t);
    case KILN_EW_SIGMOID: return un_float<SigmoidF>(t);
    case KILN_EW_TANH: return un_float<TanhF>(t);
    case KILN_EW_LEAKY_RELU: return un_float<LeakyReluF>(t);
    case KILN_EW_ELU: return un_float<EluF>(t);
    case KILN_EW_SELU: return un_float<SeluF>(t);
    case KILN_EW_SOFTPLUS: return un_float<SoftplusF>(t);
    case KILN_EW_HARD_SIGMOID: return un_float<HardSigmoidF>(t);
    case KILN_EW_HARD_SWISH: return un_float<HardSwishF>(t);
    case KILN_EW_MISH: return un_float<MishF>(t);
    case KILN_EW_GELU: return un_float<GeluF>(t);
    case KILN_EW_FAST_GELU: return un_float<FastGeluF>(t);
    case KILN_EW_QUICK_GELU: return un_float<QuickGeluF>(t);
    default: return nullptr;
    }
}

} // namespace kew
