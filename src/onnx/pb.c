#include "pb.h"
#include <string.h>

int kiln_pb_varint(const uint8_t **pp, const uint8_t *end, uint64_t *out) {
    const uint8_t *p = *pp;
    uint64_t v = 0;
    for (int shift = 0; shift < 64; shift += 7) {
        if (p >= end) return -1;
        uint8_t b = *p++;
        v |= (uint64_t)(b & 0x7f) << shift;
        if (!(b & 0x80)) {
            *pp = p;
            *out = v;
            return 0;
        }
    }
    return -1;
}

int kiln_pb_next(kiln_pb *r, kiln_pb_field *f) {
    if (r->p >= r->end) return 0;
    uint64_t key;
    if (kiln_pb_varint(&r->p, r->end, &key)) return -1;
    f->num = (uint32_t)(key >> 3);
    f->type = (int)(key & 7);
    f->data = NULL;
    f->len = 0;
    f->u = 0;
    if (f->num == 0 || key >> 35) return -1;
    switch (f->type) {
    case KILN_PB_VARINT:
        return kiln_pb_varint(&r->p, r->end, &f->u) ? -1 : 1;
    case KILN_PB_I64:
        if (r->end - r->p < 8) return -1;
        memcpy(&f->u, r->p, 8);
        r->p += 8;
        return 1;
    case KILN_PB_I32: {
        if (r->end - r->p < 4) return -1;
        uint32_t v;
        memcpy(&v, r->p, 4);
        f->u = v;
        r->p += 4;
        return 1;
    }
    case KILN_PB_LEN: {
        uint64_t len;
        if (kiln_pb_varint(&r->p, r->end, &len)) return -1;
        if (len > (uint64_t)(r->end - r->p)) return -1;
        f->data = r->p;
        f->len = (size_t)len;
        r->p += len;
        return 1;
    }
    default:
        return -1; /* groups (3, 4) are not used by ONNX */
    }
}

int kiln_pb_count_varints(const kiln_pb_field *f) {
    if (f->type == KILN_PB_VARINT) return 1;
    if (f->type != KILN_PB_LEN) return -1;
    int n = 0;
    for (size_t i = 0; i < f->len; i++)
        if (!(f->data[i] & 0x80)) n++;
    if (f->len && (f->data[f->len - 1] & 0x80)) return -1;
    return n;
}

int kiln_pb_read_varints(const kiln_pb_field *f, int64_t *out, int max) {
    if (f->type == KILN_PB_VARINT) {
        if (max < 1) return -1;
        out[0] = (int64_t)f->u;
        return 1;
    }
    if (f->type != KILN_PB_LEN) return -1;
    const uint8_t *p = f->data, *end = f->data + f->len;
    int n = 0;
    while (p < end) {
        uint64_t v;
        if (n >= max || kiln_pb_varint(&p, end, &v)) return -1;
        out[n++] = (int64_t)v;
    }
    return n;
}

int kiln_pb_count_fixed(const kiln_pb_field *f, int width) {
    if ((width == 4 && f->type == KILN_PB_I32) || (width == 8 && f->type == KILN_PB_I64)) return 1;
    if (f->type != KILN_PB_LEN || f->len % (size_t)width) return -1;
    return (int)(f->len / (size_t)width);
}

int kiln_pb_read_fixed32(const kiln_pb_field *f, uint32_t *out, int max) {
    if (f->type == KILN_PB_I32) {
        if (max < 1) return -1;
        out[0] = (uint32_t)f->u;
        return 1;
    }
    int n = kiln_pb_count_fixed(f, 4);
    if (n < 0 || n > max) return -1;
    memcpy(out, f->data, (size_t)n * 4);
    return n;
}

int kiln_pb_read_fixed64(const kiln_pb_field *f, uint64_t *out, int max) {
    if (f->type == KILN_PB_I64) {
        if (max < 1) return -1;
        out[0] = f->u;
        return 1;
    }
    int n = kiln_pb_count_fixed(f, 8);
    if (n < 0 || n > max) return -1;
    memcpy(out, f->data, (size_t)n * 8);
    return n;
}
