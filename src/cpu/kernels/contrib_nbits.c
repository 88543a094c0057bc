/* com.microsoft block-quantized weights as onnxruntime's quantization tools emit them:
 *
 * MatMulNBits(A, B, scales, zero_points?, g_idx?, bias?): Y = A · Wᵀ (+ bias), where W (N × K) is
 * stored as B (N, k_blocks, block_size * bits / 8) bytes of `bits`-bit codes, low bits first,
 * dequantized per block as (q - zp) * scale. zero_points are either packed like B (N,
 * ceil(k_blocks * bits / 8)) or float of A's type (N * k_blocks); absent, zp = 2^(bits - 1).
 * W is never dequantized whole: each worker dequantizes a tile of output columns (N_t × K floats)
 * and runs sgemm on it, so memory stays O(tile) while the product still goes through BLAS.
 *
 * GatherBlockQuantized(data, indices, scales, zero_points?): Gather on 4-bit (int4/uint4, or
 * bits-packed uint8) block-quantized data, dequantized as (q - zp) * scale. */
#include "contrib_transformers.h"
#include "gemm_util.h"

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

enum { NB_A, NB_B, NB_SCALES, NB_ZP, NB_GIDX, NB_BIAS };

typedef struct nbits_cfg {
    int64_t K, N, bits, block, kb, blob;   /* kb = blocks per column, blob = bytes per block */
    int64_t M;                             /* rows of A */
    int dtype;                             /* A's element type: float or float16 */
    const kiln_tensor *a, *b, *scales, *zp, *bias;
    int zp_float;                          /* zero points stored as A's type, not packed */
} nbits_cfg;

static int half_or_float(int dt) { return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_FLOAT16; }

