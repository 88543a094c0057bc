/* TfIdfVectorizer (opset 9). The n-gram pool is hashed once at init; each row is scanned for every
 * skip distance and n-gram length, as in the ONNX reference: n-grams are numbered in pool order
 * (lengths outside [min_gram_length, max_gram_length] keep their numbers but are never counted),
 * and 1-grams are counted once rather than once per skip distance. */
#include "string_kernels.h"
#include "quant_elem.h"

enum { TF_TF, TF_IDF, TF_TFIDF };

typedef struct tf_entry {
    uint64_t hash;
    int32_t n;        /* n-gram length */
    int64_t start;    /* offset in the pool */
    int64_t id;       /* position among all pool n-grams */
} tf_entry;

typedef struct tf_state {
    int mode, is_string;
    int64_t min_n, max_n, max_skip, out_size;
    const int64_t *pool_i;
    char *const *pool_s;
    int64_t n_ids;
    int64_t *index;   /* ngram_indexes, one per n-gram id */
    float *weights;   /* one per n-gram id, or NULL */
    tf_entry *table;  /* open addressing, cap entries, hash 0 = empty slot */
    int64_t cap;
} tf_state;

static uint64_t mix(uint64_t h, uint64_t v) {
    h ^= v + 0x9e3779b97f4a7c15ull + (h << 6) + (h >> 2);
    return h;
}

static uint64_t str_hash(const char *s) { /* a kiln string: NUL bytes count */
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0, n = kiln_str_len(s); i < n; i++) h = (h ^ (unsigned char)s[i]) * 1099511628211ull;
    return h;
}

/* Hash of the n tokens at positions first, first + step, ... of an int or string sequence. */
static uint64_t seq_hash(const tf_state *s, const int64_t *iv, const int32_t *iv32, char *const *sv,
                         int64_t first, int64_t step, int64_t n) {
    uint64_t h = (uint64_t)n * 0x100000001b3ull;
    for (int64_t k = 0; k < n; k++) {
        int64_t p = first + k * step;
        uint64_t v = sv ? str_hash(sv[p]) : iv ? (uint64_t)iv[p] : (uint64_t)(int64_t)iv32[p];
        h = mix(h, v);
    }
    return h ? h : 1;
}

static int seq_equal(const tf_state *s, const tf_entry *e, const int64_t *iv, const int32_t *iv32,
                     char *const *sv, int64_t first, int64_t step, int64_t n) {
    if (e->n != n) return 0;
    for (int64_t k = 0; k < n; k++) {
        int64_t p = first + k * step;
        if (s->is_string) {
            if (!kiln_str_eq(s->pool_s[e->start + k], sv[p])) return 0;
        } else {
            int64_t v = iv ? iv[p] : (int64_t)iv32[p];
            if (s->pool_i[e->start + k] != v) return 0;
        }
    }
    return 1;
}

static const tf_entry *lookup(const tf_state *s, const int64_t *iv, const int32_t *iv32, char *const *sv,
                              int64_t first, int64_t step, int64_t n) {
    uint64_t h = seq_hash(s, iv, iv32, sv, first, step, n);
    for (int64_t i = (int64_t)(h % (uint64_t)s->cap);; i = (i + 1) % s->cap) {
        const tf_entry *e = &s->table[i];
        if (!e->hash) return NULL;
        if (e->hash == h && seq_equal(s, e, iv, iv32, sv, first, step, n)) return e;
    }
}

void kiln_tfidf_fini(void *p) {
    tf_state *s = p;
    if (!s) return;
    free(s->index);
    free(s->weights);
    free(s->table);
    free(s);
}

