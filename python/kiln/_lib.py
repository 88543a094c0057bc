"""Finds and loads libkiln.so and declares the C API's signatures for ctypes; finds the optional
extension kiln._native (the fast path of run(), see _native.c)."""
import ctypes
import importlib.machinery
import importlib.util
import os
import sys

import numpy as np

_HERE = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    env = os.environ.get("KILN_LIBRARY")
    if env:
        yield env
    yield os.path.join(_HERE, "libkiln.so")                      # installed wheel / pip install
    root = os.path.dirname(os.path.dirname(_HERE))
    yield os.path.join(root, "build", "libkiln.so")              # source checkout


loaded_path = None  # the libkiln.so that load() opened

# kiln dtype codes (ONNX TensorProto numbering) <-> numpy (numpy has no bfloat16, code 16)
NP_OF = {1: np.float32, 2: np.uint8, 3: np.int8, 4: np.uint16, 5: np.int16, 6: np.int32, 7: np.int64,
         9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64, 14: np.complex64,
         15: np.complex128}
CODE_OF = {np.dtype(v): k for k, v in NP_OF.items()}
TYPE_NAMES = {1: "tensor(float)", 2: "tensor(uint8)", 3: "tensor(int8)", 4: "tensor(uint16)",
              5: "tensor(int16)", 6: "tensor(int32)", 7: "tensor(int64)", 8: "tensor(string)",
              9: "tensor(bool)", 10: "tensor(float16)", 11: "tensor(double)", 12: "tensor(uint32)",
              13: "tensor(uint64)", 14: "tensor(complex64)", 15: "tensor(complex128)", 16: "tensor(bfloat16)"}


def _load_without_blas_threads(path):
    """Opens libkiln with OPENBLAS_NUM_THREADS=1 in the environment while its OpenBLAS initialises,
    then puts the variable back (other BLAS copies in the process keep the user's setting). kiln
    runs BLAS in its own pool and sets OpenBLAS to one thread anyway, but OpenBLAS starts its
    helper threads as it loads, and each reserves a 128 MiB buffer: under an address-space limit
    (ulimit -v) that reservation fails and OpenBLAS retries it forever, so the helper spins on a
    core and the process hangs at exit, joining it."""
    saved = os.environ.get("OPENBLAS_NUM_THREADS")
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    try:
        return ctypes.CDLL(path)
    finally:
        if saved is None:
            del os.environ["OPENBLAS_NUM_THREADS"]
        else:
            os.environ["OPENBLAS_NUM_THREADS"] = saved


def load():
    global loaded_path
    tried = []
    for path in _candidates():
        tried.append(path)
        if os.path.exists(path):
            lib = _declare(_load_without_blas_threads(path))
            loaded_path = os.path.abspath(path)
            return lib
    raise ImportError("kiln: libkiln.so not found (looked at %s); build it with cmake or set KILN_LIBRARY"
                      % ", ".join(tried))


class TensorDesc(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("rank", ctypes.c_int), ("dims", ctypes.POINTER(ctypes.c_int64)),
                ("data", ctypes.c_void_p), ("memory", ctypes.c_int)]


RANK_SEQUENCE = -2  # KILN_RANK_SEQUENCE: a TensorDesc describing a sequence input


class Options(ctypes.Structure):
    _fields_ = [("threads", ctypes.c_int), ("opt_level", ctypes.c_int), ("providers", ctypes.c_uint),
                ("verbose", ctypes.c_int), ("graph_capture", ctypes.c_int), ("float16", ctypes.c_int),
                ("dim_overrides", ctypes.c_char_p), ("memory_limit", ctypes.c_size_t),
                ("n_initializers", ctypes.c_size_t), ("initializer_names", ctypes.POINTER(ctypes.c_char_p)),
                ("initializers", ctypes.POINTER(TensorDesc)), ("optimized_model_path", ctypes.c_char_p),
                ("optimized_model_external_data", ctypes.c_char_p),
                ("optimized_model_external_min_bytes", ctypes.c_size_t), ("specialize", ctypes.c_int),
                ("cpu_bf16", ctypes.c_int), ("cpu_winograd", ctypes.c_int)]


class ModelMetadata(ctypes.Structure):
    _fields_ = [(n, ctypes.c_char_p) for n in ("producer_name", "producer_version", "domain", "description",
                                                "graph_name", "graph_description")] + [
        ("version", ctypes.c_int64), ("n_custom", ctypes.c_size_t),
        ("custom_keys", ctypes.POINTER(ctypes.c_char_p)), ("custom_values", ctypes.POINTER(ctypes.c_char_p))]


