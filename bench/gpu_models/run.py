#!/usr/bin/env python3
"""kiln's CUDA provider against PyTorch on whole models, float16, at batch 1, 8 and 32.

Reads the folder that export.py wrote and times every row of its manifest: kiln GPU (numpy in and
out), PyTorch eager (device-resident, and again with host copies like kiln's), torch.compile, and at
batch 1 kiln's and onnxruntime's CPU providers on the float32 file; checks kiln's outputs against
eager PyTorch. Decode rows: ms per token over a loop that feeds each step's K/V back. Three phases
(kiln GPU + eager, CPU, compile) under one budget (BUDGET_S, default 420 s); what does not fit is
skipped with a note. results.md / results.json are rewritten after every row. README.md has details.

  python3 bench/gpu_models/run.py --models DIR --out RESULTS
  python3 bench/gpu_models/run.py --models /tmp/tiny --out /tmp/r --cpu-smoke   # no GPU: code paths only
"""
import argparse
import contextlib
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


class Timer:
    """Median milliseconds of fn(), synchronised before and after each run. Warm-up: the first call,
    then up to `warmup` calls in all and target_s / 2 seconds, stopping at 2 * target_s (a slow fn,
    such as a 32-step decode at batch 32 with host copies, is warm after one call). Then as many runs
    as fit target_s, at least lo (3 where one run is over target_s) and at most hi."""

    def __init__(self, sync, warmup, target_s, lo, hi):
        self.sync, self.warmup, self.target_s, self.lo, self.hi = sync, warmup, target_s, lo, hi

    def once(self, fn):
        self.sync()
        t0 = time.perf_counter()
        fn()
        self.sync()
        return time.perf_counter() - t0

    def median_ms(self, fn):
        first = self.once(fn)  # lazy set-up (cuBLAS handles, plans, autotuning): not timed
        t0, k = time.perf_counter(), 1
        while first < 2 * self.target_s and (k < self.warmup or time.perf_counter() - t0 < self.target_s / 2) \
                and time.perf_counter() - t0 < 2 * self.target_s:
            fn()
            k += 1
        t = [self.once(fn)]
        lo = self.lo if t[0] < self.target_s else min(self.lo, 3)
        t += [self.once(fn) for _ in range(int(min(self.hi, max(lo, self.target_s / t[0]))) - 1)]
        return statistics.median(t) * 1e3


@contextlib.contextmanager
def time_box(seconds):
    """Raises TimeoutError in the main thread after `seconds` (SIGALRM): bounds a compile."""
    seconds = max(1, int(seconds))

    def fire(*_):
        raise TimeoutError("over %d s" % seconds)
    old = signal.signal(signal.SIGALRM, fire)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def rel_err(ref, got):
    """max over outputs of max|got - ref| / max|ref|."""
    err = 0.0
    for r, g in zip(ref, got):
        r, g = r.float().cpu().numpy(), np.asarray(g, np.float32)
        if r.shape != g.shape:
            return float("inf")
        err = max(err, float(np.abs(g - r).max() / max(float(np.abs(r).max()), 1e-6)))
    return err


def torch_runner(module, device, copies):
    """xs -> outputs. copies: xs are host tensors, moved to the device, and outputs come back .cpu()."""
    def run(xs):
        with torch.no_grad():  # not inference_mode: its tensors fed back would recompile torch.compile
            out = module(*([x.to(device) for x in xs] if copies else xs))
            out = list(out) if isinstance(out, (tuple, list)) else [out]
            return [o.cpu() for o in out] if copies else out
    return run


def onnx_runner(sess, names):
    return lambda xs: sess.run(None, dict(zip(names, xs)))


def first_step(xs, ids):
    """The inputs of one forward: xs, or for decode the first step's ids with the initial cache."""
    return [ids[0]] + list(xs[1:]) if ids else xs


def workload(run, xs, ids=None):
    """fn() for the timer: one forward, or (decode) one step per entry of ids, each step's presents
    fed back as the next step's past."""
    if not ids:
        return lambda: run(xs)

    def loop():
        past = xs[1:]
        for step in ids:
            past = run([step] + list(past))[1:]
    return loop


def to_numpy(ts, float32=False):
    return ts and [t.float().numpy() if float32 and t.is_floating_point() else t.numpy() for t in ts]


