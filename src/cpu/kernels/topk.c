/* TopK: the k largest (or smallest) values along an axis and their indices; k is an attribute
 * before opset 10 and a 1-element input after. Ties go to the lower index.
 *
 * Every element type is mapped to an unsigned 64-bit key whose unsigned order is the value order
 * (sign-flipped integers, sign-magnitude-folded float bits; float16/bfloat16 through float), and
 * complemented for "smallest", so one selection routine serves all types: a k-element heap with
 * the worst candidate on top, then a heap sort of the survivors. */
#include "reduce_util.h"

typedef struct tk_item {
    uint64_t key;
    int64_t idx;
} tk_item;

/* a ranks after b: smaller key, or equal key and larger index */
static inline int tk_worse(const tk_item *a, const tk_item *b) {
    return a->key < b->key || (a->key == b->key && a->idx > b->idx);
}

/* heap with the worst item at the root */
static void tk_sift_down(tk_item *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, w = i;
        if (l < n && tk_worse(&h[l], &h[w])) w = l;
        if (l + 1 < n && tk_worse(&h[l + 1], &h[w])) w = l + 1;
        if (w == i) return;
        tk_item t = h[i];
        h[i] = h[w];
        h[w] = t;
        i = w;
    }
}

static inline uint64_t key_f32(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    u = (u & 0x80000000u) ? ~u : (u | 0x80000000u);
    return u;
}

static inline uint64_t key_f64(double f) {
    uint64_t u;
    memcpy(&u, &f, 8);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
}

#define SIGNED_KEY(v) ((uint64_t)(int64_t)(v) ^ 0x8000000000000000ull)

static inline uint64_t tk_key(int dt, const void *p, int64_t i) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return key_f32(((const float *)p)[i]);
    case KILN_DTYPE_DOUBLE: return key_f64(((const double *)p)[i]);
    case KILN_DTYPE_FLOAT16: return key_f32(kiln_f16_to_f32(((const uint16_t *)p)[i]));
    case KILN_DTYPE_BFLOAT16: return key_f32(kiln_bf16_to_f32(((const uint16_t *)p)[i]));
    case KILN_DTYPE_INT8: return SIGNED_KEY(((const int8_t *)p)[i]);
    case KILN_DTYPE_INT16: return SIGNED_KEY(((const int16_t *)p)[i]);
    case KILN_DTYPE_INT32: return SIGNED_KEY(((const int32_t *)p)[i]);
    case KILN_DTYPE_INT64: return SIGNED_KEY(((const int64_t *)p)[i]);
    case KILN_DTYPE_UINT8: return ((const uint8_t *)p)[i];
    case KILN_DTYPE_UINT16: return ((const uint16_t *)p)[i];
    case KILN_DTYPE_UINT32: return ((const uint32_t *)p)[i];
    default: return ((const uint64_t *)p)[i];
    }
}

typedef struct tk_params {
    int axis, largest, known_k;
    int64_t k;
} tk_params;

static kiln_status tk_params_get(kiln_ctx *ctx, const kiln_tensor *x, tk_params *p) {
    p->largest = ctx->opset >= 11 ? kiln_attr_int(ctx->node, "largest", 1) != 0 : 1;
    p->known_k = 1;
    if (x->rank < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'X' has rank %d, expected >= 1",
                         x->rank);
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -1), x->rank, "axis", &p->axis));
    if (ctx->opset < 10) {
        if (!kiln_has_attr(ctx->node, "k"))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'k' is missing");
        p->k = kiln_attr_int(ctx->node, "k", 0);
    } else {
        kiln_tensor *kt;
        KILN_TRY(kiln_need_input(ctx, 1, &kt));
        KILN_TRY(kiln_check_dtype(ctx, kt, 1, 1, KILN_DTYPE_INT64));
        if (kt->rank > 1 || (kt->rank == 1 && kt->dims[0] >= 0 && kt->dims[0] != 1))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input 'K' must hold one value (1-D of size 1)");
        if (!kt->data) {
            if (!ctx->static_mode)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'K' has no data");
            p->known_k = 0;
            return KILN_OK;
        }
        p->k = *(const int64_t *)kt->data;
    }
    if (p->k < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "k = %lld is negative", (long long)p->k);
    int64_t d = x->dims[p->axis];
    if (d >= 0 && p->k > d)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "k = %lld exceeds axis %d of size %lld",
                         (long long)p->k, p->axis, (long long)d);
    return KILN_OK;
}

