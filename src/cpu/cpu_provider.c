/* The CPU execution provider: host memory, the session's thread pool, and every op definition's
 * own compute function as its kernel. It is always present and takes whatever the other providers
 * leave. */
#include "cpu_provider.h"
#include "../ops/op.h"

#include <cblas.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

enum { HOST_ALIGN = 64 };
/* Arenas of 4 MiB and more sit on 2 MiB boundaries and ask for transparent huge pages, as numpy
 * does for its large arrays (THP is "madvise" by default on Debian): a MaxPool reading a 25 MB
 * arena value ran 0.63x and 0.79x the time of 4 KiB pages in two A/B runs, whole SqueezeNet
 * unchanged (bench/results/cpu_ab_2026-12-06.md). */
#define HUGE_PAGE ((size_t)2 << 20)
#define HUGE_MIN ((size_t)4 << 20)

static void cpu_claim(kiln_provider *p, const kiln_graph *g, const kiln_node *n, kiln_claim *out) {
    (void)p;
    (void)g;
    out->kernel = NULL;
    out->claimed = n->op && n->op->compute;
    if (!out->claimed) snprintf(out->why, sizeof out->why, "no CPU kernel");
}

static kiln_status cpu_alloc(kiln_provider *p, size_t bytes, void **out, kiln_err *e) {
    (void)p;
    *out = NULL;
    int huge = bytes >= HUGE_MIN && bytes <= SIZE_MAX - HUGE_PAGE;
    if (huge) bytes = (bytes + HUGE_PAGE - 1) / HUGE_PAGE * HUGE_PAGE;
    if (posix_memalign(out, huge ? HUGE_PAGE : HOST_ALIGN, bytes ? bytes : HOST_ALIGN))
        return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory allocating %zu bytes", bytes);
#ifdef MADV_HUGEPAGE
    if (huge) madvise(*out, bytes, MADV_HUGEPAGE); /* advice only: a refusal changes nothing */
#endif
    return KILN_OK;
}

static void cpu_free(kiln_provider *p, void *ptr) {
    (void)p;
    free(ptr);
}

static kiln_status cpu_copy(kiln_provider *p, void *dst, const void *src, size_t bytes, kiln_err *e) {
    (void)p;
    (void)e;
    if (bytes) memmove(dst, src, bytes);
    return KILN_OK;
}

static kiln_status cpu_sync(kiln_provider *p, kiln_err *e) {
    (void)p;
    (void)e;
    return KILN_OK;
}

static const char *cpu_describe(kiln_provider *p) {
    kiln_cpu_provider *c = (kiln_cpu_provider *)p;
    return c->desc;
}

static void cpu_destroy(kiln_provider *p) {
    kiln_cpu_provider *c = (kiln_cpu_provider *)p;
    if (!c) return;
    kiln_threadpool_destroy(c->tp);
    free(c);
}

static const kiln_provider_vtable cpu_vtable = {
    .name = "CPUExecutionProvider",
    .short_name = "cpu",
    .host_memory = 1,
    .claim = cpu_claim,
    .alloc = cpu_alloc,
    .free = cpu_free,
    .to_device = cpu_copy,
    .to_host = cpu_copy,
    .copy = cpu_copy,
    .sync = cpu_sync,
    .describe = cpu_describe,
    .destroy = cpu_destroy,
};

int kiln_cpu_provider_bf16(const kiln_provider *p) {
    return p && p->vt == &cpu_vtable && ((const kiln_cpu_provider *)p)->bf16;
}

int kiln_cpu_provider_no_winograd(const kiln_provider *p) {
    return p && p->vt == &cpu_vtable && ((const kiln_cpu_provider *)p)->no_winograd;
}

/* A session's transformed weights live as long as it does, 4x the 3x3 weights they come from:
 * ResNet-50's (its 64-, 128- and 256-channel layers) took its peak memory at batch 8 and 16
 * threads past ONNX Runtime's (350 MB against 346 on the 16-core Sapphire Rapids). Layers past
 * the budget keep the direct kernels, first come first served: ResNet-50 then keeps its 64- and
 * 128-channel layers' and 2 of its 6 256-channel layers'. On the EPYC VM (2 threads, batch 8,
 * bench/peak_rss.py) its peak went 352 -> 330 MB (320 without Winograd; a 48 MB budget: 346),
 * and batch 1 at one thread took about 3% longer. */
int kiln_cpu_provider_reserve_winograd(kiln_provider *p, long long bytes) {
    if (!p || p->vt != &cpu_vtable) return 0;
    kiln_cpu_provider *c = (kiln_cpu_provider *)p;
    long long have = atomic_load(&c->winograd_bytes);
    do {
        if (bytes > 0 && have + bytes > KILN_CPU_WINOGRAD_BUDGET) return 0;
    } while (!atomic_compare_exchange_weak(&c->winograd_bytes, &have, have + bytes));
    return 1;
}

kiln_status kiln_cpu_provider_open(int threads, kiln_cpu_provider **out, kiln_err *e) {
    *out = NULL;
    if (threads <= 0) {
        long nc = sysconf(_SC_NPROCESSORS_ONLN);
        threads = nc > 0 ? (int)nc : 1;
    }
    if (threads > 256) threads = 256;
    kiln_cpu_provider *c = calloc(1, sizeof *c);
    if (!c) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    c->base.vt = &cpu_vtable;
    c->threads = threads;
    /* BLAS calls run inside kiln's own pool, one per worker: OpenBLAS's own threads would only
     * spin on the cores kiln's workers need (they busy-wait after each call) */
    openblas_set_num_threads(1);
    c->tp = kiln_threadpool_create(threads);
    if (!c->tp) {
        free(c);
        return kiln_fail(e, KILN_ERR_NO_MEMORY, "cannot create the thread pool");
    }
    snprintf(c->desc, sizeof c->desc, "CPU, %d threads", threads);
    *out = c;
    return KILN_OK;
}
