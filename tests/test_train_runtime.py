"""The training runtime: checkpoint format, module (train/eval steps, gradient accumulation), the
fused AdamW / SGD against numpy versions of torch.optim's arithmetic, the linear-warmup scheduler and
export for inference, on artifacts written by hand to the training contract (tests/train_models.py)."""
import os
import struct
import zlib

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import util  # noqa: F401  (puts python/ on the path)
import kiln
from kiln import training
from kiln.training import CheckpointState, LinearLRScheduler, Module, Optimizer
from train_models import adamw_ref, linear_artifacts, passthrough_artifacts, sgd_ref

RNG = np.random.default_rng(12)


def rand(*shape):
    return RNG.standard_normal(shape).astype(np.float32)


# ---- checkpoint ----

def _sample_state(opt="adamw"):
    st = CheckpointState.new({"w": rand(3, 4), "b": rand(4), "scalar": rand(), "big": rand(2, 3, 5, 7)},
                             optimizer=opt)
    return st


def test_checkpoint_round_trip_bitwise(tmp_path):
    d = str(tmp_path)
    passthrough_artifacts(d, [(3, 4), (4,)])
    st = CheckpointState.new({"P0": rand(3, 4), "P1": rand(4), "extra": rand(2, 2)}, optimizer="adamw")
    st.set_hyperparameter("lr", 0.05)
    mod = Module(os.path.join(d, "training_model.onnx"), st)
    opt = Optimizer("adamw", mod)
    for _ in range(3):  # fills the AdamW state (m, v) and the step count
        mod(rand(3, 4), rand(4))
        opt.step()
        mod.lazy_reset_grad()
    a, b = str(tmp_path / "a.kckpt"), str(tmp_path / "b.kckpt")
    CheckpointState.save_checkpoint(st, a)
    st2 = CheckpointState.load_checkpoint(a)
    CheckpointState.save_checkpoint(st2, b)
    assert open(a, "rb").read() == open(b, "rb").read()
    assert st2.step == 3 and st2.optimizer == "adamw" and st2.get_hyperparameter("lr") == 0.05
    for name in ("P0", "P1", "extra"):
        x, y = st.parameters[name].data, st2.parameters[name].data
        assert x.dtype == y.dtype and x.shape == y.shape and x.tobytes() == y.tobytes()
    assert set(st2.parameters) == {"P0", "P1", "extra"}
    # the loaded state continues training exactly as the original does
    mod2 = Module(os.path.join(d, "training_model.onnx"), st2)
    opt2 = Optimizer("adamw", mod2)
    g0, g1 = rand(3, 4), rand(4)
    for m_, o_ in ((mod, opt), (mod2, opt2)):
        m_(g0, g1)
        o_.step()
    assert st.parameters["P0"].data.tobytes() == st2.parameters["P0"].data.tobytes()


def test_checkpoint_other_dtypes_round_trip(tmp_path):
    vals = {"f64": RNG.standard_normal((2, 3)), "i64": RNG.integers(-9, 9, (5,)).astype(np.int64),
            "f16": rand(4).astype(np.float16), "i8": RNG.integers(-9, 9, (2, 2)).astype(np.int8)}
    st = CheckpointState.new(vals, requires_grad=False)
    p = str(tmp_path / "c.kckpt")
    st.save(p)
    st2 = CheckpointState.load_checkpoint(p)
    for k, v in vals.items():
        got = st2.parameters[k].data
        assert got.dtype == v.dtype and got.shape == v.shape and got.tobytes() == v.tobytes()
        assert st2.parameters[k].requires_grad is False
    assert st2.optimizer == ""


def test_checkpoint_set_parameter(tmp_path):
    st = _sample_state()
    w = rand(3, 4)
    st.parameters["w"] = w
    assert np.array_equal(st.parameters["w"].data, w)
    with pytest.raises(kiln.KilnError, match=r"'w' is float32\[3,4\].*dtype and shape"):
        st.parameters["w"] = rand(4, 3)
    with pytest.raises(kiln.KilnError, match="no parameter 'nope'"):
        st._set("nope", w)
    with pytest.raises(kiln.KilnError, match="already there"):
        CheckpointState.new([("a", rand(2)), ("a", rand(2))])


