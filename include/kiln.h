/* kiln — an ONNX inference runtime.
 *
 * The one public header. Every fallible call returns a kiln_status; the readable message of the
 * last failure is kiln_last_error() (per thread), and for calls on a session also
 * kiln_session_error(). Messages name what is wrong: the node, the op, the input and the reason.
 *
 * Typical use:
 *
 *   kiln_options opt; kiln_options_init(&opt); opt.threads = 4;
 *   kiln_session *s;
 *   if (kiln_session_open("model.onnx", &opt, &s) != KILN_OK) { puts(kiln_last_error()); ... }
 *   kiln_tensor_desc in = { KILN_DTYPE_FLOAT, 2, dims, data };
 *   const char *in_name = "x";
 *   kiln_value *out[1];
 *   kiln_run(s, 1, &in_name, &in, 0, NULL, out);      // 0 outputs named: all of them
 *   const float *y = kiln_value_data(out[0]);
 *   kiln_value_free(out[0]);
 *   kiln_session_close(s);
 */
#ifndef KILN_H
#define KILN_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define KILN_VERSION "0.1.0"

typedef enum kiln_status {
    KILN_OK = 0,
    KILN_ERR_INVALID_ARGUMENT = 1, /* a bad argument to a kiln_ call, or a bad input tensor */
    KILN_ERR_INVALID_MODEL = 2,    /* the model file or graph is malformed */
    KILN_ERR_NOT_IMPLEMENTED = 3,  /* an op, type or attribute kiln does not support (yet) */
    KILN_ERR_NO_MEMORY = 4,
    KILN_ERR_IO = 5,               /* a file could not be opened, mapped or read */
    KILN_ERR_RUNTIME = 6,          /* a kernel failed while running (e.g. index out of range) */
    KILN_ERR_NO_PROVIDER = 7,      /* a requested execution provider is not available */
    KILN_ERR_CANCELLED = 8         /* the run was terminated or passed its deadline (kiln_run_options) */
} kiln_status;

/* Element types; the numbers are ONNX's TensorProto.DataType. */
typedef enum kiln_dtype {
    KILN_DTYPE_UNDEFINED = 0,
    KILN_DTYPE_FLOAT = 1,
    KILN_DTYPE_UINT8 = 2,
    KILN_DTYPE_INT8 = 3,
    KILN_DTYPE_UINT16 = 4,
    KILN_DTYPE_INT16 = 5,
    KILN_DTYPE_INT32 = 6,
    KILN_DTYPE_INT64 = 7,
    KILN_DTYPE_STRING = 8, /* data is an array of char*: see "Strings" below */
    KILN_DTYPE_BOOL = 9,   /* one byte per element, 0 or 1 */
    KILN_DTYPE_FLOAT16 = 10,
    KILN_DTYPE_DOUBLE = 11,
    KILN_DTYPE_UINT32 = 12,
    KILN_DTYPE_UINT64 = 13,
    KILN_DTYPE_COMPLEX64 = 14,
    KILN_DTYPE_COMPLEX128 = 15,
    KILN_DTYPE_BFLOAT16 = 16,
    KILN_DTYPE_FLOAT8E4M3FN = 17,
    KILN_DTYPE_FLOAT8E4M3FNUZ = 18,
    KILN_DTYPE_FLOAT8E5M2 = 19,
    KILN_DTYPE_FLOAT8E5M2FNUZ = 20,
    KILN_DTYPE_UINT4 = 21,         /* 4-bit types pack two elements per byte, low nibble first */
    KILN_DTYPE_INT4 = 22,
    KILN_DTYPE_FLOAT4E2M1 = 23,
    KILN_DTYPE_FLOAT8E8M0 = 24,
    KILN_DTYPE_UINT2 = 25,         /* 2-bit types pack four elements per byte, lowest bits first */
    KILN_DTYPE_INT2 = 26,
    KILN_DTYPE_SIZED_STRING = 108  /* only in an input's kiln_tensor_desc: see "Strings" below */
} kiln_dtype;

