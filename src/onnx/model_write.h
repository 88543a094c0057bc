/* Writing the in-memory model back to an ONNX file (onnx/model_write.c). */
#ifndef KILN_MODEL_WRITE_H
#define KILN_MODEL_WRITE_H

#include "../core/graph.h"

/* Serialises m as an ONNX ModelProto to `path`: producer "kiln", the model's opset imports (plus
 * any domain or newer version a rewritten node needs, with the IR version that opset requires),
 * the graph and its subgraphs with every attribute kind, initializers as raw_data (strings as
 * string_data), inputs, outputs and value_info with their types and (symbolic) shapes. Nodes
 * marked removed are left out; constants (initializers, and those folding made) are written as
 * initializers when something reads them, unread ones are dropped. Sparse tensors were densified
 * by the loader and are written dense. The file is written beside `path` and renamed over it at
 * the end, so a failed write leaves no partial file and the model may be written over the file
 * it was loaded (mapped) from. */
kiln_status kiln_model_write(const kiln_model *m, const char *path, kiln_err *e);

/* kiln_model_write, with the main graph's initializers of at least min_bytes bytes (strings and
 * int32 / int64 vectors, which shape inference must read, excepted) written to the file `external` (a name relative to the folder of `path`) and referred
 * to as ONNX external data, each at an offset aligned to 64 bytes. external NULL: as
 * kiln_model_write. */
kiln_status kiln_model_write_ext(const kiln_model *m, const char *path, const char *external, size_t min_bytes,
                                 kiln_err *e);

#endif
