/* The CPU execution provider (core/provider.h). */
#ifndef KILN_CPU_PROVIDER_H
#define KILN_CPU_PROVIDER_H

#include "../core/provider.h"
#include "threadpool.h"

typedef struct kiln_cpu_provider {
    kiln_provider base;
    kiln_threadpool *tp;
    int threads;
    char desc[64];
    int bf16; /* kiln_options.cpu_bf16, where the CPU can (kernels/gemm_bf16.h) */
    int no_winograd; /* kiln_options.cpu_winograd < 0 (kernels/conv_winograd.c) */
    _Atomic long long winograd_bytes; /* transformed weights the session's nodes keep */
} kiln_cpu_provider;

/* threads <= 0: one per online core (at most 256). */
kiln_status kiln_cpu_provider_open(int threads, kiln_cpu_provider **out, kiln_err *e);

/* p is the CPU provider of a session that computes float32 products in bfloat16. */
int kiln_cpu_provider_bf16(const kiln_provider *p);
/* p is the CPU provider of a session opened with cpu_winograd < 0. */
int kiln_cpu_provider_no_winograd(const kiln_provider *p);
/* Reserves bytes (< 0: gives them back) of the session's budget for Winograd-transformed weights
 * (KILN_CPU_WINOGRAD_BUDGET); 1 when granted, 0 when they would pass it or p is not a CPU
 * provider. */
int kiln_cpu_provider_reserve_winograd(kiln_provider *p, long long bytes);
#define KILN_CPU_WINOGRAD_BUDGET (32LL << 20)

#endif
