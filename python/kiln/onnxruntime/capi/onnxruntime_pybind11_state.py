"""What onnxruntime.capi.onnxruntime_pybind11_state holds in ONNX Runtime (its C++ extension):
the exception classes, the enums, SessionOptions, RunOptions, devices and memory descriptions, and
the module functions, here over kiln.

Options kiln cannot honour are refused with NotImplemented when a session is made (or a run
starts), never silently dropped."""
import ctypes
import enum
import json
import os

import numpy as np

from ... import _lib
from ..._options import RunOptions as _KilnRunOptions
from ..._options import SessionOptions as _KilnSessionOptions
from ..._session import KilnError
from ..._session import get_available_providers as _kiln_providers

# The ONNX Runtime Python API this module follows (its version, as ORT code checks it).
ORT_API_VERSION = "1.16.0"


# ---------------------------------------------------------------- errors

class Fail(KilnError):
    """ONNX Runtime's status FAIL; the base of the other error classes here is RuntimeError, as in
    ONNX Runtime, and kiln.KilnError, so that code written for either catches them."""
    code, label = 1, "FAIL"


class InvalidArgument(Fail):
    code, label = 2, "INVALID_ARGUMENT"


class NoSuchFile(Fail):
    code, label = 3, "NO_SUCHFILE"


class NoModel(Fail):
    code, label = 4, "NO_MODEL"


class EngineError(Fail):
    code, label = 5, "ENGINE_ERROR"


class RuntimeException(Fail):
    code, label = 6, "RUNTIME_EXCEPTION"


class InvalidProtobuf(Fail):
    code, label = 7, "INVALID_PROTOBUF"


class ModelLoaded(Fail):
    code, label = 8, "MODEL_LOADED"


class NotImplemented(Fail):  # noqa: A001 - ONNX Runtime's name
    code, label = 9, "NOT_IMPLEMENTED"


class InvalidGraph(Fail):
    code, label = 10, "INVALID_GRAPH"


class EPFail(Fail):
    code, label = 11, "EP_FAIL"


def ort_error(cls, message):
    """An instance of cls with ONNX Runtime's message layout."""
    return cls("[ONNXRuntimeError] : %d : %s : %s" % (cls.code, cls.label, message))


# kiln_status -> class (include/kiln.h)
_BY_STATUS = {1: InvalidArgument, 2: InvalidGraph, 3: NotImplemented, 4: RuntimeException, 5: NoSuchFile,
              6: RuntimeException, 7: EPFail, 8: Fail}


def from_kiln_error(e, lib=None):
    """The ONNX Runtime error for a kiln.KilnError: its status (kept by the native binding, else the
    thread's last status) picks the class."""
    if isinstance(e, Fail):
        return e
    status = getattr(e, "status", None)
    if status is None and lib is not None:
        status = lib.kiln_last_status()
    msg = str(e)
    cls = _BY_STATUS.get(status, Fail)
    if cls is InvalidGraph and ("protobuf" in msg or "not a valid ONNX" in msg or "malformed model" in msg):
        cls = InvalidProtobuf
    if cls is NoSuchFile and "No such file" not in msg and "cannot open" not in msg:
        cls = Fail
    return ort_error(cls, msg)


# ---------------------------------------------------------------- enums

class GraphOptimizationLevel(enum.IntEnum):
    ORT_DISABLE_ALL = 0
    ORT_ENABLE_BASIC = 1
    ORT_ENABLE_EXTENDED = 2
    ORT_ENABLE_ALL = 99


class ExecutionMode(enum.IntEnum):
    ORT_SEQUENTIAL = 0
    ORT_PARALLEL = 1


class ExecutionOrder(enum.IntEnum):
    DEFAULT = 0
    PRIORITY_BASED = 1
    MEMORY_EFFICIENT = 2


class OrtSparseFormat(enum.IntEnum):
    ORT_SPARSE_UNDEFINED = 0
    ORT_SPARSE_COO = 1
    ORT_SPARSE_CSRC = 2
    ORT_SPARSE_BLOCK_SPARSE = 4


class OrtAllocatorType(enum.IntEnum):
    INVALID = -1
    ORT_DEVICE_ALLOCATOR = 0
    ORT_ARENA_ALLOCATOR = 1


class OrtMemType(enum.IntEnum):
    CPU_INPUT = -2
    CPU_OUTPUT = -1
    CPU = -1
    DEFAULT = 0


