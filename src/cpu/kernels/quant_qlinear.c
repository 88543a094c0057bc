/* QLinearMatMul and QLinearConv: integer products of zero-point-adjusted values, then requantised
 * with the float multiplier a_scale * b_scale / y_scale (rounded to nearest even, saturated).
 * Large products run as OpenBLAS dgemm: the operands are integers below 2^8 in magnitude, so
 * every partial sum is an integer far below 2^53 and double arithmetic is exact, i.e. the same
 * as int32 accumulation. Float8 QLinearMatMul (opset 21) goes through float instead. */
#include "quant_elem.h"
#include "quant_kernels.h"
#include <cblas.h>
#include <stdlib.h>

static int is_q8(int dt) { return dt == KILN_DTYPE_UINT8 || dt == KILN_DTYPE_INT8; }

static inline int32_t load_q8(int dt, const void *p, int64_t i) {
    return dt == KILN_DTYPE_UINT8 ? (int32_t)((const uint8_t *)p)[i] : (int32_t)((const int8_t *)p)[i];
}

/* Requantises one accumulated value into the output type. */
static inline void store_requant(int dt, void *y, int64_t i, float v, float zp) {
    if (qe_is_f8(dt)) {
        ((uint8_t *)y)[i] = qe_f32_to_f8(dt, v + zp, 1);
        return;
    }
    float r = rintf(v) + zp;
    float lo = dt == KILN_DTYPE_UINT8 ? 0.0f : -128.0f, hi = dt == KILN_DTYPE_UINT8 ? 255.0f : 127.0f;
    if (!(r >= lo)) r = isnan(r) ? zp : lo;
    if (r > hi) r = hi;
    if (dt == KILN_DTYPE_UINT8) ((uint8_t *)y)[i] = (uint8_t)r;
    else ((int8_t *)y)[i] = (int8_t)r;
}

/* ------------------------------------------------------------------------------------------ */
/* QLinearMatMul */

typedef struct mm_shape {
    int rank;
    int64_t dims[KILN_MAX_RANK];
    int64_t M, K, N, batch;
    int64_t a_batch_stride[KILN_MAX_RANK], b_batch_stride[KILN_MAX_RANK]; /* per out batch dim */
    int nbatch_dims;
    int a_vec, b_vec;
} mm_shape;

static kiln_status mm_resolve(kiln_ctx *ctx, const kiln_tensor *a, const kiln_tensor *b, mm_shape *s) {
    char b1[96], b2[96];
    memset(s, 0, sizeof *s);
    if (a->rank < 1 || b->rank < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "inputs a %s and b %s must have rank >= 1",
                         QE_SHAPE(a, b1), QE_SHAPE(b, b2));
    int64_t ad[KILN_MAX_RANK + 1], bd[KILN_MAX_RANK + 1];
    int ar = a->rank, br = b->rank;
    memcpy(ad, a->dims, sizeof(int64_t) * ar);
    memcpy(bd, b->dims, sizeof(int64_t) * br);
    if (ar == 1) { ad[1] = ad[0]; ad[0] = 1; ar = 2; s->a_vec = 1; }
    if (br == 1) { bd[1] = 1; br = 2; s->b_vec = 1; }
    s->M = ad[ar - 2];
    s->K = ad[ar - 1];
    s->N = bd[br - 1];
    if (s->K >= 0 && bd[br - 2] >= 0 && s->K != bd[br - 2])
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "inner dimensions differ: a %s, b %s", QE_SHAPE(a, b1), QE_SHAPE(b, b2));
    int nb = (ar > br ? ar : br) - 2;
    if (nb + 2 > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "rank too large");
    s->nbatch_dims = nb;
    s->batch = 1;
    int64_t astr = s->M * s->K, bstr = s->K * s->N;
    for (int d = nb - 1; d >= 0; d--) {
        int ai = d - (nb - (ar - 2)), bi = d - (nb - (br - 2));
        int64_t da = ai >= 0 ? ad[ai] : 1, db = bi >= 0 ? bd[bi] : 1, out;
        if (da == db || db == 1) out = da;
        else if (da == 1) out = db;
        else if (da < 0 || db < 0) out = da < 0 ? db : da;
        else
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "batch dimensions of a %s and b %s do not broadcast", QE_SHAPE(a, b1),
                             QE_SHAPE(b, b2));
        s->dims[d] = out;
        s->a_batch_stride[d] = da == 1 ? 0 : astr;
        s->b_batch_stride[d] = db == 1 ? 0 : bstr;
        if (ai >= 0) astr *= da;
        if (bi >= 0) bstr *= db;
        s->batch *= out;
    }
    int r = nb;
    if (!s->a_vec) s->dims[r++] = s->M;
    if (!s->b_vec) s->dims[r++] = s->N;
    s->rank = r;
    return KILN_OK;
}

