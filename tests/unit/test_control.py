"""Control flow against onnxruntime: If (tensors, sequences, optionals, nested, outer scope), Loop
(for / while / both / zero trips, sequence-carried values, scan outputs, opsets 11-21), Scan (opset 8
batched with sequence_lens, opset 9+ axes and directions) and SequenceMap."""
import os
import sys

import numpy as np
import pytest
from onnx import TensorProto, helper

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from util import assert_same, kiln, np_to_onnx_dtype, rand, run_kiln, run_ort  # noqa: E402

F, I64, B = TensorProto.FLOAT, TensorProto.INT64, TensorProto.BOOL
T = helper.make_tensor_value_info
N = helper.make_node


def vi(name, arr):
    return T(name, np_to_onnx_dtype(arr.dtype), arr.shape)


def model(nodes, feeds, outputs, opset=18, inits=None):
    g = helper.make_graph(nodes, "main", [vi(k, v) for k, v in feeds.items()], outputs,
                          initializer=inits or [])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def same_value(got, want, what, rtol=1e-5, atol=1e-6):
    if want is None:
        assert got is None, f"{what}: expected an empty optional"
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{what}: sequence length"
        for i, (g, w) in enumerate(zip(got, want)):
            assert_same(g, w, rtol, atol, what=f"{what}[{i}]")
    else:
        assert_same(got, want, rtol, atol, what=what)


def compare(m, feeds, **tol):
    want = run_ort(m, feeds)
    got = run_kiln(m, feeds)
    assert len(got) == len(want)
    for i, (g, w) in enumerate(zip(got, want)):
        same_value(g, w, f"output {i}", **tol)
    return got


def const(name, arr):
    return N("Constant", [], [name], value=helper.make_tensor(name + "_v", np_to_onnx_dtype(arr.dtype),
                                                                 arr.shape, arr.flatten().tolist()))


# ---------------------------------------------------------------- If

def branches(then_nodes, then_outs, else_nodes, else_outs):
    return dict(then_branch=helper.make_graph(then_nodes, "then", [], then_outs),
                else_branch=helper.make_graph(else_nodes, "else", [], else_outs))


@pytest.mark.parametrize("flag", [True, False])
@pytest.mark.parametrize("opset", [11, 13, 16, 21])
def test_if_outer_scope(flag, opset):
    rng = np.random.default_rng(1)
    feeds = {"c": np.array([flag]), "x": rand(rng, (3, 4)), "y": rand(rng, (3, 4))}
    attrs = branches([N("Add", ["x", "y"], ["t"])], [T("t", F, [3, 4])],
                     [N("Sub", ["x", "y"], ["e"]), N("Mul", ["e", "x"], ["e2"])], [T("e2", F, [3, 4])])
    m = model([N("If", ["c"], ["z"], **attrs)], feeds, [T("z", F, None)], opset=opset)
    got = compare(m, feeds)
    want = feeds["x"] + feeds["y"] if flag else (feeds["x"] - feeds["y"]) * feeds["x"]
    np.testing.assert_allclose(got[0], want, rtol=1e-6)


@pytest.mark.parametrize("flag", [True, False])
def test_if_branch_shapes_differ(flag):
    rng = np.random.default_rng(2)
    feeds = {"c": np.array([flag]), "x": rand(rng, (2, 3)), "y": rand(rng, (5,))}
    attrs = branches([N("Identity", ["x"], ["t"]), N("Identity", ["y"], ["t2"])],
                     [T("t", F, None), T("t2", F, None)],
                     [N("Identity", ["y"], ["e"]), N("Neg", ["x"], ["e2"])], [T("e", F, None), T("e2", F, None)])
    m = model([N("If", ["c"], ["z", "w"], **attrs)], feeds, [T("z", F, None), T("w", F, None)])
    compare(m, feeds)


@pytest.mark.parametrize("flag", [True, False])
def test_if_sequence(flag):
    rng = np.random.default_rng(3)
    feeds = {"c": np.array([flag]), "x": rand(rng, (4, 2)), "y": rand(rng, (1, 2))}
    seq_out = [helper.make_tensor_sequence_value_info("s", F, None)]
    attrs = branches([N("SequenceConstruct", ["x", "y"], ["s"])], seq_out,
                     [N("SplitToSequence", ["x"], ["s"], keepdims=0)], seq_out)
    m = model([N("If", ["c"], ["z"], **attrs)], feeds, [helper.make_tensor_sequence_value_info("z", F, None)],
              opset=13)
    got = compare(m, feeds)
    assert len(got[0]) == (2 if flag else 4)


