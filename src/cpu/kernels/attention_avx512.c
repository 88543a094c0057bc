/* AVX-512 block products of the attention core, used instead of cblas_sgemm when the CPU has
 * AVX-512F. The blocks are small (tens of rows, a key tile of ~128) and the same Q rows meet many
 * key tiles, so register-blocked kernels that read Q and V in place beat a general GEMM that packs
 * both operands on every call (and OpenBLAS's run-time kernel choice, which on CPUs it does not
 * know falls back to AVX2). */
#include "attention_kernels.h"

#include <stdint.h>
#include <string.h>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>

#define AVX512 __attribute__((target("avx512f")))

int kattn_have_avx512(void) {
    static _Atomic int have = -1; /* threads that race here all compute the same answer */
    if (have < 0) {
        __builtin_cpu_init();
        have = __builtin_cpu_supports("avx512f") ? 1 : 0;
    }
    return have;
}

/* 16 key rows × 16 head dims → 16 rows of kt (one per head dim) × 16 keys, in registers. */
AVX512 static inline void transpose16(const float *src, int64_t ss, float *dst, int64_t ds) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * ss);
    for (int i = 0; i < 16; i += 2) { /* interleave pairs of rows */
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) { /* 2×2 blocks of pairs */
        r[i] = _mm512_shuffle_ps(t[i], t[i + 2], 0x44);
        r[i + 1] = _mm512_shuffle_ps(t[i], t[i + 2], 0xee);
        r[i + 2] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0x44);
        r[i + 3] = _mm512_shuffle_ps(t[i + 1], t[i + 3], 0xee);
    }
    /* r[4g + c] now holds, in each 128-bit lane L, dims 4L + c of rows 4g .. 4g + 3 */
    for (int c = 0; c < 4; c++) {
        __m512 a = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);      /* lanes 0,2 of rows 0-7 */
        __m512 b = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);      /* lanes 1,3 */
        __m512 e = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        __m512 f = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
        t[c] = _mm512_shuffle_f32x4(a, e, 0x88);      /* dim c      */
        t[c + 8] = _mm512_shuffle_f32x4(a, e, 0xdd);  /* dim c + 8  */
        t[c + 4] = _mm512_shuffle_f32x4(b, f, 0x88);  /* dim c + 4  */
        t[c + 12] = _mm512_shuffle_f32x4(b, f, 0xdd); /* dim c + 12 */
    }
    for (int i = 0; i < 16; i++) _mm512_storeu_ps(dst + i * ds, t[i]);
}

AVX512 void kattn_pack_kt(const float *k, int64_t k_ss, int64_t tn, int64_t H, float *kt, int64_t tkp) {
    /* kt[h][j] = k[j][h]: keys become the vector dimension of the score kernel */
    int64_t j = 0, H16 = H / 16 * 16;
    for (; j + 16 <= tn; j += 16) {
        for (int64_t h = 0; h < H16; h += 16) transpose16(k + j * k_ss + h, k_ss, kt + h * tkp + j, tkp);
        for (int64_t h = H16; h < H; h++)
            for (int64_t i = 0; i < 16; i++) kt[h * tkp + j + i] = k[(j + i) * k_ss + h];
    }
    for (; j < tn; j++) {
        const float *row = k + j * k_ss;
        for (int64_t h = 0; h < H; h++) kt[h * tkp + j] = row[h];
    }
    if (tkp > tn)
        for (int64_t h = 0; h < H; h++) memset(kt + h * tkp + tn, 0, sizeof(float) * (size_t)(tkp - tn));
}

/* R query rows × 32 keys: acc[r] += q[r][h] * kt[h][0..31], then scaled into s. */
#define QK_KERNEL(R)                                                                               \
    AVX512 static inline void qk_rows##R(const float *q, int64_t qs, const float *kt, int64_t ks, \
                                         int64_t H, float scale, float *s, int64_t ss) {            \
        __m512 a0[R], a1[R];                                                                       \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                     \
            a0[r] = _mm512_setzero_ps();                                                           \
            a1[r] = _mm512_setzero_ps();                                                           \
        }                                                                                          \
        for (int64_t h = 0; h < H; h++) {                                                          \
            __m512 k0 = _mm512_loadu_ps(kt + h * ks), k1 = _mm512_loadu_ps(kt + h * ks + 16);     \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                 \
                __m512 qb = _mm512_set1_ps(q[r * qs + h]);                                         \
                a0[r] = _mm512_fmadd_ps(qb, k0, a0[r]);                                            \
                a1[r] = _mm512_fmadd_ps(qb, k1, a1[r]);                                            \
            }                                                                                      \
        }                                                                                          \
        __m512 vs = _mm512_set1_ps(scale);                                                         \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                     \
            _mm512_storeu_ps(s + r * ss, _mm512_mul_ps(a0[r], vs));                                \
            _mm512_storeu_ps(s + r * ss + 16, _mm512_mul_ps(a1[r], vs));                           \
        }                                                                                          \
    }

QK_KERNEL(8)
QK_KERNEL(4)
QK_KERNEL(1)

AVX512 void kattn_qk_avx512(const float *q, int64_t q_ss, int64_t rows, const float *kt,
                            int64_t kt_ss, int64_t cols, int64_t H, float scale, float *s, int64_t s_ss) {
    for (int64_t j0 = 0; j0 < cols; j0 += 32) {
        int64_t r = 0;
        for (; r + 8 <= rows; r += 8) qk_rows8(q + r * q_ss, q_ss, kt + j0, kt_ss, H, scale, s + r * s_ss + j0, s_ss);
        for (; r + 4 <= rows; r += 4) qk_rows4(q + r * q_ss, q_ss, kt + j0, kt_ss, H, scale, s + r * s_ss + j0, s_ss);
        for (; r < rows; r++) qk_rows1(q + r * q_ss, q_ss, kt + j0, kt_ss, H, scale, s + r * s_ss + j0, s_ss);
    }
}

