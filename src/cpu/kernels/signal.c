/* DFT (opset 17: axis attribute; opset 20: axis input) and STFT (opset 17). Signals carry a last
 * dimension of 1 (real) or 2 (complex). Transforms run in double through signal_fft.c, one line
 * per task, threaded over lines / frames. The signal family table is at the end. */
#include "quant_elem.h"
#include "signal_fft.h"
#include <stdlib.h>

kiln_status kiln_window_infer(kiln_ctx *ctx);
kiln_status kiln_window_compute(kiln_ctx *ctx);
kiln_status kiln_mel_infer(kiln_ctx *ctx);
kiln_status kiln_mel_compute(kiln_ctx *ctx);

static kiln_status read_scalar_int(kiln_ctx *ctx, const kiln_tensor *t, const char *what, int64_t *v) {
    if (t->dtype != KILN_DTYPE_INT64 && t->dtype != KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must be int32 or int64, not %s", what,
                         kiln_dtype_name(t->dtype));
    if (kiln_numel(t) != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s must hold one value", what);
    *v = kiln_load_i64(t->dtype, t->data, 0);
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* DFT */

typedef struct dft_cfg {
    int axis, inverse, onesided, known;
    int64_t n;       /* transform length */
    int64_t out_len; /* output length along axis */
    int out_c;       /* 1 (real) or 2 */
} dft_cfg;

static kiln_status dft_config(kiln_ctx *ctx, const kiln_tensor *x, dft_cfg *c) {
    char b1[96];
    memset(c, 0, sizeof *c);
    c->known = 1;
    c->inverse = kiln_attr_int(ctx->node, "inverse", 0) != 0;
    c->onesided = kiln_attr_int(ctx->node, "onesided", 0) != 0;
    int r = x->rank;
    if (r < 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s needs rank >= 2", QE_SHAPE(x, b1));
    if (x->dims[r - 1] >= 0 && x->dims[r - 1] != 1 && x->dims[r - 1] != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "last dimension of input %s must be 1 (real) or 2 (complex)", QE_SHAPE(x, b1));
    int64_t axis = ctx->opset >= 20 ? -2 : kiln_attr_int(ctx->node, "axis", 1);
    const kiln_tensor *ta = ctx->opset >= 20 ? kiln_input(ctx, 2) : NULL;
    if (ta) {
        if (!ta->data) { c->known = 0; return KILN_OK; }
        KILN_TRY(read_scalar_int(ctx, ta, "axis", &axis));
    }
    if (axis < -r || axis > r - 2 || axis == -1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "axis %lld is invalid for input %s (the last dimension holds real/imaginary)",
                         (long long)axis, QE_SHAPE(x, b1));
    c->axis = (int)(axis < 0 ? axis + r : axis);
    int64_t in_len = x->dims[c->axis];
    const kiln_tensor *tl = kiln_input(ctx, 1);
    if (tl) {
        if (!tl->data) { c->known = 0; return KILN_OK; }
        KILN_TRY(read_scalar_int(ctx, tl, "dft_length", &c->n));
        if (c->n < 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "dft_length %lld must be >= 1", (long long)c->n);
    } else {
        if (in_len < 0) { c->known = 0; return KILN_OK; }
        c->n = c->inverse && c->onesided ? 2 * (in_len - 1) : in_len;
        if (c->n < 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s has no samples along axis %d",
                             QE_SHAPE(x, b1), c->axis);
    }
    if (c->n > ((int64_t)1 << 31))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "dft_length %lld is too large", (long long)c->n);
    c->out_len = !c->inverse && c->onesided ? c->n / 2 + 1 : c->n;
    c->out_c = c->inverse && c->onesided ? 1 : 2;
    return KILN_OK;
}

static kiln_status dft_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!qe_is_float(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for input",
                         kiln_dtype_name(x->dtype));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    dft_cfg c;
    KILN_TRY(dft_config(ctx, x, &c));
    int64_t dims[KILN_MAX_RANK];
    memcpy(dims, x->dims, sizeof(int64_t) * x->rank);
    if (!c.known) { /* the axis or length is not known yet: only the rank is */
        for (int d = 0; d < x->rank; d++) dims[d] = KILN_DIM_UNKNOWN;
        return kiln_set_output(ctx, 0, x->dtype, x->rank, dims);
    }
    dims[c.axis] = c.out_len;
    dims[x->rank - 1] = c.out_c;
    return kiln_set_output(ctx, 0, x->dtype, x->rank, dims);
}

typedef struct dft_job {
    const dft_cfg *c;
    const sig_fft_plan *plan;
    const kiln_tensor *x;
    kiln_tensor *y;
    int64_t in_len, inner, in_c;
    int failed;
} dft_job;

static void dft_lines(void *arg, int64_t begin, int64_t end) {
    dft_job *j = arg;
    const dft_cfg *c = j->c;
    int64_t n = c->n;
    size_t scr = sig_fft_scratch(j->plan);
    double *buf = malloc(sizeof(double) * (size_t)(2 * n + scr + 1));
    if (!buf) { j->failed = 1; return; }
    double *re = buf, *im = buf + n, *scratch = buf + 2 * n;
    int xdt = j->x->dtype;
    for (int64_t line = begin; line < end; line++) {
        int64_t o = line / j->inner, i = line % j->inner;
        int64_t xbase = o * j->in_len * j->inner + i; /* in units of complex slots */
        for (int64_t k = 0; k < n; k++) re[k] = im[k] = 0.0;
        if (c->inverse && c->onesided) {
            /* rebuild the full Hermitian spectrum from its first half */
            int64_t half = n / 2;
            for (int64_t k = 0; k <= half && k < j->in_len; k++) {
                int64_t e = (xbase + k * j->inner) * j->in_c;
                double hr = qe_load_f64(xdt, j->x->data, e);
                double hi = j->in_c == 2 ? qe_load_f64(xdt, j->x->data, e + 1) : 0.0;
                re[k] = hr;
                im[k] = hi;
                if (k > 0 && n - k > half) {
                    re[n - k] = hr;
                    im[n - k] = -hi;
                }
            }
        } else {
            int64_t take = j->in_len < n ? j->in_len : n;
            for (int64_t k = 0; k < take; k++) {
                int64_t e = (xbase + k * j->inner) * j->in_c;
                re[k] = qe_load_f64(xdt, j->x->data, e);
                im[k] = j->in_c == 2 ? qe_load_f64(xdt, j->x->data, e + 1) : 0.0;
            }
        }
        sig_fft_exec(j->plan, re, im, c->inverse, scratch);
        double scale = c->inverse ? 1.0 / (double)n : 1.0;
        int64_t ybase = o * c->out_len * j->inner + i;
        for (int64_t k = 0; k < c->out_len; k++) {
            int64_t e = (ybase + k * j->inner) * c->out_c;
            qe_store_f64(j->y->dtype, j->y->data, e, re[k] * scale);
            if (c->out_c == 2) qe_store_f64(j->y->dtype, j->y->data, e + 1, im[k] * scale);
        }
    }
    free(buf);
}

static kiln_status dft_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    dft_cfg c;
    KILN_TRY(dft_config(ctx, x, &c));
    dft_job j;
    memset(&j, 0, sizeof j);
    j.c = &c;
    j.x = x;
    j.y = y;
    j.in_len = x->dims[c.axis];
    j.in_c = x->dims[x->rank - 1];
    j.inner = kiln_dims_numel(x->rank - 2 - c.axis, x->dims + c.axis + 1);
    int64_t outer = kiln_dims_numel(c.axis, x->dims);
    int64_t lines = outer * j.inner;
    if (lines == 0) return KILN_OK;
    sig_fft_plan plan;
    if (sig_fft_plan_make(&plan, c.n))
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for an FFT of length %lld", (long long)c.n);
    j.plan = &plan;
    kiln_parallel_for(ctx, lines, 1 + 4096 / (c.n + 1), dft_lines, &j);
    sig_fft_plan_free(&plan);
    if (j.failed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for DFT buffers");
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* STFT */

typedef struct stft_cfg {
    int64_t batch, len, in_c, step, fl, frames, bins;
    int onesided, known;
} stft_cfg;

static kiln_status stft_config(kiln_ctx *ctx, stft_cfg *c) {
    char b1[96];
    memset(c, 0, sizeof *c);
    const kiln_tensor *x = kiln_input(ctx, 0), *tstep = kiln_input(ctx, 1), *win = kiln_input(ctx, 2),
                      *tfl = kiln_input(ctx, 3);
    if (!tstep) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "missing required input frame_step");
    c->onesided = kiln_attr_int(ctx->node, "onesided", 1) != 0;
    if (x->rank != 3 || (x->dims[2] >= 0 && x->dims[2] != 1 && x->dims[2] != 2))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "signal %s must be [batch, length, 1 or 2]", QE_SHAPE(x, b1));
    if (win && (win->rank != 1 || !qe_is_float(win->dtype)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "window %s must be a 1-D float tensor",
                         QE_SHAPE(win, b1));
    c->batch = x->dims[0];
    c->len = x->dims[1];
    c->in_c = x->dims[2];
    if (!tstep->data || (tfl && !tfl->data) || c->len < 0) return KILN_OK;
    KILN_TRY(read_scalar_int(ctx, tstep, "frame_step", &c->step));
    if (c->step < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "frame_step %lld must be >= 1", (long long)c->step);
    if (tfl) {
        KILN_TRY(read_scalar_int(ctx, tfl, "frame_length", &c->fl));
        if (win && win->dims[0] >= 0 && win->dims[0] != c->fl)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "window length %lld differs from frame_length %lld",
                             (long long)win->dims[0], (long long)c->fl);
    } else if (win) {
        c->fl = win->dims[0];
        if (c->fl < 0) return KILN_OK;
    } else {
        c->fl = c->len;
    }
    if (c->fl < 1 || c->fl > c->len)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "frame_length %lld must lie in [1, signal length %lld]", (long long)c->fl,
                         (long long)c->len);
    if (c->fl > ((int64_t)1 << 31))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "frame_length is too large");
    c->frames = 1 + (c->len - c->fl) / c->step;
    c->bins = c->onesided ? c->fl / 2 + 1 : c->fl;
    c->known = 1;
    return KILN_OK;
}

