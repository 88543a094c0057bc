"""RNN / LSTM / GRU against onnxruntime: directions, layouts, sequence_lens, initial states,
peepholes, clip, activations with alpha/beta, linear_before_reset, input_forget, opsets."""
import os
import sys

import numpy as np
import pytest
from onnx import numpy_helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, check, node_model, rand, run_kiln, run_ort  # noqa: E402

GATES = {"RNN": 1, "GRU": 3, "LSTM": 4}


def build(cell, S, B, I, H, direction="forward", layout=0, bias=True, seq_lens=None, init_h=True,
          init_c=True, peep=False, opset=14, outputs=("Y", "Y_h", "Y_c"), dtype=np.float32, seed=0,
          attrs=None, as_initializers=False):
    rng = np.random.default_rng(seed)
    D = 2 if direction == "bidirectional" else 1
    G = GATES[cell]
    X = rand(rng, (B, S, I) if layout else (S, B, I), dtype, -1, 1)
    W = rand(rng, (D, G * H, I), dtype, -0.7, 0.7)
    R = rand(rng, (D, G * H, H), dtype, -0.7, 0.7)
    ins = [("X", X), ("W", W), ("R", R)]
    ins.append(("B", rand(rng, (D, 2 * G * H), dtype, -0.5, 0.5)) if bias else ("", None))
    ins.append(("sequence_lens", np.asarray(seq_lens, np.int32)) if seq_lens is not None else ("", None))
    hshape = (B, D, H) if layout else (D, B, H)
    ins.append(("initial_h", rand(rng, hshape, dtype, -1, 1)) if init_h else ("", None))
    if cell == "LSTM":
        ins.append(("initial_c", rand(rng, hshape, dtype, -1, 1)) if init_c else ("", None))
        ins.append(("P", rand(rng, (D, 3 * H), dtype, -0.5, 0.5)) if peep else ("", None))
    while ins and ins[-1][0] == "":
        ins.pop()
    a = {"hidden_size": H, "direction": direction}
    if opset >= 14:
        a["layout"] = layout
    a.update(attrs or {})
    outs = list(outputs) if cell == "LSTM" else [o for o in outputs if o != "Y_c"]
    feeds = {n: v for n, v in ins if n}
    inits = {}
    if as_initializers:
        inits = {n: feeds.pop(n) for n in ("W", "R", "B") if n in feeds}
    m = node_model(cell, [(n, v if v is not None else np.zeros(1, np.float32)) for n, v in ins],
                   [(o, dtype) if o else "" for o in outs], attrs=a, opset=opset, initializers=inits)
    return m, feeds


TOL = dict(rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_directions(cell, direction):
    m, feeds = build(cell, S=5, B=3, I=4, H=6, direction=direction, peep=cell == "LSTM",
                     seed=len(cell) * 10 + len(direction))
    check(m, feeds, **TOL)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "bidirectional"])
def test_layout_batch_major(cell, direction):
    """onnxruntime has no layout=1: compare with its layout=0 result on transposed data."""
    kw = dict(S=5, B=3, I=4, H=6, direction=direction, peep=cell == "LSTM", seq_lens=[5, 2, 4], seed=17)
    m1, f1 = build(cell, layout=1, **kw)
    m0, _ = build(cell, layout=0, **kw)
    f0 = dict(f1)
    for k in ("X", "initial_h", "initial_c"):
        if k in f0:
            f0[k] = np.ascontiguousarray(f1[k].transpose(1, 0, 2))
    got = run_kiln(m1, f1)
    want = run_ort(m0, f0)
    assert len(got) == len(want)
    assert_same(got[0], want[0].transpose(2, 0, 1, 3), what="Y", **TOL)
    for i in range(1, len(got)):
        assert_same(got[i], want[i].transpose(1, 0, 2), what=f"output {i}", **TOL)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_sequence_lens(cell, direction):
    m, feeds = build(cell, S=6, B=4, I=3, H=5, direction=direction, seq_lens=[6, 2, 4, 1],
                     peep=cell == "LSTM", seed=7)
    check(m, feeds, **TOL)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
