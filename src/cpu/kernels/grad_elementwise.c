/* Gradient kernels of the kiln training domain for element-wise, reduction and indexing ops:
 * SumTo (un-broadcasting), UnaryGrad, PowGrad, ReduceGrad, GatherGrad, SliceGrad, ConcatGrad and
 * NLLLossGrad. The autodiff builder (src/train/) emits them; inputs are float32 or float64. */
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast") /* see elementwise_util.h */
#include "grad_common.h"
#include <stdlib.h>

/* ---------------------------------------------------------------- SumTo(G, Ref): G summed to Ref's shape */

static kiln_status sumto_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *ref;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(kiln_need_input(ctx, 1, &ref));
    if (g->rank >= 0 && ref->rank >= 0) {
        if (ref->rank > g->rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "target has rank %d, more than the gradient's %d",
                             ref->rank, g->rank);
        for (int d = 0; d < ref->rank; d++) {
            int64_t r = ref->dims[d], s = g->dims[g->rank - ref->rank + d];
            if (r >= 0 && s >= 0 && r != 1 && r != s)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "gradient dim %d is %lld, target's %lld: not a "
                                 "broadcast of the target", d, (long long)s, (long long)r);
        }
    }
    return gk_out_like(ctx, 0, g->dtype, ref);
}