class RunOptions(ctypes.Structure):
    _fields_ = [("outputs_on_device", ctypes.c_int), ("bound_outputs", ctypes.POINTER(TensorDesc)),
                ("terminate", ctypes.POINTER(ctypes.c_int)), ("timeout_ms", ctypes.c_double)]


class IoInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int),
                ("dims", ctypes.POINTER(ctypes.c_int64)), ("dim_names", ctypes.POINTER(ctypes.c_char_p)),
                ("is_sequence", ctypes.c_int), ("is_map", ctypes.c_int), ("map_key_dtype", ctypes.c_int)]


class KilnString(ctypes.Structure):
    """kiln_string: a string element's bytes and length (NUL bytes included)."""
    _fields_ = [("data", ctypes.c_void_p), ("len", ctypes.c_size_t)]


SIZED_STRING = 108  # KILN_DTYPE_SIZED_STRING: an input desc whose data is an array of kiln_string


def string_views(items, what):
    """(kiln_string array, objects that own its bytes) for string elements: bytes as they are, str
    (or str(obj)) as UTF-8; NUL bytes are kept. A str that UTF-8 cannot encode (a lone surrogate)
    fails with a KilnError."""
    keep = []
    for i, x in enumerate(items):
        if isinstance(x, (bytes, bytearray, memoryview)):
            keep.append(bytes(x))
            continue
        try:
            keep.append(str(x).encode("utf-8"))
        except UnicodeEncodeError:
            from ._session import KilnError
            raise KilnError("%s: string %d cannot be encoded as UTF-8 (it holds a lone surrogate); pass bytes "
                            "to give other bytes" % (what, i)) from None
    arr = (KilnString * max(len(keep), 1))()
    for i, b in enumerate(keep):
        arr[i].data = ctypes.cast(ctypes.c_char_p(b), ctypes.c_void_p).value if b else None
        arr[i].len = len(b)
    return arr, keep


def decode_strings(lib, ptr, n, what):
    """The n kiln string elements at ptr (a char* array kiln handed out) as str, each read to its
    full length. Bytes that are not UTF-8 fail with a KilnError saying where (onnxruntime raises
    UnicodeDecodeError there)."""
    if not n:
        return []
    ptrs = ctypes.cast(ptr, ctypes.POINTER(ctypes.c_void_p))
    out = []
    for i in range(n):
        p = ptrs[i]
        b = ctypes.string_at(p, lib.kiln_string_length(p)) if p else b""
        try:
            out.append(b.decode("utf-8"))
        except UnicodeDecodeError as exc:
            from ._session import KilnError
            raise KilnError("%s element %d is not valid UTF-8 (byte 0x%02x at offset %d of %d), so it cannot "
                            "become a Python str" % (what, i, b[exc.start], exc.start, len(b))) from None
    return out


class PlanStats(ctypes.Structure):
    _fields_ = [(n, ctypes.c_size_t) for n in ("arena_bytes", "naive_bytes", "initializer_bytes",
                                                "copied_initializer_bytes", "nodes", "folded_nodes")]


