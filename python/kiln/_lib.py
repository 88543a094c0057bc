"""Finds and loads libkiln.so and declares the C API's signatures for ctypes."""
import ctypes
import os

_HERE = os.path.dirname(os.path.abspath(__file__))


def _candidates():
    env = os.environ.get("KILN_LIBRARY")
    if env:
        yield env
    yield os.path.join(_HERE, "libkiln.so")                      # installed wheel / pip install
    root = os.path.dirname(os.path.dirname(_HERE))
    yield os.path.join(root, "build", "libkiln.so")              # source checkout


def load():
    tried = []
    for path in _candidates():
        tried.append(path)
        if os.path.exists(path):
            return _declare(ctypes.CDLL(path))
    raise ImportError("kiln: libkiln.so not found (looked at %s); build it with cmake or set KILN_LIBRARY"
                      % ", ".join(tried))


class Options(ctypes.Structure):
    _fields_ = [("threads", ctypes.c_int), ("opt_level", ctypes.c_int), ("providers", ctypes.c_uint),
                ("verbose", ctypes.c_int)]


class TensorDesc(ctypes.Structure):
    _fields_ = [("dtype", ctypes.c_int), ("rank", ctypes.c_int), ("dims", ctypes.POINTER(ctypes.c_int64)),
                ("data", ctypes.c_void_p)]


class IoInfo(ctypes.Structure):
    _fields_ = [("name", ctypes.c_char_p), ("dtype", ctypes.c_int), ("rank", ctypes.c_int),
                ("dims", ctypes.POINTER(ctypes.c_int64)), ("dim_names", ctypes.POINTER(ctypes.c_char_p)),
                ("is_sequence", ctypes.c_int)]


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
    }
    for name, (res, args) in sigs.items():
        f = getattr(lib, name)
        f.restype = res
        f.argtypes = args
    return lib
