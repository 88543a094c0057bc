/* StringConcat, StringSplit (opset 20) and StringNormalizer (opset 10); the string family table is at
 * the end. Case changes work on UTF-8 text for the scripts with simple one-to-one case pairs
 * (Latin, Greek, Cyrillic, Armenian); other characters pass through unchanged. */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include "string_kernels.h"
#include <stdint.h>

/* ------------------------------------------------------------------------------------------ */
/* StringConcat */

static kiln_status concat_infer(kiln_ctx *ctx) {
    kiln_tensor *a, *b;
    KILN_TRY(kiln_need_input(ctx, 0, &a));
    KILN_TRY(kiln_need_input(ctx, 1, &b));
    KILN_TRY(kiln_check_dtype(ctx, a, 0, 1, KILN_DTYPE_STRING));
    KILN_TRY(kiln_check_dtype(ctx, b, 1, 1, KILN_DTYPE_STRING));
    if (a->rank < 0 || b->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_STRING);
    const kiln_tensor *ts[2] = {a, b};
    int rank;
    int64_t dims[KILN_MAX_RANK];
    KILN_TRY(kiln_broadcast_shape(ctx, 2, ts, &rank, dims));
    return kiln_set_output(ctx, 0, KILN_DTYPE_STRING, rank, dims);
}

/* Flat index into t for output coordinates (broadcast: size-1 dims repeat). */
static int64_t bcast_index(const kiln_tensor *t, int rank, const int64_t *coord) {
    int64_t idx = 0;
    int off = rank - t->rank;
    for (int d = 0; d < t->rank; d++) {
        int64_t c = t->dims[d] == 1 ? 0 : coord[off + d];
        idx = idx * t->dims[d] + c;
    }
    return idx;
}

static kiln_status concat_compute(kiln_ctx *ctx) {
    const kiln_tensor *a = kiln_input(ctx, 0), *b = kiln_input(ctx, 1);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t n = kiln_numel(y), coord[KILN_MAX_RANK] = {0};
    char **out = (char **)y->data;
    for (int64_t i = 0; i < n; i++) {
        const char *sa = str_at(a, bcast_index(a, y->rank, coord));
        const char *sb = str_at(b, bcast_index(b, y->rank, coord));
        size_t la = kiln_str_len(sa), lb = kiln_str_len(sb);
        char *s = la + lb < la ? NULL : kiln_str_alloc(la + lb);
        if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        memcpy(s, sa, la);
        memcpy(s + la, sb, lb);
        kiln_str_free(out[i]);
        out[i] = s;
        for (int d = y->rank - 1; d >= 0; d--) { /* next coordinate, row-major */
            if (++coord[d] < y->dims[d]) break;
            coord[d] = 0;
        }
    }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* StringSplit */

static int is_space(unsigned char c) { return c == ' ' || (c >= '\t' && c <= '\r'); }

/* Splits s like Python's str.split(sep or None, maxsplit), the ONNX reference: whitespace is
 * space, \t, \n, \v, \f and \r (onnxruntime splits on spaces only). With out == NULL it only
 * counts. */
static int64_t split_one(const char *s, size_t len, const char *delim, size_t dl, int64_t maxsplit, char **out,
                         int *oom) {
    int64_t n = 0;
    const char *end = s + len; /* strings may hold NUL bytes: lengths, never terminators */
    if (dl == 0) { /* runs of whitespace separate; ends are trimmed */
        const char *p = s;
        while (p < end) {
            while (p < end && is_space((unsigned char)*p)) p++;
            if (p == end) break;
            const char *start = p;
            if (maxsplit >= 0 && n == maxsplit) {
                /* the remainder after the last split is kept whole, trailing whitespace included,
                 * as Python's str.split (the ONNX reference) does */
                if (out && !(out[n] = str_dup_n(start, (size_t)(end - start)))) *oom = 1;
                return n + 1;
            }
            while (p < end && !is_space((unsigned char)*p)) p++;
            if (out && !(out[n] = str_dup_n(start, (size_t)(p - start)))) *oom = 1;
            n++;
        }
        return n;
    }
    const char *p = s;
    for (;;) {
        const char *hit = (maxsplit >= 0 && n == maxsplit) ? NULL : memmem(p, (size_t)(end - p), delim, dl);
        if (!hit) {
            if (out && !(out[n] = str_dup_n(p, (size_t)(end - p)))) *oom = 1;
            return n + 1;
        }
        if (out && !(out[n] = str_dup_n(p, (size_t)(hit - p)))) *oom = 1;
        n++;
        p = hit + dl;
    }
}

static kiln_status split_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_STRING));
    if (x->rank < 0) {
        KILN_TRY(kiln_set_output_unknown(ctx, 0, KILN_DTYPE_STRING));
        return kiln_set_output_unknown(ctx, 1, KILN_DTYPE_INT64);
    }
    if (x->rank + 1 > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input rank %d is too large", x->rank);
    int64_t dims[KILN_MAX_RANK];
    memcpy(dims, x->dims, sizeof(int64_t) * x->rank);
    dims[x->rank] = KILN_DIM_UNKNOWN;
    KILN_TRY(kiln_set_output(ctx, 0, KILN_DTYPE_STRING, x->rank + 1, dims));
    return kiln_set_output(ctx, 1, KILN_DTYPE_INT64, x->rank, x->dims);
}

