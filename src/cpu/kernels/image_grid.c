/* GridSample (opsets 16/20/22; 2-D and N-D; nearest, linear, cubic; zeros, border and reflection
 * padding) and AffineGrid (opset 20; 2-D and 3-D). Sampling follows the ONNX / PyTorch
 * definition: a grid value n in [-1, 1] maps to ((n + 1) * L - 1) / 2, or (n + 1) / 2 * (L - 1)
 * with align_corners; grid components are in reverse dimension order (x first). */
#include "image_kernels.h"
#include "quant_elem.h"
#include <stdlib.h>

enum { GS_NEAREST, GS_LINEAR, GS_CUBIC };
enum { GS_ZEROS, GS_BORDER, GS_REFLECTION };

typedef struct gs_attrs {
    int mode, padding, align;
} gs_attrs;

static kiln_status gs_parse(kiln_ctx *ctx, gs_attrs *a) {
    const kiln_node *nd = ctx->node;
    const char *mode = kiln_attr_string(nd, "mode", ctx->opset >= 20 ? "linear" : "bilinear");
    if (!strcmp(mode, "nearest")) a->mode = GS_NEAREST;
    else if (!strcmp(mode, "bilinear") || !strcmp(mode, "linear")) a->mode = GS_LINEAR;
    else if (!strcmp(mode, "bicubic") || !strcmp(mode, "cubic")) a->mode = GS_CUBIC;
    else return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported mode '%s'", mode);
    const char *pad = kiln_attr_string(nd, "padding_mode", "zeros");
    if (!strcmp(pad, "zeros")) a->padding = GS_ZEROS;
    else if (!strcmp(pad, "border")) a->padding = GS_BORDER;
    else if (!strcmp(pad, "reflection")) a->padding = GS_REFLECTION;
    else return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported padding_mode '%s'", pad);
    a->align = kiln_attr_int(nd, "align_corners", 0) != 0;
    return KILN_OK;
}

kiln_status kiln_grid_sample_init(kiln_ctx *ctx) {
    gs_attrs *a = malloc(sizeof *a);
    if (!a) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = gs_parse(ctx, a);
    if (st != KILN_OK) {
        free(a);
        return st;
    }
    ctx->state = a;
    return KILN_OK;
}

kiln_status kiln_grid_sample_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *grid;
    char b1[96], b2[96];
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &grid));
    if (!qe_is_float(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input X",
                         kiln_dtype_name(x->dtype));
    if (!qe_is_float(grid->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "grid must be a float tensor, not %s",
                         kiln_dtype_name(grid->dtype));
    if (x->rank < 0 || grid->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int k = x->rank - 2;
    if (k < 1 || grid->rank != x->rank ||
        (grid->dims[grid->rank - 1] >= 0 && grid->dims[grid->rank - 1] != k))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "X %s and grid %s: grid must be [N, out..., %d] with the rank of X",
                         QE_SHAPE(x, b1), QE_SHAPE(grid, b2), k);
    if (x->dims[0] >= 0 && grid->dims[0] >= 0 && x->dims[0] != grid->dims[0])
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "batch of X %s and grid %s differ",
                         QE_SHAPE(x, b1), QE_SHAPE(grid, b2));
    int64_t dims[KILN_MAX_RANK];
    dims[0] = x->dims[0];
    dims[1] = x->dims[1];
    for (int d = 0; d < k; d++) dims[2 + d] = grid->dims[1 + d];
    return kiln_set_output(ctx, 0, x->dtype, x->rank, dims);
}

static double gs_reflect(double x, double lo, double hi) {
    double rng = hi - lo;
    if (rng <= 0.0) return lo;
    if (x < lo) {
        double dx = lo - x;
        double n = floor(dx / rng), r = dx - n * rng;
        return fmod(n, 2.0) == 0.0 ? lo + r : hi - r;
    }
    if (x > hi) {
        double dx = x - hi;
        double n = floor(dx / rng), r = dx - n * rng;
        return fmod(n, 2.0) == 0.0 ? hi - r : lo + r;
    }
    return x;
}

