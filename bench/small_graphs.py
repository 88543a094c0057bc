#!/usr/bin/env python3
"""Small graphs where the runtime's own costs dominate: a Loop of 1000 iterations of a small body,
nested If subgraphs, a Scan of 200 steps, and a chain of 200 tiny Adds. kiln and onnxruntime side by
side (1 intra-op thread, each engine in its own process), median latency of one run.

    python3 bench/small_graphs.py [--runs N] [--out bench/results/small_graphs.md]
    KILN_LIBRARY=/path/to/other/libkiln.so python3 bench/small_graphs.py --engine kiln   # one column

The model builders are shared with tests/test_small_graphs.py."""
import argparse
import json
import os
import subprocess
import sys
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
W = 64  # width of the small tensors


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, shape, dt=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, dt, shape)


def loop_model(trips=1000, width=W):
    """Loop of `trips` iterations: x = tanh(x * 0.5 + c) + i/1000, and a stacked scan output."""
    rng = np.random.default_rng(11)
    c = numpy_helper.from_array(rng.standard_normal((1, width)).astype(np.float32), "c")
    half = numpy_helper.from_array(np.array(0.5, np.float32), "half")
    milli = numpy_helper.from_array(np.array(1e-3, np.float32), "milli")
    body = helper.make_graph(
        [helper.make_node("Mul", ["x_in", "half"], ["b1"]),
         helper.make_node("Add", ["b1", "c"], ["b2"]),
         helper.make_node("Tanh", ["b2"], ["b3"]),
         helper.make_node("Cast", ["i"], ["fi"], to=TensorProto.FLOAT),
         helper.make_node("Mul", ["fi", "milli"], ["fi2"]),
         helper.make_node("Add", ["b3", "fi2"], ["x_out"]),
         helper.make_node("ReduceSum", ["x_out"], ["s"], keepdims=0),
         helper.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [_vi("i", [], TensorProto.INT64), _vi("cond_in", [], TensorProto.BOOL), _vi("x_in", [1, width])],
        [_vi("cond_out", [], TensorProto.BOOL), _vi("x_out", [1, width]), _vi("s", [])])
    M = numpy_helper.from_array(np.array(trips, np.int64), "M")
    nodes = [helper.make_node("Loop", ["M", "", "x"], ["y", "sums"], body=body)]
    return _model(nodes, [_vi("x", [1, width])], [_vi("y", [1, width]), _vi("sums", [trips])],
                  [M, c, half, milli])


def _branch(name, x, ops, out):
    """A subgraph reading outer value x: a few elementwise ops."""
    nodes, prev = [], x
    for k, op in enumerate(ops):
        o = out if k == len(ops) - 1 else f"{name}_{k}"
        if op in ("Add", "Mul", "Sub"):
            nodes.append(helper.make_node(op, [prev, "k"], [o]))
        else:
            nodes.append(helper.make_node(op, [prev], [o]))
        prev = o
    return helper.make_graph(nodes, name, [], [_vi(out, [1, W])])


def nested_if_model(depth=3):
    """If inside If inside If ...: each level picks a branch by its own condition input and runs
    a few ops; the inner level's result flows out through every level."""
    inner = None
    for level in range(depth, 0, -1):
        t_ops = ["Mul", "Tanh", "Add"]
        then_nodes = _branch(f"then{level}", "x", t_ops, f"t{level}").node
        else_g = _branch(f"else{level}", "x", ["Sub", "Sigmoid"], f"e{level}")
        if inner is not None:
            # then-branch: its own ops, then the inner If on the result
            then_nodes = list(then_nodes) + [
                helper.make_node("If", [f"c{level + 1}"], [f"r{level + 1}"], then_branch=inner[0],
                                 else_branch=inner[1]),
                helper.make_node("Add", [f"t{level}", f"r{level + 1}"], [f"o{level}"])]
            then_g = helper.make_graph(then_nodes, f"then{level}", [], [_vi(f"o{level}", [1, W])])
            else_g = helper.make_graph(list(else_g.node) + [helper.make_node("Identity", [f"e{level}"], [f"o{level}e"])],
                                       f"else{level}", [], [_vi(f"o{level}e", [1, W])])
        else:
            then_g = helper.make_graph(then_nodes, f"then{level}", [], [_vi(f"t{level}", [1, W])])
        inner = (then_g, else_g)
    k = numpy_helper.from_array(np.full((1, W), 0.25, np.float32), "k")
    nodes = [helper.make_node("If", ["c1"], ["y"], then_branch=inner[0], else_branch=inner[1])]
    ins = [_vi("x", [1, W])] + [_vi(f"c{level}", [], TensorProto.BOOL) for level in range(1, depth + 1)]
    return _model(nodes, ins, [_vi("y", [1, W])], [k])


def scan_model(steps=200, width=W):
    """Scan over `steps` rows: state = tanh(state + row) * 0.9, each step's state stacked."""
    body = helper.make_graph(
        [helper.make_node("Add", ["st_in", "row"], ["a"]),
         helper.make_node("Tanh", ["a"], ["b"]),
         helper.make_node("Mul", ["b", "g"], ["st_out"]),
         helper.make_node("Identity", ["st_out"], ["row_out"])],
        "scan_body", [_vi("st_in", [width]), _vi("row", [width])], [_vi("st_out", [width]), _vi("row_out", [width])])
    g = numpy_helper.from_array(np.full(width, 0.9, np.float32), "g")
    nodes = [helper.make_node("Scan", ["s0", "xs"], ["sN", "ys"], body=body, num_scan_inputs=1)]
    return _model(nodes, [_vi("s0", [width]), _vi("xs", [steps, width])], [_vi("sN", [width]), _vi("ys", [steps, width])], [g])


def chain_model(n=200, width=16):
    c = numpy_helper.from_array(np.full((1, width), 1e-3, np.float32), "c")
    nodes = [helper.make_node("Add", ["x" if i == 0 else f"t{i}", "c"], ["y" if i == n - 1 else f"t{i + 1}"])
             for i in range(n)]
    return _model(nodes, [_vi("x", [1, width])], [_vi("y", [1, width])], [c])


def rnn_model(cell="LSTM", S=100, I=64, H=128):
    """A bidirectional LSTM or GRU over S steps of batch 1: its per-step recurrent products."""
    rng = np.random.default_rng(13)
    G = 4 if cell == "LSTM" else 3
    W = numpy_helper.from_array((rng.standard_normal((2, G * H, I)) * 0.1).astype(np.float32), "W")
    R = numpy_helper.from_array((rng.standard_normal((2, G * H, H)) * 0.1).astype(np.float32), "R")
    Bi = numpy_helper.from_array((rng.standard_normal((2, 2 * G * H)) * 0.1).astype(np.float32), "B")
    nodes = [helper.make_node(cell, ["x", "W", "R", "B"], ["y", "yh"], hidden_size=H, direction="bidirectional")]
    return _model(nodes, [_vi("x", [S, 1, I])], [_vi("y", [S, 2, 1, H]), _vi("yh", [2, 1, H])], [W, R, Bi])


def feeds(name, seed=0):
    rng = np.random.default_rng(seed)
    if name == "loop":
        return {"x": rng.standard_normal((1, W)).astype(np.float32)}
    if name == "nested_if":
        f = {"x": rng.standard_normal((1, W)).astype(np.float32)}
        for level in range(1, 4):
            f[f"c{level}"] = np.array(True)
        return f
    if name == "scan":
        return {"s0": rng.standard_normal(W).astype(np.float32), "xs": rng.standard_normal((200, W)).astype(np.float32)}
    if name in ("lstm", "gru"):
        return {"x": rng.standard_normal((100, 1, 64)).astype(np.float32)}
    return {"x": rng.standard_normal((1, 16)).astype(np.float32)}


MODELS = {
    "loop": ("Loop, 1000 iterations of an 8-node body on [1,64]", loop_model),
    "nested_if": ("If nested 3 deep, all then-branches taken, [1,64]", nested_if_model),
    "scan": ("Scan, 200 steps of a 4-node body on [64]", scan_model),
    "chain": ("200 Add nodes on [1,16] (per-node cost)", chain_model),
    "lstm": ("bidirectional LSTM, 100 steps, batch 1, 64 in, 128 hidden", lambda: rnn_model("LSTM")),
    "gru": ("bidirectional GRU, 100 steps, batch 1, 64 in, 128 hidden", lambda: rnn_model("GRU")),
}


def worker(engine, name, runs):
    data = MODELS[name][1]().SerializeToString()
    f = feeds(name)
    if engine == "ort":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    else:
        sys.path.insert(0, os.path.join(ROOT, "python"))
        import kiln
        s = kiln.InferenceSession(data, threads=1)
    for _ in range(max(5, runs // 10)):
        s.run(None, f)
    # CPU time of the calling thread (both engines run these on it with 1 intra-op thread): on a
    # shared machine, wall time also counts the time other processes held the core
    clock = time.thread_time if os.environ.get("SMALL_GRAPHS_CLOCK", "cpu") == "cpu" else time.perf_counter
    t = []
    for _ in range(runs):
        t0 = clock()
        s.run(None, f)
        t.append(clock() - t0)
    t.sort()
    return t[len(t) // 2] * 1e6


def measure(engine, name, runs, env=None):
    p = subprocess.run([sys.executable, __file__, "--worker", engine, "--model", name, "--runs", str(runs)],
                       capture_output=True, text=True, env=dict(os.environ, **(env or {})))
    if p.returncode:
        raise SystemExit(p.stderr)
    return float(p.stdout.strip())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--worker")
    ap.add_argument("--model")
    ap.add_argument("--engine", help="only this engine (kiln or ort); prints JSON")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results", "small_graphs.md"))
    ap.add_argument("--before", help="a libkiln.so to measure as the 'before' column")
    a = ap.parse_args()
    if a.worker:
        print("%.3f" % worker(a.worker, a.model, a.runs))
        return
    if a.engine:
        print(json.dumps({n: measure(a.engine, n, a.runs) for n in MODELS}))
        return
    rows = []
    for name, (desc, _) in MODELS.items():
        before = measure("kiln", name, a.runs, {"KILN_LIBRARY": a.before}) if a.before else None
        k = measure("kiln", name, a.runs)
        o = measure("ort", name, a.runs)
        rows.append((name, desc, before, k, o))
        print(name, before, k, o, file=sys.stderr)
    import onnxruntime as ort
    lines = ["# Small graphs: per-node and per-subgraph costs", "",
             "Median time of one run in µs (CPU time of the calling thread, which runs all the work with 1 "
             "intra-op thread in both engines; wall time on this shared 2-core machine also counts other "
             "processes), each engine in its own process "
             f"(`python3 bench/small_graphs.py --runs {a.runs}" + (" --before OLD/libkiln.so" if a.before else "") + "`), "
             f"onnxruntime {ort.__version__}.", ""]
    head = "| model | " + ("kiln before | " if a.before else "") + "kiln | onnxruntime | kiln/ORT |"
    lines += [head, "|---|" + ("---|" if a.before else "") + "---|---|---|"]
    for name, desc, before, k, o in rows:
        lines.append(f"| {desc} | " + (f"{before:.1f} | " if a.before else "") + f"{k:.1f} | {o:.1f} | {k / o:.2f} |")
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
