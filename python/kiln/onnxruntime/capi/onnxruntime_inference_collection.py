"""onnxruntime.capi.onnxruntime_inference_collection over kiln: InferenceSession, OrtValue,
SparseTensor, IOBinding and check_and_normalize_provider_args, as ONNX Runtime's Python API has
them. kiln's own InferenceSession does the work; this layer adds ONNX Runtime's checks, input
conversions, error classes and the methods kiln's API does not have."""
import collections.abc
import ctypes
import os
import threading
import warnings

import numpy as np

from ... import _lib
from ..._device import IOBinding as _KilnIOBinding
from ..._device import OrtValue as _KilnOrtValue
from ..._session import InferenceSession as _KilnSession
from ..._session import KilnError, NodeArg, _call_run, _run_options_struct
from . import onnxruntime_pybind11_state as C
from .onnxruntime_pybind11_state import (Fail, InvalidArgument, ModelMetadata, NotImplemented, OrtSparseFormat,
                                         OrtValueVector, RunOptions, SessionOptions, from_kiln_error, ort_error)

_NP_OF_TYPE = {v: k for k, v in _lib.TYPE_NAMES.items()}  # "tensor(float)" -> code


def check_and_normalize_provider_args(providers, provider_options, available_provider_names):
    """(providers, provider_options) as two lists of equal length: names, and {str: str} options.
    A provider may be a name or (name, options); provider_options, if given, is a list as long as
    providers. Names not available are kept with a warning; a repeated name is dropped with one."""
    if providers is None:
        return [], []
    names, opts = [], {}

    def add(name, options):
        if name not in available_provider_names:
            warnings.warn("Specified provider '%s' is not in available provider names. Available providers: '%s'"
                          % (name, ", ".join(available_provider_names)))
        if name in opts:
            warnings.warn("Duplicate provider '%s' encountered, ignoring." % name)
            return
        names.append(name)
        opts[name] = {str(k): str(v) for k, v in options.items()}

    if not isinstance(providers, collections.abc.Sequence) or isinstance(providers, str):
        raise ValueError("'providers' should be a sequence.")
    if provider_options is not None:
        if not isinstance(provider_options, collections.abc.Sequence) or isinstance(provider_options, str):
            raise ValueError("'provider_options' should be a sequence.")
        if len(providers) != len(provider_options):
            raise ValueError("'providers' and 'provider_options' should be the same length if both are given.")
        if not all(isinstance(p, str) for p in providers):
            raise ValueError("Only string values for 'providers' are supported if 'provider_options' is given.")
        if not all(isinstance(o, dict) for o in provider_options):
            raise ValueError("'provider_options' values must be dicts.")
        for name, options in zip(providers, provider_options):
            add(name, options)
    else:
        for p in providers:
            if isinstance(p, str):
                add(p, {})
            elif (isinstance(p, tuple) and len(p) == 2 and isinstance(p[0], str) and isinstance(p[1], dict)):
                add(p[0], p[1])
            else:
                raise ValueError("'providers' values must be either strings or (string, dict) tuples.")
    return names, [opts[n] for n in names]


# ---------------------------------------------------------------- OrtValue, SparseTensor

