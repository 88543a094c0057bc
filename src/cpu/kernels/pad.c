/* The "pad" family: Pad (constant / reflect / edge / wrap; negative pads crop) and
 * CenterCropPad (crop or zero-pad each axis around its centre).
 *
 * Each output axis gets a map from output index to input index (-1: the constant). Negative
 * pads crop first and the border modes then reflect/clamp/wrap within what is left, as
 * onnxruntime does. Rows along the last axis copy their interior with one memcpy and only the
 * borders element by element; a row whose outer index lies in a constant border is a fill. */
#include "cpu/kernels/tensor_common.h"
#include <stdlib.h>
#include <string.h>

enum { PAD_CONSTANT, PAD_REFLECT, PAD_EDGE, PAD_WRAP };

typedef struct {
    int mode;
    int known;                      /* pads available (static inference may lack them) */
    int64_t pb[KILN_MAX_RANK], pe[KILN_MAX_RANK];
    unsigned char value[16];        /* the constant, one element */
} pad_params;

static const char *const empty_string = NULL; /* kiln's empty string */

static kiln_status pad_mode(kiln_ctx *ctx, int *mode) {
    const char *m = kiln_attr_string(ctx->node, "mode", "constant");
    if (!strcmp(m, "constant")) *mode = PAD_CONSTANT;
    else if (!strcmp(m, "reflect")) *mode = PAD_REFLECT;
    else if (!strcmp(m, "edge")) *mode = PAD_EDGE;
    else if (!strcmp(m, "wrap") && ctx->opset >= 19) *mode = PAD_WRAP;
    else return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported mode '%s'", m);
    return KILN_OK;
}

static kiln_status pad_value(kiln_ctx *ctx, const kiln_tensor *x, pad_params *p) {
    size_t elem = kiln_tk_elem_size(x->dtype);
    memset(p->value, 0, sizeof p->value);
    if (x->dtype == KILN_DTYPE_STRING) memcpy(p->value, &empty_string, sizeof empty_string);
    if (ctx->opset < 11) {
        float v = kiln_attr_float(ctx->node, "value", 0.0f);
        if (x->dtype == KILN_DTYPE_BOOL) p->value[0] = v != 0.0f;
        else if (x->dtype != KILN_DTYPE_STRING && v != 0.0f) kiln_store_f64(x->dtype, p->value, 0, v);
        return KILN_OK;
    }
    kiln_tensor *cv = ctx->n_in > 2 ? kiln_input(ctx, 2) : NULL;
    if (!cv) return KILN_OK;
    if (cv->dtype != x->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "constant_value is %s but data is %s",
                         kiln_dtype_name((kiln_dtype)cv->dtype), kiln_dtype_name((kiln_dtype)x->dtype));
    int64_t n = kiln_numel(cv);
    if (n > 1 || (cv->rank >= 0 && cv->rank > 1))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "constant_value must be a scalar");
    if (n == 1 && cv->data && elem) memcpy(p->value, cv->data, elem);
    return KILN_OK;
}