def _good_file(tmp_path):
    """A checkpoint with parameters, hyper-parameters, a step count and AdamW state."""
    d = str(tmp_path / "pt")
    passthrough_artifacts(d, [(3, 4), (4,)])
    st = CheckpointState.new({"P0": rand(3, 4), "P1": rand(4), "extra": rand(2)}, optimizer="adamw")
    mod = Module(os.path.join(d, "training_model.onnx"), st)
    mod(rand(3, 4), rand(4))
    Optimizer("adamw", mod).step()
    p = str(tmp_path / "good.kckpt")
    st.save(p)
    return p, open(p, "rb").read()


def _load_bytes(tmp_path, data, name="bad.kckpt"):
    p = str(tmp_path / name)
    with open(p, "wb") as f:
        f.write(data)
    return CheckpointState.load_checkpoint(p)


def _reheader(payload, version=1):
    """A file around payload with a correct header and CRC (for structurally bad payloads)."""
    return b"KILNCKPT" + struct.pack("<IIQII", version, 0, len(payload), zlib.crc32(payload) & 0xFFFFFFFF, 0) + payload


def test_checkpoint_truncated_refused(tmp_path):
    _, data = _good_file(tmp_path)
    for cut in (0, 7, 31, 32, 40, len(data) // 2, len(data) - 1):
        with pytest.raises(kiln.KilnError, match="truncated"):
            _load_bytes(tmp_path, data[:cut])


def test_checkpoint_corrupt_refused(tmp_path):
    _, data = _good_file(tmp_path)
    for pos in (40, len(data) // 2, len(data) - 3):  # a bit flipped anywhere in the payload
        bad = bytearray(data)
        bad[pos] ^= 0x10
        with pytest.raises(kiln.KilnError, match="corrupt: CRC32"):
            _load_bytes(tmp_path, bytes(bad))
    with pytest.raises(kiln.KilnError, match="bad magic"):
        _load_bytes(tmp_path, b"NOTCKPT!" + data[8:])
    with pytest.raises(kiln.KilnError, match="version 7 is not supported"):
        _load_bytes(tmp_path, data[:8] + struct.pack("<I", 7) + data[12:])
    with pytest.raises(kiln.KilnError, match="trailing data"):
        _load_bytes(tmp_path, data + b"\0\0")
    with pytest.raises(kiln.KilnError, match="No such file"):
        CheckpointState.load_checkpoint(str(tmp_path / "missing.kckpt"))


def _param_entry(name, dtype, dims, nbytes, data=b"", flags=1):
    b = struct.pack("<I", len(name)) + name + struct.pack("<II", dtype, len(dims))
    b += b"".join(struct.pack("<Q", d) for d in dims)
    return b + struct.pack("<IQ", flags, nbytes) + data


def _tail(opt=b"", n_hp=0, step=0, n_state=0):
    return struct.pack("<I", len(opt)) + opt + struct.pack("<I", n_hp) + struct.pack("<QI", step, n_state)


def test_checkpoint_malformed_payload_refused(tmp_path):
    ok = _param_entry(b"w", 1, [2], 8, b"\0" * 8)
    assert _load_bytes(tmp_path, _reheader(struct.pack("<I", 1) + ok + _tail())).parameters["w"].data.shape == (2,)
    cases = [
        (struct.pack("<I", 0x7FFFFFFF) + ok + _tail(), "parameter count 2147483647 exceeds"),
        (struct.pack("<I", 1) + _param_entry(b"w", 1, [1 << 40, 1 << 40], 8, b"\0" * 8) + _tail(), "oversized"),
        (struct.pack("<I", 1) + _param_entry(b"w", 1, [1 << 20], 1 << 22) + _tail(), "truncated data"),
        (struct.pack("<I", 1) + _param_entry(b"w", 1, [2], 12, b"\0" * 12) + _tail(), "12 data bytes for a shape of 8"),
        (struct.pack("<I", 1) + _param_entry(b"w", 1, [2] * 17, 8) + _tail(), "rank 17 is out of range"),
        (struct.pack("<I", 1) + _param_entry(b"w", 8, [2], 8, b"\0" * 8) + _tail(), "not a fixed-size numeric"),
        (struct.pack("<I", 1) + _param_entry(b"w", 1, [0], 0) + _tail(), "empty tensor"),
        (struct.pack("<I", 2) + ok + ok + _tail(), "'w' appears twice"),
        (struct.pack("<I", 1) + _param_entry(b"w\0x", 1, [2], 8, b"\0" * 8) + _tail(), "bad or truncated name"),
        (struct.pack("<I", 1) + ok + _tail(b"adam"), "unknown optimizer 'adam'"),
        (struct.pack("<I", 1) + ok + _tail(b"sgd", n_hp=99), "99 hyper-parameters"),
        (struct.pack("<I", 1) + ok + _tail(b"sgd", n_state=1) + struct.pack("<I", 5) + b"\0" * 16,
         "parameter index 5 out of range"),
        (struct.pack("<I", 1) + ok + _tail(b"sgd", n_state=1) + struct.pack("<II", 0, 1) + b"m" + struct.pack("<Q", 4)
         + b"\0" * 4, "state 'm' of 'w': 4 bytes, the parameter has 8"),
        (struct.pack("<I", 1) + ok + _tail() + b"\0", "unread bytes"),
    ]
    for payload, msg in cases:
        with pytest.raises(kiln.KilnError, match=msg):
            _load_bytes(tmp_path, _reheader(payload))


def test_checkpoint_random_mutations_never_crash(tmp_path):
    """Bytes of a valid file changed at random, with the CRC made right again so that the parser
    itself sees them: each load either succeeds or fails with a message (run under ASan too)."""
    p, data = _good_file(tmp_path)
    payload = bytearray(data[32:])
    rng = np.random.default_rng(3)
    loaded = refused = 0
    for i in range(300):
        bad = bytearray(payload)
        for _ in range(rng.integers(1, 4)):
            pos = int(rng.integers(0, len(bad)))
            bad[pos] = int(rng.integers(0, 256)) if rng.random() < 0.5 else bad[pos] ^ (1 << int(rng.integers(0, 8)))
        if rng.random() < 0.2:
            bad = bad[:int(rng.integers(0, len(bad)))]
        try:
            _load_bytes(tmp_path, _reheader(bytes(bad)), "m%d.kckpt" % (i % 4))
            loaded += 1
        except kiln.KilnError as e:
            assert str(e).startswith("checkpoint '") and len(str(e)) > 20
            refused += 1
    assert refused > 100 and loaded + refused == 300


def test_checkpoint_save_is_atomic(tmp_path):
    p = str(tmp_path / "c.kckpt")
    st = _sample_state()
    st.save(p)
    before = open(p, "rb").read()
    with pytest.raises(kiln.KilnError, match="cannot write"):
        st.save(str(tmp_path / "no_such_dir" / "c.kckpt"))
    assert open(p, "rb").read() == before
    assert sorted(os.listdir(tmp_path)) == ["c.kckpt"]  # no temporary file left behind


# ---- optimizers against torch.optim's arithmetic ----

SHAPES = [(3, 4), (7,), (300, 250)]  # the last one is updated in parallel chunks


def _passthrough(tmp_path, opt, **hp):
    d = str(tmp_path)
    passthrough_artifacts(d, SHAPES)
    init = [rand(*s) for s in SHAPES]
    st = CheckpointState.new({"P%d" % i: p for i, p in enumerate(init)}, optimizer=opt)
    for k, v in hp.items():
        st.set_hyperparameter(k, v)
    mod = Module(os.path.join(d, "training_model.onnx"), st, threads=2)
    return st, mod, Optimizer(opt, mod), init


@pytest.mark.parametrize("hp", [dict(lr=1e-3), dict(lr=0.05, weight_decay=0.1, beta1=0.8, beta2=0.99, eps=1e-6),
                                dict(lr=0.01, weight_decay=0.0)])
def test_adamw_matches_torch_formula(tmp_path, hp):
    st, mod, opt, ref = _passthrough(tmp_path, "adamw", **hp)
    ms = [np.zeros_like(p) for p in ref]
    vs = [np.zeros_like(p) for p in ref]
    kw = dict(lr=hp["lr"], beta1=hp.get("beta1", 0.9), beta2=hp.get("beta2", 0.999), eps=hp.get("eps", 1e-8),
              wd=hp.get("weight_decay", 0.01))
    for step in range(1, 7):
        grads = [rand(*s) for s in SHAPES]
        loss = mod(*grads)
        want_loss = sum(float(np.sum(p.astype(np.float64) * g)) for p, g in zip(ref, grads))
        assert abs(float(loss) - want_loss) <= 1e-3 * max(1.0, abs(want_loss))
        opt.step()
        mod.lazy_reset_grad()
        for i in range(len(SHAPES)):
            ref[i], ms[i], vs[i] = adamw_ref(ref[i], grads[i], ms[i], vs[i], step, **kw)
            np.testing.assert_allclose(st.parameters["P%d" % i].data, ref[i], rtol=2e-6, atol=1e-7)
    assert st.step == 6


@pytest.mark.parametrize("hp", [dict(lr=0.1), dict(lr=0.05, momentum=0.9), dict(lr=0.05, momentum=0.9, nesterov=1),
                                dict(lr=0.02, momentum=0.5, dampening=0.3, weight_decay=0.01)])
def test_sgd_matches_torch_formula(tmp_path, hp):
    st, mod, opt, ref = _passthrough(tmp_path, "sgd", **hp)
    bufs = [None] * len(SHAPES)
    kw = dict(lr=hp["lr"], momentum=hp.get("momentum", 0.0), dampening=hp.get("dampening", 0.0),
              wd=hp.get("weight_decay", 0.0), nesterov=bool(hp.get("nesterov", 0)))
    for _ in range(5):
        grads = [rand(*s) for s in SHAPES]
        mod(*grads)
        opt.step()
        mod.lazy_reset_grad()
        for i in range(len(SHAPES)):
            ref[i], bufs[i] = sgd_ref(ref[i], grads[i], bufs[i], **kw)
            np.testing.assert_allclose(st.parameters["P%d" % i].data, ref[i], rtol=2e-6, atol=1e-7)


def test_gradient_accumulation_and_lazy_reset(tmp_path):
    st, mod, opt, ref = _passthrough(tmp_path, "sgd", lr=0.5)
    g1, g2, g3 = ([rand(*s) for s in SHAPES] for _ in range(3))
    mod(*g1)
    mod(*g2)  # accumulates
    for i in range(len(SHAPES)):
        np.testing.assert_allclose(st.parameters["P%d" % i].grad, g1[i] + g2[i], rtol=1e-6)
    opt.step()
    for i in range(len(SHAPES)):
        np.testing.assert_allclose(st.parameters["P%d" % i].data, ref[i] - np.float32(0.5) * (g1[i] + g2[i]),
                                   rtol=1e-5, atol=1e-6)
    mod.lazy_reset_grad()
    for i in range(len(SHAPES)):  # a pending reset reads as zero gradients
        assert not np.any(st.parameters["P%d" % i].grad)
    mod(*g3)  # overwrites instead of adding
    for i in range(len(SHAPES)):
        np.testing.assert_array_equal(st.parameters["P%d" % i].grad, g3[i])
    # an optimizer step with a reset pending and no step since changes nothing (SGD, no decay)
    mod.lazy_reset_grad()
    before = st.parameters["P0"].data
    opt.step()
    np.testing.assert_array_equal(st.parameters["P0"].data, before)


def test_learning_rate_and_scheduler(tmp_path):
    st, mod, opt, _ = _passthrough(tmp_path, "adamw")
    assert opt.get_learning_rate() == pytest.approx(1e-3)
    opt.set_learning_rate(0.25)
    assert opt.get_learning_rate() == 0.25 and st.get_hyperparameter("lr") == 0.25
    with pytest.raises(kiln.KilnError, match="learning rate -1 must be finite and >= 0"):
        opt.set_learning_rate(-1)
    warm, total, lr0 = 3, 10, 0.1
    sch = LinearLRScheduler(opt, warm, total, lr0)
    assert opt.get_learning_rate() == pytest.approx(lr0)
    for t in range(1, 13):
        mod(*[rand(*s) for s in SHAPES])
        opt.step()
        sch.step()
        f = t / max(1, warm) if t < warm else max(0.0, (total - t) / max(1, total - warm))
        assert opt.get_learning_rate() == pytest.approx(lr0 * f, abs=1e-12)
    with pytest.raises(kiln.KilnError, match=r"warmup steps \(5\) exceed the total \(2\)"):
        LinearLRScheduler(opt, 5, 2, 0.1)


# ---- a small linear model end to end, against numpy ----

N, D, K = 8, 5, 3


def _linear(tmp_path, opt="adamw", **hp):
    d = str(tmp_path / "art")
    W, b = rand(D, K), rand(K)
    linear_artifacts(d, N, D, K, W, b)
    st = CheckpointState.new({"W": W, "b": b}, optimizer=opt)
    for k, v in hp.items():
        st.set_hyperparameter(k, v)
    mod = Module(os.path.join(d, "training_model.onnx"), st, os.path.join(d, "eval_model.onnx"))
    return d, st, mod, Optimizer(opt, mod), W.copy(), b.copy()


def test_linear_training_matches_numpy(tmp_path):
    d, st, mod, opt, W, b = _linear(tmp_path, lr=0.05)
    assert mod.input_names() == ["x", "labels"]
    m = [np.zeros_like(W), np.zeros_like(b)]
    v = [np.zeros_like(W), np.zeros_like(b)]
    for step in range(1, 21):
        x, y = rand(N, D), rand(N, K)
        pred = x.astype(np.float64) @ W + b
        want = np.mean((pred - y) ** 2)
        dy = 2 * (pred - y) / (N * K)
        gW, gb = (x.T @ dy).astype(np.float32), dy.sum(0).astype(np.float32)
        loss = mod(x, y)
        assert abs(float(loss) - want) <= 1e-4 * abs(want)
        opt.step()
        mod.lazy_reset_grad()
        W, m[0], v[0] = adamw_ref(W, gW, m[0], v[0], step, 0.05)
        b, m[1], v[1] = adamw_ref(b, gb, m[1], v[1], step, 0.05)
    np.testing.assert_allclose(st.parameters["W"].data, W, rtol=1e-4, atol=1e-5)
    # eval mode: the loss and the model output, without touching the gradients
    mod.eval()
    x, y = rand(N, D), rand(N, K)
    loss, pred = mod(x, labels=y)
    Wt, bt = st.parameters["W"].data, st.parameters["b"].data
    np.testing.assert_allclose(pred, x @ Wt + bt, rtol=1e-5, atol=1e-5)
    assert float(loss) == pytest.approx(float(np.mean((x @ Wt + bt - y) ** 2)), rel=1e-5)
    assert mod.output_names() == ["loss", "y"]
    assert mod.get_providers() == ["CPUExecutionProvider"] and mod.get_provider_warning() == ""
    assert mod.get_providers(training=False) == ["CPUExecutionProvider"]


def test_contiguous_parameters(tmp_path):
    d, st, mod, opt, W, b = _linear(tmp_path)
    assert mod.get_parameters_size() == D * K + K
    flat = mod.get_contiguous_parameters()
    np.testing.assert_array_equal(flat, np.concatenate([W.ravel(), b]))
    new = rand(D * K + K)
    mod.copy_buffer_to_parameters(new)
    np.testing.assert_array_equal(st.parameters["W"].data, new[:D * K].reshape(D, K))
    np.testing.assert_array_equal(st.parameters["b"].data, new[D * K:])
    with pytest.raises(ValueError, match="buffer has 3 elements, the parameters 18"):
        mod.copy_buffer_to_parameters(rand(3))


def test_export_gives_trained_outputs(tmp_path):
    d, st, mod, opt, W0, b0 = _linear(tmp_path, "sgd", lr=0.1, momentum=0.9)
    for _ in range(5):
        mod(rand(N, D), rand(N, K))
        opt.step()
        mod.lazy_reset_grad()
    Wt, bt = st.parameters["W"].data, st.parameters["b"].data
    assert not np.allclose(Wt, W0)
    out = str(tmp_path / "trained.onnx")
    mod.export_model_for_inferencing(out, ["y"])
    x = rand(N, D)
    want = x @ Wt + bt
    got_kiln = kiln.InferenceSession(out).run(None, {"x": x})
    got_ort = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"x": x})
    assert len(got_kiln) == len(got_ort) == 1
    np.testing.assert_allclose(got_kiln[0], want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_ort[0], want, rtol=1e-5, atol=1e-5)
    with pytest.raises(kiln.KilnError, match="'nope' is not a graph output"):
        mod.export_model_for_inferencing(str(tmp_path / "x.onnx"), ["nope"])
    # the saved checkpoint holds the trained values
    p = str(tmp_path / "trained.kckpt")
    st.save(p)
    assert np.array_equal(CheckpointState.load_checkpoint(p).parameters["W"].data, Wt)


