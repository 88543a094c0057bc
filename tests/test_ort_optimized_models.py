"""The exported transformer models in ../shared/models after ONNX Runtime's own transformer optimizer
(onnxruntime.transformers.optimizer.optimize_model, CPU target), in float32 and in float16
(convert_float_to_float16 with float32 inputs/outputs kept).

For every exported BERT / GPT-2 model, every optimizer model_type that applies to it, and the
optimizer levels 0 (python fusions only), 1 (the optimizer's default for bert and gpt2), 2 and 99
(ONNX Runtime's graph optimizer first), the test
  * checks that the optimizer really rewrote the graph: the optimized model uses com.microsoft
    contrib ops and its (domain, op) set differs from the exported model's;
  * runs the optimized model on kiln (at kiln's graph-optimisation levels 1 and 2) and on onnxruntime
    (CPU, its own graph optimisations off) with the reference inputs from NAME.ref.npz and with
    fresh random inputs of the same shapes (token ids below the embedding table's row count,
    attention masks of 0/1 with at least one 1 per row), and compares every output;
  * compares the results for the reference inputs with the reference outputs from NAME.ref.npz
    (onnxruntime on the exported, unoptimized model), since the rewrite must not change the maths.

Tolerances (absolute and relative, on every output element): 1e-4 for float32 models, 2e-2 for the
float16 conversion (float16 weights and activations; outputs are float32 but carry float16 error).

Two things about the optimizer in onnxruntime 1.32 that the test works around (neither is kiln's):
  * optimize_by_onnxruntime (used at opt_level > 0) imports torch only to read torch.version.hip,
    which matters only for GPU targets. Without torch installed, a stand-in module with just
    `version.hip = None` is put in sys.modules for the duration of the call (and removed after).
  * Gpt2OnnxModel.postprocess indexes gemm.input[2] and fails with IndexError on a Gemm without a
    bias, which torch's exporter emits for GPT-2's Conv1D layers. For model_type "gpt2" the Gemm
    nodes without C get an explicit all-zero bias first (the same function).
The optimized model is saved with the optimizer's own save_model_to_file, which adds the
com.microsoft opset import the fused nodes need (the in-memory optimizer.model lacks it at opt_level
0; onnxruntime tolerates that, kiln rejects a node whose domain the model does not import)."""
import contextlib
import glob
import importlib.util
import os
import sys
import types
import zlib

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from util import MODELS, assert_same, kiln, run_ort

ort_optimizer = pytest.importorskip("onnxruntime.transformers.optimizer")
from onnxruntime.transformers.onnx_model import OnnxModel  # noqa: E402

RTOL = {"fp32": 1e-4, "fp16": 2e-2}
ATOL = {"fp32": 1e-4, "fp16": 2e-2}
MS = "com.microsoft"
LEVELS = [0, 1, 2, 99]
N_RANDOM = 3


def _exported_models():
    """(name, model_type) for every exported (not already fused) BERT / GPT-2 model in MODELS.
    bert_tiny_fused* are themselves optimizer outputs, so there is nothing left to fuse in them."""
    names = {"bert_tiny", "gpt2_tiny"}
    for p in glob.glob(os.path.join(MODELS, "*.onnx")):
        n = os.path.basename(p)[:-5]
        if n.startswith(("bert", "gpt2")):
            m = onnx.load(p, load_external_data=False)
            if not any(nd.domain == MS for nd in m.graph.node):
                names.add(n)
    cases = []
    for n in sorted(names):
        if n.startswith("bert"):
            cases.append((n, "bert"))
        else:
            # GPT-2 under its own model type, and under "bert" (whose fusions also apply to it and
            # which needs no change to the exported model).
            cases += [(n, "gpt2"), (n, "bert")]
    return cases


CASES = [(n, mt, lvl, prec) for (n, mt) in _exported_models() for lvl in LEVELS
         for prec in ("fp32", "fp16")]


