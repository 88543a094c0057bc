/* Data movement around the attention core: the QKV projection, bias-add copies into layouts the
 * core reads, KV-cache concatenation, and small shared helpers. */
#include "attention_common.h"
#include "gemm_util.h"

#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void kattn_blas_serial(void) {
    if (openblas_get_num_threads() != 1) openblas_set_num_threads(1);
}

typedef struct project_job {
    int64_t M, N, K, lda, ldb, ldc, rows_per_task;
    const float *A, *B, *bias;
    float *C;
} project_job;

static void project_range(void *arg, int64_t begin, int64_t end) {
    const project_job *j = arg;
    for (int64_t t = begin; t < end; t++) {
        int64_t r0 = t * j->rows_per_task, r1 = r0 + j->rows_per_task;
        if (r1 > j->M) r1 = j->M;
        if (r0 >= r1) continue;
        float beta = 0.0f;
        if (j->bias) {
            for (int64_t r = r0; r < r1; r++) memcpy(j->C + r * j->ldc, j->bias, sizeof(float) * j->N);
            beta = 1.0f;
        }
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)(r1 - r0), (int)j->N, (int)j->K,
                    1.0f, j->A + r0 * j->lda, (int)j->lda, j->B, (int)j->ldb, beta,
                    j->C + r0 * j->ldc, (int)j->ldc);
    }
}

void kattn_project(kiln_ctx *ctx, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda,
                   const float *B, int64_t ldb, const float *bias, float *C, int64_t ldc) {
    if (M <= 0 || N <= 0) return;
    kattn_blas_serial();
    project_job j = {M, N, K, lda, ldb, ldc, 0, A, B, bias, C};
    /* a few row blocks per thread: big enough for sgemm to run at speed, enough to balance */
    int64_t threads = kiln_num_threads(ctx);
    if (threads < 1) threads = 1;
    int64_t tasks = threads * 2;
    int64_t rows = (M + tasks - 1) / tasks;
    if (rows < 16) rows = 16;
    j.rows_per_task = rows;
    tasks = (M + rows - 1) / rows;
    if (K == 0) { /* sgemm leaves C alone when K == 0 and beta == 0 */
        for (int64_t r = 0; r < M; r++) {
            if (bias) memcpy(C + r * ldc, bias, sizeof(float) * N);
            else memset(C + r * ldc, 0, sizeof(float) * N);
        }
        return;
    }
    /* small projections (a tiny model's) are not worth handing to the pool */
    kiln_parallel_for(ctx, tasks, kpar_grain(tasks, (double)M * N * K * 0.01), project_range, &j);
}

typedef struct gather_job {
    float *dst;
    const float *past;
    kattn_view v;
    int64_t B, N, L, H, P, dst_rows, past_rows;
    const float *bias;
    int bsnh;
} gather_job;

static void gather_range(void *arg, int64_t begin, int64_t end) {
    const gather_job *g = arg;
    for (int64_t t = begin; t < end; t++) {
        if (g->bsnh) { /* t = (b, l) */
            int64_t b = t / g->L, l = t % g->L;
            for (int64_t n = 0; n < g->N; n++) {
                const float *src = g->v.p + b * g->v.sb + n * g->v.sn + l * g->v.ss;
                float *d = g->dst + (t * g->N + n) * g->H;
                const float *bias = g->bias ? g->bias + n * g->H : NULL;
                if (bias)
                    for (int64_t h = 0; h < g->H; h++) d[h] = src[h] + bias[h];
                else
                    memcpy(d, src, sizeof(float) * g->H);
            }
        } else { /* t = (b, n) */
            int64_t b = t / g->N, n = t % g->N;
            float *d = g->dst + t * g->dst_rows * g->H;
            if (g->past && g->P > 0) memcpy(d, g->past + t * g->past_rows * g->H, sizeof(float) * g->P * g->H);
            d += g->P * g->H;
            const float *bias = g->bias ? g->bias + n * g->H : NULL;
            for (int64_t l = 0; l < g->L; l++, d += g->H) {
                const float *src = g->v.p + b * g->v.sb + n * g->v.sn + l * g->v.ss;
                if (bias)
                    for (int64_t h = 0; h < g->H; h++) d[h] = src[h] + bias[h];
                else
                    memcpy(d, src, sizeof(float) * g->H);
            }
        }
    }
}

