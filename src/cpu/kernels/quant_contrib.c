/* com.microsoft quantised element-wise ops: QLinearAdd, QLinearMul (numpy broadcasting),
 * QLinearSigmoid, QLinearLeakyRelu (256-entry tables), QLinearConcat, and the com.microsoft
 * QuantizeLinear / DequantizeLinear (the ai.onnx kernels of quant.c). The family table of every
 * quant_contrib*.c file is at the end. */
#include "quant_contrib.h"
#include "quant_kernels.h"
#include <stdio.h>
#include <stdlib.h>

/* ---- shared helpers ---- */

static const char *type_list(int n, const int *types, char *buf, size_t len) {
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < n && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, "%s%s", i ? (i + 1 == n ? " or " : ", ") : "",
                              kiln_dtype_name((kiln_dtype)types[i]));
    return buf;
}

kiln_status qc_opt(kiln_ctx *ctx, int i, const char *name, kiln_tensor **t, int n, const int *types) {
    *t = kiln_input(ctx, i);
    if (!*t) return KILN_OK;
    for (int k = 0; k < n; k++)
        if ((*t)->dtype == types[k]) return KILN_OK;
    char buf[128];
    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' (%d) has element type %s; expected %s",
                     name, i, kiln_dtype_name((kiln_dtype)(*t)->dtype), type_list(n, types, buf, sizeof buf));
}

kiln_status qc_need(kiln_ctx *ctx, int i, const char *name, kiln_tensor **t, int n, const int *types) {
    if (!kiln_input(ctx, i))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input '%s' (%d)", name, i);
    return qc_opt(ctx, i, name, t, n, types);
}

static const int F32[] = {KILN_DTYPE_FLOAT};

kiln_status qc_scale1(kiln_ctx *ctx, int i, const char *name, int required, float *out) {
    kiln_tensor *t;
    KILN_TRY(required ? qc_need(ctx, i, name, &t, 1, F32) : qc_opt(ctx, i, name, &t, 1, F32));
    *out = 1.0f;
    if (!t) return KILN_OK;
    if (kiln_shape_concrete(t) && kiln_numel(t) != 1) {
        char b[96];
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' %s must hold one value", name,
                         QE_SHAPE(t, b));
    }
    if (t->data) *out = *(const float *)t->data;
    return KILN_OK;
}

kiln_status qc_zp1(kiln_ctx *ctx, int i, const char *name, int dt, int required, int32_t *out) {
    kiln_tensor *t;
    KILN_TRY(required ? qc_need(ctx, i, name, &t, 1, &dt) : qc_opt(ctx, i, name, &t, 1, &dt));
    *out = 0;
    if (!t) return KILN_OK;
    if (kiln_shape_concrete(t) && kiln_numel(t) != 1) {
        char b[96];
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' %s must hold one value", name,
                         QE_SHAPE(t, b));
    }
    if (t->data) *out = (int32_t)kiln_load_i64(dt, t->data, 0);
    return KILN_OK;
}

void qc_build_table(int dt, float xs, int32_t xz, float ys, int32_t yz, qc_table_fn fn,
                    const void *arg, uint8_t table[256]) {
    float in[256], out[256];
    int32_t lo, hi;
    qc_q8_range(dt, &lo, &hi);
    for (int i = 0; i < 256; i++) {
        int32_t x = dt == KILN_DTYPE_INT8 ? (int32_t)(int8_t)(uint8_t)i : i;
        in[i] = xs * (float)(x - xz);
    }
    fn(in, out, 256, arg);
    for (int i = 0; i < 256; i++) table[i] = (uint8_t)qc_quantize(out[i], ys, yz, lo, hi);
}

typedef struct table_job {
    const uint8_t *x, *table;
    uint8_t *y;
} table_job;

static void table_range(void *arg, int64_t b, int64_t e) {
    const table_job *j = arg;
    for (int64_t i = b; i < e; i++) j->y[i] = j->table[j->x[i]];
}