def test_zero_length_entry(cell):
    m, feeds = build(cell, S=4, B=3, I=3, H=2, seq_lens=[4, 0, 2], direction="bidirectional", seed=1)
    check(m, feeds, **TOL)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("S,B", [(0, 2), (3, 0)])
def test_empty_sequence_or_batch(cell, S, B):
    m, feeds = build(cell, S=S, B=B, I=3, H=4, direction="bidirectional", seed=2)
    got = run_kiln(m, feeds)
    assert got[0].shape == (S, 2, B, 4) and got[1].shape == (2, B, 4)
    assert all(not np.any(g) for g in got)  # no steps: zero outputs and states, as onnxruntime's RNN
    # (its GRU and LSTM abort the process on empty inputs, so they cannot be asked)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
def test_no_optional_inputs(cell):
    m, feeds = build(cell, S=4, B=2, I=3, H=4, bias=False, init_h=False, init_c=False, seed=3)
    check(m, feeds, **TOL)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("outputs", [("", "Y_h"), ("Y",), ("", "", "Y_c")])
def test_output_subsets(cell, outputs):
    if cell != "LSTM" and outputs == ("", "", "Y_c"):
        outputs = ("", "Y_h")
    m, feeds = build(cell, S=3, B=2, I=3, H=4, outputs=outputs, seed=11, direction="bidirectional")
    check(m, feeds, **TOL)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
def test_clip(cell):
    m, feeds = build(cell, S=5, B=2, I=4, H=3, attrs={"clip": 0.3}, seed=5, peep=cell == "LSTM")
    for k in ("W", "R"):
        feeds[k] = feeds[k] * 4  # drive the gates well past the clip
    check(m, feeds, **TOL)


def test_gru_linear_before_reset():
    for direction in ("forward", "bidirectional"):
        m, feeds = build("GRU", S=5, B=3, I=4, H=5, direction=direction,
                         attrs={"linear_before_reset": 1}, seed=21, seq_lens=[5, 3, 1])
        check(m, feeds, **TOL)


def test_lstm_input_forget():
    m, feeds = build("LSTM", S=4, B=2, I=3, H=4, attrs={"input_forget": 1}, peep=True, seed=9)
    check(m, feeds, **TOL)


ACTS = [
    ("RNN", ["Relu"], [], []),
    ("RNN", ["LeakyRelu"], [0.2], []),
    ("RNN", ["Affine", "ScaledTanh"], [0.5, 0.8], [0.1, 1.3]),
    ("RNN", ["Softsign", "Softplus"], [], []),
    ("GRU", ["HardSigmoid", "Elu"], [0.3, 0.7], [0.4]),
    ("GRU", ["Sigmoid", "Tanh", "Sigmoid", "Softsign"], [], []),
    ("LSTM", ["HardSigmoid", "Tanh", "Softsign"], [0.25], [0.45]),
    ("LSTM", ["Sigmoid", "ScaledTanh", "Tanh"], [0.9], [1.1]),
]


@pytest.mark.parametrize("cell,acts,alpha,beta", ACTS)
def test_activations(cell, acts, alpha, beta):
    n_per_dir = {"RNN": 1, "GRU": 2, "LSTM": 3}[cell]
    direction = "bidirectional" if len(acts) == 2 * n_per_dir else "forward"
    attrs = {"activations": acts}
    if alpha:
        attrs["activation_alpha"] = alpha
    if beta:
        attrs["activation_beta"] = beta
    m, feeds = build(cell, S=4, B=2, I=3, H=4, direction=direction, attrs=attrs, seed=len(acts))
    check(m, feeds, **TOL)


