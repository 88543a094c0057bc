/* com.microsoft ops from onnxruntime's transformers optimizer, with onnxruntime's semantics:
 *
 * EmbedLayerNormalization(input_ids, segment_ids?, word_emb, pos_emb, segment_emb?, gamma, beta?,
 *   mask?, position_ids?) -> output, mask_index?, embedding_sum?: the BERT embedding sum
 *   word[id] + position[pos] + segment[seg] and a LayerNorm over the hidden axis; mask_index[b]
 *   counts the ones of mask row b (0 without a mask).
 * BiasSplitGelu(X, bias): with Z = X + bias split in halves L | R on the last axis, L * Gelu(R)
 *   (erf form), the Stable Diffusion feed-forward gate.
 * GemmFastGelu(X, W, bias?): FastGelu(X · W + bias) (tanh form).
 *
 * The family table also lists MatMulNBits and GatherBlockQuantized (contrib_nbits.c). */
#include "contrib_transformers.h"
#include "gemm_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static int is_float_or_half(int dt) { return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_FLOAT16; }

/* A float32 view of t (its own data when float32, else a converted copy in *owned). */
static kiln_status view_f32(kiln_ctx *ctx, const kiln_tensor *t, const float **out, float **owned) {
    *owned = NULL;
    *out = NULL;
    if (!t) return KILN_OK;
    if (t->dtype == KILN_DTYPE_FLOAT) {
        *out = t->data;
        return KILN_OK;
    }
    int64_t n = kiln_numel(t);
    *owned = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!*owned) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kcvt_to_f32(ctx, t->dtype, t->data, *owned, n);
    *out = *owned;
    return KILN_OK;
}

/* Scratch for a float32 result that goes to y (y's own buffer when y is float32). */
static kiln_status result_f32(kiln_ctx *ctx, kiln_tensor *y, float **out, float **owned) {
    *owned = NULL;
    if (y->dtype == KILN_DTYPE_FLOAT) {
        *out = y->data;
        return KILN_OK;
    }
    int64_t n = kiln_numel(y);
    *owned = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!*owned) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    *out = *owned;
    return KILN_OK;
}

static int unknown_shapes(kiln_ctx *ctx, int n_in) {
    if (!ctx->static_mode) return 0;
    for (int i = 0; i < n_in && i < ctx->n_in; i++) {
        const kiln_tensor *t = kiln_input(ctx, i);
        if (t && !kiln_shape_concrete(t)) return 1;
    }
    return 0;
}

/* ---- EmbedLayerNormalization ---- */

enum { EL_IDS, EL_SEG, EL_WORD, EL_POS, EL_SEGEMB, EL_GAMMA, EL_BETA, EL_MASK, EL_POSIDS, EL_N };

typedef struct eln_cfg {
    const kiln_tensor *ids, *seg, *word, *pos, *segemb, *gamma, *beta, *mask, *posids;
    int64_t B, S, H;
    int dtype;
} eln_cfg;

static kiln_status need_int32(kiln_ctx *ctx, const kiln_tensor *t, const char *what) {
    if (t && t->dtype != KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has element type %s; expected int32", what,
                         kiln_dtype_name(t->dtype));
    return KILN_OK;
}

static kiln_status check_bs(kiln_ctx *ctx, const kiln_tensor *t, const eln_cfg *c, const char *what,
                            int allow_1s) {
    char b1[96];
    if (!t) return KILN_OK;
    int ok = t->rank == 2 && (t->dims[0] == c->B || (allow_1s && t->dims[0] == 1)) && t->dims[1] == c->S;
    if (!ok)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s %s must be (batch=%lld, sequence=%lld)%s",
                         what, kgemm_dims_str(t->rank, t->dims, b1, sizeof b1), (long long)c->B,
                         (long long)c->S, allow_1s ? " or (1, sequence)" : "");
    return KILN_OK;
}

static kiln_status check_table(kiln_ctx *ctx, const kiln_tensor *t, const eln_cfg *c, const char *what) {
    char b1[96];
    if (!t) return KILN_OK;
    if (t->dtype != c->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has type %s; expected %s", what,
                         kiln_dtype_name(t->dtype), kiln_dtype_name(c->dtype));
    if (t->rank != 2 || t->dims[1] != c->H)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s %s must be 2-D (rows, hidden=%lld)", what,
                         kgemm_dims_str(t->rank, t->dims, b1, sizeof b1), (long long)c->H);
    return KILN_OK;
}

