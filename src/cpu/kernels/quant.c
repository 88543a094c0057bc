/* Linear quantisation: QuantizeLinear, DequantizeLinear (per-tensor, per-axis and blocked scales;
 * 8/16/32-bit integers, packed 4- and 2-bit integers, float8 and float4 codes) and
 * DynamicQuantizeLinear. The table of the whole quant family is at the end of this file. */
#include "quant_elem.h"
#include "quant_isa.h"
#include "quant_kernels.h"
#include <float.h>
#include <stdlib.h>

int kiln_quant_int_range(int dt, int64_t *lo, int64_t *hi) {
    switch (dt) {
    case KILN_DTYPE_UINT8: *lo = 0; *hi = 255; return 1;
    case KILN_DTYPE_INT8: *lo = -128; *hi = 127; return 1;
    case KILN_DTYPE_UINT16: *lo = 0; *hi = 65535; return 1;
    case KILN_DTYPE_INT16: *lo = -32768; *hi = 32767; return 1;
    case KILN_DTYPE_INT32: *lo = INT32_MIN; *hi = INT32_MAX; return 1;
    case KILN_DTYPE_UINT4: *lo = 0; *hi = 15; return 1;
    case KILN_DTYPE_INT4: *lo = -8; *hi = 7; return 1;
    case QE_DTYPE_UINT2: *lo = 0; *hi = 3; return 1;
    case QE_DTYPE_INT2: *lo = -2; *hi = 1; return 1;
    default: return 0;
    }
}

/* How scale element index follows from a flat element index of x. x is viewed as
 * [outer, D (the axis), inner]; blocked scales have Sa = ceil(D / B) entries along the axis. */
typedef struct qgran {
    int mode; /* 0 per-tensor, 1 per-axis, 2 blocked */
    int64_t outer, D, inner, Sa, B;
} qgran;

static inline int64_t qgran_index(const qgran *g, int64_t i) {
    if (g->mode == 0) return 0;
    int64_t a = (i / g->inner) % g->D;
    if (g->mode == 1) return a;
    int64_t o = i / (g->inner * g->D), j = i % g->inner;
    return (o * g->Sa + a / g->B) * g->inner + j;
}

/* Works out the granularity from the shapes of x and scale (and checks zero point's shape).
 * In static mode, unknown dims make the checks that need them pass. */
static kiln_status resolve_granularity(kiln_ctx *ctx, const kiln_tensor *x, const kiln_tensor *scale,
                                       const kiln_tensor *zp, int64_t axis_attr, int64_t block,
                                       qgran *g) {
    char b1[96], b2[96];
    memset(g, 0, sizeof *g);
    g->outer = g->D = g->inner = g->Sa = g->B = 1;
    if (x->rank < 0 || scale->rank < 0) return KILN_OK;
    if (zp && zp->rank >= 0 && kiln_shape_concrete(zp) && kiln_shape_concrete(scale) &&
        kiln_numel(zp) != kiln_numel(scale))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "zero point shape %s does not match scale shape %s", QE_SHAPE(zp, b1),
                         QE_SHAPE(scale, b2));
    if (block < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "block_size %lld is negative",
                         (long long)block);
    int64_t sn = kiln_numel(scale);
    if (block == 0 && (scale->rank == 0 || (scale->rank == 1 && scale->dims[0] == 1))) return KILN_OK;
    if (block == 0 && scale->rank > 1 && sn == 1) return KILN_OK;
    if (x->rank == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "scale %s is not a scalar but the input is a scalar", QE_SHAPE(scale, b1));
    int axis;
    KILN_TRY(kiln_norm_axis(ctx, axis_attr, x->rank, "axis", &axis));
    g->D = x->dims[axis];
    for (int d = 0; d < axis; d++) g->outer *= x->dims[d];
    for (int d = axis + 1; d < x->rank; d++) g->inner *= x->dims[d];
    if (block == 0) {
        if (scale->rank != 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "scale %s must be a scalar or 1-D (per-axis) without block_size",
                             QE_SHAPE(scale, b1));
        if (scale->dims[0] >= 0 && g->D >= 0 && scale->dims[0] != g->D)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "per-axis scale has %lld entries but input %s has %lld along axis %d",
                             (long long)scale->dims[0], QE_SHAPE(x, b1), (long long)g->D, axis);
        g->mode = 1;
        return KILN_OK;
    }
    if (scale->rank != x->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "blocked scale %s must have the rank of input %s", QE_SHAPE(scale, b1),
                         QE_SHAPE(x, b2));
    for (int d = 0; d < x->rank; d++) {
        int64_t xd = x->dims[d], sd = scale->dims[d];
        if (xd < 0 || sd < 0) continue;
        int64_t want = d == axis ? (xd + block - 1) / block : xd;
        if (sd != want)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "blocked scale %s does not fit input %s with block_size %lld on axis %d",
                             QE_SHAPE(scale, b1), QE_SHAPE(x, b2), (long long)block, axis);
    }
    g->mode = 2;
    g->B = block;
    g->Sa = scale->dims[axis];
    return KILN_OK;
}

