/* com.microsoft Tokenizer (what skl2onnx emits for CountVectorizer / TfidfVectorizer), with
 * onnxruntime's semantics. Each string of X ([C] or [N, C]) becomes a row of tokens:
 *   - tokenexp: the successive leftmost-longest matches of the expression with at least
 *     mincharnum characters (a shorter match moves the search on by one character);
 *   - separators: each separator expression in turn splits every current token at its matches,
 *     keeping the pieces of at least mincharnum characters;
 *   - a single empty separator, or tokenexp ".": one token per UTF-8 character.
 * Y is X's shape plus one axis of max_tokens: [0x02] tokens [0x03] (when mark) then pad_value.
 * onnxruntime matches with RE2 in longest-match mode, which is POSIX leftmost-longest, so the
 * expressions are translated from RE2 syntax (string_regex.c) for the C locale over UTF-8 bytes,
 * which gives \w \s \b RE2's ASCII meaning, and run with regexec; REG_STARTEND keeps the text before the search start as context
 * (for ^ and \b) as RE2's Match(text, startpos) does. Patterns outside the supported RE2 subset
 * fail at session creation naming the pattern. */
#include "string_kernels.h"
#include <locale.h>
#include <regex.h>
#include <stdint.h>

typedef struct tok_state {
    int mark, chars;      /* chars: character tokenization */
    int64_t mincharnum;
    const char *pad;
    size_t pad_len;       /* pad_value may hold NUL bytes */
    int nre;
    regex_t *re;          /* the separators, or the one token expression */
    int separators;
    locale_t loc;
} tok_state;

void kiln_tokenizer_fini(void *p) {
    tok_state *s = p;
    if (!s) return;
    for (int i = 0; i < s->nre; i++) regfree(&s->re[i]);
    free(s->re);
    if (s->loc) freelocale(s->loc);
    free(s);
}

static kiln_status compile(kiln_ctx *ctx, tok_state *s, const char *pattern, size_t len, const char *what) {
    if (strlen(pattern) != len) /* regcomp takes a NUL-terminated pattern */
        return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "%s: a NUL byte is not supported in patterns", what);
    char *ere;
    const char *err = kiln_re2_to_ere(pattern, KILN_RE_ASCII, &ere);
    if (err) return KILN_FAIL(ctx, KILN_ERR_NOT_IMPLEMENTED, "%s '%s': %s", what, pattern, err);
    locale_t old = s->loc ? uselocale(s->loc) : (locale_t)0;
    int rc = regcomp(&s->re[s->nre], ere, REG_EXTENDED);
    if (s->loc) uselocale(old);
    free(ere);
    if (rc) {
        char msg[256];
        regerror(rc, &s->re[s->nre], msg, sizeof msg);
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "%s '%s' does not compile: %s", what, pattern, msg);
    }
    s->nre++;
    return KILN_OK;
}

kiln_status kiln_tokenizer_init(kiln_ctx *ctx) {
    const kiln_node *node = ctx->node;
    static const char *const required[] = {"mark", "pad_value", "mincharnum"};
    for (int i = 0; i < 3; i++)
        if (!kiln_has_attr(node, required[i]))
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "attribute '%s' is required", required[i]);
    tok_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    ctx->state = s;
    s->mark = kiln_attr_int(node, "mark", 0) != 0;
    s->pad = kiln_attr_bytes(node, "pad_value", "", &s->pad_len);
    s->mincharnum = kiln_attr_int(node, "mincharnum", 0);
    if (s->mincharnum <= 0)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "mincharnum must be > 0, got %lld",
                         (long long)s->mincharnum);
    int nsep = 0;
    char *const *seps = kiln_attr_strings(node, "separators", &nsep);
    size_t texp_len;
    const char *texp = kiln_attr_bytes(node, "tokenexp", NULL, &texp_len);
    if (kiln_has_attr(node, "separators")) {
        if (nsep == 0)
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "separators must not be empty");
        s->chars = nsep == 1 && kiln_str_len(seps[0]) == 0;
        s->separators = 1;
    } else {
        if (!texp || !texp[0])
            return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                             "either separators or a non-empty tokenexp is required");
        s->chars = !strcmp(texp, ".");
    }
    if (s->chars && s->mincharnum > 1)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                         "mincharnum %lld is too big for character tokenization", (long long)s->mincharnum);
    if (s->chars) return KILN_OK;
    s->loc = newlocale(LC_ALL_MASK, "C", (locale_t)0);
    int n = s->separators ? nsep : 1;
    s->re = calloc((size_t)n, sizeof(regex_t));
    if (!s->re) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    for (int i = 0; i < n; i++)
        KILN_TRY(compile(ctx, s, s->separators ? seps[i] : texp, s->separators ? kiln_str_len(seps[i]) : texp_len,
                         s->separators ? "separator" : "tokenexp"));
    return KILN_OK;
}

