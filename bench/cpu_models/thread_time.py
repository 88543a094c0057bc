#!/usr/bin/env python3
"""One model at one thread: kiln and onnxruntime in one process, runs interleaved, each timed by the
calling thread's CPU time (time.thread_time), so that a run descheduled by other users of a shared
machine is not charged for the wait. Prints one JSON line: median, 25th and 75th percentile in ms.
Only for one thread (both engines then compute on the calling thread); run.py's wall-clock rows are
the reference on a quiet machine.

  KILN_LIBRARY=build-cpu/libkiln.so python3 bench/cpu_models/thread_time.py MODEL.onnx BATCH RUNS
"""
import json
import os
import sys
import time

import numpy as np
import onnx

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "python"))
import kiln  # noqa: E402
import onnxruntime as ort  # noqa: E402


def main():
    path, batch, runs = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    dims = onnx.load(path, load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    x = np.random.default_rng(7).standard_normal([batch] + [d.dim_value for d in dims[1:]]).astype(np.float32)
    ks = kiln.InferenceSession(path, threads=1)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    os_ = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {os_.get_inputs()[0].name: x}
    for s in (ks, os_):
        for _ in range(2):
            s.run(None, feeds)
    tk, to = [], []
    for _ in range(runs):
        for s, t in ((ks, tk), (os_, to)):
            t0 = time.thread_time()
            s.run(None, feeds)
            t.append((time.thread_time() - t0) * 1e3)
    q = lambda v: [float(np.median(v)), float(np.percentile(v, 25)), float(np.percentile(v, 75))]
    print(json.dumps({"model": os.path.basename(path)[:-5], "batch": batch, "kiln": q(tk), "ort": q(to),
                      "ratio": q(tk)[0] / q(to)[0]}))


if __name__ == "__main__":
    main()
