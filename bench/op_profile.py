#!/usr/bin/env python3
"""Where the time goes, per operator type, in kiln and in onnxruntime on the same model, inputs and
intra-op thread count: both engines write their per-node profile (the same Chrome-trace shape), and
the node times of the last RUNS runs are summed by op type. Shows which op family scales worse than
ORT's when threads are added.

  python3 bench/op_profile.py --models /tmp/gpu_models --graph bert --threads 1 16 --batch 1
"""
import argparse
import collections
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))


def by_node(path, runs):
    """kiln's trace only: ms per run of each node, with its op type and output shape."""
    with open(path) as f:
        d = json.load(f)
    ev = d["traceEvents"] if isinstance(d, dict) else d
    total, info = collections.Counter(), {}
    for e in ev:
        a = e.get("args", {})
        if e.get("cat") == "Node" and "op_name" in a:
            total[e["name"]] += e["dur"]
            info[e["name"]] = (a["op_name"], a.get("output_shapes", ""))
    return {k: (v / runs / 1e3, info[k]) for k, v in total.items()}


def by_op(path, runs):
    with open(path) as f:
        d = json.load(f)
    ev = d["traceEvents"] if isinstance(d, dict) else d
    nodes = [e for e in ev if e.get("cat") == "Node" and "op_name" in e.get("args", {})
             and not e.get("name", "").endswith(("_fence_before", "_fence_after"))]
    # only the nodes inside the last `runs` model runs (ORT's file also holds the warm-up runs)
    spans = sorted((e["ts"], e["ts"] + e["dur"]) for e in ev if e.get("name") == "model_run")[-runs:]
    if spans:
        nodes = [e for e in nodes if any(a <= e["ts"] <= b for a, b in spans)]
    total = collections.Counter()
    for e in nodes:
        total[e["args"]["op_name"]] += e["dur"]
    return {k: v / runs / 1e3 for k, v in total.items()}  # ms per run


PATHS = {}  # kiln's trace per thread count, for --nodes


def profile(engine, path, feeds, threads, runs):
    tmp = tempfile.mkdtemp()
    if engine == "kiln":
        sys.path.insert(0, os.path.join(ROOT, "python"))
        import kiln
        s = kiln.InferenceSession(path, threads=threads)
        for _ in range(3):
            s.run(None, feeds)
        s.start_profiling(os.path.join(tmp, "k.json"))
        for _ in range(runs):
            s.run(None, feeds)
        out = s.end_profiling()
        PATHS[threads] = out
    else:
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.enable_profiling = True
        so.profile_file_prefix = os.path.join(tmp, "o")
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        for _ in range(3):  # ORT profiles from the start: these are in the file too
            s.run(None, feeds)
        for _ in range(runs):
            s.run(None, feeds)
        out = s.end_profiling()
    return by_op(out, runs)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True)
    ap.add_argument("--graph", default="bert")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", nargs="*", type=int, default=[1, 16])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--nodes", type=int, default=0, help="also list kiln's N slowest nodes at the last thread count")
    a = ap.parse_args()
    import cpu_scaling
    spec = dict(cpu_scaling.ROWS[a.graph], batch=a.batch)
    path, feeds = cpu_scaling.feeds_for(a.models, a.graph, a.batch, spec.get("seq"))
    res = {(e, t): profile(e, path, feeds, t, a.runs) for t in a.threads for e in ("kiln", "ort")}
    ops = collections.Counter()
    for r in res.values():
        for k, v in r.items():
            ops[k] += v
    cols = [(e, t) for t in a.threads for e in ("kiln", "ort")]
    print("%s batch %d, ms per run by op type (sum of node times)" % (a.graph, a.batch))
    print("%-28s" % "op" + "".join("%12s" % ("%s %dt" % c) for c in cols))
    for op, _ in ops.most_common(a.top):
        print("%-28s" % op + "".join("%12.2f" % res[c].get(op, 0.0) for c in cols))
    print("%-28s" % "total" + "".join("%12.2f" % sum(res[c].values()) for c in cols))
    if a.nodes and a.threads:
        t0, t1 = a.threads[0], a.threads[-1]
        n0, n1 = by_node(PATHS[t0], a.runs), by_node(PATHS[t1], a.runs)
        print("\nkiln's slowest nodes at %d threads (ms per run; speed-up over %d thread%s)" % (t1, t0, "s" if t0 > 1 else ""))
        for name, (ms, (op, shape)) in sorted(n1.items(), key=lambda kv: -kv[1][0])[:a.nodes]:
            base = n0.get(name, (0.0,))[0]
            print("%-40s %-18s %-24s %8.3f %6.1fx" % (name[:40], op[:18], shape[:24], ms, base / ms if ms else 0))


if __name__ == "__main__":
    sys.exit(main())