/* Strings. ONNX strings are byte strings and may hold NUL bytes; kiln keeps every string's length.
 * - In: a kiln_tensor_desc of dtype KILN_DTYPE_STRING has data pointing to NUL-terminated char*
 *   (NULL reads as ""): such a string ends at its first NUL. To pass any bytes, give dtype
 *   KILN_DTYPE_SIZED_STRING and data pointing to kiln_string elements {data, len}; the value is a
 *   string tensor. Both are accepted by kiln_run*, kiln_value_tensor_new, kiln_options.initializers,
 *   and (as key or value dtype) by kiln_value_map_new.
 * - Out: a string tensor's kiln_value_data (and a map's keys or values) is an array of char*, each
 *   followed by a NUL, so code that stops at the first NUL still works on strings without NULs;
 *   kiln_string_length(element) gives the full length of an element kiln handed out, and
 *   kiln_value_strings() copies a string tensor's elements out as kiln_string views.
 * Bytes are passed as they are: kiln neither checks nor changes their encoding. */
typedef struct kiln_string {
    const char *data;
    size_t len;
} kiln_string;

/* Execution providers, as bit flags for kiln_options.providers. Nodes no other provider takes
 * always run on the CPU. The CPU bit says what happens when another provider asked for cannot
 * start (no GPU, no driver, libkiln_cuda.so missing): with KILN_PROVIDER_CPU set the session falls
 * back to the CPU and kiln_session_warning() says why (ONNX Runtime's behaviour for
 * ["CUDAExecutionProvider", "CPUExecutionProvider"]); without it, opening the session fails. */
enum { KILN_PROVIDER_CPU = 1, KILN_PROVIDER_CUDA = 2 };

/* Where a tensor's bytes are. KILN_MEMORY_DEVICE is the memory of the session's device provider
 * (a CUDA device pointer for the CUDA provider). */
typedef enum kiln_memory { KILN_MEMORY_HOST = 0, KILN_MEMORY_DEVICE = 1 } kiln_memory;

/* Describes an input tensor owned by the caller; kiln reads it during kiln_run only. A device
 * input is read in place, without a copy, by the nodes that run on the device; work queued on the
 * device before the run must be complete or on the legacy default stream (which kiln's stream
 * waits for). */
typedef struct kiln_tensor_desc {
    kiln_dtype dtype;
    int rank;
    const int64_t *dims;
    const void *data;
    kiln_memory memory;   /* 0 (host) when left zero */
} kiln_tensor_desc;

/* A sequence input (ONNX seq(tensor(T))) is described by a kiln_tensor_desc whose rank is
 * KILN_RANK_SEQUENCE: dtype is the element type T (which an empty sequence needs too), dims[0] is
 * the number of items and data points to that many kiln_tensor_desc, one per item, on the host. */
#define KILN_RANK_SEQUENCE (-2)

