/* Gradient kernels of the kiln training domain for products and normalisations: MatMulGrad
 * (numpy matmul semantics: 1-D promotion, broadcast batches summed back), SoftmaxGrad (also for
 * LogSoftmax), LayerNormGrad and BatchNormGrad (inference form: running statistics are
 * constants). Products go through the GEMM helpers. */
#pragma GCC optimize("O3", "no-trapping-math", "fp-contract=fast") /* see elementwise_util.h */
#include "grad_common.h"
#include "gemm_util.h"
#include <stdlib.h>

static void gemm(kiln_ctx *ctx, int dt, int ta, int tb, int64_t M, int64_t N, int64_t K, const void *A, int64_t lda,
                 const void *B, int64_t ldb, double beta, void *C, int64_t ldc) {
    if (M == 0 || N == 0) return;
    if (dt == KILN_DTYPE_DOUBLE) kgemm_f64(ctx, ta, tb, M, N, K, 1.0, A, lda, B, ldb, beta, C, ldc);
    else kgemm_f32(ctx, ta, tb, M, N, K, 1.0f, A, lda, B, ldb, (float)beta, C, ldc);
}

/* ---------------------------------------------------------------- MatMulGrad(dY, A, B) -> dA, dB */

static kiln_status mmg_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *A, *B;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(gk_float_input(ctx, 1, g, &A));
    KILN_TRY(gk_float_input(ctx, 2, g, &B));
    if ((A->rank == 0) || (B->rank == 0)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "MatMul operands must not be scalars");
    KILN_TRY(gk_out_like(ctx, 0, g->dtype, A));
    return gk_out_like(ctx, 1, g->dtype, B);
}

typedef struct {
    int rank;                 /* batch rank (of Y) */
    int64_t dims[KILN_MAX_RANK], sa[KILN_MAX_RANK], sb[KILN_MAX_RANK]; /* batch strides in matrices, 0 = broadcast */
    int64_t n;                /* batch count */
} mm_batches;

