/* Row-structured ops over the last axes: Trilu (keep a triangle), EyeLike (an identity-like
 * matrix) and ReverseSequence (reverse each batch entry's first len steps). */
#include "cpu/kernels/tensor_common.h"
#include "cpu/kernels/tensor_ops.h"
#include <string.h>

/* ---- Trilu ---- */

static kiln_status trilu_k(kiln_ctx *ctx, int64_t *k, int *known) {
    *k = 0;
    *known = 1;
    kiln_tensor *kt = kiln_input(ctx, 1);
    if (!kt) return KILN_OK;
    if (kt->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input 'k' must be int64, got %s",
                         kiln_dtype_name((kiln_dtype)kt->dtype));
    if (!kiln_tk_has_values(ctx, kt)) {
        *known = 0;
        return KILN_OK;
    }
    return kiln_tk_read_scalar_i64(ctx, kt, "input 'k'", k);
}

kiln_status kiln_tk_trilu_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int64_t k;
    int known;
    KILN_TRY(trilu_k(ctx, &k, &known));
    if (x->rank >= 0 && x->rank < 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must have rank >= 2, got %d", x->rank);
    return kiln_set_output_like(ctx, 0, x);
}

typedef struct {
    char *dst;
    const char *src;
    size_t elem;
    int64_t n, m, k;
    int upper;
} trilu_job;

static void trilu_rows(void *arg, int64_t begin, int64_t end) {
    const trilu_job *j = arg;
    size_t row = (size_t)j->m * j->elem;
    for (int64_t r = begin; r < end; r++) {
        int64_t i = r % j->n, diag = i + j->k; /* |k| is clamped, so no overflow */
        int64_t lo, hi;                       /* kept columns [lo, hi) */
        if (j->upper) {
            lo = diag < 0 ? 0 : (diag > j->m ? j->m : diag);
            hi = j->m;
        } else {
            lo = 0;
            hi = diag + 1 < 0 ? 0 : (diag + 1 > j->m ? j->m : diag + 1);
        }
        char *d = j->dst + (size_t)r * row;
        const char *s = j->src + (size_t)r * row;
        memset(d, 0, (size_t)lo * j->elem);
        memcpy(d + lo * j->elem, s + lo * j->elem, (size_t)(hi - lo) * j->elem);
        memset(d + hi * j->elem, 0, (size_t)(j->m - hi) * j->elem);
    }
}

kiln_status kiln_tk_trilu_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    trilu_job j;
    int known;
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &j.elem));
    KILN_TRY(trilu_k(ctx, &j.k, &known));
    j.n = x->dims[x->rank - 2];
    j.m = x->dims[x->rank - 1];
    int64_t lim = j.n + j.m + 1;
    if (j.k > lim) j.k = lim;
    if (j.k < -lim) j.k = -lim;
    j.upper = kiln_attr_int(ctx->node, "upper", 1) != 0;
    j.dst = y->data;
    j.src = x->data;
    int64_t rows = kiln_dims_numel(x->rank - 1, x->dims);
    if (kiln_numel(x) <= 0) return KILN_OK;
    kiln_tk_parallel(ctx, rows, (double)j.m * (double)j.elem, trilu_rows, &j);
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}

/* ---- EyeLike ---- */

static int eyelike_type_ok(int dt) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: case KILN_DTYPE_DOUBLE: case KILN_DTYPE_FLOAT16: case KILN_DTYPE_BFLOAT16:
    case KILN_DTYPE_INT8: case KILN_DTYPE_INT16: case KILN_DTYPE_INT32: case KILN_DTYPE_INT64:
    case KILN_DTYPE_UINT8: case KILN_DTYPE_UINT16: case KILN_DTYPE_UINT32: case KILN_DTYPE_UINT64:
    case KILN_DTYPE_BOOL:
        return 1;
    default:
        return 0;
    }
}

static kiln_status eyelike_dtype(kiln_ctx *ctx, const kiln_tensor *x, int *dt) {
    *dt = (int)kiln_attr_int(ctx->node, "dtype", x->dtype);
    if (!eyelike_type_ok(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported input type %s",
                         kiln_dtype_name((kiln_dtype)x->dtype));
    if (!eyelike_type_ok(*dt))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported output dtype %d", *dt);
    return KILN_OK;
}

kiln_status kiln_tk_eyelike_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    int dt;
    KILN_TRY(eyelike_dtype(ctx, x, &dt));
    if (x->rank < 0) {
        int64_t unk[2] = {KILN_DIM_UNKNOWN, KILN_DIM_UNKNOWN};
        return kiln_set_output(ctx, 0, dt, 2, unk);
    }
    if (x->rank != 2) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must have rank 2, got %d", x->rank);
    return kiln_set_output(ctx, 0, dt, 2, x->dims);
}

