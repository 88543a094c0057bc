/* com.microsoft quantised matrix products: QGemm, DynamicQuantizeMatMul, MatMulIntegerToFloat and
 * QAttention (BERT-style int8 attention: the QKV projection is an integer product, the rest is the
 * float attention core of the Attention kernels). */
#include "attention_common.h"
#include "gemm_util.h"
#include "qgemm.h"
#include "quant_contrib.h"
#include "quant_kernels.h"
#include <stdlib.h>

static const int Q8_TYPES[] = {KILN_DTYPE_UINT8, KILN_DTYPE_INT8};
static const int F32[] = {KILN_DTYPE_FLOAT};
static const int I32[] = {KILN_DTYPE_INT32};

typedef struct igemm_out {
    int32_t *C;
    int64_t ldc;
} igemm_out;

static void igemm_store(void *arg, int64_t m0, int64_t n0, int64_t mc, int64_t nc, const int32_t *acc,
                        int64_t ld) {
    const igemm_out *o = arg;
    for (int64_t i = 0; i < mc; i++)
        memcpy(o->C + (m0 + i) * o->ldc + n0, acc + i * ld, sizeof(int32_t) * (size_t)nc);
}

kiln_status qc_igemm(kiln_ctx *ctx, int64_t M, int64_t N, int64_t K, int adt, const void *A,
                     int64_t lda, int32_t a_zp, int bdt, const void *B, int64_t ldb,
                     const int32_t *b_zp, int b_zp_per_col, int32_t *C, int64_t ldc,
                     const kqg_b *packed) {
    if (M <= 0 || N <= 0) return KILN_OK;
    kqg_a a;
    kqg_b b;
    memset(&b, 0, sizeof b);
    KILN_TRY(kqg_a_init(ctx, &a, M, K));
    kiln_status st = packed ? KILN_OK : kqg_b_init(ctx, &b, K, N);
    if (st != KILN_OK) {
        kqg_a_free(&a);
        return st;
    }
    kqg_pack_a(ctx, &a, adt, A, lda);
    if (!packed) kqg_pack_b(ctx, &b, bdt, B, ldb, 0);
    igemm_out o = {C, ldc};
    kqg_gemm(ctx, &a, packed ? packed : &b, &a_zp, 0, b_zp, b_zp_per_col, igemm_store, &o);
    kqg_a_free(&a);
    kqg_b_free(&b);
    return KILN_OK;
}

/* A constant 2-D B packed once at init (B [K, N], or [N, K] with trans). */
typedef struct bpack {
    const void *src;
    kqg_b b;
} bpack;

static kiln_status bpack_init(kiln_ctx *ctx, int idx, int trans) {
    const kiln_tensor *B = kiln_input(ctx, idx);
    if (!B || !B->data || B->rank != 2 || !kiln_shape_concrete(B) || !qc_is_q8(B->dtype)) return KILN_OK;
    bpack *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing B");
    ctx->state = s;
    KILN_TRY(kqg_b_init(ctx, &s->b, B->dims[trans ? 1 : 0], B->dims[trans ? 0 : 1]));
    kqg_pack_b(ctx, &s->b, B->dtype, B->data, B->dims[1], trans);
    s->src = B->data;
    return KILN_OK;
}

/* The packed B when it is still the tensor b. */
static const kqg_b *bpack_get(const kiln_ctx *ctx, const kiln_tensor *b) {
    const bpack *s = ctx->state;
    return s && s->src == b->data && b->rank == 2 ? &s->b : NULL;
}

void qc_bpack_fini(void *state) {
    bpack *s = state;
    if (!s) return;
    kqg_b_free(&s->b);
    free(s);
}

kiln_status qc_qgemm_init(kiln_ctx *ctx) {
    return bpack_init(ctx, 3, kiln_attr_int(ctx->node, "transB", 0) != 0);
}

kiln_status qc_mm_b1_init(kiln_ctx *ctx) { return bpack_init(ctx, 1, 0); }