static kiln_status mmg_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *A = kiln_input(ctx, 1), *B = kiln_input(ctx, 2);
    kiln_tensor *dA = kiln_output(ctx, 0), *dB = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    int dt = g->dtype;
    size_t es = dt == KILN_DTYPE_DOUBLE ? 8 : 4;
    int ra = A->rank, rb = B->rank;
    int64_t M = ra >= 2 ? A->dims[ra - 2] : 1, K = A->dims[ra - 1];
    int64_t Kb = rb >= 2 ? B->dims[rb - 2] : B->dims[0], N = rb >= 2 ? B->dims[rb - 1] : 1;
    if (K != Kb) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "A has %lld columns, B %lld rows", (long long)K, (long long)Kb);
    int ba = ra > 2 ? ra - 2 : 0, bb = rb > 2 ? rb - 2 : 0;
    mm_batches bt = {0};
    bt.rank = ba > bb ? ba : bb;
    bt.n = 1;
    int64_t ca = 1, cb = 1; /* batch counts of A and B */
    int64_t sa = 1, sb = 1;
    for (int d = bt.rank - 1; d >= 0; d--) {
        int da = d - (bt.rank - ba), db = d - (bt.rank - bb);
        int64_t xa = da >= 0 ? A->dims[da] : 1, xb = db >= 0 ? B->dims[db] : 1;
        if (xa != xb && xa != 1 && xb != 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "batch dims %lld and %lld do not broadcast", (long long)xa, (long long)xb);
        bt.dims[d] = xa > xb ? xa : xb;
        bt.sa[d] = xa == 1 ? 0 : sa;
        bt.sb[d] = xb == 1 ? 0 : sb;
        sa *= xa;
        sb *= xb;
        bt.n *= bt.dims[d];
        ca *= xa;
        cb *= xb;
    }
    if (kiln_numel(g) != bt.n * M * N)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient has %lld elements, the product %lld",
                         (long long)kiln_numel(g), (long long)(bt.n * M * N));
    const char *gp = g->data, *ap = A->data, *bp = B->data;
    if (cb == 1 && ca == bt.n) {
        /* B shared by every batch (a weight): the batches fold into the rows of one product */
        if (dA) gemm(ctx, dt, 0, 1, bt.n * M, K, N, gp, N, bp, N, 0.0, dA->data, K);
        if (dB) gemm(ctx, dt, 1, 0, K, N, bt.n * M, ap, K, gp, N, 0.0, dB->data, N);
        return KILN_OK;
    }
    int64_t *ia = malloc(sizeof(int64_t) * (size_t)(bt.n ? bt.n : 1) * 3), *ib = ia ? ia + bt.n : NULL, *iy = ib ? ib + bt.n : NULL;
    if (!ia) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    int64_t idx[KILN_MAX_RANK] = {0}, oa = 0, ob = 0;
    for (int64_t i = 0; i < bt.n; i++) {
        ia[i] = oa;
        ib[i] = ob;
        iy[i] = i;
        for (int d = bt.rank - 1; d >= 0; d--) {
            idx[d]++;
            oa += bt.sa[d];
            ob += bt.sb[d];
            if (idx[d] < bt.dims[d]) break;
            oa -= bt.sa[d] * idx[d];
            ob -= bt.sb[d] * idx[d];
            idx[d] = 0;
        }
    }
    if (dA) {
        if (ca == bt.n) {
            int64_t *ao = malloc(sizeof(int64_t) * (size_t)bt.n * 3);
            if (!ao) { free(ia); return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); }
            for (int64_t i = 0; i < bt.n; i++) {
                ao[i] = i * M * N;
                ao[bt.n + i] = ib[i] * K * N;
                ao[2 * bt.n + i] = ia[i] * M * K;
            }
            kgemm_batch b = {dt, 0, 1, M, K, N, N, N, K, 1.0, 0.0, gp, bp, dA->data, bt.n, ao, ao + bt.n, ao + 2 * bt.n};
            kgemm_batched(ctx, &b);
            free(ao);
        } else {
            gk_zero(dA);
            for (int64_t i = 0; i < bt.n; i++)
                gemm(ctx, dt, 0, 1, M, K, N, gp + (size_t)(i * M * N) * es, N, bp + (size_t)(ib[i] * K * N) * es, N, 1.0,
                     (char *)dA->data + (size_t)(ia[i] * M * K) * es, K);
        }
    }
    if (dB) {
        if (cb == bt.n) {
            int64_t *bo = malloc(sizeof(int64_t) * (size_t)bt.n * 3);
            if (!bo) { free(ia); return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); }
            for (int64_t i = 0; i < bt.n; i++) {
                bo[i] = ia[i] * M * K;
                bo[bt.n + i] = i * M * N;
                bo[2 * bt.n + i] = ib[i] * K * N;
            }
            kgemm_batch b = {dt, 1, 0, K, N, M, K, N, N, 1.0, 0.0, ap, gp, dB->data, bt.n, bo, bo + bt.n, bo + 2 * bt.n};
            kgemm_batched(ctx, &b);
            free(bo);
        } else {
            gk_zero(dB);
            for (int64_t i = 0; i < bt.n; i++)
                gemm(ctx, dt, 1, 0, K, N, M, ap + (size_t)(ia[i] * M * K) * es, K, gp + (size_t)(i * M * N) * es, N, 1.0,
                     (char *)dB->data + (size_t)(ib[i] * K * N) * es, N);
        }
    }
    free(ia);
    return KILN_OK;
}

/* ---------------------------------------------------------------- SoftmaxGrad(dY, Y) */

static kiln_status smg_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *y;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(gk_float_input(ctx, 1, g, &y));
    return gk_out_like(ctx, 0, g->dtype, y);
}

typedef struct { const void *g, *y; void *x; int64_t n, inner; int dt, log; } smg_job;