@pytest.mark.parametrize("cell,opset", [("RNN", 7), ("GRU", 7), ("LSTM", 7), ("LSTM", 22), ("GRU", 22),
                                        ("RNN", 22)])
def test_opsets(cell, opset):
    attrs = {"linear_before_reset": 1} if cell == "GRU" else {}
    m, feeds = build(cell, S=3, B=2, I=3, H=4, direction="bidirectional", opset=opset, attrs=attrs, seed=opset)
    check(m, feeds, **TOL)


@pytest.mark.parametrize("opset,attrs", [(1, {}), (3, {"linear_before_reset": 1}), (3, {})])
def test_gru_early_opsets(opset, attrs):
    """onnxruntime has no GRU-1/GRU-3 kernels; the math is GRU-7's."""
    kw = dict(S=4, B=2, I=3, H=4, direction="bidirectional", attrs=attrs, seed=60 + opset)
    m_old, feeds = build("GRU", opset=opset, **kw)
    m7, _ = build("GRU", opset=7, **kw)
    got, want = run_kiln(m_old, feeds), run_ort(m7, feeds)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_same(g, w, what=f"output {i}", **TOL)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
def test_hidden_size_from_weights(cell):
    """hidden_size may be left out (it is R's last dim); onnxruntime insists on it, so it gets it."""
    m, feeds = build(cell, S=3, B=2, I=3, H=5, direction="bidirectional", seed=71)
    want = run_ort(m, feeds)
    attrs = m.graph.node[0].attribute
    for i, a in enumerate(attrs):
        if a.name == "hidden_size":
            del attrs[i]
            break
    got = run_kiln(m, feeds)
    for i, (g, w) in enumerate(zip(got, want)):
        assert_same(g, w, what=f"output {i}", **TOL)


def test_weights_as_initializers():
    for cell in GATES:
        m, feeds = build(cell, S=4, B=3, I=5, H=4, as_initializers=True, seed=31)
        check(m, feeds, **TOL)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
def test_double(cell):
    """onnxruntime runs these in float only: compare with its float32 result."""
    kw = dict(S=4, B=2, I=3, H=4, direction="bidirectional", seed=41, seq_lens=[4, 2],
              peep=cell == "LSTM")
    m64, f64 = build(cell, dtype=np.float64, **kw)
    m32, _ = build(cell, dtype=np.float32, **kw)
    got = run_kiln(m64, f64)
    want = run_ort(m32, {k: v.astype(np.float32) if v.dtype == np.float64 else v for k, v in f64.items()})
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.float64
        assert_same(g.astype(np.float32), w, what=f"output {i}", rtol=1e-4, atol=1e-5)


def test_float16():
    kw = dict(S=4, B=2, I=3, H=4, seed=43)
    m16, f16 = build("GRU", dtype=np.float16, **kw)
    m32, _ = build("GRU", dtype=np.float32, **kw)
    got = run_kiln(m16, f16)
    want = run_ort(m32, {k: v.astype(np.float32) if v.dtype == np.float16 else v for k, v in f16.items()})
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.dtype == np.float16
        assert_same(g.astype(np.float32), w, what=f"output {i}", rtol=2e-2, atol=2e-3)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
@pytest.mark.parametrize("threads", [1, 3])
def test_hidden_units_split_over_threads(cell, threads):
    """H large enough that steps are split by hidden unit over the pool (chunks of >= 32)."""
    attrs = {"linear_before_reset": 1} if cell == "GRU" and threads == 3 else {}
    m, feeds = build(cell, S=9, B=6, I=20, H=100, direction="bidirectional", peep=cell == "LSTM", seed=51,
                     seq_lens=[9, 4, 0, 7, 1, 9], attrs=attrs)
    # a plain tanh RNN this wide amplifies float rounding: kiln and onnxruntime both sit ~5e-5
    # from a float64 evaluation, so compare at that scale there
    atol = 2e-4 if cell == "RNN" else 1e-5
    check(m, feeds, rtol=1e-4, atol=atol, threads=threads)