/* A scale or zero point of B: one value, or one per column (n entries). */
static kiln_status per_col(kiln_ctx *ctx, const kiln_tensor *t, const char *name, int64_t n, int *pc) {
    *pc = 0;
    if (!t || !kiln_shape_concrete(t)) return KILN_OK;
    int64_t c = kiln_numel(t);
    if (c == 1) return KILN_OK;
    if (n >= 0 && c == n && t->rank <= 2) {
        *pc = 1;
        return KILN_OK;
    }
    char b[96];
    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                     "input '%s' %s must hold 1 value or one per column (%lld)", name, QE_SHAPE(t, b),
                     (long long)n);
}

/* Zero points of B as int32, per column or one. */
static int32_t *zp_vector(const kiln_tensor *t, int64_t n, int pc) {
    int32_t *z = malloc(sizeof(int32_t) * (size_t)(n > 0 ? n : 1));
    if (!z) return NULL;
    for (int64_t i = 0; i < (pc ? n : 1); i++) z[i] = t ? qc_q8(t->dtype, t->data, pc ? i : 0) : 0;
    return z;
}

/* ---- QGemm ---- */

enum { G_A, G_AS, G_AZ, G_B, G_BS, G_BZ, G_C, G_YS, G_YZ };

typedef struct qgemm {
    kiln_tensor *a, *b, *bs, *bz, *c, *ys, *yz;
    float as;
    int32_t az;
    int ta, tb, out_dt;
    int64_t M, N, K;
} qgemm;

static kiln_status qgemm_check(kiln_ctx *ctx, qgemm *g) {
    char b1[96], b2[96];
    memset(g, 0, sizeof *g);
    KILN_TRY(qc_need(ctx, G_A, "A", &g->a, 2, Q8_TYPES));
    static const int S8[] = {KILN_DTYPE_INT8};
    KILN_TRY(qc_need(ctx, G_B, "B", &g->b, g->a->dtype == KILN_DTYPE_UINT8 ? 2 : 1,
                     g->a->dtype == KILN_DTYPE_UINT8 ? Q8_TYPES : S8));
    KILN_TRY(qc_scale1(ctx, G_AS, "a_scale", 1, &g->as));
    KILN_TRY(qc_zp1(ctx, G_AZ, "a_zero_point", g->a->dtype, 0, &g->az));
    KILN_TRY(qc_need(ctx, G_BS, "b_scale", &g->bs, 1, F32));
    KILN_TRY(qc_opt(ctx, G_BZ, "b_zero_point", &g->bz, 1, &g->b->dtype));
    KILN_TRY(qc_opt(ctx, G_C, "C", &g->c, 1, I32));
    KILN_TRY(qc_opt(ctx, G_YS, "y_scale", &g->ys, 1, F32));
    KILN_TRY(qc_opt(ctx, G_YZ, "y_zero_point", &g->yz, 1, &g->a->dtype));
    float f;
    int32_t z;
    if (g->ys) KILN_TRY(qc_scale1(ctx, G_YS, "y_scale", 0, &f));
    if (g->yz) KILN_TRY(qc_zp1(ctx, G_YZ, "y_zero_point", g->a->dtype, 0, &z));
    g->out_dt = g->yz ? g->a->dtype : KILN_DTYPE_FLOAT;
    g->ta = kiln_attr_int(ctx->node, "transA", 0) != 0;
    g->tb = kiln_attr_int(ctx->node, "transB", 0) != 0;
    if (g->a->rank < 0 || g->b->rank < 0) { g->M = -2; return KILN_OK; }
    if (g->a->rank != 2 || g->b->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "A %s and B %s must be 2-D",
                         QE_SHAPE(g->a, b1), QE_SHAPE(g->b, b2));
    g->M = g->a->dims[g->ta ? 1 : 0];
    g->K = g->a->dims[g->ta ? 0 : 1];
    g->N = g->b->dims[g->tb ? 0 : 1];
    int64_t kb = g->b->dims[g->tb ? 1 : 0];
    if (g->K >= 0 && kb >= 0 && g->K != kb)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "inner dimensions differ: A %s, B %s%s%s",
                         QE_SHAPE(g->a, b1), QE_SHAPE(g->b, b2), g->ta ? " (transA)" : "",
                         g->tb ? " (transB)" : "");
    int pc;
    KILN_TRY(per_col(ctx, g->bs, "b_scale", g->N, &pc));
    KILN_TRY(per_col(ctx, g->bz, "b_zero_point", g->N, &pc));
    if (g->c && kiln_shape_concrete(g->c) && g->M >= 0 && g->N >= 0) {
        const kiln_tensor *c = g->c;
        int ok = kiln_numel(c) == 1 || (c->rank == 1 && c->dims[0] == g->N) ||
                 (c->rank == 2 && (c->dims[0] == 1 || c->dims[0] == g->M) &&
                  (c->dims[1] == 1 || c->dims[1] == g->N));
        if (!ok)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias C %s does not broadcast to [%lld,%lld]",
                             QE_SHAPE(c, b1), (long long)g->M, (long long)g->N);
    }
    return KILN_OK;
}

