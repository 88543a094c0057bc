/* kiln_model -> ModelProto. Field numbers are those of onnx.proto (the same the loader reads).
 *
 * A nested protobuf message is preceded by its length, so every message is produced twice by the
 * same function: once into a counter (no output, only the byte count), then for real. Counting
 * costs a walk of the structure per nesting level but never copies tensor bytes, which go from
 * the model straight to the file: a model's weights are not held twice in memory. */
#include "model_write.h"
#include "../core/dtype.h"
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { WT_VARINT = 0, WT_I64 = 1, WT_LEN = 2, WT_I32 = 5 };

typedef struct writer {
    const kiln_model *m;
    kiln_err *e;
    kiln_status st;      /* the first content error (a tensor that cannot be written) */
    int n_opsets;
    kiln_opset *opsets;  /* the imports written: the model's, plus what its nodes need */
    int64_t ir_version;
    const char *ext_name;  /* external data file (relative to the model), or NULL */
    size_t ext_min;        /* initializers of at least this many bytes go there */
    FILE *ext;             /* open while writing for real; NULL while counting */
    int64_t *ext_at;       /* per value of the main graph: its offset in the external file, or -1 */
    int ext_err;           /* errno of a failed write to it */
} writer;

typedef struct pbw {
    FILE *f;             /* NULL: count only */
    uint64_t n;          /* bytes produced */
    int io_err;          /* errno of a failed write, 0 if none */
    writer *wr;
} pbw;

typedef void (*msg_fn)(pbw *w, const void *arg);

/* ---------------------------------------------------------------- wire format */

static void put(pbw *w, const void *p, size_t len) {
    w->n += len;
    if (w->f && len && !w->io_err && fwrite(p, 1, len, w->f) != len) w->io_err = errno ? errno : EIO;
}

static int varint_len(uint64_t v) {
    int k = 1;
    while (v >= 0x80) { v >>= 7; k++; }
    return k;
}

static void put_varint(pbw *w, uint64_t v) {
    uint8_t b[10];
    int k = 0;
    do {
        b[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) b[k] |= 0x80;
        k++;
    } while (v);
    put(w, b, (size_t)k);
}

static void put_tag(pbw *w, uint32_t field, int wire_type) {
    put_varint(w, ((uint64_t)field << 3) | (uint64_t)wire_type);
}

/* int64 fields go out as two's complement (ten bytes for a negative value), as protobuf does */
static void put_int(pbw *w, uint32_t field, int64_t v) {
    put_tag(w, field, WT_VARINT);
    put_varint(w, (uint64_t)v);
}

static void put_bytes(pbw *w, uint32_t field, const void *p, size_t len) {
    put_tag(w, field, WT_LEN);
    put_varint(w, len);
    put(w, p, len);
}

static void put_str(pbw *w, uint32_t field, const char *s) { put_bytes(w, field, s, strlen(s)); }

