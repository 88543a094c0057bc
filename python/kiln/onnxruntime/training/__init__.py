"""onnxruntime.training over kiln: `from kiln.onnxruntime.training import artifacts` and
`from kiln.onnxruntime.training.api import CheckpointState, Module, Optimizer, LinearLRScheduler`
(kiln.training is the same API)."""
from . import api, artifacts  # noqa: F401
