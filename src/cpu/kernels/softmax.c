/* Softmax, LogSoftmax, Hardmax.
 * Before opset 13 the input is coerced to 2-D [prod(dims[:axis]), prod(dims[axis:])] (axis
 * default 1) and the op runs over each row; from 13 on it runs along the single axis (default -1)
 * as [outer, n, inner]. float16/bfloat16 run through a float32 copy; float32 rows (the transformer
 * case) use the vector primitives of reduce_simd.h and are spread over threads by row. */
#pragma GCC optimize("O3") /* -O2 leaves the column-block loops scalar */
#include "reduce_simd.h"

enum { SM_SOFT, SM_LOG, SM_HARD };

#define SM_BLOCK 64

typedef struct smlayout {
    int64_t outer, n, inner;
} smlayout;

static kiln_status sm_layout(kiln_ctx *ctx, const kiln_tensor *x, smlayout *l) {
    int axis;
    if (ctx->opset < 13) {
        KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 1), x->rank, "axis", &axis));
        l->outer = ru_prod(x->dims, 0, axis);
        l->n = ru_prod(x->dims, axis, x->rank);
        l->inner = 1;
    } else {
        KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", -1), x->rank, "axis", &axis));
        l->outer = ru_prod(x->dims, 0, axis);
        l->n = x->dims[axis];
        l->inner = ru_prod(x->dims, axis + 1, x->rank);
    }
    return KILN_OK;
}

static kiln_status sm_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 4, KILN_DTYPE_FLOAT, KILN_DTYPE_DOUBLE, KILN_DTYPE_FLOAT16,
                              KILN_DTYPE_BFLOAT16));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", ctx->opset < 13 ? 1 : -1),
                            x->rank, "axis", &axis));
    return kiln_set_output_like(ctx, 0, x);
}

/* float32 rows, vectorised */
static void sm_row_f32(int kind, const float *x, float *y, int64_t n) {
    if (kind == SM_HARD) {
        int64_t best = 0;
        for (int64_t i = 1; i < n; i++)
            if (x[i] > x[best]) best = i;
        memset(y, 0, (size_t)n * sizeof(float));
        y[best] = 1.0f;
        return;
    }
    float m = rs_max(x, n);
    if (kind == SM_SOFT) {
        float s = rs_expsum(x, y, n, m);
        rs_scale(y, n, 1.0f / s);
    } else {
        float s = rs_expsum_only(x, n, m);
        rs_sub2(x, y, n, m, logf(s));
    }
}

