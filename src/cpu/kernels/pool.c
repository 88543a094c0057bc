/* MaxPool (with Indices), AveragePool and LpPool over 1-D, 2-D and 3-D windows; the family table
 * also lists the global pools, MaxUnpool and MaxRoiPool (pool_global.c, pool_unpool.c).
 * Lower ranks run as 3-D with leading unit dims. For each output index the valid taps of every
 * dim are computed once per plane job, so the window loops carry no bounds checks. Planes
 * (image, channel) are the unit of parallel work. float16/bfloat16 pool in float32. */
#include "pool_util.h"
#include "gemm_util.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

enum { POOL_MAX, POOL_AVG, POOL_LP };

typedef struct pool_cfg {
    int kind;
    kconv_geom g;
    int count_include_pad, storage_order;
    double p;
} pool_cfg;

static int pool_dtype_ok(int kind, int dt) {
    if (dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || kcvt_is_half(dt)) return 1;
    return kind == POOL_MAX && (dt == KILN_DTYPE_INT8 || dt == KILN_DTYPE_UINT8);
}

static kiln_status pool_setup(kiln_ctx *ctx, int kind, pool_cfg *c, int *known) {
    kiln_tensor *X;
    char sx[96];
    KILN_TRY(kiln_need_input(ctx, 0, &X));
    memset(c, 0, sizeof *c);
    c->kind = kind;
    *known = 0;
    if (!pool_dtype_ok(kind, X->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d for input X",
                         X->dtype);
    int nk = 0;
    const int64_t *ks = kiln_attr_ints(ctx->node, "kernel_shape", &nk);
    if (!ks) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute kernel_shape is required");
    if (X->rank < 0) return KILN_OK;
    if (X->rank < 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input X is %s; expected [N, C, spatial...] (rank >= 3)",
                         kconv_dims_str(X->rank, X->dims, sx, sizeof sx));
    kconv_geom *g = &c->g;
    g->nd = X->rank - 2;
    if (g->nd > 3)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "pooling over %d spatial dims (at most 3)",
                         g->nd);
    if (nk != g->nd)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "kernel_shape has %d values but X has %d spatial dims", nk, g->nd);
    g->N = X->dims[0];
    g->C = g->M = X->dims[1];
    g->group = 1;
    for (int i = 0; i < g->nd; i++) {
        g->k[i] = ks[i];
        g->in[i] = X->dims[i + 2];
    }
    int use_dil = (kind == POOL_MAX && ctx->opset >= 10) || (kind == POOL_AVG && ctx->opset >= 19) ||
                  (kind == POOL_LP && ctx->opset >= 18);
    int ceil_mode = ((kind != POOL_LP && ctx->opset >= 10) || ctx->opset >= 18) &&
                    kiln_attr_int(ctx->node, "ceil_mode", 0) != 0;
    KILN_TRY(kconv_window(ctx, g, use_dil, ceil_mode));
    c->count_include_pad = (int)kiln_attr_int(ctx->node, "count_include_pad", 0);
    c->storage_order = (int)kiln_attr_int(ctx->node, "storage_order", 0);
    if (c->storage_order != 0 && c->storage_order != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "storage_order is %d; expected 0 or 1",
                         c->storage_order);
    if (kind == POOL_LP) {
        const kiln_attr *a = kiln_node_attr(ctx->node, "p");
        c->p = !a ? 2.0 : a->type == KILN_ATTR_FLOAT ? a->f : (double)a->i;
        if (!(c->p > 0.0))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "p is %g; it must be positive", c->p);
    }
    *known = 1;
    return KILN_OK;
}

static kiln_status pool_infer_kind(kiln_ctx *ctx, int kind) {
    pool_cfg c;
    int known;
    KILN_TRY(pool_setup(ctx, kind, &c, &known));
    kiln_tensor *X = kiln_input(ctx, 0);
    if (!known) {
        KILN_TRY(kiln_set_output_unknown(ctx, 0, X->dtype));
        if (kind == POOL_MAX && ctx->n_out > 1 && kiln_output(ctx, 1))
            KILN_TRY(kiln_set_output_unknown(ctx, 1, KILN_DTYPE_INT64));
        return KILN_OK;
    }
    int64_t dims[KILN_MAX_RANK] = {c.g.N, c.g.C};
    for (int i = 0; i < c.g.nd; i++) dims[i + 2] = c.g.out[i];
    KILN_TRY(kiln_set_output(ctx, 0, X->dtype, c.g.nd + 2, dims));
    if (kind == POOL_MAX && ctx->n_out > 1 && ctx->out[1])
        KILN_TRY(kiln_set_output(ctx, 1, KILN_DTYPE_INT64, c.g.nd + 2, dims));
    return KILN_OK;
}

/* ---- the window loops ---- */

typedef struct pool_job {
    const pool_cfg *c;
    int dt; /* buffer element type: FLOAT, DOUBLE, INT8, UINT8 */
    const void *x;
    void *y;
    int64_t *idx;
    /* 3-D view: dims padded with leading ones */
    int64_t in[3], out[3], k[3], s[3], dil[3], pb[3], pe[3];
    int64_t *tlo[3], *thi[3], *cnt_pad[3]; /* per output index: valid taps [tlo, thi) */
    int prefetch; /* plane_s2_f32: ask for rows ahead (see PREFETCH_MIN_BYTES) */
} pool_job;

