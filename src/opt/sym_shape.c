/* Shapes computed at run time, read statically. Exporters with dynamic axes write a Reshape's or
 * Expand's target as Shape -> Gather -> Unsqueeze -> Concat chains (and torch's "expand with -1"
 * as Where(Equal(s, -1), 1, s)), so the kernels' static inference, which needs the shape's data,
 * leaves those outputs rank -1 and every fusion behind them declines (ConstantOfShape likewise). Here such a chain is
 * evaluated element by element, an element being a known size or a symbolic dimension of some
 * value's static type; the target then gives the output's static type in terms of the same
 * symbols (equal symbols are equal sizes at run time, so a fusion may rely on them). */
#include "sym_shape.h"
#include <string.h>

static int known_const(opt_ctx *c, int v, int64_t *out) {
    const kiln_tensor *t = opt_const(c, v);
    if (!t || t->rank > 1 || kiln_numel(t) > SYM_MAX || !t->data) return -1;
    if (t->dtype != KILN_DTYPE_INT64 && t->dtype != KILN_DTYPE_INT32) return -1;
    int64_t n = kiln_numel(t);
    for (int64_t i = 0; i < n; i++) {
        out[i] = kiln_load_i64(t->dtype, t->data, i);
        if (out[i] < -1) return -1; /* would read as a symbol */
    }
    return (int)n;
}

/* a run-time size: a known one, or a symbol (never KILN_DIM_UNKNOWN) */
static int sized(int64_t d) { return d != KILN_DIM_UNKNOWN; }

/* two-input elementwise ops on evaluated vectors (a one-element side broadcasts) */
static int eval(opt_ctx *c, int v, int64_t *out, int depth, int *budget);

static int binary(opt_ctx *c, const kiln_node *n, int64_t *out, int depth, int *budget) {
    int64_t a[SYM_MAX], b[SYM_MAX];
    int na = eval(c, n->in[0], a, depth + 1, budget), nb = eval(c, n->in[1], b, depth + 1, budget);
    if (na < 0 || nb < 0 || (na != nb && na != 1 && nb != 1)) return -1;
    int len = na > nb ? na : nb;
    for (int i = 0; i < len; i++) {
        int64_t x = a[na == 1 ? 0 : i], y = b[nb == 1 ? 0 : i];
        if (!strcmp(n->op_type, "Equal")) {
            if (!KILN_DIM_IS_SYM(x) && !KILN_DIM_IS_SYM(y)) out[i] = x == y;
            else if (KILN_DIM_IS_SYM(x) && KILN_DIM_IS_SYM(y) && x == y) out[i] = 1;
            else if ((KILN_DIM_IS_SYM(x) && y == -1) || (KILN_DIM_IS_SYM(y) && x == -1))
                out[i] = 0; /* a size is never negative: Equal(dim, -1) is false */
            else return -1;
        } else if (!strcmp(n->op_type, "Mul")) {
            if (x == 1 && sized(y)) out[i] = y;
            else if (y == 1 && sized(x)) out[i] = x;
            else if (x >= 0 && y >= 0) out[i] = x * y;
            else if (!KILN_DIM_IS_SYM(x) && !KILN_DIM_IS_SYM(y)) out[i] = x * y; /* -1 markers */
            else return -1;
        } else {
            return -1;
        }
    }
    return len;
}