static int is_quant_type(int dt) {
    int64_t lo, hi;
    return kiln_quant_int_range(dt, &lo, &hi) || qe_is_f8(dt) || dt == QE_DTYPE_FLOAT4E2M1;
}

/* ------------------------------------------------------------------------------------------ */
/* QuantizeLinear */

typedef struct quant_job {
    const kiln_tensor *x, *scale, *zp;
    kiln_tensor *y;
    qgran g;
    int out_dt, saturate, sub_bits, f8, wide;
    float lo, hi;
} quant_job;

static inline float quant_zp(const quant_job *j, int64_t s) {
    return j->zp ? qe_load_f32(j->zp->dtype, j->zp->data, s) : 0.0f;
}

/* The integer code of one element: clamp(round_half_even(v) + zp, lo, hi). The clamp comes first
 * (bounds shifted by the integral zp, which commutes with rounding) so that the value is small
 * enough for rounding by adding and subtracting 1.5 * 2^23, which compiles to plain adds instead
 * of a libm call; NaN maps to lo. int32 outputs exceed that range and use rintf. */
static inline int32_t quant_int(const quant_job *j, float v, float zp) {
    float a = j->lo - zp, b = j->hi - zp;
    v = v >= a ? v : a;
    v = v <= b ? v : b;
    if (j->wide) return (int32_t)(rintf(v) + zp);
    const float magic = 12582912.0f;
    return (int32_t)(((v + magic) - magic) + zp);
}

static void quant_range_generic(void *arg, int64_t begin, int64_t end) {
    const quant_job *j = arg;
    int xdt = j->x->dtype, sdt = j->scale->dtype;
    if (j->sub_bits) { /* begin/end count bytes so that no two threads share one */
        int per = 8 / j->sub_bits;
        int64_t n = kiln_numel(j->x);
        for (int64_t b = begin; b < end; b++) {
            for (int64_t i = b * per; i < (b + 1) * per && i < n; i++) {
                int64_t s = qgran_index(&j->g, i);
                float v = qe_load_f32(xdt, j->x->data, i) / qe_load_f32(sdt, j->scale->data, s);
                unsigned code;
                if (j->out_dt == QE_DTYPE_FLOAT4E2M1) code = qe_f32_to_f4(v + quant_zp(j, s));
                else code = (unsigned)quant_int(j, v, quant_zp(j, s)) & ((1u << j->sub_bits) - 1u);
                qe_sub_put(j->y->data, j->sub_bits, i, code);
            }
        }
        return;
    }
    for (int64_t i = begin; i < end; i++) {
        int64_t s = qgran_index(&j->g, i);
        float v = qe_load_f32(xdt, j->x->data, i) / qe_load_f32(sdt, j->scale->data, s);
        if (j->f8) {
            ((uint8_t *)j->y->data)[i] = qe_f32_to_f8(j->out_dt, v + quant_zp(j, s), j->saturate);
            continue;
        }
        int32_t q = quant_int(j, v, quant_zp(j, s));
        switch (j->out_dt) {
        case KILN_DTYPE_UINT8: ((uint8_t *)j->y->data)[i] = (uint8_t)q; break;
        case KILN_DTYPE_INT8: ((int8_t *)j->y->data)[i] = (int8_t)q; break;
        case KILN_DTYPE_UINT16: ((uint16_t *)j->y->data)[i] = (uint16_t)q; break;
        case KILN_DTYPE_INT16: ((int16_t *)j->y->data)[i] = (int16_t)q; break;
        default: ((int32_t *)j->y->data)[i] = q; break;
        }
    }
}