static kiln_status sumto_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    double scale = kiln_attr_float(ctx->node, "scale", 1.0f);
    int dt = g->dtype, r = g->rank, off = g->rank - y->rank;
    int64_t n = kiln_numel(g), ny = kiln_numel(y);
    if (scale == 0.0) { /* zeros of the target's shape (a gradient that nothing reaches) */
        gk_zero(y);
        return KILN_OK;
    }
    if (ny == n) { /* same element count: a broadcast never repeats, the shapes agree up to 1s */
        for (int64_t i = 0; i < n; i++) gk_st(y->data, i, dt, scale * gk_ld(g->data, i, dt));
        return KILN_OK;
    }
    gk_zero(y);
    if (n == 0) return KILN_OK;
    int64_t ystr[KILN_MAX_RANK], ys[KILN_MAX_RANK] = {0}, idx[KILN_MAX_RANK] = {0};
    kiln_strides(y->rank, y->dims, ystr);
    for (int d = 0; d < r; d++) ys[d] = d >= off && y->dims[d - off] != 1 ? ystr[d - off] : 0;
    int64_t inner = r ? g->dims[r - 1] : 1, istride = r ? ys[r - 1] : 0, yo = 0;
    for (int64_t base = 0; base < n; base += inner) {
        if (dt == KILN_DTYPE_FLOAT) {
            const float *gp = (const float *)g->data + base;
            float *yp = (float *)y->data + yo;
            if (istride) for (int64_t j = 0; j < inner; j++) yp[j] += (float)scale * gp[j];
            else {
                double s = 0;
                for (int64_t j = 0; j < inner; j++) s += gp[j];
                yp[0] += (float)(scale * s);
            }
        } else {
            const double *gp = (const double *)g->data + base;
            double *yp = (double *)y->data + yo;
            if (istride) for (int64_t j = 0; j < inner; j++) yp[j] += scale * gp[j];
            else {
                double s = 0;
                for (int64_t j = 0; j < inner; j++) s += gp[j];
                yp[0] += scale * s;
            }
        }
        for (int d = r - 2; d >= 0; d--) { /* next row of G */
            idx[d]++;
            yo += ys[d];
            if (idx[d] < g->dims[d]) break;
            yo -= ys[d] * idx[d];
            idx[d] = 0;
        }
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- UnaryGrad(dY, T) */

enum { U_RELU, U_LEAKY, U_SIGMOID, U_TANH, U_SQRT, U_ERF, U_ABS, U_SOFTPLUS, U_GELU, U_GELU_TANH, U_RECIP,
       U_HARDSIGMOID, U_HARDSWISH, U_SIN, U_COS, U_CLIP, U_ELU };

static int unary_kind(const char *s) {
    static const char *const k[] = {"relu", "leakyrelu", "sigmoid", "tanh", "sqrt", "erf", "abs", "softplus",
                                    "gelu", "gelu_tanh", "reciprocal", "hardsigmoid", "hardswish", "sin", "cos",
                                    "clip", "elu", NULL};
    for (int i = 0; k[i]; i++)
        if (!strcmp(k[i], s)) return i;
    return -1;
}

static kiln_status unary_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *t;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(gk_float_input(ctx, 1, g, &t));
    if (unary_kind(kiln_attr_string(ctx->node, "kind", "")) < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown kind '%s'", kiln_attr_string(ctx->node, "kind", ""));
    if (g->rank >= 0 && t->rank >= 0 && kiln_shape_concrete(g) && kiln_shape_concrete(t) && !gk_same_shape(g, t))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and the operand differ in shape");
    return gk_out_like(ctx, 0, g->dtype, t);
}

typedef struct { const void *g, *t; void *y; int dt, kind; double alpha, beta; } unary_job;

static inline double unary_d(int kind, double t, double alpha, double beta) {
    const double k2pi = 0.7978845608028654, kc = 0.044715, kirt2 = 0.7071067811865476, k1rt2pi = 0.3989422804014327;
    switch (kind) {
    case U_RELU: return t > 0 ? 1.0 : 0.0;
    case U_LEAKY: return t > 0 ? 1.0 : alpha;
    case U_SIGMOID: return t * (1 - t);
    case U_TANH: return 1 - t * t;
    case U_SQRT: return 0.5 / t;
    case U_ERF: return 1.1283791670955126 * exp(-t * t);
    case U_ABS: return t > 0 ? 1.0 : t < 0 ? -1.0 : 0.0;
    case U_SOFTPLUS: return 1 / (1 + exp(-t));
    case U_GELU: return 0.5 * (1 + erf(t * kirt2)) + t * k1rt2pi * exp(-0.5 * t * t);
    case U_GELU_TANH: {
        double u = k2pi * (t + kc * t * t * t), th = tanh(u);
        return 0.5 * (1 + th) + 0.5 * t * (1 - th * th) * k2pi * (1 + 3 * kc * t * t);
    }
    case U_RECIP: return -t * t; /* from the output y = 1/x: d/dx = -y^2 */
    case U_HARDSIGMOID: {
        double u = alpha * t + beta;
        return u > 0 && u < 1 ? alpha : 0.0;
    }
    case U_HARDSWISH: return t < -3 ? 0.0 : t > 3 ? 1.0 : (2 * t + 3) / 6;
    case U_SIN: return cos(t);
    case U_COS: return -sin(t);
    case U_CLIP: return t > alpha && t < beta ? 1.0 : 0.0; /* alpha, beta: the bounds */
    case U_ELU: return t > 0 ? 1.0 : alpha * exp(t);
    default: return 0;
    }
}

static void unary_range(void *arg, int64_t b, int64_t e) {
    const unary_job *j = arg;
    if (j->dt == KILN_DTYPE_FLOAT) {
        const float *g = j->g, *t = j->t;
        float *y = j->y;
        if (j->kind == U_RELU) {
            for (int64_t i = b; i < e; i++) y[i] = t[i] > 0 ? g[i] : 0.0f;
            return;
        }
        if (j->kind == U_SIGMOID) {
            for (int64_t i = b; i < e; i++) y[i] = gk_ftz(g[i] * t[i] * (1.0f - t[i]));
            return;
        }
        if (j->kind == U_GELU || j->kind == U_ERF) {
            /* the float32 functions: these two dominate a transformer's element-wise backward */
            for (int64_t i = b; i < e; i++) {
                float x = t[i], d = j->kind == U_ERF ? 1.12837917f * expf(-x * x)
                                                     : 0.5f * (1.0f + erff(x * 0.70710678f)) +
                                                           x * 0.39894228f * expf(-0.5f * x * x);
                y[i] = gk_ftz(g[i] * d);
            }
            return;
        }
        for (int64_t i = b; i < e; i++) y[i] = gk_ftz((float)(g[i] * unary_d(j->kind, t[i], j->alpha, j->beta)));
        return;
    }
    const double *g = j->g, *t = j->t;
    double *y = j->y;
    for (int64_t i = b; i < e; i++) y[i] = g[i] * unary_d(j->kind, t[i], j->alpha, j->beta);
}

static kiln_status unary_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *t = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    if (!gk_same_shape(g, t)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and the operand differ in shape");
    unary_job j = {g->data, t->data, y->data, g->dtype, unary_kind(kiln_attr_string(ctx->node, "kind", "")),
                   kiln_attr_float(ctx->node, "alpha", 0.0f), kiln_attr_float(ctx->node, "beta", 0.0f)};
    kiln_parallel_for(ctx, kiln_numel(y), 4096, unary_range, &j);
    return KILN_OK;
}

/* ---------------------------------------------------------------- PowGrad(dY, X, P): dY p x^(p-1), p a scalar */

static kiln_status pow_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *x, *p;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(gk_float_input(ctx, 1, g, &x));
    KILN_TRY(kiln_need_input(ctx, 2, &p));
    int64_t np = kiln_numel(p);
    if (np >= 0 && np != 1)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "the exponent has %lld elements; only a scalar exponent "
                         "is differentiated", (long long)np);
    return gk_out_like(ctx, 0, g->dtype, x);
}

