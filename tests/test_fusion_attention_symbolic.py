"""Self-attention as torch's exporter writes it with dynamic batch/sequence axes (issues 7 and 8):
the head split and merge shapes are Shape -> Gather -> Unsqueeze -> Concat chains, the masks are
built at run time (BERT's padding mask expanded to (B, 1, S, S), GPT-2's causal mask from Range),
GPT-2 also returns the split keys/values. Each form must fuse to Attention with the dims left
symbolic, and the fused session must match onnxruntime as batch and sequence change between runs."""
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import assert_same, kiln, rand, run_ort

N, H = 2, 8
D = N * H
LOWEST = np.finfo(np.float32).min


def const(name, v):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.asarray(v), name))


def projections(seed):
    """The constants, x's batch and sequence as run-time values (b, s, b1, s1), and Q/K/V projected
    and split into heads (q, k, v + "r": (B, S, N, H)), as the exporter writes them."""
    rng = np.random.default_rng(seed)
    nodes = [const("i0", np.array(0, np.int64)), const("i1", np.array(1, np.int64)),
             const("ax0", np.array([0], np.int64)), const("m1", np.array([-1], np.int64)),
             const("hs", np.array([H], np.int64)), const("scale", np.array(H ** -0.5, np.float32)),
             const("zero", np.array(0.0, np.float32)), const("lowest", np.array(LOWEST, np.float32)),
             helper.make_node("Shape", ["x"], ["shp"]),
             helper.make_node("Gather", ["shp", "i0"], ["b"], axis=0),
             helper.make_node("Gather", ["shp", "i1"], ["s"], axis=0),
             helper.make_node("Unsqueeze", ["b", "ax0"], ["b1"]),
             helper.make_node("Unsqueeze", ["s", "ax0"], ["s1"]),
             helper.make_node("Concat", ["b1", "s1", "m1", "hs"], ["split"], axis=0)]
    inits = {}
    for p in "qkv":
        inits["w" + p] = rng.uniform(-0.5, 0.5, (D, D)).astype(np.float32)
        nodes += [helper.make_node("MatMul", ["x", "w" + p], [p + "3"]),
                  helper.make_node("Reshape", [p + "3", "split"], [p + "r"])]
    return nodes, inits


