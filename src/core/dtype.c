#include "dtype.h"
#include <math.h>

static const struct { const char *name; size_t size; } dtype_table[] = {
    [KILN_DTYPE_UNDEFINED] = {"undefined", 0}, [KILN_DTYPE_FLOAT] = {"float32", 4},
    [KILN_DTYPE_UINT8] = {"uint8", 1},         [KILN_DTYPE_INT8] = {"int8", 1},
    [KILN_DTYPE_UINT16] = {"uint16", 2},       [KILN_DTYPE_INT16] = {"int16", 2},
    [KILN_DTYPE_INT32] = {"int32", 4},         [KILN_DTYPE_INT64] = {"int64", 8},
    [KILN_DTYPE_STRING] = {"string", sizeof(char *)}, [KILN_DTYPE_BOOL] = {"bool", 1},
    [KILN_DTYPE_FLOAT16] = {"float16", 2},     [KILN_DTYPE_DOUBLE] = {"float64", 8},
    [KILN_DTYPE_UINT32] = {"uint32", 4},       [KILN_DTYPE_UINT64] = {"uint64", 8},
    [KILN_DTYPE_COMPLEX64] = {"complex64", 8}, [KILN_DTYPE_COMPLEX128] = {"complex128", 16},
    [KILN_DTYPE_BFLOAT16] = {"bfloat16", 2},   [KILN_DTYPE_FLOAT8E4M3FN] = {"float8e4m3fn", 1},
    [KILN_DTYPE_FLOAT8E4M3FNUZ] = {"float8e4m3fnuz", 1}, [KILN_DTYPE_FLOAT8E5M2] = {"float8e5m2", 1},
    [KILN_DTYPE_FLOAT8E5M2FNUZ] = {"float8e5m2fnuz", 1}, [KILN_DTYPE_UINT4] = {"uint4", 0},
    [KILN_DTYPE_INT4] = {"int4", 0},           [KILN_DTYPE_FLOAT4E2M1] = {"float4e2m1", 0},
    [KILN_DTYPE_FLOAT8E8M0] = {"float8e8m0", 1}, [KILN_DTYPE_UINT2] = {"uint2", 0},
    [KILN_DTYPE_INT2] = {"int2", 0},
};
#define N_DTYPES ((int)(sizeof dtype_table / sizeof dtype_table[0]))

int kiln_dtype_valid(int dt) { return dt > 0 && dt < N_DTYPES; }

const char *kiln_dtype_name(kiln_dtype dt) {
    if (dt == KILN_DTYPE_SIZED_STRING) return "string (sized)";
    return ((int)dt >= 0 && (int)dt < N_DTYPES) ? dtype_table[dt].name : "invalid-dtype";
}

size_t kiln_dtype_size(kiln_dtype dt) { return kiln_dtype_valid(dt) ? dtype_table[dt].size : 0; }

size_t kiln_dtype_bytes(int dt, int64_t n) {
    if (n <= 0) return 0;
    if (dt == KILN_DTYPE_INT4 || dt == KILN_DTYPE_UINT4 || dt == KILN_DTYPE_FLOAT4E2M1) return (size_t)(n + 1) / 2;
    if (dt == KILN_DTYPE_INT2 || dt == KILN_DTYPE_UINT2) return (size_t)(n + 3) / 4;
    return (size_t)n * kiln_dtype_size(dt);
}

int kiln_dtype_is_float(int dt) {
    return dt == KILN_DTYPE_FLOAT || dt == KILN_DTYPE_DOUBLE || dt == KILN_DTYPE_FLOAT16 ||
           dt == KILN_DTYPE_BFLOAT16 || (dt >= KILN_DTYPE_FLOAT8E4M3FN && dt <= KILN_DTYPE_FLOAT8E5M2FNUZ);
}
int kiln_dtype_is_signed_int(int dt) {
    return dt == KILN_DTYPE_INT8 || dt == KILN_DTYPE_INT16 || dt == KILN_DTYPE_INT32 ||
           dt == KILN_DTYPE_INT64 || dt == KILN_DTYPE_INT4 || dt == KILN_DTYPE_INT2;
}
int kiln_dtype_is_unsigned_int(int dt) {
    return dt == KILN_DTYPE_UINT8 || dt == KILN_DTYPE_UINT16 || dt == KILN_DTYPE_UINT32 ||
           dt == KILN_DTYPE_UINT64 || dt == KILN_DTYPE_UINT4 || dt == KILN_DTYPE_UINT2;
}
int kiln_dtype_is_integer(int dt) { return kiln_dtype_is_signed_int(dt) || kiln_dtype_is_unsigned_int(dt); }

