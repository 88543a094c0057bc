"""Models with symbolic dimensions for the shape-specialisation tests (tests/test_specialize.py and
tests/gpu/test_specialize.py): a BERT-like encoder exported the way torch's exporter writes shape
arithmetic (Shape -> Gather -> Unsqueeze -> Concat -> Reshape on batch and seq)."""
import numpy as np
from onnx import TensorProto as TP, helper, numpy_helper


def _w(rng, name, *shape, scale=0.1):
    return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)


def _c(name, value, dtype=np.int64):
    return numpy_helper.from_array(np.asarray(value, dtype), name)


def bert_like(layers=2, hidden=64, heads=4, vocab=100, seed=0):
    """Inputs input_ids and attention_mask, int64 [batch, seq]; output last_hidden float32."""
    rng = np.random.default_rng(seed)
    hd = hidden // heads
    n, inits = [], [_w(rng, "emb", vocab, hidden, scale=0.5), _w(rng, "pos", 512, hidden, scale=0.5),
                    _c("i0", 0), _c("i1", 1), _c("ax0", [0]), _c("ax12", [1, 2]), _c("heads_hd", [heads, hd]),
                    _c("hidden1", [hidden]), numpy_helper.from_array(np.array(1.0, np.float32), "one"),
                    numpy_helper.from_array(np.array(-10000.0, np.float32), "neg"),
                    numpy_helper.from_array(np.array(hd ** -0.5, np.float32), "scale"),
                    numpy_helper.from_array(np.array(2 ** -0.5, np.float32), "rsqrt2"),
                    numpy_helper.from_array(np.array(0.5, np.float32), "half")]
    node = lambda op, i, o, **kw: n.append(helper.make_node(op, i, o, **kw))  # noqa: E731
    # embeddings: word + position (positions from the sequence length)
    node("Shape", ["input_ids"], ["ids_shape"])
    node("Gather", ["ids_shape", "i0"], ["B"], axis=0)
    node("Gather", ["ids_shape", "i1"], ["S"], axis=0)
    node("Unsqueeze", ["B", "ax0"], ["B1"])
    node("Unsqueeze", ["S", "ax0"], ["S1"])
    node("Range", ["i0", "S", "i1"], ["positions"])
    node("Gather", ["emb", "input_ids"], ["we"])
    node("Gather", ["pos", "positions"], ["pe"])
    node("Add", ["we", "pe"], ["x0"])
    # mask: (1 - mask) * -10000 as [batch, 1, 1, seq]
    node("Unsqueeze", ["attention_mask", "ax12"], ["m4"])
    node("Cast", ["m4"], ["m4f"], to=TP.FLOAT)
    node("Sub", ["one", "m4f"], ["m_inv"])
    node("Mul", ["m_inv", "neg"], ["madd"])
    node("Concat", ["B1", "S1", "heads_hd"], ["split_shape"], axis=0)
    node("Concat", ["B1", "S1", "hidden1"], ["merge_shape"], axis=0)
    x = "x0"
    for L in range(layers):
        p = "l%d_" % L
        for nm in ("g1", "g2"):
            inits.append(numpy_helper.from_array((1 + 0.1 * rng.standard_normal(hidden)).astype(np.float32), p + nm))
        inits += [_w(rng, p + "b1n", hidden), _w(rng, p + "b2n", hidden)]
        for nm in "qkvo":
            inits += [_w(rng, p + "w" + nm, hidden, hidden), _w(rng, p + "b" + nm, hidden)]
        inits += [_w(rng, p + "wf1", hidden, 4 * hidden), _w(rng, p + "bf1", 4 * hidden),
                  _w(rng, p + "wf2", 4 * hidden, hidden), _w(rng, p + "bf2", hidden)]
        for nm in "qkv":
            node("MatMul", [x, p + "w" + nm], [p + nm + "m"])
            node("Add", [p + nm + "m", p + "b" + nm], [p + nm])
            node("Reshape", [p + nm, "split_shape"], [p + nm + "r"])
        node("Transpose", [p + "qr"], [p + "q4"], perm=[0, 2, 1, 3])
        node("Transpose", [p + "kr"], [p + "k4"], perm=[0, 2, 3, 1])
        node("Transpose", [p + "vr"], [p + "v4"], perm=[0, 2, 1, 3])
        node("MatMul", [p + "q4", p + "k4"], [p + "sc"])
        node("Mul", [p + "sc", "scale"], [p + "scs"])
        node("Add", [p + "scs", "madd"], [p + "scm"])
        node("Softmax", [p + "scm"], [p + "pr"], axis=-1)
        node("MatMul", [p + "pr", p + "v4"], [p + "o4"])
        node("Transpose", [p + "o4"], [p + "o3"], perm=[0, 2, 1, 3])
        node("Reshape", [p + "o3", "merge_shape"], [p + "ctx"])
        node("MatMul", [p + "ctx", p + "wo"], [p + "om"])
        node("Add", [p + "om", p + "bo"], [p + "ob"])
        node("Add", [p + "ob", x], [p + "res1"])
        node("LayerNormalization", [p + "res1", p + "g1", p + "b1n"], [p + "ln1"], axis=-1, epsilon=1e-5)
        node("MatMul", [p + "ln1", p + "wf1"], [p + "f1m"])
        node("Add", [p + "f1m", p + "bf1"], [p + "f1"])
        node("Mul", [p + "f1", "rsqrt2"], [p + "gs"])  # exact GELU as the exporter writes it
        node("Erf", [p + "gs"], [p + "ge"])
        node("Add", [p + "ge", "one"], [p + "ge1"])
        node("Mul", [p + "f1", p + "ge1"], [p + "gm"])
        node("Mul", [p + "gm", "half"], [p + "gelu"])
        node("MatMul", [p + "gelu", p + "wf2"], [p + "f2m"])
        node("Add", [p + "f2m", p + "bf2"], [p + "f2"])
        node("Add", [p + "f2", p + "ln1"], [p + "res2"])
        node("LayerNormalization", [p + "res2", p + "g2", p + "b2n"], [p + "ln2"], axis=-1, epsilon=1e-5)
        x = p + "ln2"
    node("Identity", [x], ["last_hidden"])
    g = helper.make_graph(n, "bert_like", [helper.make_tensor_value_info("input_ids", TP.INT64, ["batch", "seq"]),
                                           helper.make_tensor_value_info("attention_mask", TP.INT64, ["batch", "seq"])],
                          [helper.make_tensor_value_info("last_hidden", TP.FLOAT, ["batch", "seq", hidden])],
                          initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def bert_feeds(rng, batch, seq, vocab=100):
    ids = rng.integers(0, vocab, (batch, seq)).astype(np.int64)
    mask = np.ones((batch, seq), np.int64)
    mask[0, seq - min(2, seq - 1):] = 0  # a padded row
    return {"input_ids": ids, "attention_mask": mask}
