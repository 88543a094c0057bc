/* MatMul (numpy.matmul semantics), MatMulInteger, com.microsoft FusedMatMul and kiln:MatMulBias
 * (MatMul + a bias over the last axis, which the optimizer makes of MatMul + Add when the left
 * operand has batch dimensions, so that Gemm cannot take it); the family table also lists Gemm
 * (gemm.c). Float products go to BLAS: a 2-D right operand folds the left
 * operand's batch dimensions into M (one large product); otherwise the batch is a list of
 * products with broadcast offsets. float16/bfloat16 compute in float32. */
#include "gemm_util.h"
#include "gemm_bf16.h"
#include "matmul_plan.h"
#include "qgemm.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- shape planning ---- */

static int64_t bcast_dim(int64_t a, int64_t b, int *bad) {
    if (a == b) return a;
    if (a == 1) return b;
    if (b == 1) return a;
    if (a < 0 && b < 0) return KILN_DIM_UNKNOWN;
    if (a < 0) return b; /* unknown vs n>1: must be n (or 1) */
    if (b < 0) return a;
    *bad = 1;
    return a;
}

kiln_status kmm_plan(kiln_ctx *ctx, const kiln_tensor *A, const kiln_tensor *B, int trans_a,
                     int trans_b, kmm_plan_t *p) {
    char sa[96], sb[96];
    memset(p, 0, sizeof *p);
    if (A->rank == 0 || B->rank == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input %s is a scalar; MatMul needs tensors of rank >= 1",
                         A->rank == 0 ? "A" : "B");
    int ra = A->rank, rb = B->rank;
    p->a_vec = ra == 1;
    p->b_vec = rb == 1;
    /* 1-D operands are promoted: A [K] -> [1,K], B [K] -> [K,1] (the added dim is dropped later) */
    int64_t am = p->a_vec ? 1 : A->dims[ra - 2], ak = A->dims[ra - 1];
    int64_t bk = p->b_vec ? B->dims[0] : B->dims[rb - 2], bn = p->b_vec ? 1 : B->dims[rb - 1];
    if (trans_a && !p->a_vec) { int64_t t = am; am = ak; ak = t; }
    if (trans_b && !p->b_vec) { int64_t t = bk; bk = bn; bn = t; }
    if (ak >= 0 && bk >= 0 && ak != bk)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "A is %s, B is %s: inner dimensions %lld and %lld differ",
                         kgemm_dims_str(ra, A->dims, sa, sizeof sa),
                         kgemm_dims_str(rb, B->dims, sb, sizeof sb), (long long)ak, (long long)bk);
    p->M = am;
    p->N = bn;
    p->K = ak >= 0 ? ak : bk;
    int nba = ra > 2 ? ra - 2 : 0, nbb = rb > 2 ? rb - 2 : 0;
    int nb = nba > nbb ? nba : nbb;
    if (nb + 2 > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "rank too large");
    p->nb = nb;
    p->nba = nba;
    p->nbb = nbb;
    int bad = 0;
    for (int i = 0; i < nb; i++) {
        int ia = i - (nb - nba), ib = i - (nb - nbb);
        int64_t da = ia >= 0 ? A->dims[ia] : 1, db = ib >= 0 ? B->dims[ib] : 1;
        p->bdims[i] = bcast_dim(da, db, &bad);
        if (bad)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "A is %s, B is %s: batch dimensions %lld and %lld cannot be broadcast",
                             kgemm_dims_str(ra, A->dims, sa, sizeof sa),
                             kgemm_dims_str(rb, B->dims, sb, sizeof sb), (long long)da,
                             (long long)db);
    }
    int r = 0;
    for (int i = 0; i < nb; i++) p->out_dims[r++] = p->bdims[i];
    if (!p->a_vec) p->out_dims[r++] = p->M;
    if (!p->b_vec) p->out_dims[r++] = p->N;
    p->out_rank = r;
    p->count = 1;
    p->a_batch = 1;
    p->b_batch = 1;
    for (int i = 0; i < nb; i++) p->count *= p->bdims[i];
    for (int i = 0; i < nba; i++) p->a_batch *= A->dims[i];
    for (int i = 0; i < nbb; i++) p->b_batch *= B->dims[i];
    return KILN_OK;
}

/* Offsets of every product's operands, in elements of whole matrices (multiply by the matrix
 * size). The caller frees *offs (3 * count entries: A, B, C). */
