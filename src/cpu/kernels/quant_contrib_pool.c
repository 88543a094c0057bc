/* com.microsoft QLinearGlobalAveragePool, QLinearAveragePool and QLinearSoftmax, with
 * onnxruntime's arithmetic: the global pool sums integers and requantises once; the windowed pool
 * averages dequantised float32 values; softmax reads exponentials from a 256-entry table. */
#include "conv_util.h"
#include "quant_contrib.h"
#include <float.h>
#include <stdlib.h>

static const int Q8_TYPES[] = {KILN_DTYPE_UINT8, KILN_DTYPE_INT8};

typedef struct qpool {
    kiln_tensor *x;
    float xs, ys;
    int32_t xz, yz;
    int channels_last;
    int64_t N, C, image;     /* batch, channels, spatial size */
    int nsp;
    int64_t sp[KCONV_MAX_ND]; /* spatial dims */
} qpool;

static kiln_status qpool_common(kiln_ctx *ctx, qpool *p) {
    char b[96];
    memset(p, 0, sizeof *p);
    KILN_TRY(qc_need(ctx, 0, "X", &p->x, 2, Q8_TYPES));
    KILN_TRY(qc_scale1(ctx, 1, "x_scale", 1, &p->xs));
    KILN_TRY(qc_zp1(ctx, 2, "x_zero_point", p->x->dtype, 0, &p->xz));
    KILN_TRY(qc_scale1(ctx, 3, "y_scale", 1, &p->ys));
    KILN_TRY(qc_zp1(ctx, 4, "y_zero_point", p->x->dtype, 0, &p->yz));
    p->channels_last = kiln_attr_int(ctx->node, "channels_last", 0) != 0;
    const kiln_tensor *x = p->x;
    if (x->rank < 0) return KILN_OK;
    if (x->rank < 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input X %s must have rank >= 3",
                         QE_SHAPE(x, b));
    p->nsp = x->rank - 2;
    int s0 = p->channels_last ? 1 : 2;
    p->N = x->dims[0];
    p->C = p->channels_last ? x->dims[x->rank - 1] : x->dims[1];
    p->image = 1;
    for (int i = 0; i < p->nsp; i++) {
        p->sp[i] = x->dims[s0 + i];
        p->image = p->image < 0 || p->sp[i] < 0 ? KILN_DIM_UNKNOWN : p->image * p->sp[i];
    }
    return KILN_OK;
}

/* Output dims from spatial output sizes, in the input's layout. */
static void qpool_out_dims(const qpool *p, const int64_t *out_sp, int64_t *dims) {
    int s0 = p->channels_last ? 1 : 2;
    memcpy(dims, p->x->dims, sizeof(int64_t) * (size_t)p->x->rank);
    for (int i = 0; i < p->nsp; i++) dims[s0 + i] = out_sp[i];
}

/* ---- global average ---- */

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
/* Sum of n 8-bit values (int8 when sgn, else uint8): a SAD against zero adds 8 bytes into each
 * 64-bit lane, 32 bytes a step (int8 biased to uint8 by flipping the sign bit, 128 each taken off
 * after). The element-wise loop cost 8x ORT's time on MobileNetV3's squeeze-excite pools. */
__attribute__((target("avx2"))) static int64_t sum_q8_avx2(const uint8_t *x, int64_t n, int sgn) {
    __m256i acc = _mm256_setzero_si256(), zero = _mm256_setzero_si256();
    __m256i flip = _mm256_set1_epi8(sgn ? (char)0x80 : 0);
    int64_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i v = _mm256_xor_si256(_mm256_loadu_si256((const __m256i *)(x + i)), flip);
        acc = _mm256_add_epi64(acc, _mm256_sad_epu8(v, zero));
    }
    if (i + 16 <= n) {
        __m128i v = _mm_xor_si128(_mm_loadu_si128((const __m128i *)(x + i)), _mm256_castsi256_si128(flip));
        acc = _mm256_add_epi64(acc, _mm256_zextsi128_si256(_mm_sad_epu8(v, _mm_setzero_si128())));
        i += 16;
    }
    __m128i s2 = _mm_add_epi64(_mm256_castsi256_si128(acc), _mm256_extracti128_si256(acc, 1));
    int64_t s = _mm_cvtsi128_si64(s2) + _mm_extract_epi64(s2, 1) - (sgn ? 128 * i : 0);
    for (; i < n; i++) s += sgn ? (int64_t)(int8_t)x[i] : (int64_t)x[i];
    return s;
}
#define QPOOL_SUM_AVX2 1
#endif

typedef struct gap_job {
    const qpool *p;
    void *y;
    float scale;
    int32_t bias, lo, hi;
    int avx2;
} gap_job;

