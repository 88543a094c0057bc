/* Vectorised float sigmoid and tanh for the recurrent cells, where libm's tanhf/expf calls (one
 * per gate element per step) would cost as much as the GEMMs. Written with GCC/Clang vector
 * extensions, 4 lanes (one SSE / NEON register) at a time, so they vectorise with any -O level
 * and target.
 *
 * exp: x = n ln2 + r with n = round(x log2 e) and |r| <= ln2/2; e^r by its Taylor series to r^6
 * (truncation error below 2e-7 relative), scaled by 2^n assembled in the exponent bits. Inputs
 * are clamped to [-87, 88] so 2^n stays a normal float. Absolute error of sigmoid and tanh is
 * a few 1e-7, relative error of tanh near 0 is kept small by its odd series for |x| < 0.04.
 * The same steps run 16 lanes at a time on AVX-512 and 8 at a time on AVX2+FMA (below), and so
 * does a one-pass LSTM gate block of the default activations. */
#ifndef KILN_RNN_FASTMATH_H
#define KILN_RNN_FASTMATH_H

#include <stdint.h>
#include <string.h>

/* exp, sigmoid and tanh on one vector width V (rnn_V##_splat and rnn_V##_select defined first):
 * one text for every width, so a lane's value is the same steps whichever width computed it (up
 * to the contraction of multiply-adds, which the target decides). */
#define RNN_DEFINE_VMATH(V, ATTR)                                                                  \
    ATTR rnn_##V##f rnn_##V##_exp(rnn_##V##f x) {                                                  \
        const rnn_##V##f lo = rnn_##V##_splat(-87.0f), hi = rnn_##V##_splat(88.0f);               \
        x = rnn_##V##_select(x < lo, lo, x);                                                       \
        x = rnn_##V##_select(x > hi, hi, x);                                                       \
        rnn_##V##f t = x * rnn_##V##_splat(1.44269504089f);                                        \
        t += rnn_##V##_select(t < rnn_##V##_splat(0.0f), rnn_##V##_splat(-0.5f),                   \
                              rnn_##V##_splat(0.5f));                                              \
        rnn_##V##i ni = __builtin_convertvector(t, rnn_##V##i); /* truncation after +-0.5 */      \
        rnn_##V##f n = __builtin_convertvector(ni, rnn_##V##f);                                    \
        rnn_##V##f r = x - n * rnn_##V##_splat(0.693145751953125f) -                               \
                       n * rnn_##V##_splat(1.428606765330187e-06f);                                \
        rnn_##V##f p = rnn_##V##_splat(1.0f / 720.0f);                                             \
        p = p * r + rnn_##V##_splat(1.0f / 120.0f);                                                \
        p = p * r + rnn_##V##_splat(1.0f / 24.0f);                                                 \
        p = p * r + rnn_##V##_splat(1.0f / 6.0f);                                                  \
        p = p * r + rnn_##V##_splat(0.5f);                                                         \
        p = p * r + rnn_##V##_splat(1.0f);                                                         \
        p = p * r + rnn_##V##_splat(1.0f);                                                         \
        rnn_##V##i bits = (ni + 127) << 23;                                                        \
        return p * (rnn_##V##f)bits;                                                               \
    }                                                                                              \
    ATTR rnn_##V##f rnn_##V##_sigmoid(rnn_##V##f x) {                                              \
        const rnn_##V##f one = rnn_##V##_splat(1.0f);                                              \
        return one / (one + rnn_##V##_exp(-x));                                                    \
    }                                                                                              \
    ATTR rnn_##V##f rnn_##V##_tanh(rnn_##V##f x) {                                                 \
        const rnn_##V##f one = rnn_##V##_splat(1.0f), two = rnn_##V##_splat(2.0f);                 \
        rnn_##V##f big = one - two / (rnn_##V##_exp(x * two) + one);                               \
        rnn_##V##f x2 = x * x;                                                                     \
        rnn_##V##f small = x - x * x2 * rnn_##V##_splat(1.0f / 3.0f);                              \
        return rnn_##V##_select(x2 < rnn_##V##_splat(0.0016f), small, big);                        \
    }

typedef float rnn_v4f __attribute__((vector_size(16)));
typedef int32_t rnn_v4i __attribute__((vector_size(16)));

static inline rnn_v4f rnn_v4_splat(float v) { return (rnn_v4f){v, v, v, v}; }

static inline rnn_v4f rnn_v4_select(rnn_v4i mask, rnn_v4f a, rnn_v4f b) {
    return (rnn_v4f)((mask & (rnn_v4i)a) | (~mask & (rnn_v4i)b));
}

RNN_DEFINE_VMATH(v4, static inline)