/* The common case: float input, one scale, 8-bit output. Everything the loop needs is local:
 * the byte stores could alias the job struct, which would stop vectorisation. */
#define QUANT_F32_8BIT(NAME, T)                                                                     \
    static void NAME(void *arg, int64_t begin, int64_t end) {                                       \
        const quant_job *j = arg;                                                                   \
        const float *x = (const float *)j->x->data;                                                 \
        const float scale = qe_load_f32(j->scale->dtype, j->scale->data, 0), zp = quant_zp(j, 0);   \
        const float a = j->lo - zp, b = j->hi - zp, magic = 12582912.0f;                            \
        T *y = (T *)j->y->data;                                                                     \
        for (int64_t i = begin; i < end; i++) {                                                     \
            float v = x[i] / scale;                                                                 \
            v = v >= a ? v : a;                                                                     \
            v = v <= b ? v : b;                                                                     \
            y[i] = (T)(int32_t)(((v + magic) - magic) + zp);                                        \
        }                                                                                           \
    }

QUANT_F32_8BIT(quant_range_f32_u8_c, uint8_t)
QUANT_F32_8BIT(quant_range_f32_i8_c, int8_t)

/* The same sixteen at a time (the -O2 build leaves the loop above scalar): the division, the
 * clamp (MAXPS returns its second operand for NaN, like v >= a ? v : a) and CVTPS2DQ's round
 * half to even are the scalar steps exactly. */
#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
__attribute__((target("avx512f,avx512bw"))) static void quant_f32_8bit_avx512(const quant_job *j, int64_t begin,
                                                                              int64_t end) {
    const float *x = (const float *)j->x->data;
    const float scale = qe_load_f32(j->scale->dtype, j->scale->data, 0), zp = quant_zp(j, 0);
    const __m512 vs = _mm512_set1_ps(scale), va = _mm512_set1_ps(j->lo - zp), vb = _mm512_set1_ps(j->hi - zp);
    const __m512i vz = _mm512_set1_epi32((int32_t)zp);
    uint8_t *y = (uint8_t *)j->y->data;
    for (int64_t i = begin; i < end; i += 16) {
        __mmask16 m = end - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (end - i)) - 1u);
        __m512 v = _mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), vs);
        v = _mm512_min_ps(_mm512_max_ps(v, va), vb);
        __m512i q = _mm512_add_epi32(_mm512_cvtps_epi32(v), vz);
        _mm512_mask_cvtepi32_storeu_epi8(y + i, m, q); /* codes in range: int8 and uint8 alike */
    }
}

/* KILN_NO_AVX512 / KILN_NO_VNNI switch these off as they do the other 8-bit loops (quant_isa.h) */
static int quant_avx512(void) { return kq_use_avx512(); }

/* 8 codes within the output type's range, as int32, to 8 bytes */
KQ_AVX2 static inline __m128i quant_codes_to_bytes(__m256i q, int is_s8) {
    __m256i w = _mm256_packs_epi32(q, q); /* lane-wise: [q0-3 q0-3 | q4-7 q4-7] as int16 */
    __m256i b = is_s8 ? _mm256_packs_epi16(w, w) : _mm256_packus_epi16(w, w);
    return _mm256_castsi256_si128(_mm256_permutevar8x32_epi32(b, _mm256_setr_epi32(0, 4, 0, 4, 0, 4, 0, 4)));
}

