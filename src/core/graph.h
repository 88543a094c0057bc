/* The in-memory model: graphs of nodes over named values, read from an ONNX ModelProto.
 * Names and attributes are owned by the model; initializer bytes stay in the mapped file where
 * they are aligned for their type (see onnx/model_load.c). */
#ifndef KILN_GRAPH_H
#define KILN_GRAPH_H

#include "tensor.h"

enum {
    KILN_ATTR_UNDEFINED = 0, KILN_ATTR_FLOAT = 1, KILN_ATTR_INT = 2, KILN_ATTR_STRING = 3,
    KILN_ATTR_TENSOR = 4, KILN_ATTR_GRAPH = 5, KILN_ATTR_FLOATS = 6, KILN_ATTR_INTS = 7,
    KILN_ATTR_STRINGS = 8, KILN_ATTR_TENSORS = 9, KILN_ATTR_GRAPHS = 10,
    KILN_ATTR_SPARSE_TENSOR = 11, KILN_ATTR_SPARSE_TENSORS = 12, KILN_ATTR_TYPE_PROTO = 13,
    KILN_ATTR_TYPE_PROTOS = 14
};

struct kiln_graph;
struct kiln_model;
struct kiln_op;
struct kiln_kernel;

typedef struct kiln_attr {
    char *name;
    int type;
    float f;
    int64_t i;
    char *s;               /* NUL-terminated copy; s_len bytes (may contain NULs) */
    size_t s_len;
    kiln_tensor *t;        /* TENSOR (and SPARSE_TENSOR, densified) */
    struct kiln_graph *g;  /* GRAPH */
    int n;                 /* element count of the list forms */
    float *floats;
    int64_t *ints;
    char **strings;
    kiln_tensor *tensors;
    struct kiln_graph **graphs;
    int tp_elem_type;      /* TYPE_PROTO: tensor elem_type (0 if not a tensor type) */
    int n_strings, n_tensors, n_graphs; /* entries filled in each list (what attr_free releases) */
} kiln_attr;

typedef struct kiln_node {
    char *name;            /* never NULL; "" replaced by "<op_type>_<index>" */
    char *op_type;
    char *domain;          /* "" for ai.onnx */
    int n_in, n_out;
    int *in, *out;         /* indices into graph->values; -1 for an absent optional */
    int n_attrs;
    kiln_attr *attrs;
    int opset;             /* version of the node's domain imported by the model */
    const struct kiln_op *op;
    void *state;           /* the kernel's own, made by op->init */
    int n_implicit;        /* values of this graph that the node's subgraphs read (outer scope) */
    int *implicit;
    int removed;           /* folded into a constant or dead: skipped when running */
    /* placement (core/placement.c): the provider that runs the node (index into the session's
     * providers; 0 = the CPU) and, for other providers, the kernel and its state */
    int ep;
    const struct kiln_kernel *kernel;
    void *kernel_state;
    char *placement_why;   /* why the node is not on the preferred provider (NULL: it is) */
    /* inputs (bit i) whose constant the CPU kernel copied at init into a packed form it reads
     * instead, and those copies' size (kiln_input_packed; core/weights.c) */
    uint64_t packed_inputs;
    size_t packed_bytes;
    const void **packed_src; /* the kernel's note of which bytes it packed (compared at run time) */
} kiln_node;

/* Static type of a value: kind (tensor / sequence / optional-of / map / sequence of maps), element
 * type, shape. */
typedef struct kiln_type {
    int kind;              /* KILN_KIND_TENSOR, KILN_KIND_SEQUENCE, KILN_KIND_MAP, KILN_KIND_MAP_SEQUENCE */
    int optional;          /* wrapped in optional<> */
    int dtype;
    int rank;              /* -1 unknown */
    int64_t dims[KILN_MAX_RANK];
    int key_dtype;         /* maps: the key type (dtype is then the value type) */
} kiln_type;

typedef struct kiln_graph_value {
    char *name;
    kiln_type type;        /* declared (value_info/input/output) or inferred */
    int has_type;
    int is_input;          /* a graph input (fed by the caller or, for a subgraph, the parent op) */
    int is_const;          /* initializer or folded constant: `konst` holds it */
    kiln_value konst;
    int producer;          /* node index, or -1 */
    int outer;             /* >= 0: index of the value of the same name in the parent graph */
    int n_consumers;
    int dev;               /* memory space the value lives in: a session provider index, 0 = host */
} kiln_graph_value;

