/* Device constants shared by a session and its shape-specialised children (devcache.c).
 *
 * A child re-optimises the model, so its constants are new host buffers; many hold the same bytes
 * as the parent's (weights, fused or converted weights alike). Uploads go through this cache,
 * keyed by provider, element type, size and a 128-bit hash of the bytes, so that the family keeps
 * one device copy of each. */
#ifndef KILN_DEVCACHE_H
#define KILN_DEVCACHE_H

#include "provider.h"

typedef struct kiln_dev_cache kiln_dev_cache;

/* The entries one session holds (released when it closes), and how many of its uploads found
 * their bytes already on the device. */
typedef struct kiln_dev_holds {
    struct kiln_dev_entry **held;
    int n, cap;
    int shared;
} kiln_dev_holds;

kiln_dev_cache *kiln_dev_cache_new(void);
/* Frees the cache itself: every session's holds must have been released. */
void kiln_dev_cache_free(kiln_dev_cache *c);
/* A device buffer of provider p holding `bytes` bytes equal to src: one already in the cache
 * (shared), or one allocated and uploaded now. The session records it in h. */
kiln_status kiln_dev_cache_upload(kiln_dev_cache *c, kiln_dev_holds *h, kiln_provider *p, int dtype,
                                  const void *src, size_t bytes, void **out, kiln_err *e);
/* Gives back every entry h holds; an entry no session holds any more is freed on its device. */
void kiln_dev_holds_release(kiln_dev_cache *c, kiln_dev_holds *h);
/* Distinct device buffers in the cache and their bytes. */
void kiln_dev_cache_stats(kiln_dev_cache *c, int *entries, size_t *bytes);

/* 128-bit content hash (two 64-bit lanes). */
void kiln_hash128(const void *data, size_t n, uint64_t out[2]);

#endif