static kiln_status tk_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 12, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                              KILN_DTYPE_BFLOAT16, KILN_DTYPE_INT8, KILN_DTYPE_UINT8,
                              KILN_DTYPE_INT16, KILN_DTYPE_UINT16, KILN_DTYPE_INT32,
                              KILN_DTYPE_UINT32, KILN_DTYPE_INT64, KILN_DTYPE_UINT64));
    if (x->rank < 0) {
        KILN_TRY(kiln_set_output_unknown(ctx, 0, x->dtype));
        return ctx->n_out > 1 ? kiln_set_output_unknown(ctx, 1, KILN_DTYPE_INT64) : KILN_OK;
    }
    tk_params p;
    KILN_TRY(tk_params_get(ctx, x, &p));
    int64_t dims[KILN_MAX_RANK];
    memcpy(dims, x->dims, sizeof(int64_t) * (size_t)x->rank);
    dims[p.axis] = p.known_k ? p.k : KILN_DIM_UNKNOWN;
    KILN_TRY(kiln_set_output(ctx, 0, x->dtype, x->rank, dims));
    if (ctx->n_out > 1) KILN_TRY(kiln_set_output(ctx, 1, KILN_DTYPE_INT64, x->rank, dims));
    return KILN_OK;
}

struct tkjob {
    const kiln_tensor *x;
    void *vals;
    int64_t *idxs;
    int64_t n, inner, k;
    int largest;
    size_t es;
    ru_fail_flag fail;
};

static void tk_range(void *arg, int64_t b, int64_t e) {
    struct tkjob *jb = arg;
    int64_t n = jb->n, inner = jb->inner, k = jb->k;
    uint64_t flip = jb->largest ? 0 : ~(uint64_t)0;
    tk_item *h = malloc((size_t)k * sizeof(tk_item));
    if (!h) {
        jb->fail.failed = 1;
        return;
    }
    const char *xd = jb->x->data;
    int dt = jb->x->dtype;
    for (int64_t s = b; s < e; s++) {
        int64_t o = s / inner, j = s % inner;
        int64_t base = o * n * inner + j; /* element index of (o, 0, j) */
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++) {
            tk_item it = {tk_key(dt, xd, base + i * inner) ^ flip, i};
            if (m < k) {
                /* sift up */
                int64_t c = m++;
                h[c] = it;
                while (c > 0) {
                    int64_t p = (c - 1) / 2;
                    if (!tk_worse(&h[c], &h[p])) break;
                    tk_item t = h[c];
                    h[c] = h[p];
                    h[p] = t;
                    c = p;
                }
            } else if (it.key > h[0].key) { /* equal keys: the earlier index already held wins */
                h[0] = it;
                tk_sift_down(h, m, 0);
            }
        }
        /* heap sort: repeatedly move the worst to the end -> best first */
        for (int64_t end = m - 1; end > 0; end--) {
            tk_item t = h[0];
            h[0] = h[end];
            h[end] = t;
            tk_sift_down(h, end, 0);
        }
        int64_t obase = o * k * inner + j;
        for (int64_t q = 0; q < k; q++) {
            int64_t src = base + h[q].idx * inner, dst = obase + q * inner;
            if (jb->idxs) jb->idxs[dst] = h[q].idx;
            if (!jb->vals) continue;
            switch (jb->es) {
            case 1: ((uint8_t *)jb->vals)[dst] = ((const uint8_t *)xd)[src]; break;
            case 2: ((uint16_t *)jb->vals)[dst] = ((const uint16_t *)xd)[src]; break;
            case 4: ((uint32_t *)jb->vals)[dst] = ((const uint32_t *)xd)[src]; break;
            default: ((uint64_t *)jb->vals)[dst] = ((const uint64_t *)xd)[src]; break;
            }
        }
    }
    free(h);
}

static kiln_status tk_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *v = kiln_output(ctx, 0), *ix = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    tk_params p;
    KILN_TRY(tk_params_get(ctx, x, &p));
    int64_t outer = ru_prod(x->dims, 0, p.axis), inner = ru_prod(x->dims, p.axis + 1, x->rank);
    if (p.k == 0 || outer * inner == 0 || (!v && !ix)) return KILN_OK;
    struct tkjob jb = {x, v ? v->data : NULL, ix ? ix->data : NULL, x->dims[p.axis], inner, p.k,
                       p.largest, kiln_dtype_bytes(x->dtype, 1), {0}};
    kiln_parallel_for(ctx, outer * inner, ru_grain(jb.n * 8), tk_range, &jb);
    if (jb.fail.failed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    return KILN_OK;
}

const kiln_op kiln_ops_topk[] = {
    {"", "TopK", 1, 0, NULL, tk_infer, tk_compute, NULL},
    {0}};
