/* Tree ensembles: TreeEnsembleClassifier and TreeEnsembleRegressor (ai.onnx.ml 1 and 3, nodes
 * named by (tree id, node id)) and TreeEnsemble (ai.onnx.ml 5, nodes by position, separate leaf
 * arrays, set-membership splits). All three are compiled at init into one flat layout: nodes with
 * resolved child positions, leaves as nodes carrying (target, weight) contributions. Rows are
 * scored in parallel; comparisons are done in double (exact for float inputs and thresholds). */
#include "ml_common.h"
#include "string_kernels.h"
#include <stdio.h>

enum { M_LEQ, M_LT, M_GTE, M_GT, M_EQ, M_NEQ, M_MEMBER, M_LEAF };
enum { AGG_AVERAGE, AGG_SUM, AGG_MIN, AGG_MAX };
enum { KIND_CLASSIFIER, KIND_REGRESSOR, KIND_ENSEMBLE };

typedef struct tnode {
    int64_t feature;
    double thr;
    int64_t child[2];        /* [false, true] node positions */
    int64_t first, count;    /* leaves: contributions; members: membership values */
    uint8_t mode, missing_true;
} tnode;

typedef struct tree_model {
    int kind, agg, pt;
    int64_t n_nodes, n_trees, n_targets, max_feature;
    tnode *nodes;
    int64_t *roots;
    int64_t *c_target;
    double *c_weight;
    int64_t n_contrib;
    double *members;
    double *base;            /* n_targets or NULL */
    /* classifier */
    int n_labels;
    const int64_t *labels_i;
    char *const *labels_s;
    int binary_case, weights_positive;
    int64_t binary_class;    /* the one class id used in the binary case */
} tree_model;

void kiln_ml_tree_fini(void *p) {
    tree_model *m = p;
    if (!m) return;
    free(m->nodes);
    free(m->roots);
    free(m->c_target);
    free(m->c_weight);
    free(m->members);
    free(m->base);
    free(m);
}

/* A float list attribute or its *_as_tensor double form, as doubles; count -1 when absent. */
static double *floats_or_tensor(const kiln_node *nd, const char *name, int64_t *count) {
    char tname[96];
    snprintf(tname, sizeof tname, "%s_as_tensor", name);
    const kiln_tensor *t = kiln_attr_tensor(nd, tname);
    int n = 0;
    const float *f = kiln_attr_floats(nd, name, &n);
    if (!t && !f) { *count = -1; return NULL; }
    int64_t m = t ? kiln_numel(t) : n;
    double *out = malloc(sizeof(double) * (size_t)(m + 1));
    if (!out) { *count = -2; return NULL; }
    for (int64_t i = 0; i < m; i++) out[i] = t ? qe_load_f64(t->dtype, t->data, i) : (double)f[i];
    *count = m;
    return out;
}

static int parse_mode(const char *s) {
    static const char *const names[] = {"BRANCH_LEQ", "BRANCH_LT", "BRANCH_GTE", "BRANCH_GT",
                                        "BRANCH_EQ", "BRANCH_NEQ", "BRANCH_MEMBER", "LEAF"};
    for (int i = 0; i < 8; i++)
        if (!strcmp(s, names[i])) return i;
    return -1;
}

typedef struct id_pair {
    int64_t tree, node, pos;
} id_pair;

static int pair_cmp(const void *a, const void *b) {
    const id_pair *x = a, *y = b;
    if (x->tree != y->tree) return x->tree < y->tree ? -1 : 1;
    if (x->node != y->node) return x->node < y->node ? -1 : 1;
    return (x->pos > y->pos) - (x->pos < y->pos);
}

static int64_t find_pair(const id_pair *v, int64_t n, int64_t tree, int64_t node) {
    int64_t lo = 0, hi = n;
    while (lo < hi) {
        int64_t mid = (lo + hi) / 2;
        if (v[mid].tree < tree || (v[mid].tree == tree && v[mid].node < node)) lo = mid + 1;
        else hi = mid;
    }
    return lo < n && v[lo].tree == tree && v[lo].node == node ? v[lo].pos : -1;
}

/* Orders contributions by node so that each leaf owns one [first, first + count) slice. */
typedef struct contrib {
    int64_t node, target;
    double w;
    int64_t seq;
} contrib;