static int eval(opt_ctx *c, int v, int64_t *out, int depth, int *budget) {
    if (v < 0 || depth > 12 || --*budget < 0) return -1;
    int n = known_const(c, v, out);
    if (n >= 0) return n;
    /* only scalars and vectors: their elements are what Gather and Concat index */
    const kiln_tensor *fv = opt_fact(c, v);
    if (fv->rank < 0 || fv->rank > 1) return -1;
    const kiln_graph_value *gv = &c->g->values[v];
    kiln_node *p = gv->producer >= 0 ? &c->g->nodes[gv->producer] : NULL;
    if (!p || p->removed || p->domain[0]) return -1;
    const char *op = p->op_type;
    if (!strcmp(op, "Shape")) {
        const kiln_tensor *f = opt_fact(c, p->in[0]);
        if (f->rank < 0) return -1;
        int64_t s = kiln_attr_int(p, "start", 0), e = kiln_attr_int(p, "end", f->rank);
        if (s < 0) s += f->rank;
        if (e < 0) e += f->rank;
        if (s < 0) s = 0;
        if (e > f->rank) e = f->rank;
        if (e - s > SYM_MAX) return -1;
        int k = 0;
        for (int64_t i = s; i < e; i++) {
            if (!sized(f->dims[i])) return -1;
            out[k++] = f->dims[i];
        }
        return k;
    }
    if (!strcmp(op, "Gather") && p->n_in == 2 && kiln_attr_int(p, "axis", 0) == 0) {
        int64_t data[SYM_MAX], idx[SYM_MAX];
        int nd = eval(c, p->in[0], data, depth + 1, budget), ni = known_const(c, p->in[1], idx);
        if (nd < 0 || ni < 0) return -1;
        for (int i = 0; i < ni; i++) {
            int64_t j = idx[i] < 0 ? idx[i] + nd : idx[i];
            if (j < 0 || j >= nd) return -1;
            out[i] = data[j];
        }
        return ni;
    }
    /* element order is all that matters for a 1-D shape: these only change rank 0 <-> 1 */
    if (!strcmp(op, "Unsqueeze") || !strcmp(op, "Squeeze") || !strcmp(op, "Reshape") ||
        !strcmp(op, "Identity") ||
        (!strcmp(op, "Cast") && (kiln_attr_int(p, "to", 0) == KILN_DTYPE_INT64 ||
                                 kiln_attr_int(p, "to", 0) == KILN_DTYPE_INT32))) {
        return eval(c, p->in[0], out, depth + 1, budget);
    }
    if (!strcmp(op, "Concat")) {
        int k = 0;
        for (int i = 0; i < p->n_in; i++) {
            int64_t part[SYM_MAX];
            int np = eval(c, p->in[i], part, depth + 1, budget);
            if (np < 0 || k + np > SYM_MAX) return -1;
            memcpy(out + k, part, (size_t)np * sizeof *part);
            k += np;
        }
        return k;
    }
    if (!strcmp(op, "ConstantOfShape")) {
        const kiln_tensor *val = kiln_attr_tensor(p, "value");
        int64_t shape[SYM_MAX], fill = 0;
        int ns = eval(c, p->in[0], shape, depth + 1, budget);
        if (ns != 1 || shape[0] < 0 || shape[0] > SYM_MAX) return -1;
        if (val) {
            if (kiln_numel(val) != 1 || !val->data ||
                (val->dtype != KILN_DTYPE_INT64 && val->dtype != KILN_DTYPE_INT32))
                return -1;
            fill = kiln_load_i64(val->dtype, val->data, 0);
        } else {
            return -1; /* float zeros: not a shape */
        }
        for (int64_t i = 0; i < shape[0]; i++) out[i] = fill;
        return (int)shape[0];
    }
    if ((!strcmp(op, "Equal") || !strcmp(op, "Mul")) && p->n_in == 2) return binary(c, p, out, depth, budget);
    if (!strcmp(op, "Where") && p->n_in == 3) {
        int64_t cond[SYM_MAX], a[SYM_MAX], b[SYM_MAX];
        int nc = eval(c, p->in[0], cond, depth + 1, budget), na = eval(c, p->in[1], a, depth + 1, budget),
            nb = eval(c, p->in[2], b, depth + 1, budget);
        if (nc < 0 || na < 0 || nb < 0) return -1;
        int len = nc > na ? nc : na;
        if (nb > len) len = nb;
        if ((nc != len && nc != 1) || (na != len && na != 1) || (nb != len && nb != 1)) return -1;
        for (int i = 0; i < len; i++) {
            int64_t k = cond[nc == 1 ? 0 : i];
            if (k != 0 && k != 1) return -1;
            out[i] = k ? a[na == 1 ? 0 : i] : b[nb == 1 ? 0 : i];
        }
        return len;
    }
    return -1;
}

/* Where branches three ways: a step budget keeps a deep or adversarial chain cheap. */
int opt_sym_vec(opt_ctx *c, int v, int64_t *out) {
    int budget = 256;
    return eval(c, v, out, 0, &budget);
}