class Bench:
    def __init__(self, a):
        self.a, self.t0, self.deadline = a, time.time(), time.time() + a.budget
        self.dev = "cpu" if a.cpu_smoke else "cuda"
        self.sync = torch.cuda.synchronize if self.dev == "cuda" else (lambda: None)
        self.timer = Timer(self.sync, a.warmup, a.target_s, a.min_runs, a.max_runs)
        with open(os.path.join(a.models, "manifest.json")) as f:
            self.manifest = json.load(f)
        self.rows, self.notes, self.modules = [], [], {}
        try:
            import kiln
            self.kiln, self.kiln_error = kiln, None
        except Exception as e:  # noqa: BLE001 - no kiln: its columns say why
            self.kiln, self.kiln_error = None, "import kiln: %s" % first_line(e)
            self.notes.append(self.kiln_error)

    def left(self):
        return self.deadline - time.time()

    def save(self):
        """Writes results.md and results.json as they stand (after every row: a crash keeps them)."""
        k = self.kiln
        env = {"device": torch.cuda.get_device_name(0) if self.dev == "cuda" else "cpu (smoke)",
               "torch": torch.__version__, "cpu_threads": self.a.cpu_threads, "host": platform.node(),
               "kiln": getattr(k, "__version__", None),
               "kiln_lib": getattr(getattr(k, "_lib", None), "loaded_path", None),
               "kiln_providers": k.get_available_providers() if k else None,
               "exported_with": self.manifest.get("versions")}
        md, gm = report(self.rows, self.notes, env, time.time() - self.t0)
        os.makedirs(self.a.out, exist_ok=True)
        with open(os.path.join(self.a.out, "results.md"), "w") as f:
            f.write(md)
        with open(os.path.join(self.a.out, "results.json"), "w") as f:
            json.dump({"env": env, "budget_s": self.a.budget, "elapsed_s": round(time.time() - self.t0, 1),
                       "rows": self.rows, "notes": self.notes, "geomean_speedup": gm}, f, indent=1)
        return md

    def note(self, row, text):
        print("    note: " + text, flush=True)
        (row["notes"] if row is not None else self.notes).append(text)

    def path(self, graph, prec):
        return os.path.join(self.a.models, self.manifest["graphs"][graph]["files"][prec])

    def names(self, graph, prec):
        return [i["name"] for i in self.manifest["graphs"][graph]["inputs"][prec]]

    def module(self, graph):
        """The eager PyTorch module of a graph: float16, SDPA attention, on the device; its weights
        must be the exported ones (checksum)."""
        if graph not in self.modules:
            entry = self.manifest["graphs"][graph]
            built = M.build_graphs(entry["model"], tiny=self.manifest["tiny"], attn="sdpa")
            got = M.weight_checksum(built[graph])
            if got != entry["checksum"]:
                raise RuntimeError("%s: weights differ from the exported ones (%s, export %s)"
                                   % (graph, got, entry["checksum"]))
            for g, mod in built.items():
                self.modules[g] = mod.to(self.dev, torch.float16)
        return self.modules[graph]

    def inputs(self, row, seed=1):
        """(host tensors in input order, decode: the step ids as host tensors, else None). Same row,
        same values, for every engine and phase."""
        graph, mod = row["graph"], self.module(row["graph"])
        xs = list(M.make_inputs(graph, mod, row["batch"], row["seq"], row["past"], torch.float16, seed=seed))
        if not row["steps"]:
            return xs, None
        g = torch.Generator().manual_seed(seed + 1)
        return xs, [torch.randint(0, mod.m.config.vocab_size, (row["batch"], 1), generator=g)
                    for _ in range(row["steps"])]

    def kiln_session(self, path, providers, threads=None):
        if self.kiln is None:
            raise RuntimeError(self.kiln_error)
        t0 = time.time()
        s = self.kiln.InferenceSession(path, providers=providers, threads=threads)
        info = {"open_s": round(time.time() - t0, 2), "providers": list(s.get_providers())}
        if hasattr(s, "node_placement"):
            placed = [p for _, p in s.node_placement()]
            info.update(cuda_node_frac=sum(p == CUDA_EP for p in placed) / max(len(placed), 1), nodes=len(placed))
        return s, info

    # ---- phase 1: kiln GPU, eager and eager+copy ------------------------------------------------
    def phase_gpu(self):
        for graph, entry in self.manifest["graphs"].items():
            sess, info, kiln_err = None, None, None
            for case in entry["cases"]:
                row = dict(graph=graph, batch=case["batch"], seq=case.get("seq"), past=case.get("past"),
                           steps=case.get("steps"), notes=[])
                self.rows.append(row)
                if self.left() < self.a.row_reserve_s:
                    self.note(row, "skipped: budget")
                    continue
                print("%s batch %d %s" % (LABEL[graph], row["batch"], seq_label(row)), flush=True)
                try:
                    xs, ids = self.inputs(row)
                    dev_xs, dev_ids = [x.to(self.dev) for x in xs], ids and [i.to(self.dev) for i in ids]
                    per, eager = len(ids) if ids else 1, torch_runner(self.module(graph), self.dev, False)
                    ref = eager(first_step(dev_xs, dev_ids))
                    row["eager_ms"] = self.timer.median_ms(workload(eager, dev_xs, dev_ids)) / per
                    copy = torch_runner(self.module(graph), self.dev, True)
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
                    except Exception as e:  # noqa: BLE001 - reported for every row of the graph
                        kiln_err = "kiln GPU session: %s" % first_line(e)
                if kiln_err:
                    self.note(row, kiln_err)
                    continue
                row.update(kiln_providers=info["providers"], kiln_open_s=info["open_s"],
                           cuda_node_frac=info.get("cuda_node_frac"))
                try:
                    run, np_xs, np_ids = onnx_runner(sess, self.names(graph, "fp16")), to_numpy(xs), to_numpy(ids)
                    row["rel_err"] = rel_err(ref, run(first_step(np_xs, np_ids)))
                    row["kiln_gpu_ms"] = self.timer.median_ms(workload(run, np_xs, np_ids)) / per
                except Exception as e:  # noqa: BLE001
                    self.note(row, "kiln GPU: %s" % first_line(e))
                if self.a.graph and self.left() > self.a.row_reserve_s:
                    try:
                        row["kiln_graph_ms"] = (self._kiln_decode(graph, dev_xs, dev_ids) / per if row["steps"]
                                                else self._kiln_graph(graph, row, dev_xs))
                    except Exception as e:  # noqa: BLE001 - e.g. a node the GPU does not take
                        self.note(row, "kiln graph: %s" % first_line(e))
                print("    kiln %s ms  eager %s  eager+copy %s  rel err %s" % (
                    ms(row.get("kiln_gpu_ms")), ms(row["eager_ms"]), ms(row["eager_copy_ms"]),
                    sci(row.get("rel_err"))), flush=True)
                self.save()
            del sess
            if self.dev == "cuda":
                torch.cuda.empty_cache()

    # ---- kiln with the row's shapes fixed, CUDA graphs and device-resident inputs and outputs ----
    def _kiln_graph(self, graph, row, dev_xs):
        """A session per row: its symbolic dims fixed to the row's sizes (shape arithmetic folds,
        every node can run on the GPU), enable_cuda_graph, torch inputs read in place and outputs
        left on the device, as eager has them."""
        names = self.names(graph, "fp16")
        opts = self.kiln.SessionOptions()
        for spec, x in zip(self.manifest["graphs"][graph]["inputs"]["fp16"], dev_xs):
            for d, size in zip(spec["dims"], x.shape):
                if isinstance(d, str):
                    opts.add_free_dimension_override_by_name(d, int(size))
        sess = self.kiln.InferenceSession(self.path(graph, "fp16"), sess_options=opts,
                                          providers=[(CUDA_EP, {"enable_cuda_graph": "1"})])
        feed = dict(zip(names, [x.contiguous() for x in dev_xs]))
        run = lambda: sess.run_with_ort_values(None, feed)  # noqa: E731
        return self.timer.median_ms(run)

    def _kiln_decode(self, graph, dev_xs, dev_ids):
        """Decoding: the KV cache grows every step, so only the dims of the token input (batch, one
        token) are fixed; the presents stay on the device (OrtValues) and are fed back as the next
        step's past, as eager keeps its cache on the GPU. No graph replay: each step is a new shape."""
        names = self.names(graph, "fp16")
        opts = self.kiln.SessionOptions()
        spec0 = self.manifest["graphs"][graph]["inputs"]["fp16"][0]
        for d, size in zip(spec0["dims"], dev_ids[0].shape):
            if isinstance(d, str):
                opts.add_free_dimension_override_by_name(d, int(size))
        sess = self.kiln.InferenceSession(self.path(graph, "fp16"), sess_options=opts, providers=[CUDA_EP, CPU_EP])
        first_past = [x.contiguous() for x in dev_xs[1:]]
        steps = [i.contiguous() for i in dev_ids]

        def loop():
            past = first_past
            for step in steps:
                outs = sess.run_with_ort_values(None, dict(zip(names, [step] + list(past))))
                past = outs[1:]
        return self.timer.median_ms(loop)

    # ---- phase 2: the CPU columns, batch 1, float32 file ----------------------------------------
    def phase_cpu(self):
        for row in self.rows:
            graph = row["graph"]
            if row["batch"] != 1 or "eager_ms" not in row:
                continue
            if "fp32" not in self.manifest["graphs"][graph]["files"]:
                self.note(row, "CPU: no fp32 file")
                continue
            xs, ids = self.inputs(row)
            np_xs, np_ids, per = to_numpy(xs, float32=True), to_numpy(ids), len(ids) if ids else 1
            ref = torch_runner(self.module(graph), self.dev, True)(first_step(xs, ids))
            for col, make in (("kiln_cpu", self._kiln_cpu), ("ort_cpu", self._ort_cpu)):
                if self.left() < self.a.row_reserve_s:
                    self.note(row, "%s skipped: budget" % col)
                    continue
                try:
                    run = onnx_runner(make(self.path(graph, "fp32")), self.names(graph, "fp32"))
                    row[col + "_rel_err"] = rel_err(ref, run(first_step(np_xs, np_ids)))
                    row[col + "_ms"] = self.timer.median_ms(workload(run, np_xs, np_ids)) / per
                except Exception as e:  # noqa: BLE001
                    self.note(row, "%s: %s" % (col, first_line(e)))
            print("%s batch 1 %s CPU: kiln %s ms, ORT %s ms" % (
                LABEL[graph], seq_label(row), ms(row.get("kiln_cpu_ms")), ms(row.get("ort_cpu_ms"))), flush=True)
            self.save()

    def _kiln_cpu(self, path):
        return self.kiln_session(path, [CPU_EP], self.a.cpu_threads)[0]

    def _ort_cpu(self, path):
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = self.a.cpu_threads, 1
        return ort.InferenceSession(path, so, providers=[CPU_EP])

    # ---- phase 3: torch.compile -----------------------------------------------------------------
    def phase_compile(self):
        failed = {}
        # batch 8 and 32 share one dynamic-shape compile per graph; batch 1 is specialised: last
        for row in sorted(self.rows, key=lambda r: r["batch"] == 1):
            graph = row["graph"]
            if "eager_ms" not in row:
                continue
            if graph in failed:
                row["compile"] = failed[graph]
                continue
            left = self.left() - self.a.row_reserve_s
            if left < 20:
                self.note(row, "compile skipped: budget")
                continue
            xs, ids = self.inputs(row)
            dev_xs, dev_ids = [x.to(self.dev) for x in xs], ids and [i.to(self.dev) for i in ids]
            fn = workload(torch_runner(self._compiled(graph), self.dev, False), dev_xs, dev_ids)
            try:
                t0 = time.time()
                with time_box(min(self.a.compile_timeout, left)):
                    fn()  # compiles (first shape of this graph) or recompiles
                    self.sync()
                row["compile_s"] = round(time.time() - t0, 1)
                if row["compile_s"] > min(self.a.compile_timeout, left) + 5:  # the alarm was caught inside
                    self.note(row, "torch.compile ran past its time box (%s s)" % row["compile_s"])
                row["compile_ms"] = self.timer.median_ms(fn) / (len(ids) if ids else 1)
            except Exception as e:  # noqa: BLE001 - TimeoutError or a compiler error: n/a for the graph
                row["compile"] = failed[graph] = "n/a (%s)" % first_line(e)
                self.note(row, "torch.compile " + failed[graph])
            print("%s batch %d %s compile: %s ms (%s s to compile)" % (
                LABEL[graph], row["batch"], seq_label(row), ms(row.get("compile_ms")), row.get("compile_s", "-")),
                flush=True)
            self.save()

    def _compiled(self, graph):
        key = graph + ":compiled"
        if key not in self.modules:
            self.modules[key] = torch.compile(self.module(graph), dynamic=True, mode=self.a.compile_mode)
        return self.modules[key]


