/* Det: determinants of the trailing square matrices, by LU decomposition with partial pivoting
 * in float64 (whatever the element type), one matrix per parallel work item. */
#include "gemm_util.h"
#include <math.h>
#include <stdlib.h>

static kiln_status det_infer(kiln_ctx *ctx) {
    kiln_tensor *X;
    char buf[96];
    KILN_TRY(kiln_need_input(ctx, 0, &X));
    int dt = X->dtype;
    if (dt != KILN_DTYPE_FLOAT && dt != KILN_DTYPE_DOUBLE && !kcvt_is_half(dt))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "unsupported element type %d for input X", dt);
    if (X->rank < 0) return kiln_set_output_unknown(ctx, 0, dt);
    int r = X->rank;
    if (r < 2 || (X->dims[r - 1] >= 0 && X->dims[r - 2] >= 0 && X->dims[r - 1] != X->dims[r - 2]))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input X is %s; Det needs square matrices in the last two dims",
                         kgemm_dims_str(r, X->dims, buf, sizeof buf));
    return kiln_set_output(ctx, 0, dt, r - 2, X->dims);
}

typedef struct det_job {
    const kiln_tensor *X;
    void *y;
    int64_t n;
    volatile int failed;
} det_job;

static void det_run(void *arg, int64_t b0, int64_t b1) {
    det_job *j = arg;
    int64_t n = j->n;
    double *a = malloc(sizeof(double) * (size_t)(n * n + 1));
    if (!a) {
        j->failed = 1;
        return;
    }
    for (int64_t b = b0; b < b1; b++) {
        for (int64_t i = 0; i < n * n; i++) a[i] = kiln_load_f64(j->X->dtype, j->X->data, b * n * n + i);
        double det = 1.0;
        for (int64_t c = 0; c < n && det != 0.0; c++) {
            int64_t p = c;
            for (int64_t r = c + 1; r < n; r++)
                if (fabs(a[r * n + c]) > fabs(a[p * n + c])) p = r;
            if (a[p * n + c] == 0.0) {
                det = 0.0;
                break;
            }
            if (p != c) {
                for (int64_t k = 0; k < n; k++) {
                    double t = a[c * n + k];
                    a[c * n + k] = a[p * n + k];
                    a[p * n + k] = t;
                }
                det = -det;
            }
            double piv = a[c * n + c];
            det *= piv;
            for (int64_t r = c + 1; r < n; r++) {
                double f = a[r * n + c] / piv;
                if (f == 0.0) continue;
                for (int64_t k = c + 1; k < n; k++) a[r * n + k] -= f * a[c * n + k];
            }
        }
        kiln_store_f64(j->X->dtype, j->y, b, det);
    }
    free(a);
}

static kiln_status det_compute(kiln_ctx *ctx) {
    kiln_tensor *X = kiln_input(ctx, 0), *Y = kiln_output(ctx, 0);
    if (!Y) return KILN_OK;
    det_job j = {X, Y->data, X->dims[X->rank - 1], 0};
    int64_t batch = kiln_numel(Y);
    double cost = (double)j.n * j.n * j.n + j.n * j.n;
    kiln_parallel_for(ctx, batch, kpar_grain(batch, batch * cost), det_run, &j);
    return j.failed ? KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory in Det") : KILN_OK;
}

const kiln_op kiln_ops_linalg[] = {
    {"", "Det", 11, 0, NULL, det_infer, det_compute, NULL},
    {0},
};