static kiln_status split_compute(kiln_ctx *ctx) {
    kiln_tensor *x;
    /* a dynamic op: compute runs without infer, so it checks its input itself */
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_STRING));
    size_t dl;
    const char *delim = kiln_attr_bytes(ctx->node, "delimiter", "", &dl); /* it may be or hold a NUL byte */
    int64_t maxsplit = kiln_has_attr(ctx->node, "maxsplit") ? kiln_attr_int(ctx->node, "maxsplit", -1) : -1;
    if (x->rank + 1 > KILN_MAX_RANK)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input rank %d is too large", x->rank);
    int64_t n = kiln_numel(x), width = 0;
    int oom = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t c = split_one(str_at(x, i), str_len_at(x, i), delim, dl, maxsplit, NULL, &oom);
        if (c > width) width = c;
    }
    int64_t dims[KILN_MAX_RANK];
    memcpy(dims, x->dims, sizeof(int64_t) * x->rank);
    dims[x->rank] = width;
    KILN_TRY(kiln_alloc_output(ctx, 0, KILN_DTYPE_STRING, x->rank + 1, dims));
    KILN_TRY(kiln_alloc_output(ctx, 1, KILN_DTYPE_INT64, x->rank, x->dims));
    kiln_tensor *y = kiln_output(ctx, 0), *z = kiln_output(ctx, 1);
    for (int64_t i = 0; i < n; i++) {
        char **row = y ? (char **)y->data + i * width : NULL;
        int64_t c;
        if (row) {
            for (int64_t k = 0; k < width; k++) { kiln_str_free(row[k]); row[k] = NULL; }
            c = split_one(str_at(x, i), str_len_at(x, i), delim, dl, maxsplit, row, &oom);
            for (int64_t k = c; k < width && !oom; k++)
                if (!(row[k] = str_dup_n("", 0))) oom = 1;
        } else {
            c = split_one(str_at(x, i), str_len_at(x, i), delim, dl, maxsplit, NULL, &oom);
        }
        if (oom) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        if (z) ((int64_t *)z->data)[i] = c;
    }
    return KILN_OK;
}

/* ------------------------------------------------------------------------------------------ */
/* UTF-8 case mapping */

static uint32_t utf8_next(const unsigned char **pp) {
    const unsigned char *p = *pp;
    uint32_t c = p[0];
    int len = 1;
    if (c >= 0xc0 && c < 0xe0 && (p[1] & 0xc0) == 0x80) {
        c = ((c & 0x1f) << 6) | (p[1] & 0x3f);
        len = 2;
    } else if (c >= 0xe0 && c < 0xf0 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80) {
        c = ((c & 0x0f) << 12) | ((uint32_t)(p[1] & 0x3f) << 6) | (p[2] & 0x3f);
        len = 3;
    } else if (c >= 0xf0 && c < 0xf8 && (p[1] & 0xc0) == 0x80 && (p[2] & 0xc0) == 0x80 &&
               (p[3] & 0xc0) == 0x80) {
        c = ((c & 0x07) << 18) | ((uint32_t)(p[1] & 0x3f) << 12) | ((uint32_t)(p[2] & 0x3f) << 6) |
            (p[3] & 0x3f);
        len = 4;
    }
    *pp = p + len; /* invalid bytes pass through one at a time */
    return c;
}

