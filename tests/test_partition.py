"""How parallel loops are cut into chunks (src/cpu/threadpool.c kiln_threadpool_plan) and the
partitioning paths of the transformer kernels: attention's query blocks for few heads (causal
blocks costliest first), Gemm's bias fill, cheap element-wise ops on mid-sized tensors. Each path
is checked against onnxruntime on random inputs, and its output must not change with the thread
count (bit for bit: the chunking never changes what an element's value is computed from). Also
the KILN_PARTITION=T trace (src/ops/par_trace.c) that bench/partition_report.py reads."""
import ctypes
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from util import ROOT, assert_same, kiln, node_model, run_kiln, run_ort


def lib():
    path = os.environ.get("KILN_LIBRARY") or os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")),
                                                          "libkiln.so")
    L = ctypes.CDLL(path)
    L.kiln_threadpool_plan.restype = ctypes.c_int64
    L.kiln_threadpool_plan.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64]
    return L


def chunks_of(n, c):
    base, rem = divmod(n, c)
    return [base + (1 if i < rem else 0) for i in range(c)]


def span(sizes, T):
    """items on the busiest thread when T threads claim the chunks in order"""
    free = [0] * T
    for s in sizes:
        free[free.index(min(free))] += s
    return max(free)


@pytest.mark.parametrize("T", [1, 2, 3, 4, 7, 16])
def test_plan_chunks_are_even_and_respect_grain(T):
    L = lib()
    for n in list(range(1, 80)) + [96, 100, 255, 1000, 98304, 1 << 20, 3 * 32768 + 5]:
        for grain in (1, 2, 3, 5, 32, 8192, 32768):
            c = L.kiln_threadpool_plan(T, n, grain)
            assert 1 <= c <= n
            if T == 1 or n <= grain:
                assert c == 1, (T, n, grain, c)
                continue
            sizes = chunks_of(n, c)
            if c > 1:
                assert min(sizes) >= grain, (T, n, grain, c)
            # about 4 chunks per thread at most
            assert c <= 4 * T, (T, n, grain, c)


@pytest.mark.parametrize("n,T,want", [(24, 16, 24), (36, 16, 36), (60, 16, 60), (48, 16, 48), (12, 16, 12),
                                      (3, 2, 3), (64, 16, 64), (200, 16, 48)])