typedef struct kiln_options {
    int threads;          /* intra-op threads; 0 = one per core */
    int opt_level;        /* 0 none, 1 basic (constant folding, dead code), 2 extended (fusions) */
    unsigned providers;   /* KILN_PROVIDER_* bits; CPU is always the fallback */
    int verbose;          /* 1: log planning and kernel choices to stderr */
    /* Recording each input shape's device work once and replaying it (CUDA graphs; ONNX Runtime's
     * enable_cuda_graph), which turns one launch per node into one per run:
     *   0 (default) auto: on when every node runs on the device provider and no device kernel
     *     reads a host value that can change between runs of one shape (a shape fed as an input);
     *   1 required: the session fails to open, naming the node, when that does not hold;
     *  -1 off. */
    int graph_capture;
    /* 1: run a float32 model in float16 on the device (weights and activations converted once
     * when the session is made; inputs and outputs stay float32). */
    int float16;
    /* NULL, or "NAME=N[,NAME=N...]": symbolic dimensions fixed for the session's life (ONNX
     * Runtime's free dimension overrides). Shapes then become static, so shape arithmetic folds
     * away (and graph capture can take the whole model); inputs must have those sizes.
     * "@DENOTATION=N" fixes every symbolic dimension with that denotation (e.g. @DATA_BATCH=1). */
    const char *dim_overrides;
    /* 0, or the most bytes of intermediate values the session's runs may hold at a time, all
     * concurrent runs together (each run's planned arena and values on the heap, counted as the
     * runner allocates and releases them; weights and kernels' own scratch are not counted). A
     * run that would pass it fails the node with
     * KILN_ERR_NO_MEMORY, so a runaway graph (a Loop stacking outputs forever) stops with an
     * error before the system runs out of memory. */
    size_t memory_limit;
    /* Initializers the caller supplies (ONNX Runtime's AddInitializer and AddExternalInitializers):
     * each replaces the main graph's initializer of that name, whose own data (in the model or in
     * an external data file, which then need not exist) is not read. Each must name an initializer
     * of the model and have its element type; kiln copies them while the session opens. */
    size_t n_initializers;
    const char *const *initializer_names;
    const kiln_tensor_desc *initializers;
    /* NULL, or a path: once optimised, the model is written there as ONNX while the session opens
     * (ONNX Runtime's optimized_model_filepath); a failed write fails the open. With
     * optimized_model_external_data (a file name, relative to that path's folder), initializers of
     * at least optimized_model_external_min_bytes bytes are written to that file instead (but for
     * strings and int32 / int64 vectors: shapes and axes stay where shape inference reads them). */
    const char *optimized_model_path;
    const char *optimized_model_external_data;
    size_t optimized_model_external_min_bytes;
    /* Shape specialisation: a session whose inputs have symbolic dimensions opens, on the second
     * run of an input shape, a child session with those dimensions fixed (as dim_overrides would)
     * and runs that shape there: shape arithmetic folds away, fusions that need static shapes
     * apply and graph capture can take the whole model. At most 8 children per session (the least
     * recently used idle one makes room); the generic plan stays the fallback, and a child that
     * cannot open leaves its shape on it. Children share the session's providers and device
     * copies of constants. 0 (default) auto: on with a device provider, off for CPU-only
     * sessions; 1 on; -1 off. */
    int specialize;
    /* 1: float32 MatMul, Gemm, FusedMatMul and GEMM-based Conv on the CPU round their operands to
     * bfloat16 and sum in float32 (AVX512-BF16, or AMX-BF16 where present; KILN_NO_AMX=1 keeps
     * AMX off); constant weights are rounded and packed once, at open. Outputs stay float32. On a
     * CPU without AVX512-BF16 the session computes in float32 and kiln_session_warning() says so.
     * Also set by the session config entry "kiln.cpu_bf16" = "1" (Python). */
    int cpu_bf16;
    /* 0 (default): float32 3x3 stride-1 convolutions on the CPU may run as Winograd F(4x4, 3x3)
     * where it pays (fewer multiplications; results differ from direct sums by about 1e-5 of
     * the output's scale, against 1e-6, and a NaN or infinity in an input reaches every output of
     * the 4x4 tiles whose windows hold it); -1: never, every convolution sums its taps directly.
     * Also set by the session config entry "kiln.cpu_winograd" = "0" (Python), or
     * KILN_NO_WINOGRAD=1 for the whole process. */
    int cpu_winograd;
} kiln_options;

typedef struct kiln_session kiln_session;
typedef struct kiln_value kiln_value; /* an output: a tensor, a sequence of tensors, or none */

/* Static description of a model input or output. dims[i] < 0 is a symbolic or unknown
 * dimension; dim_names[i] is then its name (or "" if it has none). rank < 0: unknown rank. */
typedef struct kiln_io_info {
    const char *name;
    kiln_dtype dtype;
    int rank;
    const int64_t *dims;
    const char *const *dim_names;
    int is_sequence; /* 1 when the value is a sequence of tensors of dtype (of maps, with is_map) */
    /* 1 when the value (or, with is_sequence, each item) is a map from map_key_dtype (int64 or
     * string) to dtype (ai.onnx.ml: ZipMap's output is a sequence of maps); rank is then -1 */
    int is_map;
    kiln_dtype map_key_dtype;
} kiln_io_info;

void kiln_options_init(kiln_options *opt);
const char *kiln_status_name(kiln_status st);
const char *kiln_last_error(void);
kiln_status kiln_last_status(void); /* the code of the thread's last failure (KILN_OK: none yet) */
const char *kiln_dtype_name(kiln_dtype dt);
size_t kiln_dtype_size(kiln_dtype dt); /* bytes per element; 0 for sub-byte and string types */