static size_t utf8_put(uint32_t c, char *out) {
    if (c < 0x80) { out[0] = (char)c; return 1; }
    if (c < 0x800) {
        out[0] = (char)(0xc0 | (c >> 6));
        out[1] = (char)(0x80 | (c & 0x3f));
        return 2;
    }
    if (c < 0x10000) {
        out[0] = (char)(0xe0 | (c >> 12));
        out[1] = (char)(0x80 | ((c >> 6) & 0x3f));
        out[2] = (char)(0x80 | (c & 0x3f));
        return 3;
    }
    out[0] = (char)(0xf0 | (c >> 18));
    out[1] = (char)(0x80 | ((c >> 12) & 0x3f));
    out[2] = (char)(0x80 | ((c >> 6) & 0x3f));
    out[3] = (char)(0x80 | (c & 0x3f));
    return 4;
}

static uint32_t to_lower_cp(uint32_t c) {
    if (c >= 'A' && c <= 'Z') return c + 32;
    if ((c >= 0xc0 && c <= 0xde && c != 0xd7) || (c >= 0x391 && c <= 0x3ab && c != 0x3a2) ||
        (c >= 0x410 && c <= 0x42f))
        return c + 32;
    if (c >= 0x400 && c <= 0x40f) return c + 80;
    if (c >= 0x531 && c <= 0x556) return c + 48;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177) || (c >= 0x460 && c <= 0x481) ||
        (c >= 0x48a && c <= 0x4bf) || (c >= 0x4d0 && c <= 0x52f))
        return (c & 1u) ? c : c + 1;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1u) ? c + 1 : c;
    return c;
}

static uint32_t to_upper_cp(uint32_t c) {
    if (c >= 'a' && c <= 'z') return c - 32;
    if ((c >= 0xe0 && c <= 0xfe && c != 0xf7) || (c >= 0x3b1 && c <= 0x3cb && c != 0x3c2) ||
        (c >= 0x430 && c <= 0x44f))
        return c - 32;
    if (c >= 0x450 && c <= 0x45f) return c - 80;
    if (c >= 0x561 && c <= 0x586) return c - 48;
    if ((c >= 0x100 && c <= 0x137) || (c >= 0x14a && c <= 0x177) || (c >= 0x460 && c <= 0x481) ||
        (c >= 0x48a && c <= 0x4bf) || (c >= 0x4d0 && c <= 0x52f))
        return (c & 1u) ? c - 1 : c;
    if ((c >= 0x139 && c <= 0x148) || (c >= 0x179 && c <= 0x17e)) return (c & 1u) ? c : c - 1;
    return c;
}

/* Case-mapped copy of the kiln string s, as a kiln string (upper != 0: upper case). Mapped
 * characters never grow in length. (utf8_next may look at the NUL after s's bytes, never beyond.) */
static char *case_map(const char *s, int upper) {
    size_t n = kiln_str_len(s);
    char *out = malloc(n + 4);
    if (!out) return NULL;
    const unsigned char *p = (const unsigned char *)s, *end = p + n;
    size_t o = 0;
    while (p < end) {
        const unsigned char *start = p;
        uint32_t c = utf8_next(&p);
        uint32_t m = upper ? to_upper_cp(c) : to_lower_cp(c);
        char buf[4];
        size_t len = utf8_put(m, buf);
        if (m == c || len != (size_t)(p - start)) { /* keep the original bytes */
            memcpy(out + o, start, (size_t)(p - start));
            o += (size_t)(p - start);
        } else {
            memcpy(out + o, buf, len);
            o += len;
        }
    }
    char *r = kiln_str_new(out, o);
    free(out);
    return r;
}

/* ------------------------------------------------------------------------------------------ */
/* StringNormalizer */

enum { CASE_NONE, CASE_LOWER, CASE_UPPER };

typedef struct norm_state {
    int action, sensitive, n_stop;
    char **stop; /* lower-cased copies when case-insensitive */
} norm_state;

static void norm_fini(void *p) {
    norm_state *s = p;
    if (!s) return;
    for (int i = 0; i < s->n_stop; i++) kiln_str_free(s->stop[i]);
    free(s->stop);
    free(s);
}

