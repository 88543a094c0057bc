#!/usr/bin/env python3
"""Accuracy and speed of kiln's opt-in bfloat16 CPU mode (kiln_options.cpu_bf16; Python bf16=True)
against float32 on the benchmark models.

For every model: the same inputs through a float32 session and a bfloat16 session; per output the
largest absolute difference, the relative L2 error ||y_bf16 - y_f32|| / ||y_f32||, and, for outputs
whose last axis holds scores (classifier logits, language-model logits), top-1 agreement: how often
the argmax over that axis is the same. Then the median time of a run, float32 and bfloat16, at each
--threads count.

Models: the float32 files that bench/gpu_models/export.py writes (BERT-base, GPT-2 prefill, ViT-B/16,
ResNet-50; random weights), found through --models-dir's manifest.json, and the small models in
../shared/models (with their stored inputs). Export first, with the virtual environment that has torch:

  /tmp/benchvenv/bin/python bench/gpu_models/export.py --out /tmp/bf16_models --precisions fp32 --no-check
  python3 bench/bf16_accuracy.py --models-dir /tmp/bf16_models --threads 1 2 --out bench/results/bf16_accuracy.md

On a 16-core machine: --threads 1 16 (each timing stops after --budget seconds, so the whole run
stays within a few minutes). KILN_NO_AMX=1 in the environment keeps AMX off (the AVX512-BF16 kernel
then runs); the report says which the CPU offers.
"""
import argparse
import glob
import json
import os
import platform
import sys
import time
import warnings

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
import kiln  # noqa: E402

IMAGE_CLASSIFIERS = ("resnet", "vit", "mobilenet")


def cpu_summary():
    name, flags = platform.processor() or "?", set()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name") and name in ("?", "", "x86_64"):
                    name = line.split(":", 1)[1].strip()
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    unit = "AMX-BF16" if {"amx_bf16", "amx_tile"} <= flags and not os.environ.get("KILN_NO_AMX") else \
        "AVX512-BF16" if "avx512_bf16" in flags else "none (float32 fallback)"
    return "%s, %d logical CPUs; bfloat16 unit: %s" % (name, os.cpu_count() or 0, unit)


def make_feeds(sess, rng, batch, seq, vocab):
    feeds = {}
    for i in sess.get_inputs():
        dims = []
        for k, d in enumerate(i.shape):
            dims.append(d if isinstance(d, int) and d > 0 else batch if k == 0 else seq)
        if "int" in i.type:
            dt = np.int64 if "int64" in i.type else np.int32
            if "mask" in i.name:
                feeds[i.name] = np.ones(dims, dt)
            elif "type" in i.name:
                feeds[i.name] = np.zeros(dims, dt)
            else:
                feeds[i.name] = rng.integers(0, vocab, size=dims).astype(dt)
        else:
            feeds[i.name] = rng.standard_normal(dims).astype(np.float32)
    return feeds


def models_to_run(a):
    """(label, path, feeds or None, vocab, batch) for every model."""
    out = []
    man = os.path.join(a.models_dir, "manifest.json") if a.models_dir else None
    if man and os.path.exists(man):
        with open(man) as f:
            m = json.load(f)
        for graph, g in m.get("graphs", {}).items():
            if graph in a.skip:
                continue
            path = os.path.join(a.models_dir, g["files"].get("fp32", "%s.fp32.onnx" % graph)) \
                if isinstance(g.get("files", {}).get("fp32"), str) else os.path.join(a.models_dir, "%s.fp32.onnx" % graph)
            if not os.path.exists(path):
                print("skipping %s: %s not found" % (graph, path))
                continue
            image = any(k in graph for k in IMAGE_CLASSIFIERS)
            out.append((graph, path, None, int(g.get("vocab", 1000)), a.image_batch if image else a.batch))
    elif a.models_dir:
        print("no manifest.json in %s: export the models first (see --help)" % a.models_dir)
    for path in sorted(glob.glob(os.path.join(a.shared, "*.onnx"))):
        name = os.path.basename(path)[:-5]
        if "fp16" in name or name in a.skip:
            continue
        ref = path[:-5] + ".ref.npz"
        feeds = None
        # image classifiers get a random batch (top-1 over one stored image says little)
        if os.path.exists(ref) and not any(k in name for k in IMAGE_CLASSIFIERS):
            d = np.load(ref)
            feeds = {k[3:]: d[k] for k in d.files if k.startswith("in.")}
        out.append((name, path, feeds, 1000, a.image_batch))
    return out


def open_session(path, threads, bf16):
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        s = kiln.InferenceSession(path, threads=threads, bf16=bf16)
    for x in w:
        print("  warning: %s" % x.message)
    return s