static kiln_status nbits_parse(kiln_ctx *ctx, nbits_cfg *c) {
    const kiln_node *node = ctx->node;
    char s1[96];
    memset(c, 0, sizeof *c);
    kiln_tensor *a, *b, *sc;
    KILN_TRY(kiln_need_input(ctx, NB_A, &a));
    KILN_TRY(kiln_need_input(ctx, NB_B, &b));
    KILN_TRY(kiln_need_input(ctx, NB_SCALES, &sc));
    c->a = a;
    c->b = b;
    c->scales = sc;
    c->zp = kiln_input(ctx, NB_ZP);
    c->bias = kiln_input(ctx, NB_BIAS);
    if (kiln_input(ctx, NB_GIDX))
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "input g_idx (act-order) is not supported; onnxruntime's quantizers emit "
                         "MatMulNBits without it");
    if (!half_or_float(a->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input A has element type %s; expected float or float16",
                         kiln_dtype_name(a->dtype));
    c->dtype = a->dtype;
    if (b->dtype != KILN_DTYPE_UINT8)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input B has element type %s; expected uint8",
                         kiln_dtype_name(b->dtype));
    if (sc->dtype != a->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scales have type %s; expected A's type %s",
                         kiln_dtype_name(sc->dtype), kiln_dtype_name(a->dtype));
    c->K = kiln_attr_int(node, "K", -1);
    c->N = kiln_attr_int(node, "N", -1);
    c->bits = kiln_attr_int(node, "bits", 4);
    c->block = kiln_attr_int(node, "block_size", -1);
    /* bounded so that products like N * k_blocks * blob stay far from int64 overflow */
    if (c->K <= 0 || c->N <= 0 || c->K > INT32_MAX || c->N > INT32_MAX)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "attributes K and N must be in [1, 2^31), got %lld and %lld", (long long)c->K,
                         (long long)c->N);
    if (c->bits != 2 && c->bits != 4 && c->bits != 8)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "bits=%lld is not supported (2, 4 or 8)",
                         (long long)c->bits);
    if (c->block < 16 || c->block > (1 << 20) || (c->block & (c->block - 1)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "block_size must be a power of 2 in [16, 2^20], got %lld", (long long)c->block);
    c->kb = (c->K + c->block - 1) / c->block;
    c->blob = c->block * c->bits / 8;
    if (a->rank < 0) return KILN_OK; /* static inference without A's shape */
    if (a->rank < 1 || (a->dims[a->rank - 1] >= 0 && a->dims[a->rank - 1] != c->K))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input A %s must end in K=%lld",
                         kgemm_dims_str(a->rank, a->dims, s1, sizeof s1), (long long)c->K);
    int64_t bn = kiln_numel(b);
    if (b->rank >= 0 && bn >= 0 && bn != c->N * c->kb * c->blob)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "input B %s must hold N x k_blocks x blob = %lld x %lld x %lld bytes",
                         kgemm_dims_str(b->rank, b->dims, s1, sizeof s1), (long long)c->N,
                         (long long)c->kb, (long long)c->blob);
    int64_t sn = kiln_numel(sc);
    if (sc->rank >= 0 && sn >= 0 && sn != c->N * c->kb)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "scales %s must hold N x k_blocks = %lld values",
                         kgemm_dims_str(sc->rank, sc->dims, s1, sizeof s1), (long long)(c->N * c->kb));
    if (c->zp) {
        int64_t zn = kiln_numel(c->zp);
        if (c->zp->dtype == KILN_DTYPE_UINT8) {
            int64_t want = c->N * ((c->kb * c->bits + 7) / 8);
            if (c->zp->rank >= 0 && zn >= 0 && zn != want)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "packed zero_points must hold N x ceil(k_blocks * bits / 8) = %lld "
                                 "bytes, got %lld", (long long)want, (long long)zn);
        } else if (c->zp->dtype == a->dtype) {
            c->zp_float = 1;
            if (c->zp->rank >= 0 && zn >= 0 && zn != c->N * c->kb)
                return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                                 "float zero_points must hold N x k_blocks = %lld values, got %lld",
                                 (long long)(c->N * c->kb), (long long)zn);
        } else {
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "zero_points have type %s; expected uint8 or A's type %s",
                             kiln_dtype_name(c->zp->dtype), kiln_dtype_name(a->dtype));
        }
    }
    if (c->bias) {
        if (c->bias->dtype != a->dtype)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias has type %s; expected A's type %s",
                             kiln_dtype_name(c->bias->dtype), kiln_dtype_name(a->dtype));
        if (c->bias->rank >= 0 && (c->bias->rank != 1 || (c->bias->dims[0] >= 0 && c->bias->dims[0] != c->N)))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bias %s must be 1-D of length N=%lld",
                             kgemm_dims_str(c->bias->rank, c->bias->dims, s1, sizeof s1), (long long)c->N);
    }
    return KILN_OK;
}

static kiln_status nbits_infer(kiln_ctx *ctx) {
    nbits_cfg c;
    KILN_TRY(nbits_parse(ctx, &c));
    if (c.a->rank < 0) return kiln_set_output_unknown(ctx, 0, c.dtype);
    int64_t d[KILN_MAX_RANK];
    memcpy(d, c.a->dims, sizeof(int64_t) * (size_t)c.a->rank);
    d[c.a->rank - 1] = c.N;
    return kiln_set_output(ctx, 0, c.dtype, c.a->rank, d);
}

/* ---- the product ---- */

typedef struct nbits_job {
    const nbits_cfg *c;
    const float *a, *scales, *zpf, *bias; /* float32 views */
    const uint8_t *b, *zpq;
    float *y;
    int64_t nt;         /* output columns per tile */
    int failed;
} nbits_job;

/* Code k of a bits-packed byte row (low bits first). */
static inline int code_at(const uint8_t *p, int64_t k, int bits) {
    if (bits == 8) return p[k];
    int64_t bit = k * bits;
    return (p[bit >> 3] >> (bit & 7)) & ((1 << bits) - 1);
}