# ---------------------------------------------------------------- module functions

_default_severity = [2]


def get_version_string():
    return ORT_API_VERSION


def get_build_info():
    return ("Build Info: kiln %s, serving the ONNX Runtime %s Python API; providers: %s"
            % (_lib_version(), ORT_API_VERSION, ", ".join(get_available_providers())))


def _lib_version():
    from ..._session import __version__
    return __version__


def get_available_providers():
    return _kiln_providers()


def get_all_providers():
    """Every provider kiln knows, preferred first (the CPU last, as in ONNX Runtime)."""
    return ["CUDAExecutionProvider", "CPUExecutionProvider"]


def get_device():
    return "GPU" if "CUDAExecutionProvider" in get_available_providers() else "CPU"


def set_default_logger_severity(severity):
    """Sessions made afterwards without their own log_severity_level log at this level: 0 (verbose)
    turns on kiln's planning log on stderr; kiln has nothing to log at 1 to 4 but errors, which
    are raised."""
    severity = int(severity)
    if not 0 <= severity <= 4:
        raise ort_error(InvalidArgument, "log severity must be 0 (verbose) to 4 (fatal), got %d" % severity)
    _default_severity[0] = severity


def set_default_logger_verbosity(verbosity):
    if int(verbosity) < 0:
        raise ort_error(InvalidArgument, "log verbosity must be >= 0")


def enable_telemetry_events():
    """kiln sends no telemetry: there is nothing to turn on."""


def disable_telemetry_events():
    """kiln sends no telemetry: it is off."""


def set_seed(seed):
    raise ort_error(NotImplemented, "set_seed: kiln's random ops take their seed from the model's attributes")


def create_and_register_allocator(mem_info, arena_cfg=None):
    raise ort_error(NotImplemented, "create_and_register_allocator: kiln sessions plan their own memory arenas "
                                    "and cannot share an allocator registered in the environment")


def create_and_register_allocator_v2(provider_type, mem_info, provider_options, arena_cfg=None):
    create_and_register_allocator(mem_info, arena_cfg)


def get_default_session_options():
    return SessionOptions()


# ---------------------------------------------------------------- devices and memory

class OrtDevice:
    @staticmethod
    def cpu():
        return 0

    @staticmethod
    def cuda():
        return 1

    @staticmethod
    def default_memory():
        return 0

    def __init__(self, device_type=0, memory_type=0, device_id=0):
        self._type, self._mem, self._id = int(device_type), int(memory_type), int(device_id)

    @staticmethod
    def make(name, device_id):
        kinds = {"cpu": 0, "cuda": 1, "gpu": 1}
        if str(name).lower() not in kinds:
            raise ort_error(InvalidArgument, "unknown device type %r (kiln has 'cpu' and 'cuda')" % name)
        return OrtDevice(kinds[str(name).lower()], 0, device_id)

    def device_id(self):
        return self._id

    def device_type(self):
        return self._type

    def device_mem_type(self):
        return self._mem

    def device_vendor_id(self):
        return 0x10DE if self._type == 1 else 0

    def name(self):
        return "Cuda" if self._type == 1 else "Cpu"


class OrtMemoryInfo:
    def __init__(self, name, alloc_type, device_id, mem_type):
        self.name, self.allocator_type = str(name), OrtAllocatorType(int(alloc_type))
        self.device_id, self.mem_type = int(device_id), OrtMemType(int(mem_type))


class OrtArenaCfg:
    """Arena settings, as ONNX Runtime's: OrtArenaCfg(max_mem, arena_extend_strategy,
    initial_chunk_size_bytes, max_dead_bytes_per_chunk) or OrtArenaCfg({key: value}). kiln plans its
    arenas per input shape; these are only accepted by create_and_register_allocator, which kiln
    refuses."""
    _KEYS = ("max_mem", "arena_extend_strategy", "initial_chunk_size_bytes", "max_dead_bytes_per_chunk",
             "initial_growth_chunk_size_bytes", "max_power_of_two_extend_bytes")

    def __init__(self, *args):
        values = dict.fromkeys(self._KEYS, -1)
        if len(args) == 1 and isinstance(args[0], dict):
            for k, v in args[0].items():
                if k not in values:
                    raise ort_error(InvalidArgument, "unknown OrtArenaCfg key %r" % k)
                values[k] = int(v)
        elif len(args) == 4:
            for k, v in zip(self._KEYS, args):
                values[k] = int(v)
        else:
            raise TypeError("OrtArenaCfg(max_mem, arena_extend_strategy, initial_chunk_size_bytes, "
                            "max_dead_bytes_per_chunk) or OrtArenaCfg(dict)")
        self.__dict__.update(values)