class OrtValue(_KilnOrtValue):
    """onnxruntime.OrtValue: a tensor on the host or the device, or a sparse tensor."""

    @staticmethod
    def ortvalue_from_numpy(numpy_obj, device_type="cpu", device_id=0):
        if str(device_type).lower() not in ("cpu", "cuda"):
            raise ort_error(InvalidArgument, "device_type must be 'cpu' or 'cuda', not %r" % device_type)
        try:
            v = _KilnOrtValue.ortvalue_from_numpy(numpy_obj, str(device_type).lower(), device_id)
        except KilnError as e:
            raise from_kiln_error(e) from None
        return _as_compat(v)

    @staticmethod
    def ortvalue_from_numpy_with_onnx_type(data, onnx_element_type):
        np_type = _lib.NP_OF.get(int(onnx_element_type))
        if np_type is None:
            raise ort_error(InvalidArgument, "ONNX element type %r has no numpy type in kiln" % onnx_element_type)
        return OrtValue.ortvalue_from_numpy(np.ascontiguousarray(data).view(np_type))

    @staticmethod
    def ortvalue_from_shape_and_type(shape=None, element_type=None, device_type="cpu", device_id=0):
        if isinstance(element_type, (int, np.integer)) and not isinstance(element_type, bool) \
                and int(element_type) in _lib.NP_OF:
            element_type = _lib.NP_OF[int(element_type)]
        return OrtValue.ortvalue_from_numpy(np.zeros(shape, np.dtype(element_type)), device_type, device_id)

    @staticmethod
    def ort_value_from_sparse_tensor(sparse_tensor):
        v = OrtValue(array=None)
        v._sparse = sparse_tensor
        return v

    def as_sparse_tensor(self):
        if getattr(self, "_sparse", None) is None:
            raise ort_error(InvalidArgument, "this OrtValue holds a dense tensor, not a sparse one")
        return self._sparse

    def is_sparse_tensor(self):
        return getattr(self, "_sparse", None) is not None

    def is_tensor(self):
        return not self.is_sparse_tensor()

    def is_tensor_sequence(self):
        return False

    def _get_c_value(self):
        return self

    def element_type(self):
        """The ONNX element type (TensorProto.DataType number)."""
        if self.is_sparse_tensor():
            return _NP_OF_TYPE.get(self._sparse.data_type().replace("sparse_tensor", "tensor"), 0)
        return self._code_shape()[0]

    def tensor_size_in_bytes(self):
        code, shape = self._code_shape()
        return int(np.prod(shape)) * (np.dtype(_lib.NP_OF[code]).itemsize if code in _lib.NP_OF else 2)

    def data_type(self):
        if self.is_sparse_tensor():
            return self._sparse.data_type()
        return super().data_type()

    def shape(self):
        if self.is_sparse_tensor():
            return self._sparse.dense_shape()
        return super().shape()

    def device_name(self):
        if self.is_sparse_tensor():
            return self._sparse.device_name()
        return super().device_name()

    def numpy(self):
        if self.is_sparse_tensor():
            raise ort_error(InvalidArgument, "numpy() of a sparse OrtValue: read it with as_sparse_tensor()")
        try:
            return super().numpy()
        except KilnError as e:
            raise from_kiln_error(e) from None

    def __array__(self, dtype=None, copy=None):
        a = self.numpy()
        return a if dtype is None else a.astype(dtype)

    def update_inplace(self, np_arr):
        if self._array is None:
            raise ort_error(NotImplemented, "update_inplace of a value in device memory")
        np.copyto(self._array, np.asarray(np_arr).reshape(self._array.shape), casting="same_kind")


def _as_compat(v):
    """A kiln OrtValue seen as this module's (the same object, with ONNX Runtime's methods)."""
    if isinstance(v, _KilnOrtValue) and not isinstance(v, OrtValue):
        v.__class__ = OrtValue
    return v


_OrtValue_init = _KilnOrtValue.__init__


def _readonly(a):
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


