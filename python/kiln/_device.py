"""Values in device memory: feeds from torch / cupy / any DLPack producer read in place, OrtValue,
and IOBinding, as ONNX Runtime's Python API has them.

A device feed is described to kiln by pointer (KILN_MEMORY_DEVICE); kiln's stream waits for the
legacy default stream, which torch and cupy use unless told otherwise, so work queued there is
finished before kiln reads. Outputs kept on the device are OrtValues that torch and cupy read
without a copy through __cuda_array_interface__ (torch.as_tensor(v, device="cuda"),
cupy.asarray(v)); free them (or let them go) before the session that made them."""
import ctypes

import numpy as np

from . import _lib

# ONNX element types <-> numpy (_lib.py) and __cuda_array_interface__ typestr (bfloat16: "<V2")
_NP_OF, _TYPE_NAMES, _ELEMENT_TYPE_OF = _lib.NP_OF, _lib.TYPE_NAMES, _lib.CODE_OF
_SIZE_OF = {**{k: np.dtype(v).itemsize for k, v in _NP_OF.items()}, 16: 2}
_TYPESTR_OF = {**{k: np.dtype(v).str for k, v in _NP_OF.items()}, 16: "<V2"}
_CODE_OF_TYPESTR = {v: k for k, v in _TYPESTR_OF.items() if k != 16}

# DLPack (unversioned "dltensor" capsules)
_kDLCPU, _kDLCUDA, _kDLCUDAManaged = 1, 2, 13


class _DLDevice(ctypes.Structure):
    _fields_ = [("device_type", ctypes.c_int32), ("device_id", ctypes.c_int32)]


class _DLDataType(ctypes.Structure):
    _fields_ = [("code", ctypes.c_uint8), ("bits", ctypes.c_uint8), ("lanes", ctypes.c_uint16)]


class _DLTensor(ctypes.Structure):
    _fields_ = [("data", ctypes.c_void_p), ("device", _DLDevice), ("ndim", ctypes.c_int32),
                ("dtype", _DLDataType), ("shape", ctypes.POINTER(ctypes.c_int64)),
                ("strides", ctypes.POINTER(ctypes.c_int64)), ("byte_offset", ctypes.c_uint64)]


_DL_CODE = {(0, 8): 3, (0, 16): 5, (0, 32): 6, (0, 64): 7, (1, 8): 2, (1, 16): 4, (1, 32): 12, (1, 64): 13,
            (2, 16): 10, (2, 32): 1, (2, 64): 11, (4, 16): 16, (6, 8): 9, (1, 1): 9}

_capsule_ptr = ctypes.pythonapi.PyCapsule_GetPointer
_capsule_ptr.restype = ctypes.c_void_p
_capsule_ptr.argtypes = [ctypes.py_object, ctypes.c_char_p]


class DeviceFeed:
    """A device tensor described for kiln: pointer, element type, shape; holds what keeps it alive."""

    def __init__(self, ptr, element_type, shape, owner):
        self.ptr, self.element_type, self.shape, self.owner = int(ptr), int(element_type), tuple(shape), owner


def _contiguous(shape, strides_elems):
    expect = 1
    for d, s in zip(reversed(shape), reversed(strides_elems)):
        if d != 1 and s != expect:
            return False
        expect *= d
    return True