/* float8: decode by fields. e4m3fn: bias 7, no inf, 0x7f/0xff NaN. e4m3fnuz: bias 8, 0x80 NaN,
 * no -0. e5m2: bias 15, IEEE-like inf/NaN. e5m2fnuz: bias 16, 0x80 NaN. */
float kiln_f8_to_f32(int dt, uint8_t v) {
    int ebits = (dt == KILN_DTYPE_FLOAT8E4M3FN || dt == KILN_DTYPE_FLOAT8E4M3FNUZ) ? 4 : 5;
    int mbits = 7 - ebits;
    int bias = dt == KILN_DTYPE_FLOAT8E4M3FN ? 7 : dt == KILN_DTYPE_FLOAT8E4M3FNUZ ? 8
             : dt == KILN_DTYPE_FLOAT8E5M2 ? 15 : 16;
    int fnuz = dt == KILN_DTYPE_FLOAT8E4M3FNUZ || dt == KILN_DTYPE_FLOAT8E5M2FNUZ;
    if (fnuz && v == 0x80) return NAN;
    int sign = v >> 7, e = (v >> mbits) & ((1 << ebits) - 1), m = v & ((1 << mbits) - 1);
    if (dt == KILN_DTYPE_FLOAT8E4M3FN && e == 15 && m == 7) return NAN;
    if (dt == KILN_DTYPE_FLOAT8E5M2 && e == 31) return m ? NAN : (sign ? -INFINITY : INFINITY);
    float r = e == 0 ? ldexpf((float)m, 1 - bias - mbits) : ldexpf((float)(m | (1 << mbits)), e - bias - mbits);
    return sign ? -r : r;
}

uint8_t kiln_f32_to_f8(int dt, float f, int saturate) {
    /* Search the 256 codes for the nearest, ties to even code: simple and exactly ONNX's rounding
     * (round to nearest even), at the cost of speed; Cast kernels needing speed use a table. */
    int fnuz = dt == KILN_DTYPE_FLOAT8E4M3FNUZ || dt == KILN_DTYPE_FLOAT8E5M2FNUZ;
    if (isnan(f)) return fnuz ? 0x80 : 0x7f;
    float maxv = dt == KILN_DTYPE_FLOAT8E4M3FN ? 448.f : dt == KILN_DTYPE_FLOAT8E4M3FNUZ ? 240.f
               : 57344.f;
    /* beyond the largest finite value but rounding down to it (ties to even) is not overflow */
    float round_limit = dt == KILN_DTYPE_FLOAT8E4M3FN ? 464.f : dt == KILN_DTYPE_FLOAT8E4M3FNUZ ? 248.f : 61440.f;
    int rounds_to_max = dt == KILN_DTYPE_FLOAT8E4M3FN ? fabsf(f) <= round_limit : fabsf(f) < round_limit;
    if (!isinf(f) && fabsf(f) > maxv && rounds_to_max) f = f > 0 ? maxv : -maxv;
    if (isinf(f) || fabsf(f) > maxv) {
        if (saturate) {
            f = f > 0 ? maxv : -maxv;
        } else {
            if (dt == KILN_DTYPE_FLOAT8E5M2) return f > 0 ? 0x7c : 0xfc;
            if (fnuz) return 0x80;
            return f > 0 ? 0x7f : 0xff;
        }
    }
    uint8_t best = 0;
    float bestd = INFINITY;
    for (int c = 0; c < 256; c++) {
        float v = kiln_f8_to_f32(dt, (uint8_t)c);
        if (isnan(v) || isinf(v)) continue;
        if (fnuz && c == 0x80) continue;
        float d = fabsf(v - f);
        if (d < bestd || (d == bestd && !(c & 1) && (best & 1))) {
            if (d == bestd && signbit(v) != signbit(f)) continue;
            best = (uint8_t)c;
            bestd = d;
        }
    }
    if (bestd == 0 && f == 0 && signbit(f) && !fnuz) return 0x80;
    return best;
}

