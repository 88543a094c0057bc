"""Training with kiln, in the shape of ONNX Runtime's on-device training API
(onnxruntime.training.artifacts and onnxruntime.training.api):

    from kiln import training
    training.generate_artifacts("model.onnx", requires_grad=["W", "b"], loss=training.LossType.MSELoss,
                                optimizer=training.OptimType.AdamW, artifact_directory="art")
    state = training.CheckpointState.load_checkpoint("art/checkpoint.kckpt")
    module = training.Module("art/training_model.onnx", state, "art/eval_model.onnx")
    optimizer = training.Optimizer("adamw", module)
    module.train()
    for x, y in batches:
        loss = module(x, y)
        optimizer.step()
        module.lazy_reset_grad()
    module.export_model_for_inferencing("trained.onnx", ["y"])
    training.CheckpointState.save_checkpoint(state, "art/checkpoint.kckpt")

The optimizer is a fused C kernel with torch.optim's arithmetic (AdamW, SGD), not an ONNX model;
the checkpoint is kiln's own binary format (docs/training.md)."""
import ctypes
import enum
import os
import weakref

import numpy as np

from . import _lib
from ._session import KilnError, _L

__all__ = ["CheckpointState", "LinearLRScheduler", "LossType", "Module", "OptimType", "Optimizer", "Parameter",
           "generate_artifacts"]

_P, _vp, _cp = ctypes.POINTER, ctypes.c_void_p, ctypes.c_char_p
_c_int, _size_t, _i64, _dbl = ctypes.c_int, ctypes.c_size_t, ctypes.c_int64, ctypes.c_double


class ArtifactsOptions(ctypes.Structure):
    _fields_ = [("requires_grad", _P(_cp)), ("n_requires_grad", _size_t), ("frozen", _P(_cp)), ("n_frozen", _size_t),
                ("loss", _cp), ("output", _cp), ("optimizer", _cp)]


_SIGS = {
    "kiln_checkpoint_load": (_c_int, [_cp, _P(_vp)]),
    "kiln_checkpoint_save": (_c_int, [_vp, _cp]),
    "kiln_checkpoint_free": (None, [_vp]),
    "kiln_checkpoint_new": (_c_int, [_P(_vp)]),
    "kiln_checkpoint_add_param": (_c_int, [_vp, _cp, _P(_lib.TensorDesc), _c_int]),
    "kiln_checkpoint_param_count": (_size_t, [_vp]),
    "kiln_checkpoint_param_name": (_cp, [_vp, _size_t]),
    "kiln_checkpoint_param_requires_grad": (_c_int, [_vp, _size_t]),
    "kiln_checkpoint_get_param": (_c_int, [_vp, _cp, _P(_lib.TensorDesc)]),
    "kiln_checkpoint_set_param": (_c_int, [_vp, _cp, _P(_lib.TensorDesc)]),
    "kiln_checkpoint_optimizer": (_cp, [_vp]),
    "kiln_checkpoint_set_optimizer": (_c_int, [_vp, _cp]),
    "kiln_checkpoint_get_hparam": (_c_int, [_vp, _cp, _P(_dbl)]),
    "kiln_checkpoint_set_hparam": (_c_int, [_vp, _cp, _dbl]),
    "kiln_checkpoint_step": (_i64, [_vp]),
    "kiln_train_module_open": (_c_int, [_cp, _cp, _vp, _P(_lib.Options), _P(_vp)]),
    "kiln_train_module_close": (None, [_vp]),
    "kiln_train_module_session": (_vp, [_vp, _c_int]),
    "kiln_train_module_input_count": (_size_t, [_vp, _c_int]),
    "kiln_train_module_input_name": (_cp, [_vp, _c_int, _size_t]),
    "kiln_train_module_eval_output_count": (_size_t, [_vp]),
    "kiln_train_module_eval_output_name": (_cp, [_vp, _size_t]),
    "kiln_train_step": (_c_int, [_vp, _size_t, _P(_cp), _P(_lib.TensorDesc), _P(ctypes.c_float)]),
    "kiln_eval_step": (_c_int, [_vp, _size_t, _P(_cp), _P(_lib.TensorDesc), _P(_vp)]),
    "kiln_train_module_lazy_reset_grad": (None, [_vp]),
    "kiln_train_module_get_grad": (_c_int, [_vp, _cp, _P(_lib.TensorDesc)]),
    "kiln_train_module_export": (_c_int, [_vp, _cp, _size_t, _P(_cp)]),
    "kiln_train_module_memory": (_c_int, [_vp]),
    "kiln_train_module_transfer_bytes": (ctypes.c_uint64, [_vp]),
    "kiln_optimizer_open": (_c_int, [_vp, _P(_vp)]),
    "kiln_optimizer_close": (None, [_vp]),
    "kiln_optimizer_step": (_c_int, [_vp]),
    "kiln_optimizer_set_lr": (_c_int, [_vp, _dbl]),
    "kiln_optimizer_get_lr": (_dbl, [_vp]),
    "kiln_lr_scheduler_linear": (_c_int, [_vp, _i64, _i64, _dbl, _P(_vp)]),
    "kiln_lr_scheduler_step": (_c_int, [_vp]),
    "kiln_lr_scheduler_free": (None, [_vp]),
    "kiln_train_artifacts": (_c_int, [_cp, _P(ArtifactsOptions), _cp]),
}
_declared = []