void kattn_gather_bnsh(kiln_ctx *ctx, float *dst, const kattn_view *v, int64_t B, int64_t N,
                       int64_t L, int64_t H, const float *bias) {
    gather_job g = {dst, NULL, *v, B, N, L, H, 0, L, 0, bias, 0};
    kiln_parallel_for(ctx, B * N, 1, gather_range, &g);
}

void kattn_concat_kv(kiln_ctx *ctx, float *dst, int64_t dst_rows, const float *past,
                     int64_t past_rows, int64_t P, const kattn_view *v, int64_t B, int64_t N,
                     int64_t L, int64_t H) {
    gather_job g = {dst, past, *v, B, N, L, H, P, dst_rows, past_rows, NULL, 0};
    kiln_parallel_for(ctx, B * N, 1, gather_range, &g);
}

void kattn_gather_bsnh(kiln_ctx *ctx, float *dst, const kattn_view *v, int64_t B, int64_t N,
                       int64_t L, int64_t H, const float *bias) {
    gather_job g = {dst, NULL, *v, B, N, L, H, 0, 0, 0, bias, 1};
    kiln_parallel_for(ctx, B * L, 16, gather_range, &g);
}

int kattn_float_type(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_FLOAT16 || dt == KILN_DTYPE_BFLOAT16 ||
           dt == KILN_DTYPE_DOUBLE;
}

kiln_status kattn_as_f32(kiln_ctx *ctx, const kiln_tensor *t, const float **out, float **owned) {
    *owned = NULL;
    if (t->dtype == KILN_DTYPE_FLOAT) {
        *out = t->data;
        return KILN_OK;
    }
    int64_t n = kiln_numel(t);
    float *d = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!d) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory converting to float32");
    if (t->dtype == KILN_DTYPE_FLOAT16) {
        const kiln_f16 *s = t->data;
        for (int64_t i = 0; i < n; i++) d[i] = kiln_f16_to_f32(s[i]);
    } else if (t->dtype == KILN_DTYPE_BFLOAT16) {
        const kiln_bf16 *s = t->data;
        for (int64_t i = 0; i < n; i++) d[i] = kiln_bf16_to_f32(s[i]);
    } else if (t->dtype == KILN_DTYPE_DOUBLE) {
        const double *s = t->data;
        for (int64_t i = 0; i < n; i++) d[i] = (float)s[i];
    } else {
        free(d);
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "cannot convert %s to float32",
                         kiln_dtype_name(t->dtype));
    }
    *owned = d;
    *out = d;
    return KILN_OK;
}

void kattn_store_as(int dtype, const float *src, void *dst, int64_t n) {
    if (dtype == KILN_DTYPE_FLOAT16) {
        kiln_f16 *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = kiln_f32_to_f16(src[i]);
    } else if (dtype == KILN_DTYPE_BFLOAT16) {
        kiln_bf16 *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = kiln_f32_to_bf16(src[i]);
    } else if (dtype == KILN_DTYPE_DOUBLE) {
        double *d = dst;
        for (int64_t i = 0; i < n; i++) d[i] = src[i];
    } else if (dst != src) {
        memcpy(dst, src, sizeof(float) * (size_t)n);
    }
}

kiln_status kattn_check_float_inputs(kiln_ctx *ctx, const int *idx, int n, int *dtype) {
    const kiln_tensor *first = idx[0] < ctx->n_in ? kiln_input(ctx, idx[0]) : NULL;
    int T = first ? first->dtype : KILN_DTYPE_FLOAT;
    if (T != KILN_DTYPE_FLOAT && T != KILN_DTYPE_FLOAT16 && T != KILN_DTYPE_BFLOAT16)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "input %d has element type %s; expected float32, float16 or bfloat16", idx[0],
                         kiln_dtype_name(T));
    for (int i = 1; i < n; i++) {
        const kiln_tensor *t = idx[i] < ctx->n_in ? kiln_input(ctx, idx[i]) : NULL;
        if (t && t->dtype != T)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "input %d has element type %s but input %d has %s (they must match)", idx[i],
                             kiln_dtype_name(t->dtype), idx[0], kiln_dtype_name(T));
    }
    *dtype = T;
    return KILN_OK;
}

static int is_half(int dtype) { return dtype == KILN_DTYPE_FLOAT16 || dtype == KILN_DTYPE_BFLOAT16; }

