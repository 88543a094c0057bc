/* float8 codecs for Cast (E4M3FN, E4M3FNUZ, E5M2, E5M2FNUZ), kept here so the rounding and the
 * saturate rules are exactly the ones Cast documents: round to nearest even; with saturate,
 * out-of-range values and infinities go to the largest finite value; without it they become NaN
 * (or infinity for E5M2). The "FNUZ" formats have no negative zero and one NaN (0x80). */
#include "elementwise_util.h"

typedef struct f8_format {
    int mbits;          /* mantissa bits */
    int bias;
    uint8_t max_code;   /* largest finite magnitude code */
    int fnuz;           /* no -0, NaN is 0x80 */
    int has_inf;        /* E5M2: exponent all ones, mantissa 0 */
} f8_format;

static const f8_format *f8_fmt(int dt) {
    static const f8_format e4m3fn = {3, 7, 0x7e, 0, 0}, e4m3fnuz = {3, 8, 0x7f, 1, 0},
                           e5m2 = {2, 15, 0x7b, 0, 1}, e5m2fnuz = {2, 16, 0x7f, 1, 0};
    switch (dt) {
    case KILN_DTYPE_FLOAT8E4M3FN: return &e4m3fn;
    case KILN_DTYPE_FLOAT8E4M3FNUZ: return &e4m3fnuz;
    case KILN_DTYPE_FLOAT8E5M2: return &e5m2;
    default: return &e5m2fnuz;
    }
}

float kiln_cast_f8_to_f32(int dt, uint8_t v) {
    const f8_format *f = f8_fmt(dt);
    if (f->fnuz && v == 0x80) return NAN;
    int neg = v >> 7, mag = v & 0x7f;
    int e = mag >> f->mbits, m = mag & ((1 << f->mbits) - 1);
    if (!f->fnuz) {
        if (f->has_inf && e == (0x7f >> f->mbits)) return m ? NAN : (neg ? -INFINITY : INFINITY);
        if (!f->has_inf && mag == 0x7f) return NAN;
    }
    float r = e ? ldexpf((float)((1 << f->mbits) | m), e - f->bias - f->mbits)
                : ldexpf((float)m, 1 - f->bias - f->mbits);
    return neg ? -r : r;
}

uint8_t kiln_cast_f32_to_f8(int dt, float x, int saturate) {
    const f8_format *f = f8_fmt(dt);
    uint32_t bits;
    memcpy(&bits, &x, 4);
    uint8_t sign = (uint8_t)((bits >> 24) & 0x80);
    uint8_t nan = f->fnuz ? 0x80 : (uint8_t)(sign | (f->has_inf ? 0x7e : 0x7f));
    if (x != x) return nan;
    uint8_t overflow = saturate ? (uint8_t)(sign | f->max_code)
                       : f->has_inf ? (uint8_t)(sign | 0x7c)
                                    : nan;
    float ax = fabsf(x);
    if (isinf(ax)) return overflow;
    /* smallest normal exponent; below it the value is a multiple of the subnormal step */
    const int emin = 1 - f->bias;
    int e;
    frexpf(ax, &e); /* ax = frac * 2^e, frac in [0.5, 1): the leading bit has weight 2^(e-1) */
    int lead = e - 1;
    uint32_t code;
    if (ax == 0.0f) {
        code = 0;
    } else if (lead < emin) {
        /* subnormal: count steps of 2^(emin - mbits); the scaling is exact, rintf rounds to even;
         * a result of 2^mbits is the smallest normal, which the code layout gives for free */
        code = (uint32_t)rintf(ldexpf(ax, f->mbits - emin));
    } else {
        float q = rintf(ldexpf(ax, f->mbits - lead)); /* in [2^mbits, 2^(mbits+1)] */
        if (q >= (float)(2 << f->mbits)) {
            q *= 0.5f;
            lead++;
        }
        int biased = lead + f->bias;
        if (biased > (0x7f >> f->mbits)) return overflow;
        code = ((uint32_t)biased << f->mbits) | ((uint32_t)q & ((1u << f->mbits) - 1));
    }
    if (code > f->max_code) return overflow;
    if (code == 0 && f->fnuz) return 0; /* no negative zero */
    return (uint8_t)(sign | code);
}

/* ---- FLOAT4E2M1: 1 sign, 2 exponent (bias 1), 1 mantissa bit; values 0 .. 6, no inf or NaN.
 * Out-of-range values and infinities saturate to +-6. NaN has no code: like the ONNX reference
 * (ml_dtypes) it becomes a zero whose sign bit is the NaN's sign bit inverted. */

float kiln_cast_f4_to_f32(uint8_t v) {
    static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    return (v & 8) ? -mag[v & 7] : mag[v & 7];
}

uint8_t kiln_cast_f32_to_f4(float x) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    uint8_t sign = (uint8_t)((bits >> 28) & 8);
    if (x != x) return (uint8_t)(sign ^ 8);
    float ax = fabsf(x);
    if (ax >= 6.0f) return (uint8_t)(sign | 7);
    uint32_t code;
    if (ax < 1.0f) {
        code = (uint32_t)rintf(ax * 2.0f); /* halves; 2 is the smallest normal, 1.0 */
    } else {
        int e;
        frexpf(ax, &e);
        int lead = e - 1;                            /* 0, 1 or 2 */
        float q = rintf(ldexpf(ax, 1 - lead));        /* 2 or 3, or 4 on carry */
        if (q >= 4.0f) { q = 2.0f; lead++; }
        code = ((uint32_t)(lead + 1) << 1) | ((uint32_t)q & 1u);
        if (code > 7) code = 7;
    }
    return (uint8_t)(sign | code);
}

/* ---- FLOAT8E8M0: a bare exponent, 2^(v - 127); 0xFF is NaN; no sign and no zero. Encoding
 * follows the ONNX reference: the float32 exponent field, moved up when round_mode asks
 * (up: any fraction; nearest: by the guard/round/sticky rule; down: never), and with saturate
 * the largest finite code never steps into NaN. */

float kiln_cast_e8m0_to_f32(uint8_t v) {
    return v == 0xFF ? NAN : ldexpf(1.0f, (int)v - 127);
}

uint8_t kiln_cast_f32_to_e8m0(float x, int saturate, int round_mode) {
    uint32_t bits;
    memcpy(&bits, &x, 4);
    uint32_t e = (bits >> 23) & 0xFF;
    if (e == 0xFF) return 0xFF;
    int up = 0;
    if (round_mode == KILN_E8M0_ROUND_UP) {
        up = (bits & 0x7FFFFF) != 0;
    } else if (round_mode == KILN_E8M0_ROUND_NEAREST) {
        int g = (bits & 0x400000) != 0, r = (bits & 0x200000) != 0, s = (bits & 0x1FFFFF) != 0;
        up = g && (r || s || e > 0);
    }
    if (up && saturate && e == 0xFE) up = 0;
    return (uint8_t)(e + (uint32_t)up);
}