@pytest.mark.parametrize("flag", [True, False])
def test_if_optional(flag):
    rng = np.random.default_rng(4)
    feeds = {"c": np.array([flag]), "x": rand(rng, (3,))}
    opt_t = helper.make_optional_type_proto(helper.make_tensor_type_proto(F, None))
    out = [helper.make_value_info("o", opt_t)]
    attrs = branches([N("Optional", ["x"], ["o"])], out,
                     [N("Optional", [], ["o"], type=helper.make_tensor_type_proto(F, None))], out)
    nodes = [N("If", ["c"], ["z"], **attrs), N("OptionalHasElement", ["z"], ["has"])]
    m = model(nodes, feeds, [helper.make_value_info("z", opt_t), T("has", B, [])], opset=16)
    got = compare(m, feeds)
    assert bool(got[1]) == flag


@pytest.mark.parametrize("a,b", [(True, True), (True, False), (False, True)])
def test_if_nested(a, b):
    rng = np.random.default_rng(5)
    feeds = {"c1": np.array([a]), "c2": np.array([b]), "x": rand(rng, (2, 2))}
    inner = branches([N("Neg", ["x"], ["i1"])], [T("i1", F, None)],
                     [N("Abs", ["x"], ["i2"])], [T("i2", F, None)])
    outer = branches([N("If", ["c2"], ["o1"], **inner)], [T("o1", F, None)],
                     [N("Identity", ["x"], ["o2"])], [T("o2", F, None)])
    m = model([N("If", ["c1"], ["z"], **outer)], feeds, [T("z", F, None)])
    compare(m, feeds)


def test_if_bad_cond():
    rng = np.random.default_rng(6)
    feeds = {"c": np.array([True, False]), "x": rand(rng, (2,))}
    attrs = branches([N("Identity", ["x"], ["t"])], [T("t", F, None)],
                     [N("Neg", ["x"], ["e"])], [T("e", F, None)])
    m = model([N("If", ["c"], ["z"], **attrs)], feeds, [T("z", F, None)])
    with pytest.raises(Exception, match="single bool"):
        run_kiln(m, feeds)


# ---------------------------------------------------------------- Loop

def loop_body(extra_nodes=(), scan=True, cond_expr=None, carried_type=F):
    """Body: acc <- acc + x * (iter + 1); optionally scans acc; cond out = cond in, or cond_expr."""
    nodes = [N("Cast", ["i"], ["i_f"], to=F), N("Add", ["i_f", "one"], ["i1"]),
             N("Mul", ["x", "i1"], ["step"]), N("Add", ["acc_in", "step"], ["acc_out"])]
    nodes += list(extra_nodes)
    if cond_expr:
        nodes += cond_expr
    else:
        nodes.append(N("Identity", ["cond_in"], ["cond_out"]))
    outs = [T("cond_out", B, []), T("acc_out", carried_type, None)]
    if scan:
        nodes.append(N("Identity", ["acc_out"], ["scan_out"]))
        outs.append(T("scan_out", F, None))
    ins = [T("i", I64, []), T("cond_in", B, []), T("acc_in", carried_type, None)]
    return helper.make_graph(nodes, "body", ins, outs)


ONE = helper.make_tensor("one", F, [], [1.0])


@pytest.mark.parametrize("trips", [0, 1, 4])
@pytest.mark.parametrize("opset", [11, 13, 16, 19, 21])
def test_loop_for(trips, opset):
    rng = np.random.default_rng(10 + trips)
    feeds = {"M": np.array([trips], np.int64), "x": rand(rng, (2, 3)), "a0": rand(rng, (2, 3))}
    nodes = [const("Mscalar_shape", np.array([], np.int64)),
             N("Reshape", ["M", "Mscalar_shape"], ["Ms"]),
             N("Loop", ["Ms", "", "a0"], ["acc", "accs"], body=loop_body())]
    m = model(nodes, feeds, [T("acc", F, None), T("accs", F, None)], opset=opset, inits=[ONE])
    got = compare(m, feeds)
    assert got[1].shape[0] == trips


def test_loop_zero_trips_declared_shape():
    """No iteration: the stacked output takes its element shape from the body's declaration."""
    rng = np.random.default_rng(15)
    feeds = {"x": rand(rng, (2, 3)), "a0": rand(rng, (2, 3))}
    body = loop_body()
    body.output[2].CopyFrom(T("scan_out", F, [2, 3]))
    nodes = [const("Ms", np.array(0, np.int64)), N("Loop", ["Ms", "", "a0"], ["acc", "accs"], body=body)]
    m = model(nodes, feeds, [T("acc", F, None), T("accs", F, None)], inits=[ONE])
    got = compare(m, feeds)
    assert got[1].shape == (0, 2, 3)


