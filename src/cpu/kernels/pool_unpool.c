/* MaxUnpool (scatter pooled values back to the positions MaxPool's Indices name) and
 * MaxRoiPool (max over a grid of bins inside each region of interest). Element values go
 * through float64, which holds every supported element type exactly. */
#include "pool_util.h"
#include "gemm_util.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

static int float_type(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || kcvt_is_half(dt);
}

/* ---- MaxUnpool ---- */

/* dims: the output shape; inferred: the unpooled shape the indices refer to (output_shape may
 * only enlarge it: the unpooled block then sits at the start of each dim, as in the reference). */
static kiln_status unpool_shape(kiln_ctx *ctx, int *rank, int64_t *dims, int64_t *inferred,
                                int *known) {
    kiln_tensor *X, *I;
    char s1[96], s2[96];
    KILN_TRY(kiln_need_input(ctx, 0, &X));
    KILN_TRY(kiln_need_input(ctx, 1, &I));
    kiln_tensor *OS = kiln_input(ctx, 2);
    *known = 0;
    if (!float_type(X->dtype))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d for input X", X->dtype);
    if (I->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input I has element type %d; expected int64",
                         I->dtype);
    int nk = 0;
    const int64_t *ks = kiln_attr_ints(ctx->node, "kernel_shape", &nk);
    if (!ks) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute kernel_shape is required");
    if (X->rank < 0) return KILN_OK;
    if (X->rank < 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input X has rank %d; expected [N, C, spatial...] (rank >= 3)", X->rank);
    if (I->rank >= 0 && !kiln_shape_equal(X, I)) {
        int same = I->rank == X->rank;
        for (int i = 0; same && i < X->rank; i++)
            same = I->dims[i] < 0 || X->dims[i] < 0 || I->dims[i] == X->dims[i];
        if (!same)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "I is %s but X is %s; they must match",
                             kconv_dims_str(I->rank, I->dims, s1, sizeof s1),
                             kconv_dims_str(X->rank, X->dims, s2, sizeof s2));
    }
    int nd = X->rank - 2;
    if (nk != nd)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "kernel_shape has %d values but X has %d spatial dims", nk, nd);
    *rank = X->rank;
    int np = 0, ns = 0;
    const int64_t *pads = kiln_attr_ints(ctx->node, "pads", &np);
    const int64_t *st = kiln_attr_ints(ctx->node, "strides", &ns);
    if ((pads && np != 2 * nd) || (st && ns != nd))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s has the wrong number of values",
                         pads && np != 2 * nd ? "pads" : "strides");
    inferred[0] = X->dims[0];
    inferred[1] = X->dims[1];
    for (int i = 0; i < nd; i++) {
        int64_t in = X->dims[i + 2], s = st ? st[i] : 1;
        if (s < 1 || ks[i] < 1 || (pads && (pads[i] < 0 || pads[nd + i] < 0)))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "strides and kernel_shape must be >= 1 and pads >= 0");
        inferred[i + 2] = in < 0 ? -1 : (in - 1) * s + ks[i] - (pads ? pads[i] + pads[nd + i] : 0);
        if (in >= 0 && inferred[i + 2] < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pads make spatial dim %d negative", i);
    }
    for (int i = 0; i < X->rank; i++) dims[i] = inferred[i];
    if (OS) {
        if (!OS->data) return KILN_OK; /* static inference without the value */
        int n = 0;
        KILN_TRY(kiln_read_ints(ctx, OS, dims, KILN_MAX_RANK, &n));
        if (n != X->rank)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "output_shape has %d values; expected %d", n, X->rank);
        for (int i = 0; i < n; i++)
            if (inferred[i] >= 0 && dims[i] < inferred[i])
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "output_shape %s is smaller than the unpooled shape %s",
                                 kconv_dims_str(n, dims, s1, sizeof s1),
                                 kconv_dims_str(n, inferred, s2, sizeof s2));
        if (dims[0] != inferred[0] || dims[1] != inferred[1])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "output_shape %s must keep X's batch and channel dims",
                             kconv_dims_str(n, dims, s1, sizeof s1));
    }
    *known = 1;
    return KILN_OK;
}

kiln_status kunpool_infer(kiln_ctx *ctx) {
    int rank, known;
    int64_t dims[KILN_MAX_RANK], inferred[KILN_MAX_RANK];
    KILN_TRY(unpool_shape(ctx, &rank, dims, inferred, &known));
    kiln_tensor *X = kiln_input(ctx, 0);
    if (!known) return kiln_set_output_unknown(ctx, 0, X->dtype);
    return kiln_set_output(ctx, 0, X->dtype, rank, dims);
}

kiln_status kunpool_compute(kiln_ctx *ctx) {
    kiln_tensor *X = kiln_input(ctx, 0), *I = kiln_input(ctx, 1), *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    int rank, known;
    int64_t dims[KILN_MAX_RANK], inferred[KILN_MAX_RANK];
    KILN_TRY(unpool_shape(ctx, &rank, dims, inferred, &known));
    int64_t n = kiln_numel(X), ny = kiln_numel(Y), ni = kiln_dims_numel(rank, inferred);
    size_t es = kiln_dtype_bytes(X->dtype, 1);
    memset(Y->data, 0, es * (size_t)ny);
    const int64_t *idx = I->data;
    int same = 1;
    for (int i = 0; i < rank; i++) same &= dims[i] == inferred[i];
    for (int64_t i = 0; i < n; i++) {
        int64_t k = idx[i];
        if (k < 0 || k >= ni)
            return KILN_FAIL(ctx, KILN_ERR_RUNTIME,
                             "index I[%lld] = %lld is outside the output (%lld elements)",
                             (long long)i, (long long)k, (long long)ni);
        if (!same) { /* re-address the unpooled position inside the larger output */
            int64_t o = 0, mul = 1, r = k;
            for (int d = rank - 1; d >= 0; d--) {
                o += (r % inferred[d]) * mul;
                r /= inferred[d];
                mul *= dims[d];
            }
            k = o;
        }
        memcpy((char *)Y->data + es * (size_t)k, (const char *)X->data + es * (size_t)i, es);
    }
    return KILN_OK;
}