static kiln_status check_vec(kiln_ctx *ctx, const kiln_tensor *t, const eln_cfg *c, const char *what) {
    char b1[96];
    if (!t) return KILN_OK;
    if (t->dtype != c->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has type %s; expected %s", what,
                         kiln_dtype_name(t->dtype), kiln_dtype_name(c->dtype));
    if (t->rank != 1 || t->dims[0] != c->H)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s %s must be 1-D of length hidden=%lld", what,
                         kgemm_dims_str(t->rank, t->dims, b1, sizeof b1), (long long)c->H);
    return KILN_OK;
}

static kiln_status eln_parse(kiln_ctx *ctx, eln_cfg *c) {
    char b1[96];
    memset(c, 0, sizeof *c);
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, EL_IDS, &t));
    c->ids = t;
    KILN_TRY(kiln_need_input(ctx, EL_WORD, &t));
    c->word = t;
    KILN_TRY(kiln_need_input(ctx, EL_POS, &t));
    c->pos = t;
    KILN_TRY(kiln_need_input(ctx, EL_GAMMA, &t));
    c->gamma = t;
    c->seg = kiln_input(ctx, EL_SEG);
    c->segemb = kiln_input(ctx, EL_SEGEMB);
    c->beta = kiln_input(ctx, EL_BETA);
    c->mask = ctx->n_in > EL_MASK ? kiln_input(ctx, EL_MASK) : NULL;
    c->posids = ctx->n_in > EL_POSIDS ? kiln_input(ctx, EL_POSIDS) : NULL;
    if ((c->seg == NULL) != (c->segemb == NULL))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "segment_ids and segment_embedding must both be present or both absent");
    KILN_TRY(need_int32(ctx, c->ids, "input_ids"));
    KILN_TRY(need_int32(ctx, c->seg, "segment_ids"));
    KILN_TRY(need_int32(ctx, c->mask, "mask"));
    KILN_TRY(need_int32(ctx, c->posids, "position_ids"));
    c->dtype = c->word->dtype;
    if (!is_float_or_half(c->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "word_embedding has element type %s; expected float or float16",
                         kiln_dtype_name(c->dtype));
    if (c->ids->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input_ids %s must be 2-D (batch, sequence)",
                         kgemm_dims_str(c->ids->rank, c->ids->dims, b1, sizeof b1));
    c->B = c->ids->dims[0];
    c->S = c->ids->dims[1];
    if (c->word->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "word_embedding %s must be 2-D (vocab, hidden)",
                         kgemm_dims_str(c->word->rank, c->word->dims, b1, sizeof b1));
    c->H = c->word->dims[1];
    KILN_TRY(check_bs(ctx, c->seg, c, "segment_ids", 0));
    KILN_TRY(check_bs(ctx, c->mask, c, "mask", 0));
    KILN_TRY(check_bs(ctx, c->posids, c, "position_ids", 1));
    KILN_TRY(check_table(ctx, c->pos, c, "position_embedding"));
    KILN_TRY(check_table(ctx, c->segemb, c, "segment_embedding"));
    KILN_TRY(check_vec(ctx, c->gamma, c, "gamma"));
    KILN_TRY(check_vec(ctx, c->beta, c, "beta"));
    if (!c->posids && c->pos->dims[0] < c->S)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "position_embedding has %lld rows but the sequence has %lld tokens",
                         (long long)c->pos->dims[0], (long long)c->S);
    return KILN_OK;
}

static kiln_status eln_infer(kiln_ctx *ctx) {
    const kiln_tensor *w = kiln_input(ctx, EL_WORD);
    int dt = w ? w->dtype : KILN_DTYPE_FLOAT;
    if (unknown_shapes(ctx, EL_N)) {
        for (int o = 0; o < ctx->n_out; o++)
            if (kiln_output(ctx, o)) KILN_TRY(kiln_set_output_unknown(ctx, o, o == 1 ? KILN_DTYPE_INT32 : dt));
        return KILN_OK;
    }
    eln_cfg c;
    KILN_TRY(eln_parse(ctx, &c));
    int64_t d[3] = {c.B, c.S, c.H};
    KILN_TRY(kiln_set_output(ctx, 0, c.dtype, 3, d));
    if (ctx->n_out > 1 && kiln_output(ctx, 1)) KILN_TRY(kiln_set_output(ctx, 1, KILN_DTYPE_INT32, 1, d));
    if (ctx->n_out > 2 && kiln_output(ctx, 2)) KILN_TRY(kiln_set_output(ctx, 2, c.dtype, 3, d));
    return KILN_OK;
}

