"""Concurrent runs on one session: 8 Python threads share a session of each model (an MLP, a conv
net, If/Loop/Scan subgraphs, transformer blocks from ../shared/models, string ops), each thread
with its own feeds and shapes, and every output must be bitwise what a separate session gave one run
at a time. The C stress test (build/test_concurrent_runs, pthreads) runs over the same models and
feeds; scripts/tsan.sh runs it under ThreadSanitizer. Also: the session-wide memory limit, profiling
and failing runs while other threads run."""
import json
import os
import subprocess
import threading
import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto as TP, helper, numpy_helper

from util import MODELS, ROOT, kiln

BUILD = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))
THREADS = 8


def _model(nodes, inputs, outputs, inits=(), opset=18, extra=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)] +
                          [helper.make_opsetid(d, v) for d, v in extra])
    m.ir_version = 9
    return m


def _init(rng, name, *shape, scale=0.2):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def mlp():
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Add", ["o", "b2"], ["ob"]), helper.make_node("Softmax", ["ob"], ["y"], axis=-1)]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, ["n", 64])],
               [helper.make_tensor_value_info("y", TP.FLOAT, ["n", 32])],
               [_init(rng, "w1", 64, 128), _init(rng, "b1", 128), _init(rng, "w2", 128, 32), _init(rng, "b2", 32)])
    feeds = [{"x": rng.standard_normal((n, 64)).astype(np.float32)} for n in (1, 3, 7, 16, 33, 64)]
    return m, feeds


