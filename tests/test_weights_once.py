"""Weights held once: a MatMul, Gemm or Conv weight that every consumer packed at open is handed back
(core/weights.c), in both of its forms (bytes mapped in place in the file, and a misaligned
initializer that was copied at load). Outputs must not change, whichever form, whoever else reads
the weight, and whether the model came from a file or from bytes."""
import os
import re
import subprocess

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import ROOT, run_ort, kiln

CLI = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "kiln")


def model(rng, misalign, shared_with_add):
    """MatMul(x, W1) -> Gemm(., W2, transB) -> Reshape -> Conv(., Wc); W1 optionally also read by an Add
    (not packed, and not foldable: its other input is the graph input), so it must be kept. misalign: a leading doc string of odd length shifts every raw
    tensor in the file off its 4-byte alignment."""
    W1 = numpy_helper.from_array(rng.standard_normal((256, 256)).astype(np.float32), "W1")
    W2 = numpy_helper.from_array(rng.standard_normal((64, 256)).astype(np.float32), "W2")
    Wc = numpy_helper.from_array(rng.standard_normal((32, 4, 3, 3)).astype(np.float32), "Wc")
    shape = numpy_helper.from_array(np.array([1, 4, 4, 4], np.int64), "shape")
    nodes = [helper.make_node("MatMul", ["x", "W1"], ["h"]),
             helper.make_node("Gemm", ["h", "W2"], ["g"], transB=1),
             helper.make_node("Reshape", ["g", "shape"], ["r"]),
             helper.make_node("Conv", ["r", "Wc"], ["y"], pads=[1, 1, 1, 1])]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if shared_with_add:
        nodes.append(helper.make_node("Add", ["W1", "x"], ["w2x"]))
        outs.append(helper.make_tensor_value_info("w2x", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 256])], outs,
                          [W1, W2, Wc, shape], doc_string="x" * (3 if misalign else 4))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def info_counts(path):
    out = subprocess.run([CLI, "info", path], capture_output=True, text=True, timeout=120).stdout
    m = re.search(r"packed weights: (\d+) bytes \((\d+) bytes", out)
    c = re.search(r"\((\d+) mapped in place, (\d+) copied", out)
    assert m and c, out
    return int(m.group(1)), int(m.group(2)), int(c.group(2))


@pytest.mark.parametrize("misalign", [False, True])
@pytest.mark.parametrize("shared", [False, True])
def test_packed_weights_handed_back_outputs_unchanged(tmp_path, misalign, shared):
    rng = np.random.default_rng(7 + 2 * misalign + shared)
    m = model(rng, misalign, shared)
    path = str(tmp_path / "m.onnx")
    onnx.save(m, path)
    packed, released, copied = info_counts(path)
    assert packed > 256 * 256 * 4                       # W1, W2 and Wc packed
    w_bytes = (256 * 256 + 64 * 256 + 32 * 36) * 4
    if shared:
        assert released < w_bytes - 256 * 256 * 4 + 4096  # W1 is also read by the Add: kept
    else:
        assert released >= w_bytes - 3 * 2 * 4096       # every weight but page edges handed back
    if misalign:
        assert copied > 0                               # the copied form was exercised
    x = rng.standard_normal((1, 256)).astype(np.float32)
    want = run_ort(m, {"x": x})
    for src in (path, m.SerializeToString()):
        for threads in (1, 2):
            s = kiln.InferenceSession(src, threads=threads)
            for _ in range(2):                          # a second run reads the packed copies again
                got = s.run(None, {"x": x})
                for a, b in zip(got, want):
                    # three chained products of 256-term sums: compare against the output's scale
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4 * np.abs(b).max())