#define DEFINE_POOL_PLANE(NAME, T, ACC)                                                            \
    static void NAME(const pool_job *j, int64_t q) {                                               \
        const pool_cfg *c = j->c;                                                                  \
        const T *x = (const T *)j->x + q * c->g.in_size;                                           \
        T *y = (T *)j->y + q * c->g.out_size;                                                      \
        int64_t *ix = j->idx ? j->idx + q * c->g.out_size : NULL;                                  \
        int64_t D = j->in[0], H = j->in[1], W = j->in[2], base = q * c->g.in_size;                 \
        int64_t o = 0;                                                                             \
        for (int64_t od = 0; od < j->out[0]; od++)                                                 \
            for (int64_t oh = 0; oh < j->out[1]; oh++)                                             \
                for (int64_t ow = 0; ow < j->out[2]; ow++, o++) {                                  \
                    int64_t d0 = od * j->s[0] - j->pb[0], h0 = oh * j->s[1] - j->pb[1];            \
                    int64_t w0 = ow * j->s[2] - j->pb[2];                                          \
                    int64_t dl = j->tlo[0][od], dh = j->thi[0][od], hl = j->tlo[1][oh];            \
                    int64_t hh = j->thi[1][oh], wl = j->tlo[2][ow], wh = j->thi[2][ow];            \
                    if (c->kind == POOL_MAX) {                                                     \
                        ACC best = 0;                                                              \
                        int64_t bi = -1;                                                           \
                        for (int64_t td = dl; td < dh; td++)                                       \
                            for (int64_t th = hl; th < hh; th++) {                                 \
                                int64_t id = d0 + td * j->dil[0], ih = h0 + th * j->dil[1];        \
                                const T *row = x + (id * H + ih) * W;                              \
                                for (int64_t tw = wl; tw < wh; tw++) {                             \
                                    int64_t iw = w0 + tw * j->dil[2];                              \
                                    ACC v = row[iw];                                               \
                                    if (bi < 0 || v > best) {                                      \
                                        best = v;                                                  \
                                        bi = (id * H + ih) * W + iw;                               \
                                    }                                                              \
                                }                                                                  \
                            }                                                                      \
                        y[o] = bi < 0 ? (T)0 : (T)best;                                            \
                        if (ix) {                                                                  \
                            if (bi < 0) ix[o] = -1;                                                \
                            else if (!c->storage_order) ix[o] = base + bi;                         \
                            else { /* column-major: the first spatial dim varies fastest */        \
                                int64_t id = bi / (H * W), ih = (bi / W) % H, iw = bi % W;         \
                                ix[o] = base + id + D * (ih + H * iw);                             \
                            }                                                                      \
                        }                                                                          \
                        continue;                                                                  \
                    }                                                                              \
                    ACC sum = 0;                                                                   \
                    for (int64_t td = dl; td < dh; td++)                                           \
                        for (int64_t th = hl; th < hh; th++) {                                     \
                            const T *row = x + ((d0 + td * j->dil[0]) * H + h0 + th * j->dil[1]) * W; \
                            for (int64_t tw = wl; tw < wh; tw++) {                                 \
                                ACC v = row[w0 + tw * j->dil[2]];                                  \
                                if (c->kind == POOL_AVG) sum += v;                                 \
                                else if (c->p == 2.0) sum += v * v;                                \
                                else if (c->p == 1.0) sum += v < 0 ? -v : v;                       \
                                else sum += (ACC)pow(fabs((double)v), c->p);                       \
                            }                                                                      \
                        }                                                                          \
                    if (c->kind == POOL_AVG) {                                                     \
                        int64_t n = c->count_include_pad                                           \
                                        ? j->cnt_pad[0][od] * j->cnt_pad[1][oh] * j->cnt_pad[2][ow] \
                                        : (dh - dl) * (hh - hl) * (wh - wl);                       \
                        y[o] = n > 0 ? (T)(sum / (ACC)n) : (T)0;                                   \
                    } else {                                                                       \
                        y[o] = c->p == 2.0 ? (T)sqrt((double)sum)                                  \
                               : c->p == 1.0 ? (T)sum : (T)pow((double)sum, 1.0 / c->p);           \
                    }                                                                              \
                }                                                                                  \
    }

DEFINE_POOL_PLANE(plane_f32, float, float)
DEFINE_POOL_PLANE(plane_f64, double, double)
DEFINE_POOL_PLANE(plane_i8, int8_t, int)
DEFINE_POOL_PLANE(plane_u8, uint8_t, int)

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#include "avx2_part.h"
/* r[i] = v[i] where v[i] > r[i] or r[i] is NaN (a column's first NaN gives way to any number) */
__attribute__((target("avx512f"))) static void colmax_avx512(float *r, const float *v, int64_t n) {
    int64_t i = 0;
    for (; i < n; i += 16) {
        __mmask16 m = (__mmask16)(n - i >= 16 ? 0xffff : (1u << (n - i)) - 1);
        __m512 a = _mm512_maskz_loadu_ps(m, r + i), b = _mm512_maskz_loadu_ps(m, v + i);
        __mmask16 take =
            _mm512_cmp_ps_mask(b, a, _CMP_GT_OQ) | _mm512_cmp_ps_mask(a, a, _CMP_UNORD_Q);
        _mm512_mask_storeu_ps(r + i, m & take, b);
    }
}
/* Outputs [oa, ob) of a row whose windows lie inside it: y[o] = the largest of the kw reduced
 * columns from o * s - pb, or NaN when the window's first tap (in first) is NaN. */
__attribute__((target("avx512f"))) static int64_t rowmax_avx512(const float *rowbuf,
                                                              const float *first, int64_t s,
                                                              int64_t pb, int64_t kw, int64_t oa,
                                                              int64_t ob, float *y) {
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    const __m512i step = _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)s));
    const __m512i one = _mm512_set1_epi32(1);
    int64_t o = oa;
    for (; o + 16 <= ob; o += 16) {
        __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int)(o * s - pb)), step);
        __m512 best = _mm512_i32gather_ps(idx, rowbuf, 4);
        __m512 f = _mm512_i32gather_ps(idx, first, 4);
        for (int64_t t = 1; t < kw; t++) {
            idx = _mm512_add_epi32(idx, one);
            __m512 v = _mm512_i32gather_ps(idx, rowbuf, 4);
            best = _mm512_mask_mov_ps(best, _mm512_cmp_ps_mask(v, best, _CMP_GT_OQ), v);
        }
        best = _mm512_mask_mov_ps(best, _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), f);
        _mm512_storeu_ps(y + o, best);
    }
    return o;
}
/* Outputs [oa, ob) of row (od, oh) whose windows lie inside the row, for strides 1 and 2, read
 * straight from the input: each tap is one load (stride 2: two, with the even lanes picked out),
 * taken in the window's order (the first valid tap, then v > best), so every output equals
 * plane_f32's, NaN and signed zeros included. Each tap's compare and blend wait on the last, so
 * NV vectors of 16 outputs go side by side. The column-reduce-then-gather path below costs several
 * gathers per 16 outputs; this one none (SqueezeNet's three 3x3 stride-2 pools:
 * 1.02 -> 0.70 ms at one thread). */
__attribute__((target("avx512f"), always_inline)) static inline void
winmax_nv(const float *x, int64_t H, int64_t W, int64_t d0, int64_t dl, int64_t dh, int64_t h0,
          int64_t hl, int64_t hh, const int s, int64_t pb, int64_t kw, int64_t o, int64_t ob,
          float *y, const int NV) {
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    __mmask16 lo[4], hi[4], st[4];
    for (int v = 0; v < NV; v++) {
        int64_t n = ob - o - 16 * v;
        n = n < 0 ? 0 : n > 16 ? 16 : n;
        /* stride 2 reads 2n - 1 floats from each tap's start; stride 1 n */
        int64_t span = s == 2 && n ? 2 * n - 1 : n;
        lo[v] = (__mmask16)(span >= 16 ? 0xffff : (1u << span) - 1);
        hi[v] = (__mmask16)(span <= 16 ? 0 : span >= 32 ? 0xffff : (1u << (span - 16)) - 1);
        st[v] = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1);
    }
    __m512 best[4] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps()};
    for (int64_t td = dl; td < dh; td++)
        for (int64_t th = hl; th < hh; th++) {
            const float *row = x + ((d0 + td) * H + h0 + th) * W + o * s - pb;
            for (int64_t tw = 0; tw < kw; tw++)
                for (int v = 0; v < NV; v++) {
                    const float *p = row + tw + 16 * s * v;
                    __m512 a = _mm512_maskz_loadu_ps(lo[v], p);
                    if (s == 2) a = _mm512_permutex2var_ps(a, ev, _mm512_maskz_loadu_ps(hi[v], p + 16));
                    if (td == dl && th == hl && tw == 0) best[v] = a;
                    else best[v] = _mm512_mask_mov_ps(best[v], _mm512_cmp_ps_mask(a, best[v], _CMP_GT_OQ), a);
                }
        }
    for (int v = 0; v < NV; v++) _mm512_mask_storeu_ps(y + o + 16 * v, st[v], best[v]);
}

