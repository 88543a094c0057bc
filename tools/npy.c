#include "npy.h"
#include "core/dtype.h"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

void *read_whole_file(const char *path, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    if (fseek(f, 0, SEEK_END)) { fclose(f); return NULL; }
    long n = ftell(f);
    if (n < 0) { fclose(f); return NULL; }
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    if (!buf) { fclose(f); errno = ENOMEM; return NULL; }
    if (n && fread(buf, 1, (size_t)n, f) != (size_t)n) { free(buf); fclose(f); errno = EIO; return NULL; }
    fclose(f);
    *size = (size_t)n;
    return buf;
}

static const struct { const char *descr; int dtype; } descr_map[] = {
    {"f4", KILN_DTYPE_FLOAT}, {"f8", KILN_DTYPE_DOUBLE}, {"f2", KILN_DTYPE_FLOAT16},
    {"i1", KILN_DTYPE_INT8}, {"i2", KILN_DTYPE_INT16}, {"i4", KILN_DTYPE_INT32}, {"i8", KILN_DTYPE_INT64},
    {"u1", KILN_DTYPE_UINT8}, {"u2", KILN_DTYPE_UINT16}, {"u4", KILN_DTYPE_UINT32}, {"u8", KILN_DTYPE_UINT64},
    {"b1", KILN_DTYPE_BOOL}, {"c8", KILN_DTYPE_COMPLEX64}, {"c16", KILN_DTYPE_COMPLEX128},
};

static const char *dtype_descr(int dt) {
    for (size_t i = 0; i < sizeof descr_map / sizeof descr_map[0]; i++)
        if (descr_map[i].dtype == dt) return descr_map[i].descr;
    return NULL;
}

/* Wider 'S'/'U' strings than this are refused (a header could claim any width). */
#define NPY_MAX_STRING_WIDTH (1 << 24)