def test_module_errors(tmp_path):
    d, st, mod, opt, W, b = _linear(tmp_path)
    x, y = rand(N, D), rand(N, K)
    with pytest.raises(kiln.KilnError, match="input 'labels' is missing"):
        mod(x)
    with pytest.raises(kiln.KilnError, match="the model has no input 'z'"):
        mod(x, y, z=x)
    with pytest.raises(kiln.KilnError, match="'W' is a checkpoint parameter"):
        mod(x, y, W=W)
    with pytest.raises(kiln.KilnError, match="labels"):
        mod(x, rand(N, K + 1))  # the runtime names the bad input
    with pytest.raises(ValueError, match="at most 2 inputs"):
        mod(x, y, x)
    train = os.path.join(d, "training_model.onnx")
    with pytest.raises(kiln.KilnError, match="trains parameter 'b', which the checkpoint lacks"):
        Module(train, CheckpointState.new({"W": W}, optimizer="sgd"))
    with pytest.raises(kiln.KilnError, match=r"graph input 'W' does not match the checkpoint's parameter \(float32\[5,4\]\)"):
        Module(train, CheckpointState.new({"W": rand(D, K + 1), "b": b}, optimizer="sgd"))
    bare = CheckpointState.new({"W": W, "b": b})
    m2 = Module(train, bare)
    with pytest.raises(kiln.KilnError, match="records no optimizer"):
        training.Optimizer(os.path.join(d, "optimizer_model.onnx"), m2)
    with pytest.raises(kiln.KilnError, match="the checkpoint's optimizer is adamw"):
        Optimizer("sgd", mod)
    with pytest.raises(kiln.KilnError, match="sgd has no hyper-parameter 'beta1'"):
        CheckpointState.new({"W": W}, optimizer="sgd").set_hyperparameter("beta1", 0.5)
    with pytest.raises(kiln.KilnError, match="opened without an eval model"):
        Module(train, st).eval()(x, y)
    with pytest.raises(kiln.KilnError, match="'W' is float64; training takes float32 parameters"):
        Module(train, CheckpointState.new({"W": W.astype(np.float64), "b": b}, optimizer="sgd"))
    with pytest.raises(ValueError, match="device 'tpu'"):
        Module(train, st, device="tpu")