static void put_le32(pbw *w, uint32_t v) {
    uint8_t b[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(w, b, 4);
}

static void put_float(pbw *w, uint32_t field, float f) {
    uint32_t bits;
    memcpy(&bits, &f, 4);
    put_tag(w, field, WT_I32);
    put_le32(w, bits);
}

static void put_msg(pbw *w, uint32_t field, msg_fn fn, const void *arg) {
    pbw count = {NULL, 0, 0, w->wr};
    fn(&count, arg);
    put_tag(w, field, WT_LEN);
    put_varint(w, count.n);
    if (w->f) fn(w, arg);
    else w->n += count.n; /* counting: the body was just counted */
}

static void content_error(pbw *w, kiln_status code, const char *what, const char *name) {
    if (w->wr->st) return;
    w->wr->st = kiln_fail(w->wr->e, code, "cannot write the model: %s '%s'", what, name ? name : "");
}

/* ---------------------------------------------------------------- tensors */

typedef struct tensor_arg {
    const kiln_tensor *t;
    const char *name;    /* NULL: none (attribute tensors) */
    int64_t ext_off;     /* >= 0: the bytes go to the external data file at this offset */
} tensor_arg;

/* StringStringEntryProto {1 key, 2 value}. */
typedef struct entry_arg { const char *key, *value; } entry_arg;
static void entry_fn(pbw *w, const void *arg) {
    const entry_arg *a = arg;
    put_str(w, 1, a->key);
    put_str(w, 2, a->value);
}

/* Places the tensor's bytes in the external file (for real only when writing) and writes the
 * TensorProto fields that point there: 13 external_data, 14 data_location = EXTERNAL. */
static void put_external(pbw *w, const void *data, size_t bytes, int64_t off) {
    writer *wr = w->wr;
    /* put_msg calls this once more for every enclosing message while counting, and exactly once
     * while writing for real (w->f set): the bytes go out then, at the offset planned up front */
    if (wr->ext && w->f && !wr->ext_err && bytes &&
        (fseeko(wr->ext, (off_t)off, SEEK_SET) || fwrite(data, 1, bytes, wr->ext) != bytes))
        wr->ext_err = errno ? errno : EIO;
    char o[32], l[32];
    snprintf(o, sizeof o, "%llu", (unsigned long long)off);
    snprintf(l, sizeof l, "%llu", (unsigned long long)bytes);
    entry_arg loc = {"location", wr->ext_name}, eo = {"offset", o}, el = {"length", l};
    put_msg(w, 13, entry_fn, &loc);
    put_msg(w, 13, entry_fn, &eo);
    put_msg(w, 13, entry_fn, &el);
    put_int(w, 14, 1);
}

/* TensorProto {1 dims, 2 data_type, 6 string_data, 8 name, 9 raw_data}. */
static void tensor_fn(pbw *w, const void *arg) {
    const tensor_arg *ta = arg;
    const kiln_tensor *t = ta->t;
    int64_t numel = kiln_numel(t);
    if (t->rank < 0 || numel < 0) {
        content_error(w, KILN_ERR_INVALID_ARGUMENT, "a tensor of unknown shape", ta->name);
        return;
    }
    if (t->dev) {
        content_error(w, KILN_ERR_INVALID_ARGUMENT, "a tensor in device memory", ta->name);
        return;
    }
    if (!t->data && numel > 0) {
        content_error(w, KILN_ERR_INVALID_ARGUMENT, "a tensor without data", ta->name);
        return;
    }
    for (int d = 0; d < t->rank; d++) put_int(w, 1, t->dims[d]);
    put_int(w, 2, t->dtype);
    if (ta->name) put_str(w, 8, ta->name);
    if (t->dtype == KILN_DTYPE_STRING) {
        char *const *s = t->data;
        for (int64_t i = 0; i < numel; i++) put_bytes(w, 6, kiln_str_bytes(s[i]), kiln_str_len(s[i]));
    } else {
        size_t bytes = kiln_dtype_bytes(t->dtype, numel);
        if (ta->ext_off >= 0) put_external(w, t->data, bytes, ta->ext_off);
        else put_bytes(w, 9, t->data, bytes);
    }
}

/* The int64 indices 0..n-1 of a sparse tensor written densely, streamed without a buffer. */
static void iota_fn(pbw *w, const void *arg) {
    int64_t n = *(const int64_t *)arg;
    put_int(w, 1, n);
    put_int(w, 2, KILN_DTYPE_INT64);
    put_tag(w, 9, WT_LEN);
    put_varint(w, (uint64_t)n * 8);
    for (int64_t i = 0; i < n; i++) {
        put_le32(w, (uint32_t)i);
        put_le32(w, (uint32_t)((uint64_t)i >> 32));
    }
}

/* SparseTensorProto {1 values, 2 indices, 3 dims}: the loader densified sparse attributes, so
 * every element is written as a value at its linear index. */
static void sparse_fn(pbw *w, const void *arg) {
    const kiln_tensor *t = arg;
    int64_t numel = kiln_numel(t);
    if (numel < 0) {
        content_error(w, KILN_ERR_INVALID_ARGUMENT, "a sparse tensor of unknown shape", "");
        return;
    }
    kiln_tensor flat = *t;
    flat.rank = 1;
    flat.dims[0] = numel;
    tensor_arg values = {&flat, NULL, -1};
    put_msg(w, 1, tensor_fn, &values);
    put_msg(w, 2, iota_fn, &numel);
    for (int d = 0; d < t->rank; d++) put_int(w, 3, t->dims[d]);
}

/* ---------------------------------------------------------------- types */

/* TensorShapeProto {1 dim {1 dim_value | 2 dim_param}}; an unknown dimension is an empty dim. */
static void shape_fn(pbw *w, const void *arg) {
    const kiln_type *t = arg;
    const kiln_model *m = w->wr->m;
    for (int d = 0; d < t->rank; d++) {
        int64_t v = t->dims[d];
        if (v >= 0) {
            put_tag(w, 1, WT_LEN);
            put_varint(w, (uint64_t)(1 + varint_len((uint64_t)v)));
            put_int(w, 1, v);
        } else if (KILN_DIM_IS_SYM(v) && KILN_DIM_SYM_ID(v) < m->n_syms) {
            const char *s = m->syms[KILN_DIM_SYM_ID(v)];
            size_t len = strlen(s);
            put_tag(w, 1, WT_LEN);
            put_varint(w, 1 + (uint64_t)varint_len(len) + len);
            put_bytes(w, 2, s, len);
        } else {
            put_bytes(w, 1, NULL, 0);
        }
    }
}

/* TypeProto.Tensor {1 elem_type, 2 shape}; no shape when the rank is unknown. */
static void tensor_type_fn(pbw *w, const void *arg) {
    const kiln_type *t = arg;
    put_int(w, 1, t->dtype);
    if (t->rank >= 0) put_msg(w, 2, shape_fn, t);
}

static void type_fn(pbw *w, const void *arg);

/* The element of a sequence or optional: one level of wrapping taken off. */
static void elem_fn(pbw *w, const void *arg) {
    const kiln_type *t = arg;
    kiln_type inner = *t;
    if (inner.optional) inner.optional = 0;
    else inner.kind = inner.kind == KILN_KIND_MAP_SEQUENCE ? KILN_KIND_MAP : KILN_KIND_TENSOR;
    put_msg(w, 1, type_fn, &inner);
}

/* TypeProto.Map {1 key_type, 2 value_type (a tensor type without shape)}. */
static void map_fn(pbw *w, const void *arg) {
    const kiln_type *t = arg;
    kiln_type inner = *t;
    inner.kind = KILN_KIND_TENSOR;
    inner.key_dtype = 0;
    inner.rank = -1;
    put_int(w, 1, t->key_dtype);
    put_msg(w, 2, type_fn, &inner);
}

/* TypeProto {1 tensor_type, 4 sequence_type, 5 map_type, 9 optional_type}. */
static void type_fn(pbw *w, const void *arg) {
    const kiln_type *t = arg;
    if (t->optional) put_msg(w, 9, elem_fn, t);
    else if (t->kind == KILN_KIND_SEQUENCE || t->kind == KILN_KIND_MAP_SEQUENCE) put_msg(w, 4, elem_fn, t);
    else if (t->kind == KILN_KIND_MAP) put_msg(w, 5, map_fn, t);
    else put_msg(w, 1, tensor_type_fn, t);
}

typedef struct value_info_arg {
    const kiln_graph_value *v;
} value_info_arg;

/* ValueInfoProto {1 name, 2 type}; the type only when its element type is known. */
static void value_info_fn(pbw *w, const void *arg) {
    const kiln_graph_value *v = ((const value_info_arg *)arg)->v;
    put_str(w, 1, v->name);
    if (v->has_type && v->type.dtype) put_msg(w, 2, type_fn, &v->type);
}

static void put_value_info(pbw *w, uint32_t field, const kiln_graph_value *v) {
    value_info_arg a = {v};
    put_msg(w, field, value_info_fn, &a);
}

/* ---------------------------------------------------------------- nodes and attributes */

static void graph_fn(pbw *w, const void *arg);

static int list_count(const kiln_attr *a, int filled) { return a->n > filled ? a->n : filled; }

/* AttributeProto {1 name, 20 type, 2 f, 3 i, 4 s, 5 t, 6 g, 7 floats, 8 ints, 9 strings,
 * 10 tensors, 11 graphs, 14 tp, 23 sparse_tensors}. */
static void attr_fn(pbw *w, const void *arg) {
    const kiln_attr *a = arg;
    put_str(w, 1, a->name);
    put_int(w, 20, a->type);
    switch (a->type) {
    case KILN_ATTR_FLOAT: put_float(w, 2, a->f); break;
    case KILN_ATTR_INT: put_int(w, 3, a->i); break;
    case KILN_ATTR_STRING: put_bytes(w, 4, a->s, a->s ? a->s_len : 0); break;
    case KILN_ATTR_TENSOR: {
        tensor_arg ta = {a->t, NULL, -1};
        if (a->t) put_msg(w, 5, tensor_fn, &ta);
        break;
    }
    case KILN_ATTR_GRAPH: if (a->g) put_msg(w, 6, graph_fn, a->g); break;
    case KILN_ATTR_FLOATS: /* packed: one length-delimited run of little-endian floats */
        put_tag(w, 7, WT_LEN);
        put_varint(w, (uint64_t)a->n * 4);
        for (int i = 0; i < a->n; i++) {
            uint32_t bits;
            memcpy(&bits, &a->floats[i], 4);
            put_le32(w, bits);
        }
        break;
    case KILN_ATTR_INTS: {
        uint64_t len = 0;
        for (int i = 0; i < a->n; i++) len += (uint64_t)varint_len((uint64_t)a->ints[i]);
        put_tag(w, 8, WT_LEN);
        put_varint(w, len);
        for (int i = 0; i < a->n; i++) put_varint(w, (uint64_t)a->ints[i]);
        break;
    }
    case KILN_ATTR_STRINGS:
        for (int i = 0; a->strings && i < list_count(a, a->n_strings); i++)
            put_bytes(w, 9, kiln_str_bytes(a->strings[i]), kiln_str_len(a->strings[i]));
        break;
    case KILN_ATTR_TENSORS:
        for (int i = 0; a->tensors && i < list_count(a, a->n_tensors); i++) {
            tensor_arg ta = {&a->tensors[i], NULL, -1};
            put_msg(w, 10, tensor_fn, &ta);
        }
        break;
    case KILN_ATTR_SPARSE_TENSORS:
        for (int i = 0; a->tensors && i < list_count(a, a->n_tensors); i++) put_msg(w, 23, sparse_fn, &a->tensors[i]);
        break;
    case KILN_ATTR_GRAPHS:
        for (int i = 0; a->graphs && i < list_count(a, a->n_graphs); i++) put_msg(w, 11, graph_fn, a->graphs[i]);
        break;
    case KILN_ATTR_TYPE_PROTO: {
        /* the loader keeps only a tensor type's element type */
        kiln_type t = {KILN_KIND_TENSOR, 0, a->tp_elem_type, -1, {0}};
        put_msg(w, 14, type_fn, &t);
        break;
    }
    default: break; /* TYPE_PROTOS: the loader keeps none of them */
    }
}

typedef struct node_arg {
    const kiln_graph *g;
    const kiln_node *n;
} node_arg;

static const char *value_name(const kiln_graph *g, int v) { return v >= 0 ? g->values[v].name : ""; }

/* NodeProto {1 input, 2 output, 3 name, 4 op_type, 5 attribute, 7 domain}. */
static void node_fn(pbw *w, const void *arg) {
    const node_arg *na = arg;
    const kiln_node *n = na->n;
    for (int k = 0; k < n->n_in; k++) put_str(w, 1, value_name(na->g, n->in[k]));
    for (int k = 0; k < n->n_out; k++) put_str(w, 2, value_name(na->g, n->out[k]));
    put_str(w, 3, n->name);
    put_str(w, 4, n->op_type);
    for (int k = 0; k < n->n_attrs; k++)
        if (n->attrs[k].type != KILN_ATTR_UNDEFINED) put_msg(w, 5, attr_fn, &n->attrs[k]);
    if (n->domain[0]) put_str(w, 7, n->domain);
}

/* kiln:MatMulBias (an optimizer product no other runtime knows) is written as the MatMul and the
 * Add it was made of, so that an optimized file stays portable. */
typedef struct split_arg {
    const kiln_graph *g;
    const kiln_node *n;
    int add; /* 0: the MatMul, 1: the Add */
    const char *product;
} split_arg;

static void split_node_fn(pbw *w, const void *arg) {
    const split_arg *sa = arg;
    const kiln_node *n = sa->n;
    char name[512];
    snprintf(name, sizeof name, "%s%s", n->name, sa->add ? "_bias" : "");
    if (!sa->add) {
        put_str(w, 1, value_name(sa->g, n->in[0]));
        put_str(w, 1, value_name(sa->g, n->in[1]));
        put_str(w, 2, sa->product);
        put_str(w, 3, name);
        put_str(w, 4, "MatMul");
    } else {
        put_str(w, 1, sa->product);
        put_str(w, 1, value_name(sa->g, n->in[2]));
        put_str(w, 2, value_name(sa->g, n->out[0]));
        put_str(w, 3, name);
        put_str(w, 4, "Add");
    }
}

/* com.microsoft FusedConv with a HardSwish activation (kiln's fusion; ORT's FusedConv has no
 * HardSwish) is written as the FusedConv without its activation and a HardSwish after it. */
static int hswish_conv(const kiln_node *n) {
    if (strcmp(n->domain, "com.microsoft") || strcmp(n->op_type, "FusedConv") || n->n_out != 1)
        return 0;
    for (int k = 0; k < n->n_attrs; k++)
        if (n->attrs[k].type == KILN_ATTR_STRING && !strcmp(n->attrs[k].name, "activation"))
            return n->attrs[k].s && !strcmp(n->attrs[k].s, "HardSwish");
    return 0;
}

static void hswish_split_fn(pbw *w, const void *arg) {
    const split_arg *sa = arg;
    const kiln_node *n = sa->n;
    if (!sa->add) {
        for (int k = 0; k < n->n_in; k++) put_str(w, 1, value_name(sa->g, n->in[k]));
        put_str(w, 2, sa->product);
        put_str(w, 3, n->name);
        put_str(w, 4, n->op_type);
        for (int k = 0; k < n->n_attrs; k++) {
            const kiln_attr *a = &n->attrs[k];
            if (a->type != KILN_ATTR_UNDEFINED && strcmp(a->name, "activation") &&
                strcmp(a->name, "activation_params"))
                put_msg(w, 5, attr_fn, a);
        }
        put_str(w, 7, n->domain);
    } else {
        char name[512];
        snprintf(name, sizeof name, "%s_hardswish", n->name);
        put_str(w, 1, sa->product);
        put_str(w, 2, value_name(sa->g, n->out[0]));
        put_str(w, 3, name);
        put_str(w, 4, "HardSwish");
    }
}

/* A node written as two, joined by the value <name><suffix>: fn writes part 0, then part 1. */
static void put_split(pbw *w, const kiln_graph *g, const kiln_node *n, const char *suffix,
                      msg_fn fn) {
    char product[512];
    snprintf(product, sizeof product, "%s%s", n->name, suffix);
    for (int part = 0; part < 2; part++) {
        split_arg sa = {g, n, part, product};
        put_msg(w, 1, fn, &sa);
    }
}

static void put_node(pbw *w, const kiln_graph *g, const kiln_node *n) {
    if (hswish_conv(n)) {
        put_split(w, g, n, "_preact", hswish_split_fn);
        return;
    }
    if (!strcmp(n->domain, "kiln") && !strcmp(n->op_type, "MatMulBias") && n->n_in == 3 && n->n_out == 1) {
        put_split(w, g, n, "_product", split_node_fn);
        return;
    }
    node_arg na = {g, n};
    put_msg(w, 1, node_fn, &na);
}

/* ---------------------------------------------------------------- graphs */

static int node_live(const kiln_graph *g, int i) { return i >= 0 && i < g->n_nodes && !g->nodes[i].removed; }

enum { READ_BY_NODE = 1, GRAPH_OUTPUT = 2 };

/* Per value: read by a live node (an input or, for a subgraph, an implicit read) or a graph
 * output. NULL when out of memory. */
static unsigned char *value_uses(const kiln_graph *g) {
    unsigned char *u = calloc((size_t)(g->n_values ? g->n_values : 1), 1);
    if (!u) return NULL;
    for (int i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->removed) continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0) u[n->in[k]] |= READ_BY_NODE;
        for (int k = 0; k < n->n_implicit; k++) u[n->implicit[k]] |= READ_BY_NODE;
    }
    for (int i = 0; i < g->n_outputs; i++) u[g->outputs[i]] |= GRAPH_OUTPUT;
    return u;
}