class SparseTensor:
    """onnxruntime.SparseTensor in COO (linear or 2-D indices) or CSR(C) form, on the host. kiln
    holds the values and indices; a session takes no sparse inputs (kiln densifies sparse
    initializers when it loads a model)."""

    def __init__(self, fmt, dense_shape, values, indices, outer=None):
        self._format, self._shape = fmt, [int(d) for d in dense_shape]
        vals = np.asarray(values)
        self._values = _readonly(vals.astype(object) if vals.dtype.kind in "US" else vals)
        self._str = vals.dtype.kind in "USO"
        self._indices = _readonly(np.asarray(indices, np.int64))
        self._outer = None if outer is None else _readonly(np.asarray(outer, np.int64))

    @staticmethod
    def _check_device(device):
        if device is not None and device.device_type() != 0:
            raise ort_error(NotImplemented, "kiln keeps sparse tensors on the host")

    @staticmethod
    def sparse_coo_from_numpy(dense_shape, values, coo_indices, ort_device=None):
        SparseTensor._check_device(ort_device)
        n = int(np.asarray(values).shape[0]) if np.asarray(values).ndim else 1
        idx = np.asarray(coo_indices, np.int64)
        if not (idx.ndim == 1 and idx.size == n) and not (idx.ndim in (1, 2) and idx.size == 2 * n):
            raise ort_error(InvalidArgument, "COO indices must be %d linear or %d (row, column) indices" % (n, n))
        total = int(np.prod(dense_shape))
        if idx.size == n and ((idx < 0) | (idx >= total)).any():
            raise ort_error(InvalidArgument, "a COO index is outside the dense shape %s" % list(dense_shape))
        return SparseTensor(OrtSparseFormat.ORT_SPARSE_COO, dense_shape, values, idx)

    @staticmethod
    def sparse_csr_from_numpy(dense_shape, values, inner_indices, outer_indices, ort_device=None):
        SparseTensor._check_device(ort_device)
        if len(dense_shape) != 2:
            raise ort_error(InvalidArgument, "CSR needs a 2-D dense shape")
        inner, outer = np.asarray(inner_indices, np.int64), np.asarray(outer_indices, np.int64)
        n = np.asarray(values).shape[0] if np.asarray(values).ndim else 1
        if inner.size != n or outer.size != int(dense_shape[0]) + 1:
            raise ort_error(InvalidArgument, "CSR needs %d inner indices and %d outer indices"
                            % (n, int(dense_shape[0]) + 1))
        return SparseTensor(OrtSparseFormat.ORT_SPARSE_CSRC, dense_shape, values, inner, outer)

    def format(self):
        return self._format

    def dense_shape(self):
        return list(self._shape)

    def data_type(self):
        if self._str:
            return "sparse_tensor(string)"
        code = _lib.CODE_OF.get(self._values.dtype)
        return _lib.TYPE_NAMES.get(code, "tensor(unknown)").replace("tensor", "sparse_tensor")

    def device_name(self):
        return "cpu"

    def values(self):
        return self._values

    def as_coo_view(self):
        if self._format != OrtSparseFormat.ORT_SPARSE_COO:
            raise ort_error(InvalidArgument, "this sparse tensor is not in COO format")
        return _View(indices=self._indices)

    def as_csrc_view(self):
        if self._format != OrtSparseFormat.ORT_SPARSE_CSRC:
            raise ort_error(InvalidArgument, "this sparse tensor is not in CSR format")
        return _View(inner=self._indices, outer=self._outer)

    def as_blocksparse_view(self):
        raise ort_error(InvalidArgument, "this sparse tensor is not in block-sparse format")

    def to_cuda(self, ort_device):
        raise ort_error(NotImplemented, "to_cuda: kiln keeps sparse tensors on the host")

    def to_dense(self):
        """The dense numpy array (kiln's own addition)."""
        out = np.zeros(self._shape, self._values.dtype)
        flat = out.reshape(-1) if out.ndim != 2 or self._format == OrtSparseFormat.ORT_SPARSE_COO else out
        if self._format == OrtSparseFormat.ORT_SPARSE_COO:
            idx = self._indices.reshape(len(self._values), -1)
            lin = idx[:, 0] if idx.shape[1] == 1 else idx[:, 0] * self._shape[1] + idx[:, 1]
            flat[lin] = self._values
        else:
            for r in range(self._shape[0]):
                for k in range(self._outer[r], self._outer[r + 1]):
                    out[r, self._indices[k]] = self._values[k]
        return out


class _View:
    def __init__(self, **arrays):
        self._a = arrays

    def indices(self):
        return self._a["indices"]

    def inner(self):
        return self._a["inner"]

    def outer(self):
        return self._a["outer"]


