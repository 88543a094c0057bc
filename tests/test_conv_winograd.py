"""3x3 stride-1 convolutions through Winograd F(4x4, 3x3) (src/cpu/kernels/conv_winograd.c) on fresh
random data: against a float64 numpy oracle over odd map sizes, asymmetric and zero pads, channel
counts off the register and panel sizes (17, 19, 40, 300: two depth blocks of the product), more
tiles than one block of scratch holds, and the 16-tile rule; the fused residual and activations
against onnxruntime; the same bits at any thread count and on both instruction-set tiers; W as a
graph input; concurrent first runs (the transformed weights are made on first use); and the
switches that turn it off (winograd=False, the config entry "kiln.cpu_winograd", --no-winograd);
the rule's choice of form by thread count. KILN_WINOGRAD_FORM=fused|steps forces either form, so
each case is checked in both.
The partition report (KILN_DEBUG_PARTITION) shows which path each convolution took."""
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from util import HAS_AVX512, HAS_PACKED, assert_same, node_model, rand, run_in_child, run_kiln, run_ort  # noqa: E402
from test_conv_depthwise import dw_model  # noqa: E402
import kiln  # noqa: E402

F32 = np.float32
needs_packed = pytest.mark.skipif(not HAS_PACKED, reason="Winograd runs on the packed product (AVX-512 or "
                                  "AVX2+FMA); this CPU sums 3x3 convolutions through im2col, checked elsewhere")

# (x shape, output channels, pads): every one is taken by the rule (kconv_winograd_ok)
CASES = [
    ((1, 64, 56, 56), 64, [1, 1, 1, 1]),       # ResNet-50's first stage
    ((2, 32, 29, 27), 48, [1, 0, 2, 1]),       # odd sizes, asymmetric pads: partial tiles
    ((3, 17, 20, 23), 19, [0, 0, 0, 0]),       # no pads, 17 -> 19 channels (register tails)
    ((2, 300, 16, 16), 40, [1, 1, 1, 1]),      # 300 channels: two depth blocks of 256
    ((3, 64, 56, 56), 64, [1, 1, 1, 1]),       # 588 tiles: more than one block of scratch
    ((1, 256, 14, 14), 256, [1, 1, 1, 1]),     # 16 tiles, large channel product
    ((1, 16, 8, 130), 16, [1, 1, 1, 1]),       # wide and flat
    ((2, 24, 14, 14), 24, [2, 2, 2, 2]),       # pads of 2: outputs larger than inputs
]


def conv_ref(x, w, b, pads):
    """float64 direct sums"""
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (pads[0], pads[2]), (pads[1], pads[3])))
    OH, OW = xp.shape[2] - 2, xp.shape[3] - 2
    y = np.zeros((x.shape[0], w.shape[0], OH, OW))
    for i in range(3):
        for j in range(3):
            y += np.einsum("nchw,mc->nmhw", xp[:, :, i:i + OH, j:j + OW], w[:, :, i, j].astype(np.float64))
    return y + (0 if b is None else b.astype(np.float64)[None, :, None, None])


def make_case(xs, M, pads, seed, bias=True):
    rng = np.random.default_rng(seed)
    x = rand(rng, xs)
    w = rand(rng, (M, xs[1], 3, 3), low=-0.5, high=0.5)
    b = rand(rng, (M,)) if bias else None
    ins = [("x", x), ("w", w)] + ([("b", b)] if bias else [])
    inits = {"w": w, "b": b} if bias else {"w": w}
    return x, w, b, node_model("Conv", ins, ["y"], {"pads": pads}, initializers=inits)


def is_winograd(paths):
    """one convolution, reported as either Winograd form: "winograd" (the three steps each over
    all threads) or "winograd-fused" (blocks of 32 tiles through all three steps per thread)"""
    return len(paths) == 1 and paths[0] in ("winograd", "winograd-fused")


def rel_err(got, want):
    return float(np.max(np.abs(got.astype(np.float64) - want)) / np.max(np.abs(want)))


# The transforms' constants round in float32: errors of about 1e-5 of the output's largest value
# (direct sums: 1e-6); 4e-5 bounds every case here with room
WINO_REL = 4e-5


FORMS = {"fused": "winograd-fused", "steps": "winograd"}