void qc_apply_table(kiln_ctx *ctx, const uint8_t *x, uint8_t *y, int64_t n, const uint8_t table[256]) {
    table_job j = {x, table, y};
    kiln_parallel_for(ctx, n, 65536, table_range, &j);
}

/* ---- QLinearAdd / QLinearMul ---- */

enum { BIN_ADD, BIN_MUL };
enum { SPAN_GENERAL, SPAN_A_SCALAR, SPAN_B_SCALAR };

typedef struct bin_job {
    int op, dt, kind;
    const kiln_tensor *a, *b;
    void *y;
    int rank;
    int64_t dims[KILN_MAX_RANK], sa[KILN_MAX_RANK], sb[KILN_MAX_RANK];
    int outer_rank;     /* dims [0, outer_rank) are walked; the rest form one span */
    int64_t span;
    float as, bs, cs;
    int32_t az, bz, cz;
} bin_job;

static const int BIN_TYPES[] = {KILN_DTYPE_UINT8, KILN_DTYPE_INT8};

static kiln_status bin_check(kiln_ctx *ctx, int op, bin_job *j, int *rank, int64_t *dims) {
    kiln_tensor *a, *b;
    KILN_TRY(qc_need(ctx, 0, "A", &a, 2, BIN_TYPES));
    KILN_TRY(qc_need(ctx, 3, "B", &b, 1, &a->dtype));
    KILN_TRY(qc_scale1(ctx, 1, "A_scale", 1, &j->as));
    KILN_TRY(qc_zp1(ctx, 2, "A_zero_point", a->dtype, 0, &j->az));
    KILN_TRY(qc_scale1(ctx, 4, "B_scale", 1, &j->bs));
    KILN_TRY(qc_zp1(ctx, 5, "B_zero_point", a->dtype, 0, &j->bz));
    KILN_TRY(qc_scale1(ctx, 6, "C_scale", 1, &j->cs));
    KILN_TRY(qc_zp1(ctx, 7, "C_zero_point", a->dtype, 0, &j->cz));
    j->a = a;
    j->b = b;
    j->dt = a->dtype;
    j->op = op;
    if (a->rank < 0 || b->rank < 0) {
        *rank = -1;
        return KILN_OK;
    }
    const kiln_tensor *ts[2] = {a, b};
    return kiln_broadcast_shape(ctx, 2, ts, rank, dims);
}

static kiln_status bin_infer(kiln_ctx *ctx, int op) {
    bin_job j;
    int rank;
    int64_t dims[KILN_MAX_RANK];
    KILN_TRY(bin_check(ctx, op, &j, &rank, dims));
    if (rank < 0) return kiln_set_output_unknown(ctx, 0, j.dt);
    return kiln_set_output(ctx, 0, j.dt, rank, dims);
}

/* The innermost run of output dims over which each input is either walked or broadcast the same
 * way decides how onnxruntime's broadcaster hands the op its spans, and with it which of the
 * kernel's arithmetic variants (scalar A, scalar B, two vectors) computes each element. */
static void bin_plan(bin_job *j) {
    int R = j->rank;
    int64_t ad[KILN_MAX_RANK], bd[KILN_MAX_RANK], sa = 1, sb = 1;
    for (int d = 0; d < R; d++) {
        int ia = d - (R - j->a->rank), ib = d - (R - j->b->rank);
        ad[d] = ia >= 0 ? j->a->dims[ia] : 1;
        bd[d] = ib >= 0 ? j->b->dims[ib] : 1;
    }
    for (int d = R - 1; d >= 0; d--) {
        j->sa[d] = ad[d] == 1 ? 0 : sa;
        j->sb[d] = bd[d] == 1 ? 0 : sb;
        sa *= ad[d];
        sb *= bd[d];
    }
    int pattern = -1, d = R - 1;
    j->span = 1;
    for (; d >= 0; d--) {
        if (j->dims[d] == 1) continue;
        int p = ad[d] == 1 ? SPAN_A_SCALAR : bd[d] == 1 ? SPAN_B_SCALAR : SPAN_GENERAL;
        if (pattern >= 0 && p != pattern) break;
        pattern = p;
        j->span *= j->dims[d];
    }
    j->outer_rank = d + 1;
    j->kind = pattern < 0 ? SPAN_A_SCALAR : pattern;
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#define QC_X86 1

static int have_avx2_fma(void) {
    static _Atomic int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    return cached;
}

/* 8 codes of type dt widened to int32 */
#define QC_LOAD8(dt, p)                                                                             \
    ((dt) == KILN_DTYPE_INT8 ? _mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)(p)))         \
                             : _mm256_cvtepu8_epi32(_mm_loadl_epi64((const __m128i *)(p))))

