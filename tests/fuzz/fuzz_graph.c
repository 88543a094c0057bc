/* Structure-aware libFuzzer target over graphs and inputs. The fuzzer's bytes are a recipe, not a
 * model: they are decoded into a small valid ONNX ModelProto (1-6 nodes picked from kiln's op table,
 * inputs wired to graph inputs, initializers or earlier outputs, attributes from a small vocabulary
 * with hostile values, shapes of rank 0-5 and dtypes float32/float16/int64/int32/bool/uint8/string
 * with NaN, inf, negative and huge values) written by the tiny protobuf writer below. The model is
 * opened and, when it opens, run once with the decoded inputs. Errors are fine; a crash, a hang, a
 * leak or a sanitizer report is a finding. Every byte string decodes to some model (an exhausted
 * recipe reads as zeros), so libFuzzer's mutations stay inside the space of valid protobufs and
 * spend their time in the kernels rather than in the parser. */
#include "kiln.h"
#include "ops/op.h"
#include <math.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <errno.h>
#include <sys/stat.h>

/* Keeps every execution fast: no tensor the recipe builds holds more elements than this. */
#define MAX_ELEMS 4096
#define MAX_NODES 6
#define MAX_VALUES 64
#define MAX_RANK 5

/* ---- the recipe: bytes read in order, zeros once exhausted ---- */
typedef struct recipe {
    const uint8_t *p;
    size_t n, at;
} recipe;

static uint8_t take(recipe *r) { return r->at < r->n ? r->p[r->at++] : 0; }
static unsigned pick(recipe *r, unsigned n) { return n ? take(r) % n : 0; }
static int chance(recipe *r, unsigned one_in) { return pick(r, one_in) == 0; }

/* ---- a growable byte buffer and the protobuf wire format ---- */
typedef struct buf {
    uint8_t *p;
    size_t n, cap;
} buf;

static void put(buf *b, const void *p, size_t len) {
    if (b->n + len > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->n + len) cap *= 2;
        uint8_t *np = realloc(b->p, cap);
        if (!np) abort(); /* the harness itself out of memory: not a kiln finding, stop loudly */
        b->p = np;
        b->cap = cap;
    }
    if (len) memcpy(b->p + b->n, p, len);
    b->n += len;
}
static void put_varint(buf *b, uint64_t v) {
    uint8_t t[10];
    int k = 0;
    do {
        t[k] = (uint8_t)(v & 0x7f);
        v >>= 7;
        if (v) t[k] |= 0x80;
        k++;
    } while (v);
    put(b, t, k);
}
static void put_tag(buf *b, unsigned field, unsigned wire) { put_varint(b, (uint64_t)field << 3 | wire); }
static void put_int(buf *b, unsigned field, int64_t v) { put_tag(b, field, 0); put_varint(b, (uint64_t)v); }
static void put_bytes(buf *b, unsigned field, const void *p, size_t len) {
    put_tag(b, field, 2);
    put_varint(b, len);
    put(b, p, len);
}
static void put_str(buf *b, unsigned field, const char *s) { put_bytes(b, field, s, strlen(s)); }
static void put_float(buf *b, unsigned field, float f) {
    put_tag(b, field, 5);
    put(b, &f, 4); /* little-endian host assumed, as kiln's own writer does */
}
/* Appends a finished sub-message as a length-delimited field and empties it. */
static void put_msg(buf *b, unsigned field, buf *sub) {
    put_bytes(b, field, sub->p, sub->n);
    sub->n = 0;
}

/* ---- hostile vocabularies ---- */
static const int64_t HOSTILE_INTS[] = {
    0, 1, -1, 2, -2, 3, -3, 4, 5, -5, 7, 100, -100, INT32_MAX, INT32_MIN, (int64_t)1 << 31,
    (int64_t)1 << 40, -((int64_t)1 << 40), (int64_t)1 << 62, -((int64_t)1 << 62), INT64_MAX, INT64_MIN};
#define N_HOSTILE_INTS (sizeof HOSTILE_INTS / sizeof HOSTILE_INTS[0])

