/* Element access shared by the quantisation, image, signal, random, string and ml kernels:
 * loading and storing float-like elements as float/double, and the sub-byte integer and float4
 * formats that the generic dtype helpers do not cover. Everything is static inline so that each
 * kernel file stays self-contained. */
#ifndef KILN_QUANT_ELEM_H
#define KILN_QUANT_ELEM_H

#include "ops/op.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

/* ONNX element types newer than kiln.h's enum; kernels handle them by number. */
#define QE_DTYPE_FLOAT4E2M1 23
#define QE_DTYPE_FLOAT8E8M0 24
#define QE_DTYPE_UINT2 25
#define QE_DTYPE_INT2 26

static inline int qe_is_float(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || dt == KILN_DTYPE_FLOAT16 ||
           dt == KILN_DTYPE_BFLOAT16;
}

static inline int qe_is_f8(int dt) {
    return dt >= KILN_DTYPE_FLOAT8E4M3FN && dt <= KILN_DTYPE_FLOAT8E5M2FNUZ;
}

/* bits per element for the packed types, 0 for byte-addressed ones */
static inline int qe_sub_bits(int dt) {
    if (dt == KILN_DTYPE_UINT4 || dt == KILN_DTYPE_INT4 || dt == QE_DTYPE_FLOAT4E2M1) return 4;
    if (dt == QE_DTYPE_UINT2 || dt == QE_DTYPE_INT2) return 2;
    return 0;
}

static inline float qe_f4_to_f32(unsigned v) {
    static const float mag[8] = {0.0f, 0.5f, 1.0f, 1.5f, 2.0f, 3.0f, 4.0f, 6.0f};
    float m = mag[v & 7];
    return (v & 8) ? -m : m;
}

/* float -> float4e2m1 (round to nearest even, saturating to +-6; NaN maps to +6 as in ONNX) */
static inline unsigned qe_f32_to_f4(float f) {
    unsigned sign = signbit(f) ? 8u : 0u;
    if (isnan(f)) return 7;
    float a = fabsf(f);
    /* midpoints between representable magnitudes; ties go to the even code */
    static const float mid[7] = {0.25f, 0.75f, 1.25f, 1.75f, 2.5f, 3.5f, 5.0f};
    unsigned code = 0;
    while (code < 7 && a > mid[code]) code++;
    if (code < 7 && a == mid[code] && (code & 1)) code++;
    return sign | code;
}

/* float -> float8 code, rounding to nearest even. Without saturation only values whose rounding
 * exceeds the largest finite one overflow (to inf for E5M2, NaN otherwise), as in onnxruntime. */
static inline uint8_t qe_f32_to_f8(int dt, float f, int saturate) {
    int fnuz = dt == KILN_DTYPE_FLOAT8E4M3FNUZ || dt == KILN_DTYPE_FLOAT8E5M2FNUZ;
    int mbits = (dt == KILN_DTYPE_FLOAT8E4M3FN || dt == KILN_DTYPE_FLOAT8E4M3FNUZ) ? 3 : 2;
    int bias = dt == KILN_DTYPE_FLOAT8E4M3FN ? 7 : dt == KILN_DTYPE_FLOAT8E4M3FNUZ ? 8
             : dt == KILN_DTYPE_FLOAT8E5M2 ? 15 : 16;
    float maxv = dt == KILN_DTYPE_FLOAT8E4M3FN ? 448.0f : dt == KILN_DTYPE_FLOAT8E4M3FNUZ ? 240.0f
               : 57344.0f;
    uint8_t nan_code = fnuz ? 0x80 : 0x7f;
    if (isnan(f)) return nan_code;
    uint8_t sign = signbit(f) ? 0x80 : 0;
    float a = fabsf(f);
    int emin = 1 - bias;
    float v;
    if (isinf(a)) {
        v = INFINITY;
    } else if (a < ldexpf(1.0f, emin)) { /* subnormal range: fixed quantum */
        v = ldexpf(rintf(ldexpf(a, mbits - emin)), emin - mbits);
    } else {
        int e = ilogbf(a);
        v = ldexpf(rintf(ldexpf(a, mbits - e)), e - mbits);
    }
    if (v > maxv) {
        if (saturate) v = maxv;
        else if (dt == KILN_DTYPE_FLOAT8E5M2) return (uint8_t)(sign | 0x7c);
        else return nan_code;
    }
    if (v == 0.0f) return fnuz ? 0 : sign;
    int e = ilogbf(v);
    unsigned code;
    if (e < emin) code = (unsigned)ldexpf(v, mbits - emin);
    else code = ((unsigned)(e + bias) << mbits) | ((unsigned)ldexpf(v, mbits - e) - (1u << mbits));
    return (uint8_t)(sign | code);
}

/* Raw unpacked code of element i of a packed sub-byte buffer (low bits first). */
static inline unsigned qe_sub_get(const void *p, int bits, int64_t i) {
    const uint8_t *b = (const uint8_t *)p;
    int per = 8 / bits;
    unsigned shift = (unsigned)((i % per) * bits);
    return (b[i / per] >> shift) & ((1u << bits) - 1u);
}

static inline void qe_sub_put(void *p, int bits, int64_t i, unsigned code) {
    uint8_t *b = (uint8_t *)p;
    int per = 8 / bits;
    unsigned shift = (unsigned)((i % per) * bits), mask = ((1u << bits) - 1u) << shift;
    b[i / per] = (uint8_t)((b[i / per] & ~mask) | ((code << shift) & mask));
}