static kiln_status pow_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    double p;
    KILN_TRY(kiln_read_scalar(ctx, kiln_input(ctx, 2), &p));
    if (!gk_same_shape(g, x)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and X differ in shape");
    int dt = g->dtype;
    int64_t n = kiln_numel(y);
    for (int64_t i = 0; i < n; i++) {
        double xv = gk_ld(x->data, i, dt);
        double d = p == 2.0 ? 2 * xv : p == 1.0 ? 1.0 : p * pow(xv, p - 1);
        gk_st(y->data, i, dt, gk_ld(g->data, i, dt) * d);
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- ReduceGrad(dY, X[, axes]) */

/* Which axes of X the forward reduction summed (mask), and how many elements each output sums. */
static kiln_status reduce_axes(kiln_ctx *ctx, const kiln_tensor *x, int *mask, int *identity) {
    const kiln_node *n = ctx->node;
    int r = x->rank;
    int64_t axes[KILN_MAX_RANK];
    int na = 0;
    *identity = 0;
    memset(mask, 0, sizeof(int) * KILN_MAX_RANK);
    int64_t from = kiln_attr_int(n, "from_axis", -1);
    if (from >= 0) {
        for (int d = (int)from; d < r; d++) mask[d] = 1;
        return KILN_OK;
    }
    kiln_tensor *at = ctx->n_in > 2 ? kiln_input(ctx, 2) : NULL;
    if (at) {
        if (!at->data) return KILN_OK;
        KILN_TRY(kiln_read_ints(ctx, at, axes, KILN_MAX_RANK, &na));
    } else {
        int cnt = 0;
        const int64_t *a = kiln_attr_ints(n, "axes", &cnt);
        if (cnt > KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many axes");
        for (int i = 0; i < cnt; i++) axes[na++] = a[i];
    }
    if (na == 0) {
        if (kiln_attr_int(n, "noop_with_empty_axes", 0)) *identity = 1;
        else for (int d = 0; d < r; d++) mask[d] = 1;
        return KILN_OK;
    }
    for (int i = 0; i < na; i++) {
        int ax;
        KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &ax));
        mask[ax] = 1;
    }
    return KILN_OK;
}

/* ReduceGrad, SliceGrad, PadGrad, TileGrad: dX has dY's element type and X's shape */
static kiln_status grad_like_x_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *x;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(kiln_need_input(ctx, 1, &x));
    return gk_out_like(ctx, 0, g->dtype, x);
}

static kiln_status reducegrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    int mask[KILN_MAX_RANK], identity, dt = g->dtype, r = x->rank;
    KILN_TRY(reduce_axes(ctx, x, mask, &identity));
    int64_t n = kiln_numel(y);
    if (identity) {
        if (kiln_numel(g) != n) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "gradient size differs from X");
        for (int64_t i = 0; i < n; i++) gk_st(y->data, i, dt, gk_ld(g->data, i, dt));
        return KILN_OK;
    }
    /* dY viewed with X's rank, reduced axes of size 1 */
    int64_t kd[KILN_MAX_RANK], kst[KILN_MAX_RANK], count = 1;
    for (int d = 0; d < r; d++) {
        kd[d] = mask[d] ? 1 : x->dims[d];
        if (mask[d]) count *= x->dims[d];
    }
    if (kiln_dims_numel(r, kd) != kiln_numel(g))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has %lld elements, the reduction of X %lld",
                         (long long)kiln_numel(g), (long long)kiln_dims_numel(r, kd));
    kiln_strides(r, kd, kst);
    double scale = kiln_attr_int(ctx->node, "mean", 0) && count > 0 ? 1.0 / (double)count : 1.0;
    int64_t idx[KILN_MAX_RANK] = {0}, go = 0;
    for (int64_t i = 0; i < n; i++) {
        gk_st(y->data, i, dt, scale * gk_ld(g->data, go, dt));
        for (int d = r - 1; d >= 0; d--) {
            idx[d]++;
            if (!mask[d]) go += kst[d];
            if (idx[d] < x->dims[d]) break;
            if (!mask[d]) go -= kst[d] * idx[d];
            idx[d] = 0;
        }
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- GatherGrad(dY, indices, data) */

static kiln_status gathergrad_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *ind, *data;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(kiln_need_input(ctx, 1, &ind));
    KILN_TRY(kiln_check_dtype(ctx, ind, 1, 2, KILN_DTYPE_INT32, KILN_DTYPE_INT64));
    KILN_TRY(kiln_need_input(ctx, 2, &data));
    return gk_out_like(ctx, 0, g->dtype, data);
}

