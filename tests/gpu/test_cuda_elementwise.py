"""The CUDA element-wise family (src/cuda/ops/elementwise*.c, src/cuda/kernels/elementwise*.cu)
against kiln's CPU provider, through the differential harness: binary arithmetic with numpy
broadcasting, variadic Max/Min/Sum/Mean, Pow with mixed types, comparisons and logic, Where,
the unary math and activations, Clip (inputs and attributes), the com.microsoft Gelu family,
BiasAdd, Cast and CastLike, plus the forms the CUDA kernels decline (the node must fall back).

Skips everywhere but a machine where libkiln's CUDA provider loads and a GPU is present."""
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cuda_diff import BF16, BOOL, F16, F32, F64, I32, I64, BF16Array, check, rand  # noqa: E402

FLOATS = [F32, F16, BF16]
INTS = [I32, I64]
MS = "com.microsoft"

# (A, B): same shape (vector path, odd length), trailing bias, both-sided broadcasting, rank 4,
# scalars either side, a size-1 output, > 2^20 elements, an empty output
BIN_SHAPES = [
    ((4, 9), (4, 9)),
    ((3, 5, 7), (7,)),
    ((2, 16, 768), (768,)),
    ((4, 1, 5), (1, 3, 1)),
    ((2, 3, 4, 5), (3, 1, 5)),
    ((17,), ()),
    ((), (6, 5)),
    ((1, 1), (1,)),
    ((8, 1), (8, 16)),
    (((1 << 20) + 3,), ((1 << 20) + 3,)),
    ((3, 1 << 19), (1 << 19,)),
    ((2, 0, 3), (3,)),
]
SHAPE_IDS = ["same", "trail", "bias", "both", "rank4", "scalar_b", "scalar_a", "one", "col",
             "large", "large_bias", "empty"]
UNARY_SHAPES = [(7,), (33, 65), ((1 << 20) + 5,), (0, 4)]


def nonzero_ints(shape, dtype, low=1, high=9):
    """Integers of either sign, never zero (divisors)."""
    mag = rand(shape, dtype, low, high)
    sign = np.where(rand(shape, BOOL), 1, -1).astype(mag.dtype)
    return np.asarray(mag * sign)


def with_specials(x, dtype):
    """x with NaN, +inf and -inf in its first elements (float types)."""
    if isinstance(x, BF16Array):
        f = x.f32.copy().ravel()
        f[:3] = [np.nan, np.inf, -np.inf]
        return BF16Array(f.reshape(x.shape))
    shape = np.shape(x)
    x = np.array(x).ravel()
    x[:3] = [np.nan, np.inf, -np.inf]
    return x.reshape(shape)


# ---------------------------------------------------------------- binary arithmetic ----

@pytest.mark.parametrize("shapes", BIN_SHAPES, ids=SHAPE_IDS)
@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div"])
def test_arith_float(op, dt, shapes):
    a, b = shapes
    check(op, [("a", rand(a, dt)), ("b", rand(b, dt))])


@pytest.mark.parametrize("dt", INTS)
@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min"])
def test_arith_int(op, dt):
    a = rand((5, 1, 33), dt, -1000, 1000)
    b = nonzero_ints((4, 33), dt)
    check(op, [("a", a), ("b", b)])
    # rank 2: integer vectors fed from the host are shape arithmetic, which placement keeps on the CPU
    check(op, [("a", rand((2, 1001), dt, -50, 50)), ("b", nonzero_ints((2, 1001), dt))])