static void store_one(int dt, void *p) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: *(float *)p = 1.0f; break;
    case KILN_DTYPE_DOUBLE: *(double *)p = 1.0; break;
    case KILN_DTYPE_FLOAT16: *(uint16_t *)p = 0x3c00; break;
    case KILN_DTYPE_BFLOAT16: *(uint16_t *)p = 0x3f80; break;
    case KILN_DTYPE_INT16: case KILN_DTYPE_UINT16: *(uint16_t *)p = 1; break;
    case KILN_DTYPE_INT32: case KILN_DTYPE_UINT32: *(uint32_t *)p = 1; break;
    case KILN_DTYPE_INT64: case KILN_DTYPE_UINT64: *(uint64_t *)p = 1; break;
    default: *(uint8_t *)p = 1; break;
    }
}

kiln_status kiln_tk_eyelike_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!y) return KILN_OK;
    int dt;
    KILN_TRY(eyelike_dtype(ctx, x, &dt));
    int64_t n = y->dims[0], m = y->dims[1], k = kiln_attr_int(ctx->node, "k", 0);
    size_t elem = kiln_tk_elem_size(dt);
    if (n * m <= 0) return KILN_OK;
    memset(y->data, 0, (size_t)(n * m) * elem);
    if (k >= m || k <= -n) return KILN_OK;
    for (int64_t i = k < 0 ? -k : 0; i < n && i + k < m; i++)
        store_one(dt, (char *)y->data + (size_t)(i * m + i + k) * elem);
    return KILN_OK;
}

/* ---- ReverseSequence ---- */

typedef struct {
    int batch_axis, time_axis;
} revseq_axes;

static kiln_status revseq_check(kiln_ctx *ctx, const kiln_tensor *x, const kiln_tensor *lens,
                                revseq_axes *ax) {
    ax->batch_axis = (int)kiln_attr_int(ctx->node, "batch_axis", 1);
    ax->time_axis = (int)kiln_attr_int(ctx->node, "time_axis", 0);
    if ((ax->batch_axis != 0 && ax->batch_axis != 1) || (ax->time_axis != 0 && ax->time_axis != 1) ||
        ax->batch_axis == ax->time_axis)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "batch_axis (%d) and time_axis (%d) must be 0 and 1",
                         ax->batch_axis, ax->time_axis);
    if (x->rank >= 0 && x->rank < 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must have rank >= 2, got %d", x->rank);
    if (lens->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sequence_lens must be int64, got %s",
                         kiln_dtype_name((kiln_dtype)lens->dtype));
    if (lens->rank >= 0 && lens->rank != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sequence_lens must be 1-D, got rank %d", lens->rank);
    if (x->rank < 0 || lens->rank < 0) return KILN_OK;
    int64_t b = x->dims[ax->batch_axis], t = x->dims[ax->time_axis];
    if (kiln_tk_dims_conflict(b, lens->dims[0]))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sequence_lens has %lld entries but the batch is %lld",
                         (long long)lens->dims[0], (long long)b);
    if (kiln_tk_has_values(ctx, lens) && t >= 0) {
        const int64_t *l = lens->data;
        for (int64_t i = 0; i < lens->dims[0]; i++)
            if (l[i] < 0 || l[i] > t)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sequence_lens[%lld] = %lld is outside [0, %lld]",
                                 (long long)i, (long long)l[i], (long long)t);
    }
    return KILN_OK;
}

kiln_status kiln_tk_reverse_sequence_infer(kiln_ctx *ctx) {
    kiln_tensor *x, *lens;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &lens));
    revseq_axes ax;
    KILN_TRY(revseq_check(ctx, x, lens, &ax));
    return kiln_set_output_like(ctx, 0, x);
}

kiln_status kiln_tk_reverse_sequence_compute(kiln_ctx *ctx) {
    kiln_tensor *x, *lens, *y = kiln_output(ctx, 0);
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_need_input(ctx, 1, &lens));
    if (!y) return KILN_OK;
    revseq_axes ax;
    size_t elem;
    KILN_TRY(revseq_check(ctx, x, lens, &ax));
    KILN_TRY(kiln_tk_movable(ctx, x, 0, &elem));
    if (kiln_numel(x) <= 0) return KILN_OK;
    int64_t str[KILN_MAX_RANK];
    kiln_strides(x->rank, x->dims, str);
    int64_t nb = x->dims[ax.batch_axis], nt = x->dims[ax.time_axis];
    int64_t sb = str[ax.batch_axis], st = str[ax.time_axis], inner = str[1];
    const int64_t *l = lens->data;
    size_t run = (size_t)inner * elem;
    for (int64_t b = 0; b < nb; b++) {
        for (int64_t t = 0; t < nt; t++) {
            int64_t src_t = t < l[b] ? l[b] - 1 - t : t;
            memcpy((char *)y->data + (size_t)(b * sb + t * st) * elem,
                   (const char *)x->data + (size_t)(b * sb + src_t * st) * elem, run);
        }
    }
    if (x->dtype == KILN_DTYPE_STRING) return kiln_tk_own_strings(ctx, y);
    return KILN_OK;
}