/* The AVX-512 loop's steps eight at a time; the tail goes through a padded copy. */
KQ_AVX2 static void quant_f32_8bit_avx2(const quant_job *j, int64_t begin, int64_t end, int is_s8) {
    const float *x = (const float *)j->x->data;
    const float scale = qe_load_f32(j->scale->dtype, j->scale->data, 0), zp = quant_zp(j, 0);
    const __m256 vs = _mm256_set1_ps(scale), va = _mm256_set1_ps(j->lo - zp), vb = _mm256_set1_ps(j->hi - zp);
    const __m256i vz = _mm256_set1_epi32((int32_t)zp);
    uint8_t *y = (uint8_t *)j->y->data;
    for (int64_t i = begin; i < end; i += 8) {
        float tail[8] = {0};
        const float *src = x + i;
        int64_t r = end - i < 8 ? end - i : 8;
        if (r < 8) {
            memcpy(tail, src, sizeof(float) * (size_t)r);
            src = tail;
        }
        __m256 v = _mm256_div_ps(_mm256_loadu_ps(src), vs);
        v = _mm256_min_ps(_mm256_max_ps(v, va), vb); /* MAXPS gives its second operand for NaN */
        __m128i q = quant_codes_to_bytes(_mm256_add_epi32(_mm256_cvtps_epi32(v), vz), is_s8);
        if (r == 8) {
            _mm_storel_epi64((__m128i *)(y + i), q);
        } else {
            uint8_t out[16];
            _mm_storeu_si128((__m128i *)out, q);
            memcpy(y + i, out, (size_t)r);
        }
    }
}

static void quant_range_f32_u8(void *arg, int64_t begin, int64_t end) {
    if (quant_avx512()) quant_f32_8bit_avx512(arg, begin, end);
    else if (kq_use_avx2()) quant_f32_8bit_avx2(arg, begin, end, 0);
    else quant_range_f32_u8_c(arg, begin, end);
}

static void quant_range_f32_i8(void *arg, int64_t begin, int64_t end) {
    if (quant_avx512()) quant_f32_8bit_avx512(arg, begin, end);
    else if (kq_use_avx2()) quant_f32_8bit_avx2(arg, begin, end, 1);
    else quant_range_f32_i8_c(arg, begin, end);
}
#else
#define quant_range_f32_u8 quant_range_f32_u8_c
#define quant_range_f32_i8 quant_range_f32_i8_c
#endif

static kiln_status quant_out_dtype(kiln_ctx *ctx, const kiln_tensor *zp, int *out) {
    int64_t attr = ctx->opset >= 21 ? kiln_attr_int(ctx->node, "output_dtype", 0) : 0;
    int dt = zp ? zp->dtype : (attr ? (int)attr : KILN_DTYPE_UINT8);
    if (zp && attr && attr != zp->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "output_dtype %lld differs from the zero point's type %s", (long long)attr,
                         kiln_dtype_name(zp->dtype));
    if (!is_quant_type(dt) || dt == KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported quantised output type %d", dt);
    *out = dt;
    return KILN_OK;
}

kiln_status kiln_quantize_linear_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *scale;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &scale));
    kiln_tensor *zp = kiln_input(ctx, 2);
    if (!(qe_is_float(x->dtype) || x->dtype == KILN_DTYPE_INT32))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input x",
                         kiln_dtype_name(x->dtype));
    if (!qe_is_float(scale->dtype) && scale->dtype != QE_DTYPE_FLOAT8E8M0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scale must be a float type, not %s",
                         kiln_dtype_name(scale->dtype));
    int dt = 0;
    KILN_TRY(quant_out_dtype(ctx, zp, &dt));
    int64_t block = ctx->opset >= 21 ? kiln_attr_int(ctx->node, "block_size", 0) : 0;
    qgran g;
    KILN_TRY(resolve_granularity(ctx, x, scale, zp, kiln_attr_int(ctx->node, "axis", 1), block, &g));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, dt);
    return kiln_set_output(ctx, 0, dt, x->rank, x->dims);
}

