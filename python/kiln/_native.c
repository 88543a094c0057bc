/* kiln._native — the hot path of the Python binding as a CPython extension.
 *
 * The ctypes binding (_session.py) spends tens of microseconds per run() building ctypes arrays and
 * structs, crossing ctypes' call machinery once per output accessor, and copying every output. This
 * module does the same work in C: feeds are read straight from the numpy arrays, kiln_run is called
 * with the GIL released (so other Python threads, and runs of the same session from several
 * threads, proceed), and numeric outputs are handed to numpy without a copy — the array's base is
 * a capsule that frees the kiln_value when the last array using it goes away.
 *
 * What stays in Python (_session.py): option and provider handling, NodeArg construction and the
 * KilnError class, so the two paths share one definition of the public behaviour. The module is
 * linked against libkiln.so by soname; _lib.py loads the chosen libkiln first, so this module
 * binds to that one (also to the sanitized library that KILN_LIBRARY names in scripts/sanitize.sh).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#define NPY_NO_DEPRECATED_API NPY_1_7_API_VERSION
#include <numpy/arrayobject.h>

#include <limits.h>
#include <stdint.h>
#include <string.h>

#include "kiln.h"

/* numpy's shape array is handed to kiln as its int64 dims without a copy. */
_Static_assert(sizeof(npy_intp) == sizeof(int64_t), "npy_intp must be 64-bit");

/* Most models have a handful of inputs and outputs: the per-call arrays live on the stack up to
 * this many, so a run allocates nothing in the binding beyond what numpy needs for the outputs. */
#define SMALL 8

/* _session.KilnError, registered at import by _session (one class for both paths). */
static PyObject *kiln_error_class;

/* raise_kiln with kiln's status code kept as the exception's `status` attribute (bindings map it
 * to their own error classes, as kiln.onnxruntime does to ONNX Runtime's). */
static PyObject *raise_kiln_status(kiln_status code, const char *msg) {
    PyObject *cls = kiln_error_class ? kiln_error_class : PyExc_RuntimeError;
    PyObject *text = PyUnicode_DecodeUTF8(msg ? msg : "", msg ? (Py_ssize_t)strlen(msg) : 0, "replace");
    PyObject *exc = text ? PyObject_CallOneArg(cls, text) : NULL;
    Py_XDECREF(text);
    if (!exc) return NULL;
    PyObject *c = PyLong_FromLong((long)code);
    if (!c || PyObject_SetAttrString(exc, "status", c) < 0) PyErr_Clear(); /* the message still goes */
    Py_XDECREF(c);
    PyErr_SetObject(cls, exc);
    Py_DECREF(exc);
    return NULL;
}

static PyObject *raise_kiln(const char *msg) {
    /* kiln's messages are UTF-8 but may quote bytes from a model; never fail on decoding them */
    PyObject *text = PyUnicode_DecodeUTF8(msg ? msg : "", msg ? (Py_ssize_t)strlen(msg) : 0, "replace");
    if (text) {
        PyErr_SetObject(kiln_error_class ? kiln_error_class : PyExc_RuntimeError, text);
        Py_DECREF(text);
    }
    return NULL;
}

/* ------------------------------------------------------------------ dtypes */

/* kiln dtype code of a numpy dtype, or 0 when kiln cannot take it. Decided by kind and size, not
 * by type number, so that e.g. longlong and int64 (distinct numbers, same type) both map; a
 * byte-swapped or structured dtype is refused, as the ctypes path's dtype lookup does. */
static int code_of_descr(PyArray_Descr *d, npy_intp size) { /* size: PyArray_ITEMSIZE, in numpy 1 and 2 */
    if (!PyArray_ISNBO(d->byteorder) || PyDataType_HASFIELDS(d) || PyDataType_HASSUBARRAY(d)) return 0;
    switch (d->kind) {
    case 'b': return size == 1 ? KILN_DTYPE_BOOL : 0;
    case 'f': return size == 4 ? KILN_DTYPE_FLOAT : size == 8 ? KILN_DTYPE_DOUBLE : size == 2 ? KILN_DTYPE_FLOAT16 : 0;
    case 'i': return size == 1 ? KILN_DTYPE_INT8 : size == 2 ? KILN_DTYPE_INT16 : size == 4 ? KILN_DTYPE_INT32
                     : size == 8 ? KILN_DTYPE_INT64 : 0;
    case 'u': return size == 1 ? KILN_DTYPE_UINT8 : size == 2 ? KILN_DTYPE_UINT16 : size == 4 ? KILN_DTYPE_UINT32
                     : size == 8 ? KILN_DTYPE_UINT64 : 0;
    case 'c': return size == 8 ? KILN_DTYPE_COMPLEX64 : size == 16 ? KILN_DTYPE_COMPLEX128 : 0;
    default: return 0;
    }
}

/* numpy type number for a kiln output dtype, or -1 (strings and bfloat16 are converted apart). */
static int npy_of_code(int code) {
    switch (code) {
    case KILN_DTYPE_FLOAT: return NPY_FLOAT32;
    case KILN_DTYPE_UINT8: return NPY_UINT8;
    case KILN_DTYPE_INT8: return NPY_INT8;
    case KILN_DTYPE_UINT16: return NPY_UINT16;
    case KILN_DTYPE_INT16: return NPY_INT16;
    case KILN_DTYPE_INT32: return NPY_INT32;
    case KILN_DTYPE_INT64: return NPY_INT64;
    case KILN_DTYPE_BOOL: return NPY_BOOL;
    case KILN_DTYPE_FLOAT16: return NPY_FLOAT16;
    case KILN_DTYPE_DOUBLE: return NPY_FLOAT64;
    case KILN_DTYPE_UINT32: return NPY_UINT32;
    case KILN_DTYPE_UINT64: return NPY_UINT64;
    case KILN_DTYPE_COMPLEX64: return NPY_COMPLEX64;
    case KILN_DTYPE_COMPLEX128: return NPY_COMPLEX128;
    default: return -1;
    }
}

