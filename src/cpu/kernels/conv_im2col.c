/* im2col and col2im for any number of spatial dims. Both walk the output positions in segments
 * that stay inside one row of the last spatial dim, so the bounds checks of the outer dims run
 * once per segment and the inner loop is a plain (strided) copy or add. */
#include "conv_util.h"
#include <string.h>

/* Input-plane strides of the spatial dims (innermost = 1). */
static void plane_strides(const int64_t *dims, int nd, int64_t *st) {
    int64_t s = 1;
    for (int i = nd - 1; i >= 0; i--) {
        st[i] = s;
        s *= dims[i];
    }
}

/* Range [lo, hi) of t in [0, len) for which 0 <= base + t*s < lim. */
static void valid_span(int64_t base, int64_t s, int64_t lim, int64_t len, int64_t *lo, int64_t *hi) {
    int64_t a = base >= 0 ? 0 : (-base + s - 1) / s;
    int64_t b = base >= lim ? 0 : (lim - base + s - 1) / s;
    if (a > len) a = len;
    if (b > len) b = len;
    if (b < a) b = a;
    *lo = a;
    *hi = b;
}

#define DEFINE_IM2COL(NAME, T)                                                                     \
    void NAME(const kconv_geom *g, int64_t Cg, const T *x, int64_t p0, int64_t p1, T *dst,         \
              int64_t ld) {                                                                        \
        int nd = g->nd, L = nd - 1;                                                                \
        int64_t ist[KCONV_MAX_ND], ost[KCONV_MAX_ND], start[KCONV_MAX_ND];                         \
        plane_strides(g->in, nd, ist);                                                             \
        plane_strides(g->out, nd, ost);                                                            \
        for (int d = 0; d < nd; d++) start[d] = (p0 / ost[d]) % g->out[d];                         \
        int64_t OW = g->out[L], IW = g->in[L], sw = g->stride[L], dw = g->dil[L];                   \
        int64_t kidx[KCONV_MAX_ND] = {0};                                                          \
        int64_t rows = Cg * g->k_size;                                                             \
        for (int64_t r = 0; r < rows; r++) {                                                       \
            int64_t c = r / g->k_size;                                                             \
            T *drow = dst + r * ld;                                                                \
            int64_t o[KCONV_MAX_ND];                                                               \
            memcpy(o, start, sizeof(int64_t) * nd);                                                \
            for (int64_t p = p0, j = 0; p < p1;) {                                                 \
                int64_t len = OW - o[L];                                                           \
                if (len > p1 - p) len = p1 - p;                                                    \
                int valid = 1;                                                                     \
                int64_t off = c * g->in_size;                                                      \
                for (int d = 0; d < L; d++) {                                                      \
                    int64_t i = o[d] * g->stride[d] - g->pad_b[d] + kidx[d] * g->dil[d];            \
                    if (i < 0 || i >= g->in[d]) { valid = 0; break; }                              \
                    off += i * ist[d];                                                             \
                }                                                                                  \
                T *dd = drow + j;                                                                  \
                if (!valid) {                                                                      \
                    memset(dd, 0, sizeof(T) * (size_t)len);                                        \
                } else {                                                                           \
                    int64_t base = o[L] * sw - g->pad_b[L] + kidx[L] * dw, lo, hi;                 \
                    valid_span(base, sw, IW, len, &lo, &hi);                                       \
                    const T *src = x + off;                                                        \
                    for (int64_t t = 0; t < lo; t++) dd[t] = 0;                                    \
                    if (sw == 1) memcpy(dd + lo, src + (base + lo), sizeof(T) * (size_t)(hi - lo));\
                    else for (int64_t t = lo; t < hi; t++) dd[t] = src[base + t * sw];             \
                    for (int64_t t = hi; t < len; t++) dd[t] = 0;                                  \
                }                                                                                  \
                p += len;                                                                          \
                j += len;                                                                          \
                o[L] += len;                                                                       \
                for (int d = L; d > 0 && o[d] >= g->out[d]; d--) { o[d] = 0; o[d - 1]++; }          \
            }                                                                                      \
            for (int d = L; d >= 0; d--) { /* next kernel offset */                                \
                if (++kidx[d] < g->k[d]) break;                                                    \
                kidx[d] = 0;                                                                       \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_IM2COL(kconv_im2col_f32, float)
DEFINE_IM2COL(kconv_im2col_f64, double)

/* col rows are (m, kernel offset), columns the g->in positions; adds into the g->out planes. */
#define DEFINE_COL2IM(NAME, T)                                                                     \
    void NAME(const kconv_geom *g, const T *col, int64_t m0, int64_t m1, T *y) {                   \
        int nd = g->nd, L = nd - 1;                                                                \
        int64_t yst[KCONV_MAX_ND];                                                                 \
        plane_strides(g->out, nd, yst);                                                            \
        int64_t IW = g->in[L], OW = g->out[L], sw = g->stride[L], dw = g->dil[L];                   \
        for (int64_t m = m0; m < m1; m++) {                                                        \
            T *yp = y + m * g->out_size;                                                           \
            int64_t kidx[KCONV_MAX_ND] = {0};                                                      \
            for (int64_t kk = 0; kk < g->k_size; kk++) {                                           \
                const T *crow = col + (m * g->k_size + kk) * g->in_size;                           \
                int64_t o[KCONV_MAX_ND] = {0};                                                     \
                for (int64_t p = 0; p < g->in_size; p += IW) {                                     \
                    int valid = 1;                                                                 \
                    int64_t off = 0;                                                               \
                    for (int d = 0; d < L; d++) {                                                  \
                        int64_t i = o[d] * g->stride[d] - g->pad_b[d] + kidx[d] * g->dil[d];        \
                        if (i < 0 || i >= g->out[d]) { valid = 0; break; }                         \
                        off += i * yst[d];                                                         \
                    }                                                                              \
                    if (valid) {                                                                   \
                        int64_t base = -g->pad_b[L] + kidx[L] * dw, lo, hi;                        \
                        valid_span(base, sw, OW, IW, &lo, &hi);                                    \
                        T *dst = yp + off;                                                         \
                        const T *src = crow + p;                                                   \
                        for (int64_t t = lo; t < hi; t++) dst[base + t * sw] += src[t];            \
                    }                                                                              \
                    for (int d = L - 1; d >= 0; d--) {                                             \
                        if (++o[d] < g->in[d]) break;                                              \
                        o[d] = 0;                                                                  \
                    }                                                                              \
                }                                                                                  \
                for (int d = L; d >= 0; d--) {                                                     \
                    if (++kidx[d] < g->k[d]) break;                                                \
                    kidx[d] = 0;                                                                   \
                }                                                                                  \
            }                                                                                      \
        }                                                                                          \
    }

DEFINE_COL2IM(kconv_col2im_f32, float)
DEFINE_COL2IM(kconv_col2im_f64, double)

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#include "avx2_part.h"
#include "gemm_util.h"

/* Writes len values of one im2col row into the panel layout, starting at local column col:
 * value t is src[base + t * sw] when lo <= t < hi, else zero (src NULL: all zero). Each
 * 16-lane step is one masked load or gather and one masked store; masked-off lanes are never
 * read, so the window may hang over the row's ends. */
__attribute__((target("avx512f"))) static void panel_segment_avx512(float *drow, int64_t pstride,
                                                             int64_t col, int64_t len,
                                                             const float *src, int64_t base,
                                                             int64_t sw, int64_t lo, int64_t hi) {
    const __m512i lane = _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0);
    int64_t t = 0;
    while (t < len) {
        int64_t c = col + t, off = c % KGEMM_NR;
        int64_t n = KGEMM_NR - off < len - t ? KGEMM_NR - off : len - t;
        float *d = drow + (c / KGEMM_NR) * pstride + off;
        for (int64_t u = 0; u < n; u += 16) {
            int64_t m = n - u < 16 ? n - u : 16, t0 = t + u;
            __mmask16 st = (__mmask16)((1u << m) - 1), ld = 0;
            if (src) {
                int64_t a = lo - t0, b = hi - t0; /* valid lanes [a, b) */
                if (a < 0) a = 0;
                if (b > m) b = m;
                if (b > a) ld = (__mmask16)(((1u << b) - 1) & ~((1u << a) - 1));
            }
            __m512 v;
            if (!ld) v = _mm512_setzero_ps();
            else if (sw == 1) v = _mm512_maskz_loadu_ps(ld, src + (base + t0));
            else {
                __m512i idx = _mm512_add_epi32(_mm512_set1_epi32((int)(base + t0 * sw)),
                                               _mm512_mullo_epi32(lane, _mm512_set1_epi32((int)sw)));
                v = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), ld, idx, src, 4);
            }
            _mm512_mask_storeu_ps(d + u, st, v);
        }
        t += n;
    }
}

