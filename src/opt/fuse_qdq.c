/* Quantised (QDQ) fusions, as onnxruntime's QDQ transformers make them:
 *
 *   DequantizeLinear(x), DequantizeLinear(w) [, DequantizeLinear(int32 bias)] -> Conv
 *       -> QuantizeLinear                                   => QLinearConv
 *   DequantizeLinear(a), DequantizeLinear(b) -> MatMul -> QuantizeLinear => QLinearMatMul
 *   DequantizeLinear(a), DequantizeLinear(b) [, DequantizeLinear(int32 C)] -> Gemm
 *       -> QuantizeLinear                                   => com.microsoft QGemm
 *   DequantizeLinear -> Add / Mul / GlobalAveragePool -> QuantizeLinear
 *                                        => com.microsoft QLinearAdd / QLinearMul / QLinearGlobalAveragePool
 *
 * so that the product runs on the integer kernels instead of dequantising to float, multiplying
 * in float and quantising again. The fused node reads the quantised tensors directly; the
 * DequantizeLinear nodes that only fed the pattern go with it (shared ones stay for their other
 * readers, and die with the dead-node pass when nobody is left).
 *
 * The result is what onnxruntime computes for the same model with its graph optimisations on
 * (it fuses these same patterns): the integer sums are exact and requantised once. Conditions
 * are those the integer ops can express: 8-bit codes, one scale and zero point for the
 * activations and the output, weights per tensor or per output channel (axis 0 for Conv and
 * Gemm with transB, the last axis for MatMul), a bias quantised to int32 with zero points of 0
 * and the scale x_scale * w_scale (the integer op adds the int32 codes as they are). */
#include "fusions.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int is_q8(int dt) { return dt == KILN_DTYPE_UINT8 || dt == KILN_DTYPE_INT8; }

/* The static element count of v, or -1 when unknown. */
static int64_t fact_numel(opt_ctx *c, int v) {
    const kiln_tensor *t = opt_fact(c, v);
    if (t->rank < 0 || !kiln_shape_concrete(t)) return -1;
    return kiln_numel(t);
}

/* A DequantizeLinear or QuantizeLinear with plain linear semantics: per tensor or per axis, no
 * blocks, float32 on the float side, a zero point present. */
static int plain_q(opt_ctx *c, const kiln_node *n) {
    if (n->n_in < 3 || n->in[2] < 0 || n->n_out != 1 || n->domain[0]) return 0;
    if (kiln_attr_int(n, "block_size", 0) != 0) return 0;
    if (opt_fact(c, n->in[1])->dtype != KILN_DTYPE_FLOAT) return 0;
    if (kiln_has_attr(n, "output_dtype") && kiln_attr_int(n, "output_dtype", 0) != KILN_DTYPE_FLOAT &&
        !strcmp(n->op_type, "DequantizeLinear"))
        return 0;
    return 1;
}

/* DequantizeLinear of 8-bit codes with one scale and zero point (an activation). */
static kiln_node *dq_tensor(opt_ctx *c, int v) {
    kiln_node *d = opt_producer(c, v, "DequantizeLinear");
    if (!d || !plain_q(c, d) || !is_q8(opt_fact(c, d->in[0])->dtype)) return NULL;
    if (fact_numel(c, d->in[1]) != 1 || fact_numel(c, d->in[2]) != 1) return NULL;
    return d;
}

/* The DequantizeLinear producing v: a live node, or one that constant folding has already
 * replaced by its float result (the session folds before fusing; the node keeps its inputs,
 * the quantised initializers, until the graph is compacted). */
static kiln_node *dq_node(opt_ctx *c, int v) {
    kiln_node *d = opt_producer(c, v, "DequantizeLinear");
    if (d) return d;
    if (v < 0 || v >= c->g->n_values || !c->g->values[v].is_const) return NULL;
    int p = c->g->values[v].producer;
    if (p < 0 || p >= c->g->n_nodes) return NULL;
    d = &c->g->nodes[p];
    return d->removed && !strcmp(d->op_type, "DequantizeLinear") && !d->domain[0] ? d : NULL;
}

/* DequantizeLinear of constant 8-bit weights with rank `rank` (0: any >= 2), scaled per tensor
 * or along axis `axis` only (numel of scale and zero point 1 or dims[axis]). */