__attribute__((target("avx512f"))) static void winmax_avx512(const float *x, int64_t H, int64_t W,
                                                             int64_t d0, int64_t dl, int64_t dh,
                                                             int64_t h0, int64_t hl, int64_t hh,
                                                             int64_t s, int64_t pb, int64_t kw,
                                                             int64_t oa, int64_t ob, float *y) {
    for (int64_t o = oa; o < ob; o += 64) {
        int64_t n = ob - o;
        if (s == 2) {
            if (n > 32) winmax_nv(x, H, W, d0, dl, dh, h0, hl, hh, 2, pb, kw, o, ob, y, 4);
            else if (n > 16) winmax_nv(x, H, W, d0, dl, dh, h0, hl, hh, 2, pb, kw, o, ob, y, 2);
            else winmax_nv(x, H, W, d0, dl, dh, h0, hl, hh, 2, pb, kw, o, ob, y, 1);
        } else {
            if (n > 32) winmax_nv(x, H, W, d0, dl, dh, h0, hl, hh, 1, pb, kw, o, ob, y, 4);
            else if (n > 16) winmax_nv(x, H, W, d0, dl, dh, h0, hl, hh, 1, pb, kw, o, ob, y, 2);
            else winmax_nv(x, H, W, d0, dl, dh, h0, hl, hh, 1, pb, kw, o, ob, y, 1);
        }
    }
}
#define HAVE_COLMAX_AVX512 1

/* Separable float32 MaxPool and AveragePool (2-D or 1-D windows, no dilation, horizontal stride 1
 * or 2): each input row is first reduced over the window's columns, once for every output row
 * that reads it, then output rows reduce those over the window's rows. Where the per-tap path
 * (winmax_nv) did kh * kw loads and blends per 16 outputs, this does about kw + kh / stride
 * (DenseNet's 2x2 stride-2 AveragePools went through the scalar loops: 0.87 ms on 128 x 56 x 56,
 * onnxruntime 0.06). Max keeps plane_f32's answer: the running max starts at -inf and max_ps
 * drops NaN taps, so it is the largest number in the window, the earliest of equal zeros (rows
 * first, as plane_f32 walks them); a window whose first tap is NaN then takes that NaN. Average
 * sums each row left to right, then the rows, and divides (not a reciprocal multiply). */
__attribute__((target("avx512f"))) static inline __m512 load_taps(const float *p, int s, int64_t n) {
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    if (s == 1) return _mm512_maskz_loadu_ps((__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1), p);
    int64_t span = 2 * n - 1; /* stride 2 reads 2n - 1 floats */
    __mmask16 lo = (__mmask16)(span >= 16 ? 0xffff : (1u << span) - 1);
    __mmask16 hi = (__mmask16)(span <= 16 ? 0 : span >= 32 ? 0xffff : (1u << (span - 16)) - 1);
    return _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo, p), ev, _mm512_maskz_loadu_ps(hi, p + 16));
}

/* outputs [oa, ob) of one input row reduced over the window's kw columns into h */
__attribute__((target("avx512f"))) static void sep_row(const float *xr, int s, int64_t pb,
                                                       int64_t kw, int64_t oa, int64_t ob,
                                                       int is_max, float *h) {
    for (int64_t o = oa; o < ob; o += 16) {
        int64_t n = ob - o < 16 ? ob - o : 16;
        const float *p = xr + o * s - pb;
        __m512 acc = is_max ? _mm512_set1_ps(-INFINITY) : load_taps(p, s, n);
        for (int64_t t = is_max ? 0 : 1; t < kw; t++) {
            __m512 v = load_taps(p + t, s, n);
            acc = is_max ? _mm512_max_ps(v, acc) : _mm512_add_ps(acc, v);
        }
        _mm512_mask_storeu_ps(h + (o - oa), (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1), acc);
    }
}

/* one output of a 2-D plane the scalar way (border columns): plane_f32's rules */
static float sep_one(const pool_job *j, const float *x, int64_t oh, int64_t ow) {
    int64_t W = j->in[2], h0 = oh * j->s[1] - j->pb[1], w0 = ow * j->s[2] - j->pb[2];
    int64_t hl = j->tlo[1][oh], hh = j->thi[1][oh], wl = j->tlo[2][ow], wh = j->thi[2][ow];
    float best = 0.0f, sum = 0.0f;
    int any = 0;
    for (int64_t th = hl; th < hh; th++)
        for (int64_t tw = wl; tw < wh; tw++) {
            float v = x[(h0 + th) * W + w0 + tw];
            if (!any || v > best) best = v;
            any = 1;
            sum += v;
        }
    if (j->c->kind == POOL_MAX) return best;
    int64_t n = j->c->count_include_pad ? j->cnt_pad[1][oh] * j->cnt_pad[2][ow]
                                        : (hh - hl) * (wh - wl);
    return n > 0 ? sum / (float)n : 0.0f;
}

/* sep_one for MaxPool: the border columns of every output row of a stride-2 plane (ResNet's
 * padded 3x3/2 stem pool: 1 of 56 outputs a row), where sep_one's running sum (a dependent add
 * per tap) took a third of the plane's time on the EPYC VM. */
static float sep_one_max(const pool_job *j, const float *x, int64_t oh, int64_t ow) {
    int64_t W = j->in[2], h0 = oh * j->s[1] - j->pb[1], w0 = ow * j->s[2] - j->pb[2];
    int64_t hl = j->tlo[1][oh], hh = j->thi[1][oh], wl = j->tlo[2][ow], wh = j->thi[2][ow];
    if (hl >= hh || wl >= wh) return 0.0f;
    const float *r = x + (h0 + hl) * W + w0;
    float best = r[wl];
    for (int64_t th = hl; th < hh; th++, r += W)
        for (int64_t tw = th == hl ? wl + 1 : wl; tw < wh; tw++)
            if (r[tw] > best) best = r[tw];
    return best;
}

/* The border outputs of a plane (windows reaching past the row: columns [0, oa) and [ob, OW) of
 * every output row), after its vector part. Computed inside the row loop, right after the row's
 * vector stores, each of these scalar windows took about 140 ns on the EPYC VM: ResNet's padded
 * 112 -> 56 stem pool 0.61 ms a plane set, 0.23 with this pass after the loop (1 thread). */
static void border_cols(const pool_job *j, const float *x, float *y, int64_t oa, int64_t ob, int is_max) {
    int64_t OH = j->out[1], OW = j->out[2];
    for (int64_t oh = 0; oh < OH; oh++)
        for (int64_t ow = oa > 0 ? 0 : ob; ow < OW; ow = ow + 1 == oa ? ob : ow + 1)
            y[oh * OW + ow] = is_max ? sep_one_max(j, x, oh, ow) : sep_one(j, x, oh, ow);
}

static int sep_ok(const pool_job *j) {
    return (j->c->kind == POOL_MAX || j->c->kind == POOL_AVG) && j->dt == KILN_DTYPE_FLOAT &&
           !j->idx && j->in[0] == 1 && j->out[0] == 1 && j->k[0] == 1 && j->dil[1] == 1 && j->dil[2] == 1 && j->s[2] <= 2 &&
           kgemm_avx512_available();
}