def test_loop_body_cond_without_cond_input():
    """Without a 'cond' input the body's condition still ends the loop (as in onnxruntime)."""
    rng = np.random.default_rng(17)
    feeds = {"x": rand(rng, (2,)), "a0": rand(rng, (2,))}
    never = [N("Not", ["cond_in"], ["cond_out"])]
    nodes = [const("Ms", np.array(3, np.int64)),
             N("Loop", ["Ms", "", "a0"], ["acc", "accs"], body=loop_body(cond_expr=never))]
    m = model(nodes, feeds, [T("acc", F, None), T("accs", F, None)], inits=[ONE])
    got = compare(m, feeds)
    assert got[1].shape[0] == 1


def test_loop_negative_trip_count():
    rng = np.random.default_rng(16)
    feeds = {"x": rand(rng, (2,)), "a0": rand(rng, (2,))}
    nodes = [const("Ms", np.array(-3, np.int64)), N("Loop", ["Ms", "", "a0"], ["acc", "accs"], body=loop_body())]
    m = model(nodes, feeds, [T("acc", F, None), T("accs", F, None)], inits=[ONE])
    got = compare(m, feeds)
    assert_same(got[0], feeds["a0"], what="carried value")


def test_loop_while():
    rng = np.random.default_rng(20)
    feeds = {"x": rand(rng, (3,), low=0.5, high=1.0), "a0": rand(rng, (3,), low=0, high=0.1),
             "limit": np.array([6.0], np.float32), "c0": np.array([True])}
    cond = [N("ReduceSum", ["acc_out"], ["tot"], keepdims=0), N("Less", ["tot", "limit_s"], ["cond_out"])]
    nodes = [const("sh", np.array([], np.int64)), N("Reshape", ["limit", "sh"], ["limit_s"]),
             N("Reshape", ["c0", "sh"], ["c0s"]),
             N("Loop", ["", "c0s", "a0"], ["acc", "accs"], body=loop_body(cond_expr=cond))]
    m = model(nodes, feeds, [T("acc", F, None), T("accs", F, None)], inits=[ONE])
    got = compare(m, feeds)
    assert 0 < got[1].shape[0] < 20


@pytest.mark.parametrize("trips,start", [(10, True), (2, True), (5, False)])
def test_loop_for_and_while(trips, start):
    rng = np.random.default_rng(30)
    feeds = {"M": np.array([trips], np.int64), "c0": np.array([start]), "x": rand(rng, (4,), low=0.2, high=0.5),
             "a0": rand(rng, (4,), low=0, high=0.1), "limit": np.array([2.0], np.float32)}
    cond = [N("ReduceSum", ["acc_out"], ["tot"], keepdims=0), N("Less", ["tot", "limit_s"], ["cond_out"])]
    nodes = [const("sh", np.array([], np.int64)), N("Reshape", ["limit", "sh"], ["limit_s"]),
             N("Reshape", ["M", "sh"], ["Ms"]), N("Reshape", ["c0", "sh"], ["c0s"]),
             N("Loop", ["Ms", "c0s", "a0"], ["acc", "accs"], body=loop_body(cond_expr=cond))]
    m = model(nodes, feeds, [T("acc", F, None), T("accs", F, None)], inits=[ONE])
    compare(m, feeds)


def test_loop_sequence_carried():
    """opset 13+: a sequence as loop-carried value, grown by SequenceInsert each iteration."""
    rng = np.random.default_rng(40)
    feeds = {"M": np.array([3], np.int64), "x": rand(rng, (2,))}
    body = helper.make_graph(
        [N("Cast", ["i"], ["i_f"], to=F), N("Mul", ["x", "i_f"], ["item"]),
         N("SequenceInsert", ["s_in", "item"], ["s_out"]), N("Identity", ["cond_in"], ["cond_out"])],
        "body", [T("i", I64, []), T("cond_in", B, []), helper.make_tensor_sequence_value_info("s_in", F, None)],
        [T("cond_out", B, []), helper.make_tensor_sequence_value_info("s_out", F, None)])
    nodes = [const("sh", np.array([], np.int64)), N("Reshape", ["M", "sh"], ["Ms"]),
             N("SequenceEmpty", [], ["s0"], dtype=F),
             N("Loop", ["Ms", "", "s0"], ["s"], body=body),
             N("ConcatFromSequence", ["s"], ["cat"], axis=0)]
    m = model(nodes, feeds, [helper.make_tensor_sequence_value_info("s", F, None), T("cat", F, None)], opset=13)
    got = compare(m, feeds)
    assert len(got[0]) == 3