def _lib_t():
    lib = _L()
    if not _declared:
        for name, (res, args) in _SIGS.items():
            f = getattr(lib, name)
            f.restype, f.argtypes = res, args
        _declared.append(True)
    return lib


def _check(st):
    if st != 0:
        raise KilnError(_L().kiln_last_error().decode("utf-8", "replace"))


def _enc(s):
    return os.fspath(s).encode("utf-8") if isinstance(s, (str, os.PathLike)) else s


def _desc(arr, keep):
    """A TensorDesc over a C-contiguous numpy array (kept alive through `keep`)."""
    arr = np.ascontiguousarray(arr)
    if arr.dtype not in _lib.CODE_OF:
        raise KilnError("unsupported dtype %s" % arr.dtype)
    dims = (ctypes.c_int64 * max(arr.ndim, 1))(*arr.shape)
    keep.extend([arr, dims])
    return _lib.TensorDesc(_lib.CODE_OF[arr.dtype], arr.ndim, dims, arr.ctypes.data, 0)


def _view_to_numpy(d):
    """A copy of the tensor a TensorDesc views."""
    shape = tuple(d.dims[i] for i in range(d.rank))
    dt = np.dtype(_lib.NP_OF[d.dtype])
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    buf = (ctypes.c_char * (n * dt.itemsize)).from_address(d.data)
    return np.frombuffer(buf, dtype=dt, count=n).reshape(shape).copy()


def _value_to_numpy(lib, v):
    dt = np.dtype(_lib.NP_OF[lib.kiln_value_dtype(v)])
    rank = lib.kiln_value_rank(v)
    dims = lib.kiln_value_dims(v)
    shape = tuple(dims[i] for i in range(rank))
    nbytes = lib.kiln_value_nbytes(v)
    if nbytes == 0:
        return np.zeros(shape, dtype=dt)
    buf = (ctypes.c_char * nbytes).from_address(lib.kiln_value_data(v))
    return np.frombuffer(buf, dtype=dt).reshape(shape).copy()


# ---- artifacts ----

class LossType(enum.Enum):
    """ONNX Runtime's artifacts.LossType."""
    MSELoss = "mse"
    CrossEntropyLoss = "cross_entropy"
    BCEWithLogitsLoss = "bce_with_logits"
    L1Loss = "l1"


class OptimType(enum.Enum):
    """ONNX Runtime's artifacts.OptimType."""
    AdamW = "adamw"
    SGD = "sgd"


_LOSS_NAMES = {"mse": "mse", "mseloss": "mse", "cross_entropy": "cross_entropy", "crossentropyloss": "cross_entropy",
               "bce_with_logits": "bce_with_logits", "bcewithlogitsloss": "bce_with_logits", "l1": "l1",
               "l1loss": "l1"}