def time_runs(s, feeds, budget, most):
    s.run(None, feeds)  # warm-up
    times, t_end = [], time.perf_counter() + budget
    while len(times) < most and (len(times) < 3 or time.perf_counter() < t_end):
        t0 = time.perf_counter()
        s.run(None, feeds)
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def compare(name, outs_f, outs_b, names):
    rows = []
    for n, yf, yb in zip(names, outs_f, outs_b):
        yf, yb = np.asarray(yf), np.asarray(yb)
        if yf.dtype.kind != "f" or yf.size == 0:
            continue
        d = np.abs(yb.astype(np.float64) - yf)
        rel = np.linalg.norm(yb.astype(np.float64) - yf) / max(np.linalg.norm(yf.astype(np.float64)), 1e-30)
        top1 = ""
        # scores over the last axis: image classes, or a language model's vocabulary
        if yf.ndim >= 2 and yf.shape[-1] >= 10 and ("logit" in n or (
                yf.shape[-1] == 1000 and any(k in name for k in IMAGE_CLASSIFIERS))):
            sf, sb = yf.reshape(-1, yf.shape[-1]), yb.reshape(-1, yf.shape[-1])
            af, ab = sf.argmax(1), sb.argmax(1)
            top5 = np.argsort(-sb, axis=1)[:, :5]
            in5 = np.mean([af[i] in top5[i] for i in range(af.size)])
            top1 = "%d/%d (%.1f%%); in top-5: %.1f%%" % ((af == ab).sum(), af.size, 100.0 * (af == ab).mean(),
                                                         100.0 * in5)
        rows.append((n, "x".join(map(str, yf.shape)), float(d.max()), float(np.abs(yf).max()), rel, top1))
    if len(rows) > 3:  # a decoder's K/V cache outputs: one row for all of them past the first two
        rest = rows[2:]
        rows = rows[:2] + [("%s .. %s (%d outputs; worst)" % (rest[0][0], rest[-1][0], len(rest)), rest[0][1],
                            max(r[2] for r in rest), max(r[3] for r in rest), max(r[4] for r in rest), "")]
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default="/tmp/bf16_models", help="export.py's --out folder")
    ap.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "models"))
    ap.add_argument("--threads", nargs="+", type=int, default=[1, 2])
    ap.add_argument("--batch", type=int, default=4, help="batch of the text models")
    ap.add_argument("--image-batch", type=int, default=8, help="batch of the image models (top-1 over it)")
    ap.add_argument("--seq", type=int, default=128, help="sequence length of the text models")
    ap.add_argument("--skip", nargs="*", default=["gpt2_decode"], help="graphs to leave out")
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per configuration")
    ap.add_argument("--most", type=int, default=50, help="most timed runs per configuration")
    ap.add_argument("--out", default=None, help="write the report (markdown) here too")
    a = ap.parse_args()

    lines = ["# bfloat16 CPU mode (cpu_bf16) against float32", "",
             "Machine: %s." % cpu_summary(),
             "Produced by `python3 bench/bf16_accuracy.py %s`; kiln %s, numpy %s." % (
                 " ".join(sys.argv[1:]), getattr(kiln, "__version__", "?"), np.__version__), "",
             "Errors are of the bfloat16 session's outputs against the float32 session's (same inputs; random "
             "weights). rel L2 = ||y_bf16 - y_f32|| / ||y_f32||. top-1: argmax over the last axis (classes, "
             "or vocabulary per position) agreeing; in top-5: the float32 top-1 among the bfloat16 session's 5 "
             "highest. With random weights the scores are nearly flat (small margins), so this is a harsh test.", "",
             "| model | output | shape | max abs err | max abs y | rel L2 | top-1 agreement |",
             "|---|---|---|---|---|---|---|"]
    speed = ["", "| model | threads | float32 ms | bfloat16 ms | speed-up |", "|---|---|---|---|---|"]
    rng = np.random.default_rng(0)
    t_all = time.time()
    for name, path, feeds, vocab, batch in models_to_run(a):
        print("%s (%s)" % (name, path), flush=True)
        top = max(a.threads)
        sf = open_session(path, top, False)
        if feeds is None:
            feeds = make_feeds(sf, rng, batch, a.seq, vocab)
        names = [o.name for o in sf.get_outputs()]
        sb = open_session(path, top, True)
        of, ob = sf.run(None, feeds), sb.run(None, feeds)
        for n, shape, dmax, ymax, rel, top1 in compare(name, of, ob, names):
            lines.append("| %s | %s | %s | %.3g | %.3g | %.2e | %s |" % (name, n, shape, dmax, ymax, rel, top1 or "-"))
            print("  %s %s: max abs %.3g (|y| up to %.3g), rel L2 %.2e %s" % (n, shape, dmax, ymax, rel, top1))
        del sf, sb
        for t in a.threads:
            tf = time_runs(open_session(path, t, False), feeds, a.budget, a.most)
            tb = time_runs(open_session(path, t, True), feeds, a.budget, a.most)
            speed.append("| %s | %d | %.2f | %.2f | %.2fx |" % (name, t, tf, tb, tf / tb))
            print("  threads %d: float32 %.2f ms, bfloat16 %.2f ms (%.2fx)" % (t, tf, tb, tf / tb), flush=True)
    lines += speed
    lines += ["", "Total time of this report: %.0f s." % (time.time() - t_all)]
    text = "\n".join(lines) + "\n"
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
        print("wrote %s" % a.out)


if __name__ == "__main__":
    main()
