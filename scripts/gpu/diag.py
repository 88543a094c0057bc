#!/usr/bin/env python3
"""Where a kiln GPU run spends its time, per model row: wall time of a plain run (numpy in and out),
GPU kernel time of the same run (torch.profiler's CUPTI view sees every kernel in the process,
kiln's and the libraries'), the run with fixed dims + CUDA graph + device I/O, the top kernels, and
kiln's own per-op-type trace (each node synchronised, so host launch cost shows). A run whose wall
time is far over its kernel time is host-bound.

  python3 scripts/gpu/diag.py --models /tmp/gpu_models --rows resnet50:1 resnet50:8 bert:8:512
"""
import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "bench", "gpu_models"))
sys.path.append(os.path.join(ROOT, "python"))
import kiln  # noqa: E402
import models as M  # noqa: E402

CUDA_EP = "CUDAExecutionProvider"


def sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def median_ms(fn, n=30):
    for _ in range(3):
        fn()
    sync()
    t = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        sync()
        t.append(time.perf_counter() - t0)
    return statistics.median(t) * 1e3


def kernel_profile(fn, runs=5):
    """(GPU kernel ms per run, top kernels [(name, ms per run, calls per run)])."""
    fn()
    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(runs):
            fn()
        torch.cuda.synchronize()
    per = collections.defaultdict(lambda: [0.0, 0])
    for ev in prof.events():
        if ev.device_type == torch.autograd.DeviceType.CUDA:
            d = per[ev.name[:70]]
            d[0] += ev.device_time_total if hasattr(ev, "device_time_total") else ev.cuda_time_total
            d[1] += 1
    total = sum(v[0] for v in per.values()) / runs / 1e3
    top = sorted(per.items(), key=lambda kv: -kv[1][0])[:10]
    return total, [(k, v[0] / runs / 1e3, v[1] / runs) for k, v in top]


def trace_by_op(sess, feed, path):
    sess.run(None, feed)
    sess.start_profiling(path)
    for _ in range(3):
        sess.run(None, feed)
    sess.end_profiling()
    by = collections.defaultdict(lambda: [0.0, 0])
    with open(path) as f:
        for ev in json.load(f):
            if ev.get("ph") == "X" and ev.get("cat", "") != "Session":
                a = ev.get("args", {})
                key = "%s@%s" % (a.get("op_name", ev.get("name")), a.get("provider", "?"))
                by[key][0] += ev.get("dur", 0) / 3e3
                by[key][1] += 1 / 3
    return sorted(by.items(), key=lambda kv: -kv[1][0])[:12]


def fixed_and_graphed(path, entry, names, xs):
    opts = kiln.SessionOptions()
    for sp, x in zip(entry["inputs"]["fp16"], xs):
        for d, size in zip(sp["dims"], x.shape):
            if isinstance(d, str):
                opts.add_free_dimension_override_by_name(d, int(size))
    gfeed = dict(zip(names, [x.cuda().contiguous() for x in xs]))
    fixed = kiln.InferenceSession(path, sess_options=opts, providers=[CUDA_EP])
    dev = median_ms(lambda: fixed.run_with_ort_values(None, gfeed))
    del fixed
    gs = kiln.InferenceSession(path, sess_options=opts, providers=[(CUDA_EP, {"enable_cuda_graph": "1"})])
    graphed = median_ms(lambda: gs.run_with_ort_values(None, gfeed))
    kern_g, top = kernel_profile(lambda: gs.run_with_ort_values(None, gfeed))
    ops = collections.Counter(n["op_type"] for n in gs.nodes())
    del gs
    print("  fixed dims + device I/O %.2f ms; + CUDA graph %.2f ms (kernels %.2f)" % (dev, graphed, kern_g))
    print("  fixed-dims graph ops: %s" % dict(ops.most_common(14)))
    for k, t, c in top:
        print("    %7.3f ms %5.1fx  %s" % (t, c, k))
    return dev, graphed


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--rows", nargs="+", required=True, help="graph:batch[:seq]")
    a = ap.parse_args()
    man = json.load(open(os.path.join(a.models, "manifest.json")))
    summary = []
    for spec in a.rows:
        parts = spec.split(":")
        graph, batch = parts[0], int(parts[1])
        seq = int(parts[2]) if len(parts) > 2 else None
        entry = man["graphs"][graph]
        path = os.path.join(a.models, entry["files"]["fp16"])
        names = [i["name"] for i in entry["inputs"]["fp16"]]
        mod = M.build_graphs(entry["model"], tiny=man["tiny"], attn="sdpa")[graph]
        xs = list(M.make_inputs(graph, mod, batch, seq, None, torch.float16, seed=1))
        np_feed = dict(zip(names, [x.numpy() for x in xs]))
        print("== %s" % spec, flush=True)
        sess = kiln.InferenceSession(path, providers=[CUDA_EP, "CPUExecutionProvider"])
        placed = [p for _, p in sess.node_placement()]
        cpu_nodes = collections.Counter(n["op_type"] for n, p in zip(sess.nodes(), placed) if p != CUDA_EP)
        print("  nodes %d, on CPU %d: %s" % (len(placed), sum(p != CUDA_EP for p in placed),
                                            dict(cpu_nodes.most_common(8))))
        plain = median_ms(lambda: sess.run(None, np_feed))
        kern = dev = graphed = float("nan")
        try:
            kern, top = kernel_profile(lambda: sess.run(None, np_feed))
            print("  plain run %.2f ms, GPU kernels %.2f ms" % (plain, kern))
            for k, t, c in top:
                print("    %7.3f ms %5.1fx  %s" % (t, c, k))
        except Exception as e:  # noqa: BLE001 - diagnostics go on
            print("  kernel profile failed: %s" % e)
        for k, (t, c) in trace_by_op(sess, np_feed, os.path.join(tempfile.mkdtemp(), "t.json")):
            print("    trace %7.3f ms %5.1fx  %s" % (t, c, k))
        del sess
        try:
            dev, graphed = fixed_and_graphed(path, entry, names, xs)
        except Exception as e:  # noqa: BLE001
            print("  fixed/graph runs failed: %s" % e)
        summary.append((spec, plain, kern, dev, graphed))
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    print("\n| row | plain ms | kernels ms | fixed+devIO ms | +graph ms |")
    print("|---|---|---|---|---|")
    for s in summary:
        print("| %s | %.2f | %.2f | %.2f | %.2f |" % s)


if __name__ == "__main__":
    main()