kiln_status kiln_tokenizer_infer(kiln_ctx *ctx) {
    kiln_tensor *x;
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_STRING));
    if (x->rank >= 0 && x->rank != 1 && x->rank != 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input has rank %d; expected [C] or [N, C]", x->rank);
    return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_STRING);
}

/* ---- UTF-8 ---- */

static size_t lead_len(unsigned char c) {
    return c < 0x80 ? 1 : (c & 0xe0) == 0xc0 ? 2 : (c & 0xf0) == 0xe0 ? 3 : (c & 0xf8) == 0xf0 ? 4 : 0;
}

/* 1 when s (n bytes) is valid UTF-8; *chars gets its length in characters. */
static int utf8_valid(const char *s, size_t n, size_t *chars) {
    size_t i = 0, c = 0;
    while (i < n) {
        size_t l = lead_len((unsigned char)s[i]);
        if (!l || i + l > n) return 0;
        for (size_t k = 1; k < l; k++)
            if (((unsigned char)s[i + k] & 0xc0) != 0x80) return 0;
        i += l;
        c++;
    }
    *chars = c;
    return 1;
}

static size_t utf8_count(const char *s, size_t n) {
    size_t c = 0;
    for (size_t i = 0; i < n; i++) c += ((unsigned char)s[i] & 0xc0) != 0x80;
    return c;
}

/* ---- token lists ---- */

typedef struct piece {
    const char *p;
    size_t n;
} piece;

typedef struct plist {
    piece *v;
    size_t n, cap;
    int oom;
} plist;

static void push(plist *l, const char *p, size_t n) {
    if (l->oom) return;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        piece *v = realloc(l->v, cap * sizeof *v);
        if (!v) { l->oom = 1; return; }
        l->v = v;
        l->cap = cap;
    }
    l->v[l->n++] = (piece){p, n};
}

/* Leftmost-longest match of re in text[start, end), text[0, start) being context; 0: none. */
static int find(const regex_t *re, const char *text, size_t start, size_t end, size_t *mo, size_t *me) {
    regmatch_t m[1];
    m[0].rm_so = (regoff_t)start;
    m[0].rm_eo = (regoff_t)end;
    if (regexec(re, text, 1, m, REG_STARTEND)) return 0;
    *mo = (size_t)m[0].rm_so;
    *me = (size_t)m[0].rm_eo;
    return 1;
}

/* Bytes of the character at p, 1 past the end (onnxruntime reads the terminator there). */
static size_t step_at(const char *p, size_t left) {
    size_t l = left ? lead_len((unsigned char)*p) : 1;
    return l ? l : 1;
}

static void tokenize_expr(const tok_state *s, const char *str, size_t len, plist *row) {
    size_t start = 0, mo, me;
    while (start <= len && find(&s->re[0], str, start, len, &mo, &me)) {
        size_t tl = me - mo;
        if (tl > 0 && utf8_count(str + mo, tl) >= (size_t)s->mincharnum) {
            push(row, str + mo, tl);
            start = me;
        } else {
            start = mo + step_at(str + mo, len - mo);
        }
    }
}

static void split_by(const regex_t *re, int64_t minc, const piece *t, plist *out) {
    size_t start = 0, mo, me, len = t->n;
    while (start <= len && find(re, t->p, start, len, &mo, &me)) {
        size_t tl = mo - start;
        if (tl > 0 && utf8_count(t->p + start, tl) >= (size_t)minc) push(out, t->p + start, tl);
        start = me > mo ? me : mo + step_at(t->p + mo, len - mo);
    }
    /* the trailing piece; a search that stepped past the end leaves none */
    if (start < len && utf8_count(t->p + start, len - start) >= (size_t)minc)
        push(out, t->p + start, len - start);
}

