#!/usr/bin/env python3
"""Why GPT-2 runs slowly in kiln's default GPU session (bench/gpu_models rows "GPT-2 prefill" and
"GPT-2 decode"): per run wall times of the default session (first runs included, so a
specialisation's open shows), what the session's verbose log says about specialisation, the same
with specialisation off, and a per-op-type profile of one steady run.

  python3 scripts/gpu/gpt2_diag.py --models /tmp/gpu_models [--batch 1] [--steps 8]
"""
import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
import kiln  # noqa: E402

EPS = ["CUDAExecutionProvider", "CPUExecutionProvider"]


def stderr_to(path):
    """Points fd 2 at path (kiln's verbose log is C stdio); returns a function that restores it."""
    sys.stderr.flush()
    saved = os.dup(2)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    os.dup2(fd, 2)
    os.close(fd)

    def restore():
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
    return restore


def log_lines(path, keys=("specialis", "capture", "not specialising", "closing")):
    with open(path, errors="replace") as f:
        return [ln.rstrip() for ln in f if any(k in ln for k in keys)]


def op_profile(sess, fn, top=12):
    """Per (op type, provider): total ms of one fn() under kiln's profiler."""
    path = tempfile.mktemp(suffix=".json")
    sess.start_profiling(path)
    fn()
    out = sess.end_profiling() or path
    with open(out) as f:
        ev = json.load(f)
    agg = collections.defaultdict(lambda: [0.0, 0])
    for e in ev:
        a = e.get("args") or {}
        if "op_name" not in a:
            continue
        k = (a["op_name"], a.get("provider", "?"))
        agg[k][0] += e.get("dur", 0) / 1e3
        agg[k][1] += 1
    rows = sorted(agg.items(), key=lambda kv: -kv[1][0])
    total = sum(v[0] for v in agg.values())
    print("    profile: %.2f ms over %d nodes" % (total, sum(v[1] for v in agg.values())))
    for (op, prov), (ms, n) in rows[:top]:
        print("      %-28s %-24s %8.3f ms  %5d nodes" % (op, prov, ms, n))


def prefill(a, path):
    rng = np.random.default_rng(1)
    ids = rng.integers(0, 50257, size=(a.batch, a.seq), dtype=np.int64)
    for spec in (None, False):
        tag = "default" if spec is None else "specialize=False"
        log = os.path.join(a.out, "prefill_%s.log" % tag.replace("=", "_"))
        restore = stderr_to(log)
        try:
            t0 = time.perf_counter()
            s = kiln.InferenceSession(path, providers=EPS, verbose=True, specialize=spec)
            open_s = time.perf_counter() - t0
            name = s.get_inputs()[0].name
            times = []
            for _ in range(a.runs):
                t0 = time.perf_counter()
                s.run(None, {name: ids})
                times.append((time.perf_counter() - t0) * 1e3)
        finally:
            restore()
        print("prefill B=%d S=%d %s: open %.2f s, runs ms %s, specialisations %s" % (
            a.batch, a.seq, tag, open_s, " ".join("%.1f" % t for t in times), s.kiln_specializations()))
        for ln in log_lines(log)[:6]:
            print("    " + ln[:220])
        op_profile(s, lambda: s.run(None, {name: ids}))
        del s


def decode(a, path):
    rng = np.random.default_rng(2)
    probe = kiln.InferenceSession(path, providers=["CPUExecutionProvider"], specialize=False)
    ins = probe.get_inputs()
    del probe
    past = [rng.standard_normal((a.batch, 12, a.past, 64)).astype(np.float16) for _ in ins[1:]]
    steps = [rng.integers(0, 50257, size=(a.batch, 1), dtype=np.int64) for _ in range(a.steps)]
    names = [i.name for i in ins]

    for spec in (None, False):
        tag = "default" if spec is None else "specialize=False"
        log = os.path.join(a.out, "decode_%s.log" % tag.replace("=", "_"))
        restore = stderr_to(log)
        try:
            s = kiln.InferenceSession(path, providers=EPS, verbose=True, specialize=spec)

            def loop():
                p = past
                per = []
                for st in steps:
                    t0 = time.perf_counter()
                    p = s.run(None, dict(zip(names, [st] + list(p))))[1:]
                    per.append((time.perf_counter() - t0) * 1e3)
                return per
            loops = [loop() for _ in range(3)]
        finally:
            restore()
        print("decode B=%d past=%d %s: per-step ms, loop 1: %s | loop 3: %s" % (
            a.batch, a.past, tag, " ".join("%.0f" % t for t in loops[0][:8]),
            " ".join("%.1f" % t for t in loops[2][:8])))
        print("    loop medians: %s; specialisations %s" % (
            " ".join("%.1f" % float(np.median(x)) for x in loops), s.kiln_specializations()))
        for ln in log_lines(log)[:5]:
            print("    " + ln[:220])
        feed = dict(zip(names, [steps[0]] + past))
        s.run(None, feed)
        op_profile(s, lambda: s.run(None, feed))
        del s


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", required=True)
    ap.add_argument("--out", default=tempfile.mkdtemp())
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--past", type=int, default=512)
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--runs", type=int, default=6)
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    prefill(a, os.path.join(a.models, "gpt2_prefill.fp16.onnx"))
    decode(a, os.path.join(a.models, "gpt2_decode.fp16.onnx"))


if __name__ == "__main__":
    main()
