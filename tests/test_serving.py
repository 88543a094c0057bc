"""kiln behind model servers: Ray Serve (examples/serving/ray_serve_kiln.py) and Triton through
PyTriton (examples/serving/pytriton_kiln.py).

Each server runs on 127.0.0.1 (free ports picked here) with the same model served twice, by kiln
and by onnxruntime, and takes a bounded load: REQUESTS requests of 1-4 random rows from CLIENTS
threads, each on its own keep-alive connection, half as JSON and half as binary tensors. Every
reply is checked against onnxruntime run here on the same input, and none may be missing or fail.
Throughput and latency percentiles of both engines are printed and written to build/serving.md,
or to $KILN_SERVING_RESULTS (bench/results/serving.md holds the committed table).
Under scripts/sanitize.sh (ASan preloaded, inherited by the servers) the same checks run the
sanitized kiln on 300 requests, and no timings are written.

Servers run in their own session (process group) with a marker in their environment; the fixture
finalizers stop them with SIGTERM, then SIGKILL the group and any process left with the marker
(Ray's workers sit in groups of their own), so a failing test leaves nothing running.
"""
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import warnings

import numpy as np
import onnxruntime as ort
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODEL = os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx")   # x [N, 4] float -> y [N, 3]
RAY_EXAMPLE = os.path.join(ROOT, "examples", "serving", "ray_serve_kiln.py")
TRITON_EXAMPLE = os.path.join(ROOT, "examples", "serving", "pytriton_kiln.py")
SANITIZED = "libasan" in os.environ.get("LD_PRELOAD", "")   # scripts/sanitize.sh: servers run the ASan build
# Under the sanitizer the same checks run on a lighter load, and its (meaningless) timings are not kept.
REQUESTS = int(os.environ.get("KILN_SERVING_REQUESTS", "300" if SANITIZED else "2000"))
CLIENTS = int(os.environ.get("KILN_SERVING_CLIENTS", "8"))
START_TIMEOUT_S = 120
LOAD_TIMEOUT_S = 120       # one engine's whole load; far above what 2 cores need
# The table goes to build/ (ignored) unless KILN_SERVING_RESULTS names another file: the committed
# bench/results/serving.md changes only when asked, not on every suite run of every branch.
RESULTS = os.environ.get("KILN_SERVING_RESULTS") or os.path.join(ROOT, "build", "serving.md")
ENGINES = ["kiln", "onnxruntime"]

# PyTriton 0.7 pins numpy < 2, so scripts/setup.sh installs it in a venv of its own
PYTRITON_PYTHON = os.environ.get("KILN_PYTRITON_PYTHON") or os.path.join(
    os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "kiln", "pytriton-venv", "bin", "python")

_results = {}     # (server, engine) -> measured row


def _free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


def _marked_pids(marker):
    """Processes whose environment carries marker: the server and everything it started."""
    needle = ("KILN_SERVING_TEST=" + marker).encode()
    pids = []
    for d in os.listdir("/proc"):
        if d.isdigit() and int(d) != os.getpid():
            try:
                with open("/proc/%s/environ" % d, "rb") as f:
                    if needle in f.read().split(b"\0"):
                        pids.append(int(d))
            except OSError:
                pass
    return pids


class Server:
    """A server process in its own session, reporting READY on stdout; stop() always ends it."""

    def __init__(self, name, argv, log_dir, env_extra=None):
        self.name = name
        self.marker = uuid.uuid4().hex
        self.log_path = os.path.join(log_dir, name + ".log")
        env = dict(os.environ, KILN_SERVING_TEST=self.marker, PYTHONUNBUFFERED="1")
        env.update(env_extra or {})
        self.log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(argv, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     env=env, cwd=ROOT, start_new_session=True)

    def log_tail(self, n=4000):
        with open(self.log_path, "rb") as f:
            text = f.read().decode(errors="replace")
        keep = [ln for ln in text.splitlines() if not ln.startswith(("I1", "|", "+"))]   # Triton's info and tables
        return "\n".join(keep)[-n:]

    def wait_ready(self):
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if "READY" in self.log_tail(1 << 20):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("%s exited with %s before it was ready:\n%s"
                                   % (self.name, self.proc.returncode, self.log_tail()))
            time.sleep(0.25)
        raise RuntimeError("%s not ready after %d s:\n%s" % (self.name, START_TIMEOUT_S, self.log_tail()))

    def stop(self, grace_s=20):
        if self.log.closed:
            return
        try:
            if self.proc.poll() is None:
                self.proc.send_signal(signal.SIGTERM)
                try:
                    self.proc.wait(grace_s)
                except subprocess.TimeoutExpired:
                    pass
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(10)
            # Ray workers outlive a killed raylet for a moment, each in a group of its own
            for _ in range(20):
                left = _marked_pids(self.marker)
                if not left:
                    break
                for pid in left:
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except ProcessLookupError:
                        pass
                time.sleep(0.25)
        finally:
            self.log.close()


