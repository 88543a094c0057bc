"""MatMul, Gemm, MatMulInteger, Einsum, Det and com.microsoft FusedMatMul against onnxruntime
(numpy where onnxruntime lacks the type, e.g. bfloat16 and integer Gemm)."""
import os
import sys

import ml_dtypes
import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, node_model, rand, run_kiln, run_ort  # noqa: E402
from int8_oracle import check_int8  # noqa: E402  (exact numpy oracle for 8-bit products)

F32, F64, F16 = np.float32, np.float64, np.float16
INTS = [np.int32, np.int64, np.uint32, np.uint64]
BF16 = ml_dtypes.bfloat16


def tol(dt, k=8):
    if dt == F16:
        return dict(rtol=1e-2, atol=2e-3 * k)
    if dt == F32:
        return dict(rtol=1e-4, atol=1e-5 * k)
    return dict(rtol=1e-10, atol=1e-12)


def cast_wrapped(op, inputs, attrs, opset, to=TensorProto.BFLOAT16, domain=""):
    """float32 inputs -> Cast(to) -> op -> Cast(float32): exercises types the Python API and
    onnxruntime cannot feed directly (bfloat16)."""
    nodes, vis, names = [], [], []
    for name, arr in inputs:
        vis.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, arr.shape))
        nodes.append(helper.make_node("Cast", [name], [name + "_c"], to=to))
        names.append(name + "_c")
    nodes.append(helper.make_node(op, names, ["y_c"], domain=domain or None, **attrs))
    nodes.append(helper.make_node("Cast", ["y_c"], ["y"], to=TensorProto.FLOAT))
    g = helper.make_graph(nodes, "g", vis, [helper.make_empty_tensor_value_info("y")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 10
    return m


def bf16_round(a):
    return np.asarray(a, np.float32).astype(BF16).astype(np.float32)


# ---------------- MatMul ----------------

MATMUL_SHAPES = [
    ((3, 4), (4, 5)),
    ((4,), (4, 5)),
    ((3, 4), (4,)),
    ((4,), (4,)),
    ((2, 3, 4), (4, 5)),
    ((2, 3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 6)),
    ((3, 4), (2, 4, 5)),
    ((1, 33), (33, 70)),
    ((70, 33), (33, 1)),
    ((2, 3, 4), (4,)),
    ((4,), (3, 4, 2)),
    ((96, 130), (130, 75)),
    ((3, 40, 48), (3, 48, 64)),
    ((3, 0, 4), (4, 5)),
]


@pytest.mark.parametrize("sa,sb", MATMUL_SHAPES)
def test_matmul_f32_shapes(sa, sb):
    rng = np.random.default_rng(1)
    a, b = rand(rng, sa), rand(rng, sb)
    check(node_model("MatMul", [("a", a), ("b", b)], ["y"], opset=13), {"a": a, "b": b},
          **tol(F32, sa[-1]))


@pytest.mark.parametrize("dt", [F64, F16] + INTS)
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 7), (7, 5)), ((2, 1, 3, 4), (3, 4, 2)),
                                   ((5,), (5, 3))])
def test_matmul_dtypes(dt, sa, sb):
    rng = np.random.default_rng(2)
    a, b = rand(rng, sa, dt), rand(rng, sb, dt)
    check(node_model("MatMul", [("a", a), ("b", b)], ["y"], opset=13), {"a": a, "b": b},
          **tol(dt, sa[-1]))


@pytest.mark.parametrize("opset", [1, 9, 13])
def test_matmul_opsets(opset):
    rng = np.random.default_rng(3)
    a, b = rand(rng, (2, 5, 6)), rand(rng, (6, 3))
    check(node_model("MatMul", [("a", a), ("b", b)], ["y"], opset=opset), {"a": a, "b": b},
          **tol(F32))


def test_matmul_int_wraps():
    a = np.array([[2 ** 30, 3], [5, -7]], np.int32)
    b = np.array([[4, 1], [1, 2 ** 29]], np.int32)
    check(node_model("MatMul", [("a", a), ("b", b)], ["y"]), {"a": a, "b": b})


@pytest.mark.parametrize("dt", [F32, F16])
def test_matmul_constant_b(dt):
    """B as an initializer: float16 B is converted once at session creation."""
    rng = np.random.default_rng(4)
    a, b = rand(rng, (2, 7, 16), dt), rand(rng, (16, 9), dt)
    m = node_model("MatMul", [("a", a), ("b", b)], ["y"], initializers={"b": b})
    for _ in range(2):
        check(m, {"a": a}, **tol(dt, 16))


