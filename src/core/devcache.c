/* The device-constant cache of a session family (devcache.h). */
#include "devcache.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#define N_BUCKETS 256

typedef struct kiln_dev_entry {
    kiln_provider *p;
    int dtype;
    size_t bytes;
    uint64_t h[2];
    void *mem;
    int refs;                   /* holds over all sessions of the family */
    struct kiln_dev_entry *next;
} kiln_dev_entry;

struct kiln_dev_cache {
    pthread_mutex_t mu;         /* children open while the parent's other runs go on */
    kiln_dev_entry *bucket[N_BUCKETS];
    int n;
    size_t bytes;
};

static uint64_t rotl(uint64_t x, int r) { return (x << r) | (x >> (64 - r)); }

static uint64_t mix(uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    return x ^ (x >> 33);
}

static uint64_t load64(const unsigned char *p) {
    uint64_t x;
    memcpy(&x, p, 8);
    return x;
}

/* Two lanes over 16-byte blocks, each lane's block word multiplied, rotated and folded into both
 * (so that a difference in either word reaches both halves), then the tail and the length. Not
 * cryptographic: the inputs are the model's own weights, not an adversary's. */
void kiln_hash128(const void *data, size_t n, uint64_t out[2]) {
    const uint64_t c1 = 0x87c37b91114253d5ULL, c2 = 0x4cf5ad432745937fULL;
    const unsigned char *b = data;
    uint64_t h1 = 0x9e3779b97f4a7c15ULL, h2 = 0x6a09e667f3bcc909ULL;
    size_t blocks = n / 16;
    for (size_t i = 0; i < blocks; i++) {
        uint64_t k1 = load64(b + 16 * i), k2 = load64(b + 16 * i + 8);
        k1 = rotl(k1 * c1, 31) * c2;
        h1 = (rotl(h1 ^ k1, 27) + h2) * 5 + 0x52dce729;
        k2 = rotl(k2 * c2, 33) * c1;
        h2 = (rotl(h2 ^ k2, 31) + h1) * 5 + 0x38495ab5;
    }
    unsigned char tail[16] = {0};
    if (n > 16 * blocks) memcpy(tail, b + 16 * blocks, n - 16 * blocks);
    h1 ^= rotl(load64(tail) * c1, 31) * c2;
    h2 ^= rotl(load64(tail + 8) * c2, 33) * c1;
    h1 ^= (uint64_t)n;
    h2 ^= (uint64_t)n;
    h1 += h2;
    h2 += h1;
    h1 = mix(h1);
    h2 = mix(h2);
    h1 += h2;
    h2 += h1;
    out[0] = h1;
    out[1] = h2;
}

kiln_dev_cache *kiln_dev_cache_new(void) {
    kiln_dev_cache *c = calloc(1, sizeof *c);
    if (c) pthread_mutex_init(&c->mu, NULL);
    return c;
}

void kiln_dev_cache_free(kiln_dev_cache *c) {
    if (!c) return;
    /* entries left are a bug of the holders; free them rather than leak device memory */
    for (int b = 0; b < N_BUCKETS; b++)
        for (kiln_dev_entry *x = c->bucket[b], *nx; x; x = nx) {
            nx = x->next;
            x->p->vt->free(x->p, x->mem);
            free(x);
        }
    pthread_mutex_destroy(&c->mu);
    free(c);
}

static kiln_status hold(kiln_dev_holds *h, kiln_dev_entry *x, kiln_err *e) {
    if (h->n == h->cap) {
        int cap = h->cap ? 2 * h->cap : 32;
        kiln_dev_entry **nh = realloc(h->held, (size_t)cap * sizeof *nh);
        if (!nh) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
        h->held = nh;
        h->cap = cap;
    }
    h->held[h->n++] = x;
    return KILN_OK;
}

kiln_status kiln_dev_cache_upload(kiln_dev_cache *c, kiln_dev_holds *h, kiln_provider *p, int dtype,
                                  const void *src, size_t bytes, void **out, kiln_err *e) {
    uint64_t hv[2];
    kiln_hash128(src, bytes, hv);
    unsigned b = (unsigned)(hv[0] % N_BUCKETS);
    /* a slot in h first, so that a hit cannot fail after taking a reference */
    if (h->n == h->cap) {
        KILN_TRY(hold(h, NULL, e));
        h->n--;
    }
    pthread_mutex_lock(&c->mu);
    for (kiln_dev_entry *x = c->bucket[b]; x; x = x->next)
        if (x->p == p && x->dtype == dtype && x->bytes == bytes && x->h[0] == hv[0] && x->h[1] == hv[1]) {
            x->refs++;
            pthread_mutex_unlock(&c->mu);
            h->held[h->n++] = x;
            h->shared++;
            *out = x->mem;
            return KILN_OK;
        }
    pthread_mutex_unlock(&c->mu);
    /* a miss uploads outside the lock; two sessions missing the same bytes at once each keep
     * their own copy (only children opening while another opens could, which the table avoids) */
    kiln_dev_entry *x = calloc(1, sizeof *x);
    if (!x) return kiln_fail(e, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = p->vt->alloc(p, bytes, &x->mem, e);
    if (!st && bytes) st = p->vt->to_device(p, x->mem, src, bytes, e);
    if (st) {
        if (x->mem) p->vt->free(p, x->mem);
        free(x);
        return st;
    }
    x->p = p;
    x->dtype = dtype;
    x->bytes = bytes;
    x->h[0] = hv[0];
    x->h[1] = hv[1];
    x->refs = 1;
    pthread_mutex_lock(&c->mu);
    x->next = c->bucket[b];
    c->bucket[b] = x;
    c->n++;
    c->bytes += bytes;
    pthread_mutex_unlock(&c->mu);
    h->held[h->n++] = x;
    *out = x->mem;
    return KILN_OK;
}

void kiln_dev_holds_release(kiln_dev_cache *c, kiln_dev_holds *h) {
    for (int i = 0; c && i < h->n; i++) {
        kiln_dev_entry *x = h->held[i], *dead = NULL;
        unsigned b = (unsigned)(x->h[0] % N_BUCKETS);
        pthread_mutex_lock(&c->mu);
        if (--x->refs == 0) {
            for (kiln_dev_entry **pp = &c->bucket[b]; *pp; pp = &(*pp)->next)
                if (*pp == x) {
                    *pp = x->next;
                    break;
                }
            c->n--;
            c->bytes -= x->bytes;
            dead = x;
        }
        pthread_mutex_unlock(&c->mu);
        if (dead) {
            dead->p->vt->free(dead->p, dead->mem);
            free(dead);
        }
    }
    free(h->held);
    memset(h, 0, sizeof *h);
}

void kiln_dev_cache_stats(kiln_dev_cache *c, int *entries, size_t *bytes) {
    pthread_mutex_lock(&c->mu);
    if (entries) *entries = c->n;
    if (bytes) *bytes = c->bytes;
    pthread_mutex_unlock(&c->mu);
}