static int64_t recipe_int(recipe *r) {
    if (chance(r, 4)) return HOSTILE_INTS[pick(r, N_HOSTILE_INTS)];
    return (int64_t)pick(r, 17) - 8; /* small values, negative ones included */
}
static float recipe_float(recipe *r) {
    static const float special[] = {0.0f, -0.0f, 1.0f, -1.0f, 0.5f, 3e38f, -3e38f, 1e-45f, 65504.0f, 1e5f};
    switch (pick(r, 8)) {
    case 0: return NAN;
    case 1: return pick(r, 2) ? INFINITY : -INFINITY;
    case 2: return special[pick(r, sizeof special / sizeof special[0])];
    default: return ((int)take(r) - 128) / 16.0f;
    }
}

/* An attribute kind and name; values come from the recipe. */
enum { A_INT = 2, A_FLOAT = 1, A_STRING = 3, A_TENSOR = 4, A_INTS = 7, A_FLOATS = 6, A_STRINGS = 8 };
typedef struct attr_spec {
    const char *name;
    int kind;
} attr_spec;
static const attr_spec ATTRS[] = {
    {"axis", A_INT}, {"axes", A_INTS}, {"perm", A_INTS}, {"keepdims", A_INT}, {"to", A_INT},
    {"mode", A_STRING}, {"k", A_INT}, {"largest", A_INT}, {"sorted", A_INT}, {"batch_dims", A_INT},
    {"select_last_index", A_INT}, {"noop_with_empty_axes", A_INT}, {"exclusive", A_INT},
    {"reverse", A_INT}, {"transA", A_INT}, {"transB", A_INT}, {"alpha", A_FLOAT}, {"beta", A_FLOAT},
    {"epsilon", A_FLOAT}, {"group", A_INT}, {"pads", A_INTS}, {"strides", A_INTS},
    {"kernel_shape", A_INTS}, {"dilations", A_INTS}, {"auto_pad", A_STRING}, {"shape", A_INTS},
    {"starts", A_INTS}, {"ends", A_INTS}, {"split", A_INTS}, {"num_outputs", A_INT},
    {"blocksize", A_INT}, {"upper", A_INT}, {"ceil_mode", A_INT}, {"count_include_pad", A_INT},
    {"dtype", A_INT}, {"direction", A_STRING}, {"hidden_size", A_INT}, {"allowzero", A_INT},
    {"stash_type", A_INT}, {"p", A_INT}, {"new_axis", A_INT}, {"start", A_INT}, {"end", A_INT},
    {"reduction", A_STRING}, {"equation", A_STRING}, {"coordinate_transformation_mode", A_STRING},
    {"nearest_mode", A_STRING}, {"scales", A_FLOATS}, {"value", A_TENSOR}, {"value_int", A_INT},
    {"value_ints", A_INTS}, {"value_float", A_FLOAT}, {"fmod", A_INT}, {"saturate", A_INT},
    {"output_shape", A_INTS}, {"output_padding", A_INTS}, {"detect_negative", A_INT},
    {"activations", A_STRINGS}, {"layout", A_INT}, {"storage_order", A_INT}, {"seed", A_FLOAT},
    {"sample_size", A_INT}, {"center_point_box", A_INT}, {"spatial", A_INT}, {"size", A_INT},
    {"bias", A_FLOAT}, {"lambd", A_FLOAT}, {"gamma", A_FLOAT}, {"min", A_FLOAT}, {"max", A_FLOAT},
    {"num_heads", A_INT}, {"unidirectional", A_INT}, {"block_size", A_INT}, {"bits", A_INT},
};
#define N_ATTRS (sizeof ATTRS / sizeof ATTRS[0])
static const char *const STRINGS[] = {
    "", "constant", "reflect", "edge", "wrap", "nearest", "linear", "cubic", "DCR", "CRD",
    "bilinear", "zeros", "border", "reflection", "NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID",
    "forward", "reverse", "bidirectional", "none", "add", "mul", "max", "min", "ij,jk->ik",
    "...ii->...i", "i,i", "->", "a...,...a->...", "half_pixel", "asymmetric", "align_corners",
    "round_prefer_floor", "floor", "ceil", "Tanh", "Sigmoid", "Relu", "\xff\xfe", "tanh"};
