#!/usr/bin/env python3
"""Per-call cost of the Python bindings on a one-node model (Add of 4 floats, 1 thread): kiln's C
extension, kiln's ctypes fallback and onnxruntime, median of many calls, each in its own process.
Writes bench/results/python_overhead.md.   python3 bench/python_overhead.py [--calls N]"""
import argparse, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def worker(engine, calls):
    import numpy as np
    from onnx import TensorProto, helper
    g = helper.make_graph([helper.make_node("Add", ["a", "b"], ["c"])], "g",
                          [helper.make_tensor_value_info(n, TensorProto.FLOAT, [4]) for n in "ab"],
                          [helper.make_tensor_value_info("c", TensorProto.FLOAT, [4])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    data = m.SerializeToString()
    feeds = {"a": np.arange(1, 5, dtype=np.float32), "b": np.full(4, 0.5, np.float32)}
    if engine == "ort":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        s = ort.InferenceSession(data, so, providers=["CPUExecutionProvider"])
    else:
        sys.path.insert(0, os.path.join(ROOT, "python"))
        import kiln
        s = kiln.InferenceSession(data, threads=1)
    for _ in range(1000):
        s.run(None, feeds)
    t = []
    for _ in range(calls):
        t0 = time.perf_counter()
        s.run(None, feeds)
        t.append(time.perf_counter() - t0)
    t.sort()
    print("%.3f" % (t[len(t) // 2] * 1e6))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--calls", type=int, default=10000)
    ap.add_argument("--worker")
    a = ap.parse_args()
    if a.worker:
        return worker(a.worker, a.calls)
    rows = []
    for label, engine, env in (("kiln (C extension)", "kiln", {}), ("kiln (ctypes fallback)", "kiln", {"KILN_PYTHON_CTYPES": "1"}),
                               ("onnxruntime", "ort", {})):
        p = subprocess.run([sys.executable, __file__, "--worker", engine, "--calls", str(a.calls)],
                           capture_output=True, text=True, env=dict(os.environ, **env), check=True)
        rows.append((label, float(p.stdout.strip().splitlines()[-1])))
    md = ("# Python binding cost per call\n\nOne Add of 4 floats, 1 thread, median of %d calls after 1000 warm-up, "
          "each engine in its own process (`python3 bench/python_overhead.py`), %s.\n\n| engine | µs per run() |\n|---|---|\n"
          % (a.calls, time.strftime("%Y-%m-%d"))) + "".join("| %s | %.2f |\n" % r for r in rows)
    print(md)
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    open(os.path.join(ROOT, "bench", "results", "python_overhead.md"), "w").write(md)


if __name__ == "__main__":
    main()
