/* Self-attention as exporters write it (torch's scaled_dot_product_attention decomposed; BERT,
 * GPT-2) -> one ONNX Attention node (opset 23 kernel) on the 3-D projections:
 *
 *   q4 = Transpose(Reshape(q3, [B, S, N, H]), [0, 2, 1, 3])           (likewise v4; k4 for K)
 *   kT = k4 with its last two axes swapped: Transpose(k4, [0, 1, 3, 2]), the exporter's
 *        Reshape([B*N, L, H]) -> Transpose([0, 2, 1]) -> Reshape([B, N, H, L]) chain, or
 *        Transpose(Reshape(k3, [B, L, N, H]), [0, 2, 3, 1])
 *   scores = MatMul(q4 [* s1], kT [* s2]) [* s3 | / d] [+ mask]
 *   p = Softmax(scores, last axis) [then Where(IsNaN(p), 0, p)]
 *   y = Reshape(Transpose(MatMul(p, v4), [0, 2, 1, 3]), [B, S, N*H])
 *
 * becomes Attention(q3, k3, v3, mask; q_num_heads = kv_num_heads = N, scale = s1*s2*s3). The
 * kernel reads the heads of the 3-D inputs in place and writes the 3-D output, so the head
 * split/merge copies, the score tensor and the probability tensor all disappear.
 *
 * When the head-split tensors are needed elsewhere (GPT-2 returns k4 and v4 as its present
 * key/value outputs, through a one-input Concat) the 3-D form cannot take them; the fusion then
 * starts from the 4-D tensors instead: kT = Transpose(k4, [0, 1, 3, 2]) and
 * Attention(q4, k4, v4, mask) writes the (B, N, S, Hv) product that the head merge reads.
 *
 * Rows whose scores are all -inf: Softmax gives NaN, the exporter's Where(IsNaN) turns them into
 * zeros, and the kernel gives zeros too. Without that guard the fusion is made only when such a
 * row cannot happen (no mask, or a constant mask with a finite entry in every row). */
#include "fusions.h"
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_NODES 24

typedef struct attn_match {
    kiln_node *nodes[MAX_NODES];
    int n;
    double scale;
} attn_match;

static int take(attn_match *m, kiln_node *n) {
    if (!n || m->n == MAX_NODES) return 0;
    m->nodes[m->n++] = n;
    return 1;
}

static kiln_node *inner(opt_ctx *c, int v, const char *op) {
    return opt_private(c, v, 1) ? opt_producer(c, v, op) : NULL;
}

static int has_perm(const kiln_node *tr, int n, const int64_t *want) {
    int k = 0;
    const int64_t *perm = kiln_attr_ints(tr, "perm", &k);
    if (!perm || k != n || tr->n_in != 1) return 0;
    for (int i = 0; i < n; i++)
        if (perm[i] != want[i]) return 0;
    return 1;
}

/* Dimensions equal and known (or the same symbol). */
static int same_dim(int64_t a, int64_t b) { return a == b && a != KILN_DIM_UNKNOWN; }

/* v = Mul(x, s) or Div(x, s) with a one-element constant s, read only here: *v becomes x and
 * m->scale takes s in. */
static void strip_scale(opt_ctx *c, int *v, attn_match *m) {
    for (int div = 0; div < 2; div++) {
        kiln_node *n = inner(c, *v, div ? "Div" : "Mul");
        if (!n || n->n_in != 2) continue;
        for (int k = div ? 1 : 0; k < 2; k++) {
            double s;
            int dt;
            const kiln_tensor *t = opt_const(c, n->in[k]);
            if (!opt_const_scalar(c, n->in[k], &s, &dt) || (t && t->rank > 4) || s == 0.0) continue;
            if (!take(m, n)) return;
            m->scale *= div ? 1.0 / s : s;
            *v = n->in[1 - k];
            return;
        }
    }
}

