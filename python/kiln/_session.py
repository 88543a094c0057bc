"""InferenceSession: the onnxruntime-style Python API over kiln's C library.

Two paths share this class: the extension kiln._native (C; used when a build of it is found) and
ctypes (always available). KILN_PYTHON_CTYPES=1 forces ctypes, read when a session is created.
Options, providers, NodeArgs and KilnError are handled here for both, so they behave alike."""
import ctypes
import os
import threading

import _signal  # getsignal without the enum conversion of signal.getsignal (3 us a call)

import numpy as np

from . import _lib, _maps
from ._device import IOBinding, OrtValue, device_feed

__version__ = "0.1.0"

_lib_handle = None
_native_mod = False  # not looked for yet; then the module or None


def _L():
    global _lib_handle
    if _lib_handle is None:
        _lib_handle = _lib.load()
    return _lib_handle


def _native_module():
    """kiln._native, or None (not built, or forced off by KILN_PYTHON_CTYPES)."""
    global _native_mod
    if os.environ.get("KILN_PYTHON_CTYPES", "") not in ("", "0"):
        return None
    if _native_mod is False:
        _L()  # the extension binds to the libkiln loaded here (see _lib.load_native)
        _native_mod = _lib.load_native()
        if _native_mod is not None:
            _native_mod._set_error_class(KilnError)
    return _native_mod


# kiln dtype codes (ONNX TensorProto numbering) <-> numpy: one table for the whole package (_lib.py)
_NP_OF, _CODE_OF, _TYPE_NAMES = _lib.NP_OF, _lib.CODE_OF, _lib.TYPE_NAMES

_PROVIDERS = {"CPUExecutionProvider": 1, "CUDAExecutionProvider": 2}
_PLAN_FIELDS = [n for n, _ in _lib.PlanStats._fields_]


def _device_feed_of_bound(b):
    from ._device import DeviceFeed
    code, shape, ptr, _ = b
    return DeviceFeed(ptr, code, shape, None)


class KilnError(RuntimeError):
    """An error reported by kiln; the message names the node, input or file and the reason."""


_sigint_chained = [None, False]  # the Python SIGINT handler kiln's was put in front of; in place
_MAIN_THREAD = threading.main_thread().ident


def _ctrl_c_reaches_run(lib):
    """Whether a SIGINT during this thread's ctypes run can stop it, as _native.c's
    sigint_reaches_run decides: Python handles signals only between bytecodes, never during the C
    call, so for a run on the main thread kiln's SIGINT handler (chained in front of Python's) sets
    the run's terminate flag; the KeyboardInterrupt Python's handler recorded is raised as the call
    returns."""
    if threading.get_ident() != _MAIN_THREAD:
        return False
    handler = _signal.getsignal(_signal.SIGINT)
    if handler is not _sigint_chained[0]:  # signal.signal() replaced kiln's handler
        _sigint_chained[:] = [handler, bool(lib.kiln_sigint_chain())]
    return _sigint_chained[1]


_main_run = []  # the main thread's (RunOptions struct, flag) for runs without options, made once


def _run_options_struct(run_options, on_device=0, reuse=False):
    """(the C kiln_run_options, the terminate flag it points to, whether that flag is the caller's).
    reuse: without run_options, the main thread may take a struct made once (the caller must not
    change it)."""
    if run_options is None:
        if reuse and threading.get_ident() == _MAIN_THREAD:
            if not _main_run:
                flag = ctypes.c_int(0)
                _main_run[:] = [_lib.RunOptions(0, None, ctypes.pointer(flag), 0.0), flag]
            _main_run[1].value = 0
            return _main_run[0], _main_run[1], False
        flag = ctypes.c_int(0)
        return _lib.RunOptions(on_device, None, ctypes.pointer(flag), 0.0), flag, False
    if not hasattr(run_options, "_flag"):
        raise TypeError("run_options must be a kiln.RunOptions, not %s" % type(run_options).__name__)
    timeout = float(run_options.timeout_ms or 0)
    if not timeout >= 0:
        raise ValueError("RunOptions.timeout_ms must be >= 0 (0: no deadline), got %r" % run_options.timeout_ms)
    return _lib.RunOptions(on_device, None, ctypes.pointer(run_options._flag), timeout), run_options._flag, True