static int contrib_cmp(const void *a, const void *b) {
    const contrib *x = a, *y = b;
    if (x->node != y->node) return x->node < y->node ? -1 : 1;
    return (x->seq > y->seq) - (x->seq < y->seq);
}

static kiln_status attach_contribs(kiln_ctx *ctx, tree_model *m, contrib *cs, int64_t n) {
    qsort(cs, (size_t)n, sizeof *cs, contrib_cmp);
    m->c_target = malloc(sizeof(int64_t) * (size_t)(n + 1));
    m->c_weight = malloc(sizeof(double) * (size_t)(n + 1));
    if (!m->c_target || !m->c_weight) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        tnode *nd = &m->nodes[cs[i].node];
        if (nd->count == 0) nd->first = i;
        nd->count++;
        m->c_target[i] = cs[i].target;
        m->c_weight[i] = cs[i].w;
    }
    m->n_contrib = n;
    return KILN_OK;
}

/* ai.onnx.ml 1/3 classifier and regressor */
static kiln_status build_v1(kiln_ctx *ctx, tree_model *m) {
    const kiln_node *nd = ctx->node;
    int cls = m->kind == KIND_CLASSIFIER;
    int n_tid = 0, n_nid = 0, n_fid = 0, n_tr = 0, n_fa = 0, n_modes = 0, n_miss = 0;
    const int64_t *tid = kiln_attr_ints(nd, "nodes_treeids", &n_tid);
    const int64_t *nid = kiln_attr_ints(nd, "nodes_nodeids", &n_nid);
    const int64_t *fid = kiln_attr_ints(nd, "nodes_featureids", &n_fid);
    const int64_t *tru = kiln_attr_ints(nd, "nodes_truenodeids", &n_tr);
    const int64_t *fal = kiln_attr_ints(nd, "nodes_falsenodeids", &n_fa);
    const int64_t *miss = kiln_attr_ints(nd, "nodes_missing_value_tracks_true", &n_miss);
    char *const *modes = kiln_attr_strings(nd, "nodes_modes", &n_modes);
    int64_t n_vals;
    double *vals = floats_or_tensor(nd, "nodes_values", &n_vals);
    int64_t n = n_nid;
    kiln_status st = KILN_OK;
    id_pair *pairs = NULL;
    contrib *cs = NULL;
    if (!tid || !nid || !modes || n_tid != n || n_modes != n || (fid && n_fid != n) || (tru && n_tr != n) ||
        (fal && n_fa != n) || (miss && n_miss != n) || (n_vals >= 0 && n_vals != n)) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "nodes_* attributes are missing or differ in length");
        goto done;
    }
    m->n_nodes = n;
    m->nodes = calloc((size_t)(n + 1), sizeof(tnode));
    pairs = malloc(sizeof(id_pair) * (size_t)(n + 1));
    m->roots = malloc(sizeof(int64_t) * (size_t)(n + 1));
    if (!m->nodes || !pairs || !m->roots) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto done; }
    for (int64_t i = 0; i < n; i++) pairs[i] = (id_pair){tid[i], nid[i], i};
    qsort(pairs, (size_t)n, sizeof *pairs, pair_cmp);
    for (int64_t i = 1; i < n; i++)
        if (pairs[i].tree == pairs[i - 1].tree && pairs[i].node == pairs[i - 1].node) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "node (%lld, %lld) is defined twice",
                           (long long)pairs[i].tree, (long long)pairs[i].node);
            goto done;
        }
    /* a tree's root is its first node in attribute order */
    m->n_trees = 0;
    for (int64_t i = 0; i < n; i++)
        if (i == 0 || pairs[i].tree != pairs[i - 1].tree) {
            int64_t best = pairs[i].pos;
            for (int64_t k = i; k < n && pairs[k].tree == pairs[i].tree; k++)
                if (pairs[k].pos < best) best = pairs[k].pos;
            m->roots[m->n_trees++] = best;
        }
    m->max_feature = -1;
    for (int64_t i = 0; i < n; i++) {
        tnode *t = &m->nodes[i];
        int md = parse_mode(modes[i]);
        if (md < 0 || md == M_MEMBER) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown node mode '%s'", modes[i]);
            goto done;
        }
        t->mode = (uint8_t)md;
        t->feature = fid ? fid[i] : 0;
        t->thr = vals ? vals[i] : 0.0;
        t->missing_true = miss ? miss[i] != 0 : 0;
        if (md == M_LEAF) continue;
        if (t->feature < 0) { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "negative feature id"); goto done; }
        if (t->feature > m->max_feature) m->max_feature = t->feature;
        int64_t tc = tru ? find_pair(pairs, n, tid[i], tru[i]) : -1;
        int64_t fc = fal ? find_pair(pairs, n, tid[i], fal[i]) : -1;
        if (tc < 0 || fc < 0) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "node (%lld, %lld) points at a missing child",
                           (long long)tid[i], (long long)nid[i]);
            goto done;
        }
        t->child[1] = tc;
        t->child[0] = fc;
    }
    /* leaf contributions */
    const char *pre = cls ? "class" : "target";
    char a1[32], a2[32], a3[32], a4[32];
    snprintf(a1, sizeof a1, "%s_treeids", pre);
    snprintf(a2, sizeof a2, "%s_nodeids", pre);
    snprintf(a3, sizeof a3, "%s_ids", pre);
    snprintf(a4, sizeof a4, "%s_weights", pre);
    int nc1 = 0, nc2 = 0, nc3 = 0;
    const int64_t *ct = kiln_attr_ints(nd, a1, &nc1), *cn = kiln_attr_ints(nd, a2, &nc2), *ci = kiln_attr_ints(nd, a3, &nc3);
    int64_t nw;
    double *cw = floats_or_tensor(nd, a4, &nw);
    if (nc1 != nc2 || nc1 != nc3 || (nw >= 0 && nw != nc1) || (nc1 > 0 && (!ct || !cn || !ci || !cw))) {
        free(cw);
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s_* attributes are missing or differ in length", pre);
        goto done;
    }
    cs = malloc(sizeof(contrib) * (size_t)(nc1 + 1));
    if (!cs) { free(cw); st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto done; }
    m->weights_positive = 1;
    int64_t first_class = nc1 > 0 ? ci[0] : 0;
    int one_class = 1;
    for (int64_t i = 0; i < nc1; i++) {
        int64_t pos = find_pair(pairs, n, ct[i], cn[i]);
        if (pos < 0) {
            free(cw);
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s weight %lld names a missing node", pre, (long long)i);
            goto done;
        }
        if (ci[i] < 0 || ci[i] >= m->n_targets) {
            free(cw);
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s id %lld is outside [0, %lld)", pre,
                           (long long)ci[i], (long long)m->n_targets);
            goto done;
        }
        cs[i] = (contrib){pos, ci[i], cw[i], i};
        if (cw[i] < 0) m->weights_positive = 0;
        if (ci[i] != first_class) one_class = 0;
    }
    free(cw);
    st = attach_contribs(ctx, m, cs, nc1);
    if (st != KILN_OK) goto done;
    if (cls) {
        /* onnxruntime's binary case: two labels and every weight on class 0 (one score) */
        m->binary_case = m->n_labels == 2 && one_class && nc1 > 0 && first_class == 0;
        m->binary_class = first_class;
    }
    int64_t nb;
    m->base = floats_or_tensor(nd, "base_values", &nb);
    if (nb == -2) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto done; }
    if (nb >= 0 && nb != m->n_targets && !(cls && m->binary_case && nb == 1)) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%lld base values for %lld outputs", (long long)nb,
                       (long long)m->n_targets);
        goto done;
    }
    if (nb == 0) { free(m->base); m->base = NULL; }
    if (cls && m->base && nb == 1) { /* one base value in the binary case applies to that class */
        double b = m->base[0];
        free(m->base);
        m->base = calloc((size_t)m->n_targets, sizeof(double));
        if (!m->base) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto done; }
        m->base[m->binary_class] = b;
    }