kiln_status kiln_tfidf_init(kiln_ctx *ctx) {
    const kiln_node *nd = ctx->node;
    tf_state *s = calloc(1, sizeof *s);
    if (!s) return KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
    kiln_status st = KILN_OK;
    const char *mode = kiln_attr_string(nd, "mode", "TF");
    if (!strcmp(mode, "TF")) s->mode = TF_TF;
    else if (!strcmp(mode, "IDF")) s->mode = TF_IDF;
    else if (!strcmp(mode, "TFIDF")) s->mode = TF_TFIDF;
    else { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "unknown mode '%s'", mode); goto fail; }
    s->min_n = kiln_attr_int(nd, "min_gram_length", 1);
    s->max_n = kiln_attr_int(nd, "max_gram_length", 1);
    s->max_skip = kiln_attr_int(nd, "max_skip_count", 0);
    if (s->min_n < 1 || s->max_n < s->min_n || s->max_skip < 0) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT,
                       "need 1 <= min_gram_length <= max_gram_length and max_skip_count >= 0");
        goto fail;
    }
    int n_pool_i = 0, n_pool_s = 0, n_counts = 0, n_idx = 0, n_w = 0;
    s->pool_i = kiln_attr_ints(nd, "pool_int64s", &n_pool_i);
    s->pool_s = kiln_attr_strings(nd, "pool_strings", &n_pool_s);
    if ((s->pool_i != NULL) == (s->pool_s != NULL)) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "exactly one of pool_int64s and pool_strings is needed");
        goto fail;
    }
    s->is_string = s->pool_s != NULL;
    int64_t total = s->is_string ? n_pool_s : n_pool_i;
    const int64_t *counts = kiln_attr_ints(nd, "ngram_counts", &n_counts);
    const int64_t *idx = kiln_attr_ints(nd, "ngram_indexes", &n_idx);
    const float *w = kiln_attr_floats(nd, "weights", &n_w);
    /* number the n-grams: counts[i] is where the (i+1)-grams start in the pool */
    s->n_ids = 0;
    for (int i = 0; i < n_counts; i++) {
        int64_t b = counts[i], e = i + 1 < n_counts ? counts[i + 1] : total;
        if (b < 0 || e < b || e > total || (e - b) % (i + 1)) {
            st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ngram_counts do not partition the pool");
            goto fail;
        }
        s->n_ids += (e - b) / (i + 1);
    }
    if (n_idx != s->n_ids) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "ngram_indexes has %d entries for %lld n-grams",
                       n_idx, (long long)s->n_ids);
        goto fail;
    }

    s->out_size = 0;
    s->index = malloc(sizeof(int64_t) * (size_t)(n_idx + 1));
    if (w) s->weights = malloc(sizeof(float) * (size_t)(n_w + 1));
    s->cap = 2 * s->n_ids + 1;
    s->table = calloc((size_t)s->cap, sizeof(tf_entry));
    if (!s->index || (w && !s->weights) || !s->table) {
        st = KILN_FAIL(ctx, KILN_ERR_NO_MEMORY, "out of memory");
        goto fail;
    }
    for (int i = 0; i < n_idx; i++) {
        if (idx[i] < 0) { st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "negative ngram index"); goto fail; }
        s->index[i] = idx[i];
        if (idx[i] + 1 > s->out_size) s->out_size = idx[i] + 1;
    }
    if (w && n_w < s->out_size) {
        st = KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "weights has %d entries for %lld outputs", n_w,
                       (long long)s->out_size);
        goto fail;
    }
    if (w) memcpy(s->weights, w, sizeof(float) * (size_t)n_w);
    int64_t id = 0;
    for (int i = 0; i < n_counts; i++) {
        int64_t b = counts[i], e = i + 1 < n_counts ? counts[i + 1] : total, n = i + 1;
        for (int64_t p = b; p < e; p += n, id++) {
            if (n < s->min_n || n > s->max_n) continue;
            if (lookup(s, s->pool_i, NULL, s->pool_s, p, 1, n)) continue; /* duplicate: first wins */
            uint64_t h = seq_hash(s, s->pool_i, NULL, s->pool_s, p, 1, n);
            int64_t slot = (int64_t)(h % (uint64_t)s->cap);
            while (s->table[slot].hash) slot = (slot + 1) % s->cap;
            s->table[slot] = (tf_entry){h, (int32_t)n, p, id};
        }
    }
    ctx->state = s;
    return KILN_OK;