/* Bytes of scratch plane_sep_f32 needs: the reduced rows, then a done flag per input row. */
static size_t sep_scratch(const pool_job *j) {
    return sizeof(float) * (size_t)(j->in[1] * j->out[2]) + (size_t)j->in[1] + 1;
}

__attribute__((target("avx512f"))) static void plane_sep_f32(const pool_job *j, int64_t q,
                                                             float *hbuf) {
    const float *x = (const float *)j->x + q * j->c->g.in_size;
    float *y = (float *)j->y + q * j->c->g.out_size;
    int64_t H = j->in[1], W = j->in[2], OH = j->out[1], OW = j->out[2];
    int64_t S = j->s[2], PB = j->pb[2], KW = j->k[2];
    int is_max = j->c->kind == POOL_MAX;
    int64_t oa, ob;
    kpool_inner_cols(W, KW, S, PB, OW, &oa, &ob);
    int64_t nv = ob - oa;
    unsigned char *done = (unsigned char *)(hbuf + H * nv);
    memset(done, 0, (size_t)H);
    for (int64_t oh = 0; oh < OH; oh++) {
        float *yr = y + oh * OW;
        int64_t h0 = oh * j->s[1] - j->pb[1], hl = j->tlo[1][oh], hh = j->thi[1][oh];
        if (hl >= hh) { /* no valid rows: 0, as plane_f32 */
            memset(yr, 0, sizeof(float) * (size_t)OW);
            continue;
        }
        for (int64_t th = hl; th < hh; th++) {
            int64_t r = h0 + th;
            if (!done[r] && nv > 0) {
                sep_row(x + r * W, (int)S, PB, KW, oa, ob, is_max, hbuf + r * nv);
                done[r] = 1;
            }
        }
        float div = (float)((j->c->count_include_pad ? j->cnt_pad[1][oh] : hh - hl) * KW);
        for (int64_t o = oa; o < ob; o += 16) {
            int64_t n = ob - o < 16 ? ob - o : 16;
            __mmask16 m = (__mmask16)(n >= 16 ? 0xffff : (1u << n) - 1);
            const float *h = hbuf + (h0 + hl) * nv + (o - oa);
            __m512 acc = _mm512_maskz_loadu_ps(m, h); /* a max row is never NaN */
            for (int64_t th = hl + 1; th < hh; th++) {
                __m512 v = _mm512_maskz_loadu_ps(m, h + (th - hl) * nv);
                acc = is_max ? _mm512_max_ps(v, acc) : _mm512_add_ps(acc, v);
            }
            if (is_max) {
                __m512 f = load_taps(x + (h0 + hl) * W + o * S - PB, (int)S, n);
                acc = _mm512_mask_mov_ps(acc, _mm512_cmp_ps_mask(f, f, _CMP_UNORD_Q), f);
            } else {
                acc = _mm512_div_ps(acc, _mm512_set1_ps(div));
            }
            _mm512_mask_storeu_ps(yr + o, m, acc);
        }
    }
    border_cols(j, x, y, oa, ob, is_max);
}

/* MaxPool windows 2 or 3 columns wide at horizontal stride 2 (the 3x3/2 pools of SqueezeNet and
 * most CNN stems, VGG's 2x2/2), any height and vertical stride: plane_sep_f32's answer in fewer
 * instructions (row_s2 says how), with the masks worked out once per plane rather than per tap. A
 * row is reduced once, into a ring of kh rows (row r in slot r % kh: a window's rows are
 * consecutive), which stays in L1 whatever the plane's size. 32 planes of 111 x 111 (L2-resident,
 * one thread): 0.135 -> 0.077 ms. */
static inline __mmask16 span_lo(int64_t span) {
    return (__mmask16)(span >= 16 ? 0xffff : span <= 0 ? 0 : (1u << span) - 1);
}

/* Outputs [oa, ob) of one input row reduced over the window's kw (2 or 3) columns into h, in
 * chunks of 16 (h has room for the last chunk's whole vector). A chunk loads its 32 input columns
 * once: the even lanes are the first tap, the odd lanes the second, and the third is the even
 * lanes shifted by one, the last lane from the next chunk's loads (which are therefore made a chunk
 * ahead). Loads that span cache lines are the cost here (rows of odd width), so there are two a
 * chunk, where a tap-by-tap reduction makes kw pairs. The -inf start drops NaN taps (max_ps keeps
 * its second operand when either is NaN); later taps win only when larger, so of equal zeros the
 * earlier stays. A chunk of n < 16 outputs reads columns [0, 2n] (kw 3), inside the row as its
 * windows are; the chunk after a full last one reads its column 0 only (the last window's third
 * tap). */
__attribute__((target("avx512f"), always_inline)) static inline void
row_s2(const float *xr, int64_t pb, const int kw, int64_t oa, int64_t ob, float *h) {
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    const __m512i od = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
    const __m512 ninf = _mm512_set1_ps(-INFINITY);
    const float *p = xr + 2 * oa - pb;
    int64_t nv = ob - oa, n = nv < 16 ? nv : 16;
    int64_t span = n == 16 ? 32 : 2 * n + (kw == 3);
    __m512 a = _mm512_maskz_loadu_ps(span_lo(span), p);
    __m512 b = _mm512_maskz_loadu_ps(span_lo(span - 16), p + 16);
    __m512 e = _mm512_permutex2var_ps(a, ev, b);
    for (int64_t i = 0; i < nv; i += 16, p += 32) {
        __m512 acc = _mm512_max_ps(_mm512_permutex2var_ps(a, od, b), _mm512_max_ps(e, ninf));
        if (kw == 3) {
            int64_t n2 = nv - i - 16; /* the next chunk's outputs */
            int64_t span2 = n2 >= 16 ? 32 : n2 > 0 ? 2 * n2 + 1 : n2 == 0;
            a = _mm512_maskz_loadu_ps(span_lo(span2), p + 32);
            b = _mm512_maskz_loadu_ps(span_lo(span2 - 16), p + 48);
            __m512 e2 = _mm512_permutex2var_ps(a, ev, b);
            __m512i sh = _mm512_alignr_epi32(_mm512_castps_si512(e2), _mm512_castps_si512(e), 1);
            acc = _mm512_max_ps(_mm512_castsi512_ps(sh), acc);
            e = e2;
        } else if (i + 16 < nv) {
            int64_t n2 = nv - i - 16, span2 = n2 >= 16 ? 32 : 2 * n2;
            a = _mm512_maskz_loadu_ps(span_lo(span2), p + 32);
            b = _mm512_maskz_loadu_ps(span_lo(span2 - 16), p + 48);
            e = _mm512_permutex2var_ps(a, ev, b);
        }
        _mm512_storeu_ps(h + i, acc);
    }
}

/* 16 outputs of a row from its window's nr reduced rows (which hold no NaN) and the input row of
 * the window's first tap (n outputs, columns [0, 2n - 1) from f): that tap wins ties (it comes
 * first) and, being NaN, the window. */
