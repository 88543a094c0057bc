"""onnxruntime.capi._pybind_state: in ONNX Runtime the module that loads its C++ extension; here
the same names, from onnxruntime_pybind11_state."""
from .onnxruntime_pybind11_state import *  # noqa: F401,F403
from .onnxruntime_pybind11_state import get_default_session_options  # noqa: F401