def test_generate_artifacts_argument_errors(tmp_path):
    with pytest.raises(ValueError, match="unknown loss 'hinge'"):
        training.generate_artifacts("m.onnx", ["W"], loss="hinge", optimizer="adamw", artifact_directory=str(tmp_path))
    with pytest.raises(ValueError, match="unknown optimizer 'lamb'"):
        training.generate_artifacts("m.onnx", ["W"], loss=training.LossType.MSELoss, optimizer="lamb",
                                    artifact_directory=str(tmp_path))
    with pytest.raises(kiln.KilnError, match="'W' is both trainable and frozen"):
        training.generate_artifacts("m.onnx", ["W"], frozen_params=["W"], loss="mse", optimizer="sgd",
                                    artifact_directory=str(tmp_path))
    with pytest.raises(NotImplementedError, match="ort_format"):
        training.generate_artifacts("m.onnx", ["W"], loss="mse", optimizer="sgd", ort_format=True)


def test_onnxruntime_namespace():
    from kiln.onnxruntime.training import api, artifacts
    assert api.Module is Module and api.CheckpointState is CheckpointState
    assert artifacts.generate_artifacts is training.generate_artifacts
    assert artifacts.OptimType.AdamW.value == "adamw"


# ---- end to end: artifacts from kiln's graph builder, training against a numpy reference ----

