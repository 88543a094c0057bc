/* Resize (opsets 10-19) and the deprecated Upsample (1-10).
 *
 * Every mode is separable: each resized axis gets a table saying, for each output index, which
 * input indices contribute and with what weight (nearest: one index; linear: 2 taps; cubic: 4;
 * antialiased: a footprint widened by 1/scale). Nearest resizes are then one gather; linear and
 * cubic run one weighted pass per resized axis over a contiguous [outer, axis, inner] view, in
 * float (double for double tensors), threaded over rows. Coordinates follow the ONNX reference:
 * computed in double, with the fractional output width scale * in_size where a mode needs it. */
#include "quant_elem.h"
#include <stdlib.h>
#include <string.h>

enum { MODE_NEAREST, MODE_LINEAR, MODE_CUBIC };
enum {
    CT_HALF_PIXEL, CT_HALF_PIXEL_SYMMETRIC, CT_PYTORCH_HALF_PIXEL, CT_ALIGN_CORNERS, CT_ASYMMETRIC,
    CT_TF_HALF_PIXEL_FOR_NN, CT_TF_CROP_AND_RESIZE
};
enum { NM_ROUND_PREFER_FLOOR, NM_ROUND_PREFER_CEIL, NM_FLOOR, NM_CEIL, NM_SIMPLE };
enum { KEEP_STRETCH, KEEP_NOT_LARGER, KEEP_NOT_SMALLER };

typedef struct resize_attrs {
    int is_upsample;
    int mode, ctm, nearest, keep, antialias, exclude_outside;
    double cubic_a, extrapolation;
    int n_axes;
    int64_t axes[KILN_MAX_RANK];
    int has_axes;
    int n_attr_scales; /* Upsample-1/7: scales from attributes */
    float attr_scales[KILN_MAX_RANK];
} resize_attrs;

static int parse_enum(const char *s, const char *const *names, int n) {
    for (int i = 0; i < n; i++)
        if (names[i] && !strcmp(s, names[i])) return i;
    return -1;
}

static kiln_status parse_attrs(kiln_ctx *ctx, resize_attrs *a) {
    const kiln_node *nd = ctx->node;
    memset(a, 0, sizeof *a);
    a->is_upsample = !strcmp(nd->op_type, "Upsample");
    const char *mode = kiln_attr_string(nd, "mode", "nearest");
    if (!strcmp(mode, "nearest")) a->mode = MODE_NEAREST;
    else if (!strcmp(mode, "linear") || !strcmp(mode, "bilinear")) a->mode = MODE_LINEAR;
    else if (!strcmp(mode, "cubic") && !a->is_upsample) a->mode = MODE_CUBIC;
    else return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported mode '%s'", mode);
    if (a->is_upsample || ctx->opset < 11) {
        /* the pre-11 forms: x_original = x / scale, and nearest truncates (ceil when shrinking) */
        a->ctm = CT_ASYMMETRIC;
        a->nearest = NM_SIMPLE;
        a->cubic_a = -0.75;
        if (a->is_upsample && ctx->opset < 9) {
            int n = 0;
            const float *sc = kiln_attr_floats(nd, "scales", &n);
            if (sc) {
                if (n > KILN_MAX_RANK)
                    return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many scales (%d)", n);
                memcpy(a->attr_scales, sc, sizeof(float) * n);
                a->n_attr_scales = n;
            } else { /* Upsample-1: NCHW with height_scale / width_scale */
                a->attr_scales[0] = a->attr_scales[1] = 1.0f;
                a->attr_scales[2] = kiln_attr_float(nd, "height_scale", 1.0f);
                a->attr_scales[3] = kiln_attr_float(nd, "width_scale", 1.0f);
                a->n_attr_scales = 4;
            }
        }
        return KILN_OK;
    }
    static const char *const ct_names[] = {"half_pixel", "half_pixel_symmetric", "pytorch_half_pixel",
                                           "align_corners", "asymmetric", "tf_half_pixel_for_nn",
                                           "tf_crop_and_resize"};
    const char *ct = kiln_attr_string(nd, "coordinate_transformation_mode", "half_pixel");
    a->ctm = parse_enum(ct, ct_names, 7);
    if (a->ctm < 0 || (a->ctm == CT_HALF_PIXEL_SYMMETRIC && ctx->opset < 19))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "unsupported coordinate_transformation_mode '%s'", ct);
    static const char *const nm_names[] = {"round_prefer_floor", "round_prefer_ceil", "floor", "ceil"};
    const char *nm = kiln_attr_string(nd, "nearest_mode", "round_prefer_floor");
    a->nearest = parse_enum(nm, nm_names, 4);
    if (a->nearest < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported nearest_mode '%s'", nm);
    a->cubic_a = kiln_attr_float(nd, "cubic_coeff_a", -0.75f);
    a->exclude_outside = (int)kiln_attr_int(nd, "exclude_outside", 0);
    a->extrapolation = kiln_attr_float(nd, "extrapolation_value", 0.0f);
    if (ctx->opset >= 18) {
        a->antialias = (int)kiln_attr_int(nd, "antialias", 0);
        if (a->antialias && a->mode == MODE_NEAREST)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "antialias needs mode linear or cubic");
        static const char *const kp_names[] = {"stretch", "not_larger", "not_smaller"};
        const char *kp = kiln_attr_string(nd, "keep_aspect_ratio_policy", "stretch");
        a->keep = parse_enum(kp, kp_names, 3);
        if (a->keep < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "unsupported keep_aspect_ratio_policy '%s'", kp);
        int n = 0;
        const int64_t *ax = kiln_attr_ints(nd, "axes", &n);
        if (ax) {
            if (n > KILN_MAX_RANK)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many axes (%d)", n);
            memcpy(a->axes, ax, sizeof(int64_t) * n);
            a->n_axes = n;
            a->has_axes = 1;
        }
    }
    return KILN_OK;
}