kiln_status kiln_session_open(const char *path, const kiln_options *opt, kiln_session **out);
/* The bytes must stay valid for the session's lifetime (initializers point into them). */
kiln_status kiln_session_open_bytes(const void *bytes, size_t size, const kiln_options *opt,
                                    kiln_session **out);
void kiln_session_close(kiln_session *s);
const char *kiln_session_error(const kiln_session *s);

size_t kiln_session_input_count(const kiln_session *s);
size_t kiln_session_output_count(const kiln_session *s);
kiln_status kiln_session_input_info(const kiln_session *s, size_t i, kiln_io_info *info);
kiln_status kiln_session_output_info(const kiln_session *s, size_t i, kiln_io_info *info);

/* The providers the session really uses, ONNX Runtime's names, preferred first (the CPU last). */
size_t kiln_session_provider_count(const kiln_session *s);
const char *kiln_session_provider_name(const kiln_session *s, size_t i);
/* Why a provider asked for was replaced by the CPU, or "" when none was. */
const char *kiln_session_warning(const kiln_session *s);

/* Profiling: from start_profiling on, every run records a Chrome-trace / Perfetto timeline (one
 * event per node, with its provider, op and output shape; one per run); end_profiling writes it to
 * `path` and returns the path (NULL on failure: kiln_session_error says why). Device nodes are
 * synchronised around while profiling, so each shows its own device time. */
kiln_status kiln_session_start_profiling(kiln_session *s, const char *path);
const char *kiln_session_end_profiling(kiln_session *s);
/* When profiling started, in nanoseconds since the Unix epoch (the system clock); 0 when the
 * session is not profiling. Event times in the trace are microseconds from this moment. */
int64_t kiln_session_profiling_start_ns(const kiln_session *s);

/* What the model file says about itself (ModelProto and GraphProto fields). The strings belong to
 * the session and stay valid until it is closed; absent fields are "" (version 0). */
typedef struct kiln_model_metadata {
    const char *producer_name;
    const char *producer_version;
    const char *domain;
    const char *description;        /* the model's doc_string */
    const char *graph_name;
    const char *graph_description;  /* the main graph's doc_string */
    int64_t version;                /* model_version */
    size_t n_custom;                /* metadata_props: n_custom key / value pairs, in file order */
    const char *const *custom_keys;
    const char *const *custom_values;
} kiln_model_metadata;
kiln_status kiln_session_model_metadata(const kiln_session *s, kiln_model_metadata *md);

/* Where each node of the main graph runs, after optimisation and placement, in execution order.
 * Copies between memory spaces are nodes too (domain "kiln", MemcpyFromHost / MemcpyToHost). */
typedef struct kiln_node_info {
    const char *name;
    const char *op_type;
    const char *domain;
    const char *provider;  /* e.g. "CUDAExecutionProvider" */
    const char *reason;    /* why it is not on the session's first provider; "" when it is */
} kiln_node_info;
size_t kiln_session_node_count(const kiln_session *s);
kiln_status kiln_session_node_info(const kiln_session *s, size_t i, kiln_node_info *info);

/* Runs the model. Inputs are matched by name; every graph input without an initializer must be
 * given. n_out == 0 asks for every graph output (outputs[] then needs output_count entries).
 * Each outputs[i] is owned by the caller: release it with kiln_value_free.
 * Several threads may run one session at once (each run has its own working memory); a session
 * with a device provider runs them one at a time. Close a session only after its last run has
 * returned. On a failure read kiln_last_error() (per thread): kiln_session_error() is the latest
 * failed run's, whichever thread ran it. */
kiln_status kiln_run(kiln_session *s, size_t n_in, const char *const *in_names,
                     const kiln_tensor_desc *inputs, size_t n_out, const char *const *out_names,
                     kiln_value **outputs);

/* kiln_run with per-run options: outputs left in device memory, or written into buffers the
 * caller owns (IOBinding); a terminate flag and a deadline. Zero-initialise it (= {0}) so that
 * fields added later stay off. */
