/* Outputs that .npy cannot hold (sequences, maps) as JSON files (json_out.c). */
#ifndef KILN_TOOLS_JSON_OUT_H
#define KILN_TOOLS_JSON_OUT_H

#include "core/tensor.h"
#include "core/dtype.h"

/* Bytes of the UTF-8 sequence at p (n bytes left), or 0 when it is not valid UTF-8. */
size_t utf8_seq_len(const unsigned char *p, size_t n);

/* Writes v to path as JSON; -1 with err filled on failure. */
int json_write_value(const char *path, const kiln_value *v, char *err, size_t errlen);

#endif
