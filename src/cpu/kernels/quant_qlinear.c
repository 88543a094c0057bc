/* QLinearMatMul and QLinearConv: integer products of zero-point-adjusted values (int32
 * accumulation on the qgemm.h kernels, constant weights packed once at init), then requantised
 * with the float multiplier a_scale * b_scale / y_scale as onnxruntime does (clamped, rounded half
 * to even, zero point added). Float8 QLinearMatMul (opset 21) goes through float instead. */
#include "quant_elem.h"
#include "quant_kernels.h"
#include "qgemm.h"
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

/* Float8 products (opset 21): rows of dequantised values multiplied in float. */
static void mm_rows_f8(void *arg, int64_t begin, int64_t end) {
    const mm_job *j = arg;
    const mm_shape *s = &j->s;
    const kiln_tensor *a = j->in[0], *as = j->in[1], *az = j->in[2], *b = j->in[3], *bs = j->in[4],
                      *bz = j->in[5], *ys = j->in[6], *yz = j->in[7];
    int64_t M = s->M, K = s->K, N = s->N;
    float y_scale = qe_load_f32(ys->dtype, ys->data, 0);
    float y_zp = qe_load_f32(yz->dtype, yz->data, 0);
    float *facc = malloc(sizeof(float) * (size_t)(N > 0 ? N : 1));
    if (!facc) return; /* cannot report from a worker: leave rows untouched */
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
        float a_scale = qe_load_f32(as->dtype, as->data, param_index(as, M, bt, i));
        int64_t y_off = row * N;
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
    }
    free(facc);
}

/* ---- the 8-bit path ---- */

typedef struct qmm_state {
    const void *b_src; /* constant B as seen at init */
    kqg_b b;
} qmm_state;

kiln_status kiln_qlinear_matmul_init(kiln_ctx *ctx) {
    const kiln_tensor *b = kiln_input(ctx, 3);
    if (!b || !b->data || b->rank != 2 || !is_q8(b->dtype) || !kiln_shape_concrete(b)) return KILN_OK;
    qmm_state *st = calloc(1, sizeof *st);
    if (!st) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing b");
    ctx->state = st;
    KILN_TRY(kqg_b_init(ctx, &st->b, b->dims[0], b->dims[1]));
    kqg_pack_b(ctx, &st->b, b->dtype, b->data, b->dims[1], 0);
    st->b_src = b->data;
    return KILN_OK;
}

void kiln_qlinear_matmul_fini(void *state) {
    qmm_state *st = state;
    if (!st) return;
    kqg_b_free(&st->b);
    free(st);
}

typedef struct qmm_epi {
    const mm_job *j;
    int64_t row0;      /* global row (batch * M + i) of the product's row 0 */
    const float *bsv;  /* b_scale per column of this batch, or NULL for one value */
    float bs, y_scale;
    int32_t y_zp;
} qmm_epi;

static void qmm_epilogue(void *arg, int64_t m0, int64_t n0, int64_t mc, int64_t nc, const int32_t *acc,
                         int64_t ld) {
    const qmm_epi *e = arg;
    const mm_shape *s = &e->j->s;
    const kiln_tensor *as = e->j->in[1];
    kiln_tensor *y = e->j->y;
    int64_t M = s->M > 0 ? s->M : 1, N = s->N;
    float mult[64];
    for (int64_t i = 0; i < mc; i++) {
        int64_t r = e->row0 + m0 + i, bt = r / M;
        float a_scale = qe_load_f32(as->dtype, as->data, param_index(as, M, bt, r % M));
        const int32_t *row = acc + i * ld;
        void *out = (char *)y->data + r * N + n0;
        if (!e->bsv) {
            kqg_requant_row(row, nc, NULL, a_scale * e->bs / e->y_scale, NULL, 0, e->y_zp, y->dtype, out);
            continue;
        }
        for (int64_t c0 = 0; c0 < nc; c0 += 64) {
            int64_t cn = nc - c0 < 64 ? nc - c0 : 64;
            for (int64_t c = 0; c < cn; c++) mult[c] = a_scale * e->bsv[n0 + c0 + c] / e->y_scale;
            kqg_requant_row(row + c0, cn, mult, 0.0f, NULL, 0, e->y_zp, y->dtype, (char *)out + c0);
        }
    }
}