/* x4 = Transpose(Reshape(x3, [B, T, N, H]), perm): sets *x3, *heads, *head_size. */
static int head_split(opt_ctx *c, int x4, const int64_t *perm, attn_match *m, int *x3,
                      int64_t *heads, int64_t *head_size) {
    kiln_node *tr = inner(c, x4, "Transpose");
    if (!tr || !has_perm(tr, 4, perm)) return 0;
    kiln_node *rs = inner(c, tr->in[0], "Reshape");
    if (!rs || rs->n_in != 2) return 0;
    const kiln_tensor *f4 = opt_fact(c, tr->in[0]), *f3 = opt_fact(c, rs->in[0]);
    if (f4->rank != 4 || f3->rank != 3 || f4->dims[2] <= 0 || f4->dims[3] <= 0) return 0;
    if (!same_dim(f3->dims[0], f4->dims[0]) || !same_dim(f3->dims[1], f4->dims[1]) ||
        f3->dims[2] != f4->dims[2] * f4->dims[3])
        return 0;
    *x3 = rs->in[0];
    *heads = f4->dims[2];
    *head_size = f4->dims[3];
    return take(m, tr) && take(m, rs);
}

/* kT (B, N, H, L) from k3 (B, L, N*H) in one of the three forms; sets *k3, heads, head size. */
static int key_transposed(opt_ctx *c, int kt, attn_match *m, int *k3, int64_t *heads,
                          int64_t *head_size) {
    static const int64_t split_then_swap[4] = {0, 2, 3, 1}, swap_last[4] = {0, 1, 3, 2},
                         heads_first[4] = {0, 2, 1, 3}, swap3[3] = {0, 2, 1};
    if (head_split(c, kt, split_then_swap, m, k3, heads, head_size)) return 1;
    kiln_node *tr = inner(c, kt, "Transpose");
    if (tr && has_perm(tr, 4, swap_last))
        return take(m, tr) && head_split(c, tr->in[0], heads_first, m, k3, heads, head_size);
    /* Reshape(k4 -> [B*N, L, H]) -> Transpose([0, 2, 1]) -> Reshape([B, N, H, L]) */
    kiln_node *r2 = inner(c, kt, "Reshape");
    kiln_node *t3 = r2 && r2->n_in == 2 ? inner(c, r2->in[0], "Transpose") : NULL;
    kiln_node *r1 = t3 && has_perm(t3, 3, swap3) ? inner(c, t3->in[0], "Reshape") : NULL;
    if (!r1 || r1->n_in != 2) return 0;
    const kiln_tensor *f4 = opt_fact(c, r1->in[0]), *f1 = opt_fact(c, t3->in[0]), *ft = opt_fact(c, kt);
    /* r1 keeps the last two axes (it only merges B and N) and r2 splits them back */
    if (f4->rank != 4 || f1->rank != 3 || ft->rank != 4 || !same_dim(f1->dims[1], f4->dims[2]) ||
        !same_dim(f1->dims[2], f4->dims[3]) || !same_dim(ft->dims[0], f4->dims[0]) ||
        !same_dim(ft->dims[1], f4->dims[1]) || !same_dim(ft->dims[2], f4->dims[3]) ||
        !same_dim(ft->dims[3], f4->dims[2]))
        return 0;
    return take(m, r2) && take(m, t3) && take(m, r1) &&
           head_split(c, r1->in[0], heads_first, m, k3, heads, head_size);
}

/* The additive mask broadcasts onto scores (B, N, S, L) without growing them. Its last axis must be
 * L itself: the kernel reads a shorter one as padded with -inf, where Add would broadcast a 1. */
static int mask_fits(const kiln_tensor *fm, const kiln_tensor *fs, int dtype) {
    if (fm->rank < 1 || fm->rank > 4 || fs->rank != 4 || fm->dtype != dtype) return 0;
    for (int i = 0; i < fm->rank; i++) {
        int64_t d = fm->dims[fm->rank - 1 - i], s = fs->dims[3 - i];
        if ((d != 1 || i == 0) && !same_dim(d, s)) return 0;
    }
    return 1;
}

/* No dimension of the mask provably breaks Add's broadcast onto the scores: each is the scores'
 * own, 1 (except the last: a single key column is no mask at all, and the kernel would read it
 * as padded), or left unknown by symbolic dims that a run-time computed mask gets (GPT-2 with a
 * KV cache builds its causal mask from Shape ops). The fused node then carries
 * kiln_mask_broadcast=1 and the kernel checks the real sizes by Add's rules. */
static int mask_may_fit(const kiln_tensor *fm, const kiln_tensor *fs, int dtype) {
    if (fm->rank < 1 || fm->rank > 4 || fs->rank != 4 || fm->dtype != dtype) return 0;
    for (int i = 0; i < fm->rank; i++) {
        int64_t d = fm->dims[fm->rank - 1 - i], s = fs->dims[3 - i];
        if (same_dim(d, s)) continue;
        if (d == 1) {
            if (i == 0) return 0;
            continue;
        }
        if (opt_dim_known(d) && opt_dim_known(s)) return 0;
    }
    return 1;
}