def test_loop_scan_shape_change_fails():
    feeds = {"M": np.array([3], np.int64)}
    body = helper.make_graph(
        [N("Add", ["i", "one64"], ["n"]), N("Reshape", ["n", "shape1"], ["n1"]),
         N("ConstantOfShape", ["n1"], ["z"]), N("Identity", ["cond_in"], ["cond_out"])],
        "body", [T("i", I64, []), T("cond_in", B, [])], [T("cond_out", B, []), T("z", F, None)])
    nodes = [const("sh", np.array([], np.int64)), const("one64", np.array(1, np.int64)),
             const("shape1", np.array([1], np.int64)), N("Reshape", ["M", "sh"], ["Ms"]),
             N("Loop", ["Ms", ""], ["zs"], body=body)]
    m = model(nodes, feeds, [T("zs", F, None)])
    with pytest.raises(Exception, match="scan output 0"):
        run_kiln(m, feeds)


# ---------------------------------------------------------------- Scan

def sum_body(n_scan=1):
    """states: s (running sum); scan inputs x_k; outputs: s', y = s' * 2 (+ x0 when 2 inputs)."""
    nodes = [N("Add", ["s_in", "x0"], ["s_out"]), N("Add", ["s_out", "s_out"], ["y0"])]
    ins = [T("s_in", F, None), T("x0", F, None)]
    outs = [T("s_out", F, None), T("y0", F, None)]
    if n_scan == 2:
        nodes.append(N("Mul", ["x1", "s_out"], ["y1"]))
        ins.append(T("x1", F, None))
        outs.append(T("y1", F, None))
    return helper.make_graph(nodes, "body", ins, outs)


@pytest.mark.parametrize("opset", [9, 11, 16, 19, 21])
def test_scan_sum(opset):
    rng = np.random.default_rng(50)
    feeds = {"s0": rand(rng, (2,)), "xs": rand(rng, (5, 2))}
    m = model([N("Scan", ["s0", "xs"], ["s", "ys"], body=sum_body(), num_scan_inputs=1)], feeds,
              [T("s", F, None), T("ys", F, None)], opset=opset)
    got = compare(m, feeds)
    np.testing.assert_allclose(got[0], feeds["s0"] + feeds["xs"].sum(0), rtol=1e-5)


@pytest.mark.parametrize("in_axes,in_dirs,out_axes,out_dirs", [
    ([1, 0], [0, 1], [0, 1], [1, 0]),
    ([1, 1], [1, 1], [-1, 0], [0, 1]),
    ([0, -2], [0, 0], [1, -2], [1, 1]),
])
def test_scan_axes_directions(in_axes, in_dirs, out_axes, out_dirs):
    rng = np.random.default_rng(51)
    feeds = {"s0": rand(rng, (3,)), "xa": rand(rng, (4, 3) if in_axes[0] in (0, -2) else (3, 4)),
             "xb": rand(rng, (4, 3) if in_axes[1] in (0, -2) else (3, 4))}
    if in_axes[0] in (1, -1):
        feeds["xa"] = rand(rng, (3, 4))
    m = model([N("Scan", ["s0", "xa", "xb"], ["s", "y0", "y1"], body=sum_body(2), num_scan_inputs=2,
                 scan_input_axes=in_axes, scan_input_directions=in_dirs,
                 scan_output_axes=out_axes, scan_output_directions=out_dirs)],
              feeds, [T("s", F, None), T("y0", F, None), T("y1", F, None)], opset=16)
    compare(m, feeds)


def test_scan_empty_sequence():
    rng = np.random.default_rng(52)
    feeds = {"s0": rand(rng, (2,)), "xs": np.zeros((0, 2), np.float32)}
    m = model([N("Scan", ["s0", "xs"], ["s", "ys"], body=sum_body(), num_scan_inputs=1)], feeds,
              [T("s", F, None), T("ys", F, None)], opset=16)
    got = run_kiln(m, feeds)
    assert_same(got[0], feeds["s0"], what="state")
    assert got[1].shape[0] == 0