import train_ref  # noqa: E402

E2E = {
    "mlp": (train_ref.mlp, train_ref.mlp_params, [], lambda r: r.standard_normal((8, 16)), (["N", 16], 5)),
    "cnn": (train_ref.cnn, train_ref.cnn_params, train_ref.CNN_FROZEN, lambda r: r.standard_normal((4, 3, 8, 8)),
            (["N", 3, 8, 8], 4)),
    "bert": (train_ref.bert, train_ref.bert_params, [],
             lambda r: r.integers(0, train_ref.V_, (train_ref.B_, train_ref.S_)), ([train_ref.B_, train_ref.S_], 3)),
}


@pytest.mark.parametrize("name", list(E2E))
def test_end_to_end_training_matches_numpy(tmp_path, name):
    build, make_params, frozen, make_x, (x_shape, classes) = E2E[name]
    rng = np.random.default_rng(5)
    params = make_params(rng)
    x_dtype = onnx.TensorProto.INT64 if name == "bert" else onnx.TensorProto.FLOAT
    o = train_ref.Onnx({k: v.astype(np.float32) for k, v in params.items()})
    model = o.model(build(o, "x"), "x", x_dtype, x_shape, [x_shape[0], classes])
    trainable = [k for k in params if k not in frozen]
    art = str(tmp_path / "art")
    training.generate_artifacts(model, requires_grad=trainable, frozen_params=frozen,
                                loss=training.LossType.CrossEntropyLoss, optimizer=training.OptimType.AdamW,
                                artifact_directory=art)
    assert sorted(os.listdir(art)) == ["checkpoint.kckpt", "eval_model.onnx", "inference_model.onnx",
                                       "training_model.onnx"]
    state = CheckpointState.load_checkpoint(os.path.join(art, "checkpoint.kckpt"))
    assert list(state.parameters) == trainable and state.optimizer == "adamw"
    lr = 0.01
    state.set_hyperparameter("lr", lr)
    mod = Module(os.path.join(art, "training_model.onnx"), state, os.path.join(art, "eval_model.onnx"))
    opt = Optimizer("adamw", mod)
    ref = {k: v.astype(np.float32).astype(np.float64) for k, v in params.items()}
    m = {k: np.zeros_like(ref[k]) for k in trainable}
    v = {k: np.zeros_like(ref[k]) for k in trainable}
    for step in range(1, 21):
        x = make_x(rng)
        x = x.astype(np.int64) if name == "bert" else x.astype(np.float32)
        labels = rng.integers(0, classes, len(x)).astype(np.int64)
        want, grads = train_ref.ref_step(build, ref, x, labels)
        loss = float(mod(x, labels))
        assert abs(loss - want) <= 1e-4 * abs(want), (step, loss, want)
        opt.step()
        mod.lazy_reset_grad()
        for k in trainable:
            ref[k], m[k], v[k] = train_ref.adamw64(ref[k], grads[k], m[k], v[k], step, lr)
    moved = [k for k in trainable if np.max(np.abs(ref[k] - params[k])) > 0.05]
    assert len(moved) >= len(trainable) // 2  # the parameters really trained
    for k in trainable:
        if k.endswith(".k.b"):
            continue  # exact gradient 0 (softmax ignores a shift of every key): AdamW moves it by rounding noise
        np.testing.assert_allclose(state.parameters[k].data, ref[k], rtol=1e-3, atol=2e-4 * np.abs(ref[k]).max(),
                                   err_msg=k)
    # eval model and the exported inference model give the trained model's outputs
    x = make_x(rng)
    x = x.astype(np.int64) if name == "bert" else x.astype(np.float32)
    labels = rng.integers(0, classes, len(x)).astype(np.int64)
    want_loss, _ = train_ref.ref_step(build, {k: (state.parameters[k].data if k in trainable else ref[k])
                                              for k in ref}, x, labels)
    mod.eval()
    ev_loss, logits = mod(x, labels)
    assert float(ev_loss) == pytest.approx(want_loss, rel=1e-4)
    out = str(tmp_path / "trained.onnx")
    mod.export_model_for_inferencing(out, ["logits"])
    got_k = kiln.InferenceSession(out).run(None, {"x": x})[0]
    got_o = ort.InferenceSession(out, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got_k, logits, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_o, logits, rtol=1e-4, atol=1e-5)