kiln_status kmm_batch_offsets(kiln_ctx *ctx, const kiln_tensor *A, const kiln_tensor *B,
                              const kmm_plan_t *p, int64_t **offs) {
    int64_t n = p->count;
    int64_t *o = malloc(sizeof(int64_t) * 3 * (size_t)(n > 0 ? n : 1));
    if (!o) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for batch offsets");
    int64_t sa[KILN_MAX_RANK], sb[KILN_MAX_RANK];
    int64_t s = 1;
    for (int i = p->nb - 1; i >= 0; i--) {
        int ia = i - (p->nb - p->nba);
        int64_t d = ia >= 0 ? A->dims[ia] : 1;
        sa[i] = d == 1 ? 0 : s;
        s *= d;
    }
    s = 1;
    for (int i = p->nb - 1; i >= 0; i--) {
        int ib = i - (p->nb - p->nbb);
        int64_t d = ib >= 0 ? B->dims[ib] : 1;
        sb[i] = d == 1 ? 0 : s;
        s *= d;
    }
    int64_t idx[KILN_MAX_RANK] = {0};
    int64_t ao = 0, bo = 0;
    for (int64_t c = 0; c < n; c++) {
        o[c] = ao;
        o[n + c] = bo;
        o[2 * n + c] = c;
        for (int i = p->nb - 1; i >= 0; i--) { /* odometer step */
            idx[i]++;
            ao += sa[i];
            bo += sb[i];
            if (idx[i] < p->bdims[i]) break;
            ao -= sa[i] * idx[i];
            bo -= sb[i] * idx[i];
            idx[i] = 0;
        }
    }
    *offs = o;
    return KILN_OK;
}

/* ---- float products (float32 / float64 buffers) ---- */

kiln_status kmm_run_float(kiln_ctx *ctx, int dtype, const kiln_tensor *At, const kiln_tensor *Bt,
                          const kmm_plan_t *p, int ta, int tb, double alpha, const void *A,
                          const void *B, void *C) {
    int64_t M = p->M, N = p->N, K = p->K;
    int64_t lda = (ta && !p->a_vec) ? M : K, ldb = (tb && !p->b_vec) ? K : N;
    if (p->count == 0 || M == 0 || N == 0) return KILN_OK;
    if (p->b_batch == 1 && !ta && p->count == p->a_batch) {
        /* B is one matrix shared by every batch: stack A's rows into one tall product */
        if (dtype == KILN_DTYPE_DOUBLE)
            kgemm_f64(ctx, 0, tb, M * p->count, N, K, alpha, A, lda, B, ldb, 0.0, C, N);
        else
            kgemm_f32(ctx, 0, tb, M * p->count, N, K, (float)alpha, A, lda, B, ldb, 0.0f, C, N);
        return KILN_OK;
    }
    int64_t *offs;
    KILN_TRY(kmm_batch_offsets(ctx, At, Bt, p, &offs));
    int64_t n = p->count;
    for (int64_t c = 0; c < n; c++) {
        offs[c] *= M * K;
        offs[n + c] *= K * N;
        offs[2 * n + c] *= M * N;
    }
    kgemm_batch b = {dtype, ta, tb, M, N, K, lda, ldb, N, alpha, 0.0, A, B, C,
                     n, offs, offs + n, offs + 2 * n};
    kgemm_batched(ctx, &b);
    free(offs);
    return KILN_OK;
}

/* kmm_run_float's float32 products in bfloat16 (a session with cpu_bf16) */
kiln_status kmm_run_bf16(kiln_ctx *ctx, const kiln_tensor *At, const kiln_tensor *Bt,
                         const kmm_plan_t *p, int ta, int tb, double alpha, const float *A,
                         const float *B, float *C) {
    int64_t M = p->M, N = p->N, K = p->K;
    int64_t lda = (ta && !p->a_vec) ? M : K, ldb = (tb && !p->b_vec) ? K : N;
    if (p->count == 0 || M == 0 || N == 0) return KILN_OK;
    if (p->b_batch == 1 && !ta && p->count == p->a_batch) {
        kbf16_src a = {NULL, 0, A, 0, lda}, b = {NULL, 0, B, tb, ldb};
        return kbf16_gemm(ctx, &a, &b, M * p->count, N, K, (float)alpha, 0.0f, C, N);
    }
    int64_t *offs;
    KILN_TRY(kmm_batch_offsets(ctx, At, Bt, p, &offs));
    int64_t n = p->count;
    for (int64_t c = 0; c < n; c++) {
        offs[c] *= M * K;
        offs[n + c] *= K * N;
        offs[2 * n + c] *= M * N;
    }
    kgemm_batch b = {KILN_DTYPE_FLOAT, ta, tb, M, N, K, lda, ldb, N, alpha, 0.0, A, B, C,
                     n, offs, offs + n, offs + 2 * n};
    kiln_status st = kbf16_batched(ctx, &b);
    free(offs);
    return st;
}

