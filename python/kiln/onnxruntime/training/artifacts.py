"""onnxruntime.training.artifacts over kiln (see kiln.training.generate_artifacts)."""
from ...training import LossType, OptimType, generate_artifacts  # noqa: F401
