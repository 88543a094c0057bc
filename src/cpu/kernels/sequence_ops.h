/* Kernels of the sequence family defined outside sequence.c (which holds the op table). */
#ifndef KILN_SEQUENCE_OPS_H
#define KILN_SEQUENCE_OPS_H

#include "ops/op.h"

kiln_status kiln_split_to_sequence_infer(kiln_ctx *ctx);
kiln_status kiln_split_to_sequence_compute(kiln_ctx *ctx);
kiln_status kiln_concat_from_sequence_infer(kiln_ctx *ctx);
kiln_status kiln_concat_from_sequence_compute(kiln_ctx *ctx);

#endif
