"""The device-resident training module without a GPU: tests/providers/fake_device.c stands in for
libkiln_cuda.so (its "device" memory is host blocks it checks on every call, and it aborts on a leaked
block), so the module's device path runs in CI: parameters fed as device inputs, gradients taken on
the device (from device nodes) or uploaded (from CPU nodes) and accumulated there, the optimizer
stepping on the device, the checkpoint pulled back when read and pushed again after a write, and
every device buffer freed when the module closes. A CPU module on the same artifacts is the oracle."""
import os

import pytest

from test_provider_machinery import fake_dir, run_script  # noqa: F401  (fixture)
from util import ROOT

PRELUDE = """
import os, sys
sys.path.insert(0, %r)
from kiln.training import CheckpointState, Module, Optimizer
from train_models import linear_artifacts
rng = np.random.default_rng(4)

def device_grads_artifacts(d):
    # loss = sum(P0 * G0) + sum(P1 * G1) on the CPU; P0_grad = Relu(G0) and P1_grad = Add(G1, P1) run on
    # the fake device, so the module receives device gradients, and Add reads the device parameter
    os.makedirs(d, exist_ok=True)
    nodes = [helper.make_node("Mul", ["P0", "G0"], ["m0"]), helper.make_node("ReduceSum", ["m0"], ["s0"], keepdims=0),
             helper.make_node("Mul", ["P1", "G1"], ["m1"]), helper.make_node("ReduceSum", ["m1"], ["s1"], keepdims=0),
             helper.make_node("Sum", ["s0", "s1"], ["loss"]),
             helper.make_node("Relu", ["G0"], ["P0_grad"], name="relu"),
             helper.make_node("Add", ["G1", "P1"], ["P1_grad"], name="add")]
    ins = [vi("G0", [3, 4]), vi("G1", [5]), vi("P0", [3, 4]), vi("P1", [5])]
    outs = [vi("loss", []), vi("P0_grad", [3, 4]), vi("P1_grad", [5])]
    g = helper.make_graph(nodes, "g", ins, outs)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]); m.ir_version = 8
    for k, v in (("kiln.train.params", "P0,P1"), ("kiln.train.loss", "mse"), ("kiln.train.output", "")):
        p = m.metadata_props.add(); p.key, p.value = k, v
    onnx.save(m, os.path.join(d, "training_model.onnx"))

def pair(path, opt, eval_path=None, **hp):
    out = []
    for dev in ("cpu", "cuda"):
        st = CheckpointState.load_checkpoint(ck_path)
        for k, v in hp.items():
            st.set_hyperparameter(k, v)
        mod = Module(path, st, eval_path, device=dev)
        out.append((st, mod, Optimizer(opt, mod)))
    return out
""" % os.path.join(ROOT, "tests")


@pytest.mark.parametrize("opt,hp", [("adamw", {"lr": 0.05}), ("sgd", {"lr": 0.1, "momentum": 0.9, "nesterov": 1})])
def test_device_module_matches_cpu(fake_dir, tmp_path, opt, hp):  # noqa: F811
    out = run_script(fake_dir, PRELUDE + """
d = %r
device_grads_artifacts(d)
ck_path = os.path.join(d, "ck.kckpt")
CheckpointState.new({"P0": rng.standard_normal((3, 4)).astype(np.float32),
                     "P1": rng.standard_normal(5).astype(np.float32)}, optimizer=%r).save(ck_path)
hp = %r
(st_c, mod_c, opt_c), (st_g, mod_g, opt_g) = pair(os.path.join(d, "training_model.onnx"), %r, **hp)
assert mod_g.get_providers()[0] == "CUDAExecutionProvider"
assert mod_g.parameters_memory() == "device" and mod_c.parameters_memory() == "host"
up0 = mod_g.transfer_bytes()  # the upload of the parameters at open
assert up0 == (12 + 5) * 4, up0
for step in range(6):
    g0, g1 = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
    lc, lg = float(mod_c(g0, g1)), float(mod_g(g0, g1))
    assert lc == lg, (step, lc, lg)
    if step %% 2 == 0:  # a second batch accumulates into the gradients
        lc, lg = float(mod_c(G1=g1, G0=g0 * 2)), float(mod_g(G1=g1, G0=g0 * 2))
        assert lc == lg
        for k in ("P0", "P1"):
            np.testing.assert_array_equal(mod_g._grad(k), mod_c._grad(k))
    opt_c.step(); opt_g.step()
    mod_c.lazy_reset_grad(); mod_g.lazy_reset_grad()
    if step == 3:  # a checkpoint write reaches the device copies
        v = rng.standard_normal(5).astype(np.float32)
        st_c.parameters["P1"].data = v
        st_g.parameters["P1"].data = v
# reads bring the trained values back
for k in ("P0", "P1"):
    np.testing.assert_allclose(st_g.parameters[k].data, st_c.parameters[k].data, rtol=1e-6, atol=1e-7)
assert st_g.step == st_c.step == 6
# a step copies nothing between host and device: the gradients come out on the device and the loss
# (a CPU node's output) is on the host already; reading parameters and gradients did copy
before = mod_g.transfer_bytes()
g0, g1 = rng.standard_normal((3, 4)).astype(np.float32), rng.standard_normal(5).astype(np.float32)
mod_g(g0, g1); opt_g.step(); mod_g.lazy_reset_grad()
mod_c(g0, g1); opt_c.step(); mod_c.lazy_reset_grad()
assert mod_g.transfer_bytes() == before, (before, mod_g.transfer_bytes())
p = os.path.join(d, "saved.kckpt")
CheckpointState.save_checkpoint(st_g, p)
q = os.path.join(d, "saved_cpu.kckpt")
CheckpointState.save_checkpoint(st_c, q)
back, want = CheckpointState.load_checkpoint(p), CheckpointState.load_checkpoint(q)
for k in ("P0", "P1"):
    np.testing.assert_allclose(back.parameters[k].data, want.parameters[k].data, rtol=1e-6, atol=1e-7)
# the optimizer state came back too: both continue alike after a reload
del mod_g, opt_g
print("ok")
""" % (str(tmp_path / "art"), opt, hp, opt))
    assert "ok" in out