kiln_status kiln_quantize_linear_compute(kiln_ctx *ctx) {
    quant_job j;
    memset(&j, 0, sizeof j);
    j.x = kiln_input(ctx, 0);
    j.scale = kiln_input(ctx, 1);
    j.zp = kiln_input(ctx, 2);
    j.y = kiln_output(ctx, 0);
    if (!j.y) return KILN_OK;
    j.out_dt = j.y->dtype;
    int64_t block = ctx->opset >= 21 ? kiln_attr_int(ctx->node, "block_size", 0) : 0;
    KILN_TRY(resolve_granularity(ctx, j.x, j.scale, j.zp, kiln_attr_int(ctx->node, "axis", 1),
                                 block, &j.g));
    j.saturate = ctx->opset >= 19 ? (int)kiln_attr_int(ctx->node, "saturate", 1) : 1;
    j.sub_bits = qe_sub_bits(j.out_dt);
    j.f8 = qe_is_f8(j.out_dt);
    int64_t lo = 0, hi = 0;
    kiln_quant_int_range(j.out_dt, &lo, &hi);
    j.lo = (float)lo;
    j.hi = j.out_dt == KILN_DTYPE_INT32 ? 2147483520.0f : (float)hi;
    j.wide = j.out_dt == KILN_DTYPE_INT32;
    int64_t n = kiln_numel(j.x);
    if (n == 0) return KILN_OK;
    if (j.sub_bits) {
        int per = 8 / j.sub_bits;
        memset(j.y->data, 0, (size_t)((n + per - 1) / per));
        kiln_parallel_for(ctx, (n + per - 1) / per, 4096, quant_range_generic, &j);
    } else if (j.g.mode == 0 && j.x->dtype == KILN_DTYPE_FLOAT && j.out_dt == KILN_DTYPE_UINT8) {
        kiln_parallel_for(ctx, n, 16384, quant_range_f32_u8, &j);
    } else if (j.g.mode == 0 && j.x->dtype == KILN_DTYPE_FLOAT && j.out_dt == KILN_DTYPE_INT8) {
        kiln_parallel_for(ctx, n, 16384, quant_range_f32_i8, &j);
    } else {
        kiln_parallel_for(ctx, n, 8192, quant_range_generic, &j);
    }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* DequantizeLinear */

typedef struct dequant_job {
    const kiln_tensor *x, *scale, *zp;
    kiln_tensor *y;
    qgran g;
} dequant_job;

#if defined(__GNUC__) && defined(__x86_64__)
/* ((float)x - z) * s sixteen at a time, the scalar loop's two roundings in the same order */
__attribute__((target("avx512f,avx512bw,avx512vl"))) static void dequant_8bit_avx512(const void *xp, int is_s8,
                                                                                     float z, float s, float *y,
                                                                                     int64_t begin, int64_t end) {
    const __m512 vz = _mm512_set1_ps(z), vs = _mm512_set1_ps(s);
    for (int64_t i = begin; i < end; i += 16) {
        __mmask16 m = end - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (end - i)) - 1u);
        __m128i b = _mm_maskz_loadu_epi8(m, (const uint8_t *)xp + i);
        __m512i v = is_s8 ? _mm512_cvtepi8_epi32(b) : _mm512_cvtepu8_epi32(b);
        __m512 f = _mm512_mul_ps(_mm512_sub_ps(_mm512_cvtepi32_ps(v), vz), vs);
        _mm512_mask_storeu_ps(y + i, m, f);
    }
}

static int dequant_avx512(void) { return kq_use_avx512(); }

/* The same eight at a time (a subtraction, then a product: nothing to contract into an FMA) */
KQ_AVX2 static void dequant_8bit_avx2(const void *xp, int is_s8, float z, float s, float *y, int64_t begin,
                                      int64_t end) {
    const __m256 vz = _mm256_set1_ps(z), vs = _mm256_set1_ps(s);
    const uint8_t *x = xp;
    int64_t i = begin;
    for (; i + 8 <= end; i += 8) {
        __m128i b = _mm_loadl_epi64((const __m128i *)(x + i));
        __m256i v = is_s8 ? _mm256_cvtepi8_epi32(b) : _mm256_cvtepu8_epi32(b);
        _mm256_storeu_ps(y + i, _mm256_mul_ps(_mm256_sub_ps(_mm256_cvtepi32_ps(v), vz), vs));
    }
    for (; i < end; i++) y[i] = ((float)(is_s8 ? (int32_t)(int8_t)x[i] : (int32_t)x[i]) - z) * s;
}
#endif