done:
    free(vals);
    free(pairs);
    free(cs);
    return st;
}

/* ai.onnx.ml 5 TreeEnsemble */
static kiln_status build_v5(kiln_ctx *ctx, tree_model *m) {
    const kiln_node *nd = ctx->node;
    int n_roots = 0, n_fid = 0, n_tr = 0, n_tl = 0, n_fa = 0, n_fl = 0, n_miss = 0, n_lt = 0;
    const int64_t *roots = kiln_attr_ints(nd, "tree_roots", &n_roots);
    const int64_t *fid = kiln_attr_ints(nd, "nodes_featureids", &n_fid);
    const int64_t *tru = kiln_attr_ints(nd, "nodes_truenodeids", &n_tr);
    const int64_t *tl = kiln_attr_ints(nd, "nodes_trueleafs", &n_tl);
    const int64_t *fal = kiln_attr_ints(nd, "nodes_falsenodeids", &n_fa);
    const int64_t *fl = kiln_attr_ints(nd, "nodes_falseleafs", &n_fl);
    const int64_t *miss = kiln_attr_ints(nd, "nodes_missing_value_tracks_true", &n_miss);
    const int64_t *lt = kiln_attr_ints(nd, "leaf_targetids", &n_lt);
    const kiln_tensor *splits = kiln_attr_tensor(nd, "nodes_splits");
    const kiln_tensor *tmodes = kiln_attr_tensor(nd, "nodes_modes");
    const kiln_tensor *lw = kiln_attr_tensor(nd, "leaf_weights");
    const kiln_tensor *mv = kiln_attr_tensor(nd, "membership_values");
    int64_t n = n_fid;
    if (!roots || !fid || !tru || !tl || !fal || !fl || !lt || !splits || !tmodes || !lw || n_tr != n ||
        n_tl != n || n_fa != n || n_fl != n || (miss && n_miss != n) || kiln_numel(splits) != n ||
        kiln_numel(tmodes) != n || kiln_numel(lw) != n_lt)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "nodes_*, leaf_* or tree_roots are missing or differ in length");
    int64_t nl = n_lt;
    m->n_nodes = n + nl;
    m->nodes = calloc((size_t)(n + nl + 1), sizeof(tnode));
    m->roots = malloc(sizeof(int64_t) * (size_t)(n_roots + 1));
    int64_t n_members = mv ? kiln_numel(mv) : 0;
    m->members = malloc(sizeof(double) * (size_t)(n_members + 1));
    contrib *cs = malloc(sizeof(contrib) * (size_t)(nl + 1));
    if (!m->nodes || !m->roots || !m->members || !cs) {
        free(cs);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    for (int64_t i = 0; i < n_members; i++) m->members[i] = qe_load_f64(mv->dtype, mv->data, i);
    int64_t mpos = 0;
    m->max_feature = -1;
    m->weights_positive = 1;
    for (int64_t i = 0; i < n; i++) {
        tnode *t = &m->nodes[i];
        int64_t md = kiln_load_i64(tmodes->dtype, tmodes->data, i);
        if (md < 0 || md > M_MEMBER) { free(cs); return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown node mode %lld", (long long)md); }
        t->mode = (uint8_t)md;
        t->feature = fid[i];
        if (t->feature < 0) { free(cs); return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "negative feature id"); }
        if (t->feature > m->max_feature) m->max_feature = t->feature;
        t->thr = qe_load_f64(splits->dtype, splits->data, i);
        t->missing_true = miss ? miss[i] != 0 : 0;
        int64_t c1 = tl[i] ? n + tru[i] : tru[i], c0 = fl[i] ? n + fal[i] : fal[i];
        if (tru[i] < 0 || fal[i] < 0 || (tl[i] ? tru[i] >= nl : tru[i] >= n) || (fl[i] ? fal[i] >= nl : fal[i] >= n)) {
            free(cs);
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "node %lld points outside the node or leaf arrays", (long long)i);
        }
        t->child[1] = c1;
        t->child[0] = c0;
        if (md == M_MEMBER) { /* this node's members run up to the next NaN separator */
            t->first = mpos;
            while (mpos < n_members && !isnan(m->members[mpos])) mpos++;
            t->count = mpos - t->first;
            if (mpos < n_members) mpos++;
        }
    }
    for (int64_t i = 0; i < nl; i++) {
        m->nodes[n + i].mode = M_LEAF;
        if (lt[i] < 0 || lt[i] >= m->n_targets) {
            free(cs);
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "leaf target %lld is outside [0, %lld)",
                             (long long)lt[i], (long long)m->n_targets);
        }
        cs[i] = (contrib){n + i, lt[i], qe_load_f64(lw->dtype, lw->data, i), i};
    }
    kiln_status st = attach_contribs(ctx, m, cs, nl);
    free(cs);
    if (st != KILN_OK) return st;
    m->n_trees = n_roots;
    for (int i = 0; i < n_roots; i++) {
        if (roots[i] < 0 || roots[i] >= n) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "tree root %d is out of range", i);
        m->roots[i] = roots[i];
    }
    return KILN_OK;
}