/* Rounds half to even (CVTPS2DQ: NaN and out-of-range give INT32_MIN), saturates, stores 8 codes. */
#define QC_STORE8(dt, y, t, vlo, vhi)                                                               \
    do {                                                                                            \
        __m256i r_ = _mm256_min_epi32(_mm256_max_epi32(_mm256_cvtps_epi32(t), vlo), vhi);           \
        __m128i w_ = _mm_packs_epi32(_mm256_castsi256_si128(r_), _mm256_extracti128_si256(r_, 1));  \
        w_ = (dt) == KILN_DTYPE_INT8 ? _mm_packs_epi16(w_, w_) : _mm_packus_epi16(w_, w_);          \
        _mm_storel_epi64((__m128i *)(y), w_);                                                       \
    } while (0)

/* Returns how many leading elements (a multiple of 8) it computed. */
__attribute__((target("avx2,fma"))) static int64_t add8_avx2(int dt, const uint8_t *xa, const uint8_t *xb,
                                                            float rA, float rB, float fixed, uint8_t *y,
                                                            int64_t n, int32_t lo, int32_t hi) {
    const __m256 va = _mm256_set1_ps(rA), vb = _mm256_set1_ps(rB), vf = _mm256_set1_ps(fixed);
    const __m256i vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 t = vf;
        if (xb) t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(QC_LOAD8(dt, xb + i)), vb, t);
        t = _mm256_fmadd_ps(_mm256_cvtepi32_ps(QC_LOAD8(dt, xa + i)), va, t);
        QC_STORE8(dt, y + i, t, vlo, vhi);
    }
    return i;
}

/* No FMA here: onnxruntime's QLinearMul multiplies and adds separately. ia/ib: 1 walks the
 * operand, 0 repeats its first element. */
__attribute__((target("avx2"))) static int64_t mul8_avx2(int dt, const uint8_t *pa, int64_t ia, int32_t za,
                                                        const uint8_t *pb, int64_t ib, int32_t zb, float ratio,
                                                        float zc, uint8_t *y, int64_t n, int32_t lo, int32_t hi) {
    const __m256 vr = _mm256_set1_ps(ratio), vz = _mm256_set1_ps(zc);
    const __m256i vlo = _mm256_set1_epi32(lo), vhi = _mm256_set1_epi32(hi);
    const __m256i vza = _mm256_set1_epi32(za), vzb = _mm256_set1_epi32(zb);
    __m256i ca = _mm256_set1_epi32(qc_q8(dt, pa, 0)), cb = _mm256_set1_epi32(qc_q8(dt, pb, 0));
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i a = ia ? QC_LOAD8(dt, pa + i) : ca, b = ib ? QC_LOAD8(dt, pb + i) : cb;
        __m256i p = _mm256_mullo_epi32(_mm256_sub_epi32(a, vza), _mm256_sub_epi32(b, vzb));
        __m256 t = _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(p), vr), vz);
        QC_STORE8(dt, y + i, t, vlo, vhi);
    }
    return i;
}
#endif

/* onnxruntime's AVX2 QLinearAdd (8-bit): the zero points fold into one constant, each element is
 * fma(value, scale ratio, constant), and a broadcast operand's contribution joins the constant. */