static void dequant_range(void *arg, int64_t begin, int64_t end) {
    const dequant_job *j = arg;
    int xdt = j->x->dtype, sdt = j->scale->dtype, ydt = j->y->dtype;
    if (j->g.mode == 0 && ydt == KILN_DTYPE_FLOAT &&
        (xdt == KILN_DTYPE_UINT8 || xdt == KILN_DTYPE_INT8)) {
        float s = qe_load_f32(sdt, j->scale->data, 0);
        float z = j->zp ? qe_load_f32(j->zp->dtype, j->zp->data, 0) : 0.0f;
        float *y = (float *)j->y->data;
#if defined(__GNUC__) && defined(__x86_64__)
        if (dequant_avx512()) {
            dequant_8bit_avx512(j->x->data, xdt == KILN_DTYPE_INT8, z, s, y, begin, end);
            return;
        }
        if (kq_use_avx2()) {
            dequant_8bit_avx2(j->x->data, xdt == KILN_DTYPE_INT8, z, s, y, begin, end);
            return;
        }
#endif
        if (xdt == KILN_DTYPE_UINT8) {
            const uint8_t *x = (const uint8_t *)j->x->data;
            for (int64_t i = begin; i < end; i++) y[i] = ((float)x[i] - z) * s;
        } else {
            const int8_t *x = (const int8_t *)j->x->data;
            for (int64_t i = begin; i < end; i++) y[i] = ((float)x[i] - z) * s;
        }
        return;
    }
    for (int64_t i = begin; i < end; i++) {
        int64_t s = qgran_index(&j->g, i);
        float v = qe_load_f32(xdt, j->x->data, i);
        float z = j->zp ? qe_load_f32(j->zp->dtype, j->zp->data, s) : 0.0f;
        float r;
        if (xdt == KILN_DTYPE_INT32) /* int32 codes exceed float's exact range: subtract exactly */
            r = (float)((double)((const int32_t *)j->x->data)[i] - (double)z) *
                qe_load_f32(sdt, j->scale->data, s);
        else
            r = (v - z) * qe_load_f32(sdt, j->scale->data, s);
        qe_store_f32(ydt, j->y->data, i, r);
    }
}

kiln_status kiln_dequantize_linear_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *scale;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &scale));
    kiln_tensor *zp = kiln_input(ctx, 2);
    if (!is_quant_type(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input x",
                         kiln_dtype_name(x->dtype));
    if (!qe_is_float(scale->dtype) && scale->dtype != QE_DTYPE_FLOAT8E8M0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scale must be a float type, not %s",
                         kiln_dtype_name(scale->dtype));
    if (zp && zp->dtype != x->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "zero point type %s differs from input type %s", kiln_dtype_name(zp->dtype),
                         kiln_dtype_name(x->dtype));
    int dt = scale->dtype;
    int64_t attr = ctx->opset >= 23 ? kiln_attr_int(ctx->node, "output_dtype", 0) : 0;
    if (attr) dt = (int)attr;
    if (!(dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_FLOAT16 || dt == KILN_DTYPE_BFLOAT16 ||
          dt == KILN_DTYPE_DOUBLE))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported output type %d", dt);
    int64_t block = ctx->opset >= 21 ? kiln_attr_int(ctx->node, "block_size", 0) : 0;
    qgran g;
    KILN_TRY(resolve_granularity(ctx, x, scale, zp, kiln_attr_int(ctx->node, "axis", 1), block, &g));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, dt);
    return kiln_set_output(ctx, 0, dt, x->rank, x->dims);
}

kiln_status kiln_dequantize_linear_compute(kiln_ctx *ctx) {
    dequant_job j;
    j.x = kiln_input(ctx, 0);
    j.scale = kiln_input(ctx, 1);
    j.zp = kiln_input(ctx, 2);
    j.y = kiln_output(ctx, 0);
    if (!j.y) return KILN_OK;
    int64_t block = ctx->opset >= 21 ? kiln_attr_int(ctx->node, "block_size", 0) : 0;
    KILN_TRY(resolve_granularity(ctx, j.x, j.scale, j.zp, kiln_attr_int(ctx->node, "axis", 1),
                                 block, &j.g));
    int64_t n = kiln_numel(j.x);
    if (n > 0) kiln_parallel_for(ctx, n, 16384, dequant_range, &j);
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* DynamicQuantizeLinear: uint8 with a range widened to include 0. */

typedef struct minmax_job {
    const float *x;
    float *mins, *maxs;
    int64_t chunk;
} minmax_job;

static void minmax_range(void *arg, int64_t begin, int64_t end) {
    minmax_job *j = arg;
    for (int64_t c = begin; c < end; c++) kiln_quant_minmax(j->x + c * j->chunk, j->chunk, &j->mins[c], &j->maxs[c]);
}

static kiln_status dynq_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_FLOAT));
    if (x->rank < 0) KILN_TRY(kiln_set_output_unknown(ctx, 0, KILN_DTYPE_UINT8));
    else KILN_TRY(kiln_set_output(ctx, 0, KILN_DTYPE_UINT8, x->rank, x->dims));
    KILN_TRY(kiln_set_output(ctx, 1, KILN_DTYPE_FLOAT, 0, NULL));
    return kiln_set_output(ctx, 2, KILN_DTYPE_UINT8, 0, NULL);
}