typedef struct kiln_run_options {
    /* 1: an output computed on the device is handed over in device memory (kiln_value_memory()
     * says where each output is). Free device outputs before closing the session. */
    int outputs_on_device;
    /* NULL, or one entry per requested output: a caller-owned buffer (host or device, of exactly
     * the output's dtype and shape) that receives it; outputs[i] is then set to NULL. An entry
     * whose data is NULL is not bound. */
    const kiln_tensor_desc *bound_outputs;
    /* NULL, or a flag the caller may set to nonzero from any thread (or a signal handler): the run
     * then stops at the next node or loop iteration and returns KILN_ERR_CANCELLED. A flag already
     * set when the run starts cancels it at once; the caller clears it for the next run. */
    volatile int *terminate;
    /* 0: no deadline; else the run fails with KILN_ERR_CANCELLED once this many milliseconds have
     * passed since the call (checked between nodes and loop iterations: a single long node is not
     * interrupted). */
    double timeout_ms;
} kiln_run_options;
kiln_status kiln_run_with_options(kiln_session *s, const kiln_run_options *options, size_t n_in,
                                  const char *const *in_names, const kiln_tensor_desc *inputs,
                                  size_t n_out, const char *const *out_names, kiln_value **outputs);

/* Ctrl-C for bindings and tools (a Python run holds no interpreter lock, so Python's own SIGINT
 * handling cannot reach it). kiln_sigint_chain() puts kiln's SIGINT handler in front of the one
 * installed now, which kiln's goes on calling (Python still raises KeyboardInterrupt once the run
 * has returned; a tool's handler still runs). It returns 1 when kiln's handler is in place, 0 when
 * SIGINT is ignored or left to its default action (which ends the process, run and all). Call it
 * again after installing another SIGINT handler. kiln_sigint_redirect(flag) makes SIGINT also set
 * *flag (pass the run's terminate flag; NULL: no flag) and returns the flag it set until now; it
 * makes no system call, so a binding can afford it around every run. */
int kiln_sigint_chain(void);
volatile int *kiln_sigint_redirect(volatile int *flag);

/* A host tensor copied into the session's device memory, as an owned value (kiln_value_free
 * releases it; free it before closing the session). Fails when the session has no device. */
kiln_status kiln_value_to_device(kiln_session *s, const kiln_tensor_desc *host, kiln_value **out);
/* A copy of v in host memory (v may be on the host or the device). */
kiln_status kiln_value_to_host(const kiln_value *v, kiln_value **out);
/* Raw memory of the session's device provider (what KILN_MEMORY_DEVICE inputs and bound outputs
 * point to), for callers that keep state on the device across runs (the training module does).
 * Each fails when the session has no device. kiln_session_device_copy copies bytes between host
 * and device memory in either direction and waits for the copy; free(NULL) is a no-op. */
kiln_status kiln_session_device_alloc(kiln_session *s, size_t bytes, void **out);
void kiln_session_device_free(kiln_session *s, void *ptr);
kiln_status kiln_session_device_copy(kiln_session *s, void *dst, kiln_memory dst_memory, const void *src,
                                     kiln_memory src_memory, size_t bytes);

/* Outputs. A sequence has kiln_value_sequence_length() items, each read with kiln_value_item (a
 * view that lives as long as the sequence, until the next kiln_value_item call of the thread). */
enum { KILN_VALUE_TENSOR = 0, KILN_VALUE_SEQUENCE = 1, KILN_VALUE_NONE = 2, KILN_VALUE_MAP = 3 };
int kiln_value_kind(const kiln_value *v);
kiln_dtype kiln_value_dtype(const kiln_value *v);
int kiln_value_rank(const kiln_value *v);
const int64_t *kiln_value_dims(const kiln_value *v);
const void *kiln_value_data(const kiln_value *v);
kiln_memory kiln_value_memory(const kiln_value *v);
size_t kiln_value_nbytes(const kiln_value *v);
size_t kiln_value_sequence_length(const kiln_value *v);
const kiln_value *kiln_value_item(const kiln_value *v, size_t i);
void kiln_value_free(kiln_value *v);