/* Few query rows (decoding): every key is used once per row, so transposing K would cost more
 * than the products; dot products straight from the key rows read K exactly once. */
AVX512 void kattn_qk_direct_avx512(const float *q, int64_t q_ss, int64_t rows, const float *k,
                                   int64_t k_ss, int64_t tn, int64_t H, float scale, float *s,
                                   int64_t s_ss) {
    for (int64_t j = 0; j < tn; j++) {
        const float *kr = k + j * k_ss;
        for (int64_t r = 0; r < rows; r++) {
            const float *qr = q + r * q_ss;
            __m512 acc = _mm512_setzero_ps();
            for (int64_t h = 0; h < H; h += 16) {
                __mmask16 m = H - h >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (H - h)) - 1);
                acc = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, qr + h), _mm512_maskz_loadu_ps(m, kr + h), acc);
            }
            s[r * s_ss + j] = _mm512_reduce_add_ps(acc) * scale;
        }
    }
}

/* R rows × up to 64 output columns (4 vectors, masked): o[r][c] += Σ_j p[r][j] v[j][c]. */
#define PV_KERNEL(R)                                                                               \
    AVX512 static inline void pv_rows##R(const float *p, int64_t ps, const float *v, int64_t vs,  \
                                         int64_t tn, const __mmask16 *m, float *o, int64_t os) {   \
        __m512 a[R][4];                                                                            \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                       \
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)                                   \
                a[r][c] = _mm512_maskz_loadu_ps(m[c], o + r * os + 16 * c);                        \
        for (int64_t j = 0; j < tn; j++) {                                                         \
            const float *vr = v + j * vs;                                                          \
            __m512 v0 = _mm512_maskz_loadu_ps(m[0], vr), v1 = _mm512_maskz_loadu_ps(m[1], vr + 16); \
            __m512 v2 = _mm512_maskz_loadu_ps(m[2], vr + 32), v3 = _mm512_maskz_loadu_ps(m[3], vr + 48); \
            _Pragma("GCC unroll 8") for (int r = 0; r < R; r++) {                                 \
                __m512 pb = _mm512_set1_ps(p[r * ps + j]);                                         \
                a[r][0] = _mm512_fmadd_ps(pb, v0, a[r][0]);                                        \
                a[r][1] = _mm512_fmadd_ps(pb, v1, a[r][1]);                                        \
                a[r][2] = _mm512_fmadd_ps(pb, v2, a[r][2]);                                        \
                a[r][3] = _mm512_fmadd_ps(pb, v3, a[r][3]);                                        \
            }                                                                                      \
        }                                                                                          \
        _Pragma("GCC unroll 8") for (int r = 0; r < R; r++)                                       \
            _Pragma("GCC unroll 4") for (int c = 0; c < 4; c++)                                   \
                _mm512_mask_storeu_ps(o + r * os + 16 * c, m[c], a[r][c]);                         \
    }

PV_KERNEL(6)
PV_KERNEL(4)
PV_KERNEL(2)
PV_KERNEL(1)

AVX512 void kattn_pv_avx512(const float *p, int64_t p_ss, int64_t rows, const float *v, int64_t v_ss,
                            int64_t tn, int64_t Hv, float *o, int64_t o_ss) {
    for (int64_t c0 = 0; c0 < Hv; c0 += 64) {
        __mmask16 m[4];
        for (int c = 0; c < 4; c++) {
            int64_t left = Hv - c0 - 16 * c;
            m[c] = left >= 16 ? (__mmask16)0xffff : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
        }
        int64_t r = 0;
        for (; r + 6 <= rows; r += 6) pv_rows6(p + r * p_ss, p_ss, v + c0, v_ss, tn, m, o + r * o_ss + c0, o_ss);
        for (; r + 4 <= rows; r += 4) pv_rows4(p + r * p_ss, p_ss, v + c0, v_ss, tn, m, o + r * o_ss + c0, o_ss);
        for (; r + 2 <= rows; r += 2) pv_rows2(p + r * p_ss, p_ss, v + c0, v_ss, tn, m, o + r * o_ss + c0, o_ss);
        for (; r < rows; r++) pv_rows1(p + r * p_ss, p_ss, v + c0, v_ss, tn, m, o + r * o_ss + c0, o_ss);
    }
}

#else

int kattn_have_avx512(void) { return 0; }
void kattn_pack_kt(const float *k, int64_t k_ss, int64_t tn, int64_t H, float *kt, int64_t tkp) {}
void kattn_qk_avx512(const float *q, int64_t q_ss, int64_t rows, const float *kt, int64_t kt_ss,
                     int64_t cols, int64_t H, float scale, float *s, int64_t s_ss) {}
void kattn_pv_avx512(const float *p, int64_t p_ss, int64_t rows, const float *v, int64_t v_ss,
                     int64_t tn, int64_t Hv, float *o, int64_t o_ss) {}
void kattn_qk_direct_avx512(const float *q, int64_t q_ss, int64_t rows, const float *k, int64_t k_ss,
                            int64_t tn, int64_t H, float scale, float *s, int64_t s_ss) {}

#endif