/* ---- MatMul ---- */

typedef struct mm_state {
    const void *b_src; /* constant B as seen at init */
    float *b_f32;      /* half-precision B converted once to float32, or NULL */
    float *b_packed;   /* 2-D B packed for the packed product, or NULL */
    uint16_t *b_bf16;  /* float32 2-D B rounded and packed for the bfloat16 product, or NULL */
} mm_state;

static int mm_dtype_ok(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || kcvt_is_half(dt) ||
           kgemm_int_supported(dt);
}

static kiln_status mm_inputs(kiln_ctx *ctx, kiln_tensor **A, kiln_tensor **B) {
    KILN_TRY(kiln_need_input(ctx, 0, A));
    KILN_TRY(kiln_need_input(ctx, 1, B));
    if (!mm_dtype_ok((*A)->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d for input A",
                         (*A)->dtype);
    if ((*B)->dtype != (*A)->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "inputs A and B have different element types (%d and %d)", (*A)->dtype,
                         (*B)->dtype);
    return KILN_OK;
}

/* A constant float32 weight of a bfloat16 session is kept only in its bfloat16 packing. */
kiln_status kmm_pack_b_bf16(kiln_ctx *ctx, int tb, const void **src, uint16_t **dst) {
    const kiln_tensor *B = kiln_input(ctx, 1);
    int64_t K = B->dims[tb ? 1 : 0], N = B->dims[tb ? 0 : 1], n = kbf16_packed_b_size(K, N);
    if (!(*dst = kbf16_alloc(n)))
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing B as bfloat16");
    kbf16_pack_b(tb, K, N, B->data, B->dims[1], *dst);
    *src = B->data;
    kiln_input_packed(ctx, 1, sizeof(uint16_t) * (size_t)n, src);
    return KILN_OK;
}

static kiln_status matmul_init(kiln_ctx *ctx) {
    kiln_tensor *B = kiln_input(ctx, 1);
    if (!B || !B->data || !kiln_shape_concrete(B)) return KILN_OK;
    if (B->dtype == KILN_DTYPE_FLOAT && B->rank == 2 && kbf16_on(ctx)) {
        mm_state *s = calloc(1, sizeof *s);
        if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory preparing B");
        ctx->state = s;
        return kmm_pack_b_bf16(ctx, 0, &s->b_src, &s->b_bf16);
    }
    int half = kcvt_is_half(B->dtype);
    int pack = (half || B->dtype == KILN_DTYPE_FLOAT) && B->rank == 2 && kgemm_packed_available();
    if (!half && !pack) return KILN_OK;
    mm_state *s = calloc(1, sizeof *s);
    int64_t n = kiln_numel(B);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory preparing B");
    s->b_src = B->data;
    ctx->state = s;
    if (half) {
        if (!(s->b_f32 = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1))))
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory converting B");
        kcvt_to_f32(NULL, B->dtype, B->data, s->b_f32, n);
    }
    if (pack) {
        int64_t K = B->dims[0], N = B->dims[1];
        if (!(s->b_packed = kgemm_alloc_packed(kgemm_avx512_packed_b_size(K, N))))
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing B");
        kgemm_avx512_pack_b(0, K, N, half ? s->b_f32 : B->data, N, s->b_packed);
    }
    kiln_input_packed(ctx, 1, (pack ? sizeof(float) * (size_t)kgemm_avx512_packed_b_size(B->dims[0], B->dims[1]) : 0) +
                                  (half ? sizeof(float) * (size_t)n : 0), &s->b_src);
    return KILN_OK;
}

static void matmul_fini(void *state) {
    mm_state *s = state;
    if (!s) return;
    free(s->b_f32);
    free(s->b_packed);
    free(s->b_bf16);
    free(s);
}

