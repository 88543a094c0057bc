/* Einsum: any equation (implicit or explicit output, ellipsis, repeated labels as diagonals,
 * size-1 broadcasting, sums). Operands become strided views over a buffer of the compute type
 * (float32 for the float types, float64, int64 for every integer type; integers wrap like their
 * own fixed-width arithmetic after truncation). Labels that only one operand carries are summed
 * out first; operands are then contracted left to right, each pair as one batched GEMM
 * [batch, m, k] x [batch, k, n] (operands already laid out that way, or transposed, are used in
 * place); a final pass sums what is left and permutes into the output order. */
#include "gemm_util.h"
#include <stdlib.h>
#include <string.h>

#define EIN_MAX_LABELS (52 + KILN_MAX_RANK)
#define EIN_MAX_IN 32
#define EIN_ELL 52 /* label id of the first ellipsis dim */

typedef struct ein_term {
    int n;                      /* axes of the input */
    int lab[KILN_MAX_RANK];     /* label id of each axis */
} ein_term;

typedef struct ein_eq {
    int n_in, n_ell;            /* operands; broadcast ellipsis rank */
    ein_term in[EIN_MAX_IN];
    int n_out;
    int out[EIN_MAX_LABELS];
    int64_t size[EIN_MAX_LABELS]; /* global size of each label, -1 unknown, -2 unused */
} ein_eq;

static int label_id(char c) {
    if (c >= 'a' && c <= 'z') return c - 'a';
    if (c >= 'A' && c <= 'Z') return 26 + c - 'A';
    return -1;
}

static char label_char(int id) {
    return id < 26 ? (char)('a' + id) : id < 52 ? (char)('A' + id - 26) : '.';
}

