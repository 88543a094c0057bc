/* kiln_graph_to_float16: a float32 model rewritten, in memory, to compute in float16 while its
 * float32 inputs and outputs stay float32 (the behaviour of ONNX Runtime's float16 converter with
 * keep_io_types=True, written from the ONNX specification).
 *
 * The rewrite is planned per value. Every float32 value gets a "home" precision, the one its
 * producer makes it in: float32 for graph inputs and for what float32-only nodes produce, float16
 * for the rest. Every reader slot wants a precision: float32 for graph outputs, for float32-only
 * nodes and for the few inputs the specification fixes to float32 (Resize's roi and scales),
 * float16 elsewhere. Where the two differ the reader is pointed at a twin of the value in the
 * other precision: a Cast placed right after the producer (so node order stays topological), or,
 * for an initializer, a second initializer. Constants (initializers, Constant nodes, Cast to
 * float) are flexible: read in float32 anywhere, they stay float32, so that Resize scales keep
 * their exact values (a float16 scale can change the output size), and their float16 readers get
 * a twin, which is the same conversion done once.
 *
 * Element types come from the declared types, then kiln's static inference (the kernels' infer
 * functions), then a few rules for ops inference could not reach. */
#include "optimize.h"
#include "pattern.h"
#include "../core/dtype.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { P_NONE = 0, P16 = 16, P32 = 32 };
enum { WANT16 = 1, WANT32 = 2 };

typedef struct pending_cast {
    int after;        /* node index the cast follows; -1: the front of the graph */
    kiln_node node;
} pending_cast;

typedef struct f16_ctx {
    kiln_model *m;
    kiln_graph *g;
    kiln_err *e;
    int verbose;
    int n_vals, n_nodes;  /* counts before the rewrite: plans index these */
    int *dtype;           /* element type of each original value (0: unknown) */
    signed char *is_seq;  /* the value is a sequence (no Cast can convert it) */
    signed char *fp32_node;
    unsigned char *want;  /* WANT16 / WANT32: what the value's readers ask for */
    signed char *home;
    int *twin;            /* the value in the other precision, -1 if none */
    pending_cast *casts;
    int n_casts, cap_casts;
    size_t converted, clamped;
} f16_ctx;

/* ---------------------------------------------------------------- op tables */

/* ONNX Runtime's DEFAULT_OP_BLOCK_LIST: ops without float16 kernels or whose float16 results are
 * not trusted; they run in float32 between Casts. */
static const char *const block_list[] = {
    "ArrayFeatureExtractor", "Binarizer", "CastMap", "CategoryMapper", "DictVectorizer",
    "FeatureVectorizer", "Imputer", "LabelEncoder", "LinearClassifier", "LinearRegressor",
    "Normalizer", "OneHotEncoder", "RandomUniformLike", "SVMClassifier", "SVMRegressor", "Scaler",
    "TreeEnsembleClassifier", "TreeEnsembleRegressor", "ZipMap", "NonMaxSuppression", "TopK",
    "RoiAlign", "Range", "CumSum", "Min", "Max", "Upsample", NULL};

static int in_list(const char *const *list, const char *s) {
    for (int i = 0; list[i]; i++)
        if (!strcmp(list[i], s)) return 1;
    return 0;
}

static int std_domain(const kiln_node *n) {
    return !n->domain[0] || !strcmp(n->domain, "ai.onnx.ml");
}

/* Nodes that must compute in float32: the block list, and the quantization ops whose
 * specification (before opset 19, or always for DynamicQuantizeLinear) takes only float32. */
static int runs_fp32(const kiln_node *n) {
    if (!std_domain(n)) return 0;
    if (in_list(block_list, n->op_type) || !strcmp(n->op_type, "DynamicQuantizeLinear")) return 1;
    if ((!strcmp(n->op_type, "QuantizeLinear") || !strcmp(n->op_type, "DequantizeLinear")) &&
        n->opset < 19)
        return 1;
    return 0;
}

/* Inputs the specification types as float32 whatever the node's T: Resize's roi and scales
 * (roi may be float16, but tf_crop_and_resize coordinates lose precision there); GroupNorm's
 * gamma and beta as ONNX Runtime's converter keeps them (ALWAYS_FLOAT_INPUTS). */
static int input_fixed_fp32(const kiln_node *n, int k) {
    if (!n->domain[0] && !strcmp(n->op_type, "Resize")) return k == 1 || k == 2;
    if (!strcmp(n->domain, "com.microsoft") &&
        (!strcmp(n->op_type, "GroupNorm") || !strcmp(n->op_type, "SkipGroupNorm")))
        return k == 1 || k == 2;
    return 0;
}