/* Dimension `axis` of the 4-D values a and b is provably the same size: equal facts, or both
 * Concats along that axis of pairwise equal parts. A KV cache's keys and values are each
 * Concat(past, new), and inference gives each sum a fresh symbol, so their facts never match. */
static int same_len(opt_ctx *c, int a, int b, int axis, int depth) {
    const kiln_tensor *fa = opt_fact(c, a), *fb = opt_fact(c, b);
    if (fa->rank != 4 || fb->rank != 4) return 0;
    if (same_dim(fa->dims[axis], fb->dims[axis])) return 1;
    kiln_node *ca = opt_producer(c, a, "Concat"), *cb = opt_producer(c, b, "Concat");
    if (depth > 4 || !ca || !cb || ca->n_in != cb->n_in) return 0;
    int64_t xa = kiln_attr_int(ca, "axis", 0), xb = kiln_attr_int(cb, "axis", 0);
    if ((xa < 0 ? xa + 4 : xa) != axis || (xb < 0 ? xb + 4 : xb) != axis) return 0;
    for (int i = 0; i < ca->n_in; i++)
        if (!same_len(c, ca->in[i], cb->in[i], axis, depth + 1)) return 0;
    return 1;
}

/* A constant mask leaves at least one finite score in every row (no all -inf softmax rows). */
static int mask_rows_finite(opt_ctx *c, int mask) {
    const kiln_tensor *t = opt_const(c, mask);
    if (!t || t->rank < 1 || !opt_float_type(t->dtype)) return 0;
    int64_t n = kiln_numel(t), row = t->dims[t->rank - 1];
    for (int64_t r = 0; row > 0 && r < n / row; r++) {
        int finite = 0;
        for (int64_t j = 0; j < row && !finite; j++) finite = isfinite(kiln_load_f64(t->dtype, t->data, r * row + j));
        if (!finite) return 0;
    }
    return row > 0;
}

/* A constant mask that is exactly a causal one on square scores (S == T known): 0 where key j <=
 * query i, and at most MASKED elsewhere, every slice alike. The kernels' own causal masking then
 * gives the same softmax: a visible diagonal keeps every row finite, and exp of a score pushed
 * down by 1e4 or more is 0 in float32. Exporters write GPT-2's mask this way (Where over a
 * Range comparison, folded to a constant once the dimensions are fixed); the flash kernels run
 * causal attention without reading a bias, which they otherwise stream tile by tile. */
#define MASKED (-1e4)
static int mask_is_causal(opt_ctx *c, int mask, const kiln_tensor *fs) {
    const kiln_tensor *t = opt_const(c, mask);
    if (!t || t->rank < 2 || t->rank > 4 || fs->rank != 4 || !opt_float_type(t->dtype)) return 0;
    int64_t S = fs->dims[2], T = fs->dims[3];
    if (S <= 0 || S != T || t->dims[t->rank - 1] != T || t->dims[t->rank - 2] != S) return 0;
    int64_t n = kiln_numel(t);
    for (int64_t k = 0; k < n; k++) {
        int64_t j = k % T, i = (k / T) % S;
        double v = kiln_load_f64(t->dtype, t->data, k);
        if (j <= i ? v != 0.0 : !(v <= MASKED)) return 0;
    }
    return 1;
}

/* The largest finite value of a float type (0: not a float type). */
static double float_limit(int dtype) {
    switch (dtype) {
    case KILN_DTYPE_FLOAT: return 3.4028234663852886e38;
    case KILN_DTYPE_DOUBLE: return 1.7976931348623157e308;
    case KILN_DTYPE_FLOAT16: return 65504.0;
    case KILN_DTYPE_BFLOAT16: return 3.3895313892515355e38;
    default: return 0.0;
    }
}

static double mask_bound_of(opt_ctx *c, int v, int depth);

/* A bound on |every value| of v whatever the inputs (HUGE_VAL: none known). A float value whose
 * bound passes its type's largest value may be inf. */
static double mask_bound(opt_ctx *c, int v, int depth) {
    double b = mask_bound_of(c, v, depth), limit = float_limit(opt_fact(c, v)->dtype);
    return limit > 0.0 && !(b <= limit) ? HUGE_VAL : b;
}

