#include "arena_plan.h"
#include <limits.h>
#include <stdlib.h>

/* The buffers placed so far, found by time: positions are items sorted by def, and a max-tree
 * over them holds each placed item's `last` (INT_MIN while unplaced), so that "placed, def <= t1,
 * last >= t0" is a descent that only enters subtrees holding a match. */
typedef struct placer {
    const kiln_arena_item *items;
    int *by_def;       /* position -> item */
    int *pos;          /* item -> position */
    int *tree;         /* 1-based heap of 2 * leaves maxima */
    int leaves;
    int *found;        /* items met by the current query (at most m) */
    int n_found;
} placer;

typedef struct span { int64_t off; size_t size; } span;

/* Sort keys carry their item's index: ties keep index order, so the plan does not depend on the
 * qsort implementation (and no global state is needed: sessions plan on several threads). */
typedef struct key { int64_t k; int item; } key;

static int by_key(const void *a, const void *b) {
    const key *x = a, *y = b;
    if (x->k != y->k) return x->k < y->k ? -1 : 1;
    return (x->item > y->item) - (x->item < y->item);
}

/* Item indices ordered by key(item) ascending; NULL when out of memory. */
static int *sorted_items(const kiln_arena_item *items, int m, int by_size) {
    key *keys = malloc((size_t)m * sizeof *keys);
    int *out = malloc((size_t)m * sizeof *out);
    if (!keys || !out) { free(keys); free(out); return NULL; }
    for (int i = 0; i < m; i++) {
        /* largest first: sizes fit int64 (they come from allocations of that size) */
        keys[i].k = by_size ? -(int64_t)items[i].size : items[i].def;
        keys[i].item = i;
    }
    qsort(keys, (size_t)m, sizeof *keys, by_key);
    for (int i = 0; i < m; i++) out[i] = keys[i].item;
    free(keys);
    return out;
}

static int by_offset(const void *a, const void *b) {
    const span *x = a, *y = b;
    return x->off < y->off ? -1 : x->off > y->off;
}

static void mark_placed(placer *p, int item) {
    int node = p->leaves + p->pos[item];
    p->tree[node] = p->items[item].last;
    for (node /= 2; node >= 1; node /= 2)
        p->tree[node] = p->tree[2 * node] > p->tree[2 * node + 1] ? p->tree[2 * node] : p->tree[2 * node + 1];
}

/* Placed items at positions [lo, hi) ∩ [0, end) whose last >= from. */
static void collect(placer *p, int node, int lo, int hi, int end, int from) {
    if (lo >= end || p->tree[node] < from) return;
    if (hi - lo == 1) {
        p->found[p->n_found++] = p->by_def[lo];
        return;
    }
    int mid = lo + (hi - lo) / 2;
    collect(p, 2 * node, lo, mid, end, from);
    collect(p, 2 * node + 1, mid, hi, end, from);
}

/* Number of positions whose item starts at or before t. */
static int starts_until(const placer *p, int m, int t) {
    int lo = 0, hi = m;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        if (p->items[p->by_def[mid]].def <= t) lo = mid + 1;
        else hi = mid;
    }
    return lo;
}

/* Lowest offset where `size` bytes overlap none of the spans (sorted by offset): every span that
 * overlaps the candidate pushes it past its end, and no offset skipped that way could fit. */
static int64_t lowest_fit(const span *s, int n, size_t size) {
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        if (s[i].off >= off + (int64_t)size) break; /* this and all later spans lie above */
        if (s[i].off + (int64_t)s[i].size > off) off = s[i].off + (int64_t)s[i].size;
    }
    return off;
}

int kiln_arena_place(kiln_arena_item *items, int m) {
    if (m <= 0) return 0;
    int leaves = 1;
    while (leaves < m) leaves *= 2;
    placer p = {items, sorted_items(items, m, 0), malloc((size_t)m * sizeof(int)),
                malloc(2 * (size_t)leaves * sizeof(int)), leaves, malloc((size_t)m * sizeof(int)), 0};
    int *order = sorted_items(items, m, 1);
    span *spans = malloc((size_t)m * sizeof *spans);
    int rc = -1;
    if (!p.by_def || !p.pos || !p.tree || !p.found || !order || !spans) goto done;
    for (int i = 0; i < m; i++) p.pos[p.by_def[i]] = i;
    for (int i = 0; i < 2 * leaves; i++) p.tree[i] = INT_MIN;
    for (int k = 0; k < m; k++) {
        kiln_arena_item *it = &items[order[k]];
        p.n_found = 0;
        collect(&p, 1, 0, leaves, starts_until(&p, m, it->last), it->def);
        int n = 0;
        for (int j = 0; j < p.n_found; j++) {
            const kiln_arena_item *o = &items[p.found[j]];
            if (o->dev == it->dev) spans[n++] = (span){o->off, o->size};
        }
        qsort(spans, (size_t)n, sizeof *spans, by_offset);
        it->off = lowest_fit(spans, n, it->size);
        mark_placed(&p, order[k]);
    }
    rc = 0;
done:
    free(p.by_def); free(p.pos); free(p.tree); free(p.found); free(order); free(spans);
    return rc;
}
