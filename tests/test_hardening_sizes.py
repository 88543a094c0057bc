"""Shapes whose element counts or byte sizes overflow (issue 9, item 1): each case gets a clear
error naming the node or input, never a crash or a wrapped, too-small buffer. Every case runs in
a child process, so that a crash shows up as a failed test rather than taking pytest down; where
onnxruntime refuses the same model, the test checks that it does."""
import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import ROOT

HERE = os.path.dirname(os.path.abspath(__file__))
KILN_CLI = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "kiln")

# 7 * 7905747460161236407 wraps to 1 modulo 2^64: the wrapped count matches a one-element input
WRAPS_TO_ONE = 7905747460161236407


def make_model(nodes, inputs, outputs, inits=(), opset=18):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def run_child(code, *args):
    """Runs `code` in a fresh interpreter with tests/ on the path; returns the JSON it prints last
    (or the crash)."""
    prelude = "import sys, json; sys.path.insert(0, %r)\n" % HERE
    p = subprocess.run([sys.executable, "-c", prelude + textwrap.dedent(code), *args],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, f"child crashed (rc {p.returncode}): {p.stderr[-2000:]}"
    return json.loads(p.stdout.strip().splitlines()[-1])


RUN_BOTH = """
import numpy as np
from util import kiln, run_ort
model_path, feeds_path = sys.argv[1], sys.argv[2]
data = open(model_path, "rb").read()
feeds = dict(np.load(feeds_path))
res = {}
try:
    outs = kiln.InferenceSession(data).run(None, feeds)
    res["kiln"] = "ok " + repr([o.shape for o in outs])
except kiln.KilnError as e:
    res["kiln"] = "error " + str(e)
if "--ort" in sys.argv:
    try:
        outs = run_ort(data, feeds)
        res["ort"] = "ok " + repr([o.shape for o in outs])
    except Exception as e:
        res["ort"] = "error " + str(e)
print(json.dumps(res))
"""


def run_both(tmp_path, model, feeds, ort=True):
    mp, fp = tmp_path / "m.onnx", tmp_path / "feeds.npz"
    mp.write_bytes(model.SerializeToString())
    np.savez(fp, **feeds)
    return run_child(RUN_BOTH, str(mp), str(fp), *(["--ort"] if ort else []))


def assert_refused(res, *words):
    msg = res["kiln"]
    assert msg.startswith("error "), f"kiln accepted the model: {msg}"
    for w in words:
        assert w in msg, f"{w!r} not in {msg!r}"
    if "ort" in res:
        assert res["ort"].startswith("error "), f"onnxruntime accepted it: {res['ort']}"


def test_reshape_to_a_wrapping_shape_then_slice(tmp_path):
    """The target shape's count wraps to 1, matching the one-element input; a Slice after it used
    to read far out of bounds."""
    m = make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape_huge"),
         helper.make_node("Slice", ["r", "starts", "ends", "axes"], ["y"], name="slice_after")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0], np.int64), "starts"),
         numpy_helper.from_array(np.array([1000000], np.int64), "ends"),
         numpy_helper.from_array(np.array([1], np.int64), "axes")])
    res = run_both(tmp_path, m, {"x": np.ones(1, np.float32),
                                 "shape": np.array([7, WRAPS_TO_ONE], np.int64)})
    assert_refused(res, "reshape_huge", str(WRAPS_TO_ONE))


def test_reshape_to_a_wrapping_constant_shape(tmp_path):
    """The same with the shape an initializer, which constant folding and static inference see."""
    m = make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["r"], name="reshape_const"),
         helper.make_node("Slice", ["r", "starts", "ends"], ["y"], name="slice_after")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([7, WRAPS_TO_ONE], np.int64), "shape"),
         numpy_helper.from_array(np.array([0, 0], np.int64), "starts"),
         numpy_helper.from_array(np.array([7, 1000000], np.int64), "ends")])
    res = run_both(tmp_path, m, {"x": np.ones(1, np.float32)}, ort=False)
    assert_refused(res, "reshape_const")