/* ------------------------------------------------------------------ outputs */

/* A kiln string element (its full length: NUL bytes included) as str. Bytes that are not UTF-8
 * fail as onnxruntime's do, but with a kiln error that says where, never a bare UnicodeDecodeError. */
static PyObject *output_str(const char *s, const char *what, long long i) {
    size_t len = kiln_string_length(s);
    PyObject *u = PyUnicode_DecodeUTF8(s ? s : "", (Py_ssize_t)len, NULL);
    if (u || !PyErr_ExceptionMatches(PyExc_UnicodeDecodeError)) return u;
    PyObject *t, *v, *tb;
    PyErr_Fetch(&t, &v, &tb);
    Py_ssize_t at = 0;
    if (v) PyUnicodeDecodeError_GetStart(v, &at);
    Py_XDECREF(t); Py_XDECREF(v); Py_XDECREF(tb);
    char msg[256];
    snprintf(msg, sizeof msg, "%s element %lld is not valid UTF-8 (byte 0x%02x at offset %zd of %zu), so it cannot "
             "become a Python str", what, i, at >= 0 && (size_t)at < len ? (unsigned char)s[at] : 0, at, len);
    return raise_kiln(msg);
}

static void value_capsule_free(PyObject *cap) {
    kiln_value_free((kiln_value *)PyCapsule_GetPointer(cap, "kiln.value"));
}

/* The numpy array for tensor v. Numeric data is not copied: the array's base is *cap, a capsule
 * owning `owner` (the kiln_value that holds v's buffer: v itself, or the sequence v is an item of),
 * made on first need so that outputs converted by copy (strings, bfloat16, empty) need none. */