typedef struct eln_job {
    const eln_cfg *c;
    const float *word, *pos, *segemb, *gamma, *beta;
    float *out, *sum;
    float eps;
} eln_job;

static void eln_range(void *arg, int64_t begin, int64_t end) {
    const eln_job *j = arg;
    const eln_cfg *c = j->c;
    const int32_t *ids = c->ids->data, *seg = c->seg ? c->seg->data : NULL;
    const int32_t *pids = c->posids ? c->posids->data : NULL;
    int64_t H = c->H, S = c->S;
    int pid_bcast = c->posids && c->posids->dims[0] == 1;
    for (int64_t r = begin; r < end; r++) { /* r = b * S + s, indices checked by the caller */
        int64_t s = r % S;
        int64_t p = pids ? pids[pid_bcast ? s : r] : s;
        const float *we = j->word + (int64_t)ids[r] * H, *pe = j->pos + p * H;
        const float *se = seg ? j->segemb + (int64_t)seg[r] * H : NULL;
        float *o = j->out + r * H;
        double mean = 0.0;
        for (int64_t h = 0; h < H; h++) {
            float v = we[h] + pe[h];
            if (se) v += se[h];
            o[h] = v;
            mean += v;
        }
        if (j->sum) memcpy(j->sum + r * H, o, sizeof(float) * (size_t)H);
        mean /= (double)H;
        double var = 0.0;
        for (int64_t h = 0; h < H; h++) {
            double dv = o[h] - mean;
            var += dv * dv;
        }
        float inv = (float)(1.0 / sqrt(var / (double)H + j->eps)), m = (float)mean;
        for (int64_t h = 0; h < H; h++) {
            float v = (o[h] - m) * inv * j->gamma[h];
            o[h] = j->beta ? v + j->beta[h] : v;
        }
    }
}

/* Fails naming the first index of t (n values) outside [0, rows). */
static kiln_status check_ids(kiln_ctx *ctx, const kiln_tensor *t, int64_t n, int64_t rows,
                             const char *what, const char *table) {
    const int32_t *v = t->data;
    for (int64_t i = 0; i < n; i++)
        if (v[i] < 0 || v[i] >= rows)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "%s[%lld] = %d is outside [0, %lld), the rows of %s", what, (long long)i,
                             (int)v[i], (long long)rows, table);
    return KILN_OK;
}

