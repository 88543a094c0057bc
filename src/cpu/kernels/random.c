/* RandomNormal, RandomUniform, RandomNormalLike, RandomUniformLike, Bernoulli, Multinomial.
 *
 * With a seed, every run draws the same numbers, and they are the numbers of numpy's
 * RandomState(seed) (MT19937, 53-bit doubles, polar Gaussian, inversion binomial), which is what
 * the ONNX reference produces. Without a seed each run draws a fresh MT19937 stream seeded from
 * the clock, a counter and addresses. Generation is sequential: the stream defines the values. */
#define _POSIX_C_SOURCE 200809L
#include "quant_elem.h"
#include <stdatomic.h>
#include <stdlib.h>
#include <time.h>

/* ------------------------------------------------------------------------------------------ */
/* MT19937 with numpy's legacy helpers */

typedef struct mt_rng {
    uint32_t key[624];
    int pos;
    int has_gauss;
    double gauss;
} mt_rng;

static void mt_seed(mt_rng *r, uint32_t seed) {
    for (int i = 0; i < 624; i++) {
        r->key[i] = seed;
        seed = 1812433253u * (seed ^ (seed >> 30)) + (uint32_t)i + 1u;
    }
    r->pos = 624;
    r->has_gauss = 0;
    r->gauss = 0.0;
}

static uint32_t mt_next(mt_rng *r) {
    if (r->pos >= 624) {
        for (int i = 0; i < 624; i++) {
            uint32_t y = (r->key[i] & 0x80000000u) | (r->key[(i + 1) % 624] & 0x7fffffffu);
            r->key[i] = r->key[(i + 397) % 624] ^ (y >> 1) ^ ((y & 1u) ? 0x9908b0dfu : 0u);
        }
        r->pos = 0;
    }
    uint32_t y = r->key[r->pos++];
    y ^= y >> 11;
    y ^= (y << 7) & 0x9d2c5680u;
    y ^= (y << 15) & 0xefc60000u;
    y ^= y >> 18;
    return y;
}

static double mt_double(mt_rng *r) { /* [0, 1) with 53 random bits */
    uint32_t a = mt_next(r) >> 5, b = mt_next(r) >> 6;
    return ((double)a * 67108864.0 + (double)b) / 9007199254740992.0;
}

static double mt_gauss(mt_rng *r) {
    if (r->has_gauss) {
        r->has_gauss = 0;
        return r->gauss;
    }
    double x1, x2, r2;
    do {
        x1 = 2.0 * mt_double(r) - 1.0;
        x2 = 2.0 * mt_double(r) - 1.0;
        r2 = x1 * x1 + x2 * x2;
    } while (r2 >= 1.0 || r2 == 0.0);
    double f = sqrt(-2.0 * log(r2) / r2);
    r->gauss = f * x1;
    r->has_gauss = 1;
    return f * x2;
}

/* One Bernoulli draw exactly as numpy's legacy binomial(1, p): inversion on min(p, 1 - p), which
 * draws at least once even for p = 0 or 1 (keeping the stream aligned with numpy's). */
static int mt_bernoulli(mt_rng *r, double p) {
    int flip = p > 0.5;
    double pp = flip ? 1.0 - p : p, q = 1.0 - pp;
    double qn = exp(log(q)), np1 = pp;
    int64_t bound = (int64_t)fmin(1.0, np1 + 10.0 * sqrt(np1 * q + 1.0));
    int64_t x = 0;
    double px = qn, u = mt_double(r);
    while (u > px) {
        x++;
        if (x > bound) {
            x = 0;
            px = qn;
            u = mt_double(r);
        } else {
            u -= px;
            px = ((double)(1 - x + 1) * pp * px) / ((double)x * q);
        }
    }
    return flip ? (int)(1 - x) : (int)x;
}

static uint32_t entropy_seed(void) {
    static atomic_uint counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t h = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)ts.tv_sec;
    h ^= (uint64_t)atomic_fetch_add(&counter, 1u) * 0xbf58476d1ce4e5b9ull;
    h ^= (uint64_t)(uintptr_t)&ts * 0x94d049bb133111ebull;
    h ^= (uint64_t)clock();
    h ^= h >> 31;
    return (uint32_t)(h ^ (h >> 32));
}