/* Initializers: constants loaded, added by rewrites, or made by folding (out of a removed node),
 * when something reads them. Unread ones are left out: the fusions orphan the constants of the
 * nodes they replace, and an initializer nobody reads changes nothing. */
static int writes_as_initializer(const kiln_graph *g, const unsigned char *uses, int v) {
    const kiln_graph_value *gv = &g->values[v];
    if (!gv->is_const || gv->outer >= 0 || !uses[v]) return 0;
    return gv->producer < 0 || !node_live(g, gv->producer); /* else a live node makes it */
}

/* value_info: typed intermediates that a live node makes. */
static int writes_value_info(const kiln_graph *g, const unsigned char *uses, int v) {
    const kiln_graph_value *gv = &g->values[v];
    return gv->has_type && gv->type.dtype && !gv->is_input && !gv->is_const && gv->outer < 0 &&
           node_live(g, gv->producer) && !(uses[v] & GRAPH_OUTPUT);
}

static void put_initializer(pbw *w, const kiln_graph_value *gv) {
    if (gv->konst.kind != KILN_KIND_TENSOR) {
        content_error(w, KILN_ERR_NOT_IMPLEMENTED, "a constant that is not a tensor (ONNX initializers are tensors):",
                      gv->name);
        return;
    }
    tensor_arg ta = {&gv->konst.t, gv->name, -1};
    const kiln_graph *main = w->wr->m->graph;
    if (w->wr->ext_at && gv >= main->values && gv < main->values + main->n_values)
        ta.ext_off = w->wr->ext_at[gv - main->values];
    put_msg(w, 5, tensor_fn, &ta);
}

