/* kiln_lt_matmul: one row-major (strided-batched) GEMM through cuBLASLt, with the descriptors and
 * the heuristic's algorithm cached per node (see matmul_lt.h).
 *
 * Row-major through a column-major library: a row-major r x c matrix with leading dimension ld
 * is, byte for byte, the column-major c x r matrix (its transpose) with the same ld. ONNX wants
 *     D (M x N, row-major) = op(A) op(B)
 * which, transposed, is D^T = op(B)^T op(A)^T, an N x M column-major product. So cuBLASLt gets
 *   its "A" = our B: stored row-major as (tb ? N x K : K x N), i.e. column-major
 *                    (tb ? K x N : N x K), ld = ldb; its op is T exactly when tb (so op gives N x K);
 *   its "B" = our A: stored row-major as (ta ? K x M : M x K), i.e. column-major
 *                    (ta ? M x K : K x M), ld = lda; its op is T exactly when ta (gives K x M);
 *   its "C"/"D" = our C/D: column-major N x M, ld = ldc;
 *   m = N, n = M, k = K.
 * A bias epilogue adds a vector of length m (cuBLASLt: one value per row of column-major D),
 * i.e. one value per column of our row-major D: exactly a bias of shape (N). */
#include "matmul_lt.h"
#include "../cuda_provider.h"

#include <cublasLt.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

enum { LT_CACHE_SLOTS = 4 };

/* Everything the descriptors and the heuristic's choice depend on. Compared with memcmp, so it
 * is always zero-filled before use (padding included). */
typedef struct lt_key {
    int dtype, tf32, trans_a, trans_b;
    int64_t M, N, K, lda, ldb, ldc, batch, stride_a, stride_b, stride_c;
    int epilogue;
    uint32_t align_a, align_b, align_c, align_d, align_bias;
} lt_key;

typedef struct lt_entry {
    int valid;
    lt_key key;
    cublasLtMatmulDesc_t op;
    cublasLtMatrixLayout_t la, lb, lc; /* cuBLASLt's A (our B), B (our A), C = D */
    cublasLtMatmulAlgo_t algo;
} lt_entry;

struct kiln_lt_cache {
    lt_entry slot[LT_CACHE_SLOTS];
    int next; /* slot to replace next */
};

kiln_lt_cache *kiln_lt_cache_new(void) { return calloc(1, sizeof(kiln_lt_cache)); }

static void entry_release(lt_entry *e) {
    if (e->op) cublasLtMatmulDescDestroy(e->op);
    if (e->la) cublasLtMatrixLayoutDestroy(e->la);
    if (e->lb) cublasLtMatrixLayoutDestroy(e->lb);
    if (e->lc) cublasLtMatrixLayoutDestroy(e->lc);
    memset(e, 0, sizeof *e);
}

void kiln_lt_cache_free(kiln_lt_cache *c) {
    if (!c) return;
    for (int i = 0; i < LT_CACHE_SLOTS; i++) entry_release(&c->slot[i]);
    free(c);
}

/* TF32 changes float32 results by ~1e-3 relative: only when the user asks for it. */
static int allow_tf32(void) {
    static int v = -1;
    if (v < 0) {
        const char *e = getenv("KILN_CUDA_ALLOW_TF32");
        v = e && e[0] == '1';
    }
    return v;
}

static int lt_types(int dtype, int tf32, cudaDataType_t *data, cublasComputeType_t *compute,
                    cudaDataType_t *scale) {
    *scale = CUDA_R_32F;
    *compute = CUBLAS_COMPUTE_32F;
    switch (dtype) {
    case KILN_DTYPE_FLOAT:
        *data = CUDA_R_32F;
        if (tf32) *compute = CUBLAS_COMPUTE_32F_FAST_TF32;
        return 1;
    case KILN_DTYPE_FLOAT16: *data = CUDA_R_16F; return 1;
    case KILN_DTYPE_BFLOAT16: *data = CUDA_R_16BF; return 1;
    case KILN_DTYPE_DOUBLE:
        *data = CUDA_R_64F;
        *compute = CUBLAS_COMPUTE_64F;
        *scale = CUDA_R_64F;
        return 1;
    default: return 0;
    }
}

