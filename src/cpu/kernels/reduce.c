/* ReduceSum, ReduceMean, ReduceMax, ReduceMin, ReduceProd, ReduceL1, ReduceL2, ReduceLogSum,
 * ReduceLogSumExp, ReduceSumSquare, and the reduce family table (which also lists ArgMax/ArgMin
 * and the loss ops).
 *
 * The axes come from the attribute (before opset 13 for ReduceSum, 18 for the others) or from the
 * optional second input; whichever the node has is used. The reduced axes are merged into one
 * [outer, r, inner] block when they are adjacent (after dropping size-1 dims); otherwise the input
 * is first permuted so the reduced axes come last. Narrow types are widened to float, int64 or
 * uint64 for the loops and narrowed back. */
#include "reduce_impl.h"

typedef struct rplan {
    int noop;                /* noop_with_empty_axes with no axes: elementwise (r = 1) */
    int unknown;             /* static inference without the axes' values */
    int red[KILN_MAX_RANK];  /* 1 where the axis is reduced */
} rplan;

static kiln_status reduce_plan(kiln_ctx *ctx, const kiln_tensor *x, rplan *p) {
    int rank = x->rank;
    int64_t axes[KILN_MAX_RANK];
    int n_axes = 0;
    memset(p, 0, sizeof *p);
    kiln_tensor *at = ctx->n_in > 1 ? kiln_input(ctx, 1) : NULL;
    if (at) {
        if (at->rank > 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'axes' has rank %d, expected 1",
                             at->rank);
        if (!at->data) {
            if (ctx->static_mode) {
                p->unknown = 1;
                return KILN_OK;
            }
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'axes' has no data");
        }
        int64_t n = kiln_numel(at);
        if (n > rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input 'axes' has %lld entries for an input of rank %d", (long long)n,
                             rank);
        KILN_TRY(kiln_read_ints(ctx, at, axes, KILN_MAX_RANK, &n_axes));
    } else {
        int n = 0;
        const int64_t *a = kiln_attr_ints(ctx->node, "axes", &n);
        if (n > rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "attribute 'axes' has %d entries for an input of rank %d", n, rank);
        for (int i = 0; i < n; i++) axes[i] = a[i];
        n_axes = n;
    }
    if (n_axes == 0) {
        if (kiln_attr_int(ctx->node, "noop_with_empty_axes", 0)) {
            p->noop = 1;
            return KILN_OK;
        }
        for (int i = 0; i < rank; i++) p->red[i] = 1;
        return KILN_OK;
    }
    for (int i = 0; i < n_axes; i++) {
        int a;
        KILN_TRY(kiln_norm_axis(ctx, axes[i], rank, "axes", &a));
        if (p->red[a])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %lld appears twice in 'axes'",
                             (long long)axes[i]);
        p->red[a] = 1;
    }
    return KILN_OK;
}

static kiln_status check_reduce_dtype(kiln_ctx *ctx, const kiln_tensor *x, int kind) {
    if (kind == KILN_RK_MAX || kind == KILN_RK_MIN)
        return kiln_check_dtype(ctx, x, 0, 13, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE,
                                KILN_DTYPE_FLOAT16, KILN_DTYPE_BFLOAT16, KILN_DTYPE_INT8,
                                KILN_DTYPE_UINT8, KILN_DTYPE_INT16, KILN_DTYPE_UINT16,
                                KILN_DTYPE_INT32, KILN_DTYPE_UINT32, KILN_DTYPE_INT64,
                                KILN_DTYPE_UINT64, KILN_DTYPE_BOOL);
    return kiln_check_dtype(ctx, x, 0, 12, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                            KILN_DTYPE_BFLOAT16, KILN_DTYPE_INT8, KILN_DTYPE_UINT8,
                            KILN_DTYPE_INT16, KILN_DTYPE_UINT16, KILN_DTYPE_INT32,
                            KILN_DTYPE_UINT32, KILN_DTYPE_INT64, KILN_DTYPE_UINT64);
}