/* Applies f in place to x[0..n), the tail through a padded lane block. */
#define RNN_V4_APPLY(name, fn)                                                                      \
    static inline void name(float *x, int64_t n) {                                                  \
        int64_t k = 0;                                                                              \
        for (; k + 4 <= n; k += 4) {                                                                \
            rnn_v4f v;                                                                              \
            memcpy(&v, x + k, sizeof v);                                                            \
            v = fn(v);                                                                              \
            memcpy(x + k, &v, sizeof v);                                                            \
        }                                                                                           \
        if (k < n) {                                                                                \
            rnn_v4f v = rnn_v4_splat(0.0f);                                                         \
            memcpy(&v, x + k, (size_t)(n - k) * sizeof(float));                                     \
            v = fn(v);                                                                              \
            memcpy(x + k, &v, (size_t)(n - k) * sizeof(float));                                     \
        }                                                                                           \
    }

RNN_V4_APPLY(rnn_sigmoid4_f32, rnn_v4_sigmoid)
RNN_V4_APPLY(rnn_tanh4_f32, rnn_v4_tanh)

#if defined(__GNUC__) && defined(__x86_64__)
#include "gemm_util.h"
/* The same arithmetic 16 lanes at a time where the CPU has AVX-512F: the 4-lane form made the gate
 * activations a sixth of a batch-8 bidirectional LSTM. Lane for lane the same steps, so both
 * forms agree up to the contraction of multiply-adds. */
typedef float rnn_v16f __attribute__((vector_size(64)));
typedef int32_t rnn_v16i __attribute__((vector_size(64)));
#define RNN_AVX512 __attribute__((target("avx512f"))) static inline

RNN_AVX512 rnn_v16f rnn_v16_splat(float v) { return (rnn_v16f){0} + v; }

RNN_AVX512 rnn_v16f rnn_v16_select(rnn_v16i mask, rnn_v16f a, rnn_v16f b) {
    return (rnn_v16f)((mask & (rnn_v16i)a) | (~mask & (rnn_v16i)b));
}

RNN_DEFINE_VMATH(v16, RNN_AVX512)

/* Whole 16-lane blocks of x[0..n); returns how many elements were done. */
#define RNN_V16_APPLY(name, fn)                                                                     \
    __attribute__((target("avx512f"))) static int64_t name(float *x, int64_t n) {                   \
        int64_t k = 0;                                                                              \
        for (; k + 16 <= n; k += 16) {                                                              \
            rnn_v16f v;                                                                             \
            memcpy(&v, x + k, sizeof v);                                                            \
            v = fn(v);                                                                              \
            memcpy(x + k, &v, sizeof v);                                                            \
        }                                                                                           \
        return k;                                                                                   \
    }
RNN_V16_APPLY(rnn_sigmoid16_f32, rnn_v16_sigmoid)
RNN_V16_APPLY(rnn_tanh16_f32, rnn_v16_tanh)

#define RNN_LD(v, ptr) memcpy(&v, (ptr) + k, sizeof v)
#define RNN_LDG(v, ptr) memcpy(&v, (ptr) + kg, sizeof v)
/* One LSTM step for units [0, n) with the default activations (sigmoid, tanh, tanh), no clip and
 * no coupled input-forget gate, in one pass: g* hold the recurrent products of gates i, o, f, c
 * (units k to k + 15 at g* + k / 16 * gs: 16 when contiguous, wider when rnn_pack.c's blocks
 * interleave the gates), x* the input projections, p* the peepholes (all NULL or none), c the
 * cell state (updated), h the new hidden state; only whole 16-unit blocks (k from 0 in steps of
 * 16, k + 16 <= n). */
__attribute__((target("avx512f"))) static void
rnn_lstm_block16_f32(const float *gi, const float *go, const float *gf, const float *gc, int64_t gs,
                     const float *xi, const float *xo, const float *xf, const float *xc, const float *pi,
                     const float *po, const float *pf, float *c, float *h, int64_t n) {
    for (int64_t k = 0, kg = 0; k + 16 <= n; k += 16, kg += gs) {
        rnn_v16f i, o, f, g, x, cv;
        RNN_LD(cv, c);
        RNN_LDG(i, gi), RNN_LD(x, xi), i += x;
        RNN_LDG(f, gf), RNN_LD(x, xf), f += x;
        RNN_LDG(g, gc), RNN_LD(x, xc), g += x;
        RNN_LDG(o, go), RNN_LD(x, xo), o += x;
        if (pi) {
            rnn_v16f q;
            RNN_LD(q, pi), i += q * cv;
            RNN_LD(q, pf), f += q * cv;
        }
        cv = rnn_v16_sigmoid(f) * cv + rnn_v16_sigmoid(i) * rnn_v16_tanh(g);
        if (po) {
            rnn_v16f q;
            RNN_LD(q, po), o += q * cv;
        }
        rnn_v16f hv = rnn_v16_sigmoid(o) * rnn_v16_tanh(cv);
        memcpy(c + k, &cv, sizeof cv);
        memcpy(h + k, &hv, sizeof hv);
    }
}
#undef RNN_LD
#undef RNN_LDG

