/* Rotary position embedding: ONNX RotaryEmbedding (opset 23) and com.microsoft RotaryEmbedding.
 * Each head vector's first rotary_dim entries are rotated pairwise, the pairs being (i, i + d/2)
 * or, interleaved, (2i, 2i + 1); the angle's cosine and sine come from caches indexed by position. */
#include "attention_common.h"

#include <stdlib.h>
#include <string.h>

typedef struct rope_job {
    const float *x, *cosc, *sinc;
    float *y;
    const int64_t *pos;   /* (B, S) positions, or NULL: cos/sin are (B, S, rd/2) */
    int64_t pos_base;     /* com.microsoft 1-element position_ids: position = base + s */
    int pos_scalar;
    int64_t B, N, S, H, rd;
    int heads_first;      /* (B, N, S, H) layout, else (B, S, N, H) */
    int interleaved;
} rope_job;

static void rope_range(void *arg, int64_t begin, int64_t end) {
    const rope_job *j = arg;
    int64_t half = j->rd / 2;
    for (int64_t r = begin; r < end; r++) { /* r enumerates (b, n, s) or (b, s, n) rows in memory order */
        int64_t b, s;
        if (j->heads_first) {
            s = r % j->S;
            b = r / (j->S * j->N);
        } else {
            s = (r / j->N) % j->S;
            b = r / (j->N * j->S);
        }
        const float *c, *sn;
        if (j->pos_scalar) {
            c = j->cosc + (j->pos_base + s) * half;
            sn = j->sinc + (j->pos_base + s) * half;
        } else if (j->pos) {
            int64_t p = j->pos[b * j->S + s];
            c = j->cosc + p * half;
            sn = j->sinc + p * half;
        } else {
            c = j->cosc + (b * j->S + s) * half;
            sn = j->sinc + (b * j->S + s) * half;
        }
        const float *x = j->x + r * j->H;
        float *y = j->y + r * j->H;
        if (j->interleaved) {
            for (int64_t i = 0; i < half; i++) {
                float x1 = x[2 * i], x2 = x[2 * i + 1];
                y[2 * i] = c[i] * x1 - sn[i] * x2;
                y[2 * i + 1] = sn[i] * x1 + c[i] * x2;
            }
        } else {
            for (int64_t i = 0; i < half; i++) {
                float x1 = x[i], x2 = x[i + half];
                y[i] = c[i] * x1 - sn[i] * x2;
                y[i + half] = sn[i] * x1 + c[i] * x2;
            }
        }
        if (j->rd < j->H && y != x) memcpy(y + j->rd, x + j->rd, sizeof(float) * (size_t)(j->H - j->rd));
    }
}

void kattn_rope_bsnh(kiln_ctx *ctx, float *x, int64_t B, int64_t S, int64_t N, int64_t H,
                     int64_t rd, const float *cosc, const float *sinc, const int64_t *pos,
                     int interleaved) {
    rope_job j;
    memset(&j, 0, sizeof j);
    j.x = x;
    j.y = x;
    j.cosc = cosc;
    j.sinc = sinc;
    j.pos = pos;
    j.B = B;
    j.N = N;
    j.S = S;
    j.H = H;
    j.rd = rd;
    j.interleaved = interleaved;
    kiln_parallel_for(ctx, B * N * S, 256, rope_range, &j);
}

/* Converts to float32 where needed, runs, converts back. */
static kiln_status rope_run(kiln_ctx *ctx, rope_job *j, const kiln_tensor *x, const kiln_tensor *cosc,
                            const kiln_tensor *sinc) {
    kiln_tensor *out = kiln_output(ctx, 0);
    if (!out) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output 0 is required");
    float *ox = NULL, *oc = NULL, *os = NULL, *oy = NULL;
    kiln_status st = kattn_as_f32(ctx, x, &j->x, &ox);
    if (st == KILN_OK) st = kattn_as_f32(ctx, cosc, &j->cosc, &oc);
    if (st == KILN_OK) st = kattn_as_f32(ctx, sinc, &j->sinc, &os);
    int64_t n = kiln_numel(x);
    if (st == KILN_OK) {
        if (out->dtype == KILN_DTYPE_FLOAT) {
            j->y = out->data;
        } else {
            oy = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
            if (!oy) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
            j->y = oy;
        }
    }
    if (st == KILN_OK) {
        int64_t rows = j->B * j->N * j->S;
        kiln_parallel_for(ctx, rows, 256, rope_range, j);
        if (oy) kattn_store_as(out->dtype, oy, out->data, n);
    }
    free(ox);
    free(oc);
    free(os);
    free(oy);
    return st;
}

static kiln_status check_types(kiln_ctx *ctx, const kiln_tensor *x, const kiln_tensor *c,
                               const kiln_tensor *s) {
    if (x->dtype != KILN_DTYPE_FLOAT && x->dtype != KILN_DTYPE_FLOAT16 && x->dtype != KILN_DTYPE_BFLOAT16)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input has element type %s; expected float, float16 or bfloat16",
                         kiln_dtype_name(x->dtype));
    if (c->dtype != x->dtype || s->dtype != x->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "cos_cache and sin_cache must have the input's type %s",
                         kiln_dtype_name(x->dtype));
    return KILN_OK;
}

