/* Placing a run's buffers in one arena (per memory space): each buffer, largest first, takes the
 * lowest offset that no buffer alive at the same time occupies. Used by kiln_plan_make. */
#ifndef KILN_ARENA_PLAN_H
#define KILN_ARENA_PLAN_H

#include <stddef.h>
#include <stdint.h>

typedef struct kiln_arena_item {
    size_t size;      /* bytes, already rounded to the arena's alignment */
    int def, last;    /* first and last step (node index) the buffer is alive */
    int dev;          /* memory space: buffers of different spaces never conflict */
    int64_t off;      /* out: offset in its space's arena */
} kiln_arena_item;

/* Sets items[i].off for all m items. Time is O(m log m + K log m), K being the number of pairs of
 * buffers alive at the same time (a chain of 200k nodes plans in milliseconds). Returns 0, or -1
 * when out of memory. */
int kiln_arena_place(kiln_arena_item *items, int m);

#endif