/* rnn_lstm_block16_f32 for any n: the units past the last whole block go through a zero-padded
 * block. The separate passes this replaces (adds, four activations, two products, a copy) each
 * re-read the gates: at batch 8 they cost a sixth of the node. */
static inline void rnn_lstm_units16_f32(const float *gi, const float *go, const float *gf, const float *gc,
                                        int64_t gs, const float *xi, const float *xo, const float *xf,
                                        const float *xc, const float *pi, const float *po, const float *pf,
                                        float *c, float *h, int64_t n) {
    rnn_lstm_block16_f32(gi, go, gf, gc, gs, xi, xo, xf, xc, pi, po, pf, c, h, n);
    const int64_t k = n / 16 * 16, r = n - k, kg = n / 16 * gs;
    if (!r) return;
    float t[13][16] = {{0}};
    const float *src[11] = {gi, go, gf, gc, xi, xo, xf, xc, pi, po, pf};
    for (int q = 0; q < 11; q++)
        if (src[q]) memcpy(t[q], src[q] + (q < 4 ? kg : k), (size_t)r * sizeof(float));
    memcpy(t[11], c + k, (size_t)r * sizeof(float));
    rnn_lstm_block16_f32(t[0], t[1], t[2], t[3], 16, t[4], t[5], t[6], t[7], pi ? t[8] : NULL, po ? t[9] : NULL,
                         pf ? t[10] : NULL, t[11], t[12], 16);
    memcpy(c + k, t[11], (size_t)r * sizeof(float));
    memcpy(h + k, t[12], (size_t)r * sizeof(float));
}


/* The same arithmetic 8 lanes at a time on CPUs with AVX2 and FMA but no AVX-512, where the
 * 4-lane form left the gate activations as costly as on AVX-512 before its 16-lane form. Lane
 * for lane the steps of the 4- and 16-lane forms, with multiply-adds contracted as in the latter. */
typedef float rnn_v8f __attribute__((vector_size(32)));
typedef int32_t rnn_v8i __attribute__((vector_size(32)));
#define RNN_AVX2 __attribute__((target("avx2,fma"))) static inline

RNN_AVX2 rnn_v8f rnn_v8_splat(float v) { return (rnn_v8f){0} + v; }

RNN_AVX2 rnn_v8f rnn_v8_select(rnn_v8i mask, rnn_v8f a, rnn_v8f b) {
    return (rnn_v8f)((mask & (rnn_v8i)a) | (~mask & (rnn_v8i)b));
}

RNN_DEFINE_VMATH(v8, RNN_AVX2)

/* Whole 8-lane blocks of x[0..n); returns how many elements were done. */
#define RNN_V8_APPLY(name, fn)                                                                      \
    __attribute__((target("avx2,fma"))) static int64_t name(float *x, int64_t n) {                  \
        int64_t k = 0;                                                                              \
        for (; k + 8 <= n; k += 8) {                                                                \
            rnn_v8f v;                                                                              \
            memcpy(&v, x + k, sizeof v);                                                            \
            v = fn(v);                                                                              \
            memcpy(x + k, &v, sizeof v);                                                            \
        }                                                                                           \
        return k;                                                                                   \
    }
RNN_V8_APPLY(rnn_sigmoid8_f32, rnn_v8_sigmoid)
RNN_V8_APPLY(rnn_tanh8_f32, rnn_v8_tanh)

#define RNN_LD(v, ptr) memcpy(&v, (ptr) + k, sizeof v)
#define RNN_LDG(v, ptr) memcpy(&v, (ptr) + kg, sizeof v)
/* rnn_lstm_block16_f32's step 8 units at a time: the gates keep the layout of 16-unit blocks
 * (units k to k + 15 at g* + k / 16 * gs), so units k to k + 7 lie at g* + k / 16 * gs + k % 16.
 * Only whole 8-unit blocks (k + 8 <= n). */