static kiln_status eln_compute(kiln_ctx *ctx) {
    eln_cfg c;
    KILN_TRY(eln_parse(ctx, &c));
    int64_t n = c.B * c.S;
    KILN_TRY(check_ids(ctx, c.ids, n, c.word->dims[0], "input_ids", "word_embedding"));
    if (c.seg) KILN_TRY(check_ids(ctx, c.seg, n, c.segemb->dims[0], "segment_ids", "segment_embedding"));
    if (c.posids)
        KILN_TRY(check_ids(ctx, c.posids, kiln_numel(c.posids), c.pos->dims[0], "position_ids",
                           "position_embedding"));
    kiln_tensor *y = kiln_output(ctx, 0);
    kiln_tensor *mi = ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    kiln_tensor *es = ctx->n_out > 2 ? kiln_output(ctx, 2) : NULL;
    if (mi) {
        int32_t *m = mi->data;
        const int32_t *mk = c.mask ? c.mask->data : NULL;
        for (int64_t b = 0; b < c.B; b++) {
            int32_t cnt = 0;
            if (mk)
                for (int64_t s = 0; s < c.S; s++) cnt += mk[b * c.S + s] == 1;
            m[b] = cnt;
        }
    }
    if (!y || n == 0 || c.H == 0) return KILN_OK;
    eln_job j;
    memset(&j, 0, sizeof j);
    j.c = &c;
    j.eps = kiln_attr_float(ctx->node, "epsilon", 1e-12f);
    float *own[7] = {0};
    kiln_status st = view_f32(ctx, c.word, &j.word, &own[0]);
    if (st == KILN_OK) st = view_f32(ctx, c.pos, &j.pos, &own[1]);
    if (st == KILN_OK) st = view_f32(ctx, c.segemb, &j.segemb, &own[2]);
    if (st == KILN_OK) st = view_f32(ctx, c.gamma, &j.gamma, &own[3]);
    if (st == KILN_OK) st = view_f32(ctx, c.beta, &j.beta, &own[4]);
    if (st == KILN_OK) st = result_f32(ctx, y, &j.out, &own[5]);
    if (st == KILN_OK && es) st = result_f32(ctx, es, &j.sum, &own[6]);
    if (st == KILN_OK) {
        kiln_parallel_for(ctx, n, kpar_grain(n, (double)n * (double)c.H * 3.0), eln_range, &j);
        if (own[5]) kcvt_from_f32(ctx, y->dtype, own[5], y->data, n * c.H);
        if (own[6]) kcvt_from_f32(ctx, es->dtype, own[6], es->data, n * c.H);
    }
    for (int i = 0; i < 7; i++) free(own[i]);
    return st;
}

/* ---- BiasSplitGelu ---- */

static kiln_status bsg_infer(kiln_ctx *ctx) {
    char b1[96];
    kiln_tensor *x, *b;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &b));
    if (!is_float_or_half(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has element type %s; expected float or float16",
                         kiln_dtype_name(x->dtype));
    if (b->dtype != x->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias has type %s; expected X's type %s",
                         kiln_dtype_name(b->dtype), kiln_dtype_name(x->dtype));
    if (unknown_shapes(ctx, 2)) return kiln_set_output_unknown(ctx, 0, x->dtype);
    if (x->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X %s must be 3-D (batch, tokens, channels)",
                         kgemm_dims_str(x->rank, x->dims, b1, sizeof b1));
    int64_t D = x->dims[2];
    if (D % 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X's last dimension %lld must be even", (long long)D);
    if (b->rank != 1 || b->dims[0] != D)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias %s must be 1-D of length %lld",
                         kgemm_dims_str(b->rank, b->dims, b1, sizeof b1), (long long)D);
    int64_t d[3] = {x->dims[0], x->dims[1], D / 2};
    return kiln_set_output(ctx, 0, x->dtype, 3, d);
}

typedef struct bsg_job {
    const float *x, *b;
    float *y;
    int64_t half;
} bsg_job;

static void bsg_range(void *arg, int64_t begin, int64_t end) {
    const bsg_job *j = arg;
    int64_t h = j->half;
    for (int64_t r = begin; r < end; r++) {
        const float *x = j->x + r * 2 * h;
        float *y = j->y + r * h;
        for (int64_t i = 0; i < h; i++) {
            float l = x[i] + j->b[i], g = x[i + h] + j->b[i + h];
            y[i] = l * 0.5f * g * (1.0f + erff(g * 0.70710678118654752f));
        }
    }
}

static kiln_status bsg_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *b = kiln_input(ctx, 1), *y = kiln_output(ctx, 0);
    int64_t rows = x->dims[0] * x->dims[1];
    if (!y || rows == 0 || x->dims[2] == 0) return KILN_OK;
    bsg_job j = {.half = x->dims[2] / 2};
    float *own[3] = {0};
    kiln_status st = view_f32(ctx, x, &j.x, &own[0]);
    if (st == KILN_OK) st = view_f32(ctx, b, &j.b, &own[1]);
    if (st == KILN_OK) st = result_f32(ctx, y, &j.y, &own[2]);
    if (st == KILN_OK) {
        kiln_parallel_for(ctx, rows, kpar_grain(rows, (double)rows * (double)j.half * 8.0), bsg_range, &j);
        if (own[2]) kcvt_from_f32(ctx, y->dtype, own[2], y->data, rows * j.half);
    }
    for (int i = 0; i < 3; i++) free(own[i]);
    return st;
}

/* ---- GemmFastGelu ---- */