/* Rows [n0, n0 + cnt) of W (each K floats) into w. */
static void dequant_rows(const nbits_job *j, int64_t n0, int64_t cnt, float *w) {
    const nbits_cfg *c = j->c;
    int bits = (int)c->bits;
    float dflt = (float)(1 << (bits - 1));
    int64_t zp_row = (c->kb * bits + 7) / 8;
    for (int64_t r = 0; r < cnt; r++) {
        int64_t n = n0 + r;
        float *wr = w + r * c->K;
        for (int64_t blk = 0; blk < c->kb; blk++) {
            float s = j->scales[n * c->kb + blk];
            float zp = j->zpf ? j->zpf[n * c->kb + blk]
                     : j->zpq ? (float)code_at(j->zpq + n * zp_row, blk, bits) : dflt;
            const uint8_t *q = j->b + (n * c->kb + blk) * c->blob;
            int64_t k0 = blk * c->block, len = c->K - k0 < c->block ? c->K - k0 : c->block;
            float *o = wr + k0;
            if (bits == 4) {
                int64_t k = 0;
                for (; k + 1 < len; k += 2) {
                    uint8_t v = q[k >> 1];
                    o[k] = ((float)(v & 15) - zp) * s;
                    o[k + 1] = ((float)(v >> 4) - zp) * s;
                }
                if (k < len) o[k] = ((float)(q[k >> 1] & 15) - zp) * s;
            } else {
                for (int64_t k = 0; k < len; k++) o[k] = ((float)code_at(q, k, bits) - zp) * s;
            }
        }
    }
}

static void nbits_range(void *arg, int64_t begin, int64_t end) {
    nbits_job *j = arg;
    const nbits_cfg *c = j->c;
    float *w = malloc(sizeof(float) * (size_t)(j->nt * c->K));
    if (!w) {
        j->failed = 1;
        return;
    }
    for (int64_t t = begin; t < end; t++) {
        int64_t n0 = t * j->nt, cnt = c->N - n0 < j->nt ? c->N - n0 : j->nt;
        dequant_rows(j, n0, cnt, w);
        float *y = j->y + n0;
        if (j->bias)
            for (int64_t m = 0; m < c->M; m++) memcpy(y + m * c->N, j->bias + n0, sizeof(float) * (size_t)cnt);
        kgemm_f32_serial(0, 1, c->M, cnt, c->K, 1.0f, j->a, c->K, w, c->K, j->bias ? 1.0f : 0.0f, y,
                         c->N);
    }
    free(w);
}

/* A float32 view of t: its own data, or a converted copy in *owned. */
static kiln_status as_f32(kiln_ctx *ctx, const kiln_tensor *t, const float **out, float **owned) {
    *owned = NULL;
    if (!t) {
        *out = NULL;
        return KILN_OK;
    }
    if (t->dtype == KILN_DTYPE_FLOAT) {
        *out = t->data;
        return KILN_OK;
    }
    int64_t n = kiln_numel(t);
    *owned = malloc(sizeof(float) * (size_t)(n > 0 ? n : 1));
    if (!*owned) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kcvt_to_f32(ctx, t->dtype, t->data, *owned, n);
    *out = *owned;
    return KILN_OK;
}