/* Guards against cycles: a walk longer than the node count is a malformed tree. */
static kiln_status check_acyclic(kiln_ctx *ctx, const tree_model *m) {
    for (int64_t i = 0; i < m->n_nodes; i++) {
        const tnode *t = &m->nodes[i];
        if (t->mode == M_LEAF) continue;
        for (int b = 0; b < 2; b++)
            if (t->child[b] < 0 || t->child[b] >= m->n_nodes)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "node %lld has an invalid child", (long long)i);
    }
    /* depth-first from each root with a step budget */
    for (int64_t r = 0; r < m->n_trees; r++) {
        int64_t budget = m->n_nodes + 1;
        int64_t stack_cap = 64, sp = 0;
        int64_t *stack = malloc(sizeof(int64_t) * (size_t)stack_cap);
        if (!stack) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        stack[sp++] = m->roots[r];
        while (sp > 0) {
            int64_t i = stack[--sp];
            if (--budget < 0) {
                free(stack);
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "tree %lld is not a tree (cycle or shared nodes)", (long long)r);
            }
            const tnode *t = &m->nodes[i];
            if (t->mode == M_LEAF) continue;
            if (sp + 2 > stack_cap) {
                stack_cap *= 2;
                int64_t *ns = realloc(stack, sizeof(int64_t) * (size_t)stack_cap);
                if (!ns) { free(stack); return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); }
                stack = ns;
            }
            stack[sp++] = t->child[0];
            if (t->child[1] != t->child[0]) stack[sp++] = t->child[1];
        }
        free(stack);
    }
    return KILN_OK;
}

