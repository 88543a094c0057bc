"""com.microsoft attention ops through kiln's CUDA provider (src/cuda/ops/attention.c).

Runs only where kiln's CUDA provider runs on a GPU; elsewhere every test skips with the reason (a
skip is not a pass). One-node ONNX models, random fp16 inputs (bf16 through Casts), compared with a
float64 numpy reference of spec §9 and, for float32 copies, with onnxruntime's CPU provider where
it supports the case. The attention node is named "attn": the session's placement says whether it
ran on CUDA or was left to the CPU (the forms the GPU kernels have no form for). Which GPU kernel
ran comes from the dispatcher's stderr lines: KILN_ATTENTION_VERBOSE=1 must be set before the first
attention call (the dispatcher reads it once per process).
"""
import os
import sys

os.environ["KILN_ATTENTION_VERBOSE"] = "1"

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
try:
    import kiln  # noqa: E402
except ImportError as e:  # no libkiln.so at all
    pytest.skip("kiln not importable: %s" % e, allow_module_level=True)
from cuda_diff import cuda_available  # noqa: E402

F16, BF16, F32, I32 = TensorProto.FLOAT16, TensorProto.BFLOAT16, TensorProto.FLOAT, TensorProto.INT32
TOL = {F16: 2e-3, BF16: 1.2e-2, F32: 1e-4}
rng = np.random.default_rng(1234)


def rnd(*shape):
    # uniform away from zero: never an all-zero tensor
    x = rng.uniform(-1.0, 1.0, size=shape)
    return np.where(np.abs(x) < 1e-3, 0.5, x)


def to_bf16_f32(x):
    """float32 values rounded to bfloat16 (nearest even), returned as float32."""
    b = np.asarray(x, np.float32).view(np.uint32).astype(np.uint64)
    b = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) << 16
    return b.astype(np.uint32).view(np.float32)


def make_model(op, inputs, outputs, attrs, kind=F16):
    """inputs/outputs: (name, dtype or None for 'kind', shape); name '' = absent optional.
    kind BF16: fp16 graph inputs/outputs are Cast to/from bfloat16 around the node."""
    g_in, g_out, nodes, node_in, node_out = [], [], [], [], []
    for name, dt, shape in inputs:
        if not name:
            node_in.append("")
            continue
        t = dt if dt is not None else (F16 if kind == BF16 else kind)
        g_in.append(helper.make_tensor_value_info(name, t, shape))
        if kind == BF16 and dt is None:
            nodes.append(helper.make_node("Cast", [name], [name + "_bf"], to=BF16))
            node_in.append(name + "_bf")
        else:
            node_in.append(name)
    for name, shape in outputs:
        if not name:
            node_out.append("")
            continue
        if kind == BF16:
            node_out.append(name + "_bf")
            g_out.append(helper.make_tensor_value_info(name, F16, None))
        else:
            node_out.append(name)
            g_out.append(helper.make_tensor_value_info(name, kind, None))
    nodes.append(helper.make_node(op, node_in, node_out, domain="com.microsoft", name="attn", **attrs))
    if kind == BF16:
        for name, _ in outputs:
            if name:
                nodes.append(helper.make_node("Cast", [name + "_bf"], [name], to=F16))
    graph = helper.make_graph(nodes, "g", g_in, g_out)
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17),
                                                 helper.make_opsetid("com.microsoft", 1)])
    m.ir_version = 8
    return m.SerializeToString()


def cuda_session(model):
    why = cuda_available()
    if why:
        pytest.skip("kiln's CUDA provider is unavailable here: " + why)
    return kiln.InferenceSession(model, providers=["CUDAExecutionProvider", "CPUExecutionProvider"])


def placed(sess, name="attn"):
    """(provider, reason) of the node named name."""
    return dict(sess.node_placement())[name], sess.placement_reason(name)