kiln_status qc_qgemm_infer(kiln_ctx *ctx) {
    qgemm g;
    KILN_TRY(qgemm_check(ctx, &g));
    if (g.M == -2) return kiln_set_output_unknown(ctx, 0, g.out_dt);
    int64_t dims[2] = {g.M, g.N};
    return kiln_set_output(ctx, 0, g.out_dt, 2, dims);
}

/* A transposed copy of an 8-bit rows x cols matrix. */
static uint8_t *transpose8(const uint8_t *x, int64_t rows, int64_t cols) {
    uint8_t *t = malloc((size_t)(rows * cols + 1));
    if (!t) return NULL;
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) t[c * rows + r] = x[r * cols + c];
    return t;
}

kiln_status qc_qgemm_compute(kiln_ctx *ctx) {
    qgemm g;
    KILN_TRY(qgemm_check(ctx, &g));
    kiln_tensor *y = kiln_output(ctx, 0);
    int64_t M = g.M, N = g.N, K = g.K;
    if (!y || M == 0 || N == 0) return KILN_OK;
    int bpc = kiln_numel(g.bs) != 1, zpc = g.bz && kiln_numel(g.bz) != 1;
    const uint8_t *a = g.a->data, *b = g.b->data;
    uint8_t *at = NULL, *bt = NULL;
    const kqg_b *bp = bpack_get(ctx, g.b);
    if (g.ta) a = at = transpose8(a, K, M);
    if (g.tb && !bp) b = bt = transpose8(b, N, K);
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)(M * N));
    int32_t *bz = zp_vector(g.bz, N, zpc);
    float *scale = malloc(sizeof(float) * (size_t)N);
    kiln_status st = KILN_OK;
    if ((g.ta && !at) || (g.tb && !bp && !bt) || !acc || !bz || !scale) {
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for QGemm");
        goto done;
    }
    st = qc_igemm(ctx, M, N, K, g.a->dtype, a, K, g.az, g.b->dtype, b, N, bz, zpc, acc, N, bp);
    if (st != KILN_OK) goto done;
    if (g.c) {
        const int32_t *c = g.c->data;
        int64_t cn = kiln_numel(g.c);
        int64_t c0 = g.c->rank == 2 ? g.c->dims[0] : 1, c1 = g.c->rank >= 1 ? g.c->dims[g.c->rank - 1] : 1;
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                int64_t ci = cn == 1 ? 0 : (c0 == 1 ? 0 : m) * c1 + (c1 == 1 ? 0 : n);
                acc[m * N + n] = (int32_t)((uint32_t)acc[m * N + n] + (uint32_t)c[ci]);
            }
    }
    float alpha = kiln_attr_float(ctx->node, "alpha", 1.0f);
    const float *bsd = g.bs->data;
    float ysv = g.ys ? *(const float *)g.ys->data : 1.0f;
    for (int64_t n = 0; n < N; n++) {
        scale[n] = alpha * g.as * bsd[bpc ? n : 0];
        if (g.ys) scale[n] /= ysv;
    }
    if (g.out_dt == KILN_DTYPE_FLOAT) {
        float *yf = y->data;
        for (int64_t i = 0; i < M * N; i++) yf[i] = (float)acc[i] * scale[i % N];
    } else {
        int32_t lo, hi, yz = qc_q8(g.yz->dtype, g.yz->data, 0);
        qc_q8_range(g.out_dt, &lo, &hi);
        for (int64_t i = 0; i < M * N; i++)
            qc_store8(g.out_dt, y->data, i, qc_requant(acc[i], scale[i % N], yz, lo, hi));
    }
