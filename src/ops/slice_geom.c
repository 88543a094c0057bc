/* Slice's geometry: which elements of each axis a Slice keeps, read from starts / ends / axes /
 * steps (inputs from opset 10, attributes before) and clamped as the ONNX spec and numpy do.
 * Slice's inference and every provider's Slice and SliceGrad kernels read it from here, so the
 * clamping rules (negative steps included) exist once. */
#include "op.h"
#include <stdio.h>

/* One of the lists, from an input or (attrs) an attribute. present: given at all; known: its
 * values can be read now (in static inference a computed list has none yet). */
static kiln_status read_list(kiln_ctx *ctx, int input, int attrs, const char *name, int64_t *vals,
                             int *n, int *present, int *known) {
    *present = 0;
    *known = 1;
    *n = 0;
    if (attrs) {
        if (!kiln_has_attr(ctx->node, name)) return KILN_OK;
        int cnt = 0;
        const int64_t *a = kiln_attr_ints(ctx->node, name, &cnt);
        if (cnt > KILN_MAX_RANK)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "'%s' has %d values, too many", name, cnt);
        for (int i = 0; i < cnt; i++) vals[i] = a[i];
        *n = cnt;
        *present = 1;
        return KILN_OK;
    }
    kiln_tensor *t = input < ctx->n_in ? kiln_input(ctx, input) : NULL;
    if (!t) return KILN_OK;
    *present = 1;
    if (t->rank < 0 || (!t->data && kiln_numel(t) != 0)) {
        if (ctx->static_mode) {
            *known = 0;
            return KILN_OK;
        }
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' has no data", name);
    }
    if (t->dtype != KILN_DTYPE_INT64 && t->dtype != KILN_DTYPE_INT32)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' must be int64 (or int32), got %s", name,
                         kiln_dtype_name((kiln_dtype)t->dtype));
    if (t->rank > 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input '%s' must be 1-D, got rank %d", name, t->rank);
    return kiln_read_ints(ctx, t, vals, KILN_MAX_RANK, n);
}

kiln_status kiln_slice_geometry(kiln_ctx *ctx, int first_input, int attrs, int r, const int64_t *dims,
                                kiln_slice_geom *p) {
    int64_t starts[KILN_MAX_RANK], ends[KILN_MAX_RANK], axes[KILN_MAX_RANK], steps[KILN_MAX_RANK];
    int ns, ne, na, nt, ps, pe, pa, pt, ks, ke, ka, kt;
    KILN_TRY(read_list(ctx, first_input, attrs, "starts", starts, &ns, &ps, &ks));
    KILN_TRY(read_list(ctx, first_input + 1, attrs, "ends", ends, &ne, &pe, &ke));
    KILN_TRY(read_list(ctx, first_input + 2, attrs, "axes", axes, &na, &pa, &ka));
    KILN_TRY(read_list(ctx, first_input + 3, attrs, "steps", steps, &nt, &pt, &kt));
    if (!ps || !pe) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "starts and ends are required");
    for (int i = 0; i < r; i++) {
        p->start[i] = 0;
        p->step[i] = 1;
        p->len[i] = dims[i];
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
        int64_t step = pt ? steps[i] : 1, d = dims[a];
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