/* Scalar rows ([n] contiguous) and column blocks ([n, inner] slices, nc columns) per type. */
#define DEFINE_SM(SFX, T, EXP, LOG)                                                                \
    static RU_UNUSED void sm_row_##SFX(int kind, const T *x, T *y, int64_t n) {                              \
        int64_t best = 0;                                                                          \
        for (int64_t i = 1; i < n; i++)                                                            \
            if (x[i] > x[best]) best = i;                                                          \
        if (kind == SM_HARD) {                                                                     \
            memset(y, 0, (size_t)n * sizeof(T));                                                   \
            y[best] = 1;                                                                           \
            return;                                                                                \
        }                                                                                          \
        T m = x[best], s = 0;                                                                      \
        if (kind == SM_SOFT) {                                                                     \
            for (int64_t i = 0; i < n; i++) s += (y[i] = EXP(x[i] - m));                           \
            for (int64_t i = 0; i < n; i++) y[i] /= s;                                             \
        } else {                                                                                   \
            for (int64_t i = 0; i < n; i++) s += EXP(x[i] - m);                                    \
            T c = LOG(s);                                                                          \
            for (int64_t i = 0; i < n; i++) y[i] = (x[i] - m) - c;                                 \
        }                                                                                          \
    }                                                                                              \
    static void sm_cols_##SFX(int kind, const T *x, T *y, int64_t n, int64_t inner, int64_t nc) { \
        T m[SM_BLOCK], s[SM_BLOCK];                                                                \
        int64_t bi[SM_BLOCK];                                                                      \
        for (int64_t j = 0; j < nc; j++) {                                                         \
            m[j] = x[j];                                                                           \
            bi[j] = 0;                                                                             \
            s[j] = 0;                                                                              \
        }                                                                                          \
        for (int64_t k = 1; k < n; k++)                                                            \
            for (int64_t j = 0; j < nc; j++)                                                       \
                if (x[k * inner + j] > m[j]) {                                                     \
                    m[j] = x[k * inner + j];                                                       \
                    bi[j] = k;                                                                     \
                }                                                                                  \
        if (kind == SM_HARD) {                                                                     \
            for (int64_t k = 0; k < n; k++)                                                        \
                for (int64_t j = 0; j < nc; j++) y[k * inner + j] = bi[j] == k;                    \
            return;                                                                                \
        }                                                                                          \
        for (int64_t k = 0; k < n; k++)                                                            \
            for (int64_t j = 0; j < nc; j++) {                                                     \
                T e = EXP(x[k * inner + j] - m[j]);                                                \
                s[j] += e;                                                                         \
                if (kind == SM_SOFT) y[k * inner + j] = e;                                         \
            }                                                                                      \
        if (kind == SM_SOFT) {                                                                     \
            for (int64_t j = 0; j < nc; j++) s[j] = 1 / s[j];                                      \
            for (int64_t k = 0; k < n; k++)                                                        \
                for (int64_t j = 0; j < nc; j++) y[k * inner + j] *= s[j];                         \
        } else {                                                                                   \
            for (int64_t j = 0; j < nc; j++) s[j] = LOG(s[j]);                                     \
            for (int64_t k = 0; k < n; k++)                                                        \
                for (int64_t j = 0; j < nc; j++)                                                   \
                    y[k * inner + j] = (x[k * inner + j] - m[j]) - s[j];                           \
        }                                                                                          \
    }

DEFINE_SM(f64, double, exp, log)

/* float32 column blocks: as above, with the exponentials done a row of the block at a time */
static void sm_cols_f32(int kind, const float *x, float *y, int64_t n, int64_t inner, int64_t nc) {
    float m[SM_BLOCK], s[SM_BLOCK], t[SM_BLOCK];
    int64_t bi[SM_BLOCK];
    for (int64_t j = 0; j < nc; j++) {
        m[j] = x[j];
        bi[j] = 0;
        s[j] = 0;
    }
    if (kind == SM_HARD) {
        for (int64_t k = 1; k < n; k++) {
            const float *row = x + k * inner;
            for (int64_t j = 0; j < nc; j++)
                if (row[j] > m[j]) {
                    m[j] = row[j];
                    bi[j] = k;
                }
        }
    } else { /* branch-free, so it vectorises */
        for (int64_t k = 1; k < n; k++) {
            const float *row = x + k * inner;
            for (int64_t j = 0; j < nc; j++) m[j] = row[j] > m[j] ? row[j] : m[j];
        }
    }
    if (kind == SM_HARD) {
        for (int64_t k = 0; k < n; k++)
            for (int64_t j = 0; j < nc; j++) y[k * inner + j] = bi[j] == k ? 1.0f : 0.0f;
        return;
    }
    for (int64_t k = 0; k < n; k++) {
        const float *row = x + k * inner;
        for (int64_t j = 0; j < nc; j++) t[j] = row[j] - m[j];
        rs_exp_neg_inplace(t, nc);
        for (int64_t j = 0; j < nc; j++) s[j] += t[j];
        if (kind == SM_SOFT) memcpy(y + k * inner, t, (size_t)nc * sizeof(float));
    }
    if (kind == SM_SOFT) {
        for (int64_t j = 0; j < nc; j++) s[j] = 1.0f / s[j];
        for (int64_t k = 0; k < n; k++)
            for (int64_t j = 0; j < nc; j++) y[k * inner + j] *= s[j];
    } else {
        for (int64_t j = 0; j < nc; j++) s[j] = logf(s[j]);
        for (int64_t k = 0; k < n; k++)
            for (int64_t j = 0; j < nc; j++)
                y[k * inner + j] = (x[k * inner + j] - m[j]) - s[j];
    }
}