@needs_packed
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("xs,M,pads", CASES, ids=[f"{c[0]}to{c[1]}" for c in CASES])
def test_against_float64(xs, M, pads, form):
    """Each case in both forms (KILN_WINOGRAD_FORM forces one where Winograd applies)."""
    x, w, b, m = make_case(xs, M, pads, 11)
    outs, paths = run_in_child(m, {"x": x}, {"KILN_WINOGRAD_FORM": form}, threads=2)
    assert paths == [FORMS[form]]
    ref = conv_ref(x, w, b, pads)
    assert outs[0].shape == ref.shape
    assert np.all(np.isfinite(outs[0]))
    assert rel_err(outs[0], ref) < WINO_REL
    # and not worse than 40x the direct sums' error on the same data
    direct = run_kiln(m, {"x": x}, winograd=False)[0]
    assert rel_err(outs[0], ref) < 40 * rel_err(direct, ref) + 1e-6


@needs_packed
def test_rule_leaves_small_and_strided_convolutions():
    """Under 16 tiles, 16 tiles with a small channel product, stride 2, dilation 2, groups and
    fewer than 16 channels keep the direct kernels."""
    rng = np.random.default_rng(12)
    for xs, ws, attrs in [((1, 128, 7, 7), (32, 128, 3, 3), {"pads": [1, 1, 1, 1]}),
                          ((1, 64, 14, 14), (64, 64, 3, 3), {"pads": [1, 1, 1, 1]}),
                          ((1, 64, 56, 56), (64, 64, 3, 3), {"pads": [1, 1, 1, 1], "strides": [2, 2]}),
                          ((1, 64, 56, 56), (64, 64, 3, 3), {"pads": [2, 2, 2, 2], "dilations": [2, 2]}),
                          ((1, 64, 56, 56), (64, 32, 3, 3), {"pads": [1, 1, 1, 1], "group": 2}),
                          ((1, 8, 56, 56), (64, 8, 3, 3), {"pads": [1, 1, 1, 1]})]:
        x, w = rand(rng, xs), rand(rng, ws, low=-0.5, high=0.5)
        m = node_model("Conv", [("x", x), ("w", w)], ["y"], attrs, initializers={"w": w})
        outs, paths = run_in_child(m, {"x": x}, {}, threads=2)
        assert len(paths) == 1 and not is_winograd(paths), (xs, ws, attrs, paths)
        assert_same(outs[0], run_ort(m, {"x": x})[0], rtol=1e-4, atol=1e-4)


ACTS = [None, ("Relu", {}, []), ("Clip", {}, [0.0, 6.0]), ("HardSwish", {}, []), ("LeakyRelu", {"alpha": 0.1}, []),
        ("Sigmoid", {}, [])]


def fused_model(xs, M, pads, residual, act):
    """Conv [+ z] [-> act] with M output channels (test_conv_depthwise's graph), which kiln runs
    as one FusedConv node and ORT (no optimisations) as separate nodes"""
    return dw_model(xs, (3, 3), {"pads": pads}, True, residual, act, dense_m=M)


@needs_packed
@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("act", ACTS, ids=lambda a: a[0] if a else "none")
@pytest.mark.parametrize("residual", [False, True], ids=["", "z"])
@pytest.mark.parametrize("xs,M,pads", [CASES[1], CASES[3]], ids=["odd", "300ch"])
def test_fused_residual_and_activation(xs, M, pads, residual, act, form):
    m, feeds = fused_model(xs, M, pads, residual, act)
    want = run_ort(m, feeds)[0]
    outs, paths = run_in_child(m, feeds, {"KILN_WINOGRAD_FORM": form}, threads=2)
    assert paths == [FORMS[form]]
    scale = float(np.max(np.abs(want)))
    assert_same(outs[0], want, rtol=1e-3, atol=WINO_REL * max(scale, 1.0) * 4)


@needs_packed
def test_rule_picks_the_form_by_threads():
    """By the rule: one thread takes fused blocks; 128 channels on 28x28 at 2 threads (2 blocks)
    the three steps; 64 on 56x56 at 16 threads (12 tiles a thread) and 588 tiles of 64 -> 64 at
    16 threads (19 blocks, 150k tiles x channel pairs a thread) the direct kernels."""
    for case, threads, want in ((CASES[4], 1, "winograd-fused"), (((1, 128, 28, 28), 128, [1, 1, 1, 1]), 2, "winograd"),
                                (CASES[0], 16, None), (CASES[4], 16, None)):
        x, w, b, m = make_case(*case, 13)
        outs, paths = run_in_child(m, {"x": x}, {}, threads=threads)
        assert len(paths) == 1, paths
        if want:
            assert paths == [want], (case, threads, paths)
        else:
            assert not is_winograd(paths), (case, threads, paths)
        assert rel_err(outs[0], conv_ref(x, w, b, case[2])) < WINO_REL


