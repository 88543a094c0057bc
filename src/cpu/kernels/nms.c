/* NonMaxSuppression (opsets 10/11): greedy selection per (batch, class) by descending score (ties:
 * lower box index first), suppressing boxes whose IoU with a selected one exceeds the threshold.
 * Output rows are (batch, class, box) in batch, class, selection order; the row count is only
 * known after computing, so the op is dynamic. */
#include "quant_elem.h"
#include <stdlib.h>

typedef struct nms_cand {
    float score;
    int64_t idx;
} nms_cand;

static int cand_cmp(const void *pa, const void *pb) {
    const nms_cand *a = pa, *b = pb;
    if (a->score > b->score) return -1;
    if (a->score < b->score) return 1;
    return (a->idx > b->idx) - (a->idx < b->idx);
}

typedef struct nms_box {
    float x0, y0, x1, y1, area;
} nms_box;

static nms_box box_at(const kiln_tensor *boxes, int64_t base, int center) {
    float v[4];
    for (int i = 0; i < 4; i++) v[i] = qe_load_f32(boxes->dtype, boxes->data, base + i);
    nms_box b;
    if (center) {
        b.x0 = v[0] - v[2] / 2.0f;
        b.x1 = v[0] + v[2] / 2.0f;
        b.y0 = v[1] - v[3] / 2.0f;
        b.y1 = v[1] + v[3] / 2.0f;
    } else { /* [y1, x1, y2, x2], corners in either order */
        b.y0 = fminf(v[0], v[2]);
        b.y1 = fmaxf(v[0], v[2]);
        b.x0 = fminf(v[1], v[3]);
        b.x1 = fmaxf(v[1], v[3]);
    }
    b.area = (b.x1 - b.x0) * (b.y1 - b.y0);
    return b;
}

static int suppresses(const nms_box *a, const nms_box *b, float iou_threshold) {
    float ix0 = fmaxf(a->x0, b->x0), ix1 = fminf(a->x1, b->x1);
    if (ix1 <= ix0) return 0;
    float iy0 = fmaxf(a->y0, b->y0), iy1 = fminf(a->y1, b->y1);
    if (iy1 <= iy0) return 0;
    float inter = (ix1 - ix0) * (iy1 - iy0);
    if (inter <= 0.0f) return 0;
    float uni = a->area + b->area - inter;
    if (a->area <= 0.0f || b->area <= 0.0f || uni <= 0.0f) return 0;
    return inter / uni > iou_threshold;
}

typedef struct nms_job {
    const kiln_tensor *boxes, *scores;
    int64_t B, C, max_out;
    int has_score_threshold, center;
    float iou_threshold, score_threshold;
    int64_t *sel;    /* [pairs * cap] selected box indices */
    int64_t *nsel;   /* [pairs] */
    int64_t cap;
    int failed;
} nms_job;

static void nms_pairs(void *arg, int64_t begin, int64_t end) {
    nms_job *j = arg;
    nms_cand *cand = malloc(sizeof(nms_cand) * (size_t)(j->B + 1));
    nms_box *chosen = malloc(sizeof(nms_box) * (size_t)(j->cap + 1));
    if (!cand || !chosen) {
        free(cand);
        free(chosen);
        j->failed = 1;
        return;
    }
    for (int64_t pr = begin; pr < end; pr++) {
        int64_t b = pr / j->C;
        int64_t nc = 0;
        for (int64_t i = 0; i < j->B; i++) {
            float s = qe_load_f32(j->scores->dtype, j->scores->data, pr * j->B + i);
            if (j->has_score_threshold && !(s > j->score_threshold)) continue;
            cand[nc].score = s;
            cand[nc].idx = i;
            nc++;
        }
        qsort(cand, (size_t)nc, sizeof *cand, cand_cmp);
        int64_t ns = 0;
        for (int64_t c = 0; c < nc && ns < j->max_out; c++) {
            nms_box bx = box_at(j->boxes, (b * j->B + cand[c].idx) * 4, j->center);
            int keep = 1;
            for (int64_t s = 0; s < ns && keep; s++)
                if (suppresses(&bx, &chosen[s], j->iou_threshold)) keep = 0;
            if (!keep) continue;
            chosen[ns] = bx;
            j->sel[pr * j->cap + ns] = cand[c].idx;
            ns++;
        }
        j->nsel[pr] = ns;
    }
    free(cand);
    free(chosen);
}