static kiln_status resize_init(kiln_ctx *ctx) {
    resize_attrs *a = malloc(sizeof *a);
    if (!a) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = parse_attrs(ctx, a);
    if (st != KILN_OK) {
        free(a);
        return st;
    }
    ctx->state = a;
    return KILN_OK;
}

static void resize_fini(void *state) { free(state); }

/* What the resize does along every axis. */
typedef struct resize_plan {
    int rank;
    int64_t in[KILN_MAX_RANK], out[KILN_MAX_RANK];
    double scale[KILN_MAX_RANK];     /* used for coordinates */
    double roi_lo[KILN_MAX_RANK], roi_hi[KILN_MAX_RANK];
    int known;                       /* 0: output dims could not be worked out (static mode) */
} resize_plan;

/* Reads up to max floats of a float-like tensor. */
static kiln_status read_floats(kiln_ctx *ctx, const kiln_tensor *t, const char *what, double *out,
                               int max, int *count) {
    int64_t n = kiln_numel(t);
    if (!qe_is_float(t->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be a float tensor, not %s", what,
                         kiln_dtype_name(t->dtype));
    if (t->rank > 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be 1-D, has rank %d", what, t->rank);
    if (n > max)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has %lld values, expected at most %d",
                         what, (long long)n, max);
    for (int64_t i = 0; i < n; i++) out[i] = qe_load_f64(t->dtype, t->data, i);
    *count = (int)n;
    return KILN_OK;
}

static kiln_status make_plan(kiln_ctx *ctx, const resize_attrs *a, const kiln_tensor *x,
                             resize_plan *p) {
    int r = x->rank;
    memset(p, 0, sizeof *p);
    p->rank = r;
    p->known = 1;
    for (int d = 0; d < r; d++) {
        p->in[d] = p->out[d] = x->dims[d];
        p->scale[d] = 1.0;
        p->roi_lo[d] = 0.0;
        p->roi_hi[d] = 1.0;
    }
    /* which axes the scales / sizes / roi refer to */
    int axes[KILN_MAX_RANK], n_axes = r;
    if (a->has_axes) {
        n_axes = a->n_axes;
        int seen[KILN_MAX_RANK] = {0};
        for (int i = 0; i < n_axes; i++) {
            KILN_TRY(kiln_norm_axis(ctx, a->axes[i], r, "axes", &axes[i]));
            if (seen[axes[i]]++)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %d repeats in axes", axes[i]);
        }
    } else {
        for (int i = 0; i < r; i++) axes[i] = i;
    }

    const kiln_tensor *scales = NULL, *sizes = NULL, *roi = NULL;
    if (a->is_upsample && a->n_attr_scales) {
        if (a->n_attr_scales != r)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "scales attribute has %d values for input of rank %d", a->n_attr_scales, r);
        for (int d = 0; d < r; d++) p->scale[d] = a->attr_scales[d];
    } else if (a->is_upsample || ctx->opset < 11) {
        KILN_TRY(kiln_need_input(ctx, 1, (kiln_tensor **)&scales));
    } else {
        roi = kiln_input(ctx, 1);
        scales = kiln_input(ctx, 2);
        sizes = kiln_input(ctx, 3);
    }
    /* empty tensors stand for absent inputs (the opset 11 form needs a placeholder) */
    if (scales && scales->rank >= 0 && kiln_shape_concrete(scales) && kiln_numel(scales) == 0) scales = NULL;
    if (sizes && sizes->rank >= 0 && kiln_shape_concrete(sizes) && kiln_numel(sizes) == 0) sizes = NULL;
    if (roi && roi->rank >= 0 && kiln_shape_concrete(roi) && kiln_numel(roi) == 0) roi = NULL;
    if (!(a->is_upsample && a->n_attr_scales)) {
        if (scales && sizes)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "only one of scales and sizes may be given");
        if (!scales && !sizes)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "one of scales and sizes is required");
    }
    if ((scales && !scales->data) || (sizes && !sizes->data) || (roi && !roi->data) || x->rank < 0) {
        p->known = 0;
        return KILN_OK;
    }
    if (roi && a->ctm == CT_TF_CROP_AND_RESIZE) {
        double v[2 * KILN_MAX_RANK];
        int n;
        KILN_TRY(read_floats(ctx, roi, "roi", v, 2 * KILN_MAX_RANK, &n));
        if (n != 2 * n_axes)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "roi has %d values, expected %d", n,
                             2 * n_axes);
        for (int i = 0; i < n_axes; i++) {
            p->roi_lo[axes[i]] = v[i];
            p->roi_hi[axes[i]] = v[n_axes + i];
        }
    }
    if (scales) {
        double v[KILN_MAX_RANK];
        int n;
        KILN_TRY(read_floats(ctx, scales, "scales", v, KILN_MAX_RANK, &n));
        int want = (a->is_upsample || ctx->opset < 11) ? r : n_axes;
        if (n != want)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scales has %d values, expected %d", n, want);
        for (int i = 0; i < n; i++) {
            if (!(v[i] > 0.0))
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scale %g must be positive", v[i]);
            p->scale[(a->is_upsample || ctx->opset < 11) ? i : axes[i]] = v[i];
        }
    }
    if (scales || (a->is_upsample && a->n_attr_scales)) {
        for (int d = 0; d < r; d++) {
            /* float product, as onnxruntime computes it (1.4f * 5 gives 7, not 6) */
            float of = (float)p->scale[d] * (float)p->in[d];
            double o = floor((double)of);
            if (o > 4e18 || o < 0)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output dimension %d is too large", d);
            p->out[d] = (int64_t)o;
        }
        return KILN_OK;
    }
    int64_t sz[KILN_MAX_RANK];
    int n;
    if (sizes->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sizes must be int64, not %s",
                         kiln_dtype_name(sizes->dtype));
    KILN_TRY(kiln_read_ints(ctx, sizes, sz, KILN_MAX_RANK, &n));
    if (n != n_axes)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sizes has %d values, expected %d", n, n_axes);
    for (int i = 0; i < n; i++)
        if (sz[i] < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sizes[%d] = %lld is negative", i,
                             (long long)sz[i]);
    if (a->keep == KEEP_STRETCH) {
        for (int i = 0; i < n; i++) {
            int d = axes[i];
            p->out[d] = sz[i];
            p->scale[d] = p->in[d] ? (double)sz[i] / (double)p->in[d] : 1.0;
        }
        return KILN_OK;
    }
    double s = a->keep == KEEP_NOT_LARGER ? INFINITY : -INFINITY;
    for (int i = 0; i < n; i++) {
        double q = p->in[axes[i]] ? (double)sz[i] / (double)p->in[axes[i]] : 1.0;
        s = a->keep == KEEP_NOT_LARGER ? fmin(s, q) : fmax(s, q);
    }
    for (int i = 0; i < n; i++) {
        int d = axes[i];
        p->scale[d] = s;
        double o = s * (double)p->in[d] + 0.5;
        if (!(o < 4e18)) /* converting a larger double to int64 is undefined */
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output dimension %d is too large", d);
        p->out[d] = (int64_t)o;
    }
    return KILN_OK;
}