#define N_STRINGS (sizeof STRINGS / sizeof STRINGS[0])

static const int DTYPES[] = {KILN_DTYPE_FLOAT, KILN_DTYPE_FLOAT16, KILN_DTYPE_INT64, KILN_DTYPE_INT32,
                             KILN_DTYPE_BOOL, KILN_DTYPE_UINT8, KILN_DTYPE_STRING};
#define N_DTYPES (sizeof DTYPES / sizeof DTYPES[0])

/* ---- tensors decoded from the recipe ---- */
typedef struct tensor {
    int dtype, rank;
    int64_t dims[MAX_RANK];
    size_t count;
    void *data;        /* count elements; strings: char*[count] */
    int huge_dim;      /* declared dim index replaced by a huge one in the graph's type (-1: none) */
    int symbolic_mask; /* declared dims written as dim_param */
} tensor;

static uint16_t half_bits(float f) {
    /* Rounding is irrelevant here: any bit pattern is a valid float16, NaNs and infs included. */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, exp = (x >> 23) & 0xff, man = x & 0x7fffff;
    if (exp == 0xff) return (uint16_t)(sign | 0x7c00 | (man ? 0x200 : 0));
    int e = (int)exp - 127 + 15;
    if (e >= 31) return (uint16_t)(sign | 0x7c00);
    if (e <= 0) return (uint16_t)sign;
    return (uint16_t)(sign | (unsigned)e << 10 | man >> 13);
}

static void make_tensor(recipe *r, tensor *t, int dtype) {
    memset(t, 0, sizeof *t);
    t->dtype = dtype;
    t->rank = (int)pick(r, MAX_RANK + 1);
    t->huge_dim = -1;
    size_t count = 1;
    for (int d = 0; d < t->rank; d++) {
        int64_t dim = pick(r, 8);
        if (count * (size_t)(dim ? dim : 1) > MAX_ELEMS) dim = 1;
        t->dims[d] = dim;
        count *= (size_t)dim;
    }
    if (t->rank && chance(r, 16)) t->huge_dim = (int)pick(r, t->rank);
    t->symbolic_mask = chance(r, 4) ? (int)take(r) : 0;
    t->count = count;
    size_t esize = dtype == KILN_DTYPE_STRING ? sizeof(char *) : kiln_dtype_size(dtype);
    t->data = calloc(count ? count : 1, esize);
    if (!t->data) abort();
    for (size_t i = 0; i < count; i++) {
        switch (dtype) {
        case KILN_DTYPE_FLOAT: ((float *)t->data)[i] = recipe_float(r); break;
        case KILN_DTYPE_FLOAT16: ((uint16_t *)t->data)[i] = half_bits(recipe_float(r)); break;
        case KILN_DTYPE_INT64: ((int64_t *)t->data)[i] = recipe_int(r); break;
        case KILN_DTYPE_INT32: ((int32_t *)t->data)[i] = (int32_t)recipe_int(r); break;
        case KILN_DTYPE_BOOL: ((uint8_t *)t->data)[i] = take(r) & 1; break;
        case KILN_DTYPE_UINT8: ((uint8_t *)t->data)[i] = take(r); break;
        case KILN_DTYPE_STRING: {
            unsigned len = pick(r, 6);
            char *s = malloc(len + 1);
            if (!s) abort();
            for (unsigned k = 0; k < len; k++) s[k] = (char)(take(r) | 1); /* no NUL inside */
            s[len] = 0;
            ((char **)t->data)[i] = s;
            break;
        }
        }
    }
}

static void free_tensor(tensor *t) {
    if (t->dtype == KILN_DTYPE_STRING)
        for (size_t i = 0; i < t->count; i++) free(((char **)t->data)[i]);
    free(t->data);
    t->data = NULL;
}

