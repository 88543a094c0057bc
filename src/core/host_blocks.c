#ifndef _GNU_SOURCE
#define _GNU_SOURCE
#endif
#include "host_blocks.h"

#include <malloc.h>
#include <pthread.h>
#include <stdlib.h>

/* Blocks below this are glibc's own business (its heap reuses them); at most BLOCKS of at most
 * CAP_BYTES in all are held, the oldest freed first. Under AddressSanitizer nothing is cached:
 * reuse would hide a use after free from it. */
#define MIN_BYTES ((size_t)256 << 10)
#define CAP_BYTES ((size_t)1 << 30)
#define BLOCKS 64

#if defined(__SANITIZE_ADDRESS__)
#define CACHE_ON 0
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CACHE_ON 0
#endif
#endif
#ifndef CACHE_ON
#define CACHE_ON 1
#endif

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct { void *p; size_t size; unsigned long tick; } cache[BLOCKS];
static size_t held;
static unsigned long ticks;

void *kiln_host_block_take(size_t bytes) {
    if (!CACHE_ON || bytes < MIN_BYTES) return NULL;
    pthread_mutex_lock(&mu);
    int best = -1;
    for (int i = 0; i < BLOCKS; i++)
        if (cache[i].p && cache[i].size >= bytes && cache[i].size / 2 <= bytes &&
            (best < 0 || cache[i].size < cache[best].size))
            best = i;
    void *p = NULL;
    if (best >= 0) {
        p = cache[best].p;
        held -= cache[best].size;
        cache[best].p = NULL;
    }
    pthread_mutex_unlock(&mu);
    return p;
}

int kiln_host_block_give(void *p) {
    if (!CACHE_ON || !p) return 0;
    size_t size = malloc_usable_size(p);
    if (size < MIN_BYTES || size > CAP_BYTES) return 0;
    void *evicted[BLOCKS];
    int n_evicted = 0;
    pthread_mutex_lock(&mu);
    /* room: the oldest go until one slot is free and the total fits */
    for (;;) {
        int free_slot = -1, oldest = -1;
        for (int i = 0; i < BLOCKS; i++) {
            if (!cache[i].p) free_slot = i;
            else if (oldest < 0 || cache[i].tick < cache[oldest].tick) oldest = i;
        }
        if (free_slot >= 0 && held + size <= CAP_BYTES) {
            cache[free_slot].p = p;
            cache[free_slot].size = size;
            cache[free_slot].tick = ++ticks;
            held += size;
            break;
        }
        evicted[n_evicted++] = cache[oldest].p; /* oldest >= 0: held > 0 or every slot taken */
        held -= cache[oldest].size;
        cache[oldest].p = NULL;
    }
    pthread_mutex_unlock(&mu);
    for (int i = 0; i < n_evicted; i++) free(evicted[i]);
    return 1;
}

void kiln_host_blocks_drop(void) {
    pthread_mutex_lock(&mu);
    for (int i = 0; i < BLOCKS; i++) {
        free(cache[i].p);
        cache[i].p = NULL;
    }
    held = 0;
    pthread_mutex_unlock(&mu);
}
