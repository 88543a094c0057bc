/* kconv_actv_apply (conv_act_avx512.h) on 8 lanes, for the AVX2 kernels that apply FusedConv's
 * activation on the way out of their registers (direct and channel-lane tiles, depthwise rows):
 * the same formulas as conv_geom.c's vector loops, so a value does not depend on the path it
 * took; max/min take the value second so NaN passes through. */
#ifndef KILN_CONV_ACT_AVX2_H
#define KILN_CONV_ACT_AVX2_H

#include "conv_act_avx512.h"

__attribute__((target("avx2,fma"), always_inline)) static inline __m256
kconv_actv_apply8(const kconv_actv *p, __m256 v) {
    switch (p->mode) {
    case KACTV_CLAMP:
        if (p->affine) v = _mm256_fmadd_ps(_mm256_set1_ps(p->a), v, _mm256_set1_ps(p->b));
        v = _mm256_max_ps(_mm256_set1_ps(p->lo), v);
        return p->hi == INFINITY ? v : _mm256_min_ps(_mm256_set1_ps(p->hi), v);
    case KACTV_HSWISH: {
        __m256 t = _mm256_fmadd_ps(v, _mm256_set1_ps(1.0f / 6), _mm256_set1_ps(0.5f));
        t = _mm256_min_ps(_mm256_set1_ps(1.0f), _mm256_max_ps(_mm256_setzero_ps(), t));
        return _mm256_mul_ps(v, t);
    }
    case KACTV_LEAKY: {
        __m256 neg = _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_LT_OQ);
        return _mm256_blendv_ps(v, _mm256_mul_ps(v, _mm256_set1_ps(p->a)), neg);
    }
    default: return v;
    }
}

#endif
