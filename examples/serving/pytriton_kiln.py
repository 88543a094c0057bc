"""Serve an ONNX model with kiln behind NVIDIA Triton Inference Server, through PyTriton.

    python3 examples/serving/pytriton_kiln.py --model examples/models/tiny_mlp.onnx
    curl -s 127.0.0.1:8000/v2/models/kiln/infer -d \
      '{"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0.1, 0.2, 0.3, 0.4]}]}'

Triton speaks the KServe v2 protocol over HTTP (JSON, or JSON with binary tensors) and gRPC; any
Triton client works (tritonclient, or pytriton.client.ModelClient("127.0.0.1:8001", "kiln")).
The model is bound with two instances (each its own kiln session) and Triton's dynamic batcher,
which merges concurrent requests into one call of up to --max-batch rows. The model's first axis
must be its batch axis. Every port is bound on 127.0.0.1 only.

--engines kiln,onnxruntime serves the same model with onnxruntime too, as Triton model
"onnxruntime", so that both can be measured behind the same server (tests/test_serving.py does).
Runs until SIGINT or SIGTERM, then stops Triton.

PyTriton 0.7 needs numpy < 2 (scripts/setup.sh puts it in its own venv, which sees this
interpreter's other packages).
"""
import argparse
import os
import signal
import sys
import sysconfig
import threading

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np  # noqa: E402

try:
    from pytriton.decorators import batch
    from pytriton.model_config import DynamicBatcher, ModelConfig, Tensor
    from pytriton.triton import Triton, TritonConfig
except ImportError as e:  # pragma: no cover - a hint rather than a traceback
    sys.exit("pytriton_kiln.py needs PyTriton: pip install nvidia-pytriton==0.7.0 (%s)" % e)

_NP_TYPES = {"tensor(float)": np.float32, "tensor(double)": np.float64, "tensor(float16)": np.float16,
             "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(int8)": np.int8,
             "tensor(uint8)": np.uint8, "tensor(bool)": np.bool_}


def make_session(engine, model, threads):
    """One inference session per Triton model instance; kiln and onnxruntime share the API used here."""
    if engine == "kiln":
        sys.path.insert(0, os.path.join(ROOT, "python"))
        import kiln
        return kiln.InferenceSession(model, threads=threads)
    if engine == "onnxruntime":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])
    raise ValueError("unknown engine %r (kiln or onnxruntime)" % engine)


def spec(arg):
    """Triton's per-row view of a model input or output: its shape without the batch axis."""
    if arg.type not in _NP_TYPES:
        raise SystemExit("%s has type %s, which this example does not map" % (arg.name, arg.type))
    if not arg.shape:
        raise SystemExit("%s has no batch axis (rank 0)" % arg.name)
    dims = tuple(d if isinstance(d, int) and d > 0 else -1 for d in arg.shape[1:])
    return Tensor(name=arg.name, dtype=_NP_TYPES[arg.type], shape=dims)


def make_infer(session):
    outputs = [o.name for o in session.get_outputs()]

    @batch
    def infer(**inputs):
        # @batch hands over every request of the dynamic batch stacked along axis 0, and splits
        # the returned arrays back by the same row counts.
        return dict(zip(outputs, session.run(None, inputs)))
    return infer


def libpython_first():
    """Triton's Python-backend stub links libpython3.X.so by name. On a machine whose system
    Python differs from this interpreter (e.g. Debian's 3.11.2 beside a pyenv 3.11.7) the stub
    would run this interpreter's standard library on the system's libpython, which fails at model
    load ("'_thread.RLock' object has no attribute '_recursion_count'"). Putting this interpreter's
    own libpython first on the library path, which PyTriton passes on to Triton, avoids it."""
    libdir = sysconfig.get_config_var("LIBDIR")
    if sysconfig.get_config_var("Py_ENABLE_SHARED") and libdir and os.path.isdir(libdir):
        paths = [libdir] + [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
        os.environ["LD_LIBRARY_PATH"] = ":".join(paths)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "examples", "models", "tiny_mlp.onnx"))
    ap.add_argument("--engines", default="kiln", help="comma-separated: kiln, onnxruntime")
    ap.add_argument("--http-port", type=int, default=8000)
    ap.add_argument("--grpc-port", type=int, default=8001)
    ap.add_argument("--metrics-port", type=int, default=8002)
    ap.add_argument("--instances", type=int, default=2, help="model instances (sessions) per engine")
    ap.add_argument("--threads", type=int, default=1, help="intra-op threads per session")
    ap.add_argument("--max-batch", type=int, default=64, help="most rows the dynamic batcher merges")
    ap.add_argument("--queue-delay-us", type=int, default=2000,
                    help="how long the dynamic batcher holds a request to wait for others")
    args = ap.parse_args()

    libpython_first()
    model = os.path.abspath(args.model)
    config = TritonConfig(http_address="127.0.0.1", http_port=args.http_port,
                          grpc_address="127.0.0.1", grpc_port=args.grpc_port,
                          metrics_address="127.0.0.1", metrics_port=args.metrics_port,
                          allow_gpu_metrics=False, exit_timeout_secs=5)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with Triton(config=config) as triton:
        for engine in args.engines.split(","):
            sessions = [make_session(engine, model, args.threads) for _ in range(args.instances)]
            triton.bind(model_name=engine, infer_func=[make_infer(s) for s in sessions],
                        inputs=[spec(i) for i in sessions[0].get_inputs()],
                        outputs=[spec(o) for o in sessions[0].get_outputs()],
                        config=ModelConfig(max_batch_size=args.max_batch,
                                           batcher=DynamicBatcher(max_queue_delay_microseconds=args.queue_delay_us)),
                        strict=True)
        triton.run()
        print("READY http=127.0.0.1:%d grpc=127.0.0.1:%d models=%s"
              % (args.http_port, args.grpc_port, args.engines), flush=True)
        # Leaving the block stops Triton and the inference threads.
        while not stop.wait(1.0):
            if not triton.is_alive():
                sys.exit("Triton stopped on its own: see its log above")
    print("STOPPED", flush=True)


if __name__ == "__main__":
    main()
