/* Which vector loops the 8-bit integer kernels (qgemm*.c, quant.c) take. Every choice is made
 * once per process from the CPU and two switches meant for tests:
 *   KILN_NO_AVX512=1  leaves the AVX-512 loops out, so that an AVX-512 machine runs the AVX2 ones;
 *   KILN_NO_VNNI=1    leaves every vector loop out (the portable C), as it always has;
 *   KILN_NO_AVX2=1    leaves the AVX2 loops out (the portable C where AVX-512 is missing).
 * The AVX2 loops need FMA too only because they are compiled for "avx2,fma" like the float code. */
#ifndef KILN_QUANT_ISA_H
#define KILN_QUANT_ISA_H

#include <stdlib.h>

#if defined(__GNUC__) && defined(__x86_64__)
#define KQ_X86 1
#define KQ_AVX2 __attribute__((target("avx2,fma")))
#endif

static inline int kq_env_on(const char *name) {
    const char *v = getenv(name);
    return v && *v && *v != '0';
}

/* AVX-512 F and BW (the packing, epilogue and element loops), unless switched off. */
static inline int kq_use_avx512(void) {
    static int cached = -1;
    if (cached < 0) {
        int v = 0;
#ifdef KQ_X86
        __builtin_cpu_init();
        v = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
            __builtin_cpu_supports("avx512vl");
#endif
        cached = v && !kq_env_on("KILN_NO_AVX512") && !kq_env_on("KILN_NO_VNNI");
    }
    return cached;
}

int kgemm_avx2_available(void); /* gemm_util.h: the float code's cached CPU check */

/* AVX2 + FMA, unless the portable loops are asked for (KILN_NO_AVX2 as for the float engine, so
 * that one switch gives an A/B of the whole AVX2 tier). Callers test kq_use_avx512() first. */
static inline int kq_use_avx2(void) {
    static int cached = -1;
    if (cached < 0) cached = kgemm_avx2_available() && !kq_env_on("KILN_NO_VNNI") && !kq_env_on("KILN_NO_AVX2");
    return cached;
}

#endif