def convnet():
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "c1", "cb1"], ["a"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["a"], ["ar"]),
             helper.make_node("MaxPool", ["ar"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p", "c2"], ["b"], group=2),
             helper.make_node("BatchNormalization", ["b", "g", "beta", "mu", "var"], ["bn"]),
             helper.make_node("Relu", ["bn"], ["br"]),
             helper.make_node("GlobalAveragePool", ["br"], ["gp"]),
             helper.make_node("Flatten", ["gp"], ["f"]),
             helper.make_node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    inits = [_init(rng, "c1", 8, 3, 3, 3), _init(rng, "cb1", 8), _init(rng, "c2", 16, 4, 3, 3),
             _init(rng, "g", 16), _init(rng, "beta", 16), _init(rng, "mu", 16),
             numpy_helper.from_array(rng.uniform(0.5, 2, 16).astype(np.float32), "var"),
             _init(rng, "fw", 10, 16), _init(rng, "fb", 10)]
    m = _model(nodes, [helper.make_tensor_value_info("x", TP.FLOAT, ["n", 3, "h", "w"])],
               [helper.make_tensor_value_info("y", TP.FLOAT, ["n", 10])], inits)
    feeds = [{"x": rng.standard_normal(s).astype(np.float32)}
             for s in ((1, 3, 8, 8), (2, 3, 16, 12), (4, 3, 10, 10), (1, 3, 32, 32), (3, 3, 12, 20))]
    return m, feeds


def control_flow():
    """If (on the sign of x's sum), a Loop with a loop-carried value and a scan output, and a Scan
    computing a running sum; the bodies read x from the outer scope."""
    rng = np.random.default_rng(3)
    vi = helper.make_tensor_value_info
    then_g = helper.make_graph([helper.make_node("Mul", ["x", "two"], ["t0"]), helper.make_node("Relu", ["t0"], ["t"])],
                               "then", [], [vi("t", TP.FLOAT, None)],
                               [numpy_helper.from_array(np.float32(2), "two")])
    else_g = helper.make_graph([helper.make_node("Sub", ["x", "one"], ["e0"]), helper.make_node("Tanh", ["e0"], ["e"])],
                               "else", [], [vi("e", TP.FLOAT, None)],
                               [numpy_helper.from_array(np.float32(1), "one")])
    body = helper.make_graph(
        [helper.make_node("Mul", ["acc", "half"], ["h"]), helper.make_node("Add", ["h", "x"], ["acc2"]),
         helper.make_node("Identity", ["cond"], ["cond2"]), helper.make_node("Sin", ["acc2"], ["sc"])],
        "body", [vi("i", TP.INT64, []), vi("cond", TP.BOOL, []), vi("acc", TP.FLOAT, None)],
        [vi("cond2", TP.BOOL, []), vi("acc2", TP.FLOAT, None), vi("sc", TP.FLOAT, None)],
        [numpy_helper.from_array(np.float32(0.5), "half")])
    scan_body = helper.make_graph(
        [helper.make_node("Add", ["s", "row"], ["s2"]), helper.make_node("Abs", ["s2"], ["out"])],
        "scan", [vi("s", TP.FLOAT, [8]), vi("row", TP.FLOAT, [8])],
        [vi("s2", TP.FLOAT, [8]), vi("out", TP.FLOAT, [8])])
    nodes = [helper.make_node("ReduceSum", ["x"], ["sum"], keepdims=0),
             helper.make_node("Greater", ["sum", "zero"], ["pos"]),
             helper.make_node("If", ["pos"], ["iy"], then_branch=then_g, else_branch=else_g),
             helper.make_node("Loop", ["trips", "", "iy"], ["ly", "lsc"], body=body),
             helper.make_node("Scan", ["s0", "ly"], ["sy", "ss"], body=scan_body, num_scan_inputs=1)]
    m = _model(nodes, [vi("x", TP.FLOAT, ["n", 8]), vi("trips", TP.INT64, []), vi("s0", TP.FLOAT, [8])],
               [vi("ly", TP.FLOAT, ["n", 8]), vi("lsc", TP.FLOAT, None), vi("sy", TP.FLOAT, [8]),
                vi("ss", TP.FLOAT, ["n", 8])],
               [numpy_helper.from_array(np.float32(0), "zero")])
    feeds = []
    for n, trips in ((1, 1), (3, 4), (5, 2), (8, 7), (2, 0), (6, 3)):
        x = rng.standard_normal((n, 8)).astype(np.float32)
        if n % 2:
            x -= 1  # both branches of the If
        feeds.append({"x": x, "trips": np.array(trips, np.int64),
                      "s0": rng.standard_normal(8).astype(np.float32)})
    return m, feeds


def strings():
    """StringNormalizer, RegexFullMatch, StringSplit, StringConcat and a string-to-int LabelEncoder."""
    rng = np.random.default_rng(4)
    vi = helper.make_tensor_value_info
    nodes = [helper.make_node("StringNormalizer", ["s"], ["low"], case_change_action="LOWER",
                              stopwords=["the", "a"], locale="C.UTF-8"),
             helper.make_node("RegexFullMatch", ["low"], ["isnum"], pattern="[0-9]+"),
             helper.make_node("StringSplit", ["low"], ["parts", "nparts"], delimiter="-"),
             helper.make_node("StringConcat", ["low", "low"], ["twice"]),
             helper.make_node("LabelEncoder", ["low"], ["code"], domain="ai.onnx.ml",
                              keys_strings=["apple", "pear", "kiwi", "12"], values_int64s=[1, 2, 3, 4],
                              default_int64=-1)]
    m = _model(nodes, [vi("s", TP.STRING, ["n"])],
               [vi("low", TP.STRING, None), vi("isnum", TP.BOOL, None), vi("parts", TP.STRING, None),
                vi("nparts", TP.INT64, None), vi("twice", TP.STRING, None), vi("code", TP.INT64, None)],
               opset=20, extra=[("ai.onnx.ml", 3)])
    words = ["Apple", "PEAR", "kiwi", "12", "the", "A", "x-y-z", "Mango-Pie", "007", "a-b"]
    feeds = [{"s": np.array(list(rng.choice(words, n)), dtype=object)} for n in (1, 2, 5, 9, 16)]
    return m, feeds


def kernel_states():
    """Ops whose kernels keep state made at open (prepacked or parsed weights, tables, trees):
    Gemm and MatMul on constants, LSTM, TopK, Einsum, LayerNormalization, Resize, CumSum,
    TfIdfVectorizer, TreeEnsembleRegressor, DynamicQuantizeLinear with MatMulInteger, and
    RandomNormalLike with a seed (its generator is the run's own)."""
    rng = np.random.default_rng(6)
    vi = helper.make_tensor_value_info
    ml = "ai.onnx.ml"
    i64 = lambda name, v: numpy_helper.from_array(np.array(v, np.int64), name)  # noqa: E731
    nodes = [helper.make_node("Gemm", ["x", "gw", "gb"], ["g"]),
             helper.make_node("Unsqueeze", ["g", "ax1"], ["g3"]),
             helper.make_node("LSTM", ["g3", "lw", "lr", "lb"], ["ly", "lh"], hidden_size=8),
             helper.make_node("TopK", ["g", "k"], ["tv", "ti"]),
             helper.make_node("Einsum", ["g", "ew"], ["ey"], equation="ij,jk->ik"),
             helper.make_node("LayerNormalization", ["g", "lns", "lnb"], ["ln"]),
             helper.make_node("Unsqueeze", ["g", "ax01"], ["g4"]),
             helper.make_node("Resize", ["g4", "", "scales"], ["rs"], mode="linear"),
             helper.make_node("CumSum", ["ln", "ax"], ["cs"], reverse=1),
             helper.make_node("TfIdfVectorizer", ["ids"], ["tf"], mode="TFIDF", min_gram_length=1,
                              max_gram_length=2, max_skip_count=1, ngram_counts=[0, 3],
                              ngram_indexes=[0, 1, 2, 3, 4], pool_int64s=[1, 2, 3, 1, 2, 2, 3],
                              weights=[0.5, 1.0, 1.5, 2.0, 2.5]),
             helper.make_node("TreeEnsembleRegressor", ["x"], ["tree"], domain=ml, n_targets=1,
                              nodes_treeids=[0, 0, 0, 1, 1, 1], nodes_nodeids=[0, 1, 2, 0, 1, 2],
                              nodes_featureids=[0, 0, 0, 3, 0, 0], nodes_values=[0.0, 0, 0, 0.5, 0, 0],
                              nodes_modes=["BRANCH_LEQ", "LEAF", "LEAF"] * 2,
                              nodes_truenodeids=[1, 0, 0, 1, 0, 0], nodes_falsenodeids=[2, 0, 0, 2, 0, 0],
                              target_treeids=[0, 0, 1, 1], target_nodeids=[1, 2, 1, 2], target_ids=[0, 0, 0, 0],
                              target_weights=[-1.0, 2.0, 0.25, -0.75]),
             helper.make_node("DynamicQuantizeLinear", ["g"], ["q", "qs", "qz"]),
             helper.make_node("MatMulInteger", ["q", "qw", "qz"], ["qi"]),
             helper.make_node("RandomNormalLike", ["x"], ["rn"], seed=3.0),
             helper.make_node("Add", ["x", "rn"], ["noisy"])]
    inits = [_init(rng, "gw", 16, 16), _init(rng, "gb", 16), i64("ax1", [1]), i64("ax01", [0, 1]),
             _init(rng, "lw", 1, 32, 16), _init(rng, "lr", 1, 32, 8), _init(rng, "lb", 1, 64), i64("k", [3]),
             _init(rng, "ew", 16, 5), _init(rng, "lns", 16), _init(rng, "lnb", 16),
             numpy_helper.from_array(np.array([1, 1, 2, 0.5], np.float32), "scales"),
             numpy_helper.from_array(np.array(1, np.int64), "ax"),
             numpy_helper.from_array(rng.integers(0, 256, (16, 6)).astype(np.uint8), "qw")]
    outs = ["ly", "lh", "tv", "ti", "ey", "rs", "cs", "tf", "tree", "qi", "noisy"]
    m = _model(nodes, [vi("x", TP.FLOAT, ["n", 16]), vi("ids", TP.INT64, ["n", 6])],
               [helper.make_empty_tensor_value_info(o) for o in outs], inits, extra=[(ml, 3)])
    feeds = [{"x": rng.standard_normal((n, 16)).astype(np.float32),
              "ids": rng.integers(0, 5, (n, 6)).astype(np.int64)} for n in (1, 2, 5, 8, 13)]
    return m, feeds


def shared_model(name, seq=None):
    path = os.path.join(MODELS, name + ".onnx")
    if not os.path.exists(path):
        pytest.skip("%s is not in ../shared/models" % name)
    m = onnx.load(path)
    rng = np.random.default_rng(5)
    feeds = []
    for k in range(5):
        f = {}
        for i in m.graph.input:
            shape = [d.dim_value for d in i.type.tensor_type.shape.dim]
            if i.name == "attention_mask":
                v = np.ones(shape, np.int64)
                v[-1, shape[-1] - 1 - k:] = 0
            elif i.name == "token_type_ids":
                v = rng.integers(0, 2, shape).astype(np.int64)
            else:
                v = rng.integers(0, 1000, shape).astype(np.int64)
            f[i.name] = v
        feeds.append(f)
    return m, feeds


MODEL_MAKERS = {
    "mlp": mlp,
    "convnet": convnet,
    "control_flow": control_flow,
    "strings": strings,
    "kernel_states": kernel_states,
    "bert_tiny_fused": lambda: shared_model("bert_tiny_fused"),
    "gpt2_tiny": lambda: shared_model("gpt2_tiny"),
}


def same_bits(a, b):
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same_bits(x, y) for x, y in zip(a, b))
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    if a.dtype == object:
        return a.tolist() == b.tolist()
    return a.tobytes() == b.tobytes()


def run_threads(session, feeds, refs, rounds, threads=THREADS):
    """Every thread runs every feed `rounds` times, in an order of its own; returns the failures."""
    failures = []
    barrier = threading.Barrier(threads)

    def work(t):
        order = np.random.default_rng(100 + t).permutation(len(feeds) * rounds) % len(feeds)
        barrier.wait()
        for i in order:
            try:
                out = session.run(None, feeds[i])
            except Exception as e:  # noqa: BLE001 - reported below with the thread and feed
                failures.append("thread %d feed %d: %s" % (t, i, e))
                continue
            if not same_bits(out, refs[i]):
                failures.append("thread %d feed %d: the outputs differ from the single-threaded run" % (t, i))

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return failures


@pytest.mark.parametrize("intra", [1, 2])
@pytest.mark.parametrize("name", list(MODEL_MAKERS))
def test_threads_share_a_session_bitwise(name, intra):
    m, feeds = MODEL_MAKERS[name]()
    data = m.SerializeToString()
    ref_session = kiln.InferenceSession(data, threads=intra)
    refs = [ref_session.run(None, f) for f in feeds]
    if name in ("mlp", "convnet", "control_flow", "kernel_states"):  # the references themselves are right
        o = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        for f, r in zip(feeds, refs):
            for k, (a, b) in enumerate(zip(r, o.run(None, f))):
                if m.graph.output[k].name not in ("noisy", "qi"):  # random; rounding ties in the scale
                    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    if name == "strings":
        o = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
        for f, r in zip(feeds, refs):
            for a, b in zip(r, o.run(None, f)):
                assert np.asarray(a).tolist() == np.asarray(b).tolist()
    s = kiln.InferenceSession(data, threads=intra)  # fresh: the first runs of each shape race too
    rounds = 2 if name in ("bert_tiny_fused", "gpt2_tiny") else 4
    failures = run_threads(s, feeds, refs, rounds)
    assert not failures, "\n".join(failures[:10])


@pytest.mark.parametrize("name", ["mlp", "control_flow", "strings"])
def test_threads_share_a_session_ctypes_path(name, monkeypatch):
    # the ctypes fallback (ctypes releases the GIL around kiln_run too)
    monkeypatch.setenv("KILN_PYTHON_CTYPES", "1")
    m, feeds = MODEL_MAKERS[name]()
    data = m.SerializeToString()
    ref_session = kiln.InferenceSession(data, threads=1)
    refs = [ref_session.run(None, f) for f in feeds]
    s = kiln.InferenceSession(data, threads=1)
    assert s._native is None
    failures = run_threads(s, feeds, refs, rounds=3)
    assert not failures, "\n".join(failures[:10])


def test_memory_limit_counts_concurrent_runs_together():
    # a limit 8 runs fit in together: none fails, and afterwards the session's count is back at
    # zero (a run needing nearly the whole limit still fits)
    m, feeds = mlp()
    so = kiln.SessionOptions()
    so.memory_limit = 8 * 64 * (128 + 128 + 32 + 32) * 4 * 2
    s = kiln.InferenceSession(m.SerializeToString(), so, threads=1)
    refs = [s.run(None, f) for f in feeds]
    assert not run_threads(s, feeds, refs, rounds=3)
    big = {"x": np.ones((8 * 64, 64), np.float32)}
    assert s.run(None, big)[0].shape == (512, 32)
    # a limit one run fits in, but not eight at once: runs that meet others may fail, with the
    # limit named, and none corrupts another
    so.memory_limit = 64 * (128 + 128 + 32 + 32) * 4 + 4096
    s = kiln.InferenceSession(m.SerializeToString(), so, threads=1)
    one = {"x": np.random.default_rng(7).standard_normal((64, 64)).astype(np.float32)}
    ref = s.run(None, one)
    failures = run_threads(s, [one], [ref], rounds=30)
    assert all("memory limit" in f for f in failures), failures[:3]
    assert same_bits(s.run(None, one), ref)  # everything given back: a run alone fits again


def test_profiling_while_threads_run(tmp_path):
    m, feeds = mlp()
    s = kiln.InferenceSession(m.SerializeToString(), threads=1)
    refs = [s.run(None, f) for f in feeds]
    s.start_profiling(str(tmp_path / "trace.json"))
    assert not run_threads(s, feeds, refs, rounds=2)
    path = s.end_profiling()
    events = json.load(open(path))
    events = events["traceEvents"] if isinstance(events, dict) else events
    runs = [e for e in events if e.get("name") == "model_run"]
    assert len(runs) == THREADS * 2 * len(feeds)
    # one event per node of every run, none lost to a race, all inside the profiling span
    nodes = [e for e in events if e.get("cat") == "Node"]
    assert len(nodes) == len(runs) * len(s.nodes())
    assert all(e["ts"] >= 0 and e["dur"] >= 0 for e in events)


def test_failing_runs_report_their_own_error():
    # half the threads feed a wrong shape of their own; each sees its own message, the others
    # their correct outputs
    m, feeds = mlp()
    s = kiln.InferenceSession(m.SerializeToString(), threads=1)
    ref = s.run(None, feeds[2])
    errors = {}
    barrier = threading.Barrier(THREADS)

    def work(t):
        barrier.wait()
        for _ in range(20):
            if t % 2:
                try:
                    s.run(None, {"x": np.zeros((2, 60 + t), np.float32)})
                    errors[t] = "no error"
                except kiln.KilnError as e:
                    if "(2, %d)" % (60 + t) not in str(e) and "[2,%d]" % (60 + t) not in str(e).replace(" ", ""):
                        errors[t] = str(e)
            elif not same_bits(s.run(None, feeds[2]), ref):
                errors[t] = "outputs differ"

    ts = [threading.Thread(target=work, args=(t,)) for t in range(THREADS)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errors, errors


def endless_loop(width=4):
    """y = x + M: a Loop adding 1 per trip, its trip count M a graph input."""
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c2"]), helper.make_node("Add", ["v", "one"], ["v2"])], "body",
        [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), vi("v", TP.FLOAT, [width])],
        [vi("c2", TP.BOOL, []), vi("v2", TP.FLOAT, [width])],
        [numpy_helper.from_array(np.ones(width, np.float32), "one")])
    return _model([helper.make_node("Loop", ["M", "", "x"], ["y"], body=body)],
                  [vi("M", TP.INT64, []), vi("x", TP.FLOAT, [width])], [vi("y", TP.FLOAT, [width])])