done:
    free(at);
    free(bt);
    free(acc);
    free(bz);
    free(scale);
    return st;
}

/* ---- DynamicQuantizeMatMul and MatMulIntegerToFloat ---- */

typedef struct mmf {
    kiln_tensor *a, *b, *bs, *bz, *bias;
    int rank;
    int64_t dims[KILN_MAX_RANK];
    int64_t M, K, N, batch, b_batch; /* b_batch: 1 when B is one matrix for every batch */
} mmf;

/* Shapes: A [..., M, K] with B [K, N] (shared by every batch) or B [..., K, N] with the same batch
 * dims as A. */
static kiln_status mmf_shapes(kiln_ctx *ctx, mmf *p) {
    char b1[96], b2[96];
    const kiln_tensor *a = p->a, *b = p->b;
    p->rank = -1;
    if (a->rank < 0 || b->rank < 0) return KILN_OK;
    if (a->rank < 2 || b->rank < 2)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "A %s and B %s must have rank >= 2",
                         QE_SHAPE(a, b1), QE_SHAPE(b, b2));
    p->M = a->dims[a->rank - 2];
    p->K = a->dims[a->rank - 1];
    p->N = b->dims[b->rank - 1];
    if (p->K >= 0 && b->dims[b->rank - 2] >= 0 && p->K != b->dims[b->rank - 2])
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "inner dimensions differ: A %s, B %s",
                         QE_SHAPE(a, b1), QE_SHAPE(b, b2));
    p->batch = 1;
    for (int d = 0; d < a->rank - 2; d++) p->batch *= a->dims[d];
    p->b_batch = 1;
    if (b->rank > 2) {
        int same = b->rank == a->rank;
        for (int d = 0; same && d < a->rank - 2; d++)
            same = a->dims[d] == b->dims[d] || a->dims[d] < 0 || b->dims[d] < 0;
        if (!same)
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                             "batched B %s must have A %s's batch dims", QE_SHAPE(b, b2), QE_SHAPE(a, b1));
        p->b_batch = p->batch;
    }
    p->rank = a->rank;
    memcpy(p->dims, a->dims, sizeof(int64_t) * (size_t)a->rank);
    p->dims[a->rank - 1] = p->N;
    int pc;
    KILN_TRY(per_col(ctx, p->bs, "b_scale", p->N, &pc));
    KILN_TRY(per_col(ctx, p->bz, "b_zero_point", p->N, &pc));
    if (p->bias && kiln_shape_concrete(p->bias) && (p->bias->rank != 1 || p->bias->dims[0] != p->N))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias %s must be 1-D with %lld values",
                         QE_SHAPE(p->bias, b1), (long long)p->N);
    return KILN_OK;
}

typedef struct mmf_epi {
    float *y;
    int64_t N;
    const float *scale_v; /* a_scale * b_scale[n], or NULL for scale_s */
    float scale_s;
    const float *bias;
} mmf_epi;

