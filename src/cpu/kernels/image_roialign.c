/* RoiAlign (opsets 10/16/22): bilinear samples on a regular grid inside each bin, averaged or
 * maxed. Opset 10 has no coordinate_transformation_mode and behaves as output_half_pixel. The max
 * mode takes the largest weighted corner term, as the reference and onnxruntime do. */
#include "image_kernels.h"
#include "quant_elem.h"
#include <stdlib.h>

typedef struct roi_attrs {
    int max_mode, half_pixel;
    int64_t oh, ow, sampling;
    double spatial_scale;
} roi_attrs;

static kiln_status roi_parse(kiln_ctx *ctx, roi_attrs *a) {
    const kiln_node *nd = ctx->node;
    const char *mode = kiln_attr_string(nd, "mode", "avg");
    if (!strcmp(mode, "avg")) a->max_mode = 0;
    else if (!strcmp(mode, "max")) a->max_mode = 1;
    else return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported mode '%s'", mode);
    a->half_pixel = 0;
    if (ctx->opset >= 16) {
        const char *ct = kiln_attr_string(nd, "coordinate_transformation_mode", "half_pixel");
        if (!strcmp(ct, "half_pixel")) a->half_pixel = 1;
        else if (strcmp(ct, "output_half_pixel"))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "unsupported coordinate_transformation_mode '%s'", ct);
    }
    a->oh = kiln_attr_int(nd, "output_height", 1);
    a->ow = kiln_attr_int(nd, "output_width", 1);
    a->sampling = kiln_attr_int(nd, "sampling_ratio", 0);
    a->spatial_scale = kiln_attr_float(nd, "spatial_scale", 1.0f);
    if (a->oh < 1 || a->ow < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output_height and output_width must be >= 1");
    if (a->sampling < 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sampling_ratio must be >= 0");
    return KILN_OK;
}

kiln_status kiln_roi_align_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *rois, *bi;
    char b1[96], b2[96];
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &rois));
    KILN_TRY(kiln_need_input(ctx, 2, &bi));
    roi_attrs a;
    KILN_TRY(roi_parse(ctx, &a));
    if (!qe_is_float(x->dtype) || !qe_is_float(rois->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "X and rois must be float tensors, not %s / %s",
                         kiln_dtype_name(x->dtype), kiln_dtype_name(rois->dtype));
    KILN_TRY(kiln_check_dtype(ctx, bi, 2, 2, KILN_DTYPE_INT64, KILN_DTYPE_INT32));
    if (x->rank >= 0 && x->rank != 4)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X %s must be 4-D", QE_SHAPE(x, b1));
    if (rois->rank >= 0 && (rois->rank != 2 || (rois->dims[1] >= 0 && rois->dims[1] != 4)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "rois %s must be [num_rois, 4]",
                         QE_SHAPE(rois, b1));
    if (bi->rank >= 0 && rois->rank == 2 &&
        (bi->rank != 1 || (bi->dims[0] >= 0 && rois->dims[0] >= 0 && bi->dims[0] != rois->dims[0])))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "batch_indices %s must be 1-D with one entry per roi (rois %s)",
                         QE_SHAPE(bi, b1), QE_SHAPE(rois, b2));
    int64_t dims[4] = {rois->rank == 2 ? rois->dims[0] : KILN_DIM_UNKNOWN,
                       x->rank == 4 ? x->dims[1] : KILN_DIM_UNKNOWN, a.oh, a.ow};
    return kiln_set_output(ctx, 0, x->dtype, 4, dims);
}

typedef struct roi_job {
    roi_attrs a;
    const kiln_tensor *x, *rois, *bi;
    kiln_tensor *y;
    int64_t C, H, W;
    int failed;
} roi_job;

typedef struct roi_sample {
    int64_t pos[4];
    double w[4];
} roi_sample;