@pytest.mark.parametrize("dt", INTS)
def test_int_wraps(dt):
    info = np.iinfo(np.int32 if dt == I32 else np.int64)
    a = np.array([info.min, info.max, info.min, -7, 7, info.max // 3 + 7], dtype=info.dtype)
    b = np.array([-1, 1, 1, 2, -2, 5], dtype=info.dtype)
    # rank 2: integer vectors fed from the host are shape arithmetic, which placement keeps on the CPU
    a, b = a.reshape(2, 3), b.reshape(2, 3)
    for op in ["Add", "Sub", "Mul", "Div", "Mod"]:
        check(op, [("a", a), ("b", b)])


@pytest.mark.parametrize("fmod", [0, 1])
@pytest.mark.parametrize("dt", INTS)
def test_mod_int(dt, fmod):
    check("Mod", [("a", rand((7, 40), dt, -100, 100)), ("b", nonzero_ints((40,), dt))], attrs={"fmod": fmod})


@pytest.mark.parametrize("dt", FLOATS)
def test_mod_float(dt):
    check("Mod", [("a", rand((7, 40), dt, -10, 10)), ("b", rand((40,), dt, 0.5, 3))], attrs={"fmod": 1})


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_nan(op, dt):
    a = with_specials(rand((64,), dt), dt)
    check(op, [("a", a), ("b", rand((64,), dt))])


def test_legacy_broadcast():
    """Opset 6 with broadcast=1, axis=1: B lines up with A's axes 1 and 2."""
    check("Add", [("a", rand((2, 3, 4, 5))), ("b", rand((3, 4)))], attrs={"broadcast": 1, "axis": 1},
          opset=6)
    check("Mul", [("a", rand((2, 3, 4, 5))), ("b", rand((4, 5)))], attrs={"broadcast": 1}, opset=6)


# ---------------------------------------------------------------- Pow ----

@pytest.mark.parametrize("dt", FLOATS)
def test_pow_float(dt):
    check("Pow", [("a", rand((6, 129), dt, 0.1, 3)), ("b", rand((129,), dt, -2, 2))])
    check("Pow", [("a", rand((6, 129), dt, -3, 3)), ("b", np.array(2.0, np.float32) if dt == F32 else
                                                    rand((), dt, 2, 2))], const_inputs=["b"])


@pytest.mark.parametrize("base,exp", [(F32, I64), (F16, F32), (BF16, I32), (F32, F64), (I64, I64),
                                      (I32, I32), (I32, F32), (I64, F16)])
def test_pow_mixed(base, exp):
    if base in INTS:
        a = rand((4, 65), base, -6, 6)
    else:
        a = rand((4, 65), base, 0.2, 3)
    b = rand((65,), exp, 0, 5) if exp in INTS else rand((65,), exp, -2, 3)
    if base in INTS and exp not in INTS:
        b = np.asarray(np.round(np.asarray(b)), dtype=np.asarray(b).dtype)
    check("Pow", [("a", a), ("b", b)])


def test_pow_int_large():
    """Powers up to 12^14 (< 2^53, so exact in double on both sides; past 2^53 the CPU's libm pow
    may round an exact tie the other way)."""
    a = rand((2, 100), I64, 2, 12)  # rank 2: integer vectors from the host stay on the CPU
    b = rand((2, 100), I64, 5, 14)
    check("Pow", [("a", a), ("b", b)])


# ---------------------------------------------------------------- variadic ----

@pytest.mark.parametrize("dt", FLOATS + INTS)
@pytest.mark.parametrize("op", ["Max", "Min"])
def test_max_min_variadic(op, dt):
    ins = [("a", rand((4, 1, 6), dt, -50, 50)), ("b", rand((3, 1), dt, -50, 50)), ("c", rand((6,), dt, -50, 50))]
    check(op, ins)
    check(op, ins[:1])


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("op", ["Sum", "Mean"])
def test_sum_mean(op, dt):
    check(op, [("a", rand((4, 1, 6), dt)), ("b", rand((3, 1), dt)), ("c", rand((6,), dt)), ("d", rand((4, 3, 6), dt))])
    check(op, [("a", rand((5, 7), dt)), ("b", rand((7,), dt))])
    check(op, [("a", rand((5, 7), dt))])


# ---------------------------------------------------------------- comparisons, logic, Where ----

@pytest.mark.parametrize("shapes", BIN_SHAPES[:6] + BIN_SHAPES[-1:], ids=SHAPE_IDS[:6] + SHAPE_IDS[-1:])
@pytest.mark.parametrize("dt", FLOATS + INTS)
@pytest.mark.parametrize("op", ["Equal", "Less", "LessOrEqual", "Greater", "GreaterOrEqual"])
def test_compare(op, dt, shapes):
    a, b = shapes
    if dt in INTS and len(a) <= 1 and len(b) <= 1:
        a = (1,) + tuple(a)  # integer vectors are shape arithmetic, which placement keeps on the host
    lo, hi = (-3, 3) if dt in INTS else (-1, 1)
    check(op, [("a", rand(a, dt, lo, hi)), ("b", rand(b, dt, lo, hi))])


def test_equal_bool():
    check("Equal", [("a", rand((5, 1, 7), BOOL)), ("b", rand((4, 7), BOOL))])


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logic(op):
    check(op, [("a", rand((5, 1, 7), BOOL)), ("b", rand((4, 7), BOOL))])
    check(op, [("a", rand((1, 10007), BOOL)), ("b", rand((1, 10007), BOOL))])


def test_not():
    check("Not", [("a", rand((1, 10007), BOOL))])
    check("Not", [("a", rand((0, 3), BOOL))])


@pytest.mark.parametrize("dt", FLOATS + INTS + [BOOL, F64])
def test_where(dt):
    check("Where", [("c", rand((4, 1, 5), BOOL)), ("x", rand((1, 3, 5), dt, -9, 9)), ("y", rand((5,), dt, -9, 9))])
    check("Where", [("c", rand((1, 10007), BOOL)), ("x", rand((1, 10007), dt, -9, 9)), ("y", rand((1, 10007), dt, -9, 9))])
    check("Where", [("c", rand((), BOOL)), ("x", rand((3, 8), dt, -9, 9)), ("y", rand((8,), dt, -9, 9))])


def test_where_int8_uint8():
    for npt in (np.int8, np.uint8, np.int16):
        x = (rand((6, 7), I32, 0, 100)).astype(npt)
        y = (rand((7,), I32, 0, 100)).astype(npt)
        check("Where", [("c", rand((6, 1), BOOL)), ("x", x), ("y", y)])


# ---------------------------------------------------------------- unary ----

UNARY_DOMAIN = {"Log": (0.01, 5), "Sqrt": (0.0, 5), "Reciprocal": (0.25, 4), "Exp": (-10, 10),
                "Sigmoid": (-20, 20), "Softplus": (-20, 20), "Mish": (-10, 25), "Tanh": (-5, 5),
                "Erf": (-4, 4), "Sin": (-6, 6), "Cos": (-6, 6), "Floor": (-9, 9), "Ceil": (-9, 9),
                "Round": (-9, 9)}
UNARY_FLOAT = ["Abs", "Neg", "Sign", "Relu", "Exp", "Log", "Sqrt", "Reciprocal", "Sin", "Cos", "Floor",
               "Ceil", "Round", "Erf", "Sigmoid", "Tanh", "Softplus", "HardSwish", "Mish", "Elu", "Selu",
               "LeakyRelu", "HardSigmoid"]


@pytest.mark.parametrize("shape", UNARY_SHAPES, ids=["odd", "2d", "large", "empty"])
@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("op", UNARY_FLOAT)
def test_unary_float(op, dt, shape):
    lo, hi = UNARY_DOMAIN.get(op, (-4, 4))
    x = rand(shape, dt, lo, hi)
    if op == "Round":  # exact halves: ties go to even
        x = rand(shape, dt, lo, hi)
        x = BF16Array(np.floor(x.f32 * 2) / 2) if dt == BF16 else (np.floor(x * 2) / 2).astype(x.dtype)
    check(op, [("x", x)])


@pytest.mark.parametrize("op,attrs", [("LeakyRelu", {"alpha": 0.2}), ("Elu", {"alpha": 0.7}),
                                      ("Selu", {"alpha": 1.5, "gamma": 1.1}),
                                      ("HardSigmoid", {"alpha": 0.3, "beta": 0.4})])
@pytest.mark.parametrize("dt", FLOATS)
def test_activation_attrs(op, attrs, dt):
    check(op, [("x", rand((3, 1001), dt, -5, 5))], attrs=attrs)


@pytest.mark.parametrize("dt", INTS)
@pytest.mark.parametrize("op", ["Abs", "Neg", "Sign", "Relu"])
def test_unary_int(op, dt):
    x = rand((7, 143), dt, -100, 100)  # 2-D: integer vectors are shape arithmetic, kept on the host
    x[0, 0] = np.iinfo(x.dtype).min
    check(op, [("x", x)])


@pytest.mark.parametrize("approx", ["none", "tanh"])
@pytest.mark.parametrize("dt", FLOATS)
def test_gelu(dt, approx):
    check("Gelu", [("x", rand((4, 77, 64), dt, -5, 5))], attrs={"approximate": approx})


@pytest.mark.parametrize("dt", FLOATS)
def test_isnan_isinf(dt):
    x = with_specials(rand((3, 50), dt), dt)
    check("IsNaN", [("x", x)])
    for neg in (0, 1):
        for pos in (0, 1):
            check("IsInf", [("x", x)], attrs={"detect_negative": neg, "detect_positive": pos})


# ---------------------------------------------------------------- Clip ----

@pytest.mark.parametrize("dt", FLOATS + INTS)
def test_clip(dt):
    lo, hi = (-50, 50) if dt in INTS else (-3, 3)
    x = rand((7, 131), dt, lo, hi)
    mn = rand((), dt, lo // 2, -1) if dt in INTS else rand((), dt, -1.5, -0.5)
    mx = rand((), dt, 1, hi // 2) if dt in INTS else rand((), dt, 0.5, 1.5)
    check("Clip", [("x", x), ("min", mn), ("max", mx)])
    check("Clip", [("x", x), ("min", mn), ("max", mx)], const_inputs=["min", "max"])
    check("Clip", [("x", x), ("min", mn)])
    check("Clip", [("x", x), ("min", None), ("max", mx)])
    check("Clip", [("x", x)])


@pytest.mark.parametrize("dt", [F32, F16])  # Clip-6 predates bfloat16
def test_clip_attributes(dt):
    x = with_specials(rand((5, 99), dt, -3, 3), dt)
    check("Clip", [("x", x)], attrs={"min": -0.5, "max": 0.75}, opset=6)
    check("Clip", [("x", x)], attrs={"max": 1.0}, opset=6)


def test_clip_nan_passes():
    x = with_specials(rand((64,), F32), F32)
    check("Clip", [("x", x), ("min", np.array(-1, np.float32)), ("max", np.array(1, np.float32))])


# ---------------------------------------------------------------- com.microsoft ----

@pytest.mark.parametrize("dt", FLOATS)
def test_ms_gelu_family(dt):
    x = rand((2, 37, 96), dt, -4, 4)
    bias = rand((96,), dt)
    check("Gelu", [("x", x)], domain=MS)
    check("FastGelu", [("x", x)], domain=MS)
    check("FastGelu", [("x", x), ("bias", bias)], domain=MS)
    check("BiasGelu", [("a", x), ("b", bias)], domain=MS)
    check("QuickGelu", [("x", x)], domain=MS)
    check("QuickGelu", [("x", x)], attrs={"alpha": 1.5}, domain=MS)


@pytest.mark.parametrize("dt", [F32, F16])
def test_bias_add(dt):
    check("BiasAdd", [("x", rand((2, 33, 64), dt)), ("bias", rand((64,), dt)), ("skip", rand((2, 33, 64), dt))],
          domain=MS)


# ---------------------------------------------------------------- Cast ----

CAST_TYPES = {F32: np.float32, F16: np.float16, F64: np.float64, I32: np.int32, I64: np.int64,
              BOOL: np.bool_, "int8": np.int8, "uint8": np.uint8, "int16": np.int16}
ONNX_OF = {"int8": 3, "uint8": 2, "int16": 5}
FLOAT_SPECIALS = [0.0, -0.0, 1.5, -1.5, 2.5, -2.5, 127.7, -128.9, 255.5, 300.0, -300.0, 65504.0, 70000.0,
                  1e10, -1e10, 3e9, -3e9, 1e-8, 0.1, np.inf, -np.inf, np.nan]
INT_SPECIALS = [0, 1, -1, 2, 127, 128, -129, 255, 256, 32767, 40000, -40000, 2**31 - 1, -2**31, 2**40 + 1,
                2**53 + 1, 2**63 - 1, -2**63, 3000000001, 2049, 16777217]


def cast_source(src, n=997):
    """Values of type src covering the special cases of every target, repeated to n."""
    npt = CAST_TYPES[src]
    if src == BOOL:
        return rand((n,), BOOL)
    if np.issubdtype(npt, np.floating):
        with np.errstate(over="ignore", invalid="ignore"):
            v = np.array(FLOAT_SPECIALS * (n // len(FLOAT_SPECIALS) + 1), np.float64)[:n].astype(npt)
        return np.where(np.arange(n) % 3 == 2, rand((n,), F32, -300, 300).astype(npt), v)
    v = np.array(INT_SPECIALS * (n // len(INT_SPECIALS) + 1), dtype=object)[:n]
    bits = 8 * np.dtype(npt).itemsize  # wrap into the type like a C conversion
    return np.array([((int(x) + (1 << (bits - 1))) % (1 << bits)) - (1 << (bits - 1)) if np.issubdtype(npt, np.signedinteger)
                     else int(x) % (1 << bits) for x in v], dtype=npt)


def onnx_type(t):
    return ONNX_OF.get(t, t)


@pytest.mark.parametrize("dst", list(CAST_TYPES), ids=str)
@pytest.mark.parametrize("src", list(CAST_TYPES), ids=str)
def test_cast(src, dst):
    # one row of a matrix: integer and bool vectors are shape arithmetic, which stays on the host
    check("Cast", [("x", cast_source(src).reshape(1, -1))], attrs={"to": onnx_type(dst)})


@pytest.mark.parametrize("other", list(CAST_TYPES), ids=str)
def test_cast_bfloat16(other):
    """To bfloat16 through CastLike (a bfloat16 'like' makes the harness return float32); from
    bfloat16 through Cast of a BF16Array input."""
    like = BF16Array(np.zeros((1,), np.float32))
    check("CastLike", [("x", cast_source(other)), ("like", like)])
    src = BF16Array(np.array(cast_source(F32), np.float32))
    check("Cast", [("x", src)], attrs={"to": onnx_type(other)})


def test_cast_large_and_empty():
    check("Cast", [("x", rand(((1 << 20) + 7,), F32))], attrs={"to": F16})
    check("Cast", [("x", rand(((1 << 20) + 7,), F16))], attrs={"to": F32})
    check("Cast", [("x", rand((0, 5), F32))], attrs={"to": I64})
    check("Cast", [("x", rand((9, 4), F32))], attrs={"to": F32})  # same type: a copy


def test_castlike():
    check("CastLike", [("x", rand((3, 70), F32, -300, 300)), ("like", np.zeros((1,), np.int32))])
    check("CastLike", [("x", rand((3, 70), I64, -300, 300)), ("like", np.zeros((2,), np.float16))])


# ---------------------------------------------------------------- declined forms ----

def test_fallback_float64_math():
    check("Add", [("a", rand((4, 5), F64)), ("b", rand((5,), F64))], expect_cuda=False)
    check("Exp", [("x", rand((4, 5), F64))], expect_cuda=False)
    check("Pow", [("a", rand((4, 5), F64, 0.5, 2)), ("b", rand((5,), F64))], expect_cuda=False)


def test_fallback_small_ints():
    x = rand((40,), I32, -100, 100).astype(np.int8)
    check("Abs", [("x", x)], expect_cuda=False)
    check("Add", [("a", x), ("b", x)], expect_cuda=False)


def test_fallback_cast_unsupported_type():
    check("Cast", [("x", rand((40,), F32, 0, 100))], attrs={"to": 12}, expect_cuda=False)  # uint32
    check("Cast", [("x", rand((40,), I32, 0, 100).astype(np.uint16))], attrs={"to": F32}, expect_cuda=False)


def test_fallback_rank_above_8():
    a = rand((2, 1, 2, 1, 2, 1, 2, 1, 2))
    b = rand((1, 2, 1, 2, 1, 2, 1, 2, 1))
    check("Add", [("a", a), ("b", b)], expect_cuda=False)


def test_fallback_constant_zero_divisor():
    """An integer Div by a constant holding 0 stays on the CPU, which reports the error."""
    import kiln
    from cuda_diff import _model, cuda_available
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    b = np.array([1, 0, 2], np.int64)
    m = _model("Div", [("a", rand((3,), I64, -9, 9)), ("b", b)], {}, "", None, 1, ("b",))
    s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert dict(s.node_placement()).get("node") == "CPUExecutionProvider"
