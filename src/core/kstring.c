/* Length-carrying string elements (see kstring.h). */
#include "kstring.h"
#include "kiln.h"
#include <stdlib.h>

/* laid out as an allocated string: the length, then the bytes (no padding: char follows size_t) */
static const struct { size_t len; char bytes[8]; } empty_str = {0, {0}};
_Static_assert(offsetof(__typeof__(empty_str), bytes) == sizeof(size_t), "the empty string's layout");
const char *const kiln_str_empty = empty_str.bytes;

char *kiln_str_alloc(size_t len) {
    if (len > SIZE_MAX / 2) return NULL;
    char *p = malloc(sizeof(size_t) + len + 1);
    if (!p) return NULL;
    memcpy(p, &len, sizeof len);
    p[sizeof len + len] = 0;
    return p + sizeof len;
}

char *kiln_str_new(const void *bytes, size_t len) {
    char *s = kiln_str_alloc(len);
    if (s && len) memcpy(s, bytes, len);
    return s;
}

char *kiln_str_dup(const char *s) { return kiln_str_new(kiln_str_bytes(s), kiln_str_len(s)); }

void kiln_str_free(char *s) {
    if (s) free(s - sizeof(size_t));
}

int kiln_str_cmp(const char *a, const char *b) {
    size_t la = kiln_str_len(a), lb = kiln_str_len(b), n = la < lb ? la : lb;
    int c = n ? memcmp(a, b, n) : 0;
    return c ? c : (la > lb) - (la < lb);
}

kiln_status kiln_strs_import(char **dst, const void *src, int64_t n, int sized, const char *what, kiln_err *e) {
    for (int64_t i = 0; i < n; i++) dst[i] = NULL;
    for (int64_t i = 0; i < n; i++) {
        const char *p;
        size_t len;
        if (sized) {
            const kiln_string *v = (const kiln_string *)src + i;
            if (!v->data && v->len) {
                kiln_strs_free(dst, i);
                return kiln_fail(e, KILN_ERR_INVALID_ARGUMENT, "%s: string %lld has length %zu and no data", what,
                                 (long long)i, v->len);
            }
            p = v->data;
            len = v->len;
        } else {
            p = ((const char *const *)src)[i];
            len = p ? strlen(p) : 0;
        }
        if (!(dst[i] = kiln_str_new(p, len))) {
            kiln_strs_free(dst, i);
            return kiln_fail(e, KILN_ERR_NO_MEMORY, "%s: out of memory copying strings", what);
        }
    }
    return KILN_OK;
}

void kiln_strs_free(char **s, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        kiln_str_free(s[i]);
        s[i] = NULL;
    }
}
