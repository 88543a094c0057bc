"""Serve an ONNX model with kiln on Ray Serve: two replicas, dynamic batching, HTTP on localhost.

    python3 examples/serving/ray_serve_kiln.py --model examples/models/tiny_mlp.onnx --port 8000
    curl -s 127.0.0.1:8000/kiln -H 'Content-Type: application/json' -d '{"x": [[0.1, 0.2, 0.3, 0.4]]}'

A request carries one or more rows of every model input (the first axis is the batch axis), either
as JSON, {"<input name>": nested list, ...}, or, for a one-input model, as the bytes of a .npy file
(Content-Type: application/x-npy or application/octet-stream). The reply is JSON,
{"<output name>": nested list, ...}, or the first output as .npy when the Accept header names
application/x-npy. `@serve.batch` gathers concurrent requests into one session run and splits the
outputs back by row counts, so the model's outputs must keep the batch axis first.

--engines kiln,onnxruntime serves the same model with onnxruntime too, at /onnxruntime, so that both
can be measured behind the same server (tests/test_serving.py does). The server binds 127.0.0.1
only, and Ray's own services use the loopback address; Ray's usage reporting is turned off.
The process runs until SIGINT or SIGTERM, then shuts Serve and Ray down.
"""
import argparse
import asyncio
import io
import json
import os
import signal
import sys
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")   # no telemetry off this machine
# Ray swaps 127.0.0.1 for the machine's outward address unless "cluster mode" is off; with it off
# (this variable's name notwithstanding, it applies on Linux too) every Ray service stays on loopback.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

import numpy as np  # noqa: E402

try:
    import ray
    from ray import serve
    from starlette.requests import Request
    from starlette.responses import JSONResponse, Response
except ImportError as e:  # pragma: no cover - a hint rather than a traceback
    sys.exit("ray_serve_kiln.py needs Ray Serve: pip install 'ray[serve]==2.60.0' (%s)" % e)

NPY_TYPES = ("application/x-npy", "application/octet-stream")


def make_session(engine, model, threads):
    """One inference session per replica; kiln and onnxruntime share the API used here."""
    if engine == "kiln":
        import kiln
        return kiln.InferenceSession(model, threads=threads)
    if engine == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    raise ValueError("unknown engine %r (kiln or onnxruntime)" % engine)


_NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


@serve.deployment(num_replicas=2, max_ongoing_requests=32)
class OnnxModel:
    def __init__(self, model, engine="kiln", threads=1):
        self.engine = engine
        self.session = make_session(engine, model, threads)
        self.inputs = [(i.name, _NP_TYPES.get(i.type)) for i in self.session.get_inputs()]
        self.outputs = [o.name for o in self.session.get_outputs()]

    def _parse(self, body, content_type):
        """The request body as {input name: array with the batch axis first}."""
        if content_type in NPY_TYPES:
            if len(self.inputs) != 1:
                raise ValueError("a .npy body needs a one-input model; this one has %d inputs: send JSON"
                                 % len(self.inputs))
            feeds = {self.inputs[0][0]: np.load(io.BytesIO(body), allow_pickle=False)}
        else:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("the JSON body must be an object {input name: rows}")
            feeds = {}
            for name, dtype in self.inputs:
                if name not in doc:
                    raise ValueError("input %r is missing (model inputs: %s)"
                                     % (name, ", ".join(n for n, _ in self.inputs)))
                feeds[name] = np.asarray(doc[name], dtype=dtype)
        rows = None
        for name, dtype in self.inputs:
            a = feeds[name]
            if dtype is not None and a.dtype != dtype:
                raise ValueError("input %r: dtype %s, the model wants %s" % (name, a.dtype, np.dtype(dtype)))
            if a.ndim == 0 or (rows is not None and a.shape[0] != rows):
                raise ValueError("input %r: every input needs the same number of rows on axis 0" % name)
            rows = a.shape[0]
        return feeds

    def _run(self, feeds):
        return self.session.run(None, feeds)

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def predict(self, requests):
        """Runs every request of the batch as one session call and splits the outputs by rows."""
        counts = [r[self.inputs[0][0]].shape[0] for r in requests]
        merged = {n: np.concatenate([r[n] for r in requests]) for n, _ in self.inputs}
        # kiln and onnxruntime release the GIL while they run: a worker thread keeps the replica's
        # event loop taking requests (the next batch) meanwhile.
        outs = await asyncio.to_thread(self._run, merged)
        bounds = np.cumsum(counts)[:-1]
        per_output = [np.split(o, bounds) for o in outs]
        return [[parts[k] for parts in per_output] for k in range(len(requests))]

    async def __call__(self, request: Request):
        content_type = request.headers.get("content-type", "application/json").split(";")[0].strip()
        try:
            feeds = self._parse(await request.body(), content_type)
        except (ValueError, TypeError, OSError) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        outs = await self.predict(feeds)
        if "application/x-npy" in request.headers.get("accept", ""):
            buf = io.BytesIO()
            np.save(buf, outs[0], allow_pickle=False)
            return Response(buf.getvalue(), media_type="application/x-npy")
        return JSONResponse({n: o.tolist() for n, o in zip(self.outputs, outs)})


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx"))
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--engines", default="kiln", help="comma-separated: kiln, onnxruntime")
    ap.add_argument("--replicas", type=int, default=2)
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per replica")
    ap.add_argument("--replica-cpus", type=float, default=0.5,
                    help="CPUs Ray reserves per replica (fractions let 2 engines x 2 replicas share 2 cores)")
    ap.add_argument("--ray-temp-dir", default=None, help="Ray's session files (default /tmp/ray)")
    args = ap.parse_args()

    # Replicas are separate processes: they find the in-tree kiln package through PYTHONPATH.
    pypath = os.path.join(ROOT, "python")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (pypath, os.environ.get("PYTHONPATH")) if p)
    ray.init(address="local", include_dashboard=False, num_cpus=os.cpu_count(), logging_level="WARNING",
             log_to_driver=False, _temp_dir=args.ray_temp_dir and os.path.abspath(args.ray_temp_dir))
    serve.start(http_options={"host": "127.0.0.1", "port": args.port}, logging_config={"log_level": "WARNING"})
    model = os.path.abspath(args.model)
    for engine in args.engines.split(","):
        app = OnnxModel.options(name="OnnxModel_" + engine, num_replicas=args.replicas,
                                ray_actor_options={"num_cpus": args.replica_cpus}
                                ).bind(model, engine, args.threads)
        serve.run(app, name=engine, route_prefix="/" + engine)
    print("READY http://127.0.0.1:%d/{%s}" % (args.port, args.engines), flush=True)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    # Ray owns every process of this server: its shutdown stops the replicas, the proxy and the
    # controller at once (serve.shutdown() first would wait ~30 s for the proxy to drain).
    ray.shutdown()
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
