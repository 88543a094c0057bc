/* Outputs that .npy cannot hold (sequences, maps) as JSON files (json_out.c). */
#ifndef KILN_TOOLS_JSON_OUT_H
#define KILN_TOOLS_JSON_OUT_H

#include "core/tensor.h"
#include "core/dtype.h"

/* Writes v to path as JSON; -1 with err filled on failure. */
int json_write_value(const char *path, const kiln_value *v, char *err, size_t errlen);

#endif