/* panel_segment_avx512 for CPUs with AVX2 only (the packed product's AVX2 kernels), 8 lanes a
 * step: masked loads, or gathers for strided windows. */
__attribute__((target("avx2,fma"))) static void panel_segment_avx2(float *drow, int64_t pstride,
                                                                   int64_t col, int64_t len,
                                                                   const float *src, int64_t base,
                                                                   int64_t sw, int64_t lo,
                                                                   int64_t hi) {
    const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
    int64_t t = 0;
    while (t < len) {
        int64_t c = col + t, off = c % KGEMM_NR;
        int64_t n = KGEMM_NR - off < len - t ? KGEMM_NR - off : len - t;
        float *d = drow + (c / KGEMM_NR) * pstride + off;
        for (int64_t u = 0; u < n; u += 8) {
            int64_t m = n - u < 8 ? n - u : 8, t0 = t + u, a = 0, b = 0;
            if (src) { /* valid lanes [a, b) */
                a = lo - t0 < 0 ? 0 : lo - t0;
                b = hi - t0 > m ? m : hi - t0;
            }
            __m256 v = _mm256_setzero_ps();
            if (b > a && sw == 1 && a == 0 && b == 8) {
                v = _mm256_loadu_ps(src + (base + t0));
            } else if (b > a && sw == 2 && a == 0 && b == 8) {
                /* even elements 0..14 of two overlapping loads (0..7 and 7..14, nothing past the
                 * last one read): gathers cost several times more on the AMD cores */
                const float *p = src + (base + 2 * t0);
                __m256 mix = _mm256_blend_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(p + 7), 0xaa);
                v = _mm256_permutevar8x32_ps(mix, _mm256_setr_epi32(0, 2, 4, 6, 1, 3, 5, 7));
            } else if (b > a) {
                __m256i ld = _mm256_andnot_si256(_mm256_cmpgt_epi32(_mm256_set1_epi32((int)a), lane),
                                                 _mm256_cmpgt_epi32(_mm256_set1_epi32((int)b), lane));
                if (sw == 1) {
                    v = _mm256_maskload_ps(src + (base + t0), ld);
                } else {
                    __m256i idx = _mm256_add_epi32(_mm256_set1_epi32((int)(base + t0 * sw)),
                                                   _mm256_mullo_epi32(lane, _mm256_set1_epi32((int)sw)));
                    v = _mm256_mask_i32gather_ps(v, src, idx, _mm256_castsi256_ps(ld), 4);
                }
            }
            /* Masked stores are slow on the AMD cores; lanes past m that stay inside this panel
             * row are columns a later call or step writes (columns are filled in increasing
             * order, the tail by pad_to), so a full store may run over them. */
            if (m == 8 || off + u + 8 <= KGEMM_NR) _mm256_storeu_ps(d + u, v);
            else kavx2_store_part(d + u, v, m);
        }
        t += n;
    }
}