@pytest.mark.parametrize("cell,attrs", [("LSTM", {}), ("GRU", {}), ("GRU", {"linear_before_reset": 1}), ("RNN", {})])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B,H", [(1, 128), (3, 48), (2, 40)])
def test_whole_step_products(cell, attrs, threads, B, H):
    """Steps small enough to run as one chunk: one recurrent product for all gates per step (R
    packed once per run where the CPU has AVX-512; H = 40 leaves GRU's hidden-gate rows off the
    packed panels' 32-column grid)."""
    m, feeds = build(cell, S=12, B=B, I=24, H=H, direction="bidirectional", peep=cell == "LSTM", seed=61,
                     seq_lens=[12, 5, 9][:B], attrs=attrs)
    # 128 units with recurrent weights of +-0.7 make a chaotic map that amplifies float rounding
    # step by step: scale R so that the comparison measures the kernels, not the chaos
    if H >= 128:
        feeds["R"] = (feeds["R"] * 0.1).astype(np.float32)
    atol = 1e-4 if cell == "RNN" else 1e-5
    check(m, feeds, rtol=1e-4, atol=atol, threads=threads)


@pytest.mark.parametrize("cell", ["RNN", "GRU", "LSTM"])
def test_steps_split_over_threads_wide(cell):
    """Wide enough that even a plain RNN's steps are split over the threads by hidden unit."""
    m, feeds = build(cell, S=5, B=8, I=16, H=256, direction="forward", seed=71, seq_lens=[5, 3, 0, 5, 1, 2, 4, 5])
    check(m, feeds, rtol=1e-4, atol=3e-4, threads=3)


CELLS = [("LSTM", {}), ("GRU", {}), ("GRU", {"linear_before_reset": 1}), ("RNN", {})]


@pytest.mark.parametrize("cell,attrs", CELLS)
@pytest.mark.parametrize("threads", [4, 16])
@pytest.mark.parametrize("as_init", [False, True])
def test_bidirectional_steps_in_lock_step(cell, attrs, threads, as_init):
    """Wide enough that a step splits into more than two chunks: the two directions then step
    together, one pass over the pool for both (chunks may straddle the directions' boundary), with
    ended and empty batch entries, GRU's two-phase step and weights packed at init or not."""
    m, feeds = build(cell, S=6, B=8, I=16, H=256, direction="bidirectional", peep=cell == "LSTM", seed=81,
                     seq_lens=[6, 3, 0, 6, 1, 2, 5, 6], attrs=attrs, as_initializers=as_init)
    feeds_r = "R" if "R" in feeds else None
    if feeds_r:  # 256 units of +-0.7 weights amplify rounding step by step: keep the map tame
        feeds["R"] = (feeds["R"] * 0.1).astype(np.float32)
    check(m, feeds, rtol=1e-4, atol=3e-4 if cell == "RNN" else 2e-5, threads=threads)