/* Outputs typed U = stash_type (float32 by default): the mean and inverse standard deviation of
 * the layer normalizations. */
static int output_fixed_fp32(const kiln_node *n, int k) {
    if (k != 1 && k != 2) return 0;
    const char *op = n->op_type;
    if (!strcmp(op, "LayerNormalization") || !strcmp(op, "SimplifiedLayerNormalization") ||
        !strcmp(op, "SkipLayerNormalization") || !strcmp(op, "SkipSimplifiedLayerNormalization"))
        return kiln_attr_int(n, "stash_type", KILN_DTYPE_FLOAT) == KILN_DTYPE_FLOAT;
    return 0;
}

/* Producers whose float32 output is a constant conversion away from float16: they keep float32
 * when any reader wants it, and float16 readers get one Cast (the same rounding). */
static int flexible_producer(const kiln_node *n) {
    if (n->domain[0]) return 0;
    if (!strcmp(n->op_type, "Constant")) return 1;
    return !strcmp(n->op_type, "Cast") && kiln_attr_int(n, "to", 0) == KILN_DTYPE_FLOAT;
}

/* ---------------------------------------------------------------- element types */

static int attr_dtype(const kiln_node *n, const char *name, int dflt) {
    return (int)kiln_attr_int(n, name, dflt);
}

static int constant_dtype(const kiln_node *n) {
    for (int k = 0; k < n->n_attrs; k++) {
        const kiln_attr *a = &n->attrs[k];
        if (a->t) return a->t->dtype;
        if (!strcmp(a->name, "value_float") || !strcmp(a->name, "value_floats")) return KILN_DTYPE_FLOAT;
        if (!strcmp(a->name, "value_int") || !strcmp(a->name, "value_ints")) return KILN_DTYPE_INT64;
        if (!strcmp(a->name, "value_string") || !strcmp(a->name, "value_strings")) return KILN_DTYPE_STRING;
    }
    return 0;
}

static int in_dtype(const f16_ctx *c, const kiln_node *n, int k) {
    return k < n->n_in && n->in[k] >= 0 ? c->dtype[n->in[k]] : 0;
}

/* Output k's element type by the op's type rules, for outputs static inference left unknown. */
static int rule_dtype(const f16_ctx *c, const kiln_node *n, int k) {
    static const char *const boolean[] = {"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual",
                                          "Not", "And", "Or", "Xor", "IsNaN", "IsInf", NULL};
    static const char *const int64[] = {"Shape", "Size", "ArgMax", "ArgMin", "NonZero",
                                        "NonMaxSuppression", NULL};
    const char *op = n->op_type;
    if (in_list(boolean, op)) return KILN_DTYPE_BOOL;
    if (in_list(int64, op)) return KILN_DTYPE_INT64;
    if (!strcmp(op, "Cast")) return attr_dtype(n, "to", 0);
    if (!strcmp(op, "CastLike")) return in_dtype(c, n, 1);
    if (!strcmp(op, "Constant")) return constant_dtype(n);
    if (!strcmp(op, "ConstantOfShape")) {
        const kiln_tensor *t = kiln_attr_tensor(n, "value");
        return t ? t->dtype : KILN_DTYPE_FLOAT;
    }
    if (!strcmp(op, "RandomNormal") || !strcmp(op, "RandomUniform"))
        return attr_dtype(n, "dtype", KILN_DTYPE_FLOAT);
    if (!strcmp(op, "RandomNormalLike") || !strcmp(op, "RandomUniformLike") || !strcmp(op, "EyeLike") ||
        !strcmp(op, "Bernoulli"))
        return attr_dtype(n, "dtype", in_dtype(c, n, 0));
    if (!strcmp(op, "Multinomial")) return attr_dtype(n, "dtype", KILN_DTYPE_INT32);
    if ((!strcmp(op, "TopK") || !strcmp(op, "Unique")) && k > 0) return KILN_DTYPE_INT64;
    if (!strcmp(op, "Where")) return in_dtype(c, n, 1);
    if (!strcmp(op, "OneHot")) return in_dtype(c, n, 2);
    if (!strcmp(op, "DequantizeLinear")) return n->opset < 19 ? KILN_DTYPE_FLOAT : in_dtype(c, n, 1);
    if (!strcmp(op, "QuantizeLinear")) return in_dtype(c, n, 2) ? in_dtype(c, n, 2) : KILN_DTYPE_UINT8;
    if (!strcmp(op, "DynamicQuantizeLinear")) return k == 1 ? KILN_DTYPE_FLOAT : KILN_DTYPE_UINT8;
    if (!strcmp(op, "MatMulInteger") || !strcmp(op, "ConvInteger")) return KILN_DTYPE_INT32;
    if (output_fixed_fp32(n, k)) return KILN_DTYPE_FLOAT;
    /* most ops: the type of their first (data) input */
    for (int i = 0; i < n->n_in; i++)
        if (in_dtype(c, n, i)) return in_dtype(c, n, i);
    return 0;
}