def test_matmul_bf16():
    rng = np.random.default_rng(5)
    a, b = rand(rng, (2, 3, 8)), rand(rng, (8, 5))
    got = run_kiln(cast_wrapped("MatMul", [("a", a), ("b", b)], {}, 13), {"a": a, "b": b})[0]
    want = bf16_round(bf16_round(a) @ bf16_round(b))
    np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("threads", [1, 2])
def test_matmul_threads(threads):
    rng = np.random.default_rng(6)
    a, b = rand(rng, (5, 64, 80)), rand(rng, (5, 80, 48))
    check(node_model("MatMul", [("a", a), ("b", b)], ["y"]), {"a": a, "b": b}, threads=threads,
          **tol(F32, 80))
    a, b = rand(rng, (200, 150)), rand(rng, (150, 190))
    check(node_model("MatMul", [("a", a), ("b", b)], ["y"]), {"a": a, "b": b}, threads=threads,
          **tol(F32, 150))


@pytest.mark.parametrize("sa,sb,msg", [
    ((2, 3), (4, 5), "inner dimensions 3 and 4 differ"),
    ((2, 2, 3), (3, 3, 4), "cannot be broadcast"),
])
def test_matmul_errors(sa, sb, msg):
    a, b = np.ones(sa, F32), np.ones(sb, F32)
    m = node_model("MatMul", [("a", a), ("b", b)], ["y"])
    m.graph.input[0].type.tensor_type.ClearField("shape")
    m.graph.input[1].type.tensor_type.ClearField("shape")
    with pytest.raises(Exception, match=msg):
        run_kiln(m, {"a": a, "b": b})


def test_matmul_error_message_names_shapes():
    a, b = np.ones((2, 3), F32), np.ones((4, 5), F32)
    m = node_model("MatMul", [("a", a), ("b", b)], ["y"])
    m.graph.input[0].type.tensor_type.ClearField("shape")
    m.graph.input[1].type.tensor_type.ClearField("shape")
    with pytest.raises(Exception, match=r"A is \[2,3\], B is \[4,5\]"):
        run_kiln(m, {"a": a, "b": b})


# ---------------- Gemm ----------------

GEMM_CASES = [
    dict(sa=(3, 4), sb=(4, 5), sc=(3, 5)),
    dict(sa=(4, 3), sb=(4, 5), sc=(5,), transA=1),
    dict(sa=(3, 4), sb=(5, 4), sc=(1, 5), transB=1),
    dict(sa=(4, 3), sb=(5, 4), sc=(3, 1), transA=1, transB=1, alpha=0.5, beta=2.0),
    dict(sa=(3, 4), sb=(4, 5), sc=(), alpha=-1.5),
    dict(sa=(3, 4), sb=(4, 5), sc=None),
    dict(sa=(1, 64), sb=(64, 130), sc=(130,), transB=0),
    dict(sa=(70, 64), sb=(90, 64), sc=(90,), transB=1),
    dict(sa=(3, 4), sb=(4, 5), sc=(3, 5), beta=0.0),
]


def gemm_model(case, a, b, c, opset, dt=F32, const_b=False):
    attrs = {k: case[k] for k in ("transA", "transB", "alpha", "beta") if k in case}
    inputs = [("a", a), ("b", b)] + ([("c", c)] if c is not None else [])
    inits = {"b": b} if const_b else {}
    if c is not None and c.ndim == 0:  # the Python binding cannot feed 0-d arrays yet
        inits["c"] = c
    return node_model("Gemm", inputs, ["y"], attrs, opset=opset, initializers=inits)


@pytest.mark.parametrize("case", GEMM_CASES)
@pytest.mark.parametrize("dt", [F32, F64, F16])
def test_gemm(case, dt):
    rng = np.random.default_rng(7)
    a, b = rand(rng, case["sa"], dt), rand(rng, case["sb"], dt)
    c = rand(rng, case["sc"], dt) if case["sc"] is not None else None
    feeds = {"a": a, "b": b}
    if c is not None and c.ndim:
        feeds["c"] = c
    check(gemm_model(case, a, b, c, 13, dt), feeds, **tol(dt, 64))