/* the common case: float32 over the last axis, contiguous rows */
static void smg_rows_f32(const smg_job *j, int64_t b, int64_t e) {
    for (int64_t o = b; o < e; o++) {
        const float *g = (const float *)j->g + o * j->n, *y = (const float *)j->y + o * j->n;
        float *x = (float *)j->x + o * j->n;
        double acc = 0;
        if (j->log) {
            for (int64_t k = 0; k < j->n; k++) acc += g[k];
            for (int64_t k = 0; k < j->n; k++) x[k] = gk_ftz(g[k] - expf(y[k]) * (float)acc);
        } else {
            for (int64_t k = 0; k < j->n; k++) acc += (double)g[k] * y[k];
            for (int64_t k = 0; k < j->n; k++) x[k] = gk_ftz(y[k] * (g[k] - (float)acc));
        }
    }
}

static void smg_range(void *arg, int64_t b, int64_t e) {
    const smg_job *j = arg;
    int dt = j->dt;
    if (dt == KILN_DTYPE_FLOAT && j->inner == 1) {
        smg_rows_f32(j, b, e);
        return;
    }
    for (int64_t o = b; o < e; o++)
        for (int64_t in = 0; in < j->inner; in++) {
            int64_t base = o * j->n * j->inner + in, s = j->inner;
            double acc = 0;
            for (int64_t k = 0; k < j->n; k++) {
                double gv = gk_ld(j->g, base + k * s, dt);
                acc += j->log ? gv : gv * gk_ld(j->y, base + k * s, dt);
            }
            for (int64_t k = 0; k < j->n; k++) {
                double gv = gk_ld(j->g, base + k * s, dt), yv = gk_ld(j->y, base + k * s, dt);
                gk_st(j->x, base + k * s, dt, j->log ? gv - exp(yv) * acc : yv * (gv - acc));
            }
        }
}

static kiln_status smg_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *y = kiln_input(ctx, 1), *x = kiln_output(ctx, 0);
    if (!gk_same_shape(g, y)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and Y differ in shape");
    int ax;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -1), y->rank ? y->rank : 1, "axis", &ax));
    int64_t outer = 1, n = 1, inner = 1;
    for (int d = 0; d < ax && d < y->rank; d++) outer *= y->dims[d];
    if (kiln_attr_int(ctx->node, "legacy", 0)) {
        for (int d = ax; d < y->rank; d++) n *= y->dims[d];
    } else {
        n = y->rank ? y->dims[ax] : 1;
        for (int d = ax + 1; d < y->rank; d++) inner *= y->dims[d];
    }
    smg_job j = {g->data, y->data, x->data, n, inner, g->dtype, (int)kiln_attr_int(ctx->node, "log", 0)};
    kiln_parallel_for(ctx, outer, gk_grain(n * inner * 3), smg_range, &j);
    return KILN_OK;
}

/* ---------------------------------------------------------------- LayerNormGrad(dY, X, scale) -> dX, dScale, dBias */

static kiln_status lng_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *x, *s;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(gk_float_input(ctx, 1, g, &x));
    KILN_TRY(gk_float_input(ctx, 2, g, &s));
    KILN_TRY(gk_out_like(ctx, 0, g->dtype, x));
    KILN_TRY(gk_out_like(ctx, 1, g->dtype, s));
    return gk_out_like(ctx, 2, g->dtype, s);
}

typedef struct {
    const void *g, *x, *s;
    void *dx, *ds, *db;
    double *mean, *rstd;
    int64_t M, D;
    double eps;
    int dt;
} lng_job;