__attribute__((target("avx2,fma"))) static void
rnn_lstm_block8_f32(const float *gi, const float *go, const float *gf, const float *gc, int64_t gs,
                    const float *xi, const float *xo, const float *xf, const float *xc, const float *pi,
                    const float *po, const float *pf, float *c, float *h, int64_t n) {
    for (int64_t k = 0; k + 8 <= n; k += 8) {
        const int64_t kg = k / 16 * gs + k % 16;
        rnn_v8f i, o, f, g, x, cv;
        RNN_LD(cv, c);
        RNN_LDG(i, gi), RNN_LD(x, xi), i += x;
        RNN_LDG(f, gf), RNN_LD(x, xf), f += x;
        RNN_LDG(g, gc), RNN_LD(x, xc), g += x;
        RNN_LDG(o, go), RNN_LD(x, xo), o += x;
        if (pi) {
            rnn_v8f q;
            RNN_LD(q, pi), i += q * cv;
            RNN_LD(q, pf), f += q * cv;
        }
        cv = rnn_v8_sigmoid(f) * cv + rnn_v8_sigmoid(i) * rnn_v8_tanh(g);
        if (po) {
            rnn_v8f q;
            RNN_LD(q, po), o += q * cv;
        }
        rnn_v8f hv = rnn_v8_sigmoid(o) * rnn_v8_tanh(cv);
        memcpy(c + k, &cv, sizeof cv);
        memcpy(h + k, &hv, sizeof hv);
    }
}
#undef RNN_LD
#undef RNN_LDG

/* rnn_lstm_block8_f32 for any n: the last n % 8 units (inside one 16-unit block) through a
 * zero-padded block, as rnn_lstm_units16_f32 does. */
static inline void rnn_lstm_units8_f32(const float *gi, const float *go, const float *gf, const float *gc,
                                       int64_t gs, const float *xi, const float *xo, const float *xf,
                                       const float *xc, const float *pi, const float *po, const float *pf,
                                       float *c, float *h, int64_t n) {
    rnn_lstm_block8_f32(gi, go, gf, gc, gs, xi, xo, xf, xc, pi, po, pf, c, h, n);
    const int64_t k = n / 8 * 8, r = n - k, kg = k / 16 * gs + k % 16;
    if (!r) return;
    float t[13][8] = {{0}};
    const float *src[11] = {gi, go, gf, gc, xi, xo, xf, xc, pi, po, pf};
    for (int q = 0; q < 11; q++)
        if (src[q]) memcpy(t[q], src[q] + (q < 4 ? kg : k), (size_t)r * sizeof(float));
    memcpy(t[11], c + k, (size_t)r * sizeof(float));
    rnn_lstm_block8_f32(t[0], t[1], t[2], t[3], 16, t[4], t[5], t[6], t[7], pi ? t[8] : NULL, po ? t[9] : NULL,
                        pf ? t[10] : NULL, t[11], t[12], 8);
    memcpy(c + k, t[11], (size_t)r * sizeof(float));
    memcpy(h + k, t[12], (size_t)r * sizeof(float));
}

/* The 8-lane forms run where the packed product's AVX2 engine does (AVX2+FMA, no AVX-512, or
 * KILN_NO_AVX512 set): KILN_NO_AVX2=1 then turns them off with it, for A/B runs against the
 * 4-lane forms and the unfused LSTM gates. */
static inline int rnn_avx2_on(void) {
    return !kgemm_avx512_available() && kgemm_avx2_available() && kgemm_packed_available();
}

static inline void rnn_sigmoid_f32(float *x, int64_t n) {
    int64_t k = kgemm_avx512_available() ? (n >= 16 ? rnn_sigmoid16_f32(x, n) : 0)
                : n >= 8 && rnn_avx2_on() ? rnn_sigmoid8_f32(x, n)
                                          : 0;
    rnn_sigmoid4_f32(x + k, n - k);
}
static inline void rnn_tanh_f32(float *x, int64_t n) {
    int64_t k = kgemm_avx512_available() ? (n >= 16 ? rnn_tanh16_f32(x, n) : 0)
                : n >= 8 && rnn_avx2_on() ? rnn_tanh8_f32(x, n)
                                          : 0;
    rnn_tanh4_f32(x + k, n - k);
}

/* The one-pass LSTM gates (see rnn_lstm_block16_f32) in the widest form this CPU runs; only
 * where rnn_lstm_fused_ok(). */
static inline int rnn_lstm_fused_ok(void) { return kgemm_avx512_available() || rnn_avx2_on(); }
static inline void rnn_lstm_units_f32(const float *gi, const float *go, const float *gf, const float *gc,
                                      int64_t gs, const float *xi, const float *xo, const float *xf,
                                      const float *xc, const float *pi, const float *po, const float *pf,
                                      float *c, float *h, int64_t n) {
    if (kgemm_avx512_available()) rnn_lstm_units16_f32(gi, go, gf, gc, gs, xi, xo, xf, xc, pi, po, pf, c, h, n);
    else rnn_lstm_units8_f32(gi, go, gf, gc, gs, xi, xo, xf, xc, pi, po, pf, c, h, n);
}
#define RNN_HAVE_LSTM_UNITS16 1
#else
#define rnn_sigmoid_f32 rnn_sigmoid4_f32
#define rnn_tanh_f32 rnn_tanh4_f32
#endif

#endif