def test_a_run_finishes_while_another_holds_the_session():
    """No lock around a run: while one run loops without end, another run of the same session
    starts and finishes; then the endless one is stopped through its terminate flag. (With runs
    serialised the second would wait for ever.)"""
    s = kiln.InferenceSession(endless_loop().SerializeToString(), threads=1)
    ro = kiln.RunOptions()
    endless, short, done = {}, {}, threading.Event()

    started = threading.Event()

    def run_endless():
        try:
            started.set()
            s.run(None, {"M": np.array(2 ** 62, np.int64), "x": np.zeros(4, np.float32)}, ro)
            endless["result"] = "finished"
        except kiln.KilnError as e:
            endless["result"] = str(e)

    def run_short():
        short["y"] = s.run(None, {"M": np.array(5, np.int64), "x": np.zeros(4, np.float32)})[0]
        done.set()

    a = threading.Thread(target=run_endless)
    a.start()
    started.wait()
    time.sleep(0.3)  # inside its Loop by now
    b = threading.Thread(target=run_short)
    b.start()
    finished = done.wait(30)
    ro.terminate = True
    a.join()
    b.join()
    assert finished, "the second run waited for the first"
    np.testing.assert_array_equal(short["y"], np.full(4, 5, np.float32))
    assert "terminated" in endless["result"], endless