int npy_parse(const void *bytes, size_t size, kiln_tensor *t, char *err, size_t errlen) {
    const unsigned char *p = bytes;
    memset(t, 0, sizeof *t);
    if (size < 10 || memcmp(p, "\x93NUMPY", 6)) {
        snprintf(err, errlen, "not a .npy file (bad magic)");
        return -1;
    }
    size_t hlen, hstart;
    if (p[6] == 1) { hlen = p[8] | (size_t)p[9] << 8; hstart = 10; }
    else if (size >= 12) { hlen = p[8] | (size_t)p[9] << 8 | (size_t)p[10] << 16 | (size_t)p[11] << 24; hstart = 12; }
    else { snprintf(err, errlen, "truncated .npy header"); return -1; }
    if (hstart + hlen > size || hlen > 65536) { snprintf(err, errlen, "truncated .npy header"); return -1; }
    char hdr[65537];
    memcpy(hdr, p + hstart, hlen);
    hdr[hlen] = 0;
    char *d = strstr(hdr, "'descr'"), *fo = strstr(hdr, "'fortran_order'"), *sh = strstr(hdr, "'shape'");
    if (!d || !fo || !sh) { snprintf(err, errlen, ".npy header lacks descr/fortran_order/shape"); return -1; }
    char descr[32] = {0};
    char *q = strchr(d + 7, '\'');
    if (!q || sscanf(q + 1, "%31[^']", descr) != 1) { snprintf(err, errlen, "bad .npy descr"); return -1; }
    if (strstr(fo, "True")) { snprintf(err, errlen, "Fortran-ordered .npy arrays are not supported"); return -1; }
    char endian = descr[0];
    const char *code = descr + ((endian == '<' || endian == '|' || endian == '>' || endian == '=') ? 1 : 0);
    if (endian == '>' && strcmp(code, "i1") && strcmp(code, "u1") && strcmp(code, "b1")) {
        snprintf(err, errlen, "big-endian .npy arrays are not supported");
        return -1;
    }
    int dtype = 0, strw = 0, ucs = 0;
    for (size_t i = 0; i < sizeof descr_map / sizeof descr_map[0]; i++)
        if (!strcmp(code, descr_map[i].descr)) dtype = descr_map[i].dtype;
    if (!dtype && (code[0] == 'U' || code[0] == 'S')) {
        dtype = KILN_DTYPE_STRING;
        ucs = code[0] == 'U';
        strw = atoi(code + 1);
    }
    if (!dtype) { snprintf(err, errlen, "unsupported .npy dtype '%s'", descr); return -1; }
    char *s = strchr(sh, '(');
    if (!s) { snprintf(err, errlen, "bad .npy shape"); return -1; }
    s++;
    t->dtype = dtype;
    t->rank = 0;
    while (*s && *s != ')') {
        while (*s == ' ' || *s == ',') s++;
        if (*s == ')') break;
        char *end;
        long long v = strtoll(s, &end, 10);
        if (end == s || v < 0 || t->rank >= KILN_MAX_RANK) { snprintf(err, errlen, "bad .npy shape"); return -1; }
        t->dims[t->rank++] = v;
        s = end;
    }
    /* the header's shape and string width are data: a count or byte size that overflows must not
     * wrap to one the file seems to hold */
    if (dtype == KILN_DTYPE_STRING && (strw < 0 || strw > NPY_MAX_STRING_WIDTH)) {
        snprintf(err, errlen, "unsupported .npy string width in dtype '%s'", descr);
        return -1;
    }
    int64_t n = kiln_checked_numel(t->rank, t->dims);
    size_t item = dtype == KILN_DTYPE_STRING ? (size_t)strw * (ucs ? 4 : 1) : kiln_dtype_size(dtype);
    size_t off = hstart + hlen, have = size - off;
    if (n < 0 || (item && (uint64_t)n > have / item)) {
        char shape[400];
        kiln_shape_str(t, shape, sizeof shape);
        if (n < 0) snprintf(err, errlen, ".npy shape %s is too large", shape);
        else snprintf(err, errlen, ".npy data is truncated (%zu bytes, shape %s needs %lld elements of %zu bytes)",
                      have, shape, (long long)n, item);
        return -1;
    }
    size_t need = (size_t)n * item;
    kiln_err e;
    if (kiln_tensor_alloc(t, &e)) { snprintf(err, errlen, "%s", e.msg); return -1; }
    if (dtype != KILN_DTYPE_STRING) {
        memcpy(t->data, p + off, need);
        return 0;
    }
    /* numpy pads an item with trailing NULs (which it drops on reading), so only those end a string:
     * NULs inside it are kept. 'S' items are bytes, kept as they are; 'U' items are code points,
     * written as UTF-8. */
    char **out = t->data;
    char *tmp = malloc((size_t)strw * 4 + 1);
    if (!tmp) { kiln_tensor_release(t); snprintf(err, errlen, "out of memory"); return -1; }
    for (int64_t i = 0; i < n; i++) {
        const unsigned char *src = p + off + (size_t)i * item;
        int w = strw;
        size_t k = 0;
        if (!ucs) {
            while (w > 0 && !src[w - 1]) w--;
            out[i] = kiln_str_new(src, (size_t)w);
        } else {
            while (w > 0 && !(src[4 * (w - 1)] | src[4 * (w - 1) + 1] | src[4 * (w - 1) + 2] | src[4 * (w - 1) + 3])) w--;
            for (int c = 0; c < w; c++) {
                uint32_t cp = (uint32_t)src[4 * c] | (uint32_t)src[4 * c + 1] << 8 | (uint32_t)src[4 * c + 2] << 16 |
                              (uint32_t)src[4 * c + 3] << 24;
                if (cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000)) {
                    snprintf(err, errlen, ".npy string %lld holds U+%04X at character %d, which UTF-8 cannot encode",
                             (long long)i, cp, c);
                    free(tmp);
                    kiln_tensor_release(t);
                    return -1;
                }
                if (cp < 0x80) tmp[k++] = (char)cp;
                else if (cp < 0x800) { tmp[k++] = (char)(0xc0 | cp >> 6); tmp[k++] = (char)(0x80 | (cp & 63)); }
                else if (cp < 0x10000) { tmp[k++] = (char)(0xe0 | cp >> 12); tmp[k++] = (char)(0x80 | ((cp >> 6) & 63)); tmp[k++] = (char)(0x80 | (cp & 63)); }
                else { tmp[k++] = (char)(0xf0 | cp >> 18); tmp[k++] = (char)(0x80 | ((cp >> 12) & 63)); tmp[k++] = (char)(0x80 | ((cp >> 6) & 63)); tmp[k++] = (char)(0x80 | (cp & 63)); }
            }
            out[i] = kiln_str_new(tmp, k);
        }
        if (!out[i]) { free(tmp); kiln_tensor_release(t); snprintf(err, errlen, "out of memory"); return -1; }
    }
    free(tmp);
    return 0;
}