@pytest.mark.parametrize("shape", [[7, WRAPS_TO_ONE], [1 << 32, 1 << 32], [1 << 62, 4]])
def test_expand_to_a_huge_shape(tmp_path, shape):
    m = make_model(
        [helper.make_node("Expand", ["x", "shape"], ["y"], name="expand_huge")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [len(shape)])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    res = run_both(tmp_path, m, {"x": np.ones(1, np.float32), "shape": np.array(shape, np.int64)})
    assert_refused(res, "expand_huge")


def test_constant_of_shape_2_40_squared(tmp_path):
    m = make_model(
        [helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill_huge")],
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    res = run_both(tmp_path, m, {"shape": np.array([1 << 40, 1 << 40], np.int64)})
    assert_refused(res, "fill_huge")


def test_tile_repeats_overflowing(tmp_path):
    m = make_model(
        [helper.make_node("Tile", ["x", "repeats"], ["y"], name="tile_huge")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3]),
         helper.make_tensor_value_info("repeats", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    res = run_both(tmp_path, m, {"x": np.ones((2, 3), np.float32),
                                 "repeats": np.array([1 << 62, 1 << 62], np.int64)})
    assert_refused(res, "tile_huge")


def test_onehot_depth_2_62(tmp_path):
    m = make_model(
        [helper.make_node("OneHot", ["idx", "depth", "values"], ["y"], name="onehot_huge")],
        [helper.make_tensor_value_info("idx", TensorProto.INT64, [3]),
         helper.make_tensor_value_info("depth", TensorProto.INT64, [])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.array([0, 1], np.float32), "values")])
    res = run_both(tmp_path, m, {"idx": np.array([0, 1, 2], np.int64),
                                 "depth": np.array(1 << 62, np.int64)})
    assert_refused(res, "onehot_huge")


def test_range_with_a_huge_count(tmp_path):
    m = make_model(
        [helper.make_node("Range", ["start", "limit", "delta"], ["y"], name="range_huge")],
        [helper.make_tensor_value_info(n, TensorProto.INT64, []) for n in ("start", "limit", "delta")],
        [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    res = run_both(tmp_path, m, {"start": np.array(-(1 << 62), np.int64),
                                 "limit": np.array(1 << 62, np.int64), "delta": np.array(1, np.int64)})
    assert_refused(res, "range_huge")


def test_pad_to_a_huge_shape(tmp_path):
    m = make_model(
        [helper.make_node("Pad", ["x", "pads"], ["y"], name="pad_huge")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 2]),
         helper.make_tensor_value_info("pads", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    res = run_both(tmp_path, m, {"x": np.ones((2, 2), np.float32),
                                 "pads": np.array([0, 0, 1 << 40, 1 << 40], np.int64)})
    assert_refused(res, "pad_huge")


def test_resize_sizes_huge(tmp_path):
    m = make_model(
        [helper.make_node("Resize", ["x", "", "", "sizes"], ["y"], name="resize_huge")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 2, 2]),
         helper.make_tensor_value_info("sizes", TensorProto.INT64, [4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    res = run_both(tmp_path, m, {"x": np.ones((1, 1, 2, 2), np.float32),
                                 "sizes": np.array([1, 1, 1 << 40, 1 << 40], np.int64)})
    assert_refused(res, "resize_huge")


def test_npy_input_with_a_huge_shape(tmp_path):
    """A .npy header declaring shape (2^62, 4) (whose count wraps to 0) is refused by `kiln run`."""
    if not os.path.exists(KILN_CLI):
        pytest.skip("the kiln CLI is not built")
    m = make_model([helper.make_node("Identity", ["x"], ["y"], name="id")],
                   [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    mp = tmp_path / "m.onnx"
    mp.write_bytes(m.SerializeToString())
    for shape in ("(4611686018427387904, 4)", "(4611686018427387904, 2)", "(65536, 65536, 65536)"):
        hdr = "{'descr': '<f4', 'fortran_order': False, 'shape': %s, }" % shape
        hdr += " " * ((64 - (10 + len(hdr) + 1) % 64) % 64) + "\n"
        npy = tmp_path / "x.npy"
        npy.write_bytes(b"\x93NUMPY\x01\x00" + len(hdr).to_bytes(2, "little") + hdr.encode() + b"\0" * 64)
        p = subprocess.run([KILN_CLI, "run", str(mp), "--input", f"x={npy}"], capture_output=True,
                           text=True, timeout=60)
        assert p.returncode not in (0,) and p.returncode > 0, (p.returncode, p.stderr)
        assert "x.npy" in p.stderr or "'x'" in p.stderr, p.stderr
        assert "too large" in p.stderr or "truncated" in p.stderr, p.stderr


KILN_RUN_DIMS = """
import ctypes
import numpy as np
import onnx
from onnx import TensorProto, helper
import util  # noqa: F401  (puts python/ on the path)
from kiln import _lib
lib = _lib.load()
g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "g",
                      [helper.make_tensor_value_info("x", TensorProto.FLOAT, None)],
                      [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])
m.ir_version = 8
data = m.SerializeToString()
sess = ctypes.c_void_p()
assert lib.kiln_session_open_bytes(data, len(data), None, ctypes.byref(sess)) == 0
res = {}
buf = (ctypes.c_float * 16)()
for label, dims in (("wrap_to_1", [7, %d]), ("wrap_to_0", [1 << 62, 4]), ("huge", [1 << 30, 1 << 30])):
    d = (ctypes.c_int64 * len(dims))(*dims)
    desc = _lib.TensorDesc(1, len(dims), d, ctypes.cast(buf, ctypes.c_void_p), 0)
    names = (ctypes.c_char_p * 1)(b"x")
    outs = (ctypes.c_void_p * 1)()
    st = lib.kiln_run(sess, 1, names, ctypes.byref(desc), 0, None, outs)
    res[label] = [st, lib.kiln_session_error(sess).decode() if st else ""]
lib.kiln_session_close(sess)
print(json.dumps(res))
""" % WRAPS_TO_ONE


def test_kiln_run_dims_that_overflow():
    res = run_child(KILN_RUN_DIMS)
    for label, (st, msg) in res.items():
        assert st != 0, f"{label}: kiln_run accepted it"
        assert "input 'x'" in msg and "too large" in msg, f"{label}: {msg}"


BIG = (1 << 63) - 1


def test_split_sizes_whose_sum_wraps(tmp_path):
    """[2^63-1, 2^63-1, 3] adds up to 1 modulo 2^64, the size of the axis."""
    m = make_model(
        [helper.make_node("Split", ["x", "split"], ["a", "b", "c"], name="split_wrap", axis=0)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("split", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in "abc"])
    res = run_both(tmp_path, m, {"x": np.ones(1, np.float32), "split": np.array([BIG, BIG, 3], np.int64)})
    assert_refused(res, "split_wrap", "overflow")


def test_split_to_sequence_sizes_whose_sum_wraps(tmp_path):
    m = make_model(
        [helper.make_node("SplitToSequence", ["x", "split"], ["s"], name="seqsplit_wrap", axis=0),
         helper.make_node("SequenceLength", ["s"], ["n"], name="len")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
         helper.make_tensor_value_info("split", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("n", TensorProto.INT64, None)])
    # onnxruntime 1.32 accepts this one (its sum wraps too): no comparison
    res = run_both(tmp_path, m, {"x": np.ones(1, np.float32), "split": np.array([BIG, BIG, 3], np.int64)},
                   ort=False)
    assert_refused(res, "seqsplit_wrap", "overflow")


def test_tile_message_names_the_overflow(tmp_path):
    m = make_model(
        [helper.make_node("Tile", ["x", "repeats"], ["y"], name="tile_wrap")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3]),
         helper.make_tensor_value_info("repeats", TensorProto.INT64, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    # 3 * 6148914691236517206 wraps to 2 modulo 2^64
    res = run_both(tmp_path, m, {"x": np.ones(3, np.float32), "repeats": np.array([6148914691236517206], np.int64)})
    assert_refused(res, "tile_wrap", "overflows")


def test_reshape_minus_one_with_dims_that_wrap(tmp_path):
    """[-1, 7, 7905747460161236407]: the known dims multiply to 1 modulo 2^64."""
    m = make_model(
        [helper.make_node("Reshape", ["x", "shape"], ["y"], name="reshape_fill")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    res = run_both(tmp_path, m, {"x": np.ones(2, np.float32), "shape": np.array([-1, 7, WRAPS_TO_ONE], np.int64)})
    assert_refused(res, "reshape_fill", "int64")


def test_pad_with_int64_min(tmp_path):
    m = make_model(
        [helper.make_node("Pad", ["x", "pads"], ["y"], name="pad_min")],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2]),
         helper.make_tensor_value_info("pads", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    # onnxruntime 1.32 accepts this one, its size wrapping to 1: no comparison
    res = run_both(tmp_path, m, {"x": np.ones(2, np.float32), "pads": np.array([-(1 << 63), BIG], np.int64)},
                   ort=False)
    assert_refused(res, "pad_min", "too large")


def test_empty_tensor_with_a_huge_dim_is_refused(tmp_path):
    """[0, 2^62, 4] holds no element, but kernels loop over its dims and take products of them."""
    m = make_model(
        [helper.make_node("ConstantOfShape", ["shape"], ["y"], name="fill_empty_huge")],
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [3])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    res = run_both(tmp_path, m, {"shape": np.array([0, 1 << 62, 4], np.int64)}, ort=False)
    assert_refused(res, "fill_empty_huge")


def test_shapes_below_the_limit_still_work(tmp_path):
    """Large but sane shapes are untouched: an empty [0, 2^40] and a Reshape to [2^20, 1]."""
    m = make_model(
        [helper.make_node("ConstantOfShape", ["shape"], ["e"], name="fill_empty"),
         helper.make_node("Reshape", ["x", "rs"], ["r"], name="reshape_ok")],
        [helper.make_tensor_value_info("shape", TensorProto.INT64, [2]),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [1 << 20]),
         helper.make_tensor_value_info("rs", TensorProto.INT64, [2])],
        [helper.make_tensor_value_info("e", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("r", TensorProto.FLOAT, None)])
    res = run_both(tmp_path, m, {"shape": np.array([0, 1 << 40], np.int64), "x": np.ones(1 << 20, np.float32),
                                 "rs": np.array([1 << 20, 1], np.int64)})
    assert res["kiln"] == "ok [(0, 1099511627776), (1048576, 1)]", res
    assert res["kiln"] == res["ort"]


def test_conv_with_a_huge_dilation(tmp_path):
    m = make_model(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="conv_dil", dilations=[1 << 62, 1])],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 4, 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        [numpy_helper.from_array(np.ones((1, 1, 3, 3), np.float32), "w")])
    res = run_both(tmp_path, m, {"x": np.ones((1, 1, 4, 4), np.float32)})
    assert_refused(res, "conv_dil", "too large")


def test_pool_window_larger_than_any_tensor(tmp_path):
    """Padding lets a [2^40, 2^40] window fit a 1x1 input: the window's size must still be bounded."""
    m = make_model(
        [helper.make_node("AveragePool", ["x"], ["y"], name="pool_huge", kernel_shape=[1 << 40, 1 << 40],
                          pads=[1 << 40] * 4)],
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 1, 1, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    res = run_both(tmp_path, m, {"x": np.ones((1, 1, 1, 1), np.float32)}, ort=False)
    assert_refused(res, "pool_huge")


def test_layernorm_row_of_huge_values_stays_finite():
    """A row near float's range overflows a float sum of squares: kiln redoes it in double. A row of
    equal 3e38 values normalises to 0 (the bias), as in onnxruntime, not NaN; a row of +-3e38 gives
    the exact finite answer (onnxruntime's float variance overflows to NaN there); NaN stays NaN."""
    from util import node_model, run_kiln, run_ort
    x = np.array([[3e38, 3e38, 3e38, 3e38], [1, 2, 3, 4], [3e38, -3e38, 1, 2], [np.nan, 1, 2, 3]], np.float32)
    s = np.array([1, 2, 3, 4], np.float32)
    b = np.array([0.5, 0, 0, 1], np.float32)
    m = node_model("LayerNormalization", [("x", x), ("s", s), ("b", b)], ["y"], attrs={"axis": -1}, opset=17,
                   initializers={"s": s, "b": b})
    got = run_kiln(m, {"x": x})[0]
    want = run_ort(m, {"x": x})[0]
    np.testing.assert_allclose(got[:2], want[:2], rtol=1e-5, atol=1e-6)
    xd = x[2].astype(np.float64)
    ref = (xd - xd.mean()) / np.sqrt(((xd - xd.mean()) ** 2).mean() + 1e-5) * s + b
    np.testing.assert_allclose(got[2], ref, rtol=1e-5, atol=1e-6)
    assert np.isnan(got[3]).all()