static kiln_status nms_check(kiln_ctx *ctx, const kiln_tensor *boxes, const kiln_tensor *scores) {
    char b1[96], b2[96];
    if (!qe_is_float(boxes->dtype) || !qe_is_float(scores->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "boxes and scores must be float tensors");
    if (boxes->rank >= 0 && (boxes->rank != 3 || (boxes->dims[2] >= 0 && boxes->dims[2] != 4)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "boxes %s must be [batches, boxes, 4]",
                         QE_SHAPE(boxes, b1));
    if (scores->rank >= 0 && scores->rank != 3)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scores %s must be [batches, classes, boxes]",
                         QE_SHAPE(scores, b1));
    if (boxes->rank == 3 && scores->rank == 3) {
        if ((boxes->dims[0] >= 0 && scores->dims[0] >= 0 && boxes->dims[0] != scores->dims[0]) ||
            (boxes->dims[1] >= 0 && scores->dims[2] >= 0 && boxes->dims[1] != scores->dims[2]))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "boxes %s and scores %s do not agree",
                             QE_SHAPE(boxes, b1), QE_SHAPE(scores, b2));
    }
    return KILN_OK;
}

static kiln_status nms_infer(kiln_ctx *ctx) {
    kiln_tensor *boxes, *scores;
    KILN_TRY(kiln_need_input(ctx, 0, &boxes));
    KILN_TRY(kiln_need_input(ctx, 1, &scores));
    KILN_TRY(nms_check(ctx, boxes, scores));
    int64_t c = kiln_attr_int(ctx->node, "center_point_box", 0);
    if (c != 0 && c != 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "center_point_box must be 0 or 1");
    int64_t dims[2] = {KILN_DIM_UNKNOWN, 3};
    return kiln_set_output(ctx, 0, KILN_DTYPE_INT64, 2, dims);
}

static kiln_status nms_compute(kiln_ctx *ctx) {
    kiln_tensor *boxes, *scores;
    /* a dynamic op: compute runs without infer, so it checks its required inputs itself */
    KILN_TRY(kiln_need_input(ctx, 0, &boxes));
    KILN_TRY(kiln_need_input(ctx, 1, &scores));
    const kiln_tensor *tmax = kiln_input(ctx, 2), *tiou = kiln_input(ctx, 3), *tsc = kiln_input(ctx, 4);
    KILN_TRY(nms_check(ctx, boxes, scores));
    nms_job j;
    memset(&j, 0, sizeof j);
    j.boxes = boxes;
    j.scores = scores;
    j.B = boxes->dims[1];
    j.C = scores->dims[1];
    j.center = (int)kiln_attr_int(ctx->node, "center_point_box", 0);
    j.max_out = 0;
    if (tmax && kiln_numel(tmax) > 0) {
        if (!kiln_dtype_is_integer(tmax->dtype))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "max_output_boxes_per_class must be int64");
        j.max_out = kiln_load_i64(tmax->dtype, tmax->data, 0);
        if (j.max_out < 0) j.max_out = 0;
    }
    if (tiou && kiln_numel(tiou) > 0) j.iou_threshold = qe_load_f32(tiou->dtype, tiou->data, 0);
    if (tsc && kiln_numel(tsc) > 0) {
        j.has_score_threshold = 1;
        j.score_threshold = qe_load_f32(tsc->dtype, tsc->data, 0);
    }
    if (j.iou_threshold < 0.0f || j.iou_threshold > 1.0f)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "iou_threshold %g must lie in [0, 1]",
                         (double)j.iou_threshold);
    int64_t pairs = boxes->dims[0] * j.C;
    j.cap = j.max_out < j.B ? j.max_out : j.B;
    int64_t total = 0;
    if (pairs > 0 && j.cap > 0) {
        j.sel = malloc(sizeof(int64_t) * (size_t)(pairs * j.cap));
        j.nsel = calloc((size_t)pairs, sizeof(int64_t));
        if (!j.sel || !j.nsel) {
            free(j.sel);
            free(j.nsel);
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        }
        kiln_parallel_for(ctx, pairs, 1, nms_pairs, &j);
        if (j.failed) {
            free(j.sel);
            free(j.nsel);
            return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        }
        for (int64_t p = 0; p < pairs; p++) total += j.nsel[p];
    }
    int64_t dims[2] = {total, 3};
    kiln_status st = kiln_alloc_output(ctx, 0, KILN_DTYPE_INT64, 2, dims);
    if (st == KILN_OK && total > 0) {
        kiln_tensor *y = kiln_output(ctx, 0);
        int64_t *out = (int64_t *)y->data, r = 0;
        for (int64_t p = 0; p < pairs; p++)
            for (int64_t s = 0; s < j.nsel[p]; s++, r++) {
                out[r * 3 + 0] = p / j.C;
                out[r * 3 + 1] = p % j.C;
                out[r * 3 + 2] = j.sel[p * j.cap + s];
            }
    }
    free(j.sel);
    free(j.nsel);
    return st;
}

const kiln_op kiln_ops_nms[] = {
    {"", "NonMaxSuppression", 10, KILN_OP_DYNAMIC, NULL, nms_infer, nms_compute, NULL},
    {0},
};
