/* Run-time CPU feature checks shared by the kernels. */
#ifndef KILN_CPU_FEATURES_H
#define KILN_CPU_FEATURES_H

#if defined(__x86_64__) || defined(__i386__)
/* F16C (half <-> float conversion). clang before 15 cannot name "f16c" in
 * __builtin_cpu_supports; every AVX2 processor has F16C, so that check stands in for it there. */
static inline int kiln_cpu_has_f16c(void) {
#if defined(__clang__) && __clang_major__ < 15
    return __builtin_cpu_supports("avx2");
#else
    return __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx");
#endif
}
#else
static inline int kiln_cpu_has_f16c(void) { return 0; }
#endif

#endif