static void add8_span(const bin_job *j, const void *pa, int64_t oa, const void *pb, int64_t ob,
                      void *y, int64_t oy, int64_t n) {
    int dt = j->dt;
    int32_t lo, hi;
    qc_q8_range(dt, &lo, &hi);
    /* the scalar-A span is computed as B + scalar, with the operands' roles swapped */
    int swap = j->kind == SPAN_A_SCALAR;
    float sA = swap ? j->bs : j->as, sB = swap ? j->as : j->bs;
    int32_t zA = swap ? j->bz : j->az, zB = swap ? j->az : j->bz;
    const uint8_t *xa = (const uint8_t *)(swap ? pb : pa) + (swap ? ob : oa);
    const uint8_t *xb = (const uint8_t *)(swap ? pa : pb) + (swap ? oa : ob);
    float rA = sA / j->cs, rB = sB / j->cs;
    float fixed = (float)j->cz - fmaf(rA, (float)zA, rB * (float)zB);
    if (j->kind != SPAN_GENERAL) fixed = fmaf((float)qc_q8(dt, xb, 0), rB, fixed);
    const uint8_t *xbv = j->kind == SPAN_GENERAL ? xb : NULL;
    int64_t i = 0;
#ifdef QC_X86
    if (have_avx2_fma()) i = add8_avx2(dt, xa, xbv, rA, rB, fixed, (uint8_t *)y + oy, n, lo, hi);
#endif
    for (; i < n; i++) {
        float t = fixed;
        if (xbv) t = fmaf((float)qc_q8(dt, xbv, i), rB, t);
        t = fmaf((float)qc_q8(dt, xa, i), rA, t);
        qc_store8(dt, y, oy + i, qc_clamp(qc_cvt(t), lo, hi));
    }
}

/* onnxruntime's QLinearMul: the exact integer product of the zero-point-adjusted operands times
 * one ratio, plus the output zero point, rounded. */
static void mul8_span(const bin_job *j, const void *pa, int64_t oa, int64_t ia, const void *pb,
                      int64_t ob, int64_t ib, void *y, int64_t oy, int64_t n) {
    int dt = j->dt;
    int32_t lo, hi;
    qc_q8_range(dt, &lo, &hi);
    float ratio = j->as * j->bs / j->cs, zc = (float)j->cz;
    const uint8_t *xa = (const uint8_t *)pa + oa, *xb = (const uint8_t *)pb + ob;
    int64_t i = 0;
#ifdef QC_X86
    if (have_avx2_fma())
        i = mul8_avx2(dt, xa, ia, j->az, xb, ib, j->bz, ratio, zc, (uint8_t *)y + oy, n, lo, hi);
#endif
    for (; i < n; i++) {
        int32_t p = (qc_q8(dt, xa, i * ia) - j->az) * (qc_q8(dt, xb, i * ib) - j->bz);
        float m = (float)p * ratio; /* two statements: no contraction into a fused multiply-add */
        qc_store8(dt, y, oy + i, qc_clamp(qc_cvt(m + zc), lo, hi));
    }
}

static void bin_range(void *arg, int64_t begin, int64_t end) {
    const bin_job *j = arg;
    int64_t i = begin;
    int64_t ia = j->kind == SPAN_A_SCALAR ? 0 : 1, ib = j->kind == SPAN_B_SCALAR ? 0 : 1;
    while (i < end) {
        int64_t s = i / j->span, w = i % j->span, n = j->span - w;
        if (n > end - i) n = end - i;
        int64_t oa = 0, ob = 0, rem = s;
        for (int d = j->outer_rank - 1; d >= 0; d--) {
            int64_t c = rem % j->dims[d];
            rem /= j->dims[d];
            oa += c * j->sa[d];
            ob += c * j->sb[d];
        }
        oa += w * ia;
        ob += w * ib;
        if (j->op == BIN_MUL) mul8_span(j, j->a->data, oa, ia, j->b->data, ob, ib, j->y, i, n);
        else add8_span(j, j->a->data, oa, j->b->data, ob, j->y, i, n);
        i += n;
    }
}