# ---------------------------------------------------------------- IOBinding

class IOBinding(_KilnIOBinding):
    """onnxruntime.IOBinding (session.io_binding())."""

    def __init__(self, session):
        super().__init__(session)

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        super().bind_input(name, device_type, device_id, _np_type(element_type), shape, buffer_ptr)

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        super().bind_output(name, device_type, device_id,
                            None if element_type is None else _np_type(element_type), shape, buffer_ptr)

    def get_outputs(self):
        return [_as_compat(v) for v in super().get_outputs()]


def _np_type(t):
    if isinstance(t, (int, np.integer)) and not isinstance(t, bool) and int(t) in _lib.NP_OF:
        return _lib.NP_OF[int(t)]
    return t


# ---------------------------------------------------------------- InferenceSession

class _CSession:
    """InferenceSession._sess: the lower-level calls some ONNX Runtime code makes."""

    def __init__(self, owner):
        self._owner = owner

    def run_with_ort_values(self, feeds, output_names, run_options=None):
        return OrtValueVector(self._owner.run_with_ort_values(output_names, feeds, run_options))

    def run(self, output_names, input_feed, run_options=None):
        return self._owner.run(output_names, input_feed, run_options)


class Session:
    """Base of InferenceSession in ONNX Runtime; kept for isinstance checks."""