static kiln_status gathergrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *ind = kiln_input(ctx, 1), *data = kiln_input(ctx, 2), *y = kiln_output(ctx, 0);
    int ax, dt = g->dtype;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), data->rank, "axis", &ax));
    if (g->rank != data->rank - 1 + ind->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has rank %d, expected %d", g->rank,
                         data->rank - 1 + ind->rank);
    int64_t outer = 1, inner = 1, ni = kiln_numel(ind), len = data->dims[ax];
    for (int d = 0; d < ax; d++) outer *= data->dims[d];
    for (int d = ax + 1; d < data->rank; d++) inner *= data->dims[d];
    if (kiln_numel(g) != outer * ni * inner)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's shape does not match the gather");
    gk_zero(y);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t j = 0; j < ni; j++) {
            int64_t k = ind->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)ind->data)[j] : ((const int32_t *)ind->data)[j];
            if (k < 0) k += len;
            if (k < 0 || k >= len)
                return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "index %lld is out of range for axis %d of size %lld",
                                 (long long)k, ax, (long long)len);
            int64_t src = (o * ni + j) * inner, dst = (o * len + k) * inner;
            if (dt == KILN_DTYPE_FLOAT) {
                const float *gp = (const float *)g->data + src;
                float *yp = (float *)y->data + dst;
                for (int64_t t = 0; t < inner; t++) yp[t] += gp[t];
            } else {
                const double *gp = (const double *)g->data + src;
                double *yp = (double *)y->data + dst;
                for (int64_t t = 0; t < inner; t++) yp[t] += gp[t];
            }
        }
    return KILN_OK;
}

/* ---------------------------------------------------------------- SliceGrad(dY, X, starts, ends[, axes, steps]) */