def ref_sdpa(q, k, v, scale, causal=False, key_lens=None, bias=None, filt=-10000.0):
    """q (B,N,S,H), k (B,N,T,H), v (B,N,T,Hv) float64 -> (B,S,N*Hv). Spec §9; masks additive."""
    B, N, S, H = q.shape
    T = k.shape[2]
    x = np.einsum("bnsh,bnth->bnst", q, k) * scale
    if bias is not None:
        x = x + bias
    if key_lens is not None:
        for b in range(B):
            x[b, :, :, key_lens[b]:] += filt
    if causal:
        P = T - S
        m = np.arange(T)[None, :] > (P + np.arange(S))[:, None]
        x = np.where(m, -np.inf, x)
    x = x - x.max(-1, keepdims=True)
    p = np.exp(x)
    p /= p.sum(-1, keepdims=True)
    o = np.einsum("bnst,bnth->bnsh", p, v)
    return o.transpose(0, 2, 1, 3).reshape(B, S, -1)


def bnsh(x, N):  # (B,S,N*H) -> (B,N,S,H)
    B, S, D = x.shape
    return x.reshape(B, S, N, D // N).transpose(0, 2, 1, 3)


def rel_err(got, ref):
    got = np.asarray(got, np.float64)
    return float(np.max(np.abs(got - ref)) / max(np.max(np.abs(ref)), 1e-6))


def quant(x, kind):
    """What the kernel actually sees: inputs rounded to the compute dtype, as float64."""
    x16 = np.asarray(x, np.float16)
    if kind == BF16:
        return to_bf16_f32(x16.astype(np.float32)).astype(np.float64)
    if kind == F32:
        return np.asarray(x, np.float32).astype(np.float64)
    return x16.astype(np.float64)


def feed(x, kind):
    return np.asarray(x, np.float32 if kind == F32 else np.float16)


def run_kiln(model, feeds, capfd, on_cuda=True):
    """Runs model; checks the attention node is on CUDA (on_cuda) or left to the CPU (not)."""
    s = cuda_session(model)
    where, why = placed(s)
    if on_cuda:
        assert where == "CUDAExecutionProvider", "attention node ran on %s: %s" % (where, why)
    else:
        assert where == "CPUExecutionProvider", "attention node was expected on the CPU, ran on %s" % where
        assert why, "a node left to the CPU must say why"
    capfd.readouterr()
    outs = s.run(None, feeds)
    err = capfd.readouterr().err
    return outs, err


def kernels(err):
    """Kernel names from the dispatcher's verbose lines ("kiln attention: <name> B=...")."""
    return [ln.split()[2] for ln in err.splitlines() if ln.startswith("kiln attention: ")]


def ran_flash(err):
    """Every attention call took a fused kernel: flash, or the split-KV decode kernel that one-token
    queries take by default."""
    ks = kernels(err)
    return bool(ks) and all(k.startswith(("flash", "decode_splitkv")) for k in ks)


def ort_cpu(model, feeds):
    """onnxruntime CPU on float32 copies; skips where ORT does not take the case."""
    try:
        import onnxruntime as ort
    except ImportError:
        pytest.skip("onnxruntime is not installed")
    try:
        return ort.InferenceSession(model, providers=["CPUExecutionProvider"]).run(None, feeds)
    except Exception as e:
        pytest.skip("onnxruntime CPU does not take this case: %s" % str(e).splitlines()[0][:200])


# ---------------------------------------------------------------- MultiHeadAttention

@pytest.mark.parametrize("kind", [F16, BF16])
@pytest.mark.parametrize("B,S,L,N,H", [(2, 128, 128, 4, 64), (1, 64, 96, 2, 128), (2, 33, 47, 3, 32)])
def test_mha_q_k_v(kind, B, S, L, N, H, capfd):
    q, k, v = rnd(B, S, N * H), rnd(B, L, N * H), rnd(B, L, N * H)
    m = make_model("MultiHeadAttention", [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape)],
                   [("out", None)], {"num_heads": N}, kind)
    (out,), err = run_kiln(m, {"q": feed(q, kind), "k": feed(k, kind), "v": feed(v, kind)}, capfd)
    ref = ref_sdpa(bnsh(quant(q, kind), N), bnsh(quant(k, kind), N), bnsh(quant(v, kind), N), H ** -0.5)
    assert out.shape == (B, S, N * H)
    assert rel_err(out, ref) <= TOL[kind], err
    assert ran_flash(err), "expected a flash kernel, stderr: %r" % err