def _name_of(v, table, what):
    if isinstance(v, enum.Enum):
        v = v.value
    key = str(v).lower()
    if key not in table:
        raise ValueError("unknown %s %r (expected one of %s)" % (what, v, ", ".join(sorted(set(table.values())))))
    return table[key]


def generate_artifacts(model, requires_grad=None, frozen_params=None, loss=None, optimizer=None,
                       artifact_directory=None, output=None, **kwargs):
    """Writes training_model.onnx, eval_model.onnx, inference_model.onnx and checkpoint.kckpt into
    artifact_directory (made if missing). model is a path or an onnx.ModelProto. output names the
    model output the loss takes (default: the first). ONNX Runtime's other keyword arguments
    (ort_format, custom loss blocks, ...) are refused rather than ignored."""
    if kwargs:
        raise NotImplementedError("generate_artifacts: kiln does not support %s" % ", ".join(sorted(kwargs)))
    if loss is None or optimizer is None:
        raise ValueError("generate_artifacts: loss and optimizer are required")
    loss_name = _name_of(loss, _LOSS_NAMES, "loss")
    opt_name = _name_of(optimizer, {"adamw": "adamw", "sgd": "sgd"}, "optimizer")
    requires_grad = list(requires_grad or [])
    frozen = list(frozen_params or [])
    out_dir = os.fspath(artifact_directory) if artifact_directory is not None else os.getcwd()
    os.makedirs(out_dir, exist_ok=True)
    tmp = None
    if not isinstance(model, (str, os.PathLike)):  # an onnx.ModelProto
        tmp = os.path.join(out_dir, ".kiln_source_model.onnx")
        with open(tmp, "wb") as f:
            f.write(model.SerializeToString())
        model = tmp
    lib = _lib_t()
    rg = (_cp * max(len(requires_grad), 1))(*[_enc(n) for n in requires_grad])
    fz = (_cp * max(len(frozen), 1))(*[_enc(n) for n in frozen])
    opts = ArtifactsOptions(rg, len(requires_grad), fz, len(frozen), loss_name.encode(),
                            _enc(output) if output else None, opt_name.encode())
    try:
        _check(lib.kiln_train_artifacts(_enc(model), ctypes.byref(opts), _enc(out_dir)))
    finally:
        if tmp:
            os.remove(tmp)


# ---- checkpoint ----

class Parameter:
    """One checkpoint parameter (ONNX Runtime's api.Parameter): data is a copy; assigning data
    writes the checkpoint; grad is the module's accumulated gradient once a module trains it."""

    def __init__(self, state, name, requires_grad):
        self._state, self.name, self.requires_grad = state, name, requires_grad

    @property
    def data(self):
        return self._state._get(self.name)

    @data.setter
    def data(self, value):
        self._state._set(self.name, value)

    @property
    def grad(self):
        mod = self._state._module() if self._state._module is not None else None
        return mod._grad(self.name) if mod is not None and self.requires_grad else None

    def copy_from(self, value):
        self.data = value

    def __repr__(self):
        return "Parameter(name=%r, requires_grad=%r)" % (self.name, self.requires_grad)


class _Parameters:
    def __init__(self, state):
        self._state = state

    def _names(self):
        lib, h = _lib_t(), self._state._h
        return [lib.kiln_checkpoint_param_name(h, i).decode() for i in range(lib.kiln_checkpoint_param_count(h))]

    def __iter__(self):
        return iter(self._names())

    def __len__(self):
        return len(self._names())

    def __contains__(self, name):
        return name in self._names()

    def keys(self):
        return self._names()

    def items(self):
        return [(n, self[n]) for n in self._names()]

    def __getitem__(self, name):
        names = self._names()
        if name not in names:
            raise KeyError(name)
        i = names.index(name)
        return Parameter(self._state, name, bool(_lib_t().kiln_checkpoint_param_requires_grad(self._state._h, i)))

    def __setitem__(self, name, value):
        self._state._set(name, value.data if isinstance(value, Parameter) else value)


