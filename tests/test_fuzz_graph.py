"""Regressions found by tests/fuzz/fuzz_graph.c (docs/fuzzing.md), replayed through the normal
build: each must now fail with a clear error instead of crashing the process."""
import pytest

from util import kiln, node_model


# Ops whose output shapes depend on the data (KILN_OP_DYNAMIC): the runner calls their compute
# without running shape inference first, so compute itself must check its required inputs.
# The fuzzer found StringNormalizer, StringSplit and NonMaxSuppression dereferencing an absent
# required input (a node input named "").
DYNAMIC_OPS = ["StringNormalizer", "StringSplit", "NonMaxSuppression", "NonZero", "Unique", "Compress",
               "SequenceConstruct", "SequenceInsert", "SequenceErase", "SplitToSequence",
               "OptionalGetElement", "ImageDecoder"]


@pytest.mark.parametrize("op", DYNAMIC_OPS)
@pytest.mark.parametrize("n_absent", [1, 2])
def test_dynamic_op_with_absent_required_inputs(op, n_absent):
    m = node_model(op, [("", None)] * n_absent, ["y"], opset=20)
    with pytest.raises(kiln.KilnError) as e:
        kiln.InferenceSession(m.SerializeToString(), threads=1).run(None, {})
    msg = str(e.value)
    assert op in msg and ("missing" in msg or "absent" in msg or "expects" in msg), msg


@pytest.mark.parametrize("op,missing", [("StringNormalizer", 0), ("StringSplit", 0), ("NonMaxSuppression", 0)])
def test_found_by_fuzzer_names_the_missing_input(op, missing):
    m = node_model(op, [("", None)] * (2 if op == "NonMaxSuppression" else 1), ["y"], opset=20)
    with pytest.raises(kiln.KilnError) as e:
        kiln.InferenceSession(m.SerializeToString(), threads=1).run(None, {})
    assert f"required input {missing} is missing" in str(e.value)