def model(form):
    nodes, inits = projections(7)
    nodes += [helper.make_node("Transpose", ["qr"], ["q4"], perm=[0, 2, 1, 3]),
              helper.make_node("Transpose", ["vr"], ["v4"], perm=[0, 2, 1, 3])]
    outputs, k_t, v4 = ["y"], "kt", "v4"
    if form == "gpt2":  # present key/value outputs, through one-input Concats
        nodes += [helper.make_node("Transpose", ["kr"], ["k4"], perm=[0, 2, 1, 3]),
                  helper.make_node("Concat", ["k4"], ["present_k"], axis=-2),
                  helper.make_node("Concat", ["v4"], ["present_v"], axis=-2),
                  helper.make_node("Transpose", ["present_k"], ["kt"], perm=[0, 1, 3, 2])]
        outputs += ["present_k", "present_v"]
        v4 = "present_v"
    else:
        nodes.append(helper.make_node("Transpose", ["kr"], ["kt"], perm=[0, 2, 3, 1]))
    nodes += [helper.make_node("MatMul", ["q4", k_t], ["sc"]),
              helper.make_node("Mul", ["sc", "scale"], ["scs"])]
    scores = "scs"
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D])]
    if form == "bert":  # Where(keep, 0, lowest) of the (B, S) mask, expanded to (B, 1, S, S)
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]))
        nodes += [const("ax12", np.array([1, 2], np.int64)), const("one", np.array([1], np.int64)),
                  helper.make_node("Unsqueeze", ["mask", "ax12"], ["mu"]),
                  helper.make_node("Cast", ["mu"], ["keep"], to=TensorProto.BOOL),
                  helper.make_node("Concat", ["b1", "one", "s1", "s1"], ["mshape"], axis=0),
                  helper.make_node("Expand", ["keep", "mshape"], ["keep4"]),
                  helper.make_node("Where", ["keep4", "zero", "lowest"], ["madd"]),
                  helper.make_node("Add", ["scs", "madd"], ["scm"])]
        scores = "scm"
    elif form == "bert_legacy":  # older exports: (1 - mask) * -10000, (B, 1, 1, S)
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.INT64, ["batch", "seq"]))
        nodes += [const("ax12", np.array([1, 2], np.int64)), const("onef", np.array(1.0, np.float32)),
                  const("big", np.array(-10000.0, np.float32)),
                  helper.make_node("Unsqueeze", ["mask", "ax12"], ["mu"]),
                  helper.make_node("Cast", ["mu"], ["mf"], to=TensorProto.FLOAT),
                  helper.make_node("Sub", ["onef", "mf"], ["inv"]),
                  helper.make_node("Mul", ["inv", "big"], ["madd"]),
                  helper.make_node("Add", ["scs", "madd"], ["scm"])]
        scores = "scm"
    elif form == "gpt2":  # causal: key j <= query i, from Range(0, S)
        nodes += [const("one_s", np.array(1, np.int64)), const("ax013", np.array([0, 1, 3], np.int64)),
                  const("ax012", np.array([0, 1, 2], np.int64)),
                  helper.make_node("Range", ["i0", "s", "one_s"], ["pos"]),
                  helper.make_node("Unsqueeze", ["pos", "ax013"], ["rows"]),
                  helper.make_node("Unsqueeze", ["pos", "ax012"], ["cols"]),
                  helper.make_node("LessOrEqual", ["cols", "rows"], ["causal"]),
                  helper.make_node("Where", ["causal", "zero", "lowest"], ["madd"]),
                  helper.make_node("Add", ["scs", "madd"], ["scm"])]
        scores = "scm"
    nodes += [helper.make_node("Softmax", [scores], ["p"], axis=-1)]
    p = "p"
    if form == "vit":  # the exporter's identity casts around the probabilities
        nodes += [helper.make_node("Cast", ["p"], ["p32"], to=TensorProto.FLOAT),
                  helper.make_node("Cast", ["p32"], ["pc"], to=TensorProto.FLOAT)]
        p = "pc"
    nodes += [helper.make_node("MatMul", [p, v4], ["o4"]),
              helper.make_node("Transpose", ["o4"], ["o3"], perm=[0, 2, 1, 3])]
    if form == "gpt2":  # the merge shape is read from the transposed product itself
        nodes += [helper.make_node("Shape", ["o3"], ["oshp"]),
                  helper.make_node("Gather", ["oshp", "i0"], ["ob"], axis=0),
                  helper.make_node("Gather", ["oshp", "i1"], ["os"], axis=0),
                  helper.make_node("Unsqueeze", ["ob", "ax0"], ["ob1"]),
                  helper.make_node("Unsqueeze", ["os", "ax0"], ["os1"]),
                  helper.make_node("Concat", ["ob1", "os1", "m1"], ["merge"], axis=0)]
    else:
        nodes += [const("d", np.array([D], np.int64)),
                  helper.make_node("Concat", ["b1", "s1", "d"], ["merge"], axis=0)]
    nodes.append(helper.make_node("Reshape", ["o3", "merge"], ["y"]))
    outs = [helper.make_empty_tensor_value_info(o) for o in outputs]
    g = helper.make_graph(nodes, "g", inputs, outs,
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def feeds_for(form, B, S, seed):
    rng = np.random.default_rng(seed)
    f = {"x": rand(rng, (B, S, D))}
    if form in ("bert", "bert_legacy"):
        mask = np.ones((B, S), np.int64)
        mask[0, S // 2:] = 0        # padding
        if B > 1:
            mask[-1, :] = 0         # a fully padded row: finite lowest scores, a uniform softmax
        f["mask"] = mask
    return f


@pytest.mark.parametrize("form", ["bert", "bert_legacy", "gpt2", "vit"])
def test_symbolic_export_fuses_and_follows_the_dims(form):
    m = model(form)
    data = m.SerializeToString()
    fused = kiln.InferenceSession(data, threads=2)
    ops = [n["op_type"] for n in fused.nodes()]
    assert ops.count("Attention") == 1 and "Softmax" not in ops, ops
    plain = kiln.InferenceSession(data, threads=2, opt_level=1)
    assert "Attention" not in [n["op_type"] for n in plain.nodes()]
    for i, (B, S) in enumerate([(1, 5), (3, 7), (2, 1), (1, 12), (3, 7)]):
        feeds = feeds_for(form, B, S, 100 + i)
        want = run_ort(m, feeds)
        got = fused.run(None, feeds)
        for k, (g, w) in enumerate(zip(got, want)):
            assert g.shape == w.shape
            assert_same(g, w, 1e-5, 1e-5, what=f"{form} output {k} at B={B} S={S}")


def other_length_mask_model():
    """BERT's form with the mask expanded over its own length ("other"), not the scores': nothing
    proves the two equal before a run."""
    m = model("bert")
    m.graph.input[1].type.tensor_type.shape.dim[1].dim_param = "other"
    for n in m.graph.node:  # expand over the mask's own length, not the scores'
        if n.op_type == "Concat" and n.output[0] == "mshape":
            n.input[3] = "ms1"
    extra = [helper.make_node("Shape", ["mask"], ["mshp"]),
             helper.make_node("Gather", ["mshp", "i1"], ["ms"], axis=0),
             helper.make_node("Unsqueeze", ["ms", "ax0"], ["ms1"])]
    for k, n in enumerate(extra):
        m.graph.node.insert(9 + k, n)
    return m


def test_mask_of_unproven_length_is_checked_at_run_time(capfd):
    """A mask whose length is only known at run time fuses, with the sizes checked by Add's rules
    when the node runs: the same results as onnxruntime where the lengths agree, and an error that
    names the node where they do not (onnxruntime's Add fails there too)."""
    m = other_length_mask_model()
    capfd.readouterr()
    s = kiln.InferenceSession(m.SerializeToString(), threads=2, verbose=True)
    log = capfd.readouterr().err
    assert [n["op_type"] for n in s.nodes()].count("Attention") == 1
    assert "checked at run time" in log, log
    for B, S in [(2, 6), (1, 3)]:
        feeds = feeds_for("bert", B, S, 5 + S)
        assert_same(s.run(None, feeds)[0], run_ort(m, feeds)[0], 1e-5, 1e-5)
    feeds = feeds_for("bert", 2, 6, 5)
    feeds["mask"] = feeds["mask"][:, :4]
    with pytest.raises(Exception):
        run_ort(m, feeds)
    with pytest.raises(kiln.KilnError, match=r"(?s)Attention.*does not broadcast onto the scores"):
        s.run(None, feeds)


def one_key_column_model():
    """A (B, 1, S, 1) mask: Add broadcasts it over the keys."""
    m = model("bert")
    m.graph.node.insert(0, const("ax13", np.array([1, 3], np.int64)))
    for n in m.graph.node:
        if n.op_type == "Concat" and n.output[0] == "mshape":
            n.input[3] = "one"               # (B, 1, S, 1)
        if n.op_type == "Unsqueeze" and n.output[0] == "mu":
            n.input[1] = "ax13"              # mask (B, S) -> (B, 1, S, 1)
    return m


def test_mask_of_one_key_column_is_not_fused(capfd):
    """The kernel would read a one-column mask as padded with -inf where Add broadcasts it, so it
    stays unfused (and right), and the verbose log says why."""
    m = one_key_column_model()
    capfd.readouterr()
    s = kiln.InferenceSession(m.SerializeToString(), threads=2, verbose=True)
    log = capfd.readouterr().err
    assert "Attention" not in [n["op_type"] for n in s.nodes()]
    assert "declined: mask shape" in log, log
    rng = np.random.default_rng(3)
    feeds = {"x": rand(rng, (2, 5, D)), "mask": np.ones((2, 5), np.int64)}
    feeds["mask"][0, 2:] = 0
    assert_same(s.run(None, feeds)[0], run_ort(m, feeds)[0], 1e-5, 1e-5)


def gpt2_past_model():
    """GPT-2 decoding as torch exports it with a KV cache: keys and values are Concat(past, new)
    along the sequence (each sum a fresh symbol), and the causal mask over the past and new
    positions is built from Shape ops, so none of its dims is known before a run."""
    nodes, inits = projections(11)
    nodes += [const("i2", np.array(2, np.int64)), const("ax013", np.array([0, 1, 3], np.int64)),
              const("ax012", np.array([0, 1, 2], np.int64))]
    nodes += [helper.make_node("Transpose", [p + "r"], [p + "4"], perm=[0, 2, 1, 3]) for p in "qkv"]
    nodes += [helper.make_node("Concat", ["past_k", "k4"], ["present_k"], axis=-2),
              helper.make_node("Concat", ["past_v", "v4"], ["present_v"], axis=-2),
              helper.make_node("Transpose", ["present_k"], ["kt"], perm=[0, 1, 3, 2]),
              helper.make_node("MatMul", ["q4", "kt"], ["sc"]),
              helper.make_node("Mul", ["sc", "scale"], ["scs"]),
              # query i (position past + i) sees keys j <= past + i
              helper.make_node("Shape", ["past_k"], ["pshp"]),
              helper.make_node("Gather", ["pshp", "i2"], ["past"], axis=0),
              helper.make_node("Add", ["past", "s"], ["total"]),
              helper.make_node("Range", ["past", "total", "i1"], ["qpos"]),
              helper.make_node("Range", ["i0", "total", "i1"], ["kpos"]),
              helper.make_node("Unsqueeze", ["qpos", "ax013"], ["rows"]),
              helper.make_node("Unsqueeze", ["kpos", "ax012"], ["cols"]),
              helper.make_node("LessOrEqual", ["cols", "rows"], ["causal"]),
              helper.make_node("Where", ["causal", "zero", "lowest"], ["madd"]),
              helper.make_node("Add", ["scs", "madd"], ["scm"]),
              helper.make_node("Softmax", ["scm"], ["p"], axis=-1),
              helper.make_node("MatMul", ["p", "present_v"], ["o4"]),
              helper.make_node("Transpose", ["o4"], ["o3"], perm=[0, 2, 1, 3]),
              const("d", np.array([D], np.int64)),
              helper.make_node("Concat", ["b1", "s1", "d"], ["merge"], axis=0),
              helper.make_node("Reshape", ["o3", "merge"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", "seq", D]),
              helper.make_tensor_value_info("past_k", TensorProto.FLOAT, ["batch", N, "past", H]),
              helper.make_tensor_value_info("past_v", TensorProto.FLOAT, ["batch", N, "past", H])]
    outs = [helper.make_empty_tensor_value_info(o) for o in ("y", "present_k", "present_v")]
    g = helper.make_graph(nodes, "g", inputs, outs,
                          initializer=[numpy_helper.from_array(v, k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def test_gpt2_with_kv_cache_fuses():
    """Decode steps (one new token), a prompt with an empty cache and speculative steps: one fused
    Attention, the same outputs and caches as onnxruntime at every past length."""
    m = gpt2_past_model()
    data = m.SerializeToString()
    s = kiln.InferenceSession(data, threads=2)
    ops = [n["op_type"] for n in s.nodes()]
    assert ops.count("Attention") == 1 and "Softmax" not in ops, ops
    rng = np.random.default_rng(21)
    for B, S, P in [(1, 1, 7), (2, 1, 30), (3, 5, 0), (1, 3, 12), (2, 1, 1), (1, 1, 7)]:
        feeds = {"x": rand(rng, (B, S, D)), "past_k": rand(rng, (B, N, P, H)),
                 "past_v": rand(rng, (B, N, P, H))}
        want = run_ort(m, feeds)
        for k, (g, w) in enumerate(zip(s.run(None, feeds), want)):
            assert g.shape == w.shape
            assert_same(g, w, 1e-5, 1e-5, what=f"output {k} at B={B} S={S} past={P}")


def test_mask_that_may_overflow_needs_the_guard(capfd):
    """(1 - mask) * -3e38 with an int64 mask can reach -inf (mask values are not bounded to 0/1), so
    without a NaN guard the fusion is declined, with the reason in the log."""
    m = model("bert_legacy")
    for n in m.graph.node:
        if n.op_type == "Constant" and n.output[0] == "big":
            n.attribute[0].t.CopyFrom(numpy_helper.from_array(np.array(-3e38, np.float32), "big"))
    capfd.readouterr()
    s = kiln.InferenceSession(m.SerializeToString(), threads=2, verbose=True)
    log = capfd.readouterr().err
    assert "Attention" not in [n["op_type"] for n in s.nodes()]
    assert "no NaN guard" in log, log
    feeds = feeds_for("bert_legacy", 2, 6, 9)
    assert_same(s.run(None, feeds)[0], run_ort(m, feeds)[0], 1e-5, 1e-5)