static size_t elem_bytes(int dtype) {
    return dtype == KILN_DTYPE_DOUBLE ? 8 : dtype == KILN_DTYPE_FLOAT ? 4 : 2;
}

/* The largest power of two (at most 256, cuBLASLt's default expectation) dividing the address of
 * every matrix of a batch: the base and, with more than one matrix, the batch stride in bytes. */
static uint32_t alignment(const void *p, int64_t batch, int64_t stride_bytes) {
    uintptr_t bits = (uintptr_t)p | 256u;
    if (batch > 1 && stride_bytes) bits |= (uintptr_t)stride_bytes;
    return (uint32_t)(bits & (~bits + 1)); /* lowest set bit */
}

static cublasLtEpilogue_t epilogue_of(int act, int bias) {
    switch (act) {
    case KILN_LT_ACT_RELU: return bias ? CUBLASLT_EPILOGUE_RELU_BIAS : CUBLASLT_EPILOGUE_RELU;
    case KILN_LT_ACT_GELU_TANH: return bias ? CUBLASLT_EPILOGUE_GELU_BIAS : CUBLASLT_EPILOGUE_GELU;
    default: return bias ? CUBLASLT_EPILOGUE_BIAS : CUBLASLT_EPILOGUE_DEFAULT;
    }
}

static void make_key(const kiln_lt_gemm *g, lt_key *k) {
    memset(k, 0, sizeof *k);
    size_t es = elem_bytes(g->dtype);
    k->dtype = g->dtype;
    k->tf32 = g->dtype == KILN_DTYPE_FLOAT && allow_tf32();
    k->trans_a = !!g->trans_a;
    k->trans_b = !!g->trans_b;
    k->M = g->M;
    k->N = g->N;
    k->K = g->K;
    k->lda = g->lda;
    k->ldb = g->ldb;
    k->ldc = g->ldc;
    k->batch = g->batch;
    k->stride_a = g->batch > 1 ? g->stride_a : 0;
    k->stride_b = g->batch > 1 ? g->stride_b : 0;
    k->stride_c = g->batch > 1 ? g->stride_c : 0;
    k->epilogue = (int)epilogue_of(g->act, g->bias != NULL);
    k->align_a = alignment(g->a, g->batch, g->stride_a * (int64_t)es);
    k->align_b = alignment(g->b, g->batch, g->stride_b * (int64_t)es);
    k->align_c = g->beta != 0.0 ? alignment(g->c, g->batch, g->stride_c * (int64_t)es) : 256;
    k->align_d = alignment(g->d, g->batch, g->stride_c * (int64_t)es);
    k->align_bias = g->bias ? alignment(g->bias, 1, 0) : 0;
}

#define LT_CK(call, what)                                                                           \
    do {                                                                                            \
        cublasStatus_t s_ = (call);                                                                 \
        if (s_ != CUBLAS_STATUS_SUCCESS) return kiln_cublas_check((int)s_, what);                   \
    } while (0)

#define LT_TRY(call)                                                                                \
    do {                                                                                            \
        kiln_status t_ = (call);                                                                    \
        if (t_ != KILN_OK) return t_;                                                               \
    } while (0)

/* A column-major rows x cols layout with leading dimension ld, batched when k->batch > 1. */
static kiln_status make_layout(cublasLtMatrixLayout_t *out, cudaDataType_t type, int64_t rows,
                               int64_t cols, int64_t ld, const lt_key *k, int64_t stride) {
    LT_CK(cublasLtMatrixLayoutCreate(out, type, (uint64_t)rows, (uint64_t)cols, ld),
          "cublasLtMatrixLayoutCreate");
    if (k->batch > 1) {
        int32_t count = (int32_t)k->batch;
        LT_CK(cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                               sizeof count),
              "cublasLtMatrixLayoutSetAttribute(BATCH_COUNT)");
        LT_CK(cublasLtMatrixLayoutSetAttribute(*out, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                               &stride, sizeof stride),
              "cublasLtMatrixLayoutSetAttribute(STRIDED_BATCH_OFFSET)");
    }
    return KILN_OK;
}