static kiln_status stft_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!qe_is_float(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %s for signal",
                         kiln_dtype_name(x->dtype));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    stft_cfg c;
    KILN_TRY(stft_config(ctx, &c));
    int64_t dims[4] = {x->dims[0], c.known ? c.frames : KILN_DIM_UNKNOWN,
                       c.known ? c.bins : KILN_DIM_UNKNOWN, 2};
    return kiln_set_output(ctx, 0, x->dtype, 4, dims);
}

typedef struct stft_job {
    const stft_cfg *c;
    const sig_fft_plan *plan;
    const kiln_tensor *x, *win;
    kiln_tensor *y;
    int failed;
} stft_job;

static void stft_frames(void *arg, int64_t begin, int64_t end) {
    stft_job *j = arg;
    const stft_cfg *c = j->c;
    int64_t n = c->fl;
    size_t scr = sig_fft_scratch(j->plan);
    double *buf = malloc(sizeof(double) * (size_t)(2 * n + scr + 1));
    if (!buf) { j->failed = 1; return; }
    double *re = buf, *im = buf + n, *scratch = buf + 2 * n;
    int xdt = j->x->dtype;
    for (int64_t t = begin; t < end; t++) {
        int64_t b = t / c->frames, f = t % c->frames;
        for (int64_t k = 0; k < n; k++) {
            int64_t e = (b * c->len + f * c->step + k) * c->in_c;
            double w = j->win ? qe_load_f64(j->win->dtype, j->win->data, k) : 1.0;
            re[k] = qe_load_f64(xdt, j->x->data, e) * w;
            im[k] = c->in_c == 2 ? qe_load_f64(xdt, j->x->data, e + 1) * w : 0.0;
        }
        sig_fft_exec(j->plan, re, im, 0, scratch);
        int64_t ybase = t * c->bins * 2;
        for (int64_t k = 0; k < c->bins; k++) {
            qe_store_f64(j->y->dtype, j->y->data, ybase + 2 * k, re[k]);
            qe_store_f64(j->y->dtype, j->y->data, ybase + 2 * k + 1, im[k]);
        }
    }
    free(buf);
}