__attribute__((target("avx512f"), always_inline)) static inline __m512
vmax_s2(float *const *rows, int64_t nr, int64_t i, const float *f, __mmask16 m, __mmask16 f0,
        __mmask16 f1) {
    const __m512i ev = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
    __m512 acc = _mm512_maskz_loadu_ps(m, rows[0] + i);
    for (int64_t r = 1; r < nr; r++) acc = _mm512_max_ps(_mm512_maskz_loadu_ps(m, rows[r] + i), acc);
    __m512 t = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(f0, f), ev, _mm512_maskz_loadu_ps(f1, f + 16));
    return _mm512_max_ps(acc, t);
}

enum { S2_MAX_KH = 8 };

/* Inputs larger than this come from memory, and on the 2-core test VM the hardware prefetcher
 * does not keep up with plane_s2_f32's reads: each row reduced asks for the bytes PREFETCH_AHEAD
 * on (into L2). SqueezeNet at batch 8, one thread, in the model: the first pool (25 MB in)
 * 2.8-3.0 -> 2.0-2.2 ms (onnxruntime 2.0), the second (12 MB) 1.0-1.1 -> 0.9. Prefetching also
 * made the third (6 MB) 0.57 -> 0.70 and batch 1's pools (3 MB and less) up to 25% slower, their
 * rows being in cache already, hence the size rule. */
#define PREFETCH_MIN_BYTES (8.0 * 1024 * 1024)
enum { PREFETCH_AHEAD = 16 * 1024 };

static void prefetch_ahead(const float *row, int64_t n) {
    uintptr_t a = ((uintptr_t)row + PREFETCH_AHEAD) & ~(uintptr_t)63;
    uintptr_t end = (uintptr_t)(row + n) + PREFETCH_AHEAD;
    for (; a < end; a += 64) __builtin_prefetch((const void *)a, 0, 2);
}

/* the window shapes plane_s2_f32 (and plane_s2_f32_avx2) take, whatever the instruction set */
static int s2_shape_ok(const pool_job *j) {
    return j->c->kind == POOL_MAX && j->dt == KILN_DTYPE_FLOAT && !j->idx && j->in[0] == 1 &&
           j->out[0] == 1 && j->k[0] == 1 && j->dil[1] == 1 && j->dil[2] == 1 && j->s[2] == 2 &&
           (j->k[2] == 2 || j->k[2] == 3) && j->k[1] <= S2_MAX_KH;
}

static int s2_ok(const pool_job *j) { return sep_ok(j) && s2_shape_ok(j); }

/* Floats from one reduced row to the next: whole cache lines, so no store to them is split. */
static int64_t s2_stride(const pool_job *j) { return (j->out[2] + 15) / 16 * 16; }

/* Bytes of scratch plane_s2_f32 needs (a multiple of 64): kh reduced rows, then the row each
 * slot holds. */
static size_t s2_scratch(const pool_job *j) {
    return (sizeof(float) * (size_t)s2_stride(j) + 64) * (size_t)j->k[1];
}

/* outputs [oa, ob) of output row yr from its nr reduced rows (S2_OUT of pool_s2_plane.h) */
__attribute__((target("avx512f"), always_inline)) static inline void
out_row_s2(float *yr, float *const *rows, int64_t nr, const float *first, int64_t oa, int64_t ob) {
    int64_t tail = (ob - oa) % 16;
    __mmask16 mt = (__mmask16)((1u << tail) - 1);
    uint64_t mft = tail ? (1ull << (2 * tail - 1)) - 1 : 0; /* columns [0, 2 tail - 1) */
    int64_t o = oa;
    for (; o + 16 <= ob; o += 16)
        _mm512_storeu_ps(yr + o, vmax_s2(rows, nr, o - oa, first + 2 * o, 0xffff, 0xffff, 0x7fff));
    if (o < ob)
        _mm512_mask_storeu_ps(yr + o, mt, vmax_s2(rows, nr, o - oa, first + 2 * o, mt, (__mmask16)mft,
                                                  (__mmask16)(mft >> 16)));
}

#define S2_PLANE plane_s2_kw
#define S2_TARGET __attribute__((target("avx512f")))
#define S2_ROW(xr, pb, kw, oa, ob, h) row_s2(xr, pb, kw, oa, ob, h)
#define S2_OUT(yr, rows, nr, first, oa, ob) out_row_s2(yr, rows, nr, first, oa, ob)
#include "pool_s2_plane.h"
#undef S2_PLANE
#undef S2_TARGET
#undef S2_ROW
#undef S2_OUT

__attribute__((target("avx512f"))) static void plane_s2_f32(const pool_job *j, int64_t q,
                                                            float *ring) {
    /* each its own copy: a prefetch test in the row loop alone cost the third pool of SqueezeNet
     * (which does not prefetch) 10% */
    if (j->k[2] == 3) {
        if (j->prefetch) plane_s2_kw(j, q, ring, 3, 1);
        else plane_s2_kw(j, q, ring, 3, 0);
    } else {
        if (j->prefetch) plane_s2_kw(j, q, ring, 2, 1);
        else plane_s2_kw(j, q, ring, 2, 0);
    }
}
/* plane_sep_f32 over 8 lanes, for CPUs without AVX-512 (AMD before Zen 4, Intel client parts),
 * which otherwise took plane_max_f32's scalar window loops: SqueezeNet's three 3x3 stride-2
 * pools cost 6.4 ms of its 25 at one thread on an EPYC with AVX2 (onnxruntime: 0.2). Same
 * order of operations as the 16-lane version, so the same values, NaN and zeros included.
 * Tails load through maskload (fast on AMD cores, unlike its store) and store in pieces
 * (avx2_part.h); neither touches memory past the tail. */
__attribute__((target("avx2"))) static inline __m256i mask8(int64_t n) {
    __m256i idx = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)(n < 0 ? 0 : n > 8 ? 8 : n)), idx);
}

/* n (<= 8) taps from p at stride s (1 or 2); lanes past n are 0 */
__attribute__((target("avx2"))) static inline __m256 load_taps8(const float *p, int s, int64_t n) {
    if (s == 1) return n >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask8(n));
    int64_t span = 2 * n - 1; /* stride 2 reads 2n - 1 floats */
    __m256 a = span >= 8 ? _mm256_loadu_ps(p) : _mm256_maskload_ps(p, mask8(span));
    __m256 b = span >= 16 ? _mm256_loadu_ps(p + 8) : _mm256_maskload_ps(p + 8, mask8(span - 8));
    /* even lanes of a then b: shuffle picks them per 128-bit half, permute puts halves in order */
    __m256 e = _mm256_shuffle_ps(a, b, 0x88);
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(e), 0xD8));
}

__attribute__((target("avx2"))) static inline void store8(float *p, __m256 v, int64_t n) {
    kavx2_store_part(p, v, n);
}