kiln_status kiln_ml_tree_init(kiln_ctx *ctx) {
    const kiln_node *nd = ctx->node;
    tree_model *m = calloc(1, sizeof *m);
    if (!m) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = KILN_OK;
    const char *op = nd->op_type;
    m->kind = !strcmp(op, "TreeEnsembleClassifier") ? KIND_CLASSIFIER
            : !strcmp(op, "TreeEnsembleRegressor") ? KIND_REGRESSOR : KIND_ENSEMBLE;
    if (m->kind == KIND_ENSEMBLE) {
        m->agg = (int)kiln_attr_int(nd, "aggregate_function", AGG_SUM);
        m->pt = (int)kiln_attr_int(nd, "post_transform", ML_PT_NONE);
        m->n_targets = kiln_attr_int(nd, "n_targets", -1);
        if (m->agg < 0 || m->agg > 3 || m->pt < 0 || m->pt > 4) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "aggregate_function or post_transform out of range");
            goto fail;
        }
    } else {
        m->pt = ml_post_transform(kiln_attr_string(nd, "post_transform", "NONE"));
        if (m->pt < 0) { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown post_transform"); goto fail; }
        if (m->kind == KIND_REGRESSOR) {
            const char *agg = kiln_attr_string(nd, "aggregate_function", "SUM");
            m->agg = !strcmp(agg, "AVERAGE") ? AGG_AVERAGE : !strcmp(agg, "SUM") ? AGG_SUM
                   : !strcmp(agg, "MIN") ? AGG_MIN : !strcmp(agg, "MAX") ? AGG_MAX : -1;
            if (m->agg < 0) { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown aggregate_function '%s'", agg); goto fail; }
            m->n_targets = kiln_attr_int(nd, "n_targets", 1);
        } else {
            m->agg = AGG_SUM;
            m->labels_i = kiln_attr_ints(nd, "classlabels_int64s", &m->n_labels);
            if (!m->labels_i) m->labels_s = kiln_attr_strings(nd, "classlabels_strings", &m->n_labels);
            if (m->n_labels < 1) { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "class labels are required"); goto fail; }
            m->n_targets = m->n_labels;
        }
    }
    if (m->n_targets < 1) { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "n_targets must be >= 1"); goto fail; }
    st = m->kind == KIND_ENSEMBLE ? build_v5(ctx, m) : build_v1(ctx, m);
    if (st == KILN_OK) st = check_acyclic(ctx, m);
    if (st != KILN_OK) goto fail;
    ctx->state = m;
    return KILN_OK;
