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
} kiln_cpu_provider;

/* threads <= 0: one per online core (at most 256). */
kiln_status kiln_cpu_provider_open(int threads, kiln_cpu_provider **out, kiln_err *e);

#endif