static kiln_status dynq_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    int64_t n = kiln_numel(x);
    const float *xd = (const float *)x->data;
    float lo = 0.0f, hi = 0.0f;
    int64_t chunk = 65536, nchunks = n / chunk;
    if (nchunks > 1) {
        float *buf = malloc(sizeof(float) * 2 * (size_t)nchunks);
        if (!buf) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        minmax_job mj = {xd, buf, buf + nchunks, chunk};
        kiln_parallel_for(ctx, nchunks, 1, minmax_range, &mj);
        for (int64_t c = 0; c < nchunks; c++) {
            if (buf[c] < lo) lo = buf[c];
            if (buf[nchunks + c] > hi) hi = buf[nchunks + c];
        }
        free(buf);
    } else {
        nchunks = 0;
    }
    float tlo, thi; /* the rest */
    kiln_quant_minmax(xd + nchunks * chunk, n - nchunks * chunk, &tlo, &thi);
    lo = tlo < lo ? tlo : lo;
    hi = thi > hi ? thi : hi;
    /* NaN elements never win a comparison, so they do not widen the range (and quantise to 0) */
    if (isinf(lo) || isinf(hi))
        return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "input holds an infinity; no finite scale exists");
    float scale = (hi - lo) / 255.0f;
    float zpf = 0.0f;
    if (scale != 0.0f) {
        zpf = rintf(0.0f - lo / scale);
        if (zpf < 0.0f) zpf = 0.0f;
        if (zpf > 255.0f) zpf = 255.0f;
    }
    kiln_tensor *y = kiln_output(ctx, 0), *ys = kiln_output(ctx, 1), *yz = kiln_output(ctx, 2);
    /* a zero range (all zeros, or NaN only) reports scale 1 as onnxruntime does, not the formula's
     * 0, which would make a later DequantizeLinear/QuantizeLinear divide by zero */
    if (ys) *(float *)ys->data = scale != 0.0f ? scale : 1.0f;
    if (yz) *(uint8_t *)yz->data = (uint8_t)zpf;
    if (!y) return KILN_OK;
    quant_job j;
    memset(&j, 0, sizeof j);
    j.x = x;
    j.y = y;
    j.lo = 0.0f;
    j.hi = 255.0f;
    if (scale == 0.0f) { /* all zeros: every code is the zero point */
        memset(y->data, (int)zpf, (size_t)n);
        return KILN_OK;
    }
    /* the fast path reads scale and zero point from tensors: give it local ones */
    kiln_tensor st, zt;
    memset(&st, 0, sizeof st);
    memset(&zt, 0, sizeof zt);
    uint8_t zb = (uint8_t)zpf;
    kiln_tensor_set_shape(&st, KILN_DTYPE_FLOAT, 0, NULL);
    st.data = &scale;
    kiln_tensor_set_shape(&zt, KILN_DTYPE_UINT8, 0, NULL);
    zt.data = &zb;
    j.scale = &st;
    j.zp = &zt;
    kiln_parallel_for(ctx, n, 16384, quant_range_f32_u8, &j);
    return KILN_OK;
}

