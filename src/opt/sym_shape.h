/* Run-time shapes read statically (sym_shape.c): the Shape -> Gather -> Concat arithmetic of
 * exports with dynamic axes, evaluated over symbolic dimensions. */
#ifndef KILN_OPT_SYM_SHAPE_H
#define KILN_OPT_SYM_SHAPE_H

#include "pattern.h"

#define SYM_MAX 8

/* The int64 values of v, each a known number (-1 and up) or a symbolic dimension
 * (KILN_DIM_SYM): their count, or -1 when v is not such a chain. */
int opt_sym_vec(opt_ctx *c, int v, int64_t *out);
/* Completes the static type of n's output (Reshape, Expand, Range) where inference left it
 * unknown because a shape input is computed at run time. */
void opt_sym_refine(opt_ctx *c, kiln_node *n);

#endif
