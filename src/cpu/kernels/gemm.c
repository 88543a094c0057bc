/* Gemm: Y = alpha * op(A) op(B) + beta * C, with C broadcast to [M, N] (optional from opset 11).
 * Float types use BLAS with Y pre-filled by beta*C; integer types use the integer product. */
#include "gemm_util.h"
#include "gemm_bf16.h"
#include <stdlib.h>
#include <string.h>

typedef struct gemm_state {
    const void *b_src; /* the constant B seen at init */
    float *b_f32;      /* half-precision B converted once, or NULL */
    float *b_packed;   /* B (as op(B)) packed for the packed product, or NULL */
    uint16_t *b_bf16;  /* float32 B (as op(B)) packed for the bfloat16 product, or NULL */
} gemm_state;

typedef struct gemm_dims {
    int ta, tb;
    int64_t M, N, K;
    float alpha, beta;
} gemm_dims;

static int gemm_dtype_ok(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || kcvt_is_half(dt) ||
           kgemm_int_supported(dt);
}

static kiln_status gemm_check(kiln_ctx *ctx, gemm_dims *g) {
    kiln_tensor *A, *B, *C = NULL;
    char sa[96], sb[96];
    KILN_TRY(kiln_need_input(ctx, 0, &A));
    KILN_TRY(kiln_need_input(ctx, 1, &B));
    if (ctx->opset < 11) KILN_TRY(kiln_need_input(ctx, 2, &C));
    else C = kiln_input(ctx, 2);
    if (!gemm_dtype_ok(A->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d for input A",
                         A->dtype);
    if (B->dtype != A->dtype || (C && C->dtype != A->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "inputs have different element types (A %d, B %d, C %d)", A->dtype,
                         B->dtype, C ? C->dtype : A->dtype);
    g->ta = (int)kiln_attr_int(ctx->node, "transA", 0) != 0;
    g->tb = (int)kiln_attr_int(ctx->node, "transB", 0) != 0;
    g->alpha = kiln_attr_float(ctx->node, "alpha", 1.0f);
    g->beta = kiln_attr_float(ctx->node, "beta", 1.0f);
    g->M = g->N = g->K = KILN_DIM_UNKNOWN;
    if (A->rank < 0 || B->rank < 0) return KILN_OK;
    if (A->rank != 2 || B->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s has rank %d, expected 2",
                         A->rank != 2 ? "A" : "B", A->rank != 2 ? A->rank : B->rank);
    g->M = A->dims[g->ta ? 1 : 0];
    g->K = A->dims[g->ta ? 0 : 1];
    int64_t kb = B->dims[g->tb ? 1 : 0];
    g->N = B->dims[g->tb ? 0 : 1];
    if (g->K >= 0 && kb >= 0 && g->K != kb)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "A is %s%s, B is %s%s: inner dimensions %lld and %lld differ",
                         kgemm_dims_str(2, A->dims, sa, sizeof sa), g->ta ? " (transposed)" : "",
                         kgemm_dims_str(2, B->dims, sb, sizeof sb), g->tb ? " (transposed)" : "",
                         (long long)g->K, (long long)kb);
    if (g->K < 0) g->K = kb;
    if (C && C->rank >= 0) {
        int ok = C->rank <= 2;
        int64_t want[2] = {g->M, g->N};
        for (int i = 0; ok && i < C->rank; i++) {
            int64_t d = C->dims[C->rank - 1 - i], w = want[1 - i];
            ok = d == 1 || d < 0 || w < 0 || d == w;
        }
        if (!ok)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input C of shape %s cannot be broadcast to [%lld,%lld]",
                             kgemm_dims_str(C->rank, C->dims, sa, sizeof sa), (long long)g->M,
                             (long long)g->N);
    }
    return KILN_OK;
}

kiln_status kgemm_op_init(kiln_ctx *ctx) {
    kiln_tensor *B = kiln_input(ctx, 1);
    if (!B || !B->data || !kiln_shape_concrete(B) || B->rank != 2) return KILN_OK;
    if (B->dtype == KILN_DTYPE_FLOAT && kbf16_on(ctx)) {
        gemm_state *s = calloc(1, sizeof *s);
        if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory preparing B");
        ctx->state = s;
        return kmm_pack_b_bf16(ctx, kiln_attr_int(ctx->node, "transB", 0) != 0, &s->b_src, &s->b_bf16);
    }
    int half = kcvt_is_half(B->dtype);
    int pack = (half || B->dtype == KILN_DTYPE_FLOAT) && kgemm_packed_available();
    if (!half && !pack) return KILN_OK;
    gemm_state *s = calloc(1, sizeof *s);
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
        int tb = kiln_attr_int(ctx->node, "transB", 0) != 0;
        int64_t K = B->dims[tb ? 1 : 0], N = B->dims[tb ? 0 : 1];
        if (!(s->b_packed = kgemm_alloc_packed(kgemm_avx512_packed_b_size(K, N))))
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory packing B");
        kgemm_avx512_pack_b(tb, K, N, half ? s->b_f32 : B->data, B->dims[1], s->b_packed);
        kiln_input_packed(ctx, 1, sizeof(float) * (size_t)kgemm_avx512_packed_b_size(K, N), &s->b_src);
    }
    if (half) kiln_input_packed(ctx, 1, sizeof(float) * (size_t)n, &s->b_src);
    return KILN_OK;
}