/* Reads mode, pads (attribute or input, optionally for a subset of axes) and the constant. */
static kiln_status pad_params_read(kiln_ctx *ctx, const kiln_tensor *x, pad_params *p) {
    int r = x->rank;
    KILN_TRY(pad_mode(ctx, &p->mode));
    KILN_TRY(pad_value(ctx, x, p));
    p->known = 1;
    int64_t pads[2 * KILN_MAX_RANK];
    int n = 0;
    if (ctx->opset < 11) {
        const char *name = ctx->opset < 2 ? "paddings" : "pads";
        if (!kiln_has_attr(ctx->node, name))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_MODEL, "attribute '%s' is required", name);
        const int64_t *a = kiln_attr_ints(ctx->node, name, &n);
        if (n > 2 * KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "too many pads (%d)", n);
        memcpy(pads, a, (size_t)n * sizeof *pads);
    } else {
        kiln_tensor *pt;
        KILN_TRY(kiln_need_input(ctx, 1, &pt));
        if (!kiln_tk_has_values(ctx, pt)) {
            p->known = 0;
            return KILN_OK;
        }
        KILN_TRY(kiln_tk_read_ints(ctx, pt, "input 'pads'", pads, 2 * KILN_MAX_RANK, &n));
    }
    int64_t axes[KILN_MAX_RANK];
    int na = r;
    for (int i = 0; i < r; i++) axes[i] = i;
    kiln_tensor *at = ctx->opset >= 18 && ctx->n_in > 3 ? kiln_input(ctx, 3) : NULL;
    if (at) {
        if (!kiln_tk_has_values(ctx, at)) {
            p->known = 0;
            return KILN_OK;
        }
        KILN_TRY(kiln_tk_read_ints(ctx, at, "input 'axes'", axes, KILN_MAX_RANK, &na));
    }
    if (r < 0) return KILN_OK;
    if (n != 2 * na)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pads has %d values, expected %d (2 x %d axes)", n, 2 * na, na);
    for (int i = 0; i < r; i++) p->pb[i] = p->pe[i] = 0;
    int seen[KILN_MAX_RANK] = {0};
    for (int i = 0; i < na; i++) {
        int a;
        KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &a));
        if (seen[a]) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %d is given twice", a);
        seen[a] = 1;
        p->pb[a] = pads[i];
        p->pe[a] = pads[i + na];
    }
    return KILN_OK;
}

/* Output dims; checks what the pads can do to each known dim. */
static kiln_status pad_out_dims(kiln_ctx *ctx, const kiln_tensor *x, const pad_params *p, int64_t *out) {
    for (int i = 0; i < x->rank; i++) {
        int64_t d = x->dims[i];
        if (!p->known) {
            out[i] = KILN_DIM_UNKNOWN;
            continue;
        }
        if (d < 0) {
            out[i] = p->pb[i] == 0 && p->pe[i] == 0 ? d : KILN_DIM_UNKNOWN;
            continue;
        }
        if (p->pb[i] < -KILN_MAX_NUMEL || p->pb[i] > KILN_MAX_NUMEL || p->pe[i] < -KILN_MAX_NUMEL ||
            p->pe[i] > KILN_MAX_NUMEL || d > KILN_MAX_NUMEL)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pads %lld, %lld of axis %d (size %lld) are too large",
                             (long long)p->pb[i], (long long)p->pe[i], i, (long long)d);
        /* every term is now within +-2^48: the sums below cannot overflow */
        int64_t kept = d - (p->pb[i] < 0 ? -p->pb[i] : 0) - (p->pe[i] < 0 ? -p->pe[i] : 0);
        if (kept < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pads %lld, %lld crop more than axis %d has (%lld)",
                             (long long)p->pb[i], (long long)p->pe[i], i, (long long)d);
        if (p->mode != PAD_CONSTANT && kept == 0 && (p->pb[i] > 0 || p->pe[i] > 0))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "cannot pad the empty axis %d in mode %s", i,
                             kiln_attr_string(ctx->node, "mode", "constant"));
        out[i] = d + p->pb[i] + p->pe[i];
    }
    return KILN_OK;
}

/* ---- the padding engine ---- */

typedef struct {
    int rank;
    size_t elem;
    const int64_t *const *map; /* per axis: output index -> input index or -1 */
    const int64_t *odims;
    int64_t istr[KILN_MAX_RANK];
    int64_t run_lo, run_hi, run_src; /* last axis: output [lo, hi) is input [src, src + hi - lo) */
    const void *value;
    char *dst;
    const char *src;
} pad_job;