@needs_packed
def test_same_bits_any_thread_count_and_form():
    """Which thread takes which tiles, channels and product blocks, and whether a thread takes a
    block through all three steps or the steps run one after the other, never changes a value.
    (2, 128, 56, 56) in steps at 16 threads spans two blocks of scratch."""
    for xs, M, pads in (CASES[1], CASES[3], ((2, 128, 56, 56), 128, [1, 1, 1, 1])):
        m, feeds = fused_model(xs, M, pads, True, ("Relu", {}, []))
        outs = []
        for form in FORMS:
            for t in (1, 3, 16):
                o, paths = run_in_child(m, feeds, {"KILN_WINOGRAD_FORM": form}, threads=t)
                assert paths == [FORMS[form]]
                outs.append(o[0])
        for o in outs[1:]:
            assert np.array_equal(o.view(np.uint32), outs[0].view(np.uint32))


@pytest.mark.skipif(not HAS_AVX512, reason="needs a CPU with both the AVX-512 and the AVX2 tier")
def test_tiers_same_bits():
    """The transforms are the same AVX2 code on both tiers and the two products sum each output
    with the same FMA chain, so KILN_NO_AVX512=1 gives the same bits."""
    for (xs, M, pads), form in ((CASES[1], "fused"), (CASES[3], "steps")):
        m, feeds = fused_model(xs, M, pads, True, ("HardSwish", {}, []))
        env = {"KILN_WINOGRAD_FORM": form}
        a, pa = run_in_child(m, feeds, env, 2)
        v, pv = run_in_child(m, feeds, dict(env, KILN_NO_AVX512="1"), 2)
        assert pa == pv == [FORMS[form]]
        assert np.array_equal(a[0].view(np.uint32), v[0].view(np.uint32))


@needs_packed
def test_weight_as_graph_input_and_float16():
    """W fed at run time is transformed per call; a float16 model runs the float32 kernel."""
    xs, M, pads = CASES[1]
    x, w, b, _ = make_case(xs, M, pads, 51)
    m = node_model("Conv", [("x", x), ("w", w), ("b", b)], ["y"], {"pads": pads})
    s = kiln.InferenceSession(m.SerializeToString(), threads=2)
    ref = conv_ref(x, w, b, pads)
    for _ in range(2):
        assert rel_err(s.run(None, {"x": x, "w": w, "b": b})[0], ref) < WINO_REL
    w2 = rand(np.random.default_rng(52), w.shape, low=-0.5, high=0.5)
    assert rel_err(s.run(None, {"x": x, "w": w2, "b": b})[0], conv_ref(x, w2, b, pads)) < WINO_REL
    h = [a.astype(np.float16) for a in (x, w, b)]
    mh = node_model("Conv", [("x", h[0]), ("w", h[1]), ("b", h[2])], ["y"], {"pads": pads},
                    initializers={"w": h[1], "b": h[2]})
    got = run_kiln(mh, {"x": h[0]})[0]
    assert got.dtype == np.float16
    assert rel_err(got, conv_ref(*[a.astype(np.float64) for a in h], pads)) < 2e-3


