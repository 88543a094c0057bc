#!/usr/bin/env python3
"""Accuracy of the Winograd convolutions (src/cpu/kernels/conv_winograd.c): whole models against
onnxruntime with Winograd on and off (max |kiln - ORT| / max |ORT| over the first output, batch 1,
2 threads), and single 3x3 layers against float64 direct sums.

  python3 bench/winograd_accuracy.py /tmp/gpu_models/resnet50.fp32.onnx /tmp/cpu_models/densenet121.onnx
"""
import os
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "tests"))
import kiln  # noqa: E402
import node_profile  # noqa: E402
import onnxruntime as ort  # noqa: E402
from test_conv_winograd import conv_ref, make_case  # noqa: E402

LAYERS = [((1, 64, 56, 56), 64, [1, 1, 1, 1]), ((1, 128, 28, 28), 128, [1, 1, 1, 1]),
          ((8, 256, 14, 14), 256, [1, 1, 1, 1]), ((2, 32, 29, 27), 48, [1, 0, 2, 1])]


def rel(a, b):
    return float(np.max(np.abs(a.astype(np.float64) - b)) / np.max(np.abs(b)))


def main():
    print("model: rel error vs ORT, Winograd on / off")
    for path in sys.argv[1:]:
        feeds = node_profile.feeds_for(path, 1)
        so = ort.SessionOptions()
        so.intra_op_num_threads = 2
        ref = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"]).run(None, feeds)[0]
        on, off = (kiln.InferenceSession(path, threads=2, winograd=w).run(None, feeds)[0] for w in (True, False))
        print(f"  {os.path.basename(path)}: {rel(on, ref):.2e} / {rel(off, ref):.2e}")
    print("layer: rel error vs float64 direct sums, Winograd on / off")
    for xs, M, pads in LAYERS:
        x, w, b, m = make_case(xs, M, pads, 11)
        ref = conv_ref(x, w, b, pads)
        data = m.SerializeToString()
        on, off = (kiln.InferenceSession(data, threads=1, winograd=v).run(None, {"x": x})[0] for v in (True, False))
        print(f"  {xs} -> {M}: {rel(on, ref):.2e} / {rel(off, ref):.2e}")


if __name__ == "__main__":
    main()