/* One output per (batch, channel): the integer sum minus zp * image, requantised with
 * x_scale / (y_scale * image). */
static void gap_range(void *arg, int64_t b, int64_t e) {
    const gap_job *j = arg;
    const qpool *p = j->p;
    int dt = p->x->dtype;
    for (int64_t nc = b; nc < e; nc++) {
        int64_t n = nc / p->C, c = nc % p->C;
        int32_t acc = j->bias;
        if (p->channels_last) {
            for (int64_t s = 0; s < p->image; s++) acc += qc_q8(dt, p->x->data, (n * p->image + s) * p->C + c);
#ifdef QPOOL_SUM_AVX2
        } else if (j->avx2) { /* int32 wrap-around as the element-wise sum's */
            int64_t s = sum_q8_avx2((const uint8_t *)p->x->data + nc * p->image, p->image,
                                    dt == KILN_DTYPE_INT8);
            acc = (int32_t)(uint32_t)((uint32_t)acc + (uint32_t)s);
#endif
        } else {
            for (int64_t s = 0; s < p->image; s++) acc += qc_q8(dt, p->x->data, nc * p->image + s);
        }
        qc_store8(dt, j->y, nc, qc_requant(acc, j->scale, p->yz, j->lo, j->hi));
    }
}

static void gap_run(kiln_ctx *ctx, const qpool *p, void *y) {
    gap_job j = {p, y, p->xs / (p->ys * (float)p->image), -p->xz * (int32_t)p->image, 0, 0, 0};
#ifdef QPOOL_SUM_AVX2
    j.avx2 = __builtin_cpu_supports("avx2");
#endif
    qc_q8_range(p->x->dtype, &j.lo, &j.hi);
    kiln_parallel_for(ctx, p->N * p->C, 1 + 32768 / (p->image + 1), gap_range, &j);
}

kiln_status qc_gavgpool_infer(kiln_ctx *ctx) {
    qpool p;
    KILN_TRY(qpool_common(ctx, &p));
    if (p.x->rank < 0) return kiln_set_output_unknown(ctx, 0, p.x->dtype);
    int64_t ones[KCONV_MAX_ND], dims[KILN_MAX_RANK];
    for (int i = 0; i < p.nsp; i++) ones[i] = 1;
    qpool_out_dims(&p, ones, dims);
    return kiln_set_output(ctx, 0, p.x->dtype, p.x->rank, dims);
}

kiln_status qc_gavgpool_compute(kiln_ctx *ctx) {
    qpool p;
    KILN_TRY(qpool_common(ctx, &p));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    if (p.image >= 0x1000000)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "image size %lld is too large (>= 2^24)",
                         (long long)p.image);
    gap_run(ctx, &p, y->data);
    return KILN_OK;
}

/* ---- windowed average ---- */

static kiln_status avg_geom(kiln_ctx *ctx, const qpool *p, kconv_geom *g) {
    int nk = 0;
    const int64_t *ks = kiln_attr_ints(ctx->node, "kernel_shape", &nk);
    if (!ks) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'kernel_shape' is required");
    if (nk != p->nsp)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "kernel_shape has %d values but the input has %d spatial dims", nk, p->nsp);
    if (p->nsp > 3)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "pooling over %d spatial dims (at most 3)", p->nsp);
    memset(g, 0, sizeof *g);
    g->nd = p->nsp;
    g->N = p->N;
    g->C = g->M = p->C;
    g->group = 1;
    for (int i = 0; i < p->nsp; i++) {
        g->k[i] = ks[i];
        g->in[i] = p->sp[i];
    }
    return kconv_window(ctx, g, 0, (int)kiln_attr_int(ctx->node, "ceil_mode", 0));
}

kiln_status qc_avgpool_infer(kiln_ctx *ctx) {
    qpool p;
    KILN_TRY(qpool_common(ctx, &p));
    if (p.x->rank < 0) return kiln_set_output_unknown(ctx, 0, p.x->dtype);
    kconv_geom g;
    KILN_TRY(avg_geom(ctx, &p, &g));
    int64_t dims[KILN_MAX_RANK];
    qpool_out_dims(&p, g.out, dims);
    return kiln_set_output(ctx, 0, p.x->dtype, p.x->rank, dims);
}

typedef struct avg_job {
    const qpool *p;
    const kconv_geom *g;
    const float *xf; /* dequantised input */
    void *y;
    int include_pad;
    int32_t lo, hi;
} avg_job;

/* One output pixel of every channel of one image per item; windows are clipped at the input's
 * end (not its padded end), and the sum runs in row-major window order, as onnxruntime's. */
