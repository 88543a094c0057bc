/* The strided-copy engine behind Transpose, Slice, Expand, Tile, Pad, DepthToSpace, ...
 *
 * A copy is described by a box of dims and, per dim, a destination and a source stride. The box
 * is first simplified (size-1 dims dropped, adjacent dims merged when both strides line up) so
 * that e.g. a Transpose with perm 0,2,1,3 becomes rows of contiguous memcpy and a Slice of a
 * contiguous block becomes one memcpy. What is left is copied row by row in one of four ways:
 * memcpy (both inner strides 1), fill (source stride 0: broadcast), a tiled 2-D transpose (the
 * source is contiguous along some other dim), or a plain strided element loop. Rows (and, when
 * there are few, pieces of rows) are spread over the session's threads. */
#include "cpu/kernels/tensor_common.h"
#include <string.h>
#if defined(__SSE2__)
#include <emmintrin.h>
#define TK_SSE2 1
#endif

enum { MODE_MEMCPY, MODE_FILL, MODE_STRIDED, MODE_TILED };

/* side of a transpose tile: 32 x 32 elements of up to 8 bytes stays within L1 */
#define TILE 32

typedef struct {
    int rank;
    int64_t dims[KILN_TK_MAX_VIEW], ds[KILN_TK_MAX_VIEW], ss[KILN_TK_MAX_VIEW];
    char *dst;
    const char *src;
    size_t elem;
    int mode;
    int n_outer;    /* dims iterated as rows: [0, n_outer) */
    int64_t rows;   /* product of the outer dims */
    int64_t pieces; /* each row is cut into this many pieces along its inner extent */
    int64_t inner;  /* extent cut into pieces: the last dim, or for MODE_TILED the tiled dim */
} plan;

static inline void move_elem(char *d, const char *s, size_t e) {
    switch (e) {
    case 1: *d = *s; break;
    case 2: memcpy(d, s, 2); break;
    case 4: memcpy(d, s, 4); break;
    case 8: memcpy(d, s, 8); break;
    default: memcpy(d, s, e); break;
    }
}

#define STRIDED_LOOP(T)                                                                             \
    do {                                                                                            \
        T *d_ = (T *)d;                                                                             \
        const T *s_ = (const T *)s;                                                                 \
        for (int64_t i = 0; i < n; i++) d_[i * dst_stride] = s_[i * src_stride];                    \
    } while (0)

static void strided_elems(char *d, int64_t dst_stride, const char *s, int64_t src_stride, int64_t n,
                          size_t e) {
    switch (e) {
    case 1: STRIDED_LOOP(uint8_t); break;
    case 2: STRIDED_LOOP(uint16_t); break;
    case 4: STRIDED_LOOP(uint32_t); break;
    case 8: STRIDED_LOOP(uint64_t); break;
    default:
        for (int64_t i = 0; i < n; i++)
            memcpy(d + i * dst_stride * (int64_t)e, s + i * src_stride * (int64_t)e, e);
    }
}

/* Copies inner elements [lo, hi) of the row whose first elements are at d and s. */
static void copy_row(const plan *p, char *d, const char *s, int64_t lo, int64_t hi) {
    int r = p->rank - 1;
    int64_t e = (int64_t)p->elem, n = hi - lo;
    d += lo * p->ds[r] * e;
    s += lo * p->ss[r] * e;
    switch (p->mode) {
    case MODE_MEMCPY: memcpy(d, s, (size_t)(n * e)); break;
    case MODE_FILL: kiln_tk_fill(d, n, s, p->elem); break;
    default: strided_elems(d, p->ds[r], s, p->ss[r], n, p->elem); break;
    }
}

/* One tile of a transpose: d[j * dj + l] = s[j + l * sl] for j in [j0, j1), l in [l0, l1)
 * (strides in elements). With SSE2 the inside moves 4x4 (32-bit), 8x8 (16-bit) or 2x2 (64-bit)
 * register blocks: contiguous loads along j, an in-register transpose, contiguous stores along l. */
#define TILE_SCALAR(T, jstart)                                                                      \
    for (int64_t j = (jstart); j < j1; j++)                                                         \
        for (int64_t l = l0; l < l1; l++) d[j * dj + l] = s[j + l * sl];