class ModelMetadata:
    """InferenceSession.get_modelmeta(): what the model file says about itself."""

    def __init__(self, producer_name="", graph_name="", domain="", description="", graph_description="",
                 version=0, custom_metadata_map=None):
        self.producer_name, self.graph_name, self.domain = producer_name, graph_name, domain
        self.description, self.graph_description, self.version = description, graph_description, version
        self.custom_metadata_map = dict(custom_metadata_map or {})


class OrtValueVector(list):
    """What InferenceSession._sess.run_with_ort_values returns: a list of OrtValues."""


# ---------------------------------------------------------------- options

def _refuse(what, why):
    return ort_error(NotImplemented, "%s: %s" % (what, why))


# session config keys kiln acts on (ONNX Runtime's names)
_EXT_FILE = "session.optimized_model_external_initializers_file_name"
_EXT_MIN = "session.optimized_model_external_initializers_min_size_in_bytes"
_CPU_BF16 = "kiln.cpu_bf16"  # "1": float32 products in bfloat16 on the CPU (kiln_options.cpu_bf16)
_CPU_WINOGRAD = "kiln.cpu_winograd"  # "0": 3x3 convolutions sum directly (kiln_options.cpu_winograd)
_KNOWN_CONFIG = {_EXT_FILE, _EXT_MIN, _CPU_BF16, _CPU_WINOGRAD, "kiln.specialize_shapes"}