static void roi_range(void *arg, int64_t begin, int64_t end) {
    roi_job *j = arg;
    const roi_attrs *a = &j->a;
    int64_t H = j->H, W = j->W, C = j->C, oh = a->oh, ow = a->ow;
    for (int64_t r = begin; r < end; r++) {
        double off = a->half_pixel ? 0.5 : 0.0;
        double x0 = qe_load_f64(j->rois->dtype, j->rois->data, r * 4 + 0) * a->spatial_scale - off;
        double y0 = qe_load_f64(j->rois->dtype, j->rois->data, r * 4 + 1) * a->spatial_scale - off;
        double x1 = qe_load_f64(j->rois->dtype, j->rois->data, r * 4 + 2) * a->spatial_scale - off;
        double y1 = qe_load_f64(j->rois->dtype, j->rois->data, r * 4 + 3) * a->spatial_scale - off;
        double rw = x1 - x0, rh = y1 - y0;
        if (!a->half_pixel) {
            if (rw < 1.0) rw = 1.0;
            if (rh < 1.0) rh = 1.0;
        }
        double bh = rh / (double)oh, bw = rw / (double)ow;
        int64_t gh = a->sampling > 0 ? a->sampling : (int64_t)ceil(rh / (double)oh);
        int64_t gw = a->sampling > 0 ? a->sampling : (int64_t)ceil(rw / (double)ow);
        if (gh < 0) gh = 0;
        if (gw < 0) gw = 0;
        if (gh > 4096 || gw > 4096) { j->failed = 2; return; }
        int64_t count = gh * gw > 1 ? gh * gw : 1;
        int64_t ns = oh * ow * gh * gw;
        roi_sample *s = malloc(sizeof(roi_sample) * (size_t)(ns + 1));
        if (!s) { j->failed = 1; return; }
        int64_t si = 0;
        for (int64_t ph = 0; ph < oh; ph++)
            for (int64_t pw = 0; pw < ow; pw++)
                for (int64_t iy = 0; iy < gh; iy++) {
                    double yy = y0 + (double)ph * bh + ((double)iy + 0.5) * bh / (double)gh;
                    for (int64_t ix = 0; ix < gw; ix++, si++) {
                        double xx = x0 + (double)pw * bw + ((double)ix + 0.5) * bw / (double)gw;
                        roi_sample *p = &s[si];
                        if (yy < -1.0 || yy > (double)H || xx < -1.0 || xx > (double)W) {
                            memset(p, 0, sizeof *p);
                            continue;
                        }
                        double y = yy < 0 ? 0 : yy, x = xx < 0 ? 0 : xx;
                        int64_t yl = (int64_t)y, xl = (int64_t)x, yh, xh;
                        if (yl >= H - 1) { yh = yl = H - 1; y = (double)yl; } else yh = yl + 1;
                        if (xl >= W - 1) { xh = xl = W - 1; x = (double)xl; } else xh = xl + 1;
                        double ly = y - (double)yl, lx = x - (double)xl, hy = 1.0 - ly, hx = 1.0 - lx;
                        p->pos[0] = yl * W + xl;
                        p->pos[1] = yl * W + xh;
                        p->pos[2] = yh * W + xl;
                        p->pos[3] = yh * W + xh;
                        p->w[0] = hy * hx;
                        p->w[1] = hy * lx;
                        p->w[2] = ly * hx;
                        p->w[3] = ly * lx;
                    }
                }
        int64_t b = kiln_load_i64(j->bi->dtype, j->bi->data, r);
        for (int64_t c = 0; c < C; c++) {
            int64_t xbase = (b * C + c) * H * W, ybase = (r * C + c) * oh * ow;
            const roi_sample *p = s;
            for (int64_t q = 0; q < oh * ow; q++) {
                double out = 0.0;
                int first = 1;
                for (int64_t t = 0; t < gh * gw; t++, p++) {
                    double v[4];
                    for (int u = 0; u < 4; u++)
                        v[u] = p->w[u] * qe_load_f64(j->x->dtype, j->x->data, xbase + p->pos[u]);
                    if (!a->max_mode) {
                        out += v[0] + v[1] + v[2] + v[3];
                    } else {
                        double m = fmax(fmax(v[0], v[1]), fmax(v[2], v[3]));
                        out = first ? m : fmax(out, m);
                        first = 0;
                    }
                }
                if (!a->max_mode) out /= (double)count;
                qe_store_f64(j->y->dtype, j->y->data, ybase + q, out);
            }
        }
        free(s);
    }
}

kiln_status kiln_roi_align_compute(kiln_ctx *ctx) {
    roi_job j;
    memset(&j, 0, sizeof j);
    KILN_TRY(roi_parse(ctx, &j.a));
    j.x = kiln_input(ctx, 0);
    j.rois = kiln_input(ctx, 1);
    j.bi = kiln_input(ctx, 2);
    j.y = kiln_output(ctx, 0);
    if (!j.y) return KILN_OK;
    j.C = j.x->dims[1];
    j.H = j.x->dims[2];
    j.W = j.x->dims[3];
    int64_t R = j.rois->dims[0];
    for (int64_t r = 0; r < R; r++) {
        int64_t b = kiln_load_i64(j.bi->dtype, j.bi->data, r);
        if (b < 0 || b >= j.x->dims[0])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "batch_indices[%lld] = %lld is outside [0, %lld)", (long long)r,
                             (long long)b, (long long)j.x->dims[0]);
    }
    if (R == 0 || j.C == 0) return KILN_OK;
    if (j.H == 0 || j.W == 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "X has an empty spatial extent");
    kiln_parallel_for(ctx, R, 1, roi_range, &j);
    if (j.failed == 1) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for RoiAlign samples");
    if (j.failed == 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "a roi needs more than 4096 samples per bin side");
    return KILN_OK;
}