/* TensorProto: dims 1, data_type 2, string_data 6, name 8, raw_data 9. */
static void write_tensor_proto(buf *out, const tensor *t, const char *name) {
    for (int d = 0; d < t->rank; d++) put_int(out, 1, t->dims[d]);
    put_int(out, 2, t->dtype);
    if (name) put_str(out, 8, name);
    if (t->dtype == KILN_DTYPE_STRING) {
        for (size_t i = 0; i < t->count; i++) put_str(out, 6, ((char **)t->data)[i]);
    } else {
        put_bytes(out, 9, t->data, t->count * kiln_dtype_size(t->dtype));
    }
}

/* ValueInfoProto { name 1, type 2: TypeProto { tensor_type 1: { elem_type 1, shape 2 } } }. */
static void write_value_info(buf *out, const char *name, const tensor *t) {
    buf shape = {0}, ttype = {0}, type = {0}, dim = {0};
    put_str(out, 1, name);
    if (t) {
        for (int d = 0; d < t->rank; d++) {
            if (d == t->huge_dim) put_int(&dim, 1, (int64_t)1 << 40);
            else if (t->symbolic_mask >> d & 1) put_str(&dim, 2, d & 1 ? "N" : "M");
            else put_int(&dim, 1, t->dims[d]);
            put_msg(&shape, 1, &dim);
        }
        put_int(&ttype, 1, t->dtype);
        put_msg(&ttype, 2, &shape);
        put_msg(&type, 1, &ttype);
        put_msg(out, 2, &type);
    }
    free(shape.p), free(ttype.p), free(type.p), free(dim.p);
}

/* AttributeProto: name 1, f 2, i 3, s 4, t 5, floats 7, ints 8, strings 9, type 20. */
static void write_attr(buf *out, recipe *r) {
    const attr_spec *a = &ATTRS[pick(r, N_ATTRS)];
    put_str(out, 1, a->name);
    unsigned n = pick(r, MAX_RANK + 2);
    switch (a->kind) {
    case A_INT: put_int(out, 3, recipe_int(r)); break;
    case A_FLOAT: put_float(out, 2, recipe_float(r)); break;
    case A_STRING: put_str(out, 4, STRINGS[pick(r, N_STRINGS)]); break;
    case A_INTS: for (unsigned i = 0; i < n; i++) put_int(out, 8, recipe_int(r)); break;
    case A_FLOATS: for (unsigned i = 0; i < n; i++) put_float(out, 7, recipe_float(r)); break;
    case A_STRINGS: for (unsigned i = 0; i < n; i++) put_str(out, 9, STRINGS[pick(r, N_STRINGS)]); break;
    case A_TENSOR: {
        tensor t;
        buf tp = {0};
        make_tensor(r, &t, DTYPES[pick(r, N_DTYPES)]);
        write_tensor_proto(&tp, &t, NULL);
        put_msg(out, 5, &tp);
        free(tp.p);
        free_tensor(&t);
        break;
    }
    }
    put_int(out, 20, a->kind);
}

/* ---- the whole model ---- */
typedef struct model {
    buf bytes;
    tensor feeds[MAX_VALUES]; /* graph inputs fed at run time */
    char feed_names[MAX_VALUES][8];
    int n_feeds;
} model;

static const kiln_op **op_table(int *n) {
    static const kiln_op **ops;
    static int count;
    if (!ops) {
        count = kiln_list_ops(NULL, 0);
        ops = malloc(sizeof *ops * (size_t)count);
        if (!ops) abort();
        kiln_list_ops(ops, count);
    }
    *n = count;
    return ops;
}

static int domain_index(const char *domain) {
    if (!strcmp(domain, "")) return 0;
    return !strcmp(domain, "ai.onnx.ml") ? 1 : 2;
}

