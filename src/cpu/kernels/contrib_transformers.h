/* The com.microsoft ops of onnxruntime's transformers optimizer and LLM tools that live outside
 * the attention family: entry points gathered into kiln_ops_transformers (contrib_transformers.c). */
#ifndef KILN_CONTRIB_TRANSFORMERS_H
#define KILN_CONTRIB_TRANSFORMERS_H

#include "ops/op.h"

/* contrib_nbits.c: MatMulNBits, GatherBlockQuantized */
kiln_status kctr_nbits_infer(kiln_ctx *ctx);
kiln_status kctr_nbits_compute(kiln_ctx *ctx);
kiln_status kctr_gbq_infer(kiln_ctx *ctx);
kiln_status kctr_gbq_compute(kiln_ctx *ctx);

#endif