static kiln_status nbits_compute(kiln_ctx *ctx) {
    nbits_cfg c;
    KILN_TRY(nbits_parse(ctx, &c));
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    c.M = kiln_numel(c.a) / c.K;
    if (c.M == 0) return KILN_OK;
    kgemm_blas_serial();
    nbits_job j;
    memset(&j, 0, sizeof j);
    j.c = &c;
    j.b = c.b->data;
    if (c.zp && !c.zp_float) j.zpq = c.zp->data;
    float *own[5] = {0};
    kiln_status st = as_f32(ctx, c.a, &j.a, &own[0]);
    if (st == KILN_OK) st = as_f32(ctx, c.scales, &j.scales, &own[1]);
    if (st == KILN_OK && c.zp_float) st = as_f32(ctx, c.zp, &j.zpf, &own[2]);
    if (st == KILN_OK) st = as_f32(ctx, c.bias, &j.bias, &own[3]);
    if (st == KILN_OK && y->dtype != KILN_DTYPE_FLOAT) {
        own[4] = malloc(sizeof(float) * (size_t)(c.M * c.N));
        if (!own[4]) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    if (st == KILN_OK) {
        j.y = own[4] ? own[4] : y->data;
        /* a tile of about 256 KiB of dequantized weight stays in L2 while sgemm streams A by it */
        int64_t nt = (64 * 1024) / c.K;
        nt = nt < 8 ? 8 : nt > 256 ? 256 : nt / 8 * 8;
        int64_t tiles = (c.N + nt - 1) / nt, threads = kiln_num_threads(ctx);
        while (tiles < 2 * threads && nt > 8) { /* enough tiles for every thread */
            nt = nt / 2 < 8 ? 8 : nt / 2;
            tiles = (c.N + nt - 1) / nt;
        }
        j.nt = nt;
        double ns = (double)c.N * c.K * (1.0 + 0.2 * (double)c.M);
        kiln_parallel_for(ctx, tiles, kpar_grain(tiles, ns), nbits_range, &j);
        if (j.failed) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory for a dequantized tile");
        else if (own[4]) kcvt_from_f32(ctx, y->dtype, own[4], y->data, c.M * c.N);
    }
    for (int i = 0; i < 5; i++) free(own[i]);
    return st;
}

/* ---- GatherBlockQuantized ---- */

enum { GB_DATA, GB_IDX, GB_SCALES, GB_ZP };

typedef struct gbq_cfg {
    const kiln_tensor *data, *idx, *scales, *zp;
    int gaxis, qaxis, bits, dtype;
    int64_t block;
    int64_t dims[KILN_MAX_RANK]; /* logical (unpacked) data shape */
    int rank;
} gbq_cfg;

static kiln_status gbq_parse(kiln_ctx *ctx, gbq_cfg *c) {
    const kiln_node *node = ctx->node;
    char s1[96], s2[96];
    memset(c, 0, sizeof *c);
    kiln_tensor *d, *ix, *sc;
    KILN_TRY(kiln_need_input(ctx, GB_DATA, &d));
    KILN_TRY(kiln_need_input(ctx, GB_IDX, &ix));
    KILN_TRY(kiln_need_input(ctx, GB_SCALES, &sc));
    c->data = d;
    c->idx = ix;
    c->scales = sc;
    c->zp = kiln_input(ctx, GB_ZP);
    if (d->dtype != KILN_DTYPE_UINT8 && d->dtype != KILN_DTYPE_INT4 && d->dtype != KILN_DTYPE_UINT4)
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED,
                         "data has element type %s; supported: int4, uint4, uint8",
                         kiln_dtype_name(d->dtype));
    if (ix->dtype != KILN_DTYPE_INT32 && ix->dtype != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "indices have type %s; expected int32 or int64",
                         kiln_dtype_name(ix->dtype));
    if (!half_or_float(sc->dtype) && sc->dtype != KILN_DTYPE_BFLOAT16)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "scales have type %s; expected float, float16 or bfloat16",
                         kiln_dtype_name(sc->dtype));
    c->dtype = sc->dtype;
    if (c->zp && c->zp->dtype != d->dtype)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "zero_points have type %s; expected data's type %s",
                         kiln_dtype_name(c->zp->dtype), kiln_dtype_name(d->dtype));
    c->bits = d->dtype == KILN_DTYPE_UINT8 ? (int)kiln_attr_int(node, "bits", 4) : 4;
    if (c->bits != 4 && c->bits != 8 && c->bits != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "bits must be 2, 4 or 8, got %d", c->bits);
    c->block = kiln_attr_int(node, "block_size", 128);
    if (c->block < 16 || c->block > (1 << 20) || (c->block & (c->block - 1)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "block_size must be a power of 2 in [16, 2^20], got %lld", (long long)c->block);
    if (d->rank < 0 || ix->rank < 0) return KILN_OK;
    if (d->rank < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "data must have rank >= 1");
    c->rank = d->rank;
    memcpy(c->dims, d->dims, sizeof(int64_t) * (size_t)d->rank);
    /* uint8 with bits < 8 packs 8/bits codes per byte along the last axis */
    if (d->dtype == KILN_DTYPE_UINT8 && c->bits < 8 && c->dims[c->rank - 1] >= 0)
        c->dims[c->rank - 1] *= 8 / c->bits;
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(node, "gather_axis", 0), d->rank, "gather_axis", &c->gaxis));
    KILN_TRY(kiln_norm_axis(ctx, kiln_attr_int(node, "quantize_axis", 1), d->rank, "quantize_axis", &c->qaxis));
    if (d->dtype == KILN_DTYPE_UINT8 && c->gaxis != 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "gather_axis must be 0 for uint8 data, got %d",
                         c->gaxis);
    if (d->dtype == KILN_DTYPE_UINT8 && c->bits < 8 && c->qaxis != c->rank - 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "quantize_axis must be the last axis for packed uint8 data");
    /* scales: data's shape with the quantize axis divided into blocks */
    if (sc->rank != d->rank)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "scales %s must have data's rank %d",
                         kgemm_dims_str(sc->rank, sc->dims, s1, sizeof s1), d->rank);
    for (int i = 0; i < d->rank; i++) {
        int64_t want = i == c->qaxis ? (c->dims[i] + c->block - 1) / c->block : c->dims[i];
        if (sc->dims[i] >= 0 && c->dims[i] >= 0 && sc->dims[i] != want)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "scales %s do not match data %s with block_size %lld on axis %d",
                             kgemm_dims_str(sc->rank, sc->dims, s1, sizeof s1),
                             kgemm_dims_str(c->rank, c->dims, s2, sizeof s2), (long long)c->block,
                             c->qaxis);
    }
    if (c->zp) {
        int64_t want = kiln_numel(sc);
        if (d->dtype == KILN_DTYPE_UINT8 && c->bits < 8) {
            int64_t last = sc->dims[sc->rank - 1], per = 8 / c->bits;
            want = want / (last ? last : 1) * ((last + per - 1) / per);
        }
        int64_t zn = kiln_numel(c->zp);
        if (zn >= 0 && want >= 0 && zn != want)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "zero_points %s hold %lld codes; expected %lld (one per block)",
                             kgemm_dims_str(c->zp->rank, c->zp->dims, s1, sizeof s1), (long long)zn,
                             (long long)want);
    }
    return KILN_OK;
}