static void gs_cubic_coeffs(double t, double *c) {
    const double A = -0.75;
    double t1 = t + 1.0, u = 1.0 - t, u1 = 2.0 - t;
    c[0] = ((A * t1 - 5.0 * A) * t1 + 8.0 * A) * t1 - 4.0 * A;
    c[1] = ((A + 2.0) * t - (A + 3.0)) * t * t + 1.0;
    c[2] = ((A + 2.0) * u - (A + 3.0)) * u * u + 1.0;
    c[3] = ((A * u1 - 5.0 * A) * u1 + 8.0 * A) * u1 - 4.0 * A;
}

typedef struct gs_job {
    const gs_attrs *a;
    const kiln_tensor *x, *grid;
    kiln_tensor *y;
    int k;
    int64_t C, in_size, out_size;
    int64_t in_dims[KILN_MAX_RANK], in_strides[KILN_MAX_RANK];
    int failed;
} gs_job;

/* Index of tap i along a dim of length L under the padding mode; -1 reads as zero. */
static int64_t gs_tap_index(const gs_attrs *a, int64_t i, int64_t L, double lo, double hi) {
    if (i >= 0 && i < L) return i;
    if (a->padding == GS_ZEROS) return -1;
    if (a->padding == GS_BORDER) return i < 0 ? 0 : L - 1;
    int64_t r = (int64_t)gs_reflect((double)i, lo, hi);
    return r < 0 ? 0 : (r >= L ? L - 1 : r);
}