void kgemm_op_fini(void *state) {
    gemm_state *s = state;
    if (!s) return;
    free(s->b_f32);
    free(s->b_packed);
    free(s->b_bf16);
    free(s);
}

kiln_status kgemm_op_infer(kiln_ctx *ctx) {
    gemm_dims g;
    KILN_TRY(gemm_check(ctx, &g));
    kiln_tensor *A = kiln_input(ctx, 0);
    int64_t dims[2] = {g.M, g.N};
    if (A->rank < 0 || kiln_input(ctx, 1)->rank < 0)
        return kiln_set_output_unknown(ctx, 0, A->dtype);
    return kiln_set_output(ctx, 0, A->dtype, 2, dims);
}

/* Element (i, j) of C broadcast to [M, N]. */
static int64_t c_index(const kiln_tensor *C, int64_t i, int64_t j) {
    if (C->rank == 0) return 0;
    if (C->rank == 1) return C->dims[0] == 1 ? 0 : j;
    return (C->dims[0] == 1 ? 0 : i) * C->dims[1] + (C->dims[1] == 1 ? 0 : j);
}

typedef struct fill_job {
    const kiln_tensor *C;
    int dt;
    double beta;
    const void *c;
    void *y;
    int64_t N;
} fill_job;

/* Y[i0:i0+rows, j0:j0+cols] = beta * C broadcast: C is a scalar, a column, a row or a matrix. */
static void fill_tile(void *arg, int64_t i0, int64_t rows, int64_t j0, int64_t cols) {
    const fill_job *f = arg;
    const kiln_tensor *C = f->C;
    int64_t N = f->N;
    int per_col = C->rank >= 1 && C->dims[C->rank - 1] != 1;
    for (int64_t i = i0; i < i0 + rows; i++) {
        int64_t k = c_index(C, i, j0);
        if (f->dt == KILN_DTYPE_DOUBLE) {
            const double *c = (const double *)f->c + k;
            double *y = (double *)f->y + i * N + j0;
            for (int64_t j = 0; j < cols; j++) y[j] = f->beta * c[per_col ? j : 0];
        } else {
            const float *c = (const float *)f->c + k;
            float *y = (float *)f->y + i * N + j0, b = (float)f->beta;
            if (per_col && b == 1.0f) memcpy(y, c, sizeof(float) * (size_t)cols);
            else if (per_col)
                for (int64_t j = 0; j < cols; j++) y[j] = b * c[j];
            else
                for (int64_t j = 0; j < cols; j++) y[j] = b * c[0];
        }
    }
}

static void fill_rows(void *arg, int64_t i0, int64_t i1) {
    fill_tile(arg, i0, i1 - i0, 0, ((const fill_job *)arg)->N);
}

/* Y (float or double) = beta * C broadcast; returns 0 when there is nothing to add. Spread over
 * the threads: done on the calling thread alone, GPT-2's [1024, 3072] bias rows took a third of
 * its Gemm's time on 16 threads. */
static int fill_beta_c(kiln_ctx *ctx, const kiln_tensor *C, float beta, int dt, const void *cdata,
                       void *y, int64_t M, int64_t N) {
    if (!C || beta == 0.0f || kiln_numel(C) == 0) return 0;
    fill_job f = {C, dt, beta, cdata, y, N};
    kiln_parallel_for(ctx, M, kpar_grain(M, (double)M * N * 0.3), fill_rows, &f);
    return 1;
}

static kiln_status gemm_int(kiln_ctx *ctx, const gemm_dims *g, const kiln_tensor *A,
                            const kiln_tensor *B, const kiln_tensor *C, kiln_tensor *Y) {
    int dt = A->dtype;
    int64_t M = g->M, N = g->N, K = g->K;
    kgemm_int(ctx, dt, g->ta, g->tb, M, N, K, A->data, A->dims[1], B->data, B->dims[1], Y->data, N);
    int has_c = C && g->beta != 0.0f && kiln_numel(C) > 0;
    if (g->alpha == 1.0f && (!has_c || g->beta == 1.0f)) {
        if (!has_c) return KILN_OK;
        /* exact integer sum (wrapping like the product) */
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                int64_t k = c_index(C, i, j), o = i * N + j;
                switch (dt) {
                case KILN_DTYPE_INT32:
                    ((int32_t *)Y->data)[o] = (int32_t)((uint32_t)((int32_t *)Y->data)[o] +
                                                        (uint32_t)((const int32_t *)C->data)[k]);
                    break;
                case KILN_DTYPE_UINT32:
                    ((uint32_t *)Y->data)[o] += ((const uint32_t *)C->data)[k];
                    break;
                case KILN_DTYPE_INT64:
                    ((int64_t *)Y->data)[o] = (int64_t)((uint64_t)((int64_t *)Y->data)[o] +
                                                        (uint64_t)((const int64_t *)C->data)[k]);
                    break;
                default:
                    ((uint64_t *)Y->data)[o] += ((const uint64_t *)C->data)[k];
                    break;
                }
            }
        return KILN_OK;
    }
    /* scaled: through double, truncated back to the integer type */
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            int64_t o = i * N + j;
            double v = (double)g->alpha * kiln_load_f64(dt, Y->data, o);
            if (has_c) v += (double)g->beta * kiln_load_f64(dt, C->data, c_index(C, i, j));
            kiln_store_f64(dt, Y->data, o, v);
        }
    return KILN_OK;
}