class SessionOptions(_KilnSessionOptions):
    """onnxruntime.SessionOptions. Every field ONNX Runtime has is here; setting one that does not
    exist raises AttributeError (as ONNX Runtime's does), and a value kiln cannot honour is refused
    when the session is made."""
    _FIELDS = {"intra_op_num_threads", "inter_op_num_threads", "graph_optimization_level", "execution_mode",
               "execution_order", "enable_profiling", "profile_file_prefix", "optimized_model_filepath",
               "log_severity_level", "log_verbosity_level", "logid", "enable_cpu_mem_arena", "enable_mem_pattern",
               "enable_mem_reuse", "use_deterministic_compute", "memory_limit"}

    def __init__(self):
        object.__setattr__(self, "_ready", False)
        super().__init__()
        self.graph_optimization_level = GraphOptimizationLevel.ORT_ENABLE_ALL
        self.execution_mode = ExecutionMode.ORT_SEQUENTIAL
        self.execution_order = ExecutionOrder.DEFAULT
        self.profile_file_prefix = "onnxruntime_profile_"
        self.optimized_model_filepath = ""
        self.log_severity_level = -1  # ONNX Runtime's "use the default logger's"
        self.log_verbosity_level = 0
        self.logid = ""
        self.enable_cpu_mem_arena = True
        self.enable_mem_pattern = True
        self.enable_mem_reuse = True
        self.use_deterministic_compute = False
        self._initializers = {}
        object.__setattr__(self, "_ready", True)

    def __setattr__(self, name, value):
        if self._ready and not name.startswith("_") and name not in self._FIELDS:
            raise AttributeError("'SessionOptions' object has no attribute '%s'" % name)
        if name == "graph_optimization_level":
            value = GraphOptimizationLevel(int(value))
        elif name == "execution_mode":
            value = ExecutionMode(int(value))
        elif name == "execution_order":
            value = ExecutionOrder(int(value))
        elif name in ("intra_op_num_threads", "inter_op_num_threads") and int(value) < 0:
            raise ort_error(InvalidArgument, "%s must be >= 0" % name)
        object.__setattr__(self, name, value)

    # ---- ONNX Runtime's methods
    def add_session_config_entry(self, key, value):
        self._config[str(key)] = str(value)

    def get_session_config_entry(self, key):
        if str(key) not in self._config:
            raise ort_error(Fail, "SessionOptions does not have configuration with key: %s" % key)
        return self._config[str(key)]

    def add_free_dimension_override_by_denotation(self, dim_denotation, dim_value):
        if int(dim_value) < 0:
            raise ort_error(InvalidArgument, "dimension override must be >= 0")
        self._free_dims["@" + str(dim_denotation)] = int(dim_value)

    def add_initializer(self, name, ort_value):
        """The session uses this value for the initializer `name` (kiln copies it when the session
        is made)."""
        self._initializers[str(name)] = _host_array(ort_value, "add_initializer(%r)" % name)

    def add_external_initializers(self, names, ort_values):
        if len(names) != len(ort_values):
            raise ort_error(InvalidArgument, "add_external_initializers: %d names but %d values"
                            % (len(names), len(ort_values)))
        for n, v in zip(names, ort_values):
            self.add_initializer(n, v)

    def register_custom_ops_library(self, library_path):
        raise _refuse("register_custom_ops_library(%r)" % library_path,
                      "kiln cannot load ONNX Runtime custom-op libraries (its ops are built in)")

    def add_provider(self, provider_type, provider_options):
        raise _refuse("add_provider", "pass providers to InferenceSession instead")

    def add_provider_for_devices(self, *args, **kwargs):
        raise _refuse("add_provider_for_devices", "pass providers to InferenceSession instead")

    def set_load_cancellation_flag(self, value):
        raise _refuse("set_load_cancellation_flag", "kiln loads a model in one step")

    # ---- what kiln's InferenceSession reads
    def _check(self):
        """Raises for what kiln cannot honour (called when a session is made with these options)."""
        if self.execution_mode != ExecutionMode.ORT_SEQUENTIAL:
            raise _refuse("execution_mode ORT_PARALLEL", "kiln runs one node at a time and parallelises inside "
                          "nodes (intra_op_num_threads); use ORT_SEQUENTIAL")
        if self.execution_order != ExecutionOrder.DEFAULT:
            raise _refuse("execution_order %s" % self.execution_order.name, "kiln keeps the model's topological order")
        for f in ("enable_cpu_mem_arena", "enable_mem_pattern", "enable_mem_reuse"):
            if not getattr(self, f):
                raise _refuse("%s = False" % f, "kiln always plans its intermediate values in a reused arena")
        if self.use_deterministic_compute:
            raise _refuse("use_deterministic_compute", "kiln does not promise bit-identical results across "
                          "thread counts")
        for key, value in self._config.items():
            if key not in _KNOWN_CONFIG:
                raise _refuse("session config entry %r" % key, "kiln does not act on it (it acts on: %s)"
                              % ", ".join(sorted(_KNOWN_CONFIG)))
        for key in (_CPU_BF16, _CPU_WINOGRAD):
            if str(self._config.get(key, "0")).strip().lower() not in ("0", "1", "true", "false"):
                raise _refuse("session config entry %r = %r" % (key, self._config[key]), "it takes 0 or 1")
        if _EXT_MIN in self._config:
            try:
                if int(self._config[_EXT_MIN]) < 0:
                    raise ValueError
            except ValueError:
                raise ort_error(InvalidArgument, "%s must be an integer >= 0" % _EXT_MIN) from None

    def _severity(self):
        s = int(self.log_severity_level)
        return _default_severity[0] if s < 0 else s

    def _opt_level(self):
        level = int(self.graph_optimization_level)
        return 2 if level >= GraphOptimizationLevel.ORT_ENABLE_EXTENDED else level

    def _fill_kiln_options(self, opt):
        """Fills the fields of the C kiln_options that only a struct carries; returns what must stay
        alive while the session opens."""
        keep = []
        if self._initializers:
            names = list(self._initializers)
            arrays = [self._initializers[n] for n in names]
            descs = (_lib.TensorDesc * len(arrays))()
            for i, a in enumerate(arrays):
                dims = (ctypes.c_int64 * max(a.ndim, 1))(*a.shape)
                keep.append(dims)
                if a.dtype.kind in "OUS":
                    ptrs = (ctypes.c_char_p * max(a.size, 1))(*[str(x).encode() for x in a.reshape(-1)])
                    keep.append(ptrs)
                    descs[i] = _lib.TensorDesc(8, a.ndim, dims, ctypes.cast(ptrs, ctypes.c_void_p), 0)
                else:
                    descs[i] = _lib.TensorDesc(_lib.CODE_OF[a.dtype], a.ndim, dims, a.ctypes.data, 0)
            c_names = (ctypes.c_char_p * len(names))(*[n.encode() for n in names])
            keep += [arrays, descs, c_names]
            opt.n_initializers = len(names)
            opt.initializer_names = c_names
            opt.initializers = descs
        if self.optimized_model_filepath:
            path = os.fspath(self.optimized_model_filepath).encode()
            keep.append(path)
            opt.optimized_model_path = path
            ext = self._config.get(_EXT_FILE)
            if ext:
                opt.optimized_model_external_data = ext.encode()
                keep.append(opt.optimized_model_external_data)
                opt.optimized_model_external_min_bytes = int(self._config.get(_EXT_MIN, "1024"))
        if self._severity() == 0:
            opt.verbose = 1
        if str(self._config.get(_CPU_BF16, "0")).strip().lower() in ("1", "true"):
            opt.cpu_bf16 = 1
        if str(self._config.get(_CPU_WINOGRAD, "1")).strip().lower() in ("0", "false"):
            opt.cpu_winograd = -1
        return keep

    def _apply_model_config(self, text):
        """ORT_LOAD_CONFIG_FROM_MODEL=1: the model's "ort_config" metadata entry, a JSON object whose
        "session_options" override these options (as ONNX Runtime applies them)."""
        try:
            cfg = json.loads(text).get("session_options", {})
        except (ValueError, AttributeError):
            raise ort_error(InvalidArgument, "the model's ort_config metadata is not a JSON object") from None
        levels = {0: 0, 1: 1, 2: 2, 3: 99, 99: 99}
        for key, value in cfg.items():
            if key in ("intra_op_num_threads", "inter_op_num_threads", "log_severity_level", "log_verbosity_level"):
                setattr(self, key, int(value))
            elif key == "execution_mode":
                self.execution_mode = int(value)
            elif key == "graph_optimization_level":
                if int(value) not in levels:
                    raise ort_error(InvalidArgument, "ort_config: graph_optimization_level %r" % value)
                self.graph_optimization_level = levels[int(value)]
            elif key in ("enable_profiling", "enable_mem_pattern", "enable_cpu_mem_arena", "use_deterministic_compute"):
                setattr(self, key, bool(int(value)))
            elif key in ("profile_file_prefix", "session_logid"):
                setattr(self, "logid" if key == "session_logid" else key, str(value))
            else:
                raise _refuse("ort_config session option %r" % key, "kiln does not know it")