fail:
    kiln_ml_tree_fini(m);
    return st;
}

kiln_status kiln_ml_tree_infer(kiln_ctx *ctx) {
    const tree_model *m = ctx->state;
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!m) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "tree ensemble was not initialised");
    int ok = m->kind == KIND_ENSEMBLE ? qe_is_float(x->dtype) && x->dtype != KILN_DTYPE_BFLOAT16
                                      : ml_is_feature_type(x->dtype);
    if (!ok) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s", kiln_dtype_name(x->dtype));
    int ydt = m->kind == KIND_ENSEMBLE ? x->dtype : KILN_DTYPE_FLOAT;
    if (x->rank < 0) {
        if (m->kind == KIND_CLASSIFIER) {
            KILN_TRY(kiln_set_output_unknown(ctx, 0, m->labels_s ? KILN_DTYPE_STRING : KILN_DTYPE_INT64));
            return kiln_set_output_unknown(ctx, 1, KILN_DTYPE_FLOAT);
        }
        return kiln_set_output_unknown(ctx, 0, ydt);
    }
    int64_t N = 0, C = 0;
    KILN_TRY(ml_rows_cols(ctx, x, &N, &C));
    if (C >= 0 && m->max_feature >= C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the trees read feature %lld but X has %lld",
                         (long long)m->max_feature, (long long)C);
    if (m->kind == KIND_CLASSIFIER) {
        int64_t zd[2] = {N, m->binary_case ? 2 : m->n_targets};
        KILN_TRY(kiln_set_output(ctx, 0, m->labels_s ? KILN_DTYPE_STRING : KILN_DTYPE_INT64, 1, &N));
        return kiln_set_output(ctx, 1, KILN_DTYPE_FLOAT, 2, zd);
    }
    int64_t dims[2] = {N, m->n_targets};
    return kiln_set_output(ctx, 0, ydt, 2, dims);
}

static inline int64_t leaf_of(const tree_model *m, int64_t i, const kiln_tensor *x, int64_t base) {
    const tnode *t = &m->nodes[i];
    while (t->mode != M_LEAF) {
        double v = qe_load_f64(x->dtype, x->data, base + t->feature);
        int go;
        if (isnan(v) && t->missing_true) {
            go = 1;
        } else { /* NaN otherwise compares as IEEE says (false, true for NEQ), as in onnxruntime */
            switch (t->mode) {
            case M_LEQ: go = v <= t->thr; break;
            case M_LT: go = v < t->thr; break;
            case M_GTE: go = v >= t->thr; break;
            case M_GT: go = v > t->thr; break;
            case M_EQ: go = v == t->thr; break;
            case M_NEQ: go = v != t->thr; break;
            default: { /* set membership */
                go = 0;
                for (int64_t k = 0; k < t->count && !go; k++) go = m->members[t->first + k] == v;
            }
            }
        }
        i = t->child[go];
        t = &m->nodes[i];
    }
    return i;
}

typedef struct tree_job {
    const tree_model *m;
    const kiln_tensor *x;
    kiln_tensor *y, *z;
    int64_t C;
    int failed;
} tree_job;

