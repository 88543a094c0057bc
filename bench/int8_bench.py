#!/usr/bin/env python3
"""int8 models in kiln next to onnxruntime, in the same run: median and p99 latency, kiln/ORT, and
how far kiln's outputs are from onnxruntime's (onnxruntime with its default graph optimisations,
which fuse the same QDQ and dynamic-quantisation patterns kiln fuses).

Models, built on the first run into --models-dir and reused after:
  bert_dyn   a small BERT (4 layers, width 256, 4 heads, S=128; random weights) exported by
             bench/int8_models.py with the torch environment (--torch-python), quantised with
             onnxruntime.quantization.quantize_dynamic (MatMulInteger form)
  mnv3_qdq   ../shared/models/mobilenet_v3_small.onnx quantised with quantize_static, QDQ format,
             per-channel int8 weights, uint8 activations, random calibration data
  mnv3_qop   the same in QOperator format (QLinearConv, QLinearAdd, ... nodes)

Each (model, runtime, threads) runs in its own process: load, one first run, 5 warm-up runs, then
--runs timed runs. Besides wall-clock latency each run's process CPU time is recorded: on a shared
machine it moves much less than the wall clock (at one thread it is the run's own work; at two it
is both threads' work added). --baseline DIR adds a column for another kiln checkout built in
DIR/build (e.g. the commit before the int8 work), run through its own python/ package.

  python3 bench/int8_bench.py                       # 1 and 2 threads, prints a table
  python3 bench/int8_bench.py --write               # also bench/results/int8_cpu.md
  python3 bench/int8_bench.py --baseline /tmp/base  # plus a column for an older build
"""
import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.environ.get("KILN_MODELS") or os.path.join(os.path.dirname(ROOT), "shared", "models")


# ---- models ----

def clean_identities(src, dst):
    """Identity nodes of initializers (how the shared MobileNetV3 holds its biases) replaced by
    the initializers, so that the quantiser sees constant biases."""
    import onnx
    m = onnx.load(src)
    inits = {i.name for i in m.graph.initializer}
    ren, keep = {}, []
    for n in m.graph.node:
        if n.op_type == "Identity" and n.input[0] in inits:
            ren[n.output[0]] = n.input[0]
        else:
            keep.append(n)
    for n in keep:
        for i, x in enumerate(n.input):
            if x in ren:
                n.input[i] = ren[x]
    del m.graph.node[:]
    m.graph.node.extend(keep)
    onnx.save(m, dst)


def build_models(d, torch_python):
    from onnxruntime.quantization import (CalibrationDataReader, QuantFormat, QuantType,
                                          quantize_dynamic, quantize_static)
    os.makedirs(d, exist_ok=True)
    paths = {}
    bert = os.path.join(d, "bert_small.onnx")
    if not os.path.exists(bert):
        r = subprocess.run([torch_python, os.path.join(ROOT, "bench", "int8_models.py"), d])
        if r.returncode:  # e.g. no transformers there: the MobileNet models need neither
            print("bert_small: not exported (exit %d); bert_dyn left out" % r.returncode,
                  file=sys.stderr)
    if os.path.exists(bert):
        paths["bert_dyn"] = os.path.join(d, "bert_dyn.onnx")
        if not os.path.exists(paths["bert_dyn"]):
            quantize_dynamic(bert, paths["bert_dyn"])

    mnv3 = os.path.join(d, "mnv3.onnx")
    if not os.path.exists(mnv3):
        clean_identities(os.path.join(SHARED, "mobilenet_v3_small.onnx"), mnv3)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.n = 0

        def get_next(self):
            if self.n >= 8:
                return None
            self.n += 1
            return {"image": np.random.default_rng(self.n).standard_normal((1, 3, 224, 224)).astype(np.float32)}

    for name, fmt in [("mnv3_qdq", QuantFormat.QDQ), ("mnv3_qop", QuantFormat.QOperator)]:
        paths[name] = os.path.join(d, name + ".onnx")
        if not os.path.exists(paths[name]):
            quantize_static(mnv3, paths[name], Reader(), quant_format=fmt, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return paths


def feeds_of(name):
    rng = np.random.default_rng(123)
    if name.startswith("bert"):
        return {"input_ids": rng.integers(0, 8000, (1, 128)).astype(np.int64),
                "attention_mask": np.ones((1, 128), np.int64)}
    return {"image": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)}


# ---- one measurement (child process) ----

def worker(runtime, name, path, threads, runs, out_npy):
    feeds = feeds_of(name)
    kiln_root = os.environ.get("INT8_BENCH_KILN_ROOT", ROOT)
    t0 = time.perf_counter()
    if runtime == "ort":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        run = lambda: s.run(None, feeds)  # noqa: E731
    else:
        sys.path.insert(0, os.path.join(kiln_root, "python"))
        import kiln
        s = kiln.InferenceSession(path, threads=threads)
        run = lambda: s.run(None, feeds)  # noqa: E731
    out = run()
    first = time.perf_counter() - t0
    np.save(out_npy, np.asarray(out[0]))
    for _ in range(5):
        run()
    ts, cs = [], []
    for _ in range(runs):
        t, c = time.perf_counter(), time.process_time()
        run()
        ts.append(time.perf_counter() - t)
        cs.append(time.process_time() - c)
    ts, cs = np.array(ts) * 1e3, np.array(cs) * 1e3
    print(json.dumps({"median": float(np.median(ts)), "p99": float(np.percentile(ts, 99)), "first": first * 1e3,
                      "cpu": float(np.median(cs))}))