static kiln_status reduce_infer(kiln_ctx *ctx, int kind) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(check_reduce_dtype(ctx, x, kind));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    rplan p;
    KILN_TRY(reduce_plan(ctx, x, &p));
    int keep = kiln_attr_int(ctx->node, "keepdims", 1) != 0;
    int64_t dims[KILN_MAX_RANK];
    if (p.unknown) {
        if (!keep) return kiln_set_output_unknown(ctx, 0, x->dtype);
        for (int i = 0; i < x->rank; i++) dims[i] = KILN_DIM_UNKNOWN;
        return kiln_set_output(ctx, 0, x->dtype, x->rank, dims);
    }
    if (p.noop) return kiln_set_output(ctx, 0, x->dtype, x->rank, x->dims);
    int n = 0;
    for (int i = 0; i < x->rank; i++) {
        if (!p.red[i])
            dims[n++] = x->dims[i];
        else if (keep)
            dims[n++] = 1;
    }
    return kiln_set_output(ctx, 0, x->dtype, n, dims);
}

/* ---- element-class conversions ---- */

static int class_of(int dt) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16: return KILN_RC_F32;
    case KILN_DTYPE_DOUBLE: return KILN_RC_F64;
    case KILN_DTYPE_UINT64: return KILN_RC_U64;
    default: return KILN_RC_I64;
    }
}

static int is_class_native(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || dt == KILN_DTYPE_INT64 ||
           dt == KILN_DTYPE_UINT64;
}

static size_t class_size(int cls) { return cls == KILN_RC_F32 ? 4 : 8; }

#define WIDEN_LOOP(ST) \
    for (int64_t i = 0; i < n; i++) d[i] = (int64_t)((const ST *)src)[i]; \
    break;
#define NARROW_LOOP(DT) \
    for (int64_t i = 0; i < n; i++) ((DT *)dst)[i] = (DT)s[i]; \
    break;

static void widen(int dt, const void *src, void *dst, int64_t n) {
    if (ru_is_halfish(dt)) {
        ru_half_to_f32(dt, src, dst, n);
        return;
    }
    int64_t *d = dst;
    switch (dt) {
    case KILN_DTYPE_INT8: WIDEN_LOOP(int8_t)
    case KILN_DTYPE_UINT8: case KILN_DTYPE_BOOL: WIDEN_LOOP(uint8_t)
    case KILN_DTYPE_INT16: WIDEN_LOOP(int16_t)
    case KILN_DTYPE_UINT16: WIDEN_LOOP(uint16_t)
    case KILN_DTYPE_INT32: WIDEN_LOOP(int32_t)
    case KILN_DTYPE_UINT32: WIDEN_LOOP(uint32_t)
    default: break;
    }
}

static void narrow(int dt, const void *src, void *dst, int64_t n) {
    if (ru_is_halfish(dt)) {
        ru_f32_to_half(dt, src, dst, n);
        return;
    }
    const int64_t *s = src;
    switch (dt) {
    case KILN_DTYPE_INT8: NARROW_LOOP(int8_t)
    case KILN_DTYPE_UINT8: NARROW_LOOP(uint8_t)
    case KILN_DTYPE_INT16: NARROW_LOOP(int16_t)
    case KILN_DTYPE_UINT16: NARROW_LOOP(uint16_t)
    case KILN_DTYPE_INT32: NARROW_LOOP(int32_t)
    case KILN_DTYPE_UINT32: NARROW_LOOP(uint32_t)
    case KILN_DTYPE_BOOL:
        for (int64_t i = 0; i < n; i++) ((uint8_t *)dst)[i] = s[i] != 0;
        break;
    default: break;
    }
}

/* Copies [d0 x d1 x ...] (element size es) so that the axes flagged in f come last. */
static void move_reduced_last(const void *src, void *dst, size_t es, int n, const int64_t *d,
                              const int *f) {
    int perm[KILN_MAX_RANK], k = 0;
    int64_t st[KILN_MAX_RANK], pd[KILN_MAX_RANK], ps[KILN_MAX_RANK], idx[KILN_MAX_RANK];
    for (int i = 0; i < n; i++)
        if (!f[i]) perm[k++] = i;
    for (int i = 0; i < n; i++)
        if (f[i]) perm[k++] = i;
    kiln_strides(n, d, st);
    for (int j = 0; j < n; j++) {
        pd[j] = d[perm[j]];
        ps[j] = st[perm[j]];
        idx[j] = 0;
    }
    int64_t total = kiln_dims_numel(n, d), last = pd[n - 1], ls = ps[n - 1], off = 0;
    for (int64_t t = 0; t < total; t += last) {
        if (es == 4) {
            const uint32_t *s = (const uint32_t *)src + off;
            uint32_t *o = (uint32_t *)dst + t;
            for (int64_t i = 0; i < last; i++) o[i] = s[i * ls];
        } else {
            const uint64_t *s = (const uint64_t *)src + off;
            uint64_t *o = (uint64_t *)dst + t;
            for (int64_t i = 0; i < last; i++) o[i] = s[i * ls];
        }
        for (int j = n - 2; j >= 0; j--) {
            off += ps[j];
            if (++idx[j] < pd[j]) break;
            off -= ps[j] * pd[j];
            idx[j] = 0;
        }
    }
}