static kiln_status resize_infer(kiln_ctx *ctx) {
    const resize_attrs *a = ctx->state;
    resize_attrs local;
    if (!a) {
        KILN_TRY(parse_attrs(ctx, &local));
        a = &local;
    }
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (x->dtype == KILN_DTYPE_STRING || x->dtype == KILN_DTYPE_BOOL || x->dtype == KILN_DTYPE_COMPLEX64 ||
        x->dtype == KILN_DTYPE_COMPLEX128 || qe_sub_bits(x->dtype) || qe_is_f8(x->dtype)) {
        if (a->mode != MODE_NEAREST || x->dtype == KILN_DTYPE_COMPLEX64 ||
            x->dtype == KILN_DTYPE_COMPLEX128 || qe_sub_bits(x->dtype))
            return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                             "element type %s is not supported in this mode", kiln_dtype_name(x->dtype));
    }
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    if (x->rank == 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input X is a scalar");
    resize_plan p;
    KILN_TRY(make_plan(ctx, a, x, &p));
    if (!p.known) {
        int64_t dims[KILN_MAX_RANK];
        for (int d = 0; d < x->rank; d++) dims[d] = KILN_DIM_UNKNOWN;
        return kiln_set_output(ctx, 0, x->dtype, x->rank, dims);
    }
    for (int d = 0; d < x->rank; d++)
        if (x->dims[d] < 0) p.out[d] = KILN_DIM_UNKNOWN;
    return kiln_set_output(ctx, 0, x->dtype, x->rank, p.out);
}