static kiln_status matmul_infer(kiln_ctx *ctx) {
    kiln_tensor *A, *B;
    KILN_TRY(mm_inputs(ctx, &A, &B));
    if (A->rank < 0 || B->rank < 0) return kiln_set_output_unknown(ctx, 0, A->dtype);
    kmm_plan_t p;
    KILN_TRY(kmm_plan(ctx, A, B, 0, 0, &p));
    return kiln_set_output(ctx, 0, A->dtype, p.out_rank, p.out_dims);
}

/* Half-precision products: convert to float32, multiply, convert back. */
kiln_status kmm_run_half(kiln_ctx *ctx, int dtype, const kiln_tensor *At, const kiln_tensor *Bt,
                         const kmm_plan_t *p, int ta, int tb, double alpha, const float *b_cached,
                         void *out) {
    int64_t na = kiln_numel(At), nb = kiln_numel(Bt), nc = kiln_numel(kiln_output(ctx, 0));
    float *a = malloc(sizeof(float) * (size_t)(na + (b_cached ? 0 : nb) + nc + 1));
    if (!a) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for float32 copies");
    float *b = b_cached ? (float *)b_cached : a + na, *c = a + na + (b_cached ? 0 : nb);
    kcvt_to_f32(ctx, dtype, At->data, a, na);
    if (!b_cached) kcvt_to_f32(ctx, dtype, Bt->data, b, nb);
    kiln_status st = kmm_run_float(ctx, KILN_DTYPE_FLOAT, At, Bt, p, ta, tb, alpha, a, b, c);
    if (st == KILN_OK) kcvt_from_f32(ctx, dtype, c, out, nc);
    free(a);
    return st;
}

static kiln_status mm_run_int(kiln_ctx *ctx, const kiln_tensor *A, const kiln_tensor *B,
                              const kmm_plan_t *p, void *C) {
    if (p->count == 0 || p->M == 0 || p->N == 0) return KILN_OK;
    int64_t *offs;
    KILN_TRY(kmm_batch_offsets(ctx, A, B, p, &offs));
    size_t es = kiln_dtype_bytes(A->dtype, 1);
    int64_t n = p->count;
    for (int64_t c = 0; c < n; c++)
        kgemm_int(ctx, A->dtype, 0, 0, p->M, p->N, p->K,
                  (const char *)A->data + offs[c] * p->M * p->K * es, p->K,
                  (const char *)B->data + offs[n + c] * p->K * p->N * es, p->N,
                  (char *)C + c * p->M * p->N * es, p->N);
    free(offs);
    return KILN_OK;
}

static kiln_status matmul_compute(kiln_ctx *ctx) {
    kiln_tensor *A = kiln_input(ctx, 0), *B = kiln_input(ctx, 1), *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    kmm_plan_t p;
    KILN_TRY(kmm_plan(ctx, A, B, 0, 0, &p));
    int dt = A->dtype;
    const mm_state *s = ctx->state;
    if (s && s->b_src != B->data) s = NULL;
    if (s && s->b_bf16 && dt == KILN_DTYPE_FLOAT) {
        kbf16_src a = {NULL, 0, A->data, 0, p.K}, b = {s->b_bf16, 0, NULL, 0, 0};
        return kbf16_gemm(ctx, &a, &b, p.M * p.count, p.N, p.K, 1.0f, 0.0f, Y->data, p.N);
    }
    if (dt == KILN_DTYPE_FLOAT && kbf16_on(ctx))
        return kmm_run_bf16(ctx, A, B, &p, 0, 0, 1.0, A->data, B->data, Y->data);
    if (s && s->b_packed && p.count * p.M > 0 && p.N > 0 && p.K > 0) {
        /* constant 2-D B, packed at init: A's rows (all batches) times it */
        int64_t M = p.M * p.count;
        if (dt == KILN_DTYPE_FLOAT) {
            kgemm_f32_bpacked(ctx, 0, M, p.N, p.K, 1.0f, A->data, p.K, s->b_packed, 0.0f, Y->data, p.N);
            return KILN_OK;
        }
        int64_t na = kiln_numel(A), ny = kiln_numel(Y);
        float *buf = malloc(sizeof(float) * (size_t)(na + ny + 1));
        if (!buf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for float32 copies");
        kcvt_to_f32(ctx, dt, A->data, buf, na);
        kgemm_f32_bpacked(ctx, 0, M, p.N, p.K, 1.0f, buf, p.K, s->b_packed, 0.0f, buf + na, p.N);
        kcvt_from_f32(ctx, dt, buf + na, Y->data, ny);
        free(buf);
        return KILN_OK;
    }
    if (dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE)
        return kmm_run_float(ctx, dt, A, B, &p, 0, 0, 1.0, A->data, B->data, Y->data);
    if (kcvt_is_half(dt)) return kmm_run_half(ctx, dt, A, B, &p, 0, 0, 1.0, s ? s->b_f32 : NULL, Y->data);
    return mm_run_int(ctx, A, B, &p, Y->data);
}

/* ---- kiln:MatMulBias: Y = MatMul(A, B) + bias, bias of N elements ---- */

static kiln_status mmb_infer(kiln_ctx *ctx) {
    KILN_TRY(matmul_infer(ctx));
    kiln_tensor *bias, *Y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 2, &bias));
    if (bias->dtype != kiln_input(ctx, 0)->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias has element type %d, A %d", bias->dtype,
                         kiln_input(ctx, 0)->dtype);
    if (bias->rank != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias has rank %d, expected 1", bias->rank);
    int64_t n = Y && Y->rank > 0 ? Y->dims[Y->rank - 1] : -1;
    if (Y && Y->rank == 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the product is a scalar; bias needs a last axis");
    if (n >= 0 && bias->dims[0] >= 0 && bias->dims[0] != n)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias has %lld elements, the product's last axis %lld",
                         (long long)bias->dims[0], (long long)n);
    return KILN_OK;
}

