/* Window attributes (strides, dilations, pads, auto_pad) and output sizes for Conv and pooling,
 * plus FusedConv's activations. */
#include "conv_util.h"
#include "gemm_util.h"
#include <math.h>
#include <string.h>

const char *kconv_dims_str(int rank, const int64_t *dims, char *buf, size_t n) {
    return kgemm_dims_str(rank, dims, buf, n);
}

kiln_status kconv_auto_pad(kiln_ctx *ctx, int *mode) {
    const char *s = kiln_attr_string(ctx->node, "auto_pad", "NOTSET");
    if (!s || !*s || !strcmp(s, "NOTSET")) *mode = KCONV_PAD_NOTSET;
    else if (!strcmp(s, "SAME_UPPER")) *mode = KCONV_PAD_SAME_UPPER;
    else if (!strcmp(s, "SAME_LOWER")) *mode = KCONV_PAD_SAME_LOWER;
    else if (!strcmp(s, "VALID")) *mode = KCONV_PAD_VALID;
    else
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "auto_pad '%s' is not one of NOTSET, SAME_UPPER, SAME_LOWER, VALID", s);
    return KILN_OK;
}

static kiln_status read_list(kiln_ctx *ctx, const char *name, int want, int64_t dflt, int64_t min,
                             int64_t *out) {
    int n = 0;
    const int64_t *v = kiln_attr_ints(ctx->node, name, &n);
    for (int i = 0; i < want; i++) out[i] = dflt;
    if (!v) return KILN_OK;
    if (n != want)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute %s has %d values, expected %d",
                         name, n, want);
    for (int i = 0; i < want; i++) {
        if (v[i] < min)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "attribute %s[%d] is %lld; it must be >= %lld", name, i,
                             (long long)v[i], (long long)min);
        /* bounded like a tensor's size, so that the window arithmetic below stays in int64 */
        if (v[i] > KILN_MAX_NUMEL)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute %s[%d] is %lld: too large", name, i,
                             (long long)v[i]);
        out[i] = v[i];
    }
    return KILN_OK;
}

void kconv_finish_sizes(kconv_geom *g) {
    g->in_size = g->out_size = g->k_size = 1;
    for (int i = 0; i < g->nd; i++) {
        g->in_size = g->in[i] < 0 || g->in_size < 0 ? -1 : g->in_size * g->in[i];
        g->out_size = g->out[i] < 0 || g->out_size < 0 ? -1 : g->out_size * g->out[i];
        g->k_size *= g->k[i];
    }
}

kiln_status kconv_window(kiln_ctx *ctx, kconv_geom *g, int use_dilations, int ceil_mode) {
    int nd = g->nd, mode;
    int64_t pads[2 * KCONV_MAX_ND];
    KILN_TRY(kconv_auto_pad(ctx, &mode));
    KILN_TRY(read_list(ctx, "strides", nd, 1, 1, g->stride));
    if (use_dilations) KILN_TRY(read_list(ctx, "dilations", nd, 1, 1, g->dil));
    else for (int i = 0; i < nd; i++) g->dil[i] = 1;
    KILN_TRY(read_list(ctx, "pads", 2 * nd, 0, 0, pads));
    for (int i = 0; i < nd; i++) {
        if (g->k[i] < 1)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "kernel size %lld in dim %d is not positive",
                             (long long)g->k[i], i);
        int64_t dk, in = g->in[i], s = g->stride[i];
        if (kiln_mul_overflow_i64(g->k[i] - 1, g->dil[i], &dk) || dk > KILN_MAX_NUMEL)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "the window of dim %d (kernel %lld, dilation %lld) is too large", i,
                             (long long)g->k[i], (long long)g->dil[i]);
        dk += 1;
        g->pad_b[i] = mode == KCONV_PAD_NOTSET ? pads[i] : 0;
        g->pad_e[i] = mode == KCONV_PAD_NOTSET ? pads[nd + i] : 0;
        if (in < 0) {
            g->out[i] = KILN_DIM_UNKNOWN;
            continue;
        }
        if (mode == KCONV_PAD_SAME_UPPER || mode == KCONV_PAD_SAME_LOWER) {
            int64_t out = (in + s - 1) / s, total = (out - 1) * s + dk - in;
            if (total < 0) total = 0;
            g->pad_b[i] = mode == KCONV_PAD_SAME_UPPER ? total / 2 : total - total / 2;
            g->pad_e[i] = total - g->pad_b[i];
            g->out[i] = out;
            continue;
        }
        int64_t span = in + g->pad_b[i] + g->pad_e[i] - dk;
        if (span < 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "in spatial dim %d the window (extent %lld) is larger than the padded "
                             "input (%lld)", i, (long long)dk, (long long)(in + g->pad_b[i] + g->pad_e[i]));
        int64_t out = span / s + 1;
        if (ceil_mode && span % s) {
            out++;
            /* a window that would start in the end padding is dropped */
            if ((out - 1) * s >= in + g->pad_b[i]) out--;
        }
        g->out[i] = out;
    }
    int64_t k_size = 1; /* padding lets a window outgrow the input: its size must still fit */
    for (int i = 0; i < nd; i++)
        if (kiln_mul_overflow_i64(k_size, g->k[i], &k_size) || k_size > KILN_MAX_NUMEL)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "the kernel window has too many elements");
    kconv_finish_sizes(g);
    return KILN_OK;
}

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>
#include "avx2_part.h"
/* The piecewise-linear activations as max/min/fma over 16 lanes: FusedConv applies them to each
 * output tile while it is still in cache, so they must cost no more than the separate vectorised
 * Relu/Clip/HardSigmoid kernels they replace. y = min(max(a*y + b, lo), hi) covers Relu
 * (a=1,b=0,lo=0), Clip and HardSigmoid; LeakyRelu blends by sign. Same values as the
 * scalar loops below (fma rounds a*y+b once; HardSigmoid's tests allow that). */