static kiln_status bin_compute(kiln_ctx *ctx, int op) {
    bin_job j;
    memset(&j, 0, sizeof j);
    KILN_TRY(bin_check(ctx, op, &j, &j.rank, j.dims));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    j.y = y->data;
    int64_t n = kiln_numel(y);
    if (n <= 0) return KILN_OK;
    bin_plan(&j);
    kiln_parallel_for(ctx, n, 16384, bin_range, &j);
    return KILN_OK;
}

static kiln_status qadd_infer(kiln_ctx *ctx) { return bin_infer(ctx, BIN_ADD); }
static kiln_status qadd_compute(kiln_ctx *ctx) { return bin_compute(ctx, BIN_ADD); }
static kiln_status qmul_infer(kiln_ctx *ctx) { return bin_infer(ctx, BIN_MUL); }
static kiln_status qmul_compute(kiln_ctx *ctx) { return bin_compute(ctx, BIN_MUL); }

/* ---- QLinearSigmoid / QLinearLeakyRelu ---- */

static const int Q8_TYPES[] = {KILN_DTYPE_UINT8, KILN_DTYPE_INT8};

typedef struct lut_params {
    kiln_tensor *x;
    float xs, ys;
    int32_t xz, yz;
} lut_params;

static kiln_status lut_check(kiln_ctx *ctx, lut_params *p) {
    KILN_TRY(qc_need(ctx, 0, "X", &p->x, 2, Q8_TYPES));
    KILN_TRY(qc_scale1(ctx, 1, "X_scale", 1, &p->xs));
    KILN_TRY(qc_zp1(ctx, 2, "X_zero_point", p->x->dtype, 0, &p->xz));
    KILN_TRY(qc_scale1(ctx, 3, "Y_scale", 1, &p->ys));
    return qc_zp1(ctx, 4, "Y_zero_point", p->x->dtype, 0, &p->yz);
}

static kiln_status lut_infer(kiln_ctx *ctx) {
    lut_params p;
    KILN_TRY(lut_check(ctx, &p));
    if (p.x->rank < 0) return kiln_set_output_unknown(ctx, 0, p.x->dtype);
    return kiln_set_output_like(ctx, 0, p.x);
}

/* MLAS's logistic: Eigen's rational approximation on [-18, 18], evaluated with fused multiply-adds
 * as onnxruntime's FMA3 kernel does. */
static void logistic_fn(const float *in, float *out, int n, const void *arg) {
    (void)arg;
    for (int i = 0; i < n; i++) {
        float v = in[i];
        v = v < -18.0f ? -18.0f : v;
        v = v > 18.0f ? 18.0f : v;
        float v2 = v * v;
        float p = fmaf(v2, 4.37031012579801e-11f, 1.15627324459942e-07f);
        p = fmaf(p, v2, 6.08574864600143e-05f);
        p = fmaf(p, v2, 8.51377133304701e-03f);
        p = fmaf(p, v2, 2.48287947061529e-01f);
        p = p * v;
        float q = fmaf(v2, 6.10247389755681e-13f, 5.76102136993427e-09f);
        q = fmaf(q, v2, 6.29106785017040e-06f);
        q = fmaf(q, v2, 1.70198817374094e-03f);
        q = fmaf(q, v2, 1.16817656904453e-01f);
        q = fmaf(q, v2, 9.93151921023180e-01f);
        float r = p / q + 0.5f;
        out[i] = r < 0.0f ? 0.0f : r > 1.0f ? 1.0f : r;
    }
}

static void leaky_fn(const float *in, float *out, int n, const void *arg) {
    float alpha = *(const float *)arg;
    for (int i = 0; i < n; i++) out[i] = in[i] >= 0.0f ? in[i] : alpha * in[i];
}