@contextlib.contextmanager
def _torch_stand_in():
    if importlib.util.find_spec("torch") is not None or "torch" in sys.modules:
        yield
        return
    stub = types.ModuleType("torch")
    stub.version = types.SimpleNamespace(hip=None, cuda=None)
    sys.modules["torch"] = stub
    try:
        yield
    finally:
        if sys.modules.get("torch") is stub:
            del sys.modules["torch"]


def _explicit_gemm_bias(model):
    """Gives every Gemm without a C input an all-zero C (same results)."""
    inits = {t.name: t for t in model.graph.initializer}
    for i, node in enumerate(model.graph.node):
        if node.op_type != "Gemm" or (len(node.input) > 2 and node.input[2]):
            continue
        w = inits[node.input[1]]
        trans_b = next((a.i for a in node.attribute if a.name == "transB"), 0)
        n_out = w.dims[0] if trans_b else w.dims[1]
        dt = onnx.helper.tensor_dtype_to_np_dtype(w.data_type)
        name = f"kiln_test_zero_bias_{i}"
        model.graph.initializer.append(numpy_helper.from_array(np.zeros(n_out, dt), name))
        if len(node.input) > 2:
            node.input[2] = name
        else:
            node.input.append(name)
    return model


def _hidden_and_heads(model):
    """hidden size: the first LayerNormalization's scale length; heads: hidden / head size, from the
    first constant 4-D Reshape shape (batch, seq, heads or -1, head size) that splits the hidden
    dimension into heads."""
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    inits[node.output[0]] = numpy_helper.to_array(a.t)
    hidden = next(inits[n.input[1]].shape[0] for n in model.graph.node
                  if n.op_type == "LayerNormalization" and n.input[1] in inits)
    heads = 0
    for node in model.graph.node:
        if node.op_type == "Reshape" and node.input[1] in inits:
            s = inits[node.input[1]].reshape(-1)
            if s.size == 4 and 0 < s[3] < hidden and hidden % s[3] == 0 \
                    and (s[2] * s[3] == hidden or s[2] == -1):
                heads = hidden // int(s[3])
                break
    assert heads > 0, "no attention head split found in the model"
    return int(hidden), heads


_CACHE = {}


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    return tmp_path_factory.mktemp("ort_optimized")


def optimized(workdir, name, model_type, level, prec):
    """(exported ModelProto, optimized model bytes), built once per case."""
    key = (name, model_type, level, prec)
    if key in _CACHE:
        return _CACHE[key]
    src = os.path.join(MODELS, name + ".onnx")
    assert os.path.exists(src), f"missing shared model {src}"
    exported = onnx.load(src)
    hidden, heads = _hidden_and_heads(exported)
    if model_type == "gpt2":
        src = str(workdir / f"{name}_gemm_bias.onnx")
        onnx.save(_explicit_gemm_bias(onnx.load(os.path.join(MODELS, name + ".onnx"))), src)
    with _torch_stand_in():
        opt = ort_optimizer.optimize_model(src, model_type=model_type, num_heads=heads,
                                           hidden_size=hidden, opt_level=level, use_gpu=False)
    if prec == "fp16":
        opt.convert_float_to_float16(keep_io_types=True)
    out = str(workdir / f"{name}_{model_type}_o{level}_{prec}.onnx")
    opt.save_model_to_file(out)
    with open(out, "rb") as f:
        data = f.read()
    _CACHE[key] = (exported, data)
    return _CACHE[key]


def _op_set(model):
    return {(n.domain or "", n.op_type) for n in model.graph.node}


def _feeds_source(model, input_name):
    """Row count of the embedding table an integer input indexes (through shape-only ops)."""
    inits = {t.name: t for t in model.graph.initializer}
    frontier, seen = [input_name], set()
    while frontier:
        v = frontier.pop()
        if v in seen:
            continue
        seen.add(v)
        for node in model.graph.node:
            if v not in node.input:
                continue
            if node.op_type == "Gather" and node.input[1] == v and node.input[0] in inits:
                return inits[node.input[0]].dims[0]
            if node.op_type in ("Reshape", "Unsqueeze", "Squeeze", "Flatten", "Cast", "Identity") \
                    and node.input[0] == v:
                frontier.append(node.output[0])
    return None