/* ------------------------------------------------------------------------------------------ */
/* coordinate mapping and tap tables */

static double original_coord(const resize_attrs *a, const resize_plan *p, int d, int64_t x) {
    double s = p->scale[d], in = (double)p->in[d], out_w = s * in, xr = (double)x;
    switch (a->ctm) {
    case CT_HALF_PIXEL: return (xr + 0.5) / s - 0.5;
    case CT_HALF_PIXEL_SYMMETRIC: {
        double adj = (double)p->out[d] / out_w, center = in / 2.0;
        return center * (1.0 - adj) + (xr + 0.5) / s - 0.5;
    }
    case CT_PYTORCH_HALF_PIXEL: return p->out[d] > 1 ? (xr + 0.5) / s - 0.5 : 0.0;
    case CT_ALIGN_CORNERS: return out_w == 1.0 ? 0.0 : xr * (in - 1.0) / (out_w - 1.0);
    case CT_ASYMMETRIC: return xr / s;
    case CT_TF_HALF_PIXEL_FOR_NN: return (xr + 0.5) / s;
    default: { /* tf_crop_and_resize */
        double lo = p->roi_lo[d], hi = p->roi_hi[d];
        if (out_w == 1.0) return 0.5 * (lo + hi) * (in - 1.0);
        return lo * (in - 1.0) + xr * (hi - lo) * (in - 1.0) / (out_w - 1.0);
    }
    }
}

static int64_t nearest_index(const resize_attrs *a, double x, double scale) {
    double fl = floor(x);
    if (x == fl) return (int64_t)fl;
    double frac = x - fl;
    switch (a->nearest) {
    case NM_ROUND_PREFER_FLOOR: return (int64_t)(frac <= 0.5 ? fl : fl + 1);
    case NM_ROUND_PREFER_CEIL: return (int64_t)(frac < 0.5 ? fl : fl + 1);
    case NM_FLOOR: return (int64_t)fl;
    case NM_CEIL: return (int64_t)fl + 1;
    default: return scale < 1.0 ? (int64_t)ceil(x) : (int64_t)x; /* NM_SIMPLE */
    }
}