static kiln_node *dq_weight(opt_ctx *c, int v, int rank, int axis) {
    kiln_node *d = dq_node(c, v);
    if (!d || !plain_q(c, d)) return NULL;
    const kiln_tensor *w = opt_const(c, d->in[0]);
    if (!w || !is_q8(w->dtype) || w->rank < 2 || (rank && w->rank != rank) || !kiln_shape_concrete(w))
        return NULL;
    const kiln_tensor *s = opt_const(c, d->in[1]), *z = opt_const(c, d->in[2]);
    if (!s || !z || z->dtype != w->dtype || kiln_numel(s) != kiln_numel(z)) return NULL;
    if (kiln_numel(s) == 1) return d;
    int a = (int)kiln_attr_int(d, "axis", 1);
    if (a < 0) a += w->rank;
    if (a != (axis < 0 ? axis + w->rank : axis) || s->rank != 1 || kiln_numel(s) != w->dims[a]) return NULL;
    return d;
}

/* DequantizeLinear of a constant int32 bias of m values with zero points 0 and scales
 * x_scale * w_scale[i] (what the integer op assumes); returns the codes' value. */
static int dq_bias(opt_ctx *c, int v, int64_t m, const kiln_node *dx, const kiln_node *dw,
                   kiln_node **node) {
    kiln_node *d = dq_node(c, v);
    *node = d;
    if (!d || !plain_q(c, d)) return -1;
    const kiln_tensor *b = opt_const(c, d->in[0]), *s = opt_const(c, d->in[1]), *z = opt_const(c, d->in[2]);
    const kiln_tensor *xs = opt_const(c, dx->in[1]), *ws = opt_const(c, dw->in[1]);
    if (!b || b->dtype != KILN_DTYPE_INT32 || kiln_numel(b) != m || b->rank != 1 || !s || !z || !xs || !ws)
        return -1;
    if (s->dtype != KILN_DTYPE_FLOAT || xs->dtype != KILN_DTYPE_FLOAT || ws->dtype != KILN_DTYPE_FLOAT ||
        z->dtype != KILN_DTYPE_INT32)
        return -1;
    int64_t ns = kiln_numel(s), nw = kiln_numel(ws);
    if ((ns != 1 && ns != m) || kiln_numel(z) != ns || (nw != 1 && nw != m)) return -1;
    float x = *(const float *)xs->data;
    for (int64_t i = 0; i < m; i++) {
        float want = x * ((const float *)ws->data)[nw == 1 ? 0 : i];
        float got = ((const float *)s->data)[ns == 1 ? 0 : i];
        if (((const int32_t *)z->data)[ns == 1 ? 0 : i] != 0) return -1;
        if (!(fabsf(got - want) <= 1e-6f * fabsf(want))) return -1;
    }
    return d->in[0];
}

/* QuantizeLinear to 8-bit codes with one scale and zero point, reading the float output of a
 * node of type `op` that nothing else reads. */
static kiln_node *q_of(opt_ctx *c, kiln_node *q, const char *op) {
    if (q->removed || strcmp(q->op_type, "QuantizeLinear") || !plain_q(c, q)) return NULL;
    if (!is_q8(opt_fact(c, q->in[2])->dtype) || fact_numel(c, q->in[1]) != 1 || fact_numel(c, q->in[2]) != 1)
        return NULL;
    kiln_node *p = opt_private(c, q->in[0], 1) ? opt_producer(c, q->in[0], op) : NULL;
    if (!p || p->n_out != 1 || opt_fact(c, p->out[0])->dtype != KILN_DTYPE_FLOAT) return NULL;
    return p;
}

/* Adds `n` to the pattern when the value it produces is read by the pattern only (a folded node
 * is gone already: its constant loses the reader and dies). */
static void take_if_private(opt_ctx *c, kiln_node **pattern, int *np, kiln_node *n, int reads) {
    if (n && !n->removed && opt_private(c, n->out[0], reads)) pattern[(*np)++] = n;
}

/* Reads of v among the inputs of node n (a value feeding two slots is read twice). */
static int reads_by(const kiln_node *n, int v) {
    int k = 0;
    for (int i = 0; i < n->n_in; i++) k += n->in[i] == v;
    return k;
}

