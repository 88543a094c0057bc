/* Placement of the main graph's nodes on providers, and the copies between memory spaces
 * (placement.c). */
#ifndef KILN_PLACEMENT_H
#define KILN_PLACEMENT_H

#include "../providers/registry.h"
#include "graph.h"
#include "devcache.h"

typedef struct kiln_session_place_args {
    kiln_provider_set *ps;
    int copies;            /* copy nodes inserted */
    int uploads;           /* constants uploaded to a device */
    kiln_dev_cache *cache; /* NULL: each constant gets a buffer of its own (owned by its value) */
    kiln_dev_holds *holds; /* with a cache: the entries this session's constants use */
} kiln_session_place_args;

/* Decides every node's provider, inserts copy nodes, uploads the constants device kernels read,
 * and runs the device kernels' init. Runs once, after static inference and optimisation. */
kiln_status kiln_place(kiln_session_place_args *a, kiln_graph *g, kiln_err *e);
int kiln_is_memcpy_node(const kiln_node *n);

#endif