static void mmf_store(void *arg, int64_t m0, int64_t n0, int64_t mc, int64_t nc, const int32_t *acc,
                      int64_t ld) {
    const mmf_epi *e = arg;
    for (int64_t i = 0; i < mc; i++)
        kqg_scale_row(acc + i * ld, nc, e->scale_v ? e->scale_v + n0 : NULL, e->scale_s,
                      e->bias ? e->bias + n0 : NULL, e->y + (m0 + i) * e->N + n0);
}

/* y = float(acc) * (a_scale * b_scale[n]) + bias[n] over every batch; a B shared by every batch
 * makes one product of batch * M rows. */
static kiln_status mmf_run(kiln_ctx *ctx, const mmf *p, int adt, const void *a, int32_t az, float as,
                           float *y) {
    int64_t M = p->M, N = p->N, K = p->K;
    int spc = kiln_numel(p->bs) != 1, zpc = p->bz && kiln_numel(p->bz) != 1;
    int fold = p->b_batch == 1;
    int64_t rows = fold ? p->batch * M : M, nprod = fold ? 1 : p->batch;
    const kqg_b *bp = fold ? bpack_get(ctx, p->b) : NULL;
    int32_t *bz = zp_vector(p->bz, N, zpc);
    float *scale = malloc(sizeof(float) * (size_t)(N + 1));
    kqg_a A;
    kqg_b B;
    memset(&B, 0, sizeof B);
    kiln_status st = kqg_a_init(ctx, &A, rows, K);
    if (st == KILN_OK && !bp) st = kqg_b_init(ctx, &B, K, N);
    if (st == KILN_OK && (!bz || !scale)) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for the integer product");
    const float *bs = st == KILN_OK ? p->bs->data : NULL;
    for (int64_t n = 0; st == KILN_OK && n < (spc ? N : 1); n++) scale[n] = as * bs[n];
    for (int64_t bt = 0; st == KILN_OK && bt < nprod; bt++) {
        kqg_pack_a(ctx, &A, adt, (const uint8_t *)a + bt * M * K, K);
        if (!bp) kqg_pack_b(ctx, &B, p->b->dtype, (const uint8_t *)p->b->data + (fold ? 0 : bt) * K * N, N, 0);
        mmf_epi e = {y + bt * M * N, N, spc ? scale : NULL, scale[0], p->bias ? p->bias->data : NULL};
        kqg_gemm(ctx, &A, bp ? bp : &B, &az, 0, bz, zpc, mmf_store, &e);
    }
    kqg_a_free(&A);
    kqg_b_free(&B);
    free(bz);
    free(scale);
    return st;
}

enum { D_A, D_B, D_BS, D_BZ, D_BIAS };

static kiln_status dqmm_check(kiln_ctx *ctx, mmf *p) {
    memset(p, 0, sizeof *p);
    KILN_TRY(qc_need(ctx, D_A, "A", &p->a, 1, F32));
    KILN_TRY(qc_need(ctx, D_B, "B", &p->b, 2, Q8_TYPES));
    KILN_TRY(qc_need(ctx, D_BS, "b_scale", &p->bs, 1, F32));
    KILN_TRY(qc_opt(ctx, D_BZ, "b_zero_point", &p->bz, 1, &p->b->dtype));
    KILN_TRY(qc_opt(ctx, D_BIAS, "bias", &p->bias, 1, F32));
    return mmf_shapes(ctx, p);
}

static kiln_status mmf_set_output(kiln_ctx *ctx, const mmf *p) {
    if (p->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_FLOAT);
    return kiln_set_output(ctx, 0, KILN_DTYPE_FLOAT, p->rank, p->dims);
}

kiln_status qc_dqmm_infer(kiln_ctx *ctx) {
    mmf p;
    KILN_TRY(dqmm_check(ctx, &p));
    return mmf_set_output(ctx, &p);
}

/* A quantised to uint8 over its whole range widened to include 0, as onnxruntime's
 * GetQuantizationParameter: scale (max - min) / 255, zero point round(-min / scale). */
