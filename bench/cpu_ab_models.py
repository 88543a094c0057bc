#!/usr/bin/env python3
"""Writes the small models behind the A/B figures in bench/results/cpu_ab_2026-12-06.md (each timed
with bench/kiln_ab.py, kiln build against kiln build or against onnxruntime, in alternating
processes): single Conv nodes from bench/conv_bench.py's cases, BatchNormalization + Relu + 1x1
Conv (DenseNet's pre-activation layer), and the stem Conv + Relu of SqueezeNet (a model whose
output is [8, 64, 111, 111]); from the third session, a model with 24 outputs of 786 KB (host
block reuse) and Relu -> MaxPool 3x3/2 on [8, 64, 111, 111] (a pool reading an arena value);
from the conv3x3 session, single Conv nodes of any batch (input x of [N, C, H, W]) with the shapes
of DenseNet-121 (3x3 128 -> 32 at 56/28/14/7, the 7x7/2 stem), ResNet-50 and MobileNet/SqueezeNet;
from the fourth, SqueezeNet's MaxPools alone, its 1x1 expand convs (+ Relu), batch dims symbolic,
and its head (sq_head_b8: the stem Conv + Relu, then MaxPool reading the 25 MB the conv wrote).

  python3 bench/cpu_ab_models.py --out /tmp/ab
  python3 bench/kiln_ab.py /tmp/ab/mb3_se_1x1_960to240_b8.onnx --a OLD/libkiln.so --b build-cpu/libkiln.so --batch 8
"""
import argparse
import os
import sys

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import conv_bench  # noqa: E402

CONV_CASES = ["mb3_se_1x1_960to240_b8", "mb3_se_1x1_960to240_b1", "mb3_dw3x3s2_112_64_b8",
              "mb3_dw5x5s2_56_72_b8", "mb_dw3x3_112_32_b8", "sq_stem3x3s2_224_b8"]


def bn_relu_conv(C, H, rng):
    inits = [numpy_helper.from_array(rng.standard_normal(C).astype(np.float32), n) for n in ("s", "b", "m")]
    inits.append(numpy_helper.from_array((rng.random(C) + 0.5).astype(np.float32), "v"))
    inits.append(numpy_helper.from_array((rng.standard_normal((64, C, 1, 1)) * 0.1).astype(np.float32), "w"))
    nodes = [helper.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["t"]),
             helper.make_node("Relu", ["t"], ["r"]), helper.make_node("Conv", ["r", "w"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, H, H])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def stem_relu():
    data, _ = conv_bench.conv_model(conv_bench.CASES["sq_stem3x3s2_224_b8"])
    m = onnx.load_from_string(data)
    m.graph.node[0].output[0] = "c"
    m.graph.node.append(helper.make_node("Relu", ["c"], ["y"]))
    return m


# name: (C, H, M, kernel, stride, pad, group)
DYN_CONVS = {
    "dn_3x3_128to32_56": (128, 56, 32, 3, 1, 1, 1),
    "dn_3x3_128to32_28": (128, 28, 32, 3, 1, 1, 1),
    "dn_3x3_128to32_14": (128, 14, 32, 3, 1, 1, 1),
    "dn_3x3_128to32_7": (128, 7, 32, 3, 1, 1, 1),
    "dn_stem7x7s2_224": (3, 224, 64, 7, 2, 3, 1),
    "r50_3x3_64_56": (64, 56, 64, 3, 1, 1, 1),
    "r50_3x3_128_28": (128, 28, 128, 3, 1, 1, 1),
    "r50_3x3_256_14": (256, 14, 256, 3, 1, 1, 1),
    "r50_3x3_512_7": (512, 7, 512, 3, 1, 1, 1),
    "r50_3x3s2_128_56": (128, 56, 128, 3, 2, 1, 1),
    "sq_expand3x3_16to64_55": (16, 55, 64, 3, 1, 1, 1),
    "sq_expand3x3_64to256_13": (64, 13, 256, 3, 1, 1, 1),
    "mb2_stem3x3s2_224": (3, 224, 32, 3, 2, 1, 1),
    "yolo_3x3_32to64_s2_208": (32, 208, 64, 3, 2, 1, 1),
    "unet_3x3_64to48_64": (64, 64, 48, 3, 1, 1, 1),
    "vgg_3x3_64to128_112": (64, 112, 128, 3, 1, 1, 1),
    "ssd_head_3x3_512to24_19": (512, 19, 24, 3, 1, 1, 1),
    "ssd_head_3x3_256to16_5": (256, 5, 16, 3, 1, 1, 1),
    "r50_3x3s2_256_28": (256, 28, 256, 3, 2, 1, 1),
}


