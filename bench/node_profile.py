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
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def node_times(path, runs):
    """{node name: (ms per run, op type, output shape)} from a Chrome-trace profile."""
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
        info[e["name"]] = (a["op_name"], str(a.get("output_shapes", a.get("output_type_shape", ""))))
    return {k: (float(np.median(v)) * len(v) / runs / 1e3, *info[k]) for k, v in durs.items()}


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
        for ms, op, _ in res.values():
            by_op[op] += ms
        print("%s: %.2f ms in nodes; by op: %s" % (name, sum(by_op.values()),
              ", ".join("%s %.2f" % kv for kv in by_op.most_common())))
    for name, res in (("kiln", kn), ("ort", on)):
        print("\n%s nodes (ms per run)" % name)
        for node, (ms, op, shape) in res.items():
            print("  %-48s %8.3f  %-18s %s" % (node[-48:], ms, op, shape[:60]))


if __name__ == "__main__":
    main()