static void avg_range(void *arg, int64_t b, int64_t e) {
    const avg_job *j = arg;
    const qpool *p = j->p;
    const kconv_geom *g = j->g;
    int nd = g->nd, dt = p->x->dtype;
    int64_t in3[3] = {1, 1, 1}, out3[3] = {1, 1, 1}, k3[3] = {1, 1, 1}, s3[3] = {1, 1, 1}, pb3[3] = {0, 0, 0};
    for (int i = 0; i < nd; i++) {
        in3[i] = g->in[i];
        out3[i] = g->out[i];
        k3[i] = g->k[i];
        s3[i] = g->stride[i];
        pb3[i] = g->pad_b[i];
    }
    int64_t ksize = k3[0] * k3[1] * k3[2];
    for (int64_t it = b; it < e; it++) {
        int64_t n = it / g->out_size, o = it % g->out_size;
        int64_t o2 = o % out3[2], o1 = (o / out3[2]) % out3[1], o0 = o / (out3[2] * out3[1]);
        int64_t lo[3], hi[3], oc[3] = {o0, o1, o2};
        for (int i = 0; i < 3; i++) {
            int64_t st = oc[i] * s3[i] - pb3[i], en = st + k3[i];
            if (en > in3[i]) en = in3[i];
            if (st < 0) st = 0;
            lo[i] = st;
            hi[i] = en;
        }
        int64_t count = j->include_pad ? ksize : (hi[0] - lo[0]) * (hi[1] - lo[1]) * (hi[2] - lo[2]);
        for (int64_t c = 0; c < p->C; c++) {
            float sum = 0.0f;
            for (int64_t h = lo[0]; h < hi[0]; h++)
                for (int64_t w = lo[1]; w < hi[1]; w++)
                    for (int64_t d = lo[2]; d < hi[2]; d++) {
                        int64_t s = (h * in3[1] + w) * in3[2] + d;
                        int64_t xi = p->channels_last ? (n * g->in_size + s) * p->C + c
                                                      : (n * p->C + c) * g->in_size + s;
                        sum += j->xf[xi];
                    }
            sum /= (float)count;
            int32_t r = qc_clamp(qc_cvt(sum / p->ys + (float)p->yz), j->lo, j->hi);
            int64_t yi = p->channels_last ? (n * g->out_size + o) * p->C + c : (n * p->C + c) * g->out_size + o;
            qc_store8(dt, j->y, yi, r);
        }
    }
}

kiln_status qc_avgpool_compute(kiln_ctx *ctx) {
    qpool p;
    KILN_TRY(qpool_common(ctx, &p));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    kconv_geom g;
    KILN_TRY(avg_geom(ctx, &p, &g));
    /* a window covering the whole unpadded image is onnxruntime's global pool */
    int global = 1;
    for (int i = 0; i < g.nd; i++)
        if (g.k[i] != g.in[i] || g.pad_b[i] || g.pad_e[i]) global = 0;
    if (global) {
        if (p.image >= 0x1000000)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "image size %lld is too large (>= 2^24)",
                             (long long)p.image);
        gap_run(ctx, &p, y->data);
        return KILN_OK;
    }
    int64_t n = kiln_numel(p.x);
    float *xf = malloc(sizeof(float) * (size_t)(n + 1));
    if (!xf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for QLinearAveragePool");
    float lut[256];
    int dt = p.x->dtype;
    for (int i = 0; i < 256; i++) {
        int32_t v = dt == KILN_DTYPE_INT8 ? (int32_t)(int8_t)(uint8_t)i : i;
        lut[i] = p.xs * (float)(v - p.xz);
    }
    const uint8_t *xb = p.x->data;
    for (int64_t i = 0; i < n; i++) xf[i] = lut[xb[i]];
    avg_job j = {&p, &g, xf, y->data, kiln_attr_int(ctx->node, "count_include_pad", 0) != 0, 0, 0};
    qc_q8_range(dt, &j.lo, &j.hi);
    kiln_parallel_for(ctx, p.N * g.out_size, 1 + 8192 / (p.C * g.k_size + 1), avg_range, &j);
    free(xf);
    return KILN_OK;
}

/* ---- QLinearSoftmax ---- */

typedef struct qsm {
    kiln_tensor *x;
    float xs, ys;
    int32_t yz;
    int opset, axis;
} qsm;