def first_line(e):
    """The exception's type and first line (two where the first ends in ':', as inductor's do)."""
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
    text = " ".join(lines[:2]) if lines and lines[0].endswith(":") else (lines or [""])[0]
    return "%s: %s" % (type(e).__name__, text[:300])


def ms(v):
    return "-" if v is None else "%.2f" % v if v < 100 else "%.0f" % v


def sci(v):
    return "-" if v is None else "%.1e" % v


def ratio(kiln_ms, other_ms):
    return other_ms / kiln_ms if kiln_ms and other_ms else None


def seq_label(r):
    if r["graph"] == "gpt2_decode":
        return "1 (+%d past)" % r["past"]
    return str(r["seq"]) if r["seq"] else "image"


def geomean(xs):
    xs = [x for x in xs if x]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else None


def report(rows, notes, env, elapsed_s):
    def x(v):
        return "-" if v is None else "%.2fx" % v
    head = ["model", "batch", "seq", "kiln GPU ms", "kiln graph ms", "eager ms", "eager+copy ms", "compile ms", "kiln CPU ms",
            "ORT CPU ms", "vs eager", "vs eager+copy", "vs compile", "rel err", "% nodes CUDA"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        k, err, frac = r.get("kiln_gpu_ms"), r.get("rel_err"), r.get("cuda_node_frac")
        lines.append("| " + " | ".join([
            LABEL[r["graph"]], str(r["batch"]), seq_label(r), ms(k), ms(r.get("kiln_graph_ms")), ms(r.get("eager_ms")),
            ms(r.get("eager_copy_ms")), "n/a" if "compile" in r else ms(r.get("compile_ms")),
            ms(r.get("kiln_cpu_ms")), ms(r.get("ort_cpu_ms")), x(ratio(k, r.get("eager_ms"))),
            x(ratio(k, r.get("eager_copy_ms"))), x(ratio(k, r.get("compile_ms"))),
            sci(err) + (" !" if err is not None and err >= 2e-2 else ""),
            "?" if frac is None else "%.0f%%" % (100 * frac)]) + " |")
    dec = [r for r in rows if r["steps"]]
    decode = " (decode: per token, %d steps from a %d-token cache)" % (dec[0]["steps"], dec[0]["past"]) if dec else ""
    gm = {k: geomean([ratio(r.get("kiln_gpu_ms"), r.get(k + "_ms")) for r in rows])
          for k in ("eager", "eager_copy", "compile")}
    gg = {k: geomean([ratio(r.get("kiln_graph_ms"), r.get(k + "_ms")) for r in rows]) for k in ("eager", "compile")}
    lines += ["", "Geometric mean of kiln GPU's speedup (>1: kiln faster; rows that have both): vs eager %s, "
              "vs eager+copy %s, vs torch.compile %s." % (x(gm["eager"]), x(gm["eager_copy"]), x(gm["compile"])),
              "Geometric mean of kiln graph's speedup: vs eager %s, vs torch.compile %s." % (
                  x(gg["eager"]), x(gg["compile"])),
              "", "Medians in ms%s. kiln GPU: numpy in and out, "
              "upload and download included. kiln graph: symbolic dims fixed to the row's sizes, CUDA graph "
              "replay, torch inputs read in place and outputs left on the GPU (like eager); for decode, only the token "
              "input's dims fixed and the KV cache kept on the GPU as OrtValues, without replay (every step is a new "
              "shape). eager, compile: inputs and outputs on the GPU. eager+copy: host "
              "tensors in, every output .cpu(), like kiln. CPU columns: the float32 file, batch 1, %s threads. "
              "rel err: max|kiln - eager| / max|eager| over all outputs (! at 2e-2 or more)." % (decode, env["cpu_threads"])]
    row_notes = ["%s batch %d %s: %s" % (LABEL[r["graph"]], r["batch"], seq_label(r), n)
                 for r in rows for n in r["notes"]]
    if notes + row_notes:
        lines += ["", "Notes:"] + ["- " + n for n in notes + row_notes]
    lines += ["", "Environment: %s; %.0f s." % (", ".join("%s %s" % kv for kv in env.items()), elapsed_s)]
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
    ap.add_argument("--no-graph", dest="graph", action="store_false",
                    help="skip the kiln column with fixed shapes and CUDA graphs")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: PyTorch's default)")
    ap.add_argument("--compile-timeout", type=float, default=150, help="seconds for one graph's compile")
    ap.add_argument("--cpu-smoke", action="store_true", help="PyTorch on the CPU: exercises the code, no GPU")
    a = ap.parse_args()
    if not a.cpu_smoke and not torch.cuda.is_available():
        sys.exit("run.py: no CUDA device for PyTorch (use --cpu-smoke to test the code paths on a CPU)")
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
    for phase in [b.phase_gpu] + ([b.phase_cpu] if a.cpu else []) + ([b.phase_compile] if a.compile else []):
        try:
            phase()
        except Exception:  # noqa: BLE001 - keep what the other phases measured
            b.notes.append("%s failed: %s" % (phase.__name__, traceback.format_exc().strip().splitlines()[-1]))
            traceback.print_exc()
    print("\n" + b.save())


if __name__ == "__main__":
    main()
