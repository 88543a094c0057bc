#!/usr/bin/env python3
"""Per-node time of one .onnx model in kiln and in onnxruntime (default graph optimizations), at one
batch size and thread count, on random float32 feeds: which nodes lose. op_profile.py does the
same by op type for cpu_scaling's model folder; this takes any model path. Node times are medians
over RUNS runs (the machine may be shared); ORT's nodes carry ORT's names (fused Conv+Relu, NCHWc
reorders), so the two lists are printed side by side only by op type.

  python3 bench/node_profile.py /tmp/cpu_models/squeezenet.onnx --batch 1 --threads 1
"""
import argparse
import collections
import json
import os
import re
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def node_times(path, runs):
    """{node name: (ms per run, op type, output shape, input shapes or None)} from a Chrome-trace
    profile (ORT's events carry input shapes, kiln's do not)."""
    with open(path) as f:
        d = json.load(f)
    ev = d["traceEvents"] if isinstance(d, dict) else d
    # ORT's file also holds the warm-up runs: keep the nodes of the last `runs` model runs
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e.get("name") == "model_run")[-runs:]
    durs, info = collections.defaultdict(list), {}
    for e in ev:
        a = e.get("args", {})
        if e.get("cat") != "Node" or "op_name" not in a:
            continue
        if e["name"].endswith(("_fence_before", "_fence_after")):
            continue
        if spans and not any(lo <= e["ts"] <= hi for lo, hi in spans):
            continue
        durs[e["name"]].append(e["dur"])
        ins = [list(d.values())[0] for d in a["input_type_shape"]] if "input_type_shape" in a else None
        info[e["name"]] = (a["op_name"], str(a.get("output_shapes", a.get("output_type_shape", ""))),
                           ins)
    return {k: (float(np.median(v)) * len(v) / runs / 1e3, *info[k]) for k, v in durs.items()}


def conv_kind(w, x, y):
    """A convolution's family from its weight, input and output shapes: depthwise (with kernel and
    stride), pointwise, squeeze-excite (1x1 on a 1x1 map) or dense."""
    if not w or not x or len(w) != 4 or len(x) != 4:
        return "conv"
    M, Cg, KH, KW = w
    if Cg == 1 and x[1] > 1 and M % x[1] == 0:
        s = "s2" if y and len(y) == 4 and y[3] * 2 <= x[3] else "s1"
        return "dw%dx%d%s" % (KH, KW, s)
    if KH == KW == 1:
        return "se-1x1" if x[2] * x[3] == 1 else "pw-1x1"
    return "dense%dx%d" % (KH, KW)


def kiln_kinds(model, names):
    """{kiln node name: kind} for Conv/FusedConv nodes, their shapes read from the model (kiln's
    fused nodes keep the first original node's name plus a suffix)."""
    import onnx
    from onnx import shape_inference
    m = shape_inference.infer_shapes(onnx.load(model, load_external_data=False))
    shapes = {i.name: list(i.dims) for i in m.graph.initializer}
    for v in list(m.graph.value_info) + list(m.graph.input):
        shapes.setdefault(v.name, [int(d.dim_value) if d.HasField("dim_value") else 1
                                   for d in v.type.tensor_type.shape.dim])
    by_name = {n.name: n for n in m.graph.node if n.op_type == "Conv"}
    out = {}
    for k in names:
        base = k.split("_fused_")[0]
        n = by_name.get(base)
        if n is not None:
            out[k] = conv_kind(shapes.get(n.input[1]), shapes.get(n.input[0]),
                               shapes.get(n.output[0]))
    return out


def print_kinds(model, kn, on):
    """Time per (op, convolution kind) side by side."""
    kk = kiln_kinds(model, kn)
    rows = collections.defaultdict(lambda: [0.0, 0.0])
    for name, (ms, op, _, _) in kn.items():
        rows[kk.get(name, op) if op in ("Conv", "FusedConv") else op][0] += ms
    for name, (ms, op, out, ins) in on.items():
        key = op
        if op in ("Conv", "FusedConv") and ins and len(ins) > 1:
            y = [int(v) for v in re.findall(r"\d+", out)]
            key = conv_kind(ins[1], ins[0], y)
        rows[key][1] += ms
    print("\nby kind (ms per run): kind, kiln, ort, kiln - ort")
    for key, (a, b) in sorted(rows.items(), key=lambda kv: -(kv[1][0] - kv[1][1])):
        print("  %-20s %8.3f %8.3f %+8.3f" % (key, a, b, a - b))


def feeds_for(path, batch, seq=1):
    import onnx
    m = onnx.load(path, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(7)
    feeds = {}
    for i in m.graph.input:
        if i.name in inits:
            continue
        t = i.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else (batch if k == 0 else seq)
                for k, d in enumerate(t.shape.dim)]
        if t.elem_type == onnx.TensorProto.FLOAT:
            feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
        elif t.elem_type in (onnx.TensorProto.INT64, onnx.TensorProto.INT32):
            # token ids in a small vocabulary; masks all ones (every position attends)
            dt = np.int64 if t.elem_type == onnx.TensorProto.INT64 else np.int32
            feeds[i.name] = (np.ones(dims, dt) if "mask" in i.name else rng.integers(0, 100, dims).astype(dt))
        else:
            raise SystemExit(f"input {i.name}: only float32 and integer inputs are fed")
    return feeds


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seq", type=int, default=1, help="value of symbolic dims after the first (sequence length)")
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--kinds", action="store_true",
                    help="also sum the time by convolution kind (depthwise k x k, pointwise, "
                         "squeeze-excite 1x1, dense) and op, kiln next to ORT")
    a = ap.parse_args()
    feeds = feeds_for(a.model, a.batch, a.seq)
    tmp = tempfile.mkdtemp()
    sys.path.insert(0, os.path.join(ROOT, "python"))
    import kiln
    import onnxruntime as ort
    s = kiln.InferenceSession(a.model, threads=a.threads)
    for _ in range(3):
        s.run(None, feeds)
    s.start_profiling(os.path.join(tmp, "k.json"))
    for _ in range(a.runs):
        s.run(None, feeds)
    kn = node_times(s.end_profiling(), a.runs)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, "o")
    o = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    for _ in range(3 + a.runs):
        o.run(None, feeds)
    on = node_times(o.end_profiling(), a.runs)
    for name, res in (("kiln", kn), ("ort", on)):
        by_op = collections.Counter()
        for ms, op, _, _ in res.values():
            by_op[op] += ms
        print("%s: %.2f ms in nodes; by op: %s" % (name, sum(by_op.values()),
              ", ".join("%s %.2f" % kv for kv in by_op.most_common())))
    for name, res in (("kiln", kn), ("ort", on)):
        print("\n%s nodes (ms per run)" % name)
        for node, (ms, op, shape, _) in res.items():
            print("  %-48s %8.3f  %-18s %s" % (node[-48:], ms, op, shape[:60]))
    if a.kinds:
        print_kinds(a.model, kn, on)


if __name__ == "__main__":
    main()