class InferenceSession(_KilnSession, Session):
    """onnxruntime.InferenceSession(path_or_bytes, sess_options=None, providers=None,
    provider_options=None)."""

    def __init__(self, path_or_bytes, sess_options=None, providers=None, provider_options=None, **kwargs):
        if isinstance(path_or_bytes, os.PathLike):
            path_or_bytes = os.fspath(path_or_bytes)
        if not isinstance(path_or_bytes, (str, bytes, bytearray, memoryview)):
            raise TypeError("Unable to load from type '%s'" % type(path_or_bytes))
        if kwargs.get("disabled_optimizers"):
            raise ort_error(NotImplemented, "disabled_optimizers: kiln's optimisations are chosen by "
                            "graph_optimization_level only")
        self._model_path = path_or_bytes if isinstance(path_or_bytes, str) else None
        self._model_bytes = None if isinstance(path_or_bytes, str) else bytes(path_or_bytes)
        if sess_options is None:
            sess_options = SessionOptions()
        elif not isinstance(sess_options, SessionOptions):
            raise TypeError("sess_options must be an onnxruntime SessionOptions, not %s" % type(sess_options).__name__)
        self._ort_options = sess_options
        self._create(providers, provider_options)

    def _create(self, providers, provider_options):
        available = C.get_available_providers()
        names, options = check_and_normalize_provider_args(providers, provider_options, available)
        # as ONNX Runtime does, a provider this build cannot use is left out (the warning above
        # named it) and the session runs on what remains, the CPU at least
        chosen = [(n, o) for n, o in zip(names, options) if n in available]
        if not chosen:
            chosen = [("CPUExecutionProvider", {})]
        so = self._ort_options
        so._check()
        model = self._model_path if self._model_path is not None else self._model_bytes
        try:
            super().__init__(model, sess_options=so, providers=[list(p) for p in chosen])
            if os.environ.get("ORT_LOAD_CONFIG_FROM_MODEL") == "1":
                config = self._metadata().custom_metadata_map.get("ort_config")
                if config:
                    so = _copy_options(so)
                    so._apply_model_config(config)
                    so._check()
                    self._ort_options = so
                    self.close()
                    super().__init__(model, sess_options=so, providers=[list(p) for p in chosen])
        except KilnError as e:
            raise from_kiln_error(e, self._lib if hasattr(self, "_lib") else None) from None
        self.__dict__.pop("run", None)  # the base binds its C run here; ONNX Runtime's checks come first
        self._provider_options = {n: dict(o) for n, o in chosen}
        self._provider_options.setdefault("CPUExecutionProvider", {})
        self._sess = _CSession(self)

    # ---- what the model says
    def _metadata(self):
        md = _lib.ModelMetadata()
        if self._lib.kiln_session_model_metadata(self._handle(), ctypes.byref(md)) != 0:
            raise ort_error(Fail, "the session is closed")

        def s(b):
            return b.decode(errors="replace") if b else ""
        custom = {s(md.custom_keys[i]): s(md.custom_values[i]) for i in range(md.n_custom)}
        return ModelMetadata(s(md.producer_name), s(md.graph_name), s(md.domain), s(md.description),
                             s(md.graph_description), int(md.version), custom)

    def get_modelmeta(self):
        return self._metadata()

    def get_overridable_initializers(self):
        """kiln treats every initializer as a constant (folded into the graph), so none can be fed."""
        return []

    def get_session_options(self):
        return self._ort_options

    def get_providers(self):
        return super().get_providers()

    def get_provider_options(self):
        return {p: dict(self._provider_options.get(p, {})) for p in self.get_providers()}

    def set_providers(self, providers=None, provider_options=None):
        for p in providers or []:
            name = p[0] if isinstance(p, tuple) else p
            if name not in C.get_all_providers():
                raise ort_error(Fail, "Unknown Provider Type: %s" % name)
        self.close()
        self._create(providers, provider_options)

    def disable_fallback(self):
        pass  # kiln falls back to the CPU only when the CPU is among the providers asked for

    def enable_fallback(self):
        pass

    # ---- profiling
    def end_profiling(self):
        """Writes the profile and returns its file name ("" when not profiling). The events are
        ONNX Runtime's: one per line, Node events named <node>_kernel_time with op_name, provider
        and output_type_shape, integer microseconds."""
        try:
            path = super().end_profiling()
        except KilnError as e:
            raise from_kiln_error(e, self._lib) from None
        if not path:
            return ""
        _ort_profile(path)
        return path

    def get_profiling_start_time_ns(self):
        return int(self._lib.kiln_session_profiling_start_ns(self._handle()))

    # ---- running
    def _feeds(self, input_feed):
        """ONNX Runtime's checks and conversions of the feeds: missing inputs (ValueError), Python
        lists and scalars to the declared type, lists for sequence inputs, bytes / np.void /
        object arrays for string inputs, host OrtValues to numpy."""
        if not isinstance(input_feed, dict):
            raise ort_error(InvalidArgument, "input_feed must be a dict of input name to value")
        declared = {i.name: i for i in self._inputs}
        missing = [n for n in declared if n not in input_feed]
        if missing:
            raise ValueError("Required inputs (%s) are missing from input feed (%s)." % (missing, list(input_feed)))
        feeds, sequences = {}, False
        for name, value in input_feed.items():
            arg = declared.get(name)
            if arg is None:
                raise ort_error(InvalidArgument, "Invalid input name: %s (the model's inputs: %s)"
                                % (name, ", ".join(declared)))
            feeds[name] = v = _convert(name, value, arg)
            sequences |= isinstance(v, list)
        return feeds, sequences

    def run(self, output_names, input_feed, run_options=None):
        if run_options is not None:
            if not isinstance(run_options, RunOptions):
                raise TypeError("run_options must be an onnxruntime RunOptions, not %s" % type(run_options).__name__)
            run_options._check()
        feeds, sequences = self._feeds(input_feed)
        try:
            if sequences:
                out = self._run_sequences(output_names, feeds, run_options)
            else:
                out = _KilnSession.run(self, output_names or None, feeds, run_options)
        except KilnError as e:
            raise from_kiln_error(e, self._lib) from None
        if run_options is not None and "memory.enable_memory_arena_shrinkage" in run_options._config:
            self._lib.kiln_session_release_memory(self._handle())
        return out

    def run_async(self, output_names, input_feed, callback, user_data, run_options=None):
        """Runs on another thread and calls callback(outputs, user_data, error_message)."""
        def work():
            try:
                out = self.run(output_names, input_feed, run_options)
            except Exception as e:  # noqa: BLE001 - reported to the callback, as ONNX Runtime does
                callback(None, user_data, str(e) or type(e).__name__)
                return
            callback(out, user_data, "")
        threading.Thread(target=work, daemon=True).start()

    def _run_sequences(self, output_names, feeds, run_options):
        """A run with sequence inputs, through the C API's KILN_RANK_SEQUENCE descriptions."""
        lib = self._lib
        names, descs, keep = [], [], []
        for name, value in feeds.items():
            if not isinstance(value, list):
                self._host_desc(name, value, names, descs, keep)
                continue
            code = _NP_OF_TYPE[_elem_type(self._arg(name))]
            items = (_lib.TensorDesc * max(len(value), 1))()
            for k, a in enumerate(value):
                dims = (ctypes.c_int64 * max(a.ndim, 1))(*a.shape)
                keep.append((a, dims))
                items[k] = _lib.TensorDesc(code, a.ndim, dims, a.ctypes.data, 0)
            count = (ctypes.c_int64 * 1)(len(value))
            keep += [items, count]
            names.append(str(name).encode())
            descs.append(_lib.TensorDesc(code, _lib.RANK_SEQUENCE, count, ctypes.cast(items, ctypes.c_void_p), 0))
        outs = [str(n).encode() for n in output_names] if output_names else []
        n_out = len(outs) if outs else len(self._outputs)
        c_names = (ctypes.c_char_p * max(len(names), 1))(*names)
        c_descs = (_lib.TensorDesc * max(len(descs), 1))(*descs)
        c_outs = (ctypes.c_char_p * max(len(outs), 1))(*outs)
        results = (ctypes.c_void_p * max(n_out, 1))()
        ro, flag, user_flag = _run_options_struct(run_options)
        h = self._handle()
        st = _call_run(lib, flag, user_flag, results, n_out, lambda: lib.kiln_run_with_options(
            h, ctypes.byref(ro), len(names), c_names, c_descs, len(outs), c_outs, results))
        if st != 0:
            e = KilnError(lib.kiln_session_error(h).decode(errors="replace"))
            e.status = st
            raise e
        try:
            return [self._to_python(results[i]) for i in range(n_out)]
        finally:
            for i in range(n_out):
                lib.kiln_value_free(results[i])

    def _arg(self, name):
        return next(i for i in self._inputs if i.name == name)

    def run_with_ort_values(self, output_names, input_dict_ort_values, run_options=None):
        if run_options is not None:
            run_options._check()
        feeds = {}
        for name, v in input_dict_ort_values.items():
            if isinstance(v, OrtValue) and v.is_sparse_tensor():
                raise ort_error(NotImplemented, "input '%s': kiln takes no sparse tensor inputs" % name)
            feeds[name] = v
        try:
            out = super().run_with_ort_values(output_names, feeds, run_options)
        except KilnError as e:
            raise from_kiln_error(e, self._lib) from None
        return [_as_compat(v) for v in out]

    def io_binding(self):
        return IOBinding(self)

    def run_with_iobinding(self, iobinding, run_options=None):
        if run_options is not None:
            run_options._check()
        try:
            super().run_with_iobinding(iobinding, run_options)
        except KilnError as e:
            raise from_kiln_error(e, self._lib) from None