def _start(request, tmp_path_factory, name, make_argv, env_extra=None):
    """Starts a server from make_argv() -> (argv, ports) and returns its ports. A server that dies
    before it is ready is started once more on fresh ports (picking a free port and binding it later
    is a race with every other process on the machine), with the first log kept in a warning."""
    first = None
    for _ in range(2):
        argv, ports = make_argv()
        server = Server(name, argv, str(tmp_path_factory.mktemp(name)), env_extra)
        request.addfinalizer(server.stop)
        try:
            server.wait_ready()
        except RuntimeError as e:
            server.stop()
            if first is not None:
                pytest.fail("%s\n--- first try ---\n%s" % (e, first), pytrace=False)
            first = str(e)
            continue
        if first is not None:
            warnings.warn("%s needed a second start; the first:\n%s" % (name, first))
        return ports
    raise AssertionError("unreachable")


@pytest.fixture(scope="module")
def ray_server(request, tmp_path_factory):
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (scripts/setup.sh installs ray[serve])")
    ray_tmp = tempfile.mkdtemp(prefix="kiln-ray-")    # short: Ray's socket paths must fit 107 bytes
    request.addfinalizer(lambda: subprocess.run(["rm", "-rf", ray_tmp]))

    def argv():
        port, = _free_ports(1)
        return [sys.executable, RAY_EXAMPLE, "--model", MODEL, "--port", str(port), "--engines", ",".join(ENGINES),
                "--replicas", "2", "--threads", "1", "--ray-temp-dir", ray_tmp], port
    return _start(request, tmp_path_factory, "ray", argv)


def _pytriton_usable():
    if not os.path.exists(PYTRITON_PYTHON):
        return False
    r = subprocess.run([PYTRITON_PYTHON, "-c", "import pytriton, tritonclient.grpc"], capture_output=True)
    return r.returncode == 0


@pytest.fixture(scope="module")
def triton_server(request, tmp_path_factory):
    if not _pytriton_usable():
        pytest.skip("PyTriton is not installed: scripts/setup.sh puts nvidia-pytriton in %s's venv "
                    "(or set KILN_PYTRITON_PYTHON)" % PYTRITON_PYTHON)

    def argv():
        http_port, grpc_port, metrics_port = _free_ports(3)
        return ([PYTRITON_PYTHON, TRITON_EXAMPLE, "--model", MODEL, "--engines", ",".join(ENGINES),
                 "--http-port", str(http_port), "--grpc-port", str(grpc_port), "--metrics-port", str(metrics_port),
                 "--instances", "2", "--threads", "1"], {"http": http_port, "grpc": grpc_port})
    pypath = os.pathsep.join(p for p in (os.path.join(ROOT, "python"), os.environ.get("PYTHONPATH")) if p)
    return _start(request, tmp_path_factory, "triton", argv, {"PYTHONPATH": pypath})


# ---- requests and their expected answers ----------------------------------------------------------

def _workload(n, seed=7):
    """n inputs of 1-4 rows and onnxruntime's outputs for them, computed before any timing."""
    rng = np.random.default_rng(seed)
    xs = [rng.standard_normal((1 + i % 4, 4)).astype(np.float32) for i in range(n)]
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(MODEL, so, providers=["CPUExecutionProvider"])
    return xs, [sess.run(None, {"x": x})[0] for x in xs]


def _npy(a):
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def ray_request(engine, i, x):
    """(method, path, body, headers, decode) for request i: JSON on even i, .npy on odd."""
    if i % 2 == 0:
        return ("/" + engine, json.dumps({"x": x.tolist()}).encode(), {"Content-Type": "application/json"},
                lambda body, hdr: np.asarray(json.loads(body)["y"], dtype=np.float32))
    return ("/" + engine, _npy(x), {"Content-Type": "application/x-npy", "Accept": "application/x-npy"},
            lambda body, hdr: np.load(io.BytesIO(body), allow_pickle=False))