/* Reshape(x, s): 0 copies x's dimension (unless allowzero), -1 takes what is left once the
 * symbols and sizes both sides share are cancelled: a size, or one symbol of x's when the sizes
 * cancel exactly. */
static int reshape_dims(opt_ctx *c, const kiln_node *n, int64_t *dims) {
    int64_t s[SYM_MAX];
    int r = n->n_in == 2 ? opt_sym_vec(c, n->in[1], s) : -1;
    const kiln_tensor *fx = opt_fact(c, n->in[0]);
    if (r < 0 || fx->rank < 0) return -1;
    int allowzero = kiln_attr_int(n, "allowzero", 0) != 0, infer_at = -1;
    for (int i = 0; i < r; i++) {
        if (s[i] == 0 && !allowzero) {
            if (i >= fx->rank) return -1;
            s[i] = fx->dims[i];
        }
        if (s[i] == -1) {
            if (infer_at >= 0) return -1;
            infer_at = i;
        } else if (!sized(s[i])) {
            return -1;
        }
        dims[i] = s[i];
    }
    if (infer_at >= 0) {
        int used[KILN_MAX_RANK] = {0};
        int64_t in_known = 1, out_known = 1;
        for (int i = 0; i < r; i++) {
            if (i == infer_at) continue;
            if (s[i] >= 0) {
                out_known *= s[i];
                continue;
            }
            int j = 0; /* a symbol on the output side cancels the same symbol on the input side */
            while (j < fx->rank && (used[j] || fx->dims[j] != s[i])) j++;
            if (j == fx->rank) return -1;
            used[j] = 1;
        }
        int64_t left_sym = 0; /* one input symbol no output symbol cancels */
        for (int j = 0; j < fx->rank; j++) {
            if (used[j]) continue;
            if (KILN_DIM_IS_SYM(fx->dims[j]) && !left_sym) {
                left_sym = fx->dims[j];
                continue;
            }
            if (fx->dims[j] < 0) return -1;
            in_known *= fx->dims[j];
        }
        /* the head merge [B, S, N, H] -> [B, -1, N*H]: -1 is S when the known sizes cancel */
        if (left_sym) {
            if (in_known != out_known) return -1;
            dims[infer_at] = left_sym;
        } else {
            if (out_known <= 0 || in_known % out_known) return -1;
            dims[infer_at] = in_known / out_known;
        }
    }
    return r;
}

/* Expand(x, s): numpy broadcasting of x's static type with s. */
static int expand_dims(opt_ctx *c, const kiln_node *n, int64_t *dims) {
    int64_t s[SYM_MAX];
    int r = n->n_in == 2 ? opt_sym_vec(c, n->in[1], s) : -1;
    const kiln_tensor *fx = opt_fact(c, n->in[0]);
    if (r < 0 || fx->rank < 0) return -1;
    int out = r > fx->rank ? r : fx->rank;
    if (out > KILN_MAX_RANK) return -1;
    for (int i = 0; i < out; i++) {
        int a = i - (out - fx->rank), b = i - (out - r);
        int64_t x = a >= 0 ? fx->dims[a] : 1, y = b >= 0 ? s[b] : 1;
        if (x == 1) dims[i] = y;
        else if (y == 1 || x == y) dims[i] = x;
        else if (x > 1 && (y > 1 || KILN_DIM_IS_SYM(y))) dims[i] = x; /* y must be 1 or x */
        else if (y > 1 && KILN_DIM_IS_SYM(x)) dims[i] = y;
        else return -1;
        if (!sized(dims[i])) return -1;
    }
    return out;
}

/* Range(0, limit, 1) has limit elements. */
static int range_dims(opt_ctx *c, const kiln_node *n, int64_t *dims) {
    int64_t start[SYM_MAX], limit[SYM_MAX], delta[SYM_MAX];
    if (n->n_in != 3 || known_const(c, n->in[0], start) != 1 || known_const(c, n->in[2], delta) != 1 ||
        start[0] != 0 || delta[0] != 1 || opt_sym_vec(c, n->in[1], limit) != 1 || !sized(limit[0]))
        return -1;
    dims[0] = limit[0];
    return 1;
}