kiln_status qc_dqmm_compute(kiln_ctx *ctx) {
    mmf p;
    KILN_TRY(dqmm_check(ctx, &p));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    int64_t n = kiln_numel(p.a);
    const float *a = p.a->data;
    float mn, mx;
    kiln_quant_minmax(a, n, &mn, &mx);
    float scale = mx == mn ? 1.0f : (mx - mn) / 255.0f;
    float z0 = 0.0f - mn / scale;
    z0 = !(z0 >= 0.0f) ? 0.0f : z0 > 255.0f ? 255.0f : z0; /* NaN (an infinite input) -> 0 */
    int32_t zp = (int32_t)rintf(z0);
    uint8_t *aq = malloc((size_t)(n + 1));
    if (!aq) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for DynamicQuantizeMatMul");
    kiln_quantize_f32_u8(ctx, a, n, scale, (uint8_t)zp, aq);
    kiln_status st = mmf_run(ctx, &p, KILN_DTYPE_UINT8, aq, zp, scale, y->data);
    free(aq);
    return st;
}

enum { I_A, I_B, I_AS, I_BS, I_AZ, I_BZ, I_BIAS };

static kiln_status mmitf_check(kiln_ctx *ctx, mmf *p, float *as, int32_t *az) {
    memset(p, 0, sizeof *p);
    static const int S8[] = {KILN_DTYPE_INT8};
    KILN_TRY(qc_need(ctx, I_A, "A", &p->a, 2, Q8_TYPES));
    /* as onnxruntime: int8 A pairs with int8 B only */
    KILN_TRY(qc_need(ctx, I_B, "B", &p->b, p->a->dtype == KILN_DTYPE_UINT8 ? 2 : 1,
                     p->a->dtype == KILN_DTYPE_UINT8 ? Q8_TYPES : S8));
    KILN_TRY(qc_scale1(ctx, I_AS, "a_scale", 1, as));
    KILN_TRY(qc_need(ctx, I_BS, "b_scale", &p->bs, 1, F32));
    KILN_TRY(qc_zp1(ctx, I_AZ, "a_zero_point", p->a->dtype, 0, az));
    KILN_TRY(qc_opt(ctx, I_BZ, "b_zero_point", &p->bz, 1, &p->b->dtype));
    KILN_TRY(qc_opt(ctx, I_BIAS, "bias", &p->bias, 1, F32));
    return mmf_shapes(ctx, p);
}

kiln_status qc_mmitf_infer(kiln_ctx *ctx) {
    mmf p;
    float as;
    int32_t az;
    KILN_TRY(mmitf_check(ctx, &p, &as, &az));
    return mmf_set_output(ctx, &p);
}

kiln_status qc_mmitf_compute(kiln_ctx *ctx) {
    mmf p;
    float as;
    int32_t az;
    KILN_TRY(mmitf_check(ctx, &p, &as, &az));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    return mmf_run(ctx, &p, p.a->dtype, p.a->data, az, as, y->data);
}

/* ---- QAttention ---- */

enum { Q_IN, Q_W, Q_BIAS, Q_IS, Q_WS, Q_MASK, Q_IZ, Q_WZ, Q_PAST };

typedef struct qattn {
    kiln_tensor *input, *w, *bias, *ws, *wz, *mask, *past;
    float is;
    int32_t iz;
    int64_t B, S, Di, D, N, H, P, T;
    int causal;
} qattn;

