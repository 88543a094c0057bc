#!/usr/bin/env python3
"""Per-convolution time of one model in kiln and in onnxruntime, layer by layer: which layers of a
CNN lose, and by how much. node_profile.py sums by op type or convolution kind; here the two
profiles' convolutions are paired in graph order (kiln fuses BatchNormalization and activations
into its convs, ORT into its NCHWc convs, and neither drops or adds a convolution), and each row
shows ORT's input and weight shapes (ORT pads NCHWc channels to 16: 72 shows as 80), kiln's and
ORT's ms per run, and their ratio. Also prints the totals by kind.

  python3 bench/layer_profile.py /tmp/cpu_models/mobilenetv3.onnx --batch 8 --threads 1
"""
import argparse
import collections
import os
import re
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "bench"))
sys.path.insert(0, os.path.join(ROOT, "python"))
import node_profile as npf  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    import kiln
    import onnxruntime as ort
    feeds = npf.feeds_for(a.model, a.batch)
    tmp = tempfile.mkdtemp()
    s = kiln.InferenceSession(a.model, threads=a.threads)
    for _ in range(3):
        s.run(None, feeds)
    s.start_profiling(os.path.join(tmp, "k.json"))
    for _ in range(a.runs):
        s.run(None, feeds)
    kn = npf.node_times(s.end_profiling(), a.runs)
    so = ort.SessionOptions()
    so.intra_op_num_threads = a.threads
    so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tmp, "o")
    o = ort.InferenceSession(a.model, so, providers=["CPUExecutionProvider"])
    for _ in range(3 + a.runs):
        o.run(None, feeds)
    on = npf.node_times(o.end_profiling(), a.runs)
    convs = ("Conv", "FusedConv")
    kc = [v for v in kn.values() if v[1] in convs]
    oc = [v for v in on.values() if v[1] in convs]
    if len(kc) != len(oc):
        sys.exit("kiln ran %d convolutions, ORT %d: cannot pair them" % (len(kc), len(oc)))
    by_kind = collections.defaultdict(lambda: [0.0, 0.0])
    print("%-9s %-20s %-18s %9s %9s %6s" % ("kind", "input (ORT)", "weight", "kiln ms", "ORT ms", "ratio"))
    for kv, ov in zip(kc, oc):
        ins = ov[3] or [[], []]
        y = [int(v) for v in re.findall(r"\d+", ov[2])]
        kind = npf.conv_kind(ins[1], ins[0], y) if len(ins) > 1 else "conv"
        by_kind[kind][0] += kv[0]
        by_kind[kind][1] += ov[0]
        print("%-9s %-20s %-18s %9.3f %9.3f %6.2f" % (kind, "x".join(map(str, ins[0])), "x".join(map(str, ins[1])),
                                                    kv[0], ov[0], kv[0] / max(ov[0], 1e-9)))
    print("\nby kind: kiln ms, ORT ms, ratio")
    for kind, (k, v) in sorted(by_kind.items(), key=lambda kv: -kv[1][0]):
        print("  %-9s %8.3f %8.3f %6.2f" % (kind, k, v, k / max(v, 1e-9)))


if __name__ == "__main__":
    main()