/* GraphProto {1 node, 2 name, 5 initializer, 11 input, 12 output, 13 value_info}. */
static void graph_fn(pbw *w, const void *arg) {
    const kiln_graph *g = arg;
    unsigned char *uses = value_uses(g);
    if (!uses) {
        if (!w->wr->st) w->wr->st = kiln_fail(w->wr->e, KILN_ERR_NO_MEMORY, "out of memory");
        return;
    }
    for (int i = 0; i < g->n_nodes; i++)
        if (!g->nodes[i].removed) put_node(w, g, &g->nodes[i]);
    /* the checker wants a name; a graph built in memory may have none */
    put_str(w, 2, g->name && g->name[0] ? g->name : "graph");
    if (g == w->wr->m->graph && w->wr->m->graph_doc) put_str(w, 10, w->wr->m->graph_doc);
    for (int v = 0; v < g->n_values; v++)
        if (writes_as_initializer(g, uses, v)) put_initializer(w, &g->values[v]);
    for (int i = 0; i < g->n_inputs; i++) put_value_info(w, 11, &g->values[g->inputs[i]]);
    /* before IR 4 every initializer had to be listed as an input as well */
    if (w->wr->ir_version < 4)
        for (int v = 0; v < g->n_values; v++)
            if (writes_as_initializer(g, uses, v)) put_value_info(w, 11, &g->values[v]);
    for (int i = 0; i < g->n_outputs; i++) put_value_info(w, 12, &g->values[g->outputs[i]]);
    for (int v = 0; v < g->n_values; v++)
        if (writes_value_info(g, uses, v)) put_value_info(w, 13, &g->values[v]);
    free(uses);
}