static void pad_rows(void *arg, int64_t begin, int64_t end) {
    const pad_job *j = arg;
    int last = j->rank - 1;
    int64_t len = j->odims[last];
    size_t e = j->elem;
    int64_t idx[KILN_MAX_RANK], rem = begin;
    for (int k = last - 1; k >= 0; k--) {
        idx[k] = rem % j->odims[k];
        rem /= j->odims[k];
    }
    const int64_t *lm = j->map[last];
    for (int64_t r = begin; r < end; r++) {
        char *d = j->dst + (size_t)(r * len) * e;
        int64_t off = 0;
        int fill = 0;
        for (int k = 0; k < last; k++) {
            int64_t m = j->map[k][idx[k]];
            if (m < 0) {
                fill = 1;
                break;
            }
            off += m * j->istr[k];
        }
        if (fill) {
            kiln_tk_fill(d, len, j->value, e);
        } else {
            const char *s = j->src + (size_t)off * e;
            for (int64_t o = 0; o < j->run_lo; o++)
                kiln_tk_move_elem(d + o * e, lm[o] < 0 ? j->value : s + lm[o] * e, e);
            if (j->run_hi > j->run_lo)
                memcpy(d + j->run_lo * e, s + j->run_src * e, (size_t)(j->run_hi - j->run_lo) * e);
            for (int64_t o = j->run_hi; o < len; o++)
                kiln_tk_move_elem(d + o * e, lm[o] < 0 ? j->value : s + lm[o] * e, e);
        }
        for (int k = last - 1; k >= 0; k--) {
            if (++idx[k] < j->odims[k]) break;
            idx[k] = 0;
        }
    }
}

static int64_t border_index(int mode, int64_t c, int64_t n) {
    if (c >= 0 && c < n) return c;
    switch (mode) {
    case PAD_EDGE: return c < 0 ? 0 : n - 1;
    case PAD_WRAP: return ((c % n) + n) % n;
    case PAD_REFLECT: {
        if (n == 1) return 0;
        int64_t period = 2 * (n - 1), m = ((c % period) + period) % period;
        return m < n ? m : period - m;
    }
    default: return -1;
    }
}

/* Pads (or crops) x into y, whose shape pad_out_dims gave. */
static kiln_status pad_run(kiln_ctx *ctx, const kiln_tensor *x, kiln_tensor *y, const pad_params *p) {
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    int r = x->rank;
    int64_t total = kiln_numel(y);
    if (total <= 0) return KILN_OK;
    if (r == 0) {
        memcpy(y->data, x->data, elem);
        return x->dtype == KILN_DTYPE_STRING ? kiln_tk_own_strings(ctx, y) : KILN_OK;
    }
    int64_t sum = 0;
    for (int i = 0; i < r; i++) sum += y->dims[i];
    int64_t *maps = malloc((size_t)sum * sizeof(int64_t));
    if (!maps) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in Pad");
    const int64_t *map[KILN_MAX_RANK];
    pad_job j;
    int64_t *m = maps;
    for (int i = 0; i < r; i++) {
        int64_t crop_b = p->pb[i] < 0 ? -p->pb[i] : 0, crop_e = p->pe[i] < 0 ? -p->pe[i] : 0;
        int64_t kept = x->dims[i] - crop_b - crop_e, add_b = p->pb[i] > 0 ? p->pb[i] : 0;
        for (int64_t o = 0; o < y->dims[i]; o++) {
            int64_t c = border_index(p->mode, o - add_b, kept);
            m[o] = c < 0 ? -1 : c + crop_b;
        }
        map[i] = m;
        if (i == r - 1) {
            j.run_lo = add_b < y->dims[i] ? add_b : y->dims[i];
            j.run_hi = add_b + kept < y->dims[i] ? add_b + kept : y->dims[i];
            j.run_src = crop_b;
        }
        m += y->dims[i];
    }
    j.rank = r;
    j.elem = elem;
    j.map = map;
    j.odims = y->dims;
    kiln_strides(r, x->dims, j.istr);
    j.value = p->value;
    j.dst = y->data;
    j.src = x->data;
    if (kiln_numel(x) == 0) { /* nothing to read: constant mode only (checked), all fill */
        kiln_tk_fill(y->data, total, p->value, elem);
    } else {
        int64_t rows = total / y->dims[r - 1];
        kiln_tk_parallel(ctx, rows, (double)y->dims[r - 1] * (double)elem + 32.0, pad_rows, &j);
    }
    free(maps);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

/* ---- Pad ---- */

static kiln_status pad_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    pad_params p;
    KILN_TRY(pad_params_read(ctx, x, &p));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    int64_t out[KILN_MAX_RANK];
    KILN_TRY(pad_out_dims(ctx, x, &p, out));
    return kiln_set_output(ctx, 0, x->dtype, x->rank, out);
}