static kiln_status mm_int8(kiln_ctx *ctx, const mm_job *j) {
    const mm_shape *s = &j->s;
    const kiln_tensor *a = j->in[0], *az = j->in[2], *b = j->in[3], *bs = j->in[4],
                      *bz = j->in[5], *ys = j->in[6], *yz = j->in[7];
    int64_t M = s->M, K = s->K, N = s->N;
    const qmm_state *st = ctx->state;
    int b_packed = st && st->b_src == b->data && b->rank == 2;
    /* B shared by every batch and A's batches contiguous: one product over batch * M rows */
    int64_t nbs = kiln_numel(bs), nbz = kiln_numel(bz);
    int fold = !(s->batch > 1 && ((nbs != 1 && nbs != N) || (nbz != 1 && nbz != N)));
    for (int d = 0; d < s->nbatch_dims; d++)
        fold &= s->b_batch_stride[d] == 0 && (s->a_batch_stride[d] != 0 || s->dims[d] == 1);
    int64_t rows = fold ? s->batch * M : M, nprod = fold ? 1 : s->batch;
    kqg_a A;
    kqg_b B;
    memset(&B, 0, sizeof B);
    int32_t *za = malloc(sizeof(int32_t) * (size_t)(rows + 1));
    int32_t *zb = malloc(sizeof(int32_t) * (size_t)(N + 1));
    float *bsv = malloc(sizeof(float) * (size_t)(N + 1));
    kiln_status stt = kqg_a_init(ctx, &A, rows, K);
    if (stt == KILN_OK && !b_packed) stt = kqg_b_init(ctx, &B, K, N);
    if (stt == KILN_OK && (!za || !zb || !bsv))
        stt = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for QLinearMatMul");
    int64_t last_b = -1;
    for (int64_t bt = 0; stt == KILN_OK && bt < nprod; bt++) {
        int64_t rem = bt, a_off = 0, b_off = 0;
        for (int d = s->nbatch_dims - 1; d >= 0; d--) {
            int64_t c = rem % s->dims[d];
            rem /= s->dims[d];
            a_off += c * s->a_batch_stride[d];
            b_off += c * s->b_batch_stride[d];
        }
        kqg_pack_a(ctx, &A, a->dtype, (const uint8_t *)a->data + a_off, K);
        if (!b_packed && b_off != last_b) {
            kqg_pack_b(ctx, &B, b->dtype, (const uint8_t *)b->data + b_off, N, 0);
            last_b = b_off;
        }
        int64_t row0 = fold ? 0 : bt * M;
        int za_rows = kiln_numel(az) != 1;
        for (int64_t r = 0; za_rows && r < rows; r++) {
            int64_t g = row0 + r;
            za[r] = load_q8(az->dtype, az->data, param_index(az, M, g / M, g % M));
        }
        if (!za_rows) za[0] = load_q8(az->dtype, az->data, 0);
        int zb_cols = kiln_numel(bz) != 1, bs_cols = kiln_numel(bs) != 1;
        int64_t pb = fold ? 0 : bt;
        for (int64_t n = 0; n < N; n++) {
            if (zb_cols) zb[n] = load_q8(bz->dtype, bz->data, param_index(bz, N, pb, n));
            if (bs_cols) bsv[n] = qe_load_f32(bs->dtype, bs->data, param_index(bs, N, pb, n));
        }
        if (!zb_cols) zb[0] = load_q8(bz->dtype, bz->data, 0);
        qmm_epi e = {j, row0, bs_cols ? bsv : NULL, qe_load_f32(bs->dtype, bs->data, 0),
                     qe_load_f32(ys->dtype, ys->data, 0), load_q8(yz->dtype, yz->data, 0)};
        kqg_gemm(ctx, &A, b_packed ? &st->b : &B, za, za_rows, zb, zb_cols, qmm_epilogue, &e);
    }
    kqg_a_free(&A);
    kqg_b_free(&B);
    free(za);
    free(zb);
    free(bsv);
    return stt;
}

