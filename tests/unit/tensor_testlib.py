"""Helpers for the tensor / shape / gather / scatter / pad tests: run a one-node model on kiln at
opt levels 0 (plain run, aliasing) and 1 (constant folding may run the kernel at load time) and
compare with onnxruntime; where onnxruntime has no kernel for a type or opset, with the onnx
reference implementation instead."""
import os
import sys

import numpy as np
import onnx
import pytest

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, kiln, node_model, rand, run_ort  # noqa: E402,F401

# every element type the tests sweep (strings are tested separately: they must be initializers)
DTYPES = [np.float32, np.float16, np.float64, np.int64, np.int32, np.int8, np.uint8, np.bool_]


def _missing_kernel(err):
    s = str(err)
    return ("NOT_IMPLEMENTED" in s or "Could not find an implementation" in s
            or "is under development" in s or "not a registered function/op" in s
            or "data type is not supported" in s)


def oracle(model, feeds):
    """onnxruntime's answer, or the onnx reference's where onnxruntime lacks the kernel."""
    try:
        return run_ort(model, feeds)
    except Exception as e:  # noqa: BLE001
        if not _missing_kernel(e):
            raise
    from onnx.reference import ReferenceEvaluator
    return ReferenceEvaluator(model).run(None, feeds)


def _loosened(model, how):
    """the same model with graph-input shapes made symbolic ("sym") or dropped ("none"), so
    static inference sees unknown dims / unknown ranks"""
    m = onnx.ModelProto()
    m.CopyFrom(model)
    for vi in m.graph.input:
        tt = vi.type.tensor_type
        if how == "none":
            tt.ClearField("shape")
        else:
            for k, d in enumerate(tt.shape.dim):
                d.dim_param = "%s_d%d" % (vi.name, k)
    return m


def run_levels(model, feeds, threads=2, loosen=True):
    """kiln's outputs at opt levels 0 and 1, and (loosen) with symbolic and with unknown input
    shapes"""
    variants = [(model, 0), (model, 1)]
    if loosen and len(model.graph.input):
        variants += [(_loosened(model, "sym"), 1), (_loosened(model, "none"), 0)]
    outs = []
    for m, level in variants:
        s = kiln.InferenceSession(m.SerializeToString(), threads=threads, opt_level=level)
        outs.append(s.run(None, feeds))
    return outs


def _as_np(v):
    v = np.asarray(v)
    if v.dtype.kind == "U":
        v = v.astype(object)
    return v


def check_op(op, inputs, attrs=None, opset=18, inits=(), outputs=1, want=None, threads=2,
             rtol=1e-5, atol=1e-6):
    """Builds op over inputs [(name, array)] (names in `inits` become initializers, "" is an absent
    optional input), runs it on kiln and the oracle and compares every output. outputs: a count or
    a list of names ("" = not wanted). want: expected outputs when no oracle can run the model."""
    if isinstance(outputs, int):
        outputs = ["y%d" % i for i in range(outputs)]
    # the Python binding cannot feed 0-d arrays yet (np.ascontiguousarray makes them 1-d), so
    # scalars travel as initializers
    inits = set(inits) | {n for n, a in inputs if n and np.ndim(a) == 0}
    init = {n: a for n, a in inputs if n and n in inits}
    model = node_model(op, inputs, outputs, attrs or {}, opset=opset, initializers=init)
    feeds = {n: a for n, a in inputs if n and n not in inits}
    if want is None:
        want = oracle(model, feeds)
    assert len(want) == len([o for o in outputs if o])
    for level, got in enumerate(run_levels(model, feeds, threads)):
        assert len(got) == len(want)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(_as_np(g), _as_np(w), rtol, atol, what="%s variant %d output %d" % (op, level, i))
    return want


def expect_error(op, inputs, attrs=None, opset=18, inits=(), outputs=1, match=None):
    """kiln must refuse the model (at load or at run) with a KilnError naming the problem."""
    if isinstance(outputs, int):
        outputs = ["y%d" % i for i in range(outputs)]
    inits = set(inits) | {n for n, a in inputs if n and np.ndim(a) == 0}
    init = {n: a for n, a in inputs if n and n in inits}
    model = node_model(op, inputs, outputs, attrs or {}, opset=opset, initializers=init)
    feeds = {n: a for n, a in inputs if n and n not in inits}
    with pytest.raises(kiln.KilnError, match=match):
        kiln.InferenceSession(model.SerializeToString(), threads=2, opt_level=0).run(None, feeds)


def data(rng, shape, dtype=np.float32):
    """Random data of any dtype, strings included."""
    if dtype in (str, object):
        words = np.array(["a", "bb", "ccc", "", "dd", "eeee", "f"], dtype=object)
        return words[rng.integers(0, len(words), size=shape)].astype(object)
    return rand(rng, shape, dtype)
