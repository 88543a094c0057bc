"""ONNX Runtime's Python API over kiln: code written for onnxruntime runs unchanged after

    import kiln.onnxruntime as onnxruntime

InferenceSession, SessionOptions, RunOptions, OrtValue, IOBinding, SparseTensor, the enums, the
module functions and the error classes of onnxruntime.capi.onnxruntime_pybind11_state are here, with
ONNX Runtime's behaviour: the same checks, conversions and kinds of error for the same mistakes.
An option kiln cannot honour is refused with NotImplemented (a RuntimeError), never ignored."""
from .capi.onnxruntime_inference_collection import (IOBinding, InferenceSession, NodeArg, OrtValue, Session,
                                                    SparseTensor, check_and_normalize_provider_args)
from .capi.onnxruntime_pybind11_state import (EPFail, ExecutionMode, ExecutionOrder, Fail, GraphOptimizationLevel,
                                              InvalidArgument, InvalidGraph, InvalidProtobuf, ModelLoaded,
                                              ModelMetadata, NoModel, NoSuchFile, NotImplemented, OrtAllocatorType,
                                              OrtArenaCfg, OrtDevice, OrtMemoryInfo, OrtMemType, OrtSparseFormat,
                                              RunOptions, RuntimeException, SessionOptions, EngineError,
                                              create_and_register_allocator, create_and_register_allocator_v2,
                                              disable_telemetry_events, enable_telemetry_events, get_all_providers,
                                              get_available_providers, get_build_info, get_device,
                                              get_version_string, set_default_logger_severity,
                                              set_default_logger_verbosity, set_seed, ORT_API_VERSION)

__version__ = ORT_API_VERSION