/* Declared types first (they are what the file promises), then static inference, then rules. */
static kiln_status infer_dtypes(f16_ctx *c) {
    kiln_graph *g = c->g;
    opt_ctx oc;
    kiln_status st = opt_ctx_init(&oc, g, NULL, 0, c->e);
    for (int v = 0; !st && v < c->n_vals; v++) {
        const kiln_graph_value *gv = &g->values[v];
        if (gv->is_const) {
            c->is_seq[v] = gv->konst.kind == KILN_KIND_SEQUENCE;
            c->dtype[v] = c->is_seq[v] ? gv->konst.seq_dtype : gv->konst.t.dtype;
        } else if (gv->has_type && gv->type.dtype) {
            c->is_seq[v] = gv->type.kind == KILN_KIND_SEQUENCE;
            c->dtype[v] = gv->type.dtype;
        } else if (oc.facts && oc.facts[v].kind == KILN_KIND_SEQUENCE) {
            c->is_seq[v] = 1;
            c->dtype[v] = oc.facts[v].seq_dtype;
        } else if (oc.facts && oc.facts[v].kind == KILN_KIND_TENSOR) {
            c->dtype[v] = oc.facts[v].t.dtype;
        }
    }
    opt_ctx_free(&oc);
    if (st) return st;
    for (int i = 0; i < c->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_out; k++)
            if (n->out[k] >= 0 && !c->dtype[n->out[k]]) c->dtype[n->out[k]] = rule_dtype(c, n, k);
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- planning */

static int is_float(const f16_ctx *c, int v) { return v >= 0 && v < c->n_vals && c->dtype[v] == KILN_DTYPE_FLOAT; }

/* Readers that take any element type and whose result does not depend on it (Cast converts
 * from whatever it gets, Shape and Size read only the shape): they read a value in its home
 * precision, so a graph input read only by them needs no Cast. */
static int any_precision_reader(const kiln_node *n) {
    return !n->domain[0] && (!strcmp(n->op_type, "Cast") || !strcmp(n->op_type, "Shape") ||
                             !strcmp(n->op_type, "Size"));
}

/* The precision input k of node `node` wants, P_NONE when any will do. */
static int reader_prec(const f16_ctx *c, int node, int k) {
    const kiln_node *n = &c->g->nodes[node];
    if (c->fp32_node[node] || input_fixed_fp32(n, k)) return P32;
    return any_precision_reader(n) ? P_NONE : P16;
}

/* A float32-only node fed by a value of unknown type could be fed float16 unnoticed: refuse. */
static kiln_status check_fp32_inputs(f16_ctx *c) {
    for (int i = 0; i < c->n_nodes; i++) {
        const kiln_node *n = &c->g->nodes[i];
        if (n->removed) continue;
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v < 0 || c->dtype[v] || reader_prec(c, i, k) != P32) continue;
            return kiln_fail(c->e, KILN_ERR_NOT_IMPLEMENTED,
                             "float16 conversion: cannot tell the element type of '%s', input %d of "
                             "node '%s' (%s), which must stay float32; declare its type in the "
                             "model's value_info", c->g->values[v].name, k, n->name, n->op_type);
        }
    }
    return KILN_OK;
}

static void collect_wants(f16_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < c->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        if (n->removed) continue;
        for (int k = 0; k < n->n_in; k++) {
            int p = reader_prec(c, i, k);
            if (is_float(c, n->in[k]) && p != P_NONE) c->want[n->in[k]] |= p == P32 ? WANT32 : WANT16;
        }
    }
    for (int i = 0; i < g->n_outputs; i++)
        if (is_float(c, g->outputs[i])) c->want[g->outputs[i]] |= WANT32; /* keep_io_types */
}