__attribute__((target("avx2"))) static void sep_row_avx2(const float *xr, int s, int64_t pb,
                                                         int64_t kw, int64_t oa, int64_t ob,
                                                         int is_max, float *h) {
    for (int64_t o = oa; o < ob; o += 8) {
        int64_t n = ob - o < 8 ? ob - o : 8;
        const float *p = xr + o * s - pb;
        __m256 acc = is_max ? _mm256_set1_ps(-INFINITY) : load_taps8(p, s, n);
        for (int64_t t = is_max ? 0 : 1; t < kw; t++) {
            __m256 v = load_taps8(p + t, s, n);
            acc = is_max ? _mm256_max_ps(v, acc) : _mm256_add_ps(acc, v);
        }
        store8(h + (o - oa), acc, n);
    }
}

__attribute__((target("avx2"))) static void plane_sep_f32_avx2(const pool_job *j, int64_t q,
                                                               float *hbuf) {
    const float *x = (const float *)j->x + q * j->c->g.in_size;
    float *y = (float *)j->y + q * j->c->g.out_size;
    int64_t H = j->in[1], W = j->in[2], OH = j->out[1], OW = j->out[2];
    int64_t S = j->s[2], PB = j->pb[2], KW = j->k[2];
    int is_max = j->c->kind == POOL_MAX;
    int64_t oa, ob;
    kpool_inner_cols(W, KW, S, PB, OW, &oa, &ob);
    int64_t nv = ob - oa;
    unsigned char *done = (unsigned char *)(hbuf + H * nv);
    memset(done, 0, (size_t)H);
    for (int64_t oh = 0; oh < OH; oh++) {
        float *yr = y + oh * OW;
        int64_t h0 = oh * j->s[1] - j->pb[1], hl = j->tlo[1][oh], hh = j->thi[1][oh];
        if (hl >= hh) { /* no valid rows: 0, as plane_f32 */
            memset(yr, 0, sizeof(float) * (size_t)OW);
            continue;
        }
        for (int64_t th = hl; th < hh; th++) {
            int64_t r = h0 + th;
            if (!done[r] && nv > 0) {
                sep_row_avx2(x + r * W, (int)S, PB, KW, oa, ob, is_max, hbuf + r * nv);
                done[r] = 1;
            }
        }
        int64_t rows = j->c->count_include_pad ? j->cnt_pad[1][oh] : hh - hl;
        __m256 div = _mm256_set1_ps((float)(rows * KW));
        for (int64_t o = oa; o < ob; o += 8) {
            int64_t n = ob - o < 8 ? ob - o : 8;
            const float *h = hbuf + (h0 + hl) * nv + (o - oa);
            __m256 acc = load_taps8(h, 1, n); /* a max row is never NaN */
            for (int64_t th = hl + 1; th < hh; th++) {
                __m256 v = load_taps8(h + (th - hl) * nv, 1, n);
                acc = is_max ? _mm256_max_ps(v, acc) : _mm256_add_ps(acc, v);
            }
            if (is_max) {
                __m256 f = load_taps8(x + (h0 + hl) * W + o * S - PB, (int)S, n);
                acc = _mm256_blendv_ps(acc, f, _mm256_cmp_ps(f, f, _CMP_UNORD_Q));
            } else {
                acc = _mm256_div_ps(acc, div);
            }
            store8(yr + o, acc, n);
        }
    }
    border_cols(j, x, y, oa, ob, is_max);
}

/* plane_s2_f32 over 8 lanes (row_s2's scheme): a chunk of 8 outputs loads its 16 input columns
 * once and picks the first tap from the even lanes, the second from the odd ones, the third from
 * the even lanes moved down by one with the next column in the last lane; the separable AVX2 path
 * loaded and shuffled every tap again and kept every reduced row of the plane (SqueezeNet's first
 * pool, 111 x 111 planes: 24 KB of them) where this keeps a ring of kh rows in L1. The same order
 * of max operations as row_s2 and vmax_s2, so the same bits as the AVX-512 path. */
__attribute__((target("avx2"), always_inline)) static inline __m256 evens8(__m256 a, __m256 b) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0x88)), 0xD8));
}

__attribute__((target("avx2"), always_inline)) static inline __m256 odds8(__m256 a, __m256 b) {
    return _mm256_castpd_ps(_mm256_permute4x64_pd(_mm256_castps_pd(_mm256_shuffle_ps(a, b, 0xDD)), 0xD8));
}

__attribute__((target("avx2"), always_inline)) static inline void
row_s2_avx2(const float *xr, int64_t pb, const int kw, int64_t oa, int64_t ob, float *h) {
    const __m256 ninf = _mm256_set1_ps(-INFINITY);
    const __m256i down1 = _mm256_setr_epi32(1, 2, 3, 4, 5, 6, 7, 7);
    const float *p = xr + 2 * oa - pb;
    int64_t nv = ob - oa, i = 0;
    for (; i + 8 <= nv; i += 8, p += 16) {
        __m256 a = _mm256_loadu_ps(p), b = _mm256_loadu_ps(p + 8), e = evens8(a, b);
        __m256 acc = _mm256_max_ps(odds8(a, b), _mm256_max_ps(e, ninf));
        if (kw == 3) /* column 16 is the last window's third tap: inside the row */
            acc = _mm256_max_ps(_mm256_blend_ps(_mm256_permutevar8x32_ps(e, down1), _mm256_broadcast_ss(p + 16), 0x80),
                                acc);
        _mm256_storeu_ps(h + i, acc);
    }
    if (i < nv) { /* n < 8 outputs read columns [0, 2n) (kw 2) or [0, 2n] (kw 3) */
        int64_t n = nv - i, span = 2 * n + (kw == 3);
        __m256 a = kavx2_load_part(p, span), b = kavx2_load_part(p + 8, span - 8), e = evens8(a, b);
        __m256 acc = _mm256_max_ps(odds8(a, b), _mm256_max_ps(e, ninf));
        if (kw == 3) acc = _mm256_max_ps(_mm256_permutevar8x32_ps(e, down1), acc);
        _mm256_storeu_ps(h + i, acc); /* the ring's rows have room for whole vectors */
    }
}

/* outputs [oa, ob) of output row yr from its nr reduced rows; the window's first tap decides NaN:
 * columns [0, 2n - 1) of its row */
__attribute__((target("avx2"), always_inline)) static inline void
out_row_s2_avx2(float *yr, float *const *rows, int64_t nr, const float *first, int64_t oa, int64_t ob) {
    for (int64_t o = oa; o < ob; o += 8) {
        int64_t n = ob - o < 8 ? ob - o : 8, i = o - oa;
        __m256 acc = _mm256_loadu_ps(rows[0] + i);
        for (int64_t r = 1; r < nr; r++) acc = _mm256_max_ps(_mm256_loadu_ps(rows[r] + i), acc);
        const float *f = first + 2 * o;
        __m256 t = evens8(kavx2_load_part(f, 2 * n - 1), kavx2_load_part(f + 8, 2 * n - 9));
        kavx2_store_part(yr + o, _mm256_blendv_ps(acc, t, _mm256_cmp_ps(t, t, _CMP_UNORD_Q)), n);
    }
}

#define S2_PLANE plane_s2_kw_avx2
#define S2_TARGET __attribute__((target("avx2")))
#define S2_ROW(xr, pb, kw, oa, ob, h) row_s2_avx2(xr, pb, kw, oa, ob, h)
#define S2_OUT(yr, rows, nr, first, oa, ob) out_row_s2_avx2(yr, rows, nr, first, oa, ob)
#include "pool_s2_plane.h"
#undef S2_PLANE
#undef S2_TARGET
#undef S2_ROW
#undef S2_OUT