/* Parses and checks the equation against the inputs' ranks and dims. */
static kiln_status ein_parse(kiln_ctx *ctx, ein_eq *e, int *ranks_known) {
    const char *eqs = kiln_attr_string(ctx->node, "equation", NULL);
    if (!eqs) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute equation is required");
    char buf[512];
    size_t n = 0;
    for (const char *p = eqs; *p; p++)
        if (*p != ' ' && n + 1 < sizeof buf) buf[n++] = *p;
    buf[n] = 0;
    memset(e, 0, sizeof *e);
    char *arrow = strstr(buf, "->");
    if (arrow) *arrow = 0;
    /* split inputs */
    const char *terms[EIN_MAX_IN + 1];
    int nt = 0;
    char *s = buf;
    for (;;) {
        if (nt > EIN_MAX_IN)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "more than %d operands", EIN_MAX_IN);
        terms[nt++] = s;
        char *c = strchr(s, ',');
        if (!c) break;
        *c = 0;
        s = c + 1;
    }
    if (nt != ctx->n_in)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "equation '%s' has %d operand terms but the node has %d inputs", eqs, nt,
                         ctx->n_in);
    e->n_in = nt;
    *ranks_known = 1;
    int has_ell[EIN_MAX_IN] = {0}, n_expl[EIN_MAX_IN] = {0};
    int tmp[EIN_MAX_IN][KILN_MAX_RANK + 3];
    for (int i = 0; i < nt; i++) {
        kiln_tensor *t;
        KILN_TRY(kiln_need_input(ctx, i, &t));
        int k = 0;
        for (const char *p = terms[i]; *p; p++) {
            if (p[0] == '.' && p[1] == '.' && p[2] == '.') {
                if (has_ell[i])
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "operand term %d of '%s' has two ellipses", i, eqs);
                has_ell[i] = 1;
                if (k < KILN_MAX_RANK + 2) tmp[i][k++] = -1;
                p += 2;
                continue;
            }
            int id = label_id(*p);
            if (id < 0)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "equation '%s' has the invalid character '%c'", eqs, *p);
            if (k >= KILN_MAX_RANK + 2)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "operand term %d is too long", i);
            tmp[i][k++] = id;
            n_expl[i]++;
        }
        e->in[i].n = k; /* provisional: entries of tmp */
        if (t->rank < 0) {
            *ranks_known = 0;
            continue;
        }
        if (has_ell[i] ? t->rank < n_expl[i] : t->rank != n_expl[i])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "operand term %d has %d labels%s but input %d has rank %d", i,
                             n_expl[i], has_ell[i] ? " and an ellipsis" : "", i, t->rank);
        if (has_ell[i] && t->rank - n_expl[i] > e->n_ell) e->n_ell = t->rank - n_expl[i];
    }
    for (int l = 0; l < EIN_MAX_LABELS; l++) e->size[l] = -2;
    int count[EIN_MAX_LABELS] = {0};
    if (!*ranks_known) {
        /* label counts still decide an implicit output; ellipsis ranks are unknown */
        for (int i = 0; i < nt; i++)
            for (int k = 0; k < e->in[i].n; k++)
                if (tmp[i][k] >= 0) count[tmp[i][k]]++;
    }
    for (int i = 0; *ranks_known && i < nt; i++) {
        kiln_tensor *t = kiln_input(ctx, i);
        int ne = has_ell[i] ? t->rank - n_expl[i] : 0, ax = 0;
        for (int k = 0; k < e->in[i].n; k++) {
            if (tmp[i][k] < 0) {
                for (int j = 0; j < ne; j++) e->in[i].lab[ax++] = EIN_ELL + e->n_ell - ne + j;
            } else {
                e->in[i].lab[ax++] = tmp[i][k];
            }
        }
        e->in[i].n = ax;
        for (int a = 0; a < ax; a++) {
            int l = e->in[i].lab[a];
            int64_t d = t->dims[a];
            if (l < EIN_ELL) count[l]++;
            int64_t *g = &e->size[l];
            if (*g == -2) *g = d;               /* first sighting */
            else if (d == *g || d == 1) continue; /* the same, or broadcast */
            else if (*g == 1 || *g < 0) *g = d; /* the earlier ones broadcast (or were unknown) */
            else if (d >= 0) {
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "label '%c' has size %lld in input %d but %lld elsewhere",
                                 label_char(l), (long long)d, i, (long long)*g);
            }
        }
    }
    /* output labels */
    if (arrow) {
        const char *o = arrow + 2;
        int seen_ell = 0;
        for (const char *p = o; *p; p++) {
            if (p[0] == '.' && p[1] == '.' && p[2] == '.') {
                if (seen_ell)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the output has two ellipses");
                seen_ell = 1;
                for (int j = 0; j < e->n_ell; j++) e->out[e->n_out++] = EIN_ELL + j;
                p += 2;
                continue;
            }
            int id = label_id(*p);
            if (id < 0)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "equation '%s' has the invalid character '%c'", eqs, *p);
            int found = count[id] > 0;
            if (!found)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "output label '%c' of '%s' is in no input term", *p, eqs);
            for (int j = 0; j < e->n_out; j++)
                if (e->out[j] == id)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "output label '%c' appears twice", *p);
            e->out[e->n_out++] = id;
        }
    } else {
        for (int j = 0; j < e->n_ell; j++) e->out[e->n_out++] = EIN_ELL + j;
        /* ASCII order: upper case before lower case */
        for (int l = 26; l < 52; l++)
            if (count[l] == 1) e->out[e->n_out++] = l;
        for (int l = 0; l < 26; l++)
            if (count[l] == 1) e->out[e->n_out++] = l;
    }
    if (e->n_out > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the output has rank %d (at most %d)",
                         e->n_out, KILN_MAX_RANK);
    return KILN_OK;
}

static int ein_dtype_ok(int dt) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: case KILN_DTYPE_DOUBLE: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16:
    case KILN_DTYPE_INT8: case KILN_DTYPE_INT16: case KILN_DTYPE_INT32: case KILN_DTYPE_INT64:
    case KILN_DTYPE_UINT8: case KILN_DTYPE_UINT16: case KILN_DTYPE_UINT32: case KILN_DTYPE_UINT64:
        return 1;
    default:
        return 0;
    }
}