@pytest.mark.parametrize("opset", [6, 7, 9, 11])
def test_gemm_opsets(opset):
    rng = np.random.default_rng(8)
    a, b, c = rand(rng, (3, 6)), rand(rng, (6, 4)), rand(rng, (4,))
    attrs = {"alpha": 0.7, "beta": 1.3}
    if opset < 7:
        attrs["broadcast"] = 1
    m = node_model("Gemm", [("a", a), ("b", b), ("c", c)], ["y"], attrs, opset=opset)
    if opset < 7:  # onnxruntime has no Gemm-6 kernel
        got = run_kiln(m, {"a": a, "b": b, "c": c})[0]
        assert_same(got, (0.7 * (a @ b) + 1.3 * c).astype(F32), **tol(F32))
    else:
        check(m, {"a": a, "b": b, "c": c}, **tol(F32))


def test_gemm_constant_b_f16():
    rng = np.random.default_rng(9)
    case = dict(sa=(5, 16), sb=(12, 16), sc=(12,), transB=1)
    a, b, c = rand(rng, (5, 16), F16), rand(rng, (12, 16), F16), rand(rng, (12,), F16)
    m = gemm_model(case, a, b, c, 13, F16, const_b=True)
    check(m, {"a": a, "c": c}, **tol(F16, 16))


@pytest.mark.parametrize("dt", INTS)
def test_gemm_int(dt):
    """onnxruntime has no integer Gemm: numpy is the oracle."""
    rng = np.random.default_rng(10)
    a, b, c = rand(rng, (3, 4), dt), rand(rng, (5, 3), dt), rand(rng, (5,), dt)
    m = node_model("Gemm", [("a", a), ("b", b), ("c", c)], ["y"], {"transA": 1, "transB": 1})
    got = run_kiln(m, {"a": a, "b": b, "c": c})[0]
    want = (a.T.astype(np.int64) @ b.T.astype(np.int64) + c.astype(np.int64)).astype(dt)
    assert_same(got, want)
    m = node_model("Gemm", [("a", a), ("b", b)], ["y"], {"transA": 1, "transB": 1})
    assert_same(run_kiln(m, {"a": a, "b": b})[0], (a.T.astype(np.int64) @ b.T.astype(np.int64)).astype(dt))