/* The value of a reduction over no elements: the identity of the operation, -inf (or the type's
 * minimum) for max-like ones, +inf (or maximum) for min, NaN for mean of floats. */
static void fill_empty(int kind, kiln_tensor *y, int64_t n) {
    int dt = y->dtype;
    if (kiln_dtype_is_float(dt)) {
        double v = 0;
        switch (kind) {
        case KILN_RK_MAX: case KILN_RK_LOGSUM: case KILN_RK_LOGSUMEXP: v = -INFINITY; break;
        case KILN_RK_MIN: v = INFINITY; break;
        case KILN_RK_PROD: v = 1; break;
        case KILN_RK_MEAN: v = NAN; break;
        default: break;
        }
        for (int64_t i = 0; i < n; i++) kiln_store_f64(dt, y->data, i, v);
        return;
    }
    int lowest = kind == KILN_RK_MAX || kind == KILN_RK_LOGSUM || kind == KILN_RK_LOGSUMEXP;
    int highest = kind == KILN_RK_MIN;
    int64_t v = kind == KILN_RK_PROD ? 1 : 0;
    uint64_t uv = (uint64_t)v;
    switch (dt) {
    case KILN_DTYPE_INT8: v = lowest ? INT8_MIN : highest ? INT8_MAX : v; break;
    case KILN_DTYPE_INT16: v = lowest ? INT16_MIN : highest ? INT16_MAX : v; break;
    case KILN_DTYPE_INT32: v = lowest ? INT32_MIN : highest ? INT32_MAX : v; break;
    case KILN_DTYPE_INT64: v = lowest ? INT64_MIN : highest ? INT64_MAX : v; break;
    case KILN_DTYPE_UINT8: v = lowest ? 0 : highest ? UINT8_MAX : v; break;
    case KILN_DTYPE_UINT16: v = lowest ? 0 : highest ? UINT16_MAX : v; break;
    case KILN_DTYPE_UINT32: v = lowest ? 0 : highest ? (int64_t)UINT32_MAX : v; break;
    case KILN_DTYPE_BOOL: v = lowest ? 0 : highest ? 1 : v; break;
    case KILN_DTYPE_UINT64: uv = lowest ? 0 : highest ? UINT64_MAX : uv; break;
    default: break;
    }
    if (dt == KILN_DTYPE_UINT64) {
        for (int64_t i = 0; i < n; i++) ((uint64_t *)y->data)[i] = uv;
        return;
    }
    int64_t *tmp = malloc(sizeof(int64_t) * 256);
    if (!tmp) return; /* out of memory for a fill of constants: leave the zeroed output */
    for (int i = 0; i < 256; i++) tmp[i] = v;
    size_t es = kiln_dtype_bytes(dt, 1);
    for (int64_t i = 0; i < n; i += 256) {
        int64_t c = n - i < 256 ? n - i : 256;
        if (dt == KILN_DTYPE_INT64)
            memcpy((char *)y->data + i * es, tmp, (size_t)c * 8);
        else
            narrow(dt, tmp, (char *)y->data + i * es, c);
    }
    free(tmp);
}