typedef struct {
    void *y;
    const void *bias;
    int64_t n;
    int dtype;
} mmb_rows;

static void mmb_add_rows(void *arg, int64_t r0, int64_t r1) {
    const mmb_rows *a = arg;
    if (a->dtype == KILN_DTYPE_DOUBLE) {
        const double *b = a->bias;
        for (int64_t r = r0; r < r1; r++) {
            double *y = (double *)a->y + r * a->n;
            for (int64_t j = 0; j < a->n; j++) y[j] += b[j];
        }
        return;
    }
    const float *b = a->bias;
    for (int64_t r = r0; r < r1; r++) {
        float *y = (float *)a->y + r * a->n;
        for (int64_t j = 0; j < a->n; j++) y[j] += b[j];
    }
}

/* Rows [r0, r0 + rows) x columns [c0, c0 + cols) of Y set to the bias (a tile's C before its
 * product adds into it) */
static void mmb_init_tile(void *arg, int64_t r0, int64_t rows, int64_t c0, int64_t cols) {
    const mmb_rows *a = arg;
    for (int64_t r = r0; r < r0 + rows; r++)
        memcpy((float *)a->y + r * a->n + c0, (const float *)a->bias + c0, sizeof(float) * (size_t)cols);
}

static kiln_status mmb_compute(kiln_ctx *ctx) {
    kiln_tensor *A = kiln_input(ctx, 0), *B = kiln_input(ctx, 1);
    kiln_tensor *bias = kiln_input(ctx, 2), *Y = kiln_output(ctx, 0);
    const mm_state *s = ctx->state;
    if (Y && bias && A && B && Y->dtype == KILN_DTYPE_FLOAT && s && s->b_packed &&
        s->b_src == B->data && bias->rank == 1) {
        kmm_plan_t p;
        KILN_TRY(kmm_plan(ctx, A, B, 0, 0, &p));
        if (p.count * p.M > 0 && p.N > 0 && p.K > 0 && bias->dims[0] == p.N) {
            /* the bias goes into each tile of the product while that tile is in its thread's
             * cache, instead of a pass of its own over Y after the product */
            mmb_rows a = {Y->data, bias->data, p.N, KILN_DTYPE_FLOAT};
            kgemm_f32_bpacked_init(ctx, 0, p.M * p.count, p.N, p.K, 1.0f, A->data, p.K,
                                   s->b_packed, 1.0f, Y->data, p.N, mmb_init_tile, &a);
            return KILN_OK;
        }
    }
    KILN_TRY(matmul_compute(ctx));
    if (!Y || !bias) return KILN_OK;
    int64_t n = bias->dims[0], total = kiln_numel(Y);
    if (total == 0 || n == 0) return KILN_OK;
    int dt = Y->dtype;
    mmb_rows a = {Y->data, bias->data, n, dt};
    if (dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE) {
        kiln_parallel_for(ctx, total / n, 1 + 16384 / n, mmb_add_rows, &a);
        return KILN_OK;
    }
    /* float16 / bfloat16: in float32, rounded once, as MatMul then Add would */
    float *buf = malloc(sizeof(float) * (size_t)(total + n));
    if (!buf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for float32 copies");
    kcvt_to_f32(ctx, dt, Y->data, buf, total);
    kcvt_to_f32(ctx, dt, bias->data, buf + total, n);
    a = (mmb_rows){buf, buf + total, n, KILN_DTYPE_FLOAT};
    kiln_parallel_for(ctx, total / n, 1 + 16384 / n, mmb_add_rows, &a);
    kcvt_from_f32(ctx, dt, buf, Y->data, total);
    free(buf);
    return KILN_OK;
}

/* ---- MatMulInteger ---- */

static kiln_status mmi_zero_point(kiln_ctx *ctx, int idx, const kiln_tensor *x, int64_t per,
                                  int64_t batch, const char *what) {
    kiln_tensor *z = kiln_input(ctx, idx);
    if (!z) return KILN_OK;
    if (z->dtype != x->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "%s has element type %d but its input has %d", what, z->dtype, x->dtype);
    int64_t n = kiln_numel(z);
    if (n < 0 || per < 0) return KILN_OK;
    if (n != 1 && n != per && n != per * batch)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "%s has %lld elements; expected 1 (per tensor) or %lld (per %s)", what,
                         (long long)n, (long long)per, idx == 2 ? "row" : "column");
    return KILN_OK;
}