static kiln_status qsm_check(kiln_ctx *ctx, qsm *s) {
    int32_t xz;
    KILN_TRY(qc_need(ctx, 0, "X", &s->x, 2, Q8_TYPES));
    KILN_TRY(qc_scale1(ctx, 1, "X_scale", 1, &s->xs));
    KILN_TRY(qc_zp1(ctx, 2, "x_zero_point", s->x->dtype, 0, &xz));
    KILN_TRY(qc_scale1(ctx, 3, "y_scale", 1, &s->ys));
    KILN_TRY(qc_zp1(ctx, 4, "y_zero_point", s->x->dtype, 0, &s->yz));
    if (!kiln_has_attr(ctx->node, "opset"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'opset' is required");
    s->opset = (int)kiln_attr_int(ctx->node, "opset", 13);
    s->axis = 0;
    if (s->x->rank < 0) return KILN_OK;
    /* the schema defaults axis to -1 for every opset value */
    int64_t axis = kiln_attr_int(ctx->node, "axis", -1);
    if (s->x->rank == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input X must have rank >= 1");
    return kiln_norm_axis(ctx, axis, s->x->rank, "axis", &s->axis);
}

kiln_status qc_softmax_infer(kiln_ctx *ctx) {
    qsm s;
    KILN_TRY(qsm_check(ctx, &s));
    if (s.x->rank < 0) return kiln_set_output_unknown(ctx, 0, s.x->dtype);
    return kiln_set_output_like(ctx, 0, s.x);
}

typedef struct qsm_job {
    const qsm *s;
    const float *table;
    void *y;
    int64_t D, inner;
    float y_scale;
} qsm_job;

/* Each reduction of D elements (stride `inner`): the table holds exp((i - 255 + shift) * x_scale),
 * indexed so that the row's maximum lands on entry 255; the sum is float32 in order, and each
 * output is round(e * floor(1 / y_scale) / sum) + y_zero_point, saturated. */
static void qsm_range(void *arg, int64_t b, int64_t e) {
    const qsm_job *j = arg;
    int dt = j->s->x->dtype;
    const uint8_t *x = j->s->x->data;
    for (int64_t r = b; r < e; r++) {
        int64_t base = (r / j->inner) * j->D * j->inner + r % j->inner;
        int32_t xmax = -1000;
        for (int64_t k = 0; k < j->D; k++) {
            int32_t v = qc_q8(dt, x, base + k * j->inner);
            if (v > xmax) xmax = v;
        }
        float sum = 0.0f;
        for (int64_t k = 0; k < j->D; k++) {
            int32_t v = qc_q8(dt, x, base + k * j->inner);
            sum += dt == KILN_DTYPE_INT8 ? j->table[(uint8_t)(127 - xmax + v)] : j->table[255 - xmax + v];
        }
        for (int64_t k = 0; k < j->D; k++) {
            int64_t i = base + k * j->inner;
            int32_t v = qc_q8(dt, x, i);
            float t = dt == KILN_DTYPE_INT8 ? j->table[(uint8_t)(127 - xmax + v)] : j->table[255 - xmax + v];
            int32_t q = sum == 0.0f ? j->s->yz : qc_clamp(qc_cvt((t * j->y_scale) / sum), -1024, 1024) + j->s->yz;
            if (dt == KILN_DTYPE_INT8) ((int8_t *)j->y)[i] = (int8_t)qc_clamp(q, -128, 127);
            else ((uint8_t *)j->y)[i] = (uint8_t)qc_clamp(q, 0, 255);
        }
    }
}

kiln_status qc_softmax_compute(kiln_ctx *ctx) {
    qsm s;
    KILN_TRY(qsm_check(ctx, &s));
    kiln_tensor *y = kiln_output(ctx, 0);
    int64_t n = kiln_numel(s.x);
    if (!y || n == 0) return KILN_OK;
    int64_t D = 1, inner = 1;
    if (s.opset < 13) {
        for (int d = s.axis; d < s.x->rank; d++) D *= s.x->dims[d];
    } else {
        D = s.x->dims[s.axis];
        for (int d = s.axis + 1; d < s.x->rank; d++) inner *= s.x->dims[d];
    }
    float table[256];
    double shift = log((double)(FLT_MAX / (float)D));
    shift = (shift - 5.0 > 0.0 ? shift - 5.0 : 0.0) / (double)s.xs;
    int is_signed = s.x->dtype == KILN_DTYPE_INT8;
    for (int i = 0; i < 256; i++) {
        double v = exp(((double)i - 255.0 + shift) * (double)s.xs);
        table[(uint8_t)(is_signed ? i - 128 : i)] = (float)v;
    }
    qsm_job j = {&s, table, y->data, D, inner, floorf(1.0f / s.ys)};
    kiln_parallel_for(ctx, n / D, 1 + 16384 / (3 * D + 1), qsm_range, &j);
    return KILN_OK;
}