static kiln_status reduce_compute(kiln_ctx *ctx, int kind) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    rplan p;
    KILN_TRY(reduce_plan(ctx, x, &p));
    int64_t numel = kiln_numel(x), out_n = kiln_numel(y);
    if (out_n == 0) return KILN_OK;

    /* merge runs of reduced / kept dims, ignoring 1s */
    int64_t d[KILN_MAX_RANK];
    int f[KILN_MAX_RANK], n = 0, groups = 0, gpos = -1;
    int64_t r = 1;
    for (int i = 0; i < x->rank && !p.noop; i++) {
        if (p.red[i]) r *= x->dims[i];
        if (x->dims[i] == 1) continue;
        if (n > 0 && f[n - 1] == p.red[i]) {
            d[n - 1] *= x->dims[i];
        } else {
            d[n] = x->dims[i];
            f[n] = p.red[i];
            if (f[n]) {
                groups++;
                gpos = n;
            }
            n++;
        }
    }
    if (r == 0) {
        fill_empty(kind, y, out_n);
        return KILN_OK;
    }
    int64_t outer = numel, inner = 1;
    if (groups == 1) {
        outer = kiln_dims_numel(gpos, d);
        r = d[gpos];
        inner = kiln_dims_numel(n - gpos - 1, d + gpos + 1);
    } else if (groups == 0) {
        r = 1;
    } else {
        outer = numel / r;
    }

    int cls = class_of(x->dtype);
    size_t es = class_size(cls);
    void *wide = NULL, *moved = NULL, *out_tmp = NULL;
    const void *src = x->data;
    if (!is_class_native(x->dtype)) {
        wide = malloc((size_t)numel * es);
        if (!wide) goto oom;
        widen(x->dtype, x->data, wide, numel);
        src = wide;
    }
    if (groups >= 2) {
        moved = malloc((size_t)numel * es);
        if (!moved) goto oom;
        move_reduced_last(src, moved, es, n, d, f);
        src = moved;
    }
    void *dst = y->data;
    if (!is_class_native(y->dtype)) {
        out_tmp = malloc((size_t)out_n * es);
        if (!out_tmp) goto oom;
        dst = out_tmp;
    }
    kiln_reduce_run(ctx, cls, kind, src, dst, outer, r, inner);
    if (out_tmp) narrow(y->dtype, out_tmp, y->data, out_n);
    free(wide);
    free(moved);
    free(out_tmp);
    return KILN_OK;
oom:
    free(wide);
    free(moved);
    free(out_tmp);
    return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for a reduction of %lld elements",
                     (long long)numel);
}

#define REDUCE_OP(fn, KIND)                                                                        \
    static kiln_status fn##_infer(kiln_ctx *ctx) { return reduce_infer(ctx, KIND); }               \
    static kiln_status fn##_compute(kiln_ctx *ctx) { return reduce_compute(ctx, KIND); }

REDUCE_OP(rsum, KILN_RK_SUM)
REDUCE_OP(rmean, KILN_RK_MEAN)
REDUCE_OP(rmax, KILN_RK_MAX)
REDUCE_OP(rmin, KILN_RK_MIN)
REDUCE_OP(rprod, KILN_RK_PROD)
REDUCE_OP(rl1, KILN_RK_L1)
REDUCE_OP(rl2, KILN_RK_L2)
REDUCE_OP(rlogsum, KILN_RK_LOGSUM)
REDUCE_OP(rlogsumexp, KILN_RK_LOGSUMEXP)
REDUCE_OP(rsumsq, KILN_RK_SUMSQ)

#define ENTRY(name, fn) {"", name, 1, 0, NULL, fn##_infer, fn##_compute, NULL}

const kiln_op kiln_ops_reduce[] = {
    ENTRY("ReduceSum", rsum),
    ENTRY("ReduceMean", rmean),
    ENTRY("ReduceMax", rmax),
    ENTRY("ReduceMin", rmin),
    ENTRY("ReduceProd", rprod),
    ENTRY("ReduceL1", rl1),
    ENTRY("ReduceL2", rl2),
    ENTRY("ReduceLogSum", rlogsum),
    ENTRY("ReduceLogSumExp", rlogsumexp),
    ENTRY("ReduceSumSquare", rsumsq),
    {"", "ArgMax", 1, 0, NULL, kiln_argmax_infer, kiln_argmax_compute, NULL},
    {"", "ArgMin", 1, 0, NULL, kiln_argmax_infer, kiln_argmin_compute, NULL},
    {"", "NegativeLogLikelihoodLoss", 12, 0, NULL, kiln_nll_loss_infer, kiln_nll_loss_compute, NULL},
    {"", "SoftmaxCrossEntropyLoss", 12, 0, NULL, kiln_sce_loss_infer, kiln_sce_loss_compute, NULL},
    {0}};