static int home_of(const f16_ctx *c, int v) {
    const kiln_graph_value *gv = &c->g->values[v];
    int flexible_home = c->want[v] & WANT32 ? P32 : P16;
    if (gv->is_input) return P32;
    if (gv->is_const) return flexible_home;
    int p = gv->producer;
    if (p < 0 || p >= c->n_nodes) return P16;
    const kiln_node *n = &c->g->nodes[p];
    if (c->fp32_node[p]) return P32;
    for (int k = 0; k < n->n_out; k++)
        if (n->out[k] == v && output_fixed_fp32(n, k)) return P32;
    if (flexible_producer(n)) return flexible_home;
    return P16;
}

/* ---------------------------------------------------------------- new values and nodes */

/* A value name not yet in the graph: base, else base_1, base_2, ... */
static int add_unique_value(f16_ctx *c, const char *base) {
    size_t len = strlen(base) + 24;
    char *name = malloc(len);
    if (!name) return -1;
    snprintf(name, len, "%s", base);
    for (int k = 1; kiln_graph_find_value(c->g, name) >= 0; k++) snprintf(name, len, "%s_%d", base, k);
    int v = kiln_graph_add_value(c->g, name);
    free(name);
    return v;
}

static int node_name_taken(const f16_ctx *c, const char *name) {
    for (int i = 0; i < c->g->n_nodes; i++)
        if (!strcmp(c->g->nodes[i].name, name)) return 1;
    for (int i = 0; i < c->n_casts; i++)
        if (!strcmp(c->casts[i].node.name, name)) return 1;
    return 0;
}

static char *unique_node_name(const f16_ctx *c, const char *base) {
    size_t len = strlen(base) + 24;
    char *name = malloc(len);
    if (!name) return NULL;
    snprintf(name, len, "%s", base);
    for (int k = 1; node_name_taken(c, name); k++) snprintf(name, len, "%s_%d", base, k);
    return name;
}

static void node_free(kiln_node *n) {
    free(n->name);
    free(n->op_type);
    free(n->domain);
    free(n->in);
    free(n->out);
    for (int k = 0; k < n->n_attrs; k++) kiln_attr_free(&n->attrs[k]);
    free(n->attrs);
    memset(n, 0, sizeof *n);
}

/* The default domain's opset for the Casts; a model importing none (ai.onnx.ml only) gets one. */
static kiln_status cast_opset(f16_ctx *c, int *out) {
    int64_t v = kiln_model_opset(c->m, "");
    if (v < 0) {
        kiln_opset *os = realloc(c->m->opsets, (size_t)(c->m->n_opsets + 1) * sizeof *os);
        if (!os) return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
        c->m->opsets = os;
        if (!(os[c->m->n_opsets].domain = strdup(""))) return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
        os[c->m->n_opsets++].version = v = 13;
    }
    *out = (int)v;
    return KILN_OK;
}

/* Queues Cast(from) -> to, placed after node `after` (-1: first in the graph). */
static kiln_status queue_cast(f16_ctx *c, int after, int from, int to, int to_dtype) {
    if (c->n_casts == c->cap_casts) {
        int cap = c->cap_casts ? c->cap_casts * 2 : 16;
        pending_cast *p = realloc(c->casts, (size_t)cap * sizeof *p);
        if (!p) return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
        c->casts = p;
        c->cap_casts = cap;
    }
    kiln_node n = {0};
    char base[64 + 1024];
    snprintf(base, sizeof base, "%s_cast_to_%s", c->g->values[from].name,
             to_dtype == KILN_DTYPE_FLOAT16 ? "fp16" : "fp32");
    n.name = unique_node_name(c, base);
    n.op_type = strdup("Cast");
    n.domain = strdup("");
    n.in = malloc(sizeof(int));
    n.out = malloc(sizeof(int));
    n.attrs = calloc(1, sizeof *n.attrs);
    kiln_status st = cast_opset(c, &n.opset);
    if (!st && (!n.name || !n.op_type || !n.domain || !n.in || !n.out || !n.attrs ||
                !opt_attr_int(&n.attrs[0], "to", to_dtype)))
        st = kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    n.n_attrs = n.attrs ? 1 : 0;
    if (st) {
        node_free(&n);
        return st;
    }
    n.n_in = n.n_out = 1;
    n.in[0] = from;
    n.out[0] = to;
    c->casts[c->n_casts].after = after;
    c->casts[c->n_casts++].node = n;
    return KILN_OK;
}