# kiln's dtype names (kiln_dtype_name) -> ONNX Runtime's, as its profiles write them
_ORT_TYPE_NAMES = {"float32": "float", "float64": "double", "float16": "float16", "bfloat16": "bfloat16",
                   "bool": "bool", "string": "string"}


def _type_shape(text):
    """"float32[2,4]" -> [{"float": [2, 4]}] (ONNX Runtime's output_type_shape)."""
    if "[" not in text or not text.endswith("]"):
        return []
    name, dims = text[:-1].split("[", 1)
    try:
        shape = [int(d) for d in dims.split(",") if d.strip()]
    except ValueError:
        return []
    return [{_ORT_TYPE_NAMES.get(name, name): shape}]


def _ort_profile(path):
    """Rewrites kiln's trace at path in ONNX Runtime's event layout."""
    import json
    with open(path) as f:
        events = json.load(f)
    out = []
    for i, ev in enumerate(events):
        e = {"cat": ev.get("cat", "Session"), "pid": ev.get("pid", os.getpid()), "tid": ev.get("tid", 0),
             "dur": int(round(ev.get("dur", 0))), "ts": int(round(ev.get("ts", 0))), "ph": "X",
             "name": ev.get("name", ""), "args": {}}
        if e["cat"] == "Node":
            args = ev.get("args", {})
            e["name"] += "_kernel_time"
            e["args"] = {"op_name": args.get("op_name", ""), "provider": args.get("provider", ""),
                         "output_type_shape": _type_shape(args.get("output_shapes", "")),
                         "graph_index": "0", "exec_plan_index": str(i)}
        out.append(e)
    with open(path, "w") as f:
        f.write("[\n" + ",\n".join(json.dumps(e) for e in out) + "\n]\n")