def _call_run(lib, flag, user_flag, results, n_out, call):
    """call() (a kiln_run_with_options whose terminate is flag), stoppable by Ctrl-C."""
    ctrl_c = _ctrl_c_reaches_run(lib)
    before = flag.value
    prev = lib.kiln_sigint_redirect(ctypes.addressof(flag)) if ctrl_c else None
    try:
        return call()
    except KeyboardInterrupt:
        if user_flag:
            flag.value = before  # the signal's mark, not the caller's
        for i in range(n_out):  # a run that ended just as Ctrl-C came: its outputs go
            if results[i]:
                lib.kiln_value_free(results[i])
        raise
    finally:
        if ctrl_c:
            lib.kiln_sigint_redirect(prev)


def get_available_providers():
    """The providers this build can use: CUDA when libkiln_cuda.so sits beside libkiln (it may
    still fail to start on a machine without a GPU; sessions then fall back with a warning)."""
    _L()  # the library's path is known once it is loaded: asking first must not answer "CPU only"
    lib_path = getattr(_lib, "loaded_path", None) or ""
    found = ["CPUExecutionProvider"]
    if lib_path and os.path.exists(os.path.join(os.path.dirname(lib_path), "libkiln_cuda.so")):
        found.insert(0, "CUDAExecutionProvider")
    return found


class NodeArg:
    def __init__(self, name, type_, shape):
        self.name, self.type, self.shape = name, type_, shape

    def __repr__(self):
        return "NodeArg(name=%r, type=%r, shape=%r)" % (self.name, self.type, self.shape)


def _node_arg(name, dtype, rank, dims, dim_names, is_sequence, map_key=0):
    """dims[i] < 0 is symbolic: dim_names[i] (str) names it, or None / "" when it has no name."""
    if map_key:
        return NodeArg(name, _maps.type_name(map_key, dtype, is_sequence), [])
    shape = None
    if rank >= 0:
        shape = [int(dims[d]) if dims[d] >= 0 else (dim_names[d] or None) for d in range(rank)]
    t = _TYPE_NAMES.get(dtype, "tensor(%d)" % dtype)
    if is_sequence:
        t = "seq(%s)" % t
    return NodeArg(name, t, shape)


def _node_arg_ctypes(info):
    rank = info.rank
    dims = [info.dims[d] for d in range(rank)] if rank > 0 else []
    names = [(info.dim_names[d].decode() if info.dim_names[d] else None) if info.dim_names else None
             for d in range(rank)] if rank > 0 else []
    return _node_arg(info.name.decode(), info.dtype, rank, dims, names, info.is_sequence,
                     info.map_key_dtype if info.is_map else 0)


def _specialize_option(sess_options, specialize):
    """kiln_options.specialize from the kwarg (True / False / None) or, failing that, the session
    config entry "kiln.specialize_shapes" ("1" / "0" / "auto"); None and "auto" leave kiln's
    default (on with a device provider, off on the CPU only)."""
    if specialize is not None:
        return 1 if specialize else -1
    config = getattr(sess_options, "_config", None) or {}
    value = str(config.get("kiln.specialize_shapes", "auto")).lower()
    if value in ("1", "true"):
        return 1
    if value in ("0", "false"):
        return -1
    if value != "auto":
        raise KilnError("kiln.specialize_shapes must be 1, 0 or auto, not %r" % value)
    return 0



class _ValueOwner:
    """Frees a kiln value when collected: the owner of an output's data that an array shares."""
    __slots__ = ("_free", "_v")

    def __init__(self, free, v):
        self._free, self._v = free, v

    def __del__(self):
        if self._v:
            try:
                self._free(self._v)
            except Exception:  # interpreter shutdown: the library may already be gone
                pass
            self._v = None