/* Slice(x, 0, end) along axes with step 1, end a symbolic size: end elements, for the runs that
 * do not fail (a longer end is clamped to x's size, and exporters slice a buffer by a sequence
 * length that must then match the other operand of an elementwise op, which fails otherwise). */
static int slice_dims(opt_ctx *c, const kiln_node *n, int64_t *dims) {
    const kiln_tensor *fx = opt_fact(c, n->in[0]);
    int64_t st[SYM_MAX], en[SYM_MAX], ax[SYM_MAX], sp[SYM_MAX];
    if (fx->rank < 0 || n->n_in < 3) return -1;
    int ns = known_const(c, n->in[1], st), ne = opt_sym_vec(c, n->in[2], en);
    int na = n->n_in > 3 && n->in[3] >= 0 ? known_const(c, n->in[3], ax) : ns;
    int np = n->n_in > 4 && n->in[4] >= 0 ? known_const(c, n->in[4], sp) : ns;
    if (ns < 0 || ne != ns || na != ns || np != ns) return -1;
    memcpy(dims, fx->dims, (size_t)fx->rank * sizeof *dims);
    for (int i = 0; i < ns; i++) {
        int64_t a = n->n_in > 3 && n->in[3] >= 0 ? ax[i] : i;
        if (a < 0) a += fx->rank;
        if (a < 0 || a >= fx->rank) return -1;
        if (n->n_in > 4 && n->in[4] >= 0 && sp[i] != 1) return -1;
        if (st[i] != 0 || !KILN_DIM_IS_SYM(en[i])) return -1;
        dims[a] = en[i];
    }
    return fx->rank;
}

/* ConstantOfShape(s): s itself (T5 builds its relative-position buckets on one of these). */
static int constant_of_shape_dims(opt_ctx *c, const kiln_node *n, int64_t *dims) {
    int64_t s[SYM_MAX];
    int r = n->n_in == 1 ? opt_sym_vec(c, n->in[0], s) : -1;
    for (int i = 0; i < r; i++) {
        if (!sized(s[i]) || s[i] == -1) return -1;
        dims[i] = s[i];
    }
    return r;
}

void opt_sym_refine(opt_ctx *c, kiln_node *n) {
    if (n->domain[0] || n->n_out < 1 || n->out[0] < 0 || n->out[0] >= c->n_tracked) return;
    kiln_value *f = &c->facts[n->out[0]];
    if (f->kind != KILN_KIND_TENSOR) return;
    int complete = f->t.rank >= 0;
    for (int i = 0; complete && i < f->t.rank; i++) complete = sized(f->t.dims[i]);
    if (complete) return;
    int64_t dims[KILN_MAX_RANK];
    int r = -1;
    if (!strcmp(n->op_type, "Reshape")) r = reshape_dims(c, n, dims);
    else if (!strcmp(n->op_type, "Expand")) r = expand_dims(c, n, dims);
    else if (!strcmp(n->op_type, "Range")) r = range_dims(c, n, dims);
    else if (!strcmp(n->op_type, "ConstantOfShape")) r = constant_of_shape_dims(c, n, dims);
    else if (!strcmp(n->op_type, "Slice") && n->opset >= 10) r = slice_dims(c, n, dims);
    else if (!strcmp(n->op_type, "Concat") && n->n_in == 1) { /* GPT-2's present key/value: a copy */
        const kiln_tensor *fx = opt_fact(c, n->in[0]);
        if ((r = fx->rank) > 0) memcpy(dims, fx->dims, (size_t)r * sizeof *dims);
    }
    if (r < 0 || r > KILN_MAX_RANK || (f->t.rank >= 0 && f->t.rank != r)) return;
    /* keep what inference proved; fill only the dimensions it left unknown */
    if (f->t.rank == r)
        for (int i = 0; i < r; i++)
            if (sized(f->t.dims[i])) dims[i] = f->t.dims[i];
    f->t.rank = r;
    memcpy(f->t.dims, dims, (size_t)r * sizeof *dims);
    if (!f->t.dtype) f->t.dtype = opt_fact(c, n->in[0])->dtype;
}
