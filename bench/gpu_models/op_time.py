#!/usr/bin/env python3
"""Where a model's GPU time goes in kiln: device time per op type and the slowest nodes, from a
profile of a few runs with the row's symbolic dims fixed (as run.py's graph column has them).
Traced runs synchronise around every device node, so each span is that node's own device time
plus one launch; the untraced median printed first is the figure to compare against run.py's.

  python3 bench/gpu_models/op_time.py /tmp/gpu_models/bert.fp16.onnx --dim batch=32 --dim seq=512
"""
import argparse
import collections
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
import node_profile as npf  # noqa: E402

NP_TYPES = {1: np.float32, 10: np.float16, 7: np.int64, 6: np.int32, 9: np.bool_}  # numpy has no bfloat16


def feeds(model_path, dims, seed=0):
    """Random inputs by the model's declared inputs: token ids in [0, 1000), masks of ones, N(0,1)
    floats (past keys and values at 0.5 scale). dims fixes the symbolic sizes by name."""
    import onnx
    m = onnx.load(model_path, load_external_data=False)
    inits = {i.name for i in m.graph.initializer}
    rng = np.random.default_rng(seed)
    out = {}
    for vi in m.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = []
        for d in tt.shape.dim:
            if d.HasField("dim_value"):
                shape.append(d.dim_value)
            elif d.dim_param in dims:
                shape.append(dims[d.dim_param])
            else:
                sys.exit("%s: give --dim %s=N" % (vi.name, d.dim_param))
        dt = NP_TYPES.get(tt.elem_type)
        if dt is None:
            sys.exit("%s: element type %d has no random feed here (float32/16, int32/64, bool)"
                     % (vi.name, tt.elem_type))
        if "mask" in vi.name:
            out[vi.name] = np.ones(shape, dt)
        elif np.issubdtype(dt, np.integer):
            out[vi.name] = rng.integers(0, 1000, shape).astype(dt)
        else:
            scale = 0.5 if vi.name.startswith("past") else 1.0
            out[vi.name] = (rng.standard_normal(shape) * scale).astype(dt)
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--dim", action="append", default=[], help="NAME=N, a symbolic dimension's size")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--top", type=int, default=12, help="op types and nodes to list")
    a = ap.parse_args()
    import kiln
    dims = {k: int(v) for k, v in (d.split("=", 1) for d in a.dim)}
    x = feeds(a.model, dims)
    opts = kiln.SessionOptions()
    for k, v in dims.items():
        opts.add_free_dimension_override_by_name(k, v)
    # no CUDA graph: a replayed graph runs no node of its own, so the trace would be empty
    s = kiln.InferenceSession(a.model, sess_options=opts,
                              providers=[("CUDAExecutionProvider", {"enable_cuda_graph": "0"}), "CPUExecutionProvider"])
    for _ in range(3):
        s.run_with_ort_values(None, x)
    times = []
    for _ in range(max(a.runs, 5)):
        t0 = time.perf_counter()
        outs = s.run_with_ort_values(None, x)
        outs[0].numpy()  # waits for the device
        times.append((time.perf_counter() - t0) * 1e3)
    print("%s %s: untraced median %.2f ms (numpy feeds uploaded, first output downloaded, no CUDA graph)"
          % (os.path.basename(a.model), " ".join(a.dim), float(np.median(times))))
    tmp = tempfile.mkdtemp()
    s.start_profiling(os.path.join(tmp, "k.json"))
    for _ in range(a.runs):
        s.run_with_ort_values(None, x)
    nodes = npf.node_times(s.end_profiling(), a.runs)
    by_type = collections.defaultdict(lambda: [0.0, 0])
    for ms, op, _shape, _ins in nodes.values():
        by_type[op][0] += ms
        by_type[op][1] += 1
    total = sum(v[0] for v in by_type.values())
    print("traced total %.2f ms per run over %d nodes" % (total, len(nodes)))
    print("%-28s %9s %6s %6s" % ("op type", "ms/run", "share", "nodes"))
    for op, (ms, n) in sorted(by_type.items(), key=lambda kv: -kv[1][0])[:a.top]:
        print("%-28s %9.3f %5.1f%% %6d" % (op, ms, 100 * ms / max(total, 1e-9), n))
    print("slowest nodes:")
    for name, (ms, op, shape, _ins) in sorted(nodes.items(), key=lambda kv: -kv[1][0])[:a.top]:
        print("  %-40s %-24s %8.3f ms  %s" % (name[:40], op, ms, shape[:40]))


if __name__ == "__main__":
    main()
