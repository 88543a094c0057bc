"""FP8 (float8e4m3fn) MultiHeadAttention on kiln's CUDA provider (src/cuda/ops/attention_fp8.c,
kernel src/cuda/attention/flash_fp8.cuh), at the ONNX level: float32 activations ->
QuantizeLinear(float8e4m3fn, per-tensor scales) -> MultiHeadAttention (fp8 q/k/v, scales as inputs
10-12) -> float16/bfloat16. The node must run on CUDA; its output is compared with a float64 numpy
oracle over the dequantised inputs (tests/test_attention_fp8.py). The GPU kernel rounds P to e4m3
before P·V (relative error <= 2^-4 per probability, probabilities sum to one), so the bound is
0.07 · max|v| per element, plus the 16-bit output rounding, and the RMS error must stay below
0.02 · rms(v) (a wrong key order or scale gives errors of order |v|). Skips where the CUDA provider
does not run."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.dirname(HERE))
from cuda_diff import cuda_available  # noqa: E402
import test_attention_fp8 as F  # noqa: E402
from util import kiln  # noqa: E402


def gpu_session(m):
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    return kiln.InferenceSession(m.SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


@pytest.mark.parametrize("B,S,L,N,H,causal", [(1, 1, 1, 1, 64, 0), (2, 37, 91, 2, 64, 0), (2, 128, 128, 2, 128, 1),
                                              (1, 200, 200, 1, 256, 1), (3, 17, 300, 4, 32, 0),
                                              (1, 64, 1000, 2, 128, 0)])
@pytest.mark.parametrize("out_type", [TensorProto.FLOAT16, TensorProto.BFLOAT16])
def test_cuda_mha_fp8_vs_numpy(B, S, L, N, H, causal, out_type):
    rng = np.random.default_rng(hash((B, S, L, N, H, causal, out_type)) & 0xFFFF)
    attrs = {"unidirectional": causal}
    if out_type == TensorProto.BFLOAT16:
        attrs["output_dtype"] = out_type
    shapes = {"q": [B, S, N * H], "k": [B, L, N * H], "v": [B, L, N * H]}
    m = F.fp8_model(shapes, N, attrs=attrs, out_type=out_type)
    s = gpu_session(m)
    where = dict(s.node_placement()).get("attn")
    assert where == "CUDAExecutionProvider", "attn ran on %s: %s" % (where, s.placement_reason("attn"))
    f = F.feeds_for(rng, B, S, L, N, H, H, outliers=(H == 128))
    want = F.ref_for(f, N, 0.0, causal)
    vmax = np.abs(F.quant(f["xv"], f["sv"])).max()
    vrms = np.sqrt(np.mean(F.quant(f["xv"], f["sv"]) ** 2))
    for attempt in range(2):  # the second run uses the planned arena
        got = np.asarray(s.run(None, f)[0]).astype(np.float64)
        assert got.shape == want.shape
        assert not np.isnan(got).any(), "NaN in the output (run %d)" % attempt
        err = np.abs(got - want)
        tol = 0.07 * vmax + 2.0 ** -7 * np.abs(want)
        assert (err <= tol).all(), "run %d: max error %.3g, worst %.2f of the bound" % (
            attempt, err.max(), (err / tol).max())
        rmse = np.sqrt(np.mean(err ** 2))
        assert rmse <= 0.02 * vrms, "run %d: rmse %.3g > 0.02 * rms(v) %.3g" % (attempt, rmse, vrms)


def _compute_capability():
    try:
        import subprocess
        out = subprocess.run(["nvidia-smi", "--query-gpu=compute_cap", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20).stdout.split()
        return out[0] if out else ""
    except (OSError, subprocess.SubprocessError):
        return ""


# The Hopper wgmma variants, chosen through KILN_FP8_VARIANT (read at each call, so setting it
# here reaches the provider): sm_90a code, compute capability 9.0 only.
@pytest.mark.parametrize("variant", ["wgmma_wg2_bn128_occ1", "wgmma_wg2_bn64_occ1"])
@pytest.mark.parametrize("B,S,L,N,H,causal", [(2, 37, 91, 2, 64, 0), (2, 300, 300, 2, 128, 1),
                                              (1, 200, 457, 1, 256, 0), (1, 333, 333, 2, 256, 1),
                                              (1, 64, 1000, 2, 96, 0)])
def test_cuda_mha_fp8_wgmma_vs_numpy(monkeypatch, variant, B, S, L, N, H, causal):
    if _compute_capability() != "9.0":
        pytest.skip("the wgmma FP8 variants need compute capability 9.0")
    if variant == "wgmma_wg2_bn64_occ1" and H <= 128:
        pytest.skip("the 64-key wgmma tile exists for head size 256 only (an unknown name means the default)")
    monkeypatch.setenv("KILN_FP8_VARIANT", variant)
    rng = np.random.default_rng(hash((B, S, L, N, H, causal, variant)) & 0xFFFF)
    m = F.fp8_model({"q": [B, S, N * H], "k": [B, L, N * H], "v": [B, L, N * H]}, N,
                    attrs={"unidirectional": causal}, out_type=TensorProto.FLOAT16)
    s = gpu_session(m)
    assert dict(s.node_placement()).get("attn") == "CUDAExecutionProvider"
    f = F.feeds_for(rng, B, S, L, N, H, H, outliers=True)
    want = F.ref_for(f, N, 0.0, causal)
    vmax = np.abs(F.quant(f["xv"], f["sv"])).max()
    vrms = np.sqrt(np.mean(F.quant(f["xv"], f["sv"]) ** 2))
    got = np.asarray(s.run(None, f)[0]).astype(np.float64)
    assert not np.isnan(got).any()
    err = np.abs(got - want)
    assert (err <= 0.07 * vmax + 2.0 ** -7 * np.abs(want)).all(), "max error %.3g" % err.max()
    assert np.sqrt(np.mean(err ** 2)) <= 0.02 * vrms


def test_cuda_mha_fp8_cached_kv_4d():
    B, S, L, N, H = 2, 50, 77, 2, 64
    shapes = {"q": [B, S, N * H], "k": [B, N, L, H], "v": [B, N, L, H]}
    m = F.fp8_model(shapes, N)
    s = gpu_session(m)
    assert dict(s.node_placement()).get("attn") == "CUDAExecutionProvider", s.placement_reason("attn")
    f = F.feeds_for(np.random.default_rng(9), B, S, L, N, H, H)
    for t in "kv":
        f["x" + t] = np.ascontiguousarray(f["x" + t].reshape(B, L, N, H).transpose(0, 2, 1, 3))
    want = F.ref_for(f, N, 0.0, 0)
    got = np.asarray(s.run(None, f)[0]).astype(np.float64)
    vmax = np.abs(F.quant(f["xv"], f["sv"])).max()
    assert (np.abs(got - want) <= 0.07 * vmax + 2.0 ** -7 * np.abs(want)).all()


def test_cuda_mha_fp8_unsupported_head_size_runs_on_cpu():
    B, S, L, N, H = 1, 8, 8, 2, 40
    m = F.fp8_model({"q": [B, S, N * H], "k": [B, L, N * H], "v": [B, L, N * H]}, N)
    s = gpu_session(m)
    assert dict(s.node_placement()).get("attn") == "CPUExecutionProvider"
    assert "head size 40" in s.placement_reason("attn")
    f = F.feeds_for(np.random.default_rng(5), B, S, L, N, H, H)
    got = np.asarray(s.run(None, f)[0]).astype(np.float64)
    want = F.ref_for(f, N, 0.0, 0)
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


def test_cuda_mha_fp8_error_names_node():
    m = F.fp8_model(F.base_shapes(), 2, mha_inputs=["qq", "xk", "qv"] + [""] * 7 + ["sq", "sk", "sv"])
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    with pytest.raises(kiln.KilnError) as e:
        s = kiln.InferenceSession(m.SerializeToString(), providers=["CUDAExecutionProvider", "CPUExecutionProvider"])
        s.run(None, F.small_feeds())
    assert "attn" in str(e.value) and "float8e4m3fn" in str(e.value)
