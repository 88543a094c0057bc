/* RegexFullMatch (opset 20). ONNX specifies RE2 syntax; kiln translates the common RE2 subset into
 * a POSIX extended expression for the C library's regex.h (glibc adds \b, \B, \< and \>):
 * Perl classes (\d \w \s and negations, also inside brackets), (?:...) and named groups, lazy
 * quantifiers (which cannot change whether a full match exists), \A \z \xHH and C escapes.
 * Matching runs under a UTF-8 locale so that '.' and brackets see characters, not bytes.
 * Constructs outside the subset (flags, \p{..}, backreferences) fail at session creation. */
#define _POSIX_C_SOURCE 200809L
#include "string_kernels.h"
#include <locale.h>
#include <regex.h>
#include <stdio.h>

/* The C library's regcomp takes a NUL-terminated pattern: a NUL byte cannot be a literal in it
 * (strings holding NULs are matched whole all the same: REG_STARTEND). */
#define NUL_UNSUPPORTED "\\x00 (a NUL byte) is not supported in patterns"

typedef struct rx_state {
    regex_t re;
    locale_t loc; /* (locale_t)0 when no UTF-8 locale exists: then bytes are characters */
} rx_state;

typedef struct rx_buf {
    char *s;
    size_t n, cap;
    int oom;
} rx_buf;

static void put(rx_buf *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = (b->cap ? b->cap * 2 : 64) + n;
        char *t = realloc(b->s, cap);
        if (!t) { b->oom = 1; return; }
        b->s = t;
        b->cap = cap;
    }
    memcpy(b->s + b->n, s, n);
    b->n += n;
    b->s[b->n] = 0;
}

static void puts_(rx_buf *b, const char *s) { put(b, s, strlen(s)); }

static size_t utf8_len(unsigned char c) {
    return c < 0x80 ? 1 : c >= 0xf0 ? 4 : c >= 0xe0 ? 3 : c >= 0xc0 ? 2 : 1;
}