def _elem_type(arg):
    t = arg.type
    return t[4:-1] if t.startswith("seq(") else t


def _np_dtype_of(type_name):
    code = _NP_OF_TYPE.get(type_name)
    if code == 8:
        return object
    return _lib.NP_OF.get(code)


def _strings(a):
    """An object array of str from str, bytes, np.void or object data."""
    a = np.asarray(a)
    if a.dtype.kind == "V":
        flat = [bytes(x).decode("utf-8", errors="replace") for x in a.reshape(-1)]
    else:
        flat = [x.decode("utf-8", errors="replace") if isinstance(x, bytes) else str(x) for x in a.reshape(-1)]
    return np.array(flat, dtype=object).reshape(a.shape)


def _convert(name, value, arg):
    if isinstance(value, SparseTensor) or (isinstance(value, OrtValue) and value.is_sparse_tensor()):
        raise ort_error(NotImplemented, "input '%s': kiln takes no sparse tensor inputs" % name)
    if isinstance(value, _KilnOrtValue):
        return value.numpy() if value.device_name() == "cpu" else value
    elem = _elem_type(arg)
    np_type = _np_dtype_of(elem)
    if arg.type.startswith("seq("):
        if not isinstance(value, (list, tuple)):
            raise ort_error(InvalidArgument, "input '%s' is a %s: feed a list of arrays" % (name, arg.type))
        return [_tensor(name, v, np_type) for v in value]
    if arg.type.startswith("map(") or arg.type.startswith("seq(map"):
        return value  # map values are converted by the map support of kiln's session
    return _tensor(name, value, np_type)


def _tensor(name, value, np_type):
    if np_type is object:
        return _strings(value)
    if isinstance(value, np.ndarray):
        if value.dtype.kind in "USOV":
            raise ort_error(InvalidArgument, "input '%s': strings given for a numeric input" % name)
        return value  # a wrong numeric dtype is refused by kiln with InvalidArgument, as in ONNX Runtime
    if hasattr(value, "__cuda_array_interface__") or hasattr(value, "__dlpack__"):
        return value
    if np_type is None:
        return np.asarray(value)
    try:
        return np.asarray(value, dtype=np_type)
    except (TypeError, ValueError) as e:
        raise ort_error(InvalidArgument, "input '%s': %s cannot be converted to %s: %s"
                        % (name, type(value).__name__, np.dtype(np_type).name, e)) from None


def _copy_options(so):
    new = SessionOptions()
    for k, v in so.__dict__.items():
        if k != "_ready":
            object.__setattr__(new, k, dict(v) if isinstance(v, dict) else v)
    return new


__all__ = ["InferenceSession", "IOBinding", "NodeArg", "OrtValue", "Session", "SparseTensor",
           "check_and_normalize_provider_args"]