static void gs_points(void *arg, int64_t begin, int64_t end) {
    gs_job *j = arg;
    const gs_attrs *a = j->a;
    int k = j->k;
    int64_t tap_idx[KILN_MAX_RANK][4];
    double tap_w[KILN_MAX_RANK][4];
    int ntap = a->mode == GS_NEAREST ? 1 : (a->mode == GS_LINEAR ? 2 : 4);
    int64_t max_terms = 1;
    for (int d = 0; d < k; d++) max_terms *= ntap;
    int64_t *soff = malloc(sizeof(int64_t) * (size_t)max_terms);
    double *sw = malloc(sizeof(double) * (size_t)max_terms);
    if (!soff || !sw) {
        free(soff);
        free(sw);
        j->failed = 1;
        return;
    }
    for (int64_t p = begin; p < end; p++) {
        int64_t n = p / j->out_size, o = p % j->out_size;
        int64_t gbase = p * k;
        for (int d = 0; d < k; d++) {
            int64_t L = j->in_dims[d];
            double g = qe_load_f64(j->grid->dtype, j->grid->data, gbase + (k - 1 - d));
            double x = a->align ? (g + 1.0) / 2.0 * (double)(L - 1) : ((g + 1.0) * (double)L - 1.0) / 2.0;
            double lo = a->align ? 0.0 : -0.5, hi = a->align ? (double)(L - 1) : (double)L - 0.5;
            if (a->mode == GS_NEAREST) x = nearbyint(x);
            /* cubic taps are clamped one by one instead (as PyTorch and onnxruntime do) */
            if ((x < lo || x > hi) && !(a->mode == GS_CUBIC && a->padding == GS_BORDER)) {
                if (a->padding == GS_BORDER) x = x < 0.0 ? 0.0 : (x > (double)(L - 1) ? (double)(L - 1) : x);
                else if (a->padding == GS_REFLECTION) x = gs_reflect(x, lo, hi);
            }
            if (isnan(x)) x = -1e9; /* NaN grid values read as outside */
            if (x < -1e15) x = -1e15;
            if (x > 1e15) x = 1e15;
            if (a->mode == GS_NEAREST) {
                tap_idx[d][0] = gs_tap_index(a, (int64_t)x, L, lo, hi);
                tap_w[d][0] = 1.0;
                continue;
            }
            double x0 = floor(x), t = x - x0;
            if (a->mode == GS_LINEAR) {
                tap_w[d][0] = 1.0 - t;
                tap_w[d][1] = t;
                tap_idx[d][0] = gs_tap_index(a, (int64_t)x0, L, lo, hi);
                tap_idx[d][1] = gs_tap_index(a, (int64_t)x0 + 1, L, lo, hi);
            } else {
                gs_cubic_coeffs(t, tap_w[d]);
                for (int q = 0; q < 4; q++) tap_idx[d][q] = gs_tap_index(a, (int64_t)x0 - 1 + q, L, lo, hi);
            }
        }
        /* every combination of taps, gathered once per point and reused for all channels */
        int64_t n_terms = 0, combos = 1;
        for (int d = 0; d < k; d++) combos *= ntap;
        for (int64_t cb = 0; cb < combos; cb++) {
            int64_t rem = cb, off = 0;
            double w = 1.0;
            int zero = 0;
            for (int d = k - 1; d >= 0; d--) {
                int q = (int)(rem % ntap);
                rem /= ntap;
                int64_t i = tap_idx[d][q];
                if (i < 0) { zero = 1; break; }
                off += i * j->in_strides[d];
                w *= tap_w[d][q];
            }
            if (zero || w == 0.0) continue;
            soff[n_terms] = off;
            sw[n_terms] = w;
            n_terms++;
        }
        const int64_t xbase = n * j->C * j->in_size;
        if (j->x->dtype == KILN_DTYPE_FLOAT && j->y->dtype == KILN_DTYPE_FLOAT) {
            const float *x = (const float *)j->x->data + xbase;
            float *y = (float *)j->y->data + n * j->C * j->out_size + o;
            for (int64_t c = 0; c < j->C; c++, x += j->in_size, y += j->out_size) {
                double acc = 0.0;
                for (int64_t t = 0; t < n_terms; t++) acc += sw[t] * x[soff[t]];
                *y = (float)acc;
            }
            continue;
        }
        for (int64_t c = 0; c < j->C; c++) {
            double acc = 0.0;
            for (int64_t t = 0; t < n_terms; t++)
                acc += sw[t] * qe_load_f64(j->x->dtype, j->x->data, xbase + c * j->in_size + soff[t]);
            qe_store_f64(j->y->dtype, j->y->data, (n * j->C + c) * j->out_size + o, acc);
        }
    }
    free(soff);
    free(sw);
}

