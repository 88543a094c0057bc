/* Kernels of the "tensor" family, defined across tensor_*.c and listed in tensor.c. */
#ifndef KILN_CPU_TENSOR_OPS_H
#define KILN_CPU_TENSOR_OPS_H

#include "ops/op.h"

#define KILN_TK_DECLARE(op)                                                                         \
    kiln_status kiln_tk_##op##_infer(kiln_ctx *ctx);                                                \
    kiln_status kiln_tk_##op##_compute(kiln_ctx *ctx);

/* output 0 = a copy of input 0 (the compute of the aliasing ops) */
kiln_status kiln_tk_copy_input_compute(kiln_ctx *ctx);

KILN_TK_DECLARE(reshape)
KILN_TK_DECLARE(flatten)
KILN_TK_DECLARE(squeeze)
KILN_TK_DECLARE(unsqueeze)
KILN_TK_DECLARE(identity)
KILN_TK_DECLARE(transpose)
KILN_TK_DECLARE(concat)
KILN_TK_DECLARE(split)
KILN_TK_DECLARE(slice)
KILN_TK_DECLARE(expand)
KILN_TK_DECLARE(tile)
KILN_TK_DECLARE(trilu)
KILN_TK_DECLARE(eyelike)
KILN_TK_DECLARE(depth_to_space)
KILN_TK_DECLARE(space_to_depth)
KILN_TK_DECLARE(reverse_sequence)
KILN_TK_DECLARE(nonzero)
KILN_TK_DECLARE(unique)
KILN_TK_DECLARE(compress)
KILN_TK_DECLARE(col2im)

#endif