static kiln_status slicegrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    int r = x->rank, dt = g->dtype;
    kiln_slice_geom sg;
    KILN_TRY(kiln_slice_geometry(ctx, 2, 0, r, x->dims, &sg));
    const int64_t *start = sg.start, *step = sg.step, *cnt = sg.len;
    if (g->rank != r) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has rank %d, X %d", g->rank, r);
    for (int d = 0; d < r; d++)
        if (g->dims[d] != cnt[d])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's dim %d is %lld, the slice's %lld", d,
                             (long long)g->dims[d], (long long)cnt[d]);
    gk_zero(y);
    int64_t n = kiln_numel(g), xs[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0}, yo = 0;
    if (n == 0) return KILN_OK;
    kiln_strides(r, x->dims, xs);
    for (int d = 0; d < r; d++) yo += start[d] * xs[d];
    for (int64_t i = 0; i < n; i++) {
        gk_st(y->data, yo, dt, gk_ld(g->data, i, dt));
        for (int d = r - 1; d >= 0; d--) {
            idx[d]++;
            yo += step[d] * xs[d];
            if (idx[d] < cnt[d]) break;
            yo -= step[d] * xs[d] * idx[d];
            idx[d] = 0;
        }
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- ConcatGrad(dY, X0, X1, ...) */

static kiln_status concatgrad_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *x;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    if (ctx->n_out != ctx->n_in - 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%d outputs for %d concatenated inputs", ctx->n_out, ctx->n_in - 1);
    for (int k = 1; k < ctx->n_in; k++) {
        KILN_TRY(kiln_need_input(ctx, k, &x));
        KILN_TRY(gk_out_like(ctx, k - 1, g->dtype, x));
    }
    return KILN_OK;
}

static kiln_status concatgrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0);
    int ax;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), g->rank, "axis", &ax));
    int64_t outer = 1, inner = 1, total = 0;
    for (int d = 0; d < ax; d++) outer *= g->dims[d];
    for (int d = ax + 1; d < g->rank; d++) inner *= g->dims[d];
    for (int k = 1; k < ctx->n_in; k++) {
        kiln_tensor *x = kiln_input(ctx, k);
        if (x->rank != g->rank) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d has rank %d, the gradient %d", k, x->rank, g->rank);
        total += x->dims[ax];
    }
    if (total != g->dims[ax]) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the inputs' sizes along the axis add to %lld, the gradient has %lld", (long long)total, (long long)g->dims[ax]);
    size_t es = g->dtype == KILN_DTYPE_DOUBLE ? 8 : 4;
    int64_t at = 0;
    for (int k = 1; k < ctx->n_in; k++) {
        int64_t len = kiln_input(ctx, k)->dims[ax];
        kiln_tensor *y = kiln_output(ctx, k - 1);
        if (y)
            for (int64_t o = 0; o < outer; o++)
                memcpy((char *)y->data + (size_t)(o * len * inner) * es,
                       (const char *)g->data + (size_t)((o * g->dims[ax] + at) * inner) * es, (size_t)(len * inner) * es);
        at += len;
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- NLLLossGrad(dL, input, target[, weight]) */

static kiln_status nllgrad_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *x, *t;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(gk_float_input(ctx, 1, g, &x));
    KILN_TRY(kiln_need_input(ctx, 2, &t));
    KILN_TRY(kiln_check_dtype(ctx, t, 2, 2, KILN_DTYPE_INT32, KILN_DTYPE_INT64));
    return gk_out_like(ctx, 0, g->dtype, x);
}

static kiln_status nllgrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *t = kiln_input(ctx, 2), *y = kiln_output(ctx, 0);
    kiln_tensor *w = ctx->n_in > 3 ? kiln_input(ctx, 3) : NULL;
    const char *red = kiln_attr_string(ctx->node, "reduction", "mean");
    int none = !strcmp(red, "none"), mean = !strcmp(red, "mean"), dt = g->dtype;
    int64_t ignore = kiln_attr_int(ctx->node, "ignore_index", INT64_MIN);
    if (x->rank < 2 || t->rank != x->rank - 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input has rank %d and target %d", x->rank, t->rank);
    int64_t N = x->dims[0], C = x->dims[1], D = 1;
    for (int d = 2; d < x->rank; d++) D *= x->dims[d];
    if (kiln_numel(t) != N * D) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "target does not match the input's shape");
    if (none ? kiln_numel(g) != N * D : kiln_numel(g) != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the loss gradient has %lld elements", (long long)kiln_numel(g));
    if (w && (w->rank != 1 || w->dims[0] != C || w->dtype != dt))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "weight must be a [C] tensor of the input's type");
    gk_zero(y);
    double wsum = 0;
    for (int pass = 0; pass < 2; pass++)
        for (int64_t i = 0; i < N * D; i++) {
            int64_t c = t->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)t->data)[i] : ((const int32_t *)t->data)[i];
            if (c == ignore) continue;
            if (c < 0 || c >= C)
                return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "target %lld is out of range [0, %lld)", (long long)c, (long long)C);
            double wc = w ? gk_ld(w->data, c, dt) : 1.0;
            if (pass == 0) {
                wsum += wc;
                continue;
            }
            double gv = gk_ld(g->data, none ? i : 0, dt);
            if (mean) gv = wsum != 0 ? gv / wsum : 0;
            int64_t n = i / D, d = i % D;
            gk_st(y->data, (n * C + c) * D + d, dt, -wc * gv);
        }
    return KILN_OK;
}

/* ---------------------------------------------------------------- PadGrad(dY, X[, pads, axes]), constant mode */