@pytest.mark.parametrize("lens", [None, [4, 2, 3]])
def test_scan8_batched(lens):
    rng = np.random.default_rng(53)
    feeds = {"s0": rand(rng, (3, 2)), "xs": rand(rng, (3, 4, 2))}
    ins = ["", "s0", "xs"]
    if lens is not None:
        feeds["lens"] = np.array(lens, np.int64)
        ins[0] = "lens"
    m = model([N("Scan", ins, ["s", "ys"], body=sum_body(), num_scan_inputs=1, directions=[1])], feeds,
              [T("s", F, None), T("ys", F, None)], opset=8)
    compare(m, feeds)



def test_scan8_padding_is_zero_on_every_run():
    """Positions past an entry's sequence length are zeros on later runs too, whose outputs come
    from memory the earlier runs left behind (the arena is not cleared between runs)."""
    rng = np.random.default_rng(55)
    feeds = {"lens": np.array([1, 4, 2], np.int64), "s0": rand(rng, (3, 2)), "xs": rand(rng, (3, 4, 2))}
    m = model([N("Scan", ["lens", "s0", "xs"], ["s", "ys"], body=sum_body(), num_scan_inputs=1, directions=[1]),
                N("Mul", ["ys", "ys"], ["y2"])], feeds, [T("s", F, None), T("y2", F, None)], opset=8)
    want = run_ort(m, feeds)
    sess = kiln.InferenceSession(m.SerializeToString())
    for run in range(3):
        for i, (g, w) in enumerate(zip(sess.run(None, feeds), want)):
            same_value(g, w, f"run {run} output {i}")


def test_scan_mismatched_lengths_fail():
    rng = np.random.default_rng(54)
    feeds = {"s0": rand(rng, (3,)), "xa": rand(rng, (4, 3)), "xb": rand(rng, (5, 3))}
    m = model([N("Scan", ["s0", "xa", "xb"], ["s", "y0", "y1"], body=sum_body(2), num_scan_inputs=2)],
              feeds, [T("s", F, None), T("y0", F, None), T("y1", F, None)], opset=16)
    with pytest.raises(Exception, match="scan input 1"):
        run_kiln(m, feeds)


# ---------------------------------------------------------------- SequenceMap

def test_sequence_map_seq_and_tensor():
    rng = np.random.default_rng(60)
    feeds = {"a": rand(rng, (2, 3)), "b": rand(rng, (4, 3)), "t": rand(rng, (3,))}
    body = helper.make_graph([N("Add", ["e", "tt"], ["o1"]), N("Shape", ["e"], ["o2"])], "body",
                             [T("e", F, None), T("tt", F, None)], [T("o1", F, None), T("o2", I64, None)])
    nodes = [N("SequenceConstruct", ["a", "b"], ["s"]), N("SequenceMap", ["s", "t"], ["r1", "r2"], body=body)]
    m = model(nodes, feeds, [helper.make_tensor_sequence_value_info("r1", F, None),
                             helper.make_tensor_sequence_value_info("r2", I64, None)], opset=17)
    got = compare(m, feeds)
    assert [tuple(x) for x in got[1]] == [(2, 3), (4, 3)]


def test_sequence_map_two_sequences():
    rng = np.random.default_rng(61)
    feeds = {"a": rand(rng, (2,)), "b": rand(rng, (5,)), "c": rand(rng, (2,)), "d": rand(rng, (5,))}
    body = helper.make_graph([N("Mul", ["e", "f"], ["o"])], "body", [T("e", F, None), T("f", F, None)],
                             [T("o", F, None)])
    nodes = [N("SequenceConstruct", ["a", "b"], ["s1"]), N("SequenceConstruct", ["c", "d"], ["s2"]),
             N("SequenceMap", ["s1", "s2"], ["r"], body=body)]
    m = model(nodes, feeds, [helper.make_tensor_sequence_value_info("r", F, None)], opset=17)
    compare(m, feeds)


def test_sequence_map_length_mismatch_fails():
    rng = np.random.default_rng(62)
    feeds = {"a": rand(rng, (2,)), "b": rand(rng, (5,)), "c": rand(rng, (2,))}
    body = helper.make_graph([N("Mul", ["e", "f"], ["o"])], "body", [T("e", F, None), T("f", F, None)],
                             [T("o", F, None)])
    nodes = [N("SequenceConstruct", ["a", "b"], ["s1"]), N("SequenceConstruct", ["c"], ["s2"]),
             N("SequenceMap", ["s1", "s2"], ["r"], body=body)]
    m = model(nodes, feeds, [helper.make_tensor_sequence_value_info("r", F, None)], opset=17)
    with pytest.raises(Exception, match="1 items but input 0 has 2"):
        run_kiln(m, feeds)