@pytest.mark.parametrize("cell,attrs", CELLS)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B,H", [(1, 37), (5, 64), (3, 20)])
def test_weights_packed_at_init(cell, attrs, direction, threads, B, H):
    """W, R and B as initializers: W and R are packed once when the session is made (float, where
    the CPU has AVX-512). Odd H leaves the LSTM gate pass a partial 16-unit block and the packed
    panels a partial 32-column one; at 2 threads a bidirectional node runs its two directions
    side by side. With sequence_lens (an ended and an empty entry) and initial states."""
    lens = [7, 3, 0, 7, 1][:B]
    m, feeds = build(cell, S=7, B=B, I=11, H=H, direction=direction, peep=cell == "LSTM",
                     seq_lens=lens, attrs=attrs, as_initializers=True, seed=B * 100 + H)
    check(m, feeds, rtol=1e-4, atol=2e-5, threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B", [1, 4])
def test_lstm_default_gates_no_optional_inputs(threads, B):
    """The one-pass gate math of the default activations, without peepholes, biases or initial
    states (each a branch of it), weights packed at init, hidden size not a multiple of 16."""
    m, feeds = build("LSTM", S=6, B=B, I=9, H=45, direction="bidirectional", bias=False, init_h=False,
                     init_c=False, as_initializers=True, seed=17 + B)
    check(m, feeds, rtol=1e-4, atol=2e-5, threads=threads)


@pytest.mark.parametrize("cell", ["LSTM", "GRU"])
def test_bidirectional_steps_split_over_threads(cell):
    """Wide and batched enough at 3 threads that each step is split over the pool rather than the
    directions running side by side; weights packed at init."""
    m, feeds = build(cell, S=4, B=8, I=16, H=256, direction="bidirectional", seed=73, as_initializers=True,
                     seq_lens=[4, 3, 0, 4, 1, 2, 4, 4])
    feeds["initial_h"] = (feeds["initial_h"] * 0.5).astype(np.float32)
    check(m, feeds, rtol=1e-4, atol=1e-4, threads=3)


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("B", [1, 8])
def test_lstm_bilstm_shape(threads, B):
    """The shape of the benchmark's bidirectional LSTM (80 features, 256 units), fewer frames."""
    m, feeds = build("LSTM", S=20, B=B, I=80, H=256, direction="bidirectional", init_h=False, init_c=False,
                     as_initializers=True, seed=5 + B)
    R = m.graph.initializer[1]  # scaled down: a chaotic map would amplify float rounding
    assert R.name == "R"
    R.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(R) * 0.1).astype(np.float32), "R"))
    check(m, feeds, rtol=1e-4, atol=2e-5, threads=threads)


def test_bad_inputs_fail_cleanly():
    m, feeds = build("LSTM", S=3, B=2, I=3, H=4, seed=1)
    feeds["W"] = feeds["W"][:, :-1, :]  # wrong number of gate rows
    with pytest.raises(Exception, match="W"):
        run_kiln(m, feeds)
    m, feeds = build("GRU", S=3, B=2, I=3, H=4, seq_lens=[3, 5], seed=2)
    with pytest.raises(Exception, match="sequence_lens"):
        run_kiln(m, feeds)
    m, feeds = build("RNN", S=3, B=2, I=3, H=4, seed=3, attrs={"activations": ["NoSuchAct"]})
    with pytest.raises(Exception, match="NoSuchAct"):
        run_kiln(m, feeds)


@pytest.mark.parametrize("name,cut", [("W", (slice(None), slice(0, -1))), ("R", (slice(None), slice(None), slice(0, -1))),
                                      ("W", (slice(0, 1),))])
def test_bad_constant_weights_fail_cleanly(name, cut):
    """Misshapen weights given as initializers (the ones packed at init) are named at run time, not
    packed past their ends."""
    m, feeds = build("LSTM", S=3, B=2, I=3, H=20, direction="bidirectional", as_initializers=True, seed=4)
    for init in m.graph.initializer:
        if init.name == name:
            init.CopyFrom(numpy_helper.from_array(np.ascontiguousarray(numpy_helper.to_array(init)[cut]), name))
    with pytest.raises(Exception, match=name):
        run_kiln(m, feeds)


def _cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            return set(next(l for l in f if l.startswith("flags")).split(":", 1)[1].split())
    except (OSError, StopIteration):
        return set()


# Float steps use the blocked product wherever the packed engine runs (AVX-512, or AVX2+FMA),
# whose arithmetic does not depend on how a step is cut, nor does the gate math of whole blocks:
# results are then bit-identical at any thread count. The portable products round differently
# per cut, so elsewhere thread counts agree only to rounding.
_ON = lambda k: os.environ.get(k, "").strip("0") != ""  # noqa: E731
SAME_BITS = ("avx512f" in _cpu_flags() and not _ON("KILN_NO_AVX512")) or (
    {"avx2", "fma"} <= _cpu_flags() and not _ON("KILN_NO_AVX2"))
