#!/usr/bin/env python3
"""Is a multi-thread slowdown the runtime's, or the machine's? Runs K one-thread copies of the
same model at once, each in its own process, and prints each engine's median latency with K
copies against one copy alone. A runtime whose work grows with its thread count (kiln's trace
report: bench/pool_trace_report.py) shows it there; what K independent copies lose instead
(clock speed with more cores busy, shared L3 and memory bandwidth) is the machine's, and it
bounds what partitioning can win back.

  python3 bench/cpu_models/concurrent_copies.py MODEL --batch 8 --copies 1 4 --seconds 4
"""
import argparse, json, os, subprocess, sys, time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
VARIANTS_AB = os.path.join(ROOT, "bench", "variants_ab.py")


def load_worker():
    # the same worker variants_ab.py runs (one session, warm-up, timed runs, JSON line)
    src = open(VARIANTS_AB).read()
    start = src.index("WORKER = r'''") + len("WORKER = r'''")
    return src[start:src.index("'''", start)]


def run_copies(worker, target, batch, engine, seconds, copies, env):
    procs = [subprocess.Popen([sys.executable, "-c", worker, target, str(batch), "1", engine,
                               str(seconds), ROOT, "wall"], env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for _ in range(copies)]
    ms = []
    for p in procs:
        out, err = p.communicate()
        if p.returncode:
            raise SystemExit(f"{engine}: {err.strip().splitlines()[-1][:200] if err.strip() else p.returncode}")
        ms.append(json.loads(out.strip().splitlines()[-1])["ms"])
    return ms


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("target", help="an .onnx file or a bench/conv_bench.py case")
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--copies", type=int, nargs="+", default=[1, 4])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--engines", nargs="+", default=["kiln", "ort"])
    ap.add_argument("--json", help="append one line of results to this file")
    a = ap.parse_args()
    worker = load_worker()
    res = {}
    for engine in a.engines:
        for k in a.copies:
            ms = run_copies(worker, a.target, a.batch, engine, a.seconds, k, dict(os.environ))
            res[f"{engine}_x{k}"] = sorted(ms)
            med = sorted(ms)[len(ms) // 2]
            alone = res.get(f"{engine}_x{a.copies[0]}")
            ratio = med / sorted(alone)[len(alone) // 2] if alone else float("nan")
            label = os.path.basename(a.target) + f" b{a.batch}"
            print(f"{label:32s} {engine:5s} {k:3d} copies  median {med:9.3f} ms  x{ratio:5.3f} of "
                  f"{a.copies[0]} copy  ({' '.join('%.1f' % v for v in ms)})", flush=True)
    if a.json:
        with open(a.json, "a") as f:
            f.write(json.dumps({"target": a.target, "batch": a.batch, "ms": res,
                                "time": time.strftime("%Y-%m-%dT%H:%M:%S")}) + "\n")


if __name__ == "__main__":
    main()