/* The descriptors of k (see the file comment for the row-major to column-major mapping). The
 * bias pointer is set here too: the heuristic reads its alignment. */
static kiln_status build_descs(lt_entry *e, const lt_key *k, const void *bias) {
    cudaDataType_t data, scale;
    cublasComputeType_t compute;
    if (!lt_types(k->dtype, k->tf32, &data, &compute, &scale))
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED, "cuBLASLt matmul: element type %d", k->dtype);
    LT_CK(cublasLtMatmulDescCreate(&e->op, compute, scale), "cublasLtMatmulDescCreate");
    cublasOperation_t op_a = k->trans_b ? CUBLAS_OP_T : CUBLAS_OP_N; /* cuBLASLt's A is our B */
    cublasOperation_t op_b = k->trans_a ? CUBLAS_OP_T : CUBLAS_OP_N;
    LT_CK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSA, &op_a, sizeof op_a),
          "cublasLtMatmulDescSetAttribute(TRANSA)");
    LT_CK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_TRANSB, &op_b, sizeof op_b),
          "cublasLtMatmulDescSetAttribute(TRANSB)");
    cublasLtEpilogue_t epi = (cublasLtEpilogue_t)k->epilogue;
    if (epi != CUBLASLT_EPILOGUE_DEFAULT)
        LT_CK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi, sizeof epi),
              "cublasLtMatmulDescSetAttribute(EPILOGUE)");
    if (bias)
        LT_CK(cublasLtMatmulDescSetAttribute(e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                             sizeof bias),
              "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    LT_TRY(make_layout(&e->la, data, k->trans_b ? k->K : k->N, k->trans_b ? k->N : k->K, k->ldb,
                         k, k->stride_b));
    LT_TRY(make_layout(&e->lb, data, k->trans_a ? k->M : k->K, k->trans_a ? k->K : k->M, k->lda,
                         k, k->stride_a));
    LT_TRY(make_layout(&e->lc, data, k->N, k->M, k->ldc, k, k->stride_c));
    return KILN_OK;
}

static kiln_status choose_algo(cublasLtHandle_t lt, lt_entry *e, size_t ws_bytes) {
    cublasLtMatmulPreference_t pref;
    LT_CK(cublasLtMatmulPreferenceCreate(&pref), "cublasLtMatmulPreferenceCreate");
    const lt_key *k = &e->key;
    uint64_t ws = ws_bytes;
    /* our A is cuBLASLt's B and vice versa */
    struct { cublasLtMatmulPreferenceAttributes_t attr; const void *v; size_t n; } set[] = {
        {CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, &k->align_b, sizeof k->align_b},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES, &k->align_a, sizeof k->align_a},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, &k->align_c, sizeof k->align_c},
        {CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES, &k->align_d, sizeof k->align_d},
    };
    cublasStatus_t s = CUBLAS_STATUS_SUCCESS;
    for (size_t i = 0; i < sizeof set / sizeof set[0] && s == CUBLAS_STATUS_SUCCESS; i++)
        s = cublasLtMatmulPreferenceSetAttribute(pref, set[i].attr, set[i].v, set[i].n);
    cublasLtMatmulHeuristicResult_t result;
    int found = 0;
    if (s == CUBLAS_STATUS_SUCCESS)
        s = cublasLtMatmulAlgoGetHeuristic(lt, e->op, e->la, e->lb, e->lc, e->lc, pref, 1, &result,
                                           &found);
    cublasLtMatmulPreferenceDestroy(pref);
    if (s == CUBLAS_STATUS_NOT_SUPPORTED || (s == CUBLAS_STATUS_SUCCESS && found == 0))
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED,
                              "cuBLASLt has no algorithm for this matmul (element type %d, M=%lld "
                              "N=%lld K=%lld, batch %lld, epilogue %d)",
                              k->dtype, (long long)k->M, (long long)k->N, (long long)k->K,
                              (long long)k->batch, k->epilogue);
    LT_CK(s, "cublasLtMatmulAlgoGetHeuristic");
    e->algo = result.algo;
    return KILN_OK;
}

