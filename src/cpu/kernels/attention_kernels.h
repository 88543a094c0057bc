/* Block products of the attention core with AVX-512 (attention_avx512.c). The generic path uses
 * cblas_sgemm instead; kattn_have_avx512() picks at run time. */
#ifndef KILN_ATTENTION_KERNELS_H
#define KILN_ATTENTION_KERNELS_H

#include <stdint.h>

int kattn_have_avx512(void);

/* kt (H × tkp, row stride tkp) = transpose of tn key rows (row stride k_ss), the columns from tn
 * to tkp zero-filled. */
void kattn_pack_kt(const float *k, int64_t k_ss, int64_t tn, int64_t H, float *kt, int64_t tkp);

/* s (rows × cols, row stride s_ss) = scale · q (rows × H, row stride q_ss) · kt (H × cols, row
 * stride kt_ss). cols is a multiple of 32. */
void kattn_qk_avx512(const float *q, int64_t q_ss, int64_t rows, const float *kt, int64_t kt_ss,
                     int64_t cols, int64_t H, float scale, float *s, int64_t s_ss);

/* The same product reading the key rows (tn of them, row stride k_ss) in place; s has tn columns.
 * For a few query rows, where transposing K would cost more than it saves. */
void kattn_qk_direct_avx512(const float *q, int64_t q_ss, int64_t rows, const float *k, int64_t k_ss,
                            int64_t tn, int64_t H, float scale, float *s, int64_t s_ss);

/* o (rows × Hv, row stride o_ss) += p (rows × tn, row stride p_ss) · v (tn × Hv, row stride v_ss). */
void kattn_pv_avx512(const float *p, int64_t p_ss, int64_t rows, const float *v, int64_t v_ss,
                     int64_t tn, int64_t Hv, float *o, int64_t o_ss);

#endif