/* The mask's values: a constant, a view (Expand, Reshape, Unsqueeze, Squeeze) or Where of such
 * values, a Transpose or Gather of them, an integer or boolean input cast to float, and the older BERT form (1 - mask) * -10000
 * through Sub and Mul (whose rounding the small margin covers). */
static double mask_bound_of(opt_ctx *c, int v, int depth) {
    if (v < 0 || depth > 8) return HUGE_VAL;
    const kiln_tensor *t = opt_const(c, v);
    if (t) {
        double b = 0.0;
        for (int64_t i = 0, n = kiln_numel(t); i < n; i++) {
            double x = fabs(kiln_load_f64(t->dtype, t->data, i));
            if (!(x <= b)) b = x;
            if (!isfinite(b)) return HUGE_VAL; /* NaN or inf */
        }
        return b;
    }
    /* views and Gather only move or pick values (T5's position bias is a Gather from its
     * relative-position table, transposed and unsqueezed) */
    static const char *views[] = {"Expand", "Reshape", "Unsqueeze", "Squeeze", "Transpose", "Gather", NULL};
    for (int i = 0; views[i]; i++) {
        kiln_node *n = opt_producer(c, v, views[i]);
        if (n) return mask_bound(c, n->in[0], depth + 1);
    }
    kiln_node *n = opt_producer(c, v, "Cast");
    if (n) {
        int from = opt_fact(c, n->in[0])->dtype;
        if (from == KILN_DTYPE_BOOL || from == KILN_DTYPE_UINT8 || from == KILN_DTYPE_INT8) return 255.0;
        if (from == KILN_DTYPE_INT16 || from == KILN_DTYPE_UINT16 || from == KILN_DTYPE_INT32 ||
            from == KILN_DTYPE_UINT32 || from == KILN_DTYPE_INT64)
            return 0x1p64;
        return opt_float_type(from) ? mask_bound(c, n->in[0], depth + 1) : HUGE_VAL;
    }
    if ((n = opt_producer(c, v, "Where")) && n->n_in == 3) {
        double a = mask_bound(c, n->in[1], depth + 1), b = mask_bound(c, n->in[2], depth + 1);
        return a > b ? a : b;
    }
    if ((n = opt_producer(c, v, "Sub")) && n->n_in == 2)
        return (mask_bound(c, n->in[0], depth + 1) + mask_bound(c, n->in[1], depth + 1)) * (1.0 + 1e-6);
    if ((n = opt_producer(c, v, "Mul")) && n->n_in == 2)
        return mask_bound(c, n->in[0], depth + 1) * mask_bound(c, n->in[1], depth + 1) * (1.0 + 1e-6);
    return HUGE_VAL;
}

/* Every value of the mask is finite whatever the inputs, so it cannot make a whole softmax row
 * -inf and no NaN guard is needed (torch's exporter fills padding with the type's lowest finite
 * value, through Where(mask, 0, lowest)). */
static int mask_values_finite(opt_ctx *c, int v, int depth) {
    return float_limit(opt_fact(c, v)->dtype) > 0.0 && mask_bound(c, v, depth) < HUGE_VAL;
}

/* Every value of type `from` survives a round trip through `to` (fp16/bf16 -> fp32 -> back). */
static int widens_exactly(int from, int to) {
    return from == to || (to == KILN_DTYPE_FLOAT && (from == KILN_DTYPE_FLOAT16 || from == KILN_DTYPE_BFLOAT16)) ||
           (to == KILN_DTYPE_DOUBLE && opt_float_type(from));
}

/* Casts between the Softmax and P.V that change no value (torch's exporter writes softmax's
 * result through Cast(float) -> Cast(back)): skipped, and taken into the match. */
static int skip_identity_casts(opt_ctx *c, int *v, attn_match *m) {
    for (int hops = 0; hops < 4; hops++) {
        kiln_node *outer = inner(c, *v, "Cast");
        if (!outer) return 1;
        int to_outer = (int)kiln_attr_int(outer, "to", 0);
        int x = outer->in[0];
        int t = opt_fact(c, x)->dtype;
        if (t == to_outer) {                       /* a Cast to its own type */
            if (!take(m, outer)) return 0;
            *v = x;
            continue;
        }
        kiln_node *inner_cast = inner(c, x, "Cast");
        if (!inner_cast) return 1;
        int src = opt_fact(c, inner_cast->in[0])->dtype;
        if (src != to_outer || !widens_exactly(src, (int)kiln_attr_int(inner_cast, "to", 0))) return 1;
        if (!take(m, outer) || !take(m, inner_cast)) return 0;
        *v = inner_cast->in[0];
    }
    return 1;
}

