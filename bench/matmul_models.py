#!/usr/bin/env python3
"""One-node MatMul models, x [M, K] times a constant weight [K, N] (random, fixed seed), for
bench/variants_ab.py: BERT-base's projection shapes at batch 1 and 8 by default.

  python3 bench/matmul_models.py --out /tmp/mm [--shapes 128x768x3072 1024x3072x768]
"""
import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/mm")
    ap.add_argument("--shapes", nargs="*", default=["128x768x3072", "1024x768x3072", "128x3072x768", "1024x3072x768"])
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for spec in a.shapes:
        M, K, N = (int(v) for v in spec.split("x"))
        w = (np.random.default_rng(1).standard_normal((K, N)) * 0.02).astype(np.float32)
        g = helper.make_graph([helper.make_node("MatMul", ["x", "W"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [M, K])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [M, N])],
                              [numpy_helper.from_array(w, "W")])
        path = os.path.join(a.out, "mm_%d_%d_%d.onnx" % (M, K, N))
        onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
        print(path)


if __name__ == "__main__":
    main()