static kiln_status mmi_infer(kiln_ctx *ctx) {
    kiln_tensor *A, *B;
    KILN_TRY(kiln_need_input(ctx, 0, &A));
    KILN_TRY(kiln_need_input(ctx, 1, &B));
    for (int i = 0; i < 2; i++) {
        int dt = (i ? B : A)->dtype;
        if (dt != KILN_DTYPE_INT8 && dt != KILN_DTYPE_UINT8)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input %s has element type %d; expected int8 or uint8", i ? "B" : "A",
                             dt);
    }
    if (A->rank < 0 || B->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_INT32);
    kmm_plan_t p;
    KILN_TRY(kmm_plan(ctx, A, B, 0, 0, &p));
    KILN_TRY(mmi_zero_point(ctx, 2, A, p.M, p.a_batch, "a_zero_point"));
    KILN_TRY(mmi_zero_point(ctx, 3, B, p.N, p.b_batch, "b_zero_point"));
    return kiln_set_output(ctx, 0, KILN_DTYPE_INT32, p.out_rank, p.out_dims);
}

/* On the qgemm.h kernels; a constant 2-D B is packed once at init. */
typedef struct mmi_state {
    const void *b_src;
    kqg_b b;
} mmi_state;

static kiln_status mmi_init(kiln_ctx *ctx) {
    const kiln_tensor *B = kiln_input(ctx, 1);
    if (!B || !B->data || B->rank != 2 || !kiln_shape_concrete(B) ||
        (B->dtype != KILN_DTYPE_INT8 && B->dtype != KILN_DTYPE_UINT8))
        return KILN_OK;
    mmi_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing B");
    ctx->state = s;
    KILN_TRY(kqg_b_init(ctx, &s->b, B->dims[0], B->dims[1]));
    kqg_pack_b(ctx, &s->b, B->dtype, B->data, B->dims[1], 0);
    s->b_src = B->data;
    return KILN_OK;
}

static void mmi_fini(void *state) {
    mmi_state *s = state;
    if (!s) return;
    kqg_b_free(&s->b);
    free(s);
}

static int32_t mmi_q8(const kiln_tensor *t, int64_t i) {
    return t->dtype == KILN_DTYPE_INT8 ? ((const int8_t *)t->data)[i] : ((const uint8_t *)t->data)[i];
}

/* Zero point z (1 value, `per` values, or `per` for each of the operand's matrices) of matrix idx. */
static void mmi_zp(const kiln_tensor *z, int64_t per, int64_t idx, int32_t *out, int *vec) {
    int64_t n = z ? kiln_numel(z) : 0;
    *vec = n > 1;
    if (n == 0) out[0] = 0;
    else if (n == 1) out[0] = mmi_q8(z, 0);
    else
        for (int64_t i = 0; i < per; i++) out[i] = mmi_q8(z, n == per ? i : idx * per + i);
}

typedef struct mmi_epi {
    int32_t *y; /* the product's [M, N] output */
    int64_t N;
} mmi_epi;

