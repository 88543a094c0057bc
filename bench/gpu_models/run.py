#!/usr/bin/env python3
"""kiln's CUDA provider against PyTorch on whole models, float16, at batch 1, 8 and 32.

Reads the folder that export.py wrote (manifest.json and the .onnx files) and, for every row of the
manifest (BERT-base S=128 and 512, GPT-2 prefill S=512, GPT-2 decode of one token after a 512-token
K/V cache, ViT-B/16 and ResNet-50 at 224x224), times:
  kiln GPU       providers CUDA then CPU, numpy in and out: the upload and the download are inside
  eager          the same weights in PyTorch (float16, SDPA attention), inputs and outputs on the GPU
  eager+copy     the same, from host tensors to host tensors (.to(cuda) of the inputs, .cpu() of every
                 output): what kiln's numpy path does, done by PyTorch
  compile        torch.compile(dynamic=True) of the eager module, device-resident like eager
  kiln/ORT CPU   the float32 file on the CPU (16 threads), batch 1 only
Decode rows run `steps` tokens, each step feeding the previous step's present K/V back as past,
and report milliseconds per token. Every time is the median of N runs after warm-up, with
torch.cuda.synchronize() before and after each. rel err is max|kiln - torch| / max|torch| over all
outputs (decode: the first step), against eager PyTorch.

Phases, so that a short budget still gets the main columns: (1) kiln GPU and eager for all rows,
(2) the CPU columns, (3) torch.compile. BUDGET_S (default 420 s) or --budget bounds the whole run:
what does not fit is skipped with a note, never half-measured.

  python3 bench/gpu_models/run.py --models DIR --out RESULTS
  python3 bench/gpu_models/run.py --models /tmp/tiny --out /tmp/r --cpu-smoke   # no GPU: code paths only
"""
import argparse
import json
import math
import os
import platform
import signal
import statistics
import sys
import time
import traceback

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.append(os.path.join(os.path.dirname(os.path.dirname(HERE)), "python"))  # PYTHONPATH's kiln first
import models as M  # noqa: E402

LABEL = {"bert": "BERT-base", "gpt2_prefill": "GPT-2 prefill", "gpt2_decode": "GPT-2 decode",
         "vit": "ViT-B/16", "resnet50": "ResNet-50"}
CUDA_EP, CPU_EP = "CUDAExecutionProvider", "CPUExecutionProvider"


class Budget:
    def __init__(self, seconds):
        self.seconds, self.end = seconds, time.time() + seconds

    def left(self):
        return self.end - time.time()


class Timer:
    """Median milliseconds of fn(). The first call (lazy set-up included) and up to `warmup` more are
    not timed; then as many runs as fit target_s, at least lo (3 where one run is over target_s, as a
    32-step decode at batch 32 with host copies is), at most hi."""

    def __init__(self, sync, warmup, target_s, lo, hi):
        self.sync, self.warmup, self.target_s, self.lo, self.hi = sync, warmup, target_s, lo, hi

    def once(self, fn):
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def median_ms(self, fn):
        first = self.once(fn)
        for _ in range(min(self.warmup - 1, int(self.target_s / first))):
            fn()
        t = [self.once(fn)]
        lo = self.lo if t[0] < self.target_s else min(self.lo, 3)
        n = int(min(self.hi, max(lo, self.target_s / t[0])))
        t += [self.once(fn) for _ in range(n - 1)]
        return statistics.median(t) * 1e3


class Alarm:
    """Raises TimeoutError in the main thread after `seconds` (SIGALRM): bounds a compile."""

    def __init__(self, seconds):
        self.seconds = max(1, int(seconds))

    def _fire(self, *_):
        raise TimeoutError("over %d s" % self.seconds)

    def __enter__(self):
        self.old = signal.signal(signal.SIGALRM, self._fire)
        signal.alarm(self.seconds)

    def __exit__(self, *exc):
        signal.alarm(0)
        signal.signal(signal.SIGALRM, self.old)


def rel_err(ref, got):
    err = 0.0
    for r, g in zip(ref, got):
        r = r.float().cpu().numpy() if torch.is_tensor(r) else np.asarray(r, np.float32)
        g = np.asarray(g, np.float32)
        if r.shape != g.shape:
            return float("inf")
        err = max(err, float(np.abs(g - r).max() / max(float(np.abs(r).max()), 1e-6)))
    return err