class InferenceSession:
    """InferenceSession(path_or_bytes, sess_options=None, providers=None, threads=None, opt_level=2)"""

    def __init__(self, path_or_bytes, sess_options=None, providers=None, threads=None, opt_level=2,
                 verbose=False, provider_options=None, float16=False, specialize=None, bf16=False,
                 winograd=True):
        lib = _L()
        self._lib = lib
        self._sess_options = sess_options
        self._s = None
        self._native = None
        self._run_lock = threading.Lock()
        self._running = 0
        self._closing = False
        n_threads = None
        if sess_options is not None and getattr(sess_options, "intra_op_num_threads", 0):
            n_threads = int(sess_options.intra_op_num_threads)
        if threads is not None:
            n_threads = int(threads)
        opt_level = int(opt_level)
        dims = None
        memory_limit = int(getattr(sess_options, "memory_limit", 0) or 0)
        if memory_limit < 0:
            raise ValueError("SessionOptions.memory_limit must be >= 0 (0: no limit)")
        if sess_options is not None and hasattr(sess_options, "_dim_spec"):
            dims = sess_options._dim_spec()
            if opt_level == 2:
                opt_level = sess_options._opt_level()
        verbose = int(bool(verbose))
        # As in ONNX Runtime: nodes no provider takes run on the CPU anyway; naming the CPU too
        # (["CUDAExecutionProvider", "CPUExecutionProvider"]) also lets the session fall back to it,
        # with a warning, when CUDA cannot start; naming CUDA alone makes that an error.
        mask = 0
        flags = 2 if float16 else 0
        providers = list(providers or ["CPUExecutionProvider"])
        for k, p in enumerate(providers):
            name = p[0] if isinstance(p, (tuple, list)) else p
            if name not in _PROVIDERS:
                raise KilnError("unknown execution provider %r (kiln has %s)" % (name, ", ".join(_PROVIDERS)))
            mask |= _PROVIDERS[name]
            options = dict(p[1]) if isinstance(p, (tuple, list)) and len(p) > 1 else {}
            if provider_options and k < len(provider_options):
                options.update(provider_options[k] or {})
            # absent: kiln records by itself where a replay is safe (kiln_options.graph_capture)
            graph = str(options.get("enable_cuda_graph", "auto")).lower()
            if graph in ("1", "true"):
                flags |= 1
            elif graph in ("0", "false"):
                flags |= 4
            elif graph != "auto":
                raise KilnError("enable_cuda_graph must be 0, 1 or auto, not %r" % graph)
        opt = _lib.Options()
        lib.kiln_options_init(ctypes.byref(opt))
        if n_threads is not None:
            opt.threads = n_threads
        opt.opt_level = opt_level
        opt.verbose = verbose
        opt.providers = mask
        opt.graph_capture = 1 if flags & 1 else -1 if flags & 4 else 0
        opt.float16 = (flags >> 1) & 1
        opt.dim_overrides = dims.encode() if dims else None
        opt.memory_limit = memory_limit
        opt.specialize = _specialize_option(sess_options, specialize)
        # bf16=True or the session config entry "kiln.cpu_bf16" = "1": CPU products in bfloat16
        opt.cpu_bf16 = int(bool(bf16))
        # winograd=False or the config entry "kiln.cpu_winograd" = "0": 3x3 convolutions sum directly
        opt.cpu_winograd = 0 if winograd else -1
        # options that only a kiln_options struct carries (initializers, the optimised model's path):
        # the SessionOptions fills them; what it returns keeps their memory alive while opening
        fill = getattr(sess_options, "_fill_kiln_options", None)
        opt_keep = fill(opt) if fill is not None else None  # noqa: F841
        native = _native_module()
        if native is not None:
            if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
                model, is_bytes = bytes(path_or_bytes), True  # the native session keeps it alive
            else:
                model, is_bytes = str(path_or_bytes).encode(), False
            self._native = native.Session(model, is_bytes, n_threads, opt_level, mask, verbose, flags, dims,
                                          memory_limit, ctypes.addressof(opt))
            self._inputs = [_node_arg(*t) for t in self._native.io(False)]
            self._outputs = [_node_arg(*t) for t in self._native.io(True)]
            self._after_open()
            if len(self._providers) == 1:
                # CPU only: the bound C method as an instance attribute, so that a call goes straight
                # to C with no Python frame (a device session first looks for device feeds)
                self.run = self._native.run
            return
        handle = ctypes.c_void_p()
        if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
            self._bytes = bytes(path_or_bytes)  # initializers point into these bytes: keep them alive
            st = lib.kiln_session_open_bytes(self._bytes, len(self._bytes), ctypes.byref(opt), ctypes.byref(handle))
        else:
            st = lib.kiln_session_open(str(path_or_bytes).encode(), ctypes.byref(opt), ctypes.byref(handle))
        if st != 0:
            raise KilnError(lib.kiln_last_error().decode(errors="replace"))
        self._s = handle
        self._inputs = self._io(lib.kiln_session_input_count, lib.kiln_session_input_info)
        self._outputs = self._io(lib.kiln_session_output_count, lib.kiln_session_output_info)
        self._after_open()

    def _handle(self):
        if self._native is not None:
            return ctypes.c_void_p(self._native.handle())
        return self._s

    def _after_open(self):
        h = self._handle()
        self._providers = [self._lib.kiln_session_provider_name(h, i).decode()
                           for i in range(self._lib.kiln_session_provider_count(h))]
        self._profile_path = None
        if self._sess_options is not None and getattr(self._sess_options, "enable_profiling", False):
            import datetime
            prefix = getattr(self._sess_options, "profile_file_prefix", None) or "kiln_profile"
            stamp = datetime.datetime.now().strftime("%Y-%m-%d_%H-%M-%S")
            self.start_profiling("%s_%s.json" % (prefix, stamp))
        warning = self._lib.kiln_session_warning(h)
        if warning:
            import warnings
            warnings.warn(warning.decode(errors="replace"), RuntimeWarning, stacklevel=3)

    def _io(self, count, info_fn):
        out = []
        for i in range(count(self._s)):
            info = _lib.IoInfo()
            info_fn(self._s, i, ctypes.byref(info))
            out.append(_node_arg_ctypes(info))
        return out

    def get_inputs(self):
        return list(self._inputs)

    def get_outputs(self):
        return list(self._outputs)

    def start_profiling(self, path):
        """Records a Chrome-trace timeline of the following runs (one event per node)."""
        if self._lib.kiln_session_start_profiling(self._handle(), str(path).encode()) != 0:
            raise KilnError("cannot start profiling to %r" % path)
        self._profile_path = str(path)

    def end_profiling(self):
        """Writes the timeline and returns its file name (None when not profiling)."""
        if self._profile_path is None:
            return None
        written = self._lib.kiln_session_end_profiling(self._handle())
        self._profile_path = None
        if written is None:
            raise KilnError(self._lib.kiln_session_error(self._handle()).decode(errors="replace"))
        return written.decode()

    def get_providers(self):
        """The providers this session really uses, preferred first."""
        return list(self._providers)

    def node_placement(self):
        """[(node name, provider name)] for the main graph's nodes in execution order, including the
        copies between memory spaces (op types MemcpyFromHost / MemcpyToHost)."""
        return [(n["name"], n["provider"]) for n in self.nodes()]

    def placement_reason(self, node_name):
        """Why a node is not on the session's first provider ("" when it is)."""
        for n in self.nodes():
            if n["name"] == node_name:
                return n["reason"]
        raise KilnError("no node named %r" % node_name)

    def nodes(self):
        """Each node of the main graph after optimisation: name, op_type, domain, provider, reason."""
        h = self._handle()
        out = []
        info = _lib.NodeInfo()
        for i in range(self._lib.kiln_session_node_count(h)):
            if self._lib.kiln_session_node_info(h, i, ctypes.byref(info)) == 0:
                out.append({k: getattr(info, k).decode(errors="replace") for k, _ in info._fields_})
        return out

    def kiln_specializations(self):
        """How many shape-specialised children the session holds now (kiln_options.specialize)."""
        return int(self._lib.kiln_session_specializations(self._handle()))

    def plan_stats(self):
        if self._native is not None:
            return dict(zip(_PLAN_FIELDS, self._native.plan_stats()))
        st = _lib.PlanStats()
        self._lib.kiln_session_plan_stats(self._s, ctypes.byref(st))
        return {n: getattr(st, n) for n, _ in st._fields_}

    def run(self, output_names, input_feed, run_options=None):
        if len(self._providers) > 1 and any(not isinstance(v, np.ndarray) and device_feed(k, v) is not None
                                            for k, v in input_feed.items()):
            return [self._to_python(v) if isinstance(v, int) else v.numpy()
                    for v in self._run_device(output_names, input_feed, on_device=False, run_options=run_options)]
        if self._native is not None:  # CPU-only sessions bind the C method directly: see __init__
            return self._native.run(output_names, input_feed, run_options)
        # count this run, so that a close() from another thread meanwhile leaves the session to the
        # last run in flight instead of freeing it under kiln_run (ctypes releases the GIL)
        with self._run_lock:
            if self._s is None or self._closing:
                raise KilnError("session is closed")
            self._running += 1
        try:
            return self._run_ctypes(output_names, input_feed, run_options)
        finally:
            with self._run_lock:
                self._running -= 1
                last = self._closing and not self._running
            if last:
                self.close()

    # ---- values on the device (OrtValue, IOBinding, torch / cupy feeds) ----
    def run_with_ort_values(self, output_names, input_dict_ort_values, run_options=None):
        """Runs with OrtValue (or torch / cupy / numpy) inputs; returns OrtValues, left on the device
        when the device computed them."""
        return self._run_device(output_names, input_dict_ort_values, on_device=True, run_options=run_options)

    def io_binding(self):
        return IOBinding(self)

    def run_with_iobinding(self, iobinding, run_options=None):
        names = list(iobinding._outputs) or [o.name for o in self._outputs]
        bound = [iobinding._outputs.get(n, ("cpu", None))[1] for n in names]
        iobinding._results = self._run_device(names, iobinding._inputs, on_device=True, bound=bound,
                                              want_cpu=[iobinding._outputs.get(n, ("cpu",))[0] == "cpu"
                                                        for n in names], run_options=run_options)

    def _run_device(self, output_names, input_feed, on_device, bound=None, want_cpu=None, run_options=None):
        lib = self._lib
        names, descs, keep = [], [], []
        for name, value in input_feed.items():
            feed = device_feed(name, value)
            if feed is not None:
                dims = (ctypes.c_int64 * max(len(feed.shape), 1))(*feed.shape)
                keep.append((feed, dims))
                names.append(str(name).encode())
                descs.append(_lib.TensorDesc(feed.element_type, len(feed.shape), dims, feed.ptr, 1))
                continue
            if isinstance(value, OrtValue):
                value = value.numpy()
            self._host_desc(name, value, names, descs, keep)
        outs = [str(n).encode() for n in output_names] if output_names else []
        n_out = len(outs) if outs else len(self._outputs)
        ro, flag, user_flag = _run_options_struct(run_options, 1 if on_device else 0)
        if bound and any(b is not None for b in bound):
            bdescs = (_lib.TensorDesc * n_out)()
            for i, b in enumerate(bound):
                if b is not None:
                    code, shape, ptr, memory = b
                    dims = (ctypes.c_int64 * max(len(shape), 1))(*shape)
                    keep.append(dims)
                    bdescs[i] = _lib.TensorDesc(code, len(shape), dims, ptr, memory)
            ro.bound_outputs = bdescs
            keep.append(bdescs)
        c_names = (ctypes.c_char_p * max(len(names), 1))(*names)
        c_descs = (_lib.TensorDesc * max(len(descs), 1))(*descs)
        c_outs = (ctypes.c_char_p * max(len(outs), 1))(*outs)
        results = (ctypes.c_void_p * max(n_out, 1))()
        h = self._handle()
        st = _call_run(lib, flag, user_flag, results, n_out, lambda: lib.kiln_run_with_options(
            h, ctypes.byref(ro), len(names), c_names, c_descs, len(outs), c_outs, results))
        if st != 0:
            raise KilnError(lib.kiln_session_error(h).decode(errors="replace"))
        values = []
        for i in range(n_out):
            if not results[i]:
                b = bound[i]
                if b[3]:
                    values.append(OrtValue(feed=_device_feed_of_bound(b)))
                else:
                    dt = np.dtype(_NP_OF[b[0]])
                    n = int(np.prod(b[1])) if b[1] else 1
                    buf = (ctypes.c_char * (n * dt.itemsize)).from_address(b[2])
                    values.append(OrtValue(array=np.frombuffer(buf, dt, n).reshape(b[1])))
                continue
            v = OrtValue(results[i], lib, self)
            if want_cpu and want_cpu[i] and v.device_name() == "cuda":
                v = OrtValue(array=v.numpy())
            values.append(v)
        return values

    def _host_desc(self, name, value, names, descs, keep):
        arr = value if isinstance(value, np.ndarray) else np.asarray(value)
        dims = (ctypes.c_int64 * max(arr.ndim, 1))(*arr.shape)
        names.append(str(name).encode())
        if arr.dtype.kind in "USO":  # strings: {bytes, length} views ('S'/'U' items lose only their NUL padding)
            views, owners = _lib.string_views(arr.reshape(-1).tolist(), "input %r" % (name,))
            keep.append((views, owners, dims))
            descs.append(_lib.TensorDesc(_lib.SIZED_STRING, arr.ndim, dims, ctypes.cast(views, ctypes.c_void_p), 0))
            return
        if arr.dtype not in _CODE_OF:
            raise KilnError("input %r: unsupported numpy dtype %s" % (name, arr.dtype))
        arr = np.ascontiguousarray(arr).reshape(arr.shape)  # keeps 0-d arrays 0-d
        keep.append((arr, dims))
        descs.append(_lib.TensorDesc(_CODE_OF[arr.dtype], arr.ndim, dims, arr.ctypes.data, 0))

    def _run_ctypes(self, output_names, input_feed, run_options=None):
        if any(isinstance(v, dict) for v in input_feed.values()):
            return _maps.run_with_maps(self, output_names, input_feed, run_options)
        lib = self._lib
        names, descs, keep = [], [], []
        for name, value in input_feed.items():
            self._host_desc(name, value, names, descs, keep)
        n_in = len(names)
        c_names = (ctypes.c_char_p * max(n_in, 1))(*names)
        c_descs = (_lib.TensorDesc * max(n_in, 1))(*descs)
        if output_names:
            outs = [str(n).encode() for n in output_names]
        else:
            outs = []
        n_out = len(outs) if outs else len(self._outputs)
        c_outs = (ctypes.c_char_p * max(len(outs), 1))(*outs)
        results = (ctypes.c_void_p * max(n_out, 1))()
        ro, flag, user_flag = _run_options_struct(run_options, reuse=True)
        st = _call_run(lib, flag, user_flag, results, n_out, lambda: lib.kiln_run_with_options(
            self._s, ctypes.byref(ro), n_in, c_names, c_descs, len(outs), c_outs, results))
        if st != 0:
            raise KilnError(lib.kiln_session_error(self._s).decode(errors="replace"))
        taken = [False] * n_out
        try:
            return [self._to_python(results[i], taken, i) for i in range(n_out)]
        finally:
            for i in range(n_out):
                if not taken[i]:
                    lib.kiln_value_free(results[i])

    def _to_python(self, v, taken=None, index=0):
        """v as Python values. With `taken`, a numeric tensor's array may keep v's data instead of a
        copy (as kiln._native does): taken[index] is then set, and v is freed with the array."""
        lib = self._lib
        maps = _maps.to_python(lib, v)
        if maps is not None:
            return maps
        kind = lib.kiln_value_kind(v)
        if kind == 2:
            return None
        if kind == 1:
            return [self._tensor(lib.kiln_value_item(v, i)) for i in range(lib.kiln_value_sequence_length(v))]
        return self._tensor(v, taken, index)

    def _tensor(self, v, taken=None, index=0):
        lib = self._lib
        code = lib.kiln_value_dtype(v)
        rank = lib.kiln_value_rank(v)
        dims = lib.kiln_value_dims(v)
        shape = tuple(int(dims[i]) for i in range(rank))
        n = int(np.prod(shape)) if shape else 1
        data = lib.kiln_value_data(v)
        if code == 8:
            out = np.empty(n, dtype=object)
            out[:] = _lib.decode_strings(lib, data, n, "string output")
            return out.reshape(shape)
        if code == 16:  # bfloat16 -> float32 (numpy has no bfloat16)
            raw = np.ctypeslib.as_array(ctypes.cast(data, ctypes.POINTER(ctypes.c_uint16)), (n,)).copy() if n else np.zeros(0, np.uint16)
            return (raw.astype(np.uint32) << 16).view(np.float32).reshape(shape)
        if code not in _NP_OF:
            raise KilnError("output of type code %d cannot be returned to numpy" % code)
        dt = np.dtype(_NP_OF[code])
        nbytes = lib.kiln_value_nbytes(v)
        if n == 0 or not data:
            return np.zeros(shape, dt)
        buf = (ctypes.c_char * nbytes).from_address(data)
        if taken is not None:
            # no copy: the buffer holds an owner that frees v once the last array on it is gone
            # (a copy of a 3 MB output cost 0.6 ms a run)
            buf._kiln_owner = _ValueOwner(lib.kiln_value_free, v)
            taken[index] = True
            return np.frombuffer(buf, dtype=dt, count=n).reshape(shape)
        return np.frombuffer(buf, dtype=dt, count=n).reshape(shape).copy()

    def close(self):
        if getattr(self, "_native", None) is not None:
            self._native.close()  # it waits for its own runs in flight
        lock = getattr(self, "_run_lock", None)
        if lock is None:
            return
        with lock:
            if self._running:     # the last run in flight closes it
                self._closing = True
                return
            s, self._s = self._s, None
        if s is not None:
            self._lib.kiln_session_close(s)

    def __del__(self):
        # The native session is not closed here: `InferenceSession(m).run(...)` drops this object
        # while the bound C method it handed out still needs the session, which the native object
        # closes itself when its last reference goes.
        self._native = None
        try:
            self.close()
        except Exception:
            pass
