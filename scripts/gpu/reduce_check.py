#!/usr/bin/env python3
"""ReduceSum over axis 0 of a (2^20, 3) float32 tensor in [0, 0.01): kiln's CPU and CUDA results
against a float64 sum, to see which side of tests/gpu/test_cuda_reduce.py's large case drifts."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "tests"))
from util import node_model, run_kiln  # noqa: E402
import kiln  # noqa: E402

x = np.random.default_rng(5).uniform(0, 0.01, (1 << 20, 3)).astype(np.float32)
ref = x.astype(np.float64).sum(0, keepdims=True)
m = node_model("ReduceSum", [("x", x), ("a", np.array([0], np.int64))], ["y"],
               initializers={"a": np.array([0], np.int64)}, opset=18).SerializeToString()
for prov in (["CPUExecutionProvider"], ["CUDAExecutionProvider"]):
    for threads in (1, 16):
        y = kiln.InferenceSession(m, providers=prov, threads=threads).run(None, {"x": x})[0]
        print(prov[0], threads, "rel err", ((y - ref) / ref).ravel())
