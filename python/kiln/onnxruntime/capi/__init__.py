"""onnxruntime.capi over kiln (see kiln.onnxruntime)."""