static PyObject *tensor_array(const kiln_value *v, kiln_value *owner, PyObject **cap) {
    int code = (int)kiln_value_dtype(v);
    int rank = kiln_value_rank(v);
    const int64_t *dims = kiln_value_dims(v);
    npy_intp shape[16];
    if (rank < 0 || rank > 16) return raise_kiln("output of unexpected rank");
    npy_intp n = 1;
    for (int i = 0; i < rank; i++) {
        shape[i] = (npy_intp)dims[i];
        n *= shape[i];
    }
    const void *data = kiln_value_data(v);

    if (code == KILN_DTYPE_STRING) { /* an object array of str, as onnxruntime returns */
        PyObject *arr = PyArray_SimpleNew(rank, shape, NPY_OBJECT);
        if (!arr || n == 0) return arr;
        PyObject **dst = (PyObject **)PyArray_DATA((PyArrayObject *)arr);
        const char *const *src = (const char *const *)data;
        for (npy_intp i = 0; i < n; i++) {
            PyObject *u = output_str(src ? src[i] : NULL, "string output", (long long)i);
            if (!u) {
                Py_DECREF(arr);
                return NULL;
            }
            Py_XSETREF(dst[i], u);
        }
        return arr;
    }
    if (code == KILN_DTYPE_BFLOAT16) { /* numpy has no bfloat16: widen to float32 (exact) */
        if (n == 0 || !data) return PyArray_ZEROS(rank, shape, NPY_FLOAT32, 0);
        PyObject *arr = PyArray_SimpleNew(rank, shape, NPY_FLOAT32);
        if (!arr) return NULL;
        const uint16_t *src = (const uint16_t *)data;
        uint32_t *dst = (uint32_t *)PyArray_DATA((PyArrayObject *)arr);
        for (npy_intp i = 0; i < n; i++) dst[i] = (uint32_t)src[i] << 16;
        return arr;
    }
    int npy = npy_of_code(code);
    if (npy < 0) {
        PyErr_Format(kiln_error_class ? kiln_error_class : PyExc_RuntimeError,
                     "output of type code %d cannot be returned to numpy", code);
        return NULL;
    }
    if (n == 0 || !data) return PyArray_ZEROS(rank, shape, npy, 0);
    if (!*cap) {
        *cap = PyCapsule_New(owner, "kiln.value", value_capsule_free);
        if (!*cap) return NULL;
    }
    /* kiln's output buffers are the caller's own (moved out of the run or copied), so the array
     * may be writable like the copies the ctypes path returns */
    PyObject *arr = PyArray_New(&PyArray_Type, rank, shape, npy, NULL, (void *)data, 0, NPY_ARRAY_CARRAY, NULL);
    if (!arr) return NULL;
    Py_INCREF(*cap);
    if (PyArray_SetBaseObject((PyArrayObject *)arr, *cap) < 0) { /* it took the reference either way */
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

/* One element of a map's keys or values as a Python object (what onnxruntime returns: int, float
 * or str). */
static PyObject *map_elem(kiln_dtype dt, const void *p, size_t i) {
    switch (dt) {
    case KILN_DTYPE_INT64: return PyLong_FromLongLong(((const int64_t *)p)[i]);
    case KILN_DTYPE_FLOAT: return PyFloat_FromDouble(((const float *)p)[i]);
    case KILN_DTYPE_DOUBLE: return PyFloat_FromDouble(((const double *)p)[i]);
    case KILN_DTYPE_STRING: return output_str(((const char *const *)p)[i], "map string", (long long)i);
    default: return raise_kiln("a map of an element type Python cannot take");
    }
}

/* A map value as a dict. */
static PyObject *map_dict(const kiln_value *m) {
    size_t n = kiln_value_map_size(m);
    kiln_dtype kt = kiln_value_map_key_dtype(m), vt = kiln_value_dtype(m);
    const void *keys = kiln_value_map_keys(m), *vals = kiln_value_map_values(m);
    PyObject *d = PyDict_New();
    for (size_t i = 0; d && i < n; i++) {
        PyObject *k = map_elem(kt, keys, i), *v = k ? map_elem(vt, vals, i) : NULL;
        if (!v || PyDict_SetItem(d, k, v) < 0) Py_CLEAR(d);
        Py_XDECREF(k);
        Py_XDECREF(v);
    }
    return d;
}

/* A map output as a dict, a sequence of maps (ZipMap) as a list of dicts; v is freed. */
static PyObject *maps_to_python(kiln_value *v) {
    PyObject *res;
    if (kiln_value_kind(v) == KILN_VALUE_MAP) {
        res = map_dict(v);
    } else {
        size_t len = kiln_value_sequence_length(v);
        res = PyList_New((Py_ssize_t)len);
        for (size_t i = 0; res && i < len; i++) {
            PyObject *d = map_dict(kiln_value_item(v, i));
            if (!d) Py_CLEAR(res);
            else PyList_SET_ITEM(res, (Py_ssize_t)i, d);
        }
    }
    kiln_value_free(v);
    return res;
}

/* Converts output v and gives up the binding's ownership of it: either a capsule now owns it (an
 * array still uses its buffer) or it is freed here. */
static PyObject *value_to_python(kiln_value *v) {
    PyObject *cap = NULL, *res = NULL;
    int kind = kiln_value_kind(v);
    if (kiln_value_map_key_dtype(v) != KILN_DTYPE_UNDEFINED) return maps_to_python(v);
    if (kind == KILN_VALUE_NONE) {
        res = Py_NewRef(Py_None);
    } else if (kind == KILN_VALUE_SEQUENCE) {
        size_t len = kiln_value_sequence_length(v);
        res = PyList_New((Py_ssize_t)len);
        for (size_t i = 0; res && i < len; i++) {
            /* items are views into v's tensors: they share v's capsule */
            PyObject *a = tensor_array(kiln_value_item(v, i), v, &cap);
            if (!a) Py_CLEAR(res);
            else PyList_SET_ITEM(res, (Py_ssize_t)i, a);
        }
    } else {
        res = tensor_array(v, v, &cap);
    }
    if (cap) Py_DECREF(cap); /* the arrays hold it now; the last one frees v */
    else kiln_value_free(v);
    return res;
}

/* ------------------------------------------------------------------ Ctrl-C and run options */

/* Python runs its SIGINT handler only in the main thread, between bytecodes: never while a run
 * holds no GIL. So kiln's SIGINT handler sits in front of Python's (kiln_sigint_chain) and, while a
 * main-thread run is in flight, also sets that run's terminate flag; the run stops, and the
 * KeyboardInterrupt that Python's handler recorded is raised when it returns. The chain is put
 * back whenever signal.getsignal(SIGINT) has changed (signal.signal replaces kiln's handler). */
static PyObject *getsignal_fn, *sigint_number, *chained_handler;
static unsigned long main_thread_ident;
static int chained;

/* 1 when a SIGINT during this thread's run must stop it (the main thread, kiln's handler in place). */
static int sigint_reaches_run(void) {
    if (!getsignal_fn || PyThread_get_thread_ident() != main_thread_ident) return 0;
    PyObject *h = PyObject_CallOneArg(getsignal_fn, sigint_number);
    if (!h) {
        PyErr_Clear();
        return 0;
    }
    if (h == chained_handler) {
        Py_DECREF(h);
        return chained;
    }
    Py_XSETREF(chained_handler, h);
    chained = kiln_sigint_chain();
    return chained;
}

/* A kiln.RunOptions: the address of its terminate flag and its timeout_ms. */
static int read_run_options(PyObject *ro, volatile int **flag, double *timeout_ms) {
    PyObject *addr = PyObject_GetAttrString(ro, "_terminate_address");
    if (!addr) {
        if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
            PyErr_Clear();
            PyErr_Format(PyExc_TypeError, "run_options must be a kiln.RunOptions, not %.100s", Py_TYPE(ro)->tp_name);
        }
        return -1;
    }
    *flag = (volatile int *)PyLong_AsVoidPtr(addr);
    Py_DECREF(addr);
    if (!*flag && PyErr_Occurred()) return -1;
    PyObject *t = PyObject_GetAttrString(ro, "timeout_ms");
    if (!t) return -1;
    *timeout_ms = t == Py_None ? 0 : PyFloat_AsDouble(t);
    Py_DECREF(t);
    if (*timeout_ms == -1 && PyErr_Occurred()) return -1;
    if (!(*timeout_ms >= 0)) {
        PyErr_Format(PyExc_ValueError, "RunOptions.timeout_ms must be >= 0 (0: no deadline), got %g", *timeout_ms);
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------ the Session type */

typedef struct {
    PyObject_HEAD
    kiln_session *s;
    PyObject *model;   /* the model bytes: initializers point into them for the session's life */
    size_t n_outputs;
    int running;       /* runs in flight with the GIL released (counted under the GIL) */
    int closed;        /* close() was called; if runs were in flight, the last one closes s */
} Session;

static void session_release(Session *self) {
    if (self->s) kiln_session_close(self->s);
    self->s = NULL;
    Py_CLEAR(self->model);
}

static PyObject *Session_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    PyObject *model, *threads;
    int is_bytes, opt_level, verbose;
    unsigned int providers;
    if (kwargs && PyDict_GET_SIZE(kwargs)) {
        PyErr_SetString(PyExc_TypeError, "Session() takes no keyword arguments");
        return NULL;
    }
    int flags = 0; /* bit 0: graph capture, bit 1: float16 */
    const char *dims = NULL;
    unsigned long long memory_limit = 0;
    unsigned long long opt_address = 0; /* a complete kiln_options the caller filled (ctypes), or 0 */
    if (!PyArg_ParseTuple(args, "SpOiIp|izKK:Session", &model, &is_bytes, &threads, &opt_level, &providers, &verbose,
                          &flags, &dims, &memory_limit, &opt_address))
        return NULL;
    kiln_options opt;
    kiln_options_init(&opt);
    if (threads != Py_None) { /* None keeps kiln's default */
        long t = PyLong_AsLong(threads);
        if (t == -1 && PyErr_Occurred()) return NULL;
        if (t < INT_MIN || t > INT_MAX) {
            PyErr_SetString(PyExc_OverflowError, "threads out of range");
            return NULL;
        }
        opt.threads = (int)t;
    }
    opt.opt_level = opt_level;
    opt.providers = providers;
    opt.verbose = verbose;
    opt.graph_capture = flags & 1 ? 1 : flags & 4 ? -1 : 0;
    opt.float16 = (flags >> 1) & 1;
    opt.dim_overrides = dims; /* read while the session opens, below */
    opt.memory_limit = (size_t)memory_limit;
    if (opt_address) opt = *(const kiln_options *)(uintptr_t)opt_address; /* read while opening, below */

    Session *self = (Session *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    const char *bytes = PyBytes_AS_STRING(model);
    size_t size = (size_t)PyBytes_GET_SIZE(model);
    kiln_session *s = NULL;
    kiln_status st;
    const char *msg = NULL;
    Py_BEGIN_ALLOW_THREADS /* loading and planning a large model takes a while */
    st = is_bytes ? kiln_session_open_bytes(bytes, size, &opt, &s) : kiln_session_open(bytes, &opt, &s);
    if (st != KILN_OK) msg = kiln_last_error(); /* per thread: read it on the thread that failed */
    Py_END_ALLOW_THREADS
    if (st != KILN_OK) {
        Py_DECREF(self);
        return raise_kiln_status(st, msg);
    }
    self->s = s;
    if (is_bytes) self->model = Py_NewRef(model);
    self->n_outputs = kiln_session_output_count(s);
    return (PyObject *)self;
}

static void Session_dealloc(Session *self) {
    /* a run in flight holds a reference to self, so nothing can be running here */
    session_release(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyObject *Session_close(Session *self, PyObject *unused) {
    if (!self->closed) {
        self->closed = 1;
        if (!self->running) session_release(self);
    }
    Py_RETURN_NONE;
}

static PyObject *str_or_none(const char *s) {
    if (!s) Py_RETURN_NONE;
    return PyUnicode_FromString(s);
}

/* io(is_output) -> [(name, dtype, rank, dims, dim_names, is_sequence, map_key_dtype)], _session
 * builds NodeArgs (map_key_dtype is 0 unless the value is a map or a sequence of maps). */
static PyObject *Session_io(Session *self, PyObject *arg) {
    int is_output = PyObject_IsTrue(arg);
    if (is_output < 0) return NULL;
    if (!self->s) return raise_kiln("session is closed");
    size_t n = is_output ? kiln_session_output_count(self->s) : kiln_session_input_count(self->s);
    PyObject *list = PyList_New((Py_ssize_t)n);
    for (size_t i = 0; list && i < n; i++) {
        kiln_io_info info;
        memset(&info, 0, sizeof info);
        kiln_status st = is_output ? kiln_session_output_info(self->s, i, &info)
                                   : kiln_session_input_info(self->s, i, &info);
        if (st != KILN_OK) {
            Py_DECREF(list);
            return raise_kiln(kiln_last_error());
        }
        int rank = info.rank > 0 ? info.rank : 0;
        PyObject *dims = PyTuple_New(rank), *names = PyTuple_New(rank);
        for (int d = 0; dims && names && d < rank; d++) {
            PyObject *dv = PyLong_FromLongLong(info.dims[d]);
            PyObject *nv = str_or_none(info.dim_names ? info.dim_names[d] : NULL);
            if (!dv || !nv) {
                Py_XDECREF(dv);
                Py_XDECREF(nv);
                Py_CLEAR(dims);
                break;
            }
            PyTuple_SET_ITEM(dims, d, dv);
            PyTuple_SET_ITEM(names, d, nv);
        }
        PyObject *name = dims && names ? PyUnicode_FromString(info.name ? info.name : "") : NULL;
        PyObject *t = name ? Py_BuildValue("(NiiNNOi)", name, (int)info.dtype, info.rank, dims, names,
                                           info.is_sequence ? Py_True : Py_False,
                                           info.is_map ? (int)info.map_key_dtype : 0)
                           : NULL;
        if (!t) {
            if (!name) {
                Py_XDECREF(dims);
                Py_XDECREF(names);
            }
            Py_DECREF(list);
            return NULL;
        }
        PyList_SET_ITEM(list, (Py_ssize_t)i, t);
    }
    return list;
}

/* The kiln_session pointer, for the metadata calls the Python layer makes through ctypes. */
static PyObject *Session_handle(Session *self, PyObject *unused) {
    return PyLong_FromVoidPtr(self->s);
}

static PyObject *Session_plan_stats(Session *self, PyObject *unused) {
    kiln_plan_stats st;
    memset(&st, 0, sizeof st); /* a closed session reports zeros, as the ctypes path does */
    if (self->s) kiln_session_plan_stats(self->s, &st);
    return Py_BuildValue("(nnnnnn)", (Py_ssize_t)st.arena_bytes, (Py_ssize_t)st.naive_bytes,
                         (Py_ssize_t)st.initializer_bytes, (Py_ssize_t)st.copied_initializer_bytes,
                         (Py_ssize_t)st.nodes, (Py_ssize_t)st.folded_nodes);
}

/* What one feed keeps alive until kiln_run returns. */
typedef struct {
    PyObject *name;    /* str(key): held, since kiln reads its UTF-8 with the GIL released, while
                        * another thread may change the feed dict */
    PyObject *arr;     /* the (contiguous) array whose buffer kiln reads */
    PyObject *strs;    /* string feeds: the bytes / str objects whose bytes kiln reads */
    kiln_string *ptrs; /* string feeds: the {bytes, length} array */
    kiln_value *value; /* a dict feed's map (then fed with kiln_run_values), or a tensor feed's
                        * copy for such a run */
} feed_keep;

/* UTF-8 of str(obj); *hold gets a reference to the str object that owns it (the caller releases it
 * after kiln_run). NUL-terminated: like ctypes' c_char_p, kiln reads it up to the first NUL. */
static const char *utf8_of(PyObject *obj, PyObject **hold) {
    Py_ssize_t len;
    *hold = PyUnicode_CheckExact(obj) ? Py_NewRef(obj) : PyObject_Str(obj);
    if (!*hold) return NULL;
    return PyUnicode_AsUTF8AndSize(*hold, &len);
}

/* The bytes of a string element: bytes as they are, str (or str(obj)) as UTF-8, NUL bytes kept.
 * *hold gets the object owning them. -1 with a kiln error when a str holds what UTF-8 cannot
 * encode (a lone surrogate), which onnxruntime refuses with UnicodeEncodeError. */
static int element_bytes(PyObject *item, const char *what, Py_ssize_t i, PyObject **hold, kiln_string *out) {
    if (PyBytes_Check(item)) {
        *hold = Py_NewRef(item);
        out->data = PyBytes_AS_STRING(item);
        out->len = (size_t)PyBytes_GET_SIZE(item);
        return 0;
    }
    *hold = PyUnicode_Check(item) ? Py_NewRef(item) : PyObject_Str(item);
    if (!*hold) return -1;
    Py_ssize_t len;
    out->data = PyUnicode_AsUTF8AndSize(*hold, &len);
    out->len = (size_t)len;
    if (out->data) return 0;
    if (PyErr_ExceptionMatches(PyExc_UnicodeEncodeError)) {
        PyErr_Clear();
        char msg[256];
        snprintf(msg, sizeof msg, "%s: string %zd cannot be encoded as UTF-8 (it holds a lone surrogate); pass bytes "
                 "to give other bytes", what, i);
        raise_kiln(msg);
    }
    Py_CLEAR(*hold);
    return -1;
}

/* A string feed: every element's bytes (see element_bytes), as kiln_string views. */
static int string_feed(PyArrayObject *arr, feed_keep *k, kiln_tensor_desc *desc, const char *name) {
    PyArrayObject *flat = (PyArrayObject *)PyArray_Ravel(arr, NPY_CORDER); /* contiguous, 1-D */
    if (!flat) return -1;
    npy_intp n = PyArray_SIZE(flat);
    k->strs = PyList_New(n);
    k->ptrs = PyMem_Malloc(sizeof(kiln_string) * (size_t)(n ? n : 1));
    if (!k->strs || !k->ptrs) {
        Py_DECREF(flat);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return -1;
    }
    char *p = PyArray_BYTES(flat);
    npy_intp step = PyArray_ITEMSIZE(flat);
    for (npy_intp i = 0; i < n; i++, p += step) {
        PyObject *item = PyArray_GETITEM(flat, p), *s; /* 'S' / 'U' items lose only numpy's NUL padding */
        if (!item) goto fail;
        char what[300];
        snprintf(what, sizeof what, "input '%s'", name);
        int rc = element_bytes(item, what, (Py_ssize_t)i, &s, &k->ptrs[i]);
        Py_DECREF(item);
        if (rc < 0) goto fail;
        PyList_SET_ITEM(k->strs, i, s);
    }
    Py_DECREF(flat);
    desc->dtype = KILN_DTYPE_SIZED_STRING;
    desc->rank = PyArray_NDIM(arr);
    desc->dims = (const int64_t *)PyArray_DIMS(arr);
    desc->data = k->ptrs;
    desc->memory = KILN_MEMORY_HOST;
    return 0;
fail:
    Py_DECREF(flat);
    return -1;
}

/* The key and value types of map input `name` as the model declares them; 0 when it is no map. */
static void declared_map_types(kiln_session *s, const char *name, kiln_dtype *key, kiln_dtype *val) {
    *key = *val = KILN_DTYPE_UNDEFINED;
    for (size_t i = 0, n = kiln_session_input_count(s); i < n; i++) {
        kiln_io_info info;
        if (kiln_session_input_info(s, i, &info) == KILN_OK && info.is_map && !info.is_sequence &&
            !strcmp(info.name, name)) {
            *key = info.map_key_dtype;
            *val = info.dtype;
        }
    }
}

/* Element i of dict keys or values, converted to dt, written to arr (int64 / float / double /
 * char* held in k->strs). -1 with an exception set when it does not convert. */
static int map_elem_store(PyObject *o, kiln_dtype dt, void *arr, Py_ssize_t i, feed_keep *k) {
    if (dt == KILN_DTYPE_STRING) {
        PyObject *hold;
        if (element_bytes(o, "map input", i, &hold, &((kiln_string *)arr)[i]) < 0) return -1;
        int rc = PyList_Append(k->strs, hold);
        Py_DECREF(hold);
        return rc;
    }
    if (dt == KILN_DTYPE_INT64) {
        long long v = PyLong_AsLongLong(o);
        if (v == -1 && PyErr_Occurred()) return -1;
        ((int64_t *)arr)[i] = v;
        return 0;
    }
    double v = PyFloat_AsDouble(o);
    if (v == -1.0 && PyErr_Occurred()) return -1;
    if (dt == KILN_DTYPE_FLOAT) ((float *)arr)[i] = (float)v;
    else ((double *)arr)[i] = v;
    return 0;
}

/* A dict feed: a kiln map of the input's declared key and value types (or, for an input that is no
 * map, of types guessed from the first entry, so that the run names the input). */
static int map_feed(kiln_session *s, PyObject *dict, feed_keep *k, const char *name) {
    kiln_dtype kt, vt;
    declared_map_types(s, name, &kt, &vt);
    Py_ssize_t n = PyDict_GET_SIZE(dict), pos = 0, i = 0;
    PyObject *key, *value;
    if (!kt) {
        kt = KILN_DTYPE_INT64;
        vt = KILN_DTYPE_FLOAT;
        if (PyDict_Next(dict, &pos, &key, &value)) {
            kt = PyUnicode_Check(key) || PyBytes_Check(key) ? KILN_DTYPE_STRING : KILN_DTYPE_INT64;
            vt = PyUnicode_Check(value) ? KILN_DTYPE_STRING : PyLong_Check(value) ? KILN_DTYPE_INT64 : KILN_DTYPE_FLOAT;
        }
        pos = 0;
    }
    size_t ks = kt == KILN_DTYPE_STRING ? sizeof(kiln_string) : 8,
           vs = vt == KILN_DTYPE_STRING ? sizeof(kiln_string) : kiln_dtype_size(vt);
    void *keys = PyMem_Malloc(ks * (size_t)(n ? n : 1)), *vals = PyMem_Malloc(vs * (size_t)(n ? n : 1));
    k->strs = PyList_New(0);
    int rc = -1;
    if (!keys || !vals || !k->strs) {
        if (!PyErr_Occurred()) PyErr_NoMemory();
        goto out;
    }
    /* the dict is read by index into C arrays first: conversions may run Python code */
    PyObject *items = PyDict_Items(dict);
    if (!items) goto out;
    n = PyList_GET_SIZE(items);
    for (i = 0; i < n; i++) {
        PyObject *pair = PyList_GET_ITEM(items, i);
        if (map_elem_store(PyTuple_GET_ITEM(pair, 0), kt, keys, i, k) < 0 ||
            map_elem_store(PyTuple_GET_ITEM(pair, 1), vt, vals, i, k) < 0) {
            Py_DECREF(items);
            if (kiln_error_class && PyErr_ExceptionMatches(kiln_error_class)) goto out; /* it says what is wrong */
            PyObject *t, *v, *tb;
            PyErr_Fetch(&t, &v, &tb);
            PyErr_Format(PyExc_TypeError, "input '%s': map entries must be %s keys and %s values", name,
                         kiln_dtype_name(kt), kiln_dtype_name(vt));
            Py_XDECREF(t); Py_XDECREF(v); Py_XDECREF(tb);
            goto out;
        }
    }
    Py_DECREF(items);
    /* strings go as {bytes, length}: NUL bytes kept */
    if (kiln_value_map_new(kt == KILN_DTYPE_STRING ? KILN_DTYPE_SIZED_STRING : kt,
                           vt == KILN_DTYPE_STRING ? KILN_DTYPE_SIZED_STRING : vt, (size_t)n, keys, vals,
                           &k->value) != KILN_OK) {
        PyObject *msg = PyUnicode_FromFormat("input '%s': %s", name, kiln_last_error());
        if (msg) {
            PyErr_SetObject(kiln_error_class ? kiln_error_class : PyExc_RuntimeError, msg);
            Py_DECREF(msg);
        }
        goto out;
    }
    rc = 0;
out:
    PyMem_Free(keys);
    PyMem_Free(vals);
    return rc;
}

/* Fills desc (and k) for one feed; -1 with an exception set on failure. */
static int make_feed(kiln_session *s, PyObject *key, PyObject *value, feed_keep *k, kiln_tensor_desc *desc,
                     const char **name) {
    if (PyDict_Check(value)) {
        *name = utf8_of(key, &k->name);
        if (!*name) return -1;
        memset(desc, 0, sizeof *desc);
        return map_feed(s, value, k, *name);
    }
    /* value before name, then the dtype check: the ctypes path's order, so a feed with several
     * faults raises the same error on both paths */
    PyArrayObject *arr;
    if (PyArray_Check(value)) arr = (PyArrayObject *)Py_NewRef(value);
    else if (!(arr = (PyArrayObject *)PyArray_FROM_O(value))) return -1; /* np.asarray */
    k->arr = (PyObject *)arr;
    *name = utf8_of(key, &k->name);
    if (!*name) return -1;
    PyArray_Descr *d = PyArray_DESCR(arr);
    if (d->kind == 'U' || d->kind == 'S' || d->kind == 'O') return string_feed(arr, k, desc, *name);
    int code = code_of_descr(d, PyArray_ITEMSIZE(arr));
    if (!code) {
        PyObject *msg = PyUnicode_FromFormat("input %R: unsupported numpy dtype %S", key, (PyObject *)d);
        if (msg) {
            PyErr_SetObject(kiln_error_class ? kiln_error_class : PyExc_RuntimeError, msg);
            Py_DECREF(msg);
        }
        return -1;
    }
    if (!PyArray_ISCARRAY_RO(arr)) { /* kiln reads dense, aligned row-major data */
        PyArrayObject *c = (PyArrayObject *)PyArray_FromAny((PyObject *)arr, NULL, 0, 0, NPY_ARRAY_CARRAY_RO, NULL);
        if (!c) return -1;
        Py_SETREF(k->arr, (PyObject *)c);
        arr = c;
    }
    desc->dtype = (kiln_dtype)code;
    desc->rank = PyArray_NDIM(arr);
    desc->dims = (const int64_t *)PyArray_DIMS(arr);
    desc->data = PyArray_DATA(arr);
    desc->memory = KILN_MEMORY_HOST;
    return 0;
}

static void feeds_release(feed_keep *keep, size_t n) {
    for (size_t i = 0; i < n; i++) {
        Py_XDECREF(keep[i].name);
        Py_XDECREF(keep[i].arr);
        Py_XDECREF(keep[i].strs);
        PyMem_Free(keep[i].ptrs);
        kiln_value_free(keep[i].value);
    }
}

/* run(output_names, input_feed, run_options=None) -> list of outputs */
static PyObject *Session_run(Session *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames) {
    static const char *const kw[3] = {"output_names", "input_feed", "run_options"};
    PyObject *a[3] = {NULL, NULL, NULL};
    if (nargs > 3) {
        PyErr_Format(PyExc_TypeError, "run() takes at most 3 arguments (%zd given)", nargs);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < nargs; i++) a[i] = args[i];
    for (Py_ssize_t j = 0, nk = kwnames ? PyTuple_GET_SIZE(kwnames) : 0; j < nk; j++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, j);
        int k = 0;
        while (k < 3 && PyUnicode_CompareWithASCIIString(key, kw[k]) != 0) k++;
        if (k == 3) {
            PyErr_Format(PyExc_TypeError, "run() got an unexpected keyword argument %R", key);
            return NULL;
        }
        if (a[k]) {
            PyErr_Format(PyExc_TypeError, "run() got multiple values for argument '%s'", kw[k]);
            return NULL;
        }
        a[k] = args[nargs + j];
    }
    for (int k = 0; k < 2; k++)
        if (!a[k]) {
            PyErr_Format(PyExc_TypeError, "run() missing required argument '%s'", kw[k]);
            return NULL;
        }
    if (!self->s || self->closed) return raise_kiln("session is closed");
    PyObject *out_arg = a[0], *feed = a[1];
    volatile int *user_flag = NULL;
    double timeout_ms = 0;
    if (a[2] && a[2] != Py_None && read_run_options(a[2], &user_flag, &timeout_ms) < 0) return NULL;

    PyObject *result = NULL, *items = NULL, *out_seq = NULL;
    const char *in_names_small[SMALL], *out_names_small[SMALL];
    kiln_tensor_desc descs_small[SMALL];
    feed_keep keep_small[SMALL];
    PyObject *out_hold_small[SMALL];
    kiln_value *results_small[SMALL];
    const char **in_names = in_names_small, **out_names = out_names_small;
    kiln_tensor_desc *descs = descs_small;
    feed_keep *keep = keep_small;
    PyObject **out_hold = out_hold_small;
    kiln_value **results = results_small;
    size_t n_in = 0, n_kept = 0, n_out_names = 0, n_res = 0, n_held = 0;

    /* feeds: a dict is walked in place; any other mapping through its items(), as the ctypes path */
    Py_ssize_t n_feed;
    if (PyDict_Check(feed)) {
        n_feed = PyDict_GET_SIZE(feed);
    } else {
        PyObject *it = PyObject_CallMethod(feed, "items", NULL);
        if (!it) return NULL;
        items = PySequence_Fast(it, "input_feed.items() must be iterable");
        Py_DECREF(it);
        if (!items) return NULL;
        n_feed = PySequence_Fast_GET_SIZE(items);
    }
    if (n_feed > SMALL) {
        in_names = PyMem_Malloc(sizeof *in_names * (size_t)n_feed);
        descs = PyMem_Malloc(sizeof *descs * (size_t)n_feed);
        keep = PyMem_Malloc(sizeof *keep * (size_t)n_feed);
        if (!in_names || !descs || !keep) {
            PyErr_NoMemory();
            goto done;
        }
    }
    if (items) {
        for (Py_ssize_t i = 0; i < n_feed; i++) {
            PyObject *pair = PySequence_Fast_GET_ITEM(items, i);
            if (!PyTuple_Check(pair) || PyTuple_GET_SIZE(pair) != 2) {
                PyErr_SetString(PyExc_TypeError, "input_feed.items() must yield (name, value) pairs");
                goto done;
            }
            memset(&keep[n_kept], 0, sizeof *keep);
            n_kept++;
            if (make_feed(self->s, PyTuple_GET_ITEM(pair, 0), PyTuple_GET_ITEM(pair, 1), &keep[n_in], &descs[n_in],
                          &in_names[n_in]) < 0)
                goto done;
            n_in++;
        }
    } else {
        Py_ssize_t pos = 0;
        PyObject *key, *value;
        while (n_in < (size_t)n_feed && PyDict_Next(feed, &pos, &key, &value)) {
            memset(&keep[n_kept], 0, sizeof *keep);
            n_kept++;
            /* make_feed may run Python code (str(), __array__) that changes the dict: hold key and
             * value, and let PyDict_Next and n_feed bound the walk */
            Py_INCREF(key);
            Py_INCREF(value);
            int bad = make_feed(self->s, key, value, &keep[n_in], &descs[n_in], &in_names[n_in]) < 0;
            Py_DECREF(key);
            Py_DECREF(value);
            if (bad) goto done;
            n_in++;
        }
    }

    /* output names: None or empty asks for every output */
    int want_some = PyObject_IsTrue(out_arg);
    if (want_some < 0) goto done;
    if (want_some) {
        out_seq = PySequence_Fast(out_arg, "output_names must be a sequence of names");
        if (!out_seq) goto done;
        n_out_names = (size_t)PySequence_Fast_GET_SIZE(out_seq);
    }
    n_res = n_out_names ? n_out_names : self->n_outputs;
    if (n_out_names > SMALL) {
        out_names = PyMem_Malloc(sizeof *out_names * n_out_names);
        out_hold = PyMem_Malloc(sizeof *out_hold * n_out_names);
        if (!out_names || !out_hold) {
            PyErr_NoMemory();
            goto done;
        }
    }
    for (size_t i = 0; i < n_out_names; i++) {
        out_hold[i] = NULL;
        n_held++;
        if (!(out_names[i] = utf8_of(PySequence_Fast_GET_ITEM(out_seq, (Py_ssize_t)i), &out_hold[i]))) goto done;
    }
    if (n_res > SMALL && !(results = PyMem_Malloc(sizeof *results * n_res))) {
        PyErr_NoMemory();
        goto done;
    }

    if (!self->s || self->closed) { /* closed by Python code run above (a key's __str__, __array__) */
        raise_kiln("session is closed");
        goto done;
    }
    kiln_status st;
    const char *msg = NULL;
    kiln_session *s = self->s;
    /* a dict among the feeds (a map input): every feed goes as a value, tensors copied */
    const kiln_value **values = NULL;
    int any_map = 0;
    for (size_t i = 0; i < n_in; i++) any_map |= keep[i].value != NULL;
    if (any_map) {
        values = PyMem_Malloc(sizeof *values * (n_in ? n_in : 1));
        if (!values) {
            PyErr_NoMemory();
            goto done;
        }
        for (size_t i = 0; i < n_in; i++) {
            if (!keep[i].value && kiln_value_tensor_new(&descs[i], &keep[i].value) != KILN_OK) {
                PyMem_Free(values);
                raise_kiln(kiln_last_error());
                goto done;
            }
            values[i] = keep[i].value;
        }
    }
    volatile int sigint_flag = 0;
    kiln_run_options ro;
    memset(&ro, 0, sizeof ro);
    ro.terminate = user_flag ? user_flag : &sigint_flag;
    ro.timeout_ms = timeout_ms;
    int user_flag_before = user_flag ? *user_flag : 0;
    int ctrl_c = sigint_reaches_run();
    volatile int *outer_target = ctrl_c ? kiln_sigint_redirect(ro.terminate) : NULL;
    const kiln_run_options *opts = user_flag || ctrl_c ? &ro : NULL;
    self->running++;
    Py_BEGIN_ALLOW_THREADS
    st = values ? kiln_run_values(s, opts, n_in, in_names, values, n_out_names, out_names, results)
                : kiln_run_with_options(s, opts, n_in, in_names, descs, n_out_names, out_names, results);
    if (st != KILN_OK) msg = kiln_last_error(); /* this thread's copy: safe with concurrent runs */
    Py_END_ALLOW_THREADS
    self->running--;
    PyMem_Free(values);
    if (ctrl_c) kiln_sigint_redirect(outer_target);
    if (st == KILN_ERR_CANCELLED && ctrl_c && PyErr_CheckSignals() < 0) {
        /* stopped by Ctrl-C: the caller sees what Python's SIGINT handler raised (KeyboardInterrupt);
         * the signal's mark on the caller's own terminate flag is taken back */
        if (user_flag) *user_flag = user_flag_before;
        n_res = 0;
    } else if (st != KILN_OK) {
        raise_kiln_status(st, msg);
        n_res = 0;
    } else {
        /* convert every output; after a failure the rest are still freed (value_to_python owns them) */
        result = PyList_New((Py_ssize_t)n_res);
        for (size_t i = 0; i < n_res; i++) {
            if (!result) {
                kiln_value_free(results[i]);
                continue;
            }
            PyObject *o = value_to_python(results[i]);
            if (!o) Py_CLEAR(result);
            else PyList_SET_ITEM(result, (Py_ssize_t)i, o);
        }
    }
    if (self->closed && !self->running) session_release(self); /* close() came during the run */

done:
    feeds_release(keep, n_kept);
    for (size_t i = 0; i < n_held; i++) Py_XDECREF(out_hold[i]);
    Py_XDECREF(items);
    Py_XDECREF(out_seq);
    if (in_names != in_names_small) PyMem_Free(in_names);
    if (descs != descs_small) PyMem_Free(descs);
    if (keep != keep_small) PyMem_Free(keep);
    if (out_names != out_names_small) PyMem_Free(out_names);
    if (out_hold != out_hold_small) PyMem_Free(out_hold);
    if (results != results_small) PyMem_Free(results);
    return result;
}

static PyMethodDef Session_methods[] = {
    {"run", (PyCFunction)(void (*)(void))Session_run, METH_FASTCALL | METH_KEYWORDS,
     "run(output_names, input_feed, run_options=None) -> list of outputs"},
    {"io", (PyCFunction)Session_io, METH_O,
     "io(is_output) -> list of (name, dtype, rank, dims, dim_names, is_sequence, map_key_dtype)"},
    {"handle", (PyCFunction)Session_handle, METH_NOARGS, "the kiln_session pointer as an int"},
    {"plan_stats", (PyCFunction)Session_plan_stats, METH_NOARGS,
     "(arena, naive, initializer, copied_initializer bytes, nodes, folded_nodes)"},
    {"close", (PyCFunction)Session_close, METH_NOARGS, "releases the session (after runs in flight end)"},
    {NULL, NULL, 0, NULL}};

static PyTypeObject SessionType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "kiln._native.Session",
    .tp_basicsize = sizeof(Session),
    .tp_dealloc = (destructor)Session_dealloc,
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Session(model: bytes, is_bytes, threads or None, opt_level, providers mask, verbose, flags, dims, "
              "memory_limit)",
    .tp_methods = Session_methods,
    .tp_new = Session_new,
};

/* ------------------------------------------------------------------ module */

static PyObject *set_error_class(PyObject *mod, PyObject *cls) {
    if (!PyType_Check(cls) || !PyType_IsSubtype((PyTypeObject *)cls, (PyTypeObject *)PyExc_Exception)) {
        PyErr_SetString(PyExc_TypeError, "_set_error_class needs an exception class");
        return NULL;
    }
    Py_XSETREF(kiln_error_class, Py_NewRef(cls));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"_set_error_class", set_error_class, METH_O, "the exception class raised for kiln's errors"},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT, "_native", "kiln's Python binding hot path (see _session.py)", -1, module_methods,
    NULL, NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__native(void) {
    import_array();
    if (PyType_Ready(&SessionType) < 0) return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    PyObject *signal_mod = PyImport_ImportModule("_signal"), *threading = PyImport_ImportModule("threading");
    PyObject *main_thread = threading ? PyObject_CallMethod(threading, "main_thread", NULL) : NULL;
    PyObject *ident = main_thread ? PyObject_GetAttrString(main_thread, "ident") : NULL;
    if (signal_mod) getsignal_fn = PyObject_GetAttrString(signal_mod, "getsignal");
    if (signal_mod) sigint_number = PyObject_GetAttrString(signal_mod, "SIGINT");
    if (ident) main_thread_ident = PyLong_AsUnsignedLong(ident);
    Py_XDECREF(signal_mod);
    Py_XDECREF(threading);
    Py_XDECREF(main_thread);
    Py_XDECREF(ident);
    if (PyErr_Occurred() || !getsignal_fn || !sigint_number || !main_thread_ident) {
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddObjectRef(m, "Session", (PyObject *)&SessionType) < 0 ||
        PyModule_AddStringConstant(m, "kiln_version", KILN_VERSION) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