static double cubic_kernel(double x, double A) {
    x = fabs(x);
    if (x <= 1.0) return ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0;
    if (x < 2.0) return ((A * x - 5.0 * A) * x + 8.0 * A) * x - 4.0 * A;
    return 0.0;
}

/* One axis' table: n taps per output index; idx < 0 in the first tap marks an extrapolated
 * output (tf_crop_and_resize outside the input). */
typedef struct axis_taps {
    int n;
    int64_t *idx; /* [out * n] */
    double *w;    /* [out * n] */
} axis_taps;

static int taps_count(const resize_attrs *a, double scale) {
    if (a->mode == MODE_NEAREST) return 1;
    double sc = a->antialias && scale < 1.0 ? scale : 1.0;
    int start = a->mode == MODE_LINEAR ? (int)floor(-1.0 / sc) + 1 : (int)floor(-2.0 / sc) + 1;
    return 2 - 2 * start;
}

static kiln_status build_taps(kiln_ctx *ctx, const resize_attrs *a, const resize_plan *p, int d,
                              axis_taps *t) {
    int64_t out = p->out[d], in = p->in[d];
    int n = taps_count(a, p->scale[d]);
    if (n > 1 << 20) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scale is too small to antialias");
    t->n = n;
    t->idx = malloc(sizeof(int64_t) * (size_t)(out * n + 1));
    t->w = malloc(sizeof(double) * (size_t)(out * n + 1));
    if (!t->idx || !t->w) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for resize tables");
    int start = 1 - n / 2;
    double sc = a->antialias && p->scale[d] < 1.0 ? p->scale[d] : 1.0;
    for (int64_t o = 0; o < out; o++) {
        int64_t *ix = t->idx + o * n;
        double *w = t->w + o * n;
        double x = original_coord(a, p, d, o);
        if (a->ctm == CT_TF_CROP_AND_RESIZE && (x < 0.0 || x > (double)(in - 1))) {
            for (int k = 0; k < n; k++) { ix[k] = -1; w[k] = 0.0; }
            continue;
        }
        if (a->mode == MODE_NEAREST) {
            int64_t i = nearest_index(a, x, p->scale[d]);
            ix[0] = i < 0 ? 0 : (i >= in ? in - 1 : i);
            w[0] = 1.0;
            continue;
        }
        /* i0 is the tap left of x; an integral x counts as the right end of its interval */
        double i0f = ceil(x) - 1.0, ratio = x - i0f;
        int64_t i0 = (int64_t)i0f;
        double sum = 0.0;
        for (int k = 0; k < n; k++) {
            double dist = (double)(start + k) - ratio;
            double wk;
            if (a->mode == MODE_LINEAR) wk = a->antialias ? fmax(0.0, 1.0 - fabs(dist * sc)) : (k == 0 ? 1.0 - ratio : ratio);
            else wk = cubic_kernel(dist * sc, a->cubic_a);
            int64_t i = i0 + start + k;
            if (a->exclude_outside && (i < 0 || i >= in)) wk = 0.0;
            w[k] = wk;
            sum += wk;
            ix[k] = i < 0 ? 0 : (i >= in ? in - 1 : i);
        }
        if ((a->antialias || a->exclude_outside) && sum != 0.0)
            for (int k = 0; k < n; k++) w[k] /= sum;
    }
    return KILN_OK;
}

static void free_taps(axis_taps *t) {
    free(t->idx);
    free(t->w);
}

/* ------------------------------------------------------------------------------------------ */
/* nearest: one gather over all axes */

typedef struct nearest_job {
    const resize_plan *p;
    int64_t *const *map;       /* per axis: input index of each output index, -1 extrapolated */
    const void *x;
    void *y;
    size_t esize;
    int is_string;
    int dtype;
    double extrapolation;
    int64_t in_strides[KILN_MAX_RANK];
    int may_extrapolate; /* tf_crop_and_resize: index maps can hold -1 */
    int failed;
} nearest_job;