/* ---------------------------------------------------------------- float16 data */

/* ONNX Runtime's converter clamps rather than overflows: finite values beyond float16's range
 * become +-65504 (so that, say, a -3.4e38 attention-mask fill stays finite and 0 * fill stays 0),
 * and tiny non-zeros become the smallest subnormal instead of 0. */
static kiln_f16 to_f16_clamped(f16_ctx *c, float x) {
    const float max_f16 = 65504.0f, min_sub = 5.9604645e-08f;
    if (isfinite(x)) {
        float a = fabsf(x);
        if (a > max_f16) {
            x = copysignf(max_f16, x);
            c->clamped++;
        } else if (a > 0 && a < min_sub) {
            x = copysignf(min_sub, x);
            c->clamped++;
        }
    }
    return kiln_f32_to_f16(x);
}

/* *dst = src in float16 (a new heap buffer: src may live in the mapped model file). */
static kiln_status f16_copy(f16_ctx *c, const kiln_tensor *src, kiln_tensor *dst) {
    kiln_tensor h = {0};
    kiln_tensor_set_shape(&h, KILN_DTYPE_FLOAT16, src->rank, src->dims);
    KILN_TRY(kiln_tensor_alloc(&h, c->e));
    int64_t n = kiln_numel(src);
    const float *s = src->data;
    kiln_f16 *d = h.data;
    for (int64_t i = 0; i < n; i++) d[i] = to_f16_clamped(c, s[i]);
    *dst = h;
    c->converted++;
    return KILN_OK;
}

static kiln_status tensor_to_f16(f16_ctx *c, kiln_tensor *t) {
    if (t->dtype != KILN_DTYPE_FLOAT) return KILN_OK;
    if (t->dev) return kiln_fail(c->e, KILN_ERR_INVALID_ARGUMENT, "float16 conversion: a tensor is in device memory");
    kiln_tensor h;
    KILN_TRY(f16_copy(c, t, &h));
    kiln_tensor_release(t);
    *t = h;
    return KILN_OK;
}