static void mmi_store(void *arg, int64_t m0, int64_t n0, int64_t mc, int64_t nc, const int32_t *acc,
                      int64_t ld) {
    const mmi_epi *e = arg;
    for (int64_t i = 0; i < mc; i++)
        memcpy(e->y + (m0 + i) * e->N + n0, acc + i * ld, sizeof(int32_t) * (size_t)nc);
}

static kiln_status mmi_compute(kiln_ctx *ctx) {
    kiln_tensor *A = kiln_input(ctx, 0), *B = kiln_input(ctx, 1), *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    kmm_plan_t p;
    KILN_TRY(kmm_plan(ctx, A, B, 0, 0, &p));
    if (kiln_numel(Y) == 0) return KILN_OK;
    const kiln_tensor *za_t = kiln_input(ctx, 2), *zb_t = kiln_input(ctx, 3);
    const mmi_state *st = ctx->state;
    int b_packed = st && st->b_src == B->data && B->rank == 2;
    int64_t M = p.M, N = p.N, K = p.K, n = p.count;
    /* B one matrix, A's matrices each once in order, zero points not per matrix: one product */
    int fold = p.b_batch == 1 && p.a_batch == n && (!za_t || kiln_numel(za_t) <= M);
    int64_t rows = fold ? n * M : M, nprod = fold ? 1 : n;
    int64_t *offs = NULL;
    if (!fold) KILN_TRY(kmm_batch_offsets(ctx, A, B, &p, &offs));
    kqg_a a;
    kqg_b b;
    memset(&b, 0, sizeof b);
    int32_t *za = malloc(sizeof(int32_t) * (size_t)(rows + 1)), *zb = malloc(sizeof(int32_t) * (size_t)(N + 1));
    kiln_status s = kqg_a_init(ctx, &a, rows, K);
    if (s == KILN_OK && !b_packed) s = kqg_b_init(ctx, &b, K, N);
    if (s == KILN_OK && (!za || !zb)) s = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for MatMulInteger");
    int64_t last_b = -1;
    for (int64_t c = 0; s == KILN_OK && c < nprod; c++) {
        int64_t ai = fold ? 0 : offs[c], bi = fold ? 0 : offs[n + c], ci = fold ? 0 : offs[2 * n + c];
        kqg_pack_a(ctx, &a, A->dtype, (const uint8_t *)A->data + ai * M * K, K);
        if (!b_packed && bi != last_b) {
            kqg_pack_b(ctx, &b, B->dtype, (const uint8_t *)B->data + bi * K * N, N, 0);
            last_b = bi;
        }
        int za_vec, zb_vec;
        mmi_zp(za_t, M, ai, za, &za_vec);
        for (int64_t r = M; za_vec && r < rows; r++) za[r] = za[r % M]; /* folded: every matrix's rows */
        mmi_zp(zb_t, N, bi, zb, &zb_vec);
        mmi_epi e = {(int32_t *)Y->data + ci * M * N, N};
        kqg_gemm(ctx, &a, b_packed ? &st->b : &b, za, za_vec, zb, zb_vec, mmi_store, &e);
    }
    kqg_a_free(&a);
    kqg_b_free(&b);
    free(za);
    free(zb);
    free(offs);
    return s;
}

/* ---- com.microsoft FusedMatMul: alpha * op(A) op(B) ---- */

/* transBatch moves the leading batch dimension next to the matrix: [b0, d1..dn-1, dn] is read
 * as [d1..dn-1, b0, dn]; the permuted copy lets the ordinary product run. */
static kiln_status fmm_view(kiln_ctx *ctx, const kiln_tensor *x, int trans_batch, kiln_tensor *v,
                            void **tmp) {
    *v = *x;
    *tmp = NULL;
    if (!trans_batch || x->rank < 3) return KILN_OK;
    int r = x->rank;
    for (int i = 0; i < r - 2; i++) v->dims[i] = x->dims[i + 1];
    v->dims[r - 2] = x->dims[0];
    v->dims[r - 1] = x->dims[r - 1];
    if (!x->data) return KILN_OK;
    size_t es = kiln_dtype_bytes(x->dtype, 1);
    int64_t b0 = x->dims[0], mid = 1, last = x->dims[r - 1];
    for (int i = 1; i < r - 1; i++) mid *= x->dims[i];
    char *o = malloc(es * (size_t)(b0 * mid * last + 1));
    if (!o) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int64_t m = 0; m < mid; m++)
        for (int64_t b = 0; b < b0; b++)
            memcpy(o + ((m * b0 + b) * last) * es, (const char *)x->data + ((b * mid + m) * last) * es,
                   es * last);
    v->data = o;
    *tmp = o;
    return KILN_OK;
}