kiln_status kiln_qlinear_matmul_compute(kiln_ctx *ctx) {
    mm_job j;
    for (int i = 0; i < 8; i++) j.in[i] = kiln_input(ctx, i);
    j.y = kiln_output(ctx, 0);
    if (!j.y) return KILN_OK;
    KILN_TRY(mm_resolve(ctx, j.in[0], j.in[3], &j.s));
    int64_t rows = j.s.batch * j.s.M;
    int f8 = qe_is_f8(j.in[0]->dtype) || qe_is_f8(j.in[3]->dtype);
    if (!f8 && rows > 0 && j.s.N > 0) return mm_int8(ctx, &j);
    if (rows > 0 && j.s.N > 0) {
        int64_t grain = 1 + 65536 / (j.s.K * j.s.N + 1);
        kiln_parallel_for(ctx, rows, grain, mm_rows_f8, &j);
    }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* QLinearConv */

typedef kqg_conv_geom conv_geom;

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

/* The weights' geometry alone (what packing needs), from w's shape and the group attribute. */
static int conv_w_geometry(const kiln_ctx *ctx, const kiln_tensor *w, conv_geom *g) {
    memset(g, 0, sizeof *g);
    if (w->rank < 3 || !kiln_shape_concrete(w)) return 0;
    g->nsp = w->rank - 2;
    g->group = kiln_attr_int(ctx->node, "group", 1);
    g->M = w->dims[0];
    g->C = w->dims[1] * g->group;
    if (g->group < 1 || g->M % g->group) return 0;
    g->k_size = 1;
    for (int d = 0; d < g->nsp; d++) g->k[d] = w->dims[2 + d], g->k_size *= g->k[d];
    return 1;
}

typedef struct qconv_state {
    const void *w_src; /* constant w as seen at init */
    kqg_conv_w w;
} qconv_state;

kiln_status kiln_qlinear_conv_init(kiln_ctx *ctx) {
    const kiln_tensor *w = kiln_input(ctx, 3);
    conv_geom g;
    if (!w || !w->data || !is_q8(w->dtype) || !conv_w_geometry(ctx, w, &g)) return KILN_OK;
    qconv_state *st = calloc(1, sizeof *st);
    if (!st) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing w");
    ctx->state = st;
    KILN_TRY(kqg_conv_pack_w(ctx, &g, w->dtype, w->data, &st->w));
    st->w_src = w->data;
    return KILN_OK;
}

void kiln_qlinear_conv_fini(void *state) {
    qconv_state *st = state;
    if (!st) return;
    kqg_conv_w_free(&st->w);
    free(st);
}

typedef struct qconv_epi {
    kiln_tensor *y;
    const float *mult;
    const int32_t *bias;
    int32_t y_zp;
    int64_t M, P;
} qconv_epi;

static void qconv_epilogue(void *arg, int64_t n, int64_t m0, int64_t p0, int64_t mc, int64_t pc,
                           const int32_t *acc, int64_t ld) {
    const qconv_epi *e = arg;
    for (int64_t i = 0; i < mc; i++) {
        int64_t m = m0 + i;
        kqg_requant_row(acc + i * ld, pc, NULL, e->mult[m], NULL, e->bias ? e->bias[m] : 0, e->y_zp,
                        e->y->dtype, (uint8_t *)e->y->data + (n * e->M + m) * e->P + p0);
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
    if (g.N * g.M * g.out_size == 0) return KILN_OK;
    qconv_state *st = ctx->state;
    kqg_conv_w local;
    const kqg_conv_w *pw = st && st->w_src == w->data ? &st->w : NULL;
    if (!pw) {
        KILN_TRY(kqg_conv_pack_w(ctx, &g, w->dtype, w->data, &local));
        pw = &local;
    }
    float *mult = malloc(sizeof(float) * (size_t)g.M);
    int32_t *wz = malloc(sizeof(int32_t) * (size_t)g.M);
    kiln_status stt = KILN_OK;
    if (!mult || !wz) {
        stt = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for QLinearConv");
    } else {
        float x_scale = qe_load_f32(in[1]->dtype, in[1]->data, 0);
        float y_scale = qe_load_f32(in[6]->dtype, in[6]->data, 0);
        int per_ch_s = kiln_numel(in[4]) != 1, per_ch_z = kiln_numel(in[5]) != 1;
        for (int64_t m = 0; m < g.M; m++) {
            wz[m] = load_q8(in[5]->dtype, in[5]->data, per_ch_z ? m : 0);
            mult[m] = x_scale * qe_load_f32(in[4]->dtype, in[4]->data, per_ch_s ? m : 0) / y_scale;
        }
        qconv_epi e = {y, mult, bias ? (const int32_t *)bias->data : NULL,
                       load_q8(in[7]->dtype, in[7]->data, 0), g.M, g.out_size};
        stt = kqg_conv_run(ctx, &g, pw, wz, per_ch_z, x->dtype, x->data,
                           load_q8(in[2]->dtype, in[2]->data, 0), qconv_epilogue, &e);
    }
    free(mult);
    free(wz);
    if (pw == &local) kqg_conv_w_free(&local);
    return stt;
}