def _from_cai(name, x):
    cai = x.__cuda_array_interface__
    typestr = cai["typestr"]
    code = _CODE_OF_TYPESTR.get(np.dtype(typestr).str if typestr[1] != "V" else "")
    if code is None:
        raise TypeError("input %r: element type %s is not supported" % (name, typestr))
    shape = tuple(cai["shape"])
    strides = cai.get("strides")
    if strides is not None:
        item = _SIZE_OF[code]
        if any(s % item for s in strides) or not _contiguous(shape, [s // item for s in strides]):
            raise ValueError("input %r: a device tensor must be contiguous (call .contiguous())" % name)
    return DeviceFeed(cai["data"][0], code, shape, x)


def _from_dlpack(name, x):
    capsule = x.__dlpack__()
    ptr = _capsule_ptr(capsule, b"dltensor")
    t = _DLTensor.from_address(ptr)
    if t.device.device_type not in (_kDLCUDA, _kDLCUDAManaged):
        return None
    code = _DL_CODE.get((t.dtype.code, t.dtype.bits))
    if code is None or t.dtype.lanes != 1:
        raise TypeError("input %r: DLPack type code %d bits %d is not supported" % (name, t.dtype.code, t.dtype.bits))
    shape = tuple(t.shape[i] for i in range(t.ndim))
    if t.strides and not _contiguous(shape, [t.strides[i] for i in range(t.ndim)]):
        raise ValueError("input %r: a device tensor must be contiguous" % name)
    # the capsule keeps the producer's memory alive until it is collected (its deleter then runs)
    return DeviceFeed(t.data + t.byte_offset, code, shape, (x, capsule))


def device_feed(name, x):
    """A DeviceFeed for a device-resident feed (OrtValue on the device, torch/cupy CUDA tensors,
    DLPack producers on CUDA), or None for anything that lives on the host."""
    if isinstance(x, OrtValue):
        return x._device_feed() if x.device_name() == "cuda" else None
    if isinstance(x, np.ndarray):
        return None
    if hasattr(x, "__cuda_array_interface__"):
        try:
            return _from_cai(name, x)
        except AttributeError:  # torch CPU tensors raise here
            return None
    dev = getattr(x, "__dlpack_device__", None)
    if dev is not None:
        try:
            kind = dev()[0]
        except Exception:  # noqa: BLE001 - a producer that cannot say is treated as host data
            return None
        if int(kind) in (_kDLCUDA, _kDLCUDAManaged):
            return _from_dlpack(name, x)
    return None


_device_session = None


def _default_device_session():
    """A tiny CUDA session whose device allocates OrtValues made without a session."""
    global _device_session
    if _device_session is None:
        from ._session import InferenceSession
        identity = (b'\x08\x07:7\n\x10\n\x01x\x12\x01y"\x08Identity\x12\x01dZ\x0f\n\x01x\x12\n\n\x08\x08\x01'
                    b'\x12\x04\n\x02\x08\x01b\x0f\n\x01y\x12\n\n\x08\x08\x01\x12\x04\n\x02\x08\x01B\x04\n\x00\x10\r')
        _device_session = InferenceSession(identity, providers=["CUDAExecutionProvider"])
    return _device_session


class OrtValue:
    """A tensor on the host or the device, as onnxruntime.OrtValue."""

    def __init__(self, value_ptr=None, lib=None, session=None, array=None, feed=None):
        self._v = value_ptr      # an owned kiln_value* (device outputs, uploaded arrays)
        self._lib = lib
        self._session = session  # keeps the device provider alive while the value lives
        self._array = array      # host data
        self._feed = feed        # a device buffer somebody else owns

    # ---- construction, as onnxruntime.OrtValue ----
    @staticmethod
    def ortvalue_from_numpy(numpy_obj, device_type="cpu", device_id=0):
        arr = np.ascontiguousarray(numpy_obj)
        if device_type == "cpu":
            return OrtValue(array=arr)
        if device_type != "cuda":
            raise ValueError("device_type must be 'cpu' or 'cuda', not %r" % device_type)
        return OrtValue._upload(_default_device_session(), arr)

    @staticmethod
    def ortvalue_from_shape_and_type(shape, element_type, device_type="cpu", device_id=0):
        dt = np.dtype(element_type)
        return OrtValue.ortvalue_from_numpy(np.zeros(shape, dt), device_type, device_id)

    @staticmethod
    def _upload(session, arr):
        lib = session._lib
        if arr.dtype not in _ELEMENT_TYPE_OF:
            raise TypeError("unsupported numpy dtype %s" % arr.dtype)
        dims = (ctypes.c_int64 * max(arr.ndim, 1))(*arr.shape)
        desc = _lib.TensorDesc(_ELEMENT_TYPE_OF[arr.dtype], arr.ndim, dims, arr.ctypes.data, 0)
        out = ctypes.c_void_p()
        if lib.kiln_value_to_device(session._handle(), ctypes.byref(desc), ctypes.byref(out)) != 0:
            from ._session import KilnError
            raise KilnError(lib.kiln_last_error().decode(errors="replace"))
        return OrtValue(out, lib, session)

    # ---- what it is ----
    def is_tensor(self):
        return True

    def has_value(self):
        return True

    def device_name(self):
        if self._feed is not None:
            return "cuda"
        if self._v is not None:
            return "cuda" if self._lib.kiln_value_memory(self._v) == 1 else "cpu"
        return "cpu"

    def _code_shape(self):
        if self._array is not None:
            return _ELEMENT_TYPE_OF.get(self._array.dtype, 0), tuple(self._array.shape)
        if self._feed is not None:
            return self._feed.element_type, self._feed.shape
        lib = self._lib
        rank = lib.kiln_value_rank(self._v)
        dims = lib.kiln_value_dims(self._v)
        return lib.kiln_value_dtype(self._v), tuple(dims[i] for i in range(rank))

    def shape(self):
        return list(self._code_shape()[1])

    def element_type(self):
        code = self._code_shape()[0]
        return _NP_OF.get(code, np.uint16)

    def data_type(self):
        return _TYPE_NAMES.get(self._code_shape()[0], "tensor(unknown)")

    def data_ptr(self):
        if self._array is not None:
            return self._array.ctypes.data
        if self._feed is not None:
            return self._feed.ptr
        return self._lib.kiln_value_data(self._v) or 0

    def numpy(self):
        if self._array is not None:
            return self._array
        if self._feed is not None:
            raise ValueError("this OrtValue wraps a device buffer it does not own; read it with its owner")
        lib = self._lib
        host = ctypes.c_void_p()
        if lib.kiln_value_to_host(self._v, ctypes.byref(host)) != 0:
            from ._session import KilnError
            raise KilnError(lib.kiln_last_error().decode(errors="replace"))
        try:
            return self._session._tensor(host)
        finally:
            lib.kiln_value_free(host)

    @property
    def __cuda_array_interface__(self):
        if self.device_name() != "cuda":
            raise AttributeError("__cuda_array_interface__: the value is on the host")
        code, shape = self._code_shape()
        return {"shape": shape, "typestr": _TYPESTR_OF[code], "data": (self.data_ptr(), False),
                "version": 3, "strides": None, "stream": None}

    def _device_feed(self):
        if self._feed is not None:
            return self._feed
        code, shape = self._code_shape()
        return DeviceFeed(self.data_ptr(), code, shape, self)

    def __del__(self):
        v, self._v = getattr(self, "_v", None), None
        if v is not None and self._lib is not None:
            self._lib.kiln_value_free(v)

    def __repr__(self):
        return "OrtValue(%s, %s, %s)" % (self.data_type(), self.shape(), self.device_name())


class IOBinding:
    """Inputs and outputs bound ahead of a run, as onnxruntime's SessionIOBinding."""

    def __init__(self, session):
        self._session = session
        self.clear_binding_inputs()
        self.clear_binding_outputs()

    def bind_cpu_input(self, name, arr_on_cpu):
        self._inputs[name] = np.ascontiguousarray(arr_on_cpu)

    def bind_input(self, name, device_type, device_id, element_type, shape, buffer_ptr):
        if device_type == "cpu":
            n = int(np.prod(shape)) if len(shape) else 1
            buf = (ctypes.c_char * (n * np.dtype(element_type).itemsize)).from_address(buffer_ptr)
            self._inputs[name] = np.frombuffer(buf, dtype=element_type).reshape(shape)
            return
        code = _ELEMENT_TYPE_OF[np.dtype(element_type)]
        self._inputs[name] = OrtValue(feed=DeviceFeed(buffer_ptr, code, shape, None))

    def bind_ortvalue_input(self, name, ortvalue):
        self._inputs[name] = ortvalue

    def bind_output(self, name, device_type="cpu", device_id=0, element_type=None, shape=None, buffer_ptr=None):
        if buffer_ptr is None:
            self._outputs[name] = (device_type, None)
            return
        code = _ELEMENT_TYPE_OF[np.dtype(element_type)]
        memory = 1 if device_type == "cuda" else 0
        self._outputs[name] = (device_type, (code, tuple(shape), int(buffer_ptr), memory))

    def bind_ortvalue_output(self, name, ortvalue):
        code, shape = ortvalue._code_shape()
        memory = 1 if ortvalue.device_name() == "cuda" else 0
        self._outputs[name] = (ortvalue.device_name(), (code, tuple(shape), ortvalue.data_ptr(), memory), ortvalue)

    def clear_binding_inputs(self):
        self._inputs = {}

    def clear_binding_outputs(self):
        self._outputs = {}
        self._results = []

    def synchronize_inputs(self):
        pass  # kiln reads bound inputs in the run's stream order

    def synchronize_outputs(self):
        pass  # a run returns after its device work is complete

    def get_outputs(self):
        return list(self._results)

    def copy_outputs_to_cpu(self):
        return [v.numpy() for v in self._results]