static inline float qe_load_f32(int dt, const void *p, int64_t i) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return ((const float *)p)[i];
    case KILN_DTYPE_DOUBLE: return (float)((const double *)p)[i];
    case KILN_DTYPE_FLOAT16: return kiln_f16_to_f32(((const uint16_t *)p)[i]);
    case KILN_DTYPE_BFLOAT16: return kiln_bf16_to_f32(((const uint16_t *)p)[i]);
    case KILN_DTYPE_INT32: return (float)((const int32_t *)p)[i];
    case KILN_DTYPE_INT64: return (float)((const int64_t *)p)[i];
    case KILN_DTYPE_UINT8: return ((const uint8_t *)p)[i];
    case KILN_DTYPE_INT8: return ((const int8_t *)p)[i];
    case KILN_DTYPE_UINT16: return ((const uint16_t *)p)[i];
    case KILN_DTYPE_INT16: return ((const int16_t *)p)[i];
    case KILN_DTYPE_UINT4: case QE_DTYPE_UINT2: return (float)qe_sub_get(p, qe_sub_bits(dt), i);
    case KILN_DTYPE_INT4: { int v = (int)qe_sub_get(p, 4, i); return (float)(v >= 8 ? v - 16 : v); }
    case QE_DTYPE_INT2: { int v = (int)qe_sub_get(p, 2, i); return (float)(v >= 2 ? v - 4 : v); }
    case QE_DTYPE_FLOAT4E2M1: return qe_f4_to_f32(qe_sub_get(p, 4, i));
    case QE_DTYPE_FLOAT8E8M0: {
        uint8_t e = ((const uint8_t *)p)[i];
        return e == 0xff ? NAN : ldexpf(1.0f, (int)e - 127);
    }
    default:
        if (qe_is_f8(dt)) return kiln_f8_to_f32(dt, ((const uint8_t *)p)[i]);
        return (float)kiln_load_f64(dt, p, i);
    }
}

static inline double qe_load_f64(int dt, const void *p, int64_t i) {
    if (dt == KILN_DTYPE_DOUBLE) return ((const double *)p)[i];
    if (dt == KILN_DTYPE_INT64) return (double)((const int64_t *)p)[i];
    if (dt == KILN_DTYPE_UINT32) return (double)((const uint32_t *)p)[i];
    if (dt == KILN_DTYPE_UINT64) return (double)((const uint64_t *)p)[i];
    return (double)qe_load_f32(dt, p, i);
}

/* Stores a float into a float-like buffer (float, double, float16, bfloat16). */
static inline void qe_store_f32(int dt, void *p, int64_t i, float v) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: ((float *)p)[i] = v; break;
    case KILN_DTYPE_DOUBLE: ((double *)p)[i] = v; break;
    case KILN_DTYPE_FLOAT16: ((uint16_t *)p)[i] = kiln_f32_to_f16(v); break;
    case KILN_DTYPE_BFLOAT16: ((uint16_t *)p)[i] = kiln_f32_to_bf16(v); break;
    default: kiln_store_f64(dt, p, i, v); break;
    }
}

static inline void qe_store_f64(int dt, void *p, int64_t i, double v) {
    if (dt == KILN_DTYPE_DOUBLE) ((double *)p)[i] = v;
    else qe_store_f32(dt, p, i, (float)v);
}

/* Stores v into any numeric buffer; integers get C's truncating conversion (numpy's astype), with
 * out-of-range values clamped so that the conversion stays defined. */
static inline void qe_store_any(int dt, void *p, int64_t i, double v) {
    if (qe_is_float(dt)) {
        qe_store_f64(dt, p, i, v);
        return;
    }
    if (qe_is_f8(dt)) {
        ((uint8_t *)p)[i] = qe_f32_to_f8(dt, (float)v, 1);
        return;
    }
    if (isnan(v)) v = 0.0;
    v = trunc(v);
#define QE_CLAMPED(T, lo, hi) ((T)(v < (double)(lo) ? (lo) : v >= (double)(hi) ? (hi) : v))
    switch (dt) {
    case KILN_DTYPE_UINT8: ((uint8_t *)p)[i] = QE_CLAMPED(uint8_t, 0, UINT8_MAX); break;
    case KILN_DTYPE_INT8: ((int8_t *)p)[i] = QE_CLAMPED(int8_t, INT8_MIN, INT8_MAX); break;
    case KILN_DTYPE_UINT16: ((uint16_t *)p)[i] = QE_CLAMPED(uint16_t, 0, UINT16_MAX); break;
    case KILN_DTYPE_INT16: ((int16_t *)p)[i] = QE_CLAMPED(int16_t, INT16_MIN, INT16_MAX); break;
    case KILN_DTYPE_UINT32: ((uint32_t *)p)[i] = QE_CLAMPED(uint32_t, 0, UINT32_MAX); break;
    case KILN_DTYPE_INT32: ((int32_t *)p)[i] = QE_CLAMPED(int32_t, INT32_MIN, INT32_MAX); break;
    case KILN_DTYPE_UINT64: ((uint64_t *)p)[i] = QE_CLAMPED(uint64_t, 0, UINT64_MAX); break;
    case KILN_DTYPE_INT64: ((int64_t *)p)[i] = QE_CLAMPED(int64_t, INT64_MIN, INT64_MAX); break;
    case KILN_DTYPE_BOOL: ((uint8_t *)p)[i] = v != 0.0; break;
    default: kiln_store_f64(dt, p, i, v); break;
    }
#undef QE_CLAMPED
}

/* Shape of t as text, for messages (a static buffer per call site would not be thread-safe). */
#define QE_SHAPE(t, buf) kiln_shape_str((t), (buf), sizeof(buf))

/* True when every dim of t is concrete (also false for unknown rank). */
static inline int qe_known(const kiln_tensor *t) { return t && kiln_shape_concrete(t); }

#endif
