/* A bounds-checked protobuf wire-format reader. It never copies: fields are returned as ranges of
 * the input buffer. Every read checks the remaining length, so truncated or hostile input yields
 * an error, never an out-of-bounds read. */
#ifndef KILN_PB_H
#define KILN_PB_H

#include <stddef.h>
#include <stdint.h>

enum { KILN_PB_VARINT = 0, KILN_PB_I64 = 1, KILN_PB_LEN = 2, KILN_PB_I32 = 5 };

typedef struct kiln_pb {
    const uint8_t *p, *end;
} kiln_pb;

typedef struct kiln_pb_field {
    uint32_t num;
    int type;
    uint64_t u;           /* VARINT, I64, I32 payload */
    const uint8_t *data;  /* LEN payload */
    size_t len;
} kiln_pb_field;

static inline kiln_pb kiln_pb_make(const void *data, size_t len) {
    kiln_pb r = {(const uint8_t *)data, (const uint8_t *)data + len};
    return r;
}

/* 1: a field was read; 0: end of message; -1: malformed (truncated, bad wire type). */
int kiln_pb_next(kiln_pb *r, kiln_pb_field *f);
/* Reads a varint from [*p, end); returns 0 on success. */
int kiln_pb_varint(const uint8_t **p, const uint8_t *end, uint64_t *out);

/* Repeated scalar fields arrive packed (one LEN field) or unpacked (one field per value).
 * These count / decode either form; `f` is the field just read. Return -1 when malformed. */
int kiln_pb_count_varints(const kiln_pb_field *f);
int kiln_pb_read_varints(const kiln_pb_field *f, int64_t *out, int max);
int kiln_pb_read_fixed32(const kiln_pb_field *f, uint32_t *out, int max);
int kiln_pb_read_fixed64(const kiln_pb_field *f, uint64_t *out, int max);
int kiln_pb_count_fixed(const kiln_pb_field *f, int width);

#endif
