"""kiln: an ONNX inference runtime (Python interface over the C library).

    import kiln
    s = kiln.InferenceSession("model.onnx", providers=["CPUExecutionProvider"], threads=2)
    [i.name for i in s.get_inputs()]
    outputs = s.run(None, {"x": numpy_array})
"""
from ._device import IOBinding, OrtValue
from ._options import RunOptions, SessionOptions
from ._session import InferenceSession, KilnError, NodeArg, get_available_providers, __version__

__all__ = ["InferenceSession", "IOBinding", "KilnError", "NodeArg", "OrtValue", "RunOptions", "SessionOptions", "get_available_providers",
           "__version__"]