/* ---------------------------------------------------------------- model */

static void opset_fn(pbw *w, const void *arg) {
    const kiln_opset *o = arg;
    if (o->domain[0]) put_str(w, 1, o->domain);
    put_int(w, 2, o->version);
}

/* ModelProto {1 ir_version, 2 producer_name, 3 producer_version, 4 domain, 5 model_version,
 * 6 doc_string, 7 graph, 8 opset_import, 14 metadata_props}. */
static void model_fn(pbw *w, const void *arg) {
    const writer *wr = arg;
    const kiln_model *m = wr->m;
    put_int(w, 1, wr->ir_version);
    put_str(w, 2, "kiln");
    put_str(w, 3, KILN_VERSION);
    if (m->domain) put_str(w, 4, m->domain);
    if (m->model_version) put_int(w, 5, m->model_version);
    if (m->doc) put_str(w, 6, m->doc);
    put_msg(w, 7, graph_fn, m->graph);
    for (int i = 0; i < wr->n_opsets; i++) put_msg(w, 8, opset_fn, &wr->opsets[i]);
    for (int i = 0; i < m->n_props; i++) {
        entry_arg p = {m->prop_keys[i], m->prop_values[i]};
        put_msg(w, 14, entry_fn, &p);
    }
}

static const char *norm_domain(const char *d) { return !d || !strcmp(d, "ai.onnx") ? "" : d; }

