"""The exported models in ../shared/models against their ONNX Runtime reference outputs."""
import os

import numpy as np
import pytest

from util import MODELS, kiln

CASES = [("bert_tiny", 1e-4, 1e-5), ("bert_tiny_fused", 1e-4, 1e-5), ("bert_tiny_fused_fp16", 1e-2, 1e-2),
         ("gpt2_tiny", 1e-4, 1e-5), ("mobilenet_v3_small", 1e-4, 1e-5)]


@pytest.mark.parametrize("name,rtol,atol", CASES, ids=[c[0] for c in CASES])
@pytest.mark.parametrize("threads", [1, 2])
def test_model_matches_reference(name, rtol, atol, threads):
    path = os.path.join(MODELS, name + ".onnx")
    assert os.path.exists(path), f"missing shared model {path}"
    ref = np.load(os.path.join(MODELS, name + ".ref.npz"))
    feeds = {k[3:]: ref[k] for k in ref.files if k.startswith("in.")}
    s = kiln.InferenceSession(path, threads=threads)
    outs = s.run(None, feeds)
    names = [o.name for o in s.get_outputs()]
    assert len(outs) == len(names) and names
    for n, got in zip(names, outs):
        want = ref["out." + n]
        assert got.shape == want.shape, n
        assert got.dtype == want.dtype, n
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=n)


@pytest.mark.parametrize("name", [c[0] for c in CASES])
def test_model_repeated_runs_reuse_plan(name):
    """Second and third runs (planned arena) give the same results as the first (heap)."""
    ref = np.load(os.path.join(MODELS, name + ".ref.npz"))
    feeds = {k[3:]: ref[k] for k in ref.files if k.startswith("in.")}
    s = kiln.InferenceSession(os.path.join(MODELS, name + ".onnx"), threads=2)
    first = s.run(None, feeds)
    for _ in range(2):
        again = s.run(None, feeds)
        for a, b in zip(first, again):
            np.testing.assert_array_equal(a, b)
    st = s.plan_stats()
    assert st["arena_bytes"] > 0 and st["arena_bytes"] <= st["naive_bytes"]