/* Maps (ai.onnx.ml). ZipMap's output is a sequence of maps (one per row): kiln_value_kind says
 * KILN_VALUE_SEQUENCE and each kiln_value_item is a KILN_VALUE_MAP. A map has kiln_value_map_size()
 * distinct keys in ascending order (byte order for strings), of kiln_value_map_key_dtype()
 * (KILN_DTYPE_INT64 or KILN_DTYPE_STRING), and as many values of kiln_value_dtype() (float,
 * double, int64 or string); keys and values are arrays of int64_t / float / double / char*:
 *
 *   const kiln_value *row = kiln_value_item(out[1], 0);
 *   const int64_t *labels = kiln_value_map_keys(row);
 *   const float *probs = kiln_value_map_values(row);    // probs[i] belongs to labels[i]
 *
 * A map input (DictVectorizer, CastMap) is made with kiln_value_map_new, which copies the n keys
 * and values (a key given twice fails), and fed with kiln_run_values; so are tensors there
 * (kiln_value_tensor_new copies a host tensor), and outputs of an earlier run may be fed back. */
kiln_dtype kiln_value_map_key_dtype(const kiln_value *v); /* KILN_DTYPE_UNDEFINED: not a map */
size_t kiln_value_map_size(const kiln_value *v);
const void *kiln_value_map_keys(const kiln_value *v);
const void *kiln_value_map_values(const kiln_value *v);
kiln_status kiln_value_map_new(kiln_dtype key_dtype, kiln_dtype value_dtype, size_t n, const void *keys,
                               const void *values, kiln_value **out);
kiln_status kiln_value_tensor_new(const kiln_tensor_desc *desc, kiln_value **out);
/* The byte length of a string element read from kiln_value_data, kiln_value_map_keys or
 * kiln_value_map_values (only such pointers; NULL: 0). */
size_t kiln_string_length(const char *element);
/* Views of the n elements of string tensor v (n must be its element count), valid while v lives. */
kiln_status kiln_value_strings(const kiln_value *v, kiln_string *out, size_t n);
/* kiln_run_with_options with inputs given as values (read during the call only; the caller still
 * owns and frees them). options may be NULL. */
kiln_status kiln_run_values(kiln_session *s, const kiln_run_options *options, size_t n_in,
                            const char *const *in_names, const kiln_value *const *inputs, size_t n_out,
                            const char *const *out_names, kiln_value **outputs);

/* Statistics of the plan made for the most recent kiln_run's input shapes (or, before any run,
 * for the declared input shapes with symbolic dimensions bound to 1). */
typedef struct kiln_plan_stats {
    size_t arena_bytes;       /* size of the planned intermediate-value arena */
    size_t naive_bytes;       /* what allocating every intermediate separately would need */
    size_t initializer_bytes; /* bytes of weights referenced by the model */
    size_t copied_initializer_bytes; /* of those, bytes copied at load (e.g. misaligned in the file) */
    size_t nodes;             /* nodes after optimisation */
    size_t folded_nodes;      /* nodes removed by constant folding */
} kiln_plan_stats;
kiln_status kiln_session_plan_stats(kiln_session *s, kiln_plan_stats *stats);
/* How many shape-specialised children the session holds now (kiln_options.specialize). */
int kiln_session_specializations(const kiln_session *s);
/* Weights packed at open into the layouts the kernels read (packed_bytes), and the bytes of
 * original weights handed back because every use reads the packed copy (released_bytes): each
 * weight is then held once. Either pointer may be NULL. */
kiln_status kiln_session_weight_stats(kiln_session *s, size_t *packed_bytes, size_t *released_bytes);

/* Frees the memory plans and arenas kept for the input shapes run so far (ONNX Runtime's arena
 * shrinkage), and the large host blocks kiln keeps from released outputs for reuse (shared by
 * every session of the process); the next run plans again. Waits for a run in flight. */
void kiln_session_release_memory(kiln_session *s);


