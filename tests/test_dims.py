"""Free dimension overrides: symbolic dimensions fixed when the session is made (ONNX Runtime's
add_free_dimension_override_by_name). Shape arithmetic then folds away, results stay the same,
and inputs of other sizes are refused by name."""
import os
import subprocess

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import ROOT, kiln

BUILD = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))


def dynamic_reshape_model():
    """y = Reshape(x, [Shape(x)[0], -1]) * 2: shape arithmetic on a symbolic batch."""
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "zero"], ["b"], axis=0),
             helper.make_node("Unsqueeze", ["b", "axes"], ["b1"]),
             helper.make_node("Concat", ["b1", "minus1"], ["shape"], axis=0),
             helper.make_node("Reshape", ["x", "shape"], ["r"]),
             helper.make_node("Mul", ["r", "two"], ["y"])]
    inits = [numpy_helper.from_array(np.array(0, np.int64), "zero"),
             numpy_helper.from_array(np.array([0], np.int64), "axes"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two")]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def test_overrides_fold_shape_arithmetic():
    m = dynamic_reshape_model()
    x = np.random.default_rng(5).uniform(-1, 1, (3, 5, 4)).astype(np.float32)
    free = kiln.InferenceSession(m)
    opts = kiln.SessionOptions()
    opts.add_free_dimension_override_by_name("batch", 3)
    opts.add_free_dimension_override_by_name("seq", 5)
    fixed = kiln.InferenceSession(m, sess_options=opts)
    assert fixed.get_inputs()[0].shape == [3, 5, 4]
    np.testing.assert_array_equal(fixed.run(None, {"x": x})[0], free.run(None, {"x": x})[0])
    assert fixed.plan_stats()["nodes"] < free.plan_stats()["nodes"]
    assert fixed.plan_stats()["nodes"] <= 2  # Reshape (a view) and Mul remain
    with pytest.raises(kiln.KilnError, match="the model expects float32\\[3,5,4\\]"):
        fixed.run(None, {"x": np.zeros((2, 5, 4), np.float32)})


def test_unknown_or_malformed_override_is_refused():
    m = dynamic_reshape_model()
    opts = kiln.SessionOptions()
    opts.add_free_dimension_override_by_name("batchh", 3)
    with pytest.raises(kiln.KilnError, match="no symbolic dimension 'batchh' \\(it has: 'batch', 'seq'\\)"):
        kiln.InferenceSession(m, sess_options=opts)
    with pytest.raises(ValueError):
        kiln.SessionOptions().add_free_dimension_override_by_name("batch", -1)


def test_cli_free_dim(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(dynamic_reshape_model())
    out = subprocess.run([os.path.join(BUILD, "kiln"), "info", str(path), "--free-dim", "batch=2", "--free-dim",
                          "seq=7"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "x: float32[2, 7, 4]" in out.stdout
    bad = subprocess.run([os.path.join(BUILD, "kiln"), "bench", str(path), "--free-dim", "batch"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "NAME=N" in bad.stderr
