/* FusedConv's piecewise-linear activations on a register of 16 outputs, for kernels that apply
 * them on the way out of a transpose (channel-lane tiles, 16-channel depthwise blocks). Calling
 * kconv_apply_act once per output row instead cost as much as the product itself where rows are
 * short: a 7x7 map's 160 -> 960 expansion with HardSwish spent 30% of its time there. Same
 * formulas as conv_geom.c's vector loop, so a value does not depend on which path it took. */
#ifndef KILN_CONV_ACT_AVX512_H
#define KILN_CONV_ACT_AVX512_H

#include "conv_util.h"
#include <immintrin.h>
#include <math.h>

enum { KACTV_NONE, KACTV_CLAMP, KACTV_HSWISH, KACTV_LEAKY, KACTV_OTHER };

typedef struct kconv_actv {
    int mode, affine; /* KACTV_*; affine: a*y + b before the clamp (HardSigmoid) */
    float a, b, lo, hi;
} kconv_actv;

/* KACTV_OTHER (Tanh, Sigmoid) has no register form: the caller applies those after storing. */
static inline kconv_actv kconv_actv_make(const kconv_act *act) {
    kconv_actv v = {KACTV_NONE, 0, 1.0f, 0.0f, 0.0f, INFINITY};
    if (!act) return v;
    switch (act->kind) {
    case KACT_NONE: break;
    case KACT_RELU: v.mode = KACTV_CLAMP; break;
    case KACT_CLIP: v.mode = KACTV_CLAMP; v.lo = act->a; v.hi = act->b; break;
    case KACT_HSIGMOID:
        v.mode = KACTV_CLAMP;
        v.affine = 1;
        v.a = act->a;
        v.b = act->b;
        v.hi = 1.0f;
        break;
    case KACT_HSWISH: v.mode = KACTV_HSWISH; break;
    case KACT_LEAKY: v.mode = KACTV_LEAKY; v.a = act->a; break;
    default: v.mode = KACTV_OTHER; break;
    }
    return v;
}

/* max/min return their second operand on NaN, so the value goes second: NaN passes through */
__attribute__((target("avx512f"), always_inline)) static inline __m512
kconv_actv_apply(const kconv_actv *p, __m512 v) {
    switch (p->mode) {
    case KACTV_CLAMP:
        if (p->affine) v = _mm512_fmadd_ps(_mm512_set1_ps(p->a), v, _mm512_set1_ps(p->b));
        v = _mm512_max_ps(_mm512_set1_ps(p->lo), v);
        return p->hi == INFINITY ? v : _mm512_min_ps(_mm512_set1_ps(p->hi), v);
    case KACTV_HSWISH: {
        __m512 t = _mm512_fmadd_ps(v, _mm512_set1_ps(1.0f / 6), _mm512_set1_ps(0.5f));
        t = _mm512_min_ps(_mm512_set1_ps(1.0f), _mm512_max_ps(_mm512_setzero_ps(), t));
        return _mm512_mul_ps(v, t);
    }
    case KACTV_LEAKY: {
        __mmask16 neg = _mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_LT_OQ);
        return _mm512_mask_mul_ps(v, neg, v, _mm512_set1_ps(p->a));
    }
    default: return v;
    }
}

#endif