/* verbose: why a softmax that looked like attention was left as it is */
static kiln_status decline(opt_ctx *c, const kiln_node *sm, const char *why) {
    if (c->verbose) fprintf(stderr, "kiln: self-attention at softmax '%s' declined: %s\n", sm->name, why);
    return KILN_OK;
}

/* Whether the mask lets the pattern fuse: *checked -1 when declined (logged), 0 when its fit is
 * proven, 1 when the kernel must check it (kiln_mask_broadcast, see mask_may_fit). */
static kiln_status check_mask(opt_ctx *c, const kiln_node *sm, int mask, const kiln_tensor *fs, int dtype,
                              int guarded, int *checked) {
    *checked = 0;
    if (mask < 0) return KILN_OK;
    if (!mask_fits(opt_fact(c, mask), fs, dtype)) {
        if (!mask_may_fit(opt_fact(c, mask), fs, dtype)) {
            *checked = -1;
            return decline(c, sm, "mask shape not provably broadcasting onto the scores");
        }
        *checked = 1;
    }
    if (!guarded && !mask_rows_finite(c, mask) && !mask_values_finite(c, mask, 0)) {
        *checked = -1;
        return decline(c, sm, "mask may mask whole rows and there is no NaN guard");
    }
    if (*checked && c->verbose)
        fprintf(stderr, "kiln: self-attention at softmax '%s': mask dimensions symbolic, checked at run time\n",
                sm->name);
    return KILN_OK;
}

/* Drops a constant causal mask (mask_is_causal) for the is_causal attribute: 1 when dropped. */
static int causal_mask(opt_ctx *c, const kiln_node *sm, int *mask, const kiln_tensor *fs) {
    if (*mask < 0 || !mask_is_causal(c, *mask, fs)) return 0;
    if (c->verbose) fprintf(stderr, "kiln: self-attention at softmax '%s': constant causal mask -> is_causal\n", sm->name);
    *mask = -1;
    return 1;
}

static int half_type(int dt) { return dt == KILN_DTYPE_FLOAT16 || dt == KILN_DTYPE_BFLOAT16; }