static kiln_status fuse_conv(opt_ctx *c, kiln_node *q) {
    kiln_node *conv = q_of(c, q, "Conv");
    if (!conv || conv->n_in < 2) return KILN_OK;
    kiln_node *dx = dq_tensor(c, conv->in[0]), *dw = dq_weight(c, conv->in[1], 0, 0), *db = NULL;
    if (!dx || !dw || dx == dw) return KILN_OK;
    const kiln_tensor *w = opt_const(c, dw->in[0]);
    int bias = -1;
    if (opt_in(conv, 2) >= 0 && (bias = dq_bias(c, conv->in[2], w->dims[0], dx, dw, &db)) < 0) return KILN_OK;
    kiln_attr *attrs;
    int n_attrs;
    KILN_TRY(opt_attrs_take(c, conv, 0, &attrs, &n_attrs));
    int ins[9] = {dx->in[0], dx->in[1], dx->in[2], dw->in[0], dw->in[1], dw->in[2], q->in[1], q->in[2], bias};
    kiln_node *pattern[5];
    int np = 0;
    take_if_private(c, pattern, &np, dx, reads_by(conv, dx->out[0]));
    take_if_private(c, pattern, &np, dw, reads_by(conv, dw->out[0]));
    if (db) take_if_private(c, pattern, &np, db, reads_by(conv, db->out[0]));
    pattern[np++] = conv;
    pattern[np++] = q;
    int out = q->out[0];
    return opt_replace(c, pattern, np, "", "QLinearConv", -1, ins, bias >= 0 ? 9 : 8, &out, 1, attrs, n_attrs);
}

static kiln_status fuse_matmul(opt_ctx *c, kiln_node *q) {
    kiln_node *mm = q_of(c, q, "MatMul");
    if (!mm || mm->n_in != 2) return KILN_OK;
    kiln_node *da = dq_tensor(c, mm->in[0]), *db = dq_weight(c, mm->in[1], 2, -1);
    if (!da || !db || da == db) return KILN_OK;
    /* the integer op writes the type of a (onnxruntime's kernels have no other combination) */
    if (opt_fact(c, q->in[2])->dtype != opt_fact(c, da->in[0])->dtype) return KILN_OK;
    int ins[8] = {da->in[0], da->in[1], da->in[2], db->in[0], db->in[1], db->in[2], q->in[1], q->in[2]};
    kiln_node *pattern[4];
    int np = 0;
    take_if_private(c, pattern, &np, da, 1);
    take_if_private(c, pattern, &np, db, 1);
    pattern[np++] = mm;
    pattern[np++] = q;
    int out = q->out[0];
    return opt_replace(c, pattern, np, "", "QLinearMatMul", -1, ins, 8, &out, 1, NULL, 0);
}