/* Scale/zero-point layouts accepted: one value, per-row of a (M values) or per-column of b
 * (N values), optionally also per batch (batch * M or batch * N values). */
static kiln_status mm_check_param(kiln_ctx *ctx, const kiln_tensor *t, const char *what, int64_t per,
                                  int64_t batch) {
    if (!t || !kiln_shape_concrete(t)) return KILN_OK;
    int64_t n = kiln_numel(t);
    if (n == 1 || (per >= 0 && n == per) || (per >= 0 && batch >= 0 && n == per * batch))
        return KILN_OK;
    char b1[96];
    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                     "%s %s must hold 1 value or one per %s", what, QE_SHAPE(t, b1),
                     per >= 0 ? "row/column" : "row/column");
}

kiln_status kiln_qlinear_matmul_infer(kiln_ctx *ctx) {
    kiln_tensor *in[8];
    for (int i = 0; i < 8; i++) KILN_TRY(kiln_need_input(ctx, i, &in[i]));
    const kiln_tensor *a = in[0], *b = in[3];
    int f8 = qe_is_f8(a->dtype);
    if (!(is_q8(a->dtype) || f8) || !(is_q8(b->dtype) || qe_is_f8(b->dtype)) ||
        !(is_q8(in[7]->dtype) || qe_is_f8(in[7]->dtype)))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "unsupported element types a %s, b %s, y %s", kiln_dtype_name(a->dtype),
                         kiln_dtype_name(b->dtype), kiln_dtype_name(in[7]->dtype));
    if (in[2]->dtype != a->dtype || in[5]->dtype != b->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "zero points must have the types of a and b");
    static const int scale_inputs[3] = {1, 4, 6};
    for (int q = 0; q < 3; q++) {
        int i = scale_inputs[q];
        if (!qe_is_float(in[i]->dtype))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scale input %d must be float, not %s", i,
                             kiln_dtype_name(in[i]->dtype));
    }
    if (in[7]->dtype != in[0]->dtype && !qe_is_f8(in[0]->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "y_zero_point type %s differs from a's %s",
                         kiln_dtype_name(in[7]->dtype), kiln_dtype_name(in[0]->dtype));
    if (a->rank < 0 || b->rank < 0) return kiln_set_output_unknown(ctx, 0, in[7]->dtype);
    mm_shape s;
    KILN_TRY(mm_resolve(ctx, a, b, &s));
    KILN_TRY(mm_check_param(ctx, in[1], "a_scale", s.M, s.batch));
    KILN_TRY(mm_check_param(ctx, in[2], "a_zero_point", s.M, s.batch));
    KILN_TRY(mm_check_param(ctx, in[4], "b_scale", s.N, s.batch));
    KILN_TRY(mm_check_param(ctx, in[5], "b_zero_point", s.N, s.batch));
    KILN_TRY(mm_check_param(ctx, in[6], "y_scale", -1, -1));
    KILN_TRY(mm_check_param(ctx, in[7], "y_zero_point", -1, -1));
    return kiln_set_output(ctx, 0, in[7]->dtype, s.rank, s.dims);
}

typedef struct mm_job {
    const kiln_tensor *in[8];
    kiln_tensor *y;
    mm_shape s;
} mm_job;

/* Index of a's row parameter for (batch, row) and of b's column parameter for (batch, col). */
static inline int64_t param_index(const kiln_tensor *t, int64_t per, int64_t bt, int64_t r) {
    int64_t n = kiln_numel(t);
    if (n == 1) return 0;
    if (n == per) return r;
    return bt * per + r;
}