__attribute__((target("avx512f"))) static int act_avx512(const kconv_act *act, float *y, int64_t n) {
    float a = 1.0f, b = 0.0f, lo = 0.0f, hi = INFINITY;
    switch (act->kind) {
    case KACT_RELU: break;
    case KACT_CLIP: lo = act->a; hi = act->b; break;
    case KACT_HSIGMOID: a = act->a; b = act->b; hi = 1.0f; break;
    case KACT_HSWISH: {
        /* x * clamp(x / 6 + 1/2, 0, 1); NaN passes through both max/min and the product */
        __m512 s = _mm512_set1_ps(1.0f / 6), h = _mm512_set1_ps(0.5f), z = _mm512_setzero_ps(),
               one = _mm512_set1_ps(1.0f);
        for (int64_t i = 0; i < n; i += 16) {
            __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(m, y + i);
            __m512 t = _mm512_min_ps(one, _mm512_max_ps(z, _mm512_fmadd_ps(v, s, h)));
            _mm512_mask_storeu_ps(y + i, m, _mm512_mul_ps(v, t));
        }
        return 1;
    }
    case KACT_LEAKY: {
        __m512 va = _mm512_set1_ps(act->a), z = _mm512_setzero_ps();
        int64_t i = 0;
        for (; i < n; i += 16) {
            __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
            __m512 v = _mm512_maskz_loadu_ps(m, y + i);
            __mmask16 neg = _mm512_cmp_ps_mask(v, z, _CMP_LT_OQ);
            _mm512_mask_storeu_ps(y + i, m, _mm512_mask_mul_ps(v, neg, v, va));
        }
        return 1;
    }
    default: return 0;
    }
    __m512 va = _mm512_set1_ps(a), vb = _mm512_set1_ps(b), vlo = _mm512_set1_ps(lo),
           vhi = _mm512_set1_ps(hi);
    int plain = act->kind != KACT_HSIGMOID, relu = act->kind == KACT_RELU;
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 m = n - i >= 16 ? 0xffff : (__mmask16)((1u << (n - i)) - 1);
        __m512 v = _mm512_maskz_loadu_ps(m, y + i);
        if (!plain) v = _mm512_fmadd_ps(va, v, vb);
        /* max/min return their second operand on NaN, so v goes second: NaN passes through, as
         * in the separate Relu/Clip/HardSigmoid kernels (level 1) */
        v = relu ? _mm512_max_ps(vlo, v) : _mm512_min_ps(vhi, _mm512_max_ps(vlo, v));
        _mm512_mask_storeu_ps(y + i, m, v);
    }
    return 1;
}