static void tile32(uint32_t *d, const uint32_t *s, int64_t dj, int64_t sl, int64_t j0, int64_t j1, int64_t l0,
                   int64_t l1) {
    int64_t jv = j0;
#ifdef TK_SSE2
    for (; jv + 4 <= j1; jv += 4) {
        int64_t l = l0;
        for (; l + 4 <= l1; l += 4) {
            __m128 r0 = _mm_loadu_ps((const float *)(s + jv + l * sl));
            __m128 r1 = _mm_loadu_ps((const float *)(s + jv + (l + 1) * sl));
            __m128 r2 = _mm_loadu_ps((const float *)(s + jv + (l + 2) * sl));
            __m128 r3 = _mm_loadu_ps((const float *)(s + jv + (l + 3) * sl));
            _MM_TRANSPOSE4_PS(r0, r1, r2, r3);
            _mm_storeu_ps((float *)(d + jv * dj + l), r0);
            _mm_storeu_ps((float *)(d + (jv + 1) * dj + l), r1);
            _mm_storeu_ps((float *)(d + (jv + 2) * dj + l), r2);
            _mm_storeu_ps((float *)(d + (jv + 3) * dj + l), r3);
        }
        for (; l < l1; l++)
            for (int k = 0; k < 4; k++) d[(jv + k) * dj + l] = s[jv + k + l * sl];
    }
#endif
    TILE_SCALAR(uint32_t, jv)
}

static void tile16(uint16_t *d, const uint16_t *s, int64_t dj, int64_t sl, int64_t j0, int64_t j1, int64_t l0,
                   int64_t l1) {
    int64_t jv = j0;
#ifdef TK_SSE2
    for (; jv + 8 <= j1; jv += 8) {
        int64_t l = l0;
        for (; l + 8 <= l1; l += 8) {
            __m128i a[8], b[8], c[8];
            for (int k = 0; k < 8; k++) a[k] = _mm_loadu_si128((const __m128i *)(s + jv + (l + k) * sl));
            for (int k = 0; k < 4; k++) {
                b[2 * k] = _mm_unpacklo_epi16(a[2 * k], a[2 * k + 1]);
                b[2 * k + 1] = _mm_unpackhi_epi16(a[2 * k], a[2 * k + 1]);
            }
            c[0] = _mm_unpacklo_epi32(b[0], b[2]);
            c[1] = _mm_unpackhi_epi32(b[0], b[2]);
            c[2] = _mm_unpacklo_epi32(b[1], b[3]);
            c[3] = _mm_unpackhi_epi32(b[1], b[3]);
            c[4] = _mm_unpacklo_epi32(b[4], b[6]);
            c[5] = _mm_unpackhi_epi32(b[4], b[6]);
            c[6] = _mm_unpacklo_epi32(b[5], b[7]);
            c[7] = _mm_unpackhi_epi32(b[5], b[7]);
            for (int k = 0; k < 4; k++) {
                _mm_storeu_si128((__m128i *)(d + (jv + 2 * k) * dj + l), _mm_unpacklo_epi64(c[k], c[k + 4]));
                _mm_storeu_si128((__m128i *)(d + (jv + 2 * k + 1) * dj + l), _mm_unpackhi_epi64(c[k], c[k + 4]));
            }
        }
        for (; l < l1; l++)
            for (int k = 0; k < 8; k++) d[(jv + k) * dj + l] = s[jv + k + l * sl];
    }
#endif
    TILE_SCALAR(uint16_t, jv)
}

static void tile64(uint64_t *d, const uint64_t *s, int64_t dj, int64_t sl, int64_t j0, int64_t j1, int64_t l0,
                   int64_t l1) {
    int64_t jv = j0;
#ifdef TK_SSE2
    for (; jv + 2 <= j1; jv += 2) {
        int64_t l = l0;
        for (; l + 2 <= l1; l += 2) {
            __m128d r0 = _mm_loadu_pd((const double *)(s + jv + l * sl));
            __m128d r1 = _mm_loadu_pd((const double *)(s + jv + (l + 1) * sl));
            _mm_storeu_pd((double *)(d + jv * dj + l), _mm_unpacklo_pd(r0, r1));
            _mm_storeu_pd((double *)(d + (jv + 1) * dj + l), _mm_unpackhi_pd(r0, r1));
        }
        for (; l < l1; l++)
            for (int k = 0; k < 2; k++) d[(jv + k) * dj + l] = s[jv + k + l * sl];
    }
#endif
    TILE_SCALAR(uint64_t, jv)
}

static void tile8(uint8_t *d, const uint8_t *s, int64_t dj, int64_t sl, int64_t j0, int64_t j1, int64_t l0,
                  int64_t l1) {
    TILE_SCALAR(uint8_t, j0)
}

/* MODE_TILED: dim rank-2 (J) is read contiguously, dim rank-1 (L) is written contiguously.
 * Copies J range [j0, j1) of the block at d/s in square tiles. */