static kiln_status gbq_infer(kiln_ctx *ctx) {
    if (ctx->static_mode) {
        const kiln_tensor *sc = kiln_input(ctx, GB_SCALES), *zp = kiln_input(ctx, GB_ZP);
        const kiln_tensor *d = kiln_input(ctx, GB_DATA), *ix = kiln_input(ctx, GB_IDX);
        if ((d && !kiln_shape_concrete(d)) || (ix && !kiln_shape_concrete(ix)) ||
            (sc && !kiln_shape_concrete(sc)) || (zp && !kiln_shape_concrete(zp)))
            return kiln_set_output_unknown(ctx, 0, sc ? sc->dtype : KILN_DTYPE_FLOAT);
    }
    gbq_cfg c;
    KILN_TRY(gbq_parse(ctx, &c));
    if (c.data->rank < 0 || c.idx->rank < 0) return kiln_set_output_unknown(ctx, 0, c.dtype);
    int rank = c.rank - 1 + c.idx->rank;
    if (rank > KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "output rank %d too large", rank);
    int64_t d[KILN_MAX_RANK];
    int r = 0;
    for (int i = 0; i < c.gaxis; i++) d[r++] = c.dims[i];
    for (int i = 0; i < c.idx->rank; i++) d[r++] = c.idx->dims[i];
    for (int i = c.gaxis + 1; i < c.rank; i++) d[r++] = c.dims[i];
    return kiln_set_output(ctx, 0, c.dtype, rank, d);
}

/* Code number e (row-major over the logical shape) of data, as an integer. */
static inline int gbq_code(const gbq_cfg *c, const uint8_t *p, int64_t e) {
    if (c->data->dtype == KILN_DTYPE_UINT8) return code_at(p, e, c->bits);
    int v = (p[e >> 1] >> ((e & 1) * 4)) & 15;
    if (c->data->dtype == KILN_DTYPE_INT4 && v >= 8) v -= 16;
    return v;
}