def test_mha_packed_kv(capfd):
    B, S, L, N, H = 2, 80, 112, 4, 64
    q, kv = rnd(B, S, N * H), rnd(B, L, N, 2, H)
    m = make_model("MultiHeadAttention", [("q", None, q.shape), ("kv", None, kv.shape)], [("out", None)],
                   {"num_heads": N})
    (out,), err = run_kiln(m, {"q": feed(q, F16), "kv": feed(kv, F16)}, capfd)
    kq = quant(kv, F16)
    ref = ref_sdpa(bnsh(quant(q, F16), N), kq[:, :, :, 0].transpose(0, 2, 1, 3),
                   kq[:, :, :, 1].transpose(0, 2, 1, 3), H ** -0.5)
    assert rel_err(out, ref) <= TOL[F16]
    assert ran_flash(err), err


@pytest.mark.parametrize("with_bias", [False, True])
def test_mha_packed_qkv(with_bias, capfd):
    B, S, N, H = 2, 96, 4, 64
    qkv = rnd(B, S, N, 3, H)
    bias = rnd(3 * N * H)
    ins = [("qkv", None, qkv.shape)]
    feeds = {"qkv": feed(qkv, F16)}
    if with_bias:
        ins += [("", None, None), ("", None, None), ("bias", None, bias.shape)]
        feeds["bias"] = feed(bias, F16)
    m = make_model("MultiHeadAttention", ins, [("out", None)], {"num_heads": N})
    (out,), err = run_kiln(m, feeds, capfd)
    x = quant(qkv, F16)
    if with_bias:
        x = x + quant(bias, F16).reshape(3, N, H).transpose(1, 0, 2)[None, None]
    t = lambda j: x[:, :, :, j].transpose(0, 2, 1, 3)  # noqa: E731
    ref = ref_sdpa(t(0), t(1), t(2), H ** -0.5)
    assert rel_err(out, ref) <= TOL[F16]
    assert ran_flash(err), err


def test_mha_bias_and_key_lens(capfd):
    B, S, L, N, H = 3, 64, 80, 4, 64
    q, k, v, bias = rnd(B, S, N * H), rnd(B, L, N * H), rnd(B, L, N * H), rnd(3 * N * H)
    lens = np.array([17, 80, 1], np.int32)
    m = make_model("MultiHeadAttention", [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape),
                                          ("bias", None, bias.shape), ("mask", I32, [B])],
                   [("out", None)], {"num_heads": N})
    (out,), err = run_kiln(m, {"q": feed(q, F16), "k": feed(k, F16), "v": feed(v, F16),
                               "bias": feed(bias, F16), "mask": lens}, capfd)
    bq = quant(bias, F16)
    D = N * H
    ref = ref_sdpa(bnsh(quant(q, F16) + bq[:D], N), bnsh(quant(k, F16) + bq[D:2 * D], N),
                   bnsh(quant(v, F16) + bq[2 * D:], N), H ** -0.5, key_lens=lens)
    assert rel_err(out, ref) <= TOL[F16], err
    assert kernels(err), err