def test_memory_limit_is_the_sessions():
    """The limit counts every run of the session together: while one run loops holding a 4 MiB
    value, another that needs 8 MiB more passes the 10 MiB limit and fails saying the other runs
    hold the rest; alone it fits."""
    n = 1 << 20
    vi = helper.make_tensor_value_info
    body = helper.make_graph(
        [helper.make_node("Identity", ["c"], ["c2"]), helper.make_node("Add", ["v", "one"], ["v2"])], "body",
        [vi("i", TP.INT64, []), vi("c", TP.BOOL, []), vi("v", TP.FLOAT, [1])],
        [vi("c2", TP.BOOL, []), vi("v2", TP.FLOAT, [1])], [numpy_helper.from_array(np.ones(1, np.float32), "one")])
    nodes = [helper.make_node("Expand", ["x", "shape"], ["t"]),         # 4 MiB, alive across the Loop
             helper.make_node("Loop", ["M", "", "x"], ["l"], body=body),
             helper.make_node("Add", ["t", "l"], ["z"]),                # 4 MiB more
             helper.make_node("ReduceSum", ["z"], ["y"], keepdims=0)]
    m = _model(nodes, [vi("M", TP.INT64, []), vi("x", TP.FLOAT, [1])], [vi("y", TP.FLOAT, [])],
               [numpy_helper.from_array(np.array([n], np.int64), "shape")])
    so = kiln.SessionOptions()
    so.memory_limit = 10 << 20
    s = kiln.InferenceSession(m.SerializeToString(), so, threads=1)
    ro = kiln.RunOptions()
    endless = {}
    feed = {"M": np.array(3, np.int64), "x": np.zeros(1, np.float32)}

    def run_endless():
        try:
            s.run(None, dict(feed, M=np.array(2 ** 62, np.int64)), ro)
        except kiln.KilnError as e:
            endless["result"] = str(e)

    a = threading.Thread(target=run_endless)
    a.start()
    err = None
    try:
        # once the endless run is in its Loop, holding t, this run cannot fit (on a busy machine
        # the endless run may take a while to get there: until then this one fits)
        for _ in range(100):
            time.sleep(0.1)
            try:
                s.run(None, feed)
            except kiln.KilnError as e:
                err = str(e)
                break
    finally:
        ro.terminate = True
        a.join()
    assert err and "memory limit of %d bytes" % (10 << 20) in err, err
    assert "by the session's other runs" in err, err
    assert "terminated" in endless["result"], endless
    assert s.run(None, feed)[0] == 3.0 * n  # alone it fits: what the others held was given back