/* Per row: mean and 1/std again, and dX = rstd (g s - mean(g s) - xhat mean(g s xhat)). */
#define LNG_ROWS(NAME, T)                                                                            \
    static void NAME(const lng_job *j, int64_t b, int64_t e) {                                      \
        const T *X = j->x, *G = j->g, *S = j->s;                                                    \
        T *DX = j->dx;                                                                               \
        int64_t D = j->D;                                                                            \
        for (int64_t r = b; r < e; r++) {                                                            \
            const T *x = X + r * D, *g = G + r * D;                                                  \
            double mu = 0, var = 0;                                                                  \
            for (int64_t k = 0; k < D; k++) mu += x[k];                                              \
            mu /= (double)D;                                                                         \
            for (int64_t k = 0; k < D; k++) var += ((double)x[k] - mu) * ((double)x[k] - mu);        \
            double rs = 1.0 / sqrt(var / (double)D + j->eps);                                        \
            j->mean[r] = mu;                                                                         \
            j->rstd[r] = rs;                                                                         \
            if (!DX) continue;                                                                       \
            double m1 = 0, m2 = 0;                                                                   \
            for (int64_t k = 0; k < D; k++) {                                                        \
                double gs = (double)g[k] * S[k];                                                     \
                m1 += gs;                                                                            \
                m2 += gs * ((double)x[k] - mu);                                                      \
            }                                                                                        \
            m1 /= (double)D;                                                                         \
            m2 *= rs / (double)D;                                                                    \
            T *dx = DX + r * D;                                                                      \
            for (int64_t k = 0; k < D; k++)                                                          \
                dx[k] = (T)(rs * ((double)g[k] * S[k] - m1 - ((double)x[k] - mu) * rs * m2));        \
        }                                                                                            \
    }
LNG_ROWS(lng_rows_f32, float)
LNG_ROWS(lng_rows_f64, double)

static void lng_rows(void *arg, int64_t b, int64_t e) {
    const lng_job *j = arg;
    if (j->dt == KILN_DTYPE_DOUBLE) lng_rows_f64(j, b, e);
    else lng_rows_f32(j, b, e);
}

/* dScale and dBias for columns [b, e): rows outer, so that each row is read contiguously */
#define LNG_COLS(NAME, T)                                                                            \
    static void NAME(const lng_job *j, int64_t b, int64_t e, double *as, double *ab) {              \
        const T *X = j->x, *G = j->g;                                                               \
        int64_t n = e - b;                                                                           \
        for (int64_t k = 0; k < n; k++) as[k] = ab[k] = 0;                                           \
        for (int64_t r = 0; r < j->M; r++) {                                                         \
            const T *x = X + r * j->D + b, *g = G + r * j->D + b;                                    \
            double mu = j->mean[r], rs = j->rstd[r];                                                 \
            for (int64_t k = 0; k < n; k++) {                                                        \
                as[k] += (double)g[k] * ((double)x[k] - mu) * rs;                                    \
                ab[k] += g[k];                                                                       \
            }                                                                                        \
        }                                                                                            \
    }
LNG_COLS(lng_cols_f32, float)
LNG_COLS(lng_cols_f64, double)

static void lng_cols(void *arg, int64_t b, int64_t e) {
    const lng_job *j = arg;
    for (int64_t c0 = b; c0 < e; c0 += 256) {
        int64_t c1 = c0 + 256 < e ? c0 + 256 : e;
        double as[256], ab[256];
        if (j->dt == KILN_DTYPE_DOUBLE) lng_cols_f64(j, c0, c1, as, ab);
        else lng_cols_f32(j, c0, c1, as, ab);
        for (int64_t k = c0; k < c1; k++) {
            if (j->ds) gk_st(j->ds, k, j->dt, as[k - c0]);
            if (j->db) gk_st(j->db, k, j->dt, ab[k - c0]);
        }
    }
}

