/* Row operations of the attention softmax, vectorised with AVX-512 or AVX2/FMA where the CPU has it (chosen
 * at run time) and portable C otherwise. */
#ifndef KILN_ATTENTION_VECMATH_H
#define KILN_ATTENTION_VECMATH_H

#include <stdint.h>

typedef struct kattn_vec_ops {
    float (*row_max)(const float *x, int64_t n);
    /* x[i] = exp(x[i] - m); returns the sum of the new x. exp of -inf (or anything below -87) is 0. */
    float (*exp_shift_sum)(float *x, int64_t n, float m);
    void (*scale)(float *x, int64_t n, float c);
    void (*add)(float *x, const float *a, int64_t n);
} kattn_vec_ops;

const kattn_vec_ops *kattn_vec(void);

/* KILN_ATTENTION_ISA=portable|avx2|avx512 caps the instruction set the attention kernels use
 * (0, 1, 2), so that tests can run every path on one machine; unset: 2. Below 2 the block
 * products go through cblas_sgemm. */
int kattn_isa_cap(void);
/* The portable and AVX2 versions, for tests of the vector ones. */
const kattn_vec_ops *kattn_vec_portable(void);
const kattn_vec_ops *kattn_vec_avx2(void);

#endif