static kiln_status padgrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    int r = x->rank, n = 0, na = r, dt = g->dtype;
    int64_t pads[2 * KILN_MAX_RANK], axes[KILN_MAX_RANK], pb[KILN_MAX_RANK] = {0};
    kiln_tensor *pt = ctx->n_in > 2 ? kiln_input(ctx, 2) : NULL, *at = ctx->n_in > 3 ? kiln_input(ctx, 3) : NULL;
    if (pt) {
        KILN_TRY(kiln_read_ints(ctx, pt, pads, 2 * KILN_MAX_RANK, &n));
    } else {
        const int64_t *a = kiln_attr_ints(ctx->node, kiln_has_attr(ctx->node, "pads") ? "pads" : "paddings", &n);
        if (n > 2 * KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many pads");
        if (n) memcpy(pads, a, sizeof(int64_t) * (size_t)n);
    }
    for (int i = 0; i < r; i++) axes[i] = i;
    if (at) KILN_TRY(kiln_read_ints(ctx, at, axes, KILN_MAX_RANK, &na));
    if (n != 2 * na) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pads has %d values for %d axes", n, na);
    for (int i = 0; i < na; i++) {
        int ax;
        KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &ax));
        pb[ax] = pads[i];
        if (g->rank != r || g->dims[ax] != x->dims[ax] + pads[i] + pads[i + na])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's shape does not match the padding");
    }
    int64_t nx = kiln_numel(y), gs[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0};
    kiln_strides(r, g->dims, gs);
    /* X element i is Y element i + pb when that lies inside Y (negative pads crop) */
    for (int64_t i = 0; i < nx; i++) {
        int64_t off = 0;
        int in = 1;
        for (int d = 0; d < r && in; d++) {
            int64_t k = idx[d] + pb[d];
            in = k >= 0 && k < g->dims[d];
            off += k * gs[d];
        }
        gk_st(y->data, i, dt, in ? gk_ld(g->data, off, dt) : 0.0);
        for (int d = r - 1; d >= 0; d--) {
            if (++idx[d] < x->dims[d]) break;
            idx[d] = 0;
        }
    }
    return KILN_OK;
}

/* ---------------------------------------------------------------- TileGrad(dY, X): the tiles summed */

static kiln_status tilegrad_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    int r = x->rank, dt = g->dtype;
    if (g->rank != r) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has rank %d, X %d", g->rank, r);
    for (int d = 0; d < r; d++)
        if (x->dims[d] == 0 ? g->dims[d] != 0 : g->dims[d] % x->dims[d])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient's dim %d (%lld) is not a multiple of X's (%lld)",
                             d, (long long)g->dims[d], (long long)x->dims[d]);
    gk_zero(y);
    int64_t n = kiln_numel(g), xs[KILN_MAX_RANK], idx[KILN_MAX_RANK] = {0};
    if (kiln_numel(y) == 0) return KILN_OK;
    kiln_strides(r, x->dims, xs);
    for (int64_t i = 0; i < n; i++) {
        int64_t off = 0;
        for (int d = 0; d < r; d++) off += (idx[d] % x->dims[d]) * xs[d];
        gk_add(y->data, off, dt, gk_ld(g->data, i, dt));
        for (int d = r - 1; d >= 0; d--) {
            if (++idx[d] < g->dims[d]) break;
            idx[d] = 0;
        }
    }
    return KILN_OK;
}

const kiln_op kiln_ops_grad_elementwise[] = {
    {"kiln", "PadGrad", 1, 0, NULL, grad_like_x_infer, padgrad_compute, NULL},
    {"kiln", "TileGrad", 1, 0, NULL, grad_like_x_infer, tilegrad_compute, NULL},
    {"kiln", "SumTo", 1, 0, NULL, sumto_infer, sumto_compute, NULL},
    {"kiln", "UnaryGrad", 1, 0, NULL, unary_infer, unary_compute, NULL},
    {"kiln", "PowGrad", 1, 0, NULL, pow_infer, pow_compute, NULL},
    {"kiln", "ReduceGrad", 1, 0, NULL, grad_like_x_infer, reducegrad_compute, NULL},
    {"kiln", "GatherGrad", 1, 0, NULL, gathergrad_infer, gathergrad_compute, NULL},
    {"kiln", "SliceGrad", 1, 0, NULL, grad_like_x_infer, slicegrad_compute, NULL},
    {"kiln", "ConcatGrad", 1, 0, NULL, concatgrad_infer, concatgrad_compute, NULL},
    {"kiln", "NLLLossGrad", 1, 0, NULL, nllgrad_infer, nllgrad_compute, NULL},
    {0}};