def test_gemm_bf16():
    rng = np.random.default_rng(11)
    a, b, c = rand(rng, (3, 8)), rand(rng, (8, 4)), rand(rng, (4,))
    m = cast_wrapped("Gemm", [("a", a), ("b", b), ("c", c)], {"alpha": 2.0, "beta": 0.5}, 13)
    got = run_kiln(m, {"a": a, "b": b, "c": c})[0]
    want = bf16_round(2.0 * (bf16_round(a) @ bf16_round(b)) + 0.5 * bf16_round(c))
    np.testing.assert_allclose(got, want, rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("sa,sb,sc,msg", [
    ((3, 4), (5, 6), (3, 6), "inner dimensions 4 and 5 differ"),
    ((3, 4, 1), (4, 5), (3, 5), "rank 3, expected 2"),
    ((3, 4), (4, 5), (2, 5), "cannot be broadcast"),
])
def test_gemm_errors(sa, sb, sc, msg):
    a, b, c = np.ones(sa, F32), np.ones(sb, F32), np.ones(sc, F32)
    m = node_model("Gemm", [("a", a), ("b", b), ("c", c)], ["y"])
    for i in range(3):
        m.graph.input[i].type.tensor_type.ClearField("shape")
    with pytest.raises(Exception, match=msg):
        run_kiln(m, {"a": a, "b": b, "c": c})


# ---------------- MatMulInteger ----------------

@pytest.mark.parametrize("ta,tb", [(np.uint8, np.uint8), (np.int8, np.int8), (np.uint8, np.int8),
                                   (np.int8, np.uint8)])
@pytest.mark.parametrize("sa,sb", [((3, 4), (4, 5)), ((2, 3, 4), (4, 6)), ((2, 3, 300), (2, 300, 7))])
def test_matmul_integer(ta, tb, sa, sb):
    rng = np.random.default_rng(12)
    info_a, info_b = np.iinfo(ta), np.iinfo(tb)
    a = rng.integers(info_a.min, info_a.max + 1, sa).astype(ta)
    b = rng.integers(info_b.min, info_b.max + 1, sb).astype(tb)
    za = np.array(rng.integers(info_a.min, info_a.max + 1), ta)
    zb = np.array(rng.integers(info_b.min, info_b.max + 1), tb)
    # 0-d zero points as initializers (the Python binding cannot feed 0-d arrays yet)
    # against exact int64 numpy sums; onnxruntime too where its products are exact (its AVX2
    # u8 x s8 kernel saturates at int16 on CPUs without VNNI: see tests/int8_oracle.py)
    m = node_model("MatMulInteger", [("a", a), ("b", b), ("za", za), ("zb", zb)], ["y"], opset=10,
                   initializers={"za": za, "zb": zb})
    check_int8(m, {"a": a, "b": b})
    m = node_model("MatMulInteger", [("a", a), ("b", b)], ["y"], opset=10)
    check_int8(m, {"a": a, "b": b})


def test_matmul_integer_per_column_and_row():
    rng = np.random.default_rng(13)
    a = rng.integers(0, 256, (3, 5)).astype(np.uint8)
    b = rng.integers(-128, 128, (5, 4)).astype(np.int8)
    za = rng.integers(0, 256, (3,)).astype(np.uint8)
    zb = rng.integers(-128, 128, (4,)).astype(np.int8)
    m = node_model("MatMulInteger", [("a", a), ("b", b), ("za", za), ("zb", zb)], ["y"], opset=10)
    got = run_kiln(m, {"a": a, "b": b, "za": za, "zb": zb})[0]
    want = (a.astype(np.int32) - za.astype(np.int32)[:, None]) @ (b.astype(np.int32) - zb.astype(np.int32))
    assert_same(got, want)
    # per-column zero points of B alone: onnxruntime supports this form (and is a second oracle
    # where its u8 x s8 products are exact)
    m = node_model("MatMulInteger", [("a", a), ("b", b), ("", None), ("zb", zb)], ["y"], opset=10)
    got = check_int8(m, {"a": a, "b": b, "zb": zb})[0]
    assert_same(got, (a.astype(np.int64) @ (b.astype(np.int64) - zb.astype(np.int64))).astype(np.int32))


# ---------------- FusedMatMul ----------------

@pytest.mark.parametrize("attrs,sa,sb", [
    ({"alpha": 0.5}, (2, 3, 4), (2, 4, 5)),
    ({"transA": 1}, (2, 4, 3), (4, 5)),
    ({"transB": 1, "alpha": 2.0}, (3, 4), (5, 4)),
    ({"transA": 1, "transB": 1}, (2, 2, 4, 3), (2, 5, 4)),
    ({"transBatchA": 1}, (3, 2, 4), (2, 4, 5)),
    ({"transBatchB": 1, "transB": 1}, (2, 3, 4), (5, 2, 4)),
])
def test_fused_matmul(attrs, sa, sb):
    rng = np.random.default_rng(14)
    a, b = rand(rng, sa), rand(rng, sb)
    m = node_model("FusedMatMul", [("a", a), ("b", b)], ["y"], attrs, domain="com.microsoft")
    check(m, {"a": a, "b": b}, **tol(F32))


# ---------------- Einsum ----------------

EINSUM_CASES = [
    ("ij,jk->ik", [(3, 4), (4, 5)]),
    ("ij,jk", [(3, 4), (4, 5)]),
    ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
    ("bij,jk->bik", [(2, 3, 4), (4, 5)]),
    ("ij->ji", [(3, 4)]),
    ("ij->", [(3, 4)]),
    ("ii->i", [(4, 4)]),
    ("ii", [(4, 4)]),
    ("iij->ij", [(3, 3, 2)]),
    ("i,i->", [(5,), (5,)]),
    ("i,j->ij", [(3,), (4,)]),
    ("...ij,...jk->...ik", [(2, 3, 4), (2, 4, 5)]),
    ("...ij,...jk->...ik", [(2, 1, 3, 4), (5, 4, 6)]),
    ("b...i,b...i->b...", [(2, 3, 4), (2, 3, 4)]),
    ("bhqd,bhkd->bhqk", [(2, 3, 5, 4), (2, 3, 6, 4)]),
    ("bhqk,bhkd->bhqd", [(2, 3, 5, 6), (2, 3, 6, 4)]),
    ("ijk,ikl,ilm->ijm", [(2, 3, 4), (2, 4, 5), (2, 5, 3)]),
    ("abc,cd->abd", [(2, 3, 4), (4, 5)]),
    ("abc,bd->adc", [(2, 3, 4), (3, 5)]),
    ("ij,ij->ij", [(3, 4), (3, 4)]),
    ("ijk->kji", [(2, 3, 4)]),
    ("ij,kj->ik", [(3, 4), (5, 4)]),
    ("i...->...", [(3, 2, 4)]),
    ("ab,ab,ab->a", [(3, 4), (3, 4), (3, 4)]),
    ("ik,jk,j->i", [(3, 4), (5, 4), (5,)]),
    ("ij,jk->", [(3, 4), (4, 5)]),
    ("iaj,ajb->ab", [(3, 2, 4), (2, 4, 5)]),
]


@pytest.mark.parametrize("eq,shapes", EINSUM_CASES)
def test_einsum_f32(eq, shapes):
    rng = np.random.default_rng(15)
    arrs = [rand(rng, s) for s in shapes]
    inputs = [(f"x{i}", a) for i, a in enumerate(arrs)]
    m = node_model("Einsum", inputs, ["y"], {"equation": eq}, opset=12)
    feeds = dict(inputs)
    got = run_kiln(m, feeds)[0]
    want = np.einsum(eq, *[a.astype(np.float64) for a in arrs]).astype(F32)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    try:
        ort = run_ort(m, feeds)[0]
    except Exception:
        return  # a few equations are outside onnxruntime's Einsum; numpy already checked
    assert_same(got, ort, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("dt", [F64, F16, np.int32, np.int64])
@pytest.mark.parametrize("eq,shapes", [("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]), ("ij->j", [(3, 4)]),
                                       ("ii->i", [(3, 3)]), ("i,j->ij", [(3,), (2,)])])
def test_einsum_dtypes(dt, eq, shapes):
    rng = np.random.default_rng(16)
    arrs = [rand(rng, s, dt) for s in shapes]
    inputs = [(f"x{i}", a) for i, a in enumerate(arrs)]
    m = node_model("Einsum", inputs, ["y"], {"equation": eq}, opset=12)
    check(m, dict(inputs), **tol(dt, 4))


@pytest.mark.parametrize("dt", [np.int8, np.uint8, np.int16, np.uint16, np.uint32, np.uint64])
def test_einsum_small_ints(dt):
    rng = np.random.default_rng(17)
    a, b = rand(rng, (2, 3), dt, low=0, high=0.5), rand(rng, (3, 2), dt, low=0, high=0.5)
    m = node_model("Einsum", [("a", a), ("b", b)], ["y"], {"equation": "ij,jk->ik"}, opset=12)
    got = run_kiln(m, {"a": a, "b": b})[0]
    assert_same(got, np.einsum("ij,jk->ik", a, b))


@pytest.mark.parametrize("eq,shapes,msg", [
    ("ij,jk->ik", [(3, 4), (5, 6)], "size"),
    ("ij->k", [(3, 4)], "output"),
    ("ijk->ij", [(3, 4)], "rank"),
    ("ij,jk->ik", [(3, 4)], "operand"),
])
def test_einsum_errors(eq, shapes, msg):
    arrs = [np.ones(s, F32) for s in shapes]
    inputs = [(f"x{i}", a) for i, a in enumerate(arrs)]
    m = node_model("Einsum", inputs, ["y"], {"equation": eq}, opset=12)
    for vi in m.graph.input:
        vi.type.tensor_type.ClearField("shape")
    with pytest.raises(Exception, match=msg):
        run_kiln(m, dict(inputs))


# ---------------- Det ----------------

@pytest.mark.parametrize("shape", [(3, 3), (1, 1), (2, 4, 4), (2, 3, 5, 5), (6, 6)])
@pytest.mark.parametrize("dt", [F32, F16, F64])
def test_det(shape, dt):
    rng = np.random.default_rng(18)
    x = rand(rng, shape, dt, low=-1, high=1)
    m = node_model("Det", [("x", x)], ["y"], opset=11)
    if dt == F64:  # onnxruntime's Det has no double kernel
        got = run_kiln(m, {"x": x})[0]
        assert_same(got, np.linalg.det(x), rtol=1e-10, atol=1e-12)
    else:
        check(m, {"x": x}, rtol=1e-3 if dt == F32 else 2e-2, atol=1e-4 if dt == F32 else 2e-2)


def test_det_singular_and_errors():
    x = np.array([[1, 2], [2, 4]], F32)
    got = run_kiln(node_model("Det", [("x", x)], ["y"], opset=11), {"x": x})[0]
    assert abs(float(got)) < 1e-6
    x = np.ones((2, 3), F32)
    m = node_model("Det", [("x", x)], ["y"], opset=11)
    m.graph.input[0].type.tensor_type.ClearField("shape")
    with pytest.raises(Exception, match="square"):
        run_kiln(m, {"x": x})
