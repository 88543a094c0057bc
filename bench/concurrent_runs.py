#!/usr/bin/env python3
"""Throughput of concurrent runs on one session: 8 Python threads sharing one session against one
thread, small MLP (batch 16, 256-512-512-128), intra-op threads 1, kiln and onnxruntime measured
alternately in the same process. Each figure is the median of --reps windows of --seconds each.
The machine's load average is recorded with the results, since other processes change how much
of the cores the threads get, and so is a calibration measured the same way: SHA-256 of 256 KiB
buffers, which Python computes with the GIL released, i.e. what the machine lets 8 threads reach
on perfectly parallel work at that moment. Writes bench/results/concurrent_runs.md.

    python3 bench/concurrent_runs.py [--seconds 2] [--reps 5] [--threads 8]
"""
import argparse
import hashlib
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import numpy as np
from onnx import TensorProto, helper, numpy_helper

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))


def model():
    rng = np.random.default_rng(0)
    dims = [256, 512, 512, 128]
    nodes, inits, x = [], [], "x"
    for i in range(3):
        inits += [numpy_helper.from_array((rng.standard_normal((dims[i], dims[i + 1])) * 0.05).astype(np.float32), "w%d" % i),
                  numpy_helper.from_array((rng.standard_normal(dims[i + 1]) * 0.05).astype(np.float32), "b%d" % i)]
        nodes += [helper.make_node("MatMul", [x, "w%d" % i], ["m%d" % i]),
                  helper.make_node("Add", ["m%d" % i, "b%d" % i], ["a%d" % i])]
        x = "a%d" % i
        if i < 2:
            nodes.append(helper.make_node("Relu", [x], ["r%d" % i]))
            x = "r%d" % i
    nodes.append(helper.make_node("Identity", [x], ["y"]))
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 256])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 128])], initializer=inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


class Sha256:
    """The calibration 'session': perfectly parallel work outside the GIL."""
    buf = os.urandom(256 << 10)

    def run(self, _names, _feed):
        hashlib.sha256(self.buf).digest()


class CStress:
    """kiln from C threads, no Python: build/test_concurrent_runs running the same model and feed
    (each call opens the sessions and checks outputs too, so its rate is a little low)."""

    def __init__(self, data, feed):
        self.exe = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "test_concurrent_runs")
        self.dir = tempfile.mkdtemp()
        self.model, self.feed = os.path.join(self.dir, "m.onnx"), os.path.join(self.dir, "f.npz")
        open(self.model, "wb").write(data)
        np.savez(self.feed, **feed)

    def throughput(self, threads, seconds, rate_guess=3000):
        runs = max(1, int(rate_guess * seconds / threads))
        t0 = time.perf_counter()
        subprocess.run([self.exe, "-t", str(threads), "-n", str(runs), self.model, self.feed], check=True,
                       stdout=subprocess.DEVNULL)
        return runs * threads / (time.perf_counter() - t0)


def sessions(data):
    import kiln
    import onnxruntime as ort
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    return {"kiln": kiln.InferenceSession(data, threads=1),
            "onnxruntime": ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])}


def throughput(s, feeds, threads, seconds):
    """Runs per second of `threads` threads running s for `seconds`."""
    counts = [0] * threads
    stop = threading.Event()
    start = threading.Barrier(threads + 1)

    def work(t):
        f = feeds[t % len(feeds)]
        start.wait()
        n = 0
        while not stop.is_set():
            s.run(None, f)
            n += 1
        counts[t] = n

    ts = [threading.Thread(target=work, args=(t,)) for t in range(threads)]
    for t in ts:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    time.sleep(seconds)
    stop.set()
    for t in ts:
        t.join()
    return sum(counts) / (time.perf_counter() - t0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=8)
    a = ap.parse_args()
    data = model()
    rng = np.random.default_rng(1)
    feeds = [{"x": rng.standard_normal((16, 256)).astype(np.float32)} for _ in range(a.threads)]
    ss = sessions(data)
    ref = ss["onnxruntime"].run(None, feeds[0])[0]
    np.testing.assert_allclose(ss["kiln"].run(None, feeds[0])[0], ref, rtol=1e-4, atol=1e-5)
    ss["calibration: sha256 (no GIL)"] = Sha256()
    cs = CStress(data, feeds[0])
    cstress = os.path.exists(cs.exe)
    for s in ss.values():  # warm-up: plans, pages, caches
        throughput(s, feeds, a.threads, 0.3)
    load0 = os.getloadavg()
    res = {k: {1: [], a.threads: []} for k in list(ss) + (["kiln from C threads (no Python)"] if cstress else [])}
    for _ in range(a.reps):  # the engines and thread counts alternate, so that load changes hit all
        for name, s in ss.items():
            for n in (1, a.threads):
                res[name][n].append(throughput(s, feeds, n, a.seconds))
        for n in (1, a.threads) if cstress else ():
            res["kiln from C threads (no Python)"][n].append(cs.throughput(n, a.seconds))
    load1 = os.getloadavg()
    rows = []
    for name in res:
        one, many = statistics.median(res[name][1]), statistics.median(res[name][a.threads])
        rows.append("| %s | %.0f | %.0f | %.2f× |" % (name, one, many, many / one))
    md = ("# Concurrent runs on one session\n\n"
          "`python3 bench/concurrent_runs.py --seconds %g --reps %d --threads %d`, %s UTC, %d CPUs.\n"
          "MLP 256-512-512-128 on a batch of 16 (float32), intra-op threads 1 in both engines; one\n"
          "session per engine shared by every thread. Runs per second, median of %d windows of %g s;\n"
          "the engines and thread counts alternate window by window.\n"
          "Load average (1, 5, 15 min) before: %.2f %.2f %.2f; after: %.2f %.2f %.2f (other\n"
          "engineers' builds and tests share this machine).\n\n"
          "| engine | 1 thread | %d threads | ratio |\n|---|---|---|---|\n%s\n\n"
          "Runs per second are not comparable between the calibration and the engines; its ratio is\n"
          "the most any engine could reach in these windows.\n"
          % (a.seconds, a.reps, a.threads, time.strftime("%Y-%m-%d %H:%M", time.gmtime()), os.cpu_count(), a.reps,
             a.seconds, *load0, *load1, a.threads, "\n".join(rows)))
    print(md)
    out = os.path.join(ROOT, "bench", "results", "concurrent_runs.md")
    with open(out, "w") as f:
        f.write(md)


if __name__ == "__main__":
    main()