/* ---- ONNX RotaryEmbedding: X, cos_cache, sin_cache, position_ids ---- */

typedef struct rope_cfg {
    const kiln_tensor *x, *cosc, *sinc, *pos;
    rope_job job;
} rope_cfg;

static kiln_status parse_onnx(kiln_ctx *ctx, rope_cfg *c) {
    char b1[128], b2[128];
    memset(c, 0, sizeof *c);
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, 0, &t));
    c->x = t;
    KILN_TRY(kiln_need_input(ctx, 1, &t));
    c->cosc = t;
    KILN_TRY(kiln_need_input(ctx, 2, &t));
    c->sinc = t;
    c->pos = kiln_input(ctx, 3);
    KILN_TRY(check_types(ctx, c->x, c->cosc, c->sinc));
    rope_job *j = &c->job;
    const kiln_tensor *x = c->x;
    int64_t nh = kiln_attr_int(ctx->node, "num_heads", 0);
    if (x->rank == 4) {
        j->heads_first = 1;
        j->B = x->dims[0];
        j->N = x->dims[1];
        j->S = x->dims[2];
        j->H = x->dims[3];
    } else if (x->rank == 3) {
        if (nh <= 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "a 3-D input needs the num_heads attribute");
        if (x->dims[2] % nh)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "hidden size %lld is not divisible by num_heads %lld",
                             (long long)x->dims[2], (long long)nh);
        j->B = x->dims[0];
        j->S = x->dims[1];
        j->N = nh;
        j->H = x->dims[2] / nh;
    } else {
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input must be 4-D (B, N, S, H) or 3-D (B, S, hidden), got %s",
                         kattn_shape(x, b1, sizeof b1));
    }
    int64_t rd = kiln_attr_int(ctx->node, "rotary_embedding_dim", 0);
    if (rd == 0) rd = j->H;
    if (rd < 0 || rd > j->H || rd % 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "rotary_embedding_dim %lld must be even and at most head_size %lld",
                         (long long)rd, (long long)j->H);
    j->rd = rd;
    j->interleaved = kiln_attr_int(ctx->node, "interleaved", 0) != 0;
    int64_t half = rd / 2;
    if (!kiln_shape_equal(c->cosc, c->sinc))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cos_cache %s and sin_cache %s differ in shape",
                         kattn_shape(c->cosc, b1, sizeof b1), kattn_shape(c->sinc, b2, sizeof b2));
    if (c->pos) {
        if (c->pos->dtype != KILN_DTYPE_INT64 || c->pos->rank != 2 || c->pos->dims[0] != j->B ||
            c->pos->dims[1] != j->S)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "position_ids must be int64 (B=%lld, S=%lld), got %s %s", (long long)j->B,
                             (long long)j->S, kiln_dtype_name(c->pos->dtype),
                             kattn_shape(c->pos, b1, sizeof b1));
        if (c->cosc->rank != 2 || c->cosc->dims[1] != half)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "with position_ids, cos_cache must be (max_position, %lld), got %s",
                             (long long)half, kattn_shape(c->cosc, b1, sizeof b1));
        if (kattn_host_readable(c->pos)) {
            const int64_t *p = c->pos->data;
            int64_t n = j->B * j->S, maxp = c->cosc->dims[0];
            for (int64_t i = 0; i < n; i++)
                if (p[i] < 0 || p[i] >= maxp)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "position_ids[%lld] = %lld is outside the cache [0, %lld)",
                                     (long long)i, (long long)p[i], (long long)maxp);
            j->pos = p;
        }
    } else if (c->cosc->rank != 3 || c->cosc->dims[0] != j->B || c->cosc->dims[1] != j->S ||
               c->cosc->dims[2] != half) {
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "without position_ids, cos_cache must be (B, S, %lld) = (%lld, %lld, %lld), "
                         "got %s", (long long)half, (long long)j->B, (long long)j->S, (long long)half,
                         kattn_shape(c->cosc, b1, sizeof b1));
    }
    return KILN_OK;
}

kiln_status kattn_rotary_infer(kiln_ctx *ctx) {
    static const int ins[] = {0, 1, 2, 3};
    const kiln_tensor *x = kiln_input(ctx, 0);
    if (kattn_static_unknown(ctx, ins, 4, x ? x->dtype : KILN_DTYPE_FLOAT)) return KILN_OK;
    rope_cfg c;
    KILN_TRY(parse_onnx(ctx, &c));
    return kiln_set_output_like(ctx, 0, c.x);
}

kiln_status kattn_rotary_compute(kiln_ctx *ctx) {
    rope_cfg c;
    KILN_TRY(parse_onnx(ctx, &c));
    return rope_run(ctx, &c.job, c.x, c.cosc, c.sinc);
}

