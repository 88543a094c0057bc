"""Stopping runs: RunOptions.terminate set from another thread, RunOptions.timeout_ms, the session's
memory limit, and Ctrl-C (SIGINT) during run(), on the C extension and the ctypes path. The runaway
graph is a Loop of 2^62 trips, optionally stacking a scan output every trip."""
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from util import ROOT, kiln

PATHS = ["native", "ctypes"]
ENDLESS = 2 ** 62
UNDER_ASAN = "asan" in os.environ.get("LD_PRELOAD", "")


def loop_model(width=4, scan=False):
    """y = x + M (a Loop adding 1 per trip, M a graph input); with scan, also every trip's value
    stacked: s[i] = x + i + 1."""
    body_out = [helper.make_tensor_value_info("cond_out", TensorProto.BOOL, []),
                helper.make_tensor_value_info("x_out", TensorProto.FLOAT, [width])]
    nodes = [helper.make_node("Identity", ["cond_in"], ["cond_out"]),
             helper.make_node("Add", ["x_in", "one"], ["x_out"])]
    if scan:
        nodes.append(helper.make_node("Identity", ["x_out"], ["s_out"]))
        body_out.append(helper.make_tensor_value_info("s_out", TensorProto.FLOAT, [width]))
    body = helper.make_graph(
        nodes, "body",
        [helper.make_tensor_value_info("i", TensorProto.INT64, []),
         helper.make_tensor_value_info("cond_in", TensorProto.BOOL, []),
         helper.make_tensor_value_info("x_in", TensorProto.FLOAT, [width])],
        body_out, initializer=[numpy_helper.from_array(np.ones(width, np.float32), "one")])
    outs = ["y"] + (["s"] if scan else [])
    graph = helper.make_graph(
        [helper.make_node("Loop", ["M", "cond", "x"], outs, body=body)], "endless",
        [helper.make_tensor_value_info("M", TensorProto.INT64, []),
         helper.make_tensor_value_info("x", TensorProto.FLOAT, [width])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [width])] +
        ([helper.make_tensor_value_info("s", TensorProto.FLOAT, [None, width])] if scan else []),
        initializer=[numpy_helper.from_array(np.array(True), "cond")])
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m.SerializeToString()


def feeds(trips, width=4):
    return {"M": np.array(trips, np.int64), "x": np.zeros(width, np.float32)}


@pytest.fixture(params=PATHS)
def path(request, monkeypatch):
    if request.param == "ctypes":
        monkeypatch.setenv("KILN_PYTHON_CTYPES", "1")
    else:
        monkeypatch.delenv("KILN_PYTHON_CTYPES", raising=False)
        if kiln._session._native_module() is None:
            pytest.skip("kiln._native is not built")
    return request.param


def session(model, **opts):
    so = kiln.SessionOptions()
    for k, v in opts.items():
        setattr(so, k, v)
    return kiln.InferenceSession(model, so, threads=1)


def test_terminate_from_thread_stops_endless_loop(path):
    s = session(loop_model())
    ro = kiln.RunOptions()
    set_at = []

    def stop():
        time.sleep(0.3)
        set_at.append(time.perf_counter())
        ro.terminate = True

    t = threading.Thread(target=stop)
    t.start()
    with pytest.raises(kiln.KilnError) as e:
        s.run(None, feeds(ENDLESS), ro)
    stopped = time.perf_counter()
    t.join()
    assert "the run was terminated" in str(e.value), str(e.value)
    assert "Loop" in str(e.value)  # the node that was running is named
    assert stopped - set_at[0] < 0.1, "stopped %.3f s after terminate was set" % (stopped - set_at[0])
    assert ro.terminate  # stays set, as in onnxruntime, until the caller clears it
    with pytest.raises(kiln.KilnError, match="terminated"):
        s.run(None, feeds(3), ro)
    ro.terminate = False
    # the session is still usable, with and without the options
    np.testing.assert_array_equal(s.run(None, feeds(7), ro)[0], np.full(4, 7, np.float32))
    np.testing.assert_array_equal(s.run(None, feeds(5))[0], np.full(4, 5, np.float32))


def test_timeout_stops_endless_loop(path):
    s = session(loop_model())
    ro = kiln.RunOptions()
    ro.timeout_ms = 200
    t0 = time.perf_counter()
    with pytest.raises(kiln.KilnError) as e:
        s.run(None, feeds(ENDLESS), ro)
    took = time.perf_counter() - t0
    assert "the run passed its deadline of 200 ms" in str(e.value), str(e.value)
    assert 0.2 <= took < 0.3 + (1.0 if UNDER_ASAN else 0), took
    # a run that fits in the deadline is unaffected; so is the session afterwards
    np.testing.assert_array_equal(s.run(None, feeds(1000), ro)[0], np.full(4, 1000, np.float32))
    np.testing.assert_array_equal(s.run(None, feeds(2))[0], np.full(4, 2, np.float32))


def test_bad_run_options(path):
    s = session(loop_model())
    ro = kiln.RunOptions()
    ro.timeout_ms = -1
    with pytest.raises(ValueError, match="timeout_ms"):
        s.run(None, feeds(1), ro)
    with pytest.raises(TypeError, match="kiln.RunOptions"):
        s.run(None, feeds(1), object())