def _declare(lib):
    P, c_int, c_size_t, vp = ctypes.POINTER, ctypes.c_int, ctypes.c_size_t, ctypes.c_void_p
    sigs = {
        "kiln_options_init": (None, [P(Options)]),
        "kiln_last_error": (ctypes.c_char_p, []),
        "kiln_session_open": (c_int, [ctypes.c_char_p, P(Options), P(vp)]),
        "kiln_session_open_bytes": (c_int, [vp, c_size_t, P(Options), P(vp)]),
        "kiln_session_close": (None, [vp]),
        "kiln_session_error": (ctypes.c_char_p, [vp]),
        "kiln_session_input_count": (c_size_t, [vp]),
        "kiln_session_output_count": (c_size_t, [vp]),
        "kiln_session_input_info": (c_int, [vp, c_size_t, P(IoInfo)]),
        "kiln_session_output_info": (c_int, [vp, c_size_t, P(IoInfo)]),
        "kiln_run": (c_int, [vp, c_size_t, P(ctypes.c_char_p), P(TensorDesc), c_size_t, P(ctypes.c_char_p), P(vp)]),
        "kiln_value_kind": (c_int, [vp]),
        "kiln_value_dtype": (c_int, [vp]),
        "kiln_value_rank": (c_int, [vp]),
        "kiln_value_dims": (P(ctypes.c_int64), [vp]),
        "kiln_value_data": (vp, [vp]),
        "kiln_value_nbytes": (c_size_t, [vp]),
        "kiln_value_sequence_length": (c_size_t, [vp]),
        "kiln_value_item": (vp, [vp, c_size_t]),
        "kiln_value_free": (None, [vp]),
        "kiln_session_plan_stats": (c_int, [vp, P(PlanStats)]),
        "kiln_session_specializations": (c_int, [vp]),
        "kiln_run_with_options": (c_int, [vp, P(RunOptions), c_size_t, P(ctypes.c_char_p), P(TensorDesc), c_size_t,
                                          P(ctypes.c_char_p), P(vp)]),
        "kiln_value_memory": (c_int, [vp]),
        "kiln_value_to_device": (c_int, [vp, P(TensorDesc), P(vp)]),
        "kiln_value_to_host": (c_int, [vp, P(vp)]),
        "kiln_session_start_profiling": (c_int, [vp, ctypes.c_char_p]),
        "kiln_session_end_profiling": (ctypes.c_char_p, [vp]),
        "kiln_session_provider_count": (c_size_t, [vp]),
        "kiln_session_provider_name": (ctypes.c_char_p, [vp, c_size_t]),
        "kiln_session_warning": (ctypes.c_char_p, [vp]),
        "kiln_session_node_count": (c_size_t, [vp]),
        "kiln_session_node_info": (c_int, [vp, c_size_t, P(NodeInfo)]),
        "kiln_last_status": (c_int, []),
        "kiln_session_release_memory": (None, [vp]),
        "kiln_session_profiling_start_ns": (ctypes.c_int64, [vp]),
        "kiln_session_model_metadata": (c_int, [vp, P(ModelMetadata)]),
        "kiln_sigint_chain": (c_int, []),
        "kiln_sigint_redirect": (vp, [vp]),
        "kiln_value_map_key_dtype": (c_int, [vp]),
        "kiln_value_map_size": (c_size_t, [vp]),
        "kiln_value_map_keys": (vp, [vp]),
        "kiln_value_map_values": (vp, [vp]),
        "kiln_value_map_new": (c_int, [c_int, c_int, c_size_t, vp, vp, P(vp)]),
        "kiln_value_tensor_new": (c_int, [P(TensorDesc), P(vp)]),
        "kiln_string_length": (c_size_t, [vp]),
        "kiln_run_values": (c_int, [vp, P(RunOptions), c_size_t, P(ctypes.c_char_p), P(vp), c_size_t,
                                    P(ctypes.c_char_p), P(vp)]),
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return lib


class NodeInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("op_type", ctypes.c_char_p), ("domain", ctypes.c_char_p),
                ("provider", ctypes.c_char_p), ("reason", ctypes.c_char_p)]


def load_native():
    """Imports kiln._native, or returns None when no build of it fits this interpreter or it will not
    load. Call after load(): the extension needs libkiln.so by soname, and the dynamic loader reuses
    the libkiln already loaded under that soname, so the extension and the ctypes handle use one
    library: the one KILN_LIBRARY names (e.g. the sanitized build), not a copy found by rpath."""
    mod = sys.modules.get("kiln._native")
    if mod is not None:
        return mod
    dirs = [_HERE]                                                  # installed wheel / pip install
    if loaded_path:
        dirs.append(os.path.dirname(loaded_path))                   # beside the library in use
    dirs.append(os.path.join(os.path.dirname(os.path.dirname(_HERE)), "build"))  # source checkout
    seen = set()
    for d in dirs:
        d = os.path.abspath(d)
        if d in seen:
            continue
        seen.add(d)
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:       # only builds for this interpreter
            path = os.path.join(d, "_native" + suffix)
            if not os.path.exists(path):
                continue
            try:
                loader = importlib.machinery.ExtensionFileLoader("kiln._native", path)
                spec = importlib.util.spec_from_file_location("kiln._native", path, loader=loader)
                mod = importlib.util.module_from_spec(spec)
                spec.loader.exec_module(mod)
            except ImportError:
                continue                    # e.g. built against an older libkiln: try the next one
            sys.modules["kiln._native"] = mod
            return mod
    return None