@needs_packed
def test_concurrent_first_runs():
    """Four threads start the same session at once: the transformed weights are made once (or the
    losers' copies freed) and every run sees whole weights."""
    xs, M, pads = CASES[0]
    x, w, b, m = make_case(xs, M, pads, 61)
    s = kiln.InferenceSession(m.SerializeToString(), threads=2)
    outs, errs = [None] * 4, []

    def go(i):
        try:
            outs[i] = s.run(None, {"x": x})[0]
        except Exception as e:  # noqa: BLE001
            errs.append(e)
    ts = [threading.Thread(target=go, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert not errs
    for o in outs[1:]:
        assert np.array_equal(o, outs[0])
    assert rel_err(outs[0], conv_ref(x, w, b, pads)) < WINO_REL


@needs_packed
def test_switches_turn_it_off():
    """winograd=False, the config entry kiln.cpu_winograd = 0 and KILN_NO_WINOGRAD=1 give the
    direct kernel's sums."""
    xs, M, pads = CASES[0]
    x, w, b, m = make_case(xs, M, pads, 71)
    ref = conv_ref(x, w, b, pads)
    direct = run_kiln(m, {"x": x}, winograd=False)[0]
    fast = run_kiln(m, {"x": x})[0]
    assert not np.array_equal(direct, fast)
    assert rel_err(direct, ref) < 4e-6
    from kiln import onnxruntime as kort
    so = kort.SessionOptions()
    so.add_session_config_entry("kiln.cpu_winograd", "0")
    so.intra_op_num_threads = 2
    got = kort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert np.array_equal(got, direct)
    outs, paths = run_in_child(m, {"x": x}, {"KILN_NO_WINOGRAD": "1"}, threads=2)
    assert len(paths) == 1 and not is_winograd(paths)
    assert np.array_equal(outs[0], direct)


def test_config_entry_bad_value():
    """kiln.cpu_winograd takes 0 or 1 (and true/false); anything else is refused by name."""
    from kiln import onnxruntime as kort
    x, w, b, m = make_case(*CASES[2], 72)
    so = kort.SessionOptions()
    so.add_session_config_entry("kiln.cpu_winograd", "maybe")
    with pytest.raises(Exception) as e:
        kort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    assert "kiln.cpu_winograd" in str(e.value) and "0 or 1" in str(e.value)
    so.add_session_config_entry("kiln.cpu_winograd", "true")
    s = kort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"])
    assert s.run(None, {"x": x})[0].shape == (3, 19, 18, 21)


@needs_packed
def test_cli_no_winograd(tmp_path):
    """kiln run --no-winograd: the CLI's switch reaches the kernel (the partition report)."""
    build = os.environ.get("KILN_BUILD_DIR")
    exe = os.path.join(build, "kiln") if build else None
    if not exe or not os.path.exists(exe):
        pytest.skip("KILN_BUILD_DIR has no kiln executable (set by the README's test command)")
    xs, M, pads = CASES[0]
    x, _, _, m = make_case(xs, M, pads, 81)
    p = tmp_path / "m.onnx"
    p.write_bytes(m.SerializeToString())
    np.save(tmp_path / "x.npy", x)
    env = dict(os.environ, KILN_DEBUG_PARTITION="1")
    paths = []
    for extra in ([], ["--no-winograd"]):
        r = subprocess.run([exe, "run", str(p), "--input", "x=%s" % (tmp_path / "x.npy"), "--threads", "2"] + extra, env=env, capture_output=True, text=True, cwd=tmp_path)  # outputs land in cwd
        assert r.returncode == 0, r.stderr
        paths.append([kv.split("=", 1)[1] for ln in r.stderr.splitlines() if ln.startswith("kiln-partition ")
                      for kv in ln.split()[1:] if kv.startswith("path=")])
    assert is_winograd(paths[0])
    assert len(paths[1]) == 1 and not is_winograd(paths[1])


@needs_packed
def test_nan_reaches_its_tiles():
    """A NaN input gives NaN outputs wherever the direct sums have one (and may spread over the rest
    of the 4x4 tiles whose windows hold it); finite inputs elsewhere stay finite."""
    xs, M, pads = CASES[2]
    x, w, b, m = make_case(xs, M, pads, 91)
    x[0, 3, 7, 9] = np.nan
    got = run_kiln(m, {"x": x}, threads=1)[0]
    direct = run_kiln(m, {"x": x}, threads=1, winograd=False)[0]
    assert np.all(np.isnan(got)[np.isnan(direct)])
    assert np.all(np.isfinite(got[1:]))
    assert np.isnan(got).sum() <= M * 8 * 8


@needs_packed
def test_session_budget_for_transformed_weights():
    """Six 256 -> 256 convolutions on 14x14, each taken by the rule, whose transformed weights (9.4
    MB each) would pass the session's budget of 32 MB (KILN_CPU_WINOGRAD_BUDGET): the first three
    keep them, the last three keep the direct kernels; the output matches float64 sums."""
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(71)
    x = rand(rng, (1, 256, 14, 14))
    ws = [rand(rng, (256, 256, 3, 3), low=-0.06, high=0.06) for _ in range(6)]
    names = ["x"] + ["h%d" % i for i in range(1, 6)] + ["y"]
    nodes = [helper.make_node("Conv", [names[i], "w%d" % i], [names[i + 1]], pads=[1, 1, 1, 1]) for i in range(6)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[numpy_helper.from_array(w, "w%d" % i) for i, w in enumerate(ws)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    outs, paths = run_in_child(m, {"x": x}, {}, threads=2)
    assert len(paths) == 6 and all(p in FORMS.values() for p in paths[:3]), paths
    assert not any(p in FORMS.values() for p in paths[3:]), paths
    want = x
    for w in ws:
        want = conv_ref(want, w, None, [1, 1, 1, 1])
    assert rel_err(outs[0], want) < WINO_REL