static kiln_status fuse_gemm(opt_ctx *c, kiln_node *q) {
    kiln_node *gm = q_of(c, q, "Gemm");
    if (!gm || gm->n_in < 2 || kiln_attr_float(gm, "alpha", 1.0f) != 1.0f) return KILN_OK;
    int tb = (int)kiln_attr_int(gm, "transB", 0), ta = (int)kiln_attr_int(gm, "transA", 0);
    kiln_node *da = dq_tensor(c, gm->in[0]), *db = dq_weight(c, gm->in[1], 2, tb ? 0 : 1), *dc = NULL;
    if (!da || !db || da == db || opt_fact(c, da->in[0])->rank != 2) return KILN_OK;
    /* QGemm pairs an int8 A with int8 B only, and writes A's type */
    int adt = opt_fact(c, da->in[0])->dtype, bdt = opt_const(c, db->in[0])->dtype;
    if ((adt == KILN_DTYPE_INT8 && bdt != KILN_DTYPE_INT8) || opt_fact(c, q->in[2])->dtype != adt) return KILN_OK;
    const kiln_tensor *w = opt_const(c, db->in[0]);
    int bias = -1;
    if (opt_in(gm, 2) >= 0) {
        if (kiln_attr_float(gm, "beta", 1.0f) != 1.0f) return KILN_OK;
        if ((bias = dq_bias(c, gm->in[2], w->dims[tb ? 0 : 1], da, db, &dc)) < 0) return KILN_OK;
    }
    kiln_attr *attrs = calloc(3, sizeof *attrs);
    if (!attrs || !opt_attr_int(&attrs[0], "transA", ta) || !opt_attr_int(&attrs[1], "transB", tb) ||
        !opt_attr_float(&attrs[2], "alpha", 1.0f)) {
        opt_attrs_free(attrs, attrs ? 3 : 0);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    int ins[9] = {da->in[0], da->in[1], da->in[2], db->in[0], db->in[1], db->in[2], bias, q->in[1], q->in[2]};
    kiln_node *pattern[5];
    int np = 0;
    take_if_private(c, pattern, &np, da, 1);
    take_if_private(c, pattern, &np, db, 1);
    if (dc) take_if_private(c, pattern, &np, dc, 1);
    pattern[np++] = gm;
    pattern[np++] = q;
    int out = q->out[0];
    return opt_replace(c, pattern, np, "com.microsoft", "QGemm", -1, ins, 9, &out, 1, attrs, 3);
}

/* DQ(a), DQ(b) -> Add / Mul -> Q => com.microsoft QLinearAdd / QLinearMul, and
 * DQ(x) -> GlobalAveragePool -> Q => QLinearGlobalAveragePool, as onnxruntime fuses them: the
 * three tensors of one 8-bit type, each with one scale and zero point. */
static kiln_status fuse_elementwise(opt_ctx *c, kiln_node *q) {
    static const char *const ops[3] = {"Add", "Mul", "GlobalAveragePool"};
    static const char *const fused[3] = {"QLinearAdd", "QLinearMul", "QLinearGlobalAveragePool"};
    for (int k = 0; k < 3; k++) {
        kiln_node *p = q_of(c, q, ops[k]);
        if (!p) continue;
        int qdt = opt_fact(c, q->in[2])->dtype; /* q_of proved the zero point is there */
        int binary = k < 2;
        if (p->n_in != (binary ? 2 : 1) || (binary && p->in[0] == p->in[1])) return KILN_OK;
        kiln_node *da = dq_tensor(c, p->in[0]), *db = binary ? dq_tensor(c, p->in[1]) : NULL;
        if (!da || (binary && !db) || opt_fact(c, da->in[0])->dtype != qdt ||
            (db && opt_fact(c, db->in[0])->dtype != qdt))
            return KILN_OK;
        if (!binary && opt_fact(c, da->in[0])->rank < 3) return KILN_OK;
        kiln_attr *attrs = NULL;
        if (!binary && (!(attrs = calloc(1, sizeof *attrs)) || !opt_attr_int(&attrs[0], "channels_last", 0))) {
            free(attrs);
            return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
        }
        int ins[8] = {da->in[0], da->in[1], da->in[2]}, n = 3;
        if (binary) {
            ins[n++] = db->in[0];
            ins[n++] = db->in[1];
            ins[n++] = db->in[2];
        }
        ins[n++] = q->in[1];
        ins[n++] = q->in[2];
        kiln_node *pattern[4];
        int np = 0;
        take_if_private(c, pattern, &np, da, 1);
        if (db) take_if_private(c, pattern, &np, db, 1);
        pattern[np++] = p;
        pattern[np++] = q;
        int out = q->out[0];
        return opt_replace(c, pattern, np, "com.microsoft", fused[k], -1, ins, n, &out, 1, attrs, binary ? 0 : 1);
    }
    return KILN_OK;
}

/* ---- dynamic quantisation (onnxruntime.quantization.quantize_dynamic) ----
 * DynamicQuantizeLinear(x) -> MatMulInteger(xq, Wq, xz, wz) -> Cast(float) -> Mul(Mul(xs, ws))
 * [-> Add(bias)] => com.microsoft DynamicQuantizeMatMul(x, Wq, ws, wz [, bias]), whose kernel
 * quantises x the same way and scales the int32 sums by xs * ws in the same order. */

/* mul = Mul(float(MatMulInteger(DQL(x)...)), Mul(xs, ws)) matched; fills the fused node's inputs. */
static int match_dyn_mul(opt_ctx *c, kiln_node *mul, int *ins, kiln_node **pat, int *np) {
    if (mul->removed || mul->domain[0] || strcmp(mul->op_type, "Mul") || mul->n_in != 2 || mul->n_out != 1)
        return 0;
    for (int k = 0; k < 2; k++) {
        int yf = mul->in[k], s = mul->in[1 - k];
        kiln_node *cast = opt_private(c, yf, 1) ? opt_producer(c, yf, "Cast") : NULL;
        if (!cast || kiln_attr_int(cast, "to", 0) != KILN_DTYPE_FLOAT) continue;
        int ci = opt_in(cast, 0);
        kiln_node *mmi = opt_private(c, ci, 1) ? opt_producer(c, ci, "MatMulInteger") : NULL;
        if (!mmi || mmi->n_in < 3 || mmi->in[2] < 0) continue;
        kiln_node *dql = opt_producer(c, mmi->in[0], "DynamicQuantizeLinear");
        if (!dql || dql->n_in < 1 || dql->n_out < 3 || dql->out[0] != mmi->in[0] || dql->out[2] != mmi->in[2])
            continue;
        const kiln_tensor *fx = opt_fact(c, dql->in[0]), *w = opt_const(c, mmi->in[1]);
        if (fx->dtype != KILN_DTYPE_FLOAT || fx->rank < 2 || !w || w->rank != 2 || !is_q8(w->dtype)) continue;
        int64_t N = w->dims[1];
        const kiln_tensor *wz = opt_in(mmi, 3) >= 0 ? opt_const(c, mmi->in[3]) : NULL;
        if (opt_in(mmi, 3) >= 0 && (!wz || (kiln_numel(wz) != 1 && (wz->rank != 1 || kiln_numel(wz) != N))))
            continue;
        kiln_node *sm = opt_private(c, s, 1) ? opt_producer(c, s, "Mul") : NULL;
        if (!sm || sm->n_in != 2) continue;
        int ws = sm->in[0] == dql->out[1] ? sm->in[1] : sm->in[1] == dql->out[1] ? sm->in[0] : -1;
        const kiln_tensor *wst = ws >= 0 ? opt_const(c, ws) : NULL;
        if (!wst || wst->dtype != KILN_DTYPE_FLOAT || (kiln_numel(wst) != 1 && (wst->rank != 1 || kiln_numel(wst) != N)))
            continue;
        ins[0] = dql->in[0];
        ins[1] = mmi->in[1];
        ins[2] = ws;
        ins[3] = opt_in(mmi, 3);
        *np = 0;
        /* DynamicQuantizeLinear is usually shared (Q, K and V read one); it goes when nobody is left */
        pat[(*np)++] = sm;
        pat[(*np)++] = mmi;
        pat[(*np)++] = cast;
        pat[(*np)++] = mul;
        return 1;
    }
    return 0;
}

static kiln_status fuse_dynamic(opt_ctx *c) {
    kiln_graph *g = c->g;
    int ins[5];
    kiln_node *pat[6];
    int np;
    for (int i = 0; i < g->n_nodes; i++) { /* with the bias Add first */
        kiln_node *add = &g->nodes[i];
        if (add->removed || add->domain[0] || strcmp(add->op_type, "Add") || add->n_in != 2 || add->n_out != 1)
            continue;
        for (int k = 0; k < 2; k++) {
            int v = add->in[k];
            kiln_node *mul = opt_private(c, v, 1) ? opt_producer(c, v, "Mul") : NULL;
            const kiln_tensor *bias = opt_const(c, add->in[1 - k]);
            if (!mul || !bias || bias->dtype != KILN_DTYPE_FLOAT || bias->rank != 1 || !match_dyn_mul(c, mul, ins, pat, &np))
                continue;
            if (bias->dims[0] != opt_const(c, ins[1])->dims[1]) continue;
            ins[4] = add->in[1 - k];
            pat[np++] = add;
            int out = add->out[0];
            KILN_TRY(opt_replace(c, pat, np, "com.microsoft", "DynamicQuantizeMatMul", -1, ins, 5, &out, 1, NULL, 0));
            break;
        }
    }
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *mul = &g->nodes[i];
        if (!match_dyn_mul(c, mul, ins, pat, &np)) continue;
        int out = mul->out[0];
        KILN_TRY(opt_replace(c, pat, np, "com.microsoft", "DynamicQuantizeMatMul", -1, ins, ins[3] >= 0 ? 4 : 3, &out,
                             1, NULL, 0));
    }
    return KILN_OK;
}

kiln_status opt_fuse_qdq(opt_ctx *c) {
    kiln_graph *g = c->g;
    if (c->device) return KILN_OK; /* the device runs the float ops; it has no integer kernels */
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *q = &g->nodes[i];
        if (q->removed || q->domain[0] || strcmp(q->op_type, "QuantizeLinear")) continue;
        KILN_TRY(fuse_conv(c, q));
        if (q->removed) continue;
        KILN_TRY(fuse_matmul(c, q));
        if (q->removed) continue;
        KILN_TRY(fuse_gemm(c, q));
        if (q->removed) continue;
        KILN_TRY(fuse_elementwise(c, q));
    }
    return fuse_dynamic(c);
}