def test_plan_small_jobs_use_every_thread(n, T, want):
    # 24 single-item chunks on 16 threads were cut into 12 chunks of 2 before (4 threads idle)
    c = lib().kiln_threadpool_plan(T, n, 1)
    assert c == want
    assert span(chunks_of(n, c), T) <= -(-n // T) + 1


def test_plan_rounds_when_it_shortens_the_span():
    L = lib()
    # 3 chunks of 32K on 2 threads take as long as 4: 2 chunks of 48K instead
    assert L.kiln_threadpool_plan(2, 3 * 32768, 32768) == 2
    for T in (2, 4, 16):
        for n in range(T + 1, 400):
            c = L.kiln_threadpool_plan(T, n, 1)
            # never worse than the count before rounding
            c0 = n // max(1, -(-n // (4 * T)))
            assert span(chunks_of(n, c), T) <= span(chunks_of(n, c0), T), (T, n, c, c0)


# ---------------- attention: query blocks for few heads, causal costliest first ----------------

def attention_model(B, N, S, L, H, causal, past=0):
    rng = np.random.default_rng(S * 7 + L + N)
    q = rng.standard_normal((B, N, S, H)).astype(np.float32)
    k = rng.standard_normal((B, N, L, H)).astype(np.float32)
    v = rng.standard_normal((B, N, L, H)).astype(np.float32)
    ins = [("Q", q), ("K", k), ("V", v)]
    outs = ["Y"]
    if past:
        ins += [("", None), ("pk", rng.standard_normal((B, N, past, H)).astype(np.float32)),
                ("pv", rng.standard_normal((B, N, past, H)).astype(np.float32))]
        outs += ["present_key", "present_value"]
    feeds = {n: a for n, a in ins if n}
    m = node_model("Attention", [(n, a) for n, a in ins], outs, attrs={"is_causal": causal}, opset=23)
    return m, feeds


@pytest.mark.parametrize("B,N,S,L,H", [(1, 1, 128, 128, 64), (1, 3, 197, 197, 32), (2, 1, 37, 37, 16),
                                       (1, 2, 100, 60, 8), (1, 1, 33, 33, 8), (1, 12, 128, 128, 64)])
@pytest.mark.parametrize("causal", [0, 1])
def test_attention_query_blocks_same_at_every_thread_count(B, N, S, L, H, causal):
    m, feeds = attention_model(B, N, S, L, H, causal)
    want = run_ort(m, feeds)[0]
    base = run_kiln(m, feeds, threads=1)[0]
    assert_same(base, want, rtol=2e-4, atol=2e-5)
    for t in (2, 3, 5, 16):
        got = run_kiln(m, feeds, threads=t)[0]
        np.testing.assert_array_equal(got, base, err_msg=f"{t} threads vs 1")


def test_attention_causal_with_past_same_at_every_thread_count():
    m, feeds = attention_model(1, 2, 70, 70, 16, 1, past=9)
    want = run_ort(m, feeds)
    base = run_kiln(m, feeds, threads=1)
    for g, w in zip(base, want):
        assert_same(g, w, rtol=2e-4, atol=2e-5)
    for t in (2, 4, 16):
        for g, b in zip(run_kiln(m, feeds, threads=t), base):
            np.testing.assert_array_equal(g, b)


# ---------------- Gemm: the bias (C) broadcast into Y over the threads ----------------

@pytest.mark.parametrize("cshape", [(), (1,), (96,), (1, 96), (130, 1), (130, 96)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("beta", [1.0, 0.5])
@pytest.mark.parametrize("const_b", [False, True])
def test_gemm_bias_fill(cshape, dtype, beta, const_b):
    rng = np.random.default_rng(len(cshape) * 3 + int(beta * 2))
    M, K, N = 130, 70, 96
    a = rng.standard_normal((M, K)).astype(dtype)
    b = rng.standard_normal((K, N)).astype(dtype)
    c = rng.standard_normal(cshape).astype(dtype)
    inits = {"b": b} if const_b else None
    m = node_model("Gemm", [("a", a), ("b", b), ("c", c)], ["y"], {"beta": beta, "alpha": 0.75},
                   opset=13, initializers=inits)
    feeds = {"a": a, "c": c} if const_b else {"a": a, "b": b, "c": c}
    want = run_ort(m, feeds)[0]
    base = run_kiln(m, feeds, threads=1)[0]
    assert_same(base, want, rtol=1e-4, atol=1e-4)
    for t in (2, 3, 7):
        got = run_kiln(m, feeds, threads=t)[0]
        if dtype == np.float32:
            np.testing.assert_array_equal(got, base)
        else:  # OpenBLAS's dgemm rounds a tile's edges its own way: tiles differ per thread count
            assert_same(got, want, rtol=1e-12, atol=1e-12)


# ---------------- cheap element-wise ops: mid-sized tensors now split ----------------

@pytest.mark.parametrize("shape", [(128, 768), (1, 197, 768), (16385,), (8191,), (3, 5461)])
@pytest.mark.parametrize("op", ["Add", "Mul", "Sub"])
def test_cheap_elementwise_split(shape, op):
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    y = rng.standard_normal(shape[-1:]).astype(np.float32)  # broadcast over rows
    m = node_model(op, [("x", x), ("y", y)], ["z"])
    feeds = {"x": x, "y": y}
    want = run_ort(m, feeds)[0]
    for t in (1, 2, 16):
        assert_same(run_kiln(m, feeds, threads=t)[0], want, rtol=0, atol=0)


# ---------------- the KILN_PARTITION trace ----------------

def test_partition_trace_lines_and_unchanged_outputs(tmp_path):
    rng = np.random.default_rng(5)
    x = rng.standard_normal((128, 768)).astype(np.float32)
    g = rng.standard_normal(768).astype(np.float32)
    bta = rng.standard_normal(768).astype(np.float32)
    m = node_model("LayerNormalization", [("x", x), ("g", g), ("b", bta)], ["y"], {"axis": -1}, opset=17)
    path = tmp_path / "ln.onnx"
    path.write_bytes(m.SerializeToString())
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "g.npy", g)
    np.save(tmp_path / "b.npy", bta)
    code = textwrap.dedent(f"""
        import sys, numpy as np
        sys.path.insert(0, {os.path.join(ROOT, 'python')!r})
        import kiln
        d = {str(tmp_path)!r}
        s = kiln.InferenceSession(open(d + '/ln.onnx', 'rb').read(), threads=2)
        y = s.run(None, {{n: np.load(d + '/' + n + '.npy') for n in 'xgb'}})[0]
        np.save(d + '/y.npy', y)
    """)
    env = dict(os.environ, KILN_PARTITION="16")
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    lines = [ln.split("\t") for ln in r.stderr.splitlines() if ln.startswith("kiln-partition\t")]
    assert lines, r.stderr
    f = lines[0]
    kv = dict(x.split("=") for x in f[3:])
    assert f[2] == "LayerNormalization"
    assert int(kv["items"]) == 128
    assert int(kv["chunks"]) == 16  # rows cut for 16 threads although this run has 2
    assert 0 < float(kv["eff"]) <= 1.0
    assert float(kv["span_us"]) <= float(kv["serial_us"]) + 1e-6
    # the traced run computes the same output as a normal one
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), run_kiln(m, {"x": x, "g": g, "b": bta})[0])