def triton_request(engine, i, x):
    """KServe v2 over HTTP: JSON tensors on even i, the binary-tensor extension on odd."""
    path = "/v2/models/%s/infer" % engine
    if i % 2 == 0:
        doc = {"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32", "data": x.ravel().tolist()}],
               "outputs": [{"name": "y"}]}

        def decode(body, hdr):
            out = json.loads(body)["outputs"][0]
            return np.asarray(out["data"], dtype=np.float32).reshape(out["shape"])
        return path, json.dumps(doc).encode(), {"Content-Type": "application/json"}, decode
    raw = x.tobytes()
    head = json.dumps({"inputs": [{"name": "x", "shape": list(x.shape), "datatype": "FP32",
                                   "parameters": {"binary_data_size": len(raw)}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()

    def decode_binary(body, hdr):
        n = int(hdr["Inference-Header-Content-Length"])
        out = json.loads(body[:n])["outputs"][0]
        size = out["parameters"]["binary_data_size"]
        return np.frombuffer(body[n:n + size], dtype=np.float32).reshape(out["shape"])
    return (path, head + raw, {"Content-Type": "application/octet-stream",
                               "Inference-Header-Content-Length": str(len(head))}, decode_binary)


def run_load(port, make_request, xs, clients):
    """Sends every request once from `clients` threads (request k goes to thread k % clients),
    each on one keep-alive connection. Returns (replies, latencies, errors, wall seconds)."""
    n = len(xs)
    replies, lat = [None] * n, np.full(n, np.nan)
    errors = []
    deadline = time.monotonic() + LOAD_TIMEOUT_S

    def client(t):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            for i in range(t, n, clients):
                if time.monotonic() > deadline:
                    errors.append((i, "load deadline passed"))
                    return
                path, body, headers, decode = make_request(i, xs[i])
                t0 = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                except (OSError, http.client.HTTPException) as e:
                    errors.append((i, "%s: %s" % (type(e).__name__, e)))
                    conn.close()
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                    continue
                lat[i] = time.perf_counter() - t0
                if resp.status != 200:
                    errors.append((i, "HTTP %d: %s" % (resp.status, data[:300])))
                    continue
                try:
                    replies[i] = decode(data, resp.headers)
                except Exception as e:  # noqa: BLE001 - a malformed reply is a failed request
                    errors.append((i, "bad reply (%s): %s" % (e, data[:300])))
        finally:
            conn.close()

    threads = [threading.Thread(target=client, args=(t,), daemon=True) for t in range(clients)]
    t0 = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join(LOAD_TIMEOUT_S + 40)
    return replies, lat, errors, time.perf_counter() - t0


def check_and_record(server, engine, port, make_request):
    xs, want = _workload(REQUESTS)
    # warm-up (first batches, connection set-up), not timed and not counted
    wx, ww = _workload(4 * CLIENTS, seed=99)
    replies, _, errors, _ = run_load(port, make_request, wx, CLIENTS)
    assert not errors, errors[:5]
    for got, exp in zip(replies, ww):
        np.testing.assert_allclose(got, exp, rtol=1e-5, atol=1e-6)
    replies, lat, errors, wall = run_load(port, make_request, xs, CLIENTS)
    assert not errors, "%d of %d requests failed, e.g. %s" % (len(errors), len(xs), errors[:5])
    missing = [i for i, r in enumerate(replies) if r is None]
    assert not missing, "no reply for %d requests" % len(missing)
    bad = []
    for i, (got, exp) in enumerate(zip(replies, want)):
        if got.shape != exp.shape or not np.allclose(got, exp, rtol=1e-5, atol=1e-6):
            bad.append(i)
    assert not bad, "%d replies differ from onnxruntime, e.g. request %d: %s vs %s" % (
        len(bad), bad[0], replies[bad[0]], want[bad[0]])
    rows = sum(x.shape[0] for x in xs)
    _results[(server, engine)] = dict(requests=len(xs), rows=rows, wall=wall, rps=len(xs) / wall,
                                      p50=np.percentile(lat, 50) * 1e3, p99=np.percentile(lat, 99) * 1e3)


@pytest.mark.parametrize("engine", ENGINES)
def test_ray_serve_load(ray_server, engine):
    check_and_record("Ray Serve 2.60 (2 replicas, @serve.batch)", engine, ray_server,
                     lambda i, x: ray_request(engine, i, x))


@pytest.mark.parametrize("engine", ENGINES)
def test_pytriton_load(triton_server, engine):
    check_and_record("Triton 2.51 via PyTriton 0.7 (2 instances, dynamic batcher)", engine, triton_server["http"],
                     lambda i, x: triton_request(engine, i, x))


GRPC_CLIENT = r"""
import sys, numpy as np
from tritonclient.grpc import InferenceServerClient, InferInput
data = np.load(sys.argv[3])
c = InferenceServerClient(sys.argv[1])
out = {}
for k in sorted(data.files, key=int):
    x = data[k]
    inp = InferInput("x", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    out[k] = c.infer(sys.argv[2], [inp]).as_numpy("y")
np.savez(sys.argv[4], **out)
"""


@pytest.mark.parametrize("engine", ENGINES)
def test_pytriton_grpc(triton_server, engine, tmp_path):
    """The same model over Triton's gRPC endpoint (tritonclient lives in PyTriton's venv)."""
    xs, want = _workload(64, seed=3)
    np.savez(tmp_path / "in.npz", **{str(i): x for i, x in enumerate(xs)})
    r = subprocess.run([PYTRITON_PYTHON, "-c", GRPC_CLIENT, "127.0.0.1:%d" % triton_server["grpc"], engine,
                        str(tmp_path / "in.npz"), str(tmp_path / "out.npz")], capture_output=True, text=True,
                       timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    got = np.load(tmp_path / "out.npz")
    assert len(got.files) == len(xs)
    for i, exp in enumerate(want):
        np.testing.assert_allclose(got[str(i)], exp, rtol=1e-5, atol=1e-6)


def test_ray_serve_bad_request(ray_server):
    """A malformed payload is a 400 naming the problem, and the server keeps serving."""
    conn = http.client.HTTPConnection("127.0.0.1", ray_server, timeout=30)
    try:
        conn.request("POST", "/kiln", body=b'{"z": [[1, 2, 3, 4]]}', headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        body = resp.read()
        assert resp.status == 400 and b"input 'x' is missing" in body, (resp.status, body)
        conn.request("POST", "/kiln", body=b"not json", headers={"Content-Type": "application/json"})
        resp = conn.getresponse()
        assert resp.status == 400, resp.read()
        resp.read()
        path, body, headers, decode = ray_request("kiln", 0, np.ones((2, 4), np.float32))
        conn.request("POST", path, body=body, headers=headers)
        resp = conn.getresponse()
        assert resp.status == 200 and decode(resp.read(), resp.headers).shape == (2, 3)
    finally:
        conn.close()


@pytest.fixture(scope="module", autouse=True)
def report(request):
    """After the module: the table of what was measured, printed and written to RESULTS."""
    yield
    if not _results or SANITIZED:
        return
    lines = ["# Serving: kiln vs onnxruntime behind the same server", "",
             "`KILN_SERVING_RESULTS=bench/results/serving.md python3 -m pytest -q -s tests/test_serving.py`, %s, %d cores "
             "(shared with other work: absolute numbers are noisy; compare rows of one server)."
             % (time.strftime("%Y-%m-%d"), os.cpu_count()),
             "Model examples/models/tiny_mlp.onnx; %d requests of 1-4 rows (half JSON, half binary) from %d "
             "client threads with keep-alive connections, after a warm-up; every reply checked against "
             "onnxruntime run in the test. Each engine: 2 replicas/instances with 1 intra-op thread. The clients "
             "share the cores with the server. The model runs in microseconds, so the rows time each server's "
             "own request path more than the engine behind it." % (REQUESTS, CLIENTS),
             "", "| server | engine | requests | rows | req/s | p50 ms | p99 ms |", "|---|---|---|---|---|---|---|"]
    for (server, engine), r in _results.items():
        lines.append("| %s | %s | %d | %d | %.0f | %.2f | %.2f |"
                     % (server, engine, r["requests"], r["rows"], r["rps"], r["p50"], r["p99"]))
    text = "\n".join(lines) + "\n"
    os.makedirs(os.path.dirname(RESULTS), exist_ok=True)
    with open(RESULTS, "w") as f:
        f.write(text)
    capman = request.config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        with capman.global_and_fixture_disabled():
            sys.stdout.write("\n" + text)
    else:
        sys.stdout.write("\n" + text)