static int hexval(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* One character of a C-style escape (\n \t ...), or -1 if c is not one. */
static int c_escape(char c) {
    switch (c) {
    case 'n': return '\n';
    case 't': return '\t';
    case 'r': return '\r';
    case 'f': return '\f';
    case 'v': return '\v';
    case 'a': return '\a';
    default: return -1;
    }
}

/* KILN_RE_ASCII patterns run in the C locale over UTF-8 bytes (so that \w, \b are ASCII as in RE2);
 * these match one whole non-ASCII character, or any character but newline (RE2's '.'). */
#define RX_MB "[\xc2-\xdf][\x80-\xbf]|[\xe0-\xef][\x80-\xbf][\x80-\xbf]|[\xf0-\xf4][\x80-\xbf][\x80-\xbf][\x80-\xbf]"
#define RX_DOT "([\x01-\x09\x0b-\x7f]|" RX_MB ")"

/* Translates a bracket expression starting after '['; *pp ends after the closing ']'. */
static const char *bracket(const char **pp, rx_buf *out, int ascii) {
    const char *p = *pp;
    int neg = 0, has_close = 0, has_dash = 0, has_caret = 0;
    rx_buf body = {0};
    if (*p == '^') { neg = 1; p++; }
    if (*p == ']') { has_close = 1; p++; }
    while (*p && *p != ']') {
        char lit[8];
        size_t ln = 0;
        if (p[0] == '[' && p[1] == ':') { /* POSIX class: copy through */
            const char *e = strstr(p + 2, ":]");
            if (!e) { free(body.s); return "unterminated [: :] class"; }
            put(&body, p, (size_t)(e + 2 - p));
            p = e + 2;
            continue;
        }
        if (*p == '\\') {
            char c = p[1];
            if (!c) { free(body.s); return "trailing backslash"; }
            p += 2;
            if (c == 'd') { puts_(&body, "[:digit:]"); continue; }
            if (c == 'd' && ascii) { puts_(&body, "0-9"); continue; }
            if (c == 'w') { puts_(&body, ascii ? "0-9A-Za-z_" : "[:alnum:]_"); continue; }
            if (c == 's') { puts_(&body, ascii ? "\t\n\f\r " : "[:space:]"); continue; }
            if (c == 'D' || c == 'W' || c == 'S' || c == 'p' || c == 'P') {
                free(body.s);
                return "negated or Unicode classes inside brackets are not supported";
            }
            int e = c_escape(c);
            if (c == 'x' && hexval(p[0]) >= 0 && hexval(p[1]) >= 0) {
                e = hexval(p[0]) * 16 + hexval(p[1]);
                p += 2;
                if (!e) { free(body.s); return NUL_UNSUPPORTED; }
            }
            lit[0] = (char)(e >= 0 ? e : c);
            ln = 1;
        } else {
            ln = utf8_len((unsigned char)*p);
            for (size_t k = 0; k < ln; k++) {
                if (!p[k]) { free(body.s); return "truncated UTF-8 sequence"; }
                lit[k] = p[k];
            }
            p += ln;
        }
        if (ascii && ln > 1) { free(body.s); return "non-ASCII characters inside brackets are not supported"; }
        if (ln == 1 && lit[0] == ']') { has_close = 1; continue; }
        if (ln == 1 && lit[0] == '^') { has_caret = 1; continue; }
        if (ln == 1 && lit[0] == '-') {
            if (*p == ']' || body.n == 0) { has_dash = 1; continue; }
            has_dash = 1; /* a bare '-' between items: keep it literal */
            continue;
        }
        if (*p == '-' && p[1] && p[1] != ']') { /* a range */
            const char *q = p + 1;
            char hi[8];
            size_t hn;
            if (*q == '\\') {
                int e = c_escape(q[1]);
                hi[0] = (char)(e >= 0 ? e : q[1]);
                hn = 1;
                q += 2;
            } else {
                hn = utf8_len((unsigned char)*q);
                if (ascii && hn > 1) { free(body.s); return "non-ASCII characters inside brackets are not supported"; }
                for (size_t k = 0; k < hn; k++) hi[k] = q[k];
                q += hn;
            }
            put(&body, lit, ln);
            put(&body, "-", 1);
            put(&body, hi, hn);
            p = q;
            continue;
        }
        put(&body, lit, ln);
    }
    if (*p != ']') { free(body.s); return "unterminated bracket expression"; }
    *pp = p + 1;
    if (!neg && !has_close && !has_dash && body.n == 0 && has_caret) {
        puts_(out, "\\^");
        free(body.s);
        return NULL;
    }
    int mb = neg && ascii; /* a negated class also matches whole non-ASCII characters */
    puts_(out, mb ? "([^" : neg ? "[^" : "[");
    if (has_close) puts_(out, "]");
    if (body.s) puts_(out, body.s);
    if (mb) puts_(out, "\x80-\xff");
    if (has_caret) puts_(out, "^");
    if (has_dash) puts_(out, "-");
    puts_(out, mb ? "]|" RX_MB ")" : "]");
    free(body.s);
    return NULL;
}

/* RE2 pattern -> POSIX ERE (KILN_RE_ANCHORED: for a full match); returns an error text or NULL. */
static const char *translate(const char *re, rx_buf *out, int flags) {
    int ascii = (flags & KILN_RE_ASCII) != 0;
    puts_(out, flags & KILN_RE_ANCHORED ? "^(" : "(");
    const char *p = re;
    while (*p) {
        char c = *p;
        if (c == '\\') {
            char e = p[1];
            if (!e) return "trailing backslash";
            p += 2;
            switch (e) {
            case 'd': puts_(out, "[0-9]"); continue;
            case 'D': puts_(out, ascii ? "([^0-9\x80-\xff]|" RX_MB ")" : "[^0-9]"); continue;
            case 'w': puts_(out, ascii ? "[0-9A-Za-z_]" : "[[:alnum:]_]"); continue;
            case 'W': puts_(out, ascii ? "([^0-9A-Za-z_\x80-\xff]|" RX_MB ")" : "[^[:alnum:]_]"); continue;
            case 's': puts_(out, ascii ? "[\t\n\f\r ]" : "[[:space:]]"); continue;
            case 'S': puts_(out, ascii ? "([^\t\n\f\r \x80-\xff]|" RX_MB ")" : "[^[:space:]]"); continue;
            case 'b': puts_(out, "\\b"); continue;
            case 'B': puts_(out, "\\B"); continue;
            case 'A': puts_(out, "^"); continue;
            case 'z': puts_(out, "$"); continue;
            default: break;
            }
            if (e == 'x' && hexval(p[0]) >= 0 && hexval(p[1]) >= 0) {
                char lit[3] = {'\\', (char)(hexval(p[0]) * 16 + hexval(p[1])), 0};
                if (!lit[1]) return NUL_UNSUPPORTED;
                p += 2;
                if ((unsigned char)lit[1] < 0x80 && !strchr("\\^$.|?*+()[]{}", lit[1])) put(out, lit + 1, 1);
                else put(out, lit, 2);
                continue;
            }
            int ce = c_escape(e);
            if (ce >= 0) {
                char ch = (char)ce;
                put(out, &ch, 1);
                continue;
            }
            if ((e >= 'a' && e <= 'z') || (e >= 'A' && e <= 'Z') || (e >= '0' && e <= '9'))
                return "unsupported escape (backreferences, \\p, \\Q are not available)";
            char lit[2] = {'\\', e};
            put(out, lit, 2);
            continue;
        }
        if (c == '[') {
            p++;
            const char *err = bracket(&p, out, ascii);
            if (err) return err;
            continue;
        }
        if (c == '(' && p[1] == '?') {
            if (p[2] == ':') { puts_(out, "("); p += 3; continue; }
            if ((p[2] == 'P' && p[3] == '<') || p[2] == '<') {
                const char *e = strchr(p, '>');
                if (!e) return "unterminated group name";
                puts_(out, "(");
                p = e + 1;
                continue;
            }
            return "inline flags (?...) are not supported";
        }
        if (c == '*' || c == '+' || c == '?' || c == '}') {
            put(out, p, 1);
            p++;
            if (*p == '?') p++; /* lazy: same full-match result */
            continue;
        }
        if (ascii && c == '.') {
            puts_(out, RX_DOT);
            p++;
            continue;
        }
        size_t n = utf8_len((unsigned char)c);
        for (size_t k = 0; k < n; k++)
            if (!p[k]) return "truncated UTF-8 sequence";
        if (ascii && n > 1) puts_(out, "("); /* a quantifier applies to the whole character */
        put(out, p, n);
        if (ascii && n > 1) puts_(out, ")");
        p += n;
    }
    puts_(out, flags & KILN_RE_ANCHORED ? ")$" : ")");
    return out->oom ? "out of memory" : NULL;
}

const char *kiln_re2_to_ere(const char *re, int flags, char **out) {
    rx_buf b = {0};
    const char *err = translate(re, &b, flags);
    if (err || !b.s) {
        free(b.s);
        *out = NULL;
        return err ? err : "out of memory";
    }
    *out = b.s;
    return NULL;
}

void kiln_regex_fini(void *p) {
    rx_state *s = p;
    if (!s) return;
    regfree(&s->re);
    if (s->loc) freelocale(s->loc);
    free(s);
}

kiln_status kiln_regex_init(kiln_ctx *ctx) {
    size_t plen;
    const char *pattern = kiln_attr_bytes(ctx->node, "pattern", NULL, &plen);
    if (!pattern) return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute 'pattern' is required");
    if (strlen(pattern) != plen) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "pattern: " NUL_UNSUPPORTED);
    rx_buf b = {0};
    const char *err = translate(pattern, &b, KILN_RE_ANCHORED);
    if (err) {
        free(b.s);
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "pattern '%s': %s", pattern, err);
    }
    rx_state *s = calloc(1, sizeof *s);
    if (!s) { free(b.s); return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory"); }
    s->loc = newlocale(LC_CTYPE_MASK, "C.UTF-8", (locale_t)0);
    locale_t old = s->loc ? uselocale(s->loc) : (locale_t)0;
    int rc = regcomp(&s->re, b.s, REG_EXTENDED | REG_NOSUB);
    if (s->loc) uselocale(old);
    if (rc) {
        char msg[256];
        regerror(rc, &s->re, msg, sizeof msg);
        free(b.s);
        if (s->loc) freelocale(s->loc);
        free(s);
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "pattern '%s' does not compile: %s", pattern, msg);
    }
    free(b.s);
    ctx->state = s;
    return KILN_OK;
}

kiln_status kiln_regex_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_STRING));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_BOOL);
    return kiln_set_output(ctx, 0, KILN_DTYPE_BOOL, x->rank, x->dims);
}

kiln_status kiln_regex_compute(kiln_ctx *ctx) {
    const rx_state *s = ctx->state;
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    if (!s) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "regex was not compiled");
    int64_t n = kiln_numel(x);
    locale_t old = s->loc ? uselocale(s->loc) : (locale_t)0;
    for (int64_t i = 0; i < n; i++) { /* REG_STARTEND: the string's length, not a NUL, ends it */
        regmatch_t m = {0, (regoff_t)str_len_at(x, i)};
        ((uint8_t *)y->data)[i] = regexec(&s->re, str_at(x, i), 1, &m, REG_STARTEND) == 0;
    }
    if (s->loc) uselocale(old);
    return KILN_OK;
}