/* The generator of one run: the seed attribute if present, else fresh entropy. */
static kiln_status make_rng(kiln_ctx *ctx, mt_rng *r) {
    if (kiln_has_attr(ctx->node, "seed")) {
        float s = kiln_attr_float(ctx->node, "seed", 0.0f);
        if (!isfinite(s))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "seed %g is not finite", (double)s);
        mt_seed(r, (uint32_t)(int64_t)s);
    } else {
        mt_seed(r, entropy_seed());
    }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* shapes and types */

static int is_random_float(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || dt == KILN_DTYPE_FLOAT16 ||
           dt == KILN_DTYPE_BFLOAT16;
}

/* The output type of the generators: the dtype attribute, else (Like forms) the input's type. */
static kiln_status gen_dtype(kiln_ctx *ctx, const kiln_tensor *like, int *dt) {
    if (kiln_has_attr(ctx->node, "dtype")) *dt = (int)kiln_attr_int(ctx->node, "dtype", KILN_DTYPE_FLOAT);
    else *dt = like ? like->dtype : KILN_DTYPE_FLOAT;
    if (!is_random_float(*dt))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "output type %s is not a float type; set the dtype attribute",
                         kiln_dtype_name((kiln_dtype)*dt));
    return KILN_OK;
}

static int is_like(const kiln_ctx *ctx) { return strstr(ctx->node->op_type, "Like") != NULL; }

static kiln_status gen_infer(kiln_ctx *ctx) {
    int dt;
    if (is_like(ctx)) {
        kiln_tensor *x;
        KILN_TRY(kiln_need_input(ctx, 0, &x));
        KILN_TRY(gen_dtype(ctx, x, &dt));
        if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, dt);
        return kiln_set_output(ctx, 0, dt, x->rank, x->dims);
    }
    KILN_TRY(gen_dtype(ctx, NULL, &dt));
    int n = 0;
    const int64_t *shape = kiln_attr_ints(ctx->node, "shape", &n);
    if (!shape) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'shape' is required");
    if (n > KILN_MAX_RANK) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "shape has too many dims");
    for (int i = 0; i < n; i++)
        if (shape[i] < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "shape[%d] = %lld is negative", i,
                             (long long)shape[i]);
    return kiln_set_output(ctx, 0, dt, n, shape);
}

static kiln_status gen_compute(kiln_ctx *ctx) {
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    mt_rng *r = malloc(sizeof *r);
    if (!r) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = make_rng(ctx, r);
    if (st != KILN_OK) { free(r); return st; }
    int normal = strstr(ctx->node->op_type, "Normal") != NULL;
    double a = normal ? kiln_attr_float(ctx->node, "scale", 1.0f) : kiln_attr_float(ctx->node, "high", 1.0f);
    double b = normal ? kiln_attr_float(ctx->node, "mean", 0.0f) : kiln_attr_float(ctx->node, "low", 0.0f);
    if (!normal) a -= b; /* high - low, in double as the reference computes it */
    int64_t n = kiln_numel(y);
    for (int64_t i = 0; i < n; i++) {
        double v = normal ? mt_gauss(r) : mt_double(r);
        /* the reference casts first and scales in the output type */
        if (y->dtype == KILN_DTYPE_DOUBLE) {
            ((double *)y->data)[i] = v * a + b;
        } else {
            float f = (float)v;
            f = f * (float)a;
            f = f + (float)b;
            qe_store_f32(y->dtype, y->data, i, f);
        }
    }
    free(r);
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* Bernoulli */

static kiln_status bern_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!is_random_float(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must hold float probabilities, not %s",
                         kiln_dtype_name(x->dtype));
    int dt = kiln_has_attr(ctx->node, "dtype") ? (int)kiln_attr_int(ctx->node, "dtype", 0) : x->dtype;
    if (!(is_random_float(dt) || dt == KILN_DTYPE_BOOL ||
          (kiln_dtype_is_integer(dt) && kiln_dtype_size((kiln_dtype)dt) > 0)))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unsupported output dtype %d", dt);
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, dt);
    return kiln_set_output(ctx, 0, dt, x->rank, x->dims);
}