static void build_model(recipe *r, model *m) {
    static const char *const DOMAINS[] = {"", "ai.onnx.ml", "com.microsoft"};
    int n_ops;
    const kiln_op **ops = op_table(&n_ops);
    buf graph = {0}, node = {0}, sub = {0}, model_bytes = {0};
    char values[MAX_VALUES][8];
    int n_values = 0, n_init = 0;
    int opset[3] = {7, 1, 1};
    int n_nodes = 1 + (int)pick(r, MAX_NODES);
    for (int k = 0; k < n_nodes; k++) {
        const kiln_op *op = ops[(take(r) << 8 | take(r)) % (unsigned)n_ops];
        int dom = domain_index(op->domain);
        if (op->since > opset[dom]) opset[dom] = op->since;
        int n_in = 1 + (int)pick(r, 3), n_out = chance(r, 3) ? 2 + (int)pick(r, 2) : 1;
        for (int i = 0; i < n_in; i++) {
            /* 0-2: a new graph input (an exhausted recipe reads 0: a fed input, not an absent
             * one), 3-5: an earlier value, 6: an initializer, 7: an absent optional input */
            unsigned src = pick(r, 8);
            if (src == 7) { put_str(&node, 1, ""); continue; }
            if (src >= 3 && src < 6 && n_values > 0) { put_str(&node, 1, values[pick(r, n_values)]); continue; }
            if (n_values >= MAX_VALUES - 4) { put_str(&node, 1, ""); continue; }
            tensor t;
            make_tensor(r, &t, DTYPES[pick(r, N_DTYPES)]);
            if (src != 6 && m->n_feeds < MAX_VALUES) {
                char *name = m->feed_names[m->n_feeds];
                snprintf(name, 8, "x%d", m->n_feeds);
                write_value_info(&sub, name, &t);
                put_msg(&graph, 11, &sub);
                m->feeds[m->n_feeds++] = t;
                snprintf(values[n_values++], 8, "%s", name);
            } else {
                snprintf(values[n_values], 8, "w%d", n_init++);
                write_tensor_proto(&sub, &t, values[n_values]);
                put_msg(&graph, 5, &sub);
                free_tensor(&t);
                put_str(&node, 1, values[n_values++]);
                continue;
            }
            put_str(&node, 1, values[n_values - 1]);
        }
        for (int o = 0; o < n_out && n_values < MAX_VALUES; o++) {
            snprintf(values[n_values], 8, "y%d_%d", k, o);
            put_str(&node, 2, values[n_values]);
            write_value_info(&sub, values[n_values], NULL); /* every output is a graph output */
            put_msg(&graph, 12, &sub);
            n_values++;
        }
        char name[16];
        snprintf(name, sizeof name, "n%d", k);
        put_str(&node, 3, name);
        put_str(&node, 4, op->name);
        if (*op->domain) put_str(&node, 7, op->domain);
        for (unsigned a = pick(r, 4); a > 0; a--) {
            write_attr(&sub, r);
            put_msg(&node, 5, &sub);
        }
        put_msg(&graph, 1, &node);
    }
    put_str(&graph, 2, "fuzz");
    /* Sometimes a later opset than the ops need, so that version-dependent rules are reached. */
    if (chance(r, 4) && opset[0] < 22) opset[0] += 1 + (int)pick(r, 22 - opset[0]);
    put_int(&model_bytes, 1, 8); /* ir_version */
    for (int d = 0; d < 3; d++) {
        put_str(&sub, 1, DOMAINS[d]);
        put_int(&sub, 2, opset[d]);
        put_msg(&model_bytes, 8, &sub);
    }
    put_msg(&model_bytes, 7, &graph);
    m->bytes = model_bytes;
    free(graph.p), free(node.p), free(sub.p);
}

/* FUZZ_GRAPH_DUMP=path writes the decoded model there, so a reproducer can be read with onnx. */
static void dump_model(const model *m) {
    const char *path = getenv("FUZZ_GRAPH_DUMP");
    FILE *f = path ? fopen(path, "wb") : NULL;
    if (!f) return;
    fwrite(m->bytes.p, 1, m->bytes.n, f);
    fclose(f);
}

/* FUZZ_GRAPH_DUMP_DIR=dir writes each decoded recipe as dir/<hash>/model.onnx with its feeds in
 * dir/<hash>/test_data_set_0/input_<i>.pb (the layout of ONNX's backend tests) and runs nothing:
 * tests/fuzz/differential.py runs the dumps in kiln and onnxruntime. The name is a hash of the
 * recipe, so replaying a corpus twice writes the same directories. Returns 1 when in that mode. */