__attribute__((target("avx2"))) static void plane_s2_f32_avx2(const pool_job *j, int64_t q,
                                                              float *ring) {
    if (j->k[2] == 3) {
        if (j->prefetch) plane_s2_kw_avx2(j, q, ring, 3, 1);
        else plane_s2_kw_avx2(j, q, ring, 3, 0);
    } else {
        if (j->prefetch) plane_s2_kw_avx2(j, q, ring, 2, 1);
        else plane_s2_kw_avx2(j, q, ring, 2, 0);
    }
}

/* KILN_NO_POOL_S2=1: the separable AVX2 path instead, for A/B runs (bench/variants_ab.py) */
static int pool_s2_avx2_off(void) {
    static _Atomic int off = -1;
    if (off < 0) {
        const char *e = getenv("KILN_NO_POOL_S2");
        off = e && *e && strcmp(e, "0") ? 1 : 0;
    }
    return off;
}

static int sep_avx2_ok(const pool_job *j) {
    return (j->c->kind == POOL_MAX || j->c->kind == POOL_AVG) && j->dt == KILN_DTYPE_FLOAT &&
           !j->idx && j->in[0] == 1 && j->out[0] == 1 && j->k[0] == 1 && j->dil[1] == 1 &&
           j->dil[2] == 1 && j->s[2] <= 2 && kgemm_avx2_available() && !kgemm_avx512_available();
}
#endif

static void colmax(float *r, const float *v, int64_t n) {
#ifdef HAVE_COLMAX_AVX512
    if (kgemm_avx512_available()) {
        colmax_avx512(r, v, n);
        return;
    }
#endif
    for (int64_t i = 0; i < n; i++)
        if (v[i] > r[i] || r[i] != r[i]) r[i] = v[i];
}

/* float32 MaxPool without Indices or dilations: for each output row the window's input rows are
 * first reduced column by column (vectorised), then each output takes the max of its kw columns.
 * Same result as plane_f32, NaN included: an output is NaN exactly when its window's first tap
 * is, otherwise the largest number in the window. rowbuf: W floats. */
static void plane_max_f32(const pool_job *j, int64_t q, float *rowbuf) {
    const pool_cfg *c = j->c;
    const float *x = (const float *)j->x + q * c->g.in_size;
    float *y = (float *)j->y + q * c->g.out_size;
    int64_t H = j->in[1], W = j->in[2], o = 0;
    for (int64_t od = 0; od < j->out[0]; od++)
        for (int64_t oh = 0; oh < j->out[1]; oh++) {
            int64_t d0 = od * j->s[0] - j->pb[0], h0 = oh * j->s[1] - j->pb[1];
            int64_t dl = j->tlo[0][od], dh = j->thi[0][od], hl = j->tlo[1][oh], hh = j->thi[1][oh];
            if (dl >= dh || hl >= hh) {
                memset(y + o, 0, sizeof(float) * (size_t)j->out[2]);
                o += j->out[2];
                continue;
            }
            const float *first = x + ((d0 + dl) * H + h0 + hl) * W;
            /* outputs whose whole window lies inside the row: [oa, ob) */
            int64_t S = j->s[2], PB = j->pb[2], KW = j->k[2], OW = j->out[2];
            int64_t oa = (PB + S - 1) / S, ob = W - KW + PB >= 0 ? (W - KW + PB) / S + 1 : 0;
            if (ob > OW) ob = OW;
#ifdef HAVE_COLMAX_AVX512
            if (S <= 2 && oa < ob && kgemm_avx512_available()) {
                winmax_avx512(x, H, W, d0, dl, dh, h0, hl, hh, S, PB, KW, oa, ob, y + o);
                /* the border outputs: [0, oa) and [ob, OW) */
                for (int64_t ow = oa > 0 ? 0 : ob; ow < OW; ow = ow + 1 == oa ? ob : ow + 1) {
                    int64_t w0 = ow * S - PB, wl = j->tlo[2][ow], wh = j->thi[2][ow];
                    float best = 0.0f;
                    int any = 0;
                    for (int64_t td = dl; td < dh; td++)
                        for (int64_t th = hl; th < hh; th++)
                            for (int64_t tw = wl; tw < wh; tw++) {
                                float v = x[((d0 + td) * H + h0 + th) * W + w0 + tw];
                                if (!any || v > best) best = v;
                                any = 1;
                            }
                    y[o + ow] = best;
                }
                o += OW;
                continue;
            }
#endif
            memcpy(rowbuf, first, sizeof(float) * (size_t)W);
            for (int64_t td = dl; td < dh; td++)
                for (int64_t th = hl; th < hh; th++)
                    if (td != dl || th != hl) colmax(rowbuf, x + ((d0 + td) * H + h0 + th) * W, W);
            int64_t vec_end = oa;
#ifdef HAVE_COLMAX_AVX512
            if (oa < ob && kgemm_avx512_available())
                vec_end = rowmax_avx512(rowbuf, first, S, PB, KW, oa, ob, y + o);
#endif
            for (int64_t ow = 0; ow < OW; ow++, o++) {
                if (ow >= oa && ow < vec_end) continue;
                int64_t w0 = ow * j->s[2] - j->pb[2], wl = j->tlo[2][ow], wh = j->thi[2][ow];
                if (wl >= wh) {
                    y[o] = 0.0f;
                    continue;
                }
                float best = rowbuf[w0 + wl];
                if (first[w0 + wl] != first[w0 + wl]) best = first[w0 + wl];
                else
                    for (int64_t tw = wl + 1; tw < wh; tw++)
                        if (rowbuf[w0 + tw] > best) best = rowbuf[w0 + tw];
                y[o] = best;
            }
        }
}

/* Without AVX-512 the column-first reduction below would be scalar, barely faster than
 * plane_f32, and it does not keep plane_f32's earliest-of-equal-zeros rule (a window's columns
 * reduced before its rows can pick a +0 from a later row over a -0 from an earlier one): those
 * CPUs take plane_sep_f32_avx2 where it applies and plane_f32 otherwise. */
static int fast_max_ok(const pool_job *j) {
    return j->c->kind == POOL_MAX && j->dt == KILN_DTYPE_FLOAT && !j->idx && j->dil[0] == 1 &&
           j->dil[1] == 1 && j->dil[2] == 1 && kgemm_avx512_available();
}

