"""onnxruntime.training.api over kiln (see kiln.training)."""
from ....training import CheckpointState, LinearLRScheduler, Module, Optimizer, Parameter  # noqa: F401
