/* Slice: starts/ends/axes as attributes (opset 1-9) or inputs with steps (10+). Out-of-range
 * starts and ends are clamped as numpy does; negative steps walk backwards. The copy is one
 * strided copy whose source strides are step * stride (negative for reversed axes). */
#include "cpu/kernels/tensor_common.h"
#include "cpu/kernels/tensor_ops.h"
#include <stdio.h>

typedef struct {
    int64_t start[KILN_MAX_RANK], step[KILN_MAX_RANK], len[KILN_MAX_RANK];
    int known[KILN_MAX_RANK]; /* 0: this dim's length cannot be told yet (static inference) */
} slice_plan;

/* reads one of the optional list inputs (10+) or attributes (1-9) */
static kiln_status slice_list(kiln_ctx *ctx, int input, const char *attr, int64_t *vals, int *n,
                              int *present, int *known) {
    *present = 0;
    *known = 1;
    *n = 0;
    if (ctx->opset < 10) {
        if (!kiln_has_attr(ctx->node, attr)) return KILN_OK;
        int cnt = 0;
        const int64_t *a = kiln_attr_ints(ctx->node, attr, &cnt);
        if (cnt > KILN_MAX_RANK)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "'%s' has %d values, too many", attr, cnt);
        for (int i = 0; i < cnt; i++) vals[i] = a[i];
        *n = cnt;
        *present = 1;
        return KILN_OK;
    }
    kiln_tensor *t = kiln_input(ctx, input);
    if (!t) return KILN_OK;
    *present = 1;
    if (!kiln_tk_has_values(ctx, t)) {
        *known = 0;
        return KILN_OK;
    }
    char what[32];
    snprintf(what, sizeof what, "input '%s'", attr);
    return kiln_tk_read_ints(ctx, t, what, vals, KILN_MAX_RANK, n);
}

static kiln_status slice_plan_make(kiln_ctx *ctx, const kiln_tensor *x, slice_plan *p) {
    int r = x->rank;
    int64_t starts[KILN_MAX_RANK], ends[KILN_MAX_RANK], axes[KILN_MAX_RANK], steps[KILN_MAX_RANK];
    int ns, ne, na, nt, ps, pe, pa, pt, ks, ke, ka, kt;
    KILN_TRY(slice_list(ctx, 1, "starts", starts, &ns, &ps, &ks));
    KILN_TRY(slice_list(ctx, 2, "ends", ends, &ne, &pe, &ke));
    KILN_TRY(slice_list(ctx, 3, "axes", axes, &na, &pa, &ka));
    KILN_TRY(slice_list(ctx, 4, "steps", steps, &nt, &pt, &kt));
    if (!ps || !pe) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "starts and ends are required");
    for (int i = 0; i < r; i++) {
        p->start[i] = 0;
        p->step[i] = 1;
        p->len[i] = x->dims[i];
        p->known[i] = 1;
    }
    if (!ka) { /* which axes are sliced is unknown: no dim can be trusted */
        for (int i = 0; i < r; i++) p->known[i] = 0;
        return KILN_OK;
    }
    if (!ks || !ke || !kt) { /* axes known, bounds not */
        int n = pa ? na : (ks ? ns : (ke ? ne : -1));
        for (int i = 0; i < r; i++) p->known[i] = n < 0 ? 0 : p->known[i];
        if (n < 0) return KILN_OK;
        for (int i = 0; i < n; i++) {
            int a;
            KILN_TRY(kiln_norm_axis(ctx, pa ? axes[i] : i, r, "axes", &a));
            p->known[a] = 0;
        }
        return KILN_OK;
    }
    if (ns != ne)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "starts has %d values but ends has %d", ns, ne);
    if (pa && na != ns)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axes has %d values but starts has %d", na, ns);
    if (pt && nt != ns)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "steps has %d values but starts has %d", nt, ns);
    int seen[KILN_MAX_RANK] = {0};
    for (int i = 0; i < ns; i++) {
        int a;
        if (pa) {
            KILN_TRY(kiln_norm_axis(ctx, axes[i], r, "axes", &a));
        } else {
            if (i >= r)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%d starts given for an input of rank %d", ns, r);
            a = i;
        }
        if (seen[a]) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "axis %d is sliced twice", a);
        seen[a] = 1;
        int64_t step = pt ? steps[i] : 1, d = x->dims[a];
        if (step == 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "steps[%d] is 0", i);
        p->step[a] = step;
        if (d < 0) {
            p->known[a] = 0;
            continue;
        }
        int64_t s = starts[i], e = ends[i];
        if (s < 0) s += d;
        if (e < 0) e += d;
        if (step > 0) {
            s = s < 0 ? 0 : (s > d ? d : s);
            e = e < 0 ? 0 : (e > d ? d : e);
            p->len[a] = e > s ? (e - s - 1) / step + 1 : 0;
        } else {
            s = s < 0 ? 0 : (s > d - 1 ? d - 1 : s);
            e = e < -1 ? -1 : (e > d - 1 ? d - 1 : e);
            int64_t back = step == INT64_MIN ? INT64_MAX : -step;
            p->len[a] = (d > 0 && s > e) ? (s - e - 1) / back + 1 : 0;
        }
        p->start[a] = p->len[a] > 0 ? s : 0;
    }
    return KILN_OK;
}

kiln_status kiln_tk_slice_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, x->dtype);
    slice_plan p;
    KILN_TRY(slice_plan_make(ctx, x, &p));
    int64_t out[KILN_MAX_RANK];
    for (int i = 0; i < x->rank; i++) out[i] = p.known[i] ? p.len[i] : KILN_DIM_UNKNOWN;
    return kiln_set_output(ctx, 0, x->dtype, x->rank, out);
}

kiln_status kiln_tk_slice_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    size_t elem;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    slice_plan p;
    KILN_TRY(slice_plan_make(ctx, x, &p));
    int r = x->rank;
    int64_t in_str[KILN_MAX_RANK], out_str[KILN_MAX_RANK], src_str[KILN_MAX_RANK], off = 0;
    kiln_strides(r, x->dims, in_str);
    kiln_strides(r, p.len, out_str);
    for (int i = 0; i < r; i++) {
        if (p.len[i] == 0) return KILN_OK;
        off += p.start[i] * in_str[i];
        src_str[i] = p.len[i] > 1 ? p.step[i] * in_str[i] : in_str[i];
    }
    kiln_tk_strided_copy(ctx, elem, r, p.len, y->data, out_str, (const char *)x->data + (size_t)off * elem,
                         src_str);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}