def test_mha_cached_bnsh_with_bias_and_present(capfd):
    B, S, L, N, H = 2, 16, 40, 4, 64
    q, k, v, bias = rnd(B, S, N * H), rnd(B, N, L, H), rnd(B, N, L, H), rnd(3 * N * H)
    m = make_model("MultiHeadAttention", [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape),
                                          ("bias", None, bias.shape)],
                   [("out", None), ("pk", None), ("pv", None)], {"num_heads": N})
    (out, pk, pv), err = run_kiln(m, {"q": feed(q, F16), "k": feed(k, F16), "v": feed(v, F16),
                                      "bias": feed(bias, F16)}, capfd)
    ref = ref_sdpa(bnsh(quant(q, F16) + quant(bias, F16)[:N * H], N), quant(k, F16), quant(v, F16), H ** -0.5)
    assert rel_err(out, ref) <= TOL[F16]
    np.testing.assert_array_equal(pk, feed(k, F16))
    np.testing.assert_array_equal(pv, feed(v, F16))


@pytest.mark.parametrize("S", [1, 5])
def test_mha_past_present(S, capfd):
    B, P, N, H = 2, 37, 4, 64
    q, k, v = rnd(B, S, N * H), rnd(B, S, N * H), rnd(B, S, N * H)
    pk, pv = rnd(B, N, P, H), rnd(B, N, P, H)
    m = make_model("MultiHeadAttention",
                   [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape), ("", None, None),
                    ("", None, None), ("", None, None), ("pk", None, pk.shape), ("pv", None, pv.shape)],
                   [("out", None), ("prk", None), ("prv", None)], {"num_heads": N})
    (out, prk, prv), err = run_kiln(m, {"q": feed(q, F16), "k": feed(k, F16), "v": feed(v, F16),
                                        "pk": feed(pk, F16), "pv": feed(pv, F16)}, capfd)
    K = np.concatenate([quant(pk, F16), bnsh(quant(k, F16), N)], 2)
    V = np.concatenate([quant(pv, F16), bnsh(quant(v, F16), N)], 2)
    ref = ref_sdpa(bnsh(quant(q, F16), N), K, V, H ** -0.5)
    assert rel_err(out, ref) <= TOL[F16]
    np.testing.assert_array_equal(prk.astype(np.float64), K)
    np.testing.assert_array_equal(prv.astype(np.float64), V)
    assert ran_flash(err), err


@pytest.mark.parametrize("bdim", [1, 2])
def test_mha_relative_position_bias_flash(bdim, capfd):
    """An additive bias over (B or 1, N, S, T): the flash kernels (on Hopper the wgmma one) add it to
    the scores."""
    B, S, L, N, H = 2, 48, 48, 4, 64
    q, k, v, rpb = rnd(B, S, N * H), rnd(B, L, N * H), rnd(B, L, N * H), rnd(bdim, N, S, L)
    m = make_model("MultiHeadAttention", [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape),
                                          ("", None, None), ("", None, None), ("rpb", None, rpb.shape)],
                   [("out", None)], {"num_heads": N})
    (out,), err = run_kiln(m, {"q": feed(q, F16), "k": feed(k, F16), "v": feed(v, F16),
                               "rpb": feed(rpb, F16)}, capfd)
    ref = ref_sdpa(bnsh(quant(q, F16), N), bnsh(quant(k, F16), N), bnsh(quant(v, F16), N), H ** -0.5,
                   bias=quant(rpb, F16))
    assert rel_err(out, ref) <= TOL[F16]
    assert ran_flash(err), err


@pytest.mark.parametrize("bdim", [1, 2])
def test_mha_decode_with_bias_takes_the_decode_kernel(bdim, capfd):
    """One query token against a cache, with an additive bias (GPT-2's causal mask as exported,
    relative positions): the split-KV decode kernel adds it to the scores as flash does."""
    B, P, N, H = 2, 300, 4, 64
    q, k, v = rnd(B, 1, N * H), rnd(B, 1, N * H), rnd(B, 1, N * H)
    pk, pv, rpb = rnd(B, N, P, H), rnd(B, N, P, H), rnd(bdim, N, 1, P + 1)
    m = make_model("MultiHeadAttention", [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape),
                                          ("", None, None), ("", None, None), ("rpb", None, rpb.shape),
                                          ("pk", None, pk.shape), ("pv", None, pv.shape)],
                   [("out", None)], {"num_heads": N})
    feeds = {n: feed(x, F16) for n, x in (("q", q), ("k", k), ("v", v), ("rpb", rpb), ("pk", pk), ("pv", pv))}
    (out,), err = run_kiln(m, feeds, capfd)
    K = np.concatenate([quant(pk, F16), bnsh(quant(k, F16), N)], 2)
    V = np.concatenate([quant(pv, F16), bnsh(quant(v, F16), N)], 2)
    ref = ref_sdpa(bnsh(quant(q, F16), N), K, V, H ** -0.5, bias=quant(rpb, F16))
    assert rel_err(out, ref) <= TOL[F16]
    ks = kernels(err)
    assert ks and all(k.startswith("decode_splitkv") for k in ks), err