static void tokenize_sep(const tok_state *s, const char *str, size_t len, plist *row) {
    plist cur = {0}, next = {0};
    push(&cur, str, len);
    for (int i = 0; i < s->nre && !cur.oom; i++) {
        next.n = 0;
        for (size_t k = 0; k < cur.n; k++) split_by(&s->re[i], s->mincharnum, &cur.v[k], &next);
        plist t = cur;
        cur = next;
        next = t;
        cur.oom |= next.oom;
    }
    for (size_t k = 0; k < cur.n; k++) push(row, cur.v[k].p, cur.v[k].n);
    row->oom |= cur.oom;
    free(cur.v);
    free(next.v);
}

static void tokenize_chars(const char *str, size_t len, plist *row) {
    for (size_t i = 0; i < len;) {
        size_t l = step_at(str + i, len - i);
        push(row, str + i, l);
        i += l;
    }
}

kiln_status kiln_tokenizer_compute(kiln_ctx *ctx) {
    const tok_state *s = ctx->state;
    kiln_tensor *x;
    if (!s) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "tokenizer was not initialised");
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_STRING));
    if (x->rank != 1 && x->rank != 2) /* infer does not run for this dynamic op */
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input has rank %d; expected [C] or [N, C]", x->rank);
    int64_t n = kiln_numel(x);
    int64_t dims[3];
    int rank = x->rank;
    memcpy(dims, x->dims, sizeof(int64_t) * (size_t)rank);
    if (n == 0) { /* onnxruntime: [N, 0] for [N, C] input, [0] for [C] */
        int64_t d[2] = {x->dims[0], 0};
        return rank == 2 ? kiln_alloc_output(ctx, 0, KILN_DTYPE_STRING, 2, d)
                         : kiln_alloc_output(ctx, 0, KILN_DTYPE_STRING, 1, d + 1);
    }
    plist *rows = calloc((size_t)n, sizeof *rows);
    if (!rows) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = KILN_OK;
    size_t max_tokens = 0;
    locale_t old = s->loc ? uselocale(s->loc) : (locale_t)0;
    for (int64_t i = 0; i < n && st == KILN_OK; i++) {
        const char *str = str_at(x, i);
        size_t len = str_len_at(x, i), chars;
        if (!utf8_valid(str, len, &chars)) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input string %lld is not valid UTF-8",
                           (long long)i);
            break;
        }
        if (s->chars) tokenize_chars(str, len, &rows[i]);
        else if (s->separators) tokenize_sep(s, str, len, &rows[i]);
        else tokenize_expr(s, str, len, &rows[i]);
        if (rows[i].oom) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        if (rows[i].n > max_tokens) max_tokens = rows[i].n;
    }
    if (s->loc) uselocale(old);
    if (st == KILN_OK) {
        size_t width = max_tokens ? max_tokens + (s->mark ? 2 : 0) : 0;
        dims[rank] = (int64_t)width;
        st = kiln_alloc_output(ctx, 0, KILN_DTYPE_STRING, rank + 1, dims);
        kiln_tensor *y = st == KILN_OK ? kiln_output(ctx, 0) : NULL;
        int oom = 0;
        static const char start_text[] = "\x02", end_text[] = "\x03";
        for (int64_t i = 0; y && width && i < n; i++) {
            char **out = (char **)y->data + (size_t)i * width;
            size_t k = 0;
            if (s->mark) oom |= !(out[k++] = str_dup_n(start_text, 1));
            for (size_t t = 0; t < rows[i].n; t++)
                oom |= !(out[k++] = str_dup_n(rows[i].v[t].p, rows[i].v[t].n));
            if (s->mark) oom |= !(out[k++] = str_dup_n(end_text, 1));
            while (k < width) oom |= !(out[k++] = str_dup_n(s->pad, s->pad_len));
        }
        if (oom) st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    }
    for (int64_t i = 0; i < n; i++) free(rows[i].v);
    free(rows);
    return st;
}