int npy_read_file(const char *path, kiln_tensor *t, char *err, size_t errlen) {
    size_t size;
    void *buf = read_whole_file(path, &size);
    if (!buf) { snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno)); return -1; }
    int rc = npy_parse(buf, size, t, err, errlen);
    free(buf);
    return rc;
}

int npy_write_file(const char *path, const kiln_tensor *t, char *err, size_t errlen) {
    const char *code = dtype_descr(t->dtype);
    int64_t n = kiln_numel(t);
    size_t maxlen = 1;
    kiln_tensor tmp = {0};
    const kiln_tensor *src = t;
    if (t->dtype == KILN_DTYPE_BFLOAT16) { /* numpy has no bfloat16: widen to float32 */
        tmp = *t;
        tmp.dtype = KILN_DTYPE_FLOAT;
        tmp.owner = NULL;
        kiln_err e;
        if (kiln_tensor_alloc(&tmp, &e)) { snprintf(err, errlen, "%s", e.msg); return -1; }
        for (int64_t i = 0; i < n; i++) ((float *)tmp.data)[i] = kiln_bf16_to_f32(((const uint16_t *)t->data)[i]);
        src = &tmp;
        code = "f4";
    }
    if (t->dtype == KILN_DTYPE_STRING)
        for (int64_t i = 0; i < n; i++) {
            size_t l = kiln_str_len(((char *const *)t->data)[i]);
            if (l > maxlen) maxlen = l;
        }
    if (!code && t->dtype != KILN_DTYPE_STRING) {
        snprintf(err, errlen, "cannot write %s tensors as .npy", kiln_dtype_name((kiln_dtype)t->dtype));
        return -1;
    }
    char shape[512] = "";
    size_t sl = 0;
    for (int i = 0; i < t->rank; i++)
        sl += (size_t)snprintf(shape + sl, sizeof shape - sl, "%lld,%s", (long long)t->dims[i], i + 1 < t->rank ? " " : "");
    if (t->rank > 1) shape[sl - 1] = 0; /* numpy writes (2, 3) but (2,) */
    char hdr[1024], descr[32];
    if (t->dtype == KILN_DTYPE_STRING) snprintf(descr, sizeof descr, "|S%zu", maxlen);
    else snprintf(descr, sizeof descr, "%s%s", strcmp(code, "i1") && strcmp(code, "u1") && strcmp(code, "b1") ? "<" : "|", code);
    int hl = snprintf(hdr, sizeof hdr, "{'descr': '%s', 'fortran_order': False, 'shape': (%s), }", descr, shape);
    int total = 10 + hl + 1;
    int pad = (64 - total % 64) % 64;
    FILE *f = fopen(path, "wb");
    if (!f) { snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno)); kiln_tensor_release(&tmp); return -1; }
    unsigned short hlen = (unsigned short)(hl + pad + 1);
    fwrite("\x93NUMPY\x01\x00", 1, 8, f);
    fputc(hlen & 0xff, f);
    fputc(hlen >> 8, f);
    fwrite(hdr, 1, (size_t)hl, f);
    for (int i = 0; i < pad; i++) fputc(' ', f);
    fputc('\n', f);
    if (t->dtype == KILN_DTYPE_STRING) {
        char *buf = calloc(maxlen, 1);
        for (int64_t i = 0; i < n && buf; i++) {
            memset(buf, 0, maxlen);
            const char *s = ((char *const *)t->data)[i];
            memcpy(buf, kiln_str_bytes(s), kiln_str_len(s)); /* bytes as they are, NULs included */
            fwrite(buf, 1, maxlen, f);
        }
        free(buf);
    } else if (n > 0) {
        fwrite(src->data, 1, kiln_tensor_nbytes(src), f);
    }
    int bad = ferror(f);
    fclose(f);
    kiln_tensor_release(&tmp);
    if (bad) { snprintf(err, errlen, "error writing '%s'", path); return -1; }
    return 0;
}