/* The oldest IR version that may import ai.onnx opset `v` (onnx.helper.VERSION_TABLE). */
static int64_t ir_for_opset(int64_t v) {
    static const int64_t table[][2] = {{9, 4}, {10, 5}, {11, 6}, {12, 7}, {15, 8}, {19, 9},
                                       {21, 10}, {23, 11}, {24, 12}, {25, 13}};
    int64_t ir = 3;
    for (size_t i = 0; i < sizeof table / sizeof *table; i++)
        if (v >= table[i][0]) ir = table[i][1];
    return ir;
}

/* Nodes that rewrites made may need a domain the model does not import (com.microsoft fusions)
 * or a newer version of one it does (the ONNX Attention fusion is opset 23): the imports grow to
 * cover them, since an ONNX model imports one version per domain. */
static kiln_status need_opset(writer *wr, const char *domain, int version) {
    domain = norm_domain(domain);
    if (version < 1) version = 1;
    for (int i = 0; i < wr->n_opsets; i++)
        if (!strcmp(norm_domain(wr->opsets[i].domain), domain)) {
            if (wr->opsets[i].version < version) wr->opsets[i].version = version;
            return KILN_OK;
        }
    kiln_opset *o = realloc(wr->opsets, (size_t)(wr->n_opsets + 1) * sizeof *o);
    if (!o) return kiln_fail(wr->e, KILN_ERR_NO_MEMORY, "out of memory");
    wr->opsets = o;
    o[wr->n_opsets].domain = (char *)domain; /* borrowed from a node or the model */
    o[wr->n_opsets++].version = version;
    return KILN_OK;
}