def test_generate_artifacts_errors_from_the_builder(tmp_path):
    o = train_ref.Onnx({k: v.astype(np.float32) for k, v in train_ref.mlp_params(np.random.default_rng(1)).items()})
    model = o.model(train_ref.mlp(o, "x"), "x", onnx.TensorProto.FLOAT, ["N", 16], ["N", 5])
    with pytest.raises(kiln.KilnError, match="nope"):
        training.generate_artifacts(model, ["fc1.w", "nope"], loss="cross_entropy", optimizer="sgd",
                                    artifact_directory=str(tmp_path))


KILN_CLI = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(util.ROOT, "build")), "kiln")


def test_cli_train_artifacts(tmp_path):
    import subprocess
    o = train_ref.Onnx({k: v.astype(np.float32) for k, v in train_ref.cnn_params(np.random.default_rng(2)).items()})
    src = str(tmp_path / "cnn.onnx")
    onnx.save(o.model(train_ref.cnn(o, "x"), "x", onnx.TensorProto.FLOAT, ["N", 3, 8, 8], ["N", 4]), src)
    out = str(tmp_path / "art")
    r = subprocess.run([KILN_CLI, "train-artifacts", src, "--requires-grad", "c1.w", "c1.b", "fc.w", "--frozen",
                        "bn.mean", "bn.var", "--loss", "cross_entropy", "--optimizer", "sgd", out],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "3 trainable parameter(s)" in r.stdout
    st = CheckpointState.load_checkpoint(os.path.join(out, "checkpoint.kckpt"))
    assert list(st.parameters) == ["c1.w", "c1.b", "fc.w"] and st.optimizer == "sgd"
    assert np.array_equal(st.parameters["c1.w"].data, onnx.numpy_helper.to_array(
        [i for i in onnx.load(src).graph.initializer if i.name == "c1.w"][0]))
    mod = Module(os.path.join(out, "training_model.onnx"), st)
    loss = mod(rand(2, 3, 8, 8), np.array([1, 3], np.int64))
    assert np.isfinite(loss)
    for args, msg in ((["--requires-grad", "c1.w", "--loss", "mse", out], "--optimizer"),
                      (["--requires-grad", "--loss", "mse", "--optimizer", "sgd", out], "needs at least one name"),
                      (["--requires-grad", "c1.w", "--loss", "mse", "--optimizer", "lamb", out], "unknown optimizer 'lamb'"),
                      (["--requires-grad", "zz", "--loss", "mse", "--optimizer", "sgd", out], "zz"),
                      (["--requires-grad", "c1.w", "--bogus", "--loss", "mse", "--optimizer", "sgd", out], "'--bogus'")):
        r = subprocess.run([KILN_CLI, "train-artifacts", src] + args, capture_output=True, text=True)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)


