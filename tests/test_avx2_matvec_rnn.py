"""The AVX2+FMA kernels that have AVX-512 twins: conv_matvec.c's 1x1 convolutions of 1x1 maps
(squeeze-excite) over the packed weight panels, and rnn_fastmath.h's 8-lane sigmoid, tanh and
one-pass LSTM gate block. Each is checked against numpy in float64 on fresh random data, with
ragged tails (output channels not a multiple of 8 or 12, depths past a 256-deep packed block,
hidden sizes not a multiple of 8 or 16), biases, several images or batch entries, and thread
counts. Child processes run the same cases under each engine switch (KILN_NO_AVX2: the sgemv and
4-lane fallbacks; KILN_NO_AVX512: the AVX2 kernels on an AVX-512 machine) against the same
oracle, and the matrix-vector path reported by KILN_DEBUG_PARTITION names the kernel that ran."""
import os
import pickle
import subprocess
import sys
import tempfile

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import assert_same, cpu_flags, node_model, rand, run_kiln  # noqa: E402

FLAGS = cpu_flags()


def engine(env):
    """The packed engine a process with env added (to this one's) runs: avx512, avx2 or None."""
    full = dict(os.environ, **env)
    on = lambda k: full.get(k, "").strip("0") != ""  # noqa: E731
    if "avx512f" in FLAGS and not on("KILN_NO_AVX512"):
        return "avx512"
    if {"avx2", "fma"} <= FLAGS and not on("KILN_NO_AVX2"):
        return "avx2"
    return None