typedef void (*panel_segment_fn)(float *drow, int64_t pstride, int64_t col, int64_t len,
                                 const float *src, int64_t base, int64_t sw, int64_t lo, int64_t hi);

/* Runs wherever the packed product does (kgemm_packed_available): AVX-512 or AVX2 stores. */
void kconv_im2col_panels_f32(const kconv_geom *g, const float *x, int64_t col0, int64_t k0,
                             int64_t kc, int64_t j0, int64_t nc, float *dst, int64_t dcol,
                             int64_t pad_to) {
    panel_segment_fn panel_segment =
        kgemm_avx512_available() ? panel_segment_avx512 : panel_segment_avx2;
    int nd = g->nd, L = nd - 1;
    int64_t ist[KCONV_MAX_ND], ost[KCONV_MAX_ND], start[KCONV_MAX_ND], kidx[KCONV_MAX_ND];
    plane_strides(g->in, nd, ist);
    plane_strides(g->out, nd, ost);
    int64_t P0 = col0 + j0;
    int pointwise = 1;
    for (int d = 0; d < nd; d++)
        if (g->k[d] != 1 || g->stride[d] != 1 || g->pad_b[d] || g->pad_e[d]) pointwise = 0;
    if (pointwise) { /* positions are the input's, contiguous: one run per channel */
        for (int64_t r = 0; r < kc; r++) {
            float *drow = dst + r * KGEMM_NR;
            panel_segment(drow, kc * KGEMM_NR, dcol, nc, x + (k0 + r) * g->in_size, P0, 1, 0, nc);
            if (pad_to > dcol + nc)
                panel_segment(drow, kc * KGEMM_NR, dcol + nc, pad_to - dcol - nc, NULL, 0, 1, 0, 0);
        }
        return;
    }
    for (int d = 0; d < nd; d++) start[d] = (P0 / ost[d]) % g->out[d];
    int64_t c = k0 / g->k_size, rem = k0 % g->k_size;
    for (int d = nd - 1; d >= 0; d--) {
        kidx[d] = rem % g->k[d];
        rem /= g->k[d];
    }
    int64_t OW = g->out[L], IW = g->in[L], sw = g->stride[L], dw = g->dil[L];
    int64_t pstride = kc * KGEMM_NR;
    for (int64_t r = 0; r < kc; r++) {
        float *drow = dst + r * KGEMM_NR;
        int64_t o[KCONV_MAX_ND];
        memcpy(o, start, sizeof(int64_t) * nd);
        for (int64_t p = 0; p < nc;) {
            int64_t len = OW - o[L];
            if (len > nc - p) len = nc - p;
            int valid = 1;
            int64_t off = c * g->in_size;
            for (int d = 0; d < L; d++) {
                int64_t i = o[d] * g->stride[d] - g->pad_b[d] + kidx[d] * g->dil[d];
                if (i < 0 || i >= g->in[d]) { valid = 0; break; }
                off += i * ist[d];
            }
            int64_t base = o[L] * sw - g->pad_b[L] + kidx[L] * dw, lo = 0, hi = 0;
            if (valid) valid_span(base, sw, IW, len, &lo, &hi);
            panel_segment(drow, pstride, dcol + p, len, valid ? x + off : NULL, base, sw, lo, hi);
            p += len;
            o[L] += len;
            for (int d = L; d > 0 && o[d] >= g->out[d]; d--) { o[d] = 0; o[d - 1]++; }
        }
        if (pad_to > dcol + nc)
            panel_segment(drow, pstride, dcol + nc, pad_to - dcol - nc, NULL, 0, 1, 0, 0);
        for (int d = L; d >= 0; d--) { /* next kernel offset, then the next channel */
            if (++kidx[d] < g->k[d]) break;
            kidx[d] = 0;
            if (d == 0) c++;
        }
    }
}
#endif
