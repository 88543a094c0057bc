"""Map values (ai.onnx.ml) for the ctypes path of the Python binding, as onnxruntime returns and
takes them: a map output is a dict, a sequence of maps (ZipMap's output) a list of dicts, and a
dict feeds a map input (DictVectorizer, CastMap). kiln._native does the same in C."""
import ctypes

import numpy as np

from . import _lib

_STRING, _INT64, _FLOAT, _DOUBLE = 8, 7, 1, 11
_SHORT = {_STRING: "string", _INT64: "int64", _FLOAT: "float", _DOUBLE: "double"}
_C_OF = {_INT64: ctypes.c_int64, _FLOAT: ctypes.c_float, _DOUBLE: ctypes.c_double}


def type_name(key_dtype, dtype, is_sequence):
    """onnxruntime's NodeArg type of a map: 'map(int64,tensor(float))', 'seq(map(...))'."""
    t = "map(%s,tensor(%s))" % (_SHORT.get(key_dtype, str(key_dtype)), _SHORT.get(dtype, str(dtype)))
    return "seq(%s)" % t if is_sequence else t


def _array(lib, ptr, dtype, n):
    if dtype == _STRING:
        return _lib.decode_strings(lib, ptr, n, "map string")
    if dtype not in _C_OF:
        raise RuntimeError("map of element type code %d" % dtype)
    return np.ctypeslib.as_array(ctypes.cast(ptr, ctypes.POINTER(_C_OF[dtype])), (n,)).tolist() if n else []


def _dict(lib, m):
    n = lib.kiln_value_map_size(m)
    keys = _array(lib, lib.kiln_value_map_keys(m), lib.kiln_value_map_key_dtype(m), n)
    values = _array(lib, lib.kiln_value_map_values(m), lib.kiln_value_dtype(m), n)
    return dict(zip(keys, values))


def to_python(lib, v):
    """The dict (a map) or list of dicts (a sequence of maps) of output v; None when v is neither."""
    if not lib.kiln_value_map_key_dtype(v):
        return None
    if lib.kiln_value_kind(v) == 3:
        return _dict(lib, v)
    # items are views valid until the next kiln_value_item call: each is read before the next
    return [_dict(lib, lib.kiln_value_item(v, i)) for i in range(lib.kiln_value_sequence_length(v))]


def _declared_map_types(session, name):
    for arg in session.get_inputs():
        if arg.name == name and arg.type.startswith("map("):
            key, val = arg.type[4:].split(",", 1)
            codes = {v: k for k, v in _SHORT.items()}
            return codes.get(key), codes.get(val[len("tensor("):-2])
    return None


def _map_value(lib, name, feed, types):
    """A kiln map value from dict `feed`: of the input's declared types, or else guessed from the
    Python types (the run then names the input that is no map)."""
    keys, values = list(feed.keys()), list(feed.values())
    if types is None:
        key = _STRING if keys and isinstance(keys[0], str) else _INT64
        first = values[0] if values else 0.0
        val = _STRING if isinstance(first, str) else _INT64 if isinstance(first, (int, np.integer)) else _FLOAT
        types = (key, val)
    keep = []

    def c_array(items, dtype, what):
        try:
            if dtype == _STRING:  # {bytes, length} views: NUL bytes kept
                arr, owners = _lib.string_views(items, "map input")
                keep.append(owners)
            else:
                conv = int if dtype == _INT64 else float
                arr = (_C_OF[dtype] * max(len(items), 1))(*[conv(x) for x in items])
        except (TypeError, ValueError) as exc:
            raise TypeError("input %r: map %s: %s" % (name, what, exc)) from None
        keep.append(arr)
        return ctypes.cast(arr, ctypes.c_void_p)

    out = ctypes.c_void_p()
    sized = [_lib.SIZED_STRING if t == _STRING else t for t in types]
    st = lib.kiln_value_map_new(sized[0], sized[1], len(keys), c_array(keys, types[0], "keys"),
                                c_array(values, types[1], "values"), ctypes.byref(out))
    if st != 0:
        from ._session import KilnError
        raise KilnError("input %r: %s" % (name, lib.kiln_last_error().decode(errors="replace")))
    return out


def run_with_maps(session, output_names, input_feed, run_options=None):
    """session.run for feeds that include dicts (map inputs), through kiln_run_values."""
    from ._session import KilnError, _call_run, _run_options_struct
    lib = session._lib
    names, values = [], []
    try:
        for name, feed in input_feed.items():
            if isinstance(feed, dict):
                v = _map_value(lib, name, feed, _declared_map_types(session, name))
            else:
                descs, keep = [], []
                session._host_desc(name, feed, [], descs, keep)
                v = ctypes.c_void_p()
                if lib.kiln_value_tensor_new(ctypes.byref(descs[0]), ctypes.byref(v)) != 0:
                    raise KilnError("input %r: %s" % (name, lib.kiln_last_error().decode(errors="replace")))
            names.append(str(name).encode())
            values.append(v)
        outs = [str(n).encode() for n in output_names] if output_names else []
        n_out = len(outs) if outs else len(session.get_outputs())
        results = (ctypes.c_void_p * max(n_out, 1))()
        ro, flag, user_flag = _run_options_struct(run_options)
        h = session._handle()
        c_names = (ctypes.c_char_p * max(len(names), 1))(*names)
        c_values = (ctypes.c_void_p * max(len(values), 1))(*values)
        c_outs = (ctypes.c_char_p * max(len(outs), 1))(*outs)
        st = _call_run(lib, flag, user_flag, results, n_out, lambda: lib.kiln_run_values(
            h, ctypes.byref(ro), len(names), c_names, c_values, len(outs), c_outs, results))
        if st != 0:
            raise KilnError(lib.kiln_session_error(h).decode(errors="replace"))
        try:
            return [session._to_python(results[i]) for i in range(n_out)]
        finally:
            for i in range(n_out):
                lib.kiln_value_free(results[i])
    finally:
        for v in values:
            lib.kiln_value_free(v)