double kiln_load_f64(int dt, const void *p, int64_t i) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: return ((const float *)p)[i];
    case KILN_DTYPE_DOUBLE: return ((const double *)p)[i];
    case KILN_DTYPE_FLOAT16: return kiln_f16_to_f32(((const uint16_t *)p)[i]);
    case KILN_DTYPE_BFLOAT16: return kiln_bf16_to_f32(((const uint16_t *)p)[i]);
    case KILN_DTYPE_INT8: return ((const int8_t *)p)[i];
    case KILN_DTYPE_UINT8: return ((const uint8_t *)p)[i];
    case KILN_DTYPE_BOOL: return ((const uint8_t *)p)[i] != 0;
    case KILN_DTYPE_INT16: return ((const int16_t *)p)[i];
    case KILN_DTYPE_UINT16: return ((const uint16_t *)p)[i];
    case KILN_DTYPE_INT32: return ((const int32_t *)p)[i];
    case KILN_DTYPE_UINT32: return ((const uint32_t *)p)[i];
    case KILN_DTYPE_INT64: return (double)((const int64_t *)p)[i];
    case KILN_DTYPE_UINT64: return (double)((const uint64_t *)p)[i];
    case KILN_DTYPE_FLOAT8E4M3FN: case KILN_DTYPE_FLOAT8E4M3FNUZ:
    case KILN_DTYPE_FLOAT8E5M2: case KILN_DTYPE_FLOAT8E5M2FNUZ:
        return kiln_f8_to_f32(dt, ((const uint8_t *)p)[i]);
    default: return 0;
    }
}

int64_t kiln_load_i64(int dt, const void *p, int64_t i) {
    switch (dt) {
    case KILN_DTYPE_INT64: return ((const int64_t *)p)[i];
    case KILN_DTYPE_UINT64: return (int64_t)((const uint64_t *)p)[i];
    case KILN_DTYPE_INT32: return ((const int32_t *)p)[i];
    default: return (int64_t)kiln_load_f64(dt, p, i);
    }
}

void kiln_store_f64(int dt, void *p, int64_t i, double v) {
    switch (dt) {
    case KILN_DTYPE_FLOAT: ((float *)p)[i] = (float)v; break;
    case KILN_DTYPE_DOUBLE: ((double *)p)[i] = v; break;
    case KILN_DTYPE_FLOAT16: ((uint16_t *)p)[i] = kiln_f32_to_f16((float)v); break;
    case KILN_DTYPE_BFLOAT16: ((uint16_t *)p)[i] = kiln_f32_to_bf16((float)v); break;
    case KILN_DTYPE_INT8: ((int8_t *)p)[i] = (int8_t)v; break;
    case KILN_DTYPE_UINT8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case KILN_DTYPE_BOOL: ((uint8_t *)p)[i] = v != 0; break;
    case KILN_DTYPE_INT16: ((int16_t *)p)[i] = (int16_t)v; break;
    case KILN_DTYPE_UINT16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case KILN_DTYPE_INT32: ((int32_t *)p)[i] = (int32_t)v; break;
    case KILN_DTYPE_UINT32: ((uint32_t *)p)[i] = (uint32_t)v; break;
    case KILN_DTYPE_INT64: ((int64_t *)p)[i] = (int64_t)v; break;
    case KILN_DTYPE_UINT64: ((uint64_t *)p)[i] = (uint64_t)v; break;
    default: break;
    }
}