static void tree_rows(void *arg, int64_t begin, int64_t end) {
    tree_job *j = arg;
    const tree_model *m = j->m;
    int64_t T = m->n_targets;
    double *acc = malloc(sizeof(double) * (size_t)(T + 1));
    unsigned char *has = malloc((size_t)T + 1);
    float *sc = malloc(sizeof(float) * (size_t)(T + 2)), *out = malloc(sizeof(float) * (size_t)(T + 2));
    if (!acc || !has || !sc || !out) {
        free(acc); free(has); free(sc); free(out);
        j->failed = 1;
        return;
    }
    for (int64_t r = begin; r < end; r++) {
        for (int64_t t = 0; t < T; t++) { acc[t] = 0.0; has[t] = 0; }
        for (int64_t k = 0; k < m->n_trees; k++) {
            const tnode *leaf = &m->nodes[leaf_of(m, m->roots[k], j->x, r * j->C)];
            for (int64_t c = leaf->first; c < leaf->first + leaf->count; c++) {
                int64_t t = m->c_target[c];
                double w = m->c_weight[c];
                if (m->agg == AGG_MIN) acc[t] = has[t] ? fmin(acc[t], w) : w;
                else if (m->agg == AGG_MAX) acc[t] = has[t] ? fmax(acc[t], w) : w;
                else acc[t] += w;
                has[t] = 1;
            }
        }
        for (int64_t t = 0; t < T; t++) {
            if (m->agg == AGG_AVERAGE && m->n_trees > 0) acc[t] /= (double)m->n_trees;
            /* a target no leaf reached scores 0, without its base value (as onnxruntime does) */
            if (!has[t]) acc[t] = 0.0;
            else if (m->base) acc[t] += m->base[t];
            sc[t] = (float)acc[t];
        }
        if (m->kind != KIND_CLASSIFIER) {
            if (m->kind == KIND_ENSEMBLE && j->y->dtype == KILN_DTYPE_DOUBLE) {
                double *row = (double *)j->y->data + r * T;
                for (int64_t t = 0; t < T; t++) row[t] = acc[t];
                if (m->pt != ML_PT_NONE) { /* transforms are float functions */
                    ml_apply_transform(m->pt, sc, T);
                    for (int64_t t = 0; t < T; t++) row[t] = sc[t];
                }
            } else {
                ml_apply_transform(m->pt, sc, T);
                for (int64_t t = 0; t < T; t++) qe_store_f32(j->y->dtype, j->y->data, r * T + t, sc[t]);
            }
            continue;
        }
        /* classifier: label and scores as onnxruntime assigns them */
        int64_t pos = 0, nz = T;
        if (m->binary_case) {
            float s = sc[m->binary_class];
            int add;
            if (m->weights_positive) { pos = s > 0.5f ? 1 : 0; add = pos ? 0 : 1; }
            else { pos = s > 0.0f ? 1 : 0; add = pos ? 2 : 3; }
            ml_write_scores(m->pt, &s, 1, add, out, &nz);
        } else if (T == 2) { /* two classes: the raw class-1 score decides, as in onnxruntime */
            pos = sc[1] > 0.0f ? 1 : 0;
            ml_write_scores(m->pt, sc, T, -1, out, &nz);
        } else {
            for (int64_t t = 1; t < T; t++)
                if (sc[t] > sc[pos]) pos = t;
            ml_write_scores(m->pt, sc, T, -1, out, &nz);
        }
        if (j->y) {
            if (m->labels_s) {
                char *d = kiln_str_dup(m->labels_s[pos]);
                if (!d) { j->failed = 1; break; }
                kiln_str_free(((char **)j->y->data)[r]);
                ((char **)j->y->data)[r] = d;
            } else {
                ((int64_t *)j->y->data)[r] = m->labels_i[pos];
            }
        }
        if (j->z) {
            int64_t w = j->z->dims[1];
            for (int64_t t = 0; t < w; t++) ((float *)j->z->data)[r * w + t] = t < nz ? out[t] : 0.0f;
        }
    }
    free(acc); free(has); free(sc); free(out);
}

kiln_status kiln_ml_tree_compute(kiln_ctx *ctx) {
    const tree_model *m = ctx->state;
    tree_job j;
    memset(&j, 0, sizeof j);
    j.m = m;
    j.x = kiln_input(ctx, 0);
    int64_t N = 0, C = 0;
    KILN_TRY(ml_rows_cols(ctx, j.x, &N, &C));
    if (m->max_feature >= C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the trees read feature %lld but X has %lld",
                         (long long)m->max_feature, (long long)C);
    j.C = C;
    if (m->kind == KIND_CLASSIFIER) {
        j.y = kiln_output(ctx, 0);
        j.z = kiln_output(ctx, 1);
    } else {
        j.y = kiln_output(ctx, 0);
        if (!j.y) return KILN_OK;
    }
    if (N == 0) return KILN_OK;
    kiln_parallel_for(ctx, N, 1 + 1024 / (m->n_trees + 1), tree_rows, &j);
    if (j.failed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory while scoring trees");
    return KILN_OK;
}
