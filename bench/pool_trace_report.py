#!/usr/bin/env python3
"""Where a many-thread run of a model spends its wall time, from the intra-op pool's own timeline
(KILN_POOL_TRACE, src/cpu/pool_trace.c). A child process runs the model (random float32 feeds as
bench/node_profile.py makes them) a few times to warm up, then --runs timed runs with the trace
on; the report covers the timed runs only and splits their wall time into:

  serial   the caller outside any parallel-for: runtime overhead between nodes and nodes that
           fork nothing;
  work/T   the chunk work of the parallel-fors divided by the threads (what a perfect pool takes);
  fork     from a job's opening to the mean start of its workers' first chunks;
  wait     the rest of the job's time: imbalance, and the caller waiting for the slowest chunk.

Per node, "lost" is its time in jobs minus its work/T: what a perfect pool would not spend.

Per node (top --top by time in its jobs): its jobs, their wall time, chunk work, and the threads
that took part. --compare-threads 1 also runs the model on one thread and prints, per node, the
work at T threads over the work at one (above 1: each thread computes slower with T busy, from
memory bandwidth, shared caches or lower clocks).

  python3 bench/pool_trace_report.py MODEL.onnx --threads 16 --batch 1 --runs 20 --compare-threads 1
"""
import argparse
import collections
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r'''
import json, os, sys, time
sys.path.insert(0, os.path.join(sys.argv[1], "python")); sys.path.insert(0, os.path.join(sys.argv[1], "bench"))
import kiln, node_profile
model, batch, threads, runs = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
feeds = node_profile.feeds_for(model, batch)
s = kiln.InferenceSession(model, threads=threads)
for _ in range(5):
    s.run(None, feeds)
win = []
for _ in range(runs):
    t0 = time.monotonic_ns()
    s.run(None, feeds)
    win.append((t0, time.monotonic_ns()))
print(json.dumps(win))
'''


def trace(model, batch, threads, runs):
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "trace.txt")
        p = subprocess.run([sys.executable, "-c", CHILD, ROOT, model, str(batch), str(threads), str(runs)],
                           env=dict(os.environ, KILN_POOL_TRACE=path), capture_output=True, text=True)
        if p.returncode:
            raise SystemExit(p.stderr[-2000:])
        wins = json.loads(p.stdout.strip().splitlines()[-1])
        jobs, chunks = {}, collections.defaultdict(list)
        with open(path) as f:
            for line in f:
                if line.startswith("J "):
                    _, j, n, c, t0, t1, label = line.split(maxsplit=6)
                    jobs[int(j)] = dict(n=int(n), chunks=int(c), t0=int(t0), t1=int(t1), label=label.strip())
                elif line.startswith("C "):
                    _, j, th, t0, t1 = line.split()
                    chunks[int(j)].append((int(th), int(t0), int(t1)))
    return wins, jobs, chunks


def analyse(wins, jobs, chunks, threads):
    inside = lambda t: any(a <= t <= b for a, b in wins)
    wall = sum(b - a for a, b in wins)
    tot = collections.Counter()
    per_node = collections.defaultdict(lambda: collections.Counter())
    for j, r in jobs.items():
        if r["t1"] < 0 or not inside(r["t0"]):
            continue
        cs = chunks.get(j, [])
        dur = r["t1"] - r["t0"]
        work = sum(t1 - t0 for _, t0, t1 in cs)
        caller = None
        first = {}
        for th, t0, _ in cs:
            if th not in first or t0 < first[th]:
                first[th] = t0
        # the caller is the thread whose first chunk starts first (it opens the job and claims at once)
        if first:
            caller = min(first, key=first.get)
        workers = [t for th, t in first.items() if th != caller]
        fork = (sum(workers) / len(workers) - r["t0"]) if workers else 0
        if r["chunks"] > 1:
            ideal = work / threads
            tot["work_par"] += work
            tot["fork"] += min(fork, dur)
            tot["wait"] += max(0, dur - ideal - min(fork, dur))
            tot["jobs_par"] += 1
        else:
            tot["work_serial"] += work
        tot["in_jobs"] += dur
        n = per_node[r["label"]]
        n["jobs"] += 1
        n["time"] += dur
        n["work"] += work
        n["threads"] += len(first)
    serial_outside = wall - tot["in_jobs"]
    return wall, tot, serial_outside, per_node


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=15)
    ap.add_argument("--compare-threads", type=int, default=0)
    a = ap.parse_args()
    wins, jobs, chunks = trace(a.model, a.batch, a.threads, a.runs)
    wall, tot, outside, per_node = analyse(wins, jobs, chunks, a.threads)
    R = len(wins)
    ms = lambda ns: ns / R / 1e6
    name = os.path.basename(a.model)
    print(f"## {name} batch {a.batch}, {a.threads} threads: {ms(wall):.3f} ms a run ({R} runs)")
    print(f"serial outside jobs {ms(outside):.3f} | serial jobs {ms(tot['work_serial']):.3f} | "
          f"parallel work/T {ms(tot['work_par'] / a.threads):.3f} | fork {ms(tot['fork']):.3f} | "
          f"wait {ms(tot['wait']):.3f} | parallel jobs a run {tot['jobs_par'] / R:.0f}")
    ref = None
    if a.compare_threads:
        w1, j1, c1 = trace(a.model, a.batch, a.compare_threads, a.runs)
        wall1, tot1, out1, ref = analyse(w1, j1, c1, a.compare_threads)
        print(f"at {a.compare_threads} thread(s): {wall1 / len(w1) / 1e6:.3f} ms a run; chunk work "
              f"{(tot1['work_par'] + tot1['work_serial']) / len(w1) / 1e6:.3f} ms there against "
              f"{(tot['work_par'] + tot['work_serial']) / R / 1e6:.3f} ms summed over the {a.threads} threads")
    print()
    print("| node | jobs | ms in jobs | work ms | work/T ms | lost ms | threads/job |" + (" work vs 1 |" if ref else ""))
    print("|---|---|---|---|---|---|---|" + ("---|" if ref else ""))
    for label, n in sorted(per_node.items(), key=lambda kv: -kv[1]["time"])[:a.top]:
        row = (f"| {label[-48:]} | {n['jobs'] / R:.0f} | {ms(n['time']):.3f} | {ms(n['work']):.3f} | "
               f"{ms(n['work'] / a.threads):.3f} | {ms(n['time'] - n['work'] / a.threads):.3f} | "
               f"{n['threads'] / max(1, n['jobs']):.1f} |")
        if ref:
            r1 = ref.get(label)
            row += f" {n['work'] / r1['work']:.2f} |" if r1 and r1["work"] else " - |"
        print(row)


if __name__ == "__main__":
    main()