/* Constant(value_float / value_floats) -> Constant(value = float16 tensor). */
static kiln_status float_attr_to_tensor(f16_ctx *c, kiln_attr *a) {
    int list = !strcmp(a->name, "value_floats");
    kiln_tensor *t = calloc(1, sizeof *t), f = {0};
    char *name = strdup("value");
    if (!t || !name) {
        free(t);
        free(name);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    int64_t n = list ? a->n : 1;
    f.dtype = KILN_DTYPE_FLOAT;
    f.rank = list;
    f.dims[0] = n;
    f.data = list ? (void *)a->floats : (void *)&a->f;
    kiln_status st = f16_copy(c, &f, t);
    if (st) {
        free(t);
        free(name);
        return st;
    }
    kiln_attr_free(a);
    memset(a, 0, sizeof *a);
    a->name = name;
    a->type = KILN_ATTR_TENSOR;
    a->t = t;
    return KILN_OK;
}

static kiln_status add_attr(f16_ctx *c, kiln_node *n, kiln_attr **out) {
    kiln_attr *a = realloc(n->attrs, (size_t)(n->n_attrs + 1) * sizeof *a);
    if (!a) return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    n->attrs = a;
    *out = &a[n->n_attrs];
    memset(*out, 0, sizeof **out);
    return KILN_OK;
}

static kiln_status set_int_attr(f16_ctx *c, kiln_node *n, const char *name, int64_t v) {
    for (int k = 0; k < n->n_attrs; k++)
        if (!strcmp(n->attrs[k].name, name)) {
            n->attrs[k].i = v;
            return KILN_OK;
        }
    kiln_attr *a;
    KILN_TRY(add_attr(c, n, &a));
    if (!opt_attr_int(a, name, v)) {
        kiln_attr_free(a);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    n->n_attrs++;
    return KILN_OK;
}

/* ConstantOfShape without `value` makes float32 zeros: give it a float16 zero. */
static kiln_status add_f16_zero_value(f16_ctx *c, kiln_node *n) {
    kiln_attr *a;
    KILN_TRY(add_attr(c, n, &a));
    a->name = strdup("value");
    a->type = KILN_ATTR_TENSOR;
    a->t = calloc(1, sizeof *a->t);
    int64_t one = 1;
    if (a->t) kiln_tensor_set_shape(a->t, KILN_DTYPE_FLOAT16, 1, &one);
    if (!a->name || !a->t || kiln_tensor_alloc(a->t, c->e)) {
        kiln_attr_free(a);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    n->n_attrs++;
    c->converted++;
    return KILN_OK;
}

/* A node that now computes in float16: its float tensors and the attributes that name float32
 * as an output type. */
static kiln_status convert_node(f16_ctx *c, kiln_node *n) {
    const char *op = n->op_type;
    int std = !n->domain[0];
    for (int k = 0; k < n->n_attrs; k++) {
        kiln_attr *a = &n->attrs[k];
        if (a->t) KILN_TRY(tensor_to_f16(c, a->t));
        for (int j = 0; a->tensors && j < a->n_tensors; j++) KILN_TRY(tensor_to_f16(c, &a->tensors[j]));
        if (a->type == KILN_ATTR_TYPE_PROTO && a->tp_elem_type == KILN_DTYPE_FLOAT)
            a->tp_elem_type = KILN_DTYPE_FLOAT16;
        if (std && !strcmp(op, "Constant") &&
            (!strcmp(a->name, "value_float") || !strcmp(a->name, "value_floats")))
            KILN_TRY(float_attr_to_tensor(c, a));
    }
    if (!std) return KILN_OK;
    if (!strcmp(op, "Cast") && kiln_attr_int(n, "to", 0) == KILN_DTYPE_FLOAT)
        return set_int_attr(c, n, "to", KILN_DTYPE_FLOAT16);
    if (!strcmp(op, "ConstantOfShape") && !kiln_has_attr(n, "value")) return add_f16_zero_value(c, n);
    int dflt_float = !strcmp(op, "RandomNormal") || !strcmp(op, "RandomUniform") || !strcmp(op, "SequenceEmpty");
    int has_dtype = dflt_float || !strcmp(op, "RandomNormalLike") || !strcmp(op, "EyeLike") ||
                    !strcmp(op, "Bernoulli");
    if (has_dtype && kiln_attr_int(n, "dtype", dflt_float ? KILN_DTYPE_FLOAT : 0) == KILN_DTYPE_FLOAT)
        return set_int_attr(c, n, "dtype", KILN_DTYPE_FLOAT16);
    return KILN_OK;
}

/* ---------------------------------------------------------------- the rewrite */

static void set_type_dtype(kiln_graph_value *gv, int dtype) {
    if (!gv->has_type) return;
    gv->type.dtype = dtype;
}

/* A new value holding v in precision `prec`, typed like v, named after v with the suffix of
 * `name_prec` (which differs from prec when the twin will trade names with v). */
static int new_twin_value(f16_ctx *c, int v, int prec, int name_prec) {
    char base[1100];
    snprintf(base, sizeof base, "%s_%s", c->g->values[v].name, name_prec == P16 ? "fp16" : "fp32");
    int t = add_unique_value(c, base);
    if (t < 0) return -1;
    kiln_graph_value *src = &c->g->values[v], *tv = &c->g->values[t];
    tv->type = src->type;
    tv->has_type = src->has_type;
    set_type_dtype(tv, prec == P16 ? KILN_DTYPE_FLOAT16 : KILN_DTYPE_FLOAT);
    return t;
}

/* Initializer kept float32 for its float32 readers; its float16 readers read a float16 copy. */
static kiln_status make_const_twin(f16_ctx *c, int v) {
    int t = new_twin_value(c, v, P16, P16);
    if (t < 0) return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_graph_value *tv = &c->g->values[t];
    tv->is_const = 1;
    tv->konst.kind = KILN_KIND_TENSOR;
    tv->type.kind = KILN_KIND_TENSOR;
    KILN_TRY(f16_copy(c, &c->g->values[v].konst.t, &tv->konst.t));
    tv->type.dtype = KILN_DTYPE_FLOAT16;
    tv->type.rank = tv->konst.t.rank;
    memcpy(tv->type.dims, tv->konst.t.dims, sizeof tv->type.dims);
    tv->has_type = 1;
    c->twin[v] = t;
    return KILN_OK;
}

static int is_graph_output(const f16_ctx *c, int v) {
    for (int i = 0; i < c->g->n_outputs; i++)
        if (c->g->outputs[i] == v) return 1;
    return 0;
}

/* A float16 graph output: the Cast to float32 takes over the output's name (and its place in the
 * output list), the float16 value is renamed "<name>_fp16". */
static void take_over_output(f16_ctx *c, int v, int t) {
    kiln_graph_value *a = &c->g->values[v], *b = &c->g->values[t];
    char *name = a->name;
    a->name = b->name;
    b->name = name;
    b->type = a->type; /* the declared output type (float32) */
    b->has_type = a->has_type;
    for (int i = 0; i < c->g->n_outputs; i++)
        if (c->g->outputs[i] == v) c->g->outputs[i] = t;
}

static kiln_status make_twin(f16_ctx *c, int v) {
    kiln_graph_value *gv = &c->g->values[v];
    int other = c->home[v] == P16 ? P32 : P16;
    if (c->is_seq[v])
        return kiln_fail(c->e, KILN_ERR_NOT_IMPLEMENTED,
                         "float16 conversion: '%s' is a sequence of float32 tensors that would need a "
                         "Cast to float%s, which sequences cannot have", gv->name, other == P16 ? "16" : "32");
    if (gv->is_const && !gv->is_input && gv->producer < 0) return make_const_twin(c, v);
    int takes_over = other == P32 && is_graph_output(c, v);
    int t = new_twin_value(c, v, other, takes_over ? P16 : other);
    if (t < 0) return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    c->twin[v] = t;
    if (takes_over) take_over_output(c, v, t);
    int after = c->g->values[v].producer; /* -1 for graph inputs: the front */
    return queue_cast(c, after, v, t, other == P16 ? KILN_DTYPE_FLOAT16 : KILN_DTYPE_FLOAT);
}

static kiln_status make_twins(f16_ctx *c) {
    for (int v = 0; v < c->n_vals; v++) {
        c->twin[v] = -1;
        if (!is_float(c, v)) continue;
        int other = c->home[v] == P16 ? WANT32 : WANT16;
        if (c->want[v] & other) KILN_TRY(make_twin(c, v));
    }
    return KILN_OK;
}

static void rewire_readers(f16_ctx *c) {
    for (int i = 0; i < c->n_nodes; i++) {
        kiln_node *n = &c->g->nodes[i];
        if (n->removed) continue;
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k], p = reader_prec(c, i, k);
            if (is_float(c, v) && p != P_NONE && p != c->home[v]) n->in[k] = c->twin[v];
        }
    }
}

static kiln_status convert_data(f16_ctx *c) {
    kiln_graph *g = c->g;
    for (int v = 0; v < c->n_vals; v++) {
        kiln_graph_value *gv = &g->values[v];
        if (!is_float(c, v) || c->home[v] != P16) continue;
        if (gv->is_const && gv->konst.kind == KILN_KIND_TENSOR) {
            KILN_TRY(tensor_to_f16(c, &gv->konst.t));
            gv->type.dtype = KILN_DTYPE_FLOAT16;
        } else if (gv->has_type && gv->type.dtype == KILN_DTYPE_FLOAT) {
            gv->type.dtype = KILN_DTYPE_FLOAT16;
        }
    }
    for (int i = 0; i < c->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (n->removed || c->fp32_node[i]) continue;
        /* a flexible producer kept in float32 for its float32 readers stays as it is */
        if (flexible_producer(n) && n->n_out > 0 && is_float(c, n->out[0]) && c->home[n->out[0]] == P32)
            continue;
        kiln_status st = convert_node(c, n);
        if (st) {
            kiln_err_prefix(c->e, "float16 conversion of node '%s' (%s)", n->name, n->op_type);
            return st;
        }
    }
    return KILN_OK;
}

/* Inserts the queued Casts: those of graph inputs first, the others right after the node making
 * their input, so every node still follows what it reads. */
static kiln_status place_casts(f16_ctx *c) {
    kiln_graph *g = c->g;
    if (!c->n_casts) return KILN_OK;
    int total = g->n_nodes + c->n_casts, w = 0;
    kiln_node *nodes = malloc((size_t)total * sizeof *nodes);
    int *first = malloc((size_t)(g->n_nodes + 2) * sizeof *first), *order = malloc((size_t)c->n_casts * sizeof *order);
    if (!nodes || !first || !order) {
        free(nodes); free(first); free(order);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    /* counting sort of the casts by the slot they follow (slot 0: the front), stable */
    memset(first, 0, (size_t)(g->n_nodes + 2) * sizeof *first);
    for (int i = 0; i < c->n_casts; i++) first[c->casts[i].after + 2]++;
    for (int s = 1; s < g->n_nodes + 2; s++) first[s] += first[s - 1];
    for (int i = 0; i < c->n_casts; i++) order[first[c->casts[i].after + 1]++] = i;
    int next = 0;
    for (int s = -1; s < g->n_nodes; s++) {
        if (s >= 0) nodes[w++] = g->nodes[s];
        while (next < c->n_casts && c->casts[order[next]].after == s) nodes[w++] = c->casts[order[next++]].node;
    }
    free(first);
    free(order);
    free(g->nodes);
    g->nodes = nodes;
    g->n_nodes = g->cap_nodes = total;
    c->n_casts = 0; /* the nodes now belong to the graph */
    for (int v = 0; v < g->n_values; v++) g->values[v].producer = -1;
    for (int i = 0; i < g->n_nodes; i++)
        for (int k = 0; k < g->nodes[i].n_out; k++)
            if (g->nodes[i].out[k] >= 0) g->values[g->nodes[i].out[k]].producer = i;
    return KILN_OK;
}

static kiln_status refuse_subgraphs(const kiln_graph *g, kiln_err *e) {
    for (int i = 0; i < g->n_nodes; i++) {
        const kiln_node *n = &g->nodes[i];
        for (int k = 0; k < n->n_attrs; k++)
            if (n->attrs[k].g || n->attrs[k].n_graphs)
                return kiln_fail(e, KILN_ERR_NOT_IMPLEMENTED,
                                 "float16 conversion: node '%s' (%s) holds a subgraph (attribute '%s'); "
                                 "models with subgraphs are not converted", n->name, n->op_type,
                                 n->attrs[k].name);
    }
    return KILN_OK;
}

static void ctx_free(f16_ctx *c) {
    for (int i = 0; i < c->n_casts; i++) node_free(&c->casts[i].node);
    free(c->casts);
    free(c->dtype);
    free(c->is_seq);
    free(c->fp32_node);
    free(c->want);
    free(c->home);
    free(c->twin);
}

static kiln_status plan_and_rewrite(f16_ctx *c) {
    KILN_TRY(infer_dtypes(c));
    for (int i = 0; i < c->n_nodes; i++) c->fp32_node[i] = (signed char)runs_fp32(&c->g->nodes[i]);
    KILN_TRY(check_fp32_inputs(c));
    collect_wants(c);
    for (int v = 0; v < c->n_vals; v++) c->home[v] = (signed char)(is_float(c, v) ? home_of(c, v) : P_NONE);
    KILN_TRY(make_twins(c));
    rewire_readers(c);
    KILN_TRY(convert_data(c));
    return place_casts(c);
}

kiln_status kiln_graph_to_float16(kiln_model *m, int verbose, size_t *converted, kiln_err *e) {
    if (converted) *converted = 0;
    if (!m || !m->graph) return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "float16 conversion: no model");
    kiln_graph *g = m->graph;
    KILN_TRY(refuse_subgraphs(g, e));
    f16_ctx c;
    memset(&c, 0, sizeof c);
    c.m = m;
    c.g = g;
    c.e = e;
    c.verbose = verbose;
    c.n_vals = g->n_values;
    c.n_nodes = g->n_nodes;
    size_t nv = (size_t)(c.n_vals ? c.n_vals : 1), nn = (size_t)(c.n_nodes ? c.n_nodes : 1);
    c.dtype = calloc(nv, sizeof *c.dtype);
    c.is_seq = calloc(nv, 1);
    c.want = calloc(nv, 1);
    c.home = calloc(nv, 1);
    c.twin = calloc(nv, sizeof *c.twin);
    c.fp32_node = calloc(nn, 1);
    kiln_status st = KILN_OK;
    if (!c.dtype || !c.is_seq || !c.want || !c.home || !c.twin || !c.fp32_node)
        st = kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    int cast_count = 0;
    if (!st) {
        st = plan_and_rewrite(&c);
        cast_count = g->n_nodes - c.n_nodes;
    }
    if (!st && verbose) {
        int fp32_nodes = 0, untyped = 0;
        for (int i = 0; i < c.n_nodes; i++) fp32_nodes += c.fp32_node[i];
        for (int v = 0; v < c.n_vals; v++) untyped += !c.dtype[v];
        fprintf(stderr, "kiln: float16: %zu tensors converted, %d Casts inserted, %d nodes kept in float32, "
                "%d values of unknown type", c.converted, cast_count, fp32_nodes, untyped);
        if (c.clamped) fprintf(stderr, ", %zu values clamped to float16's range", c.clamped);
        fprintf(stderr, "\n");
    }
    if (!st && converted) *converted = c.converted;
    ctx_free(&c);
    return st;
}