static kiln_status lng_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *s = kiln_input(ctx, 2);
    if (!gk_same_shape(g, x)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and X differ in shape");
    int ax;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -1), x->rank, "axis", &ax));
    int64_t M = 1, D = 1;
    for (int d = 0; d < ax; d++) M *= x->dims[d];
    for (int d = ax; d < x->rank; d++) D *= x->dims[d];
    if (kiln_numel(s) != D)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "scale has %lld elements, the normalised axes %lld (a "
                         "broadcast scale is not differentiated)", (long long)kiln_numel(s), (long long)D);
    double *stats = malloc(sizeof(double) * (size_t)(2 * M + 1));
    if (!stats) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_tensor *dx = kiln_output(ctx, 0), *ds = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL,
                *db = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    lng_job j = {g->data, x->data, s->data, dx ? dx->data : NULL, ds ? ds->data : NULL, db ? db->data : NULL,
                 stats, stats + M, M, D, kiln_attr_float(ctx->node, "epsilon", 1e-5f), g->dtype};
    kiln_parallel_for(ctx, M, gk_grain(D * 4), lng_rows, &j);
    if (ds || db) kiln_parallel_for(ctx, D, gk_grain(M * 3), lng_cols, &j);
    free(stats);
    return KILN_OK;
}

/* ---------------------------------------------------------------- BatchNormGrad(dY, X, scale, mean, var) */

static kiln_status bng_infer(kiln_ctx *ctx) {
    kiln_tensor *g, *x, *s, *m, *v;
    KILN_TRY(gk_float_input(ctx, 0, NULL, &g));
    KILN_TRY(gk_float_input(ctx, 1, g, &x));
    KILN_TRY(gk_float_input(ctx, 2, g, &s));
    KILN_TRY(gk_float_input(ctx, 3, g, &m));
    KILN_TRY(gk_float_input(ctx, 4, g, &v));
    KILN_TRY(gk_out_like(ctx, 0, g->dtype, x));
    KILN_TRY(gk_out_like(ctx, 1, g->dtype, s));
    return gk_out_like(ctx, 2, g->dtype, s);
}

typedef struct {
    const void *g, *x, *s, *m, *v;
    void *dx, *ds, *db;
    int64_t N, C, S;
    double eps;
    int dt;
} bng_job;

static void bng_range(void *arg, int64_t b, int64_t e) {
    const bng_job *j = arg;
    int dt = j->dt;
    for (int64_t c = b; c < e; c++) {
        double rs = 1.0 / sqrt(gk_ld(j->v, c, dt) + j->eps), mu = gk_ld(j->m, c, dt), sc = gk_ld(j->s, c, dt);
        double as = 0, ab = 0;
        for (int64_t n = 0; n < j->N; n++) {
            int64_t o = (n * j->C + c) * j->S;
            for (int64_t k = 0; k < j->S; k++) {
                double gv = gk_ld(j->g, o + k, dt);
                as += gv * (gk_ld(j->x, o + k, dt) - mu) * rs;
                ab += gv;
                if (j->dx) gk_st(j->dx, o + k, dt, gv * sc * rs);
            }
        }
        if (j->ds) gk_st(j->ds, c, dt, as);
        if (j->db) gk_st(j->db, c, dt, ab);
    }
}

static kiln_status bng_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1);
    if (!gk_same_shape(g, x)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and X differ in shape");
    if (x->rank < 2) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has rank %d, expected >= 2", x->rank);
    int64_t N = x->dims[0], C = x->dims[1], S = 1;
    for (int d = 2; d < x->rank; d++) S *= x->dims[d];
    for (int i = 2; i <= 4; i++)
        if (kiln_numel(kiln_input(ctx, i)) != C)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %d has %lld elements, expected C = %lld", i,
                             (long long)kiln_numel(kiln_input(ctx, i)), (long long)C);
    kiln_tensor *dx = kiln_output(ctx, 0), *ds = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL,
                *db = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    bng_job j = {g->data, x->data, kiln_input(ctx, 2)->data, kiln_input(ctx, 3)->data, kiln_input(ctx, 4)->data,
                 dx ? dx->data : NULL, ds ? ds->data : NULL, db ? db->data : NULL, N, C, S,
                 kiln_attr_float(ctx->node, "epsilon", 1e-5f), g->dtype};
    kiln_parallel_for(ctx, C, gk_grain(N * S * 4), bng_range, &j);
    return KILN_OK;
}

/* ---------------------------------------------------------------- InstanceNormGrad(dY, X, scale) -> dX, dScale, dB */