static void pool_run(void *arg, int64_t q0, int64_t q1) {
    const pool_job *j = arg;
#ifdef HAVE_COLMAX_AVX512
    if (s2_ok(j)) {
        float *ring = aligned_alloc(64, s2_scratch(j));
        if (ring) {
            for (int64_t q = q0; q < q1; q++) plane_s2_f32(j, q, ring);
            free(ring);
            return;
        }
    }
    if (sep_ok(j)) {
        float *hbuf = malloc(sep_scratch(j));
        if (hbuf) {
            for (int64_t q = q0; q < q1; q++) plane_sep_f32(j, q, hbuf);
            free(hbuf);
            return;
        }
    }
    if (sep_avx2_ok(j) && s2_shape_ok(j) && !pool_s2_avx2_off()) {
        float *ring = aligned_alloc(64, s2_scratch(j));
        if (ring) {
            for (int64_t q = q0; q < q1; q++) plane_s2_f32_avx2(j, q, ring);
            free(ring);
            return;
        }
    }
    if (sep_avx2_ok(j)) {
        float *hbuf = malloc(sep_scratch(j));
        if (hbuf) {
            for (int64_t q = q0; q < q1; q++) plane_sep_f32_avx2(j, q, hbuf);
            free(hbuf);
            return;
        }
    }
#endif
    if (fast_max_ok(j)) {
        float *rowbuf = malloc(sizeof(float) * (size_t)j->in[2]);
        if (rowbuf) {
            for (int64_t q = q0; q < q1; q++) plane_max_f32(j, q, rowbuf);
            free(rowbuf);
            return;
        }
    }
    for (int64_t q = q0; q < q1; q++) {
        switch (j->dt) {
        case KILN_DTYPE_DOUBLE: plane_f64(j, q); break;
        case KILN_DTYPE_INT8: plane_i8(j, q); break;
        case KILN_DTYPE_UINT8: plane_u8(j, q); break;
        default: plane_f32(j, q); break;
        }
    }
}

/* Valid taps [lo, hi) for each output index of one dim, and (count_include_pad) the taps that
 * fall inside the padded extent. */
static void dim_ranges(const pool_job *j, int d, int64_t *lo, int64_t *hi, int64_t *cp) {
    for (int64_t o = 0; o < j->out[d]; o++) {
        int64_t start = o * j->s[d] - j->pb[d], a = 0, b = 0, n = 0;
        for (int64_t t = 0; t < j->k[d]; t++) {
            int64_t i = start + t * j->dil[d];
            if (i < 0) a = t + 1;
            if (i < j->in[d]) b = t + 1;
            if (i < j->in[d] + j->pe[d]) n = t + 1;
        }
        if (b < a) b = a;
        lo[o] = a;
        hi[o] = b;
        cp[o] = n; /* start >= -pad_begin always, so every tap before n is in the padded extent */
    }
}

static kiln_status pool_compute_kind(kiln_ctx *ctx, int kind) {
    pool_cfg c;
    int known;
    KILN_TRY(pool_setup(ctx, kind, &c, &known));
    kiln_tensor *X = kiln_input(ctx, 0), *Y = kiln_output(ctx, 0);
    kiln_tensor *I = kind == POOL_MAX && ctx->n_out > 1 ? kiln_output(ctx, 1) : NULL;
    if (!Y && !I) return KILN_OK;
    const kconv_geom *g = &c.g;
    int64_t planes = g->N * g->C;
    if (planes == 0 || g->out_size == 0) return KILN_OK;
    pool_job j;
    memset(&j, 0, sizeof j);
    j.c = &c;
    int off = 3 - g->nd;
    for (int d = 0; d < 3; d++) {
        int e = d - off;
        j.in[d] = e >= 0 ? g->in[e] : 1;
        j.out[d] = e >= 0 ? g->out[e] : 1;
        j.k[d] = e >= 0 ? g->k[e] : 1;
        j.s[d] = e >= 0 ? g->stride[e] : 1;
        j.dil[d] = e >= 0 ? g->dil[e] : 1;
        j.pb[d] = e >= 0 ? g->pad_b[e] : 0;
        j.pe[d] = e >= 0 ? g->pad_e[e] : 0;
    }
    int64_t nr = 3 * (j.out[0] + j.out[1] + j.out[2]);
    int64_t *ranges = malloc(sizeof(int64_t) * (size_t)nr);
    if (!ranges) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    int64_t *p = ranges;
    for (int d = 0; d < 3; d++) {
        j.tlo[d] = p;
        j.thi[d] = p + j.out[d];
        j.cnt_pad[d] = p + 2 * j.out[d];
        dim_ranges(&j, d, j.tlo[d], j.thi[d], j.cnt_pad[d]);
        p += 3 * j.out[d];
    }
    int dt = X->dtype;
    float *xf = NULL, *yf = NULL;
    void *ybuf = Y ? Y->data : NULL;
    if (!Y) { /* only Indices wanted: pool into scratch */
        ybuf = malloc(kiln_dtype_bytes(dt, planes * g->out_size));
        if (!ybuf) { free(ranges); return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); }
    }
    j.x = X->data;
    j.y = ybuf;
    j.dt = dt;
    j.idx = I ? I->data : NULL;
    if (kcvt_is_half(dt)) {
        xf = malloc(sizeof(float) * (size_t)(planes * (g->in_size + g->out_size)));
        if (!xf) {
            free(ranges);
            if (!Y) free(ybuf);
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        }
        yf = xf + planes * g->in_size;
        kcvt_to_f32(ctx, dt, X->data, xf, planes * g->in_size);
        j.x = xf;
        j.y = yf;
        j.dt = KILN_DTYPE_FLOAT;
    }
#ifdef HAVE_COLMAX_AVX512
    j.prefetch = (double)planes * g->in_size * sizeof(float) > PREFETCH_MIN_BYTES;
#endif
    double work = (double)planes * g->out_size * g->k_size;
    kiln_parallel_for(ctx, planes, kpar_grain(planes, work), pool_run, &j);
    if (xf) kcvt_from_f32(ctx, dt, yf, ybuf, planes * g->out_size);
    free(xf);
    free(ranges);
    if (!Y) free(ybuf);
    return KILN_OK;
}

static kiln_status maxpool_infer(kiln_ctx *ctx) { return pool_infer_kind(ctx, POOL_MAX); }
static kiln_status maxpool_compute(kiln_ctx *ctx) { return pool_compute_kind(ctx, POOL_MAX); }
static kiln_status avgpool_infer(kiln_ctx *ctx) { return pool_infer_kind(ctx, POOL_AVG); }
static kiln_status avgpool_compute(kiln_ctx *ctx) { return pool_compute_kind(ctx, POOL_AVG); }
static kiln_status lppool_infer(kiln_ctx *ctx) { return pool_infer_kind(ctx, POOL_LP); }
static kiln_status lppool_compute(kiln_ctx *ctx) { return pool_compute_kind(ctx, POOL_LP); }

const kiln_op kiln_ops_pool[] = {
    {"", "MaxPool", 1, 0, NULL, maxpool_infer, maxpool_compute, NULL},
    {"", "AveragePool", 1, 0, NULL, avgpool_infer, avgpool_compute, NULL},
    {"", "LpPool", 1, 0, NULL, lppool_infer, lppool_compute, NULL},
    {"", "GlobalAveragePool", 1, 0, NULL, kgpool_infer, kgpool_avg_compute, NULL},
    {"", "GlobalMaxPool", 1, 0, NULL, kgpool_infer, kgpool_max_compute, NULL},
    {"", "GlobalLpPool", 1, 0, NULL, kgpool_infer, kgpool_lp_compute, NULL},
    {"", "MaxUnpool", 9, 0, NULL, kunpool_infer, kunpool_compute, NULL},
    {"", "MaxRoiPool", 1, 0, NULL, kroipool_infer, kroipool_compute, NULL},
    {0},
};