/* The 4-D form (see the top): m holds the head merge (nodes 0 and 1) and the core through Q·Kᵀ. */
static kiln_status fuse_bnsh(opt_ctx *c, attn_match *m, const kiln_node *sm, kiln_node *pv, int q4, int kt,
                             int mask, int guarded, const kiln_tensor *fs) {
    static const int64_t swap_last[4] = {0, 1, 3, 2};
    kiln_node *trk = inner(c, kt, "Transpose");
    if (!trk || !has_perm(trk, 4, swap_last) || !take(m, trk))
        return decline(c, sm, "no head split of q, k, v and no key transpose of 4-D tensors");
    int k4 = trk->in[0], v4 = pv->in[1];
    const kiln_tensor *fq = opt_fact(c, q4), *fk = opt_fact(c, k4), *fv = opt_fact(c, v4);
    if (fq->rank != 4 || fk->rank != 4 || fv->rank != 4 || fq->dims[1] <= 0 || fq->dims[3] <= 0)
        return decline(c, sm, "4-D q, k, v of unknown rank or unknown heads/head size");
    if (c->device ? !half_type(fq->dtype) : half_type(fq->dtype))
        return decline(c, sm, c->device ? "float32 on a device session" : "half type on the CPU");
    if (!opt_float_type(fq->dtype) || fk->dtype != fq->dtype || fv->dtype != fq->dtype ||
        !same_dim(fk->dims[0], fq->dims[0]) || !same_dim(fv->dims[0], fq->dims[0]) ||
        !same_dim(fk->dims[1], fq->dims[1]) || !same_dim(fv->dims[1], fq->dims[1]) ||
        !same_len(c, v4, k4, 2, 0) || !same_dim(fk->dims[3], fq->dims[3]))
        return decline(c, sm, "4-D q, k, v types or dimensions not provably matching");
    int checked_mask, causal = causal_mask(c, sm, &mask, fs);
    KILN_TRY(check_mask(c, sm, mask, fs, fq->dtype, guarded, &checked_mask));
    if (checked_mask < 0) return KILN_OK;
    kiln_attr *attrs = calloc(2, sizeof *attrs);
    if (!attrs || !opt_attr_float(&attrs[0], "scale", (float)m->scale) ||
        (checked_mask && !opt_attr_int(&attrs[1], "kiln_mask_broadcast", 1)) ||
        (causal && !opt_attr_int(&attrs[1], "is_causal", 1))) {
        opt_attrs_free(attrs, attrs ? 2 : 0);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    int ins[4] = {q4, k4, v4, mask}, y = pv->out[0];
    return opt_replace(c, m->nodes + 2, m->n - 2, "", "Attention", 23, ins, mask >= 0 ? 4 : 3, &y, 1, attrs,
                       1 + checked_mask + causal);
}

/* A Reshape that provably keeps its input's 4-D shape (T5's exporter writes P.V through
 * Reshape([B, -1, S, H]) before the head merge): skipped, and taken into the match. */
static int skip_same_shape_reshape(opt_ctx *c, int v, attn_match *m) {
    kiln_node *rs = inner(c, v, "Reshape");
    if (!rs || rs->n_in != 2) return v;
    const kiln_tensor *fo = opt_fact(c, v), *fi = opt_fact(c, rs->in[0]);
    if (fo->rank != 4 || fi->rank != 4) return v;
    for (int d = 0; d < 4; d++)
        if (!same_dim(fo->dims[d], fi->dims[d])) return v;
    return take(m, rs) ? rs->in[0] : v;
}

static kiln_status fuse_one(opt_ctx *c, kiln_node *out) {
    static const int64_t heads_first[4] = {0, 2, 1, 3};
    attn_match m = {{0}, 0, 1.0};
    if (out->n_in != 2 || out->n_out != 1 || !take(&m, out)) return KILN_OK;
    /* the head merge's Transpose may also be read by Shape nodes (GPT-2 computes the merge shape
     * from it): then only the 4-D form, which keeps it, applies */
    kiln_node *tr = opt_producer(c, out->in[0], "Transpose");
    if (!tr || !has_perm(tr, 4, heads_first) || !take(&m, tr)) return KILN_OK;
    int tr_shared = !opt_private(c, out->in[0], 1);
    kiln_node *pv = inner(c, skip_same_shape_reshape(c, tr->in[0], &m), "MatMul");
    if (!pv || pv->n_in != 2 || !take(&m, pv)) return KILN_OK;

    /* probabilities, with or without the NaN guard */
    int p = pv->in[0], guarded = 0;
    if (!skip_identity_casts(c, &p, &m)) return KILN_OK;
    kiln_node *where = inner(c, p, "Where");
    if (where && where->n_in == 3) {
        p = where->in[2];
        kiln_node *isnan_n = inner(c, where->in[0], "IsNaN");
        if (!isnan_n || isnan_n->in[0] != p || !opt_private(c, p, 2) ||
            !opt_is_scalar(c, where->in[1], 0.0, opt_fact(c, p)) || !take(&m, where) ||
            !take(&m, isnan_n))
            return KILN_OK;
        guarded = 1;
    } else if (!opt_private(c, p, 1)) {
        return KILN_OK;
    }
    kiln_node *sm = opt_producer(c, p, "Softmax");
    if (!sm || sm->n_in != 1 || !take(&m, sm)) return KILN_OK;
    int64_t axis = kiln_attr_int(sm, "axis", sm->opset < 13 ? 1 : -1);
    if (axis != -1 && axis != 3) return decline(c, sm, "softmax not over the last axis");

    /* scores [+ mask] */
    int s = sm->in[0], mask = -1;
    kiln_node *add = inner(c, s, "Add");
    if (add && add->n_in == 2) {
        for (int k = 0; k < 2 && mask < 0; k++) {
            int sv = add->in[k], before = m.n;
            double scale = m.scale;
            strip_scale(c, &sv, &m);
            m.n = before; /* only looked */
            m.scale = scale;
            if (inner(c, sv, "MatMul")) {
                mask = add->in[1 - k];
                s = add->in[k];
            }
        }
        if (mask < 0 || !take(&m, add)) return decline(c, sm, "the Add before softmax is not scores + mask");
    }
    const kiln_tensor *fs = opt_fact(c, s);
    strip_scale(c, &s, &m);
    kiln_node *qk = inner(c, s, "MatMul");
    if (!qk || qk->n_in != 2 || !take(&m, qk)) return decline(c, sm, "no Q.K MatMul before softmax");
    int q4 = qk->in[0], kt = qk->in[1];
    strip_scale(c, &q4, &m);
    strip_scale(c, &kt, &m);

    int q3, k3, v3, core = m.n;
    int64_t nq, hq, nk, hk, nv, hv;
    if (tr_shared || !head_split(c, q4, heads_first, &m, &q3, &nq, &hq) ||
        !key_transposed(c, kt, &m, &k3, &nk, &hk) ||
        !head_split(c, pv->in[1], heads_first, &m, &v3, &nv, &hv)) {
        m.n = core;
        return fuse_bnsh(c, &m, sm, pv, q4, kt, mask, guarded, fs);
    }
    const kiln_tensor *fq = opt_fact(c, q3), *fk = opt_fact(c, k3), *fv = opt_fact(c, v3);
    const kiln_tensor *fo = opt_fact(c, out->out[0]);
    /* The CPU Attention kernel converts half inputs to float32 and back on every call, slower than
     * the unfused MatMul path (bert_tiny_fused_fp16 0.203 -> 0.223 ms); the GPU's flash kernels
     * take float16/bfloat16 only. So a CPU session fuses float32 attention, a device session the
     * half types (its float32 attention stays as MatMul/Softmax, which the device runs). */
    if (c->device ? !half_type(fq->dtype) : half_type(fq->dtype))
        return decline(c, sm, c->device ? "float32 on a device session" : "half type on the CPU");
    if (nq != nk || nk != nv || hq != hk || !opt_float_type(fq->dtype) || fk->dtype != fq->dtype ||
        fv->dtype != fq->dtype || !same_dim(fk->dims[0], fq->dims[0]) ||
        !same_dim(fv->dims[0], fq->dims[0]) || !same_dim(fv->dims[1], fk->dims[1]))
        return decline(c, sm, "q, k, v heads, types or dimensions not provably matching");
    /* the head merge's Reshape is absorbed when it gives the kernel's (B, S, N*Hv) output; any
     * other target shape (GPT-2 merges B and S for the next Gemm) stays, reading the output */
    int keep_reshape = fo->rank != 3 || !same_dim(fo->dims[0], fq->dims[0]) ||
                       !same_dim(fo->dims[1], fq->dims[1]) || fo->dims[2] != nq * hv;
    int checked_mask, causal = causal_mask(c, sm, &mask, fs);
    KILN_TRY(check_mask(c, sm, mask, fs, fq->dtype, guarded, &checked_mask));
    if (checked_mask < 0) return KILN_OK;

    kiln_attr *attrs = calloc(4, sizeof *attrs);
    if (!attrs || !opt_attr_int(&attrs[0], "q_num_heads", nq) ||
        !opt_attr_int(&attrs[1], "kv_num_heads", nq) ||
        !opt_attr_float(&attrs[2], "scale", (float)m.scale) ||
        (checked_mask && !opt_attr_int(&attrs[3], "kiln_mask_broadcast", 1)) ||
        (causal && !opt_attr_int(&attrs[3], "is_causal", 1))) {
        opt_attrs_free(attrs, attrs ? 4 : 0);
        return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
    }
    int ins[4] = {q3, k3, v3, mask}, y = out->out[0];
    if (keep_reshape) {
        char name[300];
        snprintf(name, sizeof name, "%s_attention", c->g->values[tr->out[0]].name);
        if ((y = opt_add_value(c, name)) < 0) {
            opt_attrs_free(attrs, 4);
            return kiln_fail(c->e, KILN_ERR_NO_MEMORY, "out of memory");
        }
        opt_set_input(c, out, 0, y);
    }
    /* m.nodes[0] is the Reshape */
    return opt_replace(c, m.nodes + keep_reshape, m.n - keep_reshape, "", "Attention", 23, ins,
                       mask >= 0 ? 4 : 3, &y, 1, attrs, 3 + checked_mask + causal);
}

kiln_status opt_fuse_attention(opt_ctx *c) {
    kiln_graph *g = c->g;
    for (int i = 0; i < g->n_nodes; i++) {
        kiln_node *n = &g->nodes[i];
        if (!n->removed && !n->domain[0] && !strcmp(n->op_type, "Reshape")) KILN_TRY(fuse_one(c, n));
    }
    return KILN_OK;
}