static kiln_status lut_compute(kiln_ctx *ctx, qc_table_fn fn, const void *arg) {
    lut_params p;
    KILN_TRY(lut_check(ctx, &p));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    uint8_t table[256];
    qc_build_table(p.x->dtype, p.xs, p.xz, p.ys, p.yz, fn, arg, table);
    qc_apply_table(ctx, p.x->data, y->data, kiln_numel(p.x), table);
    return KILN_OK;
}

static kiln_status qsigmoid_compute(kiln_ctx *ctx) { return lut_compute(ctx, logistic_fn, NULL); }

static kiln_status qleaky_compute(kiln_ctx *ctx) {
    float alpha = kiln_attr_float(ctx->node, "alpha", 0.01f);
    return lut_compute(ctx, leaky_fn, &alpha);
}

/* ---- QLinearConcat: inputs Y_scale, Y_zero_point, then (X, X_scale, X_zero_point) triples ---- */

static kiln_status qconcat_check(kiln_ctx *ctx, int *axis, int *rank, int64_t *dims, int *dt) {
    char b1[96], b2[96];
    kiln_tensor *yz;
    float ys;
    KILN_TRY(qc_scale1(ctx, 0, "Y_scale", 1, &ys));
    KILN_TRY(qc_need(ctx, 1, "Y_zero_point", &yz, 2, Q8_TYPES));
    *dt = yz->dtype;
    if (ctx->n_in < 5 || (ctx->n_in - 2) % 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "expected Y_scale, Y_zero_point and (X, X_scale, X_zero_point) triples; "
                         "got %d inputs", ctx->n_in);
    if (!kiln_has_attr(ctx->node, "axis"))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'axis' is required");
    const kiln_tensor *first = NULL;
    int known = 1;
    for (int i = 2; i < ctx->n_in; i += 3) {
        kiln_tensor *x, *xs, *xz;
        char nm[3][32];
        snprintf(nm[0], sizeof nm[0], "X%d", (i - 2) / 3);
        snprintf(nm[1], sizeof nm[1], "X%d_scale", (i - 2) / 3);
        snprintf(nm[2], sizeof nm[2], "X%d_zero_point", (i - 2) / 3);
        KILN_TRY(qc_need(ctx, i, nm[0], &x, 1, dt));
        KILN_TRY(qc_need(ctx, i + 1, nm[1], &xs, 1, F32));
        KILN_TRY(qc_need(ctx, i + 2, nm[2], &xz, 1, dt));
        if (x->rank < 0) { known = 0; continue; }
        if (!first) { first = x; continue; }
        if (x->rank != first->rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s %s has a rank other than %s",
                             nm[0], QE_SHAPE(x, b1), QE_SHAPE(first, b2));
    }
    if (!first || !known) { *rank = -1; return KILN_OK; }
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(ctx->node, "axis", 0), first->rank, "axis", axis));
    *rank = first->rank;
    memcpy(dims, first->dims, sizeof(int64_t) * (size_t)first->rank);
    dims[*axis] = 0;
    for (int i = 2; i < ctx->n_in; i += 3) {
        const kiln_tensor *x = kiln_input(ctx, i);
        for (int d = 0; d < x->rank; d++) {
            if (d == *axis) continue;
            if (x->dims[d] >= 0 && dims[d] >= 0 && x->dims[d] != dims[d])
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "input X%d %s differs from %s outside axis %d", (i - 2) / 3,
                                 QE_SHAPE(x, b1), QE_SHAPE(first, b2), *axis);
        }
        dims[*axis] = dims[*axis] < 0 || x->dims[*axis] < 0 ? KILN_DIM_UNKNOWN : dims[*axis] + x->dims[*axis];
    }
    return KILN_OK;
}

static kiln_status qconcat_infer(kiln_ctx *ctx) {
    int axis = 0, rank, dt;
    int64_t dims[KILN_MAX_RANK];
    KILN_TRY(qconcat_check(ctx, &axis, &rank, dims, &dt));
    if (rank < 0) return kiln_set_output_unknown(ctx, 0, dt);
    return kiln_set_output(ctx, 0, dt, rank, dims);
}