typedef struct kiln_graph {
    char *name;
    int n_values, cap_values;
    kiln_graph_value *values;
    int n_nodes, cap_nodes;
    kiln_node *nodes;
    int n_inputs;          /* graph inputs that are not initializers */
    int *inputs;
    int n_outputs;
    int *outputs;
    struct kiln_graph *parent;
    struct kiln_model *model;
    int sub_id;            /* a subgraph's index in each run context's frames (runner.c); 0: none */
    /* name -> value index, open addressing with linear probing (slots hold index + 1, 0 = empty);
     * kept by kiln_graph_add_value so that lookups stay O(1) in graphs of 100k+ values */
    int *name_slots;
    size_t n_name_slots;   /* a power of two, at least twice n_values */
} kiln_graph;

typedef struct kiln_opset {
    char *domain;
    int64_t version;
} kiln_opset;

typedef struct kiln_mapping {
    void *addr;
    size_t size;
    char *path;
} kiln_mapping;

typedef struct kiln_model {
    int64_t ir_version;
    char *producer;
    int n_opsets;
    kiln_opset *opsets;
    kiln_graph *graph;
    char *dir;                 /* folder of the model file, for external data; NULL for bytes */
    int n_maps;
    kiln_mapping *maps;        /* [0] is the model file when loaded from a path */
    int n_syms;
    char **syms;               /* names of symbolic dimensions */
    size_t init_bytes, copied_init_bytes;
    size_t packed_bytes, released_init_bytes; /* core/weights.c */
    /* initializers copied at load (misaligned in the file): the copy and the file bytes it came
     * from, so that core/weights.c can drop a copy every use has packed */
    int n_copies;
    struct kiln_init_copy { const void *heap, *file; } *copies;
    /* what the file says about itself (kiln_session_model_metadata); NULL when absent */
    char *producer_version, *domain, *doc, *graph_doc;
    int64_t model_version;
    int n_props;
    char **prop_keys, **prop_values;  /* metadata_props, in file order */
    int n_denots;
    struct kiln_denotation { char *name; int sym; } *denots; /* dimension denotations of symbols */
    /* loaded from bytes: the caller's bytes (valid for the session's life), which a shape
     * specialisation loads again; NULL when loaded from a path (maps[0].path) */
    const void *src_bytes;
    size_t src_size;
} kiln_model;

/* Initializers supplied by the caller when loading (kiln_options.initializers): the main graph's
 * initializer of each name takes that tensor (copied) and its own data is never read. */
typedef struct kiln_load_overrides {
    size_t n;
    const char *const *names;
    const kiln_tensor_desc *tensors;
} kiln_load_overrides;

/* The lowest index of a value named `name`, or -1. Values are only ever added through
 * kiln_graph_add_value (never renamed or removed), which keeps the name index current. */
int kiln_graph_find_value(const kiln_graph *g, const char *name);
int kiln_graph_add_value(kiln_graph *g, const char *name); /* returns index or -1 (no memory) */
int64_t kiln_model_opset(const kiln_model *m, const char *domain);
int kiln_model_symbol(kiln_model *m, const char *name);    /* interns; returns id or -1 */
void kiln_graph_free(kiln_graph *g);
void kiln_model_free(kiln_model *m);

/* Loading (onnx/model_load.c). path/dir may be NULL for in-memory bytes. */
kiln_status kiln_model_load_file(const char *path, kiln_model **out, kiln_err *e);
kiln_status kiln_model_load_bytes(const void *bytes, size_t size, kiln_model **out, kiln_err *e);
/* The same with initializers supplied by the caller (ov may be NULL). */
kiln_status kiln_model_load_file_with(const char *path, const kiln_load_overrides *ov, kiln_model **out,
                                      kiln_err *e);
kiln_status kiln_model_load_bytes_with(const void *bytes, size_t size, const kiln_load_overrides *ov,
                                       kiln_model **out, kiln_err *e);
/* Parses a serialized TensorProto (as in test_data_set_N/input_K.pb) into a value; sequence and
 * optional protos too. The value owns its data. */
/* `kind` says which proto the bytes hold: KILN_KIND_TENSOR (TensorProto), KILN_KIND_SEQUENCE
 * (SequenceProto) or KILN_KIND_NONE (OptionalProto). *name (if not NULL) gets a malloc'd copy. */
kiln_status kiln_parse_value_proto(const void *bytes, size_t size, int kind, kiln_value *v,
                                   char **name, kiln_err *e);

const kiln_attr *kiln_node_attr(const kiln_node *n, const char *name);
/* Frees what an attribute owns (names, lists, tensors, subgraphs); the struct itself stays. */
void kiln_attr_free(kiln_attr *a);

#endif