static kiln_status gather_opsets(writer *wr, const kiln_graph *g) {
    for (int i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->removed) continue;
        KILN_TRY(need_opset(wr, n->domain, n->opset));
        if (hswish_conv(n)) KILN_TRY(need_opset(wr, "", 14)); /* HardSwish */
        for (int k = 0; k < n->n_attrs; k++) {
            const kiln_attr *a = &n->attrs[k];
            if (a->g) KILN_TRY(gather_opsets(wr, a->g));
            for (int j = 0; a->graphs && j < a->n_graphs; j++) KILN_TRY(gather_opsets(wr, a->graphs[j]));
        }
    }
    return KILN_OK;
}

static kiln_status plan_opsets(writer *wr) {
    const kiln_model *m = wr->m;
    if (m->n_opsets) {
        wr->opsets = malloc((size_t)m->n_opsets * sizeof *wr->opsets);
        if (!wr->opsets) return kiln_fail(wr->e, KILN_ERR_NO_MEMORY, "out of memory");
        memcpy(wr->opsets, m->opsets, (size_t)m->n_opsets * sizeof *wr->opsets);
        wr->n_opsets = m->n_opsets;
    }
    int64_t before = kiln_model_opset(m, "");
    KILN_TRY(gather_opsets(wr, m->graph));
    wr->ir_version = m->ir_version >= 3 ? m->ir_version : 3;
    for (int i = 0; i < wr->n_opsets; i++) {
        const kiln_opset *o = &wr->opsets[i];
        if (!norm_domain(o->domain)[0] && o->version != before && ir_for_opset(o->version) > wr->ir_version)
            wr->ir_version = ir_for_opset(o->version);
    }
    return KILN_OK;
}

/* Writes the counted model to a new file beside `path` and renames it over `path`. */
static kiln_status write_file(writer *wr, const char *path, uint64_t size) {
    static unsigned serial;
    size_t len = strlen(path) + 64;
    char *tmp = malloc(len);
    if (!tmp) return kiln_fail(wr->e, KILN_ERR_NO_MEMORY, "out of memory");
    snprintf(tmp, len, "%s.tmp%ld.%u", path, (long)getpid(), __atomic_fetch_add(&serial, 1, __ATOMIC_RELAXED));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) {
        int err = errno;
        free(tmp);
        return kiln_fail(wr->e, KILN_ERR_IO, "cannot write '%s': %s", path, strerror(err));
    }
    FILE *f = fdopen(fd, "wb");
    if (!f) {
        int err = errno;
        close(fd);
        unlink(tmp);
        free(tmp);
        return kiln_fail(wr->e, KILN_ERR_IO, "cannot write '%s': %s", path, strerror(err));
    }
    setvbuf(f, NULL, _IOFBF, 1 << 20);
    pbw w = {f, 0, 0, wr};
    errno = 0;
    model_fn(&w, wr);
    int err = w.io_err;
    if (!err && fflush(f)) err = errno ? errno : EIO;
    if (fclose(f) && !err) err = errno ? errno : EIO;
    if (!err && w.n != size) err = EIO; /* the model changed between counting and writing */
    if (!err && rename(tmp, path)) err = errno;
    if (err) {
        unlink(tmp);
        free(tmp);
        return kiln_fail(wr->e, KILN_ERR_IO, "cannot write '%s': %s", path, strerror(err));
    }
    free(tmp);
    return KILN_OK;
}

/* Offsets in the external data file for the main graph's initializers that go there (64-byte
 * aligned, so that a loader can use them in place); returns the file's size. */