kiln_status kiln_grid_sample_compute(kiln_ctx *ctx) {
    gs_attrs local;
    const gs_attrs *a = ctx->state;
    if (!a) {
        KILN_TRY(gs_parse(ctx, &local));
        a = &local;
    }
    gs_job j;
    memset(&j, 0, sizeof j);
    j.a = a;
    j.x = kiln_input(ctx, 0);
    j.grid = kiln_input(ctx, 1);
    j.y = kiln_output(ctx, 0);
    if (!j.y) return KILN_OK;
    j.k = j.x->rank - 2;
    j.C = j.x->dims[1];
    j.in_size = 1;
    for (int d = 0; d < j.k; d++) {
        j.in_dims[d] = j.x->dims[2 + d];
        j.in_size *= j.in_dims[d];
    }
    kiln_strides(j.k, j.in_dims, j.in_strides);
    j.out_size = 1;
    for (int d = 0; d < j.k; d++) j.out_size *= j.grid->dims[1 + d];
    int64_t points = j.x->dims[0] * j.out_size;
    if (points == 0 || j.C == 0) return KILN_OK;
    if (j.in_size == 0) {
        for (int64_t i = 0; i < kiln_numel(j.y); i++) qe_store_f64(j.y->dtype, j.y->data, i, 0.0);
        return KILN_OK;
    }
    int64_t terms = 1;
    for (int d = 0; d < j.k; d++) terms *= a->mode == GS_NEAREST ? 1 : (a->mode == GS_LINEAR ? 2 : 4);
    if (terms > (1 << 20))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "%d-D %s sampling needs too many taps", j.k,
                         a->mode == GS_CUBIC ? "cubic" : "linear");
    kiln_parallel_for(ctx, points, 1 + 4096 / (j.C + 1), gs_points, &j);
    if (j.failed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for GridSample taps");
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* AffineGrid */

kiln_status kiln_affine_grid_infer(kiln_ctx *ctx) {
    kiln_tensor *theta, *size;
    char b1[96];
    KILN_TRY(kiln_need_input(ctx, 0, &theta));
    KILN_TRY(kiln_need_input(ctx, 1, &size));
    if (!qe_is_float(theta->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for theta",
                         kiln_dtype_name(theta->dtype));
    KILN_TRY(kiln_check_dtype(ctx, size, 1, 1, KILN_DTYPE_INT64));
    if (!size->data) return kiln_set_output_unknown(ctx, 0, theta->dtype);
    int64_t sz[8];
    int n;
    KILN_TRY(kiln_read_ints(ctx, size, sz, 8, &n));
    if (n != 4 && n != 5)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "size must hold 4 (2-D) or 5 (3-D) values, has %d", n);
    int k = n - 2;
    for (int i = 0; i < n; i++)
        if (sz[i] < 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "size[%d] is negative", i);
    if (theta->rank >= 0 &&
        (theta->rank != 3 || (theta->dims[1] >= 0 && theta->dims[1] != k) ||
         (theta->dims[2] >= 0 && theta->dims[2] != k + 1) ||
         (theta->dims[0] >= 0 && theta->dims[0] != sz[0])))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "theta %s must be [N=%lld, %d, %d] for size of %d values", QE_SHAPE(theta, b1),
                         (long long)sz[0], k, k + 1, n);
    int64_t dims[5];
    dims[0] = sz[0];
    for (int d = 0; d < k; d++) dims[1 + d] = sz[2 + d];
    dims[1 + k] = k;
    return kiln_set_output(ctx, 0, theta->dtype, k + 2, dims);
}

static double affine_base(int64_t i, int64_t L, int align) {
    if (L == 1) return 0.0; /* a single position sits at the centre, as in PyTorch */
    if (align) return -1.0 + (double)i * (2.0 / (double)(L - 1));
    double step = 2.0 / (double)L;
    return -1.0 + step / 2.0 + (double)i * step;
}

kiln_status kiln_affine_grid_compute(kiln_ctx *ctx) {
    const kiln_tensor *theta = kiln_input(ctx, 0), *size = kiln_input(ctx, 1);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t sz[8];
    int n;
    KILN_TRY(kiln_read_ints(ctx, size, sz, 8, &n));
    int k = n - 2, align = kiln_attr_int(ctx->node, "align_corners", 0) != 0;
    int64_t N = sz[0], D = k == 3 ? sz[2] : 1, H = sz[n - 2], W = sz[n - 1];
    int64_t o = 0;
    for (int64_t b = 0; b < N; b++) {
        double th[12];
        for (int i = 0; i < k * (k + 1); i++) th[i] = qe_load_f64(theta->dtype, theta->data, b * k * (k + 1) + i);
        for (int64_t z = 0; z < D; z++) {
            double zc = k == 3 ? affine_base(z, D, align) : 0.0;
            for (int64_t yy = 0; yy < H; yy++) {
                double yc = affine_base(yy, H, align);
                for (int64_t xx = 0; xx < W; xx++) {
                    double xc = affine_base(xx, W, align);
                    double pos[4] = {xc, yc, k == 3 ? zc : 1.0, 1.0};
                    for (int r = 0; r < k; r++) {
                        double v = 0.0;
                        for (int c = 0; c <= k; c++) v += th[r * (k + 1) + c] * pos[c];
                        qe_store_f64(y->dtype, y->data, o++, v);
                    }
                }
            }
        }
    }
    return KILN_OK;
}
