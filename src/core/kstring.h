/* String elements. A string tensor's data is an array of char*, each NULL (the empty string) or
 * made by kiln_str_new: the byte length sits in the size_t just before the bytes and a NUL follows
 * them. So a string may hold NUL bytes (ONNX strings are byte strings), while the trailing NUL
 * keeps an element printable in messages and readable through the NUL-terminated C API. Kernels
 * read lengths with kiln_str_len, never strlen, and free elements with kiln_str_free (the block
 * starts before the pointer). A char* that kiln_str_new did not make must never become an element:
 * strings from callers come in through kiln_strs_import. */
#ifndef KILN_KSTRING_H
#define KILN_KSTRING_H

#include "status.h"
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* A new string of len bytes copied from bytes (which may be NULL when len is 0); NULL when out of
 * memory. */
char *kiln_str_new(const void *bytes, size_t len);
static inline size_t kiln_str_len(const char *s) {
    size_t n = 0;
    if (s) memcpy(&n, s - sizeof n, sizeof n);
    return n;
}
/* The empty kiln string (what a NULL element reads as). */
extern const char *const kiln_str_empty;
/* s, or kiln_str_empty for NULL: a kiln string either way (kiln_str_len works on it). */
static inline const char *kiln_str_bytes(const char *s) { return s ? s : kiln_str_empty; }
/* A new string of len bytes, left for the caller to fill (the NUL after them is set); NULL when out
 * of memory. */
char *kiln_str_alloc(size_t len);
/* A copy of the kiln string s (NULL as ""); NULL when out of memory. */
char *kiln_str_dup(const char *s);
void kiln_str_free(char *s);
/* Byte order (as unsigned chars; a prefix first), as std::string compares. */
int kiln_str_cmp(const char *a, const char *b);
static inline int kiln_str_eq(const char *a, const char *b) {
    size_t n = kiln_str_len(a);
    return n == kiln_str_len(b) && (n == 0 || !memcmp(a, b, n));
}
/* 1 when the kiln string s equals the len bytes at p. */
static inline int kiln_str_eq_bytes(const char *s, const void *p, size_t len) {
    return kiln_str_len(s) == len && (len == 0 || !memcmp(s, p, len));
}

/* Copies n strings given by a caller into kiln strings at dst (every slot is set: NULL after a
 * failure). sized: src is an array of kiln_string ({data, len}); else of NUL-terminated char*
 * (NULL read as ""). what names the value in the error. */
kiln_status kiln_strs_import(char **dst, const void *src, int64_t n, int sized, const char *what, kiln_err *e);
/* Frees n string elements and clears them. */
void kiln_strs_free(char **s, int64_t n);

#endif