static uint32_t rd16(const unsigned char *p) { return p[0] | (uint32_t)p[1] << 8; }
static uint32_t rd32(const unsigned char *p) { return rd16(p) | rd16(p + 2) << 16; }

int npz_read_file(const char *path, npz_entry **entries, int *count, char *err, size_t errlen) {
    size_t size;
    unsigned char *buf = read_whole_file(path, &size);
    *entries = NULL;
    *count = 0;
    if (!buf) { snprintf(err, errlen, "cannot read '%s': %s", path, strerror(errno)); return -1; }
    /* the end-of-central-directory record is within the last 64 KiB + 22 bytes */
    long eocd = -1;
    for (long i = (long)size - 22; i >= 0 && i >= (long)size - 65557; i--)
        if (rd32(buf + i) == 0x06054b50) { eocd = i; break; }
    if (eocd < 0) { snprintf(err, errlen, "'%s' is not a zip/.npz file", path); free(buf); return -1; }
    uint32_t n = rd16(buf + eocd + 10), cd_off = rd32(buf + eocd + 16);
    npz_entry *ents = calloc(n ? n : 1, sizeof *ents);
    int rc = 0, k = 0;
    size_t pos = cd_off;
    for (uint32_t i = 0; i < n && !rc; i++) {
        if (pos + 46 > size || rd32(buf + pos) != 0x02014b50) { snprintf(err, errlen, "corrupt .npz directory"); rc = -1; break; }
        uint32_t method = rd16(buf + pos + 10), csize = rd32(buf + pos + 20), usize = rd32(buf + pos + 24);
        uint32_t nlen = rd16(buf + pos + 28), xlen = rd16(buf + pos + 30), clen = rd16(buf + pos + 32);
        uint32_t loff = rd32(buf + pos + 42);
        if (pos + 46 + nlen > size || loff + 30 > size) { snprintf(err, errlen, "corrupt .npz entry"); rc = -1; break; }
        char *name = calloc(nlen + 1, 1);
        memcpy(name, buf + pos + 46, nlen);
        pos += 46 + nlen + xlen + clen;
        size_t data_off = loff + 30 + rd16(buf + loff + 26) + rd16(buf + loff + 28);
        if (data_off + csize > size) { snprintf(err, errlen, "corrupt .npz entry '%s'", name); free(name); rc = -1; break; }
        unsigned char *data = buf + data_off, *plain = NULL;
        if (method == 8) {
            plain = malloc(usize ? usize : 1);
            z_stream zs = {0};
            zs.next_in = data;
            zs.avail_in = csize;
            zs.next_out = plain;
            zs.avail_out = usize;
            if (!plain || inflateInit2(&zs, -15) != Z_OK || inflate(&zs, Z_FINISH) != Z_STREAM_END) {
                snprintf(err, errlen, "cannot inflate .npz entry '%s'", name);
                free(plain); free(name); rc = -1; break;
            }
            inflateEnd(&zs);
            data = plain;
        } else if (method != 0) {
            snprintf(err, errlen, ".npz entry '%s' uses zip method %u", name, method);
            free(name); rc = -1; break;
        }
        size_t l = strlen(name);
        if (l > 4 && !strcmp(name + l - 4, ".npy")) name[l - 4] = 0;
        char sub[256];
        if (npy_parse(data, method == 8 ? usize : csize, &ents[k].t, sub, sizeof sub)) {
            snprintf(err, errlen, ".npz entry '%s': %s", name, sub);
            free(plain); free(name); rc = -1; break;
        }
        ents[k++].name = name;
        free(plain);
    }
    free(buf);
    if (rc) { npz_free(ents, k); return -1; }
    *entries = ents;
    *count = k;
    return 0;
}

void npz_free(npz_entry *entries, int count) {
    for (int i = 0; i < count; i++) {
        free(entries[i].name);
        kiln_tensor_release(&entries[i].t);
    }
    free(entries);
}