/* The same formulas over 8 lanes for CPUs without AVX-512 (AMD before Zen 4, Intel client
 * parts). The scalar loops below branch on each value's sign, and on random-signed outputs a
 * mispredicted branch every other value made a FusedConv's Relu cost 30% of MobileNetV3 here.
 * FMA as in the 16-lane loop, so both paths give the same values. Tails in pieces
 * (avx2_part.h), which touch no memory past n. */

__attribute__((target("avx2,fma"))) static int act_avx2(const kconv_act *act, float *y, int64_t n) {
    float a = 1.0f, b = 0.0f, lo = 0.0f, hi = INFINITY;
    int mode = 0; /* 0: clamp(a*y + b), 1: HardSwish, 2: LeakyRelu */
    switch (act->kind) {
    case KACT_RELU: break;
    case KACT_CLIP: lo = act->a; hi = act->b; break;
    case KACT_HSIGMOID: a = act->a; b = act->b; hi = 1.0f; break;
    case KACT_HSWISH: mode = 1; break;
    case KACT_LEAKY: mode = 2; a = act->a; break;
    default: return 0;
    }
    const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b), vlo = _mm256_set1_ps(lo),
                 vhi = _mm256_set1_ps(hi), z = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f),
                 sixth = _mm256_set1_ps(1.0f / 6), half = _mm256_set1_ps(0.5f);
    int affine = act->kind == KACT_HSIGMOID, relu = act->kind == KACT_RELU;
    for (int64_t i = 0; i < n; i += 8) {
        __m256 v = kavx2_load_part(y + i, n - i);
        if (mode == 1) {
            /* NaN passes through both max/min (second operand) and the product */
            __m256 t = _mm256_min_ps(one, _mm256_max_ps(z, _mm256_fmadd_ps(v, sixth, half)));
            v = _mm256_mul_ps(v, t);
        } else if (mode == 2) {
            __m256 neg = _mm256_cmp_ps(v, z, _CMP_LT_OQ);
            v = _mm256_blendv_ps(v, _mm256_mul_ps(v, va), neg);
        } else {
            if (affine) v = _mm256_fmadd_ps(va, v, vb);
            v = relu ? _mm256_max_ps(vlo, v) : _mm256_min_ps(vhi, _mm256_max_ps(vlo, v));
        }
        kavx2_store_part(y + i, v, n - i);
    }
    return 1;
}

static int have_avx512(void) {
    static _Atomic int cached = -1;
    if (cached < 0) cached = __builtin_cpu_supports("avx512f") ? 1 : 0;
    return cached;
}

#define KCONV_ACT_SIMD 1
#endif

void kconv_apply_act(const kconv_act *act, float *y, int64_t n) {
#ifdef KCONV_ACT_SIMD
    /* masked vectors from the first value on: the direct and channel-lane kernels apply it to
     * output rows of 7 to 14 values, where the scalar loop cost as much as the product */
    if (n >= 1 && have_avx512() && act_avx512(act, y, n)) return;
    if (n >= 1 && kgemm_avx2_available() && act_avx2(act, y, n)) return;
#endif
    switch (act->kind) {
    case KACT_RELU:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] < 0.0f ? 0.0f : y[i]; /* NaN stays NaN */
        break;
    case KACT_TANH:
        for (int64_t i = 0; i < n; i++) y[i] = tanhf(y[i]);
        break;
    case KACT_SIGMOID:
        for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-y[i]));
        break;
    case KACT_LEAKY:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] >= 0.0f ? y[i] : act->a * y[i];
        break;
    case KACT_CLIP:
        for (int64_t i = 0; i < n; i++) y[i] = y[i] < act->a ? act->a : y[i] > act->b ? act->b : y[i];
        break;
    case KACT_HSIGMOID:
        for (int64_t i = 0; i < n; i++) {
            float v = act->a * y[i] + act->b;
            y[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
        }
        break;
    case KACT_HSWISH:
        for (int64_t i = 0; i < n; i++) {
            float v = y[i] * (1.0f / 6) + 0.5f;
            y[i] *= v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v; /* NaN stays NaN */
        }
        break;
    default:
        break;
    }
}