static void mm_rows(void *arg, int64_t begin, int64_t end) {
    const mm_job *j = arg;
    const mm_shape *s = &j->s;
    const kiln_tensor *a = j->in[0], *as = j->in[1], *az = j->in[2], *b = j->in[3], *bs = j->in[4],
                      *bz = j->in[5], *ys = j->in[6], *yz = j->in[7];
    int64_t M = s->M, K = s->K, N = s->N;
    int f8 = qe_is_f8(a->dtype) || qe_is_f8(b->dtype);
    float y_scale = qe_load_f32(ys->dtype, ys->data, 0);
    float y_zp = qe_load_f32(yz->dtype, yz->data, 0);
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)(N > 0 ? N : 1));
    float *facc = malloc(sizeof(float) * (size_t)(N > 0 ? N : 1));
    if (!acc || !facc) { /* cannot report from a worker: leave rows untouched */
        free(acc);
        free(facc);
        return;
    }
    int64_t prev_batch = -1, a_off = 0, b_off = 0;
    for (int64_t row = begin; row < end; row++) {
        int64_t bt = row / (M > 0 ? M : 1), i = row % (M > 0 ? M : 1);
        if (bt != prev_batch) {
            int64_t rem = bt;
            a_off = b_off = 0;
            for (int d = s->nbatch_dims - 1; d >= 0; d--) {
                int64_t c = rem % s->dims[d];
                rem /= s->dims[d];
                a_off += c * s->a_batch_stride[d];
                b_off += c * s->b_batch_stride[d];
            }
            prev_batch = bt;
        }
        int64_t ai = param_index(as, M, bt, i);
        float a_scale = qe_load_f32(as->dtype, as->data, ai);
        int64_t y_off = row * N;
        if (f8) {
            for (int64_t n = 0; n < N; n++) facc[n] = 0.0f;
            float a_zp = qe_load_f32(az->dtype, az->data, param_index(az, M, bt, i));
            for (int64_t k = 0; k < K; k++) {
                float av = (qe_load_f32(a->dtype, a->data, a_off + i * K + k) - a_zp) * a_scale;
                for (int64_t n = 0; n < N; n++) {
                    int64_t bi = param_index(bs, N, bt, n);
                    float bv = (qe_load_f32(b->dtype, b->data, b_off + k * N + n) -
                                qe_load_f32(bz->dtype, bz->data, param_index(bz, N, bt, n))) *
                               qe_load_f32(bs->dtype, bs->data, bi);
                    facc[n] += av * bv;
                }
            }
            for (int64_t n = 0; n < N; n++)
                store_requant(j->y->dtype, j->y->data, y_off + n, facc[n] / y_scale, y_zp);
            continue;
        }
        int32_t a_zp = load_q8(az->dtype, az->data, param_index(az, M, bt, i));
        int b_zp_scalar = kiln_numel(bz) == 1;
        int32_t b_zp0 = load_q8(bz->dtype, bz->data, 0);
        for (int64_t n = 0; n < N; n++) acc[n] = 0;
        for (int64_t k = 0; k < K; k++) {
            int32_t av = load_q8(a->dtype, a->data, a_off + i * K + k) - a_zp;
            if (av == 0) continue;
            int64_t brow = b_off + k * N;
            if (b_zp_scalar && b->dtype == KILN_DTYPE_UINT8) {
                const uint8_t *bp = (const uint8_t *)b->data + brow;
                for (int64_t n = 0; n < N; n++) acc[n] += av * ((int32_t)bp[n] - b_zp0);
            } else if (b_zp_scalar) {
                const int8_t *bp = (const int8_t *)b->data + brow;
                for (int64_t n = 0; n < N; n++) acc[n] += av * ((int32_t)bp[n] - b_zp0);
            } else {
                for (int64_t n = 0; n < N; n++)
                    acc[n] += av * (load_q8(b->dtype, b->data, brow + n) -
                                    load_q8(bz->dtype, bz->data, param_index(bz, N, bt, n)));
            }
        }
        for (int64_t n = 0; n < N; n++) {
            float mult = a_scale * qe_load_f32(bs->dtype, bs->data, param_index(bs, N, bt, n)) / y_scale;
            store_requant(j->y->dtype, j->y->data, y_off + n, (float)acc[n] * mult, y_zp);
        }
    }
    free(acc);
    free(facc);
}