static int dump_case(const uint8_t *data, size_t size, const model *m) {
    const char *dir = getenv("FUZZ_GRAPH_DUMP_DIR");
    if (!dir) return 0;
    uint64_t h = 14695981039346656037ull; /* FNV-1a */
    for (size_t i = 0; i < size; i++) h = (h ^ data[i]) * 1099511628211ull;
    char path[4096];
    mkdir(dir, 0777);
    snprintf(path, sizeof path, "%s/%016llx", dir, (unsigned long long)h);
    mkdir(path, 0777);
    snprintf(path, sizeof path, "%s/%016llx/test_data_set_0", dir, (unsigned long long)h);
    if (mkdir(path, 0777) != 0 && errno != EEXIST) abort(); /* the harness cannot write: stop loudly */
    snprintf(path, sizeof path, "%s/%016llx/model.onnx", dir, (unsigned long long)h);
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    fwrite(m->bytes.p, 1, m->bytes.n, f);
    fclose(f);
    for (int i = 0; i < m->n_feeds; i++) {
        buf tp = {0};
        write_tensor_proto(&tp, &m->feeds[i], m->feed_names[i]);
        snprintf(path, sizeof path, "%s/%016llx/test_data_set_0/input_%d.pb", dir, (unsigned long long)h, i);
        f = fopen(path, "wb");
        if (!f) abort();
        fwrite(tp.p, 1, tp.n, f);
        fclose(f);
        free(tp.p);
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    recipe r = {data, size, 0};
    model m;
    memset(&m, 0, sizeof m);
    build_model(&r, &m);
    dump_model(&m);
    if (dump_case(data, size, &m)) {
        for (int i = 0; i < m.n_feeds; i++) free_tensor(&m.feeds[i]);
        free(m.bytes.p);
        return 0;
    }
    kiln_options opt;
    kiln_options_init(&opt);
    opt.threads = 1;
    opt.opt_level = (int)pick(&r, 3);
    opt.memory_limit = (size_t)256 << 20; /* a runaway graph fails instead of exhausting the host */
    kiln_session *s = NULL;
    int verbose = getenv("FUZZ_GRAPH_VERBOSE") != NULL; /* says how far each input got, and why */
    kiln_status st = kiln_session_open_bytes(m.bytes.p, m.bytes.n, &opt, &s);
    if (verbose) fprintf(stderr, "open: %s %s\n", kiln_status_name(st), st ? kiln_last_error() : "");
    if (st == KILN_OK) {
        const char *names[MAX_VALUES];
        kiln_tensor_desc in[MAX_VALUES];
        for (int i = 0; i < m.n_feeds; i++) {
            names[i] = m.feed_names[i];
            in[i] = (kiln_tensor_desc){(kiln_dtype)m.feeds[i].dtype, m.feeds[i].rank, m.feeds[i].dims,
                                       m.feeds[i].data, KILN_MEMORY_HOST};
        }
        size_t n_out = kiln_session_output_count(s);
        kiln_value **outs = calloc(n_out ? n_out : 1, sizeof *outs);
        if (!outs) abort();
        kiln_run_options ro = {0};
        ro.timeout_ms = 2000; /* loops with hostile trip counts stop; libFuzzer's -timeout is the backstop */
        st = kiln_run_with_options(s, &ro, (size_t)m.n_feeds, names, in, 0, NULL, outs);
        if (verbose) fprintf(stderr, "run: %s %s\n", kiln_status_name(st), st ? kiln_session_error(s) : "");
        if (st == KILN_OK) {
            for (size_t i = 0; i < n_out; i++) kiln_value_free(outs[i]);
        }
        free(outs);
        kiln_session_close(s);
    }
    for (int i = 0; i < m.n_feeds; i++) free_tensor(&m.feeds[i]);
    free(m.bytes.p);
    return 0;
}
