"""Whole models on the CUDA provider: the shared exported models (../shared/models, or the copy
in $KILN_MODELS on the GPU machine) run with providers=["CUDAExecutionProvider",
"CPUExecutionProvider"] and must match the CPU provider and the ONNX Runtime reference outputs,
with most of their nodes on the GPU, on the first (heap) run and on planned runs."""
import os

import numpy as np
import pytest

from cuda_diff import cuda_available, kiln

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MODELS = os.environ.get("KILN_MODELS") or os.path.join(os.path.dirname(ROOT), "shared", "models")
# float32 models: GPU reductions and GEMMs sum in another order than the CPU's
CASES = [("bert_tiny", 1e-3), ("bert_tiny_fused", 1e-3), ("bert_tiny_fused_fp16", 2e-2),
         ("gpt2_tiny", 1e-3), ("mobilenet_v3_small", 1e-3)]


def feeds_and_ref(name):
    ref = np.load(os.path.join(MODELS, name + ".ref.npz"))
    return {k[3:]: ref[k] for k in ref.files if k.startswith("in.")}, ref


def close(got, want, tol, what):
    got64, want64 = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape and got.dtype == want.dtype, what
    if want.dtype.kind not in "fc":
        np.testing.assert_array_equal(got, want, err_msg=what)
        return
    scale = max(float(np.max(np.abs(want64))), 1e-6)
    err = float(np.max(np.abs(got64 - want64)))
    assert err <= tol * scale, "%s: max error %.3g > %.3g x %.3g" % (what, err, tol, scale)


@pytest.mark.parametrize("name,tol", CASES, ids=[c[0] for c in CASES])
def test_shared_model_on_gpu(name, tol):
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    path = os.path.join(MODELS, name + ".onnx")
    feeds, ref = feeds_and_ref(name)
    gpu = kiln.InferenceSession(path, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
    cpu = kiln.InferenceSession(path, providers=["CPUExecutionProvider"])
    placed = [p for n, p in gpu.node_placement()]
    on_gpu = sum(p == "CUDAExecutionProvider" for p in placed)
    print("%s: %d of %d nodes on CUDA" % (name, on_gpu, len(placed)))
    for n in gpu.nodes():
        if n["provider"] != "CUDAExecutionProvider" and n["domain"] != "kiln":
            print("  on CPU: %s (%s): %s" % (n["name"], n["op_type"], n["reason"]))
    assert on_gpu > 0
    want_cpu = cpu.run(None, feeds)
    names = [o.name for o in gpu.get_outputs()]
    for attempt in range(3):
        got = gpu.run(None, feeds)
        for n, g, c in zip(names, got, want_cpu):
            close(g, c, tol, "%s run %d vs CPU" % (n, attempt))
            close(g, ref["out." + n], tol, "%s run %d vs ONNX Runtime" % (n, attempt))