def test_partition_report_runs():
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "partition_report.py"), "--threads", "4",
                        "--synthetic", "bert", "--batch", "1"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "| attention_fused | Attention |" in r.stdout
    assert "| **all** |" in r.stdout


# ---------------- kiln:MatMulBias (MatMul + Add fused): bias set per tile ----------------

@pytest.mark.parametrize("shape", [(130, 70), (2, 65, 70), (1, 197, 64), (5, 70)])
@pytest.mark.parametrize("N", [96, 33, 300])
def test_matmul_bias_per_tile(shape, N):
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(N + len(shape))
    K = shape[-1]
    x = rng.standard_normal(shape).astype(np.float32)
    w = rng.standard_normal((K, N)).astype(np.float32)
    b = rng.standard_normal(N).astype(np.float32)
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])],
                          "mmb", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    s = kiln.InferenceSession(m.SerializeToString(), threads=2)
    # 2-D products fuse into Gemm (its bias goes in per tile too), batched ones into MatMulBias
    assert [n["op_type"] for n in s.nodes()] == ["Gemm" if len(shape) == 2 else "MatMulBias"]
    want = run_ort(m, {"x": x})[0]
    base = run_kiln(m, {"x": x}, threads=1)[0]
    assert_same(base, want, rtol=1e-4, atol=1e-4)
    for t in (2, 3, 7):
        np.testing.assert_array_equal(run_kiln(m, {"x": x}, threads=t)[0], base)


# ---------------- Cast to the input's own type: a view, or a threaded copy ----------------

@pytest.mark.parametrize("internal", [True, False])
@pytest.mark.parametrize("shape", [(2, 3, 40, 40), (1, 12, 128, 128), (5,)])
@pytest.mark.parametrize("op", ["Cast", "CastLike"])
def test_same_type_cast(internal, shape, op):
    """Softmax in float32 then .to(float32), as exporters write attention; the cast's output either
    feeds another node (the runtime aliases it) or is a graph output (copied over the threads)."""
    from onnx import TensorProto, helper
    rng = np.random.default_rng(len(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    like = np.zeros(1, np.float32)
    cast = (helper.make_node("Cast", ["p"], ["c"], to=TensorProto.FLOAT) if op == "Cast"
            else helper.make_node("CastLike", ["p", "like"], ["c"]))
    nodes = [helper.make_node("Softmax", ["x"], ["p"], axis=-1), cast]
    out = "c"
    if internal:
        nodes.append(helper.make_node("Add", ["c", "x"], ["y"]))
        out = "y"
    ins = [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))]
    if op == "CastLike":
        ins.append(helper.make_tensor_value_info("like", TensorProto.FLOAT, [1]))
    g = helper.make_graph(nodes, "c", ins, [helper.make_tensor_value_info(out, TensorProto.FLOAT, None),
                                            helper.make_tensor_value_info("p", TensorProto.FLOAT, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 21)])
    m.ir_version = 10
    feeds = {"x": x, "like": like} if op == "CastLike" else {"x": x}
    want = run_ort(m, feeds)
    for t in (1, 2, 16):
        got = run_kiln(m, feeds, threads=t)
        for g_, w in zip(got, want):
            assert_same(g_, w, rtol=1e-5, atol=1e-6)
        # a view must not let the two outputs share bytes the caller could write through
        assert not np.shares_memory(got[0], got[1])


def test_same_type_cast_strings():
    x = np.array(["a", "bc", ""], dtype=object)
    from onnx import TensorProto
    m = node_model("Cast", [("x", x)], ["y"], {"to": TensorProto.STRING}, opset=21)
    got = run_kiln(m, {"x": x})[0]
    assert list(got) == list(x)