static void nearest_rows(void *arg, int64_t begin, int64_t end) {
    nearest_job *j = arg;
    const resize_plan *p = j->p;
    int r = p->rank, last = r - 1;
    int64_t wout = p->out[last];
    const int64_t *lmap = j->map[last];
    for (int64_t row = begin; row < end; row++) {
        int64_t rem = row, off = 0;
        int extrap = 0;
        for (int d = last - 1; d >= 0; d--) {
            int64_t c = rem % p->out[d];
            rem /= p->out[d];
            int64_t i = j->map[d][c];
            if (i < 0) extrap = 1;
            else off += i * j->in_strides[d];
        }
        int64_t ybase = row * wout;
        if (!extrap && !j->is_string && !j->may_extrapolate) { /* plain gathers */
            if (j->esize == 4) {
                const uint32_t *xs = (const uint32_t *)j->x + off;
                uint32_t *yd = (uint32_t *)j->y + ybase;
                for (int64_t c = 0; c < wout; c++) yd[c] = xs[lmap[c]];
                continue;
            }
            if (j->esize == 1) {
                const uint8_t *xs = (const uint8_t *)j->x + off;
                uint8_t *yd = (uint8_t *)j->y + ybase;
                for (int64_t c = 0; c < wout; c++) yd[c] = xs[lmap[c]];
                continue;
            }
            if (j->esize == 2) {
                const uint16_t *xs = (const uint16_t *)j->x + off;
                uint16_t *yd = (uint16_t *)j->y + ybase;
                for (int64_t c = 0; c < wout; c++) yd[c] = xs[lmap[c]];
                continue;
            }
        }
        for (int64_t c = 0; c < wout; c++) {
            int64_t i = lmap[c];
            int64_t yi = ybase + c;
            if (extrap || i < 0) {
                if (j->is_string) {
                    char *s = kiln_str_new(NULL, 0);
                    if (!s) { j->failed = 1; return; }
                    ((char **)j->y)[yi] = s;
                } else {
                    qe_store_f64(j->dtype, j->y, yi, j->extrapolation);
                }
                continue;
            }
            int64_t xi = off + i;
            if (j->is_string) {
                char *s = kiln_str_dup(((char *const *)j->x)[xi]);
                if (!s) { j->failed = 1; return; }
                ((char **)j->y)[yi] = s;
            } else if (j->esize == 4) {
                ((uint32_t *)j->y)[yi] = ((const uint32_t *)j->x)[xi];
            } else if (j->esize == 1) {
                ((uint8_t *)j->y)[yi] = ((const uint8_t *)j->x)[xi];
            } else {
                memcpy((char *)j->y + yi * j->esize, (const char *)j->x + xi * j->esize, j->esize);
            }
        }
    }
}

/* ------------------------------------------------------------------------------------------ */
/* linear / cubic: weighted passes, one per resized axis */

typedef struct pass_job {
    const axis_taps *t;
    int64_t outer, din, dout, inner;
    const void *src;
    void *dst;
    double extrapolation;
} pass_job;

#define DEFINE_PASS(T, NAME)                                                                        \
    static void NAME(void *arg, int64_t begin, int64_t end) {                                       \
        const pass_job *j = arg;                                                                    \
        const T *src = j->src;                                                                      \
        T *dst = j->dst;                                                                            \
        int n = j->t->n;                                                                            \
        int64_t inner = j->inner;                                                                   \
        for (int64_t row = begin; row < end; row++) {                                               \
            int64_t o = row / j->dout, q = row % j->dout;                                           \
            const int64_t *ix = j->t->idx + q * n;                                                  \
            const double *w = j->t->w + q * n;                                                      \
            T *d = dst + row * inner;                                                               \
            const T *s = src + o * j->din * inner;                                                  \
            if (ix[0] < 0) {                                                                        \
                for (int64_t i = 0; i < inner; i++) d[i] = (T)j->extrapolation;                     \
                continue;                                                                           \
            }                                                                                       \
            if (inner == 1) {                                                                       \
                T acc = 0;                                                                          \
                for (int k = 0; k < n; k++) acc += (T)w[k] * s[ix[k]];                              \
                d[0] = acc;                                                                         \
                continue;                                                                           \
            }                                                                                       \
            T w0 = (T)w[0];                                                                         \
            const T *s0 = s + ix[0] * inner;                                                        \
            for (int64_t i = 0; i < inner; i++) d[i] = w0 * s0[i];                                  \
            for (int k = 1; k < n; k++) {                                                           \
                T wk = (T)w[k];                                                                     \
                if (wk == 0) continue;                                                              \
                const T *sk = s + ix[k] * inner;                                                    \
                for (int64_t i = 0; i < inner; i++) d[i] += wk * sk[i];                             \
            }                                                                                       \
        }                                                                                           \
    }