static kiln_status norm_init(kiln_ctx *ctx) {
    norm_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    const char *act = kiln_attr_string(ctx->node, "case_change_action", "NONE");
    if (!strcmp(act, "NONE")) s->action = CASE_NONE;
    else if (!strcmp(act, "LOWER")) s->action = CASE_LOWER;
    else if (!strcmp(act, "UPPER")) s->action = CASE_UPPER;
    else {
        free(s);
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown case_change_action '%s'", act);
    }
    s->sensitive = kiln_attr_int(ctx->node, "is_case_sensitive", 0) != 0;
    int n = 0;
    char *const *stop = kiln_attr_strings(ctx->node, "stopwords", &n);
    if (n > 0) {
        s->stop = calloc((size_t)n, sizeof(char *));
        if (!s->stop) { norm_fini(s); return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); }
        for (int i = 0; i < n; i++) {
            s->stop[i] = s->sensitive ? kiln_str_dup(stop[i]) : case_map(stop[i], 0);
            s->n_stop = i + 1;
            if (!s->stop[i]) { norm_fini(s); return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); }
        }
    }
    ctx->state = s;
    return KILN_OK;
}

static kiln_status norm_check(kiln_ctx *ctx, const kiln_tensor *x) {
    char b[96];
    if (x->rank >= 0 && !(x->rank == 1 || (x->rank == 2 && (x->dims[0] == 1 || x->dims[0] < 0))))
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s must have shape [C] or [1, C]",
                         kiln_shape_str(x, b, sizeof b));
    return KILN_OK;
}

static kiln_status norm_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_STRING));
    KILN_TRY(norm_check(ctx, x));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_STRING);
    int64_t dims[2] = {1, KILN_DIM_UNKNOWN};
    if (x->rank == 1) return kiln_set_output(ctx, 0, KILN_DTYPE_STRING, 1, dims + 1);
    return kiln_set_output(ctx, 0, KILN_DTYPE_STRING, 2, dims);
}

static int is_stopword(const norm_state *s, const char *w) {
    if (!s->n_stop) return 0;
    char *key = s->sensitive ? NULL : case_map(w, 0);
    const char *k = key ? key : w;
    int hit = 0;
    for (int i = 0; i < s->n_stop && !hit; i++) hit = kiln_str_eq(s->stop[i], k);
    kiln_str_free(key);
    return hit;
}

static kiln_status norm_compute(kiln_ctx *ctx) {
    const norm_state *s = ctx->state;
    kiln_tensor *x;
    /* a dynamic op: compute runs without infer, so it checks its input itself */
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_STRING));
    KILN_TRY(norm_check(ctx, x));
    int64_t n = kiln_numel(x), kept = 0;
    unsigned char *keep = malloc((size_t)n + 1);
    if (!keep) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int64_t i = 0; i < n; i++) {
        keep[i] = !is_stopword(s, str_at(x, i));
        kept += keep[i];
    }
    int64_t dims[2] = {1, kept ? kept : 1};
    kiln_status st = x->rank == 1 ? kiln_alloc_output(ctx, 0, KILN_DTYPE_STRING, 1, dims + 1)
                                   : kiln_alloc_output(ctx, 0, KILN_DTYPE_STRING, 2, dims);
    kiln_tensor *y = st == KILN_OK ? kiln_output(ctx, 0) : NULL;
    if (y) {
        char **out = (char **)y->data;
        int64_t o = 0;
        if (!kept) {
            kiln_str_free(out[0]);
            out[0] = str_dup_n("", 0);
            if (!out[0]) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        }
        for (int64_t i = 0; i < n && st == KILN_OK; i++) {
            if (!keep[i]) continue;
            const char *w = str_at(x, i);
            char *r = s->action == CASE_NONE ? kiln_str_dup(w) : case_map(w, s->action == CASE_UPPER);
            if (!r) { st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); break; }
            kiln_str_free(out[o]);
            out[o++] = r;
        }
    }
    free(keep);
    return st;
}

const kiln_op kiln_ops_string[] = {
    {"", "StringConcat", 20, 0, NULL, concat_infer, concat_compute, NULL},
    {"", "StringSplit", 20, KILN_OP_DYNAMIC, NULL, split_infer, split_compute, NULL},
    {"", "StringNormalizer", 10, KILN_OP_DYNAMIC, norm_init, norm_infer, norm_compute, norm_fini},
    {"", "RegexFullMatch", 20, 0, kiln_regex_init, kiln_regex_infer, kiln_regex_compute, kiln_regex_fini},
    {"", "TfIdfVectorizer", 9, 0, kiln_tfidf_init, kiln_tfidf_infer, kiln_tfidf_compute, kiln_tfidf_fini},
    {"com.microsoft", "Tokenizer", 1, KILN_OP_DYNAMIC, kiln_tokenizer_init, kiln_tokenizer_infer,
     kiln_tokenizer_compute, kiln_tokenizer_fini},
    {0},
};
