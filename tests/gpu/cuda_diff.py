"""The CUDA provider's differential harness, in the style of ggml's test-backend-ops: a one-node
model runs on kiln's CUDA provider and on kiln's CPU provider (the oracle) with the same fresh
random inputs, and the outputs must agree within the dtype's tolerance. The node must really run
on CUDA (the session's placement says so), or the test fails: a fallback is not a pass.

Runs only where libkiln_cuda.so loads and a GPU is present; elsewhere each test skips with the
reason (a skip is never a pass).

    from cuda_diff import check, rand
    check("Add", [("a", rand((4, 8), F16)), ("b", rand((8,), F16))])
"""
import os
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
import kiln  # noqa: E402

F32, F16, BF16 = TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.BFLOAT16
I64, I32, BOOL, F64 = TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL, TensorProto.DOUBLE
NP = {F32: np.float32, F16: np.float16, I64: np.int64, I32: np.int32, BOOL: np.bool_, F64: np.float64}
# relative to the output's largest magnitude
TOL = {F32: 2e-5, F16: 4e-3, BF16: 3e-2, F64: 1e-12}
rng = np.random.default_rng(int(os.environ.get("KILN_TEST_SEED", "20261205")))

_unavailable = None


def cuda_available():
    """None when the CUDA provider runs here, else the reason it does not."""
    global _unavailable
    if _unavailable is None:
        m = _model("Identity", [("x", np.ones((1,), np.float32))], {}, "", None, 1, ())
        try:
            s = kiln.InferenceSession(m, providers=["CUDAExecutionProvider"])
            _unavailable = "" if "CUDAExecutionProvider" in s.get_providers() else "CUDA not used"
        except Exception as e:  # kiln.KilnError
            _unavailable = str(e).strip().splitlines()[0]
    return _unavailable or None


def rand(shape, dtype=F32, low=-1.0, high=1.0):
    """Fresh uniform values away from zero (never an all-zero tensor). BF16 is returned as a
    float32 array already rounded to bfloat16, tagged for check() by the BF16Array wrapper."""
    x = rng.uniform(low, high, size=shape)
    x = np.where(np.abs(x) < 1e-3, 0.5 * (high - low) / 2 + low / 2 + 1e-3, x)
    if dtype == BF16:
        return BF16Array(x)
    if dtype in (I64, I32):
        return rng.integers(int(low), int(high) + 1, size=shape).astype(NP[dtype])
    if dtype == BOOL:
        return rng.random(size=shape) < 0.5
    return np.asarray(x, NP[dtype])


class BF16Array:
    """A bfloat16 tensor: values held as float32 rounded to bfloat16. The model receives it as a
    float32 graph input followed by a Cast to bfloat16 (numpy has no bfloat16), and bfloat16
    outputs are Cast back to float32; the Casts run on CUDA too."""

    def __init__(self, x):
        b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
        b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
        self.f32 = b.astype(np.uint32).view(np.float32).reshape(np.shape(x))
        self.shape = self.f32.shape


def _elem(x):
    if isinstance(x, BF16Array):
        return BF16
    return helper.np_dtype_to_tensor_dtype(np.asarray(x).dtype)


def _model(op, inputs, attrs, domain, opset, n_outputs, const_inputs):
    nodes, g_in, inits, node_in = [], [], [], []
    bf16 = any(isinstance(x, BF16Array) for _, x in inputs)
    for name, x in inputs:
        if x is None:
            node_in.append("")
            continue
        if isinstance(x, BF16Array):
            if name in const_inputs:
                inits.append(helper.make_tensor(name + "_f", F32, x.shape, x.f32.ravel()))
            else:
                g_in.append(helper.make_tensor_value_info(name + "_f", F32, list(x.shape)))
            nodes.append(helper.make_node("Cast", [name + "_f"], [name], to=BF16, name="cast_in_" + name))
        elif name in const_inputs:
            inits.append(onnx.numpy_helper.from_array(np.asarray(x), name))
        else:
            g_in.append(helper.make_tensor_value_info(name, _elem(x), list(np.shape(x))))
        node_in.append(name)
    outs = ["y%d" % i for i in range(n_outputs)]
    nodes.append(helper.make_node(op, node_in, outs, domain=domain, name="node", **(attrs or {})))
    g_out = []
    for o in outs:
        if bf16:
            nodes.append(helper.make_node("Cast", [o], [o + "_f"], to=F32, name="cast_out_" + o))
            g_out.append(helper.make_empty_tensor_value_info(o + "_f"))
        else:
            g_out.append(helper.make_empty_tensor_value_info(o))
    graph = helper.make_graph(nodes, "diff", g_in, g_out, initializer=inits)
    imports = [helper.make_opsetid("", opset if (opset and not domain) else 21)]
    if domain:
        imports.append(helper.make_opsetid(domain, opset or 1))
    m = helper.make_model(graph, opset_imports=imports)
    m.ir_version = 10
    return m.SerializeToString()


def _feed(inputs, const_inputs):
    feed = {}
    for name, x in inputs:
        if x is None or name in const_inputs:
            continue
        if isinstance(x, BF16Array):
            feed[name + "_f"] = x.f32
        else:
            feed[name] = np.asarray(x)
    return feed


def check(op, inputs, attrs=None, domain="", opset=None, n_outputs=1, const_inputs=(), rtol=None,
          atol=0.0, expect_cuda=True):
    """Runs op on CUDA and on the CPU and compares. inputs: [(name, array or BF16Array or None)].
    const_inputs: names made initializers (shape-like inputs such as Reshape's shape, Slice's
    starts). Returns the CUDA outputs. expect_cuda=False checks the node falls back to the CPU."""
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    m = _model(op, inputs, attrs, domain, opset, n_outputs, tuple(const_inputs))
    feed = _feed(inputs, tuple(const_inputs))
    cpu = kiln.InferenceSession(m, providers=["CPUExecutionProvider"])
    gpu = kiln.InferenceSession(m, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    placed = dict(gpu.node_placement())
    where = placed.get("node")
    if expect_cuda:
        assert where == "CUDAExecutionProvider", "node ran on %s: %s" % (where, gpu.placement_reason("node"))
    else:
        assert where == "CPUExecutionProvider", "node was expected to fall back, ran on %s" % where
    want = cpu.run(None, feed)
    for attempt in range(2):  # a second run uses the planned arena
        got = gpu.run(None, feed)
        assert len(got) == len(want)
        for k, (g, w) in enumerate(zip(got, want)):
            g, w = np.asarray(g), np.asarray(w)
            assert g.dtype == w.dtype, "output %d: dtype %s, CPU gives %s" % (k, g.dtype, w.dtype)
            assert g.shape == w.shape, "output %d: shape %s, CPU gives %s" % (k, g.shape, w.shape)
            if w.dtype.kind in "fc":
                dt = BF16 if any(isinstance(x, BF16Array) for _, x in inputs) else _elem(w)
                tol = rtol if rtol is not None else TOL.get(dt, 1e-5)
                g64, w64 = g.astype(np.float64), w.astype(np.float64)
                assert not np.isnan(g64).any() or np.isnan(w64).any(), "output %d has NaN" % k
                scale = max(float(np.nanmax(np.abs(w64))) if w64.size else 0.0, 1e-6)
                err = float(np.nanmax(np.abs(g64 - w64))) if w64.size else 0.0
                assert err <= tol * scale + atol, "output %d (run %d): max error %.3g > %.3g x %.3g" % (
                    k, attempt, err, tol, scale)
            else:
                np.testing.assert_array_equal(g, w, err_msg="output %d (run %d)" % (k, attempt))
    return got