def test_mha_2d_mask_falls_back(capfd):
    B, S, L, N, H = 2, 24, 32, 2, 64
    q, k, v = rnd(B, S, N * H), rnd(B, L, N * H), rnd(B, L, N * H)
    mask = np.ones((B, L), np.int32)
    mask[0, 20:] = 0
    mask[1, 3] = 0
    m = make_model("MultiHeadAttention", [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape),
                                          ("", None, None), ("mask", I32, mask.shape)],
                   [("out", None)], {"num_heads": N})
    (out,), err = run_kiln(m, {"q": feed(q, F16), "k": feed(k, F16), "v": feed(v, F16), "mask": mask}, capfd,
                           on_cuda=False)
    bias = np.where(mask == 0, -10000.0, 0.0)[:, None, None, :]
    ref = ref_sdpa(bnsh(quant(q, F16), N), bnsh(quant(k, F16), N), bnsh(quant(v, F16), N), H ** -0.5,
                   bias=bias)
    assert rel_err(out, ref) <= TOL[F16]
    assert not kernels(err), err  # the CPU ran it, not the GPU dispatcher


def test_mha_float32_runs_on_cpu_and_matches_ort(capfd):
    B, S, L, N, H = 2, 20, 28, 2, 32
    q, k, v, bias = rnd(B, S, N * H), rnd(B, L, N * H), rnd(B, L, N * H), rnd(3 * N * H)
    lens = np.array([28, 9], np.int32)
    m = make_model("MultiHeadAttention", [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape),
                                          ("bias", None, bias.shape), ("mask", I32, [B])],
                   [("out", None)], {"num_heads": N}, F32)
    feeds = {"q": feed(q, F32), "k": feed(k, F32), "v": feed(v, F32), "bias": feed(bias, F32), "mask": lens}
    (out,), err = run_kiln(m, feeds, capfd, on_cuda=False)
    assert not kernels(err), err
    (o_ort,) = ort_cpu(m, feeds)
    assert rel_err(out, o_ort.astype(np.float64)) <= 1e-4


def test_mha_fp16_vs_ort_float32(capfd):
    """fp16 GPU result vs onnxruntime CPU on the same values in float32 (bias, (B) mask, past)."""
    B, S, P, N, H = 2, 8, 24, 4, 64
    q, k, v, bias = rnd(B, S, N * H), rnd(B, S, N * H), rnd(B, S, N * H), rnd(3 * N * H)
    pk, pv = rnd(B, N, P, H), rnd(B, N, P, H)
    lens = np.array([P + S, P + 3], np.int32)
    args = {}
    for kind in (F16, F32):
        args[kind] = make_model(
            "MultiHeadAttention",
            [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape), ("bias", None, bias.shape),
             ("mask", I32, [B]), ("", None, None), ("pk", None, pk.shape), ("pv", None, pv.shape)],
            [("out", None), ("prk", None), ("prv", None)], {"num_heads": N}, kind)
    f16 = {n: feed(x, F16) for n, x in dict(q=q, k=k, v=v, bias=bias, pk=pk, pv=pv).items()}
    f16["mask"] = lens
    f32 = {n: (x.astype(np.float32) if x.dtype == np.float16 else x) for n, x in f16.items()}
    outs, _ = run_kiln(args[F16], f16, capfd)
    o_ort = ort_cpu(args[F32], f32)
    for a, b in zip(outs, o_ort):
        assert rel_err(a, b.astype(np.float64)) <= TOL[F16]