static kiln_status gbq_compute(kiln_ctx *ctx) {
    gbq_cfg c;
    KILN_TRY(gbq_parse(ctx, &c));
    kiln_tensor *y = kiln_output(ctx, 0);
    int64_t ny = kiln_numel(y);
    if (!y || ny == 0) return KILN_OK;
    int64_t outer = 1, inner = 1, G = c.dims[c.gaxis];
    for (int i = 0; i < c.gaxis; i++) outer *= c.dims[i];
    for (int i = c.gaxis + 1; i < c.rank; i++) inner *= c.dims[i];
    int64_t nidx = kiln_numel(c.idx);
    /* strides of the logical data and of the scales for the quantize axis */
    int64_t q_in = 1; /* elements after the quantize axis */
    for (int i = c.qaxis + 1; i < c.rank; i++) q_in *= c.dims[i];
    int64_t qd = c.dims[c.qaxis], qb = (qd + c.block - 1) / c.block;
    int zp_packed = c.data->dtype != KILN_DTYPE_UINT8 || c.bits < 8;
    int64_t zp_last = c.scales->dims[c.rank - 1]; /* codes per zero-point row before packing */
    int64_t zp_row = c.data->dtype == KILN_DTYPE_UINT8 && c.bits < 8
                         ? (zp_last + 8 / c.bits - 1) / (8 / c.bits) * (8 / c.bits) : zp_last;
    int dflt = c.data->dtype == KILN_DTYPE_UINT8 ? 1 << (c.bits - 1) : 0;
    float *sc = NULL, *out = NULL;
    kiln_status st = as_f32(ctx, c.scales, (const float **)&sc, &out);
    if (st != KILN_OK) return st;
    const float *scales = sc;
    float *res = y->dtype == KILN_DTYPE_FLOAT ? y->data : malloc(sizeof(float) * (size_t)ny);
    if (!res) {
        free(out);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    const uint8_t *data = c.data->data, *zp = c.zp ? c.zp->data : NULL;
    for (int64_t o = 0; o < outer; o++) {
        for (int64_t t = 0; t < nidx; t++) {
            int64_t ix = c.idx->dtype == KILN_DTYPE_INT64 ? ((const int64_t *)c.idx->data)[t]
                                                         : ((const int32_t *)c.idx->data)[t];
            float *dst = res + (o * nidx + t) * inner;
            if (ix < 0) ix += G;
            if (ix < 0 || ix >= G) { /* out of range: zeros, as onnxruntime documents */
                memset(dst, 0, sizeof(float) * (size_t)inner);
                continue;
            }
            int64_t base = (o * G + ix) * inner;
            for (int64_t i = 0; i < inner; i++) {
                int64_t e = base + i;
                /* position along the quantize axis and the matching scale index */
                int64_t qa = (e / q_in) % qd, pre = e / (q_in * qd), post = e % q_in;
                int64_t si = (pre * qb + qa / c.block) * q_in + post;
                int z = dflt;
                if (zp) {
                    if (zp_packed) {
                        int64_t row = si / zp_last, col = si % zp_last;
                        int64_t zi = row * zp_row + col;
                        if (c.data->dtype == KILN_DTYPE_UINT8) z = code_at(zp, zi, c.bits);
                        else z = gbq_code(&c, zp, zi);
                    } else {
                        z = zp[si];
                    }
                }
                dst[i] = (float)(gbq_code(&c, data, e) - z) * scales[si];
            }
        }
    }
    if (res != y->data) {
        kcvt_from_f32(ctx, y->dtype, res, y->data, ny);
        free(res);
    }
    free(out);
    return KILN_OK;
}

/* Entry points listed in contrib_transformers.c's table. */
kiln_status kctr_nbits_infer(kiln_ctx *ctx) { return nbits_infer(ctx); }
kiln_status kctr_nbits_compute(kiln_ctx *ctx) { return nbits_compute(ctx); }
kiln_status kctr_gbq_infer(kiln_ctx *ctx) { return gbq_infer(ctx); }
kiln_status kctr_gbq_compute(kiln_ctx *ctx) { return gbq_compute(ctx); }