class CheckpointState:
    """The parameters, the optimizer's hyper-parameters and its state (ONNX Runtime's
    api.CheckpointState). Module and Optimizer train the values held here."""

    def __init__(self, handle):
        self._h = handle
        self._module = None

    @classmethod
    def load_checkpoint(cls, checkpoint_uri):
        lib = _lib_t()
        h = ctypes.c_void_p()
        _check(lib.kiln_checkpoint_load(_enc(checkpoint_uri), ctypes.byref(h)))
        return cls(h.value)

    @classmethod
    def new(cls, parameters=None, optimizer=None, requires_grad=True):
        """A checkpoint made in memory: parameters is {name: array} (or (name, array) pairs)."""
        lib = _lib_t()
        h = ctypes.c_void_p()
        _check(lib.kiln_checkpoint_new(ctypes.byref(h)))
        st = cls(h.value)
        items = parameters.items() if isinstance(parameters, dict) else (parameters or [])
        for name, arr in items:
            keep = []
            d = _desc(arr, keep)
            _check(lib.kiln_checkpoint_add_param(st._h, _enc(name), ctypes.byref(d), int(bool(requires_grad))))
        if optimizer:
            st.set_optimizer(optimizer)
        return st

    @staticmethod
    def save_checkpoint(state, checkpoint_uri, include_optimizer_state=True):
        """Writes the checkpoint (atomically). The optimizer state is always included."""
        _check(_lib_t().kiln_checkpoint_save(state._h, _enc(checkpoint_uri)))

    def save(self, checkpoint_uri):
        CheckpointState.save_checkpoint(self, checkpoint_uri)

    @property
    def parameters(self):
        return _Parameters(self)

    @property
    def optimizer(self):
        return _lib_t().kiln_checkpoint_optimizer(self._h).decode()

    def set_optimizer(self, name, **hparams):
        """Records optimizer `name` with torch.optim's defaults (clearing its state), then hparams."""
        _check(_lib_t().kiln_checkpoint_set_optimizer(self._h, _name_of(name, {"adamw": "adamw", "sgd": "sgd"},
                                                                         "optimizer").encode()))
        for k, v in hparams.items():
            self.set_hyperparameter(k, v)

    def get_hyperparameter(self, key):
        v = ctypes.c_double()
        _check(_lib_t().kiln_checkpoint_get_hparam(self._h, _enc(key), ctypes.byref(v)))
        return v.value

    def set_hyperparameter(self, key, value):
        _check(_lib_t().kiln_checkpoint_set_hparam(self._h, _enc(key), float(value)))

    @property
    def step(self):
        return int(_lib_t().kiln_checkpoint_step(self._h))

    def _get(self, name):
        d = _lib.TensorDesc()
        _check(_lib_t().kiln_checkpoint_get_param(self._h, _enc(name), ctypes.byref(d)))
        return _view_to_numpy(d)

    def _set(self, name, value):
        keep = []
        d = _desc(np.asarray(value), keep)
        _check(_lib_t().kiln_checkpoint_set_param(self._h, _enc(name), ctypes.byref(d)))

    def __del__(self):
        h, self._h = getattr(self, "_h", None), None
        if h and _declared:
            _L().kiln_checkpoint_free(h)


# ---- module ----

_DEVICES = {"cpu": 1, "cuda": 2 | 1}