static void copy_tiles(const plan *p, char *d, const char *s, int64_t j0, int64_t j1) {
    int jd = p->rank - 2, ld = p->rank - 1;
    int64_t e = (int64_t)p->elem, nl = p->dims[ld];
    int64_t dj = p->ds[jd], sl = p->ss[ld];
    for (int64_t jb = j0; jb < j1; jb += TILE) {
        int64_t je = jb + TILE < j1 ? jb + TILE : j1;
        for (int64_t lb = 0; lb < nl; lb += TILE) {
            int64_t le = lb + TILE < nl ? lb + TILE : nl;
            switch (e) {
            case 4: tile32((uint32_t *)d, (const uint32_t *)s, dj, sl, jb, je, lb, le); break;
            case 2: tile16((uint16_t *)d, (const uint16_t *)s, dj, sl, jb, je, lb, le); break;
            case 8: tile64((uint64_t *)d, (const uint64_t *)s, dj, sl, jb, je, lb, le); break;
            case 1: tile8((uint8_t *)d, (const uint8_t *)s, dj, sl, jb, je, lb, le); break;
            default:
                for (int64_t j = jb; j < je; j++)
                    for (int64_t l = lb; l < le; l++)
                        move_elem(d + (j * dj + l) * e, s + (j + l * sl) * e, (size_t)e);
            }
        }
    }
}

static void row_offsets(const plan *p, int64_t row, int64_t *idx, int64_t *doff, int64_t *soff) {
    *doff = *soff = 0;
    for (int k = p->n_outer - 1; k >= 0; k--) {
        idx[k] = row % p->dims[k];
        row /= p->dims[k];
        *doff += idx[k] * p->ds[k];
        *soff += idx[k] * p->ss[k];
    }
}

static void run_units(void *arg, int64_t begin, int64_t end) {
    const plan *p = arg;
    int64_t e = (int64_t)p->elem;
    int64_t idx[KILN_TK_MAX_VIEW], doff, soff;
    int64_t u = begin;
    if (p->pieces > 1) {
        for (; u < end; u++) {
            int64_t row = u / p->pieces, piece = u % p->pieces;
            int64_t lo = p->inner * piece / p->pieces, hi = p->inner * (piece + 1) / p->pieces;
            row_offsets(p, row, idx, &doff, &soff);
            if (p->mode == MODE_TILED)
                copy_tiles(p, p->dst + doff * e, p->src + soff * e, lo, hi);
            else
                copy_row(p, p->dst + doff * e, p->src + soff * e, lo, hi);
        }
        return;
    }
    /* whole rows: walk the outer index like an odometer instead of dividing per row */
    row_offsets(p, u, idx, &doff, &soff);
    for (; u < end; u++) {
        if (p->mode == MODE_TILED)
            copy_tiles(p, p->dst + doff * e, p->src + soff * e, 0, p->inner);
        else
            copy_row(p, p->dst + doff * e, p->src + soff * e, 0, p->inner);
        for (int k = p->n_outer - 1; k >= 0; k--) {
            doff += p->ds[k];
            soff += p->ss[k];
            if (++idx[k] < p->dims[k]) break;
            doff -= p->ds[k] * p->dims[k];
            soff -= p->ss[k] * p->dims[k];
            idx[k] = 0;
        }
    }
}