/* ---- MaxRoiPool ---- */

static kiln_status roi_check(kiln_ctx *ctx, int64_t *dims, int *known) {
    kiln_tensor *X, *R;
    char s1[96];
    KILN_TRY(kiln_need_input(ctx, 0, &X));
    KILN_TRY(kiln_need_input(ctx, 1, &R));
    *known = 0;
    if (!float_type(X->dtype) || R->dtype != X->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "X and rois must share a float element type (got %d and %d)", X->dtype,
                         R->dtype);
    int np = 0;
    const int64_t *ps = kiln_attr_ints(ctx->node, "pooled_shape", &np);
    if (!ps || np != 2 || ps[0] < 1 || ps[1] < 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "attribute pooled_shape must hold two positive values");
    if (X->rank < 0 || R->rank < 0) return KILN_OK;
    if (X->rank != 4)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input X has rank %d; expected 4 (N, C, H, W)",
                         X->rank);
    if (R->rank != 2 || (R->dims[1] >= 0 && R->dims[1] != 5))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "rois is %s; expected [num_rois, 5] (batch index, x1, y1, x2, y2)",
                         kconv_dims_str(R->rank, R->dims, s1, sizeof s1));
    dims[0] = R->dims[0];
    dims[1] = X->dims[1];
    dims[2] = ps[0];
    dims[3] = ps[1];
    *known = 1;
    return KILN_OK;
}

kiln_status kroipool_infer(kiln_ctx *ctx) {
    int64_t dims[4];
    int known;
    KILN_TRY(roi_check(ctx, dims, &known));
    kiln_tensor *X = kiln_input(ctx, 0);
    if (!known) return kiln_set_output_unknown(ctx, 0, X->dtype);
    return kiln_set_output(ctx, 0, X->dtype, 4, dims);
}

kiln_status kroipool_compute(kiln_ctx *ctx) {
    kiln_tensor *X = kiln_input(ctx, 0), *R = kiln_input(ctx, 1), *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    int np;
    const int64_t *ps = kiln_attr_ints(ctx->node, "pooled_shape", &np);
    float scale = kiln_attr_float(ctx->node, "spatial_scale", 1.0f);
    int64_t N = X->dims[0], C = X->dims[1], H = X->dims[2], W = X->dims[3];
    int64_t PH = ps[0], PW = ps[1], nr = R->dims[0];
    int dt = X->dtype;
    for (int64_t r = 0; r < nr; r++) {
        double b = kiln_load_f64(dt, R->data, r * 5);
        if (!(b >= 0 && b < (double)N))
            return KILN_FAIL(ctx, KILN_ERR_RUNTIME,
                             "roi %lld has batch index %g, outside [0, %lld)", (long long)r, b,
                             (long long)N);
        int64_t bi = (int64_t)b;
        /* region corners scaled to the feature map, rounded half away from zero */
        int64_t x1 = (int64_t)roundf((float)kiln_load_f64(dt, R->data, r * 5 + 1) * scale);
        int64_t y1 = (int64_t)roundf((float)kiln_load_f64(dt, R->data, r * 5 + 2) * scale);
        int64_t x2 = (int64_t)roundf((float)kiln_load_f64(dt, R->data, r * 5 + 3) * scale);
        int64_t y2 = (int64_t)roundf((float)kiln_load_f64(dt, R->data, r * 5 + 4) * scale);
        int64_t rh = y2 - y1 + 1 > 1 ? y2 - y1 + 1 : 1, rw = x2 - x1 + 1 > 1 ? x2 - x1 + 1 : 1;
        float bh = (float)rh / (float)PH, bw = (float)rw / (float)PW;
        for (int64_t c = 0; c < C; c++) {
            int64_t plane = (bi * C + c) * H * W, obase = (r * C + c) * PH * PW;
            for (int64_t ph = 0; ph < PH; ph++)
                for (int64_t pw = 0; pw < PW; pw++) {
                    int64_t hs = (int64_t)floorf((float)ph * bh) + y1;
                    int64_t he = (int64_t)ceilf((float)(ph + 1) * bh) + y1;
                    int64_t ws = (int64_t)floorf((float)pw * bw) + x1;
                    int64_t we = (int64_t)ceilf((float)(pw + 1) * bw) + x1;
                    hs = hs < 0 ? 0 : hs > H ? H : hs;
                    he = he < 0 ? 0 : he > H ? H : he;
                    ws = ws < 0 ? 0 : ws > W ? W : ws;
                    we = we < 0 ? 0 : we > W ? W : we;
                    double m = 0.0;
                    if (he > hs && we > ws) {
                        m = -DBL_MAX;
                        for (int64_t h = hs; h < he; h++)
                            for (int64_t w = ws; w < we; w++) {
                                double v = kiln_load_f64(dt, X->data, plane + h * W + w);
                                if (v > m) m = v;
                            }
                    }
                    kiln_store_f64(dt, Y->data, obase + ph * PW + pw, m);
                }
        }
    }
    return KILN_OK;
}