def torch_runner(module, device, copies):
    """xs -> outputs. copies: xs are host tensors, moved to the device, and outputs come back .cpu()."""
    def run(xs):
        with torch.inference_mode():
            if copies:
                xs = [x.to(device) for x in xs]
            out = module(*xs)
            out = list(out) if isinstance(out, (tuple, list)) else [out]
            return [o.cpu() for o in out] if copies else out
    return run


def onnx_runner(sess, names):
    return lambda xs: sess.run(None, dict(zip(names, xs)))


def workload(run, inputs, step_ids=None):
    """fn() for the timer: one forward, or (decode) len(step_ids) steps, each step's presents fed
    back as the next step's past."""
    if step_ids is None:
        return lambda: run(inputs)

    def loop():
        past = inputs[1:]
        for ids in step_ids:
            past = run([ids] + list(past))[1:]
    return loop


class Bench:
    def __init__(self, a):
        self.a, self.smoke = a, a.cpu_smoke
        self.dev = "cpu" if a.cpu_smoke else "cuda"
        self.sync = torch.cuda.synchronize if self.dev == "cuda" else (lambda: None)
        self.timer = Timer(self.sync, a.warmup, a.target_s, a.min_runs, a.max_runs)
        self.budget = Budget(a.budget)
        with open(os.path.join(a.models, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.rows, self.notes, self.modules = [], [], {}
        try:
            import kiln
            self.kiln, self.kiln_error = kiln, None
        except Exception as e:  # noqa: BLE001 - no kiln: its columns say why
            self.kiln, self.kiln_error = None, "import kiln: %s" % e
            self.notes.append(self.kiln_error)

    def note(self, row, text):
        print("    note: " + text, flush=True)
        (row["notes"] if row is not None else self.notes).append(text)

    def path(self, graph, prec):
        return os.path.join(self.a.models, self.manifest["graphs"][graph]["files"][prec])

    def module(self, graph):
        """The eager PyTorch module of a graph: float16, SDPA attention, on the device; the weights
        must match the exported ones (checksum)."""
        if graph not in self.modules:
            entry = self.manifest["graphs"][graph]
            built = M.build_graphs(entry["model"], tiny=self.manifest["tiny"], attn="sdpa")
            got = M.weight_checksum(built[graph])
            if got != entry["checksum"]:
                raise RuntimeError("%s: weights differ from the exported ones (%s vs %s)"
                                   % (graph, got, entry["checksum"]))
            for g, mod in built.items():
                self.modules[g] = mod.to(self.dev, torch.float16)
        return self.modules[graph]

    def case_inputs(self, graph, case, seed=1):
        """(host torch tensors in input order, decode step ids as host tensors or None)."""
        mod = self.module(graph)
        xs = list(M.make_inputs(graph, mod, case["batch"], case.get("seq"), case.get("past"),
                                dtype=torch.float16, seed=seed))
        if graph != "gpt2_decode":
            return xs, None
        g = torch.Generator().manual_seed(seed + 1)
        vocab = mod.m.config.vocab_size
        return xs, [torch.randint(0, vocab, (case["batch"], 1), generator=g) for _ in range(case["steps"])]

    def kiln_session(self, path, providers, threads=None):
        t0 = time.time()
        s = self.kiln.InferenceSession(path, providers=providers, threads=threads)
        info = {"open_s": round(time.time() - t0, 2), "providers": list(s.get_providers())}
        if hasattr(s, "node_placement"):
            placed = [p for _, p in s.node_placement()]
            info["cuda_node_frac"] = sum(p == CUDA_EP for p in placed) / max(len(placed), 1)
            info["nodes"] = len(placed)
        return s, info

    # ---- phase 1: kiln GPU and eager PyTorch --------------------------------------------------
    def phase_gpu(self):
        for graph, entry in self.manifest["graphs"].items():
            sess, info, kiln_err = None, None, None if self.kiln else "kiln: " + self.kiln_error
            for case in entry["cases"]:
                row = dict(graph=graph, batch=case["batch"], seq=case.get("seq"), past=case.get("past"),
                           steps=case.get("steps"), notes=[])
                self.rows.append(row)
                if self.budget.left() < self.a.row_reserve_s:
                    self.note(row, "skipped: budget")
                    continue
                print("%s batch %d %s" % (LABEL[graph], case["batch"], seq_label(row)), flush=True)
                try:
                    xs, ids = self.case_inputs(graph, case)
                    dev_xs, dev_ids = [x.to(self.dev) for x in xs], ids and [i.to(self.dev) for i in ids]
                    per, eager = len(ids) if ids else 1, torch_runner(self.module(graph), self.dev, copies=False)
                    ref = eager([dev_ids[0]] + dev_xs[1:] if ids else dev_xs)
                    row["eager_ms"] = self.timer.median_ms(workload(eager, dev_xs, dev_ids)) / per
                    copy = torch_runner(self.module(graph), self.dev, copies=True)
                    row["eager_copy_ms"] = self.timer.median_ms(workload(copy, xs, ids)) / per
                except Exception as e:  # noqa: BLE001 - e.g. out of memory: the row stays empty
                    self.note(row, "torch: %s" % first_line(e))
                    continue
                if sess is None and kiln_err is None:
                    try:
                        sess, info = self.kiln_session(self.path(graph, "fp16"), [CUDA_EP, CPU_EP])
                        print("    kiln session: %s" % info, flush=True)
                        if CUDA_EP not in info["providers"] or not info.get("cuda_node_frac", 1):
                            self.note(None, "%s: kiln's GPU session reports providers %s, %s of nodes on CUDA"
                                      % (graph, info["providers"], info.get("cuda_node_frac", "?")))
                    except Exception as e:  # noqa: BLE001 - reported once, for every row of the graph
                        kiln_err = "kiln GPU session: %s" % first_line(e)
                if kiln_err:
                    self.note(row, kiln_err)
                    continue
                row.update(kiln_providers=info["providers"], kiln_open_s=info["open_s"],
                           cuda_node_frac=info.get("cuda_node_frac"))
                try:
                    run = onnx_runner(sess, entry_names(entry, "fp16"))
                    np_xs, np_ids = [x.numpy() for x in xs], ids and [i.numpy() for i in ids]
                    row["rel_err"] = rel_err(ref, run([np_ids[0]] + np_xs[1:] if ids else np_xs))
                    row["kiln_gpu_ms"] = self.timer.median_ms(workload(run, np_xs, np_ids)) / per
                except Exception as e:  # noqa: BLE001
                    self.note(row, "kiln GPU: %s" % first_line(e))
                print("    %s" % fmt_row(row), flush=True)
            del sess
            self.sync()
            if self.dev == "cuda":
                torch.cuda.empty_cache()

    # ---- phase 2: CPU columns at batch 1 ------------------------------------------------------
    def phase_cpu(self):
        threads = self.a.cpu_threads
        for row in self.rows:
            if row["batch"] != 1 or "eager_ms" not in row:
                continue
            graph, entry = row["graph"], self.manifest["graphs"][row["graph"]]
            if "fp32" not in entry["files"]:
                self.note(row, "CPU: no fp32 file")
                continue
            case = next(c for c in entry["cases"] if c["batch"] == 1 and c.get("seq") == row["seq"])
            xs, ids = self.case_inputs(graph, case)
            np_xs = [x.float().numpy() if x.is_floating_point() else x.numpy() for x in xs]
            np_ids, per = ids and [i.numpy() for i in ids], case.get("steps") or 1
            ref = torch_runner(self.module(graph), self.dev, copies=True)([ids[0]] + xs[1:] if ids else xs)
            for col, make in (("kiln_cpu", self._kiln_cpu), ("ort_cpu", self._ort_cpu)):
                if self.budget.left() < self.a.row_reserve_s:
                    self.note(row, "%s skipped: budget" % col)
                    continue
                try:
                    sess = make(self.path(graph, "fp32"), threads)
                    run = onnx_runner(sess, entry_names(entry, "fp32"))
                    row[col + "_rel_err"] = rel_err(ref, run([np_ids[0]] + np_xs[1:] if ids else np_xs))
                    row[col + "_ms"] = self.timer.median_ms(workload(run, np_xs, np_ids)) / per
                    del sess
                except Exception as e:  # noqa: BLE001
                    self.note(row, "%s: %s" % (col, first_line(e)))
            print("%s batch 1 CPU: kiln %s ms, ORT %s ms" % (LABEL[graph], ms(row.get("kiln_cpu_ms")),
                                                             ms(row.get("ort_cpu_ms"))), flush=True)

    def _kiln_cpu(self, path, threads):
        if self.kiln is None:
            raise RuntimeError(self.kiln_error)
        return self.kiln_session(path, [CPU_EP], threads)[0]

    def _ort_cpu(self, path, threads):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = threads, 1
        return ort.InferenceSession(path, so, providers=[CPU_EP])

    # ---- phase 3: torch.compile ---------------------------------------------------------------
    def phase_compile(self):
        failed = {}
        for row in sorted(self.rows, key=lambda r: r["batch"] == 1):  # batch 1 recompiles: last
            graph = row["graph"]
            if "eager_ms" not in row:
                continue
            if graph in failed:
                row["compile"] = failed[graph]
                continue
            left = self.budget.left() - self.a.row_reserve_s
            if left < 20:
                self.note(row, "compile skipped: budget")
                continue
            entry = self.manifest["graphs"][graph]
            case = next(c for c in entry["cases"] if c["batch"] == row["batch"] and c.get("seq") == row["seq"])
            xs, ids = self.case_inputs(graph, case)
            dev_xs, dev_ids = [x.to(self.dev) for x in xs], ids and [i.to(self.dev) for i in ids]
            fn = workload(torch_runner(self._compiled(graph), self.dev, copies=False), dev_xs, dev_ids)
            try:
                t0 = time.time()
                with Alarm(min(self.a.compile_timeout, left)):
                    fn()  # compiles (first shape of this graph) or recompiles, under the time box
                    self.sync()
                row["compile_s"] = round(time.time() - t0, 1)
                row["compile_ms"] = self.timer.median_ms(fn) / (case.get("steps") or 1)
            except Exception as e:  # noqa: BLE001 - TimeoutError or a compiler error
                failed[graph] = "n/a (%s)" % first_line(e)
                row["compile"] = failed[graph]
                self.note(row, "torch.compile " + failed[graph])
                torch._dynamo.reset()
            print("%s batch %d compile: %s ms (%s s to compile)" % (
                LABEL[graph], row["batch"], ms(row.get("compile_ms")), row.get("compile_s", "-")), flush=True)

    def _compiled(self, graph):
        key = graph + ":compiled"
        if key not in self.modules:
            self.modules[key] = torch.compile(self.module(graph), dynamic=True, mode=self.a.compile_mode)
        return self.modules[key]


def first_line(e):
    text = str(e).strip()
    return "%s: %s" % (type(e).__name__, text.splitlines()[0][:300] if text else "")


def entry_names(entry, prec):
    return [i["name"] for i in entry["inputs"][prec]]


def ms(v):
    return "-" if v is None else "%.2f" % v if v < 100 else "%.0f" % v


def ratio(a, b):
    return b / a if a and b else None


def fmt_row(r):
    return "kiln %s ms  eager %s  eager+copy %s  rel err %s" % (
        ms(r.get("kiln_gpu_ms")), ms(r.get("eager_ms")), ms(r.get("eager_copy_ms")),
        "-" if r.get("rel_err") is None else "%.1e" % r["rel_err"])


def seq_label(r):
    if r["graph"] == "gpt2_decode":
        return "1 (+%d past)" % r["past"]
    return str(r["seq"]) if r["seq"] else "224px"


def geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def report(rows, notes, env, bench_s):
    def x(v):
        return "-" if v is None else "%.2fx" % v
    head = ["model", "batch", "seq", "kiln GPU ms", "eager ms", "eager+copy ms", "compile ms", "kiln CPU ms",
            "ORT CPU ms", "vs eager", "vs eager+copy", "vs compile", "rel err", "% nodes CUDA"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        k = r.get("kiln_gpu_ms")
        err = r.get("rel_err")
        frac = r.get("cuda_node_frac")
        lines.append("| " + " | ".join([
            LABEL[r["graph"]], str(r["batch"]), seq_label(r), ms(k), ms(r.get("eager_ms")),
            ms(r.get("eager_copy_ms")), ms(r.get("compile_ms")) if "compile" not in r else "n/a",
            ms(r.get("kiln_cpu_ms")), ms(r.get("ort_cpu_ms")), x(ratio(k, r.get("eager_ms"))),
            x(ratio(k, r.get("eager_copy_ms"))), x(ratio(k, r.get("compile_ms"))),
            "-" if err is None else "%.1e%s" % (err, "" if err < 2e-2 else " !"),
            "?" if frac is None else "%.0f%%" % (100 * frac)]) + " |")
    gm = {k: geomean([ratio(r.get("kiln_gpu_ms"), r.get(k + "_ms")) for r in rows])
          for k in ("eager", "eager_copy", "compile")}
    lines += ["", "Geometric mean of the speedup of kiln GPU (>1: kiln faster): vs eager %s, vs eager+copy %s, "
              "vs torch.compile %s (over the rows that have both)." % (x(gm["eager"]), x(gm["eager_copy"]),
                                                                     x(gm["compile"]))]
    lines += ["", "Times are medians in ms (decode: per token). kiln GPU takes numpy inputs and returns numpy "
              "outputs (upload and download included); eager and compile keep both on the GPU; eager+copy "
              "moves inputs up and every output down like kiln. CPU columns: the float32 file, batch 1, "
              "%s threads. rel err: max|kiln - eager| / max|eager| (! over 2e-2)." % env["cpu_threads"]]
    notes_all = notes + ["%s batch %d: %s" % (LABEL[r["graph"]], r["batch"], n) for r in rows for n in r["notes"]]
    if notes_all:
        lines += ["", "Notes:"] + ["- " + n for n in notes_all]
    lines += ["", "Environment: " + ", ".join("%s %s" % kv for kv in env.items()) + "; benchmark took %.0f s."
              % bench_s]
    return "\n".join(lines) + "\n", gm


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", required=True, help="the folder export.py wrote")
    ap.add_argument("--out", required=True, help="folder for results.json and results.md")
    ap.add_argument("--only", nargs="*", help="graphs to run (bert gpt2_prefill gpt2_decode vit resnet50)")
    ap.add_argument("--batches", nargs="*", type=int, help="batch sizes to run (default: the manifest's)")
    ap.add_argument("--budget", type=float, default=float(os.environ.get("BUDGET_S", 420)))
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--target-s", type=float, default=0.5, help="time aimed at for each median")
    ap.add_argument("--min-runs", type=int, default=5)
    ap.add_argument("--max-runs", type=int, default=200)
    ap.add_argument("--row-reserve-s", type=float, default=8, help="budget left needed to start a row")
    ap.add_argument("--cpu-threads", type=int, default=min(16, os.cpu_count() or 1))
    ap.add_argument("--no-cpu", dest="cpu", action="store_false", help="skip the CPU columns")
    ap.add_argument("--no-compile", dest="compile", action="store_false", help="skip torch.compile")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: PyTorch's default)")
    ap.add_argument("--compile-timeout", type=float, default=150, help="seconds for one graph's compile")
    ap.add_argument("--cpu-smoke", action="store_true", help="PyTorch on the CPU: exercises the code, no GPU")
    a = ap.parse_args()
    if not a.cpu_smoke and not torch.cuda.is_available():
        sys.exit("run.py: no CUDA device for PyTorch (use --cpu-smoke to test the code paths on a CPU)")
    t0 = time.time()
    b = Bench(a)
    graphs = b.manifest["graphs"]
    for g in list(graphs):
        if a.only and g not in a.only:
            del graphs[g]
        elif a.batches:
            graphs[g]["cases"] = [c for c in graphs[g]["cases"] if c["batch"] in a.batches]
    for name, why in b.manifest.get("skipped", {}).items():
        b.notes.append("%s not exported: %s" % (name, why))
    print("budget %.0f s; %d rows" % (a.budget, sum(len(e["cases"]) for e in graphs.values())), flush=True)
    phases = [b.phase_gpu] + ([b.phase_cpu] if a.cpu else []) + ([b.phase_compile] if a.compile else [])
    for phase in phases:
        try:
            phase()
        except Exception:  # noqa: BLE001 - keep what the other phases measured
            b.notes.append("%s failed: %s" % (phase.__name__, traceback.format_exc().strip().splitlines()[-1]))
            traceback.print_exc()
    env = {"device": torch.cuda.get_device_name(0) if b.dev == "cuda" else "cpu (smoke)",
           "torch": torch.__version__, "cpu_threads": a.cpu_threads, "host": platform.node(),
           "kiln": getattr(b.kiln, "__version__", None), "exported_with": b.manifest.get("versions")}
    md, gm = report(b.rows, b.notes, env, time.time() - t0)
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "results.md"), "w") as f:
        f.write(md)
    with open(os.path.join(a.out, "results.json"), "w") as f:
        json.dump({"env": env, "budget_s": a.budget, "elapsed_s": round(time.time() - t0, 1), "rows": b.rows,
                   "notes": b.notes, "geomean_speedup": gm}, f, indent=1)
    print("\n" + md)


if __name__ == "__main__":
    main()
