/* Writing outputs that are not tensors (sequences, maps, sequences of maps) as JSON files, for
 * `kiln run`: a map is an object (int64 keys written as their decimal text, as JSON keys are
 * strings), a sequence an array of its items, a tensor nested arrays by its shape. Non-finite
 * floats are written NaN / Infinity / -Infinity, as Python's json module reads them. */
#include "json_out.h"
#include <math.h>
#include <stdio.h>
#include <string.h>

size_t utf8_seq_len(const unsigned char *p, size_t n) {
    size_t l = p[0] < 0x80 ? 1 : p[0] >= 0xc2 && p[0] < 0xe0 ? 2 : p[0] >= 0xe0 && p[0] < 0xf0 ? 3
             : p[0] >= 0xf0 && p[0] < 0xf5 ? 4 : 0;
    if (!l || l > n) return 0;
    for (size_t k = 1; k < l; k++)
        if ((p[k] & 0xc0) != 0x80) return 0;
    if (l == 3 && ((p[0] == 0xe0 && p[1] < 0xa0) || (p[0] == 0xed && p[1] >= 0xa0))) return 0; /* overlong, surrogate */
    if (l == 4 && ((p[0] == 0xf0 && p[1] < 0x90) || (p[0] == 0xf4 && p[1] >= 0x90))) return 0;
    return l;
}

/* A kiln string (its length, NULs included). UTF-8 passes through; a byte that is not part of
 * valid UTF-8 is written as the lone surrogate \udcXX, as Python's "surrogateescape" does. */
static void put_string(FILE *f, const char *s) {
    fputc('"', f);
    const unsigned char *p = (const unsigned char *)kiln_str_bytes(s);
    for (size_t i = 0, n = kiln_str_len(s); i < n;) {
        unsigned char c = p[i];
        size_t l = utf8_seq_len(p + i, n - i);
        if (!l) fprintf(f, "\\udc%02x", c), l = 1;
        else if (c == '"' || c == '\\') fprintf(f, "\\%c", c);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c < 0x20) fprintf(f, "\\u%04x", c);
        else fwrite(p + i, 1, l, f);
        i += l;
    }
    fputc('"', f);
}

static void put_double(FILE *f, double x, int digits) {
    if (isnan(x)) fputs("NaN", f);
    else if (isinf(x)) fputs(x > 0 ? "Infinity" : "-Infinity", f);
    else fprintf(f, "%.*g", digits, x);
}

/* Element i of an array of dtype. */
static int put_elem(FILE *f, int dtype, const void *data, int64_t i) {
    switch (dtype) {
    case KILN_DTYPE_STRING: put_string(f, ((char *const *)data)[i]); return 0;
    case KILN_DTYPE_BOOL: fputs(((const uint8_t *)data)[i] ? "true" : "false", f); return 0;
    case KILN_DTYPE_INT64: fprintf(f, "%lld", (long long)((const int64_t *)data)[i]); return 0;
    case KILN_DTYPE_UINT64: fprintf(f, "%llu", (unsigned long long)((const uint64_t *)data)[i]); return 0;
    case KILN_DTYPE_DOUBLE: put_double(f, ((const double *)data)[i], 17); return 0;
    case KILN_DTYPE_FLOAT: put_double(f, ((const float *)data)[i], 9); return 0;
    default:
        if (!kiln_dtype_size(dtype) || dtype == KILN_DTYPE_COMPLEX64 || dtype == KILN_DTYPE_COMPLEX128) return -1;
        if (kiln_dtype_is_float(dtype)) put_double(f, kiln_load_f64(dtype, data, i), 9);
        else fprintf(f, "%.0f", kiln_load_f64(dtype, data, i)); /* integers of 32 bits or less: exact */
        return 0;
    }
}

/* The elements of t from position *at on, nested by dims[d...]. */
static int put_tensor_dims(FILE *f, const kiln_tensor *t, int d, int64_t *at) {
    if (d == t->rank) return put_elem(f, t->dtype, t->data, (*at)++);
    fputc('[', f);
    for (int64_t i = 0; i < t->dims[d]; i++) {
        if (i) fputs(", ", f);
        if (put_tensor_dims(f, t, d + 1, at)) return -1;
    }
    fputc(']', f);
    return 0;
}

static int put_map(FILE *f, const kiln_map *m) {
    fputc('{', f);
    for (int64_t i = 0; i < m->keys.dims[0]; i++) {
        if (i) fputs(", ", f);
        if (m->keys.dtype == KILN_DTYPE_STRING) put_string(f, ((char *const *)m->keys.data)[i]);
        else fprintf(f, "\"%lld\"", (long long)((const int64_t *)m->keys.data)[i]);
        fputs(": ", f);
        if (put_elem(f, m->vals.dtype, m->vals.data, i)) return -1;
    }
    fputc('}', f);
    return 0;
}

static int put_value(FILE *f, const kiln_value *v) {
    int64_t at = 0;
    switch (v->kind) {
    case KILN_KIND_NONE: fputs("null", f); return 0;
    case KILN_KIND_TENSOR: return put_tensor_dims(f, &v->t, 0, &at);
    case KILN_KIND_MAP: return v->n_maps == 1 ? put_map(f, &v->maps[0]) : -1;
    case KILN_KIND_MAP_SEQUENCE:
    case KILN_KIND_SEQUENCE: {
        int n = v->kind == KILN_KIND_SEQUENCE ? v->seq_len : v->n_maps;
        fputc('[', f);
        for (int i = 0; i < n; i++) {
            if (i) fputs(",\n ", f);
            at = 0;
            if (v->kind == KILN_KIND_SEQUENCE ? put_tensor_dims(f, &v->seq[i], 0, &at) : put_map(f, &v->maps[i]))
                return -1;
        }
        fputc(']', f);
        return 0;
    }
    default: return -1;
    }
}

int json_write_value(const char *path, const kiln_value *v, char *err, size_t errlen) {
    FILE *f = fopen(path, "w");
    if (!f) {
        snprintf(err, errlen, "cannot write '%s'", path);
        return -1;
    }
    int rc = put_value(f, v);
    fputc('\n', f);
    if (fclose(f) || rc) {
        snprintf(err, errlen, rc ? "cannot write the element type of '%s' as JSON" : "cannot write '%s'", path);
        return -1;
    }
    return 0;
}