static kiln_status qattn_check(kiln_ctx *ctx, qattn *q) {
    char b1[96];
    static const int U8[] = {KILN_DTYPE_UINT8};
    memset(q, 0, sizeof *q);
    KILN_TRY(qc_need(ctx, Q_IN, "input", &q->input, 1, U8));
    KILN_TRY(qc_need(ctx, Q_W, "weight", &q->w, 2, Q8_TYPES));
    KILN_TRY(qc_need(ctx, Q_BIAS, "bias", &q->bias, 1, F32));
    KILN_TRY(qc_scale1(ctx, Q_IS, "input_scale", 1, &q->is));
    KILN_TRY(qc_need(ctx, Q_WS, "weight_scale", &q->ws, 1, F32));
    KILN_TRY(qc_zp1(ctx, Q_IZ, "input_zero_point", KILN_DTYPE_UINT8, 0, &q->iz));
    KILN_TRY(qc_opt(ctx, Q_WZ, "weight_zero_point", &q->wz, 1, &q->w->dtype));
    KILN_TRY(qc_opt(ctx, Q_PAST, "past", &q->past, 1, F32));
    static const int MASK_T[] = {KILN_DTYPE_INT32};
    KILN_TRY(qc_opt(ctx, Q_MASK, "mask_index", &q->mask, 1, MASK_T));
    q->N = kiln_attr_int(ctx->node, "num_heads", 0);
    if (q->N <= 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "num_heads must be > 0, got %lld", (long long)q->N);
    if (kiln_attr_int(ctx->node, "do_rotary", 0) != 0)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "do_rotary = 1 is not supported");
    q->causal = kiln_attr_int(ctx->node, "unidirectional", 0) != 0;
    if (q->input->rank < 0 || q->w->rank < 0) { q->B = -2; return KILN_OK; }
    if (q->input->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s must be 3-D (B, S, D_i)",
                         QE_SHAPE(q->input, b1));
    q->B = q->input->dims[0];
    q->S = q->input->dims[1];
    q->Di = q->input->dims[2];
    if (q->w->rank != 2 || q->w->dims[0] != q->Di || q->w->dims[1] % 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "weight %s must be 2-D (input dim 2 = %lld, 3 * hidden)", QE_SHAPE(q->w, b1),
                         (long long)q->Di);
    q->D = q->w->dims[1] / 3;
    if (q->D % q->N)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "hidden size %lld is not divisible by num_heads %lld",
                         (long long)q->D, (long long)q->N);
    q->H = q->D / q->N;
    if (q->bias->rank != 1 || q->bias->dims[0] != 3 * q->D)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias %s must be 1-D with %lld values",
                         QE_SHAPE(q->bias, b1), (long long)(3 * q->D));
    int pc;
    KILN_TRY(per_col(ctx, q->ws, "weight_scale", 3 * q->D, &pc));
    KILN_TRY(per_col(ctx, q->wz, "weight_zero_point", 3 * q->D, &pc));
    q->P = 0;
    if (q->past) {
        const int64_t *d = q->past->dims;
        if (q->past->rank != 5 || d[0] != 2 || d[1] != q->B || d[2] != q->N || d[4] != q->H)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "past %s must be (2, B, num_heads, P, head_size)",
                             QE_SHAPE(q->past, b1));
        q->P = d[3];
    }
    q->T = q->P + q->S;
    if (q->mask)
        KILN_TRY(kattn_mask_check(ctx, q->mask, KATTN_MASK_ATTENTION, q->B, q->S, q->S, q->T, -1, q->causal));
    return KILN_OK;
}

kiln_status qc_qattention_infer(kiln_ctx *ctx) {
    qattn q;
    int unknown = 0; /* static inference with symbolic or unknown dims: outputs unknown */
    for (int i = 0; i < ctx->n_in; i++) {
        const kiln_tensor *t = kiln_input(ctx, i);
        if (t && !kiln_shape_concrete(t)) unknown = 1;
    }
    if (unknown) q.B = -2;
    else KILN_TRY(qattn_check(ctx, &q));
    if (q.B == -2) {
        KILN_TRY(kiln_set_output_unknown(ctx, 0, KILN_DTYPE_FLOAT));
        return kiln_output(ctx, 1) ? kiln_set_output_unknown(ctx, 1, KILN_DTYPE_FLOAT) : KILN_OK;
    }
    int64_t od[3] = {q.B, q.S, q.D};
    KILN_TRY(kiln_set_output(ctx, 0, KILN_DTYPE_FLOAT, 3, od));
    if (kiln_output(ctx, 1)) {
        int64_t pd[5] = {2, q.B, q.N, q.T, q.H};
        KILN_TRY(kiln_set_output(ctx, 1, KILN_DTYPE_FLOAT, 5, pd));
    }
    return KILN_OK;
}