void kiln_tk_strided_copy(kiln_ctx *ctx, size_t elem, int rank, const int64_t *dims, void *dst,
                          const int64_t *dst_strides, const void *src, const int64_t *src_strides) {
    plan p;
    memset(&p, 0, sizeof p);
    p.dst = dst;
    p.src = src;
    p.elem = elem;
    /* drop size-1 dims (their index is always 0), bail out on empty boxes */
    int r = 0;
    for (int i = 0; i < rank; i++) {
        if (dims[i] == 0) return;
        if (dims[i] == 1) continue;
        p.dims[r] = dims[i];
        p.ds[r] = dst_strides[i];
        p.ss[r] = src_strides[i];
        r++;
    }
    if (r == 0) {
        p.dims[0] = 1;
        p.ds[0] = p.ss[0] = 1;
        r = 1;
    }
    /* merge dim i into i+1 when stepping i equals running through all of i+1 on both sides */
    int m = r - 1;
    for (int i = r - 2; i >= 0; i--) {
        if (p.ds[i] == p.ds[m] * p.dims[m] && p.ss[i] == p.ss[m] * p.dims[m]) {
            p.dims[m] *= p.dims[i];
            continue;
        }
        m--;
        p.dims[m] = p.dims[i];
        p.ds[m] = p.ds[i];
        p.ss[m] = p.ss[i];
    }
    r = r - m;
    memmove(p.dims, p.dims + m, (size_t)r * sizeof(int64_t));
    memmove(p.ds, p.ds + m, (size_t)r * sizeof(int64_t));
    memmove(p.ss, p.ss + m, (size_t)r * sizeof(int64_t));
    p.rank = r;

    int last = r - 1;
    if (p.ds[last] == 1 && p.ss[last] == 1) {
        p.mode = MODE_MEMCPY;
    } else if (p.ds[last] == 1 && p.ss[last] == 0) {
        p.mode = MODE_FILL;
    } else {
        p.mode = MODE_STRIDED;
        if (p.ds[last] == 1 && p.dims[last] >= 8) {
            /* a transpose: some other dim is the source's contiguous one; move it next to the
             * last so rows become tiles (iteration order of the outer dims is free) */
            for (int j = 0; j < last; j++) {
                if (p.ss[j] == 1 && p.dims[j] >= 8) {
                    int64_t dd = p.dims[j], sd = p.ds[j], s1 = p.ss[j];
                    for (int k = j; k < last - 1; k++) {
                        p.dims[k] = p.dims[k + 1];
                        p.ds[k] = p.ds[k + 1];
                        p.ss[k] = p.ss[k + 1];
                    }
                    p.dims[last - 1] = dd;
                    p.ds[last - 1] = sd;
                    p.ss[last - 1] = s1;
                    p.mode = MODE_TILED;
                    break;
                }
            }
        }
    }
    if (p.mode == MODE_STRIDED && p.dims[last] < 16) {
        /* a short strided last dim (DepthToSpace's block) makes rows of a few elements: walk a
         * longer dim that one side reads or writes contiguously as the inner loop instead */
        int best = -1;
        for (int j = 0; j < last; j++)
            if ((p.ss[j] == 1 || p.ds[j] == 1) && p.dims[j] > p.dims[last] && (best < 0 || p.dims[j] > p.dims[best]))
                best = j;
        if (best >= 0) {
            int64_t t;
            t = p.dims[best]; p.dims[best] = p.dims[last]; p.dims[last] = t;
            t = p.ds[best]; p.ds[best] = p.ds[last]; p.ds[last] = t;
            t = p.ss[best]; p.ss[best] = p.ss[last]; p.ss[last] = t;
        }
    }
    p.n_outer = p.mode == MODE_TILED ? r - 2 : r - 1;
    p.inner = p.dims[p.n_outer];
    p.rows = 1;
    for (int k = 0; k < p.n_outer; k++) p.rows *= p.dims[k];
    double row_bytes = (double)elem * (double)p.dims[last] * (p.mode == MODE_TILED ? (double)p.inner : 1.0);
    double total = row_bytes * (double)p.rows;
    int threads = ctx && ctx->tp ? kiln_num_threads(ctx) : 1;
    p.pieces = 1;
    if (threads > 1 && total >= 65536.0 && p.rows < 4 * threads) {
        /* few long rows: cut them so every thread gets work, keeping pieces >= 4 KiB */
        int64_t want = (4 * threads + p.rows - 1) / p.rows;
        int64_t max_pieces = (int64_t)(row_bytes / 4096.0);
        if (p.mode == MODE_TILED) max_pieces = p.inner / TILE;
        if (want > max_pieces) want = max_pieces;
        if (want > 1) p.pieces = want;
    }
    double unit = row_bytes / (double)p.pieces;
    if (ctx)
        kiln_tk_parallel(ctx, p.rows * p.pieces, unit, run_units, &p);
    else
        run_units(&p, 0, p.rows * p.pieces);
}

void kiln_tk_permute(kiln_ctx *ctx, size_t elem, int rank, const int64_t *in_dims,
                     const int64_t *perm, void *dst, const void *src) {
    int64_t in_str[KILN_TK_MAX_VIEW], out_dims[KILN_TK_MAX_VIEW], out_str[KILN_TK_MAX_VIEW],
        src_str[KILN_TK_MAX_VIEW];
    kiln_strides(rank, in_dims, in_str);
    for (int i = 0; i < rank; i++) {
        out_dims[i] = in_dims[perm[i]];
        src_str[i] = in_str[perm[i]];
    }
    kiln_strides(rank, out_dims, out_str);
    kiln_tk_strided_copy(ctx, elem, rank, out_dims, dst, out_str, src, src_str);
}