def test_memory_limit_stops_stacking_loop(path):
    width = 16384  # 64 KiB stacked per trip
    limit = 200 << 20
    s = session(loop_model(width, scan=True), memory_limit=limit)
    t0 = time.perf_counter()
    with pytest.raises(kiln.KilnError) as e:
        s.run(None, feeds(ENDLESS, width))
    msg = str(e.value)
    assert "memory limit of %d bytes" % limit in msg, msg
    assert "needs 65536 bytes, which would pass" in msg, msg  # a stacked item or the value feeding it
    assert time.perf_counter() - t0 < 30
    # the session is usable afterwards, and a run within the limit gives the right values
    y, st = s.run(None, feeds(10, width))
    np.testing.assert_array_equal(y, np.full(width, 10, np.float32))
    np.testing.assert_array_equal(st, np.repeat(np.arange(1, 11, dtype=np.float32)[:, None], width, 1))


def test_memory_limit_counts_intermediate_values(path):
    # one node whose output alone passes the limit: refused before it is allocated
    g = helper.make_graph([helper.make_node("Expand", ["x", "shape"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1]),
                           helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    g2 = helper.make_graph([helper.make_node("Expand", ["x", "shape"], ["t"]),
                            helper.make_node("ReduceSum", ["t"], ["y"], keepdims=0)], "g2",
                           g.input, [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = helper.make_model(g2, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    s = session(m.SerializeToString(), memory_limit=1 << 20)
    x = np.ones(1, np.float32)
    np.testing.assert_allclose(s.run(None, {"x": x, "shape": np.array([256, 256], np.int64)})[0], 65536)
    with pytest.raises(kiln.KilnError) as e:
        s.run(None, {"x": x, "shape": np.array([1024, 1024], np.int64)})
    assert "value 't' needs 4194304 bytes, which would pass the session's memory limit of 1048576 bytes" \
        in str(e.value), str(e.value)
    assert "Expand" in str(e.value)
    with pytest.raises(ValueError):
        session(m.SerializeToString(), memory_limit=-1)


def test_options_do_not_change_results(path):
    model = loop_model(8, scan=True)
    plain = session(model)
    limited = session(model, memory_limit=1 << 30)
    ro = kiln.RunOptions()
    ro.timeout_ms = 60000
    ro.log_severity_level = 3  # onnxruntime's fields are accepted
    ro.logid = "x"
    for trips in (0, 1, 5, 100):
        want = plain.run(None, feeds(trips, 8))
        for s, opts in ((plain, ro), (limited, None), (limited, ro)):
            got = s.run(None, feeds(trips, 8), opts)
            for a, b in zip(want, got):
                np.testing.assert_array_equal(a, b)


CTRL_C_CHILD = textwrap.dedent("""
    import sys, time
    sys.path.insert(0, sys.argv[1])
    sys.path.insert(0, sys.argv[2])
    import numpy as np
    import kiln
    from test_cancel import loop_model, feeds, ENDLESS
    s = kiln.InferenceSession(loop_model(), threads=1)
    s.run(None, feeds(3))
    print("running", flush=True)
    try:
        s.run(None, feeds(ENDLESS))
    except KeyboardInterrupt:
        # the session is still usable after the interrupted run
        y = s.run(None, feeds(4))[0]
        print("interrupted", float(y[0]), flush=True)
        raise
""")


@pytest.mark.parametrize("mode", PATHS)
def test_ctrl_c_interrupts_run(mode):
    env = dict(os.environ)
    if mode == "ctypes":
        env["KILN_PYTHON_CTYPES"] = "1"
    else:
        env.pop("KILN_PYTHON_CTYPES", None)
    p = subprocess.Popen([sys.executable, "-c", CTRL_C_CHILD, os.path.join(ROOT, "python"),
                          os.path.dirname(os.path.abspath(__file__))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        assert p.stdout.readline().strip() == "running", p.stderr.read()
        time.sleep(0.5)
        p.send_signal(signal.SIGINT)
        sent = time.perf_counter()
        out, err = p.communicate(timeout=10)
        took = time.perf_counter() - sent
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    assert "KeyboardInterrupt" in err, err
    assert "interrupted 4.0" in out, (out, err)
    assert p.returncode != 0
    assert took < 1.0 + (2.0 if UNDER_ASAN else 0), "exited %.2f s after SIGINT" % took


def test_cli_timeout_and_memory_limit(tmp_path):
    """kiln run --timeout stops an endless Loop; --memory-limit stops a growing scan output."""
    kiln_cmd = os.path.join(os.environ.get("KILN_BUILD_DIR", os.path.join(ROOT, "build")), "kiln")
    model = tmp_path / "loop.onnx"
    model.write_bytes(loop_model(scan=True))
    np.savez(tmp_path / "in.npz", **feeds(ENDLESS))
    t0 = time.monotonic()
    r = subprocess.run([kiln_cmd, "run", str(model), "--inputs", str(tmp_path / "in.npz"), "--timeout", "300",
                        "--memory-limit", "4096", "--output-dir", str(tmp_path / "out")],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "deadline of 300 ms" in r.stderr, r.stderr
    assert time.monotonic() - t0 < 30
    r = subprocess.run([kiln_cmd, "run", str(model), "--inputs", str(tmp_path / "in.npz"), "--memory-limit", "50",
                        "--output-dir", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "memory limit" in r.stderr, r.stderr
    bad = subprocess.run([kiln_cmd, "run", str(model), "--timeout", "-1"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--timeout" in bad.stderr