class RunOptions(_KilnRunOptions):
    """onnxruntime.RunOptions: `terminate` set from any thread stops the runs using these options
    at their next node (they raise Fail); log_severity_level, log_verbosity_level, logid and run_tag
    label a run's log, and kiln logs nothing per run."""
    _FIELDS = {"terminate", "timeout_ms", "log_severity_level", "log_verbosity_level", "logid", "run_tag",
               "only_execute_path_to_fetches", "synchronize_execution_providers", "training_mode"}

    def __init__(self):
        object.__setattr__(self, "_ready", False)
        super().__init__()
        self.run_tag = ""
        self.training_mode = False
        object.__setattr__(self, "_ready", True)

    def __setattr__(self, name, value):
        if self._ready and not name.startswith("_") and name not in self._FIELDS:
            raise AttributeError("'RunOptions' object has no attribute '%s'" % name)
        object.__setattr__(self, name, value)

    def add_run_config_entry(self, key, value):
        self._config[str(key)] = str(value)

    def get_run_config_entry(self, key):
        if str(key) not in self._config:
            raise ort_error(Fail, "RunOptions does not have configuration with key: %s" % key)
        return self._config[str(key)]

    def _check(self):
        if self.only_execute_path_to_fetches:
            raise _refuse("only_execute_path_to_fetches", "kiln runs the whole graph")
        if self.training_mode:
            raise _refuse("training_mode", "kiln runs inference only")
        for key, value in self._config.items():
            if key == "memory.enable_memory_arena_shrinkage":
                continue  # done by the session after the run
            raise _refuse("run config entry %r" % key, "kiln does not act on it")


def _host_array(value, what):
    """A numpy array from an OrtValue on the host or anything numpy takes."""
    if hasattr(value, "numpy") and hasattr(value, "device_name"):
        if value.device_name() != "cpu":
            raise ort_error(InvalidArgument, "%s: the value must be in CPU memory" % what)
        value = value.numpy()
    arr = np.ascontiguousarray(value)
    if arr.dtype.kind not in "OUS" and arr.dtype not in _lib.CODE_OF:
        raise ort_error(InvalidArgument, "%s: numpy dtype %s has no ONNX element type in kiln" % (what, arr.dtype))
    return arr