static int64_t plan_external(writer *wr) {
    const kiln_graph *g = wr->m->graph;
    unsigned char *uses = value_uses(g);
    wr->ext_at = malloc((size_t)(g->n_values ? g->n_values : 1) * sizeof *wr->ext_at);
    if (!uses || !wr->ext_at) {
        free(uses);
        return -1;
    }
    int64_t end = 0;
    for (int v = 0; v < g->n_values; v++) {
        wr->ext_at[v] = -1;
        const kiln_graph_value *gv = &g->values[v];
        if (!writes_as_initializer(g, uses, v) || gv->konst.kind != KILN_KIND_TENSOR ||
            gv->konst.t.dtype == KILN_DTYPE_STRING || gv->konst.t.dev)
            continue;
        int64_t numel = kiln_numel(&gv->konst.t);
        if (numel < 0) continue;
        size_t bytes = kiln_dtype_bytes(gv->konst.t.dtype, numel);
        if (bytes < wr->ext_min || bytes == 0) continue;
        /* shapes, axes, pads: shape inference (ONNX Runtime's included) reads them from the model
         * and refuses external data, so integer vectors stay inside */
        int dt = gv->konst.t.dtype;
        if (gv->konst.t.rank <= 1 && (dt == KILN_DTYPE_INT64 || dt == KILN_DTYPE_INT32)) continue;
        end = (end + 63) & ~(int64_t)63;
        wr->ext_at[v] = end;
        end += (int64_t)bytes;
    }
    free(uses);
    return end;
}

/* The external data file's path: beside the model file. */
static char *external_path(const char *model_path, const char *name) {
    const char *slash = strrchr(model_path, '/');
    size_t dir = slash ? (size_t)(slash - model_path) + 1 : 0;
    char *p = malloc(dir + strlen(name) + 1);
    if (!p) return NULL;
    memcpy(p, model_path, dir);
    strcpy(p + dir, name);
    return p;
}

kiln_status kiln_model_write(const kiln_model *m, const char *path, kiln_err *e) {
    return kiln_model_write_ext(m, path, NULL, 0, e);
}

kiln_status kiln_model_write_ext(const kiln_model *m, const char *path, const char *external, size_t min_bytes,
                                 kiln_err *e) {
    if (!m || !m->graph) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "kiln_model_write: no model");
    if (!path || !path[0]) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "kiln_model_write: no output path");
    writer wr = {m, e, KILN_OK, 0, NULL, 0, NULL, 0, NULL, NULL, 0};
    char *ext_path = NULL, *ext_tmp = NULL;
    if (external) {
        if (!external[0] || external[0] == '/' || strstr(external, ".."))
            return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT,
                             "external data file name '%s' must be a relative name inside the model's folder", external);
        wr.ext_name = external;
        wr.ext_min = min_bytes;
        ext_path = external_path(path, external);
        ext_tmp = ext_path ? malloc(strlen(ext_path) + 32) : NULL;
        if (!ext_tmp || plan_external(&wr) < 0) {
            free(ext_path);
            free(ext_tmp);
            free(wr.ext_at);
            return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
        }
        /* a new file renamed into place once written: the model being written may be the one
         * mapped from the old external file (the session reads its initializers from there) */
        snprintf(ext_tmp, strlen(ext_path) + 32, "%s.tmp%ld", ext_path, (long)getpid());
    }
    kiln_status st = plan_opsets(&wr);
    /* the counting pass also finds what cannot be written, before any file is touched */
    pbw count = {NULL, 0, 0, &wr};
    if (!st) {
        model_fn(&count, &wr);
        st = wr.st;
    }
    if (!st && count.n > INT32_MAX)
        st = kiln_fail(e, KILN_ERR_NOT_IMPLEMENTED,
                       "cannot write '%s': the model takes %llu bytes, more than the 2 GiB a protobuf "
                       "file can hold (the writer does not produce external data files)", path,
                       (unsigned long long)count.n);
    if (!st && ext_tmp) {
        wr.ext = fopen(ext_tmp, "wb");
        if (!wr.ext) st = kiln_fail(e, KILN_ERR_IO, "cannot write '%s': %s", ext_path, strerror(errno));
    }
    if (!st) st = write_file(&wr, path, count.n);
    if (wr.ext) {
        int err = wr.ext_err;
        if (fclose(wr.ext) && !err) err = errno ? errno : EIO;
        if (!st && !err && rename(ext_tmp, ext_path)) err = errno;
        if (!st && err) st = kiln_fail(e, KILN_ERR_IO, "cannot write '%s': %s", ext_path, strerror(err));
        if (st) unlink(ext_tmp);
    }
    free(ext_path);
    free(ext_tmp);
    free(wr.ext_at);
    free(wr.opsets);
    return st;
}
