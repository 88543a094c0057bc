"""SessionOptions, as onnxruntime.SessionOptions has them (the part kiln acts on)."""

# onnxruntime.GraphOptimizationLevel values -> kiln's opt_level
ORT_DISABLE_ALL, ORT_ENABLE_BASIC, ORT_ENABLE_EXTENDED, ORT_ENABLE_ALL = 0, 1, 2, 99


class SessionOptions:
    def __init__(self):
        self.intra_op_num_threads = 0
        self.inter_op_num_threads = 0
        self.graph_optimization_level = ORT_ENABLE_ALL
        self.enable_profiling = False
        self.profile_file_prefix = "kiln_profile"
        self.log_severity_level = 2
        self._free_dims = {}
        self._config = {}

    def add_free_dimension_override_by_name(self, dim_name, dim_value):
        """Fixes a symbolic dimension for the session: shapes become static, so shape arithmetic
        folds away and graph capture can take the whole model."""
        if int(dim_value) < 0:
            raise ValueError("dimension override must be >= 0")
        self._free_dims[str(dim_name)] = int(dim_value)

    def add_session_config_entry(self, key, value):
        self._config[str(key)] = str(value)

    def get_session_config_entry(self, key):
        return self._config[str(key)]

    def _opt_level(self):
        level = int(self.graph_optimization_level)
        return 2 if level >= ORT_ENABLE_EXTENDED else level

    def _dim_spec(self):
        return ",".join("%s=%d" % kv for kv in self._free_dims.items()) or None