def measure(runtime, name, path, threads, runs, out_npy, baseline=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    if runtime == "base":
        env.update(INT8_BENCH_KILN_ROOT=baseline, KILN_LIBRARY=os.path.join(baseline, "build", "libkiln.so"))
    r = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", runtime, name, path, str(threads),
                        str(runs), out_npy], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{runtime} {name}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models-dir", default=os.path.join(tempfile.gettempdir(), "kiln_int8_models"))
    ap.add_argument("--torch-python", default="/tmp/benchvenv/bin/python")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--runs", type=int, default=100)
    ap.add_argument("--models", default="bert_dyn,mnv3_qdq,mnv3_qop")
    ap.add_argument("--baseline", help="another kiln checkout with a build/ (a column 'kiln base')")
    ap.add_argument("--write", action="store_true", help="write bench/results/int8_cpu.md")
    ap.add_argument("--worker", nargs=6, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        rt, name, path, th, runs, out = a.worker
        worker(rt, name, path, int(th), int(runs), out)
        return
    paths = build_models(a.models_dir, a.torch_python)
    threads = [int(t) for t in a.threads.split(",")]
    rows = []
    tmp = tempfile.mkdtemp()
    for name in a.models.split(","):
        for th in threads:
            res = {}
            for rt in ("ort", "kiln") + (("base",) if a.baseline else ()):
                res[rt] = measure(rt, name, paths[name], th, a.runs, os.path.join(tmp, f"{name}_{rt}.npy"), a.baseline)
            ko, oo = np.load(os.path.join(tmp, f"{name}_kiln.npy")), np.load(os.path.join(tmp, f"{name}_ort.npy"))
            diff = float(np.abs(ko.astype(np.float64) - oo).max())
            same = float(np.mean(ko == oo))
            row = dict(model=name, threads=th, ort=res["ort"], kiln=res["kiln"], base=res.get("base"), diff=diff,
                       same=same, ref_max=float(np.abs(oo).max()))
            rows.append(row)
            print(f"{name:9s} {th} thr  ORT {res['ort']['median']:8.3f} ms (p99 {res['ort']['p99']:8.3f})  "
                  f"kiln {res['kiln']['median']:8.3f} ms (p99 {res['kiln']['p99']:8.3f})  "
                  f"kiln/ORT {res['kiln']['median'] / res['ort']['median']:.2f} (CPU time "
                  f"{res['kiln']['cpu'] / res['ort']['cpu']:.2f})  "
                  + (f"base {res['base']['median']:8.3f} ms  " if 'base' in res else "") +
                  f"max|diff| {diff:.3g} (outputs up to {row['ref_max']:.3g}), identical {same:.1%}", flush=True)
    if a.write:
        write_md(rows, a)


def write_md(rows, a):
    import onnxruntime as ort
    p = os.path.join(ROOT, "bench", "results", "int8_cpu.md")
    lines = ["# int8 models: kiln next to onnxruntime on the CPU", "",
             f"`python3 bench/int8_bench.py {' '.join(sys.argv[1:])}` on {cpu_name()} "
             f"({os.cpu_count()} cores; load average {os.getloadavg()[0]:.1f} at the end of the run: on a "
             "shared machine wall-clock figures move by tens of percent between runs, the CPU-time "
             "ratio much less), "
             f"onnxruntime {ort.__version__}, {time.strftime('%Y-%m-%d', time.gmtime())}. Each runtime in its own "
             "process; median and p99 over the timed runs, first = load plus first run.", "",
             "| model | threads | ORT median ms | ORT p99 | kiln median ms | kiln p99 | kiln/ORT | "
             "kiln/ORT CPU time | kiln base median ms (/ORT) | ORT first ms | kiln first ms | "
             "max abs diff (output scale) | identical |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        o, k, b = r["ort"], r["kiln"], r["base"]
        base = f"{b['median']:.3f} ({b['median'] / o['median']:.2f})" if b else "-"
        lines.append(f"| {r['model']} | {r['threads']} | {o['median']:.3f} | {o['p99']:.3f} | {k['median']:.3f} | "
                     f"{k['p99']:.3f} | {k['median'] / o['median']:.2f} | {k['cpu'] / o['cpu']:.2f} | {base} | "
                     f"{o['first']:.1f} | {k['first']:.1f} | {r['diff']:.3g} ({r['ref_max']:.3g}) | {r['same']:.1%} |")
    notes = ""  # a hand-written "## Notes" section of the previous file is kept
    if os.path.exists(p):
        with open(p) as f:
            old = f.read()
        if "\n## Notes" in old:
            notes = old[old.index("\n## Notes") + 1:].rstrip("\n")
    lines += ["", notes] if notes else []
    with open(p, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("wrote", p)


if __name__ == "__main__":
    main()