static kiln_status ein_types(kiln_ctx *ctx) {
    kiln_tensor *t0 = kiln_input(ctx, 0);
    if (ctx->n_in < 1 || !t0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "Einsum needs an operand");
    if (!ein_dtype_ok(t0->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d", t0->dtype);
    for (int i = 1; i < ctx->n_in; i++) {
        kiln_tensor *t = kiln_input(ctx, i);
        if (t && t->dtype != t0->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input %d has element type %d but input 0 has %d", i, t->dtype, t0->dtype);
    }
    return KILN_OK;
}

static kiln_status einsum_infer(kiln_ctx *ctx) {
    KILN_TRY(ein_types(ctx));
    ein_eq e;
    int known;
    KILN_TRY(ein_parse(ctx, &e, &known));
    int dt = kiln_input(ctx, 0)->dtype;
    if (!known) return kiln_set_output_unknown(ctx, 0, dt);
    int64_t dims[KILN_MAX_RANK];
    for (int j = 0; j < e.n_out; j++) dims[j] = e.size[e.out[j]] == -2 ? 1 : e.size[e.out[j]];
    return kiln_set_output(ctx, 0, dt, e.n_out, dims);
}

/* ---- strided views in the compute type ---- */

enum { CT_F32, CT_F64, CT_I64 };

typedef struct view {
    int n;
    int lab[EIN_MAX_LABELS];
    int64_t dim[EIN_MAX_LABELS], str[EIN_MAX_LABELS];
    void *data;
    void *owned; /* heap buffer to free, or NULL */
} view;

static size_t ct_size(int ct) { return ct == CT_F32 ? 4 : 8; }

static int view_find(const view *v, int l) {
    for (int i = 0; i < v->n; i++)
        if (v->lab[i] == l) return i;
    return -1;
}

/* out[labels `keep` in order, sizes from e->size] = sum over the view's other labels. Labels of
 * `keep` the view lacks, or has with size 1, broadcast. */
#define DEFINE_SUM_VIEW(NAME, T, U)                                                                \
    static void NAME(const view *v, int nk, const int *keep, const int64_t *ksize, T *out) {      \
        int64_t kst[EIN_MAX_LABELS], kdim[EIN_MAX_LABELS], rdim[EIN_MAX_LABELS], rst[EIN_MAX_LABELS]; \
        int nr = 0;                                                                                \
        int64_t total = 1;                                                                         \
        for (int i = 0; i < nk; i++) {                                                             \
            int a = view_find(v, keep[i]);                                                         \
            kdim[i] = ksize[i];                                                                    \
            kst[i] = a < 0 || v->dim[a] == 1 ? 0 : v->str[a];                                      \
            total *= kdim[i];                                                                      \
        }                                                                                          \
        for (int a = 0; a < v->n; a++) {                                                           \
            int kept = 0;                                                                          \
            for (int i = 0; i < nk; i++) kept |= keep[i] == v->lab[a];                             \
            if (!kept) { rdim[nr] = v->dim[a]; rst[nr] = v->str[a]; nr++; }                        \
        }                                                                                          \
        int64_t rtotal = 1;                                                                        \
        for (int r = 0; r < nr; r++) rtotal *= rdim[r];                                            \
        int64_t idx[EIN_MAX_LABELS] = {0}, off = 0;                                                \
        const T *src = v->data;                                                                    \
        for (int64_t o = 0; o < total; o++) {                                                      \
            U acc = 0;                                                                             \
            int64_t ridx[EIN_MAX_LABELS] = {0}, roff = 0;                                          \
            for (int64_t r = 0; r < rtotal; r++) {                                                 \
                acc += (U)src[off + roff];                                                         \
                for (int d = nr - 1; d >= 0; d--) {                                                \
                    roff += rst[d];                                                                \
                    if (++ridx[d] < rdim[d]) break;                                                \
                    roff -= rst[d] * rdim[d];                                                      \
                    ridx[d] = 0;                                                                   \
                }                                                                                  \
            }                                                                                      \
            out[o] = (T)acc;                                                                       \
            for (int d = nk - 1; d >= 0; d--) {                                                    \
                off += kst[d];                                                                     \
                if (++idx[d] < kdim[d]) break;                                                     \
                off -= kst[d] * kdim[d];                                                           \
                idx[d] = 0;                                                                        \
            }                                                                                      \
        }                                                                                          \
    }
DEFINE_SUM_VIEW(sum_view_f32, float, double)
DEFINE_SUM_VIEW(sum_view_f64, double, double)
DEFINE_SUM_VIEW(sum_view_i64, int64_t, uint64_t)

static void sum_view(int ct, const view *v, int nk, const int *keep, const int64_t *ksize, void *out) {
    if (ct == CT_F32) sum_view_f32(v, nk, keep, ksize, out);
    else if (ct == CT_F64) sum_view_f64(v, nk, keep, ksize, out);
    else sum_view_i64(v, nk, keep, ksize, out);
}

/* Replaces v by a contiguous copy holding labels `keep` (summing the rest). */
static kiln_status view_reduce(kiln_ctx *ctx, int ct, view *v, int nk, const int *keep,
                               const int64_t *gsize) {
    int64_t ks[EIN_MAX_LABELS], total = 1;
    for (int i = 0; i < nk; i++) {
        ks[i] = gsize[keep[i]];
        total *= ks[i];
    }
    void *buf = malloc(ct_size(ct) * (size_t)(total > 0 ? total : 1));
    if (!buf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in Einsum");
    sum_view(ct, v, nk, keep, ks, buf);
    free(v->owned);
    v->owned = v->data = buf;
    v->n = nk;
    int64_t s = 1;
    for (int i = nk - 1; i >= 0; i--) {
        v->lab[i] = keep[i];
        v->dim[i] = ks[i];
        v->str[i] = s;
        s *= ks[i];
    }
    return KILN_OK;
}

/* 1 when v is exactly the contiguous layout of labels `order` (sizes gsize), no broadcasting. */
static int view_is_layout(const view *v, int n, const int *order, const int64_t *gsize) {
    if (v->n != n) return 0;
    int64_t s = 1;
    for (int i = n - 1; i >= 0; i--) {
        int a = view_find(v, order[i]);
        if (a < 0 || v->dim[a] != gsize[order[i]]) return 0;
        if (v->dim[a] != 1 && v->str[a] != s) return 0;
        s *= v->dim[a];
    }
    return 1;
}

static int in_list(const int *l, int n, int x) {
    for (int i = 0; i < n; i++)
        if (l[i] == x) return 1;
    return 0;
}

/* Contracts a and b into a new view with labels batch + m + n; labels in `needed` stay. */
static kiln_status contract(kiln_ctx *ctx, int ct, const ein_eq *e, view *a, view *b,
                            int nneed, const int *need, view *res) {
    int bl[EIN_MAX_LABELS], ml[EIN_MAX_LABELS], nl[EIN_MAX_LABELS], kl[EIN_MAX_LABELS];
    int nb = 0, nm = 0, nn = 0, nk = 0;
    for (int i = 0; i < a->n; i++) {
        int l = a->lab[i];
        int inb = view_find(b, l) >= 0, kept = in_list(need, nneed, l);
        if (inb && kept) bl[nb++] = l;
        else if (inb) kl[nk++] = l;
        else if (kept) ml[nm++] = l;
    }
    for (int i = 0; i < b->n; i++) {
        int l = b->lab[i];
        if (view_find(a, l) < 0 && in_list(need, nneed, l)) nl[nn++] = l;
    }
    /* labels only one side has and nobody needs: sum them away first */
    if (nb + nm + nk != a->n) {
        int keep[EIN_MAX_LABELS], n = 0;
        for (int i = 0; i < a->n; i++)
            if (in_list(bl, nb, a->lab[i]) || in_list(ml, nm, a->lab[i]) || in_list(kl, nk, a->lab[i]))
                keep[n++] = a->lab[i];
        KILN_TRY(view_reduce(ctx, ct, a, n, keep, e->size));
    }
    if (nb + nn + nk != b->n) {
        int keep[EIN_MAX_LABELS], n = 0;
        for (int i = 0; i < b->n; i++)
            if (in_list(bl, nb, b->lab[i]) || in_list(nl, nn, b->lab[i]) || in_list(kl, nk, b->lab[i]))
                keep[n++] = b->lab[i];
        KILN_TRY(view_reduce(ctx, ct, b, n, keep, e->size));
    }
    int64_t B = 1, M = 1, N = 1, K = 1;
    for (int i = 0; i < nb; i++) B *= e->size[bl[i]];
    for (int i = 0; i < nm; i++) M *= e->size[ml[i]];
    for (int i = 0; i < nn; i++) N *= e->size[nl[i]];
    for (int i = 0; i < nk; i++) K *= e->size[kl[i]];
    /* operand layouts: [batch, m, k] or [batch, k, m] for a; [batch, k, n] or [batch, n, k] for b */
    int ord[EIN_MAX_LABELS], no;
    int ta = 0, tb = 0;
#define LAYOUT(L1, n1, L2, n2)                                                                     \
    (no = 0, memcpy(ord, bl, sizeof(int) * nb), no = nb, memcpy(ord + no, L1, sizeof(int) * n1),   \
     no += n1, memcpy(ord + no, L2, sizeof(int) * n2), no += n2)
    LAYOUT(ml, nm, kl, nk);
    if (!view_is_layout(a, no, ord, e->size)) {
        LAYOUT(kl, nk, ml, nm);
        if (view_is_layout(a, no, ord, e->size)) ta = 1;
        else {
            LAYOUT(ml, nm, kl, nk);
            KILN_TRY(view_reduce(ctx, ct, a, no, ord, e->size));
        }
    }
    LAYOUT(kl, nk, nl, nn);
    if (!view_is_layout(b, no, ord, e->size)) {
        LAYOUT(nl, nn, kl, nk);
        if (view_is_layout(b, no, ord, e->size)) tb = 1;
        else {
            LAYOUT(kl, nk, nl, nn);
            KILN_TRY(view_reduce(ctx, ct, b, no, ord, e->size));
        }
    }
#undef LAYOUT
    void *c = malloc(ct_size(ct) * (size_t)(B * M * N > 0 ? B * M * N : 1));
    int64_t *offs = malloc(sizeof(int64_t) * 3 * (size_t)(B > 0 ? B : 1));
    if (!c || !offs) {
        free(c);
        free(offs);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in Einsum");
    }
    for (int64_t i = 0; i < B; i++) {
        offs[i] = i * M * K;
        offs[B + i] = i * K * N;
        offs[2 * B + i] = i * M * N;
    }
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    if (ct == CT_I64) {
        for (int64_t i = 0; i < B; i++)
            kgemm_int(ctx, KILN_DTYPE_INT64, ta, tb, M, N, K, (int64_t *)a->data + offs[i], lda,
                      (int64_t *)b->data + offs[B + i], ldb, (int64_t *)c + offs[2 * B + i], N);
    } else {
        kgemm_batch gb = {ct == CT_F64 ? KILN_DTYPE_DOUBLE : KILN_DTYPE_FLOAT, ta, tb, M, N, K,
                          lda, ldb, N, 1.0, 0.0, a->data, b->data, c, B, offs, offs + B, offs + 2 * B};
        kgemm_batched(ctx, &gb);
    }
    free(offs);
    memset(res, 0, sizeof *res);
    res->owned = res->data = c;
    int n = 0;
    for (int i = 0; i < nb; i++) res->lab[n++] = bl[i];
    for (int i = 0; i < nm; i++) res->lab[n++] = ml[i];
    for (int i = 0; i < nn; i++) res->lab[n++] = nl[i];
    res->n = n;
    int64_t s = 1;
    for (int i = n - 1; i >= 0; i--) {
        res->dim[i] = e->size[res->lab[i]];
        res->str[i] = s;
        s *= res->dim[i];
    }
    return KILN_OK;
}

static void *load_operand(const kiln_tensor *t, int ct) {
    int64_t n = kiln_numel(t);
    void *o = malloc(ct_size(ct) * (size_t)(n > 0 ? n : 1));
    if (!o) return NULL;
    for (int64_t i = 0; i < n; i++) {
        if (ct == CT_F32) {
            float v;
            if (t->dtype == KILN_DTYPE_FLOAT) v = ((const float *)t->data)[i];
            else if (t->dtype == KILN_DTYPE_FLOAT16) v = kiln_f16_to_f32(((const uint16_t *)t->data)[i]);
            else v = kiln_bf16_to_f32(((const uint16_t *)t->data)[i]);
            ((float *)o)[i] = v;
        } else if (ct == CT_F64) {
            ((double *)o)[i] = ((const double *)t->data)[i];
        } else {
            ((int64_t *)o)[i] = kiln_load_i64(t->dtype, t->data, i);
        }
    }
    return o;
}

static kiln_status einsum_compute(kiln_ctx *ctx) {
    kiln_tensor *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    KILN_TRY(ein_types(ctx));
    ein_eq e;
    int known;
    KILN_TRY(ein_parse(ctx, &e, &known));
    int dt = Y->dtype;
    int ct = dt == KILN_DTYPE_DOUBLE ? CT_F64 : kiln_dtype_is_float(dt) ? CT_F32 : CT_I64;
    for (int l = 0; l < EIN_MAX_LABELS; l++)
        if (e.size[l] == -2) e.size[l] = 1;
    view v[EIN_MAX_IN];
    memset(v, 0, sizeof v);
    kiln_status st = KILN_OK;
    /* views: repeated labels of one operand become one axis with the summed stride (diagonal) */
    for (int i = 0; i < e.n_in && st == KILN_OK; i++) {
        kiln_tensor *t = kiln_input(ctx, i);
        if (ct == CT_F32 && dt == KILN_DTYPE_FLOAT) v[i].data = t->data;
        else if (!(v[i].owned = v[i].data = load_operand(t, ct)))
            st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in Einsum");
        int64_t s = 1, str[KILN_MAX_RANK];
        for (int a = t->rank - 1; a >= 0; a--) {
            str[a] = s;
            s *= t->dims[a];
        }
        for (int a = 0; a < t->rank; a++) {
            int l = e.in[i].lab[a], k = view_find(&v[i], l);
            if (k >= 0) {
                if (v[i].dim[k] != t->dims[a] && st == KILN_OK)
                    st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                   "label '%c' repeats in operand %d with sizes %lld and %lld",
                                   label_char(l), i, (long long)v[i].dim[k], (long long)t->dims[a]);
                v[i].str[k] += str[a];
            } else {
                v[i].lab[v[i].n] = l;
                v[i].dim[v[i].n] = t->dims[a];
                v[i].str[v[i].n++] = str[a];
            }
        }
    }
    /* sum early the labels that only one operand has and the output does not */
    for (int i = 0; i < e.n_in && st == KILN_OK; i++) {
        int keep[EIN_MAX_LABELS], nk = 0;
        for (int a = 0; a < v[i].n; a++) {
            int l = v[i].lab[a], used = in_list(e.out, e.n_out, l);
            for (int j = 0; j < e.n_in && !used; j++)
                if (j != i && view_find(&v[j], l) >= 0) used = 1;
            if (used) keep[nk++] = l;
        }
        if (nk != v[i].n) st = view_reduce(ctx, ct, &v[i], nk, keep, e.size);
    }
    view cur = v[0];
    v[0].owned = NULL;
    for (int i = 1; i < e.n_in && st == KILN_OK; i++) {
        int need[EIN_MAX_LABELS], nn = 0;
        for (int j = 0; j < e.n_out; j++) need[nn++] = e.out[j];
        for (int j = i + 1; j < e.n_in; j++)
            for (int a = 0; a < v[j].n; a++)
                if (!in_list(need, nn, v[j].lab[a])) need[nn++] = v[j].lab[a];
        view r;
        st = contract(ctx, ct, &e, &cur, &v[i], nn, need, &r);
        if (st == KILN_OK) {
            free(cur.owned);
            cur = r;
        }
    }
    if (st == KILN_OK) {
        int64_t ks[EIN_MAX_LABELS], total = kiln_numel(Y);
        for (int j = 0; j < e.n_out; j++) ks[j] = e.size[e.out[j]];
        if (ct == CT_F32 && dt == KILN_DTYPE_FLOAT) {
            sum_view(ct, &cur, e.n_out, e.out, ks, Y->data);
        } else if (ct == CT_F64) {
            sum_view(ct, &cur, e.n_out, e.out, ks, Y->data);
        } else {
            void *tmp = malloc(ct_size(ct) * (size_t)(total > 0 ? total : 1));
            if (!tmp) {
                st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in Einsum");
            } else {
                sum_view(ct, &cur, e.n_out, e.out, ks, tmp);
                if (ct == CT_F32) kcvt_from_f32(ctx, dt, tmp, Y->data, total);
                else
                    for (int64_t i = 0; i < total; i++) {
                        uint64_t u = (uint64_t)((int64_t *)tmp)[i];
                        switch (dt) {
                        case KILN_DTYPE_INT8: ((int8_t *)Y->data)[i] = (int8_t)u; break;
                        case KILN_DTYPE_UINT8: ((uint8_t *)Y->data)[i] = (uint8_t)u; break;
                        case KILN_DTYPE_INT16: ((int16_t *)Y->data)[i] = (int16_t)u; break;
                        case KILN_DTYPE_UINT16: ((uint16_t *)Y->data)[i] = (uint16_t)u; break;
                        case KILN_DTYPE_INT32: ((int32_t *)Y->data)[i] = (int32_t)u; break;
                        case KILN_DTYPE_UINT32: ((uint32_t *)Y->data)[i] = (uint32_t)u; break;
                        default: ((uint64_t *)Y->data)[i] = u; break;
                        }
                    }
                free(tmp);
            }
        }
    }
    free(cur.owned);
    for (int i = 0; i < e.n_in; i++) free(v[i].owned);
    return st;
}

const kiln_op kiln_ops_einsum[] = {
    {"", "Einsum", 12, 0, NULL, einsum_infer, einsum_compute, NULL},
    {0},
};