#if defined(__GNUC__) && defined(__x86_64__)
__attribute__((target("avx512f"))) static void minmax_avx512(const float *x, int64_t n, float *lo, float *hi) {
    __m512 l = _mm512_setzero_ps(), h = _mm512_setzero_ps();
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        __m512 v = _mm512_loadu_ps(x + i);
        l = _mm512_min_ps(v, l); /* a NaN element yields the second operand: it is skipped */
        h = _mm512_max_ps(v, h);
    }
    float a = _mm512_reduce_min_ps(l), b = _mm512_reduce_max_ps(h);
    for (; i < n; i++) {
        a = x[i] < a ? x[i] : a;
        b = x[i] > b ? x[i] : b;
    }
    *lo = a;
    *hi = b;
}

/* NaN elements yield the running value (MINPS/MAXPS return their second operand), and no lane
 * ever holds -0.0, so the lanes combine in any order to the scalar loop's result. */
KQ_AVX2 static void minmax_avx2(const float *x, int64_t n, float *lo, float *hi) {
    __m256 l = _mm256_setzero_ps(), h = _mm256_setzero_ps();
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        l = _mm256_min_ps(v, l);
        h = _mm256_max_ps(v, h);
    }
    float ls[8], hs[8];
    _mm256_storeu_ps(ls, l);
    _mm256_storeu_ps(hs, h);
    float a = 0.0f, b = 0.0f;
    for (int k = 0; k < 8; k++) {
        a = ls[k] < a ? ls[k] : a;
        b = hs[k] > b ? hs[k] : b;
    }
    for (; i < n; i++) {
        a = x[i] < a ? x[i] : a;
        b = x[i] > b ? x[i] : b;
    }
    *lo = a;
    *hi = b;
}
#endif

void kiln_quant_minmax(const float *x, int64_t n, float *lo, float *hi) {
#if defined(__GNUC__) && defined(__x86_64__)
    if (quant_avx512()) {
        minmax_avx512(x, n, lo, hi);
        return;
    }
    if (kq_use_avx2()) {
        minmax_avx2(x, n, lo, hi);
        return;
    }
#endif
    float a = 0.0f, b = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        a = x[i] < a ? x[i] : a;
        b = x[i] > b ? x[i] : b;
    }
    *lo = a;
    *hi = b;
}

void kiln_quantize_f32_u8(kiln_ctx *ctx, const float *x, int64_t n, float scale, uint8_t zp, uint8_t *y) {
    kiln_tensor xt, yt, st, zt;
    memset(&xt, 0, sizeof xt);
    memset(&yt, 0, sizeof yt);
    memset(&st, 0, sizeof st);
    memset(&zt, 0, sizeof zt);
    kiln_tensor_set_shape(&xt, KILN_DTYPE_FLOAT, 1, &n);
    xt.data = (void *)x;
    kiln_tensor_set_shape(&yt, KILN_DTYPE_UINT8, 1, &n);
    yt.data = y;
    kiln_tensor_set_shape(&st, KILN_DTYPE_FLOAT, 0, NULL);
    st.data = &scale;
    kiln_tensor_set_shape(&zt, KILN_DTYPE_UINT8, 0, NULL);
    zt.data = &zp;
    quant_job j;
    memset(&j, 0, sizeof j);
    j.x = &xt;
    j.y = &yt;
    j.scale = &st;
    j.zp = &zt;
    j.lo = 0.0f;
    j.hi = 255.0f;
    if (n > 0) kiln_parallel_for(ctx, n, 16384, quant_range_f32_u8, &j);
}

const kiln_op kiln_ops_quant[] = {
    {"", "QuantizeLinear", 10, 0, NULL, kiln_quantize_linear_infer, kiln_quantize_linear_compute, NULL},
    {"", "DequantizeLinear", 10, 0, NULL, kiln_dequantize_linear_infer, kiln_dequantize_linear_compute, NULL},
    {"", "DynamicQuantizeLinear", 11, 0, NULL, dynq_infer, dynq_compute, NULL},
    {"", "QLinearMatMul", 10, 0, kiln_qlinear_matmul_init, kiln_qlinear_matmul_infer,
     kiln_qlinear_matmul_compute, kiln_qlinear_matmul_fini},
    {"", "QLinearConv", 10, 0, kiln_qlinear_conv_init, kiln_qlinear_conv_infer, kiln_qlinear_conv_compute,
     kiln_qlinear_conv_fini},
    {0},
};