kiln_status kgemm_op_compute(kiln_ctx *ctx) {
    gemm_dims g;
    KILN_TRY(gemm_check(ctx, &g));
    kiln_tensor *A = kiln_input(ctx, 0), *B = kiln_input(ctx, 1), *C = kiln_input(ctx, 2);
    kiln_tensor *Y = kiln_output(ctx, 0);
    if (!Y || g.M == 0 || g.N == 0) return KILN_OK;
    int dt = A->dtype;
    int64_t M = g.M, N = g.N, K = g.K, lda = A->dims[1], ldb = B->dims[1];
    if (kgemm_int_supported(dt)) return gemm_int(ctx, &g, A, B, C, Y);
    if (dt == KILN_DTYPE_DOUBLE) {
        int has_c = fill_beta_c(ctx, C, g.beta, dt, C ? C->data : NULL, Y->data, M, N);
        kgemm_f64(ctx, g.ta, g.tb, M, N, K, g.alpha, A->data, lda, B->data, ldb, has_c ? 1.0 : 0.0,
                  Y->data, N);
        return KILN_OK;
    }
    const gemm_state *s = ctx->state;
    if (s && s->b_src != B->data) s = NULL;
    const float *bpk = s && K > 0 ? s->b_packed : NULL;
    if (dt == KILN_DTYPE_FLOAT && ((s && s->b_bf16) || kbf16_on(ctx))) {
        int has_c = fill_beta_c(ctx, C, g.beta, dt, C ? C->data : NULL, Y->data, M, N);
        kbf16_src a = {NULL, 0, A->data, g.ta, lda}, b = {NULL, 0, B->data, g.tb, ldb};
        if (s && s->b_bf16) b = (kbf16_src){s->b_bf16, 0, NULL, 0, 0};
        return kbf16_gemm(ctx, &a, &b, M, N, K, g.alpha, has_c ? 1.0f : 0.0f, Y->data, N);
    }
    if (dt == KILN_DTYPE_FLOAT && bpk && C && g.beta != 0.0f && kiln_numel(C) > 0) {
        /* each tile of the product sets its own bias first, while it is in that core's cache */
        fill_job f = {C, dt, g.beta, C->data, Y->data, N};
        kgemm_f32_bpacked_init(ctx, g.ta, M, N, K, g.alpha, A->data, lda, bpk, 1.0f, Y->data, N,
                               fill_tile, &f);
        return KILN_OK;
    }
    if (dt == KILN_DTYPE_FLOAT) {
        int has_c = fill_beta_c(ctx, C, g.beta, dt, C ? C->data : NULL, Y->data, M, N);
        if (bpk)
            kgemm_f32_bpacked(ctx, g.ta, M, N, K, g.alpha, A->data, lda, bpk, has_c ? 1.0f : 0.0f,
                              Y->data, N);
        else
            kgemm_f32(ctx, g.ta, g.tb, M, N, K, g.alpha, A->data, lda, B->data, ldb,
                      has_c ? 1.0f : 0.0f, Y->data, N);
        return KILN_OK;
    }
    /* float16 / bfloat16 */
    const float *bc = s ? s->b_f32 : NULL;
    int64_t na = kiln_numel(A), nb = bc ? 0 : kiln_numel(B), nc = C ? kiln_numel(C) : 0;
    float *buf = malloc(sizeof(float) * (size_t)(na + nb + nc + M * N + 1));
    if (!buf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for float32 copies");
    float *a = buf, *b = bc ? (float *)bc : buf + na, *c = buf + na + nb, *y = c + nc;
    kcvt_to_f32(ctx, dt, A->data, a, na);
    if (!bc) kcvt_to_f32(ctx, dt, B->data, b, nb);
    if (nc) kcvt_to_f32(ctx, dt, C->data, c, nc);
    int has_c = fill_beta_c(ctx, C, g.beta, KILN_DTYPE_FLOAT, c, y, M, N);
    if (bpk)
        kgemm_f32_bpacked(ctx, g.ta, M, N, K, g.alpha, a, lda, bpk, has_c ? 1.0f : 0.0f, y, N);
    else
        kgemm_f32(ctx, g.ta, g.tb, M, N, K, g.alpha, a, lda, b, ldb, has_c ? 1.0f : 0.0f, y, N);
    kcvt_from_f32(ctx, dt, y, Y->data, M * N);
    free(buf);
    return KILN_OK;
}
