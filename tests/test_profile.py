"""Profiling: `kiln run/bench --profile` and InferenceSession.end_profiling() write a Chrome-trace
timeline with one event per node and run, naming the provider of each node."""
import json
import os
import subprocess
import types

import numpy as np

from util import ROOT, kiln

BUILD = os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build"))

EXAMPLE = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")


def test_cli_bench_writes_a_trace(tmp_path):
    trace = tmp_path / "trace.json"
    out = subprocess.run([os.path.join(BUILD, "kiln"), "bench", EXAMPLE, "--runs", "4", "--warmup", "1",
                          "--profile", str(trace)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    events = json.loads(trace.read_text())
    runs = [e for e in events if e["name"] == "model_run"]
    nodes = [e for e in events if e["cat"] == "Node"]
    n_nodes = len(kiln.InferenceSession(EXAMPLE).nodes())
    assert len(runs) == 5 and len(nodes) == 5 * n_nodes
    for e in nodes:
        assert e["ph"] == "X" and e["dur"] >= 0 and e["args"]["provider"] == "CPUExecutionProvider"
        assert e["args"]["op_name"] and e["args"]["output_shapes"].startswith("float32[")
    # node spans lie inside their run
    first = runs[0]
    inside = [e for e in nodes if first["ts"] <= e["ts"] <= first["ts"] + first["dur"]]
    assert len(inside) == n_nodes


def test_python_end_profiling(tmp_path):
    opts = types.SimpleNamespace(enable_profiling=True, profile_file_prefix=str(tmp_path / "prof"),
                                 intra_op_num_threads=1)
    s = kiln.InferenceSession(EXAMPLE, sess_options=opts)
    s.run(None, {"x": np.ones((2, 4), np.float32)})
    path = s.end_profiling()
    assert path and os.path.basename(path).startswith("prof_") and path.endswith(".json")
    events = json.load(open(path))
    assert any(e["name"] == "model_run" for e in events)
    assert s.end_profiling() is None


def test_unwritable_profile_is_an_error(tmp_path):
    s = kiln.InferenceSession(EXAMPLE)
    s.start_profiling(str(tmp_path / "missing" / "dir" / "t.json"))
    s.run(None, {"x": np.ones((2, 4), np.float32)})
    try:
        s.end_profiling()
    except kiln.KilnError as e:
        assert "cannot write the profile" in str(e)
    else:
        raise AssertionError("no error for an unwritable profile path")