/* Large integer products: one dgemm per batch on zero-point-adjusted operands. */
static kiln_status mm_dgemm(kiln_ctx *ctx, const mm_job *j) {
    const mm_shape *s = &j->s;
    const kiln_tensor *a = j->in[0], *as = j->in[1], *az = j->in[2], *b = j->in[3], *bs = j->in[4],
                      *bz = j->in[5], *ys = j->in[6], *yz = j->in[7];
    int64_t M = s->M, K = s->K, N = s->N;
    if (M > INT32_MAX || N > INT32_MAX || K > INT32_MAX)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "matrix product is too large");
    double *A = malloc(sizeof(double) * (size_t)(M * K + 1)), *B = malloc(sizeof(double) * (size_t)(K * N + 1));
    double *Cm = malloc(sizeof(double) * (size_t)(M * N + 1));
    if (!A || !B || !Cm) {
        free(A); free(B); free(Cm);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for QLinearMatMul");
    }
    float y_scale = qe_load_f32(ys->dtype, ys->data, 0), y_zp = qe_load_f32(yz->dtype, yz->data, 0);
    for (int64_t bt = 0; bt < s->batch; bt++) {
        int64_t rem = bt, a_off = 0, b_off = 0;
        for (int d = s->nbatch_dims - 1; d >= 0; d--) {
            int64_t c = rem % s->dims[d];
            rem /= s->dims[d];
            a_off += c * s->a_batch_stride[d];
            b_off += c * s->b_batch_stride[d];
        }
        for (int64_t i = 0; i < M; i++) {
            int32_t zp = load_q8(az->dtype, az->data, param_index(az, M, bt, i));
            for (int64_t k = 0; k < K; k++) A[i * K + k] = (double)(load_q8(a->dtype, a->data, a_off + i * K + k) - zp);
        }
        for (int64_t k = 0; k < K; k++)
            for (int64_t n = 0; n < N; n++)
                B[k * N + n] = (double)(load_q8(b->dtype, b->data, b_off + k * N + n) -
                                        load_q8(bz->dtype, bz->data, param_index(bz, N, bt, n)));
        cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)N, (int)K, 1.0, A, (int)K, B, (int)N,
                    0.0, Cm, (int)N);
        for (int64_t i = 0; i < M; i++) {
            float a_scale = qe_load_f32(as->dtype, as->data, param_index(as, M, bt, i));
            for (int64_t n = 0; n < N; n++) {
                float mult = a_scale * qe_load_f32(bs->dtype, bs->data, param_index(bs, N, bt, n)) / y_scale;
                store_requant(j->y->dtype, j->y->data, (bt * M + i) * N + n, (float)Cm[i * N + n] * mult, y_zp);
            }
        }
    }
    free(A); free(B); free(Cm);
    return KILN_OK;
}