def dyn_conv(C, H, M, k, s, p, g, rng):
    """one Conv (random weights and bias) on x of [N, C, H, H], N left to the feed"""
    w = (rng.standard_normal((M, C // g, k, k)) * 0.1).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s],
                            pads=[p] * 4, group=g)
    return model([node], [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", C, H, H])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                 [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")])


def model(nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def stem_relu_maxpool():
    """SqueezeNet's head: the stem Conv + Relu, then MaxPool 3x3/2 reading the conv's 25 MB output"""
    m = stem_relu()
    m.graph.node[-1].output[0] = "r"
    m.graph.node.append(helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                         ceil_mode=1))
    return m


def many_outputs(n=24, shape=(1, 12, 512, 32)):
    """x + i for i < n: n graph outputs of 786 KB each, like GPT-2's present K/V."""
    inits = [numpy_helper.from_array(np.array(float(i), np.float32), "c%d" % i) for i in range(n)]
    nodes = [helper.make_node("Add", ["x", "c%d" % i], ["y%d" % i]) for i in range(n)]
    outs = [helper.make_tensor_value_info("y%d" % i, TensorProto.FLOAT, list(shape)) for i in range(n)]
    return model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))], outs, inits)


def relu_maxpool():
    nodes = [helper.make_node("Relu", ["x"], ["r"]),
             helper.make_node("MaxPool", ["r"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    return model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64, 111, 111])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


def maxpool(C, H):
    """MaxPool 3x3/2 ceil_mode alone, SqueezeNet's three pools"""
    nodes = [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1)]
    return model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", C, H, H])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])


def expand1x1(C, M, H, rng):
    """Conv 1x1 + Relu with few input channels: SqueezeNet's fire expand1x1 layers"""
    inits = [numpy_helper.from_array((rng.standard_normal((M, C, 1, 1)) * 0.2).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(M).astype(np.float32), "b")]
    nodes = [helper.make_node("Conv", ["x", "w", "b"], ["c"]), helper.make_node("Relu", ["c"], ["y"])]
    return model(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", C, H, H])],
                 [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="/tmp/ab")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    for c in CONV_CASES:
        data, _ = conv_bench.conv_model(conv_bench.CASES[c])
        with open(os.path.join(a.out, c + ".onnx"), "wb") as f:
            f.write(data)
    rng = np.random.default_rng(0)
    for C, H in ((192, 56), (512, 14)):
        onnx.save(bn_relu_conv(C, H, rng), os.path.join(a.out, f"bnrelu_{C}_{H}.onnx"))
    onnx.save(stem_relu(), os.path.join(a.out, "sq_stem3x3s2_224_b8_relu.onnx"))
    onnx.save(stem_relu_maxpool(), os.path.join(a.out, "sq_head_b8.onnx"))
    onnx.save(many_outputs(), os.path.join(a.out, "many_outputs_24x786k.onnx"))
    onnx.save(relu_maxpool(), os.path.join(a.out, "relu_maxpool_64_111.onnx"))
    for name, cs in DYN_CONVS.items():
        onnx.save(dyn_conv(*cs, np.random.default_rng(1)), os.path.join(a.out, name + ".onnx"))
    for C, H in ((64, 111), (128, 55), (256, 27)):
        onnx.save(maxpool(C, H), os.path.join(a.out, f"maxpool_{C}_{H}.onnx"))
    for C, M, H in ((16, 64, 55), (32, 128, 27), (48, 192, 13), (64, 256, 13)):
        onnx.save(expand1x1(C, M, H, rng), os.path.join(a.out, f"expand1x1_{C}to{M}_{H}.onnx"))
    print("wrote", sorted(os.listdir(a.out)))


if __name__ == "__main__":
    main()
