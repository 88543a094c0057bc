"""KILN_POOL_TRACE: the intra-op pool's timeline (src/cpu/pool_trace.c) holds every job of a run,
each under its node's name, with one record per chunk inside the job's time, and leaves the
results unchanged. bench/pool_trace_report.py reads it."""
import os
import subprocess
import sys
import textwrap

import numpy as np
import onnx

from util import ROOT, run_ort, assert_same
from test_threads_idle import quiet_numpy_env, work_model

PROBE = textwrap.dedent(r"""
    import os, sys
    import numpy as np
    sys.path.insert(0, os.path.join(sys.argv[1], "python"))
    import kiln
    s = kiln.InferenceSession(sys.argv[2], threads=int(sys.argv[3]))
    x = np.random.default_rng(5).standard_normal((384, 384)).astype(np.float32)
    for _ in range(3):
        y = s.run(None, {"x": x})[0]
    np.save(sys.argv[4], y)
""")


def named_model(tmp_path):
    m = work_model()
    for i, n in enumerate(m.graph.node):
        n.name = f"{n.op_type.lower()}_node{i}"
    path = tmp_path / "work.onnx"
    onnx.save(m, str(path))
    return path


def traced_run(tmp_path, threads):
    model = named_model(tmp_path)
    trace, out = tmp_path / "trace.txt", tmp_path / "y.npy"
    r = subprocess.run([sys.executable, "-c", PROBE, ROOT, str(model), str(threads), str(out)],
                       capture_output=True, text=True, timeout=120,
                       env=dict(quiet_numpy_env(), KILN_POOL_TRACE=str(trace)))
    assert r.returncode == 0, r.stderr
    jobs, chunks = {}, []
    for line in trace.read_text().splitlines():
        if line.startswith("J "):
            _, j, n, c, t0, t1, label = line.split(maxsplit=6)
            jobs[int(j)] = (int(n), int(c), int(t0), int(t1), label)
        elif line.startswith("C "):
            chunks.append(tuple(int(v) for v in line.split()[1:]))
    return model, np.load(out), jobs, chunks


def test_trace_records_every_job_and_chunk(tmp_path):
    model, y, jobs, chunks = traced_run(tmp_path, 2)
    x = np.random.default_rng(5).standard_normal((384, 384)).astype(np.float32)
    assert_same(y, run_ort(onnx.load(str(model)), {"x": x})[0], rtol=1e-4, atol=1e-4)
    assert jobs and chunks
    names = {n.name for n in onnx.load(str(model)).graph.node}
    per_job = {}
    for job, thread, t0, t1 in chunks:
        n, c, j0, j1 = jobs[job][:4]
        # a chunk runs inside its job, on one of the session's two threads
        assert j0 <= t0 <= t1 <= j1, (job, t0, t1, j0, j1)
        assert 0 <= thread < 2
        per_job[job] = per_job.get(job, 0) + 1
    for job, (n, c, t0, t1, label) in jobs.items():
        assert t1 >= t0 and n >= 1
        assert per_job.get(job) == c, (job, c, per_job.get(job))  # every chunk recorded once
        assert label in names, label
    # the MatMuls fork (384 x 384 rows on two threads), so some job used both threads
    assert any(c > 1 for _, c, _, _, _ in jobs.values())
    assert len({t for _, t, _, _ in chunks}) == 2


def test_report_splits_the_wall_time(tmp_path):
    model = named_model(tmp_path)
    r = subprocess.run([sys.executable, os.path.join(ROOT, "bench", "pool_trace_report.py"), str(model),
                        "--threads", "2", "--runs", "3", "--top", "50"], capture_output=True, text=True, timeout=300,
                       env=quiet_numpy_env())
    assert r.returncode == 0, r.stderr
    head = r.stdout.splitlines()
    assert head[0].startswith("## work.onnx batch 1, 2 threads:")
    parts = dict(p.strip().rsplit(" ", 1) for p in head[1].split("|"))
    assert float(parts["parallel work/T"]) > 0
    # one row per node that ran a job, under the model's node names; every MatMul forks
    rows = [line.split("|")[1].strip() for line in head[5:] if line.startswith("| ")]
    names = {n.name for n in onnx.load(str(model)).graph.node}
    assert rows and set(rows) <= names, r.stdout
    assert {n for n in names if n.startswith("matmul")} <= set(rows), r.stdout


def test_unwritable_trace_path_is_reported_and_the_run_is_unharmed(tmp_path):
    model = named_model(tmp_path)
    out = tmp_path / "y.npy"
    bad = tmp_path / "no_such_dir" / "trace.txt"
    r = subprocess.run([sys.executable, "-c", PROBE, ROOT, str(model), "2", str(out)],
                       capture_output=True, text=True, timeout=120,
                       env=dict(quiet_numpy_env(), KILN_POOL_TRACE=str(bad)))
    assert r.returncode == 0, r.stderr
    assert "KILN_POOL_TRACE: cannot write " + str(bad) in r.stderr
    assert not bad.exists()
    x = np.random.default_rng(5).standard_normal((384, 384)).astype(np.float32)
    assert_same(np.load(out), run_ort(onnx.load(str(model)), {"x": x})[0], rtol=1e-4, atol=1e-4)