static kiln_status gfg_infer(kiln_ctx *ctx) {
    char b1[96], b2[96];
    kiln_tensor *x, *w, *b = kiln_input(ctx, 2);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &w));
    if (!is_float_or_half(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has element type %s; expected float or float16",
                         kiln_dtype_name(x->dtype));
    if (w->dtype != x->dtype || (b && b->dtype != x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "W and bias must have X's type %s",
                         kiln_dtype_name(x->dtype));
    if (unknown_shapes(ctx, 3)) return kiln_set_output_unknown(ctx, 0, x->dtype);
    if (x->rank < 1 || w->rank != 2 || x->dims[x->rank - 1] != w->dims[0])
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "X %s and W %s must be (..., K) and 2-D (K, N)",
                         kgemm_dims_str(x->rank, x->dims, b1, sizeof b1),
                         kgemm_dims_str(w->rank, w->dims, b2, sizeof b2));
    if (b && (b->rank != 1 || b->dims[0] != w->dims[1]))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias %s must be 1-D of length N=%lld",
                         kgemm_dims_str(b->rank, b->dims, b1, sizeof b1), (long long)w->dims[1]);
    int64_t d[KILN_MAX_RANK];
    memcpy(d, x->dims, sizeof(int64_t) * (size_t)x->rank);
    d[x->rank - 1] = w->dims[1];
    return kiln_set_output(ctx, 0, x->dtype, x->rank, d);
}

typedef struct gfg_job {
    float *y;
    const float *b;
    int64_t N;
} gfg_job;

static void gfg_range(void *arg, int64_t begin, int64_t end) {
    const gfg_job *j = arg;
    for (int64_t r = begin; r < end; r++) {
        float *y = j->y + r * j->N;
        for (int64_t i = 0; i < j->N; i++) {
            float v = j->b ? y[i] + j->b[i] : y[i];
            y[i] = 0.5f * v * (1.0f + tanhf(0.7978845608028654f * v * (1.0f + 0.044715f * v * v)));
        }
    }
}

static kiln_status gfg_compute(kiln_ctx *ctx) {
    kiln_tensor *x = kiln_input(ctx, 0), *w = kiln_input(ctx, 1), *b = kiln_input(ctx, 2);
    kiln_tensor *y = kiln_output(ctx, 0);
    int64_t K = w->dims[0], N = w->dims[1], M = K ? kiln_numel(x) / K : kiln_numel(y) / (N ? N : 1);
    if (!y || M == 0 || N == 0) return KILN_OK;
    const float *xf, *wf, *bf;
    float *yf, *own[4] = {0};
    kiln_status st = view_f32(ctx, x, &xf, &own[0]);
    if (st == KILN_OK) st = view_f32(ctx, w, &wf, &own[1]);
    if (st == KILN_OK) st = view_f32(ctx, b, &bf, &own[2]);
    if (st == KILN_OK) st = result_f32(ctx, y, &yf, &own[3]);
    if (st == KILN_OK) {
        if (K > 0) kgemm_f32(ctx, 0, 0, M, N, K, 1.0f, xf, K, wf, N, 0.0f, yf, N);
        else memset(yf, 0, sizeof(float) * (size_t)(M * N));
        gfg_job j = {yf, bf, N};
        kiln_parallel_for(ctx, M, kpar_grain(M, (double)M * (double)N * 10.0), gfg_range, &j);
        if (own[3]) kcvt_from_f32(ctx, y->dtype, own[3], y->data, M * N);
    }
    for (int i = 0; i < 4; i++) free(own[i]);
    return st;
}

#define MS "com.microsoft"
const kiln_op kiln_ops_transformers[] = {
    {MS, "EmbedLayerNormalization", 1, 0, NULL, eln_infer, eln_compute, NULL},
    {MS, "BiasSplitGelu", 1, 0, NULL, bsg_infer, bsg_compute, NULL},
    {MS, "GemmFastGelu", 1, 0, NULL, gfg_infer, gfg_compute, NULL},
    {MS, "MatMulNBits", 1, 0, NULL, kctr_nbits_infer, kctr_nbits_compute, NULL},
    {MS, "GatherBlockQuantized", 1, 0, NULL, kctr_gbq_infer, kctr_gbq_compute, NULL},
    {0},
};