/* ---- Training (docs/training.md) ----
 *
 * ONNX Runtime's on-device training API in C: artifacts made from an inference model (a training
 * model with the loss and gradients as outputs, an eval model, a checkpoint), then a checkpoint,
 * a module that runs train and eval steps, and a fused optimizer:
 *
 *   kiln_checkpoint *ck;  kiln_checkpoint_load("art/checkpoint.kckpt", &ck);
 *   kiln_train_module *m; kiln_train_module_open("art/training_model.onnx", "art/eval_model.onnx", ck, NULL, &m);
 *   kiln_optimizer *o;    kiln_optimizer_open(m, &o);
 *   for (...) { float loss; kiln_train_step(m, 2, names, batch, &loss); kiln_optimizer_step(o);
 *               kiln_train_module_lazy_reset_grad(m); }
 *   kiln_train_module_export(m, "trained.onnx", 0, NULL);  kiln_checkpoint_save(ck, "art/checkpoint.kckpt");
 *
 * The module and the optimizer borrow the checkpoint (free it last): the parameters and the
 * optimizer state live in it, so saving it after training saves the trained values. */
typedef struct kiln_checkpoint kiln_checkpoint;
typedef struct kiln_train_module kiln_train_module;
typedef struct kiln_optimizer kiln_optimizer;
typedef struct kiln_lr_scheduler kiln_lr_scheduler;

/* Loading refuses a truncated, corrupt (CRC32), oversized or otherwise malformed file, saying
 * why. Saving writes a temporary file beside `path` and renames it over it. */
kiln_status kiln_checkpoint_load(const char *path, kiln_checkpoint **out);
kiln_status kiln_checkpoint_save(const kiln_checkpoint *ck, const char *path);
void kiln_checkpoint_free(kiln_checkpoint *ck);
/* An empty checkpoint, filled with kiln_checkpoint_add_param and kiln_checkpoint_set_optimizer. */
kiln_status kiln_checkpoint_new(kiln_checkpoint **out);
kiln_status kiln_checkpoint_add_param(kiln_checkpoint *ck, const char *name, const kiln_tensor_desc *value,
                                      int requires_grad);
size_t kiln_checkpoint_param_count(const kiln_checkpoint *ck);
const char *kiln_checkpoint_param_name(const kiln_checkpoint *ck, size_t i);
int kiln_checkpoint_param_requires_grad(const kiln_checkpoint *ck, size_t i);
/* A view of the parameter's current value (valid until the checkpoint is freed). */
kiln_status kiln_checkpoint_get_param(const kiln_checkpoint *ck, const char *name, kiln_tensor_desc *out);
/* Copies value over the parameter, which must have the same dtype and shape. */
kiln_status kiln_checkpoint_set_param(kiln_checkpoint *ck, const char *name, const kiln_tensor_desc *value);
/* The optimizer: "adamw" or "sgd" ("" when none is recorded). set_optimizer writes torch.optim's
 * defaults (AdamW: lr 1e-3, beta1 0.9, beta2 0.999, eps 1e-8, weight_decay 0.01; SGD: lr 1e-3,
 * momentum 0, dampening 0, weight_decay 0, nesterov 0) and clears the state and the step count. */
const char *kiln_checkpoint_optimizer(const kiln_checkpoint *ck);
kiln_status kiln_checkpoint_set_optimizer(kiln_checkpoint *ck, const char *name);
kiln_status kiln_checkpoint_get_hparam(const kiln_checkpoint *ck, const char *key, double *value);
kiln_status kiln_checkpoint_set_hparam(kiln_checkpoint *ck, const char *key, double value);
int64_t kiln_checkpoint_step(const kiln_checkpoint *ck); /* optimizer steps taken */

/* Opens the training model (and the eval model, or NULL) with the session options opt (NULL:
 * defaults; opt->providers picks the provider). The trainable parameters are the training model's
 * metadata kiln.train.params; every graph input that names a checkpoint parameter is fed from the
 * checkpoint, the others (the model's inputs and `labels`) from each step's caller. */
kiln_status kiln_train_module_open(const char *training_model, const char *eval_model, kiln_checkpoint *ck,
                                   const kiln_options *opt, kiln_train_module **out);
void kiln_train_module_close(kiln_train_module *m);
/* The session running the training (eval 0) or eval (eval 1) model, e.g. for
 * kiln_session_provider_name and kiln_session_warning; NULL when there is none. */