# ---------------------------------------------------------------- PackedMultiHeadAttention

def _packing(lens, S):
    B = len(lens)
    cu = np.concatenate([[0], np.cumsum(lens)]).astype(np.int32)
    real = [b * S + s for b in range(B) for s in range(lens[b])]
    pad = [b * S + s for b in range(B) for s in range(lens[b], S)]
    return np.array(real + pad, np.int32).reshape(B, S), cu


@pytest.mark.parametrize("fmt", ["q_k_v", "qkv", "q_k_v_rpb"])
def test_packed_mha(fmt, capfd):
    lens, S, N, H = [5, 17, 32], 32, 4, 64
    B, tok = len(lens), sum(lens)
    offs, cu = _packing(lens, S)
    D = N * H
    rpb = rnd(1, N, S, S)
    if fmt == "qkv":
        qkv = rnd(tok, N, 3, H)
        ins = [("qkv", None, qkv.shape), ("", None, None), ("", None, None), ("", None, None)]
        feeds = {"qkv": feed(qkv, F16)}
        x = quant(qkv, F16)
        qs, ks, vs = x[:, :, 0], x[:, :, 1], x[:, :, 2]
    else:
        q, k, v = rnd(tok, D), rnd(tok, D), rnd(tok, D)
        ins = [("q", None, q.shape), ("k", None, k.shape), ("v", None, v.shape), ("", None, None)]
        feeds = {"q": feed(q, F16), "k": feed(k, F16), "v": feed(v, F16)}
        qs, ks, vs = (quant(t, F16).reshape(tok, N, H) for t in (q, k, v))
    ins += [("offs", I32, offs.shape), ("cu", I32, cu.shape)]
    feeds.update(offs=offs, cu=cu)
    if fmt == "q_k_v_rpb":
        ins.append(("rpb", None, rpb.shape))
        feeds["rpb"] = feed(rpb, F16)
    m = make_model("PackedMultiHeadAttention", ins, [("out", None)], {"num_heads": N})
    # a relative position bias needs the unfused path, which reads packed lengths on the host: CPU
    (out,), err = run_kiln(m, feeds, capfd, on_cuda=fmt != "q_k_v_rpb")
    assert out.shape == (tok, D)
    ref = np.zeros((tok, D))
    for b in range(B):
        r = slice(cu[b], cu[b + 1])
        t = lambda x: x[r].transpose(1, 0, 2)[None]  # noqa: E731
        bias = quant(rpb, F16)[:, :, :lens[b], :lens[b]] if fmt == "q_k_v_rpb" else None
        ref[r] = ref_sdpa(t(qs), t(ks), t(vs), H ** -0.5, bias=bias)[0]
    assert rel_err(out, ref) <= TOL[F16], err
    if fmt != "q_k_v_rpb":
        assert ran_flash(err), err
    else:
        assert not kernels(err), err


# ---------------------------------------------------------------- Attention (projection + attention)