int kattn_has_half(kiln_ctx *ctx) {
    for (int i = 0; i < ctx->n_in; i++) {
        const kiln_tensor *t = kiln_input(ctx, i);
        if (t && is_half(t->dtype)) return 1;
    }
    for (int i = 0; i < ctx->n_out; i++) {
        const kiln_tensor *t = kiln_output(ctx, i);
        if (t && is_half(t->dtype)) return 1;
    }
    return 0;
}

/* Points a shadow value at a float32 buffer of the same shape (taken from bufs[*nb]). */
static kiln_status shadow_f32(kiln_ctx *ctx, kiln_value *v, int convert, float **bufs, int *nb) {
    kiln_tensor *t = &v->t;
    int64_t n = kiln_numel(t);
    float *f = calloc((size_t)(n > 0 ? n : 1), sizeof(float));
    if (!f) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory converting to float32");
    bufs[(*nb)++] = f;
    if (convert) {
        if (t->dtype == KILN_DTYPE_FLOAT16)
            for (int64_t i = 0; i < n; i++) f[i] = kiln_f16_to_f32(((const kiln_f16 *)t->data)[i]);
        else
            for (int64_t i = 0; i < n; i++) f[i] = kiln_bf16_to_f32(((const kiln_bf16 *)t->data)[i]);
    }
    t->dtype = KILN_DTYPE_FLOAT;
    t->data = f;
    t->owner = NULL; /* the shadow never frees; bufs[] does */
    t->dev = NULL;
    return KILN_OK;
}

kiln_status kattn_compute_as_f32(kiln_ctx *ctx, kiln_status (*compute)(kiln_ctx *)) {
    int nv = ctx->n_in + ctx->n_out;
    kiln_value *vals = calloc((size_t)(nv ? nv : 1), sizeof *vals);
    kiln_value **ptrs = calloc((size_t)(nv ? nv : 1), sizeof *ptrs);
    float **bufs = calloc((size_t)(nv ? nv : 1), sizeof *bufs);
    int nb = 0;
    kiln_status st = KILN_OK;
    if (!vals || !ptrs || !bufs) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < nv && st == KILN_OK; i++) {
        int is_in = i < ctx->n_in;
        kiln_value *src = is_in ? ctx->in[i] : ctx->out[i - ctx->n_in];
        if (!src) continue;
        vals[i] = *src;
        ptrs[i] = &vals[i];
        if (src->kind == KILN_KIND_TENSOR && is_half(src->t.dtype))
            st = shadow_f32(ctx, &vals[i], is_in, bufs, &nb);
    }
    if (st == KILN_OK) {
        kiln_ctx sh = *ctx;
        sh.in = ptrs;
        sh.out = ptrs + ctx->n_in;
        st = compute(&sh);
    }
    for (int o = 0; o < ctx->n_out && st == KILN_OK; o++) {
        kiln_value *dst = ctx->out[o];
        if (dst && dst->kind == KILN_KIND_TENSOR && is_half(dst->t.dtype))
            kattn_store_as(dst->t.dtype, vals[ctx->n_in + o].t.data, dst->t.data, kiln_numel(&dst->t));
    }
    for (int i = 0; i < nb; i++) free(bufs[i]);
    free(bufs);
    free(ptrs);
    free(vals);
    return st;
}

int kattn_host_readable(const kiln_tensor *t) { return t && t->data && !t->dev; }

const char *kattn_shape(const kiln_tensor *t, char *buf, size_t n) {
    if (!t) {
        snprintf(buf, n, "(absent)");
        return buf;
    }
    return kiln_shape_str(t, buf, n);
}

float kattn_default_scale(float scale_attr, int64_t H) {
    if (scale_attr != 0.0f) return scale_attr;
    return H > 0 ? (float)(1.0 / sqrt((double)H)) : 1.0f;
}

int kattn_static_unknown(kiln_ctx *ctx, const int *inputs, int n, int dtype) {
    if (!ctx->static_mode) return 0;
    int unknown = 0;
    for (int i = 0; i < n && !unknown; i++) {
        const kiln_tensor *t = inputs[i] < ctx->n_in ? kiln_input(ctx, inputs[i]) : NULL;
        if (t && !kiln_shape_concrete(t)) unknown = 1;
    }
    if (!unknown) return 0;
    for (int o = 0; o < ctx->n_out; o++)
        if (kiln_output(ctx, o)) kiln_set_output_unknown(ctx, o, dtype);
    return 1;
}