def random_feeds(model, ref_feeds, rng):
    """Fresh inputs shaped like the reference ones: ids below their table size, 0/1 masks with at
    least one 1 per row (alternately right-padded and scattered)."""
    feeds = {}
    for k, ref in ref_feeds.items():
        if "mask" in k:
            m = rng.integers(0, 2, size=ref.shape)
            if rng.integers(0, 2):
                lens = rng.integers(1, ref.shape[-1] + 1, size=ref.shape[:-1])
                m = (np.arange(ref.shape[-1]) < lens[..., None])
            m = m.reshape(-1, ref.shape[-1])
            m[np.arange(m.shape[0]), rng.integers(0, ref.shape[-1], size=m.shape[0])] = 1
            feeds[k] = m.reshape(ref.shape).astype(ref.dtype)
        elif ref.dtype.kind in "iu":
            rows = _feeds_source(model, k)
            assert rows, f"cannot tell the valid range of input {k}"
            feeds[k] = rng.integers(0, rows, size=ref.shape).astype(ref.dtype)
        else:
            feeds[k] = rng.standard_normal(ref.shape).astype(ref.dtype)
    return feeds


@pytest.mark.parametrize("name,model_type,level,prec", CASES,
                         ids=[f"{n}-{mt}-o{lvl}-{p}" for (n, mt, lvl, p) in CASES])
def test_optimized_model_matches_onnxruntime(workdir, name, model_type, level, prec):
    exported, data = optimized(workdir, name, model_type, level, prec)
    model = onnx.load_from_string(data)

    # The optimizer fused something into contrib ops.
    contrib = sorted(op for d, op in _op_set(model) if d == MS)
    assert contrib, f"no {MS} ops after optimize_model: {sorted(_op_set(model))}"
    assert _op_set(model) != _op_set(exported)
    assert any(o.domain == MS for o in model.opset_import)

    ref = np.load(os.path.join(MODELS, name + ".ref.npz"))
    ref_feeds = {k[3:]: ref[k] for k in ref.files if k.startswith("in.")}
    rng = np.random.default_rng(zlib.crc32(f"{name}/{model_type}/{level}/{prec}".encode()))
    feed_sets = [("reference inputs", ref_feeds)]
    feed_sets += [(f"random inputs {i}", random_feeds(exported, ref_feeds, rng)) for i in range(N_RANDOM)]

    try:
        want0 = run_ort(data, ref_feeds)
    except Exception as e:  # onnxruntime's CPU provider cannot run this conversion: not kiln's case
        pytest.skip(f"onnxruntime CPU cannot run the {prec} optimized model: {e}")

    out_names = [o.name for o in model.graph.output]
    rtol, atol = RTOL[prec], ATOL[prec]
    sessions = {lvl: kiln.InferenceSession(data, threads=2, opt_level=lvl) for lvl in (1, 2)}
    for what, feeds in feed_sets:
        want = want0 if feeds is ref_feeds else run_ort(data, feeds)
        for lvl, s in sessions.items():
            got = s.run(None, feeds)
            assert len(got) == len(want) == len(out_names)
            for n, g, w in zip(out_names, got, want):
                assert_same(g, w, rtol, atol, what=f"{n}, {what}, kiln opt_level {lvl} vs onnxruntime")
                if feeds is ref_feeds:
                    assert_same(g, ref["out." + n], rtol, atol,
                                what=f"{n}, kiln opt_level {lvl} vs the exported model's reference")


def test_fused_ops_per_model(workdir, record_property):
    """Which contrib ops each optimizer configuration produced (recorded; at least one per case)."""
    seen = {}
    for (n, mt, lvl, prec) in CASES:
        _, data = optimized(workdir, n, mt, lvl, prec)
        ops = sorted(op for d, op in _op_set(onnx.load_from_string(data)) if d == MS)
        seen[f"{n}-{mt}-o{lvl}-{prec}"] = ops
        assert ops, (n, mt, lvl, prec)
    for k, v in seen.items():
        record_property(k, ",".join(v))
        print(k, v)