def _attention_case(B, S, Di, N, H, kind=F16, mask=None, past_len=0, uni=0, rpb=False, mask_shape=None):
    D = N * H
    x, w, bias = rnd(B, S, Di), rnd(Di, 3 * D) / np.sqrt(Di) * 2, rnd(3 * D)
    ins = [("x", None, x.shape), ("w", None, w.shape), ("bias", None, bias.shape)]
    feeds = {"x": feed(x, kind), "w": feed(w, kind), "bias": feed(bias, kind)}
    ins.append(("mask", I32, list(mask.shape)) if mask is not None else ("", None, None))
    if mask is not None:
        feeds["mask"] = mask
    past = rnd(2, B, N, past_len, H) if past_len else None
    ins.append(("past", None, past.shape) if past_len else ("", None, None))
    if past_len:
        feeds["past"] = feed(past, kind)
    T = past_len + S
    rp = rnd(B, N, S, T) if rpb else None
    if rpb:
        ins.append(("rpb", None, rp.shape))
        feeds["rpb"] = feed(rp, kind)
    outs = [("out", None)] + ([("present", None)] if past_len else [])
    m = make_model("Attention", ins, outs, {"num_heads": N, "unidirectional": uni}, kind)
    # reference: projection in float64 on the rounded values (the GPU rounds QKV to fp16 once)
    qkv = quant(x, kind) @ quant(w, kind) + quant(bias, kind)
    qkv = quant(qkv, kind)
    Q, K, V = (bnsh(qkv[:, :, i * D:(i + 1) * D], N) for i in range(3))
    if past_len:
        pq = quant(past, kind)
        K, V = np.concatenate([pq[0], K], 2), np.concatenate([pq[1], V], 2)
    key_lens, add = None, None
    if mask is not None and mask.ndim == 1:
        key_lens = mask
    elif mask is not None:
        add = np.where(mask == 0, -10000.0, 0.0)[:, None, None, :]
    if rpb:
        add = quant(rp, kind) if add is None else add + quant(rp, kind)
    ref = ref_sdpa(Q, K, V, H ** -0.5, causal=bool(uni) and S > 1, key_lens=key_lens, bias=add)
    return m, feeds, ref, (np.stack([K, V]) if past_len else None)


@pytest.mark.parametrize("case", ["plain", "lens", "uni", "past_decode", "past_prefill_uni", "rpb",
                                  "mask2d_fallback", "bf16"])
def test_attention(case, capfd):
    B, S, Di, N, H = 2, 64, 256, 4, 64
    kw = {}
    if case == "lens":
        kw["mask"] = np.array([64, 23], np.int32)
    elif case == "uni":
        kw["uni"] = 1
    elif case == "past_decode":
        S, kw["past_len"], kw["uni"] = 1, 40, 1
    elif case == "past_prefill_uni":
        S, kw["past_len"], kw["uni"] = 6, 40, 1
    elif case == "rpb":
        kw["rpb"] = True
    elif case == "mask2d_fallback":
        mk = np.ones((B, S), np.int32)
        mk[1, 50:] = 0
        kw["mask"] = mk
    elif case == "bf16":
        kw["kind"] = BF16
    kind = kw.get("kind", F16)
    m, feeds, ref, present = _attention_case(B, S, Di, N, H, **kw)
    outs, err = run_kiln(m, feeds, capfd, on_cuda=case != "mask2d_fallback")
    # the projection's fp16 rounding differs slightly from a float64 gemm rounded once
    assert rel_err(outs[0], ref) <= 2 * TOL[kind], err
    if present is not None:
        assert rel_err(outs[1], present) <= TOL[kind]
    if case == "mask2d_fallback":
        assert not kernels(err), err
    elif case in ("plain", "uni", "bf16", "past_prefill_uni", "rpb"):
        assert ran_flash(err), err


def test_attention_fp16_vs_ort_float32(capfd):
    m16, feeds, _, _ = _attention_case(2, 32, 128, 2, 64, mask=np.array([32, 11], np.int32), past_len=8,
                                       uni=1)
    m32 = m16  # same graph with float32 types
    g = onnx.load_from_string(m16)
    for vi in list(g.graph.input) + list(g.graph.output):
        if vi.type.tensor_type.elem_type == F16:
            vi.type.tensor_type.elem_type = F32
    m32 = g.SerializeToString()
    f32 = {n: (x.astype(np.float32) if x.dtype == np.float16 else x) for n, x in feeds.items()}
    outs, _ = run_kiln(m16, feeds, capfd)
    o_ort = ort_cpu(m32, f32)
    for a, b in zip(outs, o_ort):
        assert rel_err(a, b.astype(np.float64)) <= 2 * TOL[F16]