static void identity_fn(const float *in, float *out, int n, const void *arg) {
    (void)arg;
    memcpy(out, in, sizeof(float) * (size_t)n);
}

static kiln_status qconcat_compute(kiln_ctx *ctx) {
    int axis = 0, rank, dt;
    int64_t dims[KILN_MAX_RANK];
    KILN_TRY(qconcat_check(ctx, &axis, &rank, dims, &dt));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y || kiln_numel(y) == 0) return KILN_OK;
    float ys = *(const float *)kiln_input(ctx, 0)->data;
    int32_t yz = qc_q8(dt, kiln_input(ctx, 1)->data, 0);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++) outer *= dims[d];
    for (int d = axis + 1; d < rank; d++) inner *= dims[d];
    int64_t y_pitch = dims[axis] * inner, off = 0;
    for (int i = 2; i < ctx->n_in; i += 3) {
        const kiln_tensor *x = kiln_input(ctx, i);
        float xs = *(const float *)kiln_input(ctx, i + 1)->data;
        int32_t xz = qc_q8(dt, kiln_input(ctx, i + 2)->data, 0);
        int64_t pitch = x->dims[axis] * inner;
        if (pitch == 0) continue;
        uint8_t table[256];
        int copy = xs == ys && xz == yz;
        if (!copy) qc_build_table(dt, xs, xz, ys, yz, identity_fn, NULL, table);
        const uint8_t *src = x->data;
        uint8_t *dst = (uint8_t *)y->data + off;
        for (int64_t o = 0; o < outer; o++) {
            if (copy) memcpy(dst + o * y_pitch, src + o * pitch, (size_t)pitch);
            else
                for (int64_t k = 0; k < pitch; k++) dst[o * y_pitch + k] = table[src[o * pitch + k]];
        }
        off += pitch;
    }
    return KILN_OK;
}

const kiln_op kiln_ops_quantcontrib[] = {
    {"com.microsoft", "QuantizeLinear", 1, 0, NULL, kiln_quantize_linear_infer, kiln_quantize_linear_compute, NULL},
    {"com.microsoft", "DequantizeLinear", 1, 0, NULL, kiln_dequantize_linear_infer, kiln_dequantize_linear_compute, NULL},
    {"com.microsoft", "QLinearAdd", 1, 0, NULL, qadd_infer, qadd_compute, NULL},
    {"com.microsoft", "QLinearMul", 1, 0, NULL, qmul_infer, qmul_compute, NULL},
    {"com.microsoft", "QLinearSigmoid", 1, 0, NULL, lut_infer, qsigmoid_compute, NULL},
    {"com.microsoft", "QLinearLeakyRelu", 1, 0, NULL, lut_infer, qleaky_compute, NULL},
    {"com.microsoft", "QLinearConcat", 1, 0, NULL, qconcat_infer, qconcat_compute, NULL},
    {"com.microsoft", "QLinearGlobalAveragePool", 1, 0, NULL, qc_gavgpool_infer, qc_gavgpool_compute, NULL},
    {"com.microsoft", "QLinearAveragePool", 1, 0, NULL, qc_avgpool_infer, qc_avgpool_compute, NULL},
    {"com.microsoft", "QLinearSoftmax", 1, 0, NULL, qc_softmax_infer, qc_softmax_compute, NULL},
    {"com.microsoft", "QGemm", 1, 0, qc_qgemm_init, qc_qgemm_infer, qc_qgemm_compute, qc_bpack_fini},
    {"com.microsoft", "DynamicQuantizeMatMul", 1, 0, qc_mm_b1_init, qc_dqmm_infer, qc_dqmm_compute,
     qc_bpack_fini},
    {"com.microsoft", "MatMulIntegerToFloat", 1, 0, qc_mm_b1_init, qc_mmitf_infer, qc_mmitf_compute,
     qc_bpack_fini},
    {"com.microsoft", "QAttention", 1, 0, NULL, qc_qattention_infer, qc_qattention_compute, NULL},
    {0},
};