ACROSS_THREADS = dict(rtol=0, atol=0) if SAME_BITS else dict(rtol=1e-5, atol=2e-6)


def check_thread_counts(m, feeds, atol):
    """kiln at 1, 2, 3 and 16 threads against onnxruntime, and against each other."""
    want = run_ort(m, feeds)
    first = None
    for threads in (1, 2, 3, 16):
        got = run_kiln(m, feeds, threads=threads)
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, what=f"output {i} at {threads} threads", rtol=1e-4, atol=atol)
        if first is None:
            first = got
        else:  # the same products and gate math, only cut differently
            for i, (g, f) in enumerate(zip(got, first)):
                assert_same(g, f, what=f"output {i}, {threads} threads against 1", **ACROSS_THREADS)


BLOCKED_CASES = [("LSTM", {}, True), ("LSTM", {"clip": 0.9}, True), ("LSTM", {"input_forget": 1}, False),
                 ("GRU", {}, False), ("GRU", {"linear_before_reset": 1}, False), ("RNN", {}, False)]


@pytest.mark.parametrize("cell,attrs,peep", BLOCKED_CASES)
@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
@pytest.mark.parametrize("B,H", [(1, 37), (8, 100), (8, 256), (3, 48), (2, 300)])
@pytest.mark.parametrize("as_init", [False, True])
def test_steps_split_by_unit_block_any_thread_count(cell, attrs, peep, direction, B, H, as_init):
    """The step product over R packed with each block of units' gates side by side (at init, or per
    run when R is an input): at 1, 2, 3 and 16 threads the chunks of whole blocks differ (16 threads
    split the widest cases into 16), the results must not. Partial last blocks (37, 100), R deeper
    than one packed block of the product (300), GRU's separate hidden-gate product, the unfused
    LSTM gate math (clip, input_forget), ended and empty entries, initial states and peepholes;
    each against onnxruntime, and the thread counts against each other."""
    lens = ([5, 2, 0, 5, 1, 3, 4, 5] * 2)[:B]
    m, feeds = build(cell, S=5, B=B, I=13, H=H, direction=direction, peep=peep, seq_lens=lens, attrs=attrs,
                     as_initializers=as_init, seed=B * 1000 + H + len(attrs))
    # wide maps of +-0.7 weights are chaotic and would amplify float rounding step by step
    scale = 0.7 if H <= 48 else 0.15
    if as_init:
        R = next(i for i in m.graph.initializer if i.name == "R")
        R.CopyFrom(numpy_helper.from_array((numpy_helper.to_array(R) * scale).astype(np.float32), "R"))
    else:
        feeds["R"] = (feeds["R"] * scale).astype(np.float32)
    check_thread_counts(m, feeds, atol=1e-4 if cell == "RNN" else 2e-5)


@pytest.mark.parametrize("cell,attrs", [("LSTM", {}), ("GRU", {}), ("GRU", {"linear_before_reset": 1}), ("RNN", {})])
@pytest.mark.parametrize("B,H", [(1, 64), (3, 64), (8, 96)])
def test_projection_split_any_thread_count(cell, attrs, B, H):
    """Sequences long enough that the input projection of every step at once is split over the
    threads too (by row panels, both directions in one pass, also ahead of directions that then
    step side by side): at 1, 2, 3 and 16 threads against onnxruntime, and against each other."""
    m, feeds = build(cell, S=60, B=B, I=40, H=H, direction="bidirectional", peep=cell == "LSTM",
                     seq_lens=[60, 31, 59, 60, 1, 17, 60, 45][:B], attrs=attrs, seed=B * 7 + H)
    feeds["R"] = (feeds["R"] * 0.2).astype(np.float32)  # a tame map over 60 steps
    check_thread_counts(m, feeds, atol=1e-4 if cell == "RNN" else 2e-5)
