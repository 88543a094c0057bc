/* String family: shared helpers and the entry points living outside string.c (the table). */
#ifndef KILN_STRING_KERNELS_H
#define KILN_STRING_KERNELS_H

#include "ops/op.h"
#include <stdlib.h>
#include <string.h>

/* A string element (kiln string, kstring.h) holding n bytes of s; NULL when out of memory. */
static inline char *str_dup_n(const char *s, size_t n) { return kiln_str_new(s, n); }

/* Element i of a string tensor (a kiln string; a NULL slot reads as the empty one) and its length. */
static inline const char *str_at(const kiln_tensor *t, int64_t i) {
    return kiln_str_bytes(((char *const *)t->data)[i]);
}
static inline size_t str_len_at(const kiln_tensor *t, int64_t i) { return kiln_str_len(((char *const *)t->data)[i]); }

kiln_status kiln_regex_init(kiln_ctx *ctx);
kiln_status kiln_regex_infer(kiln_ctx *ctx);
kiln_status kiln_regex_compute(kiln_ctx *ctx);
void kiln_regex_fini(void *state);

/* RE2 pattern -> POSIX extended regex for regcomp (string_regex.c); *out is malloc'd. Returns
 * NULL, or a text saying which construct is outside the supported subset. KILN_RE_ANCHORED wraps
 * it for a full match. KILN_RE_ASCII: the result is for the C locale over UTF-8 bytes, where \w
 * \s \b have RE2's ASCII meaning; '.', negated classes and non-ASCII literals still match whole
 * characters (non-ASCII characters inside brackets are rejected). */
enum { KILN_RE_ANCHORED = 1, KILN_RE_ASCII = 2 };
const char *kiln_re2_to_ere(const char *re, int flags, char **out);

kiln_status kiln_tokenizer_init(kiln_ctx *ctx);
kiln_status kiln_tokenizer_infer(kiln_ctx *ctx);
kiln_status kiln_tokenizer_compute(kiln_ctx *ctx);
void kiln_tokenizer_fini(void *state);

kiln_status kiln_tfidf_init(kiln_ctx *ctx);
kiln_status kiln_tfidf_infer(kiln_ctx *ctx);
kiln_status kiln_tfidf_compute(kiln_ctx *ctx);
void kiln_tfidf_fini(void *state);

#endif