def in_child(cases, env):
    """[(model, feeds, threads)] run by kiln in one child process with env added: each case's
    outputs, and the paths KILN_DEBUG_PARTITION reported (all cases together)."""
    d = tempfile.mkdtemp()
    src, dst = os.path.join(d, "in.pkl"), os.path.join(d, "out.pkl")
    with open(src, "wb") as f:
        pickle.dump([(m.SerializeToString(), feeds, t) for m, feeds, t in cases], f)
    code = ("import sys, pickle; sys.path.insert(0, sys.argv[1]); from util import run_kiln;"
            "cs = pickle.load(open(sys.argv[2], 'rb'));"
            "pickle.dump([run_kiln(m, f, threads=t) for m, f, t in cs], open(sys.argv[3], 'wb'))")
    r = subprocess.run([sys.executable, "-c", code, os.path.dirname(os.path.abspath(__file__)), src, dst],
                       env=dict(os.environ, KILN_DEBUG_PARTITION="1", **env), capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    with open(dst, "rb") as f:
        outs = pickle.load(f)
    paths = [kv.split("=", 1)[1] for ln in r.stderr.splitlines() if ln.startswith("kiln-partition ")
             for kv in ln.split()[1:] if kv.startswith("path=")]
    return outs, paths


ENVS = [{}, {"KILN_NO_AVX2": "1"}, {"KILN_NO_AVX512": "1"}]
ENV_IDS = ["default", "no_avx2", "no_avx512"]


# ---- 1x1 convolutions of 1x1 maps ----

# (images, channels in, channels out, group): 12-row panels with 1 to 11 rows left over, depths
# of 1 to 600 (past one 256-deep block, odd tails of the 4-tap unroll), 1 to 9 images (the
# four-image pass and its single-image tail), groups
MATVEC_CASES = [
    (1, 960, 240, 1), (1, 240, 960, 1), (2, 7, 1, 1), (3, 16, 5, 1), (4, 3, 8, 1), (5, 257, 11, 1),
    (8, 256, 12, 1), (9, 600, 13, 1), (6, 33, 37, 1), (7, 120, 100, 1), (5, 64, 48, 2), (3, 30, 21, 3),
]


def matvec_model(N, C, M, group, bias, residual_relu, seed):
    """Conv (1x1 kernel, 1x1 map) with W (and B) initializers, optionally -> Add z -> Relu (which
    kiln fuses into the convolution's store); its float64 result."""
    rng = np.random.default_rng(seed)
    x = rand(rng, (N, C, 1, 1))
    w = rand(rng, (M, C // group, 1, 1), low=-1, high=1)
    b = rand(rng, (M,)) if bias else None
    z = rand(rng, (N, M, 1, 1)) if residual_relu else None
    xs, ws = x.reshape(N, group, C // group).astype(np.float64), w.reshape(group, M // group, C // group)
    want = np.einsum("ngk,gmk->ngm", xs, ws.astype(np.float64)).reshape(N, M, 1, 1)
    if b is not None:
        want += b.astype(np.float64).reshape(1, M, 1, 1)
    names = ["x", "w"] + (["b"] if bias else [])
    nodes = [helper.make_node("Conv", names, ["c" if residual_relu else "y"], group=group)]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)]
    feeds = {"x": x}
    if residual_relu:
        nodes += [helper.make_node("Add", ["c", "z"], ["s"]), helper.make_node("Relu", ["s"], ["y"])]
        inputs.append(helper.make_tensor_value_info("z", TensorProto.FLOAT, z.shape))
        feeds["z"] = z
        want = np.maximum(want + z.astype(np.float64), 0)
    inits = [numpy_helper.from_array(w, "w")] + ([numpy_helper.from_array(b, "b")] if bias else [])
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m, feeds, want.astype(np.float32), C // group


def mv_tol(k):
    """Float32 sums of k products of values in [-2, 2] x [-1, 1]."""
    return dict(rtol=1e-4, atol=3e-6 * np.sqrt(k) + 1e-5)


@pytest.mark.parametrize("N,C,M,group", MATVEC_CASES)
@pytest.mark.parametrize("bias,fused", [(True, False), (False, False), (True, True)], ids=["b", "nob", "b+z+relu"])
def test_matvec(N, C, M, group, bias, fused):
    """Against float64; the panels are spread over the threads, so every thread count gives the
    same bits."""
    m, feeds, want, k = matvec_model(N, C, M, group, bias, fused, seed=N * 1000 + C + M)
    first = run_kiln(m, feeds, threads=1)[0]
    assert_same(first, want, **mv_tol(k))
    for threads in (2, 3):
        got = run_kiln(m, feeds, threads=threads)[0]
        assert np.array_equal(got.view(np.uint32), first.view(np.uint32)), f"threads {threads}"


@pytest.mark.parametrize("env", ENVS, ids=ENV_IDS)
def test_matvec_engine_switches(env):
    """Every case under each switch against float64, and the kernel that ran: the packed matvec
    of the engine in use, or (no engine) the sgemv fallback, which reports no path."""
    cases = [matvec_model(N, C, M, group, True, fused, seed=N + C + M)
             for (N, C, M, group) in MATVEC_CASES for fused in (False, True)]
    outs, paths = in_child([(m, feeds, 2) for m, feeds, _, _ in cases], env)
    for (_, _, want, k), got in zip(cases, outs):
        assert_same(got[0], want, **mv_tol(k))
    eng = engine(env)
    assert paths == (["matvec-" + eng] * len(cases) if eng else []), paths


# ---- LSTM and GRU: the 8-lane gate activations and fused LSTM gates ----

def sigmoid(v):
    return 1 / (1 + np.exp(-v))


def lstm_ref(X, W, R, B, P, h0, c0, lens, reverse):
    """One direction of ONNX LSTM (gates i, o, f, c; default activations) in float64: Y [S, B, H],
    the final H and C. Entries past their length keep their state and output zeros."""
    S, Bt, _ = X.shape
    H = R.shape[1]
    Wi, Wo, Wf, Wc = np.split(W, 4)
    Ri, Ro, Rf, Rc = np.split(R, 4)
    bias = B[:4 * H] + B[4 * H:]
    bi, bo, bf, bc = np.split(bias, 4)
    pi, po, pf = np.split(P, 3)
    h, c, Y = h0.copy(), c0.copy(), np.zeros((S, Bt, H))
    for step in range(S):
        for b in range(Bt):
            if step >= lens[b]:
                continue
            t = lens[b] - 1 - step if reverse else step
            x = X[t, b]
            i = sigmoid(Wi @ x + Ri @ h[b] + pi * c[b] + bi)
            f = sigmoid(Wf @ x + Rf @ h[b] + pf * c[b] + bf)
            g = np.tanh(Wc @ x + Rc @ h[b] + bc)
            c[b] = f * c[b] + i * g
            o = sigmoid(Wo @ x + Ro @ h[b] + po * c[b] + bo)
            h[b] = o * np.tanh(c[b])
            Y[t, b] = h[b]
    return Y, h, c


def gru_ref(X, W, R, B, h0, lens, reverse):
    """One direction of ONNX GRU (gates z, r, h; linear_before_reset 0) in float64."""
    S, Bt, _ = X.shape
    H = R.shape[1]
    Wz, Wr, Wh = np.split(W, 3)
    Rz, Rr, Rh = np.split(R, 3)
    wbz, wbr, wbh, rbz, rbr, rbh = np.split(B, 6)
    h, Y = h0.copy(), np.zeros((S, Bt, H))
    for step in range(S):
        for b in range(Bt):
            if step >= lens[b]:
                continue
            t = lens[b] - 1 - step if reverse else step
            x = X[t, b]
            z = sigmoid(Wz @ x + Rz @ h[b] + wbz + rbz)
            r = sigmoid(Wr @ x + Rr @ h[b] + wbr + rbr)
            hh = np.tanh(Wh @ x + Rh @ (r * h[b]) + wbh + rbh)
            h[b] = (1 - z) * hh + z * h[b]
            Y[t, b] = h[b]
    return Y, h


def rnn_case(cell, S, Bt, I, H, direction, bias, peep, as_init, seed):
    """An LSTM or GRU node with random inputs (R scaled so that the map stays tame), sequence
    lengths with an ended entry, initial states; its outputs in float64."""
    rng = np.random.default_rng(seed)
    D, G = (2 if direction == "bidirectional" else 1), (4 if cell == "LSTM" else 3)
    X = rand(rng, (S, Bt, I), low=-1, high=1)
    W = rand(rng, (D, G * H, I), low=-0.7, high=0.7)
    R = rand(rng, (D, G * H, H), low=-1, high=1) * np.float32(min(0.7, 2.0 / np.sqrt(H)))
    Bs = rand(rng, (D, 2 * G * H), low=-0.5, high=0.5) if bias else np.zeros((D, 2 * G * H), np.float32)
    P = rand(rng, (D, 3 * H), low=-0.5, high=0.5) if peep else np.zeros((D, 3 * H), np.float32)
    lens = np.array([max(1, min(S, v)) for v in (S, S // 2, S, 1, S - 1, S, 2, S)][:Bt], np.int32)
    h0 = rand(rng, (D, Bt, H), low=-1, high=1)
    c0 = rand(rng, (D, Bt, H), low=-1, high=1)
    ins = [("X", X), ("W", W), ("R", R), ("B", Bs) if bias else ("", None), ("sequence_lens", lens),
           ("initial_h", h0)]
    if cell == "LSTM":
        ins += [("initial_c", c0)] + ([("P", P)] if peep else [])
    feeds = {n: v for n, v in ins if n}
    inits = {n: feeds.pop(n) for n in ("W", "R", "B") if n in feeds} if as_init else {}
    outs = [(o, np.float32) for o in ["Y", "Y_h"] + (["Y_c"] if cell == "LSTM" else [])]
    m = node_model(cell, [(n, v if v is not None else np.zeros(1, np.float32)) for n, v in ins], outs,
                   attrs={"hidden_size": H, "direction": direction}, opset=14, initializers=inits)
    f64 = lambda a: a.astype(np.float64)  # noqa: E731
    Y, Yh, Yc = np.zeros((S, D, Bt, H)), np.zeros((D, Bt, H)), np.zeros((D, Bt, H))
    for d in range(D):
        rev = direction == "reverse" or d == 1
        if cell == "LSTM":
            Y[:, d], Yh[d], Yc[d] = lstm_ref(f64(X), f64(W[d]), f64(R[d]), f64(Bs[d]), f64(P[d]), f64(h0[d]),
                                             f64(c0[d]), lens, rev)
        else:
            Y[:, d], Yh[d] = gru_ref(f64(X), f64(W[d]), f64(R[d]), f64(Bs[d]), f64(h0[d]), lens, rev)
    want = [Y, Yh] + ([Yc] if cell == "LSTM" else [])
    return m, feeds, [w.astype(np.float32) for w in want]


RNN_TOL = dict(rtol=1e-4, atol=2e-5)

# hidden sizes: one unit, a partial 8-lane block, one 8-lane block, one 16-unit block, 16 + 4,
# 16 + 8 (a whole 8-lane block in the second half of a 16-unit block), 2 x 16 + 1, 6 x 16 + 4
HIDDEN = [1, 7, 8, 16, 20, 24, 33, 100]


@pytest.mark.parametrize("H", HIDDEN)
@pytest.mark.parametrize("direction,Bt", [("forward", 1), ("reverse", 3), ("bidirectional", 8)])
@pytest.mark.parametrize("peep", [False, True], ids=["", "peep"])
@pytest.mark.parametrize("as_init", [False, True], ids=["Rin", "Rinit"])
def test_lstm(H, direction, Bt, peep, as_init):
    """The one-pass gates of the default activations, R packed at init (gates of 16-unit blocks
    side by side) or per run, against float64, at 1 and 2 threads."""
    m, feeds, want = rnn_case("LSTM", 6, Bt, 5, H, direction, True, peep, as_init, seed=H * 10 + Bt + peep)
    for threads in (1, 2):
        for i, (g, w) in enumerate(zip(run_kiln(m, feeds, threads=threads), want)):
            assert_same(g, w, what=f"output {i}, {threads} threads", **RNN_TOL)


@pytest.mark.parametrize("H", [7, 20, 33])
@pytest.mark.parametrize("Bt", [1, 4])
def test_lstm_one_step_plain_layout(H, Bt):
    """One step with R as an input is not packed: the gates are contiguous per gate (the plain
    layout) and the 8-lane blocks step through them as one 16-wide stretch."""
    m, feeds, want = rnn_case("LSTM", 1, Bt, 6, H, "bidirectional", True, True, False, seed=H + Bt)
    for i, (g, w) in enumerate(zip(run_kiln(m, feeds, threads=1), want)):
        assert_same(g, w, what=f"output {i}", **RNN_TOL)


@pytest.mark.parametrize("H", [1, 7, 16, 20, 33])
@pytest.mark.parametrize("direction,Bt", [("forward", 2), ("bidirectional", 5)])
@pytest.mark.parametrize("bias", [True, False], ids=["b", "nob"])
def test_gru(H, direction, Bt, bias):
    """GRU's gates through the array sigmoid and tanh (8-lane blocks, 4-lane tails) against
    float64."""
    m, feeds, want = rnn_case("GRU", 5, Bt, 4, H, direction, bias, False, True, seed=H * 3 + Bt)
    for i, (g, w) in enumerate(zip(run_kiln(m, feeds, threads=2), want)):
        assert_same(g, w, what=f"output {i}", **RNN_TOL)


@pytest.mark.parametrize("env", ENVS, ids=ENV_IDS)
def test_rnn_engine_switches(env):
    """LSTM and GRU cases under each switch against float64: KILN_NO_AVX2 leaves the 4-lane
    activations and the unfused LSTM gates, KILN_NO_AVX512 takes the 8-lane forms."""
    cases = [rnn_case("LSTM", 5, Bt, 7, H, d, True, True, init, seed=H + Bt)
             for H, Bt, d, init in [(7, 1, "forward", True), (20, 3, "bidirectional", True),
                                    (33, 8, "reverse", False), (24, 2, "bidirectional", False)]]
    cases += [rnn_case("GRU", 5, Bt, 7, H, "bidirectional", True, False, True, seed=H * 2 + Bt)
              for H, Bt in [(9, 2), (33, 4)]]
    outs, _ = in_child([(m, feeds, 2) for m, feeds, _ in cases], env)
    for c, ((_, _, want), got) in enumerate(zip(cases, outs)):
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, what=f"case {c} output {i}", **RNN_TOL)