kiln_status kiln_qlinear_matmul_compute(kiln_ctx *ctx) {
    mm_job j;
    for (int i = 0; i < 8; i++) j.in[i] = kiln_input(ctx, i);
    j.y = kiln_output(ctx, 0);
    if (!j.y) return KILN_OK;
    KILN_TRY(mm_resolve(ctx, j.in[0], j.in[3], &j.s));
    int64_t rows = j.s.batch * j.s.M;
    int f8 = qe_is_f8(j.in[0]->dtype) || qe_is_f8(j.in[3]->dtype);
    if (!f8 && rows > 0 && j.s.N > 0 && j.s.M * j.s.N * j.s.K >= 32768) return mm_dgemm(ctx, &j);
    if (rows > 0 && j.s.N > 0) {
        int64_t grain = 1 + 65536 / (j.s.K * j.s.N + 1);
        kiln_parallel_for(ctx, rows, grain, mm_rows, &j);
    }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* QLinearConv */

typedef struct conv_geom {
    int nsp;                          /* spatial rank */
    int64_t N, C, M, group;
    int64_t in_sp[KILN_MAX_RANK], out_sp[KILN_MAX_RANK], k[KILN_MAX_RANK];
    int64_t stride[KILN_MAX_RANK], dil[KILN_MAX_RANK], pad_lo[KILN_MAX_RANK];
    int64_t in_size, out_size, k_size;
} conv_geom;

static kiln_status conv_geometry(kiln_ctx *ctx, const kiln_tensor *x, const kiln_tensor *w,
                                 conv_geom *g) {
    char b1[96], b2[96];
    const kiln_node *nd = ctx->node;
    memset(g, 0, sizeof *g);
    if (x->rank < 3 || w->rank != x->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "x %s and w %s must have the same rank >= 3", QE_SHAPE(x, b1),
                         QE_SHAPE(w, b2));
    g->nsp = x->rank - 2;
    g->N = x->dims[0];
    g->C = x->dims[1];
    g->M = w->dims[0];
    g->group = kiln_attr_int(nd, "group", 1);
    if (g->group < 1 || (g->C >= 0 && g->C % g->group) || (g->M >= 0 && g->M % g->group))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "group %lld does not divide channels %lld and filters %lld",
                         (long long)g->group, (long long)g->C, (long long)g->M);
    if (g->C >= 0 && w->dims[1] >= 0 && w->dims[1] * g->group != g->C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "w %s expects %lld input channels per group, x %s has %lld in %lld groups",
                         QE_SHAPE(w, b1), (long long)w->dims[1], QE_SHAPE(x, b2), (long long)g->C,
                         (long long)g->group);
    int nk = 0, ns = 0, nd_ = 0, np = 0;
    const int64_t *ks = kiln_attr_ints(nd, "kernel_shape", &nk);
    const int64_t *st = kiln_attr_ints(nd, "strides", &ns);
    const int64_t *dl = kiln_attr_ints(nd, "dilations", &nd_);
    const int64_t *pd = kiln_attr_ints(nd, "pads", &np);
    if ((ks && nk != g->nsp) || (st && ns != g->nsp) || (dl && nd_ != g->nsp) ||
        (pd && np != 2 * g->nsp))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "kernel_shape/strides/dilations/pads do not match %d spatial dims", g->nsp);
    const char *ap = kiln_attr_string(nd, "auto_pad", "NOTSET");
    g->in_size = g->out_size = g->k_size = 1;
    for (int d = 0; d < g->nsp; d++) {
        g->in_sp[d] = x->dims[2 + d];
        g->k[d] = ks ? ks[d] : w->dims[2 + d];
        if (ks && w->dims[2 + d] >= 0 && ks[d] != w->dims[2 + d])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "kernel_shape disagrees with w %s",
                             QE_SHAPE(w, b1));
        g->stride[d] = st ? st[d] : 1;
        g->dil[d] = dl ? dl[d] : 1;
        if (g->stride[d] < 1 || g->dil[d] < 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "strides and dilations must be >= 1");
        int64_t ext = (g->k[d] - 1) * g->dil[d] + 1, in = g->in_sp[d];
        int64_t lo = pd ? pd[d] : 0, hi = pd ? pd[d + g->nsp] : 0;
        if (lo < 0 || hi < 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pads must be >= 0");
        if (in < 0 || g->k[d] < 0) {
            g->out_sp[d] = -1;
            continue;
        }
        if (!strcmp(ap, "SAME_UPPER") || !strcmp(ap, "SAME_LOWER")) {
            int64_t out = (in + g->stride[d] - 1) / g->stride[d];
            int64_t total = (out - 1) * g->stride[d] + ext - in;
            if (total < 0) total = 0;
            lo = !strcmp(ap, "SAME_UPPER") ? total / 2 : total - total / 2;
            g->out_sp[d] = out;
        } else if (!strcmp(ap, "VALID")) {
            lo = 0;
            g->out_sp[d] = in >= ext ? (in - ext) / g->stride[d] + 1 : 0;
        } else if (!strcmp(ap, "NOTSET")) {
            int64_t span = in + lo + hi - ext;
            g->out_sp[d] = span >= 0 ? span / g->stride[d] + 1 : 0;
        } else {
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown auto_pad '%s'", ap);
        }
        g->pad_lo[d] = lo;
        g->in_size *= in;
        g->out_size *= g->out_sp[d];
        g->k_size *= g->k[d];
    }
    return KILN_OK;
}