class Module:
    """Runs the training and eval models (ONNX Runtime's api.Module). In train mode a call runs a
    train step: it returns the loss and adds the gradients to the module's buffers (the next call
    after lazy_reset_grad overwrites them). In eval mode it returns the eval model's outputs (the
    loss, then the model's outputs). Inputs are positional, in the order of input_names(), or by
    keyword."""

    def __init__(self, train_model_uri, state, eval_model_uri=None, device="cpu", threads=0):
        lib = _lib_t()
        dev = str(device).split(":")[0].lower()
        if dev not in _DEVICES:
            raise ValueError("device %r: expected 'cpu' or 'cuda'" % (device,))
        opt = _lib.Options()
        lib.kiln_options_init(ctypes.byref(opt))
        opt.providers = _DEVICES[dev]
        opt.threads = int(threads)
        h = ctypes.c_void_p()
        _check(lib.kiln_train_module_open(_enc(train_model_uri), _enc(eval_model_uri) if eval_model_uri else None,
                                          state._h, ctypes.byref(opt), ctypes.byref(h)))
        self._h, self._state, self._training = h.value, state, True
        state._module = weakref.ref(self)
        self._has_eval = bool(eval_model_uri)
        self._in = [self._names(0), self._names(1) if eval_model_uri else []]

    def _names(self, ev):
        lib = _lib_t()
        return [lib.kiln_train_module_input_name(self._h, ev, i).decode()
                for i in range(lib.kiln_train_module_input_count(self._h, ev))]

    def get_providers(self, training=True):
        """The providers the training (or eval) session really uses, preferred first."""
        lib = _lib_t()
        s = lib.kiln_train_module_session(self._h, 0 if training else 1)
        if not s:
            return []
        return [lib.kiln_session_provider_name(s, i).decode() for i in range(lib.kiln_session_provider_count(s))]

    def get_provider_warning(self):
        """Why a provider asked for was replaced by the CPU ("" when none was)."""
        lib = _lib_t()
        return lib.kiln_session_warning(lib.kiln_train_module_session(self._h, 0)).decode()

    def parameters_memory(self):
        """Where the parameters, gradients and optimizer state live between steps: "device" when
        the training session runs on CUDA (they are copied to the host only when read), else "host"."""
        return "device" if _lib_t().kiln_train_module_memory(self._h) == 1 else "host"

    def transfer_bytes(self):
        """Bytes the module has copied between host and device since it opened (parameters,
        gradients, optimizer state, the loss); not the copies the session's placement makes."""
        return int(_lib_t().kiln_train_module_transfer_bytes(self._h))

    def input_names(self, training=None):
        return list(self._in[0 if (self._training if training is None else training) else 1])

    def output_names(self, training=None):
        lib = _lib_t()
        if self._training if training is None else training:
            return ["loss"]
        return [lib.kiln_train_module_eval_output_name(self._h, i).decode()
                for i in range(lib.kiln_train_module_eval_output_count(self._h))]

    def train(self, mode=True):
        self._training = bool(mode)
        return self

    def eval(self):
        return self.train(False)

    @property
    def training(self):
        return self._training

    def _feeds(self, args, kwargs, names):
        if len(args) > len(names):
            raise ValueError("expected at most %d inputs (%s), got %d" % (len(names), ", ".join(names), len(args)))
        feeds = dict(zip(names, args))
        for k, v in kwargs.items():
            if k in feeds:
                raise ValueError("input %r given twice" % k)
            feeds[k] = v
        keep = []
        arr = (_lib.TensorDesc * max(len(feeds), 1))(*[_desc(np.asarray(v), keep) for v in feeds.values()])
        nm = (_cp * max(len(feeds), 1))(*[_enc(k) for k in feeds])
        return len(feeds), nm, arr, keep

    def __call__(self, *args, **kwargs):
        lib = _lib_t()
        if self._training:
            n, nm, arr, keep = self._feeds(args, kwargs, self._in[0])
            loss = ctypes.c_float()
            _check(lib.kiln_train_step(self._h, n, nm, arr, ctypes.byref(loss)))
            return np.array(loss.value, dtype=np.float32)
        if not self._has_eval:
            raise KilnError("eval step: the module was opened without an eval model")
        n, nm, arr, keep = self._feeds(args, kwargs, self._in[1])
        n_out = lib.kiln_train_module_eval_output_count(self._h)
        outs = (ctypes.c_void_p * max(n_out, 1))()
        _check(lib.kiln_eval_step(self._h, n, nm, arr, outs))
        try:
            res = [_value_to_numpy(lib, outs[i]) for i in range(n_out)]
        finally:
            for i in range(n_out):
                lib.kiln_value_free(outs[i])
        return res

    def _param_names(self, trainable_only):
        ps = self._state.parameters
        return [n for n in ps if not trainable_only or ps[n].requires_grad]

    def get_parameters_size(self, trainable_only=True):
        """Elements in the (trainable) parameters, as ONNX Runtime's Module."""
        return int(sum(self._state.parameters[n].data.size for n in self._param_names(trainable_only)))

    def get_contiguous_parameters(self, trainable_only=False):
        """The parameters flattened and concatenated in checkpoint order (a copy)."""
        parts = [self._state.parameters[n].data.ravel() for n in self._param_names(trainable_only)]
        return np.concatenate(parts) if parts else np.zeros(0, np.float32)

    def copy_buffer_to_parameters(self, buffer, trainable_only=True):
        """Writes a flat buffer (get_contiguous_parameters' layout) back into the parameters."""
        buf = np.asarray(buffer).ravel()
        need = self.get_parameters_size(trainable_only)
        if buf.size != need:
            raise ValueError("buffer has %d elements, the parameters %d" % (buf.size, need))
        at = 0
        for n in self._param_names(trainable_only):
            p = self._state.parameters[n].data
            self._state._set(n, buf[at:at + p.size].astype(p.dtype).reshape(p.shape))
            at += p.size

    def lazy_reset_grad(self):
        _lib_t().kiln_train_module_lazy_reset_grad(self._h)

    def _grad(self, name):
        d = _lib.TensorDesc()
        _check(_lib_t().kiln_train_module_get_grad(self._h, _enc(name), ctypes.byref(d)))
        return _view_to_numpy(d)

    def export_model_for_inferencing(self, inference_model_uri, graph_output_names=None):
        """Writes inference_model.onnx (beside the training model) with the trained parameters;
        graph_output_names keeps only those outputs."""
        names = list(graph_output_names or [])
        nm = (_cp * max(len(names), 1))(*[_enc(n) for n in names])
        _check(_lib_t().kiln_train_module_export(self._h, _enc(inference_model_uri), len(names), nm))

    def __del__(self):
        h, self._h = getattr(self, "_h", None), None
        if h:
            _L().kiln_train_module_close(h)