def test_cli_train_loop(tmp_path):
    """kiln train: the same steps as the Python API, from an .npz, then the checkpoint and export."""
    import subprocess
    d = str(tmp_path / "art")
    W, b = rand(D, K), rand(K)
    linear_artifacts(d, N, D, K, W, b)
    st = CheckpointState.new({"W": W, "b": b}, optimizer="sgd")
    st.save(os.path.join(d, "checkpoint.kckpt"))
    x, y = rand(3 * N, D), rand(3 * N, K)
    np.savez(str(tmp_path / "data.npz"), x=x, labels=y)
    out = str(tmp_path / "trained.onnx")
    r = subprocess.run([KILN_CLI, "train", d, "--inputs", str(tmp_path / "data.npz"), "--steps", "5", "--batch",
                        str(N), "--lr", "0.1", "--threads", "1", "--export", out], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    got = [float(line.split()[3]) for line in r.stdout.splitlines() if line.startswith("step ")]
    # the same training through the Python API
    mod = Module(os.path.join(d, "training_model.onnx"), st)
    opt = Optimizer("sgd", mod)
    opt.set_learning_rate(0.1)
    want = []
    for s in range(5):
        i = s % 3
        want.append(float(mod(x[i * N:(i + 1) * N], y[i * N:(i + 1) * N])))
        opt.step()
        mod.lazy_reset_grad()
    np.testing.assert_allclose(got, want, rtol=1e-5)
    saved = CheckpointState.load_checkpoint(os.path.join(d, "checkpoint.kckpt"))
    assert saved.step == 5
    np.testing.assert_allclose(saved.parameters["W"].data, st.parameters["W"].data, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(kiln.InferenceSession(out).run(None, {"x": x[:N]})[0],
                               x[:N] @ saved.parameters["W"].data + saved.parameters["b"].data, rtol=1e-5, atol=1e-5)
    np.savez(str(tmp_path / "bad.npz"), x=x, labels=y[:5])
    for args, msg in ((["--inputs", str(tmp_path / "bad.npz")], "has 5 rows, another has 24"),
                      (["--steps", "2"], "--inputs FILE.npz is required"),
                      (["--inputs", str(tmp_path / "data.npz"), "--batch", "100"], "fewer than a batch of 100"),
                      (["--inputs", str(tmp_path / "data.npz"), "--lr", "-1"], "bad --lr"),
                      (["--inputs", str(tmp_path / "data.npz"), "--batch", "5"], "input 'x' has shape float32[5,5]")):
        r = subprocess.run([KILN_CLI, "train", d] + args, capture_output=True, text=True)
        assert r.returncode != 0 and msg in r.stderr, (args, r.stderr)