kiln_status kiln_qlinear_conv_infer(kiln_ctx *ctx) {
    kiln_tensor *in[8];
    for (int i = 0; i < 8; i++) KILN_TRY(kiln_need_input(ctx, i, &in[i]));
    kiln_tensor *bias = kiln_input(ctx, 8);
    const kiln_tensor *x = in[0], *w = in[3];
    if (!is_q8(x->dtype) || !is_q8(w->dtype) || !is_q8(in[7]->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element types x %s, w %s, y %s",
                         kiln_dtype_name(x->dtype), kiln_dtype_name(w->dtype),
                         kiln_dtype_name(in[7]->dtype));
    if (in[2]->dtype != x->dtype || in[5]->dtype != w->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "zero points must have the types of x and w");
    if (bias) KILN_TRY(kiln_check_dtype(ctx, bias, 8, 1, KILN_DTYPE_INT32));
    if (x->rank < 0 || w->rank < 0) return kiln_set_output_unknown(ctx, 0, in[7]->dtype);
    conv_geom g;
    KILN_TRY(conv_geometry(ctx, x, w, &g));
    char b1[96];
    if (kiln_shape_concrete(in[1]) && kiln_numel(in[1]) != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "x_scale %s must be a scalar",
                         QE_SHAPE(in[1], b1));
    if (kiln_shape_concrete(in[2]) && kiln_numel(in[2]) != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "x_zero_point %s must be a scalar",
                         QE_SHAPE(in[2], b1));
    for (int i = 4; i <= 5; i++)
        if (kiln_shape_concrete(in[i]) && g.M >= 0 && kiln_numel(in[i]) != 1 && kiln_numel(in[i]) != g.M)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "%s %s must hold 1 value or one per output channel (%lld)",
                             i == 4 ? "w_scale" : "w_zero_point", QE_SHAPE(in[i], b1),
                             (long long)g.M);
    if (bias && kiln_shape_concrete(bias) && g.M >= 0 && kiln_numel(bias) != g.M)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias %s must hold %lld values",
                         QE_SHAPE(bias, b1), (long long)g.M);
    int64_t dims[KILN_MAX_RANK];
    dims[0] = g.N;
    dims[1] = g.M;
    for (int d = 0; d < g.nsp; d++) dims[2 + d] = g.out_sp[d];
    return kiln_set_output(ctx, 0, in[7]->dtype, x->rank, dims);
}

typedef struct conv_job {
    const conv_geom *g;
    double *col;          /* [Cg * K, out_size], zero point already subtracted */
    int64_t x_off;
    const kiln_tensor *x;
    int32_t x_zp;
} conv_job;

/* im2col over one (batch, group): each row is one (channel, kernel offset), each column one
 * output position. Padding reads as the zero point, which is 0 after subtraction. */
static void conv_im2col(void *arg, int64_t begin, int64_t end) {
    const conv_job *j = arg;
    const conv_geom *g = j->g;
    int nsp = g->nsp;
    const uint8_t *xu = (const uint8_t *)j->x->data;
    const int8_t *xs = (const int8_t *)j->x->data;
    int is_u8 = j->x->dtype == KILN_DTYPE_UINT8;
    for (int64_t r = begin; r < end; r++) {
        int64_t c = r / g->k_size, kk = r % g->k_size;
        int64_t koff[KILN_MAX_RANK], rem = kk;
        for (int d = nsp - 1; d >= 0; d--) {
            koff[d] = (rem % g->k[d]) * g->dil[d];
            rem /= g->k[d];
        }
        int64_t cbase = j->x_off + c * g->in_size;
        double *dst = j->col + r * g->out_size;
        int64_t W = g->out_sp[nsp - 1], IW = g->in_sp[nsp - 1], sw = g->stride[nsp - 1];
        int64_t x0 = koff[nsp - 1] - g->pad_lo[nsp - 1];
        /* walk the outer output dims by counter; the innermost dim is one contiguous row */
        int64_t rows = g->out_size / (W ? W : 1);
        int64_t oc[KILN_MAX_RANK] = {0};
        for (int64_t orow = 0; orow < rows; orow++, dst += W) {
            int64_t base = 0, mul = IW;
            int inside = 1;
            for (int d = nsp - 2; d >= 0; d--) {
                int64_t ic = oc[d] * g->stride[d] - g->pad_lo[d] + koff[d];
                if (ic < 0 || ic >= g->in_sp[d]) { inside = 0; break; }
                base += ic * mul;
                mul *= g->in_sp[d];
            }
            for (int d = nsp - 2; d >= 0; d--) { /* next outer coordinate */
                if (++oc[d] < g->out_sp[d]) break;
                oc[d] = 0;
            }
            if (!inside) {
                for (int64_t o = 0; o < W; o++) dst[o] = 0.0;
                continue;
            }
            const int64_t src = cbase + base;
            for (int64_t o = 0; o < W; o++) {
                int64_t ix = x0 + o * sw;
                if (ix < 0 || ix >= IW) { dst[o] = 0.0; continue; }
                dst[o] = (double)((is_u8 ? (int32_t)xu[src + ix] : (int32_t)xs[src + ix]) - j->x_zp);
            }
        }
    }
}

