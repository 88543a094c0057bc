"""Helpers shared by the test suite: build one-node (or small) ONNX models with the onnx package,
run them through kiln and through onnxruntime (the oracle), and compare."""
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
import kiln  # noqa: E402

SHARED = os.path.join(os.path.dirname(ROOT), "shared")
MODELS = os.path.join(SHARED, "models")


def np_to_onnx_dtype(dt):
    return helper.np_dtype_to_tensor_dtype(np.dtype(dt))


def node_model(op_type, inputs, outputs, attrs=None, opset=18, domain="", initializers=None,
               ir_version=None, extra_opsets=None):
    """A model with one node. inputs: list of (name, array) — the arrays give dtype and shape
    (name "" makes an absent optional input). outputs: list of names, or (name, numpy dtype)."""
    attrs = attrs or {}
    initializers = initializers or {}
    vis, names = [], []
    for name, arr in inputs:
        names.append(name)
        if name and name not in initializers:
            arr = np.asarray(arr)
            vis.append(helper.make_tensor_value_info(name, np_to_onnx_dtype(arr.dtype), arr.shape))
    out_vis, out_names = [], []
    for o in outputs:
        if isinstance(o, tuple):
            out_names.append(o[0])
            out_vis.append(helper.make_tensor_value_info(o[0], np_to_onnx_dtype(o[1]), None))
        else:
            out_names.append(o)
            out_vis.append(helper.make_empty_tensor_value_info(o) if o else None)
    out_vis = [v for v in out_vis if v is not None]
    node = helper.make_node(op_type, names, out_names, domain=domain or None, **attrs)
    inits = [numpy_helper.from_array(np.asarray(v), k) for k, v in initializers.items()]
    graph = helper.make_graph([node], "g", vis, out_vis, initializer=inits)
    opsets = [helper.make_opsetid("", opset)]
    if domain and domain != "ai.onnx":
        opsets.append(helper.make_opsetid(domain, 1))
    for d, v in (extra_opsets or {}).items():
        opsets.append(helper.make_opsetid(d, v))
    m = helper.make_model(graph, opset_imports=opsets)
    m.ir_version = ir_version or min(m.ir_version, 10)
    return m


def run_kiln(model, feeds, threads=2, output_names=None, **session_kw):
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    s = kiln.InferenceSession(data, threads=threads, **session_kw)
    return s.run(output_names, feeds)


def run_ort(model, feeds, output_names=None):
    import onnxruntime as ort
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    return s.run(output_names, feeds)


def assert_same(got, want, rtol=1e-5, atol=1e-6, what="output"):
    got, want = np.asarray(got), np.asarray(want)
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def check(model, feeds, rtol=1e-5, atol=1e-6, threads=2, **session_kw):
    """Runs model on kiln and onnxruntime with the same feeds and compares every output."""
    want = run_ort(model, feeds)
    got = run_kiln(model, feeds, threads=threads, **session_kw)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_same(g, w, rtol, atol, what=f"output {i}")
    return got


def rand(rng, shape, dtype=np.float32, low=-2.0, high=2.0):
    """Fresh random data (never zeros) of any numeric dtype."""
    dt = np.dtype(dtype)
    if dt == np.bool_:
        return rng.integers(0, 2, size=shape).astype(np.bool_)
    if dt.kind in "iu":
        lo = 0 if dt.kind == "u" else int(low * 10)
        return rng.integers(lo, int(high * 10) + 1, size=shape).astype(dt)
    return rng.uniform(low, high, size=shape).astype(dt)


def cpu_flags():
    """The CPU's feature flags from /proc/cpuinfo (empty where there is none)."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


# Kernels with AVX-512 code paths (channel-lane and blocked convolutions, blocked depthwise) are
# taken only where the CPU has AVX-512F and KILN_NO_AVX512 is unset; tests that assert which of
# those paths ran ask this first (their numerical checks run on every CPU).
HAS_AVX512 = "avx512f" in cpu_flags() and not os.environ.get("KILN_NO_AVX512", "").strip("0")
# The packed float product and the direct and channel-lane convolutions (conv_direct.c) run on
# AVX-512 or on AVX2 + FMA (KILN_NO_AVX2 turns the AVX2 tier off); without either a convolution
# takes im2col and OpenBLAS ("gemm").
HAS_PACKED = HAS_AVX512 or ({"avx2", "fma"} <= cpu_flags() and
                            not os.environ.get("KILN_NO_AVX2", "").strip("0"))


def on_this_cpu(path):
    """The path a convolution that takes `path` where the packed engine runs takes on this CPU."""
    return path if HAS_PACKED else "gemm"


def run_in_child(m, feeds, env, threads=1):
    """kiln's outputs and the partition report's paths (KILN_DEBUG_PARTITION) for one run of
    model m in a child process with env added: switches such as KILN_NO_AVX512 are read once per
    process."""
    import subprocess
    import tempfile
    d = tempfile.mkdtemp()
    mp, fp, op = (os.path.join(d, n) for n in ("m.onnx", "f.npz", "o.npz"))
    with open(mp, "wb") as f:
        f.write(m.SerializeToString())
    np.savez(fp, **feeds)
    code = ("import sys, numpy as np; sys.path.insert(0, sys.argv[1]); from util import run_kiln;"
            "z = np.load(sys.argv[3]); o = run_kiln(open(sys.argv[2], 'rb').read(), dict(z), threads=%d);"
            "np.savez(sys.argv[4], *o)" % threads)
    r = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)), mp, fp, op],
                       env=dict(os.environ, KILN_DEBUG_PARTITION="1", **env), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    outs = np.load(op)
    paths = [kv.split("=", 1)[1] for ln in r.stderr.splitlines() if ln.startswith("kiln-partition ")
             for kv in ln.split()[1:] if kv.startswith("path=")]
    return [outs["arr_%d" % i] for i in range(len(outs.files))], paths
