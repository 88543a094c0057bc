"""SessionOptions and RunOptions, as onnxruntime has them (the part kiln acts on)."""
import ctypes

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
        # kiln's own: the most bytes of intermediate values the session's runs (concurrent ones
        # together) may hold (0: no limit); a run that would pass it fails with KilnError instead
        # of exhausting the machine's memory
        self.memory_limit = 0
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


class RunOptions:
    """onnxruntime.RunOptions. Setting `terminate` to True, from any thread, stops the runs using
    these options at their next node or loop iteration (they raise KilnError "the run was
    terminated"); it stays set, as in onnxruntime, until set back to False. `timeout_ms` (kiln's
    own; 0: none) is a deadline for each run, counted from the call. The logging and tagging fields
    are accepted and ignored."""

    def __init__(self):
        self._flag = ctypes.c_int(0)  # kiln reads it through its address during the run
        self._terminate_address = ctypes.addressof(self._flag)
        self.timeout_ms = 0.0
        self.log_severity_level = 2
        self.log_verbosity_level = 0
        self.logid = ""
        self.only_execute_path_to_fetches = False
        self.synchronize_execution_providers = True
        self._config = {}

    @property
    def terminate(self):
        return bool(self._flag.value)

    @terminate.setter
    def terminate(self, value):
        self._flag.value = 1 if value else 0

    def add_run_config_entry(self, key, value):
        self._config[str(key)] = str(value)

    def get_run_config_entry(self, key):
        return self._config[str(key)]