static kiln_status fmm_common(kiln_ctx *ctx, kmm_plan_t *p, kiln_tensor *va, kiln_tensor *vb,
                              void **ta, void **tb) {
    kiln_tensor *A, *B;
    KILN_TRY(mm_inputs(ctx, &A, &B));
    if (A->dtype != KILN_DTYPE_FLOAT && A->dtype != KILN_DTYPE_DOUBLE && !kcvt_is_half(A->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d", A->dtype);
    *ta = *tb = NULL;
    if (A->rank < 0 || B->rank < 0) { *va = *A; return KILN_OK; }
    KILN_TRY(fmm_view(ctx, A, (int)kiln_attr_int(ctx->node, "transBatchA", 0), va, ta));
    kiln_status st = fmm_view(ctx, B, (int)kiln_attr_int(ctx->node, "transBatchB", 0), vb, tb);
    if (st == KILN_OK)
        st = kmm_plan(ctx, va, vb, (int)kiln_attr_int(ctx->node, "transA", 0),
                      (int)kiln_attr_int(ctx->node, "transB", 0), p);
    if (st != KILN_OK) { free(*ta); free(*tb); *ta = *tb = NULL; }
    return st;
}

static kiln_status fmm_infer(kiln_ctx *ctx) {
    kmm_plan_t p;
    kiln_tensor va, vb;
    void *ta, *tb;
    /* shape only: views without data are not copied */
    kiln_tensor *A, *B;
    KILN_TRY(mm_inputs(ctx, &A, &B));
    if (A->rank < 0 || B->rank < 0) return kiln_set_output_unknown(ctx, 0, A->dtype);
    kiln_tensor a = *A, b = *B;
    a.data = b.data = NULL;
    KILN_TRY(fmm_view(ctx, &a, (int)kiln_attr_int(ctx->node, "transBatchA", 0), &va, &ta));
    KILN_TRY(fmm_view(ctx, &b, (int)kiln_attr_int(ctx->node, "transBatchB", 0), &vb, &tb));
    KILN_TRY(kmm_plan(ctx, &va, &vb, (int)kiln_attr_int(ctx->node, "transA", 0),
                      (int)kiln_attr_int(ctx->node, "transB", 0), &p));
    return kiln_set_output(ctx, 0, A->dtype, p.out_rank, p.out_dims);
}

static kiln_status fmm_compute(kiln_ctx *ctx) {
    kiln_tensor *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    kmm_plan_t p;
    kiln_tensor va, vb;
    void *ta = NULL, *tb = NULL;
    KILN_TRY(fmm_common(ctx, &p, &va, &vb, &ta, &tb));
    int tra = (int)kiln_attr_int(ctx->node, "transA", 0) && !p.a_vec;
    int trb = (int)kiln_attr_int(ctx->node, "transB", 0) && !p.b_vec;
    double alpha = kiln_attr_float(ctx->node, "alpha", 1.0f);
    kiln_status st;
    if (va.dtype == KILN_DTYPE_FLOAT && kbf16_on(ctx))
        st = kmm_run_bf16(ctx, &va, &vb, &p, tra, trb, alpha, va.data, vb.data, Y->data);
    else if (kcvt_is_half(va.dtype))
        st = kmm_run_half(ctx, va.dtype, &va, &vb, &p, tra, trb, alpha, NULL, Y->data);
    else
        st = kmm_run_float(ctx, va.dtype, &va, &vb, &p, tra, trb, alpha, va.data, vb.data, Y->data);
    free(ta);
    free(tb);
    return st;
}

const kiln_op kiln_ops_matmul[] = {
    {"", "MatMul", 1, KILN_OP_PREPACK, matmul_init, matmul_infer, matmul_compute, matmul_fini},
    {"", "MatMulInteger", 10, KILN_OP_PREPACK, mmi_init, mmi_infer, mmi_compute, mmi_fini},
    {"", "Gemm", 1, KILN_OP_PREPACK, kgemm_op_init, kgemm_op_infer, kgemm_op_compute, kgemm_op_fini},
    {"com.microsoft", "FusedMatMul", 1, 0, NULL, fmm_infer, fmm_compute, NULL},
    {"kiln", "MatMulBias", 1, KILN_OP_PREPACK, matmul_init, mmb_infer, mmb_compute, matmul_fini},
    {0},
};