static kiln_status stft_compute(kiln_ctx *ctx) {
    stft_cfg c;
    KILN_TRY(stft_config(ctx, &c));
    stft_job j;
    memset(&j, 0, sizeof j);
    j.c = &c;
    j.x = kiln_input(ctx, 0);
    j.win = kiln_input(ctx, 2);
    j.y = kiln_output(ctx, 0);
    if (!j.y || c.batch * c.frames == 0) return KILN_OK;
    sig_fft_plan plan;
    if (sig_fft_plan_make(&plan, c.fl))
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for an FFT of length %lld", (long long)c.fl);
    j.plan = &plan;
    kiln_parallel_for(ctx, c.batch * c.frames, 1 + 4096 / (c.fl + 1), stft_frames, &j);
    sig_fft_plan_free(&plan);
    if (j.failed) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for STFT buffers");
    return KILN_OK;
}

const kiln_op kiln_ops_signal[] = {
    {"", "DFT", 17, 0, NULL, dft_infer, dft_compute, NULL},
    {"", "STFT", 17, 0, NULL, stft_infer, stft_compute, NULL},
    {"", "HannWindow", 17, 0, NULL, kiln_window_infer, kiln_window_compute, NULL},
    {"", "HammingWindow", 17, 0, NULL, kiln_window_infer, kiln_window_compute, NULL},
    {"", "BlackmanWindow", 17, 0, NULL, kiln_window_infer, kiln_window_compute, NULL},
    {"", "MelWeightMatrix", 17, 0, NULL, kiln_mel_infer, kiln_mel_compute, NULL},
    {0},
};
