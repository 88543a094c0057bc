/* Free dimension overrides (dims.c). */
#ifndef KILN_DIMS_H
#define KILN_DIMS_H

#include "graph.h"

/* Fixes the symbolic dimensions named in spec ("NAME=N,NAME=N") in every declared type; fails
 * naming an unknown symbol or a malformed item. NULL or "" does nothing. */
kiln_status kiln_apply_dim_overrides(kiln_model *m, const char *spec, kiln_err *e);

#endif