fail:
    kiln_tfidf_fini(s);
    return st;
}

kiln_status kiln_tfidf_infer(kiln_ctx *ctx) {
    const tf_state *s = ctx->state;
    kiln_tensor *x;
    char b[96];
    KILN_TRY(kiln_need_input(ctx, 0, &x));
    if (!s) return KILN_FAIL(ctx, KILN_ERR_RUNTIME, "TfIdfVectorizer was not initialised");
    if (s->is_string) KILN_TRY(kiln_check_dtype(ctx, x, 0, 1, KILN_DTYPE_STRING));
    else KILN_TRY(kiln_check_dtype(ctx, x, 0, 2, KILN_DTYPE_INT64, KILN_DTYPE_INT32));
    if (x->rank < 0) return kiln_set_output_unknown(ctx, 0, KILN_DTYPE_FLOAT);
    if (x->rank > 2)
        return KILN_FAIL(ctx, KILN_ERR_INVALID_ARGUMENT, "input %s must be [C] or [N, C]",
                         kiln_shape_str(x, b, sizeof b));
    if (x->rank == 2) {
        int64_t dims[2] = {x->dims[0], s->out_size};
        return kiln_set_output(ctx, 0, KILN_DTYPE_FLOAT, 2, dims);
    }
    return kiln_set_output(ctx, 0, KILN_DTYPE_FLOAT, 1, &s->out_size);
}

kiln_status kiln_tfidf_compute(kiln_ctx *ctx) {
    const tf_state *s = ctx->state;
    const kiln_tensor *x = kiln_input(ctx, 0);
    kiln_tensor *y = kiln_output(ctx, 0);
    if (!y) return KILN_OK;
    int64_t rows = x->rank == 2 ? x->dims[0] : 1, C = x->rank == 0 ? 1 : x->dims[x->rank - 1];
    const int64_t *iv = x->dtype == KILN_DTYPE_INT64 ? (const int64_t *)x->data : NULL;
    const int32_t *iv32 = x->dtype == KILN_DTYPE_INT32 ? (const int32_t *)x->data : NULL;
    char *const *sv = x->dtype == KILN_DTYPE_STRING ? (char *const *)x->data : NULL;
    float *out = (float *)y->data;
    for (int64_t i = 0; i < rows * s->out_size; i++) out[i] = 0.0f;
    for (int64_t r = 0; r < rows; r++) {
        float *row = out + r * s->out_size;
        int64_t base = r * C, start_n = s->min_n;
        for (int64_t dist = 1; dist <= s->max_skip + 1; dist++) {
            for (int64_t st = 0; st < C; st++) {
                if (st + dist * (start_n - 1) >= C) break;
                for (int64_t n = start_n; n <= s->max_n && st + dist * (n - 1) < C; n++) {
                    const tf_entry *e = lookup(s, iv, iv32, sv, base + st, dist, n);
                    if (e) row[s->index[e->id]] += 1.0f;
                }
            }
            if (start_n == 1) { /* 1-grams do not depend on the skip distance */
                start_n = 2;
                if (start_n > s->max_n) break;
            }
        }
    }
    if (s->mode != TF_TF) {
        /* weights apply per output coordinate, as in the reference and onnxruntime (with the
         * usual identity ngram_indexes that is also per n-gram) */
        for (int64_t r = 0; r < rows; r++)
            for (int64_t k = 0; k < s->out_size; k++) {
                float *v = &out[r * s->out_size + k], w = s->weights ? s->weights[k] : 1.0f;
                *v = s->mode == TF_IDF ? (*v > 0.0f ? w : 0.0f) : *v * w;
            }
    }
    return KILN_OK;
}