static kiln_status entry_prepare(cublasLtHandle_t lt, lt_entry *e, const lt_key *k, const void *bias,
                                 size_t ws_bytes) {
    entry_release(e);
    e->key = *k;
    kiln_status st = build_descs(e, k, bias);
    if (st == KILN_OK) st = choose_algo(lt, e, ws_bytes);
    if (st != KILN_OK) entry_release(e);
    else e->valid = 1;
    return st;
}

static kiln_status check_sizes(const kiln_lt_gemm *g) {
    /* cuBLASLt takes 32-bit rows, columns and batch counts */
    if (g->M < 1 || g->N < 1 || g->K < 1 || g->batch < 1)
        return kiln_cuda_fail(KILN_ERR_INVALID_ARGUMENT,
                              "cuBLASLt matmul: empty product M=%lld N=%lld K=%lld batch %lld",
                              (long long)g->M, (long long)g->N, (long long)g->K, (long long)g->batch);
    if (g->M > INT_MAX || g->N > INT_MAX || g->K > INT_MAX || g->batch > INT_MAX)
        return kiln_cuda_fail(KILN_ERR_NOT_IMPLEMENTED,
                              "matmul dimensions beyond 2^31 (M=%lld N=%lld K=%lld batch %lld)",
                              (long long)g->M, (long long)g->N, (long long)g->K, (long long)g->batch);
    return KILN_OK;
}

kiln_status kiln_lt_matmul(void *lt, void *stream, void *ws, size_t ws_bytes, kiln_lt_cache *cache,
                           const kiln_lt_gemm *g) {
    LT_TRY(check_sizes(g));
    lt_key k;
    make_key(g, &k);
    lt_entry scratch, *e = NULL;
    memset(&scratch, 0, sizeof scratch);
    if (cache) {
        for (int i = 0; i < LT_CACHE_SLOTS && !e; i++)
            if (cache->slot[i].valid && !memcmp(&cache->slot[i].key, &k, sizeof k)) e = &cache->slot[i];
        if (!e) {
            e = &cache->slot[cache->next];
            cache->next = (cache->next + 1) % LT_CACHE_SLOTS;
            LT_TRY(entry_prepare((cublasLtHandle_t)lt, e, &k, g->bias, ws_bytes));
        }
    } else {
        e = &scratch;
        LT_TRY(entry_prepare((cublasLtHandle_t)lt, e, &k, g->bias, ws_bytes));
    }
    kiln_status st = KILN_OK;
    if (g->bias) /* the pointer changes from run to run; its alignment class is in the key */
        st = kiln_cublas_check((int)cublasLtMatmulDescSetAttribute(
                                   e->op, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &g->bias, sizeof g->bias),
                               "cublasLtMatmulDescSetAttribute(BIAS_POINTER)");
    float alpha_f = (float)g->alpha, beta_f = (float)g->beta;
    const void *alpha = &alpha_f, *beta = &beta_f;
    if (g->dtype == KILN_DTYPE_DOUBLE) {
        alpha = &g->alpha;
        beta = &g->beta;
    }
    const void *c = g->beta != 0.0 ? g->c : g->d;
    if (st == KILN_OK)
        st = kiln_cublas_check((int)cublasLtMatmul((cublasLtHandle_t)lt, e->op, alpha, g->b, e->la,
                                                   g->a, e->lb, beta, c, e->lc, g->d, e->lc, &e->algo,
                                                   ws, ws_bytes, (cudaStream_t)stream),
                               "cublasLtMatmul");
    if (e == &scratch) entry_release(e);
    return st;
}