DEFINE_PASS(float, pass_f32)
DEFINE_PASS(double, pass_f64)

typedef struct convert_job {
    int dt, to_buf, use_double;
    const void *src;
    void *dst;
    int64_t lo, hi; /* integer saturation */
    int is_int;
} convert_job;

static void convert_range(void *arg, int64_t begin, int64_t end) {
    const convert_job *j = arg;
    if (j->to_buf) {
        for (int64_t i = begin; i < end; i++) {
            double v = qe_load_f64(j->dt, j->src, i);
            if (j->use_double) ((double *)j->dst)[i] = v;
            else ((float *)j->dst)[i] = (float)v;
        }
        return;
    }
    for (int64_t i = begin; i < end; i++) {
        double v = j->use_double ? ((const double *)j->src)[i] : (double)((const float *)j->src)[i];
        if (j->is_int) {
            v = trunc(v); /* onnxruntime casts the float result, truncating */
            if (!(v >= (double)j->lo)) v = (double)j->lo;
            if (v > (double)j->hi) v = (double)j->hi;
            if (j->dt == KILN_DTYPE_INT64) ((int64_t *)j->dst)[i] = (int64_t)v;
            else if (j->dt == KILN_DTYPE_UINT64) ((uint64_t *)j->dst)[i] = (uint64_t)v;
            else kiln_store_f64(j->dt, j->dst, i, v);
        } else if (qe_is_f8(j->dt)) {
            ((uint8_t *)j->dst)[i] = qe_f32_to_f8(j->dt, (float)v, 1);
        } else {
            qe_store_f64(j->dt, j->dst, i, v);
        }
    }
}

static void int_range(int dt, int64_t *lo, int64_t *hi) {
    switch (dt) {
    case KILN_DTYPE_UINT8: *lo = 0; *hi = 255; break;
    case KILN_DTYPE_INT8: *lo = -128; *hi = 127; break;
    case KILN_DTYPE_UINT16: *lo = 0; *hi = 65535; break;
    case KILN_DTYPE_INT16: *lo = -32768; *hi = 32767; break;
    case KILN_DTYPE_INT32: *lo = INT32_MIN; *hi = INT32_MAX; break;
    case KILN_DTYPE_UINT32: *lo = 0; *hi = UINT32_MAX; break;
    case KILN_DTYPE_UINT64: *lo = 0; *hi = INT64_MAX; break;
    default: *lo = INT64_MIN; *hi = INT64_MAX; break;
    }
}