kiln_status qc_qattention_compute(kiln_ctx *ctx) {
    qattn q;
    KILN_TRY(qattn_check(ctx, &q));
    kiln_tensor *out = kiln_output(ctx, 0);
    if (!out) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output 0 is required");
    int64_t W = 3 * q.D, BS = q.B * q.S;
    int spc = kiln_numel(q.ws) != 1, zpc = q.wz && kiln_numel(q.wz) != 1;
    int32_t *acc = malloc(sizeof(int32_t) * (size_t)(BS * W + 1));
    float *qkv = malloc(sizeof(float) * (size_t)(BS * W + 1));
    int32_t *wz = zp_vector(q.wz, W, zpc);
    kattn_mask mask;
    memset(&mask, 0, sizeof mask);
    kiln_status st = KILN_OK;
    if (!acc || !qkv || !wz) {
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for QAttention");
        goto done;
    }
    st = qc_igemm(ctx, BS, W, q.Di, KILN_DTYPE_UINT8, q.input->data, q.Di, q.iz, q.w->dtype,
                  q.w->data, W, wz, zpc, acc, W, NULL);
    if (st != KILN_OK) goto done;
    const float *ws = q.ws->data, *bias = q.bias->data;
    for (int64_t i = 0; i < BS * W; i++) {
        int64_t n = i % W;
        qkv[i] = (float)acc[i] * (ws[spc ? n : 0] * q.is) + bias[n];
    }
    kattn_sdpa p;
    memset(&p, 0, sizeof p);
    p.B = q.B;
    p.N = p.N_kv = q.N;
    p.S = q.S;
    p.T = q.T;
    p.H = p.Hv = q.H;
    p.past = q.P;
    p.scale = kattn_default_scale(kiln_attr_float(ctx->node, "scale", 0.0f), q.H);
    p.causal = q.causal;
    p.q = (kattn_view){qkv, q.S * W, q.H, W};
    p.k = (kattn_view){qkv + q.D, q.S * W, q.H, W};
    p.v = (kattn_view){qkv + 2 * q.D, q.S * W, q.H, W};
    kiln_tensor *present = kiln_output(ctx, 1);
    if (present) {
        float *pk = present->data, *pv = pk + q.B * q.N * q.T * q.H;
        const float *past = q.past ? q.past->data : NULL;
        kattn_view nk = p.k, nv = p.v;
        kattn_concat_kv(ctx, pk, q.T, past, q.P, q.P, &nk, q.B, q.N, q.S, q.H);
        kattn_concat_kv(ctx, pv, q.T, past ? past + q.B * q.N * q.P * q.H : NULL, q.P, q.P, &nv, q.B,
                        q.N, q.S, q.H);
        p.k = (kattn_view){pk, q.N * q.T * q.H, q.T * q.H, q.H};
        p.v = (kattn_view){pv, q.N * q.T * q.H, q.T * q.H, q.H};
    } else if (q.past) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "past is given but output 'present' is not requested");
        goto done;
    }
    st = kattn_mask_build(ctx, q.mask, KATTN_MASK_ATTENTION, q.B, q.S, q.S, q.T,
                          kiln_attr_float(ctx->node, "mask_filter_value", -10000.0f), &mask);
    if (st != KILN_OK) goto done;
    kattn_mask_apply(&mask, &p, 0);
    p.out = out->data;
    p.o_sb = q.S * q.D;
    p.o_sn = q.H;
    p.o_ss = q.D;
    st = kattn_run(ctx, &p);
done:
    kattn_mask_free(&mask);
    free(acc);
    free(qkv);
    free(wz);
    return st;
}
