/* Element types: sizes, names and the float16 / bfloat16 / float8 conversions kernels share. */
#ifndef KILN_DTYPE_H
#define KILN_DTYPE_H

#include "kiln.h"
#include <stdint.h>
#include <string.h>

typedef uint16_t kiln_f16;  /* IEEE binary16 bits */
typedef uint16_t kiln_bf16; /* bfloat16 bits */

int kiln_dtype_valid(int dt);
int kiln_dtype_is_float(int dt);   /* float, double, float16, bfloat16, float8 */
int kiln_dtype_is_signed_int(int dt);
int kiln_dtype_is_unsigned_int(int dt);
int kiln_dtype_is_integer(int dt);
/* bytes needed for n elements (rounds up for 4-bit types; string counts pointers) */
size_t kiln_dtype_bytes(int dt, int64_t n);

static inline float kiln_f16_to_f32(kiln_f16 h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            int e = -1;
            do { e++; man <<= 1; } while (!(man & 0x400));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((man & 0x3ff) << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline kiln_f16 kiln_f32_to_f16(float f) { /* round to nearest even */
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, absx = x & 0x7fffffffu;
    if (absx >= 0x7f800000u) return (kiln_f16)(sign | 0x7c00 | (absx > 0x7f800000u ? 0x200 : 0));
    if (absx >= 0x477ff000u) return (kiln_f16)(sign | 0x7c00); /* overflow -> inf */
    if (absx < 0x38800000u) {                                  /* subnormal or zero */
        if (absx < 0x33000000u) return (kiln_f16)sign;
        uint32_t e = absx >> 23, m = (absx & 0x7fffff) | 0x800000;
        uint32_t shift = 126 - e; /* 14 + (113 - e) */
        uint32_t half = m >> shift, rem = m & ((1u << shift) - 1), mid = 1u << (shift - 1);
        if (rem > mid || (rem == mid && (half & 1))) half++;
        return (kiln_f16)(sign | half);
    }
    uint32_t r = absx + 0xfffu + ((absx >> 13) & 1); /* round mantissa to 10 bits */
    return (kiln_f16)(sign | ((r - 0x38000000u) >> 13));
}

static inline float kiln_bf16_to_f32(kiln_bf16 b) {
    uint32_t bits = (uint32_t)b << 16;
    float f;
    memcpy(&f, &bits, 4);
    return f;
}

static inline kiln_bf16 kiln_f32_to_bf16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    if ((x & 0x7fffffffu) > 0x7f800000u) return (kiln_bf16)((x >> 16) | 0x40); /* quiet NaN */
    x += 0x7fffu + ((x >> 16) & 1);
    return (kiln_bf16)(x >> 16);
}

/* float8 conversions (ONNX semantics; saturate as in Cast's default). Defined in dtype.c. */
float kiln_f8_to_f32(int dt, uint8_t v);
uint8_t kiln_f32_to_f8(int dt, float f, int saturate);

/* Reads element i of a numeric buffer of type dt as double / int64 (for generic slow paths such
 * as attribute-driven shape logic and tests); writes likewise. */
double kiln_load_f64(int dt, const void *p, int64_t i);
int64_t kiln_load_i64(int dt, const void *p, int64_t i);
void kiln_store_f64(int dt, void *p, int64_t i, double v);

#endif