def test_large_constant_is_not_folded_at_open():
    """The fuzzer's open finding: a HannWindow of 2^31 points from an initializer used to be
    computed while the session opened (8 GiB, outside any memory limit). Outputs above 64 MiB are
    left to run time, where the session's memory limit refuses them."""
    import resource
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    from util import kiln

    g = helper.make_graph([helper.make_node("HannWindow", ["n"], ["y"])], "g", [],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(np.array(2 ** 31, np.int64), "n")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    opts = kiln.SessionOptions()
    opts.memory_limit = 64 << 20
    s = kiln.InferenceSession(m.SerializeToString(), sess_options=opts)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 512 * 1024  # KiB: far below 8 GiB
    try:
        s.run(None, {})
    except kiln.KilnError as e:
        assert "memory limit" in str(e)
    else:
        raise AssertionError("a 8 GiB output passed a 64 MiB memory limit")


# ---- found by the differential mode (tests/fuzz/differential.py), compared with onnxruntime ----

def test_celu_passes_nan_through():
    """Celu gave 0 for NaN (neither branch of its comparisons held); onnxruntime gives NaN."""
    import numpy as np
    from util import assert_same, run_kiln, run_ort
    rng = np.random.default_rng(9)
    for dt in (np.float32, np.float64):
        x = rng.standard_normal((3, 5)).astype(dt) * 4
        x[0, 1] = x[2, 4] = np.nan
        x[1, 2], x[1, 3] = np.inf, -np.inf
        for alpha in (1.0, 0.5, -2.0):
            m = node_model("Celu", [("x", x)], ["y"], {"alpha": alpha}, opset=12)
            got = run_kiln(m, {"x": x})[0]
            assert np.isnan(got[0, 1]) and np.isnan(got[2, 4])
            if dt == np.float32:
                want = run_ort(m, {"x": x})[0]
            else:  # onnxruntime has no float64 Celu: the specification's formula, NaN kept
                with np.errstate(all="ignore"):
                    want = np.where(np.isnan(x), x, np.maximum(0, x) +
                                    np.minimum(0, alpha * np.expm1(x / alpha))).astype(dt)
            assert_same(got, want, rtol=1e-5, atol=1e-6)


def test_dynamic_quantize_linear_zero_range_reports_scale_one():
    """An input whose range is zero (all zeros, or NaN only) has scale 1 and zero point 0 in
    onnxruntime; kiln reported the formula's 0."""
    import numpy as np
    from util import assert_same, run_kiln, run_ort
    rng = np.random.default_rng(10)
    cases = [np.zeros((4, 3), np.float32), np.array([np.nan, np.nan], np.float32),
             np.zeros((0,), np.float32), rng.standard_normal((2, 7)).astype(np.float32)]
    for x in cases:
        m = node_model("DynamicQuantizeLinear", [("x", x)], ["y", "s", "z"], opset=11)
        want = run_ort(m, {"x": x})
        got = run_kiln(m, {"x": x})
        for g, w, what in zip(got, want, ("y", "scale", "zero point")):
            assert_same(g, w, what=f"{what} of {x.tolist()}")


def _differential():
    import importlib.util
    import os
    path = os.path.join(os.path.dirname(__file__), "fuzz", "differential.py")
    spec = importlib.util.spec_from_file_location("differential", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_differential_compare_rules():
    """The differential mode's comparison: dtype and shape first, NaN places, tolerances by dtype,
    integers exactly."""
    import numpy as np
    d = _differential()
    x = np.array([1.0, np.nan, -0.0, np.inf], np.float32)
    assert d._compare(x.copy(), x) is None
    assert d._compare(np.array([1.0, np.nan, 0.0, np.inf], np.float32), x) is None  # -0 == 0
    assert d._compare(np.array([1.0, 0.0, 0.0, np.inf], np.float32), x)[0] == "nan"
    assert d._compare(np.array([1.0, np.nan, 0.0, -np.inf], np.float32), x)[0] == "values"
    assert d._compare(np.array([1.001, np.nan, 0.0, np.inf], np.float32), x)[0] == "values"
    assert d._compare(np.array([1.001, np.nan, 0.0, np.inf], np.float16), x.astype(np.float16)) is None
    assert d._compare(x.astype(np.float64), x)[0] == "dtype"
    assert d._compare(x[:3], x)[0] == "shape"
    assert d._compare(np.array([5, 7], np.int64), np.array([5, 8], np.int64))[0] == "values"
    assert d._compare([x, x], [x, x]) is None and d._compare([x], [x, x])[0] == "shape"
    assert d._compare(x, x, values=False) is None
    assert d._compare(x + 1, x, values=False) is None


def test_differential_fit_makes_onnxruntime_accept_a_recipe_graph():
    """A graph as recipes make it (an attribute Celu lacks, a repeated one, an int32 input that
    Celu does not take, an extra input and output) is fitted to onnxruntime's schemas and then
    runs there and in kiln with the same result."""
    import numpy as np
    from onnx import TensorProto, helper
    from util import assert_same, run_kiln, run_ort
    d = _differential()
    node = helper.make_node("Celu", ["x", "x"], ["y", "z"], name="n0", alpha=0.5, axis=3)
    node.attribute.append(helper.make_attribute("alpha", 2.0))
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.INT32, [2, 3])],
                          [helper.make_empty_tensor_value_info("y"), helper.make_empty_tensor_value_info("z")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    m = d.fit_to_schemas(m)
    n = [n for n in m.graph.node if n.op_type == "Celu"][0]
    assert [a.name for a in n.attribute] == ["alpha"] and n.attribute[0].f == 0.5
    assert len(n.input) == 1 and list(n.output) == ["y"]
    assert [o.name for o in m.graph.output] == ["y", "c0_0"]  # z dropped, the Cast compared
    x = np.random.default_rng(3).integers(-5, 5, (2, 3)).astype(np.int32)
    want = run_ort(m, {"x": x})
    got = run_kiln(m, {"x": x})
    for g_, w in zip(got, want):
        assert_same(g_, w)


@pytest.mark.parametrize("op", ["DepthToSpace", "SpaceToDepth"])
@pytest.mark.parametrize("blocksize", [2 ** 24 + 1, 2 ** 32, 2 ** 40, 2 ** 62])
def test_huge_blocksize_is_refused(op, blocksize):
    """Found by the confirmation fuzz run: DepthToSpace with blocksize 2^40 squared it in int64
    (wrapping to 0) and then divided the channel count by it (SIGFPE). A blocksize whose square
    passes 2^48 elements is now refused by name."""
    import numpy as np
    rng = np.random.default_rng(11)
    for shape in [(1, 4, 2, 2), (1, 0, 3, 3), (0, 1, 0, 0)]:
        x = rng.standard_normal(shape).astype(np.float32)
        m = node_model(op, [("x", x)], ["y"], {"blocksize": blocksize}, opset=13)
        with pytest.raises(kiln.KilnError) as e:
            kiln.InferenceSession(m.SerializeToString(), threads=1).run(None, {"x": x})
        assert op in str(e.value) and "blocksize" in str(e.value), str(e.value)


@pytest.mark.parametrize("op", ["DepthToSpace", "SpaceToDepth"])
def test_block_ops_still_match_onnxruntime(op):
    import numpy as np
    from util import assert_same, run_kiln, run_ort
    rng = np.random.default_rng(12)
    for b, shape in [(2, (2, 8, 4, 6)), (3, (1, 9, 3, 6))]:
        x = rng.standard_normal(shape).astype(np.float32)
        m = node_model(op, [("x", x)], ["y"], {"blocksize": b}, opset=13)
        assert_same(run_kiln(m, {"x": x})[0], run_ort(m, {"x": x})[0])