kiln_status kiln_qlinear_conv_compute(kiln_ctx *ctx) {
    const kiln_tensor *in[8];
    for (int i = 0; i < 8; i++) in[i] = kiln_input(ctx, i);
    const kiln_tensor *bias = kiln_input(ctx, 8), *x = in[0], *w = in[3];
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    conv_geom g;
    KILN_TRY(conv_geometry(ctx, x, w, &g));
    int64_t Cg = g.C / g.group, Mg = g.M / g.group, rows = Cg * g.k_size;
    int64_t ysz = g.N * g.M * g.out_size;
    if (ysz == 0) return KILN_OK;
    if (rows > INT32_MAX || g.out_size > INT32_MAX || Mg > INT32_MAX)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "convolution is too large");
    double *wq = malloc(sizeof(double) * (size_t)(g.M * rows + 1));
    double *col = malloc(sizeof(double) * (size_t)(rows * g.out_size + 1));
    double *acc = malloc(sizeof(double) * (size_t)(Mg * g.out_size + 1));
    float *mult = malloc(sizeof(float) * (size_t)(g.M + 1));
    if (!wq || !col || !acc || !mult) {
        free(wq); free(col); free(acc); free(mult);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for QLinearConv scratch");
    }
    float x_scale = qe_load_f32(in[1]->dtype, in[1]->data, 0);
    float y_scale = qe_load_f32(in[6]->dtype, in[6]->data, 0);
    float y_zp = qe_load_f32(in[7]->dtype, in[7]->data, 0);
    int32_t x_zp = load_q8(in[2]->dtype, in[2]->data, 0);
    int per_ch_s = kiln_numel(in[4]) != 1, per_ch_z = kiln_numel(in[5]) != 1;
    for (int64_t m = 0; m < g.M; m++) {
        int32_t wz = load_q8(in[5]->dtype, in[5]->data, per_ch_z ? m : 0);
        for (int64_t r = 0; r < rows; r++)
            wq[m * rows + r] = (double)(load_q8(w->dtype, w->data, m * rows + r) - wz);
        mult[m] = x_scale * qe_load_f32(in[4]->dtype, in[4]->data, per_ch_s ? m : 0) / y_scale;
    }
    conv_job j = {&g, col, 0, x, x_zp};
    for (int64_t n = 0; n < g.N; n++) {
        for (int64_t gr = 0; gr < g.group; gr++) {
            int64_t m0 = gr * Mg;
            j.x_off = (n * g.C + gr * Cg) * g.in_size;
            kiln_parallel_for(ctx, rows, 1 + 16384 / (g.out_size + 1), conv_im2col, &j);
            cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Mg, (int)g.out_size, (int)rows, 1.0,
                        wq + m0 * rows, (int)rows, col, (int)g.out_size, 0.0, acc, (int)g.out_size);
            for (int64_t m = 0; m < Mg; m++) {
                int64_t mm = m0 + m;
                double b = bias ? (double)((const int32_t *)bias->data)[mm] : 0.0;
                int64_t ybase = (n * g.M + mm) * g.out_size;
                const double *a = acc + m * g.out_size;
                for (int64_t o = 0; o < g.out_size; o++)
                    store_requant(y->dtype, y->data, ybase + o, (float)(a[o] + b) * mult[mm], y_zp);
            }
        }
    }
    free(wq); free(col); free(acc); free(mult);
    return KILN_OK;
}