typedef struct {
    const void *g, *x, *s;
    void *dx;
    double *row_s, *row_b; /* per (image, channel): sum of g xhat, sum of g */
    int64_t C, D;
    double eps;
    int dt;
} ing_job;

static void ing_rows(void *arg, int64_t b, int64_t e) {
    const ing_job *j = arg;
    int dt = j->dt;
    int64_t D = j->D;
    for (int64_t r = b; r < e; r++) {
        int64_t o = r * D;
        double mu = 0, var = 0, sc = gk_ld(j->s, r % j->C, dt);
        for (int64_t k = 0; k < D; k++) mu += gk_ld(j->x, o + k, dt);
        mu /= (double)(D ? D : 1);
        for (int64_t k = 0; k < D; k++) {
            double c = gk_ld(j->x, o + k, dt) - mu;
            var += c * c;
        }
        double rs = 1.0 / sqrt(var / (double)(D ? D : 1) + j->eps), sg = 0, sgx = 0;
        for (int64_t k = 0; k < D; k++) {
            double gv = gk_ld(j->g, o + k, dt);
            sg += gv;
            sgx += gv * (gk_ld(j->x, o + k, dt) - mu) * rs;
        }
        j->row_s[r] = sgx;
        j->row_b[r] = sg;
        if (!j->dx) continue;
        /* the layer-norm formula with the scale constant over the row */
        double m1 = sg / (double)D, m2 = sgx / (double)D;
        for (int64_t k = 0; k < D; k++) {
            double xh = (gk_ld(j->x, o + k, dt) - mu) * rs;
            gk_st(j->dx, o + k, dt, sc * rs * (gk_ld(j->g, o + k, dt) - m1 - xh * m2));
        }
    }
}

static kiln_status ing_compute(kiln_ctx *ctx) {
    kiln_tensor *g = kiln_input(ctx, 0), *x = kiln_input(ctx, 1), *s = kiln_input(ctx, 2);
    if (!gk_same_shape(g, x)) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the gradient and X differ in shape");
    if (x->rank < 3) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has rank %d, expected >= 3", x->rank);
    int64_t N = x->dims[0], C = x->dims[1], D = 1;
    for (int d = 2; d < x->rank; d++) D *= x->dims[d];
    if (kiln_numel(s) != C)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scale has %lld elements, expected C = %lld",
                         (long long)kiln_numel(s), (long long)C);
    double *rows = malloc(sizeof(double) * (size_t)(2 * N * C + 1));
    if (!rows) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_tensor *dx = kiln_output(ctx, 0), *ds = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL,
                *db = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    ing_job j = {g->data, x->data, s->data, dx ? dx->data : NULL, rows, rows + N * C, C, D,
                 kiln_attr_float(ctx->node, "epsilon", 1e-5f), g->dtype};
    kiln_parallel_for(ctx, N * C, gk_grain(D * 4), ing_rows, &j);
    for (int64_t c = 0; c < C; c++) {
        double as = 0, ab = 0;
        for (int64_t n = 0; n < N; n++) {
            as += j.row_s[n * C + c];
            ab += j.row_b[n * C + c];
        }
        if (ds) gk_st(ds->data, c, g->dtype, as);
        if (db) gk_st(db->data, c, g->dtype, ab);
    }
    free(rows);
    return KILN_OK;
}

const kiln_op kiln_ops_grad_nn[] = {
    {"kiln", "InstanceNormGrad", 1, 0, NULL, lng_infer, ing_compute, NULL},
    {"kiln", "MatMulGrad", 1, 0, NULL, mmg_infer, mmg_compute, NULL},
    {"kiln", "SoftmaxGrad", 1, 0, NULL, smg_infer, smg_compute, NULL},
    {"kiln", "LayerNormGrad", 1, 0, NULL, lng_infer, lng_compute, NULL},
    {"kiln", "BatchNormGrad", 1, 0, NULL, bng_infer, bng_compute, NULL},
    {0}};