def test_device_module_with_cpu_gradients_and_eval(fake_dir, tmp_path):  # noqa: F811
    out = run_script(fake_dir, PRELUDE + """
d = %r
n, dd, k = 6, 4, 3
W, b = rng.standard_normal((dd, k)).astype(np.float32), rng.standard_normal(k).astype(np.float32)
linear_artifacts(d, n, dd, k, W, b)
ck_path = os.path.join(d, "ck.kckpt")
CheckpointState.new({"W": W, "b": b}, optimizer="adamw").save(ck_path)
(st_c, mod_c, opt_c), (st_g, mod_g, opt_g) = pair(os.path.join(d, "training_model.onnx"), "adamw",
                                                  os.path.join(d, "eval_model.onnx"), lr=0.05)
assert mod_g.parameters_memory() == "device"
for step in range(5):
    x, y = rng.standard_normal((n, dd)).astype(np.float32), rng.standard_normal((n, k)).astype(np.float32)
    assert float(mod_c(x, y)) == float(mod_g(x, y))
    before = mod_g.transfer_bytes()
    opt_c.step(); opt_g.step()
    if step == 0:  # the first step uploads the new (zero) AdamW state m and v
        assert mod_g.transfer_bytes() - before == 2 * (dd * k + k) * 4
    else:
        assert mod_g.transfer_bytes() == before  # the step runs on the device
    mod_c.lazy_reset_grad(); mod_g.lazy_reset_grad()
# the gradients are CPU nodes' outputs: each step uploads them (and nothing else)
before = mod_g.transfer_bytes()
mod_g(x, y)
assert mod_g.transfer_bytes() - before == (dd * k + k) * 4
mod_c(x, y)
mod_c.eval(); mod_g.eval()
ec, eg = mod_c(x, y), mod_g(x, y)
np.testing.assert_allclose(eg[0], ec[0], rtol=1e-6)
np.testing.assert_allclose(eg[1], ec[1], rtol=1e-6, atol=1e-7)
out = os.path.join(d, "trained.onnx")
mod_g.export_model_for_inferencing(out, ["y"])
got = kiln.InferenceSession(out).run(None, {"x": x})[0]
np.testing.assert_allclose(got, eg[1], rtol=1e-6, atol=1e-7)
print("ok")
""" % str(tmp_path / "lin"))
    assert "ok" in out


def test_checkpoint_cannot_be_shared_by_two_device_modules(fake_dir, tmp_path):  # noqa: F811
    out = run_script(fake_dir, PRELUDE + """
d = %r
device_grads_artifacts(d)
ck_path = os.path.join(d, "ck.kckpt")
CheckpointState.new({"P0": np.ones((3, 4), np.float32), "P1": np.ones(5, np.float32)}, optimizer="sgd").save(ck_path)
st = CheckpointState.load_checkpoint(ck_path)
mod = Module(os.path.join(d, "training_model.onnx"), st, device="cuda")
try:
    Module(os.path.join(d, "training_model.onnx"), st, device="cuda")
    raise SystemExit("a second device module on one checkpoint was accepted")
except kiln.KilnError as e:
    assert "already trained by another module" in str(e), e
print("ok")
""" % str(tmp_path / "art"))
    assert "ok" in out
