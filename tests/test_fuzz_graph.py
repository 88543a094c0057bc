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