static kiln_status bern_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t n = kiln_numel(x);
    for (int64_t i = 0; i < n; i++) {
        double p = qe_load_f64(x->dtype, x->data, i);
        if (!(p >= 0.0 && p <= 1.0))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "probability %g at %lld is outside [0, 1]",
                             p, (long long)i);
    }
    mt_rng *r = malloc(sizeof *r);
    if (!r) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = make_rng(ctx, r);
    for (int64_t i = 0; i < n && st == KILN_OK; i++)
        qe_store_any(y->dtype, y->data, i, (double)mt_bernoulli(r, qe_load_f64(x->dtype, x->data, i)));
    free(r);
    return st;
}

/* ------------------------------------------------------------------------------------------ */
/* Multinomial: sample_size class indices per batch row from softmax(input row) */

static kiln_status multi_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    char b[96];
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!is_random_float(x->dtype))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input must be float, not %s", kiln_dtype_name(x->dtype));
    int dt = (int)kiln_attr_int(ctx->node, "dtype", KILN_DTYPE_INT32);
    if (dt != KILN_DTYPE_INT32 && dt != KILN_DTYPE_INT64)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "dtype must be int32 or int64");
    int64_t s = kiln_attr_int(ctx->node, "sample_size", 1);
    if (s < 0) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "sample_size must be >= 0");
    if (x->rank >= 0 && x->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s must be [batch_size, class_size]",
                         kiln_shape_str(x, b, sizeof b));
    int64_t dims[2] = {x->rank == 2 ? x->dims[0] : KILN_DIM_UNKNOWN, s};
    return kiln_set_output(ctx, 0, dt, 2, dims);
}

static kiln_status multi_compute(kiln_ctx *ctx) {
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t B = x->dims[0], C = x->dims[1], S = y->dims[1];
    if (B * S == 0) return KILN_OK;
    if (C < 1) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "class_size must be >= 1");
    double *cdf = malloc(sizeof(double) * (size_t)C);
    mt_rng *r = malloc(sizeof *r);
    if (!cdf || !r) {
        free(cdf);
        free(r);
        return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    kiln_status st = make_rng(ctx, r);
    for (int64_t b = 0; b < B && st == KILN_OK; b++) {
        double mx = -INFINITY, total = 0.0;
        for (int64_t c = 0; c < C; c++) mx = fmax(mx, qe_load_f64(x->dtype, x->data, b * C + c));
        if (!isfinite(mx)) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "row %lld has no finite log-probability", (long long)b);
            break;
        }
        for (int64_t c = 0; c < C; c++) {
            total += exp(qe_load_f64(x->dtype, x->data, b * C + c) - mx);
            cdf[c] = total;
        }
        for (int64_t s = 0; s < S; s++) {
            double u = mt_double(r) * total;
            int64_t lo = 0, hi = C - 1; /* first class whose cumulative mass exceeds u */
            while (lo < hi) {
                int64_t mid = (lo + hi) / 2;
                if (cdf[mid] > u) hi = mid;
                else lo = mid + 1;
            }
            if (y->dtype == KILN_DTYPE_INT64) ((int64_t *)y->data)[b * S + s] = lo;
            else ((int32_t *)y->data)[b * S + s] = (int32_t)lo;
        }
    }
    free(cdf);
    free(r);
    return st;
}

const kiln_op kiln_ops_random[] = {
    {"", "RandomNormal", 1, 0, NULL, gen_infer, gen_compute, NULL},
    {"", "RandomUniform", 1, 0, NULL, gen_infer, gen_compute, NULL},
    {"", "RandomNormalLike", 1, 0, NULL, gen_infer, gen_compute, NULL},
    {"", "RandomUniformLike", 1, 0, NULL, gen_infer, gen_compute, NULL},
    {"", "Bernoulli", 15, 0, NULL, bern_infer, bern_compute, NULL},
    {"", "Multinomial", 7, 0, NULL, multi_infer, multi_compute, NULL},
    {0},
};