struct smjob {
    int kind, is_double;
    int half; /* float16/bfloat16 rows (inner == 1) converted one at a time; else 0 */
    ru_fail_flag fail;
    const void *x;
    void *y;
    smlayout l;
    int64_t nblk;
};

static void sm_range(void *arg, int64_t b, int64_t e) {
    const struct smjob *jb = arg;
    int64_t n = jb->l.n, inner = jb->l.inner;
    if (inner == 1 && jb->half) {
        float stackbuf[4096];
        float *row = n <= 4096 ? stackbuf : malloc((size_t)n * sizeof(float));
        if (!row) {
            ((struct smjob *)arg)->fail.failed = 1;
            return;
        }
        for (int64_t o = b; o < e; o++) {
            ru_half_to_f32(jb->half, (const uint16_t *)jb->x + o * n, row, n);
            sm_row_f32(jb->kind, row, row, n);
            ru_f32_to_half(jb->half, row, (uint16_t *)jb->y + o * n, n);
        }
        if (row != stackbuf) free(row);
        return;
    }
    if (inner == 1) {
        for (int64_t o = b; o < e; o++) {
            if (jb->is_double)
                sm_row_f64(jb->kind, (const double *)jb->x + o * n, (double *)jb->y + o * n, n);
            else
                sm_row_f32(jb->kind, (const float *)jb->x + o * n, (float *)jb->y + o * n, n);
        }
        return;
    }
    for (int64_t u = b; u < e; u++) {
        int64_t o = u / jb->nblk, j0 = (u % jb->nblk) * SM_BLOCK;
        int64_t nc = inner - j0 < SM_BLOCK ? inner - j0 : SM_BLOCK, off = o * n * inner + j0;
        if (jb->is_double)
            sm_cols_f64(jb->kind, (const double *)jb->x + off, (double *)jb->y + off, n, inner, nc);
        else
            sm_cols_f32(jb->kind, (const float *)jb->x + off, (float *)jb->y + off, n, inner, nc);
    }
}

static kiln_status sm_compute(kiln_ctx *ctx, int kind) {
    kiln_tensor *x = kiln_input(ctx, 0), *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    struct smjob jb = {.kind = kind, .is_double = x->dtype == KILN_DTYPE_DOUBLE, .x = x->data,
                       .y = y->data};
    KILN_TRY(sm_layout(ctx, x, &jb.l));
    int64_t total = kiln_numel(x);
    if (total == 0) return KILN_OK;
    float *tmp = NULL;
    if (ru_is_halfish(x->dtype) && jb.l.inner == 1) {
        jb.half = x->dtype;
    } else if (ru_is_halfish(x->dtype)) {
        tmp = malloc((size_t)total * sizeof(float));
        if (!tmp) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        ru_half_to_f32(x->dtype, x->data, tmp, total);
        jb.x = jb.y = tmp; /* the loops are safe in place */
    }
    if (jb.l.inner == 1) {
        kiln_parallel_for(ctx, jb.l.outer, ru_grain(jb.l.n * 4), sm_range, &jb);
    } else {
        jb.nblk = (jb.l.inner + SM_BLOCK - 1) / SM_BLOCK;
        kiln_parallel_for(ctx, jb.l.outer * jb.nblk, ru_grain(jb.l.n * SM_BLOCK * 4), sm_range, &jb);
    }
    if (tmp) {
        ru_f32_to_half(y->dtype, tmp, y->data, total);
        free(tmp);
    }
    if (jb.fail.failed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    return KILN_OK;
}

static kiln_status softmax_compute(kiln_ctx *ctx) { return sm_compute(ctx, SM_SOFT); }
static kiln_status logsoftmax_compute(kiln_ctx *ctx) { return sm_compute(ctx, SM_LOG); }
static kiln_status hardmax_compute(kiln_ctx *ctx) { return sm_compute(ctx, SM_HARD); }

const kiln_op kiln_ops_softmax[] = {
    {"", "Softmax", 1, 0, NULL, sm_infer, softmax_compute, NULL},
    {"", "LogSoftmax", 1, 0, NULL, sm_infer, logsoftmax_compute, NULL},
    {"", "Hardmax", 1, 0, NULL, sm_infer, hardmax_compute, NULL},
    {0}};