const kiln_session *kiln_train_module_session(const kiln_train_module *m, int eval);
/* The inputs a step takes from the caller (model inputs, then labels), in the model's order. */
size_t kiln_train_module_input_count(const kiln_train_module *m, int eval);
const char *kiln_train_module_input_name(const kiln_train_module *m, int eval, size_t i);
size_t kiln_train_module_eval_output_count(const kiln_train_module *m);
const char *kiln_train_module_eval_output_name(const kiln_train_module *m, size_t i);
/* Runs the training model: *loss gets the loss, and the gradients are added to the module's
 * gradient buffers (overwritten after kiln_train_module_lazy_reset_grad, as ONNX Runtime's Module). */
kiln_status kiln_train_step(kiln_train_module *m, size_t n_in, const char *const *in_names,
                            const kiln_tensor_desc *inputs, float *loss);
/* Runs the eval model: outputs[] gets kiln_train_module_eval_output_count values (loss first). */
kiln_status kiln_eval_step(kiln_train_module *m, size_t n_in, const char *const *in_names,
                           const kiln_tensor_desc *inputs, kiln_value **outputs);
void kiln_train_module_lazy_reset_grad(kiln_train_module *m);
/* A view of a trainable parameter's accumulated gradient (zeros while a reset is pending). */
kiln_status kiln_train_module_get_grad(kiln_train_module *m, const char *name, kiln_tensor_desc *out);
/* Writes the inference model (inference_model.onnx beside the training model) with the
 * checkpoint's current parameter values to path; n_out > 0 keeps only those graph outputs. */
kiln_status kiln_train_module_export(kiln_train_module *m, const char *path, size_t n_out,
                                     const char *const *output_names);
/* Where the module keeps the trainable parameters, their gradients and the optimizer state between
 * steps: KILN_MEMORY_DEVICE when the training session has a device provider that can run the
 * optimizer (they are then copied to the host only for get_grad, checkpoint reads and saves, and
 * export), else KILN_MEMORY_HOST. */
kiln_memory kiln_train_module_memory(const kiln_train_module *m);
/* Bytes the module itself has copied between host and device memory since it opened (parameters,
 * gradients, optimizer state and the loss; not the copies the session's placement makes). */
uint64_t kiln_train_module_transfer_bytes(const kiln_train_module *m);

/* The checkpoint's optimizer over the module's trainable parameters (float32), a fused kernel
 * with torch.optim's arithmetic, run on the training session's CPU threads. */
kiln_status kiln_optimizer_open(kiln_train_module *m, kiln_optimizer **out);
void kiln_optimizer_close(kiln_optimizer *o);
kiln_status kiln_optimizer_step(kiln_optimizer *o);
kiln_status kiln_optimizer_set_lr(kiln_optimizer *o, double lr);
double kiln_optimizer_get_lr(const kiln_optimizer *o);
/* ONNX Runtime's LinearLRScheduler: sets the learning rate to initial_lr, then each
 * kiln_lr_scheduler_step sets it to initial_lr * f(t), t = the optimizer's step count, with
 * f(t) = t / max(1, warmup) while t < warmup, else max(0, (total - t) / max(1, total - warmup)). */
kiln_status kiln_lr_scheduler_linear(kiln_optimizer *o, int64_t warmup_steps, int64_t total_steps,
                                     double initial_lr, kiln_lr_scheduler **out);
kiln_status kiln_lr_scheduler_step(kiln_lr_scheduler *s);
void kiln_lr_scheduler_free(kiln_lr_scheduler *s);

/* Makes training artifacts from an inference model in out_dir (an existing folder):
 * training_model.onnx, eval_model.onnx, inference_model.onnx and checkpoint.kckpt, whose
 * parameters are the model's initializers named in requires_grad. */
typedef struct kiln_train_artifacts_options {
    const char *const *requires_grad; size_t n_requires_grad;
    const char *const *frozen; size_t n_frozen;
    const char *loss;        /* "mse", "cross_entropy", "bce_with_logits" or "l1" */
    const char *output;      /* the model output the loss takes; NULL: the first */
    const char *optimizer;   /* "adamw" or "sgd" */
} kiln_train_artifacts_options;
kiln_status kiln_train_artifacts(const char *model, const kiln_train_artifacts_options *o, const char *out_dir);

#ifdef __cplusplus
}
#endif
#endif