static kiln_status resize_compute(kiln_ctx *ctx) {
    const resize_attrs *a = ctx->state;
    resize_attrs local;
    if (!a) {
        KILN_TRY(parse_attrs(ctx, &local));
        a = &local;
    }
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    resize_plan p;
    KILN_TRY(make_plan(ctx, a, x, &p));
    int r = p.rank;
    int64_t ny = kiln_dims_numel(r, p.out), nx = kiln_numel(x);
    if (ny == 0) return KILN_OK;
    if (nx == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cannot resize an empty input to a non-empty output");

    axis_taps taps[KILN_MAX_RANK];
    memset(taps, 0, sizeof taps);
    kiln_status st = KILN_OK;
    if (a->mode == MODE_NEAREST) {
        int64_t *map[KILN_MAX_RANK];
        for (int d = 0; d < r; d++) {
            st = build_taps(ctx, a, &p, d, &taps[d]);
            if (st != KILN_OK) goto done;
            map[d] = taps[d].idx;
        }
        nearest_job j;
        memset(&j, 0, sizeof j);
        j.p = &p;
        j.map = map;
        j.x = x->data;
        j.y = y->data;
        j.dtype = x->dtype;
        j.is_string = x->dtype == KILN_DTYPE_STRING;
        j.esize = j.is_string ? sizeof(char *) : kiln_dtype_size(x->dtype);
        j.extrapolation = a->extrapolation;
        j.may_extrapolate = a->ctm == CT_TF_CROP_AND_RESIZE;
        kiln_strides(r, p.in, j.in_strides);
        int64_t rows = ny / p.out[r - 1];
        kiln_parallel_for(ctx, rows, 1 + 16384 / (p.out[r - 1] + 1), nearest_rows, &j);
        if (j.failed) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory copying strings");
        goto done;
    }

    /* linear / cubic */
    int use_double = x->dtype == KILN_DTYPE_DOUBLE || x->dtype == KILN_DTYPE_INT64 ||
                     x->dtype == KILN_DTYPE_UINT64 || x->dtype == KILN_DTYPE_INT32 ||
                     x->dtype == KILN_DTYPE_UINT32;
    size_t es = use_double ? sizeof(double) : sizeof(float);
    int direct_in = (use_double && x->dtype == KILN_DTYPE_DOUBLE) || (!use_double && x->dtype == KILN_DTYPE_FLOAT);
    void *bufs[2] = {NULL, NULL}, *cur_buf = NULL;
    const void *cur = x->data;
    if (!direct_in) {
        cur_buf = malloc(es * (size_t)nx);
        if (!cur_buf) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto done; }
        convert_job cj = {x->dtype, 1, use_double, x->data, cur_buf, 0, 0, 0};
        kiln_parallel_for(ctx, nx, 16384, convert_range, &cj);
        cur = cur_buf;
    }
    int64_t dims[KILN_MAX_RANK];
    memcpy(dims, p.in, sizeof(int64_t) * r);
    /* which axes need a pass; the last pass can write straight into y when types agree */
    int todo[KILN_MAX_RANK], ntodo = 0;
    for (int d = r - 1; d >= 0; d--) {
        int identity = p.out[d] == p.in[d] && p.scale[d] == 1.0 &&
                       (a->ctm != CT_TF_CROP_AND_RESIZE || (p.roi_lo[d] == 0.0 && p.roi_hi[d] == 1.0));
        if (!identity) todo[ntodo++] = d;
    }
    int direct_out = direct_in;
    for (int t = 0; t < ntodo; t++) {
        int d = todo[t];
        st = build_taps(ctx, a, &p, d, &taps[d]);
        if (st != KILN_OK) goto passes_done;
        pass_job pj;
        pj.t = &taps[d];
        pj.outer = kiln_dims_numel(d, dims);
        pj.din = dims[d];
        pj.dout = p.out[d];
        pj.inner = kiln_dims_numel(r - d - 1, dims + d + 1);
        pj.src = cur;
        pj.extrapolation = a->extrapolation;
        int64_t n_out = pj.outer * pj.dout * pj.inner;
        void *dst;
        if (t == ntodo - 1 && direct_out) {
            dst = y->data;
        } else {
            int slot = bufs[0] == cur ? 1 : 0;
            free(bufs[slot]);
            bufs[slot] = malloc(es * (size_t)(n_out + 1));
            if (!bufs[slot]) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); goto passes_done; }
            dst = bufs[slot];
        }
        pj.dst = dst;
        int64_t rows = pj.outer * pj.dout;
        kiln_parallel_for(ctx, rows, 1 + 8192 / (pj.inner * pj.t->n + 1), use_double ? pass_f64 : pass_f32, &pj);
        dims[d] = p.out[d];
        cur = dst;
        if (cur_buf && cur != cur_buf) { free(cur_buf); cur_buf = NULL; }
    }
    if (cur != y->data) {
        if (direct_out) {
            memcpy(y->data, cur, es * (size_t)ny);
        } else {
            convert_job cj = {y->dtype, 0, use_double, cur, y->data, 0, 0, 0};
            cj.is_int = kiln_dtype_is_integer(y->dtype);
            int_range(y->dtype, &cj.lo, &cj.hi);
            kiln_parallel_for(ctx, ny, 16384, convert_range, &cj);
        }
    }
passes_done:
    free(bufs[0]);
    free(bufs[1]);
    free(cur_buf);
done:
    for (int d = 0; d < r; d++) free_taps(&taps[d]);
    return st;
}

const kiln_op kiln_ops_resize[] = {
    {"", "Resize", 10, 0, resize_init, resize_infer, resize_compute, resize_fini},
    {"", "Upsample", 1, 0, resize_init, resize_infer, resize_compute, resize_fini},
    {0},
};