static kiln_status pad_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    pad_params p;
    int64_t out[KILN_MAX_RANK];
    KILN_TRY(pad_params_read(ctx, x, &p));
    KILN_TRY(pad_out_dims(ctx, x, &p, out));
    return pad_run(ctx, x, y, &p);
}

/* ---- CenterCropPad ---- */

/* Turns the target shape into begin/end pads: crops start at floor((d - s) / 2), pads put the
 * odd extra element at the end. *known = 0 when the shape values are not available. */
static kiln_status ccp_params(kiln_ctx *ctx, const kiln_tensor *x, pad_params *p, int64_t *out, int *known) {
    kiln_tensor *st;
    KILN_TRY(kiln_need_input(ctx, 1, &st));
    memset(p, 0, sizeof *p);
    p->mode = PAD_CONSTANT;
    if (x->dtype == KILN_DTYPE_STRING) memcpy(p->value, &empty_string, sizeof empty_string);
    *known = 0;
    if (x->rank < 0) return KILN_OK;
    int r = x->rank, na = r;
    int64_t axes[KILN_MAX_RANK], shape[KILN_MAX_RANK];
    for (int i = 0; i < r; i++) axes[i] = i;
    if (kiln_has_attr(ctx->node, "axes")) {
        const int64_t *a = kiln_attr_ints(ctx->node, "axes", &na);
        if (na > r) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%d axes for rank %d", na, r);
        memcpy(axes, a, (size_t)na * sizeof *axes);
    }
    for (int i = 0; i < r; i++) {
        p->pb[i] = p->pe[i] = 0;
        out[i] = x->dims[i];
    }
    int seen[KILN_MAX_RANK] = {0};
    int norm[KILN_MAX_RANK];
    for (int i = 0; i < na; i++) {
        KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &norm[i]));
        if (seen[norm[i]]) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %d is given twice", norm[i]);
        seen[norm[i]] = 1;
    }
    if (!kiln_tk_has_values(ctx, st)) {
        for (int i = 0; i < na; i++) out[norm[i]] = KILN_DIM_UNKNOWN;
        return KILN_OK;
    }
    int ns;
    KILN_TRY(kiln_tk_read_ints(ctx, st, "input 'shape'", shape, KILN_MAX_RANK, &ns));
    if (ns != na)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "shape has %d values for %d axes", ns, na);
    *known = 1;
    for (int i = 0; i < na; i++) {
        int a = norm[i];
        int64_t d = x->dims[a], s = shape[i];
        if (s < 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "shape[%d] = %lld is negative", i, (long long)s);
        out[a] = s;
        if (d < 0) {
            *known = 0;
            continue;
        }
        if (d > s) {
            p->pb[a] = -((d - s) / 2);
            p->pe[a] = -(d - s) - p->pb[a];
        } else {
            p->pb[a] = (s - d) / 2;
            p->pe[a] = (s - d) - p->pb[a];
        }
    }
    return KILN_OK;
}

static kiln_status ccp_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!kiln_tk_elem_size(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s",
                         kiln_dtype_name((kiln_dtype)x->dtype));
    pad_params p;
    int64_t out[KILN_MAX_RANK];
    int known;
    KILN_TRY(ccp_params(ctx, x, &p, out, &known));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    return kiln_set_output(ctx, 0, x->dtype, x->rank, out);
}

static kiln_status ccp_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    pad_params p;
    int64_t out[KILN_MAX_RANK];
    int known;
    KILN_TRY(ccp_params(ctx, x, &p, out, &known));
    if (!known) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "target shape is not known");
    return pad_run(ctx, x, y, &p);
}

const kiln_op kiln_ops_pad[] = {
    {"", "Pad", 1, 0, NULL, pad_infer, pad_compute, NULL},
    {"", "CenterCropPad", 18, 0, NULL, ccp_infer, ccp_compute, NULL},
    {0},
};