/* ---- com.microsoft RotaryEmbedding: input, position_ids, cos_cache, sin_cache ---- */

static kiln_status parse_ms(kiln_ctx *ctx, rope_cfg *c) {
    char b1[128], b2[128];
    memset(c, 0, sizeof *c);
    kiln_tensor *t;
    KILN_TRY(kiln_need_input(ctx, 0, &t));
    c->x = t;
    KILN_TRY(kiln_need_input(ctx, 1, &t));
    c->pos = t;
    KILN_TRY(kiln_need_input(ctx, 2, &t));
    c->cosc = t;
    KILN_TRY(kiln_need_input(ctx, 3, &t));
    c->sinc = t;
    KILN_TRY(check_types(ctx, c->x, c->cosc, c->sinc));
    if (kiln_attr_int(ctx->node, "is_packed_batching", 0) != 0)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "is_packed_batching = 1 is not supported");
    rope_job *j = &c->job;
    const kiln_tensor *x = c->x;
    if (c->cosc->rank != 2 || !kiln_shape_equal(c->cosc, c->sinc))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "cos_cache and sin_cache must be equal 2-D (max_sequence_length, d/2), got %s "
                         "and %s", kattn_shape(c->cosc, b1, sizeof b1), kattn_shape(c->sinc, b2, sizeof b2));
    int64_t half = c->cosc->dims[1];
    int64_t nh = kiln_attr_int(ctx->node, "num_heads", 0);
    int64_t rd = kiln_attr_int(ctx->node, "rotary_embedding_dim", 0);
    if (x->rank == 4) {
        j->heads_first = 1;
        j->B = x->dims[0];
        j->N = x->dims[1];
        j->S = x->dims[2];
        j->H = x->dims[3];
    } else if (x->rank == 3) {
        j->B = x->dims[0];
        j->S = x->dims[1];
        int64_t D = x->dims[2];
        if (rd > 0 && nh <= 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "num_heads is required when rotary_embedding_dim is set");
        /* without num_heads the head size is the full rotation the cache describes */
        int64_t H = nh > 0 ? (D % nh ? -1 : D / nh) : 2 * half;
        if (H <= 0 || D % H)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "hidden size %lld cannot be split into heads (num_heads %lld, cache width "
                             "%lld)", (long long)D, (long long)nh, (long long)half);
        j->H = H;
        j->N = D / H;
    } else {
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input must be 3-D (B, S, D) or 4-D (B, N, S, H), got %s",
                         kattn_shape(x, b1, sizeof b1));
    }
    if (rd == 0) rd = j->H;
    if (rd < 0 || rd > j->H || rd % 2 || rd / 2 != half)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "rotary dimension %lld must be even, at most head size %lld and twice the cache "
                         "width %lld", (long long)rd, (long long)j->H, (long long)half);
    j->rd = rd;
    j->interleaved = kiln_attr_int(ctx->node, "interleaved", 0) != 0;
    const kiln_tensor *p = c->pos;
    if (p->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "position_ids must be int64, got %s",
                         kiln_dtype_name(p->dtype));
    int64_t maxp = c->cosc->dims[0];
    if (kiln_numel(p) == 1 && p->rank <= 1) {
        j->pos_scalar = 1;
        if (kattn_host_readable(p)) {
            j->pos_base = *(const int64_t *)p->data;
            if (j->pos_base < 0 || j->pos_base + j->S > maxp)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "positions %lld .. %lld are outside the cache [0, %lld)",
                                 (long long)j->pos_base, (long long)(j->pos_base + j->S - 1), (long long)maxp);
        }
    } else if (p->rank == 2 && p->dims[0] == j->B && p->dims[1] == j->S) {
        if (kattn_host_readable(p)) {
            const int64_t *pd = p->data;
            for (int64_t i = 0; i < j->B * j->S; i++)
                if (pd[i] < 0 || pd[i] >= maxp)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                     "position_ids[%lld] = %lld is outside the cache [0, %lld)",
                                     (long long)i, (long long)pd[i], (long long)maxp);
            j->pos = pd;
        }
    } else {
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "position_ids must be (1) or (B=%lld, S=%lld), got %s", (long long)j->B,
                         (long long)j->S, kattn_shape(p, b1, sizeof b1));
    }
    return KILN_OK;
}

kiln_status kattn_ms_rotary_infer(kiln_ctx *ctx) {
    static const int ins[] = {0, 1, 2, 3};
    const kiln_tensor *x = kiln_input(ctx, 0);
    if (kattn_static_unknown(ctx, ins, 4, x ? x->dtype : KILN_DTYPE_FLOAT)) return KILN_OK;
    rope_cfg c;
    KILN_TRY(parse_ms(ctx, &c));
    return kiln_set_output_like(ctx, 0, c.x);
}

kiln_status kattn_ms_rotary_compute(kiln_ctx *ctx) {
    rope_cfg c;
    KILN_TRY(parse_ms(ctx, &c));
    return rope_run(ctx, &c.job, c.x, c.cosc, c.sinc);
}