# ---- optimizer and scheduler ----

class Optimizer:
    """The checkpoint's optimizer over the module's trainable parameters (ONNX Runtime's
    api.Optimizer). kiln's optimizer is a fused kernel, so optimizer_model_uri_or_name is "adamw",
    "sgd" (which must match the checkpoint, or sets it when the checkpoint has none) or ONNX
    Runtime's optimizer-model path, which is accepted and not read."""

    def __init__(self, optimizer_model_uri_or_name, module):
        lib = _lib_t()
        state = module._state
        name = str(optimizer_model_uri_or_name).lower() if optimizer_model_uri_or_name is not None else ""
        if name in ("adamw", "sgd"):
            if not state.optimizer:
                state.set_optimizer(name)
            elif state.optimizer != name:
                raise KilnError("Optimizer(%r): the checkpoint's optimizer is %s" % (name, state.optimizer))
        h = ctypes.c_void_p()
        _check(lib.kiln_optimizer_open(module._h, ctypes.byref(h)))
        self._h, self._module = h.value, module

    def step(self):
        _check(_lib_t().kiln_optimizer_step(self._h))

    def set_learning_rate(self, learning_rate):
        _check(_lib_t().kiln_optimizer_set_lr(self._h, float(learning_rate)))

    def get_learning_rate(self):
        return _lib_t().kiln_optimizer_get_lr(self._h)

    def __del__(self):
        h, self._h = getattr(self, "_h", None), None
        if h:
            _L().kiln_optimizer_close(h)


class LinearLRScheduler:
    """ONNX Runtime's LinearLRScheduler: the learning rate rises linearly from 0 to initial_lr over
    warmup_step_count optimizer steps, then falls linearly to 0 at total_step_count."""

    def __init__(self, optimizer, warmup_step_count, total_step_count, initial_lr):
        h = ctypes.c_void_p()
        _check(_lib_t().kiln_lr_scheduler_linear(optimizer._h, int(warmup_step_count), int(total_step_count),
                                                 float(initial_lr), ctypes.byref(h)))
        self._h, self._optimizer = h.value, optimizer

    def step(self):
        _check(_lib_t().kiln_lr_scheduler_step(self._h))

    def __del__(self):
        h, self._h = getattr(self, "_h", None), None
        if h:
            _L().kiln_lr_scheduler_free(h)