def write_feeds(tmp_path, name):
    m, feeds = MODEL_MAKERS[name]()
    mp = str(tmp_path / (name + ".onnx"))
    onnx.save(m, mp)
    paths = []
    for i, f in enumerate(feeds):
        p = str(tmp_path / ("%s_%d.npz" % (name, i)))
        np.savez(p, **{k: (v.astype(str) if v.dtype == object else v) for k, v in f.items()})
        paths.append(p)
    return [mp] + paths


def stress_args(tmp_path, names):
    args = []
    for n in names:
        if args:
            args.append("--")
        args += write_feeds(tmp_path, n)
    return args


C_STRESS = os.path.join(BUILD, "test_concurrent_runs")


@pytest.mark.parametrize("intra,specialize", [(1, 0), (2, 0), (2, 1)])
def test_c_stress_pthreads(tmp_path, intra, specialize):
    """specialize 1: shape-specialised children open while other threads run (src/core/specialize.c)."""
    if not os.path.exists(C_STRESS):
        pytest.fail("%s is not built (cmake --build build)" % C_STRESS)
    names = ["mlp", "convnet", "control_flow", "strings", "kernel_states", "bert_tiny_fused", "gpt2_tiny"]
    runs = int(os.environ.get("KILN_STRESS_RUNS", "40"))
    r = subprocess.run([C_STRESS, "-t", str(THREADS), "-n", str(runs), "-j", str(intra), "-s", str(specialize)] +
                       stress_args(tmp_path, names),
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "%d runs on %d threads over %d models, 0 failures" % (runs * THREADS, THREADS, len(names)) in r.stdout
    # ThreadSanitizer's reports go to stderr (scripts/tsan.sh runs this test on a TSan build)
    assert "ThreadSanitizer" not in r.stderr, r.stderr[-4000:]
